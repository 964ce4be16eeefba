/* dnsproxy.c - capsem-dns-proxy: the guest's resolver (127.0.0.1:53, UDP and TCP).
 *
 * /etc/resolv.conf names 127.0.0.1, and capsem-init's nftables rules redirect any other UDP or
 * TCP port 53 traffic here too. Every query goes to the host over ONE persistent vsock stream
 * (CID 2, port PROTO_PORT_DNS) in RFC 1035 TCP framing (u16 big-endian length, message); the
 * host answers in the same framing, in any order (docs/PROTOCOL.md §8). Queries get a new ID from
 * the remap table (dnsmap.h) so that clients using the same ID never collide; the answer's ID
 * finds the client and its own ID again. A query not answered within DP_TIMEOUT_MS gets SERVFAIL.
 * When the host link is down, queries get SERVFAIL at once, and the link is reconnected with an
 * exponential back-off (DP_BACKOFF_MIN_MS .. DP_BACKOFF_MAX_MS); queries that arrive while it is
 * connecting wait for it. TCP clients may pipeline queries; their answers come back as they
 * arrive (RFC 7766 allows any order).
 *
 * The listening sockets are made by capsem-init and inherited (--udp-fd, --tcp-fd), so queries
 * queue while this daemon (re)starts.
 *
 * Trust boundary: queries come from any guest process, answers from the host; both are handled
 * by length only (dnsmap.c), every buffer is capped (a TCP client DP_CLIENT_BUF, the host link
 * DP_HOST_BUF), at most DP_MAX_TCP TCP clients and DNSMAP_SLOTS queries in flight. Single thread,
 * one poll(2) loop.
 */
#include "dnsproxy.h"

#include <fcntl.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "clockutil.h"
#include "dnsmap.h"
#include "fdutil.h"
#include "hostconn.h"
#include "log.h"
#include "macro.h"
#include "netsetup.h"
#include "parse.h"
#include "proto.h"

#define DP_TIMEOUT_MS 5000u
#define DP_BACKOFF_MIN_MS 100u
#define DP_BACKOFF_MAX_MS 5000u
#define DP_MAX_TCP 64u
#define DP_TCP_IDLE_MS 30000u
#define DP_CLIENT_BUF (2u * (2u + DNS_MSG_MAX))
#define DP_HOST_BUF (4u << 20) /* queries waiting to be sent; answers being read */
#define DP_FRAME_MAX (2u + DNS_MSG_MAX)

enum host_state { HOST_DOWN, HOST_CONNECTING, HOST_UP };

struct dp_tcp {
	int fd; /* -1: free slot */
	uint32_t gen;
	int eof;
	unsigned pending; /* queries of this client in flight */
	uint64_t last_ms;
	struct buf in, out;
};

struct dp {
	int udp_fd, tcp_fd;
	struct dp_tcp tcp[DP_MAX_TCP];
	uint32_t gen;

	enum host_state host;
	int host_fd;
	uint64_t retry_at;
	unsigned backoff_ms;
	struct buf host_in, host_out;

	struct dnsmap map;
	uint8_t msg[DP_FRAME_MAX];
};

/* ---- answering clients ---- */

static void dp_tcp_close(struct dp *d, struct dp_tcp *t)
{
	t->fd = safe_close(t->fd);
	buf_done(&t->in, 0);
	buf_done(&t->out, 0);
	t->gen = ++d->gen; /* answers still in flight for it are dropped */
	t->pending = 0;
	t->eof = 0;
}

static void dp_tcp_flush(struct dp *d, struct dp_tcp *t)
{
	while (buf_len(&t->out) > 0) {
		ssize_t n = send(t->fd, buf_head(&t->out), buf_len(&t->out), MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				dp_tcp_close(d, t);
			return;
		}
		buf_consume(&t->out, (size_t)n);
	}
}

