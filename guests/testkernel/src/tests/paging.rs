//! Paging: translation, every page-fault rule with its `stval`, U/S and SUM/MXR
//! permissions, A/D updates, superpages, `sfence.vma` in all its forms, ASIDs, address-space
//! switches, and non-canonical addresses.

use core::sync::atomic::Ordering;

use rv::csr::{SatpMode, Sstatus};
use rv::pte::{Pte, PteFlags};

use crate::harness::{Outcome, Test, TestResult};
use crate::trap::{LAST_IRQ_SEPC, LAST_IRQ_SSTATUS, Trap, catch, interrupt_count, run_user_at};
use crate::vm::{Space, alloc_page, pte, rwx, set_pte, sfence, write_code};
use crate::{check, check_eq, observe, skip, test};

pub const TESTS: &[Test] = &[
    test!("paging/sv39-gigapage-alias", sv39_gigapage_alias),
    test!("paging/sv48-gigapage-alias", sv48_gigapage_alias),
    test!("paging/sv57-gigapage-alias", sv57_gigapage_alias),
    test!("paging/sv48-4k-page", sv48_4k_page),
    test!("paging/sv48-non-canonical", sv48_non_canonical),
    test!("paging/4k-read-write", read_write_4k),
    test!("paging/2m-megapage", megapage_2m),
    test!("paging/1g-gigapage-offsets", gigapage_offsets),
    test!("paging/misaligned-megapage", misaligned_megapage),
    test!("paging/misaligned-gigapage", misaligned_gigapage),
    test!("paging/unmapped-load", unmapped_load),
    test!("paging/unmapped-store", unmapped_store),
    test!("paging/unmapped-fetch", unmapped_fetch),
    test!("paging/fault-stval-is-exact", fault_stval_is_exact),
    test!("paging/read-only-store", read_only_store),
    test!("paging/no-exec-fetch", no_exec_fetch),
    test!("paging/exec-only-load", exec_only_load),
    test!("paging/exec-only-fetch", exec_only_fetch),
    test!("paging/mxr-reads-exec-only", mxr_reads_exec_only),
    test!("paging/mxr-takes-effect-at-once", mxr_takes_effect_at_once),
    test!("paging/w-only-leaf-reserved", w_only_leaf_reserved),
    test!("paging/wx-leaf-reserved", wx_leaf_reserved),
    test!("paging/invalid-leaf", invalid_leaf),
    test!("paging/reserved-bits", reserved_bits),
    test!("paging/pbmt-without-svpbmt", pbmt_without_svpbmt),
    test!("paging/n-without-svnapot", n_without_svnapot),
    test!("paging/nonleaf-a-d-u-reserved", nonleaf_a_d_u_reserved),
    test!("paging/pointer-at-last-level", pointer_at_last_level),
    test!("paging/s-load-u-page-without-sum", s_load_u_page_without_sum),
    test!("paging/s-access-u-page-with-sum", s_access_u_page_with_sum),
    test!("paging/s-exec-u-page-with-sum", s_exec_u_page_with_sum),
    test!("paging/sum-takes-effect-at-once", sum_takes_effect_at_once),
    test!("paging/u-load-s-page", u_load_s_page),
    test!("paging/u-access-u-page", u_access_u_page),
    test!("paging/sret-to-u-takes-pending-at-once", sret_to_u_takes_pending),
    test!("paging/u-exec-u-page", u_exec_u_page),
    test!("paging/u-exec-s-page", u_exec_s_page),
    test!("paging/a-set-on-load", a_set_on_load),
    test!("paging/a-set-on-fetch", a_set_on_fetch),
    test!("paging/d-set-on-store", d_set_on_store),
    test!("paging/d-set-again-after-clear-and-fence", d_set_again_after_clear_and_fence),
    test!("paging/d-set-on-user-store", d_set_on_user_store),
    test!("paging/non-canonical-low", non_canonical_low),
    test!("paging/non-canonical-high", non_canonical_high),
    test!("paging/high-half", high_half),
    test!("paging/sfence-all", sfence_all),
    test!("paging/sfence-address", sfence_address),
    test!("paging/sfence-asid", sfence_asid),
    test!("paging/sfence-address-asid", sfence_address_asid),
    test!("paging/sfence-unmap", sfence_unmap),
    test!("paging/asid-bits", asid_bits),
    test!("paging/two-asids-no-fence", two_asids_no_fence),
    test!("paging/same-asid-switch-with-fence", same_asid_switch_with_fence),
    test!("paging/fork-like-address-spaces", fork_like_address_spaces),
    test!("paging/cross-page-load", cross_page_load),
    test!("paging/pte-past-end-of-ram", pte_past_end_of_ram),
    test!("paging/pte-to-unassigned-gigabyte", pte_to_unassigned_gigabyte),
    test!("paging/pte-to-top-of-physical-space", pte_to_top_of_physical_space),
    test!("paging/high-sv39-addresses", high_sv39_addresses),
    test!("paging/code-at-high-sv39-addresses", code_at_high_sv39_addresses),
];

