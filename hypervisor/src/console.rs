//! hypocaust's console: the physical UART (16550) or, without one, the SBI console; and
//! the `log` backend that writes to it.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
const IER: usize = 1;
const IER_RX: u8 = 1 << 0;
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

    /// Makes the UART raise its interrupt while received data waits.
    pub fn enable_rx_interrupt(&self) {
        self.write(IER, IER_RX);
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
    /// Guests' names, when output is tagged with them (several guests run).
    tags: Vec<String>,
    /// Per guest: output held back until its line is complete (several guests only).
    pending: Vec<Vec<u8>>,
    /// The last line written is unfinished.
    line_open: bool,
    /// The last byte written was the first of the focus escape.
    escape: bool,
    /// The guest that wrote last.
    last_writer: Option<usize>,
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

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    backend: Backend::Sbi,
    tags: Vec::new(),
    pending: Vec::new(),
    line_open: false,
    escape: false,
    last_writer: None,
});

/// Input waiting for each guest.
static INPUT: Mutex<Vec<VecDeque<u8>>> = Mutex::new(Vec::new());

/// Most input bytes kept for a guest that does not read them.
const INPUT_LIMIT: usize = 4096;

/// The guest that console input goes to.
static FOCUS: AtomicUsize = AtomicUsize::new(0);

/// Whether some guest has input waiting (a cheap check for the run loop).
static INPUT_WAITING: AtomicBool = AtomicBool::new(false);

/// The byte that, followed by a digit, moves input to another guest: Ctrl-].
pub const FOCUS_ESCAPE: u8 = 0x1d;

/// Switches the console to the physical UART.
pub fn use_uart(uart: Uart16550) {
    CONSOLE.lock().backend = Backend::Uart(uart);
}

/// Prepares input queues and output tags for `names.len()` guests; tags are used when
/// there are several.
pub fn set_guests(names: &[&str]) {
    let mut console = CONSOLE.lock();
    console.tags =
        if names.len() > 1 { names.iter().map(|n| String::from(*n)).collect() } else { Vec::new() };
    console.pending = names.iter().map(|_| Vec::new()).collect();
    *INPUT.lock() = names.iter().map(|_| VecDeque::new()).collect();
}

/// Turns on the physical UART's receive interrupt (its source is routed by the caller).
pub fn enable_input_interrupt() {
    if let Backend::Uart(uart) = &CONSOLE.lock().backend {
        uart.enable_rx_interrupt();
    }
}

/// Writes what guest `index` sent to its console. When several guests run, each line
/// starts with the guest's name and is written whole (or when the guest waits).
pub fn guest_output(index: usize, bytes: &[u8]) {
    let mut console = CONSOLE.lock();
    if console.tags.is_empty() {
        for &b in bytes {
            console.put(b);
        }
        return;
    }
    // Several guests: whole lines, so that theirs do not mix mid-line.
    for &b in bytes {
        let Some(line) = console.pending.get_mut(index) else { return };
        line.push(b);
        if b == b'\n' || line.len() >= LINE_LIMIT {
            console.emit(index);
        }
    }
}

/// Writes out what guest `index` has of an unfinished line (it is about to wait, for
/// input or an interrupt: a prompt must show).
pub fn flush_guest(index: usize) {
    let mut console = CONSOLE.lock();
    if console.pending.get(index).is_some_and(|l| !l.is_empty()) {
        console.emit(index);
    }
}

/// Longest piece of a line held back before it is written anyway.
const LINE_LIMIT: usize = 160;

impl Console {
    /// Writes guest `index`'s held-back output, tagged with its name at a line start.
    fn emit(&mut self, index: usize) {
        let data = core::mem::take(&mut self.pending[index]);
        let continues = self.line_open && self.last_writer == Some(index);
        if self.line_open && !continues {
            self.put(b'\r');
            self.put(b'\n');
        }
        if !continues {
            let tag = self.tags[index].clone();
            let _ = write!(self, "[{tag}] ");
        }
        for &b in &data {
            self.put(b);
        }
        self.line_open = data.last() != Some(&b'\n');
        self.last_writer = Some(index);
        self.pending[index] = data;
        self.pending[index].clear();
    }
}

/// Moves bytes waiting in the physical UART into the focused guest's input queue,
/// handling the focus escape. Returns the guest that got input, if any.
pub fn pump_input() -> Option<usize> {
    let mut console = CONSOLE.lock();
    let mut input = INPUT.lock();
    let mut got = None;
    while let Some(b) = console.get() {
        if console.escape {
            console.escape = false;
            if let Some(index) = (b as char).to_digit(10).map(|d| d as usize)
                && index < input.len()
            {
                FOCUS.store(index, Ordering::Relaxed);
                let _ = write!(console, "\r\nhypocaust: input goes to guest {index}\r\n");
                continue;
            }
            if b != FOCUS_ESCAPE {
                // Not an escape after all: the guest gets both bytes.
                push_input(&mut input, FOCUS_ESCAPE);
            }
        } else if b == FOCUS_ESCAPE && input.len() > 1 {
            console.escape = true;
            continue;
        }
        push_input(&mut input, b);
        got = Some(FOCUS.load(Ordering::Relaxed));
    }
    got
}

fn push_input(input: &mut [VecDeque<u8>], b: u8) {
    if let Some(q) = input.get_mut(FOCUS.load(Ordering::Relaxed))
        && q.len() < INPUT_LIMIT
    {
        q.push_back(b);
        INPUT_WAITING.store(true, Ordering::Release);
    }
}

/// Whether any guest may have input waiting.
pub fn input_waiting() -> bool {
    INPUT_WAITING.load(Ordering::Acquire)
}

/// Takes up to `buf.len()` bytes of guest `index`'s input, without blocking.
pub fn read_input(index: usize, buf: &mut [u8]) -> usize {
    pump_input();
    take_input(index, buf.len(), |i, b| buf[i] = b)
}

/// Hands up to `max` input bytes of guest `index` to `put` (index, byte); returns the count.
pub fn take_input(index: usize, max: usize, mut put: impl FnMut(usize, u8)) -> usize {
    let mut input = INPUT.lock();
    let Some(q) = input.get_mut(index) else { return 0 };
    let mut n = 0;
    while n < max {
        let Some(b) = q.pop_front() else { break };
        put(n, b);
        n += 1;
    }
    if input.iter().all(VecDeque::is_empty) {
        INPUT_WAITING.store(false, Ordering::Release);
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
