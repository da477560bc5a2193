//! The virtual supervisor CSRs and their WARL rules.
//!
//! Every rule is the privileged spec's; where the spec leaves a choice, the choice QEMU 7.2
//! makes (our oracle) is taken, so the guest test suite sees the same values natively and
//! under hypocaust. The one place we follow the spec against QEMU 7.2 is `sepc[0]`, which
//! the spec says always reads zero (QEMU 7.2 keeps it).

use bitflags::bitflags;
use rv::csr::{self as num, ExtState, Interrupts, Satp, SatpMode, Senvcfg, Sstatus};

/// `sstatus` bits a guest can write. Not VS: guests are never offered V, and without it
/// the field is read-only zero (QEMU 7.2 let it be written; QEMU 10 follows the spec).
pub const SSTATUS_WRITABLE: Sstatus = Sstatus::SIE
    .union(Sstatus::SPIE)
    .union(Sstatus::SPP)
    .union(Sstatus::FS)
    .union(Sstatus::SUM)
    .union(Sstatus::MXR);

/// UXL as the guest reads it: U-mode is 64-bit.
const UXL_64: u64 = 2 << rv::csr::SSTATUS_UXL_SHIFT;

/// The supervisor interrupts a guest has (the ones firmware delegates on QEMU: SSI, STI, SEI).
pub const SUPERVISOR_INTERRUPTS: Interrupts =
    Interrupts::SSI.union(Interrupts::STI).union(Interrupts::SEI);

/// `senvcfg` bits a guest can write.
pub const SENVCFG_WRITABLE: Senvcfg =
    Senvcfg::FIOM.union(Senvcfg::CBIE).union(Senvcfg::CBCFE).union(Senvcfg::CBZE);

/// What the guest is offered: fixed for the life of a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Sstc: the guest has `stimecmp`.
    pub sstc: bool,
    /// F or D: the guest starts with `sstatus.FS` = Dirty, as SBI firmware leaves it.
    pub fp: bool,
    /// The widest paging mode offered (Bare and every mode up to it are accepted).
    pub max_satp_mode: SatpMode,
    /// The writable bits of `scounteren`: the host hart's (a counter it does not implement
    /// has its bit read-only zero).
    pub counters: u64,
    /// `senvcfg` (privileged spec 1.12; a 1.10 hart such as the U54 has none).
    pub senvcfg: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            sstc: true,
            fp: true,
            max_satp_mode: SatpMode::Sv39,
            counters: 0xFFFF_FFFF,
            senvcfg: true,
        }
    }
}

impl Features {
    /// Whether `satp.MODE` value `mode` is accepted.
    pub fn satp_mode_offered(&self, mode: u64) -> bool {
        SatpMode::from_bits(mode).is_some_and(|m| m <= self.max_satp_mode)
    }
}

bitflags! {
    /// What a CSR write changed that hypocaust must act on.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct CsrEffect: u8 {
        /// `satp` changed: switch the guest's address space.
        const SATP = 1 << 0;
        /// The timer deadline changed: reprogram the real timer.
        const TIMER = 1 << 1;
        /// SUM, MXR or FS changed (the view of guest memory, FP state).
        const STATUS = 1 << 2;
    }
}

/// The guest tried something the hart would refuse: raise illegal instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IllegalCsr;

/// The virtual supervisor CSR file of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Csrs {
    /// `sstatus` without the read-only fields (UXL, SD), which are added on reads.
    pub sstatus: u64,
    pub sie: u64,
    /// Software-pending bits of `sip` (SSIP); STIP and SEIP are computed.
    pub sip_soft: u64,
    pub stvec: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub satp: u64,
    pub scounteren: u64,
    pub senvcfg: u64,
    /// The timer deadline (Sstc's `stimecmp`, also set by SBI `set_timer`). `u64::MAX`
    /// when no timer is wanted.
    pub stimecmp: u64,
}

