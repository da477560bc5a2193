//! Decoder for the instructions a guest can trap on.
//!
//! A guest kernel runs in real U-mode, so its privileged instructions (CSR accesses, `sret`,
//! `wfi`, `sfence.vma`) trap as illegal instructions, and its loads and stores to emulated
//! devices trap as page or access faults. This module turns the raw bits of such an
//! instruction into an [`Instruction`]; emulation happens elsewhere.
//!
//! Both the 32-bit and the compressed (RVC) forms are decoded. Anything else gives `None`:
//! the caller then treats the instruction as one it does not emulate (for a guest, that is an
//! illegal-instruction exception).

/// An integer register number, 0..=31.
pub type Reg = u8;
/// A floating-point register number, 0..=31.
pub type FReg = u8;

/// Access width of a load or store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    Byte,
    Half,
    Word,
    Double,
}

impl Width {
    /// The width in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Half => 2,
            Self::Word => 4,
            Self::Double => 8,
        }
    }
}

/// The three CSR operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CsrOp {
    /// `csrrw` / `csrrwi`: write the source.
    ReadWrite,
    /// `csrrs` / `csrrsi`: set the bits of the source.
    ReadSet,
    /// `csrrc` / `csrrci`: clear the bits of the source.
    ReadClear,
}

/// The source operand of a CSR instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CsrSource {
    /// A register (`csrrw`, `csrrs`, `csrrc`).
    Reg(Reg),
    /// A 5-bit zero-extended immediate (`csrrwi`, `csrrsi`, `csrrci`).
    Imm(u8),
}

impl CsrSource {
    /// Whether the operand is `x0` or the immediate 0. For `csrrs`/`csrrc` that means the
    /// instruction does not write the CSR at all (so it does not trap on read-only CSRs).
    pub const fn is_zero(self) -> bool {
        matches!(self, Self::Reg(0) | Self::Imm(0))
    }
}

/// Atomic memory operations (A extension).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AmoOp {
    Lr,
    Sc,
    Swap,
    Add,
    Xor,
    And,
    Or,
    Min,
    Max,
    Minu,
    Maxu,
}

/// A decoded instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Instruction {
    /// Integer load: `rd = sext/zext(mem[rs1 + offset])`.
    Load {
        width: Width,
        signed: bool,
        rd: Reg,
        rs1: Reg,
        offset: i32,
    },
    /// Integer store: `mem[rs1 + offset] = rs2`.
    Store {
        width: Width,
        rs1: Reg,
        rs2: Reg,
        offset: i32,
    },
    /// Floating-point load (`flh`, `flw`, `fld`).
    FpLoad {
        width: Width,
        rd: FReg,
        rs1: Reg,
        offset: i32,
    },
    /// Floating-point store (`fsh`, `fsw`, `fsd`).
    FpStore {
        width: Width,
        rs1: Reg,
        rs2: FReg,
        offset: i32,
    },
    /// Atomic memory operation (width is `Word` or `Double`).
    Amo {
        op: AmoOp,
        width: Width,
        rd: Reg,
        rs1: Reg,
        rs2: Reg,
        aq: bool,
        rl: bool,
    },
    /// Zicsr instruction.
    Csr {
        op: CsrOp,
        csr: u16,
        rd: Reg,
        source: CsrSource,
    },
    Ecall,
    Ebreak,
    Sret,
    Mret,
    Wfi,
    /// `sfence.vma rs1, rs2`.
    SfenceVma {
        rs1: Reg,
        rs2: Reg,
    },
    /// `sinval.vma rs1, rs2` (Svinval).
    SinvalVma {
        rs1: Reg,
        rs2: Reg,
    },
    /// `sfence.w.inval` (Svinval).
    SfenceWInval,
    /// `sfence.inval.ir` (Svinval).
    SfenceInvalIr,
    /// `hfence.vvma`, `hfence.gvma`, `hlv.*`, `hsv.*`: H-extension instructions.
    Hypervisor,
}

/// An instruction and its length in bytes (2 or 4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decoded {
    pub instruction: Instruction,
    pub length: u8,
}

/// The length in bytes of the instruction whose low 16 bits are `low`: 2 for compressed
/// forms, 4 otherwise (longer encodings are reserved and reported as 4).
pub const fn length(low: u16) -> u8 {
    if low & 0b11 != 0b11 { 2 } else { 4 }
}

