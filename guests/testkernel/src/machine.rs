//! What the device tree says about the machine the tests run on.

use alloc::string::{String, ToString};
use spin::Once;

/// Facts the tests consult.
pub struct Machine {
    /// The hart the kernel runs on.
    pub hartid: usize,
    pub harts: usize,
    /// Every hart's ID (`reg` of each cpu node), in device-tree order.
    pub hart_ids: alloc::vec::Vec<usize>,
    /// `riscv,isa` of the boot hart.
    pub isa: String,
    /// `mmu-type` of the boot hart.
    pub mmu: String,
    pub timebase_hz: u64,
    pub bootargs: String,
    /// The first address past the RAM that holds the kernel.
    pub ram_end: u64,
    /// Where the device tree is.
    dtb: usize,
    /// The S-mode PLIC context of each hart (from the PLIC's `interrupts-extended`).
    pub s_contexts: alloc::vec::Vec<(usize, u64)>,
    /// The PLIC's `riscv,ndev`.
    pub plic_ndev: u32,
}

impl Machine {
    /// The value of `key=value` in the boot arguments.
    pub fn bootarg(&self, key: &str) -> Option<&str> {
        self.bootargs
            .split_whitespace()
            .find_map(|a| a.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// The device tree the kernel was booted with.
    pub fn fdt(&self) -> fdt::Fdt<'static> {
        // SAFETY: `init` parsed the same tree at this address, and nothing writes over it.
        unsafe { fdt::Fdt::from_ptr(self.dtb as *const u8) }.expect("the tree init read")
    }

    /// `/chosen/rng-seed`, if the device tree has one.
    pub fn rng_seed(&self) -> Option<&'static [u8]> {
        self.fdt().find_node("/chosen")?.property("rng-seed").map(|p| p.value)
    }

    /// Whether a node compatible with `compatible` is in the device tree at `base`.
    pub fn has_device(&self, compatible: &str, base: u64) -> bool {
        self.fdt().all_nodes().any(|n| {
            n.compatible().is_some_and(|c| c.all().any(|s| s == compatible))
                && n.reg().and_then(|mut r| r.next()).map(|r| r.starting_address as u64)
                    == Some(base)
        })
    }

    /// Whether the boot hart's ISA string names multi-letter extension `ext`.
    pub fn has_extension(&self, ext: &str) -> bool {
        self.isa.split('_').skip(1).any(|e| e.eq_ignore_ascii_case(ext))
    }
}

static MACHINE: Once<Machine> = Once::new();

/// Reads the device tree at `dtb`.
pub fn init(hartid: usize, dtb: usize) -> &'static Machine {
    // SAFETY: firmware (or hypocaust) passes a valid device tree in a1, and nothing
    // overwrites it.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.expect("a valid device tree in a1");
    let mut machine = Machine {
        hartid,
        harts: 0,
        hart_ids: alloc::vec::Vec::new(),
        isa: String::new(),
        mmu: String::new(),
        timebase_hz: 10_000_000,
        bootargs: fdt.chosen().bootargs().unwrap_or("").to_string(),
        ram_end: 0,
        dtb,
        s_contexts: alloc::vec::Vec::new(),
        plic_ndev: 0,
    };
    let here = init as *const () as u64;
    for region in fdt.memory().regions() {
        let start = region.starting_address as u64;
        let end = start + region.size.unwrap_or(0) as u64;
        if (start..end).contains(&here) {
            machine.ram_end = end;
        }
    }
    // Harts that can run S-mode have an MMU (QEMU's sifive_u has an E51 monitor hart
    // without one, which SBI cannot start here).
    let mut intc = alloc::vec::Vec::new();
    let cpus = fdt.find_node("/cpus").into_iter().flat_map(|n| n.children());
    for cpu in cpus.filter(|c| c.property("device_type").and_then(|p| p.as_str()) == Some("cpu")) {
        let reg = cpu.property("reg").and_then(|p| p.as_usize());
        if let (Some(reg), Some(phandle)) = (
            reg,
            cpu.children()
                .find(|c| c.compatible().is_some_and(|c| c.all().any(|s| s == "riscv,cpu-intc")))
                .and_then(|c| c.property("phandle"))
                .and_then(|p| p.as_usize()),
        ) {
            intc.push((phandle, reg));
        }
        if cpu.property("mmu-type").is_none() {
            continue;
        }
        machine.harts += 1;
        machine.hart_ids.extend(reg);
        if reg == Some(hartid) {
            let s = |name| cpu.property(name).and_then(|p| p.as_str()).unwrap_or("").to_string();
            machine.isa = s("riscv,isa");
            machine.mmu = s("mmu-type");
        }
        if let Some(tb) = cpu.property("timebase-frequency").and_then(|p| p.as_usize()) {
            machine.timebase_hz = tb as u64;
        }
    }
    if let Some(tb) = fdt
        .find_node("/cpus")
        .and_then(|n| n.property("timebase-frequency"))
        .and_then(|p| p.as_usize())
    {
        machine.timebase_hz = tb as u64;
    }
    if let Some(plic) = fdt.find_compatible(&["riscv,plic0", "sifive,plic-1.0.0"]) {
        machine.plic_ndev =
            plic.property("riscv,ndev").and_then(|p| p.as_usize()).unwrap_or(0) as u32;
        if let Some(ext) = plic.property("interrupts-extended") {
            let cells: alloc::vec::Vec<usize> = ext
                .value
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
                .collect();
            for (context, pair) in cells.chunks_exact(2).enumerate() {
                // Supervisor external interrupt (9) of the hart whose intc is pair[0].
                if pair[1] == 9
                    && let Some(&(_, hart)) = intc.iter().find(|(p, _)| *p == pair[0])
                {
                    machine.s_contexts.push((hart, context as u64));
                }
            }
        }
    }
    crate::timer::TIMEBASE_HZ.store(machine.timebase_hz, core::sync::atomic::Ordering::Relaxed);
    MACHINE.call_once(|| machine)
}

/// The machine, after `init`.
pub fn get() -> &'static Machine {
    MACHINE.get().expect("machine::init ran at boot")
}

/// Skips the test unless the device tree has a `compatible` device at `base`.
pub fn require_device(compatible: &str, base: u64) -> Result<(), crate::harness::Outcome> {
    if get().has_device(compatible, base) {
        Ok(())
    } else {
        Err(crate::harness::Outcome::Skip(alloc::format!(
            "the machine has no {compatible} at {base:#x}"
        )))
    }
}

/// Skips the test unless the machine has `virt`'s 16550 UART.
pub fn require_16550() -> Result<(), crate::harness::Outcome> {
    require_device("ns16550a", crate::uart16550::BASE)
}
