/* test-vhost-user.c - vhost-user message validation, device state and framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "vhost_user.h"

#define CID 3

/* ---- message building ---- */

struct msg {
	uint8_t b[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
	size_t len;
};

static void mk(struct msg *m, uint32_t req, uint32_t flags, const void *pl, uint32_t size)
{
	memcpy(m->b, &req, 4);
	memcpy(m->b + 4, &flags, 4);
	memcpy(m->b + 8, &size, 4);
	if (size)
		memcpy(m->b + 12, pl, size);
	m->len = 12 + size;
}

static void mk_u64(struct msg *m, uint32_t req, uint32_t flags, uint64_t v)
{
	mk(m, req, flags, &v, 8);
}

static void mk_state(struct msg *m, uint32_t req, uint32_t flags, uint32_t idx, uint32_t num)
{
	uint32_t st[2] = { idx, num };
	mk(m, req, flags, st, 8);
}

#define V VHOST_USER_VERSION
#define NR (VHOST_USER_VERSION | VHOST_USER_FLAG_NEED_REPLY)

/* ---- decode ---- */

static void test_decode(void **state)
{
	struct msg m;
	struct vhost_user_msg d;

	mk(&m, VHOST_USER_GET_FEATURES, V, NULL, 0);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), 0);
	assert_int_equal(d.request, VHOST_USER_GET_FEATURES);
	assert_int_equal(vhost_user_decode(m.b, m.len, 1, &d), -EBADMSG); /* stray fd */
	assert_int_equal(vhost_user_decode(m.b, 11, 0, &d), -EBADMSG);
	assert_int_equal(vhost_user_decode(m.b, m.len + 1, 0, &d), -EBADMSG); /* size mismatch */
	mk(&m, VHOST_USER_GET_FEATURES, 2, NULL, 0);			      /* version 2 */
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);
	mk(&m, VHOST_USER_GET_FEATURES, V | VHOST_USER_FLAG_REPLY, NULL, 0);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);

	mk_u64(&m, VHOST_USER_SET_FEATURES, V, 0x140000000ull);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), 0);
	assert_true(d.u.u64 == 0x140000000ull);
	mk(&m, VHOST_USER_SET_FEATURES, V, "1234", 4); /* short payload */
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);

	mk_u64(&m, VHOST_USER_SET_VRING_KICK, V, 1);
	assert_int_equal(vhost_user_decode(m.b, m.len, 1, &d), 0);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG); /* fd missing */
	mk_u64(&m, VHOST_USER_SET_VRING_CALL, V, 1 | VHOST_USER_VRING_NOFD);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), 0);
	assert_int_equal(vhost_user_decode(m.b, m.len, 1, &d), -EBADMSG);

	uint8_t addr[40] = { 0 };
	uint64_t desc = 0x1000;
	memcpy(addr + 8, &desc, 8);
	mk(&m, VHOST_USER_SET_VRING_ADDR, V, addr, 40);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), 0);
	assert_true(d.u.addr.desc == 0x1000);
	mk(&m, VHOST_USER_SET_VRING_ADDR, V, addr, 39);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);

	/* memory tables: regions counted, fds matched */
	uint8_t mt[8 + 32 * 9] = { 0 };
	uint32_t n = 2;
	memcpy(mt, &n, 4);
	mk(&m, VHOST_USER_SET_MEM_TABLE, V, mt, 8 + 64);
	assert_int_equal(vhost_user_decode(m.b, m.len, 2, &d), 0);
	assert_int_equal(d.u.mem.nregions, 2);
	assert_int_equal(vhost_user_decode(m.b, m.len, 1, &d), -EBADMSG);
	mk(&m, VHOST_USER_SET_MEM_TABLE, V, mt, 8 + 32); /* says 2, carries 1 */
	assert_int_equal(vhost_user_decode(m.b, m.len, 2, &d), -EBADMSG);
	n = 9;
	memcpy(mt, &n, 4);
	mk(&m, VHOST_USER_SET_MEM_TABLE, V, mt, sizeof(mt));
	assert_int_equal(vhost_user_decode(m.b, m.len, 8, &d), -EBADMSG);
	n = 0;
	memcpy(mt, &n, 4);
	mk(&m, VHOST_USER_SET_MEM_TABLE, V, mt, 8);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);

	uint32_t cfg[3] = { 0, 300, 0 };
	mk(&m, VHOST_USER_GET_CONFIG, V, cfg, 12);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG); /* 300 > 256 */
	cfg[1] = 8;
	uint8_t cfgb[20] = { 0 };
	memcpy(cfgb, cfg, 12);
	mk(&m, VHOST_USER_GET_CONFIG, V, cfgb, 20);
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), 0);
	mk(&m, VHOST_USER_GET_CONFIG, V, cfgb, 19); /* config data shorter than its size */
	assert_int_equal(vhost_user_decode(m.b, m.len, 0, &d), -EBADMSG);

	mk(&m, 99, NR, NULL, 0);
	memset(&d, 0, sizeof(d));
	assert_int_equal(vhost_user_decode(m.b, m.len, 3, &d), -EOPNOTSUPP);
	assert_int_equal(d.request, 99);
	assert_int_equal(d.flags, NR);

	/* a size field above the cap is refused even if the bytes are there */
	static uint8_t huge[12 + VHOST_USER_MAX_PAYLOAD + 1];
	uint32_t sz = VHOST_USER_MAX_PAYLOAD + 1, req = VHOST_USER_GET_FEATURES, fl = V;
	memcpy(huge, &req, 4);
	memcpy(huge + 4, &fl, 4);
	memcpy(huge + 8, &sz, 4);
	assert_int_equal(vhost_user_decode(huge, sizeof(huge), 0, &d), -EBADMSG);
}