/* Deliver an answer (its ID already the client's) to the client that asked. */
static void dp_deliver(struct dp *d, const struct dnsmap_client *c, const uint8_t *msg, size_t n)
{
	if (!c->tcp) {
		if (sendto(d->udp_fd, msg, n, MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&c->addr, c->addrlen) < 0)
			log_debug_errno(negative_errno(), "cannot answer a UDP client");
		return;
	}
	if (c->conn >= DP_MAX_TCP)
		return;
	struct dp_tcp *t = &d->tcp[c->conn];
	if (t->fd < 0 || t->gen != c->gen)
		return; /* the client is gone */
	uint8_t len[2] = { (uint8_t)(n >> 8), (uint8_t)n };
	if (buf_append(&t->out, len, 2) < 0 || buf_append(&t->out, msg, n) < 0) {
		dp_tcp_close(d, t);
		return;
	}
	dp_tcp_flush(d, t);
}

static void dp_servfail(struct dp *d, const struct dnsmap_client *c, const uint8_t *q, size_t n)
{
	uint8_t out[DNS_HDR_SIZE + 300];
	ssize_t k = dnsmap_servfail(q, n, out, sizeof(out));
	if (k > 0)
		dp_deliver(d, c, out, (size_t)k);
}

/* A query left the table: its TCP client has one fewer in flight. */
static void dp_release(struct dp *d, const struct dnsmap_client *c)
{
	if (c->tcp && c->conn < DP_MAX_TCP && d->tcp[c->conn].fd >= 0 &&
	    d->tcp[c->conn].gen == c->gen && d->tcp[c->conn].pending > 0)
		d->tcp[c->conn].pending--;
}

/* A query that will get no answer from the host (timeout, link lost): SERVFAIL it. */
static void dp_servfail_entry(const struct dnsmap_entry *e, void *userdata)
{
	struct dp *d = userdata;
	dp_release(d, &e->client);
	dp_servfail(d, &e->client, e->query, e->query_len);
}

/* ---- the host link ---- */

static void dp_host_down(struct dp *d, const char *why, int err)
{
	if (d->host == HOST_UP)
		log_warn_errno(err, "DNS link to the host lost (%s); reconnecting", why);
	else
		log_debug_errno(err, "DNS link to the host: %s", why);
	d->host_fd = safe_close(d->host_fd);
	buf_done(&d->host_in, 0);
	buf_done(&d->host_out, 0);
	d->host = HOST_DOWN;
	d->retry_at = clock_ms(CLOCK_MONOTONIC) + d->backoff_ms;
	d->backoff_ms = MIN(d->backoff_ms * 2, DP_BACKOFF_MAX_MS);
	/* every query in flight is lost with the link: fail them now rather than in 5 s */
	dnsmap_flush(&d->map, dp_servfail_entry, d);
}

static void dp_host_connect(struct dp *d)
{
	union hostconn_addr sa;
	socklen_t len;
	hostconn_addr(PROTO_PORT_DNS, &sa, &len);
	d->host_fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (d->host_fd < 0) {
		dp_host_down(d, "socket", negative_errno());
		return;
	}
	buf_init(&d->host_in, DP_HOST_BUF);
	buf_init(&d->host_out, DP_HOST_BUF);
	if (connect(d->host_fd, &sa.sa, len) == 0) {
		d->host = HOST_UP;
		d->backoff_ms = DP_BACKOFF_MIN_MS;
		return;
	}
	if (errno == EINPROGRESS) {
		d->host = HOST_CONNECTING;
		return;
	}
	dp_host_down(d, "connect", negative_errno());
}

static void dp_host_flush(struct dp *d)
{
	while (buf_len(&d->host_out) > 0) {
		ssize_t n = send(d->host_fd, buf_head(&d->host_out), buf_len(&d->host_out),
				 MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				dp_host_down(d, "send", negative_errno());
			return;
		}
		buf_consume(&d->host_out, (size_t)n);
	}
}

