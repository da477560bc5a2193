//! `riscv,isa` strings.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A parsed ISA string such as `rv64imafdc_zicsr_zifencei_sstc`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Isa {
    /// The string as the device tree gave it.
    pub raw: String,
    /// 32, 64 or 128; 0 if the string did not start with `rvNN`.
    pub xlen: u32,
    /// Single-letter extensions, bit `n` for letter `'a' + n`.
    letters: u32,
    /// Multi-letter extensions, lower case.
    extensions: Vec<String>,
}

impl Isa {
    /// Parses an ISA string; unknown parts are kept, never rejected.
    pub fn parse(raw: &str) -> Self {
        let lower = raw.to_ascii_lowercase();
        let mut isa = Self { raw: raw.to_string(), ..Self::default() };
        let mut parts = lower.split('_');
        let first = parts.next().unwrap_or("");
        let Some(rest) = first.strip_prefix("rv") else {
            return isa;
        };
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        isa.xlen = rest[..digits].parse().unwrap_or(0);
        let letters = &rest[digits..];
        for (i, c) in letters.char_indices() {
            if c == 'z' || c == 'x' {
                // A multi-letter extension glued to the base ("rv64imaczicsr").
                isa.extensions.push(letters[i..].to_string());
                break;
            }
            if c.is_ascii_lowercase() {
                isa.letters |= 1 << (c as u32 - 'a' as u32);
            }
        }
        if isa.has_letter('g') {
            for c in ['i', 'm', 'a', 'f', 'd'] {
                isa.letters |= 1 << (c as u32 - 'a' as u32);
            }
            isa.extensions.extend(["zicsr", "zifencei"].map(ToString::to_string));
        }
        isa.extensions.extend(parts.filter(|p| !p.is_empty()).map(ToString::to_string));
        isa
    }

    /// Whether single-letter extension `letter` is present.
    pub fn has_letter(&self, letter: char) -> bool {
        let c = letter.to_ascii_lowercase();
        c.is_ascii_lowercase() && self.letters & (1 << (c as u32 - 'a' as u32)) != 0
    }

    /// Whether multi-letter extension `name` (e.g. `"sstc"`) is present.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e.eq_ignore_ascii_case(name))
    }

    /// The multi-letter extensions.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_string() {
        let isa = Isa::parse("rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc");
        assert_eq!(isa.xlen, 64);
        for l in ['i', 'm', 'a', 'f', 'd', 'c'] {
            assert!(isa.has_letter(l), "{l}");
        }
        assert!(!isa.has_letter('h'));
        assert!(isa.has_extension("sstc"));
        assert!(isa.has_extension("Zicsr"));
        assert!(!isa.has_extension("svpbmt"));
    }

    #[test]
    fn odd_strings() {
        let isa = Isa::parse("rv64gch");
        assert!(isa.has_letter('d') && isa.has_letter('h') && isa.has_extension("zifencei"));
        let isa = Isa::parse("rv64imaczicsr_sstc");
        assert!(isa.has_extension("zicsr") && isa.has_extension("sstc") && !isa.has_letter('z'));
        let isa = Isa::parse("garbage");
        assert_eq!(isa.xlen, 0);
        assert!(!isa.has_letter('i'));
        assert!(!Isa::parse("").has_letter('a'));
        assert!(!isa.has_letter('1'));
    }
}
