//! A hypocaust panic is a hypocaust bug: report it and power the machine off.

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let hart = crate::hart::current_hart_id();
    crate::console::print_emergency(format_args!("hypocaust: PANIC on hart {hart}: {info}\n"));
    crate::firmware::shutdown(true)
}
