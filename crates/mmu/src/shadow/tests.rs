extern crate std;

use std::vec::Vec;

use super::*;
use crate::map::Mapper;
use crate::testmem::{SparseMemory, TestFrames};

/// Levels of the host tables in most tests: hypocaust in Sv48.
const HOST_LEVELS: u32 = 4;

/// Guest RAM: GPA 0x8000_0000..0x8400_0000 at HPA 0x20_0000_0000 + offset (2 MiB aligned).
const RAM: Range<u64> = 0x8000_0000..0x8400_0000;
const HPA_BASE: u64 = 0x20_0000_0000;
const GUEST_ROOT: u64 = 0x8000_0000;

struct Ram;

impl GuestRam for Ram {
    fn host_addr(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr> {
        let gpa = gpa.raw();
        let end = gpa.checked_add(len)?;
        (gpa >= RAM.start && end <= RAM.end).then(|| HostPhysAddr::new(gpa - RAM.start + HPA_BASE))
    }
}

fn sv39(asid: u16) -> u64 {
    Satp::new(SatpMode::Sv39, asid, GUEST_ROOT >> 12).0
}

fn host_root(frames: &mut TestFrames) -> HostPhysAddr {
    // hypocaust's own root: one entry in slot 256 that every tree must share.
    let root = frames.alloc_zeroed().unwrap();
    frames.write_pte(root, 256, Pte::new(0x1234, PteFlags::V));
    root
}

/// A cache of 4 trees with hypocaust's root, and the tree of `sv39(0)`'s S-mode view in
/// it: (cache, its slot, its root).
fn supervisor_tree(frames: &mut TestFrames) -> (ShadowCache, usize, HostPhysAddr) {
    let host = host_root(frames);
    let mut cache = ShadowCache::new(4, host, 256..511, HOST_LEVELS);
    let (slot, _) = cache.select(Key { satp: sv39(0), view: View::Supervisor }, frames).unwrap();
    let root = cache.tree(slot).unwrap().root;
    (cache, slot, root)
}

fn access(kind: AccessType, user: bool, sum: bool) -> Access {
    Access { kind, user, sum, mxr: false }
}

/// What real hardware (in U-mode, as the guest always is) does with a shadow tree: the
/// host-physical address, or `None` for a page fault.
fn hw(
    frames: &TestFrames,
    root: HostPhysAddr,
    va: u64,
    kind: AccessType,
    mxr: bool,
) -> Option<u64> {
    let mut table = root;
    for level in (0..HOST_LEVELS).rev() {
        let pte = frames.read_pte(table, PagingGeometry::vpn(va, level));
        if !pte.is_valid() {
            return None;
        }
        if pte.is_leaf() {
            let f = pte.flags();
            let ok = f.contains(PteFlags::U)
                && match kind {
                    AccessType::Read => f.contains(PteFlags::R) || (mxr && f.contains(PteFlags::X)),
                    AccessType::Write => f.contains(PteFlags::W),
                    AccessType::Execute => f.contains(PteFlags::X),
                };
            let mask = PagingGeometry::page_size(level) - 1;
            return ok.then(|| (pte.phys_addr() & !mask) | (va & mask));
        }
        table = HostPhysAddr::new(pte.phys_addr());
    }
    None
}

/// Builds guest tables in guest memory with `Mapper` (over a `Frames` view of it).
struct GuestTables<'a> {
    mem: &'a SparseMemory,
    next: u64,
}

impl Frames for GuestTables<'_> {
    fn alloc_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.next += 4096;
        for i in 0..512 {
            self.mem.write(self.next + 8 * i, 0);
        }
        Some(HostPhysAddr::new(self.next))
    }
    fn read_pte(&self, table: HostPhysAddr, index: usize) -> Pte {
        Pte(self.mem.read(table.raw() + 8 * index as u64))
    }
    fn write_pte(&mut self, table: HostPhysAddr, index: usize, pte: Pte) {
        self.mem.write(table.raw() + 8 * index as u64, pte.0);
    }
}

