//! hypocaust: a RISC-V hypervisor without the H extension.
//!
//! This binary is the glue: boot, memory and hart bring-up, the trap vector. The logic it
//! drives lives in the `rv`, `mmu`, `vcpu`, `devices` and `platform` crates.
//!
//! Boot flow (docs/boot.md): firmware enters `_start` (arch/entry.S) with paging off; the
//! assembly turns on an early Sv48 table and calls [`rust_boot`] in the direct map, which
//! reads the device tree, sets up memory and hypocaust's own page table, moves to the boot
//! hart's mapped stack and continues in [`boot_main`]: secondary harts are started, the
//! platform summary is printed, and the configured guests run.
#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod console;

mod arch;
mod board;
mod guest;
mod hart;
mod irq;
mod layout;
mod memory;
mod mm;
mod paging;
mod panic;
mod run;
mod sbi;
mod summary;
mod timer;
mod trap;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use log::LevelFilter;
use platform::{PhysRange, Platform};
use rv::HostPhysAddr;
use rv::csr::SatpMode;
use spin::Once;

use crate::console::Uart16550;
use crate::layout::phys_to_virt;
use crate::sbi::SbiInfo;

/// hypocaust's version, as Cargo knows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The platform, as read from the device tree at boot.
static PLATFORM: Once<Platform> = Once::new();

/// The guests, once created; `None` where a guest could not be set up.
static GUESTS: Once<Vec<guest::Guest>> = Once::new();

/// Guests still running; the hart that ends the last one powers the machine off.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Hart IDs by hart index (index i runs guest i).
static HART_IDS: Once<Vec<usize>> = Once::new();

/// The physical machine's identity, for guests' SBI BASE calls.
static MACHINE_IDS: Once<vcpu::MachineIds> = Once::new();

/// The physical machine's identity as firmware reports it.
pub fn machine_ids() -> vcpu::MachineIds {
    MACHINE_IDS.get().copied().unwrap_or_default()
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
    sbi::shutdown(true)
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

/// Chooses the log level from `hypocaust.log=LEVEL` in the boot arguments.
fn log_level(bootargs: Option<&str>) -> LevelFilter {
    bootargs
        .into_iter()
        .flat_map(|a| a.split_whitespace())
        .find_map(|arg| arg.strip_prefix("hypocaust.log="))
        .and_then(|level| level.parse().ok())
        .unwrap_or(LevelFilter::Info)
}

/// Rust entry of the boot hart, on the early page table and the boot stack.
pub extern "C" fn rust_boot(hartid: usize, dtb_pa: usize) -> ! {
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
        console::use_uart(unsafe { Uart16550::new(base, uart.reg_shift, uart.reg_io_width) });
    }
    console::set_timebase(platform.timebase_hz);
    log::set_max_level(log_level(platform.bootargs.as_deref()));

    // The assembly proved the hart takes Sv48; the device tree must not say otherwise.
    match platform.hart(hartid).and_then(|h| h.mmu) {
        Some(mode) if mode >= SatpMode::Sv48 => {}
        Some(mode) => refuse(format_args!(
            "the boot hart's MMU is {} only (device tree mmu-type); hypocaust needs Sv48 or Sv57 \
             (Sv39-only hosts are not supported yet)",
            mode.dt_name()
        )),
        None => refuse(format_args!("the device tree gives the boot hart (hart {hartid}) no MMU")),
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
                Some(mode) if mode >= SatpMode::Sv48 => harts.push(h.id),
                _ => log::warn!("hart {} has no Sv48 MMU: not used", h.id),
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

/// The boot hart, on its own stack: start the other harts, report, run guests.
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

    summary::print(platform, state);
    println!("timer     {}", timer::init());
    println!("asids     {} (guests: Sv39 on shadow tables)", paging::probe_asids());
    MACHINE_IDS.call_once(|| vcpu::MachineIds {
        mvendorid: sbi_rt::get_mvendorid() as u64,
        marchid: sbi_rt::get_marchid() as u64,
        mimpid: sbi_rt::get_mimpid() as u64,
    });

    let guests = create_guests(platform, state);
    let runnable = guests.len().min(state.harts.len());
    if runnable == 0 {
        println!("hypocaust: no guests configured; powering off");
        sbi::shutdown(false)
    }
    for g in &guests[runnable..] {
        println!(
            "hypocaust: guest '{}' not started: one hart per guest, and all {} are taken",
            g.name,
            state.harts.len()
        );
    }
    HART_IDS.call_once(|| state.harts.clone());
    irq::init(platform, &state.harts);
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    console::set_guests(&names);
    // Console input comes by interrupt to the boot hart, which hands it to the guest in
    // focus (Ctrl-] and a digit move the focus).
    if let Some(irq) = platform.uart.as_ref().and_then(|u| u.irq)
        && platform.plic.is_some()
    {
        irq::route_console(irq, state.hartid);
        console::enable_input_interrupt();
    }
    RUNNING.store(runnable, Ordering::Release);
    GUESTS.call_once(|| guests);
    // Wake the other harts: hart index i runs guest i.
    for &id in state.harts.iter().skip(1).take(runnable - 1) {
        let _ = sbi_rt::send_ipi(sbi_rt::HartMask::from_mask_base(1, id));
    }
    run_guest(0)
}

/// Reads the guest bundle the boot loader placed as the initrd, and sets up its guests.
fn create_guests(platform: &Platform, state: &BootState) -> Vec<guest::Guest> {
    let Some(range) = platform.initrd else {
        return Vec::new();
    };
    // SAFETY: the initrd range is reserved RAM (kept out of the allocator by `mm::init`),
    // covered by the direct map, and nothing writes to it.
    let data: &'static [u8] = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(range.start).raw() as *const u8,
            range.size() as usize,
        )
    };
    let bundle = match bundle::Bundle::parse(data) {
        Ok(b) => b,
        Err(e) => {
            println!("hypocaust: the initrd is not a usable guest bundle: {e}");
            return Vec::new();
        }
    };
    let boot_hart = platform.hart(state.hartid);
    let host_isa = boot_hart.map_or("rv64imac", |h| h.isa.raw.as_str());
    let sstc = boot_hart.is_some_and(|h| h.isa.has_extension("sstc"));
    let offer = guest::Offer {
        isa: loader::isa::guest_isa(host_isa, sstc),
        features: vcpu::Features {
            sstc,
            fp: boot_hart.is_some_and(|h| h.isa.has_letter('f') || h.isa.has_letter('d')),
            max_satp_mode: SatpMode::Sv39,
            counters: arch::scounteren_writable() & 0xFFFF_FFFF,
        },

        timebase_hz: platform.timebase_hz as u32,
    };
    let mut guests = Vec::new();
    let mut taken_slots = 0;
    for (id, spec) in bundle.guests().enumerate() {
        let devices = board::Layout::for_guest(platform, spec.virtio_slots, &mut taken_slots);
        match guest::Guest::create(guests.len(), &spec, offer.clone(), devices) {
            Ok(g) => {
                println!(
                    "guest     '{}': {} MiB RAM, {} vCPU, isa {}",
                    g.name,
                    g.memory.size() >> 20,
                    spec.vcpus,
                    g.offer.isa
                );
                for (base, id) in g.board.lock().passed_through() {
                    println!("          virtio {} at {base:#x} passed through", virtio_name(id));
                }
                guests.push(g);
            }
            Err(e) => println!("hypocaust: guest {id} '{}' cannot start: {e}", spec.name),
        }
    }
    guests
}