/* Forward one query from a client, or answer SERVFAIL when that cannot be done. */
static void dp_query(struct dp *d, const struct dnsmap_client *c, const uint8_t *q, size_t n)
{
	uint16_t id;
	if (!dnsmap_is_query(q, n))
		return; /* not a query: nothing sensible to answer */
	if (d->host == HOST_DOWN && clock_ms(CLOCK_MONOTONIC) >= d->retry_at)
		dp_host_connect(d);
	if (d->host == HOST_DOWN ||
	    dnsmap_add(&d->map, dnsmap_get_id(q), c, q, n,
		       clock_ms(CLOCK_MONOTONIC) + DP_TIMEOUT_MS, &id) < 0) {
		dp_servfail(d, c, q, n);
		return;
	}
	uint8_t hdr[4] = { (uint8_t)(n >> 8), (uint8_t)n, (uint8_t)(id >> 8), (uint8_t)id };
	if (buf_room(&d->host_out) < n + 2 || buf_append(&d->host_out, hdr, 4) < 0 ||
	    buf_append(&d->host_out, q + 2, n - 2) < 0) {
		struct dnsmap_entry e;
		(void)dnsmap_take(&d->map, id, &e);
		dp_servfail(d, c, q, n);
		return;
	}
	if (c->tcp)
		d->tcp[c->conn].pending++;
	if (d->host == HOST_UP)
		dp_host_flush(d);
}

/* Answers from the host. 0, or -EPROTO (a malformed frame: the link is reset). */
static int dp_host_frames(struct dp *d)
{
	while (buf_len(&d->host_in) >= 2) {
		const uint8_t *p = buf_head(&d->host_in);
		size_t n = (size_t)p[0] << 8 | p[1];
		struct dnsmap_entry e;
		if (n < DNS_HDR_SIZE)
			return -EPROTO;
		if (buf_len(&d->host_in) < 2 + n)
			return 0;
		memcpy(d->msg, p + 2, n);
		buf_consume(&d->host_in, 2 + n);
		if (dnsmap_take(&d->map, dnsmap_get_id(d->msg), &e) < 0) {
			log_debug("dropping an answer for unknown ID %u", dnsmap_get_id(d->msg));
			continue;
		}
		dnsmap_set_id(d->msg, e.orig_id);
		dp_release(d, &e.client);
		dp_deliver(d, &e.client, d->msg, n);
	}
	return 0;
}

static void dp_host_event(struct dp *d, short revents)
{
	if (d->host == HOST_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(d->host_fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			dp_host_down(d, "connect", -err);
			return;
		}
		d->host = HOST_UP;
		d->backoff_ms = DP_BACKOFF_MIN_MS;
		log_debug("DNS link to the host is up");
	}
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		for (;;) {
			uint8_t *p = buf_reserve(&d->host_in, 16384);
			if (!p) {
				dp_host_down(d, "answer too large", -ENOBUFS);
				return;
			}
			ssize_t n = recv(d->host_fd, p, 16384, 0);
			if (n <= 0) {
				buf_commit(&d->host_in, 0);
				if (n == 0) {
					dp_host_down(d, "closed by the host", 0);
					return;
				}
				if (errno == EAGAIN || errno == EINTR)
					break;
				dp_host_down(d, "recv", negative_errno());
				return;
			}
			buf_commit(&d->host_in, (size_t)n);
			/* answers out before the next read: host_in holds at most one partial frame */
			if (dp_host_frames(d) < 0) {
				dp_host_down(d, "malformed answer frame", -EPROTO);
				return;
			}
		}
	}
	if (d->host == HOST_UP)
		dp_host_flush(d);
}

/* ---- clients ---- */

static void dp_udp_event(struct dp *d)
{
	for (int i = 0; i < 64; i++) {
		struct dnsmap_client c = { .tcp = 0 };
		c.addrlen = sizeof(c.addr);
		ssize_t n = recvfrom(d->udp_fd, d->msg, sizeof(d->msg), MSG_DONTWAIT,
				     (struct sockaddr *)&c.addr, &c.addrlen);
		if (n < 0)
			return;
		dp_query(d, &c, d->msg, (size_t)n);
	}
}