fn guest_map(mem: &SparseMemory, next: &mut u64, va: u64, gpa: u64, level: u32, flags: PteFlags) {
    let mut g = GuestTables { mem, next: *next };
    Mapper::new(HostPhysAddr::new(GUEST_ROOT), 3, &mut g).map_page(va, gpa, level, flags).unwrap();
    *next = g.next;
}

fn rwx() -> PteFlags {
    PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D
}

/// A fill in tree `slot` for an access `acc` at `va` of the Sv39 guest in `mem` (ASID 0).
fn fill_sv39(
    cache: &mut ShadowCache,
    frames: &mut TestFrames,
    mem: &SparseMemory,
    slot: usize,
    va: u64,
    acc: Access,
) -> Fill {
    cache.fill(slot, mem, &Ram, sv39(0), va, acc, WalkFeatures::default(), frames).unwrap()
}

#[test]
fn views_limit_what_the_hardware_allows() {
    let u = PteFlags::U | rwx();
    assert_eq!(shadow_flags(u, View::User), PteFlags::V | PteFlags::U | rwx());
    assert_eq!(
        shadow_flags(u, View::SupervisorSum) & PteFlags::X,
        PteFlags::empty(),
        "S never executes U pages"
    );
    assert_eq!(shadow_flags(rwx(), View::Supervisor) & PteFlags::X, PteFlags::X);
    let clean = PteFlags::R | PteFlags::W | PteFlags::A;
    assert!(
        !shadow_flags(clean, View::Supervisor).contains(PteFlags::W),
        "clean pages stay read-only"
    );
    assert_eq!(View::of(true, true), View::User);
    assert_eq!(View::of(false, true), View::SupervisorSum);
}

#[test]
fn fill_installs_and_hardware_then_translates() {
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    guest_map(&mem, &mut next, 0x1000, 0x8010_0000, 0, rwx());
    let mut frames = TestFrames::new(100);
    let host = host_root(&mut frames);
    let mut cache = ShadowCache::new(4, host, 256..511, HOST_LEVELS);
    let key = Key { satp: sv39(0), view: View::Supervisor };
    let (slot, fresh) = cache.select(key, &mut frames).unwrap();
    assert!(fresh);
    let root = cache.tree(slot).unwrap().root;
    assert_eq!(
        frames.read_pte(root, 256),
        Pte::new(0x1234, PteFlags::V),
        "hypocaust's slot is shared"
    );
    assert_eq!(hw(&frames, root, 0x1008, AccessType::Read, false), None);
    let f = fill_sv39(
        &mut cache,
        &mut frames,
        &mem,
        slot,
        0x1008,
        access(AccessType::Read, false, false),
    );
    assert_eq!(f, Fill::Installed { gpa: GuestPhysAddr::new(0x8010_0008), level: 0 });
    assert_eq!(hw(&frames, root, 0x1008, AccessType::Read, false), Some(HPA_BASE + 0x10_0008));
    assert_eq!(hw(&frames, root, 0x1008, AccessType::Write, false), Some(HPA_BASE + 0x10_0008));
    // In the user view the S page is not there at all.
    let (uslot, _) = cache.select(Key { satp: sv39(0), view: View::User }, &mut frames).unwrap();
    let f = fill_sv39(
        &mut cache,
        &mut frames,
        &mem,
        uslot,
        0x1008,
        access(AccessType::Read, true, false),
    );
    assert_eq!(f, Fill::GuestFault(Exception::LoadPageFault));
    // Back to the first tree: a hit.
    assert_eq!(cache.select(key, &mut frames).unwrap(), (slot, false));
    assert_eq!(cache.stats.tree_hits, 1);
}