/* ---- device ---- */

struct rec {
	int kick_fd[2];
	int kick_calls;
	int resets;
	int changed;
};

static void r_kick(void *ud, unsigned q, int fd)
{
	struct rec *r = ud;
	r->kick_fd[q] = fd;
	r->kick_calls++;
}

static void r_changed(void *ud)
{
	((struct rec *)ud)->changed++;
}

static void r_reset(void *ud)
{
	((struct rec *)ud)->resets++;
}

static const struct vhost_user_ops rops = {
	.kick_fd = r_kick,
	.queues_changed = r_changed,
	.reset = r_reset,
};

struct fx {
	struct vhost_user_dev d;
	struct rec r;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->r.kick_fd[0] = f->r.kick_fd[1] = -1;
	vhost_user_dev_init(&f->d, CID, &rops, &f->r);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	vhost_user_dev_reset(&f->d);
	free(f);
	return 0;
}

static int send_msg(struct fx *f, const struct msg *m, int *fds, size_t nfds)
{
	return vhost_user_dev_message(&f->d, m->b, m->len, fds, nfds);
}

/* Pop one reply from d->out: its request, and its payload into pl (size returned). */
static uint32_t pop_reply(struct fx *f, uint32_t want_req, void *pl, size_t max)
{
	struct buf *o = &f->d.out;
	uint32_t req, flags, size;
	assert_true(buf_len(o) >= 12);
	memcpy(&req, buf_head(o), 4);
	memcpy(&flags, buf_head(o) + 4, 4);
	memcpy(&size, buf_head(o) + 8, 4);
	assert_int_equal(req, want_req);
	assert_int_equal(flags, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY);
	assert_true(buf_len(o) >= 12 + size);
	assert_true(size <= max);
	memcpy(pl, buf_head(o) + 12, size);
	buf_consume(o, 12 + size);
	return size;
}

static uint64_t reply_u64(struct fx *f, uint32_t req)
{
	uint64_t v;
	assert_int_equal(pop_reply(f, req, &v, sizeof(v)), 8);
	return v;
}

