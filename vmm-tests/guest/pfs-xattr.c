/* pfs-xattr: sets and removes extended attributes in a test guest (busybox has no setfattr).
 * Built with `gcc -static` by scripts/guest-initramfs.sh into the initramfs as
 * /bin/pfs-xattr.
 *
 *   pfs-xattr set PATH NAME VALUE    setxattr(2), creating or replacing
 *   pfs-xattr create PATH NAME VALUE setxattr(2) with XATTR_CREATE (fails if it exists)
 *   pfs-xattr rm PATH NAME           removexattr(2)
 *
 * Symbolic links are followed. On failure it prints "pfs-xattr: PATH: NAME: strerror" on
 * stderr and exits with status 1; bad usage exits with 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

int main(int argc, char **argv)
{
    int rc;
    if (argc == 5 && (strcmp(argv[1], "set") == 0 || strcmp(argv[1], "create") == 0)) {
        int flags = strcmp(argv[1], "create") == 0 ? XATTR_CREATE : 0;
        rc = setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), flags);
    } else if (argc == 4 && strcmp(argv[1], "rm") == 0) {
        rc = removexattr(argv[2], argv[3]);
    } else {
        fprintf(stderr, "usage: pfs-xattr set|create PATH NAME VALUE | pfs-xattr rm PATH NAME\n");
        return 2;
    }
    if (rc != 0) {
        fprintf(stderr, "pfs-xattr: %s: %s: %s\n", argv[2], argv[3], strerror(errno));
        return 1;
    }
    return 0;
}
