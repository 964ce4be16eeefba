/* upstream.c - the egress proxy's upstream connections and their idle keep-alive pool.
 *
 * An upstream is one TCP connection (TLS for https) from the host to the real server a guest
 * connection was allowed to reach: the name is resolved on libuv's thread pool, or the policy's
 * [upstream] override gives the address; connect, name resolution and TLS together have
 * CONNECT_TIMEOUT_MS; the server's certificate is verified for the name against the system
 * store plus the policy's extra CA (proxy_client_ctx). Bytes written before it is ready wait
 * in a bounded buffer (PENDING_CAP).
 *
 * The pool: idle keep-alive connections per capsem-vm (never shared between VMs), keyed by
 * (TLS, name, port), at most POOL_PER_KEY per key and POOL_MAX in all, POOL_IDLE_MS idle. An
 * upstream stays with one guest connection while that is open; any byte or EOF from an idle one
 * closes it. The pool is flushed when the policy changes.
 *
 * Keyed upstreams: a TLS connection to a provider's own API domain, when that provider has a key,
 * is the key broker's (keyd.h): here it is a plain stream to the broker, which answers "ok" (or
 * "error WHY") once it is connected and verified, then relays the server's plaintext; what is
 * written to it goes in frames, heads apart (upstream_write_head), so the broker swaps their
 * placeholders. Everything else (pool, timeouts, flow control) is the same as for any upstream.
 *
 * Trust boundary: upstream servers are hostile (their bytes are read by proxy.c with the same
 * capped parser as the guest's); the names connected to passed the policy. Thread: the libuv
 * loop thread only.
 */
#include "proxy-internal.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "credentials.h"
#include "fdutil.h"
#include "keyd.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "tls.h"

static void up_free_maybe(struct up *u);
static void up_mark_ready(struct up *u);
static void up_fail(struct up *u, const char *why);

static void pool_remove(struct up *u)
{
	if (!u->in_pool)
		return;
	list_del(&u->pool_link);
	u->in_pool = false;
	u->p->n_pool--;
}

static void up_handle_closed(uv_handle_t *h)
{
	struct up *u = h->data;
	u->handles--;
	up_free_maybe(u);
}

static void up_side_closed(struct side *s)
{
	struct up *u = s->owner;
	u->handles--;
	up_free_maybe(u);
}

static void up_free_maybe(struct up *u)
{
	if (!u->dead || u->handles > 0 || u->gai_pending)
		return;
	struct proxy *p = u->p;
	buf_done(&u->pending, 1);
	free(u->host);
	free(u);
	proxy_unref(p);
}

/* Close an upstream for good (detached, out of the pool). */
void upstream_close(struct up *u)
{
	if (!u || u->dead)
		return;
	u->dead = true;
	u->conn = NULL;
	pool_remove(u);
	if (u->timer_init) {
		u->timer_init = false;
		uv_close((uv_handle_t *)&u->timer, up_handle_closed);
	}
	if (u->handle_init)
		side_close(&u->s);
	if (u->gai_pending)
		uv_cancel((uv_req_t *)&u->gai);
	up_free_maybe(u);
}

#define KEYD_STATUS_MAX 400 /* "error WHY\n" */

/* The broker's first line: "ok" makes u ready, anything else fails it. 1 while it has not come. */
static int up_keyed_status(struct up *u)
{
	const char *p = (const char *)buf_head(&u->s.in);
	size_t n = buf_len(&u->s.in);
	const char *nl = memchr(p, '\n', MIN(n, (size_t)KEYD_STATUS_MAX));
	if (!nl) {
		if (!u->s.eof && n < KEYD_STATUS_MAX)
			return 1;
		up_fail(u,
			"the key broker ended the connection (see keyd.log in the VM directory)");
		return -EPIPE;
	}
	size_t ll = (size_t)(nl - p);
	if (ll == 2 && memcmp(p, "ok", 2) == 0) {
		side_consume(&u->s, ll + 1);
		u->status_wait = false;
		up_mark_ready(u);
		return u->dead ? -EPIPE : 0;
	}
	char why[KEYD_STATUS_MAX + 32];
	bool err = ll > 6 && memcmp(p, "error ", 6) == 0;
	size_t k = 0;
	for (size_t i = err ? 6 : 0; i < ll && k < KEYD_STATUS_MAX; i++) /* printable only */
		why[k++] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
	why[k] = 0;
	up_fail(u, err ? why : "the key broker's answer is garbled");
	return -EPROTO;
}

