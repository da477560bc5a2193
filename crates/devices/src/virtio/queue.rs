//! One shadow virtqueue: the split ring in hypocaust's memory that the real device is given in
//! place of the guest's.
//!
//! Shadow descriptor `i` stands for guest descriptor `i`, so the IDs the device puts in its
//! used ring are the guest's own heads. What the device may read is only ever written here,
//! from copies of guest memory that were validated after they were copied:
//!
//! - **Published descriptors are frozen.** Each shadow descriptor carries a count of the
//!   published, not yet used chains it belongs to. While that count is non-zero the
//!   descriptor is never rewritten (a chain that needs it with other contents is a fault), so
//!   the device can never read a half-written descriptor, a new address with an old length.
//! - **At most `num` chains are outstanding**, so a shadow avail slot is never rewritten
//!   before the device has consumed it.
//! - **Indirect tables are rebuilt** in host memory of their own, one per published head, as
//!   a straight chain of translated descriptors, and freed when the head comes back used.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, fence};

use rv::{GuestPhysAddr, HostPhysAddr};

use super::{Fault, VirtioHost};

/// `VIRTQ_DESC_F_NEXT`: the chain goes on at `next`.
pub(super) const DESC_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the device writes the buffer.
pub(super) const DESC_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of descriptors.
pub(super) const DESC_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver asks for no used-buffer interrupts.
pub(super) const AVAIL_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device asks for no available-buffer notifications.
pub(super) const USED_NO_NOTIFY: u16 = 1;

/// Bytes of one descriptor.
const DESC_BYTES: u64 = 16;
/// Bytes of one used ring element (`id`, `len`).
const USED_ELEM_BYTES: u64 = 8;
/// Bytes before the avail and used rings' entries (`flags`, `idx`).
const RING_HEADER: u64 = 4;

/// Where the shadow used ring starts in its block: the legacy `QueueAlign` the proxy gives a
/// version-1 device (and the alignment of the block, so `QueuePFN` can name it).
pub(super) const SHADOW_ALIGN: u64 = 4096;

/// The longest chain through one indirect table: QEMU 7.2 maps at most `VIRTQUEUE_MAX_SIZE`
/// (1024) buffers per request and refuses longer ones.
const INDIRECT_MAX: u64 = 1024;

/// Host bytes of indirect tables one queue may hold at once (the guest chooses their sizes, so
/// without a bound it could drain hypocaust's DMA memory). A chain that would exceed it waits
/// until earlier ones come back used.
pub(super) const INDIRECT_BUDGET: usize = 256 * 1024;

/// A split-ring descriptor.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(super) struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = b;
        Self {
            addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            flags: u16::from_le_bytes([f0, f1]),
            next: u16::from_le_bytes([n0, n1]),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Where the guest's three rings are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct GuestRings {
    pub desc: GuestPhysAddr,
    pub avail: GuestPhysAddr,
    pub used: GuestPhysAddr,
}

impl GuestRings {
    /// The legacy layout of a queue of `num` at `desc`, as QEMU 7.2 computes it: the avail
    /// ring right after the descriptors, the used ring at the next multiple of `align` after
    /// the avail ring's entries (QEMU counts no `used_event` there). `None` on overflow.
    pub fn legacy(desc: GuestPhysAddr, num: u16, align: u32) -> Option<Self> {
        let avail = desc.checked_add(desc_table_bytes(num))?;
        let avail_end = avail.checked_add(RING_HEADER + 2 * u64::from(num))?.raw();
        let align = u64::from(align);
        let used = avail_end.checked_add(align.checked_sub(1)?)? / align * align;
        Some(Self { desc, avail, used: GuestPhysAddr::new(used) })
    }

    /// Whether all three rings of a queue of `num` lie in guest RAM (the parts QEMU 7.2 maps
    /// without `VIRTIO_RING_F_EVENT_IDX`, which the proxy never offers).
    pub fn in_ram(&self, host: &impl VirtioHost, num: u16) -> bool {
        let n = u64::from(num);
        host.guest_to_host(self.desc, desc_table_bytes(num)).is_some()
            && host.guest_to_host(self.avail, RING_HEADER + 2 * n).is_some()
            && host.guest_to_host(self.used, RING_HEADER + USED_ELEM_BYTES * n).is_some()
    }
}

fn desc_table_bytes(num: u16) -> u64 {
    DESC_BYTES * u64::from(num)
}

