/* test-vsock-dev.c - the virtio-vsock connection state machine against a fake guest (rings in a
 * host buffer) and real host sockets (socketpairs standing in for the hybrid Unix sockets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fakevq.h"
#include "macro.h"
#include "vsock_dev.h"

#define CID 3
#define MEMSZ (16u << 20)
#define MAXW 64

struct went {
	struct vsock_conn *c;
	int fd;
	unsigned ev;
};

struct h {
	uint8_t *buf;
	struct fakemem m;
	struct fakeq rx, tx;
	struct vsock_dev *d;
	bool refuse;
	bool small_buf;
	int peers[MAXW];
	uint32_t peer_port[MAXW];
	size_t npeers;
	struct went w[MAXW];
	size_t nw;
	unsigned released;
	int fds_before;
};

/* ---- fake host ---- */

static int h_connect(void *userdata, uint32_t port)
{
	struct h *h = userdata;
	int sv[2];
	if (h->refuse)
		return -ECONNREFUSED;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	if (h->small_buf) {
		int v = 4096;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	}
	assert_true(h->npeers < MAXW);
	h->peers[h->npeers] = sv[1];
	h->peer_port[h->npeers++] = port;
	return sv[0];
}

static struct went *h_find(struct h *h, const struct vsock_conn *c)
{
	for (size_t i = 0; i < h->nw; i++)
		if (h->w[i].c == c)
			return &h->w[i];
	return NULL;
}

static void h_watch(void *userdata, struct vsock_conn *c, int fd, unsigned events)
{
	struct h *h = userdata;
	struct went *w = h_find(h, c);
	if (!w) {
		assert_true(h->nw < MAXW);
		w = &h->w[h->nw++];
		w->c = c;
	}
	w->fd = fd;
	w->ev = events;
}

static void h_release(void *userdata, struct vsock_conn *c, int fd)
{
	struct h *h = userdata;
	struct went *w = h_find(h, c);
	if (w)
		*w = h->w[--h->nw];
	close(fd);
	h->released++;
}

static const struct vsock_dev_ops ops = {
	.connect = h_connect,
	.watch = h_watch,
	.release = h_release,
};

/* Open fds of this process: equal before and after a test, or something leaked. */
static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct h *h = calloc(1, sizeof(*h));
	h->fds_before = count_fds();
	h->buf = aligned_alloc(4096, MEMSZ);
	memset(h->buf, 0, MEMSZ);
	fm_init(&h->m, h->buf, MEMSZ, 0x40000000);
	fq_init(&h->rx, &h->m, 512);
	fq_init(&h->tx, &h->m, 512);
	assert_int_equal(vsock_dev_new(CID, &ops, h, &h->d), 0);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct h *h = *state;
	vsock_dev_free(h->d);
	assert_int_equal(h->nw, 0);
	for (size_t i = 0; i < h->npeers; i++)
		close(h->peers[i]);
	free(h->buf);
	assert_int_equal(count_fds(), h->fds_before);
	free(h);
	return 0;
}

/* Run the device until nothing moves: tx ring, ready host fds, rx ring. */
static void pump(struct h *h)
{
	for (int iter = 0; iter < 10000; iter++) {
		bool progress = false;
		int r = vsock_dev_process_tx(h->d, &h->tx.vq, &h->m.gm, 1000);
		assert_true(r >= 0);
		progress |= r > 0;

		struct went snap[MAXW];
		size_t n = h->nw;
		memcpy(snap, h->w, n * sizeof(snap[0]));
		for (size_t i = 0; i < n; i++) {
			if (!h_find(h, snap[i].c) || snap[i].ev == 0)
				continue;
			struct pollfd p = { .fd = snap[i].fd };
			if (snap[i].ev & VSOCK_EV_READ)
				p.events |= POLLIN;
			if (snap[i].ev & VSOCK_EV_WRITE)
				p.events |= POLLOUT;
			if (snap[i].ev & VSOCK_EV_HUP)
				p.events |= POLLRDHUP;
			assert_true(poll(&p, 1, 0) >= 0);
			unsigned ev = 0;
			if (p.revents & POLLERR)
				ev |= VSOCK_EV_ERR;
			if (p.revents & POLLHUP)
				ev |= snap[i].ev; /* like libuv: a hangup wakes every interest */
			if (p.revents & POLLIN)
				ev |= VSOCK_EV_READ;
			if (p.revents & POLLOUT)
				ev |= VSOCK_EV_WRITE;
			if (p.revents & POLLRDHUP)
				ev |= VSOCK_EV_HUP;
			ev &= snap[i].ev | VSOCK_EV_ERR;
			if (ev) {
				vsock_dev_conn_io(h->d, snap[i].c, ev);
				progress = true;
			}
		}
		r = vsock_dev_process_rx(h->d, &h->rx.vq, &h->m.gm);
		assert_true(r >= 0);
		progress |= r > 0;
		if (!progress)
			return;
	}
	fail_msg("pump does not settle");
}

