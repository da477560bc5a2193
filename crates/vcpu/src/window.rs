//! Guest accesses to hypocaust's window. On a host whose widest paging mode is the guest's
//! own (Sv39 on the boards without H), hypocaust keeps its mappings in a few root slots of
//! every shadow table, mapped without U, so a guest access there faults to hypocaust
//! however the guest maps those addresses. hypocaust then carries the access out itself,
//! through the guest's own translation, exactly as the hart would have: loads, stores
//! (integer and FP, any alignment), AMOs and LR/SC, and code run from there
//! ([`Vcpu::run_window_code`]). The guest cannot tell.

use rv::GuestPhysAddr;
use rv::csr::ExtState;
use rv::insn::{AmoOp, Decoded, Instruction, Width, decode};
use rv::trap::Exception;

use crate::host::{Fault, Host};
use crate::vcpu::{Action, Privilege};

/// Instructions run from window addresses in one exit at most.
pub const WINDOW_RUN: usize = 64;
use crate::mmio::{Direction, extend, nan_box};
use crate::vcpu::Vcpu;

/// An atomic read-modify-write of a word or doubleword of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atomic {
    /// An AMO (not LR/SC) with the value of its `rs2`.
    Amo(AmoOp, u64),
    /// Writes `new` if the location holds `current` (how an emulated SC succeeds).
    CompareExchange { current: u64, new: u64 },
}

impl Atomic {
    /// The value an AMO stores, given the `old` one (`width` bytes, zero-extended).
    pub fn apply(self, old: u64, width: Width) -> u64 {
        let mask = mask(width);
        let sext = |v: u64| extend(v, width, true) as i64;
        let new = match self {
            Self::Amo(op, b) => match op {
                AmoOp::Swap => b,
                AmoOp::Add => old.wrapping_add(b),
                AmoOp::Xor => old ^ b,
                AmoOp::And => old & b,
                AmoOp::Or => old | b,
                AmoOp::Min => sext(old).min(sext(b)) as u64,
                AmoOp::Max => sext(old).max(sext(b)) as u64,
                AmoOp::Minu => (old & mask).min(b & mask),
                AmoOp::Maxu => (old & mask).max(b & mask),
                AmoOp::Lr | AmoOp::Sc => old,
            },
            Self::CompareExchange { current, new } => {
                if old & mask == current & mask {
                    new
                } else {
                    old
                }
            }
        };
        new & mask
    }
}

impl Vcpu {
    /// The guest's instruction at the pc faulted at guest-virtual `va` only because `va`
    /// lies in hypocaust's window: carries it out through the guest's translation and
    /// steps over it, or raises what the hart would have raised.
    pub fn emulate_window(&mut self, host: &mut impl Host, cause: Exception, va: u64) {
        let bits = match host.fetch_instruction(self, self.regs.pc) {
            Ok(bits) => bits,
            Err((e, tval)) => return self.raise(e, tval),
        };
        let Some(Decoded { instruction, length }) = decode(bits) else {
            // Not an instruction that reaches memory (the guest rewrote it): the fault stands.
            return self.raise(cause, va);
        };
        match self.memory_access(host, instruction) {
            Some(Ok(())) => self.regs.pc = self.regs.pc.wrapping_add(length as u64),
            Some(Err((e, tval))) => return self.raise(e, tval),
            None => return self.raise(cause, va),
        }
        if matches!(instruction, Instruction::Amo { op: AmoOp::Lr, .. }) {
            self.run_to_sc(host);
        }
    }

    /// Carries out `instruction` if it reaches memory (loads, stores, FP loads and stores,
    /// AMOs, LR/SC) through the guest's translation; `None` for any other instruction.
    fn memory_access(
        &mut self,
        host: &mut impl Host,
        instruction: Instruction,
    ) -> Option<Result<(), Fault>> {
        let address = |rs1: u8, offset: i32| self.regs.get(rs1).wrapping_add(offset as i64 as u64);
        Some(match instruction {
            Instruction::Load { width, signed, rd, rs1, offset } => {
                let at = address(rs1, offset);
                read(self, host, at, width).map(|v| self.regs.set(rd, extend(v, width, signed)))
            }
            Instruction::FpLoad { width, rd, rs1, offset } => {
                let at = address(rs1, offset);
                read(self, host, at, width).map(|v| {
                    host.fp_write(rd, nan_box(v, width));
                    self.csrs.set_fs_dirty();
                })
            }
            Instruction::Store { width, rs1, rs2, offset } => {
                let at = address(rs1, offset);
                write(self, host, at, width, self.regs.get(rs2))
            }
            Instruction::FpStore { width, rs1, rs2, offset } => {
                let at = address(rs1, offset);
                let value = host.fp_read(rs2);
                write(self, host, at, width, value)
            }
            Instruction::Amo { op, width, rd, rs1, rs2, .. } => {
                let at = self.regs.get(rs1);
                let value = self.regs.get(rs2);
                atomic(self, host, op, width, at, value).map(|old| self.regs.set(rd, old))
            }
            _ => return None,
        })
    }

    /// The guest jumped to code at a window address (`va`, which faulted with `cause`, an
    /// instruction page fault): no shadow entry can map it, so hypocaust runs that code
    /// itself, an instruction at a time through the guest's translation (fetches checked
    /// for execute permission as the hart's are), until the pc leaves the window or
    /// [`WINDOW_RUN`] instructions have run (the guest then faults here again: interrupts
    /// are taken in between, and a pending one also before every instruction here).
    ///
    /// Carried out: the base integer instructions, M, FENCE/FENCE.I ([`crate::interp`]),
    /// every memory access (as [`Vcpu::emulate_window`]), the instructions that trap in
    /// U-mode (privileged ones, `ecall`, `ebreak`) as their trap, and, run on the hart out
    /// of line, FP computation, the other register-to-register integer instructions and
    /// unprivileged CSR accesses. Anything else (vector instructions, say) gets the guest
    /// the instruction page fault the hart took.
    pub fn run_window_code(&mut self, host: &mut impl Host, cause: Exception, va: u64) -> Action {
        for i in 0..WINDOW_RUN {
            let pc = self.regs.pc;
            if i > 0 {
                if !host.in_window(self, pc) {
                    return Action::Resume;
                }
                let lines = self.lines(host);
                if self.take_interrupt(lines).is_some() {
                    return Action::Resume;
                }
            }
            let bits = match host.fetch_instruction(self, pc) {
                Ok(bits) => bits,
                Err((e, tval)) => {
                    self.raise(e, tval);
                    return Action::Resume;
                }
            };
            if let Some(Decoded { instruction, length }) = decode(bits) {
                let next = pc.wrapping_add(length as u64);
                if let Some(done) = self.memory_access(host, instruction) {
                    match done {
                        Ok(()) => self.regs.pc = next,
                        Err((e, tval)) => {
                            self.raise(e, tval);
                            return Action::Resume;
                        }
                    }
                    continue;
                }
                // What traps in U-mode traps here, with what the hart would report.
                let (trap, tval) = match instruction {
                    Instruction::Ecall => (Exception::EcallFromU, 0),
                    Instruction::Ebreak => (Exception::Breakpoint, pc),
                    // An unprivileged CSR (fcsr, the counters): the hart runs it in U-mode.
                    Instruction::Csr { csr, .. } if csr >> 8 & 3 == 0 => {
                        if self.run_out_of_line(host, bits, next).is_none() {
                            return self.window_unsupported(i, cause, va);
                        }
                        if self.regs.pc != next {
                            return Action::Resume; // it trapped
                        }
                        continue;
                    }
                    _ => (Exception::IllegalInstruction, u64::from(bits)),
                };
                return self.handle_exception(trap, tval, host);
            }
            if let Some(next) = crate::interp::step_any(&mut self.regs, pc, bits) {
                self.regs.pc = next;
                continue;
            }
            let next = pc.wrapping_add(4);
            if self.run_out_of_line(host, bits, next).is_none() {
                return self.window_unsupported(i, cause, va);
            }
            if self.regs.pc != next {
                // It trapped (the exception is raised): the guest's handler runs next.
                return Action::Resume;
            }
        }
        Action::Resume
    }

    /// Runs `bits`, an instruction of window code the hart would run in U-mode without
    /// trapping and [`crate::interp`] does not carry out (FP computation, Zb* and other
    /// register-to-register integer instructions, unprivileged CSRs), on the hart itself
    /// with its integer registers renamed ([`Host::run_out_of_line`]): on success the
    /// result is written back and the pc moves to `next`; an instruction the hart refuses
    /// (or the guest's FS Off, or a counter its `scounteren` hides from virtual U-mode)
    /// raises illegal instruction. `None`: not such an instruction.
    fn run_out_of_line(&mut self, host: &mut impl Host, bits: u32, next: u64) -> Option<()> {
        let op = OutOfLine::of(bits)?;
        let illegal = |v: &mut Self| v.raise(Exception::IllegalInstruction, u64::from(bits));
        if op.fp && self.csrs.fs() == ExtState::Off {
            illegal(self);
            return Some(());
        }
        if let Some(counter) = op.counter
            && self.privilege == Privilege::User
            && self.csrs.scounteren & 1 << counter == 0
        {
            illegal(self);
            return Some(());
        }
        let a = op.rs1.map_or(0, |r| self.regs.get(r));
        let b = op.rs2.map_or(0, |r| self.regs.get(r));
        match host.run_out_of_line(op.insn, a, b) {
            Some(result) => {
                if let Some(rd) = op.rd {
                    self.regs.set(rd, result);
                }
                if op.dirties_fp {
                    self.csrs.set_fs_dirty();
                }
                self.regs.pc = next;
            }
            None => illegal(self),
        }
        Some(())
    }

