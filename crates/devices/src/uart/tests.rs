use super::*;

const RBR: u64 = 0;
const THR: u64 = 0;
const DLL: u64 = 0;
const DLM: u64 = 1;
const IER: u64 = 1;
const IIR: u64 = 2;
const FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

fn rd(uart: &mut Uart16550, reg: u64) -> u8 {
    uart.read(reg, Width::Byte).unwrap() as u8
}

fn wr(uart: &mut Uart16550, reg: u64, value: u8) {
    uart.write(reg, Width::Byte, u64::from(value)).unwrap();
}

/// A UART with the FIFOs on at trigger level `fcr` bits 7:6 and IER = `ier`.
fn fifo_uart(fcr: u8, ier: u8) -> Uart16550 {
    let mut uart = Uart16550::new();
    wr(&mut uart, FCR, fcr | FCR_FE);
    wr(&mut uart, IER, ier);
    uart
}

#[test]
fn reset_values() {
    let mut uart = Uart16550::default();
    assert_eq!(rd(&mut uart, IER), 0);
    assert_eq!(rd(&mut uart, IIR), 0x01);
    assert_eq!(rd(&mut uart, LCR), 0);
    assert_eq!(rd(&mut uart, MCR), 0x08);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert_eq!(rd(&mut uart, MSR), 0xb0);
    assert_eq!(rd(&mut uart, SCR), 0);
    assert_eq!(rd(&mut uart, RBR), 0);
    assert!(!uart.irq());
    assert!(uart.wants_input());
    assert_eq!(uart.take_output(), None);
    wr(&mut uart, LCR, 0x80);
    assert_eq!(rd(&mut uart, DLL), 0x0c);
    assert_eq!(rd(&mut uart, DLM), 0);
}

#[test]
fn scratch_and_lcr_keep_all_bits() {
    let mut uart = Uart16550::new();
    for value in [0x00, 0x5a, 0xa5, 0xff] {
        wr(&mut uart, SCR, value);
        assert_eq!(rd(&mut uart, SCR), value);
    }
    wr(&mut uart, LCR, 0x7f);
    assert_eq!(rd(&mut uart, LCR), 0x7f);
    // DLAB does not hide SCR, LCR or IIR.
    wr(&mut uart, LCR, 0x83);
    wr(&mut uart, SCR, 0x42);
    assert_eq!(rd(&mut uart, SCR), 0x42);
    assert_eq!(rd(&mut uart, LCR), 0x83);
    assert_eq!(rd(&mut uart, IIR), 0x01);
}

#[test]
fn divisor_latch() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, 0x05);
    wr(&mut uart, LCR, 0x83);
    wr(&mut uart, DLL, 0x03);
    wr(&mut uart, DLM, 0x12);
    assert_eq!(rd(&mut uart, DLL), 0x03);
    assert_eq!(rd(&mut uart, DLM), 0x12);
    // The divisor writes neither transmitted nor changed IER.
    assert_eq!(uart.take_output(), None);
    wr(&mut uart, LCR, 0x03);
    assert_eq!(rd(&mut uart, IER), 0x05);
    wr(&mut uart, LCR, 0x83);
    assert_eq!(rd(&mut uart, DLL), 0x03);
    assert_eq!(rd(&mut uart, DLM), 0x12);
}

#[test]
fn divisor_latch_hides_rbr() {
    let mut uart = Uart16550::new();
    assert!(uart.receive(b'x'));
    wr(&mut uart, LCR, 0x80);
    assert_eq!(rd(&mut uart, RBR), 0x0c);
    assert_eq!(rd(&mut uart, LSR) & LSR_DR, LSR_DR);
    wr(&mut uart, LCR, 0);
    assert_eq!(rd(&mut uart, RBR), b'x');
}

#[test]
fn ier_keeps_four_bits_mcr_five() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, 0xf0);
    assert_eq!(rd(&mut uart, IER), 0);
    wr(&mut uart, IER, 0xff);
    assert_eq!(rd(&mut uart, IER), 0x0f);
    wr(&mut uart, MCR, 0xff);
    assert_eq!(rd(&mut uart, MCR), 0x1f);
}

