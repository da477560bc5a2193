extern crate std;

use std::vec::Vec;

use rv::GuestPhysAddr;
use rv::csr::{self as num, Sstatus};
use rv::trap::{Exception, INTERRUPT_BIT, Interrupt};
use sbi_spec::binary as ret;

use crate::host::{Fault, Fence, Host, MachineIds};
use crate::sbi;
use crate::{Action, CsrEffect, Features, HartState, Lines, Privilege, ResetKind, Vcpu};

const RAM: std::ops::Range<u64> = 0x8000_0000..0x8010_0000;

#[derive(Default)]
struct FakeHost {
    /// The current time; it moves on by `tick` at every look, as time does while an exit
    /// is being handled.
    now: std::cell::Cell<u64>,
    tick: u64,
    /// The guest's external interrupt line.
    external: bool,
    ram: std::collections::BTreeMap<u64, u8>,
    console_out: Vec<u8>,
    console_in: Vec<u8>,
    fences: Vec<(Option<usize>, Fence)>,
    ipis: Vec<usize>,
    started: Vec<(usize, GuestPhysAddr, u64)>,
    harts: usize,
    /// Instruction bits `fetch_instruction` returns at any pc not in `code`.
    fetch: Option<u32>,
    /// Instruction bits by pc.
    code: std::collections::BTreeMap<u64, u32>,
    /// What `load_u64` returns for legacy pointers.
    load: Option<Result<u64, Fault>>,
    /// A device at [`DEVICE`]: register values by address, and the accesses made.
    device: std::collections::BTreeMap<u64, u64>,
    device_log: Vec<(u64, u64, Option<u64>)>,
    fregs: [u64; 32],
    /// Window pages the fake guest maps: virtual page -> (physical page, writable).
    pages: std::collections::BTreeMap<u64, (u64, bool)>,
    /// Instructions run out of line, with their `t0` and `t1`; each gives `t0 ^ t1`, or
    /// traps if its word is all ones in the funct7 field.
    out_of_line: Vec<(u32, u64, u64)>,
}

/// Where the fake guest's window starts: addresses from here are unmapped but for `pages`.
const WINDOW: u64 = 0xffff_fffe_0000_0000;

/// Where the fake device answers.
const DEVICE: std::ops::Range<u64> = 0x1000_0000..0x1000_1000;

impl FakeHost {
    fn new() -> Self {
        Self { harts: 1, ..Self::default() }
    }
}

impl Host for FakeHost {
    fn now(&self) -> u64 {
        let now = self.now.get();
        self.now.set(now + self.tick);
        now
    }
    fn external_irq(&self, _hart: usize) -> bool {
        self.external
    }
    fn fetch_instruction(&mut self, _: &Vcpu, pc: u64) -> Result<u32, Fault> {
        self.code.get(&pc).copied().or(self.fetch).ok_or((Exception::InstructionAccessFault, pc))
    }
    fn load_u64(&mut self, _: &Vcpu, va: u64) -> Result<u64, Fault> {
        self.load.unwrap_or(Err((Exception::LoadAccessFault, va)))
    }
    fn in_window(&self, _: &Vcpu, va: u64) -> bool {
        va >= WINDOW
    }
    fn run_out_of_line(&mut self, insn: u32, a: u64, b: u64) -> Option<u64> {
        self.out_of_line.push((insn, a, b));
        (insn >> 25 != 0x7f).then_some(a ^ b)
    }
    fn translate(
        &mut self,
        _: &Vcpu,
        va: u64,
        dir: crate::mmio::Direction,
    ) -> Result<GuestPhysAddr, Fault> {
        // The fake guest maps its window page by page in `pages` (virtual page ->
        // (physical page, writable)); elsewhere virtual = physical.
        match self.pages.get(&(va >> 12)) {
            Some(&(_, false)) if dir == crate::mmio::Direction::Store => {
                Err((Exception::StorePageFault, va))
            }
            Some(&(pa, _)) => Ok(GuestPhysAddr::new(pa << 12 | (va & 0xfff))),
            None if va >= WINDOW => {
                let e = match dir {
                    crate::mmio::Direction::Load => Exception::LoadPageFault,
                    crate::mmio::Direction::Store => Exception::StorePageFault,
                };
                Err((e, va))
            }
            None => Ok(GuestPhysAddr::new(va)),
        }
    }
    fn atomic_phys(
        &mut self,
        gpa: GuestPhysAddr,
        width: rv::insn::Width,
        op: crate::window::Atomic,
    ) -> Option<u64> {
        let n = width.bytes() as usize;
        let mut b = [0u8; 8];
        if !self.read_phys(gpa, &mut b[..n]) {
            return None;
        }
        let old = u64::from_le_bytes(b);
        let new = op.apply(old, width);
        self.write_phys(gpa, &new.to_le_bytes()[..n]);
        Some(old)
    }
    fn read_phys(&mut self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
        let gpa = gpa.raw();
        if !(RAM.contains(&gpa)
            && RAM.contains(&(gpa + buf.len() as u64).saturating_sub(1).max(gpa)))
        {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *self.ram.get(&(gpa + i as u64)).unwrap_or(&0);
        }
        true
    }
    fn write_phys(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool {
        let gpa = gpa.raw();
        if !RAM.contains(&gpa) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            self.ram.insert(gpa + i as u64, *b);
        }
        true
    }
    fn is_ram(&self, gpa: GuestPhysAddr) -> bool {
        RAM.contains(&gpa.raw())
    }
    fn mmio_read(&mut self, gpa: GuestPhysAddr, width: rv::insn::Width) -> Option<u64> {
        let gpa = gpa.raw();
        self.device_log.push((gpa, width.bytes(), None));
        DEVICE.contains(&gpa).then(|| *self.device.get(&gpa).unwrap_or(&0))
    }
    fn mmio_write(&mut self, gpa: GuestPhysAddr, width: rv::insn::Width, value: u64) -> bool {
        let gpa = gpa.raw();
        self.device_log.push((gpa, width.bytes(), Some(value)));
        if DEVICE.contains(&gpa) {
            self.device.insert(gpa, value);
        }
        DEVICE.contains(&gpa)
    }
    fn fp_read(&mut self, reg: u8) -> u64 {
        self.fregs[reg as usize]
    }
    fn fp_write(&mut self, reg: u8, value: u64) {
        self.fregs[reg as usize] = value;
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console_out.extend_from_slice(bytes);
    }
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.console_in.len());
        buf[..n].copy_from_slice(&self.console_in[..n]);
        self.console_in.drain(..n);
        n
    }
    fn machine_ids(&self) -> MachineIds {
        MachineIds { mvendorid: 0x11, marchid: 0x22, mimpid: 0x33 }
    }
    fn hart_count(&self) -> usize {
        self.harts
    }
    fn hart_state(&self, hart: usize) -> HartState {
        if self.started.iter().any(|s| s.0 == hart) {
            HartState::Started
        } else {
            HartState::Stopped
        }
    }
    fn hart_start(&mut self, hart: usize, start: GuestPhysAddr, opaque: u64) -> bool {
        self.started.push((hart, start, opaque));
        true
    }
    fn send_ipi(&mut self, harts: u64) {
        self.ipis.extend((0..64).filter(|h| harts & 1 << h != 0));
    }
    fn fence(&mut self, _: &Vcpu, fence: Fence) {
        self.fences.push((None, fence));
    }
    fn remote_fence(&mut self, harts: u64, fence: Fence) {
        self.fences.extend((0..64).filter(|h| harts & 1 << h != 0).map(|h| (Some(h), fence)));
    }
}

