/* `ctxsw [N]`: N round trips of one byte between two processes over two pipes (default
 * 100,000): two context switches each on a single CPU. */
#include <sys/wait.h>

#include "bench.h"

static void xfer(int fd, char *c, int out)
{
    for (;;) {
        ssize_t r = out ? write(fd, c, 1) : read(fd, c, 1);
        if (r == 1)
            return;
        if (r < 0 && errno == EINTR)
            continue;
        bench_fail(out ? "pipe write" : "pipe read");
    }
}

int main(int argc, char **argv)
{
    uint64_t n = bench_arg(argc, argv, 1, 100000);
    int ping[2], pong[2];
    bench_name = "ctxsw";
    if (pipe(ping) || pipe(pong))
        bench_fail("pipe");
    pid_t pid = fork();
    if (pid < 0)
        bench_fail("fork");
    if (pid == 0) {
        char c;
        for (uint64_t i = 0; i < n; i++) {
            xfer(ping[0], &c, 0);
            xfer(pong[1], &c, 1);
        }
        _exit(0);
    }
    char c = 'x';
    uint64_t start = bench_start("ctxsw");
    for (uint64_t i = 0; i < n; i++) {
        xfer(ping[1], &c, 1);
        xfer(pong[0], &c, 0);
    }
    bench_end(start, n, "");
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_fail("the partner process failed");
    return 0;
}