static void up_on_data(struct side *s)
{
	struct up *u = s->owner;
	if (u->status_wait && up_keyed_status(u) != 0)
		return;
	if (buf_len(&s->in) == 0 && !s->eof)
		return;
	if (u->conn) {
		proxy_conn_pump(u->conn);
		return;
	}
	/* idle in the pool: any byte or EOF makes it unusable */
	upstream_close(u);
}

static void up_on_drain(struct side *s)
{
	struct up *u = s->owner;
	if (u->conn)
		proxy_conn_pump(u->conn);
}

static void up_mark_ready(struct up *u)
{
	u->ready = true;
	if (u->timer_init)
		uv_timer_stop(&u->timer);
	if (buf_len(&u->pending) > 0) {
		int r = side_write(&u->s, buf_head(&u->pending), buf_len(&u->pending));
		buf_consume(&u->pending, buf_len(&u->pending));
		if (r < 0) {
			struct conn *c = u->conn;
			upstream_close(u);
			if (c)
				proxy_conn_up_failed(c, "upstream write failed");
			return;
		}
	}
	if (u->conn)
		proxy_conn_up_ready(u->conn);
}

static void up_on_handshake(struct side *s)
{
	up_mark_ready(s->owner);
}

static void up_on_error(struct side *s, const char *why)
{
	struct up *u = s->owner;
	struct conn *c = u->conn;
	upstream_close(u);
	if (c)
		proxy_conn_up_failed(c, why);
}

static const struct side_ops up_ops = {
	.data = up_on_data,
	.drain = up_on_drain,
	.handshake = up_on_handshake,
	.error = up_on_error,
	.closed = up_side_closed,
};

static void up_fail(struct up *u, const char *why)
{
	struct conn *c = u->conn;
	u->failed = true;
	upstream_close(u);
	if (c)
		proxy_conn_up_failed(c, why);
}

static void up_on_connect(uv_connect_t *req, int status)
{
	struct up *u = req->data;
	if (u->dead)
		return;
	if (status < 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect to %s:%u: %s", u->host, u->port,
			 uv_strerror(status));
		up_fail(u, why);
		return;
	}
	u->p->stats.upstream_connects++;
	(void)uv_tcp_nodelay(&u->s.h.tcp, 1);
	side_want_read(&u->s, true);
	if (!u->tls) {
		up_mark_ready(u);
		return;
	}
	if (side_start_tls(&u->s, proxy_client_ctx(u->p), false) < 0 ||
	    tls_client_setup(u->s.ssl, u->host) < 0) {
		up_fail(u, "TLS set-up failed");
		return;
	}
	side_pull(&u->s, true); /* sends the ClientHello */
}

/* Start the TCP connect. 0 or -errno (nothing reported: the caller decides). */
static int up_connect_addr(struct up *u, const struct sockaddr *sa)
{
	int r = uv_tcp_init(u->p->cfg.loop, &u->s.h.tcp);
	if (r < 0)
		return r;
	side_init_common(&u->s, &up_ops, u);
	u->handle_init = true;
	u->handles++;
	u->creq.data = u;
	return uv_tcp_connect(&u->creq, &u->s.h.tcp, sa, up_on_connect);
}

static void up_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct up *u = req->data;
	u->gai_pending = false;
	if (u->dead || status < 0 || !res) {
		uv_freeaddrinfo(res);
		if (!u->dead) {
			char why[160];
			snprintf(why, sizeof(why), "cannot resolve %s: %s", u->host,
				 status < 0 ? uv_strerror(status) : "no address");
			up_fail(u, why); /* closes u, and frees it when it has no handle left */
			return;
		}
		up_free_maybe(u);
		return;
	}
	int r = up_connect_addr(u, res->ai_addr);
	uv_freeaddrinfo(res);
	if (r < 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect to %s:%u: %s", u->host, u->port,
			 uv_strerror(r));
		up_fail(u, why);
	}
}

