//! The Linux guest: Debian's riscv64 kernel with an initramfs of busybox and dropbear, and
//! a small ext4 disk (docs/guests.md). [`images`] fetches what is missing and builds the
//! images once per set of package versions; `cargo xtask fetch-guests` refreshes them;
//! `cargo xtask linux` boots them ([`run`]).

pub mod build;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::debian::{self, Apt, Package};
use crate::util::{fnv1a, text_within};

/// Debian suites to take the packages from, in order: `testing` only when `unstable`
/// cannot be had (its index caught mid-sync, twice).
const SUITES: &[&str] = &["unstable", "testing"];
/// The kernel metapackage: it depends on the current `linux-image-<abi>` package.
const KERNEL_META: &str = "linux-image-riscv64";
/// User space: a static busybox, and dropbear with its libraries.
const USERLAND: &[&str] = &["busybox-static", "dropbear-bin"];
/// How many levels of `Depends` are followed from [`USERLAND`] (dropbear's libraries and
/// theirs).
const DEPENDS_DEPTH: usize = 2;
/// The index is refreshed when older than this (`fetch-guests` always refreshes it).
const REFRESH_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A refresh that failed (offline) is not tried again for this long.
const RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The guest images, ready to boot.
#[derive(Clone, Debug)]
pub struct LinuxImages {
    /// The kernel, a flat RISC-V `Image`.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio, uncompressed).
    pub initramfs: PathBuf,
    /// The pristine disk image: copy it before a run writes to it.
    pub disk: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// The modules /init loads, in order.
    pub modules: Vec<String>,
    /// The packages the images were built from.
    pub packages: Vec<Package>,
    /// The private key whose public half is root's authorized key (None without ssh-keygen).
    pub ssh_key: Option<PathBuf>,
}

/// The cache directory: `$XDG_CACHE_HOME/hypocaust`, or `~/.cache/hypocaust`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?,
        )
        .join(".cache"),
    };
    Ok(base.join("hypocaust"))
}

/// Whether a package belongs to the kernel or to user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Kernel,
    User,
}

/// The resolved package set, saved as `packages.txt` in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PackageSet {
    mirror: String,
    suite: String,
    packages: Vec<(Role, Package)>,
}

impl PackageSet {
    fn to_text(&self) -> String {
        let mut s = format!(
            "# The Linux guest's packages (cargo xtask fetch-guests)\nmirror {}\nsuite {}\n",
            self.mirror, self.suite
        );
        for (role, p) in &self.packages {
            let role = if *role == Role::Kernel { "kernel" } else { "user" };
            s.push_str(&format!("{role} {} {} {}\n", p.name, p.version, p.size));
        }
        s
    }

    fn parse(text: &str) -> Option<Self> {
        let mut set = PackageSet { mirror: String::new(), suite: String::new(), packages: vec![] };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["mirror", m] => set.mirror = m.to_string(),
                ["suite", s] => set.suite = s.to_string(),
                [role @ ("kernel" | "user"), name, version, size] => set.packages.push((
                    if *role == "kernel" { Role::Kernel } else { Role::User },
                    Package {
                        name: name.to_string(),
                        version: version.to_string(),
                        size: size.parse().ok()?,
                    },
                )),
                _ => return None,
            }
        }
        (!set.mirror.is_empty() && !set.suite.is_empty() && !set.packages.is_empty()).then_some(set)
    }
}

fn show_one(apt: &Apt, name: &str) -> Result<debian::Stanza> {
    apt.show(&[name.to_string()])?
        .remove(name)
        .with_context(|| format!("{} {} has no riscv64 package {name}", apt.mirror, apt.suite))
}

