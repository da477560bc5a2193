//! virtio-mmio passthrough: a guest drives a real virtio-mmio device (QEMU's, on the `virt`
//! machine) through [`VirtioProxy`], which forwards its register accesses and puts **shadow
//! virtqueues** between its rings and the device.
//!
//! There is no IOMMU: the device reads and writes host-physical memory wherever its rings say.
//! So the device never sees a guest ring. Each queue the guest enables gets shadow rings of the
//! same size in hypocaust's memory; on each `QueueNotify` the proxy copies the newly available
//! chains out of guest memory once, checks the copy (every buffer wholly in the guest's RAM,
//! chains without loops and within the table, non-zero lengths) and only then writes the
//! translated descriptors (host-physical addresses) to the shadow ring and publishes them;
//! when the device interrupts, it copies the used entries back to the guest's used ring.
//! Shadow descriptor `i` is guest descriptor `i`, so used IDs need no mapping. The guest may
//! rewrite its rings at any time without effect: the device reads only memory the proxy
//! wrote, from validated copies, and descriptors it holds are never rewritten (see
//! `queue.rs` for the invariants).
//!
//! # What the guest sees
//!
//! The real device's registers, as QEMU 7.2's virtio-mmio transport gives them, except:
//!
//! - **Device features** are masked to [`OFFERED_FEATURES`], and the driver's features are
//!   masked the same way before they reach the device. Passed through: the device-type bits
//!   (0 to 23, 50 to 63), `ANY_LAYOUT` (27: descriptor layout is the driver's business),
//!   `INDIRECT_DESC` (28: indirect tables are copied and translated into shadow tables),
//!   `VERSION_1` (32) and `ORDER_PLATFORM` (36: the proxy orders its ring accesses with full
//!   fences). Masked:
//!   - 24 `NOTIFY_ON_EMPTY`: would oblige an interrupt when the ring empties even while the
//!     guest suppresses them; the proxy does not track that.
//!   - 29 `RING_EVENT_IDX`: the proxy would have to forward `used_event`/`avail_event` between
//!     two rings with different progress; without it both sides use the flags, which the
//!     proxy handles (below).
//!   - 30 (`UNUSED`, the legacy bad-feature bit), 25, 26, 31, 41 to 49: reserved.
//!   - 33 `ACCESS_PLATFORM`: would tell the guest its addresses go through a platform IOMMU;
//!     they go through the proxy's translation instead.
//!   - 34 `RING_PACKED`: the shadow queue is a split ring.
//!   - 35 `IN_ORDER`: a device may then return a batch of chains in one used entry; the proxy
//!     needs one entry per chain to know which shadow descriptors the device has let go.
//!   - 37 `SR_IOV`: PCI only.
//!   - 38 `NOTIFICATION_DATA`, 39 `NOTIF_CONFIG_DATA`: `QueueNotify` would carry more than the
//!     queue index the proxy syncs by.
//!   - 40 `RING_RESET`: per-queue reset is not implemented (QEMU's virtio-mmio has none).
//! - **Queue addresses** (`QueueDesc*`, `QueueDriver*`, `QueueDevice*`, `QueuePFN`,
//!   `QueueAlign`, `GuestPageSize`, `QueueNum`) are kept by the proxy, not forwarded;
//!   `QueuePFN` and `QueueReady` read back what the guest wrote. When a queue is enabled (`QueueReady` = 1, or a non-zero `QueuePFN`)
//!   its whole rings must lie in guest RAM; the proxy allocates the shadow rings and programs
//!   the device with their host addresses (a version-1 device with page size 4096 and
//!   `QueueAlign` 4096). Enabling a queue again while it has shadow rings moves the guest side
//!   to the new rings and keeps the indices, as QEMU does.
//! - **Interrupts**: the proxy owns the guest-visible `InterruptStatus`. When the device
//!   interrupts, the proxy reads and acknowledges the device's status (so the host line
//!   drops at once), copies the used entries back and sets bit 0 if some queue got entries
//!   and its guest did not set `VIRTQ_AVAIL_F_NO_INTERRUPT`; the device's configuration-change
//!   bit 1 is passed on. The shadow avail ring never suppresses device interrupts, so the
//!   proxy always learns of completions; the guest's used ring flags are set to 0 when its
//!   queue is enabled, so the guest always notifies. A read of `InterruptStatus` first collects what the device has
//!   done. `InterruptACK` clears bits of the proxy's status.
//! - **Errors**: a chain or ring the proxy refuses is what QEMU 7.2 calls `virtio_error`: the
//!   device is marked broken (see [`Fault`]); if `VERSION_1` was negotiated, `Status` gets
//!   `DEVICE_NEEDS_RESET` (0x40) and, if `DRIVER_OK` is set, `InterruptStatus` gets 0x3 and
//!   `ConfigGeneration` moves on. From then on until the guest resets the device (`Status` =
//!   0) nothing more is published or notified and no used entry is copied back. A refused
//!   chain is never published (chains before it in the same notification are).
//! - **Resets**: `Status` = 0 and, on a version-1 device, `QueuePFN` = 0 (which QEMU 7.2
//!   turns into a device reset) reset the device first and then free the shadow memory.
//!
//! # Using it
//!
//! Each guest access to the slot goes to [`VirtioProxy::read`] or [`VirtioProxy::write`], the
//! device's host interrupt to [`VirtioProxy::device_interrupt`]; after any of them the guest's
//! interrupt line is set to [`VirtioProxy::irq`] (an access can change it: a read of
//! `InterruptStatus` collects completions, an `InterruptACK` clears them, a refused chain
//! raises a configuration change). A guest reboot or power-off calls [`VirtioProxy::reset`].
//!
//! Register accesses follow QEMU 7.2: the transport decodes 0x200 bytes (the rest of the
//! 0x1000 slot faults); registers below 0x100 answer only 4-byte accesses (other widths read
//! 0 and ignore writes), the configuration space above answers 1, 2 and 4 bytes; an 8-byte
//! access is two 4-byte accesses, lower first; a misaligned access is what QEMU's CPU makes
//! of it (two aligned loads, or byte stores). Registers that QEMU's transport has no use for
//! read as 0 and ignore writes, and are not forwarded.
//!
//! Only device types whose requests carry no guest addresses are passed through (network,
//! block, console, entropy, SCSI, 9P, input, vsock); a balloon or GPU, for instance, would
//! tell the device guest page numbers inside its buffers, where no proxy translates them. A
//! slot with any other device reads as an empty slot.
//!
//! # Limits
//!
//! - The real device is trusted to follow the virtio spec: a used entry names a chain it was
//!   given. (One that named a chain it still reads could let the proxy rewrite that chain.)
//! - Where a misbehaving driver gets another answer than from QEMU: a descriptor the device
//!   holds, made available again with other contents or through an indirect table, is a
//!   fault (QEMU would take it); a chain that comes back to a descriptor is a loop at once
//!   (QEMU counts to the queue size, which differs only if the guest rewrites the chain
//!   meanwhile); `QueueNum` and `QueueAlign` written while a queue is live apply from the next
//!   enable after a reset, and enabling a live queue again keeps its size (QEMU re-lays a
//!   version-1 queue at once); enabling a queue with no `QueueNum` written since the last reset
//!   is a fault (QEMU would use the queue's default size, which the transport does not show).
//! - Out of host memory, enabling a queue is a fault (`NoShadowMemory`); a chain whose
//!   indirect table finds no memory, or would take its queue past 256 KiB of tables, waits
//!   until chains come back used. A version-1 device needs its shadow rings below 2^44.
//! - Without `EVENT_IDX` the guest takes a notification per batch and an interrupt per
//!   completion batch; each one crosses the proxy.
//! - Queue registers are kept for every queue index the guest selects (up to 1024, some 60
//!   KiB at worst per slot). A proxy dropped without [`VirtioProxy::reset`] leaks its shadow
//!   memory and leaves the device running.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, fence};

