/* httpd.c - the HTTP/1.1 server of capsemd on its Unix socket, and of capsem-gateway on its
 * loopback TCP port (httpd.h).
 *
 * Accepts connections (on a Unix socket the peer uid is checked with SO_PEERCRED: only the
 * daemon's own user may talk to it; on TCP the caller authenticates requests itself), frames requests with the pure parser in http.c, gathers bodies (Content-Length or
 * chunked, capped per route), calls the API handler, writes responses and keeps connections
 * alive. Upgraded connections (exec) are handed over as raw streams.
 *
 * Trust boundary: API clients. Every byte is bounded (head, body, connection count); a malformed
 * request gets its 4xx and the connection is closed; nothing a client sends can stop the loop.
 * Thread: the daemon's libuv loop only.
 */
#include "httpd.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

#include "list.h"
#include "log.h"
#include "macro.h"

#define MAX_CONNS 1024
#define READ_CHUNK 65536u

enum conn_state { C_HEAD, C_BODY, C_HANDLING, C_DRAIN, C_CLOSING };

#define DRAIN_MAX (300ull << 20)

/* a connection's stream: a Unix socket or a TCP connection */
union hstream {
	uv_handle_t handle;
	uv_stream_t stream;
	uv_pipe_t pipe;
	uv_tcp_t tcp;
};

struct httpd {
	uv_loop_t *loop;
	union hstream listener;
	struct httpd_opts opts;
	httpd_handler_t handler;
	httpd_body_cap_t body_cap;
	void *userdata;
	struct list_link conns; /* every open connection */
	size_t n_conns;
	int closing;
};

struct httpd_conn {
	uv_stream_t *stream;
	uv_timer_t *timer; /* idle timeout (opts.idle_ms), NULL without */
	struct httpd *h;
	struct list_link link; /* on h->conns */
	enum conn_state state;
	struct buf in;
	struct buf body;
	struct http_msg req;
	struct http_chunked chunked;
	uint64_t body_left;
	int keep_alive;
	uint64_t drain_left; /* bytes of a refused body to read and drop before closing */
	int writes;	     /* in flight */
	int reading;
};

struct wreq {
	uv_write_t w;
	struct httpd_conn *c; /* NULL once detached */
	char *head;
	void *body;
	void (*free_body)(void *);
	int interim; /* 100 Continue: the request goes on */
};

