/*
 * Shared by the Linux workloads of `cargo xtask bench` (docs/performance.md). Each
 * workload is one static program: it takes its size from argv, brackets the measured
 * region with `bench-start NAME` / `bench-end NAME` lines and ends with
 *
 *     bench: NAME iterations=N ns=T
 *
 * T is CLOCK_MONOTONIC nanoseconds across the region: real time in a wall-time run, and
 * in an instruction-count run (QEMU -icount shift=0) instructions executed by the whole
 * machine. Errors print `bench-error NAME: ...` and exit 1.
 */
#ifndef BENCH_H
#define BENCH_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *bench_name = "?";

/* Writes one line to stdout with a single write(2), unbuffered. */
static inline void bench_say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    const char *p = line;
    while (n > 0) {
        ssize_t w = write(1, p, (size_t)n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (int)w;
    }
}

/* Reports `what` (with errno's text when set) and exits 1. */
static inline void bench_fail(const char *what)
{
    int e = errno;
    bench_say("bench-error %s: %s%s%s\n", bench_name, what, e ? ": " : "", e ? strerror(e) : "");
    exit(1);
}

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        bench_fail("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The `time` CSR: ticks of the timebase since the machine started. */
static inline uint64_t bench_rdtime(void)
{
    uint64_t t;
    __asm__ volatile("rdtime %0" : "=r"(t));
    return t;
}

/* argv[i] as a number, or `fallback` when absent. */
static inline uint64_t bench_arg(int argc, char **argv, int i, uint64_t fallback)
{
    if (i >= argc)
        return fallback;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 0);
    if (errno || *end || end == argv[i]) {
        errno = 0;
        bench_fail("bad numeric argument");
    }
    return v;
}

/* Names the workload and opens the measured region; returns its start time. */
static inline uint64_t bench_start(const char *name)
{
    bench_name = name;
    bench_say("bench-start %s\n", name);
    return bench_now_ns();
}

/* Closes the measured region opened at `start` and prints the result line; `extra` (may
 * be empty) is appended to it, e.g. " hash=...". */
static inline void bench_end(uint64_t start, uint64_t iterations, const char *extra)
{
    uint64_t ns = bench_now_ns() - start;
    bench_say("bench-end %s\n", bench_name);
    bench_say("bench: %s iterations=%llu ns=%llu%s\n", bench_name, (unsigned long long)iterations,
              (unsigned long long)ns, extra);
}

#endif