fn vcpu() -> Vcpu {
    let mut v = Vcpu::new(0, Features::default(), 0x8020_0000, 0x8fe0_0000);
    v.csrs.stvec = 0x8030_0000;
    v.effects = CsrEffect::empty();
    v
}

fn lines(now: u64) -> Lines {
    Lines { now, external: false }
}

/// Runs the instruction `bits` at the pc as if it trapped as illegal in the vCPU's current
/// mode (the hart reporting its bits in `stval`).
fn exec(v: &mut Vcpu, h: &mut FakeHost, bits: u32) -> Action {
    h.code.insert(v.regs.pc, bits);
    v.handle_exception(Exception::IllegalInstruction, bits as u64, h)
}

fn sbi_call(v: &mut Vcpu, h: &mut FakeHost, eid: usize, fid: usize, a: [u64; 6]) -> Action {
    for (i, x) in a.iter().enumerate() {
        v.regs.set(10 + i as u8, *x);
    }
    v.regs.set(17, eid as u64);
    v.regs.set(16, fid as u64);
    v.handle_exception(Exception::EcallFromU, 0, h)
}

fn ret_regs(v: &Vcpu) -> (u64, u64) {
    (v.regs.get(10), v.regs.get(11))
}

#[test]
fn starts_like_sbi_promises() {
    let v = Vcpu::new(3, Features::default(), 0x8020_0000, 0x1234);
    assert_eq!(v.regs.pc, 0x8020_0000);
    assert_eq!(ret_regs(&v), (3, 0x1234));
    assert_eq!(v.privilege, Privilege::Supervisor);
    assert!(!v.csrs.status(Sstatus::SIE));
}

#[test]
fn exception_from_user_is_forwarded_with_hardware_csrs() {
    let mut v = vcpu();
    let mut h = FakeHost::new();
    v.privilege = Privilege::User;
    v.regs.pc = 0x1000;
    v.csrs.set_status(Sstatus::SIE, true);
    assert_eq!(v.handle_exception(Exception::EcallFromU, 0, &mut h), Action::Resume);
    assert_eq!((v.csrs.sepc, v.csrs.scause, v.csrs.stval), (0x1000, 8, 0));
    assert_eq!(v.privilege, Privilege::Supervisor);
    assert!(!v.csrs.status(Sstatus::SPP), "SPP = U");
    assert!(v.csrs.status(Sstatus::SPIE), "SPIE = old SIE");
    assert!(!v.csrs.status(Sstatus::SIE));
    assert_eq!(v.regs.pc, 0x8030_0000);
    // From S-mode: SPP = S. Vectored mode does not apply to exceptions.
    v.csrs.stvec = 0x8030_0001;
    v.regs.pc = 0x8020_0100;
    v.handle_exception(Exception::Breakpoint, 0x8020_0100, &mut h);
    assert!(v.csrs.status(Sstatus::SPP));
    assert!(!v.csrs.status(Sstatus::SPIE));
    assert_eq!((v.csrs.scause, v.csrs.stval, v.regs.pc), (3, 0x8020_0100, 0x8030_0000));
}

#[test]
fn interrupts_vector_and_prioritise() {
    let mut v = vcpu();
    v.csrs.stvec = 0x8030_0001;
    v.csrs.sie = 0x222;
    v.csrs.sip_soft = 0x2;
    v.csrs.stimecmp = 10;
    // S-mode with SIE clear: nothing is taken; U-mode: always.
    assert_eq!(v.deliverable_interrupt(lines(20)), None);
    assert!(v.should_wake(lines(20)));
    v.csrs.set_status(Sstatus::SIE, true);
    // SSI outranks STI.
    assert_eq!(v.take_interrupt(lines(20)), Some(Interrupt::SupervisorSoft));
    assert_eq!(v.csrs.scause, INTERRUPT_BIT | 1);
    assert_eq!(v.regs.pc, 0x8030_0000 + 4);
    assert_eq!(v.take_interrupt(lines(20)), None, "SIE is now clear");
    let mut u = vcpu();
    u.privilege = Privilege::User;
    u.csrs.stvec = 0x8030_0001;
    u.csrs.sie = 0x222;
    u.csrs.stimecmp = 10;
    assert_eq!(u.deliverable_interrupt(lines(9)), None);
    assert_eq!(u.take_interrupt(lines(10)), Some(Interrupt::SupervisorTimer));
    assert_eq!(u.regs.pc, 0x8030_0000 + 4 * 5);
    // SEI outranks everything.
    let mut w = vcpu();
    w.privilege = Privilege::User;
    w.csrs.sie = 0x222;
    w.csrs.sip_soft = 2;
    w.csrs.stimecmp = 0;
    assert_eq!(
        w.deliverable_interrupt(Lines { now: 1, external: true }),
        Some(Interrupt::SupervisorExternal)
    );
    // Not enabled in sie: not deliverable, no wake-up.
    w.csrs.sie = 0;
    assert_eq!(w.deliverable_interrupt(Lines { now: 1, external: true }), None);
    assert!(!w.should_wake(Lines { now: 1, external: true }));
}

