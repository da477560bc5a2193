//! The SiFive UART (`sifive,uart0`) of QEMU's `sifive_u` machine (the HiFive Unleashed's
//! FU540; the same block is on the FU740 and the JH7110's U74 cluster), as QEMU 10's model
//! behaves behind a console back end that takes every byte at once.
//!
//! Seven 32-bit registers, each answering aligned 4-byte accesses (QEMU decodes the first
//! 0x20 bytes; byte and halfword accesses, misaligned ones and offsets past 0x1c fault; an
//! aligned 8-byte access is two 4-byte ones, low word first, as QEMU splits it):
//! - 0x00 `txdata`: a write sends the low byte; a read gives bit 31 "full" (never set here:
//!   sending is instantaneous, so the 8-byte FIFO is always empty).
//! - 0x04 `rxdata`: a read takes the oldest received byte, or reads 0x8000_0000 (bit 31
//!   "empty") when none waits. The receive FIFO holds 8 bytes.
//! - 0x08 `txctrl`, 0x0c `rxctrl`, 0x18 `div`: stored as written (32 bits); the
//!   watermarks are `txctrl` and `rxctrl` bits 18:16.
//! - 0x10 `ie`: stored as written; bit 0 `txwm`, bit 1 `rxwm`.
//! - 0x14 `ip` (read only): `txwm` while the transmit watermark is not 0 (the FIFO is always
//!   below it), `rxwm` while more bytes wait than the receive watermark.
//! - 0x1c: reads 0, writes are ignored.
//!
//! The interrupt line, like QEMU's, is not `ip & ie`: it is high while `ie.txwm` is set, or
//! `ie.rxwm` is set and any byte waits, whatever the watermarks. The model drives it where
//! QEMU does: on a write to `ie`, a byte received, a read of `rxdata` that takes one, and
//! after a byte is sent.

use crate::uart::{OUTPUT_LEN, Ring};
use crate::{BusError, ConsoleUart, Mmio, Width};

/// The size of the window the device tree gives the UART.
pub const SIFIVE_UART_SIZE: u64 = 0x1000;

/// The bytes of the window QEMU decodes.
const DECODED: u64 = 0x20;

const TXDATA: u64 = 0x00;
const RXDATA: u64 = 0x04;
const TXCTRL: u64 = 0x08;
const RXCTRL: u64 = 0x0c;
const IE: u64 = 0x10;
const IP: u64 = 0x14;
const DIV: u64 = 0x18;

/// `rxdata` bit 31: nothing received.
const RX_EMPTY: u32 = 1 << 31;
/// `ie`/`ip` bits.
const IE_TXWM: u32 = 1 << 0;
const IE_RXWM: u32 = 1 << 1;
/// Bytes in the receive FIFO.
const RX_FIFO_LEN: usize = 8;

/// The watermark count in bits 18:16 of `txctrl` or `rxctrl`.
const fn watermark(ctrl: u32) -> usize {
    ((ctrl >> 16) & 7) as usize
}

/// A SiFive UART in QEMU's reset state: every register 0, nothing received, line low.
#[derive(Clone, Debug)]
pub struct SifiveUart {
    txctrl: u32,
    rxctrl: u32,
    ie: u32,
    div: u32,
    rx: Ring<RX_FIFO_LEN>,
    output: Ring<OUTPUT_LEN>,
    line_update: Option<bool>,
}

impl Default for SifiveUart {
    fn default() -> Self {
        Self::new()
    }
}

impl SifiveUart {
    /// The reset state.
    pub const fn new() -> Self {
        Self {
            txctrl: 0,
            rxctrl: 0,
            ie: 0,
            div: 0,
            rx: Ring::new(),
            output: Ring::new(),
            line_update: None,
        }
    }

    /// The state a firmware hands over (OpenSBI's console setup: transmitter and receiver
    /// on, watermarks 0, no interrupts): what a guest kernel finds at boot.
    pub const fn booted() -> Self {
        let mut uart = Self::new();
        uart.txctrl = 1;
        uart.rxctrl = 1;
        uart
    }

