/*
 * The `boot` workload: run as the kernel's first process (`rdinit=/bench/init`), it reads
 * the `time` CSR, which counts from the machine's start (firmware included), prints
 *
 *     bench-boot ticks=T
 *
 * and executes the guest's real /init in its place.
 */
#include "bench.h"

int main(int argc, char **argv, char **envp)
{
    uint64_t ticks = bench_rdtime();
    bench_name = "boot";
    bench_say("bench-boot ticks=%llu\n", (unsigned long long)ticks);
    (void)argc;
    argv[0] = "/init";
    execve("/init", argv, envp);
    bench_fail("executing /init");
    return 1;
}
