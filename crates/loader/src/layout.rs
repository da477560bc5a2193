//! Where the initrd and the device tree go in guest memory (QEMU's rules, so a kernel
//! finds them where it would natively).

use core::fmt;

/// The device tree goes at the top of RAM, aligned down to this.
pub const DTB_ALIGN: u64 = 2 << 20;

/// Placement of the boot data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Guest-physical address of the device tree.
    pub dtb: u64,
    /// Guest-physical start of the initrd, if there is one.
    pub initrd: Option<u64>,
}

/// The guest's RAM is too small for what it must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooSmall {
    pub needed: u64,
}

impl fmt::Display for TooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the guest's RAM is too small for its kernel, initrd and device tree ({} KiB short)",
            self.needed >> 10
        )
    }
}

/// Places a device tree of `dtb_len` bytes at the top of RAM and an initrd of
/// `initrd_len` bytes `min(RAM / 2, 128 MiB)` above the kernel entry (or, if it does not fit
/// there, just below the device tree), never over the kernel (`[entry, kernel_end)`).
pub fn place(
    ram_base: u64,
    ram_size: u64,
    entry: u64,
    kernel_end: u64,
    initrd_len: Option<u64>,
    dtb_len: u64,
) -> Result<Layout, TooSmall> {
    let ram_end = ram_base + ram_size;
    let dtb = ram_end.checked_sub(dtb_len).map(|a| a & !(DTB_ALIGN - 1)).unwrap_or(0);
    if dtb < kernel_end {
        return Err(TooSmall { needed: kernel_end - dtb });
    }
    let initrd = match initrd_len {
        None | Some(0) => None,
        Some(len) => {
            let preferred =
                (entry + (ram_size / 2).min(128 << 20)).next_multiple_of(4096).max(kernel_end);
            let start = if preferred + len <= dtb {
                preferred
            } else {
                match dtb.checked_sub(len) {
                    Some(below) if below & !0xfff >= kernel_end => below & !0xfff,
                    _ => {
                        return Err(TooSmall { needed: (kernel_end + len).saturating_sub(dtb) });
                    }
                }
            };
            Some(start)
        }
    };
    Ok(Layout { dtb, initrd })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;

    #[test]
    fn like_qemu() {
        // 256 MiB: device tree at 0x8fe00000, initrd 128 MiB above the entry.
        let l = place(BASE, 256 << 20, 0x8020_0000, 0x8100_0000, Some(1 << 20), 0x1000).unwrap();
        assert_eq!(l, Layout { dtb: 0x8fe0_0000, initrd: Some(0x8820_0000) });
        // 64 MiB: halfway.
        let l = place(BASE, 64 << 20, 0x8020_0000, 0x8030_0000, Some(4096), 0x1000).unwrap();
        assert_eq!(l.initrd, Some(0x8220_0000));
        assert_eq!(
            place(BASE, 64 << 20, 0x8020_0000, 0x8030_0000, None, 0x1000).unwrap().initrd,
            None
        );
    }

    #[test]
    fn big_initrds_move_below_the_device_tree() {
        // 126 MiB does not fit between 0x8820_0000 and the tree at 0x8fe0_0000.
        let l = place(BASE, 256 << 20, 0x8020_0000, 0x8100_0000, Some(126 << 20), 0x1000).unwrap();
        assert_eq!(l.initrd, Some(0x8fe0_0000 - (126 << 20)));
        assert!(place(BASE, 256 << 20, 0x8020_0000, 0x8100_0000, Some(250 << 20), 0x1000).is_err());
        assert!(
            place(BASE, 4 << 20, 0x8020_0000, 0x8040_0000, None, 0x1000).is_err(),
            "no room for the tree"
        );
    }
}
