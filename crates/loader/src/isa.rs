//! The ISA string a guest is shown: the host's, less what hypocaust cannot give a guest
//! running in U-mode.

use alloc::string::String;

/// Single-letter extensions passed through.
const LETTERS: &str = "imafdqc";

/// Multi-letter extensions a guest may use as they are: unprivileged instructions that
/// behave the same in real U-mode, and Sstc, which hypocaust emulates.
const PASSED: &[&str] = &[
    "zicsr",
    "zifencei",
    "zicntr",
    "zihpm",
    "zihintpause",
    "zihintntl",
    "zicond",
    "zmmul",
    "zba",
    "zbb",
    "zbc",
    "zbs",
    "zbkb",
    "zbkc",
    "zbkx",
    "zknd",
    "zkne",
    "zknh",
    "zksed",
    "zksh",
    "zkt",
    "zfh",
    "zfhmin",
    "zfa",
    "zca",
    "zcb",
    "zcd",
    "zcf",
    "zacas",
    "zabha",
    "sstc",
];

/// The guest's `riscv,isa`: `host` without `h` (and every extension not known to be safe
/// to hand over, such as V, Svpbmt or Zicbom), and without `sstc` unless `sstc`.
pub fn guest_isa(host: &str, sstc: bool) -> String {
    let host = host.to_ascii_lowercase();
    let mut parts = host.split('_');
    let first = parts.next().unwrap_or("");
    let mut out = String::from("rv64");
    let letters = first.strip_prefix("rv64").unwrap_or("");
    let single_end = letters.find(['z', 's', 'x']).unwrap_or(letters.len());
    let has = |c: char| {
        letters[..single_end].contains(c)
            || (c != 'q' && c != 'c' && letters[..single_end].contains('g'))
    };
    for c in LETTERS.chars().filter(|&c| has(c)) {
        out.push(c);
    }
    let glued = &letters[single_end..];
    let mut multi: alloc::vec::Vec<&str> = parts.collect();
    if !glued.is_empty() {
        multi.insert(0, glued);
    }
    if letters[..single_end].contains('g') {
        for e in ["zicsr", "zifencei"] {
            if !multi.contains(&e) {
                multi.push(e);
            }
        }
    }
    for ext in multi {
        if PASSED.contains(&ext) && (ext != "sstc" || sstc) {
            out.push('_');
            out.push_str(ext);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_isa_passes_unchanged() {
        let q = "rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc";
        assert_eq!(guest_isa(q, true), q);
        assert_eq!(guest_isa(q, false), "rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs");
    }

    #[test]
    fn h_v_and_unsafe_extensions_are_removed() {
        assert_eq!(
            guest_isa("rv64imafdcvh_zicbom_zicsr_svpbmt_sstc_zba", true),
            "rv64imafdc_zicsr_sstc_zba"
        );
        assert_eq!(guest_isa("rv64gch", false), "rv64imafdc_zicsr_zifencei");
        assert_eq!(guest_isa("RV64IMAC", false), "rv64imac");
    }
}
