/* A payload that needs no libc (any glibc loader can run it, also one whose libc is not the
 * system's): creates /work/m with raw system calls and exits. */
void _start(void)
{
	static const char path[] = "/work/m";
#if defined(__aarch64__)
	/* openat(AT_FDCWD, path, O_CREAT|O_WRONLY, 0644), then exit(0). */
	register long x0 __asm__("x0") = -100;
	register long x1 __asm__("x1") = (long)path;
	register long x2 __asm__("x2") = 0101L;
	register long x3 __asm__("x3") = 0644L;
	register long x8 __asm__("x8") = 56;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x1), "r"(x2), "r"(x3), "r"(x8) : "memory");
	x0 = 0;
	x8 = 93;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8) : "memory");
#else
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(2L /* open */), "D"(path), "S"(0101L /* O_CREAT|O_WRONLY */), "d"(0644L)
			 : "rcx", "r11", "memory");
	__asm__ volatile("syscall" : : "a"(60L /* exit */), "D"(0L) : "rcx", "r11", "memory");
#endif
	for (;;)
		;
}