#[test]
fn sret_returns_to_the_privilege_in_spp() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    v.csrs.sepc = 0x4000;
    v.csrs.set_status(Sstatus::SPIE, true);
    exec(&mut v, &mut h, 0x1020_0073);
    assert_eq!((v.privilege, v.regs.pc), (Privilege::User, 0x4000));
    assert!(
        v.csrs.status(Sstatus::SIE) && v.csrs.status(Sstatus::SPIE) && !v.csrs.status(Sstatus::SPP)
    );
    // sret in U-mode is illegal, forwarded with the instruction as stval.
    v.regs.pc = 0x4000;
    exec(&mut v, &mut h, 0x1020_0073);
    assert_eq!((v.csrs.scause, v.csrs.stval, v.csrs.sepc), (2, 0x1020_0073, 0x4000));
    assert_eq!(v.privilege, Privilege::Supervisor);
    // sret to S.
    v.csrs.sepc = 0x8020_0000;
    v.csrs.set_status(Sstatus::SPP, true);
    v.csrs.set_status(Sstatus::SPIE, false);
    exec(&mut v, &mut h, 0x1020_0073);
    assert_eq!(v.privilege, Privilege::Supervisor);
    assert!(!v.csrs.status(Sstatus::SIE) && v.csrs.status(Sstatus::SPIE));
}

#[test]
fn csr_instructions() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    // csrrw a0, sscratch, a1
    v.regs.set(11, 0x55);
    v.csrs.sscratch = 0x66;
    exec(&mut v, &mut h, 0x1405_9573);
    assert_eq!((v.regs.get(10), v.csrs.sscratch, v.regs.pc), (0x66, 0x55, 0x8020_0004));
    // csrsi sstatus, 2 (SIE)
    exec(&mut v, &mut h, 0x1001_6073);
    assert!(v.csrs.status(Sstatus::SIE));
    // csrc sie, t1
    v.csrs.sie = 0x222;
    v.regs.set(6, 0x20);
    exec(&mut v, &mut h, 0x1043_3073);
    assert_eq!(v.csrs.sie, 0x202);
    // csrr t0, sstatus reads UXL.
    exec(&mut v, &mut h, 0x1000_22f3);
    assert_eq!(v.regs.get(5) >> 32 & 3, 2);
    // csrrwi a0, satp, 5: Bare with PPN 5 is accepted and reported.
    exec(&mut v, &mut h, 0x1802_d573);
    assert_eq!(v.csrs.satp, 5);
    assert!(v.effects.contains(CsrEffect::SATP));
    assert_eq!(v.regs.pc, 0x8020_0014);
}

/// Puts `program` (32-bit instruction words) at the vCPU's pc.
fn load_program(v: &Vcpu, h: &mut FakeHost, program: &[u32]) {
    for (i, bits) in program.iter().enumerate() {
        h.code.insert(v.regs.pc + 4 * i as u64, *bits);
    }
}

#[test]
fn illegal_csr_accesses_are_forwarded() {
    let cases = [
        (0x3000_2573u32, "csrr a0, mstatus"),
        (0x6000_2573, "csrr a0, hstatus"),
        (0x1ff0_2573, "csrr a0, 0x1ff (no such S CSR)"),
        (0xc000_1073, "csrw cycle, zero"),
        (0x0030_2573, "csrr a0, fcsr (FP off)"),
    ];
    for (bits, what) in cases {
        let mut h = FakeHost::new();
        let mut v = vcpu();
        let pc = v.regs.pc;
        exec(&mut v, &mut h, bits);
        assert_eq!((v.csrs.scause, v.csrs.stval, v.csrs.sepc), (2, bits as u64, pc), "{what}");
        assert!(v.csrs.status(Sstatus::SPP), "{what}");
    }
    // csrrs with x0 does not write, so reading a read-only S CSR would be fine, but
    // there is none: stimecmp without Sstc is absent altogether.
    let mut h = FakeHost::new();
    let mut v = Vcpu::new(0, Features { sstc: false, ..Features::default() }, 0x8020_0000, 0);
    exec(&mut v, &mut h, 0x14d0_2573); // csrr a0, stimecmp
    assert_eq!(v.csrs.scause, 2);
}

#[test]
fn wfi_waits_only_without_pending_interrupts() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    assert_eq!(exec(&mut v, &mut h, 0x1050_0073), Action::Wait);
    assert_eq!(v.regs.pc, 0x8020_0004);
    v.csrs.sie = 0x20;
    v.csrs.stimecmp = 0;
    assert_eq!(exec(&mut v, &mut h, 0x1050_0073), Action::Resume);
    // In U-mode wfi is illegal.
    v.privilege = Privilege::User;
    assert_eq!(exec(&mut v, &mut h, 0x1050_0073), Action::Resume);
    assert_eq!(v.csrs.scause, 2);
}

#[test]
fn sfence_vma_operands() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    exec(&mut v, &mut h, 0x1200_0073);
    v.regs.set(10, 0x1000);
    v.regs.set(11, 7);
    exec(&mut v, &mut h, 0x12b5_0073);
    v.regs.set(10, 0);
    exec(&mut v, &mut h, 0x1205_0073); // rs1 = a0 holding 0: the page at 0
    assert_eq!(
        h.fences,
        [
            (None, Fence::Vma { start: 0, size: u64::MAX, asid: None }),
            (None, Fence::Vma { start: 0x1000, size: 1, asid: Some(7) }),
            (None, Fence::Vma { start: 0, size: 1, asid: None }),
        ]
    );
}

#[test]
fn instruction_bits_come_from_memory() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    h.fetch = Some(0x1050_0073);
    assert_eq!(v.handle_exception(Exception::IllegalInstruction, 0, &mut h), Action::Wait);
    // A fetch that faults delivers that fault.
    h.fetch = None;
    let mut v = vcpu();
    v.handle_exception(Exception::IllegalInstruction, 0, &mut h);
    assert_eq!((v.csrs.scause, v.csrs.stval), (1, 0x8020_0000));
    // Undecodable bits: illegal instruction, stval as the hart gave it (0).
    h.fetch = Some(0xffff_ffff);
    let mut v = vcpu();
    v.handle_exception(Exception::IllegalInstruction, 0, &mut h);
    assert_eq!((v.csrs.scause, v.csrs.stval), (2, 0));
    // A hart that reports stale bits (QEMU 10.0's mret leaves an earlier instruction's
    // there): the instruction in memory is what runs, and what the guest is told.
    let mut h = FakeHost::new();
    let mut v = vcpu();
    h.fetch = Some(0x3020_0073); // mret
    let stale = 0x1400_2573; // csrr a0, sscratch
    v.csrs.sscratch = 0x77;
    v.handle_exception(Exception::IllegalInstruction, stale, &mut h);
    assert_eq!((v.csrs.scause, v.csrs.stval, v.regs.get(10)), (2, 0x3020_0073, 0));
}

