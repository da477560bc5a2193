//! RISC-V definitions used by every part of hypocaust.
//!
//! This crate owns the *vocabulary*: typed addresses, CSR numbers and fields, trap causes,
//! page-table entry formats and the instruction decoder. It holds no policy and touches no
//! hardware, so everything here is tested on the host.
#![no_std]

pub mod addr;
pub mod csr;
pub mod insn;
pub mod pte;
pub mod trap;

pub use addr::{GuestPhysAddr, GuestVirtAddr, HostPhysAddr, HostVirtAddr, PAGE_SIZE};