use rv::{GuestPhysAddr, HostPhysAddr};

use crate::access::{cpu_read, cpu_write, low_bytes_mask};
use crate::{BusError, Width};

mod queue;
#[cfg(test)]
mod tests;

use queue::{GuestRings, ShadowQueue};

/// What the proxy needs from hypocaust.
///
/// The proxy is not re-entrant: hypocaust serializes every call on one proxy (a lock per
/// slot), whichever hart the guest's access or the device's interrupt arrives on.
///
/// Guest and host memory accesses of 2, 4 or 8 naturally aligned bytes must be single loads
/// and stores: ring indices are read and written while a guest vCPU or the device uses them,
/// and a torn index would look like a broken ring.
pub trait VirtioHost {
    /// Reads the real device's register at `offset` from its base. Registers are 32-bit; the
    /// configuration space (0x100 and up) may be read with 1-, 2- and 4-byte accesses. The
    /// read is ordered before the proxy's later memory reads (on RISC-V, `fence i,r` after it).
    fn device_read(&mut self, offset: u64, width: Width) -> u64;
    /// Writes the real device's register at `offset`; ordered after the proxy's earlier
    /// memory writes (on RISC-V, `fence w,o` before it).
    fn device_write(&mut self, offset: u64, width: Width, value: u64);
    /// The host-physical address of guest range `[gpa, gpa + len)`, if all of it is the guest's
    /// RAM (`len` > 0).
    fn guest_to_host(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr>;
    /// Reads guest RAM at `gpa`; false if not all of it is guest RAM.
    fn read_guest(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool;
    /// Writes guest RAM at `gpa`; false if not all of it is guest RAM.
    fn write_guest(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool;
    /// Zeroed, physically contiguous host memory for shadow rings and tables, `align`-aligned
    /// (a power of two, at most 4096); `None` if none is left.
    fn alloc_dma(&mut self, bytes: usize, align: usize) -> Option<HostPhysAddr>;
    /// Gives back what [`alloc_dma`](Self::alloc_dma) returned, with the same size.
    fn free_dma(&mut self, hpa: HostPhysAddr, bytes: usize);
    /// Reads host memory that `alloc_dma` returned (volatile: the device writes it).
    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]);
    /// Writes host memory that `alloc_dma` returned (volatile: the device reads it).
    fn write_host(&mut self, hpa: HostPhysAddr, data: &[u8]);
}

/// `MagicValue`: "virt".
pub const MAGIC: u32 = 0x7472_6976;

/// `VendorID` of QEMU's transports ("QEMU"), which an empty slot reports.
pub const QEMU_VENDOR: u32 = 0x554d_4551;

/// The bytes of the slot QEMU's transport decodes; past them an access faults.
pub const WINDOW: u64 = 0x200;

/// The device features a guest may see and negotiate (module documentation).
pub const OFFERED_FEATURES: u64 = !(bits(24, 49)) | PASSED_TRANSPORT_FEATURES;

/// Transport features passed through: `ANY_LAYOUT`, `INDIRECT_DESC`, `VERSION_1`,
/// `ORDER_PLATFORM`.
const PASSED_TRANSPORT_FEATURES: u64 = 1 << 27 | 1 << 28 | 1 << 32 | 1 << 36;

/// Bits `low` to `high`, inclusive.
const fn bits(low: u32, high: u32) -> u64 {
    (u64::MAX >> (63 - high)) & (u64::MAX << low)
}

/// Device types passed through: network, block, console, entropy, SCSI, 9P, input, vsock.
const PASSED_DEVICES: [u32; 8] = [1, 2, 3, 4, 8, 9, 18, 19];

/// QEMU's `VIRTIO_QUEUE_MAX`: queue indices it accepts in `QueueSel` and `QueueNotify`.
const QUEUE_MAX: u64 = 1024;

/// The largest split virtqueue.
const QUEUE_SIZE_MAX: u64 = 32768;

/// QEMU's default legacy `QueueAlign`.
const DEFAULT_ALIGN: u32 = 4096;

/// Why the proxy marked its device broken: a guest driver that is hostile or broken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// A queue's rings do not lie in guest RAM.
    RingOutsideRam,
    /// A queue was enabled without a valid `QueueNum`.
    NoQueueSize,
    /// No host memory was left for a queue's shadow rings.
    NoShadowMemory,
    /// The avail index moved by more than the queue size.
    AvailIndex,
    /// An avail entry names a descriptor past the queue size.
    HeadOutOfRange,
    /// A descriptor's `next` lies past its table.
    NextOutOfRange,
    /// A descriptor chain loops.
    Loop,
    /// A buffer of length zero.
    ZeroLength,
    /// A buffer not wholly in guest RAM.
    BufferOutsideRam,
    /// An indirect table whose length is zero or not a multiple of 16.
    IndirectSize,
    /// An indirect table not wholly in guest RAM.
    IndirectOutsideRam,
    /// A chain through an indirect table of more than 1024 descriptors.
    IndirectTooLong,
    /// More chains made available than the queue holds.
    QueueFull,
    /// A descriptor the device still holds was made available again with other contents.
    InFlightChanged,
}

