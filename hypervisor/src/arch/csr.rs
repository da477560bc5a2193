//! The supervisor CSRs and fences hypocaust touches, behind small safe functions. Each one
//! changes only what its name says; none of them can break hypocaust's own execution
//! (its code and data are global mappings, interrupts never trap in S-mode because
//! `sstatus.SIE` stays clear).

use core::arch::asm;

use rv::csr::{Interrupts, Sstatus};

/// Enables the host interrupts in `bits` (`sie`). With `sstatus.SIE` clear they are taken
/// only from a guest (U-mode) and end a `wfi`.
pub fn enable_interrupts(bits: Interrupts) {
    // SAFETY: see the module documentation.
    unsafe { asm!("csrs sie, {0}", in(reg) bits.bits(), options(nostack)) };
}

/// Disables the host interrupt with code `code` (one hypocaust does not handle).
pub fn disable_interrupt(code: u64) {
    // SAFETY: clearing a `sie` bit only stops an interrupt from being taken.
    unsafe { asm!("csrc sie, {0}", in(reg) 1u64 << (code & 63), options(nostack)) };
}

/// Clears a pending supervisor software interrupt (acknowledges a kick).
pub fn clear_soft_interrupt() {
    // SAFETY: see the module documentation.
    unsafe { asm!("csrc sip, {0}", in(reg) Interrupts::SSI.bits(), options(nostack)) };
}

/// The real `sip`.
pub fn sip() -> u64 {
    let sip: u64;
    // SAFETY: reading a CSR.
    unsafe { asm!("csrr {0}, sip", out(reg) sip, options(nomem, nostack)) };
    sip
}

/// The real `satp`.
pub fn satp() -> u64 {
    let satp: u64;
    // SAFETY: reading a CSR.
    unsafe { asm!("csrr {0}, satp", out(reg) satp, options(nomem, nostack)) };
    satp
}

/// The real `sstatus`.
pub fn sstatus() -> u64 {
    let sstatus: u64;
    // SAFETY: reading a CSR.
    unsafe { asm!("csrr {0}, sstatus", out(reg) sstatus, options(nomem, nostack)) };
    sstatus
}

/// Replaces the `sstatus` bits in `mask` with those of `value`. Only the bits a guest's
/// state is mirrored into (FS, MXR) and SPP may be named.
pub fn set_sstatus_bits(mask: u64, value: u64) {
    debug_assert_eq!(mask & !(Sstatus::FS | Sstatus::MXR | Sstatus::SPP).bits(), 0);
    // SAFETY: FS gates FP accesses (hypocaust has none), MXR acts on the guest's shadow
    // entries only (hypocaust has no execute-only pages), SPP picks the privilege `sret`
    // returns to.
    unsafe {
        asm!("csrc sstatus, {0}", "csrs sstatus, {1}", in(reg) mask, in(reg) value & mask,
             options(nostack))
    };
}

/// Writes `scounteren`.
pub fn set_scounteren(value: u64) {
    // SAFETY: scounteren only gates U-mode counter reads.
    unsafe { asm!("csrw scounteren, {0}", in(reg) value, options(nostack)) };
}

/// `scause` and `stval` of the last trap.
pub fn trap_cause() -> (u64, u64) {
    let (scause, stval): (u64, u64);
    // SAFETY: reading CSRs.
    unsafe {
        asm!("csrr {0}, scause", "csrr {1}, stval", out(reg) scause, out(reg) stval,
             options(nomem, nostack))
    };
    (scause, stval)
}

/// Writes `stimecmp` (the caller knows it is writable: Sstc, enabled by firmware).
pub fn set_stimecmp(deadline: u64) {
    // SAFETY: writing stimecmp only moves the timer.
    unsafe { asm!("csrw stimecmp, {0}", in(reg) deadline, options(nostack)) };
}

/// The largest ASID `satp` keeps while on the table of `satp` (all ones written to the
/// field, read back; the original value is restored and the TLB flushed).
pub fn probe_max_asid(satp: u64) -> u16 {
    let probe = satp | (0xFFFF << rv::csr::Satp::ASID_SHIFT);
    let read: u64;
    // SAFETY: the same table with another ASID maps exactly the same; the original value
    // is back before anything else runs.
    unsafe {
        asm!(
            "csrw satp, {probe}",
            "csrr {read}, satp",
            "csrw satp, {current}",
            "sfence.vma",
            probe = in(reg) probe,
            current = in(reg) satp,
            read = out(reg) read,
            options(nostack),
        )
    };
    rv::csr::Satp(read).asid()
}

/// `fence.i`: instruction fetches see earlier stores.
pub fn fence_i() {
    // SAFETY: `fence.i` only orders instruction fetch after earlier stores.
    unsafe { asm!("fence.i", options(nostack)) };
}

/// Drops this hart's translations: of `va` (or all addresses) in `asid` (or all
/// non-global ones when `asid` is 0, everything in that case with no `va`).
pub fn sfence_vma(va: Option<u64>, asid: u16) {
    // SAFETY: dropping translations never breaks hypocaust: its own entries are global and
    // reloaded from its tables when needed.
    unsafe {
        match (va, asid) {
            (Some(va), 0) => asm!("sfence.vma {0}, zero", in(reg) va, options(nostack)),
            (Some(va), asid) => {
                asm!("sfence.vma {0}, {1}", in(reg) va, in(reg) asid as u64, options(nostack))
            }
            (None, 0) => asm!("sfence.vma", options(nostack)),
            (None, asid) => asm!("sfence.vma zero, {0}", in(reg) asid as u64, options(nostack)),
        }
    }
}

/// Orders a device register read before later memory reads (a used index read after an
/// interrupt status).
pub fn fence_io_read() {
    // SAFETY: a fence has no effect but ordering.
    unsafe { asm!("fence i, r", options(nostack)) };
}

/// Orders earlier memory writes before a device register write (ring writes before the
/// notification).
pub fn fence_io_write() {
    // SAFETY: a fence has no effect but ordering.
    unsafe { asm!("fence w, o", options(nostack)) };
}
