//! The trap vector and the switch into and out of guests. `stvec` points at
//! `trap_vector` on every hart for as long as hypocaust runs.
//!
//! `sscratch` tells where a trap came from: it is zero while hypocaust runs, and holds the
//! running vCPU's [`GuestContext`] while a guest runs. A trap from a guest saves the guest's
//! registers into that context and resumes hypocaust where it called [`enter_guest`]; a
//! trap from hypocaust saves a [`HostTrapFrame`] on the current stack and calls
//! [`crate::trap::host_trap`].

use core::arch::global_asm;
use core::mem::offset_of;

use rv::csr::Interrupts;
use vcpu::{Csrs, Vcpu};

use crate::paging::{CODE_PAGES, CODE_SETS, CodePage};

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

/// hypocaust's registers that must survive a guest run (the callee-saved ones, and the
/// `tp` and `gp` the guest overwrites).
#[repr(C)]
#[derive(Debug, Default)]
pub struct HostRegs {
    ra: u64,
    sp: u64,
    gp: u64,
    tp: u64,
    s: [u64; 12],
}

/// Everything the switch needs for one vCPU. `sscratch` points here while it runs.
#[repr(C)]
pub struct GuestContext {
    host: HostRegs,
    /// The address of the vCPU's code pages (`paging::VcpuMmu::code_pages`), for the
    /// fast path; 0: no fast path.
    pub code_pages: u64,
    /// Exits the fast path handled since hypocaust last took them (as illegal-instruction
    /// exits) into its counts.
    pub fast_exits: u64,
    /// Likewise, U-mode `ecall`s the fast path forwarded (counted as such exits).
    pub fast_ecalls: u64,
    /// The address of the vCPU's external interrupt line (an `AtomicBool`), for the fast
    /// path's check of pending interrupts; 0: no fast path.
    pub external: u64,
    /// The real `satp` of the shadow tree the vCPU's next change of privilege goes to (the
    /// other view of its address space: `paging::VcpuMmu::other_view_satp`), for the fast
    /// path's `sret` to U-mode and forwarded `ecall`; 0: none cached, or Bare.
    pub other_view_satp: u64,
    /// Likewise the tree of the other S-mode view (SUM flipped) while in virtual S-mode,
    /// for the fast path's `sstatus` writes that change SUM; 0: none cached, or Bare.
    pub sum_view_satp: u64,
    /// What the fast path changed that the run loop keeps track of ([`Switched`]); the run
    /// loop clears it.
    pub switched: u64,
    pub vcpu: Vcpu,
}

/// Bits of [`GuestContext::switched`].
pub struct Switched;

impl Switched {
    /// The vCPU's privilege changed (an `sret` to U-mode, a forwarded `ecall`): so did the
    /// real `scounteren` and, if paged, the real `satp` (to
    /// [`GuestContext::other_view_satp`]).
    pub const PRIVILEGE: u64 = 1;
    /// The real `sstatus.FS`/`MXR` changed with the guest's.
    pub const STATUS: u64 = 2;
    /// SUM changed and, the guest being paged, the real `satp` (to
    /// [`GuestContext::sum_view_satp`]).
    pub const VIEW: u64 = 4;
}

impl GuestContext {
    /// A context for `vcpu`.
    pub fn new(vcpu: Vcpu) -> Self {
        Self {
            host: HostRegs::default(),
            vcpu,
            code_pages: 0,
            fast_exits: 0,
            fast_ecalls: 0,
            external: 0,
            other_view_satp: 0,
            sum_view_satp: 0,
            switched: 0,
        }
    }
}

const FRAME_SIZE: usize = core::mem::size_of::<HostTrapFrame>();
/// Where the guest's x0 lives in a `GuestContext` (the `Regs` are the first field of `Vcpu`).
const GUEST_REGS: usize = offset_of!(GuestContext, vcpu) + offset_of!(Vcpu, regs);
const _: () = assert!(offset_of!(Vcpu, regs) == 0 && offset_of!(vcpu::Regs, pc) == 32 * 8);