static void dp_tcp_accept(struct dp *d)
{
	for (;;) {
		int fd = accept4(d->tcp_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		struct dp_tcp *t = NULL;
		for (unsigned i = 0; i < DP_MAX_TCP && !t; i++)
			if (d->tcp[i].fd < 0)
				t = &d->tcp[i];
		if (!t) {
			safe_close(fd);
			continue;
		}
		t->fd = fd;
		t->eof = 0;
		t->pending = 0;
		t->last_ms = clock_ms(CLOCK_MONOTONIC);
		buf_init(&t->in, DP_CLIENT_BUF);
		buf_init(&t->out, DP_CLIENT_BUF);
	}
}

static void dp_tcp_event(struct dp *d, struct dp_tcp *t, short revents)
{
	t->last_ms = clock_ms(CLOCK_MONOTONIC);
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		uint8_t *p = buf_reserve(&t->in, 16384);
		ssize_t n = p ? recv(t->fd, p, 16384, 0) : -1;
		if (!p) {
			dp_tcp_close(d, t); /* a client that sends more than two queries' worth */
			return;
		}
		if (n == 0) {
			buf_commit(&t->in, 0);
			t->eof = 1;
		} else if (n < 0) {
			buf_commit(&t->in, 0);
			if (errno != EAGAIN && errno != EINTR) {
				dp_tcp_close(d, t);
				return;
			}
		} else {
			buf_commit(&t->in, (size_t)n);
		}
		while (t->fd >= 0 && buf_len(&t->in) >= 2) {
			const uint8_t *h = buf_head(&t->in);
			size_t len = (size_t)h[0] << 8 | h[1];
			if (buf_len(&t->in) < 2 + len)
				break;
			struct dnsmap_client c = { .tcp = 1,
						   .conn = (uint32_t)(t - d->tcp),
						   .gen = t->gen };
			memcpy(d->msg, h + 2, len);
			buf_consume(&t->in, 2 + len);
			dp_query(d, &c, d->msg, len);
		}
	}
	if (t->fd >= 0 && (revents & POLLOUT))
		dp_tcp_flush(d, t);
	if (t->fd >= 0 && t->eof && t->pending == 0 && buf_len(&t->out) == 0)
		dp_tcp_close(d, t);
}

/* ---- main loop ---- */

enum { P_UDP, P_TCP, P_HOST, P_CLIENTS };

