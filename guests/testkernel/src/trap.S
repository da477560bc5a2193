/*
 * The trap vector. sscratch is 0 while the kernel runs and holds the kernel stack pointer
 * while U-mode code runs.
 */
    .section .text
    .p2align 2
    .globl trap_entry
trap_entry:
    csrrw   sp, sscratch, sp
    bnez    sp, 1f
    csrr    sp, sscratch            /* from S-mode: back to the interrupted stack */
1:  addi    sp, sp, -{FRAME_SIZE}
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n*8(sp)
    .endr
    csrr    t0, sscratch            /* the interrupted sp */
    sd      t0, 2*8(sp)
    csrw    sscratch, zero
    csrr    t0, sepc
    sd      t0, 32*8(sp)
    csrr    t0, sstatus
    sd      t0, 33*8(sp)
    csrr    t0, scause
    sd      t0, 34*8(sp)
    csrr    t0, stval
    sd      t0, 35*8(sp)
    mv      a0, sp
    call    {trap_handler}
    ld      t0, 32*8(sp)
    csrw    sepc, t0
    ld      t0, 33*8(sp)
    csrw    sstatus, t0
    andi    t0, t0, 0x100           /* SPP */
    bnez    t0, 2f
    addi    t0, sp, {FRAME_SIZE}    /* back to U-mode: traps come to this stack again */
    csrw    sscratch, t0
2:  .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n*8(sp)
    .endr
    ld      sp, 2*8(sp)
    sret

/*
 * usize try_run(JumpBuf *buf, void (*f)(void *), void *arg)
 * Calls f(arg) and returns 0, or 1 if the trap handler unwound to `try_run_resume`.
 */
    .globl try_run
try_run:
    sd      ra, 0(a0)
    sd      sp, 8(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    sd      s\n, (16 + \n*8)(a0)
    .endr
    addi    sp, sp, -16
    sd      ra, 0(sp)
    mv      t0, a1
    mv      a0, a2
    jalr    t0
    ld      ra, 0(sp)
    addi    sp, sp, 16
    li      a0, 0
    ret

/* Entered by `sret` from the trap handler with a0 = the JumpBuf. */
    .globl try_run_resume
try_run_resume:
    ld      ra, 0(a0)
    ld      sp, 8(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    ld      s\n, (16 + \n*8)(a0)
    .endr
    li      a0, 1
    ret

/*
 * enter_user(entry, arg, user_sp): runs `entry(arg)` in U-mode on `user_sp`. sstatus.SPP
 * must be clear. Returns only through a trap that unwinds to a try_run.
 */
    .globl enter_user
enter_user:
    csrw    sepc, a0
    csrw    sscratch, sp
    mv      a0, a1
    mv      sp, a2
    sret

/*
 * A vectored trap table for stvec MODE = 1: entry i stores i in `vector_hit` and joins
 * trap_entry. (It briefly uses the 16 bytes below the interrupted sp.)
 */
    .p2align 8
    .globl vector_table
vector_table:
    .option push
    .option norvc                   # entries are 4 bytes apart
    .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    j       vector_stub_\i
    .endr
    .option pop
    .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
vector_stub_\i:
    sd      t0, -8(sp)
    sd      t1, -16(sp)
    lla     t0, vector_hit
    li      t1, \i
    sd      t1, 0(t0)
    ld      t1, -16(sp)
    ld      t0, -8(sp)
    j       trap_entry
    .endr

    .section .data
    .p2align 3
    .globl vector_hit
vector_hit:
    .dword  -1
