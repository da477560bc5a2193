//! The device tree a guest boots with.

use alloc::format;
use alloc::vec::Vec;

use vm_fdt::{Error, FdtWriter};

/// What the guest's device tree describes.
#[derive(Clone, Debug)]
pub struct GuestDt<'a> {
    pub model: &'a str,
    /// Number of harts (vCPUs); hart IDs are `0..harts`.
    pub harts: usize,
    /// `riscv,isa` of every hart.
    pub isa: &'a str,
    /// `mmu-type` of every hart (`riscv,sv39`, ...).
    pub mmu_type: &'a str,
    pub timebase_hz: u32,
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: &'a str,
    /// `[start, end)` of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// `/chosen/rng-seed`: entropy for the guest's random number generator.
    pub rng_seed: Option<&'a [u8]>,
    /// The emulated and passed-through devices.
    pub devices: Devices<'a>,
}

/// A device's registers and interrupt source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub base: u64,
    pub size: u64,
    /// Its source on the PLIC.
    pub irq: u32,
}

/// The PLIC a guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlicNode {
    pub base: u64,
    pub size: u64,
    /// `riscv,ndev`: the highest source number.
    pub ndev: u32,
}

/// The register interface of the guest's console UART.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UartKind {
    /// `ns16550a`, as on QEMU `virt`.
    #[default]
    Ns16550,
    /// `sifive,uart0`, as on QEMU `sifive_u`: the node gets a fixed clock (Linux's driver
    /// needs one) and the `serial0` alias (it numbers ports by alias).
    Sifive,
}

/// The devices under `/soc`, laid out as on QEMU's `virt` machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Devices<'a> {
    /// The console UART; it becomes `/chosen/stdout-path`.
    pub uart: Option<Device>,
    /// What kind of UART `uart` is.
    pub uart_kind: UartKind,
    /// The PLIC, with an M-mode and an S-mode context per hart (as `virt` has them: the
    /// M-mode one is there so context numbers match; it never signals).
    pub plic: Option<PlicNode>,
    /// `virtio,mmio` transports.
    pub virtio: &'a [Device],
    /// A Goldfish real-time clock (`google,goldfish-rtc`).
    pub rtc: Option<Device>,
}

/// phandle of the PLIC.
const PLIC_PHANDLE: u32 = 0x1000;
/// phandle of the SiFive UART's clock.
const UART_CLOCK_PHANDLE: u32 = 0x1001;
/// The SiFive UART's input clock (`sifive_u`'s `hfclk`, 33.333333 MHz).
const SIFIVE_UART_CLOCK_HZ: u32 = 33_333_333;

/// `clock-frequency` of QEMU's `virt` 16550 (3.6864 MHz).
const UART_CLOCK_HZ: u32 = 3_686_400;

/// Interrupt numbers of the hart-local interrupt controller.
const IRQ_M_EXT: u32 = 11;
const IRQ_S_EXT: u32 = 9;

/// phandle of hart `i`'s interrupt controller.
pub fn intc_phandle(hart: usize) -> u32 {
    1 + hart as u32
}