/// Resolves today's packages: the kernel behind [`KERNEL_META`] and [`USERLAND`] with
/// their dependencies.
fn resolve(apt: &Apt) -> Result<PackageSet> {
    let meta = show_one(apt, KERNEL_META)?;
    let image = meta
        .depends()
        .into_iter()
        .flatten()
        .find(|n| n.starts_with("linux-image-") && n.ends_with("-riscv64") && n != KERNEL_META)
        .with_context(|| format!("{KERNEL_META} depends on no linux-image-<version>-riscv64"))?;
    // "linux-image-7.2.13+deb14-riscv64": its parts are linux-*-7.2.13+deb14-riscv64.
    let abi = image.trim_start_matches("linux-image-").to_string();
    let image_record = show_one(apt, &image)?;
    let parts: Vec<String> = image_record
        .depends()
        .into_iter()
        .flatten()
        .filter(|n| n.starts_with("linux-") && n.ends_with(&abi))
        .collect();
    let records = apt.show(&parts)?;
    let mut packages = vec![(Role::Kernel, image_record.package()?)];
    for name in &parts {
        let record = records
            .get(name)
            .with_context(|| format!("{image} depends on {name}, which is missing"))?;
        packages.push((Role::Kernel, record.package()?));
    }

    let mut seen: BTreeMap<String, Package> = BTreeMap::new();
    let mut groups: Vec<Vec<String>> = USERLAND.iter().map(|n| vec![n.to_string()]).collect();
    for depth in 0..=DEPENDS_DEPTH {
        let names: Vec<String> = groups.iter().flatten().cloned().collect();
        let records = apt.show(&names)?;
        let mut next = Vec::new();
        for group in &groups {
            // The first alternative that is a real package.
            let Some(record) = group.iter().find_map(|n| records.get(n)) else {
                if depth == 0 {
                    bail!("{} {} has no riscv64 package {}", apt.mirror, apt.suite, group[0]);
                }
                continue;
            };
            let package = record.package()?;
            if seen.contains_key(&package.name) {
                continue;
            }
            next.extend(record.depends());
            seen.insert(package.name.clone(), package);
        }
        groups = next;
    }
    packages.extend(seen.into_values().map(|p| (Role::User, p)));
    Ok(PackageSet { mirror: apt.mirror.clone(), suite: apt.suite.clone(), packages })
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Where package `p` is unpacked.
fn unpacked(cache: &Path, p: &Package) -> PathBuf {
    cache.join("packages").join(p.file_stem())
}

/// Downloads and unpacks the packages of `set` that are not unpacked yet.
fn fetch_packages(cache: &Path, apt: &Apt, set: &PackageSet) -> Result<()> {
    let missing: Vec<Package> = set
        .packages
        .iter()
        .map(|(_, p)| p.clone())
        .filter(|p| !unpacked(cache, p).is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let total: u64 = missing.iter().map(|p| p.size).sum();
    eprintln!(
        "xtask: downloading {} Debian riscv64 package{} ({:.1} MB) from {} {}",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        total as f64 / 1e6,
        apt.mirror,
        apt.suite
    );
    let dir = cache.join("packages");
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let progress = bar(total, "  {msg:10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}");
    progress.set_message("download");
    let debs = apt.download(&missing, &tmp, &|bytes| progress.set_position(bytes.min(total)));
    progress.finish_and_clear();
    let debs = debs.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })?;
    let unpack = bar(missing.len() as u64, "  {msg:40} [{bar:20}] {pos}/{len}");
    for p in &missing {
        unpack.set_message(format!("unpacking {}", p.name));
        let into = tmp.join(format!("{}.tree", p.file_stem()));
        text_within(
            Command::new("dpkg-deb").arg("-x").arg(&debs[&p.name]).arg(&into),
            Duration::from_secs(600),
        )
        .with_context(|| format!("unpacking {}", p.name))?;
        let dest = unpacked(cache, p);
        if std::fs::rename(&into, &dest).is_err() && !dest.is_dir() {
            bail!("could not move {} to {}", into.display(), dest.display());
        }
        unpack.inc(1);
    }
    unpack.finish_and_clear();
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Refreshes the index and resolves and fetches today's packages: the machine's mirrors
/// in turn, `unstable` then `testing`; a failed download gets a second `apt-get update`
/// and one retry (a mirror caught mid-sync).
fn refresh(cache: &Path) -> Result<PackageSet> {
    let mirrors = debian::machine_mirrors()?;
    if mirrors.is_empty() {
        bail!("the machine's apt sources (/etc/apt/sources.list, sources.list.d) name no mirror");
    }
    let mut errors = Vec::new();
    for mirror in &mirrors {
        for suite in SUITES {
            let attempt = || -> Result<PackageSet> {
                let apt = Apt::configure(&cache.join("apt"), mirror, suite)?;
                eprintln!("xtask: reading the package index of {mirror} {suite} (riscv64)");
                apt.update()?;
                let set = resolve(&apt)?;
                if let Err(e) = fetch_packages(cache, &apt, &set) {
                    eprintln!("xtask: {e:#}; updating the index and trying again");
                    apt.update()?;
                    let set = resolve(&apt)?;
                    fetch_packages(cache, &apt, &set)?;
                    return Ok(set);
                }
                Ok(set)
            };
            match attempt() {
                Ok(set) => return Ok(set),
                Err(e) => {
                    eprintln!("xtask: {mirror} {suite}: {e:#}");
                    errors.push(format!("{mirror} {suite}"));
                }
            }
        }
    }
    bail!("could not fetch the Linux guest's packages from {} (errors above)", errors.join(", "))
}

/// How [`prepare`] treats the package index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Refresh it when it is older than a day (or missing).
    IfStale,
    /// Refresh it now.
    Always,
}