    /// An instruction at a window address that hypocaust does not carry out: the first of
    /// a run gets the guest the fault the hart took; later, the guest returns to it (and
    /// faults again, first).
    fn window_unsupported(&mut self, i: usize, cause: Exception, va: u64) -> Action {
        if i == 0 {
            self.raise(cause, va);
        }
        Action::Resume
    }

    /// After an emulated LR: the hart holds no reservation, so it would fail the SC that
    /// ends the loop, every time. So the instructions up to the SC are carried out here
    /// too (at most 16, the base integer instructions a constrained LR/SC loop may hold),
    /// and the SC against the emulated reservation. Anything else ends it: the hart goes
    /// on from there (an SC it then reaches fails, as after any lost reservation).
    fn run_to_sc(&mut self, host: &mut impl Host) {
        for _ in 0..16 {
            let pc = self.regs.pc;
            let Ok(bits) = host.fetch_instruction(self, pc) else { return };
            if let Some(Decoded {
                instruction: Instruction::Amo { op: AmoOp::Sc, width, rd, rs1, rs2, .. },
                length,
            }) = decode(bits)
            {
                let (at, value) = (self.regs.get(rs1), self.regs.get(rs2));
                match atomic(self, host, AmoOp::Sc, width, at, value) {
                    Ok(failed) => {
                        self.regs.set(rd, failed);
                        self.regs.pc = pc.wrapping_add(length as u64);
                    }
                    Err((e, tval)) => self.raise(e, tval),
                }
                return;
            }
            match crate::interp::step(&mut self.regs, pc, bits) {
                Some(next) => self.regs.pc = next,
                None => return,
            }
        }
    }
}

/// An instruction to run out of line: its word with the integer registers renamed (rs1 to
/// `t0`, rs2 to `t1`, rd to `t2`) and which guest registers those were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OutOfLine {
    insn: u32,
    rs1: Option<u8>,
    rs2: Option<u8>,
    rd: Option<u8>,
    /// It needs `sstatus.FS` on.
    fp: bool,
    /// It may change FP state (the guest's FS becomes Dirty).
    dirties_fp: bool,
    /// It reads counter N (`cycle` + N), which virtual U-mode may only with `scounteren`.
    counter: Option<u32>,
}

const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;

impl OutOfLine {
    /// The 32-bit instructions that may run out of line: OP-IMM, OP, OP-IMM-32, OP-32
    /// (what `interp` leaves: Zba/Zbb/Zbs/Zicond...), OP-FP and the FP multiply-adds, and
    /// CSR accesses to unprivileged CSRs. None of them reaches memory or privileged state.
    fn of(raw: u32) -> Option<Self> {
        let field = |lo: u32| ((raw >> lo) & 31) as u8;
        let (rd, rs1, rs2) = (field(7), field(15), field(20));
        let rename = |raw: u32, lo: u32, to: u32| raw & !(31 << lo) | to << lo;
        let int = |raw: u32, rd: bool, rs1: bool, rs2: bool| {
            let mut w = raw;
            if rd {
                w = rename(w, 7, T2);
            }
            if rs1 {
                w = rename(w, 15, T0);
            }
            if rs2 {
                w = rename(w, 20, T1);
            }
            w
        };
        let plain = |insn: u32, rd_: bool, rs1_: bool, rs2_: bool| Self {
            insn,
            rs1: rs1_.then_some(rs1),
            rs2: rs2_.then_some(rs2),
            rd: rd_.then_some(rd),
            fp: false,
            dirties_fp: false,
            counter: None,
        };
        if raw & 3 != 3 {
            return None;
        }
        Some(match raw & 0x7f {
            0x13 | 0x1b => plain(int(raw, true, true, false), true, true, false),
            0x33 | 0x3b => plain(int(raw, true, true, true), true, true, true),
            0x53 => {
                let funct5 = raw >> 27;
                let (int_rd, int_rs1) = match funct5 {
                    0b11010 | 0b11110 => (false, true),
                    0b11000 | 0b10100 | 0b11100 => (true, false),
                    _ => (false, false),
                };
                Self {
                    fp: true,
                    dirties_fp: funct5 != 0b11100,
                    ..plain(int(raw, int_rd, int_rs1, false), int_rd, int_rs1, false)
                }
            }
            0x43 | 0x47 | 0x4b | 0x4f => {
                Self { fp: true, dirties_fp: true, ..plain(raw, false, false, false) }
            }
            0x73 => {
                let funct3 = (raw >> 12) & 7;
                let csr = raw >> 20;
                if funct3 == 0 || funct3 == 4 || csr >> 8 & 3 != 0 {
                    return None;
                }
                let reads_rs1 = funct3 < 4 && rs1 != 0;
                let writes = funct3 & 3 == 1 || rs1 != 0;
                let fp = (1..=3).contains(&csr);
                Self {
                    fp,
                    dirties_fp: fp && writes,
                    counter: (0xc00..=0xc1f).contains(&csr).then_some(csr - 0xc00),
                    ..plain(int(raw, rd != 0, reads_rs1, false), rd != 0, reads_rs1, false)
                }
            }
            _ => return None,
        })
    }
}

