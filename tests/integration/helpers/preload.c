/* A preload (the threat in issue 24, item 4: LD_PRELOAD runs a file's code without an exec
 * bit). Its constructor creates the file named by PRELOAD_MARKER. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mark(void)
{
	const char *marker = getenv("PRELOAD_MARKER");
	if (marker) {
		int fd = open(marker, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
	}
}