static void conn_process(struct httpd_conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void stream_closed(uv_handle_t *hd)
{
	free(hd);
}

static void timer_closed(uv_handle_t *hd)
{
	free(hd);
}

static void conn_free(struct httpd_conn *c)
{
	if (c->timer)
		uv_close((uv_handle_t *)c->timer, timer_closed);
	list_del(&c->link);
	c->h->n_conns--;
	buf_done(&c->in, 0);
	buf_done(&c->body, 0);
	http_msg_done(&c->req);
	free(c);
}

/* Close the connection. While writes are in flight it is marked and freed by the last one. */
static void conn_close(struct httpd_conn *c)
{
	if (c->stream) {
		uv_close((uv_handle_t *)c->stream, stream_closed);
		c->stream = NULL;
	}
	c->state = C_CLOSING;
	if (c->writes == 0)
		conn_free(c);
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
	struct httpd_conn *c = hd->data;
	uint8_t *p = buf_reserve(&c->in, READ_CHUNK);
	*b = uv_buf_init((char *)p, p ? READ_CHUNK : 0);
}

static void on_idle(uv_timer_t *t)
{
	struct httpd_conn *c = t->data;
	if (c->state == C_HANDLING || c->state == C_CLOSING || c->writes > 0) {
		uv_timer_again(t); /* a handler or a write is still at work: not idle */
		return;
	}
	conn_close(c);
}

/* Arm (or push back) the idle timeout. */
static void idle_kick(struct httpd_conn *c)
{
	if (c->timer)
		uv_timer_start(c->timer, on_idle, c->h->opts.idle_ms, c->h->opts.idle_ms);
}

static void read_start(struct httpd_conn *c)
{
	idle_kick(c);
	if (!c->reading && c->stream) {
		c->reading = 1;
		uv_read_start((uv_stream_t *)c->stream, alloc_cb, on_read);
	}
}

static void read_stop(struct httpd_conn *c)
{
	if (c->reading && c->stream) {
		c->reading = 0;
		uv_read_stop((uv_stream_t *)c->stream);
	}
}

static void on_write(uv_write_t *w, int status)
{
	struct wreq *wr = (struct wreq *)w;
	struct httpd_conn *c = wr->c;
	int wr_interim = wr->interim;
	free(wr->head);
	if (wr->free_body)
		wr->free_body(wr->body);
	free(wr);
	if (!c)
		return;
	c->writes--;
	if (c->state == C_CLOSING) {
		if (c->writes == 0)
			conn_free(c);
		return;
	}
	if (wr_interim || c->state == C_HANDLING)
		return; /* an interim response (100 Continue): the request goes on */
	if (status < 0) {
		conn_close(c);
		return;
	}
	if (!c->keep_alive && c->drain_left > 0) {
		/* let the client finish sending the refused body so that it reads our answer */
		c->state = C_DRAIN;
		c->drain_left = MIN(c->drain_left, DRAIN_MAX);
		/* what of the body came with the head counts too, or the drain never ends and the
		 * client waits for our close until the idle timeout */
		size_t k = (size_t)MIN((uint64_t)buf_len(&c->in), c->drain_left);
		buf_consume(&c->in, k);
		c->drain_left -= k;
		if (c->drain_left == 0) {
			conn_close(c);
			return;
		}
		read_start(c);
		return;
	}
	if (!c->keep_alive) {
		conn_close(c);
		return;
	}
	conn_process(c); /* a pipelined request may already be waiting */
}

static int conn_write(struct httpd_conn *c, char *head, void *body, size_t n,
		      void (*free_body)(void *), int interim)
{
	struct wreq *wr = calloc(1, sizeof(*wr));
	if (!wr) {
		free(head);
		if (free_body)
			free_body(body);
		return -ENOMEM;
	}
	wr->c = c;
	wr->head = head;
	wr->body = body;
	wr->free_body = free_body;
	wr->interim = interim;
	uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)strlen(head)),
			     uv_buf_init(body, (unsigned)n) };
	int r = uv_write(&wr->w, (uv_stream_t *)c->stream, bufs, n ? 2 : 1, on_write);
	if (r < 0) {
		wr->c = NULL;
		on_write(&wr->w, r);
		return r;
	}
	c->writes++;
	return 0;
}

static void reply_raw(struct httpd_conn *c, int status, const char *ctype, void *body, size_t n,
		      void (*free_body)(void *), int keep_alive)
{
	char *head = NULL;
	c->keep_alive = keep_alive;
	if (asprintf(&head,
		     "HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%sConnection: %s\r\n\r\n",
		     status, http_status_text(status), c->h->opts.server_name, ctype, n,
		     c->h->opts.extra_headers, keep_alive ? "keep-alive" : "close") < 0) {
		if (free_body)
			free_body(body);
		conn_close(c);
		return;
	}
	c->state = C_HEAD;
	http_msg_done(&c->req);
	buf_done(&c->body, 0);
	if (conn_write(c, head, body, n, free_body, 0) < 0)
		conn_close(c);
}

void httpd_reply(struct httpd_conn *c, int status, const char *content_type, void *body, size_t n,
		 void (*free_body)(void *))
{
	if (!free_body && n) {
		void *copy = malloc(n);
		if (!copy) {
			conn_close(c);
			return;
		}
		memcpy(copy, body, n);
		body = copy;
		free_body = free;
	}
	reply_raw(c, status, content_type, body, n, free_body, c->keep_alive);
}

void httpd_reply_json(struct httpd_conn *c, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(j);
	if (!s) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	size_t n = strlen(s);
	s[n] = '\n'; /* json_dumps leaves room */
	reply_raw(c, status, "application/json", s, n + 1, free, c->keep_alive);
}

static void error_json(struct httpd_conn *c, int status, const char *code, const char *msg,
		       int keep_alive)
{
	json_t *j = json_pack("{s:s, s:s}", "error", msg, "code", code);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s) {
		conn_close(c);
		return;
	}
	size_t n = strlen(s);
	s[n] = '\n';
	reply_raw(c, status, "application/json", s, n + 1, free, keep_alive);
}

void httpd_reply_error(struct httpd_conn *c, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	error_json(c, status, code, msg ? msg : "error", c->keep_alive);
	free(msg);
}