/// What staging one chain came to.
enum Staged {
    /// Translated and written to the shadow table.
    Done,
    /// Host memory for its indirect table is short: try again later.
    NoMemory,
}

/// An indirect table the device holds.
#[derive(Clone, Copy)]
struct Table {
    hpa: HostPhysAddr,
    bytes: usize,
}

/// A queue's shadow rings and what is known of the device's progress through them.
pub(super) struct ShadowQueue {
    num: u16,
    /// The host block: descriptors at 0, avail ring after them, used ring at `used_off`.
    block: HostPhysAddr,
    block_bytes: usize,
    used_off: u64,
    guest: GuestRings,
    /// The guest's avail index up to which heads have been taken.
    next_avail: u16,
    /// The shadow avail index published to the device.
    shadow_avail: u16,
    /// The device's used index up to which entries were copied back; the guest's used index.
    last_used: u16,
    /// Chains published and not yet used.
    outstanding: u16,
    /// What each shadow descriptor holds.
    mirror: Vec<Desc>,
    /// Per descriptor, the outstanding chains it is part of.
    inflight: Vec<u16>,
    /// Per head, its indirect table while the device holds it.
    tables: Vec<Option<Table>>,
    table_bytes: usize,
    /// Per descriptor, the walk that last visited it (loop detection without clearing).
    seen: Vec<u32>,
    walk: u32,
    /// Scratch: the chain being staged and the heads being published.
    chain: Vec<(u16, Desc)>,
    heads: Vec<u16>,
    /// A head is waiting for host memory.
    deferred: bool,
}

impl ShadowQueue {
    /// Allocates zeroed shadow rings for a queue of `num` (1 to 32768) serving `guest`.
    pub fn new(host: &mut impl VirtioHost, num: u16, guest: GuestRings) -> Option<Self> {
        let n = u64::from(num);
        let avail_end = desc_table_bytes(num) + RING_HEADER + 2 * n;
        let used_off = avail_end.div_ceil(SHADOW_ALIGN) * SHADOW_ALIGN;
        // Room for the used ring's trailing `avail_event` too, as the spec lays it out.
        let bytes = usize::try_from(used_off + RING_HEADER + USED_ELEM_BYTES * n + 2).ok()?;
        let block = host.alloc_dma(bytes, SHADOW_ALIGN as usize)?;
        let entries = usize::from(num);
        Some(Self {
            num,
            block,
            block_bytes: bytes,
            used_off,
            guest,
            next_avail: 0,
            shadow_avail: 0,
            last_used: 0,
            outstanding: 0,
            mirror: vec![Desc::default(); entries],
            inflight: vec![0; entries],
            tables: vec![None; entries],
            table_bytes: 0,
            seen: vec![0; entries],
            walk: 0,
            chain: Vec::new(),
            heads: Vec::new(),
            deferred: false,
        })
    }

    pub fn num(&self) -> u16 {
        self.num
    }

    pub fn desc_hpa(&self) -> HostPhysAddr {
        self.block
    }

    pub fn avail_hpa(&self) -> HostPhysAddr {
        self.shadow_at(self.avail_off())
    }

    pub fn used_hpa(&self) -> HostPhysAddr {
        self.shadow_at(self.used_off)
    }

    /// Where the avail ring starts in the block: right after the descriptors.
    fn avail_off(&self) -> u64 {
        desc_table_bytes(self.num)
    }

    /// The host address `offset` bytes into the block (`offset` inside it).
    fn shadow_at(&self, offset: u64) -> HostPhysAddr {
        dma_at(self.block, offset)
    }

    /// Whether a head is waiting for host memory.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Serves guest rings at new addresses from now on (QEMU keeps a queue's indices when its
    /// rings are moved). The caller has checked them.
    pub fn repoint(&mut self, guest: GuestRings) {
        self.guest = guest;
    }

    /// Clears the guest's used ring flags: the proxy never asks the guest to hold back its
    /// notifications. Fails if the ring is not guest RAM.
    pub fn clear_guest_used_flags(&self, host: &mut impl VirtioHost) -> Result<(), Fault> {
        write_guest(host, self.guest.used, &0u16.to_le_bytes())
    }

