//! `cargo xtask suite`: the guest test kernel natively on QEMU (the oracle) and under
//! hypocaust, side by side. The two runs must agree test by test, observations included,
//! except for the deliberate differences listed in [`UNDER_HYPOCAUST`]. The same machinery
//! compares the oracle with the test kernel natively on hypocaust's own firmware
//! ([`ON_HYPOCAUST_FIRMWARE`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::artifacts::{self, GuestFiles};
use crate::provision;
use crate::qemu::{self, Firmware, Machine, Run};
use crate::tap::{Report, Status, TestResult};

/// Timeout of one suite run; the suite takes a few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// RAM of the test kernel: the whole machine natively, the guest's under hypocaust.
pub const GUEST_MIB: u32 = 256;

/// The deliberate differences between two runs of the suite, in one place each: the
/// only tests allowed to differ.
pub struct Differences {
    /// Tests that find a capability missing in the second run (and report `# SKIP not
    /// offered: ...`) while the first has it.
    pub not_offered: &'static [(&'static str, &'static str)],
    /// Tests that skip in the first run and pass in the second: what only the second
    /// offers, or what the first's firmware cannot run.
    pub only_second: &'static [(&'static str, &'static str)],
    /// Tests where the second is deliberately stricter: both must pass, and the second
    /// must show the listed observations (the request refused).
    pub stricter: &'static [(&'static str, &'static str, Observations)],
    /// Tests whose observations the oracle itself makes differently on the two machines
    /// (when they differ in harts): the status must match, the observations may not.
    pub varies: &'static [(&'static str, &'static str)],
}

/// `# obs` key/value pairs a run must show.
type Observations = &'static [(&'static str, &'static str)];

const SV48_WHY: &str = "Sv48 guests need hypocaust in Sv57; it runs in Sv48";

const DBCN_BAD_ADDRESS: (&str, &str) = (
    "sbi/dbcn-write-bad-address",
    "OpenSBI up to 1.5 hangs on a DBCN buffer at an address with nothing behind it; \
     the SBI spec says INVALID_PARAM",
);

/// Natively (QEMU on OpenSBI) against under hypocaust.
pub const UNDER_HYPOCAUST: Differences = Differences {
    not_offered: &[
        ("paging/sv48-gigapage-alias", SV48_WHY),
        ("paging/sv48-4k-page", SV48_WHY),
        ("paging/sv48-non-canonical", SV48_WHY),
        ("paging/sv57-gigapage-alias", "Sv57 guests would need a wider host mode than exists"),
    ],
    only_second: &[DBCN_BAD_ADDRESS],
    varies: &[],
    stricter: &[
        (
            "virtio/blk-buffer-outside-ram",
            "QEMU bounces a buffer of up to a page at a non-RAM address (writes zeros to the disk); \
             hypocaust refuses any buffer outside the guest's RAM, as QEMU does for larger ones",
            &[("used-idx", "0x0"), ("sectors-zeroed", "0x0")],
        ),
        (
            "virtio/blk-read-into-outside-ram",
            "QEMU bounces a buffer of up to a page at a non-RAM address (the data goes nowhere); \
             hypocaust refuses any buffer outside the guest's RAM, as QEMU does for larger ones",
            &[("used-idx", "0x0"), ("sectors-zeroed", "0x0")],
        ),
    ],
};

/// Natively against under hypocaust on QEMU's `sifive_u`.
pub const UNDER_HYPOCAUST_SIFIVE_U: Differences = Differences {
    only_second: &[
        DBCN_BAD_ADDRESS,
        (
            "machine/rng-seed",
            "QEMU's sifive_u gives no /chosen/rng-seed; hypocaust gives every guest a fresh one",
        ),
    ],
    ..UNDER_HYPOCAUST
};

/// Natively on OpenSBI against natively on hypocaust's firmware: the same hart, two SBI
/// implementations.
pub const ON_HYPOCAUST_FIRMWARE: Differences =
    Differences { not_offered: &[], only_second: &[DBCN_BAD_ADDRESS], stricter: &[], varies: &[] };

