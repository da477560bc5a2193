extern crate std;

use core::cell::RefCell;
use std::vec;
use std::vec::Vec;

use super::queue::{DESC_INDIRECT, DESC_NEXT, DESC_WRITE, Desc, INDIRECT_BUDGET};
use super::*;

// ---------------------------------------------------------------------------------------------
// The fake host: guest RAM, hypocaust's DMA memory, and a fake virtio-mmio device.

const RAM_GPA: u64 = 0x8000_0000;
const RAM_HPA: u64 = 0x1_2345_6000;
const RAM_SIZE: u64 = 0x2_0000;
const DMA_HPA: u64 = 0x7_0000_0000;
const DMA_SIZE: u64 = 0x10_0000;

/// Where the tests' guest drivers put their rings and buffers.
const RINGS: u64 = RAM_GPA + 0x1000;
const BUFFERS: u64 = RAM_GPA + 0x1_0000;

const NET: u32 = 1;
const VERSION_1: u64 = 1 << 32;

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Default)]
struct FakeQueue {
    num: u32,
    align: u32,
    pfn: u32,
    desc: u64,
    driver: u64,
    device: u64,
    ready: bool,
    last_avail: u16,
    used_idx: u16,
    /// Chains taken and not yet completed: head and the chain as first read.
    held: Vec<(u16, Vec<Desc>)>,
}

/// A virtio-mmio device as QEMU's transport presents it, reading its rings by host address and
/// checking that everything it is given lies where it may.
struct FakeDevice {
    version: u32,
    device_id: u32,
    features: u64,
    queues: usize,
    num_max: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: [u32; 2],
    status: u32,
    isr: u32,
    queue_sel: u32,
    page_size: u32,
    q: Vec<FakeQueue>,
    config: [u8; 0x100],
    /// Every register write: (offset, value).
    writes: Vec<(u64, u64)>,
    /// Descriptors the device has read from shadow tables (direct and indirect).
    seen: Vec<Desc>,
}

impl FakeDevice {
    fn new(version: u32, device_id: u32) -> Self {
        let mut config = [0; 0x100];
        for (i, b) in config.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        Self {
            version,
            device_id,
            features: u64::MAX,
            queues: 3,
            num_max: 256,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: [0; 2],
            status: 0,
            isr: 0,
            queue_sel: 0,
            page_size: 0,
            q: vec![FakeQueue::default(); 3],
            config,
            writes: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn sel(&mut self) -> &mut FakeQueue {
        let sel = self.queue_sel as usize;
        &mut self.q[sel]
    }

    fn notifies(&self) -> usize {
        self.writes.iter().filter(|&&(o, _)| o == reg::QUEUE_NOTIFY).count()
    }

    /// Where queue `q`'s rings are, if it is live.
    fn rings(&self, q: usize) -> Option<(u64, u64, u64, u16)> {
        let queue = &self.q[q];
        if self.version == 1 {
            if queue.pfn == 0 {
                return None;
            }
            let desc = u64::from(queue.pfn) * u64::from(self.page_size);
            let avail = desc + 16 * u64::from(queue.num);
            let align = u64::from(queue.align);
            let used = (avail + 4 + 2 * u64::from(queue.num)).div_ceil(align) * align;
            Some((desc, avail, used, queue.num as u16))
        } else if queue.ready {
            Some((queue.desc, queue.driver, queue.device, queue.num as u16))
        } else {
            None
        }
    }
}

/// An event in the host's order, to check that the device is reset before memory is freed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    DeviceReset,
    Free(u64),
}

/// A racing vCPU: scribbles over guest memory while the proxy reads it.
struct Chaos {
    rng: Rng,
    percent: u64,
    regions: Vec<(u64, u64)>,
}

struct FakeHost {
    ram: RefCell<Vec<u8>>,
    dma: Vec<u8>,
    /// Live DMA allocations: (hpa, bytes).
    allocs: Vec<(u64, usize)>,
    alloc_calls: usize,
    free_calls: usize,
    /// Make `alloc_dma` fail for blocks of at most this many bytes (indirect tables).
    refuse_small_allocs: Option<usize>,
    dev: FakeDevice,
    events: Vec<Event>,
    chaos: Option<RefCell<Chaos>>,
    /// Every 16-byte guest read, as the proxy got it: (gpa, bytes).
    desc_reads: RefCell<Vec<(u64, [u8; 16])>>,
}

impl FakeHost {
    fn new(version: u32) -> Self {
        Self::with_device(FakeDevice::new(version, NET))
    }

    fn with_device(dev: FakeDevice) -> Self {
        Self {
            ram: RefCell::new(vec![0; RAM_SIZE as usize]),
            dma: vec![0xee; DMA_SIZE as usize],
            allocs: Vec::new(),
            alloc_calls: 0,
            free_calls: 0,
            refuse_small_allocs: None,
            dev,
            events: Vec::new(),
            chaos: None,
            desc_reads: RefCell::new(Vec::new()),
        }
    }

    fn ram_range(gpa: u64, len: u64) -> Option<core::ops::Range<usize>> {
        let start = gpa.checked_sub(RAM_GPA)?;
        let end = start.checked_add(len)?;
        (end <= RAM_SIZE).then_some(start as usize..end as usize)
    }

    fn live_alloc(&self, hpa: u64, len: u64) -> bool {
        self.allocs.iter().any(|&(a, b)| hpa >= a && hpa + len <= a + b as u64)
    }

    /// What the device reads at `hpa`: only shadow memory (live allocations) and guest RAM.
    fn dev_read(&self, hpa: u64, len: u64) -> Vec<u8> {
        if hpa >= DMA_HPA && hpa + len <= DMA_HPA + DMA_SIZE {
            assert!(self.live_alloc(hpa, len), "device reads freed memory at {hpa:#x}");
            let o = (hpa - DMA_HPA) as usize;
            self.dma[o..o + len as usize].to_vec()
        } else {
            panic!("device reads outside shadow memory at {hpa:#x}+{len:#x}");
        }
    }

    fn dev_write(&mut self, hpa: u64, data: &[u8]) {
        assert!(self.live_alloc(hpa, data.len() as u64), "device writes outside shadow memory");
        let o = (hpa - DMA_HPA) as usize;
        self.dma[o..o + data.len()].copy_from_slice(data);
    }

