//! `cargo xtask suite`: the guest test kernel, natively on QEMU (the oracle).

use std::time::Duration;

use anyhow::Result;

use crate::qemu::{self, Machine, Run};
use crate::tap::{Report, Status};
use crate::{artifacts, provision};

/// Timeout of one suite run; the suite takes a few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Options of a suite run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only tests whose name contains this.
    pub filter: Option<String>,
}

fn bootargs(opts: &Options) -> Option<String> {
    opts.filter.as_ref().map(|f| format!("filter={f}"))
}

/// Runs the test kernel directly on QEMU's OpenSBI.
pub fn run_native(opts: &Options) -> Result<(Report, Run)> {
    let kernel = artifacts::testkernel()?;
    let mut machine = Machine::new(kernel);
    machine.memory_mib = 256;
    machine.append = bootargs(opts);
    let run = qemu::run_captured(&machine, "suite-native", TIMEOUT, false)?;
    Ok((Report::parse(&run.output), run))
}

/// Prints a report, one line per test.
pub fn print_report(title: &str, report: &Report, run: &Run) {
    println!("{title}");
    for t in &report.tests {
        match &t.status {
            Status::Pass => println!("  ok    {}", t.name),
            Status::Fail => {
                println!("  FAIL  {}", t.name);
                for d in &t.diagnostics {
                    println!("          {d}");
                }
            }
            Status::Skip(reason) => println!("  skip  {} ({reason})", t.name),
        }
    }
    let (p, f, s) = report.counts();
    println!(
        "{} tests: {p} passed, {f} failed, {s} skipped ({:.1} s)",
        report.tests.len(),
        run.elapsed.as_secs_f64()
    );
    if let Some(reason) = &report.bailed_out {
        println!("the test kernel bailed out: {reason}");
    }
    if report.planned != Some(report.tests.len()) {
        println!(
            "the test kernel planned {} tests but reported {}; the end of its output ({}):\n{}",
            report.planned.map_or("?".into(), |n| n.to_string()),
            report.tests.len(),
            run.log.display(),
            run.tail(15)
        );
    }
}

/// `cargo xtask suite`.
pub fn command(native: bool, opts: &Options) -> Result<bool> {
    provision::all()?;
    if !native {
        println!("note: running guests under hypocaust is not there yet; running natively only");
    }
    let (report, run) = run_native(opts)?;
    print_report(
        "guest test suite, native (QEMU rv64,h=false on OpenSBI):",
        &report,
        &run,
    );
    Ok(report.complete_and_green())
}
