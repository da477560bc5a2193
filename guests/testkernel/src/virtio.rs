//! A minimal, polled virtio-mmio driver for the device tests: the eight transports of QEMU
//! `virt` (0x1000_1000 + 0x1000 * i, PLIC source 1 + i), both the modern (Version 2) and
//! the legacy (Version 1) register interface, feature negotiation, the device status
//! sequence, and split virtqueues.
//!
//! Rings and buffers live in the test arena ([`crate::vm::alloc_pages`]); the tests run
//! with paging off, so their addresses are physical addresses. One ring layout serves both
//! interfaces: the descriptor table and the available ring in one page, the used ring at
//! the start of the next (the legacy layout with QueueAlign = 4096).

use core::sync::atomic::{Ordering, fence};

use alloc::format;
use alloc::string::String;

use crate::timer;
use crate::vm::alloc_pages;

/// Transports on `virt`.
pub const SLOTS: u64 = 8;
/// The first transport.
pub const BASE: u64 = 0x1000_1000;
/// Distance between transports.
pub const STRIDE: u64 = 0x1000;
/// MagicValue: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;

/// Register offsets of the MMIO transport.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Legacy only.
    pub const GUEST_PAGE_SIZE: u64 = 0x028;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    /// Legacy only.
    pub const QUEUE_ALIGN: u64 = 0x03c;
    /// Legacy only.
    pub const QUEUE_PFN: u64 = 0x040;
    /// Modern only.
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// Modern only.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
}

/// Device IDs.
pub mod id {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
}

/// InterruptStatus: a used buffer notification.
pub const INT_USED_BUFFER: u32 = 1;
/// InterruptStatus: a configuration change notification.
pub const INT_CONFIG: u32 = 2;

/// The device complies with virtio 1.0 or later (must be accepted on a modern transport).
pub const F_VERSION_1: u64 = 1 << 32;

/// Entries of every queue the driver sets up.
pub const QUEUE_SIZE: u16 = 16;
/// Descriptor flags.
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// The registers of transport `slot`.
pub fn slot_base(slot: u64) -> u64 {
    BASE + STRIDE * slot
}

/// The PLIC source of transport `slot`.
pub fn slot_irq(slot: u64) -> u32 {
    1 + slot as u32
}

/// Reads a 32-bit register of the transport at `base`.
pub fn read32(base: u64, offset: u64) -> u32 {
    // SAFETY: `base` is one of the eight transports of `virt` (S-mode may access them
    // natively; under hypocaust they are the guest's); registers are 32-bit and aligned.
    unsafe { ((base + offset) as *const u32).read_volatile() }
}

/// Writes a 32-bit register of the transport at `base`.
pub fn write32(base: u64, offset: u64, value: u32) {
    // Ring and buffer writes must be visible to the device before it is told about them.
    fence(Ordering::SeqCst);
    // SAFETY: as in `read32`.
    unsafe { ((base + offset) as *mut u32).write_volatile(value) }
}

/// The first transport with a device of `device_id`.
pub fn find(device_id: u32) -> Option<u64> {
    (0..SLOTS).find(|&s| {
        let base = slot_base(s);
        read32(base, reg::MAGIC) == MAGIC && read32(base, reg::DEVICE_ID) == device_id
    })
}

/// A device being driven; dropping it resets the device (status 0).
pub struct Device {
    pub slot: u64,
    pub base: u64,
    /// The transport is legacy (Version 1).
    pub legacy: bool,
    /// The features the driver accepted.
    pub features: u64,
}

impl Device {
    /// Finds the device of `device_id`, resets it and negotiates `wanted` features (those
    /// the device offers; on a modern transport also VIRTIO_F_VERSION_1). The status is
    /// then ACKNOWLEDGE | DRIVER (| FEATURES_OK on a modern transport): queues come next,
    /// then [`Device::driver_ok`].
    pub fn open(device_id: u32, wanted: u64) -> Result<Self, String> {
        let slot = find(device_id).ok_or(format!("no virtio device of type {device_id}"))?;
        let base = slot_base(slot);
        let legacy = match read32(base, reg::VERSION) {
            1 => true,
            2 => false,
            v => return Err(format!("slot {slot}: unknown virtio-mmio version {v}")),
        };
        let mut dev = Self { slot, base, legacy, features: 0 };
        if !dev.reset() {
            return Err(format!("slot {slot}: the status does not read 0 after a reset"));
        }
        dev.set_status(status::ACKNOWLEDGE);
        dev.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = dev.device_features();
        let mut accept = wanted & offered;
        if !legacy {
            if offered & F_VERSION_1 == 0 {
                return Err(format!("slot {slot}: a modern device without VIRTIO_F_VERSION_1"));
            }
            accept |= F_VERSION_1;
        }
        write32(base, reg::DRIVER_FEATURES_SEL, 0);
        write32(base, reg::DRIVER_FEATURES, accept as u32);
        if !legacy {
            write32(base, reg::DRIVER_FEATURES_SEL, 1);
            write32(base, reg::DRIVER_FEATURES, (accept >> 32) as u32);
            dev.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
            if dev.status() & status::FEATURES_OK == 0 {
                return Err(format!("slot {slot}: the device refused features {accept:#x}"));
            }
        } else {
            write32(base, reg::GUEST_PAGE_SIZE, 4096);
        }
        dev.features = accept;
        Ok(dev)
    }

