//! A guest's device bus: its devices by guest-physical range. Ranges are checked for
//! overlap when a device is inserted, so an access reaches at most one device.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use rv::GuestPhysAddr;

/// One device on the bus.
#[derive(Debug)]
pub struct Slot<D> {
    pub name: String,
    pub base: GuestPhysAddr,
    pub size: u64,
    pub device: D,
}

impl<D> Slot<D> {
    /// Whether `addr` is in this device's range.
    pub fn contains(&self, addr: GuestPhysAddr) -> bool {
        addr.raw().wrapping_sub(self.base.raw()) < self.size
    }
}

/// Why a device was not inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// Its range overlaps that of device `with`.
    Overlap { device: String, with: String },
    /// Its range is empty or wraps around the address space.
    BadRange { device: String },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap { device, with } => write!(f, "device {device} overlaps {with}"),
            Self::BadRange { device } => {
                write!(f, "device {device} has an empty or wrapping range")
            }
        }
    }
}

/// The devices of a guest.
#[derive(Debug)]
pub struct Bus<D> {
    slots: Vec<Slot<D>>,
}

impl<D> Default for Bus<D> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<D> Bus<D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + size)` unless that overlaps a device already there.
    pub fn insert(
        &mut self,
        name: &str,
        base: GuestPhysAddr,
        size: u64,
        device: D,
    ) -> Result<(), BusError> {
        let end = base.raw().checked_add(size).filter(|_| size > 0);
        let Some(end) = end else { return Err(BusError::BadRange { device: name.into() }) };
        if let Some(other) =
            self.slots.iter().find(|s| base.raw() < s.base.raw() + s.size && s.base.raw() < end)
        {
            return Err(BusError::Overlap { device: name.into(), with: other.name.clone() });
        }
        self.slots.push(Slot { name: name.into(), base, size, device });
        Ok(())
    }

    /// The device at `addr` and the offset into its range.
    pub fn find_mut(&mut self, addr: GuestPhysAddr) -> Option<(&mut Slot<D>, u64)> {
        let slot = self.slots.iter_mut().find(|s| s.contains(addr))?;
        let offset = addr.raw() - slot.base.raw();
        Some((slot, offset))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Slot<D>> {
        self.slots.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot<D>> {
        self.slots.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(a: u64) -> GuestPhysAddr {
        GuestPhysAddr::new(a)
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = Bus::new();
        bus.insert("uart", at(0x1000_0000), 0x100, 1).unwrap();
        bus.insert("virtio0", at(0x1000_1000), 0x1000, 2).unwrap();
        assert_eq!(
            bus.insert("bad", at(0x1000_00f0), 0x20, 3),
            Err(BusError::Overlap { device: "bad".into(), with: "uart".into() })
        );
        assert_eq!(
            bus.insert("wide", at(0x0fff_0000), 0x2_0000, 3),
            Err(BusError::Overlap { device: "wide".into(), with: "uart".into() })
        );
        assert_eq!(
            bus.insert("empty", at(0x2000), 0, 3),
            Err(BusError::BadRange { device: "empty".into() })
        );
        assert_eq!(
            bus.insert("wrap", at(u64::MAX - 1), 4, 3),
            Err(BusError::BadRange { device: "wrap".into() })
        );
        bus.insert("next", at(0x1000_0100), 0x100, 4).unwrap();
        assert_eq!(bus.iter().count(), 3);
    }

    #[test]
    fn accesses_find_their_device() {
        let mut bus = Bus::new();
        bus.insert("uart", at(0x1000_0000), 0x100, 'u').unwrap();
        bus.insert("rtc", at(0x101000), 0x1000, 'r').unwrap();
        let (slot, offset) = bus.find_mut(at(0x1000_0005)).unwrap();
        assert_eq!((slot.device, offset), ('u', 5));
        assert_eq!(bus.find_mut(at(0x101fff)).map(|(s, o)| (s.device, o)), Some(('r', 0xfff)));
        assert!(bus.find_mut(at(0x1000_0100)).is_none());
        assert!(bus.find_mut(at(0)).is_none());
    }
}
