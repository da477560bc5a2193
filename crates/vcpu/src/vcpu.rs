//! One virtual hart: its registers, virtual privilege and CSRs, and what happens when it
//! traps into hypocaust.
//!
//! The guest runs in real U-mode whatever its virtual privilege. Its exceptions and the
//! privileged instructions it executes reach hypocaust, which calls
//! [`Vcpu::handle_exception`]: exceptions of the guest's own making are forwarded to its
//! `stvec` exactly as a hart would take them; privileged instructions of virtual S-mode are
//! emulated; `ecall` from virtual S-mode is an SBI call.

use rv::GuestPhysAddr;
use rv::csr::{ExtState, Interrupts, Sstatus, TvecMode, tvec_mode};
use rv::insn::{CsrOp, CsrSource, Decoded, Instruction, decode};
use rv::trap::{Exception, Interrupt};

use crate::csr::{CsrEffect, Csrs, Features, Lines};
use crate::host::{Fence, Host};
use crate::sbi;

/// The general-purpose registers and the pc. The trap assembly saves a guest's registers
/// here, so the layout is fixed: `x[0..32]` then `pc`.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// x0..x31; `x[0]` is never read.
    pub x: [u64; 32],
    pub pc: u64,
}

impl Regs {
    /// Reads register `r` (x0 reads zero).
    pub fn get(&self, r: u8) -> u64 {
        if r == 0 { 0 } else { self.x[r as usize & 31] }
    }

    /// Writes register `r` (writes to x0 are dropped).
    pub fn set(&mut self, r: u8, value: u64) {
        if r != 0 {
            self.x[r as usize & 31] = value;
        }
    }
}

/// The guest's virtual privilege level (one byte with these values: the trap vector's
/// fast path reads it).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Virtual U-mode: the guest's programs.
    User = 0,
    /// Virtual S-mode: the guest's kernel.
    Supervisor = 1,
}

/// SBI HSM state of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HartState {
    Started,
    Stopped,
    /// Waiting in SBI `hart_suspend`.
    Suspended,
}

impl HartState {
    /// The SBI HSM status code.
    pub const fn sbi_code(self) -> usize {
        match self {
            Self::Started => sbi_spec::hsm::hart_state::STARTED,
            Self::Stopped => sbi_spec::hsm::hart_state::STOPPED,
            Self::Suspended => sbi_spec::hsm::hart_state::SUSPENDED,
        }
    }
}

/// What hypocaust does after an exit has been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the guest again.
    Resume,
    /// The vCPU waits for an interrupt (`wfi`, SBI retentive suspend).
    Wait,
    /// The vCPU stopped (SBI `hart_stop`).
    Stop,
    /// The guest asked for a system reset (SBI SRST or legacy shutdown).
    Reset(ResetKind),
}

/// What the hart does with a vCPU right before it would enter the guest
/// ([`Vcpu::prepare_entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Enter the guest: nothing it could take is left pending.
    Run,
    /// The vCPU waits (`wfi`, SBI suspend) and nothing wakes it yet: run something else
    /// or sleep until an interrupt.
    Wait,
    /// The vCPU is stopped (SBI HSM).
    Stopped,
}

/// Kinds of system reset a guest can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetKind {
    Shutdown,
    ColdReboot,
    WarmReboot,
}

/// How a suspended vCPU resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Where it left off (`wfi`, retentive suspend).
    Retentive,
    /// At `addr` in S-mode with a0 = hart ID, a1 = `opaque`, like a fresh start.
    NonRetentive { addr: GuestPhysAddr, opaque: u64 },
}

/// A virtual hart.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// First field: the trap assembly finds the guest registers at offset 0.
    pub regs: Regs,
    pub privilege: Privilege,
    pub csrs: Csrs,
    pub features: Features,
    /// The hart ID the guest sees.
    pub hart_id: usize,
    pub state: HartState,
    /// Set while waiting for an interrupt; how to resume.
    pub waiting: Option<Resume>,
    /// Changes hypocaust must act on before running the guest again (accumulated).
    pub effects: CsrEffect,
    /// The reservation of an emulated LR (hypocaust's window): where, and what it read.
    pub reservation: Option<(rv::GuestPhysAddr, u64)>,
}

