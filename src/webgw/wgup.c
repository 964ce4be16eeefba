/* wgup.c - capsem-gateway's asynchronous client of capsemd (wgup.h).
 *
 * Each request opens its own connection to capsemd's Unix socket (connect is local and cheap),
 * sends "Connection: close" with the whole request, parses the response head with
 * http_parse_response_head(), gathers the body as http_body_framing() says (Content-Length,
 * chunked through http_chunked_feed(), or until close), capped, then calls back once and
 * closes. An upgrade stops after the 101 head and hands the stream to the callback.
 *
 * Trust boundary: capsemd is the same user's daemon, but its answers are still parsed with
 * every length capped. Thread: the gateway's loop only.
 */
#include "wgup.h"

#include <stdio.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "macro.h"

struct wgup {
	uv_pipe_t *pipe;
	uv_connect_t connect;
	uv_write_t write;
	uv_timer_t *timer;
	wgup_cb cb;
	void *userdata;
	char *out; /* the request bytes */
	size_t out_len;
	struct buf in;
	struct http_msg resp;
	int have_head;
	enum http_body framing;
	struct http_chunked chunked;
	struct buf body;
	uint64_t max_response;
	int upgrade;
	int done;    /* callback called or cancelled */
	int handles; /* open uv handles still to close */
};

static void up_free(struct wgup *u)
{
	free(u->out);
	buf_done(&u->in, 0);
	buf_done(&u->body, 0);
	http_msg_done(&u->resp);
	free(u);
}

static void handle_closed(uv_handle_t *h)
{
	struct wgup *u = h->data;
	free(h);
	if (--u->handles == 0)
		up_free(u);
}

static void up_close(struct wgup *u)
{
	if (u->timer) {
		uv_close((uv_handle_t *)u->timer, handle_closed);
		u->timer = NULL;
	}
	if (u->pipe) {
		uv_close((uv_handle_t *)u->pipe, handle_closed);
		u->pipe = NULL;
	}
}

static void finish(struct wgup *u, int err)
{
	if (u->done)
		return;
	u->done = 1;
	if (err == 0 && u->upgrade && u->resp.status == 101) {
		uv_pipe_t *p = u->pipe;
		uv_read_stop((uv_stream_t *)p);
		u->pipe = NULL;
		u->handles--;
		p->data = NULL;
		u->cb(u->userdata, 0, 101, NULL, &u->in, p);
		if (u->handles == 0)
			up_free(u);
		else
			up_close(u);
		return;
	}
	const char *ct = err == 0 ? http_header_get(&u->resp, "Content-Type") : NULL;
	u->cb(u->userdata, err, err == 0 ? u->resp.status : 0, ct ? ct : "application/json",
	      &u->body, NULL);
	up_close(u);
}

static void on_timeout(uv_timer_t *t)
{
	finish(t->data, -ETIMEDOUT);
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct wgup *u = h->data;
	uint8_t *p = buf_reserve(&u->in, 65536);
	*b = uv_buf_init((char *)p, p ? 65536 : 0);
}

