/* `disk DEVICE [MiB]`: reads MiB mebibytes (default 64) from the start of DEVICE with
 * O_DIRECT in 1 MiB requests (no page cache: every byte comes from the virtio disk).
 * iterations = bytes read. The bench disk holds, at the start of every 4 KiB block, the
 * 64-bit little-endian word 0xB10C000000000000 | block number; each block is checked. */
#define _GNU_SOURCE
#include <fcntl.h>

#include "bench.h"

#define CHUNK (1u << 20)

int main(int argc, char **argv)
{
    bench_name = "disk";
    if (argc < 2)
        bench_fail("usage: disk DEVICE [MiB]");
    uint64_t mib = bench_arg(argc, argv, 2, 64);
    uint64_t total = mib << 20;
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0)
        bench_fail("open");
    void *mem;
    if (posix_memalign(&mem, 4096, CHUNK))
        bench_fail("posix_memalign");
    unsigned char *buf = mem;
    memset(buf, 0, CHUNK);
    uint64_t done = 0;
    uint64_t start = bench_start("disk");
    while (done < total) {
        ssize_t r = pread(fd, buf, CHUNK, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || r % 4096)
            bench_fail("read");
        for (ssize_t off = 0; off < r; off += 4096) {
            uint64_t word;
            memcpy(&word, buf + off, 8);
            if (word != (0xB10C000000000000ull | ((done + (uint64_t)off) / 4096))) {
                errno = 0;
                bench_fail("unexpected data on the disk");
            }
        }
        done += (uint64_t)r;
    }
    bench_end(start, done, "");
    close(fd);
    return 0;
}
