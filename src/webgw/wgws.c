/* wgws.c - capsem-gateway's WebSocket server connections (wgws.h).
 *
 * After the 101 the stream carries frames: the browser's are read by ws_reader (require_mask:
 * an unmasked frame or an extension bit is a protocol error, answered with close 1002), text
 * messages gathered up to WGWS_TEXT_MAX (1009 past it), binary pieces handed on at once, pings
 * answered with pongs, a close answered and the connection closed. Our frames are unmasked,
 * written with uv_write; the bytes in flight are counted and capped (WGWS_QUEUE_MAX: a browser
 * that stops reading is dropped rather than buffered for).
 *
 * Trust boundary: every frame comes from a local client that passed the gateway's Origin, Host
 * and token checks, still hostile in its framing. Thread: the gateway's loop only.
 */
#include "wgws.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "macro.h"
#include "wgcheck.h"
#include "ws.h"

struct wgws {
	uv_stream_t *s;
	struct wgws_ops ops;
	void *ud;
	struct ws_reader rd;
	struct buf text;
	int text_over;
	size_t queued;
	int closing; /* no more callbacks */
	int in_feed; /* inside ws_reader_feed: defer the close */
	int want_close;
	int writes;
	int stream_closed;
};

struct wgws_write {
	uv_write_t w;
	struct wgws *ws;
	size_t n;
	uint8_t data[];
};

static void ws_free_if_done(struct wgws *w)
{
	if (w->stream_closed && w->writes == 0) {
		buf_done(&w->text, 0);
		free(w);
	}
}

static void stream_closed(uv_handle_t *h)
{
	struct wgws *w = h->data;
	free(h);
	w->stream_closed = 1;
	ws_free_if_done(w);
}

static void ws_shutdown(struct wgws *w, int notify)
{
	if (w->s) {
		uv_read_stop(w->s);
		uv_close((uv_handle_t *)w->s, stream_closed);
		w->s = NULL;
	}
	if (!w->closing) {
		w->closing = 1;
		if (notify && w->ops.on_close)
			w->ops.on_close(w->ud);
	}
}

static void on_written(uv_write_t *req, int status)
{
	struct wgws_write *wr = (struct wgws_write *)req;
	struct wgws *w = wr->ws;
	size_t before = w->queued;
	w->queued -= wr->n;
	w->writes--;
	free(wr);
	if (status < 0 && w->s)
		ws_shutdown(w, 1);
	else if (!w->closing && w->ops.on_drain && before >= WGWS_QUEUE_HIGH / 2 &&
		 w->queued < WGWS_QUEUE_HIGH / 2)
		w->ops.on_drain(w->ud);
	ws_free_if_done(w);
}

static int send_frame(struct wgws *w, int op, const void *p, size_t n)
{
	if (!w->s)
		return -EPIPE;
	if (w->queued + n > WGWS_QUEUE_MAX)
		return -ENOBUFS;
	struct wgws_write *wr = malloc(sizeof(*wr) + 10 + n);
	if (!wr)
		return -ENOMEM;
	size_t h = wg_ws_frame_head(op, n, wr->data);
	if (n)
		memcpy(wr->data + h, p, n);
	wr->ws = w;
	wr->n = h + n;
	uv_buf_t b = uv_buf_init((char *)wr->data, (unsigned)wr->n);
	int r = uv_write(&wr->w, w->s, &b, 1, on_written);
	if (r < 0) {
		free(wr);
		return r;
	}
	w->queued += wr->n;
	w->writes++;
	return 0;
}

int wgws_send(struct wgws *w, int opcode, const void *p, size_t n)
{
	if (w->closing)
		return -EPIPE;
	int r = send_frame(w, opcode, p, n);
	if (r == -ENOBUFS) {
		log_warn("a WebSocket client stopped reading: dropping it");
		if (w->in_feed)
			w->want_close = 1;
		else
			ws_shutdown(w, 1);
	}
	return r;
}

size_t wgws_queued(const struct wgws *w)
{
	return w->queued;
}

