//! Running QEMU: the `virt` machine hypocaust targets, always with a timeout in tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::provision::qemu_binary;
use crate::util::root;

/// The CPU model: QEMU's generic rv64 hart with the H extension off, like the boards
/// hypocaust is for.
pub const DEFAULT_CPU: &str = "rv64,h=false";

/// A hart whose widest paging mode is Sv48: hypocaust runs in Sv48 and offers its guests
/// Sv39 (on [`DEFAULT_CPU`], Sv57, it runs in Sv57 and offers Sv48).
pub const SV48_CPU: &str = "rv64,h=false,sv57=off";

/// A hart whose widest paging mode is Sv39, as on the boards without H: hypocaust runs in
/// Sv39 too, with its window (docs/memory-map.md).
pub const SV39_CPU: &str = "rv64,h=false,sv48=off";

/// QEMU's SiFive U54 hart: Sv39 only, privileged spec 1.10 (no `senvcfg`), no Sstc.
pub const U54_CPU: &str = "sifive-u54";

/// QEMU arguments for the devices of the suite machine: a virtio block device on `disk`
/// (raw) and a virtio network device on QEMU's user network (10.0.2.0/24, gateway
/// 10.0.2.2). Both sit on `virt`'s virtio-mmio transports, which QEMU 7.2 makes legacy
/// (Version 1) unless told otherwise: `legacy = false` asks for modern ones (Version 2).
pub fn virtio_devices(disk: &Path, legacy: bool) -> Vec<String> {
    virtio_devices_forwarding(disk, legacy, None)
}

/// [`virtio_devices`], with host port `ssh` (on 127.0.0.1), if given, forwarded to the
/// guest's TCP port 22 (10.0.2.15).
pub fn virtio_devices_forwarding(disk: &Path, legacy: bool, ssh: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = virtio_blk("hd0", disk).into();
    args.extend(virtio_net("net0", ssh));
    if !legacy {
        args.extend(MODERN_VIRTIO.map(String::from));
    }
    args
}

/// The QEMU arguments that make `virt`'s virtio-mmio transports modern (Version 2).
pub const MODERN_VIRTIO: [&str; 2] = ["-global", "virtio-mmio.force-legacy=false"];

/// QEMU arguments for a virtio block device with QEMU id `id` on the raw image `disk`. Each
/// `-device virtio-*-device` takes the next free virtio-mmio slot of `virt`, from the
/// highest address down.
pub fn virtio_blk(id: &str, disk: &Path) -> [String; 4] {
    // A comma in an option value is written twice.
    let file = disk.to_string_lossy().replace(',', ",,");
    [
        "-drive".into(),
        format!("file={file},if=none,format=raw,id={id}"),
        "-device".into(),
        format!("virtio-blk-device,drive={id}"),
    ]
}

/// QEMU arguments for a virtio network device with QEMU id `id` on a user network of its
/// own (10.0.2.0/24, gateway 10.0.2.2), with host port `ssh` (on 127.0.0.1), if given,
/// forwarded to the guest's TCP port 22 (10.0.2.15).
pub fn virtio_net(id: &str, ssh: Option<u16>) -> [String; 4] {
    let forward = ssh.map(|port| format!(",hostfwd=tcp:127.0.0.1:{port}-:22")).unwrap_or_default();
    [
        "-netdev".into(),
        format!("user,id={id}{forward}"),
        "-device".into(),
        format!("virtio-net-device,netdev={id}"),
    ]
}

/// The M-mode firmware a machine running hypocaust boots with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// hypocaust's own (firmware/, built on RustSBI): it delegates to S-mode every
    /// exception hypocaust handles.
    #[default]
    Hypocaust,
    /// OpenSBI, as QEMU ships it (`-bios default`): every illegal instruction goes through
    /// M-mode.
    Opensbi,
}

impl Firmware {
    /// Its name in logs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hypocaust => "hypocaust-fw",
            Self::Opensbi => "opensbi",
        }
    }

    /// What `-bios` gets: the firmware's ELF (built if need be), or None for QEMU's
    /// default (OpenSBI).
    pub fn bios(self) -> Result<Option<PathBuf>> {
        match self {
            Self::Hypocaust => crate::artifacts::firmware().map(Some),
            Self::Opensbi => Ok(None),
        }
    }
}