/// Decodes one instruction. `raw` holds the instruction in its low bits (16 bits for a
/// compressed one; the upper half is ignored then).
pub fn decode(raw: u32) -> Option<Decoded> {
    if length(raw as u16) == 2 {
        decode_compressed(raw as u16).map(|instruction| Decoded { instruction, length: 2 })
    } else {
        decode_full(raw).map(|instruction| Decoded { instruction, length: 4 })
    }
}

const fn bits(raw: u32, hi: u32, lo: u32) -> u32 {
    (raw >> lo) & ((1 << (hi - lo + 1)) - 1)
}

const fn rd(raw: u32) -> Reg {
    bits(raw, 11, 7) as Reg
}

const fn rs1(raw: u32) -> Reg {
    bits(raw, 19, 15) as Reg
}

const fn rs2(raw: u32) -> Reg {
    bits(raw, 24, 20) as Reg
}

const fn i_imm(raw: u32) -> i32 {
    (raw as i32) >> 20
}

const fn s_imm(raw: u32) -> i32 {
    (((raw as i32) >> 25) << 5) | bits(raw, 11, 7) as i32
}

fn decode_full(raw: u32) -> Option<Instruction> {
    let opcode = bits(raw, 6, 0);
    let funct3 = bits(raw, 14, 12);
    match opcode {
        0x03 => {
            let (width, signed) = match funct3 {
                0 => (Width::Byte, true),
                1 => (Width::Half, true),
                2 => (Width::Word, true),
                3 => (Width::Double, true),
                4 => (Width::Byte, false),
                5 => (Width::Half, false),
                6 => (Width::Word, false),
                _ => return None,
            };
            Some(Instruction::Load {
                width,
                signed,
                rd: rd(raw),
                rs1: rs1(raw),
                offset: i_imm(raw),
            })
        }
        0x07 => {
            let width = fp_width(funct3)?;
            Some(Instruction::FpLoad { width, rd: rd(raw), rs1: rs1(raw), offset: i_imm(raw) })
        }
        0x23 => {
            let width = match funct3 {
                0 => Width::Byte,
                1 => Width::Half,
                2 => Width::Word,
                3 => Width::Double,
                _ => return None,
            };
            Some(Instruction::Store { width, rs1: rs1(raw), rs2: rs2(raw), offset: s_imm(raw) })
        }
        0x27 => {
            let width = fp_width(funct3)?;
            Some(Instruction::FpStore { width, rs1: rs1(raw), rs2: rs2(raw), offset: s_imm(raw) })
        }
        0x2F => decode_amo(raw, funct3),
        0x73 => decode_system(raw, funct3),
        _ => None,
    }
}

fn fp_width(funct3: u32) -> Option<Width> {
    match funct3 {
        1 => Some(Width::Half),
        2 => Some(Width::Word),
        3 => Some(Width::Double),
        _ => None,
    }
}

fn decode_amo(raw: u32, funct3: u32) -> Option<Instruction> {
    let width = match funct3 {
        2 => Width::Word,
        3 => Width::Double,
        _ => return None,
    };
    let op = match bits(raw, 31, 27) {
        0b00010 if rs2(raw) == 0 => AmoOp::Lr,
        0b00011 => AmoOp::Sc,
        0b00001 => AmoOp::Swap,
        0b00000 => AmoOp::Add,
        0b00100 => AmoOp::Xor,
        0b01100 => AmoOp::And,
        0b01000 => AmoOp::Or,
        0b10000 => AmoOp::Min,
        0b10100 => AmoOp::Max,
        0b11000 => AmoOp::Minu,
        0b11100 => AmoOp::Maxu,
        _ => return None,
    };
    Some(Instruction::Amo {
        op,
        width,
        rd: rd(raw),
        rs1: rs1(raw),
        rs2: rs2(raw),
        aq: bits(raw, 26, 26) != 0,
        rl: bits(raw, 25, 25) != 0,
    })
}

