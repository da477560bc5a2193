//! Shadow page tables: a software TLB for a guest's translations.
//!
//! A guest runs in real U-mode on a *shadow* table that maps its virtual addresses straight
//! to host-physical ones. Shadow entries are made lazily: a real page fault walks the guest's
//! own table ([`crate::walk`]) and, if the guest's translation allows the access, installs a
//! leaf ([`ShadowCache::fill`]). They are dropped exactly as a hardware TLB's may be:
//! `sfence.vma` removes what it names (or more); nothing else is required, since a hart may
//! go on using a translation until the guest fences it.
//!
//! One tree exists per guest address space *and view*. The guest's U bit cannot be left to
//! the hardware — the guest kernel runs in U-mode too — so each view only holds what its
//! privilege may touch: [`View::User`] the guest's U pages, [`View::Supervisor`] its
//! S pages, [`View::SupervisorSum`] both (U pages never executable). `sstatus.MXR` needs no
//! view: the real MXR bit is set to the guest's and acts on the shadow entries directly.
//!
//! Trees are cached by address space (`satp` root, ASID, mode) so a switch back to a recent
//! process costs no refill; the cache is bounded in trees and in table frames, and runs out of
//! neither: when frames run short it evicts the least recently used tree, and if the current
//! tree alone fills the budget it is emptied (a legal TLB flush).

use alloc::vec::Vec;
use core::ops::Range;

use rv::csr::{Satp, SatpMode};
use rv::pte::{ENTRIES_PER_TABLE, PagingGeometry, Pte, PteFlags};
use rv::trap::Exception;
use rv::{GuestPhysAddr, HostPhysAddr};

use crate::map::Frames;
use crate::walk::{self, Access, AccessType, GuestMemory, WalkFeatures};

/// What the guest may touch in a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    /// Virtual U-mode: the guest's U pages.
    User,
    /// Virtual S-mode with SUM clear: the guest's S pages.
    Supervisor,
    /// Virtual S-mode with SUM set: S pages, and U pages for loads and stores.
    SupervisorSum,
}

impl View {
    /// The view of a vCPU at `user` privilege (else S) with `sum`.
    pub fn of(user: bool, sum: bool) -> Self {
        match (user, sum) {
            (true, _) => Self::User,
            (false, false) => Self::Supervisor,
            (false, true) => Self::SupervisorSum,
        }
    }

    /// The privilege (`user`, else S) and `sum` of a vCPU in this view: [`View::of`]'s
    /// inverse (U-mode's SUM plays no part).
    pub fn privilege(self) -> (bool, bool) {
        match self {
            Self::User => (true, false),
            Self::Supervisor => (false, false),
            Self::SupervisorSum => (false, true),
        }
    }
}

/// The guest address space a tree shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The guest's `satp` (mode, ASID and root).
    pub satp: u64,
    pub view: View,
}

impl Key {
    fn asid(&self) -> u16 {
        Satp(self.satp).asid()
    }
}

/// Table frames for shadow trees: allocation, freeing, entry access, and flushing the real
/// TLB when entries go away.
pub trait ShadowFrames: Frames {
    /// Gives a frame from [`Frames::alloc_zeroed`] back.
    fn free(&mut self, frame: HostPhysAddr);

    /// Gives back a frame whose every entry is zero (a table emptied as it was freed): the
    /// next [`Frames::alloc_zeroed`] may hand it out without clearing it.
    fn free_zeroed(&mut self, frame: HostPhysAddr) {
        self.free(frame);
    }

    /// Clears every entry of `table`.
    fn zero_table(&mut self, table: HostPhysAddr) {
        for i in 0..ENTRIES_PER_TABLE {
            self.write_pte(table, i, Pte::INVALID);
        }
    }

    /// Drops real TLB entries of tree slot `tree` (for `va`, or all of them).
    fn flush_tlb(&mut self, tree: usize, va: Option<u64>);