/// Natively against under hypocaust on a machine with fewer harts than the guest has vCPUs
/// (time-sliced): as [`UNDER_HYPOCAUST`], and QEMU itself behaves differently on one hart.
pub const UNDER_HYPOCAUST_SHARED: Differences = Differences {
    varies: &[(
        "trap/misaligned-amo",
        "QEMU raises a misaligned AMO as a load misaligned fault (4) on one hart and a \
         store/AMO one (6) on several (parallel TCG): both are the spec's, hypocaust forwards \
         what its hart raised",
    )],
    ..UNDER_HYPOCAUST
};

/// Where one run of the suite runs: the test kernel directly on QEMU, or as a guest of
/// hypocaust; on either firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Native(Firmware),
    Hypocaust(Firmware),
}

impl Place {
    /// The oracle: directly on QEMU with its OpenSBI.
    pub const ORACLE: Place = Place::Native(Firmware::Opensbi);

    /// Its name in file names and messages: `native`, `native-hypocaust-fw`,
    /// `hypocaust-opensbi`, ...
    pub fn name(self) -> String {
        match self {
            Place::Native(Firmware::Opensbi) => "native".into(),
            Place::Native(f) => format!("native-{}", f.name()),
            Place::Hypocaust(f) => format!("hypocaust-{}", f.name()),
        }
    }

    /// A column title.
    fn title(self) -> String {
        match self {
            Place::Native(Firmware::Opensbi) => "native".into(),
            Place::Native(f) => f.name().into(),
            Place::Hypocaust(_) => "hypocaust".into(),
        }
    }
}

/// Options of a suite run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// Legacy virtio-mmio transports (Version 1, QEMU 7.2's default) instead of modern
    /// ones (Version 2).
    pub legacy: bool,
    /// Run under `-icount shift=N` (time advances 2^N ns per instruction, a function of
    /// the instructions executed alone).
    pub icount: Option<u32>,
    /// `sweep=N` for the test kernel: the timing sweeps try N deadline offsets.
    pub sweep: Option<u64>,
    /// The firmware hypocaust runs on (the native run is always on OpenSBI).
    pub firmware: Firmware,
    /// Harts of the machine (0: 1); under hypocaust, the guest's vCPUs.
    pub smp: usize,
    /// Harts of the machine under hypocaust (0: as many as `smp`): fewer time-slices the
    /// guest's vCPUs.
    pub harts: usize,
    /// QEMU's `-cpu` for both runs (None: [`qemu::DEFAULT_CPU`]), e.g. an Sv48-only hart
    /// (`rv64,h=false,sv57=off`), where hypocaust runs in Sv48 and offers Sv39.
    pub cpu: Option<String>,
    /// The QEMU board of both runs.
    pub board: qemu::Board,
}

/// All eight virtio-mmio slots of `virt` go to the suite's guest, so it finds its devices
/// where the native run does.
pub const ALL_VIRTIO_SLOTS: u64 = 0xff;

/// The name of a run (`suite-native`, `suite-hypocaust-hypocaust-fw-legacy`, ...): its log
/// is `target/logs/<name>.log`, its disk `target/logs/<name>-disk.img`.
fn run_name(place: Place, opts: &Options) -> String {
    let legacy = if opts.legacy { "-legacy" } else { "" };
    let icount = opts.icount.map(|s| format!("-icount{s}")).unwrap_or_default();
    let smp = if opts.smp > 1 { format!("-smp{}", opts.smp) } else { String::new() };
    let harts = match place {
        Place::Hypocaust(_) if opts.harts > 0 && opts.harts != opts.smp.max(1) => {
            format!("-harts{}", opts.harts)
        }
        _ => String::new(),
    };
    let cpu = opts
        .cpu
        .as_ref()
        .map(|c| format!("-cpu-{}", c.replace([',', '='], "-")))
        .unwrap_or_default();
    let board = match opts.board {
        qemu::Board::Virt => String::new(),
        b => format!("-{}", b.qemu_name()),
    };
    format!("suite-{}{board}{legacy}{icount}{smp}{harts}{cpu}", place.name())
}