/* ---- fake guest ---- */

static void post_rx(struct h *h, unsigned n, uint32_t size)
{
	for (unsigned i = 0; i < n; i++)
		fq_post_rx(&h->rx, size);
}

static struct vsock_hdr mkhdr(uint16_t op, uint32_t src_port, uint32_t dst_port)
{
	return (struct vsock_hdr){
		.src_cid = CID,
		.dst_cid = VSOCK_HOST_CID,
		.src_port = src_port,
		.dst_port = dst_port,
		.type = VSOCK_TYPE_STREAM,
		.op = op,
		.buf_alloc = 65536,
	};
}

static void gsend(struct h *h, struct vsock_hdr hd, const void *payload, size_t len)
{
	if (hd.op == VSOCK_OP_RW && hd.len == 0)
		hd.len = (uint32_t)len;
	fq_send_pkt(&h->tx, &hd, payload, len, 0);
}

/* Next packet the guest received: 1 and *hd (+ payload), or 0. */
static int grecv(struct h *h, struct vsock_hdr *hd, uint8_t *payload, size_t max)
{
	uint16_t id;
	uint32_t len;
	if (!fq_take_used(&h->rx, &id, &len))
		return 0;
	assert_true(len >= VSOCK_HDR_SIZE);
	const uint8_t *p = fm_ptr(&h->m, h->rx.buf[id]);
	vsock_hdr_decode(p, hd);
	assert_int_equal(hd->len, len - VSOCK_HDR_SIZE);
	assert_int_equal(hd->src_cid, VSOCK_HOST_CID);
	assert_int_equal(hd->dst_cid, CID);
	assert_int_equal(hd->type, VSOCK_TYPE_STREAM);
	assert_int_equal(hd->buf_alloc, VSOCK_BUF_ALLOC);
	if (payload) {
		assert_true(hd->len <= max);
		memcpy(payload, p + VSOCK_HDR_SIZE, hd->len);
	}
	return 1;
}

static void expect_op(struct h *h, uint16_t op, uint32_t src, uint32_t dst)
{
	struct vsock_hdr hd;
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, op);
	assert_int_equal(hd.src_port, src);
	assert_int_equal(hd.dst_port, dst);
}

static void expect_none(struct h *h)
{
	struct vsock_hdr hd;
	assert_int_equal(grecv(h, &hd, NULL, 0), 0);
}

static void host_read(int fd, const char *want)
{
	char got[256];
	size_t n = strlen(want);
	assert_int_equal(read(fd, got, sizeof(got)), (ssize_t)n);
	assert_memory_equal(got, want, n);
}

static void host_eof(int fd)
{
	char c;
	assert_int_equal(read(fd, &c, 1), 0);
}

/* Our end was closed; with unread bytes still in it the peer sees ECONNRESET instead of EOF. */
static void host_gone(int fd)
{
	char c;
	ssize_t n = read(fd, &c, 1);
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
}

/* Open a guest -> host connection from guest port gp to host port 5000; returns the host end. */
static int gconnect(struct h *h, uint32_t gp, uint32_t buf_alloc)
{
	struct vsock_hdr hd = mkhdr(VSOCK_OP_REQUEST, gp, 5000);
	hd.buf_alloc = buf_alloc;
	size_t before = h->npeers;
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(h->npeers, before + 1);
	assert_int_equal(h->peer_port[before], 5000);
	expect_op(h, VSOCK_OP_RESPONSE, 5000, gp);
	return h->peers[before];
}

/* ---- tests ---- */

