/* The Linux RISC-V Image header (Documentation/arch/riscv/boot-image-header.rst). */
    .section .text.head, "ax", @progbits
    .option push
    .option norvc
    .globl _start
_start:
    j       _start_kernel           /* code0 */
    .word   0                       /* code1 */
    .dword  0x200000                /* text_offset */
    .dword  __image_size            /* image_size: memory the image needs, bss included */
    .dword  0                       /* flags: little endian */
    .word   2                       /* version 0.2 */
    .word   0                       /* res1 */
    .dword  0                       /* res2 */
    .ascii  "RISCV\0\0\0"           /* magic (deprecated) */
    .ascii  "RSC\x05"               /* magic2 */
    .word   0                       /* res3 */
    .option pop

_start_kernel:
    /* a0 = hartid, a1 = device tree. Paging is off (satp = 0). */
    csrw    sie, zero
    csrw    sscratch, zero
    lla     t0, __bss_start
    lla     t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  lla     sp, boot_stack_top
    lla     t0, trap_entry
    csrw    stvec, t0
    call    {kernel_main}
3:  wfi
    j       3b

    .section .bss.stack, "aw", @nobits
    .p2align 12
boot_stack:
    .space  {STACK_SIZE}
boot_stack_top:
