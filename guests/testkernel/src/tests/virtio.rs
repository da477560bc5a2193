//! virtio-mmio: the eight transports of `virt`, and a block and a network device driven
//! through them by the kernel's own polled driver (crate::virtio), over whichever
//! transport the machine has (modern or legacy): reads and writes checked against the
//! disk's pattern, requests spread over several descriptors, the used length and status
//! byte, a completion delivered as an interrupt through the PLIC, an ARP exchange with
//! QEMU's user network, and what the device does with a buffer outside the guest's RAM.
//!
//! The suite's disk (made by xtask) has 2048 sectors; the 64 little-endian 64-bit words of
//! sector `i` are `0xD15C_0000_0000_0000 | i << 16 | k` (k = 0..63). Tests that may write
//! use sectors of their own (1000, 1200.., 1500, 1700..) and check only sectors no other
//! test writes, so any subset of the tests gives the same results on a fresh disk.

use core::sync::atomic::Ordering;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rv::csr::Interrupts;
use rv::trap::Interrupt;

use crate::harness::{Outcome, Test, TestResult, observe};
use crate::plic;
use crate::timer;
use crate::trap::{LAST_IRQ_SCAUSE, interrupt_count};
use crate::virtio::{
    Buf, Device, F_VERSION_1, INT_CONFIG, INT_USED_BUFFER, MAGIC, Queue, SLOTS, Used, id, read32,
    reg, slot_base, slot_irq, status,
};
use crate::vm::{alloc_page, alloc_pages};
use crate::{check, check_eq, observe, test};

pub const TESTS: &[Test] = &[
    test!("virtio/probe", probe),
    test!("virtio/blk-config", blk_config),
    test!("virtio/blk-read", blk_read),
    test!("virtio/blk-read-past-end", blk_read_past_end),
    test!("virtio/blk-write-read", blk_write_read),
    test!("virtio/blk-multi-descriptor", blk_multi_descriptor),
    test!("virtio/blk-interrupt", blk_interrupt),
    test!("virtio/net-arp", net_arp),
    test!("virtio/blk-buffer-outside-ram", blk_buffer_outside_ram),
    test!("virtio/blk-read-into-outside-ram", blk_read_into_outside_ram),
    test!("virtio/blk-large-buffer-outside-ram", blk_large_buffer_outside_ram),
    test!("virtio/blk-large-read-into-outside-ram", blk_large_read_into_outside_ram),
];

/// Sectors of the suite's disk.
const DISK_SECTORS: u64 = 2048;

/// Word `k` of sector `sector` as xtask wrote the disk.
fn disk_word(sector: u64, k: u64) -> u64 {
    0xD15C_0000_0000_0000 | sector << 16 | k
}

/// Word `k` of sector `sector` as the writing tests write it.
fn written_word(sector: u64, k: u64) -> u64 {
    0x57B1_7E00_0000_0000 | sector << 16 | k
}

fn fail(message: String) -> Outcome {
    Outcome::Fail(message)
}

fn word_at(addr: u64) -> u64 {
    // SAFETY: callers pass addresses inside arena pages they allocated.
    unsafe { (addr as *const u64).read_volatile() }
}

