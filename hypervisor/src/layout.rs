//! hypocaust's virtual memory layout, per host paging mode. See docs/memory-map.md.
//!
//! In Sv48 guests get Sv39, whose addresses reach only VPN[3] slots 0 and 511 of an Sv48
//! table. hypocaust lives in slots 256..=510, mapped without the U bit in every table a
//! guest runs on, so a trap never needs a `satp` switch.

use core::ops::Range;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rv::csr::SatpMode;
use rv::{HostPhysAddr, HostVirtAddr};

/// The address the image is linked at. It is position-independent: the entry assembly
/// applies its relocations for wherever firmware loaded it and the direct-map offset of
/// the host mode it chose ([`HostMode::virt_offset`]). Keep in sync with linker.ld.
pub const LINK_BASE: u64 = 0x8020_0000;

/// hypocaust's own paging mode. Its mappings live in root slots no address of the mode it
/// offers its guests can name, so they are in every shadow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HostMode {
    /// Sv48, guests get Sv39: hypocaust in VPN[3] slots 256..=510.
    Sv48 = 0,
    /// Sv57, guests get Sv48: hypocaust in VPN[4] slots 256..=510.
    Sv57 = 1,
    /// Sv39 (a hart with nothing wider), guests get Sv39 too: hypocaust keeps a window of
    /// VPN[2] slots 476..=507 (32 GiB below Linux's modules and kernel, where it maps
    /// nothing); a guest access there is carried out by hypocaust (vcpu::window).
    Sv39 = 2,
}

impl HostMode {
    /// `satp.MODE`.
    pub const fn satp_mode(self) -> SatpMode {
        match self {
            Self::Sv48 => SatpMode::Sv48,
            Self::Sv57 => SatpMode::Sv57,
            Self::Sv39 => SatpMode::Sv39,
        }
    }

    /// Levels of its page tables.
    pub const fn levels(self) -> u32 {
        match self {
            Self::Sv48 => 4,
            Self::Sv57 => 5,
            Self::Sv39 => 3,
        }
    }

    /// The widest mode its guests get.
    pub const fn guest_mode(self) -> SatpMode {
        match self {
            Self::Sv48 => SatpMode::Sv39,
            Self::Sv57 => SatpMode::Sv48,
            Self::Sv39 => SatpMode::Sv39,
        }
    }

    /// Offset of the direct map: host-physical address `pa` is at virtual
    /// `virt_offset + pa`. The image runs inside the direct map.
    pub const fn virt_offset(self) -> u64 {
        match self {
            // VPN[3] slot 256.
            Self::Sv48 => 0xFFFF_8000_0000_0000,
            // VPN[4] slot 256.
            Self::Sv57 => 0xFF00_0000_0000_0000,
            // VPN[2] slot 476: the direct map reaches 30 GiB of physical addresses.
            Self::Sv39 => 0xFFFF_FFF7_0000_0000,
        }
    }

    /// Where the per-hart stacks live, one [`STACK_SLOT`] each with an unmapped guard page
    /// below.
    pub const fn stack_region(self) -> u64 {
        match self {
            // VPN[3] slot 300.
            Self::Sv48 => 0xFFFF_9600_0000_0000,
            // VPN[4] slot 300.
            Self::Sv57 => 0xFF2C_0000_0000_0000,
            // VPN[2] slot 506.
            Self::Sv39 => 0xFFFF_FFFE_8000_0000,
        }
    }

    /// Root-table slots that hold hypocaust's own mappings: shared into every table a
    /// guest runs on.
    pub const fn root_slots(self) -> Range<usize> {
        match self {
            Self::Sv48 | Self::Sv57 => 256..511,
            Self::Sv39 => 476..508,
        }
    }

    /// The highest physical address (exclusive) the direct map can reach.
    pub const fn direct_map_limit(self) -> u64 {
        match self {
            // Slots 256..=299 (the stacks are in 300), 512 GiB and 256 TiB each.
            Self::Sv48 => 44 << 39,
            Self::Sv57 => 44 << 48,
            // Slots 476..=505; the stacks are in 506.
            Self::Sv39 => 30 << 30,
        }
    }
}

/// The mode the entry assembly chose (a [`HostMode`] as `u8`).
static MODE: AtomicU8 = AtomicU8::new(HostMode::Sv48 as u8);

/// Its [`HostMode::virt_offset`], kept apart: the direct map is on every path that touches
/// a page table.
static VIRT_OFFSET: AtomicU64 = AtomicU64::new(HostMode::Sv48.virt_offset());

/// hypocaust's paging mode.
pub fn mode() -> HostMode {
    match MODE.load(Ordering::Relaxed) {
        1 => HostMode::Sv57,
        2 => HostMode::Sv39,
        _ => HostMode::Sv48,
    }
}

/// Records the mode the entry assembly turned on (`satp.MODE`: 8, 9 or 10).
pub fn set_mode(satp_mode: u64) {
    let mode = match satp_mode {
        10 => HostMode::Sv57,
        8 => HostMode::Sv39,
        _ => HostMode::Sv48,
    };
    MODE.store(mode as u8, Ordering::Relaxed);
    VIRT_OFFSET.store(mode.virt_offset(), Ordering::Relaxed);
}

/// Bytes of stack per hart.
pub const STACK_SIZE: u64 = 256 * 1024;

/// Virtual span reserved per hart in the stack region (stack plus guard).
pub const STACK_SLOT: u64 = 1 << 21;

/// Where the per-hart pages for instructions run out of line start, from the stack region's
/// base (past the stacks of the most harts hypocaust serves).
const EXEC_OFFSET: u64 = 0x3000_0000;

/// The page (mapped read-execute) where the hart with index `index` runs a guest's
/// instruction out of line (`arch::exec`).
pub fn exec_page(index: usize) -> u64 {
    mode().stack_region() + EXEC_OFFSET + index as u64 * rv::PAGE_SIZE
}

/// The direct-map address of a host-physical address.
pub fn phys_to_virt(pa: HostPhysAddr) -> HostVirtAddr {
    HostVirtAddr::new(pa.raw().wrapping_add(VIRT_OFFSET.load(Ordering::Relaxed)))
}

/// The host-physical address behind a direct-map address. Only meaningful for direct-map
/// addresses (which include the image).
pub fn virt_to_phys(va: HostVirtAddr) -> HostPhysAddr {
    HostPhysAddr::new(va.raw().wrapping_sub(VIRT_OFFSET.load(Ordering::Relaxed)))
}

/// Top of the stack of the hart with index `index` (0 = boot hart).
pub fn stack_top(index: usize) -> u64 {
    mode().stack_region() + (index as u64 + 1) * STACK_SLOT
}

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Sections of the image, as direct-map addresses.
pub struct ImageSections {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
}

/// Where the linker put the image's sections.
pub fn image_sections() -> ImageSections {
    ImageSections {
        start: &raw const __image_start as u64,
        text_end: &raw const __text_end as u64,
        rodata_end: &raw const __rodata_end as u64,
        end: &raw const __image_end as u64,
    }
}
