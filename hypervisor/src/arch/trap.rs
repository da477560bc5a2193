//! The trap vector. `stvec` points here on every hart for as long as hypocaust runs.
//!
//! `sscratch` is zero while hypocaust itself runs; a trap then saves the interrupted
//! context on the current stack and calls [`crate::trap::host_trap`].

use core::arch::global_asm;

/// Registers of an interrupted hypocaust context, in the order the vector saves them.
#[repr(C)]
#[derive(Debug, Default)]
pub struct HostTrapFrame {
    /// x0..x31 (x0 slot unused; x2 is the interrupted `sp`).
    pub regs: [u64; 32],
    pub sepc: u64,
    pub sstatus: u64,
    pub scause: u64,
    pub stval: u64,
}

const FRAME_SIZE: usize = core::mem::size_of::<HostTrapFrame>();

global_asm!(
    r#"
    .section .text
    .p2align 2
    .globl trap_vector
trap_vector:
    csrrw   sp, sscratch, sp
    bnez    sp, .Lfrom_guest
    csrrw   sp, sscratch, sp
    addi    sp, sp, -{FRAME_SIZE}
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n*8(sp)
    .endr
    addi    t0, sp, {FRAME_SIZE}
    sd      t0, 2*8(sp)
    csrr    t0, sepc
    sd      t0, 32*8(sp)
    csrr    t0, sstatus
    sd      t0, 33*8(sp)
    csrr    t0, scause
    sd      t0, 34*8(sp)
    csrr    t0, stval
    sd      t0, 35*8(sp)
    mv      a0, sp
    call    {host_trap}
    ld      t0, 32*8(sp)
    csrw    sepc, t0
    ld      t0, 33*8(sp)
    csrw    sstatus, t0
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n*8(sp)
    .endr
    ld      sp, 2*8(sp)
    sret

.Lfrom_guest:
    /* No guest runs yet: a non-zero sscratch is a hypocaust bug; report it as a host trap. */
    csrrw   sp, sscratch, sp
    csrw    sscratch, zero
    j       trap_vector
"#,
    FRAME_SIZE = const FRAME_SIZE,
    host_trap = sym crate::trap::host_trap,
);

unsafe extern "C" {
    fn trap_vector();
}

/// Points `stvec` at the trap vector (direct mode) and clears `sscratch`.
pub fn install() {
    // SAFETY: the vector is a valid, 4-byte aligned trap handler for this hart.
    unsafe {
        core::arch::asm!(
            "csrw sscratch, zero",
            "csrw stvec, {0}",
            in(reg) trap_vector as *const () as usize,
        );
    }
}
