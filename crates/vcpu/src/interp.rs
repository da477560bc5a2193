//! The base integer instructions a constrained LR/SC loop may hold between its LR and its
//! SC (unprivileged spec, "Eventual success of store-conditional instructions": base I
//! instructions but loads, stores, backward jumps, JALR, FENCE and SYSTEM), carried out on
//! the vCPU's registers. hypocaust runs them only after an LR it emulated, up to the SC,
//! which the hart could not complete without the reservation the LR would have made.
//!
//! [`step_any`] adds what else code run from hypocaust's window needs that touches
//! neither memory nor privileged state: JALR (and C.JR/C.JALR), the M extension and
//! FENCE/FENCE.I (nothing to do: hypocaust carries out every access of such code itself,
//! in order, and reads its instructions afresh).

use crate::vcpu::Regs;

/// Sign-extends the low `bits` bits of `value`.
fn sext(value: u64, bits: u32) -> u64 {
    (((value << (64 - bits)) as i64) >> (64 - bits)) as u64
}

fn bits(raw: u32, hi: u32, lo: u32) -> u64 {
    ((raw >> lo) & ((1 << (hi - lo + 1)) - 1)) as u64
}

/// A register-immediate or register-register ALU operation by `funct3` (and the
/// alternate-form bit), 64-bit.
fn alu(funct3: u32, alt: bool, a: u64, b: u64) -> u64 {
    match (funct3, alt) {
        (0, false) => a.wrapping_add(b),
        (0, true) => a.wrapping_sub(b),
        (1, _) => a << (b & 63),
        (2, _) => ((a as i64) < (b as i64)) as u64,
        (3, _) => (a < b) as u64,
        (4, _) => a ^ b,
        (5, false) => a >> (b & 63),
        (5, true) => ((a as i64) >> (b & 63)) as u64,
        (6, _) => a | b,
        _ => a & b,
    }
}

/// The same for the 32-bit (`W`) forms: the result sign-extended from 32 bits.
fn alu_w(funct3: u32, alt: bool, a: u64, b: u64) -> Option<u64> {
    let (a32, sh) = (a as u32, (b & 31) as u32);
    let r = match (funct3, alt) {
        (0, false) => a32.wrapping_add(b as u32),
        (0, true) => a32.wrapping_sub(b as u32),
        (1, false) => a32 << sh,
        (5, false) => a32 >> sh,
        (5, true) => ((a32 as i32) >> sh) as u32,
        _ => return None,
    };
    Some(r as i32 as i64 as u64)
}

fn branch(funct3: u32, a: u64, b: u64) -> Option<bool> {
    Some(match funct3 {
        0 => a == b,
        1 => a != b,
        4 => (a as i64) < (b as i64),
        5 => (a as i64) >= (b as i64),
        6 => a < b,
        7 => a >= b,
        _ => return None,
    })
}

/// Carries out the instruction `raw` at `pc` if it is one of those instructions: the next
/// pc; `None` (nothing changed) for anything else.
pub fn step(regs: &mut Regs, pc: u64, raw: u32) -> Option<u64> {
    if raw & 3 != 3 {
        return step_compressed(regs, pc, raw as u16);
    }
    let rd = bits(raw, 11, 7) as u8;
    let rs1 = regs.get(bits(raw, 19, 15) as u8);
    let rs2 = regs.get(bits(raw, 24, 20) as u8);
    let funct3 = bits(raw, 14, 12) as u32;
    let imm_i = sext(bits(raw, 31, 20), 12);
    let next = pc.wrapping_add(4);
    match raw & 0x7f {
        0x13 => {
            let shift = funct3 == 1 || funct3 == 5;
            let alt = shift && bits(raw, 31, 26) == 0x10;
            if shift && bits(raw, 31, 26) & !0x10 != 0 {
                return None;
            }
            let b = if shift { imm_i & 63 } else { imm_i };
            regs.set(rd, alu(funct3, alt, rs1, b));
        }
        0x1b => {
            let alt = bits(raw, 31, 25) == 0x20;
            let shift = funct3 != 0;
            if shift && bits(raw, 31, 25) & !0x20 != 0 {
                return None;
            }
            let b = if shift { imm_i & 31 } else { imm_i };
            regs.set(rd, alu_w(funct3, alt && shift, rs1, b)?);
        }
        0x33 | 0x3b => {
            let funct7 = bits(raw, 31, 25);
            let alt = match funct7 {
                0 => false,
                0x20 if funct3 == 0 || funct3 == 5 => true,
                _ => return None,
            };
            let value = if raw & 0x7f == 0x33 {
                alu(funct3, alt, rs1, rs2)
            } else {
                alu_w(funct3, alt, rs1, rs2)?
            };
            regs.set(rd, value);
        }
        0x37 => regs.set(rd, sext(raw as u64 & 0xffff_f000, 32)),
        0x17 => regs.set(rd, pc.wrapping_add(sext(raw as u64 & 0xffff_f000, 32))),
        0x63 => {
            let offset = sext(
                bits(raw, 31, 31) << 12
                    | bits(raw, 7, 7) << 11
                    | bits(raw, 30, 25) << 5
                    | bits(raw, 11, 8) << 1,
                13,
            );
            return Some(if branch(funct3, rs1, rs2)? { pc.wrapping_add(offset) } else { next });
        }
        0x6f => {
            let offset = sext(
                bits(raw, 31, 31) << 20
                    | bits(raw, 19, 12) << 12
                    | bits(raw, 20, 20) << 11
                    | bits(raw, 30, 21) << 1,
                21,
            );
            regs.set(rd, next);
            return Some(pc.wrapping_add(offset));
        }
        _ => return None,
    }
    Some(next)
}

