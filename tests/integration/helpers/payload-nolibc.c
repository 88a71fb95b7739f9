/* A payload that needs no libc (any glibc loader can run it, also one whose libc is not the
 * system's): creates /work/m with raw system calls and exits. */
#include "raw-syscall.h"

void _start(void)
{
	create_marker();
	raw_syscall4(NR_EXIT, 0, 0, 0, 0);
	for (;;)
		;
}
