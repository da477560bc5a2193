//! The bench's numbers: rows of per-operation medians, hypocaust's exit counts, the table,
//! the JSON file and the comparison with a baseline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{ICOUNT, Mode, Options, REGRESSION, Side};
use serde_json::{Value, json};

/// One row of the table: a workload (or one trap microbenchmark).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    /// What one operation is.
    pub op: String,
    /// Where the program counts bytes: bytes per operation.
    pub bytes_per_op: Option<u64>,
    /// The hart idles during the workload (waiting for the host's I/O): under `-icount`
    /// the idle time is skipped and counted, so the count runs give virtual time, not an
    /// instruction count; the table shows none.
    pub idles: bool,
    /// Operations in the measured region (of the last run).
    pub ops: f64,
    /// Per run, nanoseconds per operation (instructions in [`Mode::Count`]), by side and
    /// mode.
    per_op: [[Vec<f64>; 2]; 3],
    /// Per run, the whole region's nanoseconds (instructions).
    totals: [[Vec<f64>; 2]; 3],
}

fn index(side: Side, mode: Mode) -> (usize, usize) {
    (side as usize, mode as usize)
}

/// The median (the mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

impl Row {
    pub fn new(name: &str, op: &str, bytes_per_op: Option<u64>) -> Self {
        Self {
            name: name.into(),
            op: op.into(),
            bytes_per_op,
            idles: false,
            ops: 0.0,
            per_op: Default::default(),
            totals: Default::default(),
        }
    }

    /// Operations in `n` of the program's iterations (bytes where it counts bytes).
    pub fn ops_of(&self, n: u64) -> f64 {
        n as f64 / self.bytes_per_op.unwrap_or(1) as f64
    }

    /// One run's result: `ns` nanoseconds (instructions) for `n` iterations.
    pub fn add(&mut self, side: Side, mode: Mode, ns: f64, n: u64) {
        let ops = self.ops_of(n).max(f64::MIN_POSITIVE);
        let (s, m) = index(side, mode);
        self.per_op[s][m].push(ns / ops);
        self.totals[s][m].push(ns);
        self.ops = ops;
    }

    /// The median per operation, if any run gave one.
    pub fn per_op(&self, side: Side, mode: Mode) -> Option<f64> {
        let (s, m) = index(side, mode);
        median(&self.per_op[s][m])
    }

    /// Every run's per-operation value.
    pub fn samples(&self, side: Side, mode: Mode) -> &[f64] {
        let (s, m) = index(side, mode);
        &self.per_op[s][m]
    }

    /// The median instructions per operation (None where the hart idles).
    pub fn instructions(&self, side: Side) -> Option<f64> {
        if self.idles { None } else { self.per_op(side, Mode::Count) }
    }

    /// `side` / native, per operation (instructions: none where the hart idles).
    pub fn ratio(&self, side: Side, mode: Mode) -> Option<f64> {
        if self.idles && mode == Mode::Count {
            return None;
        }
        Some(self.per_op(side, mode)? / self.per_op(Side::Native, mode)?)
    }

    /// MB/s (10^6 bytes per second of wall time) where the program counts bytes.
    pub fn throughput(&self, side: Side) -> Option<f64> {
        Some(self.bytes_per_op? as f64 / self.per_op(side, Mode::Wall)? * 1e9 / 1e6)
    }

    /// Whether every one of `sides` has a positive number in both modes.
    pub fn complete(&self, sides: &[Side]) -> bool {
        sides
            .iter()
            .all(|s| Mode::BOTH.iter().all(|m| self.per_op(*s, *m).is_some_and(|v| v > 0.0)))
    }

    fn to_json(&self) -> Value {
        let side = |s: Side| {
            let (i, _) = index(s, Mode::Count);
            json!({
                "instructions_per_op": self.instructions(s),
                "virtual_ns_per_op": self.idles.then(|| self.per_op(s, Mode::Count)).flatten(),
                "wall_ns_per_op": self.per_op(s, Mode::Wall),
                "instructions": self.totals[i][Mode::Count as usize],
                "wall_ns": self.totals[i][Mode::Wall as usize],
                "throughput_mb_s": self.throughput(s),
            })
        };
        let ratios = |s: Side| json!({ "instructions": self.ratio(s, Mode::Count), "wall": self.ratio(s, Mode::Wall) });
        json!({
            "name": self.name,
            "op": self.op,
            "ops": self.ops,
            "bytes_per_op": self.bytes_per_op,
            "native": side(Side::Native),
            "hypocaust": side(Side::Hypocaust),
            "hypocaust_opensbi": side(Side::HypocaustOpensbi),
            "ratio": ratios(Side::Hypocaust),
            "ratio_opensbi": ratios(Side::HypocaustOpensbi),
        })
    }
}