static MARKER: u64 = 0x5EED_CAFE_F00D_0001;
static MARKER2: u64 = 0x0DDB_A11C_0FFE_E002;

/// A test VA in the low half, far from the kernel's gigabyte.
const VA: u64 = 0x1000_0000;
/// Where U-mode code is mapped.
const UCODE: u64 = 0x2000_0000;

/// `ld a0, 0(a0)`, `sd a1, 0(a0)`, `li a0, 42`, `li a1, 0x5a`, `jalr x0, 0(a0)`, `ecall`,
/// `ret`.
const LD_A0: u32 = 0x0005_3503;
const SD_A1: u32 = 0x00b5_3023;
const LI_A0_42: u32 = 0x02a0_0513;
const LI_A1_5A: u32 = 0x05a0_0593;
const JR_A0: u32 = 0x0005_0067;
const ECALL: u32 = 0x0000_0073;
const RET: u32 = 0x0000_8067;

/// An Sv39 space, turned on (ASID 0).
fn sv39() -> Result<Space, Outcome> {
    let s = Space::new(SatpMode::Sv39);
    if !s.activate(0) {
        return Err(Outcome::Skip("not offered: Sv39".into()));
    }
    Ok(s)
}

/// A fresh page holding `value` in its first word; returns the page.
fn page_with(value: u64) -> u64 {
    let p = alloc_page();
    // SAFETY: an arena page.
    unsafe { (p as *mut u64).write_volatile(value) };
    p
}

fn load(va: u64) -> Result<u64, Trap> {
    // SAFETY: the access may fault; `catch` takes the fault.
    catch(|| unsafe { (va as *const u64).read_volatile() })
}

fn store(va: u64, v: u64) -> Result<(), Trap> {
    // SAFETY: as in `load`.
    catch(|| unsafe { (va as *mut u64).write_volatile(v) })
}

/// Calls code at `va` (which returns 42 if it runs).
fn call(va: u64) -> Result<u64, Trap> {
    // SAFETY: `va` holds `li a0, 42; ret` or faults; `catch` takes the fault.
    let f: extern "C" fn() -> u64 = unsafe { core::mem::transmute(va as usize) };
    catch(|| f())
}

/// A page of S-mode code returning 42, mapped at `va` with `flags`.
fn code_page(s: &Space, va: u64, flags: PteFlags) -> *mut u64 {
    let p = alloc_page();
    write_code(p, &[LI_A0_42, RET]);
    s.map(va, p, 0, flags)
}

/// Maps U-mode code `words` at `UCODE`; returns its address.
fn user_code(s: &Space, words: &[u32]) -> u64 {
    let p = alloc_page();
    write_code(p, words);
    s.map(UCODE, p, 0, PteFlags::U | PteFlags::R | PteFlags::X | PteFlags::A);
    sfence(None, None);
    UCODE
}

fn expect_fault(r: Result<impl core::fmt::Debug, Trap>, cause: u64, stval: u64) -> TestResult {
    match r {
        Ok(v) => Err(Outcome::Fail(alloc::format!(
            "no fault (got {v:x?}); expected cause {cause} at {stval:#x}"
        ))),
        Err(t) => {
            check_eq!(t.scause, cause);
            check_eq!(t.stval, stval);
            Ok(())
        }
    }
}

fn ok<T>(r: Result<T, Trap>) -> Result<T, Outcome> {
    r.map_err(|t| Outcome::Fail(alloc::format!("unexpected trap {t:x?}")))
}

/// Reads MARKER through a gigapage alias at `alias_va` in a fresh space of `mode`.
fn gigapage_alias(mode: SatpMode, alias_va: u64) -> TestResult {
    let s = Space::new(mode);
    s.map(alias_va, 0x8000_0000, 2, rwx());
    if !s.activate(0) {
        skip!("not offered: {mode:?} (satp keeps Bare when it is written)");
    }
    let marker = &raw const MARKER as u64;
    check_eq!(ok(load(alias_va + (marker - 0x8000_0000)))?, MARKER);
    Ok(())
}

fn sv39_gigapage_alias() -> TestResult {
    gigapage_alias(SatpMode::Sv39, 0x4000_0000)
}

fn sv48_gigapage_alias() -> TestResult {
    // An address with bits above 38 set: only reachable with 4 levels or more.
    gigapage_alias(SatpMode::Sv48, 0x0000_4000_4000_0000)
}

fn sv57_gigapage_alias() -> TestResult {
    gigapage_alias(SatpMode::Sv57, 0x0080_0000_4000_0000)
}

fn sv48_4k_page() -> TestResult {
    let s = Space::new(SatpMode::Sv48);
    let va = 0x0000_1234_5678_9000;
    s.map(va, page_with(77), 0, rwx());
    if !s.activate(0) {
        skip!("not offered: Sv48 (satp keeps Bare when it is written)");
    }
    check_eq!(ok(load(va))?, 77);
    Ok(())
}