    fn dev_u16(&self, hpa: u64) -> u16 {
        let b = self.dev_read(hpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn dev_desc(&self, table: u64, i: u64) -> Desc {
        Desc::from_bytes(self.dev_read(table + 16 * i, 16).try_into().unwrap())
    }

    /// A buffer the device would DMA to: must lie in the guest's RAM block.
    fn check_buffer(d: &Desc) {
        assert!(d.len != 0, "zero-length buffer published");
        assert!(
            d.addr >= RAM_HPA && d.addr + u64::from(d.len) <= RAM_HPA + RAM_SIZE,
            "device given a buffer outside guest RAM: {d:?}"
        );
    }

    /// The chain at `head`, read and checked as the device reads it.
    fn dev_chain(&mut self, desc: u64, num: u16, head: u16) -> Vec<Desc> {
        assert!(head < num, "published head {head} past the queue size");
        let mut chain = Vec::new();
        let mut i = head;
        loop {
            let d = self.dev_desc(desc, u64::from(i));
            chain.push(d);
            assert!(chain.len() <= usize::from(num), "published chain loops");
            if d.flags & DESC_INDIRECT != 0 {
                assert_eq!(i, head, "indirect descriptor inside a chain");
                assert_eq!(d.flags, DESC_INDIRECT);
                assert!(d.len != 0 && d.len.is_multiple_of(16));
                let max = u64::from(d.len) / 16;
                let mut k = 0;
                for n in 0.. {
                    assert!(n < max, "published indirect chain loops");
                    let e = self.dev_desc(d.addr, k);
                    assert_eq!(e.flags & DESC_INDIRECT, 0, "nested indirect table");
                    Self::check_buffer(&e);
                    self.dev.seen.push(e);
                    chain.push(e);
                    if e.flags & DESC_NEXT == 0 {
                        break;
                    }
                    assert!(u64::from(e.next) < max);
                    k = u64::from(e.next);
                }
                break;
            }
            Self::check_buffer(&d);
            self.dev.seen.push(d);
            if d.flags & DESC_NEXT == 0 {
                break;
            }
            i = d.next;
            assert!(i < num, "published next past the queue size");
        }
        chain
    }

    /// The device takes up to `max` new chains of queue `q`; returns how many.
    fn device_pop(&mut self, q: usize, max: usize) -> usize {
        let Some((desc, avail, _, num)) = self.dev.rings(q) else { return 0 };
        let idx = self.dev_u16(avail + 2);
        let last = self.dev.q[q].last_avail;
        let new = idx.wrapping_sub(last);
        assert!(new <= num, "shadow avail index ran {new} ahead");
        let mut taken = 0;
        for k in 0..new.min(max as u16) {
            let slot = u64::from(last.wrapping_add(k) % num);
            let head = self.dev_u16(avail + 4 + 2 * slot);
            let chain = self.dev_chain(desc, num, head);
            self.dev.q[q].held.push((head, chain));
            assert!(self.dev.q[q].held.len() <= usize::from(num), "more chains than the queue");
            taken += 1;
        }
        self.dev.q[q].last_avail = last.wrapping_add(taken as u16);
        taken
    }

    /// The device completes up to `max` held chains of queue `q` (oldest first, or picking at
    /// random with `rng`), writing `len` = 1 + the head; returns how many.
    fn device_complete(&mut self, q: usize, max: usize, mut rng: Option<&mut Rng>) -> usize {
        let Some((desc, _, used, num)) = self.dev.rings(q) else { return 0 };
        let mut done = 0;
        while done < max && !self.dev.q[q].held.is_empty() {
            let pick = match rng.as_deref_mut() {
                Some(rng) => rng.below(self.dev.q[q].held.len() as u64) as usize,
                None => 0,
            };
            let (head, chain) = self.dev.q[q].held.remove(pick);
            // What the device holds did not change under it.
            let seen = core::mem::take(&mut self.dev.seen);
            assert_eq!(self.dev_chain(desc, num, head), chain, "held chain was rewritten");
            self.dev.seen = seen;
            let idx = self.dev.q[q].used_idx;
            let slot = u64::from(idx % num);
            let mut elem = [0; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&(u32::from(head) + 1).to_le_bytes());
            self.dev_write(used + 4 + 8 * slot, &elem);
            let idx = idx.wrapping_add(1);
            self.dev.q[q].used_idx = idx;
            self.dev_write(used + 2, &idx.to_le_bytes());
            done += 1;
        }
        if done != 0 {
            self.dev.isr |= 1;
        }
        done
    }

    fn shadow_avail_idx(&self, q: usize) -> Option<u16> {
        self.dev.rings(q).map(|(_, avail, _, _)| self.dev_u16(avail + 2))
    }

    fn set_used_flags(&mut self, q: usize, flags: u16) {
        let (_, _, used, _) = self.dev.rings(q).unwrap();
        self.dev_write(used, &flags.to_le_bytes());
    }

    // Guest memory, as the tests' guest driver writes it.

    fn poke(&mut self, gpa: u64, data: &[u8]) {
        let range = Self::ram_range(gpa, data.len() as u64).unwrap();
        self.ram.get_mut()[range].copy_from_slice(data);
    }

    fn peek(&self, gpa: u64, len: u64) -> Vec<u8> {
        let range = Self::ram_range(gpa, len).unwrap();
        self.ram.borrow()[range].to_vec()
    }

    fn peek_u16(&self, gpa: u64) -> u16 {
        let b = self.peek(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }
}

impl VirtioHost for FakeHost {
    fn device_read(&mut self, offset: u64, width: Width) -> u64 {
        let d = &mut self.dev;
        if offset >= 0x100 {
            let o = (offset - 0x100) as usize;
            let mut v = 0u64;
            for i in 0..width.bytes() as usize {
                v |= u64::from(d.config[o + i]) << (8 * i);
            }
            return v;
        }
        assert_eq!(width, Width::Word, "register read of width {width:?}");
        let sel = d.queue_sel as usize;
        u64::from(match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => d.version,
            reg::DEVICE_ID => d.device_id,
            reg::VENDOR_ID => QEMU_VENDOR,
            reg::DEVICE_FEATURES => {
                if d.version == 1 && d.device_features_sel != 0 {
                    0
                } else {
                    (d.features >> (32 * d.device_features_sel)) as u32
                }
            }
            reg::QUEUE_NUM_MAX if sel < d.queues => d.num_max,
            reg::QUEUE_READY => u32::from(d.q.get(sel).is_some_and(|q| q.ready)),
            reg::QUEUE_PFN => d.q.get(sel).map_or(0, |q| q.pfn),
            reg::INTERRUPT_STATUS => d.isr,
            reg::STATUS => d.status,
            reg::CONFIG_GENERATION => 7,
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            _ => 0,
        })
    }

    fn device_write(&mut self, offset: u64, width: Width, value: u64) {
        let d = &mut self.dev;
        d.writes.push((offset, value));
        if offset >= 0x100 {
            let o = (offset - 0x100) as usize;
            for i in 0..width.bytes() as usize {
                d.config[o + i] = (value >> (8 * i)) as u8;
            }
            return;
        }
        assert_eq!(width, Width::Word, "register write of width {width:?}");
        let v = value as u32;
        let sel = d.queue_sel as usize;
        let exists = sel < d.queues;
        match offset {
            reg::DEVICE_FEATURES_SEL => d.device_features_sel = u32::from(v != 0),
            reg::DRIVER_FEATURES_SEL => d.driver_features_sel = u32::from(v != 0),
            reg::DRIVER_FEATURES => d.driver_features[d.driver_features_sel as usize] = v,
            reg::GUEST_PAGE_SIZE => d.page_size = v,
            reg::QUEUE_SEL => d.queue_sel = v,
            reg::QUEUE_NUM if exists => d.sel().num = v,
            reg::QUEUE_ALIGN if exists => d.sel().align = v,
            reg::QUEUE_PFN if exists => d.sel().pfn = v,
            reg::QUEUE_READY if exists => d.sel().ready = v != 0,
            reg::QUEUE_DESC_LOW if exists => d.sel().desc = set_half(d.sel().desc, false, v),
            reg::QUEUE_DESC_HIGH if exists => d.sel().desc = set_half(d.sel().desc, true, v),
            reg::QUEUE_DRIVER_LOW if exists => d.sel().driver = set_half(d.sel().driver, false, v),
            reg::QUEUE_DRIVER_HIGH if exists => d.sel().driver = set_half(d.sel().driver, true, v),
            reg::QUEUE_DEVICE_LOW if exists => d.sel().device = set_half(d.sel().device, false, v),
            reg::QUEUE_DEVICE_HIGH if exists => d.sel().device = set_half(d.sel().device, true, v),
            reg::INTERRUPT_ACK => d.isr &= !v,
            reg::STATUS => {
                d.status = v;
                if v == 0 {
                    d.isr = 0;
                    d.queue_sel = 0;
                    for q in &mut d.q {
                        *q = FakeQueue { align: q.align, ..FakeQueue::default() };
                    }
                    self.events.push(Event::DeviceReset);
                }
            }
            _ => {}
        }
    }

    fn guest_to_host(&self, gpa: GuestPhysAddr, len: u64) -> Option<HostPhysAddr> {
        Self::ram_range(gpa.raw(), len).map(|r| HostPhysAddr::new(RAM_HPA + r.start as u64))
    }

    fn read_guest(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
        let gpa = gpa.raw();
        let Some(range) = Self::ram_range(gpa, buf.len() as u64) else { return false };
        buf.copy_from_slice(&self.ram.borrow()[range]);
        if let Ok(bytes) = <[u8; 16]>::try_from(&*buf) {
            self.desc_reads.borrow_mut().push((gpa, bytes));
        }
        if let Some(chaos) = &self.chaos {
            let chaos = &mut *chaos.borrow_mut();
            let rng = &mut chaos.rng;
            if rng.chance(chaos.percent) {
                let (start, len) = chaos.regions[rng.below(chaos.regions.len() as u64) as usize];
                let at = start + rng.below(len);
                let value = rng.next().to_le_bytes();
                let n = 1 + rng.below(8);
                if let Some(range) = Self::ram_range(at, n) {
                    self.ram.borrow_mut()[range].copy_from_slice(&value[..n as usize]);
                }
            }
        }
        true
    }

    fn write_guest(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> bool {
        let Some(range) = Self::ram_range(gpa.raw(), data.len() as u64) else { return false };
        self.ram.get_mut()[range].copy_from_slice(data);
        true
    }

    fn alloc_dma(&mut self, bytes: usize, align: usize) -> Option<HostPhysAddr> {
        assert!(align.is_power_of_two() && align <= 4096 && bytes > 0);
        if self.refuse_small_allocs.is_some_and(|limit| bytes <= limit) {
            return None;
        }
        let mut allocs = self.allocs.clone();
        allocs.sort();
        let mut at = DMA_HPA;
        for &(start, len) in allocs.iter().chain([(DMA_HPA + DMA_SIZE, 0)].iter()) {
            let aligned = at.next_multiple_of(align as u64);
            if aligned + bytes as u64 <= start {
                self.allocs.push((aligned, bytes));
                self.alloc_calls += 1;
                let o = (aligned - DMA_HPA) as usize;
                self.dma[o..o + bytes].fill(0);
                return Some(HostPhysAddr::new(aligned));
            }
            at = at.max(start + len as u64);
        }
        None
    }

    fn free_dma(&mut self, hpa: HostPhysAddr, bytes: usize) {
        let hpa = hpa.raw();
        let i =
            self.allocs.iter().position(|&a| a == (hpa, bytes)).expect("free of a non-allocation");
        self.allocs.swap_remove(i);
        self.free_calls += 1;
        self.events.push(Event::Free(hpa));
        // Freed memory is garbage from now on.
        let o = (hpa - DMA_HPA) as usize;
        self.dma[o..o + bytes].fill(0xdd);
    }

    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) {
        let hpa = hpa.raw();
        assert!(self.live_alloc(hpa, buf.len() as u64), "proxy reads outside its memory");
        let o = (hpa - DMA_HPA) as usize;
        buf.copy_from_slice(&self.dma[o..o + buf.len()]);
    }

    fn write_host(&mut self, hpa: HostPhysAddr, data: &[u8]) {
        let hpa = hpa.raw();
        assert!(self.live_alloc(hpa, data.len() as u64), "proxy writes outside its memory");
        let o = (hpa - DMA_HPA) as usize;
        self.dma[o..o + data.len()].copy_from_slice(data);
    }
}

// ---------------------------------------------------------------------------------------------
// A guest driver.

/// One queue as the guest driver laid it out.
#[derive(Clone, Copy)]
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    num: u16,
}

impl Ring {
    fn modern(num: u16) -> Self {
        Self { desc: RINGS, avail: RINGS + 0x1000, used: RINGS + 0x2000, num }
    }

