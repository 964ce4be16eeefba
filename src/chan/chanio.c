/* chanio.c - the channel mux spliced to file descriptors (chanio.h).
 *
 * Each stream pairs a mux stream id with a local socket. Bytes from the local socket go out as
 * DATA only while the peer's credit lasts (chanmux_room): when it is spent the socket is not
 * read, so the local writer blocks, which is the backpressure. Bytes from the peer wait in the
 * stream's queue until the local socket takes them; only what it took is credited back, so the
 * queue never holds more than a window. The mux's own output is bounded the same way: past
 * CHANIO_OUT_HIGH bytes waiting for the mux fd, no local socket is read.
 *
 * A stream ends in order: local EOF -> SHUTW; the peer's SHUTW -> shutdown(SHUT_WR) once the
 * queue is written; both -> CLOSE. Errors reset it (CLOSE with the reset flag). Trust boundary:
 * the peer's frames (checked by chanmux.c); local sockets are our own processes'. Single thread.
 */
#include "chanio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "fdutil.h"
#include "macro.h"

#define CHANIO_READ (64u * 1024u)
#define CHANIO_OUT_HIGH (4u << 20) /* mux output waiting: stop reading local sockets */

enum { S_OPENING_OUT = 1, S_CONNECTING_IN, S_OPEN };

struct cs {
	uint32_t id, port;
	int fd;
	uint8_t state;
	bool ok_line, local_eof, peer_eof, wr_shut;
	struct buf wq;	 /* peer bytes for the local socket */
	size_t nocredit; /* bytes at wq's front that are ours ("OK <id>\n"), not the peer's */
	void *tap;
	char tag[CHANMUX_TAG_MAX + 1];
};

struct chanio {
	enum chanmux_side side;
	int fd;
	struct chanmux *m;
	struct buf in, out;
	struct chanio_ops ops;
	struct cs **v;
	size_t n, cap;
	bool peer_paused; /* (host) PAUSED arrived */
	bool syncing;	  /* skipping input up to a HELLO (chanmux_sync) */
	uint32_t nonce;	  /* (guest) our HELLO's */
	uint8_t rd[CHANIO_READ];
};

static struct cs *by_id(struct chanio *c, uint32_t id)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i]->id == id)
			return c->v[i];
	return NULL;
}

static struct cs *by_fd(struct chanio *c, int fd)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i]->fd == fd)
			return c->v[i];
	return NULL;
}

static struct cs *cs_add(struct chanio *c, uint32_t id, int fd, uint8_t state)
{
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 16;
		struct cs **nv = realloc(c->v, nc * sizeof(*nv));
		if (!nv)
			return NULL;
		c->v = nv;
		c->cap = nc;
	}
	struct cs *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->id = id;
	s->fd = fd;
	s->state = state;
	buf_init(&s->wq, CHANMUX_WINDOW + 64);
	c->v[c->n++] = s;
	return s;
}

/* Forget s: its fd closed, its tap told why (NULL: an orderly end). */
static void cs_drop(struct chanio *c, struct cs *s, const char *why)
{
	if (s->tap && c->ops.tap_close)
		c->ops.tap_close(s->tap, why);
	safe_close(s->fd);
	buf_done(&s->wq, 0);
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i] == s) {
			c->v[i] = c->v[--c->n];
			break;
		}
	free(s);
}

static void drop_all(struct chanio *c, const char *why)
{
	while (c->n)
		cs_drop(c, c->v[0], why);
}

/* Reset s on both sides. */
static void cs_reset(struct chanio *c, struct cs *s, const char *why)
{
	(void)chanmux_close(c->m, s->id, 1, &c->out);
	cs_drop(c, s, why);
}

int chanio_new(enum chanmux_side side, int mux_fd, const struct chanio_ops *ops,
	       struct chanio **ret)
{
	struct chanio *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->side = side;
	c->fd = mux_fd;
	c->ops = *ops;
	buf_init(&c->in, 2 * (CHANMUX_HDR + CHANMUX_MAX_DATA) + CHANIO_READ);
	buf_init(&c->out, CHANIO_OUT_HIGH + 2 * (CHANMUX_HDR + CHANMUX_MAX_DATA) + CHANIO_READ);
	int r = fd_set_nonblock(mux_fd, 1);
	/* the guest's end may be a restart in the middle of a session: its HELLO carries a
	 * fresh nonce, and it reads nothing before the host's answer (chanmux.h) */
	while (r == 0 && side == CHANMUX_SIDE_GUEST && !c->nonce)
		if (getrandom(&c->nonce, sizeof(c->nonce), 0) != sizeof(c->nonce))
			r = errno == EINTR ? 0 : negative_errno();
	c->syncing = side == CHANMUX_SIDE_GUEST;
	if (r == 0)
		r = chanmux_new_nonce(side, c->nonce, &c->out, &c->m);
	if (r < 0) {
		buf_done(&c->in, 0);
		buf_done(&c->out, 0);
		free(c);
		return r;
	}
	*ret = c;
	return 0;
}

