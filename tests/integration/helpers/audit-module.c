/* An rtld-audit module (the threat in issue 24: audit modules run their code inside the
 * loader, also when it only lists a program's libraries, as ldd has it do). It creates the
 * file named by AUDIT_MARKER when the loader loads it. */
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <unistd.h>

unsigned int la_version(unsigned int version)
{
	const char *marker = getenv("AUDIT_MARKER");
	if (marker) {
		int fd = open(marker, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
	}
	return version;
}
