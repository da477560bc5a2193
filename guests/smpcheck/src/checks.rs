//! The subcommands. Every thread is pinned to one CPU; threads are made before the
//! measured region and wait at a [`Gate`], so the region holds only the work.

use core::fmt;
use core::hint::spin_loop;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use crate::sys::{self, ETIMEDOUT, fail};
use crate::{check_deadline, deadline};

/// The most threads a run makes (and CPUs it looks at).
const MAX_THREADS: usize = 64;

/// Each thread's ID word: set by `clone`, cleared by the kernel when the thread ends.
static TIDS: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];
/// The CPU each thread is pinned to.
static CPU: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];

/// Threads check in at a gate and sleep until it opens.
struct Gate {
    ready: AtomicU32,
    open: AtomicU32,
}

impl Gate {
    const fn new() -> Self {
        Self { ready: AtomicU32::new(0), open: AtomicU32::new(0) }
    }

    /// A thread: checks in, then waits for the gate to open.
    fn arrive(&self) {
        self.ready.fetch_add(1, Ordering::Release);
        sys::futex_wake(&self.ready, 1);
        while self.open.load(Ordering::Acquire) == 0 {
            if sys::futex_wait(&self.open, 0, 100, false) == -ETIMEDOUT {
                check_deadline("the start of the measured region");
            }
        }
    }

    /// The main thread: waits until `n` threads have checked in.
    fn wait_for(&self, n: usize) {
        loop {
            let ready = self.ready.load(Ordering::Acquire);
            if ready as usize >= n {
                return;
            }
            if sys::futex_wait(&self.ready, ready, 100, false) == -ETIMEDOUT {
                check_deadline("the threads to start");
            }
        }
    }

    /// The main thread: lets every thread go.
    fn open(&self) {
        self.open.store(1, Ordering::Release);
        sys::futex_wake(&self.open, i32::MAX as u32);
    }
}

/// The CPUs this process may run on.
struct Cpus {
    list: [u32; MAX_THREADS],
    n: usize,
}

impl Cpus {
    fn get() -> Self {
        let mut list = [0; MAX_THREADS];
        let n = sys::affinity(&mut list);
        Self { list, n }
    }

    /// Fails unless `threads` threads (1..=MAX_THREADS) get a CPU each.
    fn need(&self, threads: usize, what: &str) {
        if threads == 0 || threads > MAX_THREADS {
            fail(format_args!("{what}: {threads} threads (1 to {MAX_THREADS})"));
        }
        if threads > self.n {
            fail(format_args!(
                "{what} needs {threads} CPUs; this process may run on {} ({})",
                self.n,
                List(&self.list[..self.n])
            ));
        }
    }
}

/// A list of CPUs as `0,1,2`.
struct List<'a>(&'a [u32]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, cpu) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}

/// Starts thread `index` running `entry(index)`, pinned (by itself) to `cpu`.
fn start(entry: extern "C" fn(usize) -> !, index: usize, cpu: u32) {
    CPU[index].store(cpu, Ordering::Relaxed);
    sys::spawn(entry, index, &TIDS[index]);
}

/// Waits for threads `range` to end.
fn join_all(range: core::ops::Range<usize>, what: &str) {
    for i in range {
        sys::join(&TIDS[i], deadline(), what);
    }
}

/// Opens a measured region: prints `bench-start NAME` when benchmarking.
fn region_start(bench: Option<&str>) -> u64 {
    if let Some(name) = bench {
        say!("bench-start {name}");
    }
    sys::now_ns()
}

/// Closes the region opened at `start`; prints `bench-end NAME` and the bench's result
/// line when benchmarking. Returns its nanoseconds.
fn region_end(bench: Option<&str>, start: u64, iterations: u64) -> u64 {
    let ns = sys::now_ns() - start;
    if let Some(name) = bench {
        say!("bench-end {name}");
        say!("bench: {name} iterations={iterations} ns={ns}");
    }
    ns
}

