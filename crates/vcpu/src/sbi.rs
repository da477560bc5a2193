//! The SBI hypocaust offers its guests: v2.0 with BASE, TIME, IPI, RFENCE, HSM, SRST, DBCN
//! and the legacy v0.1 calls. Anything else answers `SBI_ERR_NOT_SUPPORTED`.
//!
//! Where the spec leaves room, OpenSBI's choices are followed (legacy calls leave a1
//! untouched; a legacy call whose pointer argument faults has that fault redirected to the
//! guest at the `ecall`; an unknown extension returns a1 = 0).

use rv::GuestPhysAddr;
use rv::trap::{Exception, Interrupt};
use sbi_spec::binary as ret;
use sbi_spec::{base, dbcn, hsm, legacy, rfnc, spi, srst, time};

use crate::csr::CsrEffect;
use crate::host::{Fence, Host};
use crate::vcpu::{Action, HartState, ResetKind, Resume, Vcpu};

/// SBI specification version offered: 2.0.
pub const SPEC_VERSION: u64 = 2 << 24;
/// Implementation ID reported by BASE: "HYPC" (not in the SBI registry).
pub const IMPL_ID: u64 = 0x4859_5043;
/// Implementation version reported by BASE: hypocaust 0.1 as major << 16 | minor.
pub const IMPL_VERSION: u64 = 1;

/// Most bytes one DBCN call moves (a call may move fewer than asked; the guest loops).
pub const DBCN_CHUNK: usize = 256;

/// Extensions a guest finds with `probe_extension`.
const OFFERED: &[usize] = &[
    base::EID_BASE,
    time::EID_TIME,
    spi::EID_SPI,
    rfnc::EID_RFNC,
    hsm::EID_HSM,
    srst::EID_SRST,
    dbcn::EID_DBCN,
    legacy::LEGACY_SET_TIMER,
    legacy::LEGACY_CONSOLE_PUTCHAR,
    legacy::LEGACY_CONSOLE_GETCHAR,
    legacy::LEGACY_CLEAR_IPI,
    legacy::LEGACY_SEND_IPI,
    legacy::LEGACY_REMOTE_FENCE_I,
    legacy::LEGACY_REMOTE_SFENCE_VMA,
    legacy::LEGACY_REMOTE_SFENCE_VMA_ASID,
    legacy::LEGACY_SHUTDOWN,
];

/// An SBI error code (as it goes into a0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SbiError(pub usize);

pub const NOT_SUPPORTED: SbiError = SbiError(ret::RET_ERR_NOT_SUPPORTED);
pub const INVALID_PARAM: SbiError = SbiError(ret::RET_ERR_INVALID_PARAM);
pub const INVALID_ADDRESS: SbiError = SbiError(ret::RET_ERR_INVALID_ADDRESS);
pub const ALREADY_AVAILABLE: SbiError = SbiError(ret::RET_ERR_ALREADY_AVAILABLE);

/// How an SBI call ends.
enum Outcome {
    /// a0 = 0 (success), a1 = value.
    Value(u64),
    /// a0 = error, a1 = 0.
    Error(SbiError),
    /// A legacy call: a0 = value, a1 untouched.
    Legacy(u64),
    /// The call made the guest fault (a legacy pointer argument): redirect the fault.
    Fault(Exception, u64),
    /// Success, then hypocaust must act (wait, stop, reset).
    Then(Action),
}

/// The guest's argument registers a0..a5.
fn args(vcpu: &Vcpu) -> [u64; 6] {
    core::array::from_fn(|i| vcpu.regs.get(10 + i as u8))
}

