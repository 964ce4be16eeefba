/* wgterm.c - capsem-gateway's terminals (wgterm.h).
 *
 * One struct term per VM ref: the exec connection to capsemd (an exec with a tty running the
 * guest's login shell, as `capsem shell`; via=api), the output ring (wg_ring: 64 KiB), and the
 * browser's WebSocket while one is attached. Output frames (STDOUT/STDERR) go to the ring and
 * to the browser; reading from capsemd pauses while more than WGWS_QUEUE_HIGH waits for the
 * browser. Browser bytes become STDIN frames, resizes WINSIZE frames. When the browser goes the
 * shell stays for WGTERM_LINGER_MS; then its exec connection is closed, which ends the shell
 * (capsemd drops the exec; the guest kills the session's cgroup). EXIT or ERROR from the guest
 * is told to the browser and ends the term.
 *
 * Trust boundary: exec frames come from the guest through capsemd (hostile: parsed with
 * proto_frame_parse, capped); browser frames from wgws. Thread: the gateway's loop only.
 */
#include "wgterm.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "apiclient.h"
#include "jsonutil.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "proto.h"
#include "wgcheck.h"
#include "wgup.h"
#include "wgws.h"
#include "ws.h"

#define PENDING_MAX (64u * 1024u) /* browser input held until the shell is up */

struct term {
	struct list_link link;
	struct wgterm_ctx *ctx;
	char ref[64];
	struct wgup *up;    /* the exec request, until its 101 */
	uv_pipe_t *exec;    /* the exec connection after the 101 */
	struct buf in;	    /* exec frames read, not yet parsed */
	struct buf pending; /* STDIN/WINSIZE frames to send once the exec is up */
	struct wg_ring ring;
	struct wgws *ws; /* the attached browser, or NULL */
	uv_timer_t *linger;
	int reading;
	int ended;
};

static struct list_link terms;
static unsigned n_terms;

unsigned wgterm_count(void)
{
	return n_terms;
}

static void handle_free(uv_handle_t *h)
{
	free(h);
}

static void term_free(struct term *t)
{
	list_del(&t->link);
	n_terms--;
	wgup_cancel(t->up);
	if (t->exec)
		uv_close((uv_handle_t *)t->exec, handle_free);
	if (t->linger)
		uv_close((uv_handle_t *)t->linger, handle_free);
	buf_done(&t->in, 0);
	buf_done(&t->pending, 1);
	free(t);
}

/* Tell the browser (if any) and end the term. */
static void term_end(struct term *t, const char *type, json_t *extra)
{
	if (t->ended)
		return;
	t->ended = 1;
	if (t->ws) {
		_cleanup_json_ json_t *j = extra ? extra : json_object();
		json_object_set_new(j, "type", json_string(type));
		_cleanup_free_ char *s = json_dumps(j, JSON_COMPACT);
		struct wgws *ws = t->ws;
		t->ws = NULL;
		if (s)
			(void)wgws_send(ws, WS_OP_TEXT, s, strlen(s));
		wgws_close(ws, 1000, type);
	} else {
		json_decref(extra);
	}
	term_free(t);
}

static void on_exec_written(uv_write_t *w, int status)
{
	free(w->data);
	free(w);
}

/* Send framed bytes (taken: b is emptied) to the guest, or hold them until the exec is up. */
static void term_write(struct term *t, struct buf *b)
{
	if (!t->exec) {
		if (buf_append(&t->pending, buf_head(b), buf_len(b)) < 0)
			log_debug("terminal %s: input dropped before the shell started", t->ref);
		buf_done(b, 0);
		return;
	}
	uv_write_t *w = malloc(sizeof(*w));
	if (!w) {
		buf_done(b, 0);
		return;
	}
	w->data = b->data; /* a buf written by appends only starts at data (off 0) */
	uv_buf_t ub = uv_buf_init((char *)buf_head(b), (unsigned)buf_len(b));
	if (uv_write(w, (uv_stream_t *)t->exec, &ub, 1, on_exec_written) < 0) {
		free(w);
		buf_done(b, 0);
	}
	*b = BUF_INIT(b->cap); /* the bytes belong to the write now */
}

/* Send one frame to the guest. */
static void term_send(struct term *t, uint16_t type, const void *p, size_t n)
{
	struct buf b = BUF_INIT(PROTO_HDR_SIZE + PROTO_MAX_DATA + 16);
	if (proto_frame_append(&b, type, p, n) == 0)
		term_write(t, &b);
	buf_done(&b, 0);
}