    /// Takes the heads the guest made available since the last call, translates their chains
    /// into the shadow table and publishes them. Returns how many were published and the
    /// fault that stopped the walk, if any: the heads before it are published, it and those
    /// after it are not.
    pub fn sync_avail(&mut self, host: &mut impl VirtioHost) -> (u16, Option<Fault>) {
        self.deferred = false;
        let avail_idx = match read_guest_u16(host, self.guest.avail, 2) {
            Ok(idx) => idx,
            Err(fault) => return (0, Some(fault)),
        };
        if avail_idx.wrapping_sub(self.next_avail) > self.num {
            return (0, Some(Fault::AvailIndex));
        }
        // The avail ring's entries are read after its index.
        fence(Ordering::Acquire);
        let mut heads = core::mem::take(&mut self.heads);
        heads.clear();
        let mut fault = None;
        while self.next_avail != avail_idx {
            if self.outstanding >= self.num {
                fault = Some(Fault::QueueFull);
                break;
            }
            let slot = u64::from(self.next_avail % self.num);
            let head = match read_guest_u16(host, self.guest.avail, RING_HEADER + 2 * slot) {
                Ok(head) => head,
                Err(f) => {
                    fault = Some(f);
                    break;
                }
            };
            if head >= self.num {
                fault = Some(Fault::HeadOutOfRange);
                break;
            }
            match self.stage(host, head) {
                Ok(Staged::Done) => {}
                Ok(Staged::NoMemory) => {
                    self.deferred = true;
                    break;
                }
                Err(f) => {
                    fault = Some(f);
                    break;
                }
            }
            heads.push(head);
            self.next_avail = self.next_avail.wrapping_add(1);
            self.outstanding += 1;
        }
        let count = u16::try_from(heads.len()).unwrap_or(u16::MAX);
        if count != 0 {
            // Descriptors, then avail entries, then the avail index.
            fence(Ordering::SeqCst);
            for (k, &head) in (0u16..).zip(&heads) {
                let slot = u64::from(self.shadow_avail.wrapping_add(k) % self.num);
                let hpa = self.shadow_at(self.avail_off() + RING_HEADER + 2 * slot);
                host.write_host(hpa, &head.to_le_bytes());
            }
            fence(Ordering::SeqCst);
            self.shadow_avail = self.shadow_avail.wrapping_add(count);
            host.write_host(self.shadow_at(self.avail_off() + 2), &self.shadow_avail.to_le_bytes());
        }
        self.heads = heads;
        (count, fault)
    }

    /// Whether the device wants to hear of newly published heads (it has not set
    /// `VIRTQ_USED_F_NO_NOTIFY`); read after the publication.
    pub fn device_wants_notify(&self, host: &impl VirtioHost) -> bool {
        fence(Ordering::SeqCst);
        read_host_u16(host, self.used_hpa()) & USED_NO_NOTIFY == 0
    }

    /// Copies the used entries the device added since the last call to the guest's used ring
    /// and publishes the guest's used index. Returns whether there were any and the guest did
    /// not suppress interrupts (`VIRTQ_AVAIL_F_NO_INTERRUPT`).
    pub fn sync_used(&mut self, host: &mut impl VirtioHost) -> Result<bool, Fault> {
        let device_idx = read_host_u16(host, self.shadow_at(self.used_off + 2));
        // A device that runs more than a ring ahead is out of spec; take one ring's worth.
        let new = device_idx.wrapping_sub(self.last_used).min(self.num);
        if new == 0 {
            return Ok(false);
        }
        // The used entries are read after the used index.
        fence(Ordering::Acquire);
        for k in 0..new {
            let slot = u64::from(self.last_used.wrapping_add(k) % self.num);
            let offset = RING_HEADER + USED_ELEM_BYTES * slot;
            let mut elem = [0; 8];
            host.read_host(self.shadow_at(self.used_off + offset), &mut elem);
            let [i0, i1, i2, i3, ..] = elem;
            self.release(host, u32::from_le_bytes([i0, i1, i2, i3]));
            write_guest(host, guest_offset(self.guest.used, offset)?, &elem)?;
        }
        self.last_used = self.last_used.wrapping_add(new);
        // The guest's used entries before its used index.
        fence(Ordering::SeqCst);
        write_guest(host, guest_offset(self.guest.used, 2)?, &self.last_used.to_le_bytes())?;
        // The used index before the guest's flags, as a device reads them (the guest
        // re-enables interrupts and then checks the used index).
        fence(Ordering::SeqCst);
        let flags = read_guest_u16(host, self.guest.avail, 0)?;
        Ok(flags & AVAIL_NO_INTERRUPT == 0)
    }