void chanio_free(struct chanio *c)
{
	if (!c)
		return;
	drop_all(c, "the channel ended");
	free(c->v);
	chanmux_free(c->m);
	buf_done(&c->in, 0);
	buf_done(&c->out, 0);
	safe_close(c->fd);
	free(c);
}

size_t chanio_count(const struct chanio *c)
{
	return c->n;
}

int chanio_pause(struct chanio *c)
{
	int r = chanmux_pause(c->m, &c->out);
	if (r == 0)
		drop_all(c, "the VM is being suspended");
	return r;
}

bool chanio_paused(const struct chanio *c)
{
	return c->peer_paused;
}

int chanio_restart(struct chanio *c)
{
	struct chanmux *m = NULL;
	drop_all(c, "the channel restarted");
	buf_consume(&c->in, buf_len(&c->in)); /* the old session's bytes */
	int r = chanmux_new(c->side, &c->out, &m);
	if (r < 0)
		return r;
	chanmux_free(c->m);
	c->m = m;
	c->peer_paused = false;
	c->syncing = false; /* the paused guest answers this HELLO with its own, plain */
	return 0;
}

/* (host) The guest broke the protocol: every stream is gone, and the byte stream is read again
 * from the guest's next HELLO, which its end sends when it starts over (chanmux.h). 0 or
 * -ENOMEM. */
static int resync(struct chanio *c)
{
	struct chanmux *m = NULL;
	struct buf hello = BUF_INIT(CHANMUX_HELLO_MAX); /* ours went out long ago */
	int r = chanmux_new(c->side, &hello, &m);
	buf_done(&hello, 0);
	if (r < 0)
		return r;
	drop_all(c, "the guest broke the channel's protocol");
	chanmux_free(c->m);
	c->m = m;
	c->peer_paused = false;
	c->syncing = true;
	return 0;
}

bool chanio_syncing(const struct chanio *c)
{
	return c->syncing;
}

int chanio_connect(struct chanio *c, int fd, uint32_t port, const char *tag, bool ok_line)
{
	uint32_t id;
	/* no new stream in a session that is ending, nor (host) while the guest's end is
	 * awaited: it would skip the OPEN */
	if (chanmux_is_paused(c->m) || (c->syncing && c->side == CHANMUX_SIDE_HOST)) {
		safe_close(fd);
		return -EAGAIN;
	}
	int r = fd_set_nonblock(fd, 1);
	if (r == 0)
		r = chanmux_open(c->m, port, tag ? tag : "", &c->out, &id);
	struct cs *s = r == 0 ? cs_add(c, id, fd, S_OPENING_OUT) : NULL;
	if (!s) {
		if (r == 0) {
			(void)chanmux_close(c->m, id, 1, &c->out);
			r = -ENOMEM;
		}
		safe_close(fd);
		return r;
	}
	s->ok_line = ok_line;
	s->port = port;
	snprintf(s->tag, sizeof(s->tag), "%s", tag ? tag : "");
	if (c->ops.tap_open)
		s->tap = c->ops.tap_open(c->ops.userdata, port, s->tag);
	return 0;
}

