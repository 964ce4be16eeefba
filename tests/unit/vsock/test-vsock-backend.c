/* test-vsock-backend.c - the whole back end on a libuv loop, with the test playing QEMU (the
 * vhost-user handshake QEMU 7.2 performs, guest RAM in a memfd, kick/call eventfds), the guest
 * driver (rings in that memfd) and host processes (the hybrid Unix sockets). No QEMU needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fakevq.h"
#include "fdutil.h"
#include "macro.h"
#include "vhost_user.h"
#include "vsock.h"

#define CID 3
#define MEMSZ (4u << 20)
#define V VHOST_USER_VERSION
#define NR (VHOST_USER_VERSION | VHOST_USER_FLAG_NEED_REPLY)

struct t {
	uv_loop_t loop;
	char dir[64];
	char vhost[128], uds[128];
	struct vsock_backend *b;
	char errors[8][64];
	int nerrors;
	/* QEMU */
	int sock;
	int memfd;
	uint8_t *mem;
	struct fakemem m;
	struct fakeq q[2];
	int kick[2], call[2], err[2];
	int fds_before;
};

static void on_error(void *userdata, const char *what)
{
	struct t *t = userdata;
	if (t->nerrors < 8)
		snprintf(t->errors[t->nerrors++], sizeof(t->errors[0]), "%s", what);
}

/* Run the loop a little; returns when cond(t) holds, fails after ~5 s. */
static void run_until(struct t *t, bool (*cond)(struct t *, void *), void *arg)
{
	for (int i = 0; i < 5000; i++) {
		uv_run(&t->loop, UV_RUN_NOWAIT);
		if (cond(t, arg))
			return;
		usleep(1000);
	}
	fail_msg("condition not reached");
}

