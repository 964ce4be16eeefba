/* fdutil.c - file descriptor and small file helpers. Caller's thread. */
#include "fdutil.h"
#include "macro.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

int fd_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t k = write(fd, c, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

ssize_t fd_read_some(int fd, void *p, size_t n)
{
	for (;;) {
		ssize_t k = read(fd, p, n);
		if (k >= 0)
			return k;
		if (errno != EINTR)
			return negative_errno();
	}
}

int fd_read_exact(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t k = fd_read_some(fd, c, n);
		if (k < 0)
			return (int)k;
		if (k == 0)
			return -EPIPE;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

int fd_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return negative_errno();
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) < 0 ? negative_errno() : 0;
}

int fd_set_cloexec(int fd, int on)
{
	int fl = fcntl(fd, F_GETFD);
	if (fl < 0)
		return negative_errno();
	fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
	return fcntl(fd, F_SETFD, fl) < 0 ? negative_errno() : 0;
}

int read_file_small(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	return read_fd_small(fd, max, ret, ret_len);
}

int open_regular_file(const char *path, struct stat *st, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int k = negative_errno();
		if (k != -ENOENT)
			snprintf(err, errlen, "%s: %s", path, strerror(-k));
		return k;
	}
	if (fstat(fd, st) < 0) {
		int k = negative_errno();
		snprintf(err, errlen, "%s: %s", path, strerror(-k));
		close(fd);
		return k;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
	}
	return fd;
}

int read_fd_small(int fd, size_t max, char **ret, size_t *ret_len)
{
	/* the buffer grows as bytes arrive (a cap of 1 GiB must not cost 1 GiB for a small
	 * file); one byte past max tells a file that is too large */
	size_t cap = MIN(max, (size_t)65536), n = 0;
	_cleanup_free_ char *s = malloc(cap + 1);
	if (!s)
		return -ENOMEM;
	for (;;) {
		if (n == cap && cap < max) {
			size_t ncap = cap > max / 2 ? max : cap * 2;
			char *t = realloc(s, ncap + 1);
			if (!t)
				return -ENOMEM;
			s = t;
			cap = ncap;
		}
		if (n == max) {
			char c;
			ssize_t k = fd_read_some(fd, &c, 1);
			if (k < 0)
				return (int)k;
			if (k > 0)
				return -EFBIG;
			break;
		}
		ssize_t k = fd_read_some(fd, s + n, cap - n);
		if (k < 0)
			return (int)k;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	s[n] = 0;
	if (ret_len)
		*ret_len = n;
	*ret = TAKE_PTR(s);
	return 0;
}

int write_file_atomic(const char *path, const void *p, size_t n, unsigned mode)
{
	char tmp[PATH_MAX];
	int r;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return negative_errno();
	r = fd_write_all(fd, p, n);
	if (r == 0 && fsync(fd) < 0)
		r = negative_errno();
	if (r == 0 && rename(tmp, path) < 0)
		r = negative_errno();
	if (r < 0)
		unlink(tmp);
	return r;
}

int mkdir_p(const char *path, unsigned mode)
{
	char p[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		char c = p[i];
		p[i] = 0;
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return negative_errno();
		p[i] = c;
	}
	return 0;
}

static int rm_rf_at(int dfd, const char *name)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : negative_errno();
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? negative_errno() : 0;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	DIR *d = fdopendir(fd);
	if (!d) {
		safe_close(fd);
		return negative_errno();
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		int k = rm_rf_at(fd, de->d_name); /* fd is dirfd(d): fdopendir() took it */
		if (k < 0 && r == 0)
			r = k;
	}
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
		r = negative_errno();
	return r;
}

int rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}

static int try_dir(const char *dir, size_t dlen, const char *name, char **ret)
{
	char *p = NULL;
	if (dlen == 0) /* an empty PATH entry means the current directory: never for us */
		return -ENOENT;
	if (asprintf(&p, "%.*s/%s", (int)dlen, dir, name) < 0)
		return -ENOMEM;
	struct stat st;
	if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0) {
		*ret = p;
		return 0;
	}
	free(p);
	return -ENOENT;
}

int find_program(const char *name, char **ret)
{
	static const char sys[] = "/usr/local/sbin:/usr/sbin:/sbin";
	if (!name || !*name)
		return -ENOENT;
	if (strchr(name, '/')) {
		char *p = strdup(name);
		if (!p)
			return -ENOMEM;
		*ret = p;
		return 0;
	}
	const char *path = getenv("PATH");
	const char *lists[] = { path ? path : "/usr/local/bin:/usr/bin:/bin", sys };
	for (size_t l = 0; l < 2; l++) {
		for (const char *s = lists[l];;) {
			size_t n = strcspn(s, ":");
			int r = try_dir(s, n, name, ret);
			if (r != -ENOENT)
				return r;
			if (!s[n])
				break;
			s += n + 1;
		}
	}
	return -ENOENT;
}

int signalfd_for(const int *sigs, size_t n)
{
	sigset_t mask;
	sigemptyset(&mask);
	for (size_t i = 0; i < n; i++)
		sigaddset(&mask, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigaction(SIGPIPE, &sa, NULL);
	int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? negative_errno() : fd;
}
