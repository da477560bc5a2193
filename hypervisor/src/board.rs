//! A guest's devices, laid out as on QEMU's `virt` machine: its own 16550 UART, PLIC (a
//! context per vCPU) and Goldfish RTC (models from crates/devices), and the virtio-mmio
//! slots, passed through to the real devices or empty. All of them sit on one [`Bus`]
//! whose ranges are checked for overlap when the board is built; a guest load or store
//! that reaches no RAM comes here by its guest-physical address.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use devices::ConsoleUart;
use devices::bus::Bus;
use devices::plic::Plic;
use devices::rtc::GoldfishRtc;
use devices::sifive_uart::SifiveUart;
use devices::uart::Uart16550;
use devices::virtio::{VirtioHost, VirtioProxy};
use devices::{BusError, Mmio, Width};
use loader::fdt::{Device, PlicNode, UartKind};
use platform::{Platform, UartKind as HostUartKind};
use rv::{GuestPhysAddr, HostPhysAddr};

use crate::clock::HostClock;
use crate::layout::phys_to_virt;
use crate::memory::GuestMemory;
use crate::{arch, console, irq, mm};

/// What a guest's devices are, decided at boot from the host's.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub uart: Option<Device>,
    /// The guest's UART has the host's register interface (a 16550 on `virt`, a SiFive
    /// UART on `sifive_u`), so that a guest sees the board's kind of console.
    pub uart_kind: UartKind,
    pub plic: Option<PlicNode>,
    pub rtc: Option<Device>,
    /// Every virtio slot of the host, with the name the guest's configuration gives the
    /// device in it if the guest owns it.
    pub virtio: Vec<(Device, Option<String>)>,
}

impl Layout {
    /// The layout for a guest that asks for the host's virtio slots in bitmask `wanted`
    /// (bit i: slot i in address order), naming them with `name(slot)`: the host's UART,
    /// PLIC and RTC addresses (emulated), and every virtio slot, the wanted ones that hold
    /// a device and are not `taken` by an earlier guest passed through (and then marked
    /// taken).
    pub fn for_guest(
        platform: &Platform,
        wanted: u64,
        name: impl Fn(usize) -> Option<String>,
        taken: &mut u64,
    ) -> Self {
        let uart = platform.uart.as_ref().map(|u| Device {
            base: u.region.start.raw(),
            size: u.region.size(),
            irq: u.irq.unwrap_or(0),
        });
        let uart_kind = match platform.uart.as_ref().map(|u| u.kind) {
            Some(HostUartKind::Sifive) => UartKind::Sifive,
            _ => UartKind::Ns16550,
        };
        let plic = platform.plic.as_ref().map(|p| PlicNode {
            base: p.region.start.raw(),
            size: p.region.size(),
            ndev: p.ndev,
        });
        let rtc = platform.rtc.as_ref().and_then(|r| {
            Some(Device { base: r.region.start.raw(), size: r.region.size(), irq: r.irq? })
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
            let label = owned.then(|| name(i).unwrap_or_else(|| format!("virtio{i}")));
            virtio.push((dev, label));
        }
        Self { uart, uart_kind, plic, rtc, virtio }
    }

    /// The virtio slots, for the device tree.
    pub fn virtio_nodes(&self) -> Vec<Device> {
        // QEMU lists the slots from the highest address down; so does the guest's tree.
        self.virtio.iter().rev().map(|(d, _)| *d).collect()
    }
}

/// The 32-bit register at `offset` of the host's virtio-mmio slot at `pa`.
fn slot_register(pa: HostPhysAddr, offset: usize) -> u32 {
    let regs = phys_to_virt(pa).raw() as *const u32;
    // SAFETY: the slot's registers are in the direct map (mm maps every virtio slot of the
    // device tree); the identity registers read here have no side effects.
    unsafe { regs.add(offset / 4).read_volatile() }
}

/// Whether a device sits behind the host's virtio-mmio slot at `pa` (magic right, device
/// ID not 0).
fn slot_populated(pa: HostPhysAddr) -> bool {
    slot_register(pa, 0) == devices::virtio::MAGIC && slot_register(pa, 8) != 0
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
        // 1, 2 or 4 bytes.
        let value = unsafe {
            match width {
                Width::Byte => (p as *const u8).read_volatile() as u64,
                Width::Half => (p as *const u16).read_volatile() as u64,
                Width::Word => (p as *const u32).read_volatile() as u64,
                Width::Double => (p as *const u64).read_volatile(),
            }
        };
        arch::csr::fence_io_read();
        value
    }