static void up_on_timeout(uv_timer_t *t)
{
	struct up *u = t->data;
	if (u->in_pool) { /* idle too long */
		upstream_close(u);
		return;
	}
	if (u->fail_why) {
		up_fail(u, u->fail_why);
		return;
	}
	if (!u->ready) {
		char why[160];
		snprintf(why, sizeof(why), "upstream %s:%u did not answer within %d s", u->host,
			 u->port, CONNECT_TIMEOUT_MS / 1000);
		up_fail(u, why);
	}
}

/* Parse "host:port" or "[v6]:port" into a sockaddr. */
static int parse_hostport(const char *s, struct sockaddr_storage *ss)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	uint32_t port;
	if (parse_u32(colon + 1, &port) < 0 || port == 0 || port > 65535)
		return -EINVAL;
	char *h = host;
	size_t hl = strlen(h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h[hl - 1] = 0;
		h++;
	}
	memset(ss, 0, sizeof(*ss));
	if (uv_ip4_addr(h, (int)port, (struct sockaddr_in *)ss) == 0 ||
	    uv_ip6_addr(h, (int)port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
	return -EINVAL;
}

/* Whether a TLS upstream to host goes through the key broker: a provider's own API domain,
 * that provider having a key. */
static bool host_keyed(const struct proxy *p, const char *host)
{
	int k = cred_provider_for_host(host);
	return p->cfg.keyd >= 0 && k >= 0 && (p->cfg.key_mask & (1u << k));
}

/* A keyed upstream: a stream from the broker, read like a plain upstream once it said "ok".
 * A broker that is gone fails u from the timer (a 502 naming it), as a failed connect would. */
static int up_start_keyed(struct up *u)
{
	int fd = -1;
	int r = keyd_connect(u->p->cfg.keyd, u->host, u->port, &fd);
	if (r < 0) {
		log_error_errno(r, "cannot reach the key broker");
		u->fail_why = "the key broker is not running (see keyd.log in the VM directory)";
		if (!u->timer_init)
			return r;
		uv_timer_start(&u->timer, up_on_timeout, 0, 0);
		return 0;
	}
	r = uv_pipe_init(u->p->cfg.loop, &u->s.h.pipe, 0);
	if (r < 0) {
		safe_close(fd);
		return r;
	}
	side_init_common(&u->s, &up_ops, u);
	u->handle_init = true;
	u->handles++;
	r = uv_pipe_open(&u->s.h.pipe, fd);
	if (r < 0) {
		safe_close(fd);
		return r;
	}
	u->status_wait = true;
	side_want_read(&u->s, true);
	return 0;
}

static struct up *up_new(struct proxy *p, const char *host, uint16_t port, bool tls)
{
	struct up *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	list_init(&u->pool_link);
	u->p = p;
	u->host = strdup(host);
	u->port = port;
	u->tls = tls;
	u->keyed = tls && host_keyed(p, host);
	buf_init(&u->pending, PENDING_CAP);
	if (!u->host) {
		free(u);
		return NULL;
	}
	p->refs++;
	if (uv_timer_init(p->cfg.loop, &u->timer) == 0) {
		u->timer.data = u;
		u->timer_init = true;
		u->handles++;
	}
	return u;
}

/* Start connecting u (the override from policy, else DNS on the thread pool). 0, or -errno
 * when it could not even start (nothing reported; the caller closes u). */
static int up_start(struct up *u)
{
	struct proxy *p = u->p;
	if (u->timer_init)
		uv_timer_start(&u->timer, up_on_timeout, CONNECT_TIMEOUT_MS, 0);
	if (u->keyed)
		return up_start_keyed(u);
	char over[300];
	if (policy_upstream_override(proxy_cur_policy(p), u->host, u->port, over, sizeof(over)) ==
	    0) {
		struct sockaddr_storage ss;
		int r = parse_hostport(over, &ss);
		return r < 0 ? r : up_connect_addr(u, (struct sockaddr *)&ss);
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", u->port);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	u->gai.data = u;
	u->gai_pending = true;
	int r = uv_getaddrinfo(p->cfg.loop, &u->gai, up_on_resolved, u->host, port, &hints);
	if (r < 0)
		u->gai_pending = false;
	return r;
}

/* An upstream for (tls, host, port) attached to c: an idle pooled one (when pooled), else a
 * new one. NULL when none could be started. */
struct up *upstream_get(struct conn *c, bool tls, bool pooled)
{
	struct proxy *p = c->p;
	const char *host = c->host;
	uint16_t port = c->port;
	struct list_link *l;
	list_for_each (l, &p->pool) {
		struct up *u = list_entry(l, struct up, pool_link);
		if (!pooled)
			break;
		if (u->tls == tls && u->port == port && streq(u->host, host) && !u->s.eof &&
		    buf_len(&u->s.in) == 0) {
			pool_remove(u);
			if (u->timer_init)
				uv_timer_stop(&u->timer);
			p->stats.upstream_reused++;
			u->conn = c;
			return u;
		}
	}
	struct up *u = up_new(p, host, port, tls);
	if (!u)
		return NULL;
	u->conn = c;
	if (up_start(u) < 0) {
		u->conn = NULL;
		upstream_close(u);
		return NULL;
	}
	return u;
}

/* Return a finished upstream to the pool (or close it when the pool is full). */
void upstream_release(struct up *u)
{
	struct proxy *p = u->p;
	u->conn = NULL;
	size_t same = 0;
	struct list_link *l;
	list_for_each (l, &p->pool) {
		const struct up *x = list_entry(l, struct up, pool_link);
		if (x->tls == u->tls && x->port == u->port && streq(x->host, u->host))
			same++;
	}
	if (p->closing || !u->ready || u->s.eof || buf_len(&u->s.in) > 0 || same >= POOL_PER_KEY ||
	    p->n_pool >= POOL_MAX) {
		upstream_close(u);
		return;
	}
	u->in_pool = true;
	list_add_head(&p->pool, &u->pool_link);
	p->n_pool++;
	u->idle_since = proxy_mono_ns();
	if (u->timer_init)
		uv_timer_start(&u->timer, up_on_timeout, POOL_IDLE_MS, 0);
	side_want_read(&u->s, true); /* notice a close while idle */
}

static int up_put(struct up *u, const void *data, size_t n)
{
	if (!u->ready)
		return buf_append(&u->pending, data, n);
	return side_write(&u->s, data, n);
}

/* One frame to the key broker (header and payload both queued, or neither). */
static int up_frame(struct up *u, enum keyd_frame t, const void *data, size_t n)
{
	uint8_t hdr[KEYD_HDR];
	if (n > KEYD_FRAME_MAX)
		return -E2BIG;
	if (!u->ready && buf_room(&u->pending) < sizeof(hdr) + n)
		return -ENOBUFS;
	keyd_frame_header(hdr, t, n);
	int r = up_put(u, hdr, sizeof(hdr));
	return r < 0 ? r : up_put(u, data, n);
}

int upstream_write(struct up *u, const void *data, size_t n)
{
	if (!u->keyed)
		return up_put(u, data, n);
	const uint8_t *p = data;
	int r = 0;
	while (n > 0 && r == 0) {
		size_t k = MIN(n, (size_t)KEYD_FRAME_MAX);
		r = up_frame(u, KEYD_DATA, p, k);
		p += k;
		n -= k;
	}
	return r;
}

int upstream_write_head(struct up *u, const void *head, size_t n)
{
	return u->keyed ? up_frame(u, KEYD_HEAD, head, n) : up_put(u, head, n);
}

size_t upstream_backlog(const struct up *u)
{
	return buf_len(&u->pending) + (u->handle_init ? u->s.wq : 0);
}

void upstream_pool_flush(struct proxy *p)
{
	while (!list_empty(&p->pool))
		upstream_close(list_entry(p->pool.next, struct up, pool_link));
}
