//! The firmware on the hart: boot, per-hart machine setup, stopped harts, and the glue
//! between the SBI (sbi.rs), traps (trap.rs) and the devices (devices.rs).

extern crate alloc;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use buddy_system_allocator::LockedHeap;
use firmware::boot::{self, DynamicInfo};
use firmware::hsm::Slot;
use firmware::mailbox::{self, Mailbox};
use firmware::memory::Range;
use platform::Platform;
use spin::Once;

mod arch;
mod devices;
mod sbi;
mod trap;

use arch::{MAX_HARTS, irq, mstatus};
use devices::{Console, Cores};

/// What the firmware found at boot, for every hart.
struct Machine {
    platform: Platform,
    console: Option<Console>,
    cores: Option<Cores>,
    /// The hart can write `stimecmp` (Sstc, enabled in `menvcfg`).
    sstc: bool,
    ram: alloc::vec::Vec<Range>,
    /// The firmware's own memory, which no SBI call reads or writes for S-mode.
    firmware: Range,
}

static MACHINE: Once<Machine> = Once::new();

fn machine() -> &'static Machine {
    MACHINE.get().expect("the boot hart sets the machine up before anything else runs")
}

/// Per hart: its HSM state and its mailbox.
struct Hart {
    hsm: Slot,
    mailbox: Mailbox,
}

static HARTS: [Hart; MAX_HARTS] =
    [const { Hart { hsm: Slot::new(), mailbox: Mailbox::new() } }; MAX_HARTS];

/// The hart with ID `id`, if the firmware serves it.
fn hart(id: usize) -> Option<&'static Hart> {
    HARTS.get(id).filter(|h| h.hsm.is_present())
}

/// Set once the boot hart has found the machine: the other harts may set themselves up.
static READY: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static HEAP: LockedHeap<20> = LockedHeap::empty();
const HEAP_SIZE: usize = 128 * 1024;
static mut HEAP_SPACE: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

unsafe extern "C" {
    static __firmware_start: u8;
    static __firmware_end: u8;
}

/// Writes to the console, if there is one.
fn print(args: core::fmt::Arguments) {
    if let Some(c) = MACHINE.get().and_then(|m| m.console.as_ref()) {
        let _ = (&*c).write_fmt(args);
    }
}