/// Handles the `ecall` the guest made in virtual S-mode.
pub fn handle_call(vcpu: &mut Vcpu, host: &mut impl Host) -> Action {
    let eid = vcpu.regs.get(17) as usize;
    let fid = vcpu.regs.get(16) as usize;
    let a = args(vcpu);
    let outcome = match eid {
        base::EID_BASE => base_call(fid, a[0], host),
        time::EID_TIME => match fid {
            time::SET_TIMER => set_timer(vcpu, a[0]),
            _ => Outcome::Error(NOT_SUPPORTED),
        },
        spi::EID_SPI => match fid {
            spi::SEND_IPI => send_ipi(vcpu, host, a[0], a[1]),
            _ => Outcome::Error(NOT_SUPPORTED),
        },
        rfnc::EID_RFNC => rfence(vcpu, host, fid, a),
        hsm::EID_HSM => hsm_call(vcpu, host, fid, a),
        srst::EID_SRST => match fid {
            srst::SYSTEM_RESET => system_reset(a[0], a[1]),
            _ => Outcome::Error(NOT_SUPPORTED),
        },
        dbcn::EID_DBCN => console(host, fid, a),
        legacy::LEGACY_SET_TIMER..=legacy::LEGACY_SHUTDOWN => legacy_call(vcpu, host, eid, a),
        _ => Outcome::Error(NOT_SUPPORTED),
    };
    let next = vcpu.regs.pc.wrapping_add(4);
    match outcome {
        Outcome::Value(v) => {
            vcpu.regs.set(10, ret::RET_SUCCESS as u64);
            vcpu.regs.set(11, v);
        }
        Outcome::Error(e) => {
            vcpu.regs.set(10, e.0 as u64);
            vcpu.regs.set(11, 0);
        }
        Outcome::Legacy(v) => vcpu.regs.set(10, v),
        Outcome::Fault(e, tval) => {
            vcpu.raise(e, tval);
            return Action::Resume;
        }
        Outcome::Then(action) => {
            vcpu.regs.set(10, ret::RET_SUCCESS as u64);
            vcpu.regs.set(11, 0);
            vcpu.regs.pc = next;
            return action;
        }
    }
    vcpu.regs.pc = next;
    Action::Resume
}

fn base_call(fid: usize, arg: u64, host: &impl Host) -> Outcome {
    let ids = host.machine_ids();
    Outcome::Value(match fid {
        base::GET_SBI_SPEC_VERSION => SPEC_VERSION,
        base::GET_SBI_IMPL_ID => IMPL_ID,
        base::GET_SBI_IMPL_VERSION => IMPL_VERSION,
        base::PROBE_EXTENSION => OFFERED.contains(&(arg as usize)) as u64,
        base::GET_MVENDORID => ids.mvendorid,
        base::GET_MARCHID => ids.marchid,
        base::GET_MIMPID => ids.mimpid,
        _ => return Outcome::Error(NOT_SUPPORTED),
    })
}

fn set_timer(vcpu: &mut Vcpu, deadline: u64) -> Outcome {
    // The pending timer interrupt follows the deadline, so this also clears STIP.
    vcpu.csrs.stimecmp = deadline;
    vcpu.effects |= CsrEffect::TIMER;
    Outcome::Value(0)
}

/// The harts named by an SBI hart mask: bit `i` of `mask` is hart `base + i`, and
/// `base == -1` means every hart. Names of harts the guest does not have are invalid.
pub fn hart_set(mask: u64, base: u64, count: usize) -> Result<u64, SbiError> {
    let all = if count >= 64 { u64::MAX } else { (1u64 << count) - 1 };
    if base == u64::MAX {
        return Ok(all);
    }
    if base >= count as u64 {
        return Err(INVALID_PARAM);
    }
    let set = mask.checked_shl(base as u32).unwrap_or(0);
    // A bit shifted out of range, or landing on a hart that does not exist.
    if (set >> base) != mask || set & !all != 0 {
        return Err(INVALID_PARAM);
    }
    Ok(set)
}

fn ipi_harts(vcpu: &mut Vcpu, host: &mut impl Host, set: u64) {
    let own = own_bit(vcpu);
    if set & own != 0 {
        vcpu.csrs.sip_soft |= Interrupt::SupervisorSoft.mask();
    }
    if set & !own != 0 {
        host.send_ipi(set & !own);
    }
}

/// The caller's own bit in a hart set.
fn own_bit(vcpu: &Vcpu) -> u64 {
    1u64.checked_shl(vcpu.hart_id as u32).unwrap_or(0)
}

fn send_ipi(vcpu: &mut Vcpu, host: &mut impl Host, mask: u64, base: u64) -> Outcome {
    match hart_set(mask, base, host.hart_count()) {
        Ok(set) => {
            ipi_harts(vcpu, host, set);
            Outcome::Value(0)
        }
        Err(e) => Outcome::Error(e),
    }
}

fn fence_harts(vcpu: &mut Vcpu, host: &mut impl Host, set: u64, fence: Fence) {
    let own = own_bit(vcpu);
    if set & own != 0 {
        host.fence(vcpu, fence);
    }
    if set & !own != 0 {
        host.remote_fence(set & !own, fence);
    }
}

