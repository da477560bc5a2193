//! Where the harts of a hung QEMU are: a small client of QEMU's gdbstub (the GDB remote
//! serial protocol on a unix socket). Connecting stops the machine; for each hart it reads
//! the pc, the privilege (the stub's `priv` register) and the supervisor trap CSRs, and
//! names the function the pc is in from the ELF files it is given.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSymbol};

/// The CSRs reported per hart.
const CSRS: &[(&str, u16)] = &[
    ("sstatus", 0x100),
    ("sie", 0x104),
    ("sepc", 0x141),
    ("scause", 0x142),
    ("stval", 0x143),
    ("sip", 0x144),
    ("satp", 0x180),
    ("stimecmp", 0x14d),
    ("time", 0xc01),
];

/// One hart, as the stub reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hart {
    /// The stub's thread ID (hart index + 1).
    pub thread: String,
    pub pc: u64,
    /// 0 = U, 1 = S, 3 = M.
    pub privilege: Option<u64>,
    pub csrs: Vec<(&'static str, u64)>,
}

/// A connection to a gdbstub.
struct Stub {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Stub {
    fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(socket).with_context(|| {
            format!("could not connect to QEMU's gdbstub at {}", socket.display())
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream, pending: Vec::new() })
    }

    /// Reads the next packet's payload (acknowledging it).
    fn packet(&mut self) -> Result<String> {
        loop {
            if let Some(start) = self.pending.iter().position(|&b| b == b'$')
                && let Some(hash) = self.pending[start..].iter().position(|&b| b == b'#')
                && self.pending.len() >= start + hash + 3
            {
                let payload = String::from_utf8_lossy(&self.pending[start + 1..start + hash]);
                let payload = payload.into_owned();
                self.pending.drain(..start + hash + 3);
                self.stream.write_all(b"+")?;
                return Ok(payload);
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).context("reading from QEMU's gdbstub")?;
            if n == 0 {
                bail!("QEMU's gdbstub closed the connection");
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends a command and returns its reply. Stop notifications (QEMU sends one when the
    /// connection stops the machine) are not replies.
    fn ask(&mut self, command: &str) -> Result<String> {
        let sum = command.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        self.stream.write_all(format!("${command}#{sum:02x}").as_bytes())?;
        loop {
            let reply = self.packet()?;
            let stop = reply.starts_with('T') || reply.starts_with('S');
            if !stop || reply.len() < 3 {
                return Ok(reply);
            }
        }
    }

    /// A target description file, whole (it comes in chunks).
    fn feature(&mut self, annex: &str) -> Result<String> {
        let mut text = String::new();
        loop {
            let reply = self.ask(&format!("qXfer:features:read:{annex}:{:x},800", text.len()))?;
            let (kind, chunk) = reply.split_at(reply.len().min(1));
            text.push_str(chunk);
            match kind {
                "l" => return Ok(text),
                "m" => {}
                _ => bail!("the gdbstub did not give {annex}: {reply:?}"),
            }
        }
    }

    /// A register of the current thread, if the stub has it.
    fn register(&mut self, number: u32) -> Result<Option<u64>> {
        let reply = self.ask(&format!("p{number:x}"))?;
        Ok(little_endian_hex(&reply))
    }
}

/// A register value in the stub's encoding: target-order (little-endian) bytes in hex.
fn little_endian_hex(text: &str) -> Option<u64> {
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 16 || text.starts_with('E')
    {
        return None;
    }
    let mut value = 0u64;
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        value |= (byte as u64) << (8 * i);
    }
    Some(value)
}

/// Register numbers by name, as GDB assigns them from a target description: in document
/// order, each feature's registers after the previous ones, a `regnum` attribute setting
/// the number (and the next ones follow it).
fn register_numbers(features: &[String]) -> Vec<(String, u32)> {
    let mut next = 0u32;
    let mut numbers = Vec::new();
    for feature in features {
        for reg in feature.split("<reg ").skip(1) {
            let attr = |name: &str| {
                let key = format!("{name}=\"");
                let start = reg.find(&key)? + key.len();
                Some(reg[start..].split('"').next()?.to_string())
            };
            let Some(name) = attr("name") else { continue };
            if let Some(n) = attr("regnum").and_then(|n| n.parse().ok()) {
                next = n;
            }
            numbers.push((name, next));
            next += 1;
        }
    }
    numbers
}

/// Stops the machine behind `socket` and reads where each hart is.
pub fn harts(socket: &Path, timeout: Duration) -> Result<Vec<Hart>> {
    let mut stub = Stub::connect(socket, timeout)?;
    stub.ask("qSupported:xmlRegisters=riscv")?;
    let target = stub.feature("target.xml")?;
    let mut features = vec![target.clone()];
    for include in target.split("<xi:include href=\"").skip(1) {
        if let Some(annex) = include.split('"').next() {
            features.push(stub.feature(annex)?);
        }
    }
    let numbers = register_numbers(&features);
    let number = |name: &str| numbers.iter().find(|(n, _)| n == name).map(|&(_, n)| n);
    let pc = number("pc").unwrap_or(32);

    let mut threads = Vec::new();
    let mut reply = stub.ask("qfThreadInfo")?;
    while let Some(list) = reply.strip_prefix('m') {
        threads.extend(list.split(',').map(str::to_string));
        reply = stub.ask("qsThreadInfo")?;
    }
    let mut harts = Vec::new();
    for thread in threads {
        stub.ask(&format!("Hg{thread}"))?;
        let mut hart = Hart {
            pc: stub.register(pc)?.unwrap_or(0),
            privilege: match number("priv") {
                Some(n) => stub.register(n)?,
                None => None,
            },
            csrs: Vec::new(),
            thread,
        };
        for &(name, csr) in CSRS {
            // CSRs the stub names, else at the CSR feature's usual place (its base + number).
            let n = number(name).or_else(|| number("sstatus").map(|s| s - 0x100 + csr as u32));
            if let Some(value) = match n {
                Some(n) => stub.register(n)?,
                None => None,
            } {
                hart.csrs.push((name, value));
            }
        }
        harts.push(hart);
    }
    Ok(harts)
}

/// Function symbols of ELF files, for naming addresses.
#[derive(Default)]
pub struct Symbols {
    /// (start, end, name, file name), sorted by start.
    functions: Vec<(u64, u64, String, String)>,
}

/// Where a position-independent image (hypocaust's) runs: its link addresses plus each
/// of these, the direct-map offsets of its host paging modes (hypervisor/src/layout.rs).
const PIE_OFFSETS: [u64; 4] =
    [0, 0xFFFF_8000_0000_0000, 0xFF00_0000_0000_0000, 0xFFFF_FFF7_0000_0000];

impl Symbols {
    /// The function symbols of every file in `elves` that is an ELF file.
    pub fn load(elves: &[PathBuf]) -> Self {
        let mut functions = Vec::new();
        for path in elves {
            let Ok(data) = std::fs::read(path) else { continue };
            let Ok(file) = object::File::parse(&*data) else { continue };
            let short = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into());
            let offsets: &[u64] =
                if file.kind() == object::ObjectKind::Dynamic { &PIE_OFFSETS } else { &[0] };
            for sym in file.symbols() {
                if sym.kind() == object::SymbolKind::Text && sym.address() != 0 {
                    let name = sym.name().map(demangle).unwrap_or_default();
                    for &off in offsets {
                        let start = sym.address().wrapping_add(off);
                        functions.push((
                            start,
                            start + sym.size().max(1),
                            name.clone(),
                            short.clone(),
                        ));
                    }
                }
            }
        }
        functions.sort();
        Self { functions }
    }

    /// `file: function+offset` for `address`, if a symbol covers it.
    pub fn name(&self, address: u64) -> Option<String> {
        let i = self.functions.partition_point(|f| f.0 <= address);
        let (start, end, name, file) = self.functions[..i].iter().rev().find(|f| address < f.1)?;
        debug_assert!(*start <= address && address < *end);
        Some(format!("{file}: {name}+{:#x}", address - start))
    }
}

/// A Rust symbol's readable name without its hash, else the symbol as it is.
fn demangle(symbol: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(symbol))
}

fn privilege_name(p: Option<u64>) -> &'static str {
    match p {
        Some(0) => "U",
        Some(1) => "S",
        Some(3) => "M",
        Some(_) => "?",
        None => "unknown",
    }
}