static void test_refused_port(void **state)
{
	struct h *h = *state;
	h->refuse = true;
	gsend(h, mkhdr(VSOCK_OP_REQUEST, 1234, 5000), NULL, 0);
	pump(h);
	expect_none(h); /* no rx buffers yet: the RST waits */
	post_rx(h, 4, 4096);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 1234);
	expect_none(h);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
	/* an RST for nothing is not answered */
	gsend(h, mkhdr(VSOCK_OP_RST, 1234, 5000), NULL, 0);
	pump(h);
	expect_none(h);
}

static void test_connect_and_data(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	uint8_t pl[64];
	post_rx(h, 16, 4096);
	int p = gconnect(h, 1234, 65536);
	gsend(h, mkhdr(VSOCK_OP_RW, 1234, 5000), "hello", 5);
	pump(h);
	host_read(p, "hello");
	assert_int_equal(write(p, "world", 5), 5);
	pump(h);
	assert_int_equal(grecv(h, &hd, pl, sizeof(pl)), 1);
	assert_int_equal(hd.op, VSOCK_OP_RW);
	assert_int_equal(hd.len, 5);
	assert_memory_equal(pl, "world", 5);
	assert_int_equal(hd.fwd_cnt, 5); /* we forwarded the guest's 5 bytes */
	assert_int_equal(vsock_dev_conn_count(h->d), 1);
	/* guest RST: the host socket is closed at once */
	gsend(h, mkhdr(VSOCK_OP_RST, 1234, 5000), NULL, 0);
	pump(h);
	host_eof(p);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
	expect_none(h);
}

static void test_header_split(void **state)
{
	struct h *h = *state;
	post_rx(h, 4, 4096);
	struct vsock_hdr hd = mkhdr(VSOCK_OP_REQUEST, 99, 5000);
	fq_send_pkt(&h->tx, &hd, NULL, 0, 10);
	pump(h);
	expect_op(h, VSOCK_OP_RESPONSE, 5000, 99);
	hd = mkhdr(VSOCK_OP_RW, 99, 5000);
	hd.len = 3;
	fq_send_pkt(&h->tx, &hd, "abc", 3, 30);
	hd.len = 2;
	fq_send_pkt(&h->tx, &hd, "de", 2, 1);
	pump(h);
	host_read(h->peers[0], "abcde");
}

static uint32_t drain_rw(struct h *h, int *credit_requests)
{
	struct vsock_hdr hd;
	uint8_t pl[4096];
	uint32_t total = 0;
	while (grecv(h, &hd, pl, sizeof(pl))) {
		if (hd.op == VSOCK_OP_RW)
			total += hd.len;
		else if (hd.op == VSOCK_OP_CREDIT_REQUEST && credit_requests)
			(*credit_requests)++;
	}
	return total;
}

static void test_credit(void **state)
{
	struct h *h = *state;
	char big[300];
	int creq = 0;
	memset(big, 'x', sizeof(big));
	post_rx(h, 64, 4096);
	int p = gconnect(h, 1234, 100);
	assert_int_equal(write(p, big, sizeof(big)), (ssize_t)sizeof(big));
	pump(h);
	assert_int_equal(drain_rw(h, &creq), 100); /* exactly the guest's credit */
	assert_int_equal(creq, 1);		   /* and we asked for more, once */
	pump(h);
	assert_int_equal(drain_rw(h, NULL), 0);

	struct vsock_hdr hd = mkhdr(VSOCK_OP_CREDIT_UPDATE, 1234, 5000);
	hd.buf_alloc = 100;
	hd.fwd_cnt = 100;
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(drain_rw(h, NULL), 100);
	hd.fwd_cnt = 150; /* 200 sent, 150 consumed: 50 in flight, 50 of credit */
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(drain_rw(h, NULL), 50);
	/* a guest that claims to have consumed more than it got earns nothing */
	hd.fwd_cnt = 100000;
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(drain_rw(h, NULL), 0);
	hd.fwd_cnt = 250;
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(drain_rw(h, NULL), 50); /* the last 50 bytes */
}

static void test_tiny_rx_buffer(void **state)
{
	/* a buffer with room for a header only gets a credit update, and the data waits */
	struct h *h = *state;
	struct vsock_hdr hd;
	uint8_t pl[64];
	post_rx(h, 1, 4096);
	int p = gconnect(h, 8, 65536);
	assert_int_equal(write(p, "data", 4), 4);
	fq_post_rx(&h->rx, VSOCK_HDR_SIZE);
	pump(h);
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, VSOCK_OP_CREDIT_UPDATE);
	expect_none(h);
	post_rx(h, 1, 4096);
	pump(h);
	assert_int_equal(grecv(h, &hd, pl, sizeof(pl)), 1);
	assert_int_equal(hd.op, VSOCK_OP_RW);
	assert_memory_equal(pl, "data", 4);
}

