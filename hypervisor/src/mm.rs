//! Physical memory: which RAM is free, the heap, and hypocaust's own page table.
//!
//! Free RAM is a list of ranges ([`RangeAllocator`]): guests' RAM and shadow pools are
//! blocks of any size from it ([`alloc_block`]), so guests fit the way their sizes add up.
//! The heap and a reserve for small page-sized allocations (table pages, stacks, virtio
//! shadow rings; a buddy allocator, [`alloc_frames`]) are carved from it at boot.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use buddy_system_allocator::{FrameAllocator, LockedHeap};
use mmu::map::{Frames, MapError, Mapper};
use mmu::ranges::RangeAllocator;
use platform::{PhysRange, Platform};
use rv::pte::{Pte, PteFlags};
use rv::{HostPhysAddr, HostVirtAddr, PAGE_SIZE};
use spin::Mutex;

use crate::layout::{self, phys_to_virt};

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Heap the boot hart uses before free RAM is known (to parse the device tree).
const BOOT_HEAP_SIZE: usize = 2 << 20;

#[repr(align(4096))]
struct BootHeap(#[allow(dead_code)] [u8; BOOT_HEAP_SIZE]);

static mut BOOT_HEAP: BootHeap = BootHeap([0; BOOT_HEAP_SIZE]);

/// Free RAM not yet handed out in blocks.
static BLOCKS: Mutex<RangeAllocator> = Mutex::new(RangeAllocator::new());

/// The reserve for page-sized allocations, in 4 KiB frames.
static FRAMES: Mutex<FrameAllocator<32>> = Mutex::new(FrameAllocator::new());

/// Bytes the frame reserve can still hand out.
static FREE_FRAME_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of the frame reserve: page tables (hypocaust's and guests' Bare views), stacks,
/// boot blocks, virtio shadow rings.
const FRAME_RESERVE: u64 = 16 << 20;

/// `satp` of hypocaust's own page table, once built.
static KERNEL_SATP: AtomicU64 = AtomicU64::new(0);

/// Per hart: the frame behind its out-of-line page ([`layout::exec_page`]), written
/// through the direct map.
static EXEC_FRAMES: spin::Once<Vec<HostPhysAddr>> = spin::Once::new();

/// How many harts have an out-of-line page.
pub fn exec_frames() -> usize {
    EXEC_FRAMES.get().map_or(0, Vec::len)
}

/// The frame of the out-of-line page of the hart with index `index`.
pub fn exec_frame(index: usize) -> Option<HostPhysAddr> {
    EXEC_FRAMES.get()?.get(index).copied()
}

/// RAM below this is refused: hypocaust needs room for itself and at least one guest.
pub const MIN_RAM: u64 = 64 << 20;

/// Gives the heap its boot region. Call once, first thing on the boot hart.
pub fn init_boot_heap() {
    // SAFETY: called once before any allocation; the static is used only as heap memory.
    unsafe {
        let start = (&raw mut BOOT_HEAP) as usize;
        HEAP.lock().init(start, BOOT_HEAP_SIZE);
    }
}

/// What [`init`] found.
pub struct MemoryReport {
    /// Bytes of the heap (boot heap included).
    pub heap: u64,
    /// The image, in bytes.
    pub image: u64,
}

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MemoryError {
    /// Less RAM than [`MIN_RAM`] is free.
    TooLittleRam { free: u64 },
    /// Building the page table failed.
    Map(MapError),
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLittleRam { free } => write!(f, "only {} MiB of RAM is free", free >> 20),
            Self::Map(MapError::OutOfMemory) => write!(f, "out of memory for page tables"),
            Self::Map(MapError::AlreadyMapped { va }) => write!(f, "{va:#x} is mapped twice"),
            Self::Map(MapError::Misaligned) => write!(f, "a region is not page aligned"),
        }
    }
}

/// Subtracts `hole` from every range in `ranges`.
fn subtract(ranges: &mut Vec<(u64, u64)>, hole: (u64, u64)) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(start, end) in ranges.iter() {
        if hole.1 <= start || hole.0 >= end {
            out.push((start, end));
            continue;
        }
        if start < hole.0 {
            out.push((start, hole.0));
        }
        if hole.1 < end {
            out.push((hole.1, end));
        }
    }
    *ranges = out;
}