/// Carries out `raw` at `pc` if it is a [`step`] instruction, JALR, C.JR, C.JALR, an M
/// extension instruction or FENCE/FENCE.I: the next pc; `None` (nothing changed) else.
pub fn step_any(regs: &mut Regs, pc: u64, raw: u32) -> Option<u64> {
    if let Some(next) = step(regs, pc, raw) {
        return Some(next);
    }
    if raw & 3 != 3 {
        // C.JR / C.JALR: quadrant 2, funct4 100x, rs1 not 0, rs2 0.
        let (funct4, rs1, rs2) = (bits(raw, 15, 12), bits(raw, 11, 7) as u8, bits(raw, 6, 2));
        if raw & 3 != 2 || rs1 == 0 || rs2 != 0 || funct4 & !1 != 0b1000 {
            return None;
        }
        let target = regs.get(rs1) & !1;
        if funct4 == 0b1001 {
            regs.set(1, pc.wrapping_add(2));
        }
        return Some(target);
    }
    let rd = bits(raw, 11, 7) as u8;
    let a = regs.get(bits(raw, 19, 15) as u8);
    let b = regs.get(bits(raw, 24, 20) as u8);
    let funct3 = bits(raw, 14, 12) as u32;
    let next = pc.wrapping_add(4);
    match raw & 0x7f {
        0x67 if funct3 == 0 => {
            let target = a.wrapping_add(sext(bits(raw, 31, 20), 12)) & !1;
            regs.set(rd, next);
            return Some(target);
        }
        0x33 if bits(raw, 31, 25) == 1 => regs.set(rd, muldiv(funct3, a, b)),
        0x3b if bits(raw, 31, 25) == 1 => regs.set(rd, muldiv_w(funct3, a, b)?),
        // FENCE, FENCE.TSO, PAUSE, FENCE.I.
        0x0f if funct3 <= 1 => {}
        _ => return None,
    }
    Some(next)
}

/// An M extension operation by `funct3`, 64-bit (division by zero and overflow as the
/// spec gives them: no trap).
fn muldiv(funct3: u32, a: u64, b: u64) -> u64 {
    let (sa, sb) = (a as i64, b as i64);
    match funct3 {
        0 => a.wrapping_mul(b),
        1 => ((sa as i128 * sb as i128) >> 64) as u64,
        2 => ((sa as i128 * b as i128) >> 64) as u64,
        3 => ((a as u128 * b as u128) >> 64) as u64,
        4 if b == 0 => u64::MAX,
        4 => sa.wrapping_div(sb) as u64,
        5 => a.checked_div(b).unwrap_or(u64::MAX),
        6 if b == 0 => a,
        6 => sa.wrapping_rem(sb) as u64,
        _ => a.checked_rem(b).unwrap_or(a),
    }
}

/// The 32-bit (`W`) M extension forms, sign-extended from 32 bits.
fn muldiv_w(funct3: u32, a: u64, b: u64) -> Option<u64> {
    let (a32, b32) = (a as u32, b as u32);
    let (sa, sb) = (a32 as i32, b32 as i32);
    let r = match funct3 {
        0 => a32.wrapping_mul(b32),
        4 if b32 == 0 => u32::MAX,
        4 => sa.wrapping_div(sb) as u32,
        5 => a32.checked_div(b32).unwrap_or(u32::MAX),
        6 if b32 == 0 => a32,
        6 => sa.wrapping_rem(sb) as u32,
        7 => a32.checked_rem(b32).unwrap_or(a32),
        _ => return None,
    };
    Some(r as i32 as i64 as u64)
}

