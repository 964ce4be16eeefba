/* wstree.h - the host's only way into a workspace the guest can write: every open, stat and walk
 * below a workspace root resolves with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS), so a symlink or a swapped directory planted by the guest can never make
 * the host read or write a file outside the root. Used by the file audit and the snapshots.
 *
 * Paths are relative to the root: "a/b.txt", never absolute, no "." or ".." component, no empty
 * component, no trailing '/', at most WST_PATH_MAX bytes; "" names the root itself where a
 * function says so. Functions return 0 (or an fd) or -errno; -ELOOP for a symlink on the way,
 * -EXDEV for a path that would leave the root. Any thread; no state.
 */
#pragma once

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define WST_PATH_MAX 4095
#define WST_DEPTH_MAX 128

/* 0 when rel is a valid relative path as described above ("" allowed only when empty_ok), else
 * -EINVAL (-ENAMETOOLONG when too long). */
int wst_path_check(const char *rel, int empty_ok);

/* openat2(rootfd, rel, flags | O_CLOEXEC | O_NOFOLLOW-equivalent resolution). rel "" opens the
 * root itself (as "."). The fd or -errno. */
int wst_open(int rootfd, const char *rel, int flags, mode_t mode);

/* Open the parent directory of rel (O_PATH | O_DIRECTORY) and point *ret_name at rel's last
 * component. rel must not be "". The fd or -errno. */
int wst_open_parent(int rootfd, const char *rel, const char **ret_name);

/* lstat of rel below the root (the last component is not followed). 0 or -errno. */
int wst_lstat(int rootfd, const char *rel, struct stat *ret);

/* One entry met by wst_walk(). */
struct wst_entry {
	const char *path; /* relative to the root, "a/b" */
	const char *name; /* the last component */
	int dirfd;	  /* the open parent directory: fstatat/openat(dirfd, name, ...) are safe */
	int depth;	  /* 1 for the root's own entries */
	struct stat st;	  /* lstat */
};

#define WST_SKIP 1 /* a callback's answer for a directory: do not descend into it */

/* Called for every entry, parents before their children, names in byte order within a directory.
 * 0 to go on, WST_SKIP, or a negative value to stop the walk (returned by wst_walk). */
typedef int (*wst_walk_cb)(const struct wst_entry *e, void *userdata);

/* Walk the tree below start ("" = the root). Directories are entered through openat2 from their
 * parent with the resolution above (never through a symlink; a directory replaced by a symlink
 * during the walk is reported as the symlink, not entered). Entries that vanish while walked are
 * skipped. Deeper than WST_DEPTH_MAX: -ELOOP. 0, the callback's negative answer, or -errno. */
int wst_walk(int rootfd, const char *start, wst_walk_cb cb, void *userdata);