    fn device_write(&mut self, offset: u64, width: Width, value: u64) {
        let p = self.regs + offset as usize;
        arch::csr::fence_io_write();
        // SAFETY: as in `device_read`.
        unsafe {
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

/// A virtio-mmio slot as the guest sees it: a proxy for the real device in the host's slot
/// at the same address, or an empty slot.
pub struct VirtioSlot {
    proxy: VirtioProxy,
    /// The real slot behind it, if the guest owns its device.
    real: Option<HostPhysAddr>,
    /// The real device's ID (0: none).
    device_id: u32,
    /// Its source on the guest's PLIC (and the host's).
    irq: u32,
    /// The guest's RAM, which the device reaches by DMA through the proxy.
    memory: GuestMemory,
    /// The guest's index, for messages.
    guest: usize,
}

impl VirtioSlot {
    /// Resets the real device and frees the proxy's shadow rings (the guest reboots or is
    /// gone: the device must not reach its RAM any more).
    fn quiesce(&mut self) {
        if self.real.is_some() {
            let regs = self.real.map_or(0, |r| phys_to_virt(r).raw() as usize);
            let mut host = Passthrough { regs, memory: &self.memory };
            self.proxy.reset(&mut host);
        }
    }

    /// Back to a fresh proxy (after [`VirtioSlot::quiesce`]).
    fn restart(&mut self) {
        if self.real.is_some() {
            let regs = self.real.map_or(0, |r| phys_to_virt(r).raw() as usize);
            let mut host = Passthrough { regs, memory: &self.memory };
            self.proxy = VirtioProxy::new(&mut host);
        }
    }

    fn access(&mut self, offset: u64, width: Width, store: Option<u64>) -> Result<u64, BusError> {
        let was_broken = self.proxy.fault().is_some();
        let regs = self.real.map_or(0, |r| phys_to_virt(r).raw() as usize);
        let mut host = Passthrough { regs, memory: &self.memory };
        let r = match store {
            None => self.proxy.read(&mut host, offset, width),
            Some(v) => self.proxy.write(&mut host, offset, width, v).map(|()| 0),
        };
        if let (false, Some(fault)) = (was_broken, self.proxy.fault()) {
            log::info!(
                "guest {}: virtio device with irq {} refused the driver's request ({fault:?}); \
                 it needs a reset",
                self.guest,
                self.irq
            );
        }
        r.map_err(|_| BusError)
    }
}

impl Mmio for VirtioSlot {
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError> {
        self.access(offset, width, None)
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError> {
        self.access(offset, width, Some(value)).map(|_| ())
    }
}

/// A device on a guest's bus.
enum GuestDevice {
    Uart(Box<dyn ConsoleUart + Send>),
    Plic(Box<Plic>),
    Rtc(GoldfishRtc<HostClock>),
    Virtio(Box<VirtioSlot>),
}

impl GuestDevice {
    fn mmio(&mut self) -> &mut dyn Mmio {
        match self {
            Self::Uart(d) => d.as_mut(),
            Self::Plic(d) => d.as_mut(),
            Self::Rtc(d) => d,
            Self::Virtio(d) => d.as_mut(),
        }
    }

    /// The level of this device's interrupt line and its source, for devices whose line
    /// the board samples after each access (the UART drives its own updates).
    fn line(&mut self) -> Option<(u32, bool)> {
        match self {
            Self::Virtio(v) => Some((v.irq, v.proxy.irq())),
            Self::Uart(_) | Self::Plic(_) | Self::Rtc(_) => None,
        }
    }
}

/// A guest's devices.
pub struct Board {
    guest: usize,
    vcpus: usize,
    bus: Bus<GuestDevice>,
    uart_irq: u32,
    rtc_irq: u32,
}

impl Board {
    /// The devices of guest `guest` with `vcpus` vCPUs as `layout` says, reaching the
    /// guest's RAM through `memory`.
    pub fn new(
        guest: usize,
        vcpus: usize,
        layout: &Layout,
        memory: &GuestMemory,
    ) -> Result<Self, devices::bus::BusError> {
        let mut bus = Bus::new();
        let at = GuestPhysAddr::new;
        if let Some(d) = layout.uart {
            let uart: Box<dyn ConsoleUart + Send> = match layout.uart_kind {
                UartKind::Ns16550 => Box::new(Uart16550::new()),
                UartKind::Sifive => Box::new(SifiveUart::booted()),
            };
            bus.insert("uart", at(d.base), d.size, GuestDevice::Uart(uart))?;
        }
        if let Some(p) = layout.plic {
            // As many sources as the host's PLIC (QEMU: `riscv,ndev` + 1, and 96 at most).
            let plic = Plic::with_sources(vcpus, p.ndev.saturating_add(1));
            bus.insert("plic", at(p.base), p.size, GuestDevice::Plic(Box::new(plic)))?;
        }
        if let Some(d) = layout.rtc {
            let rtc = GoldfishRtc::new(HostClock);
            bus.insert("rtc", at(d.base), d.size, GuestDevice::Rtc(rtc))?;
        }
        for (i, (dev, owner)) in layout.virtio.iter().enumerate() {
            // The guest sees the slot where the host has it.
            let pa = HostPhysAddr::new(dev.base);
            let real = owner.is_some().then_some(pa);
            // An empty slot reports the transport version of the host's slots.
            let proxy = VirtioProxy::absent_with_version(slot_register(pa, 4));
            let device_id = if real.is_some() { slot_register(pa, 8) } else { 0 };
            let slot =
                VirtioSlot { proxy, real, device_id, irq: dev.irq, memory: memory.clone(), guest };
            let name = owner.clone().unwrap_or_else(|| format!("virtio-slot{i}"));
            bus.insert(&name, at(dev.base), dev.size, GuestDevice::Virtio(Box::new(slot)))?;
        }
        Ok(Self {
            guest,
            vcpus,
            bus,
            uart_irq: layout.uart.map_or(0, |d| d.irq),
            rtc_irq: layout.rtc.map_or(0, |d| d.irq),
        })
    }

    fn plic(&mut self) -> Option<&mut Plic> {
        self.bus.iter_mut().find_map(|s| match &mut s.device {
            GuestDevice::Plic(p) => Some(&mut **p),
            _ => None,
        })
    }

    fn virtio_slots(&mut self) -> impl Iterator<Item = &mut VirtioSlot> {
        self.bus.iter_mut().filter_map(|s| match &mut s.device {
            GuestDevice::Virtio(v) => Some(v.as_mut()),
            _ => None,
        })
    }

    /// Back to power-on state (guest boot or reboot): devices reset, passed-through devices
    /// reset and their shadow queues freed, their host interrupts routed to `hart` (a
    /// physical hart ID) and owned by this guest.
    pub fn reset(&mut self, hart: usize) {
        let (vcpus, guest) = (self.vcpus, self.guest);
        for slot in self.bus.iter_mut() {
            match &mut slot.device {
                GuestDevice::Uart(u) => u.reset(),
                GuestDevice::Plic(p) => **p = Plic::with_sources(vcpus, p.sources()),
                GuestDevice::Rtc(r) => *r = GoldfishRtc::new(HostClock),
                GuestDevice::Virtio(v) => {
                    v.quiesce();
                    v.restart();
                    if v.real.is_some() {
                        irq::set_owner(v.irq, Some(guest));
                        irq::route(v.irq, Some(hart));
                    }
                }
            }
        }
    }

    /// The guest is gone: its passed-through devices are reset (no more DMA into its RAM)
    /// and their host interrupts masked.
    pub fn quiesce(&mut self) {
        for v in self.virtio_slots() {
            if v.real.is_some() {
                irq::route(v.irq, None);
                irq::set_owner(v.irq, None);
                v.quiesce();
            }
        }
    }

    /// The passed-through devices, for the summary: (name, slot base, virtio device ID).
    pub fn passed_through(&self) -> impl Iterator<Item = (&str, u64, u32)> + '_ {
        self.bus.iter().filter_map(|s| match &s.device {
            GuestDevice::Virtio(v) if v.real.is_some() => {
                Some((s.name.as_str(), s.base.raw(), v.device_id))
            }
            _ => None,
        })
    }

    /// Whether vCPU `vcpu`'s external interrupt is asserted.
    pub fn external(&self, vcpu: usize) -> bool {
        self.bus.iter().any(|s| matches!(&s.device, GuestDevice::Plic(p) if p.s_external(vcpu)))
    }

    /// A guest load of `width` at `gpa`; `None` if no device answers there.
    pub fn read(&mut self, gpa: GuestPhysAddr, width: Width) -> Option<u64> {
        self.access(gpa, width, None)
    }

    /// A guest store; `false` if no device takes it.
    pub fn write(&mut self, gpa: GuestPhysAddr, width: Width, value: u64) -> bool {
        self.access(gpa, width, Some(value)).is_some()
    }

    fn access(&mut self, gpa: GuestPhysAddr, width: Width, store: Option<u64>) -> Option<u64> {
        let (slot, offset) = self.bus.find_mut(gpa)?;
        let dev = slot.device.mmio();
        let result = match store {
            None => dev.read(offset, width).ok(),
            Some(v) => dev.write(offset, width, v).ok().map(|()| 0),
        };
        let line = slot.device.line();
        if let (Some((irq, level)), Some(plic)) = (line, self.plic()) {
            plic.set_level(irq, level);
        }
        self.after_access();
        result
    }

    /// Propagates output and interrupt lines after a device access.
    fn after_access(&mut self) {
        let guest = self.guest;
        let mut rtc_level = None;
        for slot in self.bus.iter_mut() {
            match &mut slot.device {
                GuestDevice::Uart(uart) => {
                    let mut out = [0u8; 64];
                    loop {
                        let mut n = 0;
                        while n < out.len()
                            && let Some(b) = uart.take_output()
                        {
                            out[n] = b;
                            n += 1;
                        }
                        if n == 0 {
                            break;
                        }
                        console::guest_output(guest, &out[..n]);
                    }
                }
                GuestDevice::Rtc(rtc) => {
                    rtc.poll();
                    rtc_level = Some(rtc.irq());
                }
                _ => {}
            }
        }
        let rtc_irq = self.rtc_irq;
        if let (Some(level), Some(plic)) = (rtc_level, self.plic()) {
            plic.set_level(rtc_irq, level);
        }
        // A read of RBR may have made room for waiting input.
        self.pump_uart();
        // Completions need nothing on the host: hypocaust completes a passed-through
        // device's host interrupt as soon as the proxy has taken it (the proxy acknowledges
        // the device and keeps the guest's InterruptStatus itself).
        if let Some(plic) = self.plic() {
            while plic.take_completed().is_some() {}
        }
    }

    /// Moves waiting console input into the UART while it has room.
    pub fn pump_uart(&mut self) {
        let (guest, irq) = (self.guest, self.uart_irq);
        let mut level = None;
        for slot in self.bus.iter_mut() {
            if let GuestDevice::Uart(uart) = &mut slot.device {
                while uart.wants_input() {
                    let mut byte = None;
                    console::take_input(guest, 1, |_, b| byte = Some(b));
                    match byte {
                        Some(b) => {
                            uart.receive(b);
                        }
                        None => break,
                    }
                }
                // The UART drives its line at the moments QEMU's does (so the PLIC re-pends
                // a claimed source exactly as on `virt`).
                level = uart.take_line_update();
            }
        }
        if let (Some(level), Some(plic)) = (level, self.plic()) {
            plic.set_level(irq, level);
        }
    }

    /// Checks the RTC's alarm (its time has come, perhaps); returns when it next fires, in
    /// wall-clock nanoseconds.
    pub fn poll_rtc(&mut self) -> Option<u64> {
        let irq = self.rtc_irq;
        let mut state = None;
        for slot in self.bus.iter_mut() {
            if let GuestDevice::Rtc(rtc) = &mut slot.device {
                rtc.poll();
                state = Some((rtc.irq(), rtc.next_alarm()));
            }
        }
        let (level, next) = state?;
        if let Some(plic) = self.plic() {
            plic.set_level(irq, level);
        }
        next
    }

    /// The host claimed `source`: if it is one of this guest's passed-through devices, the
    /// proxy acknowledges the device and copies completions back, the guest's line follows
    /// the proxy's `InterruptStatus`, and the host source is completed. Returns whether the
    /// source was this guest's.
    pub fn host_interrupt(&mut self, source: u32, hart: usize) -> bool {
        let Some(slot) = self.virtio_slots().find(|v| v.irq == source && v.real.is_some()) else {
            return false;
        };
        let regs = slot.real.map_or(0, |r| phys_to_virt(r).raw() as usize);
        let mut host = Passthrough { regs, memory: &slot.memory };
        let level = slot.proxy.device_interrupt(&mut host);
        irq::complete(hart, source);
        if let Some(plic) = self.plic() {
            plic.set_level(source, level);
        }
        true
    }
}
