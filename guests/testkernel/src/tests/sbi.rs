//! The SBI as a supervisor sees it: probing, error codes, HSM, SRST argument checks, IPIs,
//! remote fences, the legacy calls, DBCN, and a barrage of garbage calls.

use sbi_spec::{base, dbcn, hsm, rfnc, spi, srst, time};

use crate::ecall::{Ret, sbi};
use crate::harness::{Test, TestResult};
use crate::trap::catch;
use crate::{check, check_eq, observe, skip, test, timer};

pub const TESTS: &[Test] = &[
    test!("sbi/spec-version", spec_version),
    test!("sbi/probe-base", probe_base),
    test!("sbi/probe-unknown", probe_unknown),
    test!("sbi/probe-standard-extensions", probe_standard_extensions),
    test!("sbi/probe-legacy-extensions", probe_legacy_extensions),
    test!("sbi/base-unknown-function", base_unknown_function),
    test!("sbi/unknown-extension-clears-a1", unknown_extension_clears_a1),
    test!("sbi/machine-ids", machine_ids),
    test!("sbi/set-timer-succeeds", set_timer_succeeds),
    test!("sbi/ipi-bad-hart-base", ipi_bad_hart_base),
    test!("sbi/rfence-to-self", rfence_to_self),
    test!("sbi/rfence-hfence-not-supported", rfence_hfence_not_supported),
    test!("sbi/hsm-status-of-self", hsm_status_of_self),
    test!("sbi/hsm-status-of-bad-hart", hsm_status_of_bad_hart),
    test!("sbi/hsm-start-self", hsm_start_self),
    test!("sbi/hsm-start-bad-hart", hsm_start_bad_hart),
    test!("sbi/hsm-suspend-reserved-type", hsm_suspend_reserved_type),
    test!("sbi/hsm-suspend-retentive", hsm_suspend_retentive),
    test!("sbi/srst-bad-arguments", srst_bad_arguments),
    test!("sbi/legacy-putchar-keeps-a1", legacy_putchar_keeps_a1),
    test!("sbi/legacy-getchar-without-input", legacy_getchar_without_input),
    test!("sbi/legacy-ipi-bad-pointer", legacy_ipi_bad_pointer),
    test!("sbi/dbcn-write", dbcn_write),
    test!("sbi/dbcn-write-bad-address", dbcn_write_bad_address),
    test!("sbi/dbcn-read-without-input", dbcn_read_without_input),
    test!("sbi/garbage-calls", garbage_calls),
];

const SUCCESS: isize = 0;
const NOT_SUPPORTED: isize = -2;
const INVALID_PARAM: isize = -3;
const ALREADY_AVAILABLE: isize = -6;

fn call(eid: usize, fid: usize, a: &[usize]) -> Ret {
    let mut args = [0; 6];
    args[..a.len()].copy_from_slice(a);
    sbi(eid, fid, args)
}

fn hartid() -> usize {
    crate::machine::get().hartid
}

fn spec_version() -> TestResult {
    let v = sbi_rt::get_spec_version();
    check!(v.major() > 0 || v.minor() >= 2, "SBI spec version {}.{} < 0.2", v.major(), v.minor());
    Ok(())
}

fn probe_base() -> TestResult {
    check!(sbi_rt::probe_extension(sbi_rt::Base).is_available());
    Ok(())
}

fn probe_unknown() -> TestResult {
    let ret = call(base::EID_BASE, base::PROBE_EXTENSION, &[0x0bad_0e1d]);
    check_eq!(ret, Ret { error: 0, value: 0 });
    Ok(())
}

fn probe_standard_extensions() -> TestResult {
    for eid in [time::EID_TIME, spi::EID_SPI, rfnc::EID_RFNC, hsm::EID_HSM, srst::EID_SRST] {
        let ret = call(base::EID_BASE, base::PROBE_EXTENSION, &[eid]);
        check_eq!(ret.error, SUCCESS);
        check!(ret.value != 0, "extension {eid:#x} missing");
    }
    Ok(())
}

fn probe_legacy_extensions() -> TestResult {
    let mut present = 0u64;
    for eid in 0..16usize {
        let ret = call(base::EID_BASE, base::PROBE_EXTENSION, &[eid]);
        check_eq!(ret.error, SUCCESS);
        present |= ((ret.value != 0) as u64) << eid;
    }
    observe!("present", present);
    Ok(())
}

fn base_unknown_function() -> TestResult {
    check_eq!(call(base::EID_BASE, 99, &[]).error, NOT_SUPPORTED);
    Ok(())
}

fn unknown_extension_clears_a1() -> TestResult {
    let ret = call(0x0bad_0e1d, 0, &[0, 0x1234]);
    check_eq!(ret, Ret { error: NOT_SUPPORTED, value: 0 });
    Ok(())
}

