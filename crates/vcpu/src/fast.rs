//! The fast path: the exits that need nothing of hypocaust but the vCPU's own state and a
//! few real CSRs, handled straight from the trap vector, before the run loop
//! (docs/trap-path.md, "The fast path").
//!
//! The vector saves the guest's registers and calls [`Vcpu::fast_exit`] on hypocaust's
//! stack; it returns [`FastExit::Resume`] (enter the guest again at once) or leaves the exit
//! to the run loop. What it handles it handles with the very rules of the general path —
//! [`Csrs::read`](crate::Csrs::read)/[`write`](crate::Csrs::write), [`Vcpu::trap`],
//! [`Vcpu::sret`] — and whatever it may not do without the run loop (a view whose shadow
//! tree is not cached, an interrupt to deliver, any other instruction) it leaves to it,
//! having changed nothing. The tests run both paths on random states and compare.
//!
//! It handles, from virtual S-mode: the Zicsr forms on the CSRs in [`is_fast_csr`], `sret`,
//! and SBI `set_timer`; from virtual U-mode: `ecall` (a system call, forwarded to the
//! guest's `stvec`). After an emulated instruction, the ones that follow it in the same page
//! are emulated in the same exit while they are the fast path's (up to [`CLUSTER`]): a
//! cluster such as Linux's trap entry costs one exit.

use bitflags::bitflags;
use rv::csr::{self as num, Satp, Sstatus};
use rv::trap::Exception;
use sbi_spec::time;

use crate::csr::Lines;
use crate::vcpu::{Privilege, Vcpu};

/// Instructions one fast exit emulates at most.
pub const CLUSTER: usize = 16;

/// `sret`'s encoding.
const SRET: u32 = 0x1020_0073;

/// The `sstatus` bits the real hart takes from the guest's.
pub const MIRRORED: Sstatus = Sstatus::FS.union(Sstatus::MXR);

/// What the fast path needs of the hart it runs on. hypocaust implements it with the real
/// CSRs; the tests with a model.
pub trait FastHart {
    /// `time` now and the vCPU's external interrupt line: one instant.
    fn lines(&self) -> Lines;

    /// The 32 bits at guest-virtual `pc` as the vCPU (its privilege and `satp`) fetches
    /// them, from its recently used code pages only: `None` when the page is not among
    /// them, is not RAM, or the word would straddle its end.
    fn fetch(&self, v: &Vcpu, pc: u64) -> Option<u32>;

    /// Whether the hart's `sstatus.FS` is Dirty (the guest wrote FP state).
    fn fs_dirty(&self) -> bool;

    /// Sets the hart's `sstatus` bits in [`MIRRORED`] to those of `sstatus`.
    fn mirror_status(&mut self, sstatus: u64);

    /// Puts the hart on the shadow tree `satp`; returns the one it leaves.
    fn switch_tree(&mut self, satp: u64) -> u64;

    /// Sets the hart's `scounteren`.
    fn set_scounteren(&mut self, value: u64);

    /// Arms the hart's timer for the vCPU's new `stimecmp`.
    fn arm_timer(&mut self, stimecmp: u64);
}

bitflags! {
    /// What the fast path changed of the real hart that the run loop keeps track of.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct Switched: u8 {
        /// The vCPU's privilege changed (`sret` to U-mode, a forwarded `ecall`): so did
        /// the real `scounteren` and, if paged, the real `satp`.
        const PRIVILEGE = 1 << 0;
        /// The real `sstatus.FS`/`MXR` changed with the guest's.
        const STATUS = 1 << 1;
        /// SUM changed and, the guest being paged, the real `satp`.
        const VIEW = 1 << 2;
        /// The real timer was armed.
        const TIMER = 1 << 3;
    }
}

/// The fast path's state beside the vCPU's: what the run loop tells it, what it reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FastPath {
    /// The real `satp` of the shadow tree the vCPU's next change of privilege goes to (the
    /// other view of its address space); 0: none cached, or no ASID (a switch must flush).
    pub other_view_satp: u64,
    /// Likewise the tree of the other S-mode view (SUM flipped) while in virtual S-mode.
    pub sum_view_satp: u64,
    /// What it changed behind the run loop's back; the run loop clears it.
    pub switched: Switched,
    /// Exits it handled, since the run loop last took them: illegal-instruction exits
    /// (emulated instructions), and `ecall` exits (forwarded system calls, SBI calls).
    pub exits: u64,
    pub ecalls: u64,
}

