//! The payload QEMU loaded: its `fw_dynamic_info`, whose address QEMU's reset vector passes
//! in a2 (the same structure OpenSBI's `fw_dynamic` reads).

/// `magic`: "OSBI" in little-endian ASCII.
pub const MAGIC: u64 = 0x4942_534f;
/// `next_mode` of an S-mode payload.
pub const MODE_S: u64 = 1;

/// The structure, version 2 (QEMU 7 and later).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    pub magic: u64,
    pub version: u64,
    pub next_addr: u64,
    pub next_mode: u64,
    pub options: u64,
    /// The hart that should boot the payload; `u64::MAX` (or version 1): any.
    pub boot_hart: u64,
}

/// Where and how to start the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub entry: u64,
    /// The hart QEMU asks to boot it, if it names one.
    pub boot_hart: Option<usize>,
}

/// Why the payload cannot be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// No `fw_dynamic_info` (a2 did not point to one: not started by QEMU's reset vector).
    NoInfo,
    /// The payload wants a mode other than S.
    NotSupervisor(u64),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoInfo => {
                write!(f, "no fw_dynamic_info in a2: give QEMU the payload with -kernel")
            }
            Self::NotSupervisor(m) => {
                write!(f, "the payload asks for mode {m}; only S-mode (1) is supported")
            }
        }
    }
}

/// The payload `info` describes.
pub fn payload(info: &DynamicInfo) -> Result<Payload, BootError> {
    if info.magic != MAGIC || info.version == 0 {
        return Err(BootError::NoInfo);
    }
    if info.next_mode != MODE_S {
        return Err(BootError::NotSupervisor(info.next_mode));
    }
    let boot_hart =
        (info.version >= 2 && info.boot_hart != u64::MAX).then_some(info.boot_hart as usize);
    Ok(Payload { entry: info.next_addr, boot_hart })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DynamicInfo {
        DynamicInfo {
            magic: MAGIC,
            version: 2,
            next_addr: 0x8020_0000,
            next_mode: MODE_S,
            options: 0,
            boot_hart: u64::MAX,
        }
    }

    #[test]
    fn qemu_payloads() {
        assert_eq!(payload(&info()), Ok(Payload { entry: 0x8020_0000, boot_hart: None }));
        let named = DynamicInfo { boot_hart: 1, ..info() };
        assert_eq!(payload(&named).unwrap().boot_hart, Some(1));
        let v1 = DynamicInfo { version: 1, boot_hart: 3, ..info() };
        assert_eq!(payload(&v1).unwrap().boot_hart, None, "version 1 has no boot_hart");
    }

    #[test]
    fn refusals() {
        assert_eq!(payload(&DynamicInfo::default()), Err(BootError::NoInfo));
        assert_eq!(
            payload(&DynamicInfo { next_mode: 3, ..info() }),
            Err(BootError::NotSupervisor(3))
        );
    }
}