    /// Frees the shadow rings and every indirect table. Only once the device can no longer
    /// use them (it has been reset).
    pub fn free(self, host: &mut impl VirtioHost) {
        for table in self.tables.into_iter().flatten() {
            host.free_dma(table.hpa, table.bytes);
        }
        host.free_dma(self.block, self.block_bytes);
    }

    /// Translates the chain at `head` into the shadow table, or says why not. Nothing is
    /// written unless all of it is valid.
    fn stage(&mut self, host: &mut impl VirtioHost, head: u16) -> Result<Staged, Fault> {
        let stamp = self.next_stamp();
        self.chain.clear();
        let mut table = None;
        let mut index = head;
        loop {
            let i = usize::from(index);
            if self.seen[i] == stamp {
                return Err(Fault::Loop);
            }
            self.seen[i] = stamp;
            let desc = self.read_guest_desc(host, index)?;
            // QEMU looks for an indirect table only in a chain's first descriptor.
            if index == head && desc.flags & DESC_INDIRECT != 0 {
                table = Some(copy_indirect(host, desc)?);
                break;
            }
            let next = chain_next(desc, u64::from(self.num))?;
            self.chain.push((index, translate(host, desc, next)?));
            match next {
                Some(next) => index = next,
                None => break,
            }
        }
        // A descriptor the device holds keeps its contents.
        let busy = |i: u16| self.inflight[usize::from(i)] != 0;
        if table.is_some() && busy(head)
            || self.chain.iter().any(|&(i, d)| busy(i) && self.mirror[usize::from(i)] != d)
        {
            return Err(Fault::InFlightChanged);
        }
        if let Some(entries) = table {
            let bytes = entries.len() * DESC_BYTES as usize;
            if self.table_bytes + bytes > INDIRECT_BUDGET {
                return Ok(Staged::NoMemory);
            }
            let Some(hpa) = host.alloc_dma(bytes, DESC_BYTES as usize) else {
                return Ok(Staged::NoMemory);
            };
            for (k, entry) in (0u64..).zip(&entries) {
                host.write_host(dma_at(hpa, DESC_BYTES * k), &entry.to_bytes());
            }
            let len = u32::try_from(bytes).map_err(|_| Fault::IndirectTooLong)?;
            self.tables[usize::from(head)] = Some(Table { hpa, bytes });
            self.table_bytes += bytes;
            self.chain.push((head, Desc { addr: hpa.raw(), len, flags: DESC_INDIRECT, next: 0 }));
        }
        for &(i, desc) in &self.chain {
            let i = usize::from(i);
            if self.mirror[i] != desc {
                host.write_host(self.shadow_at(DESC_BYTES * i as u64), &desc.to_bytes());
                self.mirror[i] = desc;
            }
            self.inflight[i] += 1;
        }
        Ok(Staged::Done)
    }

