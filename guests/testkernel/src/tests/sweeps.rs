//! Timing sweeps: each test arms the timer at every offset of a sweep (0, 1, 2, ... ticks
//! ahead) and runs code that makes the interrupt become pending at a different point each
//! time: in the middle of an SBI call, a CSR access, an `sret` into U-mode or a `wfi` —
//! under hypocaust, at every step of an exit. Wherever it lands, the interrupt must come
//! exactly once, never before its deadline, and exactly where a hart takes it.
//!
//! `sweep=N` in the boot arguments sweeps N offsets (default 32). xtask passes it for the
//! runs under `-icount` (docs/testing.md, "Timing sweeps"), where time is a function of
//! the instructions executed and each offset lands on the same instruction every run.

use core::arch::global_asm;
use core::sync::atomic::Ordering;

use rv::csr::Interrupts;
use rv::trap::Interrupt;

use super::interrupts::{
    set_sstatus_sie_then_nop, set_sstatus_sie_then_nop_after, wait_for_timer_in_user,
};
use crate::harness::{Outcome, Test, TestResult};
use crate::timer;
use crate::trap::{LAST_IRQ_SEPC, LAST_TIMER_AT, interrupt_count, timer_count_address};
use crate::{check, check_eq, skip, test};

pub const TESTS: &[Test] = &[
    test!("irq/sweep-user-loop", user_loop),
    test!("irq/sweep-sie-window", sie_window),
    test!("irq/sweep-sie-window-stimecmp", sie_window_stimecmp),
    test!("irq/sweep-pending-then-enable", pending_then_enable),
    test!("irq/sweep-wfi", wfi),
    test!("irq/sweep-sbi-calls", sbi_calls),
    test!("irq/sweep-sip-read", sip_read),
];

/// How many offsets a sweep takes when the boot arguments do not say.
const DEFAULT_OFFSETS: u64 = 32;

/// How long any wait in a sweep may take before the test fails.
const GIVE_UP_US: u64 = 2_000_000;

/// The offsets of the sweep, in ticks: `0..N`.
fn offsets() -> core::ops::Range<u64> {
    let n = crate::machine::get()
        .bootarg("sweep")
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_OFFSETS);
    0..n
}

/// Whether the run has a deterministic clock (`sweep=` given: under `-icount`).
fn deterministic() -> bool {
    crate::machine::get().bootarg("sweep").is_some()
}

/// Runs `f(deadline, before)` for every offset of the sweep, with the timer armed by
/// `arm` at `deadline` = now + offset, STIE set in `sie`, `sstatus.SIE` clear, and `before`
/// the timer interrupt count before arming; then checks that exactly one timer interrupt
/// came, not before the deadline. A failure names its offset.
fn sweep(arm: fn(u64), mut f: impl FnMut(u64, usize) -> TestResult) -> TestResult {
    for offset in offsets() {
        // SAFETY: only the timer interrupt is enabled; the handler counts and disarms it.
        unsafe {
            core::arch::asm!("csrci sstatus, 2", "csrw sie, {0}", in(reg) Interrupts::STI.bits())
        };
        let before = interrupt_count(Interrupt::SupervisorTimer);
        let deadline = timer::now() + offset;
        arm(deadline);
        let result = f(deadline, before).and_then(|()| {
            check_eq!(interrupt_count(Interrupt::SupervisorTimer), before + 1);
            let at = LAST_TIMER_AT.load(Ordering::SeqCst);
            check!(at >= deadline, "the interrupt came {} ticks early", deadline - at);
            Ok(())
        });
        // SAFETY: masks interrupts again; the next offset starts from scratch.
        unsafe { core::arch::asm!("csrci sstatus, 2", "csrw sie, zero") };
        timer::disarm();
        result.map_err(|e| match e {
            Outcome::Fail(m) => Outcome::Fail(alloc::format!("at offset {offset} ticks: {m}")),
            skip => skip,
        })?;
    }
    Ok(())
}

/// The `time` at which a wait that started now gives up.
fn give_up() -> u64 {
    timer::now() + timer::ticks_from_us(GIVE_UP_US)
}

