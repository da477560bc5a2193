//! `cargo xtask test`: every test. Host unit tests first, then the QEMU tests; a summary
//! and a last line `N passed, M failed`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::artifacts::GuestFiles;
use crate::linux::run::Boot;
use crate::linux::{self, build as guest};
use crate::qemu::{self, Firmware, Machine, SV39_CPU, SV48_CPU, U54_CPU};
use crate::util::{output_within, root};
use crate::{artifacts, bench, provision, suite};

/// Results of one group of tests.
struct Group {
    name: &'static str,
    passed: usize,
    failed: usize,
    skipped: usize,
    elapsed: Duration,
}

impl Group {
    fn new(name: &'static str) -> Self {
        Self { name, passed: 0, failed: 0, skipped: 0, elapsed: Duration::ZERO }
    }
}

/// Counts from `cargo test` output: per test binary, passed and failed. Cargo names each
/// binary on stderr and the test harness reports on stdout, in the same order.
fn parse_cargo_test(stdout: &str, stderr: &str) -> (Vec<(String, usize, usize)>, Vec<String>) {
    let mut names = stderr.lines().filter_map(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            // "Running unittests src/lib.rs (target/debug/deps/rv-0123abcd)"
            Some(
                rest.rsplit('/')
                    .next()
                    .and_then(|s| s.trim_end_matches(')').rsplit_once('-'))
                    .map_or(rest.to_string(), |(name, _)| name.to_string()),
            )
        } else {
            line.strip_prefix("Doc-tests ").map(|rest| format!("{rest} (doc)"))
        }
    });
    let mut per_binary = Vec::new();
    let mut failures = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(key)
                            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    })
                    .unwrap_or(0)
            };
            let name = names.next().unwrap_or_else(|| "?".into());
            per_binary.push((name, num("passed"), num("failed")));
        } else if line.starts_with("test ") && line.ends_with("FAILED") {
            failures.push(line.to_string());
        }
    }
    (per_binary, failures)
}

