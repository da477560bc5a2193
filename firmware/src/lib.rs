//! hypocaust's M-mode firmware: the parts that are pure logic, tested on the host.
//!
//! The firmware (the `hypocaust-firmware` binary, `src/main.rs` and `src/machine/`) is an
//! SBI implementation built on the `rustsbi` crate for QEMU's `virt` machine and boards
//! like it. It delegates to S-mode every exception hypocaust handles (illegal instruction,
//! breakpoint, misaligned accesses, access and page faults, `ecall` from U-mode), so a
//! trapping guest instruction reaches hypocaust without a trip through M-mode
//! (docs/firmware.md). What is here:
//!
//! * [`hsm`]: each hart's SBI HSM state and the start requests between harts;
//! * [`mailbox`]: work one hart asks of another (an S-mode IPI, remote fences) and how
//!   the asker waits for fences to be done;
//! * [`boot`]: what QEMU tells the firmware about the payload (`fw_dynamic_info`);
//! * [`memory`]: which physical buffers an SBI call may touch.
#![no_std]

pub mod boot;
pub mod hsm;
pub mod mailbox;
pub mod memory;
