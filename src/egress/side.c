/* side.c - a stream socket of the egress proxy: bounded buffers, write queue, TLS over memory
 * BIOs, all on the libuv loop.
 *
 * Trust boundary: the bytes read here come from the guest (its connections) or from upstream
 * servers, both hostile: input is bounded (IN_CAP plaintext per side; TLS ciphertext held back
 * by pausing the socket read), nothing here parses it beyond TLS records (OpenSSL). A side is a
 * transport only; what the bytes mean is proxy.c's business.
 *
 * Between the socket and the plaintext buffer runs one filter (struct side_cf): plain, or TLS
 * with the socket's bytes written into a memory BIO (net_in) and TLS output taken from another
 * (net_out). Writes go out at once when nothing is queued (uv_try_write), else through a
 * uv_write request; a write queue above HIGH_WATER stops the peer's reads (the owner checks),
 * dropping below LOW_WATER calls ops->drain. Thread: the libuv loop thread only.
 */
#include "side.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "macro.h"
#include "tls.h"

struct wreq {
	uv_write_t req;
	struct side *s;
	size_t n;
	char data[];
};

static char read_scratch[READ_CHUNK];

static void side_update_reading(struct side *s);

/* The filter between the socket and s->in (curl's connection filters, cut down to what the
 * proxy needs). */
struct side_cf {
	const char *name;
	/* plaintext from the owner, out to the socket */
	int (*send)(struct side *s, const void *p, size_t n);
	/* n bytes read from the socket: into s->in, telling the owner */
	void (*recv)(struct side *s, const char *p, size_t n);
	/* move what the filter holds into s->in; notify: tell the owner */
	void (*pull)(struct side *s, bool notify);
	/* the most the next socket read may bring */
	size_t (*read_max)(const struct side *s);
	/* the filter holds so much unread input that the socket read should pause */
	bool (*input_full)(const struct side *s);
	/* our write side ends (before the FIN) */
	void (*shutdown)(struct side *s);
	/* the handle closed: free the filter's state */
	void (*destroy)(struct side *s);
};

static const struct side_cf cf_plain, cf_tls;

static void side_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct side *s = h->data;
	size_t n = MIN(sizeof(read_scratch), s->cf->read_max(s));
	*b = uv_buf_init(read_scratch, (unsigned)n);
}

static void side_fail(struct side *s, const char *why)
{
	if (s->open)
		s->ops->error(s, why);
}

static void wreq_done(uv_write_t *req, int status)
{
	struct wreq *w = container_of(req, struct wreq, req);
	struct side *s = w->s;
	size_t before = s->wq;
	s->wq -= w->n;
	free(w);
	if (!s->open)
		return;
	if (status < 0) {
		side_fail(s, uv_strerror(status));
		return;
	}
	if (before >= LOW_WATER && s->wq < LOW_WATER)
		s->ops->drain(s);
}

static int side_send_raw(struct side *s, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	/* Nothing queued: write now, without a request. Besides the copy this saves a system
	 * call per write: libuv re-arms the fd's epoll registration when a queued write
	 * completes (measured: one epoll_ctl per write under load). Errors and EAGAIN fall back
	 * to the queue, which reports or finishes them. */
	if (s->wq == 0) {
		uv_buf_t now = uv_buf_init((char *)p, (unsigned)MIN(n, (size_t)UINT32_MAX));
		int k = uv_try_write(&s->h.stream, &now, 1);
		if (k > 0) {
			p = (const char *)p + k;
			n -= (size_t)k;
			if (n == 0)
				return 0;
		}
	}
	struct wreq *w = malloc(sizeof(*w) + n);
	if (!w)
		return -ENOMEM;
	memcpy(w->data, p, n);
	w->s = s;
	w->n = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	int r = uv_write(&w->req, &s->h.stream, &b, 1, wreq_done);
	if (r < 0) {
		free(w);
		return r;
	}
	s->wq += n;
	return 0;
}

/* Move whatever TLS wrote into net_out onto the socket. */
static int side_flush_tls(struct side *s)
{
	char *p;
	long n = BIO_get_mem_data(s->net_out, &p);
	if (n <= 0)
		return 0;
	int r = side_send_raw(s, p, (size_t)n);
	(void)BIO_reset(s->net_out);
	return r;
}

/* Corking: while a connection is pumped, TLS records gather in their side's net_out BIO and
 * go out in one write at the end (a response head and the body bytes that came with it: one
 * system call, not two). Loop thread only; the pump nests, the outermost one uncorks. */
static unsigned cork_depth;
static struct side *corked[8];
static size_t n_corked;

static void uncork(void)
{
	while (n_corked > 0) {
		struct side *s = corked[--n_corked];
		s->corked = false;
		if (s->open && side_flush_tls(s) < 0)
			side_fail(s, "write failed");
	}
}

