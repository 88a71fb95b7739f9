/* An rtld-audit module that needs no libc (any glibc loader can load it, also one whose libc
 * is not the system's): creates /work/m with raw system calls when the loader loads it. The
 * loader corpus (loader_corpus.rs) uses it to see whether a loader ran a module's code. */
#include "raw-syscall.h"

unsigned int la_version(unsigned int version)
{
	long fd = create_marker();
	if (fd >= 0)
		raw_syscall4(NR_CLOSE, fd, 0, 0, 0);
	return version;
}
