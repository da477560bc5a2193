//! hypocaust's own calls to the SBI firmware under it (M-mode): what it offers, cross-hart
//! kicks, hart start, power off. The SBI that hypocaust serves its guests is another
//! matter (crates/vcpu/src/sbi.rs).

use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;

/// `(a0, a1)` of an SBI call: error and value.
fn base_call(fid: usize, arg: usize) -> (isize, usize) {
    let (error, value): (isize, usize);
    // SAFETY: an SBI BASE call has no effect on memory; the firmware preserves all
    // registers but a0 and a1.
    unsafe {
        asm!("ecall", inlateout("a0") arg => error, lateout("a1") value,
             in("a6") fid, in("a7") sbi_spec::base::EID_BASE, options(nostack));
    }
    (error, value)
}

/// Extensions worth reporting, with the names the summary shows.
const EXTENSIONS: &[(usize, &str)] = &[
    (sbi_spec::base::EID_BASE, "base"),
    (sbi_spec::time::EID_TIME, "time"),
    (sbi_spec::spi::EID_SPI, "ipi"),
    (sbi_spec::rfnc::EID_RFNC, "rfence"),
    (sbi_spec::hsm::EID_HSM, "hsm"),
    (sbi_spec::srst::EID_SRST, "srst"),
    (sbi_spec::pmu::EID_PMU, "pmu"),
    (sbi_spec::dbcn::EID_DBCN, "dbcn"),
    (sbi_spec::susp::EID_SUSP, "susp"),
    (sbi_spec::cppc::EID_CPPC, "cppc"),
    (sbi_spec::nacl::EID_NACL, "nacl"),
    (sbi_spec::sta::EID_STA, "sta"),
    (sbi_spec::sse::EID_SSE, "sse"),
    (sbi_spec::fwft::EID_FWFT, "fwft"),
    (sbi_spec::legacy::LEGACY_SET_TIMER, "legacy"),
];

/// The firmware, as SBI BASE describes it.
pub struct SbiInfo {
    /// Specification version; (0, 1) when BASE itself is missing.
    pub spec: (usize, usize),
    pub impl_id: usize,
    pub impl_version: usize,
    /// Names of the extensions that probe as present.
    pub extensions: Vec<&'static str>,
}

impl SbiInfo {
    /// Asks the firmware.
    pub fn probe() -> Self {
        let (error, version) = base_call(sbi_spec::base::GET_SBI_SPEC_VERSION, 0);
        if error != 0 {
            // SBI v0.1 has no BASE extension.
            return Self {
                spec: (0, 1),
                impl_id: usize::MAX,
                impl_version: 0,
                extensions: Vec::new(),
            };
        }
        let spec = ((version >> 24) & 0x7f, version & 0xff_ffff);
        let impl_id = base_call(sbi_spec::base::GET_SBI_IMPL_ID, 0).1;
        let impl_version = base_call(sbi_spec::base::GET_SBI_IMPL_VERSION, 0).1;
        let extensions = EXTENSIONS
            .iter()
            .filter(|&&(eid, _)| {
                let (error, value) = base_call(sbi_spec::base::PROBE_EXTENSION, eid);
                error == 0 && value != 0
            })
            .map(|&(_, name)| name)
            .collect();
        Self { spec, impl_id, impl_version, extensions }
    }

    /// Whether extension `name` (as in the summary) is present.
    pub fn has(&self, name: &str) -> bool {
        self.extensions.contains(&name)
    }

    /// The implementation's name.
    pub fn impl_name(&self) -> &'static str {
        match self.impl_id {
            0 => "Berkeley Boot Loader",
            1 => "OpenSBI",
            2 => "Xvisor",
            3 => "KVM",
            4 => "RustSBI",
            5 => "Diosix",
            6 => "Coffer",
            7 => "Xen",
            8 => "PolarFire HSS",
            9 => "coreboot",
            10 => "oreboot",
            11 => "bhyve",
            _ => "unknown",
        }
    }
}

impl fmt::Display for SbiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SBI v{}.{}, {}", self.spec.0, self.spec.1, self.impl_name())?;
        if self.impl_id == 1 {
            write!(f, " v{}.{}", self.impl_version >> 16, self.impl_version & 0xffff)?;
        } else if self.impl_id == 4 {
            // RustSBI: major << 16 | minor << 8 | patch.
            let v = self.impl_version;
            write!(f, " v{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)?;
        } else {
            write!(f, " version {:#x}", self.impl_version)?;
        }
        write!(f, "; extensions:")?;
        for e in &self.extensions {
            write!(f, " {e}")?;
        }
        Ok(())
    }
}

/// Powers the machine off through SRST (legacy shutdown as a fallback). `failure` reports a
/// system failure as the reason.
pub fn shutdown(failure: bool) -> ! {
    crate::console::flush_all();
    let _ = if failure {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::SystemFailure)
    } else {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::NoReason)
    };
    #[allow(deprecated)]
    sbi_rt::legacy::shutdown()
}

/// Makes a supervisor software interrupt pending on physical hart `hartid` (a kick: the
/// hart leaves its guest or its `wfi` and looks at what changed).
pub fn kick(hartid: usize) {
    let _ = sbi_rt::send_ipi(sbi_rt::HartMask::from_mask_base(1, hartid));
}
