/* vsock.c - libuv glue of the vhost-user-vsock back end: sockets, kicks, queue processing.
 *
 * Owns the two listening sockets (vhost-user for QEMU, hybrid vsock for host processes), the one
 * QEMU connection, a uv_poll per kick eventfd and per host connection, and wires them to
 * vhost_user (protocol state, guest memory, vrings) and vsock_dev (connections). Queue processing
 * is bounded per callback: a tx burst larger than TX_BUDGET re-kicks itself so other fds get
 * their turn. Trust boundary: this file touches no guest memory itself; it passes the vrings and
 * memory map to vsock_dev, and reports queues the guest broke. Runs on the caller's libuv loop
 * thread only.
 */
#include "vsock.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"
#include "macro.h"
#include "vhost_user.h"
#include "vsock_dev.h"

#define TX_BUDGET 256u
#define ACCEPT_RETRY_MS 100
#define Q_RX 0u
#define Q_TX 1u

enum poll_kind {
	P_VHOST_LISTEN,
	P_VHOST_CONN,
	P_UDS_LISTEN,
	P_KICK,
	P_CONN,
};

struct bpoll {
	uv_poll_t h;
	struct vsock_backend *b;
	enum poll_kind kind;
	unsigned q;		 /* P_KICK */
	struct vsock_conn *conn; /* P_CONN; NULL once released */
	int fd;
};

struct vsock_backend {
	uv_loop_t *loop;
	char *vhost_path;
	char *uds_path;
	void (*on_error)(void *userdata, const char *what);
	void *(*tap_open)(void *tap_userdata, uint32_t port, const char *tag);
	void *tap_userdata;
	void *userdata;

	struct vsock_dev *dev;
	struct vhost_user_dev vu;

	struct bpoll *vhost_listen;
	struct bpoll *uds_listen;
	struct bpoll *vhost_conn;
	struct bpoll *kick[VHOST_USER_NQUEUES];

	unsigned handles; /* open uv handles (closing ones included) */
	bool closing;
	bool processing, again;
	uv_timer_t retry; /* re-arms the listeners after an accept() failure */
	bool retry_init;
	bool vhost_created, uds_created;
};

static void report(struct vsock_backend *b, const char *what)
{
	log_debug("%s", what);
	if (b->on_error && !b->closing)
		b->on_error(b->userdata, what);
}

static void backend_release(struct vsock_backend *b)
{
	free(b->vhost_path);
	free(b->uds_path);
	free(b);
}

/* ---- poll handles ---- */

static void poll_cb(uv_poll_t *h, int status, int events);

static void bpoll_closed(uv_handle_t *h)
{
	struct bpoll *p = h->data;
	struct vsock_backend *b = p->b;
	free(p);
	b->handles--;
	if (b->closing && b->handles == 0)
		backend_release(b);
}

static void timer_closed(uv_handle_t *h)
{
	struct vsock_backend *b = h->data;
	b->handles--;
	if (b->closing && b->handles == 0)
		backend_release(b);
}

static struct bpoll *bpoll_new(struct vsock_backend *b, int fd, enum poll_kind kind, int events)
{
	struct bpoll *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->b = b;
	p->kind = kind;
	p->fd = fd;
	if (uv_poll_init(b->loop, &p->h, fd) < 0) {
		free(p);
		return NULL;
	}
	p->h.data = p;
	b->handles++;
	if (events && uv_poll_start(&p->h, events, poll_cb) < 0) {
		uv_close((uv_handle_t *)&p->h, bpoll_closed);
		return NULL;
	}
	return p;
}

/* Stop and free the handle; close its fd too when close_fd. Safe on NULL. */
static void bpoll_close(struct bpoll *p, bool close_fd)
{
	if (!p)
		return;
	uv_close((uv_handle_t *)&p->h, bpoll_closed); /* removes fd from epoll now */
	if (close_fd)
		safe_close(p->fd);
	p->fd = -1;
	p->conn = NULL;
}

/* ---- queue processing ---- */

