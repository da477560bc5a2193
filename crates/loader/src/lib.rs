//! Setting a guest up before its first instruction: where its kernel, initrd and device
//! tree go in its memory ([`image`], [`layout`]) and what the device tree says ([`fdt`]).
#![no_std]

extern crate alloc;

pub mod fdt;
pub mod image;
pub mod isa;
pub mod layout;
