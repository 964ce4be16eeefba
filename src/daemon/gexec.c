/* gexec.c - exec sessions between capsemd and a guest agent, on the daemon's loop.
 *
 * Both kinds start the same way: a non-blocking connect to <vmdir>/vsock, "CONNECT 5001\n", and
 * the backend's "OK <port>\n" (at most 32 bytes, within 10 s). Then:
 *  - gexec_run: EXEC, stdin streamed in 64 KiB STDIN frames (at most 1 MiB queued), an empty
 *    STDIN frame; STDOUT/STDERR collected with caps until EXIT or ERROR. Used for files.
 *  - gexec_splice: EXEC, then the API client's connection (after its 101) and the guest's are
 *    joined: what one sends is written to the other, reading pauses while more than 1 MiB waits
 *    to be written (backpressure both ways), and either side closing ends both (the guest's
 *    output is flushed to the client first).
 * The CONNECT line carries a tag naming the caller ("file" for gexec_run, the API's via for a
 * splice): capsem-vm records every exec session in the session ledger from the bytes it relays
 * (src/vm/exectrack.c), so the daemon keeps no exec records of its own and its death loses none.
 *
 * Trust boundary: frames from the guest are hostile (parsed with proto.h under a 6 + 1 MiB cap);
 * the spliced bytes are not changed: the API client speaks the exec protocol to the guest
 * directly, as `capsem run` does. Thread: the loop.
 */
#include "gexec.h"

#include <stdio.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "unixsock.h"

#define HANDSHAKE_MS 10000
#define CHUNK 65536u
#define HIGH_WATER (1u << 20)
#define ERR_CAP (64u * 1024u)

/* ---- the hybrid-vsock handshake ---- */

struct hvline {
	char s[33];
	size_t n;
};

/* Feed bytes; 1 when "OK <n>\n" was read (*used = bytes taken), 0 for more, -EBADMSG. */
static int hvline_feed(struct hvline *l, const char *p, size_t n, size_t *used)
{
	for (size_t i = 0; i < n; i++) {
		if (l->n >= sizeof(l->s) - 1)
			return -EBADMSG;
		l->s[l->n++] = p[i];
		if (p[i] == '\n') {
			*used = i + 1;
			return l->n > 4 && memcmp(l->s, "OK ", 3) == 0 ? 1 : -EBADMSG;
		}
	}
	*used = n;
	return 0;
}

static void close_free(uv_handle_t *h)
{
	free(h);
}

static void free_write(uv_write_t *w, int status)
{
	free(w->data);
	free(w);
}

static int hv_open(uv_loop_t *loop, const char *vsock, const char *tag, uv_pipe_t **ret)
{
	char *line = NULL;
	if (asprintf(&line, "CONNECT %u %s\n", PROTO_PORT_EXEC, tag) < 0)
		return -ENOMEM;
	int fd = unix_connect(vsock, 1);
	if (fd < 0) {
		free(line);
		return fd;
	}
	uv_pipe_t *p = calloc(1, sizeof(*p));
	if (!p) {
		free(line);
		safe_close(fd);
		return -ENOMEM;
	}
	uv_pipe_init(loop, p, 0);
	int r = uv_pipe_open(p, fd);
	if (r == 0) {
		uv_write_t *w = calloc(1, sizeof(*w));
		uv_buf_t b = uv_buf_init(line, (unsigned)strlen(line));
		if (w)
			w->data = line;
		r = w ? uv_write(w, (uv_stream_t *)p, &b, 1, free_write) : -ENOMEM;
		if (r == 0)
			line = NULL; /* freed with the write */
		else
			free(w);
	} else {
		safe_close(fd);
	}
	free(line);
	if (r < 0) {
		uv_close((uv_handle_t *)p, close_free);
		return r;
	}
	*ret = p;
	return 0;
}

/* A write of owned bytes. */
struct owrite {
	uv_write_t w;
	void *owner;
	char *data;
	size_t n;
	int dir;
};

/* ==== gexec_run ==== */

