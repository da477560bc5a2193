//! A vCPU's memory view: the table it runs on (the fixed Bare view, or a shadow tree from
//! its cache), shadow fills on page faults, and TLB fences.
//!
//! Shadow tables come from a frame pool reserved for the guest when it is created, so a
//! guest that maps millions of pages or spins on `satp` writes can use up its own pool and
//! nothing else (crates/mmu/src/shadow.rs then evicts and flushes).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use mmu::map::Frames;
use mmu::shadow::{Fill, GuestRam, Key, ShadowCache, ShadowFrames, View, access_of, is_paged};
use mmu::walk::{Access, AccessType, WalkFeatures};
use rv::csr::{Satp, Sstatus};
use rv::pte::Pte;
use rv::trap::Exception;
use rv::{GuestPhysAddr, HostPhysAddr};
use vcpu::{Fault, Privilege, Vcpu};

use crate::memory::GuestMemory;
use crate::{arch, layout, mm};

/// Shadow trees a vCPU keeps (address spaces × views).
pub const MAX_TREES: usize = 31;

/// Real ASIDs each vCPU uses: its Bare view and one per tree slot.
const ASIDS_PER_VCPU: u16 = MAX_TREES as u16 + 1;

/// Highest real ASID the harts implement (probed at boot); 0 means none.
static MAX_ASID: AtomicU16 = AtomicU16::new(0);

/// Every hart has Svvptc: an entry made valid needs no fence (docs/shadow-paging.md).
static SVVPTC: AtomicBool = AtomicBool::new(false);

/// Notes whether every hart has Svvptc (from the device tree).
pub fn set_svvptc(all_harts: bool) {
    SVVPTC.store(all_harts, Ordering::Relaxed);
}

/// Finds how many ASID bits `satp` keeps; returns the largest ASID.
pub fn probe_asids() -> u16 {
    let max = arch::csr::probe_max_asid(mm::kernel_satp());
    MAX_ASID.store(max, Ordering::Relaxed);
    max
}

/// The real ASID for the Bare view (`slot` None) or a tree slot of the vCPU with number
/// `owner` (unique among all guests' vCPUs); 0 (with full flushes on every switch) when
/// the harts have too few.
fn real_asid(owner: usize, slot: Option<usize>) -> u16 {
    let asid = (owner as u64 + 1) * ASIDS_PER_VCPU as u64 + slot.map_or(0, |s| s as u64 + 1);
    let max = MAX_ASID.load(Ordering::Relaxed) as u64;
    if asid <= max { asid as u16 } else { 0 }
}

/// Frames reserved for one vCPU's shadow tables.
pub struct FramePool {
    free: Vec<u64>,
    /// Free frames known to be all zero (tables emptied as they were freed).
    zeroed: Vec<u64>,
    /// The vCPU's number, for its ASIDs.
    owner: usize,
}

impl FramePool {
    /// A pool of `frames` frames of guest memory for vCPU number `owner`; `None` if memory
    /// is short.
    pub fn new(owner: usize, frames: usize) -> Option<Self> {
        let base = mm::alloc_block(frames as u64 * rv::PAGE_SIZE, rv::PAGE_SIZE)?;
        let free = (0..frames as u64).rev().map(|i| base.raw() + i * rv::PAGE_SIZE).collect();
        Some(Self { free, zeroed: Vec::with_capacity(frames), owner })
    }

    fn entry(table: HostPhysAddr, index: usize) -> *mut u64 {
        assert!(index < 512);
        (layout::phys_to_virt(table).raw() as *mut u64).wrapping_add(index)
    }
}

