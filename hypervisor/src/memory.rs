//! A guest's RAM: one contiguous block of host RAM that the guest sees at guest-physical
//! [`RAM_BASE`], so GPA → HPA is an offset plus a bounds check.
//!
//! Every access hypocaust makes to a guest's memory goes through [`GuestMemory`]. A leaf:
//! the guest, its devices (board.rs) and its paging (paging.rs) all use it, and it uses
//! none of them.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rv::insn::Width;
use rv::{GuestPhysAddr, HostPhysAddr};
use vcpu::window::Atomic;

use crate::{layout, mm};

/// Where every guest's RAM starts.
pub const RAM_BASE: GuestPhysAddr = GuestPhysAddr::new(0x8000_0000);

/// A guest's RAM. Clones are views of the same RAM (the guest's devices keep one).
#[derive(Clone, Debug)]
pub struct GuestMemory {
    base: HostPhysAddr,
    size: u64,
}

impl GuestMemory {
    /// The guest RAM held by the `size` bytes of host RAM at `base`.
    ///
    /// # Safety
    ///
    /// `[base, base + size)` is host RAM that the direct map covers and that nothing but
    /// this guest uses while the result lives: every access through it relies on that.
    pub unsafe fn new(base: HostPhysAddr, size: u64) -> Self {
        Self { base, size }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where it is in host RAM.
    pub fn host_base(&self) -> HostPhysAddr {
        self.base
    }

    /// The host-physical address of `[gpa, gpa + len)`, if all of it is guest RAM.
    pub fn translate(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr> {
        let offset = gpa.offset_from(RAM_BASE)?;
        let end = offset.checked_add(len)?;
        if end > self.size {
            return None;
        }
        self.base.checked_add(offset)
    }

    /// Whether `gpa` is guest RAM.
    pub fn contains(&self, gpa: GuestPhysAddr) -> bool {
        self.translate(gpa, 1).is_some()
    }

    /// A direct-map pointer to `[gpa, gpa + len)`, if all of it is guest RAM.
    fn ptr(&self, gpa: GuestPhysAddr, len: usize) -> Option<*mut u8> {
        self.translate(gpa, len as u64).map(|hpa| layout::phys_to_virt(hpa).raw() as *mut u8)
    }

    /// The direct-map address of the page at `gpa_page` (page-aligned), if it is guest RAM.
    pub fn page_ptr(&self, gpa_page: GuestPhysAddr) -> Option<*const u8> {
        self.ptr(gpa_page, rv::PAGE_SIZE as usize).map(|p| p as *const u8)
    }

    /// Copies guest RAM at `gpa` into `buf`; `false` (nothing copied) if not all RAM.
    pub fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
        let Some(src) = self.ptr(gpa, buf.len()) else {
            return false;
        };
        // SAFETY: `ptr` checked that the range is this guest's RAM, which the direct map
        // covers and which is never hypocaust's own memory. The guest's vCPUs and devices
        // may change it meanwhile: small aligned reads do not tear.
        unsafe { mm::read_shared(src, buf) };
        true
    }

    /// Copies `data` into guest RAM at `gpa`; `false` (nothing written) if not all RAM.
    pub fn write(&self, gpa: GuestPhysAddr, data: &[u8]) -> bool {
        let Some(dst) = self.ptr(gpa, data.len()) else {
            return false;
        };
        // SAFETY: as in `read`.
        unsafe { mm::write_shared(dst, data) };
        true
    }

    /// An atomic read-modify-write of the aligned word or doubleword at `gpa` (as the
    /// guest's AMO would be on its hart: other vCPUs see it whole); the old value, or
    /// `None` if it is not RAM or not aligned.
    pub fn atomic(&self, gpa: GuestPhysAddr, width: Width, op: Atomic) -> Option<u64> {
        let n = width.bytes() as usize;
        let ptr = self.ptr(gpa, n).filter(|p| (*p as usize).is_multiple_of(n))?;
        let update = |old: u64| Some(op.apply(old, width));
        match width {
            Width::Word => {
                // SAFETY: `ptr` is this guest's RAM in the direct map, aligned for a u32;
                // every other access to guest RAM is atomic or racy by the guest's design.
                let word = unsafe { AtomicU32::from_ptr(ptr.cast()) };
                let step = |old: u32| update(old as u64).map(|new| new as u32);
                word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, step).ok().map(u64::from)
            }
            Width::Double => {
                // SAFETY: as above, for a u64.
                let word = unsafe { AtomicU64::from_ptr(ptr.cast()) };
                word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, update).ok()
            }
            _ => None,
        }
    }

    /// Zeroes all of it.
    pub fn clear(&self) {
        let dst = layout::phys_to_virt(self.base).raw() as *mut u8;
        // SAFETY: the block belongs to this guest and is covered by the direct map.
        unsafe { core::ptr::write_bytes(dst, 0, self.size as usize) };
    }
}
