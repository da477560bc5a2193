//! Guests: their RAM, devices and vCPUs, and their lifetime (boot, reboot, pause, power
//! off).
//!
//! A guest's RAM is one contiguous block of host RAM of any size (memory.rs). While a
//! vCPU's `satp` is Bare it runs on a table that maps the guest's RAM at GVA = GPA with U
//! pages, and hypocaust's own slots without U; paged, it runs on its own shadow tables
//! (paging.rs). The devices are in board.rs.
//!
//! Each vCPU is a [`VcpuCell`]: a state shared with every hart ([`sched::state`]), a
//! mailbox for what other vCPUs send it (IPIs, remote fences), and the register state and
//! shadow tables that only the hart it is placed on touches. A request that concerns the
//! whole guest (reboot, power off) is acknowledged by each hart that runs one of its
//! vCPUs once they are all put aside; the last hart to acknowledge carries it out
//! ([`Guest::acknowledge`]).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use mmu::map::Mapper;
use rv::csr::Satp;
use rv::pte::PteFlags;
use rv::{GuestPhysAddr, HostPhysAddr};
use sched::mailbox::Mailbox;
use sched::state::{SharedState, VcpuState};
use sha2::{Digest, Sha256};
use spin::Mutex;
use vcpu::{HartState, Vcpu};

use crate::arch::fp::FpRegs;
use crate::arch::trap::GuestContext;
use crate::board::{Board, Layout};
use crate::memory::{GuestMemory, RAM_BASE};
use crate::paging::{FramePool, VcpuMmu};
use crate::run::{ExitCounters, ExitSummary};
use crate::{arch, clock, hart, layout, mm};

/// Smallest guest RAM accepted.
pub const MIN_MEMORY_MIB: u32 = 16;

/// Most vCPUs one guest can have.
pub const MAX_VCPUS: usize = 8;

/// Why a guest could not be set up.
#[derive(Debug)]
pub enum GuestError {
    Memory { mib: u32, free: u64, largest: u64 },
    TooSmall { mib: u32 },
    Image(loader::image::ImageError),
    Layout(loader::layout::TooSmall),
    DeviceTree,
    PageTable,
    ShadowPool { mib: u64 },
    Vcpus(u32),
    Devices(devices::bus::BusError),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { mib, free, largest } => write!(
                f,
                "not enough free host RAM for {mib} MiB of guest RAM ({} MiB free, at most {} \
                 MiB in one piece): lower its memory",
                free >> 20,
                largest >> 20
            ),
            Self::TooSmall { mib } => write!(
                f,
                "{mib} MiB of RAM is too little; guests get at least {MIN_MEMORY_MIB} MiB"
            ),
            Self::Image(e) => write!(f, "{e}"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::DeviceTree => write!(f, "could not build its device tree"),
            Self::PageTable => write!(f, "out of memory for its page table"),
            Self::ShadowPool { mib } => {
                write!(f, "not enough free host RAM for its {mib} MiB of shadow page tables")
            }
            Self::Vcpus(n) => {
                write!(f, "it asks for {n} vCPUs; a guest has 1 to {MAX_VCPUS}")
            }
            Self::Devices(e) => write!(f, "its devices do not fit its address space: {e}"),
        }
    }
}

/// What every guest is offered, decided from the host at boot.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The guest's `riscv,isa`.
    pub isa: String,
    pub features: vcpu::Features,
    pub timebase_hz: u32,
}

/// What the guest boots: its kernel, initrd and command line, from the bundle.
struct Images {
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    bootargs: String,
}

/// What a guest as a whole is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Its vCPUs are not scheduled (the monitor paused it).
    Paused,
    /// A reboot or power-off is under way.
    Changing,
    Off,
}

/// What is asked of a guest as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Reboot,
    PowerOff,
}

/// A guest's lifetime, under its lock.
struct Life {
    off: bool,
    request: Option<Request>,
    /// Hart indices that have yet to put the guest's vCPUs aside for `request`.
    waiting: u64,
}

/// What became of a request once every hart acknowledged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not every hart has acknowledged yet.
    Pending,
    Rebooted,
    /// The guest is off (by request, or because it could not boot again).
    Off,
}

/// The vCPU state only the hart it is placed on touches (while it runs it, and to put it
/// aside); others lock it only while no hart may run it (reboot).
pub struct VcpuInner {
    pub ctx: Box<GuestContext>,
    pub mmu: VcpuMmu,
    /// Its FP registers while another vCPU has the hart's.
    pub fp: FpRegs,
}

