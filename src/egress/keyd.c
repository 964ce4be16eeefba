/* keyd.c - the key broker (keyd.h): the keys, the upstream TLS connections that carry them, and
 * the proxy's end of its protocol.
 *
 * The broker is small on purpose. Its main thread reads the control socket; each stream runs on
 * a thread of its own with blocking logic over poll (keyed connections are few: model calls,
 * git): resolve (or the policy's override), connect, TLS with the server verified for the name
 * against the system store and the policy's extra CA, "ok", then relay: frames from the proxy
 * go upstream (heads with their placeholders swapped), the upstream's plaintext goes back as it
 * comes. Heads are handled in a buffer that is wiped after each write, so a key is in memory
 * only in the store and for the moment a head is encrypted.
 *
 * Trust boundary: the control and stream bytes come from capsem-vm, which a guest may have
 * compromised: every message and frame is length-checked (keyd_frame_parse, fuzzed), a key is
 * swapped only into TLS connections to its provider's own domain, verified for that name, and
 * never written back to capsem-vm. The upstream server is outside too: its bytes are copied,
 * never parsed here. Threads: the main thread (control) and one per stream; the policy and the
 * client SSL_CTX are shared under a mutex, the key store is read-only after loading.
 */
#include "keyd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clockutil.h"
#include "credentials.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"
#include "tls.h"

#define CTL_MSG_MAX 512
#define RELAY_CHUNK (16u * 1024u)
#define THREAD_STACK (256u * 1024u)

/* ---- the proxy's side ---- */

int keyd_hello(int ctl, int timeout_ms, unsigned *ret_mask, char *err, size_t errlen)
{
	char ans[CTL_MSG_MAX];
	if (fd_send_with_fd(ctl, "hello", 5, -1) < 0) {
		snprintf(err, errlen, "the key broker is not running");
		return -EPIPE;
	}
	struct pollfd p = { .fd = ctl, .events = POLLIN };
	ssize_t n = poll(&p, 1, timeout_ms) > 0 ? read(ctl, ans, sizeof(ans) - 1) : -1;
	if (n <= 0) {
		snprintf(err, errlen, "the key broker did not answer");
		return -ETIMEDOUT;
	}
	ans[n] = 0;
	uint32_t mask;
	if (strncmp(ans, "keys ", 5) == 0 && parse_u32(ans + 5, &mask) == 0 &&
	    mask < (1u << CRED_N_PROVIDERS)) {
		*ret_mask = mask;
		return 0;
	}
	snprintf(err, errlen, "%s",
		 strncmp(ans, "error ", 6) == 0 ? ans + 6 : "the key broker's answer is garbled");
	return -EIO;
}

int keyd_connect(int ctl, const char *host, uint16_t port, int *ret_fd)
{
	char msg[CTL_MSG_MAX];
	int n = snprintf(msg, sizeof(msg), "connect %u %s", port, host);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -ENAMETOOLONG;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return negative_errno();
	ssize_t k = fd_send_with_fd(ctl, msg, (size_t)n, sv[1]);
	safe_close(sv[1]);
	if (k < 0) {
		safe_close(sv[0]);
		return k == -ECONNREFUSED || k == -ENOTCONN ? -EPIPE : (int)k;
	}
	*ret_fd = sv[0];
	return 0;
}

void keyd_frame_header(uint8_t hdr[KEYD_HDR], enum keyd_frame t, size_t n)
{
	hdr[0] = (uint8_t)t;
	hdr[1] = (uint8_t)(n >> 24);
	hdr[2] = (uint8_t)(n >> 16);
	hdr[3] = (uint8_t)(n >> 8);
	hdr[4] = (uint8_t)n;
}

/* ---- pure parts ---- */

ssize_t keyd_frame_parse(const uint8_t *p, size_t n, enum keyd_frame *ret_type, size_t *ret_len)
{
	if (n < KEYD_HDR)
		return 0;
	if (p[0] != KEYD_HEAD && p[0] != KEYD_DATA)
		return -EBADMSG;
	size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
	if (len > KEYD_FRAME_MAX)
		return -EBADMSG;
	if (n - KEYD_HDR < len)
		return 0;
	*ret_type = (enum keyd_frame)p[0];
	*ret_len = len;
	return (ssize_t)(KEYD_HDR + len);
}

int keyd_frame_output(const struct cred_store *s, const char *host, enum keyd_frame t,
		      const uint8_t *payload, size_t n, struct buf *out)
{
	if (t == KEYD_HEAD)
		return cred_rewrite_head(s, host, (const char *)payload, n, out, NULL);
	return buf_append(out, payload, n);
}

/* ---- the broker ---- */

