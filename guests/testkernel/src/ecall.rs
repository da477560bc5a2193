//! A raw SBI call, for tests that pass arguments the typed wrappers would not allow.

/// `(error, value)` of an SBI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ret {
    pub error: isize,
    pub value: usize,
}

/// Calls extension `eid`, function `fid` with `args` in a0..a5.
pub fn sbi(eid: usize, fid: usize, args: [usize; 6]) -> Ret {
    let (error, value): (isize, usize);
    // SAFETY: an SBI call; the SBI preserves every register but a0 and a1. Calls that take
    // memory addresses are given addresses of live buffers by their callers.
    unsafe {
        core::arch::asm!(
            "ecall",
            inlateout("a0") args[0] => error,
            inlateout("a1") args[1] => value,
            in("a2") args[2], in("a3") args[3], in("a4") args[4], in("a5") args[5],
            in("a6") fid, in("a7") eid,
        );
    }
    Ret { error, value }
}