global_asm!(
    r#"
    .section .text
    # Each routine: a0 = address of the timer interrupt counter, a1 = its value before
    # the timer was armed, a2 = the `time` at which to give up. Returns 0 once the counter
    # moved, 1 on giving up, 2 when the hart did something a hart must not.

    # Opens a window of one instruction boundary with sstatus.SIE set, then makes two
    # exits (sscratch reads) with it clear, over and over.
    .globl sweep_sie_window, sweep_sie_window_open
sweep_sie_window:
1:  csrsi   sstatus, 2
sweep_sie_window_open:
    csrci   sstatus, 2
    csrr    t0, sscratch
    csrr    t0, sscratch
    ld      t1, 0(a0)
    bne     t1, a1, 2f
    rdtime  t2
    bltu    t2, a2, 1b
    li      a0, 1
    ret
2:  li      a0, 0
    ret

    # Sets sstatus.SIE, makes SBI calls (get_spec_version, a3 = what it returns), clears
    # SIE again; 2 if a call returned anything else.
    .globl sweep_sbi_calls, sweep_sbi_calls_end
sweep_sbi_calls:
    csrsi   sstatus, 2
    mv      t3, a0
    mv      t4, a1
    mv      t5, a2
    mv      t6, a3
1:  li      a7, 0x10
    li      a6, 0
    li      a0, -1
    li      a1, -1
    ecall
    bnez    a0, 3f
    bne     a1, t6, 3f
    ld      t1, 0(t3)
    bne     t1, t4, 2f
    rdtime  t2
    bltu    t2, t5, 1b
    li      a0, 1
    j       4f
2:  li      a0, 0
    j       4f
3:  li      a0, 2
4:  csrci   sstatus, 2
sweep_sbi_calls_end:
    ret

    # Sets sstatus.SIE and reads sip twice in a row (the timer interrupt is enabled in
    # sie), clears SIE again; 2 if a read shows STIP: the hart takes a pending, enabled
    # interrupt before the next instruction.
    .globl sweep_sip_read
sweep_sip_read:
    csrsi   sstatus, 2
1:  csrr    t0, sip
    csrr    t3, sip
    or      t0, t0, t3
    andi    t0, t0, 0x20
    bnez    t0, 3f
    ld      t1, 0(a0)
    bne     t1, a1, 2f
    rdtime  t2
    bltu    t2, a2, 1b
    li      a0, 1
    j       4f
2:  li      a0, 0
    j       4f
3:  li      a0, 2
4:  csrci   sstatus, 2
    ret
"#
);

unsafe extern "C" {
    fn sweep_sie_window(counter: u64, before: usize, give_up: u64) -> u64;
    fn sweep_sie_window_open();
    fn sweep_sbi_calls(counter: u64, before: usize, give_up: u64, version: usize) -> u64;
    fn sweep_sbi_calls_end();
    fn sweep_sip_read(counter: u64, before: usize, give_up: u64) -> u64;
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as u64
}

/// Checks a routine's return value.
fn finished(ret: u64, what_went_wrong: &str) -> TestResult {
    check!(ret != 1, "no timer interrupt within {} s", GIVE_UP_US / 1_000_000);
    check!(ret != 2, "{what_went_wrong}");
    check_eq!(ret, 0);
    Ok(())
}

/// The timer fires while the kernel enters U-mode or while U-mode spins: it is taken
/// in U-mode (sstatus.SIE is clear in S-mode), in the loop.
fn user_loop() -> TestResult {
    sweep(timer::arm, |_, before| wait_for_timer_in_user(before))
}

/// The interrupt is taken at the only boundary where sstatus.SIE is set, right after the
/// `csrsi`, wherever in the loop of exits it became pending.
fn sie_window_with(arm: fn(u64)) -> TestResult {
    sweep(arm, |_, before| {
        // SAFETY: the routine only toggles sstatus.SIE and reads sscratch and memory.
        let ret = unsafe { sweep_sie_window(timer_count_address(), before, give_up()) };
        finished(ret, "")?;
        check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(sweep_sie_window_open));
        Ok(())
    })
}

