//! Work one hart asks of another: an S-mode software interrupt (SBI IPI) or a fence (SBI
//! RFENCE), delivered by a machine software interrupt. The asker of a fence waits until the
//! target has done it; while it waits it does its own mailbox's work, so two harts fencing
//! each other never wait for each other forever.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Set `sip.SSIP`.
pub const SSIP: u32 = 1 << 0;
/// `fence.i`.
pub const FENCE_I: u32 = 1 << 1;
/// `sfence.vma` of everything (a remote fence of a range or an ASID is widened to all:
/// the SBI lets an implementation fence more than asked).
pub const SFENCE_VMA: u32 = 1 << 2;

/// One hart's mailbox.
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: AtomicU32,
    /// Requests posted so far (a ticket is the count after posting).
    posted: AtomicU64,
    /// All requests up to this ticket are done.
    done: AtomicU64,
}

impl Mailbox {
    pub const fn new() -> Self {
        Self { pending: AtomicU32::new(0), posted: AtomicU64::new(0), done: AtomicU64::new(0) }
    }

    /// Posts `work` (bits above); returns the ticket to wait for with [`Mailbox::is_done`].
    /// The caller then raises the owner's machine software interrupt.
    pub fn post(&self, work: u32) -> u64 {
        self.pending.fetch_or(work, Ordering::AcqRel);
        self.posted.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The owner takes the work posted so far: do it, then [`Mailbox::complete`] the
    /// ticket. Work posted after this is left for the next take (its interrupt will come).
    pub fn take(&self) -> (u32, u64) {
        let ticket = self.posted.load(Ordering::Acquire);
        (self.pending.swap(0, Ordering::AcqRel), ticket)
    }

    /// The owner has done the work of every ticket up to `ticket`.
    pub fn complete(&self, ticket: u64) {
        self.done.fetch_max(ticket, Ordering::AcqRel);
    }

    /// Whether the work of `ticket` is done.
    pub fn is_done(&self, ticket: u64) -> bool {
        self.done.load(Ordering::Acquire) >= ticket
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    #[test]
    fn work_is_done_before_its_ticket_is() {
        let m = Mailbox::new();
        let t1 = m.post(FENCE_I);
        let t2 = m.post(SSIP);
        assert!(!m.is_done(t1));
        let (work, ticket) = m.take();
        assert_eq!(work, FENCE_I | SSIP);
        assert_eq!(m.take().0, 0, "taken once");
        m.complete(ticket);
        assert!(m.is_done(t1) && m.is_done(t2));
    }

    /// Posters wait for fences while an owner serves them: no poster ever sees its ticket
    /// done before the owner did a fence that started after the post.
    #[test]
    fn no_fence_is_lost_between_threads() {
        let m = Arc::new(Mailbox::new());
        let fences = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let owner = {
            let (m, fences, stop) = (m.clone(), fences.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let (work, ticket) = m.take();
                    if work & SFENCE_VMA != 0 {
                        fences.fetch_add(1, Ordering::AcqRel);
                    }
                    m.complete(ticket);
                }
            })
        };
        let posters: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let (m, fences) = (m.clone(), fences.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let before = fences.load(Ordering::Acquire);
                        let ticket = m.post(SFENCE_VMA);
                        while !m.is_done(ticket) {
                            std::hint::spin_loop();
                        }
                        assert!(fences.load(Ordering::Acquire) > before, "a fence after the post");
                    }
                })
            })
            .collect();
        for p in posters {
            p.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        owner.join().unwrap();
    }
}
