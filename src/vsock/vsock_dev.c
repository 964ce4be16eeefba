/* vsock_dev.c - virtio-vsock connections, credit flow control and the hybrid Unix-socket side.
 *
 * Trust boundary: every packet header and payload comes from the guest and is hostile. Headers
 * are gathered from possibly split buffers into a local copy, lengths are checked against what is
 * actually present and against VSOCK_MAX_PKT, the source CID must be the guest's, and a guest
 * can only ever affect connections whose packets it sends: bad input earns that connection (or
 * that packet) an RST, never a crash, and no guest behaviour makes us buffer more than
 * VSOCK_BUF_ALLOC + VSOCK_TO_GUEST_MAX per connection or hold more than VSOCK_MAX_CONNS of them.
 * The host side is a Unix socket per connection, written and read non-blocking.
 *
 * Data structures: every connection is on the "all" list; once it has a (local, peer) port pair
 * it is in a hash table; while it owes the guest a packet it is on the rx FIFO, served round
 * robin one packet at a time, so a busy connection cannot starve the others. RSTs for packets
 * that have no connection go to a small bounded ring served first.
 *
 * Runs on the capsem-vm event loop thread (or a test/fuzzer); no locking.
 */
#include "vsock_dev.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "parse.h"

#define HASH_BITS 10
#define HASH_SIZE (1u << HASH_BITS)

enum conn_state {
	CONN_LINE,    /* host connected to the hybrid socket; reading "CONNECT <port>\n" */
	CONN_REQUEST, /* host-initiated: REQUEST owed or sent, waiting for RESPONSE or RST */
	CONN_OPEN,    /* established: bytes flow */
};

struct vsock_conn {
	struct list_link all_link;
	struct list_link rx_link; /* on d->rxq while the guest is owed a packet */
	struct vsock_conn *hnext;
	bool hashed;
	int fd;
	void *data;
	enum conn_state state;
	unsigned watching; /* last mask given to ops->watch */
	uint32_t local_port, peer_port;

	char line[VSOCK_CONNECT_LINE_MAX];
	size_t line_len;

	void *tap;	     /* ops.tap_open's state, or NULL */
	const char *why_end; /* for the tap: why the connection ended (static string) */

	/* guest -> host */
	struct buf to_host;    /* payload not yet written to fd; cap VSOCK_BUF_ALLOC */
	uint32_t fwd_cnt;      /* bytes written to fd (advertised to the guest) */
	uint32_t fwd_cnt_sent; /* fwd_cnt the guest last heard */
	bool host_shut_wr;     /* shutdown(fd, SHUT_WR) done */
	uint32_t guest_shut;   /* VSOCK_SHUTDOWN_* received */

	/* host -> guest */
	struct buf to_guest; /* read from fd, not yet in an rx buffer; cap VSOCK_TO_GUEST_MAX */
	uint32_t tx_cnt;     /* bytes taken for the guest */
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;
	bool host_eof;
	bool credit_asked;

	/* packets owed to the guest */
	bool pend_request, pend_response, pend_credit_update, pend_credit_request;
	bool pend_shutdown, shutdown_sent;
};

struct vsock_dev {
	uint64_t guest_cid;
	struct vsock_dev_ops ops;
	void *userdata;
	struct list_link all;
	struct list_link rxq;
	unsigned nconns;
	struct vsock_conn *hash[HASH_SIZE];
	struct vsock_hdr ctrl[VSOCK_CTRL_QUEUE];
	unsigned ctrl_head, ctrl_len;
	uint32_t next_local_port;
};

/* ---- wire header ---- */

