/* Benchmark helper: N fork+exec+wait of a program (default /bin/true), each timed.
 *   execstorm N OUT.json [PROGRAM]
 * Writes {"n", "failures", "total_ns", "mean_ns", "p50_ns", "p99_ns"} to OUT.json. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: execstorm N OUT.json [PROGRAM]\n");
        return 2;
    }
    int n = atoi(argv[1]);
    char *prog = argc > 3 ? argv[3] : "/bin/true";
    char *child_argv[] = {prog, NULL};
    long long *t = calloc((size_t)n, sizeof *t);
    int failures = 0;
    long long start = now_ns();
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        pid_t pid = fork();
        if (pid == 0) {
            execve(prog, child_argv, environ);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
        t[i] = now_ns() - t0;
    }
    long long total = now_ns() - start;
    qsort(t, (size_t)n, sizeof *t, cmp);
    FILE *f = fopen(argv[2], "w");
    if (!f) return 1;
    fprintf(f, "{\"n\":%d,\"failures\":%d,\"total_ns\":%lld,\"mean_ns\":%lld,\"p50_ns\":%lld,\"p99_ns\":%lld}\n",
            n, failures, total, total / n, t[n / 2], t[(n * 99) / 100]);
    fclose(f);
    return failures != 0;
}
