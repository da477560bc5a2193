//! The few devices the firmware drives, found in the device tree: the CLINT (machine
//! software interrupts between harts, machine timers), the console UART (16550) and the
//! power-off/reboot register.

use platform::{Clint, SysconWrite, Uart};

/// Volatile MMIO at physical address `addr` (the firmware runs untranslated).
fn write32(addr: u64, v: u32) {
    // SAFETY: callers pass registers of devices the device tree names, which M-mode can
    // always reach.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

fn write64(addr: u64, v: u64) {
    // SAFETY: as in `write32`.
    unsafe { (addr as *mut u64).write_volatile(v) }
}

/// The CLINT.
pub struct Cores(pub Clint);

impl Cores {
    fn base(&self) -> u64 {
        self.0.region.start.raw()
    }

    /// Raises (or clears) hart `hart`'s machine software interrupt.
    pub fn set_msip(&self, hart: usize, on: bool) {
        if let Some(off) = self.0.msip(hart) {
            write32(self.base() + off, on as u32);
        }
    }

    /// Sets hart `hart`'s machine timer compare register.
    pub fn set_mtimecmp(&self, hart: usize, deadline: u64) {
        if let Some(off) = self.0.mtimecmp(hart) {
            write64(self.base() + off, deadline);
        }
    }
}

/// A 16550 UART, polled.
pub struct Console {
    base: u64,
    shift: u32,
}

const THR_RBR: u64 = 0;
const LSR: u64 = 5;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

impl Console {
    pub fn new(uart: &Uart) -> Self {
        Self { base: uart.region.start.raw(), shift: uart.reg_shift }
    }

    fn reg(&self, r: u64) -> *mut u8 {
        (self.base + (r << self.shift)) as *mut u8
    }

    pub fn put(&self, byte: u8) {
        // SAFETY: registers of the UART the device tree names (byte access suits every
        // 16550 on the boards this runs on).
        unsafe {
            while self.reg(LSR).read_volatile() & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            self.reg(THR_RBR).write_volatile(byte);
        }
    }

    pub fn get(&self) -> Option<u8> {
        // SAFETY: as in `put`.
        unsafe {
            (self.reg(LSR).read_volatile() & LSR_DATA_READY != 0)
                .then(|| self.reg(THR_RBR).read_volatile())
        }
    }
}

impl core::fmt::Write for &Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

/// Powers off or resets the machine through `syscon`; returns only if nothing happened.
pub fn syscon_write(syscon: SysconWrite) {
    write32(syscon.address.raw(), syscon.value);
}
