//! smpcheck: SMP checks and benchmarks for the Linux guest (docs/guests.md).
//!
//! A static riscv64 Linux program without libc: raw system calls, threads made with
//! `clone`, futexes to wait. It is built for the bare-metal target
//! `riscv64imac-unknown-none-elf` with its own linker script and goes into the guest's
//! initramfs as `/bin/smpcheck`. Each subcommand prints one result line
//! `smpcheck NAME key=value ...` and exits 0, or prints `smpcheck: FAIL ...` and exits 1
//! on any wrong result (2: bad usage):
//!
//! * `cpus` — the CPUs this process may run on (`sched_getaffinity`);
//! * `burn THREADS WORK` — THREADS threads, each pinned to its own CPU, each doing WORK
//!   million steps of an integer hash; checks every thread ran on its CPU throughout, that
//!   all ran at the same time and that all hashes agree (xtask checks the hash itself);
//! * `shootdown THREADS ITERS` — TLB shootdowns: a writer replaces a page at a fixed address
//!   ITERS times while THREADS-1 readers on the other CPUs check each generation, then
//!   THREADS threads each map, fill, check and unmap memory ITERS times;
//! * `pingpong ITERS` — two threads on two CPUs waking each other through a futex: every
//!   wake-up is a cross-CPU interrupt.
//!
//! Options before the subcommand: `--timeout SECONDS` (default 120) bounds every wait;
//! `--bench NAME` also prints the `bench-start NAME`, `bench-end NAME` and
//! `bench: NAME iterations=N ns=T` lines of `cargo xtask bench` around the measured region;
//! `--inject-stale` makes `shootdown` simulate a stale translation (the writer publishes a
//! generation without replacing the page), which it must report: a check of the check.

#![no_std]
#![no_main]

#[macro_use]
mod sys;
mod checks;

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

global_asm!(
    // Linux enters with sp at argc, followed by argv[], NULL, envp[], NULL, auxv.
    ".pushsection .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    mv a0, sp",
    "    andi sp, sp, -16",
    "    call {main}",
    "1:  j 1b",
    ".popsection",
    main = sym start,
);

/// Every wait gives up at this time (CLOCK_MONOTONIC ns).
static DEADLINE_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// The time every wait gives up.
pub fn deadline() -> u64 {
    DEADLINE_NS.load(Ordering::Relaxed)
}

/// Fails if the deadline has passed, naming what was being waited for.
pub fn check_deadline(what: &str) {
    if sys::now_ns() > deadline() {
        sys::fail(format_args!("timed out waiting for {what}"));
    }
}

/// The most command-line arguments looked at.
const MAX_ARGS: usize = 16;

/// The bytes of the NUL-terminated string at `p`.
///
/// # Safety
///
/// `p` must point to a NUL-terminated string that lives for the whole run.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated (the caller vouches), so every byte up to the
    // NUL is readable.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

fn usage() -> ! {
    say!(
        "usage: smpcheck [--timeout SECONDS] [--bench NAME] [--inject-stale] cpus | \
         burn THREADS WORK | shootdown THREADS ITERS | pingpong ITERS"
    );
    sys::exit_group(2)
}

fn number(arg: Option<&[u8]>) -> u64 {
    let Some(arg) = arg else { usage() };
    if arg.is_empty() || arg.len() > 18 || !arg.iter().all(u8::is_ascii_digit) {
        usage();
    }
    arg.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'))
}

/// The text of an argument (for messages; arguments are ASCII here).
pub fn text(arg: &[u8]) -> &str {
    core::str::from_utf8(arg).unwrap_or("?")
}

extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: Linux puts argc at sp, then argc pointers to NUL-terminated strings.
    let argc = unsafe { *sp };
    let mut args: [&[u8]; MAX_ARGS] = [&[]; MAX_ARGS];
    let n = argc.min(MAX_ARGS);
    for (i, arg) in args.iter_mut().enumerate().take(n) {
        // SAFETY: argv[i] for i < argc is a valid string that lives as long as the process.
        *arg = unsafe { c_str(*sp.add(1 + i) as *const u8) };
    }
    let mut rest = args[1.min(n)..n].iter().copied();
    let mut timeout_s = 120;
    let mut bench: Option<&[u8]> = None;
    let mut inject_stale = false;
    let command = loop {
        match rest.next() {
            Some(b"--timeout") => timeout_s = number(rest.next()),
            Some(b"--bench") => bench = Some(rest.next().unwrap_or_else(|| usage())),
            Some(b"--inject-stale") => inject_stale = true,
            Some(command) => break command,
            None => usage(),
        }
    };
    DEADLINE_NS.store(sys::now_ns().saturating_add(timeout_s * 1_000_000_000), Ordering::Relaxed);
    let bench = bench.map(text);
    match command {
        b"cpus" => checks::cpus(),
        b"burn" => {
            let threads = number(rest.next());
            checks::burn(threads as usize, number(rest.next()), bench)
        }
        b"shootdown" => {
            let threads = number(rest.next());
            checks::shootdown(threads as usize, number(rest.next()), inject_stale, bench)
        }
        b"pingpong" => checks::pingpong(number(rest.next()), bench),
        _ => usage(),
    }
    sys::exit_group(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    sys::fail(format_args!("panic: {info}"))
}
