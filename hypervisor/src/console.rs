//! hypocaust's console: the physical UART (a 16550 or a SiFive UART) or, without one, the
//! SBI console; the
//! `log` backend that writes to it; guests' output and input; the escape key that opens
//! the monitor (monitor.rs).
//!
//! Output never waits for the UART while a lock is held that others need: text goes into
//! a buffer ([`OUT_LIMIT`] bytes, the oldest dropped beyond it) under a short lock, and
//! whichever hart gets to [`drain`] first moves it to the UART as fast as the UART takes
//! it. When several guests run, each line is written whole and starts with the guest's
//! name.
//!
//! Input goes to the guest in focus. `Ctrl-]` ([`ESCAPE`]) followed by a digit moves the
//! focus to that guest; `Ctrl-]` twice sends one `Ctrl-]`; `Ctrl-]` followed by anything
//! else opens the monitor, which reads one command line (echoed) and runs it.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use spin::{Mutex, Once};

use crate::arch;

/// A 16550-compatible UART, polled.
pub struct Uart16550 {
    base: *mut u8,
    reg_shift: u32,
    reg_io_width: u32,
}

// SAFETY: the UART's registers are MMIO: any hart may access them. Output is written by
// one hart at a time (the drain lock), input read under the input lock.
unsafe impl Send for Uart16550 {}
// SAFETY: as above.
unsafe impl Sync for Uart16550 {}

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
    fn try_get(&self) -> Option<u8> {
        (self.read(LSR) & LSR_DR != 0).then(|| self.read(RBR))
    }

    /// Makes the UART raise its interrupt while received data waits.
    fn enable_rx_interrupt(&self) {
        self.write(IER, IER_RX);
    }

    /// Sends `byte` if the transmitter has room; `false` if not.
    fn try_put(&self, byte: u8) -> bool {
        if self.read(LSR) & LSR_THRE == 0 {
            return false;
        }
        self.write(THR, byte);
        true
    }
}

/// A SiFive UART (`sifive,uart0`), polled: 32-bit registers, `txdata` bit 31 says the
/// transmit FIFO is full, a read of `rxdata` takes a byte or has bit 31 set.
pub struct SifiveUart {
    base: *mut u32,
}

// SAFETY: as for `Uart16550`.
unsafe impl Send for SifiveUart {}
// SAFETY: as above.
unsafe impl Sync for SifiveUart {}

const SIFIVE_TXDATA: usize = 0;
const SIFIVE_RXDATA: usize = 1;
const SIFIVE_TXCTRL: usize = 2;
const SIFIVE_RXCTRL: usize = 3;
const SIFIVE_IE: usize = 4;
/// `txdata` full, `rxdata` empty.
const SIFIVE_FLAG: u32 = 1 << 31;
/// `txctrl.txen`, `rxctrl.rxen`.
const SIFIVE_ENABLE: u32 = 1;
const SIFIVE_IE_RXWM: u32 = 1 << 1;

impl SifiveUart {
    /// A UART whose registers are mapped at `base`; it turns the transmitter and receiver
    /// on (the firmware may have left them off), the receive watermark at 0.
    ///
    /// # Safety
    /// `base` must map the device's registers for as long as the value lives.
    pub unsafe fn new(base: *mut u8) -> Self {
        let uart = Self { base: base.cast() };
        uart.write(SIFIVE_TXCTRL, uart.read(SIFIVE_TXCTRL) | SIFIVE_ENABLE);
        uart.write(SIFIVE_RXCTRL, SIFIVE_ENABLE);
        uart
    }

    fn read(&self, reg: usize) -> u32 {
        // SAFETY: `base` maps the register block (contract of `new`); the registers are
        // 32 bits wide and take only 32-bit accesses.
        unsafe { self.base.add(reg).read_volatile() }
    }

    fn write(&self, reg: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { self.base.add(reg).write_volatile(value) }
    }
}

/// The physical console UART.
pub enum HostUart {
    Ns16550(Uart16550),
    Sifive(SifiveUart),
}

impl HostUart {
    /// A received byte, if one is waiting.
    fn try_get(&self) -> Option<u8> {
        match self {
            Self::Ns16550(u) => u.try_get(),
            Self::Sifive(u) => {
                let data = u.read(SIFIVE_RXDATA);
                (data & SIFIVE_FLAG == 0).then_some(data as u8)
            }
        }
    }

    /// Makes the UART raise its interrupt while received data waits.
    fn enable_rx_interrupt(&self) {
        match self {
            Self::Ns16550(u) => u.enable_rx_interrupt(),
            Self::Sifive(u) => u.write(SIFIVE_IE, SIFIVE_IE_RXWM),
        }
    }