fn set_word(addr: u64, value: u64) {
    // SAFETY: as in `word_at`.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

fn byte_at(addr: u64) -> u8 {
    // SAFETY: as in `word_at`.
    unsafe { (addr as *const u8).read_volatile() }
}

fn set_byte(addr: u64, value: u8) {
    // SAFETY: as in `word_at`.
    unsafe { (addr as *mut u8).write_volatile(value) }
}

/// Fills `count` sectors at `addr` with `word(sector, k)` for sectors `first..`.
fn fill(addr: u64, first: u64, count: u64, word: fn(u64, u64) -> u64) {
    for s in 0..count {
        for k in 0..64 {
            set_word(addr + s * 512 + k * 8, word(first + s, k));
        }
    }
}

/// Checks `count` sectors at `addr` against `word(sector, k)` for sectors `first..`.
fn check_sectors(addr: u64, first: u64, count: u64, word: fn(u64, u64) -> u64) -> TestResult {
    for s in 0..count {
        for k in 0..64 {
            let got = word_at(addr + s * 512 + k * 8);
            let want = word(first + s, k);
            check!(got == want, "sector {} word {k}: {got:#x}, expected {want:#x}", first + s);
        }
    }
    Ok(())
}

// ---- the transports ----

fn probe() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for slot in 0..SLOTS {
        let base = slot_base(slot);
        let values = [
            ("magic", read32(base, reg::MAGIC)),
            ("version", read32(base, reg::VERSION)),
            ("device", read32(base, reg::DEVICE_ID)),
            ("vendor", read32(base, reg::VENDOR_ID)),
        ];
        for (key, v) in values {
            observe(&format!("slot{slot}-{key}"), v as u64);
        }
        check_eq!(values[0].1, MAGIC);
        versions.push(values[1].1);
        ids.push(values[2].1);
    }
    check!(versions[0] == 1 || versions[0] == 2, "virtio-mmio version {}", versions[0]);
    check!(versions.iter().all(|&v| v == versions[0]), "transports of mixed versions");
    let count = |id: u32| ids.iter().filter(|&&d| d == id).count();
    check_eq!(count(id::BLOCK), 1);
    check_eq!(count(id::NET), 1);
    check_eq!(count(0), SLOTS as usize - 2);
    Ok(())
}

// ---- the block device ----

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;

/// The block device with its request queue, and a page for request headers and status.
struct Blk {
    dev: Device,
    q: Queue,
    scratch: u64,
}

impl Blk {
    fn open() -> Result<Self, Outcome> {
        let dev = Device::open(id::BLOCK, 0).map_err(fail)?;
        let q = dev.queue(0).map_err(fail)?;
        dev.driver_ok();
        Ok(Self { dev, q, scratch: alloc_page() })
    }

    fn header(&self) -> u64 {
        self.scratch
    }

    fn status_addr(&self) -> u64 {
        self.scratch + 64
    }

    /// The status byte of the last request (0xff until the device writes it).
    fn status_byte(&self) -> u8 {
        byte_at(self.status_addr())
    }

    /// Queues a request (header, `data`, status byte) and notifies the device; returns
    /// the head descriptor.
    fn submit(&mut self, kind: u32, sector: u64, data: &[Buf]) -> Result<u16, Outcome> {
        let h = self.header();
        set_word(h, kind as u64);
        set_word(h + 8, sector);
        set_byte(self.status_addr(), 0xff);
        let mut chain = Vec::with_capacity(data.len() + 2);
        chain.push(Buf::readable(h, 16));
        chain.extend_from_slice(data);
        chain.push(Buf::writable(self.status_addr(), 1));
        let head = self.q.push(&chain).map_err(fail)?;
        self.dev.notify(&self.q);
        Ok(head)
    }

    /// Submits a request and waits (1 s at most) for it: the used element and status byte.
    fn request(&mut self, kind: u32, sector: u64, data: &[Buf]) -> Result<(Used, u8), Outcome> {
        let head = self.submit(kind, sector, data)?;
        let used = self.q.wait_used(1_000_000).ok_or(fail(format!(
            "request {kind} for sector {sector} not completed in 1 s (status {:#x})",
            self.dev.status()
        )))?;
        check_eq!(used.id, head as u32);
        Ok((used, self.status_byte()))
    }

    /// Reads `count` sectors from `sector` into fresh pages: their address, the used
    /// element and the status byte.
    fn read(&mut self, sector: u64, count: u64) -> Result<(u64, Used, u8), Outcome> {
        let buf = alloc_pages((count as usize * 512).div_ceil(4096));
        let (used, st) = self.request(T_IN, sector, &[Buf::writable(buf, count as u32 * 512)])?;
        Ok((buf, used, st))
    }
}