impl Frames for FramePool {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        if let Some(pa) = self.zeroed.pop() {
            return Some(HostPhysAddr::new(pa));
        }
        let pa = HostPhysAddr::new(self.free.pop()?);
        // SAFETY: the frame came off this pool's free list, so only this pool owns it; the
        // direct map covers it.
        unsafe {
            core::ptr::write_bytes(
                layout::phys_to_virt(pa).raw() as *mut u8,
                0,
                rv::PAGE_SIZE as usize,
            )
        };
        Some(pa)
    }

    fn read_pte(&self, table: HostPhysAddr, index: usize) -> Pte {
        // SAFETY: `table` is a table frame of this pool (or hypocaust's root, read-only here).
        Pte(unsafe { Self::entry(table, index).read_volatile() })
    }

    fn write_pte(&mut self, table: HostPhysAddr, index: usize, pte: Pte) {
        // SAFETY: `table` is a table frame this pool handed out.
        unsafe { Self::entry(table, index).write_volatile(pte.0) }
    }
}

impl ShadowFrames for FramePool {
    fn free(&mut self, frame: HostPhysAddr) {
        self.free.push(frame.raw());
    }

    fn free_zeroed(&mut self, frame: HostPhysAddr) {
        self.zeroed.push(frame.raw());
    }

    fn zero_table(&mut self, table: HostPhysAddr) {
        // SAFETY: `table` is a table frame this pool handed out, in the direct map; no hart
        // runs on it (`VcpuMmu` leaves a tree before changing it in ways that free frames).
        unsafe {
            core::ptr::write_bytes(
                layout::phys_to_virt(table).raw() as *mut u8,
                0,
                rv::PAGE_SIZE as usize,
            )
        };
    }

    fn flush_tlb(&mut self, tree: usize, va: Option<u64>) {
        // A vCPU runs on one hart only, so its translations are in this hart's TLB alone.
        arch::csr::sfence_vma(va, real_asid(self.owner, Some(tree)));
    }

    fn fence_new_entries(&self) -> bool {
        !SVVPTC.load(Ordering::Relaxed)
    }
}

impl mmu::walk::GuestMemory for GuestMemory {
    fn read_u64(&self, gpa: GuestPhysAddr) -> Option<u64> {
        let mut b = [0u8; 8];
        (gpa.is_aligned(8) && self.read(gpa, &mut b)).then(|| u64::from_le_bytes(b))
    }

    fn read_u64s(&self, gpa: GuestPhysAddr, words: &mut [u64]) -> bool {
        // One range check and copy for all of them (a prefill's group of PTEs).
        gpa.is_aligned(8) && self.read(gpa, bytemuck_words(words))
    }

    fn compare_exchange_u64(&self, gpa: GuestPhysAddr, old: u64, new: u64) -> Option<u64> {
        if !gpa.is_aligned(8) {
            return None;
        }
        let hpa = self.translate(gpa, 8)?;
        // SAFETY: an aligned word of this guest's RAM, reached through the direct map; other
        // vCPUs update it only atomically too.
        let word = unsafe { AtomicU64::from_ptr(layout::phys_to_virt(hpa).raw() as *mut u64) };
        Some(match word.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(v) | Err(v) => v,
        })
    }
}

impl GuestRam for GuestMemory {
    fn host_addr(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr> {
        self.translate(gpa, len)
    }
}

/// `words` as the bytes they are made of (little-endian, as the guest's memory is).
fn bytemuck_words(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u64; the slice covers
    // exactly the words' memory, borrowed mutably for as long as the result.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

/// What a guest's PTEs may contain (no Svpbmt, no Svnapot offered).
const FEATURES: WalkFeatures = WalkFeatures { svpbmt: false };

/// What became of a page fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFault {
    /// A shadow leaf was installed: the access is retried.
    Filled,
    /// The guest gets this exception.
    Guest(Fault),
    /// The guest's translation leads to guest-physical `gpa`, which is not RAM: a device,
    /// or nothing.
    NotRam { kind: AccessType, gpa: GuestPhysAddr },
    /// The address lies in hypocaust's window (a host whose mode is the guest's): the
    /// access must be carried out by hypocaust (vcpu::window).
    Window { kind: AccessType },
    /// The vCPU's shadow pool cannot hold one more path.
    Exhausted,
}

/// Code pages remembered for instruction fetches by hypocaust ([`VcpuMmu::code_address`]):
/// [`CODE_SETS`] sets picked by page number, of two entries each, the most recently filled
/// first (the fast path reads them too: `fast.rs`).
pub const CODE_PAGES: usize = 2 * CODE_SETS;
/// Sets of the code pages.
pub const CODE_SETS: usize = 128;

/// A guest-virtual code page and the guest-physical page it translated to, for an
/// instruction fetch with guest `satp` at the vCPU's privilege.
#[derive(Clone, Copy, Debug)]
pub struct CodePage {
    /// The page's guest-virtual address; [`CodePage::EMPTY`]'s is not page-aligned.
    pub va_page: u64,
    pub satp: u64,
    /// 1 for a fetch in virtual U-mode, 0 in S-mode.
    pub user: u64,
    pub gpa_page: GuestPhysAddr,
    /// The direct-map address of that page if it is the guest's RAM, else 0.
    pub host: u64,
    /// 1 if the guest's leaf entry is global (G): like a TLB entry of a global mapping, it
    /// serves every `satp` of the same mode.
    pub global: u64,
}

impl CodePage {
    /// No page: its `va_page` matches no pc's page.
    pub const EMPTY: Self = Self {
        va_page: u64::MAX,
        satp: 0,
        user: 0,
        gpa_page: GuestPhysAddr::new(0),
        host: 0,
        global: 0,
    };