    fn legacy(num: u16) -> Self {
        let avail = RINGS + 16 * u64::from(num);
        let used = (avail + 4 + 2 * u64::from(num)).next_multiple_of(4096);
        Self { desc: RINGS, avail, used, num }
    }

    /// The same layout `by` bytes further on.
    fn shifted(self, by: u64) -> Self {
        Self { desc: self.desc + by, avail: self.avail + by, used: self.used + by, ..self }
    }

    fn put(&self, host: &mut FakeHost, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Desc { addr, len, flags, next };
        host.poke(self.desc + 16 * u64::from(i), &d.to_bytes());
    }

    /// Makes `heads` available.
    fn offer(&self, host: &mut FakeHost, heads: &[u16]) {
        let mut idx = host.peek_u16(self.avail + 2);
        for &head in heads {
            host.poke(self.avail + 4 + 2 * u64::from(idx % self.num), &head.to_le_bytes());
            idx = idx.wrapping_add(1);
        }
        host.poke(self.avail + 2, &idx.to_le_bytes());
    }

    fn used_idx(&self, host: &FakeHost) -> u16 {
        host.peek_u16(self.used + 2)
    }

    fn used_elem(&self, host: &FakeHost, slot: u16) -> (u32, u32) {
        let b = host.peek(self.used + 4 + 8 * u64::from(slot % self.num), 8);
        (
            u32::from_le_bytes(b[..4].try_into().unwrap()),
            u32::from_le_bytes(b[4..].try_into().unwrap()),
        )
    }
}

fn rd(proxy: &mut VirtioProxy, host: &mut FakeHost, offset: u64) -> u32 {
    proxy.read(host, offset, Width::Word).unwrap() as u32
}

fn wr(proxy: &mut VirtioProxy, host: &mut FakeHost, offset: u64, value: u32) {
    proxy.write(host, offset, Width::Word, value.into()).unwrap();
}

fn features(proxy: &mut VirtioProxy, host: &mut FakeHost) -> u64 {
    wr(proxy, host, reg::DEVICE_FEATURES_SEL, 1);
    let high = rd(proxy, host, reg::DEVICE_FEATURES);
    wr(proxy, host, reg::DEVICE_FEATURES_SEL, 0);
    u64::from(high) << 32 | u64::from(rd(proxy, host, reg::DEVICE_FEATURES))
}

/// Brings the device up as Linux does and enables queue 0 with `ring`; negotiates `features`.
fn bring_up(proxy: &mut VirtioProxy, host: &mut FakeHost, ring: Ring, features: u64) {
    negotiate(proxy, host, features);
    enable_queue(proxy, host, 0, ring);
    let legacy = rd(proxy, host, reg::VERSION) == 1;
    wr(proxy, host, reg::STATUS, if legacy { 7 } else { 0xf });
}

/// Resets the device and negotiates `features`, as Linux does.
fn negotiate(proxy: &mut VirtioProxy, host: &mut FakeHost, features: u64) {
    wr(proxy, host, reg::STATUS, 0);
    wr(proxy, host, reg::STATUS, 1);
    wr(proxy, host, reg::STATUS, 3);
    let legacy = rd(proxy, host, reg::VERSION) == 1;
    wr(proxy, host, reg::DRIVER_FEATURES_SEL, 1);
    wr(proxy, host, reg::DRIVER_FEATURES, (features >> 32) as u32);
    wr(proxy, host, reg::DRIVER_FEATURES_SEL, 0);
    wr(proxy, host, reg::DRIVER_FEATURES, features as u32);
    if legacy {
        wr(proxy, host, reg::GUEST_PAGE_SIZE, 4096);
    } else {
        wr(proxy, host, reg::STATUS, 0xb);
    }
}

fn enable_queue(proxy: &mut VirtioProxy, host: &mut FakeHost, q: u32, ring: Ring) {
    wr(proxy, host, reg::QUEUE_SEL, q);
    assert_ne!(rd(proxy, host, reg::QUEUE_NUM_MAX), 0);
    wr(proxy, host, reg::QUEUE_NUM, ring.num.into());
    if rd(proxy, host, reg::VERSION) == 1 {
        assert_eq!(rd(proxy, host, reg::QUEUE_PFN), 0);
        wr(proxy, host, reg::QUEUE_ALIGN, 4096);
        wr(proxy, host, reg::QUEUE_PFN, (ring.desc >> 12) as u32);
    } else {
        assert_eq!(rd(proxy, host, reg::QUEUE_READY), 0);
        for (offset, addr) in [
            (reg::QUEUE_DESC_LOW, ring.desc),
            (reg::QUEUE_DRIVER_LOW, ring.avail),
            (reg::QUEUE_DEVICE_LOW, ring.used),
        ] {
            wr(proxy, host, offset, addr as u32);
            wr(proxy, host, offset + 4, (addr >> 32) as u32);
        }
        wr(proxy, host, reg::QUEUE_READY, 1);
    }
}

/// A proxy with queue 0 up, version `version`, `VERSION_1` negotiated on version 2.
fn up(version: u32, num: u16) -> (VirtioProxy, FakeHost, Ring) {
    let mut host = FakeHost::new(version);
    let mut proxy = VirtioProxy::new(&mut host);
    let ring = if version == 1 { Ring::legacy(num) } else { Ring::modern(num) };
    let f = if version == 1 { 0 } else { VERSION_1 | 1 << 28 };
    bring_up(&mut proxy, &mut host, ring, f);
    assert_eq!(proxy.fault(), None);
    (proxy, host, ring)
}

fn notify(proxy: &mut VirtioProxy, host: &mut FakeHost, q: u32) {
    wr(proxy, host, reg::QUEUE_NOTIFY, q);
}

fn buf(n: u64) -> u64 {
    BUFFERS + 0x1000 * n
}

fn hpa(gpa: u64) -> u64 {
    gpa - RAM_GPA + RAM_HPA
}

// ---------------------------------------------------------------------------------------------
// Slots and registers.

#[test]
fn absent_slot_reads_as_an_empty_qemu_transport() {
    let mut host = FakeHost::new(2);
    let mut proxy = VirtioProxy::absent();
    assert_eq!(rd(&mut proxy, &mut host, reg::MAGIC), MAGIC);
    assert_eq!(rd(&mut proxy, &mut host, reg::VERSION), 1);
    assert_eq!(rd(&mut proxy, &mut host, reg::DEVICE_ID), 0);
    assert_eq!(rd(&mut proxy, &mut host, reg::VENDOR_ID), QEMU_VENDOR);
    for offset in [reg::DEVICE_FEATURES, reg::QUEUE_NUM_MAX, reg::STATUS, 0x100, 0x1fc] {
        assert_eq!(rd(&mut proxy, &mut host, offset), 0);
    }
    // Widths are not checked on an empty transport; the value is cut to the width.
    assert_eq!(proxy.read(&mut host, 0, Width::Byte), Ok(0x76));
    assert_eq!(proxy.read(&mut host, 0, Width::Double), Ok(u64::from(MAGIC) | 1 << 32));
    wr(&mut proxy, &mut host, reg::STATUS, 0xf);
    wr(&mut proxy, &mut host, reg::QUEUE_NOTIFY, 0);
    assert!(host.dev.writes.is_empty());
    assert_eq!(proxy.read(&mut host, 0x200, Width::Word), Err(BusError));
    assert_eq!(proxy.write(&mut host, 0xffc, Width::Word, 0), Err(BusError));
    assert!(!proxy.device_interrupt(&mut host));
    assert!(!proxy.irq());
    let mut modern = VirtioProxy::absent_with_version(2);
    assert_eq!(rd(&mut modern, &mut host, reg::VERSION), 2);
    assert_eq!(rd(&mut modern, &mut host, reg::DEVICE_ID), 0);
}

#[test]
fn devices_that_carry_addresses_in_requests_are_not_passed_through() {
    for id in [5, 16, 0] {
        let mut host = FakeHost::with_device(FakeDevice::new(2, id));
        let mut proxy = VirtioProxy::new(&mut host);
        assert_eq!(rd(&mut proxy, &mut host, reg::DEVICE_ID), 0, "device {id}");
        assert_eq!(rd(&mut proxy, &mut host, reg::VERSION), 2);
        wr(&mut proxy, &mut host, reg::STATUS, 1);
        assert!(host.dev.writes.is_empty());
    }
}

#[test]
fn registers_answer_four_byte_accesses_and_config_any_width() {
    let mut host = FakeHost::new(2);
    let mut proxy = VirtioProxy::new(&mut host);
    assert_eq!(rd(&mut proxy, &mut host, reg::DEVICE_ID), NET);
    // The proxy reset the device on creation.
    assert_eq!(host.dev.writes.first(), Some(&(reg::STATUS, 0)));
    host.dev.writes.clear();
    assert_eq!(proxy.read(&mut host, reg::MAGIC, Width::Half), Ok(0));
    assert_eq!(proxy.read(&mut host, reg::MAGIC, Width::Double), Ok(u64::from(MAGIC) | 2 << 32));
    proxy.write(&mut host, reg::STATUS, Width::Byte, 1).unwrap();
    proxy.write(&mut host, reg::QUEUE_SEL, Width::Half, 1).unwrap();
    assert!(host.dev.writes.is_empty(), "sub-word register writes are ignored");
    // An 8-byte store is two word stores, lower first.
    proxy.write(&mut host, reg::DEVICE_FEATURES_SEL - 4, Width::Double, 1 << 32).unwrap();
    assert_eq!(host.dev.writes, [(reg::DEVICE_FEATURES_SEL, 1)]);
    // Configuration space: every width, forwarded.
    let cfg = host.dev.config.map(u64::from);
    assert_eq!(proxy.read(&mut host, 0x104, Width::Half), Ok(cfg[4] | cfg[5] << 8));
    assert_eq!(proxy.read(&mut host, 0x105, Width::Byte), Ok(cfg[5]));
    // A misaligned load is the two aligned loads that cover it.
    let word = |h: &FakeHost, o: usize| {
        (0..4).fold(0u64, |v, i| v | u64::from(h.dev.config[o + i]) << (8 * i))
    };
    let expect = (word(&host, 0) >> 8 | word(&host, 4) << 24) & 0xffff_ffff;
    assert_eq!(proxy.read(&mut host, 0x101, Width::Word), Ok(expect));
    proxy.write(&mut host, 0x110, Width::Word, 0x1234_5678).unwrap();
    assert_eq!(host.dev.config[0x10..0x14], [0x78, 0x56, 0x34, 0x12]);
    // A misaligned store is byte stores.
    proxy.write(&mut host, 0x121, Width::Half, 0xabcd).unwrap();
    assert_eq!(host.dev.config[0x21..0x23], [0xcd, 0xab]);
    // Past the decoded window: a fault, also for the second half of a misaligned load.
    assert_eq!(proxy.read(&mut host, 0x200, Width::Byte), Err(BusError));
    assert_eq!(proxy.read(&mut host, 0x1fe, Width::Word), Err(BusError));
    assert_eq!(proxy.read(&mut host, 0x1f8, Width::Double).map(|_| ()), Ok(()));
    // Write-only and unknown registers read 0 and are not forwarded.
    for offset in [reg::QUEUE_DESC_LOW, reg::QUEUE_DEVICE_HIGH, reg::GUEST_PAGE_SIZE, 0xc0] {
        assert_eq!(rd(&mut proxy, &mut host, offset), 0);
    }
    host.dev.writes.clear();
    for offset in [0x0c0, reg::MAGIC, reg::SHM_LEN_LOW, reg::QUEUE_PFN, reg::GUEST_PAGE_SIZE] {
        wr(&mut proxy, &mut host, offset, 5);
    }
    assert!(host.dev.writes.is_empty());
    assert_eq!(rd(&mut proxy, &mut host, reg::SHM_LEN_LOW), u32::MAX);
    assert_eq!(rd(&mut proxy, &mut host, reg::CONFIG_GENERATION), 7);
}

#[test]
fn features_are_masked_both_ways() {
    for version in [1, 2] {
        let mut host = FakeHost::new(version);
        let mut proxy = VirtioProxy::new(&mut host);
        let offered = features(&mut proxy, &mut host);
        let expect = if version == 1 { OFFERED_FEATURES & 0xffff_ffff } else { OFFERED_FEATURES };
        assert_eq!(offered, expect);
        for bit in [24, 29, 30, 33, 34, 35, 37, 38, 39, 40, 41, 45, 49] {
            assert_eq!(offered & 1 << bit, 0, "bit {bit} offered");
        }
        if version == 2 {
            for bit in [0, 5, 23, 27, 28, 32, 36, 50, 63] {
                assert_ne!(offered & 1 << bit, 0, "bit {bit} masked");
            }
        }
        wr(&mut proxy, &mut host, reg::DRIVER_FEATURES_SEL, 1);
        wr(&mut proxy, &mut host, reg::DRIVER_FEATURES, u32::MAX);
        wr(&mut proxy, &mut host, reg::DRIVER_FEATURES_SEL, 0);
        wr(&mut proxy, &mut host, reg::DRIVER_FEATURES, u32::MAX);
        let got =
            u64::from(host.dev.driver_features[1]) << 32 | u64::from(host.dev.driver_features[0]);
        assert_eq!(got, expect);
    }
}

// ---------------------------------------------------------------------------------------------
// Queue setup.

#[test]
fn modern_queue_setup_gives_the_device_shadow_rings() {
    let (mut proxy, mut host, ring) = up(2, 8);
    let q = host.dev.q[0].clone();
    assert!(q.ready);
    assert_eq!(q.num, 8);
    assert_eq!(host.allocs.len(), 1);
    let (block, bytes) = host.allocs[0];
    for (addr, len) in [(q.desc, 16 * 8), (q.driver, 4 + 2 * 8), (q.device, 4 + 8 * 8)] {
        assert!(addr >= block && addr + len <= block + bytes as u64, "ring outside its block");
    }
    assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_READY), 1);
    // Guest addresses never reach the device.
    assert!(host.dev.writes.iter().all(|&(_, v)| v != ring.desc && v != RINGS as u32 as u64));
    // QueueReady = 0 is only recorded; the device keeps its rings.
    wr(&mut proxy, &mut host, reg::QUEUE_READY, 0);
    assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_READY), 0);
    assert!(host.dev.q[0].ready);
    assert_eq!(host.allocs.len(), 1);
}