/// `smpcheck cpus`: how many CPUs, and which.
pub fn cpus() {
    let cpus = Cpus::get();
    if cpus.n == 0 {
        fail(format_args!("sched_getaffinity gave no CPU"));
    }
    say!("smpcheck cpus count={} list={}", cpus.n, List(&cpus.list[..cpus.n]));
}

// ---- burn ---------------------------------------------------------------------------

/// `steps` steps of a xorshift generator folded into a multiply-rotate hash: integer work
/// that no compiler shortens. xtask/src/test.rs computes the same to check the result.
pub fn burn_hash(steps: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for _ in 0..core::hint::black_box(steps) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(23);
    }
    h
}

/// What each burn thread saw.
struct BurnSlot {
    cpu_before: AtomicU32,
    cpu_after: AtomicU32,
    start: AtomicU64,
    end: AtomicU64,
    hash: AtomicU64,
}

static BURN: [BurnSlot; MAX_THREADS] = [const {
    BurnSlot {
        cpu_before: AtomicU32::new(u32::MAX),
        cpu_after: AtomicU32::new(u32::MAX),
        start: AtomicU64::new(0),
        end: AtomicU64::new(0),
        hash: AtomicU64::new(0),
    }
}; MAX_THREADS];
static BURN_STEPS: AtomicU64 = AtomicU64::new(0);
static BURN_GATE: Gate = Gate::new();

extern "C" fn burn_thread(i: usize) -> ! {
    let slot = &BURN[i];
    sys::pin(CPU[i].load(Ordering::Relaxed));
    slot.cpu_before.store(sys::getcpu(), Ordering::Relaxed);
    BURN_GATE.arrive();
    let start = sys::now_ns();
    let hash = burn_hash(BURN_STEPS.load(Ordering::Relaxed));
    let end = sys::now_ns();
    slot.cpu_after.store(sys::getcpu(), Ordering::Relaxed);
    slot.start.store(start, Ordering::Relaxed);
    slot.end.store(end, Ordering::Relaxed);
    slot.hash.store(hash, Ordering::Release);
    sys::exit_thread(0)
}

/// `smpcheck burn THREADS WORK`: THREADS threads on as many CPUs, WORK million hash steps
/// each. Checks that each ran on its own CPU throughout, that they all ran at once (every
/// thread started before any finished) and that all hashes agree.
pub fn burn(threads: usize, work: u64, bench: Option<&str>) {
    let cpus = Cpus::get();
    cpus.need(threads, "burn");
    BURN_STEPS.store(work.saturating_mul(1_000_000), Ordering::Relaxed);
    for i in 0..threads {
        start(burn_thread, i, cpus.list[i]);
    }
    BURN_GATE.wait_for(threads);
    let t0 = region_start(bench);
    BURN_GATE.open();
    join_all(0..threads, "a burn thread");
    let ns = region_end(bench, t0, threads as u64 * work);
    fence(Ordering::Acquire);

    let hash = BURN[0].hash.load(Ordering::Relaxed);
    let (mut latest_start, mut earliest_end) = (0, u64::MAX);
    for (i, slot) in BURN[..threads].iter().enumerate() {
        let want = cpus.list[i];
        let (before, after) =
            (slot.cpu_before.load(Ordering::Relaxed), slot.cpu_after.load(Ordering::Relaxed));
        if before != want || after != want {
            fail(format_args!(
                "burn thread {i}, pinned to CPU {want}, ran on CPU {before} then {after}"
            ));
        }
        let h = slot.hash.load(Ordering::Relaxed);
        if h != hash {
            fail(format_args!(
                "burn thread {i} (CPU {want}) computed {h:016x}, thread 0 {hash:016x}"
            ));
        }
        latest_start = latest_start.max(slot.start.load(Ordering::Relaxed));
        earliest_end = earliest_end.min(slot.end.load(Ordering::Relaxed));
    }
    if latest_start >= earliest_end {
        fail(format_args!(
            "the burn threads did not all run at once: one ended {} ns before another started",
            latest_start - earliest_end
        ));
    }
    say!(
        "smpcheck burn threads={threads} work={work} ns={ns} hash={hash:016x} cpus={} overlap=yes",
        List(&cpus.list[..threads])
    );
}

