//! Which physical memory an SBI call may read or write for its caller: RAM, never the
//! firmware's own.

/// A half-open range of physical addresses.
pub type Range = (u64, u64);

/// The address of a buffer of `len` bytes at `lo` (`hi`: the address's upper XLEN bits,
/// as SBI passes physical addresses) if all of it lies in one of `ram` and none of it in
/// `firmware`; `None` means the SBI error INVALID_PARAM.
pub fn buffer(ram: &[Range], firmware: Range, len: usize, lo: usize, hi: usize) -> Option<u64> {
    if hi != 0 {
        return None;
    }
    let start = lo as u64;
    if len == 0 {
        return Some(start);
    }
    let end = start.checked_add(len as u64)?;
    let in_ram = ram.iter().any(|&(s, e)| s <= start && end <= e);
    let overlaps_firmware = start < firmware.1 && firmware.0 < end;
    (in_ram && !overlaps_firmware).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: [Range; 1] = [(0x8000_0000, 0xc000_0000)];
    const FW: Range = (0x8000_0000, 0x8004_0000);

    #[test]
    fn buffers_in_ram_outside_the_firmware() {
        assert_eq!(buffer(&RAM, FW, 8, 0x8020_0000, 0), Some(0x8020_0000));
        assert_eq!(buffer(&RAM, FW, 0x10, 0xbfff_fff0, 0), Some(0xbfff_fff0));
        assert_eq!(buffer(&RAM, FW, 0, 0x1_0000_0000, 0), Some(0x1_0000_0000), "an empty buffer");
    }

    #[test]
    fn refused_buffers() {
        assert_eq!(buffer(&RAM, FW, 8, 0x1_0000_0000, 0), None, "nothing there");
        assert_eq!(buffer(&RAM, FW, 8, 0x8020_0000, 1), None, "above 64 bits");
        assert_eq!(buffer(&RAM, FW, 0x20, 0xbfff_fff0, 0), None, "runs past RAM");
        assert_eq!(buffer(&RAM, FW, 8, 0x8003_fffc, 0), None, "overlaps the firmware");
        assert_eq!(buffer(&RAM, FW, 8, usize::MAX - 3, 0), None, "wraps");
        assert_eq!(buffer(&RAM, FW, 8, 0x1000_0000, 0), None, "a device");
    }
}
