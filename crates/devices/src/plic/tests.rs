use super::*;

const fn priority(source: u32) -> u64 {
    4 * source as u64
}

const fn enable(context: u64) -> u64 {
    ENABLE_BASE + ENABLE_STRIDE * context
}

const fn threshold(context: u64) -> u64 {
    CONTEXT_BASE + CONTEXT_STRIDE * context
}

const fn claim(context: u64) -> u64 {
    threshold(context) + 4
}

/// S-mode context of hart 0.
const S0: u64 = 1;

fn rd(plic: &mut Plic, offset: u64) -> u32 {
    plic.read(offset, Width::Word).unwrap() as u32
}

fn wr(plic: &mut Plic, offset: u64, value: u32) {
    plic.write(offset, Width::Word, u64::from(value)).unwrap();
}

/// One hart; `sources` at priority 1 enabled in hart 0's S-mode context.
fn plic_with(sources: &[u32]) -> Plic {
    let mut plic = Plic::new(1);
    for &source in sources {
        wr(&mut plic, priority(source), 1);
        let word = enable(S0) + 4 * u64::from(source / 32);
        let bits = rd(&mut plic, word) | 1 << (source % 32);
        wr(&mut plic, word, bits);
    }
    plic
}

#[test]
fn layout_is_virts() {
    let plic = Plic::new(1);
    assert_eq!(plic.sources(), 96);
    assert_eq!(PLIC_SIZE, 0x60_0000);
    assert_eq!(WORDS, 3);
}

#[test]
fn reset_state_is_zero() {
    let mut plic = Plic::new(2);
    for source in 1..NUM_SOURCES {
        assert_eq!(rd(&mut plic, priority(source)), 0);
    }
    for context in 0..4 {
        for word in 0..3 {
            assert_eq!(rd(&mut plic, enable(context) + 4 * word), 0);
        }
        assert_eq!(rd(&mut plic, threshold(context)), 0);
        assert_eq!(rd(&mut plic, claim(context)), 0);
    }
    for word in 0..3 {
        assert_eq!(rd(&mut plic, PENDING_BASE + 4 * word), 0);
    }
    assert!(!plic.s_external(0));
    assert!(!plic.s_external(1));
    assert_eq!(plic.take_completed(), None);
}

#[test]
fn priorities_are_warl_modulo_8() {
    let mut plic = Plic::new(1);
    for (written, read) in [(0, 0), (1, 1), (7, 7), (8, 0), (9, 1), (0xff, 7), (u32::MAX, 7)] {
        wr(&mut plic, priority(5), written);
        assert_eq!(rd(&mut plic, priority(5)), read, "{written:#x}");
    }
    // Every source has its own register.
    wr(&mut plic, priority(1), 3);
    wr(&mut plic, priority(95), 6);
    assert_eq!(rd(&mut plic, priority(1)), 3);
    assert_eq!(rd(&mut plic, priority(95)), 6);
    assert_eq!(rd(&mut plic, priority(2)), 0);
}

#[test]
fn source_0_has_no_priority_register() {
    let mut plic = Plic::new(1);
    wr(&mut plic, 0, 7);
    assert_eq!(rd(&mut plic, 0), 0);
}

#[test]
fn priority_register_past_the_last_source_is_plain_storage() {
    let mut plic = Plic::new(1);
    wr(&mut plic, priority(96), 0xd);
    assert_eq!(rd(&mut plic, priority(96)), 5);
    // The word after it is nothing.
    wr(&mut plic, priority(97), 3);
    assert_eq!(rd(&mut plic, priority(97)), 0);
}

#[test]
fn threshold_is_warl_modulo_8() {
    let mut plic = Plic::new(1);
    wr(&mut plic, threshold(S0), 0x1f);
    assert_eq!(rd(&mut plic, threshold(S0)), 7);
    wr(&mut plic, threshold(0), 2);
    assert_eq!(rd(&mut plic, threshold(0)), 2);
    assert_eq!(rd(&mut plic, threshold(S0)), 7);
}

#[test]
fn enables_keep_every_bit_including_source_0() {
    let mut plic = Plic::new(2);
    for context in 0..4 {
        for word in 0..3 {
            let value = 0xdead_0000 | (context as u32) << 8 | word as u32;
            wr(&mut plic, enable(context) + 4 * word, value | 1);
        }
    }
    for context in 0..4 {
        for word in 0..3 {
            let value = 0xdead_0000 | (context as u32) << 8 | word as u32;
            assert_eq!(rd(&mut plic, enable(context) + 4 * word), value | 1);
        }
    }
    // Past the third word of a context's block: nothing.
    wr(&mut plic, enable(0) + 12, u32::MAX);
    assert_eq!(rd(&mut plic, enable(0) + 12), 0);
    assert_eq!(rd(&mut plic, enable(0) + 0x7c), 0);
}

