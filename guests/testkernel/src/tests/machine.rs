//! What the machine gives a kernel at boot besides harts and RAM: entropy in the device
//! tree's `/chosen/rng-seed` (QEMU `virt` puts 32 bytes there, so Linux's random pool is
//! ready at once) and the Goldfish real-time clock at 0x10_1000, which counts nanoseconds
//! of the wall clock since 1970 (so a guest's clock does not start in 1970).

use crate::harness::{Test, TestResult};
use crate::{check, machine, test, timer};

pub const TESTS: &[Test] = &[
    test!("machine/rng-seed", rng_seed),
    test!("machine/rtc-in-device-tree", rtc_in_device_tree),
    test!("machine/rtc-wall-clock", rtc_wall_clock),
];

/// The Goldfish RTC of `virt`: reading `TIME_LOW` latches the high half for `TIME_HIGH`.
const RTC: u64 = 0x10_1000;
const TIME_LOW: u64 = 0x00;
const TIME_HIGH: u64 = 0x04;
/// 2025-01-01T00:00:00Z in nanoseconds: no machine this runs on is older.
const YEAR_2025_NS: u64 = 1_735_689_600 * 1_000_000_000;

/// `/chosen/rng-seed` holds at least 32 bytes, and not all the same: a seed, not filler.
fn rng_seed() -> TestResult {
    let seed = machine::get().rng_seed();
    if seed.is_none() {
        // QEMU's `virt` always gives one (the comparison with it catches a missing one).
        crate::skip!("no rng-seed in /chosen");
    }
    let seed = seed.unwrap_or_default();
    check!(seed.len() >= 32, "rng-seed has {} bytes, expected at least 32", seed.len());
    check!(seed.iter().any(|&b| b != seed[0]), "rng-seed is one byte repeated: {:#x}", seed[0]);
    Ok(())
}

/// The device tree names the RTC where it is, as QEMU's `virt` does.
fn rtc_in_device_tree() -> TestResult {
    machine::require_device("google,goldfish-rtc", RTC)?;
    let fdt = machine::get().fdt();
    let node = fdt.find_compatible(&["google,goldfish-rtc"]);
    check!(node.is_some(), "no google,goldfish-rtc node");
    let base = node.and_then(|n| n.reg()).and_then(|mut r| r.next()).map(|r| r.starting_address);
    check!(base == Some(RTC as *const u8), "the RTC's reg starts at {base:?}, expected {RTC:#x}");
    Ok(())
}

fn read_rtc() -> u64 {
    let reg = |offset: u64| {
        // SAFETY: the Goldfish RTC's 32-bit time registers, which S-mode may read natively
        // and under hypocaust; reading them changes nothing but the latch.
        unsafe { ((RTC + offset) as *const u32).read_volatile() as u64 }
    };
    let low = reg(TIME_LOW);
    reg(TIME_HIGH) << 32 | low
}

/// The RTC says a date after 2025 and moves forward with the `time` CSR: after 20 ms of
/// `time`, it has advanced, by no more than a minute.
fn rtc_wall_clock() -> TestResult {
    machine::require_device("google,goldfish-rtc", RTC)?;
    let before = read_rtc();
    check!(before >= YEAR_2025_NS, "the RTC says {before} ns since 1970: before 2025");
    let start = timer::now();
    while timer::now().wrapping_sub(start) < timer::ticks_from_us(20_000) {
        core::hint::spin_loop();
    }
    let after = read_rtc();
    check!(after > before, "the RTC went from {before} to {after} in 20 ms of time");
    check!(after - before < 60_000_000_000, "the RTC jumped by {} ns in 20 ms", after - before);
    Ok(())
}