static void test_credit_request(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	post_rx(h, 8, 4096);
	int p = gconnect(h, 7, 65536);
	gsend(h, mkhdr(VSOCK_OP_RW, 7, 5000), "12345678", 8);
	gsend(h, mkhdr(VSOCK_OP_CREDIT_REQUEST, 7, 5000), NULL, 0);
	pump(h);
	host_read(p, "12345678");
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, VSOCK_OP_CREDIT_UPDATE);
	assert_int_equal(hd.fwd_cnt, 8);
}

static void test_bad_len(void **state)
{
	struct h *h = *state;
	uint8_t junk[100] = { 0 };
	post_rx(h, 16, 4096);
	int p = gconnect(h, 1, 65536);
	struct vsock_hdr hd = mkhdr(VSOCK_OP_RW, 1, 5000);
	hd.len = 70000; /* > 64 KiB */
	fq_send_pkt(&h->tx, &hd, junk, sizeof(junk), 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 1);
	host_eof(p);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);

	p = gconnect(h, 2, 65536);
	hd = mkhdr(VSOCK_OP_RW, 2, 5000);
	hd.len = 200; /* more than the 100 bytes present */
	fq_send_pkt(&h->tx, &hd, junk, sizeof(junk), 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 2);
	host_eof(p);

	/* no connection: answered with RST, nothing opened */
	hd = mkhdr(VSOCK_OP_REQUEST, 3, 5000);
	hd.len = 4;
	fq_send_pkt(&h->tx, &hd, junk, 4, 0); /* payload on a control packet */
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 3);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);

	/* shorter than a header: dropped silently */
	uint64_t g = fm_alloc(&h->m, 20, 8);
	fq_set_desc(&h->tx, 300, g, 20, 0, 0);
	fq_publish(&h->tx, 300);
	pump(h);
	expect_none(h);
}

static void test_bad_addressing(void **state)
{
	struct h *h = *state;
	post_rx(h, 8, 4096);
	struct vsock_hdr hd = mkhdr(VSOCK_OP_REQUEST, 5, 5000);
	hd.type = VSOCK_TYPE_SEQPACKET;
	gsend(h, hd, NULL, 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 5);
	hd = mkhdr(VSOCK_OP_REQUEST, 5, 5000);
	hd.src_cid = 7; /* spoofed source: dropped without a word */
	gsend(h, hd, NULL, 0);
	pump(h);
	expect_none(h);
	hd = mkhdr(VSOCK_OP_REQUEST, 5, 5000);
	hd.dst_cid = 9; /* not for the host */
	gsend(h, hd, NULL, 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 5);
	hd = mkhdr(99, 5, 5000); /* unknown op, no connection */
	gsend(h, hd, NULL, 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 5);
	assert_int_equal(h->npeers, 0);
	/* unknown op on an open connection: that connection is reset */
	int p = gconnect(h, 6, 65536);
	gsend(h, mkhdr(99, 6, 5000), NULL, 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 6);
	host_eof(p);
}

static void test_overrun(void **state)
{
	struct h *h = *state;
	static uint8_t chunk[65536];
	h->small_buf = true;
	post_rx(h, 8, 4096);
	int p = gconnect(h, 11, 65536);
	for (int i = 0; i < 4; i++)
		gsend(h, mkhdr(VSOCK_OP_RW, 11, 5000), chunk, sizeof(chunk));
	pump(h);
	/* 256 KiB is within the credit we advertised: the host just has not read yet */
	assert_int_equal(vsock_dev_conn_count(h->d), 1);
	expect_none(h);
	gsend(h, mkhdr(VSOCK_OP_RW, 11, 5000), chunk, sizeof(chunk));
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 11);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
	/* what was buffered in the socket is still readable, then EOF */
	uint8_t tmp[65536];
	ssize_t n;
	while ((n = read(p, tmp, sizeof(tmp))) > 0)
		;
	assert_int_equal(n, 0);
}

