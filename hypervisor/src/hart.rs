//! Harts: per-hart state (reached through `tp`), bringing secondary harts up through
//! SBI HSM, and the table every hart reads to tell another one to look at its vCPUs
//! ([`notify`]).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spin::Once;

use rv::HostVirtAddr;

use crate::{arch, firmware, layout, mm};

/// State of one physical hart, owned by that hart.
#[derive(Debug)]
pub struct HartLocal {
    /// The hart ID, as SBI knows it.
    pub hartid: usize,
    /// Position in hypocaust's hart list (0 = boot hart): picks its stack.
    pub index: usize,
}

/// What `_secondary_start` reads: laid out for the assembly (see entry.S).
#[repr(C)]
struct HartBoot {
    early_satp: u64,
    kernel_satp: u64,
    stack_top: u64,
    local: *mut HartLocal,
    /// The direct map's offset (the entry assembly needs it before it can run Rust).
    virt_offset: u64,
}

/// Hart ID of the boot hart, for code that runs before `tp` is set.
static BOOT_HARTID: AtomicUsize = AtomicUsize::new(0);

/// Number of harts that finished bring-up.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Records the boot hart's ID. Called first thing by the boot hart.
pub fn set_boot_hart(hartid: usize) {
    BOOT_HARTID.store(hartid, Ordering::Relaxed);
}

/// The hart ID of the calling hart.
pub fn current_hart_id() -> usize {
    match current() {
        Some(local) => local.hartid,
        None => BOOT_HARTID.load(Ordering::Relaxed),
    }
}

/// The calling hart's state, once it has some.
pub fn current() -> Option<&'static HartLocal> {
    let tp = arch::thread_pointer();
    // SAFETY: `tp` is zero or was set by `enter` to a leaked `HartLocal` of this hart.
    (tp != 0).then(|| unsafe { &*(tp as *const HartLocal) })
}

/// Makes `local` the calling hart's state and counts the hart online.
fn enter(local: &'static mut HartLocal) {
    // SAFETY: `local` is leaked, so it lives as long as the hart runs hypocaust.
    unsafe { arch::set_thread_pointer(local as *mut HartLocal as usize) };
    arch::trap::install();
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// Sets up the boot hart's state (it has hart index 0).
pub fn enter_boot_hart(hartid: usize) {
    enter(Box::leak(Box::new(HartLocal { hartid, index: 0 })));
}

/// Why a hart did not start.
#[derive(Debug)]
pub enum StartError {
    OutOfMemory,
    /// SBI `hart_start` returned this error code.
    Sbi(isize),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory => write!(f, "out of memory for its boot block"),
            Self::Sbi(code) => write!(f, "SBI hart_start returned error {code}"),
        }
    }
}

/// Starts hart `hartid` as hart index `index`; it runs [`rust_secondary`] once up.
pub fn start(hartid: usize, index: usize) -> Result<(), StartError> {
    let local = Box::leak(Box::new(HartLocal { hartid, index }));
    let page = mm::alloc_frames(1).ok_or(StartError::OutOfMemory)?;
    let boot = layout::phys_to_virt(page).raw() as *mut HartBoot;
    // SAFETY: the page was just allocated for this block; the new hart reads it only after
    // SBI `hart_start`, which orders this write before its start.
    unsafe {
        boot.write(HartBoot {
            early_satp: arch::early_satp(),
            kernel_satp: mm::kernel_satp(),
            stack_top: layout::stack_top(index),
            local,
            virt_offset: layout::mode().virt_offset(),
        });
    }
    // Right after boot the firmware may still be parking a hart (OpenSBI picks its boot hart
    // by lottery, and the others report ALREADY_AVAILABLE until they are stopped): retry
    // for up to a second.
    let deadline = arch::time() + crate::PLATFORM.get().map_or(10_000_000, |p| p.timebase_hz);
    loop {
        let ret =
            sbi_rt::hart_start(hartid, arch::secondary_entry_phys() as usize, page.raw() as usize);
        let already = ret.error == sbi_spec::binary::RET_ERR_ALREADY_AVAILABLE;
        if ret.error == 0 {
            return Ok(());
        }
        if !already || arch::time() > deadline {
            return Err(StartError::Sbi(ret.error as isize));
        }
        core::hint::spin_loop();
    }
}

/// Rust entry of a secondary hart: on the kernel page table and its own stack.
pub extern "C" fn rust_secondary(_hartid: usize, boot: HostVirtAddr) -> ! {
    // SAFETY: `boot` is the direct-map address of the HartBoot block `start` wrote.
    let local = unsafe { &mut *(*(boot.raw() as *const HartBoot)).local };
    let index = local.index;
    enter(local);
    log::debug!("online (hart index {index})");
    crate::schedule::secondary_main()
}

/// Number of harts online.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// What every hart knows about each hart hypocaust runs on.
struct HartSlot {
    /// The hart ID, as SBI knows it.
    id: usize,
    /// Something changed for the hart's vCPUs (one woke, a guest wants a reboot...): the
    /// hart's scheduler must look.
    attention: AtomicBool,
}

/// The harts hypocaust runs on, by hart index.
static HARTS: Once<Vec<HartSlot>> = Once::new();

/// Records the harts hypocaust runs on (hart IDs by hart index). Call once at boot.
pub fn set_harts(ids: &[usize]) {
    HARTS.call_once(|| {
        ids.iter().map(|&id| HartSlot { id, attention: AtomicBool::new(false) }).collect()
    });
}

/// The number of harts hypocaust runs on.
pub fn count() -> usize {
    HARTS.get().map_or(1, Vec::len)
}

/// The hart ID of hart index `index`.
pub fn id_of(index: usize) -> usize {
    HARTS.get().and_then(|h| h.get(index)).map_or(0, |h| h.id)
}

/// The calling hart's index.
pub fn current_index() -> usize {
    current().map_or(0, |h| h.index)
}

/// Tells hart index `index` to look at its vCPUs: marks it, and kicks it unless it is the
/// calling hart (which looks at its next scheduling point).
pub fn notify(index: usize) {
    let Some(slot) = HARTS.get().and_then(|h| h.get(index)) else { return };
    slot.attention.store(true, Ordering::SeqCst);
    if index != current_index() {
        firmware::kick(slot.id);
    }
}

/// Makes hart index `index` leave the guest it runs (to take an interrupt or a fence from
/// its vCPU's mailbox), without its scheduler having to look; nothing for the calling hart,
/// which looks before it next enters a guest.
pub fn kick(index: usize) {
    if index != current_index() {
        firmware::kick(id_of(index));
    }
}

/// Whether hart index `index` has been told to look, clearing the mark.
pub fn take_attention(index: usize) -> bool {
    HARTS
        .get()
        .and_then(|h| h.get(index))
        .is_some_and(|s| s.attention.swap(false, Ordering::SeqCst))
}

/// Whether hart index `index` has been told to look (the mark stays).
pub fn attention(index: usize) -> bool {
    HARTS.get().and_then(|h| h.get(index)).is_some_and(|s| s.attention.load(Ordering::SeqCst))
}