/* Move what is buffered along the response: head, then body. */
static void process(struct wgup *u, int eof)
{
	if (!u->have_head) {
		ssize_t k = http_parse_response_head(buf_head(&u->in), buf_len(&u->in), &u->resp);
		if (k < 0) {
			finish(u, (int)k);
			return;
		}
		if (k == 0) {
			if (eof)
				finish(u, -EPIPE);
			return;
		}
		buf_consume(&u->in, (size_t)k);
		if (u->resp.status == 100) { /* interim: read the real head next */
			http_msg_done(&u->resp);
			memset(&u->resp, 0, sizeof(u->resp));
			process(u, eof);
			return;
		}
		u->have_head = 1;
		if (u->upgrade && u->resp.status == 101) {
			finish(u, 0);
			return;
		}
		u->framing = http_body_framing(&u->resp, "GET");
		if (u->framing == HTTP_BODY_LENGTH && u->resp.content_length > u->max_response) {
			finish(u, -EFBIG);
			return;
		}
	}
	switch (u->framing) {
	case HTTP_BODY_NONE:
		finish(u, 0);
		return;
	case HTTP_BODY_LENGTH: {
		uint64_t want = u->resp.content_length - buf_len(&u->body);
		size_t k = (size_t)MIN((uint64_t)buf_len(&u->in), want);
		if (buf_append(&u->body, buf_head(&u->in), k) < 0) {
			finish(u, -EFBIG);
			return;
		}
		buf_consume(&u->in, k);
		if (buf_len(&u->body) == u->resp.content_length)
			finish(u, 0);
		else if (eof)
			finish(u, -EPIPE);
		return;
	}
	case HTTP_BODY_CHUNKED: {
		size_t used = 0;
		int r = http_chunked_feed(&u->chunked, buf_head(&u->in), buf_len(&u->in), &u->body,
					  &used);
		buf_consume(&u->in, used);
		if (r < 0)
			finish(u, r == -ENOBUFS ? -EFBIG : r);
		else if (r == 1)
			finish(u, 0);
		else if (eof)
			finish(u, -EPIPE);
		return;
	}
	case HTTP_BODY_UNTIL_CLOSE:
		if (buf_append(&u->body, buf_head(&u->in), buf_len(&u->in)) < 0) {
			finish(u, -EFBIG);
			return;
		}
		buf_consume(&u->in, buf_len(&u->in));
		if (eof)
			finish(u, 0);
		return;
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct wgup *u = s->data;
	if (nread > 0)
		buf_commit(&u->in, (size_t)nread);
	if (nread == UV_ENOBUFS) {
		finish(u, -EFBIG);
		return;
	}
	if (nread < 0 && nread != UV_EOF) {
		finish(u, (int)nread);
		return;
	}
	process(u, nread == UV_EOF);
}

static void on_written(uv_write_t *w, int status)
{
	struct wgup *u = w->data;
	if (u->done)
		return;
	if (status < 0)
		finish(u, status);
}

static void on_connect(uv_connect_t *c, int status)
{
	struct wgup *u = c->data;
	if (u->done)
		return;
	if (status < 0) {
		finish(u, status == UV_ENOENT ? -ENOENT : -ECONNREFUSED);
		return;
	}
	u->write.data = u;
	uv_buf_t b = uv_buf_init(u->out, (unsigned)u->out_len);
	int r = uv_write(&u->write, (uv_stream_t *)u->pipe, &b, 1, on_written);
	if (r == 0)
		r = uv_read_start((uv_stream_t *)u->pipe, alloc_cb, on_read);
	if (r < 0)
		finish(u, r);
}

int wgup_start(uv_loop_t *loop, const char *sock_path, const struct wgup_req *rq, wgup_cb cb,
	       void *userdata, struct wgup **ret)
{
	struct wgup *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->cb = cb;
	u->userdata = userdata;
	u->upgrade = rq->upgrade != NULL;
	u->max_response = rq->max_response;
	buf_init(&u->in,
		 HTTP_MAX_HEAD + 65536 + (size_t)MIN(rq->max_response, (uint64_t)SIZE_MAX / 2));
	buf_init(&u->body, (size_t)rq->max_response);
	char *head = NULL;
	int n = asprintf(&head,
			 "%s %s HTTP/1.1\r\nHost: capsemd\r\n%s%s%s"
			 "Content-Length: %zu\r\nConnection: %s\r\n%s%s%s\r\n",
			 rq->method, rq->target, rq->content_type ? "Content-Type: " : "",
			 rq->content_type ? rq->content_type : "", rq->content_type ? "\r\n" : "",
			 rq->body_len, rq->upgrade ? "Upgrade" : "close",
			 rq->upgrade ? "Upgrade: " : "", rq->upgrade ? rq->upgrade : "",
			 rq->upgrade ? "\r\n" : "");
	if (n < 0) {
		free(u);
		return -ENOMEM;
	}
	u->out_len = (size_t)n + rq->body_len;
	u->out = malloc(u->out_len ? u->out_len : 1);
	if (!u->out) {
		free(head);
		free(u);
		return -ENOMEM;
	}
	memcpy(u->out, head, (size_t)n);
	if (rq->body_len)
		memcpy(u->out + n, rq->body, rq->body_len);
	free(head);
	u->pipe = calloc(1, sizeof(*u->pipe));
	if (!u->pipe || uv_pipe_init(loop, u->pipe, 0) < 0) {
		free(u->pipe);
		free(u->out);
		free(u);
		return -ENOMEM;
	}
	u->pipe->data = u;
	u->handles = 1;
	if (rq->timeout_ms) {
		u->timer = calloc(1, sizeof(*u->timer));
		if (u->timer && uv_timer_init(loop, u->timer) == 0) {
			u->timer->data = u;
			u->handles++;
			uv_timer_start(u->timer, on_timeout, rq->timeout_ms, 0);
		} else {
			free(u->timer);
			u->timer = NULL;
		}
	}
	u->connect.data = u;
	uv_pipe_connect(&u->connect, u->pipe, sock_path, on_connect);
	if (ret)
		*ret = u;
	return 0;
}

void wgup_cancel(struct wgup *u)
{
	if (!u || u->done)
		return;
	u->done = 1;
	up_close(u);
}