static void test_flow_host_slow(void **state)
{
	/* the host reads slowly: data the guest sends within its credit is buffered, the credit
	 * update comes once half the buffer was forwarded */
	struct h *h = *state;
	static uint8_t chunk[65536];
	struct vsock_hdr hd;
	h->small_buf = true;
	post_rx(h, 32, 4096);
	int p = gconnect(h, 12, 65536);
	for (int i = 0; i < 4; i++)
		gsend(h, mkhdr(VSOCK_OP_RW, 12, 5000), chunk, sizeof(chunk));
	pump(h);
	expect_none(h);
	uint8_t tmp[65536];
	size_t got = 0;
	while (got < 4 * sizeof(chunk)) {
		ssize_t n = read(p, tmp, sizeof(tmp));
		if (n < 0 && errno == EAGAIN) {
			pump(h);
			continue;
		}
		assert_true(n > 0);
		got += (size_t)n;
	}
	pump(h);
	int updates = 0;
	uint32_t last_fwd = 0;
	while (grecv(h, &hd, NULL, 0)) {
		assert_int_equal(hd.op, VSOCK_OP_CREDIT_UPDATE);
		assert_true(hd.fwd_cnt - last_fwd >= VSOCK_BUF_ALLOC / 2);
		last_fwd = hd.fwd_cnt;
		updates++;
	}
	/* at least one update, each for at least half the buffer: the guest is never stuck */
	assert_true(updates >= 1);
	assert_true(last_fwd >= VSOCK_BUF_ALLOC / 2);
}

static void test_guest_half_close(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	uint8_t pl[64];
	post_rx(h, 16, 4096);
	int p = gconnect(h, 20, 65536);
	gsend(h, mkhdr(VSOCK_OP_RW, 20, 5000), "req", 3);
	hd = mkhdr(VSOCK_OP_SHUTDOWN, 20, 5000);
	hd.flags = VSOCK_SHUTDOWN_SEND;
	gsend(h, hd, NULL, 0);
	pump(h);
	host_read(p, "req");
	host_eof(p); /* SHUT_WR after the data */
	assert_int_equal(vsock_dev_conn_count(h->d), 1);
	assert_int_equal(write(p, "resp", 4), 4);
	close(p);
	h->peers[0] = -1;
	pump(h);
	assert_int_equal(grecv(h, &hd, pl, sizeof(pl)), 1);
	assert_int_equal(hd.op, VSOCK_OP_RW);
	assert_memory_equal(pl, "resp", 4);
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, VSOCK_OP_SHUTDOWN);
	assert_int_equal(hd.flags, VSOCK_SHUTDOWN_SEND);
	expect_op(h, VSOCK_OP_RST, 5000, 20); /* both directions done */
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
}

static void test_host_half_close(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	post_rx(h, 16, 4096);
	int p = gconnect(h, 21, 65536);
	assert_int_equal(write(p, "last", 4), 4);
	shutdown(p, SHUT_WR);
	pump(h);
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, VSOCK_OP_RW);
	assert_int_equal(grecv(h, &hd, NULL, 0), 1);
	assert_int_equal(hd.op, VSOCK_OP_SHUTDOWN);
	assert_int_equal(hd.flags, VSOCK_SHUTDOWN_SEND);
	/* the other direction still works */
	gsend(h, mkhdr(VSOCK_OP_RW, 21, 5000), "late", 4);
	pump(h);
	host_read(p, "late");
	expect_none(h);
	/* the guest closes: both flags; we flush, shut the host side and reset */
	hd = mkhdr(VSOCK_OP_SHUTDOWN, 21, 5000);
	hd.flags = VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV;
	gsend(h, hd, NULL, 0);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 21);
	host_eof(p);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
}

static void test_guest_shut_rcv(void **state)
{
	struct h *h = *state;
	post_rx(h, 16, 4096);
	int p = gconnect(h, 22, 65536);
	struct vsock_hdr hd = mkhdr(VSOCK_OP_SHUTDOWN, 22, 5000);
	hd.flags = VSOCK_SHUTDOWN_RCV;
	gsend(h, hd, NULL, 0);
	pump(h);
	assert_int_equal(write(p, "ignored", 7), 7);
	pump(h);
	expect_none(h); /* nothing is sent to a guest that reads no more */
	gsend(h, mkhdr(VSOCK_OP_RW, 22, 5000), "still", 5);
	pump(h);
	host_read(p, "still");
}

