//! The hypervisor as a whole: its guests, where their vCPUs run, and when the machine
//! powers off (when the last guest is gone).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use platform::Platform;
use sched::VcpuId;
use sched::place::{Demand, PlaceError, place};
use spin::Once;

use crate::board::Layout;
use crate::guest::{self, Guest, Offer};
use crate::{arch, firmware, schedule};

/// The guests that could be set up, by index.
static GUESTS: Once<Vec<Guest>> = Once::new();

/// The vCPUs each hart runs, by hart index.
static QUEUES: Once<Vec<Vec<VcpuId>>> = Once::new();

/// Guests not yet off; the hart that ends the last one powers the machine off.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// A guest could not be set up: the machine powers off as a failure at the end.
static FAILED: AtomicBool = AtomicBool::new(false);

/// The physical machine's identity, for guests' SBI BASE calls.
static MACHINE_IDS: Once<vcpu::MachineIds> = Once::new();

/// The guests, once set up.
pub fn guests() -> &'static [Guest] {
    GUESTS.get().map_or(&[], Vec::as_slice)
}

/// Guest `index`, if it exists.
pub fn guest(index: usize) -> Option<&'static Guest> {
    guests().get(index)
}

/// Whether the guests are set up (harts may schedule).
pub fn ready() -> bool {
    QUEUES.get().is_some()
}

/// The vCPUs hart index `hart` runs.
pub fn queue_of(hart: usize) -> Vec<VcpuId> {
    QUEUES.get().and_then(|q| q.get(hart)).cloned().unwrap_or_default()
}

/// The physical machine's identity as firmware reports it.
pub fn machine_ids() -> vcpu::MachineIds {
    MACHINE_IDS.get().copied().unwrap_or_default()
}

/// Guest `g` is off for good: powers the machine off if it was the last.
pub fn guest_gone(g: &Guest) {
    println!("hypocaust: guest '{}' is off", g.name);
    if RUNNING.fetch_sub(1, Ordering::AcqRel) == 1 {
        println!("hypocaust: all guests are off; powering off");
        firmware::shutdown(FAILED.load(Ordering::Relaxed))
    }
}

/// What the guests are offered on this platform.
fn offer(platform: &Platform, boot_hart: usize) -> Offer {
    let hart = platform.hart(boot_hart);
    let host_isa = hart.map_or("rv64imac", |h| h.isa.raw.as_str());
    let sstc = hart.is_some_and(|h| h.isa.has_extension("sstc"));
    Offer {
        isa: loader::isa::guest_isa(host_isa, sstc),
        features: vcpu::Features {
            sstc,
            fp: hart.is_some_and(|h| h.isa.has_letter('f') || h.isa.has_letter('d')),
            max_satp_mode: crate::layout::mode().guest_mode(),
            counters: arch::scounteren_writable() & 0xFFFF_FFFF,
            senvcfg: arch::trap::has_senvcfg(),
        },
        timebase_hz: platform.timebase_hz as u32,
    }
}

/// Formats a set of hart indices: `0`, `0-3`, `0 2`.
fn hart_list(harts: &[usize]) -> String {
    let mut sorted = harts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    match sorted.as_slice() {
        [] => out.push('-'),
        [one] => {
            let _ = write!(out, "{one}");
        }
        [first, .., last] if last - first + 1 == sorted.len() => {
            let _ = write!(out, "{first}-{last}");
        }
        list => {
            for (i, h) in list.iter().enumerate() {
                let _ = write!(out, "{}{h}", if i > 0 { " " } else { "" });
            }
        }
    }
    out
}

/// Sets up the guests of the bundle the boot loader placed as the initrd, places their
/// vCPUs on the `harts` harts, prints what each got, and lets the harts schedule. Returns
/// the number of guests that run.
pub fn create(platform: &Platform, boot_hart: usize, harts: usize) -> usize {
    MACHINE_IDS.call_once(|| vcpu::MachineIds {
        mvendorid: sbi_rt::get_mvendorid() as u64,
        marchid: sbi_rt::get_marchid() as u64,
        mimpid: sbi_rt::get_mimpid() as u64,
    });
    let guests = match crate::mm::bundle().map(bundle_of) {
        Some(Ok(b)) => set_up(platform, boot_hart, harts, &b),
        Some(Err(e)) => {
            println!("hypocaust: the initrd is not a usable guest bundle: {e}");
            FAILED.store(true, Ordering::Relaxed);
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut queues: Vec<Vec<VcpuId>> = (0..harts).map(|_| Vec::new()).collect();
    for g in &guests {
        for c in &g.vcpus {
            queues[c.hart].push(VcpuId { guest: g.index, vcpu: c.index });
        }
    }
    let count = guests.len();
    RUNNING.store(count, Ordering::Release);
    GUESTS.call_once(|| guests);
    QUEUES.call_once(|| queues);
    count
}

/// The bundle in the initrd's range.
fn bundle_of(range: platform::PhysRange) -> Result<bundle::Bundle<'static>, bundle::BundleError> {
    // SAFETY: the bundle's range is RAM kept out of the allocators by `mm::init`,
    // covered by the direct map, and nothing writes to it.
    let data: &'static [u8] = unsafe {
        core::slice::from_raw_parts(
            crate::layout::phys_to_virt(range.start).raw() as *const u8,
            range.size() as usize,
        )
    };
    bundle::Bundle::parse(data)
}