/// The QEMU machine type (the board): everything board-specific on the host side is here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum Board {
    /// QEMU's `virt`: 16550 UART, PLIC, ACLINT, virtio-mmio slots, Goldfish RTC, a test
    /// device that powers off.
    #[default]
    #[serde(rename = "virt")]
    Virt,
    /// QEMU's `sifive_u` (HiFive Unleashed, FU540): an E51 monitor hart 0 without S-mode,
    /// U54 harts (Sv39), a SiFive UART, no virtio, no RTC, no power-off device, no `time`
    /// CSR (OpenSBI emulates `rdtime`).
    #[value(name = "sifive_u")]
    #[serde(rename = "sifive_u")]
    SifiveU,
}

impl Board {
    /// QEMU's `-machine` name.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Virt => "virt",
            Self::SifiveU => "sifive_u",
        }
    }

    /// The `-cpu` model when none is asked for.
    pub fn default_cpu(self) -> &'static str {
        match self {
            Self::Virt => DEFAULT_CPU,
            Self::SifiveU => U54_CPU,
        }
    }

    /// The Linux console device of the board's UART (the guest's, under hypocaust, is
    /// the same kind).
    pub fn linux_console(self) -> &'static str {
        match self {
            Self::Virt => "ttyS0",
            Self::SifiveU => "ttySIF0",
        }
    }

    /// Harts QEMU adds that cannot run S-mode (counted in `-smp`): `sifive_u`'s E51.
    pub fn monitor_harts(self) -> usize {
        match self {
            Self::Virt => 0,
            Self::SifiveU => 1,
        }
    }

    /// Whether an SBI power-off makes QEMU exit (`sifive_u` has no device for it: runs
    /// end at a line that says the machine powers off, see [`powered_off`]).
    pub fn powers_off(self) -> bool {
        self == Self::Virt
    }

    /// The firmware runs on this board use unless told otherwise.
    pub fn default_firmware(self) -> Firmware {
        match self {
            Self::Virt => Firmware::Hypocaust,
            Self::SifiveU => Firmware::Opensbi,
        }
    }

    /// Whether `firmware` runs on this board, or what to use instead.
    pub fn check_firmware(self, firmware: Firmware) -> Result<()> {
        if self == Self::SifiveU && firmware == Firmware::Hypocaust {
            anyhow::bail!(
                "hypocaust's firmware does not run on sifive_u (its harts have no `time` CSR, \
                 which the firmware would have to emulate; docs/boards.md): add \
                 --firmware opensbi"
            );
        }
        Ok(())
    }
}

/// Where the output says the machine powers off, whether it reports success: hypocaust's
/// last line, the test kernel's TAP summary, Linux's. Used on boards where an SBI power-off
/// leaves QEMU running.
pub fn powered_off(output: &str) -> Option<bool> {
    output.lines().find_map(|line| {
        let line = line.trim_end();
        if line.starts_with("hypocaust: all guests are off; powering off")
            || line.starts_with("hypocaust: no guests configured; powering off")
            || line.ends_with("reboot: Power down")
        {
            return Some(true);
        }
        if line.starts_with("hypocaust: no guest can run; powering off") {
            return Some(false);
        }
        // "# 180 passed, 0 failed, 11 skipped"
        let rest = line.strip_prefix("# ")?;
        let (_, rest) = rest.split_once(" passed, ")?;
        let (failed, _) = rest.split_once(" failed")?;
        failed.parse::<u64>().ok().map(|f| f == 0)
    })
}

/// One QEMU machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub board: Board,
    pub cpu: String,
    pub smp: usize,
    pub memory_mib: u64,
    /// Loaded by `-kernel`: hypocaust's ELF, or a guest Image when run natively.
    pub kernel: PathBuf,
    /// `-bios`: a firmware file, or None for QEMU's default (OpenSBI).
    pub bios: Option<PathBuf>,
    pub append: Option<String>,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    /// Further QEMU arguments (devices, `-icount`, ...).
    pub extra: Vec<String>,
    /// Console input for captured runs: each text is typed once the output so far shows
    /// its trigger (in order).
    pub input: Vec<(String, String)>,
    /// ELF files whose symbols name the pc of a hart when a captured run hangs (the
    /// kernel QEMU loads is always one; add the guest's under hypocaust).
    pub symbols: Vec<PathBuf>,
}