#[test]
fn clean_pages_fault_on_first_store_then_get_dirty() {
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    guest_map(&mem, &mut next, 0x2000, 0x8010_1000, 0, PteFlags::R | PteFlags::W | PteFlags::A);
    let mut frames = TestFrames::new(100);
    let (mut cache, slot, root) = supervisor_tree(&mut frames);
    let wf = WalkFeatures::default();
    fill_sv39(&mut cache, &mut frames, &mem, slot, 0x2000, access(AccessType::Read, false, false));
    assert!(hw(&frames, root, 0x2000, AccessType::Read, false).is_some());
    assert_eq!(
        hw(&frames, root, 0x2000, AccessType::Write, false),
        None,
        "read-only until D is set"
    );
    fill_sv39(&mut cache, &mut frames, &mem, slot, 0x2000, access(AccessType::Write, false, false));
    assert!(hw(&frames, root, 0x2000, AccessType::Write, false).is_some());
    // The guest's PTE now has D.
    let leaf = crate::walk::translate(
        &mem,
        Satp(sv39(0)),
        rv::GuestVirtAddr::new(0x2000),
        access(AccessType::Read, false, false),
        wf,
    )
    .unwrap();
    assert!(leaf.pte.flags().contains(PteFlags::D));
}

#[test]
fn superpages_get_2m_shadow_leaves_when_all_ram() {
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    // A 1 GiB guest page over 0x8000_0000.., of which only 64 MiB is RAM.
    guest_map(&mem, &mut next, 0x4000_0000, 0x8000_0000, 2, rwx());
    let mut frames = TestFrames::new(100);
    let (mut cache, slot, root) = supervisor_tree(&mut frames);
    let wf = WalkFeatures::default();
    let f = cache.fill(
        slot,
        &mem,
        &Ram,
        sv39(0),
        0x4030_1234,
        access(AccessType::Read, false, false),
        wf,
        &mut frames,
    );
    assert_eq!(f, Ok(Fill::Installed { gpa: GuestPhysAddr::new(0x8030_1234), level: 1 }));
    assert_eq!(hw(&frames, root, 0x403f_fff8, AccessType::Read, false), Some(HPA_BASE + 0x3f_fff8));
    // Beyond RAM, the guest's translation names no memory.
    let f = cache.fill(
        slot,
        &mem,
        &Ram,
        sv39(0),
        0x4800_0000,
        access(AccessType::Read, false, false),
        wf,
        &mut frames,
    );
    assert_eq!(f, Ok(Fill::NotRam { gpa: GuestPhysAddr::new(0x8800_0000) }));
}

