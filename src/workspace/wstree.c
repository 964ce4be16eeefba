/* wstree.c - safe opens, stats and walks below a workspace root (wstree.h).
 *
 * Trust boundary: the tree's contents are the guest's. Every resolution goes through openat2()
 * with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS from an fd of the root or of
 * a directory already opened that way, so neither a symlink, a "..", nor a directory renamed
 * under us can take a lookup outside the root. Stateless; any thread.
 */
#include "wstree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"

#define RESOLVE_SAFE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

int wst_path_check(const char *rel, int empty_ok)
{
	size_t n = strlen(rel);
	if (n == 0)
		return empty_ok ? 0 : -EINVAL;
	if (n > WST_PATH_MAX)
		return -ENAMETOOLONG;
	if (rel[0] == '/' || rel[n - 1] == '/')
		return -EINVAL;
	for (const char *p = rel; *p;) {
		size_t c = strcspn(p, "/");
		if (c == 0 || (c == 1 && p[0] == '.') || (c == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		p += c;
		if (*p == '/')
			p++;
	}
	return 0;
}

int wst_open(int rootfd, const char *rel, int flags, mode_t mode)
{
	int r = wst_path_check(rel, 1);
	if (r < 0)
		return r;
	/* openat2 takes only O_DIRECTORY and O_CLOEXEC beside O_PATH */
	int extra = (flags & O_PATH) ? O_CLOEXEC : O_CLOEXEC | O_NOCTTY;
	struct open_how how = { .flags = (uint64_t)(flags | extra),
				.mode = (flags & O_CREAT) ? mode : 0,
				.resolve = RESOLVE_SAFE };
	long fd = syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

int wst_open_parent(int rootfd, const char *rel, const char **ret_name)
{
	int r = wst_path_check(rel, 0);
	if (r < 0)
		return r;
	const char *slash = strrchr(rel, '/');
	if (!slash) {
		r = wst_open(rootfd, "", O_PATH | O_DIRECTORY, 0);
		if (r >= 0)
			*ret_name = rel;
		return r;
	}
	char dir[WST_PATH_MAX + 1];
	memcpy(dir, rel, (size_t)(slash - rel));
	dir[slash - rel] = 0;
	r = wst_open(rootfd, dir, O_PATH | O_DIRECTORY, 0);
	if (r >= 0)
		*ret_name = slash + 1;
	return r;
}

int wst_lstat(int rootfd, const char *rel, struct stat *ret)
{
	const char *name;
	if (!*rel)
		return fstat(rootfd, ret) < 0 ? -errno : 0;
	int dfd = wst_open_parent(rootfd, rel, &name);
	if (dfd < 0)
		return dfd;
	int r = fstatat(dfd, name, ret, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	close(dfd);
	return r;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in an open directory, sorted; "." and ".." left out. */
static int read_names(int dfd, char ***ret, size_t *ret_n)
{
	int fd = dup(dfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			char **nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		if (!(v[n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
		errno = 0;
	}
	if (!r && errno)
		r = -errno;
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	if (n)
		qsort(v, n, sizeof(*v), name_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

struct walk {
	wst_walk_cb cb;
	void *userdata;
	char path[WST_PATH_MAX + 1];
};

static int walk_dir(struct walk *w, int dfd, size_t plen, int depth)
{
	if (depth > WST_DEPTH_MAX)
		return -ELOOP;
	char **names = NULL;
	size_t n = 0;
	int r = read_names(dfd, &names, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		size_t nl = strlen(names[i]);
		size_t len = plen ? plen + 1 + nl : nl;
		if (len > WST_PATH_MAX)
			continue; /* cannot be named below the root: left out */
		if (plen)
			w->path[plen] = '/';
		memcpy(w->path + (plen ? plen + 1 : 0), names[i], nl + 1);
		struct wst_entry e = {
			.path = w->path, .name = w->path + len - nl, .dirfd = dfd, .depth = depth
		};
		if (fstatat(dfd, names[i], &e.st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* gone meanwhile */
			r = -errno;
			break;
		}
		int c = w->cb(&e, w->userdata);
		if (c < 0) {
			r = c;
			break;
		}
		if (c == WST_SKIP || !S_ISDIR(e.st.st_mode))
			continue;
		struct open_how how = { .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
					.resolve = RESOLVE_SAFE };
		long sub = syscall(SYS_openat2, dfd, names[i], &how, sizeof(how));
		if (sub < 0) {
			if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
				continue; /* gone, or replaced by a file or a symlink meanwhile */
			r = -errno;
			break;
		}
		r = walk_dir(w, (int)sub, len, depth + 1);
		close((int)sub);
		w->path[len] = 0;
	}
	w->path[plen] = 0;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r < 0 ? r : 0;
}

int wst_walk(int rootfd, const char *start, wst_walk_cb cb, void *userdata)
{
	struct walk w = { .cb = cb, .userdata = userdata };
	int dfd = wst_open(rootfd, start, O_RDONLY | O_DIRECTORY, 0);
	if (dfd < 0)
		return dfd;
	size_t sl = strlen(start);
	memcpy(w.path, start, sl + 1);
	int depth = 1;
	for (const char *p = start; *p; p++)
		depth += *p == '/';
	int r = walk_dir(&w, dfd, sl, *start ? depth + 1 : 1);
	close(dfd);
	return r;
}
