/* An rtld-audit module that needs no libc (any glibc loader can load it, also one whose libc
 * is not the system's): creates /work/m with raw system calls when the loader loads it. The
 * loader corpus (loader_corpus.rs) uses it to see whether a loader ran a module's code. */
unsigned int la_version(unsigned int version)
{
	static const char path[] = "/work/m";
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(2L /* open */), "D"(path), "S"(0101L /* O_CREAT|O_WRONLY */), "d"(0644L)
			 : "rcx", "r11", "memory");
	if (ret >= 0)
		__asm__ volatile("syscall" : "=a"(ret) : "0"(3L /* close */), "D"(ret) : "rcx", "r11", "memory");
	return version;
}
