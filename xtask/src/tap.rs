//! Reading the TAP output of a guest test kernel.

use std::collections::BTreeMap;

/// The verdict on one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Skipped, with the reason.
    Skip(String),
}

/// One test's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub number: usize,
    pub name: String,
    pub status: Status,
    /// Diagnostic lines (`#   ...`) that followed a failure.
    pub diagnostics: Vec<String>,
    /// Values the test observed (`# obs NAME key=value`), in order.
    pub observations: Vec<(String, String)>,
}

/// A whole TAP stream.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The plan (`1..N`), if one was printed.
    pub planned: Option<usize>,
    pub tests: Vec<TestResult>,
    /// `Bail out!` reason, if the kernel gave up.
    pub bailed_out: Option<String>,
}

impl Report {
    /// Parses TAP from console output (other lines are ignored).
    pub fn parse(output: &str) -> Self {
        let mut report = Self::default();
        let mut pending: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for line in output.lines().map(|l| l.trim_end_matches('\r')) {
            if let Some(plan) = line.strip_prefix("1..") {
                report.planned = plan.trim().parse().ok();
            } else if let Some(reason) = line.strip_prefix("Bail out!") {
                report.bailed_out = Some(reason.trim().to_string());
            } else if let Some(obs) = line.strip_prefix("# obs ") {
                if let Some((name, kv)) = obs.split_once(' ')
                    && let Some((k, v)) = kv.split_once('=')
                {
                    pending
                        .entry(name.to_string())
                        .or_default()
                        .push((k.to_string(), v.to_string()));
                }
            } else if let Some(diag) = line.strip_prefix("#   ") {
                if let Some(last) = report.tests.last_mut() {
                    last.diagnostics.push(diag.to_string());
                }
            } else if let Some((ok, rest)) = line
                .strip_prefix("not ok ")
                .map(|r| (false, r))
                .or_else(|| line.strip_prefix("ok ").map(|r| (true, r)))
            {
                let Some((number, rest)) = rest.split_once(" - ") else {
                    continue;
                };
                let Ok(number) = number.trim().parse() else {
                    continue;
                };
                let (name, status) = match rest.split_once(" # SKIP") {
                    Some((name, reason)) => (name.trim(), Status::Skip(reason.trim().to_string())),
                    None if ok => (rest.trim(), Status::Pass),
                    None => (rest.trim(), Status::Fail),
                };
                let observations = pending.remove(name).unwrap_or_default();
                report.tests.push(TestResult {
                    number,
                    name: name.to_string(),
                    status,
                    diagnostics: Vec::new(),
                    observations,
                });
            }
        }
        report
    }

    /// Counts of (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for t in &self.tests {
            match t.status {
                Status::Pass => c.0 += 1,
                Status::Fail => c.1 += 1,
                Status::Skip(_) => c.2 += 1,
            }
        }
        c
    }

    /// Whether every planned test reported, nothing failed, and the kernel did not bail out.
    pub fn complete_and_green(&self) -> bool {
        self.bailed_out.is_none()
            && self.planned == Some(self.tests.len())
            && self.tests.iter().all(|t| t.status != Status::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stream() {
        let out = "OpenSBI noise\r\nTAP version 13\n1..4\nok 1 - csr/a\n# obs trap/b stval=0x2\nnot ok 2 - trap/b\n#   file.rs:3: nope\nok 3 - c # SKIP not offered: Sv48\nok 4 - d\n# 3 passed\n";
        let r = Report::parse(out);
        assert_eq!(r.planned, Some(4));
        assert_eq!(r.tests.len(), 4);
        assert_eq!(r.tests[1].status, Status::Fail);
        assert_eq!(r.tests[1].diagnostics, vec!["file.rs:3: nope".to_string()]);
        assert_eq!(r.tests[1].observations, vec![("stval".to_string(), "0x2".to_string())]);
        assert_eq!(r.tests[2].status, Status::Skip("not offered: Sv48".into()));
        assert_eq!(r.counts(), (2, 1, 1));
        assert!(!r.complete_and_green());
    }

    #[test]
    fn incomplete_or_bailed_runs_are_not_green() {
        let r = Report::parse("1..2\nok 1 - a\n");
        assert!(!r.complete_and_green());
        let r = Report::parse("1..1\nok 1 - a\nBail out! panic\n");
        assert_eq!(r.bailed_out.as_deref(), Some("panic"));
        assert!(!r.complete_and_green());
        assert!(Report::parse("1..1\nok 1 - a\n").complete_and_green());
    }
}
