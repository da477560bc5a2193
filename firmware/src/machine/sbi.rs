//! The SBI the firmware offers S-mode, built with RustSBI: BASE, TIME, IPI, RFENCE, HSM,
//! SRST and DBCN, and the legacy v0.1 calls (their hart masks read through S-mode's
//! translation; a fault there is S-mode's, at its `ecall`).

use rustsbi::{HartMask, Physical, RustSBI, SbiRet};
use sbi_spec::{base, legacy};

use super::arch::{self, Frame, irq};
use super::{HARTS, do_work, hart, machine, mailbox, post, wait_done};

/// The RustSBI version the firmware is built with.
pub const RUSTSBI_VERSION: &str = "0.4";

#[derive(RustSBI)]
struct Sbi {
    console: Console,
    timer: Timer,
    ipi: Ipi,
    hsm: Hsm,
    reset: Reset,
    fence: Fence,
}

static SBI: Sbi =
    Sbi { console: Console, timer: Timer, ipi: Ipi, hsm: Hsm, reset: Reset, fence: Fence };

/// A fault to deliver to S-mode instead of completing the call: `(scause, stval)`.
pub type Fault = (usize, usize);

/// An SBI call from S-mode: a7 = extension, a6 = function, a0..a5 = arguments; the
/// result goes to a0 and a1 (the legacy calls return in a0 only).
pub fn call(hartid: usize, f: &mut Frame) -> Result<(), Fault> {
    let (eid, fid) = (f.x[17], f.x[16]);
    let args = [f.x[10], f.x[11], f.x[12], f.x[13], f.x[14], f.x[15]];
    if eid <= legacy::LEGACY_SHUTDOWN {
        f.x[10] = legacy_call(hartid, eid, args)?;
        return Ok(());
    }
    let ret = if eid == base::EID_BASE
        && fid == base::PROBE_EXTENSION
        && args[0] <= legacy::LEGACY_SHUTDOWN
    {
        SbiRet::success(legacy_offered(args[0]) as usize)
    } else {
        SBI.handle_ecall(eid, fid, args)
    };
    f.x[10] = ret.error;
    f.x[11] = ret.value;
    Ok(())
}

/// The legacy extensions offered: all but the reserved ones.
fn legacy_offered(eid: usize) -> bool {
    eid <= legacy::LEGACY_SHUTDOWN
}

/// The harts of a legacy call's hart mask: `pointer` is S-mode's virtual address of the
/// mask, 0 for all harts.
fn legacy_mask(pointer: usize) -> Result<HartMask, Fault> {
    if pointer == 0 {
        return Ok(HartMask::from_mask_base(0, usize::MAX));
    }
    arch::load_as_supervisor(pointer).map(|bits| HartMask::from_mask_base(bits, 0))
}

/// SBI v0.1: the result in a0 (0 or an error; a character for getchar).
fn legacy_call(hartid: usize, eid: usize, args: [usize; 6]) -> Result<usize, Fault> {
    let ok = 0;
    Ok(match eid {
        legacy::LEGACY_SET_TIMER => {
            set_timer(hartid, args[0] as u64);
            ok
        }
        legacy::LEGACY_CONSOLE_PUTCHAR => {
            if let Some(c) = &machine().console {
                c.put(args[0] as u8);
            }
            ok
        }
        legacy::LEGACY_CONSOLE_GETCHAR => {
            machine().console.as_ref().and_then(|c| c.get()).map_or(usize::MAX, |b| b as usize)
        }
        legacy::LEGACY_CLEAR_IPI => {
            arch::clear_mip(irq::SSI);
            ok
        }
        legacy::LEGACY_SEND_IPI => on_harts(legacy_mask(args[0])?, mailbox::SSIP, false).error,
        legacy::LEGACY_REMOTE_FENCE_I => {
            on_harts(legacy_mask(args[0])?, mailbox::FENCE_I, true).error
        }
        legacy::LEGACY_REMOTE_SFENCE_VMA | legacy::LEGACY_REMOTE_SFENCE_VMA_ASID => {
            on_harts(legacy_mask(args[0])?, mailbox::SFENCE_VMA, true).error
        }
        legacy::LEGACY_SHUTDOWN => {
            power(machine().platform.poweroff);
            SbiRet::failed().error
        }
        _ => SbiRet::not_supported().error,
    })
}