static void process_queues(struct vsock_backend *b)
{
	if (b->closing)
		return;
	if (b->processing) {
		b->again = true;
		return;
	}
	b->processing = true;
	do {
		b->again = false;
		if (vhost_user_vring_active(&b->vu, Q_TX)) {
			int r = vsock_dev_process_tx(b->dev, &b->vu.vr[Q_TX].vq, &b->vu.mem,
						     TX_BUDGET);
			vhost_user_vring_signal(&b->vu, Q_TX);
			if (r < 0) {
				vhost_user_vring_error(&b->vu, Q_TX);
				report(b, "vsock: guest broke the tx queue");
			} else if ((unsigned)r == TX_BUDGET) {
				/* more may wait: come back after the other fds had a turn */
				uint64_t one = 1;
				(void)!write(b->vu.vr[Q_TX].kick_fd, &one, sizeof(one));
			}
		}
		if (vhost_user_vring_active(&b->vu, Q_RX) && vsock_dev_rx_pending(b->dev)) {
			int r = vsock_dev_process_rx(b->dev, &b->vu.vr[Q_RX].vq, &b->vu.mem);
			vhost_user_vring_signal(&b->vu, Q_RX);
			if (r < 0) {
				vhost_user_vring_error(&b->vu, Q_RX);
				report(b, "vsock: guest broke the rx queue");
			}
		}
	} while (b->again);
	b->processing = false;
}

/* ---- vsock_dev ops: host Unix sockets ---- */

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
	size_t n = strlen(path);
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	if (n == 0 || n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memcpy(sa->sun_path, path, n + 1);
	return 0;
}

static int dev_connect(void *userdata, uint32_t port)
{
	struct vsock_backend *b = userdata;
	struct sockaddr_un sa;
	char path[sizeof(sa.sun_path)];
	int k = snprintf(path, sizeof(path), "%s_%" PRIu32, b->uds_path, port);
	if (k < 0 || (size_t)k >= sizeof(path))
		return -ENAMETOOLONG;
	int r = fill_addr(&sa, path);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	/* a Unix connect completes at once or fails (EAGAIN: the listener's backlog is full) */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		return negative_errno();
	return TAKE_FD(fd);
}

static int uv_events(unsigned ev)
{
	int e = 0;
	if (ev & VSOCK_EV_READ)
		e |= UV_READABLE;
	if (ev & VSOCK_EV_WRITE)
		e |= UV_WRITABLE;
	if (ev & VSOCK_EV_HUP)
		e |= UV_DISCONNECT;
	return e;
}

static void dev_watch(void *userdata, struct vsock_conn *c, int fd, unsigned events)
{
	struct vsock_backend *b = userdata;
	struct bpoll *p = vsock_conn_get_data(c);
	if (!p) {
		if (events == 0)
			return;
		p = bpoll_new(b, fd, P_CONN, 0);
		if (!p) {
			/* cannot watch it: it will be dropped with the device; say so once */
			report(b, "vsock: cannot watch a host socket");
			return;
		}
		p->conn = c;
		vsock_conn_set_data(c, p);
	}
	if (events == 0)
		uv_poll_stop(&p->h);
	else
		uv_poll_start(&p->h, uv_events(events), poll_cb);
}

static void dev_release(void *userdata, struct vsock_conn *c, int fd)
{
	struct bpoll *p = vsock_conn_get_data(c);
	vsock_conn_set_data(c, NULL);
	bpoll_close(p, false);
	safe_close(fd);
}

static void *dev_tap_open(void *userdata, uint32_t port, const char *tag)
{
	struct vsock_backend *b = userdata;
	return b->tap_open(b->tap_userdata, port, tag);
}

/* ---- vhost_user ops ---- */

static void vu_kick_fd(void *userdata, unsigned q, int fd)
{
	struct vsock_backend *b = userdata;
	bpoll_close(b->kick[q], false); /* vhost_user owns and closes the fd */
	b->kick[q] = NULL;
	if (fd >= 0 && !b->closing) {
		b->kick[q] = bpoll_new(b, fd, P_KICK, UV_READABLE);
		if (b->kick[q])
			b->kick[q]->q = q;
		else
			report(b, "vsock: cannot watch a kick eventfd");
	}
}

static void vu_queues_changed(void *userdata)
{
	process_queues(userdata);
}

static void vu_reset(void *userdata)
{
	struct vsock_backend *b = userdata;
	vsock_dev_reset(b->dev);
}

static const struct vhost_user_ops vu_ops = {
	.kick_fd = vu_kick_fd,
	.queues_changed = vu_queues_changed,
	.reset = vu_reset,
};

/* ---- QEMU connection ---- */