fn host_tests() -> Result<Group> {
    println!("== host unit tests (cargo test)");
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--no-fail-fast"])
        .output()?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (per_binary, failures) = parse_cargo_test(&stdout, &stderr);
    let mut group = Group::new("host unit tests");
    for (name, passed, failed) in per_binary.iter().filter(|b| b.1 + b.2 > 0) {
        println!("   {name:<24} {passed:>4} passed, {failed} failed");
        group.passed += passed;
        group.failed += failed;
    }
    for f in &failures {
        println!("   {f}");
    }
    if !out.status.success() && group.failed == 0 {
        // A build error: no test ran.
        println!(
            "{}",
            stderr
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        group.failed += 1;
    }
    Ok(group)
}

/// One QEMU boot of hypocaust and what its console must show.
struct BootCase {
    name: &'static str,
    machine: Machine,
    /// Lines (substrings) the console must show, in order.
    expect: Vec<&'static str>,
    /// The machine never powers off by itself: stop it once `expect` is met.
    endless: bool,
    /// Lines containing this text must all differ from the text on (each guest and each
    /// boot gets its own), and there must be at least two.
    distinct: Option<&'static str>,
}

/// A machine running hypocaust with the test kernel as its one guest.
fn with_guest(
    name: &str,
    bootargs: &str,
    memory_mib: u32,
    vcpus: u32,
    kernel: Option<std::path::PathBuf>,
) -> Result<Machine> {
    let kernel = match kernel {
        Some(k) => k,
        None => artifacts::testkernel()?,
    };
    let bundle = qemu::log_dir().join(format!("{}.bundle", name.replace('/', "-")));
    let guest = GuestFiles {
        name: "tk".into(),
        kernel,
        initrd: None,
        bootargs: bootargs.into(),
        memory_mib,
        vcpus,
        virtio_slots: 0,
        ..Default::default()
    };
    artifacts::bundle(&[guest], &bundle)?;
    suite::hypocaust_machine(bundle, Firmware::default())
}

/// A machine with `smp` harts running hypocaust with one test-kernel guest per
/// `(name, bootargs)`.
fn with_guests(case: &str, smp: usize, guests: &[(&str, &str)]) -> Result<Machine> {
    let kernel = artifacts::testkernel()?;
    let bundle = qemu::log_dir().join(format!("{}.bundle", case.replace('/', "-")));
    let files: Vec<GuestFiles> = guests
        .iter()
        .map(|(name, bootargs)| GuestFiles {
            name: (*name).into(),
            kernel: kernel.clone(),
            initrd: None,
            bootargs: (*bootargs).into(),
            memory_mib: 64,
            vcpus: 1,
            virtio_slots: 0,
            ..Default::default()
        })
        .collect();
    artifacts::bundle(&files, &bundle)?;
    let mut m = suite::hypocaust_machine(bundle, Firmware::default())?;
    m.smp = smp;
    Ok(m)
}

/// Console input typed into a machine: `(after this output, type this)`.
fn typing(m: Machine, input: &[(&str, &str)]) -> Machine {
    Machine { input: input.iter().map(|(t, s)| (t.to_string(), s.to_string())).collect(), ..m }
}

fn boot_cases() -> Result<Vec<BootCase>> {
    let hv = artifacts::hypervisor()?;
    let with = |f: &dyn Fn(&mut Machine)| {
        let mut m = Machine::new(&hv);
        f(&mut m);
        m
    };
    let summary = |harts: &'static str| {
        vec!["hypocaust 0.1.0: RISC-V hypervisor", harts, "sbi       SBI v", "powering off"]
    };
    let refusal = "hypocaust: cannot run on this platform: ";
    // A device tree that declares Sv39-only harts (the hart itself takes more).
    let sv39_dtb = qemu::log_dir().join("virt-sv39.dtb");
    std::fs::create_dir_all(qemu::log_dir())?;
    let base = with(&|m| m.smp = 2);
    base.dump_dtb(&sv39_dtb)?;
    let dtb = std::fs::read(&sv39_dtb)?;
    let patched =
        replace_all(&replace_all(&dtb, b"riscv,sv48", b"riscv,sv39"), b"riscv,sv57", b"riscv,sv39");
    std::fs::write(&sv39_dtb, patched)?;

    let big_kernel = qemu::log_dir().join("big-kernel.bin");
    std::fs::write(&big_kernel, vec![0x13u8; 20 << 20])?;
    let not_a_bundle = qemu::log_dir().join("not-a-bundle.img");
    std::fs::write(
        &not_a_bundle,
        b"this is not a bundle, just some bytes in an initrd\n".repeat(100),
    )?;
    let mut garbage = suite::hypocaust_machine(not_a_bundle, Firmware::default())?;
    garbage.memory_mib = 256;
    let no_guests = "hypocaust: no guest can run; powering off";

    let mut cases = vec![
        BootCase {
            name: "console/input",
            machine: typing(
                with_guest("console/input", "action=echo", 64, 1, None)?,
                &[("# echo: ready", "hello, uart\r")],
            ),
            expect: vec!["# echo: got 'hello, uart'", "powered off"],
            endless: false,
            distinct: None,
        },
        BootCase {
            // Two guests: output tagged with their names; Ctrl-] and a digit move the input.
            name: "console/two-guests",
            machine: typing(
                with_guests(
                    "console/two-guests",
                    2,
                    &[("a", "action=echo"), ("b", "action=echo")],
                )?,
                &[("[b] # echo: ready", "\x1d1to b\r"), ("[b] # echo: got", "\x1d0to a\r")],
            ),
            expect: vec![
                "[b] # echo: got 'to b'",
                "[a] # echo: got 'to a'",
                "all guests are off; powering off",
            ],
            endless: false,
            distinct: Some("# rng-seed: "),
        },
        BootCase {
            name: "guest/reboot",
            machine: with_guest("guest/reboot", "action=reboot", 64, 1, None)?,
            expect: vec!["reboots (ColdReboot)"; 3],
            endless: true,
            distinct: Some("# rng-seed: "),
        },
        BootCase {
            name: "guest/last-hart-stopped",
            machine: with_guest("guest/last-hart-stopped", "action=hart-stop", 64, 1, None)?,
            expect: vec!["stopped its last hart", "all guests are off; powering off"],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "guest/too-many-vcpus",
            machine: with_guest("guest/too-many-vcpus", "", 64, 9, None)?,
            expect: vec!["cannot start: it asks for 9 vCPUs; a guest has 1 to 8", no_guests],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "guest/too-much-memory",
            machine: with_guest("guest/too-much-memory", "", 2048, 1, None)?,
            expect: vec!["cannot start: not enough free host RAM for 2048 MiB", no_guests],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "guest/kernel-too-big",
            machine: with_guest("guest/kernel-too-big", "", 16, 1, Some(big_kernel))?,
            expect: vec!["cannot start: the kernel needs", "outside the guest's RAM"],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "guest/not-a-bundle",
            machine: garbage,
            expect: vec![
                "the initrd is not a usable guest bundle: not a hypocaust guest bundle",
                no_guests,
            ],
            endless: false,
            distinct: None,
        },
    ];
    cases.extend(vec![
        BootCase {
            name: "boot/smp1",
            machine: with(&|m| m.smp = 1),
            expect: summary("harts     1 online of 1"),
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "boot/smp4",
            machine: with(&|m| m.smp = 4),
            expect: summary("harts     4 online of 4"),
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "refuse/no-mmu",
            machine: with(&|m| m.cpu = format!("{},mmu=false", qemu::DEFAULT_CPU)),
            expect: vec![refusal, "the boot hart has no paging"],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "refuse/sv39-only",
            machine: with(&|m| {
                m.smp = 2;
                m.dtb = Some(sv39_dtb.clone());
            }),
            expect: vec![refusal, "riscv,sv39 only"],
            endless: false,
            distinct: None,
        },
        BootCase {
            name: "refuse/too-little-ram",
            machine: with(&|m| m.memory_mib = 64),
            expect: vec![refusal, "MiB of RAM is free; hypocaust needs at least"],
            endless: false,
            distinct: None,
        },
    ]);
    Ok(cases)
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + to.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Checks that every expected substring appears, in order.
fn find_in_order(output: &str, expect: &[&str]) -> Result<(), String> {
    let mut rest = output;
    for e in expect {
        match rest.find(e) {
            Some(i) => rest = &rest[i + e.len()..],
            None => return Err(format!("missing: {e:?}")),
        }
    }
    Ok(())
}

fn boot_tests() -> Result<Group> {
    println!("== hypocaust boot and guest lifecycle (QEMU virt, OpenSBI)");
    let mut group = Group::new("hypocaust boot, guests");
    for case in boot_cases()? {
        let expect = case.expect.clone();
        let done = |out: &str| case.endless && find_in_order(out, &expect).is_ok();
        let run = qemu::run_until(&case.machine, case.name, Duration::from_secs(60), false, done)?;
        let ended_right =
            if case.endless { run.ending == qemu::Ending::Stopped } else { run.exited_cleanly() };
        let verdict = if !ended_right {
            Err(format!("QEMU ended with {:?}", run.ending))
        } else {
            find_in_order(&run.output, &case.expect)
                .and_then(|()| case.distinct.map_or(Ok(()), |d| all_distinct(&run.output, d)))
        };

        report_case(&mut group, case.name, 24, verdict, &case.machine, &run, 15);
    }
    Ok(group)
}

/// Whether the lines of `output` that contain `marker`, from the marker on, all differ
/// (and there are at least two).
fn all_distinct(output: &str, marker: &str) -> Result<(), String> {
    let seen: Vec<&str> =
        output.lines().filter_map(|l| l.find(marker).map(|at| l[at..].trim_end())).collect();
    let unique: std::collections::BTreeSet<&&str> = seen.iter().collect();
    if seen.len() >= 2 && unique.len() == seen.len() {
        Ok(())
    } else {
        Err(format!("expected at least two different {marker:?} lines, got {seen:?}"))
    }
}

/// Counts one QEMU case of a group and prints its line: `ok` with its time, or `FAIL` with
/// why, the command that reproduces it and the last `tail` lines of its log.
fn report_case(
    group: &mut Group,
    name: &str,
    width: usize,
    verdict: Result<(), String>,
    machine: &Machine,
    run: &qemu::Run,
    tail: usize,
) {
    match verdict {
        Ok(()) => {
            group.passed += 1;
            println!("   ok    {name:<width$} ({:.1} s)", run.elapsed.as_secs_f64());
        }
        Err(why) => {
            group.failed += 1;
            println!("   FAIL  {name:<width$} {why}");
            println!("         to reproduce: {}", machine.command_line());
            println!("         log: {}; its end:\n{}", run.log.display(), indent(&run.tail(tail)));
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("           | {l}")).collect::<Vec<_>>().join("\n")
}

/// The guest test suite natively and under hypocaust, compared, as the group `name`.
fn suite_tests(name: &'static str, opts: &suite::Options) -> Result<Group> {
    let transport = if opts.legacy { "legacy" } else { "modern" };
    let only = opts.filter.as_ref().map(|f| format!(" ({f} only)")).unwrap_or_default();
    let smp = match (opts.smp, opts.harts) {
        (0 | 1, _) => String::new(),
        (n, h) if h > 0 && h < n => {
            format!(", {n} vCPUs (natively harts; under hypocaust on {h} harts)")
        }
        (n, _) => format!(", {n} vCPUs (natively harts; under hypocaust on as many)"),
    };
    println!(
        "== guest test suite{only}, natively and under hypocaust on {}, {transport} virtio-mmio{smp}",
        opts.firmware.name()
    );
    let mut group = Group::new(name);
    compare_into(&mut group, &suite::Comparison::run(opts)?, false);
    Ok(group)
}

/// Counts the verdicts of a comparison into `group`; prints every row if `verbose`, else
/// only those that are not identical.
fn compare_into(group: &mut Group, c: &suite::Comparison, verbose: bool) {
    c.print(verbose);
    let failed_before = group.failed;
    for (_, _, _, verdict) in &c.rows {
        match verdict {
            suite::Verdict::Identical => group.passed += 1,
            suite::Verdict::NotOffered(_) => group.skipped += 1,
            suite::Verdict::OnlySecond(_)
            | suite::Verdict::Stricter(_)
            | suite::Verdict::Varies(_) => group.passed += 1,
            suite::Verdict::Differs(_) => group.failed += 1,
        }
    }
    if !c.agrees() && group.failed == failed_before {
        // A run that did not complete: count it, its log was printed above.
        group.failed += 1;
    }
}

/// Harts of the firmware tests' machine.
const FIRMWARE_HARTS: usize = 4;

/// hypocaust's firmware on its own: the guest suite natively on it, on a machine of
/// [`FIRMWARE_HARTS`] harts, compared with the oracle (OpenSBI): SBI calls, HSM start,
/// stop, status and suspend of every hart, IPIs, remote fences, the timer, exceptions
/// delivered to S-mode, and the reset that ends the run.
fn firmware_tests() -> Result<Group> {
    println!(
        "== hypocaust's firmware: the guest suite natively on it and on OpenSBI, -smp {FIRMWARE_HARTS}, compared"
    );
    let mut group = Group::new("firmware (compared)");
    let opts = suite::Options { smp: FIRMWARE_HARTS, ..suite::Options::default() };
    compare_into(&mut group, &suite::Comparison::firmware(&opts)?, false);
    Ok(group)
}

/// The `-icount` shifts of the timing sweeps: one tick of the 10 MHz timebase is 100, 12.5
/// and 1.6 instructions, so the deadlines step through an exit coarsely, finely, and
/// almost instruction by instruction.
pub const SWEEP_SHIFTS: [u32; 3] = [0, 3, 6];

/// Runs of the interrupt tests on a loaded machine, and the CPU hogs that load it.
const LOADED_RUNS: usize = 3;
const LOADED_HOGS: usize = 2;

/// The interrupt and timer tests (`irq/`, the timing sweeps among them) with a
/// deterministic clock at each of [`SWEEP_SHIFTS`], sweeping enough deadline offsets to
/// cover a few exits, then on a machine loaded with CPU hogs: natively and under
/// hypocaust, identical every time.
fn timing_tests() -> Result<Group> {
    println!(
        "== timing: the irq/ tests under -icount (sweeping deadlines), then on a loaded machine"
    );
    let mut group = Group::new("timing sweeps, load");
    for shift in SWEEP_SHIFTS {
        let opts = suite::Options {
            filter: Some("irq/".into()),
            icount: Some(shift),
            sweep: Some(32 << shift),
            ..suite::Options::default()
        };
        println!("   -icount shift={shift}, {} offsets:", 32 << shift);
        compare_into(&mut group, &suite::Comparison::run(&opts)?, false);
    }
    let _hogs = crate::util::CpuHogs::start(LOADED_HOGS);
    for run in 1..=LOADED_RUNS {
        println!("   with {LOADED_HOGS} CPU hogs, run {run} of {LOADED_RUNS}:");
        let opts = suite::Options { filter: Some("irq/".into()), ..suite::Options::default() };
        compare_into(&mut group, &suite::Comparison::run(&opts)?, false);
    }
    Ok(group)
}

/// What one Linux test expects of its command run.
type Check<'a> = Box<dyn Fn(&str) -> Result<(), String> + 'a>;

/// Requires every line of `wanted` among the output's lines (trimmed), in order.
fn lines_in_order(output: &str, wanted: &[String]) -> Result<(), String> {
    let mut lines = output.lines().map(str::trim);
    for w in wanted {
        if !lines.any(|l| l == w) {
            return Err(format!("no line {w:?} (in order) in the output {output:?}"));
        }
    }
    Ok(())
}

/// The value of the first line `key: value` or `key<tab>: value` in `text`.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Checks `/proc/cpuinfo`'s isa line: rv64 and no `h` among the single-letter extensions.
fn check_isa(isa: &str) -> Result<(), String> {
    let letters = isa.strip_prefix("rv64").ok_or(format!("isa {isa:?} is not rv64"))?;
    let letters = letters.split('_').next().unwrap_or("");
    if !letters.contains('i') {
        return Err(format!("isa {isa:?} lacks i"));
    }
    if letters.contains('h') {
        return Err(format!("isa {isa:?} has the H extension"));
    }
    Ok(())
}

/// Bytes `seq 1 n` prints.
fn seq_bytes(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

/// A one-shot HTTP server on 127.0.0.1 for the guest's wget: answers up to `max`
/// requests with `body` until stopped or `limit` has passed.
struct HttpServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl HttpServer {
    fn start(body: String, max: usize, limit: Duration) -> Result<Self> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut served = 0;
            while served < max && start.elapsed() < limit && !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
                served += 1;
            }
            served
        });
        Ok(Self { port, stop, thread })
    }

    /// Stops the server; returns how many requests it answered.
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Logs into the guest with ssh (retrying until `limit`) and runs `echo ok; touch
/// /tmp/ssh-done`; returns what the session printed.
fn ssh_session(port: u16, key: &std::path::Path, limit: Duration) -> Result<String, String> {
    let ssh = provision::find_tool("ssh").ok_or("no ssh")?;
    let start = Instant::now();
    let mut last = String::from("never tried");
    while start.elapsed() < limit {
        let out = output_within(
            Command::new(&ssh).args(["-p", &port.to_string(), "-i"]).arg(key).args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                "echo ok; touch /tmp/ssh-done",
            ]),
            Duration::from_secs(60),
        );
        match out {
            Ok(o) if o.status.success() => {
                return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
            }
            Ok(o) => {
                last = format!("ssh: {} {}", o.status, String::from_utf8_lossy(&o.stderr).trim())
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!("no ssh session within {} s; last: {last}", limit.as_secs()))
}