// ---- shootdown ----------------------------------------------------------------------

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;
/// The first word of a filled page ("SHOOTDWN").
const MAGIC: u64 = 0x5348_4F4F_5444_574E;
/// Pages each churn thread maps at a time.
const CHURN_PAGES: usize = 4;

/// Word `i` (2..) of the page of generation `gen`.
fn pattern(generation: u64, i: usize) -> u64 {
    generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64) << 40 ^ i as u64
}

/// The replaced page's address.
static PAGE_AT: AtomicUsize = AtomicUsize::new(0);
/// A sequence count: odd while the writer replaces and fills the page, `2 * generation`
/// once generation `generation` is in place.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// The last generation each reader checked (index: the reader's thread index).
static SEEN: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static DONE: AtomicBool = AtomicBool::new(false);
static ITERS: AtomicU64 = AtomicU64::new(0);
static READERS: AtomicUsize = AtomicUsize::new(0);
/// Pages checked by readers, and churn iterations completed.
static CHECKED: AtomicU64 = AtomicU64::new(0);
static CHURNED: AtomicU64 = AtomicU64::new(0);
static REPLACE_GATE: Gate = Gate::new();
static CHURN_GATE: Gate = Gate::new();
/// Where the churn threads start in [`TIDS`].
static CHURN_BASE: AtomicUsize = AtomicUsize::new(0);
/// The generation at which the writer simulates a stale translation (`--inject-stale`):
/// it publishes the generation without replacing the page, so the readers find the
/// previous generation's page. 0: never.
static STALE_AT: AtomicU64 = AtomicU64::new(0);

/// Checks that the fresh page at `p` reads as zeros, then fills it with generation
/// `generation` (the magic last).
fn fill(p: *mut u64, generation: u64) {
    for w in 0..WORDS {
        // SAFETY: `p` is a page of ours, mapped, WORDS words long.
        let v = unsafe { read_volatile(p.add(w)) };
        if v != 0 {
            fail(format_args!(
                "generation {generation}: the writer (CPU {}) read {v:#x} in word {w} of a fresh \
                 page at {:#x}, not 0 (a stale translation?)",
                sys::getcpu(),
                p as usize
            ));
        }
    }
    // SAFETY: as above.
    unsafe {
        for w in 2..WORDS {
            write_volatile(p.add(w), pattern(generation, w));
        }
        write_volatile(p.add(1), generation);
        write_volatile(p, MAGIC);
    }
}