impl Vcpu {
    /// A vCPU about to run a kernel at `entry` in S-mode with a0 = hart ID, a1 = `arg1`.
    pub fn new(hart_id: usize, features: Features, entry: u64, arg1: u64) -> Self {
        let mut v = Self {
            regs: Regs::default(),
            privilege: Privilege::Supervisor,
            csrs: Csrs::default(),
            features,
            hart_id,
            state: HartState::Started,
            waiting: None,
            effects: CsrEffect::all(),
            reservation: None,
        };
        if features.fp {
            v.csrs.set_fs_dirty();
        }
        v.reset_to(entry, arg1);
        v
    }

    /// Puts the hart in the state SBI promises at `hart_start` and non-retentive resume:
    /// S-mode, `satp` = 0, `sstatus.SIE` = 0, a0 = hart ID, a1 = `arg1`, pc = `entry`.
    /// Like OpenSBI and RustSBI-based firmware entering S-mode, it also clears `sie` and
    /// `sscratch` and points `stvec` at `entry`: a kernel cannot rely on interrupt enables
    /// left over from before the hart stopped.
    pub fn reset_to(&mut self, entry: u64, arg1: u64) {
        self.regs = Regs::default();
        self.regs.pc = entry;
        self.regs.x[10] = self.hart_id as u64;
        self.regs.x[11] = arg1;
        self.privilege = Privilege::Supervisor;
        self.csrs.set_status(Sstatus::SIE, false);
        self.csrs.sie = 0;
        self.csrs.sscratch = 0;
        self.csrs.stvec = entry;
        if self.csrs.satp != 0 {
            self.csrs.satp = 0;
            self.effects |= CsrEffect::SATP;
        }
        self.waiting = None;
    }

    /// The interrupt lines as the host sees them now.
    pub(crate) fn lines(&self, host: &impl Host) -> Lines {
        Lines { now: host.now(), external: host.external_irq(self.hart_id) }
    }

    /// Enters the guest's trap handler as a hart would: `sepc`, `scause`, `stval`, SPP,
    /// SPIE and SIE are set, the privilege becomes S, pc goes to `stvec` (plus 4 × cause for
    /// interrupts in vectored mode).
    pub fn trap(&mut self, cause: u64, tval: u64) {
        let interrupt = cause & rv::trap::INTERRUPT_BIT != 0;
        self.csrs.sepc = self.regs.pc;
        self.csrs.scause = cause;
        self.csrs.stval = tval;
        let sie = self.csrs.status(Sstatus::SIE);
        self.csrs.set_status(Sstatus::SPIE, sie);
        self.csrs.set_status(Sstatus::SIE, false);
        self.csrs.set_status(Sstatus::SPP, self.privilege == Privilege::Supervisor);
        self.privilege = Privilege::Supervisor;
        let base = self.csrs.stvec & !3;
        self.regs.pc = match tvec_mode(self.csrs.stvec) {
            Some(TvecMode::Vectored) if interrupt => base.wrapping_add(4 * (cause & 0x3f)),
            _ => base,
        };
    }

    /// Raises exception `e` in the guest.
    pub fn raise(&mut self, e: Exception, tval: u64) {
        self.trap(e.code(), tval);
    }

    /// `sret`: back to the privilege in SPP, SIE from SPIE, SPIE set, SPP cleared.
    pub fn sret(&mut self) {
        let to_supervisor = self.csrs.status(Sstatus::SPP);
        let spie = self.csrs.status(Sstatus::SPIE);
        self.csrs.set_status(Sstatus::SIE, spie);
        self.csrs.set_status(Sstatus::SPIE, true);
        self.csrs.set_status(Sstatus::SPP, false);
        self.privilege = if to_supervisor { Privilege::Supervisor } else { Privilege::User };
        self.regs.pc = self.csrs.sepc;
    }

