//! `cargo xtask`: build, run and test hypocaust. See `cargo xtask --help`.

mod artifacts;
mod bench;
mod config;
mod cpio;
mod debian;
mod gdb;
mod linux;
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
use qemu::{Board, Firmware};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test hypocaust", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build hypocaust and boot it in QEMU `virt` with the Debian Linux guest (console on
    /// this terminal, virtio disk and network, the guest's sshd forwarded; Ctrl-A X quits),
    /// or with the guests and devices of a configuration file (docs/config.md).
    Run {
        /// A configuration file (TOML) describing the machine, the guests and their devices,
        /// instead of the flags below (docs/config.md; examples/).
        #[arg(long, value_name = "FILE", conflicts_with_all = [
            "smp", "memory", "native", "testkernel", "kernel", "initrd", "append",
            "guest_memory", "ssh_port", "firmware", "cpu",
        ])]
        config: Option<std::path::PathBuf>,
        /// Number of harts.
        #[arg(long, default_value_t = 1)]
        smp: usize,
        /// RAM of the QEMU machine in MiB (under hypocaust).
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// Stop QEMU after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Boot the guest directly on QEMU, without hypocaust.
        #[arg(long)]
        native: bool,
        /// The guest test suite's kernel as the guest, with the suite's virtio disk and
        /// network device.
        #[arg(long, conflicts_with = "kernel")]
        testkernel: bool,
        /// A guest kernel of your own (Linux Image, ELF or raw binary), without devices.
        #[arg(long)]
        kernel: Option<std::path::PathBuf>,
        /// Guest initrd (with --kernel).
        #[arg(long, requires = "kernel")]
        initrd: Option<std::path::PathBuf>,
        /// Guest kernel command line (with the Linux guest: added to its own).
        #[arg(long, default_value = "")]
        append: String,
        /// Guest RAM in MiB (default 256).
        #[arg(long)]
        guest_memory: Option<u32>,
        /// Host port forwarded to the Linux guest's sshd (default 10022, or a free one).
        #[arg(long)]
        ssh_port: Option<u16>,
        /// Hypocaust's log level (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log: String,
        /// The M-mode firmware under hypocaust.
        /// (default: hypocaust's on virt, OpenSBI on sifive_u)
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// QEMU's -cpu (default rv64,h=false, an Sv57 hart; sifive-u54: Sv39 only).
        #[arg(long, value_name = "MODEL")]
        cpu: Option<String>,
        /// The QEMU board (sifive_u: needs --firmware opensbi; no virtio, so the Linux
        /// guest boots from its initramfs).
        #[arg(long, value_enum, default_value_t = Board::default())]
        machine: Board,
    },
    /// Boot the Debian Linux guest under hypocaust (or natively), interactively or to run
    /// shell commands.
    Linux {
        /// Boot directly on QEMU, without hypocaust.
        #[arg(long)]
        native: bool,
        /// Shell commands to run in the guest instead of a console shell: their output is
        /// printed between marker lines and their exit status becomes xtask's.
        #[arg(long)]
        cmd: Option<String>,
        /// Harts natively; vCPUs (and harts) under hypocaust.
        #[arg(long, default_value_t = 1)]
        smp: usize,
        /// Stop QEMU after this many seconds (with --cmd, default 180 natively, 900 under
        /// hypocaust).
        #[arg(long)]
        timeout: Option<u64>,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = linux::run::GUEST_MIB)]
        guest_memory: u32,
        /// RAM of the QEMU machine in MiB (under hypocaust).
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// More guest kernel command-line arguments.
        #[arg(long, default_value = "")]
        append: String,
        /// Host port forwarded to the guest's sshd (default 10022, or a free one).
        #[arg(long)]
        ssh_port: Option<u16>,
        /// Hypocaust's log level.
        #[arg(long, default_value = "info")]
        log: String,
        /// With --cmd: print only the command's output, not the whole console.
        #[arg(long)]
        quiet: bool,
        /// The M-mode firmware under hypocaust.
        /// (default: hypocaust's on virt, OpenSBI on sifive_u)
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// QEMU's -cpu (default rv64,h=false; e.g. rv64,h=false,sv48=off for an Sv39-only
        /// host, where hypocaust keeps its window).
        #[arg(long, value_name = "MODEL")]
        cpu: Option<String>,
        /// The QEMU board (sifive_u: needs --firmware opensbi; no disk or network there).
        #[arg(long, value_enum, default_value_t = Board::default())]
        machine: Board,
    },
    /// Download Debian's riscv64 kernel, busybox and dropbear (unstable) and build the Linux
    /// guest's images (kernel, initramfs, disk) in the user cache directory.
    FetchGuests,
    /// Run every test: host unit tests, then the QEMU tests.
    Test {
        /// Only the groups whose name contains this text (e.g. "linux smp" for the SMP
        /// Linux guest natively and under hypocaust, "smp (native)" for natively only).
        #[arg(long, value_name = "TEXT")]
        only: Option<String>,
    },
    /// Check formatting and run clippy on the host crates and the bare-metal binaries.
    Lint,
    /// Benchmark hypocaust against native: each workload natively on QEMU and under
    /// hypocaust, instructions (QEMU -icount) and wall time, medians and ratios
    /// (docs/performance.md). Writes target/bench/results.json.
    Bench {
        /// The quick subset: boot, a shorter syscall run and the trap microbenchmarks, one
        /// repetition.
        #[arg(long)]
        quick: bool,
        /// Repetitions of every run (default: up to 3, a job again only while its runs so
        /// far took under 90 s; 1 with --quick). Given, exactly N.
        #[arg(long)]
        reps: Option<usize>,
        /// A previous results file: show the change per workload, flag regressions over 5%.
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
        /// Only workloads whose name contains this (trap microbenchmarks: `trap/NAME`).
        #[arg(long)]
        filter: Option<String>,
        /// Where to write the results (JSON).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Only hypocaust on this firmware (default: on both, side by side).
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// Only the native side: the guests directly on QEMU, no hypocaust.
        #[arg(long, conflicts_with = "firmware")]
        native: bool,
    },
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
        /// Run under `-icount shift=N`: a deterministic clock of 2^N ns per instruction.
        #[arg(long, value_name = "N")]
        icount: Option<u32>,
        /// The timing sweeps (irq/sweep-*) try N deadline offsets (default 32).
        #[arg(long, value_name = "N")]
        sweep: Option<u64>,
        /// Keep N CPU hogs running meanwhile: a loaded machine must give the same results.
        #[arg(long, value_name = "N", default_value_t = 0)]
        hogs: usize,
        /// Run the comparison N times, stopping at the first that fails.
        #[arg(long, value_name = "N", default_value_t = 1)]
        repeat: usize,
        /// The M-mode firmware under hypocaust (the native run is on OpenSBI).
        /// (default: hypocaust's on virt, OpenSBI on sifive_u)
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// Harts of the machine (under hypocaust: the guest's vCPUs).
        #[arg(long, default_value_t = 1)]
        smp: usize,
        /// Harts of the machine under hypocaust, if not --smp: fewer than --smp time-slices
        /// the guest's vCPUs on them.
        #[arg(long, value_name = "N")]
        harts: Option<usize>,
        /// QEMU's -cpu for both runs (default rv64,h=false: Sv57, so hypocaust runs in
        /// Sv57 and offers Sv48; rv64,h=false,sv57=off: Sv48 host, Sv39 guests).
        #[arg(long, value_name = "MODEL")]
        cpu: Option<String>,
        /// The QEMU board of both runs (sifive_u: needs --firmware opensbi).
        #[arg(long, value_enum, default_value_t = Board::default())]
        machine: Board,
        /// Instead of hypocaust: the test kernel natively on hypocaust's firmware, compared
        /// with natively on OpenSBI (how `cargo xtask test` checks the firmware).
        #[arg(long, conflicts_with = "native")]
        compare_firmware: bool,
    },
}

