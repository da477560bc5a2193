//! The ns16550a UART at 0x1000_0000: scratch, line control, the divisor latch, interrupt
//! enables and identification, FIFO control, line and modem status, loopback, and the
//! receive and transmit interrupts as IIR shows them.
//!
//! Natively this is OpenSBI's console, so each test holds a [`Saved`] (which restores the
//! UART when dropped) and observes values only after it is dropped: nothing may be printed
//! while the UART is in loopback or DLAB mode. The interrupt tests run with the FIFOs off:
//! with them on, QEMU's character timeout makes IIR depend on timing.

use alloc::vec::Vec;

use crate::harness::{Outcome, Test, TestResult};
use crate::uart16550::{
    DLL, DLM, FCR, FCR_CLEAR, FCR_ENABLE, IER, IER_RDI, IER_THRI, IIR, IIR_FIFO, IIR_NONE, IIR_RDI,
    IIR_THRI, LCR, LCR_DLAB, LSR, LSR_DR, LSR_OE, LSR_TEMT, LSR_THRE, MCR, MCR_LOOP, MSR, RBR, SCR,
    Saved, THR, read, write,
};
use crate::{check_eq, test};

pub const TESTS: &[Test] = &[
    test!("uart/scratch", scratch),
    test!("uart/lcr", lcr),
    test!("uart/divisor-latch", divisor_latch),
    test!("uart/ier-writable-bits", ier_writable_bits),
    test!("uart/iir-fifo-bits", iir_fifo_bits),
    test!("uart/lsr-idle", lsr_idle),
    test!("uart/mcr-bits", mcr_bits),
    test!("uart/msr-loopback", msr_loopback),
    test!("uart/loopback-echo", loopback_echo),
    test!("uart/loopback-overrun", loopback_overrun),
    test!("uart/rx-interrupt", rx_interrupt),
    test!("uart/thre-interrupt", thre_interrupt),
    test!("uart/interrupt-priority", interrupt_priority),
];

/// Saves the UART's state for the test (restored when the returned value is dropped).
fn save() -> Result<Saved, Outcome> {
    Saved::take().map_err(|e| Outcome::Fail(e.into()))
}

/// Observes `values` under `key0`, `key1`, ... (call only once the UART is restored).
fn observe_all(key: &str, values: &[u8]) {
    for (i, v) in values.iter().enumerate() {
        crate::harness::observe(&alloc::format!("{key}{i}"), *v as u64);
    }
}

/// Loopback with the FIFOs off (with the UART saved by the caller).
fn loopback_without_fifo() {
    write(FCR, FCR_CLEAR);
    write(MCR, MCR_LOOP);
}

fn scratch() -> TestResult {
    crate::machine::require_16550()?;
    let seen: Vec<u8> = {
        let _saved = save()?;
        [0x00, 0x55, 0xaa, 0xff]
            .iter()
            .map(|&v| {
                write(SCR, v);
                read(SCR)
            })
            .collect()
    };
    check_eq!(seen, [0x00, 0x55, 0xaa, 0xff]);
    Ok(())
}

fn lcr() -> TestResult {
    crate::machine::require_16550()?;
    // Word lengths, stop bits, parity; never DLAB or break here.
    let values = [0x00, 0x03, 0x1f, 0x3b];
    let seen: Vec<u8> = {
        let _saved = save()?;
        values
            .iter()
            .map(|&v| {
                write(LCR, v);
                read(LCR)
            })
            .collect()
    };
    check_eq!(seen, values);
    Ok(())
}

fn divisor_latch() -> TestResult {
    crate::machine::require_16550()?;
    let (lcr_dlab, dll, dlm, ier, dll_again, dlm_again) = {
        let saved = save()?;
        let lcr = read(LCR);
        write(LCR, lcr | LCR_DLAB);
        let lcr_dlab = read(LCR);
        write(DLL, 0x34);
        write(DLM, 0x12);
        let (dll, dlm) = (read(DLL), read(DLM));
        // Without DLAB, offset 1 is IER again (cleared by `save`), not the divisor.
        write(LCR, lcr);
        let ier = read(IER);
        write(LCR, lcr | LCR_DLAB);
        let again = (read(DLL), read(DLM));
        write(LCR, lcr);
        drop(saved);
        (lcr_dlab & LCR_DLAB, dll, dlm, ier, again.0, again.1)
    };
    check_eq!(lcr_dlab, LCR_DLAB);
    check_eq!((dll, dlm), (0x34, 0x12));
    check_eq!(ier, 0);
    check_eq!((dll_again, dlm_again), (0x34, 0x12));
    Ok(())
}

fn ier_writable_bits() -> TestResult {
    crate::machine::require_16550()?;
    let (all, none) = {
        let _saved = save()?;
        write(IER, 0xff);
        let all = read(IER);
        write(IER, 0);
        (all, read(IER))
    };
    crate::observe!("ier-after-0xff", all);
    // The four interrupt enables are writable; bits 4..7 read 0 on a 16550.
    check_eq!(all, 0x0f);
    check_eq!(none, 0);
    Ok(())
}

fn iir_fifo_bits() -> TestResult {
    crate::machine::require_16550()?;
    let (with_fifo, without) = {
        let _saved = save()?;
        write(FCR, FCR_ENABLE | FCR_CLEAR);
        let with_fifo = read(IIR);
        write(FCR, FCR_CLEAR);
        (with_fifo, read(IIR))
    };
    crate::observe!("iir-fifo-on", with_fifo);
    crate::observe!("iir-fifo-off", without);
    check_eq!(with_fifo & IIR_FIFO, IIR_FIFO);
    check_eq!(with_fifo & 0x0f, IIR_NONE);
    check_eq!(without, IIR_NONE);
    Ok(())
}

