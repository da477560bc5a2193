//! Interrupts: the supervisor timer through SBI.

use core::sync::atomic::Ordering;

use rv::csr::{Interrupts, Sstatus};
use rv::trap::Interrupt;

use crate::harness::{Test, TestResult};
use crate::timer;
use crate::trap::{LAST_TIMER_AT, interrupt_count};
use crate::{check, skip, test};

pub const TESTS: &[Test] = &[
    test!("irq/timer-sbi", timer_sbi),
    test!("irq/timer-stimecmp", timer_stimecmp),
];

/// Enables the supervisor interrupts in `mask` and global SIE.
fn enable(mask: Interrupts) {
    // SAFETY: the trap handler counts and acknowledges these interrupts.
    unsafe {
        core::arch::asm!("csrs sie, {0}", in(reg) mask.bits());
        core::arch::asm!("csrs sstatus, {0}", in(reg) Sstatus::SIE.bits());
    }
}

/// Arms the timer 2 ms ahead with `arm`, waits for the interrupt, and checks it came once
/// and not before the deadline.
fn expect_timer_interrupt(arm: fn(u64)) -> TestResult {
    let before = interrupt_count(Interrupt::SupervisorTimer);
    let deadline = timer::now() + timer::ticks_from_us(2_000);
    arm(deadline);
    enable(Interrupts::STI);
    let give_up = deadline + timer::ticks_from_us(2_000_000);
    while interrupt_count(Interrupt::SupervisorTimer) == before && timer::now() < give_up {
        crate::arch_wfi();
    }
    check!(
        interrupt_count(Interrupt::SupervisorTimer) == before + 1,
        "no timer interrupt within 2 s"
    );
    let at = LAST_TIMER_AT.load(Ordering::SeqCst);
    check!(
        at >= deadline,
        "the interrupt came {} ticks early",
        deadline - at
    );
    Ok(())
}

fn timer_sbi() -> TestResult {
    expect_timer_interrupt(timer::arm)
}

fn timer_stimecmp() -> TestResult {
    if !crate::machine::get().has_extension("sstc") {
        skip!("not offered: Sstc (not in riscv,isa)");
    }
    expect_timer_interrupt(|deadline| {
        // SAFETY: with Sstc, S-mode owns stimecmp; the trap handler disarms it again.
        unsafe { core::arch::asm!("csrw stimecmp, {0}", in(reg) deadline) }
    })
}