void httpd_detach(struct httpd_conn *c, const char *response_head, uv_stream_t **ret_stream,
		  struct buf *ret_leftover)
{
	uv_stream_t *s = c->stream;
	char *head = strdup(response_head);
	read_stop(c);
	*ret_leftover = c->in;
	buf_init(&c->in, 0);
	if (head) {
		struct wreq *wr = calloc(1, sizeof(*wr));
		if (wr) {
			wr->head = head;
			uv_buf_t b = uv_buf_init(head, (unsigned)strlen(head));
			if (uv_write(&wr->w, (uv_stream_t *)s, &b, 1, on_write) < 0) {
				free(head);
				free(wr);
			}
		} else {
			free(head);
		}
	}
	s->data = NULL;
	c->stream = NULL;
	*ret_stream = s;
	/* in-flight writes (none normally) keep the connection object until they finish */
	c->state = C_CLOSING;
	if (c->writes == 0)
		conn_free(c);
}

static void protocol_error(struct httpd_conn *c, int err)
{
	int status = http_error_status(err);
	const char *code = status == 413   ? "too_large"
			   : status == 431 ? "headers_too_large"
			   : status == 501 ? "not_implemented"
			   : status == 500 ? "internal"
					   : "bad_request";
	const char *msg = status == 413	  ? "request body too large"
			  : status == 431 ? "request line or headers too large"
			  : status == 501 ? "unsupported transfer coding"
			  : status == 500 ? "out of memory"
					  : "malformed HTTP request";
	read_stop(c);
	error_json(c, status, code, msg, 0);
}

static void dispatch(struct httpd_conn *c)
{
	c->state = C_HANDLING;
	read_stop(c);
	c->keep_alive = c->req.keep_alive;
	c->h->handler(c, &c->req, &c->body, c->h->userdata);
}

/* Move body bytes from c->in into c->body. */
static void take_body(struct httpd_conn *c)
{
	if (c->req.chunked) {
		size_t used = 0;
		int r = http_chunked_feed(&c->chunked, buf_head(&c->in), buf_len(&c->in), &c->body,
					  &used);
		if (r < 0) {
			protocol_error(c, r);
			return;
		}
		buf_consume(&c->in, used);
		if (r == 1)
			dispatch(c);
		return;
	}
	size_t take = (size_t)MIN((uint64_t)buf_len(&c->in), c->body_left);
	if (take && buf_append(&c->body, buf_head(&c->in), take) < 0) {
		protocol_error(c, -EFBIG);
		return;
	}
	buf_consume(&c->in, take);
	c->body_left -= take;
	if (c->body_left == 0)
		dispatch(c);
}