/// The source of the build steps and the initramfs writer: any change rebuilds the images.
const BUILDER_SOURCE: &[&str] = &[include_str!("build.rs"), include_str!("../cpio.rs")];

/// The private key (and its public half) for ssh into the guest, made with ssh-keygen on
/// first use; None if ssh-keygen is not there.
fn ssh_key(cache: &Path) -> Option<(PathBuf, String)> {
    let key = cache.join("ssh").join("id_ed25519");
    let public = key.with_extension("pub");
    if !public.exists() {
        let keygen = crate::provision::find_tool("ssh-keygen")?;
        std::fs::create_dir_all(key.parent()?).ok()?;
        let _ = std::fs::remove_file(&key);
        let made = text_within(
            Command::new(keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "hypocaust-xtask", "-f"])
                .arg(&key),
            Duration::from_secs(60),
        );
        if let Err(e) = made {
            eprintln!("xtask: warning: no ssh key for the guest: {e:#}");
            return None;
        }
    }
    let text = std::fs::read_to_string(&public).ok()?;
    Some((key, text.trim().to_string()))
}

/// Reads a build's `manifest.txt`.
fn read_manifest(dir: &Path, set: &PackageSet, key: Option<PathBuf>) -> Option<LinuxImages> {
    let text = std::fs::read_to_string(dir.join("manifest.txt")).ok()?;
    let mut release = None;
    let mut modules = Vec::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("release ") {
            release = Some(r.to_string());
        } else if let Some(m) = line.strip_prefix("module ") {
            modules.push(m.to_string());
        }
    }
    let images = LinuxImages {
        kernel: dir.join("Image"),
        initramfs: dir.join("initramfs.cpio"),
        disk: dir.join("disk.img"),
        release: release?,
        modules,
        packages: set.packages.iter().map(|(_, p)| p.clone()).collect(),
        ssh_key: key,
    };
    [&images.kernel, &images.initramfs, &images.disk].iter().all(|p| p.is_file()).then_some(images)
}

/// How long ago `dir` was last used (its `last-used` file, or the directory itself).
fn unused_for(dir: &Path) -> Duration {
    let modified = std::fs::metadata(dir.join("last-used"))
        .or_else(|_| std::fs::metadata(dir))
        .and_then(|m| m.modified());
    modified.ok().and_then(|m| m.elapsed().ok()).unwrap_or_default()
}

