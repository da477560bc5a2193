//! The test harness: a list of named tests, TAP output, checks, observations.
//!
//! Adding a test is one function and one line in its module's `TESTS` list (see
//! docs/adding-a-test.md). A test returns `Ok(())`, fails with `check!`/`check_eq!`, or
//! skips with a reason. Values a test *observes* (`observe!`) are printed as TAP comments
//! and compared between the native and the hypocaust run, so a difference in, say, the
//! `stval` an exception leaves shows up even where the spec allows both values.

use alloc::string::String;

use crate::trap;

/// Why a test did not pass.
#[derive(Debug)]
pub enum Outcome {
    /// The hart did not behave as the spec says.
    Fail(String),
    /// The capability is not there to test (the reason says which).
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<(), Outcome>;

/// A named test.
pub struct Test {
    /// `area/what`, e.g. `csr/sscratch-rw`.
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

/// Declares a test: `test!("csr/sscratch-rw", sscratch_rw)`.
#[macro_export]
macro_rules! test {
    ($name:literal, $f:path) => {
        $crate::harness::Test { name: $name, run: $f }
    };
}

/// Fails the test unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::harness::Outcome::Fail(alloc::format!(
                "{}:{}: check failed: {}", file!(), line!(), stringify!($cond)
            )));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::harness::Outcome::Fail(alloc::format!(
                "{}:{}: {}", file!(), line!(), alloc::format!($($fmt)+)
            )));
        }
    };
}

/// Fails the test unless the two values are equal (printed in hex).
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::harness::Outcome::Fail(alloc::format!(
                "{}:{}: {} == {}: {:#x?} != {:#x?}",
                file!(),
                line!(),
                stringify!($left),
                stringify!($right),
                l,
                r
            )));
        }
    }};
}

/// Skips the test with a reason.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)+) => {
        return Err($crate::harness::Outcome::Skip(alloc::format!($($fmt)+)))
    };
}

/// Records a value the hart produced, for comparison between runs.
#[macro_export]
macro_rules! observe {
    ($key:literal, $value:expr) => {
        $crate::harness::observe($key, $value as u64)
    };
}

static CURRENT: spin::Mutex<&'static str> = spin::Mutex::new("");

/// Prints an observation of the running test.
pub fn observe(key: &str, value: u64) {
    let name = *CURRENT.lock();
    println!("# obs {name} {key}={value:#x}");
}

/// Totals of a run.
#[derive(Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Puts the hart back into the state every test starts from.
fn reset_hart_state() {
    // SAFETY: the kernel runs on identity-mapped memory with paging off, so turning
    // paging off and masking interrupts is always safe here; stvec goes back to the vector.
    unsafe {
        core::arch::asm!(
            "csrw sie, zero",
            "csrci sstatus, 2",
            "csrw satp, zero",
            "sfence.vma",
            "csrw sscratch, zero",
            "la t0, trap_entry",
            "csrw stvec, t0",
            out("t0") _,
        );
        let sum_mxr = rv::csr::Sstatus::SUM | rv::csr::Sstatus::MXR;
        core::arch::asm!("csrc sstatus, {0}", in(reg) sum_mxr.bits());
    }
    crate::timer::disarm();
    crate::vm::reset();
}

/// Runs every test whose name contains `filter`, printing TAP.
pub fn run(tests: &[&[Test]], filter: Option<&str>) -> Summary {
    let selected = || {
        tests.iter().flat_map(|t| t.iter()).filter(|t| filter.is_none_or(|f| t.name.contains(f)))
    };
    println!("1..{}", selected().count());
    let mut summary = Summary::default();
    for (i, test) in selected().enumerate() {
        let number = i + 1;
        reset_hart_state();
        *CURRENT.lock() = test.name;
        let result = match trap::catch(test.run) {
            Ok(r) => r,
            Err(t) => Err(Outcome::Fail(alloc::format!("unexpected exception: {t:#x?}"))),
        };
        reset_hart_state();
        match result {
            Ok(()) => {
                summary.passed += 1;
                println!("ok {number} - {}", test.name);
            }
            Err(Outcome::Skip(reason)) => {
                summary.skipped += 1;
                println!("ok {number} - {} # SKIP {reason}", test.name);
            }
            Err(Outcome::Fail(message)) => {
                summary.failed += 1;
                println!("not ok {number} - {}", test.name);
                for line in message.lines() {
                    println!("#   {line}");
                }
            }
        }
    }
    summary
}