/// What became of an exit on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum FastExit {
    /// Not the fast path's: nothing changed; the run loop handles the trap.
    Trap = 0,
    /// Handled: enter the guest again.
    Resume = 1,
    /// Handled, and an interrupt is now deliverable: the run loop delivers it before the
    /// guest's next instruction.
    Deliver = 2,
}

/// Whether CSR `csr` is one the fast path emulates: storage, and the interrupt registers.
/// `satp`, `senvcfg` and `scounteren` stay with the run loop (a `satp` write needs the
/// shadow cache).
pub fn is_fast_csr(csr: u16) -> bool {
    matches!(
        csr,
        num::SSTATUS
            | num::SIE
            | num::SIP
            | num::STVEC
            | num::SSCRATCH
            | num::SEPC
            | num::SCAUSE
            | num::STVAL
            | num::STIMECMP
    )
}

/// An instruction emulated, or not the fast path's.
enum Step {
    Done,
    NotOurs,
}

impl Vcpu {
    /// Handles the exit with `scause` if it is the fast path's ([`FastExit`]).
    pub fn fast_exit(
        &mut self,
        fast: &mut FastPath,
        scause: u64,
        hart: &mut impl FastHart,
    ) -> FastExit {
        let ecall = scause == Exception::EcallFromU.code();
        if !ecall && scause != Exception::IllegalInstruction.code() {
            return FastExit::Trap;
        }
        // A hart checks for interrupts before each instruction.
        if self.deliverable_now(hart) {
            return FastExit::Trap;
        }
        if ecall {
            return match self.privilege {
                Privilege::User => self.fast_syscall(fast, hart),
                Privilege::Supervisor => self.fast_sbi(fast, hart),
            };
        }
        if self.privilege != Privilege::Supervisor {
            return FastExit::Trap;
        }
        let mut emulated = 0;
        while emulated < CLUSTER && (emulated == 0 || !self.deliverable_now(hart)) {
            // Only SYSTEM instructions are the fast path's: anything else ends the cluster
            // before the cost of a call.
            let bits = match hart.fetch(self, self.regs.pc) {
                Some(bits) if bits & 0x7f == 0x73 => bits,
                _ => break,
            };
            match self.fast_step(bits, fast, hart) {
                Step::Done => emulated += 1,
                Step::NotOurs => break,
            }
            if self.privilege != Privilege::Supervisor {
                break;
            }
        }
        if emulated == 0 {
            return FastExit::Trap;
        }
        fast.exits += 1;
        if self.deliverable_now(hart) { FastExit::Deliver } else { FastExit::Resume }
    }

    /// Whether an interrupt is deliverable now; the lines are only looked at when one
    /// could be.
    fn deliverable_now(&self, hart: &impl FastHart) -> bool {
        (self.privilege == Privilege::User || self.csrs.status(Sstatus::SIE))
            && self.deliverable_interrupt(hart.lines()).is_some()
    }

