//! Device models a guest sees: the 16550 and SiFive UARTs, the PLIC, and the virtio-mmio passthrough
//! proxy. Pure logic, `no_std`, tested on the host; hypocaust's binary wires them to guest
//! MMIO traps, the physical devices and the virtual interrupt lines.
//!
//! Every model answers guest loads and stores at a byte offset from its base with an access
//! [`Width`]; an access the real bus would refuse (a width the device does not decode, an
//! offset past its registers where the real device faults) is a [`BusError`], which the
//! guest sees as an access fault.

#![no_std]

extern crate alloc;

mod access;
pub mod bus;
pub mod plic;
pub mod rtc;
pub mod sifive_uart;
pub mod uart;
pub mod virtio;

pub use rv::insn::Width;

/// The bus refuses the access: the guest gets a load or store access fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusError;

/// A device's register window.
pub trait Mmio {
    /// Reads `width` bytes at `offset` from the window's base; the value is zero-extended.
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError>;

    /// Writes the low `width` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError>;
}

/// A console UART model: what the board needs besides its registers to connect it to the
/// console and the PLIC.
pub trait ConsoleUart: Mmio {
    /// Offers `byte` from the console; false if the UART does not take input now (the
    /// caller keeps it and offers it again later).
    fn receive(&mut self, byte: u8) -> bool;

    /// Whether [`ConsoleUart::receive`] would take a byte now.
    fn wants_input(&self) -> bool;

    /// The next byte the guest transmitted, oldest first.
    fn take_output(&mut self) -> Option<u8>;

    /// If the model has driven its interrupt line since the last call, the level it drove
    /// it to last (models drive their line at the events QEMU's do, not after every access).
    fn take_line_update(&mut self) -> Option<bool>;

    /// Back to the state the guest finds at boot (it reboots).
    fn reset(&mut self);
}
