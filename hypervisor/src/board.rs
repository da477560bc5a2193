//! A guest's devices, laid out as on QEMU's `virt` machine: its own 16550 UART and PLIC
//! (models from crates/devices) and the virtio-mmio slots, passed through to the real
//! devices or empty. A guest load or store that reaches no RAM comes here by its
//! guest-physical address.

use alloc::vec::Vec;

use devices::plic::Plic;
use devices::uart::Uart16550;
use devices::virtio::{VirtioHost, VirtioProxy};
use devices::{Mmio, Width};
use loader::fdt::{Device, PlicNode};
use platform::Platform;
use rv::{GuestPhysAddr, HostPhysAddr};

use crate::layout::phys_to_virt;
use crate::memory::GuestMemory;
use crate::{console, irq, mm};

/// A virtio-mmio slot as the guest sees it.
struct Slot {
    dev: Device,
    proxy: VirtioProxy,
    /// The real slot behind it, if the guest owns its device.
    real: Option<HostPhysAddr>,
    /// The real device's ID (0: none).
    device_id: u32,
}

/// What a guest's devices are, decided at boot from the host's.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub uart: Option<Device>,
    pub plic: Option<PlicNode>,
    /// Every virtio slot of the host, with whether this guest owns the device in it.
    pub virtio: Vec<(Device, bool)>,
}

impl Layout {
    /// The layout for a guest that asks for the host's virtio slots in bitmask `wanted`
    /// (bit i: slot i in address order): the host's UART and PLIC addresses (emulated), and
    /// every virtio slot, the wanted ones that hold a device and are not `taken` by an
    /// earlier guest passed through (and then marked taken).
    pub fn for_guest(platform: &Platform, wanted: u64, taken: &mut u64) -> Self {
        let uart = platform.uart.as_ref().map(|u| Device {
            base: u.region.start.raw(),
            size: u.region.size(),
            irq: u.irq.unwrap_or(0),
        });
        let plic = platform.plic.as_ref().map(|p| PlicNode {
            base: p.region.start.raw(),
            size: p.region.size(),
            ndev: p.ndev,
        });
        let mut virtio = Vec::new();
        for (i, v) in platform.virtio.iter().enumerate() {
            let Some(irq) = v.irq else { continue };
            let dev = Device { base: v.region.start.raw(), size: v.region.size(), irq };
            let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
            let owned = wanted & bit != 0 && *taken & bit == 0 && slot_populated(v.region.start);
            if owned {
                *taken |= bit;
            }
            virtio.push((dev, owned));
        }
        Self { uart, plic, virtio }
    }

    /// The virtio slots, for the device tree.
    pub fn virtio_nodes(&self) -> Vec<Device> {
        // QEMU lists the slots from the highest address down; so does the guest's tree.
        self.virtio.iter().rev().map(|(d, _)| *d).collect()
    }
}

/// Whether a device sits behind the host's virtio-mmio slot at `pa` (magic right, device
/// ID not 0).
fn slot_populated(pa: HostPhysAddr) -> bool {
    let regs = phys_to_virt(pa).raw() as *const u32;
    // SAFETY: the slot's registers are in the direct map (mm maps every virtio slot of the
    // device tree); reading the magic and device ID has no side effects.
    let (magic, id) = unsafe { (regs.read_volatile(), regs.add(2).read_volatile()) };
    magic == devices::virtio::MAGIC && id != 0
}

/// The `Version` register of the host's virtio-mmio slot at `pa` (1 legacy, 2 modern).
fn slot_version(pa: HostPhysAddr) -> u32 {
    let regs = phys_to_virt(pa).raw() as *const u32;
    // SAFETY: as in `slot_populated`.
    unsafe { regs.add(1).read_volatile() }
}

/// The `DeviceID` register of the host's virtio-mmio slot at `pa`.
fn slot_device_id(pa: HostPhysAddr) -> u32 {
    let regs = phys_to_virt(pa).raw() as *const u32;
    // SAFETY: as in `slot_populated`.
    unsafe { regs.add(2).read_volatile() }
}

/// The services a proxy needs, for one access.
struct Passthrough<'a> {
    regs: usize,
    memory: &'a GuestMemory,
}