/// One line per hart: pc, privilege, trap CSRs, and the function the pc is in.
pub fn describe(harts: &[Hart], symbols: &Symbols) -> String {
    let mut out = String::new();
    for (i, hart) in harts.iter().enumerate() {
        let place = symbols.name(hart.pc).unwrap_or_else(|| "no symbol".into());
        out.push_str(&format!(
            "hart {i}: pc {:#x} ({place}), privilege {}",
            hart.pc,
            privilege_name(hart.privilege)
        ));
        for (name, value) in &hart.csrs {
            out.push_str(&format!(", {name} {value:#x}"));
        }
        if let Some(sepc) = hart.csrs.iter().find(|c| c.0 == "sepc").and_then(|c| symbols.name(c.1))
        {
            out.push_str(&format!(" (sepc in {sepc})"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_values_are_little_endian_hex() {
        assert_eq!(little_endian_hex("7e8c22800080ffff"), Some(0xffff_8000_8022_8c7e));
        assert_eq!(little_endian_hex("0100000000000000"), Some(1));
        assert_eq!(little_endian_hex("E14"), None);
        assert_eq!(little_endian_hex(""), None);
    }

    #[test]
    fn registers_are_numbered_as_gdb_does() {
        let features = [
            "<feature><reg name=\"zero\" bitsize=\"64\"/><reg name=\"pc\" bitsize=\"64\" regnum=\"32\"/></feature>".to_string(),
            "<feature><reg name=\"ft0\"/><reg name=\"ft1\"/></feature>".into(),
            "<feature><reg name=\"priv\" bitsize=\"64\"/></feature>".into(),
            "<feature><reg name=\"sstatus\" bitsize=\"64\" regnum=\"322\"/><reg name=\"x\"/></feature>".into(),
        ];
        let n = register_numbers(&features);
        let get = |name: &str| n.iter().find(|r| r.0 == name).map(|r| r.1);
        assert_eq!(get("zero"), Some(0));
        assert_eq!(get("pc"), Some(32));
        assert_eq!(get("ft1"), Some(34));
        assert_eq!(get("priv"), Some(35));
        assert_eq!(get("sstatus"), Some(322));
        assert_eq!(get("x"), Some(323));
    }

    #[test]
    fn rust_symbols_read_as_paths() {
        assert_eq!(demangle("_ZN9hypocaust3run3run17h0123456789abcdefE"), "hypocaust::run::run");
        assert_eq!(demangle("trap_vector"), "trap_vector");
    }

    #[test]
    fn addresses_are_named_by_the_covering_function() {
        let symbols = Symbols {
            functions: vec![
                (0x100, 0x140, "a".into(), "k".into()),
                (0x140, 0x200, "b".into(), "k".into()),
            ],
        };
        assert_eq!(symbols.name(0x144).as_deref(), Some("k: b+0x4"));
        assert_eq!(symbols.name(0x100).as_deref(), Some("k: a+0x0"));
        assert_eq!(symbols.name(0x200), None);
        assert_eq!(symbols.name(0x50), None);
    }
}