static void close_with(struct wgws *w, uint16_t code, const char *reason, int notify)
{
	uint8_t pl[125];
	size_t rn = reason ? MIN(strlen(reason), sizeof(pl) - 2) : 0;
	pl[0] = (uint8_t)(code >> 8);
	pl[1] = (uint8_t)code;
	for (size_t i = 0; i < rn; i++) /* not a C string on the wire: no terminator */
		pl[2 + i] = (uint8_t)reason[i];
	(void)send_frame(w, WS_OP_CLOSE, pl, 2 + rn);
	if (notify && !w->closing && w->ops.on_close) {
		w->closing = 1;
		w->ops.on_close(w->ud);
	}
	w->closing = 1;
	if (w->s) {
		uv_read_stop(w->s);
		uv_close((uv_handle_t *)w->s, stream_closed); /* pending writes complete first */
		w->s = NULL;
	}
}

void wgws_close(struct wgws *w, uint16_t code, const char *reason)
{
	w->closing = 1;
	close_with(w, code, reason, 0);
}

static void on_data(void *ud, int op, const uint8_t *p, size_t n, bool start, bool end,
		    bool compressed)
{
	struct wgws *w = ud;
	if (w->closing)
		return;
	if (op == WS_OP_BINARY) {
		if (n && w->ops.on_binary)
			w->ops.on_binary(w->ud, p, n);
		return;
	}
	if (start) {
		buf_done(&w->text, 0);
		w->text_over = 0;
	}
	if (!w->text_over && buf_append(&w->text, p, n) < 0)
		w->text_over = 1;
	if (end) {
		if (w->text_over)
			w->want_close = 1009;
		else if (w->ops.on_text)
			w->ops.on_text(w->ud, (const char *)buf_head(&w->text), buf_len(&w->text));
		buf_done(&w->text, 0);
	}
}

static void on_control(void *ud, int op, const uint8_t *p, size_t n)
{
	struct wgws *w = ud;
	if (w->closing)
		return;
	if (op == WS_OP_PING)
		(void)send_frame(w, WS_OP_PONG, p, n);
	else if (op == WS_OP_CLOSE)
		w->want_close = 1000;
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	static char chunk[65536]; /* one loop thread; consumed before the next read */
	*b = uv_buf_init(chunk, sizeof(chunk));
}

static void feed(struct wgws *w, const uint8_t *p, size_t n)
{
	w->in_feed = 1;
	int r = ws_reader_feed(&w->rd, p, n);
	w->in_feed = 0;
	if (w->closing)
		return;
	if (r < 0)
		close_with(w, 1002, "protocol error", 1);
	else if (w->want_close == 1009)
		close_with(w, 1009, "message too big", 1);
	else if (w->want_close)
		close_with(w, 1000, "", 1);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct wgws *w = s->data;
	if (nread < 0) {
		ws_shutdown(w, 1);
		return;
	}
	if (nread > 0)
		feed(w, (const uint8_t *)b->base, (size_t)nread);
}

int wgws_check(const struct http_msg *req)
{
	const char *v = http_header_get(req, "Sec-WebSocket-Version");
	char accept[29];
	if (strcmp(req->method, "GET") != 0 || !req->upgrade ||
	    strcasecmp(req->upgrade, "websocket") != 0 || !v || strcmp(v, "13") != 0 ||
	    wg_ws_accept(http_header_get(req, "Sec-WebSocket-Key"), accept) < 0)
		return -EINVAL;
	return 0;
}

int wgws_accept(struct httpd_conn *c, const struct http_msg *req, const struct wgws_ops *ops,
		void *ud, struct wgws **ret)
{
	char accept[29], head[256];
	if (wgws_check(req) < 0 ||
	    wg_ws_accept(http_header_get(req, "Sec-WebSocket-Key"), accept) < 0) {
		httpd_reply_error(c, 400, "bad_request", "not a WebSocket handshake");
		return -EINVAL;
	}
	struct wgws *w = calloc(1, sizeof(*w));
	if (!w) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return -ENOMEM;
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		 accept);
	struct buf left;
	httpd_detach(c, head, &w->s, &left);
	w->ops = *ops;
	w->ud = ud;
	buf_init(&w->text, WGWS_TEXT_MAX);
	ws_reader_init(&w->rd, on_data, w);
	w->rd.on_control = on_control;
	w->rd.require_mask = true;
	w->s->data = w;
	*ret = w;
	if (buf_len(&left))
		feed(w, buf_head(&left), buf_len(&left));
	buf_done(&left, 0);
	if (w->s)
		uv_read_start(w->s, alloc_cb, on_read);
	return 0;
}