/// Thread 0 of the replace phase: replaces the page, publishes the new generation and
/// waits until every reader has checked it. The old page goes away with a TLB shootdown of
/// every CPU that may cache it, and the replacement is atomic (the readers never fault).
/// Odd generations replace it with a fresh anonymous page (`mmap` MAP_FIXED), which the
/// writer then checks reads as zeros and fills in place: a reader's read may have mapped
/// the shared zero page meanwhile, which the first write replaces (another shootdown).
/// But the page freed by the replacement is likely the one the fill then gets, which would
/// hide a translation left stale by a missed shootdown; so even generations fill a fresh
/// page elsewhere first and move it over the old one (`mremap` MREMAP_FIXED): the new page
/// was allocated while the old one was in use, so a stale translation finds the old
/// generation or whatever the freed page became, never the new one.
extern "C" fn writer(i: usize) -> ! {
    sys::pin(CPU[i].load(Ordering::Relaxed));
    REPLACE_GATE.arrive();
    let page = PAGE_AT.load(Ordering::Relaxed);
    let readers = READERS.load(Ordering::Relaxed);
    for generation in 1..=ITERS.load(Ordering::Relaxed) {
        let stale = generation == STALE_AT.load(Ordering::Relaxed);
        let moved = generation % 2 == 0;
        let source = if moved && !stale {
            // SAFETY: a fresh mapping, used only here until it is moved.
            let at = match unsafe { sys::mmap_anonymous(0, PAGE, 0) } {
                Ok(at) => at,
                Err(e) => fail(format_args!("mmap failed ({e})")),
            };
            fill(at as *mut u64, generation);
            at
        } else {
            0
        };
        SEQ.store(2 * generation - 1, Ordering::Release);
        fence(Ordering::SeqCst);
        if stale {
            // Published without a replacement: the readers must catch it (a check of the
            // checker, `--inject-stale`).
        } else if moved {
            // SAFETY: the readers access the page only through raw pointers and volatile
            // reads, and the move replaces it atomically.
            let r = unsafe { sys::mremap_fixed(source, PAGE, page) };
            if r != page as isize {
                fail(format_args!("mremap of {source:#x} to {page:#x} gave {r:#x}"));
            }
        } else {
            // SAFETY: as above; MAP_FIXED replaces the mapping atomically.
            match unsafe { sys::mmap_anonymous(page, PAGE, 0) } {
                Ok(at) if at == page => {}
                Ok(at) => fail(format_args!("MAP_FIXED at {page:#x} mapped {at:#x}")),
                Err(e) => fail(format_args!("mmap MAP_FIXED failed ({e})")),
            }
            fill(page as *mut u64, generation);
        }
        SEQ.store(2 * generation, Ordering::Release);
        let mut spins = 0u32;
        for seen in &SEEN[1..=readers] {
            while seen.load(Ordering::Acquire) < generation {
                spin_loop();
                spins = spins.wrapping_add(1);
                if spins & 0xfff == 0 {
                    check_deadline("the readers to check a generation");
                }
            }
        }
    }
    DONE.store(true, Ordering::Release);
    sys::exit_thread(0)
}

/// A reader of the replace phase: whenever a new generation is published, checks every
/// word of the page; in between keeps reading it (its translation stays in this CPU's
/// TLB, so the next replacement must shoot it down).
extern "C" fn reader(r: usize) -> ! {
    let cpu = CPU[r].load(Ordering::Relaxed);
    sys::pin(cpu);
    REPLACE_GATE.arrive();
    let p = PAGE_AT.load(Ordering::Relaxed) as *const u64;
    let mut last = 0;
    let mut spins = 0u32;
    while !DONE.load(Ordering::Acquire) {
        let s1 = SEQ.load(Ordering::Acquire);
        if s1 % 2 == 1 || s1 / 2 == last {
            // SAFETY: the page is always mapped (MAP_FIXED replaces it atomically).
            let _ = unsafe { read_volatile(p.add(1)) };
            spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0xffff == 0 {
                check_deadline("the writer");
            }
            continue;
        }
        let generation = s1 / 2;
        let mut wrong = None;
        for w in 0..WORDS {
            // SAFETY: as above.
            let v = unsafe { read_volatile(p.add(w)) };
            let want = match w {
                0 => MAGIC,
                1 => generation,
                _ => pattern(generation, w),
            };
            if v != want && wrong.is_none() {
                wrong = Some((w, v, want));
            }
        }
        fence(Ordering::Acquire);
        if SEQ.load(Ordering::Relaxed) != s1 {
            continue; // the writer moved on meanwhile (it waits for the readers: never)
        }
        if let Some((w, v, want)) = wrong {
            let stale =
                if w == 1 { " (a page of another generation: a stale translation)" } else { "" };
            fail(format_args!(
                "reader on CPU {cpu}, generation {generation}: word {w} is {v:#x}, expected \
                 {want:#x}{stale}"
            ));
        }
        last = generation;
        CHECKED.fetch_add(1, Ordering::Relaxed);
        SEEN[r].store(generation, Ordering::Release);
    }
    sys::exit_thread(0)
}