static void test_features(void **state)
{
	struct fx *f = *state;
	struct msg m;
	mk(&m, VHOST_USER_GET_FEATURES, V, NULL, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_GET_FEATURES) == 0x140000000ull);
	mk(&m, VHOST_USER_GET_PROTOCOL_FEATURES, NR, NULL, 0); /* has its own reply: one only */
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_GET_PROTOCOL_FEATURES) == 0x209);
	assert_int_equal(buf_len(&f->d.out), 0);
	mk_u64(&m, VHOST_USER_SET_PROTOCOL_FEATURES, NR, 0x209);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_PROTOCOL_FEATURES) == 0);
	mk_u64(&m, VHOST_USER_SET_PROTOCOL_FEATURES, NR, 0x20b); /* LOG_SHMFD: not offered */
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_PROTOCOL_FEATURES) != 0);
	mk_u64(&m, VHOST_USER_SET_FEATURES, NR, 0x140000000ull | (1ull << 28)); /* INDIRECT */
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_FEATURES) != 0);
	mk_u64(&m, VHOST_USER_SET_FEATURES, V, 0x140000000ull); /* no reply asked: none sent */
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_int_equal(buf_len(&f->d.out), 0);
	assert_true(f->d.features == 0x140000000ull);
	mk(&m, VHOST_USER_GET_QUEUE_NUM, V, NULL, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_GET_QUEUE_NUM) == 2);
	mk(&m, VHOST_USER_SET_OWNER, V, NULL, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(f->d.owned);
}

static void test_config(void **state)
{
	struct fx *f = *state;
	struct msg m;
	uint8_t pl[64] = { 0 };
	uint32_t cfg[3] = { 0, 8, 0 };
	memcpy(pl, cfg, 12);
	mk(&m, VHOST_USER_GET_CONFIG, V, pl, 20);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	uint8_t out[64];
	assert_int_equal(pop_reply(f, VHOST_USER_GET_CONFIG, out, sizeof(out)), 20);
	uint64_t cid;
	memcpy(&cid, out + 12, 8);
	assert_true(le64toh(cid) == CID);
	/* the upper half only */
	cfg[0] = 4;
	cfg[1] = 4;
	memcpy(pl, cfg, 12);
	mk(&m, VHOST_USER_GET_CONFIG, V, pl, 16);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_int_equal(pop_reply(f, VHOST_USER_GET_CONFIG, out, sizeof(out)), 16);
	uint32_t hi;
	memcpy(&hi, out + 12, 4);
	assert_int_equal(hi, 0);
	/* out of range: an empty reply */
	cfg[0] = 4;
	cfg[1] = 8;
	memcpy(pl, cfg, 12);
	mk(&m, VHOST_USER_GET_CONFIG, V, pl, 20);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_int_equal(pop_reply(f, VHOST_USER_GET_CONFIG, out, sizeof(out)), 0);
	/* the CID cannot be written */
	cfg[0] = 0;
	memcpy(pl, cfg, 12);
	mk(&m, VHOST_USER_SET_CONFIG, NR, pl, 20);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_CONFIG) != 0);
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_unknown_and_fds(void **state)
{
	struct fx *f = *state;
	struct msg m;
	int fds[2] = { eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC) };
	int keep[2] = { fds[0], fds[1] };
	mk(&m, 77, NR, "abcd", 4);
	assert_int_equal(send_msg(f, &m, fds, 2), 0);
	assert_true(reply_u64(f, 77) != 0);
	assert_false(fd_open(keep[0])); /* fds of an unknown request are closed */
	assert_false(fd_open(keep[1]));
	mk(&m, 77, V, NULL, 0); /* no reply asked: none */
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_int_equal(buf_len(&f->d.out), 0);
	/* malformed: fatal, fds closed */
	fds[0] = eventfd(0, EFD_CLOEXEC);
	keep[0] = fds[0];
	mk(&m, VHOST_USER_GET_FEATURES, V, NULL, 0);
	assert_int_equal(send_msg(f, &m, fds, 1), -EBADMSG);
	assert_false(fd_open(keep[0]));
	/* vring index out of range */
	mk_state(&m, VHOST_USER_SET_VRING_NUM, NR, 2, 256);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_VRING_NUM) != 0);
	mk_state(&m, VHOST_USER_GET_VRING_BASE, V, 7, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	uint32_t st[2];
	assert_int_equal(pop_reply(f, VHOST_USER_GET_VRING_BASE, st, sizeof(st)), 8);
	fds[0] = eventfd(0, EFD_CLOEXEC);
	keep[0] = fds[0];
	mk_u64(&m, VHOST_USER_SET_VRING_KICK, NR, 200);
	assert_int_equal(send_msg(f, &m, fds, 1), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_VRING_KICK) != 0);
	assert_false(fd_open(keep[0]));
}

