//! The hart's real supervisor timer: through `stimecmp` when firmware lets S-mode write it
//! (Sstc), else through SBI `set_timer`. hypocaust sets it to the earliest deadline of the
//! vCPUs the hart runs, or disarms it.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch;

/// Whether `stimecmp` is writable (decided once, at boot).
static USE_STIMECMP: AtomicBool = AtomicBool::new(false);

/// Decides how to program the timer: probes `stimecmp` (a write of "never" is harmless).
pub fn init() -> &'static str {
    let sstc = arch::trap::write_stimecmp_checked(u64::MAX);
    USE_STIMECMP.store(sstc, Ordering::Relaxed);
    if sstc { "Sstc stimecmp" } else { "SBI set_timer" }
}

/// Asks for a supervisor timer interrupt at `deadline` (`u64::MAX`: none). Also clears a
/// pending timer interrupt whose deadline is moved into the future.
pub fn arm(deadline: u64) {
    if USE_STIMECMP.load(Ordering::Relaxed) {
        // Probed writable at boot.
        arch::csr::set_stimecmp(deadline);
    } else {
        let _ = sbi_rt::set_timer(deadline);
    }
}