    /// Sends `byte` if the transmitter has room; `false` if not.
    fn try_put(&self, byte: u8) -> bool {
        match self {
            Self::Ns16550(u) => u.try_put(byte),
            Self::Sifive(u) => {
                if u.read(SIFIVE_TXDATA) & SIFIVE_FLAG != 0 {
                    return false;
                }
                u.write(SIFIVE_TXDATA, u32::from(byte));
                true
            }
        }
    }
}

/// The physical UART, once known (else the SBI console is used).
static UART: Once<HostUart> = Once::new();

/// Bytes of output held for the UART at most; beyond, the oldest are dropped.
pub const OUT_LIMIT: usize = 256 * 1024;

/// Longest piece of a guest's line held back before it is written anyway.
const LINE_LIMIT: usize = 400;

/// Output: what waits for the UART, and how guests' lines are put together.
struct Output {
    buffer: VecDeque<u8>,
    /// Bytes dropped because the buffer was full.
    dropped: u64,
    /// Guests' names, when output is tagged with them (several guests run).
    tags: Vec<String>,
    /// Per guest: output held back until its line is complete (several guests only).
    pending: Vec<Vec<u8>>,
    /// The last line written is unfinished.
    line_open: bool,
    /// The guest that wrote last.
    last_writer: Option<usize>,
}

impl Output {
    fn push(&mut self, byte: u8) {
        if self.buffer.len() >= OUT_LIMIT {
            self.buffer.pop_front();
            self.dropped += 1;
        }
        self.buffer.push_back(byte);
    }

    /// Writes guest `index`'s held-back output, tagged with its name at a line start.
    fn emit(&mut self, index: usize) {
        let data = core::mem::take(&mut self.pending[index]);
        let continues = self.line_open && self.last_writer == Some(index);
        if self.line_open && !continues {
            self.push(b'\r');
            self.push(b'\n');
        }
        if !continues {
            let tag = core::mem::take(&mut self.tags[index]);
            let _ = write!(self, "[{tag}] ");
            self.tags[index] = tag;
        }
        for &b in &data {
            self.push(b);
        }
        self.line_open = data.last() != Some(&b'\n');
        self.last_writer = Some(index);
        self.pending[index] = data;
        self.pending[index].clear();
    }
}

impl Write for Output {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.push(b'\r');
            }
            self.push(b);
        }
        Ok(())
    }
}

static OUTPUT: Mutex<Output> = Mutex::new(Output {
    buffer: VecDeque::new(),
    dropped: 0,
    tags: Vec::new(),
    pending: Vec::new(),
    line_open: false,
    last_writer: None,
});

/// Held by the hart that moves output to the UART.
static DRAINING: Mutex<()> = Mutex::new(());

/// Output is waiting (a cheap check before [`drain`] takes any lock).
static OUT_WAITING: AtomicBool = AtomicBool::new(false);

/// What the console does with the next input byte.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InputMode {
    /// Bytes go to the guest in focus.
    Guest,
    /// The escape key came: the next byte says what to do.
    Escape,
    /// The monitor reads a command line.
    Monitor(String),
}

/// Input: per guest, what waits for it; and the escape state.
struct Input {
    queues: Vec<VecDeque<u8>>,
    mode: InputMode,
}

static INPUT: Mutex<Input> = Mutex::new(Input { queues: Vec::new(), mode: InputMode::Guest });

/// Most input bytes kept for a guest that does not read them.
const INPUT_LIMIT: usize = 4096;

/// The guest that console input goes to.
static FOCUS: AtomicUsize = AtomicUsize::new(0);

/// Whether some guest has input waiting (a cheap check).
static INPUT_WAITING: AtomicBool = AtomicBool::new(false);

/// The escape key: `Ctrl-]`.
pub const ESCAPE: u8 = 0x1d;

/// Switches the console to the physical UART.
pub fn use_uart(uart: HostUart) {
    UART.call_once(|| uart);
}

/// Prepares input queues and output tags for the guests `names`; tags are used when there
/// are several.
pub fn set_guests(names: &[&str]) {
    let mut out = OUTPUT.lock();
    out.tags =
        if names.len() > 1 { names.iter().map(|n| String::from(*n)).collect() } else { Vec::new() };
    out.pending = names.iter().map(|_| Vec::new()).collect();
    drop(out);
    INPUT.lock().queues = names.iter().map(|_| VecDeque::new()).collect();
}

