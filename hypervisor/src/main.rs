//! hypocaust: a RISC-V hypervisor without the H extension.
//!
//! This binary is the glue: boot, memory and hart bring-up, the trap vector. The logic it
//! drives lives in the `rv`, `mmu`, `vcpu`, `devices` and `platform` crates.
//!
//! Boot flow (docs/boot.md): firmware enters `_start` (arch/entry.S) with paging off; the
//! assembly turns on an early Sv48 table and calls [`rust_boot`] in the direct map, which
//! reads the device tree, sets up memory and hypocaust's own page table, moves to the boot
//! hart's mapped stack and continues in [`boot_main`]: secondary harts are started, the
//! platform summary is printed, the guests are set up (hypervisor.rs), and every hart
//! runs its scheduler (schedule.rs).
#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod console;

mod arch;
mod board;
mod clock;
mod fast;
mod firmware;
mod guest;
mod hart;
mod hypervisor;
mod irq;
mod layout;
mod memory;
mod mm;
mod monitor;
mod paging;
mod panic;
mod run;
mod schedule;
mod summary;
mod timer;
mod trap;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use log::LevelFilter;
use platform::{PhysRange, Platform, UartKind};
use rv::HostPhysAddr;
use spin::Once;

use crate::console::{HostUart, SifiveUart, Uart16550};
use crate::firmware::SbiInfo;
use crate::layout::phys_to_virt;

/// hypocaust's version, as Cargo knows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The platform, as read from the device tree at boot.
static PLATFORM: Once<Platform> = Once::new();

/// Ticks of the `time` CSR per second.
pub fn timebase_hz() -> u64 {
    PLATFORM.get().map_or(10_000_000, |p| p.timebase_hz)
}

/// Everything the boot hart carries across the stack switch.
struct BootState {
    hartid: usize,
    sbi: SbiInfo,
    memory: mm::MemoryReport,
    /// Hart IDs to run on, boot hart first.
    harts: Vec<usize>,
}

/// Prints the one line that says why hypocaust cannot run here, and powers off.
fn refuse(reason: fmt::Arguments) -> ! {
    println!("hypocaust: cannot run on this platform: {reason}");
    firmware::shutdown(true)
}

/// Reads the size field of a flattened device tree header.
fn dtb_size(pa: HostPhysAddr) -> Option<usize> {
    if pa.raw() == 0 || !pa.is_aligned(8) {
        return None;
    }
    let header = phys_to_virt(pa).raw() as *const u32;
    // SAFETY: the early page table maps 512 GiB of physical space in the direct map and
    // firmware passed the device tree address in a1; only the 8-byte header is read here.
    let (magic, size) = unsafe { (header.read_volatile(), header.add(1).read_volatile()) };
    (u32::from_be(magic) == 0xd00d_feed).then_some(u32::from_be(size) as usize)
}

/// The value of `hypocaust.KEY=VALUE` in the boot arguments.
fn boot_arg<'a>(bootargs: Option<&'a str>, key: &str) -> Option<&'a str> {
    bootargs
        .into_iter()
        .flat_map(|a| a.split_whitespace())
        .filter_map(|arg| arg.strip_prefix("hypocaust."))
        .find_map(|arg| arg.strip_prefix(key)?.strip_prefix('='))
}

/// Chooses the log level from `hypocaust.log=LEVEL` in the boot arguments.
fn log_level(bootargs: Option<&str>) -> LevelFilter {
    boot_arg(bootargs, "log").and_then(|level| level.parse().ok()).unwrap_or(LevelFilter::Info)
}

