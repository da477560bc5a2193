//! Everything that touches the hart directly: entry assembly, CSR access, the trap vector.
//! The rest of hypocaust calls the small safe wrappers here.

use core::arch::{asm, global_asm};

use crate::layout::{self, HostMode, LINK_BASE};

pub mod csr;
pub mod exec;
pub mod fp;
pub mod trap;

/// Size of the stack the boot hart uses until its own stack is mapped.
const BOOT_STACK_SIZE: usize = 64 * 1024;

/// Leaf flags of the early huge mappings (PPN 0): V R W X G A D.
const EARLY_LEAF: u64 = 0xEF;

/// `satp.MODE` = Sv48 and Sv57, in place.
const SATP_SV48: u64 = 9 << 60;
const SATP_SV57: u64 = 10 << 60;
const SATP_SV39: u64 = 8 << 60;

/// Whether the boot hart tries Sv57 before Sv48.
const PROBE_SV57: u64 = 1;

global_asm!(
    include_str!("entry.S"),
    EARLY_LEAF = const EARLY_LEAF,
    SATP_SV48 = const SATP_SV48,
    SATP_SV57 = const SATP_SV57,
    PROBE_SV57 = const PROBE_SV57,
    VIRT_OFFSET_SV48 = const HostMode::Sv48.virt_offset(),
    VIRT_OFFSET_SV57 = const HostMode::Sv57.virt_offset(),
    VIRT_OFFSET_SV39 = const HostMode::Sv39.virt_offset(),
    SATP_SV39 = const SATP_SV39,
    SV39_FIRST_SLOT = const HostMode::Sv39.root_slots().start,
    SV39_MAPPED_GIB = const HostMode::Sv39.direct_map_limit() >> 30,
    LINK_BASE = const LINK_BASE,
    BOOT_STACK_SIZE = const BOOT_STACK_SIZE,
    rust_boot = sym crate::rust_boot,
    rust_secondary = sym crate::hart::rust_secondary,
);

unsafe extern "C" {
    static boot_root_table: u8;
    fn _secondary_start();
}

/// The `satp` value of the early page table (identity + direct map), which secondary harts
/// turn on before they can reach their Rust entry point.
pub fn early_satp() -> u64 {
    let pa = layout::virt_to_phys(rv::HostVirtAddr::new(&raw const boot_root_table as u64));
    rv::csr::Satp::new(layout::mode().satp_mode(), 0, pa.page_number()).0
}

/// Physical address of the secondary-hart entry point, for SBI `hart_start`.
pub fn secondary_entry_phys() -> u64 {
    layout::virt_to_phys(rv::HostVirtAddr::new(_secondary_start as *const () as u64)).raw()
}

/// Reads the `time` CSR.
#[inline]
pub fn time() -> u64 {
    riscv::register::time::read64()
}

/// Installs a new root page table and flushes the whole TLB.
///
/// # Safety
/// `satp` must name a table that maps the running code, its stack and everything reachable
/// from them exactly as the current one does.
pub unsafe fn switch_page_table(satp: u64) {
    // SAFETY: the caller guarantees the new table keeps the running context mapped.
    unsafe { asm!("sfence.vma", "csrw satp, {0}", "sfence.vma", in(reg) satp) };
}

/// Switches to another root page table without flushing: the tables are told apart by
/// their ASIDs, and the caller flushes an ASID before reusing it for other translations.
///
/// # Safety
/// As for [`switch_page_table`].
pub unsafe fn switch_page_table_keep_tlb(satp: u64) {
    // SAFETY: the caller guarantees the new table keeps the running context mapped.
    unsafe { asm!("csrw satp, {0}", in(reg) satp) };
}

/// The bits of `scounteren` the hart implements (WARL): all ones written, read back; the
/// register is left zero.
pub fn scounteren_writable() -> u64 {
    let writable: u64;
    // SAFETY: scounteren only gates U-mode counter reads; hypocaust sets it before every
    // guest entry.
    unsafe {
        asm!("csrw scounteren, {all}", "csrr {w}, scounteren", "csrw scounteren, zero",
             all = in(reg) u64::MAX, w = out(reg) writable)
    };
    writable
}

/// Waits for an interrupt (returns on any pending enabled one, or spuriously).
#[inline]
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` has no memory effects.
    unsafe { asm!("wfi", options(nomem, nostack)) };
}

/// Reads the per-hart pointer kept in `tp`.
#[inline]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reading a register.
    unsafe { asm!("mv {0}, tp", out(reg) tp, options(nomem, nostack)) };
    tp
}

/// Sets `tp` to the per-hart pointer.
///
/// # Safety
/// `tp` must stay valid for as long as this hart runs hypocaust code.
pub unsafe fn set_thread_pointer(tp: usize) {
    // SAFETY: Rust code for this target does not use `tp` itself (no TLS).
    unsafe { asm!("mv tp, {0}", in(reg) tp, options(nomem, nostack)) };
}

/// Continues execution on a new stack by calling `f(arg)` there; never returns.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a mapped, unused stack.
pub unsafe fn run_on_stack(stack_top: u64, f: extern "C" fn(usize) -> !, arg: usize) -> ! {
    // SAFETY: the caller provides a valid stack; `f` never returns, so the old stack is
    // abandoned.
    unsafe {
        asm!(
            "mv sp, {stack}",
            "jr {f}",
            stack = in(reg) stack_top,
            f = in(reg) f,
            in("a0") arg,
            options(noreturn)
        )
    }
}
