//! Which hart each vCPU runs on. While the harts suffice every vCPU gets a hart of its own
//! (pinned); when vCPUs outnumber harts they share them evenly. A guest's vCPUs are spread
//! over different harts first (an SMP guest runs in parallel wherever it can), then the
//! total load is balanced; a guest's hart affinity limits where its vCPUs may go.

use alloc::vec;
use alloc::vec::Vec;

/// What one guest asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    pub vcpus: usize,
    /// Bit `i`: hart index `i` may run its vCPUs; 0: any hart.
    pub affinity: u64,
}

/// Why vCPUs cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// Guest `guest`'s affinity names no hart that exists.
    NoHart { guest: usize },
}

/// The hart index of every vCPU: `placement[guest][vcpu]`, for `harts` harts.
pub fn place(guests: &[Demand], harts: usize) -> Result<Vec<Vec<usize>>, PlaceError> {
    let mut load = vec![0usize; harts];
    let mut out = Vec::with_capacity(guests.len());
    for (g, demand) in guests.iter().enumerate() {
        let allowed: Vec<usize> = (0..harts)
            .filter(|&h| demand.affinity == 0 || (h < 64 && demand.affinity & 1 << h != 0))
            .collect();
        if allowed.is_empty() && demand.vcpus > 0 {
            return Err(PlaceError::NoHart { guest: g });
        }
        let mut own = vec![0usize; harts];
        let mut placed = Vec::with_capacity(demand.vcpus);
        for _ in 0..demand.vcpus {
            let &h = allowed
                .iter()
                .min_by_key(|&&h| (own[h], load[h], h))
                .expect("allowed is not empty");
            own[h] += 1;
            load[h] += 1;
            placed.push(h);
        }
        out.push(placed);
    }
    Ok(out)
}

/// The vCPUs each hart runs, from a placement: `queues[hart]` lists `(guest, vcpu)`.
pub fn by_hart(placement: &[Vec<usize>], harts: usize) -> Vec<Vec<crate::VcpuId>> {
    let mut queues = vec![Vec::new(); harts];
    for (guest, vcpus) in placement.iter().enumerate() {
        for (vcpu, &h) in vcpus.iter().enumerate() {
            queues[h].push(crate::VcpuId { guest, vcpu });
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(vcpus: usize) -> Demand {
        Demand { vcpus, affinity: 0 }
    }

    #[test]
    fn one_per_hart_while_harts_suffice() {
        assert_eq!(place(&[d(1), d(1), d(1)], 3), Ok(vec![vec![0], vec![1], vec![2]]));
        assert_eq!(place(&[d(4)], 4), Ok(vec![vec![0, 1, 2, 3]]));
        assert_eq!(place(&[d(2), d(2)], 4), Ok(vec![vec![0, 1], vec![2, 3]]));
    }

    #[test]
    fn shared_evenly_when_overcommitted() {
        let p = place(&[d(2), d(1), d(2)], 2).unwrap();
        // Each guest's vCPUs on different harts; loads 3 and 2.
        assert_eq!(p, vec![vec![0, 1], vec![0], vec![1, 0]]);
        let q = by_hart(&p, 2);
        assert_eq!((q[0].len(), q[1].len()), (3, 2));
        // More vCPUs than harts in one guest: wrapped around.
        assert_eq!(place(&[d(5)], 2), Ok(vec![vec![0, 1, 0, 1, 0]]));
        // One hart: everyone shares it.
        assert_eq!(place(&[d(2), d(1)], 1), Ok(vec![vec![0, 0], vec![0]]));
    }

    #[test]
    fn affinity_is_respected() {
        let pinned = Demand { vcpus: 2, affinity: 0b100 };
        assert_eq!(place(&[pinned, d(2)], 3), Ok(vec![vec![2, 2], vec![0, 1]]));
        let nowhere = Demand { vcpus: 1, affinity: 0b1000 };
        assert_eq!(place(&[nowhere], 3), Err(PlaceError::NoHart { guest: 0 }));
    }
}
