//! Interrupt delivery: after any exit, the guest resumes at its trap vector exactly when a
//! hart would have taken an interrupt (docs/trap-path.md, "When an interrupt is taken").
//!
//! Two checks. With the clock stopped at the instant an exit is handled, every emulated
//! instruction is compared, in every interrupt state, with a small reference hart written
//! from the privileged spec. With a clock that moves at every look (as time moves while an
//! exit is handled), random instruction sequences check the invariants that must hold
//! whatever the timing: nothing deliverable is left pending when the guest is entered, and
//! no emulated `sip` read shows an interrupt the hart should already have taken.

use super::*;
use std::vec;

use crate::Entry;

/// Encodes a Zicsr instruction.
fn csr_insn(funct3: u32, rd: u32, rs1: u32, csr: u16) -> u32 {
    (csr as u32) << 20 | rs1 << 15 | funct3 << 12 | rd << 7 | 0x73
}

const A0: u32 = 10;
const A1: u32 = 11;
const A2: u32 = 12;
/// a3, a4, a5: where the runs of `sip` reads go.
const READERS: [u32; 3] = [13, 14, 15];
/// What a register holds until an emulated instruction writes it.
const UNTOUCHED: u64 = 0xdead_beef;
const SRET: u32 = 0x1020_0073;
const WFI: u32 = 0x1050_0073;
/// `set_timer(a0)` through SBI TIME: a7 = "TIME", a6 = 0.
const SET_TIMER: u32 = 0x0000_0073;
const EID_TIME: u64 = 0x5449_4D45;

/// The instructions whose effect on interrupts the tests exercise.
fn instructions() -> Vec<(u32, &'static str)> {
    vec![
        (csr_insn(2, A0, 0, num::SIP), "csrr a0, sip"),
        (csr_insn(6, 0, 2, num::SSTATUS), "csrsi sstatus, SIE"),
        (csr_insn(7, 0, 2, num::SSTATUS), "csrci sstatus, SIE"),
        (csr_insn(2, 0, A1, num::SIE), "csrs sie, a1"),
        (csr_insn(3, 0, A1, num::SIE), "csrc sie, a1"),
        (csr_insn(6, 0, 2, num::SIP), "csrsi sip, SSIP"),
        (csr_insn(7, 0, 2, num::SIP), "csrci sip, SSIP"),
        (csr_insn(1, 0, A2, num::STIMECMP), "csrw stimecmp, a2"),
        (SRET, "sret"),
        (WFI, "wfi"),
        (SET_TIMER, "SBI set_timer(a2)"),
    ]
}

/// The interrupt state of a hart, and what the reference executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hart {
    supervisor: bool,
    sie_bit: bool,
    spie: bool,
    spp: bool,
    sie: u64,
    ssip: bool,
    stimecmp: u64,
    pc: u64,
    sepc: u64,
    scause: u64,
    a0: u64,
    waiting: bool,
}

const STVEC: u64 = 0x8030_0000;

impl Hart {
    fn of(v: &Vcpu) -> Self {
        Self {
            supervisor: v.privilege == Privilege::Supervisor,
            sie_bit: v.csrs.status(Sstatus::SIE),
            spie: v.csrs.status(Sstatus::SPIE),
            spp: v.csrs.status(Sstatus::SPP),
            sie: v.csrs.sie,
            ssip: v.csrs.sip_soft & 2 != 0,
            stimecmp: v.csrs.stimecmp,
            pc: v.regs.pc,
            sepc: v.csrs.sepc,
            scause: v.csrs.scause,
            a0: v.regs.get(10),
            waiting: v.waiting.is_some(),
        }
    }

    fn sip(&self, now: u64, external: bool) -> u64 {
        (self.ssip as u64) << 1 | ((now >= self.stimecmp) as u64) << 5 | (external as u64) << 9
    }

    /// The interrupt the spec says is taken before the next instruction.
    fn deliverable(&self, now: u64, external: bool) -> Option<u64> {
        let ready = self.sip(now, external) & self.sie;
        if ready == 0 || (self.supervisor && !self.sie_bit) {
            return None;
        }
        [9u64, 1, 5].into_iter().find(|c| ready & 1 << c != 0)
    }

