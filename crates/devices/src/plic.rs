//! The PLIC of QEMU 7.2's `virt` machine (QEMU's `sifive_plic` with virt's parameters): 96
//! sources (0 to 95; source 0 never interrupts), priorities of 3 bits, and two contexts per
//! hart, `2h` for M-mode and `2h + 1` for S-mode (hart configuration "MS,MS,...").
//!
//! Register map and behaviour, as QEMU has it:
//! - Priorities at `4 * source` for sources 1 to 96. A write keeps the value modulo 8
//!   (write-any, read-legal). Offset 0 (source 0) is no register. Offset 0x180, the priority
//!   of a source 96 that does not exist, lies past the end of QEMU's priority array; there
//!   QEMU reads and writes the slack of the heap allocation, so it behaves as a plain
//!   priority register that no source uses, which is what this model gives.
//! - Pending bits at 0x1000 (three words): read-only, writes are ignored. The gateway
//!   latches a request: [`Plic::set_level`] with high sets the pending bit, low leaves it
//!   (QEMU 7.2.15 and later, as Debian ships 7.2; 7.2.0 cleared it); a claim clears it, and
//!   it is not set again until the device drives its line high again.
//! - Enable bits at `0x2000 + 0x80 * context` (three words): every bit is writable,
//!   including source 0's, which has no effect.
//! - Threshold at `0x20_0000 + 0x1000 * context`, modulo 8 like the priorities.
//! - Claim/complete at threshold + 4. A claim returns the pending, enabled, unclaimed source
//!   of highest priority strictly above the threshold (the lowest-numbered one among equal
//!   priorities), or 0; it clears the source's pending bit and marks it claimed. Claimed is
//!   one flag per source, shared by all contexts. A completion of any number below 96 clears
//!   that source's claimed flag, whether or not it was claimed or enabled in the completing
//!   context; larger numbers are ignored.
//! - A context's interrupt line is asserted while a claim would return a source, so the
//!   threshold masks both the line and the claim.
//! - Every other offset of the window (the window is 0x60_0000 bytes whatever the number of
//!   harts, as QEMU sizes it for its maximum of 512 harts), including the registers of
//!   contexts past the last hart, reads as 0 and ignores writes.
//! - Only 4-byte accesses are decoded; other widths fault, as do offsets past the window. A
//!   misaligned 4-byte load is made by the CPU of the two aligned words that cover it (with
//!   both reads' side effects); a misaligned store becomes byte stores, which fault (see
//!   `access.rs`).
//!
//! The M-mode contexts are registers like any other, but nothing reports their lines: the
//! guest has no M-mode.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::access::{cpu_read, cpu_write};
use crate::{BusError, Mmio, Width};

/// The number of sources, counting the nonexistent source 0 (`VIRT_IRQCHIP_NUM_SOURCES`).
pub const NUM_SOURCES: u32 = 96;

/// The largest priority (`VIRT_IRQCHIP_NUM_PRIO_BITS` = 3).
pub const MAX_PRIORITY: u32 = 7;

/// The harts one `virt` PLIC serves at most (`VIRT_CPUS_MAX`).
pub const MAX_HARTS: usize = 512;

/// The size of the window the `virt` machine gives the PLIC, whatever the number of harts:
/// room for the contexts of [`MAX_HARTS`] harts.
pub const PLIC_SIZE: u64 = CONTEXT_BASE + 2 * MAX_HARTS as u64 * CONTEXT_STRIDE;

const PRIORITY_BASE: u64 = 0x4;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
const CONTEXT_THRESHOLD: u64 = 0;
const CONTEXT_CLAIM: u64 = 4;

/// 32-bit words of one bit per source.
const WORDS: usize = NUM_SOURCES.div_ceil(32) as usize;

/// One bit per source.
type Bits = [u32; WORDS];

fn bit(bits: &Bits, source: u32) -> bool {
    bits[(source / 32) as usize] & (1 << (source % 32)) != 0
}

fn set_bit(bits: &mut Bits, source: u32, value: bool) {
    let word = &mut bits[(source / 32) as usize];
    if value {
        *word |= 1 << (source % 32);
    } else {
        *word &= !(1 << (source % 32));
    }
}