#[test]
fn legacy_queue_setup_gives_the_device_shadow_rings() {
    let (mut proxy, mut host, ring) = up(1, 16);
    let q = host.dev.q[0].clone();
    assert_eq!((host.dev.page_size, q.num, q.align), (4096, 16, 4096));
    let (block, bytes) = host.allocs[0];
    assert_eq!(u64::from(q.pfn) * 4096, block);
    let (desc, avail, used, num) = host.dev.rings(0).unwrap();
    assert_eq!((desc, num), (block, 16));
    assert!(avail == block + 256 && used + 4 + 8 * 16 <= block + bytes as u64);
    // QueuePFN reads back the guest's own value, with its page size.
    assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_PFN), (ring.desc >> 12) as u32);
    wr(&mut proxy, &mut host, reg::GUEST_PAGE_SIZE, 0x2000);
    assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_PFN), (ring.desc >> 13) as u32);
    // Legacy and modern registers do not cross.
    assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_READY), 0);
    assert_eq!(rd(&mut proxy, &mut host, reg::CONFIG_GENERATION), 0);
}

#[test]
fn queue_size_is_checked_against_the_device() {
    let mut host = FakeHost::new(2);
    let mut proxy = VirtioProxy::new(&mut host);
    wr(&mut proxy, &mut host, reg::QUEUE_NUM, 512); // past QueueNumMax 256: ignored
    wr(&mut proxy, &mut host, reg::QUEUE_READY, 1);
    assert_eq!(proxy.fault(), None, "no descriptor table: unused, as QEMU");
    wr(&mut proxy, &mut host, reg::QUEUE_DESC_LOW, RINGS as u32);
    wr(&mut proxy, &mut host, reg::QUEUE_READY, 1);
    assert_eq!(proxy.fault(), Some(Fault::NoQueueSize));
    assert!(host.allocs.is_empty());
    // A queue the device does not have is ignored, as QEMU ignores it.
    wr(&mut proxy, &mut host, reg::STATUS, 0);
    wr(&mut proxy, &mut host, reg::QUEUE_SEL, 5);
    wr(&mut proxy, &mut host, reg::QUEUE_NUM, 8);
    wr(&mut proxy, &mut host, reg::QUEUE_DESC_LOW, RINGS as u32);
    wr(&mut proxy, &mut host, reg::QUEUE_READY, 1);
    assert_eq!(proxy.fault(), None);
    assert!(host.allocs.is_empty());
}