    fn take(&mut self, cause: u64) {
        self.sepc = self.pc;
        self.scause = INTERRUPT_BIT | cause;
        self.spie = self.sie_bit;
        self.sie_bit = false;
        self.spp = self.supervisor;
        self.supervisor = true;
        self.pc = STVEC;
    }

    /// One instruction of virtual S-mode at the instant `now`, as the privileged spec has
    /// it: an interrupt deliverable before it is taken instead; after it, one that became
    /// deliverable is taken before the next instruction. `a1` and `a2` are the operands.
    fn step(&mut self, insn: u32, a1: u64, a2: u64, now: u64, external: bool) {
        if let Some(cause) = self.deliverable(now, external) {
            self.take(cause);
            return;
        }
        let next = self.pc + 4;
        match insn {
            SRET => {
                self.supervisor = self.spp;
                self.sie_bit = self.spie;
                self.spie = true;
                self.spp = false;
                self.pc = self.sepc;
            }
            WFI => {
                self.pc = next;
                // wfi completes once an interrupt is pending and enabled in sie.
                self.waiting = self.sip(now, external) & self.sie == 0;
            }
            SET_TIMER => {
                self.stimecmp = a2;
                self.pc = next;
            }
            _ => {
                let csr = (insn >> 20) as u16;
                let funct3 = (insn >> 12) & 7;
                let rs1 = (insn >> 15) & 31;
                let src = match rs1 {
                    _ if funct3 >= 5 => rs1 as u64,
                    A1 => a1,
                    A2 => a2,
                    _ => 0,
                };
                match (csr, funct3 & 3) {
                    (num::SIP, 2) if (insn >> 7) & 31 == A0 => self.a0 = self.sip(now, external),
                    (num::SSTATUS, 2) => self.sie_bit |= src & 2 != 0,
                    (num::SSTATUS, 3) => self.sie_bit &= src & 2 == 0,
                    (num::SIE, 2) => self.sie |= src & 0x222,
                    (num::SIE, 3) => self.sie &= !src,
                    (num::SIP, 2) => self.ssip |= src & 2 != 0,
                    (num::SIP, 3) => self.ssip &= src & 2 == 0,
                    (num::STIMECMP, 1) => self.stimecmp = src,
                    other => panic!("the reference does not model {other:?}"),
                }
                self.pc = next;
            }
        }
        if !self.waiting
            && let Some(cause) = self.deliverable(now, external)
        {
            self.take(cause);
        }
    }
}

/// Runs one exit of `insn` on the vCPU, then the step before re-entry.
fn exit_and_enter(v: &mut Vcpu, h: &mut FakeHost, insn: u32) -> Entry {
    let action = if insn == SET_TIMER {
        v.regs.set(17, EID_TIME);
        v.regs.set(16, 0);
        v.regs.set(10, v.regs.get(12));
        v.handle_exception(Exception::EcallFromU, 0, h)
    } else {
        exec(v, h, insn)
    };
    assert!(matches!(action, Action::Resume | Action::Wait), "{action:?}");
    let lines = Lines { now: h.now(), external: h.external };
    let entry = v.prepare_entry(lines);
    if entry == Entry::Run {
        assert_eq!(v.deliverable_interrupt(lines), None, "entered with an interrupt deliverable");
    }
    entry
}

