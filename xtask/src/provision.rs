//! Making sure the tools exist: the Rust target, QEMU with OpenSBI. Installs what is
//! missing when it can (rustup; apt-get as root), otherwise says exactly what to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{command_output, run_status};

/// The target hypocaust is built for: no F/D, so hypocaust can never touch a guest's FP
/// registers (they stay live across exits).
pub const HYPERVISOR_TARGET: &str = "riscv64imac-unknown-none-elf";
/// The target guest test kernels are built for.
pub const GUEST_TARGET: &str = "riscv64gc-unknown-none-elf";

/// OpenSBI as QEMU's `-bios default` loads it (Debian's qemu-system-data, or a link to
/// Debian's opensbi package).
pub const OPENSBI: &str = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin";

/// The QEMU binary's name on PATH.
const QEMU_NAME: &str = "qemu-system-riscv64";

/// The environment variable that points xtask at another QEMU binary.
pub const QEMU_VARIABLE: &str = "HYPOCAUST_QEMU";

/// The oldest QEMU the tests are known to pass on (the tested versions: docs/testing.md).
pub const QEMU_MIN: (u32, u32) = (10, 0);

/// The QEMU binary every run uses: `$HYPOCAUST_QEMU`, else `qemu-system-riscv64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os(QEMU_VARIABLE)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(QEMU_NAME))
}

/// `(major, minor)` of a QEMU binary, from `--version` ("QEMU emulator version 10.0.2 ...").
pub fn qemu_version(binary: &Path) -> Option<(u32, u32)> {
    let out = command_output(Command::new(binary).arg("--version")).ok()?;
    parse_qemu_version(&out)
}

fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

pub fn is_root() -> bool {
    command_output(Command::new("id").arg("-u")).map(|s| s.trim() == "0").unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Adds the rustup targets if they are missing.
pub fn rust_target() -> Result<()> {
    let installed = command_output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("`rustup` is needed to add the riscv64 targets; install Rust with rustup")?;
    for target in [HYPERVISOR_TARGET, GUEST_TARGET] {
        if installed.lines().any(|l| l.trim() == target) {
            continue;
        }
        eprintln!("xtask: adding the Rust target {target}");
        run_status(Command::new("rustup").args(["target", "add", target])).with_context(|| {
            format!("could not add the target; run `rustup target add {target}`")
        })?;
    }
    Ok(())
}

/// Installs Debian packages (as root), or fails naming the command to run.
pub fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!("{why} is missing; install it with: sudo apt-get install {list}");
    }
    if !on_path("apt-get") {
        bail!(
            "{why} is missing and this is not a Debian-like system; install the equivalent of: {list}"
        );
    }
    eprintln!("xtask: installing {list} ({why})");
    let install = || {
        run_status(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        // The package lists may be missing or stale on a fresh machine.
        run_status(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))
            .context("apt-get update failed")?;
        install()
            .with_context(|| format!("could not install {list}; run: apt-get install {list}"))?;
    }
    Ok(())
}