static void side_uncork_one(struct side *s)
{
	if (!s->corked)
		return;
	s->corked = false;
	for (size_t i = 0; i < n_corked; i++)
		if (corked[i] == s) {
			corked[i] = corked[--n_corked];
			break;
		}
}

int side_write(struct side *s, const void *p, size_t n)
{
	if (!s->open || s->shut)
		return -EPIPE;
	return s->cf->send(s, p, n);
}

static int tls_send(struct side *s, const void *p, size_t n)
{
	while (n > 0) {
		int k = SSL_write(s->ssl, p, (int)MIN(n, (size_t)INT32_MAX));
		if (k <= 0)
			return -EIO;
		p = (const char *)p + k;
		n -= (size_t)k;
	}
	if (cork_depth > 0 && (s->corked || n_corked < ELEMENTSOF(corked))) {
		if (!s->corked) {
			s->corked = true;
			corked[n_corked++] = s;
		}
		return 0;
	}
	return side_flush_tls(s);
}

void side_pull(struct side *s, bool notify)
{
	if (s->open)
		s->cf->pull(s, notify);
}

/* TLS: run the handshake, then decrypt into s->in while there is room; with notify, tell the
 * owner about new bytes (not when the owner itself is consuming: it loops on its own). */
static void tls_pull(struct side *s, bool notify)
{
	if (s->handshaking) {
		ERR_clear_error();
		int k = SSL_do_handshake(s->ssl);
		if (side_flush_tls(s) < 0) {
			side_fail(s, "write failed");
			return;
		}
		if (k != 1) {
			int e = SSL_get_error(s->ssl, k);
			if (e == SSL_ERROR_WANT_READ)
				return;
			side_fail(s,
				  e == SSL_ERROR_SSL ? tls_error_string() : "TLS handshake failed");
			return;
		}
		s->handshaking = false;
		s->ops->handshake(s);
		if (!s->open)
			return;
	}
	bool got = false;
	while (!s->eof && buf_room(&s->in) > 0) {
		size_t room = MIN(buf_room(&s->in), (size_t)READ_CHUNK);
		uint8_t *dst = buf_reserve(&s->in, room);
		if (!dst)
			break;
		ERR_clear_error();
		int k = SSL_read(s->ssl, dst, (int)room);
		if (k > 0) {
			buf_commit(&s->in, (size_t)k);
			got = true;
			continue;
		}
		buf_commit(&s->in, 0);
		int e = SSL_get_error(s->ssl, k);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			s->eof = true;
			got = true;
			break;
		}
		(void)side_flush_tls(s);
		side_fail(s, e == SSL_ERROR_SSL ? tls_error_string() : "TLS read failed");
		return;
	}
	if (side_flush_tls(s) < 0) {
		side_fail(s, "write failed");
		return;
	}
	if (got && notify)
		s->ops->data(s);
}

static void side_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct side *s = st->data;
	if (n == 0 || !s->open)
		return;
	if (n == UV_ENOBUFS) { /* the buffer filled up: stop until the owner consumes */
		side_update_reading(s);
		return;
	}
	if (n < 0) {
		if (n != UV_EOF && n != UV_ECONNRESET) {
			side_fail(s, uv_strerror((int)n));
			return;
		}
		if (n == UV_ECONNRESET && s->handshaking) { /* only TLS handshakes */
			side_fail(s, "connection reset during the TLS handshake");
			return;
		}
		s->eof = true;
		side_update_reading(s);
		s->ops->data(s);
		return;
	}
	s->cf->recv(s, b->base, (size_t)n);
	if (s->open)
		side_update_reading(s);
}

/* Read when the owner wants to and the buffer has room. (TLS keeps ciphertext in net_in while
 * s->in is full: the socket read stops too.) */
static void side_update_reading(struct side *s)
{
	if (!s->open)
		return;
	bool want = s->want_read && !s->eof && buf_room(&s->in) > 0;
	if (want && s->cf->input_full(s))
		want = false;
	if (want && !s->reading) {
		if (uv_read_start(&s->h.stream, side_alloc, side_on_read) == 0)
			s->reading = true;
	} else if (!want && s->reading) {
		uv_read_stop(&s->h.stream);
		s->reading = false;
	}
}

void side_want_read(struct side *s, bool want)
{
	s->want_read = want;
	side_update_reading(s);
}

static uint64_t consumed_total; /* progress marker for the connection pump */

uint64_t side_consumed_total(void)
{
	return consumed_total;
}

void side_consume(struct side *s, size_t n)
{
	buf_consume(&s->in, n);
	consumed_total += n;
	/* TLS may hold decrypted-but-undelivered bytes: pull them now there is room */
	if (!s->handshaking && n > 0)
		side_pull(s, false);
	side_update_reading(s);
}