// What the fast path reads and writes, by offset in the `GuestContext`.
const VCPU: usize = offset_of!(GuestContext, vcpu);
const PRIVILEGE: usize = VCPU + offset_of!(Vcpu, privilege);
const CSRS: usize = VCPU + offset_of!(Vcpu, csrs);
const SSTATUS: usize = CSRS + offset_of!(Csrs, sstatus);
const SATP: usize = CSRS + offset_of!(Csrs, satp);
const SIE: usize = CSRS + offset_of!(Csrs, sie);
const SIP_SOFT: usize = CSRS + offset_of!(Csrs, sip_soft);
const STIMECMP: usize = CSRS + offset_of!(Csrs, stimecmp);
const SCOUNTEREN: usize = CSRS + offset_of!(Csrs, scounteren);
const STVEC: usize = CSRS + offset_of!(Csrs, stvec);
const MIRRORED: u64 = rv::csr::Sstatus::FS.bits() | rv::csr::Sstatus::MXR.bits();
const SUM: u64 = rv::csr::Sstatus::SUM.bits();
const FS_MASK: u64 = rv::csr::Sstatus::FS.bits();
const UXL_64: u64 = 2 << rv::csr::SSTATUS_UXL_SHIFT;
const SSTATUS_WRITABLE: u64 = vcpu::csr::SSTATUS_WRITABLE.bits();
const S_INTERRUPTS: u64 = vcpu::csr::SUPERVISOR_INTERRUPTS.bits();
const _: () = assert!(S_INTERRUPTS < 2048 && SIE < 2048);
const SSCRATCH: usize = CSRS + offset_of!(Csrs, sscratch);
const SEPC: usize = CSRS + offset_of!(Csrs, sepc);
const SCAUSE: usize = CSRS + offset_of!(Csrs, scause);
const STVAL: usize = CSRS + offset_of!(Csrs, stval);
const CODE_PAGES_PTR: usize = offset_of!(GuestContext, code_pages);
const FAST_EXITS: usize = offset_of!(GuestContext, fast_exits);
const FAST_ECALLS: usize = offset_of!(GuestContext, fast_ecalls);
const EXTERNAL: usize = offset_of!(GuestContext, external);
const OTHER_VIEW_SATP: usize = offset_of!(GuestContext, other_view_satp);
const SUM_VIEW_SATP: usize = offset_of!(GuestContext, sum_view_satp);
const SWITCHED: usize = offset_of!(GuestContext, switched);
const PAGE_VA: usize = offset_of!(CodePage, va_page);
const PAGE_SATP: usize = offset_of!(CodePage, satp);
const PAGE_USER: usize = offset_of!(CodePage, user);
const PAGE_HOST: usize = offset_of!(CodePage, host);
const PAGE_GLOBAL: usize = offset_of!(CodePage, global);
const PAGE_SHIFT: usize = 6;
const _: () = assert!(core::mem::size_of::<CodePage>() == 1 << PAGE_SHIFT);
const _: () = assert!(CODE_PAGES == 2 * CODE_SETS && CODE_SETS.is_power_of_two());
const _: () = assert!(vcpu::Privilege::Supervisor as u8 == 1);
const _: () = assert!(core::mem::size_of::<vcpu::Privilege>() == 1);
// Every offset fits a load's 12-bit immediate.
const _: () = assert!(STVAL < 2048 && SATP < 2048 && SSTATUS < 2048 && PRIVILEGE < 2048);
const _: () = assert!(SSCRATCH < 2048 && SEPC < 2048 && SCAUSE < 2048);
const _: () = assert!(SIP_SOFT < 2048 && STIMECMP < 2048 && SCOUNTEREN < 2048 && STVEC < 2048);
const _: () = assert!(rv::csr::Sstatus::SIE.bits() == 2 && rv::csr::Sstatus::SPIE.bits() == 0x20);
const _: () = assert!(rv::csr::Sstatus::SPP.bits() == 0x100);
const _: () = assert!(Interrupts::SSI.bits() == 2 && Interrupts::STI.bits() == 0x20);
const _: () = assert!(Interrupts::SEI.bits() == 0x200);
const _: () = assert!(GUEST_REGS + 32 * 8 < 2048);