/// Register offsets (virtio 1.x, 4.2.2, and the legacy 4.2.4).
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const GUEST_PAGE_SIZE: u64 = 0x028;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_ALIGN: u64 = 0x03c;
    pub const QUEUE_PFN: u64 = 0x040;
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
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// `Status` bits.
mod status {
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
}

/// `InterruptStatus` bits.
const INT_VRING: u32 = 1;
const INT_CONFIG: u32 = 2;

/// A queue's registers as the guest set them, and its shadow rings once enabled.
struct Queue {
    /// `QueueNum` (0: none accepted since the last reset).
    num: u16,
    /// `QueueReady` as the guest reads it (version 2).
    ready: bool,
    /// Version 2: the ring addresses; version 1: the descriptor table (`QueuePFN` times the
    /// page size).
    desc: u64,
    driver: u64,
    device: u64,
    /// `QueueAlign` (version 1).
    align: u32,
    shadow: Option<Box<ShadowQueue>>,
}

impl Queue {
    const fn new() -> Self {
        Self {
            num: 0,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
            align: DEFAULT_ALIGN,
            shadow: None,
        }
    }
}

/// Where a queue's new shadow rings are, for programming the device.
struct Programmed {
    num: u16,
    desc: HostPhysAddr,
    avail: HostPhysAddr,
    used: HostPhysAddr,
}