struct keyd {
	struct cred_store *creds;
	char *corp, *user;
	pthread_mutex_t mu;
	struct policy *pol; /* under mu, as the two below */
	SSL_CTX *ctx;	    /* for pol's extra CA, made on first use */
	char *ctx_ca;
	atomic_int conns;
};

struct kconn {
	struct keyd *k;
	int fd; /* the stream to the proxy */
	int up; /* TCP to the server */
	SSL *ssl;
	uint16_t port;
	char host[256];
};

/* Under k->mu: the policy in force (reloaded when its files changed; a broken edit keeps the
 * old one). */
static void policy_refresh(struct keyd *k)
{
	if (k->pol && !policy_files_changed(k->pol))
		return;
	struct policy *np = NULL;
	char err[512];
	if (policy_load(k->corp, k->user, &np, err, sizeof(err)) < 0) {
		log_warn("policy not reloaded: %s", err);
		return;
	}
	policy_free(k->pol);
	k->pol = np;
}

/* The override address for c (copied into over, "" for none) and a reference to the client
 * context for the policy's extra CA. 0 or -errno. */
static int conn_settings(struct kconn *c, char *over, size_t olen, SSL_CTX **ret_ctx)
{
	struct keyd *k = c->k;
	int r = 0;
	pthread_mutex_lock(&k->mu);
	policy_refresh(k);
	over[0] = 0;
	if (k->pol && policy_upstream_override(k->pol, c->host, c->port, over, olen) < 0)
		over[0] = 0;
	const char *ca = k->pol ? policy_upstream_ca_file(k->pol) : NULL;
	bool same = (!ca && !k->ctx_ca) || (ca && k->ctx_ca && streq(ca, k->ctx_ca));
	if (!k->ctx || !same) {
		SSL_CTX *nc = tls_client_ctx_new(ca);
		char *nca = ca ? strdup(ca) : NULL;
		if (!nc || (ca && !nca)) {
			SSL_CTX_free(nc);
			free(nca);
			r = -ENOMEM;
		} else {
			SSL_CTX_free(k->ctx);
			free(k->ctx_ca);
			k->ctx = nc;
			k->ctx_ca = nca;
		}
	}
	if (r == 0 && SSL_CTX_up_ref(k->ctx) == 1)
		*ret_ctx = k->ctx;
	else if (r == 0)
		r = -ENOMEM;
	pthread_mutex_unlock(&k->mu);
	return r;
}

static int ms_left(uint64_t deadline)
{
	uint64_t now = clock_ms(CLOCK_MONOTONIC);
	return now >= deadline ? 0 : (int)(deadline - now);
}

/* Connect c->up to one of the addresses of name:port (numeric when numeric). 0 or -errno. */
static int tcp_connect(struct kconn *c, const char *name, const char *port, bool numeric,
		       uint64_t deadline, char *why, size_t wlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = numeric ? AI_NUMERICHOST | AI_NUMERICSERV : 0 };
	struct addrinfo *res = NULL;
	int g = getaddrinfo(name, port, &hints, &res);
	if (g != 0) {
		snprintf(why, wlen, "cannot resolve %s: %s", name, gai_strerror(g));
		return -EHOSTUNREACH;
	}
	int err = ETIMEDOUT;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
			err = errno;
			close(fd);
			continue;
		}
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int e = 0;
		socklen_t el = sizeof(e);
		if (poll(&p, 1, ms_left(deadline)) <= 0)
			e = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
			e = errno;
		if (e == 0) {
			c->up = fd;
			freeaddrinfo(res);
			return 0;
		}
		err = e;
		close(fd);
	}
	freeaddrinfo(res);
	snprintf(why, wlen, "connect to %s:%u: %s", c->host, c->port, strerror(err));
	return -err;
}

/* Wait until an SSL call that answered e can go on (or the deadline, -1 for none). */
static int ssl_wait(struct kconn *c, int e, uint64_t deadline)
{
	struct pollfd p = { .fd = c->up, .events = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN };
	int k = poll(&p, 1, deadline ? ms_left(deadline) : -1);
	return k > 0 ? 0 : -ETIMEDOUT;
}

