/* Test helper: races the supervisor's exec-time check, for the race-proof enforcement tests.
 * Each attempt execs with argv [x, /bin/touch, DIR/m-<i>]: if the loader runs, touch creates
 * the marker; if /bin/true runs, nothing happens.
 *
 *   racer flip N DIR     a thread flips the exec path buffer between /bin/true and the loader
 *                        while a vfork child (CLONE_VM|CLONE_VFORK, sharing the buffer) execs it
 *   racer rename N DIR   a thread swaps (RENAME_EXCHANGE) a loader copy and a /bin/true copy at
 *                        the exec'd path while the main thread forks and execs it
 *   racer interp N DIR   a thread swaps (RENAME_EXCHANGE) a symlink to the system loader and a
 *                        loader copy at /tmp/race/i, the PT_INTERP of /opt/eg/interp-payload,
 *                        which the main thread forks and execs with argv [p, DIR/m-<i>] (it
 *                        creates the marker only when a loader copy is its interpreter)
 *   racer allow N DIR    a thread swaps (RENAME_EXCHANGE) two symlinks, to /opt/eg/vendor-tool
 *                        and to /opt/eg/payload, at /tmp/race/p, while the main thread forks and
 *                        execs the loader with argv [ld, /tmp/race/p, DIR/m-<i>] (the marker
 *                        says "tool" or "ran": which program the loader mapped)
 * RACER_LOADER names the file the loader copies are made from (default: the system loader), for
 * example a loader patched to set its thread pointer without a system call, which no image
 * checkpoint sees.
 * Prints how many attempts the kernel answered with an error (denied at the exec).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__aarch64__)
#define LOADER "/lib/ld-linux-aarch64.so.1"
#else
#define LOADER "/lib64/ld-linux-x86-64.so.2"
#endif

extern char **environ;
static atomic_int stop;
static char path[64] = "/bin/true";

/* Each state holds for a few microseconds, about as long as the supervisor's look takes. The
 * barrier keeps the compiler from merging the two stores into one (the other side of the race
 * is another process, which it cannot see). */
static void hold(void) {
    __asm__ volatile("" ::: "memory");
    for (volatile int i = 0; i < 3000; i++) {
    }
}

static void *flipper(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        strcpy(path, LOADER);
        hold();
        strcpy(path, "/bin/true");
        hold();
    }
    return NULL;
}

static const char *swap_a = "/tmp/race/ld", *swap_b = "/tmp/race/x";

static void *swapper(void *arg) {
    (void)arg;
    while (!atomic_load(&stop))
        syscall(SYS_renameat2, AT_FDCWD, swap_a, AT_FDCWD, swap_b, 2 /* RENAME_EXCHANGE */);
    return NULL;
}

static int copy(const char *from, const char *to) {
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (in < 0 || out < 0) return -1;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) return -1;
    close(in);
    close(out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: racer flip|rename|interp|allow N DIR\n");
        return 2;
    }
    int n = atoi(argv[2]);
    const char *copy_from = getenv("RACER_LOADER") ? getenv("RACER_LOADER") : LOADER;
    int flip = !strcmp(argv[1], "flip");
    int interp = !strcmp(argv[1], "interp");
    int allow = !strcmp(argv[1], "allow");
    const char *exec_path = "/tmp/race/x";
    char *first = "x";
    if (allow) {
        mkdir("/tmp/race", 0755);
        if (symlink("/opt/eg/vendor-tool", "/tmp/race/p") ||
            symlink("/opt/eg/payload", "/tmp/race/q")) {
            perror("setup");
            return 2;
        }
        swap_a = "/tmp/race/p";
        swap_b = "/tmp/race/q";
        exec_path = LOADER;
        first = LOADER;
    } else if (interp) {
        mkdir("/tmp/race", 0755);
        if (symlink(LOADER, "/tmp/race/i") || copy(copy_from, "/tmp/race/j")) {
            perror("setup");
            return 2;
        }
        swap_a = "/tmp/race/i";
        swap_b = "/tmp/race/j";
        exec_path = "/opt/eg/interp-payload";
        first = "p";
    } else if (!flip) {
        mkdir("/tmp/race", 0755);
        if (copy(copy_from, "/tmp/race/ld") || copy("/bin/true", "/tmp/race/x")) {
            perror("copy");
            return 2;
        }
    }
    pthread_t t;
    pthread_create(&t, NULL, flip ? flipper : swapper, NULL);
    int refused = 0;
    for (int i = 0; i < n; i++) {
        char marker[256];
        snprintf(marker, sizeof marker, "%s/m-%d", argv[3], i);
        char *child_argv[] = {first, "/bin/touch", marker, NULL};
        if (interp) child_argv[1] = marker, child_argv[2] = NULL;
        if (allow) child_argv[1] = "/tmp/race/p";
        pid_t pid = flip ? vfork() : fork();
        if (pid == 0) {
            execve(flip ? path : exec_path, child_argv, environ);
            _exit(126);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 126) refused++;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("%d refused\n", refused);
    return 0;
}
