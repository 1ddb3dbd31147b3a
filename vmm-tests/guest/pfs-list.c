/* pfs-list: what a test guest reports about every entry of a tree, for comparison with the
 * host. Built with `gcc -static` by scripts/guest-initramfs.sh into the initramfs as
 * /bin/pfs-list (busybox has no getfattr and its stat has no nanoseconds).
 *
 *   pfs-list DIR
 *
 * One line per entry, DIR itself first (path ""), depth first, fields separated by tabs:
 *   E path kind mode uid gid size mtime_sec mtime_nsec nlink ino rdev_major rdev_minor
 *     sha256 link xattrs
 * path and link are hex-encoded bytes (so any name survives: newlines, non-UTF-8); kind is
 * one of d f l c b p s; mode is the full st_mode in octal; sha256 is "-" unless a regular
 * file; link is "-" unless a symlink; xattrs is "-" or hex(name)=hex(value) joined by ",".
 * Problems print "X path what error" lines on stderr; the exit status is 1 if there were any.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static int failures;

/* ---- SHA-256 (FIPS 180-4) ---- */

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->used = 0;
}

static void sha256_update(struct sha256 *s, const unsigned char *p, size_t n)
{
    s->len += n;
    while (n > 0) {
        if (s->used == 0 && n >= 64) {
            sha256_block(s, p);
            p += 64, n -= 64;
            continue;
        }
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take, p += take, n -= take;
        if (s->used == 64) {
            sha256_block(s, s->buf);
            s->used = 0;
        }
    }
}

static void sha256_hex(struct sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ---- listing ---- */

static void hex_to(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", (unsigned char)p[i]);
}

static void hex(const char *p, size_t n)
{
    hex_to(stdout, p, n);
}

/* On stderr, so that it never splits a line of the listing. */
static void problem(const char *rel, const char *what)
{
    int e = errno;
    fprintf(stderr, "X\t");
    hex_to(stderr, rel, strlen(rel));
    fprintf(stderr, "\t%s\t%s\n", what, strerror(e));
    failures++;
}

static int file_sha256(const char *path, char out[65])
{
    static unsigned char buf[1 << 16];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct sha256 s;
    sha256_init(&s);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        sha256_update(&s, buf, (size_t)n);
    }
    close(fd);
    sha256_hex(&s, out);
    return 0;
}

static void xattrs(const char *path, const char *rel)
{
    static char names[1 << 16], value[1 << 16];
    ssize_t len = llistxattr(path, names, sizeof names);
    if (len < 0) {
        if (errno != ENOTSUP)
            problem(rel, "llistxattr");
        printf("-");
        return;
    }
    if (len == 0) {
        printf("-");
        return;
    }
    int first = 1;
    for (char *n = names; n < names + len; n += strlen(n) + 1) {
        ssize_t v = lgetxattr(path, n, value, sizeof value);
        if (v < 0) {
            problem(rel, "lgetxattr");
            continue;
        }
        printf(first ? "" : ",");
        first = 0;
        hex(n, strlen(n));
        printf("=");
        hex(value, (size_t)v);
    }
}

static char kind(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFDIR: return 'd';
    case S_IFREG: return 'f';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    default: return 's';
    }
}

static void entry(const char *path, const char *rel);

static void walk_dir(const char *path, const char *rel)
{
    DIR *d = opendir(path);
    if (!d) {
        problem(rel, "opendir");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p, *r;
        if (asprintf(&p, "%s/%s", path, e->d_name) < 0 ||
            asprintf(&r, "%s%s%s", rel, *rel ? "/" : "", e->d_name) < 0) {
            perror("asprintf");
            exit(2);
        }
        entry(p, r);
        free(p);
        free(r);
    }
    closedir(d);
}

static void entry(const char *path, const char *rel)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        problem(rel, "lstat");
        return;
    }
    char sum[65] = "-";
    if (S_ISREG(st.st_mode) && file_sha256(path, sum) < 0) {
        problem(rel, "read");
        strcpy(sum, "-");
    }
    printf("E\t");
    hex(rel, strlen(rel));
    printf("\t%c\t%o\t%u\t%u\t%lld\t%lld\t%ld\t%lu\t%lu\t%u\t%u\t%s\t", kind(st.st_mode),
           st.st_mode, st.st_uid, st.st_gid, (long long)st.st_size,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (unsigned long)st.st_nlink,
           (unsigned long)st.st_ino, major(st.st_rdev), minor(st.st_rdev), sum);
    if (S_ISLNK(st.st_mode)) {
        static char target[1 << 16];
        ssize_t n = readlink(path, target, sizeof target);
        if (n < 0)
            problem(rel, "readlink");
        else
            hex(target, (size_t)n);
    } else {
        printf("-");
    }
    printf("\t");
    xattrs(path, rel);
    printf("\n");
    if (S_ISDIR(st.st_mode))
        walk_dir(path, rel);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: pfs-list DIR\n");
        return 2;
    }
    entry(argv[1], "");
    if (fflush(stdout) != 0)
        return 2;
    return failures ? 1 : 0;
}