fn blk_config() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    let blk = Blk::open()?;
    let capacity = blk.dev.config64(0).ok_or(fail("the configuration never held still".into()))?;
    let st = blk.dev.status();
    let features = blk.dev.features;
    drop(blk);
    observe!("capacity", capacity);
    observe!("status", st);
    observe!("features", features);
    check_eq!(capacity, DISK_SECTORS);
    let expected = status::ACKNOWLEDGE
        | status::DRIVER
        | status::DRIVER_OK
        | if features & F_VERSION_1 != 0 { status::FEATURES_OK } else { 0 };
    check_eq!(st, expected);
    Ok(())
}

fn blk_read() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    let mut blk = Blk::open()?;
    for sector in [0, 1, 7, DISK_SECTORS - 1] {
        let (buf, used, st) = blk.read(sector, 1)?;
        check_eq!(st, S_OK);
        if sector == 0 {
            observe!("used-len-1-sector", used.len);
        }
        check_sectors(buf, sector, 1, disk_word)?;
    }
    let (buf, used, st) = blk.read(100, 4)?;
    observe!("used-len-4-sectors", used.len);
    check_eq!(st, S_OK);
    check_sectors(buf, 100, 4, disk_word)?;
    observe!("used-idx", blk.q.used_idx());
    check_eq!(blk.q.used_idx(), 5);
    Ok(())
}

fn blk_read_past_end() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    let mut blk = Blk::open()?;
    let (_, past, st_past) = blk.read(DISK_SECTORS, 1)?;
    let (_, across, st_across) = blk.read(DISK_SECTORS - 1, 2)?;
    // The last sector is still readable afterwards.
    let (buf, _, st_last) = blk.read(DISK_SECTORS - 1, 1)?;
    drop(blk);
    observe!("used-len-past", past.len);
    observe!("used-len-across", across.len);
    check_eq!(st_past, S_IOERR);
    check_eq!(st_across, S_IOERR);
    check_eq!(st_last, S_OK);
    check_sectors(buf, DISK_SECTORS - 1, 1, disk_word)
}

fn blk_write_read() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    const SECTOR: u64 = 1000;
    let mut blk = Blk::open()?;
    let data = alloc_page();
    fill(data, SECTOR, 1, written_word);
    let (wrote, st) = blk.request(T_OUT, SECTOR, &[Buf::readable(data, 512)])?;
    observe!("write-used-len", wrote.len);
    observe!("write-status", st);
    check_eq!(st, S_OK);
    // The device only writes the status byte.
    check_eq!(wrote.len, 1);
    let (buf, read, st) = blk.read(SECTOR - 1, 3)?;
    observe!("read-used-len", read.len);
    check_eq!(st, S_OK);
    check_sectors(buf, SECTOR - 1, 1, disk_word)?;
    check_sectors(buf + 512, SECTOR, 1, written_word)?;
    check_sectors(buf + 1024, SECTOR + 1, 1, disk_word)
}

fn blk_multi_descriptor() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    const FIRST: u64 = 1200;
    const COUNT: u64 = 4;
    let mut blk = Blk::open()?;
    // Four sectors written from three pieces in three different pages.
    let data = alloc_pages(1);
    fill(data, FIRST, COUNT, written_word);
    let splits = [(0u64, 300u32), (300, 1500), (1800, 248)];
    let mut pieces = Vec::new();
    for (at, len) in splits {
        let page = alloc_page();
        for i in 0..len as u64 {
            set_byte(page + 8 + i, byte_at(data + at + i));
        }
        pieces.push(Buf::readable(page + 8, len));
    }
    let (wrote, st) = blk.request(T_OUT, FIRST, &pieces)?;
    observe!("write-used-len", wrote.len);
    check_eq!(st, S_OK);
    // Read six sectors (one either side) into four pieces, one of them a single byte.
    let lens = [512u32, 1, 1023, 1536];
    let pages: Vec<u64> = lens.iter().map(|_| alloc_page()).collect();
    let bufs: Vec<Buf> = pages.iter().zip(lens).map(|(&p, l)| Buf::writable(p + 16, l)).collect();
    let (read, st) = blk.request(T_IN, FIRST - 1, &bufs)?;
    observe!("read-used-len", read.len);
    check_eq!(st, S_OK);
    check_eq!(read.len, 6 * 512 + 1);
    let joined = alloc_pages(1);
    let mut at = 0;
    for b in &bufs {
        for i in 0..b.len as u64 {
            set_byte(joined + at + i, byte_at(b.addr + i));
        }
        at += b.len as u64;
    }
    check_sectors(joined, FIRST - 1, 1, disk_word)?;
    check_sectors(joined + 512, FIRST, COUNT, written_word)?;
    check_sectors(joined + 512 * (COUNT + 1), FIRST + COUNT, 1, disk_word)
}