/// Sections of a checks run: `==== check NAME` lines split the output.
const CHECK_MARK: &str = "==== check ";

/// The output of each section of a checks run, by name.
fn sections(output: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix(CHECK_MARK) {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The vCPUs of the SMP Linux tests' guests (natively: harts; under hypocaust: vCPUs on a
/// machine of as many harts), one checks boot each.
pub const SMP_VCPUS: [usize; 2] = [2, 4];
/// Sizes of smpcheck's runs in a checks boot: million hash steps per `burn` thread (0.2 s
/// natively), generations (and churn rounds) of `shootdown` (about 5 s natively with 4
/// vCPUs), round trips of `pingpong`.
pub const BURN_WORK: u64 = 20;
pub const SHOOTDOWN_ITERS: u64 = 30;
pub const PINGPONG_ITERS: u64 = 1000;

/// smpcheck's `burn` hash of `steps` steps (guests/smpcheck/src/checks.rs, `burn_hash`):
/// the guest's result must equal it.
pub fn burn_hash(steps: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(23);
    }
    h
}

/// The `key=value` words of smpcheck's result line `smpcheck SUBCOMMAND ...` in `out`,
/// which must also show `status 0` (the shell's `echo "status $?"`); a `smpcheck: FAIL`
/// line is the error.
fn smpcheck_result(out: &str, subcommand: &str) -> Result<Vec<(String, String)>, String> {
    if let Some(fail) = out.lines().find(|l| l.contains("smpcheck: FAIL")) {
        return Err(fail.trim().to_string());
    }
    let prefix = format!("smpcheck {subcommand} ");
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .ok_or(format!("no result line {prefix:?}... in {out:?}"))?;
    lines_in_order(out, &["status 0".into()])?;
    Ok(line[prefix.len()..]
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Requires `key` among `words` with the value `want`.
fn expect_word(words: &[(String, String)], key: &str, want: &str) -> Result<(), String> {
    match words.iter().find(|(k, _)| k == key) {
        Some((_, v)) if v == want => Ok(()),
        Some((_, v)) => Err(format!("{key}={v}, expected {want}")),
        None => Err(format!("no {key}= in the result line")),
    }
}

/// CPUs `0,1,..,n-1` as smpcheck lists them.
fn cpu_list(n: usize) -> String {
    (0..n).map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

/// The checks of `cpuinfo-harts`: /proc/cpuinfo's processor count, its `hart` lines (as
/// many, all different) and /sys's online CPUs, for `n` vCPUs.
fn check_harts(out: &str, n: usize) -> Result<(), String> {
    let mut lines = out.lines().map(str::trim);
    let processors = lines.next().unwrap_or("");
    if processors != n.to_string() {
        return Err(format!("{processors:?} processors in /proc/cpuinfo, expected {n}"));
    }
    let mut harts: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "hart").then(|| v.trim())
        })
        .collect();
    let listed = harts.len();
    harts.sort_unstable();
    harts.dedup();
    if listed != n || harts.len() != n {
        return Err(format!(
            "{listed} hart lines, {} different, expected {n}: {out:?}",
            harts.len()
        ));
    }
    let online = if n == 1 { "0".to_string() } else { format!("0-{}", n - 1) };
    lines_in_order(out, &[online])
}

/// The shell text and the checks of the SMP sections of a checks boot with `smp` vCPUs:
/// `cpuinfo-harts`, smpcheck's `cpus` and `burn` always; `shootdown` (and the check that
/// it catches a stale page) and `pingpong` with more than one vCPU.
fn smp_checks<'a>(smp: usize) -> (String, Vec<(&'static str, Check<'a>)>) {
    let status = "echo \"status $?\"";
    let mut script = format!(
        "check cpuinfo-harts\n\
         grep -c '^processor' /proc/cpuinfo; grep '^hart[[:space:]]*:' /proc/cpuinfo; \
         cat /sys/devices/system/cpu/online\n\
         check smp-cpus\nsmpcheck cpus; {status}\n\
         check smp-burn\nsmpcheck burn {smp} {BURN_WORK}; {status}\n"
    );
    let mut checks: Vec<(&'static str, Check)> = vec![
        ("cpuinfo-harts", Box::new(move |out: &str| check_harts(out, smp))),
        (
            "smp-cpus",
            Box::new(move |out: &str| {
                let words = smpcheck_result(out, "cpus")?;
                expect_word(&words, "count", &smp.to_string())?;
                expect_word(&words, "list", &cpu_list(smp))
            }),
        ),
        (
            "smp-burn",
            Box::new(move |out: &str| {
                let words = smpcheck_result(out, "burn")?;
                expect_word(&words, "threads", &smp.to_string())?;
                expect_word(&words, "work", &BURN_WORK.to_string())?;
                expect_word(&words, "cpus", &cpu_list(smp))?;
                expect_word(&words, "overlap", "yes")?;
                expect_word(&words, "hash", &format!("{:016x}", burn_hash(BURN_WORK * 1_000_000)))
            }),
        ),
    ];
    if smp > 1 {
        script.push_str(&format!(
            "check smp-shootdown\nsmpcheck shootdown {smp} {SHOOTDOWN_ITERS}; {status}\n\
             check smp-shootdown-catches\nsmpcheck --inject-stale shootdown {smp} 4; {status}\n\
             check smp-pingpong\nsmpcheck pingpong {PINGPONG_ITERS}; {status}\n"
        ));
        checks.push((
            "smp-shootdown",
            Box::new(move |out: &str| {
                let words = smpcheck_result(out, "shootdown")?;
                let n = smp as u64;
                expect_word(&words, "threads", &smp.to_string())?;
                expect_word(&words, "checked", &((n - 1) * SHOOTDOWN_ITERS).to_string())?;
                expect_word(&words, "churned", &(n * SHOOTDOWN_ITERS).to_string())?;
                expect_word(&words, "cpus", &cpu_list(smp))
            }),
        ));
        checks.push((
            // A simulated stale translation (the writer publishes generation 3 without
            // replacing the page) must be reported, and fail the run.
            "smp-shootdown-catches",
            Box::new(|out: &str| {
                let caught = out.lines().any(|l| {
                    l.contains("smpcheck: FAIL reader on CPU")
                        && l.contains("generation 3: word 1 is 0x2")
                        && l.contains("stale translation")
                });
                if caught && lines_in_order(out, &["status 1".into()]).is_ok() {
                    Ok(())
                } else {
                    Err(format!("the simulated stale page was not reported: {out:?}"))
                }
            }),
        ));
        checks.push((
            "smp-pingpong",
            Box::new(|out: &str| {
                let words = smpcheck_result(out, "pingpong")?;
                expect_word(&words, "round-trips", &PINGPONG_ITERS.to_string())?;
                expect_word(&words, "cpus", "0,1")
            }),
        ));
    }
    (script, checks)
}

