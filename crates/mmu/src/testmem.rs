//! In-memory stand-ins for guest physical memory and table frames, for host tests.

extern crate std;

use core::cell::{Cell, RefCell};
use std::collections::HashMap;

use rv::{GuestPhysAddr, HostPhysAddr};

use crate::map::Frames;
use crate::walk::GuestMemory;
use rv::pte::Pte;

/// Sparse 64-bit-word memory: unwritten words read as zero.
#[derive(Default)]
pub struct SparseMemory {
    words: RefCell<HashMap<u64, u64>>,
    limit: Cell<Option<u64>>,
    interference: Cell<Option<(u64, u64)>>,
}

impl SparseMemory {
    pub fn write(&self, addr: u64, value: u64) {
        self.words.borrow_mut().insert(addr, value);
    }

    pub fn read(&self, addr: u64) -> u64 {
        self.words.borrow().get(&addr).copied().unwrap_or(0)
    }

    /// Makes every address at or above `limit` read as "not RAM".
    pub fn deny_above(&self, limit: u64) {
        self.limit.set(Some(limit));
    }

    /// The next compare-exchange at `addr` finds `value` there instead (another hart wrote
    /// it between the walker's read and its update).
    pub fn interfere_once(&self, addr: u64, value: u64) {
        self.interference.set(Some((addr, value)));
    }

    fn readable(&self, addr: u64) -> bool {
        self.limit.get().is_none_or(|limit| addr < limit)
    }
}

impl GuestMemory for SparseMemory {
    fn read_u64(&self, gpa: GuestPhysAddr) -> Option<u64> {
        self.readable(gpa.raw()).then(|| self.read(gpa.raw()))
    }

    fn compare_exchange_u64(&self, gpa: GuestPhysAddr, old: u64, new: u64) -> Option<u64> {
        if !self.readable(gpa.raw()) {
            return None;
        }
        if let Some((addr, value)) = self.interference.get()
            && addr == gpa.raw()
        {
            self.interference.set(None);
            self.write(addr, value);
        }
        let found = self.read(gpa.raw());
        if found == old {
            self.write(gpa.raw(), new);
        }
        Some(found)
    }
}

/// Table frames handed out from a fake physical range, for testing the mapper and the
/// shadow cache.
pub struct TestFrames {
    pub mem: SparseMemory,
    next: u64,
    free: std::vec::Vec<u64>,
    /// Frames in use.
    pub allocated: usize,
    pub limit: usize,
    /// Real-TLB flushes asked for: (tree slot, address).
    pub tlb_flushes: std::vec::Vec<(usize, Option<u64>)>,
    /// The harts have Svvptc (`ShadowFrames::fence_new_entries` is false).
    pub svvptc: bool,
}

impl TestFrames {
    pub fn new(limit: usize) -> Self {
        Self {
            mem: SparseMemory::default(),
            next: 0x1_0000_0000,
            free: std::vec::Vec::new(),
            allocated: 0,
            limit,
            tlb_flushes: std::vec::Vec::new(),
            svvptc: false,
        }
    }
}

impl Frames for TestFrames {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        if self.allocated == self.limit {
            return None;
        }
        self.allocated += 1;
        let pa = self.free.pop().unwrap_or_else(|| {
            self.next += 4096;
            self.next - 4096
        });
        for i in 0..512 {
            self.mem.write(pa + 8 * i, 0);
        }
        Some(HostPhysAddr::new(pa))
    }

    fn read_pte(&self, table: HostPhysAddr, index: usize) -> Pte {
        Pte(self.mem.read(table.raw() + 8 * index as u64))
    }

    fn write_pte(&mut self, table: HostPhysAddr, index: usize, pte: Pte) {
        self.mem.write(table.raw() + 8 * index as u64, pte.0);
    }
}

impl crate::shadow::ShadowFrames for TestFrames {
    fn free(&mut self, frame: HostPhysAddr) {
        assert!(!self.free.contains(&frame.raw()), "frame {frame:?} freed twice");
        self.allocated -= 1;
        self.free.push(frame.raw());
    }

    fn free_zeroed(&mut self, frame: HostPhysAddr) {
        for i in 0..512 {
            assert_eq!(self.mem.read(frame.raw() + 8 * i), 0, "frame {frame:?} freed as zeroed");
        }
        self.free(frame);
    }

    fn flush_tlb(&mut self, tree: usize, va: Option<u64>) {
        self.tlb_flushes.push((tree, va));
    }

    fn fence_new_entries(&self) -> bool {
        !self.svvptc
    }
}