/// Runs guest `index` on this hart until it powers off (rebooting it when it asks), then
/// powers the machine off if it was the last guest running.
fn run_guest(index: usize) -> ! {
    let guests = GUESTS.get().expect("guests are created before harts run them");
    let g = &guests[index];
    let mut stats = run::ExitStats::default();
    let Some(pool) = g.take_shadow_pool() else {
        println!("hypocaust: guest '{}' has no shadow table pool", g.name);
        idle()
    };
    let mut mmu = paging::VcpuMmu::new(index, g.bare_satp, pool);
    loop {
        mmu.reset();
        let vcpu = match g.load() {
            Ok(v) => v,
            Err(e) => {
                println!("hypocaust: guest '{}' cannot start: {e}", g.name);
                break;
            }
        };
        let mut ctx = Box::new(arch::trap::GuestContext::new(vcpu));
        let end = run::run(g, &mut ctx, &mut mmu, &mut stats);
        log::debug!("guest '{}': shadow {:?}", g.name, mmu.stats());
        log::debug!("guest '{}': exits {}", g.name, stats);
        match end {
            run::End::Reset(vcpu::ResetKind::Shutdown) => {
                println!("hypocaust: guest '{}' powered off", g.name);
                break;
            }
            run::End::Reset(kind) => println!("hypocaust: guest '{}' reboots ({kind:?})", g.name),
            run::End::Stopped => {
                println!("hypocaust: guest '{}' stopped its last hart", g.name);
                break;
            }
        }
    }
    // Off the guest's tables for good.
    mmu.reset();
    if RUNNING.fetch_sub(1, Ordering::AcqRel) == 1 {
        println!("hypocaust: all guests are off; powering off");
        sbi::shutdown(false)
    }
    idle()
}

/// Parks the hart for good (still serving the host interrupts routed to it).
fn idle() -> ! {
    // SAFETY: an external interrupt only wakes `wfi` (sstatus.SIE stays clear).
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) rv::csr::Interrupts::SEI.bits()) };
    loop {
        arch::wait_for_interrupt();
        run::host_external(None);
    }
}

/// The name of virtio device type `id`.
fn virtio_name(id: u32) -> &'static str {
    match id {
        1 => "net",
        2 => "block",
        3 => "console",
        4 => "entropy",
        8 => "scsi",
        9 => "9p",
        18 => "input",
        19 => "vsock",
        _ => "device",
    }
}

/// The hart ID of the hart that runs guest `index`.
pub fn guest_hart(index: usize) -> Option<usize> {
    HART_IDS.get()?.get(index).copied()
}

/// What every hart but the boot hart does once online: wait for a guest to run.
pub fn hart_main() -> ! {
    let index = hart::current().map_or(0, |h| h.index);
    // SAFETY: a software interrupt only wakes `wfi` (sstatus.SIE stays clear).
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) rv::csr::Interrupts::SSI.bits()) };
    loop {
        if let Some(guests) = GUESTS.get() {
            // SAFETY: clearing SSIP acknowledges the wake-up.
            unsafe { core::arch::asm!("csrc sip, {0}", in(reg) rv::csr::Interrupts::SSI.bits()) };
            if index < guests.len() {
                run_guest(index);
            }
            idle();
        }
        arch::wait_for_interrupt();
    }
}