    /// Whether this entry translates `pc`'s page for a fetch with `satp` at privilege
    /// `user` (1: U-mode).
    #[inline(always)]
    fn serves(&self, pc: u64, satp: u64, user: u64) -> bool {
        self.va_page == pc & !0xfff
            && self.user == user
            && (self.satp == satp || (self.global != 0 && (self.satp ^ satp) >> 60 == 0))
    }
}

/// Lookups of other views' trees remembered (a process's two views, and a few more).
const OTHER_VIEWS: usize = 4;

/// The shadow frame pool cannot hold even the tables of one translation (the guest is
/// failed, never hypocaust).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolExhausted;

/// The memory side of one vCPU.
pub struct VcpuMmu {
    /// The vCPU's number among all guests' vCPUs (for its ASIDs).
    owner: usize,
    /// `satp` of the table the guest runs on while its own `satp` is Bare.
    bare_satp: u64,
    pool: FramePool,
    cache: ShadowCache,
    /// The key, slot and real `satp` of the tree the vCPU runs on now (None: the Bare view).
    current: Option<(Key, usize, u64)>,
    /// The `satp` this hart runs on now (hypocaust's own table between exits that change
    /// the cache).
    loaded: u64,
    /// The last shadow or Bare `satp` loaded: without ASIDs, loading another one flushes.
    last_guest_satp: u64,
    /// Recent code-page translations (a small TLB for hypocaust's own fetches, which
    /// fences empty as they do the hart's).
    code: [CodePage; CODE_PAGES],
    /// Trees last looked for by [`VcpuMmu::other_view_satp`] and their slots (None: there
    /// was none; all forgotten when a tree is made), replaced in turn.
    other_views: [Option<(Key, Option<usize>)>; OTHER_VIEWS],
    next_other_view: usize,
}

impl VcpuMmu {
    /// The memory view of vCPU number `owner`, whose Bare view is the table of
    /// `bare_satp`, with `pool` for its shadow tables.
    pub fn new(owner: usize, bare_satp: u64, pool: FramePool) -> Self {
        let host_root = HostPhysAddr::new(Satp(mm::kernel_satp()).ppn() << 12);
        Self {
            owner,
            bare_satp,
            pool,
            cache: ShadowCache::new(
                MAX_TREES,
                host_root,
                layout::mode().root_slots(),
                layout::mode().levels(),
            ),
            current: None,
            loaded: mm::kernel_satp(),
            last_guest_satp: 0,
            code: [CodePage::EMPTY; CODE_PAGES],
            other_views: [None; OTHER_VIEWS],
            next_other_view: 0,
        }
    }

    /// Whether guest-virtual `va` lies in hypocaust's window: where a shadow fill says
    /// [`Fill::Window`] (the guest's translation decides nothing here).
    pub fn in_window(&self, v: &Vcpu, va: u64) -> bool {
        is_paged(v.csrs.satp) && self.cache.in_host_slots(va)
    }

