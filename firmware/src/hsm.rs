//! SBI HSM: the state of each hart, and starting one hart from another.
//!
//! A hart that is not running S-mode software waits in the firmware (stopped). Another
//! hart asks it to start by leaving an address and an argument in its [`Slot`] and waking
//! it; the stopped hart takes the request and enters S-mode there.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sbi_spec::hsm::hart_state::{START_PENDING, STARTED, STOPPED, SUSPENDED};

/// Claimed by a starter that is still writing the start address (reads as START_PENDING).
const CLAIMED: usize = usize::MAX;

/// One hart's HSM state.
#[derive(Debug)]
pub struct Slot {
    present: AtomicBool,
    state: AtomicUsize,
    addr: AtomicUsize,
    opaque: AtomicUsize,
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a hart could not be asked to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No such hart (SBI INVALID_PARAM).
    NoSuchHart,
    /// It is not stopped (SBI ALREADY_AVAILABLE).
    NotStopped,
}

impl Slot {
    /// A hart that does not exist (yet): [`Slot::set_present`] makes it a stopped one.
    pub const fn new() -> Self {
        Self {
            present: AtomicBool::new(false),
            state: AtomicUsize::new(STOPPED),
            addr: AtomicUsize::new(0),
            opaque: AtomicUsize::new(0),
        }
    }

    /// The hart exists (it is in the device tree and has a slot).
    pub fn set_present(&self) {
        self.present.store(true, Ordering::Release);
    }

    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// The SBI HSM state (`hart_get_status`).
    pub fn status(&self) -> usize {
        match self.state.load(Ordering::Acquire) {
            CLAIMED => START_PENDING,
            s => s,
        }
    }

    /// The boot hart: running the payload from the start.
    pub fn boot(&self) {
        self.state.store(STARTED, Ordering::Release);
    }

    /// Asks the hart to start at `addr` with `opaque` in a1; the caller then wakes it.
    pub fn request_start(&self, addr: usize, opaque: usize) -> Result<(), StartError> {
        if !self.is_present() {
            return Err(StartError::NoSuchHart);
        }
        self.state
            .compare_exchange(STOPPED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| StartError::NotStopped)?;
        self.addr.store(addr, Ordering::Relaxed);
        self.opaque.store(opaque, Ordering::Relaxed);
        self.state.store(START_PENDING, Ordering::Release);
        Ok(())
    }

    /// On the hart itself, while stopped: the start request, if there is one; the hart is
    /// started from then on.
    pub fn take_start(&self) -> Option<(usize, usize)> {
        if self.state.load(Ordering::Acquire) != START_PENDING {
            return None;
        }
        let request = (self.addr.load(Ordering::Relaxed), self.opaque.load(Ordering::Relaxed));
        self.state.store(STARTED, Ordering::Release);
        Some(request)
    }

    /// On the hart itself: it stops (`hart_stop`). `false` if it was not started.
    pub fn stop(&self) -> bool {
        self.state.compare_exchange(STARTED, STOPPED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// On the hart itself: it suspends, or resumes (`hart_suspend`).
    pub fn set_suspended(&self, suspended: bool) {
        self.state.store(if suspended { SUSPENDED } else { STARTED }, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn start_stop_cycle() {
        let slot = Slot::new();
        assert_eq!(slot.request_start(0x8020_0000, 7), Err(StartError::NoSuchHart));
        slot.set_present();
        assert_eq!(slot.status(), STOPPED);
        assert_eq!(slot.take_start(), None);
        slot.request_start(0x8020_0000, 7).unwrap();
        assert_eq!(slot.status(), START_PENDING);
        assert_eq!(slot.request_start(0x9000_0000, 1), Err(StartError::NotStopped));
        assert_eq!(slot.take_start(), Some((0x8020_0000, 7)));
        assert_eq!(slot.status(), STARTED);
        assert_eq!(slot.request_start(0x9000_0000, 1), Err(StartError::NotStopped));
        slot.set_suspended(true);
        assert_eq!(slot.status(), SUSPENDED);
        slot.set_suspended(false);
        assert!(slot.stop());
        assert!(!slot.stop(), "already stopped");
        assert_eq!(slot.status(), STOPPED);
        slot.request_start(0x8030_0000, 2).unwrap();
        assert_eq!(slot.take_start(), Some((0x8030_0000, 2)));
    }

    #[test]
    fn one_of_many_starters_wins_and_the_hart_sees_its_request() {
        for _ in 0..200 {
            let slot = std::sync::Arc::new(Slot::new());
            slot.set_present();
            let starters: std::vec::Vec<_> = (1..=4)
                .map(|i| {
                    let slot = slot.clone();
                    std::thread::spawn(move || {
                        slot.request_start(i * 0x1000, i).is_ok().then_some(i)
                    })
                })
                .collect();
            let winners: std::vec::Vec<usize> =
                starters.into_iter().filter_map(|t| t.join().unwrap()).collect();
            assert_eq!(winners.len(), 1);
            let w = winners[0];
            assert_eq!(slot.take_start(), Some((w * 0x1000, w)));
        }
    }
}
