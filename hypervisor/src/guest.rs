//! Guests: their images, device tree, and the page table they run on.
//!
//! A guest's RAM is one contiguous block of host RAM (memory.rs). While the guest's `satp`
//! is Bare it runs on a table that maps its RAM at GVA = GPA with U pages, and hypocaust's
//! own slots without U; paged, it runs on shadow tables (paging.rs). Its devices are in
//! board.rs.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use mmu::map::Mapper;
use rv::csr::{Satp, SatpMode};
use rv::pte::PteFlags;
use rv::{GuestPhysAddr, HostPhysAddr};

use crate::memory::{GuestMemory, RAM_BASE};
use crate::{layout, mm};

/// Smallest guest RAM accepted.
pub const MIN_MEMORY_MIB: u32 = 16;

/// Why a guest could not be set up.
#[derive(Debug)]
pub enum GuestError {
    Memory { mib: u32 },
    TooSmall { mib: u32 },
    Image(loader::image::ImageError),
    Layout(loader::layout::TooSmall),
    DeviceTree,
    PageTable,
    Vcpus(u32),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { mib } => {
                write!(f, "not enough free host RAM for {mib} MiB of guest RAM")
            }
            Self::TooSmall { mib } => write!(
                f,
                "{mib} MiB of RAM is too little; guests get at least {MIN_MEMORY_MIB} MiB"
            ),
            Self::Image(e) => write!(f, "{e}"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::DeviceTree => write!(f, "could not build its device tree"),
            Self::PageTable => write!(f, "out of memory for its page table"),
            Self::Vcpus(n) => write!(
                f,
                "it asks for {n} vCPUs; hypocaust runs guests with exactly one vCPU for now"
            ),
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

/// A guest.
pub struct Guest {
    /// Its place in the bundle; guest `i` runs on hart index `i`.
    pub index: usize,
    pub name: String,
    pub memory: GuestMemory,
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    bootargs: String,
    pub offer: Offer,
    /// `satp` of the table the guest runs on while its own `satp` is Bare.
    pub bare_satp: u64,
    /// Frames for its shadow tables, until its vCPU takes them.
    shadow_pool: spin::Mutex<Option<crate::paging::FramePool>>,
    /// Where its devices are.
    devices: crate::board::Layout,
    /// Its devices' state; change it through [`Guest::with_board`].
    pub board: spin::Mutex<crate::board::Board>,
    /// Whether its PLIC asserts the vCPU's external interrupt, as of the last change to the
    /// board (read on every exit without taking the board's lock).
    external: core::sync::atomic::AtomicBool,
}

/// Frames of a guest's shadow table pool: 1/32 of its RAM, at least 256 (1 MiB).
fn shadow_pool_frames(memory: u64) -> usize {
    ((memory / 32 / rv::PAGE_SIZE) as usize).max(256)
}

impl Guest {
    /// Sets up guest `id` as the bundle describes it: allocates its RAM and its page table.
    pub fn create(
        id: usize,
        spec: &bundle::Guest<'static>,
        offer: Offer,
        devices: crate::board::Layout,
    ) -> Result<Self, GuestError> {
        let mib = spec.memory_mib;
        if mib < MIN_MEMORY_MIB {
            return Err(GuestError::TooSmall { mib });
        }
        if spec.vcpus != 1 {
            return Err(GuestError::Vcpus(spec.vcpus));
        }
        let size = (mib as u64) << 20;
        let base = mm::alloc_frames_uninit((size / rv::PAGE_SIZE) as usize)
            .ok_or(GuestError::Memory { mib })?;
        // SAFETY: the frames were just allocated for this guest's RAM alone, and the direct
        // map covers all of the frame allocator's memory.
        let memory = unsafe { GuestMemory::new(base, size) };

        let mut frames = mm::KernelFrames;
        let root = mm::alloc_frames(1).ok_or(GuestError::PageTable)?;
        let mut table = Mapper::new(root, 4, &mut frames);
        let user_rwx =
            PteFlags::U | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D;
        table
            .map_range(RAM_BASE.raw(), base.raw(), size, user_rwx, 2)
            .map_err(|_| GuestError::PageTable)?;
        table.share_root_entries(
            HostPhysAddr::new(Satp(mm::kernel_satp()).ppn() << 12),
            layout::HYPERVISOR_ROOT_SLOTS,
        );
        let bare_satp = Satp::new(SatpMode::Sv48, 0, root.page_number()).0;
        let pool = crate::paging::FramePool::new(id, shadow_pool_frames(size)).ok_or(
            GuestError::Memory {
                mib: mib + ((shadow_pool_frames(size) as u64 * 4096) >> 20) as u32,
            },
        )?;

        let board = spin::Mutex::new(crate::board::Board::new(id, &devices));
        Ok(Self {
            index: id,
            name: spec.name.to_string(),
            memory,
            kernel: spec.kernel,
            initrd: spec.initrd,
            bootargs: spec.bootargs.to_string(),
            offer,
            bare_satp,
            shadow_pool: spin::Mutex::new(Some(pool)),
            devices,
            board,
            external: core::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` on the guest's devices, then notes the level of its external interrupt.
    pub fn with_board<R>(&self, f: impl FnOnce(&mut crate::board::Board) -> R) -> R {
        let mut board = self.board.lock();
        let r = f(&mut board);
        self.external.store(board.external(), core::sync::atomic::Ordering::Relaxed);
        r
    }

    /// Whether the guest's PLIC asserts its vCPU's external interrupt.
    pub fn external(&self) -> bool {
        self.external.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// The guest's shadow frame pool (once: its vCPU keeps it).
    pub fn take_shadow_pool(&self) -> Option<crate::paging::FramePool> {
        self.shadow_pool.lock().take()
    }

    /// (Re)loads the guest's RAM: zeroes it, places the kernel, initrd and device tree.
    /// Returns the boot vCPU, ready to run.
    pub fn load(&self) -> Result<vcpu::Vcpu, GuestError> {
        let size = self.memory.size();
        let plan =
            loader::image::plan(self.kernel, RAM_BASE.raw(), size).map_err(GuestError::Image)?;
        // The tree's size depends on where the initrd goes, which depends on the tree's
        // size: place with a generous bound first.
        let dtb_bound = 64 * 1024;
        let layout = loader::layout::place(
            RAM_BASE.raw(),
            size,
            plan.entry,
            plan.end(),
            self.initrd.map(|i| i.len() as u64),
            dtb_bound,
        )
        .map_err(GuestError::Layout)?;
        let virtio = self.devices.virtio_nodes();
        let dt = loader::fdt::GuestDt {
            model: "hypocaust,virt",
            harts: 1,
            isa: &self.offer.isa,
            mmu_type: self.offer.features.max_satp_mode.dt_name(),
            timebase_hz: self.offer.timebase_hz,
            ram_base: RAM_BASE.raw(),
            ram_size: size,
            bootargs: &self.bootargs,
            initrd: layout
                .initrd
                .zip(self.initrd)
                .map(|(start, i)| (start, start + i.len() as u64)),
            rng_seed: None,
            devices: loader::fdt::Devices {
                uart: self.devices.uart,
                plic: self.devices.plic,
                virtio: &virtio,
                rtc: None,
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
        if let (Some(start), Some(initrd)) = (layout.initrd, self.initrd) {
            self.memory.write(GuestPhysAddr::new(start), initrd);
        }
        self.memory.write(GuestPhysAddr::new(layout.dtb), &dtb);
        self.with_board(|b| b.reset(&self.memory));
        Ok(vcpu::Vcpu::new(0, self.offer.features, plan.entry, layout.dtb))
    }
}
