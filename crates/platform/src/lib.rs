//! The host platform, as its device tree describes it.
//!
//! [`Platform::from_dtb`] reads what hypocaust needs to know about the machine it runs on:
//! harts (with their ISA and MMU), the timebase, RAM and reserved memory, the UART, the PLIC
//! with its per-hart contexts, and the virtio-mmio slots. It never panics on a malformed
//! tree: missing or odd properties become `None` or an error.
#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;
use rv::HostPhysAddr;
use rv::addr::AddrRange;
use rv::csr::SatpMode;

mod isa;

pub use isa::Isa;

/// A range of host-physical addresses.
pub type PhysRange = AddrRange<HostPhysAddr>;

/// One hart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hart {
    /// The hart ID (`reg` of its cpu node): what SBI calls take.
    pub id: usize,
    /// Its `riscv,isa` string, parsed.
    pub isa: Isa,
    /// Its widest paging mode per `mmu-type`; `None` if it has no MMU.
    pub mmu: Option<SatpMode>,
    /// `status` is absent, "okay" or "ok".
    pub enabled: bool,
    /// phandle of its `riscv,cpu-intc` child: how the PLIC names it.
    pub intc_phandle: Option<u32>,
}

/// Which register interface a UART has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// A 16550 (`ns16550a`, `ns16550`, `snps,dw-apb-uart`): QEMU `virt`, most SoCs.
    Ns16550,
    /// The SiFive UART (`sifive,uart0`): QEMU `sifive_u`, the FU540/FU740 and JH7110.
    Sifive,
}

/// The console UART.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uart {
    pub region: PhysRange,
    /// Compatible string that matched (`ns16550a`, ...).
    pub compatible: String,
    /// Its register interface, from the compatible string.
    pub kind: UartKind,
    /// Registers are `1 << reg_shift` bytes apart.
    pub reg_shift: u32,
    /// Register access width in bytes.
    pub reg_io_width: u32,
    /// PLIC source number.
    pub irq: Option<u32>,
}

/// Which privilege level a PLIC context interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextMode {
    Machine,
    Supervisor,
}

/// One PLIC context (an interrupt target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlicContext {
    /// Index of the context: its enable and threshold registers are found by it.
    pub index: usize,
    pub hart: usize,
    pub mode: ContextMode,
}

/// The platform-level interrupt controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plic {
    pub region: PhysRange,
    /// Number of interrupt sources (`riscv,ndev`); sources are numbered 1..=ndev.
    pub ndev: u32,
    pub contexts: Vec<PlicContext>,
}

impl Plic {
    /// The S-mode context of `hart`, if it has one.
    pub fn supervisor_context(&self, hart: usize) -> Option<usize> {
        self.contexts
            .iter()
            .find(|c| c.hart == hart && c.mode == ContextMode::Supervisor)
            .map(|c| c.index)
    }
}

/// A memory-mapped device with at most one interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    pub region: PhysRange,
    pub irq: Option<u32>,
}

/// The core-local interruptor (SiFive CLINT, `riscv,clint0`): each hart's machine
/// software interrupt (MSIP) and timer compare register, and the shared `mtime`. Only
/// machine-mode firmware uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clint {
    pub region: PhysRange,
    /// Hart IDs in the CLINT's order: hart `harts[i]` has MSIP `i` and `mtimecmp` `i`.
    pub harts: Vec<usize>,
}

impl Clint {
    /// Offset of `mtime`.
    pub const MTIME: u64 = 0xbff8;

    /// The CLINT's index of hart `hart`.
    fn index(&self, hart: usize) -> Option<u64> {
        self.harts.iter().position(|&h| h == hart).map(|i| i as u64)
    }

    /// Offset of hart `hart`'s MSIP register.
    pub fn msip(&self, hart: usize) -> Option<u64> {
        Some(4 * self.index(hart)?)
    }

    /// Offset of hart `hart`'s `mtimecmp`.
    pub fn mtimecmp(&self, hart: usize) -> Option<u64> {
        Some(0x4000 + 8 * self.index(hart)?)
    }
}