#[test]
fn rings_outside_guest_ram_are_refused_at_enable() {
    let end = RAM_GPA + RAM_SIZE;
    for (version, ring) in [
        (2, Ring { used: end - 8, ..Ring::modern(8) }),
        (2, Ring { desc: RAM_GPA - 0x1000, ..Ring::modern(8) }),
        (2, Ring { avail: u64::MAX - 1, ..Ring::modern(8) }),
        (1, Ring { desc: end - 0x1000, ..Ring::legacy(8) }),
        (1, Ring { desc: 0x1000, ..Ring::legacy(8) }),
    ] {
        let mut host = FakeHost::new(version);
        let mut proxy = VirtioProxy::new(&mut host);
        negotiate(&mut proxy, &mut host, if version == 2 { VERSION_1 } else { 0 });
        enable_queue(&mut proxy, &mut host, 0, ring);
        assert_eq!(proxy.fault(), Some(Fault::RingOutsideRam));
        assert!(host.allocs.is_empty());
        assert!(host.dev.rings(0).is_none(), "device was given a queue");
        // Modern: NEEDS_RESET; no interrupt before DRIVER_OK.
        let status = rd(&mut proxy, &mut host, reg::STATUS);
        assert_eq!(status & 0x40 != 0, version == 2);
        assert!(!proxy.irq());
        // As in QEMU, the next Status write replaces it; the device stays broken.
        wr(&mut proxy, &mut host, reg::STATUS, 0xf);
        assert_eq!(rd(&mut proxy, &mut host, reg::STATUS) & 0x40, 0);
        notify(&mut proxy, &mut host, 0);
        assert_eq!(host.dev.notifies(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The data path.

#[test]
fn chains_are_translated_and_used_entries_copied_back() {
    for version in [1, 2] {
        let (mut proxy, mut host, ring) = up(version, 8);
        ring.put(&mut host, 3, buf(0), 16, DESC_NEXT, 5);
        ring.put(&mut host, 5, buf(1), 0x1000, DESC_NEXT | DESC_WRITE, 1);
        ring.put(&mut host, 1, buf(2), 1, DESC_WRITE, 0);
        ring.put(&mut host, 0, buf(3), 100, 0, 7);
        ring.offer(&mut host, &[3, 0]);
        notify(&mut proxy, &mut host, 0);
        assert_eq!(host.dev.notifies(), 1);
        assert_eq!(host.device_pop(0, 8), 2);
        let chains: Vec<_> = host.dev.q[0].held.clone();
        assert_eq!(chains[0].0, 3);
        assert_eq!(
            chains[0].1,
            [
                Desc { addr: hpa(buf(0)), len: 16, flags: DESC_NEXT, next: 5 },
                Desc { addr: hpa(buf(1)), len: 0x1000, flags: DESC_NEXT | DESC_WRITE, next: 1 },
                Desc { addr: hpa(buf(2)), len: 1, flags: DESC_WRITE, next: 0 },
            ]
        );
        assert_eq!(chains[1], (0, vec![Desc { addr: hpa(buf(3)), len: 100, flags: 0, next: 0 }]));
        assert!(!proxy.irq());
        assert_eq!(host.device_complete(0, 1, None), 1);
        assert!(proxy.device_interrupt(&mut host));
        assert_eq!(host.dev.isr, 0, "the proxy acknowledges the device");
        assert_eq!(ring.used_idx(&host), 1);
        assert_eq!(ring.used_elem(&host, 0), (3, 4));
        assert_eq!(rd(&mut proxy, &mut host, reg::INTERRUPT_STATUS), 1);
        wr(&mut proxy, &mut host, reg::INTERRUPT_ACK, 1);
        assert!(!proxy.irq());
        // A read of InterruptStatus collects completions without the host interrupt.
        host.device_complete(0, 1, None);
        assert_eq!(rd(&mut proxy, &mut host, reg::INTERRUPT_STATUS), 1);
        assert_eq!(ring.used_idx(&host), 2);
        assert_eq!(ring.used_elem(&host, 1), (0, 1));
        wr(&mut proxy, &mut host, reg::INTERRUPT_ACK, 1);
        // The descriptors are free again: reuse them differently.
        ring.put(&mut host, 3, buf(4), 8, 0, 0);
        ring.offer(&mut host, &[3]);
        notify(&mut proxy, &mut host, 0);
        assert_eq!(host.device_pop(0, 8), 1);
        assert_eq!(
            host.dev.q[0].held[0].1,
            [Desc { addr: hpa(buf(4)), len: 8, flags: 0, next: 0 }]
        );
        assert_eq!(proxy.fault(), None);
    }
}

#[test]
fn guest_interrupt_suppression_and_device_notification_suppression() {
    let (mut proxy, mut host, ring) = up(2, 8);
    ring.put(&mut host, 0, buf(0), 8, 0, 0);
    ring.put(&mut host, 1, buf(1), 8, 0, 0);
    ring.offer(&mut host, &[0]);
    notify(&mut proxy, &mut host, 0);
    host.device_pop(0, 8);
    // The guest suppresses interrupts: entries are copied back, the line stays low.
    host.poke(ring.avail, &1u16.to_le_bytes());
    host.device_complete(0, 8, None);
    assert!(!proxy.device_interrupt(&mut host));
    assert_eq!(ring.used_idx(&host), 1);
    // The shadow ring never suppresses the device's interrupts.
    let (_, avail, _, _) = host.dev.rings(0).unwrap();
    assert_eq!(host.dev_u16(avail), 0);
    // The device asks for no notifications: published, not notified.
    host.set_used_flags(0, 1);
    ring.offer(&mut host, &[1]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(host.dev.notifies(), 1);
    assert_eq!(host.device_pop(0, 8), 1);
    // The guest's used ring flags stay 0.
    assert_eq!(host.peek_u16(ring.used), 0);
}

#[test]
fn config_change_interrupts_pass_through() {
    let (mut proxy, mut host, _) = up(2, 8);
    host.dev.isr = 2;
    assert!(proxy.device_interrupt(&mut host));
    assert_eq!(host.dev.isr, 0);
    assert_eq!(rd(&mut proxy, &mut host, reg::INTERRUPT_STATUS), 2);
    wr(&mut proxy, &mut host, reg::INTERRUPT_ACK, 2);
    assert!(!proxy.irq());
    assert_eq!(rd(&mut proxy, &mut host, reg::INTERRUPT_STATUS), 0);
}

/// Ways for a guest to get a chain wrong, each with the fault it must give.
/// A way to get a chain wrong: what it is, the fault it gives, how to make it.
type BadChain = (&'static str, Fault, fn(&mut FakeHost, Ring));

fn bad_chains() -> Vec<BadChain> {
    vec![
        ("below RAM", Fault::BufferOutsideRam, |h, r| r.put(h, 0, RAM_GPA - 0x100, 8, 0, 0)),
        ("straddles the end of RAM", Fault::BufferOutsideRam, |h, r| {
            r.put(h, 0, RAM_GPA + RAM_SIZE - 8, 16, 0, 0)
        }),
        ("wraps around", Fault::BufferOutsideRam, |h, r| r.put(h, 0, u64::MAX - 3, 8, 0, 0)),
        ("second buffer outside", Fault::BufferOutsideRam, |h, r| {
            r.put(h, 0, buf(0), 8, DESC_NEXT, 1);
            r.put(h, 1, 0x1000, 8, DESC_WRITE, 0);
        }),
        ("zero length", Fault::ZeroLength, |h, r| r.put(h, 0, buf(0), 0, 0, 0)),
        ("loop", Fault::Loop, |h, r| {
            r.put(h, 0, buf(0), 8, DESC_NEXT, 1);
            r.put(h, 1, buf(1), 8, DESC_NEXT, 2);
            r.put(h, 2, buf(2), 8, DESC_NEXT, 0);
        }),
        ("self loop", Fault::Loop, |h, r| r.put(h, 0, buf(0), 8, DESC_NEXT, 0)),
        ("next past the table", Fault::NextOutOfRange, |h, r| {
            r.put(h, 0, buf(0), 8, DESC_NEXT, r.num)
        }),
        ("indirect size", Fault::IndirectSize, |h, r| r.put(h, 0, buf(0), 24, DESC_INDIRECT, 0)),
        ("indirect empty", Fault::IndirectSize, |h, r| r.put(h, 0, buf(0), 0, DESC_INDIRECT, 0)),
        ("indirect table outside", Fault::IndirectOutsideRam, |h, r| {
            r.put(h, 0, RAM_GPA + RAM_SIZE - 16, 32, DESC_INDIRECT, 0)
        }),
        ("indirect entry outside", Fault::BufferOutsideRam, |h, r| {
            h.poke(buf(5), &Desc { addr: buf(0), len: 8, flags: DESC_NEXT, next: 1 }.to_bytes());
            h.poke(buf(5) + 16, &Desc { addr: 0, len: 8, flags: 0, next: 0 }.to_bytes());
            r.put(h, 0, buf(5), 32, DESC_INDIRECT, 0);
        }),
        ("indirect loop", Fault::Loop, |h, r| {
            h.poke(buf(5), &Desc { addr: buf(0), len: 8, flags: DESC_NEXT, next: 1 }.to_bytes());
            h.poke(
                buf(5) + 16,
                &Desc { addr: buf(1), len: 8, flags: DESC_NEXT, next: 0 }.to_bytes(),
            );
            r.put(h, 0, buf(5), 32, DESC_INDIRECT, 0);
        }),
        ("indirect next past the table", Fault::NextOutOfRange, |h, r| {
            h.poke(buf(5), &Desc { addr: buf(0), len: 8, flags: DESC_NEXT, next: 2 }.to_bytes());
            r.put(h, 0, buf(5), 32, DESC_INDIRECT, 0);
        }),
    ]
}

#[test]
fn bad_chains_are_never_published_and_break_the_device() {
    for version in [1, 2] {
        for (what, fault, make) in bad_chains() {
            let (mut proxy, mut host, ring) = up(version, 8);
            // A good chain first, in the same notification: it is published.
            ring.put(&mut host, 4, buf(9), 8, 0, 0);
            make(&mut host, ring);
            ring.offer(&mut host, &[4, 0]);
            notify(&mut proxy, &mut host, 0);
            assert_eq!(proxy.fault(), Some(fault), "{what}");
            assert_eq!(host.shadow_avail_idx(0), Some(1), "{what}: refused chain published");
            assert_eq!(host.device_pop(0, 8), 1);
            assert_eq!(host.dev.q[0].held[0].0, 4);
            check_broken(&mut proxy, &mut host, ring, version, what);
        }
    }
}

#[test]
fn bad_avail_entries_break_the_device() {
    for version in [1, 2] {
        // A head past the queue size.
        let (mut proxy, mut host, ring) = up(version, 8);
        ring.offer(&mut host, &[8]);
        notify(&mut proxy, &mut host, 0);
        assert_eq!(proxy.fault(), Some(Fault::HeadOutOfRange));
        assert_eq!(host.shadow_avail_idx(0), Some(0));
        check_broken(&mut proxy, &mut host, ring, version, "head");
        // An avail index more than a ring ahead.
        let (mut proxy, mut host, ring) = up(version, 8);
        ring.put(&mut host, 0, buf(0), 8, 0, 0);
        host.poke(ring.avail + 2, &9u16.to_le_bytes());
        notify(&mut proxy, &mut host, 0);
        assert_eq!(proxy.fault(), Some(Fault::AvailIndex));
        assert_eq!(host.shadow_avail_idx(0), Some(0));
        check_broken(&mut proxy, &mut host, ring, version, "avail index");
    }
}

/// After a fault: the guest is told (version 1 devices: not), nothing more is forwarded or
/// copied back until the guest resets the device, and then all works again.
fn check_broken(
    proxy: &mut VirtioProxy,
    host: &mut FakeHost,
    ring: Ring,
    version: u32,
    what: &str,
) {
    let status = rd(proxy, host, reg::STATUS);
    if version == 2 {
        assert_eq!(status, 0xf | 0x40, "{what}");
        assert!(proxy.irq());
        assert_eq!(rd(proxy, host, reg::INTERRUPT_STATUS), 3);
        assert_eq!(rd(proxy, host, reg::CONFIG_GENERATION), 8);
        wr(proxy, host, reg::INTERRUPT_ACK, 3);
    } else {
        assert_eq!(status, 7, "{what}");
        assert!(!proxy.irq());
    }
    let notifies = host.dev.notifies();
    let avail = host.shadow_avail_idx(0);
    let used = ring.used_idx(host);
    // Good chains are not forwarded, completions are not copied back.
    ring.put(host, 6, buf(8), 8, 0, 0);
    ring.offer(host, &[6]);
    notify(proxy, host, 0);
    host.device_complete(0, 8, None);
    assert!(!proxy.device_interrupt(host));
    assert_eq!(rd(proxy, host, reg::INTERRUPT_STATUS), 0);
    assert_eq!((host.dev.notifies(), host.shadow_avail_idx(0)), (notifies, avail), "{what}");
    assert_eq!(ring.used_idx(host), used);
    // A write of Status clears NEEDS_RESET, not the fault.
    wr(proxy, host, reg::STATUS, 0xf);
    assert_eq!(rd(proxy, host, reg::STATUS) & 0x40, 0);
    assert!(proxy.fault().is_some());
    // The reset: the device first, then the memory.
    host.events.clear();
    wr(proxy, host, reg::STATUS, 0);
    assert_eq!(proxy.fault(), None);
    assert!(host.allocs.is_empty());
    assert_eq!(host.events.first(), Some(&Event::DeviceReset));
    assert_eq!(host.alloc_calls, host.free_calls);
    // And up again.
    host.poke(ring.avail + 2, &0u16.to_le_bytes());
    host.poke(ring.used + 2, &0u16.to_le_bytes());
    bring_up(proxy, host, ring, if version == 2 { VERSION_1 } else { 0 });
    ring.put(host, 2, buf(3), 8, DESC_WRITE, 0);
    ring.offer(host, &[2]);
    notify(proxy, host, 0);
    assert_eq!(host.device_pop(0, 8), 1);
    host.device_complete(0, 8, None);
    assert!(proxy.device_interrupt(host));
    assert_eq!(ring.used_elem(host, 0), (2, 3));
}

#[test]
fn descriptors_the_device_holds_cannot_change() {
    let (mut proxy, mut host, ring) = up(2, 8);
    ring.put(&mut host, 0, buf(0), 8, DESC_NEXT, 1);
    ring.put(&mut host, 1, buf(1), 8, DESC_WRITE, 0);
    ring.offer(&mut host, &[0]);
    notify(&mut proxy, &mut host, 0);
    // The same chain again, unchanged: QEMU would take it twice, and so may the device.
    ring.offer(&mut host, &[1]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), None);
    assert_eq!(host.device_pop(0, 8), 2);
    // Descriptor 1 is held (twice): another chain may not give it other contents.
    ring.put(&mut host, 2, buf(2), 8, DESC_NEXT, 1);
    ring.put(&mut host, 1, buf(7), 8, DESC_WRITE, 0);
    ring.offer(&mut host, &[2]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), Some(Fault::InFlightChanged));
    assert_eq!(host.shadow_avail_idx(0), Some(2));
    host.device_complete(0, 8, None);
}

#[test]
fn at_most_a_queue_of_chains_is_outstanding() {
    let (mut proxy, mut host, ring) = up(2, 4);
    for i in 0..4 {
        ring.put(&mut host, i, buf(i.into()), 8, 0, 0);
    }
    ring.offer(&mut host, &[0, 1, 2, 3]);
    notify(&mut proxy, &mut host, 0);
    host.device_pop(0, 8);
    ring.offer(&mut host, &[0]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), Some(Fault::QueueFull));
    assert_eq!(host.shadow_avail_idx(0), Some(4));
}

#[test]
fn indirect_tables_are_copied_translated_and_freed() {
    let (mut proxy, mut host, ring) = up(2, 8);
    let table = buf(5) + 0x100;
    // Out of order in the table: 0 -> 2 -> 1.
    let entries = [
        Desc { addr: buf(0), len: 16, flags: DESC_NEXT | DESC_INDIRECT, next: 2 },
        Desc { addr: buf(2), len: 4, flags: DESC_WRITE, next: 3 },
        Desc { addr: buf(1), len: 512, flags: DESC_NEXT, next: 1 },
    ];
    for (i, e) in entries.iter().enumerate() {
        host.poke(table + 16 * i as u64, &e.to_bytes());
    }
    // NEXT on an indirect head is ignored, as QEMU ignores it.
    ring.put(&mut host, 2, table, 48, DESC_INDIRECT | DESC_NEXT | DESC_WRITE, 7);
    ring.offer(&mut host, &[2]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), None);
    assert_eq!(host.allocs.len(), 2);
    host.device_pop(0, 8);
    let (head, chain) = host.dev.q[0].held[0].clone();
    assert_eq!(head, 2);
    let shadow_table = host.allocs[1].0;
    assert_eq!(
        chain,
        [
            Desc { addr: shadow_table, len: 48, flags: DESC_INDIRECT, next: 0 },
            Desc { addr: hpa(buf(0)), len: 16, flags: DESC_NEXT, next: 1 },
            Desc { addr: hpa(buf(1)), len: 512, flags: DESC_NEXT, next: 2 },
            Desc { addr: hpa(buf(2)), len: 4, flags: DESC_WRITE, next: 0 },
        ]
    );
    // The guest rewrites its table: the device's copy stays.
    host.poke(table, &[0xff; 48]);
    host.device_complete(0, 8, None);
    assert!(proxy.device_interrupt(&mut host));
    assert_eq!(ring.used_elem(&host, 0), (2, 3));
    assert_eq!(host.allocs.len(), 1, "table freed when used");
}

#[test]
fn indirect_chains_wait_for_host_memory() {
    let (mut proxy, mut host, ring) = up(2, 8);
    host.poke(buf(5), &Desc { addr: buf(0), len: 8, flags: 0, next: 0 }.to_bytes());
    ring.put(&mut host, 0, buf(1), 8, 0, 0);
    ring.put(&mut host, 1, buf(5), 16, DESC_INDIRECT, 0);
    ring.put(&mut host, 2, buf(2), 8, 0, 0);
    host.refuse_small_allocs = Some(4096);
    ring.offer(&mut host, &[0, 1, 2]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), None);
    assert_eq!(host.shadow_avail_idx(0), Some(1), "stops before the chain that waits");
    host.device_pop(0, 8);
    host.device_complete(0, 8, None);
    host.refuse_small_allocs = None;
    assert!(proxy.device_interrupt(&mut host));
    assert_eq!(host.shadow_avail_idx(0), Some(3), "the rest published after the interrupt");
    assert_eq!(host.dev.notifies(), 2);
    assert_eq!(host.device_pop(0, 8), 2);
    // The budget also bounds what one queue holds.
    let (mut proxy, mut host, ring) = up(2, 256);
    let table_bytes = 16 * 1024;
    for i in 0..1024u64 {
        let e = Desc { addr: buf(0), len: 8, flags: DESC_NEXT, next: (i + 1) as u16 };
        host.poke(BUFFERS + 16 * i, &e.to_bytes());
    }
    host.poke(BUFFERS + 16 * 1023, &Desc { addr: buf(0), len: 8, flags: 0, next: 0 }.to_bytes());
    let fit = INDIRECT_BUDGET / table_bytes;
    let heads: Vec<u16> = (0..fit as u16 + 1).collect();
    for &h in &heads {
        ring.put(&mut host, h, BUFFERS, table_bytes as u32, DESC_INDIRECT, 0);
    }
    ring.offer(&mut host, &heads);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(host.shadow_avail_idx(0), Some(fit as u16));
    host.device_pop(0, 1);
    host.device_complete(0, 1, None);
    proxy.device_interrupt(&mut host);
    assert_eq!(host.shadow_avail_idx(0), Some(fit as u16 + 1));
    // One entry more than QEMU maps is refused.
    ring.put(&mut host, 200, BUFFERS, table_bytes as u32 + 16, DESC_INDIRECT, 0);
    host.poke(
        BUFFERS + 16 * 1023,
        &Desc { addr: buf(0), len: 8, flags: DESC_NEXT, next: 1024 }.to_bytes(),
    );
    host.poke(BUFFERS + 16 * 1024, &Desc { addr: buf(0), len: 8, flags: 0, next: 0 }.to_bytes());
    ring.offer(&mut host, &[200]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(proxy.fault(), Some(Fault::IndirectTooLong));
}

#[test]
fn reset_frees_all_shadow_memory_after_resetting_the_device() {
    for version in [1, 2] {
        let (mut proxy, mut host, ring) = up(version, 8);
        let ring1 = ring.shifted(0x4000);
        enable_queue(&mut proxy, &mut host, 1, ring1);
        host.poke(buf(5), &Desc { addr: buf(0), len: 8, flags: 0, next: 0 }.to_bytes());
        ring.put(&mut host, 0, buf(5), 16, DESC_INDIRECT, 0);
        ring.offer(&mut host, &[0]);
        notify(&mut proxy, &mut host, 0);
        assert_eq!(proxy.fault(), None);
        assert_eq!(host.allocs.len(), 3);
        host.events.clear();
        proxy.reset(&mut host);
        assert!(host.allocs.is_empty());
        assert_eq!(host.alloc_calls, host.free_calls);
        assert_eq!(host.events[0], Event::DeviceReset);
        assert_eq!(host.events.len(), 4);
        assert_eq!(host.dev.status, 0);
        // A reset proxy starts over.
        assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_READY), 0);
        assert_eq!(rd(&mut proxy, &mut host, reg::QUEUE_PFN), 0);
    }
}

