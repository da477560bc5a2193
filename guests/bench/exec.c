/* `exec [N]`: N times fork() and execute this (static) program again with `--exit`, which
 * exits at once; the parent waits (default 500). */
#include <sys/wait.h>

#include "bench.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--exit") == 0)
        _exit(0);
    uint64_t n = bench_arg(argc, argv, 1, 500);
    char *child_argv[] = {argv[0], "--exit", NULL};
    uint64_t start = bench_start("exec");
    for (uint64_t i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            bench_fail("fork");
        if (pid == 0) {
            execv(argv[0], child_argv);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bench_fail("the child did not exec and exit 0");
    }
    bench_end(start, n, "");
    return 0;
}
