//! Memory-management logic of hypocaust, free of hardware access and tested on the host.
//!
//! * [`walk`]: the guest page-table walker (Sv39/Sv48/Sv57), exact to the privileged spec.
//! * [`map`]: building hypocaust's own (host) page tables: its direct map and, later, the
//!   shadow tables it runs guests on.
#![no_std]

extern crate alloc;

pub mod map;
pub mod ranges;
pub mod shadow;
pub mod walk;

#[cfg(test)]
mod testmem;
