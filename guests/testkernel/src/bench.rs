//! `action=bench`: the trap microbenchmarks of `cargo xtask bench` (docs/performance.md).
//!
//! Each benchmark runs `n` operations between two reads of `time` and prints
//!
//! ```text
//! bench: NAME n=N time=T
//! ```
//!
//! with T in timebase ticks. Natively every operation is a plain instruction (or a trap to
//! the firmware); under hypocaust each one traps to the hypervisor. Under QEMU's
//! `-icount shift=0` one instruction is one nanosecond of virtual time, so T converts to
//! instructions executed by the whole machine. `calibrate` runs two instructions per
//! operation and checks that conversion.

use core::arch::{asm, global_asm};

use rv::csr::SatpMode;
use rv::pte::PteFlags;

use crate::{timer, trap, vm};

global_asm!(
    r#"
    .section .text
    /*
     * stvec while U-mode code runs `ecall` loops: an ecall from U-mode (cause 8) returns
     * to the next instruction; anything else goes to the kernel's own vector (which ends
     * the U-mode run). Clobbers t6, which the U-mode loop does not use.
     */
    .p2align 2
    .globl bench_vector
bench_vector:
    csrr    t6, scause
    addi    t6, t6, -8
    bnez    t6, 2f
    csrr    t6, sepc
    addi    t6, t6, 4
    csrw    sepc, t6
    sret
2:  j       trap_entry

    /* U-mode: a0 ecalls, then ebreak. */
    .p2align 2
    .globl bench_user_ecalls
bench_user_ecalls:
2:  ecall
    addi    a0, a0, -1
    bnez    a0, 2b
    ebreak
"#
);

unsafe extern "C" {
    fn bench_vector();
    fn bench_user_ecalls(n: u64) -> !;
}

/// Operations per benchmark.
const CALIBRATE: u64 = 10_000_000;
const CSR_READS: u64 = 100_000;
const SRETS: u64 = 50_000;
const SBI_CALLS: u64 = 50_000;
const USER_ECALLS: u64 = 20_000;
/// Pages touched per round of the shadow fill benchmark, and rounds.
const FILL_PAGES: u64 = 256;
const FILL_ROUNDS: u64 = 100;
/// Where the shadow fill benchmark maps its pages (Sv39, below the kernel's gigabyte).
const FILL_BASE: u64 = 0x20_0000_0000;

fn report(name: &str, n: u64, start: u64) {
    let time = timer::now().wrapping_sub(start);
    println!("bench: {name} n={n} time={time}");
}

/// Runs every benchmark and powers off.
pub fn run(timebase_hz: u64) -> ! {
    println!("# bench: timebase {timebase_hz} Hz");
    calibrate();
    csr_read();
    csr_burst();
    sret();
    sbi_call();
    user_ecall();
    shadow_fill();
    println!("# bench: done");
    crate::shutdown(false)
}

/// Two instructions per operation: `addi`, `bnez`.
fn calibrate() {
    let start = timer::now();
    // SAFETY: a register-only loop.
    unsafe { asm!("2: addi {0}, {0}, -1", "bnez {0}, 2b", inout(reg) CALIBRATE => _) };
    report("calibrate", CALIBRATE, start);
}

/// Runs `CSR_READS` reads of `sscratch` in loop iterations of 8 `csrr`s, each followed by
/// the instructions `$after` (none, or a `nop`), and reports them as `$name`.
macro_rules! csr_read_loop {
    ($name:literal $(, $after:literal)?) => {{
        let start = timer::now();
        // SAFETY: reading sscratch has no side effects.
        unsafe {
            asm!(
                "2:",
                ".rept 8",
                "csrr t0, sscratch",
                $($after,)?
                ".endr",
                "addi {0}, {0}, -1",
                "bnez {0}, 2b",
                inout(reg) CSR_READS / 8 => _,
                out("t0") _,
            )
        };
        report($name, CSR_READS, start);
    }};
}

/// `csrr sscratch`, each followed by a `nop`: a plain read natively, one exit each under
/// hypocaust (the `nop` keeps hypocaust from emulating the next read in the same exit).
fn csr_read() {
    csr_read_loop!("csr-read", "nop");
}

/// Eight `csrr sscratch` in a row: under hypocaust one exit emulates all eight (as Linux's
/// trap entry reads five CSRs in a row).
fn csr_burst() {
    csr_read_loop!("csr-burst");
}

