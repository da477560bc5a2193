//! The guest's floating-point registers, which stay live in the hart while hypocaust runs
//! its vCPU (hypocaust itself is built without F/D and never uses them), and are saved and
//! restored when the hart switches to another vCPU ([`save`], [`restore`]). hypocaust's
//! target has no F/D, so the two moves are emitted as raw instruction words through `t0`,
//! and the save and restore enable D for their own block only.

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

/// A vCPU's floating-point registers while another vCPU has the hart's.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct FpRegs {
    f: [u64; 32],
    fcsr: u64,
}

/// `sstatus.FS`, in place.
const FS: u64 = 3 << 13;
/// `sstatus.FS` = Initial, in place: enough for the hart to allow FP accesses.
const FS_INITIAL: u64 = 1 << 13;

/// Runs `f` with `sstatus.FS` on (the hart refuses FP accesses while it is Off), then puts
/// FS back as it was.
fn with_fp_on(f: impl FnOnce()) {
    let old: u64;
    // SAFETY: FS only gates FP accesses; hypocaust has none of its own, and the old value
    // is restored below.
    unsafe { asm!("csrr {0}, sstatus", "csrs sstatus, {1}", out(reg) old, in(reg) FS_INITIAL) };
    f();
    // SAFETY: as above.
    unsafe { asm!("csrc sstatus, {0}", "csrs sstatus, {1}", in(reg) FS, in(reg) old & FS) };
}

/// Saves the hart's FP registers and `fcsr` into `regs`.
pub fn save(regs: &mut FpRegs) {
    let p = regs as *mut FpRegs;
    with_fp_on(|| {
        // SAFETY: stores of the FP registers into `regs`, which is 33 doublewords; the
        // hart has D wherever a guest is offered FP (hypocaust's target has no D, so the
        // instructions are enabled for this block only).
        unsafe {
            asm!(
                ".option push",
                ".option arch, +d",
                ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
                "fsd f\\n, (\\n*8)({p})",
                ".endr",
                "frcsr {t}",
                "sd {t}, 256({p})",
                ".option pop",
                p = in(reg) p,
                t = out(reg) _,
                options(nostack),
            )
        }
    });
}

/// Loads the hart's FP registers and `fcsr` from `regs`.
pub fn restore(regs: &FpRegs) {
    let p = regs as *const FpRegs;
    with_fp_on(|| {
        // SAFETY: loads of the FP registers from `regs`, as in `save`.
        unsafe {
            asm!(
                ".option push",
                ".option arch, +d",
                ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
                "fld f\\n, (\\n*8)({p})",
                ".endr",
                "ld {t}, 256({p})",
                "fscsr {t}",
                ".option pop",
                p = in(reg) p,
                t = out(reg) _,
                options(nostack),
            )
        }
    });
}