impl VirtioHost for Passthrough<'_> {
    fn device_read(&mut self, offset: u64, width: Width) -> u64 {
        let p = self.regs + offset as usize;
        // SAFETY: `offset` lies in the slot's 4 KiB register window (the proxy only forwards
        // offsets inside it), which the direct map covers; widths are the guest's aligned
        // 1, 2 or 4 bytes. The fence orders the read before later memory reads (a used
        // index read after an interrupt status).
        unsafe {
            let value = match width {
                Width::Byte => (p as *const u8).read_volatile() as u64,
                Width::Half => (p as *const u16).read_volatile() as u64,
                Width::Word => (p as *const u32).read_volatile() as u64,
                Width::Double => (p as *const u64).read_volatile(),
            };
            core::arch::asm!("fence i, r", options(nostack));
            value
        }
    }

    fn device_write(&mut self, offset: u64, width: Width, value: u64) {
        let p = self.regs + offset as usize;
        // SAFETY: as in `device_read`; the fence makes the ring writes before it visible to
        // the device before it is notified.
        unsafe {
            core::arch::asm!("fence w, o", options(nostack));
            match width {
                Width::Byte => (p as *mut u8).write_volatile(value as u8),
                Width::Half => (p as *mut u16).write_volatile(value as u16),
                Width::Word => (p as *mut u32).write_volatile(value as u32),
                Width::Double => (p as *mut u64).write_volatile(value),
            }
        }
    }

    fn guest_to_host(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr> {
        self.memory.translate(gpa, len)
    }

    fn read_guest(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
        self.memory.read(gpa, buf)
    }

    fn write_guest(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool {
        self.memory.write(gpa, data)
    }

    fn alloc_dma(&mut self, bytes: usize, align: usize) -> Option<HostPhysAddr> {
        debug_assert!(align <= rv::PAGE_SIZE as usize);
        mm::alloc_frames(bytes.div_ceil(rv::PAGE_SIZE as usize))
    }

    fn free_dma(&mut self, hpa: HostPhysAddr, bytes: usize) {
        mm::free_frames(hpa, bytes.div_ceil(rv::PAGE_SIZE as usize));
    }

    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) {
        let src = phys_to_virt(hpa).raw() as *const u8;
        // SAFETY: `hpa` is shadow-ring memory from `alloc_dma`, in the direct map.
        unsafe { crate::mm::read_shared(src, buf) }
    }

    fn write_host(&mut self, hpa: HostPhysAddr, data: &[u8]) {
        let dst = phys_to_virt(hpa).raw() as *mut u8;
        // SAFETY: as in `read_host`.
        unsafe { crate::mm::write_shared(dst, data) }
    }
}

/// A guest's devices.
pub struct Board {
    index: usize,
    uart: Option<(Device, Uart16550)>,
    plic: Option<(PlicNode, Plic)>,
    slots: Vec<Slot>,
}

impl Board {
    /// The devices of guest `index` (one vCPU) as `layout` says.
    pub fn new(index: usize, layout: &Layout) -> Self {
        let slots = layout
            .virtio
            .iter()
            .map(|&(dev, owned)| {
                // The guest sees the slot where the host has it.
                let pa = HostPhysAddr::new(dev.base);
                let real = owned.then_some(pa);
                // An empty slot reports the transport version of the host's slots.
                let proxy = VirtioProxy::absent_with_version(slot_version(pa));
                let device_id = if owned { slot_device_id(pa) } else { 0 };
                Slot { dev, proxy, real, device_id }
            })
            .collect();
        Self {
            index,
            uart: layout.uart.map(|d| (d, Uart16550::new())),
            plic: layout.plic.map(|p| (p, Plic::new(1))),
            slots,
        }
    }

    /// Back to power-on state (guest reboot): devices reset, passed-through devices reset
    /// and their shadow queues freed.
    pub fn reset(&mut self, memory: &GuestMemory) {
        if let Some((_, uart)) = &mut self.uart {
            *uart = Uart16550::new();
        }
        if let Some((_, plic)) = &mut self.plic {
            *plic = Plic::new(1);
        }
        let hart = crate::hart::current_hart_id();
        for slot in &mut self.slots {
            if let Some(real) = slot.real {
                let mut host = Passthrough { regs: phys_to_virt(real).raw() as usize, memory };
                slot.proxy.reset(&mut host);
                slot.proxy = VirtioProxy::new(&mut host);
                irq::route(slot.dev.irq, Some(hart));
            }
        }
    }

    /// The passed-through devices, for the summary: (slot base, virtio device ID).
    pub fn passed_through(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.slots.iter().filter(|s| s.real.is_some()).map(|s| (s.dev.base, s.device_id))
    }

    /// Whether the guest's hart has its external interrupt asserted.
    pub fn external(&self) -> bool {
        self.plic.as_ref().is_some_and(|(_, p)| p.s_external(0))
    }

    /// A guest load of `width` at `gpa`; `None` if no device answers there.
    pub fn read(&mut self, memory: &GuestMemory, gpa: GuestPhysAddr, width: Width) -> Option<u64> {
        self.access(memory, gpa, width, None)
    }

