//! A vCPU's state, and the transitions between states that the scheduler, the vCPU's own
//! exits and other harts make. Each transition is a compare-and-swap from the state it
//! expects: one that finds another state fails and reports it, so two harts never both
//! act on one event (two wake-ups, or a wake-up racing a stop).

use core::sync::atomic::{AtomicU8, Ordering};

/// Where a vCPU is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Made with its guest, never run.
    Created = 0,
    /// Wants its hart.
    Runnable = 1,
    /// On its hart now.
    Running = 2,
    /// In `wfi` with no interrupt pending and enabled: off its hart until one is.
    Blocked = 3,
    /// Stopped (SBI HSM `hart_stop`, or never started): waits for `hart_start`.
    Stopped = 4,
    /// In SBI HSM `hart_suspend`: off its hart until an interrupt is pending and enabled.
    Suspended = 5,
    /// Its guest is off (powered off, or being reset).
    Off = 6,
}

impl VcpuState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Created,
            1 => Self::Runnable,
            2 => Self::Running,
            3 => Self::Blocked,
            4 => Self::Stopped,
            5 => Self::Suspended,
            _ => Self::Off,
        }
    }

    /// Whether the state machine allows `self` → `to`.
    pub fn may_become(self, to: VcpuState) -> bool {
        use VcpuState::*;
        matches!(
            (self, to),
            (Created, Runnable | Stopped)
                | (Runnable, Running)
                | (Running, Runnable | Blocked | Stopped | Suspended)
                | (Blocked | Suspended | Stopped, Runnable)
                | (_, Off)
                | (Off, Created)
        )
    }

    /// Whether a vCPU in this state is waiting for an interrupt to wake it.
    pub fn waits_for_interrupt(self) -> bool {
        matches!(self, Self::Blocked | Self::Suspended)
    }
}

/// A transition the state machine does not allow, or one whose starting state was not
/// there (another hart changed it first): the state found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub found: VcpuState,
}

/// A vCPU's state, shared between harts.
#[derive(Debug)]
pub struct SharedState(AtomicU8);

impl Default for SharedState {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedState {
    pub const fn new() -> Self {
        Self(AtomicU8::new(VcpuState::Created as u8))
    }

    pub fn get(&self) -> VcpuState {
        VcpuState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// `from` → `to`, if the vCPU is in `from` and the machine allows it.
    pub fn transition(&self, from: VcpuState, to: VcpuState) -> Result<(), Refused> {
        if !from.may_become(to) {
            return Err(Refused { found: self.get() });
        }
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|v| Refused { found: VcpuState::from_u8(v) })
    }

    /// Wakes a vCPU that waits for an interrupt (blocked or suspended): whether this call
    /// woke it (false if it was not waiting, or another hart woke it first).
    pub fn wake(&self) -> bool {
        [VcpuState::Blocked, VcpuState::Suspended]
            .into_iter()
            .any(|from| self.transition(from, VcpuState::Runnable).is_ok())
    }

    /// The guest goes off: from whatever state.
    pub fn power_off(&self) {
        self.0.store(VcpuState::Off as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use VcpuState::*;

    const ALL: [VcpuState; 7] = [Created, Runnable, Running, Blocked, Stopped, Suspended, Off];

    #[test]
    fn the_allowed_transitions() {
        let allowed: std::vec::Vec<(VcpuState, VcpuState)> = ALL
            .iter()
            .flat_map(|&a| ALL.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a.may_become(*b) && b != &Off)
            .collect();
        assert_eq!(
            allowed,
            [
                (Created, Runnable),
                (Created, Stopped),
                (Runnable, Running),
                (Running, Runnable),
                (Running, Blocked),
                (Running, Stopped),
                (Running, Suspended),
                (Blocked, Runnable),
                (Stopped, Runnable),
                (Suspended, Runnable),
                (Off, Created),
            ]
        );
        assert!(ALL.iter().all(|s| s.may_become(Off)));
    }

    #[test]
    fn transitions_are_checked() {
        let s = SharedState::new();
        assert_eq!(s.get(), Created);
        assert_eq!(s.transition(Created, Running), Err(Refused { found: Created }), "not allowed");
        assert_eq!(s.transition(Runnable, Running), Err(Refused { found: Created }), "not there");
        s.transition(Created, Runnable).unwrap();
        s.transition(Runnable, Running).unwrap();
        s.transition(Running, Blocked).unwrap();
        assert!(s.wake());
        assert!(!s.wake(), "woken once");
        assert_eq!(s.get(), Runnable);
        s.power_off();
        assert_eq!(s.get(), Off);
        s.transition(Off, Created).unwrap();
    }

    /// Many harts waking one blocked vCPU: exactly one wake-up wins, every time.
    #[test]
    fn one_wake_up_wins() {
        for _ in 0..500 {
            let s = std::sync::Arc::new(SharedState::new());
            s.transition(Created, Runnable).unwrap();
            s.transition(Runnable, Running).unwrap();
            s.transition(Running, Blocked).unwrap();
            let wakers: std::vec::Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || s.wake())
                })
                .collect();
            let woke = wakers
                .into_iter()
                .filter(|_| true)
                .map(|t| t.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(woke, 1);
            assert_eq!(s.get(), Runnable);
        }
    }
}
