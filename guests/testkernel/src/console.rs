//! Output through the SBI console: DBCN when the firmware has it, else the legacy call.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

static USE_DBCN: AtomicBool = AtomicBool::new(false);

/// Picks the console call once at boot.
pub fn init() {
    let dbcn = sbi_rt::probe_extension(sbi_rt::Console).is_available();
    USE_DBCN.store(dbcn, Ordering::Relaxed);
}

struct SbiConsole;

impl Write for SbiConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    if USE_DBCN.load(Ordering::Relaxed) {
        let _ = sbi_rt::console_write_byte(b);
    } else {
        #[allow(deprecated)]
        sbi_rt::legacy::console_putchar(b as usize);
    }
}

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Writes formatted text.
pub fn print(args: fmt::Arguments) {
    let _guard = LOCK.lock();
    let _ = SbiConsole.write_fmt(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
