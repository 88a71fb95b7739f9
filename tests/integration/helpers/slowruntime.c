/*
 * slowruntime SOCKET ID DIR: plays a container runtime whose message to the supervisor is
 * half sent when something happens to the supervisor.
 *
 * Installs a seccomp filter whose listener gets getppid(), connects to SOCKET and sends the
 * listener with the first half of a runc-style ContainerProcessState (container ID, this
 * process's pid), creates DIR/half-sent, waits for DIR/send-rest, sends the rest and closes,
 * then waits for DIR/call and calls getppid(): it prints "getppid answered" when a
 * supervisor held the listener and answered, "getppid ENOSYS" when the listener was closed
 * (the kernel then fails every trapped call).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static int die(const char *what) {
    fprintf(stderr, "slowruntime: %s: %s\n", what, strerror(errno));
    return 1;
}

static void touch(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}

static int wait_for(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    for (int i = 0; i < 6000; i++) { /* 60 s */
        if (stat(path, &st) == 0) return 0;
        usleep(10000);
    }
    fprintf(stderr, "slowruntime: %s never appeared\n", path);
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: slowruntime SOCKET ID DIR\n");
        return 2;
    }
    const char *dir = argv[3];
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return die("no_new_privs");
    int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (listener < 0) return die("seccomp(NEW_LISTENER)");

    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr)) return die("connect");

    char msg[1024];
    int len = snprintf(msg, sizeof msg,
                       "{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":%d,\"metadata\":\"\","
                       "\"state\":{\"ociVersion\":\"1.0.2\",\"id\":\"%s\",\"status\":\"creating\","
                       "\"pid\":%d,\"bundle\":\"/\",\"annotations\":{}}}",
                       getpid(), argv[2], getpid());
    int half = len / 2;
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {msg, half};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &listener, sizeof(int));
    if (sendmsg(s, &mh, 0) != half) return die("sendmsg (first half)");
    close(listener);
    touch(dir, "half-sent");

    if (wait_for(dir, "send-rest")) return 1;
    /* The rest may find the connection gone: what the call below shows is what counts. */
    if (send(s, msg + half, len - half, MSG_NOSIGNAL) != len - half)
        fprintf(stderr, "slowruntime: the rest of the message was not sent: %s\n", strerror(errno));
    close(s);
    touch(dir, "sent");

    if (wait_for(dir, "call")) return 1;
    long r = syscall(SYS_getppid);
    if (r < 0)
        printf("getppid %s\n", errno == ENOSYS ? "ENOSYS" : strerror(errno));
    else
        printf("getppid answered\n");
    return 0;
}