#[test]
fn lsr_and_msr_ignore_writes() {
    let mut uart = Uart16550::new();
    wr(&mut uart, LSR, 0xff);
    wr(&mut uart, MSR, 0x00);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert_eq!(rd(&mut uart, MSR), 0xb0);
}

#[test]
fn output_drains_in_order() {
    let mut uart = Uart16550::new();
    for &byte in b"hi!" {
        wr(&mut uart, THR, byte);
        assert_eq!(rd(&mut uart, LSR), 0x60, "transmission is instantaneous");
    }
    assert_eq!(uart.take_output(), Some(b'h'));
    assert_eq!(uart.take_output(), Some(b'i'));
    assert_eq!(uart.take_output(), Some(b'!'));
    assert_eq!(uart.take_output(), None);
}

#[test]
fn output_keeps_oldest_when_never_drained() {
    let mut uart = Uart16550::new();
    for i in 0..OUTPUT_LEN + 10 {
        wr(&mut uart, THR, i as u8);
    }
    for i in 0..OUTPUT_LEN {
        assert_eq!(uart.take_output(), Some(i as u8));
    }
    assert_eq!(uart.take_output(), None);
}

#[test]
fn thre_interrupt_on_enabling_etbei() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, IER_THRI);
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x02);
    // That read cleared it.
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x01);
    // Writing the same IER again does not bring it back; toggling does.
    wr(&mut uart, IER, IER_THRI);
    assert!(!uart.irq());
    wr(&mut uart, IER, 0);
    wr(&mut uart, IER, IER_THRI);
    assert!(uart.irq());
    // Turning ETBEI off drops it.
    wr(&mut uart, IER, 0);
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x01);
}

#[test]
fn thre_interrupt_after_transmit() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, IER_THRI);
    assert_eq!(rd(&mut uart, IIR), 0x02);
    assert!(!uart.irq());
    wr(&mut uart, THR, b'a');
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x02);
    assert!(!uart.irq());
}

#[test]
fn thre_pending_while_masked_is_not_reported() {
    let mut uart = Uart16550::new();
    wr(&mut uart, THR, b'a');
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x01);
}

#[test]
fn lsr_read_does_not_clear_thri() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, IER_THRI);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert!(uart.irq());
}

#[test]
fn transmit_fifo_reset_raises_thri() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, IER_THRI);
    assert_eq!(rd(&mut uart, IIR), 0x02);
    wr(&mut uart, FCR, FCR_XFR);
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x02);
    // Toggling the FIFO enable resets the transmit FIFO too.
    wr(&mut uart, FCR, FCR_FE);
    assert_eq!(rd(&mut uart, IIR), 0xc2);
    assert_eq!(rd(&mut uart, IIR), 0xc1);
    // Writing FCR with the same enable and no reset bit does not.
    wr(&mut uart, FCR, FCR_FE | 0x40);
    assert_eq!(rd(&mut uart, IIR), 0xc1);
}

#[test]
fn fcr_fifo_bits_in_iir() {
    let mut uart = Uart16550::new();
    wr(&mut uart, FCR, 0x01);
    assert_eq!(rd(&mut uart, IIR), 0xc1);
    wr(&mut uart, FCR, 0xc7);
    assert_eq!(rd(&mut uart, IIR), 0xc1);
    wr(&mut uart, FCR, 0x00);
    assert_eq!(rd(&mut uart, IIR), 0x01);
    // Trigger bits without FE do not turn the FIFO on.
    wr(&mut uart, FCR, 0xc0);
    assert_eq!(rd(&mut uart, IIR), 0x01);
}

#[test]
fn receive_without_fifo() {
    let mut uart = Uart16550::new();
    wr(&mut uart, IER, IER_RDI);
    assert!(uart.receive(b'a'));
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x04);
    assert_eq!(rd(&mut uart, LSR), 0x61);
    // The holding register is full: the console must wait.
    assert!(!uart.wants_input());
    assert!(!uart.receive(b'b'));
    assert_eq!(rd(&mut uart, RBR), b'a');
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert_eq!(rd(&mut uart, IIR), 0x01);
    // RBR keeps its byte.
    assert_eq!(rd(&mut uart, RBR), b'a');
    assert!(uart.receive(b'b'));
    assert_eq!(rd(&mut uart, RBR), b'b');
}

