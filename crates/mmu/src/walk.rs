//! The guest page-table walker: the privileged spec's translation algorithm (Sv39, Sv48,
//! Sv57), producing exactly the fault a hart would raise.
//!
//! Where the spec leaves a choice, QEMU's behaviour is followed, because QEMU's CPU is the
//! oracle our guest tests compare against:
//! * A and D are set by the walker (atomically, re-walking if the PTE changed underneath),
//!   as a hart with hardware A/D updating does.
//! * Without Svpbmt and Svnapot, any of bits 63:54 set in a PTE is a page fault; so are
//!   A, D, U (or N/PBMT) set in a non-leaf PTE.
//! * A PTE that cannot be read (outside guest RAM) is a page fault; a leaf naming memory
//!   that does not exist is an access fault, raised by whoever performs the access.

use rv::csr::{Satp, SatpMode};
use rv::pte::{PagingGeometry, Pte, PteFlags};
use rv::trap::Exception;
use rv::{GuestPhysAddr, GuestVirtAddr};

/// What the access wants to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessType {
    Read,
    Write,
    Execute,
}

impl AccessType {
    /// The page-fault exception for this access type.
    pub const fn page_fault(self) -> Exception {
        match self {
            Self::Read => Exception::LoadPageFault,
            Self::Write => Exception::StorePageFault,
            Self::Execute => Exception::InstructionPageFault,
        }
    }

    /// The access-fault exception for this access type.
    pub const fn access_fault(self) -> Exception {
        match self {
            Self::Read => Exception::LoadAccessFault,
            Self::Write => Exception::StoreAccessFault,
            Self::Execute => Exception::InstructionAccessFault,
        }
    }
}

/// The privilege context of an access: the effective privilege and `sstatus.SUM`/`.MXR`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Access {
    pub kind: AccessType,
    /// The access is made from (virtual) U-mode.
    pub user: bool,
    /// `sstatus.SUM`: S-mode may load and store to U pages.
    pub sum: bool,
    /// `sstatus.MXR`: loads from execute-only pages succeed.
    pub mxr: bool,
}

/// Extensions that change what a PTE may contain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WalkFeatures {
    /// Svpbmt: bits 62:61 hold a memory type (3 is reserved).
    pub svpbmt: bool,
}

/// Physical memory the page tables live in, addressed by guest-physical address.
pub trait GuestMemory {
    /// Reads the aligned 64-bit word at `gpa`; `None` if it is not RAM.
    fn read_u64(&self, gpa: GuestPhysAddr) -> Option<u64>;

    /// Reads `words.len()` aligned 64-bit words from `gpa` on; `false` if any is not RAM.
    fn read_u64s(&self, gpa: GuestPhysAddr, words: &mut [u64]) -> bool {
        for (i, w) in words.iter_mut().enumerate() {
            match gpa.checked_add(8 * i as u64).and_then(|a| self.read_u64(a)) {
                Some(v) => *w = v,
                None => return false,
            }
        }
        true
    }

    /// Atomically replaces the word at `gpa` with `new` if it still holds `old`. Returns the
    /// value found (equal to `old` on success); `None` if it is not RAM.
    fn compare_exchange_u64(&self, gpa: GuestPhysAddr, old: u64, new: u64) -> Option<u64>;
}

/// A successful translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// The guest-physical address of the accessed byte.
    pub gpa: GuestPhysAddr,
    /// The level of the leaf (0 = 4 KiB page, 1 = 2 MiB, 2 = 1 GiB, ...).
    pub level: u32,
    /// The leaf PTE as it is in memory after the walk (A and D already set as needed).
    pub pte: Pte,
    /// Where the leaf PTE lives.
    pub pte_addr: GuestPhysAddr,
}

impl Translation {
    /// Size of the page the leaf maps.
    pub const fn page_size(&self) -> u64 {
        PagingGeometry::page_size(self.level)
    }
}

/// Upper bound on re-walks caused by concurrent PTE changes, so that a guest vCPU rewriting
/// a PTE in a tight loop cannot keep the walker spinning forever.
const MAX_RESTARTS: u32 = 64;