    /// The interrupt the hart would take now, if any: pending, enabled in `sie`, and
    /// globally enabled (always in U-mode, by `sstatus.SIE` in S-mode); highest priority
    /// first (SEI, SSI, STI).
    pub fn deliverable_interrupt(&self, lines: Lines) -> Option<Interrupt> {
        let pending = self.csrs.pending_enabled(lines);
        if pending == 0
            || (self.privilege == Privilege::Supervisor && !self.csrs.status(Sstatus::SIE))
        {
            return None;
        }
        [Interrupt::SupervisorExternal, Interrupt::SupervisorSoft, Interrupt::SupervisorTimer]
            .into_iter()
            .find(|i| pending & i.mask() != 0)
    }

    /// Takes the deliverable interrupt, if there is one; returns it.
    pub fn take_interrupt(&mut self, lines: Lines) -> Option<Interrupt> {
        let irq = self.deliverable_interrupt(lines)?;
        self.trap(irq.cause(), 0);
        Some(irq)
    }

    /// The last step before the guest runs again, after any exit: wakes a waiting vCPU
    /// whose wake-up condition holds, and takes the interrupt a hart would take before
    /// its next instruction. `lines` is one snapshot of the interrupt lines, taken after
    /// the exit was handled.
    ///
    /// The invariant (docs/trap-path.md): when this returns [`Entry::Run`], no interrupt
    /// is deliverable under `lines`; the guest resumes at its trap vector if a hart would
    /// have taken one.
    pub fn prepare_entry(&mut self, lines: Lines) -> Entry {
        if self.waiting.is_some() {
            if !self.should_wake(lines) {
                return Entry::Wait;
            }
            self.wake();
        }
        if self.state == HartState::Stopped {
            return Entry::Stopped;
        }
        self.take_interrupt(lines);
        Entry::Run
    }

    /// Whether a waiting vCPU may wake: an interrupt is pending and enabled in `sie`
    /// (`sstatus.SIE` does not matter, as for `wfi`).
    pub fn should_wake(&self, lines: Lines) -> bool {
        self.csrs.pending_enabled(lines) != 0
    }

    /// Ends a wait: a non-retentive resume restarts the hart at its resume address.
    pub fn wake(&mut self) {
        match self.waiting.take() {
            // `satp` is Bare after the reset, so the pc is the guest-physical address.
            Some(Resume::NonRetentive { addr, opaque }) => self.reset_to(addr.raw(), opaque),
            Some(Resume::Retentive) | None => {}
        }
        if self.state == HartState::Suspended {
            self.state = HartState::Started;
        }
    }

    /// Handles an exception the guest caused (`scause` < 64, `stval` as the hart gave it):
    /// virtual S-mode's `ecall` is an SBI call and its privileged instructions are
    /// emulated; everything else is the guest's own exception, forwarded to its `stvec`.
    pub fn handle_exception(
        &mut self,
        cause: Exception,
        stval: u64,
        host: &mut impl Host,
    ) -> Action {
        let emulated = matches!(cause, Exception::EcallFromU | Exception::IllegalInstruction);
        if !(emulated && self.privilege == Privilege::Supervisor) {
            // The guest runs in real U-mode: an ecall from virtual U-mode is a system call
            // for the guest kernel, with the same cause.
            self.raise(cause, stval);
            return Action::Resume;
        }
        // An instruction of virtual S-mode is emulated at one instant, `lines`. A hart
        // checks for interrupts before each instruction: one that became deliverable while
        // the exit was on its way is taken first, and the instruction runs again when the
        // guest returns to it. Otherwise the instruction sees that same instant (a `csrr
        // sip` never shows an interrupt that should have been taken).
        let lines = self.lines(host);
        if self.take_interrupt(lines).is_some() {
            return Action::Resume;
        }
        match cause {
            Exception::EcallFromU => sbi::handle_call(self, host),
            _ => self.emulate(stval, lines, host),
        }
    }