static int host_accept(struct h *h, int *ret_peer)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	*ret_peer = sv[1];
	return vsock_dev_host_accept(h->d, sv[0]);
}

static void test_host_connect(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	uint8_t pl[64];
	int p, p2;
	const uint32_t L = VSOCK_LOCAL_PORT_BASE;
	post_rx(h, 16, 4096);
	assert_int_equal(host_accept(h, &p), 0);
	assert_int_equal(write(p, "CONNECT 5001\nextra", 18), 18);
	pump(h);
	expect_op(h, VSOCK_OP_REQUEST, L, 5001);
	expect_none(h); /* "extra" waits for the connection */
	/* a second connection to the same guest port gets its own local port */
	assert_int_equal(host_accept(h, &p2), 0);
	assert_int_equal(write(p2, "CONNECT 5001\n", 13), 13);
	pump(h);
	expect_op(h, VSOCK_OP_REQUEST, L + 1, 5001);

	hd = mkhdr(VSOCK_OP_RESPONSE, 5001, L);
	gsend(h, hd, NULL, 0);
	pump(h);
	host_read(p, "OK 1073741824\n");
	assert_int_equal(grecv(h, &hd, pl, sizeof(pl)), 1);
	assert_int_equal(hd.op, VSOCK_OP_RW);
	assert_int_equal(hd.src_port, L);
	assert_memory_equal(pl, "extra", 5);
	gsend(h, mkhdr(VSOCK_OP_RW, 5001, L), "hi", 2);
	pump(h);
	host_read(p, "hi");

	/* the guest refuses the second one: the host socket is closed at once */
	gsend(h, mkhdr(VSOCK_OP_RST, 5001, L + 1), NULL, 0);
	pump(h);
	host_eof(p2);
	assert_int_equal(vsock_dev_conn_count(h->d), 1);
	close(p);
	close(p2);
}

/* ---- the audit tap ---- */

struct tapped {
	uint32_t port;
	char tag[32];
	char to_guest[64], to_host[64];
	size_t ng, nh;
	int closed;
	const char *why;
};

static struct tapped taps[4];
static size_t ntaps;

static void *t_open(void *userdata, uint32_t port, const char *tag)
{
	if (port == 9) /* not followed */
		return NULL;
	struct tapped *t = &taps[ntaps++];
	*t = (struct tapped){ .port = port };
	snprintf(t->tag, sizeof(t->tag), "%s", tag);
	return t;
}

static void t_data(void *tap, bool to_guest, const uint8_t *p, size_t n)
{
	struct tapped *t = tap;
	char *dst = to_guest ? t->to_guest : t->to_host;
	size_t *len = to_guest ? &t->ng : &t->nh;
	assert_true(*len + n < sizeof(t->to_guest));
	memcpy(dst + *len, p, n);
	*len += n;
}

static void t_close(void *tap, const char *why)
{
	struct tapped *t = tap;
	t->closed++;
	t->why = why;
}

/* the tap sees both directions in order, the CONNECT line's tag, and the end with its reason;
 * it is told nothing of connections it declined */