fn set_timer(hartid: usize, deadline: u64) {
    let m = machine();
    if m.sstc {
        arch::try_write_stimecmp(deadline as usize);
    } else if let Some(cores) = &m.cores {
        arch::clear_mip(irq::STI);
        cores.set_mtimecmp(hartid, deadline);
        arch::set_mie(irq::MTI);
    }
}

/// The harts of `mask`, or the error for a hart that does not exist.
fn harts(mask: HartMask) -> Result<impl Iterator<Item = usize>, SbiRet> {
    let (bits, base) = mask.into_inner();
    if base == usize::MAX {
        // All harts.
        return Ok(HarIter::All(0..super::arch::MAX_HARTS));
    }
    for i in 0..usize::BITS as usize {
        if bits & 1 << i != 0 && base.checked_add(i).and_then(hart).is_none() {
            return Err(SbiRet::invalid_param());
        }
    }
    Ok(HarIter::Mask(bits, base, 0))
}

/// Iterates the harts of a mask.
enum HarIter {
    All(core::ops::Range<usize>),
    Mask(usize, usize, usize),
}

impl Iterator for HarIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        match self {
            Self::All(range) => range.find(|&id| hart(id).is_some()),
            Self::Mask(bits, base, i) => {
                while *i < usize::BITS as usize {
                    let bit = *i;
                    *i += 1;
                    if *bits & 1 << bit != 0 {
                        return Some(*base + bit);
                    }
                }
                None
            }
        }
    }
}

/// Does `work` on every hart of `mask`: this one directly, the others through their
/// mailboxes; waits for them if `wait`.
fn on_harts(mask: HartMask, work: u32, wait: bool) -> SbiRet {
    let me = arch::mhartid();
    let targets = match harts(mask) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut tickets = [0u64; super::arch::MAX_HARTS];
    for id in targets {
        if id == me {
            do_work(work);
        } else {
            tickets[id] = post(id, work);
        }
    }
    if wait {
        for (id, &ticket) in tickets.iter().enumerate().filter(|(_, t)| **t != 0) {
            wait_done(me, id, ticket);
        }
    }
    SbiRet::success(0)
}

struct Timer;

impl rustsbi::Timer for Timer {
    fn set_timer(&self, stime_value: u64) {
        set_timer(arch::mhartid(), stime_value);
    }
}

struct Ipi;

impl rustsbi::Ipi for Ipi {
    fn send_ipi(&self, hart_mask: HartMask) -> SbiRet {
        on_harts(hart_mask, mailbox::SSIP, false)
    }
}

struct Fence;

impl rustsbi::Fence for Fence {
    fn remote_fence_i(&self, hart_mask: HartMask) -> SbiRet {
        on_harts(hart_mask, mailbox::FENCE_I, true)
    }

    fn remote_sfence_vma(&self, hart_mask: HartMask, _start: usize, _size: usize) -> SbiRet {
        on_harts(hart_mask, mailbox::SFENCE_VMA, true)
    }

    fn remote_sfence_vma_asid(
        &self,
        hart_mask: HartMask,
        _start: usize,
        _size: usize,
        _asid: usize,
    ) -> SbiRet {
        on_harts(hart_mask, mailbox::SFENCE_VMA, true)
    }
}

/// Whether S-mode code may start at `addr`: in RAM, outside the firmware.
fn startable(addr: usize) -> bool {
    let m = machine();
    firmware::memory::buffer(&m.ram, m.firmware, 1, addr, 0).is_some()
}

struct Hsm;

/// Suspend types.
const RETENTIVE: u32 = 0;
const NON_RETENTIVE: u32 = 0x8000_0000;

impl rustsbi::Hsm for Hsm {
    fn hart_start(&self, hartid: usize, start_addr: usize, opaque: usize) -> SbiRet {
        let Some(target) = hart(hartid) else { return SbiRet::invalid_param() };
        if !startable(start_addr) {
            return SbiRet::invalid_address();
        }
        match target.hsm.request_start(start_addr, opaque) {
            Ok(()) => {
                if let Some(cores) = &machine().cores {
                    cores.set_msip(hartid, true);
                }
                SbiRet::success(0)
            }
            Err(firmware::hsm::StartError::NoSuchHart) => SbiRet::invalid_param(),
            Err(firmware::hsm::StartError::NotStopped) => SbiRet::already_available(),
        }
    }