#[test]
fn enable_of_source_0_never_interrupts() {
    let mut plic = Plic::new(1);
    wr(&mut plic, enable(S0), 1);
    plic.set_level(0, true);
    assert_eq!(rd(&mut plic, PENDING_BASE), 0);
    assert!(!plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 0);
}

#[test]
fn pending_follows_the_line_and_ignores_writes() {
    let mut plic = Plic::new(1);
    plic.set_level(10, true);
    plic.set_level(33, true);
    plic.set_level(95, true);
    assert_eq!(rd(&mut plic, PENDING_BASE), 1 << 10);
    assert_eq!(rd(&mut plic, PENDING_BASE + 4), 1 << 1);
    assert_eq!(rd(&mut plic, PENDING_BASE + 8), 1 << 31);
    wr(&mut plic, PENDING_BASE, 0);
    wr(&mut plic, PENDING_BASE + 4, u32::MAX);
    assert_eq!(rd(&mut plic, PENDING_BASE), 1 << 10);
    assert_eq!(rd(&mut plic, PENDING_BASE + 4), 1 << 1);
    // A request stays latched when the line drops.
    plic.set_level(10, false);
    assert_eq!(rd(&mut plic, PENDING_BASE), 1 << 10);
    // No source 96 and up.
    plic.set_level(96, true);
    plic.set_level(1000, true);
    assert_eq!(rd(&mut plic, PENDING_BASE + 12), 0);
    assert_eq!(rd(&mut plic, PENDING_BASE + 8), 1 << 31);
}

#[test]
fn line_needs_enable_and_priority() {
    let mut plic = Plic::new(1);
    plic.set_level(10, true);
    assert!(!plic.s_external(0));
    wr(&mut plic, enable(S0), 1 << 10);
    assert!(!plic.s_external(0), "priority 0 never interrupts");
    wr(&mut plic, priority(10), 1);
    assert!(plic.s_external(0));
    wr(&mut plic, enable(S0), 0);
    assert!(!plic.s_external(0));
}

#[test]
fn threshold_masks_line_and_claim() {
    let mut plic = plic_with(&[10]);
    wr(&mut plic, priority(10), 3);
    plic.set_level(10, true);
    wr(&mut plic, threshold(S0), 3);
    assert!(!plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 0);
    assert_eq!(rd(&mut plic, PENDING_BASE), 1 << 10, "a refused claim changes nothing");
    wr(&mut plic, threshold(S0), 2);
    assert!(plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 10);
}

#[test]
fn claim_takes_highest_priority_then_lowest_id() {
    let mut plic = plic_with(&[3, 7, 40, 64, 90]);
    wr(&mut plic, priority(3), 2);
    wr(&mut plic, priority(7), 5);
    wr(&mut plic, priority(40), 5);
    wr(&mut plic, priority(64), 1);
    wr(&mut plic, priority(90), 7);
    for source in [3, 7, 40, 64, 90] {
        plic.set_level(source, true);
    }
    let order: alloc::vec::Vec<u32> = (0..6).map(|_| rd(&mut plic, claim(S0))).collect();
    assert_eq!(order, [90, 7, 40, 3, 64, 0]);
    assert!(!plic.s_external(0));
}

#[test]
fn claim_complete_cycle() {
    let mut plic = plic_with(&[10]);
    plic.set_level(10, true);
    assert!(plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 10);
    // Claiming cleared pending; the line is down.
    assert_eq!(rd(&mut plic, PENDING_BASE), 0);
    assert!(!plic.s_external(0));
    // The device drives its line again while claimed: pending, but not claimable.
    plic.set_level(10, true);
    assert_eq!(rd(&mut plic, PENDING_BASE), 1 << 10);
    assert!(!plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 0);
    // Completion makes it claimable again.
    wr(&mut plic, claim(S0), 10);
    assert_eq!(plic.take_completed(), Some(10));
    assert_eq!(plic.take_completed(), None);
    assert!(plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 10);
}