#[test]
fn invalidation_follows_sfence_vma() {
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    for i in 0..4 {
        guest_map(&mem, &mut next, 0x1000 * (i + 1), 0x8010_0000 + 0x1000 * i, 0, rwx());
    }
    let mut frames = TestFrames::new(100);
    let host = host_root(&mut frames);
    let mut cache = ShadowCache::new(4, host, 256..511, HOST_LEVELS);
    let wf = WalkFeatures::default();
    let fill_all = |cache: &mut ShadowCache, frames: &mut TestFrames, asid: u16| {
        let (slot, _) =
            cache.select(Key { satp: sv39(asid), view: View::Supervisor }, frames).unwrap();
        for i in 0..4 {
            cache
                .fill(
                    slot,
                    &mem,
                    &Ram,
                    sv39(asid),
                    0x1000 * (i + 1),
                    access(AccessType::Read, false, false),
                    wf,
                    frames,
                )
                .unwrap();
        }
        slot
    };
    let a = fill_all(&mut cache, &mut frames, 1);
    let b = fill_all(&mut cache, &mut frames, 2);
    let (ra, rb) = (cache.tree(a).unwrap().root, cache.tree(b).unwrap().root);
    // By address, all ASIDs.
    cache.invalidate(0x2000, 1, None, &mut frames);
    assert_eq!(hw(&frames, ra, 0x2000, AccessType::Read, false), None);
    assert_eq!(hw(&frames, rb, 0x2000, AccessType::Read, false), None);
    assert!(hw(&frames, ra, 0x3000, AccessType::Read, false).is_some());
    // By address and ASID.
    cache.invalidate(0x3000, 1, Some(1), &mut frames);
    assert_eq!(hw(&frames, ra, 0x3000, AccessType::Read, false), None);
    assert!(hw(&frames, rb, 0x3000, AccessType::Read, false).is_some());
    // A whole ASID.
    cache.invalidate(0, u64::MAX, Some(2), &mut frames);
    assert!(hw(&frames, rb, 0x1000, AccessType::Read, false).is_none());
    assert!(hw(&frames, ra, 0x1000, AccessType::Read, false).is_some());
    // Everything: every tree emptied (its translations gone, its frames but the root
    // freed), none evicted.
    let used = frames.allocated;
    cache.invalidate(0, u64::MAX, None, &mut frames);
    assert_eq!(cache.len(), 2);
    assert!(hw(&frames, ra, 0x3000, AccessType::Read, false).is_none());
    assert!(hw(&frames, rb, 0x3000, AccessType::Read, false).is_none());
    assert_eq!(frames.allocated, 3, "hypocaust's root and the two trees' (was {used})");
    assert!(frames.tlb_flushes.contains(&(a, None)) && frames.tlb_flushes.contains(&(b, None)));
}

#[test]
fn trees_and_frames_stay_bounded() {
    // A guest that spins on satp writes with new roots, and one that maps a lot.
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    for i in 0..2048u64 {
        guest_map(&mem, &mut next, 0x1_0000_0000 + i * 0x20_0000, 0x8010_0000, 0, rwx());
    }
    let mut frames = TestFrames::new(40);
    let host = host_root(&mut frames);
    let mut cache = ShadowCache::new(8, host, 256..511, HOST_LEVELS);
    for asid in 0..100 {
        cache.select(Key { satp: sv39(asid), view: View::Supervisor }, &mut frames).unwrap();
        assert!(cache.len() <= 8);
    }
    assert!(cache.stats.evictions >= 92);
    let (slot, _) = cache.select(Key { satp: sv39(7), view: View::User }, &mut frames).unwrap();
    let wf = WalkFeatures::default();
    for i in 0..2048u64 {
        let va = 0x1_0000_0000 + i * 0x20_0000;
        // Each page needs its own level-0 table: the budget runs out again and again.
        let f = cache.fill(
            slot,
            &mem,
            &Ram,
            sv39(7),
            va,
            access(AccessType::Read, false, false),
            wf,
            &mut frames,
        );
        assert!(matches!(f, Ok(Fill::Installed { .. }) | Ok(Fill::GuestFault(_))), "{f:?}");
        assert!(frames.allocated <= 40);
        assert!(cache.frames() + 1 == frames.allocated, "frame accounting");
    }
    assert!(cache.stats.flushes > 0);
}

#[test]
fn too_small_a_budget_is_an_error_not_a_panic() {
    let mut frames = TestFrames::new(2);
    let host = host_root(&mut frames);
    let mut cache = ShadowCache::new(2, host, 256..511, HOST_LEVELS);
    let (slot, _) =
        cache.select(Key { satp: sv39(0), view: View::Supervisor }, &mut frames).unwrap();
    assert_eq!(cache.install(slot, 0x1000, 0x1000, 0, PteFlags::R, &mut frames), Err(OutOfFrames));
}

