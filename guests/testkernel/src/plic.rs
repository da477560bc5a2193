//! The PLIC of QEMU `virt` (0x0c00_0000) as seen from the S-mode context of the boot
//! hart (whichever hart the firmware booted on: not always hart 0): register access for
//! the tests, and [`Saved`], which restores what a test changed.

/// The PLIC's base address.
pub const BASE: u64 = 0x0c00_0000;
/// Sources on `virt` (`riscv,ndev` = 95, plus the non-existent source 0).
pub const SOURCES: u32 = 96;
/// 32-bit words of pending and enable bits.
pub const WORDS: usize = SOURCES as usize / 32;

/// The priority register of `source`.
pub fn priority_addr(source: u32) -> u64 {
    BASE + 4 * source as u64
}

/// Pending word `word` (sources `32 * word ..`).
pub fn pending_addr(word: usize) -> u64 {
    BASE + 0x1000 + 4 * word as u64
}

/// The S-mode context of the boot hart.
pub fn context() -> u64 {
    supervisor_context(crate::machine::get().hartid)
}

/// Enable word `word` of the boot hart's S-mode context.
pub fn enable_addr(word: usize) -> u64 {
    context_enable_addr(context(), word)
}

/// Enable word `word` of context `context`.
pub fn context_enable_addr(context: u64, word: usize) -> u64 {
    BASE + 0x2000 + 0x80 * context + 4 * word as u64
}

/// The priority threshold of context `context`.
pub fn context_threshold(context: u64) -> u64 {
    BASE + 0x20_0000 + 0x1000 * context
}

/// The claim/complete register of context `context`.
pub fn context_claim(context: u64) -> u64 {
    context_threshold(context) + 4
}

/// The S-mode context of hart `hart`, as the PLIC's `interrupts-extended` says (on `virt`
/// 2h + 1; on `sifive_u`, whose hart 0 has no S-mode, 2h).
pub fn supervisor_context(hart: usize) -> u64 {
    let m = crate::machine::get();
    m.s_contexts.iter().find(|(h, _)| *h == hart).map_or(2 * hart as u64 + 1, |&(_, c)| c)
}

/// The highest source number the PLIC has (`riscv,ndev`; QEMU's `virt` says 96, one past
/// its last source, `sifive_u` 53, its last).
pub fn last_source() -> u32 {
    match crate::machine::get().plic_ndev {
        0 => SOURCES - 1,
        n => n.min(SOURCES - 1),
    }
}

/// The priority threshold of the boot hart's S-mode context.
pub fn threshold() -> u64 {
    context_threshold(context())
}

/// Reads the 32-bit register at `addr`.
pub fn read(addr: u64) -> u32 {
    // SAFETY: the callers pass addresses of PLIC registers (built by the functions above),
    // which S-mode may access natively and under hypocaust; they are 32 bits wide.
    unsafe { (addr as *const u32).read_volatile() }
}

/// Writes the 32-bit register at `addr`.
pub fn write(addr: u64, value: u32) {
    // SAFETY: as in `read`; tests change the PLIC only while holding a `Saved`.
    unsafe { (addr as *mut u32).write_volatile(value) }
}

/// Whether `source` is pending.
pub fn pending(source: u32) -> bool {
    read(pending_addr(source as usize / 32)) & 1 << (source % 32) != 0
}

/// Enables or disables `source` for the S-mode context.
pub fn set_enabled(source: u32, on: bool) {
    let addr = enable_addr(source as usize / 32);
    let bit = 1 << (source % 32);
    let word = read(addr);
    write(addr, if on { word | bit } else { word & !bit });
}

/// Claims the highest-priority pending interrupt (0: none).
pub fn claim() -> u32 {
    read(context_claim(context()))
}

/// Signals the completion of `source`.
pub fn complete(source: u32) {
    write(context_claim(context()), source)
}

/// Prepares `source` for a test: priority 1, threshold 0, enabled; then claims and
/// completes whatever is pending. A level source that was asserted earlier (say by a UART
/// test that never touched the PLIC) stays pending until claimed, as on real PLICs.
pub fn take_over(source: u32) {
    write(priority_addr(source), 1);
    write(threshold(), 0);
    set_enabled(source, true);
    for _ in 0..8 {
        match claim() {
            0 => break,
            stale => complete(stale),
        }
    }
}

/// The sources' priorities, the context's enables and its threshold as a test found them;
/// dropping it restores them.
pub struct Saved {
    sources: [(u32, u32); 4],
    count: usize,
    enables: [u32; WORDS],
    threshold: u32,
}

impl Saved {
    /// Records the state, with the priorities of `sources` (at most four).
    pub fn take(sources: &[u32]) -> Self {
        assert!(sources.len() <= 4, "plic::Saved keeps four priorities");
        let mut saved = Self {
            sources: [(0, 0); 4],
            count: sources.len(),
            enables: core::array::from_fn(|w| read(enable_addr(w))),
            threshold: read(threshold()),
        };
        for (slot, &s) in saved.sources.iter_mut().zip(sources) {
            *slot = (s, read(priority_addr(s)));
        }
        saved
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        // A test that stopped half-way may have left a source claimed: complete each one
        // (a completion is only heard while the source is enabled; it is harmless when
        // nothing was claimed).
        for &(source, _) in &self.sources[..self.count] {
            set_enabled(source, true);
            complete(source);
        }
        for (w, &e) in self.enables.iter().enumerate() {
            write(enable_addr(w), e);
        }
        for &(source, priority) in &self.sources[..self.count] {
            write(priority_addr(source), priority);
        }
        write(threshold(), self.threshold);
    }
}
