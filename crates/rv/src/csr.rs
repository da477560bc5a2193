//! CSR numbers and field layouts (RISC-V privileged spec, chapters 2 and 12).

use bitflags::bitflags;

/// A CSR number (12 bits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CsrNum(pub u16);

impl CsrNum {
    /// Whether bits 11:10 mark the CSR read-only (`0b11`).
    pub const fn is_read_only(self) -> bool {
        (self.0 >> 10) & 0b11 == 0b11
    }

    /// The lowest privilege level that may access the CSR (bits 9:8): 0 = U, 1 = S,
    /// 2 = HS/VS (hypervisor), 3 = M.
    pub const fn min_privilege(self) -> u8 {
        ((self.0 >> 8) & 0b11) as u8
    }
}

// Unprivileged counters and FP CSRs.
pub const FFLAGS: u16 = 0x001;
pub const FRM: u16 = 0x002;
pub const FCSR: u16 = 0x003;
pub const CYCLE: u16 = 0xC00;
pub const TIME: u16 = 0xC01;
pub const INSTRET: u16 = 0xC02;
pub const HPMCOUNTER3: u16 = 0xC03;
pub const HPMCOUNTER31: u16 = 0xC1F;

// Supervisor CSRs.
pub const SSTATUS: u16 = 0x100;
pub const SIE: u16 = 0x104;
pub const STVEC: u16 = 0x105;
pub const SCOUNTEREN: u16 = 0x106;
pub const SENVCFG: u16 = 0x10A;
pub const SSCRATCH: u16 = 0x140;
pub const SEPC: u16 = 0x141;
pub const SCAUSE: u16 = 0x142;
pub const STVAL: u16 = 0x143;
pub const SIP: u16 = 0x144;
pub const STIMECMP: u16 = 0x14D;
pub const SATP: u16 = 0x180;

bitflags! {
    /// `sstatus` fields visible to S-mode.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Sstatus: u64 {
        const SIE = 1 << 1;
        const SPIE = 1 << 5;
        const UBE = 1 << 6;
        const SPP = 1 << 8;
        const VS = 0b11 << 9;
        const FS = 0b11 << 13;
        const XS = 0b11 << 15;
        const SUM = 1 << 18;
        const MXR = 1 << 19;
        const SPELP = 1 << 23;
        const SDT = 1 << 24;
        const UXL = 0b11 << 32;
        const SD = 1 << 63;
    }
}

/// The two-bit extension-state encoding of `sstatus.FS`, `.VS` and `.XS`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ExtState {
    Off = 0,
    Initial = 1,
    Clean = 2,
    Dirty = 3,
}

impl ExtState {
    /// Decodes the two-bit field value.
    pub const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => Self::Off,
            1 => Self::Initial,
            2 => Self::Clean,
            _ => Self::Dirty,
        }
    }
}

/// Bit position of `sstatus.FS`.
pub const SSTATUS_FS_SHIFT: u32 = 13;
/// Bit position of `sstatus.UXL`.
pub const SSTATUS_UXL_SHIFT: u32 = 32;

bitflags! {
    /// Interrupt bits of `sip` / `sie` (and of `mip`/`mie` at the same positions).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Interrupts: u64 {
        const SSI = 1 << 1;
        const STI = 1 << 5;
        const SEI = 1 << 9;
        const LCOFI = 1 << 13;
    }
}

/// `satp.MODE` values for RV64, ordered by reach (Bare < Sv39 < Sv48 < Sv57).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum SatpMode {
    Bare = 0,
    Sv39 = 8,
    Sv48 = 9,
    Sv57 = 10,
}

impl SatpMode {
    /// Decodes a 4-bit MODE field; reserved values give `None`.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            0 => Some(Self::Bare),
            8 => Some(Self::Sv39),
            9 => Some(Self::Sv48),
            10 => Some(Self::Sv57),
            _ => None,
        }
    }

    /// Number of page-table levels, 0 for Bare.
    pub const fn levels(self) -> u32 {
        match self {
            Self::Bare => 0,
            Self::Sv39 => 3,
            Self::Sv48 => 4,
            Self::Sv57 => 5,
        }
    }

    /// The mode's name: `Sv39`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bare => "Bare",
            Self::Sv39 => "Sv39",
            Self::Sv48 => "Sv48",
            Self::Sv57 => "Sv57",
        }
    }

    /// The name used in device trees' `mmu-type` (`riscv,sv39`, ...).
    pub const fn dt_name(self) -> &'static str {
        match self {
            Self::Bare => "riscv,none",
            Self::Sv39 => "riscv,sv39",
            Self::Sv48 => "riscv,sv48",
            Self::Sv57 => "riscv,sv57",
        }
    }
}

