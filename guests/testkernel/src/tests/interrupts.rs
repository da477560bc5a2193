//! Interrupts: the supervisor timer (SBI and Sstc), software interrupts, enables,
//! priority, exactly when a pending interrupt is taken, vectored mode, and `wfi`.

use core::arch::global_asm;
use core::sync::atomic::Ordering;

use rv::csr::{Interrupts, Sstatus};
use rv::trap::Interrupt;

use crate::ecall::sbi;
use crate::harness::{Test, TestResult};
use crate::timer;
use crate::trap::{
    LAST_IRQ_SEPC, LAST_IRQ_SSTATUS, LAST_TIMER_AT, clear_irq_log, interrupt_count, irq_log,
    run_user, take_vector_hit, timer_count_address, vectored_stvec,
};
use crate::{check, check_eq, skip, test};

pub const TESTS: &[Test] = &[
    test!("irq/timer-sbi", timer_sbi),
    test!("irq/timer-stimecmp", timer_stimecmp),
    test!("irq/timer-accuracy", timer_accuracy),
    test!("irq/timer-in-the-past-fires-at-once", timer_in_the_past),
    test!("irq/set-timer-clears-stip", set_timer_clears_stip),
    test!("irq/ssip-taken-after-the-write", ssip_taken_after_the_write),
    test!("irq/ssip-masked-by-sie", ssip_masked_by_sie),
    test!("irq/ssip-masked-by-sstatus-sie", ssip_masked_by_sstatus_sie),
    test!("irq/sret-unmasks-pending", sret_unmasks_pending),
    test!("irq/unmask-takes-pending-at-once", unmask_takes_pending_at_once),
    test!("irq/sbi-ipi-to-self", sbi_ipi_to_self),
    test!("irq/legacy-ipi-and-clear", legacy_ipi_and_clear),
    test!("irq/priority-ssi-before-sti", priority_ssi_before_sti),
    test!("irq/user-mode-ignores-sstatus-sie", user_mode_ignores_sstatus_sie),
    test!("irq/vectored-timer", vectored_timer),
    test!("irq/vectored-software", vectored_software),
    test!("irq/wfi-wakes-with-sie-clear", wfi_wakes_with_sie_clear),
];

/// Enables the supervisor interrupts in `mask` and global SIE.
fn enable(mask: Interrupts) {
    enable_in_sie(mask);
    // SAFETY: the trap handler counts and acknowledges these interrupts.
    unsafe { core::arch::asm!("csrs sstatus, {0}", in(reg) Sstatus::SIE.bits()) };
}

/// Enables interrupts in `sie` only.
fn enable_in_sie(mask: Interrupts) {
    // SAFETY: the trap handler counts and acknowledges these interrupts.
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) mask.bits()) };
}

/// Waits (`wfi`) until `irq` has been taken `n` times since the count was `before`, or
/// 2 s pass (`false`); leaves `sstatus.SIE` set, as the callers had it. The count is looked
/// at with SIE clear and SIE is set only after the `wfi`: with SIE set while looking, an
/// interrupt taken between the look and the `wfi` (a hart may take one before any
/// instruction) would leave the `wfi` waiting for another that never comes. `wfi` returns
/// with SIE clear once an interrupt is pending and enabled in `sie`; setting SIE takes it.
fn wait_for(irq: Interrupt, before: usize, n: usize) -> bool {
    let give_up = timer::now() + timer::ticks_from_us(2_000_000);
    loop {
        // SAFETY: masks interrupts for the look; they stay pending.
        unsafe { core::arch::asm!("csrc sstatus, {0}", in(reg) Sstatus::SIE.bits()) };
        if interrupt_count(irq) >= before + n || timer::now() >= give_up {
            break;
        }
        crate::arch_wfi();
        // SAFETY: takes the interrupt that ended the `wfi`; the handler counts it.
        unsafe { core::arch::asm!("csrs sstatus, {0}", in(reg) Sstatus::SIE.bits()) };
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("csrs sstatus, {0}", in(reg) Sstatus::SIE.bits()) };
    interrupt_count(irq) >= before + n
}

/// Arms the timer `us` ahead with `arm`, waits for the interrupt, and checks it came once,
/// not before the deadline and not absurdly late. Returns how late it was, in ticks.
fn expect_timer_interrupt(arm: fn(u64), us: u64) -> Result<u64, crate::harness::Outcome> {
    let before = interrupt_count(Interrupt::SupervisorTimer);
    let deadline = timer::now() + timer::ticks_from_us(us);
    arm(deadline);
    enable(Interrupts::STI);
    check!(wait_for(Interrupt::SupervisorTimer, before, 1), "no timer interrupt within 2 s");
    check_eq!(interrupt_count(Interrupt::SupervisorTimer), before + 1);
    let at = LAST_TIMER_AT.load(Ordering::SeqCst);
    check!(at >= deadline, "the interrupt came {} ticks early", deadline - at);
    Ok(at - deadline)
}

