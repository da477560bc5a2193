//! Kernel image formats: the Linux RISC-V `Image` (with its header), ELF64, and raw
//! binaries. [`plan`] says which bytes go where and where execution starts.

use alloc::vec::Vec;
use core::fmt;

/// Offset of `magic2` ("RSC\x05") in the Image header.
const IMAGE_MAGIC2_AT: usize = 56;
const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";
/// Where raw binaries (and Images whose header has no offset) are placed above RAM start.
pub const DEFAULT_TEXT_OFFSET: u64 = 0x20_0000;

/// The kind of image recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    LinuxImage,
    Elf,
    Raw,
}

/// One run of bytes to copy into guest memory; `mem_size - data.len()` bytes of zeros
/// follow (bss).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub gpa: u64,
    pub data: &'a [u8],
    pub mem_size: u64,
}

/// How to load an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    pub kind: Kind,
    pub entry: u64,
    pub segments: Vec<Segment<'a>>,
}

impl Plan<'_> {
    /// First guest-physical address past everything the image occupies.
    pub fn end(&self) -> u64 {
        self.segments.iter().map(|s| s.gpa + s.mem_size).max().unwrap_or(self.entry)
    }
}

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    Empty,
    /// Some part would land outside guest RAM.
    DoesNotFit {
        gpa: u64,
        size: u64,
    },
    /// An ELF file that is not 64-bit little-endian RISC-V, or is malformed.
    BadElf(&'static str),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the kernel image is empty"),
            Self::DoesNotFit { gpa, size } => {
                write!(f, "the kernel needs {size:#x} bytes at {gpa:#x}, outside the guest's RAM")
            }
            Self::BadElf(why) => write!(f, "unusable ELF kernel: {why}"),
        }
    }
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Works out how to load `image` into RAM `[ram_base, ram_base + ram_size)`.
pub fn plan(image: &[u8], ram_base: u64, ram_size: u64) -> Result<Plan<'_>, ImageError> {
    if image.is_empty() {
        return Err(ImageError::Empty);
    }
    let plan = if image.starts_with(b"\x7fELF") {
        elf(image)?
    } else if image.get(IMAGE_MAGIC2_AT..IMAGE_MAGIC2_AT + 4) == Some(IMAGE_MAGIC2) {
        let text_offset = u64_at(image, 8).unwrap_or(0);
        let image_size = u64_at(image, 16).unwrap_or(0);
        let gpa = ram_base
            .checked_add(text_offset)
            .ok_or(ImageError::DoesNotFit { gpa: u64::MAX, size: 0 })?;
        // image_size counts bss; 0 means "unknown" (old kernels): the file size then.
        let mem_size = image_size.max(image.len() as u64);
        Plan {
            kind: Kind::LinuxImage,
            entry: gpa,
            segments: Vec::from([Segment { gpa, data: image, mem_size }]),
        }
    } else {
        let gpa = ram_base + DEFAULT_TEXT_OFFSET;
        Plan {
            kind: Kind::Raw,
            entry: gpa,
            segments: Vec::from([Segment { gpa, data: image, mem_size: image.len() as u64 }]),
        }
    };
    let ram_end = ram_base + ram_size;
    for s in &plan.segments {
        let fits =
            s.gpa >= ram_base && s.gpa.checked_add(s.mem_size).is_some_and(|end| end <= ram_end);
        if !fits {
            return Err(ImageError::DoesNotFit { gpa: s.gpa, size: s.mem_size });
        }
    }
    if !(ram_base..ram_end).contains(&plan.entry) {
        return Err(ImageError::DoesNotFit { gpa: plan.entry, size: 0 });
    }
    Ok(plan)
}

const PT_LOAD: u32 = 1;
const EM_RISCV: u16 = 243;

