//! `cargo xtask bench`: workloads natively on QEMU and under hypocaust on the same QEMU
//! machine, measured in instructions executed by the whole machine (QEMU `-icount`) and in
//! wall time (separate runs without `-icount`). docs/performance.md explains the method.
//!
//! Every Linux workload is one boot of the Debian guest (docs/guests.md) running one static
//! program of `guests/bench/` (built here with Debian's riscv64 cross compiler), or, for the
//! SMP workloads, the initramfs's `/bin/smpcheck` (guests/smpcheck) on a guest of 2 or 4
//! vCPUs; the trap microbenchmarks are one run of the guest test kernel with `action=bench`.

mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::artifacts::{self, GuestFiles};
use crate::linux::run::Boot;
use crate::linux::{self, LinuxImages};
use crate::qemu::{self, Firmware, Machine};
use crate::util::{root, text_within};
use crate::{provision, suite};

pub use report::{Baseline, Exits, Report, Row};

/// QEMU's instruction counting: one instruction is one nanosecond of virtual time
/// (`shift=0`), no throttling to real time (`align=off`), and an idle hart jumps to the
/// next timer deadline instead of waiting for it in real time (`sleep=off`).
pub const ICOUNT: &str = "shift=0,align=off,sleep=off";
/// The `time` CSR's rate on QEMU's `virt` machine (the test kernel reports it too).
pub const TIMEBASE_HZ: u64 = 10_000_000;
/// The bench disk (a raw image, `/dev/vda`): larger than what `disk` reads.
pub const DISK_MIB: u64 = 80;
/// By default a job is run again only while its runs so far took less than this: the
/// long runs (a million system calls under hypocaust) run once, so that the whole bench
/// stays within half an hour here.
pub const REPEAT_WITHIN: Duration = Duration::from_secs(90);
/// A regression: a per-operation number more than this much above the baseline's.
pub const REGRESSION: f64 = 0.05;

/// The cross compiler and the Debian packages that bring it and a static glibc.
const CROSS_GCC: &str = "riscv64-linux-gnu-gcc";
const CROSS_PACKAGES: &[&str] = &["gcc-riscv64-linux-gnu", "libc6-dev-riscv64-cross"];
const CROSS_LIBC: &str = "/usr/riscv64-linux-gnu/lib/libc.a";
/// The programs of guests/bench/ (each `NAME.c`, with `bench.h`), in the guest's `/bench/`.
const PROGRAMS: &[&str] =
    &["init", "syscall", "fork", "exec", "pagefault", "ctxsw", "compute", "disk", "net"];

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The quick subset (boot, syscall with fewer calls, the trap microbenchmarks).
    pub quick: bool,
    /// Repetitions of every run (at most, with `repeat_within`).
    pub reps: usize,
    /// Repeat a job only while its runs so far took less than this (None: always).
    pub repeat_within: Option<Duration>,
    /// A previous results file to compare with.
    pub baseline: Option<PathBuf>,
    /// Only workloads whose name contains this.
    pub filter: Option<String>,
    /// Where the results go (JSON).
    pub output: PathBuf,
    /// Print a line per run (besides the progress bar).
    pub verbose: bool,
    /// The firmware hypocaust runs on; None: both, side by side.
    pub firmware: Option<Firmware>,
    /// Only the native side (no hypocaust).
    pub native: bool,
}

impl Options {
    /// The default results file, `target/bench/results.json`.
    pub fn default_output() -> PathBuf {
        root().join("target").join("bench").join("results.json")
    }

    /// The sides to run: native, and hypocaust on the firmware(s) asked for.
    pub fn sides(&self) -> Vec<Side> {
        Side::ALL
            .into_iter()
            .filter(|s| !self.native || *s == Side::Native)
            .filter(|s| match (s.firmware(), self.firmware) {
                (None, _) | (_, None) => true,
                (Some(f), Some(wanted)) => f == wanted,
            })
            .collect()
    }
}

/// Natively on QEMU (on OpenSBI), or under hypocaust on its own firmware or on OpenSBI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Native,
    Hypocaust,
    HypocaustOpensbi,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Native, Side::Hypocaust, Side::HypocaustOpensbi];

    pub fn name(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Hypocaust => "hypocaust",
            Side::HypocaustOpensbi => "hypocaust-opensbi",
        }
    }

    /// The firmware hypocaust runs on; None natively.
    pub fn firmware(self) -> Option<Firmware> {
        match self {
            Side::Native => None,
            Side::Hypocaust => Some(Firmware::Hypocaust),
            Side::HypocaustOpensbi => Some(Firmware::Opensbi),
        }
    }
}

/// What a run measures: instructions (under `-icount`) or wall time (without).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Count,
    Wall,
}

impl Mode {
    pub const BOTH: [Mode; 2] = [Mode::Count, Mode::Wall];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Count => "instructions",
            Mode::Wall => "wall time",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::Count => "count",
            Mode::Wall => "wall",
        }
    }
}