fn sv48_non_canonical() -> TestResult {
    let s = Space::new(SatpMode::Sv48);
    if !s.activate(0) {
        skip!("not offered: Sv48 (satp keeps Bare when it is written)");
    }
    expect_fault(load(0x0000_8000_0000_0000), 13, 0x0000_8000_0000_0000)
}

fn read_write_4k() -> TestResult {
    let s = sv39()?;
    let p = page_with(11);
    s.map(VA, p, 0, rwx());
    sfence(None, None);
    check_eq!(ok(load(VA))?, 11);
    ok(store(VA + 8, 22))?;
    // SAFETY: the kernel reaches the arena page at its physical address.
    check_eq!(unsafe { ((p + 8) as *const u64).read_volatile() }, 22);
    Ok(())
}

fn megapage_2m() -> TestResult {
    let s = sv39()?;
    // The kernel image's own 2 MiB: its Image header says "RSC\x05" at offset 56.
    s.map(0x1020_0000, 0x8020_0000, 1, rwx());
    sfence(None, None);
    let magic = ok(load(0x1020_0000 + 56))? as u32;
    check_eq!(magic, u32::from_le_bytes(*b"RSC\x05"));
    let marker = &raw const MARKER as u64;
    if marker - 0x8020_0000 < 0x20_0000 {
        check_eq!(ok(load(0x1020_0000 + (marker - 0x8020_0000)))?, MARKER);
    }
    Ok(())
}

fn gigapage_offsets() -> TestResult {
    let s = sv39()?;
    s.map(0x4000_0000, 0x8000_0000, 2, rwx());
    sfence(None, None);
    for m in [&raw const MARKER, &raw const MARKER2] {
        let pa = m as u64;
        // SAFETY: reading a static at its physical address.
        check_eq!(ok(load(0x4000_0000 + (pa - 0x8000_0000)))?, unsafe { m.read_volatile() });
    }
    Ok(())
}

fn misaligned_megapage() -> TestResult {
    let s = sv39()?;
    s.map(0x1020_0000, 0x8020_1000, 1, rwx());
    sfence(None, None);
    expect_fault(load(0x1020_0010), 13, 0x1020_0010)
}

fn misaligned_gigapage() -> TestResult {
    let s = sv39()?;
    s.map(0x4000_0000, 0x8020_0000, 2, rwx());
    sfence(None, None);
    expect_fault(load(0x4000_0010), 13, 0x4000_0010)
}

fn unmapped_load() -> TestResult {
    let _s = sv39()?;
    expect_fault(load(VA), 13, VA)
}

fn unmapped_store() -> TestResult {
    let _s = sv39()?;
    expect_fault(store(VA, 1), 15, VA)
}

fn unmapped_fetch() -> TestResult {
    let _s = sv39()?;
    let t = call(VA).expect_err("must fault");
    check_eq!((t.scause, t.stval, t.sepc), (12, VA, VA));
    Ok(())
}

fn fault_stval_is_exact() -> TestResult {
    let _s = sv39()?;
    expect_fault(load(VA + 0x7f8), 13, VA + 0x7f8)?;
    expect_fault(store(VA + 0x123_4560, 1), 15, VA + 0x123_4560)
}

fn read_only_store() -> TestResult {
    let s = sv39()?;
    s.map(VA, page_with(5), 0, PteFlags::R | PteFlags::A | PteFlags::D);
    sfence(None, None);
    check_eq!(ok(load(VA))?, 5);
    expect_fault(store(VA, 6), 15, VA)
}

fn no_exec_fetch() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D);
    sfence(None, None);
    let t = call(VA).expect_err("must fault");
    check_eq!((t.scause, t.stval), (12, VA));
    Ok(())
}

fn exec_only_load() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::X | PteFlags::A);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)
}

fn exec_only_fetch() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::X | PteFlags::A);
    sfence(None, None);
    check_eq!(ok(call(VA))?, 42);
    Ok(())
}

fn set_status(bit: Sstatus, on: bool) {
    // SAFETY: SUM and MXR only change what S-mode may access through its page tables.
    unsafe {
        if on {
            core::arch::asm!("csrs sstatus, {0}", in(reg) bit.bits());
        } else {
            core::arch::asm!("csrc sstatus, {0}", in(reg) bit.bits());
        }
    }
}

fn mxr_reads_exec_only() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::X | PteFlags::A);
    sfence(None, None);
    set_status(Sstatus::MXR, true);
    check_eq!(ok(load(VA))? as u32, LI_A0_42);
    Ok(())
}

fn mxr_takes_effect_at_once() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::X | PteFlags::A);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)?;
    set_status(Sstatus::MXR, true);
    check!(load(VA).is_ok(), "MXR set: the load succeeds without a fence");
    set_status(Sstatus::MXR, false);
    expect_fault(load(VA), 13, VA)
}

fn w_only_leaf_reserved() -> TestResult {
    let s = sv39()?;
    s.map(VA, page_with(1), 0, PteFlags::W | PteFlags::A | PteFlags::D);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)?;
    expect_fault(store(VA, 1), 15, VA)
}