    /// Moves this hart onto hypocaust's own table. Every change to the cache that may free
    /// a table frame goes through here first, so the hart never runs on a table that is
    /// being freed or reused.
    fn leave_tree(&mut self) {
        let kernel = mm::kernel_satp();
        if self.loaded != kernel {
            // SAFETY: hypocaust's own table maps hypocaust as every shadow tree does; its
            // entries are global, so no fence is needed.
            unsafe { arch::switch_page_table_keep_tlb(kernel) };
            self.loaded = kernel;
        }
    }

    /// Puts the hart on the table the vCPU must run on now.
    pub fn load(&mut self, v: &Vcpu) -> Result<(), PoolExhausted> {
        let satp = self.satp_for(v)?;
        if self.loaded == satp {
            return Ok(());
        }
        // SAFETY: every table a guest runs on maps hypocaust exactly as its own table does.
        // Tables are told apart by ASID; without ASIDs, loading another one flushes.
        unsafe { arch::switch_page_table_keep_tlb(satp) };
        if Satp(satp).asid() == 0 && satp != self.last_guest_satp {
            arch::csr::sfence_vma(None, 0);
        }
        self.loaded = satp;
        self.last_guest_satp = satp;
        Ok(())
    }

    /// Leaves the guest's tables for hypocaust's own before another vCPU runs on this hart.
    pub fn unload(&mut self) {
        self.leave_tree();
        // Without ASIDs, the next vCPU's table must not meet this one's entries.
        self.last_guest_satp = 0;
    }

    /// The shadow statistics.
    pub fn stats(&self) -> mmu::shadow::Stats {
        self.cache.stats
    }

    /// The real `satp` the vCPU must run on now: the Bare view, or the shadow tree of its
    /// address space and view (made empty if new).
    fn satp_for(&mut self, v: &Vcpu) -> Result<u64, PoolExhausted> {
        let satp = v.csrs.satp;
        if !is_paged(satp) {
            self.current = None;
            return Ok(Satp(self.bare_satp).0 & !(0xFFFF << Satp::ASID_SHIFT)
                | (real_asid(self.owner, None) as u64) << Satp::ASID_SHIFT);
        }
        let view = View::of(v.privilege == Privilege::User, v.csrs.status(Sstatus::SUM));
        let key = Key { satp, view };
        if let Some((k, _, real)) = self.current
            && k == key
        {
            return Ok(real);
        }
        // A miss may evict a tree, perhaps the one loaded now.
        self.leave_tree();
        let (slot, fresh) = self.cache.select(key, &mut self.pool).map_err(|_| PoolExhausted)?;
        if fresh {
            self.other_views = [None; OTHER_VIEWS];
        }
        let real = self.real_satp(slot).ok_or(PoolExhausted)?;
        self.current = Some((key, slot, real));
        Ok(real)
    }

    /// The real `satp` of the tree in `slot`, if there is one.
    fn real_satp(&self, slot: usize) -> Option<u64> {
        let root = self.cache.tree(slot)?.root;
        let asid = real_asid(self.owner, Some(slot));
        Some(Satp::new(layout::mode().satp_mode(), asid, root.page_number()).0)
    }

    /// The tree of `key` if the cache has one: its slot and real `satp`.
    fn cached_tree(&mut self, key: Key) -> Option<(usize, u64)> {
        let valid =
            |cache: &ShadowCache, slot: usize| cache.tree(slot).is_some_and(|t| t.key == key);
        let remembered = self.other_views.iter().position(|m| m.is_some_and(|(k, _)| k == key));
        let slot = match remembered.and_then(|i| self.other_views[i]) {
            Some((_, None)) => None,
            Some((_, Some(slot))) if valid(&self.cache, slot) => Some(slot),
            _ => {
                let slot = self.cache.find(key);
                let i = remembered.unwrap_or_else(|| {
                    self.next_other_view = (self.next_other_view + 1) % OTHER_VIEWS;
                    self.next_other_view
                });
                self.other_views[i] = Some((key, slot));
                slot
            }
        }?;
        Some((slot, self.real_satp(slot)?))
    }