    /// The features the device offers (legacy: only the first 32 exist).
    pub fn device_features(&self) -> u64 {
        write32(self.base, reg::DEVICE_FEATURES_SEL, 0);
        let low = read32(self.base, reg::DEVICE_FEATURES) as u64;
        if self.legacy {
            return low;
        }
        write32(self.base, reg::DEVICE_FEATURES_SEL, 1);
        low | (read32(self.base, reg::DEVICE_FEATURES) as u64) << 32
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        read32(self.base, reg::STATUS)
    }

    fn set_status(&self, value: u32) {
        write32(self.base, reg::STATUS, value);
    }

    /// Resets the device (status 0); `true` if the status then reads 0.
    pub fn reset(&self) -> bool {
        self.set_status(0);
        self.status() == 0
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok(&self) {
        self.set_status(self.status() | status::DRIVER_OK);
    }

    /// Sets up queue `index` with [`QUEUE_SIZE`] entries in fresh arena pages.
    pub fn queue(&self, index: u16) -> Result<Queue, String> {
        let base = self.base;
        write32(base, reg::QUEUE_SEL, index as u32);
        let in_use =
            if self.legacy { read32(base, reg::QUEUE_PFN) } else { read32(base, reg::QUEUE_READY) };
        if in_use != 0 {
            return Err(format!("queue {index} is already set up"));
        }
        let max = read32(base, reg::QUEUE_NUM_MAX);
        if max < QUEUE_SIZE as u32 {
            return Err(format!("queue {index} has at most {max} entries"));
        }
        let desc = alloc_pages(2);
        let q = Queue {
            index,
            desc,
            avail: desc + 16 * QUEUE_SIZE as u64,
            used: desc + 4096,
            next_avail: 0,
            last_used: 0,
            free: (1 << QUEUE_SIZE) - 1,
        };
        write32(base, reg::QUEUE_NUM, QUEUE_SIZE as u32);
        if self.legacy {
            write32(base, reg::QUEUE_ALIGN, 4096);
            write32(base, reg::QUEUE_PFN, (desc >> 12) as u32);
        } else {
            let pairs = [
                (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, q.desc),
                (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, q.avail),
                (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, q.used),
            ];
            for (low, high, addr) in pairs {
                write32(base, low, addr as u32);
                write32(base, high, (addr >> 32) as u32);
            }
            write32(base, reg::QUEUE_READY, 1);
        }
        Ok(q)
    }

    /// Tells the device that queue `q` has new buffers.
    pub fn notify(&self, q: &Queue) {
        write32(self.base, reg::QUEUE_NOTIFY, q.index as u32);
    }

    /// InterruptStatus.
    pub fn interrupt_status(&self) -> u32 {
        read32(self.base, reg::INTERRUPT_STATUS)
    }

    /// Acknowledges the interrupts in `bits`.
    pub fn interrupt_ack(&self, bits: u32) {
        write32(self.base, reg::INTERRUPT_ACK, bits);
    }

    /// ConfigGeneration (legacy transports have none: 0).
    pub fn config_generation(&self) -> u32 {
        if self.legacy { 0 } else { read32(self.base, reg::CONFIG_GENERATION) }
    }

    /// Byte `offset` of the device configuration space.
    pub fn config8(&self, offset: u64) -> u8 {
        // SAFETY: the configuration space follows the registers; byte reads are allowed.
        unsafe { ((self.base + reg::CONFIG + offset) as *const u8).read_volatile() }
    }

    /// The 32-bit field at `offset` of the device configuration space.
    pub fn config32(&self, offset: u64) -> u32 {
        read32(self.base, reg::CONFIG + offset)
    }

    /// The 64-bit field at `offset`, read as two halves under one configuration generation
    /// (`None` if the generation never held still over 16 tries).
    pub fn config64(&self, offset: u64) -> Option<u64> {
        (0..16).find_map(|_| {
            let generation = self.config_generation();
            let low = self.config32(offset) as u64;
            let high = self.config32(offset + 4) as u64;
            (self.config_generation() == generation).then_some(low | high << 32)
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.reset();
    }
}

/// A buffer of a request: device-readable or device-writable.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

impl Buf {
    /// A device-readable buffer.
    pub fn readable(addr: u64, len: u32) -> Self {
        Self { addr, len, device_writes: false }
    }

    /// A device-writable buffer.
    pub fn writable(addr: u64, len: u32) -> Self {
        Self { addr, len, device_writes: true }
    }
}

/// One element of the used ring: the head descriptor of the chain and the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u32,
    pub len: u32,
}

/// A split virtqueue.
pub struct Queue {
    pub index: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// The driver's copy of avail.idx.
    next_avail: u16,
    /// used.idx as far as the driver has consumed it.
    last_used: u16,
    /// Free descriptors (bit i: descriptor i).
    free: u32,
}

fn store16(addr: u64, value: u16) {
    // SAFETY: `addr` is in a queue's arena pages (the callers compute it from the ring
    // addresses); aligned.
    unsafe { (addr as *mut u16).write_volatile(value) }
}

fn load16(addr: u64) -> u16 {
    // SAFETY: as in `store16`.
    unsafe { (addr as *const u16).read_volatile() }
}

fn load32(addr: u64) -> u32 {
    // SAFETY: as in `store16`.
    unsafe { (addr as *const u32).read_volatile() }
}

impl Queue {
    /// Puts a chain of `bufs` on the available ring (without notifying the device);
    /// returns the head descriptor.
    pub fn push(&mut self, bufs: &[Buf]) -> Result<u16, String> {
        if bufs.is_empty() || bufs.len() > self.free.count_ones() as usize {
            return Err(format!("{} buffers do not fit in queue {}", bufs.len(), self.index));
        }
        let mut chain = [0u16; QUEUE_SIZE as usize];
        for slot in chain.iter_mut().take(bufs.len()) {
            let i = self.free.trailing_zeros() as u16;
            self.free &= !(1 << i);
            *slot = i;
        }
        for (n, b) in bufs.iter().enumerate() {
            let i = chain[n];
            let last = n + 1 == bufs.len();
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let d = self.desc + 16 * i as u64;
            // SAFETY: descriptor `i` of this queue's table, owned by the driver (it was
            // free); 16 bytes, aligned.
            unsafe {
                (d as *mut u64).write_volatile(b.addr);
                ((d + 8) as *mut u32).write_volatile(b.len);
            }
            store16(d + 12, flags);
            store16(d + 14, if last { 0 } else { chain[n + 1] });
        }
        let head = chain[0];
        let slot = self.next_avail % QUEUE_SIZE;
        store16(self.avail + 4 + 2 * slot as u64, head);
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        store16(self.avail + 2, self.next_avail);
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// used.idx as the device last wrote it.
    pub fn used_idx(&self) -> u16 {
        fence(Ordering::SeqCst);
        load16(self.used + 2)
    }

    /// The next used element, if the device returned one; its descriptors become free.
    pub fn pop_used(&mut self) -> Option<Used> {
        if self.used_idx() == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let e = self.used + 4 + 8 * (self.last_used % QUEUE_SIZE) as u64;
        let used = Used { id: load32(e), len: load32(e + 4) };
        self.last_used = self.last_used.wrapping_add(1);
        let mut i = used.id as u16 % QUEUE_SIZE;
        for _ in 0..QUEUE_SIZE {
            self.free |= 1 << i;
            let d = self.desc + 16 * i as u64;
            if load16(d + 12) & DESC_F_NEXT == 0 {
                break;
            }
            i = load16(d + 14) % QUEUE_SIZE;
        }
        Some(used)
    }

    /// Waits up to `us` microseconds for the next used element.
    pub fn wait_used(&mut self, us: u64) -> Option<Used> {
        let give_up = timer::now() + timer::ticks_from_us(us);
        loop {
            if let Some(u) = self.pop_used() {
                return Some(u);
            }
            if timer::now() > give_up {
                return None;
            }
            core::hint::spin_loop();
        }
    }
}
