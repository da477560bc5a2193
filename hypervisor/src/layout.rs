//! hypocaust's virtual memory layout (Sv48). See docs/memory-map.md.
//!
//! Guests get Sv39, whose addresses reach only VPN[3] slots 0 and 511 of an Sv48 table.
//! hypocaust lives in slots 256..=510, mapped without the U bit in every table a guest runs
//! on, so a trap never needs a `satp` switch.

use rv::{HostPhysAddr, HostVirtAddr};

/// Offset of the direct map: host-physical address `pa` is at virtual `VIRT_OFFSET + pa`.
/// (VPN[3] slot 256.) The image is linked inside the direct map.
pub const VIRT_OFFSET: u64 = 0xFFFF_8000_0000_0000;

/// Per-hart stacks live here, one [`STACK_SLOT`] each with an unmapped guard page below
/// (VPN[3] slot 300).
pub const STACK_REGION: u64 = 0xFFFF_9600_0000_0000;

/// VPN[3] slots that hold hypocaust's own mappings: shared into every table a guest runs
/// on (256..=510; no Sv39 address reaches them).
pub const HYPERVISOR_ROOT_SLOTS: core::ops::Range<usize> = 256..511;

/// Bytes of stack per hart.
pub const STACK_SIZE: u64 = 256 * 1024;

/// Virtual span reserved per hart in the stack region (stack plus guard).
pub const STACK_SLOT: u64 = 1 << 21;

/// The direct-map address of a host-physical address.
pub const fn phys_to_virt(pa: HostPhysAddr) -> HostVirtAddr {
    HostVirtAddr::new(pa.raw().wrapping_add(VIRT_OFFSET))
}

/// The host-physical address behind a direct-map address. Only meaningful for direct-map
/// addresses (which include the image).
pub const fn virt_to_phys(va: HostVirtAddr) -> HostPhysAddr {
    HostPhysAddr::new(va.raw().wrapping_sub(VIRT_OFFSET))
}

/// Top of the stack of the hart with index `index` (0 = boot hart).
pub const fn stack_top(index: usize) -> u64 {
    STACK_REGION + (index as u64 + 1) * STACK_SLOT
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
