//! Typed addresses.
//!
//! Four address spaces meet in a hypervisor: guest-virtual, guest-physical, host-physical and
//! host-virtual. Each gets its own newtype so that a guest-physical address can never be used
//! where a host-physical one is meant. There is deliberately no `Add`/`Sub`: arithmetic goes
//! through `checked_*` methods, so every overflow is a decision made at the call site.

use core::fmt;

/// Size of a base page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// What the four address newtypes have in common, so generic code (ranges) can use them.
pub trait Address: Copy + Ord + core::fmt::Debug {
    /// Wraps a raw address.
    fn new(raw: u64) -> Self;
    /// The raw address.
    fn raw(self) -> u64;
}

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $short:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// `self - offset`, or `None` on underflow.
            pub const fn checked_sub(self, offset: u64) -> Option<Self> {
                match self.0.checked_sub(offset) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// The distance from `base` up to `self`, or `None` if `self` lies below `base`.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// The offset within the 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// The page number (address >> 12).
            pub const fn page_number(self) -> u64 {
                self.0 >> PAGE_SHIFT
            }

            /// The address rounded down to `align`, a power of two.
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// The address rounded up to `align`, a power of two; `None` on overflow.
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(raw) => Some(Self(raw & !(align - 1))),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align`, a power of two.
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl Address for $name {
            fn new(raw: u64) -> Self {
                Self(raw)
            }

            fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($short, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// An address as the guest sees it with its own paging on (or equal to the GPA with
    /// `satp` Bare).
    GuestVirtAddr,
    "GVA"
);
address_type!(
    /// An address in the guest's physical address space (its RAM starts at `0x8000_0000`).
    GuestPhysAddr,
    "GPA"
);
address_type!(
    /// A physical address of the real machine.
    HostPhysAddr,
    "HPA"
);
address_type!(
    /// A virtual address in hypocaust's own address space.
    HostVirtAddr,
    "HVA"
);

/// A half-open range `[start, end)` of addresses of one kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AddrRange<A> {
    /// First address in the range.
    pub start: A,
    /// First address past the range.
    pub end: A,
}

impl<A: Address> AddrRange<A> {
    /// The range `[start, start + size)`, or `None` if it would wrap.
    pub fn from_start_size(start: A, size: u64) -> Option<Self> {
        let end = start.raw().checked_add(size)?;
        Some(Self { start, end: A::new(end) })
    }

    /// Number of bytes in the range.
    pub fn size(&self) -> u64 {
        self.end.raw().saturating_sub(self.start.raw())
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: A) -> bool {
        addr >= self.start && addr < self.end
    }

    /// Whether `[addr, addr + len)` lies entirely in the range.
    pub fn contains_span(&self, addr: A, len: u64) -> bool {
        match addr.raw().checked_add(len) {
            Some(end) => addr >= self.start && end <= self.end.raw(),
            None => false,
        }
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_refuses_overflow() {
        let a = GuestPhysAddr::new(u64::MAX - 1);
        assert_eq!(a.checked_add(1), Some(GuestPhysAddr::new(u64::MAX)));
        assert_eq!(a.checked_add(2), None);
        assert_eq!(GuestPhysAddr::new(0).checked_sub(1), None);
        assert_eq!(
            GuestPhysAddr::new(0x8000_1000).offset_from(GuestPhysAddr::new(0x8000_0000)),
            Some(0x1000)
        );
        assert_eq!(GuestPhysAddr::new(1).offset_from(GuestPhysAddr::new(2)), None);
    }

    #[test]
    fn alignment() {
        let a = HostPhysAddr::new(0x8020_1234);
        assert_eq!(a.page_offset(), 0x234);
        assert_eq!(a.page_number(), 0x80201);
        assert_eq!(a.align_down(PAGE_SIZE), HostPhysAddr::new(0x8020_1000));
        assert_eq!(a.align_up(PAGE_SIZE), Some(HostPhysAddr::new(0x8020_2000)));
        assert_eq!(HostPhysAddr::new(u64::MAX).align_up(PAGE_SIZE), None);
        assert!(HostPhysAddr::new(0x20_0000).is_aligned(0x20_0000));
        assert!(!a.is_aligned(8));
    }

    #[test]
    fn ranges() {
        let r = AddrRange::from_start_size(GuestPhysAddr::new(0x8000_0000), 0x1000).unwrap();
        assert_eq!(r.size(), 0x1000);
        assert!(r.contains(GuestPhysAddr::new(0x8000_0fff)));
        assert!(!r.contains(GuestPhysAddr::new(0x8000_1000)));
        assert!(r.contains_span(GuestPhysAddr::new(0x8000_0ff8), 8));
        assert!(!r.contains_span(GuestPhysAddr::new(0x8000_0ff8), 9));
        assert!(!r.contains_span(GuestPhysAddr::new(u64::MAX), 2));
        let s = AddrRange::from_start_size(GuestPhysAddr::new(0x8000_0fff), 1).unwrap();
        assert!(r.overlaps(&s));
        let t = AddrRange::from_start_size(GuestPhysAddr::new(0x8000_1000), 1).unwrap();
        assert!(!r.overlaps(&t));
        assert!(AddrRange::from_start_size(GuestPhysAddr::new(u64::MAX), 2).is_none());
    }

    #[test]
    fn formatting_names_the_space() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{:?}", GuestPhysAddr::new(0x10)), "GPA(0x10)");
        assert_eq!(format!("{:?}", HostPhysAddr::new(0x10)), "HPA(0x10)");
        assert_eq!(format!("{}", GuestVirtAddr::new(0x10)), "0x10");
    }
}