#[test]
fn sbi_base() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    let b = sbi_spec::base::EID_BASE;
    sbi_call(&mut v, &mut h, b, 0, [0; 6]);
    assert_eq!(ret_regs(&v), (0, 0x0200_0000));
    assert_eq!(v.regs.pc, 0x8020_0004);
    sbi_call(&mut v, &mut h, b, 1, [0; 6]);
    assert_eq!(ret_regs(&v), (0, sbi::IMPL_ID));
    for (eid, present) in [
        (b, 1),
        (sbi_spec::hsm::EID_HSM, 1),
        (sbi_spec::pmu::EID_PMU, 0),
        (8, 1),
        (9, 0),
        (0x0bad, 0),
    ] {
        sbi_call(&mut v, &mut h, b, 3, [eid as u64, 0, 0, 0, 0, 0]);
        assert_eq!(ret_regs(&v), (0, present), "probe {eid:#x}");
    }
    for (fid, value) in [(4, 0x11), (5, 0x22), (6, 0x33)] {
        sbi_call(&mut v, &mut h, b, fid, [0; 6]);
        assert_eq!(ret_regs(&v), (0, value));
    }
    sbi_call(&mut v, &mut h, b, 7, [0; 6]);
    assert_eq!(ret_regs(&v), (ret::RET_ERR_NOT_SUPPORTED as u64, 0));
    // Unknown extension: not supported, a1 = 0.
    v.regs.set(11, 99);
    sbi_call(&mut v, &mut h, 0x0bad_0e1d, 0, [0, 99, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v), (ret::RET_ERR_NOT_SUPPORTED as u64, 0));
}

#[test]
fn sbi_timer_and_ipi() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    h.now.set(100);
    sbi_call(&mut v, &mut h, sbi_spec::time::EID_TIME, 0, [50, 0, 0, 0, 0, 0]);
    assert_eq!(v.csrs.sip(lines(100)) & 0x20, 0x20);
    assert!(v.effects.contains(CsrEffect::TIMER));
    sbi_call(&mut v, &mut h, sbi_spec::time::EID_TIME, 0, [200, 0, 0, 0, 0, 0]);
    assert_eq!(v.csrs.sip(lines(100)) & 0x20, 0, "a later deadline clears STIP");
    let ipi = sbi_spec::spi::EID_SPI;
    sbi_call(&mut v, &mut h, ipi, 0, [1, 0, 0, 0, 0, 0]);
    assert_eq!((ret_regs(&v).0, v.csrs.sip_soft), (0, 2));
    v.csrs.sip_soft = 0;
    sbi_call(&mut v, &mut h, ipi, 0, [0, u64::MAX, 0, 0, 0, 0]);
    assert_eq!(v.csrs.sip_soft, 2, "base -1: all harts");
    for (mask, base) in [(1, 1), (2, 0), (1, 64), (1 << 63, 1)] {
        sbi_call(&mut v, &mut h, ipi, 0, [mask, base, 0, 0, 0, 0]);
        assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_PARAM as u64, "mask {mask:#x} base {base}");
    }
    h.harts = 3;
    v.csrs.sip_soft = 0;
    sbi_call(&mut v, &mut h, ipi, 0, [0b110, 0, 0, 0, 0, 0]);
    assert_eq!((h.ipis.as_slice(), v.csrs.sip_soft), (&[1usize, 2][..], 0));
}

#[test]
fn hart_masks() {
    assert_eq!(sbi::hart_set(0b101, 0, 4), Ok(0b101));
    assert_eq!(sbi::hart_set(0b1, 3, 4), Ok(0b1000));
    assert_eq!(sbi::hart_set(0, u64::MAX, 4), Ok(0b1111));
    assert_eq!(sbi::hart_set(0, 0, 4), Ok(0));
    assert!(sbi::hart_set(0b10, 3, 4).is_err());
    assert!(sbi::hart_set(0, 4, 4).is_err());
    assert_eq!(sbi::hart_set(u64::MAX, 0, 64), Ok(u64::MAX));
}

#[test]
fn sbi_rfence() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    let r = sbi_spec::rfnc::EID_RFNC;
    sbi_call(&mut v, &mut h, r, 0, [1, 0, 0, 0, 0, 0]);
    sbi_call(&mut v, &mut h, r, 1, [1, 0, 0x1000, 0x2000, 0, 0]);
    sbi_call(&mut v, &mut h, r, 2, [1, 0, 0, 0, 5, 0]);
    assert_eq!(
        h.fences,
        [
            (None, Fence::I),
            (None, Fence::Vma { start: 0x1000, size: 0x2000, asid: None }),
            (None, Fence::Vma { start: 0, size: u64::MAX, asid: Some(5) }),
        ]
    );
    for fid in 3..=6 {
        sbi_call(&mut v, &mut h, r, fid, [1, 0, 0, 0, 0, 0]);
        assert_eq!(ret_regs(&v).0, ret::RET_ERR_NOT_SUPPORTED as u64, "hfence {fid}");
    }
}