#[test]
fn receive_masked_keeps_line_low() {
    let mut uart = Uart16550::new();
    assert!(uart.receive(b'a'));
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x01);
    assert_eq!(rd(&mut uart, LSR), 0x61);
}

#[test]
fn fifo_takes_console_input_up_to_trigger_level() {
    for (fcr, level) in [(0x00, 1), (0x40, 4), (0x80, 8), (0xc0, 14)] {
        let mut uart = fifo_uart(fcr, 0);
        let mut taken = 0;
        while uart.receive(b'0' + taken as u8) {
            taken += 1;
            assert!(taken <= 16);
        }
        assert_eq!(taken, level, "fcr {fcr:#x}");
        assert!(!uart.wants_input());
        // A read makes room for one more.
        assert_eq!(rd(&mut uart, RBR), b'0');
        assert!(uart.receive(b'x'));
        assert!(!uart.wants_input());
    }
}

#[test]
fn fifo_trigger_level_and_timeout() {
    // Trigger level 4: fewer bytes give the timeout interrupt, as if four character times
    // had passed; the IIR code tells it from received data.
    let mut uart = fifo_uart(0x40, IER_RDI);
    assert!(!uart.irq());
    assert!(uart.receive(b'a'));
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0xcc);
    assert!(uart.receive(b'b'));
    assert_eq!(rd(&mut uart, RBR), b'a');
    // One byte left: the timer re-armed and expired.
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0xcc);
    assert_eq!(rd(&mut uart, RBR), b'b');
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0xc1);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    // Reading an empty FIFO gives 0 and changes nothing.
    assert_eq!(rd(&mut uart, RBR), 0);
    assert!(!uart.irq());
}

#[test]
fn timeout_masked_by_rdi() {
    let mut uart = fifo_uart(0xc0, IER_THRI);
    assert_eq!(rd(&mut uart, IIR), 0xc2);
    assert!(uart.receive(b'a'));
    assert!(!uart.irq());
    wr(&mut uart, IER, IER_RDI);
    assert_eq!(rd(&mut uart, IIR), 0xcc);
}

#[test]
fn receive_fifo_reset() {
    let mut uart = fifo_uart(0xc0, IER_RDI);
    for &byte in b"abc" {
        assert!(uart.receive(byte));
    }
    assert!(uart.irq());
    wr(&mut uart, FCR, FCR_FE | FCR_RFR | 0xc0);
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert_eq!(rd(&mut uart, RBR), 0);
    // Turning the FIFO off flushes it as well.
    assert!(uart.receive(b'd'));
    wr(&mut uart, FCR, 0);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert!(!uart.irq());
    // Without the FIFO, RBR still holds its old byte (none here).
    assert_eq!(rd(&mut uart, RBR), 0);
}

#[test]
fn loopback_receives_transmitted_bytes() {
    let mut uart = Uart16550::new();
    wr(&mut uart, MCR, MCR_LOOP);
    wr(&mut uart, IER, IER_RDI);
    wr(&mut uart, THR, b'z');
    assert_eq!(uart.take_output(), None);
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x04);
    assert_eq!(rd(&mut uart, LSR), 0x61);
    assert_eq!(rd(&mut uart, RBR), b'z');
    assert!(!uart.irq());
    // Out of loopback, bytes go to the console again.
    wr(&mut uart, MCR, 0);
    wr(&mut uart, THR, b'y');
    assert_eq!(uart.take_output(), Some(b'y'));
    assert_eq!(rd(&mut uart, LSR), 0x60);
}

#[test]
fn loopback_with_fifo_and_interrupt_priority() {
    let mut uart = fifo_uart(0x00, IER_RDI | IER_THRI | IER_RLSI);
    assert_eq!(rd(&mut uart, IIR), 0xc2);
    wr(&mut uart, MCR, MCR_LOOP);
    wr(&mut uart, THR, b'1');
    // Received data outranks THR empty.
    assert_eq!(rd(&mut uart, IIR), 0xcc);
    assert_eq!(rd(&mut uart, RBR), b'1');
    // Then THR empty, still pending from the transmission.
    assert_eq!(rd(&mut uart, IIR), 0xc2);
    assert_eq!(rd(&mut uart, IIR), 0xc1);
    assert!(!uart.irq());
}

