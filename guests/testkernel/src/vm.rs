//! Address spaces for the paging tests: page frames from a fixed arena, page tables built
//! by hand, and the kernel's own memory kept mapped (its gigabyte, identity, S-mode only).
//! The device tests take their rings and buffers from the same arena.

use core::sync::atomic::{AtomicUsize, Ordering};

use rv::csr::{Satp, SatpMode};
use rv::pte::{Pte, PteFlags};

/// Pages in the arena.
const ARENA_PAGES: usize = 256;

#[repr(C, align(4096))]
struct Arena([[u8; 4096]; ARENA_PAGES]);

static mut ARENA: Arena = Arena([[0; 4096]; ARENA_PAGES]);
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Returns every arena page (the harness calls this between tests).
pub fn reset() {
    NEXT.store(0, Ordering::SeqCst);
}

/// A zeroed page from the arena: its (physical = kernel virtual) address.
pub fn alloc_page() -> u64 {
    alloc_pages(1)
}

/// `n` zeroed, contiguous pages from the arena: the address of the first.
pub fn alloc_pages(n: usize) -> u64 {
    let i = NEXT.fetch_add(n, Ordering::SeqCst);
    assert!(i + n <= ARENA_PAGES, "the test arena is exhausted");
    let page = (&raw mut ARENA) as u64 + i as u64 * 4096;
    // SAFETY: the pages belong to the arena and were just handed out.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096 * n) };
    page
}

/// Readable, writable, executable, accessed, dirty.
pub fn rwx() -> PteFlags {
    PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D
}

/// An address space under construction.
pub struct Space {
    pub root: u64,
    pub mode: SatpMode,
}

fn vpn(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

impl Space {
    /// A space of `mode` with the kernel's gigabyte (0x8000_0000, where it runs) mapped at
    /// its physical address, S-mode only, global.
    pub fn new(mode: SatpMode) -> Self {
        let s = Self { root: alloc_page(), mode };
        s.map(0x8000_0000, 0x8000_0000, 2, rwx() | PteFlags::G);
        s
    }

    fn levels(&self) -> u32 {
        self.mode.levels()
    }

    /// The entry for `va` at `level`, making pointer tables on the way. The address of the
    /// PTE is returned so tests can change it.
    pub fn entry(&self, va: u64, level: u32) -> *mut u64 {
        let mut table = self.root;
        for l in (level + 1..self.levels()).rev() {
            let e = (table + 8 * vpn(va, l)) as *mut u64;
            // SAFETY: `table` is an arena page holding a page table.
            let pte = Pte(unsafe { e.read_volatile() });
            table = if pte.is_valid() && !pte.is_leaf() {
                pte.phys_addr()
            } else {
                let next = alloc_page();
                // SAFETY: as above.
                unsafe { e.write_volatile(Pte::new(next >> 12, PteFlags::V).0) };
                next
            };
        }
        (table + 8 * vpn(va, level)) as *mut u64
    }

    /// Maps `va` to `pa` with a leaf of `level` and `flags` (V added); returns the PTE.
    pub fn map(&self, va: u64, pa: u64, level: u32, flags: PteFlags) -> *mut u64 {
        self.set(va, level, Pte::new(pa >> 12, flags | PteFlags::V).0)
    }

    /// Writes a raw entry for `va` at `level`; returns its address.
    pub fn set(&self, va: u64, level: u32, raw: u64) -> *mut u64 {
        let e = self.entry(va, level);
        // SAFETY: `entry` returned a PTE slot in an arena page table.
        unsafe { e.write_volatile(raw) };
        e
    }

    /// The `satp` value for this space with `asid`.
    pub fn satp(&self, asid: u16) -> u64 {
        Satp::new(self.mode, asid, self.root >> 12).0
    }

    /// Turns the space on (flushing translations); `false` if the hart refuses its mode.
    pub fn activate(&self, asid: u16) -> bool {
        let satp = self.satp(asid);
        let now: u64;
        // SAFETY: the space maps the kernel's gigabyte at its physical address, so the
        // running code, stack and data stay where they are.
        unsafe {
            core::arch::asm!("csrw satp, {0}", "sfence.vma", "csrr {1}, satp", in(reg) satp, out(reg) now)
        };
        now == satp
    }
}

/// Reads a PTE.
pub fn pte(e: *mut u64) -> Pte {
    // SAFETY: `e` came from `Space::entry`.
    Pte(unsafe { e.read_volatile() })
}

/// Writes a PTE.
pub fn set_pte(e: *mut u64, raw: u64) {
    // SAFETY: `e` came from `Space::entry`.
    unsafe { e.write_volatile(raw) }
}

/// `sfence.vma` with the given operands (`None` = x0).
pub fn sfence(va: Option<u64>, asid: Option<u16>) {
    // SAFETY: a fence only drops cached translations.
    unsafe {
        match (va, asid) {
            (None, None) => core::arch::asm!("sfence.vma"),
            (Some(v), None) => core::arch::asm!("sfence.vma {0}, zero", in(reg) v),
            (None, Some(a)) => core::arch::asm!("sfence.vma zero, {0}", in(reg) a as u64),
            (Some(v), Some(a)) => {
                core::arch::asm!("sfence.vma {0}, {1}", in(reg) v, in(reg) a as u64)
            }
        }
    }
}

/// Paging off again.
pub fn deactivate() {
    // SAFETY: the kernel runs at its physical addresses.
    unsafe { core::arch::asm!("csrw satp, zero", "sfence.vma") };
}

/// Writes `code` (instruction words) to `page` and makes it visible to instruction fetch.
pub fn write_code(page: u64, code: &[u32]) {
    for (i, w) in code.iter().enumerate() {
        // SAFETY: `page` is an arena page.
        unsafe { ((page + 4 * i as u64) as *mut u32).write_volatile(*w) };
    }
    // SAFETY: orders the stores before instruction fetch.
    unsafe { core::arch::asm!("fence.i") };
}
