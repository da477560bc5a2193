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

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-riscv64";

/// OpenSBI as QEMU's `-bios default` loads it (Debian's qemu-system-data).
const OPENSBI: &str = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin";

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

/// Makes sure QEMU and its OpenSBI firmware are there.
pub fn qemu() -> Result<()> {
    if on_path(QEMU) && Path::new(OPENSBI).exists() {
        return Ok(());
    }
    apt_install(&["qemu-system-misc", "qemu-system-data"], "QEMU for riscv64 (qemu-system-misc)")?;
    if !on_path(QEMU) {
        bail!("{QEMU} is still not on PATH after installing qemu-system-misc");
    }
    Ok(())
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