/// A small xorshift generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random guest page tables, random accesses from random views, random PTE changes and
/// fences: every access through the shadow (as the hardware would make it, filled on a miss)
/// must agree with the reference walk of the current guest table, except where a TLB may
/// still hold a stale translation — and never after a fence that covers it.
#[test]
fn shadow_agrees_with_reference_walks() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..40 {
        let mem = SparseMemory::default();
        let mut next = GUEST_ROOT;
        // A handful of VAs in both halves of Sv39, and non-canonical ones.
        let vas: Vec<u64> = (0..24)
            .map(|_| {
                let base = [
                    0x0u64,
                    0x40_0000,
                    0x4000_0000,
                    0x3f_c000_0000,
                    0xffff_ffc0_0000_0000,
                    0x40_0000_0000,
                ][rng.below(6) as usize];
                base + rng.below(8) * 0x1000 + rng.below(4) * 0x20_0000 + rng.below(512) * 8
            })
            .collect();
        let random_flags = |rng: &mut Rng| {
            let mut f = PteFlags::from_bits_truncate(rng.next() & 0xff) | PteFlags::V;
            if rng.below(4) != 0 {
                f |= PteFlags::R; // mostly sensible permissions
            }
            f
        };
        let mut mapped = Vec::new();
        for &va in &vas {
            if rng.below(4) == 0 || !PagingGeometry::of(SatpMode::Sv39).unwrap().is_canonical(va) {
                continue;
            }
            let level = [0, 0, 0, 1, 2][rng.below(5) as usize];
            let size = PagingGeometry::page_size(level);
            let gpa = if rng.below(8) == 0 {
                0x9000_0000 // outside RAM
            } else if rng.below(10) == 0 {
                RAM.start + 0x1000 // misaligned for superpages
            } else {
                (RAM.start + rng.below(RAM.end - RAM.start)) & !(size - 1)
            };
            let va_page = va & !(size - 1);
            if mapped.iter().any(|&(v, l): &(u64, u32)| {
                v >> 30 == va_page >> 30
                    && (l == 2
                        || level == 2
                        || (v >> 21 == va_page >> 21 && (l == 1 || level == 1)))
            }) {
                continue;
            }
            let mut g = GuestTables { mem: &mem, next };
            if Mapper::new(HostPhysAddr::new(GUEST_ROOT), 3, &mut g)
                .map_page(va_page, gpa, level, random_flags(&mut rng))
                .is_ok()
            {
                mapped.push((va_page, level));
            }
            next = g.next;
        }
        let mut frames = TestFrames::new(64);
        let host = host_root(&mut frames);
        let mut cache = ShadowCache::new(4, host, 256..511, HOST_LEVELS);
        let wf = WalkFeatures::default();
        // Leaf PTE addresses, for random changes.
        let leaf_addrs: Vec<u64> = vas
            .iter()
            .filter_map(|&va| {
                crate::walk::translate(
                    &mem,
                    Satp(sv39(0)),
                    rv::GuestVirtAddr::new(va),
                    access(AccessType::Read, false, true),
                    wf,
                )
                .ok()
                .map(|t| t.pte_addr.raw())
            })
            .collect();
        // Per VA: whether it may be stale (changed without a fence since).
        let mut stale_ok = false;
        for step in 0..400 {
            match rng.below(20) {
                0 if !leaf_addrs.is_empty() => {
                    // The guest edits a PTE (without fencing).
                    let a = leaf_addrs[rng.below(leaf_addrs.len() as u64) as usize];
                    let old = mem.read(a);
                    mem.write(a, old ^ (1 << rng.below(8)));
                    stale_ok = true;
                }
                1 => {
                    cache.invalidate(0, u64::MAX, None, &mut frames);
                    stale_ok = false;
                }
                _ => {
                    let va = vas[rng.below(vas.len() as u64) as usize];
                    let kind = [AccessType::Read, AccessType::Write, AccessType::Execute]
                        [rng.below(3) as usize];
                    let (user, sum) = (rng.below(2) == 0, rng.below(2) == 0);
                    let acc = access(kind, user, sum);
                    let view = View::of(user, sum);
                    let (slot, _) = cache.select(Key { satp: sv39(0), view }, &mut frames).unwrap();
                    let root = cache.tree(slot).unwrap().root;
                    // Reference, without touching A/D (a copy of memory would be needed to
                    // avoid it; the walk sets them exactly as the fill will).
                    let reference = crate::walk::translate(
                        &mem,
                        Satp(sv39(0)),
                        rv::GuestVirtAddr::new(va),
                        acc,
                        wf,
                    );
                    let got = match hw(&frames, root, va, kind, false) {
                        Some(hpa) => Some(hpa),
                        None => match cache
                            .fill(slot, &mem, &Ram, sv39(0), va, acc, wf, &mut frames)
                            .unwrap()
                        {
                            Fill::Installed { .. } => {
                                let h = hw(&frames, root, va, kind, false);
                                assert!(
                                    h.is_some(),
                                    "round {round} step {step}: filled but still faulting at {va:#x}"
                                );
                                h
                            }
                            Fill::GuestFault(e) => {
                                assert_eq!(
                                    Err(e),
                                    reference.map(|_| ()),
                                    "round {round} step {step} va {va:#x}"
                                );
                                None
                            }
                            Fill::NotRam { gpa } => {
                                assert_eq!(reference.map(|t| t.gpa), Ok(gpa));
                                assert!(Ram.host_addr(gpa, 1).is_none());
                                None
                            }
                            Fill::Window { .. } => {
                                panic!("no Sv39 address is in an Sv48 host's slots")
                            }
                        },
                    };
                    if let Some(hpa) = got {
                        match reference {
                            Ok(t) => {
                                let expect = Ram.host_addr(t.gpa, 1).map(|h| h.raw());
                                assert!(
                                    expect == Some(hpa) || stale_ok,
                                    "round {round} step {step}: {va:#x} -> {hpa:#x}, reference {expect:x?}"
                                );
                            }
                            Err(_) => assert!(
                                stale_ok,
                                "round {round} step {step}: hardware allowed what the guest refuses at {va:#x}"
                            ),
                        }
                    }
                }
            }
            assert!(frames.allocated <= 64);
        }
    }
}