/// Waits (at most 1 s) until the external interrupt count passes `before`, with interrupts
/// enabled. It spins rather than `wfi`: an interrupt taken between the check and a `wfi`
/// would leave the `wfi` waiting for nothing (the handler masks SEIE, and no timer is set).
fn wait_for_external(before: usize) -> bool {
    let give_up = timer::now() + timer::ticks_from_us(1_000_000);
    while interrupt_count(Interrupt::SupervisorExternal) == before && timer::now() < give_up {
        core::hint::spin_loop();
    }
    interrupt_count(Interrupt::SupervisorExternal) > before
}

fn blk_interrupt() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    const SECTOR: u64 = 5;
    let mut blk = Blk::open()?;
    let irq = slot_irq(blk.dev.slot);
    let _plic = plic::Saved::take(&[irq]);
    plic::write(plic::priority_addr(irq), 1);
    plic::write(plic::threshold(), 0);
    plic::set_enabled(irq, true);
    // Earlier tests' completions (polled, never claimed) may have left the source pending:
    // a driver claims and completes such leftovers first.
    for _ in 0..4 {
        match plic::claim() {
            0 => break,
            stale => plic::complete(stale),
        }
    }
    check_eq!(blk.dev.interrupt_status(), 0);
    check!(!plic::pending(irq), "source {irq} pending before any request");

    let before = interrupt_count(Interrupt::SupervisorExternal);
    let buf = alloc_page();
    // SAFETY: the external interrupt this enables is counted and masked by the handler.
    unsafe {
        core::arch::asm!("csrs sie, {0}", "csrsi sstatus, 2", in(reg) Interrupts::SEI.bits())
    };
    let head = blk.submit(T_IN, SECTOR, &[Buf::writable(buf, 512)])?;
    let taken = wait_for_external(before);
    // SAFETY: masks interrupts again.
    unsafe { core::arch::asm!("csrci sstatus, 2") };
    check!(taken, "no external interrupt within 1 s");
    check_eq!(interrupt_count(Interrupt::SupervisorExternal), before + 1);
    check_eq!(LAST_IRQ_SCAUSE.load(Ordering::SeqCst), 0x8000_0000_0000_0009);

    let isr = blk.dev.interrupt_status();
    let pending = plic::pending(irq);
    let claimed = plic::claim();
    let pending_claimed = plic::pending(irq);
    blk.dev.interrupt_ack(isr);
    let isr_acked = blk.dev.interrupt_status();
    plic::complete(claimed);
    let pending_completed = plic::pending(irq);
    let claim_again = plic::claim();
    observe!("interrupt-status", isr);
    observe!("source", irq);
    check_eq!(isr, INT_USED_BUFFER);
    check!(pending, "source {irq} not pending before the claim");
    check_eq!(claimed, irq);
    check!(!pending_claimed, "source {irq} still pending after the claim");
    check_eq!(isr_acked, 0);
    check!(!pending_completed, "source {irq} pending again after the ACK and completion");
    check_eq!(claim_again, 0);

    let used = blk.q.pop_used().ok_or(fail("an interrupt but no used buffer".into()))?;
    check_eq!(used.id, head as u32);
    check_eq!(blk.status_byte(), S_OK);
    check_sectors(buf, SECTOR, 1, disk_word)
}

// ---- the network device ----

