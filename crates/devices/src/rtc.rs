//! The `virt` machine's real-time clock, a Goldfish RTC (`google,goldfish-rtc`), as QEMU
//! has it: nanoseconds since the Unix epoch in two 32-bit halves, an alarm and its
//! interrupt. Each guest gets its own, running from the host's clock: a guest that sets
//! its clock moves only its own offset.
//!
//! Registers (32-bit accesses only; others are refused):
//!
//! | offset | read | write |
//! |---|---|---|
//! | 0x00 `TIME_LOW` | the low half of the time, and latches the high half | replaces the low half of the time |
//! | 0x04 `TIME_HIGH` | the high half latched by the last `TIME_LOW` read | replaces the high half |
//! | 0x08 `ALARM_LOW` | the low half of the alarm | replaces it and arms the alarm |
//! | 0x0c `ALARM_HIGH` | the high half of the alarm | replaces it |
//! | 0x10 `IRQ_ENABLED` | whether the alarm interrupts | sets it |
//! | 0x14 `CLEAR_ALARM` | 0 | disarms the alarm |
//! | 0x18 `ALARM_STATUS` | whether the alarm is armed | - |
//! | 0x1c `CLEAR_INTERRUPT` | 0 | clears the pending interrupt |

use crate::{BusError, Mmio, Width};

/// The clock a guest's RTC runs from: nanoseconds since the Unix epoch.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

/// A Goldfish RTC.
#[derive(Clone, Debug)]
pub struct GoldfishRtc<C> {
    clock: C,
    /// Added to the clock: what the guest set its time to, less the clock then.
    offset: i64,
    alarm: u64,
    alarm_armed: bool,
    irq_enabled: bool,
    irq_pending: bool,
    /// The high half latched by the last `TIME_LOW` read.
    time_high: u32,
}

const TIME_LOW: u64 = 0x00;
const TIME_HIGH: u64 = 0x04;
const ALARM_LOW: u64 = 0x08;
const ALARM_HIGH: u64 = 0x0c;
const IRQ_ENABLED: u64 = 0x10;
const CLEAR_ALARM: u64 = 0x14;
const ALARM_STATUS: u64 = 0x18;
const CLEAR_INTERRUPT: u64 = 0x1c;

/// The register window.
pub const WINDOW: u64 = 0x1000;

impl<C: Clock> GoldfishRtc<C> {
    /// An RTC showing `clock`'s time.
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            offset: 0,
            alarm: 0,
            alarm_armed: false,
            irq_enabled: false,
            irq_pending: false,
            time_high: 0,
        }
    }

    /// The guest's time now, in nanoseconds since the epoch.
    pub fn time(&self) -> u64 {
        self.clock.now_ns().wrapping_add_signed(self.offset)
    }

    fn set_time(&mut self, t: u64) {
        self.offset = t.wrapping_sub(self.clock.now_ns()) as i64;
    }

    /// Fires the alarm if its time has come; whether the interrupt line is up.
    pub fn poll(&mut self) -> bool {
        if self.alarm_armed && self.time() >= self.alarm {
            self.alarm_armed = false;
            self.irq_pending = true;
        }
        self.irq()
    }

    /// The interrupt line.
    pub fn irq(&self) -> bool {
        self.irq_pending && self.irq_enabled
    }

    /// When the armed alarm fires, in the clock's nanoseconds (for the hart's timer).
    pub fn next_alarm(&self) -> Option<u64> {
        self.alarm_armed.then(|| self.alarm.wrapping_add_signed(-self.offset))
    }

    fn read32(&mut self, offset: u64) -> u32 {
        self.poll();
        match offset {
            TIME_LOW => {
                let t = self.time();
                self.time_high = (t >> 32) as u32;
                t as u32
            }
            TIME_HIGH => self.time_high,
            ALARM_LOW => self.alarm as u32,
            ALARM_HIGH => (self.alarm >> 32) as u32,
            IRQ_ENABLED => self.irq_enabled as u32,
            ALARM_STATUS => self.alarm_armed as u32,
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u64, v: u32) {
        let v = u64::from(v);
        match offset {
            TIME_LOW => {
                let t = self.time();
                self.set_time(t & !0xFFFF_FFFF | v);
            }
            TIME_HIGH => {
                let t = self.time();
                self.set_time(t & 0xFFFF_FFFF | v << 32);
            }
            ALARM_LOW => {
                self.alarm = self.alarm & !0xFFFF_FFFF | v;
                self.alarm_armed = true;
            }
            ALARM_HIGH => self.alarm = self.alarm & 0xFFFF_FFFF | v << 32,
            IRQ_ENABLED => self.irq_enabled = v & 1 != 0,
            CLEAR_ALARM => self.alarm_armed = false,
            CLEAR_INTERRUPT => self.irq_pending = false,
            _ => {}
        }
        self.poll();
    }
}