#[test]
fn legacy_pfn_zero_resets_the_device() {
    let (mut proxy, mut host, ring) = up(1, 8);
    ring.put(&mut host, 0, buf(0), 8, 0, 0);
    ring.offer(&mut host, &[0]);
    notify(&mut proxy, &mut host, 0);
    host.events.clear();
    wr(&mut proxy, &mut host, reg::QUEUE_PFN, 0);
    assert_eq!(host.events.first(), Some(&Event::DeviceReset));
    assert!(host.allocs.is_empty());
    assert_eq!(rd(&mut proxy, &mut host, reg::STATUS), 0);
    // QEMU forgets the queue size: enabling without one is a fault.
    wr(&mut proxy, &mut host, reg::QUEUE_PFN, (ring.desc >> 12) as u32);
    assert_eq!(proxy.fault(), Some(Fault::NoQueueSize));
}

#[test]
fn moving_a_live_queue_keeps_its_shadow() {
    let (mut proxy, mut host, ring) = up(2, 8);
    ring.put(&mut host, 0, buf(0), 8, 0, 0);
    ring.offer(&mut host, &[0]);
    notify(&mut proxy, &mut host, 0);
    let moved = ring.shifted(0x8000);
    // The new rings carry on from the old indices.
    host.poke(moved.avail + 2, &1u16.to_le_bytes());
    host.poke(moved.used + 2, &0u16.to_le_bytes());
    enable_queue_again(&mut proxy, &mut host, moved);
    assert_eq!(host.allocs.len(), 1);
    moved.put(&mut host, 1, buf(1), 8, 0, 0);
    moved.offer(&mut host, &[1]);
    notify(&mut proxy, &mut host, 0);
    assert_eq!(host.device_pop(0, 8), 2);
    host.device_complete(0, 8, None);
    proxy.device_interrupt(&mut host);
    assert_eq!(moved.used_idx(&host), 2);
    assert_eq!(moved.used_elem(&host, 1), (1, 2));
    // Moving it outside RAM is a fault.
    enable_queue_again(&mut proxy, &mut host, Ring { used: RAM_GPA + RAM_SIZE, ..moved });
    assert_eq!(proxy.fault(), Some(Fault::RingOutsideRam));
}

