//! Traps into M-mode: SBI calls, machine software interrupts (work from other harts),
//! machine timer interrupts (the SBI timer without Sstc), and anything else, which either
//! belongs to S-mode (redirected as a hart would have delivered it) or is a firmware bug.

use super::arch::{self, Frame, irq, mstatus};

const INTERRUPT: usize = 1 << (usize::BITS - 1);
/// `ecall` from S-mode.
const ECALL_FROM_S: usize = 9;

pub extern "C" fn m_trap(frame: &mut Frame) {
    let cause = arch::mcause();
    let hartid = arch::mhartid();
    if cause & INTERRUPT != 0 {
        match cause & !INTERRUPT {
            3 => super::serve(hartid),
            7 => {
                // The SBI timer's deadline passed: S-mode's timer interrupt is pending
                // until the next set_timer.
                arch::set_mip(irq::STI);
                arch::clear_mie(irq::MTI);
            }
            // Nothing else is enabled; should it come anyway, it must not storm.
            code => arch::clear_mie(1 << code),
        }
        return;
    }
    let from = (arch::mstatus() & mstatus::MPP) >> mstatus::MPP_SHIFT;
    if from == 3 {
        super::halt(format_args!(
            "trap in the firmware itself: mcause {cause:#x}, mepc {:#x}, mtval {:#x}",
            arch::mepc(),
            arch::mtval()
        ));
    }
    if cause == ECALL_FROM_S {
        match super::sbi::call(hartid, frame) {
            Ok(()) => arch::write_mepc(arch::mepc() + 4),
            // A legacy call's pointer faulted: S-mode gets the fault at its ecall.
            Err((fault, tval)) => redirect_to_supervisor(fault, tval, from),
        }
    } else {
        redirect_to_supervisor(cause, arch::mtval(), from);
    }
}

/// Delivers an exception that M-mode took from S- or U-mode to S-mode, as the hart would
/// have had it been delegated (only if `medeleg` kept a bit off, or a legacy SBI call's
/// pointer faulted).
fn redirect_to_supervisor(cause: usize, tval: usize, from: usize) {
    arch::write_scause(cause);
    arch::write_stval(tval);
    arch::write_sepc(arch::mepc());
    let status = arch::mstatus();
    let mut set = mstatus::MPP & (1 << mstatus::MPP_SHIFT);
    if status & mstatus::SIE != 0 {
        set |= mstatus::SPIE;
    }
    if from == 1 {
        set |= mstatus::SPP;
    }
    arch::clear_mstatus(mstatus::MPP | mstatus::SPIE | mstatus::SPP | mstatus::SIE);
    arch::set_mstatus(set);
    arch::write_mepc(arch::stvec() & !3);
}
