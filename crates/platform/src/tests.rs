extern crate std;

use super::*;
use std::vec;

const SMP1: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-smp1.dtb");
const SMP4: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-smp4.dtb");
const NOMMU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-nommu.dtb");

fn hpa_range(start: u64, size: u64) -> PhysRange {
    AddrRange::from_start_size(HostPhysAddr::new(start), size).unwrap()
}

#[test]
fn qemu_virt_single_hart() {
    let p = Platform::from_dtb(SMP1).unwrap();
    assert_eq!(p.model, "riscv-virtio,qemu");
    assert_eq!(p.harts.len(), 1);
    let h = &p.harts[0];
    assert_eq!(h.id, 0);
    assert_eq!(h.mmu, Some(SatpMode::Sv48));
    assert!(h.enabled);
    assert!(h.isa.has_extension("sstc") && !h.isa.has_letter('h'));
    assert_eq!(p.timebase_hz, 10_000_000);
    assert_eq!(p.memory, vec![hpa_range(0x8000_0000, 1 << 30)]);
    assert_eq!(p.ram_size(), 1 << 30);
    let uart = p.uart.as_ref().unwrap();
    assert_eq!(uart.region, hpa_range(0x1000_0000, 0x100));
    assert_eq!(uart.irq, Some(10));
    assert_eq!((uart.reg_shift, uart.reg_io_width), (0, 1));
    let plic = p.plic.as_ref().unwrap();
    assert_eq!(plic.region, hpa_range(0x0c00_0000, 0x60_0000));
    assert_eq!(plic.ndev, 0x60);
    assert_eq!(plic.supervisor_context(0), Some(1));
    assert_eq!(p.virtio.len(), 8);
    assert_eq!(p.virtio[0], MmioDevice { region: hpa_range(0x1000_1000, 0x1000), irq: Some(1) });
    assert_eq!(p.virtio[7].region.start, HostPhysAddr::new(0x1000_8000));
    assert_eq!(p.bootargs, None);
    assert_eq!(p.initrd, None);
}