#[test]
fn level_triggered_repend_needs_the_line_driven_again() {
    let mut plic = plic_with(&[10]);
    plic.set_level(10, true);
    assert_eq!(rd(&mut plic, claim(S0)), 10);
    wr(&mut plic, claim(S0), 10);
    // The line is still high, but QEMU only re-pends when the device drives it again.
    assert!(!plic.s_external(0));
    assert_eq!(rd(&mut plic, PENDING_BASE), 0);
    plic.set_level(10, true);
    assert!(plic.s_external(0));
    // A low line before the claim does not withdraw the latched request.
    plic.set_level(10, false);
    assert!(plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(S0)), 10);
}

#[test]
fn completions_reported_once_in_order() {
    let mut plic = plic_with(&[1, 2, 3]);
    for source in [1, 2, 3] {
        plic.set_level(source, true);
    }
    assert_eq!(rd(&mut plic, claim(S0)), 1);
    assert_eq!(rd(&mut plic, claim(S0)), 2);
    assert_eq!(rd(&mut plic, claim(S0)), 3);
    wr(&mut plic, claim(S0), 2);
    wr(&mut plic, claim(S0), 3);
    wr(&mut plic, claim(S0), 2);
    wr(&mut plic, claim(S0), 1);
    assert_eq!(plic.take_completed(), Some(2));
    assert_eq!(plic.take_completed(), Some(3));
    assert_eq!(plic.take_completed(), Some(1));
    assert_eq!(plic.take_completed(), None);
}

#[test]
fn completion_of_unclaimed_or_unknown_source_is_not_reported() {
    let mut plic = plic_with(&[5]);
    wr(&mut plic, claim(S0), 5);
    wr(&mut plic, claim(S0), 0);
    wr(&mut plic, claim(S0), 96);
    wr(&mut plic, claim(S0), u32::MAX);
    assert_eq!(plic.take_completed(), None);
}

#[test]
fn completion_ignores_context_and_enable() {
    // QEMU releases the claim whichever context completes it, enabled there or not.
    let mut plic = Plic::new(2);
    wr(&mut plic, priority(8), 1);
    wr(&mut plic, enable(S0), 1 << 8);
    plic.set_level(8, true);
    assert_eq!(rd(&mut plic, claim(S0)), 8);
    wr(&mut plic, claim(2), 8);
    assert_eq!(plic.take_completed(), Some(8));
    plic.set_level(8, true);
    assert!(plic.s_external(0));
    // Disabling after the claim does not prevent the completion either.
    assert_eq!(rd(&mut plic, claim(S0)), 8);
    wr(&mut plic, enable(S0), 0);
    wr(&mut plic, claim(S0), 8);
    assert_eq!(plic.take_completed(), Some(8));
}

#[test]
fn claimed_is_shared_by_all_contexts() {
    let mut plic = Plic::new(2);
    wr(&mut plic, priority(4), 1);
    wr(&mut plic, enable(1), 1 << 4);
    wr(&mut plic, enable(3), 1 << 4);
    plic.set_level(4, true);
    assert!(plic.s_external(0));
    assert!(plic.s_external(1));
    assert_eq!(rd(&mut plic, claim(3)), 4);
    assert!(!plic.s_external(0));
    assert!(!plic.s_external(1));
    assert_eq!(rd(&mut plic, claim(1)), 0);
}

#[test]
fn m_mode_contexts_are_registers_but_drive_nothing() {
    let mut plic = Plic::new(1);
    wr(&mut plic, priority(6), 1);
    wr(&mut plic, enable(0), 1 << 6);
    plic.set_level(6, true);
    assert!(!plic.s_external(0));
    assert_eq!(rd(&mut plic, claim(0)), 6);
    wr(&mut plic, claim(0), 6);
    assert_eq!(plic.take_completed(), Some(6));
}

#[test]
fn harts_map_to_s_contexts() {
    let mut plic = Plic::new(3);
    wr(&mut plic, priority(9), 1);
    wr(&mut plic, enable(5), 1 << 9);
    plic.set_level(9, true);
    assert!(!plic.s_external(0));
    assert!(!plic.s_external(1));
    assert!(plic.s_external(2));
    assert!(!plic.s_external(3), "no such hart");
}

#[test]
fn contexts_past_the_last_hart_read_zero() {
    let mut plic = Plic::new(1);
    wr(&mut plic, enable(2), u32::MAX);
    assert_eq!(rd(&mut plic, enable(2)), 0);
    wr(&mut plic, threshold(2), 5);
    assert_eq!(rd(&mut plic, threshold(2)), 0);
    assert_eq!(rd(&mut plic, claim(2)), 0);
    assert_eq!(rd(&mut plic, claim(1023)), 0);
}

