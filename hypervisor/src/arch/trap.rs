//! The trap vector and the switch into and out of guests. `stvec` points at
//! `trap_vector` on every hart for as long as hypocaust runs.
//!
//! `sscratch` tells where a trap came from: it is zero while hypocaust runs, and holds the
//! running vCPU's [`GuestContext`] while a guest runs. A trap from a guest saves the guest's
//! registers into that context and resumes hypocaust where it called [`enter_guest`]; a
//! trap from hypocaust saves a [`HostTrapFrame`] on the current stack and calls
//! [`crate::trap::host_trap`].

use core::arch::global_asm;
use core::mem::offset_of;

use vcpu::{FastExit, FastPath, Vcpu};

/// Registers of an interrupted hypocaust context, in the order the vector saves them.
#[repr(C)]
#[derive(Debug, Default)]
pub struct HostTrapFrame {
    /// x0..x31 (x0 slot unused; x2 is the interrupted `sp`).
    pub regs: [u64; 32],
    pub sepc: u64,
    pub sstatus: u64,
    pub scause: u64,
    pub stval: u64,
}

/// hypocaust's registers that must survive a guest run (the callee-saved ones, and the
/// `tp` and `gp` the guest overwrites).
#[repr(C)]
#[derive(Debug, Default)]
pub struct HostRegs {
    ra: u64,
    sp: u64,
    gp: u64,
    tp: u64,
    s: [u64; 12],
}

/// Everything the switch needs for one vCPU. `sscratch` points here while it runs.
#[repr(C)]
pub struct GuestContext {
    host: HostRegs,
    /// The address of the vCPU's code pages (`paging::VcpuMmu::code_pages`), for the
    /// fast path; 0: no fast path.
    pub code_pages: u64,
    /// The address of the vCPU's external interrupt line (an `AtomicBool`), for the fast
    /// path's look at pending interrupts.
    pub external: u64,
    /// When the hart's scheduler wants the hart back (`time`): the fast path arms the
    /// timer for no later.
    pub slice_end: u64,
    pub fast: FastPath,
    pub vcpu: Vcpu,
}

impl GuestContext {
    /// A context for `vcpu`.
    pub fn new(vcpu: Vcpu) -> Self {
        Self {
            host: HostRegs::default(),
            vcpu,
            code_pages: 0,
            external: 0,
            slice_end: u64::MAX,
            fast: FastPath::default(),
        }
    }
}

/// How a guest's run ended ([`enter_guest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest trapped: the cause is in `scause`/`stval`.
    Trap,
    /// The fast path handled the trap, and an interrupt is deliverable: the run loop
    /// delivers it before the guest's next instruction.
    Deliver,
}

const FRAME_SIZE: usize = core::mem::size_of::<HostTrapFrame>();
/// Where the guest's x0 lives in a `GuestContext` (the `Regs` are the first field of `Vcpu`).
const GUEST_REGS: usize = offset_of!(GuestContext, vcpu) + offset_of!(Vcpu, regs);
const _: () = assert!(offset_of!(Vcpu, regs) == 0 && offset_of!(vcpu::Regs, pc) == 32 * 8);
const _: () = assert!(GUEST_REGS + 32 * 8 < 2048);
const CODE_PAGES_PTR: usize = offset_of!(GuestContext, code_pages);
const _: () = assert!(offset_of!(GuestContext, host) == 0);

