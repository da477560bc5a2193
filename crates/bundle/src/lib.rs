//! The guest bundle: one blob with every guest's configuration and images, which the host
//! tool builds and QEMU (or a boot loader) loads beside hypocaust, as its initrd. Changing
//! guests never needs a rebuild of hypocaust.
//!
//! Layout (little-endian; all offsets from the start of the bundle, blobs 4 KiB aligned):
//!
//! ```text
//! 0   magic "HYPCBNDL"
//! 8   u32 format version (2)
//! 12  u32 number of guests
//! 16  u64 total size in bytes
//! 24  seed [u8; 32]: random bytes from the host tool, fresh for every bundle (hypocaust
//!     mixes them into each guest's `rng-seed`)
//! 56  guest records, RECORD_SIZE bytes each:
//!       name [u8; 32] (UTF-8, NUL padded), u32 memory in MiB, u32 vCPUs,
//!       kernel blob, initrd blob, bootargs blob (each u64 offset + u64 size; size 0 =
//!       none), u64 virtio slot mask, u64 hart affinity mask (bit i: host hart index i;
//!       0: any), device-names blob (UTF-8 lines `SLOT NAME`: the name the configuration
//!       gave the device in virtio slot SLOT), 24 reserved bytes (zero)
//! ... blobs
//! ```
//!
//! The reader checks every offset and size against the bundle, so a damaged bundle is an
//! error, never an out-of-bounds read.
#![cfg_attr(not(feature = "std"), no_std)]

use core::fmt;

/// First eight bytes of a bundle.
pub const MAGIC: &[u8; 8] = b"HYPCBNDL";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 2;
/// Size of the header before the guest records.
pub const HEADER_SIZE: usize = 56;
/// Bytes of the bundle's seed.
pub const SEED_LEN: usize = 32;
/// Size of one guest record.
pub const RECORD_SIZE: usize = 32 + 4 + 4 + 3 * 16 + 8 + 48;
/// Longest guest name.
pub const NAME_LEN: usize = 32;
/// Alignment of blobs.
pub const BLOB_ALIGN: usize = 4096;

/// Why a bundle cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// It does not start with [`MAGIC`].
    NotABundle,
    /// It was written by another version of the format.
    Version(u32),
    /// It is shorter than its header says.
    Truncated,
    /// A blob lies outside the bundle.
    BadBlob { guest: usize },
    /// A guest name is not UTF-8.
    BadName { guest: usize },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotABundle => write!(f, "not a hypocaust guest bundle (bad magic)"),
            Self::Version(v) => {
                write!(f, "bundle format version {v}; this hypocaust reads version {VERSION}")
            }
            Self::Truncated => write!(f, "the bundle is truncated"),
            Self::BadBlob { guest } => write!(f, "guest {guest} names data outside the bundle"),
            Self::BadName { guest } => write!(f, "guest {guest} has a name that is not UTF-8"),
        }
    }
}

/// One guest as the bundle describes it; the byte slices borrow from the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guest<'a> {
    pub name: &'a str,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub bootargs: &'a str,
    /// Bit `i`: the host's virtio-mmio slot `i` (in address order) is passed through.
    pub virtio_slots: u64,
    /// Bit `i`: the guest's vCPUs may run on host hart index `i`; 0: on any.
    pub harts: u64,
    /// Lines `SLOT NAME`: the configuration's names of its devices.
    pub device_names: &'a str,
}

impl<'a> Guest<'a> {
    /// The configuration's name of the device in virtio slot `slot`, if it gave one.
    pub fn device_name(&self, slot: usize) -> Option<&'a str> {
        self.device_names.lines().find_map(|line| {
            let (s, name) = line.split_once(' ')?;
            (s.parse() == Ok(slot)).then_some(name)
        })
    }
}

