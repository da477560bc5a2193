//! hypocaust's console: the physical UART (16550) or, without one, the SBI console; and
//! the `log` backend that writes to it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::arch;

/// A 16550-compatible UART, polled.
pub struct Uart16550 {
    base: *mut u8,
    reg_shift: u32,
    reg_io_width: u32,
}

// SAFETY: the UART's registers are only touched with the console lock held.
unsafe impl Send for Uart16550 {}

const THR: usize = 0;
const RBR: usize = 0;
const LSR: usize = 5;
const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;

impl Uart16550 {
    /// A UART whose registers are mapped at `base`.
    ///
    /// # Safety
    /// `base` must map the device's registers for as long as the value lives.
    pub const unsafe fn new(base: *mut u8, reg_shift: u32, reg_io_width: u32) -> Self {
        Self { base, reg_shift, reg_io_width }
    }

    fn read(&self, reg: usize) -> u8 {
        let offset = reg << self.reg_shift;
        // SAFETY: `base` maps the register block (contract of `new`); accesses use the
        // width the device tree asks for.
        unsafe {
            if self.reg_io_width == 4 {
                self.base.add(offset).cast::<u32>().read_volatile() as u8
            } else {
                self.base.add(offset).read_volatile()
            }
        }
    }

    fn write(&self, reg: usize, value: u8) {
        let offset = reg << self.reg_shift;
        // SAFETY: as in `read`.
        unsafe {
            if self.reg_io_width == 4 {
                self.base.add(offset).cast::<u32>().write_volatile(value as u32)
            } else {
                self.base.add(offset).write_volatile(value)
            }
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&self) -> Option<u8> {
        (self.read(LSR) & LSR_DR != 0).then(|| self.read(RBR))
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn put(&self, byte: u8) {
        while self.read(LSR) & LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        self.write(THR, byte);
    }
}

enum Backend {
    /// SBI debug console or legacy `console_putchar`, until a UART is known.
    Sbi,
    Uart(Uart16550),
}

struct Console {
    backend: Backend,
}

impl Console {
    fn put(&self, byte: u8) {
        match &self.backend {
            Backend::Uart(uart) => uart.put(byte),
            Backend::Sbi =>
            {
                #[allow(deprecated)]
                if sbi_rt::console_write_byte(byte).is_err() {
                    sbi_rt::legacy::console_putchar(byte as usize);
                }
            }
        }
    }
}

impl Console {
    fn get(&self) -> Option<u8> {
        match &self.backend {
            Backend::Uart(uart) => uart.try_get(),
            Backend::Sbi => {
                let mut b = [0u8; 1];
                let ret = sbi_rt::console_read(sbi_rt::Physical::new(1, &raw mut b as usize, 0));
                match ret.into_result() {
                    Ok(1) => Some(b[0]),
                    Ok(_) => None,
                    Err(_) => {
                        #[allow(deprecated)]
                        let c = sbi_rt::legacy::console_getchar();
                        (c != usize::MAX).then_some(c as u8)
                    }
                }
            }
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console { backend: Backend::Sbi });

/// Switches the console to the physical UART.
pub fn use_uart(uart: Uart16550) {
    CONSOLE.lock().backend = Backend::Uart(uart);
}

/// Writes what a guest sent to its console, byte for byte.
pub fn guest_output(_guest: &crate::guest::Guest, bytes: &[u8]) {
    let console = CONSOLE.lock();
    for &b in bytes {
        console.put(b);
    }
}

/// Reads console input that is waiting, without blocking; returns the count.
pub fn read_input(buf: &mut [u8]) -> usize {
    let console = CONSOLE.lock();
    let mut n = 0;
    while n < buf.len() {
        match console.get() {
            Some(b) => {
                buf[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Writes formatted text to the console.
pub fn print(args: fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Writes to the console even if another hart died holding its lock (for panics).
pub fn print_emergency(args: fmt::Arguments) {
    // Give a healthy holder time to finish its line before barging in.
    for _ in 0..1_000_000 {
        if let Some(mut console) = CONSOLE.try_lock() {
            let _ = console.write_fmt(args);
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the lock holder is presumed dead (it kept the lock for a million spins); a
    // torn line is better than no panic message.
    unsafe { CONSOLE.force_unlock() };
    let _ = CONSOLE.lock().write_fmt(args);
}

/// `print!` to hypocaust's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to hypocaust's console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Ticks of the `time` CSR per second, for log timestamps (0 until known).
static TIMEBASE_HZ: AtomicU64 = AtomicU64::new(0);
/// `time` at boot.
static BOOT_TIME: AtomicU64 = AtomicU64::new(0);

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let hz = TIMEBASE_HZ.load(Ordering::Relaxed).max(1);
        let ticks = arch::time().wrapping_sub(BOOT_TIME.load(Ordering::Relaxed));
        let micros = ticks % hz * 1_000_000 / hz;
        let hart = crate::hart::current_hart_id();
        print(format_args!(
            "[{:>5}.{:06}] hart{} {:<5} {}\n",
            ticks / hz,
            micros,
            hart,
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger at `level`.
pub fn init_logging(level: LevelFilter) {
    BOOT_TIME.store(arch::time(), Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Tells the logger the timebase, for its timestamps.
pub fn set_timebase(hz: u64) {
    TIMEBASE_HZ.store(hz, Ordering::Relaxed);
}
