//! Building the Linux guest's images from unpacked Debian packages: the kernel `Image`
//! (checked), the initramfs (busybox, dropbear and the libraries it needs, the virtio and
//! ext4 modules in load order, `/init`), and the ext4 disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cpio::Archive;
use crate::provision;
use crate::util::text_within;

/// The modules the guest loads, with their dependencies (those built into the kernel are
/// skipped): the virtio-mmio transport, the block and network drivers, and ext4.
pub const MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "ext4"];

/// The line `/init` prints once the guest is up (network configured, sshd started).
pub const READY: &str = "hypocaust-linux: ready";
/// The lines around the output of a command run by `/init` (`cargo xtask linux --cmd`).
pub const OUTPUT_BEGINS: &str = "==== hypocaust-linux: output begins ====";
pub const OUTPUT_ENDS: &str = "==== hypocaust-linux: output ends (status ";
/// The guest's root password (dropbear and the console).
pub const ROOT_PASSWORD: &str = "hypocaust";
/// The file on the disk image and its one line.
pub const DISK_MARKER_FILE: &str = "marker.txt";
pub const DISK_MARKER: &str = "hypocaust disk marker";
/// Size of the disk image.
pub const DISK_MIB: u64 = 16;
/// Where the SMP checks' program is in the initramfs (guests/smpcheck).
pub const SMPCHECK: &str = "bin/smpcheck";
/// Where `/init` looks for a command to run instead of a console shell.
pub const CMD_FILE: &str = "cmd.sh";
/// The guest's static address on QEMU's user network, its gateway and DNS server.
pub const GUEST_IP: &str = "10.0.2.15";
pub const GATEWAY: &str = "10.0.2.2";
pub const DNS: &str = "10.0.2.3";

/// The magic of a RISC-V Linux `Image` header, at offset 0x38.
const IMAGE_MAGIC: &[u8; 4] = b"RSC\x05";

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// What a build produced.
#[derive(Clone, Debug)]
pub struct Built {
    /// The kernel release (`uname -r`, the modules directory).
    pub release: String,
    /// The modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// Wanted modules (or dependencies) that are built into the kernel.
    pub builtin: Vec<String>,
    /// Shared libraries put in the initramfs for dropbear.
    pub libraries: Vec<String>,
}

/// The unpacked packages a build reads, searched in order.
pub struct Trees {
    roots: Vec<PathBuf>,
}

/// `a/b/../c` -> `a/c`; leading `/` and `.` parts dropped.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Trees {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self { roots }
    }

    /// The regular file at `path` (a path in the guest's filesystem), following symbolic
    /// links within the trees. With merged /usr, `lib/x` may be found as `usr/lib/x`.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        let mut path = normalize(path);
        'hops: for _ in 0..16 {
            let mut candidates = vec![path.clone()];
            if ["lib/", "bin/", "sbin/"].iter().any(|p| path.starts_with(p)) {
                candidates.push(format!("usr/{path}"));
            }
            for candidate in candidates {
                for root in &self.roots {
                    let full = root.join(&candidate);
                    let Ok(meta) = std::fs::symlink_metadata(&full) else { continue };
                    if meta.file_type().is_symlink() {
                        let target = std::fs::read_link(&full).ok()?;
                        let target = target.to_string_lossy();
                        path = if target.starts_with('/') {
                            normalize(&target)
                        } else {
                            let parent = candidate.rsplit_once('/').map_or("", |(p, _)| p);
                            normalize(&format!("{parent}/{target}"))
                        };
                        continue 'hops;
                    }
                    if meta.is_file() {
                        return Some(full);
                    }
                }
            }
            return None;
        }
        None
    }

    /// Directories named `rel` (e.g. `usr/lib/modules`) in any tree.
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.join(rel)).filter(|p| p.is_dir()).collect()
    }
}

/// What matters of an ELF file here.
#[derive(Debug)]
struct ElfInfo {
    machine: u16,
    interp: Option<String>,
    needed: Vec<String>,
}

