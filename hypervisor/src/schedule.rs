//! The per-hart scheduler: each hart runs the vCPUs placed on it (hypervisor.rs), round
//! robin over those that are runnable.
//!
//! - A hart with one vCPU runs it until it waits; with several, each runs for a slice
//!   (`hypocaust.slice_ms`, default [`DEFAULT_SLICE_MS`]) while others are runnable. The
//!   slice ends by the hart's real timer, which traps from the guest whatever the guest
//!   does with its own interrupts, so a vCPU spinning with interrupts off cannot keep the
//!   hart.
//! - A vCPU that waits (`wfi`, SBI suspend) or stops (SBI HSM) gives the hart up. It is made
//!   runnable again by its timer (checked by its own hart, whose real timer is armed for
//!   the earliest deadline of its waiting vCPUs), or by whoever raises its interrupt (an
//!   IPI from another vCPU, a device line, console input), who also tells its hart to
//!   look ([`crate::hart::notify`]: a mark, and a kick if it is another hart).
//! - Between runs the hart puts the guests' requests into effect (reboot, power off): it
//!   drops the shadow tables of its vCPUs of that guest and acknowledges; the last hart
//!   carries the request out (guest.rs).
//!
//! The state machine every vCPU goes through is in crates/sched (`VcpuState`); every change
//! of state is a checked transition.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use rv::csr::Interrupts;
use rv::trap::Interrupt;
use sched::VcpuId;
use sched::queue::RunQueue;
use sched::state::VcpuState;
use vcpu::{HartState, Lines, ResetKind};

use crate::guest::{Guest, Outcome, Request, VcpuCell};
use crate::run::{self, Leave};
use crate::{arch, console, hart, hypervisor, timer};

/// The slice a vCPU runs for while others wait for its hart, unless the boot arguments
/// say otherwise.
pub const DEFAULT_SLICE_MS: u64 = 10;

/// The slice, in `time` ticks (set at boot).
static SLICE_TICKS: AtomicU64 = AtomicU64::new(0);

/// Sets the slice: `ms` milliseconds at `timebase_hz`.
pub fn set_slice(ms: u64, timebase_hz: u64) {
    SLICE_TICKS.store((ms.max(1) * timebase_hz / 1000).max(1), Ordering::Relaxed);
}

/// The slice in milliseconds, for the summary and the monitor.
pub fn slice_ticks() -> u64 {
    SLICE_TICKS.load(Ordering::Relaxed)
}

/// One hart's scheduler.
struct Scheduler {
    /// This hart's index.
    hart: usize,
    queue: RunQueue,
    /// The guests that have a vCPU on this hart.
    guests: Vec<&'static Guest>,
    /// The vCPU whose FP registers the hart holds.
    fp_owner: Option<VcpuId>,
    /// More than one vCPU shares the hart: vCPU switches save and restore state.
    shared: bool,
}

fn cell(id: VcpuId) -> (&'static Guest, &'static VcpuCell) {
    let g = hypervisor::guest(id.guest).expect("queues name existing guests");
    (g, &g.vcpus[id.vcpu])
}

/// Whether `id` may run now.
fn may_run(id: VcpuId) -> bool {
    let (g, c) = cell(id);
    g.may_run(c)
}

impl Scheduler {
    fn new(hart: usize) -> Self {
        let members = hypervisor::queue_of(hart);
        let mut guests: Vec<&'static Guest> = Vec::new();
        for id in &members {
            let g = cell(*id).0;
            if !guests.iter().any(|o| o.index == g.index) {
                guests.push(g);
            }
        }
        let shared = members.len() > 1;
        Self { hart, queue: RunQueue::new(members), guests, fp_owner: None, shared }
    }

    /// Forever: look at what changed, run a vCPU or wait for something to happen.
    fn run(&mut self) -> ! {
        arch::csr::enable_interrupts(run::HOST_INTERRUPTS);
        loop {
            hart::take_attention(self.hart);
            console::drain();
            self.serve_requests();
            let now = arch::time();
            self.wake_due(now);
            match self.queue.pick(may_run) {
                Some(id) => self.run_one(id),
                None => self.idle(),
            }
        }
    }

    /// Puts into effect the guests' reboots and power-offs this hart has a part in.
    fn serve_requests(&mut self) {
        for &g in &self.guests {
            if !g.needs_attention() {
                continue;
            }
            // None of the guest's vCPUs runs here now: drop their shadow tables on this
            // hart (their TLB entries are this hart's alone).
            for id in self.queue.members().iter().filter(|id| id.guest == g.index) {
                let mut inner = g.vcpus[id.vcpu].inner.lock();
                log::debug!("guest '{}' vcpu {}: shadow {:?}", g.name, id.vcpu, inner.mmu.stats());
                inner.mmu.reset();
                inner.mmu.unload();
            }
            if self.fp_owner.is_some_and(|o| o.guest == g.index) {
                self.fp_owner = None;
            }
            match g.acknowledge(self.hart) {
                Outcome::Pending => {}
                Outcome::Rebooted => log::debug!("guest '{}' rebooted", g.name),
                Outcome::Off => hypervisor::guest_gone(g),
            }
        }
    }

    /// Wakes the waiting vCPUs whose timer has come, and polls the RTC of guests whose
    /// alarm has.
    fn wake_due(&self, now: u64) {
        for &id in self.queue.members() {
            let (_, c) = cell(id);
            if c.state.get().waits_for_interrupt() && c.wake_at.load(Ordering::Acquire) <= now {
                c.state.wake();
            }
        }
        for &g in &self.guests {
            if g.vcpus[0].hart == self.hart && g.alarm_at() <= now {
                g.with_board(|b| b.poll_rtc());
            }
        }
    }

