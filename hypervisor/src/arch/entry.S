/*
 * Entry points. Firmware enters `_start` on the boot hart and, through SBI HSM,
 * `_secondary_start` on every other hart: a0 = hartid, a1 = argument, paging off, running
 * at the physical address. Both turn on the early page table (the direct map and an
 * identity map, each one 512 GiB leaf at VPN[3] slots 256 and 0) and jump into the direct
 * map, where all Rust code is linked.
 */
    .section .text.entry, "ax", @progbits
    .globl _start
_start:
    csrw    sie, zero
    /* tp is hypocaust's per-hart pointer, zero until the hart is set up; firmware may leave
       its own there (OpenSBI: its scratch area, which S-mode cannot read). */
    mv      tp, zero
    /* .bss is not part of the loaded image: clear it. */
    lla     t0, __bss_start
    lla     t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    lla     t0, boot_root_table
    li      t1, {EARLY_LEAF}
    sd      t1, 0(t0)
    li      t2, 256 * 8
    add     t2, t2, t0
    sd      t1, 0(t2)
    srli    t1, t0, 12
    li      t2, {SATP_SV48}
    or      t1, t1, t2
    sfence.vma
    csrw    satp, t1
    csrr    t2, satp
    /* satp is WARL: a hart without Sv48 keeps its old value. */
    bne     t1, t2, .Lno_sv48
    sfence.vma
    li      t0, {VIRT_OFFSET}
    lla     sp, boot_stack_top
    add     sp, sp, t0
    ld      t1, .Lrust_boot
    jr      t1

.Lno_sv48:
    lla     a0, .Lno_sv48_msg
    jal     early_puts
    j       early_shutdown

    .globl _secondary_start
_secondary_start:
    csrw    sie, zero
    mv      tp, zero
    /* a1 = physical address of this hart's HartBoot (early_satp, kernel_satp, stack_top).
       Turn on the early table, continue in the direct map, then switch to the kernel table,
       which maps this hart's stack. */
    ld      t0, 0(a1)
    sfence.vma
    csrw    satp, t0
    sfence.vma
    li      t0, {VIRT_OFFSET}
    add     a1, a1, t0
    ld      t1, .Lsecondary_high
    jr      t1
.Lsecondary_in_direct_map:
    ld      t0, 8(a1)
    csrw    satp, t0
    sfence.vma
    ld      sp, 16(a1)
    ld      t1, .Lrust_secondary
    jr      t1

/* Prints the NUL-terminated string at a0 through SBI DBCN, else the legacy console. */
early_puts:
    mv      t3, a0
1:  lbu     t4, 0(t3)
    beqz    t4, 3f
    mv      a0, t4
    li      a6, 2
    li      a7, 0x4442434E
    ecall
    beqz    a0, 2f
    mv      a0, t4
    li      a7, 1
    ecall
2:  addi    t3, t3, 1
    j       1b
3:  ret

/* System reset (shutdown, system failure) through SRST, else legacy shutdown. */
early_shutdown:
    li      a0, 0
    li      a1, 1
    li      a6, 0
    li      a7, 0x53525354
    ecall
    li      a7, 8
    ecall
1:  wfi
    j       1b

    .p2align 3
.Lrust_boot:
    .dword  {rust_boot}
.Lrust_secondary:
    .dword  {rust_secondary}
.Lsecondary_high:
    .dword  .Lsecondary_in_direct_map

    .section .rodata
.Lno_sv48_msg:
    .asciz "hypocaust: cannot run on this platform: the boot hart has no Sv48 paging (satp refused mode Sv48); hypocaust needs an Sv48 or Sv57 MMU\r\n"

    .section .bss.pagetable, "aw", @nobits
    .p2align 12
    .globl boot_root_table
boot_root_table:
    .space 4096

    .section .bss.boot_stack, "aw", @nobits
    .p2align 12
boot_stack:
    .space {BOOT_STACK_SIZE}
boot_stack_top:
