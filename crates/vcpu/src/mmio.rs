//! Guest loads and stores that reach a device: the instruction is decoded and carried out
//! against the device model, as the hart would have done it on the bus.

use rv::GuestPhysAddr;
use rv::insn::{Decoded, Instruction, Width, decode};
use rv::trap::Exception;

use crate::host::Host;
use crate::vcpu::Vcpu;

/// Whether the access is a load (else a store or AMO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Load,
    Store,
}

impl Direction {
    /// The access fault a refused access of this direction raises.
    pub fn access_fault(self) -> Exception {
        match self {
            Self::Load => Exception::LoadAccessFault,
            Self::Store => Exception::StoreAccessFault,
        }
    }
}

/// Sign- or zero-extends the low `width` bytes of `value`.
pub(crate) fn extend(value: u64, width: Width, signed: bool) -> u64 {
    let bits = width.bytes() * 8;
    if bits == 64 {
        return value;
    }
    let value = value & ((1 << bits) - 1);
    if signed && value >> (bits - 1) != 0 { value | !((1 << bits) - 1) } else { value }
}

/// NaN-boxes a `width`-byte FP value into a 64-bit register, as an FP load does.
pub(crate) fn nan_box(value: u64, width: Width) -> u64 {
    match width {
        Width::Double => value,
        w => value | !((1u64 << (w.bytes() * 8)) - 1),
    }
}

impl Vcpu {
    /// The guest's load or store at guest-virtual `va` (the pc's instruction) reached
    /// guest-physical `gpa`, which is not RAM: performs it on the device there. Anything the
    /// bus or decoder refuses gets the access fault a hart takes, with `stval` = `va`.
    pub fn emulate_mmio(
        &mut self,
        host: &mut impl Host,
        dir: Direction,
        va: u64,
        gpa: GuestPhysAddr,
    ) {
        let fault = dir.access_fault();
        let bits = match host.fetch_instruction(self, self.regs.pc) {
            Ok(bits) => bits,
            Err((e, tval)) => return self.raise(e, tval),
        };
        let Some(Decoded { instruction, length }) = decode(bits) else {
            return self.raise(fault, va);
        };
        let done = match (instruction, dir) {
            (Instruction::Load { width, signed, rd, .. }, Direction::Load) => {
                host.mmio_read(gpa, width).map(|v| self.regs.set(rd, extend(v, width, signed)))
            }
            (Instruction::FpLoad { width, rd, .. }, Direction::Load) => {
                host.mmio_read(gpa, width).map(|v| {
                    host.fp_write(rd, nan_box(extend(v, width, false), width));
                    self.csrs.set_fs_dirty();
                })
            }
            (Instruction::Store { width, rs2, .. }, Direction::Store) => {
                let value = extend(self.regs.get(rs2), width, false);
                host.mmio_write(gpa, width, value).then_some(())
            }
            (Instruction::FpStore { width, rs2, .. }, Direction::Store) => {
                let value = extend(host.fp_read(rs2), width, false);
                host.mmio_write(gpa, width, value).then_some(())
            }
            // AMOs and LR/SC on device registers get an access fault, as on a hart whose I/O
            // regions do not support atomics (their PMA); other instructions (a guest that
            // rewrote the one at the pc) keep the fault they took.
            _ => None,
        };
        match done {
            Some(()) => self.regs.pc = self.regs.pc.wrapping_add(length as u64),
            None => self.raise(fault, va),
        }
    }
}
