//! The configuration `cargo xtask run --config FILE` boots (docs/config.md): a TOML file that
//! describes the QEMU machine, the guests and the virtio devices each of them owns. This
//! module owns the format, its validation (every problem names the field and the fix), the
//! virtio slot each device lands in, and turning a configuration into a bundle and a QEMU
//! machine. `cargo xtask run`'s flags make a one-guest [`Config`] and boot it the same way.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::artifacts::{self, GuestFiles};
use crate::linux::{self, LinuxImages};
use crate::qemu::{self, Board, Firmware, Machine};

/// virtio-mmio slots of QEMU's `virt` machine.
pub const VIRTIO_SLOTS: usize = 8;
/// The most vCPUs a guest may have.
pub const MAX_VCPUS: u32 = 8;
/// The least RAM a guest may have, in MiB.
pub const MIN_GUEST_MIB: u32 = 16;
/// Guest RAM when the configuration gives none, in MiB.
pub const DEFAULT_GUEST_MIB: u32 = 256;
/// RAM of the QEMU machine when the configuration gives none, in MiB.
pub const DEFAULT_MACHINE_MIB: u64 = 1024;
/// RAM hypocaust keeps for itself (image, heap, stacks), in MiB.
pub const HYPOCAUST_MIB: u64 = 64;
/// Shadow page tables take up to 1/this of the guests' RAM.
pub const SHADOW_SHARE: u64 = 32;
/// The most harts a machine may have: a guest's hart affinity is a 64-bit mask.
pub const MAX_HARTS: usize = 64;
/// Size of the zeroed image a virtio-blk device without `image` gets, in MiB.
pub const BLANK_DISK_MIB: u64 = 16;
/// The keyword for the Debian Linux guest (`kernel`) and its disk (`image`).
pub const DEBIAN: &str = "debian";
/// The keyword for the guest test suite's kernel (`kernel`) and its disk (`image`).
pub const TESTKERNEL: &str = "testkernel";

/// A whole configuration: the machine, its guests and their devices.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub machine: MachineConfig,
    #[serde(default, rename = "guest")]
    pub guests: Vec<GuestConfig>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    /// Where relative paths start: the file's directory (the working directory for flags).
    #[serde(skip)]
    pub base: PathBuf,
    #[serde(skip)]
    origin: Origin,
}

/// `[machine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// QEMU's `-smp`.
    pub harts: usize,
    /// QEMU's `-m`, in MiB.
    pub memory: u64,
    pub firmware: Firmware,
    /// hypocaust's time slice where vCPUs share a hart, in milliseconds (None: its
    /// default).
    pub slice_ms: Option<u64>,
    /// QEMU's `-cpu` (None: the board's default; `rv64,h=false` on `virt`); e.g.
    /// `sifive-u54` for an Sv39-only hart.
    pub cpu: Option<String>,
    /// The QEMU board (`virt` or `sifive_u`).
    pub board: Board,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            harts: 1,
            memory: DEFAULT_MACHINE_MIB,
            firmware: Firmware::default(),
            slice_ms: None,
            cpu: None,
            board: Board::Virt,
        }
    }
}

/// One `[[guest]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub name: String,
    /// [`DEBIAN`], [`TESTKERNEL`] or a path (see [`Kernel`]).
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub bootargs: String,
    /// RAM in MiB.
    #[serde(default = "default_guest_mib")]
    pub memory: u32,
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Host hart indexes its vCPUs may run on; None: any.
    #[serde(default)]
    pub harts: Option<Vec<usize>>,
    /// Names of the `[[device]]`s it owns.
    #[serde(default)]
    pub devices: Vec<String>,
}

fn default_guest_mib() -> u32 {
    DEFAULT_GUEST_MIB
}

fn one() -> u32 {
    1
}

/// One `[[device]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    /// virtio-blk: [`DEBIAN`], [`TESTKERNEL`] or a path (see [`Image`]).
    #[serde(default)]
    pub image: Option<String>,
    /// virtio-net: the host port forwarded to the guest's port 22.
    #[serde(default)]
    pub ssh: Option<u16>,
}

/// A device's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DeviceKind {
    #[serde(rename = "virtio-blk")]
    Blk,
    #[serde(rename = "virtio-net")]
    Net,
}

/// What a guest's `kernel` stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The Debian Linux guest: its kernel and xtask's initramfs.
    Debian,
    /// The guest test suite's kernel.
    Suite,
    /// A Linux Image, ELF file or raw binary.
    File(PathBuf),
}

/// What a virtio-blk device's `image` stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// A fresh copy of the Debian guest's disk.
    Debian,
    /// A fresh copy of the test suite's disk (the sector pattern its tests check).
    Suite,
    /// A fresh zeroed image of [`BLANK_DISK_MIB`].
    Blank,
    /// A raw image, used as it is.
    File(PathBuf),
}

/// Where a configuration came from, to say where a problem is.
#[derive(Clone, Debug, Default)]
enum Origin {
    /// The flags of `cargo xtask run`.
    #[default]
    Flags,
    /// A file, with every field's line.
    File { path: PathBuf, lines: Vec<(String, usize)> },
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field, as `guest[1].memory` (empty: the whole file).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into() });
    }
}

/// A configuration that cannot be booted, and why.
#[derive(Debug)]
pub struct Invalid {
    origin: Origin,
    pub problems: Vec<Problem>,
}