fn sie_window() -> TestResult {
    sie_window_with(timer::arm)
}

fn write_stimecmp(deadline: u64) {
    // SAFETY: with Sstc, S-mode owns stimecmp; the trap handler disarms it again.
    unsafe { core::arch::asm!("csrw stimecmp, {0}", in(reg) deadline) }
}

fn sie_window_stimecmp() -> TestResult {
    if !crate::machine::get().has_extension("sstc") {
        skip!("not offered: Sstc (not in riscv,isa)");
    }
    sie_window_with(write_stimecmp)
}

/// Sets `sstatus.SIE` with the timer interrupt pending: the hart takes it before the next
/// instruction. That is checked where the clock is deterministic; without `-icount` QEMU
/// raises the interrupt from another thread, so natively it may come a few instructions
/// later (seen under load), and the check is only that it comes.
fn take_pending(before: usize) -> TestResult {
    // SAFETY: the interrupt this unmasks is counted and disarmed by the handler.
    unsafe { set_sstatus_sie_then_nop() };
    if deterministic() {
        check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), addr(set_sstatus_sie_then_nop_after));
    } else {
        let give_up = give_up();
        while interrupt_count(Interrupt::SupervisorTimer) == before && timer::now() < give_up {
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// STIP becomes pending while sstatus.SIE is clear (the kernel polls `sip`, an exit each
/// time under hypocaust); setting SIE takes it before the next instruction.
fn pending_then_enable() -> TestResult {
    sweep(timer::arm, |deadline, before| {
        let give_up = give_up();
        while csr_read!("sip") & Interrupts::STI.bits() == 0 {
            check!(timer::now() < give_up, "STIP never became pending");
        }
        check!(timer::now() >= deadline, "STIP pending before the deadline");
        check_eq!(interrupt_count(Interrupt::SupervisorTimer), before);
        take_pending(before)
    })
}

/// `wfi` with sstatus.SIE clear returns once STIP is pending, never before the deadline;
/// the interrupt stays pending until SIE is set.
fn wfi() -> TestResult {
    sweep(timer::arm, |deadline, before| {
        let give_up = give_up();
        while csr_read!("sip") & Interrupts::STI.bits() == 0 {
            check!(timer::now() < give_up, "wfi never saw STIP");
            crate::arch_wfi();
        }
        check!(timer::now() >= deadline, "STIP pending before the deadline");
        check_eq!(interrupt_count(Interrupt::SupervisorTimer), before);
        take_pending(before)
    })
}

/// The deadline passes during SBI calls made with interrupts enabled: the interrupt comes
/// between two instructions of the loop, and no call's result is disturbed.
fn sbi_calls() -> TestResult {
    let version = crate::ecall::sbi(0x10, 0, [0; 6]).value;
    sweep(timer::arm, |_, before| {
        // SAFETY: the routine enables the timer interrupt, counted and disarmed by the
        // handler, and makes SBI calls that only read.
        let ret = unsafe { sweep_sbi_calls(timer_count_address(), before, give_up(), version) };
        finished(ret, "an SBI call returned something other than its version")?;
        let sepc = LAST_IRQ_SEPC.load(Ordering::SeqCst);
        let code = sweep_sbi_calls as *const () as u64..addr(sweep_sbi_calls_end);
        check!(code.contains(&sepc), "taken at {sepc:#x}, outside the loop {code:#x?}");
        Ok(())
    })
}

/// With the timer interrupt enabled, no `csrr sip` ever shows STIP: the hart takes the
/// interrupt before the read. Only with a deterministic clock: QEMU raises a timer
/// interrupt from another thread and takes it at the end of a translation block, so
/// natively a read can see STIP just before the interrupt is taken.
fn sip_read() -> TestResult {
    if !deterministic() {
        skip!("needs a deterministic clock (the sweeps under -icount)");
    }
    sweep(timer::arm, |_, before| {
        // SAFETY: as in `sbi_calls`; the routine only reads sip and memory.
        let ret = unsafe { sweep_sip_read(timer_count_address(), before, give_up()) };
        finished(ret, "csrr sip showed STIP with the interrupt enabled")
    })
}