/// A Linux workload: one boot running `/bench/<program> <arguments>`.
#[derive(Clone, Copy, Debug)]
struct LinuxWorkload {
    name: &'static str,
    /// What one operation is.
    op: &'static str,
    /// The size argument, and the one `--quick` uses (None: not in the quick set).
    size: u64,
    quick: Option<u64>,
    /// Bytes per operation where the program counts bytes (the row shows MiB).
    bytes_per_op: Option<u64>,
    /// The hart idles, waiting for the host's I/O: under `-icount` the idle time is
    /// skipped and counted, so the count run gives no instruction count.
    idles: bool,
    /// The guest's vCPUs (natively: harts); more than one: an smpcheck workload.
    smp: usize,
    /// QEMU's `-cpu` on both sides, for a host paging mode other than the default's (the
    /// row is named `<mode>-host/<workload>`); None: [`qemu::DEFAULT_CPU`].
    cpu: Option<&'static str>,
}

const MIB: u64 = 1 << 20;

/// The Linux workloads. `boot` runs no program (the command is `true`): every Linux run
/// reports its boot, and this run's exits are the base the others' are reduced by.
const LINUX: &[LinuxWorkload] = &[
    LinuxWorkload::new("boot", "firmware to /init", 0, None),
    LinuxWorkload::new("syscall", "getppid()", 1_000_000, Some(20_000)),
    LinuxWorkload::new("fork", "fork + _exit + wait", 2_000, None),
    LinuxWorkload::new("exec", "fork + exec + wait", 500, None),
    LinuxWorkload::new("pagefault", "first touch of a page", 64, None),
    LinuxWorkload::new("ctxsw", "pipe round trip", 100_000, None),
    LinuxWorkload::new("compute", "MiB hashed (user mode)", 1024, None).in_mib(false),
    LinuxWorkload::new("disk", "MiB read, O_DIRECT", 64, None).in_mib(true),
    LinuxWorkload::new("net", "MiB received over TCP", 64, None).in_mib(true),
    LinuxWorkload::new("smp/compute", "1 M hash steps, 4 vCPUs", 50, None).on_smp(SMP_HARTS),
    LinuxWorkload::new("smp/ipi-pingpong", "cross-CPU futex round trip", 5_000, None).on_smp(2),
    LinuxWorkload::new("smp/shootdown", "replace+churn round", 100, None).on_smp(SMP_HARTS),
    LinuxWorkload::new("sv48-host/boot", "firmware to /init", 0, None).on_cpu(qemu::SV48_CPU),
    LinuxWorkload::new("sv48-host/pagefault", "first touch of a page", 64, None)
        .on_cpu(qemu::SV48_CPU),
    LinuxWorkload::new("sv39-host/boot", "firmware to /init", 0, None).on_cpu(qemu::SV39_CPU),
    LinuxWorkload::new("sv39-host/pagefault", "first touch of a page", 64, None)
        .on_cpu(qemu::SV39_CPU),
];

/// The vCPUs of the SMP workloads `smp/compute` and `smp/shootdown` (`smp/ipi-pingpong`
/// needs two).
const SMP_HARTS: usize = 4;
/// How long smpcheck's waits may take in a bench run (QEMU's timeout comes first).
const SMPCHECK_TIMEOUT_S: u64 = 3600;

impl LinuxWorkload {
    const fn new(name: &'static str, op: &'static str, size: u64, quick: Option<u64>) -> Self {
        Self { name, op, size, quick, bytes_per_op: None, idles: false, smp: 1, cpu: None }
    }

    /// The workload on another host hart (`cpu`).
    const fn on_cpu(self, cpu: &'static str) -> Self {
        Self { cpu: Some(cpu), ..self }
    }

    /// The workload's own name: `pagefault` for `sv39-host/pagefault`.
    fn base(&self) -> &'static str {
        match self.cpu {
            Some(_) => self.name.rsplit('/').next().unwrap_or(self.name),
            None => self.name,
        }
    }

    /// One vCPU on QEMU's default hart: its boot is the `boot` row's kind of boot.
    fn plain(&self) -> bool {
        self.smp == 1 && self.cpu.is_none()
    }

    /// An smpcheck workload on a guest of `smp` vCPUs (natively: harts).
    const fn on_smp(self, smp: usize) -> Self {
        Self { smp, ..self }
    }

    /// The command that runs it (of size `size`); a workload of `guests/bench/` by default.
    fn command(&self, size: u64, net_port: u16) -> String {
        let smpcheck =
            format!("/bin/smpcheck --timeout {SMPCHECK_TIMEOUT_S} --bench {}", self.name);
        match self.base() {
            "boot" => "true".to_string(),
            "disk" => format!("/bench/disk /dev/vda {size}"),
            "net" => format!("/bench/net {} {net_port} {}", linux::build::GATEWAY, size * MIB),
            "smp/compute" => format!("{smpcheck} burn {} {size}", self.smp),
            "smp/ipi-pingpong" => format!("{smpcheck} pingpong {size}"),
            "smp/shootdown" => format!("{smpcheck} shootdown {} {size}", self.smp),
            program => format!("/bench/{program} {size}"),
        }
    }

    /// The program counts bytes, a MiB is an operation; `idles`: see the field.
    const fn in_mib(self, idles: bool) -> Self {
        Self { bytes_per_op: Some(MIB), idles, ..self }
    }
}