fn wx_leaf_reserved() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::W | PteFlags::X | PteFlags::A | PteFlags::D);
    sfence(None, None);
    let t = call(VA).expect_err("W+X is reserved");
    check_eq!((t.scause, t.stval), (12, VA));
    Ok(())
}

fn invalid_leaf() -> TestResult {
    let s = sv39()?;
    let p = page_with(1);
    s.set(VA, 0, Pte::new(p >> 12, rwx()).0);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)
}

/// A valid RW leaf at VA with `extra` high bits set: must page-fault.
fn leaf_with_high_bits(extra: u64) -> TestResult {
    let s = sv39()?;
    let p = page_with(1);
    s.set(VA, 0, Pte::new(p >> 12, rwx() | PteFlags::V).0 | extra);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)
}

fn reserved_bits() -> TestResult {
    leaf_with_high_bits(1 << 54)?;
    leaf_with_high_bits(1 << 60)
}

fn pbmt_without_svpbmt() -> TestResult {
    leaf_with_high_bits(1 << 61)
}

fn n_without_svnapot() -> TestResult {
    leaf_with_high_bits(1 << 63)
}

fn nonleaf_a_d_u_reserved() -> TestResult {
    for bit in [PteFlags::A, PteFlags::D, PteFlags::U] {
        let s = sv39()?;
        s.map(VA, page_with(1), 0, rwx());
        let l1 = s.entry(VA, 1);
        set_pte(l1, pte(l1).0 | bit.bits());
        sfence(None, None);
        // The spec reserves these bits in pointers; QEMU 7.2 faults on them.
        let r = load(VA);
        observe!("faults", r.is_err() as u64);
        if let Err(t) = r {
            check_eq!((t.scause, t.stval), (13, VA));
        }
        crate::vm::deactivate();
        crate::vm::reset();
    }
    Ok(())
}

fn pointer_at_last_level() -> TestResult {
    let s = sv39()?;
    let p = alloc_page();
    s.set(VA, 0, Pte::new(p >> 12, PteFlags::V).0);
    sfence(None, None);
    expect_fault(load(VA), 13, VA)
}

fn u_page(s: &Space, value: u64) -> u64 {
    let p = page_with(value);
    s.map(VA, p, 0, PteFlags::U | rwx());
    sfence(None, None);
    p
}

fn s_load_u_page_without_sum() -> TestResult {
    let s = sv39()?;
    u_page(&s, 3);
    expect_fault(load(VA), 13, VA)?;
    expect_fault(store(VA, 3), 15, VA)
}

fn s_access_u_page_with_sum() -> TestResult {
    let s = sv39()?;
    u_page(&s, 3);
    set_status(Sstatus::SUM, true);
    check_eq!(ok(load(VA))?, 3);
    ok(store(VA, 4))?;
    check_eq!(ok(load(VA))?, 4);
    Ok(())
}

fn s_exec_u_page_with_sum() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, PteFlags::U | PteFlags::R | PteFlags::X | PteFlags::A);
    sfence(None, None);
    set_status(Sstatus::SUM, true);
    let t = call(VA).expect_err("S-mode never executes U pages");
    check_eq!((t.scause, t.stval), (12, VA));
    Ok(())
}

fn sum_takes_effect_at_once() -> TestResult {
    let s = sv39()?;
    u_page(&s, 9);
    expect_fault(load(VA), 13, VA)?;
    set_status(Sstatus::SUM, true);
    check_eq!(ok(load(VA))?, 9);
    set_status(Sstatus::SUM, false);
    expect_fault(load(VA), 13, VA)
}

fn u_load_s_page() -> TestResult {
    let s = sv39()?;
    s.map(VA, page_with(8), 0, rwx());
    let entry = user_code(&s, &[LD_A0, ECALL]);
    let t = run_user_at(entry, VA, 0);
    check_eq!((t.scause, t.stval, t.sepc), (13, VA, entry));
    check!(t.came_from_user());
    Ok(())
}

fn u_access_u_page() -> TestResult {
    let s = sv39()?;
    let p = u_page(&s, 21);
    let entry = user_code(&s, &[LD_A0, ECALL]);
    let t = run_user_at(entry, VA, 0);
    check_eq!((t.scause, t.args[0]), (8, 21));
    let entry = user_code(&s, &[LI_A1_5A, SD_A1, ECALL]);
    sfence(None, None);
    let t = run_user_at(entry, VA + 16, 0);
    check_eq!(t.scause, 8);
    // SAFETY: the arena page at its physical address.
    check_eq!(unsafe { ((p + 16) as *const u64).read_volatile() }, 0x5a);
    Ok(())
}