fn lsr_idle() -> TestResult {
    crate::machine::require_16550()?;
    let lsr = {
        let _saved = save()?;
        read(LSR)
    };
    crate::observe!("lsr", lsr);
    check_eq!(lsr & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    check_eq!(lsr & LSR_DR, 0);
    Ok(())
}

fn mcr_bits() -> TestResult {
    crate::machine::require_16550()?;
    // Loopback stays on, so the modem outputs never reach the outside.
    let values = [0x10, 0x13, 0x1f, 0xff];
    let seen: Vec<u8> = {
        let _saved = save()?;
        values
            .iter()
            .map(|&v| {
                write(MCR, v);
                read(MCR)
            })
            .collect()
    };
    observe_all("mcr", &seen);
    check_eq!(seen[..3], values[..3]);
    // Bits 5..7 of a 16550's MCR read 0.
    check_eq!(seen[3], 0x1f);
    Ok(())
}

fn msr_loopback() -> TestResult {
    crate::machine::require_16550()?;
    let seen: Vec<u8> = {
        let _saved = save()?;
        (0..16)
            .map(|outputs| {
                write(MCR, MCR_LOOP | outputs);
                read(MSR)
            })
            .collect()
    };
    observe_all("msr", &[seen[0], seen[5], seen[10], seen[15]]);
    for (outputs, msr) in seen.iter().enumerate() {
        let o = outputs as u8;
        // Loopback wires DTR to DSR, RTS to CTS, OUT1 to RI and OUT2 to DCD.
        let expected = (o & 1) << 5 | (o & 2) << 3 | (o & 4) << 4 | (o & 8) << 4;
        check_eq!(msr & 0xf0, expected);
    }
    Ok(())
}

fn loopback_echo() -> TestResult {
    crate::machine::require_16550()?;
    let sent = *b"hypo";
    let (lsr_sent, got, lsr_after) = {
        let _saved = save()?;
        write(FCR, FCR_ENABLE | FCR_CLEAR);
        write(MCR, MCR_LOOP);
        for b in sent {
            write(THR, b);
        }
        let lsr_sent = read(LSR);
        let mut got = [0u8; 4];
        for g in &mut got {
            *g = read(RBR);
        }
        (lsr_sent, got, read(LSR))
    };
    crate::observe!("lsr-sent", lsr_sent);
    crate::observe!("lsr-after", lsr_after);
    check_eq!(lsr_sent, LSR_TEMT | LSR_THRE | LSR_DR);
    check_eq!(got, sent);
    check_eq!(lsr_after, LSR_TEMT | LSR_THRE);
    Ok(())
}

fn loopback_overrun() -> TestResult {
    crate::machine::require_16550()?;
    let (lsr_overrun, rbr, lsr_again) = {
        let _saved = save()?;
        loopback_without_fifo();
        write(THR, 0x41);
        write(THR, 0x42);
        let lsr = read(LSR);
        let rbr = read(RBR);
        (lsr, rbr, read(LSR))
    };
    crate::observe!("lsr-overrun", lsr_overrun);
    crate::observe!("rbr", rbr);
    crate::observe!("lsr-again", lsr_again);
    check_eq!(lsr_overrun & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
    // The second byte destroyed the first; reading LSR cleared OE.
    check_eq!(rbr, 0x42);
    check_eq!(lsr_again & (LSR_OE | LSR_DR), 0);
    Ok(())
}

fn rx_interrupt() -> TestResult {
    crate::machine::require_16550()?;
    let iir: Vec<u8> = {
        let _saved = save()?;
        loopback_without_fifo();
        write(IER, IER_RDI);
        let before = read(IIR);
        write(THR, 0x5a);
        let pending = read(IIR);
        let data = read(RBR);
        let after = read(IIR);
        alloc::vec![before, pending, data, after]
    };
    observe_all("iir", &iir);
    check_eq!(iir[0], IIR_NONE);
    check_eq!(iir[1], IIR_RDI);
    check_eq!(iir[2], 0x5a);
    check_eq!(iir[3], IIR_NONE);
    Ok(())
}

fn thre_interrupt() -> TestResult {
    crate::machine::require_16550()?;
    let iir: Vec<u8> = {
        let _saved = save()?;
        loopback_without_fifo();
        write(IER, IER_THRI);
        // Enabling it with THR empty raises it; reading IIR that shows it clears it.
        let enabled = read(IIR);
        let read_again = read(IIR);
        // Writing THR clears it, and it comes back once the byte has left.
        write(THR, 0x21);
        let after_write = read(IIR);
        read(RBR);
        write(IER, 0);
        let disabled = read(IIR);
        alloc::vec![enabled, read_again, after_write, disabled]
    };
    observe_all("iir", &iir);
    check_eq!(iir, [IIR_THRI, IIR_NONE, IIR_THRI, IIR_NONE]);
    Ok(())
}

fn interrupt_priority() -> TestResult {
    crate::machine::require_16550()?;
    let iir: Vec<u8> = {
        let _saved = save()?;
        loopback_without_fifo();
        write(IER, IER_RDI | IER_THRI);
        read(IIR);
        write(THR, 0x33);
        // Received data outranks THR empty; once read, THRE shows.
        let both = read(IIR);
        read(RBR);
        let thre = read(IIR);
        let none = read(IIR);
        alloc::vec![both, thre, none]
    };
    observe_all("iir", &iir);
    check_eq!(iir, [IIR_RDI, IIR_THRI, IIR_NONE]);
    Ok(())
}
