/* unixsock.c - Unix socket helpers shared by the host binaries. Caller's thread. The hybrid-vsock
 * reply line comes from our own vsock backend, but it is still parsed with a hard cap. */
#include "unixsock.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "fdutil.h"
#include "macro.h"
#include "parse.h"

/* Fill sa for path. A path longer than sun_path is reached through its directory: *ret_dirfd
 * gets an O_PATH fd of the directory and sa names "/proc/self/fd/N/<base>"; the caller closes it
 * after bind/connect. */
static int fill_addr(struct sockaddr_un *sa, const char *path, int *ret_dirfd)
{
	size_t n = strlen(path);
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	*ret_dirfd = -1;
	if (n == 0)
		return -EINVAL;
	if (n < sizeof(sa->sun_path)) {
		memcpy(sa->sun_path, path, n + 1);
		return 0;
	}
	const char *slash = strrchr(path, '/');
	if (!slash || slash == path || strlen(slash + 1) == 0)
		return -ENAMETOOLONG;
	_cleanup_free_ char *dir = strndup(path, (size_t)(slash - path));
	if (!dir)
		return -ENOMEM;
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return negative_errno();
	int k = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dfd, slash + 1);
	if (k < 0 || (size_t)k >= sizeof(sa->sun_path)) {
		safe_close(dfd);
		return -ENAMETOOLONG;
	}
	*ret_dirfd = dfd;
	return 0;
}

int unix_listen(const char *path, int backlog)
{
	struct sockaddr_un sa;
	_cleanup_close_ int dfd = -1;
	int r = fill_addr(&sa, path, &dfd);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (unlink(path) < 0 && errno != ENOENT)
		return negative_errno();
	mode_t old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		return negative_errno();
	if (listen(fd, backlog) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

int unix_connect(const char *path, int nonblock)
{
	struct sockaddr_un sa;
	_cleanup_close_ int dfd = -1;
	int r = fill_addr(&sa, path, &dfd);
	if (r < 0)
		return r;
	_cleanup_close_ int fd =
		socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		return negative_errno();
	return TAKE_FD(fd);
}

int hvsock_connect(const char *uds_path, uint32_t port, const char *tag, int timeout_ms)
{
	char line[48];
	size_t n = 0;
	int r;
	_cleanup_close_ int fd = unix_connect(uds_path, 0);
	if (fd < 0)
		return fd;
	int k = snprintf(line, sizeof(line), "CONNECT %u%s%s\n", port, tag ? " " : "",
			 tag ? tag : "");
	if (k < 0 || (size_t)k >= sizeof(line))
		return -EINVAL;
	r = fd_write_all(fd, line, (size_t)k);
	if (r < 0)
		return r;
	/* read the reply byte by byte so nothing past the newline is consumed */
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return negative_errno();
		if (pr == 0)
			return -ETIMEDOUT;
		ssize_t got = fd_read_some(fd, line + n, 1);
		if (got < 0)
			return (int)got;
		if (got == 0)
			return -ECONNREFUSED; /* the backend closes at once on a guest RST */
		if (line[n] == '\n')
			break;
		if (++n == sizeof(line) - 1)
			return -EBADMSG;
	}
	line[n] = 0;
	uint32_t lp;
	if (n < 4 || memcmp(line, "OK ", 3) != 0 || parse_u32(line + 3, &lp) < 0)
		return -EBADMSG;
	return TAKE_FD(fd);
}
