/* `net ADDRESS PORT BYTES`: connects to ADDRESS:PORT over TCP and reads until the server
 * closes; the server (xtask, on the host) sends BYTES bytes. iterations = bytes read. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "bench.h"

int main(int argc, char **argv)
{
    bench_name = "net";
    if (argc < 4)
        bench_fail("usage: net ADDRESS PORT BYTES");
    uint64_t port = bench_arg(argc, argv, 2, 0), want = bench_arg(argc, argv, 3, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
        bench_fail("bad address");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        bench_fail("socket");
    static char buf[1 << 16];
    uint64_t got = 0;
    uint64_t start = bench_start("net");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        bench_fail("connect");
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            bench_fail("read");
        if (r == 0)
            break;
        got += (uint64_t)r;
    }
    if (got != want) {
        errno = 0;
        bench_fail("short transfer");
    }
    bench_end(start, got, "");
    close(fd);
    return 0;
}