/* Write what s's queue holds to its socket; credit back what it took. */
static void cs_flush(struct chanio *c, struct cs *s)
{
	while (buf_len(&s->wq)) {
		ssize_t k = send(s->fd, buf_head(&s->wq), buf_len(&s->wq), MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (k <= 0) {
			cs_reset(c, s, "the local socket failed");
			return;
		}
		buf_consume(&s->wq, (size_t)k);
		size_t own = MIN((size_t)k, s->nocredit);
		s->nocredit -= own;
		if (s->state == S_OPEN && (size_t)k > own &&
		    chanmux_consumed(c->m, s->id, (size_t)k - own, &c->out) < 0) {
			cs_reset(c, s, "flow control");
			return;
		}
	}
	if (s->peer_eof && !s->wr_shut) {
		(void)shutdown(s->fd, SHUT_WR);
		s->wr_shut = true;
	}
	if (s->peer_eof && s->local_eof) {
		(void)chanmux_close(c->m, s->id, 0, &c->out);
		cs_drop(c, s, NULL);
	}
}

/* Read from s's socket what the peer's credit allows. */
static void cs_read(struct chanio *c, struct cs *s)
{
	size_t room = chanmux_room(c->m, s->id);
	if (!room || buf_len(&c->out) >= CHANIO_OUT_HIGH)
		return;
	ssize_t k = recv(s->fd, c->rd, MIN(room, sizeof(c->rd)), 0);
	if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (k < 0) {
		cs_reset(c, s, "the local socket failed");
		return;
	}
	if (k == 0) {
		s->local_eof = true;
		(void)chanmux_shutdown(c->m, s->id, &c->out);
		if (s->peer_eof && !buf_len(&s->wq)) {
			(void)chanmux_close(c->m, s->id, 0, &c->out);
			cs_drop(c, s, NULL);
		}
		return;
	}
	if (s->tap && c->ops.tap_data)
		c->ops.tap_data(s->tap, c->side == CHANMUX_SIDE_HOST, c->rd, (size_t)k);
	if (chanmux_send(c->m, s->id, c->rd, (size_t)k, &c->out) != k)
		cs_reset(c, s, "the channel refused data");
}

static void on_event(struct chanio *c, const struct chanmux_ev *ev)
{
	struct cs *s = ev->type == CHANMUX_EV_OPEN ? NULL : by_id(c, ev->id);
	switch (ev->type) {
	case CHANMUX_EV_OPEN: {
		int fd = c->ops.open_local(c->ops.userdata, ev->port, ev->tag ? ev->tag : "");
		if (fd < 0) {
			(void)chanmux_refuse(c->m, ev->id, (uint32_t)-fd, &c->out);
			return;
		}
		s = cs_add(c, ev->id, fd, S_CONNECTING_IN);
		if (!s) {
			safe_close(fd);
			(void)chanmux_refuse(c->m, ev->id, ENOMEM, &c->out);
			return;
		}
		s->port = ev->port;
		(void)fd_set_nonblock(fd, 1);
		return; /* accepted once the local connect completes (POLLOUT) */
	}
	case CHANMUX_EV_ACCEPTED:
		if (!s)
			return;
		s->state = S_OPEN;
		if (s->ok_line) {
			char line[32];
			int n = snprintf(line, sizeof(line), "OK %u\n", s->id);
			if (buf_append(&s->wq, line, (size_t)n) == 0)
				s->nocredit = (size_t)n; /* not the peer's: no credit owed */
		}
		return;
	case CHANMUX_EV_REFUSED:
		if (s)
			cs_drop(c, s, "the guest refused the connection");
		return;
	case CHANMUX_EV_DATA:
		if (!s)
			return;
		if (s->tap && c->ops.tap_data)
			c->ops.tap_data(s->tap, c->side != CHANMUX_SIDE_HOST, ev->data, ev->len);
		if (buf_append(&s->wq, ev->data, ev->len) < 0)
			cs_reset(c, s, "queue overflow");
		else
			cs_flush(c, s);
		return;
	case CHANMUX_EV_EOF:
		if (!s)
			return;
		s->peer_eof = true;
		cs_flush(c, s);
		return;
	case CHANMUX_EV_CLOSED:
		if (s)
			cs_drop(c, s, ev->flags ? "reset by the peer" : NULL);
		return;
	case CHANMUX_EV_PAUSE: /* (guest) the host is saving the VM or going away */
		drop_all(c, "the host paused the channel");
		(void)chanmux_paused(c->m, &c->out);
		return;
	case CHANMUX_EV_PAUSED:
		c->peer_paused = true;
		return;
	case CHANMUX_EV_RESET: /* a new session: everything before it is gone */
		drop_all(c, c->side == CHANMUX_SIDE_HOST ? "the guest's channel started over"
							 : "the channel restarted");
		return;
	default:
		return;
	}
}

/* The frames at the front of c->in, from the HELLO a resync waits for on. 0, or -EPROTO when
 * the peer broke the mux (the host resyncs instead). */
static int mux_parse(struct chanio *c)
{
	for (;;) {
		if (c->syncing) {
			size_t skip = 0;
			int found =
				chanmux_sync(buf_head(&c->in), buf_len(&c->in),
					     c->side == CHANMUX_SIDE_GUEST ? c->nonce : 0, &skip);
			buf_consume(&c->in, skip);
			if (!found)
				return 0;
			c->syncing = false;
		}
		struct chanmux_frame f;
		struct chanmux_ev ev;
		ssize_t n = chanmux_frame_parse(buf_head(&c->in), buf_len(&c->in), &f);
		if (n == 0)
			return 0;
		if (n < 0 || chanmux_input(c->m, &f, &c->out, &ev) < 0) {
			if (c->side != CHANMUX_SIDE_HOST || resync(c) < 0)
				return -EPROTO;
			buf_consume(&c->in, n > 0 ? (size_t)n : 1);
			continue;
		}
		on_event(c, &ev);
		buf_consume(&c->in, (size_t)n);
	}
}

/* The mux fd is readable: take whole frames. */
static int mux_read(struct chanio *c)
{
	for (;;) {
		uint8_t *w = buf_reserve(&c->in, CHANIO_READ);
		if (!w)
			return -EPROTO;
		ssize_t k = read(c->fd, w, CHANIO_READ);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (k <= 0)
			return -EPIPE;
		buf_commit(&c->in, (size_t)k);
		int r = mux_parse(c);
		if (r < 0)
			return r;
		if ((size_t)k < CHANIO_READ)
			break;
	}
	return 0;
}

/* How much of c->out one write may take: all of it (host), or (guest) whole frames only, at
 * most one port write (CHANMUX_PORT_WRITE), which the kernel takes whole or not at all: a
 * capsem-chan that dies between two writes leaves the host at a frame boundary. */
static size_t write_size(const struct chanio *c)
{
	const uint8_t *p = buf_head(&c->out);
	size_t n = buf_len(&c->out), k = 0;
	if (c->side == CHANMUX_SIDE_HOST)
		return n;
	while (k + CHANMUX_HDR <= n) {
		size_t f = CHANMUX_HDR + ((size_t)p[k + 8] << 24 | (size_t)p[k + 9] << 16 |
					  (size_t)p[k + 10] << 8 | p[k + 11]);
		if (k + f > n || (k && k + f > CHANMUX_PORT_WRITE))
			break;
		k += f;
	}
	return k ? k : n; /* our frames are whole and fit (chanmux.c): a partial one cannot be */
}

static int mux_write(struct chanio *c)
{
	while (buf_len(&c->out)) {
		ssize_t k = write(c->fd, buf_head(&c->out), write_size(c));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k <= 0)
			return -EPIPE;
		buf_consume(&c->out, (size_t)k);
	}
	return 0;
}