void vsock_hdr_decode(const uint8_t p[VSOCK_HDR_SIZE], struct vsock_hdr *h)
{
	uint64_t u64;
	uint32_t u32;
	uint16_t u16;
#define GET(field, off, bits)                                 \
	do {                                                  \
		memcpy(&u##bits, p + (off), sizeof(u##bits)); \
		h->field = le##bits##toh(u##bits);            \
	} while (0)
	GET(src_cid, 0, 64);
	GET(dst_cid, 8, 64);
	GET(src_port, 16, 32);
	GET(dst_port, 20, 32);
	GET(len, 24, 32);
	GET(type, 28, 16);
	GET(op, 30, 16);
	GET(flags, 32, 32);
	GET(buf_alloc, 36, 32);
	GET(fwd_cnt, 40, 32);
#undef GET
}

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t p[VSOCK_HDR_SIZE])
{
	uint64_t u64;
	uint32_t u32;
	uint16_t u16;
#define PUT(field, off, bits)                                 \
	do {                                                  \
		u##bits = hto##le##bits(h->field);            \
		memcpy(p + (off), &u##bits, sizeof(u##bits)); \
	} while (0)
	PUT(src_cid, 0, 64);
	PUT(dst_cid, 8, 64);
	PUT(src_port, 16, 32);
	PUT(dst_port, 20, 32);
	PUT(len, 24, 32);
	PUT(type, 28, 16);
	PUT(op, 30, 16);
	PUT(flags, 32, 32);
	PUT(buf_alloc, 36, 32);
	PUT(fwd_cnt, 40, 32);
#undef PUT
}

/* ---- iovec helpers (guest buffers) ---- */

static size_t iov_total(const struct iovec *iov, size_t niov)
{
	size_t t = 0;
	for (size_t i = 0; i < niov; i++)
		t += iov[i].iov_len;
	return t;
}

/* Copy len bytes starting at byte off of iov into dst; the caller checked the total. */
static void iov_read(const struct iovec *iov, size_t niov, size_t off, void *dst, size_t len)
{
	uint8_t *o = dst;
	for (size_t i = 0; i < niov && len > 0; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = MIN(iov[i].iov_len - off, len);
		memcpy(o, (const uint8_t *)iov[i].iov_base + off, k);
		o += k;
		len -= k;
		off = 0;
	}
}

static void iov_write(const struct iovec *iov, size_t niov, size_t off, const void *src, size_t len)
{
	const uint8_t *s = src;
	for (size_t i = 0; i < niov && len > 0; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = MIN(iov[i].iov_len - off, len);
		memcpy((uint8_t *)iov[i].iov_base + off, s, k);
		s += k;
		len -= k;
		off = 0;
	}
}

/* ---- connection table ---- */

static unsigned hash_key(uint32_t local, uint32_t peer)
{
	uint32_t h = local * 0x9e3779b1u ^ (peer + 0x7f4a7c15u) * 0x85ebca77u;
	return (h ^ (h >> 16)) & (HASH_SIZE - 1);
}

static struct vsock_conn *conn_lookup(const struct vsock_dev *d, uint32_t local, uint32_t peer)
{
	for (struct vsock_conn *c = d->hash[hash_key(local, peer)]; c; c = c->hnext)
		if (c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void conn_hash(struct vsock_dev *d, struct vsock_conn *c)
{
	unsigned k = hash_key(c->local_port, c->peer_port);
	c->hnext = d->hash[k];
	d->hash[k] = c;
	c->hashed = true;
}

static void conn_unhash(struct vsock_dev *d, struct vsock_conn *c)
{
	if (!c->hashed)
		return;
	for (struct vsock_conn **p = &d->hash[hash_key(c->local_port, c->peer_port)]; *p;
	     p = &(*p)->hnext) {
		if (*p == c) {
			*p = c->hnext;
			break;
		}
	}
	c->hashed = false;
	c->hnext = NULL;
}

static struct vsock_conn *conn_new(struct vsock_dev *d, int fd)
{
	struct vsock_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	list_init(&c->rx_link);
	list_add_tail(&d->all, &c->all_link);
	buf_init(&c->to_host, VSOCK_BUF_ALLOC);
	buf_init(&c->to_guest, VSOCK_TO_GUEST_MAX);
	c->fd = fd;
	d->nconns++;
	return c;
}

static void conn_free(struct vsock_dev *d, struct vsock_conn *c)
{
	conn_unhash(d, c);
	if (!list_empty(&c->rx_link))
		list_del(&c->rx_link);
	list_del(&c->all_link);
	d->nconns--;
	if (c->tap)
		d->ops.tap_close(c->tap, c->why_end);
	if (c->fd >= 0)
		d->ops.release(d->userdata, c, c->fd);
	buf_done(&c->to_host, 0);
	buf_done(&c->to_guest, 0);
	free(c);
}

void vsock_conn_set_data(struct vsock_conn *c, void *data)
{
	c->data = data;
}

void *vsock_conn_get_data(const struct vsock_conn *c)
{
	return c->data;
}

unsigned vsock_dev_conn_count(const struct vsock_dev *d)
{
	return d->nconns;
}

/* ---- packets to the guest ---- */

static void ctrl_push(struct vsock_dev *d, const struct vsock_hdr *h)
{
	if (d->ctrl_len == VSOCK_CTRL_QUEUE) {
		log_debug("vsock: control queue full, dropping op %u", h->op);
		return;
	}
	d->ctrl[(d->ctrl_head + d->ctrl_len) % VSOCK_CTRL_QUEUE] = *h;
	d->ctrl_len++;
}

static void hdr_init(const struct vsock_dev *d, uint32_t local, uint32_t peer, uint16_t op,
		     struct vsock_hdr *h)
{
	*h = (struct vsock_hdr){
		.src_cid = VSOCK_HOST_CID,
		.dst_cid = d->guest_cid,
		.src_port = local,
		.dst_port = peer,
		.type = VSOCK_TYPE_STREAM,
		.op = op,
		.buf_alloc = VSOCK_BUF_ALLOC,
	};
}

/* RST in answer to a guest packet that has no connection. Never answers an RST. */
static void rst_reply(struct vsock_dev *d, const struct vsock_hdr *in)
{
	struct vsock_hdr h;
	if (in->op == VSOCK_OP_RST)
		return;
	hdr_init(d, in->dst_port, in->src_port, VSOCK_OP_RST, &h);
	ctrl_push(d, &h);
}

static void rst_conn(struct vsock_dev *d, const struct vsock_conn *c)
{
	struct vsock_hdr h;
	hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_RST, &h);
	h.fwd_cnt = c->fwd_cnt;
	ctrl_push(d, &h);
}

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	if (in_flight >= c->peer_buf_alloc)
		return 0; /* also when the guest claims to have consumed more than we sent */
	return c->peer_buf_alloc - in_flight;
}

static bool conn_data_for_guest(const struct vsock_conn *c)
{
	return c->state == CONN_OPEN && buf_len(&c->to_guest) > 0 &&
	       !(c->guest_shut & VSOCK_SHUTDOWN_RCV);
}

static bool conn_shutdown_owed(const struct vsock_conn *c)
{
	return c->pend_shutdown && !c->shutdown_sent && buf_len(&c->to_guest) == 0 &&
	       !(c->guest_shut & VSOCK_SHUTDOWN_RCV);
}

static bool conn_has_output(const struct vsock_conn *c)
{
	return c->pend_request || c->pend_response || c->pend_credit_update ||
	       c->pend_credit_request || conn_data_for_guest(c) || conn_shutdown_owed(c);
}

/* Both directions finished: the guest will send nothing more and all it sent reached the host
 * socket (then shut for writing), and the host side is finished or the guest reads no more. */
static bool conn_done(const struct vsock_conn *c)
{
	if (c->state != CONN_OPEN)
		return false;
	bool g2h = (c->guest_shut & VSOCK_SHUTDOWN_SEND) && buf_len(&c->to_host) == 0 &&
		   c->host_shut_wr;
	bool h2g = (c->guest_shut & VSOCK_SHUTDOWN_RCV) || (c->host_eof && c->shutdown_sent);
	return g2h && h2g && !c->pend_response;
}

static unsigned conn_wanted_events(const struct vsock_conn *c)
{
	unsigned ev = 0;
	switch (c->state) {
	case CONN_LINE:
		return VSOCK_EV_READ;
	case CONN_REQUEST:
		return VSOCK_EV_HUP;
	case CONN_OPEN:
		/* read while the guest has credit; without credit, watch once more so that data
		 * waiting on the host side makes us ask the guest for credit */
		if (!c->host_eof && !(c->guest_shut & VSOCK_SHUTDOWN_RCV) &&
		    buf_room(&c->to_guest) > 0 && (peer_credit(c) > 0 || !c->credit_asked))
			ev |= VSOCK_EV_READ;
		if (buf_len(&c->to_host) > 0)
			ev |= VSOCK_EV_WRITE;
		break;
	}
	return ev;
}

/* Re-evaluate c after any change: close it when both directions are done, put it on the rx FIFO
 * when it owes the guest a packet, and update the fd interest. Returns true when c was freed. */
static bool conn_check(struct vsock_dev *d, struct vsock_conn *c)
{
	if (conn_done(c)) {
		rst_conn(d, c);
		conn_free(d, c);
		return true;
	}
	unsigned ev = conn_wanted_events(c);
	if (conn_has_output(c) && list_empty(&c->rx_link))
		list_add_tail(&d->rxq, &c->rx_link);
	if (ev != c->watching) {
		c->watching = ev;
		d->ops.watch(d->userdata, c, c->fd, ev);
	}
	return false;
}

/* Drop c at once; tell the guest with an RST when it knows the connection. */
static void conn_abort(struct vsock_dev *d, struct vsock_conn *c, const char *why)
{
	log_debug("vsock: reset %u<->%u: %s", c->local_port, c->peer_port, why);
	if (!c->why_end)
		c->why_end = why;
	if (c->state == CONN_OPEN || (c->state == CONN_REQUEST && !c->pend_request))
		rst_conn(d, c);
	conn_free(d, c);
}

bool vsock_dev_rx_pending(const struct vsock_dev *d)
{
	return d->ctrl_len > 0 || !list_empty(&d->rxq);
}

int vsock_dev_rx_pkt(struct vsock_dev *d, const struct iovec *iov, size_t niov, size_t *ret_len)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	struct vsock_hdr h;
	size_t cap = iov_total(iov, niov);

	if (!vsock_dev_rx_pending(d))
		return 0;
	if (cap < VSOCK_HDR_SIZE)
		return -EMSGSIZE;
	if (d->ctrl_len > 0) {
		vsock_hdr_encode(&d->ctrl[d->ctrl_head], raw);
		d->ctrl_head = (d->ctrl_head + 1) % VSOCK_CTRL_QUEUE;
		d->ctrl_len--;
		iov_write(iov, niov, 0, raw, sizeof(raw));
		*ret_len = sizeof(raw);
		return 1;
	}

	while (!list_empty(&d->rxq)) {
		struct vsock_conn *c = list_entry(d->rxq.next, struct vsock_conn, rx_link);
		list_del(&c->rx_link);
		size_t payload = 0;

		if (c->pend_request) {
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_REQUEST, &h);
			c->pend_request = false;
		} else if (c->pend_response) {
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_RESPONSE, &h);
			c->pend_response = false;
		} else if (conn_data_for_guest(c) && cap > VSOCK_HDR_SIZE) {
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_RW, &h);
			payload = MIN(buf_len(&c->to_guest), cap - VSOCK_HDR_SIZE);
			payload = MIN(payload, (size_t)VSOCK_MAX_PKT);
			h.len = (uint32_t)payload;
		} else if (conn_shutdown_owed(c)) {
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_SHUTDOWN, &h);
			h.flags = VSOCK_SHUTDOWN_SEND;
			c->shutdown_sent = true;
		} else if (c->pend_credit_request) {
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_CREDIT_REQUEST, &h);
			c->pend_credit_request = false;
		} else if (c->pend_credit_update || conn_data_for_guest(c)) {
			/* (also when the buffer only fits a header: data waits for the next one) */
			hdr_init(d, c->local_port, c->peer_port, VSOCK_OP_CREDIT_UPDATE, &h);
		} else {
			continue; /* nothing owed any more */
		}
		/* every packet carries our credit */
		h.fwd_cnt = c->fwd_cnt;
		c->fwd_cnt_sent = c->fwd_cnt;
		c->pend_credit_update = false;

		vsock_hdr_encode(&h, raw);
		iov_write(iov, niov, 0, raw, sizeof(raw));
		if (payload > 0) {
			iov_write(iov, niov, VSOCK_HDR_SIZE, buf_head(&c->to_guest), payload);
			buf_consume(&c->to_guest, payload);
		}
		*ret_len = VSOCK_HDR_SIZE + payload;
		(void)conn_check(d, c);
		return 1;
	}
	return 0;
}