/// VIRTIO_NET_F_MAC: the configuration space has the device's MAC address.
const F_NET_MAC: u64 = 1 << 5;
/// Receive buffers kept posted.
const RX_BUFFERS: usize = 4;
/// Where the frame starts in a buffer page (the header is at the start).
const FRAME_AT: u64 = 64;
const FRAME_MAX: u32 = 1600;

const OUR_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];

fn arp_request(mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, a request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&OUR_IP);
    f[38..42].copy_from_slice(&GATEWAY_IP);
    f
}

fn bytes<const N: usize>(addr: u64) -> [u8; N] {
    core::array::from_fn(|i| byte_at(addr + i as u64))
}

fn as_u64(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| acc << 8 | x as u64)
}

fn net_arp() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    let dev = Device::open(id::NET, F_NET_MAC).map_err(fail)?;
    check!(dev.features & F_NET_MAC != 0, "the device offers no MAC address");
    let mac: [u8; 6] = core::array::from_fn(|i| dev.config8(i as u64));
    let mut rx = dev.queue(0).map_err(fail)?;
    let mut tx = dev.queue(1).map_err(fail)?;
    dev.driver_ok();
    // virtio_net_hdr: 12 bytes with VIRTIO_F_VERSION_1, 10 on a legacy device.
    let hdr_len = if dev.features & F_VERSION_1 != 0 { 12 } else { 10 };

    // Header and frame in separate descriptors (legacy devices without ANY_LAYOUT need it).
    let mut posted = Vec::new();
    for _ in 0..RX_BUFFERS {
        let page = alloc_page();
        let chain = [Buf::writable(page, hdr_len), Buf::writable(page + FRAME_AT, FRAME_MAX)];
        posted.push((rx.push(&chain).map_err(fail)?, page));
    }
    dev.notify(&rx);

    let page = alloc_page();
    let frame = arp_request(mac);
    for (i, b) in frame.iter().enumerate() {
        set_byte(page + FRAME_AT + i as u64, *b);
    }
    let chain = [Buf::readable(page, hdr_len), Buf::readable(page + FRAME_AT, frame.len() as u32)];
    let head = tx.push(&chain).map_err(fail)?;
    dev.notify(&tx);
    let sent = tx.wait_used(1_000_000).ok_or(fail("the ARP request was not sent in 1 s".into()))?;
    check_eq!(sent.id, head as u32);

    // Wait for the reply, giving back whatever else arrives.
    let give_up = timer::now() + timer::ticks_from_us(2_000_000);
    let mut others = 0u64;
    let reply = loop {
        check!(timer::now() < give_up, "no ARP reply within 2 s ({others} other frames)");
        let Some(used) = rx.pop_used() else {
            core::hint::spin_loop();
            continue;
        };
        let &(head, page) = posted
            .iter()
            .find(|(h, _)| *h as u32 == used.id)
            .ok_or(fail(format!("used id {} was never posted", used.id)))?;
        let f: [u8; 42] = bytes(page + FRAME_AT);
        let is_reply = f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == GATEWAY_IP;
        if is_reply {
            break (used, f);
        }
        others += 1;
        posted.retain(|(h, _)| *h != head);
        let chain = [Buf::writable(page, hdr_len), Buf::writable(page + FRAME_AT, FRAME_MAX)];
        posted.push((rx.push(&chain).map_err(fail)?, page));
        dev.notify(&rx);
    };
    let (used, f) = reply;
    drop(dev);
    observe!("mac", as_u64(&mac));
    observe!("tx-used-len", sent.len);
    observe!("rx-used-len", used.len);
    observe!("reply-sender-mac", as_u64(&f[22..28]));
    check!(used.len >= hdr_len + 42, "a {}-byte ARP reply", used.len);
    check_eq!(f[0..6], mac);
    check_eq!(f[14..20], [0, 1, 0x08, 0x00, 6, 4]);
    check_eq!(f[20..22], [0, 2]);
    check_eq!(f[6..12], f[22..28]);
    check_eq!(f[28..32], GATEWAY_IP);
    check_eq!(f[32..38], mac);
    check_eq!(f[38..42], OUR_IP);
    Ok(())
}