/// What a checks boot leaves for the disk read-back: the disk it wrote and the line.
struct Written {
    disk: std::path::PathBuf,
    nonce: String,
    /// The guest wrote and unmounted the disk.
    ok: bool,
    /// Every check passed.
    all_ok: bool,
}

/// The Linux guest's tests, natively (`firmware` None: on OpenSBI, checking the tests
/// themselves) or under hypocaust on `firmware`, with one vCPU. Two boots: one runs every
/// check in turn, each in a section of its output (`cargo xtask linux --cmd`); the second
/// reads back what the first wrote to the disk.
fn linux_tests(firmware: Option<Firmware>) -> Result<Group> {
    let name: &'static str = match firmware {
        None => "linux (native)",
        Some(Firmware::Hypocaust) => "linux (hypocaust)",
        Some(Firmware::Opensbi) => "linux (on OpenSBI)",
    };
    println!(
        "== Linux guest, {}",
        firmware.map_or("natively on QEMU".into(), |f| format!("under hypocaust on {}", f.name()))
    );
    let mut group = Group::new(name);
    let Some(images) = linux_images(&mut group) else {
        return Ok(group);
    };
    let Some(written) = checks_boot(&mut group, &images, firmware, 1, None)? else {
        return Ok(group);
    };

    // The disk again, in a second boot: what the first wrote is there.
    let side = side_name(firmware);
    let logs = qemu::log_dir();
    if written.ok {
        let mut boot = Boot::new(&format!("linux-{side}-disk-read-back"), firmware.is_none());
        if let Some(f) = firmware {
            boot.firmware = f;
        }
        boot.cmd = Some("mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/written.txt".into());
        boot.disk = Some(written.disk.clone());
        let r = linux::run::run_cmd(&images, &boot, boot.timeout(), false);
        let result = match &r {
            Err(e) => Err(format!("{e:#}")),
            Ok(run) => match run.problem() {
                Some(p) => Err(p),
                None if run.status != Some(0) => Err(format!("exit status {:?}", run.status)),
                None => lines_in_order(
                    run.output.as_deref().unwrap_or(""),
                    std::slice::from_ref(&written.nonce),
                ),
            },
        };
        if result.is_ok() {
            let _ = std::fs::remove_file(&written.disk);
            for suffix in ["initramfs.cpio", "bundle.img"] {
                for test in ["checks", "disk-read-back"] {
                    let _ =
                        std::fs::remove_file(logs.join(format!("linux-{side}-{test}-{suffix}")));
                }
            }
        }
        linux_verdict(&mut group, "disk-read-back", result);
    } else {
        println!("   skip  disk-read-back           (disk-write failed)");
        group.skipped += 1;
    }
    Ok(group)
}

/// The SMP Linux tests: a checks boot (every check of [`linux_tests`]' first boot, and the
/// SMP checks: /proc/cpuinfo's harts, smpcheck's cpus, burn, shootdown and pingpong) with
/// each of [`SMP_VCPUS`] vCPUs, natively (`firmware` None) or under hypocaust on a machine
/// of as many harts. Tests are named `smpN/CHECK`.
/// The Linux guest's checks under hypocaust on QEMU's model of the U54 (`sifive-u54`: Sv39
/// only, privileged spec 1.10, no Sstc), the hart of the boards without H: hypocaust runs
/// in Sv39 with its window beside the guest.
fn linux_sv39_tests() -> Result<Group> {
    println!("== Linux guest under hypocaust on an Sv39-only hart (-cpu {U54_CPU})");
    let mut group = Group::new("linux (Sv39 host)");
    if let Some(images) = linux_images(&mut group) {
        checks_boot(&mut group, &images, Some(Firmware::Hypocaust), 1, Some(U54_CPU))?;
    }
    Ok(group)
}

/// The result of the check `test` of a Linux checks boot: the run's problem if it had one,
/// the exit status for `exit-status` (the scripts end with `exit 7`), else `check` on the
/// output section the script printed under `test`'s marker.
fn check_result(run: &linux::run::CmdRun, test: &str, check: &Check) -> Result<(), String> {
    if let Some(p) = run.problem() {
        return Err(p);
    }
    if test == "exit-status" && run.status != Some(7) {
        return Err(format!("exit status {:?}, expected 7", run.status));
    }
    let output = run.output.clone().unwrap_or_default();
    sections(&output)
        .into_iter()
        .find(|(n, _)| n == test)
        .map(|(_, t)| t)
        .ok_or(format!("no section {test} in the output {output:?}"))
        .and_then(|t| check(&t))
}