/// On an Sv39 host hypocaust's window is a few root slots of the guest's own space: a
/// guest translation there is reported, never installed (the slot is hypocaust's), while
/// the rest of the space fills as usual.
#[test]
fn the_window_is_never_filled() {
    const WINDOW: u64 = 0xffff_fffe_0000_0000; // Sv39 root slot 504
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    guest_map(&mem, &mut next, WINDOW + 0x3000, 0x8010_0000, 0, rwx());
    guest_map(&mem, &mut next, 0x1000, 0x8010_0000, 0, rwx());
    let mut frames = TestFrames::new(100);
    let host = frames.alloc_zeroed().unwrap();
    let hypocaust = Pte::new(0x1234, PteFlags::V);
    for slot in 504..508 {
        frames.write_pte(host, slot, hypocaust);
    }
    let mut cache = ShadowCache::new(4, host, 504..508, 3);
    let key = Key { satp: sv39(0), view: View::Supervisor };
    let (slot, _) = cache.select(key, &mut frames).unwrap();
    let root = cache.tree(slot).unwrap().root;
    let read = access(AccessType::Read, false, false);
    let mut fill = |cache: &mut ShadowCache, va| {
        cache.fill(slot, &mem, &Ram, sv39(0), va, read, WalkFeatures::default(), &mut frames)
    };
    let gpa = GuestPhysAddr::new(0x8010_0008);
    assert_eq!(fill(&mut cache, WINDOW + 0x3008), Ok(Fill::Window { gpa }));
    // Unmapped in the guest's table: the guest's own fault, window or not.
    assert_eq!(fill(&mut cache, WINDOW + 0x5000), Ok(Fill::GuestFault(Exception::LoadPageFault)));
    assert_eq!(fill(&mut cache, 0x1008), Ok(Fill::Installed { gpa, level: 0 }));
    for slot in 504..508 {
        assert_eq!(frames.read_pte(root, slot), hypocaust, "slot {slot} is still hypocaust's");
    }
}