/// Translates `va` through the page table named by `satp` (guest-physical root), with the
/// checks of the privileged spec for `access`. Bare mode translates to itself.
pub fn translate(
    mem: &impl GuestMemory,
    satp: Satp,
    va: GuestVirtAddr,
    access: Access,
    features: WalkFeatures,
) -> Result<Translation, Exception> {
    let mode = satp.mode().unwrap_or(SatpMode::Bare);
    let Some(geometry) = PagingGeometry::of(mode) else {
        return Ok(Translation {
            gpa: GuestPhysAddr::new(va.raw()),
            level: 0,
            pte: Pte::INVALID,
            pte_addr: GuestPhysAddr::new(0),
        });
    };
    let fault = access.kind.page_fault();
    if !geometry.is_canonical(va.raw()) {
        return Err(fault);
    }
    for _ in 0..MAX_RESTARTS {
        match walk_once(mem, satp, geometry, va, access, features)? {
            Step::Done(t) => return Ok(t),
            Step::Restart => continue,
        }
    }
    // The PTE kept changing under us; report a fault the guest can retry after.
    Err(fault)
}

enum Step {
    Done(Translation),
    Restart,
}

fn walk_once(
    mem: &impl GuestMemory,
    satp: Satp,
    geometry: PagingGeometry,
    va: GuestVirtAddr,
    access: Access,
    features: WalkFeatures,
) -> Result<Step, Exception> {
    let fault = access.kind.page_fault();
    let mut table = satp.ppn() << 12;
    for level in (0..geometry.levels).rev() {
        let index = PagingGeometry::vpn(va.raw(), level) as u64;
        let pte_addr = GuestPhysAddr::new(table + index * 8);
        let pte = Pte(mem.read_u64(pte_addr).ok_or(fault)?);
        check_reserved_bits(pte, features).map_err(|()| fault)?;
        if !pte.is_valid() {
            return Err(fault);
        }
        let flags = pte.flags();
        if !flags.intersects(PteFlags::R | PteFlags::W | PteFlags::X) {
            // Pointer to the next level. A, D and U are reserved here.
            if flags.intersects(PteFlags::A | PteFlags::D | PteFlags::U)
                || pte.0 & (Pte::PBMT_MASK | Pte::N_BIT) != 0
            {
                return Err(fault);
            }
            table = pte.phys_addr();
            continue;
        }
        check_leaf(pte, level, access).map_err(|()| fault)?;
        let mut wanted = flags | PteFlags::A;
        if access.kind == AccessType::Write {
            wanted |= PteFlags::D;
        }
        let pte = if wanted != flags {
            let updated = pte.with_flags(wanted);
            match mem.compare_exchange_u64(pte_addr, pte.0, updated.0) {
                None => return Err(fault),
                Some(found) if found != pte.0 => return Ok(Step::Restart),
                Some(_) => updated,
            }
        } else {
            pte
        };
        let offset_mask = PagingGeometry::page_size(level) - 1;
        let gpa = (pte.phys_addr() & !offset_mask) | (va.raw() & offset_mask);
        return Ok(Step::Done(Translation { gpa: GuestPhysAddr::new(gpa), level, pte, pte_addr }));
    }
    // Ran out of levels with a pointer PTE.
    Err(fault)
}

fn check_reserved_bits(pte: Pte, features: WalkFeatures) -> Result<(), ()> {
    let mut reserved = Pte::RESERVED_MASK | Pte::N_BIT;
    if !features.svpbmt {
        reserved |= Pte::PBMT_MASK;
    } else if pte.0 & Pte::PBMT_MASK == Pte::PBMT_MASK {
        return Err(());
    }
    if pte.0 & reserved != 0 { Err(()) } else { Ok(()) }
}

/// Whether `pte`, a guest's entry in a last-level table, is a leaf a TLB may hold for
/// accesses at privilege `user` (with `sum`) without any change to it: valid, well-formed,
/// already accessed (A), and of the privilege's pages. (Which accesses it then allows is
/// for the caller: W only with D, as a first store must set D.)
pub fn cachable_leaf(pte: Pte, features: WalkFeatures, user: bool, sum: bool) -> bool {
    let flags = pte.flags();
    if !pte.is_valid() || !pte.is_leaf() || !flags.contains(PteFlags::A) {
        return false;
    }
    if check_reserved_bits(pte, features).is_err() || write_without_read(flags) {
        return false;
    }
    if flags.contains(PteFlags::U) { user || sum } else { !user }
}