size_t chanio_fds(struct chanio *c, struct pollfd *p, size_t n)
{
	size_t k = 0;
	if (k < n)
		p[k++] = (struct pollfd){
			.fd = c->fd, .events = (short)(POLLIN | (buf_len(&c->out) ? POLLOUT : 0))
		};
	int out_ok = buf_len(&c->out) < CHANIO_OUT_HIGH;
	for (size_t i = 0; i < c->n && k < n; i++) {
		struct cs *s = c->v[i];
		short ev = 0;
		if (s->state == S_CONNECTING_IN || buf_len(&s->wq))
			ev |= POLLOUT;
		if (s->state == S_OPEN && !s->local_eof && out_ok && chanmux_room(c->m, s->id))
			ev |= POLLIN;
		/* nothing wanted: a negative fd, which poll skips (a half-closed socket would
		 * report POLLHUP forever) */
		p[k++] = (struct pollfd){ .fd = ev ? s->fd : -1 - s->fd, .events = ev };
	}
	return k;
}

int chanio_ready(struct chanio *c, int fd, short revents)
{
	if (fd == c->fd) {
		int r = 0;
		if (revents & (POLLIN | POLLHUP | POLLERR))
			r = mux_read(c);
		if (r == 0)
			r = mux_write(c);
		if (r == 0 && (revents & (POLLHUP | POLLERR)) && !(revents & POLLIN))
			r = -EPIPE;
		return r;
	}
	struct cs *s = by_fd(c, fd);
	if (!s)
		return 0;
	if (s->state == S_CONNECTING_IN) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
			return 0;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			(void)chanmux_refuse(c->m, s->id, err ? (uint32_t)err : ECONNREFUSED,
					     &c->out);
			s->tap = NULL;
			cs_drop(c, s, NULL);
		} else if (chanmux_accept(c->m, s->id, &c->out) == 0) {
			s->state = S_OPEN;
		}
		return mux_write(c);
	}
	if (revents & POLLOUT)
		cs_flush(c, s);
	if ((s = by_fd(c, fd)) && (revents & (POLLIN | POLLHUP | POLLERR)))
		cs_read(c, s);
	return mux_write(c);
}