macro_rules! println {
    ($($arg:tt)*) => { $crate::machine::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Stops this hart for good, after saying why (an error the firmware cannot go on from).
fn halt(why: core::fmt::Arguments) -> ! {
    println!("hypocaust-firmware: {why}; halting");
    loop {
        arch::wait_for_interrupt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    halt(format_args!("panic: {info}"))
}

/// The device tree at `addr`, whole.
fn device_tree(addr: usize) -> &'static [u8] {
    // SAFETY: QEMU's reset vector passes the device tree in a1; its header holds its size
    // (big-endian `totalsize` at offset 4), and nothing overwrites it while firmware runs.
    unsafe {
        let size = u32::from_be(((addr + 4) as *const u32).read_volatile()) as usize;
        core::slice::from_raw_parts(addr as *const u8, size)
    }
}

/// The boot hart, after .bss is clear: a0 = its ID, a1 = the device tree, a2 = QEMU's
/// `fw_dynamic_info`.
pub extern "C" fn boot_main(hartid: usize, fdt: usize, info: usize) -> ! {
    // SAFETY: called once, before any allocation; the static is only used as heap.
    unsafe { HEAP.lock().init((&raw mut HEAP_SPACE) as usize, HEAP_SIZE) };
    let Ok(platform) = Platform::from_dtb(device_tree(fdt)) else {
        // No console without a device tree: nothing to say it on.
        halt(format_args!("no usable device tree at {fdt:#x}"))
    };
    let firmware = (&raw const __firmware_start as u64, &raw const __firmware_end as u64);
    let sstc = platform.hart(hartid).is_some_and(|h| h.isa.has_extension("sstc"));
    let ram = platform.memory.iter().map(|r| (r.start.raw(), r.end.raw())).collect();
    MACHINE.call_once(|| Machine {
        console: platform.uart.as_ref().map(Console::new),
        cores: platform.clint.clone().map(Cores),
        sstc,
        ram,
        firmware,
        platform,
    });
    let m = machine();
    for h in m.platform.harts.iter().filter(|h| h.enabled) {
        if let Some(slot) = HARTS.get(h.id) {
            slot.hsm.set_present();
        }
    }
    HARTS[hartid].hsm.boot();
    let setup = init_hart(hartid);
    // SAFETY: QEMU's reset vector passes the address of its fw_dynamic_info in a2.
    let info = unsafe { (info as *const DynamicInfo).read_volatile() };
    let payload = boot::payload(&info).unwrap_or_else(|e| halt(format_args!("{e}")));
    let harts = m.platform.harts.iter().filter(|h| h.enabled && h.id < MAX_HARTS).count();
    println!(
        "hypocaust-firmware {} (RustSBI {}): {} on {harts} hart(s), payload at {:#x}",
        env!("CARGO_PKG_VERSION"),
        sbi::RUSTSBI_VERSION,
        m.platform.model,
        payload.entry
    );
    println!(
        "  medeleg {:#x}, mideleg {:#x}, Sstc {}, {}",
        setup.medeleg,
        setup.mideleg,
        if m.sstc && setup.sstc { "on" } else { "off" },
        if m.cores.is_some() { "CLINT" } else { "no CLINT: one hart only" }
    );
    READY.store(true, Ordering::Release);
    arch::start_supervisor(payload.entry as usize, hartid, fdt)
}

/// Every other hart, after .bss is clear: waits for the boot hart, sets itself up, and
/// waits to be started.
pub extern "C" fn hart_main(hartid: usize) -> ! {
    while !READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    if hart(hartid).is_none() {
        // Not in the device tree (or disabled there): nobody can start it.
        loop {
            arch::wait_for_interrupt();
        }
    }
    init_hart(hartid);
    stopped(hartid)
}

/// What a hart's machine setup ended with.
struct Setup {
    medeleg: usize,
    mideleg: usize,
    sstc: bool,
}

/// The exceptions S-mode gets directly: instruction address misaligned (0), access faults
/// (1, 5, 7), illegal instruction (2), breakpoint (3), misaligned loads and stores (4, 6),
/// ecall from U (8), page faults (12, 13, 15), software check (18), hardware error (19).
/// Only `ecall` from S (the SBI) and from M stay in M-mode.
const DELEGATED: usize = 0x1FF | 1 << 12 | 1 << 13 | 1 << 15 | 1 << 18 | 1 << 19;

/// The machine setup of one hart: trap vector, delegation, counters, Sstc and cache-block
/// operations for S-mode, PMP open to S-mode but for the firmware's own memory.
fn init_hart(hartid: usize) -> Setup {
    let m = machine();
    arch::install_trap_vector();
    // Every exception hypocaust handles goes straight to S-mode: illegal instruction
    // (hypocaust's CSR emulation), breakpoint, misaligned accesses, access and page
    // faults, ecall from U (its guests' SBI calls and system calls). Read back: a hart
    // keeps only the bits it has.
    arch::write_medeleg(DELEGATED);
    arch::write_mideleg(irq::SUPERVISOR);
    arch::write_mcounteren(0xFFFF_FFFF);
    let isa = m.platform.hart(hartid).map(|h| &h.isa);
    let has = |ext: &str| isa.is_some_and(|i| i.has_extension(ext));
    let mut envcfg = 0usize;
    if m.sstc {
        envcfg |= 1 << 63; // STCE: S-mode has stimecmp
    }
    if has("zicbom") {
        envcfg |= 1 << 6 | 1 << 4; // CBCFE, CBIE = flush
    }
    if has("zicboz") {
        envcfg |= 1 << 7; // CBZE
    }
    if has("svpbmt") {
        envcfg |= 1 << 62; // PBMTE
    }
    if has("svadu") {
        envcfg |= 1 << 61; // ADUE: the hart updates A and D bits itself, as OpenSBI has it
    }
    let envcfg_ok = arch::try_write_menvcfg(envcfg);
    let sstc = m.sstc && envcfg_ok && arch::try_write_stimecmp(usize::MAX);
    if let Some(cores) = &m.cores {
        cores.set_mtimecmp(hartid, u64::MAX);
        cores.set_msip(hartid, false);
    }
    open_pmp(m.firmware);
    arch::clear_mstatus(mstatus::MPP);
    arch::set_mstatus(mstatus::FS_DIRTY);
    arch::write_mie(irq::MSI);
    Setup { medeleg: arch::medeleg(), mideleg: arch::mideleg(), sstc }
}

/// PMP: everything open to S- and U-mode but the firmware's memory (entry 0: below it,
/// entry 1: the firmware, no access, entry 2: above it; all TOR).
fn open_pmp(firmware: Range) {
    const TOR_RWX: usize = 0x08 | 0x7;
    const TOR_NONE: usize = 0x08;
    let ok = arch::try_write_pmpaddr0((firmware.0 >> 2) as usize)
        && arch::try_write_pmpaddr1((firmware.1 >> 2) as usize)
        && arch::try_write_pmpaddr2(usize::MAX >> 10);
    if ok {
        arch::try_write_pmpcfg0(TOR_RWX | TOR_NONE << 8 | TOR_RWX << 16);
    }
}

/// A stopped hart: waits in M-mode until another hart starts it (SBI HSM), serving its
/// mailbox meanwhile.
fn stopped(hartid: usize) -> ! {
    let me = &HARTS[hartid];
    arch::write_mie(irq::MSI);
    arch::clear_mip(irq::SSI);
    loop {
        if let Some((entry, opaque)) = me.hsm.take_start() {
            arch::clear_mip(irq::SSI);
            arch::start_supervisor(entry, hartid, opaque);
        }
        arch::wait_for_interrupt();
        serve(hartid);
    }
}

/// Does the work other harts asked of this one (its machine software interrupt).
fn serve(hartid: usize) {
    if let Some(cores) = &machine().cores {
        cores.set_msip(hartid, false);
    }
    let mailbox = &HARTS[hartid].mailbox;
    let (work, ticket) = mailbox.take();
    do_work(work);
    mailbox.complete(ticket);
}

/// Does on this hart the `mailbox` work bits in `work`: raise its supervisor software
/// interrupt, `fence.i`, `sfence.vma`.
fn do_work(work: u32) {
    if work & mailbox::SSIP != 0 {
        arch::set_mip(irq::SSI);
    }
    if work & mailbox::FENCE_I != 0 {
        arch::fence_i();
    }
    if work & mailbox::SFENCE_VMA != 0 {
        arch::sfence_vma_all();
    }
}

/// Posts `work` to hart `target` and raises its machine software interrupt; the ticket to
/// wait for.
fn post(target: usize, work: u32) -> u64 {
    let ticket = HARTS[target].mailbox.post(work);
    if let Some(cores) = &machine().cores {
        cores.set_msip(target, true);
    }
    ticket
}

/// Waits until hart `target` has done ticket `ticket`, serving this hart's own mailbox
/// meanwhile (so two harts waiting for each other both get on).
fn wait_done(hartid: usize, target: usize, ticket: u64) {
    while !HARTS[target].mailbox.is_done(ticket) {
        if arch::mip() & irq::MSI != 0 {
            serve(hartid);
        }
        core::hint::spin_loop();
    }
}
