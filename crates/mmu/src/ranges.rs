//! Physically contiguous blocks of any size: the host memory a guest's RAM and its shadow
//! table pool come from. First fit over a sorted list of free ranges; freeing merges with
//! the neighbours. Guests of any size fit, and several fit the way their sizes add up.

use alloc::vec::Vec;

/// Free host-physical ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeAllocator {
    /// Sorted, disjoint, never adjacent (adjacent ranges are merged).
    free: Vec<(u64, u64)>,
}

impl RangeAllocator {
    pub const fn new() -> Self {
        Self { free: Vec::new() }
    }

    /// Adds `[start, end)` to the free ranges (it must not overlap them).
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let at = self.free.partition_point(|&(s, _)| s < start);
        debug_assert!(at == 0 || self.free[at - 1].1 <= start, "overlapping free ranges");
        debug_assert!(at == self.free.len() || end <= self.free[at].0, "overlapping free ranges");
        self.free.insert(at, (start, end));
        // Merge with the next, then with the previous.
        if at + 1 < self.free.len() && self.free[at].1 == self.free[at + 1].0 {
            self.free[at].1 = self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].1 == self.free[at].0 {
            self.free[at - 1].1 = self.free[at].1;
            self.free.remove(at);
        }
    }

    /// `size` bytes aligned to `align` (a power of two), from the lowest range they fit
    /// in; `None` if none does.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        if size == 0 {
            return None;
        }
        let (i, start) = self.free.iter().enumerate().find_map(|(i, &(s, e))| {
            let start = s.checked_add(align - 1)? & !(align - 1);
            (start.checked_add(size)? <= e).then_some((i, start))
        })?;
        self.take(i, start, size);
        Some(start)
    }

    /// `size` bytes aligned to `align` (a power of two), as high as they fit: the top of the
    /// highest range they fit in. `None` if none does.
    pub fn alloc_top(&mut self, size: u64, align: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        if size == 0 {
            return None;
        }
        let (i, start) = self.free.iter().enumerate().rev().find_map(|(i, &(s, e))| {
            let start = e.checked_sub(size)? & !(align - 1);
            (start >= s).then_some((i, start))
        })?;
        self.take(i, start, size);
        Some(start)
    }

    /// Takes `[start, start + size)` out of free range `i`, which holds it; what is left
    /// on either side stays free.
    fn take(&mut self, i: usize, start: u64, size: u64) {
        let (s, e) = self.free.remove(i);
        let end = start + size;
        if end < e {
            self.free.insert(i, (end, e));
        }
        if s < start {
            self.free.insert(i, (s, start));
        }
    }

    /// Gives back `[start, start + size)`.
    pub fn free(&mut self, start: u64, size: u64) {
        self.add(start, start + size);
    }

    /// Bytes free in all.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }

    /// The largest block that could be had (at the smallest alignment).
    pub fn largest(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).max().unwrap_or(0)
    }

    /// The free ranges, lowest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn any_size_and_sizes_add_up() {
        let mut r = RangeAllocator::new();
        r.add(0x8000_0000, 0x8000_0000 + 1000 * MIB);
        // Three 300 MiB guests (not powers of two) fit in 1000 MiB.
        let a = r.alloc(300 * MIB, 2 * MIB).unwrap();
        let b = r.alloc(300 * MIB, 2 * MIB).unwrap();
        let c = r.alloc(300 * MIB, 2 * MIB).unwrap();
        assert_eq!((a, b, c), (0x8000_0000, 0x8000_0000 + 300 * MIB, 0x8000_0000 + 600 * MIB));
        assert_eq!(r.free_bytes(), 100 * MIB);
        assert_eq!(r.alloc(101 * MIB, 4096), None);
        r.free(b, 300 * MIB);
        assert_eq!(r.largest(), 300 * MIB);
        r.free(a, 300 * MIB);
        r.free(c, 300 * MIB);
        assert_eq!(r.ranges(), &[(0x8000_0000, 0x8000_0000 + 1000 * MIB)], "all merged back");
    }

    #[test]
    fn alignment_splits_the_range() {
        let mut r = RangeAllocator::new();
        r.add(0x1000, 0x80_0000);
        let a = r.alloc(0x1000, 0x1000).unwrap();
        assert_eq!(a, 0x1000);
        let b = r.alloc(2 * MIB, 2 * MIB).unwrap();
        assert_eq!(b, 0x20_0000);
        // The gap before the aligned block stays free and is used next.
        assert_eq!(r.alloc(0x1000, 0x1000), Some(0x2000));
        assert_eq!(r.ranges(), &[(0x3000, 0x20_0000), (0x40_0000, 0x80_0000)]);
        assert_eq!(r.alloc(0, 0x1000), None);
    }

    #[test]
    fn from_the_top() {
        let mut r = RangeAllocator::new();
        r.add(0x1000, 0x10_0000);
        r.add(0x20_0000, 0x30_0000);
        assert_eq!(r.alloc_top(0x1800, 0x1000), Some(0x2f_e000));
        assert_eq!(
            r.ranges(),
            &[(0x1000, 0x10_0000), (0x20_0000, 0x2f_e000), (0x2f_f800, 0x30_0000)]
        );
        // Too big for every range.
        assert_eq!(r.alloc_top(0x10_0000, 0x1000), None);
        // Too big for the highest range: the next one down.
        assert_eq!(r.alloc_top(0xf_0000, 0x1000), Some(0x20_e000));
        assert_eq!(r.alloc_top(0, 0x1000), None);
    }

    #[test]
    fn ranges_merge_in_any_order() {
        let mut r = RangeAllocator::new();
        r.add(0x3000, 0x4000);
        r.add(0x1000, 0x2000);
        r.add(0x2000, 0x3000);
        assert_eq!(r.ranges(), &[(0x1000, 0x4000)]);
        r.add(0x6000, 0x7000);
        assert_eq!(r.ranges(), &[(0x1000, 0x4000), (0x6000, 0x7000)]);
    }
}