    /// Whether an entry made valid where there was none needs a fence before the hart
    /// surely sees it: yes, unless the harts have Svvptc (then a hart sees it without
    /// one; a fault it takes meanwhile finds the entry there, and that fill fences).
    fn fence_new_entries(&self) -> bool {
        true
    }
}

/// One shadow tree.
#[derive(Clone, Debug)]
pub struct Tree {
    pub key: Key,
    pub root: HostPhysAddr,
    last_used: u64,
    /// Table frames in use, the root included.
    pub frames: usize,
}

/// Counters, for the bench and the monitor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub fills: u64,
    /// Neighbours installed with a fill ([`ShadowCache::fill`]).
    pub prefills: u64,
    pub guest_faults: u64,
    pub tree_hits: u64,
    pub tree_misses: u64,
    pub evictions: u64,
    pub flushes: u64,
}

/// No frame can be had even after emptying every tree: the frame budget is smaller than
/// one path from root to leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfFrames;

/// The shadow trees of one vCPU.
pub struct ShadowCache {
    /// Slots; a slot's index is also what the real ASID is derived from.
    trees: Vec<Option<Tree>>,
    clock: u64,
    /// Where hypocaust's own root entries come from, and which ones.
    host_root: HostPhysAddr,
    host_slots: Range<usize>,
    /// Levels of the host (and so the shadow) tables: 4 in Sv48, 5 in Sv57.
    levels: u32,
    pub stats: Stats,
}

/// What a fill did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// A leaf was installed: retry the access.
    Installed { gpa: GuestPhysAddr, level: u32 },
    /// The guest's own translation refuses the access: this exception goes to the guest.
    GuestFault(Exception),
    /// The guest translates to guest-physical `gpa`, which is not RAM (a device, or
    /// nothing): the caller decides.
    NotRam { gpa: GuestPhysAddr },
    /// The guest's translation allows the access, but the address lies in hypocaust's own
    /// root slots (its window, on a host whose mode is the guest's): no shadow entry can
    /// go there, so the caller carries the access out itself.
    Window { gpa: GuestPhysAddr },
}

/// How a guest-physical address maps to host memory.
pub trait GuestRam {
    /// The host-physical address of `[gpa, gpa + len)` if all of it is RAM.
    fn host_addr(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr>;
}

impl ShadowCache {
    /// A cache of at most `max_trees` trees of `levels` levels, each sharing root entries
    /// `host_slots` of `host_root` (hypocaust's own mappings).
    pub fn new(
        max_trees: usize,
        host_root: HostPhysAddr,
        host_slots: Range<usize>,
        levels: u32,
    ) -> Self {
        Self {
            trees: (0..max_trees.max(1)).map(|_| None).collect(),
            clock: 0,
            host_root,
            host_slots,
            levels,
            stats: Stats::default(),
        }
    }

    /// Whether guest-virtual `va` lies in hypocaust's root slots (its window, where they
    /// overlap the guest's space: on a host whose mode is the guest's).
    pub fn in_host_slots(&self, va: u64) -> bool {
        self.host_slots.contains(&entry_index(va, self.levels - 1))
    }

    /// The tree in slot `slot`.
    pub fn tree(&self, slot: usize) -> Option<&Tree> {
        self.trees.get(slot).and_then(Option::as_ref)
    }

    /// Number of trees alive.
    pub fn len(&self) -> usize {
        self.trees.iter().flatten().count()
    }

    /// Whether no tree is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Table frames in use by all trees.
    pub fn frames(&self) -> usize {
        self.trees.iter().flatten().map(|t| t.frames).sum()
    }

    /// The slot of the tree for `key`, if there is one (nothing changes).
    pub fn find(&self, key: Key) -> Option<usize> {
        self.trees.iter().position(|t| t.as_ref().is_some_and(|t| t.key == key))
    }

