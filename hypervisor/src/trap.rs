//! What hypocaust does with traps taken while it runs itself.

use rv::trap::Cause;

use crate::arch::trap::HostTrapFrame;

/// Called by the trap vector for a trap taken in hypocaust (not in a guest). Nothing in
/// hypocaust expects to fault, so an exception here is a bug: report it fully and stop.
pub extern "C" fn host_trap(frame: &mut HostTrapFrame) {
    let cause = Cause::from_scause(frame.scause);
    let out_of_line = || {
        let harts = crate::mm::exec_frames();
        crate::arch::exec::fixup(frame.sepc, crate::layout::exec_page(0), harts)
    };
    if let Some(resume) = crate::arch::trap::fixup(frame.sepc).or_else(out_of_line) {
        frame.sepc = resume;
        return;
    }
    panic!(
        "unexpected trap in hypocaust: {cause:?} (scause {:#x}) at sepc {:#x}, stval {:#x}, sp {:#x}, ra {:#x}",
        frame.scause, frame.sepc, frame.stval, frame.regs[2], frame.regs[1]
    );
}