fn timer_sbi() -> TestResult {
    expect_timer_interrupt(timer::arm, 2_000).map(|_| ())
}

fn write_stimecmp(deadline: u64) {
    // SAFETY: with Sstc, S-mode owns stimecmp; the trap handler disarms it again.
    unsafe { core::arch::asm!("csrw stimecmp, {0}", in(reg) deadline) }
}

fn timer_stimecmp() -> TestResult {
    if !crate::machine::get().has_extension("sstc") {
        skip!("not offered: Sstc (not in riscv,isa)");
    }
    expect_timer_interrupt(write_stimecmp, 2_000).map(|_| ())
}

fn timer_accuracy() -> TestResult {
    // Never early; late by less than 100 ms even under emulation (this is a correctness
    // bound, not a performance measurement).
    for us in [500, 3_000, 10_000] {
        let late = expect_timer_interrupt(timer::arm, us)?;
        check!(late < timer::ticks_from_us(100_000), "{us} us timer came {late} ticks late");
    }
    Ok(())
}

fn timer_in_the_past() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorTimer);
    enable(Interrupts::STI);
    let resume: u64;
    // SAFETY: a deadline in the past makes STIP pending at once; the handler disarms it.
    unsafe {
        core::arch::asm!(
            "la {resume}, 1f",
            "mv a0, zero",          // set_timer(0)
            "li a6, 0",
            "li a7, 0x54494D45",
            "ecall",
            "1: nop",
            resume = out(reg) resume,
            out("a0") _, out("a1") _, out("a6") _, out("a7") _,
        )
    };
    check_eq!(interrupt_count(Interrupt::SupervisorTimer), before + 1);
    // Taken on the return from the SBI call, before the next instruction.
    check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), resume);
    Ok(())
}

fn set_timer_clears_stip() -> TestResult {
    timer::arm(0);
    let pending = csr_read!("sip") & Interrupts::STI.bits();
    timer::arm(u64::MAX);
    let after = csr_read!("sip") & Interrupts::STI.bits();
    check_eq!(pending, Interrupts::STI.bits());
    check_eq!(after, 0);
    // STIP is not writable by S-mode.
    csr_write!("sip", Interrupts::STI.bits());
    check_eq!(csr_read!("sip") & Interrupts::STI.bits(), 0);
    Ok(())
}

global_asm!(
    r#"
    .section .text
    .globl set_ssip_then_nop, set_ssip_then_nop_after
set_ssip_then_nop:
    csrsi   sip, 2
set_ssip_then_nop_after:
    nop
    ret

    .globl set_sie_then_nop, set_sie_then_nop_after
set_sie_then_nop:
    csrs    sie, a0
set_sie_then_nop_after:
    nop
    ret

    .globl set_sstatus_sie_then_nop, set_sstatus_sie_then_nop_after
set_sstatus_sie_then_nop:
    csrsi   sstatus, 2
set_sstatus_sie_then_nop_after:
    nop
    ret

    .globl sret_to_landing, sret_landing
sret_to_landing:
    la      t0, sret_landing
    csrw    sepc, t0
    li      t0, 0x120           # SPP = S, SPIE = 1
    csrs    sstatus, t0
    sret
sret_landing:
    nop
    ret

    .globl user_ecall_at_once
user_ecall_at_once:
    ecall

    .globl user_wait_for_timer, user_wait_for_timer_end
user_wait_for_timer:
    # a0 = &UserWait: spins until the counter differs from the count taken before the
    # timer was armed, then ecall; ebreak if `time` reaches the give-up time first.
    ld      t0, 0(a0)
    ld      t3, 8(a0)
    ld      t4, 16(a0)
1:  ld      t1, 0(t0)
    bne     t1, t3, 2f
    rdtime  t2
    bltu    t2, t4, 1b
    ebreak
2:  ecall
user_wait_for_timer_end:
    j       2b
"#
);

unsafe extern "C" {
    fn set_ssip_then_nop();
    fn set_ssip_then_nop_after();
    fn set_sie_then_nop(mask: u64);
    fn set_sie_then_nop_after();
    pub(super) fn set_sstatus_sie_then_nop();
    pub(super) fn set_sstatus_sie_then_nop_after();
    fn sret_to_landing();
    fn sret_landing();
    fn user_ecall_at_once(arg: u64) -> !;
    fn user_wait_for_timer(args: u64) -> !;
    fn user_wait_for_timer_end();
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as u64
}