    /// Marks tree `slot` used now (the least recently used tree is evicted first).
    pub fn touch(&mut self, slot: usize) {
        self.clock += 1;
        if let Some(t) = self.trees.get_mut(slot).and_then(Option::as_mut) {
            t.last_used = self.clock;
        }
    }

    /// The slot of the tree for `key`, made (empty) if there is none; may evict the least
    /// recently used tree. Returns `(slot, fresh)`; a fresh tree's real TLB entries have
    /// been flushed.
    pub fn select(
        &mut self,
        key: Key,
        frames: &mut impl ShadowFrames,
    ) -> Result<(usize, bool), OutOfFrames> {
        self.clock += 1;
        if let Some(slot) = self.find(key) {
            let tree = self.trees[slot].as_mut().expect("found above");
            tree.last_used = self.clock;
            self.stats.tree_hits += 1;
            return Ok((slot, false));
        }
        self.stats.tree_misses += 1;
        let slot = match self.trees.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let lru = self.lru_except(usize::MAX).expect("the cache is full, so not empty");
                self.evict(lru, frames);
                lru
            }
        };
        let root = loop {
            if let Some(root) = frames.alloc_zeroed() {
                break root;
            }
            let victim = self.lru_except(usize::MAX).ok_or(OutOfFrames)?;
            self.evict(victim, frames);
        };
        for i in self.host_slots.clone() {
            let pte = frames.read_pte(self.host_root, i);
            frames.write_pte(root, i, pte);
        }
        self.trees[slot] = Some(Tree { key, root, last_used: self.clock, frames: 1 });
        frames.flush_tlb(slot, None);
        Ok((slot, true))
    }

    fn lru_except(&self, keep: usize) -> Option<usize> {
        self.trees
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != keep && t.is_some())
            .min_by_key(|(_, t)| t.as_ref().map_or(u64::MAX, |t| t.last_used))
            .map(|(i, _)| i)
    }

    /// Frees tree `slot` entirely.
    fn evict(&mut self, slot: usize, frames: &mut impl ShadowFrames) {
        if let Some(tree) = self.trees[slot].take() {
            self.free_guest_part(tree.root, frames);
            frames.free(tree.root);
            frames.flush_tlb(slot, None);
            self.stats.evictions += 1;
        }
    }

    /// The root entries that belong to the guest (everything but hypocaust's slots).
    fn guest_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..ENTRIES_PER_TABLE).filter(|i| !self.host_slots.contains(i))
    }

    /// Frees every table below the guest's root entries and clears them.
    fn free_guest_part(&self, root: HostPhysAddr, frames: &mut impl ShadowFrames) -> usize {
        let mut freed = 0;
        for i in self.guest_slots() {
            let pte = frames.read_pte(root, i);
            if pte.is_valid() {
                if !pte.is_leaf() {
                    freed +=
                        free_subtree(HostPhysAddr::new(pte.phys_addr()), self.levels - 2, frames);
                }
                frames.write_pte(root, i, Pte::INVALID);
            }
        }
        freed
    }

    /// Empties tree `slot` (a full flush of its translations), keeping its root.
    pub fn flush_tree(&mut self, slot: usize, frames: &mut impl ShadowFrames) {
        // A tree of its root alone has nothing to drop (shadow leaves are never in the
        // root), and nothing in any TLB since its last flush.
        let Some(root) = self.tree(slot).filter(|t| t.frames > 1).map(|t| t.root) else {
            return;
        };
        let freed = self.free_guest_part(root, frames);
        if let Some(t) = self.trees[slot].as_mut() {
            t.frames -= freed;
        }
        frames.flush_tlb(slot, None);
        self.stats.flushes += 1;
    }

    /// Drops every tree: all translations of every address space.
    pub fn flush_all(&mut self, frames: &mut impl ShadowFrames) {
        for slot in 0..self.trees.len() {
            self.evict(slot, frames);
        }
        self.stats.flushes += 1;
    }

    /// `sfence.vma` semantics: drops the translations of `[start, start + size)` (all of
    /// them for `size == u64::MAX`) in the trees of `asid` (all trees for `None`). It may
    /// drop more: large ranges empty whole trees.
    pub fn invalidate(
        &mut self,
        start: u64,
        size: u64,
        asid: Option<u16>,
        frames: &mut impl ShadowFrames,
    ) {
        /// Beyond this many pages, a whole-tree flush is cheaper than page by page.
        const PAGE_BY_PAGE: u64 = 64;
        let pages = if size == u64::MAX { u64::MAX } else { size.div_ceil(4096).max(1) };
        for slot in 0..self.trees.len() {
            let Some(tree) = self.tree(slot) else { continue };
            if asid.is_some_and(|a| tree.key.asid() != a) {
                continue;
            }
            if pages > PAGE_BY_PAGE {
                // Emptied, not evicted: the tree keeps its root, slot and ASID, so the
                // address space's next use needs no new tree (and the trap vector's fast
                // path finds the other view's tree still cached).
                self.flush_tree(slot, frames);
                continue;
            }
            let root = tree.root;
            for page in 0..pages {
                let va = (start & !0xfff).wrapping_add(page * 4096);
                if remove_leaf(root, self.levels, va, frames) {
                    frames.flush_tlb(slot, Some(va));
                }
            }
        }
    }

    /// Installs a leaf for `va` at `level` in tree `slot`, making room if frames run out
    /// (evicting other trees, then emptying this one).
    pub fn install(
        &mut self,
        slot: usize,
        va: u64,
        pa: u64,
        level: u32,
        flags: PteFlags,
        frames: &mut impl ShadowFrames,
    ) -> Result<(), OutOfFrames> {
        loop {
            let Some(root) = self.tree(slot).map(|t| t.root) else { return Err(OutOfFrames) };
            match install_leaf(root, self.levels, va, pa, level, flags, frames) {
                Ok((delta, replaced)) => {
                    if let Some(t) = self.trees[slot].as_mut() {
                        t.frames = (t.frames as isize + delta) as usize;
                    }
                    if replaced || frames.fence_new_entries() {
                        frames.flush_tlb(slot, Some(va));
                    }
                    return Ok(());
                }
                Err(partial) => {
                    if let Some(t) = self.trees[slot].as_mut() {
                        t.frames = (t.frames as isize + partial) as usize;
                    }
                    match self.lru_except(slot) {
                        Some(victim) => self.evict(victim, frames),
                        None if self.tree(slot).is_some_and(|t| t.frames > 1) => {
                            self.flush_tree(slot, frames)
                        }
                        None => return Err(OutOfFrames),
                    }
                }
            }
        }
    }

    /// Handles a real page fault of a guest at `va` in tree `slot`: walks the guest's table
    /// for the access and installs the translation if the guest allows it.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        slot: usize,
        mem: &impl GuestMemory,
        ram: &impl GuestRam,
        satp: u64,
        va: u64,
        access: Access,
        features: WalkFeatures,
        frames: &mut impl ShadowFrames,
    ) -> Result<Fill, OutOfFrames> {
        let t = match walk::translate(mem, Satp(satp), rv::GuestVirtAddr::new(va), access, features)
        {
            Ok(t) => t,
            Err(e) => {
                self.stats.guest_faults += 1;
                return Ok(Fill::GuestFault(e));
            }
        };
        let gpa = t.gpa;
        if self.in_host_slots(va) {
            return Ok(Fill::Window { gpa });
        }
        let Some(hpa) = ram.host_addr(gpa, 1) else { return Ok(Fill::NotRam { gpa }) };
        let view = self.tree(slot).map_or(View::Supervisor, |t| t.key.view);
        let flags = shadow_flags(t.pte.flags(), view);
        // A 2 MiB shadow leaf where the guest's page is at least that large and the whole
        // 2 MiB is RAM (so no device access hides in it); 4 KiB otherwise.
        let mega = PagingGeometry::page_size(1);
        let gpa_mega = gpa.align_down(mega);
        let level =
            if t.level >= 1 && ram.host_addr(gpa_mega, mega).is_some_and(|h| h.is_aligned(mega)) {
                1
            } else {
                0
            };
        let size = PagingGeometry::page_size(level);
        let hpa_leaf = hpa.align_down(size);
        self.install(slot, va & !(size - 1), hpa_leaf.raw(), level, flags, frames)?;
        self.stats.fills += 1;
        if t.level == 0 {
            self.prefill(slot, mem, ram, va, t.pte_addr, view, features, frames);
        }
        Ok(Fill::Installed { gpa, level })
    }

    /// After a fill of a 4 KiB page: the neighbours of `va` in its group of [`PREFILL`]
    /// entries of the guest's last-level table (at `pte_addr`'s table) that a TLB could
    /// hold as they are (accessed, of the view's pages, RAM) get shadow leaves too, so
    /// code and data used page after page cost one fault per group instead of one per
    /// page. They need no table the fill did not make; a neighbour that would is left.
    #[allow(clippy::too_many_arguments)]
    fn prefill(
        &mut self,
        slot: usize,
        mem: &impl GuestMemory,
        ram: &impl GuestRam,
        va: u64,
        pte_addr: GuestPhysAddr,
        view: View,
        features: WalkFeatures,
        frames: &mut impl ShadowFrames,
    ) {
        let Some(root) = self.tree(slot).map(|t| t.root) else { return };
        let (user, sum) = view.privilege();
        // The shadow's last-level table of `va` (the fill just made its path).
        let mut table = root;
        for level in (1..self.levels).rev() {
            let pte = frames.read_pte(table, entry_index(va, level));
            if !pte.is_valid() || pte.is_leaf() {
                return;
            }
            table = HostPhysAddr::new(pte.phys_addr());
        }
        let index = entry_index(va, 0) as u64;
        let first = index & !(PREFILL - 1);
        let mut group = [0u64; PREFILL as usize];
        let guest_table = pte_addr.raw() & !0xfff;
        if !mem.read_u64s(GuestPhysAddr::new(guest_table + 8 * first), &mut group) {
            return;
        }
        for (i, raw) in (first..).zip(group) {
            let pte = Pte(raw);
            if i == index || !walk::cachable_leaf(pte, features, user, sum) {
                continue;
            }
            if frames.read_pte(table, i as usize).is_valid() {
                continue;
            }
            let gpa = GuestPhysAddr::new(pte.phys_addr());
            let Some(hpa) = ram.host_addr(gpa, rv::PAGE_SIZE) else { continue };
            let flags = shadow_flags(pte.flags(), view);
            frames.write_pte(table, i as usize, Pte::new(hpa.raw() >> 12, flags));
            if frames.fence_new_entries() {
                frames.flush_tlb(slot, Some((va & !0x1f_ffff) | i << 12));
            }
            self.stats.prefills += 1;
        }
    }
}