    /// Emulates the instruction `bits` at the pc if it is the fast path's: a Zicsr form
    /// on a CSR of [`is_fast_csr`] (decoded here, the bits `rv::insn::decode` reads), or
    /// `sret`.
    #[inline(always)]
    fn fast_step(&mut self, bits: u32, fast: &mut FastPath, hart: &mut impl FastHart) -> Step {
        if bits == SRET {
            return self.fast_sret(fast, hart);
        }
        // funct3: 1-3 register forms (csrrw, csrrs, csrrc), 5-7 immediate forms.
        let funct3 = (bits >> 12) & 7;
        let csr = (bits >> 20) as u16;
        if bits & 0x7f != 0x73 || funct3 & 3 == 0 || !is_fast_csr(csr) {
            return Step::NotOurs;
        }
        let field = ((bits >> 15) & 31) as u8;
        let src = if funct3 & 4 != 0 { u64::from(field) } else { self.regs.get(field) };
        // `sip` is read at one instant with the interrupt check before it (time moved on
        // since the last check): an interrupt deliverable then comes first, and the read
        // never shows one the hart would already have taken.
        let lines = if csr == num::SIP { hart.lines() } else { Lines::default() };
        if csr == num::SIP
            && (self.privilege == Privilege::User || self.csrs.status(Sstatus::SIE))
            && self.deliverable_interrupt(lines).is_some()
        {
            return Step::NotOurs;
        }
        // FP state the guest wrote shows in what it reads of `sstatus`, as the run loop
        // takes it after every exit.
        if csr == num::SSTATUS && self.csrs.sstatus & Sstatus::FS.bits() != 0 && hart.fs_dirty() {
            self.csrs.set_fs_dirty();
        }
        let Ok(old) = self.csrs.read(csr, &self.features, lines) else { return Step::NotOurs };
        // csrrs/csrrc with x0 or the immediate 0 only read.
        if funct3 & 3 == 1 || field != 0 {
            let new = match funct3 & 3 {
                1 => src,
                2 => old | src,
                _ => old & !src,
            };
            let before = self.csrs.sstatus;
            if csr == num::SSTATUS
                && (new ^ before) & Sstatus::SUM.bits() != 0
                && !self.switch_view(&mut fast.sum_view_satp, hart)
            {
                return Step::NotOurs;
            }
            if self.csrs.write(csr, new, &self.features).is_err() {
                return Step::NotOurs;
            }
            let changed = self.csrs.sstatus ^ before;
            if changed & Sstatus::SUM.bits() != 0 {
                fast.switched |= Switched::VIEW;
            }
            if changed & MIRRORED.bits() != 0 {
                hart.mirror_status(self.csrs.sstatus);
                fast.switched |= Switched::STATUS;
            }
            if csr == num::STIMECMP {
                hart.arm_timer(self.csrs.stimecmp);
                fast.switched |= Switched::TIMER;
            }
        }
        self.regs.set(((bits >> 7) & 31) as u8, old);
        self.regs.pc = self.regs.pc.wrapping_add(4);
        Step::Done
    }

    /// `sret`, as [`Vcpu::sret`]; to U-mode onto the U-mode view's tree.
    fn fast_sret(&mut self, fast: &mut FastPath, hart: &mut impl FastHart) -> Step {
        if !self.csrs.status(Sstatus::SPP) {
            if !self.switch_view(&mut fast.other_view_satp, hart) {
                return Step::NotOurs;
            }
            fast.switched |= Switched::PRIVILEGE;
        }
        self.sret();
        if self.privilege == Privilege::User {
            hart.set_scounteren(self.real_scounteren());
        }
        Step::Done
    }

    /// A system call: the U-mode `ecall` goes to the guest's `stvec` as [`Vcpu::trap`]
    /// takes it, onto the S-mode view's tree.
    fn fast_syscall(&mut self, fast: &mut FastPath, hart: &mut impl FastHart) -> FastExit {
        if !self.switch_view(&mut fast.other_view_satp, hart) {
            return FastExit::Trap;
        }
        self.raise(Exception::EcallFromU, 0);
        hart.set_scounteren(self.real_scounteren());
        fast.switched |= Switched::PRIVILEGE;
        fast.ecalls += 1;
        FastExit::Resume
    }

    /// SBI `set_timer` (the TIME extension's; the rest of the SBI is the run loop's), with
    /// the results `sbi::handle_call` gives.
    fn fast_sbi(&mut self, fast: &mut FastPath, hart: &mut impl FastHart) -> FastExit {
        let (eid, fid) = (self.regs.get(17) as usize, self.regs.get(16) as usize);
        if eid != time::EID_TIME || fid != time::SET_TIMER {
            return FastExit::Trap;
        }
        self.csrs.stimecmp = self.regs.get(10);
        hart.arm_timer(self.csrs.stimecmp);
        self.regs.set(10, sbi_spec::binary::RET_SUCCESS as u64);
        self.regs.set(11, 0);
        self.regs.pc = self.regs.pc.wrapping_add(4);
        fast.ecalls += 1;
        // The deadline moved: its interrupt may be pending now.
        if self.deliverable_now(hart) { FastExit::Deliver } else { FastExit::Resume }
    }

    /// Puts the hart on the tree of the view the vCPU is about to enter (the other
    /// privilege's, or the other SUM's), named in `slot` by the run loop; the tree it
    /// leaves becomes the way back. `false`: the tree is not cached (the run loop makes
    /// it); nothing changed. A Bare guest has one view for all.
    fn switch_view(&self, slot: &mut u64, hart: &mut impl FastHart) -> bool {
        if Satp(self.csrs.satp).mode_bits() == 0 {
            return true;
        }
        if *slot == 0 {
            return false;
        }
        let left = hart.switch_tree(*slot);
        // Without an ASID the tree left cannot be switched back to without a flush.
        *slot = if Satp(left).asid() != 0 { left } else { 0 };
        true
    }
}
