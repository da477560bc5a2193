//! The host's PLIC: which interrupt sources hypocaust takes on which hart, claiming and
//! completing them. Guests never touch it; they get a virtual PLIC each (board.rs).

use core::sync::atomic::{AtomicUsize, Ordering};

use platform::Platform;
use spin::Once;

use crate::layout::phys_to_virt;

const PRIORITY: usize = 0;
const ENABLE: usize = 0x2000;
const ENABLE_STRIDE: usize = 0x80;
const CONTEXT: usize = 0x20_0000;
const CONTEXT_STRIDE: usize = 0x1000;

/// The physical PLIC.
struct HostPlic {
    /// Direct-map address of its registers.
    base: usize,
    ndev: u32,
}

static PLIC: Once<HostPlic> = Once::new();

/// Harts' S-mode context numbers, by hart ID (usize::MAX: none). Sized at init.
static CONTEXTS: Once<alloc::vec::Vec<AtomicUsize>> = Once::new();

/// The guest that owns each source (a passed-through device's), by source number
/// (usize::MAX: none). Sized at init.
static OWNERS: Once<alloc::vec::Vec<AtomicUsize>> = Once::new();

impl HostPlic {
    fn reg(&self, offset: usize) -> *mut u32 {
        (self.base + offset) as *mut u32
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `offset` is a PLIC register inside the region the device tree gave, which
        // the direct map covers.
        unsafe { self.reg(offset).read_volatile() }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { self.reg(offset).write_volatile(value) }
    }
}

/// Finds the host PLIC and masks everything for hypocaust's harts (threshold 0, no source
/// enabled). Without a PLIC, guests get no device interrupts.
pub fn init(platform: &Platform, harts: &[usize]) {
    let Some(p) = &platform.plic else { return };
    let plic = PLIC
        .call_once(|| HostPlic { base: phys_to_virt(p.region.start).raw() as usize, ndev: p.ndev });
    OWNERS.call_once(|| (0..=p.ndev).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let max_hart = harts.iter().copied().max().unwrap_or(0);
    let contexts =
        CONTEXTS.call_once(|| (0..=max_hart).map(|_| AtomicUsize::new(usize::MAX)).collect());
    for &hart in harts {
        let Some(ctx) = p.supervisor_context(hart) else { continue };
        contexts[hart].store(ctx, Ordering::Relaxed);
        for word in 0..=(plic.ndev as usize / 32) {
            plic.write(ENABLE + ctx * ENABLE_STRIDE + word * 4, 0);
        }
        plic.write(CONTEXT + ctx * CONTEXT_STRIDE, 0);
    }
}

fn context(hart: usize) -> Option<usize> {
    let ctx = CONTEXTS.get()?.get(hart)?.load(Ordering::Relaxed);
    (ctx != usize::MAX).then_some(ctx)
}

/// Routes `source` to `hart` (priority 1), or takes it away from every hart (`None`).
pub fn route(source: u32, hart: Option<usize>) {
    let (Some(plic), Some(contexts)) = (PLIC.get(), CONTEXTS.get()) else { return };
    if source == 0 || source > plic.ndev {
        return;
    }
    let (word, bit) = (source as usize / 32, 1u32 << (source % 32));
    plic.write(PRIORITY + source as usize * 4, 1);
    for (h, ctx) in contexts.iter().enumerate() {
        let ctx = ctx.load(Ordering::Relaxed);
        if ctx == usize::MAX {
            continue;
        }
        let reg = ENABLE + ctx * ENABLE_STRIDE + word * 4;
        let old = plic.read(reg);
        plic.write(reg, if hart == Some(h) { old | bit } else { old & !bit });
        log::trace!(
            "plic: source {source} hart {h} context {ctx}: enable word {:#x}",
            plic.read(reg)
        );
    }
}

/// The host UART's source (console input), 0 if none.
static CONSOLE_SOURCE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Routes the console UART's `source` to `hart`.
pub fn route_console(source: u32, hart: usize) {
    CONSOLE_SOURCE.store(source, Ordering::Relaxed);
    route(source, Some(hart));
}

/// Whether `source` is the console UART's.
pub fn is_console(source: u32) -> bool {
    source != 0 && CONSOLE_SOURCE.load(Ordering::Relaxed) == source
}

/// Claims the highest-priority pending source for this hart; 0 if none.
pub fn claim(hart: usize) -> u32 {
    match (PLIC.get(), context(hart)) {
        (Some(plic), Some(ctx)) => plic.read(CONTEXT + ctx * CONTEXT_STRIDE + 4),
        _ => 0,
    }
}

/// Completes `source` claimed on `hart`.
pub fn complete(hart: usize, source: u32) {
    if let (Some(plic), Some(ctx)) = (PLIC.get(), context(hart)) {
        plic.write(CONTEXT + ctx * CONTEXT_STRIDE + 4, source);
    }
}

/// Records which guest owns host source `source` (its passed-through device's), or none.
pub fn set_owner(source: u32, guest: Option<usize>) {
    if let Some(slot) = OWNERS.get().and_then(|o| o.get(source as usize)) {
        slot.store(guest.unwrap_or(usize::MAX), Ordering::Release);
    }
}

/// The guest that owns host source `source`, if any.
pub fn owner(source: u32) -> Option<usize> {
    let guest = OWNERS.get()?.get(source as usize)?.load(Ordering::Acquire);
    (guest != usize::MAX).then_some(guest)
}