/// A bundle in memory.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    data: &'a [u8],
    count: usize,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Bundle<'a> {
    /// Checks the header of `data` (which may extend past the bundle's end).
    pub fn parse(data: &'a [u8]) -> Result<Self, BundleError> {
        if data.len() < HEADER_SIZE || &data[..8] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let version = u32_at(data, 8).ok_or(BundleError::Truncated)?;
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let count = u32_at(data, 12).ok_or(BundleError::Truncated)? as usize;
        let size = u64_at(data, 16).ok_or(BundleError::Truncated)?;
        let size = usize::try_from(size).map_err(|_| BundleError::Truncated)?;
        let records_end = count.checked_mul(RECORD_SIZE).and_then(|r| r.checked_add(HEADER_SIZE));
        if size > data.len() || records_end.is_none_or(|end| end > size) {
            return Err(BundleError::Truncated);
        }
        let bundle = Self { data: &data[..size], count };
        for i in 0..count {
            bundle.guest(i)?;
        }
        Ok(bundle)
    }

    /// Total size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Number of guests.
    pub fn guest_count(&self) -> usize {
        self.count
    }

    /// Guest `index`.
    pub fn guest(&self, index: usize) -> Result<Guest<'a>, BundleError> {
        let at = HEADER_SIZE + index * RECORD_SIZE;
        let record = self.data.get(at..at + RECORD_SIZE).ok_or(BundleError::Truncated)?;
        let bad = BundleError::BadBlob { guest: index };
        let blob = |off: usize| -> Result<&'a [u8], BundleError> {
            let start = usize::try_from(u64_at(record, off).ok_or(bad)?).map_err(|_| bad)?;
            let len = usize::try_from(u64_at(record, off + 8).ok_or(bad)?).map_err(|_| bad)?;
            let end = start.checked_add(len).ok_or(bad)?;
            self.data.get(start..end).ok_or(bad)
        };
        let name_bytes = &record[..NAME_LEN];
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let name = core::str::from_utf8(&name_bytes[..name_len])
            .map_err(|_| BundleError::BadName { guest: index })?;
        let initrd = blob(56)?;
        let bootargs = core::str::from_utf8(blob(72)?).map_err(|_| bad)?;
        let device_names = core::str::from_utf8(blob(104)?).map_err(|_| bad)?;
        Ok(Guest {
            name,
            memory_mib: u32_at(record, 32).ok_or(bad)?,
            vcpus: u32_at(record, 36).ok_or(bad)?,
            kernel: blob(40)?,
            initrd: (!initrd.is_empty()).then_some(initrd),
            bootargs,
            virtio_slots: u64_at(record, 88).ok_or(bad)?,
            harts: u64_at(record, 96).ok_or(bad)?,
            device_names,
        })
    }

    /// The host tool's random seed.
    pub fn seed(&self) -> [u8; SEED_LEN] {
        self.data[24..24 + SEED_LEN].try_into().expect("the header was checked")
    }

    /// Every guest, in order.
    pub fn guests(&self) -> impl Iterator<Item = Guest<'a>> + '_ {
        (0..self.count).filter_map(|i| self.guest(i).ok())
    }
}

/// Building bundles (host side).
#[cfg(feature = "std")]
pub mod writer {
    use super::*;

    /// A guest to pack.
    #[derive(Clone, Debug, Default)]
    pub struct GuestSpec {
        pub name: String,
        pub memory_mib: u32,
        pub vcpus: u32,
        pub kernel: Vec<u8>,
        pub initrd: Option<Vec<u8>>,
        pub bootargs: String,
        pub virtio_slots: u64,
        /// Host hart indexes the vCPUs may run on (bit i); 0: any.
        pub harts: u64,
        /// `(virtio slot, name)` of the devices the configuration named.
        pub device_names: Vec<(usize, String)>,
    }

    fn align(v: &mut Vec<u8>) {
        v.resize(v.len().next_multiple_of(BLOB_ALIGN), 0);
    }

