//! Raw Linux system calls (riscv64: `ecall` with the number in a7, arguments in a0..a5,
//! the result or `-errno` in a0), threads made with `clone`, and line output.

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

// The generic system-call numbers (include/uapi/asm-generic/unistd.h), which riscv64 uses.
const SYS_WRITE: usize = 64;
const SYS_EXIT: usize = 93;
const SYS_EXIT_GROUP: usize = 94;
const SYS_FUTEX: usize = 98;
const SYS_CLOCK_GETTIME: usize = 113;
const SYS_SCHED_SETAFFINITY: usize = 122;
const SYS_SCHED_GETAFFINITY: usize = 123;
const SYS_GETCPU: usize = 168;
const SYS_MUNMAP: usize = 215;
const SYS_MREMAP: usize = 216;
const SYS_CLONE: usize = 220;
const SYS_MMAP: usize = 222;

const EINTR: isize = 4;
/// What [`futex_wait`] returns when its timeout passed.
pub const ETIMEDOUT: isize = 110;

pub const PROT_READ: usize = 1;
pub const PROT_WRITE: usize = 2;
pub const MAP_PRIVATE: usize = 0x02;
pub const MAP_FIXED: usize = 0x10;
pub const MAP_ANONYMOUS: usize = 0x20;
const MAP_STACK: usize = 0x20000;

const FUTEX_WAIT: usize = 0;
const FUTEX_WAKE: usize = 1;
const FUTEX_PRIVATE_FLAG: usize = 128;

const CLOCK_MONOTONIC: usize = 1;

const CLONE_VM: usize = 0x100;
const CLONE_FS: usize = 0x200;
const CLONE_FILES: usize = 0x400;
const CLONE_SIGHAND: usize = 0x800;
const CLONE_THREAD: usize = 0x10000;
const CLONE_SYSVSEM: usize = 0x40000;
const CLONE_PARENT_SETTID: usize = 0x100000;
const CLONE_CHILD_CLEARTID: usize = 0x200000;

/// A system call with up to six arguments; returns a0 (`-errno` on failure).
///
/// # Safety
///
/// The call must not break memory safety: pointers passed must be valid for what the call
/// does with them, and calls that change the address space must not unmap memory in use.
#[inline(always)]
pub unsafe fn syscall(n: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: `ecall` from U-mode enters the kernel, which reads a0..a5 and a7 and writes a0
    // only; the caller vouches for what the call does to memory.
    unsafe {
        asm!(
            "ecall",
            inlateout("a0") args[0] as isize => ret,
            in("a1") args[1],
            in("a2") args[2],
            in("a3") args[3],
            in("a4") args[4],
            in("a5") args[5],
            in("a7") n,
            options(nostack),
        );
    }
    ret
}