static int up_open(struct kconn *c, char *why, size_t wlen)
{
	uint64_t deadline = clock_ms(CLOCK_MONOTONIC) + KEYD_CONNECT_MS;
	char over[300], port[8];
	SSL_CTX *ctx = NULL;
	int r = conn_settings(c, over, sizeof(over), &ctx);
	if (r < 0) {
		snprintf(why, wlen, "TLS set-up failed: %s", tls_error_string());
		return r;
	}
	if (over[0]) { /* "host:port" or "[v6]:port", from the policy file */
		char *colon = strrchr(over, ':');
		char *h = over;
		if (!colon) {
			SSL_CTX_free(ctx);
			snprintf(why, wlen, "bad upstream override %s", over);
			return -EINVAL;
		}
		*colon = 0;
		size_t hl = strlen(h);
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h[hl - 1] = 0;
			h++;
		}
		r = tcp_connect(c, h, colon + 1, true, deadline, why, wlen);
	} else {
		snprintf(port, sizeof(port), "%u", c->port);
		r = tcp_connect(c, c->host, port, false, deadline, why, wlen);
	}
	if (r < 0) {
		SSL_CTX_free(ctx);
		return r;
	}
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->up) != 1 || tls_client_setup(c->ssl, c->host) < 0) {
		snprintf(why, wlen, "TLS set-up failed: %s", tls_error_string());
		return -ENOMEM;
	}
	/* an SSL_read that handled only a session ticket returns instead of blocking */
	SSL_clear_mode(c->ssl, SSL_MODE_AUTO_RETRY);
	for (;;) {
		ERR_clear_error();
		int k = SSL_connect(c->ssl);
		if (k == 1)
			return 0;
		int e = SSL_get_error(c->ssl, k);
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
		    ssl_wait(c, e, deadline) < 0) {
			long v = SSL_get_verify_result(c->ssl);
			if (v != X509_V_OK)
				snprintf(why, wlen, "upstream %s: certificate not trusted: %s",
					 c->host, X509_verify_cert_error_string(v));
			else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				snprintf(why, wlen, "upstream %s:%u did not answer within %d s",
					 c->host, c->port, KEYD_CONNECT_MS / 1000);
			else
				snprintf(why, wlen, "TLS with %s: %s", c->host, tls_error_string());
			return -EPROTO;
		}
	}
}

static int ssl_write_all(struct kconn *c, const void *p, size_t n)
{
	while (n > 0) {
		ERR_clear_error();
		int k = SSL_write(c->ssl, p, (int)MIN(n, (size_t)INT_MAX));
		if (k > 0) {
			p = (const uint8_t *)p + k;
			n -= (size_t)k;
			continue;
		}
		int e = SSL_get_error(c->ssl, k);
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
		    ssl_wait(c, e, 0) < 0)
			return -EPIPE;
	}
	return 0;
}

/* Upstream -> proxy: what SSL has now. 1 when the upstream ended, 0, or -errno. */
static int relay_down(struct kconn *c, uint8_t *tmp)
{
	for (;;) {
		ERR_clear_error();
		int k = SSL_read(c->ssl, tmp, RELAY_CHUNK);
		if (k > 0) {
			if (fd_write_all(c->fd, tmp, (size_t)k) < 0)
				return -EPIPE;
			continue;
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		return 1; /* close_notify, EOF or an error: the upstream is done */
	}
}

/* Proxy -> upstream: the complete frames at the front of in (*n bytes). 0 or -errno. */
static int relay_up(struct kconn *c, uint8_t *in, size_t *n)
{
	size_t off = 0;
	int r = 0;
	while (r == 0) {
		enum keyd_frame t;
		size_t len;
		ssize_t k = keyd_frame_parse(in + off, *n - off, &t, &len);
		if (k <= 0) {
			r = (int)k;
			break;
		}
		const uint8_t *payload = in + off + KEYD_HDR;
		off += (size_t)k;
		if (t == KEYD_DATA) {
			r = ssl_write_all(c, payload, len);
			continue;
		}
		_cleanup_buf_wipe_ struct buf out = BUF_INIT(2 * KEYD_FRAME_MAX);
		r = keyd_frame_output(c->k->creds, c->host, t, payload, len, &out);
		if (r == 0)
			r = ssl_write_all(c, buf_head(&out), buf_len(&out));
	}
	explicit_bzero(in, off);
	memmove(in, in + off, *n - off);
	*n -= off;
	return r;
}

static void relay(struct kconn *c)
{
	_cleanup_free_ uint8_t *in = malloc(KEYD_HDR + KEYD_FRAME_MAX);
	_cleanup_free_ uint8_t *tmp = malloc(RELAY_CHUNK);
	size_t n = 0;
	if (!in || !tmp)
		return;
	for (;;) {
		struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN },
				       { .fd = c->up, .events = POLLIN } };
		if (SSL_pending(c->ssl) == 0 && poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if ((SSL_pending(c->ssl) > 0 || p[1].revents) && relay_down(c, tmp) != 0)
			break;
		if (p[0].revents) {
			ssize_t k = read(c->fd, in + n, KEYD_HDR + KEYD_FRAME_MAX - n);
			if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
				break;
			n += k > 0 ? (size_t)k : 0;
			if (relay_up(c, in, &n) < 0) {
				log_warn("%s:%u: a frame the broker does not accept: stream ended",
					 c->host, c->port);
				break;
			}
		}
	}
	explicit_bzero(in, KEYD_HDR + KEYD_FRAME_MAX);
}