/// QEMU arguments for a deterministic clock: `shift` as given, no alignment to the host's
/// clock, and idle time skipped to the next timer.
pub fn icount_args(shift: u32) -> [String; 2] {
    ["-icount".into(), format!("shift={shift},align=off,sleep=off")]
}

/// Gives `machine` the suite's devices, on a fresh disk of its own for run `name`
/// (`target/logs/<name>-disk.img`).
pub fn add_devices(machine: &mut Machine, name: &str, legacy: bool) -> Result<()> {
    let disk = qemu::log_dir().join(format!("{name}-disk.img"));
    artifacts::suite_disk(&disk)?;
    machine.extra.extend(qemu::virtio_devices(&disk, legacy));
    Ok(())
}

fn bootargs(opts: &Options) -> String {
    let filter = opts.filter.as_ref().map(|f| format!("filter={f}"));
    let sweep = opts.sweep.map(|n| format!("sweep={n}"));
    filter.into_iter().chain(sweep).collect::<Vec<_>>().join(" ")
}

/// Gives `machine` what every suite run has: its devices on a fresh disk of run `name`,
/// and the deterministic clock if asked for.
fn suite_machine(machine: &mut Machine, name: &str, opts: &Options) -> Result<()> {
    *machine = machine.clone().on(opts.board);
    // Only `virt` has virtio-mmio slots for the suite's disk and network.
    if opts.board == qemu::Board::Virt {
        add_devices(machine, name, opts.legacy)?;
    }
    if let Some(cpu) = &opts.cpu {
        machine.cpu.clone_from(cpu);
    }
    if let Some(shift) = opts.icount {
        machine.extra.extend(icount_args(shift));
    }
    Ok(())
}

/// Runs the test kernel at `place`.
pub fn run(place: Place, opts: &Options) -> Result<(Report, Run)> {
    let kernel = artifacts::testkernel()?;
    let name = run_name(place, opts);
    let mut machine = match place {
        Place::Native(firmware) => {
            let mut m = Machine::new(&kernel);
            m.bios = firmware.bios()?;
            m.memory_mib = GUEST_MIB as u64;
            let args = bootargs(opts);
            m.append = (!args.is_empty()).then_some(args);
            m
        }
        Place::Hypocaust(firmware) => {
            opts.board.check_firmware(firmware)?;
            let bundle = qemu::log_dir().join(format!("{name}-bundle.img"));
            artifacts::bundle(
                &[GuestFiles {
                    name: "suite".into(),
                    kernel: kernel.clone(),
                    initrd: None,
                    bootargs: bootargs(opts),
                    memory_mib: GUEST_MIB,
                    vcpus: opts.smp.max(1) as u32,
                    virtio_slots: ALL_VIRTIO_SLOTS,
                    ..Default::default()
                }],
                &bundle,
            )?;
            let mut m = hypocaust_machine(bundle, firmware)?;
            m.symbols.push(kernel);
            m
        }
    };
    machine.smp = match place {
        Place::Hypocaust(_) if opts.harts > 0 => opts.harts,
        _ => opts.smp.max(1),
    };
    suite_machine(&mut machine, &name, opts)?;
    let run = qemu::run_captured(&machine, &name, TIMEOUT, false)?;
    Ok((Report::parse(&run.output), run))
}

/// A QEMU machine that boots hypocaust on `firmware` with `bundle` as its guests.
pub fn hypocaust_machine(bundle: PathBuf, firmware: Firmware) -> Result<Machine> {
    let mut machine = Machine::new(artifacts::hypervisor()?);
    machine.bios = firmware.bios()?;
    machine.memory_mib = 1024;
    machine.initrd = Some(bundle);
    Ok(machine)
}