global_asm!(
    r#"
    .section .text
    .p2align 2
    .globl trap_vector
trap_vector:
    csrrw   sp, sscratch, sp
    beqz    sp, .Lfrom_hypocaust

    # From a guest: sp = its GuestContext, sscratch = its sp.
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, ({GUEST_REGS} + \n*8)(sp)
    .endr
    csrr    t0, sscratch
    sd      t0, ({GUEST_REGS} + 2*8)(sp)
    csrr    t0, sepc
    sd      t0, ({GUEST_REGS} + 32*8)(sp)

    # The fast path (docs/trap-path.md, "The fast path"): Vcpu::fast_exit, on hypocaust's
    # stack, with its gp and tp; sscratch is zero meanwhile, as while hypocaust runs (a
    # trap in it is hypocaust's). a0 = 1: it handled the exit, back into the guest; else
    # the run loop's (a0 = what enter_guest returns).
    li      a0, {EXIT_TRAP}
    ld      t0, {CODE_PAGES_PTR}(sp)
    beqz    t0, .Lslow
    csrw    sscratch, zero
    mv      s0, sp
    ld      gp, 16(s0)
    ld      tp, 24(s0)
    ld      sp, 8(s0)
    mv      a0, s0
    call    {fast_exit}
    mv      sp, s0
    li      t0, {FAST_RESUME}
    bne     a0, t0, .Lslow
    mv      a0, s0
    j       .Lenter

.Lslow:
    csrw    sscratch, zero
    ld      ra, 0(sp)
    ld      gp, 16(sp)
    ld      tp, 24(sp)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    ld      s\n, (32 + \n*8)(sp)
    .endr
    ld      sp, 8(sp)
    ret                             # from enter_guest

.Lfrom_hypocaust:
    csrrw   sp, sscratch, sp        # sp back, sscratch = 0
    addi    sp, sp, -{FRAME_SIZE}
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n*8(sp)
    .endr
    addi    t0, sp, {FRAME_SIZE}
    sd      t0, 2*8(sp)
    csrr    t0, sepc
    sd      t0, 32*8(sp)
    csrr    t0, sstatus
    sd      t0, 33*8(sp)
    csrr    t0, scause
    sd      t0, 34*8(sp)
    csrr    t0, stval
    sd      t0, 35*8(sp)
    mv      a0, sp
    call    {host_trap}
    ld      t0, 32*8(sp)
    csrw    sepc, t0
    ld      t0, 33*8(sp)
    csrw    sstatus, t0
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n*8(sp)
    .endr
    ld      sp, 2*8(sp)
    sret

    # enter_guest(a0 = &mut GuestContext): returns when the guest traps.
    .globl enter_guest
enter_guest:
    sd      ra, 0(a0)
    sd      sp, 8(a0)
    sd      gp, 16(a0)
    sd      tp, 24(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    sd      s\n, (32 + \n*8)(a0)
    .endr
.Lenter:
    ld      t0, ({GUEST_REGS} + 32*8)(a0)
    csrw    sepc, t0
    csrw    sscratch, a0
    .irp n, 1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, ({GUEST_REGS} + \n*8)(a0)
    .endr
    ld      a0, ({GUEST_REGS} + 10*8)(a0)
    sret

    # try_write_stimecmp(a0 = value) -> 1 if written, 0 if the CSR is not accessible.
    .globl try_write_stimecmp, try_write_stimecmp_fault, try_write_stimecmp_resume
try_write_stimecmp:
try_write_stimecmp_fault:
    csrw    stimecmp, a0
    li      a0, 1
    ret
try_write_stimecmp_resume:
    li      a0, 0
    ret

    # try_read_senvcfg() -> 1 if the hart has senvcfg (privileged spec 1.12), 0 if not.
    .globl try_read_senvcfg, try_read_senvcfg_fault, try_read_senvcfg_resume
try_read_senvcfg:
try_read_senvcfg_fault:
    csrr    a0, senvcfg
    li      a0, 1
    ret
try_read_senvcfg_resume:
    li      a0, 0
    ret
"#,
    FRAME_SIZE = const FRAME_SIZE,
    GUEST_REGS = const GUEST_REGS,
    CODE_PAGES_PTR = const CODE_PAGES_PTR,
    EXIT_TRAP = const vcpu::FastExit::Trap as u64,
    FAST_RESUME = const vcpu::FastExit::Resume as u64,
    fast_exit = sym crate::fast::fast_exit,
    host_trap = sym crate::trap::host_trap,
);

unsafe extern "C" {
    fn trap_vector();
    #[link_name = "enter_guest"]
    fn enter_guest_asm(ctx: *mut u8) -> u64;
    fn try_write_stimecmp(value: u64) -> u64;
    fn try_write_stimecmp_fault();
    fn try_write_stimecmp_resume();
    fn try_read_senvcfg() -> u64;
    fn try_read_senvcfg_fault();
    fn try_read_senvcfg_resume();
}

/// Runs the guest of `ctx` until it traps to the run loop: the guest's registers are then
/// in `ctx.vcpu.regs`, and, for [`Exit::Trap`], the cause in `scause`/`stval`. Exits the
/// fast path handles ([`vcpu::fast`]) do not return.
///
/// # Safety
/// The hart must be set up to run the guest: `satp` on a table that maps the guest with U
/// pages and hypocaust without, `sstatus.SPP` clear, and interrupts masked in S-mode.
pub unsafe fn enter_guest(ctx: &mut GuestContext) -> Exit {
    // SAFETY: the caller set the hart up; the assembly saves and restores every register
    // hypocaust needs, and returns here on the guest's next trap the fast path leaves.
    let exit = unsafe { enter_guest_asm(ctx as *mut GuestContext as *mut u8) };
    if exit == FastExit::Deliver as u64 { Exit::Deliver } else { Exit::Trap }
}

/// Points `stvec` at the trap vector (direct mode) and clears `sscratch`.
pub fn install() {
    // SAFETY: the vector is a valid, 4-byte aligned trap handler for this hart.
    unsafe {
        core::arch::asm!(
            "csrw sscratch, zero",
            "csrw stvec, {0}",
            in(reg) trap_vector as *const () as usize,
        );
    }
}

/// Writes `stimecmp` if hypocaust may (Sstc present and enabled by firmware).
pub fn write_stimecmp_checked(value: u64) -> bool {
    // SAFETY: the fault, if any, is an illegal-instruction trap at a known pc, which
    // `fixup` turns into a return of 0.
    unsafe { try_write_stimecmp(value) != 0 }
}

/// Whether the hart has `senvcfg` (harts of privileged spec 1.10/1.11, like the U54, do
/// not).
pub fn has_senvcfg() -> bool {
    // SAFETY: as in `write_stimecmp_checked`: a read of a missing CSR traps at a known pc.
    unsafe { try_read_senvcfg() != 0 }
}

/// If `sepc` is an instruction allowed to fault, where to resume instead.
pub fn fixup(sepc: u64) -> Option<u64> {
    let allowed: [(unsafe extern "C" fn(), unsafe extern "C" fn()); 2] = [
        (try_write_stimecmp_fault, try_write_stimecmp_resume),
        (try_read_senvcfg_fault, try_read_senvcfg_resume),
    ];
    allowed
        .iter()
        .find(|(fault, _)| sepc == *fault as *const () as u64)
        .map(|(_, resume)| *resume as *const () as u64)
}