/// One vCPU of a guest.
pub struct VcpuCell {
    pub index: usize,
    /// The hart index it runs on (it never moves).
    pub hart: usize,
    pub state: SharedState,
    pub mailbox: Mailbox,
    /// Where SBI `hart_start` asked it to start: (address, opaque).
    start: Mutex<Option<(u64, u64)>>,
    /// While blocked: the `time` its timer wakes it at (`u64::MAX`: never).
    pub wake_at: AtomicU64,
    pub inner: Mutex<VcpuInner>,
    pub exits: ExitCounters,
}

impl VcpuCell {
    /// Takes a pending `hart_start` request.
    pub fn take_start(&self) -> Option<(u64, u64)> {
        self.start.lock().take()
    }

    /// The SBI HSM state another vCPU sees.
    pub fn hart_state(&self) -> HartState {
        match self.state.get() {
            VcpuState::Suspended => HartState::Suspended,
            VcpuState::Created | VcpuState::Stopped | VcpuState::Off => HartState::Stopped,
            VcpuState::Runnable | VcpuState::Running | VcpuState::Blocked => HartState::Started,
        }
    }
}

/// A guest.
pub struct Guest {
    /// Its place in the bundle.
    pub index: usize,
    pub name: String,
    pub memory: GuestMemory,
    images: Images,
    pub offer: Offer,
    layout: Layout,
    board: Mutex<Board>,
    /// Per vCPU: whether its PLIC context asserts its external interrupt, as of the last
    /// change to the board (read on every exit without the board's lock).
    external: Vec<AtomicBool>,
    pub vcpus: Vec<VcpuCell>,
    life: Mutex<Life>,
    /// A request is pending (read on every exit without the lock).
    attention: AtomicBool,
    paused: AtomicBool,
    /// Boots so far (the first is 1).
    boots: AtomicU64,
    /// The bundle's seed, for the guest's `rng-seed`.
    seed: [u8; 32],
    /// When its RTC's alarm fires (`time`; `u64::MAX`: never).
    alarm_at: AtomicU64,
    /// Hart indices its vCPUs run on.
    harts: u64,
}

/// Frames of one vCPU's shadow table pool: 1/32 of the guest's RAM shared among its
/// vCPUs, at least 256 (1 MiB) each.
fn shadow_pool_frames(memory: u64, vcpus: usize) -> usize {
    ((memory / 32 / rv::PAGE_SIZE) as usize / vcpus).max(256)
}

/// The number vCPU `vcpu` of guest `guest` has among all guests' vCPUs (for its ASIDs).
pub fn vcpu_number(guest: usize, vcpu: usize) -> usize {
    guest * MAX_VCPUS + vcpu
}

impl Guest {
    /// Sets up guest `index` as the bundle describes it, with vCPU `i` on hart index
    /// `placement[i]`: allocates its RAM, page table, shadow pools and devices, and boots
    /// it.
    pub fn create(
        index: usize,
        spec: &bundle::Guest<'static>,
        seed: [u8; 32],
        offer: Offer,
        layout: Layout,
        placement: &[usize],
    ) -> Result<Self, GuestError> {
        let mib = spec.memory_mib;
        if mib < MIN_MEMORY_MIB {
            return Err(GuestError::TooSmall { mib });
        }
        let vcpus = spec.vcpus as usize;
        if !(1..=MAX_VCPUS).contains(&vcpus) || placement.len() != vcpus {
            return Err(GuestError::Vcpus(spec.vcpus));
        }
        let size = (mib as u64) << 20;
        // 2 MiB aligned, so that the Bare view maps it with megapages where it can.
        let base = mm::alloc_block(size, 2 << 20).ok_or_else(|| {
            let (free, largest) = mm::free_for_guests();
            GuestError::Memory { mib, free, largest }
        })?;
        // SAFETY: the block was just allocated for this guest's RAM alone, and the direct
        // map covers all of RAM.
        let memory = unsafe { GuestMemory::new(base, size) };
        let result = Self::build(index, spec, seed, offer, layout, placement, memory);
        if result.is_err() {
            mm::free_block(base, size);
        }
        result
    }

