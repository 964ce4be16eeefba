/* cpio.h - a deterministic writer of "newc" (070701) cpio archives, the initramfs format.
 *
 * Entries are collected in memory, then written sorted by path with uid/gid 0, mtime 0, inode
 * numbers assigned in sorted order and no host metadata, so identical inputs always give
 * identical bytes. Paths are given with or without a leading '/' and stored without it
 * ("/bin/sh" becomes "bin/sh"); missing parent directories are added (mode 0755). The archive
 * ends with the "TRAILER!!!" entry and is padded to a multiple of 512 bytes.
 *
 * Limits: at most CPIO_MAX_ENTRIES entries, paths and link targets under 4096 bytes, each file
 * under 4 GiB (the format's 32-bit size field). Not thread-safe.
 */
#pragma once

#include <stddef.h>

#include "buf.h"
#include "macro.h"

#define CPIO_MAX_ENTRIES 65536
#define CPIO_PATH_MAX 4096

struct cpio;

/* New empty archive, or NULL when out of memory. */
struct cpio *cpio_new(void);
/* Free an archive and every copied file body; accepts NULL. */
void cpio_free(struct cpio *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct cpio *, cpio_free)
#define _cleanup_cpio_ _cleanup_(cpio_freep)

/* Each adder returns 0, -EINVAL (bad path, mode or target), -EEXIST (the path is already an
 * entry; adding a directory that exists as a directory is allowed and sets its mode), -ENOTDIR
 * (a parent is not a directory), -E2BIG (too many entries, file too large) or -ENOMEM.
 * mode is the permission bits only (07777). The archive is unchanged on failure except for
 * parent directories already added. */
int cpio_add_dir(struct cpio *c, const char *path, unsigned mode);
/* The data is copied. */
int cpio_add_file(struct cpio *c, const char *path, unsigned mode, const void *data, size_t len);
/* A symlink (mode 0777) pointing at target, which is stored as given. */
int cpio_add_symlink(struct cpio *c, const char *path, const char *target);
/* A character device node. */
int cpio_add_chardev(struct cpio *c, const char *path, unsigned mode, unsigned major,
		     unsigned minor);

/* 1 when path (normalised as above) is an entry. */
int cpio_contains(const struct cpio *c, const char *path);
size_t cpio_count(const struct cpio *c);

/* Append the whole archive to out. 0, -ENOBUFS when out's cap is too small, or -ENOMEM. */
int cpio_write(struct cpio *c, struct buf *out);