fn elf_info(data: &[u8], what: &str) -> Result<ElfInfo> {
    use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
    let file = ElfFile64::<object::Endianness>::parse(data)
        .with_context(|| format!("{what} is not a 64-bit ELF file"))?;
    let endian = file.endian();
    let machine = file.elf_header().e_machine(endian);
    let mut interp = None;
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let bytes =
                ph.data(endian, data).map_err(|()| anyhow::anyhow!("{what}: bad PT_INTERP"))?;
            interp = Some(String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string());
        }
    }
    let mut needed = Vec::new();
    let sections = file.elf_section_table();
    if let Some((dynamic, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in dynamic {
            if d.d_tag(endian) == u64::from(object::elf::DT_NEEDED) {
                needed.push(String::from_utf8_lossy(d.string(endian, strings)?).into_owned());
            }
        }
    }
    Ok(ElfInfo { machine, interp, needed })
}

fn riscv_elf(data: &[u8], what: &str) -> Result<ElfInfo> {
    let info = elf_info(data, what)?;
    ensure!(
        info.machine == object::elf::EM_RISCV,
        "{what} is not a RISC-V program (e_machine {})",
        info.machine
    );
    Ok(info)
}

/// Checks a RISC-V Linux `Image` and returns its header's image size.
pub fn check_image(data: &[u8]) -> Result<u64> {
    ensure!(
        data.len() > 0x40 && &data[0x38..0x3c] == IMAGE_MAGIC,
        "not a RISC-V Linux Image (no \"RSC\\x05\" magic at offset 0x38)"
    );
    let size = u64::from_le_bytes(data[0x10..0x18].try_into().expect("8 bytes"));
    ensure!(size >= data.len() as u64 / 2, "the Image header's size ({size}) is implausible");
    Ok(size)
}

/// A module's `.modinfo` fields that matter for loading it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    pub vermagic: String,
    pub depends: Vec<String>,
    pub pre: Vec<String>,
    pub post: Vec<String>,
    pub aliases: Vec<String>,
}