fn ssip_taken_after_the_write() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorSoft);
    enable(Interrupts::SSI);
    // SAFETY: the software interrupt this raises is counted and cleared by the handler.
    unsafe { set_ssip_then_nop() };
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before + 1);
    check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(set_ssip_then_nop_after));
    check!(LAST_IRQ_SSTATUS.load(Ordering::SeqCst) & Sstatus::SPP.bits() != 0, "taken from S");
    check_eq!(csr_read!("sip") & 2, 0);
    Ok(())
}

fn ssip_masked_by_sie() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorSoft);
    enable(Interrupts::empty());
    csr_write!("sip", 2);
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before);
    check_eq!(csr_read!("sip") & 2, 2);
    // Enabling it in sie takes it right after that write.
    // SAFETY: the interrupt is counted and cleared by the handler.
    unsafe { set_sie_then_nop(Interrupts::SSI.bits()) };
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before + 1);
    check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(set_sie_then_nop_after));
    Ok(())
}

fn ssip_masked_by_sstatus_sie() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorSoft);
    enable_in_sie(Interrupts::SSI);
    csr_write!("sip", 2);
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before);
    // SAFETY: the interrupt is counted and cleared by the handler.
    unsafe { set_sstatus_sie_then_nop() };
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before + 1);
    check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(set_sstatus_sie_then_nop_after));
    Ok(())
}

fn sret_unmasks_pending() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorSoft);
    enable_in_sie(Interrupts::SSI);
    csr_write!("sip", 2);
    // SAFETY: sret goes to S-mode at the landing label with SIE = SPIE = 1: the pending
    // interrupt is taken there and counted by the handler.
    unsafe { sret_to_landing() };
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before + 1);
    check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(sret_landing));
    Ok(())
}

/// Every way of unmasking a pending interrupt — `sstatus.SIE` set, its `sie` bit set with
/// SIE on, `sret` to S-mode with SPIE, `sret` to U-mode — with each source pending that a
/// test can raise alone (software, timer): the hart takes it before the next instruction.
/// (Under hypocaust these are the trap vector's fast path, docs/trap-path.md.)
fn unmask_takes_pending_at_once() -> TestResult {
    for (source, irq) in [
        (Interrupts::SSI, Interrupt::SupervisorSoft),
        (Interrupts::STI, Interrupt::SupervisorTimer),
    ] {
        let raise = || {
            if source == Interrupts::SSI {
                csr_write!("sip", 2);
            } else {
                timer::arm(0);
            }
        };
        for way in ["sstatus.SIE", "sie", "sret to S", "sret to U"] {
            let before = interrupt_count(irq);
            let expected = match way {
                "sstatus.SIE" => {
                    enable_in_sie(source);
                    raise();
                    // SAFETY: the interrupt is counted and acknowledged by the handler.
                    unsafe { set_sstatus_sie_then_nop() };
                    addr(set_sstatus_sie_then_nop_after)
                }
                "sie" => {
                    raise();
                    // SAFETY: as above; SIE on, the source's sie bit still clear.
                    unsafe { core::arch::asm!("csrsi sstatus, 2") };
                    check_eq!((way, interrupt_count(irq)), (way, before));
                    // SAFETY: as above.
                    unsafe { set_sie_then_nop(source.bits()) };
                    addr(set_sie_then_nop_after)
                }
                "sret to S" => {
                    enable_in_sie(source);
                    raise();
                    // SAFETY: as in sret_unmasks_pending.
                    unsafe { sret_to_landing() };
                    addr(sret_landing)
                }
                _ => {
                    enable_in_sie(source);
                    raise();
                    // The interrupt comes at the first U-mode instruction, an ecall.
                    let trap = run_user(user_ecall_at_once, 0);
                    check_eq!((way, trap.scause), (way, 8));
                    let spp = LAST_IRQ_SSTATUS.load(Ordering::SeqCst) & Sstatus::SPP.bits();
                    check_eq!((way, spp), (way, 0));
                    user_ecall_at_once as *const () as u64
                }
            };
            // SAFETY: masks what the test enabled.
            unsafe { core::arch::asm!("csrci sstatus, 2", "csrc sie, {0}", in(reg) source.bits()) };
            check_eq!((way, interrupt_count(irq)), (way, before + 1));
            check_eq!((way, LAST_IRQ_SEPC.load(Ordering::SeqCst)), (way, expected));
        }
    }
    Ok(())
}

fn sbi_ipi_to_self() -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorSoft);
    let hart = crate::machine::get().hartid as u64;
    let ret = sbi(sbi_spec::spi::EID_SPI, sbi_spec::spi::SEND_IPI, [1, hart as usize, 0, 0, 0, 0]);
    check_eq!(ret.error, 0);
    check_eq!(csr_read!("sip") & 2, 2);
    enable(Interrupts::SSI);
    check_eq!(interrupt_count(Interrupt::SupervisorSoft), before + 1);
    Ok(())
}

