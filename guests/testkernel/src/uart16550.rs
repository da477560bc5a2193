//! The ns16550a UART of QEMU `virt` (0x1000_0000, PLIC source 10): register access for the
//! tests, and [`Saved`], which puts the UART back as it was found.
//!
//! Natively this UART is also OpenSBI's console: the kernel's own output goes through SBI
//! to its THR. Nothing may be printed while a test has it in loopback or DLAB mode, and
//! each test must leave it exactly as it found it (hold a [`Saved`] for the whole test).

use crate::timer;

/// The registers' base address.
pub const BASE: u64 = 0x1000_0000;
/// The UART's source on the PLIC.
pub const IRQ: u32 = 10;

/// Receive buffer (read) / transmit holding (write); divisor latch low with DLAB.
pub const RBR: u64 = 0;
/// Transmit holding register (same offset as [`RBR`]).
pub const THR: u64 = 0;
/// Divisor latch low (with DLAB).
pub const DLL: u64 = 0;
/// Interrupt enable; divisor latch high with DLAB.
pub const IER: u64 = 1;
/// Divisor latch high (with DLAB).
pub const DLM: u64 = 1;
/// Interrupt identification (read).
pub const IIR: u64 = 2;
/// FIFO control (write).
pub const FCR: u64 = 2;
/// Line control.
pub const LCR: u64 = 3;
/// Modem control.
pub const MCR: u64 = 4;
/// Line status.
pub const LSR: u64 = 5;
/// Modem status.
pub const MSR: u64 = 6;
/// Scratch.
pub const SCR: u64 = 7;

/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;
/// MCR: loopback.
pub const MCR_LOOP: u8 = 0x10;
/// IER: received data available.
pub const IER_RDI: u8 = 0x01;
/// IER: transmit holding register empty.
pub const IER_THRI: u8 = 0x02;
/// IIR: no interrupt pending.
pub const IIR_NONE: u8 = 0x01;
/// IIR: received data available.
pub const IIR_RDI: u8 = 0x04;
/// IIR: transmit holding register empty.
pub const IIR_THRI: u8 = 0x02;
/// IIR: the FIFOs are enabled (both bits).
pub const IIR_FIFO: u8 = 0xc0;
/// FCR: enable the FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive and transmit FIFOs.
pub const FCR_CLEAR: u8 = 0x06;
/// LSR: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: overrun error.
pub const LSR_OE: u8 = 0x02;
/// LSR: transmit holding register empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
pub const LSR_TEMT: u8 = 0x40;

/// Reads register `reg`.
pub fn read(reg: u64) -> u8 {
    // SAFETY: a register of the UART, which is always at BASE on `virt` (natively the
    // firmware leaves it accessible to S-mode); it is byte-wide.
    unsafe { ((BASE + reg) as *const u8).read_volatile() }
}

/// Writes register `reg`.
pub fn write(reg: u64, value: u8) {
    // SAFETY: as in `read`; tests change the UART only while holding a `Saved`.
    unsafe { ((BASE + reg) as *mut u8).write_volatile(value) }
}

/// Waits (at most 100 ms) until the transmitter is empty; `false` if it never was.
pub fn wait_transmitter_empty() -> bool {
    let give_up = timer::now() + timer::ticks_from_us(100_000);
    while read(LSR) & LSR_TEMT == 0 {
        if timer::now() > give_up {
            return false;
        }
    }
    true
}

/// The UART's programmable state as a test found it; dropping it restores that state.
///
/// FCR is write-only: it is restored to what IIR showed (FIFOs on or off) with the
/// receive trigger at one byte (what OpenSBI programs), and both FIFOs are cleared.
pub struct Saved {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo: bool,
}

impl Saved {
    /// Waits until everything printed so far has left the UART, then records its state.
    pub fn take() -> Result<Self, &'static str> {
        if !wait_transmitter_empty() {
            return Err("the UART's transmitter did not drain within 100 ms");
        }
        let lcr = read(LCR);
        let mut saved = Self {
            ier: read(IER),
            lcr,
            mcr: read(MCR),
            scr: read(SCR),
            dll: 0,
            dlm: 0,
            fifo: read(IIR) & IIR_FIFO == IIR_FIFO,
        };
        write(LCR, lcr | LCR_DLAB);
        saved.dll = read(DLL);
        saved.dlm = read(DLM);
        write(LCR, lcr);
        // No interrupts from the UART while a test sets it up.
        write(IER, 0);
        Ok(saved)
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        write(IER, 0);
        write(LCR, self.lcr | LCR_DLAB);
        write(DLL, self.dll);
        write(DLM, self.dlm);
        write(LCR, self.lcr);
        write(FCR, if self.fifo { FCR_ENABLE | FCR_CLEAR } else { FCR_CLEAR });
        // Drop what loopback left behind (and clear overrun with the LSR read).
        for _ in 0..64 {
            if read(LSR) & LSR_DR == 0 {
                break;
            }
            read(RBR);
        }
        write(MCR, self.mcr);
        write(SCR, self.scr);
        write(IER, self.ier);
    }
}