/// Turns on the physical UART's receive interrupt (its source is routed by the caller).
pub fn enable_input_interrupt() {
    if let Some(uart) = UART.get() {
        uart.enable_rx_interrupt();
    }
}

/// The guest input goes to.
pub fn focus() -> usize {
    FOCUS.load(Ordering::Relaxed)
}

/// Moves the input to guest `index`.
pub fn set_focus(index: usize) {
    FOCUS.store(index, Ordering::Relaxed);
}

/// Writes what guest `index` sent to its console. When several guests run, each line
/// starts with the guest's name and is written whole (or when the guest waits).
pub fn guest_output(index: usize, bytes: &[u8]) {
    let mut out = OUTPUT.lock();
    OUT_WAITING.store(true, Ordering::Release);
    if out.tags.is_empty() {
        for &b in bytes {
            out.push(b);
        }
    } else {
        // Several guests: whole lines, so that theirs do not mix mid-line.
        for &b in bytes {
            let Some(line) = out.pending.get_mut(index) else { break };
            line.push(b);
            if b == b'\n' || line.len() >= LINE_LIMIT {
                out.emit(index);
            }
        }
    }
    drop(out);
    drain();
}

/// Writes out what guest `index` has of an unfinished line (it is about to wait, for
/// input or an interrupt: a prompt must show).
pub fn flush_guest(index: usize) {
    let mut out = OUTPUT.lock();
    if out.pending.get(index).is_some_and(|l| !l.is_empty()) {
        OUT_WAITING.store(true, Ordering::Release);
        out.emit(index);
        drop(out);
        drain();
    }
}

/// Moves waiting output to the UART as far as it takes it now, unless another hart is at
/// it. Never waits for the UART.
///
/// No output is left behind: writers set [`OUT_WAITING`] under the output lock, the
/// drainer clears it under the same lock when it finds the buffer empty, and looks again
/// after letting go of the drain lock (a writer that found it held relies on that).
pub fn drain() {
    while OUT_WAITING.load(Ordering::Acquire) {
        let Some(draining) = DRAINING.try_lock() else { return };
        let full = drain_locked();
        drop(draining);
        if full {
            // The UART takes no more now; whoever comes next goes on.
            return;
        }
    }
}

/// [`drain`] with the drain lock held; returns whether it stopped because the UART was full.
fn drain_locked() -> bool {
    loop {
        let mut chunk = [0u8; 64];
        let n = {
            let mut out = OUTPUT.lock();
            let n = out.buffer.len().min(chunk.len());
            for (i, b) in out.buffer.drain(..n).enumerate() {
                chunk[i] = b;
            }
            if n == 0 {
                OUT_WAITING.store(false, Ordering::Release);
            }
            n
        };
        if n == 0 {
            return false;
        }
        let written = write_now(&chunk[..n]);
        if written < n {
            // What the UART did not take goes back to the front.
            let mut out = OUTPUT.lock();
            for &b in chunk[written..n].iter().rev() {
                out.buffer.push_front(b);
            }
            return true;
        }
    }
}

/// Writes `bytes` to the console device as far as it takes them without waiting; returns
/// how many it took.
fn write_now(bytes: &[u8]) -> usize {
    match UART.get() {
        Some(uart) => bytes.iter().take_while(|&&b| uart.try_put(b)).count(),
        None => {
            for &b in bytes {
                #[allow(deprecated)]
                if sbi_rt::console_write_byte(b).is_err() {
                    sbi_rt::legacy::console_putchar(b as usize);
                }
            }
            bytes.len()
        }
    }
}

/// Writes everything waiting, waiting for the UART as needed (before power-off, and for
/// panics).
pub fn flush_all() {
    for _ in 0..10_000_000 {
        drain();
        if !OUT_WAITING.load(Ordering::Acquire) {
            return;
        }
        core::hint::spin_loop();
    }
}

