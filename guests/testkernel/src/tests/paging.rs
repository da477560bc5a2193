//! Paging: turning on Sv39 and reading through a mapping.

use rv::csr::{Satp, SatpMode};
use rv::pte::{Pte, PteFlags};

use crate::harness::{Test, TestResult};
use crate::{check_eq, skip, test};

pub const TESTS: &[Test] = &[
    test!("paging/sv39-gigapage-alias", sv39_gigapage_alias),
    test!("paging/sv48-gigapage-alias", sv48_gigapage_alias),
    test!("paging/sv57-gigapage-alias", sv57_gigapage_alias),
];

static MARKER: u64 = 0x5EED_CAFE_F00D_0001;

fn sv39_gigapage_alias() -> TestResult {
    let Some(seen) = read_through_alias(SatpMode::Sv39, 3, 0x4000_0000) else {
        skip!("not offered: Sv39 (satp keeps Bare when Sv39 is written)");
    };
    check_eq!(seen, MARKER);
    Ok(())
}

/// Turns on `mode` with a one-entry table that maps the kernel's gigabyte at its physical
/// address and also at `alias_va`, reads MARKER through the alias, and turns paging off.
/// `None` if the hart refuses the mode (satp keeps its old value).
fn read_through_alias(mode: SatpMode, levels: usize, alias_va: u64) -> Option<u64> {
    #[repr(C, align(4096))]
    struct Tables([[u64; 512]; 5]);
    static mut TABLES: Tables = Tables([[0; 512]; 5]);
    let t = &raw mut TABLES;
    let base_ppn = t as u64 / 4096;
    let pointer = |i: usize| Pte::new(base_ppn + i as u64, PteFlags::V).0;
    let leaf = Pte::new(
        0x8000_0000 >> 12,
        PteFlags::V | PteFlags::R | PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D,
    )
    .0;
    let vpn = |va: u64, level: usize| ((va >> (12 + 9 * level)) & 0x1ff) as usize;
    // SAFETY: the tables are only used here, with paging off while they are written.
    unsafe {
        (*t).0 = [[0; 512]; 5];
        // Levels levels-1 .. 3 are pointers along the path; level 2 holds gigapage leaves.
        for (i, level) in (2..levels).rev().enumerate() {
            if level == 2 {
                (*t).0[i][vpn(0x8000_0000, 2)] = leaf;
                (*t).0[i][vpn(alias_va, 2)] = leaf;
            } else {
                (*t).0[i][vpn(0x8000_0000, level)] = pointer(i + 1);
                (*t).0[i][vpn(alias_va, level)] = pointer(i + 1);
            }
        }
    }
    let marker = &raw const MARKER as u64;
    let satp = Satp::new(mode, 0, t as u64 >> 12).0;
    let (seen, taken): (u64, u64);
    // SAFETY: the tables map the running code, stack and data at their physical addresses,
    // so turning paging on is transparent; if the hart refuses the mode nothing changes.
    unsafe {
        core::arch::asm!(
            "sfence.vma",
            "csrw satp, {satp}",
            "csrr {taken}, satp",
            "li {seen}, 0",
            "beqz {taken}, 1f",
            "ld {seen}, 0({alias})",
            "1:",
            "csrw satp, zero",
            "sfence.vma",
            satp = in(reg) satp,
            alias = in(reg) alias_va + (marker - 0x8000_0000),
            taken = out(reg) taken,
            seen = out(reg) seen,
        );
    }
    (taken != 0).then_some(seen)
}

fn sv48_gigapage_alias() -> TestResult {
    // An address with bits above 38 set: only reachable with 4 levels or more.
    let Some(seen) = read_through_alias(SatpMode::Sv48, 4, 0x0000_4000_4000_0000) else {
        skip!("not offered: Sv48 (satp keeps Bare when Sv48 is written)");
    };
    check_eq!(seen, MARKER);
    Ok(())
}

fn sv57_gigapage_alias() -> TestResult {
    let Some(seen) = read_through_alias(SatpMode::Sv57, 5, 0x0080_0000_4000_0000) else {
        skip!("not offered: Sv57 (satp keeps Bare when Sv57 is written)");
    };
    check_eq!(seen, MARKER);
    Ok(())
}
