/* The command of `execguard run` turned on its own supervisor (issue 25, item 1): it tries to
 * take every descriptor of its parent (pidfd_getfd), to attach to it (ptrace), to read its
 * memory (/proc/PPID/mem) and, with "signal", to stop it (SIGSTOP, then SIGCONT). Prints one
 * line per attempt, "NAME ok" or "NAME ERRNO-NAME"; "seccomp-fd ok" when a seccomp listener
 * was taken; then "uid N". Exit status 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, int ok, int err)
{
	printf("%s %s\n", what, ok ? "ok" : strerrorname_np(err));
}

int main(int argc, char **argv)
{
	pid_t parent = getppid();
	int pidfd = syscall(SYS_pidfd_open, parent, 0);
	report("pidfd_open", pidfd >= 0, errno);
	int taken = 0, seccomp = 0, err = EBADF;
	for (int fd = 0; pidfd >= 0 && fd < 1024; fd++) {
		int f = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
		if (f < 0) {
			if (errno != EBADF)
				err = errno;
			continue;
		}
		taken++;
		char link[64], target[256] = {0};
		snprintf(link, sizeof(link), "/proc/self/fd/%d", f);
		if (readlink(link, target, sizeof(target) - 1) > 0 && strstr(target, "seccomp"))
			seccomp++;
		close(f);
	}
	report("pidfd_getfd", taken > 0, err);
	report("seccomp-fd", seccomp > 0, err);
	long r = ptrace(PTRACE_ATTACH, parent, 0, 0);
	report("ptrace", r == 0, errno);
	if (r == 0) {
		waitpid(parent, 0, __WALL);
		ptrace(PTRACE_DETACH, parent, 0, 0);
	}
	char mem[64];
	snprintf(mem, sizeof(mem), "/proc/%d/mem", parent);
	int m = open(mem, O_RDONLY);
	report("mem", m >= 0, errno);
	if (argc > 1 && !strcmp(argv[1], "signal")) {
		r = kill(parent, SIGSTOP);
		report("sigstop", r == 0, errno);
		if (r == 0)
			kill(parent, SIGCONT);
	}
	printf("uid %d\n", (int)getuid());
	return 0;
}
