//! Traps: the frame the vector saves, catching expected exceptions, running code in U-mode,
//! and counting interrupts.
//!
//! Every test runs inside [`catch`]. An exception unwinds to the innermost `catch`, which
//! returns the [`Trap`]; a test that expects an exception wraps the faulting code in its own
//! `catch`. Interrupts never unwind: they are counted and the interrupted code resumes.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rv::csr::Sstatus;
use rv::trap::{Cause, Interrupt};
use spin::Mutex;

/// Registers saved by the vector: x0..x31 (x2 = interrupted sp), then CSRs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub regs: [u64; 32],
    pub sepc: u64,
    pub sstatus: u64,
    pub scause: u64,
    pub stval: u64,
}

const FRAME_SIZE: usize = core::mem::size_of::<Frame>();

global_asm!(
    include_str!("trap.S"),
    FRAME_SIZE = const FRAME_SIZE,
    trap_handler = sym trap_handler,
);

/// Callee-saved state of a `try_run` call: ra, sp, s0..s11 (layout used by trap.S).
#[repr(C)]
#[derive(Default)]
struct JumpBuf {
    ra: u64,
    sp: u64,
    s: [u64; 12],
}

unsafe extern "C" {
    fn vector_table();
    static mut vector_hit: u64;
    fn try_run(buf: *mut JumpBuf, f: extern "C" fn(*mut u8), arg: *mut u8) -> usize;
    fn try_run_resume();
    fn enter_user(entry: usize, arg: usize, user_sp: usize) -> !;
}

/// The `stvec` value of the vectored table (MODE = 1).
pub fn vectored_stvec() -> u64 {
    vector_table as *const () as u64 | 1
}

/// Which entry of the vectored table was taken last (`u64::MAX`: none since the reset).
pub fn take_vector_hit() -> u64 {
    let hit = &raw mut vector_hit;
    // SAFETY: only the trap stubs and this function touch the word, on one hart.
    unsafe { core::mem::replace(&mut *hit, u64::MAX) }
}

/// An exception that was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trap {
    pub scause: u64,
    pub stval: u64,
    pub sepc: u64,
    /// `sstatus` at the trap (SPP tells where it came from).
    pub sstatus: u64,
    /// a0..a7 at the trap.
    pub args: [u64; 8],
}

impl Trap {
    /// The decoded cause.
    pub fn cause(&self) -> Cause {
        Cause::from_scause(self.scause)
    }

    /// The trap was taken from U-mode.
    pub fn came_from_user(&self) -> bool {
        self.sstatus & Sstatus::SPP.bits() == 0
    }
}

/// One level of `catch`: where to unwind to, and what was caught.
struct Catcher {
    buf: *mut JumpBuf,
    /// `sstatus.SIE` when `catch` was entered, restored on unwinding.
    sie: bool,
    caught: Option<Trap>,
}

// SAFETY: the kernel runs its tests on one hart; the catcher stack is only touched with
// the lock held and the pointers refer to live stack frames of that hart.
unsafe impl Send for Catcher {}

const MAX_DEPTH: usize = 4;
static CATCHERS: Mutex<heapless_stack::Stack> = Mutex::new(heapless_stack::Stack::new());

mod heapless_stack {
    use super::{Catcher, MAX_DEPTH};

    /// A fixed-depth stack of catchers (no allocation inside the trap handler).
    pub struct Stack {
        items: [Option<Catcher>; MAX_DEPTH],
        len: usize,
    }

    impl Stack {
        pub const fn new() -> Self {
            Self { items: [const { None }; MAX_DEPTH], len: 0 }
        }

        pub fn push(&mut self, c: Catcher) {
            assert!(self.len < MAX_DEPTH, "catch nested too deeply");
            self.items[self.len] = Some(c);
            self.len += 1;
        }

        pub fn pop(&mut self) -> Option<Catcher> {
            if self.len == 0 {
                return None;
            }
            self.len -= 1;
            self.items[self.len].take()
        }

        pub fn top(&mut self) -> Option<&mut Catcher> {
            self.len.checked_sub(1).and_then(|i| self.items[i].as_mut())
        }
    }
}

extern "C" fn call_closure<F: FnOnce() -> R, R>(arg: *mut u8) {
    // SAFETY: `catch` passes a pointer to its `(Option<F>, Option<R>)` pair.
    let slot = unsafe { &mut *(arg as *mut (Option<F>, Option<R>)) };
    if let Some(f) = slot.0.take() {
        slot.1 = Some(f());
    }
}

/// Runs `f`; if it raises an exception, abandons it and returns the trap instead. (Nothing
/// `f` owns is dropped when it is abandoned: keep locks and allocations out of code that
/// is expected to trap.)
pub fn catch<F: FnOnce() -> R, R>(f: F) -> Result<R, Trap> {
    let mut buf = JumpBuf::default();
    let mut slot: (Option<F>, Option<R>) = (Some(f), None);
    let sie = riscv::register::sstatus::read().sie();
    CATCHERS.lock().push(Catcher { buf: &mut buf, sie, caught: None });
    // SAFETY: try_run saves our callee-saved registers in `buf` and calls `call_closure`
    // with a pointer to `slot`; a trap unwinds to `try_run_resume`, which restores them.
    // Both live until the catcher is popped below.
    let unwound = unsafe {
        try_run(&mut buf, call_closure::<F, R>, &mut slot as *mut (Option<F>, Option<R>) as *mut u8)
    };
    let catcher = CATCHERS.lock().pop().expect("pushed above");
    match (unwound, catcher.caught, slot.1) {
        (0, _, Some(r)) => Ok(r),
        (_, Some(trap), _) => Err(trap),
        _ => unreachable!("try_run returned without a result or a trap"),
    }
}

