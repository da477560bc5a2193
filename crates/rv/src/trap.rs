//! Trap causes as `scause` encodes them.

/// Bit 63 of `scause`: set for interrupts.
pub const INTERRUPT_BIT: u64 = 1 << 63;

/// Synchronous exception codes (privileged spec, table "Supervisor cause register values").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum Exception {
    InstructionMisaligned = 0,
    InstructionAccessFault = 1,
    IllegalInstruction = 2,
    Breakpoint = 3,
    LoadMisaligned = 4,
    LoadAccessFault = 5,
    StoreMisaligned = 6,
    StoreAccessFault = 7,
    EcallFromU = 8,
    EcallFromS = 9,
    InstructionPageFault = 12,
    LoadPageFault = 13,
    StorePageFault = 15,
    SoftwareCheck = 18,
    HardwareError = 19,
}

impl Exception {
    /// Decodes an exception code; unknown or reserved codes give `None`.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::InstructionMisaligned,
            1 => Self::InstructionAccessFault,
            2 => Self::IllegalInstruction,
            3 => Self::Breakpoint,
            4 => Self::LoadMisaligned,
            5 => Self::LoadAccessFault,
            6 => Self::StoreMisaligned,
            7 => Self::StoreAccessFault,
            8 => Self::EcallFromU,
            9 => Self::EcallFromS,
            12 => Self::InstructionPageFault,
            13 => Self::LoadPageFault,
            15 => Self::StorePageFault,
            18 => Self::SoftwareCheck,
            19 => Self::HardwareError,
            _ => return None,
        })
    }

    /// The `scause` value for this exception.
    pub const fn code(self) -> u64 {
        self as u64
    }
}

/// Supervisor-level interrupt codes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub enum Interrupt {
    SupervisorSoft = 1,
    SupervisorTimer = 5,
    SupervisorExternal = 9,
    CounterOverflow = 13,
}

impl Interrupt {
    /// Decodes an interrupt code (without bit 63).
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::SupervisorSoft,
            5 => Self::SupervisorTimer,
            9 => Self::SupervisorExternal,
            13 => Self::CounterOverflow,
            _ => return None,
        })
    }

    /// The `scause` value for this interrupt (bit 63 set).
    pub const fn cause(self) -> u64 {
        INTERRUPT_BIT | self as u64
    }

    /// The interrupt's bit in `sip`/`sie`.
    pub const fn mask(self) -> u64 {
        1 << (self as u64)
    }
}

/// A decoded `scause`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cause {
    Exception(Exception),
    Interrupt(Interrupt),
    /// A code this crate does not know.
    Unknown(u64),
}

impl Cause {
    /// Decodes a raw `scause`.
    pub const fn from_scause(scause: u64) -> Self {
        let code = scause & !INTERRUPT_BIT;
        if scause & INTERRUPT_BIT != 0 {
            match Interrupt::from_code(code) {
                Some(i) => Self::Interrupt(i),
                None => Self::Unknown(scause),
            }
        } else {
            match Exception::from_code(code) {
                Some(e) => Self::Exception(e),
                None => Self::Unknown(scause),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_scause() {
        assert_eq!(
            Cause::from_scause(0x8000_0000_0000_0005),
            Cause::Interrupt(Interrupt::SupervisorTimer)
        );
        assert_eq!(Cause::from_scause(2), Cause::Exception(Exception::IllegalInstruction));
        assert_eq!(Cause::from_scause(15), Cause::Exception(Exception::StorePageFault));
        assert_eq!(Cause::from_scause(14), Cause::Unknown(14));
        assert_eq!(Cause::from_scause(INTERRUPT_BIT | 3), Cause::Unknown(INTERRUPT_BIT | 3));
        assert_eq!(Interrupt::SupervisorExternal.mask(), 1 << 9);
        assert_eq!(Interrupt::SupervisorSoft.cause(), INTERRUPT_BIT | 1);
    }
}