/// The Linux guest on QEMU's `sifive_u` (HiFive Unleashed: U54 harts, SiFive UART, no
/// virtio) under hypocaust (on OpenSBI: hypocaust's firmware does not run there): one boot
/// from the initramfs, with checks that need no disk or network.
///
/// Not natively: QEMU 10.0's SiFive UART reports `ip.txwm` whatever its 8-byte transmit
/// FIFO holds, so Linux's interrupt-driven output overruns the FIFO and loses bytes (the
/// check markers with them) whenever QEMU's drain timer runs late, idle machine or not.
/// Under hypocaust the guest's UART is hypocaust's model, which sends at once, and
/// hypocaust's own driver waits for room: nothing is lost. The same checks run natively
/// on `virt` (group `linux (native)`).
fn linux_sifive_u_tests() -> Result<Group> {
    println!("== Linux guest on QEMU sifive_u under hypocaust (OpenSBI)");
    let mut group = Group::new("linux (sifive_u)");
    let Some(images) = linux_images(&mut group) else {
        return Ok(group);
    };
    let script = format!(
        "check() {{ echo \"{CHECK_MARK}$1\"; }}\n\
         check cpuinfo\ngrep -m1 '^mmu' /proc/cpuinfo; grep -c '^processor' /proc/cpuinfo\n\
         check console\ncat /proc/consoles\n\
         check uart-interrupts\nset -- $(grep 10010000.serial /proc/interrupts); \
         [ \"${{2:-0}}\" -gt 0 ] && echo 'uart interrupts counted'\n\
         check busybox-workload\n\
         i=0; while [ $i -lt 100 ]; do /bin/true || break; i=$((i + 1)); done; echo \"forks $i\"\n\
         seq 1 20000 | sort -rn | head -1\n\
         check exit-status\necho bye\nexit 7"
    );
    let label = |test: &str| format!("sifive_u/{test}");
    let mut boot = Boot::new("linux-sifive_u-hypocaust", false);
    boot.board = qemu::Board::SifiveU;
    boot.firmware = Firmware::Opensbi;
    boot.cmd = Some(script);
    let run = match linux::run::run_cmd(&images, &boot, boot.timeout(), false) {
        Ok(r) => r,
        Err(e) => {
            linux_verdict(&mut group, &label("checks"), Err(format!("{e:#}")));
            return Ok(group);
        }
    };
    let checks: Vec<(&str, Check)> = vec![
        (
            "cpuinfo",
            Box::new(|out: &str| {
                if field(out, "mmu") != Some("sv39") {
                    return Err(format!("expected mmu sv39 (U54 harts) in {out:?}"));
                }
                lines_in_order(out, &["1".into()])
            }),
        ),
        (
            // Linux found the SiFive UART (QEMU's, or hypocaust's model of it) and made it
            // its console.
            "console",
            Box::new(|out: &str| {
                if out.contains("ttySIF0") {
                    Ok(())
                } else {
                    Err(format!("ttySIF0 is not a console: {out:?}"))
                }
            }),
        ),
        (
            // The console's interrupts come through the PLIC.
            "uart-interrupts",
            Box::new(|out: &str| lines_in_order(out, &["uart interrupts counted".into()])),
        ),
        (
            "busybox-workload",
            Box::new(|out: &str| lines_in_order(out, &["forks 100".into(), "20000".into()])),
        ),
        ("exit-status", Box::new(|out: &str| lines_in_order(out, &["bye".into()]))),
    ];
    for (test, check) in checks {
        linux_verdict(&mut group, &label(test), check_result(&run, test, &check));
    }
    Ok(group)
}

fn linux_smp_tests(firmware: Option<Firmware>) -> Result<Group> {
    let name: &'static str = match firmware {
        None => "linux smp (native)",
        Some(Firmware::Hypocaust) => "linux smp (hypocaust)",
        Some(Firmware::Opensbi) => "linux smp (on OpenSBI)",
    };
    println!(
        "== Linux guest with {} vCPUs, {}",
        SMP_VCPUS.map(|n| n.to_string()).join(" and "),
        firmware.map_or("natively on QEMU".into(), |f| format!("under hypocaust on {}", f.name()))
    );
    let mut group = Group::new(name);
    let Some(images) = linux_images(&mut group) else {
        return Ok(group);
    };
    let side = side_name(firmware);
    for smp in SMP_VCPUS {
        if let Some(written) = checks_boot(&mut group, &images, firmware, smp, None)?
            && written.all_ok
        {
            let _ = std::fs::remove_file(&written.disk);
            for suffix in ["initramfs.cpio", "bundle.img"] {
                let file = format!("linux-{side}-smp{smp}-checks-{suffix}");
                let _ = std::fs::remove_file(qemu::log_dir().join(file));
            }
        }
    }
    Ok(group)
}

/// One run of several guests at once under hypocaust: its machine, what each guest must
/// print (in any order between guests), and the monitor session typed once they did.
struct GuestsCase {
    name: &'static str,
    machine: Machine,
    /// Lines (substrings) that must all appear, each guest's in order.
    expect: Vec<Vec<&'static str>>,
    /// What must follow, in order, once the above appeared (the monitor's answers).
    then: Vec<&'static str>,
    timeout: Duration,
}

/// A guest of a [`GuestsCase`]: the test kernel with `bootargs`, or (with `cmd`) the
/// Linux guest running `cmd` and powering off.
fn guest_files(
    case: &str,
    name: &str,
    vcpus: u32,
    memory_mib: u32,
    guest: Result<&str, (&linux::LinuxImages, &str)>,
) -> Result<GuestFiles> {
    let (kernel, initrd, bootargs) = match guest {
        Ok(bootargs) => (artifacts::testkernel()?, None, bootargs.to_string()),
        Err((images, cmd)) => {
            let mut boot = Boot::new(&format!("{case}-{name}"), false);
            boot.cmd = Some(cmd.into());
            let out = qemu::log_dir().join(format!("{case}-{name}-initramfs.cpio"));
            let initrd = linux::run::run_initramfs(images, &boot, &out)?;
            (images.kernel.clone(), Some(initrd), boot.bootargs())
        }
    };
    Ok(GuestFiles {
        name: name.into(),
        kernel,
        initrd,
        bootargs,
        memory_mib,
        vcpus,
        ..Default::default()
    })
}

/// The cases of [`guests_tests`]: several guests on fewer harts than they have vCPUs.
fn guests_cases(images: Option<&linux::LinuxImages>) -> Result<Vec<GuestsCase>> {
    let machine = |case: &str, files: &[GuestFiles], harts: usize, memory_mib: u64| {
        let bundle = qemu::log_dir().join(format!("{case}-bundle.img"));
        artifacts::bundle(files, &bundle)?;
        let mut m = suite::hypocaust_machine(bundle, Firmware::default())?;
        m.smp = harts;
        m.memory_mib = memory_mib;
        anyhow::Ok(m)
    };
    // The monitor: opened once everything above appeared; its list; a guest powered off.
    // (Triggers are whole lines: the prompt has no newline.)
    let monitor = |off: &str| -> Vec<(String, String)> {
        vec![
            ("hypocaust monitor (".into(), "list\r".into()),
            ("host: 2 harts".into(), format!("off {off}\r")),
        ]
    };
    let mut cases = Vec::new();

    // Four vCPUs on two harts: a guest that spins with interrupts off for ever, the SMP
    // tests on two vCPUs, and a guest that stops its only hart.
    let case = "guests-wedged";
    let files = [
        guest_files(case, "wedged", 1, 64, Ok("action=spin"))?,
        guest_files(case, "suite", 2, 64, Ok("filter=smp/"))?,
        guest_files(case, "stopper", 1, 64, Ok("action=hart-stop"))?,
    ];
    let mut m = machine(case, &files, 2, 512)?;
    m.input = vec![
        ("stopped its last hart".into(), String::new()),
        ("[suite] # 9 passed".into(), "\x1dm".into()),
    ];
    m.input.extend(monitor("wedged"));
    cases.push(GuestsCase {
        name: "guests/wedged-one-spins",
        machine: m,
        expect: vec![
            vec!["[wedged] # action: spinning with interrupts off"],
            vec!["[suite] ok 1 - smp/", "[suite] # 9 passed, 0 failed"],
            vec![
                "[stopper] # action: stopping the only hart",
                "guest 'stopper' stopped its last hart",
            ],
        ],
        then: vec![
            "hypocaust monitor",
            "0 wedged       running",
            "vcpu0 running on hart",
            "1 suite        off",
            "2 stopper      off",
            "host: 2 harts",
            "guest 'wedged' powered off (monitor)",
            "guest 'wedged' is off",
            "all guests are off; powering off",
        ],
        timeout: Duration::from_secs(120),
    });

    // Two Linux guests and the SMP tests, five vCPUs on two harts: one Linux guest panics,
    // the other runs its threads on both its vCPUs and powers off, the tests finish.
    if let Some(images) = images {
        let case = "guests-linux";
        let files = [
            guest_files(
                case,
                "panics",
                1,
                192,
                Err((images, "echo before-panic; echo c > /proc/sysrq-trigger; echo after-panic")),
            )?,
            guest_files(
                case,
                "works",
                2,
                192,
                Err((images, "smpcheck burn 2 20 && smpcheck shootdown 2 10 && echo works-done")),
            )?,
            guest_files(case, "suite", 2, 64, Ok("filter=smp/"))?,
        ];
        let mut m = machine(case, &files, 2, 1024)?;
        // The monitor lists the guests once the other two are off (their powering off
        // follows their last output by a moment) and the third has panicked.
        m.input = vec![
            ("guest 'works' powered off".into(), String::new()),
            ("guest 'suite' powered off".into(), String::new()),
            ("Kernel panic".into(), "\x1dm".into()),
        ];
        m.input.extend(monitor("panics"));
        cases.push(GuestsCase {
            name: "guests/two-linux-one-panics",
            machine: m,
            expect: vec![
                vec!["[panics] before-panic", "[panics] [", "Kernel panic - not syncing"],
                vec![
                    "[works] smpcheck burn threads=2",
                    "[works] smpcheck shootdown",
                    "[works] works-done",
                    "guest 'works' powered off",
                ],
                vec!["[suite] # 9 passed, 0 failed", "guest 'suite' powered off"],
            ],
            then: vec![
                "0 panics       running",
                "1 works        off",
                "2 suite        off",
                "guest 'panics' powered off (monitor)",
                "all guests are off; powering off",
            ],
            timeout: Duration::from_secs(420),
        });
    }
    Ok(cases)
}

