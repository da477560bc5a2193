//! The fast path against the general path (docs/trap-path.md, "The fast path").
//!
//! Random vCPU states, instruction sequences and hart conditions (code page cached or
//! not, the other views' trees cached or not, interrupts pending, FP state dirty): every
//! exit runs through [`Vcpu::fast_exit`] on a model hart and, from the same state, through
//! [`Vcpu::handle_exception`] one instruction at a time. What the fast path did must be
//! exactly what the general path does in some number of those steps — or, when it leaves
//! the exit to the run loop, nothing at all; and the model hart must end on the shadow
//! tree, `scounteren`, `sstatus` mirror and timer the run loop would have set.

use super::*;
use std::collections::BTreeMap;
use std::{format, vec};

use crate::fast::{CLUSTER, FastExit, FastHart, FastPath, MIRRORED, Switched, is_fast_csr};

/// What a register holds until an emulated instruction writes it.
const UNTOUCHED: u64 = 0xdead_beef;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// The real `satp` of the model's shadow tree of a view: (user, sum) of the vCPU.
fn tree(asid: u16, user: bool, sum: bool) -> u64 {
    let view = if user {
        1
    } else if sum {
        3
    } else {
        2
    };
    rv::csr::Satp::new(rv::csr::SatpMode::Sv39, asid, 0x9_0000 + view).0
}

/// The hart under the fast path, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelHart {
    now: std::cell::Cell<u64>,
    /// How far `time` moves at every look (0: a clock stopped for the exit).
    tick: u64,
    external: bool,
    /// Instruction words by pc.
    code: BTreeMap<u64, u32>,
    /// The code pages the vCPU's recent fetches left (by page and privilege).
    cached: Vec<(u64, bool)>,
    /// The real `sstatus.FS` and `MXR`.
    fs: u64,
    mxr: bool,
    satp: u64,
    scounteren: u64,
    timer: Option<u64>,
}

impl FastHart for ModelHart {
    fn lines(&self) -> Lines {
        let now = self.now.get();
        self.now.set(now + self.tick);
        Lines { now, external: self.external }
    }
    fn fetch(&self, v: &Vcpu, pc: u64) -> Option<u32> {
        let user = v.privilege == Privilege::User;
        if !self.cached.contains(&(pc & !0xfff, user)) || pc & 0xfff > 0xffc {
            return None;
        }
        Some(*self.code.get(&pc).unwrap_or(&0x0000_0013))
    }
    fn fs_dirty(&self) -> bool {
        self.fs == 3
    }
    fn mirror_status(&mut self, sstatus: u64) {
        self.fs = (sstatus >> rv::csr::SSTATUS_FS_SHIFT) & 3;
        self.mxr = sstatus & Sstatus::MXR.bits() != 0;
    }
    fn switch_tree(&mut self, satp: u64) -> u64 {
        core::mem::replace(&mut self.satp, satp)
    }
    fn set_scounteren(&mut self, value: u64) {
        self.scounteren = value;
    }
    fn arm_timer(&mut self, stimecmp: u64) {
        self.timer = Some(stimecmp);
    }
}

const CSRS: [u16; 16] = [
    num::SSTATUS,
    num::SIE,
    num::SIP,
    num::STVEC,
    num::SSCRATCH,
    num::SEPC,
    num::SCAUSE,
    num::STVAL,
    num::STIMECMP,
    num::SATP,
    num::SCOUNTEREN,
    num::SENVCFG,
    0x003, // fcsr
    0xC01, // time
    0x300, // mstatus
    0x5A8, // none
];

/// A random instruction of the kinds Linux's trap paths run, and some others.
fn instruction(rng: &mut Rng) -> u32 {
    let reg = |rng: &mut Rng| rng.pick(&[0u32, 1, 5, 8, 10, 11, 18, 31]);
    match rng.below(10) {
        0..=6 => {
            let funct3 = rng.pick(&[1u32, 2, 3, 5, 6, 7]);
            let csr = u32::from(rng.pick(&CSRS));
            csr << 20 | reg(rng) << 15 | funct3 << 12 | reg(rng) << 7 | 0x73
        }
        7 => 0x1020_0073, // sret
        8 => rng.pick(&[0x0000_0013, 0x1050_0073, 0x1200_0073, 0x3020_0073, 0x0000_0073]),
        _ => rng.next() as u32 | 3,
    }
}