impl<C: Clock> Mmio for GoldfishRtc<C> {
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError> {
        if width != Width::Word || !offset.is_multiple_of(4) || offset >= WINDOW {
            return Err(BusError);
        }
        Ok(u64::from(self.read32(offset)))
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError> {
        if width != Width::Word || !offset.is_multiple_of(4) || offset >= WINDOW {
            return Err(BusError);
        }
        self.write32(offset, value as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Fake(Rc<Cell<u64>>);

    impl Clock for Fake {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
    }

    fn rtc(at: u64) -> (GoldfishRtc<Fake>, Rc<Cell<u64>>) {
        let now = Rc::new(Cell::new(at));
        (GoldfishRtc::new(Fake(now.clone())), now)
    }

    fn read(r: &mut GoldfishRtc<Fake>, offset: u64) -> u64 {
        r.read(offset, Width::Word).unwrap()
    }

    #[test]
    fn time_reads_in_halves() {
        let (mut r, now) = rtc(0x1234_5678_9abc_def0);
        assert_eq!(read(&mut r, TIME_LOW), 0x9abc_def0);
        now.set(0x1234_5679_0000_0000);
        assert_eq!(read(&mut r, TIME_HIGH), 0x1234_5678, "latched by the low read");
        assert_eq!(read(&mut r, TIME_LOW), 0);
        assert_eq!(read(&mut r, TIME_HIGH), 0x1234_5679);
    }

    #[test]
    fn setting_the_time_moves_only_this_clock() {
        let (mut r, now) = rtc(1_000);
        r.write(TIME_HIGH, Width::Word, 2).unwrap();
        r.write(TIME_LOW, Width::Word, 500).unwrap();
        assert_eq!(r.time(), 2 << 32 | 500);
        now.set(1_100);
        assert_eq!(r.time(), (2 << 32 | 500) + 100, "it keeps running");
    }

    #[test]
    fn the_alarm_interrupts_once_enabled() {
        let (mut r, now) = rtc(1_000);
        r.write(ALARM_HIGH, Width::Word, 0).unwrap();
        r.write(ALARM_LOW, Width::Word, 2_000).unwrap();
        assert_eq!(read(&mut r, ALARM_STATUS), 1);
        assert_eq!(r.next_alarm(), Some(2_000));
        assert!(!r.poll());
        now.set(2_000);
        assert!(!r.poll(), "not enabled");
        assert_eq!(read(&mut r, ALARM_STATUS), 0, "fired");
        r.write(IRQ_ENABLED, Width::Word, 1).unwrap();
        assert!(r.irq(), "pending, now enabled");
        r.write(CLEAR_INTERRUPT, Width::Word, 1).unwrap();
        assert!(!r.irq());
        r.write(ALARM_LOW, Width::Word, 3_000).unwrap();
        r.write(CLEAR_ALARM, Width::Word, 1).unwrap();
        now.set(5_000);
        assert!(!r.poll(), "disarmed");
    }

    #[test]
    fn only_word_accesses() {
        let (mut r, _) = rtc(0);
        assert_eq!(r.read(0, Width::Byte), Err(BusError));
        assert_eq!(r.read(0, Width::Double), Err(BusError));
        assert_eq!(r.read(2, Width::Word), Err(BusError));
        assert_eq!(r.write(0x20, Width::Word, 1), Ok(()));
        assert_eq!(read(&mut r, 0x20), 0);
    }
}
