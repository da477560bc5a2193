//! Running a vCPU on this hart: enter the guest, take its trap, let the vCPU logic handle
//! it, deliver virtual interrupts, repeat.

use mmu::walk::AccessType;
use rv::GuestPhysAddr;
use rv::csr::{ExtState, Interrupts, SSTATUS_FS_SHIFT, Sstatus};
use rv::trap::{Cause, Exception, Interrupt};
use vcpu::mmio::Direction;
use vcpu::{Action, Entry, Fault, Fence, HartState, Host, Lines, MachineIds, ResetKind, Vcpu};

use crate::arch::trap::{GuestContext, enter_guest};
use crate::guest::Guest;
use crate::paging::{PageFault, VcpuMmu, access_for};
use crate::{arch, console, hart, irq, timer};

/// Why a vCPU stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The guest asked for a system reset.
    Reset(ResetKind),
    /// Its only hart stopped (SBI HSM `hart_stop`).
    Stopped,
}

/// Exits taken, by cause: exceptions by code, interrupts by code + 64.
#[derive(Clone, Debug)]
pub struct ExitStats {
    pub counts: [u64; 128],
}

impl core::fmt::Display for ExitStats {
    /// The causes with the most exits, most first: `name count, ...`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut top: alloc::vec::Vec<(usize, u64)> =
            self.counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
        top.sort_by_key(|t| core::cmp::Reverse(t.1));
        let total: u64 = top.iter().map(|t| t.1).sum();
        write!(f, "{total} in all")?;
        for (slot, n) in top.iter().take(8) {
            let cause = if *slot >= 64 {
                Cause::from_scause(1 << 63 | (*slot as u64 - 64))
            } else {
                Cause::from_scause(*slot as u64)
            };
            write!(f, ", {cause:?} {n}")?;
        }
        Ok(())
    }
}

impl Default for ExitStats {
    fn default() -> Self {
        Self { counts: [0; 128] }
    }
}

/// The services a vCPU of `guest` gets while it handles an exit.
struct GuestHost<'a> {
    guest: &'a Guest,
    mmu: &'a mut VcpuMmu,
}

impl GuestHost<'_> {
    /// Reads `buf.len()` bytes at guest-virtual `va` as an access of `kind` by the vCPU.
    fn read_virt(&self, v: &Vcpu, va: u64, kind: AccessType, buf: &mut [u8]) -> Result<(), Fault> {
        let gpa = self.mmu.translate(&self.guest.memory, v, va, access_for(v, kind))?;
        if self.guest.memory.read(gpa, buf) { Ok(()) } else { Err((kind.access_fault(), va)) }
    }
}

impl GuestHost<'_> {
    /// The 16 bits at guest-virtual `va` as the vCPU fetches them: through the recent code
    /// pages (every emulated instruction is fetched, so this is on the exit path), else
    /// with the fault the fetch takes.
    fn fetch_half(&mut self, v: &Vcpu, va: u64) -> Result<u16, Fault> {
        let mut half = [0u8; 2];
        match self.mmu.code_address(&self.guest.memory, v, va) {
            Some(gpa) if self.guest.memory.read(gpa, &mut half) => Ok(u16::from_le_bytes(half)),
            Some(_) => Err((AccessType::Execute.access_fault(), va)),
            None => self
                .read_virt(v, va, AccessType::Execute, &mut half)
                .map(|()| u16::from_le_bytes(half)),
        }
    }
}