/// `sret` to U-mode in a paged space, again and again (under hypocaust the first makes the
/// U-mode view's shadow tree, the later ones find it: the trap vector's fast path), the
/// last with a software interrupt pending and enabled: taken at the first U instruction.
fn sret_to_u_takes_pending() -> TestResult {
    let s = sv39()?;
    let entry = user_code(&s, &[ECALL]);
    let soft = rv::trap::Interrupt::SupervisorSoft;
    for round in 0..4 {
        let pending = round == 3;
        let before = interrupt_count(soft);
        if pending {
            csr_write!("sie", 2);
            csr_write!("sip", 2);
        }
        let t = run_user_at(entry, 0, 0);
        csr_write!("sie", 0);
        check_eq!((round, t.scause, t.sepc), (round, 8, entry));
        check_eq!((round, interrupt_count(soft)), (round, before + usize::from(pending)));
        if pending {
            check_eq!(LAST_IRQ_SEPC.load(Ordering::SeqCst), entry);
            check_eq!(LAST_IRQ_SSTATUS.load(Ordering::SeqCst) & Sstatus::SPP.bits(), 0);
        }
    }
    Ok(())
}

fn u_exec_u_page() -> TestResult {
    let s = sv39()?;
    let entry = user_code(&s, &[LI_A0_42, ECALL]);
    let t = run_user_at(entry, 0, 0);
    check_eq!((t.scause, t.args[0], t.sepc), (8, 42, entry + 4));
    Ok(())
}

fn u_exec_s_page() -> TestResult {
    let s = sv39()?;
    code_page(&s, VA, rwx());
    let entry = user_code(&s, &[JR_A0]);
    let t = run_user_at(entry, VA, 0);
    check_eq!((t.scause, t.stval, t.sepc), (12, VA, VA));
    Ok(())
}

/// A PTE with A and D clear for a page holding `value` at VA; returns the PTE address.
fn fresh_pte(s: &Space, value: u64, extra: PteFlags) -> *mut u64 {
    s.map(VA, page_with(value), 0, PteFlags::R | PteFlags::W | PteFlags::X | extra)
}

fn a_set_on_load() -> TestResult {
    let s = sv39()?;
    let e = fresh_pte(&s, 1, PteFlags::empty());
    sfence(None, None);
    ok(load(VA))?;
    let f = pte(e).flags();
    // Hardware A/D updating (what QEMU does) sets A; a hart without it would fault. Either
    // way D stays clear.
    check!(f.contains(PteFlags::A), "A set by the load");
    check!(!f.contains(PteFlags::D), "D untouched by a load");
    Ok(())
}

fn a_set_on_fetch() -> TestResult {
    let s = sv39()?;
    let p = alloc_page();
    write_code(p, &[LI_A0_42, RET]);
    let e = s.map(VA, p, 0, PteFlags::X);
    sfence(None, None);
    check_eq!(ok(call(VA))?, 42);
    check!(pte(e).flags().contains(PteFlags::A));
    check!(!pte(e).flags().contains(PteFlags::D));
    Ok(())
}

fn d_set_on_store() -> TestResult {
    let s = sv39()?;
    let e = fresh_pte(&s, 1, PteFlags::empty());
    sfence(None, None);
    ok(store(VA, 2))?;
    check!(pte(e).flags().contains(PteFlags::A | PteFlags::D));
    Ok(())
}

fn d_set_again_after_clear_and_fence() -> TestResult {
    let s = sv39()?;
    let e = fresh_pte(&s, 1, PteFlags::A | PteFlags::D);
    sfence(None, None);
    ok(store(VA, 2))?;
    set_pte(e, pte(e).0 & !PteFlags::D.bits());
    sfence(Some(VA), None);
    ok(load(VA))?;
    check!(!pte(e).flags().contains(PteFlags::D), "a load after the fence does not set D");
    ok(store(VA, 3))?;
    check!(pte(e).flags().contains(PteFlags::D), "the next store sets D again");
    Ok(())
}

fn d_set_on_user_store() -> TestResult {
    let s = sv39()?;
    let e = fresh_pte(&s, 1, PteFlags::U);
    let entry = user_code(&s, &[LI_A1_5A, SD_A1, ECALL]);
    let t = run_user_at(entry, VA, 0);
    check_eq!(t.scause, 8);
    check!(pte(e).flags().contains(PteFlags::A | PteFlags::D));
    Ok(())
}

fn non_canonical_low() -> TestResult {
    let s = sv39()?;
    // VPN[2] = 256 would be a valid index, but bit 38 set with zeros above is not an Sv39
    // address at all.
    s.map(0x0000_0040_0000_0000, page_with(1), 0, rwx());

    sfence(None, None);
    expect_fault(load(0x0000_0040_0000_0000), 13, 0x0000_0040_0000_0000)
}

fn non_canonical_high() -> TestResult {
    let _s = sv39()?;
    expect_fault(load(0xffff_ff80_0000_0000), 13, 0xffff_ff80_0000_0000)?;
    expect_fault(store(0x8000_0000_0000_0000, 1), 15, 0x8000_0000_0000_0000)
}

fn high_half() -> TestResult {
    let s = sv39()?;
    let va = 0xffff_ffc0_1234_5000;
    s.map(va, page_with(31), 0, rwx());
    sfence(None, None);
    check_eq!(ok(load(va))?, 31);
    Ok(())
}