/// `sret` from S-mode back to S-mode (with the `csrs sstatus` that sets SPP before each,
/// as the instruction clears it).
fn sret() {
    let saved: u64;
    // SAFETY: reading sstatus.
    unsafe { asm!("csrr {0}, sstatus", out(reg) saved) };
    let start = timer::now();
    // SAFETY: sepc points at the loop head, so each sret resumes the loop in S-mode (SPP
    // set just before it); interrupts stay masked in sie. sstatus is restored below.
    unsafe {
        asm!(
            "la t0, 2f",
            "csrw sepc, t0",
            "li t1, 0x100",
            "2: addi {0}, {0}, -1",
            "beqz {0}, 3f",
            "csrs sstatus, t1",
            "sret",
            "3:",
            inout(reg) SRETS + 1 => _,
            out("t0") _,
            out("t1") _,
        )
    };
    report("sret", SRETS, start);
    // SAFETY: puts sstatus back as it was.
    unsafe { asm!("csrw sstatus, {0}", in(reg) saved) };
}

/// `sbi_get_spec_version` (BASE, function 0): a trap to the firmware natively, to
/// hypocaust's SBI under hypocaust.
fn sbi_call() {
    let start = timer::now();
    // SAFETY: an SBI call without side effects; the SBI preserves all registers but a0, a1.
    unsafe {
        asm!(
            "2: ecall",
            "addi {0}, {0}, -1",
            "bnez {0}, 2b",
            inout(reg) SBI_CALLS => _,
            in("a7") 0x10,
            in("a6") 0,
            out("a0") _,
            out("a1") _,
        )
    };
    report("sbi-call", SBI_CALLS, start);
}

/// `ecall` from U-mode to this kernel's trap vector and `sret` back: natively the hart's
/// own trap; under hypocaust an exit, forwarded to the guest's vector, whose CSR accesses
/// and `sret` exit too.
fn user_ecall() {
    let saved: u64;
    // SAFETY: the bench vector handles U-mode ecalls and hands everything else to the
    // kernel's vector; stvec is restored below.
    unsafe {
        asm!("csrrw {0}, stvec, {1}", out(reg) saved, in(reg) bench_vector as *const () as u64)
    };
    let start = timer::now();
    let end = trap::run_user(bench_user_ecalls, USER_ECALLS);
    report("ecall-u", USER_ECALLS, start);
    // SAFETY: the kernel's vector again.
    unsafe { asm!("csrw stvec, {0}", in(reg) saved) };
    if end.scause != 3 {
        println!("# bench: the U-mode loop ended with scause {:#x}, not ebreak", end.scause);
    }
}

/// Reads of fresh pages after `sfence.vma`: natively a page walk by the hart, under
/// hypocaust a shadow page fault and fill each.
fn shadow_fill() {
    let space = vm::Space::new(SatpMode::Sv39);
    let page = vm::alloc_page();
    for i in 0..FILL_PAGES {
        space.map(FILL_BASE + i * 4096, page, 0, PteFlags::R | PteFlags::A);
    }
    if !space.activate(1) {
        println!("# bench: Sv39 refused; no shadow-fill");
        return;
    }
    let start = timer::now();
    for _ in 0..FILL_ROUNDS {
        vm::sfence(None, None);
        for i in 0..FILL_PAGES {
            // SAFETY: the page is mapped readable just above.
            unsafe { core::ptr::read_volatile((FILL_BASE + i * 4096) as *const u64) };
        }
    }
    report("shadow-fill", FILL_ROUNDS * FILL_PAGES, start);
    vm::deactivate();
}

/// `action=share`: counts compute steps for one second of `time` (in chunks, reading
/// `time` between them), prints `bench: share n=STEPS time=T` and powers off. Alone on a
/// hart it measures the hart; two guests doing it on one hart under hypocaust each get
/// their share of it (`cargo xtask bench`'s `share/` rows).
pub fn share(timebase_hz: u64) -> ! {
    const CHUNK: u64 = 1000;
    let start = timer::now();
    let (mut steps, mut x) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
    while timer::now().wrapping_sub(start) < timebase_hz {
        for _ in 0..CHUNK {
            // xorshift64: a dependent chain the compiler cannot fold.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        steps += CHUNK;
    }
    report("share", steps, start);
    println!("# bench: share {x:#x}");
    crate::shutdown(false)
}