/// Entries of a guest's last-level table looked at around each 4 KiB fill (an aligned
/// group, 64 KiB of address space).
pub const PREFILL: u64 = 16;

/// The flags of a shadow leaf for a guest leaf with `guest` flags, seen in `view`: the
/// hardware must allow no more than the guest's translation allows that view.
pub fn shadow_flags(guest: PteFlags, view: View) -> PteFlags {
    let mut f = PteFlags::V | PteFlags::U | PteFlags::A | PteFlags::D;
    if guest.contains(PteFlags::R) {
        f |= PteFlags::R;
    }
    // A clean page stays read-only until its first store (which sets the guest's D).
    if guest.contains(PteFlags::W) && guest.contains(PteFlags::D) {
        f |= PteFlags::W;
    }
    let executable = guest.contains(PteFlags::X)
        && !(view == View::SupervisorSum && guest.contains(PteFlags::U));
    if executable {
        f |= PteFlags::X;
    }
    f
}

fn entry_index(va: u64, level: u32) -> usize {
    PagingGeometry::vpn(va, level)
}

/// Frees the table at `table` (of `level`) and everything below; returns the frames freed.
fn free_subtree(table: HostPhysAddr, level: u32, frames: &mut impl ShadowFrames) -> usize {
    if level == 0 {
        // Leaves only: cleared whole, without looking at each entry.
        frames.zero_table(table);
        frames.free_zeroed(table);
        return 1;
    }
    let mut freed = 1;
    for i in 0..ENTRIES_PER_TABLE {
        let pte = frames.read_pte(table, i);
        if pte.0 == 0 {
            continue;
        }
        if pte.is_valid() && !pte.is_leaf() {
            freed += free_subtree(HostPhysAddr::new(pte.phys_addr()), level - 1, frames);
        }
        // Cleared on the way, so the frame goes back zeroed.
        frames.write_pte(table, i, Pte::INVALID);
    }
    frames.free_zeroed(table);
    freed
}