/// The CSR and value a random `sstatus`, `sie`, ... should start with.
fn random_vcpu(rng: &mut Rng, now: u64) -> Vcpu {
    let features = Features { sstc: rng.chance(80), ..Features::default() };
    let mut v = Vcpu::new(0, features, 0x8020_0000, 0);
    for r in 1..32 {
        let any = rng.next();
        v.regs.x[r] = rng.pick(&[0, 1, 2, u64::MAX, any, 0x40_0000, 0x222, 0x2_0002]);
    }
    v.privilege = if rng.chance(75) { Privilege::Supervisor } else { Privilege::User };
    v.csrs.sstatus = rng.next() & crate::csr::SSTATUS_WRITABLE.bits();
    v.csrs.sie = rng.next() & 0x222;
    v.csrs.sip_soft = rng.next() & 2;
    v.csrs.stimecmp = rng.pick(&[u64::MAX, now - 1, now, now + 1, now + 1000]);
    v.csrs.stvec = rng.pick(&[0x8030_0000, 0x8030_0001, 0xffff_ffff_8030_0000]);
    let any = rng.next() & !1;
    v.csrs.sepc = rng.pick(&[0x8040_0000, 0x8020_0008, 0x8020_0100, 0x4_0000, any]);
    v.csrs.scause = rng.next();
    v.csrs.stval = rng.next();
    v.csrs.sscratch = rng.next();
    v.csrs.satp = if rng.chance(70) { tree(rng.below(4) as u16 + 1, false, false) } else { 0 };
    v.csrs.scounteren = rng.next() & 0xffff_ffff;
    v.regs.pc = 0x8020_0000 + 4 * rng.below(1030);
    v.effects = CsrEffect::empty();
    v
}

/// Everything of a vCPU an instruction can change.
fn state(v: &Vcpu) -> (crate::Regs, Privilege, crate::Csrs, Option<crate::Resume>) {
    (v.regs.clone(), v.privilege, v.csrs.clone(), v.waiting)
}

/// The run loop's look at the FP state after an exit: a Dirty hart makes the guest's FS
/// Dirty.
fn take_fs(v: &mut Vcpu, hart_fs: u64) {
    if v.csrs.sstatus & Sstatus::FS.bits() != 0 && hart_fs == 3 {
        v.csrs.set_fs_dirty();
    }
}