static void exec_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct term *t = h->data;
	uint8_t *p = buf_reserve(&t->in, 65536);
	*b = uv_buf_init((char *)p, p ? 65536 : 0);
}

static void exec_read_start(struct term *t);

/* Parse the exec frames buffered. */
static void term_frames(struct term *t)
{
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	ssize_t k;
	while (!t->ended &&
	       (k = proto_frame_parse(buf_head(&t->in), buf_len(&t->in), &type, &pl, &len)) > 0) {
		if (type == PROTO_STDOUT || type == PROTO_STDERR) {
			wg_ring_put(&t->ring, pl, len);
			if (t->ws && len)
				(void)wgws_send(t->ws, WS_OP_BINARY, pl, len);
		} else if (type == PROTO_EXIT) {
			struct proto_exit e;
			int st = proto_exit_decode(pl, len, &e) == 0 ? proto_exit_status(&e) : -1;
			term_end(t, "exit", json_pack("{s:i}", "status", st));
			return;
		} else if (type == PROTO_ERROR) {
			struct proto_error e;
			const char *msg =
				proto_error_decode(pl, len, &e) == 0 ? e.message : "exec failed";
			term_end(t, "error", json_pack("{s:s}", "message", msg));
			return;
		}
		buf_consume(&t->in, (size_t)k);
	}
	if (!t->ended && k < 0)
		term_end(t, "error", json_pack("{s:s}", "message", "malformed exec frame"));
}

static void on_exec_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct term *t = s->data;
	if (nread < 0) {
		term_end(t, "error", json_pack("{s:s}", "message", "the shell's connection ended"));
		return;
	}
	buf_commit(&t->in, (size_t)nread);
	term_frames(t);
	if (!t->ended && t->ws && wgws_queued(t->ws) > WGWS_QUEUE_HIGH && t->reading) {
		uv_read_stop(s); /* the browser is behind: backpressure to the guest */
		t->reading = 0;
	}
}

static void exec_read_start(struct term *t)
{
	if (t->exec && !t->reading && !t->ended) {
		t->reading = 1;
		uv_read_start((uv_stream_t *)t->exec, exec_alloc, on_exec_read);
	}
}

static void on_exec_up(void *ud, int err, int status, const char *ctype, struct buf *body,
		       uv_pipe_t *stream)
{
	struct term *t = ud;
	t->up = NULL;
	if (err < 0 || status != 101) {
		char msg[256];
		if (err < 0)
			snprintf(msg, sizeof(msg), "capsemd: %s", strerror(-err));
		else
			snprintf(msg, sizeof(msg), "%.*s", (int)MIN(buf_len(body), (size_t)200),
				 (const char *)buf_head(body));
		term_end(t, "error", json_pack("{s:s, s:i}", "message", msg, "status", status));
		return;
	}
	t->exec = stream;
	stream->data = t;
	if (buf_len(body))
		(void)buf_append(&t->in, buf_head(body), buf_len(body));
	if (buf_len(&t->pending)) {
		uv_write_t *w = malloc(sizeof(*w));
		if (w) {
			struct buf p = t->pending;
			buf_init(&t->pending, PENDING_MAX);
			w->data = p.data;
			uv_buf_t ub = uv_buf_init((char *)buf_head(&p), (unsigned)buf_len(&p));
			if (uv_write(w, (uv_stream_t *)t->exec, &ub, 1, on_exec_written) < 0) {
				free(w);
				buf_done(&p, 0);
			}
		}
	}
	term_frames(t);
	exec_read_start(t);
}

static void on_ws_binary(void *ud, const uint8_t *p, size_t n)
{
	struct term *t = ud;
	while (n > 0) {
		size_t k = MIN(n, (size_t)PROTO_MAX_DATA);
		term_send(t, PROTO_STDIN, p, k);
		p += k;
		n -= k;
	}
}

static void on_ws_text(void *ud, const char *p, size_t n)
{
	struct term *t = ud;
	uint16_t rows, cols;
	if (wg_parse_resize(p, n, &rows, &cols) < 0)
		return; /* not a resize: ignored */
	struct buf b = BUF_INIT(16);
	if (proto_winsize_encode(rows, cols, &b) == 0) /* a whole WINSIZE frame */
		term_write(t, &b);
	buf_done(&b, 0);
}