fn decode_system(raw: u32, funct3: u32) -> Option<Instruction> {
    let csr = bits(raw, 31, 20) as u16;
    let (op, source) = match funct3 {
        0 => return decode_privileged(raw),
        1 => (CsrOp::ReadWrite, CsrSource::Reg(rs1(raw))),
        2 => (CsrOp::ReadSet, CsrSource::Reg(rs1(raw))),
        3 => (CsrOp::ReadClear, CsrSource::Reg(rs1(raw))),
        4 => {
            // HLV/HSV/HLVX: funct7 0110xxx / 0111xxx with rd or rs2 operands.
            return (bits(raw, 31, 28) == 0b0110).then_some(Instruction::Hypervisor);
        }
        5 => (CsrOp::ReadWrite, CsrSource::Imm(rs1(raw))),
        6 => (CsrOp::ReadSet, CsrSource::Imm(rs1(raw))),
        7 => (CsrOp::ReadClear, CsrSource::Imm(rs1(raw))),
        _ => return None,
    };
    Some(Instruction::Csr { op, csr, rd: rd(raw), source })
}

fn decode_privileged(raw: u32) -> Option<Instruction> {
    // funct3 == 0; rd must be zero for every instruction here.
    if rd(raw) != 0 {
        return None;
    }
    let funct7 = bits(raw, 31, 25);
    let (rs1, rs2) = (rs1(raw), rs2(raw));
    match funct7 {
        0b000_1001 => return Some(Instruction::SfenceVma { rs1, rs2 }),
        0b000_1011 => return Some(Instruction::SinvalVma { rs1, rs2 }),
        0b001_0001 | 0b011_0001 => return Some(Instruction::Hypervisor),
        _ => {}
    }
    if rs1 != 0 {
        return None;
    }
    match bits(raw, 31, 20) {
        0x000 => Some(Instruction::Ecall),
        0x001 => Some(Instruction::Ebreak),
        0x102 => Some(Instruction::Sret),
        0x302 => Some(Instruction::Mret),
        0x105 => Some(Instruction::Wfi),
        0x180 => Some(Instruction::SfenceWInval),
        0x181 => Some(Instruction::SfenceInvalIr),
        _ => None,
    }
}

const fn cbits(raw: u16, hi: u32, lo: u32) -> u32 {
    bits(raw as u32, hi, lo)
}

/// The register of a 3-bit compressed register field (x8..x15 / f8..f15).
const fn creg(field: u32) -> Reg {
    (field + 8) as Reg
}