fn machine_ids() -> TestResult {
    // The guest sees the real machine's identity.
    for (fid, key) in [(base::GET_MVENDORID, 0), (base::GET_MARCHID, 1), (base::GET_MIMPID, 2)] {
        let ret = call(base::EID_BASE, fid, &[]);
        check_eq!(ret.error, SUCCESS);
        match key {
            0 => observe!("mvendorid", ret.value),
            1 => observe!("marchid", ret.value),
            _ => observe!("mimpid", ret.value),
        }
    }
    Ok(())
}

fn set_timer_succeeds() -> TestResult {
    check_eq!(call(time::EID_TIME, time::SET_TIMER, &[usize::MAX]).error, SUCCESS);
    check_eq!(call(time::EID_TIME, 1, &[]).error, NOT_SUPPORTED);
    Ok(())
}

fn ipi_bad_hart_base() -> TestResult {
    check_eq!(call(spi::EID_SPI, spi::SEND_IPI, &[1, 4096]).error, INVALID_PARAM);
    check_eq!(csr_read!("sip") & 2, 0);
    Ok(())
}

fn rfence_to_self() -> TestResult {
    let h = hartid();
    check_eq!(call(rfnc::EID_RFNC, rfnc::REMOTE_FENCE_I, &[1, h]).error, SUCCESS);
    check_eq!(call(rfnc::EID_RFNC, rfnc::REMOTE_SFENCE_VMA, &[1, h, 0, 0]).error, SUCCESS);
    check_eq!(
        call(rfnc::EID_RFNC, rfnc::REMOTE_SFENCE_VMA, &[1, h, 0x8000_0000, 0x1000]).error,
        SUCCESS
    );
    check_eq!(
        call(rfnc::EID_RFNC, rfnc::REMOTE_SFENCE_VMA_ASID, &[1, h, 0, usize::MAX, 1]).error,
        SUCCESS
    );
    check_eq!(call(rfnc::EID_RFNC, rfnc::REMOTE_FENCE_I, &[1, 4096]).error, INVALID_PARAM);
    Ok(())
}

fn rfence_hfence_not_supported() -> TestResult {
    // The hart has no H extension.
    for fid in [
        rfnc::REMOTE_HFENCE_GVMA_VMID,
        rfnc::REMOTE_HFENCE_GVMA,
        rfnc::REMOTE_HFENCE_VVMA_ASID,
        rfnc::REMOTE_HFENCE_VVMA,
    ] {
        check_eq!(call(rfnc::EID_RFNC, fid, &[1, hartid(), 0, 0, 0]).error, NOT_SUPPORTED);
    }
    Ok(())
}

fn hsm_status_of_self() -> TestResult {
    check_eq!(call(hsm::EID_HSM, hsm::HART_GET_STATUS, &[hartid()]), Ret { error: 0, value: 0 });
    Ok(())
}

fn hsm_status_of_bad_hart() -> TestResult {
    check_eq!(call(hsm::EID_HSM, hsm::HART_GET_STATUS, &[4096]).error, INVALID_PARAM);
    Ok(())
}

fn hsm_start_self() -> TestResult {
    let entry = crate::arch_wfi as *const () as usize;
    check_eq!(call(hsm::EID_HSM, hsm::HART_START, &[hartid(), entry, 0]).error, ALREADY_AVAILABLE);
    Ok(())
}

fn hsm_start_bad_hart() -> TestResult {
    let entry = crate::arch_wfi as *const () as usize;
    check_eq!(call(hsm::EID_HSM, hsm::HART_START, &[4096, entry, 0]).error, INVALID_PARAM);
    Ok(())
}

fn hsm_suspend_reserved_type() -> TestResult {
    for kind in [1usize, 0x0FFF_FFFF, 0x8000_0001, 0x8FFF_FFFF] {
        check_eq!(call(hsm::EID_HSM, hsm::HART_SUSPEND, &[kind, 0, 0]).error, INVALID_PARAM);
    }
    Ok(())
}

fn hsm_suspend_retentive() -> TestResult {
    // With the timer enabled in sie (SIE clear), a retentive suspend returns once it fires.
    // SAFETY: SIE stays clear, so the timer only ends the suspend.
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) 1u64 << 5) };
    let deadline = timer::now() + timer::ticks_from_us(2_000);
    timer::arm(deadline);
    let ret = call(hsm::EID_HSM, hsm::HART_SUSPEND, &[0, 0, 0]);
    check_eq!(ret.error, SUCCESS);
    check!(timer::now() >= deadline, "suspend returned before the timer");
    Ok(())
}