/// Several guests at once under hypocaust, more vCPUs than harts: each finishes its work
/// with its output tagged, one that spins or panics does not stop the others, the monitor
/// lists them and powers the last one off, and the machine powers off with it.
fn guests_tests() -> Result<Group> {
    println!("== several guests at once under hypocaust (more vCPUs than harts), the monitor");
    let mut group = Group::new("guests at once");
    let images = linux_images(&mut group);
    for case in guests_cases(images.as_ref())? {
        let run = qemu::run_until(&case.machine, case.name, case.timeout, false, |_| false)?;
        let mut verdict = if run.exited_cleanly() {
            Ok(())
        } else {
            Err(format!("QEMU ended with {:?}", run.ending))
        };
        for lines in &case.expect {
            verdict = verdict.and_then(|()| find_in_order(&run.output, lines));
        }
        if verdict.is_ok() {
            let after = case.expect.iter().flatten().filter_map(|l| run.output.find(l)).max();
            let rest = &run.output[after.unwrap_or(0)..];
            verdict = find_in_order(rest, &case.then);
        }
        report_case(&mut group, case.name, 28, verdict, &case.machine, &run, 25);
    }
    Ok(group)
}

/// `native`, `hypocaust-hypocaust` or `hypocaust-opensbi`: in the names of the runs' files.
fn side_name(firmware: Option<Firmware>) -> String {
    firmware.map_or("native".to_string(), |f| format!("hypocaust-{}", f.name()))
}

/// The Linux guest's images, or a failure counted in `group`.
fn linux_images(group: &mut Group) -> Option<linux::LinuxImages> {
    match linux::images() {
        Ok(images) => {
            println!("   kernel {}, modules {}", images.release, images.modules.join(" "));
            Some(images)
        }
        Err(e) => {
            println!("   FAIL  the guest images: {e:#}");
            group.failed += 1;
            None
        }
    }
}

/// Counts and prints one Linux test's result.
fn linux_verdict(group: &mut Group, test: &str, result: Result<(), String>) {
    match result {
        Ok(()) => {
            group.passed += 1;
            println!("   ok    {test}");
        }
        Err(why) => {
            group.failed += 1;
            println!("   FAIL  {test:<24} {why}");
        }
    }
}

