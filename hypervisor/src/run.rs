//! Running one vCPU on this hart: enter the guest, take its trap, let the vCPU logic handle
//! it, deliver virtual interrupts, repeat — until the vCPU waits, stops, asks for a reset,
//! or the hart's scheduler wants the hart back ([`Leave`]).
//!
//! What other vCPUs send this one (IPIs, remote fences) waits in its mailbox and is taken
//! at the top of every pass, before the guest is entered; a kick (a real software
//! interrupt) makes a running vCPU leave the guest to take it.

use core::sync::atomic::{AtomicU64, Ordering, fence};

use mmu::walk::AccessType;
use rv::GuestPhysAddr;
use rv::csr::{ExtState, Interrupts, SSTATUS_FS_SHIFT, Sstatus};
use rv::insn::Width;
use rv::trap::{Cause, Exception, Interrupt};
use sched::mailbox::Flush;
use sched::state::VcpuState;
use vcpu::fast::MIRRORED;
use vcpu::mmio::Direction;
use vcpu::window::Atomic;
use vcpu::{
    Action, Entry, Fault, Fence, HartState, Host, Lines, MachineIds, ResetKind, Switched, Vcpu,
};

use crate::arch::trap::{Exit, enter_guest};
use crate::guest::{Guest, VcpuCell, VcpuInner};
use crate::paging::{PageFault, VcpuMmu, access_for};
use crate::{arch, console, hart, hypervisor, irq, layout, mm, timer};

/// Why a vCPU left the hart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// It waits for an interrupt (`wfi`, SBI HSM suspend).
    Wait,
    /// It could run on, but the hart's scheduler must look: its slice is over, another
    /// vCPU woke, the guest is being paused, rebooted or powered off.
    Yield,
    /// It stopped (SBI HSM `hart_stop`).
    Stopped,
    /// The guest asked for a system reset.
    Reset(ResetKind),
    /// Its shadow table pool cannot hold even one translation: the guest fails.
    Exhausted,
}

/// Exits taken, by cause: exceptions by code, interrupts by code + 64. Counted by the
/// hart that runs the vCPU, read by anyone (the monitor).
pub struct ExitCounters {
    counts: [AtomicU64; 128],
}

impl Default for ExitCounters {
    fn default() -> Self {
        Self { counts: [const { AtomicU64::new(0) }; 128] }
    }
}

impl ExitCounters {
    /// Counts an exit with `scause`.
    fn count(&self, scause: u64) {
        self.add(scause, 1);
    }

    /// Counts `n` exits with `scause`.
    fn add(&self, scause: u64, n: u64) {
        let slot = (scause & 63) as usize + if scause >> 63 != 0 { 64 } else { 0 };
        self.counts[slot].fetch_add(n, Ordering::Relaxed);
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The counts now, by slot.
    pub fn snapshot(&self) -> [u64; 128] {
        core::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The causes with the most exits, most first, up to `n`: (cause, count).
    pub fn top(&self, n: usize) -> alloc::vec::Vec<(Cause, u64)> {
        top_causes(&self.snapshot(), n)
    }
}

/// The causes with the most exits in `counts` (by slot), most first, up to `n`.
fn top_causes(counts: &[u64; 128], n: usize) -> alloc::vec::Vec<(Cause, u64)> {
    let mut top: alloc::vec::Vec<(usize, u64)> =
        counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    top.sort_by_key(|t| core::cmp::Reverse(t.1));
    top.truncate(n);
    top.into_iter()
        .map(|(slot, count)| {
            let cause = if slot >= 64 {
                Cause::from_scause(1 << 63 | (slot as u64 - 64))
            } else {
                Cause::from_scause(slot as u64)
            };
            (cause, count)
        })
        .collect()
}

/// Exits of several vCPUs added up, shown as `N in all, Cause n, ...` (most first).
pub struct ExitSummary(pub [u64; 128]);

impl ExitSummary {
    /// The exits of all of `cells`.
    pub fn of<'a>(cells: impl IntoIterator<Item = &'a VcpuCell>) -> Self {
        let mut sum = [0u64; 128];
        for c in cells {
            for (s, n) in sum.iter_mut().zip(c.exits.snapshot()) {
                *s += n;
            }
        }
        Self(sum)
    }
}

impl core::fmt::Display for ExitSummary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} in all", self.0.iter().sum::<u64>())?;
        for (cause, n) in top_causes(&self.0, 8) {
            write!(f, ", {cause:?} {n}")?;
        }
        Ok(())
    }
}

