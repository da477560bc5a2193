//! Virtual CPU semantics: CSRs, traps, interrupts and the SBI as a guest sees them.
//!
//! Pure logic: hypocaust's trap path saves the guest's registers into a [`Vcpu`], calls
//! [`Vcpu::handle_exception`] with the cause, and acts on the returned [`Action`]. Whatever
//! the vCPU needs from outside (time, guest memory, the console, other vCPUs) it asks for
//! through the [`Host`] trait, so all of this is tested on the host.
#![no_std]

pub mod csr;
pub mod fast;
mod host;
mod interp;
pub mod mmio;
pub mod sbi;
mod vcpu;
pub mod window;

pub use csr::{CsrEffect, Csrs, Features, Lines};
pub use fast::{FastExit, FastHart, FastPath, Switched};
pub use host::{Fault, Fence, Host, MachineIds};
pub use vcpu::{Action, Entry, HartState, Privilege, Regs, ResetKind, Resume, Vcpu};

#[cfg(test)]
mod tests;