fn legacy_ipi_and_clear() -> TestResult {
    let mask: u64 = 1 << crate::machine::get().hartid;
    let ret = sbi(4, 0, [&mask as *const u64 as usize, 0, 0, 0, 0, 0]);
    check_eq!(ret.error, 0);
    check_eq!(csr_read!("sip") & 2, 2);
    let ret = sbi(3, 0, [0; 6]);
    check_eq!(ret.error, 0);
    check_eq!(csr_read!("sip") & 2, 0);
    Ok(())
}

fn priority_ssi_before_sti() -> TestResult {
    enable_in_sie(Interrupts::SSI | Interrupts::STI);
    timer::arm(0);
    csr_write!("sip", 2);
    check_eq!(csr_read!("sip") & 0x22, 0x22);
    clear_irq_log();
    // SAFETY: both interrupts are counted and acknowledged by the handler.
    unsafe { core::arch::asm!("csrsi sstatus, 2", "nop", "nop") };
    let (log, n) = irq_log();
    check_eq!(n, 2);
    check_eq!((log[0], log[1]), (1, 5));
    Ok(())
}

fn user_mode_ignores_sstatus_sie() -> TestResult {
    // In U-mode, enabled supervisor interrupts are taken whatever sstatus.SIE says.
    let before = interrupt_count(Interrupt::SupervisorTimer);
    enable_in_sie(Interrupts::STI);
    timer::arm(timer::now() + timer::ticks_from_us(1_000));
    wait_for_timer_in_user(before)?;
    check!(LAST_IRQ_SSTATUS.load(Ordering::SeqCst) & Sstatus::SPP.bits() == 0, "taken from U");
    Ok(())
}

/// What `user_wait_for_timer` reads: the timer interrupt counter's address, its value
/// before the timer was armed, and the `time` at which to give up.
#[repr(C)]
struct UserWait {
    counter: u64,
    before: u64,
    give_up: u64,
}

/// Runs `user_wait_for_timer` in U-mode until the timer interrupt counter moves past
/// `before` (the count taken before the timer was armed, so an interrupt taken at the very
/// entry to U-mode counts too), at most 2 s. Checks that exactly one interrupt came, in
/// the U-mode loop. U-mode reads `time` (scounteren.TM) to give up.
pub(super) fn wait_for_timer_in_user(before: usize) -> TestResult {
    let args = UserWait {
        counter: timer_count_address(),
        before: before as u64,
        give_up: timer::now() + timer::ticks_from_us(2_000_000),
    };
    let counteren = csr_read!("scounteren");
    csr_write!("scounteren", counteren | 2);
    let trap = run_user(user_wait_for_timer, &args as *const UserWait as u64);
    csr_write!("scounteren", counteren);
    check!(trap.scause != 3, "no timer interrupt in U-mode within 2 s");
    check_eq!(trap.scause, 8);
    check_eq!(interrupt_count(Interrupt::SupervisorTimer), before + 1);
    let sepc = LAST_IRQ_SEPC.load(Ordering::SeqCst);
    let code = user_wait_for_timer as *const () as u64..addr(user_wait_for_timer_end);
    check!(code.contains(&sepc), "taken at {sepc:#x}, outside the U-mode loop {code:#x?}");
    Ok(())
}

fn vectored_timer() -> TestResult {
    csr_write!("stvec", vectored_stvec());
    take_vector_hit();
    let before = interrupt_count(Interrupt::SupervisorTimer);
    timer::arm(timer::now() + timer::ticks_from_us(500));
    enable(Interrupts::STI);
    check!(wait_for(Interrupt::SupervisorTimer, before, 1), "no timer interrupt within 2 s");
    check_eq!(take_vector_hit(), 5);
    Ok(())
}

fn vectored_software() -> TestResult {
    csr_write!("stvec", vectored_stvec());
    take_vector_hit();
    enable(Interrupts::SSI);
    csr_write!("sip", 2);
    check_eq!(take_vector_hit(), 1);
    Ok(())
}

fn wfi_wakes_with_sie_clear() -> TestResult {
    // wfi returns once an interrupt is pending and enabled in sie, even with SIE clear;
    // the interrupt itself stays pending.
    let before = interrupt_count(Interrupt::SupervisorTimer);
    enable_in_sie(Interrupts::STI);
    let deadline = timer::now() + timer::ticks_from_us(2_000);
    timer::arm(deadline);
    let give_up = deadline + timer::ticks_from_us(2_000_000);
    while csr_read!("sip") & Interrupts::STI.bits() == 0 && timer::now() < give_up {
        crate::arch_wfi();
    }
    check!(timer::now() >= deadline, "woke before the deadline with nothing pending");
    check_eq!(csr_read!("sip") & Interrupts::STI.bits(), Interrupts::STI.bits());
    check_eq!(interrupt_count(Interrupt::SupervisorTimer), before);
    Ok(())
}