/// A thread of the churn phase: maps fresh memory, checks that (a page of) it reads as
/// zeros, fills it with its own tag, checks it, unmaps it; ITERS times. Unmapping shoots
/// down the other CPUs.
extern "C" fn churn(i: usize) -> ! {
    let cpu = CPU[i].load(Ordering::Relaxed);
    sys::pin(cpu);
    CHURN_GATE.arrive();
    let len = CHURN_PAGES * PAGE;
    let words = CHURN_PAGES * WORDS;
    let me = (i - CHURN_BASE.load(Ordering::Relaxed)) as u64;
    for it in 0..ITERS.load(Ordering::Relaxed) {
        // SAFETY: a fresh mapping, used only here.
        let at = match unsafe { sys::mmap_anonymous(0, len, 0) } {
            Ok(at) => at,
            Err(e) => fail(format_args!("mmap failed ({e})")),
        };
        let p = at as *mut u64;
        let tag = me << 56 | it << 24;
        // SAFETY: `p` is the fresh mapping of `words` words, this thread's alone.
        unsafe {
            // One page (a different one each round) is read before it is written: a read
            // maps the shared zero page, the write then replaces it (one more shootdown).
            let first = it as usize % CHURN_PAGES * WORDS;
            for w in first..first + WORDS {
                let v = read_volatile(p.add(w));
                if v != 0 {
                    fail(format_args!(
                        "churn thread {me} (CPU {cpu}), iteration {it}: fresh memory at {at:#x} \
                         has {v:#x} in word {w}"
                    ));
                }
            }
            for w in 0..words {
                write_volatile(p.add(w), tag | w as u64);
            }
            for w in 0..words {
                let v = read_volatile(p.add(w));
                if v != tag | w as u64 {
                    fail(format_args!(
                        "churn thread {me} (CPU {cpu}), iteration {it}: word {w} at {at:#x} is \
                         {v:#x}, expected {:#x}",
                        tag | w as u64
                    ));
                }
            }
            let r = sys::munmap(at, len);
            if r != 0 {
                fail(format_args!("munmap failed ({r})"));
            }
        }
        CHURNED.fetch_add(1, Ordering::Relaxed);
    }
    sys::exit_thread(0)
}

/// `smpcheck shootdown THREADS ITERS`: the replace phase (a writer and THREADS-1 readers,
/// ITERS generations), then the churn phase (THREADS threads, ITERS rounds each).
/// `inject_stale`: the writer skips the replacement of generation ITERS/2 + 1 (see
/// [`STALE_AT`]), and the run must fail.
pub fn shootdown(threads: usize, iters: u64, inject_stale: bool, bench: Option<&str>) {
    let cpus = Cpus::get();
    cpus.need(threads, "shootdown");
    if threads < 2 || threads * 2 > MAX_THREADS {
        fail(format_args!("shootdown: {threads} threads (2 to {})", MAX_THREADS / 2));
    }
    // SAFETY: a fresh mapping; only the threads below use it.
    let page = match unsafe { sys::mmap_anonymous(0, PAGE, 0) } {
        Ok(at) => at,
        Err(e) => fail(format_args!("mmap failed ({e})")),
    };
    PAGE_AT.store(page, Ordering::Relaxed);
    ITERS.store(iters, Ordering::Relaxed);
    READERS.store(threads - 1, Ordering::Relaxed);
    if inject_stale {
        STALE_AT.store(iters / 2 + 1, Ordering::Relaxed);
    }
    CHURN_BASE.store(threads, Ordering::Relaxed);
    start(writer, 0, cpus.list[0]);
    for r in 1..threads {
        start(reader, r, cpus.list[r]);
    }
    for i in 0..threads {
        start(churn, threads + i, cpus.list[i]);
    }
    REPLACE_GATE.wait_for(threads);
    CHURN_GATE.wait_for(threads);

    let t0 = region_start(bench);
    REPLACE_GATE.open();
    join_all(0..threads, "a thread replacing or reading the page");
    let replace_ns = sys::now_ns() - t0;
    CHURN_GATE.open();
    join_all(threads..2 * threads, "a churn thread");
    let ns = region_end(bench, t0, iters);

    let checked = CHECKED.load(Ordering::Relaxed);
    let churned = CHURNED.load(Ordering::Relaxed);
    let (want_checked, want_churned) = ((threads as u64 - 1) * iters, threads as u64 * iters);
    if checked != want_checked || churned != want_churned {
        fail(format_args!(
            "shootdown: {checked} pages checked (expected {want_checked}), {churned} churn \
             rounds (expected {want_churned})"
        ));
    }
    say!(
        "smpcheck shootdown threads={threads} iters={iters} checked={checked} churned={churned} \
         replace-ns={replace_ns} churn-ns={} ns={ns} cpus={}",
        ns - replace_ns,
        List(&cpus.list[..threads])
    );
}