#[test]
fn sbi_hsm() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    let e = sbi_spec::hsm::EID_HSM;
    sbi_call(&mut v, &mut h, e, 2, [0; 6]);
    assert_eq!(ret_regs(&v), (0, 0), "hart 0 is started");
    sbi_call(&mut v, &mut h, e, 2, [1, 0, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_PARAM as u64);
    sbi_call(&mut v, &mut h, e, 0, [0, 0x8020_0000, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_ALREADY_AVAILABLE as u64);
    h.harts = 2;
    sbi_call(&mut v, &mut h, e, 0, [1, 0x1000, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_ADDRESS as u64);
    sbi_call(&mut v, &mut h, e, 0, [1, 0x8000_8000, 42, 0, 0, 0]);
    assert_eq!(
        (ret_regs(&v).0, h.started.as_slice()),
        (0, &[(1, GuestPhysAddr::new(0x8000_8000), 42)][..])
    );
    sbi_call(&mut v, &mut h, e, 0, [1, 0x8000_8000, 42, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_ALREADY_AVAILABLE as u64, "hart 1 runs now");
    // Suspend: reserved types are invalid; retentive waits; non-retentive restarts.
    for kind in [1u64, 0x0fff_ffff, 0x8000_0001] {
        sbi_call(&mut v, &mut h, e, 3, [kind, 0x8020_0000, 0, 0, 0, 0]);
        assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_PARAM as u64, "type {kind:#x}");
    }
    sbi_call(&mut v, &mut h, e, 3, [0x1000_0000, 0, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_NOT_SUPPORTED as u64);
    assert_eq!(sbi_call(&mut v, &mut h, e, 3, [0, 0, 0, 0, 0, 0]), Action::Wait);
    assert_eq!(v.state, HartState::Suspended);
    let pc = v.regs.pc;
    v.wake();
    assert_eq!((v.state, v.regs.pc, ret_regs(&v).0), (HartState::Started, pc, 0));
    sbi_call(&mut v, &mut h, e, 3, [0x8000_0000, 0x9000_0000, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_ADDRESS as u64);
    v.csrs.satp = 8 << 60;
    v.privilege = Privilege::Supervisor;
    assert_eq!(
        sbi_call(&mut v, &mut h, e, 3, [0x8000_0000, 0x8000_4000, 77, 0, 0, 0]),
        Action::Wait
    );
    v.wake();
    assert_eq!((v.regs.pc, ret_regs(&v), v.csrs.satp), (0x8000_4000, (0, 77), 0));
    assert!(v.effects.contains(CsrEffect::SATP));
    assert_eq!(sbi_call(&mut v, &mut h, e, 1, [0; 6]), Action::Stop);
    assert_eq!(v.state, HartState::Stopped);
}

#[test]
fn sbi_system_reset() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    let e = sbi_spec::srst::EID_SRST;
    assert_eq!(
        sbi_call(&mut v, &mut h, e, 0, [0, 0, 0, 0, 0, 0]),
        Action::Reset(ResetKind::Shutdown)
    );
    assert_eq!(
        sbi_call(&mut v, &mut h, e, 0, [1, 1, 0, 0, 0, 0]),
        Action::Reset(ResetKind::ColdReboot)
    );
    assert_eq!(
        sbi_call(&mut v, &mut h, e, 0, [2, 0, 0, 0, 0, 0]),
        Action::Reset(ResetKind::WarmReboot)
    );
    for (kind, reason) in
        [(3, 0), (0xF000_0000, 0), (0, 2), (0, 0xFFFF_FFFF), (1 << 32, 0), (0, 1 << 32)]
    {
        assert_eq!(sbi_call(&mut v, &mut h, e, 0, [kind, reason, 0, 0, 0, 0]), Action::Resume);
        assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_PARAM as u64, "{kind:#x} {reason:#x}");
    }
    // Legacy shutdown.
    assert_eq!(sbi_call(&mut v, &mut h, 8, 0, [0; 6]), Action::Reset(ResetKind::Shutdown));
}

#[test]
fn sbi_debug_console() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    let e = sbi_spec::dbcn::EID_DBCN;
    h.write_phys(GuestPhysAddr::new(0x8000_1000), b"hello");
    sbi_call(&mut v, &mut h, e, 0, [5, 0x8000_1000, 0, 0, 0, 0]);
    assert_eq!((ret_regs(&v), h.console_out.as_slice()), ((0, 5), &b"hello"[..]));
    for (addr, hi) in [(0x1000, 0), (0x8000_1000, 1), (RAM.end - 2, 0)] {
        sbi_call(&mut v, &mut h, e, 0, [5, addr, hi, 0, 0, 0]);
        assert_eq!(ret_regs(&v).0, ret::RET_ERR_INVALID_PARAM as u64, "{addr:#x}");
    }
    sbi_call(&mut v, &mut h, e, 2, [b'!' as u64, 0, 0, 0, 0, 0]);
    assert_eq!(h.console_out.last(), Some(&b'!'));
    h.console_in = b"ab".to_vec();
    sbi_call(&mut v, &mut h, e, 1, [8, 0x8000_2000, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v), (0, 2));
    let mut got = [0u8; 2];
    h.read_phys(GuestPhysAddr::new(0x8000_2000), &mut got);
    assert_eq!(&got, b"ab");
    sbi_call(&mut v, &mut h, e, 1, [8, 0x8000_2000, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v), (0, 0), "nothing to read");
}

#[test]
fn sbi_legacy_calls() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    v.regs.set(11, 0xdead);
    sbi_call(&mut v, &mut h, 1, 0, [b'x' as u64, 0xdead, 0, 0, 0, 0]);
    assert_eq!((ret_regs(&v), h.console_out.as_slice()), ((0, 0xdead), &b"x"[..]), "a1 untouched");
    sbi_call(&mut v, &mut h, 2, 0, [0, 0xdead, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v), (u64::MAX, 0xdead), "no input: -1");
    h.console_in = b"q".to_vec();
    sbi_call(&mut v, &mut h, 2, 0, [0, 0xdead, 0, 0, 0, 0]);
    assert_eq!(ret_regs(&v).0, b'q' as u64);
    // send_ipi with a null mask: all harts (here: itself); clear_ipi clears it.
    sbi_call(&mut v, &mut h, 4, 0, [0, 0, 0, 0, 0, 0]);
    assert_eq!(v.csrs.sip_soft, 2);
    sbi_call(&mut v, &mut h, 3, 0, [0; 6]);
    assert_eq!(v.csrs.sip_soft, 0);
    // A mask pointer that faults: the fault is redirected to the guest at the ecall.
    let pc = v.regs.pc;
    h.load = Some(Err((Exception::LoadPageFault, 0x4000)));
    sbi_call(&mut v, &mut h, 4, 0, [0x4000, 0, 0, 0, 0, 0]);
    assert_eq!((v.csrs.scause, v.csrs.stval, v.csrs.sepc), (13, 0x4000, pc));
    h.load = Some(Ok(1));
    v.privilege = Privilege::Supervisor;
    sbi_call(&mut v, &mut h, 6, 0, [0x4000, 0x1000, 0x1000, 0, 0, 0]);
    assert_eq!(
        h.fences.last(),
        Some(&(None, Fence::Vma { start: 0x1000, size: 0x1000, asid: None }))
    );
    // set_timer.
    sbi_call(&mut v, &mut h, 0, 0, [77, 0, 0, 0, 0, 0]);
    assert_eq!(v.csrs.stimecmp, 77);
}