static int dp_loop(struct dp *d)
{
	struct pollfd p[P_CLIENTS + DP_MAX_TCP];
	struct dp_tcp *who[DP_MAX_TCP];

	for (;;) {
		uint64_t now = clock_ms(CLOCK_MONOTONIC), wake = dnsmap_next_deadline(&d->map);
		struct dnsmap_entry e;
		unsigned n = P_CLIENTS;
		int timeout;

		while (dnsmap_expire(&d->map, now, &e) > 0) {
			log_debug("no answer from the host within %u ms: SERVFAIL", DP_TIMEOUT_MS);
			dp_servfail_entry(&e, d);
			wake = dnsmap_next_deadline(&d->map);
		}
		for (unsigned i = 0; i < DP_MAX_TCP; i++) {
			struct dp_tcp *t = &d->tcp[i];
			if (t->fd < 0)
				continue;
			if (t->eof && t->pending == 0 && buf_len(&t->out) == 0) {
				dp_tcp_close(d, t);
				continue;
			}
			if (now - t->last_ms >= DP_TCP_IDLE_MS && t->pending == 0) {
				dp_tcp_close(d, t);
				continue;
			}
			wake = MIN(wake, t->last_ms + DP_TCP_IDLE_MS);
			short ev =
				(short)((t->eof ? 0 : POLLIN) | (buf_len(&t->out) ? POLLOUT : 0));
			if (!ev)
				continue;
			who[n - P_CLIENTS] = t;
			p[n++] = (struct pollfd){ .fd = t->fd, .events = ev };
		}
		if (d->host == HOST_DOWN && d->map.n == 0 && now >= d->retry_at)
			dp_host_connect(d); /* keep the link up ahead of the next query */
		if (d->host == HOST_DOWN)
			wake = MIN(wake, d->retry_at);
		p[P_UDP] = (struct pollfd){ .fd = d->udp_fd, .events = POLLIN };
		p[P_TCP] = (struct pollfd){ .fd = d->tcp_fd, .events = POLLIN };
		short hev = 0;
		if (d->host == HOST_CONNECTING)
			hev = POLLOUT;
		else if (d->host == HOST_UP)
			hev = (short)(POLLIN | (buf_len(&d->host_out) ? POLLOUT : 0));
		p[P_HOST] = (struct pollfd){ .fd = hev ? d->host_fd : -1, .events = hev };

		timeout = wake == UINT64_MAX ? -1 : wake <= now ? 0 : (int)MIN(wake - now, 60000u);
		if (poll(p, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return log_error_errno(negative_errno(), "poll");
		}
		if (p[P_HOST].revents)
			dp_host_event(d, p[P_HOST].revents);
		if (p[P_UDP].revents & POLLIN)
			dp_udp_event(d);
		for (unsigned i = P_CLIENTS; i < n; i++)
			if (p[i].revents && who[i - P_CLIENTS]->fd == p[i].fd)
				dp_tcp_event(d, who[i - P_CLIENTS], p[i].revents);
		if (p[P_TCP].revents & POLLIN)
			dp_tcp_accept(d);
	}
}

int dnsproxy_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "udp-fd", required_argument, NULL, 'u' },
		{ "tcp-fd", required_argument, NULL, 't' },
		{ "port", required_argument, NULL, 'p' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct sigaction ign = { .sa_handler = SIG_IGN };
	uint32_t v, port = NETSETUP_DNS_PORT;
	int c, r;
	struct dp *d = calloc(1, sizeof(*d));

	if (!d)
		return log_oom(), 1;
	d->udp_fd = d->tcp_fd = d->host_fd = -1;
	for (unsigned i = 0; i < DP_MAX_TCP; i++)
		d->tcp[i].fd = -1;
	(void)prctl(PR_SET_NAME, "capsem-dns-prox", 0, 0, 0);
	log_setup("capsem-dns-proxy", LOG_LVL_INFO);
	log_setup_from_env();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'u':
		case 't':
			if (parse_u32(optarg, &v) < 0 || v < 3 || v > 1024)
				return log_error("bad --%s-fd %s", c == 'u' ? "udp" : "tcp",
						 optarg),
				       2;
			*(c == 'u' ? &d->udp_fd : &d->tcp_fd) = (int)v;
			break;
		case 'p':
			if (parse_u32(optarg, &v) < 0 || v == 0 || v > 65535)
				return log_error("bad --port %s", optarg), 2;
			port = v;
			break;
		case 'd':
			log_setup("capsem-dns-proxy", LOG_LVL_DEBUG);
			break;
		case 'h':
			printf("usage: capsem-dns-proxy [--udp-fd N --tcp-fd M | --port P] "
			       "[--debug]\n  (default: 127.0.0.1:%u, UDP and TCP)\n",
			       NETSETUP_DNS_PORT);
			return 0;
		default:
			return 2;
		}
	}
	if (optind != argc || (d->udp_fd < 0) != (d->tcp_fd < 0))
		return log_error("give both --udp-fd and --tcp-fd, or neither"), 2;
	(void)sigaction(SIGPIPE, &ign, NULL);
	if (d->udp_fd < 0) {
		r = netsetup_listen(SOCK_DGRAM, (uint16_t)port, &d->udp_fd);
		if (r == 0)
			r = netsetup_listen(SOCK_STREAM, (uint16_t)port, &d->tcp_fd);
		if (r < 0)
			return log_error_errno(r, "cannot listen on 127.0.0.1:%u", port), 1;
	}
	(void)fd_set_cloexec(d->udp_fd, 1);
	(void)fd_set_cloexec(d->tcp_fd, 1);
	if (fd_set_nonblock(d->udp_fd, 1) < 0 || fd_set_nonblock(d->tcp_fd, 1) < 0)
		return log_error("bad listening sockets"), 1;
	dnsmap_init(&d->map);
	d->backoff_ms = DP_BACKOFF_MIN_MS;
	d->host = HOST_DOWN;
	d->retry_at = 0;
	r = dp_loop(d);
	return r < 0 ? 1 : 0;
}