/// A routine meant to run in U-mode: it never returns, it traps.
pub type UserFn = unsafe extern "C" fn(u64) -> !;

/// Runs `entry(arg)` in U-mode on a private stack until it traps; returns the trap (an
/// `ecall` ends it with cause 8).
pub fn run_user(entry: UserFn, arg: u64) -> Trap {
    #[repr(align(16))]
    struct UserStack(#[allow(dead_code)] [u8; 16 * 1024]);
    static mut USER_STACK: UserStack = UserStack([0; 16 * 1024]);
    let top = (&raw mut USER_STACK) as u64 + 16 * 1024;
    run_user_at(entry as *const () as u64, arg, top)
}

/// Runs U-mode code at address `entry` (any virtual address the current space maps for
/// U-mode) with a0 = `arg` and sp = `sp`, until it traps; returns the trap.
pub fn run_user_at(entry: u64, arg: u64, sp: u64) -> Trap {
    let result = catch(|| -> () {
        // SAFETY: SPP = U so `sret` in enter_user drops to U-mode; any trap from there
        // unwinds to this catch.
        unsafe {
            riscv::register::sstatus::set_spp(riscv::register::sstatus::SPP::User);
            enter_user(entry as usize, arg as usize, sp as usize)
        }
    });

    match result {
        Ok(()) => unreachable!("U-mode code returns only by trapping"),
        Err(trap) => trap,
    }
}

/// Interrupts taken, per cause code (0..16).
static INTERRUPTS: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
/// `time` when the last supervisor timer interrupt was taken.
pub static LAST_TIMER_AT: AtomicU64 = AtomicU64::new(0);
/// `sepc` of the last interrupt taken: where it interrupted.
pub static LAST_IRQ_SEPC: AtomicU64 = AtomicU64::new(0);
/// `sstatus` when the last interrupt was taken.
pub static LAST_IRQ_SSTATUS: AtomicU64 = AtomicU64::new(0);
/// `scause` of the last interrupt taken.
pub static LAST_IRQ_SCAUSE: AtomicU64 = AtomicU64::new(0);
/// Causes of the interrupts taken, oldest first (the first 8 since `clear_irq_log`).
static IRQ_LOG: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static IRQ_LOG_LEN: AtomicUsize = AtomicUsize::new(0);

/// Forgets logged interrupts.
pub fn clear_irq_log() {
    IRQ_LOG_LEN.store(0, Ordering::SeqCst);
}

/// The interrupt codes taken since `clear_irq_log`, oldest first (up to 8).
pub fn irq_log() -> ([u64; 8], usize) {
    let n = IRQ_LOG_LEN.load(Ordering::SeqCst).min(8);
    (core::array::from_fn(|i| IRQ_LOG[i].load(Ordering::SeqCst)), n)
}

/// The address of the timer interrupt counter, for U-mode code that waits on it.
pub fn timer_count_address() -> u64 {
    &INTERRUPTS[Interrupt::SupervisorTimer as usize] as *const AtomicUsize as u64
}

/// How many interrupts of `irq` were taken so far.
pub fn interrupt_count(irq: Interrupt) -> usize {
    INTERRUPTS[irq as usize].load(Ordering::SeqCst)
}

fn handle_interrupt(code: u64, frame: &Frame) {
    LAST_IRQ_SEPC.store(frame.sepc, Ordering::SeqCst);
    LAST_IRQ_SSTATUS.store(frame.sstatus, Ordering::SeqCst);
    LAST_IRQ_SCAUSE.store(frame.scause, Ordering::SeqCst);
    let n = IRQ_LOG_LEN.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = IRQ_LOG.get(n) {
        slot.store(code, Ordering::SeqCst);
    }
    if let Some(counter) = INTERRUPTS.get(code as usize) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    match Interrupt::from_code(code) {
        Some(Interrupt::SupervisorTimer) => {
            LAST_TIMER_AT.store(riscv::register::time::read64(), Ordering::SeqCst);
            // Clear the source: no timer until a test asks again.
            crate::timer::disarm();
        }
        Some(Interrupt::SupervisorSoft) => {
            // SAFETY: clearing SSIP only acknowledges the interrupt.
            unsafe { riscv::register::sip::clear_ssoft() };
        }
        _ => {
            // Unknown source: mask it so it cannot storm.
            // SAFETY: writing sie only changes which interrupts are taken.
            unsafe { asm!("csrc sie, {0}", in(reg) 1u64 << code) };
        }
    }
}

extern "C" fn trap_handler(frame: &mut Frame) {
    if frame.scause & rv::trap::INTERRUPT_BIT != 0 {
        handle_interrupt(frame.scause & 0xff, frame);
        return;
    }
    let trap = Trap {
        scause: frame.scause,
        stval: frame.stval,
        sepc: frame.sepc,
        sstatus: frame.sstatus,
        args: frame.regs[10..18].try_into().expect("eight argument registers"),
    };
    let mut catchers = CATCHERS.lock();
    let Some(catcher) = catchers.top() else {
        drop(catchers);
        crate::println!("# unexpected trap outside any test: {trap:x?}");
        crate::shutdown(true);
    };
    catcher.caught = Some(trap);
    // Unwind: return (with sret) into try_run_resume in S-mode, a0 = the jump buffer.
    frame.sepc = try_run_resume as *const () as u64;
    frame.regs[10] = catcher.buf as u64;
    let mut sstatus = frame.sstatus | Sstatus::SPP.bits();
    if catcher.sie {
        sstatus |= Sstatus::SPIE.bits();
    } else {
        sstatus &= !Sstatus::SPIE.bits();
    }
    frame.sstatus = sstatus;
}