/// Computes free RAM (RAM minus firmware, reserved regions, the image and `dtb`), hands it
/// to the frame allocator, and grows the heap.
pub fn init(platform: &Platform, dtb: PhysRange) -> Result<MemoryReport, MemoryError> {
    let sections = layout::image_sections();
    let image_start = layout::virt_to_phys(HostVirtAddr::new(sections.start)).raw();
    let image_end = layout::virt_to_phys(HostVirtAddr::new(sections.end)).raw();

    let mut free: Vec<(u64, u64)> =
        platform.memory.iter().map(|r| (r.start.raw(), r.end.raw())).collect();
    // Firmware sits below the image in the RAM bank it was loaded into.
    if let Some(bank) = platform.memory.iter().find(|r| r.contains(HostPhysAddr::new(image_start)))
    {
        subtract(&mut free, (bank.start.raw(), image_end));
    }
    for r in &platform.reserved {
        subtract(&mut free, (r.start.raw(), r.end.raw()));
    }
    let dtb_pages = (dtb.start.raw() & !(PAGE_SIZE - 1), dtb.end.raw().next_multiple_of(PAGE_SIZE));
    subtract(&mut free, dtb_pages);
    if let Some(initrd) = platform.initrd {
        subtract(
            &mut free,
            (initrd.start.raw() & !(PAGE_SIZE - 1), initrd.end.raw().next_multiple_of(PAGE_SIZE)),
        );
    }

    let mut blocks = BLOCKS.lock();
    for &(start, end) in &free {
        blocks.add(start.next_multiple_of(PAGE_SIZE), end & !(PAGE_SIZE - 1));
    }
    if let Some(initrd) = platform.initrd {
        BUNDLE.call_once(|| move_up(&mut blocks, initrd));
    }
    let total = blocks.free_bytes();
    for &(start, end) in blocks.ranges() {
        log::debug!("free RAM {start:#x}..{end:#x} ({} MiB)", (end - start) >> 20);
    }
    if total < MIN_RAM {
        return Err(MemoryError::TooLittleRam { free: total });
    }
    let reserve =
        blocks.alloc(FRAME_RESERVE, PAGE_SIZE).ok_or(MemoryError::TooLittleRam { free: total })?;
    FRAMES.lock().add_frame(
        (reserve / PAGE_SIZE) as usize,
        ((reserve + FRAME_RESERVE) / PAGE_SIZE) as usize,
    );
    FREE_FRAME_BYTES.store(FRAME_RESERVE, Ordering::Relaxed);

    // The heap gets 1/16 of free RAM rounded down to a power of two, between 4 and 32 MiB.
    let heap_bytes = (1u64 << (total / 16).max(1).ilog2()).clamp(4 << 20, 32 << 20);
    let heap_added = match blocks.alloc(heap_bytes, PAGE_SIZE) {
        Some(pa) => {
            let va = phys_to_virt(HostPhysAddr::new(pa)).raw() as usize;
            // SAFETY: the block was just taken from the free ranges, so nothing else uses
            // it; the direct map covers it.
            unsafe { HEAP.lock().add_to_heap(va, va + heap_bytes as usize) };
            heap_bytes
        }
        None => 0,
    };

    Ok(MemoryReport { heap: heap_added + BOOT_HEAP_SIZE as u64, image: image_end - image_start })
}

/// Where the guest bundle (the initrd) is, once [`init`] has moved it.
static BUNDLE: spin::Once<PhysRange> = spin::Once::new();

/// The guest bundle boot loaders put in RAM as the initrd, wherever [`init`] left it.
pub fn bundle() -> Option<PhysRange> {
    BUNDLE.get().copied()
}

/// Moves the initrd at `initrd` (not in `blocks`) to the top of free RAM if that is higher,
/// and frees where it was: boot loaders put it in the middle of RAM (QEMU halfway up), which
/// would split free RAM in two and cap a guest's RAM at half of it. Returns where it is.
fn move_up(blocks: &mut RangeAllocator, initrd: PhysRange) -> PhysRange {
    let old = initrd.start.raw() & !(PAGE_SIZE - 1);
    let pages = initrd.end.raw().next_multiple_of(PAGE_SIZE) - old;
    let Some(new) = blocks.alloc_top(pages, PAGE_SIZE) else { return initrd };
    if new <= old {
        blocks.free(new, pages);
        return initrd;
    }
    // SAFETY: both ranges are RAM in the direct map (the early table maps all of it); the
    // new one was just taken from the free ranges, so nothing else uses it, and it lies
    // above the old one's end (free RAM never overlaps the initrd's pages).
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(HostPhysAddr::new(old)).raw() as *const u8,
            phys_to_virt(HostPhysAddr::new(new)).raw() as *mut u8,
            pages as usize,
        );
    }
    blocks.free(old, pages);
    let start = new + (initrd.start.raw() - old);
    PhysRange { start: HostPhysAddr::new(start), end: HostPhysAddr::new(start + initrd.size()) }
}

