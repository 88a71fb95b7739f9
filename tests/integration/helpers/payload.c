/* The "payload" of the tests: creates the file named by argv[1] (proof that it ran), with
 * WHO in it. Built a second time, with -DWHO="tool", as the allow tests' vendor tool. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#ifndef WHO
#define WHO "ran"
#endif

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    (void)write(fd, WHO "\n", strlen(WHO) + 1);
    close(fd);
    return 0;
}