/// Reads `width` bytes at guest-virtual `va` as a load of the vCPU would: a page at a
/// time (a misaligned access may span two), from RAM or a device.
fn read(v: &Vcpu, host: &mut impl Host, va: u64, width: Width) -> Result<u64, Fault> {
    let n = width.bytes() as usize;
    if crosses_page(va, n) {
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate().take(n) {
            *b = read(v, host, va.wrapping_add(i as u64), Width::Byte)? as u8;
        }
        return Ok(u64::from_le_bytes(bytes));
    }
    let gpa = host.translate(v, va, Direction::Load)?;
    let mut bytes = [0u8; 8];
    if host.read_phys(gpa, &mut bytes[..n]) {
        return Ok(u64::from_le_bytes(bytes));
    }
    host.mmio_read(gpa, width).ok_or((Exception::LoadAccessFault, va))
}

/// Writes the low `width` bytes of `value` at guest-virtual `va` as a store would.
fn write(v: &Vcpu, host: &mut impl Host, va: u64, width: Width, value: u64) -> Result<(), Fault> {
    let n = width.bytes() as usize;
    if crosses_page(va, n) {
        // Every byte's translation first: a store that faults writes nothing.
        let mut at = [GuestPhysAddr::new(0); 8];
        for (i, a) in at.iter_mut().enumerate().take(n) {
            *a = host.translate(v, va.wrapping_add(i as u64), Direction::Store)?;
        }
        for (i, a) in at.iter().enumerate().take(n) {
            let byte = (value >> (8 * i)) as u8;
            if !host.write_phys(*a, &[byte]) && !host.mmio_write(*a, Width::Byte, byte as u64) {
                return Err((Exception::StoreAccessFault, va.wrapping_add(i as u64)));
            }
        }
        return Ok(());
    }
    let gpa = host.translate(v, va, Direction::Store)?;
    if host.write_phys(gpa, &value.to_le_bytes()[..n]) || host.mmio_write(gpa, width, value) {
        Ok(())
    } else {
        Err((Exception::StoreAccessFault, va))
    }
}

/// An AMO, LR or SC at guest-virtual `va`: aligned, on RAM (devices take no atomics).
/// LR takes a reservation of the value it read; SC succeeds if the location still holds
/// it (a compare-and-swap: another hart's store in between makes it fail).
fn atomic(
    v: &mut Vcpu,
    host: &mut impl Host,
    op: AmoOp,
    width: Width,
    va: u64,
    value: u64,
) -> Result<u64, Fault> {
    let n = width.bytes();
    let (misaligned, access_fault, dir) = match op {
        AmoOp::Lr => (Exception::LoadMisaligned, Exception::LoadAccessFault, Direction::Load),
        _ => (Exception::StoreMisaligned, Exception::StoreAccessFault, Direction::Store),
    };
    if !va.is_multiple_of(n) {
        return Err((misaligned, va));
    }
    let gpa = host.translate(v, va, dir)?;
    if !host.is_ram(gpa) {
        return Err((access_fault, va));
    }
    let signed = |x: u64| extend(x, width, true);
    match op {
        AmoOp::Lr => {
            let mut bytes = [0u8; 8];
            if !host.read_phys(gpa, &mut bytes[..n as usize]) {
                return Err((access_fault, va));
            }
            let old = u64::from_le_bytes(bytes);
            v.reservation = Some((gpa, old));
            Ok(signed(old))
        }
        AmoOp::Sc => {
            let failed = match v.reservation.take() {
                Some((at, current)) if at == gpa => {
                    let op = Atomic::CompareExchange { current, new: value };
                    let old = host.atomic_phys(gpa, width, op).ok_or((access_fault, va))?;
                    old != current & mask(width)
                }
                _ => true,
            };
            Ok(failed as u64)
        }
        _ => {
            let old =
                host.atomic_phys(gpa, width, Atomic::Amo(op, value)).ok_or((access_fault, va))?;
            Ok(signed(old))
        }
    }
}

fn mask(width: Width) -> u64 {
    match width {
        Width::Double => u64::MAX,
        w => (1 << (w.bytes() * 8)) - 1,
    }
}

/// Whether `n` bytes at `va` span two pages.
fn crosses_page(va: u64, n: usize) -> bool {
    (va & 0xfff) + n as u64 > 0x1000
}