/// The test kernel's benchmarks (`bench: NAME ...` lines), as rows `trap/NAME`.
const TRAPS: &[(&str, &str)] = &[
    ("calibrate", "addi + bnez (icount check)"),
    ("csr-read", "csrr sscratch (+ nop)"),
    ("csr-burst", "csrr sscratch, 8 in a row"),
    ("sret", "csrs sstatus + sret"),
    ("sbi-call", "SBI get_spec_version"),
    ("ecall-u", "U-mode ecall + sret back"),
    ("shadow-fill", "page read after sfence.vma"),
];

/// What one boot runs.
#[derive(Clone, Copy, Debug)]
enum Job {
    Linux(LinuxWorkload),
    TestKernel,
    /// Two test-kernel guests counting compute steps on one hart (natively: one alone).
    Share,
}

impl Job {
    /// The modes it runs in: a Linux run gives both (instructions from the guest's clock
    /// under `-icount`, wall time from outside); the test kernel's loops are too short to
    /// time from outside, so it runs once in each mode.
    fn modes(&self) -> &'static [Mode] {
        match self {
            Job::Linux(_) => &[Mode::Count],
            Job::TestKernel | Job::Share => &Mode::BOTH,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Linux(w) => w.name,
            Job::TestKernel => "trap",
            Job::Share => "share",
        }
    }
}

fn selected(name: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// The jobs of a bench run, in order.
fn jobs(opts: &Options) -> Vec<Job> {
    let filter = opts.filter.as_deref();
    let mut jobs: Vec<Job> = LINUX
        .iter()
        .filter(|w| !opts.quick || w.quick.is_some())
        .filter(|w| selected(w.name, filter))
        .map(|w| Job::Linux(*w))
        .collect();
    if TRAPS.iter().any(|(t, _)| selected(&format!("trap/{t}"), filter)) {
        jobs.push(Job::TestKernel);
    }
    if !opts.quick && SHARE_GUESTS.iter().any(|g| selected(&format!("share/{g}"), filter)) {
        jobs.push(Job::Share);
    }
    jobs
}

/// The guests of the fair-share rows: under hypocaust, both on one hart.
const SHARE_GUESTS: [&str; 2] = ["a", "b"];

/// The fair-share run: natively the test kernel counting compute steps alone on a hart
/// (the same number stands for both rows); under hypocaust two of it as two guests on a
/// one-hart machine, each its own row. A fair scheduler gives each half the hart: both
/// rows' ratios near 2.
fn run_share(side: Side, mode: Mode) -> Result<Outcome> {
    let kernel = artifacts::testkernel()?;
    let name = format!("bench-{}-{}-share", side.name(), mode.short());
    let mut m = match side.firmware() {
        None => {
            let mut m = Machine::new(kernel);
            m.memory_mib = 64;
            m.append = Some("action=share".into());
            m
        }
        Some(firmware) => {
            let bundle = qemu::log_dir().join(format!("{name}-bundle.img"));
            let guests: Vec<GuestFiles> = SHARE_GUESTS
                .iter()
                .map(|g| GuestFiles {
                    name: (*g).into(),
                    kernel: kernel.clone(),
                    bootargs: "action=share".into(),
                    memory_mib: 64,
                    vcpus: 1,
                    ..Default::default()
                })
                .collect();
            artifacts::bundle(&guests, &bundle)?;
            let mut m = suite::hypocaust_machine(bundle, firmware)?;
            m.append = Some("hypocaust.log=debug".into());
            m
        }
    };
    m.smp = 1;
    if mode == Mode::Count {
        m.extra.extend(["-icount".to_string(), ICOUNT.to_string()]);
    }
    let run = qemu::run_captured(&m, &name, Duration::from_secs(120), false)?;
    let mut results = Vec::new();
    for line in run.output.lines() {
        let Some((_, n, ns)) = parse_result(line, TIMEBASE_HZ) else { continue };
        match side.firmware() {
            None => results.extend(SHARE_GUESTS.iter().map(|g| (format!("share/{g}"), n, ns))),
            Some(_) => {
                if let Some(g) = SHARE_GUESTS.iter().find(|g| line.starts_with(&format!("[{g}] ")))
                {
                    results.push((format!("share/{g}"), n, ns));
                }
            }
        }
    }
    let problem = if !run.exited_cleanly() {
        Some(format!("QEMU ended with {:?}", run.ending))
    } else if results.len() != SHARE_GUESTS.len() {
        Some(format!("{} share results, expected {}", results.len(), SHARE_GUESTS.len()))
    } else {
        None
    };
    if problem.is_none() {
        let _ = std::fs::remove_file(qemu::log_dir().join(format!("{name}-bundle.img")));
    }
    Ok(Outcome {
        boot_ticks: None,
        results,
        wall: Vec::new(),
        boot_wall: None,
        exits: Exits::parse(&run.output),
        problem,
        log: run.log.clone(),
        elapsed: run.elapsed,
    })
}

/// Installs the cross compiler if it is missing (as root; otherwise the error names the
/// command) and returns its path.
fn cross_compiler() -> Result<PathBuf> {
    if let Some(gcc) = provision::find_tool(CROSS_GCC)
        && Path::new(CROSS_LIBC).exists()
    {
        return Ok(gcc);
    }
    provision::apt_install(CROSS_PACKAGES, "the riscv64 Linux C cross compiler (static glibc)")?;
    provision::find_tool(CROSS_GCC)
        .with_context(|| format!("{CROSS_GCC} is still missing after installing it"))
}

/// Builds the workload programs (static, -O2) into target/bench/bin/ when their sources
/// are newer; returns (name, path) for each.
fn build_programs() -> Result<Vec<(String, PathBuf)>> {
    let gcc = cross_compiler()?;
    let src = root().join("guests").join("bench");
    let out = root().join("target").join("bench").join("bin");
    std::fs::create_dir_all(&out)?;
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let header = modified(&src.join("bench.h"));
    let mut built = Vec::new();
    for name in PROGRAMS {
        let source = src.join(format!("{name}.c"));
        let binary = out.join(name);
        let newest = modified(&source).max(header).context("guests/bench sources missing")?;
        if modified(&binary).is_none_or(|b| b < newest) {
            text_within(
                Command::new(&gcc)
                    .args(["-O2", "-static", "-s", "-Wall", "-Wextra", "-o"])
                    .arg(&binary)
                    .arg(&source),
                Duration::from_secs(120),
            )
            .with_context(|| format!("compiling {}", source.display()))?;
        }
        built.push((name.to_string(), binary));
    }
    Ok(built)
}

/// The 4 KiB block `block` of the bench disk: the word `0xB10C_0000_0000_0000 | block`,
/// then bytes that vary with the block (guests/bench/disk.c checks the words).
fn disk_block(block: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&(0xB10C_0000_0000_0000u64 | block).to_le_bytes());
    for (i, b) in out[8..].iter_mut().enumerate() {
        *b = (block as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
}

/// Writes the bench disk (target/bench/disk.img, [`DISK_MIB`] MiB) unless it is there.
fn bench_disk() -> Result<PathBuf> {
    let path = root().join("target").join("bench").join("disk.img");
    let len = DISK_MIB * MIB;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
        return Ok(path);
    }
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let mut data = vec![0u8; len as usize];
    for (block, chunk) in data.chunks_mut(4096).enumerate() {
        disk_block(block as u64, chunk);
    }
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Sends `bytes` bytes to the first connection on a 127.0.0.1 port (the guest reaches it
/// as 10.0.2.2 through QEMU's user network), then closes it.
struct Sender {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sender {
    fn start(bytes: u64, limit: Duration) -> Result<Self> {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < limit && !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(60)));
                let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
                let mut sent = 0;
                while sent < bytes {
                    let n = chunk.len().min((bytes - sent) as usize);
                    if conn.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                }
                return sent;
            }
            0
        });
        Ok(Self { port, stop, thread })
    }

    /// Stops waiting; returns the bytes sent.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// What one run gave.
#[derive(Debug, Default)]
struct Outcome {
    /// `time` at the first instruction of the guest's first process (Linux runs).
    boot_ticks: Option<u64>,
    /// `(name, operations, nanoseconds)` per result line.
    results: Vec<(String, u64, f64)>,
    /// Linux runs: the wall time of each measured region, as xtask saw its `bench-start`
    /// and `bench-end` lines arrive, by name; and of the boot, QEMU's start to the
    /// `bench-boot` line.
    wall: Vec<(String, f64)>,
    boot_wall: Option<f64>,
    /// hypocaust's exit counts at the guest's power-off.
    exits: Option<Exits>,
    /// What went wrong, if the run failed.
    problem: Option<String>,
    /// The run's console log.
    log: PathBuf,
    elapsed: Duration,
}

/// The number at the start of `text`. (The guest's kernel may print a message of its own
/// where a line of ours ends, before its newline: the text before stays whole.)
fn leading_number(text: &str) -> Option<u64> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text[..end].parse().ok()
}

/// `bench: NAME iterations=N ns=T` (Linux) or `bench: NAME n=N time=T` (test kernel, T
/// in timebase ticks): (name, operations, nanoseconds).
fn parse_result(line: &str, timebase_hz: u64) -> Option<(String, u64, f64)> {
    let rest = &line[line.find("bench: ")? + "bench: ".len()..];
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_string();
    let (mut n, mut ns) = (None, None);
    for word in words {
        let Some((k, v)) = word.split_once('=') else { break };
        match k {
            "iterations" | "n" => n = leading_number(v),
            "ns" => ns = leading_number(v).map(|v| v as f64),
            "time" => ns = leading_number(v).map(|t| t as f64 * 1e9 / timebase_hz as f64),
            _ => {}
        }
    }
    Some((name, n?, ns?))
}

/// The `bench-boot ticks=T` line's T.
fn parse_boot(console: &str) -> Option<u64> {
    const MARK: &str = "bench-boot ticks=";
    console.lines().find_map(|l| leading_number(&l[l.find(MARK)? + MARK.len()..]))
}

/// The wall time between the arrivals of the first line holding `from` and the first
/// holding `to`, in nanoseconds.
fn between(stamps: &[(Duration, String)], from: &str, to: &str) -> Option<f64> {
    let at = |mark: &str| stamps.iter().find(|(_, l)| l.contains(mark)).map(|(t, _)| *t);
    Some(at(to)?.checked_sub(at(from)?)?.as_secs_f64() * 1e9)
}

/// A Linux run: `w` on `side`, under `-icount` (the program's clock counts instructions)
/// with its wall time measured from outside: both modes in one run.
fn run_linux(
    images: &LinuxImages,
    programs: &[(String, PathBuf)],
    disk: &Path,
    w: &LinuxWorkload,
    quick: bool,
    side: Side,
) -> Result<Outcome> {
    let size = if quick { w.quick.unwrap_or(w.size) } else { w.size };
    let net_bytes = size * MIB;
    let sender = if w.name == "net" {
        Some(Sender::start(net_bytes, Duration::from_secs(900))?)
    } else {
        None
    };
    let cmd = w.command(size, sender.as_ref().map_or(0, |s| s.port));
    let name = format!("bench-{}-{}", side.name(), w.name);
    let mut boot = Boot::new(&name, side == Side::Native);
    if let Some(f) = side.firmware() {
        boot.firmware = f;
    }
    boot.smp = w.smp;
    boot.cpu = w.cpu.map(String::from);
    boot.cmd = Some(cmd);
    boot.append = "rdinit=/bench/init".into();
    boot.disk = Some(disk.to_path_buf());
    boot.log = "debug".into();
    boot.files =
        programs.iter().map(|(n, path)| (format!("bench/{n}"), 0o755, path.clone())).collect();
    boot.qemu_args = vec!["-icount".into(), ICOUNT.into()];
    let run = linux::run::run_cmd(images, &boot, boot.timeout(), false);
    let sent = sender.map(Sender::stop);
    let run = run?;
    let console = &run.run.output;
    let results: Vec<(String, u64, f64)> =
        console.lines().filter_map(|l| parse_result(l, TIMEBASE_HZ)).collect();
    let stamps = &run.run.stamps;
    let mut out = Outcome {
        boot_ticks: parse_boot(console),
        wall: results
            .iter()
            .filter_map(|(n, _, _)| {
                Some((
                    n.clone(),
                    between(stamps, &format!("bench-start {n}"), &format!("bench-end {n}"))?,
                ))
            })
            .collect(),
        boot_wall: stamps
            .iter()
            .find(|(_, l)| l.contains("bench-boot "))
            .map(|(t, _)| t.as_secs_f64() * 1e9),
        results,
        exits: Exits::parse(console),
        problem: None,
        log: run.run.log.clone(),
        elapsed: run.run.elapsed,
    };
    let error = console.lines().find(|l| l.starts_with("bench-error")).map(str::to_string);
    out.problem = if let Some(problem) = run.problem() {
        Some(problem)
    } else if let Some(e) = error {
        Some(e)
    } else if run.status != Some(0) {
        Some(format!("the command exited with status {:?}", run.status))
    } else if out.boot_ticks.is_none() {
        Some("no bench-boot line (rdinit=/bench/init did not run)".into())
    } else if w.base() != "boot" && !out.results.iter().any(|r| r.0 == w.base()) {
        Some(format!("no result line for {}", w.base()))
    } else if w.base() != "boot" && !out.wall.iter().any(|r| r.0 == w.base()) {
        Some(format!("no bench-start/bench-end lines for {}", w.base()))
    } else if side != Side::Native && out.exits.is_none() {
        Some("hypocaust printed no exit counts".into())
    } else {
        None
    };
    if let (Some(sent), None) = (sent, &out.problem)
        && sent != net_bytes
    {
        out.problem = Some(format!("the host sent {sent} of {net_bytes} bytes"));
    }
    if out.problem.is_none() {
        for suffix in ["initramfs.cpio", "bundle.img"] {
            let _ = std::fs::remove_file(qemu::log_dir().join(format!("{name}-{suffix}")));
        }
    }
    Ok(out)
}

