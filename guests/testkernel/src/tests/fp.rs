//! The FP state: sstatus.FS off, initial, clean, dirty, and FP registers kept across traps.

use rv::csr::Sstatus;

use crate::codebuf;
use crate::ecall::sbi;
use crate::harness::{Test, TestResult};
use crate::trap::catch;
use crate::{check, check_eq, observe, test};

pub const TESTS: &[Test] = &[
    test!("fp/off-traps-in-s", off_traps_in_s),
    test!("fp/off-traps-fcsr", off_traps_fcsr),
    test!("fp/off-traps-in-u", off_traps_in_u),
    test!("fp/initial-becomes-dirty", initial_becomes_dirty),
    test!("fp/clean-becomes-dirty", clean_becomes_dirty),
    test!("fp/dirty-from-u", dirty_from_u),
    test!("fp/fcsr-rw", fcsr_rw),
    test!("fp/registers-survive-traps", registers_survive_traps),
];

/// `fmv.d.x fa0, a0`.
const FMV_D_X: u32 = 0xf205_0553;
/// `fmv.x.d a0, fa0`.
const FMV_X_D: u32 = 0xe205_0553;

fn set_fs(state: u64) {
    // SAFETY: FS only gates FP instructions; the harness restores nothing else here.
    unsafe {
        core::arch::asm!("csrc sstatus, {0}", "csrs sstatus, {1}", in(reg) Sstatus::FS.bits(), in(reg) state << 13)
    };
}

fn fs() -> u64 {
    (csr_read!("sstatus") >> 13) & 3
}

fn off_traps_in_s() -> TestResult {
    set_fs(0);
    let trap = codebuf::exec(FMV_X_D, 0).expect_err("FP with FS = Off traps");
    check_eq!(trap.scause, 2);
    check_eq!(trap.sepc, codebuf::address());
    check!(trap.stval == 0 || trap.stval == FMV_X_D as u64);
    observe!("stval", trap.stval);
    Ok(())
}

fn off_traps_fcsr() -> TestResult {
    set_fs(0);
    let trap = codebuf::read_csr(0x003).expect_err("fcsr with FS = Off traps");
    check_eq!(trap.scause, 2);
    observe!("stval", trap.stval);
    Ok(())
}

fn off_traps_in_u() -> TestResult {
    set_fs(0);
    let trap = codebuf::exec_user(FMV_D_X);
    check_eq!(trap.scause, 2);
    check!(trap.came_from_user());
    observe!("stval", trap.stval);
    Ok(())
}

fn initial_becomes_dirty() -> TestResult {
    set_fs(1);
    check_eq!(fs(), 1);
    codebuf::exec(FMV_D_X, 7)
        .map_err(|t| crate::harness::Outcome::Fail(alloc::format!("trap {t:x?}")))?;
    check_eq!(fs(), 3);
    check!(csr_read!("sstatus") & Sstatus::SD.bits() != 0);
    Ok(())
}

fn clean_becomes_dirty() -> TestResult {
    set_fs(2);
    // Reading an FP register keeps Clean (a hart may also go Dirty, conservatively).
    let _ = codebuf::exec(FMV_X_D, 0);
    observe!("after_read", fs());
    set_fs(2);
    let _ = codebuf::exec(FMV_D_X, 1);
    check_eq!(fs(), 3);
    Ok(())
}

fn dirty_from_u() -> TestResult {
    set_fs(2);
    let trap = codebuf::exec_user(FMV_D_X);
    // The FP write ran and the ecall ended the run.
    check_eq!(trap.scause, 8);
    check_eq!(fs(), 3);
    Ok(())
}

fn fcsr_rw() -> TestResult {
    set_fs(1);
    for v in [0u64, 0xff, 0x1f, 0xe0] {
        csr_write!("fcsr", v);
        check_eq!(csr_read!("fcsr"), v);
    }
    csr_write!("fcsr", u64::MAX);
    observe!("all_ones", csr_read!("fcsr"));
    csr_write!("fflags", 0x1f);
    check_eq!(csr_read!("fflags"), 0x1f);
    csr_write!("frm", 3);
    check_eq!(csr_read!("frm"), 3);
    csr_write!("fcsr", 0);
    Ok(())
}

/// Writes `base + i` into every FP register fi.
fn fill(base: u64) {
    // SAFETY: FS is on (the caller set it); only FP registers change.
    unsafe {
        core::arch::asm!(
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "addi {t}, {b}, \\n",
            "fmv.d.x f\\n, {t}",
            ".endr",
            b = in(reg) base,
            t = out(reg) _,
        )
    };
}

/// Sums `fi - (base + i)` over all FP registers: 0 if they still hold what `fill` wrote.
fn check_filled(base: u64) -> u64 {
    let mut bad = 0u64;
    // SAFETY: as in `fill`; only reads FP registers.
    unsafe {
        core::arch::asm!(
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "fmv.x.d {t}, f\\n",
            "addi {u}, {b}, \\n",
            "xor {t}, {t}, {u}",
            "or {bad}, {bad}, {t}",
            ".endr",
            b = in(reg) base,
            t = out(reg) _,
            u = out(reg) _,
            bad = inout(reg) bad,
        )
    };
    bad
}

fn registers_survive_traps() -> TestResult {
    set_fs(1);
    let base = 0x4000_0000_0000_1000;
    fill(base);
    // An SBI call, a caught exception and a U-mode run: all trap out of this code.
    let _ = sbi(sbi_spec::base::EID_BASE, sbi_spec::base::GET_SBI_SPEC_VERSION, [0; 6]);
    let _ = catch(|| codebuf::exec(0x3020_0073, 0));
    let _ = codebuf::exec_user(0x0000_0013);
    check_eq!(check_filled(base), 0);
    Ok(())
}
