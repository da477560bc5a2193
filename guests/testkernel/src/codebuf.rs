//! Running instruction words built at run time: `exec(insn, a0)` writes `insn` followed by
//! `ret` into a buffer and calls it with a0, returning a0 afterwards or the trap it raised.
//! This is how one test can try all 4096 CSR numbers.

use crate::trap::{Trap, catch};

#[repr(C, align(64))]
struct Buffer([u32; 4]);

static mut BUFFER: Buffer = Buffer([0; 4]);

/// `jalr x0, 0(ra)`.
const RET: u32 = 0x0000_8067;

/// Runs the 32-bit instruction `insn` with `a0` set, in S-mode.
pub fn exec(insn: u32, a0: u64) -> Result<u64, Trap> {
    run([insn, RET, 0, 0], a0)
}

/// Runs the 16-bit instruction `insn` (followed by `ret`) with `a0` set, in S-mode.
pub fn exec16(insn: u16, a0: u64) -> Result<u64, Trap> {
    // A 16-bit instruction, then `c.jr ra` (0x8082).
    run([insn as u32 | 0x8082 << 16, 0, 0, 0], a0)
}

/// Runs up to three 32-bit instructions in a row (the rest of `words` padded with `ret`
/// by the caller), in S-mode, with `a0` set.
pub fn exec_words(words: [u32; 4], a0: u64) -> Result<u64, Trap> {
    run(words, a0)
}

fn run(words: [u32; 4], a0: u64) -> Result<u64, Trap> {
    let buf = &raw mut BUFFER;
    // SAFETY: the buffer is only used here, by one hart; `fence.i` makes the new words
    // visible to instruction fetch before the call.
    unsafe {
        (*buf).0 = words;
        core::arch::asm!("fence.i");
    }
    // SAFETY: the buffer holds the instruction and a return; calling it follows the C ABI
    // (a0 in, a0 out). Anything else the instruction does is what the test is about.
    let f: extern "C" fn(u64) -> u64 = unsafe { core::mem::transmute(buf as *const u8) };
    catch(|| f(a0))
}

/// Runs the 32-bit instruction `insn` in U-mode, followed by `ecall`; returns the trap
/// that ended the run (cause 8 if `insn` itself did not trap).
pub fn exec_user(insn: u32) -> Trap {
    let buf = &raw mut BUFFER;
    // SAFETY: as in `run`.
    unsafe {
        (*buf).0 = [insn, 0x0000_0073, 0, 0];
        core::arch::asm!("fence.i");
    }
    // SAFETY: the buffer holds code that only traps, as a `UserFn` must.
    let entry: crate::trap::UserFn = unsafe { core::mem::transmute(buf as *const u8) };
    crate::trap::run_user(entry, 0)
}

/// Where the instruction under test sits.
pub fn address() -> u64 {
    (&raw const BUFFER) as u64
}

/// `csrrs a0, csr, x0`: reads `csr` into a0.
pub const fn csr_read_insn(csr: u16) -> u32 {
    ((csr as u32) << 20) | (2 << 12) | (10 << 7) | 0x73
}

/// `csrrw x0, csr, a0`: writes a0 to `csr`.
pub const fn csr_write_insn(csr: u16) -> u32 {
    ((csr as u32) << 20) | (10 << 15) | (1 << 12) | 0x73
}

/// Reads CSR `csr` (a number known only at run time).
pub fn read_csr(csr: u16) -> Result<u64, Trap> {
    exec(csr_read_insn(csr), 0)
}