#[test]
fn unknown_offsets_in_the_window_read_zero() {
    let mut plic = plic_with(&[10]);
    plic.set_level(10, true);
    for offset in [0x184, 0xffc, 0x100c, 0x1ffc, 0x2100, 0x1f_fffc, threshold(S0) + 8] {
        wr(&mut plic, offset, u32::MAX);
        assert_eq!(rd(&mut plic, offset), 0, "{offset:#x}");
    }
    assert_eq!(rd(&mut plic, PLIC_SIZE - 4), 0);
    assert_eq!(rd(&mut plic, threshold(S0)), 0);
    assert!(plic.s_external(0));
}

#[test]
fn only_aligned_words_inside_the_window_decode() {
    let mut plic = plic_with(&[10]);
    plic.set_level(10, true);
    for width in [Width::Byte, Width::Half, Width::Double] {
        assert_eq!(plic.read(claim(S0), width), Err(BusError));
        assert_eq!(plic.write(priority(10), width, 0), Err(BusError));
    }
    assert_eq!(plic.read(PLIC_SIZE, Width::Word), Err(BusError));
    assert_eq!(plic.write(PLIC_SIZE, Width::Word, 0), Err(BusError));
    assert_eq!(plic.read(u64::MAX - 3, Width::Word), Err(BusError));
    // None of that touched anything.
    assert_eq!(rd(&mut plic, priority(10)), 1);
    assert!(plic.s_external(0));
}

#[test]
fn misaligned_word_load_reads_both_words() {
    let mut plic = plic_with(&[10]);
    wr(&mut plic, priority(10), 5);
    wr(&mut plic, priority(11), 3);
    assert_eq!(plic.read(priority(10) + 2, Width::Word), Ok(0x0003_0000));
    // Across threshold and claim: the claim happens.
    wr(&mut plic, threshold(S0), 1);
    plic.set_level(10, true);
    assert_eq!(plic.read(threshold(S0) + 1, Width::Word), Ok(0x0a00_0000));
    assert_eq!(rd(&mut plic, PENDING_BASE), 0);
    // The second word past the window faults after the first is read.
    assert_eq!(plic.read(PLIC_SIZE - 2, Width::Word), Err(BusError));
}

#[test]
fn misaligned_stores_fault_without_effect() {
    let mut plic = plic_with(&[10]);
    assert_eq!(plic.write(priority(10) + 1, Width::Word, 0x0700), Err(BusError));
    assert_eq!(plic.write(priority(10) + 2, Width::Half, 0), Err(BusError));
    assert_eq!(rd(&mut plic, priority(10)), 1);
}

#[test]
#[should_panic(expected = "1 to 512 harts")]
fn no_harts_is_refused() {
    let _ = Plic::new(0);
}

#[test]
fn most_harts() {
    let mut plic = Plic::new(MAX_HARTS);
    let last = 2 * MAX_HARTS as u64 - 1;
    wr(&mut plic, priority(2), 1);
    wr(&mut plic, enable(last), 1 << 2);
    wr(&mut plic, threshold(last), 0);
    plic.set_level(2, true);
    assert!(plic.s_external(MAX_HARTS - 1));
    assert_eq!(threshold(last) + CONTEXT_STRIDE, PLIC_SIZE);
    assert_eq!(rd(&mut plic, claim(last)), 2);
}

/// `sifive_u`'s PLIC: 54 sources; priorities 1..=54 are registers, the pending and enable
/// words stop after the second, sources past 53 have no line.
#[test]
fn fewer_sources_as_on_sifive_u() {
    let mut plic = Plic::with_sources(1, 54);
    assert_eq!(plic.sources(), 54);
    let prio = |s: u64| 4 * s;
    plic.write(prio(54), Width::Word, 7).unwrap();
    assert_eq!(plic.read(prio(54), Width::Word), Ok(7));
    plic.write(prio(55), Width::Word, 7).unwrap();
    assert_eq!(plic.read(prio(55), Width::Word), Ok(0), "past the sources: reads 0");
    let enable = 0x2000 + 0x80; // context 1 (S-mode of hart 0)
    plic.write(enable + 4, Width::Word, u64::from(u32::MAX)).unwrap();
    assert_eq!(plic.read(enable + 4, Width::Word), Ok(u64::from(u32::MAX)));
    plic.write(enable + 8, Width::Word, u64::from(u32::MAX)).unwrap();
    assert_eq!(plic.read(enable + 8, Width::Word), Ok(0), "a third word holds no source");
    plic.set_level(54, true);
    plic.set_level(53, true);
    assert_eq!(plic.read(0x1004, Width::Word), Ok(1 << 21), "source 53 only");
    assert_eq!(plic.read(0x1008, Width::Word), Ok(0));
}