/// Removes what is no longer used: unpacked packages that are not in `set`, and builds
/// other than `keep` (and leftovers of interrupted runs) unused for a day; another
/// checkout's xtask may be using a build of its own right now.
fn prune(cache: &Path, set: &PackageSet, keep: &Path) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let wanted: Vec<PathBuf> = set.packages.iter().map(|(_, p)| unpacked(cache, p)).collect();
    for (dir, is_build) in [(cache.join("packages"), false), (cache.join("builds"), true)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let leftover = entry.file_name().to_string_lossy().starts_with('.');
            let unused = if leftover || is_build {
                path != keep && unused_for(&path) > DAY
            } else {
                !wanted.contains(&path)
            };
            if unused {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// The guest images, fetched and built if needed (see [`Refresh`]). Offline, the last
/// package set is used.
pub fn prepare(refresh_index: Refresh) -> Result<LinuxImages> {
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache)?;
    crate::provision::host_tool("dpkg-deb", "dpkg")?;
    let saved_path = cache.join("packages.txt");
    let saved = std::fs::read_to_string(&saved_path).ok().and_then(|t| PackageSet::parse(&t));
    let attempt = cache.join("apt").join("last-attempt");
    let age = |path: &Path| {
        let modified = std::fs::metadata(path).ok()?.modified().ok()?;
        Some(std::time::SystemTime::now().duration_since(modified).unwrap_or_default())
    };
    let stale = match &saved {
        None => true,
        Some(s) => {
            Apt::configure(&cache.join("apt"), &s.mirror, &s.suite)?
                .index_age()
                .is_none_or(|a| a > REFRESH_AFTER)
                // Offline, one attempt an hour is enough.
                && age(&attempt).is_none_or(|a| a > RETRY_AFTER)
        }
    };
    let set = if refresh_index == Refresh::Always || stale {
        std::fs::create_dir_all(cache.join("apt"))?;
        std::fs::write(&attempt, "")?;
        match refresh(&cache) {
            Ok(set) => set,
            Err(e) if refresh_index == Refresh::IfStale && saved.is_some() => {
                eprintln!("xtask: warning: {e:#}; using the packages fetched before");
                saved.clone().expect("checked")
            }
            Err(e) => return Err(e),
        }
    } else {
        saved.clone().expect("not stale")
    };
    if saved.as_ref() != Some(&set) {
        std::fs::write(&saved_path, set.to_text())?;
    }
    // Packages pruned or lost since: fetch them again (same versions).
    let apt = Apt::configure(&cache.join("apt"), &set.mirror, &set.suite)?;
    if let Err(e) = fetch_packages(&cache, &apt, &set) {
        bail!("{e:#}\n(`cargo xtask fetch-guests` refreshes the package index)");
    }

    let key = ssh_key(&cache);
    // smpcheck is built from this checkout (cargo does nothing when it is up to date); a
    // changed binary is a new build of the images.
    crate::provision::rust_target()?;
    let smpcheck = crate::artifacts::smpcheck().context("building smpcheck (guests/smpcheck)")?;
    let smpcheck_bytes =
        std::fs::read(&smpcheck).with_context(|| format!("reading {}", smpcheck.display()))?;
    let mut hashed =
        set.packages.iter().map(|(_, p)| format!("{} {}\n", p.name, p.version)).collect::<String>();
    hashed.extend(BUILDER_SOURCE.iter().copied());
    hashed.push_str(key.as_ref().map_or("", |k| k.1.as_str()));
    hashed.push_str(&format!(
        "\nsmpcheck {:016x} {}\n",
        fnv1a(&smpcheck_bytes),
        smpcheck_bytes.len()
    ));
    let dir = cache.join("builds").join(format!("{:016x}", fnv1a(hashed.as_bytes())));
    if let Some(images) = read_manifest(&dir, &set, key.as_ref().map(|k| k.0.clone())) {
        let _ = std::fs::write(dir.join("last-used"), "");
        return Ok(images);
    }

    let tmp = cache.join("builds").join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let roots = |role| {
        set.packages.iter().filter(|(r, _)| *r == role).map(|(_, p)| unpacked(&cache, p)).collect()
    };
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let built = build::build(
        roots(Role::Kernel),
        roots(Role::User),
        key.as_ref().map(|k| k.1.as_str()),
        &smpcheck_bytes,
        &tmp,
        &|step| spinner.set_message(format!("building the Linux guest: {step}")),
    );
    spinner.finish_and_clear();
    let built = built.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })?;
    let mut manifest = format!(
        "# The Linux guest's images (cargo xtask fetch-guests)\nrelease {}\n",
        built.release
    );
    for m in &built.modules {
        manifest.push_str(&format!("module {m}\n"));
    }
    for m in &built.builtin {
        manifest.push_str(&format!("builtin {m}\n"));
    }
    for l in &built.libraries {
        manifest.push_str(&format!("library {l}\n"));
    }
    manifest.push_str(&set.to_text());
    std::fs::write(tmp.join("manifest.txt"), manifest)?;
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another run built the same images meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let _ = std::fs::write(dir.join("last-used"), "");
    prune(&cache, &set, &dir);
    read_manifest(&dir, &set, key.map(|k| k.0)).context("the images just built are incomplete")
}

/// The guest images, fetched and built if needed; what other commands call.
pub fn images() -> Result<LinuxImages> {
    prepare(Refresh::IfStale)
}

/// `cargo xtask fetch-guests`: refreshes the index, fetches and builds, and says what.
pub fn fetch_command() -> Result<bool> {
    let images = prepare(Refresh::Always)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!("Linux guest (kernel {}):", images.release);
    println!("  Image      {} ({:.1} MB)", images.kernel.display(), size(&images.kernel));
    println!("  initramfs  {} ({:.1} MB)", images.initramfs.display(), size(&images.initramfs));
    println!("  disk       {} ({:.1} MB)", images.disk.display(), size(&images.disk));
    println!("  modules    {}", images.modules.join(" "));
    if let Some(key) = &images.ssh_key {
        println!("  ssh key    {}", key.display());
    }
    println!("packages:");
    for p in &images.packages {
        println!("  {:<40} {}", p.name, p.version);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_set_round_trip() {
        let set = PackageSet {
            mirror: "http://mirror.example/debian".into(),
            suite: "unstable".into(),
            packages: vec![
                (
                    Role::Kernel,
                    Package {
                        name: "linux-binary-7-riscv64".into(),
                        version: "7-1".into(),
                        size: 9,
                    },
                ),
                (Role::User, Package { name: "zlib1g".into(), version: "1:1.3-4".into(), size: 1 }),
            ],
        };
        assert_eq!(PackageSet::parse(&set.to_text()), Some(set));
        assert_eq!(PackageSet::parse("mirror x\n"), None);
    }
}