static void on_linger(uv_timer_t *tm)
{
	struct term *t = tm->data;
	log_info("terminal %s: nobody reattached in %u s: ending its shell", t->ref,
		 WGTERM_LINGER_MS / 1000);
	term_end(t, "expired", NULL);
}

static void on_ws_close(void *ud)
{
	struct term *t = ud;
	t->ws = NULL;
	exec_read_start(t); /* keep the ring current while nobody watches */
	if (t->linger)
		uv_timer_start(t->linger, on_linger, WGTERM_LINGER_MS, 0);
}

static void on_ws_drain(void *ud)
{
	exec_read_start(ud);
}

static const struct wgws_ops term_ops = {
	.on_binary = on_ws_binary,
	.on_text = on_ws_text,
	.on_close = on_ws_close,
	.on_drain = on_ws_drain,
};

static struct term *term_find(const char *ref)
{
	struct list_link *l;
	if (!terms.next)
		list_init(&terms);
	list_for_each (l, &terms) {
		struct term *t = list_entry(l, struct term, link);
		if (strcmp(t->ref, ref) == 0)
			return t;
	}
	return NULL;
}

static int term_start_exec(struct term *t, uint16_t rows, uint16_t cols)
{
	_cleanup_json_ json_t *body = json_pack(
		"{s:[s], s:b, s:b, s:i, s:i}", "argv", "exec $(command -v bash || echo sh) -l",
		"shell", 1, "tty", 1, "rows", rows ? rows : 24, "cols", cols ? cols : 80);
	_cleanup_free_ char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
	_cleanup_free_ char *path = api_vm_path(t->ref, "/exec?via=api");
	if (!s || !path)
		return -ENOMEM;
	struct wgup_req rq = { .method = "POST",
			       .target = path,
			       .content_type = "application/json",
			       .body = s,
			       .body_len = strlen(s),
			       .upgrade = "capsem-exec/1",
			       .timeout_ms = 60000,
			       .max_response = 65536 };
	return wgup_start(t->ctx->loop, t->ctx->capsemd_sock, &rq, on_exec_up, t, &t->up);
}

void wgterm_attach(struct wgterm_ctx *ctx, struct httpd_conn *c, const struct http_msg *req,
		   const char *ref, uint16_t rows, uint16_t cols)
{
	if (wgws_check(req) < 0) {
		httpd_reply_error(c, 400, "bad_request", "not a WebSocket handshake");
		return;
	}
	struct term *t = term_find(ref);
	int fresh = !t;
	if (fresh) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			httpd_reply_error(c, 500, "internal", "out of memory");
			return;
		}
		t->ctx = ctx;
		snprintf(t->ref, sizeof(t->ref), "%s", ref);
		buf_init(&t->in, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD + 65536);
		buf_init(&t->pending, PENDING_MAX);
		t->linger = calloc(1, sizeof(*t->linger));
		if (t->linger && uv_timer_init(ctx->loop, t->linger) == 0) {
			t->linger->data = t;
		} else {
			free(t->linger);
			t->linger = NULL;
		}
		list_add_tail(&terms, &t->link);
		n_terms++;
	}
	if (t->ws) { /* another browser had it: this one takes the terminal over */
		struct wgws *old = t->ws;
		t->ws = NULL;
		wgws_close(old, 4000, "taken over by another connection");
	}
	if (t->linger)
		uv_timer_stop(t->linger);
	struct wgws *ws;
	if (wgws_accept(c, req, &term_ops, t, &ws) < 0) {
		if (fresh)
			term_free(t);
		return;
	}
	t->ws = ws;
	if (!fresh) {
		const uint8_t *p1, *p2;
		size_t n1, n2;
		wg_ring_spans(&t->ring, &p1, &n1, &p2, &n2);
		if (n1)
			(void)wgws_send(ws, WS_OP_BINARY, p1, n1);
		if (n2 && t->ws)
			(void)wgws_send(ws, WS_OP_BINARY, p2, n2);
		if (rows && cols && t->ws) {
			char rs[64];
			int k = snprintf(rs, sizeof(rs), "{\"rows\":%u,\"cols\":%u}", rows, cols);
			on_ws_text(t, rs, (size_t)k);
		}
		return;
	}
	int r = term_start_exec(t, rows, cols);
	if (r < 0)
		term_end(t, "error", json_pack("{s:s}", "message", "cannot reach capsemd"));
}