/// A fill brings in the neighbours of its page a TLB could hold as they are — accessed, of
/// the view's pages, RAM, in the same group of the guest's last-level table — with the
/// permissions a fill would give them, and nothing else.
#[test]
fn a_fill_prefills_its_cachable_neighbours() {
    let mem = SparseMemory::default();
    let mut next = GUEST_ROOT;
    let page = |i: u64| 0x40_0000 + i * 0x1000;
    let gpa = |i: u64| 0x8020_0000 + i * 0x1000;
    let clean = PteFlags::R | PteFlags::W | PteFlags::A;
    let kinds = [
        (1, rwx()),                     // yes
        (2, rwx() - PteFlags::A),       // not accessed: no
        (3, rwx() | PteFlags::U),       // a U page in the S view: no
        (4, clean),                     // yes, read-only until its first store
        (5, PteFlags::W | PteFlags::A), // W without R is reserved: no
        (6, PteFlags::R | PteFlags::A), // yes
        (17, rwx()),                    // another group: no
    ];
    guest_map(&mem, &mut next, page(0), gpa(0), 0, rwx());
    for (i, flags) in kinds {
        guest_map(&mem, &mut next, page(i), gpa(i), 0, flags);
    }
    // Not RAM.
    guest_map(&mem, &mut next, page(7), 0x9000_0000, 0, rwx());
    let mut frames = TestFrames::new(100);
    let (mut cache, slot, root) = supervisor_tree(&mut frames);
    let f = fill_sv39(
        &mut cache,
        &mut frames,
        &mem,
        slot,
        page(0),
        access(AccessType::Read, false, false),
    );
    assert!(matches!(f, Fill::Installed { level: 0, .. }));
    let at = |i: u64, kind| hw(&frames, root, page(i), kind, false);
    let host = |i: u64| Some(gpa(i) - RAM.start + HPA_BASE);
    assert_eq!(at(1, AccessType::Write), host(1));
    assert_eq!(at(1, AccessType::Execute), host(1));
    assert_eq!(at(2, AccessType::Read), None);
    assert_eq!(at(3, AccessType::Read), None);
    assert_eq!((at(4, AccessType::Read), at(4, AccessType::Write)), (host(4), None));
    assert_eq!(at(5, AccessType::Write), None);
    assert_eq!((at(6, AccessType::Read), at(6, AccessType::Write)), (host(6), None));
    assert_eq!(at(7, AccessType::Read), None);
    assert_eq!(at(17, AccessType::Read), None);
    assert_eq!(cache.stats.prefills, 3);
    assert_eq!(cache.stats.fills, 1);
}

/// Without Svvptc every entry made valid is fenced; with it only a replaced one is (the
/// second fill of the same page, as after a spurious fault, fences).
#[test]
fn new_entries_are_fenced_unless_the_harts_have_svvptc() {
    for svvptc in [false, true] {
        let mem = SparseMemory::default();
        let mut next = GUEST_ROOT;
        guest_map(&mem, &mut next, 0x1000, 0x8010_0000, 0, rwx());
        let mut frames = TestFrames::new(100);
        frames.svvptc = svvptc;
        let (mut cache, slot, _) = supervisor_tree(&mut frames);
        let acc = access(AccessType::Read, false, false);
        frames.tlb_flushes.clear();
        fill_sv39(&mut cache, &mut frames, &mem, slot, 0x1000, acc);
        assert_eq!(frames.tlb_flushes.contains(&(slot, Some(0x1000))), !svvptc);
        frames.tlb_flushes.clear();
        fill_sv39(&mut cache, &mut frames, &mem, slot, 0x1000, acc);
        assert!(frames.tlb_flushes.contains(&(slot, Some(0x1000))), "svvptc {svvptc}");
    }
}
