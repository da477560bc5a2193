//! How QEMU 7.2's CPU turns a guest load or store on an MMIO page into device accesses:
//! every model answers through these, so misaligned and wide accesses split as on `virt`.

use crate::{BusError, Width};

/// All ones in the low `bytes` bytes.
pub const fn low_bytes_mask(bytes: u64) -> u64 {
    if bytes >= 8 { u64::MAX } else { (1 << (bytes * 8)) - 1 }
}

/// A load of `width` at `offset` as QEMU 7.2's CPU makes it on an MMIO page: `aligned` does
/// one naturally aligned access of `width` at the offset it is given. A misaligned load
/// becomes the two aligned loads that cover it, lower first, whose bytes are combined (so
/// both have their side effects, and a fault of the second comes after the first's).
///
/// This is the CPU's doing, not a device's; every model here answers through it.
pub fn cpu_read(
    offset: u64,
    width: Width,
    mut aligned: impl FnMut(u64) -> Result<u64, BusError>,
) -> Result<u64, BusError> {
    let size = width.bytes();
    let lead = offset % size;
    if lead == 0 {
        return aligned(offset);
    }
    let first = offset - lead;
    let second = first.checked_add(size).ok_or(BusError)?;
    let low = aligned(first)?;
    let high = aligned(second)?;
    let shift = lead * 8;
    Ok(((low >> shift) | (high << (size * 8 - shift))) & low_bytes_mask(size))
}

/// A store of the low `width` bytes of `value` at `offset` as QEMU 7.2's CPU makes it on an
/// MMIO page: `aligned(offset, width, value)` does one naturally aligned access. A
/// misaligned store becomes single-byte stores, lowest address first, up to the first that
/// faults.
pub fn cpu_write(
    offset: u64,
    width: Width,
    value: u64,
    mut aligned: impl FnMut(u64, Width, u64) -> Result<(), BusError>,
) -> Result<(), BusError> {
    let size = width.bytes();
    if offset & (size - 1) == 0 {
        return aligned(offset, width, value & low_bytes_mask(size));
    }
    for i in 0..size {
        let byte_offset = offset.checked_add(i).ok_or(BusError)?;
        aligned(byte_offset, Width::Byte, (value >> (i * 8)) & 0xff)?;
    }
    Ok(())
}