// ---- pingpong -----------------------------------------------------------------------

/// Whose turn it is: 0 while thread 0 waits, 1 while thread 1 waits.
static TURN: AtomicU32 = AtomicU32::new(0);
static ROUNDS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static PING_CPU_AFTER: [AtomicU32; 2] = [const { AtomicU32::new(u32::MAX) }; 2];
static PING_GATE: Gate = Gate::new();

/// Sleeps on [`TURN`] until it is `want`.
fn wait_turn(want: u32) {
    loop {
        let turn = TURN.load(Ordering::Acquire);
        if turn == want {
            return;
        }
        if sys::futex_wait(&TURN, turn, 100, false) == -ETIMEDOUT {
            check_deadline("the other side of the ping-pong");
        }
    }
}

extern "C" fn pinger(side: usize) -> ! {
    sys::pin(CPU[side].load(Ordering::Relaxed));
    PING_GATE.arrive();
    let iters = ITERS.load(Ordering::Relaxed);
    for _ in 0..iters {
        if side == 0 {
            TURN.store(1, Ordering::Release);
            sys::futex_wake(&TURN, 1);
            wait_turn(0);
        } else {
            wait_turn(1);
            TURN.store(0, Ordering::Release);
            sys::futex_wake(&TURN, 1);
        }
        ROUNDS[side].fetch_add(1, Ordering::Relaxed);
    }
    PING_CPU_AFTER[side].store(sys::getcpu(), Ordering::Relaxed);
    sys::exit_thread(0)
}

/// `smpcheck pingpong ITERS`: two threads on the first two CPUs hand a turn back and forth
/// through a futex, ITERS round trips; each hand-over wakes a thread sleeping on the other
/// CPU.
pub fn pingpong(iters: u64, bench: Option<&str>) {
    let cpus = Cpus::get();
    cpus.need(2, "pingpong");
    ITERS.store(iters, Ordering::Relaxed);
    start(pinger, 0, cpus.list[0]);
    start(pinger, 1, cpus.list[1]);
    PING_GATE.wait_for(2);
    let t0 = region_start(bench);
    PING_GATE.open();
    join_all(0..2, "a ping-pong thread");
    let ns = region_end(bench, t0, iters);
    for side in 0..2 {
        let rounds = ROUNDS[side].load(Ordering::Relaxed);
        let cpu = PING_CPU_AFTER[side].load(Ordering::Relaxed);
        if rounds != iters || cpu != cpus.list[side] {
            fail(format_args!(
                "ping-pong thread {side}: {rounds} round trips (expected {iters}) on CPU {cpu} \
                 (pinned to {})",
                cpus.list[side]
            ));
        }
    }
    say!(
        "smpcheck pingpong iters={iters} round-trips={iters} ns={ns} ns-per-round-trip={} cpus={}",
        ns / iters.max(1),
        List(&cpus.list[..2])
    );
}
