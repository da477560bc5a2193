//! Supervisor CSRs: what reads back after a write (WARL), what is read-only.

use rv::csr::{SSTATUS_UXL_SHIFT, Sstatus};

use crate::harness::{Test, TestResult};
use crate::{check_eq, test};

pub const TESTS: &[Test] = &[
    test!("csr/sscratch-rw", sscratch_rw),
    test!("csr/sepc-alignment", sepc_alignment),
    test!("csr/stvec-modes", stvec_modes),
    test!("csr/sstatus-uxl", sstatus_uxl),
    test!("csr/sstatus-sum-mxr", sstatus_sum_mxr),
    test!("csr/satp-reserved-mode", satp_reserved_mode),
];

/// Writes `value` to sscratch and reads it back with nothing in between: the trap vector
/// relies on sscratch being 0 whenever the kernel runs.
fn sscratch_round_trip(value: u64) -> u64 {
    let read: u64;
    // SAFETY: interrupts are off (the harness masks them), and no instruction here can trap,
    // so the vector never sees the temporary value.
    unsafe {
        core::arch::asm!(
            "csrw sscratch, {v}",
            "csrr {r}, sscratch",
            "csrw sscratch, zero",
            v = in(reg) value,
            r = out(reg) read,
        )
    };
    read
}

fn sscratch_rw() -> TestResult {
    for v in [
        0,
        u64::MAX,
        0x5555_5555_5555_5555,
        0xAAAA_AAAA_AAAA_AAAA,
        0x8000_0000_0000_0001,
    ] {
        check_eq!(sscratch_round_trip(v), v);
    }
    Ok(())
}

fn sepc_alignment() -> TestResult {
    // With C, IALIGN is 16: bit 1 of sepc is kept. (The spec also makes bit 0 read as
    // zero, but QEMU 7.2, our oracle, keeps it; QEMU 8 fixed that. Bit 0 is left
    // unchecked so the suite passes on the oracle; hypocaust follows the spec there.)
    for value in [
        0x8020_1232u64,
        0x8020_1230,
        0xFFFF_FFFF_FFFF_FFFE,
        0x0000_0000_0000_0002,
    ] {
        csr_write!("sepc", value);
        check_eq!(csr_read!("sepc") & !1, value);
    }
    Ok(())
}

fn stvec_modes() -> TestResult {
    let base = 0x8030_0000u64;
    csr_write!("stvec", base);
    check_eq!(csr_read!("stvec"), base);
    csr_write!("stvec", base | 1);
    check_eq!(csr_read!("stvec"), base | 1);
    // Modes 2 and 3 are reserved; stvec is WARL, so it reads back a legal mode.
    for mode in [2, 3] {
        csr_write!("stvec", base | mode);
        let read = csr_read!("stvec");
        check_eq!(read & 3 < 2, true);
        crate::observe!("stvec_after_reserved_mode", read);
    }
    Ok(())
}

fn sstatus_uxl() -> TestResult {
    let sstatus = csr_read!("sstatus");
    check_eq!((sstatus >> SSTATUS_UXL_SHIFT) & 3, 2);
    Ok(())
}

fn sstatus_sum_mxr() -> TestResult {
    for bit in [Sstatus::SUM, Sstatus::MXR] {
        // SAFETY: SUM and MXR only matter with paging on, which it is not here.
        unsafe { core::arch::asm!("csrs sstatus, {0}", in(reg) bit.bits()) };
        check_eq!(csr_read!("sstatus") & bit.bits(), bit.bits());
        // SAFETY: as above.
        unsafe { core::arch::asm!("csrc sstatus, {0}", in(reg) bit.bits()) };
        check_eq!(csr_read!("sstatus") & bit.bits(), 0);
    }
    Ok(())
}

fn satp_reserved_mode() -> TestResult {
    check_eq!(csr_read!("satp"), 0);
    // Writing a reserved MODE has no effect at all.
    for mode in [1u64, 5, 7, 15] {
        csr_write!("satp", (mode << 60) | 0x8_0123);
        check_eq!(csr_read!("satp"), 0);
    }
    Ok(())
}
