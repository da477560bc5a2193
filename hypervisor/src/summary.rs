//! The platform summary printed at boot.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use platform::Platform;

use crate::{BootState, hart};

/// Formats a list of numbers compactly: `0-3`, `1 3 5 7`.
fn number_list(ids: &[usize]) -> String {
    let mut out = String::new();
    let contiguous = ids.windows(2).all(|w| w[1] == w[0] + 1);
    match ids {
        [] => out.push('-'),
        [one] => {
            let _ = write!(out, "{one}");
        }
        [first, .., last] if contiguous => {
            let _ = write!(out, "{first}-{last}");
        }
        _ => {
            for (i, id) in ids.iter().enumerate() {
                let _ = write!(out, "{}{id}", if i > 0 { " " } else { "" });
            }
        }
    }
    out
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// Prints what hypocaust found and set up.
pub fn print(platform: &Platform, state: &BootState) {
    let boot = platform.hart(state.hartid);
    println!("hypocaust {}: RISC-V hypervisor without the H extension", crate::VERSION);
    println!("platform  {}", platform.model);
    let mut ids = state.harts.clone();
    ids.sort_unstable();
    println!(
        "harts     {} online of {} in the device tree (ids {}), boot hart {}",
        hart::online(),
        platform.harts.len(),
        number_list(&ids),
        state.hartid
    );
    if let Some(h) = boot {
        let mmu = h.mmu.map_or("none", |m| m.dt_name());
        let host = crate::layout::mode().satp_mode().name();
        println!("isa       {} (mmu {mmu}; host paging {host})", h.isa.raw);
    }
    println!("timebase  {} Hz", platform.timebase_hz);
    for bank in &platform.memory {
        println!("memory    {} MiB at {:#x}..{:#x}", mib(bank.size()), bank.start, bank.end);
    }
    let (free, largest) = crate::mm::free_for_guests();
    println!(
        "          image {} KiB, heap {} MiB, {} MiB free for guests (at most {} MiB in one piece)",
        state.memory.image >> 10,
        mib(state.memory.heap),
        mib(free),
        mib(largest)
    );
    match &platform.uart {
        Some(u) => println!(
            "uart      {} at {:#x} (irq {})",
            u.compatible,
            u.region.start,
            u.irq.map_or(String::from("-"), |i| alloc::format!("{i}"))
        ),
        None => println!("uart      none (console through SBI)"),
    }
    match &platform.plic {
        Some(p) => {
            let mut contexts: Vec<usize> =
                state.harts.iter().filter_map(|&h| p.supervisor_context(h)).collect();
            contexts.sort_unstable();
            println!(
                "plic      at {:#x}, {} sources, S-mode contexts {}",
                p.region.start,
                p.ndev,
                number_list(&contexts)
            );
        }
        None => println!("plic      none"),
    }
    if let (Some(first), Some(last)) = (platform.virtio.first(), platform.virtio.last()) {
        let irqs: Vec<usize> =
            platform.virtio.iter().filter_map(|v| v.irq).map(|i| i as usize).collect();
        println!(
            "virtio    {} mmio slots at {:#x}..{:#x} (irqs {})",
            platform.virtio.len(),
            first.region.start,
            last.region.end,
            number_list(&irqs)
        );
    } else {
        println!("virtio    none");
    }
    println!("sbi       {}", state.sbi);
}