struct run {
	uv_pipe_t *h;
	uv_timer_t *timer;
	int phase; /* 0 handshake, 1 running, 2 done */
	struct hvline line;
	struct buf exec_frame;
	struct buf in;
	struct buf stdin_data;
	size_t stdin_off;
	int stdin_closed;
	size_t queued;
	struct gexec_result res;
	gexec_cb cb;
	void *userdata;
	int pending_writes;
	int handle_closed;
};

static void run_maybe_free(struct run *r)
{
	if (r->phase != 2 || r->pending_writes || !r->handle_closed)
		return;
	buf_done(&r->exec_frame, 0);
	buf_done(&r->in, 0);
	buf_done(&r->stdin_data, 0);
	buf_done(&r->res.out, 0);
	buf_done(&r->res.err, 0);
	free(r->res.error);
	free(r);
}

static void run_handle_closed(uv_handle_t *h)
{
	struct run *r = h->data;
	free(h);
	r->handle_closed = 1;
	run_maybe_free(r);
}

static void run_finish(struct run *r, const char *error)
{
	if (r->phase == 2)
		return;
	r->phase = 2;
	if (error && !r->res.error)
		r->res.error = strdup(error);
	uv_close((uv_handle_t *)r->timer, close_free);
	uv_close((uv_handle_t *)r->h, run_handle_closed);
	r->cb(&r->res, r->userdata);
	run_maybe_free(r);
}

static void run_pump(struct run *r);

static void run_on_write(uv_write_t *w, int status)
{
	struct owrite *ow = (struct owrite *)w;
	struct run *r = ow->owner;
	free(ow->data);
	r->queued -= ow->n;
	free(ow);
	r->pending_writes--;
	if (r->phase == 2) {
		run_maybe_free(r);
		return;
	}
	if (status < 0 && status != UV_ECANCELED)
		return; /* the read side reports the end */
	run_pump(r);
}

static int run_write(struct run *r, char *data, size_t n)
{
	struct owrite *ow = calloc(1, sizeof(*ow));
	if (!ow) {
		free(data);
		return -ENOMEM;
	}
	ow->owner = r;
	ow->data = data;
	ow->n = n;
	uv_buf_t b = uv_buf_init(data, (unsigned)n);
	int k = uv_write(&ow->w, (uv_stream_t *)r->h, &b, 1, run_on_write);
	if (k < 0) {
		free(data);
		free(ow);
		return k;
	}
	r->queued += n;
	r->pending_writes++;
	return 0;
}

static int run_frame(struct run *r, uint16_t type, const uint8_t *p, size_t n)
{
	_cleanup_buf_ struct buf f = BUF_INIT(PROTO_HDR_SIZE + n);
	if (proto_frame_append(&f, type, p, n) < 0)
		return -ENOMEM;
	size_t len = buf_len(&f);
	char *d = malloc(len ? len : 1);
	if (!d)
		return -ENOMEM;
	memcpy(d, buf_head(&f), len);
	return run_write(r, d, len);
}

/* Queue STDIN frames while under the high-water mark. */
static void run_pump(struct run *r)
{
	while (r->phase == 1 && !r->stdin_closed && r->queued < HIGH_WATER) {
		size_t left = buf_len(&r->stdin_data) - r->stdin_off;
		if (left == 0) {
			r->stdin_closed = 1;
			buf_done(&r->stdin_data, 0);
			if (run_frame(r, PROTO_STDIN, NULL, 0) < 0)
				run_finish(r, "out of memory");
			return;
		}
		size_t n = MIN(left, (size_t)CHUNK);
		if (run_frame(r, PROTO_STDIN, buf_head(&r->stdin_data) + r->stdin_off, n) < 0) {
			run_finish(r, "out of memory");
			return;
		}
		r->stdin_off += n;
	}
}