    /// When this hart must next look, for its waiting vCPUs' timers and its guests' RTC
    /// alarms (`u64::MAX`: never).
    fn next_wake(&self) -> u64 {
        let timers = self
            .queue
            .members()
            .iter()
            .map(|&id| cell(id).1)
            .filter(|c| c.state.get().waits_for_interrupt())
            .map(|c| c.wake_at.load(Ordering::Acquire));
        let alarms =
            self.guests.iter().filter(|g| g.vcpus[0].hart == self.hart).map(|g| g.alarm_at());
        timers.chain(alarms).min().unwrap_or(u64::MAX)
    }

    /// Runs vCPU `id` until it leaves, and puts its state where it belongs.
    fn run_one(&mut self, id: VcpuId) {
        let (g, c) = cell(id);
        if c.state.transition(VcpuState::Runnable, VcpuState::Running).is_err() {
            return;
        }
        // Pairs with the fence of a remote fence's sender (run.rs): either it sees this
        // vCPU running and waits for it, or this vCPU sees its fence in the mailbox.
        fence(Ordering::SeqCst);
        let mut inner = c.inner.lock();
        if let Some((entry, opaque)) = c.take_start() {
            let v = &mut inner.ctx.vcpu;
            v.reset_to(entry, opaque);
            v.state = HartState::Started;
        }
        let fp = g.offer.features.fp;
        if fp && self.fp_owner != Some(id) {
            arch::fp::restore(&inner.fp);
            self.fp_owner = Some(id);
        }
        let now = arch::time();
        let slice_end = if self.queue.contended(id, may_run) {
            now.saturating_add(SLICE_TICKS.load(Ordering::Relaxed))
        } else {
            u64::MAX
        };
        let deadline = slice_end.min(self.next_wake());
        let leave = run::run_vcpu(g, c, &mut inner, deadline);
        log::trace!("{id:?} left: {leave:?} at pc {:#x}", inner.ctx.vcpu.regs.pc);
        if self.shared {
            // The next vCPU on this hart must find neither this one's table loaded nor its
            // FP registers unsaved.
            inner.mmu.unload();
            if fp {
                arch::fp::save(&mut inner.fp);
            }
        }

        let to = match leave {
            Leave::Wait => {
                let v = &inner.ctx.vcpu;
                let timer_on = v.csrs.sie & Interrupts::STI.bits() != 0;
                let at = if timer_on { v.csrs.stimecmp } else { u64::MAX };
                c.wake_at.store(at, Ordering::Release);
                if v.state == HartState::Suspended {
                    VcpuState::Suspended
                } else {
                    VcpuState::Blocked
                }
            }
            Leave::Stopped => VcpuState::Stopped,
            Leave::Yield => VcpuState::Runnable,
            Leave::Reset(kind) => {
                if kind == ResetKind::Shutdown {
                    println!("hypocaust: guest '{}' powered off", g.name);
                    g.request(Request::PowerOff);
                } else {
                    println!("hypocaust: guest '{}' reboots ({kind:?})", g.name);
                    g.request(Request::Reboot);
                }
                VcpuState::Runnable
            }
            Leave::Exhausted => {
                println!(
                    "hypocaust: guest '{}': vCPU {}'s shadow page-table pool cannot hold one \
                     translation; powering the guest off",
                    g.name, c.index
                );
                g.request(Request::PowerOff);
                VcpuState::Runnable
            }
        };
        if let Err(e) = c.state.transition(VcpuState::Running, to) {
            // Only a power-off takes a running vCPU's state away (to Off).
            debug_assert_eq!(e.found, VcpuState::Off);
            return;
        }
        if to.waits_for_interrupt() {
            // A wake-up sent while the vCPU was still running found it running and did
            // nothing: look again now that it is marked waiting (pairs with the fence of
            // whoever raises an interrupt, guest.rs and run.rs).
            fence(Ordering::SeqCst);
            run::serve_mailbox(c, &mut inner);
            let lines = Lines { now: arch::time(), external: g.external(c.index) };
            if inner.ctx.vcpu.should_wake(lines) {
                c.state.wake();
            }
        }
        drop(inner);
        if to == VcpuState::Stopped && g.all_stopped() {
            println!("hypocaust: guest '{}' stopped its last hart", g.name);
            g.request(Request::PowerOff);
        }
    }

    /// Nothing to run: sleep until an interrupt (a kick, a device, the next timer).
    fn idle(&mut self) {
        // Clear a stale kick before the last look: a kick after it ends the `wfi`.
        arch::csr::clear_soft_interrupt();
        if hart::attention(self.hart) || self.queue.members().iter().any(|&id| may_run(id)) {
            return;
        }
        timer::arm(self.next_wake());
        console::drain();
        arch::wait_for_interrupt();
        match run::pending_host_interrupt() {
            Some(Interrupt::SupervisorExternal) => run::host_external(),
            Some(Interrupt::SupervisorSoft) => arch::csr::clear_soft_interrupt(),
            _ => {}
        }
    }
}

/// Runs this hart's scheduler: boot hart and secondary harts alike, once the guests are
/// set up.
pub fn run(hart: usize) -> ! {
    Scheduler::new(hart).run()
}

/// What every hart but the boot hart does once online: wait until the guests are set up,
/// then schedule.
pub fn secondary_main() -> ! {
    let index = hart::current_index();
    arch::csr::enable_interrupts(Interrupts::SSI);
    loop {
        if hypervisor::ready() {
            arch::csr::clear_soft_interrupt();
            run(index)
        }
        arch::wait_for_interrupt();
    }
}
