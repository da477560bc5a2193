//! `cargo xtask test`: every test. Host unit tests first, then the QEMU tests; a summary
//! and a last line `N passed, M failed`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::artifacts::GuestFiles;
use crate::linux::run::{Boot, CmdRun};
use crate::linux::{self, build as guest};
use crate::qemu::{self, Machine};
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
    let start = Instant::now();
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--no-fail-fast"])
        .output()?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (per_binary, failures) = parse_cargo_test(&stdout, &stderr);
    let mut group = Group {
        name: "host unit tests",
        passed: 0,
        failed: 0,
        skipped: 0,
        elapsed: Duration::ZERO,
    };
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
    group.elapsed = start.elapsed();
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
    };
    artifacts::bundle(&[guest], &bundle)?;
    suite::hypocaust_machine(bundle)
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
        })
        .collect();
    artifacts::bundle(&files, &bundle)?;
    let mut m = suite::hypocaust_machine(bundle)?;
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
    let mut garbage = suite::hypocaust_machine(not_a_bundle)?;
    garbage.memory_mib = 256;
    let no_guests = "hypocaust: no guests configured; powering off";

    let mut cases = vec![
        BootCase {
            name: "console/input",
            machine: typing(
                with_guest("console/input", "action=echo", 64, 1, None)?,
                &[("# echo: ready", "hello, uart\r")],
            ),
            expect: vec!["# echo: got 'hello, uart'", "powered off"],
            endless: false,
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
        },
        BootCase {
            name: "guest/reboot",
            machine: with_guest("guest/reboot", "action=reboot", 64, 1, None)?,
            expect: vec!["reboots (ColdReboot)"; 3],
            endless: true,
        },
        BootCase {
            name: "guest/last-hart-stopped",
            machine: with_guest("guest/last-hart-stopped", "action=hart-stop", 64, 1, None)?,
            expect: vec!["stopped its last hart", "all guests are off; powering off"],
            endless: false,
        },
        BootCase {
            name: "guest/too-many-vcpus",
            machine: with_guest("guest/too-many-vcpus", "", 64, 4, None)?,
            expect: vec!["cannot start: it asks for 4 vCPUs", no_guests],
            endless: false,
        },
        BootCase {
            name: "guest/too-much-memory",
            machine: with_guest("guest/too-much-memory", "", 2048, 1, None)?,
            expect: vec!["cannot start: not enough free host RAM for 2048 MiB", no_guests],
            endless: false,
        },
        BootCase {
            name: "guest/kernel-too-big",
            machine: with_guest("guest/kernel-too-big", "", 16, 1, Some(big_kernel))?,
            expect: vec!["cannot start: the kernel needs", "outside the guest's RAM"],
            endless: false,
        },
        BootCase {
            name: "guest/not-a-bundle",
            machine: garbage,
            expect: vec![
                "the initrd is not a usable guest bundle: not a hypocaust guest bundle",
                no_guests,
            ],
            endless: false,
        },
    ];
    cases.extend(vec![
        BootCase {
            name: "boot/smp1",
            machine: with(&|m| m.smp = 1),
            expect: summary("harts     1 online of 1"),
            endless: false,
        },
        BootCase {
            name: "boot/smp4",
            machine: with(&|m| m.smp = 4),
            expect: summary("harts     4 online of 4"),
            endless: false,
        },
        BootCase {
            name: "refuse/no-mmu",
            machine: with(&|m| m.cpu = format!("{},mmu=false", qemu::DEFAULT_CPU)),
            expect: vec![refusal, "has no Sv48 paging"],
            endless: false,
        },
        BootCase {
            name: "refuse/sv39-only",
            machine: with(&|m| {
                m.smp = 2;
                m.dtb = Some(sv39_dtb.clone());
            }),
            expect: vec![refusal, "riscv,sv39 only"],
            endless: false,
        },
        BootCase {
            name: "refuse/too-little-ram",
            machine: with(&|m| m.memory_mib = 64),
            expect: vec![refusal, "MiB of RAM is free; hypocaust needs at least"],
            endless: false,
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
    let start = Instant::now();
    let mut group = Group {
        name: "hypocaust boot, guests",
        passed: 0,
        failed: 0,
        skipped: 0,
        elapsed: Duration::ZERO,
    };
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
        };

        match verdict {
            Ok(()) => {
                group.passed += 1;
                println!("   ok    {:<24} ({:.1} s)", case.name, run.elapsed.as_secs_f64());
            }
            Err(why) => {
                group.failed += 1;
                println!("   FAIL  {:<24} {why}", case.name);
                println!("         to reproduce: {}", case.machine.command_line());
                println!(
                    "         log: {}; its end:\n{}",
                    run.log.display(),
                    indent(&run.tail(15))
                );
            }
        }
    }
    group.elapsed = start.elapsed();
    Ok(group)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("           | {l}")).collect::<Vec<_>>().join("\n")
}