fn set_up(
    platform: &Platform,
    boot_hart: usize,
    harts: usize,
    bundle: &bundle::Bundle<'static>,
) -> Vec<Guest> {
    let offer = offer(platform, boot_hart);
    let specs: Vec<bundle::Guest<'static>> = bundle.guests().collect();
    // The bundle names harts by hart ID; placement works on hart indices.
    let all_harts = (0..harts.min(64))
        .map(crate::hart::id_of)
        .filter(|&id| id < 64)
        .fold(0u64, |m, id| m | 1 << id);
    let by_index = |ids: u64| {
        (0..harts.min(64))
            .filter(|&i| crate::hart::id_of(i) < 64 && ids & 1 << crate::hart::id_of(i) != 0)
            .fold(0u64, |m, i| m | 1 << i)
    };
    let demands: Vec<Demand> = specs
        .iter()
        .map(|s| Demand {
            vcpus: (s.vcpus as usize).min(guest::MAX_VCPUS),
            // Harts that do not exist are left out; an affinity with none that does is
            // refused below (0: any hart).
            affinity: match (s.harts, by_index(s.harts)) {
                (0, _) => 0,
                // Only harts hypocaust does not run on: a hart index that does not exist,
                // so that placement refuses it.
                (_, 0) => 1 << 63,
                (_, m) => m,
            },
        })
        .collect();
    let placement = match place(&demands, harts) {
        Ok(p) => p,
        Err(PlaceError::NoHart { guest }) => {
            let s = &specs[guest];
            println!(
                "hypocaust: guest {guest} '{}' cannot start: its hart affinity {:#x} names none \
                 of the harts hypocaust runs on (ids {}); name some of those",
                s.name,
                s.harts,
                hart_list(&(0..harts).map(crate::hart::id_of).collect::<Vec<_>>())
            );
            FAILED.store(true, Ordering::Relaxed);
            return Vec::new();
        }
    };
    let seed = bundle.seed();
    let mut guests: Vec<Guest> = Vec::new();
    let mut taken_slots = 0;
    for (i, spec) in specs.iter().enumerate() {
        let layout = Layout::for_guest(
            platform,
            spec.virtio_slots,
            |slot| spec.device_name(slot).map(String::from),
            &mut taken_slots,
        );
        let index = guests.len();
        match Guest::create(index, spec, seed, offer.clone(), layout, &placement[i]) {
            Ok(g) => {
                describe(&g, spec, &placement[i], harts, all_harts);
                guests.push(g);
            }
            Err(e) => {
                println!("hypocaust: guest {i} '{}' cannot start: {e}", spec.name);
                FAILED.store(true, Ordering::Relaxed);
            }
        }
    }
    guests
}

/// Prints what guest `g` got, and where that differs from what it asked for. `placed`
/// are hart indices; the summary shows hart IDs.
fn describe(g: &Guest, spec: &bundle::Guest, placed: &[usize], harts: usize, all_harts: u64) {
    let ids: Vec<usize> = placed.iter().map(|&h| crate::hart::id_of(h)).collect();
    println!(
        "guest     '{}': {} MiB RAM, {} vCPU{} on hart{} {}, isa {}",
        g.name,
        g.memory.size() >> 20,
        g.vcpus.len(),
        if g.vcpus.len() == 1 { "" } else { "s" },
        if hart_list(&ids).len() == 1 { "" } else { "s" },
        hart_list(&ids),
        g.offer.isa
    );
    for (name, base, id) in g.passed_through() {
        println!("          {name}: virtio {} at {base:#x} passed through", virtio_name(id));
    }
    if spec.harts != 0 && spec.harts & !all_harts != 0 {
        println!(
            "          note: its hart affinity names harts hypocaust does not run on (it has \
             {harts}); those are left out"
        );
    }
    let own = {
        let mut p = placed.to_vec();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    if own < placed.len() {
        println!(
            "          note: {} vCPUs share {own} hart{}: they are time-sliced ({} ms slices)",
            placed.len(),
            if own == 1 { "" } else { "s" },
            schedule::slice_ticks() * 1000 / crate::timebase_hz().max(1)
        );
    }
    let owned: Vec<&str> = (0..64).filter_map(|s| spec.device_name(s)).collect();
    let got = g.passed_through().len();
    if owned.len() > got {
        println!(
            "          note: it names {} device{} but got {got} (a slot is empty or another \
             guest owns it)",
            owned.len(),
            if owned.len() == 1 { "" } else { "s" }
        );
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