/// A byte from the console device, if one waits.
fn get() -> Option<u8> {
    match UART.get() {
        Some(uart) => uart.try_get(),
        None => {
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

/// Moves bytes waiting in the console device into the focused guest's input queue,
/// handling the escape key and the monitor. Returns the guest that got input, if any.
pub fn pump_input() -> Option<usize> {
    let mut got = None;
    let mut commands: Vec<String> = Vec::new();
    {
        let mut input = INPUT.lock();
        let guests = input.queues.len();
        while let Some(b) = get() {
            match core::mem::replace(&mut input.mode, InputMode::Guest) {
                InputMode::Guest if b == ESCAPE => input.mode = InputMode::Escape,
                InputMode::Guest => {
                    push_input(&mut input.queues, b);
                    got = Some(focus());
                }
                InputMode::Escape if b == ESCAPE => {
                    push_input(&mut input.queues, ESCAPE);
                    got = Some(focus());
                }
                InputMode::Escape => match (b as char).to_digit(10).map(|d| d as usize) {
                    Some(index) if index < guests => {
                        set_focus(index);
                        print(format_args!("\r\nhypocaust: input goes to guest {index}\r\n"));
                    }
                    _ => {
                        print(format_args!(
                            "\r\nhypocaust monitor ('help' lists the commands, an empty line \
                             goes back)\r\nhypocaust> "
                        ));
                        input.mode = InputMode::Monitor(String::new());
                    }
                },
                InputMode::Monitor(mut line) => match b {
                    b'\r' | b'\n' => {
                        print(format_args!("\r\n"));
                        if line.trim().is_empty() {
                            print(format_args!("hypocaust: back to guest {}\r\n", focus()));
                        } else {
                            commands.push(line);
                            input.mode = InputMode::Monitor(String::new());
                        }
                    }
                    // Backspace and delete.
                    0x08 | 0x7f => {
                        if line.pop().is_some() {
                            print(format_args!("\x08 \x08"));
                        }
                        input.mode = InputMode::Monitor(line);
                    }
                    ESCAPE => print(format_args!("\r\nhypocaust: back to guest {}\r\n", focus())),
                    0x20..=0x7e if line.len() < 80 => {
                        line.push(b as char);
                        print(format_args!("{}", b as char));
                        input.mode = InputMode::Monitor(line);
                    }
                    _ => input.mode = InputMode::Monitor(line),
                },
            }
        }
    }
    // Commands run without the input lock: they print, and may act on guests.
    for line in commands {
        let leave = crate::monitor::execute(&line);
        let mut input = INPUT.lock();
        if leave {
            input.mode = InputMode::Guest;
            print(format_args!("hypocaust: back to guest {}\r\n", focus()));
        } else if matches!(input.mode, InputMode::Monitor(_)) {
            print(format_args!("hypocaust> "));
        }
    }
    got
}

fn push_input(queues: &mut [VecDeque<u8>], b: u8) {
    if let Some(q) = queues.get_mut(focus())
        && q.len() < INPUT_LIMIT
    {
        q.push_back(b);
        INPUT_WAITING.store(true, Ordering::Release);
    }
}

/// Takes up to `buf.len()` bytes of guest `index`'s input, without blocking.
pub fn read_input(index: usize, buf: &mut [u8]) -> usize {
    pump_input();
    take_input(index, buf.len(), |i, b| buf[i] = b)
}

/// Hands up to `max` input bytes of guest `index` to `put` (index, byte); returns the count.
pub fn take_input(index: usize, max: usize, mut put: impl FnMut(usize, u8)) -> usize {
    if !INPUT_WAITING.load(Ordering::Acquire) {
        return 0;
    }
    let mut input = INPUT.lock();
    let Some(q) = input.queues.get_mut(index) else { return 0 };
    let mut n = 0;
    while n < max {
        let Some(b) = q.pop_front() else { break };
        put(n, b);
        n += 1;
    }
    if input.queues.iter().all(VecDeque::is_empty) {
        INPUT_WAITING.store(false, Ordering::Release);
    }
    n
}

/// Writes formatted text to the console.
pub fn print(args: fmt::Arguments) {
    let mut out = OUTPUT.lock();
    OUT_WAITING.store(true, Ordering::Release);
    let _ = out.write_fmt(args);
    drop(out);
    drain();
}

/// Writes to the console even if another hart died holding its locks (for panics).
pub fn print_emergency(args: fmt::Arguments) {
    // Give a healthy holder time to finish before barging in.
    for _ in 0..1_000_000 {
        if let Some(mut out) = OUTPUT.try_lock() {
            OUT_WAITING.store(true, Ordering::Release);
            let _ = out.write_fmt(args);
            drop(out);
            flush_all();
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the lock holder is presumed dead (it kept the lock for a million spins); a
    // torn line is better than no panic message.
    unsafe {
        OUTPUT.force_unlock();
        DRAINING.force_unlock();
    }
    let mut out = OUTPUT.lock();
    OUT_WAITING.store(true, Ordering::Release);
    let _ = out.write_fmt(args);
    drop(out);
    flush_all();
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

/// Bytes of output dropped so far because the UART could not keep up.
pub fn dropped() -> u64 {
    OUTPUT.lock().dropped
}