static void run_frames(struct run *r)
{
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	ssize_t k = 0;
	while (r->phase == 1 &&
	       (k = proto_frame_parse(buf_head(&r->in), buf_len(&r->in), &type, &pl, &len)) > 0) {
		switch (type) {
		case PROTO_STARTED:
			break;
		case PROTO_STDOUT:
			if (buf_append(&r->res.out, pl, len) < 0) {
				run_finish(r, "the output is larger than the limit");
				return;
			}
			break;
		case PROTO_STDERR:
			(void)buf_append(&r->res.err, pl, MIN((size_t)len, buf_room(&r->res.err)));
			break;
		case PROTO_EXIT:
			if (proto_exit_decode(pl, len, &r->res.exit) < 0) {
				run_finish(r, "protocol error from the guest agent");
				return;
			}
			r->res.ok = 1;
			run_finish(r, NULL);
			return;
		case PROTO_ERROR: {
			struct proto_error e;
			char *m = NULL;
			if (proto_error_decode(pl, len, &e) == 0 &&
			    asprintf(&m, "the guest agent refused the command: %s", e.message) >=
				    0) {
				run_finish(r, m);
				free(m);
			} else {
				run_finish(r, "protocol error from the guest agent");
			}
			return;
		}
		default:
			run_finish(r, "protocol error from the guest agent");
			return;
		}
		buf_consume(&r->in, (size_t)k);
	}
	if (k < 0)
		run_finish(r, "protocol error from the guest agent");
}

static void run_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
	struct run *r = h->data;
	uint8_t *p = buf_reserve(&r->in, CHUNK);
	*b = uv_buf_init((char *)p, p ? CHUNK : 0);
}

static void run_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct run *r = s->data;
	if (nread < 0) {
		run_finish(r, r->phase == 0 ? "the guest agent refused the exec connection"
					    : "the connection to the guest agent was lost");
		return;
	}
	buf_commit(&r->in, (size_t)nread);
	if (r->phase == 0) {
		size_t used;
		int k = hvline_feed(&r->line, (const char *)buf_head(&r->in), buf_len(&r->in),
				    &used);
		buf_consume(&r->in, used);
		if (k < 0) {
			run_finish(r, "bad answer from the vsock backend");
			return;
		}
		if (k == 0)
			return;
		uv_timer_stop(r->timer);
		r->phase = 1;
		size_t n = buf_len(&r->exec_frame);
		char *d = malloc(n);
		if (!d || (memcpy(d, buf_head(&r->exec_frame), n), run_write(r, d, n) < 0)) {
			run_finish(r, "out of memory");
			return;
		}
		buf_done(&r->exec_frame, 0);
		run_pump(r);
	}
	run_frames(r);
}

static void run_on_timeout(uv_timer_t *t)
{
	run_finish(t->data, "the guest agent did not accept the exec connection in time");
}

int gexec_run(uv_loop_t *loop, const char *vsock, struct buf *exec_frame, struct buf *stdin_data,
	      size_t out_cap, gexec_cb cb, void *userdata)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->timer = calloc(1, sizeof(*r->timer));
	if (!r->timer) {
		free(r);
		return -ENOMEM;
	}
	int k = hv_open(loop, vsock, "file", &r->h);
	if (k < 0) {
		free(r->timer);
		free(r);
		return k;
	}
	r->cb = cb;
	r->userdata = userdata;
	r->exec_frame = *exec_frame;
	buf_init(exec_frame, 0);
	r->stdin_data = *stdin_data;
	buf_init(stdin_data, 0);
	buf_init(&r->in, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD + CHUNK);
	buf_init(&r->res.out, out_cap);
	buf_init(&r->res.err, ERR_CAP);
	r->h->data = r;
	uv_timer_init(loop, r->timer);
	r->timer->data = r;
	uv_timer_start(r->timer, run_on_timeout, HANDSHAKE_MS, 0);
	uv_read_start((uv_stream_t *)r->h, run_alloc, run_on_read);
	return 0;
}

/* ==== gexec_splice ==== */

enum { TO_GUEST = 0, TO_CLIENT = 1 };

struct splice {
	uv_loop_t *loop;
	struct httpd_conn *conn; /* until the upgrade */
	uv_pipe_t *side[2];	 /* [TO_GUEST] = the guest stream, [TO_CLIENT] = the client */
	uv_timer_t *timer;
	struct hvline line;
	struct buf exec_frame;
	struct buf pre; /* bytes read from the guest with the OK line, for the client */
	size_t queued[2];
	int paused[2]; /* reading of the source of direction d is paused */
	int open_handles;
	int ending;
};

