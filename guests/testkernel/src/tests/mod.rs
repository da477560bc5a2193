//! The tests, by area. Each module lists its tests in a `TESTS` slice; [`ALL`] runs them in
//! this order.

use crate::harness::Test;

/// Reads a CSR by name or number: `csr_read!("sscratch")`.
macro_rules! csr_read {
    ($csr:literal) => {{
        let value: u64;
        // SAFETY: reading a CSR has no side effects on the CSRs the tests use.
        unsafe { core::arch::asm!(concat!("csrr {0}, ", $csr), out(reg) value) };
        value
    }};
}

/// Writes a CSR by name or number: `csr_write!("sscratch", value)`.
macro_rules! csr_write {
    ($csr:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: tests write CSRs deliberately; the harness restores state after each test.
        unsafe { core::arch::asm!(concat!("csrw ", $csr, ", {0}"), in(reg) value) };
    }};
}

mod csr;
mod exceptions;
mod fp;
mod interrupts;
mod machine;
mod paging;
mod plic;
mod sbi;
mod sifive_uart;
mod smp;
mod sweeps;
mod uart;
mod virtio;

/// Every test, in the order they run.
pub const ALL: &[&[Test]] = &[
    csr::TESTS,
    exceptions::TESTS,
    interrupts::TESTS,
    sweeps::TESTS,
    fp::TESTS,
    paging::TESTS,
    sbi::TESTS,
    smp::TESTS,
    uart::TESTS,
    sifive_uart::TESTS,
    plic::TESTS,
    virtio::TESTS,
    machine::TESTS,
];