/// The address range of a remote fence: both 0, or a size of all ones, mean everything.
fn vma_fence(start: u64, size: u64, asid: Option<u16>) -> Fence {
    if (start == 0 && size == 0) || size == u64::MAX {
        Fence::Vma { start: 0, size: u64::MAX, asid }
    } else {
        Fence::Vma { start, size, asid }
    }
}

fn rfence(vcpu: &mut Vcpu, host: &mut impl Host, fid: usize, a: [u64; 6]) -> Outcome {
    let fence = match fid {
        rfnc::REMOTE_FENCE_I => Fence::I,
        rfnc::REMOTE_SFENCE_VMA => vma_fence(a[2], a[3], None),
        rfnc::REMOTE_SFENCE_VMA_ASID => vma_fence(a[2], a[3], Some(a[4] as u16)),
        // The HFENCE calls need the H extension, which guests do not have.
        _ => return Outcome::Error(NOT_SUPPORTED),
    };
    match hart_set(a[0], a[1], host.hart_count()) {
        Ok(set) => {
            fence_harts(vcpu, host, set, fence);
            Outcome::Value(0)
        }
        Err(e) => Outcome::Error(e),
    }
}

fn hsm_call(vcpu: &mut Vcpu, host: &mut impl Host, fid: usize, a: [u64; 6]) -> Outcome {
    let count = host.hart_count();
    match fid {
        hsm::HART_START => {
            let hart = a[0] as usize;
            if a[0] >= count as u64 {
                return Outcome::Error(INVALID_PARAM);
            }
            if state_of(vcpu, host, hart) != HartState::Stopped {
                return Outcome::Error(ALREADY_AVAILABLE);
            }
            let start = GuestPhysAddr::new(a[1]);
            if !host.is_ram(start) {
                return Outcome::Error(INVALID_ADDRESS);
            }
            if host.hart_start(hart, start, a[2]) {
                Outcome::Value(0)
            } else {
                Outcome::Error(ALREADY_AVAILABLE)
            }
        }
        hsm::HART_STOP => {
            vcpu.state = HartState::Stopped;
            Outcome::Then(Action::Stop)
        }
        hsm::HART_GET_STATUS => {
            if a[0] >= count as u64 {
                return Outcome::Error(INVALID_PARAM);
            }
            Outcome::Value(state_of(vcpu, host, a[0] as usize).sbi_code() as u64)
        }
        hsm::HART_SUSPEND => suspend(vcpu, host, a[0] as u32, GuestPhysAddr::new(a[1]), a[2]),
        _ => Outcome::Error(NOT_SUPPORTED),
    }
}

/// The HSM state of `hart`, the caller's own or another vCPU's.
fn state_of(vcpu: &Vcpu, host: &impl Host, hart: usize) -> HartState {
    if hart == vcpu.hart_id { vcpu.state } else { host.hart_state(hart) }
}

fn suspend(
    vcpu: &mut Vcpu,
    host: &mut impl Host,
    kind: u32,
    resume: GuestPhysAddr,
    opaque: u64,
) -> Outcome {
    use hsm::suspend_type::{NON_RETENTIVE, RETENTIVE};
    let how = match kind {
        RETENTIVE => Resume::Retentive,
        NON_RETENTIVE => {
            if !host.is_ram(resume) {
                return Outcome::Error(INVALID_ADDRESS);
            }
            Resume::NonRetentive { addr: resume, opaque }
        }
        // Reserved types.
        0x0000_0001..=0x0FFF_FFFF | 0x8000_0001..=0x8FFF_FFFF => {
            return Outcome::Error(INVALID_PARAM);
        }
        // Platform-specific types: there are none.
        _ => return Outcome::Error(NOT_SUPPORTED),
    };
    vcpu.state = HartState::Suspended;
    vcpu.waiting = Some(how);
    Outcome::Then(Action::Wait)
}

fn system_reset(kind: u64, reason: u64) -> Outcome {
    // The arguments are 32-bit; like OpenSBI, a register holding more is an invalid value
    // rather than a truncated one (no upper bits can turn garbage into "shutdown").
    let (Ok(kind), Ok(reason)) = (u32::try_from(kind), u32::try_from(reason)) else {
        return Outcome::Error(INVALID_PARAM);
    };
    let kind = match kind {
        srst::RESET_TYPE_SHUTDOWN => ResetKind::Shutdown,
        srst::RESET_TYPE_COLD_REBOOT => ResetKind::ColdReboot,
        srst::RESET_TYPE_WARM_REBOOT => ResetKind::WarmReboot,
        _ => return Outcome::Error(INVALID_PARAM),
    };
    match reason {
        srst::RESET_REASON_NO_REASON | srst::RESET_REASON_SYSTEM_FAILURE => {
            Outcome::Then(Action::Reset(kind))
        }
        _ => Outcome::Error(INVALID_PARAM),
    }
}