    /// The `ip` register.
    pub fn ip(&self) -> u32 {
        let mut ip = 0;
        if watermark(self.txctrl) != 0 {
            ip |= IE_TXWM;
        }
        if self.rx.len() > watermark(self.rxctrl) {
            ip |= IE_RXWM;
        }
        ip
    }

    /// The level of the interrupt line now.
    pub fn irq(&self) -> bool {
        self.ie & IE_TXWM != 0 || (self.ie & IE_RXWM != 0 && !self.rx.is_empty())
    }

    fn update_line(&mut self) {
        self.line_update = Some(self.irq());
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            RXDATA => match self.rx.pop() {
                Some(byte) => {
                    self.update_line();
                    u32::from(byte)
                }
                None => RX_EMPTY,
            },
            TXCTRL => self.txctrl,
            RXCTRL => self.rxctrl,
            IE => self.ie,
            IP => self.ip(),
            DIV => self.div,
            // txdata: never full; 0x1c: nothing.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            TXDATA => {
                // The console takes it at once; the caller drains after every write.
                self.output.push(value as u8);
                self.update_line();
            }
            TXCTRL => self.txctrl = value,
            RXCTRL => self.rxctrl = value,
            IE => {
                self.ie = value;
                self.update_line();
            }
            DIV => self.div = value,
            // ip is read only; 0x1c ignores writes.
            _ => {}
        }
    }

    /// The register an access reaches, or the fault QEMU gives.
    fn register(offset: u64, width: Width) -> Result<u64, BusError> {
        if width == Width::Word && offset.is_multiple_of(4) && offset < DECODED {
            Ok(offset)
        } else {
            Err(BusError)
        }
    }
}

impl Mmio for SifiveUart {
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError> {
        if width == Width::Double && offset.is_multiple_of(8) {
            let low = self.read(offset, Width::Word)?;
            let high = self.read(offset + 4, Width::Word)?;
            return Ok(low | high << 32);
        }
        let reg = Self::register(offset, width)?;
        Ok(u64::from(self.read_register(reg)))
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError> {
        if width == Width::Double && offset.is_multiple_of(8) {
            self.write(offset, Width::Word, value & 0xffff_ffff)?;
            return self.write(offset + 4, Width::Word, value >> 32);
        }
        let reg = Self::register(offset, width)?;
        self.write_register(reg, value as u32);
        Ok(())
    }
}

impl ConsoleUart for SifiveUart {
    fn receive(&mut self, byte: u8) -> bool {
        if !self.wants_input() {
            return false;
        }
        self.rx.push(byte);
        self.update_line();
        true
    }

    fn wants_input(&self) -> bool {
        !self.rx.is_full()
    }

    fn take_output(&mut self) -> Option<u8> {
        self.output.pop()
    }

    fn take_line_update(&mut self) -> Option<bool> {
        self.line_update.take()
    }