fn elf(d: &[u8]) -> Result<Plan<'_>, ImageError> {
    let bad = ImageError::BadElf;
    if d.get(4) != Some(&2) || d.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian file"));
    }
    if u16_at(d, 18) != Some(EM_RISCV) {
        return Err(bad("not a RISC-V file"));
    }
    let entry = u64_at(d, 24).ok_or(bad("truncated header"))?;
    let phoff = u64_at(d, 32).ok_or(bad("truncated header"))? as usize;
    let phentsize = u16_at(d, 54).ok_or(bad("truncated header"))? as usize;
    let phnum = u16_at(d, 56).ok_or(bad("truncated header"))? as usize;
    if phentsize < 56 {
        return Err(bad("program headers too small"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i * phentsize).ok_or(bad("program header out of range"))?;
        if u32_at(d, ph) != Some(PT_LOAD) {
            continue;
        }
        let field = |off| u64_at(d, ph + off).ok_or(bad("program header out of range"));
        let (offset, paddr, filesz, memsz) = (field(8)?, field(24)?, field(32)?, field(40)?);
        if memsz == 0 {
            continue;
        }
        let end = offset.checked_add(filesz).ok_or(bad("segment out of range"))?;
        let data = d.get(offset as usize..end as usize).ok_or(bad("segment out of range"))?;
        if filesz > memsz {
            return Err(bad("segment file size exceeds its memory size"));
        }
        segments.push(Segment { gpa: paddr, data, mem_size: memsz });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segments"));
    }
    Ok(Plan { kind: Kind::Elf, entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;
    const SIZE: u64 = 64 << 20;

    fn linux_image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[48..56].copy_from_slice(b"RISCV\0\0\0");
        v[56..60].copy_from_slice(IMAGE_MAGIC2);
        v
    }

    #[test]
    fn linux_image_header_is_honoured() {
        let img = linux_image(0x20_0000, 0x30_0000, 4096);
        let p = plan(&img, BASE, SIZE).unwrap();
        assert_eq!(p.kind, Kind::LinuxImage);
        assert_eq!(p.entry, 0x8020_0000);
        assert_eq!(p.segments[0].mem_size, 0x30_0000, "bss counted");
        assert_eq!(p.end(), 0x8050_0000);
        let zero = linux_image(0x40_0000, 0, 8192);
        assert_eq!(plan(&zero, BASE, SIZE).unwrap().segments[0].mem_size, 8192);
        let huge = linux_image(0x20_0000, SIZE, 4096);
        assert!(matches!(plan(&huge, BASE, SIZE), Err(ImageError::DoesNotFit { .. })));
        let wraps = linux_image(u64::MAX, 0, 4096);
        assert!(plan(&wraps, BASE, SIZE).is_err());
    }

    #[test]
    fn raw_binaries_go_at_the_default_offset() {
        let p = plan(&[0x13, 0, 0, 0], BASE, SIZE).unwrap();
        assert_eq!((p.kind, p.entry), (Kind::Raw, 0x8020_0000));
        assert_eq!(plan(&[], BASE, SIZE), Err(ImageError::Empty));
    }

    fn elf_file(paddr: u64, entry: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let mut v = alloc::vec![0u8; 0x200];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[18..20].copy_from_slice(&EM_RISCV.to_le_bytes());
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&64u64.to_le_bytes());
        v[54..56].copy_from_slice(&56u16.to_le_bytes());
        v[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        v[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        v[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        v[ph + 16..ph + 24].copy_from_slice(&0xffff_ffff_8000_0000u64.to_le_bytes()); // vaddr
        v[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        v[ph + 32..ph + 40].copy_from_slice(&filesz.to_le_bytes());
        v[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        v
    }

    #[test]
    fn elf_segments_load_at_their_physical_addresses() {
        let f = elf_file(0x8040_0000, 0x8040_0000, 0x100, 0x2000);
        let p = plan(&f, BASE, SIZE).unwrap();
        assert_eq!((p.kind, p.entry), (Kind::Elf, 0x8040_0000));
        assert_eq!(
            p.segments,
            [Segment { gpa: 0x8040_0000, data: &f[0x100..0x200], mem_size: 0x2000 }]
        );
        assert!(plan(&elf_file(0x1000, 0x1000, 0x100, 0x100), BASE, SIZE).is_err());
        assert!(
            plan(&elf_file(0x8040_0000, 0x9000_0000, 0x100, 0x100), BASE, SIZE).is_err(),
            "entry outside RAM"
        );
        assert!(matches!(
            plan(&elf_file(0x8040_0000, 0x8040_0000, 0x1000, 0x1000), BASE, SIZE),
            Err(ImageError::BadElf(_))
        ));
        let mut arm = elf_file(0x8040_0000, 0x8040_0000, 0x100, 0x100);
        arm[18] = 183;
        assert_eq!(plan(&arm, BASE, SIZE), Err(ImageError::BadElf("not a RISC-V file")));
    }
}