/// The guest test suite natively and under hypocaust, compared, as the group `name`.
fn suite_tests(name: &'static str, opts: &suite::Options) -> Result<Group> {
    let transport = if opts.legacy { "legacy" } else { "modern" };
    let only = opts.filter.as_ref().map(|f| format!(" ({f} only)")).unwrap_or_default();
    println!("== guest test suite{only}, natively and under hypocaust, {transport} virtio-mmio");
    let start = Instant::now();
    let mut group = Group { name, passed: 0, failed: 0, skipped: 0, elapsed: Duration::ZERO };
    compare_into(&mut group, opts, false)?;
    group.elapsed = start.elapsed();
    Ok(group)
}

/// Runs the suite natively and under hypocaust with `opts` and counts the verdicts into
/// `group`; prints every row if `verbose`, else only those that are not identical.
fn compare_into(group: &mut Group, opts: &suite::Options, verbose: bool) -> Result<()> {
    let c = suite::Comparison::run(opts)?;
    c.print(verbose);
    let failed_before = group.failed;
    for (_, _, _, verdict) in &c.rows {
        match verdict {
            suite::Verdict::Identical => group.passed += 1,
            suite::Verdict::NotOffered(_) => group.skipped += 1,
            suite::Verdict::OnlyHypocaust(_) | suite::Verdict::Stricter(_) => group.passed += 1,
            suite::Verdict::Differs(_) => group.failed += 1,
        }
    }
    if !c.agrees() && group.failed == failed_before {
        // A run that did not complete: count it, its log was printed above.
        group.failed += 1;
    }
    Ok(())
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
    let start = Instant::now();
    let mut group = Group {
        name: "timing sweeps, load",
        passed: 0,
        failed: 0,
        skipped: 0,
        elapsed: Duration::ZERO,
    };
    for shift in SWEEP_SHIFTS {
        let opts = suite::Options {
            filter: Some("irq/".into()),
            icount: Some(shift),
            sweep: Some(32 << shift),
            ..suite::Options::default()
        };
        println!("   -icount shift={shift}, {} offsets:", 32 << shift);
        compare_into(&mut group, &opts, false)?;
    }
    let _hogs = crate::util::CpuHogs::start(LOADED_HOGS);
    for run in 1..=LOADED_RUNS {
        println!("   with {LOADED_HOGS} CPU hogs, run {run} of {LOADED_RUNS}:");
        let opts = suite::Options { filter: Some("irq/".into()), ..suite::Options::default() };
        compare_into(&mut group, &opts, false)?;
    }
    group.elapsed = start.elapsed();
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

/// The Linux guest's tests, each a command run (`cargo xtask linux --cmd`), natively or
/// under hypocaust.
fn linux_tests(native: bool) -> Result<Group> {
    let side = if native { "native" } else { "hypocaust" };
    let name: &'static str = if native { "linux (native)" } else { "linux (hypocaust)" };
    println!("== Linux guest, {}", if native { "natively on QEMU" } else { "under hypocaust" });
    let start = Instant::now();
    let mut group = Group { name, passed: 0, failed: 0, skipped: 0, elapsed: Duration::ZERO };
    let images = match linux::images() {
        Ok(images) => images,
        Err(e) => {
            println!("   FAIL  the guest images: {e:#}");
            group.failed += 1;
            group.elapsed = start.elapsed();
            return Ok(group);
        }
    };
    println!("   kernel {}, modules {}", images.release, images.modules.join(" "));
    let logs = qemu::log_dir();
    let report =
        |group: &mut Group, test: &str, r: &Result<CmdRun>, verdict: Result<(), String>| {
            let full = format!("linux-{side}/{test}");
            match (r, verdict) {
                (Ok(run), Ok(())) => {
                    group.passed += 1;
                    // The log stays; the images of a run that passed are of no further use.
                    for suffix in ["initramfs.cpio", "disk.img", "bundle.img"] {
                        let stem = format!("linux-{side}-{test}-{suffix}");
                        let _ = std::fs::remove_file(logs.join(stem));
                    }
                    let ready = run.ready_after.map_or(String::new(), |d| {
                        format!(", ready after {:.1} s", d.as_secs_f64())
                    });
                    println!("   ok    {test:<24} ({:.1} s{ready})", run.run.elapsed.as_secs_f64());
                }
                (Ok(run), Err(why)) => {
                    group.failed += 1;
                    println!("   FAIL  {test:<24} {why}");
                    println!(
                        "         log: {}; its end:\n{}",
                        run.run.log.display(),
                        indent(&run.run.tail(15))
                    );
                }
                (Err(e), _) => {
                    group.failed += 1;
                    println!("   FAIL  {test:<24} {full}: {e:#}");
                }
            }
        };
    // Runs `cmd` and judges it: the status must be `status`, QEMU must exit cleanly (the
    // guest powered off), and `check` must accept the output.
    let run = |test: &str,
               cmd: &str,
               disk: Option<std::path::PathBuf>,
               ssh: Option<u16>|
     -> Result<CmdRun> {
        let mut boot = Boot::new(&format!("linux-{side}-{test}"), native);
        boot.cmd = Some(cmd.to_string());
        boot.disk = disk;
        boot.ssh_port = ssh;
        linux::run::run_cmd(&images, &boot, boot.timeout(), false)
    };
    let judge = |r: &Result<CmdRun>, status: i32, check: Check| -> Result<(), String> {
        let Ok(run) = r else { return Err("could not run".into()) };
        if let Some(problem) = run.problem() {
            return Err(problem);
        }
        if run.status != Some(status) {
            return Err(format!(
                "exit status {:?}, expected {status}; output {:?}",
                run.status, run.output
            ));
        }
        check(run.output.as_deref().unwrap_or(""))
    };

    let release = images.release.clone();
    let simple: Vec<(&str, String, Check)> = vec![
        (
            "uname",
            "uname -a".into(),
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
            "grep -m1 '^isa' /proc/cpuinfo; grep -c '^processor' /proc/cpuinfo".into(),
            Box::new(|out: &str| {
                let isa = field(out, "isa").ok_or(format!("no isa line in {out:?}"))?;
                check_isa(isa)?;
                lines_in_order(out, &["1".into()])
            }),
        ),
        (
            "meminfo",
            "grep MemTotal /proc/meminfo".into(),
            Box::new(|out: &str| {
                let kb: u64 = field(out, "MemTotal")
                    .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
                    .ok_or(format!("no MemTotal in {out:?}"))?;
                let ram = u64::from(linux::run::GUEST_MIB) * 1024;
                // The kernel image, its page tables and firmware take their share.
                if kb > ram / 2 && kb <= ram {
                    Ok(())
                } else {
                    Err(format!("MemTotal {kb} kB for {ram} kB of RAM"))
                }
            }),
        ),
        (
            "busybox-workload",
            "i=0; while [ $i -lt 200 ]; do /bin/true || exit 1; i=$((i + 1)); done; echo \"forks $i\"\n\
             seq 1 20000 | sort -rn | head -1\n\
             dd if=/dev/zero bs=64k count=64 2>/dev/null | wc -c\n\
             seq 1 300000 > /tmp/numbers; wc -c < /tmp/numbers\n\
             sort -r /tmp/numbers | head -1\n\
             sort -n /tmp/numbers | tail -1"
                .into(),
            Box::new(|out: &str| {
                let want = ["forks 200".to_string(), "20000".into(), (64 * 65536).to_string(), seq_bytes(300_000).to_string(), "99999".into(), "300000".into()];
                lines_in_order(out, &want)
            }),
        ),
        (
            "exit-status",
            "echo bye; exit 7".into(),
            Box::new(|out: &str| lines_in_order(out, &["bye".into()])),
        ),
    ];
    for (test, cmd, check) in simple {
        let r = run(test, &cmd, None, None);
        let status = if test == "exit-status" { 7 } else { 0 };
        let verdict = judge(&r, status, check);
        report(&mut group, test, &r, verdict);
    }

    // The disk: write in one boot, read back in the next (same disk copy).
    let disk = linux::run::fresh_disk(&images, &logs.join(format!("linux-{side}-disk.img")))?;
    let nonce = format!(
        "written by the guest, run {}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let r = run(
        "disk-write",
        &format!(
            "mount -t ext4 /dev/vda /mnt || exit 1\ncat /mnt/{}\necho '{nonce}' > /mnt/written.txt\n\
             sync\numount /mnt && echo unmounted",
            guest::DISK_MARKER_FILE
        ),
        Some(disk.clone()),
        None,
    );
    let verdict = judge(
        &r,
        0,
        Box::new(|out: &str| lines_in_order(out, &[guest::DISK_MARKER.into(), "unmounted".into()])),
    );
    let wrote = verdict.is_ok();
    report(&mut group, "disk-write", &r, verdict);
    if wrote {
        let r = run(
            "disk-read-back",
            "mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/written.txt",
            Some(disk.clone()),
            None,
        );
        let verdict =
            judge(&r, 0, Box::new(|out: &str| lines_in_order(out, std::slice::from_ref(&nonce))));
        if verdict.is_ok() {
            let _ = std::fs::remove_file(&disk);
        }
        report(&mut group, "disk-read-back", &r, verdict);
    } else {
        println!("   skip  disk-read-back           (disk-write failed)");
        group.skipped += 1;
    }

    // The network: wget from a server of ours through QEMU's user network (10.0.2.2 is
    // the host).
    let body = format!("hello from the host, {}\n", std::process::id());
    let server = HttpServer::start(body.clone(), 4, Duration::from_secs(300))?;
    let r = run(
        "net-wget",
        &format!("wget -q -O - http://{}:{}/hypocaust", guest::GATEWAY, server.port),
        None,
        None,
    );
    let served = server.stop();
    let verdict = judge(
        &r,
        0,
        Box::new(|out: &str| {
            if out == body {
                Ok(())
            } else {
                Err(format!("expected {body:?}, got {out:?} ({served} requests served)"))
            }
        }),
    );
    report(&mut group, "net-wget", &r, verdict);

    // ssh into the guest through the forwarded port while it waits for us.
    match (&images.ssh_key, provision::find_tool("ssh")) {
        (Some(key), Some(_)) => {
            let port = crate::util::free_port()?;
            let key = key.clone();
            let session = std::thread::spawn(move || {
                ssh_session(port, &key, Duration::from_secs(if native { 150 } else { 800 }))
            });
            let r = run(
                "ssh",
                "i=0\nwhile [ ! -e /tmp/ssh-done ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done\n\
                 [ -e /tmp/ssh-done ] && echo 'ssh session seen'",
                None,
                Some(port),
            );
            let host_side =
                session.join().unwrap_or_else(|_| Err("the ssh thread panicked".into()));
            let verdict = judge(
                &r,
                0,
                Box::new(|out: &str| {
                    let said = host_side.clone()?;
                    if said.trim() != "ok" {
                        return Err(format!("the ssh session printed {said:?}"));
                    }
                    lines_in_order(out, &["ssh session seen".into()])
                }),
            );
            report(&mut group, "ssh", &r, verdict);
        }
        _ => {
            println!(
                "   skip  ssh                      (no ssh client or ssh-keygen on this host)"
            );
            group.skipped += 1;
        }
    }
    group.elapsed = start.elapsed();
    Ok(group)
}

/// `cargo xtask bench --quick` as a smoke test: every run completes and its result lines
/// parse, every row has positive numbers on both sides in both modes, the `-icount`
/// calibration loop counts its two instructions per iteration, hypocaust's exits are read
/// and the results file reads back. Never a timing.
fn bench_smoke() -> Result<Group> {
    println!("== bench (smoke): cargo xtask bench --quick");
    let start = Instant::now();
    let mut group =
        Group { name: "bench (smoke)", passed: 0, failed: 0, skipped: 0, elapsed: Duration::ZERO };
    let output = root().join("target").join("bench").join("smoke.json");
    let opts = bench::Options {
        quick: true,
        reps: 1,
        repeat_within: None,
        baseline: None,
        filter: None,
        output: output.clone(),
        verbose: false,
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
            group.elapsed = start.elapsed();
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
        let numbers = if row.complete() {
            Ok(())
        } else {
            Err("a side or mode has no positive number (see the table)".into())
        };
        verdict(&mut group, &row.name, numbers);
    }
    let calibration = report.row("trap/calibrate").ok_or("no calibration row".to_string()).and_then(|r| {
        let per_op: Vec<f64> =
            bench::Side::BOTH.iter().filter_map(|s| r.per_op(*s, bench::Mode::Count)).collect();
        if per_op.len() == 2 && per_op.iter().all(|v| (v - 2.0).abs() < 0.1) {
            Ok(())
        } else {
            Err(format!("expected 2 instructions per iteration natively and under hypocaust, got {per_op:?}"))
        }
    });
    verdict(&mut group, "icount-calibration", calibration);
    let exits = ["syscall", "trap"]
        .iter()
        .map(|job| match report.workload_exits(job) {
            Some((e, _)) if e.total > 0 && !e.causes.is_empty() => Ok(()),
            _ => Err(format!("no exit counts for {job}")),
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
    group.elapsed = start.elapsed();
    Ok(group)
}

/// `cargo xtask test`. Returns whether everything passed. The Linux tests run natively
/// (checking the tests themselves) and under hypocaust.
pub fn command() -> Result<bool> {
    provision::all()?;
    let start = Instant::now();
    let modern = suite::Options::default();
    let legacy =
        suite::Options { filter: Some("virtio/".into()), legacy: true, ..Default::default() };
    let groups = vec![
        host_tests()?,
        boot_tests()?,
        suite_tests("guest suite (compared)", &modern)?,
        suite_tests("virtio legacy (compared)", &legacy)?,
        timing_tests()?,
        linux_tests(true)?,
        linux_tests(false)?,
        bench_smoke()?,
    ];
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
    fn ordered_substrings() {
        assert!(find_in_order("a b c", &["a", "c"]).is_ok());
        assert!(find_in_order("a b c", &["c", "a"]).is_err());
        assert_eq!(replace_all(b"xsv48ysv48", b"sv48", b"sv39"), b"xsv39ysv39".to_vec());
    }
}