/* ---- host socket I/O ---- */

/* Write what we hold for the host. Returns true when c was freed (write error). */
static bool conn_flush_host(struct vsock_dev *d, struct vsock_conn *c)
{
	while (buf_len(&c->to_host) > 0) {
		ssize_t n = send(c->fd, buf_head(&c->to_host), buf_len(&c->to_host),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_abort(d, c, "host socket write failed");
			return true;
		}
		buf_consume(&c->to_host, (size_t)n);
		c->fwd_cnt += (uint32_t)n;
	}
	if (c->fwd_cnt - c->fwd_cnt_sent >= VSOCK_BUF_ALLOC / 2)
		c->pend_credit_update = true;
	if (buf_len(&c->to_host) == 0 && (c->guest_shut & VSOCK_SHUTDOWN_SEND) &&
	    !c->host_shut_wr) {
		(void)shutdown(c->fd, SHUT_WR); /* a peer that is gone already is fine */
		c->host_shut_wr = true;
	}
	return false;
}

/* Read what the guest has credit for. Returns true when c was freed. */
static bool conn_read_host(struct vsock_dev *d, struct vsock_conn *c)
{
	size_t want = MIN((size_t)peer_credit(c), buf_room(&c->to_guest));
	if (c->host_eof || (c->guest_shut & VSOCK_SHUTDOWN_RCV))
		return false;
	if (peer_credit(c) == 0 && !c->credit_asked) {
		c->pend_credit_request = true;
		c->credit_asked = true;
	}
	if (want == 0)
		return false;
	uint8_t *p = buf_reserve(&c->to_guest, want);
	if (!p) {
		conn_abort(d, c, "out of memory");
		return true;
	}
	ssize_t n = recv(c->fd, p, want, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return false;
		conn_abort(d, c, "host socket read failed");
		return true;
	}
	if (n == 0) {
		c->host_eof = true;
		c->pend_shutdown = true;
		return false;
	}
	if (c->tap)
		d->ops.tap_data(c->tap, true, p, (size_t)n);
	buf_commit(&c->to_guest, (size_t)n);
	c->tx_cnt += (uint32_t)n;
	return false;
}