static void side_closed_cb(uv_handle_t *h)
{
	struct side *s = h->data;
	s->cf->destroy(s);
	buf_done(&s->in, 1);
	s->ops->closed(s);
}

void side_close(struct side *s)
{
	if (!s->open)
		return;
	side_uncork_one(s);
	s->open = false;
	s->reading = false;
	uv_close(&s->h.handle, side_closed_cb);
}

static void side_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct side *s = req->data;
	free(req);
	if (s->open && s->close_after_shut)
		side_close(s);
}

/* No more bytes from us: TLS close_notify, then a FIN once queued writes are out. With
 * then_close the handle closes after that (queued bytes are not lost, as uv_close would). */
void side_shutdown(struct side *s, bool then_close)
{
	if (!s->open)
		return;
	s->close_after_shut |= then_close;
	if (s->shut)
		return;
	s->shut = true;
	if (!s->handshaking)
		s->cf->shutdown(s);
	uv_shutdown_t *req = malloc(sizeof(*req));
	if (!req || uv_shutdown(req, &s->h.stream, side_shutdown_cb) < 0) {
		free(req);
		if (then_close)
			side_close(s);
		return;
	}
	req->data = s;
}

void side_init_common(struct side *s, const struct side_ops *ops, void *owner)
{
	s->ops = ops;
	s->cf = &cf_plain;
	s->owner = owner;
	s->h.handle.data = s;
	buf_init(&s->in, IN_CAP);
	s->open = true;
}

int side_start_tls(struct side *s, SSL_CTX *ctx, bool server)
{
	s->ssl = SSL_new(ctx);
	if (!s->ssl)
		return -ENOMEM;
	s->cf = &cf_tls; /* from here on the handle's close frees s->ssl */
	s->net_in = BIO_new(BIO_s_mem());
	s->net_out = BIO_new(BIO_s_mem());
	if (!s->net_in || !s->net_out) {
		BIO_free(s->net_in);
		BIO_free(s->net_out);
		s->net_in = s->net_out = NULL;
		return -ENOMEM;
	}
	BIO_set_mem_eof_return(s->net_in, -1);
	SSL_set_bio(s->ssl, s->net_in, s->net_out);
	if (server)
		SSL_set_accept_state(s->ssl);
	else
		SSL_set_connect_state(s->ssl);
	s->handshaking = true;
	if (buf_len(&s->in) > 0) {
		if (BIO_write(s->net_in, buf_head(&s->in), (int)buf_len(&s->in)) !=
		    (int)buf_len(&s->in))
			return -ENOMEM;
		buf_consume(&s->in, buf_len(&s->in));
	}
	return 0;
}

void side_cork(void)
{
	cork_depth++;
}

void side_uncork(void)
{
	if (--cork_depth == 0)
		uncork();
}

/* ---- the filters ---- */

static void plain_recv(struct side *s, const char *p, size_t n)
{
	if (buf_append(&s->in, p, n) < 0) {
		side_fail(s, "input buffer overflow");
		return;
	}
	s->ops->data(s);
}

static void plain_pull(struct side *s, bool notify)
{
}

static size_t plain_read_max(const struct side *s)
{
	return buf_room(&s->in);
}

static bool plain_input_full(const struct side *s)
{
	return false;
}

static void plain_nop(struct side *s)
{
}

static const struct side_cf cf_plain = {
	.name = "plain",
	.send = side_send_raw,
	.recv = plain_recv,
	.pull = plain_pull,
	.read_max = plain_read_max,
	.input_full = plain_input_full,
	.shutdown = plain_nop,
	.destroy = plain_nop,
};

static void tls_recv(struct side *s, const char *p, size_t n)
{
	if (BIO_write(s->net_in, p, (int)n) != (int)n) {
		side_fail(s, "out of memory");
		return;
	}
	tls_pull(s, true);
}

static size_t tls_read_max(const struct side *s)
{
	return READ_CHUNK;
}

/* TLS keeps ciphertext in net_in while s->in is full: the socket read stops too. */
static bool tls_input_full(const struct side *s)
{
	return BIO_ctrl_pending(s->net_in) > 4 * READ_CHUNK;
}

static void tls_shutdown(struct side *s)
{
	(void)SSL_shutdown(s->ssl);
	(void)side_flush_tls(s);
}

static void tls_destroy(struct side *s)
{
	SSL_free(s->ssl); /* frees the BIOs too */
	s->ssl = NULL;
	s->net_in = s->net_out = NULL;
}

static const struct side_cf cf_tls = {
	.name = "tls",
	.send = tls_send,
	.recv = tls_recv,
	.pull = tls_pull,
	.read_max = tls_read_max,
	.input_full = tls_input_full,
	.shutdown = tls_shutdown,
	.destroy = tls_destroy,
};
