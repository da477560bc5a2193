//! The 16550A UART of QEMU 7.2's `virt` machine (`ns16550a` at 0x1000_0000, `reg-shift` 0,
//! PLIC source 10), as QEMU's `serial` model behaves behind a console back end that accepts
//! every byte at once and has no modem-control lines (stdio, a pty, a socket, a mux).
//!
//! What a guest sees, register by register (DLAB = LCR bit 7):
//! - 0: RBR (read) / THR (write); with DLAB, the divisor's low byte (reset 0x0C).
//! - 1: IER (four bits kept); with DLAB, the divisor's high byte.
//! - 2: IIR (read) / FCR (write). IIR bits 7:6 are 0b11 while the FIFOs are on.
//! - 3: LCR (all eight bits). 4: MCR (five bits; reset OUT2). 5: LSR. 6: MSR. 7: SCR.
//!   Writes to LSR and MSR are ignored.
//!
//! Interrupts, highest first: receiver line status (IER bit 2; LSR OE or BI), character
//! timeout (IER bit 0), received data (IER bit 0; DR, and with the FIFO on at least the trigger
//! level of bytes waiting), THR empty (IER bit 1). Modem status never interrupts: the back end
//! reports no modem lines, so MSR never has a delta bit. The THR-empty interrupt is raised
//! when a byte has been sent, when IER bit 1 goes from 0 to 1 with THR empty, and when the
//! transmit FIFO is reset; it is cleared by a read of IIR that reports it, by a write to THR,
//! and by turning IER bit 1 off. Reading LSR clears OE and BI; reading RBR clears DR once the
//! receive buffer is empty.
//!
//! Receiving: one holding register, or a 16-byte FIFO; a byte that finds the FIFO full is lost
//! and sets OE (the FIFO keeps its contents), a byte that finds DR set without the FIFO
//! replaces RBR and sets OE. Like QEMU's console path, [`Uart16550::receive`] takes a byte
//! only while QEMU's front end would ask for one: without the FIFO while DR is clear, with the
//! FIFO while fewer bytes than the trigger level wait (and one at a time above it, which only
//! loopback can reach).
//!
//! The character timeout: QEMU arms a timer of four character times whenever a byte enters
//! the FIFO and whenever a read of RBR leaves bytes in it; when it fires with the FIFO not
//! empty, the timeout interrupt is pending until RBR is read or the FIFO is reset. This model
//! has no clock, so the timer fires at once, as if the guest's next access came more than four
//! character times later (which QEMU also produces, for instance when its vCPU thread is
//! descheduled): while bytes wait in the FIFO, the timeout interrupt is pending after every
//! arrival and after every read of RBR. A guest therefore never waits for bytes below the
//! trigger level; in FIFO mode IIR reports a timeout (0xCC) rather than received data (0xC4).
//!
//! Transmitting is instantaneous: a write to THR sends the byte at once (to
//! [`Uart16550::take_output`], or back into the receiver in loopback mode, MCR bit 4), so THRE
//! and TEMT read as set after every write and the transmit FIFO is always empty. In loopback
//! mode MSR reads as the MCR outputs wired back (DTR to DSR, RTS to CTS, OUT1 to RI, OUT2 to
//! DCD); console input still arrives.
//!
//! Accesses: QEMU decodes only the first 8 bytes of the 0x100 window; each register answers
//! accesses of any width from 1 to 8 bytes at its own offset, reading as the register's byte
//! zero-extended and writing the low byte of the value. Offsets 8 and up are unassigned and
//! fault. A misaligned access is split the way QEMU's CPU splits it for MMIO (see
//! `access.rs`).

use crate::access::{cpu_read, cpu_write};
use crate::{BusError, ConsoleUart, Mmio, Width};

/// The size of the window the `virt` machine gives the UART (its device-tree `reg`).
pub const UART_SIZE: u64 = 0x100;

/// The bytes of the window QEMU decodes (`8 << reg-shift`); the rest of the window faults.
const DECODED: u64 = 8;

/// Bytes in the receive FIFO.
const FIFO_LEN: usize = 16;

/// Transmitted bytes kept for the console until [`Uart16550::take_output`] drains them; each
/// guest write sends at most one byte, so the caller draining after every write never loses
/// any.
pub(crate) const OUTPUT_LEN: usize = 256;

