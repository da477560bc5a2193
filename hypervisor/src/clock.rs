//! Wall-clock time: the host's real-time clock read once at boot, carried on by the `time`
//! CSR. Each guest's RTC runs from it ([`HostClock`]).

use core::sync::atomic::{AtomicU64, Ordering};

use platform::Platform;

use crate::arch;
use crate::layout::phys_to_virt;

/// Nanoseconds since the Unix epoch at `time` = [`BOOT_TICKS`] (0: no host RTC).
static BOOT_NS: AtomicU64 = AtomicU64::new(0);
static BOOT_TICKS: AtomicU64 = AtomicU64::new(0);
static TIMEBASE_HZ: AtomicU64 = AtomicU64::new(1);

/// Reads the host's Goldfish RTC, if the platform has one; returns the seconds since the
/// epoch it showed (0 without one: guests' clocks then start at the epoch).
pub fn init(platform: &Platform) -> u64 {
    TIMEBASE_HZ.store(platform.timebase_hz.max(1), Ordering::Relaxed);
    BOOT_TICKS.store(arch::time(), Ordering::Relaxed);
    let Some(rtc) = &platform.rtc else { return 0 };
    let regs = phys_to_virt(rtc.region.start).raw() as *const u32;
    // SAFETY: the RTC's registers are in the direct map (mm maps the device); reading
    // TIME_LOW latches TIME_HIGH, which is read next.
    let ns = unsafe {
        let low = regs.read_volatile() as u64;
        let high = regs.add(1).read_volatile() as u64;
        high << 32 | low
    };
    BOOT_NS.store(ns, Ordering::Relaxed);
    ns / 1_000_000_000
}

/// Nanoseconds since the epoch now.
pub fn now_ns() -> u64 {
    let ticks = arch::time().wrapping_sub(BOOT_TICKS.load(Ordering::Relaxed));
    let hz = TIMEBASE_HZ.load(Ordering::Relaxed) as u128;
    let since = (ticks as u128 * 1_000_000_000 / hz) as u64;
    BOOT_NS.load(Ordering::Relaxed).wrapping_add(since)
}

/// The clock guests' RTCs run from.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock;

impl devices::rtc::Clock for HostClock {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
}

/// The `time` value at which the wall clock reads `ns` (for an RTC alarm), if not passed.
pub fn ticks_at(ns: u64) -> u64 {
    let now = now_ns();
    let hz = TIMEBASE_HZ.load(Ordering::Relaxed) as u128;
    let ahead = ns.saturating_sub(now) as u128 * hz / 1_000_000_000;
    arch::time().saturating_add(ahead as u64)
}