/// Builds the flattened device tree.
pub fn build(dt: &GuestDt) -> Result<Vec<u8>, Error> {
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "riscv-virtio")?;
    w.property_string("model", dt.model)?;

    if let (Some(uart), UartKind::Sifive) = (dt.devices.uart, dt.devices.uart_kind) {
        let aliases = w.begin_node("aliases")?;
        w.property_string("serial0", &format!("/soc/serial@{:x}", uart.base))?;
        w.end_node(aliases)?;
        let clock = w.begin_node("uart-clock")?;
        w.property_string("compatible", "fixed-clock")?;
        w.property_u32("#clock-cells", 0)?;
        w.property_u32("clock-frequency", SIFIVE_UART_CLOCK_HZ)?;
        w.property_phandle(UART_CLOCK_PHANDLE)?;
        w.end_node(clock)?;
    }

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", dt.bootargs)?;
    if let Some(uart) = dt.devices.uart {
        w.property_string("stdout-path", &format!("/soc/serial@{:x}", uart.base))?;
    }
    if let Some((start, end)) = dt.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    if let Some(seed) = dt.rng_seed {
        w.property("rng-seed", seed)?;
    }
    w.end_node(chosen)?;

    let memory = w.begin_node(&format!("memory@{:x}", dt.ram_base))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[dt.ram_base, dt.ram_size])?;
    w.end_node(memory)?;

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    w.property_u32("timebase-frequency", dt.timebase_hz)?;
    for hart in 0..dt.harts {
        let cpu = w.begin_node(&format!("cpu@{hart:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_u32("reg", hart as u32)?;
        w.property_string("status", "okay")?;
        w.property_string("compatible", "riscv")?;
        w.property_string("riscv,isa", dt.isa)?;
        w.property_string("mmu-type", dt.mmu_type)?;
        let intc = w.begin_node("interrupt-controller")?;
        w.property_u32("#interrupt-cells", 1)?;
        w.property_null("interrupt-controller")?;
        w.property_string("compatible", "riscv,cpu-intc")?;
        w.property_phandle(intc_phandle(hart))?;
        w.end_node(intc)?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;
    soc(&mut w, dt)?;
    w.end_node(root)?;
    w.finish()
}

/// The `/soc` bus with the guest's devices.
fn soc(w: &mut FdtWriter, dt: &GuestDt) -> Result<(), Error> {
    let d = &dt.devices;
    let soc = w.begin_node("soc")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_string("compatible", "simple-bus")?;
    w.property_null("ranges")?;
    if let Some(plic) = d.plic {
        let node = w.begin_node(&format!("plic@{:x}", plic.base))?;
        w.property_string_list(
            "compatible",
            alloc::vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
        )?;
        w.property_array_u64("reg", &[plic.base, plic.size])?;
        w.property_u32("#address-cells", 0)?;
        w.property_u32("#interrupt-cells", 1)?;
        w.property_null("interrupt-controller")?;
        w.property_u32("riscv,ndev", plic.ndev)?;
        let contexts: Vec<u32> = (0..dt.harts)
            .flat_map(|h| [intc_phandle(h), IRQ_M_EXT, intc_phandle(h), IRQ_S_EXT])
            .collect();
        w.property_array_u32("interrupts-extended", &contexts)?;
        w.property_phandle(PLIC_PHANDLE)?;
        w.end_node(node)?;
    }
    let with_irq = |w: &mut FdtWriter, dev: &Device| -> Result<(), Error> {
        w.property_array_u64("reg", &[dev.base, dev.size])?;
        if d.plic.is_some() {
            w.property_u32("interrupt-parent", PLIC_PHANDLE)?;
            w.property_u32("interrupts", dev.irq)?;
        }
        Ok(())
    };
    if let Some(uart) = &d.uart {
        let node = w.begin_node(&format!("serial@{:x}", uart.base))?;
        match d.uart_kind {
            UartKind::Ns16550 => {
                w.property_string("compatible", "ns16550a")?;
                w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
            }
            UartKind::Sifive => {
                w.property_string_list(
                    "compatible",
                    alloc::vec!["sifive,fu540-c000-uart0".into(), "sifive,uart0".into()],
                )?;
                w.property_u32("clocks", UART_CLOCK_PHANDLE)?;
            }
        }
        with_irq(w, uart)?;
        w.end_node(node)?;
    }
    if let Some(rtc) = &d.rtc {
        let node = w.begin_node(&format!("rtc@{:x}", rtc.base))?;
        w.property_string("compatible", "google,goldfish-rtc")?;
        with_irq(w, rtc)?;
        w.end_node(node)?;
    }
    for dev in d.virtio {
        let node = w.begin_node(&format!("virtio_mmio@{:x}", dev.base))?;
        w.property_string("compatible", "virtio,mmio")?;
        with_irq(w, dev)?;
        w.end_node(node)?;
    }
    w.end_node(soc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_guest() {
        let blob = build(&GuestDt {
            model: "hypocaust,guest",
            harts: 2,
            isa: "rv64imafdc_zicsr_sstc",
            mmu_type: "riscv,sv39",
            timebase_hz: 10_000_000,
            ram_base: 0x8000_0000,
            ram_size: 256 << 20,
            bootargs: "console=hvc0",
            initrd: Some((0x8800_0000, 0x8810_0000)),
            rng_seed: Some(&[1, 2, 3, 4]),
            devices: Devices::default(),
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.chosen().bootargs(), Some("console=hvc0"));
        let r = fdt.memory().regions().next().unwrap();
        assert_eq!((r.starting_address as u64, r.size), (0x8000_0000, Some(256 << 20)));
        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].ids().first(), 1);
        assert_eq!(
            cpus[0].property("riscv,isa").and_then(|p| p.as_str()),
            Some("rv64imafdc_zicsr_sstc")
        );
        assert_eq!(cpus[0].property("mmu-type").and_then(|p| p.as_str()), Some("riscv,sv39"));
        assert_eq!(cpus[0].timebase_frequency(), 10_000_000);
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("linux,initrd-start").and_then(|p| p.as_usize()),
            Some(0x8800_0000)
        );
        assert!(fdt.find_node("/cpus/cpu@1/interrupt-controller").is_some());
        assert!(fdt.find_node("/soc/plic@c000000").is_none());
        assert!(chosen.property("stdout-path").is_none());
        assert_eq!(chosen.property("rng-seed").map(|p| p.value), Some(&[1u8, 2, 3, 4][..]));
    }

    #[test]
    fn describes_devices_as_virt_does() {
        let virtio = [
            Device { base: 0x1000_8000, size: 0x1000, irq: 8 },
            Device { base: 0x1000_1000, size: 0x1000, irq: 1 },
        ];
        let blob = build(&GuestDt {
            model: "hypocaust,guest",
            harts: 2,
            isa: "rv64imac",
            mmu_type: "riscv,sv39",
            timebase_hz: 10_000_000,
            ram_base: 0x8000_0000,
            ram_size: 64 << 20,
            bootargs: "",
            initrd: None,
            rng_seed: None,
            devices: Devices {
                uart: Some(Device { base: 0x1000_0000, size: 0x100, irq: 10 }),
                uart_kind: UartKind::Ns16550,
                plic: Some(PlicNode { base: 0xc00_0000, size: 0x60_0000, ndev: 96 }),
                virtio: &virtio,
                rtc: Some(Device { base: 0x10_1000, size: 0x1000, irq: 11 }),
            },
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("stdout-path").and_then(|p| p.as_str()),
            Some("/soc/serial@10000000")
        );
        let plic = fdt.find_node("/soc/plic@c000000").unwrap();
        assert_eq!(plic.property("riscv,ndev").and_then(|p| p.as_usize()), Some(96));
        let ext: Vec<u32> = plic
            .property("interrupts-extended")
            .unwrap()
            .value
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ext, [1, 11, 1, 9, 2, 11, 2, 9]);
        let phandle = plic.property("phandle").and_then(|p| p.as_usize()).unwrap();
        let uart = fdt.find_node("/soc/serial@10000000").unwrap();
        assert_eq!(uart.compatible().unwrap().first(), "ns16550a");
        assert_eq!(uart.property("interrupts").and_then(|p| p.as_usize()), Some(10));
        assert_eq!(uart.property("interrupt-parent").and_then(|p| p.as_usize()), Some(phandle));
        let v = fdt.find_node("/soc/virtio_mmio@10008000").unwrap();
        assert_eq!(v.property("interrupts").and_then(|p| p.as_usize()), Some(8));
        let r = v.reg().unwrap().next().unwrap();
        assert_eq!((r.starting_address as u64, r.size), (0x1000_8000, Some(0x1000)));
        assert_eq!(fdt.all_nodes().filter(|n| n.name.starts_with("virtio_mmio")).count(), 2);
        let rtc = fdt.find_node("/soc/rtc@101000").unwrap();
        assert_eq!(rtc.compatible().unwrap().first(), "google,goldfish-rtc");
        assert_eq!(rtc.property("interrupts").and_then(|p| p.as_usize()), Some(11));
        assert!(chosen.property("rng-seed").is_none());
    }

    #[test]
    fn a_sifive_uart_gets_a_clock_and_an_alias() {
        let blob = build(&GuestDt {
            model: "hypocaust,guest",
            harts: 1,
            isa: "rv64imafdc",
            mmu_type: "riscv,sv39",
            timebase_hz: 1_000_000,
            ram_base: 0x8000_0000,
            ram_size: 64 << 20,
            bootargs: "",
            initrd: None,
            rng_seed: None,
            devices: Devices {
                uart: Some(Device { base: 0x1001_0000, size: 0x1000, irq: 4 }),
                uart_kind: UartKind::Sifive,
                plic: Some(PlicNode { base: 0xc00_0000, size: 0x400_0000, ndev: 53 }),
                virtio: &[],
                rtc: None,
            },
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let uart = fdt.find_node("/soc/serial@10010000").unwrap();
        assert!(uart.compatible().unwrap().all().any(|c| c == "sifive,uart0"));
        let clock = uart.property("clocks").and_then(|p| p.as_usize()).unwrap();
        let clk = fdt.find_phandle(clock as u32).unwrap();
        assert_eq!(clk.compatible().unwrap().first(), "fixed-clock");
        assert!(clk.property("clock-frequency").and_then(|p| p.as_usize()).unwrap() > 0);
        let alias = fdt.find_node("/aliases").unwrap().property("serial0").unwrap();
        assert_eq!(alias.as_str(), Some("/soc/serial@10010000"));
        assert_eq!(
            fdt.chosen().stdout().map(|s| s.name),
            Some("serial@10010000"),
            "the console is the UART"
        );
    }
}