/// Writes all of `bytes` to file descriptor `fd` (retrying short writes and EINTR).
pub fn write_all(fd: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the kernel only reads `bytes.len()` bytes from `bytes`.
        let n = unsafe { syscall(SYS_WRITE, [fd, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0]) };
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Ends the whole process (every thread) with `code`.
pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: ending the process touches no memory of ours.
        unsafe { syscall(SYS_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

/// Ends the calling thread only.
pub fn exit_thread(code: i32) -> ! {
    loop {
        // SAFETY: the thread ends; its stack is never freed, so nothing dangles.
        unsafe { syscall(SYS_EXIT, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds (under QEMU `-icount shift=0`: instructions).
pub fn now_ns() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: the kernel writes one `struct timespec` (two 64-bit words) to `ts`.
    let r = unsafe {
        syscall(SYS_CLOCK_GETTIME, [CLOCK_MONOTONIC, ts.as_mut_ptr() as usize, 0, 0, 0, 0])
    };
    if r != 0 {
        fail(format_args!("clock_gettime failed ({r})"));
    }
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

/// The CPU the calling thread runs on (`getcpu`).
pub fn getcpu() -> u32 {
    let mut cpu = 0u32;
    let mut node = 0u32;
    // SAFETY: the kernel writes one u32 to each of `cpu` and `node`.
    let r =
        unsafe { syscall(SYS_GETCPU, [&raw mut cpu as usize, &raw mut node as usize, 0, 0, 0, 0]) };
    if r != 0 {
        fail(format_args!("getcpu failed ({r})"));
    }
    cpu
}

/// A CPU set as `sched_{get,set}affinity` take it: up to 1024 CPUs.
pub type CpuMask = [u64; 16];

/// The CPUs the calling thread may run on, in order, into `out`; returns how many.
pub fn affinity(out: &mut [u32]) -> usize {
    let mut mask: CpuMask = [0; 16];
    // SAFETY: the kernel writes at most `size_of_val(&mask)` bytes to `mask`.
    let r = unsafe {
        syscall(
            SYS_SCHED_GETAFFINITY,
            [0, core::mem::size_of_val(&mask), mask.as_mut_ptr() as usize, 0, 0, 0],
        )
    };
    if r < 0 {
        fail(format_args!("sched_getaffinity failed ({r})"));
    }
    let mut n = 0;
    for cpu in 0..mask.len() as u32 * 64 {
        if mask[cpu as usize / 64] >> (cpu % 64) & 1 == 1 && n < out.len() {
            out[n] = cpu;
            n += 1;
        }
    }
    n
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: u32) {
    let mut mask: CpuMask = [0; 16];
    mask[cpu as usize / 64] = 1 << (cpu % 64);
    // SAFETY: the kernel reads `size_of_val(&mask)` bytes from `mask`.
    let r = unsafe {
        syscall(
            SYS_SCHED_SETAFFINITY,
            [0, core::mem::size_of_val(&mask), mask.as_ptr() as usize, 0, 0, 0],
        )
    };
    if r != 0 {
        fail(format_args!("sched_setaffinity to CPU {cpu} failed ({r})"));
    }
}

/// `mmap` of anonymous private read-write memory: anywhere (`at` 0) or replacing what is
/// at `at` (`MAP_FIXED`). Returns the address or `-errno`.
///
/// # Safety
///
/// With `at` non-zero, nothing may hold references into the pages replaced.
pub unsafe fn mmap_anonymous(at: usize, len: usize, extra_flags: usize) -> Result<usize, isize> {
    let fixed = if at != 0 { MAP_FIXED } else { 0 };
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | fixed | extra_flags;
    // SAFETY: a new anonymous mapping; the caller vouches for a replaced one.
    let r = unsafe { syscall(SYS_MMAP, [at, len, PROT_READ | PROT_WRITE, flags, usize::MAX, 0]) };
    if (-4095..0).contains(&r) { Err(r) } else { Ok(r as usize) }
}

/// Unmaps `len` bytes at `at`.
///
/// # Safety
///
/// Nothing may use the memory afterwards.
pub unsafe fn munmap(at: usize, len: usize) -> isize {
    // SAFETY: the caller vouches that the memory is no longer used.
    unsafe { syscall(SYS_MUNMAP, [at, len, 0, 0, 0, 0]) }
}

/// Moves the `len` bytes mapped at `from` to `to`, replacing what was mapped there
/// (`mremap` with MREMAP_MAYMOVE | MREMAP_FIXED). Returns `to` or `-errno`.
///
/// # Safety
///
/// Nothing may hold references into the memory at `from` or the pages replaced at `to`.
pub unsafe fn mremap_fixed(from: usize, len: usize, to: usize) -> isize {
    const MREMAP_MAYMOVE: usize = 1;
    const MREMAP_FIXED: usize = 2;
    // SAFETY: the caller vouches for both ranges.
    unsafe { syscall(SYS_MREMAP, [from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to, 0]) }
}

/// Sleeps while `word` holds `expected`, for at most `timeout_ms` (spurious returns are
/// fine: callers loop); returns 0 or `-errno` (`-ETIMEDOUT` when the time passed).
/// `shared`: a futex the kernel itself wakes (CLONE_CHILD_CLEARTID wakes without
/// FUTEX_PRIVATE_FLAG).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: u64, shared: bool) -> isize {
    let op = if shared { FUTEX_WAIT } else { FUTEX_WAIT | FUTEX_PRIVATE_FLAG };
    let ts = [(timeout_ms / 1000) as i64, (timeout_ms % 1000 * 1_000_000) as i64];
    // SAFETY: the kernel reads the futex word and the relative timeout.
    unsafe {
        syscall(
            SYS_FUTEX,
            [word.as_ptr() as usize, op, expected as usize, ts.as_ptr() as usize, 0, 0],
        )
    }
}

/// Wakes up to `n` threads sleeping on `word` (a private futex).
pub fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: the kernel only looks the futex word's address up.
    unsafe {
        syscall(
            SYS_FUTEX,
            [word.as_ptr() as usize, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n as usize, 0, 0, 0],
        )
    };
}

global_asm!(
    // smpcheck_clone(flags, stack_top, ptid, ctid): stack_top holds the entry function at
    // 0(sp) and its argument at 8(sp). riscv64 uses CLONE_BACKWARDS: clone(flags, newsp,
    // parent_tid, tls, child_tid). The child calls entry(arg) on its stack and never
    // returns here; the parent returns the thread ID (or -errno).
    ".pushsection .text.smpcheck_clone, \"ax\"",
    ".global smpcheck_clone",
    "smpcheck_clone:",
    "    mv a4, a3",
    "    li a3, 0",
    "    li a7, {clone}",
    "    ecall",
    "    bnez a0, 1f",
    "    ld t0, 0(sp)",
    "    ld a0, 8(sp)",
    "    jalr t0",
    "    li a0, 0",
    "    li a7, {exit}",
    "    ecall",
    "1:  ret",
    ".popsection",
    clone = const SYS_CLONE,
    exit = const SYS_EXIT,
);

unsafe extern "C" {
    fn smpcheck_clone(
        flags: usize,
        stack_top: usize,
        ptid: *const AtomicU32,
        ctid: *const AtomicU32,
    ) -> isize;
}

/// The stack of each thread.
const STACK_BYTES: usize = 256 * 1024;

/// Starts a thread (sharing everything, as pthreads do) running `entry(arg)` on a fresh
/// stack. `tid` receives its thread ID and is cleared (with a futex wake) when it exits:
/// [`join`] waits for that. `tid` must outlive the thread.
pub fn spawn(entry: extern "C" fn(usize) -> !, arg: usize, tid: &'static AtomicU32) {
    // SAFETY: a fresh mapping.
    let stack = match unsafe { mmap_anonymous(0, STACK_BYTES, MAP_STACK) } {
        Ok(a) => a,
        Err(e) => fail(format_args!("mmap of a thread stack failed ({e})")),
    };
    let top = stack + STACK_BYTES - 16;
    // SAFETY: `top` and `top + 8` are in the fresh stack mapping, aligned.
    unsafe {
        (top as *mut usize).write(entry as usize);
        ((top + 8) as *mut usize).write(arg);
    }
    tid.store(u32::MAX, Ordering::Relaxed);
    let flags = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
    // SAFETY: the child runs on its own stack (never freed) and only calls `entry`, which
    // never returns; `tid` is 'static.
    let r = unsafe { smpcheck_clone(flags, top, tid, tid) };
    if r <= 0 {
        fail(format_args!("clone failed ({r})"));
    }
}

/// Waits until the thread whose ID word is `tid` has exited, or fails at `deadline_ns`.
pub fn join(tid: &AtomicU32, deadline_ns: u64, what: &str) {
    loop {
        let t = tid.load(Ordering::Acquire);
        if t == 0 {
            return;
        }
        if now_ns() > deadline_ns {
            fail(format_args!("timed out waiting for {what} (thread {t}) to end"));
        }
        let _ = futex_wait(tid, t, 200, true);
    }
}

/// A line of output, built in place and written with one `write`.
pub struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self { buf: [0; 1024], len: 0 }
    }

    /// Writes the line (with a newline) to stdout.
    pub fn emit(&mut self) {
        let _ = self.write_str("\n");
        write_all(1, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints one line (formatted like `format!`) to stdout with one `write`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = $crate::sys::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.emit();
    }};
}

/// Prints `smpcheck: FAIL <message>` and ends the process with status 1.
pub fn fail(message: fmt::Arguments) -> ! {
    let mut line = Line::new();
    let _ = line.write_fmt(format_args!("smpcheck: FAIL {message}"));
    line.emit();
    exit_group(1)
}
