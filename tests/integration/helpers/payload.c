/* The "payload" of the tests: creates the file named by argv[1] (proof that it ran). */
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    (void)write(fd, "ran\n", 4);
    close(fd);
    return 0;
}