/// Maps VA to a page holding 1, reads it (so a TLB holds it), remaps VA to a page holding 2
/// without a fence — either value may be seen — then fences with `fence` and must see 2.
fn remap_then(asid: u16, fence: fn()) -> TestResult {
    let s = Space::new(SatpMode::Sv39);
    let e = s.map(VA, page_with(1), 0, rwx());
    if !s.activate(asid) {
        skip!("not offered: Sv39");
    }
    check_eq!(ok(load(VA))?, 1);
    set_pte(e, Pte::new(page_with(2) >> 12, rwx() | PteFlags::V).0);
    let before = ok(load(VA))?;
    check!(before == 1 || before == 2, "before the fence: the old or the new page, not {before}");
    fence();
    check_eq!(ok(load(VA))?, 2);
    Ok(())
}

fn sfence_all() -> TestResult {
    remap_then(0, || sfence(None, None))
}

fn sfence_address() -> TestResult {
    remap_then(0, || sfence(Some(VA), None))
}

fn sfence_asid() -> TestResult {
    remap_then(5, || sfence(None, Some(5)))
}

fn sfence_address_asid() -> TestResult {
    remap_then(5, || sfence(Some(VA), Some(5)))
}

fn sfence_unmap() -> TestResult {
    let s = sv39()?;
    let e = s.map(VA, page_with(1), 0, rwx());
    sfence(None, None);
    check_eq!(ok(load(VA))?, 1);
    set_pte(e, 0);
    sfence(Some(VA), None);
    expect_fault(load(VA), 13, VA)
}

fn asid_bits() -> TestResult {
    let s = Space::new(SatpMode::Sv39);
    let satp = s.satp(0xffff);
    let read: u64;
    // SAFETY: the space maps the kernel's gigabyte identically; paging goes off after.
    unsafe {
        core::arch::asm!("csrw satp, {0}", "sfence.vma", "csrr {1}, satp", in(reg) satp, out(reg) read)
    };
    crate::vm::deactivate();
    if read == 0 {
        skip!("not offered: Sv39");
    }
    observe!("asid", (read >> 44) & 0xffff);
    Ok(())
}

/// Two spaces mapping VA to different pages.
fn two_spaces() -> Result<(Space, Space), Outcome> {
    let a = Space::new(SatpMode::Sv39);
    a.map(VA, page_with(0xA), 0, rwx());
    let b = Space::new(SatpMode::Sv39);
    b.map(VA, page_with(0xB), 0, rwx());
    if !a.activate(1) {
        return Err(Outcome::Skip("not offered: Sv39".into()));
    }
    Ok((a, b))
}

fn switch(s: &Space, asid: u16) {
    let satp = s.satp(asid);
    // SAFETY: every space maps the kernel's gigabyte identically.
    unsafe { core::arch::asm!("csrw satp, {0}", in(reg) satp) };
}

fn two_asids_no_fence() -> TestResult {
    // Different ASIDs: switching satp needs no fence; each sees its own page.
    let (a, b) = two_spaces()?;
    for _ in 0..10 {
        switch(&a, 1);
        check_eq!(ok(load(VA))?, 0xA);
        switch(&b, 2);
        check_eq!(ok(load(VA))?, 0xB);
    }
    Ok(())
}

fn same_asid_switch_with_fence() -> TestResult {
    // One ASID for both: the guest must fence on each switch (as Linux without ASIDs does).
    let (a, b) = two_spaces()?;
    for _ in 0..10 {
        switch(&a, 0);
        sfence(None, None);
        check_eq!(ok(load(VA))?, 0xA);
        switch(&b, 0);
        sfence(None, None);
        check_eq!(ok(load(VA))?, 0xB);
    }
    Ok(())
}

fn fork_like_address_spaces() -> TestResult {
    // A parent and 15 children: each has a private page at VA (a copy with its own
    // marker) and shares one read-only page at VA + 0x1000. Round-robin through all of
    // them several times, each with its own ASID, the way a kernel switches processes.
    const N: usize = 16;
    let shared = page_with(0x5A5E);
    let spaces: alloc::vec::Vec<Space> = (0..N)
        .map(|i| {
            let s = Space::new(SatpMode::Sv39);
            s.map(VA, page_with(0x1000 + i as u64), 0, PteFlags::U | rwx());
            s.map(VA + 0x1000, shared, 0, PteFlags::U | PteFlags::R | PteFlags::A);
            s
        })
        .collect();
    if !spaces[0].activate(1) {
        skip!("not offered: Sv39");
    }
    set_status(Sstatus::SUM, true);
    for round in 0..4 {
        for (i, s) in spaces.iter().enumerate() {
            switch(s, i as u16 + 1);
            check_eq!(ok(load(VA))?, 0x1000 + i as u64 + round * 0x10_0000);
            check_eq!(ok(load(VA + 0x1000))?, 0x5A5E);
            ok(store(VA, 0x1000 + i as u64 + (round + 1) * 0x10_0000))?;
            expect_fault(store(VA + 0x1000, 0), 15, VA + 0x1000)?;
        }
    }
    Ok(())
}