/// Module names compare with `-` and `_` alike.
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses a `.modinfo` section (`key=value` strings separated by NULs).
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in section.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else { continue };
        let list = || value.split(',').filter(|s| !s.is_empty()).map(module_name);
        match key {
            "name" => info.name = module_name(value),
            "vermagic" => info.vermagic = value.to_string(),
            "depends" => info.depends.extend(list()),
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => {
                // "pre: a b post: c"
                let mut into_pre = true;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => into_pre = true,
                        "post:" => into_pre = false,
                        w if into_pre => info.pre.push(w.to_string()),
                        w => info.post.push(w.to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Where module information comes from (the kernel's modules, or a test's table).
pub trait ModuleSource {
    /// Whether module `name` is built into the kernel.
    fn builtin(&self, name: &str) -> bool;
    /// The module's information, or None if there is no such module file.
    fn info(&mut self, name: &str) -> Result<Option<ModInfo>>;
    /// The module that declares `alias`, if any.
    fn alias(&mut self, alias: &str) -> Result<Option<String>>;
}

/// The order to load `wanted` and everything they depend on (`depends=` and soft
/// dependencies), each after its dependencies; built-in modules are left out and
/// returned separately. Soft dependencies that name no module are skipped (they are soft).
pub fn load_order(
    wanted: &[&str],
    src: &mut dyn ModuleSource,
) -> Result<(Vec<String>, Vec<String>)> {
    struct Walk<'a> {
        src: &'a mut dyn ModuleSource,
        order: Vec<String>,
        builtin: Vec<String>,
        visiting: Vec<String>,
    }
    impl Walk<'_> {
        fn visit(&mut self, raw: &str, required: bool) -> Result<()> {
            let name = module_name(raw);
            if self.order.contains(&name) || self.builtin.contains(&name) {
                return Ok(());
            }
            if self.src.builtin(&name) {
                self.builtin.push(name);
                return Ok(());
            }
            ensure!(
                !self.visiting.contains(&name),
                "modules depend on each other in a cycle: {} -> {name}",
                self.visiting.join(" -> ")
            );
            let info = match self.src.info(&name)? {
                Some(info) => info,
                None => match self.src.alias(raw)? {
                    Some(real) if module_name(&real) != name => return self.visit(&real, required),
                    _ if required => bail!("the kernel has no module {name}"),
                    _ => return Ok(()),
                },
            };
            self.visiting.push(name.clone());
            for dep in &info.depends {
                self.visit(dep, true)?;
            }
            for dep in &info.pre {
                self.visit(dep, false)?;
            }
            self.visiting.pop();
            self.order.push(name);
            for dep in &info.post {
                self.visit(dep, false)?;
            }
            Ok(())
        }
    }
    let mut walk = Walk { src, order: Vec::new(), builtin: Vec::new(), visiting: Vec::new() };
    for w in wanted {
        walk.visit(w, true)?;
    }
    Ok((walk.order, walk.builtin))
}

/// The kernel's modules in the unpacked packages.
struct KernelModules {
    release: String,
    /// Module name -> file (`.ko` or `.ko.xz`).
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// Decompressed modules read so far.
    loaded: BTreeMap<String, Vec<u8>>,
    infos: BTreeMap<String, ModInfo>,
    /// Files not yet searched for aliases, in search order.
    unscanned: Vec<String>,
    aliases: BTreeMap<String, String>,
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl KernelModules {
    fn open(trees: &Trees, release: &str) -> Result<Self> {
        let mut files = BTreeMap::new();
        let mut builtin = BTreeSet::new();
        for base in ["usr/lib/modules", "lib/modules"] {
            for dir in trees.dirs(&format!("{base}/{release}")) {
                let mut all = Vec::new();
                walk_files(&dir, &mut all)?;
                for path in all {
                    let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    if let Some(stem) =
                        file.strip_suffix(".ko.xz").or_else(|| file.strip_suffix(".ko"))
                    {
                        files.insert(module_name(stem), path.clone());
                    } else if [".ko.zst", ".ko.gz"].iter().any(|s| file.ends_with(s)) {
                        bail!("{}: only xz-compressed modules are supported", path.display());
                    }
                }
                if let Ok(text) = std::fs::read_to_string(dir.join("modules.builtin")) {
                    for line in text.lines() {
                        let file = line.rsplit('/').next().unwrap_or(line);
                        builtin.insert(module_name(file.trim_end_matches(".ko")));
                    }
                }
            }
        }
        ensure!(!files.is_empty(), "no kernel modules for {release} in the packages");
        ensure!(!builtin.is_empty(), "no modules.builtin for {release} in the packages");
        // Aliases are looked for where soft dependencies usually point first.
        let mut unscanned: Vec<String> = files.keys().cloned().collect();
        let rank = |n: &String| {
            let p = files[n].to_string_lossy();
            if p.contains("/kernel/crypto/") {
                0
            } else if p.contains("/kernel/lib/") {
                1
            } else {
                2
            }
        };
        unscanned.sort_by_key(|n| std::cmp::Reverse(rank(n)));
        Ok(Self {
            release: release.into(),
            files,
            builtin,
            loaded: BTreeMap::new(),
            infos: BTreeMap::new(),
            unscanned,
            aliases: BTreeMap::new(),
        })
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = &self.files[name];
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if path.extension().and_then(|e| e.to_str()) != Some("xz") {
            return Ok(raw);
        }
        let mut out = Vec::with_capacity(raw.len() * 6);
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .map_err(|e| anyhow::anyhow!("decompressing {}: {e}", path.display()))?;
        Ok(out)
    }

    fn modinfo(data: &[u8], name: &str) -> Result<ModInfo> {
        use object::read::elf::{ElfFile64, SectionHeader};
        let file = ElfFile64::<object::Endianness>::parse(data)
            .with_context(|| format!("module {name} is not a 64-bit ELF file"))?;
        let endian = file.endian();
        let (_, section) = file
            .elf_section_table()
            .section_by_name(endian, b".modinfo")
            .with_context(|| format!("module {name} has no .modinfo"))?;
        Ok(parse_modinfo(section.data(endian, data)?))
    }
}

impl ModuleSource for KernelModules {
    fn builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    fn info(&mut self, name: &str) -> Result<Option<ModInfo>> {
        if let Some(info) = self.infos.get(name) {
            return Ok(Some(info.clone()));
        }
        if !self.files.contains_key(name) {
            return Ok(None);
        }
        let data = self.read(name)?;
        riscv_elf(&data, &format!("module {name}"))?;
        let info = Self::modinfo(&data, name)?;
        ensure!(
            info.vermagic.split_whitespace().next() == Some(self.release.as_str()),
            "module {name} was built for {:?}, not {}",
            info.vermagic,
            self.release
        );
        self.loaded.insert(name.to_string(), data);
        self.infos.insert(name.to_string(), info.clone());
        Ok(Some(info))
    }

    fn alias(&mut self, alias: &str) -> Result<Option<String>> {
        while !self.aliases.contains_key(alias) {
            let Some(name) = self.unscanned.pop() else { break };
            let data = self.read(&name)?;
            for a in Self::modinfo(&data, &name)?.aliases {
                self.aliases.entry(a).or_insert_with(|| name.clone());
            }
        }
        Ok(self.aliases.get(alias).cloned())
    }
}

/// The kernel release found in the kernel packages (the one directory under
/// `usr/lib/modules`).
fn kernel_release(trees: &Trees) -> Result<String> {
    let mut releases = BTreeSet::new();
    for base in ["usr/lib/modules", "lib/modules"] {
        for dir in trees.dirs(base) {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    releases.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    ensure!(releases.len() == 1, "expected one kernel release in the packages, found {releases:?}");
    Ok(releases.pop_first().expect("one"))
}

/// Finds the kernel `Image` of `release` in the kernel packages and checks it.
fn kernel_image(trees: &Trees, release: &str) -> Result<PathBuf> {
    let candidates = [
        format!("usr/lib/modules/{release}/vmlinuz"),
        format!("usr/lib/modules/{release}/Image"),
        format!("boot/vmlinuz-{release}"),
        format!("boot/Image-{release}"),
    ];
    let path = candidates
        .iter()
        .find_map(|c| trees.resolve(c))
        .with_context(|| format!("no kernel image for {release} in the packages"))?;
    let data = std::fs::read(&path)?;
    check_image(&data).with_context(|| path.display().to_string())?;
    Ok(path)
}

/// The init script. `modules` are loaded in this order from `/lib/modules/<release>/`.
pub fn init_script(release: &str, modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/sh
# /init of hypocaust's Linux guest, written by cargo xtask (xtask/src/linux/build.rs;
# docs/guests.md). Runs /{CMD_FILE} if present, else a shell on the console; then powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=vt100
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
hostname hypocaust-guest
say() {{ echo "hypocaust-linux: $*"; }}

for m in {modules}; do
    insmod /lib/modules/{release}/$m.ko || say "could not load module $m"
done
# Block devices appear as the drivers probe; wait a little for the disk.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done

ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add {GUEST_IP}/24 dev eth0
    ip route add default via {GATEWAY}
    net="eth0 {GUEST_IP}/24"
else
    net="no network device"
fi

# Root's password; dropbear creates its host key when a client first asks for it.
if hash=$(mkpasswd -m sha512 '{ROOT_PASSWORD}' 2>/dev/null) && [ -n "$hash" ]; then
    echo "root:$hash:1:0:99999:7:::" > /etc/shadow
    blank=
else
    say "mkpasswd failed: root has an empty password"
    echo "root::1:0:99999:7:::" > /etc/shadow
    blank=-B
fi
chmod 600 /etc/shadow
dropbear -R -p 22 -P /run/dropbear.pid $blank || say "dropbear did not start"

# Only emergencies on the console from now on: the console is the user's.
echo 1 > /proc/sys/kernel/printk
disk=none
[ -b /dev/vda ] && disk=/dev/vda
echo "{READY} (Linux $(uname -r), $net, disk $disk, sshd on port 22)"

if [ -f /{CMD_FILE} ]; then
    cd /root
    echo "{OUTPUT_BEGINS}"
    sh /{CMD_FILE} < /dev/null
    status=$?
    echo "{OUTPUT_ENDS}$status) ===="
else
    say "a shell on the console; 'exit' powers the guest off"
    setsid cttyhack sh -l
fi
cd /
sync
say "powering off"
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
"#
    )
}

/// The files under /etc (and root's profile).
fn etc_files() -> Vec<(&'static str, u32, String)> {
    vec![
        ("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n".into()),
        ("etc/group", 0o644, "root:x:0:\ntty:x:5:\n".into()),
        ("etc/shadow", 0o600, "root:*:1:0:99999:7:::\n".into()),
        ("etc/shells", 0o644, "/bin/sh\n/bin/ash\n".into()),
        (
            "etc/nsswitch.conf",
            0o644,
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n".into(),
        ),
        ("etc/hostname", 0o644, "hypocaust-guest\n".into()),
        ("etc/hosts", 0o644, "127.0.0.1 localhost hypocaust-guest\n".into()),
        ("etc/resolv.conf", 0o644, format!("nameserver {DNS}\n")),
        (
            "etc/profile",
            0o644,
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\nPS1='\\u@\\h:\\w\\$ '\n".into(),
        ),
    ]
}

/// Builds `Image`, `initramfs.cpio` and `disk.img` in `out` from the unpacked kernel and
/// user-space packages. `ssh_key` is a public key for root's authorized_keys; `smpcheck` is
/// the static program that becomes `/bin/smpcheck` (guests/smpcheck).
pub fn build(
    kernel_roots: Vec<PathBuf>,
    user_roots: Vec<PathBuf>,
    ssh_key: Option<&str>,
    smpcheck: &[u8],
    out: &Path,
    step: &dyn Fn(&str),
) -> Result<Built> {
    let kernel = Trees::new(kernel_roots);
    let user = Trees::new(user_roots);

    step("checking the kernel");
    let release = kernel_release(&kernel)?;
    let image = kernel_image(&kernel, &release)?;
    std::fs::copy(&image, out.join("Image"))
        .with_context(|| format!("copying {}", image.display()))?;

    step("resolving module dependencies");
    let mut mods = KernelModules::open(&kernel, &release)?;
    let (order, builtin) = load_order(MODULES, &mut mods)?;

    step("assembling the initramfs");
    let mut a = Archive::new();
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "usr/lib", "etc", "proc", "sys", "dev", "tmp"]
    {
        a.dir(dir, 0o755);
    }
    for dir in ["run", "mnt", "var/log", "etc/dropbear"] {
        a.dir(dir, 0o755);
    }
    a.dir("root", 0o700);
    a.symlink("lib", "usr/lib");
    a.symlink("var/run", "../run");
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);

    // busybox: one static binary; /init makes the applet links.
    let busybox = user.resolve("usr/bin/busybox").context("busybox-static has no busybox")?;
    let data = std::fs::read(&busybox)?;
    let info = riscv_elf(&data, "busybox")?;
    ensure!(info.interp.is_none() && info.needed.is_empty(), "busybox is not statically linked");
    a.file("bin/busybox", 0o755, &data);
    a.symlink("bin/sh", "busybox");
    // smpcheck: static too (built here, not from a package).
    let info = riscv_elf(smpcheck, "smpcheck")?;
    ensure!(info.interp.is_none() && info.needed.is_empty(), "smpcheck is not a static program");
    a.file(SMPCHECK, 0o755, smpcheck);

    // dropbear and dropbearkey, with the libraries they need.
    let mut needed: Vec<String> = Vec::new();
    let mut interps = BTreeSet::new();
    for (src, dest) in
        [("usr/sbin/dropbear", "usr/sbin/dropbear"), ("usr/bin/dropbearkey", "usr/bin/dropbearkey")]
    {
        let path = user.resolve(src).with_context(|| format!("dropbear-bin has no {src}"))?;
        let data = std::fs::read(&path)?;
        let info = riscv_elf(&data, src)?;
        interps.extend(info.interp);
        needed.extend(info.needed);
        a.file(dest, 0o755, &data);
    }
    let lib_dirs = ["usr/lib/riscv64-linux-gnu", "lib/riscv64-linux-gnu", "usr/lib", "lib"];
    let mut libraries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    while let Some(soname) = needed.pop() {
        if libraries.contains_key(&soname) {
            continue;
        }
        let path = lib_dirs
            .iter()
            .find_map(|d| user.resolve(&format!("{d}/{soname}")))
            .with_context(|| format!("no package provides {soname} (needed by dropbear)"))?;
        let data = std::fs::read(&path)?;
        needed.extend(riscv_elf(&data, &soname)?.needed);
        libraries.insert(soname, data);
    }
    for (soname, data) in &libraries {
        a.file(&format!("usr/lib/riscv64-linux-gnu/{soname}"), 0o755, data);
    }
    for interp in &interps {
        // /lib is usr/lib here: /lib/ld-linux-riscv64-lp64d.so.1 lives in usr/lib.
        let at = normalize(interp);
        let at = if at.starts_with("lib/") { format!("usr/{at}") } else { at };
        let name = at.rsplit('/').next().unwrap_or(&at).to_string();
        if libraries.contains_key(&name) {
            if !a.contains(&at) {
                a.symlink(&at, &format!("/usr/lib/riscv64-linux-gnu/{name}"));
            }
        } else {
            let path = user.resolve(interp).with_context(|| format!("no package has {interp}"))?;
            a.file(&at, 0o755, &std::fs::read(path)?);
        }
    }

    // The modules, decompressed, and /init.
    for name in &order {
        let data = mods.loaded.get(name).context("module read")?;
        a.file(&format!("usr/lib/modules/{release}/{name}.ko"), 0o644, data);
    }
    a.file("init", 0o755, init_script(&release, &order).as_bytes());
    for (path, mode, text) in etc_files() {
        a.file(path, mode, text.as_bytes());
    }
    if let Some(key) = ssh_key {
        a.dir("root/.ssh", 0o700);
        a.file("root/.ssh/authorized_keys", 0o600, format!("{}\n", key.trim()).as_bytes());
    }
    let bytes = a.finish();
    verify_initramfs(&bytes, &release, &order)?;
    std::fs::write(out.join("initramfs.cpio"), bytes)?;

    step("making the disk image");
    make_disk(&out.join("disk.img"))?;

    Ok(Built { release, modules: order, builtin, libraries: libraries.into_keys().collect() })
}

/// Reads the initramfs back and checks that what /init needs is there.
fn verify_initramfs(bytes: &[u8], release: &str, modules: &[String]) -> Result<()> {
    let entries = crate::cpio::read(bytes).map_err(|e| anyhow::anyhow!("initramfs: {e}"))?;
    let has = |name: &str| entries.iter().any(|e| e.name == name);
    let kind = |name: &str, ok: fn(&crate::cpio::Entry) -> bool| {
        entries.iter().find(|e| e.name == name).is_some_and(ok)
    };
    ensure!(
        kind("init", |e| e.is_file() && e.mode & 0o111 != 0)
            && kind("bin/sh", |e| e.is_symlink())
            && kind("usr/lib", |e| e.is_dir()),
        "the initramfs has no executable /init, /bin/sh link or /usr/lib directory"
    );
    let mut wanted: Vec<String> =
        ["init", "bin/busybox", "bin/sh", SMPCHECK, "usr/sbin/dropbear", "dev/console"]
            .map(String::from)
            .to_vec();
    wanted.extend(modules.iter().map(|m| format!("usr/lib/modules/{release}/{m}.ko")));
    let missing: Vec<&String> = wanted.iter().filter(|w| !has(w)).collect();
    ensure!(missing.is_empty(), "the initramfs lacks {missing:?}");
    Ok(())
}

/// Makes the ext4 disk image: [`DISK_MIB`] MiB holding `/marker.txt`.
pub fn make_disk(path: &Path) -> Result<()> {
    let mke2fs = provision::host_tool("mke2fs", "e2fsprogs")?;
    let dir = path.with_extension("root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(DISK_MARKER_FILE), format!("{DISK_MARKER}\n"))?;
    let _ = std::fs::remove_file(path);
    text_within(
        Command::new(&mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-L", "hypocaust", "-E", "root_owner=0:0", "-d"])
            .arg(&dir)
            .arg(path)
            .arg(format!("{DISK_MIB}M"))
            .env("LC_ALL", "C"),
        TOOL_TIMEOUT,
    )
    .context("making the ext4 disk image")?;
    std::fs::remove_dir_all(&dir)?;
    // Read the marker back, if debugfs (also e2fsprogs) is there.
    if let Some(debugfs) = provision::find_tool("debugfs") {
        let text = text_within(
            Command::new(debugfs).args(["-R", &format!("cat /{DISK_MARKER_FILE}")]).arg(path),
            TOOL_TIMEOUT,
        )?;
        ensure!(text.contains(DISK_MARKER), "the disk image lacks its marker: {text:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table {
        builtin: Vec<&'static str>,
        mods: Vec<(&'static str, &'static str)>,
        aliases: Vec<(&'static str, &'static str)>,
    }

    impl ModuleSource for Table {
        fn builtin(&self, name: &str) -> bool {
            self.builtin.contains(&name)
        }
        fn info(&mut self, name: &str) -> Result<Option<ModInfo>> {
            Ok(self.mods.iter().find(|(n, _)| *n == name).map(|(n, modinfo)| {
                parse_modinfo(format!("name={n}\0{}", modinfo.replace(';', "\0")).as_bytes())
            }))
        }
        fn alias(&mut self, alias: &str) -> Result<Option<String>> {
            Ok(self.aliases.iter().find(|(a, _)| *a == alias).map(|(_, m)| m.to_string()))
        }
    }

    #[test]
    fn modinfo_fields() {
        let info = parse_modinfo(
            b"license=GPL\0softdep=pre: crypto-crc32c post: x-y\0depends=jbd2,mbcache,crc16\0\
              alias=fs-ext4\0name=ext4\0vermagic=7.2.13+deb14-riscv64 SMP mod_unload\0",
        );
        assert_eq!(info.name, "ext4");
        assert_eq!(info.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(info.pre, ["crypto-crc32c"]);
        assert_eq!(info.post, ["x-y"]);
        assert_eq!(info.aliases, ["fs-ext4"]);
        assert!(parse_modinfo(b"depends=\0").depends.is_empty());
    }

    #[test]
    fn dependency_order() {
        // Today's Debian kernel, in miniature.
        let mut t = Table {
            builtin: vec!["virtio", "virtio_ring"],
            mods: vec![
                ("virtio_mmio", "depends=virtio,virtio_ring"),
                ("virtio_blk", "depends="),
                ("virtio_net", "depends=net_failover"),
                ("net_failover", "depends=failover"),
                ("failover", "depends="),
                ("ext4", "depends=jbd2,mbcache,crc16"),
                ("jbd2", "softdep=pre: crypto-crc32c;depends="),
                ("mbcache", "depends="),
                ("crc16", "depends="),
                ("crc32c_cryptoapi", "alias=crypto-crc32c;depends="),
                ("x", "softdep=pre: no-such-thing;depends="),
            ],
            aliases: vec![("crypto-crc32c", "crc32c-cryptoapi")],
        };
        let (order, builtin) =
            load_order(&["virtio_mmio", "virtio_blk", "virtio_net", "ext4", "x"], &mut t)
                .expect("resolves");
        assert_eq!(
            order,
            [
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "crc32c_cryptoapi",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4",
                "x"
            ]
        );
        assert_eq!(builtin, ["virtio", "virtio_ring"]);
        assert!(load_order(&["nonexistent"], &mut t).is_err());
    }

    #[test]
    fn dependency_cycles_are_errors() {
        let mut t = Table {
            builtin: vec![],
            mods: vec![("a", "depends=b"), ("b", "depends=a")],
            aliases: vec![],
        };
        let err = load_order(&["a"], &mut t).expect_err("a cycle");
        assert!(err.to_string().contains("cycle"), "{err}");
    }

    #[test]
    fn image_magic() {
        let mut image = vec![0u8; 0x1000];
        image[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes());
        image[0x30..0x38].copy_from_slice(b"RISCV\0\0\0");
        image[0x38..0x3c].copy_from_slice(b"RSC\x05");
        assert_eq!(check_image(&image).expect("an Image"), 0x1000);
        image[0x38] = b'X';
        assert!(check_image(&image).is_err());
    }

    #[test]
    fn paths_and_symlinks() {
        assert_eq!(normalize("/lib/../usr/lib/./x"), "usr/lib/x");
        let root = std::env::temp_dir().join(format!("xtask-trees-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let libdir = root.join("usr/lib/riscv64-linux-gnu");
        std::fs::create_dir_all(&libdir).expect("mkdir");
        std::fs::write(libdir.join("libz.so.1.3"), b"z").expect("write");
        std::os::unix::fs::symlink("libz.so.1.3", libdir.join("libz.so.1")).expect("symlink");
        std::os::unix::fs::symlink("riscv64-linux-gnu/libz.so.1", root.join("usr/lib/ld.so"))
            .expect("symlink");
        let trees = Trees::new(vec![root.join("none"), root.clone()]);
        let want = Some(libdir.join("libz.so.1.3"));
        assert_eq!(trees.resolve("usr/lib/riscv64-linux-gnu/libz.so.1"), want);
        assert_eq!(trees.resolve("/lib/ld.so"), want, "merged /usr");
        assert_eq!(trees.resolve("usr/lib/nothing"), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn init_script_mentions_everything() {
        let s = init_script("7.2.13+deb14-riscv64", &["failover".into(), "ext4".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in failover ext4; do"));
        assert!(s.contains("insmod /lib/modules/7.2.13+deb14-riscv64/$m.ko"));
        assert!(s.contains(READY) && s.contains(OUTPUT_BEGINS) && s.contains(OUTPUT_ENDS));
        assert!(s.contains("poweroff -f"));
    }
}
