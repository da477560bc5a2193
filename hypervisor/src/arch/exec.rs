//! Running one guest instruction out of line, in S-mode on the guest's live state: what
//! hypocaust does for an instruction of guest code at a window address that it does not
//! interpret and that the hart would run in U-mode without trapping (FP computation, the
//! Zb* integer instructions, accesses to `fcsr` and the counters; `vcpu::window`).
//!
//! The caller gives the instruction with its integer register fields renamed to `t0`
//! (rs1), `t1` (rs2) and `t2` (rd); its FP registers are the guest's own, live in the hart
//! (`fp.rs`). The instruction and a `ret` go into the hart's own page, written through the
//! direct map and mapped read-execute at `layout::exec_page`; `fence.i` orders the two.
//! If the instruction traps (an illegal instruction: a rounding mode or an extension the
//! hart lacks), the trap handler resumes at the second exit of the routine ([`fixup`]).

use core::arch::{asm, global_asm};

use rv::{HostVirtAddr, PAGE_SIZE};

global_asm!(
    r#"
    .section .text
    .balign 4
    .globl exec_out_of_line, exec_out_of_line_resume
// a0 = the code, a1 -> t0, a2 -> t1; returns a0 = 1 and a1 = t2, or a0 = 0 if it trapped.
exec_out_of_line:
    addi    sp, sp, -16
    sd      ra, 0(sp)
    mv      t0, a1
    mv      t1, a2
    jalr    ra, 0(a0)
    mv      a1, t2
    li      a0, 1
    ld      ra, 0(sp)
    addi    sp, sp, 16
    ret
exec_out_of_line_resume:
    li      a0, 0
    li      a1, 0
    ld      ra, 0(sp)
    addi    sp, sp, 16
    ret
"#
);

#[repr(C)]
struct Outcome {
    ran: u64,
    t2: u64,
}

unsafe extern "C" {
    fn exec_out_of_line(code: u64, t0: u64, t1: u64) -> Outcome;
    fn exec_out_of_line_resume();
}

/// `jalr x0, 0(ra)`.
const RET: u32 = 0x0000_8067;
/// `sstatus.FS` = Dirty: FP instructions allowed, and the state counted as changed.
const FS_DIRTY: u64 = 3 << 13;

/// Runs `insn` (registers renamed as above) with `t0 = a`, `t1 = b` from the page mapped
/// at `code`, whose frame the direct map shows at `alias`: `t2` afterwards, or `None` if
/// it trapped.
pub fn run(code: u64, alias: HostVirtAddr, insn: u32, a: u64, b: u64) -> Option<u64> {
    let words = alias.raw() as *mut u32;
    // SAFETY: `alias` is this hart's own out-of-line frame (no other hart writes it), two
    // words fit; `fence.i` makes them visible to this hart's fetches. FS only gates FP
    // instructions, and Dirty makes the next switch save the (guest's) FP state.
    unsafe {
        words.write_volatile(insn);
        words.add(1).write_volatile(RET);
        asm!("fence.i", "csrs sstatus, {fs}", fs = in(reg) FS_DIRTY);
    }
    // SAFETY: `code` maps that frame read-execute; the routine keeps the C ABI, and a trap
    // of the instruction resumes in it ([`fixup`]) with every register restored.
    let outcome = unsafe { exec_out_of_line(code, a, b) };
    (outcome.ran != 0).then_some(outcome.t2)
}

/// Where to resume if the instruction at `sepc` — in the out-of-line pages starting at
/// `first` for `harts` harts — trapped.
pub fn fixup(sepc: u64, first: u64, harts: usize) -> Option<u64> {
    (sepc >= first && sepc < first + harts as u64 * PAGE_SIZE)
        .then_some(exec_out_of_line_resume as *const () as u64)
}