fn console(host: &mut impl Host, fid: usize, a: [u64; 6]) -> Outcome {
    let mut buf = [0u8; DBCN_CHUNK];
    match fid {
        dbcn::CONSOLE_WRITE | dbcn::CONSOLE_READ => {
            // On RV64 the address is a1 (low) and a2 (high): a non-zero high half names
            // memory beyond 64 bits, which no guest has.
            if a[2] != 0 {
                return Outcome::Error(INVALID_PARAM);
            }
            let gpa = GuestPhysAddr::new(a[1]);
            let len = (a[0] as usize).min(DBCN_CHUNK);
            if fid == dbcn::CONSOLE_WRITE {
                if !host.read_phys(gpa, &mut buf[..len]) {
                    return Outcome::Error(INVALID_PARAM);
                }
                host.console_write(&buf[..len]);
                Outcome::Value(len as u64)
            } else {
                // The last byte too (a range that would wrap past 2^64 is no RAM).
                let last = gpa.checked_add((len as u64).saturating_sub(1));
                if !host.is_ram(gpa) || !last.is_some_and(|last| host.is_ram(last)) {
                    return Outcome::Error(INVALID_PARAM);
                }
                let got = host.console_read(&mut buf[..len]);
                if !host.write_phys(gpa, &buf[..got]) {
                    return Outcome::Error(INVALID_PARAM);
                }
                Outcome::Value(got as u64)
            }
        }
        dbcn::CONSOLE_WRITE_BYTE => {
            host.console_write(&[a[0] as u8]);
            Outcome::Value(0)
        }
        _ => Outcome::Error(NOT_SUPPORTED),
    }
}

/// The hart mask of a legacy call: a pointer to it (0 = all harts), read through the
/// guest's translation; harts the guest does not have are ignored.
fn legacy_mask(vcpu: &Vcpu, host: &mut impl Host, ptr: u64) -> Result<u64, (Exception, u64)> {
    let all = hart_set(0, u64::MAX, host.hart_count()).unwrap_or(0);
    if ptr == 0 {
        return Ok(all);
    }
    Ok(host.load_u64(vcpu, ptr)? & all)
}

fn legacy_call(vcpu: &mut Vcpu, host: &mut impl Host, eid: usize, a: [u64; 6]) -> Outcome {
    match eid {
        legacy::LEGACY_SET_TIMER => {
            set_timer(vcpu, a[0]);
            Outcome::Legacy(0)
        }
        legacy::LEGACY_CONSOLE_PUTCHAR => {
            host.console_write(&[a[0] as u8]);
            Outcome::Legacy(0)
        }
        legacy::LEGACY_CONSOLE_GETCHAR => {
            let mut b = [0u8; 1];
            Outcome::Legacy(if host.console_read(&mut b) == 1 { b[0] as u64 } else { u64::MAX })
        }
        legacy::LEGACY_CLEAR_IPI => {
            vcpu.csrs.sip_soft &= !Interrupt::SupervisorSoft.mask();
            Outcome::Legacy(0)
        }
        legacy::LEGACY_SHUTDOWN => Outcome::Then(Action::Reset(ResetKind::Shutdown)),
        _ => {
            let set = match legacy_mask(vcpu, host, a[0]) {
                Ok(set) => set,
                Err((e, tval)) => return Outcome::Fault(e, tval),
            };
            match eid {
                legacy::LEGACY_SEND_IPI => ipi_harts(vcpu, host, set),
                legacy::LEGACY_REMOTE_FENCE_I => fence_harts(vcpu, host, set, Fence::I),
                legacy::LEGACY_REMOTE_SFENCE_VMA => {
                    fence_harts(vcpu, host, set, vma_fence(a[1], a[2], None))
                }
                _ => fence_harts(vcpu, host, set, vma_fence(a[1], a[2], Some(a[3] as u16))),
            }
            Outcome::Legacy(0)
        }
    }
}
