/* fdutil.c - file descriptor and small file helpers. Caller's thread. */
#include "fdutil.h"
#include "clockutil.h"
#include "macro.h"

#include <dirent.h>
#include <linux/fs.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

ssize_t fd_read_line(int fd, char *buf, size_t cap, size_t *len, uint64_t until_ms)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *len);
		if (nl)
			return nl - buf;
		uint64_t now = clock_ms(CLOCK_MONOTONIC);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (*len == cap || now >= until_ms ||
		    poll(&p, 1, (int)MIN(until_ms - now, INT_MAX)) <= 0)
			return -ETIMEDOUT;
		ssize_t k = fd_read_some(fd, buf + *len, cap - *len);
		if (k == -EAGAIN)
			continue;
		if (k <= 0)
			return k < 0 ? k : -EPIPE;
		*len += (size_t)k;
	}
}

void fd_line_consume(char *buf, size_t *len, size_t k)
{
	memmove(buf, buf + k + 1, *len - k - 1);
	*len -= k + 1;
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

int copy_sparse(int in, int out)
{
	struct stat st;
	if (fstat(in, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (ioctl(out, FICLONE, in) == 0)
		return 0;
	for (off_t off = 0; off < st.st_size;) {
		off_t d = lseek(in, off, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;
			return negative_errno();
		}
		off_t e = lseek(in, d, SEEK_HOLE);
		if (e < 0)
			e = st.st_size;
		off_t pos_in = d, pos_out = d;
		while (pos_in < e) {
			ssize_t k = copy_file_range(in, &pos_in, out, &pos_out,
						    (size_t)(e - pos_in), 0);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP)) {
				char buf[65536];
				ssize_t n =
					pread(in, buf, (size_t)MIN((off_t)sizeof(buf), e - pos_in),
					      pos_in);
				if (n <= 0)
					return n < 0 ? negative_errno() : -EIO;
				for (ssize_t w = 0; w < n;) {
					ssize_t x =
						pwrite(out, buf + w, (size_t)(n - w), pos_out + w);
					if (x < 0 && errno == EINTR)
						continue;
					if (x <= 0)
						return x < 0 ? negative_errno() : -EIO;
					w += x;
				}
				pos_in += n;
				pos_out += n;
				continue;
			}
			if (k <= 0)
				return k < 0 ? negative_errno() : -EIO;
		}
		off = e;
	}
	return ftruncate(out, st.st_size) < 0 ? negative_errno() : 0;
}

extern char **environ;

int run_program_quiet(char *const *argv)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

ssize_t fd_send_with_fd(int sock, const void *p, size_t n, int fd)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.b;
		m.msg_controllen = sizeof(u.b);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ssize_t k = sendmsg(sock, &m, MSG_NOSIGNAL);
	return k < 0 ? negative_errno() : k;
}

ssize_t fd_recv_with_fd(int sock, void *p, size_t n, int *ret_fd)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = p, .iov_len = n };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	*ret_fd = -1;
	ssize_t k = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	if (k < 0)
		return negative_errno();
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	return k;
}