/// A block of `bytes` (a multiple of the page size) aligned to `align`, not cleared.
pub fn alloc_block(bytes: u64, align: u64) -> Option<HostPhysAddr> {
    BLOCKS.lock().alloc(bytes, align.max(PAGE_SIZE)).map(HostPhysAddr::new)
}

/// Gives back a block from [`alloc_block`].
pub fn free_block(pa: HostPhysAddr, bytes: u64) {
    BLOCKS.lock().free(pa.raw(), bytes);
}

/// Bytes of RAM free for guests, and the largest block among them.
pub fn free_for_guests() -> (u64, u64) {
    let blocks = BLOCKS.lock();
    (blocks.free_bytes(), blocks.largest())
}

/// Allocates `count` contiguous zeroed frames from the reserve (rounded up to a power of
/// two).
pub fn alloc_frames(count: usize) -> Option<HostPhysAddr> {
    let frame = FRAMES.lock().alloc(count)?;
    FREE_FRAME_BYTES.fetch_sub(count.next_power_of_two() as u64 * PAGE_SIZE, Ordering::Relaxed);
    let pa = HostPhysAddr::new(frame as u64 * PAGE_SIZE);
    let va = phys_to_virt(pa).raw() as *mut u8;
    // SAFETY: the frames are ours alone now and the direct map covers all RAM.
    unsafe { core::ptr::write_bytes(va, 0, count * PAGE_SIZE as usize) };
    Some(pa)
}

/// Gives back `count` frames from [`alloc_frames`] at `pa`.
pub fn free_frames(pa: HostPhysAddr, count: usize) {
    FRAMES.lock().dealloc((pa.raw() / PAGE_SIZE) as usize, count);
    FREE_FRAME_BYTES.fetch_add(count.next_power_of_two() as u64 * PAGE_SIZE, Ordering::Relaxed);
}

/// Bytes left in the frame reserve.
pub fn free_frame_bytes() -> u64 {
    FREE_FRAME_BYTES.load(Ordering::Relaxed)
}

/// Table frames for hypocaust's own page tables, reached through the direct map.
pub struct KernelFrames;

impl KernelFrames {
    fn entry(table: HostPhysAddr, index: usize) -> *mut u64 {
        assert!(index < 512);
        (phys_to_virt(table).raw() as *mut u64).wrapping_add(index)
    }
}

impl Frames for KernelFrames {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        alloc_frames(1)
    }

    fn read_pte(&self, table: HostPhysAddr, index: usize) -> Pte {
        // SAFETY: `table` is a table page from `alloc_zeroed`, mapped by the direct map.
        Pte(unsafe { Self::entry(table, index).read_volatile() })
    }

    fn write_pte(&mut self, table: HostPhysAddr, index: usize, pte: Pte) {
        // SAFETY: as in `read_pte`.
        unsafe { Self::entry(table, index).write_volatile(pte.0) }
    }
}

const KERNEL_DATA: PteFlags =
    PteFlags::R.union(PteFlags::W).union(PteFlags::G).union(PteFlags::A).union(PteFlags::D);
const KERNEL_TEXT: PteFlags = PteFlags::R.union(PteFlags::X).union(PteFlags::G).union(PteFlags::A);
const KERNEL_RODATA: PteFlags = PteFlags::R.union(PteFlags::G).union(PteFlags::A);