/// A register write that powers the machine off or resets it (`syscon-poweroff`,
/// `syscon-reboot`: QEMU's test device, for one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysconWrite {
    pub address: HostPhysAddr,
    pub value: u32,
}

/// What hypocaust knows about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The root node's `model`.
    pub model: String,
    pub harts: Vec<Hart>,
    /// Frequency of the `time` CSR, in Hz.
    pub timebase_hz: u64,
    /// RAM.
    pub memory: Vec<PhysRange>,
    /// RAM that is not ours: `/memreserve/` entries and `/reserved-memory` children.
    pub reserved: Vec<PhysRange>,
    pub uart: Option<Uart>,
    pub plic: Option<Plic>,
    /// virtio-mmio transports, in ascending address order.
    pub virtio: Vec<MmioDevice>,
    pub clint: Option<Clint>,
    /// The real-time clock (`google,goldfish-rtc`), if there is one.
    pub rtc: Option<MmioDevice>,
    pub poweroff: Option<SysconWrite>,
    pub reboot: Option<SysconWrite>,
    /// `/chosen/bootargs`.
    pub bootargs: Option<String>,
    /// `/chosen/linux,initrd-start` .. `linux,initrd-end`.
    pub initrd: Option<PhysRange>,
}

/// Why a device tree could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The blob is not a flattened device tree.
    BadBlob,
    /// A required node or property is missing.
    Missing(&'static str),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBlob => write!(f, "the device tree blob is not valid"),
            Self::Missing(what) => write!(f, "the device tree has no {what}"),
        }
    }
}

/// Compatible strings of UARTs the console driver speaks to (16550 family).
pub const UART_COMPATIBLE: &[&str] = &["ns16550a", "ns16550", "snps,dw-apb-uart", SIFIVE_UART];
/// Compatible string of the SiFive UART.
pub const SIFIVE_UART: &str = "sifive,uart0";
/// Compatible strings of CLINTs.
pub const CLINT_COMPATIBLE: &[&str] = &["riscv,clint0", "sifive,clint0"];
/// Compatible strings of real-time clocks hypocaust reads.
pub const RTC_COMPATIBLE: &[&str] = &["google,goldfish-rtc"];
/// Compatible strings of PLICs.
pub const PLIC_COMPATIBLE: &[&str] = &["riscv,plic0", "sifive,plic-1.0.0"];