    /// A guest store; `false` if no device takes it.
    pub fn write(
        &mut self,
        memory: &GuestMemory,
        gpa: GuestPhysAddr,
        width: Width,
        value: u64,
    ) -> bool {
        self.access(memory, gpa, width, Some(value)).is_some()
    }

    fn access(
        &mut self,
        memory: &GuestMemory,
        gpa: GuestPhysAddr,
        width: Width,
        store: Option<u64>,
    ) -> Option<u64> {
        let result = if let Some((d, uart)) = &mut self.uart
            && let Some(offset) = offset_in(gpa, d.base, d.size)
        {
            rw(uart, offset, width, store)
        } else if let Some((p, plic)) = &mut self.plic
            && let Some(offset) = offset_in(gpa, p.base, p.size)
        {
            rw(plic, offset, width, store)
        } else if let Some((offset, slot)) =
            self.slots.iter_mut().find_map(|s| Some((offset_in(gpa, s.dev.base, s.dev.size)?, s)))
        {
            let regs = slot.real.map_or(0, |r| phys_to_virt(r).raw() as usize);
            let mut host = Passthrough { regs, memory };
            let was_broken = slot.proxy.fault().is_some();
            let r = match store {
                None => slot.proxy.read(&mut host, offset, width),
                Some(v) => slot.proxy.write(&mut host, offset, width, v).map(|()| 0),
            };
            if let (false, Some(fault)) = (was_broken, slot.proxy.fault()) {
                log::info!(
                    "guest {}: virtio device at {:#x} refused the driver's request ({fault:?}); \
                     it needs a reset",
                    self.index,
                    slot.dev.base
                );
            }
            let level = slot.proxy.irq();
            let irq = slot.dev.irq;
            if let Some((_, plic)) = &mut self.plic {
                plic.set_level(irq, level);
            }
            r.ok()
        } else {
            return None;
        };
        self.after_access();
        result
    }

    /// Propagates output and interrupt lines after a device access.
    fn after_access(&mut self) {
        if let Some((_, uart)) = &mut self.uart {
            while let Some(b) = uart.take_output() {
                console::guest_output(self.index, &[b]);
            }
        }
        // A read of RBR may have made room for waiting input.
        self.pump_uart();
        // Completions need nothing on the host: hypocaust completes a passed-through
        // device's host interrupt as soon as the proxy has taken it (the proxy acknowledges
        // the device and keeps the guest's InterruptStatus itself).
        if let Some((_, plic)) = &mut self.plic {
            while plic.take_completed().is_some() {}
        }
    }

    /// Moves waiting console input into the UART while it has room.
    pub fn pump_uart(&mut self) {
        let Some((d, uart)) = &mut self.uart else { return };
        while uart.wants_input() {
            let mut byte = None;
            console::take_input(self.index, 1, |_, b| byte = Some(b));
            match byte {
                Some(b) => {
                    uart.receive(b);
                }
                None => break,
            }
        }
        // The UART drives its line at the moments QEMU's does (so the PLIC re-pends a
        // claimed source exactly as on `virt`).
        if let (Some(level), Some((_, plic))) = (uart.take_line_update(), &mut self.plic) {
            plic.set_level(d.irq, level);
        }
    }

    /// The host claimed `source`: if it is one of this guest's passed-through devices, the
    /// proxy acknowledges the device and copies completions back, the guest's line follows
    /// the proxy's `InterruptStatus`, and the host source is completed. Returns whether the
    /// source was this guest's.
    pub fn host_interrupt(&mut self, memory: &GuestMemory, source: u32, hart: usize) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| s.dev.irq == source && s.real.is_some())
        else {
            return false;
        };
        let real = slot.real.expect("filtered above");
        let mut host = Passthrough { regs: phys_to_virt(real).raw() as usize, memory };
        let level = slot.proxy.device_interrupt(&mut host);
        irq::complete(hart, source);
        if let Some((_, plic)) = &mut self.plic {
            plic.set_level(source, level);
        }
        true
    }
}

/// The offset of `gpa` in the registers at `[base, base + size)`, if it lies among them.
fn offset_in(gpa: GuestPhysAddr, base: u64, size: u64) -> Option<u64> {
    gpa.offset_from(GuestPhysAddr::new(base)).filter(|&offset| offset < size)
}

/// One register access on an [`Mmio`] device.
fn rw(dev: &mut impl Mmio, offset: u64, width: Width, store: Option<u64>) -> Option<u64> {
    match store {
        None => dev.read(offset, width).ok(),
        Some(v) => dev.write(offset, width, v).ok().map(|()| 0),
    }
}