static void sp_handle_closed(uv_handle_t *h)
{
	struct splice *sp = h->data;
	free(h);
	if (--sp->open_handles == 0) {
		buf_done(&sp->exec_frame, 0);
		buf_done(&sp->pre, 0);
		free(sp);
	}
}

static void sp_close_side(struct splice *sp, int d)
{
	if (sp->side[d]) {
		uv_close((uv_handle_t *)sp->side[d], sp_handle_closed);
		sp->side[d] = NULL;
	}
}

static void sp_end(struct splice *sp)
{
	sp->ending = 1;
	sp_close_side(sp, TO_GUEST);
	sp_close_side(sp, TO_CLIENT);
	if (sp->timer) {
		uv_close((uv_handle_t *)sp->timer, close_free);
		sp->timer = NULL;
	}
}

static void sp_alloc(uv_handle_t *h, size_t sug, uv_buf_t *b)
{
	char *p = malloc(CHUNK);
	*b = uv_buf_init(p, p ? CHUNK : 0);
}

static void sp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* The source of direction d: the client feeds TO_GUEST, the guest feeds TO_CLIENT. */
static uv_pipe_t *sp_source(struct splice *sp, int d)
{
	return sp->side[d == TO_GUEST ? TO_CLIENT : TO_GUEST];
}

static void sp_on_write(uv_write_t *w, int status)
{
	struct owrite *ow = (struct owrite *)w;
	struct splice *sp = ow->owner;
	int d = ow->dir;
	free(ow->data);
	sp->queued[d] -= ow->n;
	free(ow);
	if (sp->ending)
		return;
	if (status < 0) {
		sp_end(sp);
		return;
	}
	if (sp->paused[d] && sp->queued[d] < HIGH_WATER / 2 && sp_source(sp, d)) {
		sp->paused[d] = 0;
		uv_read_start((uv_stream_t *)sp_source(sp, d), sp_alloc, sp_read);
	}
}

static int sp_write(struct splice *sp, int d, char *data, size_t n)
{
	struct owrite *ow = calloc(1, sizeof(*ow));
	if (!ow || !sp->side[d]) {
		free(ow);
		free(data);
		return -EPIPE;
	}
	*ow = (struct owrite){ .owner = sp, .data = data, .n = n, .dir = d };
	uv_buf_t b = uv_buf_init(data, (unsigned)n);
	int k = uv_write(&ow->w, (uv_stream_t *)sp->side[d], &b, 1, sp_on_write);
	if (k < 0) {
		free(data);
		free(ow);
		return k;
	}
	sp->queued[d] += n;
	if (sp->queued[d] > HIGH_WATER && !sp->paused[d] && sp_source(sp, d)) {
		sp->paused[d] = 1;
		uv_read_stop((uv_stream_t *)sp_source(sp, d));
	}
	return 0;
}

static void sp_shutdown_done(uv_shutdown_t *req, int status)
{
	struct splice *sp = req->data;
	free(req);
	sp_end(sp);
}

static void sp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct splice *sp = s->data;
	int from_guest = (uv_pipe_t *)s == sp->side[TO_GUEST];
	int d = from_guest ? TO_CLIENT : TO_GUEST;
	if (nread > 0) {
		if (!sp->side[d])
			free(b->base); /* the guest is gone: the client's late bytes are dropped */
		else if (sp_write(sp, d, b->base, (size_t)nread) < 0)
			sp_end(sp);
		return;
	}
	free(b->base);
	if (nread == 0)
		return;
	if (from_guest && sp->side[TO_CLIENT]) {
		/* the guest is done: flush what the client has not received yet, then close */
		sp_close_side(sp, TO_GUEST);
		uv_shutdown_t *req = calloc(1, sizeof(*req));
		if (req) {
			req->data = sp;
			if (uv_shutdown(req, (uv_stream_t *)sp->side[TO_CLIENT],
					sp_shutdown_done) == 0)
				return;
			free(req);
		}
	}
	sp_end(sp);
}

static void sp_fail(struct splice *sp, const char *msg)
{
	if (sp->conn) {
		httpd_reply_error(sp->conn, 503, "vm_failed", "%s", msg);
		sp->conn = NULL;
	}
	sp_end(sp);
}