static void *conn_main(void *arg)
{
	struct kconn *c = arg;
	char why[300] = "";
	int p = cred_provider_for_host(c->host);
	if (p < 0 || !cred_has_key(c->k->creds, (enum cred_provider)p))
		snprintf(why, sizeof(why), "no key is sent to %s", c->host);
	if (!why[0] && up_open(c, why, sizeof(why)) == 0) {
		if (fd_write_all(c->fd, "ok\n", 3) == 0)
			relay(c);
		if (c->ssl)
			(void)SSL_shutdown(c->ssl);
	} else {
		char line[320];
		int n = snprintf(line, sizeof(line), "error %s\n", why);
		(void)fd_write_all(c->fd, line, (size_t)MIN(n, (int)sizeof(line) - 1));
		log_info("%s:%u: %s", c->host, c->port, why);
	}
	SSL_free(c->ssl);
	safe_close(c->up);
	safe_close(c->fd);
	atomic_fetch_sub(&c->k->conns, 1);
	free(c);
	return NULL;
}

/* "connect PORT HOST" with fd: a thread for it (fd is taken in every case). */
static void on_connect(struct keyd *k, const char *args, int fd)
{
	const char *sp = strchr(args, ' ');
	char port_s[8];
	uint32_t port;
	size_t hl = sp ? strlen(sp + 1) : 0;
	if (!sp || (size_t)(sp - args) >= sizeof(port_s) || hl == 0 || hl > 253 || fd < 0) {
		log_warn("a malformed connect request");
		safe_close(fd);
		return;
	}
	memcpy(port_s, args, (size_t)(sp - args));
	port_s[sp - args] = 0;
	if (parse_u32(port_s, &port) < 0 || port == 0 || port > 65535) {
		safe_close(fd);
		return;
	}
	if (atomic_fetch_add(&k->conns, 1) >= KEYD_MAX_CONNS) {
		atomic_fetch_sub(&k->conns, 1);
		static const char full[] = "error too many connections through the key broker\n";
		(void)fd_write_all(fd, full, sizeof(full) - 1);
		safe_close(fd);
		return;
	}
	struct kconn *c = calloc(1, sizeof(*c));
	pthread_attr_t at;
	pthread_t t;
	if (c) {
		c->k = k;
		c->fd = fd;
		c->up = -1;
		c->port = (uint16_t)port;
		memcpy(c->host, sp + 1, hl + 1);
	}
	if (!c || pthread_attr_init(&at) != 0) {
		free(c);
		safe_close(fd);
		atomic_fetch_sub(&k->conns, 1);
		return;
	}
	(void)pthread_attr_setstacksize(&at, THREAD_STACK);
	(void)pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, conn_main, c) != 0) {
		free(c);
		safe_close(fd);
		atomic_fetch_sub(&k->conns, 1);
	}
	pthread_attr_destroy(&at);
}

int keyd_serve(int ctl, const char *home, const char *corp_policy)
{
	struct keyd k = { .mu = PTHREAD_MUTEX_INITIALIZER };
	char load_err[CTL_MSG_MAX - 16] = "";
	_cleanup_free_ char *cred_path = NULL;
	if (asprintf(&cred_path, "%s/" CRED_FILE, home) < 0 ||
	    asprintf(&k.user, "%s/%s", home, POLICY_USER_FILE) < 0 ||
	    !(k.corp = strdup(corp_policy)))
		return log_oom(), 1;
	int r = cred_load(cred_path, NULL, &k.creds, load_err, sizeof(load_err));
	/* the environment's keys are in the store now (or refused): not in two places */
	cred_env_scrub();
	if (r == 0 && policy_load(k.corp, k.user, &k.pol, load_err, sizeof(load_err)) < 0)
		r = -EINVAL;
	for (;;) {
		char msg[CTL_MSG_MAX];
		int fd = -1;
		ssize_t n = fd_recv_with_fd(ctl, msg, sizeof(msg) - 1, &fd);
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n <= 0)
			break; /* capsem-vm is gone: so are we (threads and all) */
		msg[n] = 0;
		if (streq(msg, "hello")) {
			char ans[CTL_MSG_MAX];
			if (r < 0)
				snprintf(ans, sizeof(ans), "error %s", load_err);
			else
				snprintf(ans, sizeof(ans), "keys %u", cred_key_mask(k.creds));
			(void)fd_send_with_fd(ctl, ans, strlen(ans), -1);
			safe_close(fd);
		} else if (strncmp(msg, "connect ", 8) == 0 && r == 0) {
			on_connect(&k, msg + 8, fd);
		} else {
			safe_close(fd);
		}
	}
	/* stream threads may still run: the store goes with the process, which ends now */
	return 0;
}
