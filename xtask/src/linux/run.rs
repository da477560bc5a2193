//! Booting the Linux guest natively on QEMU or under hypocaust: interactively, or running
//! a command (`cargo xtask linux --cmd`), whose output and exit status come back through
//! the console between marker lines.
//!
//! A command reaches the guest as `/cmd.sh` in a second cpio archive appended to the
//! initramfs (the kernel unpacks concatenated archives in turn), so it may be any shell
//! text of any length; /init runs it instead of the console shell and powers off.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::LinuxImages;
use super::build::{CMD_FILE, OUTPUT_BEGINS, OUTPUT_ENDS, READY, ROOT_PASSWORD};
use crate::artifacts::{self, GuestFiles};
use crate::cpio::Archive;
use crate::qemu::{self, Machine};
use crate::suite;

/// Guest RAM: the whole machine natively, the guest's share under hypocaust.
pub const GUEST_MIB: u32 = 256;
/// Timeouts of a command run: a native boot takes seconds; under hypocaust every
/// privileged instruction traps, so Linux boots much slower.
pub const NATIVE_TIMEOUT: Duration = Duration::from_secs(180);
pub const HYPOCAUST_TIMEOUT: Duration = Duration::from_secs(900);
/// The port `cargo xtask run` forwards to the guest's sshd, if it is free.
pub const DEFAULT_SSH_PORT: u16 = 10022;
/// The guest's name in the bundle.
pub const GUEST_NAME: &str = "linux";

/// One boot of the Linux guest.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Names the run's files in target/logs: `<name>.log`, `<name>-disk.img`, ...
    pub name: String,
    /// Directly on QEMU instead of under hypocaust.
    pub native: bool,
    /// Harts (natively) or vCPUs and harts (under hypocaust).
    pub smp: usize,
    pub guest_mib: u32,
    /// RAM of the QEMU machine under hypocaust.
    pub host_mib: u64,
    /// More kernel command-line arguments.
    pub append: String,
    /// Shell commands to run instead of the console shell.
    pub cmd: Option<String>,
    /// A disk image to use as it is; None: a fresh copy of the pristine one.
    pub disk: Option<PathBuf>,
    /// Forward this host port (on 127.0.0.1) to the guest's port 22.
    pub ssh_port: Option<u16>,
    /// hypocaust's log level.
    pub log: String,
    /// More files for the appended archive, beside `/cmd.sh`: (path in the guest, mode, host
    /// file); their directories are made as needed.
    pub files: Vec<(String, u32, PathBuf)>,
    /// More QEMU arguments (e.g. `-icount`).
    pub qemu_args: Vec<String>,
    /// The firmware hypocaust runs on (natively: always OpenSBI).
    pub firmware: qemu::Firmware,
    /// QEMU's `-cpu` (None: the board's default).
    pub cpu: Option<String>,
    /// The QEMU board (on `sifive_u` the guest has no disk or network).
    pub board: qemu::Board,
}

impl Boot {
    pub fn new(name: &str, native: bool) -> Self {
        Self {
            name: name.into(),
            native,
            smp: 1,
            guest_mib: GUEST_MIB,
            host_mib: 1024,
            append: String::new(),
            cmd: None,
            disk: None,
            ssh_port: None,
            log: "info".into(),
            files: Vec::new(),
            qemu_args: Vec::new(),
            cpu: None,
            firmware: qemu::Firmware::default(),
            board: qemu::Board::Virt,
        }
    }

    /// The default timeout of a command run.
    pub fn timeout(&self) -> Duration {
        if self.native { NATIVE_TIMEOUT } else { HYPOCAUST_TIMEOUT }
    }

    /// The guest kernel's command line.
    pub fn bootargs(&self) -> String {
        bootargs(self.native, self.board, &self.append)
    }
}

/// The guest kernel's command line natively or under hypocaust, with `append` added.
pub fn bootargs(native: bool, board: qemu::Board, append: &str) -> String {
    // Under hypocaust the SBI console shows the earliest messages too.
    let console = format!("console={}", board.linux_console());
    let mut args = if native { console } else { format!("earlycon=sbi {console}") };
    if !append.trim().is_empty() {
        args.push(' ');
        args.push_str(append.trim());
    }
    args
}

/// A fresh copy of the pristine disk at `path`.
pub fn fresh_disk(images: &LinuxImages, path: &Path) -> Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::copy_sparse(&images.disk, path)?;
    Ok(path.to_path_buf())
}

/// The initramfs of a run: the built one, plus `/cmd.sh` and `boot.files` in an appended
/// archive.
pub fn run_initramfs(images: &LinuxImages, boot: &Boot, out: &Path) -> Result<PathBuf> {
    if boot.cmd.is_none() && boot.files.is_empty() {
        return Ok(images.initramfs.clone());
    }
    let mut data = std::fs::read(&images.initramfs)?;
    let mut extra = Archive::new();
    if let Some(cmd) = &boot.cmd {
        extra.file(CMD_FILE, 0o755, format!("{}\n", cmd.trim_end()).as_bytes());
    }
    for (path, mode, host) in &boot.files {
        let bytes = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        extra.file(path, *mode, &bytes);
    }
    data.extend(extra.finish());
    std::fs::write(out, data)?;
    Ok(out.to_path_buf())
}