static void test_tap(void **state)
{
	struct h *h = *state;
	struct vsock_dev_ops o = ops;
	o.tap_open = t_open;
	o.tap_data = t_data;
	o.tap_close = t_close;
	struct vsock_dev *d = NULL;
	/* all three or none */
	struct vsock_dev_ops half = ops;
	half.tap_open = t_open;
	assert_int_equal(vsock_dev_new(CID, &half, h, &d), -EINVAL);
	vsock_dev_free(h->d);
	assert_int_equal(vsock_dev_new(CID, &o, h, &h->d), 0);
	ntaps = 0;

	const uint32_t L = VSOCK_LOCAL_PORT_BASE;
	struct vsock_hdr hd;
	uint8_t pl[64];
	int p, p2, p3;
	post_rx(h, 16, 4096);
	assert_int_equal(host_accept(h, &p), 0);
	assert_int_equal(write(p, "CONNECT 5001 cli\nab", 19), 19);
	assert_int_equal(host_accept(h, &p2), 0);
	assert_int_equal(write(p2, "CONNECT 9\n", 10), 10);
	assert_int_equal(host_accept(h, &p3), 0);
	assert_int_equal(write(p3, "CONNECT 7 x_1-z\n", 16), 16);
	pump(h);
	assert_int_equal(ntaps, 2);
	assert_int_equal(taps[0].port, 5001);
	assert_string_equal(taps[0].tag, "cli");
	assert_int_equal(taps[1].port, 7);
	assert_string_equal(taps[1].tag, "x_1-z");
	assert_int_equal(taps[0].ng, 0); /* nothing is taken before the guest accepts */
	expect_op(h, VSOCK_OP_REQUEST, L, 5001);
	expect_op(h, VSOCK_OP_REQUEST, L + 1, 9);
	expect_op(h, VSOCK_OP_REQUEST, L + 2, 7);

	gsend(h, mkhdr(VSOCK_OP_RESPONSE, 5001, L), NULL, 0);
	pump(h);
	host_read(p, "OK 1073741824\n");
	assert_int_equal(grecv(h, &hd, pl, sizeof(pl)), 1);
	assert_memory_equal(pl, "ab", 2);
	assert_int_equal(taps[0].ng, 2);
	assert_int_equal(write(p, "cd", 2), 2);
	pump(h);
	gsend(h, mkhdr(VSOCK_OP_RW, 5001, L), "xyz", 3);
	pump(h);
	host_read(p, "xyz");
	assert_memory_equal(taps[0].to_guest, "abcd", 4);
	assert_int_equal(taps[0].nh, 3);
	assert_memory_equal(taps[0].to_host, "xyz", 3);
	assert_int_equal(taps[0].closed, 0);

	/* the guest refuses port 7: closed with the reason; a guest reset of an open one too */
	gsend(h, mkhdr(VSOCK_OP_RST, 7, L + 2), NULL, 0);
	pump(h);
	assert_int_equal(taps[1].closed, 1);
	assert_string_equal(taps[1].why, "the guest refused the connection");
	gsend(h, mkhdr(VSOCK_OP_RST, 5001, L), NULL, 0);
	pump(h);
	assert_int_equal(taps[0].closed, 1);
	assert_string_equal(taps[0].why, "the guest reset the connection");
	close(p);
	close(p2);
	close(p3);
}

static void test_host_connect_hangup(void **state)
{
	struct h *h = *state;
	int p;
	post_rx(h, 16, 4096);
	assert_int_equal(host_accept(h, &p), 0);
	assert_int_equal(write(p, "CONNECT 6000\n", 13), 13);
	pump(h);
	expect_op(h, VSOCK_OP_REQUEST, VSOCK_LOCAL_PORT_BASE, 6000);
	close(p); /* the host gives up before the guest answers: the guest hears RST */
	pump(h);
	expect_op(h, VSOCK_OP_RST, VSOCK_LOCAL_PORT_BASE, 6000);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
	/* data before RESPONSE on a host-initiated connection is a protocol error */
	assert_int_equal(host_accept(h, &p), 0);
	assert_int_equal(write(p, "CONNECT 6000\n", 13), 13);
	pump(h);
	expect_op(h, VSOCK_OP_REQUEST, VSOCK_LOCAL_PORT_BASE + 1, 6000);
	gsend(h, mkhdr(VSOCK_OP_RW, 6000, VSOCK_LOCAL_PORT_BASE + 1), "x", 1);
	pump(h);
	expect_op(h, VSOCK_OP_RST, VSOCK_LOCAL_PORT_BASE + 1, 6000);
	host_eof(p);
	close(p);
}