impl Default for Csrs {
    fn default() -> Self {
        Self {
            sstatus: 0,
            sie: 0,
            sip_soft: 0,
            stvec: 0,
            sscratch: 0,
            sepc: 0,
            scause: 0,
            stval: 0,
            satp: 0,
            scounteren: 0,
            senvcfg: 0,
            stimecmp: u64::MAX,
        }
    }
}

/// Inputs of `sip` that come from outside the CSR file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lines {
    /// The current `time`.
    pub now: u64,
    /// The guest's external interrupt line (its virtual PLIC context).
    pub external: bool,
}

impl Csrs {
    /// `sstatus` as the guest reads it (UXL = 64-bit, SD summarising FS/VS/XS).
    pub fn sstatus(&self) -> u64 {
        let s = self.sstatus;
        let dirty = |field: Sstatus| s & field.bits() == field.bits();
        let sd = if dirty(Sstatus::FS) || dirty(Sstatus::VS) || dirty(Sstatus::XS) {
            Sstatus::SD.bits()
        } else {
            0
        };
        s | UXL_64 | sd
    }

    /// The guest's `sstatus.FS`.
    pub fn fs(&self) -> ExtState {
        ExtState::from_bits(self.sstatus >> rv::csr::SSTATUS_FS_SHIFT)
    }

    /// Marks the FP state dirty (the guest wrote an FP register).
    pub fn set_fs_dirty(&mut self) {
        self.sstatus |= Sstatus::FS.bits();
    }

    /// Whether a bit of `sstatus` is set.
    pub fn status(&self, bit: Sstatus) -> bool {
        self.sstatus & bit.bits() != 0
    }

    /// Sets or clears bits of `sstatus`.
    pub fn set_status(&mut self, bit: Sstatus, on: bool) {
        if on {
            self.sstatus |= bit.bits();
        } else {
            self.sstatus &= !bit.bits();
        }
    }

    /// `sip` as the guest reads it.
    pub fn sip(&self, lines: Lines) -> u64 {
        let mut sip = self.sip_soft & Interrupts::SSI.bits();
        if lines.now >= self.stimecmp {
            sip |= Interrupts::STI.bits();
        }
        if lines.external {
            sip |= Interrupts::SEI.bits();
        }
        sip & SUPERVISOR_INTERRUPTS.bits()
    }

    /// Interrupts pending and enabled in `sie` (whether or not `sstatus.SIE` allows them).
    pub fn pending_enabled(&self, lines: Lines) -> u64 {
        self.sip(lines) & self.sie
    }

    /// Reads CSR `csr`; `Err` if the guest has no such supervisor CSR.
    #[inline]
    pub fn read(&self, csr: u16, features: &Features, lines: Lines) -> Result<u64, IllegalCsr> {
        Ok(match csr {
            num::SSTATUS => self.sstatus(),
            num::SIE => self.sie & SUPERVISOR_INTERRUPTS.bits(),
            num::SIP => self.sip(lines),
            num::STVEC => self.stvec,
            num::SCOUNTEREN => self.scounteren,
            num::SENVCFG if features.senvcfg => self.senvcfg,
            num::SSCRATCH => self.sscratch,
            num::SEPC => self.sepc,
            num::SCAUSE => self.scause,
            num::STVAL => self.stval,
            num::SATP => self.satp,
            num::STIMECMP if features.sstc => self.stimecmp,
            _ => return Err(IllegalCsr),
        })
    }

