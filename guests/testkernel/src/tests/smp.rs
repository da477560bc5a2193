//! Several harts: SBI HSM (start, stop, status, suspend) of every other hart, IPIs to each,
//! and remote fences that another hart must obey (a page remapped here is never read
//! through the old mapping there after the fence). They skip on a machine of one hart.
//!
//! The other harts run small jobs: the boot hart starts one with SBI `hart_start` (the
//! opaque argument points to its [`Job`]), the job reports through atomics, and the hart
//! stops itself. Every wait on either side gives up after a bound.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use rv::csr::{Interrupts, SatpMode};
use rv::pte::PteFlags;
use sbi_spec::hsm;

use crate::ecall::{Ret, sbi};
use crate::harness::{Test, TestResult};
use crate::vm::{self, Space};
use crate::{check, check_eq, skip, test, timer};

pub const TESTS: &[Test] = &[
    test!("smp/hsm-start-stop-every-hart", start_stop_every_hart),
    test!("smp/hsm-start-started-hart", start_started_hart),
    test!("smp/ipi-every-hart", ipi_every_hart),
    test!("smp/remote-sfence-vma", remote_sfence_vma),
    test!("smp/remote-fence-i", remote_fence_i),
    test!("smp/hsm-suspend-retentive", suspend_retentive),
    test!("smp/hsm-suspend-non-retentive", suspend_non_retentive),
    test!("smp/timer-per-hart", timer_per_hart),
    test!("smp/plic-context-per-hart", plic_context_per_hart),
];

/// Harts with a stack here (higher IDs are left out of the tests).
const MAX_HARTS: usize = 8;
const STACK_SIZE: usize = 16 * 1024;
/// How long either side waits for the other: long, for a loaded host may leave one
/// hart's thread unscheduled for a while (a bound for a lost event, not a timing check).
const WAIT_US: u64 = 10_000_000;

/// What a job does.
const REPORT: u64 = 1;
const WAIT_IPI: u64 = 2;
const READER: u64 = 3;
const SUSPEND: u64 = 4;
const SUSPEND_NON_RETENTIVE: u64 = 5;
const OWN_TIMER: u64 = 6;
const WAIT_EXTERNAL: u64 = 7;

/// Job states.
const WAITING: u64 = 1;
const READY: u64 = 2;
const DONE: u64 = 3;

/// Reader commands.
const READ: u64 = 1;
const STOP: u64 = 2;

/// SBI error: the hart is already started.
const ALREADY_AVAILABLE: isize = -6;

/// The virtual address the reader job reads.
const WATCHED_VA: u64 = 0x4000_0000;
const ASID: u16 = 5;

/// A job for another hart. `stack_top` must stay first and `fault` at [`FAULT_OFFSET`]
/// (the assembly uses them).
#[repr(C)]
struct Job {
    stack_top: u64,
    fault: AtomicU64,
    task: u64,
    /// The reader's `satp`; the non-retentive suspend's resume job.
    arg: u64,
    hartid: AtomicU64,
    state: AtomicU64,
    command: AtomicU64,
    value: AtomicU64,
}

const FAULT_OFFSET: usize = 8;

impl Job {
    const fn new(task: u64) -> Self {
        Self {
            stack_top: 0,
            fault: AtomicU64::new(0),
            task,
            arg: 0,
            hartid: AtomicU64::new(u64::MAX),
            state: AtomicU64::new(0),
            command: AtomicU64::new(0),
            value: AtomicU64::new(0),
        }
    }
}

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_HARTS]);
static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_HARTS]);

fn stack_top(hart: usize) -> u64 {
    (&raw mut STACKS) as u64 + ((hart + 1) * STACK_SIZE) as u64
}

global_asm!(
    r#"
    .section .text
    .globl smp_secondary_entry
    .p2align 2
smp_secondary_entry:
    /* a0 = hartid, a1 = &Job (hart_start's opaque); paging off, sstatus.SIE clear */
    ld      sp, 0(a1)
    la      t0, smp_secondary_fault
    csrw    stvec, t0
    csrw    sscratch, a1
    call    {secondary_main}
1:  wfi
    j       1b

    .p2align 2
smp_secondary_fault:
    /* An unexpected trap: report scause in the job and park. */
    csrr    t0, sscratch
    csrr    t1, scause
    sd      t1, {FAULT_OFFSET}(t0)
1:  wfi
    j       1b
"#,
    secondary_main = sym secondary_main,
    FAULT_OFFSET = const FAULT_OFFSET,
);

unsafe extern "C" {
    fn smp_secondary_entry();
}

fn entry() -> usize {
    smp_secondary_entry as *const () as usize
}