static void test_connect_line_garbage(void **state)
{
	struct h *h = *state;
	const char *bad[] = {
		"HELLO\n", "CONNECT\n", "CONNECT -1\n", "CONNECT +5\n", "CONNECT 99999999999\n",
		"CONNECT  5\n", "CONNECT 5 \n", "connect 5\n",
		"CONNECT 5 CLI\n",				    /* tags: [a-z0-9_-] */
		"CONNECT 5 a b\n", "CONNECT 5 abcdefghijklmnopq\n", /* 17 > VSOCK_TAG_MAX */
		/* 60 bytes, no newline: over VSOCK_CONNECT_LINE_MAX */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"CONNECT 5", /* then EOF */
	};
	post_rx(h, 4, 4096);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		int p;
		unsigned rel = h->released;
		assert_int_equal(host_accept(h, &p), 0);
		assert_int_equal(write(p, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		if (i == ELEMENTSOF(bad) - 1)
			shutdown(p, SHUT_WR);
		pump(h);
		assert_int_equal(h->released, rel + 1);
		host_gone(p);
		close(p);
	}
	expect_none(h);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
}

static void test_no_head_of_line(void **state)
{
	struct h *h = *state;
	struct vsock_hdr hd;
	uint8_t pl[4096];
	static char lots[100000];
	post_rx(h, 64, 4096);
	int a = gconnect(h, 1000, 0); /* this guest reader has no buffer space at all */
	int b = gconnect(h, 1001, 65536);
	ssize_t na = write(a, lots, sizeof(lots));
	assert_true(na > 0);
	assert_int_equal(write(b, "fast", 4), 4);
	pump(h);
	int got_b = 0, req_a = 0;
	while (grecv(h, &hd, pl, sizeof(pl))) {
		if (hd.dst_port == 1001 && hd.op == VSOCK_OP_RW) {
			assert_memory_equal(pl, "fast", 4);
			got_b++;
		}
		if (hd.dst_port == 1000) {
			assert_int_not_equal(hd.op, VSOCK_OP_RW);
			req_a += hd.op == VSOCK_OP_CREDIT_REQUEST;
		}
	}
	assert_int_equal(got_b, 1);
	assert_int_equal(req_a, 1);
	gsend(h, mkhdr(VSOCK_OP_RW, 1001, 5000), "pong", 4);
	pump(h);
	host_read(b, "pong");
}

static void test_control_queue_bounded(void **state)
{
	struct h *h = *state;
	h->refuse = true;
	for (uint32_t i = 0; i < 400; i++)
		gsend(h, mkhdr(VSOCK_OP_REQUEST, 10000 + i, 5000), NULL, 0);
	pump(h); /* no rx buffers: RSTs queue up, at most VSOCK_CTRL_QUEUE */
	post_rx(h, 500, 64);
	pump(h);
	unsigned n = 0;
	struct vsock_hdr hd;
	while (grecv(h, &hd, NULL, 0)) {
		assert_int_equal(hd.op, VSOCK_OP_RST);
		assert_int_equal(hd.dst_port, 10000 + n);
		n++;
	}
	assert_int_equal(n, VSOCK_CTRL_QUEUE);
}

static void test_rx_buffer_odd(void **state)
{
	/* rx buffers that are too small or readable are returned unused, nothing is lost */
	struct h *h = *state;
	h->refuse = true;
	gsend(h, mkhdr(VSOCK_OP_REQUEST, 1, 5000), NULL, 0);
	fq_post_rx(&h->rx, 10); /* < header */
	uint16_t d = fq_next_desc(&h->rx);
	fq_set_desc(&h->rx, d, fm_alloc(&h->m, 64, 8), 64, 0, 0); /* readable: not an rx buffer */
	fq_publish(&h->rx, d);
	pump(h);
	uint16_t id;
	uint32_t len;
	assert_int_equal(fq_take_used(&h->rx, &id, &len), 1);
	assert_int_equal(len, 0);
	assert_int_equal(fq_take_used(&h->rx, &id, &len), 1);
	assert_int_equal(len, 0);
	assert_int_equal(fq_take_used(&h->rx, &id, &len), 0);
	post_rx(h, 1, 4096);
	pump(h);
	expect_op(h, VSOCK_OP_RST, 5000, 1);
}

static void test_reset(void **state)
{
	struct h *h = *state;
	int p;
	post_rx(h, 8, 4096);
	int g = gconnect(h, 30, 65536);
	assert_int_equal(host_accept(h, &p), 0);
	vsock_dev_reset(h->d);
	assert_int_equal(vsock_dev_conn_count(h->d), 0);
	assert_int_equal(h->nw, 0);
	host_eof(g);
	host_eof(p);
	close(p);
	expect_none(h);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_refused_port),
		T(test_connect_and_data),
		T(test_header_split),
		T(test_credit),
		T(test_tiny_rx_buffer),
		T(test_credit_request),
		T(test_bad_len),
		T(test_bad_addressing),
		T(test_overrun),
		T(test_flow_host_slow),
		T(test_guest_half_close),
		T(test_host_half_close),
		T(test_guest_shut_rcv),
		T(test_host_connect),
		T(test_tap),
		T(test_host_connect_hangup),
		T(test_connect_line_garbage),
		T(test_no_head_of_line),
		T(test_control_queue_bounded),
		T(test_rx_buffer_odd),
		T(test_reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
