/* `compute [MiB]`: hashes MiB mebibytes (default 1024) as that many passes over a 1 MiB buffer of
 * generated data: user-mode work only (the buffer is faulted in before the region).
 * iterations = bytes hashed; the hash is printed so the work cannot be skipped. */
#include "bench.h"

#define BUF_WORDS (1u << 17) /* 1 MiB */

static uint64_t buf[BUF_WORDS];

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

int main(int argc, char **argv)
{
    uint64_t mib = bench_arg(argc, argv, 1, 1024);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = 0; i < BUF_WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = x;
    }
    uint64_t h = 0x243f6a8885a308d3ull;
    uint64_t start = bench_start("compute");
    for (uint64_t pass = 0; pass < mib; pass++) {
        for (uint32_t i = 0; i < BUF_WORDS; i++) {
            uint64_t k = buf[i] * 0x87c37b91114253d5ull;
            k = rotl(k, 31) * 0x4cf5ad432745937full;
            h = rotl(h ^ k, 27) * 5 + 0x52dce729 + pass;
        }
    }
    char extra[40];
    snprintf(extra, sizeof extra, " hash=%016llx", (unsigned long long)h);
    bench_end(start, mib << 20, extra);
    return 0;
}