    fn build(
        index: usize,
        spec: &bundle::Guest<'static>,
        seed: [u8; 32],
        offer: Offer,
        layout: Layout,
        placement: &[usize],
        memory: GuestMemory,
    ) -> Result<Self, GuestError> {
        let size = memory.size();
        let bare_satp = bare_table(&memory)?;
        let frames = shadow_pool_frames(size, placement.len());
        let mut vcpus = Vec::with_capacity(placement.len());
        for (i, &hart) in placement.iter().enumerate() {
            let number = vcpu_number(index, i);
            let pool = FramePool::new(number, frames).ok_or(GuestError::ShadowPool {
                mib: ((frames * placement.len()) as u64 * rv::PAGE_SIZE) >> 20,
            })?;
            let vcpu = Vcpu::new(i, offer.features, 0, 0);
            vcpus.push(VcpuCell {
                index: i,
                hart,
                state: SharedState::new(),
                mailbox: Mailbox::new(),
                start: Mutex::new(None),
                wake_at: AtomicU64::new(u64::MAX),
                inner: Mutex::new(VcpuInner {
                    ctx: Box::new(GuestContext::new(vcpu)),
                    mmu: VcpuMmu::new(number, bare_satp, pool),
                    fp: FpRegs::default(),
                }),
                exits: ExitCounters::default(),
            });
        }
        let board =
            Board::new(index, placement.len(), &layout, &memory).map_err(GuestError::Devices)?;
        let harts =
            placement.iter().fold(0u64, |m, &h| m | 1u64.checked_shl(h as u32).unwrap_or(0));
        let guest = Self {
            index,
            name: spec.name.to_string(),
            memory,
            images: Images {
                kernel: spec.kernel,
                initrd: spec.initrd,
                bootargs: spec.bootargs.to_string(),
            },
            offer,
            layout,
            board: Mutex::new(board),
            external: placement.iter().map(|_| AtomicBool::new(false)).collect(),
            vcpus,
            life: Mutex::new(Life { off: false, request: None, waiting: 0 }),
            attention: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            boots: AtomicU64::new(0),
            seed,
            alarm_at: AtomicU64::new(u64::MAX),
            harts,
        };
        guest.boot()?;
        Ok(guest)
    }

    /// Runs `f` on the guest's devices, then notes the level of each vCPU's external
    /// interrupt and wakes the vCPUs whose line rose.
    pub fn with_board<R>(&self, f: impl FnOnce(&mut Board) -> R) -> R {
        let mut board = self.board.lock();
        let r = f(&mut board);
        let mut rose = 0u64;
        for (i, line) in self.external.iter().enumerate() {
            let level = board.external(i);
            if line.swap(level, Ordering::AcqRel) != level && level {
                rose |= 1 << i;
            }
        }
        let alarm = board.poll_rtc();
        drop(board);
        self.alarm_at.store(alarm.map_or(u64::MAX, clock::ticks_at), Ordering::Relaxed);
        for (i, cell) in self.vcpus.iter().enumerate() {
            if rose & 1 << i != 0 {
                wake(cell);
            }
        }
        r
    }

    /// Whether vCPU `vcpu`'s external interrupt is asserted.
    pub fn external(&self, vcpu: usize) -> bool {
        self.external.get(vcpu).is_some_and(|l| l.load(Ordering::Acquire))
    }

    /// The address of vCPU `vcpu`'s external interrupt line (an `AtomicBool`), for the trap
    /// vector's fast path, which reads it.
    pub fn external_line(&self, vcpu: usize) -> u64 {
        self.external.get(vcpu).map_or(0, |l| l.as_ptr() as u64)
    }

    /// When the guest's RTC alarm fires (`time`), if it is armed.
    pub fn alarm_at(&self) -> u64 {
        self.alarm_at.load(Ordering::Relaxed)
    }

    /// The passed-through devices: (name, slot base, virtio device ID).
    pub fn passed_through(&self) -> Vec<(String, u64, u32)> {
        self.board.lock().passed_through().map(|(n, b, id)| (n.to_string(), b, id)).collect()
    }

    /// Whether hart index `hart` runs some vCPU of the guest.
    pub fn runs_on(&self, hart: usize) -> bool {
        hart < 64 && self.harts & 1 << hart != 0
    }

    /// Whether the hart may run vCPU `cell` now: it is runnable and the guest is neither
    /// paused nor being rebooted or powered off.
    pub fn may_run(&self, cell: &VcpuCell) -> bool {
        cell.state.get() == VcpuState::Runnable
            && !self.attention.load(Ordering::Acquire)
            && !self.paused.load(Ordering::Acquire)
    }

