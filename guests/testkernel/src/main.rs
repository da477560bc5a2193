//! The guest test suite: an S-mode kernel that checks the CPU it runs on.
//!
//! It boots like Linux (Image header, a0 = hartid, a1 = device tree), runs its tests and
//! prints TAP, then powers off through SBI SRST. Natively (directly on OpenSBI) QEMU's CPU
//! is the oracle; under hypocaust the same binary must give the same results.
//!
//! Boot arguments (`/chosen/bootargs`): `filter=TEXT` runs only tests whose name contains
//! TEXT; `action=reboot` or `action=hart-stop` asks SBI for that first (for the tests of
//! what hypocaust does when a guest reboots or stops its last hart); `action=echo` reads one
//! line from the UART, prints it and powers off (console input tests); `action=spin` spins
//! forever with interrupts off (a wedged guest, for the tests of hypocaust's scheduler);
//! `action=bench` runs the trap microbenchmarks of `cargo xtask bench` instead of the tests,
//! `action=share` its compute loop for the fair-share rows (bench.rs).

#![no_std]
#![no_main]

extern crate alloc;

mod codebuf;
#[macro_use]
mod console;
mod bench;
mod ecall;
mod harness;
mod machine;
mod plic;
mod tests;
mod timer;
mod trap;
mod uart16550;
mod virtio;
mod vm;

use buddy_system_allocator::LockedHeap;
use core::arch::global_asm;

global_asm!(
    include_str!("entry.S"),
    kernel_main = sym kernel_main,
    STACK_SIZE = const 64 * 1024,
);

#[global_allocator]
static HEAP: LockedHeap<24> = LockedHeap::empty();

const HEAP_SIZE: usize = 512 * 1024;
#[repr(align(4096))]
struct HeapSpace(#[allow(dead_code)] [u8; HEAP_SIZE]);
static mut HEAP_SPACE: HeapSpace = HeapSpace([0; HEAP_SIZE]);

/// Powers off; `failure` reports a system failure as the reason.
pub fn shutdown(failure: bool) -> ! {
    let _ = if failure {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::SystemFailure)
    } else {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::NoReason)
    };
    #[allow(deprecated)]
    sbi_rt::legacy::shutdown()
}

extern "C" fn kernel_main(hartid: usize, dtb: usize) -> ! {
    // SAFETY: called once, before any allocation; the static is only used as heap.
    unsafe { HEAP.lock().init((&raw mut HEAP_SPACE) as usize, HEAP_SIZE) };
    console::init();
    let machine = machine::init(hartid, dtb);
    println!("TAP version 13");
    println!(
        "# hypocaust testkernel: hart {hartid} of {}, isa {}, timebase {} Hz",
        machine.harts, machine.isa, machine.timebase_hz
    );
    // The seed's first bytes, so that tests can see each boot and each guest got its own.
    let seed = machine.rng_seed().unwrap_or_default();
    let hex: alloc::string::String =
        seed.iter().take(16).map(|b| alloc::format!("{b:02x}")).collect();
    println!("# rng-seed: {} bytes, {hex}", seed.len());
    match machine.bootarg("action") {
        Some("reboot") => {
            println!("# action: cold reboot");
            let _ = sbi_rt::system_reset(sbi_rt::ColdReboot, sbi_rt::NoReason);
        }
        Some("hart-stop") => {
            println!("# action: stopping the only hart");
            let _ = sbi_rt::hart_stop();
        }
        Some("echo") => echo_line(),
        Some("spin") => {
            println!("# action: spinning with interrupts off");
            // SAFETY: clears sstatus.SIE: nothing is taken from here on.
            unsafe { core::arch::asm!("csrci sstatus, 2") };
            loop {
                core::hint::spin_loop();
            }
        }
        Some("bench") => bench::run(machine.timebase_hz),
        Some("share") => bench::share(machine.timebase_hz),
        Some(other) => println!("# unknown action {other}"),
        None => {}
    }
    let filter = machine.bootarg("filter");

    let summary = harness::run(tests::ALL, filter);
    println!("# {} passed, {} failed, {} skipped", summary.passed, summary.failed, summary.skipped);
    shutdown(summary.failed > 0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("Bail out! testkernel panic: {info}");
    shutdown(true)
}

/// How long `action=echo` waits for its line.
const ECHO_WAIT_US: u64 = 120_000_000;

/// `action=echo`: reads one line from the UART (polled), says what it got, powers off;
/// gives up (a failure) if the line does not come within two minutes.
fn echo_line() -> ! {
    use uart16550::{LSR, LSR_DR, RBR, read};
    println!("# echo: ready");
    let give_up = timer::now() + timer::ticks_from_us(ECHO_WAIT_US);
    let mut line = alloc::string::String::new();
    loop {
        while read(LSR) & LSR_DR == 0 {
            if timer::now() > give_up {
                println!("# echo: no line within {} s; got '{line}'", ECHO_WAIT_US / 1_000_000);
                shutdown(true);
            }
            core::hint::spin_loop();
        }
        match read(RBR) {
            b'\r' | b'\n' => break,
            b => line.push(b as char),
        }
    }
    println!("# echo: got '{line}'");
    shutdown(false)
}

/// Waits for an interrupt (or nothing: `wfi` may return at any time, so callers loop
/// with a bound).
pub fn arch_wfi() {
    // SAFETY: `wfi` has no memory effects.
    unsafe { core::arch::asm!("wfi") };
}
