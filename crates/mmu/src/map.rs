//! Building host page tables.
//!
//! [`Mapper`] edits a table tree through the [`Frames`] trait, which hands out zeroed table
//! pages and reads and writes their entries. In hypocaust the frames are real pages reached
//! through the direct map; in tests they are a sparse in-memory stand-in.

use rv::HostPhysAddr;
use rv::pte::{ENTRIES_PER_TABLE, PagingGeometry, Pte, PteFlags};

/// Where table pages come from and how their entries are reached.
pub trait Frames {
    /// A new, zeroed 4 KiB table page; `None` when out of memory.
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr>;
    /// Reads entry `index` of the table at `table`.
    fn read_pte(&self, table: HostPhysAddr, index: usize) -> Pte;
    /// Writes entry `index` of the table at `table`.
    fn write_pte(&mut self, table: HostPhysAddr, index: usize, pte: Pte);
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// No frame for a table page.
    OutOfMemory,
    /// Part of the range is mapped already.
    AlreadyMapped { va: u64 },
    /// Addresses or size are not 4 KiB aligned, or the range wraps.
    Misaligned,
}

/// Edits one page-table tree of `levels` levels (4 for Sv48).
pub struct Mapper<'a, F: Frames> {
    root: HostPhysAddr,
    levels: u32,
    frames: &'a mut F,
}

impl<'a, F: Frames> Mapper<'a, F> {
    /// Edits the tree whose root table is at `root`.
    pub fn new(root: HostPhysAddr, levels: u32, frames: &'a mut F) -> Self {
        Self { root, levels, frames }
    }

    /// The root table.
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with `flags` (V is added), using the
    /// largest pages that alignment allows, up to leaves of `max_level`.
    pub fn map_range(
        &mut self,
        va: u64,
        pa: u64,
        size: u64,
        flags: PteFlags,
        max_level: u32,
    ) -> Result<(), MapError> {
        let page = PagingGeometry::page_size(0);
        if !va.is_multiple_of(page) || !pa.is_multiple_of(page) || !size.is_multiple_of(page) {
            return Err(MapError::Misaligned);
        }
        va.checked_add(size).ok_or(MapError::Misaligned)?;
        pa.checked_add(size).ok_or(MapError::Misaligned)?;
        let mut done = 0;
        while done < size {
            let (v, p, left) = (va + done, pa + done, size - done);
            let level = (0..=max_level.min(self.levels - 1))
                .rev()
                .find(|&l| {
                    let s = PagingGeometry::page_size(l);
                    v % s == 0 && p % s == 0 && left >= s
                })
                .unwrap_or(0);
            self.map_page(v, p, level, flags)?;
            done += PagingGeometry::page_size(level);
        }
        Ok(())
    }

    /// Maps one page of `level` (0 = 4 KiB) at `va` to `pa`.
    pub fn map_page(
        &mut self,
        va: u64,
        pa: u64,
        level: u32,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for l in (level + 1..self.levels).rev() {
            let index = PagingGeometry::vpn(va, l);
            let pte = self.frames.read_pte(table, index);
            table = if pte.is_leaf() {
                return Err(MapError::AlreadyMapped { va });
            } else if pte.is_valid() {
                HostPhysAddr::new(pte.phys_addr())
            } else {
                let next = self.frames.alloc_zeroed().ok_or(MapError::OutOfMemory)?;
                self.frames.write_pte(table, index, Pte::new(next.page_number(), PteFlags::V));
                next
            };
        }
        let index = PagingGeometry::vpn(va, level);
        if self.frames.read_pte(table, index).is_valid() {
            return Err(MapError::AlreadyMapped { va });
        }
        self.frames.write_pte(table, index, Pte::new(pa >> 12, flags | PteFlags::V));
        Ok(())
    }

    /// Looks `va` up: the physical address, the leaf's level and its flags.
    pub fn translate(&self, va: u64) -> Option<(u64, u32, PteFlags)> {
        let mut table = self.root;
        for level in (0..self.levels).rev() {
            let pte = self.frames.read_pte(table, PagingGeometry::vpn(va, level));
            if !pte.is_valid() {
                return None;
            }
            if pte.is_leaf() {
                let mask = PagingGeometry::page_size(level) - 1;
                return Some(((pte.phys_addr() & !mask) | (va & mask), level, pte.flags()));
            }
            table = HostPhysAddr::new(pte.phys_addr());
        }
        None
    }