static void vhost_disconnect(struct vsock_backend *b, int err)
{
	log_debug_errno(err, "vsock: vhost-user connection closed");
	bpoll_close(b->vhost_conn, true);
	b->vhost_conn = NULL;
	vhost_user_dev_reset(&b->vu);
	vsock_dev_reset(b->dev);
	report(b, "vsock: QEMU disconnected");
}

static void vhost_conn_update(struct vsock_backend *b)
{
	int ev = UV_READABLE | UV_DISCONNECT;
	if (buf_len(&b->vu.out) > 0)
		ev |= UV_WRITABLE;
	uv_poll_start(&b->vhost_conn->h, ev, poll_cb);
}

static void vhost_conn_io(struct vsock_backend *b, int status, int events)
{
	int fd = b->vhost_conn->fd;
	int r = status < 0 ? -EIO : 0;
	if (r == 0 && (events & (UV_READABLE | UV_DISCONNECT)))
		r = vhost_user_dev_read(&b->vu, fd);
	if (!b->vhost_conn)
		return; /* closed from a callback */
	if (r == 0 || buf_len(&b->vu.out) > 0) {
		int k = vhost_user_dev_flush(&b->vu, fd);
		if (k < 0 && k != -EAGAIN && r == 0)
			r = k;
	}
	if (r < 0) {
		vhost_disconnect(b, r);
		return;
	}
	vhost_conn_update(b);
}

static void listeners_resume(uv_timer_t *t)
{
	struct vsock_backend *b = t->data;
	if (b->closing)
		return;
	uv_poll_start(&b->vhost_listen->h, UV_READABLE, poll_cb);
	uv_poll_start(&b->uds_listen->h, UV_READABLE, poll_cb);
}

/* accept() failed for want of fds or memory: stop polling that listener (it would fire again at
 * once) and try again a little later. */
static void listener_pause(struct vsock_backend *b, struct bpoll *l, const char *what)
{
	uv_poll_stop(&l->h);
	uv_timer_start(&b->retry, listeners_resume, ACCEPT_RETRY_MS, 0);
	report(b, what);
}

static bool accept_retry(int err)
{
	return err == EINTR || err == ECONNABORTED;
}

static void vhost_accept(struct vsock_backend *b)
{
	for (;;) {
		int fd = accept4(b->vhost_listen->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (accept_retry(errno))
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				listener_pause(b, b->vhost_listen,
					       "vsock: accept on the vhost-user socket failed");
			return;
		}
		if (b->vhost_conn) {
			log_debug("vsock: second vhost-user connection refused");
			safe_close(fd);
			continue;
		}
		b->vhost_conn = bpoll_new(b, fd, P_VHOST_CONN, UV_READABLE | UV_DISCONNECT);
		if (!b->vhost_conn) {
			safe_close(fd);
			report(b, "vsock: cannot watch the vhost-user connection");
		}
	}
}

static void uds_accept(struct vsock_backend *b)
{
	for (;;) {
		int fd = accept4(b->uds_listen->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (accept_retry(errno))
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				listener_pause(b, b->uds_listen,
					       "vsock: accept on the hybrid socket failed");
			return;
		}
		int r = vsock_dev_host_accept(b->dev, fd);
		if (r < 0)
			log_debug_errno(r, "vsock: host connection refused");
	}
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
	struct bpoll *p = h->data;
	struct vsock_backend *b = p->b;

	if (b->closing || p->fd < 0)
		return;
	switch (p->kind) {
	case P_VHOST_LISTEN:
		vhost_accept(b);
		break;
	case P_VHOST_CONN:
		vhost_conn_io(b, status, events);
		break;
	case P_UDS_LISTEN:
		uds_accept(b);
		break;
	case P_KICK: {
		uint64_t v;
		(void)!read(p->fd, &v, sizeof(v)); /* drain; EAGAIN is fine */
		break;
	}
	case P_CONN: {
		unsigned ev = 0;
		if (!p->conn)
			return;
		if (status < 0)
			ev |= VSOCK_EV_ERR;
		if (events & UV_READABLE)
			ev |= VSOCK_EV_READ;
		if (events & UV_WRITABLE)
			ev |= VSOCK_EV_WRITE;
		if (events & UV_DISCONNECT)
			ev |= VSOCK_EV_HUP;
		vsock_dev_conn_io(b->dev, p->conn, ev);
		break;
	}
	}
	process_queues(b);
}

/* ---- setup ---- */

