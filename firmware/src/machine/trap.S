/*
 * The M-mode trap vector. mscratch holds the top of this hart's stack at all times: a
 * trap from S- or U-mode saves the interrupted registers in a frame there (x2 = the
 * interrupted sp) and calls m_trap(frame); registers come back from the frame, which the
 * handler may have changed (a0/a1 of an SBI call).
 */
    .section .text
    .p2align 2
    .globl trap_vector
trap_vector:
    csrrw   sp, mscratch, sp
    addi    sp, sp, -{FRAME_SIZE}
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n*8(sp)
    .endr
    csrr    t0, mscratch
    sd      t0, 2*8(sp)
    addi    t0, sp, {FRAME_SIZE}
    csrw    mscratch, t0
    mv      a0, sp
    call    {m_trap}
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n*8(sp)
    .endr
    ld      sp, 2*8(sp)
    mret

/*
 * enter_supervisor(entry, a0, a1) -> !: starts S-mode at `entry` with a0 and a1, SIE off,
 * satp 0, on a fresh M stack (whatever called this is abandoned). As OpenSBI does, sie and
 * sscratch are cleared and stvec points at the entry: nothing enabled before a hart stopped
 * survives its next start.
 */
    .globl enter_supervisor
enter_supervisor:
    csrw    mepc, a0
    csrw    stvec, a0
    csrw    sie, zero
    csrw    sscratch, zero
    li      t0, 0x1882          /* MPP, MPIE, SIE */
    csrc    mstatus, t0
    li      t0, 0x0800          /* MPP = S */
    csrs    mstatus, t0
    csrw    satp, zero
    sfence.vma
    mv      a0, a1
    mv      a1, a2
    csrr    sp, mscratch
    mret