fn decode_compressed(raw: u16) -> Option<Instruction> {
    let quadrant = raw & 0b11;
    let funct3 = cbits(raw, 15, 13);
    // Offsets of the register-based forms (C.LW / C.LD and friends).
    let rs1c = creg(cbits(raw, 9, 7));
    let rc = creg(cbits(raw, 4, 2));
    let off_d = ((cbits(raw, 12, 10) << 3) | (cbits(raw, 6, 5) << 6)) as i32;
    let off_w =
        ((cbits(raw, 12, 10) << 3) | (cbits(raw, 6, 6) << 2) | (cbits(raw, 5, 5) << 6)) as i32;
    // Register fields and offsets of the stack-pointer-based forms.
    let rd_sp = cbits(raw, 11, 7) as Reg;
    let rs2_sp = cbits(raw, 6, 2) as Reg;
    let load_sp_d =
        ((cbits(raw, 12, 12) << 5) | (cbits(raw, 6, 5) << 3) | (cbits(raw, 4, 2) << 6)) as i32;
    let load_sp_w =
        ((cbits(raw, 12, 12) << 5) | (cbits(raw, 6, 4) << 2) | (cbits(raw, 3, 2) << 6)) as i32;
    let store_sp_d = ((cbits(raw, 12, 10) << 3) | (cbits(raw, 9, 7) << 6)) as i32;
    let store_sp_w = ((cbits(raw, 12, 9) << 2) | (cbits(raw, 8, 7) << 6)) as i32;
    const SP: Reg = 2;

    let load = |width, rd, rs1, offset| Instruction::Load { width, signed: true, rd, rs1, offset };
    let store = |width, rs1, rs2, offset| Instruction::Store { width, rs1, rs2, offset };
    match (quadrant, funct3) {
        (0b00, 0b001) => {
            Some(Instruction::FpLoad { width: Width::Double, rd: rc, rs1: rs1c, offset: off_d })
        }
        (0b00, 0b010) => Some(load(Width::Word, rc, rs1c, off_w)),
        (0b00, 0b011) => Some(load(Width::Double, rc, rs1c, off_d)),
        (0b00, 0b101) => {
            Some(Instruction::FpStore { width: Width::Double, rs1: rs1c, rs2: rc, offset: off_d })
        }
        (0b00, 0b110) => Some(store(Width::Word, rs1c, rc, off_w)),
        (0b00, 0b111) => Some(store(Width::Double, rs1c, rc, off_d)),
        (0b10, 0b001) => Some(Instruction::FpLoad {
            width: Width::Double,
            rd: rd_sp,
            rs1: SP,
            offset: load_sp_d,
        }),
        (0b10, 0b010) if rd_sp != 0 => Some(load(Width::Word, rd_sp, SP, load_sp_w)),
        (0b10, 0b011) if rd_sp != 0 => Some(load(Width::Double, rd_sp, SP, load_sp_d)),
        (0b10, 0b100) if raw == 0x9002 => Some(Instruction::Ebreak),
        (0b10, 0b101) => Some(Instruction::FpStore {
            width: Width::Double,
            rs1: SP,
            rs2: rs2_sp,
            offset: store_sp_d,
        }),
        (0b10, 0b110) => Some(store(Width::Word, SP, rs2_sp, store_sp_w)),
        (0b10, 0b111) => Some(store(Width::Double, SP, rs2_sp, store_sp_d)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(raw: u32) -> Instruction {
        let d = decode(raw).unwrap_or_else(|| panic!("{raw:#010x} did not decode"));
        assert_eq!(d.length, 4);
        d.instruction
    }

    fn compressed(raw: u16) -> Instruction {
        let d =
            decode(raw as u32 | 0xDEAD_0000).unwrap_or_else(|| panic!("{raw:#06x} did not decode"));
        assert_eq!(d.length, 2);
        d.instruction
    }

    // Encodings below were produced by GNU as (riscv64-linux-gnu-as -march=rv64gc_svinval_h)
    // and checked with objdump.

    #[test]
    fn csr_instructions() {
        use CsrOp::*;
        // csrrw a0, sscratch, a1
        assert_eq!(
            full(0x14059573),
            Instruction::Csr { op: ReadWrite, csr: 0x140, rd: 10, source: CsrSource::Reg(11) }
        );
        // csrrs t0, sstatus, zero  (csrr t0, sstatus)
        assert_eq!(
            full(0x100022f3),
            Instruction::Csr { op: ReadSet, csr: 0x100, rd: 5, source: CsrSource::Reg(0) }
        );
        // csrrc zero, sie, t1  (csrc sie, t1)
        assert_eq!(
            full(0x10433073),
            Instruction::Csr { op: ReadClear, csr: 0x104, rd: 0, source: CsrSource::Reg(6) }
        );
        // csrrwi a0, satp, 5
        assert_eq!(
            full(0x1802d573),
            Instruction::Csr { op: ReadWrite, csr: 0x180, rd: 10, source: CsrSource::Imm(5) }
        );
        // csrrsi zero, sstatus, 2  (csrsi sstatus, 2)
        assert_eq!(
            full(0x10016073),
            Instruction::Csr { op: ReadSet, csr: 0x100, rd: 0, source: CsrSource::Imm(2) }
        );
        // csrrci a5, sip, 31
        assert_eq!(
            full(0x144ff7f3),
            Instruction::Csr { op: ReadClear, csr: 0x144, rd: 15, source: CsrSource::Imm(31) }
        );
        // rdtime a0 (csrrs a0, time, zero)
        assert_eq!(
            full(0xc0102573),
            Instruction::Csr { op: ReadSet, csr: 0xC01, rd: 10, source: CsrSource::Reg(0) }
        );
        // csrrw zero, 0xfff, ra  (highest CSR number)
        assert_eq!(
            full(0xfff09073),
            Instruction::Csr { op: ReadWrite, csr: 0xFFF, rd: 0, source: CsrSource::Reg(1) }
        );
        assert!(
            CsrSource::Imm(0).is_zero()
                && CsrSource::Reg(0).is_zero()
                && !CsrSource::Reg(1).is_zero()
        );
    }

    #[test]
    fn privileged_instructions() {
        assert_eq!(full(0x00000073), Instruction::Ecall);
        assert_eq!(full(0x00100073), Instruction::Ebreak);
        assert_eq!(full(0x10200073), Instruction::Sret);
        assert_eq!(full(0x30200073), Instruction::Mret);
        assert_eq!(full(0x10500073), Instruction::Wfi);
        assert_eq!(full(0x12000073), Instruction::SfenceVma { rs1: 0, rs2: 0 }); // sfence.vma
        assert_eq!(full(0x12b50073), Instruction::SfenceVma { rs1: 10, rs2: 11 }); // sfence.vma a0, a1
        assert_eq!(full(0x12050073), Instruction::SfenceVma { rs1: 10, rs2: 0 }); // sfence.vma a0
        assert_eq!(full(0x16b50073), Instruction::SinvalVma { rs1: 10, rs2: 11 }); // sinval.vma a0, a1
        assert_eq!(full(0x18000073), Instruction::SfenceWInval);
        assert_eq!(full(0x18100073), Instruction::SfenceInvalIr);
        assert_eq!(full(0x22000073), Instruction::Hypervisor); // hfence.vvma
        assert_eq!(full(0x62000073), Instruction::Hypervisor); // hfence.gvma
        assert_eq!(full(0x6005c573), Instruction::Hypervisor); // hlv.b a0, (a1)
        // Reserved forms: rd != 0 on sret, rs1 != 0 on wfi, unknown funct12.
        assert_eq!(decode(0x10200473), None);
        assert_eq!(decode(0x10508073), None);
        assert_eq!(decode(0x7b200073), None); // dret is not ours to decode
    }

    #[test]
    fn loads_and_stores() {
        use Width::*;
        // lb a0, -1(a1)
        assert_eq!(
            full(0xfff58503),
            Instruction::Load { width: Byte, signed: true, rd: 10, rs1: 11, offset: -1 }
        );
        // lhu t0, 2046(s0)
        assert_eq!(
            full(0x7fe45283),
            Instruction::Load { width: Half, signed: false, rd: 5, rs1: 8, offset: 2046 }
        );
        // lw a0, 0(a0)
        assert_eq!(
            full(0x00052503),
            Instruction::Load { width: Word, signed: true, rd: 10, rs1: 10, offset: 0 }
        );
        // lwu a0, 4(a1)
        assert_eq!(
            full(0x0045e503),
            Instruction::Load { width: Word, signed: false, rd: 10, rs1: 11, offset: 4 }
        );
        // ld ra, -2048(sp)
        assert_eq!(
            full(0x80013083),
            Instruction::Load { width: Double, signed: true, rd: 1, rs1: 2, offset: -2048 }
        );
        // sb a1, 5(a0)
        assert_eq!(
            full(0x00b502a3),
            Instruction::Store { width: Byte, rs1: 10, rs2: 11, offset: 5 }
        );
        // sh t1, -6(t0)
        assert_eq!(
            full(0xfe629d23),
            Instruction::Store { width: Half, rs1: 5, rs2: 6, offset: -6 }
        );
        // sw a2, 2047(a3)
        assert_eq!(
            full(0x7ec6afa3),
            Instruction::Store { width: Word, rs1: 13, rs2: 12, offset: 2047 }
        );
        // sd s1, -2048(sp)
        assert_eq!(
            full(0x80913023),
            Instruction::Store { width: Double, rs1: 2, rs2: 9, offset: -2048 }
        );
        // flw fa0, 8(a0)
        assert_eq!(
            full(0x00852507),
            Instruction::FpLoad { width: Word, rd: 10, rs1: 10, offset: 8 }
        );
        // fld ft0, -8(sp)
        assert_eq!(
            full(0xff813007),
            Instruction::FpLoad { width: Double, rd: 0, rs1: 2, offset: -8 }
        );
        // fsw fa1, 12(a0)
        assert_eq!(
            full(0x00b52627),
            Instruction::FpStore { width: Word, rs1: 10, rs2: 11, offset: 12 }
        );
        // fsd ft1, 16(sp)
        assert_eq!(
            full(0x00113827),
            Instruction::FpStore { width: Double, rs1: 2, rs2: 1, offset: 16 }
        );
        // funct3 == 7 on LOAD is reserved
        assert_eq!(decode(0x00057503), None);
    }

    #[test]
    fn atomics() {
        // amoswap.w.aqrl a0, a1, (a2)
        assert_eq!(
            full(0x0eb6252f),
            Instruction::Amo {
                op: AmoOp::Swap,
                width: Width::Word,
                rd: 10,
                rs1: 12,
                rs2: 11,
                aq: true,
                rl: true
            }
        );
        // lr.d t0, (a0)
        assert_eq!(
            full(0x100532af),
            Instruction::Amo {
                op: AmoOp::Lr,
                width: Width::Double,
                rd: 5,
                rs1: 10,
                rs2: 0,
                aq: false,
                rl: false
            }
        );
        // sc.d t1, t2, (a0)
        assert_eq!(
            full(0x1875332f),
            Instruction::Amo {
                op: AmoOp::Sc,
                width: Width::Double,
                rd: 6,
                rs1: 10,
                rs2: 7,
                aq: false,
                rl: false
            }
        );
        // amomaxu.d a0, a1, (a2)
        assert_eq!(
            full(0xe0b6352f),
            Instruction::Amo {
                op: AmoOp::Maxu,
                width: Width::Double,
                rd: 10,
                rs1: 12,
                rs2: 11,
                aq: false,
                rl: false
            }
        );
        // lr with rs2 != 0 is reserved
        assert_eq!(decode(0x101532af), None);
    }

    #[test]
    fn compressed_forms() {
        use Width::*;
        // c.lw a0, 4(a1)
        assert_eq!(
            compressed(0x41c8),
            Instruction::Load { width: Word, signed: true, rd: 10, rs1: 11, offset: 4 }
        );
        // c.lw a5, 124(a4)
        assert_eq!(
            compressed(0x5f7c),
            Instruction::Load { width: Word, signed: true, rd: 15, rs1: 14, offset: 124 }
        );
        // c.ld s0, 248(s1)
        assert_eq!(
            compressed(0x7ce0),
            Instruction::Load { width: Double, signed: true, rd: 8, rs1: 9, offset: 248 }
        );
        // c.sw a2, 64(a3)
        assert_eq!(
            compressed(0xc2b0),
            Instruction::Store { width: Word, rs1: 13, rs2: 12, offset: 64 }
        );
        // c.sd a0, 8(a1)
        assert_eq!(
            compressed(0xe588),
            Instruction::Store { width: Double, rs1: 11, rs2: 10, offset: 8 }
        );
        // c.fld fa0, 16(a0)
        assert_eq!(
            compressed(0x2908),
            Instruction::FpLoad { width: Double, rd: 10, rs1: 10, offset: 16 }
        );
        // c.fsd fs0, 248(a5)
        assert_eq!(
            compressed(0xbfe0),
            Instruction::FpStore { width: Double, rs1: 15, rs2: 8, offset: 248 }
        );
        // c.lwsp ra, 252(sp)
        assert_eq!(
            compressed(0x50fe),
            Instruction::Load { width: Word, signed: true, rd: 1, rs1: 2, offset: 252 }
        );
        // c.ldsp s0, 504(sp)
        assert_eq!(
            compressed(0x747e),
            Instruction::Load { width: Double, signed: true, rd: 8, rs1: 2, offset: 504 }
        );
        // c.swsp a0, 252(sp)
        assert_eq!(
            compressed(0xdfaa),
            Instruction::Store { width: Word, rs1: 2, rs2: 10, offset: 252 }
        );
        // c.sdsp ra, 504(sp)
        assert_eq!(
            compressed(0xff86),
            Instruction::Store { width: Double, rs1: 2, rs2: 1, offset: 504 }
        );
        // c.fldsp ft0, 8(sp)
        assert_eq!(
            compressed(0x2022),
            Instruction::FpLoad { width: Double, rd: 0, rs1: 2, offset: 8 }
        );
        // c.fsdsp fs1, 496(sp)
        assert_eq!(
            compressed(0xbba6),
            Instruction::FpStore { width: Double, rs1: 2, rs2: 9, offset: 496 }
        );
        // c.fsdsp ft1, 16(sp)
        assert_eq!(
            compressed(0xa806),
            Instruction::FpStore { width: Double, rs1: 2, rs2: 1, offset: 16 }
        );
        assert_eq!(compressed(0x9002), Instruction::Ebreak);
        // c.lwsp with rd == 0 is reserved; c.addi and all-zero are not ours.
        assert_eq!(decode(0x4002), None);
        assert_eq!(decode(0x0505), None);
        assert_eq!(decode(0x0000), None);
    }

    #[test]
    fn lengths() {
        assert_eq!(length(0x0001), 2);
        assert_eq!(length(0x0002), 2);
        assert_eq!(length(0x0000), 2);
        assert_eq!(length(0x0073), 4);
        assert_eq!(Width::Double.bytes(), 8);
    }
}