    /// The key of the vCPU's tree after its next change of privilege (a trap from U-mode,
    /// an `sret` to U-mode); None while Bare (one view for both).
    fn other_view_key(v: &Vcpu) -> Option<Key> {
        let satp = v.csrs.satp;
        let to_user = v.privilege == Privilege::Supervisor;
        is_paged(satp).then(|| Key { satp, view: View::of(to_user, v.csrs.status(Sstatus::SUM)) })
    }

    /// For the trap vector's fast path: the real `satp` the vCPU's next change of privilege
    /// switches to — the cached tree of the other view of its address space —, or 0 when
    /// there is none (or the harts have no ASIDs, where a switch must flush): the run loop
    /// then takes that `sret` or trap. 0 also while Bare, where no switch is needed.
    pub fn other_view_satp(&mut self, v: &Vcpu) -> u64 {
        let Some(key) = Self::other_view_key(v) else { return 0 };
        self.switch_target(key)
    }

    /// The real `satp` of `key`'s cached tree if the fast path may switch to it without a
    /// fence (it has a real ASID), else 0.
    fn switch_target(&mut self, key: Key) -> u64 {
        self.cached_tree(key).map_or(0, |(_, real)| if Satp(real).asid() == 0 { 0 } else { real })
    }

    /// For the fast path's `sstatus` writes in virtual S-mode: the real `satp` of the cached
    /// tree of the S-mode view with SUM flipped, or 0 (none, no ASIDs, or Bare). Named in
    /// U-mode too: a system call the fast path forwards enters S-mode with SUM as it is,
    /// and Linux then flips SUM to reach the caller's memory.
    pub fn sum_view_satp(&mut self, v: &Vcpu) -> u64 {
        let satp = v.csrs.satp;
        if !is_paged(satp) {
            return 0;
        }
        self.switch_target(Key { satp, view: View::of(false, !v.csrs.status(Sstatus::SUM)) })
    }

    /// The fast path changed the vCPU's privilege or SUM and, if paged, put the hart on
    /// the tree [`VcpuMmu::other_view_satp`] or [`VcpuMmu::sum_view_satp`] named: the vCPU
    /// (at its privilege and SUM now) runs on it.
    pub fn entered_view(&mut self, v: &Vcpu) {
        if !is_paged(v.csrs.satp) {
            return;
        }
        let view = View::of(v.privilege == Privilege::User, v.csrs.status(Sstatus::SUM));
        let key = Key { satp: v.csrs.satp, view };
        let Some((slot, real)) = self.cached_tree(key) else {
            // Not reached: the fast path switches only to trees the run loop named, and
            // nothing changed the cache since. Back to a consistent state all the same.
            self.leave_tree();
            self.current = None;
            return;
        };
        self.cache.touch(slot);
        self.current = Some((key, slot, real));
        self.loaded = real;
        self.last_guest_satp = real;
    }

    /// Drops shadow translations as `sfence.vma` asks.
    pub fn fence(&mut self, start: u64, size: u64, asid: Option<u16>) {
        // Like a TLB: a fence drops the code pages of its addresses (all: every address);
        // a fence of one address space (an ASID) only that space's entries, never those of
        // global mappings (the privileged spec's `sfence.vma` with `rs2` ≠ `x0`) — Linux
        // fences an ASID at context switches, and its kernel's code is global.
        let fenced = start & !0xfff..start.saturating_add(size);
        let drop = |entry: &mut CodePage| {
            let address = size == u64::MAX || fenced.contains(&entry.va_page);
            let space = asid.is_none_or(|a| entry.global == 0 && Satp(entry.satp).asid() == a);
            if address && space {
                *entry = CodePage::EMPTY;
            }
        };
        // A few pages: only their sets.
        let pages = fenced.end.div_ceil(rv::PAGE_SIZE).saturating_sub(fenced.start / rv::PAGE_SIZE);
        if size != u64::MAX && pages < CODE_SETS as u64 {
            for page in 0..pages {
                let set = code_set(fenced.start + page * rv::PAGE_SIZE);
                self.code[set..set + 2].iter_mut().for_each(drop);
            }
        } else {
            self.code.iter_mut().for_each(drop);
        }
        self.leave_tree();
        self.cache.invalidate(start, size, asid, &mut self.pool);
        // The current tree may have been evicted by a whole-space flush.
        self.current =
            self.current.filter(|(k, slot, _)| self.cache.tree(*slot).is_some_and(|t| t.key == *k));
    }

