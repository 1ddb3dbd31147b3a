/* pfs-as: runs a program as another user in a test guest (busybox's setpriv here cannot
 * change ids, and the initramfs has no user database for su). Built with `gcc -static` by
 * scripts/guest-initramfs.sh into the initramfs as /bin/pfs-as.
 *
 *   pfs-as UID GID PROG [ARGS...]
 *
 * Drops every supplementary group, sets the real, effective and saved gid to GID and uid to
 * UID (so no capability is left), then executes PROG (searched in PATH). On failure it prints
 * "pfs-as: what: strerror" on stderr and exits with status 127; bad usage exits with 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "pfs-as: %s: %s\n", what, strerror(errno));
    return 127;
}

static int parse_id(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v > 0xfffffffeUL)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    unsigned uid, gid;
    if (argc < 4 || parse_id(argv[1], &uid) != 0 || parse_id(argv[2], &gid) != 0) {
        fprintf(stderr, "usage: pfs-as UID GID PROG [ARGS...]\n");
        return 2;
    }
    if (setgroups(0, NULL) != 0)
        return fail("setgroups");
    if (setresgid(gid, gid, gid) != 0)
        return fail("setresgid");
    if (setresuid(uid, uid, uid) != 0)
        return fail("setresuid");
    execvp(argv[3], argv + 3);
    return fail(argv[3]);
}