global_asm!(
    r#"
    .section .text
    .p2align 2
    .globl trap_vector
trap_vector:
    csrrw   sp, sscratch, sp
    beqz    sp, .Lfrom_hypocaust

    # From a guest: sp = its GuestContext, sscratch = its sp.
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, ({GUEST_REGS} + \n*8)(sp)
    .endr
    csrr    t0, sscratch
    sd      t0, ({GUEST_REGS} + 2*8)(sp)
    csrr    t0, sepc
    sd      t0, ({GUEST_REGS} + 32*8)(sp)

    # The fast path (docs/trap-path.md, "The fast path"): an instruction of virtual
    # S-mode that is one of its own — a Zicsr form on sscratch, sepc, scause, stval,
    # sstatus or sie, or `sret` — whose bits in stval are the ones in guest memory at the
    # pc (QEMU may leave stale bits there for some instructions), read through the vCPU's
    # code pages. Emulated here with the rules of vcpu::Csrs and Vcpu::sret, then straight
    # back into the guest; anything else, and an interrupt that should be taken before
    # the instruction, goes to hypocaust's run loop. s2: an instruction changed what
    # makes interrupts deliverable (look again before entering); a7: instructions
    # emulated in this exit; a6: where the last one is in hypocaust's direct map.
    ld      t0, {CODE_PAGES_PTR}(sp)
    beqz    t0, .Lslow
    csrr    t0, scause
    li      t1, 8
    beq     t0, t1, .Lecall
    li      t1, 2
    bne     t0, t1, .Lslow
    lbu     t0, {PRIVILEGE}(sp)
    li      t1, 1
    bne     t0, t1, .Lslow
    ld      t0, {SSTATUS}(sp)
    andi    t0, t0, 2
    beqz    t0, 18f
    jal     s3, .Lpending           # SIE set: an interrupt pending and enabled now comes
    bnez    a0, .Lslow              # first (the run loop takes it)
18: csrr    t2, stval
    li      a7, 0
    li      s2, 0
9:  # Is the instruction (bits t2) one of the fast path's? s4 = 1: sret.
    li      s4, 1
    li      t0, 0x10200073
    beq     t2, t0, 8f
    li      s4, 0
    andi    t0, t2, 0x7f
    li      t1, 0x73
    bne     t0, t1, .Lnot_ours
    srli    t3, t2, 12
    andi    t3, t3, 7               # funct3: 1-3 register, 5-7 immediate forms
    andi    t0, t3, 3
    beqz    t0, .Lnot_ours
    slli    t4, t2, 32
    srli    t4, t4, 52              # the CSR
    li      t0, 0x100
    beq     t4, t0, 8f              # sstatus
    li      t0, 0x104
    beq     t4, t0, 8f              # sie
    addi    t0, t4, -0x140
    li      t1, 4
    bgeu    t0, t1, .Lnot_ours      # sscratch 0x140, sepc, scause, stval 0x143
8:  bnez    a7, 17f                 # a later one of a cluster: read from memory already
    ld      t0, {CODE_PAGES_PTR}(sp)
    ld      t5, ({GUEST_REGS} + 32*8)(sp)   # the pc
    srli    t1, t5, 12
    andi    t1, t1, {CODE_SETS} - 1
    slli    t1, t1, {PAGE_SHIFT} + 1
    add     t0, t0, t1              # its set of code pages (paging::CodePage::serves)
    srli    t1, t5, 12
    slli    t1, t1, 12
    ld      a0, {SATP}(sp)
    li      a1, 2                   # entries of the set left to look at
26: ld      t6, {PAGE_VA}(t0)
    bne     t6, t1, 27f
    ld      t6, {PAGE_USER}(t0)
    bnez    t6, 27f
    ld      t6, {PAGE_SATP}(t0)
    beq     t6, a0, 28f
    ld      a2, {PAGE_GLOBAL}(t0)
    beqz    a2, 27f
    xor     t6, t6, a0
    srli    t6, t6, 60
    beqz    t6, 28f                 # global, and the same mode
27: addi    t0, t0, 1 << {PAGE_SHIFT}
    addi    a1, a1, -1
    bnez    a1, 26b
    j       .Lslow
28: ld      t6, {PAGE_HOST}(t0)
    beqz    t6, .Lslow
    slli    t1, t5, 52
    srli    t1, t1, 52              # the offset in the page
    li      t0, 0xffc
    bgtu    t1, t0, .Lslow
    add     t6, t6, t1
    lhu     t0, 0(t6)
    lhu     t1, 2(t6)
    slli    t1, t1, 16
    or      t0, t0, t1
    bne     t0, t2, .Lslow
    mv      a6, t6                  # where the instruction is
17: bnez    s4, 20f
    # Operands: t6 = the source (rs1's value, or the 5-bit immediate), t1 = its field.
    srli    t1, t2, 15
    andi    t1, t1, 31
    mv      t6, t1
    andi    t0, t3, 4
    bnez    t0, 1f
    li      t6, 0
    beqz    t1, 1f
    slli    t0, t1, 3
    add     t0, t0, sp
    ld      t6, {GUEST_REGS}(t0)
1:  # a1 = the value the instruction reads, t0 = where the CSR lives in the context.
    li      a0, 0x100
    beq     t4, a0, 10f
    li      a0, 0x104
    beq     t4, a0, 11f
    addi    t0, sp, {SSCRATCH}
    li      a0, 0x140
    beq     t4, a0, 2f
    addi    t0, sp, {SEPC}
    li      a0, 0x141
    beq     t4, a0, 2f
    addi    t0, sp, {SCAUSE}
    li      a0, 0x142
    beq     t4, a0, 2f
    addi    t0, sp, {STVAL}
2:  ld      a1, 0(t0)
    j       12f
10: # sstatus: FS first becomes Dirty if the hart's is (the guest wrote FP state), as the
    # run loop does; then the value read has UXL = 64-bit and SD.
    addi    t0, sp, {SSTATUS}
    ld      a1, 0(t0)
    csrr    a0, sstatus
    srli    a0, a0, 13
    andi    a0, a0, 3
    li      a2, 3
    bne     a0, a2, 13f
    li      a2, {FS_MASK}
    and     a0, a1, a2
    beqz    a0, 13f                 # FS Off: the hart's cannot be Dirty either
    or      a1, a1, a2
    sd      a1, 0(t0)
13: li      a2, {FS_MASK}
    and     a0, a1, a2
    bne     a0, a2, 14f             # SD: FS Dirty (VS and XS are zero)
    li      a0, 1
    slli    a0, a0, 63
    or      a1, a1, a0
14: li      a0, {UXL_64}
    or      a1, a1, a0
    j       12f
11: # sie: the supervisor interrupts only.
    addi    t0, sp, {SIE}
    ld      a1, 0(t0)
    andi    a1, a1, {S_INTERRUPTS}
12: # a2 = the value written (old op source), if the instruction writes at all.
    andi    a0, t3, 3
    li      a2, 1
    beq     a0, a2, 3f              # csrrw(i): always writes
    beqz    t1, 4f                  # csrrs/csrrc with x0 or 0: no write
    or      a2, a1, t6
    li      a3, 2
    beq     a0, a3, 5f
    not     a2, t6
    and     a2, a1, a2
    j       5f
3:  mv      a2, t6
5:  li      a3, 0x100
    beq     t4, a3, 15f
    li      a3, 0x104
    beq     t4, a3, 16f
    li      a3, 0x141
    bne     t4, a3, 6f
    andi    a2, a2, -2              # sepc: bit 0 is always zero
    j       6f
15: # sstatus: the writable bits. A change of SUM switches the shadow view (to the tree
    # the run loop found cached, else the run loop takes the instruction, nothing written).
    # FS and MXR go into the hart's sstatus as the run loop mirrors them; SIE set may make
    # an interrupt deliverable (looked at before entering).
    ld      a3, 0(t0)
    li      a4, {SSTATUS_WRITABLE}
    and     a2, a2, a4
    not     a4, a4
    and     a4, a3, a4
    or      a2, a2, a4
    xor     a4, a2, a3
    li      a5, {SUM}
    and     a5, a4, a5
    beqz    a5, 29f
    ld      t3, {SATP}(sp)          # SUM changes: onto the tree of the other S-mode view
    srli    t3, t3, 60              # (Bare: one view for all)
    beqz    t3, 29f
    ld      t3, {SUM_VIEW_SATP}(sp)
    beqz    t3, .Lslow              # none cached: the run loop makes it
    addi    t6, sp, {SUM_VIEW_SATP}
    jal     s3, .Lswitch_view
    ld      a5, {SWITCHED}(sp)
    ori     a5, a5, {SWITCHED_VIEW}
    sd      a5, {SWITCHED}(sp)
29: li      a5, {MIRRORED}
    and     a5, a4, a5
    beqz    a5, 19f
    li      a5, {MIRRORED}
    csrc    sstatus, a5
    and     a5, a2, a5
    csrs    sstatus, a5
    ld      a5, {SWITCHED}(sp)
    ori     a5, a5, {SWITCHED_STATUS}
    sd      a5, {SWITCHED}(sp)
19: andi    a4, a4, 2
    or      s2, s2, a4
    j       6f
16: # sie: the supervisor interrupts only; an enabled one may be deliverable.
    ld      a3, 0(t0)
    andi    a2, a2, {S_INTERRUPTS}
    andi    a3, a3, ~{S_INTERRUPTS}
    or      a2, a2, a3
    li      s2, 1
6:  sd      a2, 0(t0)
4:  srli    t0, t2, 7               # rd gets the value read
    andi    t0, t0, 31
    beqz    t0, 7f
    slli    t0, t0, 3
    add     t0, t0, sp
    sd      a1, {GUEST_REGS}(t0)
7:  ld      t0, ({GUEST_REGS} + 32*8)(sp)
    addi    t0, t0, 4
    sd      t0, ({GUEST_REGS} + 32*8)(sp)
    addi    a7, a7, 1
    bnez    s2, .Ldone              # it may have unmasked an interrupt: taken right after it
    addi    a6, a6, 4               # the next instruction, if in the same page
    slli    t0, a6, 52
    srli    t0, t0, 52
    li      t1, 0xffc
    bgtu    t0, t1, .Ldone
    li      t1, 16
    bgeu    a7, t1, .Ldone
    lhu     t2, 0(a6)               # the next instruction: another of the fast path's
    lhu     t1, 2(a6)               # joins this exit (a cluster such as Linux's trap
    slli    t1, t1, 16              # entry), anything else ends it
    or      t2, t2, t1
    j       9b

20: # sret (Vcpu::sret): to the privilege in SPP, SIE from SPIE, SPIE set, SPP clear, the
    # pc from sepc. To U-mode the hart takes the guest's scounteren and, if paged, the
    # shadow tree of the U-mode view — only if the run loop found one cached.
    ld      t0, {SSTATUS}(sp)
    andi    t1, t0, 0x100
    bnez    t1, 21f
    ld      t3, {SATP}(sp)
    srli    t3, t3, 60
    beqz    t3, 22f                 # Bare: one view for both
    ld      t3, {OTHER_VIEW_SATP}(sp)
    beqz    t3, .Lnot_ours
    addi    t6, sp, {OTHER_VIEW_SATP}
    jal     s3, .Lswitch_view
22: ld      t3, {SCOUNTEREN}(sp)
    slli    t3, t3, 32
    srli    t3, t3, 32
    csrw    scounteren, t3
    ld      t3, {SWITCHED}(sp)
    ori     t3, t3, {SWITCHED_PRIVILEGE}
    sd      t3, {SWITCHED}(sp)
21: srli    t3, t0, 4
    andi    t3, t3, 2               # SPIE, as SIE
    andi    t0, t0, ~0x122
    or      t0, t0, t3
    ori     t0, t0, 0x20
    sd      t0, {SSTATUS}(sp)
    srli    t1, t1, 8
    sb      t1, {PRIVILEGE}(sp)
    ld      t0, {SEPC}(sp)
    sd      t0, ({GUEST_REGS} + 32*8)(sp)
    addi    a7, a7, 1
    li      s2, 1
    j       .Ldone

.Lecall:
    # An ecall of virtual U-mode (a system call) goes to the guest's stvec as Vcpu::trap
    # does, when the tree of the S-mode view is cached (or Bare). An interrupt pending and
    # enabled in U-mode comes first: the run loop takes it.
    lbu     t0, {PRIVILEGE}(sp)
    bnez    t0, .Lslow              # virtual S-mode's ecall: an SBI call
    jal     s3, .Lpending
    bnez    a0, .Lslow
    ld      t3, {SATP}(sp)
    srli    t3, t3, 60
    beqz    t3, 1f
    ld      t3, {OTHER_VIEW_SATP}(sp)
    beqz    t3, .Lslow
    addi    t6, sp, {OTHER_VIEW_SATP}
    jal     s3, .Lswitch_view
1:  li      t3, -1
    srli    t3, t3, 32
    csrw    scounteren, t3          # S-mode: every counter firmware allows
    ld      t3, {SWITCHED}(sp)
    ori     t3, t3, {SWITCHED_PRIVILEGE}
    sd      t3, {SWITCHED}(sp)
    ld      t0, ({GUEST_REGS} + 32*8)(sp)
    sd      t0, {SEPC}(sp)
    li      t0, 8
    sd      t0, {SCAUSE}(sp)
    sd      zero, {STVAL}(sp)
    ld      t0, {SSTATUS}(sp)       # SPIE = SIE, SIE clear, SPP = U
    andi    t1, t0, 2
    slli    t1, t1, 4
    andi    t0, t0, ~0x122
    or      t0, t0, t1
    sd      t0, {SSTATUS}(sp)
    li      t0, 1
    sb      t0, {PRIVILEGE}(sp)
    ld      t0, {STVEC}(sp)         # exceptions go to the base, whatever the mode
    andi    t0, t0, -4
    sd      t0, ({GUEST_REGS} + 32*8)(sp)
    ld      t0, {FAST_ECALLS}(sp)
    addi    t0, t0, 1
    sd      t0, {FAST_ECALLS}(sp)
    mv      a0, sp
    j       .Lenter

.Lnot_ours:
    beqz    a7, .Lslow              # the trapping instruction itself: the run loop's
.Ldone:
    beqz    s2, 24f
    # Deliverable now (pending, enabled, and U-mode or SIE)? Then a real software
    # interrupt takes the guest out right after the sret, before its next instruction,
    # and the run loop delivers it.
    lbu     t0, {PRIVILEGE}(sp)
    beqz    t0, 23f
    ld      t0, {SSTATUS}(sp)
    andi    t0, t0, 2
    beqz    t0, 24f
23: jal     s3, .Lpending
    beqz    a0, 24f
    csrsi   sip, 2
24: ld      t0, {FAST_EXITS}(sp)
    addi    t0, t0, 1
    sd      t0, {FAST_EXITS}(sp)
    mv      a0, sp
    j       .Lenter

.Lswitch_view: # The hart onto the tree in t3; the one it leaves is kept at t6 as the way
    # back (the other view is then that one) unless it has no ASID (a switch to it must
    # flush).
    csrr    t4, satp
    csrw    satp, t3
    srli    t5, t4, 44
    slli    t5, t5, 48
    bnez    t5, 1f
    li      t4, 0
1:  sd      t4, 0(t6)
    jr      s3

.Lpending: # a0 = the vCPU's interrupts pending and enabled in sie now, as Csrs::sip
    ld      a0, {SIP_SOFT}(sp)      # (the mailbox's IPIs, a device's line rising and the
    andi    a0, a0, 2               # real timer for stimecmp kick the hart)
    rdtime  a1
    ld      a2, {STIMECMP}(sp)
    bltu    a1, a2, 1f
    ori     a0, a0, 0x20
1:  ld      a1, {EXTERNAL}(sp)
    beqz    a1, 2f
    lbu     a1, 0(a1)
    beqz    a1, 2f
    ori     a0, a0, 0x200
2:  ld      a1, {SIE}(sp)
    and     a0, a0, a1
    jr      s3

.Lslow:
    csrw    sscratch, zero
    ld      ra, 0(sp)
    ld      gp, 16(sp)
    ld      tp, 24(sp)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    ld      s\n, (32 + \n*8)(sp)
    .endr
    ld      sp, 8(sp)
    ret                             # from enter_guest

.Lfrom_hypocaust:
    csrrw   sp, sscratch, sp        # sp back, sscratch = 0
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

    # enter_guest(a0 = &mut GuestContext): returns when the guest traps.
    .globl enter_guest
enter_guest:
    sd      ra, 0(a0)
    sd      sp, 8(a0)
    sd      gp, 16(a0)
    sd      tp, 24(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    sd      s\n, (32 + \n*8)(a0)
    .endr
.Lenter:
    ld      t0, ({GUEST_REGS} + 32*8)(a0)
    csrw    sepc, t0
    csrw    sscratch, a0
    .irp n, 1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, ({GUEST_REGS} + \n*8)(a0)
    .endr
    ld      a0, ({GUEST_REGS} + 10*8)(a0)
    sret

    # try_write_stimecmp(a0 = value) -> 1 if written, 0 if the CSR is not accessible.
    .globl try_write_stimecmp, try_write_stimecmp_fault, try_write_stimecmp_resume
try_write_stimecmp:
try_write_stimecmp_fault:
    csrw    stimecmp, a0
    li      a0, 1
    ret
try_write_stimecmp_resume:
    li      a0, 0
    ret

    # try_read_senvcfg() -> 1 if the hart has senvcfg (privileged spec 1.12), 0 if not.
    .globl try_read_senvcfg, try_read_senvcfg_fault, try_read_senvcfg_resume
try_read_senvcfg:
try_read_senvcfg_fault:
    csrr    a0, senvcfg
    li      a0, 1
    ret
try_read_senvcfg_resume:
    li      a0, 0
    ret
"#,
    FRAME_SIZE = const FRAME_SIZE,
    GUEST_REGS = const GUEST_REGS,
    PRIVILEGE = const PRIVILEGE,
    SSTATUS = const SSTATUS,
    SATP = const SATP,
    SIE = const SIE,
    FS_MASK = const FS_MASK,
    UXL_64 = const UXL_64,
    SSTATUS_WRITABLE = const SSTATUS_WRITABLE,
    MIRRORED = const MIRRORED,
    SUM = const SUM,
    SIP_SOFT = const SIP_SOFT,
    STIMECMP = const STIMECMP,
    SCOUNTEREN = const SCOUNTEREN,
    STVEC = const STVEC,
    EXTERNAL = const EXTERNAL,
    OTHER_VIEW_SATP = const OTHER_VIEW_SATP,
    SUM_VIEW_SATP = const SUM_VIEW_SATP,
    SWITCHED = const SWITCHED,
    SWITCHED_STATUS = const Switched::STATUS,
    SWITCHED_PRIVILEGE = const Switched::PRIVILEGE,
    SWITCHED_VIEW = const Switched::VIEW,
    S_INTERRUPTS = const S_INTERRUPTS,
    SSCRATCH = const SSCRATCH,
    SEPC = const SEPC,
    SCAUSE = const SCAUSE,
    STVAL = const STVAL,
    CODE_PAGES_PTR = const CODE_PAGES_PTR,
    FAST_EXITS = const FAST_EXITS,
    FAST_ECALLS = const FAST_ECALLS,
    PAGE_VA = const PAGE_VA,
    PAGE_SATP = const PAGE_SATP,
    PAGE_USER = const PAGE_USER,
    PAGE_HOST = const PAGE_HOST,
    PAGE_GLOBAL = const PAGE_GLOBAL,
    CODE_SETS = const CODE_SETS,
    PAGE_SHIFT = const PAGE_SHIFT,
    host_trap = sym crate::trap::host_trap,
);

unsafe extern "C" {
    fn trap_vector();
    #[link_name = "enter_guest"]
    fn enter_guest_asm(ctx: *mut u8);
    fn try_write_stimecmp(value: u64) -> u64;
    fn try_write_stimecmp_fault();
    fn try_write_stimecmp_resume();
    fn try_read_senvcfg() -> u64;
    fn try_read_senvcfg_fault();
    fn try_read_senvcfg_resume();
}

/// Runs the guest of `ctx` until it traps: the guest's registers are then in
/// `ctx.vcpu.regs` and the cause in `scause`/`stval`.
///
/// # Safety
/// The hart must be set up to run the guest: `satp` on a table that maps the guest with U
/// pages and hypocaust without, `sstatus.SPP` clear, and interrupts masked in S-mode.
pub unsafe fn enter_guest(ctx: &mut GuestContext) {
    // SAFETY: the caller set the hart up; the assembly saves and restores every register
    // hypocaust needs, and returns here on the guest's next trap.
    unsafe { enter_guest_asm(ctx as *mut GuestContext as *mut u8) }
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

/// Writes `stimecmp` if hypocaust may (Sstc present and enabled by firmware).
pub fn write_stimecmp_checked(value: u64) -> bool {
    // SAFETY: the fault, if any, is an illegal-instruction trap at a known pc, which
    // `fixup` turns into a return of 0.
    unsafe { try_write_stimecmp(value) != 0 }
}

/// Whether the hart has `senvcfg` (harts of privileged spec 1.10/1.11, like the U54, do
/// not).
pub fn has_senvcfg() -> bool {
    // SAFETY: as in `write_stimecmp_checked`: a read of a missing CSR traps at a known pc.
    unsafe { try_read_senvcfg() != 0 }
}

/// If `sepc` is an instruction allowed to fault, where to resume instead.
pub fn fixup(sepc: u64) -> Option<u64> {
    let allowed: [(unsafe extern "C" fn(), unsafe extern "C" fn()); 2] = [
        (try_write_stimecmp_fault, try_write_stimecmp_resume),
        (try_read_senvcfg_fault, try_read_senvcfg_resume),
    ];
    allowed
        .iter()
        .find(|(fault, _)| sepc == *fault as *const () as u64)
        .map(|(_, resume)| *resume as *const () as u64)
}