/// Rust entry of the boot hart, on the early page table and the boot stack.
pub extern "C" fn rust_boot(hartid: usize, dtb_pa: usize, satp_mode: u64) -> ! {
    layout::set_mode(satp_mode);
    hart::set_boot_hart(hartid);
    arch::trap::install();
    mm::init_boot_heap();
    console::init_logging(LevelFilter::Info);

    let dtb_pa = HostPhysAddr::new(dtb_pa as u64);
    let Some(size) = dtb_size(dtb_pa) else {
        refuse(format_args!("no valid device tree at {dtb_pa} (a1 from firmware)"));
    };
    // SAFETY: the header said the blob is `size` bytes long; it stays in place (its pages
    // are kept out of the frame allocator by `mm::init`).
    let blob =
        unsafe { core::slice::from_raw_parts(phys_to_virt(dtb_pa).raw() as *const u8, size) };
    let platform = match Platform::from_dtb(blob) {
        Ok(p) => PLATFORM.call_once(|| p),
        Err(e) => refuse(format_args!("{e}")),
    };
    if let Some(uart) = &platform.uart {
        let base = phys_to_virt(uart.region.start).raw() as *mut u8;
        // SAFETY: the direct map covers the UART's registers, now and in the kernel table.
        console::use_uart(unsafe {
            match uart.kind {
                UartKind::Ns16550 => {
                    HostUart::Ns16550(Uart16550::new(base, uart.reg_shift, uart.reg_io_width))
                }
                UartKind::Sifive => HostUart::Sifive(SifiveUart::new(base)),
            }
        });
    }
    console::set_timebase(platform.timebase_hz);
    log::set_max_level(log_level(platform.bootargs.as_deref()));

    // The assembly found the widest mode the hart takes (satp is WARL); the device tree
    // may claim more (QEMU's sifive_u does), but not less.
    let host = layout::mode();
    match platform.hart(hartid).and_then(|h| h.mmu) {
        Some(mode) if mode >= host.satp_mode() => {}
        Some(mode) => refuse(format_args!(
            "the boot hart's MMU is {} only (device tree mmu-type), yet its satp took {}: \
             a device tree that contradicts its hart",
            mode.dt_name(),
            host.satp_mode().name()
        )),
        None => refuse(format_args!("the device tree gives the boot hart (hart {hartid}) no MMU")),
    }
    if let Some(bank) = platform.memory.iter().find(|b| b.end.raw() > host.direct_map_limit()) {
        refuse(format_args!(
            "RAM up to {:#x}: in {} hypocaust's direct map reaches {:#x}",
            bank.end.raw(),
            host.satp_mode().name(),
            host.direct_map_limit()
        ));
    }

    let sbi = SbiInfo::probe();
    if sbi.spec < (0, 2) {
        refuse(format_args!(
            "the SBI firmware implements SBI v{}.{}; hypocaust needs SBI v0.2 or later",
            sbi.spec.0, sbi.spec.1
        ));
    }
    let dtb = PhysRange { start: dtb_pa, end: HostPhysAddr::new(dtb_pa.raw() + size as u64) };
    let memory = match mm::init(platform, dtb) {
        Ok(report) => report,
        Err(mm::MemoryError::TooLittleRam { free }) => refuse(format_args!(
            "only {} MiB of RAM is free; hypocaust needs at least {} MiB",
            free >> 20,
            mm::MIN_RAM >> 20
        )),
        Err(e) => refuse(format_args!("cannot set up memory: {e}")),
    };

    let mut harts = Vec::from([hartid]);
    if sbi.has("hsm") {
        for h in platform.usable_harts().filter(|h| h.id != hartid) {
            match h.mmu {
                Some(mode) if mode >= host.satp_mode() => harts.push(h.id),
                _ => log::warn!("hart {} has no {} MMU: not used", h.id, host.satp_mode().name()),
            }
        }
    } else {
        log::warn!("the firmware has no SBI HSM extension: running on the boot hart only");
    }
    let satp = match mm::build_kernel_page_table(platform, harts.len()) {
        Ok(satp) => satp,
        Err(e) => refuse(format_args!("cannot build hypocaust's page table: {e}")),
    };
    // SAFETY: the kernel table maps the image, the direct map of RAM and the devices just
    // as the early table does for everything touched from here on.
    unsafe { arch::switch_page_table(satp) };

    let state = Box::leak(Box::new(BootState { hartid, sbi, memory, harts }));
    // SAFETY: stack 0 was mapped by `build_kernel_page_table` and is unused.
    unsafe { arch::run_on_stack(layout::stack_top(0), boot_main, state as *mut BootState as usize) }
}

/// The boot hart, on its own stack: start the other harts, report, set up the guests,
/// schedule.
extern "C" fn boot_main(state: usize) -> ! {
    // SAFETY: `rust_boot` passed a leaked `BootState`.
    let state = unsafe { &*(state as *const BootState) };
    hart::enter_boot_hart(state.hartid);
    let platform = PLATFORM.get().expect("set by rust_boot");

    for (index, &id) in state.harts.iter().enumerate().skip(1) {
        if let Err(e) = hart::start(id, index) {
            log::warn!("hart {id} did not start: {e}");
        }
    }
    let deadline = arch::time() + platform.timebase_hz; // one second
    while hart::online() < state.harts.len() && arch::time() < deadline {
        core::hint::spin_loop();
    }
    // Harts that did not come up get no vCPUs.
    let online = hart::online().min(state.harts.len());
    hart::set_harts(&state.harts[..online]);

    let slice_ms = boot_arg(platform.bootargs.as_deref(), "slice_ms")
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms > 0)
        .unwrap_or(schedule::DEFAULT_SLICE_MS);
    schedule::set_slice(slice_ms, platform.timebase_hz);
    summary::print(platform, state);
    println!("timer     {}", timer::init());
    let guest_mode = layout::mode().guest_mode().name();
    println!("asids     {} (guests: {guest_mode} on shadow tables)", paging::probe_asids());
    let svvptc =
        !platform.harts.is_empty() && platform.harts.iter().all(|h| h.isa.has_extension("svvptc"));
    paging::set_svvptc(svvptc);
    let epoch = clock::init(platform);
    println!("clock     {epoch} s since the epoch (guests' RTCs run from it)");
    println!("schedule  {slice_ms} ms slices where vCPUs share a hart");

    irq::init(platform, &state.harts[..online]);
    let count = hypervisor::create(platform, state.hartid, online);
    if count == 0 {
        if mm::bundle().is_none() {
            println!("hypocaust: no guests configured; powering off");
            firmware::shutdown(false)
        }
        println!("hypocaust: no guest can run; powering off");
        firmware::shutdown(true)
    }
    let names: Vec<&str> = hypervisor::guests().iter().map(|g| g.name.as_str()).collect();
    console::set_guests(&names);
    // Console input comes by interrupt to the boot hart, which hands it to the guest in
    // focus (Ctrl-] and a digit move the focus; Ctrl-] and another key open the monitor).
    if let Some(irq) = platform.uart.as_ref().and_then(|u| u.irq)
        && platform.plic.is_some()
    {
        irq::route_console(irq, state.hartid);
        console::enable_input_interrupt();
    }
    // Wake the other harts: the guests are ready.
    for index in 1..online {
        firmware::kick(hart::id_of(index));
    }
    schedule::run(0)
}