/* A memfd of size bytes holding rings for queue num at offset 0 (desc), 0x4000 (avail),
 * 0x5000 (used). */
static int make_mem(size_t size, void **ret_map)
{
	int fd = memfd_create("guest", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	*ret_map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(*ret_map != MAP_FAILED);
	return fd;
}

static void send_mem_table(struct fx *f, int fd, uint64_t gpa, uint64_t size, uint64_t uva,
			   int want)
{
	struct msg m;
	uint8_t mt[8 + 32] = { 0 };
	uint32_t n = 1;
	uint64_t r[4] = { gpa, size, uva, 0 };
	memcpy(mt, &n, 4);
	memcpy(mt + 8, r, 32);
	mk(&m, VHOST_USER_SET_MEM_TABLE, NR, mt, sizeof(mt));
	int fds[1] = { dup(fd) };
	assert_int_equal(send_msg(f, &m, fds, 1), 0);
	uint64_t v = reply_u64(f, VHOST_USER_SET_MEM_TABLE);
	assert_true(want == 0 ? v == 0 : v != 0);
}

static bool mapped(void *p)
{
	unsigned char vec;
	return mincore(p, 4096, &vec) == 0;
}

static void setup_ring(struct fx *f, unsigned q, uint64_t base)
{
	struct msg m;
	mk_state(&m, VHOST_USER_SET_VRING_NUM, V, q, 256);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	mk_state(&m, VHOST_USER_SET_VRING_BASE, V, q, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	uint8_t a[40] = { 0 };
	uint64_t desc = base, used = base + 0x5000, avail = base + 0x4000;
	memcpy(a, &q, 4);
	memcpy(a + 8, &desc, 8);
	memcpy(a + 16, &used, 8);
	memcpy(a + 24, &avail, 8);
	mk(&m, VHOST_USER_SET_VRING_ADDR, V, a, 40);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
}

static void test_mem_and_rings(void **state)
{
	struct fx *f = *state;
	struct msg m;
	void *map;
	const size_t SZ = 1 << 20;
	int mfd = make_mem(SZ, &map);
	const uint64_t UVA = 0x7f0000000000ull;

	/* larger than the file: refused, nothing mapped */
	send_mem_table(f, mfd, 0, 2 * SZ, UVA, -1);
	assert_int_equal(f->d.mem.n, 0);
	send_mem_table(f, mfd, 0, SZ, UVA, 0);
	assert_int_equal(f->d.mem.n, 1);
	void *first = f->d.mem.r[0].host;
	assert_true(mapped(first));

	setup_ring(f, 0, UVA);
	assert_false(vhost_user_vring_active(&f->d, 0)); /* no kick yet */
	int kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int fds[1] = { kick };
	mk_u64(&m, VHOST_USER_SET_VRING_KICK, V, 0);
	assert_int_equal(send_msg(f, &m, fds, 1), 0);
	assert_int_equal(f->r.kick_fd[0], kick);
	assert_true(fd_open(kick));
	/* started but not enabled (PROTOCOL_FEATURES negotiated) */
	mk_u64(&m, VHOST_USER_SET_FEATURES, V, 0x140000000ull);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_false(vhost_user_vring_active(&f->d, 0));
	mk_state(&m, VHOST_USER_SET_VRING_ENABLE, V, 0, 1);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(vhost_user_vring_active(&f->d, 0));
	assert_true(f->r.changed > 0);

	/* QEMU re-sends the table: old mapping gone, rings follow the new one */
	send_mem_table(f, mfd, 0, SZ, UVA, 0);
	assert_true(vhost_user_vring_active(&f->d, 0));
	if (f->d.mem.r[0].host != first)
		assert_false(mapped(first));
	/* a table that no longer holds the rings leaves them unusable, not dangling */
	send_mem_table(f, mfd, 0, 4096, UVA + 0x100000, 0);
	assert_false(vhost_user_vring_active(&f->d, 0));
	send_mem_table(f, mfd, 0, SZ, UVA, 0);
	assert_true(vhost_user_vring_active(&f->d, 0));

	/* bad ring sizes */
	mk_state(&m, VHOST_USER_SET_VRING_NUM, NR, 0, 300);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_VRING_NUM) != 0);
	mk_state(&m, VHOST_USER_SET_VRING_NUM, NR, 0, 65536);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_VRING_NUM) != 0);
	mk_state(&m, VHOST_USER_SET_VRING_BASE, NR, 0, 70000);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_true(reply_u64(f, VHOST_USER_SET_VRING_BASE) != 0);

	/* stop: GET_VRING_BASE returns last_avail, the kick fd is dropped */
	f->d.vr[0].vq.last_avail = 42;
	mk_state(&m, VHOST_USER_GET_VRING_BASE, V, 0, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	uint32_t st[2];
	assert_int_equal(pop_reply(f, VHOST_USER_GET_VRING_BASE, st, sizeof(st)), 8);
	assert_int_equal(st[0], 0);
	assert_int_equal(st[1], 42);
	assert_false(vhost_user_vring_active(&f->d, 0));
	assert_int_equal(f->r.kick_fd[0], -1);
	assert_false(fd_open(kick));

	/* reset owner: rings stopped, vsock told */
	mk(&m, VHOST_USER_RESET_OWNER, V, NULL, 0);
	assert_int_equal(send_msg(f, &m, NULL, 0), 0);
	assert_int_equal(f->r.resets, 1);

	vhost_user_dev_reset(&f->d);
	assert_int_equal(f->d.mem.n, 0);
	munmap(map, SZ);
	close(mfd);
}