static uint32_t alloc_local_port(struct vsock_dev *d, uint32_t peer)
{
	for (;;) {
		uint32_t p = d->next_local_port++;
		if (d->next_local_port == 0 || d->next_local_port == UINT32_MAX)
			d->next_local_port = VSOCK_LOCAL_PORT_BASE;
		if (!conn_lookup(d, p, peer))
			return p; /* at most VSOCK_MAX_CONNS ports are in use: this ends */
	}
}

/* Parse "CONNECT <port>[ <tag>]" (the newline already removed); *ret_tag points into s ("" when
 * there is none). */
static int parse_connect(char *s, uint32_t *ret, const char **ret_tag)
{
	if (strncmp(s, "CONNECT ", 8) != 0)
		return -EINVAL;
	s += 8;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	char *tag = strchr(s, ' ');
	if (tag) {
		*tag++ = 0;
		size_t n = strlen(tag);
		if (n == 0 || n > VSOCK_TAG_MAX ||
		    strspn(tag, "abcdefghijklmnopqrstuvwxyz0123456789_-") != n)
			return -EINVAL;
	}
	*ret_tag = tag ? tag : "";
	return parse_u32(s, ret);
}

/* Read the CONNECT line byte-exactly (nothing after the newline is consumed). Returns true when c
 * was freed. */