    /// Drops everything (the guest restarts).
    pub fn reset(&mut self) {
        self.code = [CodePage::EMPTY; CODE_PAGES];
        self.leave_tree();
        self.cache.flush_all(&mut self.pool);
        self.current = None;
    }

    /// Handles a real page fault of the guest at `va` while paged: a shadow fill, the
    /// exception the guest must see, or an access to guest-physical memory that is no RAM.
    pub fn page_fault(
        &mut self,
        memory: &GuestMemory,
        v: &Vcpu,
        cause: Exception,
        va: u64,
    ) -> PageFault {
        let Some(kind) = access_of(cause) else { return PageFault::Guest((cause, va)) };
        let Some((_, slot, _)) = self.current else { return PageFault::Guest((cause, va)) };
        let access = access_for(v, kind);
        // A fill may evict trees or empty this one to make room.
        self.leave_tree();
        match self.cache.fill(
            slot,
            memory,
            memory,
            v.csrs.satp,
            va,
            access,
            FEATURES,
            &mut self.pool,
        ) {
            Ok(Fill::Installed { .. }) => PageFault::Filled,
            Ok(Fill::GuestFault(e)) => PageFault::Guest((e, va)),
            Ok(Fill::NotRam { gpa }) => PageFault::NotRam { kind, gpa },
            Ok(Fill::Window { .. }) => PageFault::Window { kind },
            Err(_) => PageFault::Exhausted,
        }
    }

    /// Translates guest-virtual `va` for an access by the vCPU (through its table, setting
    /// A/D as the hardware would), to a guest-physical address.
    pub fn translate(
        &self,
        memory: &GuestMemory,
        v: &Vcpu,
        va: u64,
        access: Access,
    ) -> Result<GuestPhysAddr, Fault> {
        if !is_paged(v.csrs.satp) {
            return Ok(GuestPhysAddr::new(va));
        }
        mmu::walk::translate(
            memory,
            Satp(v.csrs.satp),
            rv::GuestVirtAddr::new(va),
            access,
            FEATURES,
        )
        .map(|t| t.gpa)
        .map_err(|e| (e, va))
    }
}

impl VcpuMmu {
    /// The guest-physical address of the instruction at guest-virtual `pc`, for a fetch
    /// by hypocaust at the vCPU's privilege: from the recent code pages, or a walk of the
    /// guest's tables (remembered then). Like a TLB entry, a remembered page stays until
    /// the guest fences; `None` where the fetch would fault.
    pub fn code_address(
        &mut self,
        memory: &GuestMemory,
        v: &Vcpu,
        pc: u64,
    ) -> Option<GuestPhysAddr> {
        self.code_page(memory, v, pc)?.0.checked_add(pc & 0xfff)
    }

    /// The instruction at guest-virtual `pc` (its 16 bits if compressed; with `word`, the
    /// 32 bits there whatever they hold) if its code page is remembered or found and is
    /// RAM, and the bits do not straddle the page's end: hypocaust's fast fetch, read
    /// straight from the guest's page. `None`: take the slow path (which faults as the hart
    /// would).
    pub fn code_bits(
        &mut self,
        memory: &GuestMemory,
        v: &Vcpu,
        pc: u64,
        word: bool,
    ) -> Option<u32> {
        let (_, host) = self.code_page(memory, v, pc)?;
        read_code(host as u64, pc, word)
    }

    /// The code pages, for the trap vector's fast path (valid while this `VcpuMmu` is not
    /// moved: it lives in its vCPU's cell).
    pub fn code_pages(&self) -> u64 {
        self.code.as_ptr() as u64
    }

