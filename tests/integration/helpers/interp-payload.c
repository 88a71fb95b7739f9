/* Payload of the PT_INTERP race: the harness sets its PT_INTERP to /tmp/race/i, a name the
 * racer keeps swapping between a symlink to the system loader and a copy of the loader. It
 * creates the file named by argv[1] only when the interpreter the kernel really mapped for it
 * (the mapping at AT_BASE) is on the filesystem of /tmp/race, where the racer makes its copies,
 * and not the system loader: proof that a loader copy ran it. (The device, not the inode: on an
 * overlay whose layers are on other filesystems, as a VM's root is, /proc/PID/maps names the
 * layer's file and stat the overlay's, so the system loader's numbers would not match.) */
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    unsigned long base = getauxval(AT_BASE);
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 2;
    char line[512];
    unsigned long start, inode = 0;
    unsigned major = 0, minor = 0;
    int found = 0;
    while (fgets(line, sizeof line, maps)) {
        if (sscanf(line, "%lx-%*x %*s %*s %x:%x %lu", &start, &major, &minor, &inode) == 4 &&
            start == base) {
            found = 1;
            break;
        }
    }
    fclose(maps);
    struct stat st;
    if (!found || stat("/tmp/race", &st) != 0) return 2;
    if (makedev(major, minor) != st.st_dev) return 0;
    FILE *m = fopen(argv[1], "w");
    if (!m) return 1;
    fputs("ran by a loader copy\n", m);
    fclose(m);
    return 0;
}