impl Platform {
    /// Reads the platform from a flattened device tree.
    pub fn from_dtb(blob: &[u8]) -> Result<Self, PlatformError> {
        let fdt = Fdt::new(blob).map_err(|_| PlatformError::BadBlob)?;
        let cpus = fdt.find_node("/cpus").ok_or(PlatformError::Missing("/cpus node"))?;
        let harts: Vec<Hart> = cpus
            .children()
            .filter(|n| prop_str(n, "device_type") == Some("cpu"))
            .filter_map(parse_hart)
            .collect();
        if harts.is_empty() {
            return Err(PlatformError::Missing("cpu nodes"));
        }
        let timebase_hz = prop_uint(&cpus, "timebase-frequency")
            .or_else(|| cpus.children().find_map(|c| prop_uint(&c, "timebase-frequency")))
            .ok_or(PlatformError::Missing("timebase-frequency"))?;

        let memory = fdt
            .all_nodes()
            .filter(|n| prop_str(n, "device_type") == Some("memory"))
            .flat_map(regions)
            .collect();

        let mut reserved: Vec<PhysRange> = fdt
            .memory_reservations()
            .filter_map(|r| range(r.address() as u64, r.size() as u64))
            .collect();
        if let Some(node) = fdt.find_node("/reserved-memory") {
            reserved.extend(node.children().flat_map(regions));
        }

        let chosen = fdt.find_node("/chosen");
        let stdout = chosen
            .and_then(|c| prop_str(&c, "stdout-path"))
            .map(|p| p.split(':').next().unwrap_or(p));
        let uart = stdout
            .and_then(|path| fdt.find_node(path))
            .filter(|n| is_compatible(n, UART_COMPATIBLE))
            .or_else(|| {
                fdt.all_nodes().find(|n| is_compatible(n, UART_COMPATIBLE) && is_enabled(n))
            })
            .and_then(|n| parse_uart(&n));

        let plic = fdt
            .all_nodes()
            .find(|n| is_compatible(n, PLIC_COMPATIBLE))
            .and_then(|n| parse_plic(&n, &harts));

        let mut virtio: Vec<MmioDevice> = fdt
            .all_nodes()
            .filter(|n| is_compatible(n, &["virtio,mmio"]) && is_enabled(n))
            .filter_map(|n| {
                let region = regions(n).next()?;
                Some(MmioDevice { region, irq: first_irq(&n) })
            })
            .collect();
        virtio.sort_by_key(|d| d.region.start);

        let clint = fdt
            .all_nodes()
            .find(|n| is_compatible(n, CLINT_COMPATIBLE))
            .and_then(|n| parse_clint(&n, &harts));
        let rtc = fdt
            .all_nodes()
            .find(|n| is_compatible(n, RTC_COMPATIBLE) && is_enabled(n))
            .and_then(|n| Some(MmioDevice { region: regions(n).next()?, irq: first_irq(&n) }));
        let syscon = |compatible: &str| {
            let node = fdt.all_nodes().find(|n| is_compatible(n, &[compatible]))?;
            let target = fdt.find_phandle(prop_uint(&node, "regmap")? as u32)?;
            let base = regions(target).next()?.start;
            let address = base.checked_add(prop_uint(&node, "offset").unwrap_or(0))?;
            Some(SysconWrite { address, value: prop_uint(&node, "value")? as u32 })
        };
        let (poweroff, reboot) = (syscon("syscon-poweroff"), syscon("syscon-reboot"));

        let bootargs = chosen.and_then(|c| prop_str(&c, "bootargs")).map(ToString::to_string);
        let initrd = chosen.and_then(|c| {
            let start = prop_uint(&c, "linux,initrd-start")?;
            let end = prop_uint(&c, "linux,initrd-end")?;
            (end > start)
                .then(|| PhysRange { start: HostPhysAddr::new(start), end: HostPhysAddr::new(end) })
        });

        Ok(Self {
            model: fdt
                .find_node("/")
                .and_then(|r| prop_str(&r, "model"))
                .unwrap_or("unknown")
                .to_string(),
            harts,
            timebase_hz,
            memory,
            reserved,
            uart,
            plic,
            virtio,
            clint,
            rtc,
            poweroff,
            reboot,
            bootargs,
            initrd,
        })
    }

    /// Total RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.memory.iter().map(|r| r.size()).sum()
    }

    /// The harts that can be used (enabled, with an MMU).
    pub fn usable_harts(&self) -> impl Iterator<Item = &Hart> {
        self.harts.iter().filter(|h| h.enabled && h.mmu.is_some())
    }

    /// The hart with ID `id`.
    pub fn hart(&self, id: usize) -> Option<&Hart> {
        self.harts.iter().find(|h| h.id == id)
    }
}

fn range(start: u64, size: u64) -> Option<PhysRange> {
    (size > 0).then_some(())?;
    AddrRange::from_start_size(HostPhysAddr::new(start), size)
}

fn regions<'a>(node: FdtNode<'_, 'a>) -> impl Iterator<Item = PhysRange> + 'a {
    node.reg()
        .into_iter()
        .flatten()
        .filter_map(|r| range(r.starting_address as u64, r.size? as u64))
}

fn prop_str<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let value = node.property(name)?.value;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(&value[..end]).ok()
}