#[test]
fn fast_path_agrees_with_the_general_path() {
    let mut rng = Rng(0x5eed_fa57);
    let mut outcomes = BTreeMap::new();
    let mut longest = 0;
    for case in 0..40_000 {
        let now = 1_000_000;
        let v0 = random_vcpu(&mut rng, now);
        let user = v0.privilege == Privilege::User;
        let sum = v0.csrs.status(Sstatus::SUM);
        let paged = v0.csrs.satp != 0;
        let asid = if rng.chance(90) { rv::csr::Satp(v0.csrs.satp).asid() } else { 0 };
        let mut code = BTreeMap::new();
        let run = 1 + rng.below(8);
        for i in 0..run {
            code.insert(v0.regs.pc + 4 * i, instruction(&mut rng));
        }
        let ecall = user && rng.chance(70) || !user && rng.chance(10);
        if ecall {
            code.insert(v0.regs.pc, 0x0000_0073);
        }
        // Where an `sret` goes: more of the same.
        for i in 0..rng.below(4) {
            code.entry(v0.csrs.sepc + 4 * i).or_insert_with(|| instruction(&mut rng));
        }
        let mut v0 = v0;
        if !user && ecall {
            v0.regs.x[17] = if rng.chance(80) { 0x5449_4D45 } else { rng.below(0x20) };
            v0.regs.x[16] = rng.below(2);
        }
        let guest_fs = (v0.csrs.sstatus >> rv::csr::SSTATUS_FS_SHIFT) & 3;
        let mut hart = ModelHart {
            now: now.into(),
            tick: 0,
            external: rng.chance(20),
            code: code.clone(),
            cached: Vec::new(),
            fs: if guest_fs != 0 && rng.chance(50) { 3 } else { guest_fs },
            mxr: v0.csrs.status(Sstatus::MXR),
            satp: if paged { tree(asid, user, sum) } else { 0 },
            scounteren: v0.real_scounteren(),
            timer: None,
        };
        if rng.chance(90) {
            hart.cached.push((v0.regs.pc & !0xfff, user));
        }
        if rng.chance(30) {
            hart.cached.push((v0.csrs.sepc & !0xfff, rng.chance(50)));
        }
        let views = v0.csrs.satp;
        let view_asid = rv::csr::Satp(views).asid();
        let mut fast = FastPath {
            other_view_satp: if paged && rng.chance(80) { tree(view_asid, !user, sum) } else { 0 },
            // Named in U-mode too (for after a forwarded system call).
            sum_view_satp: if paged && rng.chance(80) { tree(view_asid, false, !sum) } else { 0 },
            ..FastPath::default()
        };
        let scause =
            if ecall { Exception::EcallFromU.code() } else { Exception::IllegalInstruction.code() };

        let mut v = v0.clone();
        let hart0 = hart.clone();
        let fast0 = fast.clone();
        let exit = v.fast_exit(&mut fast, scause, &mut hart);
        *outcomes.entry(format!("{exit:?}")).or_insert(0) += 1;
        let lines = hart.lines();
        let context = || format!("case {case}: {exit:?}\nbefore {v0:#x?}\ncode {code:x?}");

        if exit == FastExit::Trap {
            // Left to the run loop: nothing changed (but the FP state it takes as the run
            // loop does after every exit).
            let mut fs_taken = v0.clone();
            take_fs(&mut fs_taken, hart0.fs);
            assert!(state(&v) == state(&v0) || state(&v) == state(&fs_taken), "{}", context());
            assert_eq!(hart, hart0, "{}", context());
            assert_eq!(fast, fast0, "{}", context());
            continue;
        }
        // Where the fast path left the vCPU (before the run loop delivers an interrupt).
        let (user_now, sum_now) = (v.privilege == Privilege::User, v.csrs.status(Sstatus::SUM));
        let privilege_now = v.privilege;
        // The run loop's part: the FP state, and the interrupt the fast path left it.
        take_fs(&mut v, hart.fs);
        // What the fast path mirrored into the hart (FP state as the run loop takes it).
        let mirrored = v.csrs.sstatus & MIRRORED.bits();
        let mut before = v0.clone();
        take_fs(&mut before, hart0.fs);
        if mirrored != before.csrs.sstatus & MIRRORED.bits() {
            assert!(fast.switched.contains(Switched::STATUS), "{}", context());
            assert_eq!(hart.mxr, v.csrs.status(Sstatus::MXR), "{}", context());
            assert_eq!(hart.fs, mirrored >> rv::csr::SSTATUS_FS_SHIFT & 3, "{}", context());
        }
        if exit == FastExit::Deliver {
            assert!(v.deliverable_interrupt(lines).is_some(), "{}", context());
            assert_eq!(v.prepare_entry(lines), crate::Entry::Run);
        } else {
            assert!(v.deliverable_interrupt(lines).is_none(), "{}", context());
        }

        // The general path, one exit per instruction as the run loop takes them, until it
        // agrees.
        let mut r = v0.clone();
        take_fs(&mut r, hart0.fs);
        let mut host = FakeHost::new();
        host.now.set(now);
        host.external = hart0.external;
        host.code = code.clone();
        host.fetch = Some(0x0000_0013);
        let mut steps = 0;
        while state(&r) != state(&v) && steps <= CLUSTER {
            let bits = host.code.get(&r.regs.pc).copied().unwrap_or(0x13);
            let cause = if steps == 0 && ecall {
                Exception::EcallFromU
            } else {
                Exception::IllegalInstruction
            };
            let stval = if cause == Exception::EcallFromU { 0 } else { u64::from(bits) };
            r.handle_exception(cause, stval, &mut host);
            // The run loop's look before it enters the guest again.
            r.prepare_entry(lines);
            steps += 1;
        }
        assert_eq!(state(&r), state(&v), "{} (after {steps} general exits)", context());
        assert!(steps >= 1, "{}", context());
        longest = longest.max(steps);

        // The real hart as the run loop would set it for the vCPU: on the tree of its view
        // (whatever the ASID).
        if paged {
            let view = |satp: u64| rv::csr::Satp(satp).ppn();
            assert_eq!(view(hart.satp), view(tree(0, user_now, sum_now)), "{}", context());
        } else {
            assert_eq!(hart.satp, 0, "{}", context());
        }
        // The trees named for the next switches are those of the views they lead to.
        if fast.other_view_satp != 0 {
            assert_eq!(fast.other_view_satp, tree(view_asid, !user_now, sum_now), "{}", context());
        }
        if fast.sum_view_satp != 0 && !user_now {
            assert_eq!(fast.sum_view_satp, tree(view_asid, false, !sum_now), "{}", context());
        }
        if privilege_now != v0.privilege {
            assert!(fast.switched.contains(Switched::PRIVILEGE), "{}", context());
            let expected = if user_now { v.csrs.scounteren & 0xffff_ffff } else { 0xffff_ffff };
            assert_eq!(hart.scounteren, expected, "{}", context());
        }
        if sum_now != sum && !user_now {
            assert!(fast.switched.contains(Switched::VIEW), "{}", context());
        }
        if v.csrs.stimecmp != v0.csrs.stimecmp {
            assert!(fast.switched.contains(Switched::TIMER) || ecall, "{}", context());
            assert_eq!(hart.timer, Some(v.csrs.stimecmp), "{}", context());
        }
        let ecalls = u64::from(ecall);
        assert_eq!((fast.exits, fast.ecalls), (1 - ecalls, ecalls), "{}", context());
    }
    // The random states reach every outcome, and clusters of several instructions.
    for outcome in ["Trap", "Resume", "Deliver"] {
        assert!(outcomes.get(outcome).copied().unwrap_or(0) > 500, "{outcomes:?}");
    }
    assert!(longest >= 4, "longest cluster {longest}");
}