/// A guest's virtio-mmio slot: the proxy for a real device, or an empty slot.
pub struct VirtioProxy {
    /// A device is behind the slot (else it reads as QEMU's empty transport).
    present: bool,
    /// `Version` (1: legacy transport).
    version: u32,
    device_id: u32,
    /// `DeviceFeaturesSel` and `DriverFeaturesSel`: word 1 when non-zero, as QEMU has them.
    device_features_high: bool,
    driver_features_high: bool,
    /// The driver's features as written (masked) to the device.
    driver_features: u64,
    /// `VERSION_1` was negotiated (latched when `FEATURES_OK` is first written).
    version_1: bool,
    /// The last `Status` the guest wrote.
    status: u32,
    queue_sel: u16,
    /// log2 of `GuestPageSize` (version 1).
    page_shift: u32,
    queues: Vec<Queue>,
    /// The guest-visible `InterruptStatus`.
    isr: u32,
    /// Set when the device was marked broken; cleared by a reset.
    fault: Option<Fault>,
    /// `DEVICE_NEEDS_RESET` shows in `Status` until the guest next writes it.
    needs_reset: bool,
    /// Added to the device's `ConfigGeneration` (the proxy's own configuration changes).
    generation: u32,
}

impl VirtioProxy {
    /// A proxy for the real device behind `host`. It reads the device's identity once and
    /// resets it. A slot without a device, or with a device type that cannot be passed
    /// through, reads as an empty slot of the same version.
    pub fn new(host: &mut impl VirtioHost) -> Self {
        let magic = host.device_read(reg::MAGIC, Width::Word);
        let version = low32(host.device_read(reg::VERSION, Width::Word));
        let device_id = low32(host.device_read(reg::DEVICE_ID, Width::Word));
        if magic != u64::from(MAGIC) || !(1..=2).contains(&version) {
            return Self::absent();
        }
        let mut proxy = Self::empty(version);
        if PASSED_DEVICES.contains(&device_id) {
            proxy.present = true;
            proxy.device_id = device_id;
            proxy.reset(host);
        }
        proxy
    }

    /// An empty slot, as QEMU 7.2's default (legacy) virtio-mmio transport shows one with no
    /// device plugged: `MagicValue`, `Version` 1 and QEMU's `VendorID`; everything else reads
    /// 0 (so the device ID 0 tells a driver there is nothing); writes are ignored.
    pub fn absent() -> Self {
        Self::empty(1)
    }

    /// An empty slot whose `Version` is `version` (QEMU's empty transports report the
    /// machine's transport version: 2 with `force-legacy=false`); any other value gives 1.
    pub fn absent_with_version(version: u32) -> Self {
        Self::empty(if version == 2 { 2 } else { 1 })
    }

    fn empty(version: u32) -> Self {
        Self {
            present: false,
            version,
            device_id: 0,
            device_features_high: false,
            driver_features_high: false,
            driver_features: 0,
            version_1: false,
            status: 0,
            queue_sel: 0,
            page_shift: 0,
            queues: Vec::new(),
            isr: 0,
            fault: None,
            needs_reset: false,
            generation: 0,
        }
    }

    /// Why the device was marked broken, while it is (until the guest resets it).
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// A guest load of `width` at `offset` in the slot.
    pub fn read(
        &mut self,
        host: &mut impl VirtioHost,
        offset: u64,
        width: Width,
    ) -> Result<u64, BusError> {
        cpu_read(offset, width, |offset| self.read_aligned(host, offset, width))
    }