const REG_DATA: u64 = 0;
const REG_IER: u64 = 1;
const REG_IIR_FCR: u64 = 2;
const REG_LCR: u64 = 3;
const REG_MCR: u64 = 4;
const REG_LSR: u64 = 5;
const REG_MSR: u64 = 6;
// 7 is SCR, the last (`_`) arm of the register matches.

const LCR_DLAB: u8 = 0x80;

const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const IER_RLSI: u8 = 0x04;
const IER_MASK: u8 = 0x0f;

const IIR_NO_INT: u8 = 0x01;
const IIR_ID: u8 = 0x06;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_CTI: u8 = 0x0c;
const IIR_FIFO: u8 = 0xc0;

const FCR_FE: u8 = 0x01;
const FCR_RFR: u8 = 0x02;
const FCR_XFR: u8 = 0x04;
/// The FCR bits that stay: trigger level, DMA mode, FIFO enable.
const FCR_KEPT: u8 = 0xc9;

const MCR_MASK: u8 = 0x1f;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
/// The LSR bits that make a receiver line status interrupt (OE, PE, FE, BI).
const LSR_INT_ANY: u8 = 0x1e;

/// MSR outside loopback: DCD, DSR and CTS, as QEMU reports them for a back end without
/// modem lines, and never a delta bit.
const MSR_NO_MODEM: u8 = 0xb0;

/// Divisor latch after reset (9600 baud on a 1.8432 MHz clock).
const RESET_DIVISOR: u16 = 0x0c;

/// A byte queue of fixed capacity.
#[derive(Clone, Debug)]
pub(crate) struct Ring<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Ring<N> {
    pub(crate) const fn new() -> Self {
        Self { buf: [0; N], head: 0, len: 0 }
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) const fn is_full(&self) -> bool {
        self.len == N
    }

    /// Appends `byte`; false (and no change) when full.
    pub(crate) fn push(&mut self, byte: u8) -> bool {
        if self.is_full() {
            return false;
        }
        self.buf[(self.head + self.len) % N] = byte;
        self.len += 1;
        true
    }