/// A vCPU in S-mode at 0x8020_0000 running `bits`, on a hart that has its code page.
fn directed(bits: u32, satp: u64) -> (Vcpu, ModelHart, FastPath) {
    let mut v = Vcpu::new(0, Features::default(), 0x8020_0000, 0);
    v.csrs.satp = satp;
    v.csrs.sepc = 0x8020_0100;
    let hart = ModelHart {
        now: 10.into(),
        tick: 0,
        external: false,
        code: BTreeMap::from([(0x8020_0000, bits)]),
        cached: vec![(0x8020_0000, false)],
        fs: 3,
        mxr: false,
        satp: if satp != 0 { tree(1, false, false) } else { 0 },
        scounteren: 0xffff_ffff,
        timer: None,
    };
    let fast = FastPath {
        other_view_satp: if satp != 0 { tree(1, true, false) } else { 0 },
        sum_view_satp: if satp != 0 { tree(1, false, true) } else { 0 },
        ..FastPath::default()
    };
    (v, hart, fast)
}

#[test]
fn fast_path_takes_the_exits_it_is_for() {
    let p = tree(1, false, false);
    let (s, u) = (Privilege::Supervisor, Privilege::User);
    let (ill, ec) = (Exception::IllegalInstruction.code(), Exception::EcallFromU.code());
    // (what, instruction, satp, privilege, SIE with SSI pending, trees cached, scause,
    // handled)
    let cases = [
        ("csrr sscratch", 0x1400_25f3, p, s, false, true, ill, true),
        ("csrs sstatus, SUM", 0x1004_a073, p, s, false, true, ill, true),
        ("sret to U", 0x1020_0073, p, s, false, true, ill, true),
        ("sret to U, Bare", 0x1020_0073, 0, s, false, false, ill, true),
        ("sret to U, no tree", 0x1020_0073, p, s, false, false, ill, false),
        ("system call", 0x0000_0073, p, u, false, true, ec, true),
        ("system call, Bare", 0x0000_0073, 0, u, false, false, ec, true),
        ("system call, no tree", 0x0000_0073, p, u, false, false, ec, false),
        ("SBI set_timer", 0x0000_0073, p, s, false, true, ec, true),
        ("csrw satp", 0x1805_9073, p, s, false, true, ill, false),
        ("an interrupt first", 0x1400_25f3, p, s, true, true, ill, false),
    ];
    for (what, bits, satp, privilege, pending, cached, scause, handled) in cases {
        let (mut v, mut hart, mut fast) = directed(bits, satp);
        v.privilege = privilege;
        v.regs.x[9] = Sstatus::SUM.bits();
        v.regs.x[17] = 0x5449_4D45;
        v.regs.x[10] = 1000;
        if pending {
            v.csrs.sstatus |= Sstatus::SIE.bits();
            v.csrs.sie = 2;
            v.csrs.sip_soft = 2;
        }
        if !cached {
            fast.other_view_satp = 0;
            fast.sum_view_satp = 0;
        }
        let exit = v.fast_exit(&mut fast, scause, &mut hart);
        assert_eq!(exit == FastExit::Resume, handled, "{what}: {exit:?}");
    }
}