fn srst_bad_arguments() -> TestResult {
    // None of these may reset anything.
    for (kind, reason) in
        [(3usize, 0usize), (0xF000_0000, 0), (0, 2), (0, 0xE000_0000), (1 << 32, 0), (0, 1 << 32)]
    {
        check_eq!(call(srst::EID_SRST, srst::SYSTEM_RESET, &[kind, reason]).error, INVALID_PARAM);
    }
    check_eq!(call(srst::EID_SRST, 1, &[]).error, NOT_SUPPORTED);
    Ok(())
}

fn legacy_putchar_keeps_a1() -> TestResult {
    // Legacy calls return only a0; a1 keeps what the caller had there.
    let ret = call(1, 0, &[b'\n' as usize, 0x5a5a]);
    check_eq!(ret, Ret { error: 0, value: 0x5a5a });
    Ok(())
}

fn legacy_getchar_without_input() -> TestResult {
    check_eq!(call(2, 0, &[]).error, -1);
    Ok(())
}

fn legacy_ipi_bad_pointer() -> TestResult {
    // The firmware reads the mask through the caller's translation; a fault there is
    // redirected to the caller as if its own load had faulted.
    let nowhere = 0x1_0000_0000usize;
    let trap = catch(|| call(4, 0, &[nowhere])).expect_err("the mask read faults");
    check_eq!((trap.scause, trap.stval), (5, nowhere as u64));
    Ok(())
}

fn dbcn() -> bool {
    sbi_rt::probe_extension(sbi_rt::Console).is_available()
}

fn dbcn_write() -> TestResult {
    if !dbcn() {
        skip!("no DBCN (an SBI v2.0 extension)");
    }
    let text = b"# dbcn says hello\n";
    let ret = call(dbcn::EID_DBCN, dbcn::CONSOLE_WRITE, &[text.len(), text.as_ptr() as usize, 0]);
    check_eq!(ret, Ret { error: 0, value: text.len() });
    check_eq!(call(dbcn::EID_DBCN, dbcn::CONSOLE_WRITE_BYTE, &[b'\n' as usize]).error, SUCCESS);
    Ok(())
}

/// OpenSBI's implementation ID.
const OPENSBI: usize = 1;

fn dbcn_write_bad_address() -> TestResult {
    if !dbcn() {
        skip!("no DBCN (an SBI v2.0 extension)");
    }
    // OpenSBI up to 1.5 accepts any address its domain allows (all of memory, for the
    // root domain), reads it in M-mode and hangs on the access fault.
    let (imp, version) = (sbi_rt::get_sbi_impl_id(), sbi_rt::get_sbi_impl_version());
    if imp == OPENSBI && version <= 1 << 16 | 5 {
        skip!(
            "OpenSBI {}.{} hangs on a DBCN buffer where nothing is",
            version >> 16,
            version & 0xffff
        );
    }
    check_eq!(
        call(dbcn::EID_DBCN, dbcn::CONSOLE_WRITE, &[8, 0x1_0000_0000, 0]).error,
        INVALID_PARAM
    );
    check_eq!(call(dbcn::EID_DBCN, dbcn::CONSOLE_WRITE, &[8, 0x8020_0000, 1]).error, INVALID_PARAM);
    Ok(())
}

fn dbcn_read_without_input() -> TestResult {
    if !dbcn() {
        skip!("no DBCN (an SBI v2.0 extension)");
    }
    let mut buf = [0u8; 8];
    let ret = call(dbcn::EID_DBCN, dbcn::CONSOLE_READ, &[buf.len(), buf.as_mut_ptr() as usize, 0]);
    check_eq!(ret, Ret { error: 0, value: 0 });
    Ok(())
}

fn garbage_calls() -> TestResult {
    // Thousands of calls with random arguments to every extension, leaving out only what
    // would end the test (reset, stop, suspend) or write to the console. Each must return
    // a defined SBI error code.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    let eids = [
        base::EID_BASE,
        time::EID_TIME,
        spi::EID_SPI,
        rfnc::EID_RFNC,
        hsm::EID_HSM,
        0x0bad,
        0x10_0000,
    ];
    let mut calls = 0;
    for _ in 0..2000 {
        let eid = eids[next() % eids.len()];
        let fid = next() % 8;
        if eid == hsm::EID_HSM && (fid == hsm::HART_STOP || fid == hsm::HART_SUSPEND) {
            continue;
        }
        let ret = call(eid, fid, &[next(), next(), next(), next(), next(), next()]);
        check!((-13..=0).contains(&ret.error), "eid {eid:#x} fid {fid}: error {}", ret.error);
        calls += 1;
    }
    timer::disarm();
    csr_write!("sip", 0);
    check!(calls > 1000);
    Ok(())
}