    /// Emulates the privileged instruction that trapped in virtual S-mode, or raises
    /// illegal instruction if S-mode could not execute it either.
    ///
    /// The instruction is always read from guest memory, never taken from `stval`: the
    /// spec lets a hart put the instruction's bits there, but QEMU 10.0 leaves the bits of
    /// an earlier instruction for some (`mret`), and emulating those would run the wrong
    /// instruction. `stval` only says whether the hart reports bits at all: the illegal
    /// instruction forwarded to the guest carries the bits if it does, 0 if not.
    fn emulate(&mut self, stval: u64, lines: Lines, host: &mut impl Host) -> Action {
        let bits = match host.fetch_instruction(self, self.regs.pc) {
            Ok(bits) => bits,
            Err((e, tval)) => {
                self.raise(e, tval);
                return Action::Resume;
            }
        };
        let stval = if stval != 0 { bits as u64 } else { 0 };
        let Some(Decoded { instruction, length }) = decode(bits) else {
            self.raise(Exception::IllegalInstruction, stval);
            return Action::Resume;
        };
        let next = self.regs.pc.wrapping_add(length as u64);
        match instruction {
            Instruction::Csr { op, csr, rd, source } => {
                if self.emulate_csr(op, csr, rd, source, lines).is_err() {
                    self.raise(Exception::IllegalInstruction, stval);
                } else {
                    self.regs.pc = next;
                }
                Action::Resume
            }
            Instruction::Sret => {
                self.sret();
                Action::Resume
            }
            Instruction::Wfi => {
                self.regs.pc = next;
                if self.should_wake(lines) {
                    Action::Resume
                } else {
                    self.waiting = Some(Resume::Retentive);
                    Action::Wait
                }
            }
            Instruction::SfenceVma { rs1, rs2 } => {
                let start = self.regs.get(rs1);
                host.fence(
                    self,
                    Fence::Vma {
                        start: if rs1 == 0 { 0 } else { start },
                        size: if rs1 == 0 { u64::MAX } else { 1 },
                        asid: (rs2 != 0).then(|| self.regs.get(rs2) as u16),
                    },
                );
                self.regs.pc = next;
                Action::Resume
            }
            // Everything else S-mode could not execute either (mret, H instructions,
            // Svinval without Svinval, loads and stores that are illegal encodings...).
            _ => {
                self.raise(Exception::IllegalInstruction, stval);
                Action::Resume
            }
        }
    }

    /// A Zicsr instruction on a supervisor CSR, executed at the instant `lines`. `Err`
    /// means illegal instruction (and nothing changed).
    fn emulate_csr(
        &mut self,
        op: CsrOp,
        csr: u16,
        rd: u8,
        source: CsrSource,
        lines: Lines,
    ) -> Result<(), ()> {
        if rv::csr::CsrNum(csr).min_privilege() != 1 {
            // U-level CSRs only trap here when S-mode may not use them either (FP off,
            // read-only written, absent); H and M CSRs are out of reach of S-mode.
            return Err(());
        }
        let src = match source {
            CsrSource::Reg(r) => self.regs.get(r),
            CsrSource::Imm(i) => i as u64,
        };
        let writes = op == CsrOp::ReadWrite || !source.is_zero();
        if writes && rv::csr::CsrNum(csr).is_read_only() {
            return Err(());
        }
        let old = self.csrs.read(csr, &self.features, lines).map_err(|_| ())?;
        if writes {
            let new = match op {
                CsrOp::ReadWrite => src,
                CsrOp::ReadSet => old | src,
                CsrOp::ReadClear => old & !src,
            };
            self.effects |= self.csrs.write(csr, new, &self.features).map_err(|_| ())?;
        }
        self.regs.set(rd, old);
        Ok(())
    }

    /// The guest's FP state as `sstatus.FS` says.
    pub fn fs(&self) -> ExtState {
        self.csrs.fs()
    }

    /// The `scounteren` the real hart needs while this vCPU runs: everything firmware
    /// allows in virtual S-mode, the guest's own choice in virtual U-mode.
    pub fn real_scounteren(&self) -> u64 {
        match self.privilege {
            Privilege::Supervisor => 0xFFFF_FFFF,
            Privilege::User => self.csrs.scounteren & 0xFFFF_FFFF,
        }
    }

    /// The interrupts pending for this vCPU now (as `sip` reads).
    pub fn pending(&self, lines: Lines) -> u64 {
        self.csrs.sip(lines) & Interrupts::all().bits()
    }
}
