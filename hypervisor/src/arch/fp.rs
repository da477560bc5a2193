//! The guest's floating-point registers, which stay live in the hart while hypocaust runs
//! (hypocaust itself is built without F/D and never uses them). hypocaust's target has no
//! F/D, so the two moves are emitted as raw instruction words through `t0`.

use core::arch::asm;

/// `fmv.x.d t0, fN` and `fmv.d.x fN, t0` for each N.
macro_rules! fp_moves {
    ($($n:literal)*) => {
        /// Reads FP register `reg` (raw 64 bits).
        pub fn read(reg: u8) -> u64 {
            let value: u64;
            match reg {
                $(
                    // SAFETY: moves an FP register into t0; sstatus.FS is the guest's, not
                    // Off (the guest could not have run an FP access with FS off).
                    $n => unsafe {
                        asm!(concat!(".word 0xe2000053 | (", $n, " << 15) | (5 << 7)"),
                            out("t0") value, options(nomem, nostack))
                    },
                )*
                _ => value = 0,
            }
            value
        }

        /// Writes FP register `reg`.
        pub fn write(reg: u8, value: u64) {
            match reg {
                $(
                    // SAFETY: as in `read`; the hart then marks FS dirty itself.
                    $n => unsafe {
                        asm!(concat!(".word 0xf2000053 | (5 << 15) | (", $n, " << 7)"),
                            in("t0") value, options(nomem, nostack))
                    },
                )*
                _ => {}
            }
        }
    };
}

fp_moves!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