    /// Whether a reboot or power-off waits for the harts (a running vCPU leaves).
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::Acquire)
    }

    /// What the guest as a whole is doing.
    pub fn phase(&self) -> Phase {
        let life = self.life.lock();
        if life.off {
            Phase::Off
        } else if life.request.is_some() {
            Phase::Changing
        } else if self.paused.load(Ordering::Acquire) {
            Phase::Paused
        } else {
            Phase::Running
        }
    }

    /// Pauses or resumes the guest's vCPUs; `false` if it is off.
    pub fn set_paused(&self, paused: bool) -> bool {
        if self.life.lock().off {
            return false;
        }
        self.paused.store(paused, Ordering::Release);
        self.notify_harts();
        true
    }

    /// Asks for the guest to reboot or power off; its harts are told. A power-off replaces
    /// a pending reboot; nothing is asked of a guest that is off.
    pub fn request(&self, what: Request) {
        let mut life = self.life.lock();
        if life.off || life.request == Some(Request::PowerOff) {
            return;
        }
        let first = life.request.is_none();
        life.request = Some(what);
        if first {
            life.waiting = self.harts;
        }
        self.attention.store(true, Ordering::Release);
        drop(life);
        self.notify_harts();
    }

    fn notify_harts(&self) {
        (0..64).filter(|&h| self.runs_on(h)).for_each(hart::notify);
    }

    /// Hart index `hart` has put the guest's vCPUs aside (none of them runs there, and their
    /// shadow tables on it are dropped). The last hart to acknowledge carries the request
    /// out and says what became of the guest.
    pub fn acknowledge(&self, hart: usize) -> Outcome {
        let mut life = self.life.lock();
        let Some(request) = life.request else { return Outcome::Pending };
        life.waiting &= !(1u64.checked_shl(hart as u32).unwrap_or(0));
        if life.waiting != 0 {
            return Outcome::Pending;
        }
        log::debug!("guest '{}': exits {}", self.name, ExitSummary::of(&self.vcpus));
        let outcome = match request {
            Request::Reboot => match self.boot() {
                Ok(()) => Outcome::Rebooted,
                Err(e) => {
                    println!("hypocaust: guest '{}' cannot boot again: {e}", self.name);
                    Outcome::Off
                }
            },
            Request::PowerOff => Outcome::Off,
        };
        if outcome == Outcome::Off {
            self.with_board(Board::quiesce);
            for cell in &self.vcpus {
                cell.state.power_off();
                cell.mailbox.clear();
            }
            life.off = true;
        }
        life.request = None;
        self.attention.store(false, Ordering::Release);
        drop(life);
        self.notify_harts();
        outcome
    }

    /// Whether every vCPU has stopped (SBI HSM) or is off: the guest can do nothing more.
    pub fn all_stopped(&self) -> bool {
        self.vcpus.iter().all(|c| matches!(c.state.get(), VcpuState::Stopped | VcpuState::Off))
    }

    /// Starts stopped vCPU `vcpu` at `entry` with a1 = `opaque` (SBI HSM `hart_start`);
    /// `false` if it is not stopped.
    pub fn start_vcpu(&self, vcpu: usize, entry: u64, opaque: u64) -> bool {
        let Some(cell) = self.vcpus.get(vcpu) else { return false };
        let mut start = cell.start.lock();
        if cell.state.get() != VcpuState::Stopped {
            return false;
        }
        *start = Some((entry, opaque));
        if cell.state.transition(VcpuState::Stopped, VcpuState::Runnable).is_err() {
            *start = None;
            return false;
        }
        drop(start);
        hart::notify(cell.hart);
        true
    }

    /// (Re)boots the guest: RAM zeroed, kernel, initrd and device tree placed, devices
    /// reset, vCPU 0 runnable at the kernel's entry and the others stopped. No hart may run
    /// its vCPUs meanwhile (at creation, or once every hart acknowledged a reboot).
    fn boot(&self) -> Result<(), GuestError> {
        let boots = self.boots.fetch_add(1, Ordering::Relaxed) + 1;
        let size = self.memory.size();
        let plan = loader::image::plan(self.images.kernel, RAM_BASE.raw(), size)
            .map_err(GuestError::Image)?;
        // The tree's size depends on where the initrd goes, which depends on the tree's
        // size: place with a generous bound first.
        let dtb_bound = 64 * 1024;
        let initrd = self.images.initrd;
        let layout = loader::layout::place(
            RAM_BASE.raw(),
            size,
            plan.entry,
            plan.end(),
            initrd.map(|i| i.len() as u64),
            dtb_bound,
        )
        .map_err(GuestError::Layout)?;
        let virtio = self.layout.virtio_nodes();
        let rng_seed = self.rng_seed(boots);
        let dt = loader::fdt::GuestDt {
            model: "hypocaust,virt",
            harts: self.vcpus.len(),
            isa: &self.offer.isa,
            mmu_type: self.offer.features.max_satp_mode.dt_name(),
            timebase_hz: self.offer.timebase_hz,
            ram_base: RAM_BASE.raw(),
            ram_size: size,
            bootargs: &self.images.bootargs,
            initrd: layout.initrd.zip(initrd).map(|(start, i)| (start, start + i.len() as u64)),
            rng_seed: Some(&rng_seed),
            devices: loader::fdt::Devices {
                uart: self.layout.uart,
                uart_kind: self.layout.uart_kind,
                plic: self.layout.plic,
                virtio: &virtio,
                rtc: self.layout.rtc,
            },
        };
        let dtb: Vec<u8> = loader::fdt::build(&dt).map_err(|_| GuestError::DeviceTree)?;
        if dtb.len() as u64 > dtb_bound {
            return Err(GuestError::DeviceTree);
        }

        self.memory.clear();
        for s in &plan.segments {
            // `plan` checked that every segment lies in RAM.
            self.memory.write(GuestPhysAddr::new(s.gpa), s.data);
        }
        if let (Some(start), Some(initrd)) = (layout.initrd, initrd) {
            self.memory.write(GuestPhysAddr::new(start), initrd);
        }
        self.memory.write(GuestPhysAddr::new(layout.dtb), &dtb);
        let route_to = hart::id_of(self.vcpus[0].hart);
        self.with_board(|b| b.reset(route_to));

        for cell in &self.vcpus {
            let mut vcpu = if cell.index == 0 {
                Vcpu::new(0, self.offer.features, plan.entry, layout.dtb)
            } else {
                Vcpu::new(cell.index, self.offer.features, 0, 0)
            };
            if cell.index != 0 {
                vcpu.state = HartState::Stopped;
            }
            let mut inner = cell.inner.lock();
            inner.ctx.vcpu = vcpu;
            inner.fp = FpRegs::default();
            drop(inner);
            cell.mailbox.clear();
            *cell.start.lock() = None;
            cell.wake_at.store(u64::MAX, Ordering::Relaxed);
            cell.state.power_off();
            let _ = cell.state.transition(VcpuState::Off, VcpuState::Created);
            let to = if cell.index == 0 { VcpuState::Runnable } else { VcpuState::Stopped };
            let _ = cell.state.transition(VcpuState::Created, to);
        }
        Ok(())
    }

    /// 32 bytes of entropy for boot number `boots`: SHA-256 of the bundle's seed, the
    /// guest, the boot and the time, so every guest and every boot gets its own.
    fn rng_seed(&self, boots: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update((self.index as u64).to_le_bytes());
        h.update(boots.to_le_bytes());
        h.update(arch::time().to_le_bytes());
        h.update(clock::now_ns().to_le_bytes());
        h.finalize().into()
    }
}

