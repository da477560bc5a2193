/*
 * Entry points. Firmware enters `_start` on the boot hart and, through SBI HSM,
 * `_secondary_start` on every other hart: a0 = hartid, a1 = argument, paging off, running
 * at the physical address. The image is position-independent (linked at LINK_BASE): the
 * boot hart picks the host paging mode, applies the image's relocations for the direct map
 * of that mode (virtual = physical + its offset), turns on the early page table (an
 * identity map and the direct map, each one huge leaf, at root slots 0 and 256: the same
 * entries serve Sv48 and Sv57) and jumps into the direct map. Secondary harts read the
 * offset and tables from their HartBoot block.
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
    srli    s3, t0, 12
    sfence.vma
.if {PROBE_SV57}
    /* The widest mode first: satp is WARL, a hart without the mode keeps its old value. */
    li      t2, {SATP_SV57}
    or      t1, s3, t2
    csrw    satp, t1
    csrr    t2, satp
    li      s2, {VIRT_OFFSET_SV57}
    li      s4, 10
    beq     t1, t2, .Lpaging_on
.endif
    li      t2, {SATP_SV48}
    or      t1, s3, t2
    csrw    satp, t1
    csrr    t2, satp
    li      s2, {VIRT_OFFSET_SV48}
    li      s4, 9
    beq     t1, t2, .Lpaging_on
    /* Sv39: 1 GiB leaves. The direct map's first SV39_MAPPED_GIB GiB in the window's slots,
       and the identity map of the GiB the image is in. */
    lla     t0, boot_root_table
    li      t3, {SV39_FIRST_SLOT} * 8
    add     t3, t3, t0
    li      t4, 0
    li      t5, {SV39_MAPPED_GIB}
1:  slli    t1, t4, 28
    ori     t1, t1, {EARLY_LEAF}
    sd      t1, 0(t3)
    addi    t3, t3, 8
    addi    t4, t4, 1
    bltu    t4, t5, 1b
    lla     t4, _start
    srli    t4, t4, 30
    slli    t1, t4, 28
    ori     t1, t1, {EARLY_LEAF}
    slli    t4, t4, 3
    add     t4, t4, t0
    sd      t1, 0(t4)
    li      t2, {SATP_SV39}
    or      t1, s3, t2
    csrw    satp, t1
    csrr    t2, satp
    li      s2, {VIRT_OFFSET_SV39}
    li      s4, 8
    bne     t1, t2, .Lno_paging
.Lpaging_on:
    sfence.vma
    /* Relocate the image for the direct map (the identity map is on): every entry is
       R_RISCV_RELATIVE, (offset, 3, addend) with offset and addend link-time addresses. */
    lla     t0, __image_start
    li      t1, {LINK_BASE}
    /* t4: load bias (where it is minus where it was linked); t3: the same in the direct map */
    sub     t4, t0, t1
    add     t3, t4, s2
    lla     t5, __rela_start
    lla     t6, __rela_end
1:  bgeu    t5, t6, 2f
    ld      t1, 8(t5)
    li      t2, 3
    bne     t1, t2, .Lbad_reloc
    ld      t1, 0(t5)
    add     t1, t1, t4
    ld      t2, 16(t5)
    add     t2, t2, t3
    sd      t2, 0(t1)
    addi    t5, t5, 24
    j       1b
2:  fence.i
    lla     sp, boot_stack_top
    add     sp, sp, s2
    mv      a2, s4
    lla     t1, {rust_boot}
    add     t1, t1, s2
    jr      t1

.Lno_paging:
    lla     a0, .Lno_paging_msg
    jal     early_puts
    j       early_shutdown

.Lbad_reloc:
    csrw    satp, zero
    sfence.vma
    lla     a0, .Lbad_reloc_msg
    jal     early_puts
    j       early_shutdown

    .globl _secondary_start
_secondary_start:
    csrw    sie, zero
    mv      tp, zero
    /* a1 = physical address of this hart's HartBoot (early_satp, kernel_satp, stack_top,
       local, virt_offset). Turn on the early table, continue in the direct map, then switch
       to the kernel table, which maps this hart's stack. */
    ld      t0, 0(a1)
    ld      t2, 32(a1)
    sfence.vma
    csrw    satp, t0
    sfence.vma
    add     a1, a1, t2
    lla     t1, .Lsecondary_in_direct_map
    add     t1, t1, t2
    jr      t1
.Lsecondary_in_direct_map:
    ld      t0, 8(a1)
    csrw    satp, t0
    sfence.vma
    ld      sp, 16(a1)
    lla     t1, {rust_secondary}
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

    .section .rodata
.Lbad_reloc_msg:
    .asciz "hypocaust: cannot start: its image has a relocation other than R_RISCV_RELATIVE (a build problem)\r\n"
.Lno_paging_msg:
    .asciz "hypocaust: cannot run on this platform: the boot hart has no paging (satp refused Sv57, Sv48 and Sv39); hypocaust needs an MMU\r\n"

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