/// The trap microbenchmarks: the test kernel with `action=bench`, on the suite's machine.
fn run_testkernel(side: Side, mode: Mode) -> Result<Outcome> {
    let kernel = artifacts::testkernel()?;
    let name = format!("bench-{}-{}-trap", side.name(), mode.short());
    let mut m = match side.firmware() {
        None => {
            let mut m = Machine::new(kernel);
            m.memory_mib = u64::from(suite::GUEST_MIB);
            m.append = Some("action=bench".into());
            m
        }
        Some(firmware) => {
            let bundle = qemu::log_dir().join(format!("{name}-bundle.img"));
            artifacts::bundle(
                &[GuestFiles {
                    name: "testkernel".into(),
                    kernel,
                    initrd: None,
                    bootargs: "action=bench".into(),
                    memory_mib: suite::GUEST_MIB,
                    vcpus: 1,
                    virtio_slots: suite::ALL_VIRTIO_SLOTS,
                    ..Default::default()
                }],
                &bundle,
            )?;
            let mut m = suite::hypocaust_machine(bundle, firmware)?;
            m.append = Some("hypocaust.log=debug".into());
            m
        }
    };
    suite::add_devices(&mut m, &name, false)?;
    if mode == Mode::Count {
        m.extra.extend(["-icount".to_string(), ICOUNT.to_string()]);
    }
    let run = qemu::run_captured(&m, &name, Duration::from_secs(300), false)?;
    let timebase = run
        .output
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("# bench: timebase ")?.strip_suffix(" Hz")?.parse().ok()
        })
        .unwrap_or(TIMEBASE_HZ);
    let mut out = Outcome {
        boot_ticks: None,
        results: run.output.lines().filter_map(|l| parse_result(l, timebase)).collect(),
        wall: Vec::new(),
        boot_wall: None,
        exits: Exits::parse(&run.output),
        problem: None,
        log: run.log.clone(),
        elapsed: run.elapsed,
    };
    let missing: Vec<&str> =
        TRAPS.iter().map(|t| t.0).filter(|t| !out.results.iter().any(|r| r.0 == *t)).collect();
    out.problem = if !run.exited_cleanly() {
        Some(format!("QEMU ended with {:?}", run.ending))
    } else if !run.output.contains("# bench: done") || !missing.is_empty() {
        Some(format!("the test kernel did not finish its benchmarks (missing {missing:?})"))
    } else if timebase != TIMEBASE_HZ {
        Some(format!("timebase {timebase} Hz, expected {TIMEBASE_HZ}"))
    } else if side != Side::Native && out.exits.is_none() {
        Some("hypocaust printed no exit counts".into())
    } else {
        None
    };
    if out.problem.is_none() {
        let _ = std::fs::remove_file(qemu::log_dir().join(format!("{name}-bundle.img")));
    }
    Ok(out)
}

/// The empty rows of a bench run, in table order.
fn rows(jobs: &[Job]) -> Vec<Row> {
    let mut rows = Vec::new();
    let linux = jobs.iter().any(|j| matches!(j, Job::Linux(w) if w.plain()));
    for job in jobs {
        match job {
            Job::Linux(w) => {
                let mut row = Row::new(w.name, w.op, w.bytes_per_op);
                row.idles = w.idles;
                rows.push(row);
            }
            Job::TestKernel => {
                for (t, op) in TRAPS {
                    rows.push(Row::new(&format!("trap/{t}"), op, None));
                }
            }
            Job::Share => {
                for g in SHARE_GUESTS {
                    rows.push(Row::new(&format!("share/{g}"), "step, 2 guests on 1 hart", None));
                }
            }
        }
    }
    // Every Linux run reports its boot: with no boot run of its own (--quick, --filter),
    // the boot row takes the others'.
    if linux && !rows.iter().any(|r| r.name == "boot") {
        rows.insert(0, Row::new("boot", LINUX[0].op, None));
    }
    rows
}