/// The checks boot of the Linux guest with `smp` vCPUs (natively: harts): every check in
/// turn, each in a section of its output, counted into `group` (named `smpN/CHECK` when
/// `smp` > 1). Returns what the disk read-back needs; None if QEMU could not be run.
/// Runs every check of the Linux guest in one boot with `smp` vCPUs, natively (no
/// `firmware`) or under hypocaust; on QEMU's default hart, or on an Sv39-only one
/// (`sv39_cpu`, where hypocaust keeps its window).
fn checks_boot(
    group: &mut Group,
    images: &linux::LinuxImages,
    firmware: Option<Firmware>,
    smp: usize,
    sv39_cpu: Option<&'static str>,
) -> Result<Option<Written>> {
    let native = firmware.is_none();
    let side = side_name(firmware);
    let logs = qemu::log_dir();
    let host = if sv39_cpu.is_some() { "-sv39" } else { "" };
    let stem = if smp > 1 {
        format!("linux-{side}{host}-smp{smp}")
    } else {
        format!("linux-{side}{host}")
    };
    let label = |test: &str| match (smp, sv39_cpu) {
        (1, None) => test.to_string(),
        (1, Some(_)) => format!("sv39/{test}"),
        _ => format!("smp{smp}/{test}"),
    };
    if smp > 1 {
        println!("   {smp} vCPUs:");
    }

    let disk = linux::run::fresh_disk(images, &logs.join(format!("{stem}-disk.img")))?;
    let nonce = format!(
        "written by the guest, run {}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let body = format!("hello from the host, {}\n", std::process::id());
    let server = HttpServer::start(body.clone(), 4, Duration::from_secs(900))?;
    // ssh into the guest through the forwarded port while it waits for us.
    let ssh = match (&images.ssh_key, provision::find_tool("ssh")) {
        (Some(key), Some(_)) => {
            let port = crate::util::free_port()?;
            let key = key.clone();
            let limit = Duration::from_secs(if native { 150 } else { 800 });
            Some((port, std::thread::spawn(move || ssh_session(port, &key, limit))))
        }
        _ => None,
    };
    let wait_for_ssh = if ssh.is_some() {
        "i=0\nwhile [ ! -e /tmp/ssh-done ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done\n\
         [ -e /tmp/ssh-done ] && echo 'ssh session seen'"
    } else {
        "echo 'no ssh client on this host'"
    };
    let (smp_script, smp_checks) = smp_checks(smp);
    let script = format!(
        "check() {{ echo \"{CHECK_MARK}$1\"; }}\n\
         check uname\nuname -a\n\
         check cpuinfo-isa\ngrep -m1 '^isa' /proc/cpuinfo; grep -m1 '^mmu' /proc/cpuinfo; \
         grep -c '^processor' /proc/cpuinfo\n\
         check meminfo\ngrep MemTotal /proc/meminfo\n\
         check entropy\ndmesg | grep -m1 -e 'crng init done' -e 'Run /init'\n\
         check rtc\ncat /sys/class/rtc/rtc0/since_epoch; date -u +%s\n\
         check busybox-workload\n\
         i=0; while [ $i -lt 200 ]; do /bin/true || break; i=$((i + 1)); done; echo \"forks $i\"\n\
         seq 1 20000 | sort -rn | head -1\n\
         dd if=/dev/zero bs=64k count=64 2>/dev/null | wc -c\n\
         seq 1 300000 > /tmp/numbers; wc -c < /tmp/numbers\n\
         sort -r /tmp/numbers | head -1\n\
         sort -n /tmp/numbers | tail -1\n\
         {smp_script}\
         check disk-write\n\
         mount -t ext4 /dev/vda /mnt && cat /mnt/{marker} && echo '{nonce}' > /mnt/written.txt && \
         sync && umount /mnt && echo unmounted\n\
         check net-wget\nwget -q -O - http://{gateway}:{port}/hypocaust\n\
         check ssh\n{wait_for_ssh}\n\
         check exit-status\necho bye\nexit 7",
        marker = guest::DISK_MARKER_FILE,
        gateway = guest::GATEWAY,
        port = server.port,
    );
    let mut boot = Boot::new(&format!("{stem}-checks"), native);
    if let Some(f) = firmware {
        boot.firmware = f;
    }
    boot.cpu = sv39_cpu.map(String::from);
    boot.smp = smp;
    boot.cmd = Some(script);
    boot.disk = Some(disk.clone());
    boot.ssh_port = ssh.as_ref().map(|s| s.0);
    let run = linux::run::run_cmd(images, &boot, boot.timeout(), false);
    let served = server.stop();
    let host_side =
        ssh.map(|(_, t)| t.join().unwrap_or_else(|_| Err("the ssh thread panicked".into())));
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            linux_verdict(group, &label("checks"), Err(format!("{e:#}")));
            return Ok(None);
        }
    };
    let output = run.output.clone().unwrap_or_default();
    let release = images.release.clone();
    let ram = u64::from(linux::run::GUEST_MIB) * 1024;
    let mut checks: Vec<(&str, Check)> = vec![
        (
            "uname",
            Box::new(move |out: &str| {
                let want = format!("Linux hypocaust-guest {release} ");
                if out.starts_with(&want) && out.trim_end().ends_with("riscv64 GNU/Linux") {
                    Ok(())
                } else {
                    Err(format!("expected {want:?}... riscv64 GNU/Linux, got {out:?}"))
                }
            }),
        ),
        (
            "cpuinfo-isa",
            Box::new(move |out: &str| {
                let isa = field(out, "isa").ok_or(format!("no isa line in {out:?}"))?;
                check_isa(isa)?;
                // QEMU's rv64 hart has Sv57; under hypocaust (in Sv57) the guest gets Sv48; an
                // Sv39-only hart gives Sv39 to both.
                let mmu = match (native, sv39_cpu) {
                    (_, Some(_)) => "sv39",
                    (true, None) => "sv57",
                    (false, None) => "sv48",
                };
                if field(out, "mmu") != Some(mmu) {
                    return Err(format!("expected mmu {mmu} in {out:?}"));
                }
                lines_in_order(out, &[smp.to_string()])
            }),
        ),
        (
            "meminfo",
            Box::new(move |out: &str| {
                let kb: u64 = field(out, "MemTotal")
                    .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
                    .ok_or(format!("no MemTotal in {out:?}"))?;
                // The kernel image, its page tables and firmware take their share.
                if kb > ram / 2 && kb <= ram {
                    Ok(())
                } else {
                    Err(format!("MemTotal {kb} kB for {ram} kB of RAM"))
                }
            }),
        ),
        (
            // The rng-seed in /chosen makes the random pool ready before init runs (without
            // one, under hypocaust it took 38 s of interrupts' entropy).
            "entropy",
            Box::new(|out: &str| {
                if out.contains("random: crng init done") {
                    Ok(())
                } else {
                    Err(format!("the random pool was not ready before /init: {out:?}"))
                }
            }),
        ),
        (
            // The RTC (read directly, then the system clock Linux set from it) says the
            // host's date, give or take an hour: not 1970.
            "rtc",
            Box::new(|out: &str| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let seconds: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if seconds.len() == 2 && seconds.iter().all(|s| s.abs_diff(now) < 3600) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected the RTC's and the clock's seconds near {now}, got {out:?}"
                    ))
                }
            }),
        ),
        (
            "busybox-workload",
            Box::new(|out: &str| {
                let want = [
                    "forks 200".to_string(),
                    "20000".into(),
                    (64 * 65536).to_string(),
                    seq_bytes(300_000).to_string(),
                    "99999".into(),
                    "300000".into(),
                ];
                lines_in_order(out, &want)
            }),
        ),
    ];
    checks.extend(smp_checks);
    checks.extend::<Vec<(&str, Check)>>(vec![
        (
            "disk-write",
            Box::new(|out: &str| {
                lines_in_order(out, &[guest::DISK_MARKER.into(), "unmounted".into()])
            }),
        ),
        (
            "net-wget",
            Box::new(|out: &str| {
                if out == body {
                    Ok(())
                } else {
                    Err(format!("expected {body:?}, got {out:?} ({served} requests served)"))
                }
            }),
        ),
        (
            "ssh",
            Box::new(move |out: &str| {
                let Some(said) = &host_side else {
                    return Ok(()); // counted as skipped below
                };
                let said = said.clone()?;
                if said.trim() != "ok" {
                    return Err(format!("the ssh session printed {said:?}"));
                }
                lines_in_order(out, &["ssh session seen".into()])
            }),
        ),
        ("exit-status", Box::new(|out: &str| lines_in_order(out, &["bye".into()]))),
    ]);
    let mut all_ok = true;
    for (test, check) in checks {
        if test == "ssh" && output.contains("no ssh client on this host") {
            println!("   skip  {:<24} (no ssh client or ssh-keygen on this host)", label("ssh"));
            group.skipped += 1;
            continue;
        }
        let result = check_result(&run, test, &check);
        all_ok &= result.is_ok();
        linux_verdict(group, &label(test), result);
    }
    let ready = run
        .ready_after
        .map_or(String::new(), |d| format!(", ready after {:.1} s", d.as_secs_f64()));
    println!(
        "   (checks boot: {:.1} s{ready}; log {})",
        run.run.elapsed.as_secs_f64(),
        run.run.log.display()
    );
    if !all_ok {
        println!("         its end:\n{}", indent(&run.run.tail(15)));
    }
    let ok = sections(&output).iter().any(|(n, t)| n == "disk-write" && t.contains("unmounted"));
    Ok(Some(Written { disk, nonce, ok, all_ok }))
}

/// `cargo xtask bench --quick` as a smoke test: every run completes and its result lines
/// parse, every row has positive numbers on every side in both modes, the `-icount`
/// calibration loop counts its two instructions per iteration, hypocaust's exits are read
/// and the results file reads back. Never a timing.
fn bench_smoke() -> Result<Group> {
    println!("== bench (smoke): cargo xtask bench --quick");
    let mut group = Group::new("bench (smoke)");
    let output = root().join("target").join("bench").join("smoke.json");
    let opts = bench::Options {
        quick: true,
        reps: 1,
        repeat_within: None,
        baseline: None,
        filter: None,
        output: output.clone(),
        verbose: false,
        firmware: None,
        native: false,
    };
    let verdict = |group: &mut Group, name: &str, result: Result<(), String>| match result {
        Ok(()) => {
            group.passed += 1;
            println!("   ok    {name}");
        }
        Err(why) => {
            group.failed += 1;
            println!("   FAIL  {name:<24} {why}");
        }
    };
    let report = match bench::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            verdict(&mut group, "bench --quick", Err(format!("{e:#}")));
            return Ok(group);
        }
    };
    report.print();
    println!();
    verdict(
        &mut group,
        "runs",
        if report.failures.is_empty() { Ok(()) } else { Err(report.failures.join("; ")) },
    );
    for row in &report.rows {
        let numbers = if row.complete(&report.sides) {
            Ok(())
        } else {
            Err("a side or mode has no positive number (see the table)".into())
        };
        verdict(&mut group, &row.name, numbers);
    }
    let calibration = report.row("trap/calibrate").ok_or("no calibration row".to_string()).and_then(|r| {
        let per_op: Vec<f64> =
            report.sides.iter().filter_map(|s| r.per_op(*s, bench::Mode::Count)).collect();
        if per_op.len() == report.sides.len() && per_op.iter().all(|v| (v - 2.0).abs() < 0.1) {
            Ok(())
        } else {
            Err(format!("expected 2 instructions per iteration natively and under hypocaust on each firmware, got {per_op:?}"))
        }
    });
    verdict(&mut group, "icount-calibration", calibration);
    let exits = ["syscall", "trap"]
        .iter()
        .flat_map(|job| report.sides.iter().skip(1).map(move |side| (job, side)))
        .map(|(job, side)| match report.workload_exits(job, *side) {
            Some((e, _)) if e.total > 0 && !e.causes.is_empty() => Ok(()),
            _ => Err(format!("no exit counts for {job} on {}", side.name())),
        })
        .collect::<Result<Vec<()>, String>>()
        .map(|_| ());
    verdict(&mut group, "exit-profile", exits);
    let json = report
        .write_json(&output)
        .map_err(|e| format!("{e:#}"))
        .and_then(|()| bench::Baseline::read(&output).map_err(|e| format!("{e:#}")))
        .and_then(|b| {
            if b.rows.len() == report.rows.len() {
                Ok(())
            } else {
                Err(format!("{} rows written, {} read back", report.rows.len(), b.rows.len()))
            }
        });
    verdict(&mut group, "results-json", json);
    Ok(group)
}