/// A register of the window, decoded from an aligned word offset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Register {
    /// Priority of a source, 1 to [`NUM_SOURCES`] (the last one used by no source).
    Priority(u32),
    /// A word of pending bits.
    Pending(usize),
    /// A word of a context's enable bits.
    Enable {
        context: usize,
        word: usize,
    },
    Threshold(usize),
    Claim(usize),
    /// Reads as 0, ignores writes.
    None,
}

/// The PLIC of QEMU 7.2's `virt` machine (see the module documentation).
#[derive(Clone, Debug)]
pub struct Plic {
    /// Indexed by source; index 0 is never written, index [`NUM_SOURCES`] is the register
    /// at 0x180 that no source uses.
    priority: [u32; NUM_SOURCES as usize + 1],
    pending: Bits,
    claimed: Bits,
    /// Per context.
    enable: Vec<Bits>,
    /// Per context.
    threshold: Vec<u32>,
    /// Sources whose claim the guest has completed, oldest first.
    completed: VecDeque<u32>,
    /// The number of sources counting source 0 (at most [`NUM_SOURCES`]): priorities
    /// 1..=sources, pending bits below `sources`, enable words that cover them.
    sources: u32,
}

impl Plic {
    /// A PLIC in its reset state for `harts` harts (contexts `2h` M-mode, `2h + 1` S-mode):
    /// everything zero.
    ///
    /// # Panics
    ///
    /// If `harts` is 0 or more than [`MAX_HARTS`], which QEMU's `virt` does not build.
    pub fn new(harts: usize) -> Self {
        Self::with_sources(harts, NUM_SOURCES)
    }

    /// A PLIC like [`Plic::new`] with `sources` sources counting source 0 (clamped to 2 ..=
    /// [`NUM_SOURCES`]), as QEMU builds one for another board (`sifive_u`: 54).
    ///
    /// # Panics
    ///
    /// As [`Plic::new`].
    pub fn with_sources(harts: usize, sources: u32) -> Self {
        assert!(
            (1..=MAX_HARTS).contains(&harts),
            "a virt PLIC serves 1 to {MAX_HARTS} harts, not {harts}"
        );
        let contexts = 2 * harts;
        Self {
            priority: [0; NUM_SOURCES as usize + 1],
            pending: [0; WORDS],
            claimed: [0; WORDS],
            enable: vec![[0; WORDS]; contexts],
            threshold: vec![0; contexts],
            completed: VecDeque::new(),
            sources: sources.clamp(2, NUM_SOURCES),
        }
    }

    /// Drives the line of `source` to `level`: high sets its pending bit (a latched
    /// request), low changes nothing. Source 0 and sources past the last have no line and
    /// are ignored.
    pub fn set_level(&mut self, source: u32, level: bool) {
        if source == 0 || source >= self.sources || !level {
            return;
        }
        set_bit(&mut self.pending, source, true);
    }

    /// Whether the external interrupt of `hart`'s S-mode context is asserted now; false for
    /// a hart the PLIC does not serve.
    pub fn s_external(&self, hart: usize) -> bool {
        hart < self.harts() && self.best(2 * hart + 1) != 0
    }

    /// The next source whose claim the guest has completed, oldest first; each completion
    /// is reported once. Only a completion that releases a claimed source counts: one of a
    /// source nobody claimed changes nothing and is not reported.
    pub fn take_completed(&mut self) -> Option<u32> {
        self.completed.pop_front()
    }

    /// The number of sources, counting the nonexistent source 0 (96 on `virt`).
    ///
    /// QEMU's `virt` device tree gives `riscv,ndev` = 96 (not 95), although source 96 does
    /// not exist; `sifive_u`'s gives 53 for its 54. A device tree that must match QEMU's
    /// gives `riscv,ndev` as the host's says.
    pub fn sources(&self) -> u32 {
        self.sources
    }

    /// 32-bit words of enable bits that hold a source.
    fn words(&self) -> usize {
        self.sources.div_ceil(32) as usize
    }

    fn harts(&self) -> usize {
        self.threshold.len() / 2
    }

    fn contexts(&self) -> usize {
        self.threshold.len()
    }

