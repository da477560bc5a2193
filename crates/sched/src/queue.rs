//! A hart's run queue: the vCPUs placed on it, taken in turn. A vCPU that wants the hart
//! while another runs gets it at the end of the other's time slice at the latest (the
//! hart's timer interrupts a guest even with its interrupts off), so no vCPU can keep the
//! hart from the others; with one runnable vCPU it keeps the hart as long as it wants.

use alloc::vec::Vec;

use crate::VcpuId;

/// The vCPUs of one hart.
#[derive(Clone, Debug)]
pub struct RunQueue {
    members: Vec<VcpuId>,
    /// Where the round robin goes on from.
    next: usize,
}

impl RunQueue {
    pub fn new(members: Vec<VcpuId>) -> Self {
        Self { members, next: 0 }
    }

    pub fn members(&self) -> &[VcpuId] {
        &self.members
    }

    /// The next vCPU to run, in turn, among those `runnable` accepts (the one that ran
    /// last comes last).
    pub fn pick(&mut self, runnable: impl Fn(VcpuId) -> bool) -> Option<VcpuId> {
        let n = self.members.len();
        for i in 0..n {
            let at = (self.next + i) % n;
            let v = self.members[at];
            if runnable(v) {
                self.next = (at + 1) % n;
                return Some(v);
            }
        }
        None
    }

    /// Whether a vCPU other than `current` wants the hart: `current` then runs for a
    /// slice only.
    pub fn contended(&self, current: VcpuId, runnable: impl Fn(VcpuId) -> bool) -> bool {
        self.members.iter().any(|&v| v != current && runnable(v))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::vec;

    fn id(guest: usize, vcpu: usize) -> VcpuId {
        VcpuId { guest, vcpu }
    }

    #[test]
    fn round_robin_over_the_runnable() {
        let mut q = RunQueue::new(vec![id(0, 0), id(1, 0), id(2, 0)]);
        let all = |_| true;
        let order: std::vec::Vec<VcpuId> = (0..6).map(|_| q.pick(all).unwrap()).collect();
        assert_eq!(order, [id(0, 0), id(1, 0), id(2, 0), id(0, 0), id(1, 0), id(2, 0)]);
        // Guest 1 blocked: the others alternate.
        let not_one = |v: VcpuId| v.guest != 1;
        assert_eq!(q.pick(not_one), Some(id(0, 0)));
        assert_eq!(q.pick(not_one), Some(id(2, 0)));
        assert_eq!(q.pick(not_one), Some(id(0, 0)));
        assert_eq!(q.pick(|_| false), None);
        assert!(q.contended(id(0, 0), all));
        assert!(!q.contended(id(0, 0), |v| v == id(0, 0)));
    }

    /// Two always-runnable vCPUs on one hart, each taking the slice it is given: each gets
    /// half of the picks, whatever the other does.
    #[test]
    fn sharing_is_fair() {
        let mut q = RunQueue::new(vec![id(0, 0), id(1, 0)]);
        let mut runs = [0; 2];
        for _ in 0..1000 {
            let v = q.pick(|_| true).unwrap();
            runs[v.guest] += 1;
        }
        assert_eq!(runs, [500, 500]);
    }
}