/// Every interrupt state (privilege S, SIE, SPIE, SPP, `sie`, SSIP, the timer before, at
/// or after the instant, the external line) and every instruction of [`instructions`]:
/// the vCPU ends where the reference hart does.
#[test]
fn every_exit_matches_a_hart_at_one_instant() {
    const NOW: u64 = 1000;
    let mut cases = 0;
    for bits in 0..1u32 << 9 {
        let bit = |i: u32| bits & 1 << i != 0;
        let sie = [0x2, 0x20, 0x200]
            .iter()
            .enumerate()
            .filter(|(i, _)| bit(*i as u32))
            .fold(0, |a, (_, m)| a | m);
        for stimecmp in [NOW - 1, NOW, NOW + 1, u64::MAX] {
            for (insn, what) in instructions() {
                for operand in [0x2, 0x20, 0x200, 0x222, NOW - 5, NOW + 5] {
                    let mut h = FakeHost::new();
                    h.now.set(NOW);
                    h.external = bit(3);
                    let mut v = vcpu();
                    v.csrs.set_status(Sstatus::SIE, bit(4));
                    v.csrs.set_status(Sstatus::SPIE, bit(5));
                    v.csrs.set_status(Sstatus::SPP, bit(6));
                    v.csrs.sie = sie;
                    v.csrs.sip_soft = if bit(7) { 2 } else { 0 };
                    v.csrs.stimecmp = stimecmp;
                    v.csrs.sepc = if bit(8) { 0x8020_1000 } else { 0x4000 };
                    v.regs.set(A1 as u8, operand);
                    v.regs.set(A2 as u8, operand);
                    let mut want = Hart::of(&v);
                    want.step(insn, operand, operand, NOW, h.external);
                    let entry = exit_and_enter(&mut v, &mut h, insn);
                    let mut got = Hart::of(&v);
                    // sret and SBI clobber registers the reference does not model.
                    if insn == SET_TIMER {
                        got.a0 = want.a0;
                    }
                    assert_eq!(
                        got, want,
                        "{what} from state {bits:#b}, stimecmp {stimecmp}, operand {operand:#x}"
                    );
                    assert_eq!(entry == Entry::Wait, want.waiting, "{what}");
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 100_000);
}

/// A clock that moves while exits are handled, random states and random instruction
/// sequences (in virtual S- and U-mode; the fast path's clusters have their own tests,
/// tests/fast.rs): whatever the timing, the guest is never entered with
/// a deliverable interrupt, and an emulated `sip` read never shows an interrupt that is
/// enabled and globally enabled (the hart would have taken it before the read).
#[test]
fn no_timing_leaves_an_interrupt_behind() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let insns = instructions();
    let mut reads = 0;
    for _ in 0..20_000 {
        let mut h = FakeHost::new();
        h.now.set(100);
        h.tick = next() % 3;
        let mut v = vcpu();
        v.csrs.sie = next() & 0x222;
        v.csrs.stimecmp = 100 + next() % 40;
        v.csrs.set_status(Sstatus::SIE, next() % 2 == 0);
        if next() % 4 == 0 {
            v.privilege = Privilege::User;
        }
        for _ in 0..8 {
            // A run of up to three instructions at the pc: the first traps. One run in three
            // reads `sip` into a3, a4 and a5, with the state unchanged throughout.
            let reading = next() % 3 == 0;
            let run: Vec<u32> = if reading {
                READERS.iter().map(|&rd| csr_insn(2, rd, 0, num::SIP)).collect()
            } else {
                (0..1 + next() % 3)
                    .map(|_| insns[(next() % insns.len() as u64) as usize].0)
                    .collect()
            };
            let pc = v.regs.pc;
            load_program(&v, &mut h, &run);
            v.regs.set(A1 as u8, next() & 0x222);
            v.regs.set(A2 as u8, h.now.get() + next() % 30);
            h.external = next() % 5 == 0;
            let enabled = match v.privilege {
                Privilege::User => v.csrs.sie,
                Privilege::Supervisor if v.csrs.status(Sstatus::SIE) => v.csrs.sie,
                Privilege::Supervisor => 0,
            };
            let emulated = v.privilege == Privilege::Supervisor;
            for rd in READERS {
                v.regs.set(rd as u8, UNTOUCHED);
            }
            let entry = exit_and_enter(&mut v, &mut h, run[0]);
            if reading && emulated {
                for rd in READERS {
                    let read = v.regs.get(rd as u8);
                    if read != UNTOUCHED {
                        assert_eq!(
                            read & enabled,
                            0,
                            "sip read {read:#x} with {enabled:#x} enabled"
                        );
                        reads += 1;
                    }
                }
            }
            if entry == Entry::Wait {
                // Time passes until the deadline: the wait ends when an interrupt is
                // pending and enabled.
                h.now.set(h.now.get().max(v.csrs.stimecmp));
                let lines = Lines { now: h.now(), external: h.external };
                let woke = v.prepare_entry(lines);
                assert_eq!(woke == Entry::Run, v.csrs.pending_enabled(lines) != 0);
                if woke == Entry::Wait {
                    break;
                }
            }
            // The guest runs; it moves on to fresh code.
            v.regs.pc = v.regs.pc.max(pc) + 0x100;
        }
    }
    assert!(reads > 100, "only {reads} sip reads were checked");
}
