/* Raw system calls for the helpers that run without a libc (payload-nolibc.c,
 * audit-nolibc.c), on x86_64 and arm64: any glibc loader can run them, also one whose libc is
 * not the system's. */
#if defined(__aarch64__)
#define NR_OPENAT 56
#define NR_CLOSE 57
#define NR_EXIT 93
static inline long raw_syscall4(long nr, long a, long b, long c, long d)
{
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x8 __asm__("x8") = nr;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x3), "r"(x8) : "memory");
	return x0;
}
#else
#define NR_OPENAT 257
#define NR_CLOSE 3
#define NR_EXIT 60
static inline long raw_syscall4(long nr, long a, long b, long c, long d)
{
	register long r10 __asm__("r10") = d;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}
#endif

/* Creates /work/m, the proof that this code ran: openat(AT_FDCWD, "/work/m",
 * O_CREAT|O_WRONLY, 0644). Returns the descriptor, or -errno. */
static inline long create_marker(void)
{
	static const char path[] = "/work/m";
	return raw_syscall4(NR_OPENAT, -100, (long)path, 0101L, 0644L);
}
