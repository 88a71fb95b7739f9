/* Test helper: performs an exec in one of the ways an attacker would, so that the integration
 * tests can check that the supervisor sees through each. Built for x86_64 and for i386.
 *
 *   exectool execve PATH ARGV...            plain execve
 *   exectool execveat DIR NAME ARGV...      execveat(open(DIR), NAME)
 *   exectool fexecve FILE ARGV...           execveat(open(FILE), "", AT_EMPTY_PATH)
 *   exectool procfd FILE ARGV...            execve("/proc/self/fd/N") of open(FILE)
 *   exectool memfd FILE ARGV...             copy FILE into a memfd, exec it (fileless)
 *   exectool int80 PATH ARGV...             execve through the 32-bit ABI (int 0x80), x86_64 only
 *   exectool shadow-listener                try to install a second seccomp listener;
 *                                           exits 0 when the kernel answers EBUSY
 *   exectool hostile                        a series of hostile execs (bad pointers, huge argv and
 *                                           envp, control characters and invalid UTF-8, symlink
 *                                           loops, an overlong path); prints each errno
 *   exectool archprctl-hi N                 N times, set FS to what it is through arch_prctl with
 *                                           the option's high 32 bits set (0x100001002: the
 *                                           kernel reads an int, so this is ARCH_SET_FS);
 *                                           x86_64 only
 *   exectool vmsplice                       call vmsplice(-1, ...) and print the errno's name:
 *                                           EBADF normally, EPERM under podman's default profile
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int die(const char *what) {
    fprintf(stderr, "exectool: %s: %s\n", what, strerror(errno));
    return 126;
}

static int open_or_die(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) {
        perror(path);
        exit(126);
    }
    return fd;
}

#if defined(__x86_64__)
/* execve through int 0x80: the pointers must fit in 32 bits, so everything is copied into a
 * MAP_32BIT mapping first. */
static int exec_int80(const char *path, char **argv) {
    size_t need = 4096;
    for (char **a = argv; *a; a++) need += strlen(*a) + 1 + 4;
    for (char **e = environ; *e; e++) need += strlen(*e) + 1 + 4;
    need += strlen(path) + 1;
    char *mem = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    if (mem == MAP_FAILED) return die("mmap");
    int argc = 0, envc = 0;
    while (argv[argc]) argc++;
    while (environ[envc]) envc++;
    uint32_t *av = (uint32_t *)mem;
    uint32_t *ev = av + argc + 1;
    char *s = (char *)(ev + envc + 1);
    for (int i = 0; i < argc; i++) { strcpy(s, argv[i]); av[i] = (uint32_t)(uintptr_t)s; s += strlen(s) + 1; }
    av[argc] = 0;
    for (int i = 0; i < envc; i++) { strcpy(s, environ[i]); ev[i] = (uint32_t)(uintptr_t)s; s += strlen(s) + 1; }
    ev[envc] = 0;
    strcpy(s, path);
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(11), "b"((uint32_t)(uintptr_t)s), "c"((uint32_t)(uintptr_t)av),
                       "d"((uint32_t)(uintptr_t)ev)
                     : "memory");
    errno = (int)-ret;
    return die("int 0x80 execve");
}
#endif

static int shadow_listener(void) {
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(insns) / sizeof(insns[0]), .filter = insns};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return die("PR_SET_NO_NEW_PRIVS");
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd >= 0) {
        fprintf(stderr, "exectool: a second listener was installed (fd %ld)\n", fd);
        return 1;
    }
    if (errno == EBUSY) {
        printf("EBUSY\n");
        return 0;
    }
    return die("seccomp(NEW_LISTENER)");
}

#define LOADER "/lib64/ld-linux-x86-64.so.2"

/* Each hostile exec runs in a child, so that one that succeeds does not end the series. The
 * outcome is printed: the exec's error, or the signal that killed the new image. */
static void try_exec(const char *what, const char *path, char **av, char **ev) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        syscall(SYS_execve, path, av, ev);
        printf("%s: %s\n", what, strerror(errno));
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
        printf("%s: killed by signal %d\n", what, WTERMSIG(status));
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
    }
    fflush(stdout);
}