/// Waits until `cond` holds, at most [`WAIT_US`].
fn wait(cond: impl Fn() -> bool) -> bool {
    let give_up = timer::now() + timer::ticks_from_us(WAIT_US);
    while !cond() {
        if timer::now() > give_up {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn stop_self() -> ! {
    let _ = sbi(hsm::EID_HSM, hsm::HART_STOP, [0; 6]);
    loop {
        crate::arch_wfi();
    }
}

/// Another hart's Rust entry: runs its job, then stops.
extern "C" fn secondary_main(hartid: usize, job: &Job) -> ! {
    job.hartid.store(hartid as u64, Ordering::SeqCst);
    match job.task {
        WAIT_IPI => {
            // SAFETY: enables only the software interrupt in sie; sstatus.SIE stays clear,
            // so it is never taken, only seen by `wfi` and in sip.
            unsafe { core::arch::asm!("csrs sie, {0}", in(reg) Interrupts::SSI.bits()) };
            job.state.store(WAITING, Ordering::SeqCst);
            let got = wait_ipi();
            job.value.store(got as u64, Ordering::SeqCst);
        }
        READER => {
            // SAFETY: the space maps the kernel's gigabyte where it runs.
            unsafe { core::arch::asm!("csrw satp, {0}", "sfence.vma", in(reg) job.arg) };
            job.state.store(READY, Ordering::SeqCst);
            loop {
                if !wait(|| job.command.load(Ordering::SeqCst) != 0) {
                    break;
                }
                match job.command.load(Ordering::SeqCst) {
                    READ => {
                        // SAFETY: the space maps WATCHED_VA to a readable page.
                        let v = unsafe { (WATCHED_VA as *const u64).read_volatile() };
                        job.value.store(v, Ordering::SeqCst);
                        job.command.store(0, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            vm::deactivate();
        }
        SUSPEND | SUSPEND_NON_RETENTIVE => {
            // SAFETY: as for WAIT_IPI: the IPI ends the suspend without being taken.
            unsafe { core::arch::asm!("csrs sie, {0}", in(reg) Interrupts::SSI.bits()) };
            job.state.store(WAITING, Ordering::SeqCst);
            let ret = if job.task == SUSPEND {
                sbi(hsm::EID_HSM, hsm::HART_SUSPEND, [0, 0, 0, 0, 0, 0])
            } else {
                let resume = [0x8000_0000, entry(), job.arg as usize, 0, 0, 0];
                sbi(hsm::EID_HSM, hsm::HART_SUSPEND, resume)
            };
            // Only a retentive suspend (or a failed one) comes back here.
            job.value.store(ret.error as u64, Ordering::SeqCst);
            // SAFETY: clears the IPI that woke the hart.
            unsafe { core::arch::asm!("csrc sip, {0}", in(reg) Interrupts::SSI.bits()) };
        }
        OWN_TIMER => {
            // Its own timer, `arg` ticks ahead; it must come here, not before the deadline.
            // SAFETY: STIE only, sstatus.SIE clear: wfi sees STIP, nothing is taken.
            unsafe { core::arch::asm!("csrs sie, {0}", in(reg) Interrupts::STI.bits()) };
            let deadline = timer::now() + job.arg;
            timer::arm(deadline);
            job.state.store(WAITING, Ordering::SeqCst);
            let give_up = timer::now() + timer::ticks_from_us(WAIT_US);
            while csr_read!("sip") & Interrupts::STI.bits() == 0 && timer::now() < give_up {
                crate::arch_wfi();
            }
            let at = timer::now();
            timer::disarm();
            // value: 1 if it came, not before the deadline.
            let came =
                csr_read!("sip") & Interrupts::STI.bits() == 0 && at >= deadline && at < give_up;
            job.value.store(came as u64, Ordering::SeqCst);
        }
        WAIT_EXTERNAL => {
            // SAFETY: SEIE only, sstatus.SIE clear: wfi sees SEIP, nothing is taken.
            unsafe { core::arch::asm!("csrs sie, {0}", in(reg) Interrupts::SEI.bits()) };
            job.state.store(WAITING, Ordering::SeqCst);
            let give_up = timer::now() + timer::ticks_from_us(WAIT_US);
            while csr_read!("sip") & Interrupts::SEI.bits() == 0 && timer::now() < give_up {
                crate::arch_wfi();
            }
            // Claim through this hart's own context (the main hart drops the source).
            let claim = crate::plic::context_claim(crate::plic::supervisor_context(hartid));
            let source = crate::plic::read(claim);
            job.value.store(source as u64, Ordering::SeqCst);
            job.state.store(READY, Ordering::SeqCst);
            let _ = wait(|| job.command.load(Ordering::SeqCst) == STOP);
            crate::plic::write(claim, source);
        }
        _ => {}
    }
    job.state.store(DONE, Ordering::SeqCst);
    stop_self()
}

/// Waits (with `wfi`) for sip.SSIP, clears it; whether it came.
fn wait_ipi() -> bool {
    let give_up = timer::now() + timer::ticks_from_us(WAIT_US);
    while csr_read!("sip") & Interrupts::SSI.bits() == 0 {
        if timer::now() > give_up {
            return false;
        }
        crate::arch_wfi();
    }
    // SAFETY: acknowledges the software interrupt.
    unsafe { core::arch::asm!("csrc sip, {0}", in(reg) Interrupts::SSI.bits()) };
    true
}

/// The other harts the tests can use; skips the test if there are none.
fn other_harts() -> Result<alloc::vec::Vec<usize>, crate::harness::Outcome> {
    let m = crate::machine::get();
    let others: alloc::vec::Vec<usize> =
        m.hart_ids.iter().copied().filter(|&h| h != m.hartid && h < MAX_HARTS).collect();
    if others.is_empty() {
        skip!("needs 2 or more harts");
    }
    Ok(others)
}

fn status(hart: usize) -> Ret {
    sbi(hsm::EID_HSM, hsm::HART_GET_STATUS, [hart, 0, 0, 0, 0, 0])
}

fn is_stopped(hart: usize) -> bool {
    status(hart) == Ret { error: 0, value: hsm::hart_state::STOPPED }
}

/// Starts `job` on `hart`.
fn start(hart: usize, job: &mut Job) -> Ret {
    job.stack_top = stack_top(hart);
    sbi(hsm::EID_HSM, hsm::HART_START, [hart, entry(), job as *mut Job as usize, 0, 0, 0])
}

/// Checks that `job` on `hart` finished (no fault) and the hart is stopped again.
fn finished(hart: usize, job: &Job) -> TestResult {
    check!(
        wait(|| job.state.load(Ordering::SeqCst) == DONE || job.fault.load(Ordering::SeqCst) != 0),
        "hart {hart}'s job did not finish"
    );
    check_eq!(job.fault.load(Ordering::SeqCst), 0);
    check!(wait(|| is_stopped(hart)), "hart {hart} did not stop: {:?}", status(hart));
    Ok(())
}

fn send_ipi(mask: usize, base: usize) -> Ret {
    sbi(sbi_spec::spi::EID_SPI, sbi_spec::spi::SEND_IPI, [mask, base, 0, 0, 0, 0])
}

fn start_stop_every_hart() -> TestResult {
    for hart in other_harts()? {
        check!(wait(|| is_stopped(hart)), "hart {hart} is not stopped: {:?}", status(hart));
        // Twice: a stopped hart starts again.
        for _ in 0..2 {
            let mut job = Job::new(REPORT);
            check_eq!(start(hart, &mut job).error, 0);
            check!(
                wait(|| job.hartid.load(Ordering::SeqCst) == hart as u64),
                "hart {hart} did not run its job (a0 = {:#x})",
                job.hartid.load(Ordering::SeqCst)
            );
            finished(hart, &job)?;
        }
    }
    Ok(())
}

fn start_started_hart() -> TestResult {
    let hart = other_harts()?[0];
    let mut job = Job::new(WAIT_IPI);
    check_eq!(start(hart, &mut job).error, 0);
    check!(wait(|| job.state.load(Ordering::SeqCst) == WAITING), "hart {hart} never waited");
    check_eq!(status(hart), Ret { error: 0, value: hsm::hart_state::STARTED });
    let mut again = Job::new(REPORT);
    check_eq!(start(hart, &mut again).error, ALREADY_AVAILABLE);
    check_eq!(send_ipi(1 << hart, 0).error, 0);
    finished(hart, &job)?;
    check_eq!(job.value.load(Ordering::SeqCst), 1);
    check_eq!(again.hartid.load(Ordering::SeqCst), u64::MAX);
    Ok(())
}

fn ipi_every_hart() -> TestResult {
    for hart in other_harts()? {
        // Once as bit `hart` of base 0, once as bit 0 of base `hart`.
        for (mask, base) in [(1 << hart, 0), (1, hart)] {
            let mut job = Job::new(WAIT_IPI);
            check_eq!(start(hart, &mut job).error, 0);
            check!(
                wait(|| job.state.load(Ordering::SeqCst) == WAITING),
                "hart {hart} never waited"
            );
            check_eq!(send_ipi(mask, base).error, 0);
            finished(hart, &job)?;
            check!(
                job.value.load(Ordering::SeqCst) == 1,
                "hart {hart} saw no IPI (mask {mask:#x} base {base})"
            );
        }
    }
    Ok(())
}

/// Asks the reader on `hart` to read the watched address; what it read.
fn read_on(hart: usize, job: &Job) -> Result<u64, crate::harness::Outcome> {
    job.command.store(READ, Ordering::SeqCst);
    check!(wait(|| job.command.load(Ordering::SeqCst) == 0), "hart {hart} did not read");
    check_eq!(job.fault.load(Ordering::SeqCst), 0);
    Ok(job.value.load(Ordering::SeqCst))
}

fn remote_sfence_vma() -> TestResult {
    use sbi_spec::rfnc::{EID_RFNC, REMOTE_SFENCE_VMA, REMOTE_SFENCE_VMA_ASID};
    for hart in other_harts()? {
        let space = Space::new(SatpMode::Sv39);
        let (a, b) = (vm::alloc_page(), vm::alloc_page());
        // SAFETY: two arena pages.
        unsafe {
            (a as *mut u64).write_volatile(0xAAAA);
            (b as *mut u64).write_volatile(0xBBBB);
        }
        let flags = PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D;
        let pte = space.map(WATCHED_VA, a, 0, flags);
        let mut job = Job::new(READER);
        job.arg = space.satp(ASID);
        check_eq!(start(hart, &mut job).error, 0);
        check!(wait(|| job.state.load(Ordering::SeqCst) == READY), "hart {hart} never got ready");
        check_eq!(read_on(hart, &job)?, 0xAAAA);
        // Remapped here, fenced there: the reader sees the new page.
        vm::set_pte(pte, rv::pte::Pte::new(b >> 12, flags | PteFlags::V).0);
        let ret = sbi(EID_RFNC, REMOTE_SFENCE_VMA, [1 << hart, 0, WATCHED_VA as usize, 4096, 0, 0]);
        check_eq!(ret.error, 0);
        check_eq!(read_on(hart, &job)?, 0xBBBB);
        // Back, fenced by ASID.
        vm::set_pte(pte, rv::pte::Pte::new(a >> 12, flags | PteFlags::V).0);
        let args = [1, hart, WATCHED_VA as usize, 4096, ASID as usize, 0];
        check_eq!(sbi(EID_RFNC, REMOTE_SFENCE_VMA_ASID, args).error, 0);
        check_eq!(read_on(hart, &job)?, 0xAAAA);
        job.command.store(STOP, Ordering::SeqCst);
        finished(hart, &job)?;
    }
    Ok(())
}

fn remote_fence_i() -> TestResult {
    use sbi_spec::rfnc::{EID_RFNC, REMOTE_FENCE_I};
    let others = other_harts()?;
    let mask = others.iter().fold(0usize, |m, h| m | 1 << h);
    // Waiting harts, then every other hart, then all harts (base -1).
    let mut jobs: alloc::vec::Vec<Job> = others.iter().map(|_| Job::new(WAIT_IPI)).collect();
    for (hart, job) in others.iter().zip(jobs.iter_mut()) {
        check_eq!(start(*hart, job).error, 0);
    }
    for (hart, job) in others.iter().zip(&jobs) {
        check!(wait(|| job.state.load(Ordering::SeqCst) == WAITING), "hart {hart} never waited");
    }
    check_eq!(sbi(EID_RFNC, REMOTE_FENCE_I, [mask, 0, 0, 0, 0, 0]).error, 0);
    check_eq!(sbi(EID_RFNC, REMOTE_FENCE_I, [0, usize::MAX, 0, 0, 0, 0]).error, 0);
    check_eq!(send_ipi(mask, 0).error, 0);
    for (hart, job) in others.iter().zip(&jobs) {
        finished(*hart, job)?;
    }
    Ok(())
}

fn suspend_retentive() -> TestResult {
    let hart = other_harts()?[0];
    let mut job = Job::new(SUSPEND);
    check_eq!(start(hart, &mut job).error, 0);
    let suspended = Ret { error: 0, value: hsm::hart_state::SUSPENDED };
    check!(wait(|| status(hart) == suspended), "hart {hart} did not suspend: {:?}", status(hart));
    check_eq!(send_ipi(1 << hart, 0).error, 0);
    finished(hart, &job)?;
    check_eq!(job.value.load(Ordering::SeqCst), 0);
    Ok(())
}

fn suspend_non_retentive() -> TestResult {
    let hart = other_harts()?[0];
    let mut resumed = Job::new(REPORT);
    resumed.stack_top = stack_top(hart);
    let mut job = Job::new(SUSPEND_NON_RETENTIVE);
    job.arg = &resumed as *const Job as u64;
    check_eq!(start(hart, &mut job).error, 0);
    let suspended = Ret { error: 0, value: hsm::hart_state::SUSPENDED };
    check!(wait(|| status(hart) == suspended), "hart {hart} did not suspend: {:?}", status(hart));
    check_eq!(send_ipi(1 << hart, 0).error, 0);
    // It resumes at the entry with the resume job, as if started anew.
    finished(hart, &resumed)?;
    check_eq!(resumed.hartid.load(Ordering::SeqCst), hart as u64);
    check_eq!(job.state.load(Ordering::SeqCst), WAITING);
    Ok(())
}

/// Each hart has its own timer: another hart's deadline neither fires here nor delays it.
fn timer_per_hart() -> TestResult {
    let hart = other_harts()?[0];
    let mut job = Job::new(OWN_TIMER);
    job.arg = timer::ticks_from_us(1_000);
    check_eq!(start(hart, &mut job).error, 0);
    // It may be done already (its deadline is near, and this hart may be slow to look: a
    // hart a hypervisor shares among vCPUs).
    let waited = || matches!(job.state.load(Ordering::SeqCst), WAITING | DONE);
    check!(wait(waited), "hart {hart} never waited");
    // This hart's own deadline, later than the other's.
    // SAFETY: STIE only, sstatus.SIE clear: nothing is taken.
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) Interrupts::STI.bits()) };
    let deadline = timer::now() + timer::ticks_from_us(3_000);
    timer::arm(deadline);
    let give_up = timer::now() + timer::ticks_from_us(WAIT_US);
    while csr_read!("sip") & Interrupts::STI.bits() == 0 && timer::now() < give_up {
        crate::arch_wfi();
    }
    let at = timer::now();
    timer::disarm();
    finished(hart, &job)?;
    check!(job.value.load(Ordering::SeqCst) == 1, "hart {hart}'s own timer did not come in time");
    check!(at >= deadline, "this hart's timer came {} ticks early", deadline - at);
    check!(at < give_up, "this hart's timer never came");
    Ok(())
}

/// A PLIC source enabled in another hart's S-mode context interrupts that hart, which
/// claims it through its context; this hart's context, where it is not enabled, sees
/// nothing.
fn plic_context_per_hart() -> TestResult {
    use crate::plic::{self, context_enable_addr, context_threshold, supervisor_context};
    use crate::uart16550 as uart;
    let hart = other_harts()?[0];
    let theirs = supervisor_context(hart);
    let word = uart::IRQ as usize / 32;
    let bit = 1u32 << (uart::IRQ % 32);
    let saved_theirs =
        (plic::read(context_enable_addr(theirs, word)), plic::read(context_threshold(theirs)));
    let mut seen = (u32::MAX, true, 0u64, 0u64);
    {
        let _plic = plic::Saved::take(&[uart::IRQ]);
        let _uart = uart::Saved::take().map_err(|e| crate::harness::Outcome::Fail(e.into()))?;
        plic::take_over(uart::IRQ);
        plic::set_enabled(uart::IRQ, false);
        let mut job = Job::new(WAIT_EXTERNAL);
        if start(hart, &mut job).error == 0 && wait(|| job.state.load(Ordering::SeqCst) == WAITING)
        {
            // Only once the hart runs: firmware sets up a starting hart's contexts itself.
            plic::write(context_threshold(theirs), 0);
            plic::write(context_enable_addr(theirs, word), saved_theirs.0 | bit);
            // The UART in loopback with its receive interrupt on: source 10 asserted.
            uart::write(uart::FCR, uart::FCR_CLEAR);
            uart::write(uart::MCR, uart::MCR_LOOP);
            uart::write(uart::IER, uart::IER_RDI);
            uart::write(uart::THR, 0x5a);
            let _ = wait(|| job.state.load(Ordering::SeqCst) == READY);
            seen.1 = csr_read!("sip") & Interrupts::SEI.bits() != 0;
            seen.0 = uart::read(uart::RBR) as u32;
            seen.2 = job.value.load(Ordering::SeqCst);
            job.command.store(STOP, Ordering::SeqCst);
            seen.3 = finished(hart, &job).is_ok() as u64;
        }
        plic::write(context_enable_addr(theirs, word), saved_theirs.0);
        plic::write(context_threshold(theirs), saved_theirs.1);
    }
    check_eq!(seen.2, uart::IRQ as u64);
    check!(!seen.1, "sip.SEIP here, where the source is not enabled");
    check_eq!(seen.0, 0x5a);
    check_eq!(seen.3, 1);
    Ok(())
}
