//! The SBI as a supervisor sees it: BASE.

use crate::harness::{Test, TestResult};
use crate::{check, check_eq, test};

pub const TESTS: &[Test] = &[
    test!("sbi/spec-version", spec_version),
    test!("sbi/probe-base", probe_base),
    test!("sbi/probe-unknown", probe_unknown),
];

fn spec_version() -> TestResult {
    let v = sbi_rt::get_spec_version();
    check!(
        v.major() > 0 || v.minor() >= 2,
        "SBI spec version {}.{} < 0.2",
        v.major(),
        v.minor()
    );
    Ok(())
}

fn probe_base() -> TestResult {
    check!(sbi_rt::probe_extension(sbi_rt::Base).is_available());
    Ok(())
}

fn probe_unknown() -> TestResult {
    let ret = crate::ecall::sbi(
        sbi_spec::base::EID_BASE,
        sbi_spec::base::PROBE_EXTENSION,
        [0x0bad_0e1d, 0, 0, 0, 0, 0],
    );
    check_eq!(ret, crate::ecall::Ret { error: 0, value: 0 });
    Ok(())
}