static bool conn_read_line(struct vsock_dev *d, struct vsock_conn *c)
{
	size_t room = sizeof(c->line) - c->line_len;
	ssize_t n = recv(c->fd, c->line + c->line_len, room, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return false;
	if (n <= 0) {
		conn_abort(d, c, "host closed before CONNECT");
		return true;
	}
	char *nl = memchr(c->line + c->line_len, '\n', (size_t)n);
	size_t take = nl ? (size_t)(nl - (c->line + c->line_len)) + 1 : (size_t)n;
	ssize_t k = recv(c->fd, c->line + c->line_len, take, MSG_DONTWAIT);
	if (k != (ssize_t)take) {
		conn_abort(d, c, "short read of CONNECT");
		return true;
	}
	c->line_len += take;
	if (!nl) {
		if (c->line_len >= sizeof(c->line)) {
			conn_abort(d, c, "CONNECT line too long");
			return true;
		}
		return false;
	}
	c->line[c->line_len - 1] = 0;
	uint32_t port;
	const char *tag;
	if (parse_connect(c->line, &port, &tag) < 0) {
		conn_abort(d, c, "bad CONNECT line");
		return true;
	}
	if (d->ops.tap_open)
		c->tap = d->ops.tap_open(d->userdata, port, tag);
	c->peer_port = port;
	c->local_port = alloc_local_port(d, port);
	c->state = CONN_REQUEST;
	c->pend_request = true;
	conn_hash(d, c);
	return false;
}

int vsock_dev_host_accept(struct vsock_dev *d, int fd)
{
	if (d->nconns >= VSOCK_MAX_CONNS) {
		close(fd);
		return -EMFILE;
	}
	struct vsock_conn *c = conn_new(d, fd);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->state = CONN_LINE;
	(void)conn_check(d, c);
	return 0;
}

void vsock_dev_conn_io(struct vsock_dev *d, struct vsock_conn *c, unsigned events)
{
	if (events & VSOCK_EV_ERR) {
		conn_abort(d, c, "host socket error");
		return;
	}
	switch (c->state) {
	case CONN_LINE:
		if ((events & (VSOCK_EV_READ | VSOCK_EV_HUP)) && conn_read_line(d, c))
			return;
		break;
	case CONN_REQUEST:
		if (events & VSOCK_EV_HUP) {
			conn_abort(d, c, "host hung up before the guest answered");
			return;
		}
		break;
	case CONN_OPEN:
		if ((events & VSOCK_EV_WRITE) && conn_flush_host(d, c))
			return;
		if ((events & VSOCK_EV_READ) && conn_read_host(d, c))
			return;
		break;
	}
	(void)conn_check(d, c);
}

/* ---- packets from the guest ---- */

/* A REQUEST (or anything else) for a connection we do not have. */
static void pkt_new(struct vsock_dev *d, const struct vsock_hdr *h)
{
	if (h->op != VSOCK_OP_REQUEST) {
		rst_reply(d, h);
		return;
	}
	if (d->nconns >= VSOCK_MAX_CONNS) {
		log_debug("vsock: too many connections, refusing port %u", h->dst_port);
		rst_reply(d, h);
		return;
	}
	int fd = d->ops.connect(d->userdata, h->dst_port);
	if (fd < 0) {
		log_debug_errno(fd, "vsock: guest connect to host port %u refused", h->dst_port);
		rst_reply(d, h);
		return;
	}
	struct vsock_conn *c = conn_new(d, fd);
	if (!c) {
		close(fd);
		rst_reply(d, h);
		return;
	}
	c->state = CONN_OPEN;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->pend_response = true;
	conn_hash(d, c);
	(void)conn_check(d, c);
}

/* The guest accepted a host-initiated connection: tell the host process. */
static bool conn_established(struct vsock_dev *d, struct vsock_conn *c)
{
	char ok[32];
	int k = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
	c->pend_request = false;
	c->state = CONN_OPEN;
	/* the socket is fresh and its buffer empty: a short write means the peer is gone */
	if (k <= 0 || send(c->fd, ok, (size_t)k, MSG_DONTWAIT | MSG_NOSIGNAL) != k) {
		conn_abort(d, c, "host went away before OK");
		return true;
	}
	return false;
}

/* A guest packet for c. Returns true when c was freed. */
static bool pkt_conn(struct vsock_dev *d, struct vsock_conn *c, const struct vsock_hdr *h,
		     const struct iovec *iov, size_t niov)
{
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	if (peer_credit(c) > 0)
		c->credit_asked = false;

	switch (h->op) {
	case VSOCK_OP_RST:
		log_debug("vsock: guest reset %u<->%u", c->local_port, c->peer_port);
		if (c->state == CONN_REQUEST)
			c->why_end = "the guest refused the connection";
		else if (!(c->guest_shut & VSOCK_SHUTDOWN_SEND) || !c->host_eof)
			c->why_end = "the guest reset the connection";
		conn_free(d, c);
		return true;
	case VSOCK_OP_RESPONSE:
		if (c->state != CONN_REQUEST) {
			conn_abort(d, c, "unexpected RESPONSE");
			return true;
		}
		return conn_established(d, c);
	case VSOCK_OP_SHUTDOWN:
		if (c->state != CONN_OPEN) {
			conn_abort(d, c, "SHUTDOWN before the connection was open");
			return true;
		}
		c->guest_shut |= h->flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
		if (c->guest_shut & VSOCK_SHUTDOWN_RCV)
			buf_consume(&c->to_guest, buf_len(&c->to_guest));
		return conn_flush_host(d, c);
	case VSOCK_OP_RW: {
		if (c->state != CONN_OPEN || (c->guest_shut & VSOCK_SHUTDOWN_SEND)) {
			conn_abort(d, c, "data on a connection not open for it");
			return true;
		}
		if (h->len == 0)
			return false;
		uint8_t *p = buf_reserve(&c->to_host, h->len);
		if (!p) {
			conn_abort(d, c,
				   buf_room(&c->to_host) < h->len ? "guest overran its credit"
								  : "out of memory");
			return true;
		}
		iov_read(iov, niov, VSOCK_HDR_SIZE, p, h->len);
		if (c->tap)
			d->ops.tap_data(c->tap, false, p, h->len);
		buf_commit(&c->to_host, h->len);
		return conn_flush_host(d, c);
	}
	case VSOCK_OP_CREDIT_UPDATE:
		return false;
	case VSOCK_OP_CREDIT_REQUEST:
		c->pend_credit_update = true;
		return false;
	default:
		conn_abort(d, c, "unexpected op");
		return true;
	}
}

void vsock_dev_tx_pkt(struct vsock_dev *d, const struct iovec *iov, size_t niov)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	struct vsock_hdr h;
	size_t total = iov_total(iov, niov);

	if (total < VSOCK_HDR_SIZE) {
		log_debug("vsock: guest packet shorter than a header (%zu bytes)", total);
		return;
	}
	iov_read(iov, niov, 0, raw, sizeof(raw)); /* the header may span descriptors */
	vsock_hdr_decode(raw, &h);

	if (h.src_cid != d->guest_cid) {
		log_debug("vsock: dropping packet from cid %" PRIu64, h.src_cid);
		return;
	}
	struct vsock_conn *c = NULL;
	if (h.dst_cid == VSOCK_HOST_CID)
		c = conn_lookup(d, h.dst_port, h.src_port);
	const char *bad = NULL;
	if (h.dst_cid != VSOCK_HOST_CID)
		bad = "not addressed to the host";
	else if (h.type != VSOCK_TYPE_STREAM)
		bad = "not a stream";
	else if (h.len > VSOCK_MAX_PKT || h.len > total - VSOCK_HDR_SIZE)
		bad = "length field larger than the payload";
	else if (h.op != VSOCK_OP_RW && h.len != 0)
		bad = "payload on a control packet";
	if (bad) {
		log_debug("vsock: bad packet %u->%u op %u: %s", h.src_port, h.dst_port, h.op, bad);
		if (c)
			conn_abort(d, c, bad);
		else
			rst_reply(d, &h);
		return;
	}
	if (!c) {
		pkt_new(d, &h);
		return;
	}
	if (!pkt_conn(d, c, &h, iov, niov))
		(void)conn_check(d, c);
}