/// How one test compares across the two runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same status and observations.
    Identical,
    /// Listed as not offered, and skipped as "not offered" in the second run.
    NotOffered(&'static str),
    /// Listed as offered only by the second: skipped in the first, passed in the second.
    OnlySecond(&'static str),
    /// Listed as stricter in the second: passed in both, the second refused.
    Stricter(&'static str),
    /// Listed as varying with the machine: same status, observations may differ.
    Varies(&'static str),
    /// Anything else; the reason says what differs.
    Differs(String),
}

fn status_word(s: Option<&Status>) -> String {
    match s {
        None => "missing".into(),
        Some(Status::Pass) => "ok".into(),
        Some(Status::Fail) => "FAIL".into(),
        Some(Status::Skip(r)) if r.starts_with("not offered") => "not offered".into(),
        Some(Status::Skip(_)) => "skip".into(),
    }
}

/// Compares one test's two results (`first` is the oracle), allowing `allowed`.
pub fn compare(
    name: &str,
    first: Option<&TestResult>,
    second: Option<&TestResult>,
    allowed: &Differences,
) -> Verdict {
    let (Some(n), Some(h)) = (first, second) else {
        return Verdict::Differs("reported by only one run".into());
    };
    if n.status == Status::Fail {
        return Verdict::Differs("fails in the oracle run: the test or the oracle is wrong".into());
    }
    if let Some((_, why)) = allowed.not_offered.iter().find(|(t, _)| *t == name)
        && matches!(&h.status, Status::Skip(r) if r.starts_with("not offered"))
    {
        return Verdict::NotOffered(why);
    }
    if let Some((_, why)) = allowed.only_second.iter().find(|(t, _)| *t == name)
        && matches!(n.status, Status::Skip(_))
        && h.status == Status::Pass
    {
        return Verdict::OnlySecond(why);
    }
    if let Some((_, why, wanted)) = allowed.stricter.iter().find(|(t, ..)| *t == name)
        && n.status == Status::Pass
        && h.status == Status::Pass
        && wanted.iter().all(|(k, v)| h.observations.iter().any(|(hk, hv)| hk == k && hv == v))
    {
        return Verdict::Stricter(why);
    }
    if let Some((_, why)) = allowed.varies.iter().find(|(t, _)| *t == name)
        && n.status == h.status
        && n.status != Status::Fail
    {
        return Verdict::Varies(why);
    }

    if n.status != h.status {
        return Verdict::Differs(format!(
            "{} in the first run, {} in the second",
            status_word(Some(&n.status)),
            status_word(Some(&h.status))
        ));
    }
    if n.observations != h.observations {
        let show = |o: &[(String, String)]| {
            o.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        };
        return Verdict::Differs(format!(
            "observed {} in the first run, {} in the second",
            show(&n.observations),
            show(&h.observations)
        ));
    }
    Verdict::Identical
}

/// Both runs, compared: every test name with its two results and the verdict.
pub struct Comparison {
    pub rows: Vec<(String, Option<TestResult>, Option<TestResult>, Verdict)>,
    pub places: [Place; 2],
    pub native: (Report, Run),
    pub hypocaust: (Report, Run),
}

impl Comparison {
    /// The oracle against the test kernel under hypocaust (on `opts.firmware`).
    pub fn run(opts: &Options) -> Result<Self> {
        let shared = opts.harts > 0 && opts.harts < opts.smp.max(1);
        let allowed = if opts.board == qemu::Board::SifiveU {
            &UNDER_HYPOCAUST_SIFIVE_U
        } else if shared {
            &UNDER_HYPOCAUST_SHARED
        } else {
            &UNDER_HYPOCAUST
        };
        Self::between([Place::ORACLE, Place::Hypocaust(opts.firmware)], opts, allowed)
    }

    /// The oracle against the test kernel natively on hypocaust's firmware.
    pub fn firmware(opts: &Options) -> Result<Self> {
        Self::between(
            [Place::ORACLE, Place::Native(Firmware::Hypocaust)],
            opts,
            &ON_HYPOCAUST_FIRMWARE,
        )
    }

    /// Runs at both places and compares them (`native` and `hypocaust` name the first
    /// and the second run).
    pub fn between(places: [Place; 2], opts: &Options, allowed: &Differences) -> Result<Self> {
        let native = run(places[0], opts)?;
        let hypocaust = run(places[1], opts)?;
        let mut names: Vec<String> = native.0.tests.iter().map(|t| t.name.clone()).collect();
        for t in &hypocaust.0.tests {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
        let rows = names
            .into_iter()
            .map(|name| {
                let n = native.0.tests.iter().find(|t| t.name == name).cloned();
                let h = hypocaust.0.tests.iter().find(|t| t.name == name).cloned();
                let verdict = compare(&name, n.as_ref(), h.as_ref(), allowed);
                (name, n, h, verdict)
            })
            .collect();
        Ok(Self { rows, places, native, hypocaust })
    }

    /// Whether both runs completed and every test matched (or is not offered).
    pub fn agrees(&self) -> bool {
        let complete = |r: &Report| r.bailed_out.is_none() && r.planned == Some(r.tests.len());
        complete(&self.native.0)
            && complete(&self.hypocaust.0)
            && self.rows.iter().all(|r| !matches!(r.3, Verdict::Differs(_)))
    }

    /// Prints the table, and the end of a run's log if it did not complete.
    pub fn print(&self, verbose: bool) {
        let [a, b] = self.places;
        println!("  {:<40} {:<8} {:<12}", "test", a.title(), b.title());
        for (name, n, h, verdict) in &self.rows {
            let quiet = matches!(verdict, Verdict::Identical) && !verbose;
            if quiet {
                continue;
            }
            let note = match verdict {
                Verdict::Identical => String::new(),
                Verdict::NotOffered(why)
                | Verdict::OnlySecond(why)
                | Verdict::Stricter(why)
                | Verdict::Varies(why) => {
                    format!("({why})")
                }
                Verdict::Differs(why) => format!("<- DIFFERS: {why}"),
            };
            println!(
                "  {name:<40} {:<8} {:<12} {note}",
                status_word(n.as_ref().map(|t| &t.status)),
                status_word(h.as_ref().map(|t| &t.status))
            );
            if matches!(verdict, Verdict::Differs(_)) {
                for d in n.iter().chain(h.iter()).flat_map(|t| t.diagnostics.iter()) {
                    println!("        {d}");
                }
            }
        }
        let identical = self.rows.iter().filter(|r| r.3 == Verdict::Identical).count();
        let offered = self.rows.iter().filter(|r| matches!(r.3, Verdict::NotOffered(_))).count();
        let extra = self.rows.iter().filter(|r| matches!(r.3, Verdict::OnlySecond(_))).count();
        let stricter = self.rows.iter().filter(|r| matches!(r.3, Verdict::Stricter(_))).count();
        let varies = self.rows.iter().filter(|r| matches!(r.3, Verdict::Varies(_))).count();
        let differ = self.rows.len() - identical - offered - extra - stricter - varies;
        if varies > 0 {
            println!("{varies} tests observe what QEMU does differently on the two machines");
        }
        println!(
            "{} tests: {identical} identical, {offered} not offered, {extra} offered only and {stricter} stricter {}, {differ} differ ({} {:.1} s, {} {:.1} s)",
            self.rows.len(),
            match b {
                Place::Hypocaust(_) => "under hypocaust",
                Place::Native(_) => "on hypocaust's firmware",
            },
            a.name(),
            self.native.1.elapsed.as_secs_f64(),
            b.name(),
            self.hypocaust.1.elapsed.as_secs_f64()
        );
        for (place, (report, run)) in [(a, &self.native), (b, &self.hypocaust)] {
            print_incomplete(&place.name(), report, run);
        }
    }
}

/// Says so, with the end of the log, if a run did not report every test it planned.
pub fn print_incomplete(which: &str, report: &Report, run: &Run) {
    if let Some(reason) = &report.bailed_out {
        println!("the {which} run bailed out: {reason}");
    }
    if report.planned != Some(report.tests.len()) {
        println!(
            "the {which} run planned {} tests but reported {} ({:?}); the end of its log ({}):\n{}",
            report.planned.map_or("?".into(), |n| n.to_string()),
            report.tests.len(),
            run.ending,
            run.log.display(),
            run.tail(20)
        );
    }
}

/// Prints a single run, one line per test.
pub fn print_report(title: &str, report: &Report, run: &Run) {
    println!("{title}");
    for t in &report.tests {
        println!("  {:<12} {}", status_word(Some(&t.status)), t.name);
        if t.status == Status::Fail {
            for d in &t.diagnostics {
                println!("          {d}");
            }
        }
    }
    let (p, f, s) = report.counts();
    println!(
        "{} tests: {p} passed, {f} failed, {s} skipped ({:.1} s)",
        report.tests.len(),
        run.elapsed.as_secs_f64()
    );
    print_incomplete("test kernel", report, run);
}

/// `cargo xtask suite --compare-firmware`.
pub fn compare_firmware(opts: &Options) -> Result<bool> {
    provision::all()?;
    let c = Comparison::firmware(opts)?;
    println!("guest test suite: natively on OpenSBI and natively on hypocaust's firmware");
    c.print(true);
    Ok(c.agrees())
}

/// `cargo xtask suite`.
pub fn command(native: bool, opts: &Options) -> Result<bool> {
    provision::all()?;
    let transport = if opts.legacy { "legacy" } else { "modern" };
    if native {
        let (report, run) = run(Place::ORACLE, opts)?;
        print_report(
            &format!(
                "guest test suite, native (QEMU rv64,h=false on OpenSBI, {transport} virtio-mmio):"
            ),
            &report,
            &run,
        );
        return Ok(report.complete_and_green());
    }
    let c = Comparison::run(opts)?;
    println!(
        "guest test suite: natively on QEMU {} ({}, OpenSBI) and under hypocaust on {}, \
         {transport} virtio-mmio",
        opts.board.qemu_name(),
        opts.cpu.as_deref().unwrap_or(opts.board.default_cpu()),
        opts.firmware.name()
    );
    c.print(true);
    Ok(c.agrees())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, status: Status, obs: &[(&str, &str)]) -> TestResult {
        TestResult {
            number: 1,
            name: name.into(),
            status,
            diagnostics: vec![],
            observations: obs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn verdicts() {
        let compare = |name: &str, n: Option<&TestResult>, h: Option<&TestResult>| {
            compare(name, n, h, &UNDER_HYPOCAUST)
        };
        let ok = result("a", Status::Pass, &[("stval", "0x2")]);
        assert_eq!(compare("a", Some(&ok), Some(&ok)), Verdict::Identical);
        let other = result("a", Status::Pass, &[("stval", "0x0")]);
        assert!(matches!(compare("a", Some(&ok), Some(&other)), Verdict::Differs(_)));
        let fail = result("a", Status::Fail, &[]);
        assert!(
            matches!(compare("a", Some(&fail), Some(&fail)), Verdict::Differs(_)),
            "native failures never pass"
        );
        assert!(matches!(compare("a", Some(&ok), None), Verdict::Differs(_)));
        let skipped =
            result("paging/sv48-gigapage-alias", Status::Skip("not offered: Sv48".into()), &[]);
        let native = result("paging/sv48-gigapage-alias", Status::Pass, &[]);
        assert!(matches!(
            compare("paging/sv48-gigapage-alias", Some(&native), Some(&skipped)),
            Verdict::NotOffered(_)
        ));
        // Stricter: only with the listed observations under hypocaust.
        let name = "virtio/blk-buffer-outside-ram";
        let native = result(name, Status::Pass, &[("used-idx", "0x1"), ("sectors-zeroed", "0x1")]);
        let refused = result(name, Status::Pass, &[("used-idx", "0x0"), ("sectors-zeroed", "0x0")]);
        assert!(matches!(compare(name, Some(&native), Some(&refused)), Verdict::Stricter(_)));
        assert!(matches!(compare(name, Some(&native), Some(&native)), Verdict::Identical));
        let leaked = result(name, Status::Pass, &[("used-idx", "0x1"), ("sectors-zeroed", "0x0")]);
        assert!(matches!(compare(name, Some(&native), Some(&leaked)), Verdict::Differs(_)));
        // Not in the list: a skip that differs from the native result is a difference.
        let skipped = result("csr/x", Status::Skip("not offered: X".into()), &[]);
        let native = result("csr/x", Status::Pass, &[]);
        assert!(matches!(compare("csr/x", Some(&native), Some(&skipped)), Verdict::Differs(_)));
    }
}
