//! Page-table entry format for Sv39 / Sv48 / Sv57 (privileged spec, section 12.4-12.6).

use bitflags::bitflags;

use crate::csr::SatpMode;

bitflags! {
    /// The low flag bits of a PTE.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct PteFlags: u64 {
        const V = 1 << 0;
        const R = 1 << 1;
        const W = 1 << 2;
        const X = 1 << 3;
        const U = 1 << 4;
        const G = 1 << 5;
        const A = 1 << 6;
        const D = 1 << 7;
        /// The two bits reserved for software (RSW).
        const RSW = 0b11 << 8;
    }
}

/// A raw 64-bit page-table entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// Bit position of the PPN field.
    pub const PPN_SHIFT: u32 = 10;
    /// Mask of the 44-bit PPN field (after shifting down).
    pub const PPN_MASK: u64 = (1 << 44) - 1;
    /// Bits 60:54, reserved for future standard use; must be zero.
    pub const RESERVED_MASK: u64 = 0x7F << 54;
    /// Bits 62:61, Svpbmt's page-based memory type.
    pub const PBMT_MASK: u64 = 0b11 << 61;
    /// Bit 63, Svnapot's N bit.
    pub const N_BIT: u64 = 1 << 63;

    /// An invalid (all-zero) entry.
    pub const INVALID: Self = Self(0);

    /// A leaf or pointer entry naming physical page `ppn` with `flags`.
    pub const fn new(ppn: u64, flags: PteFlags) -> Self {
        Self(((ppn & Self::PPN_MASK) << Self::PPN_SHIFT) | flags.bits())
    }

    /// The flag bits (V..D and RSW).
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    /// The physical page number.
    pub const fn ppn(self) -> u64 {
        (self.0 >> Self::PPN_SHIFT) & Self::PPN_MASK
    }

    /// The physical address the entry names (PPN << 12).
    pub const fn phys_addr(self) -> u64 {
        self.ppn() << 12
    }

    /// V is set.
    pub const fn is_valid(self) -> bool {
        self.0 & PteFlags::V.bits() != 0
    }

    /// Valid, and at least one of R/W/X is set: this entry ends the walk.
    pub const fn is_leaf(self) -> bool {
        self.is_valid()
            && self.0 & (PteFlags::R.bits() | PteFlags::X.bits() | PteFlags::W.bits()) != 0
    }

    /// The entry with `extra` flags set.
    pub const fn with_flags(self, extra: PteFlags) -> Self {
        Self(self.0 | extra.bits())
    }
}

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#x}: ppn={:#x} {:?})", self.0, self.ppn(), self.flags())
    }
}

/// Geometry of one paging mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PagingGeometry {
    /// Number of levels (3 for Sv39).
    pub levels: u32,
    /// Number of significant virtual-address bits (39 for Sv39).
    pub va_bits: u32,
}

impl PagingGeometry {
    /// The geometry of a paging mode; `None` for Bare.
    pub const fn of(mode: SatpMode) -> Option<Self> {
        match mode {
            SatpMode::Bare => None,
            SatpMode::Sv39 => Some(Self { levels: 3, va_bits: 39 }),
            SatpMode::Sv48 => Some(Self { levels: 4, va_bits: 48 }),
            SatpMode::Sv57 => Some(Self { levels: 5, va_bits: 57 }),
        }
    }

    /// Whether `va` is canonical: bits 63..va_bits all equal bit va_bits-1.
    pub const fn is_canonical(&self, va: u64) -> bool {
        let shift = 64 - self.va_bits;
        (((va << shift) as i64) >> shift) as u64 == va
    }

    /// The 9-bit VPN index of `va` at `level` (0 = leaf level).
    pub const fn vpn(va: u64, level: u32) -> usize {
        ((va >> (12 + 9 * level)) & 0x1FF) as usize
    }

    /// The size in bytes of a leaf at `level` (4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB).
    pub const fn page_size(level: u32) -> u64 {
        1 << (12 + 9 * level)
    }
}

/// Number of PTEs in one table page.
pub const ENTRIES_PER_TABLE: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pte_fields() {
        let p = Pte::new(0x80200, PteFlags::V | PteFlags::R | PteFlags::X);
        assert_eq!(p.0, 0x2008_0000 | 0b1011);
        assert_eq!(p.ppn(), 0x80200);
        assert_eq!(p.phys_addr(), 0x8020_0000);
        assert!(p.is_leaf());
        let table = Pte::new(0x1234, PteFlags::V);
        assert!(table.is_valid() && !table.is_leaf());
        assert!(!Pte::INVALID.is_valid());
        assert_eq!(Pte(u64::MAX).ppn(), Pte::PPN_MASK);
    }

    #[test]
    fn canonical_addresses() {
        let sv39 = PagingGeometry::of(SatpMode::Sv39).unwrap();
        assert!(sv39.is_canonical(0x3F_FFFF_FFFF));
        assert!(!sv39.is_canonical(0x40_0000_0000));
        assert!(sv39.is_canonical(0xFFFF_FFC0_0000_0000));
        assert!(!sv39.is_canonical(0xFFFF_FF80_0000_0000));
        let sv48 = PagingGeometry::of(SatpMode::Sv48).unwrap();
        assert!(sv48.is_canonical(0xFFFF_8000_0000_0000));
        assert!(sv48.is_canonical(0x40_0000_0000));
        assert!(!sv48.is_canonical(0x8000_0000_0000));
    }

    #[test]
    fn vpn_split() {
        let va = 0xFFFF_8000_8020_1000u64;
        assert_eq!(PagingGeometry::vpn(va, 3), 256);
        assert_eq!(PagingGeometry::vpn(va, 2), 2);
        assert_eq!(PagingGeometry::vpn(va, 1), 1);
        assert_eq!(PagingGeometry::vpn(va, 0), 1);
        assert_eq!(PagingGeometry::page_size(1), 2 << 20);
        assert_eq!(PagingGeometry::page_size(3), 512 << 30);
    }
}