/// The services a vCPU of `guest` gets while it handles an exit.
struct GuestHost<'a> {
    guest: &'a Guest,
    cell: &'a VcpuCell,
    mmu: &'a mut VcpuMmu,
}

impl GuestHost<'_> {
    /// Reads `buf.len()` bytes at guest-virtual `va` as an access of `kind` by the vCPU.
    fn read_virt(&self, v: &Vcpu, va: u64, kind: AccessType, buf: &mut [u8]) -> Result<(), Fault> {
        let gpa = self.mmu.translate(&self.guest.memory, v, va, access_for(v, kind))?;
        if self.guest.memory.read(gpa, buf) { Ok(()) } else { Err((kind.access_fault(), va)) }
    }

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

/// The vCPUs of `guest` named in `harts` (bit `i`: vCPU `i`) but vCPU `me`.
fn others(guest: &Guest, me: usize, harts: u64) -> impl Iterator<Item = &VcpuCell> + '_ {
    guest.vcpus.iter().filter(move |c| c.index != me && c.index < 64 && harts & 1 << c.index != 0)
}

impl Host for GuestHost<'_> {
    fn now(&self) -> u64 {
        arch::time()
    }

    fn external_irq(&self, hart: usize) -> bool {
        self.guest.external(hart)
    }

    fn fetch_instruction(&mut self, vcpu: &Vcpu, pc: u64) -> Result<u32, Fault> {
        if let Some(bits) = self.mmu.code_bits(&self.guest.memory, vcpu, pc, false) {
            return Ok(bits);
        }
        // Halves: a 32-bit instruction may straddle a page boundary.
        let low = self.fetch_half(vcpu, pc)?;
        if rv::insn::length(low) == 2 {
            return Ok(low as u32);
        }
        let high = self.fetch_half(vcpu, pc.wrapping_add(2))?;
        Ok(low as u32 | (high as u32) << 16)
    }

    fn load_u64(&mut self, vcpu: &Vcpu, va: u64) -> Result<u64, Fault> {
        let mut b = [0u8; 8];
        self.read_virt(vcpu, va, AccessType::Read, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn in_window(&self, v: &Vcpu, va: u64) -> bool {
        self.mmu.in_window(v, va)
    }

    fn run_out_of_line(&mut self, insn: u32, a: u64, b: u64) -> Option<u64> {
        let index = hart::current_index();
        let frame = mm::exec_frame(index)?;
        arch::exec::run(layout::exec_page(index), layout::phys_to_virt(frame), insn, a, b)
    }

    fn translate(&mut self, v: &Vcpu, va: u64, dir: Direction) -> Result<GuestPhysAddr, Fault> {
        let kind = match dir {
            Direction::Load => AccessType::Read,
            Direction::Store => AccessType::Write,
        };
        self.mmu.translate(&self.guest.memory, v, va, access_for(v, kind))
    }

    fn atomic_phys(&mut self, gpa: GuestPhysAddr, width: Width, op: Atomic) -> Option<u64> {
        self.guest.memory.atomic(gpa, width, op)
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
        self.guest.with_board(|b| b.read(gpa, width))
    }

    fn mmio_write(&mut self, gpa: GuestPhysAddr, width: rv::insn::Width, value: u64) -> bool {
        self.guest.with_board(|b| b.write(gpa, width, value))
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
        hypervisor::machine_ids()
    }

    fn hart_count(&self) -> usize {
        self.guest.vcpus.len()
    }

    fn hart_state(&self, hart: usize) -> HartState {
        self.guest.vcpus.get(hart).map_or(HartState::Stopped, VcpuCell::hart_state)
    }

    fn hart_start(&mut self, hart: usize, start: GuestPhysAddr, opaque: u64) -> bool {
        self.guest.start_vcpu(hart, start.raw(), opaque)
    }

    fn send_ipi(&mut self, harts: u64) {
        for cell in others(self.guest, self.cell.index, harts) {
            // As on a hart with SBI firmware, a stopped hart takes no IPI.
            if cell.hart_state() == HartState::Stopped {
                continue;
            }
            cell.mailbox.post_ipi();
            crate::guest::wake(cell);
        }
    }

    fn remote_fence(&mut self, harts: u64, fence_kind: Fence) {
        let (flush, instructions) = match fence_kind {
            Fence::I => (None, true),
            Fence::Vma { start, size, asid } => (Some(Flush { start, size, asid }), false),
        };
        let mut waits: [Option<(&VcpuCell, u64)>; crate::guest::MAX_VCPUS] = Default::default();
        let guest = self.guest;
        for (slot, cell) in waits.iter_mut().zip(others(guest, self.cell.index, harts)) {
            *slot = Some((cell, cell.mailbox.post_flush(flush, instructions)));
        }
        // A vCPU that is not running takes the fence before it next enters the guest (its
        // mailbox is read at the top of every pass); one that runs is kicked out of the
        // guest to take it, and waited for. The fence pairs with the one after a vCPU is
        // marked running (schedule.rs).
        fence(Ordering::SeqCst);
        for (cell, _) in waits.iter().flatten() {
            if cell.state.get() == VcpuState::Running {
                hart::kick(cell.hart);
            }
        }
        for (cell, ticket) in waits.iter().flatten() {
            while !cell.mailbox.is_done(*ticket) && cell.state.get() == VcpuState::Running {
                // The other vCPU may be waiting for this one's fence meanwhile.
                serve_flushes(self.cell, self.mmu);
                core::hint::spin_loop();
            }
        }
    }

    fn fence(&mut self, _vcpu: &Vcpu, fence: Fence) {
        match fence {
            Fence::I => arch::csr::fence_i(),
            Fence::Vma { start, size, asid } => self.mmu.fence(start, size, asid),
        }
    }
}

/// Carries out the fences other vCPUs asked of `cell`.
fn serve_flushes(cell: &VcpuCell, mmu: &mut VcpuMmu) {
    let (flushes, ticket) = cell.mailbox.take_flushes();
    for f in flushes.iter() {
        mmu.fence(f.start, f.size, f.asid);
    }
    if flushes.instructions {
        arch::csr::fence_i();
    }
    cell.mailbox.complete(ticket);
}

/// Takes what other vCPUs sent `cell`: an IPI becomes its `sip.SSIP`, fences are done.
pub fn serve_mailbox(cell: &VcpuCell, inner: &mut VcpuInner) {
    if !cell.mailbox.has_work() {
        return;
    }
    if cell.mailbox.take_ipi() {
        inner.ctx.vcpu.csrs.sip_soft |= Interrupt::SupervisorSoft.mask();
    }
    serve_flushes(cell, &mut inner.mmu);
}

/// The real CSRs hypocaust last set for the guest, so unchanged ones are not rewritten.
struct RealCsrs {
    /// `sstatus` bits mirrored from the guest: FS and MXR.
    status: u64,
    scounteren: u64,
    /// What the real timer is armed for.
    timer: u64,
}

/// Sets the real CSRs the vCPU's state calls for.
fn prepare(real: &mut RealCsrs, v: &Vcpu) {
    let status = v.csrs.sstatus & MIRRORED.bits();
    if real.status != status {
        arch::csr::set_sstatus_bits(MIRRORED.bits(), status);
        real.status = status;
    }
    let counters = v.real_scounteren();
    if real.scounteren != counters {
        arch::csr::set_scounteren(counters);
        real.scounteren = counters;
    }
    // The guest always runs in real U-mode. A trap from the guest clears SPP; only a trap
    // taken in hypocaust itself sets it.
    if arch::csr::sstatus() & Sstatus::SPP.bits() != 0 {
        arch::csr::set_sstatus_bits(Sstatus::SPP.bits(), 0);
    }
}

/// The real timer deadline a vCPU needs: its own, unless already passed (its timer
/// interrupt is then pending and visible without the hardware's help).
pub fn wanted_timer(stimecmp: u64, now: u64) -> u64 {
    if stimecmp > now { stimecmp } else { u64::MAX }
}

fn set_timer(real: &mut RealCsrs, deadline: u64) {
    if real.timer != deadline {
        timer::arm(deadline);
        real.timer = deadline;
    }
}

/// Serves the host's external interrupts pending for this hart: console input, and the
/// passed-through devices of whichever guest owns them.
pub fn host_external() {
    let hart = hart::current_hart_id();
    loop {
        let source = irq::claim(hart);
        if source == 0 {
            return;
        }
        if irq::is_console(source) {
            let focus = console::pump_input();
            irq::complete(hart, source);
            // The guest in focus may wait in `wfi` for its UART: its line wakes it.
            if let Some(g) = focus.and_then(hypervisor::guest) {
                g.with_board(|b| b.pump_uart());
            }
            continue;
        }
        log::trace!("host interrupt {source}");
        let taken = irq::owner(source)
            .and_then(hypervisor::guest)
            .is_some_and(|g| g.with_board(|b| b.host_interrupt(source, hart)));
        if !taken {
            // Nobody owns it (its guest is gone): stop it from coming back.
            log::warn!("host interrupt {source} has no guest; masking it");
            irq::route(source, None);
            irq::complete(hart, source);
        }
    }
}

/// Acknowledges what interrupted the hart. Timer interrupts need nothing: the next pass
/// re-arms the timer.
fn acknowledge(irq: Interrupt, real: &mut RealCsrs) {
    match irq {
        Interrupt::SupervisorExternal => host_external(),
        // Force the next `set_timer` to write, which clears STIP; output the UART could not
        // take before goes on now.
        Interrupt::SupervisorTimer => {
            real.timer = 0;
            console::drain();
        }
        // A kick: the next pass looks at the mailbox and the hart's marks.
        Interrupt::SupervisorSoft => arch::csr::clear_soft_interrupt(),
        other => log::warn!("unexpected host interrupt {other:?}"),
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

/// Runs vCPU `cell` of `guest` (its state in `inner`) on this hart until it leaves;
/// `deadline` (`time`) is when the hart's scheduler wants the hart back (`u64::MAX`:
/// never).
pub fn run_vcpu(guest: &Guest, cell: &VcpuCell, inner: &mut VcpuInner, deadline: u64) -> Leave {
    let hart = hart::current_index();
    let mut real = RealCsrs { status: u64::MAX, scounteren: u64::MAX, timer: 0 };
    // The trap vector's fast path looks instructions up in the vCPU's code pages and
    // reads its external interrupt line.
    inner.ctx.code_pages = inner.mmu.code_pages();
    inner.ctx.external = guest.external_line(cell.index);
    inner.ctx.slice_end = deadline;
    loop {
        serve_mailbox(cell, inner);
        if hart::attention(hart) || guest.needs_attention() {
            return Leave::Yield;
        }
        let now = arch::time();
        if now >= deadline {
            return Leave::Yield;
        }
        let lines = Lines { now, external: guest.external(cell.index) };
        let v = &mut inner.ctx.vcpu;
        v.effects = vcpu::CsrEffect::empty();
        match v.prepare_entry(lines) {
            Entry::Run => {}
            Entry::Stopped => return Leave::Stopped,
            Entry::Wait => return Leave::Wait,
        }
        set_timer(&mut real, wanted_timer(v.csrs.stimecmp, now).min(deadline));
        if inner.mmu.load(v).is_err() {
            return Leave::Exhausted;
        }
        prepare(&mut real, v);
        inner.ctx.fast.other_view_satp = inner.mmu.other_view_satp(v);
        inner.ctx.fast.sum_view_satp = inner.mmu.sum_view_satp(v);

        // SAFETY: `load` and `prepare` set up satp, sstatus and scounteren for this vCPU,
        // and the scheduler enabled the host interrupts that must end its run.
        let exit = unsafe { enter_guest(&mut inner.ctx) };

        let (scause, stval) = arch::csr::trap_cause();
        let fast = &mut inner.ctx.fast;
        for (cause, n) in [
            (Exception::IllegalInstruction, core::mem::take(&mut fast.exits)),
            (Exception::EcallFromU, core::mem::take(&mut fast.ecalls)),
        ] {
            if n != 0 {
                cell.exits.add(cause as u64, n);
            }
        }
        let switched = core::mem::take(&mut fast.switched);
        let v = &mut inner.ctx.vcpu;
        // The fast path changed real CSRs behind `real`'s back.
        if switched.contains(Switched::PRIVILEGE) {
            real.scounteren = u64::MAX;
        }
        if switched.intersects(Switched::PRIVILEGE | Switched::VIEW) {
            inner.mmu.entered_view(v);
        }
        if switched.contains(Switched::STATUS) {
            real.status = u64::MAX;
        }
        if switched.contains(Switched::TIMER) {
            real.timer = 0;
        }
        if real.status & Sstatus::FS.bits() != 0 && real_fs() == ExtState::Dirty as u64 {
            v.csrs.set_fs_dirty();
            real.status |= Sstatus::FS.bits();
        }
        if exit == Exit::Deliver {
            // Handled on the fast path; the next pass delivers the interrupt.
            continue;
        }
        cell.exits.count(scause);
        match Cause::from_scause(scause) {
            Cause::Interrupt(irq) => acknowledge(irq, &mut real),
            Cause::Exception(
                e @ (Exception::InstructionPageFault
                | Exception::LoadPageFault
                | Exception::StorePageFault),
            ) => {
                let result = if mmu::shadow::is_paged(v.csrs.satp) {
                    inner.mmu.page_fault(&guest.memory, v, e, stval)
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
                        let mut host = GuestHost { guest, cell, mmu: &mut inner.mmu };
                        device_access(v, &mut host, kind, stval, gpa);
                    }
                    PageFault::Window { kind: AccessType::Execute } => {
                        let mut host = GuestHost { guest, cell, mmu: &mut inner.mmu };
                        match v.run_window_code(&mut host, e, stval) {
                            Action::Resume | Action::Wait => {}
                            Action::Stop => return Leave::Stopped,
                            Action::Reset(kind) => return Leave::Reset(kind),
                        }
                    }
                    PageFault::Window { .. } => {
                        let mut host = GuestHost { guest, cell, mmu: &mut inner.mmu };
                        v.emulate_window(&mut host, e, stval);
                    }
                    PageFault::Exhausted => return Leave::Exhausted,
                }
            }
            Cause::Exception(e) => {
                let mut host = GuestHost { guest, cell, mmu: &mut inner.mmu };
                match v.handle_exception(e, stval, &mut host) {
                    Action::Resume | Action::Wait => {}
                    Action::Stop => return Leave::Stopped,
                    Action::Reset(kind) => return Leave::Reset(kind),
                }
            }
            Cause::Unknown(code) if code >> 63 != 0 => {
                // An interrupt hypocaust never enables: mask it so it cannot storm.
                log::warn!("unexpected host interrupt, scause {code:#x}; masking it");
                arch::csr::disable_interrupt(code);
            }
            Cause::Unknown(code) => {
                // An exception hypocaust does not know (a newer extension's): the guest's.
                v.trap(code, stval);
            }
        }
    }
}

/// The real `sstatus.FS`.
fn real_fs() -> u64 {
    (arch::csr::sstatus() >> SSTATUS_FS_SHIFT) & 3
}

/// The highest-priority host interrupt pending now, if any (after `wfi`).
pub fn pending_host_interrupt() -> Option<Interrupt> {
    let sip = arch::csr::sip();
    [Interrupt::SupervisorExternal, Interrupt::SupervisorSoft, Interrupt::SupervisorTimer]
        .into_iter()
        .find(|i| sip & i.mask() != 0)
}

/// The host interrupts that end a guest's run or a `wfi`.
pub const HOST_INTERRUPTS: Interrupts =
    Interrupts::STI.union(Interrupts::SSI).union(Interrupts::SEI);
