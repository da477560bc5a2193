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
}

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

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", dt.bootargs)?;
    if let Some((start, end)) = dt.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
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
    w.end_node(root)?;
    w.finish()
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
    }
}