#[test]
fn real_counter_enables_follow_the_virtual_privilege() {
    let mut v = vcpu();
    v.csrs.scounteren = 0x5;
    assert_eq!(v.real_scounteren(), 0xFFFF_FFFF);
    v.privilege = Privilege::User;
    assert_eq!(v.real_scounteren(), 0x5);
}

#[test]
fn status_writes_report_effects() {
    let mut h = FakeHost::new();
    let mut v = vcpu();
    // csrs sstatus, a0 with SUM
    v.regs.set(10, Sstatus::SUM.bits());
    exec(&mut v, &mut h, 0x1005_2073);
    assert!(v.effects.contains(CsrEffect::STATUS));
    assert_eq!(
        v.csrs.read(num::SSTATUS, &v.features, lines(0)).unwrap() & Sstatus::SUM.bits(),
        Sstatus::SUM.bits()
    );
}

/// A hostile guest: random instruction words and random SBI calls never panic hypocaust and
/// always leave the vCPU either advanced past the instruction or in its trap handler.
#[test]
fn random_guest_input_never_panics() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200_000 {
        let mut h = FakeHost::new();
        h.harts = (next() % 4) as usize + 1;
        let mut v = vcpu();
        for r in 1..32 {
            v.regs.x[r] = next();
        }
        let pc = v.regs.pc;
        let action = if i % 2 == 0 {
            let bits = next() as u32;
            exec(&mut v, &mut h, bits)
        } else {
            let eid = [
                0x10, 0x54494D45, 0x735049, 0x52464E43, 0x48534D, 0x53525354, 0x4442434E, 0, 4, 6,
                9,
            ][(next() % 11) as usize];
            let a = [next() % 8, next() % 8, next(), next(), next(), next()];
            h.load = Some(Ok(next()));
            sbi_call(&mut v, &mut h, eid, (next() % 8) as usize, a)
        };
        let advanced = v.regs.pc == pc + 2 || v.regs.pc == pc + 4;
        let trapped = v.regs.pc == 0x8030_0000 && v.csrs.sepc == pc;
        let sret = v.regs.pc == v.csrs.sepc;
        let restarted = matches!(action, Action::Wait | Action::Stop | Action::Reset(_));
        assert!(advanced || trapped || sret || restarted, "iteration {i}: pc {:#x}", v.regs.pc);
    }
}

mod delivery;
mod fast;

mod mmio {
    use super::*;
    use crate::mmio::Direction;

    /// Runs instruction `bits` at the pc as a device access to `gpa` (a1 holds the address).
    fn access(bits: u32, dir: Direction, gpa: u64, h: &mut FakeHost) -> Vcpu {
        let mut v = vcpu();
        h.fetch = Some(bits);
        v.regs.set(11, gpa);
        v.emulate_mmio(h, dir, 0x4000_0000 + (gpa & 0xfff), GuestPhysAddr::new(gpa));
        v
    }

    #[test]
    fn loads_extend_as_the_instruction_says() {
        let mut h = FakeHost::new();
        h.device.insert(0x1000_0010, 0xffff_ffff_8000_0001);
        // lw a0, 0(a1): sign-extends the low word; the pc moves 4.
        let v = access(0x0005_a503, Direction::Load, 0x1000_0010, &mut h);
        assert_eq!(v.regs.get(10), 0xffff_ffff_8000_0001);
        assert_eq!(v.regs.pc, 0x8020_0004);
        // lwu: zero-extends.
        let v = access(0x0005_e503, Direction::Load, 0x1000_0010, &mut h);
        assert_eq!(v.regs.get(10), 0x8000_0001);
        // lhu a0, 2(a1) and lb a0, 3(a1): the device is asked for the width the instruction has.
        h.device.insert(0x1000_0020, 0x80);
        let v = access(0x0035_8503, Direction::Load, 0x1000_0020, &mut h);
        assert_eq!(v.regs.get(10), u64::MAX - 0x7f);
        assert_eq!(h.device_log.last(), Some(&(0x1000_0020, 1, None)));
        let v = access(0x0025_d503, Direction::Load, 0x1000_0020, &mut h);
        assert_eq!(v.regs.get(10), 0x80);
        assert_eq!(h.device_log.last(), Some(&(0x1000_0020, 2, None)));
        // ld a0, 8(a1).
        h.device.insert(0x1000_0030, 0x1234_5678_9abc_def0);
        let v = access(0x0085_b503, Direction::Load, 0x1000_0030, &mut h);
        assert_eq!(v.regs.get(10), 0x1234_5678_9abc_def0);
        // c.lw a0, 0(a1): 2 bytes long.
        let v = access(0x4188, Direction::Load, 0x1000_0010, &mut h);
        assert_eq!((v.regs.get(10), v.regs.pc), (0xffff_ffff_8000_0001, 0x8020_0002));
    }

    #[test]
    fn stores_write_the_low_bytes() {
        let mut h = FakeHost::new();
        let mut v = vcpu();
        h.fetch = Some(0x00c5_a223); // sw a2, 4(a1)
        v.regs.set(12, 0xaaaa_bbbb_cccc_dddd);
        v.emulate_mmio(&mut h, Direction::Store, 0x4000_0004, GuestPhysAddr::new(0x1000_0004));
        assert_eq!(h.device_log, [(0x1000_0004, 4, Some(0xcccc_dddd))]);
        assert_eq!(v.regs.pc, 0x8020_0004);
        h.fetch = Some(0x00c5_8023); // sb a2, 0(a1)
        v.emulate_mmio(&mut h, Direction::Store, 0x4000_0000, GuestPhysAddr::new(0x1000_0000));
        assert_eq!(h.device_log[1], (0x1000_0000, 1, Some(0xdd)));
    }

    #[test]
    fn fp_loads_nan_box_and_dirty_fs() {
        let mut h = FakeHost::new();
        h.device.insert(0x1000_0040, 0x3f80_0000);
        let v = access(0x0005_a507, Direction::Load, 0x1000_0040, &mut h); // flw fa0, 0(a1)
        assert_eq!(h.fregs[10], 0xffff_ffff_3f80_0000);
        assert_eq!(v.csrs.sstatus & Sstatus::FS.bits(), Sstatus::FS.bits());
        h.device.insert(0x1000_0048, 0x4000_0000_0000_0000);
        let v = access(0x218c, Direction::Load, 0x1000_0048, &mut h); // c.fld fa1, 0(a1)
        assert_eq!((h.fregs[11], v.regs.pc), (0x4000_0000_0000_0000, 0x8020_0002));
        h.fregs[10] = 0xffff_ffff_4049_0fdb;
        access(0x00a5_a027, Direction::Store, 0x1000_0050, &mut h); // fsw fa0, 0(a1)
        assert_eq!(h.device_log.last(), Some(&(0x1000_0050, 4, Some(0x4049_0fdb))));
    }

