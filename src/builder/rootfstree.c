/* rootfstree.c - package list parsing and the setuid/setgid sweep of a rootfs tree (see
 * rootfstree.h).
 *
 * Trust boundary: the package list is the user's option text, validated strictly before it
 * reaches mmdebstrap's argv; the tree is what mmdebstrap just built as root, walked with nftw()
 * without following symlinks or crossing mount points. nftw() has no user pointer, so the walk's
 * state is thread-local: caller's thread, one walk at a time per thread.
 */
/* NOLINTNEXTLINE(bugprone-reserved-identifier,cert-dcl37-c): the feature-test macro of nftw() */
#define _XOPEN_SOURCE 700
#include "rootfstree.h"

#include <ftw.h>
#include <sys/stat.h>

#include "macro.h"
#include "parse.h"
#include "strv.h"

#define WALK_FDS 64

static int package_valid(const char *s, size_t n)
{
	if (n < 2 || n > ROOTFS_PACKAGE_MAX_LEN)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '+' && c != '.' && c != '-')))
			return 0;
	}
	return 1;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int rootfs_parse_packages(const char *s, char ***ret, const char **ret_bad)
{
	_cleanup_(strv_freep) char **v = NULL;
	const char *p = s;
	size_t n = 0;

	if (ret_bad)
		*ret_bad = s;
	if (!s)
		return -EINVAL;
	for (;;) {
		p += strspn(p, " \t,");
		if (!*p)
			break;
		size_t len = strcspn(p, " \t,");
		if (!package_valid(p, len)) {
			if (ret_bad)
				*ret_bad = p;
			return -EINVAL;
		}
		if (n >= ROOTFS_MAX_PACKAGES)
			return -EINVAL;
		_cleanup_free_ char *name = strndup(p, len);
		if (!name || strv_push(&v, name) < 0)
			return -ENOMEM;
		n++;
		p += len;
	}
	if (n == 0)
		return -EINVAL;
	qsort(v, n, sizeof(*v), cmp_str);
	size_t w = 1;
	for (size_t i = 1; i < n; i++) {
		if (streq(v[i], v[w - 1])) {
			free(v[i]);
			continue;
		}
		v[w++] = v[i];
	}
	v[w] = NULL;
	*ret = TAKE_PTR(v);
	return 0;
}

int rootfs_node_version_valid(const char *s)
{
	unsigned long major = 0;
	size_t parts = 0;
	const char *p = s;
	if (!s || !*s || strlen(s) > 32)
		return 0;
	for (;;) {
		size_t d = strspn(p, "0123456789");
		if (d == 0 || d > 6 || (d > 1 && p[0] == '0'))
			return 0;
		const char *after;
		uint32_t v;
		if (parts == 0 && parse_u32_prefix(p, &v, &after) == 0)
			major = v;
		parts++;
		p += d;
		if (!*p)
			break;
		if (*p != '.' || parts == 3)
			return 0;
		p++;
	}
	return major >= ROOTFS_NODE_MIN_MAJOR;
}

int rootfs_suite_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 32 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") == n;
}

static _Thread_local struct {
	int strip; /* 1: clear the bits, 0: count them */
	size_t count;
	int error;
	char *first;
	size_t first_len;
} walk;

static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type == FTW_SL || type == FTW_SLN)
		return 0;
	if (type == FTW_NS || type == FTW_DNR) {
		walk.error = -EACCES;
		return 1;
	}
	if (!(st->st_mode & (S_ISUID | S_ISGID)))
		return 0;
	if (walk.strip) {
		if (chmod(path, st->st_mode & 01777) < 0) {
			walk.error = negative_errno();
			return 1;
		}
	} else if (walk.count == 0 && walk.first_len > 0) {
		snprintf(walk.first, walk.first_len, "%s", path);
	}
	walk.count++;
	return 0;
}

static int walk_tree(const char *root, int strip, size_t *ret, char *first, size_t n)
{
	walk.strip = strip;
	walk.count = 0;
	walk.error = 0;
	walk.first = first;
	walk.first_len = n;
	if (first && n > 0)
		first[0] = 0;
	int r = nftw(root, walk_one, WALK_FDS, FTW_PHYS | FTW_MOUNT);
	if (r < 0)
		return negative_errno();
	if (walk.error < 0)
		return walk.error;
	if (ret)
		*ret = walk.count;
	return 0;
}

int rootfs_strip_setid(const char *root, size_t *ret_cleared)
{
	return walk_tree(root, 1, ret_cleared, NULL, 0);
}

int rootfs_count_setid(const char *root, size_t *ret_count, char *first, size_t n)
{
	return walk_tree(root, 0, ret_count, first, n);
}
