//! Building the bare-metal binaries and turning ELF files into flat images.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::provision::{GUEST_TARGET, HYPERVISOR_TARGET};
use crate::util::{root, run_status};

/// Where cargo puts release builds for `target`.
pub fn target_dir(target: &str) -> PathBuf {
    root().join("target").join(target).join("release")
}

/// Builds bare-metal binary `bin` of package `package` (release) for `target` and returns
/// its ELF path.
pub fn build(package: &str, bin: &str, target: &str) -> Result<PathBuf> {
    let args =
        ["build", "--quiet", "--release", "--target", target, "--package", package, "--bin", bin];
    run_status(Command::new(env!("CARGO")).current_dir(root()).args(args))
        .with_context(|| format!("building {package} failed"))?;
    Ok(target_dir(target).join(bin))
}

/// The hypervisor ELF (QEMU loads its segments at their physical addresses).
pub fn hypervisor() -> Result<PathBuf> {
    build("hypervisor", "hypocaust", HYPERVISOR_TARGET)
}

/// hypocaust's M-mode firmware (an ELF: QEMU's `-bios` loads its segments).
pub fn firmware() -> Result<PathBuf> {
    build("firmware", "hypocaust-firmware", HYPERVISOR_TARGET)
}

/// The guest test kernel as a flat Image (what `-kernel` and hypocaust load).
pub fn testkernel() -> Result<PathBuf> {
    let elf = build("testkernel", "testkernel", GUEST_TARGET)?;
    let image = elf.with_extension("bin");
    elf_to_image(&elf, &image)?;
    Ok(image)
}

/// smpcheck, the Linux guest's SMP checks (guests/smpcheck): a static riscv64 Linux
/// executable built for the bare-metal `riscv64imac` target (it needs no libc; without F/D
/// it never touches the FP registers), which goes into the initramfs as `/bin/smpcheck`.
pub fn smpcheck() -> Result<PathBuf> {
    build("smpcheck", "smpcheck", HYPERVISOR_TARGET)
}

/// Writes the loadable bytes of `elf` as a flat image starting at its lowest physical
/// address (zero-filling gaps), as `objcopy -O binary` does.
pub fn elf_to_image(elf: &Path, image: &Path) -> Result<()> {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = ElfFile64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF file", elf.display()))?;
    let endian = file.endian();
    let headers = file.elf_header().program_headers(endian, &*data).context("program headers")?;
    let mut segments = Vec::new();
    for ph in headers {
        if ph.p_type(endian) != object::elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let bytes = ph.data(endian, &*data).map_err(|()| anyhow::anyhow!("truncated segment"))?;
        segments.push((ph.p_paddr(endian), bytes));
    }
    let Some(base) = segments.iter().map(|s| s.0).min() else {
        bail!("{} has no loadable bytes", elf.display());
    };
    let end = segments.iter().map(|(a, b)| a + b.len() as u64).max().unwrap_or(base);
    let mut out = vec![0u8; usize::try_from(end - base)?];
    for (addr, bytes) in segments {
        let at = (addr - base) as usize;
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }
    std::fs::write(image, out).with_context(|| format!("writing {}", image.display()))
}

/// A guest for a bundle.
#[derive(Clone, Debug, Default)]
pub struct GuestFiles {
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub bootargs: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Bit `i`: the host's virtio-mmio slot `i` is passed through to the guest.
    pub virtio_slots: u64,
    /// Bit `i`: its vCPUs may run on host hart index `i`; 0: on any.
    pub harts: u64,
    /// `(virtio slot, name)` of the devices a configuration named.
    pub device_names: Vec<(usize, String)>,
}

/// Packs guests into a bundle file (hypocaust's initrd) at `out`.
pub fn bundle(guests: &[GuestFiles], out: &Path) -> Result<()> {
    let specs = guests
        .iter()
        .map(|g| -> Result<bundle::writer::GuestSpec> {
            let read = |p: &Path| {
                std::fs::read(p).with_context(|| format!("reading guest image {}", p.display()))
            };
            Ok(bundle::writer::GuestSpec {
                name: g.name.clone(),
                memory_mib: g.memory_mib,
                vcpus: g.vcpus,

                kernel: read(&g.kernel)?,
                initrd: g.initrd.as_deref().map(read).transpose()?,
                bootargs: g.bootargs.clone(),
                virtio_slots: g.virtio_slots,
                harts: g.harts,
                device_names: g.device_names.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let data = bundle::writer::build(&specs, seed()).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, data).with_context(|| format!("writing {}", out.display()))
}

/// Fresh random bytes for a bundle's seed (the host's /dev/urandom; without it, the clock
/// and the process ID, hashed).
fn seed() -> [u8; bundle::SEED_LEN] {
    let mut seed = [0u8; bundle::SEED_LEN];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
    if random.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let word = crate::util::fnv1a(
                &[now.to_le_bytes(), (std::process::id() as u64 + i as u64).to_le_bytes()].concat(),
            );
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }
    seed
}

/// Sectors of the suite's disk (1 MiB).
pub const DISK_SECTORS: u64 = 2048;

/// Word `k` (0..64) of sector `sector` of the suite's disk: every 512-byte sector is 64
/// little-endian 64-bit words `0xD15C_0000_0000_0000 | sector << 16 | k`. The test kernel
/// (guests/testkernel/src/tests/virtio.rs) checks the same pattern.
pub fn disk_word(sector: u64, k: u64) -> u64 {
    0xD15C_0000_0000_0000 | sector << 16 | k
}

/// Writes a fresh suite disk (raw, [`DISK_SECTORS`] sectors of the [`disk_word`] pattern)
/// to `path`, replacing what was there.
pub fn suite_disk(path: &Path) -> Result<()> {
    let mut data = Vec::with_capacity(DISK_SECTORS as usize * 512);
    for sector in 0..DISK_SECTORS {
        for k in 0..64 {
            data.extend_from_slice(&disk_word(sector, k).to_le_bytes());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_pattern() {
        let path = std::env::temp_dir().join(format!("xtask-disk-{}.img", std::process::id()));
        suite_disk(&path).expect("writes the disk");
        let data = std::fs::read(&path).expect("reads it back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(data.len(), 1 << 20);
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        assert_eq!(word(0), 0xD15C_0000_0000_0000);
        assert_eq!(word(8), 0xD15C_0000_0000_0001);
        assert_eq!(word(512), 0xD15C_0000_0001_0000);
        assert_eq!(word(2047 * 512 + 63 * 8), 0xD15C_0000_07FF_003F);
    }
}