impl Invalid {
    fn new(origin: &Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        let problems = vec![Problem { field: field.into(), message: message.into() }];
        Self { origin: origin.clone(), problems }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        let plural = if n == 1 { "" } else { "s" };
        match &self.origin {
            Origin::Flags => write!(
                f,
                "the flags of `cargo xtask run` make a configuration with {n} problem{plural}"
            )?,
            Origin::File { path, .. } => write!(f, "{}: {n} problem{plural}", path.display())?,
        }
        for p in &self.problems {
            write!(f, "\n  ")?;
            match &self.origin {
                Origin::Flags => {
                    let flag = flag_of(&p.field).map(|f| format!(" ({f})")).unwrap_or_default();
                    write!(f, "{}{flag}: ", p.field)?;
                }
                Origin::File { path, lines } => {
                    write!(f, "{}", path.display())?;
                    if let Some((_, line)) = lines.iter().find(|(field, _)| *field == p.field) {
                        write!(f, ":{line}")?;
                    }
                    if !p.field.is_empty() {
                        write!(f, ": {}", p.field)?;
                    }
                    write!(f, ": ")?;
                }
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// The flag of `cargo xtask run` that set `field` in a configuration made from flags.
fn flag_of(field: &str) -> Option<&'static str> {
    let field = field.split_once(']').map_or(field, |(_, rest)| rest);
    Some(match field {
        "machine.harts" | ".vcpus" => "--smp",
        "machine.memory" => "--memory",
        "machine.cpu" => "--cpu",
        "machine.board" => "--machine",
        "machine.firmware" => "--firmware",
        ".memory" => "--guest-memory",
        ".kernel" => "--kernel",
        ".initrd" => "--initrd",
        ".ssh" => "--ssh-port",
        _ => return None,
    })
}

/// The virtio-mmio slot (in address order) of the `index`-th device (0-based): QEMU fills
/// `virt`'s slots from the highest address down, in the order of the `-device` arguments.
pub fn slot(index: usize) -> usize {
    VIRTIO_SLOTS - 1 - index
}

/// The base address of `virt`'s virtio-mmio slot `slot`.
pub fn slot_address(slot: usize) -> u64 {
    0x1000_1000 + slot as u64 * 0x1000
}

impl Config {
    /// A configuration made from `cargo xtask run`'s flags (relative paths start at the
    /// working directory).
    pub fn from_flags(
        machine: MachineConfig,
        guests: Vec<GuestConfig>,
        devices: Vec<DeviceConfig>,
    ) -> Self {
        Self { machine, guests, devices, base: PathBuf::new(), origin: Origin::Flags }
    }

    /// Reads and parses the file at `path` (not validated: see [`Config::validate`]).
    pub fn load(path: &Path) -> Result<Self, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let origin = Origin::File { path: path.to_path_buf(), lines: Vec::new() };
            Invalid::new(&origin, "", format!("cannot read it: {e}"))
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`, the file at `path` (not validated: see [`Config::validate`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, Invalid> {
        let mut origin = Origin::File { path: path.to_path_buf(), lines: Vec::new() };
        let line = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
        let fields = match toml::de::DeTable::parse(text) {
            Ok(table) => {
                let mut fields = Vec::new();
                index_table(table.get_ref(), "", &mut fields);
                fields
            }
            Err(e) => {
                let at = e.span().map(|s| format!(" (line {})", line(s.start))).unwrap_or_default();
                let message = format!("not valid TOML{at}: {}", e.message().trim_end());
                return Err(Invalid::new(&origin, "", message));
            }
        };
        let lines = fields
            .iter()
            .map(|f| (f.path.clone(), line(f.key.as_ref().unwrap_or(&f.value).start)))
            .collect();
        origin = Origin::File { path: path.to_path_buf(), lines };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let field = e.span().map(|s| field_at(&fields, s.start)).unwrap_or_default();
            Invalid::new(&origin, field, e.message().trim_end())
        })?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Absolute, so that the QEMU command printed works from anywhere.
        config.base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        config.origin = origin;
        Ok(config)
    }

    /// `path` from the configuration, relative to its base.
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base.join(path) }
    }

    /// What guest `g`'s `kernel` stands for.
    pub fn kernel(&self, g: &GuestConfig) -> Kernel {
        match g.kernel.as_str() {
            DEBIAN => Kernel::Debian,
            TESTKERNEL => Kernel::Suite,
            path => Kernel::File(self.resolve(Path::new(path))),
        }
    }

    /// What device `d`'s `image` stands for (virtio-blk devices).
    pub fn image(&self, d: &DeviceConfig) -> Image {
        match d.image.as_deref() {
            None => Image::Blank,
            Some(DEBIAN) => Image::Debian,
            Some(TESTKERNEL) => Image::Suite,
            Some(path) => Image::File(self.resolve(Path::new(path))),
        }
    }

    /// Every device's virtio slot, in `[[device]]` order.
    pub fn slots(&self) -> Vec<usize> {
        (0..self.devices.len().min(VIRTIO_SLOTS)).map(slot).collect()
    }

    /// The index of the guest that owns device `d`.
    pub fn owner(&self, d: &DeviceConfig) -> Option<usize> {
        self.guests.iter().position(|g| g.devices.contains(&d.name))
    }

    /// Checks everything that can be checked without building anything: each problem names
    /// its field and the fix. `native`: the one guest boots directly on QEMU (no memory for
    /// hypocaust needed).
    pub fn validate(&self, native: bool) -> Result<(), Invalid> {
        let mut p = Problems::default();
        let harts = self.machine.harts;
        if harts == 0 || harts > MAX_HARTS {
            p.add("machine.harts", format!("{harts} harts; give 1 to {MAX_HARTS}"));
        }
        if self.guests.is_empty() {
            p.add("guest", "no [[guest]]; add one (docs/config.md)");
        }
        if !native && let Err(e) = self.machine.board.check_firmware(self.machine.firmware) {
            p.add("machine.firmware", e.to_string());
        }
        if self.machine.board == Board::SifiveU && !self.devices.is_empty() {
            p.add(
                "device",
                "QEMU's sifive_u has no virtio-mmio slots for devices; remove the [[device]]s \
                 (the Debian guest boots from its initramfs there)",
            );
        }
        if self.machine.board == Board::SifiveU && harts > 4 {
            p.add("machine.harts", "sifive_u has at most 4 U54 harts; give 1 to 4");
        }
        if let Some(ms) = self.machine.slice_ms
            && !(1..=1000).contains(&ms)
        {
            p.add("machine.slice_ms", format!("{ms} ms; give 1 to 1000"));
        }
        if native && self.guests.len() > 1 {
            p.add("guest", "a native run boots one guest; give only one");
        }
        for (i, g) in self.guests.iter().enumerate() {
            self.check_guest(i, g, &mut p);
        }
        if self.devices.len() > VIRTIO_SLOTS {
            p.add(
                format!("device[{VIRTIO_SLOTS}]"),
                format!(
                    "{} devices, but the virt machine has {VIRTIO_SLOTS} virtio-mmio slots; \
                     remove {}",
                    self.devices.len(),
                    self.devices.len() - VIRTIO_SLOTS
                ),
            );
        }
        for (j, d) in self.devices.iter().enumerate() {
            self.check_device(j, d, &mut p);
        }
        if !native {
            self.check_memory(&mut p);
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid { origin: self.origin.clone(), problems: p.0 })
        }
    }

    fn check_guest(&self, i: usize, g: &GuestConfig, p: &mut Problems) {
        let at = |field: &str| format!("guest[{i}].{field}");
        if let Some(why) = bad_name(&g.name, false) {
            p.add(at("name"), why);
        } else if let Some(j) = self.guests[..i].iter().position(|o| o.name == g.name) {
            let why = format!("{:?} is guest[{j}]'s name too; give each guest its own", g.name);
            p.add(at("name"), why);
        }
        let kernel = self.kernel(g);
        if let Kernel::File(path) = &kernel {
            if let Some(why) = self.missing(path) {
                p.add(at("kernel"), why);
            } else if let Some(why) = unbootable(path, g.memory) {
                p.add(at("kernel"), why);
            }
        }
        match (&g.initrd, kernel) {
            (Some(_), Kernel::Debian) => {
                p.add(at("initrd"), "kernel = \"debian\" brings its own initramfs; remove initrd")
            }
            (Some(initrd), _) => {
                if let Some(why) = self.missing(&self.resolve(initrd)) {
                    p.add(at("initrd"), why);
                }
            }
            (None, _) => {}
        }
        if g.memory < MIN_GUEST_MIB {
            p.add(at("memory"), format!("{} MiB; give at least {MIN_GUEST_MIB}", g.memory));
        }
        if g.vcpus == 0 || g.vcpus > MAX_VCPUS {
            p.add(at("vcpus"), format!("{} vCPUs; give 1 to {MAX_VCPUS}", g.vcpus));
        }
        if let Some(harts) = &g.harts {
            if harts.is_empty() {
                p.add(at("harts"), "an empty list; omit harts to let the vCPUs run on any hart");
            }
            let machine = self.machine.harts;
            for (k, &h) in harts.iter().enumerate() {
                let field = at(&format!("harts[{k}]"));
                if h >= machine {
                    p.add(
                        field,
                        format!(
                            "hart {h} does not exist: machine.harts is {machine} (indexes 0 to \
                             {}); raise machine.harts or drop it",
                            machine.saturating_sub(1)
                        ),
                    );
                } else if harts[..k].contains(&h) {
                    p.add(field, format!("hart {h} is listed twice; list it once"));
                }
            }
        }
        for (k, name) in g.devices.iter().enumerate() {
            let field = at(&format!("devices[{k}]"));
            if !self.devices.iter().any(|d| d.name == *name) {
                p.add(field, format!("no [[device]] is named {name:?}; add one or fix the name"));
            } else if g.devices[..k].contains(name) {
                p.add(field, format!("{name:?} is listed twice; list it once"));
            } else if let Some(j) = self.guests[..i].iter().position(|o| o.devices.contains(name)) {
                p.add(
                    field,
                    format!(
                        "overlapping devices: {name:?} is guest[{j}]'s ({:?}) too; a device \
                         belongs to one guest: give this one a [[device]] of its own",
                        self.guests[j].name
                    ),
                );
            }
        }
    }

    fn check_device(&self, j: usize, d: &DeviceConfig, p: &mut Problems) {
        let at = |field: &str| format!("device[{j}].{field}");
        let earlier = &self.devices[..j];
        if let Some(why) = bad_name(&d.name, true) {
            p.add(at("name"), why);
        } else if let Some(k) = earlier.iter().position(|o| o.name == d.name) {
            let why = format!("{:?} is device[{k}]'s name too; give each device its own", d.name);
            p.add(at("name"), why);
        }
        match d.kind {
            DeviceKind::Blk => {
                if d.ssh.is_some() {
                    p.add(at("ssh"), "only a virtio-net device forwards ssh; remove it");
                }
                if let Image::File(path) = self.image(d) {
                    let same = |o: &DeviceConfig| {
                        o.kind == DeviceKind::Blk && self.image(o) == Image::File(path.clone())
                    };
                    if let Some(why) = self.missing(&path) {
                        p.add(at("image"), why);
                    } else if let Some(k) = earlier.iter().position(same) {
                        p.add(
                            at("image"),
                            format!(
                                "device[{k}] uses this image too; QEMU opens an image for one \
                                 device: give each a copy"
                            ),
                        );
                    }
                }
            }
            DeviceKind::Net => {
                if d.image.is_some() {
                    p.add(at("image"), "a virtio-net device has no image; remove it");
                }
                if d.ssh == Some(0) {
                    p.add(at("ssh"), "port 0; give a port from 1 to 65535");
                } else if let Some(k) =
                    earlier.iter().position(|o| d.ssh.is_some() && o.ssh == d.ssh)
                {
                    let why = format!("device[{k}] forwards this port too; give each its own");
                    p.add(at("ssh"), why);
                }
            }
        }
        if self.owner(d).is_none() {
            p.add(
                format!("device[{j}]"),
                format!(
                    "{:?} is owned by no guest; add it to a guest's devices or remove it",
                    d.name
                ),
            );
        }
    }

    /// The machine's RAM must hold the guests', their shadow page tables and hypocaust.
    fn check_memory(&self, p: &mut Problems) {
        let guests: u64 = self.guests.iter().map(|g| u64::from(g.memory)).sum();
        let shadow = guests.div_ceil(SHADOW_SHARE);
        let needed = guests + shadow + HYPOCAUST_MIB;
        if needed > self.machine.memory {
            p.add(
                "machine.memory",
                format!(
                    "{} MiB cannot hold {guests} MiB of guest RAM + {shadow} MiB of shadow page \
                     tables (1/{SHADOW_SHARE}) + {HYPOCAUST_MIB} MiB for hypocaust = {needed} \
                     MiB; raise it to at least {needed} or give the guests less",
                    self.machine.memory
                ),
            );
        }
    }

    /// Why `path` (a kernel, initrd or image) cannot be used, if it cannot.
    fn missing(&self, path: &Path) -> Option<String> {
        let relative = match &self.origin {
            Origin::File { .. } => "relative paths start at the configuration's directory",
            Origin::Flags => "relative paths start at the working directory",
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some(format!("{} is not a file; name a file", path.display())),
            Err(e) => {
                Some(format!("cannot use {}: {e} ({relative}); fix the path", path.display()))
            }
        }
    }

    /// Checks that every port to forward is free now (just before QEMU binds it).
    pub fn check_ports(&self) -> Result<(), Invalid> {
        let problems: Vec<Problem> = self
            .devices
            .iter()
            .enumerate()
            .filter_map(|(j, d)| {
                let port = d.ssh?;
                std::net::TcpListener::bind(("127.0.0.1", port)).err().map(|e| Problem {
                    field: format!("device[{j}].ssh"),
                    message: format!("port {port} on 127.0.0.1 cannot be had ({e}); pick another"),
                })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Invalid { origin: self.origin.clone(), problems })
        }
    }

    /// Whether anything uses the Debian guest's images.
    fn needs_debian(&self) -> bool {
        self.guests.iter().any(|g| self.kernel(g) == Kernel::Debian)
            || self
                .devices
                .iter()
                .any(|d| d.kind == DeviceKind::Blk && self.image(d) == Image::Debian)
    }

    /// The bundle records of the guests (a valid configuration), their keywords resolved
    /// by `images`.
    pub fn guest_files(&self, images: &Images) -> Result<Vec<GuestFiles>> {
        let slots = self.slots();
        self.guests
            .iter()
            .map(|g| {
                let (kernel, initrd, bootargs) = match self.kernel(g) {
                    Kernel::Debian => {
                        let linux = images.debian()?;
                        (
                            linux.kernel.clone(),
                            Some(linux.initramfs.clone()),
                            linux::run::bootargs(false, self.machine.board, &g.bootargs),
                        )
                    }
                    Kernel::Suite => (images.testkernel()?, None, g.bootargs.clone()),
                    Kernel::File(path) => {
                        (path, g.initrd.as_deref().map(|p| self.resolve(p)), g.bootargs.clone())
                    }
                };
                let owned: Vec<(usize, String)> = self
                    .devices
                    .iter()
                    .zip(&slots)
                    .filter(|(d, _)| g.devices.contains(&d.name))
                    .map(|(d, &slot)| (slot, d.name.clone()))
                    .collect();
                Ok(GuestFiles {
                    name: g.name.clone(),
                    kernel,
                    initrd,
                    bootargs,
                    memory_mib: g.memory,
                    vcpus: g.vcpus,
                    virtio_slots: owned.iter().fold(0, |mask, (slot, _)| mask | 1 << slot),
                    harts: g.harts.iter().flatten().fold(0, |mask, &h| mask | 1 << h),
                    device_names: owned,
                })
            })
            .collect()
    }

    /// QEMU's arguments for the devices, in `[[device]]` order, on `disks` (each
    /// virtio-blk device's image).
    pub fn device_args(&self, disks: &[Option<PathBuf>]) -> Result<Vec<String>> {
        let mut args = Vec::new();
        for (d, disk) in self.devices.iter().zip(disks) {
            match (d.kind, disk) {
                (DeviceKind::Blk, Some(disk)) => args.extend(qemu::virtio_blk(&d.name, disk)),
                (DeviceKind::Blk, None) => bail!("device {:?} has no image", d.name),
                (DeviceKind::Net, _) => args.extend(qemu::virtio_net(&d.name, d.ssh)),
            }
        }
        if !self.devices.is_empty() {
            args.extend(qemu::MODERN_VIRTIO.map(String::from));
        }
        Ok(args)
    }

    /// Makes each virtio-blk device's image for run `run` (fresh copies and blank images
    /// are `target/logs/<run>-<device>.img`); None for the other devices.
    fn prepare_disks(&self, run: &str, images: &Images) -> Result<Vec<Option<PathBuf>>> {
        let logs = qemu::log_dir();
        std::fs::create_dir_all(&logs)?;
        self.devices
            .iter()
            .map(|d| {
                if d.kind != DeviceKind::Blk {
                    return Ok(None);
                }
                let fresh = logs.join(format!("{run}-{}.img", d.name));
                let disk = match self.image(d) {
                    Image::File(path) => path,
                    Image::Debian => linux::run::fresh_disk(images.debian()?, &fresh)?,
                    Image::Suite => {
                        artifacts::suite_disk(&fresh)?;
                        fresh
                    }
                    Image::Blank => {
                        let file = std::fs::File::create(&fresh)
                            .with_context(|| format!("creating {}", fresh.display()))?;
                        file.set_len(BLANK_DISK_MIB << 20)?;
                        fresh
                    }
                };
                Ok(Some(disk))
            })
            .collect()
    }

    /// The QEMU machine for a valid configuration: hypocaust with every guest in its bundle
    /// (`target/logs/<run>-bundle.img`), or the one guest natively.
    pub fn machine(&self, launch: &Launch, images: &Images) -> Result<Machine> {
        let disks = self.prepare_disks(&launch.run, images)?;
        let mut m = if launch.native {
            let g = self.guests.first().context("no guest")?;
            let mut m = match self.kernel(g) {
                Kernel::Debian => {
                    let linux = images.debian()?;
                    let mut m = Machine::new(&linux.kernel);
                    m.initrd = Some(linux.initramfs.clone());
                    m.append = Some(linux::run::bootargs(true, self.machine.board, &g.bootargs));
                    m
                }
                Kernel::Suite => Machine::new(images.testkernel()?),
                Kernel::File(path) => {
                    let mut m = Machine::new(path);
                    m.initrd = g.initrd.as_deref().map(|p| self.resolve(p));
                    m
                }
            };
            if m.append.is_none() && !g.bootargs.is_empty() {
                m.append = Some(g.bootargs.clone());
            }
            m.memory_mib = u64::from(g.memory);
            m
        } else {
            let bundle = qemu::log_dir().join(format!("{}-bundle.img", launch.run));
            artifacts::bundle(&self.guest_files(images)?, &bundle)?;
            let mut m = crate::suite::hypocaust_machine(bundle, self.machine.firmware)?;
            m.memory_mib = self.machine.memory;
            let mut append = format!("hypocaust.log={}", launch.log);
            if let Some(ms) = self.machine.slice_ms {
                append.push_str(&format!(" hypocaust.slice_ms={ms}"));
            }
            m.append = Some(append);
            m
        };
        m = m.on(self.machine.board);
        m.smp = self.machine.harts;
        if let Some(cpu) = &self.machine.cpu {
            m.cpu.clone_from(cpu);
        }
        m.extra = self.device_args(&disks)?;
        Ok(m)
    }

    /// What the user is told before QEMU starts: what boots, and how to ssh in.
    fn announce(&self, launch: &Launch, images: &Images) {
        let side = if launch.native { "natively on QEMU" } else { "under hypocaust" };
        let what = |g: &GuestConfig| match self.kernel(g) {
            Kernel::Debian => {
                images.debian.as_ref().map_or("Linux".into(), |l| format!("Linux {}", l.release))
            }
            Kernel::Suite => "the test kernel".into(),
            Kernel::File(path) => path.display().to_string(),
        };
        match self.guests.as_slice() {
            [g] if self.kernel(g) == Kernel::Debian => eprintln!(
                "xtask: booting {} {side}: a shell on the console (Ctrl-A X leaves QEMU)",
                what(g)
            ),
            guests => {
                let list: Vec<String> =
                    guests.iter().map(|g| format!("'{}' ({})", g.name, what(g))).collect();
                eprintln!("xtask: booting {} {side} (Ctrl-A X leaves QEMU)", list.join(", "));
            }
        }
        for ((d, slot), j) in self.devices.iter().zip(self.slots()).zip(0..) {
            let owner =
                self.owner(d).map_or("no guest".into(), |g| format!("'{}'", self.guests[g].name));
            let kind = match d.kind {
                DeviceKind::Blk => "virtio-blk",
                DeviceKind::Net => "virtio-net",
            };
            eprintln!(
                "xtask: device[{j}] '{}' ({kind}) in virtio slot {slot} ({:#x}), owned by {owner}",
                d.name,
                slot_address(slot)
            );
        }
        let Some(linux) = &images.debian else { return };
        for g in self.guests.iter().filter(|g| self.kernel(g) == Kernel::Debian) {
            for d in self.devices.iter().filter(|d| g.devices.contains(&d.name)) {
                if let Some(port) = d.ssh {
                    let who =
                        if self.guests.len() == 1 { "it".into() } else { format!("'{}'", g.name) };
                    eprintln!(
                        "xtask: once {who} prints '{}': {}",
                        linux::build::READY,
                        linux::run::ssh_hint(linux, port)
                    );
                }
            }
        }
    }
}

/// How to boot a configuration.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Names the run's files in target/logs: `<run>-bundle.img`, `<run>-<device>.img`.
    pub run: String,
    /// The one guest directly on QEMU instead of under hypocaust.
    pub native: bool,
    pub timeout: Option<Duration>,
    /// hypocaust's log level.
    pub log: String,
}

/// The built images that the keywords stand for (only those the configuration uses).
#[derive(Clone, Debug, Default)]
pub struct Images {
    pub debian: Option<LinuxImages>,
    /// The test kernel's flat image.
    pub testkernel: Option<PathBuf>,
}

impl Images {
    /// Fetches and builds what `config` uses.
    pub fn build(config: &Config) -> Result<Self> {
        let debian = config.needs_debian().then(linux::images).transpose()?;
        let testkernel = config
            .guests
            .iter()
            .any(|g| config.kernel(g) == Kernel::Suite)
            .then(artifacts::testkernel)
            .transpose()?;
        Ok(Self { debian, testkernel })
    }

    fn debian(&self) -> Result<&LinuxImages> {
        self.debian.as_ref().context("the Debian guest's images were not built")
    }

    fn testkernel(&self) -> Result<PathBuf> {
        self.testkernel.clone().context("the test kernel was not built")
    }
}

/// Validates `config`, builds what it needs and boots it with the console on this
/// terminal; returns whether QEMU exited cleanly. A bad configuration is an error before
/// anything is built.
pub fn boot(config: &Config, launch: &Launch) -> Result<bool> {
    config.validate(launch.native)?;
    config.check_ports()?;
    crate::provision::all()?;
    let images = Images::build(config)?;
    let machine = config.machine(launch, &images)?;
    eprintln!("xtask: {}", machine.command_line());
    config.announce(launch, &images);
    let run = qemu::run_interactive(&machine, launch.timeout)?;
    for line in &run.guest_failures {
        eprintln!("xtask: {line}");
    }
    if !run.guest_failures.is_empty() {
        eprintln!(
            "xtask: {} guest{} could not start: the line{} above say{} why; change the guest's \
             memory, kernel, vcpus or harts in the configuration (or the matching flag) \
             accordingly, or the machine's memory",
            run.guest_failures.len(),
            if run.guest_failures.len() == 1 { "" } else { "s" },
            if run.guest_failures.len() == 1 { "" } else { "s" },
            if run.guest_failures.len() == 1 { "s" } else { "" },
        );
    }
    Ok(run.success())
}

/// Why the kernel at `path` cannot boot in `memory_mib` MiB of guest RAM, if it cannot:
/// hypocaust's own loader looks at it, as it will at boot.
fn unbootable(path: &Path, memory_mib: u32) -> Option<String> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => return Some(format!("cannot read {}: {e}; fix the path", path.display())),
    };
    let ram = u64::from(memory_mib) << 20;
    match loader::image::plan(&data, 0x8000_0000, ram) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "{} cannot boot: {e}; give a RISC-V kernel (Linux Image or ELF) that fits the \
             guest's memory",
            path.display()
        )),
    }
}

/// Why `name` cannot name a guest (or a device, which also becomes a QEMU id and so must
/// start with a letter), if it cannot.
fn bad_name(name: &str, device: bool) -> Option<String> {
    let rule = "use 1 to 32 letters, digits, '-' and '_'";
    if name.is_empty() || name.len() > bundle::NAME_LEN {
        return Some(format!("{name:?} is {} bytes long; {rule}", name.len()));
    }
    if let Some(c) = name.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        return Some(format!("{name:?} has {c:?}; {rule}"));
    }
    if device && !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some(format!(
            "{name:?} does not start with a letter (it is the device's QEMU id); start it with one"
        ));
    }
    None
}

/// A key or value of the document and where it is.
struct Field {
    /// As `guest[1].memory`.
    path: String,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

fn index_table(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<Field>) {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        out.push(Field { path: path.clone(), key: Some(key.span()), value: value.span() });
        index_value(value.get_ref(), &path, out);
    }
}

fn index_value(value: &toml::de::DeValue<'_>, path: &str, out: &mut Vec<Field>) {
    match value {
        toml::de::DeValue::Table(t) => index_table(t, path, out),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                out.push(Field { path: path.clone(), key: None, value: item.span() });
                index_value(item.get_ref(), &path, out);
            }
        }
        _ => {}
    }
}

/// The innermost field whose key or value holds byte `at` (empty: none).
fn field_at(fields: &[Field], at: usize) -> String {
    fields
        .iter()
        .flat_map(|f| f.key.iter().chain([&f.value]).map(move |span| (f, span)))
        .filter(|(_, span)| span.contains(&at) || span.start == at)
        // The smallest span; of equal ones (an array of tables and its first table span the
        // first header), the deeper field.
        .min_by_key(|(f, span)| (span.len(), std::cmp::Reverse(f.path.len())))
        .map(|(f, _)| f.path.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with a kernel, an initrd and a disk image, for configurations that name
    /// files; removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            // Tests run in parallel: each directory is new.
            static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("xtask-config-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            for (file, bytes) in
                [("Image", &b"kernel"[..]), ("initrd.img", b"initrd"), ("disk.img", b"disk")]
            {
                std::fs::write(dir.join(file), bytes).expect("fixture file");
            }
            Self(dir)
        }

        fn parse(&self, text: &str) -> Result<Config, Invalid> {
            Config::parse(text, &self.0.join("test.toml"))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The problems of `text` (parsed and validated for hypocaust), as (field, message).
    fn problems(text: &str) -> Vec<(String, String)> {
        let dir = Dir::new("problems");
        match dir.parse(text).and_then(|c| c.validate(false)) {
            Ok(()) => Vec::new(),
            Err(e) => e.problems.into_iter().map(|p| (p.field, p.message)).collect(),
        }
    }

    /// Asserts that `text` has exactly one problem, in `field`, whose message holds `says`.
    #[track_caller]
    fn one_problem(text: &str, field: &str, says: &str) {
        let found = problems(text);
        assert!(
            found.len() == 1 && found[0].0 == field && found[0].1.contains(says),
            "expected one problem in {field} saying {says:?}, found {found:#?}"
        );
    }

    const GUEST: &str = "[[guest]]\nname = \"g\"\nkernel = \"testkernel\"\n";

    fn examples() -> Vec<PathBuf> {
        let dir = crate::util::root().join("examples");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("examples/ is there")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
    }

    fn example(name: &str) -> Config {
        let c = Config::load(&crate::util::root().join("examples").join(name)).expect("parses");
        c.validate(false).expect("valid");
        c
    }

    #[test]
    fn every_example_is_valid() {
        let files = examples();
        assert!(files.len() >= 3, "{files:?}");
        for file in files {
            let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
            c.validate(false).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn examples_say_what_they_should() {
        let c = example("linux-4vcpus.toml");
        assert_eq!((c.machine.harts, c.machine.memory), (4, 1024));
        assert_eq!(
            (c.guests.len(), c.guests[0].vcpus, c.kernel(&c.guests[0])),
            (1, 4, Kernel::Debian)
        );
        assert_eq!(c.image(&c.devices[0]), Image::Debian);
        assert_eq!(c.devices[1].ssh, Some(10022));

        let c = example("three-guests.toml");
        assert_eq!(c.machine.harts, 3);
        let kernels: Vec<Kernel> = c.guests.iter().map(|g| c.kernel(g)).collect();
        assert_eq!(kernels, [Kernel::Debian, Kernel::Debian, Kernel::Suite]);
        for g in &c.guests {
            let kinds: Vec<DeviceKind> = g
                .devices
                .iter()
                .map(|n| c.devices.iter().find(|d| d.name == *n).expect("declared").kind)
                .collect();
            assert_eq!(kinds, [DeviceKind::Blk, DeviceKind::Net], "guest {}", g.name);
        }

        let c = example("overcommit.toml");
        let vcpus: u32 = c.guests.iter().map(|g| g.vcpus).sum();
        assert!(vcpus as usize > c.machine.harts, "{vcpus} vCPUs on {} harts", c.machine.harts);
        assert_eq!(c.machine.firmware, Firmware::Hypocaust);
    }

    #[test]
    fn the_sifive_u_board() {
        let text = format!("[machine]\nboard = \"sifive_u\"\nfirmware = \"opensbi\"\n{GUEST}");
        assert!(problems(&text).is_empty(), "{:#?}", problems(&text));
        let c = Dir::new("board").parse(&text).expect("parses");
        assert_eq!(c.machine.board, Board::SifiveU);
        one_problem(
            &format!("[machine]\nboard = \"sifive_u\"\n{GUEST}"),
            "machine.firmware",
            "--firmware opensbi",
        );
        one_problem(
            &format!(
                "[machine]\nboard = \"sifive_u\"\nfirmware = \"opensbi\"\n{GUEST}\
                 devices = [\"d\"]\n[[device]]\nname = \"d\"\ntype = \"virtio-net\"\n"
            ),
            "device",
            "no virtio-mmio slots",
        );
        assert!(Dir::new("board2").parse("[machine]\nboard = \"pi\"\n").is_err());
    }

    #[test]
    fn defaults() {
        let dir = Dir::new("defaults");
        let c = dir
            .parse(&format!(
                "{GUEST}devices = [\"d\"]\n[[device]]\nname = \"d\"\ntype = \"virtio-blk\"\n"
            ))
            .expect("parses");
        assert_eq!(
            (c.machine.harts, c.machine.memory, c.machine.firmware),
            (1, 1024, Firmware::Hypocaust)
        );
        let g = &c.guests[0];
        assert_eq!((g.memory, g.vcpus, g.harts.as_ref(), g.bootargs.as_str()), (256, 1, None, ""));
        assert_eq!(c.image(&c.devices[0]), Image::Blank);
        assert_eq!(c.base, dir.0);
        let c = dir.parse(&format!("[machine]\nfirmware = \"opensbi\"\n{GUEST}")).expect("parses");
        assert_eq!(c.machine.firmware, Firmware::Opensbi);
        let c = dir.parse(&format!("[machine]\ncpu = \"sifive-u54\"\n{GUEST}")).expect("parses");
        assert_eq!(c.machine.cpu.as_deref(), Some("sifive-u54"));
    }

    #[test]
    fn slots_go_down_from_the_top() {
        assert_eq!((0..8).map(slot).collect::<Vec<_>>(), [7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(slot_address(slot(0)), 0x1000_8000);
        assert_eq!(slot_address(slot(7)), 0x1000_1000);
        assert_eq!(example("three-guests.toml").slots(), [7, 6, 5, 4, 3, 2]);
    }

    #[test]
    fn device_arguments_in_file_order() {
        let c = example("three-guests.toml");
        let disks: Vec<Option<PathBuf>> = c
            .devices
            .iter()
            .map(|d| {
                (d.kind == DeviceKind::Blk).then(|| PathBuf::from(format!("/d/{}.img", d.name)))
            })
            .collect();
        let args = c.device_args(&disks).expect("arguments");
        let devices: Vec<&str> =
            args.windows(2).filter(|w| w[0] == "-device").map(|w| w[1].as_str()).collect();
        assert_eq!(
            devices,
            [
                "virtio-blk-device,drive=disk-a",
                "virtio-net-device,netdev=net-a",
                "virtio-blk-device,drive=disk-b",
                "virtio-net-device,netdev=net-b",
                "virtio-blk-device,drive=disk-t",
                "virtio-net-device,netdev=net-t",
            ]
        );
        assert!(args.contains(&"file=/d/disk-b.img,if=none,format=raw,id=disk-b".to_string()));
        assert!(args.contains(&"user,id=net-b,hostfwd=tcp:127.0.0.1:10023-:22".to_string()));
        assert!(args.contains(&"user,id=net-t".to_string()));
        assert!(args.ends_with(&["-global".into(), "virtio-mmio.force-legacy=false".into()]));
    }

    #[test]
    fn bundle_fields() {
        let dir = Dir::new("bundle");
        let c = example("three-guests.toml");
        let linux = LinuxImages {
            kernel: dir.0.join("Image"),
            initramfs: dir.0.join("initrd.img"),
            disk: dir.0.join("disk.img"),
            release: "7.0".into(),
            modules: Vec::new(),
            packages: Vec::new(),
            ssh_key: None,
        };
        let images = Images { debian: Some(linux), testkernel: Some(dir.0.join("Image")) };
        let files = c.guest_files(&images).expect("records");
        let out = dir.0.join("bundle.img");
        artifacts::bundle(&files, &out).expect("packs");
        let data = std::fs::read(&out).expect("reads it back");
        let b = bundle::Bundle::parse(&data).expect("a bundle");
        let guests: Vec<bundle::Guest<'_>> = b.guests().collect();
        assert_eq!(guests.len(), 3);
        let fields: Vec<_> = guests
            .iter()
            .map(|g| (g.name, g.memory_mib, g.vcpus, g.virtio_slots, g.harts))
            .collect();
        assert_eq!(
            fields,
            [
                ("linux-a", 384, 1, 0b1100_0000, 0b001),
                ("linux-b", 384, 1, 0b0011_0000, 0b010),
                ("tests", 256, 1, 0b0000_1100, 0b100)
            ]
        );
        assert_eq!(guests[0].device_names, "7 disk-a\n6 net-a\n");
        assert_eq!(
            (guests[1].device_name(5), guests[1].device_name(4)),
            (Some("disk-b"), Some("net-b"))
        );
        assert_eq!(
            (guests[2].device_name(3), guests[2].device_name(2)),
            (Some("disk-t"), Some("net-t"))
        );
        assert_eq!(guests[0].bootargs, "earlycon=sbi console=ttyS0");
        assert_eq!(guests[1].bootargs, "earlycon=sbi console=ttyS0 quiet");
        assert_eq!((guests[0].kernel, guests[0].initrd), (&b"kernel"[..], Some(&b"initrd"[..])));
        assert_eq!((guests[2].bootargs, guests[2].initrd), ("", None));

        // Overcommitted: vCPUs and affinity as given.
        let files = example("overcommit.toml").guest_files(&images).expect("records");
        let fields: Vec<_> = files.iter().map(|g| (g.vcpus, g.harts, g.virtio_slots)).collect();
        assert_eq!(fields, [(3, 0b11, 0b1100_0000), (2, 0b10, 0b0011_0000)]);

        // Any hart: mask 0; a kernel file with its initrd, relative to the file.
        let c = dir
            .parse("[machine]\nharts = 2\n[[guest]]\nname = \"own\"\nkernel = \"Image\"\ninitrd = \"initrd.img\"\nvcpus = 2\nbootargs = \"x=1\"\n")
            .expect("parses");
        c.validate(false).expect("valid");
        let files = c.guest_files(&Images::default()).expect("records");
        assert_eq!((files[0].harts, files[0].virtio_slots, files[0].vcpus), (0, 0, 2));
        assert_eq!(files[0].kernel, dir.0.join("Image"));
        assert_eq!(files[0].initrd, Some(dir.0.join("initrd.img")));
        assert_eq!(files[0].bootargs, "x=1");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_field() {
        one_problem(
            &format!("{GUEST}memroy = 3\n"),
            "guest[0].memroy",
            "unknown field `memroy`, expected one of",
        );
        one_problem(&format!("{GUEST}{GUEST}vcpu = 3\n"), "guest[1].vcpu", "unknown field `vcpu`");
        one_problem(
            &format!("[machin]\n{GUEST}"),
            "machin",
            "unknown field `machin`, expected one of `machine`, `guest`, `device`",
        );
        one_problem(&format!("[machine]\nram = 4\n{GUEST}"), "machine.ram", "unknown field `ram`");
        one_problem(&format!("{GUEST}memory = \"lots\"\n"), "guest[0].memory", "invalid type");
        one_problem(&format!("{GUEST}vcpus = -1\n"), "guest[0].vcpus", "");
        one_problem(
            &format!("[machine]\nfirmware = \"uboot\"\n{GUEST}"),
            "machine.firmware",
            "expected `hypocaust` or `opensbi`",
        );
        one_problem(
            &format!("{GUEST}[[device]]\nname = \"d\"\ntype = \"virtio-gpu\"\n"),
            "device[0].type",
            "unknown variant `virtio-gpu`",
        );
        one_problem(
            &format!("{GUEST}[[device]]\nname = \"n\"\ntype = \"virtio-net\"\nssh = 70000\n"),
            "device[0].ssh",
            "",
        );
        one_problem("[[guest]]\nname = \"g\"\n", "guest[0]", "missing field `kernel`");
        one_problem("[[guest]\n", "", "not valid TOML (line 1)");
    }

    #[test]
    fn names() {
        one_problem(
            "[[guest]]\nname = \"\"\nkernel = \"testkernel\"\n",
            "guest[0].name",
            "1 to 32 letters",
        );
        one_problem(
            &format!("[[guest]]\nname = \"{}\"\nkernel = \"testkernel\"\n", "x".repeat(33)),
            "guest[0].name",
            "33 bytes",
        );
        one_problem("[[guest]]\nname = \"a b\"\nkernel = \"testkernel\"\n", "guest[0].name", "' '");
        one_problem(&format!("{GUEST}{GUEST}"), "guest[1].name", "guest[0]'s name too");
        let device = |name: &str| format!("[[device]]\nname = \"{name}\"\ntype = \"virtio-net\"\n");
        one_problem(
            &format!("{GUEST}devices = [\"0net\"]\n{}", device("0net")),
            "device[0].name",
            "start with a letter",
        );
        one_problem(
            &format!("{GUEST}devices = [\"n\"]\n{}{}", device("n"), device("n")),
            "device[1].name",
            "device[0]'s name too",
        );
    }

    #[test]
    fn devices_belong_to_one_guest() {
        let net = "[[device]]\nname = \"n\"\ntype = \"virtio-net\"\n";
        one_problem(
            &format!("{GUEST}devices = [\"nope\"]\n"),
            "guest[0].devices[0]",
            "no [[device]] is named \"nope\"",
        );
        one_problem(
            &format!("{GUEST}devices = [\"n\", \"n\"]\n{net}"),
            "guest[0].devices[1]",
            "listed twice",
        );
        one_problem(
            &format!(
                "{GUEST}devices = [\"n\"]\n[[guest]]\nname = \"h\"\nkernel = \"testkernel\"\ndevices = [\"n\"]\n{net}"
            ),
            "guest[1].devices[0]",
            "overlapping devices: \"n\" is guest[0]'s (\"g\") too",
        );
        one_problem(
            &format!("{GUEST}{net}"),
            "device[0]",
            "owned by no guest; add it to a guest's devices or remove it",
        );
        let nine: String = (0..9)
            .map(|i| format!("[[device]]\nname = \"n{i}\"\ntype = \"virtio-net\"\n"))
            .collect();
        let all: Vec<String> = (0..9).map(|i| format!("\"n{i}\"")).collect();
        one_problem(
            &format!("{GUEST}devices = [{}]\n{nine}", all.join(", ")),
            "device[8]",
            "9 devices, but the virt machine has 8",
        );
        one_problem(
            &format!("{GUEST}devices = [\"n\"]\n{net}image = \"disk.img\"\n"),
            "device[0].image",
            "has no image",
        );
        one_problem(
            &format!(
                "{GUEST}devices = [\"d\"]\n[[device]]\nname = \"d\"\ntype = \"virtio-blk\"\nssh = 22\n"
            ),
            "device[0].ssh",
            "only a virtio-net device",
        );
        one_problem(
            &format!("{GUEST}devices = [\"n\"]\n{net}ssh = 0\n"),
            "device[0].ssh",
            "port 0",
        );
        one_problem(
            &format!(
                "{GUEST}devices = [\"n\", \"m\"]\n{net}ssh = 2222\n[[device]]\nname = \"m\"\ntype = \"virtio-net\"\nssh = 2222\n"
            ),
            "device[1].ssh",
            "device[0] forwards this port too",
        );
        one_problem(
            &format!(
                "{GUEST}devices = [\"a\", \"b\"]\n[[device]]\nname = \"a\"\ntype = \"virtio-blk\"\nimage = \"disk.img\"\n[[device]]\nname = \"b\"\ntype = \"virtio-blk\"\nimage = \"disk.img\"\n"
            ),
            "device[1].image",
            "device[0] uses this image too",
        );
    }

    #[test]
    fn vcpus_harts_and_memory() {
        one_problem(&format!("{GUEST}vcpus = 0\n"), "guest[0].vcpus", "0 vCPUs; give 1 to 8");
        one_problem(&format!("{GUEST}vcpus = 9\n"), "guest[0].vcpus", "9 vCPUs; give 1 to 8");
        assert!(problems(&format!("{GUEST}vcpus = 8\n")).is_empty());
        one_problem(&format!("[machine]\nharts = 0\n{GUEST}"), "machine.harts", "give 1 to 64");
        one_problem(&format!("[machine]\nharts = 65\n{GUEST}"), "machine.harts", "give 1 to 64");
        one_problem(
            &format!("[machine]\nharts = 2\n{GUEST}harts = [0, 2]\n"),
            "guest[0].harts[1]",
            "hart 2 does not exist: machine.harts is 2 (indexes 0 to 1); raise machine.harts or drop it",
        );
        one_problem(
            &format!("[machine]\nharts = 2\n{GUEST}harts = [1, 1]\n"),
            "guest[0].harts[1]",
            "listed twice",
        );
        one_problem(&format!("{GUEST}harts = []\n"), "guest[0].harts", "omit harts");
        one_problem(&format!("{GUEST}memory = 15\n"), "guest[0].memory", "give at least 16");
        // 1024 MiB hold 928 + 29 + 64 = 1021 MiB, not 929 + 30 + 64 = 1023... nor 960 + 30 + 64.
        assert!(problems(&format!("{GUEST}memory = 928\n")).is_empty());
        one_problem(
            &format!("{GUEST}memory = 960\n"),
            "machine.memory",
            "1024 MiB cannot hold 960 MiB of guest RAM + 30 MiB of shadow page tables (1/32) + 64 MiB \
             for hypocaust = 1054 MiB; raise it to at least 1054",
        );
        one_problem(
            &format!(
                "[machine]\nmemory = 512\n{GUEST}memory = 300\n[[guest]]\nname = \"h\"\nkernel = \"testkernel\"\nmemory = 200\n"
            ),
            "machine.memory",
            "= 580 MiB",
        );
        // Natively the guest is the whole machine.
        let dir = Dir::new("native");
        let c = dir.parse(&format!("{GUEST}memory = 2048\n")).expect("parses");
        assert!(c.validate(true).is_ok());
        let two = dir
            .parse(&format!("{GUEST}[[guest]]\nname = \"h\"\nkernel = \"testkernel\"\n"))
            .expect("parses");
        assert_eq!(two.validate(true).expect_err("two guests").problems[0].field, "guest");
        one_problem("[machine]\nharts = 2\n", "guest", "no [[guest]]");
    }

    #[test]
    fn files_and_keywords() {
        one_problem(
            "[[guest]]\nname = \"g\"\nkernel = \"nope/Image\"\n",
            "guest[0].kernel",
            "nope/Image",
        );
        one_problem(
            "[[guest]]\nname = \"g\"\nkernel = \"Image\"\ninitrd = \"nope.img\"\n",
            "guest[0].initrd",
            "fix the path",
        );
        assert!(
            problems("[[guest]]\nname = \"g\"\nkernel = \"Image\"\ninitrd = \"initrd.img\"\n")
                .is_empty()
        );
        one_problem(
            "[[guest]]\nname = \"g\"\nkernel = \"debian\"\ninitrd = \"initrd.img\"\n",
            "guest[0].initrd",
            "kernel = \"debian\" brings its own initramfs; remove initrd",
        );
        one_problem(
            &format!(
                "{GUEST}devices = [\"d\"]\n[[device]]\nname = \"d\"\ntype = \"virtio-blk\"\nimage = \"gone.img\"\n"
            ),
            "device[0].image",
            "gone.img",
        );
        one_problem(
            "[[guest]]\nname = \"g\"\nkernel = \".\"\n",
            "guest[0].kernel",
            "is not a file",
        );
        let dir = Dir::new("keywords");
        let c = dir.parse("[[guest]]\nname = \"g\"\nkernel = \"./debian\"\n").expect("parses");
        assert_eq!(c.kernel(&c.guests[0]), Kernel::File(dir.0.join("./debian")));
    }

    #[test]
    fn messages_say_where() {
        let dir = Dir::new("messages");
        let text = format!("[machine]\nharts = 1\n\n{GUEST}vcpus = 9\nharts = [3]\n");
        let e = dir.parse(&text).expect("parses").validate(false).expect_err("two problems");
        let shown = e.to_string();
        let file = dir.0.join("test.toml");
        assert!(shown.starts_with(&format!("{}: 2 problems", file.display())), "{shown}");
        assert!(
            shown.contains(&format!("{}:7: guest[0].vcpus: 9 vCPUs", file.display())),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("{}:8: guest[0].harts[0]: hart 3", file.display())),
            "{shown}"
        );
        let e = dir.parse(&format!("{GUEST}\nbogus = 1\n")).expect_err("unknown key");
        assert!(e.to_string().contains("test.toml:5: guest[0].bogus: unknown field"), "{e}");

        // From flags, the flag is named.
        let guest = GuestConfig {
            name: "linux".into(),
            kernel: DEBIAN.into(),
            initrd: None,
            bootargs: String::new(),
            memory: 256,
            vcpus: 12,
            harts: None,
            devices: Vec::new(),
        };
        let c = Config::from_flags(
            MachineConfig { memory: 128, ..Default::default() },
            vec![guest],
            Vec::new(),
        );
        let shown = c.validate(false).expect_err("bad flags").to_string();
        assert!(shown.contains("guest[0].vcpus (--smp): 12 vCPUs"), "{shown}");
        assert!(shown.contains("machine.memory (--memory): 128 MiB cannot hold"), "{shown}");
    }
}