fn enable_queue_again(proxy: &mut VirtioProxy, host: &mut FakeHost, ring: Ring) {
    for (offset, addr) in [
        (reg::QUEUE_DESC_LOW, ring.desc),
        (reg::QUEUE_DRIVER_LOW, ring.avail),
        (reg::QUEUE_DEVICE_LOW, ring.used),
    ] {
        wr(proxy, host, offset, addr as u32);
    }
    wr(proxy, host, reg::QUEUE_READY, 1);
}

// ---------------------------------------------------------------------------------------------
// The property: whatever the guest writes, whenever it writes it, the device only ever sees
// buffers in the guest's RAM, and each published descriptor is the translation of a guest
// descriptor as the proxy read it.

/// A random descriptor: addresses in RAM, straddling its ends, outside it; any flags.
fn random_desc(rng: &mut Rng, num: u16, tables: &[u64]) -> Desc {
    let len = match rng.below(8) {
        0 => 0,
        1 => rng.next() as u32,
        2 => 16 * (1 + rng.below(4) as u32),
        _ => 1 + rng.below(0x800) as u32,
    };
    let addr = match rng.below(10) {
        0 => RAM_GPA + RAM_SIZE - rng.below(0x800),
        1 => RAM_GPA - rng.below(0x800),
        2 => rng.next(),
        3 => u64::MAX - rng.below(0x800),
        4 | 5 if !tables.is_empty() => tables[rng.below(tables.len() as u64) as usize],
        _ => BUFFERS + rng.below(0x8000),
    };
    let flags = match rng.below(6) {
        0 => rng.next() as u16,
        1 => DESC_INDIRECT,
        _ => rng.below(4) as u16,
    };
    let next = if rng.chance(90) { rng.below(u64::from(num)) } else { rng.below(1 << 16) } as u16;
    Desc { addr, len, flags, next }
}

/// A valid buffer descriptor (the caller sets NEXT and `next`).
fn good_buffer(rng: &mut Rng) -> Desc {
    let len = 1 + rng.below(0x800) as u32;
    let addr = BUFFERS + rng.below(0x8000);
    Desc { addr, len, flags: if rng.chance(50) { DESC_WRITE } else { 0 }, next: 0 }
}

/// Checks, right after a notification, that every chain the proxy published is the
/// translation of guest descriptors as they were read.
fn check_published(host: &mut FakeHost, ring: Ring, from: u16, to: u16) {
    let (desc, avail, _, num) = host.dev.rings(0).unwrap();
    let reads = host.desc_reads.borrow().clone();
    let translated = |gpa: Option<u64>, shadow: &Desc| {
        reads.iter().any(|&(at, bytes)| {
            let g = Desc::from_bytes(bytes);
            gpa.is_none_or(|gpa| gpa == at)
                && g.len == shadow.len
                && g.len != 0
                && FakeHost::ram_range(g.addr, u64::from(g.len)).is_some()
                && hpa(g.addr) == shadow.addr
                && g.flags & DESC_WRITE == shadow.flags & DESC_WRITE
                && (g.flags & DESC_NEXT == 0 || gpa.is_none() || g.next == shadow.next)
        })
    };
    let mut k = from;
    while k != to {
        let head = host.dev_u16(avail + 4 + 2 * u64::from(k % num));
        let mut i = head;
        loop {
            let d = host.dev_desc(desc, u64::from(i));
            let gpa = ring.desc + 16 * u64::from(i);
            if d.flags & DESC_INDIRECT != 0 {
                // Each table entry is a translated guest entry.
                for e in 0..u64::from(d.len) / 16 {
                    let entry = host.dev_desc(d.addr, e);
                    assert!(translated(None, &entry), "untranslated indirect entry {entry:?}");
                }
                break;
            }
            assert!(translated(Some(gpa), &d), "descriptor {i} is no translated guest one: {d:?}");
            if d.flags & DESC_NEXT == 0 {
                break;
            }
            i = d.next;
        }
        k = k.wrapping_add(1);
    }
}