/// W without R is reserved (W alone, W+X).
fn write_without_read(flags: PteFlags) -> bool {
    flags.contains(PteFlags::W) && !flags.contains(PteFlags::R)
}

fn check_leaf(pte: Pte, level: u32, access: Access) -> Result<(), ()> {
    let flags = pte.flags();
    if write_without_read(flags) {
        return Err(());
    }
    if flags.contains(PteFlags::U) {
        if !access.user && (!access.sum || access.kind == AccessType::Execute) {
            return Err(());
        }
    } else if access.user {
        return Err(());
    }
    // A superpage's PPN must be aligned to its size.
    if level > 0 && pte.ppn() & ((1 << (9 * level)) - 1) != 0 {
        return Err(());
    }
    let allowed = match access.kind {
        AccessType::Read => {
            flags.contains(PteFlags::R) || (access.mxr && flags.contains(PteFlags::X))
        }
        AccessType::Write => flags.contains(PteFlags::W),
        AccessType::Execute => flags.contains(PteFlags::X),
    };
    if allowed { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testmem::SparseMemory;

    const ROOT: u64 = 0x8010_0000;

    fn rwx() -> PteFlags {
        PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X
    }

    fn sv39() -> Satp {
        Satp::new(SatpMode::Sv39, 0, ROOT >> 12)
    }

    fn access(kind: AccessType) -> Access {
        Access { kind, user: false, sum: false, mxr: false }
    }

    /// Builds an Sv39 table mapping `va` with a 4 KiB leaf of `flags` to `pa`.
    fn map_4k(mem: &SparseMemory, va: u64, pa: u64, flags: PteFlags) {
        let l1 = ROOT + 0x1000;
        let l0 = ROOT + 0x2000;
        mem.write(ROOT + 8 * PagingGeometry::vpn(va, 2) as u64, Pte::new(l1 >> 12, PteFlags::V).0);
        mem.write(l1 + 8 * PagingGeometry::vpn(va, 1) as u64, Pte::new(l0 >> 12, PteFlags::V).0);
        mem.write(l0 + 8 * PagingGeometry::vpn(va, 0) as u64, Pte::new(pa >> 12, flags).0);
    }

    fn go(mem: &SparseMemory, va: u64, a: Access) -> Result<Translation, Exception> {
        translate(mem, sv39(), GuestVirtAddr::new(va), a, WalkFeatures::default())
    }

    #[test]
    fn bare_is_identity() {
        let mem = SparseMemory::default();
        let t = translate(
            &mem,
            Satp(0),
            GuestVirtAddr::new(0x1234),
            access(AccessType::Read),
            WalkFeatures::default(),
        )
        .unwrap();
        assert_eq!(t.gpa, GuestPhysAddr::new(0x1234));
    }

    #[test]
    fn four_k_leaf_sets_accessed_and_dirty() {
        let mem = SparseMemory::default();
        map_4k(&mem, 0x4000_1000, 0x8080_0000, rwx());
        let t = go(&mem, 0x4000_1234, access(AccessType::Read)).unwrap();
        assert_eq!(t.gpa, GuestPhysAddr::new(0x8080_0234));
        assert_eq!(t.level, 0);
        assert!(t.pte.flags().contains(PteFlags::A));
        assert!(!t.pte.flags().contains(PteFlags::D));
        assert_eq!(mem.read(t.pte_addr.raw()), t.pte.0);
        let t = go(&mem, 0x4000_1234, access(AccessType::Write)).unwrap();
        assert!(t.pte.flags().contains(PteFlags::A | PteFlags::D));
        assert_eq!(mem.read(t.pte_addr.raw()), t.pte.0);
    }

    #[test]
    fn gigapage_and_megapage() {
        let mem = SparseMemory::default();
        // 1 GiB leaf at VPN[2] = 2 mapping 0x8000_0000.
        mem.write(ROOT + 2 * 8, Pte::new(0x8000_0000 >> 12, rwx()).0);
        let t = go(&mem, 0x8765_4321, access(AccessType::Execute)).unwrap();
        assert_eq!(t.gpa, GuestPhysAddr::new(0x8765_4321));
        assert_eq!(t.level, 2);
        assert_eq!(t.page_size(), 1 << 30);
        // Misaligned gigapage: PPN not a multiple of 2^18.
        mem.write(ROOT + 3 * 8, Pte::new((0x8020_0000) >> 12, rwx()).0);
        assert_eq!(go(&mem, 0xC000_0000, access(AccessType::Read)), Err(Exception::LoadPageFault));
        // 2 MiB leaf.
        let l1 = ROOT + 0x1000;
        mem.write(ROOT, Pte::new(l1 >> 12, PteFlags::V).0);
        mem.write(l1 + 8, Pte::new(0x8060_0000 >> 12, rwx()).0);
        let t = go(&mem, 0x0020_0010, access(AccessType::Write)).unwrap();
        assert_eq!((t.gpa.raw(), t.level), (0x8060_0010, 1));
        // Misaligned megapage.
        mem.write(l1 + 16, Pte::new(0x8060_1000 >> 12, rwx()).0);
        assert_eq!(
            go(&mem, 0x0040_0000, access(AccessType::Write)),
            Err(Exception::StorePageFault)
        );
    }

    #[test]
    fn invalid_and_reserved_encodings_fault() {
        let cases = [
            (PteFlags::empty(), "invalid"),
            (PteFlags::V | PteFlags::W, "W only"),
            (PteFlags::V | PteFlags::W | PteFlags::X, "W+X"),
        ];
        for (flags, what) in cases {
            let mem = SparseMemory::default();
            map_4k(&mem, 0x1000, 0x8000_0000, flags);
            assert_eq!(
                go(&mem, 0x1000, access(AccessType::Read)),
                Err(Exception::LoadPageFault),
                "{what}"
            );
        }
        // Reserved high bits and PBMT without Svpbmt.
        for bit in [54, 60, 61, 63] {
            let mem = SparseMemory::default();
            map_4k(&mem, 0x1000, 0x8000_0000, rwx());
            let addr = ROOT + 0x2000 + 8;
            mem.write(addr, mem.read(addr) | 1 << bit);
            assert_eq!(
                go(&mem, 0x1000, access(AccessType::Read)),
                Err(Exception::LoadPageFault),
                "bit {bit}"
            );
        }
        // A/D/U on a pointer PTE are reserved.
        for flag in [PteFlags::A, PteFlags::D, PteFlags::U] {
            let mem = SparseMemory::default();
            map_4k(&mem, 0x1000, 0x8000_0000, rwx());
            mem.write(ROOT, mem.read(ROOT) | flag.bits());
            assert_eq!(go(&mem, 0x1000, access(AccessType::Write)), Err(Exception::StorePageFault));
        }
        // A pointer at the last level.
        let mem = SparseMemory::default();
        map_4k(&mem, 0x1000, 0x8000_0000, PteFlags::V);
        assert_eq!(
            go(&mem, 0x1000, access(AccessType::Execute)),
            Err(Exception::InstructionPageFault)
        );
    }

    #[test]
    fn svpbmt_memory_types() {
        let mem = SparseMemory::default();
        map_4k(&mem, 0x1000, 0x8000_0000, rwx());
        let addr = ROOT + 0x2000 + 8;
        let with_pbmt = |t: u64| {
            mem.write(addr, (mem.read(addr) & !Pte::PBMT_MASK) | t << 61);
            translate(
                &mem,
                sv39(),
                GuestVirtAddr::new(0x1000),
                access(AccessType::Read),
                WalkFeatures { svpbmt: true },
            )
        };
        assert!(with_pbmt(1).is_ok());
        assert!(with_pbmt(2).is_ok());
        assert_eq!(with_pbmt(3), Err(Exception::LoadPageFault));
    }

    #[test]
    fn user_supervisor_sum_mxr() {
        let mem = SparseMemory::default();
        map_4k(&mem, 0x1000, 0x8000_0000, rwx() | PteFlags::U);
        map_4k(&mem, 0x2000, 0x8000_1000, rwx());
        let user = |kind| Access { kind, user: true, sum: false, mxr: false };
        let sup = |kind, sum| Access { kind, user: false, sum, mxr: false };
        assert!(go(&mem, 0x1000, user(AccessType::Read)).is_ok());
        assert_eq!(go(&mem, 0x2000, user(AccessType::Read)), Err(Exception::LoadPageFault));
        assert_eq!(go(&mem, 0x1000, sup(AccessType::Read, false)), Err(Exception::LoadPageFault));
        assert!(go(&mem, 0x1000, sup(AccessType::Read, true)).is_ok());
        assert!(go(&mem, 0x1000, sup(AccessType::Write, true)).is_ok());
        // SUM never allows S-mode to execute U pages.
        assert_eq!(
            go(&mem, 0x1000, sup(AccessType::Execute, true)),
            Err(Exception::InstructionPageFault)
        );
        // MXR: loads from execute-only pages.
        let mem = SparseMemory::default();
        map_4k(&mem, 0x3000, 0x8000_2000, PteFlags::V | PteFlags::X);
        assert_eq!(go(&mem, 0x3000, access(AccessType::Read)), Err(Exception::LoadPageFault));
        let mxr = Access { kind: AccessType::Read, user: false, sum: false, mxr: true };
        assert!(go(&mem, 0x3000, mxr).is_ok());
        assert_eq!(go(&mem, 0x3000, access(AccessType::Write)), Err(Exception::StorePageFault));
    }

    #[test]
    fn non_canonical_addresses_fault() {
        let mem = SparseMemory::default();
        mem.write(ROOT, Pte::new(0, rwx()).0);
        assert_eq!(
            go(&mem, 0x40_0000_0000, access(AccessType::Read)),
            Err(Exception::LoadPageFault)
        );
        assert!(go(&mem, 0x3F_FFFF_F000, access(AccessType::Read)).is_err()); // unmapped, but canonical
        assert_eq!(go(&mem, 0x1000, access(AccessType::Read)).map(|t| t.gpa.raw()), Ok(0x1000));
    }

    #[test]
    fn sv48_four_levels() {
        let mem = SparseMemory::default();
        let satp = Satp::new(SatpMode::Sv48, 0, ROOT >> 12);
        let va = 0x0000_5765_4321_0000u64;
        let l2 = ROOT + 0x1000;
        mem.write(ROOT + 8 * PagingGeometry::vpn(va, 3) as u64, Pte::new(l2 >> 12, PteFlags::V).0);
        mem.write(l2 + 8 * PagingGeometry::vpn(va, 2) as u64, Pte::new(0xC000_0000 >> 12, rwx()).0);
        let t = translate(
            &mem,
            satp,
            GuestVirtAddr::new(va),
            access(AccessType::Read),
            WalkFeatures::default(),
        )
        .unwrap();
        assert_eq!(t.gpa.raw(), 0xC000_0000 | (va & ((1 << 30) - 1)));
        assert_eq!(t.level, 2);
        // Not canonical for Sv48.
        let bad = GuestVirtAddr::new(0x0001_0000_0000_0000);
        assert!(
            translate(&mem, satp, bad, access(AccessType::Read), WalkFeatures::default()).is_err()
        );
    }

    #[test]
    fn unreadable_table_is_a_page_fault() {
        let mem = SparseMemory::default();
        mem.write(ROOT, Pte::new(0x1_0000_0000 >> 12, PteFlags::V).0); // points outside RAM
        mem.deny_above(0x9000_0000);
        assert_eq!(go(&mem, 0x1000, access(AccessType::Read)), Err(Exception::LoadPageFault));
    }

    #[test]
    fn concurrent_pte_change_restarts_the_walk() {
        let mem = SparseMemory::default();
        map_4k(&mem, 0x1000, 0x8000_0000, rwx());
        let leaf = ROOT + 0x2000 + 8;
        // The first compare-exchange sees a changed PTE (now pointing elsewhere).
        mem.interfere_once(leaf, Pte::new(0x8000_5000 >> 12, rwx()).0);
        let t = go(&mem, 0x1000, access(AccessType::Read)).unwrap();
        assert_eq!(t.gpa.raw(), 0x8000_5000);
    }
}
