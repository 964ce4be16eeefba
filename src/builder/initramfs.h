/* initramfs.h - the minimal image's initramfs: layout, input checks, optional gzip.
 *
 * The layout (everything uid/gid 0, mtime 0; see cpio.h):
 *   /init                     the static capsem-guest binary (0755), PID 1
 *   /usr/bin/capsem-agent     symlink to /init (the binary dispatches on argv[0])
 *   /usr/bin/capsem-doctor    symlink to /init (the guest's self-check, doctor.c)
 *   /usr/bin/capsem-mcp-relay symlink to /init (the agents' MCP server, mcprelay.c)
 *   /bin/busybox              busybox-static (0755), plus one symlink to it per applet, where
 *                             `busybox --list-full` puts it (bin/, sbin/, usr/bin/, usr/sbin/)
 *   /bin /dev /etc /mnt /proc /root (0700) /run /sbin /sys /tmp (1777) /usr/bin /usr/sbin
 *   /dev/console (c 5 1, 0600)  /dev/null (c 1 3, 0666)
 *   /etc/passwd, /etc/group (root only), /etc/hostname ("capsem")
 *   extra files (the caller's): /usr/sbin/nft and the shared libraries and ELF interpreter it
 *   needs, each at the absolute path the host's dynamic loader reported (ibuild.c); capsem-init
 *   runs nft once at boot to load the egress ruleset
 * Pure functions; caller's thread.
 */
#pragma once

#include <stddef.h>

#include "buf.h"
#include "cpio.h"

#define INITRAMFS_MAX_APPLETS 1024

enum initramfs_compress {
	INITRAMFS_COMPRESS_NONE,
	INITRAMFS_COMPRESS_GZIP,
};

/* "none" / "gzip". */
const char *initramfs_compress_name(enum initramfs_compress c);
/* 0 or -EINVAL for an unknown name. */
int initramfs_compress_from_name(const char *s, enum initramfs_compress *ret);

/* Check that p..p+n is a statically linked x86-64 ELF executable (static PIE allowed): what the
 * kernel can run as /init with nothing else in the initramfs. 0, or -ENOEXEC with *ret_reason set
 * to a static explanation ("dynamically linked (needs an ELF interpreter)", ...). */
int initramfs_check_static_elf(const void *p, size_t n, const char **ret_reason);

/* Parse the output of `busybox --list-full` (full = 1: paths kept as given, "linuxrc" stays at
 * the root) or `busybox --list` (full = 0: names go to bin/) into a string vector of relative
 * paths ("bin/ls", "usr/bin/[["). Every line must be a safe relative path of [A-Za-z0-9._+[]-]
 * components; at most INITRAMFS_MAX_APPLETS lines. 0, -EBADMSG (the bad line's number in
 * *ret_bad_line when not NULL), -E2BIG or -ENOMEM. */
int initramfs_parse_applets(const char *text, int full, char ***ret, size_t *ret_bad_line);

/* PT_INTERP of a 64-bit x86-64 ELF executable into ret (NUL-terminated, at most cap-1 bytes).
 * 0; -ENOENT for a static executable; -ENOEXEC (not such an ELF, malformed, interpreter name too
 * long or not an absolute path). */
int initramfs_elf_interp(const void *p, size_t n, char *ret, size_t cap);

/* Parse what the dynamic loader prints for `<interp> --list <binary>` (ldd's output):
 * "\tlibx.so.1 => /lib/x/libx.so.1 (0x...)" and "\t/lib64/ld-linux-x86-64.so.2 (0x...)" give
 * those absolute paths, in order, without duplicates; the vDSO line (no path) is skipped. Every
 * path must be absolute with safe components (see initramfs_parse_applets). 0, -ENOENT (a
 * library "not found"), -EBADMSG (a line of another form or an unsafe path), -E2BIG (more than
 * INITRAMFS_MAX_LIBS) or -ENOMEM. */
#define INITRAMFS_MAX_LIBS 64
int initramfs_parse_ldlist(const char *text, char ***ret);

/* One more regular file for the archive. */
struct initramfs_file {
	const char *path; /* absolute */
	unsigned mode;
	const void *data;
	size_t len;
};

struct initramfs_inputs {
	const void *guest; /* the static capsem-guest binary */
	size_t guest_len;
	const void *busybox; /* the static busybox binary */
	size_t busybox_len;
	char *const *applets;		    /* from initramfs_parse_applets(); may be NULL */
	const struct initramfs_file *extra; /* n_extra more files; may be NULL */
	size_t n_extra;
};

/* Add the whole layout above to an empty archive. Applet links that would collide with another
 * entry (e.g. "bin/busybox" itself) are skipped. 0 or -errno from the cpio adders. */
int initramfs_layout(struct cpio *c, const struct initramfs_inputs *in);

/* gzip (RFC 1952, level 9, header mtime 0) of p..p+n appended to out. Deterministic for a given
 * zlib. 0, -ENOBUFS (out's cap), -ENOMEM or -EIO. */
int initramfs_gzip(const void *p, size_t n, struct buf *out);