/* Run the state machine on what is buffered. */
static void conn_process(struct httpd_conn *c)
{
	if (c->state == C_HEAD) {
		ssize_t k = http_parse_head(buf_head(&c->in), buf_len(&c->in), &c->req);
		if (k < 0) {
			protocol_error(c, (int)k);
			return;
		}
		if (k == 0) {
			read_start(c);
			return;
		}
		buf_consume(&c->in, (size_t)k);
		uint64_t cap = c->h->body_cap(&c->req, c->h->userdata);
		if (c->req.has_length && c->req.content_length > cap) {
			c->drain_left = c->req.content_length;
			protocol_error(c, -EFBIG);
			return;
		}
		buf_init(&c->body, (size_t)cap);
		c->chunked = (struct http_chunked){ 0 };
		c->body_left = c->req.has_length ? c->req.content_length : 0;
		c->state = C_BODY;
		if (c->req.expect_continue && (c->body_left || c->req.chunked)) {
			char *h = strdup("HTTP/1.1 100 Continue\r\n\r\n");
			if (!h || conn_write(c, h, NULL, 0, NULL, 1) < 0) {
				conn_close(c);
				return;
			}
		}
	}
	if (c->state == C_BODY) {
		take_body(c);
		if (c->state == C_BODY)
			read_start(c);
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct httpd_conn *c = s->data;
	if (nread < 0) {
		conn_close(c);
		return;
	}
	buf_commit(&c->in, (size_t)nread);
	if (nread == 0)
		return;
	if (c->state == C_DRAIN) {
		size_t n = (size_t)MIN((uint64_t)buf_len(&c->in), c->drain_left);
		buf_consume(&c->in, buf_len(&c->in));
		c->drain_left -= n;
		if (c->drain_left == 0)
			conn_close(c);
		return;
	}
	if (c->state == C_HEAD || c->state == C_BODY)
		conn_process(c);
}

static void on_connection(uv_stream_t *l, int status)
{
	struct httpd *h = l->data;
	if (status < 0)
		return;
	union hstream *hs = calloc(1, sizeof(*hs));
	if (!hs)
		return;
	int r = h->opts.tcp ? uv_tcp_init(h->loop, &hs->tcp) : uv_pipe_init(h->loop, &hs->pipe, 0);
	if (r < 0) {
		free(hs);
		return;
	}
	uv_stream_t *s = &hs->stream;
	if (uv_accept(l, s) < 0) {
		uv_close((uv_handle_t *)s, stream_closed);
		return;
	}
	if (h->opts.tcp)
		uv_tcp_nodelay(&hs->tcp, 1);
	uv_os_fd_t fd;
	struct ucred cred = { .uid = (uid_t)-1 };
	socklen_t cl = sizeof(cred);
	if (h->opts.check_peer_uid &&
	    (uv_fileno((uv_handle_t *)s, &fd) < 0 ||
	     getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != geteuid())) {
		log_warn("refusing a connection from uid %d", (int)cred.uid);
		uv_close((uv_handle_t *)s, stream_closed);
		return;
	}
	if (h->n_conns >= h->opts.max_conns) {
		log_warn("too many API connections: refusing one");
		uv_close((uv_handle_t *)s, stream_closed);
		return;
	}
	struct httpd_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		uv_close((uv_handle_t *)s, stream_closed);
		return;
	}
	if (h->opts.idle_ms) {
		c->timer = calloc(1, sizeof(*c->timer));
		if (!c->timer || uv_timer_init(h->loop, c->timer) < 0) {
			free(c->timer);
			free(c);
			uv_close((uv_handle_t *)s, stream_closed);
			return;
		}
		c->timer->data = c;
	}
	c->stream = s;
	c->h = h;
	s->data = c;
	buf_init(&c->in, HTTP_MAX_HEAD + READ_CHUNK);
	list_add_tail(&h->conns, &c->link);
	h->n_conns++;
	read_start(c);
}

int httpd_new(uv_loop_t *loop, int listen_fd, httpd_handler_t handler, httpd_body_cap_t body_cap,
	      void *userdata, struct httpd **ret)
{
	struct httpd_opts o = { .check_peer_uid = 1 };
	return httpd_new_opts(loop, listen_fd, &o, handler, body_cap, userdata, ret);
}

int httpd_new_opts(uv_loop_t *loop, int listen_fd, const struct httpd_opts *opts,
		   httpd_handler_t handler, httpd_body_cap_t body_cap, void *userdata,
		   struct httpd **ret)
{
	struct httpd *h = calloc(1, sizeof(*h));
	if (!h) {
		safe_close(listen_fd);
		return -ENOMEM;
	}
	h->loop = loop;
	list_init(&h->conns);
	h->handler = handler;
	h->body_cap = body_cap;
	h->userdata = userdata;
	h->opts = *opts;
	if (!h->opts.max_conns)
		h->opts.max_conns = MAX_CONNS;
	if (!h->opts.server_name)
		h->opts.server_name = "capsemd";
	if (!h->opts.extra_headers)
		h->opts.extra_headers = "";
	int r = opts->tcp ? uv_tcp_init(loop, &h->listener.tcp)
			  : uv_pipe_init(loop, &h->listener.pipe, 0);
	if (r == 0)
		r = opts->tcp ? uv_tcp_open(&h->listener.tcp, listen_fd)
			      : uv_pipe_open(&h->listener.pipe, listen_fd);
	if (r == 0) {
		h->listener.handle.data = h;
		r = uv_listen(&h->listener.stream, 128, on_connection);
	}
	if (r < 0) {
		safe_close(listen_fd);
		free(h);
		return r;
	}
	*ret = h;
	return 0;
}

static void listener_closed(uv_handle_t *hd)
{
	free(hd->data);
}

/* Connections still open are left to the process exit: a handler may hold one. */
void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	uv_close(&h->listener.handle, listener_closed);
}

int httpd_conn_fd(struct httpd_conn *c)
{
	uv_os_fd_t fd;
	if (!c->stream || uv_fileno((uv_handle_t *)c->stream, &fd) < 0)
		return -EBADF;
	return fd;
}