fn cross_page_load() -> TestResult {
    // A doubleword load straddling a mapped page and an unmapped one.
    let s = sv39()?;
    s.map(VA, page_with(1), 0, rwx());
    sfence(None, None);
    match load(VA + 0xffc) {
        Ok(v) => {
            observe!("trapped", 0);
            observe!("value", v);
        }
        Err(t) => {
            check!(t.scause == 13 || t.scause == 4, "scause {}", t.scause);
            observe!("scause", t.scause);
            observe!("stval", t.stval);
        }
    }
    Ok(())
}

/// Guest RAM ends here in both runs (the suite gives the guest 256 MiB at 0x8000_0000).
const RAM_END: u64 = 0x9000_0000;

/// A leaf naming a physical address where no memory is: the access faults of a hart (cause
/// 5, 7, 1), never the page faults, and never memory of someone else.
fn pte_past_end_of_ram() -> TestResult {
    let s = sv39()?;
    s.map(VA, RAM_END, 0, rwx());
    // The last page of RAM, one page below, stays reachable.
    s.map(VA - 0x1000, RAM_END - 0x1000, 0, rwx());
    sfence(None, None);
    ok(load(VA - 8))?;
    expect_fault(load(VA + 8), 5, VA + 8)?;
    expect_fault(store(VA + 16, 1), 7, VA + 16)?;
    let t = call(VA).expect_err("must fault");
    check_eq!((t.scause, t.stval, t.sepc), (1, VA, VA));
    Ok(())
}

fn pte_to_unassigned_gigabyte() -> TestResult {
    let s = sv39()?;
    s.map(0x4000_0000, 0x1_0000_0000, 2, rwx());
    sfence(None, None);
    expect_fault(load(0x4000_0000 + 0x1230), 5, 0x4000_0000 + 0x1230)?;
    expect_fault(store(0x7fff_fff8, 1), 7, 0x7fff_fff8)
}

fn pte_to_top_of_physical_space() -> TestResult {
    let s = sv39()?;
    // The largest PPN a PTE holds (44 bits).
    s.map(VA, 0x00ff_ffff_ffff_f000, 0, rwx());
    sfence(None, None);
    expect_fault(load(VA + 0xff8), 5, VA + 0xff8)
}

/// Pages the guest maps high in the Sv39 space, where hypocaust keeps its window on a host
/// whose widest mode is Sv39 (its image and direct map, its stacks, an empty slot of the
/// window): the guest must find plain memory there, AMOs, LR/SC loops, and its own faults.
fn high_sv39_addresses() -> TestResult {
    use core::sync::atomic::{AtomicU64, Ordering};
    const HIGH: [u64; 3] = [0xffff_fff7_8020_0000, 0xffff_fffe_8000_0000, 0xffff_fffe_0000_0000];
    let s = sv39()?;
    let data = PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D;
    for (i, &va) in HIGH.iter().enumerate() {
        let marker = 0x1111 * (i as u64 + 1);
        let page = page_with(marker);
        s.map(va, page, 0, data);
        s.map(va + 0x1000, page_with(7), 0, PteFlags::R | PteFlags::A);
        sfence(None, None);
        check_eq!(ok(load(va))?, marker);
        ok(store(va, marker << 32))?;
        // SAFETY: `page` is an arena page, identity-mapped in the kernel's gigabyte.
        check_eq!(unsafe { (page as *const u64).read_volatile() }, marker << 32);
        // SAFETY: `va + 8` is mapped read-write to the same page (checked just above).
        let word = unsafe { AtomicU64::from_ptr((va + 8) as *mut u64) };
        check_eq!(ok(catch(|| word.fetch_add(5, Ordering::SeqCst)))?, 0);
        let cas = || word.compare_exchange(5, 9, Ordering::SeqCst, Ordering::SeqCst);
        check_eq!(ok(catch(cas))?, Ok(5));
        check_eq!(ok(catch(cas))?, Err(9));
        check_eq!(ok(catch(|| word.swap(3, Ordering::SeqCst)))?, 9);
        check_eq!(ok(load(va + 8))?, 3);
        check_eq!(ok(load(va + 0x1000))?, 7);
        expect_fault(store(va + 0x1000, 1), 15, va + 0x1000)?;
        expect_fault(load(va + 0x2000), 13, va + 0x2000)?;
    }
    Ok(())
}