fn step_compressed(regs: &mut Regs, pc: u64, raw: u16) -> Option<u64> {
    let raw = raw as u32;
    let next = pc.wrapping_add(2);
    let rd = bits(raw, 11, 7) as u8;
    let rs2 = bits(raw, 6, 2) as u8;
    // The 3-bit register fields name x8..x15.
    let rd_p = 8 + bits(raw, 9, 7) as u8;
    let rs2_p = 8 + bits(raw, 4, 2) as u8;
    let imm6 = sext(bits(raw, 12, 12) << 5 | bits(raw, 6, 2), 6);
    let funct3 = bits(raw, 15, 13);
    match (raw & 3, funct3) {
        // c.addi, c.addiw, c.li
        (1, 0) => regs.set(rd, regs.get(rd).wrapping_add(imm6)),
        (1, 1) if rd != 0 => regs.set(rd, (regs.get(rd).wrapping_add(imm6)) as i32 as i64 as u64),
        (1, 2) => regs.set(rd, imm6),
        // c.lui (c.addi16sp is rd = 2)
        (1, 3) if rd != 2 && imm6 != 0 => regs.set(rd, imm6 << 12),
        (1, 3) if rd == 2 => {
            let imm = sext(
                bits(raw, 12, 12) << 9
                    | bits(raw, 4, 3) << 7
                    | bits(raw, 5, 5) << 6
                    | bits(raw, 2, 2) << 5
                    | bits(raw, 6, 6) << 4,
                10,
            );
            regs.set(2, regs.get(2).wrapping_add(imm));
        }
        (1, 4) => {
            let a = regs.get(rd_p);
            let shamt = bits(raw, 12, 12) << 5 | bits(raw, 6, 2);
            let value = match bits(raw, 11, 10) {
                0 => a >> shamt,
                1 => ((a as i64) >> shamt) as u64,
                2 => a & imm6,
                _ => {
                    let b = regs.get(rs2_p);
                    match (bits(raw, 12, 12), bits(raw, 6, 5)) {
                        (0, 0) => a.wrapping_sub(b),
                        (0, 1) => a ^ b,
                        (0, 2) => a | b,
                        (0, 3) => a & b,
                        (1, 0) => alu_w(0, true, a, b)?,
                        (1, 1) => alu_w(0, false, a, b)?,
                        _ => return None,
                    }
                }
            };
            regs.set(rd_p, value);
        }
        // c.j
        (1, 5) => {
            let offset = sext(
                bits(raw, 12, 12) << 11
                    | bits(raw, 8, 8) << 10
                    | bits(raw, 10, 9) << 8
                    | bits(raw, 6, 6) << 7
                    | bits(raw, 7, 7) << 6
                    | bits(raw, 2, 2) << 5
                    | bits(raw, 11, 11) << 4
                    | bits(raw, 5, 3) << 1,
                12,
            );
            return Some(pc.wrapping_add(offset));
        }
        // c.beqz, c.bnez
        (1, 6 | 7) => {
            let offset = sext(
                bits(raw, 12, 12) << 8
                    | bits(raw, 6, 5) << 6
                    | bits(raw, 2, 2) << 5
                    | bits(raw, 11, 10) << 3
                    | bits(raw, 4, 3) << 1,
                9,
            );
            let zero = regs.get(rd_p) == 0;
            return Some(if zero == (funct3 == 6) { pc.wrapping_add(offset) } else { next });
        }
        // c.slli
        (2, 0) => regs.set(rd, regs.get(rd) << (bits(raw, 12, 12) << 5 | bits(raw, 6, 2))),
        // c.mv, c.add (c.jr, c.jalr, c.ebreak have rs2 = 0)
        (2, 4) if rs2 != 0 => {
            let value = if bits(raw, 12, 12) == 0 {
                regs.get(rs2)
            } else {
                regs.get(rd).wrapping_add(regs.get(rs2))
            };
            regs.set(rd, value);
        }
        _ => return None,
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: u32, setup: &[(u8, u64)]) -> (Regs, Option<u64>) {
        let mut r = Regs::default();
        for &(reg, v) in setup {
            r.set(reg, v);
        }
        let next = step(&mut r, 0x1000, raw);
        (r, next)
    }

    #[test]
    fn base_integer_instructions() {
        // addi a0, a1, -1
        let (r, n) = run(0xfff5_8513, &[(11, 5)]);
        assert_eq!((r.get(10), n), (4, Some(0x1004)));
        // sub a0, a1, a2
        let (r, _) = run(0x40c5_8533, &[(11, 5), (12, 7)]);
        assert_eq!(r.get(10), u64::MAX - 1);
        // addw a0, a1, a2: wraps at 32 bits, sign-extended
        let (r, _) = run(0x00c5_853b, &[(11, 0x7fff_ffff), (12, 1)]);
        assert_eq!(r.get(10), 0xffff_ffff_8000_0000);
        // srai a0, a1, 4
        let (r, _) = run(0x4045_d513, &[(11, 0x8000_0000_0000_0000)]);
        assert_eq!(r.get(10), 0xf800_0000_0000_0000);
        // lui a0, 0x80000: sign-extended
        let (r, _) = run(0x8000_0537, &[]);
        assert_eq!(r.get(10), 0xffff_ffff_8000_0000);
        // bne a1, a2, +12: taken and not
        assert_eq!(run(0x00c5_9663, &[(11, 1)]).1, Some(0x100c));
        assert_eq!(run(0x00c5_9663, &[]).1, Some(0x1004));
        // ld, sd, jalr, ecall, mul: not for here
        for raw in [0x0005_b503, 0x00c5_b023, 0x0005_8067, 0x0000_0073, 0x02c5_8533] {
            assert_eq!(run(raw, &[]).1, None, "{raw:#x}");
        }
    }

    #[test]
    fn compressed_forms() {
        // c.bnez a3, -4 (from 0x1000 to 0xffc) and not taken
        assert_eq!(run(0xfef5, &[(13, 1)]).1, Some(0xffc));
        assert_eq!(run(0xfef5, &[]).1, Some(0x1002));
        // c.mv a0, a1; c.add a0, a1; c.li a0, -3; c.addi a0, 1
        assert_eq!(run(0x852e, &[(11, 9)]).0.get(10), 9);
        assert_eq!(run(0x952e, &[(10, 1), (11, 9)]).0.get(10), 10);
        assert_eq!(run(0x5575, &[]).0.get(10), u64::MAX - 2);
        assert_eq!(run(0x0505, &[(10, 1)]).0.get(10), 2);
        // c.ld, c.jr: not for here
        assert_eq!(run(0x6188, &[]).1, None);
        assert_eq!(run(0x8082, &[]).1, None);
    }

    #[test]
    fn jumps_muldiv_and_fences_in_step_any() {
        let any = |raw: u32, setup: &[(u8, u64)]| {
            let mut r = Regs::default();
            for &(reg, v) in setup {
                r.set(reg, v);
            }
            let next = step_any(&mut r, 0x1000, raw);
            (r, next)
        };
        // jalr ra, 5(a1): target's low bit cleared, ra = pc + 4
        let (r, n) = any(0x0055_80e7, &[(11, 0x2000)]);
        assert_eq!((r.get(1), n), (0x1004, Some(0x2004)));
        // jalr a1, 0(a1): the target is read before a1 is written
        let (r, n) = any(0x0005_85e7, &[(11, 0x3000)]);
        assert_eq!((r.get(11), n), (0x1004, Some(0x3000)));
        // c.jr a0; c.jalr a0
        assert_eq!(any(0x8502, &[(10, 0x4000)]).1, Some(0x4000));
        let (r, n) = any(0x9502, &[(10, 0x4000)]);
        assert_eq!((r.get(1), n), (0x1002, Some(0x4000)));
        // mul a0, a1, a2; mulh; mulhu; div by zero; rem overflow
        assert_eq!(any(0x02c5_8533, &[(11, 6), (12, 7)]).0.get(10), 42);
        assert_eq!(any(0x02c5_9533, &[(11, u64::MAX), (12, 2)]).0.get(10), u64::MAX);
        assert_eq!(any(0x02c5_b533, &[(11, u64::MAX), (12, 2)]).0.get(10), 1);
        assert_eq!(any(0x02c5_c533, &[(11, 5)]).0.get(10), u64::MAX);
        assert_eq!(any(0x02c5_e533, &[(11, 1 << 63), (12, u64::MAX)]).0.get(10), 0);
        assert_eq!(any(0x02c5_c533, &[(11, 1 << 63), (12, u64::MAX)]).0.get(10), 1 << 63);
        // divuw a0, a1, a2: sign-extended 32-bit result
        assert_eq!(any(0x02c5_d53b, &[(11, 0xffff_fffe), (12, 1)]).0.get(10), u64::MAX - 1);
        // fence rw, rw; fence.i
        assert_eq!(any(0x0330_000f, &[]).1, Some(0x1004));
        assert_eq!(any(0x0000_100f, &[]).1, Some(0x1004));
        // loads, ecall and FP stay out
        for raw in [0x0005_b503, 0x0000_0073, 0x02b5_7553] {
            assert_eq!(any(raw, &[]).1, None, "{raw:#x}");
        }
    }
}