    #[test]
    fn refusals_are_access_faults_at_the_address() {
        let mut h = FakeHost::new();
        // The bus refuses: load access fault, stval = the virtual address, from the pc.
        let v = access(0x0005_a503, Direction::Load, 0x2000_0000, &mut h);
        assert_eq!((v.csrs.scause, v.csrs.stval, v.csrs.sepc), (5, 0x4000_0000, 0x8020_0000));
        assert_eq!(v.regs.pc, 0x8030_0000);
        // An AMO on a device: store access fault, the device untouched.
        h.device_log.clear();
        let v = access(0x00c5_a52f, Direction::Store, 0x1000_0000, &mut h);
        assert_eq!((v.csrs.scause, v.csrs.stval), (7, 0x4000_0000));
        assert!(h.device_log.is_empty());
        // The instruction at the pc is no load although the fault was a load's (the guest
        // rewrote it): the original fault stands.
        let v = access(0x00c5_a223, Direction::Load, 0x1000_0000, &mut h);
        assert_eq!(v.csrs.scause, 5);
        assert!(h.device_log.is_empty());
        // Garbage at the pc.
        let v = access(0xffff_ffff, Direction::Load, 0x1000_0000, &mut h);
        assert_eq!(v.csrs.scause, 5);
        // The pc cannot be fetched: that fault.
        let mut v = vcpu();
        h.fetch = None;
        v.emulate_mmio(&mut h, Direction::Load, 0x4000_0000, GuestPhysAddr::new(0x1000_0000));
        assert_eq!((v.csrs.scause, v.csrs.stval), (1, 0x8020_0000));
    }
}

/// Accesses to hypocaust's window, carried out through the guest's translation.
mod window {
    use super::*;

    /// The fake guest's window page at [`WINDOW`] maps to RAM page 0x8000_1000 (`writable`).
    fn host(writable: bool) -> FakeHost {
        let mut h = FakeHost::new();
        h.pages.insert(WINDOW >> 12, (0x0008_0001, writable));
        h
    }

    /// Runs `bits` at the pc with a1 = `WINDOW + offset`, as after a fault at that address.
    fn run(h: &mut FakeHost, v: &mut Vcpu, bits: u32, offset: u64) {
        h.fetch = Some(bits);
        v.regs.set(11, WINDOW + offset);
        let cause = Exception::LoadPageFault;
        v.emulate_window(h, cause, WINDOW + offset);
    }

    fn ram(h: &mut FakeHost, at: u64, n: usize) -> u64 {
        let mut b = [0u8; 8];
        assert!(h.read_phys(GuestPhysAddr::new(at), &mut b[..n]));
        u64::from_le_bytes(b)
    }

    #[test]
    fn code_runs_from_the_window_until_it_leaves() {
        let mut h = host(true);
        let mut v = vcpu();
        let program = [
            0x0015_0513, // addi a0, a0, 1
            0x02a5_0533, // mul a0, a0, a0
            0x00a5_b023, // sd a0, 0(a1)
            0x0000_8067, // ret
        ];
        for (i, bits) in program.into_iter().enumerate() {
            h.code.insert(WINDOW + 4 * i as u64, bits);
        }
        v.regs.pc = WINDOW;
        v.regs.set(10, 5);
        v.regs.set(11, WINDOW + 0x100);
        v.regs.set(1, 0x8020_0000);
        let action = v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!(action, Action::Resume);
        assert_eq!((v.regs.get(10), v.regs.pc), (36, 0x8020_0000));
        assert_eq!(ram(&mut h, 0x8000_1100, 8), 36);
        assert_eq!(v.csrs.scause, 0, "no exception");
    }

    #[test]
    fn window_code_runs_fp_zb_and_user_csrs_out_of_line() {
        let mut h = host(true);
        let mut v = vcpu();
        let program = [
            0x0ab5_1533, // clmul a0, a0, a1 (OP, funct7 5): its registers renamed
            0xe200_0553, // fmv.x.d a0, ft0: integer rd renamed to t2
            0x02b5_7553, // fadd.d fa0, fa0, fa1: FP only
            0xc010_25f3, // rdtime a1 (csrrs a1, time, x0)
            0x0000_8067, // ret
        ];
        for (i, bits) in program.into_iter().enumerate() {
            h.code.insert(WINDOW + 4 * i as u64, bits);
        }
        v.csrs.sstatus |= 1 << 13; // FS Initial
        v.regs.pc = WINDOW;
        v.regs.set(10, 6);
        v.regs.set(11, 3);
        v.regs.set(1, 0x8020_0000);
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!(v.regs.pc, 0x8020_0000, "ran to the ret");
        assert_eq!(
            h.out_of_line,
            [
                (0x0a62_93b3, 6, 3), // clmul t2, t0, t1
                (0xe200_0053 | 7 << 7, 0, 0),
                (0x02b5_7553, 0, 0),
                (0xc010_23f3, 0, 0),
            ]
        );
        assert_eq!(v.regs.get(11), 0, "rdtime's t2 (0 ^ 0)");
        assert_eq!(v.csrs.fs(), rv::csr::ExtState::Dirty);
        // With FS Off, FP is illegal; virtual U-mode may not read a counter scounteren hides.
        let mut h = host(true);
        let mut v = vcpu();
        h.code.insert(WINDOW, 0x02b5_7553);
        v.csrs.sstatus &= !(3 << 13);
        v.regs.pc = WINDOW;
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!((v.csrs.scause, v.csrs.stval), (2, 0x02b5_7553));
        assert!(h.out_of_line.is_empty());
        let mut h = host(true);
        let mut v = vcpu();
        h.code.insert(WINDOW, 0xc010_25f3); // rdtime a1
        v.privilege = Privilege::User;
        v.csrs.scounteren = 0b101; // CY and IR, not TM
        v.regs.pc = WINDOW;
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!((v.csrs.scause, v.csrs.stval), (2, 0xc010_25f3));
        assert!(h.out_of_line.is_empty());
    }