/// hypocaust's exits of one guest run, from its debug line
/// `guest 'NAME': exits 729138 in all, Exception(IllegalInstruction) 605339, ...`
/// (the causes with the most exits, most first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub total: u64,
    pub causes: Vec<(String, u64)>,
}

impl Exits {
    /// The last exit line in a console log.
    pub fn parse(console: &str) -> Option<Exits> {
        let line = console.lines().rev().find(|l| l.contains("': exits "))?;
        let rest = &line[line.find("': exits ")? + "': exits ".len()..];
        let mut parts = rest.trim().split(", ");
        let total = parts.next()?.strip_suffix(" in all")?.trim().parse().ok()?;
        let causes = parts
            .filter_map(|p| {
                let (cause, n) = p.trim().rsplit_once(' ')?;
                Some((cause.to_string(), n.parse().ok()?))
            })
            .collect();
        Some(Exits { total, causes })
    }

    /// These exits less `base`'s (cause by cause; a cause `base` does not list counts
    /// whole), most first.
    pub fn minus(&self, base: &Exits) -> Exits {
        let mut causes: Vec<(String, u64)> = self
            .causes
            .iter()
            .map(|(c, n)| {
                let b = base.causes.iter().find(|(bc, _)| bc == c).map_or(0, |x| x.1);
                (c.clone(), n.saturating_sub(b))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        Exits { total: self.total.saturating_sub(base.total), causes }
    }

    fn to_json(&self) -> Value {
        let causes: serde_json::Map<String, Value> =
            self.causes.iter().map(|(c, n)| (c.clone(), json!(n))).collect();
        json!({ "total": self.total, "causes": causes })
    }
}

/// `Exception(IllegalInstruction)` -> `IllegalInstruction`.
fn short_cause(cause: &str) -> &str {
    ["Exception(", "Interrupt("]
        .iter()
        .find_map(|p| cause.strip_prefix(p)?.strip_suffix(')'))
        .unwrap_or(cause)
}

/// Three significant digits with k/M/G/T.
pub fn si(x: f64) -> String {
    let (v, suffix) = [(1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")]
        .iter()
        .find(|(scale, _)| x.abs() >= *scale)
        .map_or((x, ""), |(scale, s)| (x / scale, *s));
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

/// A duration in nanoseconds, three significant digits.
pub fn duration(ns: f64) -> String {
    let (v, unit) = [(1e9, "s"), (1e6, "ms"), (1e3, "µs")]
        .iter()
        .find(|(scale, _)| ns.abs() >= *scale)
        .map_or((ns, "ns"), |(scale, u)| (ns / scale, *u));
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// A number of `mode`: instructions, or a duration.
pub fn amount(mode: Mode, v: f64) -> String {
    match mode {
        Mode::Count => format!("{} insns", si(v)),
        Mode::Wall => duration(v),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| if r >= 100.0 { format!("{r:.0}x") } else { format!("{r:.2}x") })
}

/// The results of a bench run.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Runs that failed: what, why and where the log is.
    pub failures: Vec<String>,
    /// hypocaust's exits per job (`boot`, `syscall`, ..., `trap`) and side, from the
    /// first instruction-count run of each.
    pub exits: Vec<(String, Side, Exits)>,
    /// The sides measured (native first).
    pub sides: Vec<Side>,
    pub quick: bool,
    pub reps: usize,
    /// Whether `boot` ran on its own (otherwise the boot row comes from the other runs).
    pub has_boot_run: bool,
    /// Jobs whose guest has more than one vCPU: their exits include a boot of their own,
    /// not the one-vCPU boot run's, so they are shown whole.
    pub multi_vcpu: Vec<String>,
    pub qemu: String,
    pub guest: Option<String>,
    pub elapsed: Duration,
    pub unix_time: u64,
}

impl Report {
    pub fn new(opts: &Options, rows: Vec<Row>, has_boot_run: bool, sides: Vec<Side>) -> Self {
        Self {
            rows,
            failures: Vec::new(),
            exits: Vec::new(),
            sides,
            quick: opts.quick,
            reps: opts.reps,
            has_boot_run,
            multi_vcpu: Vec::new(),
            qemu: String::new(),
            guest: None,
            elapsed: Duration::ZERO,
            unix_time: 0,
        }
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    pub fn row_mut(&mut self, name: &str) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| r.name == name)
    }

    fn job_exits(&self, job: &str, side: Side) -> Option<&Exits> {
        self.exits.iter().find(|(j, s, _)| j == job && *s == side).map(|(_, _, e)| e)
    }

    /// A job's exits on `side` less the boot run's (when there is one, and for Linux
    /// workloads on one vCPU).
    pub fn workload_exits(&self, job: &str, side: Side) -> Option<(Exits, bool)> {
        let exits = self.job_exits(job, side)?;
        let whole = job == "boot" || job == "trap" || self.multi_vcpu.iter().any(|j| j == job);
        match self.job_exits("boot", side) {
            Some(boot) if !whole => Some((exits.minus(boot), true)),
            _ => Some((exits.clone(), false)),
        }
    }

    /// The hypocaust sides measured.
    fn hypocaust_sides(&self) -> impl Iterator<Item = Side> + '_ {
        self.sides.iter().copied().filter(|s| *s != Side::Native)
    }

    /// Prints the table, the throughputs and the exit profile.
    pub fn print(&self) {
        let hyp: Vec<Side> = self.hypocaust_sides().collect();
        for mode in Mode::BOTH {
            println!();
            let mut head = format!("{:<19} {:<27} {:>9}", mode.name(), "op", "native");
            for s in &hyp {
                let title = if *s == Side::Hypocaust { "hypocaust" } else { "on OpenSBI" };
                head.push_str(&format!(" {title:>10} {:>7}", "ratio"));
            }
            println!("{head}");
            for r in &self.rows {
                let cell = |side| match r.per_op(side, mode) {
                    None => "-".into(),
                    Some(_) if r.idles && mode == Mode::Count => "idle*".into(),
                    Some(v) if mode == Mode::Count => si(v),
                    Some(v) => duration(v),
                };
                let mut line = format!("{:<19} {:<27} {:>9}", r.name, r.op, cell(Side::Native));
                for s in &hyp {
                    line.push_str(&format!(" {:>10} {:>7}", cell(*s), ratio(r.ratio(*s, mode))));
                }
                println!("{line}");
            }
        }
        let throughput: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| {
                let under: Vec<String> =
                    hyp.iter().filter_map(|s| Some(format!("{:.1}", r.throughput(*s)?))).collect();
                Some(format!(
                    "{} {:.1} -> {} MB/s",
                    r.name,
                    r.throughput(Side::Native)?,
                    under.join(" / ")
                ))
            })
            .collect();
        if !throughput.is_empty() {
            let names: Vec<&str> = hyp.iter().map(|s| s.name()).collect();
            println!("throughput, native -> {}: {}", names.join(" / "), throughput.join("; "));
        }
        let runs: Vec<usize> = self
            .rows
            .iter()
            .flat_map(|r| hyp.iter().map(|s| r.samples(*s, Mode::Count).len()))
            .filter(|n| *n > 0)
            .collect();
        let (fewest, most) = (runs.iter().min().unwrap_or(&0), runs.iter().max().unwrap_or(&0));
        let span = if fewest == most { format!("{most}") } else { format!("{fewest} to {most}") };
        println!(
            "medians of {span} run(s) per cell; instructions: the whole machine (firmware, hypocaust, guest) under -icount {ICOUNT}, idle skipped to the next timer; Linux wall time from the program's start and end lines as xtask saw them (docs/performance.md)"
        );
        let idle: Vec<&str> =
            self.rows.iter().filter(|r| r.idles).map(|r| r.name.as_str()).collect();
        if !idle.is_empty() {
            println!(
                "idle*: {} wait for the host's I/O; -icount counts that idle time, so there is no instruction count (read the wall time)",
                idle.join(", ")
            );
        }
        if !self.has_boot_run && self.row("boot").is_some() {
            println!("boot: from the other workloads' runs (no boot run of its own)");
        }

        for side in hyp {
            self.print_exits(side);
        }
    }

    /// The exit profile of the hypocaust runs on `side`.
    fn print_exits(&self, side: Side) {
        let jobs: Vec<&str> =
            self.exits.iter().filter(|e| e.1 == side).map(|e| e.0.as_str()).collect();
        if jobs.is_empty() {
            return;
        }
        let base = if self.job_exits("boot", side).is_some() {
            "; Linux workloads less the boot run's"
        } else {
            "; Linux runs include the boot"
        };
        let whole: Vec<&str> = self
            .multi_vcpu
            .iter()
            .filter(|j| jobs.contains(&j.as_str()))
            .map(String::as_str)
            .collect();
        let whole = if whole.is_empty() || self.job_exits("boot", side).is_none() {
            String::new()
        } else {
            format!("; {} whole, with their own boot of more vCPUs", whole.join(", "))
        };
        println!();
        println!("hypocaust exits, {} (first instruction-count run{base}{whole}):", side.name());
        for job in jobs {
            let Some((exits, net)) = self.workload_exits(job, side) else { continue };
            let per_op = self
                .row(job)
                .filter(|r| r.ops > 0.0 && net)
                .map(|r| format!(" ({}/op)", si(exits.total as f64 / r.ops)))
                .unwrap_or_default();
            let causes: Vec<String> = exits
                .causes
                .iter()
                .take(4)
                .map(|(c, n)| format!("{} {}", short_cause(c), si(*n as f64)))
                .collect();
            let name = if job == "trap" { "trap/*" } else { job };
            println!(
                "  {name:<11} {:>8}{per_op:<14} {}",
                si(exits.total as f64),
                causes.join(", ")
            );
        }
    }

    /// Prints the comparison with `base`, per operation; flags changes over
    /// [`REGRESSION`].
    pub fn compare(&self, base: &Baseline) {
        println!();
        println!(
            "compared with {} (per op; + is more; over +{:.0}% flagged):",
            base.path.display(),
            REGRESSION * 100.0
        );
        println!(
            "{:<19} {:<18} {:>34}   {:>34}   {:>10}",
            "workload", "side", "instructions", "wall time", "native insns"
        );
        let mut flagged = 0;
        for (r, side) in self.rows.iter().flat_map(|r| self.hypocaust_sides().map(move |s| (r, s)))
        {
            let Some(old) = base.rows.iter().find(|(n, _)| *n == r.name).map(|(_, v)| v) else {
                continue;
            };
            let mut flags = Vec::new();
            let mut cell = |side: Side, mode: Mode, what: &str| -> String {
                let now =
                    if mode == Mode::Count { r.instructions(side) } else { r.per_op(side, mode) };
                let (Some(new), Some(was)) = (now, old[side as usize][mode as usize]) else {
                    return "-".into();
                };
                let change = if was > 0.0 { new / was - 1.0 } else { 0.0 };
                if side != Side::Native && change > REGRESSION {
                    flags.push(what.to_string());
                }
                let show = |v| match mode {
                    Mode::Count => si(v),
                    Mode::Wall => duration(v),
                };
                if side == Side::Native {
                    format!("{:+.1}%", change * 100.0)
                } else {
                    format!("{} -> {} {:>+7.1}%", show(was), show(new), change * 100.0)
                }
            };
            let insns = cell(side, Mode::Count, "instructions");
            let wall = cell(side, Mode::Wall, "wall time");
            let native = cell(Side::Native, Mode::Count, "native");
            let flag = if flags.is_empty() {
                String::new()
            } else {
                flagged += 1;
                format!("  REGRESSION ({})", flags.join(", "))
            };
            println!(
                "{:<19} {:<18} {insns:>34}   {wall:>34}   {native:>10}{flag}",
                r.name,
                side.name()
            );
        }
        if flagged > 0 {
            println!("{flagged} workload(s) regressed by more than {:.0}%", REGRESSION * 100.0);
        }
    }

    /// The results file.
    pub fn to_json(&self) -> Value {
        let exits: Vec<Value> = self
            .exits
            .iter()
            .map(|(job, side, e)| {
                let net = self.workload_exits(job, *side).filter(|w| w.1).map(|w| w.0.to_json());
                json!({ "workload": job, "side": side.name(), "whole_run": e.to_json(), "less_boot": net })
            })
            .collect();
        json!({
            "format": "hypocaust-bench 1",
            "unix_time": self.unix_time,
            "quick": self.quick,
            "reps": self.reps,
            "qemu": self.qemu,
            "machine": "virt, -cpu rv64,h=false, 1 hart; guest 256 MiB (hypocaust: 1024 MiB machine)",
            "sides": self.sides.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "icount": ICOUNT,
            "guest_kernel": self.guest,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "workloads": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "exits": exits,
            "failures": self.failures,
        })
    }

    /// Writes the results file (making its directory).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.to_json())?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Drops a boot row borrowed from other runs that gave none.
    pub fn finish(&mut self) {
        let borrowed = !self.has_boot_run;
        self.rows.retain(|r| {
            !(borrowed && r.name == "boot")
                || Side::ALL
                    .iter()
                    .any(|s| Mode::BOTH.iter().any(|m| !r.samples(*s, *m).is_empty()))
        });
    }
}

/// A previous results file: per workload, per side and mode, the per-op median.
#[derive(Debug)]
pub struct Baseline {
    pub path: PathBuf,
    pub rows: Vec<(String, [[Option<f64>; 2]; 3])>,
}

impl Baseline {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("the baseline {} is not JSON", path.display()))?;
        let workloads = json
            .get("workloads")
            .and_then(Value::as_array)
            .with_context(|| format!("the baseline {} has no workloads", path.display()))?;
        let rows = workloads
            .iter()
            .filter_map(|w| {
                let name = w.get("name")?.as_str()?.to_string();
                let side = |s: &str| {
                    let v = w.get(s);
                    [
                        v.and_then(|v| v.get("instructions_per_op")).and_then(Value::as_f64),
                        v.and_then(|v| v.get("wall_ns_per_op")).and_then(Value::as_f64),
                    ]
                };
                Some((name, [side("native"), side("hypocaust"), side("hypocaust_opensbi")]))
            })
            .collect();
        Ok(Self { path: path.to_path_buf(), rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn exit_lines() {
        let log = "[    3.8] hart0 DEBUG guest 'linux': exits 729138 in all, \
                   Exception(IllegalInstruction) 605339, Exception(StorePageFault) 97534, \
                   Interrupt(SupervisorTimer) 12\n";
        let e = Exits::parse(log).expect("parses");
        assert_eq!(e.total, 729138);
        assert_eq!(e.causes[0], ("Exception(IllegalInstruction)".into(), 605339));
        assert_eq!(e.causes.len(), 3);
        assert_eq!(short_cause(&e.causes[2].0), "SupervisorTimer");
        let base =
            Exits { total: 700000, causes: vec![("Exception(IllegalInstruction)".into(), 600000)] };
        let net = e.minus(&base);
        assert_eq!(net.total, 29138);
        assert_eq!(net.causes[0], ("Exception(StorePageFault)".into(), 97534));
        assert_eq!(net.causes[1], ("Exception(IllegalInstruction)".into(), 5339));
        assert_eq!(Exits::parse("no exits here"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(si(394.0), "394");
        assert_eq!(si(15_210.0), "15.2 k");
        assert_eq!(si(1_234_567_890.0), "1.23 G");
        assert_eq!(si(2.0), "2.00");
        assert_eq!(duration(920.0), "920 ns");
        assert_eq!(duration(190_000.0), "190 µs");
        assert_eq!(duration(3_100_000_000.0), "3.10 s");
        assert_eq!(ratio(Some(38.61)), "38.61x");
        assert_eq!(ratio(Some(206.4)), "206x");
    }

    #[test]
    fn rows_and_baseline() {
        let mut r = Row::new("disk", "MiB read", Some(1 << 20));
        for (side, mode, ns) in [
            (Side::Native, Mode::Count, 64e6),
            (Side::Native, Mode::Wall, 640e6),
            (Side::Hypocaust, Mode::Count, 128e6),
            (Side::Hypocaust, Mode::Wall, 1280e6),
        ] {
            r.add(side, mode, ns, 64 << 20);
        }
        assert_eq!(r.ops, 64.0);
        assert_eq!(r.per_op(Side::Native, Mode::Count), Some(1e6));
        assert_eq!(r.ratio(Side::Hypocaust, Mode::Wall), Some(2.0));
        assert!(r.complete(&[Side::Native, Side::Hypocaust]));
        assert!(!r.complete(&Side::ALL), "nothing on OpenSBI");
        let t = r.throughput(Side::Native).expect("bytes");
        assert!((t - 104.8576).abs() < 1e-6);

        let opts = Options {
            quick: false,
            reps: 1,
            repeat_within: None,
            baseline: None,
            filter: None,
            output: PathBuf::new(),
            verbose: false,
            firmware: None,
            native: false,
        };
        let report = Report::new(&opts, vec![r], false, Side::ALL.to_vec());
        let path = std::env::temp_dir().join(format!("xtask-bench-{}.json", std::process::id()));
        report.write_json(&path).expect("writes");
        let base = Baseline::read(&path).expect("reads back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(base.rows.len(), 1);
        assert_eq!(base.rows[0].0, "disk");
        assert_eq!(base.rows[0].1[Side::Hypocaust as usize][Mode::Wall as usize], Some(20e6));
    }
}