/// A guest driver that mostly behaves (keeps a free list, builds chains and indirect tables,
/// takes back used chains) and misbehaves at a rate of `hostile` percent per step, while a
/// racing vCPU scribbles over its rings and tables during the proxy's reads.
struct Driver {
    ring: Ring,
    free: Vec<u16>,
    /// Outstanding chains by head: their descriptors and indirect table slot.
    chains: std::collections::BTreeMap<u16, (Vec<u16>, Option<usize>)>,
    tables: Vec<u64>,
    free_tables: Vec<usize>,
    last_used: u16,
}

impl Driver {
    fn new(ring: Ring, tables: &[u64]) -> Self {
        Self {
            ring,
            free: (0..ring.num).collect(),
            chains: std::collections::BTreeMap::new(),
            tables: tables.to_vec(),
            free_tables: (0..tables.len()).collect(),
            last_used: 0,
        }
    }

    fn submit(&mut self, host: &mut FakeHost, rng: &mut Rng) {
        if self.free.is_empty() {
            return;
        }
        let take = |free: &mut Vec<u16>, rng: &mut Rng| {
            free.swap_remove(rng.below(free.len() as u64) as usize)
        };
        if rng.chance(30) && !self.free_tables.is_empty() {
            let slot = take_index(&mut self.free_tables, rng);
            let table = self.tables[slot];
            let n = 1 + rng.below(6);
            for e in 0..n {
                let mut d = good_buffer(rng);
                if e + 1 < n {
                    d.flags |= DESC_NEXT;
                    d.next = (e + 1) as u16;
                }
                host.poke(table + 16 * e, &d.to_bytes());
            }
            let head = take(&mut self.free, rng);
            let d = Desc { addr: table, len: 16 * n as u32, flags: DESC_INDIRECT, next: 0 };
            self.ring.put(host, head, d.addr, d.len, d.flags, d.next);
            self.chains.insert(head, (vec![head], Some(slot)));
            self.ring.offer(host, &[head]);
            return;
        }
        let n = 1 + rng.below(self.free.len().min(4) as u64);
        let ids: Vec<u16> = (0..n).map(|_| take(&mut self.free, rng)).collect();
        for (k, &i) in ids.iter().enumerate() {
            let mut d = good_buffer(rng);
            if let Some(&next) = ids.get(k + 1) {
                d.flags |= DESC_NEXT;
                d.next = next;
            }
            self.ring.put(host, i, d.addr, d.len, d.flags, d.next);
        }
        self.chains.insert(ids[0], (ids.clone(), None));
        self.ring.offer(host, &ids[..1]);
    }

    /// Takes back the chains the proxy returned; checks what it copied.
    fn reclaim(&mut self, host: &FakeHost) {
        let idx = self.ring.used_idx(host);
        while self.last_used != idx {
            let (id, len) = self.ring.used_elem(host, self.last_used);
            assert_eq!(len, id + 1, "used entry not copied faithfully");
            if let Some((ids, table)) = self.chains.remove(&(id as u16)) {
                self.free.extend(ids);
                self.free_tables.extend(table);
            }
            self.last_used = self.last_used.wrapping_add(1);
        }
    }

    fn misbehave(&mut self, host: &mut FakeHost, rng: &mut Rng) {
        let num = self.ring.num;
        match rng.below(5) {
            0 | 1 => {
                // Rewrite any descriptor, also one the device holds.
                let i = rng.below(u64::from(num)) as u16;
                let d = if rng.chance(50) {
                    random_desc(rng, num, &self.tables)
                } else {
                    good_buffer(rng)
                };
                self.ring.put(host, i, d.addr, d.len, d.flags, d.next);
            }
            2 => {
                let t = self.tables[rng.below(self.tables.len() as u64) as usize];
                host.poke(t + 16 * rng.below(8), &random_desc(rng, 8, &[]).to_bytes());
            }
            3 => {
                let bound = if rng.chance(70) { u64::from(num) } else { 1 << 16 };
                let head = rng.below(bound) as u16;
                self.ring.offer(host, &[head]);
            }
            _ => {
                let idx = host.peek_u16(self.ring.avail + 2);
                let idx = if rng.chance(50) { rng.next() as u16 } else { idx.wrapping_sub(1) };
                host.poke(self.ring.avail + 2, &idx.to_le_bytes());
            }
        }
    }

    /// After a device reset: everything is free again and the rings are clean.
    fn restart(&mut self, host: &mut FakeHost) {
        *self = Self::new(self.ring, &self.tables);
        host.poke(self.ring.avail, &[0; 4]);
        host.poke(self.ring.used, &[0; 4]);
    }
}

fn take_index(v: &mut Vec<usize>, rng: &mut Rng) -> usize {
    v.swap_remove(rng.below(v.len() as u64) as usize)
}

#[derive(Default, Debug)]
struct Stats {
    published: usize,
    completed: usize,
    faults: usize,
    chaos_runs: usize,
}

fn property_run(seed: u64, version: u32, stats: &mut Stats) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let num = [2u16, 4, 8, 16, 32][rng.below(5) as usize];
    let hostile = [0, 2, 10, 40][(seed % 4) as usize];
    let (mut proxy, mut host, ring) = up(version, num);
    let tables: Vec<u64> = (0..4).map(|i| BUFFERS + 0x8000 + 0x100 * i).collect();
    let mut driver = Driver::new(ring, &tables);
    let chaos_percent = if seed.is_multiple_of(3) { 0 } else { 5 };
    host.chaos = Some(RefCell::new(Chaos {
        rng: Rng(seed ^ 0xdead_beef),
        percent: chaos_percent,
        regions: vec![
            (ring.desc, 16 * u64::from(num)),
            (ring.avail, 4 + 2 * u64::from(num)),
            (tables[0], 0x400),
        ],
    }));
    let mut broken_at: Option<(usize, Option<u16>)> = None;
    for _ in 0..400 {
        if rng.chance(hostile) {
            driver.misbehave(&mut host, &mut rng);
        }
        match rng.below(10) {
            0..=3 => driver.submit(&mut host, &mut rng),
            4..=5 => {
                let before = host.shadow_avail_idx(0);
                host.desc_reads.borrow_mut().clear();
                notify(&mut proxy, &mut host, 0);
                let after = host.shadow_avail_idx(0);
                if let (Some(from), Some(to)) = (before, after) {
                    check_published(&mut host, ring, from, to);
                    stats.published += usize::from(to.wrapping_sub(from));
                }
            }
            6 => {
                host.device_pop(0, rng.below(u64::from(num) + 1) as usize);
            }
            7..=8 => {
                let n = rng.below(u64::from(num) + 1) as usize;
                stats.completed += host.device_complete(0, n, Some(&mut rng));
                if rng.chance(70) {
                    proxy.device_interrupt(&mut host);
                } else {
                    let isr = rd(&mut proxy, &mut host, reg::INTERRUPT_STATUS);
                    wr(&mut proxy, &mut host, reg::INTERRUPT_ACK, isr);
                }
                driver.reclaim(&host);
            }
            _ => {
                if proxy.fault().is_some() {
                    stats.faults += 1;
                    let chaos = host.chaos.take();
                    driver.restart(&mut host);
                    let f = if version == 2 { VERSION_1 | 1 << 28 } else { 1 << 28 };
                    bring_up(&mut proxy, &mut host, ring, f);
                    assert!(host.dev.q[0].held.is_empty());
                    host.chaos = chaos;
                }
            }
        }
        // A broken device is left alone until the guest resets it.
        match (proxy.fault(), broken_at) {
            (Some(_), None) => broken_at = Some((host.dev.notifies(), host.shadow_avail_idx(0))),
            (Some(_), Some(at)) => {
                assert_eq!((host.dev.notifies(), host.shadow_avail_idx(0)), at, "seed {seed}")
            }
            (None, _) => broken_at = None,
        }
    }
    if chaos_percent != 0 {
        stats.chaos_runs += 1;
    }
    // Every buffer the device was ever given lies in guest RAM (checked as it read them).
    assert!(host.dev.seen.iter().all(|d| d.addr >= RAM_HPA && d.addr < RAM_HPA + RAM_SIZE));
    host.chaos = None;
    proxy.reset(&mut host);
    assert!(host.allocs.is_empty(), "seed {seed}: shadow memory left after reset");
    assert_eq!(host.alloc_calls, host.free_calls);
}

#[test]
fn property_device_sees_only_validated_translated_guest_buffers() {
    let mut stats = Stats::default();
    for seed in 0..200 {
        property_run(seed, 2, &mut stats);
        property_run(seed, 1, &mut stats);
    }
    std::eprintln!("{stats:?}");
    // The run exercised the data path, not only the error path.
    assert!(stats.published > 10_000 && stats.completed > 10_000 && stats.faults > 100);
}