/// The QEMU machine for `boot`: the guest natively, or hypocaust with the guest in its
/// bundle; a virtio disk and network device either way (the disk is a fresh copy unless
/// `boot.disk` names one).
pub fn machine(images: &LinuxImages, boot: &Boot) -> Result<Machine> {
    let logs = qemu::log_dir();
    std::fs::create_dir_all(&logs)?;
    let stem = boot.name.replace('/', "-");
    let disk = match &boot.disk {
        Some(d) => d.clone(),
        None => fresh_disk(images, &logs.join(format!("{stem}-disk.img")))?,
    };
    let initrd = run_initramfs(images, boot, &logs.join(format!("{stem}-initramfs.cpio")))?;
    boot.board.check_firmware(if boot.native { qemu::Firmware::Opensbi } else { boot.firmware })?;
    let devices = match boot.board {
        qemu::Board::Virt => qemu::virtio_devices_forwarding(&disk, false, boot.ssh_port),
        // No virtio-mmio slots: the guest lives in its initramfs.
        qemu::Board::SifiveU => Vec::new(),
    };
    let mut m = if boot.native {
        let mut m = Machine::new(&images.kernel);
        m.memory_mib = u64::from(boot.guest_mib);
        m.append = Some(boot.bootargs());
        m.initrd = Some(initrd);
        m
    } else {
        let bundle = logs.join(format!("{stem}-bundle.img"));
        artifacts::bundle(
            &[GuestFiles {
                name: GUEST_NAME.into(),
                kernel: images.kernel.clone(),
                initrd: Some(initrd),
                bootargs: boot.bootargs(),
                memory_mib: boot.guest_mib,
                vcpus: u32::try_from(boot.smp)?,
                virtio_slots: suite::ALL_VIRTIO_SLOTS,
                ..Default::default()
            }],
            &bundle,
        )?;
        let mut m = suite::hypocaust_machine(bundle, boot.firmware)?;
        m.memory_mib = boot.host_mib;
        m.append = Some(format!("hypocaust.log={}", boot.log));
        m
    };
    m = m.on(boot.board);
    m.smp = boot.smp;
    if let Some(cpu) = &boot.cpu {
        m.cpu.clone_from(cpu);
    }
    m.extra = devices;
    m.extra.extend(boot.qemu_args.iter().cloned());
    Ok(m)
}

/// What a command run gave.
#[derive(Debug)]
pub struct CmdRun {
    pub run: qemu::Run,
    /// The command's output (between the marker lines), if it finished.
    pub output: Option<String>,
    /// Its exit status.
    pub status: Option<i32>,
    /// When the guest said it was ready, from QEMU's start.
    pub ready_after: Option<Duration>,
}

impl CmdRun {
    /// What went wrong, in a line, if the command did not finish or QEMU did not exit
    /// cleanly.
    pub fn problem(&self) -> Option<String> {
        if self.status.is_none() {
            let stage = if self.ready_after.is_some() {
                "the command did not finish"
            } else {
                "the guest never became ready"
            };
            return Some(format!(
                "{stage} (QEMU: {:?} after {:.0} s)",
                self.run.ending,
                self.run.elapsed.as_secs_f64()
            ));
        }
        (!self.run.exited_cleanly())
            .then(|| format!("the guest did not power off cleanly (QEMU: {:?})", self.run.ending))
    }
}

/// The output and status of the command from a console log.
pub fn parse_output(console: &str) -> (Option<String>, Option<i32>) {
    let Some(begin) = console.find(&format!("{OUTPUT_BEGINS}\n")) else { return (None, None) };
    let body = &console[begin + OUTPUT_BEGINS.len() + 1..];
    let Some(end) = body.find(OUTPUT_ENDS) else { return (None, None) };
    let status =
        body[end + OUTPUT_ENDS.len()..].split(')').next().and_then(|s| s.trim().parse().ok());
    // The end marker starts a line of its own, unless the output's last line had no newline.
    (Some(body[..end].to_string()), status)
}

/// Whether the console shows a kernel panic (the guest will never power off).
fn panicked(console: &str) -> bool {
    console.contains("Kernel panic - not syncing") && console.contains("---[ end Kernel panic")
}

/// Boots with `boot.cmd` and waits for the guest to power off (or `timeout`); `echo`
/// copies the console to stdout as it comes.
pub fn run_cmd(images: &LinuxImages, boot: &Boot, timeout: Duration, echo: bool) -> Result<CmdRun> {
    if boot.cmd.is_none() {
        bail!("run_cmd needs a command");
    }
    let m = machine(images, boot)?;
    let ready = Cell::new(None);
    let start = Instant::now();
    let run = qemu::run_until(&m, &boot.name, timeout, echo, |out| {
        if ready.get().is_none() && out.contains(READY) {
            ready.set(Some(start.elapsed()));
        }
        panicked(out)
    })?;
    let (output, status) = parse_output(&run.output);
    Ok(CmdRun { run, output, status, ready_after: ready.get() })
}