/// A group of `cargo xtask test`: its name and what runs it.
type GroupRun = (&'static str, Box<dyn Fn() -> Result<Group>>);

/// The groups of `cargo xtask test`, in order.
fn groups() -> Vec<GroupRun> {
    let suite = |name: &'static str, opts: suite::Options| -> GroupRun {
        (name, Box::new(move || suite_tests(name, &opts)))
    };
    vec![
        ("host unit tests", Box::new(host_tests)),
        ("hypocaust boot, guests", Box::new(boot_tests)),
        ("firmware (compared)", Box::new(firmware_tests)),
        suite("guest suite (compared)", suite::Options::default()),
        suite(
            "suite on OpenSBI (compared)",
            suite::Options { firmware: Firmware::Opensbi, ..Default::default() },
        ),
        suite(
            "virtio legacy (compared)",
            suite::Options { filter: Some("virtio/".into()), legacy: true, ..Default::default() },
        ),
        suite("suite smp, 4 vCPUs (compared)", suite::Options { smp: 4, ..Default::default() }),
        suite(
            "suite smp, 4 vCPUs on 2 harts (compared)",
            suite::Options { smp: 4, harts: 2, ..Default::default() },
        ),
        suite(
            "suite, Sv48 host (compared)",
            suite::Options { cpu: Some(SV48_CPU.into()), ..Default::default() },
        ),
        suite(
            "suite, Sv39 host (compared)",
            suite::Options { cpu: Some(SV39_CPU.into()), ..Default::default() },
        ),
        suite(
            "suite, U54 hart (compared)",
            suite::Options { cpu: Some(U54_CPU.into()), ..Default::default() },
        ),
        suite(
            "suite, sifive_u (compared)",
            suite::Options {
                board: qemu::Board::SifiveU,
                firmware: Firmware::Opensbi,
                ..Default::default()
            },
        ),
        ("timing sweeps, load", Box::new(timing_tests)),
        ("linux (native)", Box::new(|| linux_tests(None))),
        ("linux (hypocaust)", Box::new(|| linux_tests(Some(Firmware::Hypocaust)))),
        ("linux (on OpenSBI)", Box::new(|| linux_tests(Some(Firmware::Opensbi)))),
        ("linux smp (native)", Box::new(|| linux_smp_tests(None))),
        ("linux smp (hypocaust)", Box::new(|| linux_smp_tests(Some(Firmware::Hypocaust)))),
        ("linux (Sv39 host)", Box::new(linux_sv39_tests)),
        ("linux (sifive_u)", Box::new(linux_sifive_u_tests)),
        ("guests at once", Box::new(guests_tests)),
        ("bench (smoke)", Box::new(bench_smoke)),
    ]
}

/// `cargo xtask test`: every group, or (`only`) those whose name contains the text. Returns
/// whether everything passed. The Linux tests run natively (checking the tests themselves)
/// and under hypocaust.
pub fn command(only: Option<&str>) -> Result<bool> {
    let runs: Vec<GroupRun> =
        groups().into_iter().filter(|(name, _)| only.is_none_or(|o| name.contains(o))).collect();
    if runs.is_empty() {
        let names: Vec<&str> = groups().iter().map(|g| g.0).collect();
        anyhow::bail!(
            "no test group's name contains {:?}; the groups: {}",
            only.unwrap_or_default(),
            names.join(", ")
        );
    }
    provision::all()?;
    let start = Instant::now();
    let mut groups = Vec::new();
    for (_, run) in &runs {
        let started = Instant::now();
        let mut group = run()?;
        group.elapsed = started.elapsed();
        groups.push(group);
    }
    println!();
    println!("summary:");
    let (mut passed, mut failed) = (0, 0);
    for g in &groups {
        let skipped =
            if g.skipped > 0 { format!(", {} skipped", g.skipped) } else { String::new() };
        println!(
            "  {:<24} {:>4} passed, {} failed{skipped}  ({:.0} s)",
            g.name,
            g.passed,
            g.failed,
            g.elapsed.as_secs_f64()
        );
        passed += g.passed;
        failed += g.failed;
    }
    println!("  total time {:.0} s", start.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_test_output() {
        let stderr = "   Compiling rv v0.1.0\n\
                      Running unittests src/lib.rs (target/debug/deps/rv-0123abcd)\n\
                      Doc-tests rv\n";
        let stdout = "test a ... ok\n\
                   test b ... FAILED\n\
                   test result: FAILED. 16 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
                   test result: ok. 0 passed; 0 failed; 0 ignored\n";
        let (per, failures) = parse_cargo_test(stdout, stderr);
        assert_eq!(per, vec![("rv".into(), 16, 1), ("rv (doc)".into(), 0, 0)]);
        assert_eq!(failures, vec!["test b ... FAILED".to_string()]);
    }

    #[test]
    fn check_sections() {
        let out = "noise\n==== check a\n1\n2\n==== check b\n==== check c\n3\n";
        let s = sections(out);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(s[0].1, "1\n2\n");
        assert_eq!(s[1].1, "");
        assert_eq!(s[2].1, "3\n");
    }

    #[test]
    fn burn_hash_matches_smpcheck() {
        // What smpcheck printed in the guest: `smpcheck burn threads=4 work=20 ... hash=...`.
        assert_eq!(burn_hash(20_000_000), 0x1410_448c_cc9b_2a56);
        assert_eq!(burn_hash(0), 0x243F_6A88_85A3_08D3);
    }

    #[test]
    fn smpcheck_lines() {
        let out = "smpcheck burn threads=2 work=20 ns=5 hash=00ff cpus=0,1 overlap=yes\nstatus 0\n";
        let words = smpcheck_result(out, "burn").expect("parses");
        assert!(expect_word(&words, "cpus", &cpu_list(2)).is_ok());
        assert!(expect_word(&words, "overlap", "yes").is_ok());
        assert!(expect_word(&words, "threads", "4").is_err());
        assert!(expect_word(&words, "missing", "1").is_err());
        assert!(smpcheck_result(out, "cpus").is_err());
        assert!(smpcheck_result("smpcheck cpus count=1 list=0\nstatus 1\n", "cpus").is_err());
        let failed = "smpcheck: FAIL reader on CPU 1, generation 3\nstatus 1\n";
        assert_eq!(
            smpcheck_result(failed, "shootdown").expect_err("a failure"),
            "smpcheck: FAIL reader on CPU 1, generation 3"
        );
    }

    #[test]
    fn harts_in_cpuinfo() {
        let out = "2\nhart\t\t: 0\nhart\t\t: 1\n0-1\n";
        assert!(check_harts(out, 2).is_ok());
        assert!(check_harts(out, 4).is_err());
        assert!(
            check_harts("2\nhart\t\t: 1\nhart\t\t: 1\n0-1\n", 2).is_err(),
            "the same hart twice"
        );
        assert!(check_harts("1\nhart\t\t: 0\n0\n", 1).is_ok());
        assert!(check_harts("2\nhart\t\t: 0\nhart\t\t: 1\n0\n", 2).is_err(), "one online");
    }

    #[test]
    fn group_names() {
        let names: Vec<&str> = groups().iter().map(|g| g.0).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        let smp: Vec<&&str> = names.iter().filter(|n| n.contains("linux smp")).collect();
        assert_eq!(smp, [&"linux smp (native)", &"linux smp (hypocaust)"]);
        assert_eq!(names.iter().filter(|n| n.contains("smp (native)")).count(), 1);
    }

    #[test]
    fn ordered_substrings() {
        assert!(find_in_order("a b c", &["a", "c"]).is_ok());
        assert!(find_in_order("a b c", &["c", "a"]).is_err());
        assert_eq!(replace_all(b"xsv48ysv48", b"sv48", b"sv39"), b"xsv39ysv39".to_vec());
    }
}