#[test]
fn console_input_arrives_in_loopback() {
    let mut uart = Uart16550::new();
    wr(&mut uart, MCR, MCR_LOOP);
    assert!(uart.receive(b'c'));
    assert_eq!(rd(&mut uart, RBR), b'c');
}

#[test]
fn fifo_fills_to_16_then_overruns() {
    let mut uart = fifo_uart(0xc0, IER_RDI | IER_RLSI);
    wr(&mut uart, MCR, MCR_LOOP);
    for i in 0..16 {
        wr(&mut uart, THR, i);
    }
    assert!(!uart.wants_input());
    assert_eq!(rd(&mut uart, LSR), 0x61);
    assert_eq!(rd(&mut uart, IIR), 0xcc);
    // The 17th byte is lost and sets OE; the FIFO keeps the first sixteen.
    wr(&mut uart, THR, 0xee);
    assert_eq!(rd(&mut uart, IIR), 0xc6, "line status outranks received data");
    assert_eq!(rd(&mut uart, LSR), 0x63);
    // That read cleared OE.
    assert_eq!(rd(&mut uart, LSR), 0x61);
    assert_eq!(rd(&mut uart, IIR), 0xcc);
    for i in 0..16 {
        assert_eq!(rd(&mut uart, RBR), i);
    }
    assert_eq!(rd(&mut uart, LSR), 0x60);
    assert!(!uart.irq());
}

#[test]
fn console_input_above_trigger_level_comes_one_at_a_time() {
    let mut uart = fifo_uart(0x40, IER_RDI);
    wr(&mut uart, MCR, MCR_LOOP);
    for i in 0..6 {
        wr(&mut uart, THR, i);
    }
    // Beyond the trigger level the console gets one byte at a time.
    assert!(uart.wants_input());
    assert!(uart.receive(6));
    assert!(uart.wants_input());
    assert_eq!(rd(&mut uart, IIR), 0xcc);
}

#[test]
fn overrun_without_fifo() {
    let mut uart = Uart16550::new();
    wr(&mut uart, MCR, MCR_LOOP);
    wr(&mut uart, IER, IER_RLSI);
    wr(&mut uart, THR, b'a');
    assert!(!uart.irq());
    wr(&mut uart, THR, b'b');
    assert!(uart.irq());
    assert_eq!(rd(&mut uart, IIR), 0x06);
    assert_eq!(rd(&mut uart, LSR), 0x63);
    assert!(!uart.irq());
    assert_eq!(rd(&mut uart, RBR), b'b');
}

#[test]
fn msr_in_loopback_follows_mcr() {
    let mut uart = Uart16550::new();
    wr(&mut uart, MCR, MCR_LOOP);
    assert_eq!(rd(&mut uart, MSR), 0x00);
    wr(&mut uart, MCR, MCR_LOOP | 0x01);
    assert_eq!(rd(&mut uart, MSR), 0x20);
    wr(&mut uart, MCR, MCR_LOOP | 0x02);
    assert_eq!(rd(&mut uart, MSR), 0x10);
    wr(&mut uart, MCR, MCR_LOOP | 0x04);
    assert_eq!(rd(&mut uart, MSR), 0x40);
    wr(&mut uart, MCR, MCR_LOOP | 0x08);
    assert_eq!(rd(&mut uart, MSR), 0x80);
    wr(&mut uart, MCR, MCR_LOOP | 0x0f);
    assert_eq!(rd(&mut uart, MSR), 0xf0);
    wr(&mut uart, MCR, 0x0f);
    assert_eq!(rd(&mut uart, MSR), 0xb0);
    // No modem status interrupt ever.
    wr(&mut uart, IER, 0x08);
    assert!(!uart.irq());
}