    /// A guest store of the low `width` bytes of `value` at `offset` in the slot.
    pub fn write(
        &mut self,
        host: &mut impl VirtioHost,
        offset: u64,
        width: Width,
        value: u64,
    ) -> Result<(), BusError> {
        cpu_write(offset, width, value, |offset, width, value| {
            self.write_aligned(host, offset, width, value)
        })
    }

    /// The real device raised its interrupt: acknowledges it, copies new used entries of every
    /// queue back to the guest, and publishes chains that were waiting for host memory.
    /// Returns the level of the guest's line (see [`irq`](Self::irq)).
    pub fn device_interrupt(&mut self, host: &mut impl VirtioHost) -> bool {
        self.service(host);
        self.irq()
    }

    /// The level of the guest's interrupt line: its `InterruptStatus` is non-zero. (The proxy
    /// owns that status, so this needs no device access.)
    pub fn irq(&self) -> bool {
        self.isr != 0
    }

    /// Tears the slot down for a guest reboot or power-off: resets the real device, then frees
    /// every shadow ring and table, and forgets all transport state. Call it before dropping
    /// a proxy that has a device.
    pub fn reset(&mut self, host: &mut impl VirtioHost) {
        if !self.present {
            return;
        }
        self.device_reset(host);
        // The transport keeps the driver's features across device resets; clear them. (A
        // version-1 device takes only the low word.)
        let words: &[u64] = if self.legacy() { &[0] } else { &[1, 0] };
        for &sel in words {
            host.device_write(reg::DRIVER_FEATURES_SEL, Width::Word, sel);
            host.device_write(reg::DRIVER_FEATURES, Width::Word, 0);
        }
        host.device_write(reg::DEVICE_FEATURES_SEL, Width::Word, 0);
        self.device_features_high = false;
        self.driver_features_high = false;
        self.driver_features = 0;
        self.page_shift = 0;
        self.queues = Vec::new();
    }

    fn read_aligned(
        &mut self,
        host: &mut impl VirtioHost,
        offset: u64,
        width: Width,
    ) -> Result<u64, BusError> {
        check_window(offset, width)?;
        if width == Width::Double {
            let low = self.read_sized(host, offset, Width::Word);
            let high = self.read_sized(host, offset + 4, Width::Word);
            return Ok(low | high << 32);
        }
        Ok(self.read_sized(host, offset, width))
    }

    fn write_aligned(
        &mut self,
        host: &mut impl VirtioHost,
        offset: u64,
        width: Width,
        value: u64,
    ) -> Result<(), BusError> {
        check_window(offset, width)?;
        if width == Width::Double {
            self.write_sized(host, offset, Width::Word, value & 0xffff_ffff);
            self.write_sized(host, offset + 4, Width::Word, value >> 32);
            return Ok(());
        }
        self.write_sized(host, offset, width, value);
        Ok(())
    }

    /// One access of 1, 2 or 4 bytes, as QEMU's transport answers it.
    fn read_sized(&mut self, host: &mut impl VirtioHost, offset: u64, width: Width) -> u64 {
        let value = if !self.present {
            match offset {
                reg::MAGIC => u64::from(MAGIC),
                reg::VERSION => u64::from(self.version),
                reg::VENDOR_ID => u64::from(QEMU_VENDOR),
                _ => 0,
            }
        } else if offset >= reg::CONFIG {
            host.device_read(offset, width)
        } else if width != Width::Word {
            0
        } else {
            u64::from(self.read_register(host, offset))
        };
        value & low_bytes_mask(width.bytes())
    }

    fn write_sized(&mut self, host: &mut impl VirtioHost, offset: u64, width: Width, value: u64) {
        if !self.present {
            return;
        }
        if offset >= reg::CONFIG {
            host.device_write(offset, width, value & low_bytes_mask(width.bytes()));
        } else if width == Width::Word {
            self.write_register(host, offset, low32(value));
        }
    }