/// Builds hypocaust's page table: the direct map of RAM (read-write, no execute), the image
/// with per-section permissions, the devices hypocaust drives, and one stack per hart in
/// `stacks` (index order) with a guard page below each. Returns its `satp`.
pub fn build_kernel_page_table(platform: &Platform, stacks: usize) -> Result<u64, MemoryError> {
    let mut frames = KernelFrames;
    let root = frames.alloc_zeroed().ok_or(MemoryError::Map(MapError::OutOfMemory))?;
    let mut m = Mapper::new(root, layout::mode().levels(), &mut frames);
    let sections = layout::image_sections();
    let image = (
        layout::virt_to_phys(HostVirtAddr::new(sections.start)).raw(),
        layout::virt_to_phys(HostVirtAddr::new(sections.end)).raw(),
    );
    let off = layout::mode().virt_offset();

    for bank in &platform.memory {
        let mut pieces = Vec::from([(bank.start.raw(), bank.end.raw())]);
        subtract(&mut pieces, image);
        for r in &platform.reserved {
            subtract(&mut pieces, (r.start.raw(), r.end.raw()));
        }
        for (start, end) in pieces {
            let (start, end) = (start.next_multiple_of(PAGE_SIZE), end & !(PAGE_SIZE - 1));
            if start < end {
                m.map_range(off + start, start, end - start, KERNEL_DATA, 2)
                    .map_err(MemoryError::Map)?;
            }
        }
    }
    let parts = [
        (sections.start, sections.text_end, KERNEL_TEXT),
        (sections.text_end, sections.rodata_end, KERNEL_RODATA),
        (sections.rodata_end, sections.end, KERNEL_DATA),
    ];
    for (start, end, flags) in parts {
        if start < end {
            m.map_range(start, start - off, end - start, flags, 0).map_err(MemoryError::Map)?;
        }
    }
    let devices = platform
        .uart
        .iter()
        .map(|u| u.region)
        .chain(platform.plic.iter().map(|p| p.region))
        .chain(platform.rtc.iter().map(|r| r.region))
        .chain(platform.virtio.iter().map(|v| v.region));
    for region in devices {
        let start = region.start.raw() & !(PAGE_SIZE - 1);
        let end = region.end.raw().next_multiple_of(PAGE_SIZE);
        match m.map_range(off + start, start, end - start, KERNEL_DATA, 1) {
            Ok(()) | Err(MapError::AlreadyMapped { .. }) => {}
            Err(e) => return Err(MemoryError::Map(e)),
        }
    }
    let mut exec = Vec::new();
    for index in 0..stacks {
        let frame = alloc_frames(1).ok_or(MemoryError::Map(MapError::OutOfMemory))?;
        m.map_range(layout::exec_page(index), frame.raw(), PAGE_SIZE, KERNEL_TEXT, 0)
            .map_err(MemoryError::Map)?;
        exec.push(frame);
    }
    EXEC_FRAMES.call_once(|| exec);
    for index in 0..stacks {
        let pages = (layout::STACK_SIZE / PAGE_SIZE) as usize;
        let pa = alloc_frames(pages).ok_or(MemoryError::Map(MapError::OutOfMemory))?;
        let bottom = layout::stack_top(index) - layout::STACK_SIZE;
        m.map_range(bottom, pa.raw(), layout::STACK_SIZE, KERNEL_DATA, 0)
            .map_err(MemoryError::Map)?;
    }
    let satp = rv::csr::Satp::new(layout::mode().satp_mode(), 0, root.page_number()).0;
    KERNEL_SATP.store(satp, Ordering::Release);
    Ok(satp)
}

/// `satp` of hypocaust's own page table (0 before it is built).
pub fn kernel_satp() -> u64 {
    KERNEL_SATP.load(Ordering::Acquire)
}

/// Copies `buf.len()` bytes from `src`, which another agent (a device, another hart) may
/// write concurrently: an aligned 2-, 4- or 8-byte copy is one access, so it cannot tear.
///
/// # Safety
/// `src` must be valid for reads of `buf.len()` bytes.
pub unsafe fn read_shared(src: *const u8, buf: &mut [u8]) {
    let aligned = (src as usize).is_multiple_of(buf.len().max(1));
    // SAFETY: the caller vouches for `src`; sized reads happen only when aligned.
    unsafe {
        match buf.len() {
            2 if aligned => buf.copy_from_slice(&src.cast::<u16>().read_volatile().to_ne_bytes()),
            4 if aligned => buf.copy_from_slice(&src.cast::<u32>().read_volatile().to_ne_bytes()),
            8 if aligned => buf.copy_from_slice(&src.cast::<u64>().read_volatile().to_ne_bytes()),
            // Larger copies are bulk data (images, descriptors the caller validates after
            // copying): tearing between their words is harmless.
            n if n > 8 => core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), n),
            _ => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = src.add(i).read_volatile();
                }
            }
        }
    }
}

/// Copies `data` to `dst`, which another agent may read concurrently; aligned 2-, 4- and
/// 8-byte copies are one access.
///
/// # Safety
/// `dst` must be valid for writes of `data.len()` bytes.
pub unsafe fn write_shared(dst: *mut u8, data: &[u8]) {
    let aligned = (dst as usize).is_multiple_of(data.len().max(1));
    // SAFETY: the caller vouches for `dst`; sized writes happen only when aligned.
    unsafe {
        match (data.len(), aligned) {
            (2, true) => dst.cast::<u16>().write_volatile(u16::from_ne_bytes([data[0], data[1]])),
            (4, true) => dst
                .cast::<u32>()
                .write_volatile(u32::from_ne_bytes(data.try_into().unwrap_or_default())),
            (8, true) => dst
                .cast::<u64>()
                .write_volatile(u64::from_ne_bytes(data.try_into().unwrap_or_default())),
            (n, _) if n > 8 => core::ptr::copy_nonoverlapping(data.as_ptr(), dst, n),
            _ => {
                for (i, b) in data.iter().enumerate() {
                    dst.add(i).write_volatile(*b);
                }
            }
        }
    }
}