static void sp_handshake_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct splice *sp = s->data;
	if (nread <= 0) {
		free(b->base);
		if (nread < 0)
			sp_fail(sp, "the guest agent refused the exec connection");
		return;
	}
	size_t used;
	int k = hvline_feed(&sp->line, b->base, (size_t)nread, &used);
	if (k > 0 && used < (size_t)nread &&
	    buf_append(&sp->pre, b->base + used, (size_t)nread - used) < 0)
		k = -ENOBUFS;
	free(b->base);
	if (k < 0) {
		sp_fail(sp, "bad answer from the vsock backend");
		return;
	}
	if (k == 0)
		return;

	/* the guest accepted: EXEC, 101, then bytes both ways */
	uv_close((uv_handle_t *)sp->timer, close_free);
	sp->timer = NULL;
	uv_read_stop(s);
	size_t n = buf_len(&sp->exec_frame);
	char *d = malloc(n);
	if (!d) {
		sp_fail(sp, "out of memory");
		return;
	}
	memcpy(d, buf_head(&sp->exec_frame), n);
	buf_done(&sp->exec_frame, 0);
	if (sp_write(sp, TO_GUEST, d, n) < 0) {
		sp_fail(sp, "the connection to the guest agent was lost");
		return;
	}
	struct buf leftover;
	uv_stream_t *cs;
	httpd_detach(sp->conn,
		     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: capsem-exec/1\r\n"
		     "Connection: Upgrade\r\n\r\n",
		     &cs, &leftover);
	uv_pipe_t *client = (uv_pipe_t *)cs; /* capsemd serves a Unix socket */
	sp->conn = NULL;
	client->data = sp;
	sp->side[TO_CLIENT] = client;
	sp->open_handles++;
	int bad = 0;
	if (buf_len(&leftover)) {
		char *c = malloc(buf_len(&leftover));
		if (c) {
			memcpy(c, buf_head(&leftover), buf_len(&leftover));
			bad |= sp_write(sp, TO_GUEST, c, buf_len(&leftover)) < 0;
		} else {
			bad = 1;
		}
	}
	buf_done(&leftover, 0);
	if (buf_len(&sp->pre)) {
		char *c = malloc(buf_len(&sp->pre));
		if (c) {
			memcpy(c, buf_head(&sp->pre), buf_len(&sp->pre));
			bad |= sp_write(sp, TO_CLIENT, c, buf_len(&sp->pre)) < 0;
		} else {
			bad = 1;
		}
		buf_done(&sp->pre, 0);
	}
	if (bad) {
		sp_end(sp);
		return;
	}
	if (!sp->paused[TO_CLIENT])
		uv_read_start((uv_stream_t *)sp->side[TO_GUEST], sp_alloc, sp_read);
	if (!sp->paused[TO_GUEST])
		uv_read_start((uv_stream_t *)client, sp_alloc, sp_read);
}

static void sp_on_timeout(uv_timer_t *t)
{
	sp_fail(t->data, "the guest agent did not accept the exec connection in time");
}

void gexec_splice(uv_loop_t *loop, const char *vsock, const char *via, struct buf *exec_frame,
		  struct httpd_conn *c)
{
	struct splice *sp = calloc(1, sizeof(*sp));
	uv_timer_t *t = calloc(1, sizeof(*t));
	uv_pipe_t *g = NULL;
	int k = sp && t ? hv_open(loop, vsock, via, &g) : -ENOMEM;
	if (k < 0) {
		free(sp);
		free(t);
		buf_done(exec_frame, 0);
		httpd_reply_error(c, 503, "vm_failed", "cannot connect to the guest: %s",
				  strerror(-k));
		return;
	}
	sp->loop = loop;
	sp->conn = c;
	sp->exec_frame = *exec_frame;
	buf_init(exec_frame, 0);
	buf_init(&sp->pre, 4096);
	sp->side[TO_GUEST] = g;
	g->data = sp;
	sp->open_handles = 1;
	sp->timer = t;
	uv_timer_init(loop, t);
	t->data = sp;
	uv_timer_start(t, sp_on_timeout, HANDSHAKE_MS, 0);
	uv_read_start((uv_stream_t *)g, sp_alloc, sp_handshake_read);
}