// ---- DMA isolation ----

/// Sends a request for `len` bytes from `sector` whose one data buffer starts at the first
/// address past the guest's RAM, and records what the device does; then resets it and
/// reads the sectors back with a good request.
///
/// Natively (QEMU 7.2), a buffer outside RAM that fits in one page is served through
/// QEMU's single bounce buffer: the request completes with status OK, a write puts zeros
/// on the disk (the hole reads as zeros) and a read goes nowhere. A larger one needs a
/// second bounce buffer, which does not exist: QEMU declares the device broken
/// (`virtio_error`), never completes the request, and with VIRTIO_F_VERSION_1 sets
/// DEVICE_NEEDS_RESET and raises a configuration interrupt (InterruptStatus 3, a new
/// configuration generation); a legacy device goes silent. Hypocaust must do the same, so
/// everything is observed; the checks are what any isolating device must satisfy: the
/// request ends one way or the other, a device that asks for a reset completed nothing,
/// the disk receives no data but zeros, and a reset device works again.
fn outside_ram(kind: u32, sector: u64, len: u32) -> TestResult {
    let outside = crate::machine::get().ram_end;
    let sectors = len as u64 / 512;
    let mut blk = Blk::open()?;
    let generation = blk.dev.config_generation();
    let data =
        if kind == T_OUT { Buf::readable(outside, len) } else { Buf::writable(outside, len) };
    let head = blk.submit(kind, sector, &[data])?;
    let used = blk.q.wait_used(500_000);
    let st = blk.dev.status();
    let isr = blk.dev.interrupt_status();
    let used_idx = blk.q.used_idx();
    let status_byte = blk.status_byte();
    let generation_delta = blk.dev.config_generation().wrapping_sub(generation);
    drop(blk);
    observe!("buffer", outside);
    observe!("status", st);
    observe!("interrupt-status", isr);
    observe!("used-idx", used_idx);
    observe!("used-len", used.map_or(u32::MAX, |u| u.len));
    observe!("status-byte", status_byte);
    observe!("config-generation-delta", generation_delta);

    if let Some(used) = used {
        check_eq!(used.id, head as u32);
        check!(st & status::DEVICE_NEEDS_RESET == 0, "completed, yet asks for a reset");
        check!(status_byte == S_OK || status_byte == S_IOERR, "status byte {status_byte:#x}");
    } else {
        check_eq!(used_idx, 0);
        check_eq!(status_byte, 0xff);
        if st & status::DEVICE_NEEDS_RESET != 0 {
            check!(isr & INT_CONFIG != 0, "DEVICE_NEEDS_RESET without a config interrupt");
        }
    }

    // A reset device serves a good request; the sectors hold their pattern, or zeros.
    let mut blk = Blk::open()?;
    let (buf, _, st) = blk.read(sector, sectors)?;
    check_eq!(st, S_OK);
    let zeroed = (0..sectors).filter(|s| (0..64).all(|k| word_at(buf + s * 512 + k * 8) == 0));
    let zeroed = zeroed.count() as u64;
    observe!("sectors-zeroed", zeroed);
    for s in 0..sectors {
        let at = buf + s * 512;
        if kind == T_OUT && (0..64).all(|k| word_at(at + k * 8) == 0) {
            continue;
        }
        check_sectors(at, sector + s, 1, disk_word)?;
    }
    Ok(())
}

fn blk_buffer_outside_ram() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    outside_ram(T_OUT, 1500, 512)
}

fn blk_read_into_outside_ram() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    outside_ram(T_IN, 1600, 512)
}

fn blk_large_buffer_outside_ram() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    outside_ram(T_OUT, 1700, 8192)
}

fn blk_large_read_into_outside_ram() -> TestResult {
    crate::machine::require_device("virtio,mmio", crate::virtio::BASE)?;
    outside_ram(T_IN, 1800, 8192)
}
