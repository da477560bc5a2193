//! Everything that touches the hart directly: the entry and trap assembly, CSR access,
//! fences. The rest of the firmware calls the small safe wrappers here.

use core::arch::{asm, global_asm};

/// Harts the firmware serves (hart IDs 0..MAX_HARTS); others stay parked.
pub const MAX_HARTS: usize = 64;
/// Each hart's M-mode stack: 1 << STACK_SHIFT bytes (16 KiB).
pub const STACK_SHIFT: usize = 14;

/// Registers saved by the trap vector: x0..x31 (x0 unused, x2 = the interrupted sp).
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub x: [usize; 32],
}

global_asm!(
    include_str!("entry.S"),
    MAX_HARTS = const MAX_HARTS,
    STACK_SHIFT = const STACK_SHIFT,
    boot_main = sym super::boot_main,
    hart_main = sym super::hart_main,
);

global_asm!(
    include_str!("trap.S"),
    FRAME_SIZE = const core::mem::size_of::<Frame>(),
    m_trap = sym super::trap::m_trap,
);

unsafe extern "C" {
    fn trap_vector();
    fn enter_supervisor(entry: usize, a0: usize, a1: usize) -> !;
}

/// Starts S-mode at `entry` with a0 and a1 (SIE off, satp 0), abandoning the M stack.
pub fn start_supervisor(entry: usize, a0: usize, a1: usize) -> ! {
    // SAFETY: the trap vector and mscratch are set up for this hart (init_hart), so the
    // fresh M stack is this hart's; S-mode cannot reach M-mode memory (PMP).
    unsafe { enter_supervisor(entry, a0, a1) }
}

/// The machine CSRs the firmware uses, by name.
macro_rules! csr_fns {
    ($($read:ident, $write:ident, $set:ident, $clear:ident: $csr:literal;)*) => {$(
        #[allow(dead_code)]
        #[inline]
        pub fn $read() -> usize {
            let v: usize;
            // SAFETY: reading a CSR of M-mode, which the firmware runs in.
            unsafe { asm!(concat!("csrr {0}, ", $csr), out(reg) v) };
            v
        }
        #[allow(dead_code)]
        #[inline]
        pub fn $write(v: usize) {
            // SAFETY: the firmware owns the machine CSRs; callers write what the
            // privileged spec defines for them.
            unsafe { asm!(concat!("csrw ", $csr, ", {0}"), in(reg) v) };
        }
        #[allow(dead_code)]
        #[inline]
        pub fn $set(bits: usize) {
            // SAFETY: as for the write.
            unsafe { asm!(concat!("csrs ", $csr, ", {0}"), in(reg) bits) };
        }
        #[allow(dead_code)]
        #[inline]
        pub fn $clear(bits: usize) {
            // SAFETY: as for the write.
            unsafe { asm!(concat!("csrc ", $csr, ", {0}"), in(reg) bits) };
        }
    )*};
}

csr_fns! {
    mstatus, write_mstatus, set_mstatus, clear_mstatus: "mstatus";
    mcause, write_mcause, set_mcause, clear_mcause: "mcause";
    mtval, write_mtval, set_mtval, clear_mtval: "mtval";
    mepc, write_mepc, set_mepc, clear_mepc: "mepc";
    mip, write_mip, set_mip, clear_mip: "mip";
    mie, write_mie, set_mie, clear_mie: "mie";
    medeleg, write_medeleg, set_medeleg, clear_medeleg: "medeleg";
    mideleg, write_mideleg, set_mideleg, clear_mideleg: "mideleg";
    mcounteren, write_mcounteren, set_mcounteren, clear_mcounteren: "mcounteren";
    mhartid, write_mhartid, set_mhartid, clear_mhartid: "mhartid";
    stvec, write_stvec, set_stvec, clear_stvec: "stvec";
    scause, write_scause, set_scause, clear_scause: "scause";
    stval, write_stval, set_stval, clear_stval: "stval";
    sepc, write_sepc, set_sepc, clear_sepc: "sepc";
}