/// Runs the bench: every job, both sides, both modes, `opts.reps` times (the repetition
/// is the outer loop). Failed runs are reported in [`Report::failures`].
pub fn run(opts: &Options) -> Result<Report> {
    if opts.reps == 0 {
        bail!("--reps must be at least 1");
    }
    provision::all()?;
    let jobs = jobs(opts);
    if jobs.is_empty() {
        bail!("no workload matches --filter {}", opts.filter.as_deref().unwrap_or(""));
    }
    let started = Instant::now();
    let need_linux = jobs.iter().any(|j| matches!(j, Job::Linux(_)));
    let (images, programs, disk) = if need_linux {
        (Some(linux::images()?), build_programs()?, Some(bench_disk()?))
    } else {
        (None, Vec::new(), None)
    };
    let sides = opts.sides();
    if sides.iter().any(|s| s.firmware().is_some()) {
        artifacts::hypervisor()?;
        artifacts::firmware()?;
    }
    artifacts::testkernel()?;

    let has_boot_run = jobs.iter().any(|j| matches!(j, Job::Linux(w) if w.name == "boot"));
    let mut report = Report::new(opts, rows(&jobs), has_boot_run, sides.clone());
    report.multi_vcpu = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Linux(w) if !w.plain() => Some(w.name.to_string()),
            _ => None,
        })
        .collect();
    report.qemu = text_within(
        Command::new(provision::qemu_binary()).arg("--version"),
        Duration::from_secs(30),
    )
    .map(|v| v.lines().next().unwrap_or("").to_string())
    .unwrap_or_default();
    report.guest = images.as_ref().map(|i| i.release.clone());

    let runs_per_rep: usize = jobs.iter().map(|j| sides.len() * j.modes().len()).sum();
    let bar = ProgressBar::new((opts.reps * runs_per_rep) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // Time spent on each job's runs so far (for `repeat_within`).
    let mut spent = vec![Duration::ZERO; jobs.len()];
    for rep in 0..opts.reps {
        for (j, job) in jobs.iter().enumerate() {
            if rep > 0 && opts.repeat_within.is_some_and(|limit| spent[j] >= limit) {
                let skipped = (sides.len() * job.modes().len()) as u64;
                bar.set_length(bar.length().unwrap_or(0).saturating_sub(skipped));
                continue;
            }
            for &side in &sides {
                for &mode in job.modes() {
                    bar.set_message(format!(
                        "rep {}/{}: {} {}, {}",
                        rep + 1,
                        opts.reps,
                        job.name(),
                        side.name(),
                        mode.name()
                    ));
                    let started = Instant::now();
                    let outcome = match job {
                        Job::Linux(w) => run_linux(
                            images.as_ref().expect("images for Linux jobs"),
                            &programs,
                            disk.as_deref().expect("a disk for Linux jobs"),
                            w,
                            opts.quick,
                            side,
                        ),
                        Job::TestKernel => run_testkernel(side, mode),
                        Job::Share => run_share(side, mode),
                    };
                    spent[j] += started.elapsed();
                    let line = record(&mut report, job, rep, side, mode, outcome);
                    if opts.verbose {
                        // A hidden bar (no terminal) drops its printed lines too.
                        if bar.is_hidden() {
                            println!("{line}");
                        } else {
                            bar.println(line);
                        }
                    }
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    report.finish();
    report.elapsed = started.elapsed();
    report.unix_time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Ok(report)
}

/// Files one run's outcome into the report; returns a line saying what it gave.
fn record(
    report: &mut Report,
    job: &Job,
    rep: usize,
    side: Side,
    mode: Mode,
    outcome: Result<Outcome>,
) -> String {
    let what = format!("rep {} {:<10} {:<9} {:<12}", rep + 1, job.name(), side.name(), mode.name());
    let out = match outcome {
        Ok(o) => o,
        Err(e) => {
            report.failures.push(format!("{what}: {e:#}"));
            return format!("  FAIL {what} {e:#}");
        }
    };
    if let Some(problem) = &out.problem {
        report.failures.push(format!(
            "{}: {problem} (log: {})",
            what.trim_end(),
            out.log.display()
        ));
        return format!("  FAIL {what} {problem} (log: {})", out.log.display());
    }
    let mut said = Vec::new();
    if let Some(ticks) = out.boot_ticks {
        let ns = ticks as f64 * 1e9 / TIMEBASE_HZ as f64;
        // The boot row is a one-vCPU boot's (an SMP guest's boot takes longer).
        let one_vcpu = matches!(job, Job::Linux(w) if w.plain());
        let counts =
            matches!(job, Job::Linux(w) if w.name == "boot") || !report.has_boot_run && one_vcpu;
        if let Some(row) = report.row_mut("boot")
            && counts
        {
            row.add(side, mode, ns, 1);
            if let Some(wall) = out.boot_wall {
                row.add(side, Mode::Wall, wall, 1);
            }
        }
        if matches!(job, Job::Linux(w) if w.name == "boot") {
            said.push(format!("boot {}", report::amount(mode, ns)));
        }
        // Another host's boot row: this run's own boot.
        if let Job::Linux(w) = job
            && w.cpu.is_some()
            && w.base() == "boot"
            && let Some(row) = report.row_mut(w.name)
        {
            row.add(side, mode, ns, 1);
            if let Some(wall) = out.boot_wall {
                row.add(side, Mode::Wall, wall, 1);
            }
            said.push(format!("{} {}", w.name, report::amount(mode, ns)));
        }
    }
    for (name, n, ns) in &out.results {
        let key = match job {
            Job::TestKernel => format!("trap/{name}"),
            // Another host's row: the program's result under the row's own name.
            Job::Linux(w) if w.cpu.is_some() && name == w.base() => w.name.to_string(),
            Job::Linux(_) | Job::Share => name.clone(),
        };
        if let Some(row) = report.row_mut(&key) {
            row.add(side, mode, *ns, *n);
            if let Some((_, wall)) = out.wall.iter().find(|w| w.0 == *name) {
                row.add(side, Mode::Wall, *wall, *n);
            }
            let per = ns / row.ops_of(*n);
            said.push(format!("{key} {}/op", report::amount(mode, per)));
        }
    }
    if let (Some(exits), Mode::Count, Some(_), 0) = (&out.exits, mode, side.firmware(), rep) {
        report.exits.push((job.name().to_string(), side, exits.clone()));
    }
    let shown: Vec<String> = said.into_iter().take(3).collect();
    format!("  ok   {what} {} ({:.1} s)", shown.join(", "), out.elapsed.as_secs_f64())
}

/// `cargo xtask bench`: runs, prints the table (and the comparison with a baseline),
/// writes the JSON. Fails only if a run failed.
pub fn command(opts: &Options) -> Result<bool> {
    let baseline = match &opts.baseline {
        Some(path) => Some(report::Baseline::read(path)?),
        None => None,
    };
    let reps = match opts.repeat_within {
        Some(limit) => format!(
            "up to {} runs of each workload (again only while its runs took under {} s)",
            opts.reps,
            limit.as_secs()
        ),
        None => format!("{} run(s) of each workload", opts.reps),
    };
    let sides: Vec<&str> = opts.sides().iter().map(|s| s.name()).collect();
    println!(
        "xtask: bench{}: {reps}, {}, under -icount {ICOUNT}",
        if opts.quick { " --quick" } else { "" },
        sides.join(", ")
    );
    let report = run(opts)?;
    report.print();
    if let Some(b) = &baseline {
        report.compare(b);
    }
    report.write_json(&opts.output)?;
    println!("results: {}", opts.output.display());
    if !report.failures.is_empty() {
        println!("{} run(s) failed:", report.failures.len());
        for f in &report.failures {
            println!("  {f}");
        }
    }
    Ok(report.failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        assert_eq!(
            parse_result("bench: syscall iterations=1000 ns=394000", TIMEBASE_HZ),
            Some(("syscall".into(), 1000, 394000.0))
        );
        assert_eq!(
            parse_result("bench: csr-read n=100000 time=1251", TIMEBASE_HZ),
            Some(("csr-read".into(), 100000, 125100.0))
        );
        assert_eq!(
            parse_result("bench: compute iterations=64 ns=5 hash=00ff", TIMEBASE_HZ),
            Some(("compute".into(), 64, 5.0))
        );
        assert_eq!(parse_result("bench-start syscall", TIMEBASE_HZ), None);
        assert_eq!(parse_result("bench: x iterations=1", TIMEBASE_HZ), None);
        assert_eq!(parse_boot("a\nbench-boot ticks=123\n"), Some(123));
        // A kernel message where the line ends.
        assert_eq!(parse_boot("bench-boot ticks=25259054[    1.83] virtio_blk\n"), Some(25259054));
        assert_eq!(
            parse_result("bench: fork iterations=2000 ns=403455000[   3.1] x: y=2", TIMEBASE_HZ),
            Some(("fork".into(), 2000, 403455000.0))
        );
    }

    #[test]
    fn wall_time_from_stamps() {
        let stamps = [
            (Duration::from_millis(2000), "bench-boot ticks=1".to_string()),
            (Duration::from_millis(2500), "bench-start fork".to_string()),
            (Duration::from_millis(4000), "[    3.0] x bench-end fork".to_string()),
        ];
        assert_eq!(between(&stamps, "bench-start fork", "bench-end fork"), Some(1.5e9));
        assert_eq!(between(&stamps, "bench-start exec", "bench-end exec"), None);
        // An end before its start is no measurement.
        assert_eq!(between(&stamps, "bench-end fork", "bench-start fork"), None);
    }

    #[test]
    fn commands() {
        let w = |name| *LINUX.iter().find(|w| w.name == name).expect("a workload");
        assert_eq!(w("syscall").command(5, 0), "/bench/syscall 5");
        assert_eq!(
            w("net").command(2, 80),
            format!("/bench/net {} 80 2097152", linux::build::GATEWAY)
        );
        let smp = w("smp/compute");
        assert_eq!(smp.smp, SMP_HARTS);
        assert_eq!(
            smp.command(50, 0),
            format!("/bin/smpcheck --timeout {SMPCHECK_TIMEOUT_S} --bench smp/compute burn 4 50")
        );
        assert!(
            w("smp/ipi-pingpong").command(9, 0).ends_with("--bench smp/ipi-pingpong pingpong 9")
        );
        assert!(w("smp/shootdown").command(9, 0).ends_with("--bench smp/shootdown shootdown 4 9"));
        // The SMP workloads alone: no one-vCPU run, so no boot row.
        let jobs: Vec<Job> = LINUX.iter().filter(|w| w.smp > 1).map(|w| Job::Linux(*w)).collect();
        let names: Vec<String> = rows(&jobs).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["smp/compute", "smp/ipi-pingpong", "smp/shootdown"]);
    }

    #[test]
    fn disk_pattern() {
        let mut block = vec![0u8; 4096];
        disk_block(5, &mut block);
        assert_eq!(block[..8], 0xB10C_0000_0000_0005u64.to_le_bytes());
    }

    #[test]
    fn selection() {
        let opts = |quick, filter: Option<&str>| Options {
            quick,
            reps: 1,
            repeat_within: None,
            baseline: None,
            filter: filter.map(str::to_string),
            output: PathBuf::new(),
            verbose: false,
            firmware: None,
            native: false,
        };
        let names = |o: &Options| jobs(o).iter().map(|j| j.name()).collect::<Vec<_>>();
        assert_eq!(names(&opts(true, None)), ["syscall", "trap"]);
        assert_eq!(names(&opts(false, Some("trap/sret"))), ["trap"]);
        assert_eq!(names(&opts(false, Some("fork"))), ["fork"]);
        assert_eq!(names(&opts(false, None)).len(), LINUX.len() + 2);
        assert_eq!(names(&opts(false, Some("share/"))), ["share"]);
        assert_eq!(names(&opts(true, Some("share/"))), Vec::<&str>::new());
        let quick = rows(&jobs(&opts(true, None)));
        assert_eq!(quick[0].name, "boot");
        assert_eq!(quick.len(), 2 + TRAPS.len());
        let names: Vec<String> =
            rows(&jobs(&opts(false, Some("fork")))).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["boot", "fork"]);
        assert_eq!(rows(&jobs(&opts(false, Some("trap")))).len(), TRAPS.len());
    }
}