#[test]
fn qemu_virt_four_harts() {
    let p = Platform::from_dtb(SMP4).unwrap();
    let ids: std::vec::Vec<usize> = p.usable_harts().map(|h| h.id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    let plic = p.plic.as_ref().unwrap();
    assert_eq!(plic.contexts.len(), 8);
    for hart in 0..4 {
        assert_eq!(plic.supervisor_context(hart), Some(2 * hart + 1));
    }
    assert_eq!(p.hart(3).map(|h| h.id), Some(3));
    assert_eq!(p.hart(4), None);
}

#[test]
fn hart_without_mmu_is_not_usable() {
    let p = Platform::from_dtb(NOMMU).unwrap();
    assert_eq!(p.harts.len(), 2);
    assert!(p.harts.iter().all(|h| h.mmu.is_none()));
    assert_eq!(p.usable_harts().count(), 0);
    assert_eq!(p.ram_size(), 256 << 20);
}

#[test]
fn garbage_is_refused() {
    assert_eq!(Platform::from_dtb(&[0u8; 64]), Err(PlatformError::BadBlob));
    assert_eq!(Platform::from_dtb(&SMP1[..40]), Err(PlatformError::BadBlob));
}

/// A small tree in the shape firmware hands over after its fixups.
fn synthetic(with_timebase: bool) -> std::vec::Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new_with_mem_reserv(&[vm_fdt::FdtReserveEntry::new(
        0x8000_0000,
        0x8_0000,
    )
    .unwrap()])
    .unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    w.property_string("model", "test-board").unwrap();

    let chosen = w.begin_node("chosen").unwrap();
    w.property_string("bootargs", "log=debug").unwrap();
    w.property_string("stdout-path", "/soc/uart@20000000:115200").unwrap();
    w.property_u64("linux,initrd-start", 0x8800_0000).unwrap();
    w.property_u64("linux,initrd-end", 0x8810_0000).unwrap();
    w.end_node(chosen).unwrap();

    let cpus = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    if with_timebase {
        w.property_u32("timebase-frequency", 4_000_000).unwrap();
    }
    for (id, status, phandle) in [(0u32, "okay", 10u32), (1, "disabled", 11)] {
        let cpu = w.begin_node(&std::format!("cpu@{id}")).unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_u32("reg", id).unwrap();
        w.property_string("status", status).unwrap();
        w.property_string("riscv,isa", "rv64imafdc_sstc").unwrap();
        w.property_string("mmu-type", "riscv,sv39").unwrap();
        let intc = w.begin_node("interrupt-controller").unwrap();
        w.property_string("compatible", "riscv,cpu-intc").unwrap();
        w.property_u32("phandle", phandle).unwrap();
        w.end_node(intc).unwrap();
        w.end_node(cpu).unwrap();
    }
    w.end_node(cpus).unwrap();

    let mem = w.begin_node("memory@80000000").unwrap();
    w.property_string("device_type", "memory").unwrap();
    w.property_array_u64("reg", &[0x8000_0000, 0x1000_0000, 0x1_0000_0000, 0x1000_0000]).unwrap();
    w.end_node(mem).unwrap();

    let resv = w.begin_node("reserved-memory").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    w.property_null("ranges").unwrap();
    let fw = w.begin_node("mmode_resv0@80000000").unwrap();
    w.property_array_u64("reg", &[0x8000_0000, 0x4_0000]).unwrap();
    w.property_null("no-map").unwrap();
    w.end_node(fw).unwrap();
    w.end_node(resv).unwrap();

    let soc = w.begin_node("soc").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    // A first UART that is not stdout; the chosen one must win.
    for addr in [0x1000_0000u64, 0x2000_0000] {
        let uart = w.begin_node(&std::format!("uart@{addr:x}")).unwrap();
        w.property_string_list("compatible", vec!["snps,dw-apb-uart".into()]).unwrap();
        w.property_array_u64("reg", &[addr, 0x100]).unwrap();
        w.property_u32("reg-shift", 2).unwrap();
        w.property_u32("reg-io-width", 4).unwrap();
        w.property_u32("interrupts", 33).unwrap();
        w.end_node(uart).unwrap();
    }
    let plic = w.begin_node("plic@c000000").unwrap();
    w.property_string_list("compatible", vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()])
        .unwrap();
    w.property_array_u64("reg", &[0x0c00_0000, 0x400_0000]).unwrap();
    w.property_u32("riscv,ndev", 64).unwrap();
    // Context 0: M-mode hidden by firmware (0xffffffff); 1: S-mode of hart 0; 2, 3: hart 1.
    w.property_array_u32("interrupts-extended", &[10, 0xffff_ffff, 10, 9, 11, 11, 11, 9]).unwrap();
    w.end_node(plic).unwrap();
    let vio = w.begin_node("virtio_mmio@10001000").unwrap();
    w.property_string("compatible", "virtio,mmio").unwrap();
    w.property_array_u64("reg", &[0x1000_1000, 0x1000]).unwrap();
    w.property_string("status", "disabled").unwrap();
    w.end_node(vio).unwrap();
    w.end_node(soc).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn firmware_fixups_and_chosen() {
    let p = Platform::from_dtb(&synthetic(true)).unwrap();
    assert_eq!(p.model, "test-board");
    assert_eq!(p.timebase_hz, 4_000_000);
    assert_eq!(
        p.memory,
        vec![hpa_range(0x8000_0000, 0x1000_0000), hpa_range(0x1_0000_0000, 0x1000_0000)]
    );
    assert_eq!(
        p.reserved,
        vec![hpa_range(0x8000_0000, 0x8_0000), hpa_range(0x8000_0000, 0x4_0000)]
    );
    assert_eq!(p.bootargs.as_deref(), Some("log=debug"));
    assert_eq!(p.initrd, Some(hpa_range(0x8800_0000, 0x10_0000)));
    let uart = p.uart.clone().unwrap();
    assert_eq!(uart.region.start, HostPhysAddr::new(0x2000_0000));
    assert_eq!((uart.reg_shift, uart.reg_io_width, uart.irq), (2, 4, Some(33)));
    assert_eq!(uart.compatible, "snps,dw-apb-uart");
    assert_eq!(p.usable_harts().count(), 1);
    assert_eq!(p.harts[0].mmu, Some(SatpMode::Sv39));
    let plic = p.plic.unwrap();
    assert_eq!(plic.supervisor_context(0), Some(1));
    assert_eq!(plic.supervisor_context(1), Some(3));
    assert_eq!(plic.contexts.len(), 3);
    assert!(p.virtio.is_empty(), "disabled slots are skipped");
}