/// The fields of an RV64 `satp` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Satp(pub u64);

impl Satp {
    pub const MODE_SHIFT: u32 = 60;
    pub const ASID_SHIFT: u32 = 44;
    pub const ASID_MASK: u64 = 0xFFFF;
    pub const PPN_MASK: u64 = (1 << 44) - 1;

    /// Builds a value from its fields (`asid` and `ppn` are masked to their widths).
    pub const fn new(mode: SatpMode, asid: u16, ppn: u64) -> Self {
        Self(
            ((mode as u64) << Self::MODE_SHIFT)
                | ((asid as u64 & Self::ASID_MASK) << Self::ASID_SHIFT)
                | (ppn & Self::PPN_MASK),
        )
    }

    /// The raw MODE field.
    pub const fn mode_bits(self) -> u64 {
        self.0 >> Self::MODE_SHIFT
    }

    /// The MODE field, `None` if reserved.
    pub const fn mode(self) -> Option<SatpMode> {
        SatpMode::from_bits(self.mode_bits())
    }

    /// The ASID field.
    pub const fn asid(self) -> u16 {
        ((self.0 >> Self::ASID_SHIFT) & Self::ASID_MASK) as u16
    }

    /// The root page-table PPN.
    pub const fn ppn(self) -> u64 {
        self.0 & Self::PPN_MASK
    }
}

/// `stvec.MODE` values.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TvecMode {
    Direct,
    Vectored,
}

/// Decoded `stvec`: base and mode; reserved modes (2, 3) give `None`.
pub const fn tvec_mode(stvec: u64) -> Option<TvecMode> {
    match stvec & 3 {
        0 => Some(TvecMode::Direct),
        1 => Some(TvecMode::Vectored),
        _ => None,
    }
}

bitflags! {
    /// `senvcfg` fields.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Senvcfg: u64 {
        const FIOM = 1 << 0;
        const LPE = 1 << 2;
        const SSE = 1 << 3;
        const CBIE = 0b11 << 4;
        const CBCFE = 1 << 6;
        const CBZE = 1 << 7;
        const PMM = 0b11 << 32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_number_classes() {
        assert!(CsrNum(CYCLE).is_read_only());
        assert!(CsrNum(TIME).is_read_only());
        assert!(!CsrNum(SSTATUS).is_read_only());
        assert_eq!(CsrNum(SSTATUS).min_privilege(), 1);
        assert_eq!(CsrNum(CYCLE).min_privilege(), 0);
        assert_eq!(CsrNum(FCSR).min_privilege(), 0);
        assert_eq!(CsrNum(0x300).min_privilege(), 3); // mstatus
        assert_eq!(CsrNum(0x600).min_privilege(), 2); // hstatus
    }

    #[test]
    fn satp_round_trip() {
        let s = Satp::new(SatpMode::Sv48, 0xABCD, 0x8_0000);
        assert_eq!(s.0, 0x9ABC_D000_0008_0000);
        assert_eq!(s.mode(), Some(SatpMode::Sv48));
        assert_eq!(s.asid(), 0xABCD);
        assert_eq!(s.ppn(), 0x8_0000);
        assert_eq!(Satp(0x5 << 60).mode(), None);
        assert_eq!(SatpMode::Sv39.levels(), 3);
        assert_eq!(SatpMode::Sv57.dt_name(), "riscv,sv57");
    }

    #[test]
    fn field_positions_match_the_spec() {
        assert_eq!(Sstatus::SPP.bits(), 0x100);
        assert_eq!(Sstatus::FS.bits(), 0x6000);
        assert_eq!(Sstatus::SUM.bits(), 0x4_0000);
        assert_eq!(Sstatus::MXR.bits(), 0x8_0000);
        assert_eq!(Sstatus::UXL.bits(), 0x3_0000_0000);
        assert_eq!(Interrupts::STI.bits(), 0x20);
        assert_eq!(Interrupts::SEI.bits(), 0x200);
        assert_eq!(ExtState::from_bits(Sstatus::FS.bits() >> SSTATUS_FS_SHIFT), ExtState::Dirty);
        assert_eq!(tvec_mode(0x8000_0001), Some(TvecMode::Vectored));
        assert_eq!(tvec_mode(0x8000_0002), None);
    }
}
