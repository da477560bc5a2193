/*
 * Reset entry. QEMU's reset vector starts every hart here at once with a0 = mhartid,
 * a1 = the device tree, a2 = fw_dynamic_info. One hart wins the boot lottery, clears .bss
 * and boots the payload; the others wait until .bss is clear, then wait to be started
 * (SBI HSM). Harts beyond MAX_HARTS never leave the park loop.
 */
    .section .text.entry
    .globl _start
_start:
    csrw    mie, zero
    la      t0, park
    csrw    mtvec, t0
    li      t0, {MAX_HARTS}
    bgeu    a0, t0, park

    la      t0, boot_lottery
    li      t1, 1
    .option push
    .option arch, +a
    amoswap.w t1, t1, (t0)
    .option pop
    bnez    t1, 3f

    /* The boot hart: clear .bss, then let the others in. */
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  fence   rw, rw
    la      t0, bss_ready
    li      t1, 1
    sw      t1, 0(t0)
    call    set_stack
    tail    {boot_main}

3:  la      t0, bss_ready
4:  lw      t1, 0(t0)
    beqz    t1, 4b
    fence   r, rw
    call    set_stack
    tail    {hart_main}

/* sp = mscratch = the top of hart a0's stack. Keeps a0..a2. */
set_stack:
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t0, t1, {STACK_SHIFT}
    add     sp, sp, t0
    csrw    mscratch, sp
    ret

    .p2align 2
park:
    wfi
    j       park

    .section .data
    .p2align 2
boot_lottery:
    .word   0
bss_ready:
    .word   0

    .section .bss.stacks
    .p2align 12
    .globl __stacks_start
__stacks_start:
    .space  {MAX_HARTS} << {STACK_SHIFT}