fn code(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The options of `cargo xtask run`.
struct RunOptions {
    config: Option<std::path::PathBuf>,
    smp: usize,
    memory: u64,
    timeout: Option<Duration>,
    native: bool,
    testkernel: bool,
    kernel: Option<std::path::PathBuf>,
    initrd: Option<std::path::PathBuf>,
    append: String,
    guest_memory: Option<u32>,
    ssh_port: Option<u16>,
    log: String,
    firmware: Firmware,
    cpu: Option<String>,
    machine: Board,
}

/// `cargo xtask run`: a configuration file, or the one-guest configuration its flags make
/// (the Linux guest by default, the test kernel or a kernel of one's own), booted alike.
fn run_command(o: RunOptions) -> Result<bool> {
    let mut launch = config::Launch {
        run: "run".into(),
        native: o.native,
        timeout: o.timeout,
        log: o.log.clone(),
    };
    let config = match &o.config {
        Some(file) => {
            launch.run = "config".into();
            config::Config::load(file)?
        }
        None => flags_config(&o)?,
    };
    config::boot(&config, &launch)
}

/// The configuration `cargo xtask run`'s flags describe: one guest, its devices.
fn flags_config(o: &RunOptions) -> Result<config::Config> {
    use config::{DeviceConfig, DeviceKind, GuestConfig};
    let machine = config::MachineConfig {
        harts: o.smp,
        memory: o.memory,
        firmware: o.firmware,
        slice_ms: None,
        cpu: o.cpu.clone(),
        board: o.machine,
    };
    let disk = |image: &str| DeviceConfig {
        name: "disk".into(),
        kind: DeviceKind::Blk,
        image: Some(image.into()),
        ssh: None,
    };
    let net = |ssh| DeviceConfig { name: "net".into(), kind: DeviceKind::Net, image: None, ssh };
    let mut guest = GuestConfig {
        name: String::new(),
        kernel: String::new(),
        initrd: o.initrd.clone(),
        bootargs: o.append.clone(),
        memory: o.guest_memory.unwrap_or(config::DEFAULT_GUEST_MIB),
        vcpus: 1,
        harts: None,
        devices: Vec::new(),
    };
    let mut devices = Vec::new();
    if let Some(kernel) = &o.kernel {
        // A kernel of one's own, without devices, named after its file.
        let file = kernel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name: String = file
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(bundle::NAME_LEN)
            .collect();
        guest.name = if name.is_empty() { "guest".into() } else { name };
        // A file named like a keyword is still a file.
        let keyword = [config::DEBIAN, config::TESTKERNEL].iter().any(|k| kernel.as_os_str() == *k);
        let path = if keyword { std::path::Path::new(".").join(kernel) } else { kernel.clone() };
        guest.kernel = path.to_string_lossy().into_owned();
    } else if o.testkernel {
        // The test kernel with the suite's devices.
        guest.name = config::TESTKERNEL.into();
        guest.kernel = config::TESTKERNEL.into();
        devices = vec![disk(config::TESTKERNEL), net(None)];
    } else {
        // The Debian Linux guest with its disk and network, sshd forwarded; under hypocaust
        // --smp gives it as many vCPUs.
        guest.name = linux::run::GUEST_NAME.into();
        guest.kernel = config::DEBIAN.into();
        guest.memory = o.guest_memory.unwrap_or(linux::run::GUEST_MIB);
        guest.vcpus = if o.native { 1 } else { u32::try_from(o.smp).unwrap_or(u32::MAX) };
        devices = vec![disk(config::DEBIAN), net(Some(linux::run::pick_ssh_port(o.ssh_port)?))];
    }
    if o.machine == Board::SifiveU {
        // No virtio-mmio slots there: the guest has its console only.
        devices.clear();
    }
    guest.devices = devices.iter().map(|d| d.name.clone()).collect();
    Ok(config::Config::from_flags(machine, vec![guest], devices))
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            config,
            smp,
            memory,
            timeout,
            native,
            testkernel,
            kernel,
            initrd,
            append,
            guest_memory,
            ssh_port,
            log,
            firmware,
            cpu,
            machine,
        } => run_command(RunOptions {
            config,
            smp,
            memory,
            timeout: timeout.map(Duration::from_secs),
            native,
            testkernel,
            kernel,
            initrd,
            append,
            guest_memory,
            ssh_port,
            log,
            firmware: firmware.unwrap_or(machine.default_firmware()),
            cpu,
            machine,
        })
        .map(code),
        Cmd::Linux {
            native,
            cmd,
            smp,
            timeout,
            guest_memory,
            memory,
            append,
            ssh_port,
            log,
            quiet,
            firmware,
            cpu,
            machine,
        } => {
            let mut boot = linux::run::Boot::new("linux", native);
            boot.firmware = firmware.unwrap_or(machine.default_firmware());
            boot.cpu = cpu;
            boot.board = machine;
            boot.smp = smp;
            boot.guest_mib = guest_memory;
            boot.host_mib = memory;
            boot.append = append;
            boot.cmd = cmd;
            boot.ssh_port = ssh_port;
            boot.log = log;
            linux::run::command(linux::run::Options {
                boot,
                timeout: timeout.map(Duration::from_secs),
                quiet,
            })
        }
        Cmd::FetchGuests => linux::fetch_command().map(code),
        Cmd::Test { only } => test::command(only.as_deref()).map(code),
        Cmd::Lint => lint().map(code),
        Cmd::Bench { quick, reps, baseline, filter, output, firmware, native } => {
            bench::command(&bench::Options {
                quick,
                reps: reps.unwrap_or(if quick { 1 } else { 3 }),
                repeat_within: reps.is_none().then_some(bench::REPEAT_WITHIN),
                baseline,
                filter,
                output: output.unwrap_or_else(bench::Options::default_output),
                verbose: true,
                firmware,
                native,
            })
            .map(code)
        }
        Cmd::Suite {
            native,
            filter,
            legacy,
            icount,
            sweep,
            hogs,
            repeat,
            firmware,
            smp,
            harts,
            cpu,
            machine,
            compare_firmware,
        } => {
            let firmware = firmware.unwrap_or(machine.default_firmware());
            let harts = harts.unwrap_or(0);
            let opts = suite::Options {
                filter,
                legacy,
                icount,
                sweep,
                firmware,
                smp,
                harts,
                cpu,
                board: machine,
            };
            let _hogs = util::CpuHogs::start(hogs);
            let mut ok = true;
            for run in 1..=repeat {
                if repeat > 1 {
                    println!("== run {run} of {repeat}");
                }
                ok = if compare_firmware {
                    suite::compare_firmware(&opts)?
                } else {
                    suite::command(native, &opts)?
                };
                if !ok {
                    break;
                }
            }
            Ok(code(ok))
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
    for (target, package) in [
        (provision::HYPERVISOR_TARGET, "hypervisor"),
        (provision::HYPERVISOR_TARGET, "firmware"),
        (provision::GUEST_TARGET, "testkernel"),
        (provision::HYPERVISOR_TARGET, "smpcheck"),
    ] {
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