impl Machine {
    /// The same machine on `board` with its default CPU.
    pub fn on(mut self, board: Board) -> Self {
        self.board = board;
        self.cpu = board.default_cpu().into();
        self
    }

    /// A machine with the default CPU, one hart and 1 GiB.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            board: Board::Virt,
            cpu: DEFAULT_CPU.into(),
            smp: 1,
            memory_mib: 1024,
            kernel: kernel.into(),
            bios: None,
            append: None,
            initrd: None,
            dtb: None,
            extra: Vec::new(),
            input: Vec::new(),
            symbols: Vec::new(),
        }
    }

    /// The arguments for QEMU, without the console options.
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-machine",
            self.board.qemu_name(),
            "-cpu",
            &self.cpu,
            "-smp",
            &(self.smp + self.board.monitor_harts()).to_string(),
            "-m",
            &format!("{}M", self.memory_mib),
            "-bios",
            &self.bios.as_ref().map_or("default".into(), |b| b.to_string_lossy().into_owned()),
            "-kernel",
            &self.kernel.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(append) = &self.append {
            a.extend(["-append".into(), append.clone()]);
        }
        if let Some(initrd) = &self.initrd {
            a.extend(["-initrd".into(), initrd.to_string_lossy().into_owned()]);
        }
        if let Some(dtb) = &self.dtb {
            a.extend(["-dtb".into(), dtb.to_string_lossy().into_owned()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The full command line, for "to reproduce, run: ..." messages.
    pub fn command_line(&self) -> String {
        let mut line = qemu_binary().display().to_string();
        for arg in self.args().iter().chain(["-nographic".to_string()].iter()) {
            if arg.contains(' ') {
                line.push_str(&format!(" '{arg}'"));
            } else {
                line.push(' ');
                line.push_str(arg);
            }
        }
        line
    }

    /// Writes the machine's device tree to `path` (QEMU `dumpdtb`).
    pub fn dump_dtb(&self, path: &Path) -> Result<()> {
        let mut args = self.args();
        let name = self.board.qemu_name();
        let m = args.iter().position(|a| a == name).expect("machine type is in the arguments");
        args[m] = format!("{name},dumpdtb={}", path.display());
        let out = Command::new(qemu_binary()).args(&args).args(["-display", "none"]).output()?;
        anyhow::ensure!(
            path.exists(),
            "QEMU did not dump the device tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// How a QEMU run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited (the guest powered off, or QEMU failed) with this status.
    Exited(Option<i32>),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The caller had seen enough and stopped it.
    Stopped,
    /// On a board that cannot power off (`sifive_u`), the output said the machine powers
    /// off (with success or not), and xtask stopped QEMU.
    PoweredOff(bool),
}

/// The result of a captured run.
#[derive(Debug)]
pub struct Run {
    /// Serial console and QEMU's own messages, `\r` removed.
    pub output: String,
    pub ending: Ending,
    pub elapsed: Duration,
    /// Where the whole output was saved.
    pub log: PathBuf,
    /// When each output line holding one of [`STAMPED`] arrived (since QEMU started),
    /// and the line.
    pub stamps: Vec<(Duration, String)>,
}

/// Output lines whose arrival time a [`Run`] keeps: the bench's markers
/// (guests/bench/bench.h), which xtask times from outside the guest.
pub const STAMPED: &[&str] = &["bench-boot ", "bench-start ", "bench-end "];

/// Where the output goes as it arrives.
struct Sink {
    text: Mutex<String>,
    stamps: Mutex<Vec<(Duration, String)>>,
    start: Instant,
}

impl Run {
    /// Whether QEMU exited with status 0 before the timeout.
    pub fn exited_cleanly(&self) -> bool {
        matches!(self.ending, Ending::Exited(Some(0)) | Ending::PoweredOff(true))
    }

    /// The last `n` lines of output.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Directory for run logs.
pub fn log_dir() -> PathBuf {
    root().join("target").join("logs")
}

/// Kills the child when dropped, so that no QEMU outlives an error path.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pump(source: impl Read + Send + 'static, sink: Arc<Sink>, echo: bool) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let at = sink.start.elapsed();
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if echo {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
            if STAMPED.iter().any(|m| text.contains(m)) {
                sink.stamps.lock().expect("stamps lock").push((at, text.trim_end().to_string()));
            }
            sink.text.lock().expect("output lock").push_str(&text);
            line.clear();
        }
    })
}

/// Runs `machine` with its serial console captured (and echoed if `echo`), killing it after
/// `timeout`. The output is also saved to `target/logs/<name>.log`.
pub fn run_captured(machine: &Machine, name: &str, timeout: Duration, echo: bool) -> Result<Run> {
    run_until(machine, name, timeout, echo, |_| false)
}

/// Like [`run_captured`], but also stops QEMU (ending [`Ending::Stopped`]) as soon as
/// `done` says the output so far is all that is needed.
pub fn run_until(
    machine: &Machine,
    name: &str,
    timeout: Duration,
    echo: bool,
    done: impl Fn(&str) -> bool,
) -> Result<Run> {
    // The gdbstub, so that a run that hangs can say where each hart is.
    let gdb_socket = std::env::temp_dir().join(format!(
        "hypocaust-{}-{}.gdb",
        std::process::id(),
        name.replace('/', "-")
    ));
    let _ = std::fs::remove_file(&gdb_socket);
    let mut cmd = Command::new(qemu_binary());
    cmd.args(machine.args())
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-gdb")
        .arg(format!("unix:{},server=on,wait=off", gdb_socket.display()))
        .stdin(if machine.input.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = KillOnDrop(
        cmd.spawn().with_context(|| format!("could not start {}", qemu_binary().display()))?,
    );
    let sink =
        Arc::new(Sink { text: Mutex::new(String::new()), stamps: Mutex::new(Vec::new()), start });
    let output = &sink.text;
    let readers = [
        pump(child.0.stdout.take().expect("piped"), sink.clone(), echo),
        pump(child.0.stderr.take().expect("piped"), sink.clone(), echo),
    ];
    let mut stdin = child.0.stdin.take();
    let mut typed = 0;
    let ending = loop {
        if let Some(status) = child.0.try_wait()? {
            break Ending::Exited(status.code());
        }
        if let (Some((trigger, text)), Some(pipe)) = (machine.input.get(typed), stdin.as_mut())
            && output.lock().expect("output lock").contains(trigger.as_str())
        {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
            pipe.flush()?;
            typed += 1;
        }
        if start.elapsed() > timeout {
            let report = where_harts_are(machine, &gdb_socket);
            let _ = child.0.kill();
            let _ = child.0.wait();
            output.lock().expect("output lock").push_str(&format!(
                "\n==== xtask: QEMU ran past its timeout of {} s; where each hart was ====\n{report}",
                timeout.as_secs()
            ));
            break Ending::TimedOut;
        }
        if done(&output.lock().expect("output lock")) {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break Ending::Stopped;
        }
        if !machine.board.powers_off()
            && let Some(ok) = powered_off(&output.lock().expect("output lock"))
        {
            // What follows the line (the rest of a summary) arrives within moments.
            thread::sleep(Duration::from_millis(300));
            let _ = child.0.kill();
            let _ = child.0.wait();
            break Ending::PoweredOff(ok);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    drop(child);
    let _ = std::fs::remove_file(&gdb_socket);
    for r in readers {
        let _ = r.join();
    }
    let output = std::mem::take(&mut *output.lock().expect("output lock"));
    let stamps = std::mem::take(&mut *sink.stamps.lock().expect("stamps lock"));
    let dir = log_dir();
    std::fs::create_dir_all(&dir)?;
    let log = dir.join(format!("{}.log", name.replace('/', "-")));
    std::fs::write(&log, format!("$ {}\n{output}", machine.command_line()))?;
    Ok(Run { output, ending, elapsed, log, stamps })
}

/// Stops the machine behind `socket` (its gdbstub) and says where each hart is: pc and
/// the function it is in, privilege, trap CSRs.
fn where_harts_are(machine: &Machine, socket: &Path) -> String {
    // A flat image (`X.bin`) has its symbols in the ELF file it was made from (`X`).
    let elves: Vec<PathBuf> = std::iter::once(&machine.kernel)
        .chain(&machine.bios)
        .chain(&machine.symbols)
        .map(|p| {
            if p.extension().is_some_and(|e| e == "bin") { p.with_extension("") } else { p.clone() }
        })
        .collect();
    match crate::gdb::harts(socket, Duration::from_secs(5)) {
        Ok(harts) => crate::gdb::describe(&harts, &crate::gdb::Symbols::load(&elves)),
        Err(e) => format!("(could not ask QEMU's gdbstub: {e:#})\n"),
    }
}

/// What an interactive run ended with.
pub struct Interactive {
    pub status: ExitStatus,
    /// hypocaust's lines saying a guest could not be set up or booted (it runs the others).
    pub guest_failures: Vec<String>,
}

impl Interactive {
    /// QEMU exited cleanly and every guest could start.
    pub fn success(&self) -> bool {
        self.status.success() && self.guest_failures.is_empty()
    }
}

/// Whether a console line is hypocaust saying a guest (or all of them) could not start.
pub fn is_guest_failure(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("hypocaust: ")
        && ["cannot start", "cannot boot again", "no guest can run", "not a usable guest bundle"]
            .iter()
            .any(|what| line.contains(what))
}

/// Runs `machine` on the terminal (serial and QEMU monitor on stdio: Ctrl-A X quits),
/// killing it after `timeout` if one is given. The output is passed through as it comes
/// and watched for guests that cannot start.
pub fn run_interactive(machine: &Machine, timeout: Option<Duration>) -> Result<Interactive> {
    let mut cmd = Command::new(qemu_binary());
    cmd.args(machine.args()).arg("-nographic").stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = KillOnDrop(
        cmd.spawn().with_context(|| format!("could not start {}", qemu_binary().display()))?,
    );
    let mut out = child.0.stdout.take().context("QEMU's stdout")?;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let failures = failures.clone();
        thread::spawn(move || {
            let mut line = Vec::new();
            let mut buf = [0u8; 4096];
            let stdout = std::io::stdout();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut to = stdout.lock();
                let _ = to.write_all(&buf[..n]);
                let _ = to.flush();
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let text = String::from_utf8_lossy(&line).into_owned();
                        if is_guest_failure(&text) {
                            failures.lock().map(|mut f| f.push(text.trim().to_string())).ok();
                        }
                        line.clear();
                    } else if line.len() < 4096 {
                        line.push(b);
                    }
                }
            }
        })
    };
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            anyhow::bail!(
                "QEMU ran past the timeout of {} s and was stopped",
                timeout.unwrap_or_default().as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = watcher.join();
    let guest_failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    Ok(Interactive { status, guest_failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_failures_are_recognized() {
        assert!(is_guest_failure(
            "hypocaust: guest 0 'linux' cannot start: not enough free host RAM for 900 MiB\r"
        ));
        assert!(is_guest_failure("hypocaust: no guest can run; powering off"));
        assert!(!is_guest_failure("[linux] hypocaust: guest 0 cannot start"));
        assert!(!is_guest_failure("hypocaust: guest 'linux' powered off"));
    }

    #[test]
    fn device_arguments() {
        let modern = virtio_devices(Path::new("/tmp/a,b.img"), false);
        assert_eq!(modern[1], "file=/tmp/a,,b.img,if=none,format=raw,id=hd0");
        assert!(modern.ends_with(&["-global".into(), "virtio-mmio.force-legacy=false".into()]));
        let legacy = virtio_devices(Path::new("d.img"), true);
        assert!(!legacy.iter().any(|a| a.contains("force-legacy")));
        assert_eq!(legacy.len() + 2, modern.len());
        let ssh = virtio_devices_forwarding(Path::new("d.img"), false, Some(10022));
        assert!(ssh.contains(&"user,id=net0,hostfwd=tcp:127.0.0.1:10022-:22".to_string()));
    }
}

#[cfg(test)]
mod power_off_tests {
    use super::powered_off;

    #[test]
    fn the_lines_that_end_a_run() {
        assert_eq!(powered_off("boot\nhypocaust: all guests are off; powering off\n"), Some(true));
        assert_eq!(powered_off("hypocaust: no guest can run; powering off\r\n"), Some(false));
        assert_eq!(powered_off("[   19.7] reboot: Power down\n"), Some(true));
        assert_eq!(powered_off("ok 1 - a\n# 180 passed, 0 failed, 11 skipped\n"), Some(true));
        assert_eq!(powered_off("# 180 passed, 2 failed, 11 skipped\n"), Some(false));
        assert_eq!(powered_off("# obs x passed, y\nok 3 - reboot\n"), None);
    }
}
