/* Benchmark helper: fork+exec+wait of a program (default /bin/true), each timed.
 *   execstorm N OUT.json [PROGRAM]          N execs, then the summary in OUT.json
 *   execstorm --steps S N DIR [PROGRAM]     S steps of N execs: before step i it reads a byte
 *                                           from the FIFO DIR/go, after it writes DIR/step-i.json
 *                                           and a byte to the FIFO DIR/ready (so that a benchmark
 *                                           can run several containers in lockstep; waiting in a
 *                                           read, an idle container wakes no CPU)
 * A summary is {"n", "failures", "total_ns", "mean_ns", "p50_ns", "p99_ns"}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
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

/* Runs n execs of prog and writes the summary to out; returns the number that failed. */
static int storm(int n, const char *out, char *prog) {
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
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (!f) return n;
    fprintf(f, "{\"n\":%d,\"failures\":%d,\"total_ns\":%lld,\"mean_ns\":%lld,\"p50_ns\":%lld,\"p99_ns\":%lld}\n",
            n, failures, total, total / n, t[n / 2], t[(n * 99) / 100]);
    fclose(f);
    rename(tmp, out); /* the reader never sees half a file */
    free(t);
    return failures;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "--steps")) {
        int steps = atoi(argv[2]), n = atoi(argv[3]), failures = 0;
        const char *dir = argv[4];
        char *prog = argc > 5 ? argv[5] : "/bin/true";
        char go[4096], ready[4096];
        snprintf(go, sizeof go, "%s/go", dir);
        snprintf(ready, sizeof ready, "%s/ready", dir);
        /* O_RDWR: neither open waits for the other end. */
        int go_fd = open(go, O_RDWR | O_CLOEXEC), ready_fd = open(ready, O_RDWR | O_CLOEXEC);
        if (go_fd < 0 || ready_fd < 0) {
            perror("execstorm: opening the FIFOs");
            return 2;
        }
        for (int i = 0; i < steps; i++) {
            char out[4096], c;
            snprintf(out, sizeof out, "%s/step-%d.json", dir, i);
            if (read(go_fd, &c, 1) != 1) return 2;
            failures += storm(n, out, prog);
            if (write(ready_fd, "x", 1) != 1) return 2;
        }
        return failures != 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: execstorm N OUT.json [PROGRAM] | execstorm --steps S N DIR [PROGRAM]\n");
        return 2;
    }
    return storm(atoi(argv[1]), argv[2], argc > 3 ? argv[3] : "/bin/true") != 0;
}