    pub(crate) fn pop(&mut self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        let byte = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(byte)
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// A 16550A UART as QEMU 7.2's `virt` machine has it (see the module documentation).
#[derive(Clone, Debug)]
pub struct Uart16550 {
    /// The receive buffer register when the FIFO is off; it keeps its last byte.
    rbr: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr: u8,
    scr: u8,
    /// The FCR bits that stay ([`FCR_KEPT`]); not readable, it decides the FIFO mode and
    /// the trigger level.
    fcr: u8,
    divisor: u16,
    rx: Ring<FIFO_LEN>,
    /// The THR-empty interrupt condition (QEMU's `thr_ipending`), reported when IER bit 1 is
    /// set.
    thr_pending: bool,
    /// The character timeout interrupt condition.
    timeout_pending: bool,
    output: Ring<OUTPUT_LEN>,
    /// The level of the last time the model drove its interrupt line, if it did since
    /// [`Uart16550::take_line_update`] last looked.
    line_update: Option<bool>,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART in QEMU's reset state: no interrupts enabled, FIFOs off, 8N1 at divisor 12,
    /// OUT2 set, transmitter empty, nothing received, interrupt line low.
    pub const fn new() -> Self {
        Self {
            rbr: 0,
            ier: 0,
            lcr: 0,
            mcr: MCR_OUT2,
            lsr: LSR_TEMT | LSR_THRE,
            scr: 0,
            fcr: 0,
            divisor: RESET_DIVISOR,
            rx: Ring::new(),
            thr_pending: false,
            timeout_pending: false,
            output: Ring::new(),
            line_update: None,
        }
    }

    /// The level of the interrupt line now: some enabled interrupt is pending.
    pub fn irq(&self) -> bool {
        self.interrupt_id() != IIR_NO_INT
    }

    /// If the model has driven its interrupt line since the last call, the level it drove
    /// it to last.
    ///
    /// QEMU's UART sets its line (and so sets or clears the source's pending bit in the
    /// PLIC) at particular events only: a received byte, a read of RBR, a write to THR, IER
    /// or FCR, a read of IIR that reports THR empty, a read of LSR that clears OE or BI.
    /// Between these the PLIC's pending bit keeps whatever a claim left, even while the line
    /// is high. Forwarding exactly these updates to `Plic::set_level` keeps the PLIC as in
    /// QEMU; forwarding [`Uart16550::irq`] after every access instead would re-pend a
    /// claimed interrupt slightly more often than QEMU does.
    pub fn take_line_update(&mut self) -> Option<bool> {
        self.line_update.take()
    }

    /// Offers `byte` from the console; false if the UART does not take input now (the
    /// caller keeps the byte and offers it again later, e.g. after the guest reads RBR).
    pub fn receive(&mut self, byte: u8) -> bool {
        if !self.wants_input() {
            return false;
        }
        self.receive_byte(byte);
        true
    }

    /// Whether [`Uart16550::receive`] would take a byte now.
    pub fn wants_input(&self) -> bool {
        if self.fifo_enabled() {
            // QEMU asks the back end for bytes up to the trigger level, one at a time above
            // it, and none at the trigger level or with the FIFO full.
            let level = self.trigger_level();
            let len = self.rx.len();
            !self.rx.is_full() && len != level
        } else {
            self.lsr & LSR_DR == 0
        }
    }

    /// The next byte the guest transmitted, oldest first.
    pub fn take_output(&mut self) -> Option<u8> {
        self.output.pop()
    }

    const fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_FE != 0
    }

    const fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    const fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// Bytes in the FIFO that raise the received-data interrupt (FCR bits 7:6).
    const fn trigger_level(&self) -> usize {
        match self.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// IIR bits 3:0: the highest-priority enabled pending interrupt.
    fn interrupt_id(&self) -> u8 {
        let rx_ready = self.lsr & LSR_DR != 0
            && (!self.fifo_enabled() || self.rx.len() >= self.trigger_level());
        if self.ier & IER_RLSI != 0 && self.lsr & LSR_INT_ANY != 0 {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && self.timeout_pending {
            IIR_CTI
        } else if self.ier & IER_RDI != 0 && rx_ready {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thr_pending {
            IIR_THRI
        } else {
            IIR_NO_INT
        }
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fifo_enabled() { IIR_FIFO } else { 0 };
        self.interrupt_id() | fifo
    }

    /// Drives the interrupt line to its current level, where QEMU's model does.
    fn update_line(&mut self) {
        self.line_update = Some(self.irq());
    }

    /// A byte reaches the receiver (from the console or by loopback).
    fn receive_byte(&mut self, byte: u8) {
        if self.fifo_enabled() {
            if !self.rx.push(byte) {
                self.lsr |= LSR_OE;
            }
            self.lsr |= LSR_DR;
            self.update_line();
            self.character_timeout();
        } else {
            if self.lsr & LSR_DR != 0 {
                self.lsr |= LSR_OE;
            }
            self.rbr = byte;
            self.lsr |= LSR_DR;
            self.update_line();
        }
    }

    /// The character timeout timer, armed just now, expires (see the module documentation).
    fn character_timeout(&mut self) {
        if !self.rx.is_empty() {
            self.timeout_pending = true;
            self.update_line();
        }
    }

    /// A write to THR: the byte goes out at once.
    fn transmit(&mut self, byte: u8) {
        self.thr_pending = false;
        self.lsr &= !(LSR_THRE | LSR_TEMT);
        self.update_line();
        // The shift register takes the byte: THR is empty again.
        self.lsr |= LSR_THRE;
        self.thr_pending = true;
        self.update_line();
        if self.loopback() {
            self.receive_byte(byte);
        } else {
            // Only a caller that does not drain after each write can fill this; the
            // newest bytes are then lost.
            let _ = self.output.push(byte);
        }
        self.lsr |= LSR_TEMT;
    }

    fn read_rbr(&mut self) -> u8 {
        if self.fifo_enabled() {
            let byte = self.rx.pop().unwrap_or(0);
            if self.rx.is_empty() {
                self.lsr &= !(LSR_DR | LSR_BI);
            }
            self.timeout_pending = false;
            self.update_line();
            self.character_timeout();
            byte
        } else {
            self.lsr &= !(LSR_DR | LSR_BI);
            self.update_line();
            self.rbr
        }
    }

    fn write_ier(&mut self, value: u8) {
        let value = value & IER_MASK;
        let changed = self.ier ^ value;
        self.ier = value;
        if changed & IER_THRI != 0 {
            // Turning the THR-empty interrupt on samples THRE afresh, even if a read of
            // IIR had cleared it.
            self.thr_pending = self.ier & IER_THRI != 0 && self.lsr & LSR_THRE != 0;
        }
        if changed != 0 {
            self.update_line();
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let mut value = value;
        if (value ^ self.fcr) & FCR_FE != 0 {
            // Switching the FIFOs on or off empties both.
            value |= FCR_RFR | FCR_XFR;
        }
        if value & FCR_RFR != 0 {
            self.lsr &= !(LSR_DR | LSR_BI);
            self.timeout_pending = false;
            self.rx.clear();
        }
        if value & FCR_XFR != 0 {
            // The transmit FIFO is always empty here; resetting it raises THR empty.
            self.lsr |= LSR_THRE;
            self.thr_pending = true;
        }
        self.fcr = value & FCR_KEPT;
        self.update_line();
    }

    /// Reads register `reg` (0..8) with its side effects.
    fn read_register(&mut self, reg: u64) -> u8 {
        match reg {
            REG_DATA if self.dlab() => self.divisor.to_le_bytes()[0],
            REG_DATA => self.read_rbr(),
            REG_IER if self.dlab() => self.divisor.to_le_bytes()[1],
            REG_IER => self.ier,
            REG_IIR_FCR => {
                let iir = self.iir();
                if iir & IIR_ID == IIR_THRI {
                    self.thr_pending = false;
                    self.update_line();
                }
                iir
            }
            REG_LCR => self.lcr,
            REG_MCR => self.mcr,
            REG_LSR => {
                let lsr = self.lsr;
                if lsr & (LSR_BI | LSR_OE) != 0 {
                    self.lsr &= !(LSR_BI | LSR_OE);
                    self.update_line();
                }
                lsr
            }
            REG_MSR if self.loopback() => {
                // OUT2 -> DCD, OUT1 -> RI, RTS -> CTS, DTR -> DSR.
                ((self.mcr & 0x0c) << 4) | ((self.mcr & 0x02) << 3) | ((self.mcr & 0x01) << 5)
            }
            REG_MSR => MSR_NO_MODEM,
            _ => self.scr,
        }
    }

    /// Writes `value` to register `reg` (0..8) with its side effects.
    fn write_register(&mut self, reg: u64, value: u8) {
        match reg {
            REG_DATA if self.dlab() => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            REG_DATA => self.transmit(value),
            REG_IER if self.dlab() => {
                self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8);
            }
            REG_IER => self.write_ier(value),
            REG_IIR_FCR => self.write_fcr(value),
            REG_LCR => self.lcr = value,
            REG_MCR => self.mcr = value & MCR_MASK,
            REG_LSR | REG_MSR => {}
            _ => self.scr = value,
        }
    }

    /// An aligned access's register, or the fault QEMU gives past the decoded bytes.
    fn register(offset: u64) -> Result<u64, BusError> {
        if offset < DECODED { Ok(offset) } else { Err(BusError) }
    }
}

impl Mmio for Uart16550 {
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError> {
        cpu_read(offset, width, |offset| {
            let reg = Self::register(offset)?;
            Ok(u64::from(self.read_register(reg)))
        })
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError> {
        cpu_write(offset, width, value, |offset, _, value| {
            let reg = Self::register(offset)?;
            self.write_register(reg, value.to_le_bytes()[0]);
            Ok(())
        })
    }
}

impl ConsoleUart for Uart16550 {
    fn receive(&mut self, byte: u8) -> bool {
        Uart16550::receive(self, byte)
    }

    fn wants_input(&self) -> bool {
        Uart16550::wants_input(self)
    }

    fn take_output(&mut self) -> Option<u8> {
        Uart16550::take_output(self)
    }

    fn take_line_update(&mut self) -> Option<bool> {
        Uart16550::take_line_update(self)
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests;
