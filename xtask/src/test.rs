//! `cargo xtask test`: every test. Host unit tests first, then the QEMU tests; a summary
//! and a last line `N passed, M failed`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::artifacts::GuestFiles;
use crate::qemu::{self, Machine};
use crate::util::root;
use crate::{artifacts, provision, suite};

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
    // A device tree that declares Sv39-only harts (the hart itself takes Sv48 on QEMU 7.2).
    let sv39_dtb = qemu::log_dir().join("virt-sv39.dtb");
    std::fs::create_dir_all(qemu::log_dir())?;
    let base = with(&|m| m.smp = 2);
    base.dump_dtb(&sv39_dtb)?;
    let dtb = std::fs::read(&sv39_dtb)?;
    let patched = replace_all(&dtb, b"riscv,sv48", b"riscv,sv39");
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
    let c = suite::Comparison::run(opts)?;
    c.print(false);
    let mut group = Group { name, passed: 0, failed: 0, skipped: 0, elapsed: Duration::ZERO };
    for (_, _, _, verdict) in &c.rows {
        match verdict {
            suite::Verdict::Identical => group.passed += 1,
            suite::Verdict::NotOffered(_) => group.skipped += 1,
            suite::Verdict::OnlyHypocaust(_) | suite::Verdict::Stricter(_) => group.passed += 1,
            suite::Verdict::Differs(_) => group.failed += 1,
        }
    }
    if !c.agrees() && group.failed == 0 {
        // A run that did not complete: count it, its log was printed above.
        group.failed += 1;
    }
    group.elapsed = start.elapsed();
    Ok(group)
}

/// `cargo xtask test`. Returns whether everything passed.
pub fn command() -> Result<bool> {
    provision::all()?;
    let start = Instant::now();
    let modern = suite::Options::default();
    let legacy = suite::Options { filter: Some("virtio/".into()), legacy: true };
    let groups = [
        host_tests()?,
        boot_tests()?,
        suite_tests("guest suite (compared)", &modern)?,
        suite_tests("virtio legacy (compared)", &legacy)?,
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