static bool sock_readable(struct t *t, void *arg)
{
	struct pollfd p = { .fd = *(int *)arg, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

/* ---- QEMU side ---- */

static void q_send(struct t *t, uint32_t req, uint32_t flags, const void *pl, uint32_t size,
		   const int *fds, size_t nfds)
{
	uint8_t b[12 + 512];
	memcpy(b, &req, 4);
	memcpy(b + 4, &flags, 4);
	memcpy(b + 8, &size, 4);
	if (size)
		memcpy(b + 12, pl, size);
	union {
		struct cmsghdr align;
		uint8_t c[CMSG_SPACE(sizeof(int) * 8)];
	} ctl;
	struct iovec iov = { .iov_base = b, .iov_len = 12 + size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		mh.msg_control = ctl.c;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(t->sock, &mh, MSG_NOSIGNAL), (ssize_t)(12 + size));
}

static uint32_t q_reply(struct t *t, uint32_t req, void *pl, size_t max)
{
	uint32_t h[3];
	run_until(t, sock_readable, &t->sock);
	assert_int_equal(fd_read_exact(t->sock, h, 12), 0);
	assert_int_equal(h[0], req);
	assert_int_equal(h[1], VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY);
	assert_true(h[2] <= max);
	assert_int_equal(fd_read_exact(t->sock, pl, h[2]), 0);
	return h[2];
}

static uint64_t q_u64(struct t *t, uint32_t req, uint32_t flags)
{
	uint64_t v;
	q_send(t, req, flags, NULL, 0, NULL, 0);
	assert_int_equal(q_reply(t, req, &v, 8), 8);
	return v;
}

static void q_set_u64(struct t *t, uint32_t req, uint64_t v, const int *fds, size_t nfds)
{
	uint64_t ack;
	q_send(t, req, NR, &v, 8, fds, nfds);
	assert_int_equal(q_reply(t, req, &ack, 8), 8);
	assert_true(ack == 0);
}

static void q_state(struct t *t, uint32_t req, uint32_t idx, uint32_t num)
{
	uint32_t st[2] = { idx, num };
	uint64_t ack;
	q_send(t, req, NR, st, 8, NULL, 0);
	assert_int_equal(q_reply(t, req, &ack, 8), 8);
	assert_true(ack == 0);
}

static void q_connect(struct t *t)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(t->vhost) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, t->vhost, strlen(t->vhost) + 1);
	t->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(t->sock >= 0);
	assert_int_equal(connect(t->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
}

/* What QEMU 7.2 sends, in its order (see guest-kernel-tried.md). */
static void q_handshake(struct t *t)
{
	assert_true(q_u64(t, VHOST_USER_GET_FEATURES, V) == 0x140000000ull);
	assert_true(q_u64(t, VHOST_USER_GET_PROTOCOL_FEATURES, V) == 0x209);
	q_set_u64(t, VHOST_USER_SET_PROTOCOL_FEATURES, 0x209, NULL, 0);
	assert_true(q_u64(t, VHOST_USER_GET_QUEUE_NUM, V) >= 2);
	q_send(t, VHOST_USER_SET_OWNER, V, NULL, 0, NULL, 0);
	for (unsigned i = 0; i < 2; i++) {
		q_set_u64(t, VHOST_USER_SET_VRING_CALL, i, &t->call[i], 1);
		q_set_u64(t, VHOST_USER_SET_VRING_ERR, i, &t->err[i], 1);
	}
	uint8_t cfg[20] = { 0 }, out[64];
	uint32_t size = 8;
	memcpy(cfg + 4, &size, 4);
	q_send(t, VHOST_USER_GET_CONFIG, V, cfg, sizeof(cfg), NULL, 0);
	assert_int_equal(q_reply(t, VHOST_USER_GET_CONFIG, out, sizeof(out)), 20);
	uint64_t cid;
	memcpy(&cid, out + 12, 8);
	assert_true(le64toh(cid) == CID);
	q_set_u64(t, VHOST_USER_SET_FEATURES, 0x140000000ull, NULL, 0);

	uint8_t mt[8 + 32] = { 0 };
	uint32_t n = 1;
	uint64_t r[4] = { t->m.gpa, MEMSZ, (uintptr_t)t->mem, 0 };
	memcpy(mt, &n, 4);
	memcpy(mt + 8, r, 32);
	uint64_t ack;
	q_send(t, VHOST_USER_SET_MEM_TABLE, NR, mt, sizeof(mt), &t->memfd, 1);
	assert_int_equal(q_reply(t, VHOST_USER_SET_MEM_TABLE, &ack, 8), 8);
	assert_true(ack == 0);

	for (unsigned i = 0; i < 2; i++) {
		struct fakeq *q = &t->q[i];
		q_state(t, VHOST_USER_SET_VRING_NUM, i, q->num);
		q_state(t, VHOST_USER_SET_VRING_BASE, i, q->avail_idx);
		uint8_t a[40] = { 0 };
		uint64_t desc = fm_uva(&t->m, q->desc), used = fm_uva(&t->m, q->used);
		uint64_t avail = fm_uva(&t->m, q->avail);
		memcpy(a, &i, 4);
		memcpy(a + 8, &desc, 8);
		memcpy(a + 16, &used, 8);
		memcpy(a + 24, &avail, 8);
		q_send(t, VHOST_USER_SET_VRING_ADDR, NR, a, 40, NULL, 0);
		assert_int_equal(q_reply(t, VHOST_USER_SET_VRING_ADDR, &ack, 8), 8);
		assert_true(ack == 0);
		q_set_u64(t, VHOST_USER_SET_VRING_KICK, i, &t->kick[i], 1);
	}
	for (unsigned i = 0; i < 2; i++)
		q_state(t, VHOST_USER_SET_VRING_ENABLE, i, 1);
}

/* ---- guest side ---- */

static void kick(struct t *t, unsigned q)
{
	uint64_t one = 1;
	assert_int_equal(write(t->kick[q], &one, 8), 8);
}

static bool rx_used(struct t *t, void *arg)
{
	return fq_used_idx(&t->q[0]) != t->q[0].used_seen;
}

static void grecv(struct t *t, struct vsock_hdr *h, uint8_t *pl, size_t max)
{
	uint16_t id = 0;
	uint32_t len = 0;
	run_until(t, rx_used, NULL);
	assert_int_equal(fq_take_used(&t->q[0], &id, &len), 1);
	assert_true(len >= VSOCK_HDR_SIZE);
	vsock_hdr_decode(fm_ptr(&t->m, t->q[0].buf[id]), h);
	if (pl) {
		assert_true(h->len <= max);
		memcpy(pl, (uint8_t *)fm_ptr(&t->m, t->q[0].buf[id]) + VSOCK_HDR_SIZE, h->len);
	}
	fq_post_rx(&t->q[0], 4096); /* give a buffer back, as a driver does */
	kick(t, 0);
}

static void gsend(struct t *t, uint16_t op, uint32_t sp, uint32_t dp, const void *pl, size_t n)
{
	struct vsock_hdr h = {
		.src_cid = CID,
		.dst_cid = 2,
		.src_port = sp,
		.dst_port = dp,
		.len = (uint32_t)n,
		.type = VSOCK_TYPE_STREAM,
		.op = op,
		.buf_alloc = 65536,
	};
	fq_send_pkt(&t->q[1], &h, pl, n, 0);
	kick(t, 1);
}

/* ---- host side ---- */

static int listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void read_str(struct t *t, int fd, const char *want)
{
	char got[128];
	size_t n = strlen(want);
	run_until(t, sock_readable, &fd);
	assert_int_equal(fd_read_exact(fd, got, n), 0);
	assert_memory_equal(got, want, n);
}

static void read_eof(struct t *t, int fd)
{
	char c;
	run_until(t, sock_readable, &fd);
	assert_int_equal(read(fd, &c, 1), 0);
}

/* ---- fixture ---- */

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
	struct t *t = calloc(1, sizeof(*t));
	t->fds_before = count_fds();
	assert_int_equal(uv_loop_init(&t->loop), 0);
	snprintf(t->dir, sizeof(t->dir), "/tmp/capsem-vsock-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->vhost, sizeof(t->vhost), "%s/vhost-vsock.sock", t->dir);
	snprintf(t->uds, sizeof(t->uds), "%s/vsock", t->dir);
	struct vsock_backend_config cfg = {
		.vhost_socket = t->vhost,
		.uds_path = t->uds,
		.guest_cid = CID,
		.on_error = on_error,
		.userdata = t,
	};
	assert_int_equal(vsock_backend_new(&t->loop, &cfg, &t->b), 0);

	t->memfd = memfd_create("guest-ram", MFD_CLOEXEC);
	assert_int_equal(ftruncate(t->memfd, MEMSZ), 0);
	t->mem = mmap(NULL, MEMSZ, PROT_READ | PROT_WRITE, MAP_SHARED, t->memfd, 0);
	assert_true(t->mem != MAP_FAILED);
	fm_init(&t->m, t->mem, MEMSZ, 0x100000);
	fq_init(&t->q[0], &t->m, 256);
	fq_init(&t->q[1], &t->m, 512);
	for (int i = 0; i < 2; i++) {
		t->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		t->call[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		t->err[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	}
	q_connect(t);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	struct stat st;
	vsock_backend_free(t->b);
	assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0); /* drains: every handle closed */
	assert_int_equal(uv_loop_close(&t->loop), 0);
	assert_int_equal(stat(t->vhost, &st), -1); /* sockets unlinked */
	assert_int_equal(stat(t->uds, &st), -1);
	safe_close(t->sock);
	for (int i = 0; i < 2; i++) {
		close(t->kick[i]);
		close(t->call[i]);
		close(t->err[i]);
	}
	munmap(t->mem, MEMSZ);
	close(t->memfd);
	rm_rf(t->dir);
	assert_int_equal(count_fds(), t->fds_before);
	free(t);
	return 0;
}

static void test_listeners(void **state)
{
	struct t *t = *state;
	struct stat st;
	assert_int_equal(stat(t->vhost, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(t->uds, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* bad configurations */
	struct vsock_backend *b2 = NULL;
	struct vsock_backend_config cfg = { .vhost_socket = "/tmp/x", .uds_path = "/tmp/y" };
	cfg.guest_cid = 2;
	assert_int_equal(vsock_backend_new(&t->loop, &cfg, &b2), -EINVAL);
	char file[128];
	snprintf(file, sizeof(file), "%s/regular", t->dir);
	assert_int_equal(write_file_atomic(file, "x", 1, 0600), 0);
	cfg.guest_cid = 3;
	cfg.vhost_socket = file; /* never unlink something that is not a socket */
	assert_int_equal(vsock_backend_new(&t->loop, &cfg, &b2), -EEXIST);
	assert_int_equal(stat(file, &st), 0);
	assert_null(b2);
}

static void test_end_to_end(void **state)
{
	struct t *t = *state;
	struct vsock_hdr h;
	uint8_t pl[256];

	q_handshake(t);
	for (int i = 0; i < 8; i++)
		fq_post_rx(&t->q[0], 4096);
	kick(t, 0);

	/* guest -> host port 5000 */
	char p5000[160];
	snprintf(p5000, sizeof(p5000), "%s_5000", t->uds);
	int l = listen_at(p5000);
	gsend(t, VSOCK_OP_REQUEST, 40000, 5000, NULL, 0);
	grecv(t, &h, NULL, 0);
	assert_int_equal(h.op, VSOCK_OP_RESPONSE);
	assert_int_equal(h.src_port, 5000);
	assert_int_equal(h.dst_port, 40000);
	run_until(t, sock_readable, &l);
	int hs = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(hs >= 0);
	gsend(t, VSOCK_OP_RW, 40000, 5000, "ping", 4);
	read_str(t, hs, "ping");
	assert_int_equal(write(hs, "pong", 4), 4);
	grecv(t, &h, pl, sizeof(pl));
	assert_int_equal(h.op, VSOCK_OP_RW);
	assert_memory_equal(pl, "pong", 4);
	uint64_t v;
	assert_int_equal(read(t->call[0], &v, 8), 8); /* the guest was interrupted */

	/* nobody on 5999: RST at once */
	gsend(t, VSOCK_OP_REQUEST, 40001, 5999, NULL, 0);
	grecv(t, &h, NULL, 0);
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(h.dst_port, 40001);

	/* host -> guest port 5001 */
	int c = connect_to(t->uds);
	assert_int_equal(write(c, "CONNECT 5001\n", 13), 13);
	grecv(t, &h, NULL, 0);
	assert_int_equal(h.op, VSOCK_OP_REQUEST);
	assert_int_equal(h.dst_port, 5001);
	uint32_t local = h.src_port;
	gsend(t, VSOCK_OP_RESPONSE, 5001, local, NULL, 0);
	read_str(t, c, "OK 1073741824\n");
	gsend(t, VSOCK_OP_RW, 5001, local, "hi", 2);
	read_str(t, c, "hi");

	/* host -> guest port 5002, nobody listening in the guest: closed at once */
	int c2 = connect_to(t->uds);
	assert_int_equal(write(c2, "CONNECT 5002\n", 13), 13);
	grecv(t, &h, NULL, 0);
	assert_int_equal(h.op, VSOCK_OP_REQUEST);
	gsend(t, VSOCK_OP_RST, 5002, h.src_port, NULL, 0);
	read_eof(t, c2);
	close(c2);

	/* QEMU goes away: every connection is dropped, the back end listens again */
	close(t->sock);
	t->sock = -1;
	read_eof(t, hs);
	read_eof(t, c);
	assert_true(t->nerrors >= 1);
	assert_string_equal(t->errors[t->nerrors - 1], "vsock: QEMU disconnected");
	q_connect(t);
	assert_true(q_u64(t, VHOST_USER_GET_FEATURES, V) == 0x140000000ull);

	close(hs);
	close(c);
	close(l);
	unlink(p5000);
}

static bool got_error(struct t *t, void *arg)
{
	return t->nerrors > 0;
}

static void test_guest_breaks_tx(void **state)
{
	struct t *t = *state;
	q_handshake(t);
	/* a descriptor loop on the tx queue */
	struct fakeq *q = &t->q[1];
	uint64_t g = fm_alloc(&t->m, 64, 8);
	fq_set_desc(q, 0, g, 64, VRING_DESC_F_NEXT, 1);
	fq_set_desc(q, 1, g, 64, VRING_DESC_F_NEXT, 0);
	fq_publish(q, 0);
	kick(t, 1);
	run_until(t, got_error, NULL);
	assert_string_equal(t->errors[0], "vsock: guest broke the tx queue");
	uint64_t v;
	assert_int_equal(read(t->err[1], &v, 8), 8); /* QEMU was told too */
	/* the device still answers QEMU; the rx queue still works */
	assert_true(q_u64(t, VHOST_USER_GET_QUEUE_NUM, V) >= 2);
	/* stopping the ring at shutdown */
	uint32_t st[2] = { 1, 0 };
	q_send(t, VHOST_USER_GET_VRING_BASE, V, st, 8, NULL, 0);
	assert_int_equal(q_reply(t, VHOST_USER_GET_VRING_BASE, st, 8), 8);
	assert_int_equal(st[1], 0); /* the broken chain was never consumed */
}

static void test_many_tx(void **state)
{
	/* more tx chains than one callback processes: the back end comes back for the rest */
	struct t *t = *state;
	struct vsock_hdr h;
	q_handshake(t);
	/* 400 RSTs for unknown connections: each is answered by nothing, quietly consumed */
	for (int i = 0; i < 400; i++)
		gsend(t, VSOCK_OP_RST, (uint32_t)i, 1, NULL, 0);
	for (int i = 0; i < 4; i++)
		fq_post_rx(&t->q[0], 4096);
	kick(t, 0);
	gsend(t, VSOCK_OP_REQUEST, 9, 7777, NULL, 0); /* refused: RST */
	grecv(t, &h, NULL, 0);
	assert_int_equal(h.op, VSOCK_OP_RST);
	assert_int_equal(h.dst_port, 9);
	assert_int_equal(fq_used_idx(&t->q[1]), 401);
}

static void test_accept_emfile(void **state)
{
	/* out of fds: the listener pauses (no busy loop), reports, and resumes later */
	struct t *t = *state;
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	assert_true(q_u64(t, VHOST_USER_GET_QUEUE_NUM, V) >= 2); /* QEMU's connection is in */
	int c = connect_to(t->uds);
	assert_int_equal(write(c, "HELLO\n", 6), 6);
	int lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	low = old;
	low.rlim_cur = (rlim_t)lowest; /* no new fd can be opened */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	run_until(t, got_error, NULL);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_string_equal(t->errors[0], "vsock: accept on the hybrid socket failed");
	/* resumed: the garbage line is read and the connection closed */
	read_eof(t, c);
	close(c);
}

int main(void)
{
	/* libuv opens a process-wide pipe with its first loop: do it before fds are counted */
	uv_loop_t l;
	uv_loop_init(&l);
	uv_loop_close(&l);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_listeners), T(test_end_to_end),	  T(test_guest_breaks_tx),
		T(test_many_tx),   T(test_accept_emfile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