    /// The device is done with the chain at `id`: its descriptors may change again.
    fn release(&mut self, host: &mut impl VirtioHost, id: u32) {
        let Ok(head) = u16::try_from(id) else { return };
        if head >= self.num || self.inflight[usize::from(head)] == 0 {
            // Not a chain the device holds: a device out of spec; nothing to release.
            return;
        }
        let mut i = usize::from(head);
        for _ in 0..self.num {
            let desc = self.mirror[i];
            self.inflight[i] = self.inflight[i].saturating_sub(1);
            let table = if desc.flags & DESC_INDIRECT != 0 { self.tables[i].take() } else { None };
            if let Some(table) = table {
                host.free_dma(table.hpa, table.bytes);
                self.table_bytes -= table.bytes;
            }
            if desc.flags & DESC_NEXT == 0 {
                break;
            }
            i = usize::from(desc.next);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn read_guest_desc(&self, host: &impl VirtioHost, index: u16) -> Result<Desc, Fault> {
        let gpa = guest_offset(self.guest.desc, DESC_BYTES * u64::from(index))?;
        let mut bytes = [0; 16];
        if !host.read_guest(gpa, &mut bytes) {
            return Err(Fault::RingOutsideRam);
        }
        Ok(Desc::from_bytes(bytes))
    }

    fn next_stamp(&mut self) -> u32 {
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            self.seen.fill(0);
            self.walk = 1;
        }
        self.walk
    }
}

/// The next descriptor of a chain in a table of `max`, if `desc` says there is one.
fn chain_next(desc: Desc, max: u64) -> Result<Option<u16>, Fault> {
    if desc.flags & DESC_NEXT == 0 {
        Ok(None)
    } else if u64::from(desc.next) >= max {
        Err(Fault::NextOutOfRange)
    } else {
        Ok(Some(desc.next))
    }
}

/// The shadow of a direct descriptor: its buffer's host address, its length, and of its flags
/// only NEXT and WRITE (an INDIRECT flag past a chain's head is ignored, as QEMU does).
fn translate(host: &impl VirtioHost, desc: Desc, next: Option<u16>) -> Result<Desc, Fault> {
    // QEMU refuses zero-sized buffers ("zero sized buffers are not allowed").
    if desc.len == 0 {
        return Err(Fault::ZeroLength);
    }
    // The guest wrote the address into its descriptor: it names guest-physical memory.
    let hpa = host
        .guest_to_host(GuestPhysAddr::new(desc.addr), u64::from(desc.len))
        .ok_or(Fault::BufferOutsideRam)?;
    Ok(Desc {
        addr: hpa.raw(),
        len: desc.len,
        flags: desc.flags & (DESC_NEXT | DESC_WRITE),
        next: next.unwrap_or(0),
    })
}

/// Copies and translates the chain of the indirect table `desc` names into a straight chain
/// (entry `k` continues at `k + 1`), with QEMU 7.2's checks.
fn copy_indirect(host: &impl VirtioHost, desc: Desc) -> Result<Vec<Desc>, Fault> {
    let len = u64::from(desc.len);
    if len == 0 || len % DESC_BYTES != 0 {
        return Err(Fault::IndirectSize);
    }
    let base = GuestPhysAddr::new(desc.addr);
    if host.guest_to_host(base, len).is_none() {
        return Err(Fault::IndirectOutsideRam);
    }
    let max = len / DESC_BYTES;
    let mut entries = Vec::new();
    let mut index = 0u64;
    loop {
        let taken = entries.len() as u64;
        if taken >= max {
            return Err(Fault::Loop);
        }
        if taken >= INDIRECT_MAX {
            return Err(Fault::IndirectTooLong);
        }
        let mut bytes = [0; 16];
        let gpa = guest_offset(base, DESC_BYTES * index)?;
        if !host.read_guest(gpa, &mut bytes) {
            return Err(Fault::IndirectOutsideRam);
        }
        let entry = Desc::from_bytes(bytes);
        let next = chain_next(entry, max)?;
        // `taken` < INDIRECT_MAX, so the position fits.
        let position = u16::try_from(taken + 1).map_err(|_| Fault::IndirectTooLong)?;
        let mut shadow = translate(host, entry, next)?;
        shadow.next = if next.is_some() { position } else { 0 };
        entries.push(shadow);
        match next {
            Some(next) => index = u64::from(next),
            None => return Ok(entries),
        }
    }
}

fn guest_offset(base: GuestPhysAddr, offset: u64) -> Result<GuestPhysAddr, Fault> {
    base.checked_add(offset).ok_or(Fault::RingOutsideRam)
}

fn read_guest_u16(host: &impl VirtioHost, base: GuestPhysAddr, offset: u64) -> Result<u16, Fault> {
    let mut bytes = [0; 2];
    if host.read_guest(guest_offset(base, offset)?, &mut bytes) {
        Ok(u16::from_le_bytes(bytes))
    } else {
        Err(Fault::RingOutsideRam)
    }
}

fn write_guest(host: &mut impl VirtioHost, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), Fault> {
    if host.write_guest(gpa, data) { Ok(()) } else { Err(Fault::RingOutsideRam) }
}

/// The host address `offset` bytes into a block [`VirtioHost::alloc_dma`] returned, `offset`
/// inside the block. The block is memory, which does not wrap past the top of the address
/// space, so neither does an address in it.
fn dma_at(block: HostPhysAddr, offset: u64) -> HostPhysAddr {
    block.checked_add(offset).expect("a DMA block does not wrap past 2^64")
}

fn read_host_u16(host: &impl VirtioHost, hpa: HostPhysAddr) -> u16 {
    let mut bytes = [0; 2];
    host.read_host(hpa, &mut bytes);
    u16::from_le_bytes(bytes)
}