#[test]
fn fast_csrs_are_storage_and_interrupt_registers() {
    for csr in [num::SATP, num::SCOUNTEREN, num::SENVCFG, 0x003, 0x300] {
        assert!(!is_fast_csr(csr), "{csr:#x}");
    }
    for csr in [num::SSTATUS, num::SIE, num::SIP, num::SEPC, num::STIMECMP] {
        assert!(is_fast_csr(csr), "{csr:#x}");
    }
}

/// Runs `program` at 0x8020_0000 in S-mode on the fast path; the vCPU after it.
fn cluster(program: &[u32], prepare: impl FnOnce(&mut Vcpu)) -> (Vcpu, FastExit) {
    let (mut v, mut hart, mut fast) = directed(program[0], tree(1, false, false));
    for (i, bits) in program.iter().enumerate() {
        hart.code.insert(0x8020_0000 + 4 * i as u64, *bits);
    }
    prepare(&mut v);
    let exit = v.fast_exit(&mut fast, Exception::IllegalInstruction.code(), &mut hart);
    (v, exit)
}

#[test]
fn linux_trap_entry_is_one_exit() {
    // csrrc s1, sstatus, t0; csrr s2, sepc; csrr s3, stval; csrr s4, scause;
    // csrr s5, sscratch; then a store.
    let program = [0x1002_b4f3, 0x1410_2973, 0x1430_29f3, 0x1420_2a73, 0x1400_2af3, 0x0081_3023];
    let (v, exit) = cluster(&program, |v| {
        v.csrs.sepc = 0x1234;
        v.csrs.stval = 0x77;
        v.csrs.scause = 8;
        v.csrs.sscratch = 0x99;
        v.regs.set(5, Sstatus::SUM.bits());
        v.csrs.sstatus |= Sstatus::SUM.bits();
    });
    assert_eq!(exit, FastExit::Resume);
    assert_eq!(v.regs.pc, 0x8020_0000 + 20, "stops before the store");
    assert_eq!(
        [v.regs.get(18), v.regs.get(19), v.regs.get(20), v.regs.get(21)],
        [0x1234, 0x77, 8, 0x99]
    );
    assert!(!v.csrs.status(Sstatus::SUM));
    assert_ne!(v.regs.get(9) & Sstatus::SUM.bits(), 0, "csrrc read the old sstatus");

    // At most CLUSTER, then the hart runs the next one (and traps on it).
    let (v, _) = cluster(&[0x1400_2573; 20], |_| {}); // csrr a0, sscratch
    assert_eq!(v.regs.pc, 0x8020_0000 + 4 * CLUSTER as u64);
}

