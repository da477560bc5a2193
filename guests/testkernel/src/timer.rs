//! The supervisor timer, through SBI TIME (or the legacy call).

use core::sync::atomic::{AtomicU64, Ordering};

/// `time` ticks per second, from the device tree.
pub static TIMEBASE_HZ: AtomicU64 = AtomicU64::new(10_000_000);

/// Current `time`.
pub fn now() -> u64 {
    riscv::register::time::read64()
}

/// Ticks in `us` microseconds.
pub fn ticks_from_us(us: u64) -> u64 {
    TIMEBASE_HZ.load(Ordering::Relaxed) * us / 1_000_000
}

/// Asks for a timer interrupt at `deadline`.
pub fn arm(deadline: u64) {
    let _ = sbi_rt::set_timer(deadline);
}

/// Cancels the timer (deadline at the end of time clears STIP).
pub fn disarm() {
    let _ = sbi_rt::set_timer(u64::MAX);
}