    fn reset(&mut self) {
        *self = Self::booted();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(u: &mut SifiveUart, reg: u64) -> u32 {
        u.read(reg, Width::Word).unwrap() as u32
    }

    fn wr(u: &mut SifiveUart, reg: u64, value: u32) {
        u.write(reg, Width::Word, u64::from(value)).unwrap();
    }

    #[test]
    fn resets_to_zero_and_empty() {
        let mut u = SifiveUart::new();
        for reg in [TXDATA, TXCTRL, RXCTRL, IE, IP, DIV, 0x1c] {
            assert_eq!(rd(&mut u, reg), 0, "register {reg:#x}");
        }
        assert_eq!(rd(&mut u, RXDATA), RX_EMPTY);
        assert!(!u.irq());
    }

    #[test]
    fn registers_keep_all_32_bits_and_ip_is_read_only() {
        let mut u = SifiveUart::new();
        for reg in [TXCTRL, RXCTRL, DIV] {
            wr(&mut u, reg, 0xdead_beef);
            assert_eq!(rd(&mut u, reg), 0xdead_beef);
        }
        wr(&mut u, IP, 3);
        assert_eq!(rd(&mut u, IP), IE_TXWM, "txcnt 0xdead_beef >> 16 & 7 = 5 is not 0");
    }

    #[test]
    fn only_aligned_words_inside_the_decoded_bytes() {
        let mut u = SifiveUart::new();
        assert_eq!(u.read(0, Width::Byte), Err(BusError));
        assert_eq!(u.read(0, Width::Half), Err(BusError));
        assert_eq!(u.read(4, Width::Double), Err(BusError));
        assert_eq!(u.read(2, Width::Word), Err(BusError));
        assert_eq!(u.read(0x20, Width::Word), Err(BusError));
        assert_eq!(u.write(0x100, Width::Word, 0), Err(BusError));
        assert_eq!(u.write(1, Width::Byte, 0), Err(BusError));
    }

    #[test]
    fn a_double_is_two_words() {
        let mut u = SifiveUart::new();
        u.write(TXCTRL, Width::Double, 0x0003_0001_0001_0001).unwrap();
        assert_eq!((rd(&mut u, TXCTRL), rd(&mut u, RXCTRL)), (0x0001_0001, 0x0003_0001));
        assert_eq!(u.read(TXCTRL, Width::Double), Ok(0x0003_0001_0001_0001));
        assert_eq!(u.read(0x18, Width::Double), Ok(0), "div and the empty word after it");
    }

    #[test]
    fn sends_at_once() {
        let mut u = SifiveUart::new();
        for b in *b"hello, world" {
            wr(&mut u, TXDATA, 0xffff_ff00 | u32::from(b));
            assert_eq!(rd(&mut u, TXDATA), 0, "never full");
        }
        let out: alloc::vec::Vec<u8> = core::iter::from_fn(|| u.take_output()).collect();
        assert_eq!(out, b"hello, world");
    }

    #[test]
    fn receives_eight_then_refuses() {
        let mut u = SifiveUart::new();
        for b in 0..8 {
            assert!(u.receive(b'a' + b));
        }
        assert!(!u.wants_input());
        assert!(!u.receive(b'z'));
        for b in 0..8 {
            assert_eq!(rd(&mut u, RXDATA), u32::from(b'a' + b));
        }
        assert_eq!(rd(&mut u, RXDATA), RX_EMPTY);
    }

    #[test]
    fn watermarks_in_ip() {
        let mut u = SifiveUart::new();
        assert_eq!(rd(&mut u, IP), 0);
        wr(&mut u, TXCTRL, 1 | (1 << 16));
        assert_eq!(rd(&mut u, IP), IE_TXWM);
        wr(&mut u, RXCTRL, 1 | (2 << 16));
        u.receive(1);
        u.receive(2);
        assert_eq!(rd(&mut u, IP) & IE_RXWM, 0, "2 bytes are not more than 2");
        u.receive(3);
        assert_eq!(rd(&mut u, IP) & IE_RXWM, IE_RXWM);
        rd(&mut u, RXDATA);
        assert_eq!(rd(&mut u, IP) & IE_RXWM, 0);
    }

    #[test]
    fn line_follows_ie_not_watermarks() {
        let mut u = SifiveUart::new();
        wr(&mut u, IE, IE_TXWM);
        assert_eq!(u.take_line_update(), Some(true), "txwm enabled raises it even at txcnt 0");
        wr(&mut u, IE, IE_RXWM);
        assert_eq!(u.take_line_update(), Some(false));
        wr(&mut u, RXCTRL, 7 << 16);
        u.receive(b'x');
        assert_eq!(u.take_line_update(), Some(true), "a byte waits, though below rxcnt");
        assert_eq!(rd(&mut u, IP), 0);
        rd(&mut u, RXDATA);
        assert_eq!(u.take_line_update(), Some(false));
        rd(&mut u, RXDATA);
        assert_eq!(u.take_line_update(), None, "an empty read drives nothing");
    }
}