    /// The remembered code page of `pc` for the vCPU's `satp` and privilege (its
    /// guest-physical address and [`CodePage::host`]), or the one a walk finds (then
    /// remembered); `None` where a fetch would fault.
    #[inline(always)]
    fn code_page(
        &mut self,
        memory: &GuestMemory,
        v: &Vcpu,
        pc: u64,
    ) -> Option<(GuestPhysAddr, usize)> {
        match cached_code_page(&self.code, pc, v.csrs.satp, v.privilege == Privilege::User) {
            Some(c) => Some((c.gpa_page, c.host as usize)),
            None => self.code_page_miss(memory, v, pc, code_set(pc)),
        }
    }

    #[cold]
    #[inline(never)]
    fn code_page_miss(
        &mut self,
        memory: &GuestMemory,
        v: &Vcpu,
        pc: u64,
        set: usize,
    ) -> Option<(GuestPhysAddr, usize)> {
        let satp = v.csrs.satp;
        let (gpa, global) = if is_paged(satp) {
            let access = access_for(v, AccessType::Execute);
            let t = mmu::walk::translate(
                memory,
                Satp(satp),
                rv::GuestVirtAddr::new(pc),
                access,
                FEATURES,
            )
            .ok()?;
            (t.gpa, t.pte.flags().contains(rv::pte::PteFlags::G))
        } else {
            (GuestPhysAddr::new(pc), false)
        };
        let gpa_page = gpa.align_down(rv::PAGE_SIZE);
        let host = memory.page_ptr(gpa_page).map_or(0, |p| p as u64);
        let user = u64::from(v.privilege == Privilege::User);
        // The set's older entry goes; the new one comes first.
        self.code[set + 1] = self.code[set];
        self.code[set] = CodePage {
            satp,
            user,
            va_page: pc & !0xfff,
            gpa_page,
            host,
            global: u64::from(global),
        };
        Some((gpa_page, host as usize))
    }
}

/// The first of the two entries of `pc`'s set of code pages.
fn code_set(pc: u64) -> usize {
    2 * ((pc >> 12) as usize % CODE_SETS)
}

/// The entry of `code` that translates `pc`'s page for a fetch with `satp` in U-mode
/// (`user`) or S-mode, if there is one.
#[inline(always)]
pub fn cached_code_page(
    code: &[CodePage; CODE_PAGES],
    pc: u64,
    satp: u64,
    user: bool,
) -> Option<&CodePage> {
    let set = code_set(pc);
    code[set..set + 2].iter().find(|c| c.serves(pc, satp, u64::from(user)))
}

/// The instruction at `pc` in the code page at direct-map address `host` (0: not RAM):
/// its 16 bits if compressed, or with `word` the 32 bits there whatever they hold; `None`
/// if not RAM or the bits would straddle the page's end.
#[inline(always)]
pub fn read_code(host: u64, pc: u64, word: bool) -> Option<u32> {
    if host == 0 {
        return None;
    }
    let offset = pc & 0xfff;
    let at = (host + offset) as *const u16;
    // SAFETY: `host` is the direct-map address of a page of the guest's RAM (never
    // hypocaust's own memory), `offset` lies in it and is even (a pc is); the guest may
    // change its code meanwhile: an aligned halfword read does not tear.
    let low = unsafe { at.read_volatile() };
    if !word && rv::insn::length(low) == 2 {
        return Some(u32::from(low));
    }
    if offset > 0xffc {
        return None;
    }
    // SAFETY: as above; the next halfword is in the same page.
    let high = unsafe { at.add(1).read_volatile() };
    Some(u32::from(low) | u32::from(high) << 16)
}

/// The access the vCPU makes at its current privilege, SUM and MXR.
pub fn access_for(v: &Vcpu, kind: AccessType) -> Access {
    Access {
        kind,
        user: v.privilege == Privilege::User,
        sum: v.csrs.status(Sstatus::SUM),
        mxr: v.csrs.status(Sstatus::MXR),
    }
}