/// How to log in, for the user.
pub fn ssh_hint(images: &LinuxImages, port: u16) -> String {
    let key = images.ssh_key.as_ref().map(|k| format!(" -i {}", k.display())).unwrap_or_default();
    format!(
        "ssh -p {port}{key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 \
         (root's password: {ROOT_PASSWORD})"
    )
}

/// The port to forward: `wanted`, or [`DEFAULT_SSH_PORT`] if free, or any free one.
pub fn pick_ssh_port(wanted: Option<u16>) -> Result<u16> {
    if let Some(p) = wanted {
        return Ok(p);
    }
    if std::net::TcpListener::bind(("127.0.0.1", DEFAULT_SSH_PORT)).is_ok() {
        return Ok(DEFAULT_SSH_PORT);
    }
    crate::util::free_port()
}

/// Boots the guest with the console on this terminal; returns when QEMU exits.
pub fn interactive(images: &LinuxImages, boot: &Boot, timeout: Option<Duration>) -> Result<bool> {
    let m = machine(images, boot)?;
    eprintln!("xtask: {}", m.command_line());
    let side = if boot.native { "natively on QEMU" } else { "under hypocaust" };
    eprintln!(
        "xtask: booting Linux {} {side}: a shell on the console (Ctrl-A X leaves QEMU)",
        images.release
    );
    if let Some(port) = boot.ssh_port {
        eprintln!("xtask: once it prints '{READY}': {}", ssh_hint(images, port));
    }
    let run = qemu::run_interactive(&m, timeout)?;
    for line in &run.guest_failures {
        eprintln!("xtask: {line}: change --guest-memory, --smp or --memory accordingly");
    }
    Ok(run.success())
}

/// Options of `cargo xtask linux`.
#[derive(Clone, Debug)]
pub struct Options {
    pub boot: Boot,
    pub timeout: Option<Duration>,
    /// Print only the command's output, not the whole console.
    pub quiet: bool,
}

/// `cargo xtask linux`: with a command, boots, runs it, prints its output between marker
/// lines and exits with its status; without, boots interactively.
pub fn command(mut opts: Options) -> Result<ExitCode> {
    crate::provision::all()?;
    let images = super::images()?;
    opts.boot.ssh_port = Some(pick_ssh_port(opts.boot.ssh_port)?);
    if opts.boot.cmd.is_none() {
        let ok = interactive(&images, &opts.boot, opts.timeout)?;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let timeout = opts.timeout.unwrap_or(opts.boot.timeout());
    let side = if opts.boot.native { "natively on QEMU" } else { "under hypocaust" };
    eprintln!(
        "xtask: booting Linux {} {side} to run the command (timeout {} s)",
        images.release,
        timeout.as_secs()
    );
    let r = run_cmd(&images, &opts.boot, timeout, !opts.quiet)?;
    if opts.quiet
        && let Some(out) = &r.output
    {
        println!("{OUTPUT_BEGINS}");
        print!("{out}");
        println!("{OUTPUT_ENDS}{}) ====", r.status.unwrap_or(-1));
    }
    let ready =
        r.ready_after.map_or("never".to_string(), |d| format!("after {:.1} s", d.as_secs_f64()));
    eprintln!(
        "xtask: guest ready {ready}, QEMU ended {:?} after {:.1} s; console log: {}",
        r.run.ending,
        r.run.elapsed.as_secs_f64(),
        r.run.log.display()
    );
    if let Some(problem) = r.problem() {
        if opts.quiet {
            eprintln!("{}", r.run.tail(30));
        }
        eprintln!("xtask: error: {problem}");
        return Ok(ExitCode::FAILURE);
    }
    let status = r.status.unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_and_status() {
        let console = "[    1.0] virtio\nhypocaust-linux: ready (Linux 7)\n\
                       ==== hypocaust-linux: output begins ====\nLinux x 7.2\nline 2\n\
                       ==== hypocaust-linux: output ends (status 3) ====\nhypocaust-linux: powering off\n";
        let (out, status) = parse_output(console);
        assert_eq!(out.as_deref(), Some("Linux x 7.2\nline 2\n"));
        assert_eq!(status, Some(3));
        let (out, status) = parse_output("==== hypocaust-linux: output begins ====\nhalf\n");
        assert_eq!((out, status), (None, None));
        let (out, status) = parse_output(
            "==== hypocaust-linux: output begins ====\n==== hypocaust-linux: output ends (status 0) ====\n",
        );
        assert_eq!((out.as_deref(), status), (Some(""), Some(0)));
    }

    #[test]
    fn boot_arguments() {
        let mut b = Boot::new("x", true);
        assert_eq!(b.bootargs(), "console=ttyS0");
        b.append = " quiet ".into();
        assert_eq!(b.bootargs(), "console=ttyS0 quiet");
        b.native = false;
        assert!(b.bootargs().starts_with("earlycon=sbi console=ttyS0"));
        assert!(b.timeout() > NATIVE_TIMEOUT);
    }
}