#[test]
fn wide_accesses_hit_one_register() {
    let mut uart = Uart16550::new();
    wr(&mut uart, SCR, 0x77);
    wr(&mut uart, MCR, 0x03);
    assert!(uart.receive(b'q'));
    // A word at 4 reads MCR alone (LSR is not read, nor its OE cleared).
    assert_eq!(uart.read(4, Width::Word), Ok(0x03));
    assert_eq!(uart.read(6, Width::Half), Ok(0xb0));
    assert_eq!(uart.read(0, Width::Double), Ok(u64::from(b'q')));
    assert_eq!(rd(&mut uart, LSR), 0x60);
    // A wide write stores its low byte in the register at its offset.
    uart.write(0, Width::Double, 0x1122_3344_5566_7741).unwrap();
    assert_eq!(uart.take_output(), Some(0x41));
    assert_eq!(uart.take_output(), None);
    uart.write(4, Width::Word, 0xffff_ff01).unwrap();
    assert_eq!(rd(&mut uart, MCR), 0x01);
    assert_eq!(rd(&mut uart, SCR), 0x77);
    uart.write(2, Width::Half, 0x0101).unwrap();
    assert_eq!(rd(&mut uart, IIR), 0xc1);
}

#[test]
fn offsets_past_the_eight_registers_fault() {
    let mut uart = Uart16550::new();
    for offset in [8, 9, 0x10, 0x40, 0xff, UART_SIZE, u64::MAX] {
        assert_eq!(uart.read(offset, Width::Byte), Err(BusError), "{offset:#x}");
        assert_eq!(uart.write(offset, Width::Byte, 0x41), Err(BusError), "{offset:#x}");
    }
    assert_eq!(uart.read(8, Width::Double), Err(BusError));
    assert_eq!(uart.take_output(), None);
}

#[test]
fn misaligned_loads_are_split_like_qemu() {
    let mut uart = Uart16550::new();
    wr(&mut uart, MCR, MCR_LOOP | 0x03);
    assert!(uart.receive(b'r'));
    // A word at 1: the words at 0 (RBR, read and consumed) and 4 (MCR); bytes 1..5.
    assert_eq!(uart.read(1, Width::Word), Ok(0x1300_0000));
    assert_eq!(rd(&mut uart, LSR), 0x60);
    // A half at 5: the halves at 4 (MCR) and 6 (MSR, loopback: DSR and CTS); bytes 5..7.
    assert_eq!(uart.read(5, Width::Half), Ok(0x3000));
    // A double at 3: the double at 0 is read (RBR: DR clears), the one at 8 faults.
    assert!(uart.receive(b's'));
    assert_eq!(uart.read(3, Width::Double), Err(BusError));
    assert_eq!(rd(&mut uart, LSR), 0x60);
    // A half at 7: the half at 6 and the one at 8, which faults.
    assert_eq!(uart.read(7, Width::Half), Err(BusError));
}

#[test]
fn misaligned_stores_become_byte_stores() {
    let mut uart = Uart16550::new();
    // Bytes to 5 (LSR, ignored), 6 (MSR, ignored), 7 (SCR) and 8, which faults.
    assert_eq!(uart.write(5, Width::Word, 0x4433_2211), Err(BusError));
    assert_eq!(rd(&mut uart, SCR), 0x33);
    assert_eq!(rd(&mut uart, LSR), 0x60);
    // A half at 3: LCR then MCR.
    uart.write(3, Width::Half, 0x1203).unwrap();
    assert_eq!(rd(&mut uart, LCR), 0x03);
    assert_eq!(rd(&mut uart, MCR), 0x12);
}

#[test]
fn line_updates_follow_qemu() {
    let mut uart = Uart16550::new();
    assert_eq!(uart.take_line_update(), None);
    wr(&mut uart, IER, IER_RDI);
    assert_eq!(uart.take_line_update(), Some(false));
    assert!(uart.receive(b'a'));
    assert_eq!(uart.take_line_update(), Some(true));
    // Registers QEMU does not re-evaluate the line for.
    rd(&mut uart, SCR);
    rd(&mut uart, LSR);
    rd(&mut uart, IIR);
    wr(&mut uart, LCR, 0x03);
    wr(&mut uart, MCR, 0x0b);
    wr(&mut uart, IER, IER_RDI);
    assert_eq!(uart.take_line_update(), None);
    assert_eq!(rd(&mut uart, RBR), b'a');
    assert_eq!(uart.take_line_update(), Some(false));
    wr(&mut uart, THR, b'b');
    assert_eq!(uart.take_line_update(), Some(false));
    assert_eq!(uart.take_line_update(), None);
}