    fn hart_stop(&self) -> SbiRet {
        let me = arch::mhartid();
        if HARTS[me].hsm.stop() { super::stopped(me) } else { SbiRet::failed() }
    }

    fn hart_get_status(&self, hartid: usize) -> SbiRet {
        match hart(hartid) {
            Some(h) => SbiRet::success(h.hsm.status()),
            None => SbiRet::invalid_param(),
        }
    }

    fn hart_suspend(&self, suspend_type: u32, resume_addr: usize, opaque: usize) -> SbiRet {
        let me = arch::mhartid();
        match suspend_type {
            RETENTIVE => {}
            NON_RETENTIVE if !startable(resume_addr) => return SbiRet::invalid_address(),
            NON_RETENTIVE => {}
            _ => return SbiRet::invalid_param(),
        }
        HARTS[me].hsm.set_suspended(true);
        // Until an interrupt S-mode enabled (in sie) is pending, serving other harts'
        // requests meanwhile.
        while arch::mip() & arch::mie() & irq::SUPERVISOR == 0 {
            arch::wait_for_interrupt();
            if arch::mip() & irq::MSI != 0 {
                super::serve(me);
            }
        }
        HARTS[me].hsm.set_suspended(false);
        if suspend_type == NON_RETENTIVE {
            arch::start_supervisor(resume_addr, me, opaque);
        }
        SbiRet::success(0)
    }
}

struct Reset;

/// `syscon` write, or nothing.
fn power(target: Option<platform::SysconWrite>) {
    if let Some(t) = target {
        super::devices::syscon_write(t);
        loop {
            arch::wait_for_interrupt();
        }
    }
}

impl rustsbi::Reset for Reset {
    fn system_reset(&self, reset_type: u32, reset_reason: u32) -> SbiRet {
        use sbi_spec::srst::{
            RESET_REASON_NO_REASON, RESET_REASON_SYSTEM_FAILURE, RESET_TYPE_COLD_REBOOT,
            RESET_TYPE_SHUTDOWN, RESET_TYPE_WARM_REBOOT,
        };
        // Types and reasons other than the standard ones are reserved or vendor-specific,
        // and none of the latter is implemented here.
        let platform = &machine().platform;
        let target = match reset_type {
            RESET_TYPE_SHUTDOWN => platform.poweroff,
            RESET_TYPE_COLD_REBOOT | RESET_TYPE_WARM_REBOOT => platform.reboot,
            _ => return SbiRet::invalid_param(),
        };
        if !matches!(reset_reason, RESET_REASON_NO_REASON | RESET_REASON_SYSTEM_FAILURE) {
            return SbiRet::invalid_param();
        }
        if target.is_none() {
            return SbiRet::not_supported();
        }
        power(target);
        SbiRet::failed()
    }
}

struct Console;

impl Console {
    /// The buffer of an SBI console call, if it lies in RAM outside the firmware.
    fn buffer(bytes: &Physical<impl Sized>) -> Option<*mut u8> {
        let m = machine();
        firmware::memory::buffer(
            &m.ram,
            m.firmware,
            bytes.num_bytes(),
            bytes.phys_addr_lo(),
            bytes.phys_addr_hi(),
        )
        .map(|a| a as *mut u8)
    }
}

impl rustsbi::Console for Console {
    fn write(&self, bytes: Physical<&[u8]>) -> SbiRet {
        let Some(start) = Self::buffer(&bytes) else { return SbiRet::invalid_param() };
        if let Some(c) = &machine().console {
            for i in 0..bytes.num_bytes() {
                // SAFETY: `buffer` checked that all of it is RAM outside the firmware, which
                // M-mode reads untranslated.
                c.put(unsafe { start.add(i).read_volatile() });
            }
        }
        SbiRet::success(bytes.num_bytes())
    }

    fn read(&self, bytes: Physical<&mut [u8]>) -> SbiRet {
        let Some(start) = Self::buffer(&bytes) else { return SbiRet::invalid_param() };
        let mut n = 0;
        if let Some(c) = &machine().console {
            while n < bytes.num_bytes() {
                let Some(b) = c.get() else { break };
                // SAFETY: as in `write`.
                unsafe { start.add(n).write_volatile(b) };
                n += 1;
            }
        }
        SbiRet::success(n)
    }

    fn write_byte(&self, byte: u8) -> SbiRet {
        if let Some(c) = &machine().console {
            c.put(byte);
        }
        SbiRet::success(0)
    }
}