static int listen_unix(const char *path)
{
	struct sockaddr_un sa;
	struct stat st;
	int r = fill_addr(&sa, path);
	if (r < 0)
		return r;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		if (unlink(path) < 0)
			return negative_errno();
	} else if (errno != ENOENT) {
		return negative_errno();
	}
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	/* nobody can connect before listen(), so there is no window with a looser mode */
	if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = negative_errno();
		unlink(path);
		return r;
	}
	return TAKE_FD(fd);
}

/* Both listening sockets; they are created before any libuv handle so that the usual failures
 * (bad path, stale non-socket file) leave nothing behind. */
static int backend_listen(struct vsock_backend *b, int *ret_vfd, int *ret_ufd)
{
	_cleanup_close_ int vfd = listen_unix(b->vhost_path);
	if (vfd < 0)
		return vfd;
	b->vhost_created = true;
	int ufd = listen_unix(b->uds_path);
	if (ufd < 0)
		return ufd;
	b->uds_created = true;
	*ret_vfd = TAKE_FD(vfd);
	*ret_ufd = ufd;
	return 0;
}

int vsock_backend_new(uv_loop_t *loop, const struct vsock_backend_config *cfg,
		      struct vsock_backend **ret)
{
	int r;
	if (!loop || !cfg || !cfg->vhost_socket || !cfg->uds_path || cfg->guest_cid < 3 ||
	    cfg->guest_cid >= UINT32_MAX)
		return -EINVAL;
	struct vsock_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->loop = loop;
	b->on_error = cfg->on_error;
	b->userdata = cfg->userdata;
	b->vhost_path = strdup(cfg->vhost_socket);
	b->uds_path = strdup(cfg->uds_path);
	vhost_user_dev_init(&b->vu, cfg->guest_cid, &vu_ops, b);
	int vfd = -1, ufd = -1;
	if (!b->vhost_path || !b->uds_path) {
		r = -ENOMEM;
		goto fail;
	}
	struct vsock_dev_ops ops = {
		.connect = dev_connect,
		.watch = dev_watch,
		.release = dev_release,
	};
	if (cfg->tap_open) {
		b->tap_open = cfg->tap_open;
		b->tap_userdata = cfg->tap_userdata;
		ops.tap_open = dev_tap_open;
		ops.tap_data = cfg->tap_data;
		ops.tap_close = cfg->tap_close;
	}
	r = vsock_dev_new(cfg->guest_cid, &ops, b, &b->dev);
	if (r < 0)
		goto fail;
	r = backend_listen(b, &vfd, &ufd);
	if (r < 0)
		goto fail;

	/* libuv handles from here on; only memory can run out */
	uv_timer_init(loop, &b->retry);
	b->retry.data = b;
	b->handles++;
	b->retry_init = true;
	b->vhost_listen = bpoll_new(b, vfd, P_VHOST_LISTEN, UV_READABLE);
	if (b->vhost_listen)
		vfd = -1;
	b->uds_listen = bpoll_new(b, ufd, P_UDS_LISTEN, UV_READABLE);
	if (b->uds_listen)
		ufd = -1;
	if (!b->vhost_listen || !b->uds_listen) {
		r = -ENOMEM;
		goto fail;
	}
	*ret = b;
	return 0;
fail:
	safe_close(vfd);
	safe_close(ufd);
	vsock_backend_free(b);
	return r;
}

void vsock_backend_free(struct vsock_backend *b)
{
	if (!b || b->closing)
		return;
	vsock_dev_free(b->dev); /* releases every host connection */
	b->dev = NULL;
	b->closing = true;
	vhost_user_dev_reset(&b->vu); /* closes kick polls through vu_kick_fd, unmaps memory */
	for (unsigned q = 0; q < VHOST_USER_NQUEUES; q++) {
		bpoll_close(b->kick[q], false);
		b->kick[q] = NULL;
	}
	if (b->retry_init)
		uv_close((uv_handle_t *)&b->retry, timer_closed);
	bpoll_close(b->vhost_conn, true);
	bpoll_close(b->vhost_listen, true);
	bpoll_close(b->uds_listen, true);
	b->vhost_conn = b->vhost_listen = b->uds_listen = NULL;
	if (b->vhost_created)
		unlink(b->vhost_path);
	if (b->uds_created)
		unlink(b->uds_path);
	if (b->handles == 0)
		backend_release(b);
}