    /// Writes CSR `csr` with its WARL rules; `Err` if the guest has no such supervisor CSR.
    #[inline]
    pub fn write(
        &mut self,
        csr: u16,
        value: u64,
        features: &Features,
    ) -> Result<CsrEffect, IllegalCsr> {
        let mut effect = CsrEffect::empty();
        match csr {
            num::SSTATUS => {
                let mask = SSTATUS_WRITABLE.bits();
                let new = (self.sstatus & !mask) | (value & mask);
                let watched = (Sstatus::SUM | Sstatus::MXR | Sstatus::FS).bits();
                if (new ^ self.sstatus) & watched != 0 {
                    effect |= CsrEffect::STATUS;
                }
                self.sstatus = new;
            }
            num::SIE => {
                let mask = SUPERVISOR_INTERRUPTS.bits();
                self.sie = (self.sie & !mask) | (value & mask);
            }
            num::SIP => {
                // Only SSIP is writable; STIP and SEIP reflect their sources.
                let mask = Interrupts::SSI.bits();
                self.sip_soft = (self.sip_soft & !mask) | (value & mask);
            }
            num::STVEC => {
                // Modes 2 and 3 are reserved: such a write is ignored (WARL).
                if value & 3 < 2 {
                    self.stvec = value;
                }
            }
            num::SCOUNTEREN => self.scounteren = value & features.counters,
            num::SENVCFG if features.senvcfg => {
                let mask = SENVCFG_WRITABLE.bits();
                self.senvcfg = (self.senvcfg & !mask) | (value & mask);
            }
            num::SSCRATCH => self.sscratch = value,
            // IALIGN is 16: bit 0 is always zero.
            num::SEPC => self.sepc = value & !1,
            num::SCAUSE => self.scause = value,
            num::STVAL => self.stval = value,
            num::SATP => {
                // A mode the guest is not offered leaves satp unchanged, like hardware.
                if features.satp_mode_offered(Satp(value).mode_bits()) && value != self.satp {
                    self.satp = value;
                    effect |= CsrEffect::SATP;
                }
            }
            num::STIMECMP if features.sstc => {
                self.stimecmp = value;
                effect |= CsrEffect::TIMER;
            }
            _ => return Err(IllegalCsr),
        }
        Ok(effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Features {
        Features::default()
    }

    fn at(now: u64) -> Lines {
        Lines { now, external: false }
    }

    #[test]
    fn sstatus_fields() {
        let mut c = Csrs::default();
        // Everything written: only the writable fields stick; UXL reads 64-bit.
        c.write(num::SSTATUS, u64::MAX, &f()).unwrap();
        let s = c.sstatus();
        assert_eq!(s & !(Sstatus::SD.bits() | UXL_64), SSTATUS_WRITABLE.bits());
        assert_eq!(s & Sstatus::UXL.bits(), UXL_64);
        assert_ne!(s & Sstatus::SD.bits(), 0, "FS dirty sets SD");
        c.write(num::SSTATUS, 0, &f()).unwrap();
        assert_eq!(c.sstatus(), UXL_64);
        // SD follows FS = Dirty, not Clean; VS is read-only zero (no V).
        c.write(num::SSTATUS, 2 << 13, &f()).unwrap();
        assert_eq!(c.sstatus() & Sstatus::SD.bits(), 0);
        c.write(num::SSTATUS, 3 << 9, &f()).unwrap();
        assert_eq!(c.sstatus(), UXL_64);
        // UXL is read-only; XS and UBE read zero.
        c.write(num::SSTATUS, 1 << 32 | Sstatus::XS.bits() | Sstatus::UBE.bits(), &f()).unwrap();
        assert_eq!(c.sstatus(), UXL_64);
    }

    #[test]
    fn sstatus_effects() {
        let mut c = Csrs::default();
        assert_eq!(c.write(num::SSTATUS, Sstatus::SIE.bits(), &f()).unwrap(), CsrEffect::empty());
        assert_eq!(c.write(num::SSTATUS, Sstatus::SUM.bits(), &f()).unwrap(), CsrEffect::STATUS);
        assert_eq!(c.write(num::SSTATUS, Sstatus::SUM.bits(), &f()).unwrap(), CsrEffect::empty());
    }

    #[test]
    fn interrupt_registers() {
        let mut c = Csrs::default();
        c.write(num::SIE, u64::MAX, &f()).unwrap();
        assert_eq!(c.read(num::SIE, &f(), at(0)).unwrap(), 0x222);
        c.write(num::SIP, u64::MAX, &f()).unwrap();
        assert_eq!(c.read(num::SIP, &f(), at(0)).unwrap(), 0x2, "only SSIP is writable");
        c.stimecmp = 100;
        assert_eq!(c.read(num::SIP, &f(), at(99)).unwrap(), 0x2);
        assert_eq!(c.read(num::SIP, &f(), at(100)).unwrap(), 0x22);
        let lines = Lines { now: 0, external: true };
        assert_eq!(c.read(num::SIP, &f(), lines).unwrap(), 0x202);
        c.write(num::SIP, 0, &f()).unwrap();
        assert_eq!(c.pending_enabled(at(200)), 0x20);
    }

    #[test]
    fn warl_registers() {
        let mut c = Csrs::default();
        c.write(num::STVEC, 0x8000_0001, &f()).unwrap();
        c.write(num::STVEC, 0x9000_0002, &f()).unwrap();
        assert_eq!(c.stvec, 0x8000_0001, "reserved stvec modes are ignored");
        c.write(num::SEPC, 0x8000_0003, &f()).unwrap();
        assert_eq!(c.sepc, 0x8000_0002);
        c.write(num::SENVCFG, u64::MAX, &f()).unwrap();
        assert_eq!(c.senvcfg, 0xF1);
        c.write(num::SCOUNTEREN, u64::MAX, &f()).unwrap();
        assert_eq!(c.read(num::SCOUNTEREN, &f(), at(0)).unwrap(), 0xFFFF_FFFF);
        let few = Features { counters: 0x7_fff8 | 7, ..f() };
        c.write(num::SCOUNTEREN, u64::MAX, &few).unwrap();
        assert_eq!(c.read(num::SCOUNTEREN, &few, at(0)).unwrap(), 0x7_ffff, "the host's bits");
    }

    #[test]
    fn satp_modes() {
        let mut c = Csrs::default();
        let sv39 = Satp::new(SatpMode::Sv39, 7, 0x8_0123).0;
        assert_eq!(c.write(num::SATP, sv39, &f()).unwrap(), CsrEffect::SATP);
        assert_eq!(c.satp, sv39);
        // Not offered (Sv48 with an Sv39 offer) or reserved: no effect at all.
        for mode in [SatpMode::Sv48 as u64, SatpMode::Sv57 as u64, 1, 15] {
            assert_eq!(c.write(num::SATP, mode << 60 | 5, &f()).unwrap(), CsrEffect::empty());
            assert_eq!(c.satp, sv39);
        }
        let wide = Features { max_satp_mode: SatpMode::Sv48, ..f() };
        assert_eq!(c.write(num::SATP, 9 << 60 | 5, &wide).unwrap(), CsrEffect::SATP);
        // Bare keeps the other fields as written, as QEMU does.
        c.write(num::SATP, 0x1234, &f()).unwrap();
        assert_eq!(c.satp, 0x1234);
    }

    #[test]
    fn stimecmp_needs_sstc() {
        let mut c = Csrs::default();
        assert_eq!(c.read(num::STIMECMP, &f(), at(0)), Ok(u64::MAX));
        assert_eq!(c.write(num::STIMECMP, 5, &f()), Ok(CsrEffect::TIMER));
        let no_sstc = Features { sstc: false, ..f() };
        assert_eq!(c.read(num::STIMECMP, &no_sstc, at(0)), Err(IllegalCsr));
        assert_eq!(c.write(num::STIMECMP, 5, &no_sstc), Err(IllegalCsr));
    }

    #[test]
    fn senvcfg_only_where_the_host_has_it() {
        let mut c = Csrs::default();
        let old = Features { senvcfg: false, ..f() };
        assert_eq!(c.read(num::SENVCFG, &old, at(0)), Err(IllegalCsr));
        assert_eq!(c.write(num::SENVCFG, 1, &old), Err(IllegalCsr));
        assert_eq!(c.write(num::SENVCFG, 1, &f()), Ok(CsrEffect::empty()));
    }

    #[test]
    fn unknown_csrs_are_illegal() {
        let mut c = Csrs::default();
        for csr in [0x1FF, 0x300, 0x600, 0x5A8, 0x14E, 0xDB0] {
            assert_eq!(c.read(csr, &f(), at(0)), Err(IllegalCsr), "{csr:#x}");
            assert_eq!(c.write(csr, 0, &f()), Err(IllegalCsr), "{csr:#x}");
        }
    }
}
