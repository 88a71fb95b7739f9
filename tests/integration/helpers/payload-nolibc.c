/* A payload that needs no libc (any glibc loader can run it, also one whose libc is not the
 * system's): creates /work/m with raw system calls and exits. */
void _start(void)
{
	static const char path[] = "/work/m";
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(2L /* open */), "D"(path), "S"(0101L /* O_CREAT|O_WRONLY */), "d"(0644L)
			 : "rcx", "r11", "memory");
	__asm__ volatile("syscall" : : "a"(60L /* exit */), "D"(0L) : "rcx", "r11", "memory");
	for (;;)
		;
}
