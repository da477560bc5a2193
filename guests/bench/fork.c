/* `fork [N]`: N times fork(), the child _exit(0)s, the parent waits (default 2,000). */
#include <sys/wait.h>

#include "bench.h"

int main(int argc, char **argv)
{
    uint64_t n = bench_arg(argc, argv, 1, 2000);
    uint64_t start = bench_start("fork");
    for (uint64_t i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            bench_fail("fork");
        if (pid == 0)
            _exit(0);
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bench_fail("waitpid");
    }
    bench_end(start, n, "");
    return 0;
}
