/* `pagefault [MiB]`: writes one byte to every 4 KiB page of a fresh anonymous mapping of
 * MiB mebibytes (default 64), one page fault each; iterations = pages. */
#include <sys/mman.h>

#include "bench.h"

int main(int argc, char **argv)
{
    uint64_t mib = bench_arg(argc, argv, 1, 64);
    size_t len = (size_t)mib << 20, pages = len / 4096;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_fail("mmap");
    /* Base pages only: one fault per 4 KiB page even where huge pages are enabled. */
    madvise(p, len, MADV_NOHUGEPAGE);
    uint64_t start = bench_start("pagefault");
    for (size_t i = 0; i < pages; i++)
        ((volatile unsigned char *)p)[i * 4096] = (unsigned char)i;
    bench_end(start, pages, "");
    return 0;
}