#[test]
fn a_cluster_stops_where_the_hart_would_not_go_on() {
    let cases: [(&[u32], &str); 5] = [
        (&[0x1400_2573, 0x3000_2573], "csrr a0, mstatus is illegal: left to the hart"),
        (&[0x1400_2573, 0xc010_2573], "rdtime a0 runs on the hart itself"),
        (&[0x1400_2573, 0x1050_0073], "wfi is the run loop's"),
        (&[0x1400_2573, 0x1805_9073], "a satp write is the run loop's"),
        (&[0x1400_2573, 0x0000_0013], "a nop is the hart's"),
    ];
    for (program, what) in cases {
        let (v, exit) = cluster(program, |_| {});
        assert_eq!((v.regs.pc, exit), (0x8020_0004, FastExit::Resume), "{what}");
    }
    // The next page is not among the code pages: the hart fetches it.
    let (mut v, mut hart, mut fast) = directed(0x1400_2573, 0);
    v.regs.pc = 0x8020_0ffc;
    hart.code = BTreeMap::from([(0x8020_0ffc, 0x1400_2573), (0x8020_1000, 0x1400_2573)]);
    v.fast_exit(&mut fast, Exception::IllegalInstruction.code(), &mut hart);
    assert_eq!(v.regs.pc, 0x8020_1000);

    // csrsi sstatus, SIE with a timer interrupt pending and enabled: the interrupt comes
    // before the next instruction, so the csrr after it is not emulated.
    let (v, exit) = cluster(&[0x1001_6073, 0x1400_2573], |v| {
        v.csrs.sie = rv::csr::Interrupts::STI.bits();
        v.csrs.stimecmp = 0;
    });
    assert_eq!((v.regs.pc, exit), (0x8020_0004, FastExit::Deliver));
}

/// With a clock that moves at every look (as time moves while an exit is handled): a `sip`
/// the fast path reads never shows an interrupt that is enabled and globally enabled — the
/// hart would have taken it before the read — and it never resumes the guest with one
/// deliverable.
#[test]
fn no_timing_makes_the_fast_path_show_an_interrupt_it_should_take() {
    let mut rng = Rng(0x71c4_71c4);
    let mut reads = 0;
    for case in 0..20_000 {
        let (mut v, mut hart, mut fast) = directed(0, 0);
        // csrr a0, sip; csrr a1, sip; csrsi sstatus, SIE; csrr a2, sip
        let program = [0x1440_2573, 0x1440_25f3, 0x1001_6073, 0x1440_2673];
        let start = rng.below(3) as usize;
        for (i, bits) in program[start..].iter().enumerate() {
            hart.code.insert(0x8020_0000 + 4 * i as u64, *bits);
        }
        hart.tick = 1 + rng.below(3);
        v.csrs.sie = rng.next() & 0x222;
        v.csrs.stimecmp = 10 + rng.below(12);
        let sie = rng.chance(50);
        v.csrs.set_status(Sstatus::SIE, sie);
        for r in [10, 11, 12] {
            v.regs.x[r] = UNTOUCHED;
        }
        let exit = v.fast_exit(&mut fast, Exception::IllegalInstruction.code(), &mut hart);
        // a0 and a1 are read with SIE as it was, a2 after the `csrsi`.
        for (r, enabled) in [(10, sie), (11, sie), (12, true)] {
            let read = v.regs.x[r];
            if read != UNTOUCHED && enabled {
                reads += 1;
                assert_eq!(read & v.csrs.sie, 0, "case {case}: x{r} = {read:#x}");
            }
        }
        if exit == FastExit::Resume {
            let later = hart.lines();
            let before = Lines { now: later.now - hart.tick, ..later };
            assert!(v.deliverable_interrupt(before).is_none(), "case {case}");
        }
    }
    assert!(reads > 1000, "{reads}");
}