/* ---- queues ---- */

int vsock_dev_process_tx(struct vsock_dev *d, struct vq *vq, const struct guestmem *gm,
			 unsigned budget)
{
	struct vq_chain ch;
	int n = 0;
	while ((unsigned)n < budget) {
		int r = vq_pop(vq, gm, &ch);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		vsock_dev_tx_pkt(d, ch.iov, ch.n_out);
		vq_push(vq, ch.head, 0);
		n++;
	}
	return n;
}

int vsock_dev_process_rx(struct vsock_dev *d, struct vq *vq, const struct guestmem *gm)
{
	struct vq_chain ch;
	int n = 0;
	while (vsock_dev_rx_pending(d)) {
		size_t len = 0;
		int r = vq_pop(vq, gm, &ch);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		if (ch.n_out > 0) {
			/* a receive buffer must be writable only: give it back unused */
			vq_push(vq, ch.head, 0);
			continue;
		}
		r = vsock_dev_rx_pkt(d, ch.iov, ch.n_in, &len);
		if (r == 0) {
			vq_unpop(vq);
			break;
		}
		if (r < 0) {
			vq_push(vq, ch.head, 0);
			continue;
		}
		vq_push(vq, ch.head, (uint32_t)len);
		n++;
	}
	return n;
}

/* ---- lifetime ---- */

int vsock_dev_new(uint64_t guest_cid, const struct vsock_dev_ops *ops, void *userdata,
		  struct vsock_dev **ret)
{
	if (guest_cid < 3 || guest_cid >= UINT32_MAX || !ops || !ops->connect || !ops->watch ||
	    !ops->release || !ops->tap_open != !ops->tap_data || !ops->tap_open != !ops->tap_close)
		return -EINVAL;
	struct vsock_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->guest_cid = guest_cid;
	d->ops = *ops;
	d->userdata = userdata;
	list_init(&d->all);
	list_init(&d->rxq);
	d->next_local_port = VSOCK_LOCAL_PORT_BASE;
	*ret = d;
	return 0;
}

void vsock_dev_reset(struct vsock_dev *d)
{
	while (!list_empty(&d->all)) {
		struct vsock_conn *c = list_entry(d->all.next, struct vsock_conn, all_link);
		if (!c->why_end)
			c->why_end =
				"the vsock device was reset (the VM stopped or QEMU went away)";
		conn_free(d, c);
	}
	d->ctrl_head = 0;
	d->ctrl_len = 0;
}

void vsock_dev_free(struct vsock_dev *d)
{
	if (!d)
		return;
	vsock_dev_reset(d);
	free(d);
}