#[test]
fn missing_timebase_is_an_error() {
    assert_eq!(
        Platform::from_dtb(&synthetic(false)),
        Err(PlatformError::Missing("timebase-frequency"))
    );
}

const QEMU10_SMP2: &[u8] = include_bytes!("../tests/fixtures/qemu10-virt-smp2.dtb");

#[test]
fn qemu10_virt_machine_devices() {
    let p = Platform::from_dtb(QEMU10_SMP2).unwrap();
    assert_eq!(p.harts.len(), 2);
    assert_eq!(p.harts[0].mmu, Some(SatpMode::Sv57));
    assert!(p.harts[0].isa.has_extension("zicboz") && p.harts[0].isa.has_extension("sstc"));
    let clint = p.clint.as_ref().unwrap();
    assert_eq!(clint.region, hpa_range(0x0200_0000, 0x1_0000));
    assert_eq!(clint.harts, vec![0, 1]);
    assert_eq!((clint.msip(1), clint.mtimecmp(1)), (Some(4), Some(0x4008)));
    assert_eq!(clint.msip(2), None);
    let at = |a: u64| HostPhysAddr::new(a);
    assert_eq!(p.poweroff, Some(SysconWrite { address: at(0x10_0000), value: 0x5555 }));
    assert_eq!(p.reboot, Some(SysconWrite { address: at(0x10_0000), value: 0x7777 }));
    let rtc = p.rtc.unwrap();
    assert_eq!((rtc.region, rtc.irq), (hpa_range(0x10_1000, 0x1000), Some(11)));
}

const SIFIVE_U: &[u8] = include_bytes!("../tests/fixtures/qemu-sifive_u-smp3.dtb");

/// QEMU's `sifive_u` (`-smp 3`): hart 0 is the E51 (no MMU, no S-mode), the console a
/// SiFive UART, the PLIC's S contexts are 2h, no RTC and no virtio.
#[test]
fn qemu_sifive_u() {
    let p = Platform::from_dtb(SIFIVE_U).unwrap();
    assert_eq!(p.harts.len(), 3);
    assert_eq!(p.harts[0].mmu, None);
    let usable: vec::Vec<usize> = p.usable_harts().map(|h| h.id).collect();
    assert_eq!(usable, vec![1, 2]);
    assert_eq!(p.timebase_hz, 1_000_000);
    let uart = p.uart.as_ref().unwrap();
    assert_eq!(uart.kind, UartKind::Sifive);
    assert_eq!(uart.region, hpa_range(0x1001_0000, 0x1000));
    assert_eq!(uart.irq, Some(4));
    let plic = p.plic.as_ref().unwrap();
    assert_eq!(plic.ndev, 53);
    assert_eq!(plic.supervisor_context(1), Some(2));
    assert_eq!(plic.supervisor_context(2), Some(4));
    assert_eq!(plic.supervisor_context(0), None);
    assert!(p.clint.is_some());
    assert!(p.rtc.is_none() && p.virtio.is_empty());
    assert!(p.poweroff.is_none());
}