    /// Copies root entries `range` from `other_root` into this tree's root: the way every
    /// shadow table shares hypocaust's own mappings.
    pub fn share_root_entries(&mut self, other_root: HostPhysAddr, range: core::ops::Range<usize>) {
        for index in range.take_while(|&i| i < ENTRIES_PER_TABLE) {
            let pte = self.frames.read_pte(other_root, index);
            self.frames.write_pte(self.root, index, pte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testmem::TestFrames;

    fn rw() -> PteFlags {
        PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D
    }

    #[test]
    fn maps_with_the_largest_pages_alignment_allows() {
        let mut frames = TestFrames::new(64);
        let root = frames.alloc_zeroed().unwrap();
        let mut m = Mapper::new(root, 4, &mut frames);
        // 0x8000_0000..0xC020_0000 at the direct-map offset: one 1 GiB page, then one 2 MiB.
        let off = 0xFFFF_8000_0000_0000u64;
        m.map_range(off + 0x8000_0000, 0x8000_0000, 0x4020_0000, rw(), 2).unwrap();
        assert_eq!(m.translate(off + 0x8000_1234), Some((0x8000_1234, 2, rw() | PteFlags::V)));
        assert_eq!(m.translate(off + 0xC010_0000).map(|t| (t.0, t.1)), Some((0xC010_0000, 1)));
        assert_eq!(m.translate(off + 0xC020_0000), None);
        // Root + one level-2 table + one level-1 table.
        assert_eq!(frames.allocated, 3);
    }

    #[test]
    fn unaligned_ranges_use_small_pages() {
        let mut frames = TestFrames::new(64);
        let root = frames.alloc_zeroed().unwrap();
        let mut m = Mapper::new(root, 3, &mut frames);
        m.map_range(0x1000, 0x8000_1000, 0x20_0000, rw(), 2).unwrap();
        assert_eq!(m.translate(0x1000).map(|t| t.1), Some(0));
        assert_eq!(m.translate(0x20_0fff).map(|t| t.0), Some(0x8020_0fff));
        assert_eq!(m.map_range(0x1001, 0, 0x1000, rw(), 0), Err(MapError::Misaligned));
        assert_eq!(m.map_range(!0xfff, 0, 0x2000, rw(), 0), Err(MapError::Misaligned));
    }

    #[test]
    fn refuses_overlaps_and_reports_exhaustion() {
        let mut frames = TestFrames::new(3);
        let root = frames.alloc_zeroed().unwrap();
        let mut m = Mapper::new(root, 3, &mut frames);
        m.map_range(0x20_0000, 0x8020_0000, 0x20_0000, rw(), 1).unwrap();
        assert_eq!(
            m.map_page(0x20_1000, 0, 0, rw()),
            Err(MapError::AlreadyMapped { va: 0x20_1000 })
        );
        assert_eq!(
            m.map_page(0x20_0000, 0, 1, rw()),
            Err(MapError::AlreadyMapped { va: 0x20_0000 })
        );
        // Root and one level-1 table used; the next 4 KiB mapping needs two more tables.
        assert_eq!(m.map_page(0x4000_0000, 0, 0, rw()), Err(MapError::OutOfMemory));
    }

    #[test]
    fn shares_root_entries() {
        let mut frames = TestFrames::new(8);
        let host_root = frames.alloc_zeroed().unwrap();
        Mapper::new(host_root, 4, &mut frames)
            .map_range(0xFFFF_8000_0000_0000, 0, 1 << 30, rw(), 2)
            .unwrap();
        let shadow_root = frames.alloc_zeroed().unwrap();
        let mut shadow = Mapper::new(shadow_root, 4, &mut frames);
        shadow.share_root_entries(host_root, 256..511);
        assert_eq!(shadow.translate(0xFFFF_8000_0000_1000).map(|t| t.0), Some(0x1000));
        assert_eq!(shadow.translate(0x1000), None);
    }
}
