/* unixlisten.c - a Unix-socket listener on a libuv loop: unix_listen() + uv_poll + accept4.
 *
 * Shared by the per-VM egress service (the proxy's and the DNS server's sockets), the MCP
 * gateway (its session socket) and capsem-vm (the sockets QEMU and the guest agent connect to,
 * and --control). uv_poll rather than a uv_pipe server: the owners decide per connection what
 * the fd becomes (a uv_pipe, a uv_poll watch, a proxy connection) and how many to take per
 * readiness notice, and a full accept queue or a refused connection never stops the listener.
 *
 * Trust boundary: none of its own: whoever connects is the owner's business (the sockets live
 * in directories only the user can reach; the owners treat every peer as hostile).
 * Thread: the loop thread.
 */
#include "unixlisten.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "unixsock.h"

static void on_readable(uv_poll_t *h, int status, int events)
{
	struct unix_listener *l = h->data;
	/* an error on a listening socket is tried like a readiness notice: accept4 reports it */
	for (unsigned i = 0; l->open && (l->max_per_wake == 0 || i < l->max_per_wake); i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		l->on_accept(l, fd);
	}
}

static int start(struct unix_listener *l, uv_loop_t *loop, int fd, unsigned max_per_wake,
		 unix_listener_accept_cb on_accept)
{
	void *userdata = l->userdata;
	*l = (struct unix_listener){
		.fd = fd, .max_per_wake = max_per_wake, .on_accept = on_accept, .userdata = userdata
	};
	int r = uv_poll_init(loop, &l->h, fd);
	if (r < 0) {
		close(fd);
		l->fd = -1;
		return r;
	}
	l->h.data = l;
	l->open = true;
	r = uv_poll_start(&l->h, UV_READABLE, on_readable);
	if (r < 0) {
		unix_listener_close(l, NULL);
		return r;
	}
	return 0;
}

int unix_listener_open(struct unix_listener *l, uv_loop_t *loop, const char *path, int backlog,
		       unsigned max_per_wake, unix_listener_accept_cb on_accept)
{
	int fd = unix_listen(path, backlog);
	if (fd < 0)
		return fd;
	return start(l, loop, fd, max_per_wake, on_accept);
}

int unix_listener_adopt(struct unix_listener *l, uv_loop_t *loop, int fd, unsigned max_per_wake,
			unix_listener_accept_cb on_accept)
{
	int acc = 0;
	socklen_t al = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc ||
	    fd_set_cloexec(fd, 1) < 0 || fd_set_nonblock(fd, 1) < 0) {
		close(fd);
		return -ENOTSOCK;
	}
	return start(l, loop, fd, max_per_wake, on_accept);
}

static void on_closed(uv_handle_t *h)
{
	struct unix_listener *l = h->data;
	if (l->on_close)
		l->on_close(l);
}

void unix_listener_close(struct unix_listener *l, unix_listener_close_cb on_close)
{
	if (!l->open)
		return;
	l->open = false;
	l->on_close = on_close;
	uv_poll_stop(&l->h);
	uv_close((uv_handle_t *)&l->h, on_closed);
	close(l->fd);
	l->fd = -1;
}