/// Writes to CSRs a hart may lack (by number: newer CSRs), each `false` if the write
/// raised illegal instruction: the probe points `mtvec` at the next instruction while it
/// writes, so a trap just falls through.
macro_rules! probed_writes {
    ($($name:ident: $csr:literal;)*) => {$(
        #[inline(never)]
        pub fn $name(value: usize) -> bool {
            let failed: usize;
            // SAFETY: for the one write, a trap lands on the label after it, with every
            // register as it was (mepc and mcause aside); mtvec is restored after.
            unsafe {
                asm!(
                    "la {saved}, 2f",
                    "csrrw {saved}, mtvec, {saved}",
                    "li {failed}, 0",
                    concat!("csrw ", $csr, ", {value}"),
                    "j 3f",
                    ".p2align 2",
                    "2: li {failed}, 1",
                    "3: csrw mtvec, {saved}",
                    value = in(reg) value,
                    saved = out(reg) _,
                    failed = out(reg) failed,
                )
            };
            failed == 0
        }
    )*};
}

probed_writes! {
    try_write_menvcfg: "0x30a";
    try_write_stimecmp: "0x14d";
    try_write_pmpcfg0: "pmpcfg0";
    try_write_pmpaddr0: "pmpaddr0";
    try_write_pmpaddr1: "pmpaddr1";
    try_write_pmpaddr2: "pmpaddr2";
}

/// Loads a doubleword from `addr` as S-mode would (`mstatus.MPRV` with MPP = S, as it is
/// while the firmware handles S-mode's `ecall`): its translation, its permissions. A fault
/// gives `(mcause, mtval)`, and leaves `mepc` and `mstatus` as they were.
pub fn load_as_supervisor(addr: usize) -> Result<usize, (usize, usize)> {
    let (saved_epc, saved_status) = (mepc(), mstatus());
    let (value, failed): (usize, usize);
    // SAFETY: while MPRV is set, the load is S-mode's and a trap lands on the label after
    // it with every register as it was; mtvec, mepc and mstatus are restored after.
    unsafe {
        asm!(
            "la {saved}, 2f",
            "csrrw {saved}, mtvec, {saved}",
            "li {failed}, 0",
            "li {mprv}, 1 << 17",
            "csrs mstatus, {mprv}",
            "ld {value}, 0({addr})",
            "j 3f",
            ".p2align 2",
            "2: li {failed}, 1",
            "3: csrc mstatus, {mprv}",
            "csrw mtvec, {saved}",
            addr = in(reg) addr,
            value = out(reg) value,
            saved = out(reg) _,
            mprv = out(reg) _,
            failed = out(reg) failed,
        )
    };
    if failed == 0 {
        return Ok(value);
    }
    let fault = (mcause(), mtval());
    write_mepc(saved_epc);
    write_mstatus(saved_status);
    Err(fault)
}

/// Points `mtvec` at the trap vector (direct mode).
pub fn install_trap_vector() {
    write_mtvec(trap_vector as *const () as usize);
}

fn write_mtvec(v: usize) {
    // SAFETY: the vector is 4-byte aligned code of this image.
    unsafe { asm!("csrw mtvec, {0}", in(reg) v) };
}

/// `fence.i`.
pub fn fence_i() {
    // SAFETY: orders instruction fetch after earlier stores; no other effect.
    unsafe { asm!("fence.i") };
}

/// `sfence.vma` of every address and ASID.
pub fn sfence_vma_all() {
    // SAFETY: drops cached translations; M-mode runs untranslated.
    unsafe { asm!("sfence.vma") };
}

/// Waits for an interrupt (returns on any pending one enabled in `mie`, or spuriously).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` has no memory effects.
    unsafe { asm!("wfi") };
}

/// mstatus fields.
pub mod mstatus {
    pub const SIE: usize = 1 << 1;
    pub const SPIE: usize = 1 << 5;
    pub const SPP: usize = 1 << 8;
    pub const MPP_SHIFT: usize = 11;
    pub const MPP: usize = 3 << MPP_SHIFT;
    pub const FS_DIRTY: usize = 3 << 13;
}

/// mip/mie bits.
pub mod irq {
    pub const SSI: usize = 1 << 1;
    pub const MSI: usize = 1 << 3;
    pub const STI: usize = 1 << 5;
    pub const MTI: usize = 1 << 7;
    pub const SEI: usize = 1 << 9;
    /// The interrupts S-mode gets.
    pub const SUPERVISOR: usize = SSI | STI | SEI;
}
