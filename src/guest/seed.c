/* seed.c - copy the image's /root seed (the AI CLIs' settings files that the image config lists,
 * see guest/config/providers.toml, and the Python venv) into a new VM's /root, which lives on the VM's disk and so
 * hides the image's own /root.
 *
 * capsem-init calls it once, when it creates the disk's root/ directory (first boot of a disk).
 * Trust boundary: src is in the read-only root image (the host's); dst is the VM's fresh,
 * empty directory. Every open is O_NOFOLLOW relative to a directory fd (symlinks are copied as
 * links, never followed); the walk is bounded in
 * depth, entries and file size. Runs in PID 1 before any other process exists.
 */
#include "seed.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"

#define SEED_MAX_DEPTH 8
#define SEED_MAX_ENTRIES 256
#define SEED_MAX_FILE (1u << 20)

static int copy_file(int sfd, int dfd, const char *name, mode_t mode, off_t size, size_t *budget)
{
	char buf[8192];
	if (size > SEED_MAX_FILE)
		return 0;
	_cleanup_close_ int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return negative_errno();
	_cleanup_close_ int out = openat(
		dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
	if (out < 0)
		return errno == EEXIST ? 0 : negative_errno();
	for (size_t total = 0;;) {
		ssize_t n = fd_read_some(in, buf, sizeof(buf));
		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > SEED_MAX_FILE)
			return -EFBIG;
		int r = fd_write_all(out, buf, (size_t)n);
		if (r < 0)
			return r;
	}
	(void)budget;
	return 0;
}

static int copy_dir(int sfd, int dfd, unsigned depth, size_t *budget)
{
	int r = 0;
	if (depth > SEED_MAX_DEPTH)
		return -ELOOP;
	int fd = dup(sfd);
	if (fd < 0)
		return negative_errno();
	DIR *d = fdopendir(fd);
	if (!d) {
		safe_close(fd); /* keeps fdopendir()'s errno, which close() may overwrite */
		return negative_errno();
	}
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		struct stat st;
		if (streq(e->d_name, ".") || streq(e->d_name, ".."))
			continue;
		if (*budget == 0) {
			r = -E2BIG;
			break;
		}
		(*budget)--;
		if (fstatat(sfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = negative_errno();
			break;
		}
		if (S_ISREG(st.st_mode)) {
			r = copy_file(sfd, dfd, e->d_name, st.st_mode, st.st_size, budget);
		} else if (S_ISLNK(st.st_mode)) {
			/* copied as it is (a venv's bin/python3 -> /usr/bin/python3); never followed */
			char target[PATH_MAX];
			ssize_t n = readlinkat(sfd, e->d_name, target, sizeof(target) - 1);
			if (n < 0) {
				r = negative_errno();
				break;
			}
			target[n] = 0;
			if (symlinkat(target, dfd, e->d_name) < 0 && errno != EEXIST)
				r = negative_errno();
		} else if (S_ISDIR(st.st_mode)) {
			if (mkdirat(dfd, e->d_name, st.st_mode & 0777) < 0 && errno != EEXIST) {
				r = negative_errno();
				break;
			}
			/* each open checked on its own: a second, successful openat() may change the
			 * errno of a failed first one */
			_cleanup_close_ int s2 = openat(
				sfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0) {
				r = negative_errno();
				break;
			}
			_cleanup_close_ int d2 = openat(
				dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (d2 < 0)
				r = negative_errno();
			else
				r = copy_dir(s2, d2, depth + 1, budget);
		}
	}
	closedir(d);
	return r;
}

int seed_copy_tree(const char *src, const char *dst)
{
	size_t budget = SEED_MAX_ENTRIES;
	_cleanup_close_ int sfd = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		return errno == ENOENT ? 0 : negative_errno();
	_cleanup_close_ int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return negative_errno();
	return copy_dir(sfd, dfd, 0, &budget);
}
