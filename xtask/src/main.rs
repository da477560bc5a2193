//! `cargo xtask`: build, run and test hypocaust. See `cargo xtask --help`.

mod artifacts;
mod provision;
mod qemu;
mod suite;
mod tap;
mod test;
mod util;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test hypocaust", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build hypocaust and boot it in QEMU `virt` (serial on this terminal; Ctrl-A X quits).
    Run {
        /// Number of harts.
        #[arg(long, default_value_t = 1)]
        smp: usize,
        /// RAM in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// Stop QEMU after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Guest kernel (Linux Image, ELF or raw binary); default: the guest test kernel,
        /// with the suite's virtio disk and network device passed through.
        #[arg(long)]
        kernel: Option<std::path::PathBuf>,
        /// Guest initrd.
        #[arg(long, requires = "kernel")]
        initrd: Option<std::path::PathBuf>,
        /// Guest kernel command line.
        #[arg(long, default_value = "")]
        append: String,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 256)]
        guest_memory: u32,
        /// Hypocaust's log level (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Run every test: host unit tests, then the QEMU tests.
    Test,
    /// Check formatting and run clippy on the host crates and the bare-metal binaries.
    Lint,
    /// Run the guest test suite and print its per-test results.
    Suite {
        /// Run the test kernel directly on QEMU only (the oracle).
        #[arg(long)]
        native: bool,
        /// Only tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Legacy virtio-mmio transports (Version 1) instead of modern ones (Version 2).
        #[arg(long)]
        legacy: bool,
    },
}

fn run() -> Result<bool> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { smp, memory, timeout, kernel, initrd, append, guest_memory, log } => {
            provision::all()?;
            // The test kernel gets the suite's machine: its devices, passed through.
            let test_kernel = kernel.is_none();
            let (name, kernel) = match kernel {
                Some(k) => {
                    (k.file_name().map_or("guest".into(), |n| n.to_string_lossy().into_owned()), k)
                }
                None => ("testkernel".to_string(), artifacts::testkernel()?),
            };
            let bundle = qemu::log_dir().join("run-bundle.img");
            let name: String = name.chars().take(bundle::NAME_LEN).collect();
            artifacts::bundle(
                &[artifacts::GuestFiles {
                    name,
                    kernel,
                    initrd,
                    bootargs: append,
                    memory_mib: guest_memory,
                    vcpus: 1,
                    virtio_slots: if test_kernel { suite::ALL_VIRTIO_SLOTS } else { 0 },
                }],
                &bundle,
            )?;
            let mut machine = suite::hypocaust_machine(bundle)?;
            if test_kernel {
                suite::add_devices(&mut machine, "run", false)?;
            }
            machine.smp = smp;
            machine.memory_mib = memory;
            machine.append = Some(format!("hypocaust.log={log}"));

            eprintln!("xtask: {}", machine.command_line());
            let status = qemu::run_interactive(&machine, timeout.map(Duration::from_secs))?;
            Ok(status.success())
        }
        Cmd::Test => test::command(),
        Cmd::Lint => lint(),
        Cmd::Suite { native, filter, legacy } => {
            suite::command(native, &suite::Options { filter, legacy })
        }
    }
}

/// `cargo fmt --check`, then clippy with warnings denied, for both targets.
fn lint() -> Result<bool> {
    provision::rust_target()?;
    let cargo = || {
        let mut c = std::process::Command::new(env!("CARGO"));
        c.current_dir(util::root());
        c
    };
    util::run_status(cargo().args(["fmt", "--all", "--check"]))?;
    util::run_status(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    for (target, package) in
        [(provision::HYPERVISOR_TARGET, "hypervisor"), (provision::GUEST_TARGET, "testkernel")]
    {
        util::run_status(cargo().args([
            "clippy",
            "--release",
            "--target",
            target,
            "-p",
            package,
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