    /// The source a claim by `context` would return, or 0.
    fn best(&self, context: usize) -> u32 {
        let mut best = 0;
        let mut best_priority = self.threshold[context];
        let enable = &self.enable[context];
        for (word, ((pending, claimed), enabled)) in
            self.pending.iter().zip(&self.claimed).zip(enable).enumerate()
        {
            let candidates = pending & !claimed & enabled;
            if candidates == 0 {
                continue;
            }
            for bit in 0..32 {
                if candidates & (1 << bit) == 0 {
                    continue;
                }
                let source = word as u32 * 32 + bit;
                let priority = self.priority[source as usize];
                if priority > best_priority {
                    best = source;
                    best_priority = priority;
                }
            }
        }
        best
    }

    fn claim(&mut self, context: usize) -> u32 {
        let source = self.best(context);
        if source != 0 {
            set_bit(&mut self.pending, source, false);
            set_bit(&mut self.claimed, source, true);
        }
        source
    }

    fn complete(&mut self, value: u32) {
        if value >= self.sources {
            return;
        }
        if bit(&self.claimed, value) {
            set_bit(&mut self.claimed, value, false);
            self.completed.push_back(value);
        }
    }

    /// Decodes a word-aligned offset inside the window.
    fn decode(&self, offset: u64) -> Register {
        let contexts = self.contexts() as u64;
        if let Some(rel) = within(offset, PRIORITY_BASE, u64::from(self.sources) * 4) {
            Register::Priority((rel / 4) as u32 + 1)
        } else if let Some(rel) = within(offset, PENDING_BASE, u64::from(self.sources) / 8) {
            Register::Pending((rel / 4) as usize)
        } else if let Some(rel) = within(offset, ENABLE_BASE, contexts * ENABLE_STRIDE) {
            let context = (rel / ENABLE_STRIDE) as usize;
            let word = ((rel % ENABLE_STRIDE) / 4) as usize;
            if word < self.words() { Register::Enable { context, word } } else { Register::None }
        } else if let Some(rel) = within(offset, CONTEXT_BASE, contexts * CONTEXT_STRIDE) {
            let context = (rel / CONTEXT_STRIDE) as usize;
            match rel % CONTEXT_STRIDE {
                CONTEXT_THRESHOLD => Register::Threshold(context),
                CONTEXT_CLAIM => Register::Claim(context),
                _ => Register::None,
            }
        } else {
            Register::None
        }
    }

    fn read_register(&mut self, register: Register) -> u32 {
        match register {
            Register::Priority(source) => self.priority[source as usize],
            Register::Pending(word) => self.pending[word],
            Register::Enable { context, word } => self.enable[context][word],
            Register::Threshold(context) => self.threshold[context],
            Register::Claim(context) => self.claim(context),
            Register::None => 0,
        }
    }

    fn write_register(&mut self, register: Register, value: u32) {
        match register {
            Register::Priority(source) => self.priority[source as usize] = value % 8,
            Register::Enable { context, word } => self.enable[context][word] = value,
            Register::Threshold(context) => self.threshold[context] = value % 8,
            Register::Claim(_) => self.complete(value),
            Register::Pending(_) | Register::None => {}
        }
    }

    /// The register of an aligned access, or the fault QEMU gives for a width other than 4
    /// bytes or an offset past the window.
    fn register(&self, offset: u64, width: Width) -> Result<Register, BusError> {
        if offset >= PLIC_SIZE || width != Width::Word {
            return Err(BusError);
        }
        Ok(self.decode(offset))
    }
}

/// `offset - base` if `offset` lies in the `len` bytes from `base`.
fn within(offset: u64, base: u64, len: u64) -> Option<u64> {
    offset.checked_sub(base).filter(|rel| *rel < len)
}

impl Mmio for Plic {
    fn read(&mut self, offset: u64, width: Width) -> Result<u64, BusError> {
        cpu_read(offset, width, |offset| {
            let register = self.register(offset, width)?;
            Ok(u64::from(self.read_register(register)))
        })
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), BusError> {
        cpu_write(offset, width, value, |offset, width, value| {
            let register = self.register(offset, width)?;
            // The access is 4 bytes wide: `value` fits.
            self.write_register(register, value as u32);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