// Position-independent code for `code_at_high_sv39_addresses`, copied to window addresses:
// `a0 = n`, `a1` = a data page. Sums the squares 1..=n (M extension, a backward branch),
// stores the sum, adds 3 to the word at 8 (0) with an AMO and 10 with an LR/SC, stores the
// SC's result, reads `sscratch` (a privileged instruction in the middle of the code),
// doubles n in FP (2n, its bits and fflags stored), reads `time` (stored) and returns the
// sum divided by 3 (compressed instructions where the assembler picks them).
core::arch::global_asm!(
    r#"
    .section .text
    .balign 4
    .globl window_routine, window_routine_end
    .option push
    .option arch, +m, +a, +c, +f, +d
window_routine:
    li      t0, 0
    li      t1, 1
1:  mul     t2, t1, t1
    add     t0, t0, t2
    addi    t1, t1, 1
    bge     a0, t1, 1b
    sd      t0, 0(a1)
    addi    a2, a1, 8
    li      t3, 3
    amoadd.d t4, t3, (a2)
2:  lr.d    t5, (a2)
    addi    t5, t5, 10
    sc.d    t6, t5, (a2)
    bnez    t6, 2b
    sw      t6, 16(a1)
    csrr    t0, sscratch
    sd      t0, 24(a1)
    fcvt.d.l ft1, a0
    fadd.d  ft2, ft1, ft1
    fcvt.l.d t4, ft2
    sd      t4, 32(a1)
    fmv.x.d t4, ft2
    sd      t4, 40(a1)
    csrr    t5, fflags
    sd      t5, 48(a1)
    csrr    t6, time
    sd      t6, 56(a1)
    ld      a0, 0(a1)
    divu    a0, a0, t3
    ret
    .balign 4
window_routine_end:
    .option pop
"#
);

unsafe extern "C" {
    static window_routine: u8;
    static window_routine_end: u8;
}

/// Code the guest runs at the addresses where hypocaust keeps its window on an Sv39 host
/// (see [`high_sv39_addresses`]): it must run as anywhere else, loads, stores, AMOs and a
/// CSR access included, and fault as the hart faults (no execute permission, no page).
fn code_at_high_sv39_addresses() -> TestResult {
    const FS_MASK: u64 = 3 << 13;
    const FS_INITIAL: u64 = 1 << 13;
    const HIGH: [u64; 3] = [0xffff_fff7_8020_0000, 0xffff_fffe_8000_0000, 0xffff_fffe_0000_0000];
    // The two symbols bound the routine above, in the kernel's text.
    let (start, end) = (&raw const window_routine as u64, &raw const window_routine_end as u64);
    let words: alloc::vec::Vec<u32> = (start..end)
        .step_by(4)
        // SAFETY: `start..end` is the routine's code, readable.
        .map(|a| unsafe { (a as *const u32).read_volatile() })
        .collect();
    let s = sv39()?;
    let code = PteFlags::R | PteFlags::X | PteFlags::A;
    let data = PteFlags::R | PteFlags::W | PteFlags::A | PteFlags::D;
    let saved = csr_read!("sscratch");
    for &va in &HIGH {
        let page = alloc_page();
        write_code(page, &words);
        s.map(va, page, 0, code);
        s.map(va + 0x1000, page_with(0), 0, data);
        // The same code without execute permission.
        let noexec = alloc_page();
        write_code(noexec, &words);
        s.map(va + 0x2000, noexec, 0, PteFlags::R | PteFlags::A);
        sfence(None, None);
        csr_write!("sscratch", va ^ 0x5a5a);
        // SAFETY: `va` holds the routine (C ABI: a0, a1 in, a0 out); `catch` takes a fault.
        let f: extern "C" fn(u64, u64) -> u64 = unsafe { core::mem::transmute(va as usize) };
        let d = va + 0x1000;
        let before = crate::timer::now();
        // FP on (Initial) for the routine's FP instructions; fflags clear.
        let sstatus = csr_read!("sstatus");
        csr_write!("sstatus", sstatus & !FS_MASK | FS_INITIAL);
        csr_write!("fflags", 0);
        let result = catch(|| f(10, d));
        let fs_after = csr_read!("sstatus") & FS_MASK;
        csr_write!("sstatus", sstatus);
        csr_write!("sscratch", saved);
        check_eq!(ok(result)?, 385 / 3);
        check_eq!(ok(load(d))?, 385);
        check_eq!(ok(load(d + 8))?, 13);
        check_eq!(ok(load(d + 16))? as u32, 0);
        check_eq!(ok(load(d + 24))?, va ^ 0x5a5a);
        check_eq!(ok(load(d + 32))?, 20);
        check_eq!(ok(load(d + 40))?, 20f64.to_bits());
        check_eq!(ok(load(d + 48))?, 0);
        check!(ok(load(d + 56))? >= before, "time read in the routine is before the call");
        check!(fs_after == FS_MASK, "FS is {fs_after:#x} after FP instructions, not Dirty");
        // SAFETY: as above; the page is not executable: the call faults.
        let g: extern "C" fn(u64, u64) -> u64 =
            unsafe { core::mem::transmute((va + 0x2000) as usize) };
        let t = catch(|| g(10, d)).expect_err("no execute permission");
        check_eq!((t.scause, t.stval), (12, va + 0x2000));
        let t = call(va + 0x3000).expect_err("nothing mapped");
        check_eq!((t.scause, t.stval), (12, va + 0x3000));
    }
    Ok(())
}