/// An interrupt of `cell`'s became pending: if it waits, it becomes runnable and its
/// hart's scheduler is told; if it runs on another hart, that hart is kicked so the vCPU
/// leaves the guest and takes it; if it waits for its turn on a shared hart, the hart's
/// scheduler is told (it may run it sooner).
pub fn wake(cell: &VcpuCell) {
    // Pairs with the fence between a vCPU's blocking and its last look at its interrupts
    // (schedule.rs): either that look sees what the caller raised, or this sees it blocked.
    fence(Ordering::SeqCst);
    if cell.state.wake() {
        hart::notify(cell.hart);
        return;
    }
    match cell.state.get() {
        VcpuState::Running => hart::kick(cell.hart),
        VcpuState::Runnable => hart::notify(cell.hart),
        _ => {}
    }
}

/// Builds the table a guest runs on while Bare: its RAM at GVA = GPA with U pages, and
/// hypocaust's own slots without U. Returns its `satp`.
fn bare_table(memory: &GuestMemory) -> Result<u64, GuestError> {
    let mut frames = mm::KernelFrames;
    let root = mm::alloc_frames(1).ok_or(GuestError::PageTable)?;
    let mut table = Mapper::new(root, layout::mode().levels(), &mut frames);
    let user_rwx =
        PteFlags::U | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D;
    let base = memory.translate(RAM_BASE, memory.size()).ok_or(GuestError::PageTable)?;
    table
        .map_range(RAM_BASE.raw(), base.raw(), memory.size(), user_rwx, 2)
        .map_err(|_| GuestError::PageTable)?;
    table.share_root_entries(
        HostPhysAddr::new(Satp(mm::kernel_satp()).ppn() << 12),
        layout::mode().root_slots(),
    );
    Ok(Satp::new(layout::mode().satp_mode(), 0, root.page_number()).0)
}