    #[test]
    fn window_code_it_cannot_run_faults_where_it_starts() {
        let mut h = host(true);
        let mut v = vcpu();
        h.code.insert(WINDOW, 0x0200_8057); // vadd.vv v0, v0, v1
        v.regs.pc = WINDOW;
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!((v.csrs.scause, v.csrs.stval), (12, WINDOW));
        // After a run of others, the guest comes back to it (and faults then).
        let mut h = host(true);
        let mut v = vcpu();
        h.code.insert(WINDOW, 0x0015_0513); // addi a0, a0, 1
        h.code.insert(WINDOW + 4, 0x0200_8057);
        v.regs.pc = WINDOW;
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW);
        assert_eq!((v.csrs.scause, v.regs.pc, v.regs.get(10)), (0, WINDOW + 4, 1));
        // A fetch the guest's translation refuses is the guest's fault.
        let mut h = host(true);
        let mut v = vcpu();
        v.regs.pc = WINDOW + 0x2000;
        v.run_window_code(&mut h, Exception::InstructionPageFault, WINDOW + 0x2000);
        assert_eq!((v.csrs.scause, v.csrs.stval), (1, WINDOW + 0x2000));
    }

    #[test]
    fn loads_and_stores_reach_the_guest_s_page() {
        let mut h = host(true);
        let mut v = vcpu();
        v.regs.set(12, 0x1122_3344_8899_aabb);
        run(&mut h, &mut v, 0x00c5_b023, 8); // sd a2, 0(a1)
        assert_eq!((ram(&mut h, 0x8000_1008, 8), v.regs.pc), (0x1122_3344_8899_aabb, 0x8020_0004));
        run(&mut h, &mut v, 0x0005_a503, 8); // lw a0, 0(a1): sign-extended
        assert_eq!(v.regs.get(10), 0xffff_ffff_8899_aabb);
        run(&mut h, &mut v, 0x0005_b503, 8); // ld a0, 0(a1)
        assert_eq!((v.regs.get(10), v.regs.pc), (0x1122_3344_8899_aabb, 0x8020_000c));
        run(&mut h, &mut v, 0x0005_a507, 8); // flw fa0, 0(a1): NaN-boxed
        assert_eq!(h.fregs[10], 0xffff_ffff_8899_aabb);
        // A misaligned doubleword within the page.
        run(&mut h, &mut v, 0x0005_b503, 9);
        assert_eq!(v.regs.get(10), 0x0011_2233_4488_99aa);
    }

    #[test]
    fn the_guest_s_own_faults_stand() {
        let mut h = host(false);
        let mut v = vcpu();
        v.regs.set(12, 7);
        run(&mut h, &mut v, 0x00c5_b023, 0x10); // sd to a read-only page
        assert_eq!((v.csrs.scause, v.csrs.stval), (15, WINDOW + 0x10));
        assert_eq!(ram(&mut h, 0x8000_1010, 8), 0);
        let mut v = vcpu();
        run(&mut h, &mut v, 0x0005_b503, 0x1000); // ld from the unmapped next page
        assert_eq!((v.csrs.scause, v.csrs.stval), (13, WINDOW + 0x1000));
        // A store that spans into the unmapped page writes nothing at all.
        let mut h = host(true);
        let mut v = vcpu();
        v.regs.set(12, u64::MAX);
        run(&mut h, &mut v, 0x00c5_b023, 0xffc);
        assert_eq!((v.csrs.scause, v.csrs.stval), (15, WINDOW + 0x1000));
        assert_eq!(ram(&mut h, 0x8000_1ffc, 4), 0);
    }

    #[test]
    fn atomics() {
        let mut h = host(true);
        let mut v = vcpu();
        assert!(h.write_phys(GuestPhysAddr::new(0x8000_1020), &0xffff_fff0u32.to_le_bytes()));
        v.regs.set(12, 5);
        run(&mut h, &mut v, 0x00c5_a52f, 0x20); // amoadd.w a0, a2, (a1)
        assert_eq!((v.regs.get(10), ram(&mut h, 0x8000_1020, 4)), (u64::MAX - 15, 0xffff_fff5));
        v.regs.set(12, 3);
        run(&mut h, &mut v, 0xa0c5_a52f, 0x20); // amomax.w: signed, -11 < 3
        assert_eq!(ram(&mut h, 0x8000_1020, 4), 3);
        // lr.d then sc.d succeeds; a second sc.d without a reservation fails.
        run(&mut h, &mut v, 0x1005_b52f, 0x28);
        assert_eq!(v.regs.get(10), 0);
        v.regs.set(12, 42);
        run(&mut h, &mut v, 0x18c5_b52f, 0x28);
        assert_eq!((v.regs.get(10), ram(&mut h, 0x8000_1028, 8)), (0, 42));
        v.regs.set(12, 43);
        run(&mut h, &mut v, 0x18c5_b52f, 0x28);
        assert_eq!((v.regs.get(10), ram(&mut h, 0x8000_1028, 8)), (1, 42));
        // A compare-and-swap loop: lr.d a0, (a1); bne a0, a2, +12; sc.d a3, a4, (a1). The
        // hart could not finish it (no reservation): all three are carried out here.
        let start = v.regs.pc;
        for (i, bits) in [0x1005_b52f, 0x00c5_1663, 0x18e5_b6af].into_iter().enumerate() {
            h.code.insert(start + 4 * i as u64, bits);
        }
        h.fetch = None;
        v.regs.set(11, WINDOW + 0x28);
        (v.regs.x[12], v.regs.x[14], v.regs.x[13]) = (42, 77, 9);
        v.emulate_window(&mut h, Exception::LoadPageFault, WINDOW + 0x28);
        assert_eq!((v.regs.pc, v.regs.get(13), ram(&mut h, 0x8000_1028, 8)), (start + 12, 0, 77));
        // The value differs: the branch leaves before the SC; nothing is stored.
        let start = v.regs.pc;
        for (i, bits) in [0x1005_b52f, 0x00c5_1663, 0x18e5_b6af].into_iter().enumerate() {
            h.code.insert(start + 4 * i as u64, bits);
        }
        v.emulate_window(&mut h, Exception::LoadPageFault, WINDOW + 0x28);
        assert_eq!((v.regs.pc, v.regs.get(10), ram(&mut h, 0x8000_1028, 8)), (start + 16, 77, 77));
        // A misaligned AMO traps.
        let pc = v.regs.pc;
        run(&mut h, &mut v, 0x00c5_a52f, 0x22);
        assert_eq!((v.csrs.scause, v.csrs.stval, v.csrs.sepc), (6, WINDOW + 0x22, pc));
    }
}