/// Clears the leaf covering `va`, if any. Returns whether one was cleared.
fn remove_leaf(root: HostPhysAddr, levels: u32, va: u64, frames: &mut impl ShadowFrames) -> bool {
    let mut table = root;
    for level in (0..levels).rev() {
        let i = entry_index(va, level);
        let pte = frames.read_pte(table, i);
        if !pte.is_valid() {
            return false;
        }
        if pte.is_leaf() {
            frames.write_pte(table, i, Pte::INVALID);
            return true;
        }
        table = HostPhysAddr::new(pte.phys_addr());
    }
    false
}

/// Installs a leaf; returns the change in frames used and whether an entry that was valid
/// was replaced (a hart may hold it in its TLB), or (on allocation failure) the change made
/// before it failed.
fn install_leaf(
    root: HostPhysAddr,
    levels: u32,
    va: u64,
    pa: u64,
    level: u32,
    flags: PteFlags,
    frames: &mut impl ShadowFrames,
) -> Result<(isize, bool), isize> {
    let mut delta = 0isize;
    let mut replaced = false;
    let mut table = root;
    for l in (level + 1..levels).rev() {
        let i = entry_index(va, l);
        let pte = frames.read_pte(table, i);
        table = if pte.is_valid() && !pte.is_leaf() {
            HostPhysAddr::new(pte.phys_addr())
        } else {
            // Empty, or a larger leaf in the way (it goes: a TLB may drop anything).
            let Some(next) = frames.alloc_zeroed() else { return Err(delta) };
            delta += 1;
            replaced |= pte.is_valid();
            frames.write_pte(table, i, Pte::new(next.page_number(), PteFlags::V));
            next
        };
    }
    let i = entry_index(va, level);
    let old = frames.read_pte(table, i);
    if old.is_valid() && !old.is_leaf() && level > 0 {
        delta -= free_subtree(HostPhysAddr::new(old.phys_addr()), level - 1, frames) as isize;
    }
    replaced |= old.is_valid();
    frames.write_pte(table, i, Pte::new(pa >> 12, flags));
    Ok((delta, replaced))
}

/// The access a real page fault with `cause` (12, 13 or 15) stands for.
pub fn access_of(cause: Exception) -> Option<AccessType> {
    match cause {
        Exception::InstructionPageFault => Some(AccessType::Execute),
        Exception::LoadPageFault => Some(AccessType::Read),
        Exception::StorePageFault => Some(AccessType::Write),
        _ => None,
    }
}

/// Whether a guest `satp` needs shadowing (a paging mode, not Bare).
pub fn is_paged(satp: u64) -> bool {
    Satp(satp).mode().is_some_and(|m| m != SatpMode::Bare)
}

#[cfg(test)]
mod tests;