fn prop_uint(node: &FdtNode<'_, '_>, name: &str) -> Option<u64> {
    let value = node.property(name)?.value;
    match value.len() {
        4 => Some(u32::from_be_bytes(value.try_into().ok()?) as u64),
        8 => Some(u64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

fn prop_cells<'a>(node: &FdtNode<'_, 'a>, name: &str) -> impl Iterator<Item = u32> + 'a {
    let value = node.property(name).map(|p| p.value).unwrap_or(&[]);
    value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn is_compatible(node: &FdtNode<'_, '_>, with: &[&str]) -> bool {
    node.compatible().is_some_and(|c| c.all().any(|s| with.contains(&s)))
}

fn is_enabled(node: &FdtNode<'_, '_>) -> bool {
    matches!(prop_str(node, "status"), None | Some("okay") | Some("ok"))
}

fn first_irq(node: &FdtNode<'_, '_>) -> Option<u32> {
    prop_cells(node, "interrupts").next()
}

fn parse_hart(node: FdtNode<'_, '_>) -> Option<Hart> {
    let id = prop_uint(&node, "reg")? as usize;
    let mmu = match prop_str(&node, "mmu-type") {
        Some("riscv,sv39") => Some(SatpMode::Sv39),
        Some("riscv,sv48") => Some(SatpMode::Sv48),
        Some("riscv,sv57") => Some(SatpMode::Sv57),
        _ => None,
    };
    let intc_phandle = node
        .children()
        .find(|c| is_compatible(c, &["riscv,cpu-intc"]))
        .and_then(|c| prop_uint(&c, "phandle"))
        .map(|p| p as u32);
    Some(Hart {
        id,
        isa: Isa::parse(prop_str(&node, "riscv,isa").unwrap_or("")),
        mmu,
        enabled: is_enabled(&node),
        intc_phandle,
    })
}

fn parse_uart(node: &FdtNode<'_, '_>) -> Option<Uart> {
    let region = regions(*node).next()?;
    let compatible = node.compatible()?.all().find(|s| UART_COMPATIBLE.contains(s))?.to_string();
    let kind = if compatible == SIFIVE_UART { UartKind::Sifive } else { UartKind::Ns16550 };
    Some(Uart {
        region,
        compatible,
        kind,
        reg_shift: prop_uint(node, "reg-shift").unwrap_or(0) as u32,
        reg_io_width: prop_uint(node, "reg-io-width").unwrap_or(1) as u32,
        irq: first_irq(node),
    })
}

/// Machine software interrupt number in `interrupts-extended` of a CLINT.
const IRQ_M_SOFT: u32 = 3;

fn parse_clint(node: &FdtNode<'_, '_>, harts: &[Hart]) -> Option<Clint> {
    let region = regions(*node).next()?;
    let cells: Vec<u32> = prop_cells(node, "interrupts-extended").collect();
    // Each hart has a software and a timer pair, in hart order.
    let harts = cells
        .chunks_exact(2)
        .filter(|pair| pair[1] == IRQ_M_SOFT)
        .map(|pair| {
            harts.iter().find(|h| h.intc_phandle == Some(pair[0])).map_or(usize::MAX, |h| h.id)
        })
        .collect();
    Some(Clint { region, harts })
}

/// Supervisor external interrupt number in `interrupts-extended` of a PLIC.
const IRQ_S_EXT: u32 = 9;
/// Machine external interrupt number.
const IRQ_M_EXT: u32 = 11;

fn parse_plic(node: &FdtNode<'_, '_>, harts: &[Hart]) -> Option<Plic> {
    let region = regions(*node).next()?;
    let ndev = prop_uint(node, "riscv,ndev").unwrap_or(0) as u32;
    let cells: Vec<u32> = prop_cells(node, "interrupts-extended").collect();
    let contexts = cells
        .chunks_exact(2)
        .enumerate()
        .filter_map(|(index, pair)| {
            let hart = harts.iter().find(|h| h.intc_phandle == Some(pair[0]))?.id;
            let mode = match pair[1] {
                IRQ_S_EXT => ContextMode::Supervisor,
                IRQ_M_EXT => ContextMode::Machine,
                _ => return None, // e.g. 0xffffffff: a context the firmware hid
            };
            Some(PlicContext { index, hart, mode })
        })
        .collect();
    Some(Plic { region, ndev, contexts })
}

#[cfg(test)]
mod tests;