static int hostile(void) {
    char *ld_touch[] = {"ld.so", "/bin/touch", "/work/hostile-ran", NULL};
    /* Bad pointers: the path, argv itself, one argv entry, envp. */
    try_exec("bad path pointer", (const char *)1, ld_touch, environ);
    try_exec("bad argv pointer", LOADER, (char **)1, environ);
    char *bad_entry[] = {"ld.so", (char *)1, "/work/hostile-ran", NULL};
    try_exec("bad argv entry", LOADER, bad_entry, environ);
    try_exec("bad envp pointer", LOADER, ld_touch, (char **)1);
    /* Huge argv: 20000 options before the program. */
    int n = 20000;
    char **big = calloc((size_t)n + 4, sizeof(char *));
    big[0] = "ld.so";
    for (int i = 1; i < n; i++) big[i] = "--inhibit-cache";
    big[n] = "/bin/touch";
    big[n + 1] = "/work/hostile-ran";
    try_exec("huge argv", LOADER, big, environ);
    /* One huge argument (100 KiB) and a huge environment (30000 entries). */
    char *huge = malloc(100 * 1024 + 1);
    memset(huge, 'A', 100 * 1024);
    huge[100 * 1024] = 0;
    char *huge_arg[] = {"ld.so", huge, "/bin/touch", "/work/hostile-ran", NULL};
    try_exec("huge argument", LOADER, huge_arg, environ);
    char **env = calloc(30001, sizeof(char *));
    for (int i = 0; i < 30000; i++) env[i] = "X=1";
    try_exec("huge envp", LOADER, ld_touch, env);
    /* Control characters, a forged JSON line and invalid UTF-8 in what gets logged. */
    char *nasty[] = {"ld.so\n{\"event\":\"forged\"}", "/bin/touch", "/work/hostile\x1b[31m\xff\xfe\"\n", NULL};
    try_exec("control characters", LOADER, nasty, environ);
    /* Symlink loops and a long chain. */
    symlink("/tmp/loop-b", "/tmp/loop-a");
    symlink("/tmp/loop-a", "/tmp/loop-b");
    try_exec("symlink loop", "/tmp/loop-a", ld_touch, environ);
    char prev[64] = LOADER, name[64];
    for (int i = 0; i < 45; i++) {
        snprintf(name, sizeof name, "/tmp/chain-%d", i);
        symlink(prev, name);
        strcpy(prev, name);
    }
    try_exec("45-link chain", prev, ld_touch, environ);
    /* A path longer than PATH_MAX, with no NUL inside it. */
    char *longpath = malloc(8192);
    memset(longpath, 'a', 8191);
    longpath[0] = '/';
    longpath[8191] = 0;
    try_exec("overlong path", longpath, ld_touch, environ);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: exectool MODE ...\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "shadow-listener")) return shadow_listener();
    if (!strcmp(mode, "hostile")) return hostile();
#ifdef __x86_64__
    if (!strcmp(mode, "archprctl-hi") && argc == 3) {
        unsigned long fs = 0;
        if (syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &fs)) return die("ARCH_GET_FS");
        for (long i = atol(argv[2]); i > 0; i--)
            if (syscall(SYS_arch_prctl, 0x100001002UL, fs)) return die("arch_prctl(0x100001002)");
        return 0;
    }
#endif
    if (!strcmp(mode, "vmsplice")) {
        long r = syscall(SYS_vmsplice, -1, NULL, 0, 0);
        printf("%s\n", r == 0 ? "OK" : errno == EPERM ? "EPERM" : errno == EBADF ? "EBADF" : strerror(errno));
        return 0;
    }
    if (!strcmp(mode, "keyctl")) {
        /* KEYCTL_GET_KEYRING_ID of the session keyring: Docker's default profile denies keyctl. */
        long r = syscall(SYS_keyctl, 0, -3, 0);
        printf("%s\n", r >= 0 ? "OK" : errno == EPERM ? "EPERM" : strerror(errno));
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: exectool %s TARGET ARGV...\n", mode);
        return 2;
    }
    if (!strcmp(mode, "full-stderr")) {
        /* Runs TARGET with its stderr on a pipe that is full (its read end held open here and
         * never read); prints how the child ended. */
        int p[2];
        if (pipe(p)) return die("pipe");
        int flags = fcntl(p[1], F_GETFL);
        fcntl(p[1], F_SETFL, flags | O_NONBLOCK);
        static char block[4096];
        while (write(p[1], block, sizeof block) > 0) {}
        while (write(p[1], block, 1) == 1) {}
        fcntl(p[1], F_SETFL, flags);
        pid_t c = fork();
        if (c == 0) {
            dup2(p[1], 2);
            execv(argv[2], &argv[3]);
            _exit(127);
        }
        int st;
        waitpid(c, &st, 0);
        printf("%s %d\n", WIFSIGNALED(st) ? "signal" : "exit",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return 0;
    }
    if (!strcmp(mode, "execve")) {
        execve(argv[2], &argv[3], environ);
        return die("execve");
    }
    if (!strcmp(mode, "execveat")) {
        if (argc < 5) return 2;
        int dir = open_or_die(argv[2], O_RDONLY | O_DIRECTORY);
        syscall(SYS_execveat, dir, argv[3], &argv[4], environ, 0);
        return die("execveat");
    }
    if (!strcmp(mode, "fexecve")) {
        int fd = open_or_die(argv[2], O_RDONLY);
        syscall(SYS_execveat, fd, "", &argv[3], environ, AT_EMPTY_PATH);
        return die("execveat(AT_EMPTY_PATH)");
    }
    if (!strcmp(mode, "procfd")) {
        int fd = open_or_die(argv[2], O_RDONLY);
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        execve(path, &argv[3], environ);
        return die("execve(/proc/self/fd/N)");
    }
    if (!strcmp(mode, "memfd")) {
        int src = open_or_die(argv[2], O_RDONLY);
        struct stat st;
        if (fstat(src, &st) != 0) return die("fstat");
        int mfd = (int)syscall(SYS_memfd_create, "innocent", 0);
        if (mfd < 0) return die("memfd_create");
        off_t off = 0;
        while (off < st.st_size)
            if (sendfile(mfd, src, &off, (size_t)(st.st_size - off)) <= 0) return die("sendfile");
        syscall(SYS_execveat, mfd, "", &argv[3], environ, AT_EMPTY_PATH);
        return die("execveat(memfd)");
    }
#if defined(__x86_64__)
    if (!strcmp(mode, "int80")) return exec_int80(argv[2], &argv[3]);
#endif
    fprintf(stderr, "exectool: unknown mode %s\n", mode);
    return 2;
}