/// Makes sure a QEMU of at least [`QEMU_MIN`] and its OpenSBI firmware are there:
/// `$HYPOCAUST_QEMU` if set (any version; a warning below the minimum), else installs
/// Debian's (on Debian 12 from its backports suite, on the mirror the machine's apt sources
/// name) as root, or says exactly what to run.
pub fn qemu() -> Result<()> {
    if let Some(chosen) = std::env::var_os(QEMU_VARIABLE).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&chosen);
        let Some(version) = qemu_version(&path) else {
            bail!(
                "{QEMU_VARIABLE}={} does not run as a QEMU (`--version` failed); point it at a \
                 qemu-system-riscv64 binary or unset it",
                path.display()
            );
        };
        if version < QEMU_MIN {
            eprintln!(
                "xtask: warning: {QEMU_VARIABLE} is QEMU {}.{}; the tests are known to pass on \
                 QEMU {}.{} and later",
                version.0, version.1, QEMU_MIN.0, QEMU_MIN.1
            );
        }
        return Ok(());
    }
    let current = on_path(QEMU_NAME).then(|| qemu_version(Path::new(QEMU_NAME))).flatten();
    if current.is_some_and(|v| v >= QEMU_MIN) && Path::new(OPENSBI).exists() {
        return Ok(());
    }
    let found = current.map_or("no QEMU for riscv64".to_string(), |(a, b)| format!("QEMU {a}.{b}"));
    let why = format!(
        "QEMU {}.{} or later for riscv64 (this machine has {found}; or set {QEMU_VARIABLE})",
        QEMU_MIN.0, QEMU_MIN.1
    );
    let release = debian_release();
    match release.as_deref() {
        // Debian 12's own QEMU is 7.2: QEMU 10 comes from its backports suite.
        Some("bookworm") => install_from_backports("bookworm", &why)?,
        _ => apt_install(&["qemu-system-riscv", "qemu-system-data"], &why)
            .or_else(|_| apt_install(&["qemu-system-misc", "qemu-system-data"], &why))?,
    }
    match qemu_version(Path::new(QEMU_NAME)) {
        Some(v) if v >= QEMU_MIN => Ok(()),
        other => bail!(
            "after installing, {QEMU_NAME} is {}; install QEMU {}.{} or later (Debian 13, or \
             Debian 12's backports suite) or set {QEMU_VARIABLE} to one",
            other.map_or("missing".to_string(), |(a, b)| format!("QEMU {a}.{b}")),
            QEMU_MIN.0,
            QEMU_MIN.1
        ),
    }
}

/// The Debian codename of this machine (`VERSION_CODENAME` of /etc/os-release), if it is
/// Debian.
fn debian_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    };
    (field("ID").as_deref() == Some("debian")).then(|| field("VERSION_CODENAME")).flatten()
}

/// Installs QEMU from `<release>-backports` of the mirror the machine's apt sources name,
/// adding that suite to apt's sources first if no source names it.
fn install_from_backports(release: &str, why: &str) -> Result<()> {
    let suite = format!("{release}-backports");
    let mirror = crate::debian::machine_mirrors()?
        .into_iter()
        .next()
        .context("the machine's apt sources name no mirror to take the backports suite from")?;
    let file = format!("/etc/apt/sources.list.d/hypocaust-{suite}.sources");
    let source = format!(
        "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {}\n",
        crate::debian::KEYRING
    );
    let packages = ["qemu-system-riscv", "qemu-system-data"];
    let listed = crate::debian::machine_suites()?.contains(&suite);
    if !is_root() {
        let add = if listed {
            String::new()
        } else {
            format!("printf '{}' | sudo tee {file} && ", source.replace('\n', "\\n"))
        };
        bail!(
            "{why} is missing; install it with: {add}sudo apt-get update && sudo apt-get \
             install -y --no-install-recommends -t {suite} {}",
            packages.join(" ")
        );
    }
    if !listed {
        eprintln!("xtask: adding Debian's {suite} suite of {mirror} to apt's sources ({file})");
        std::fs::write(&file, source).with_context(|| format!("writing {file}"))?;
    }
    eprintln!("xtask: installing {} from {suite} ({why})", packages.join(" "));
    run_status(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed")?;
    run_status(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "-t", &suite])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| {
        format!("could not install QEMU; run: apt-get install -t {suite} {}", packages.join(" "))
    })
}

/// Where `program` is: on PATH, or in the sbin directories a non-root PATH may lack.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The path of host tool `program`, installing Debian package `package` if it is missing
/// (as root; otherwise the error names the command to run).
pub fn host_tool(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = find_tool(program) {
        return Ok(path);
    }
    apt_install(&[package], &format!("`{program}` ({package})"))?;
    find_tool(program)
        .with_context(|| format!("`{program}` is still missing after installing {package}"))
}

/// Everything `run`, `suite` and `test` need.
pub fn all() -> Result<()> {
    rust_target()?;
    qemu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions() {
        let v = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright";
        assert_eq!(parse_qemu_version(v), Some((10, 0)));
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.22 (Debian)"), Some((7, 2)));
        assert_eq!(parse_qemu_version("nonsense"), None);
        assert!((7, 2) < QEMU_MIN && (10, 1) >= QEMU_MIN);
    }
}