impl Host for GuestHost<'_> {
    fn now(&self) -> u64 {
        arch::time()
    }

    fn external_irq(&self, _hart: usize) -> bool {
        self.guest.external()
    }

    fn fetch_instruction(&mut self, vcpu: &Vcpu, pc: u64) -> Result<u32, Fault> {
        // Halves: a 32-bit instruction may straddle a page boundary.
        let low = self.fetch_half(vcpu, pc)?;
        if rv::insn::length(low) == 2 {
            return Ok(low as u32);
        }
        let high = self.fetch_half(vcpu, pc.wrapping_add(2))?;
        Ok(low as u32 | (high as u32) << 16)
    }

    fn fetch_next(&mut self, vcpu: &Vcpu, pc: u64) -> Option<u32> {
        // A word that straddles a page boundary is left to the hart.
        if pc & 0xfff > 0xffc {
            return None;
        }
        let gpa = self.mmu.code_address(&self.guest.memory, vcpu, pc)?;
        let mut bits = [0u8; 4];
        self.guest.memory.read(gpa, &mut bits).then(|| u32::from_le_bytes(bits))
    }

    fn load_u64(&mut self, vcpu: &Vcpu, va: u64) -> Result<u64, Fault> {
        let mut b = [0u8; 8];
        self.read_virt(vcpu, va, AccessType::Read, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_phys(&mut self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
        self.guest.memory.read(gpa, buf)
    }

    fn write_phys(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool {
        self.guest.memory.write(gpa, data)
    }

    fn is_ram(&self, gpa: GuestPhysAddr) -> bool {
        self.guest.memory.contains(gpa)
    }

    fn mmio_read(&mut self, gpa: GuestPhysAddr, width: rv::insn::Width) -> Option<u64> {
        self.guest.with_board(|b| b.read(&self.guest.memory, gpa, width))
    }

    fn mmio_write(&mut self, gpa: GuestPhysAddr, width: rv::insn::Width, value: u64) -> bool {
        self.guest.with_board(|b| b.write(&self.guest.memory, gpa, width, value))
    }

    fn fp_read(&mut self, reg: u8) -> u64 {
        arch::fp::read(reg)
    }

    fn fp_write(&mut self, reg: u8, value: u64) {
        arch::fp::write(reg, value)
    }

    fn console_write(&mut self, bytes: &[u8]) {
        console::guest_output(self.guest.index, bytes);
    }

    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        console::flush_guest(self.guest.index);
        console::read_input(self.guest.index, buf)
    }

    fn machine_ids(&self) -> MachineIds {
        crate::machine_ids()
    }

    fn hart_count(&self) -> usize {
        1
    }

    // A guest has one vCPU (Guest::create refuses more), so `hart_set` never names another
    // hart and the four calls below cannot be reached.
    fn hart_state(&self, _hart: usize) -> HartState {
        HartState::Stopped
    }

    fn hart_start(&mut self, _hart: usize, _start: GuestPhysAddr, _opaque: u64) {}

    fn send_ipi(&mut self, _hart: usize) {}

    fn remote_fence(&mut self, _hart: usize, _fence: Fence) {}

    fn fence(&mut self, _vcpu: &Vcpu, fence: Fence) {
        match fence {
            // SAFETY: `fence.i` only orders instruction fetch after earlier stores.
            Fence::I => unsafe { core::arch::asm!("fence.i") },
            Fence::Vma { start, size, asid } => self.mmu.fence(start, size, asid),
        }
    }
}

/// The real CSRs hypocaust last set for the guest, so unchanged ones are not rewritten.
struct RealCsrs {
    /// `sstatus` bits mirrored from the guest: FS and MXR.
    status: u64,
    scounteren: u64,
    /// What the real timer is armed for.
    timer: u64,
}

/// The `sstatus` bits the real hart takes from the guest's.
const MIRRORED: u64 = Sstatus::FS.bits() | Sstatus::MXR.bits();

fn read_csr_scause_stval() -> (u64, u64) {
    let (scause, stval): (u64, u64);
    // SAFETY: reading CSRs.
    unsafe {
        core::arch::asm!("csrr {0}, scause", "csrr {1}, stval", out(reg) scause, out(reg) stval)
    };
    (scause, stval)
}

/// Sets the real CSRs the vCPU's state calls for.
fn prepare(real: &mut RealCsrs, mmu: &mut VcpuMmu, v: &Vcpu) {
    mmu.load(v);
    let status = v.csrs.sstatus & MIRRORED;
    if real.status != status {
        // SAFETY: FS gates the guest's FP use (hypocaust, built without F/D, has none); MXR
        // acts on the guest's shadow entries, never on hypocaust's own (no X-only pages).
        unsafe {
            core::arch::asm!("csrc sstatus, {0}", "csrs sstatus, {1}", in(reg) MIRRORED, in(reg) status)
        };
        real.status = status;
    }
    let counters = v.real_scounteren();
    if real.scounteren != counters {
        // SAFETY: scounteren only gates U-mode counter reads.
        unsafe { core::arch::asm!("csrw scounteren, {0}", in(reg) counters) };
        real.scounteren = counters;
    }
    // The guest always runs in real U-mode. A trap from the guest clears SPP; only a trap
    // taken in hypocaust itself sets it.
    if real_sstatus() & Sstatus::SPP.bits() != 0 {
        // SAFETY: clearing SPP makes the next `sret` go to U-mode.
        unsafe { core::arch::asm!("csrc sstatus, {0}", in(reg) Sstatus::SPP.bits()) };
    }
}

/// The real timer deadline a vCPU needs: its own, unless already passed (its timer
/// interrupt is then pending and visible without the hardware's help).
fn wanted_timer(v: &Vcpu, now: u64) -> u64 {
    if v.csrs.stimecmp > now { v.csrs.stimecmp } else { u64::MAX }
}

fn set_timer(real: &mut RealCsrs, deadline: u64) {
    if real.timer != deadline {
        timer::arm(deadline);
        real.timer = deadline;
    }
}

/// Acknowledges what woke or interrupted the hart. Timer interrupts need nothing: the
/// next pass re-arms the timer from the vCPU's deadline.
fn acknowledge(irq: Option<Interrupt>, real: &mut RealCsrs, guest: &Guest) {
    match irq {
        Some(Interrupt::SupervisorExternal) => host_external(Some(guest)),
        Some(Interrupt::SupervisorTimer) | None => {
            // Force the next `set_timer` to write, which clears STIP.
            real.timer = 0;
        }
        Some(Interrupt::SupervisorSoft) => {
            // SAFETY: clearing SSIP acknowledges a cross-hart kick.
            unsafe { core::arch::asm!("csrc sip, {0}", in(reg) Interrupts::SSI.bits()) };
        }
        Some(other) => log::warn!("unexpected host interrupt {other:?}"),
    }
}

/// Serves the host's external interrupts pending for this hart: console input, and the
/// passed-through devices of `guest` (the guest this hart runs, if any).
pub fn host_external(guest: Option<&Guest>) {
    let hart = hart::current_hart_id();
    loop {
        let source = irq::claim(hart);
        if source == 0 {
            return;
        }
        if irq::is_console(source) {
            let got = console::pump_input();
            irq::complete(hart, source);
            // The guest in focus may run on another hart, perhaps waiting in `wfi`.
            if let Some(index) = got.filter(|&i| guest.map(|g| g.index) != Some(i))
                && let Some(id) = crate::guest_hart(index)
            {
                let _ = sbi_rt::send_ipi(sbi_rt::HartMask::from_mask_base(1, id));
            }
            continue;
        }
        log::trace!("host interrupt {source}");
        let taken =
            guest.is_some_and(|g| g.with_board(|b| b.host_interrupt(&g.memory, source, hart)));
        if !taken {
            // Nobody owns it here (its guest is gone): stop it from coming back.
            log::warn!("host interrupt {source} has no guest on this hart; masking it");
            irq::route(source, None);
            irq::complete(hart, source);
        }
    }
}

/// The device access a page fault stands for, at guest-physical `gpa` (no RAM there).
fn device_access(
    v: &mut Vcpu,
    host: &mut GuestHost,
    kind: AccessType,
    va: u64,
    gpa: GuestPhysAddr,
) {
    match kind {
        AccessType::Read => v.emulate_mmio(host, Direction::Load, va, gpa),
        AccessType::Write => v.emulate_mmio(host, Direction::Store, va, gpa),
        // Executing from a device or from nowhere.
        AccessType::Execute => v.raise(Exception::InstructionAccessFault, va),
    }
}

/// Runs the vCPU in `ctx` until the guest resets or stops its hart.
pub fn run(guest: &Guest, ctx: &mut GuestContext, mmu: &mut VcpuMmu, stats: &mut ExitStats) -> End {
    let mut real = RealCsrs { status: u64::MAX, scounteren: u64::MAX, timer: 0 };
    // SAFETY: host timer, software and external interrupts trap while the guest runs (U-mode); in
    // hypocaust sstatus.SIE stays clear, so they only wake `wfi` there.
    unsafe {
        core::arch::asm!("csrs sie, {0}", in(reg) (Interrupts::STI | Interrupts::SSI | Interrupts::SEI).bits())
    };
    loop {
        let now = arch::time();
        let lines = Lines { now, external: false };
        if console::input_waiting() {
            guest.with_board(|b| b.pump_uart());
        }
        let lines = Lines { external: guest.external(), ..lines };
        let v = &mut ctx.vcpu;
        v.effects = vcpu::CsrEffect::empty();
        match v.prepare_entry(lines) {
            Entry::Run => {}
            Entry::Stopped => return End::Stopped,
            Entry::Wait => {
                // Whatever becomes pending from here on (the timer armed now, a device, a
                // kick from another hart) is a real interrupt that ends the `wfi`; the next
                // pass looks again.
                set_timer(&mut real, wanted_timer(v, now));
                console::flush_guest(guest.index);
                arch::wait_for_interrupt();
                acknowledge(pending_host_interrupt(), &mut real, guest);
                continue;
            }
        }
        set_timer(&mut real, wanted_timer(v, now));
        prepare(&mut real, mmu, v);

        // SAFETY: `prepare` set up satp, sstatus and scounteren for this guest.
        unsafe { enter_guest(ctx) };

        let (scause, stval) = read_csr_scause_stval();
        let v = &mut ctx.vcpu;
        if real.status & Sstatus::FS.bits() != 0 && real_fs() == ExtState::Dirty as u64 {
            v.csrs.set_fs_dirty();
            real.status |= Sstatus::FS.bits();
        }
        let slot = (scause & 63) as usize + if scause >> 63 != 0 { 64 } else { 0 };
        stats.counts[slot] += 1;
        match Cause::from_scause(scause) {
            Cause::Interrupt(irq) => acknowledge(Some(irq), &mut real, guest),
            Cause::Exception(
                e @ (Exception::InstructionPageFault
                | Exception::LoadPageFault
                | Exception::StorePageFault),
            ) => {
                let result = if mmu::shadow::is_paged(v.csrs.satp) {
                    mmu.page_fault(&guest.memory, v, e, stval)
                } else {
                    // Bare: all of the guest's RAM is mapped, so this is no RAM, and the address
                    // that faulted is guest-physical.
                    let kind = mmu::shadow::access_of(e).expect("a page fault");
                    PageFault::NotRam { kind, gpa: GuestPhysAddr::new(stval) }
                };
                log::trace!("{e:?} at {stval:#x} (pc {:#x}): {result:x?}", v.regs.pc);
                match result {
                    PageFault::Filled => {}
                    PageFault::Guest((fault, tval)) => v.raise(fault, tval),
                    PageFault::NotRam { kind, gpa } => {
                        let mut host = GuestHost { guest, mmu };
                        device_access(v, &mut host, kind, stval, gpa);
                    }
                }
            }
            Cause::Exception(e) => {
                let mut host = GuestHost { guest, mmu };
                match v.handle_exception(e, stval, &mut host) {
                    Action::Resume | Action::Wait => {}
                    Action::Stop => return End::Stopped,
                    Action::Reset(kind) => return End::Reset(kind),
                }
            }
            Cause::Unknown(code) if code >> 63 != 0 => {
                // An interrupt hypocaust never enables: mask it so it cannot storm.
                log::warn!("unexpected host interrupt, scause {code:#x}; masking it");
                // SAFETY: clearing a sie bit only stops an interrupt from being taken.
                unsafe { core::arch::asm!("csrc sie, {0}", in(reg) 1u64 << (code & 63)) };
            }
            Cause::Unknown(code) => {
                // An exception hypocaust does not know (a newer extension's): the guest's.
                v.trap(code, stval);
            }
        }
    }
}

/// The real `sstatus`.
fn real_sstatus() -> u64 {
    let sstatus: u64;
    // SAFETY: reading a CSR.
    unsafe { core::arch::asm!("csrr {0}, sstatus", out(reg) sstatus) };
    sstatus
}

/// The real `sstatus.FS`.
fn real_fs() -> u64 {
    (real_sstatus() >> SSTATUS_FS_SHIFT) & 3
}

/// The highest-priority host interrupt pending now, if any (after `wfi`).
fn pending_host_interrupt() -> Option<Interrupt> {
    let sip: u64;
    // SAFETY: reading a CSR.
    unsafe { core::arch::asm!("csrr {0}, sip", out(reg) sip) };
    [Interrupt::SupervisorExternal, Interrupt::SupervisorSoft, Interrupt::SupervisorTimer]
        .into_iter()
        .find(|i| sip & i.mask() != 0)
}
