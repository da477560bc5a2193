//! Synchronous exceptions: the CSRs a trap leaves behind.

use core::arch::global_asm;

use rv::trap::{Cause, Exception};

use crate::harness::{Test, TestResult};
use crate::trap::{catch, run_user};
use crate::{check, check_eq, observe, test};

pub const TESTS: &[Test] = &[
    test!("trap/ecall-from-u", ecall_from_u),
    test!("trap/illegal-in-s", illegal_in_s),
    test!("trap/illegal-csr-from-u", illegal_csr_from_u),
    test!("trap/sret-from-u", sret_from_u),
    test!("trap/ebreak-in-s", ebreak_in_s),
];

// Small U-mode routines, with labels on the instructions that trap.
global_asm!(
    r#"
    .section .text
    .globl user_ecall, user_ecall_at
user_ecall:
    li      a7, 0x1234
    addi    a1, a0, 1
user_ecall_at:
    ecall
    j       user_ecall_at

    .globl user_read_sstatus, user_read_sstatus_at
user_read_sstatus:
user_read_sstatus_at:
    csrr    a0, sstatus
    j       user_read_sstatus_at

    .globl user_sret, user_sret_at
user_sret:
user_sret_at:
    sret
    j       user_sret_at

    .globl s_illegal_at
s_illegal_at:
    .word   0xc0001073              /* csrw cycle, zero: a write to a read-only CSR */
    ret

    .globl s_ebreak_at
s_ebreak_at:
    .option push
    .option norvc
    ebreak
    .option pop
    ret
"#
);

unsafe extern "C" {
    fn user_ecall(arg: u64) -> !;
    fn user_ecall_at();
    fn user_read_sstatus(arg: u64) -> !;
    fn user_read_sstatus_at();
    fn user_sret(arg: u64) -> !;
    fn user_sret_at();
    fn s_illegal_at();
    fn s_ebreak_at();
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as usize as u64
}

fn ecall_from_u() -> TestResult {
    let trap = run_user(user_ecall, 41);
    check_eq!(trap.cause(), Cause::Exception(Exception::EcallFromU));
    check_eq!(trap.sepc, addr(user_ecall_at));
    check_eq!(trap.stval, 0);
    check!(
        trap.came_from_user(),
        "SPP must be U after a trap from U-mode"
    );
    check_eq!(trap.args[7], 0x1234); // a7
    check_eq!(trap.args[1], 42); // a1 = a0 + 1
    Ok(())
}

fn illegal_in_s() -> TestResult {
    // SAFETY: the routine raises an illegal-instruction exception, which `catch` takes.
    let trap = catch(|| unsafe { s_illegal_at() }).expect_err("writing cycle must trap");
    check_eq!(
        trap.cause(),
        Cause::Exception(Exception::IllegalInstruction)
    );
    check_eq!(trap.sepc, addr(s_illegal_at));
    check!(!trap.came_from_user());
    // stval is either 0 or the instruction bits.
    check!(
        trap.stval == 0 || trap.stval == 0xc000_1073,
        "stval {:#x}",
        trap.stval
    );
    observe!("stval", trap.stval);
    Ok(())
}

fn illegal_csr_from_u() -> TestResult {
    let trap = run_user(user_read_sstatus, 0);
    check_eq!(
        trap.cause(),
        Cause::Exception(Exception::IllegalInstruction)
    );
    check_eq!(trap.sepc, addr(user_read_sstatus_at));
    check!(trap.came_from_user());
    check!(
        trap.stval == 0 || trap.stval == 0x1000_2573,
        "stval {:#x}",
        trap.stval
    );
    observe!("stval", trap.stval);
    Ok(())
}

fn sret_from_u() -> TestResult {
    let trap = run_user(user_sret, 0);
    check_eq!(
        trap.cause(),
        Cause::Exception(Exception::IllegalInstruction)
    );
    check_eq!(trap.sepc, addr(user_sret_at));
    check!(
        trap.stval == 0 || trap.stval == 0x1020_0073,
        "stval {:#x}",
        trap.stval
    );
    observe!("stval", trap.stval);
    Ok(())
}

fn ebreak_in_s() -> TestResult {
    // SAFETY: the routine raises a breakpoint exception, which `catch` takes.
    let trap = catch(|| unsafe { s_ebreak_at() }).expect_err("ebreak must trap");
    check_eq!(trap.cause(), Cause::Exception(Exception::Breakpoint));
    check_eq!(trap.sepc, addr(s_ebreak_at));
    // stval is 0 or the address of the ebreak.
    check!(
        trap.stval == 0 || trap.stval == trap.sepc,
        "stval {:#x}",
        trap.stval
    );
    observe!("stval_is_pc", (trap.stval == trap.sepc) as u64);
    Ok(())
}
