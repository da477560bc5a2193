//! What one hart asks of a vCPU another hart runs: a supervisor software interrupt (SBI
//! IPI between vCPUs) and TLB fences (SBI RFENCE: a shadow-table invalidation). The vCPU's
//! hart takes them before the vCPU runs guest code again; the asker of a fence waits for
//! it only while the vCPU is on a hart (see the hypervisor's run loop), and a fence
//! completes every fence posted before it.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

/// A TLB fence a vCPU must do: `sfence.vma` of `[start, start + size)` (`size` u64::MAX:
/// everything), of `asid` only if given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    pub start: u64,
    pub size: u64,
    pub asid: Option<u16>,
}

impl Flush {
    /// Everything.
    pub const ALL: Flush = Flush { start: 0, size: u64::MAX, asid: None };
}

/// Fences kept one by one; more than this many become one fence of everything.
pub const MAX_FLUSHES: usize = 8;

/// The fences waiting for a vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushes {
    items: [Option<Flush>; MAX_FLUSHES],
    len: usize,
    all: bool,
    /// `fence.i` too.
    pub instructions: bool,
}

impl Flushes {
    fn push(&mut self, f: Flush) {
        if f == Flush::ALL || self.len == MAX_FLUSHES {
            self.all = true;
        } else if !self.all {
            self.items[self.len] = Some(f);
            self.len += 1;
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        !self.all && self.len == 0 && !self.instructions
    }

    /// The fences to do: one of everything, or each one.
    pub fn iter(&self) -> impl Iterator<Item = Flush> + '_ {
        let one = self.all.then_some(Flush::ALL);
        let each = (!self.all).then(|| self.items[..self.len].iter().flatten().copied());
        one.into_iter().chain(each.into_iter().flatten())
    }
}

/// A vCPU's mailbox.
#[derive(Debug, Default)]
pub struct Mailbox {
    ipi: AtomicBool,
    flushes: Mutex<Flushes>,
    /// Set while flushes wait: a cheap look for the vCPU's hart.
    flush_waiting: AtomicBool,
    posted: AtomicU64,
    done: AtomicU64,
}

impl Mailbox {
    pub const fn new() -> Self {
        Self {
            ipi: AtomicBool::new(false),
            flushes: Mutex::new(Flushes {
                items: [None; MAX_FLUSHES],
                len: 0,
                all: false,
                instructions: false,
            }),
            flush_waiting: AtomicBool::new(false),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// Asks for a supervisor software interrupt.
    pub fn post_ipi(&self) {
        self.ipi.store(true, Ordering::Release);
    }

    /// The vCPU's hart: whether an IPI was asked for (and forgets it).
    pub fn take_ipi(&self) -> bool {
        self.ipi.swap(false, Ordering::AcqRel)
    }

    /// Asks for `flush` (and `fence.i` if `instructions`); the ticket to wait for.
    pub fn post_flush(&self, flush: Option<Flush>, instructions: bool) -> u64 {
        let mut f = self.flushes.lock();
        if let Some(flush) = flush {
            f.push(flush);
        }
        f.instructions |= instructions;
        self.flush_waiting.store(true, Ordering::Release);
        // The ticket counts under the lock: a take sees every flush of the tickets up to
        // the one it completes.
        self.posted.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether anything waits (cheap; the hart looks on every entry).
    pub fn has_work(&self) -> bool {
        self.ipi.load(Ordering::Acquire) || self.flush_waiting.load(Ordering::Acquire)
    }

    /// The vCPU's hart takes the fences posted so far; it completes the ticket once it
    /// has done them.
    pub fn take_flushes(&self) -> (Flushes, u64) {
        let mut f = self.flushes.lock();
        let ticket = self.posted.load(Ordering::Acquire);
        self.flush_waiting.store(false, Ordering::Release);
        (core::mem::take(&mut *f), ticket)
    }

    /// Every fence up to `ticket` is done.
    pub fn complete(&self, ticket: u64) {
        self.done.fetch_max(ticket, Ordering::AcqRel);
    }

    pub fn is_done(&self, ticket: u64) -> bool {
        self.done.load(Ordering::Acquire) >= ticket
    }

    /// Forgets everything (the guest restarts).
    pub fn clear(&self) {
        let (_, ticket) = self.take_flushes();
        self.complete(ticket);
        self.ipi.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn range(start: u64) -> Flush {
        Flush { start, size: 4096, asid: Some(3) }
    }

    #[test]
    fn flushes_accumulate_then_widen() {
        let m = Mailbox::new();
        assert!(!m.has_work());
        let t1 = m.post_flush(Some(range(0x1000)), false);
        let t2 = m.post_flush(Some(range(0x2000)), true);
        assert!(m.has_work());
        let (f, ticket) = m.take_flushes();
        assert_eq!(f.iter().collect::<std::vec::Vec<_>>(), [range(0x1000), range(0x2000)]);
        assert!(f.instructions);
        assert!(!m.is_done(t1));
        m.complete(ticket);
        assert!(m.is_done(t1) && m.is_done(t2));
        for i in 0..=MAX_FLUSHES as u64 {
            m.post_flush(Some(range(i << 12)), false);
        }
        let (f, _) = m.take_flushes();
        assert_eq!(f.iter().collect::<std::vec::Vec<_>>(), [Flush::ALL], "too many: everything");
        assert!(m.take_flushes().0.is_empty());
    }

    #[test]
    fn ipis_are_taken_once() {
        let m = Mailbox::new();
        m.post_ipi();
        m.post_ipi();
        assert!(m.has_work());
        assert!(m.take_ipi());
        assert!(!m.take_ipi());
    }

    /// Posters wait for their fences while an owner serves: every poster finds its own
    /// fence done after the owner took it.
    #[test]
    fn no_fence_is_lost_between_threads() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let m = Arc::new(Mailbox::new());
        let seen = Arc::new(spin::Mutex::new(std::collections::BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let owner = {
            let (m, seen, stop) = (m.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let (f, ticket) = m.take_flushes();
                    let mut s = seen.lock();
                    for flush in f.iter() {
                        s.insert(flush.start);
                    }
                    drop(s);
                    m.complete(ticket);
                }
            })
        };
        let posters: std::vec::Vec<_> = (0..3u64)
            .map(|p| {
                let (m, seen) = (m.clone(), seen.clone());
                std::thread::spawn(move || {
                    for i in 0..300u64 {
                        let start = (p * 1000 + i) << 12;
                        let t = m.post_flush(Some(Flush { start, size: 4096, asid: None }), false);
                        while !m.is_done(t) {
                            std::hint::spin_loop();
                        }
                        let s = seen.lock();
                        // Done: it was flushed, or widened into a flush of everything.
                        assert!(s.contains(&start) || s.contains(&0), "fence {start:#x} lost");
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