    fn read_register(&mut self, host: &mut impl VirtioHost, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => self.version,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID | reg::QUEUE_NUM_MAX | reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => {
                low32(host.device_read(offset, Width::Word))
            }
            reg::DEVICE_FEATURES => {
                let offered = feature_word(OFFERED_FEATURES, self.device_features_high);
                low32(host.device_read(offset, Width::Word)) & offered
            }
            reg::QUEUE_PFN if self.legacy() => {
                let desc = self.queue(self.queue_sel).map_or(0, |q| q.desc);
                low32(desc >> self.page_shift)
            }
            reg::QUEUE_READY if !self.legacy() => {
                u32::from(self.queue(self.queue_sel).is_some_and(|q| q.ready))
            }
            reg::INTERRUPT_STATUS => {
                self.service(host);
                self.isr
            }
            reg::STATUS => {
                let status = low32(host.device_read(offset, Width::Word));
                if self.needs_reset { status | status::NEEDS_RESET } else { status }
            }
            reg::CONFIG_GENERATION if !self.legacy() => {
                low32(host.device_read(offset, Width::Word)).wrapping_add(self.generation)
            }
            // Write-only, reserved, and the other version's registers.
            _ => 0,
        }
    }

    fn write_register(&mut self, host: &mut impl VirtioHost, offset: u64, value: u32) {
        let legacy = self.legacy();
        match offset {
            reg::DEVICE_FEATURES_SEL => {
                self.device_features_high = value != 0;
                host.device_write(offset, Width::Word, value.into());
            }
            reg::DRIVER_FEATURES_SEL => {
                self.driver_features_high = value != 0;
                host.device_write(offset, Width::Word, value.into());
            }
            reg::DRIVER_FEATURES => {
                let high = self.driver_features_high;
                if legacy && high {
                    return; // QEMU ignores the high word of a legacy device.
                }
                let value = value & feature_word(OFFERED_FEATURES, high);
                let shift = if high { 32 } else { 0 };
                self.driver_features =
                    self.driver_features & !(0xffff_ffff << shift) | u64::from(value) << shift;
                host.device_write(offset, Width::Word, value.into());
            }
            reg::GUEST_PAGE_SIZE if legacy => {
                // As QEMU: the lowest set bit; 0 gives a shift of 0.
                self.page_shift = if value == 0 { 0 } else { value.trailing_zeros() };
            }
            // QEMU ignores queue indices past its last queue.
            reg::QUEUE_SEL if u64::from(value) < QUEUE_MAX => {
                self.queue_sel = value as u16;
                host.device_write(offset, Width::Word, value.into());
            }
            reg::QUEUE_NUM => self.set_queue_num(host, value),
            reg::QUEUE_ALIGN if legacy && value != 0 => {
                self.queue_mut(self.queue_sel).align = value
            }
            reg::QUEUE_PFN if legacy => {
                if value == 0 {
                    // QEMU 7.2 resets the whole device.
                    self.device_reset(host);
                } else {
                    self.enable_legacy(host, value);
                }
            }
            reg::QUEUE_READY if !legacy => {
                if value == 0 {
                    // QEMU only records it; the device goes on using the rings.
                    self.queue_mut(self.queue_sel).ready = false;
                } else {
                    self.enable_modern(host);
                }
            }
            reg::QUEUE_NOTIFY if u64::from(value) < QUEUE_MAX => self.notify(host, value as u16),
            reg::INTERRUPT_ACK => self.isr &= !value,
            reg::STATUS => self.set_status(host, value & 0xff),
            reg::QUEUE_DESC_LOW..=reg::QUEUE_DEVICE_HIGH if !legacy => {
                let queue = self.queue_mut(self.queue_sel);
                let (field, high) = match offset {
                    reg::QUEUE_DESC_LOW => (&mut queue.desc, false),
                    reg::QUEUE_DESC_HIGH => (&mut queue.desc, true),
                    reg::QUEUE_DRIVER_LOW => (&mut queue.driver, false),
                    reg::QUEUE_DRIVER_HIGH => (&mut queue.driver, true),
                    reg::QUEUE_DEVICE_LOW => (&mut queue.device, false),
                    reg::QUEUE_DEVICE_HIGH => (&mut queue.device, true),
                    _ => return,
                };
                *field = set_half(*field, high, value);
            }
            // Read-only, reserved, and the other version's registers.
            _ => {}
        }
    }

    fn legacy(&self) -> bool {
        self.version == 1
    }

    fn queue(&self, index: u16) -> Option<&Queue> {
        self.queues.get(usize::from(index))
    }

    fn queue_mut(&mut self, index: u16) -> &mut Queue {
        let index = usize::from(index);
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, Queue::new);
        }
        &mut self.queues[index]
    }

    /// `QueueNum`: kept if the device would take it (1 to its `QueueNumMax`), else ignored as
    /// QEMU ignores it. The device is told at enable time.
    fn set_queue_num(&mut self, host: &mut impl VirtioHost, value: u32) {
        let max = host.device_read(reg::QUEUE_NUM_MAX, Width::Word).min(QUEUE_SIZE_MAX);
        if value != 0 && u64::from(value) <= max {
            self.queue_mut(self.queue_sel).num = value as u16;
        }
    }

    /// Whether the selected queue exists on the device (else QEMU ignores enabling it).
    fn queue_exists(&self, host: &mut impl VirtioHost) -> bool {
        host.device_read(reg::QUEUE_NUM_MAX, Width::Word) != 0
    }

    fn enable_modern(&mut self, host: &mut impl VirtioHost) {
        let sel = self.queue_sel;
        let queue = self.queue_mut(sel);
        queue.ready = true;
        let (desc, driver, device) = (queue.desc, queue.driver, queue.device);
        // QEMU leaves a queue without a descriptor table unused and notifications to it
        // ignored; a broken device processes nothing anyway.
        if desc == 0 || self.fault.is_some() || !self.queue_exists(host) {
            return;
        }
        let rings = |_num| {
            Some(GuestRings {
                desc: GuestPhysAddr::new(desc),
                avail: GuestPhysAddr::new(driver),
                used: GuestPhysAddr::new(device),
            })
        };
        let Some(Programmed { num, desc, avail, used }) = self.enable(host, sel, rings) else {
            return;
        };
        let (desc, avail, used) = (desc.raw(), avail.raw(), used.raw());
        for (offset, value) in [
            (reg::QUEUE_NUM, u64::from(num)),
            (reg::QUEUE_DESC_LOW, desc & 0xffff_ffff),
            (reg::QUEUE_DESC_HIGH, desc >> 32),
            (reg::QUEUE_DRIVER_LOW, avail & 0xffff_ffff),
            (reg::QUEUE_DRIVER_HIGH, avail >> 32),
            (reg::QUEUE_DEVICE_LOW, used & 0xffff_ffff),
            (reg::QUEUE_DEVICE_HIGH, used >> 32),
            (reg::QUEUE_READY, 1),
        ] {
            host.device_write(offset, Width::Word, value);
        }
    }

    fn enable_legacy(&mut self, host: &mut impl VirtioHost, pfn: u32) {
        let sel = self.queue_sel;
        if !self.queue_exists(host) {
            return;
        }
        let desc = u64::from(pfn) << self.page_shift;
        let align = self.queue_mut(sel).align;
        self.queue_mut(sel).desc = desc;
        if self.fault.is_some() {
            return;
        }
        let rings = |num| GuestRings::legacy(GuestPhysAddr::new(desc), num, align);
        let Some(Programmed { num, desc: block, .. }) = self.enable(host, sel, rings) else {
            return;
        };
        let Ok(pfn) = u32::try_from(block.raw() / queue::SHADOW_ALIGN) else {
            // The device cannot address this block; give it back.
            if let Some(shadow) = self.queue_mut(sel).shadow.take() {
                shadow.free(host);
            }
            self.fail(host, Fault::NoShadowMemory);
            return;
        };
        for (offset, value) in [
            (reg::GUEST_PAGE_SIZE, queue::SHADOW_ALIGN),
            (reg::QUEUE_NUM, u64::from(num)),
            (reg::QUEUE_ALIGN, queue::SHADOW_ALIGN),
            (reg::QUEUE_PFN, u64::from(pfn)),
        ] {
            host.device_write(offset, Width::Word, value);
        }
    }

    /// Checks the guest rings `rings(num)` of queue `sel` and gives it shadow rings. Returns
    /// where they are if they are new (the device is to be programmed); `None` if the queue
    /// already had shadow rings (which now serve the new guest rings) or on a fault.
    fn enable(
        &mut self,
        host: &mut impl VirtioHost,
        sel: u16,
        rings: impl Fn(u16) -> Option<GuestRings>,
    ) -> Option<Programmed> {
        let queue = self.queue_mut(sel);
        let num = queue.shadow.as_ref().map_or(queue.num, |s| s.num());
        if num == 0 {
            self.fail(host, Fault::NoQueueSize);
            return None;
        }
        let Some(guest) = rings(num).filter(|r| r.in_ram(host, num)) else {
            self.fail(host, Fault::RingOutsideRam);
            return None;
        };
        let queue = self.queue_mut(sel);
        let fresh = match &mut queue.shadow {
            Some(shadow) => {
                shadow.repoint(guest);
                false
            }
            None => {
                let Some(shadow) = ShadowQueue::new(host, num, guest) else {
                    self.fail(host, Fault::NoShadowMemory);
                    return None;
                };
                queue.shadow = Some(Box::new(shadow));
                true
            }
        };
        let shadow = self.queues[usize::from(sel)].shadow.as_deref()?;
        let programmed = Programmed {
            num,
            desc: shadow.desc_hpa(),
            avail: shadow.avail_hpa(),
            used: shadow.used_hpa(),
        };
        if let Err(fault) = shadow.clear_guest_used_flags(host) {
            self.fail(host, fault);
            return None;
        }
        fresh.then_some(programmed)
    }

    fn set_status(&mut self, host: &mut impl VirtioHost, value: u32) {
        if value == 0 {
            self.device_reset(host);
            return;
        }
        if !self.legacy()
            && self.status & status::FEATURES_OK == 0
            && value & status::FEATURES_OK != 0
        {
            // QEMU hands the device the driver's features here.
            self.version_1 = self.driver_features & 1 << 32 != 0;
        }
        self.status = value;
        self.needs_reset = false;
        host.device_write(reg::STATUS, Width::Word, value.into());
    }

    /// The device reset (`Status` = 0): the real device first, so it lets go of the shadow
    /// memory, then the shadow memory and the proxy's part of the state.
    fn device_reset(&mut self, host: &mut impl VirtioHost) {
        host.device_write(reg::STATUS, Width::Word, 0);
        fence(Ordering::SeqCst);
        let legacy = self.legacy();
        for queue in &mut self.queues {
            if let Some(shadow) = queue.shadow.take() {
                shadow.free(host);
            }
            queue.ready = false;
            if legacy {
                // QEMU goes back to the queue's default size, unknown here.
                queue.num = 0;
                queue.desc = 0;
            }
        }
        self.status = 0;
        self.version_1 = false;
        self.queue_sel = 0;
        self.isr = 0;
        self.fault = None;
        self.needs_reset = false;
    }

    /// `QueueNotify`: publishes the queue's new chains and tells the device.
    fn notify(&mut self, host: &mut impl VirtioHost, index: u16) {
        if self.fault.is_some() {
            return;
        }
        let Some(shadow) = self.queues.get_mut(usize::from(index)).and_then(|q| q.shadow.as_mut())
        else {
            return;
        };
        let (published, fault) = shadow.sync_avail(host);
        if published != 0 && shadow.device_wants_notify(host) {
            host.device_write(reg::QUEUE_NOTIFY, Width::Word, index.into());
        }
        if let Some(fault) = fault {
            self.fail(host, fault);
        }
    }

    /// Collects what the device has done: its interrupt status, used entries, and chains that
    /// waited for memory.
    fn service(&mut self, host: &mut impl VirtioHost) {
        if !self.present {
            return;
        }
        let device_isr = low32(host.device_read(reg::INTERRUPT_STATUS, Width::Word)) & 3;
        if device_isr != 0 {
            host.device_write(reg::INTERRUPT_ACK, Width::Word, device_isr.into());
        }
        self.isr |= device_isr & INT_CONFIG;
        fence(Ordering::SeqCst);
        for index in 0..self.queues.len() {
            if self.fault.is_some() {
                return;
            }
            let Some(shadow) = self.queues[index].shadow.as_mut() else { continue };
            match shadow.sync_used(host) {
                Ok(true) => self.isr |= INT_VRING,
                Ok(false) => {}
                Err(fault) => self.fail(host, fault),
            }
            if self.queues[index].shadow.as_ref().is_some_and(|s| s.deferred()) {
                self.notify(host, index as u16);
            }
        }
    }

    /// QEMU's `virtio_error`: the device is broken until reset; a version-1 driver is told.
    fn fail(&mut self, host: &mut impl VirtioHost, fault: Fault) {
        if self.fault.is_some() {
            return;
        }
        self.fault = Some(fault);
        if self.version_1 {
            self.needs_reset = true;
            let device_status = low32(host.device_read(reg::STATUS, Width::Word));
            if device_status & status::DRIVER_OK != 0 {
                self.isr |= INT_VRING | INT_CONFIG;
                self.generation = self.generation.wrapping_add(1);
            }
        }
    }
}

/// Faults an access that reaches past the part of the slot QEMU decodes.
fn check_window(offset: u64, width: Width) -> Result<(), BusError> {
    match offset.checked_add(width.bytes()) {
        Some(end) if end <= WINDOW => Ok(()),
        _ => Err(BusError),
    }
}

/// Word `high` (0 or 1) of a 64-bit feature set.
fn feature_word(features: u64, high: bool) -> u32 {
    low32(if high { features >> 32 } else { features })
}

fn set_half(value: u64, high: bool, half: u32) -> u64 {
    if high {
        value & 0xffff_ffff | u64::from(half) << 32
    } else {
        value & !0xffff_ffff | u64::from(half)
    }
}

fn low32(value: u64) -> u32 {
    (value & 0xffff_ffff) as u32
}
