/* chan.c - capsem-chan: the guest's end of the channel mux (docs/PROTOCOL.md §10) when the VM's
 * host channel is a virtio-serial port ("capsem.chan") instead of vsock.
 *
 * capsem-init opens the port and hands it over as fd 3 (and restarts us if we die). We listen on
 * a Unix socket per host port in HOSTCONN_DIR (5000 control, 5002 net, 5003 MCP, 5007 DNS):
 * guest processes find them through hostconn_addr() and connect there instead of to vsock; each
 * connection becomes a stream to that host port. Streams the host opens to port 5001 (exec) are
 * connected to the agent's socket HOSTCONN_EXEC_LISTEN. The mux and the splicing are
 * src/chan/chanio.c; this file is the poll loop around them.
 *
 * Trust boundary: the host's frames (chanio/chanmux check them); local clients are guest
 * processes, which vsock would let connect to the host anyway (the sockets are 0666 like vsock).
 * Single thread, poll(2).
 */
#include "chan.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "chanio.h"
#include "fdutil.h"
#include "hostconn.h"
#include "log.h"
#include "macro.h"
#include "proto.h"

static const uint32_t host_ports[] = { PROTO_PORT_CONTROL, PROTO_PORT_NET, PROTO_PORT_MCP,
				       PROTO_PORT_DNS };

static int listen_port(uint32_t port)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), HOSTCONN_DIR "/%u", port);
	(void)unlink(a.sun_path); /* ours, from a run before a restart */
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(a.sun_path, 0666) < 0 ||
	    listen(fd, 128) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

/* The host opens a stream to a guest port: only the agent's exec port is served. */
static int open_local(void *userdata, uint32_t port, const char *tag)
{
	(void)userdata;
	(void)tag;
	if (port != PROTO_PORT_EXEC)
		return -ECONNREFUSED;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", HOSTCONN_EXEC_LISTEN);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS &&
	    errno != EAGAIN) {
		int r = negative_errno();
		safe_close(fd);
		return r == -ENOENT ? -ECONNREFUSED : r;
	}
	return fd;
}

int chan_main(int argc, char **argv)
{
	struct chanio *c = NULL;
	int lfd[ELEMENTSOF(host_ports)];
	static struct pollfd p[ELEMENTSOF(host_ports) + CHANIO_MAX_FDS];
	struct chanio_ops ops = { .open_local = open_local };
	(void)argc;
	(void)argv;
	if (mkdir_p(HOSTCONN_DIR, 0755) < 0)
		return log_error_errno(negative_errno(), "capsem-chan: cannot make " HOSTCONN_DIR),
		       1;
	for (size_t i = 0; i < ELEMENTSOF(host_ports); i++) {
		lfd[i] = listen_port(host_ports[i]);
		if (lfd[i] < 0)
			return log_error_errno(lfd[i], "capsem-chan: cannot listen for port %u",
					       host_ports[i]),
			       1;
	}
	int r = chanio_new(CHANMUX_SIDE_GUEST, 3, &ops, &c);
	if (r < 0)
		return log_error_errno(r, "capsem-chan: the channel port (fd 3)"), 1;
	for (;;) {
		size_t n = 0;
		for (size_t i = 0; i < ELEMENTSOF(host_ports); i++)
			p[n++] = (struct pollfd){ .fd = lfd[i], .events = POLLIN };
		size_t first = n;
		n += chanio_fds(c, p + n, ELEMENTSOF(p) - n);
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = negative_errno();
			break;
		}
		for (size_t i = 0; i < first; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			int fd = accept4(lfd[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd >= 0)
				(void)chanio_connect(c, fd, host_ports[i], "", false);
		}
		r = 0;
		/* (descriptors may be closed by an earlier one's handling: chanio skips those) */
		for (size_t i = first; i < n && r == 0; i++)
			if (p[i].fd >= 0 && p[i].revents)
				r = chanio_ready(c, p[i].fd, p[i].revents);
		if (r < 0)
			break;
	}
	log_error_errno(r, "capsem-chan: the host channel ended");
	chanio_free(c);
	return 1;
}