/* ---- framing over a real socket ---- */

static void sendmsg_fds(int s, const void *p, size_t n, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		uint8_t b[CMSG_SPACE(sizeof(int) * 16)];
	} ctl;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	assert_int_equal(sendmsg(s, &mh, 0), (ssize_t)n);
}

static void test_framing(void **state)
{
	struct fx *f = *state;
	struct msg m;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);

	/* a message in pieces, with an fd on the first piece */
	int call = eventfd(0, EFD_CLOEXEC);
	mk_u64(&m, VHOST_USER_SET_VRING_CALL, NR, 1);
	sendmsg_fds(sv[1], m.b, 5, &call, 1);
	close(call);
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), 0);
	assert_int_equal(f->d.vr[1].call_fd, -1);
	assert_int_equal(write(sv[1], m.b + 5, m.len - 5), (ssize_t)(m.len - 5));
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), 0);
	assert_true(f->d.vr[1].call_fd >= 0);
	assert_int_equal(vhost_user_dev_flush(&f->d, sv[0]), 0);
	uint8_t r[20];
	assert_int_equal(read(sv[1], r, sizeof(r)), 20); /* the ack */

	/* two messages at once */
	mk(&m, VHOST_USER_GET_FEATURES, V, NULL, 0);
	uint8_t two[24];
	memcpy(two, m.b, 12);
	memcpy(two + 12, m.b, 12);
	assert_int_equal(write(sv[1], two, 24), 24);
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), 0);
	assert_int_equal(vhost_user_dev_flush(&f->d, sv[0]), 0);
	assert_int_equal(read(sv[1], r, sizeof(r)), 20);
	assert_int_equal(read(sv[1], r, sizeof(r)), 20);

	/* too many fds: fatal, nothing leaks (ASan/fd checks) */
	int many[9];
	for (int i = 0; i < 9; i++)
		many[i] = eventfd(0, EFD_CLOEXEC);
	mk(&m, VHOST_USER_GET_FEATURES, V, NULL, 0);
	sendmsg_fds(sv[1], m.b, m.len, many, 9);
	for (int i = 0; i < 9; i++)
		close(many[i]);
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), -EBADMSG);
	vhost_user_dev_reset(&f->d);

	/* oversized size field: fatal before reading it */
	uint32_t hdr[3] = { VHOST_USER_GET_FEATURES, V, 1u << 30 };
	assert_int_equal(write(sv[1], hdr, 12), 12);
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), -EBADMSG);
	vhost_user_dev_reset(&f->d);

	/* EOF */
	close(sv[1]);
	assert_int_equal(vhost_user_dev_read(&f->d, sv[0]), -ECONNRESET);
	close(sv[0]);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode), T(test_features),      T(test_config),
		T(test_unknown_and_fds),       T(test_mem_and_rings), T(test_framing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
