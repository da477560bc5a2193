/* `syscall [N]`: N getppid() calls (default 1,000,000), the cheapest round trip into the
 * kernel. */
#include "bench.h"

int main(int argc, char **argv)
{
    uint64_t n = bench_arg(argc, argv, 1, 1000000);
    volatile pid_t sink = 0;
    uint64_t start = bench_start("syscall");
    for (uint64_t i = 0; i < n; i++)
        sink = getppid();
    bench_end(start, n, "");
    return sink < 0;
}