    /// Packs `guests` into a bundle with `seed`. Names longer than 32 bytes are an error.
    pub fn build(guests: &[GuestSpec], seed: [u8; SEED_LEN]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(guests.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // size, patched below
        out.extend_from_slice(&seed);
        let records = out.len();
        out.resize(records + guests.len() * RECORD_SIZE, 0);
        for (i, g) in guests.iter().enumerate() {
            if g.name.len() > NAME_LEN || g.name.is_empty() {
                return Err(format!("guest name {:?} must be 1 to {NAME_LEN} bytes", g.name));
            }
            let names: String =
                g.device_names.iter().map(|(slot, name)| format!("{slot} {name}\n")).collect();
            if g.device_names.iter().any(|(_, n)| n.is_empty() || n.contains(char::is_whitespace)) {
                return Err(format!("guest {:?}: device names must be words", g.name));
            }
            let mut blobs = [(0u64, 0u64); 4];
            for (slot, data) in [
                &g.kernel[..],
                g.initrd.as_deref().unwrap_or(&[]),
                g.bootargs.as_bytes(),
                names.as_bytes(),
            ]
            .into_iter()
            .enumerate()
            {
                if !data.is_empty() {
                    align(&mut out);
                    blobs[slot] = (out.len() as u64, data.len() as u64);
                    out.extend_from_slice(data);
                }
            }
            let r = &mut out[records + i * RECORD_SIZE..records + (i + 1) * RECORD_SIZE];
            r[..g.name.len()].copy_from_slice(g.name.as_bytes());
            r[32..36].copy_from_slice(&g.memory_mib.to_le_bytes());
            r[36..40].copy_from_slice(&g.vcpus.to_le_bytes());
            for (slot, (off, len)) in blobs.iter().enumerate() {
                // Kernel, initrd, bootargs at 40, 56, 72; device names at 104.
                let at = if slot < 3 { 40 + slot * 16 } else { 104 };
                r[at..at + 8].copy_from_slice(&off.to_le_bytes());
                r[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
            }
            r[88..96].copy_from_slice(&g.virtio_slots.to_le_bytes());
            r[96..104].copy_from_slice(&g.harts.to_le_bytes());
        }
        let size = out.len() as u64;
        out[16..24].copy_from_slice(&size.to_le_bytes());
        Ok(out)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::writer::{GuestSpec, build};
    use super::*;

    fn spec(name: &str) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            memory_mib: 256,
            vcpus: 2,
            kernel: vec![0xAA; 5000],
            initrd: Some(vec![0xBB; 10]),
            bootargs: "console=hvc0".into(),
            virtio_slots: 0b11,
            harts: 0b101,
            device_names: vec![(0, "disk".into()), (1, "net0".into())],
        }
    }

    const SEED: [u8; SEED_LEN] = [7; SEED_LEN];

    #[test]
    fn round_trip() {
        let data = build(
            &[
                spec("linux"),
                GuestSpec {
                    initrd: None,
                    bootargs: String::new(),
                    device_names: vec![],
                    ..spec("test")
                },
            ],
            SEED,
        )
        .unwrap();
        let b = Bundle::parse(&data).unwrap();
        assert_eq!(b.guest_count(), 2);
        assert_eq!(b.size(), data.len());
        let g = b.guest(0).unwrap();
        assert_eq!(
            (g.name, g.memory_mib, g.vcpus, g.bootargs, g.virtio_slots, g.harts),
            ("linux", 256, 2, "console=hvc0", 3, 0b101)
        );
        assert_eq!(
            (g.device_name(0), g.device_name(1), g.device_name(2)),
            (Some("disk"), Some("net0"), None)
        );
        assert_eq!(b.seed(), SEED);
        assert_eq!(g.kernel, &[0xAA; 5000][..]);
        assert_eq!(g.initrd, Some(&[0xBB; 10][..]));
        assert_eq!(g.kernel.as_ptr() as usize % 4096, data.as_ptr() as usize % 4096);
        let t = b.guest(1).unwrap();
        assert_eq!((t.name, t.initrd, t.bootargs, t.device_names), ("test", None, "", ""));
        assert_eq!(b.guests().count(), 2);
        // Trailing bytes after the bundle are ignored.
        let mut longer = data.clone();
        longer.extend_from_slice(&[0; 100]);
        assert_eq!(Bundle::parse(&longer).unwrap().size(), data.len());
    }

    #[test]
    fn damage_is_detected() {
        let data = build(&[spec("linux")], SEED).unwrap();
        assert_eq!(Bundle::parse(&data[..10]).unwrap_err(), BundleError::NotABundle);
        assert_eq!(Bundle::parse(&data[..data.len() - 1]).unwrap_err(), BundleError::Truncated);
        let mut v = data.clone();
        v[8] = 9;
        assert_eq!(Bundle::parse(&v).unwrap_err(), BundleError::Version(9));
        let mut v = data.clone();
        v[HEADER_SIZE + 48..HEADER_SIZE + 56].copy_from_slice(&u64::MAX.to_le_bytes()); // kernel size
        assert_eq!(Bundle::parse(&v).unwrap_err(), BundleError::BadBlob { guest: 0 });
        let mut v = data.clone();
        v[12..16].copy_from_slice(&1000u32.to_le_bytes()); // guest count
        assert_eq!(Bundle::parse(&v).unwrap_err(), BundleError::Truncated);
        let mut v = data;
        v[HEADER_SIZE] = 0xFF;
        assert_eq!(Bundle::parse(&v).unwrap_err(), BundleError::BadName { guest: 0 });
        assert!(build(&[spec(&"x".repeat(33))], SEED).is_err());
        let spaced = GuestSpec { device_names: vec![(0, "a b".into())], ..spec("x") };
        assert!(build(&[spaced], SEED).is_err());
    }
}
