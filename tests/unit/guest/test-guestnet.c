/* test-guestnet.c - the guest egress proxies' pure parts: /proc/net/tcp rows (procnet.c), the
 * DNS ID remap table and SERVFAIL answers (dnsmap.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/socket.h>

#include "dnsmap.h"
#include "macro.h"
#include "procnet.h"

/* ---- procnet ---- */

/* One address the way the kernel prints it: each 32-bit word in this machine's order, %08X. */
static void kaddr(const uint8_t *a, size_t n, char *out)
{
	for (size_t w = 0; w < n / 4; w++) {
		uint32_t v;
		memcpy(&v, a + 4 * w, 4);
		snprintf(out + 8 * w, 9, "%08X", v);
	}
}

static void row(char *out, size_t cap, int sl, const uint8_t *a, size_t alen, uint16_t port,
		unsigned long long inode)
{
	char h[33];
	kaddr(a, alen, h);
	snprintf(out, cap,
		 "%4d: %s:%04X %s:01BB 01 00000000:00000000 00:00000000 00000000     0        0 "
		 "%llu 1 0000000000000000 20 4 30 10 -1\n",
		 sl, h, port, h, inode);
}

static void app(char *text, size_t cap, const char *s)
{
	size_t l = strlen(text);
	snprintf(text + l, cap - l, "%s", s);
}

static const char hdr4[] = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
			   "retrnsmt   uid  timeout inode\n";

static void test_procnet_v4(void **state)
{
	const uint8_t me[4] = { 192, 0, 0, 8 }, lo[4] = { 127, 0, 0, 1 };
	char text[4096], r[256];
	uint64_t ino = 0;

	snprintf(text, sizeof(text), "%s", hdr4);
	row(r, sizeof(r), 0, lo, 4, 10002, 100); /* the proxy's listening socket */
	app(text, sizeof(text), r);
	row(r, sizeof(r), 1, me, 4, 40000, 0); /* a time-wait socket: inode 0, skipped */
	app(text, sizeof(text), r);
	app(text, sizeof(text), "   2: garbage line\n");
	row(r, sizeof(r), 3, me, 4, 40000, 4711);
	app(text, sizeof(text), r);
	row(r, sizeof(r), 4, me, 4, 40001, 4712);
	app(text, sizeof(text), r);

	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, me, 40000, &ino), 0);
	assert_int_equal(ino, 4711);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, me, 40001, &ino), 0);
	assert_int_equal(ino, 4712);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, lo, 10002, &ino), 0);
	assert_int_equal(ino, 100);
	ino = 9;
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, me, 40002, &ino), -ENOENT);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, lo, 40000, &ino), -ENOENT);
	assert_int_equal(ino, 9);
	/* the text is read by length: a cut in the last row hides it */
	assert_int_equal(procnet_find_inode(text, strlen(text) - 60, AF_INET, me, 40001, &ino),
			 -ENOENT);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_UNIX, me, 40000, &ino), -EINVAL);
	assert_int_equal(procnet_find_inode("", 0, AF_INET, me, 1, &ino), -ENOENT);
	/* lower-case hex and tabs are fine too */
	assert_int_equal(procnet_find_inode("0:\t0100007f:0035 0:0 0A 0 0 0 0 0 77\n", 36, AF_INET,
					    lo, 53, &ino),
			 0);
	assert_int_equal(ino, 77);
}

static void test_procnet_v6(void **state)
{
	uint8_t mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 0, 8 };
	uint8_t other[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	char text[2048], r[300];
	uint64_t ino = 0;

	snprintf(text, sizeof(text), "%s", hdr4);
	row(r, sizeof(r), 0, other, 16, 40000, 5);
	app(text, sizeof(text), r);
	row(r, sizeof(r), 1, mapped, 16, 40000, 6);
	app(text, sizeof(text), r);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET6, mapped, 40000, &ino), 0);
	assert_int_equal(ino, 6);
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET6, other, 40000, &ino), 0);
	assert_int_equal(ino, 5);
	/* a v6 row is never read as v4 (address length differs) */
	assert_int_equal(procnet_find_inode(text, strlen(text), AF_INET, mapped + 12, 40000, &ino),
			 -ENOENT);
}

static void test_procnet_socket_link(void **state)
{
	uint64_t v = 1;
	assert_int_equal(procnet_socket_inode("socket:[123]", 12, &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(procnet_socket_inode("socket:[18446744073]", 20, &v), 0);
	assert_int_equal(v, 18446744073ull);
	static const char *const bad[] = { "socket:[]",
					   "pipe:[12]",
					   "socket:[12a]",
					   "socket:[123",
					   "socket:123]",
					   "socket:[-1]",
					   "anon_inode:[eventpoll]",
					   "socket:[12345678901234567890]" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 7;
		assert_int_equal(procnet_socket_inode(bad[i], strlen(bad[i]), &v), -EINVAL);
		assert_int_equal(v, 7);
	}
	/* by length: the buffer readlink fills is not terminated */
	assert_int_equal(procnet_socket_inode("socket:[42]xxxx", 11, &v), 0);
	assert_int_equal(v, 42);
}

static void test_procnet_comm(void **state)
{
	char out[17];
	procnet_comm_sanitize("curl\n", 5, out, sizeof(out));
	assert_string_equal(out, "curl");
	procnet_comm_sanitize("a\tb\x7f\xff c", 7, out, sizeof(out));
	assert_string_equal(out, "a?b?? c");
	procnet_comm_sanitize("0123456789abcdefXYZ", 19, out, sizeof(out));
	assert_string_equal(out, "0123456789abcdef");
	procnet_comm_sanitize("\n", 1, out, sizeof(out));
	assert_string_equal(out, "");
	procnet_comm_sanitize("abc", 3, out, 2);
	assert_string_equal(out, "a");
}

/* ---- dnsmap ---- */

static const uint8_t
	q_example
		[] = {
			0xab, 0xcd, 0x01, 0x00, 0,   1,	  0,   0,   0, 0,   0,
			1, /* header: RD, QDCOUNT 1, ARCOUNT 1 */
			7,    'e',  'x',  'a',	'm', 'p', 'l', 'e', 3, 'c', 'o',
			'm',  0,					      /* example.com */
			0,    1,    0,	  1,				      /* A IN */
			0,    0,    41,	  0x10, 0,   0,	  0,   0,   0, 0,   0 /* OPT */
		};

static void test_dnsmap_remap(void **state)
{
	static struct dnsmap m;
	struct dnsmap_client a = { .tcp = 0, .sock = 0 }, b = { .tcp = 1, .conn = 3, .gen = 9 };
	struct dnsmap_entry e;
	uint16_t ia, ib;

	dnsmap_init(&m);
	assert_int_equal(dnsmap_next_deadline(&m), UINT64_MAX);
	/* two clients with the same ID in flight at once get different IDs */
	assert_int_equal(dnsmap_add(&m, 0xabcd, &a, q_example, sizeof(q_example), 100, &ia), 0);
	assert_int_equal(dnsmap_add(&m, 0xabcd, &b, q_example, sizeof(q_example), 50, &ib), 0);
	assert_int_not_equal(ia, ib);
	assert_int_equal(dnsmap_next_deadline(&m), 50);
	/* answers in the other order find their clients */
	assert_int_equal(dnsmap_take(&m, ib, &e), 0);
	assert_int_equal(e.orig_id, 0xabcd);
	assert_true(e.client.tcp);
	assert_int_equal(e.client.conn, 3);
	assert_int_equal(e.client.gen, 9);
	assert_int_equal(e.query_len, sizeof(q_example));
	assert_memory_equal(e.query, q_example, sizeof(q_example));
	assert_int_equal(dnsmap_take(&m, ib, &e), -ENOENT); /* a duplicate answer */
	assert_int_equal(dnsmap_take(&m, ia, &e), 0);
	assert_false(e.client.tcp);
	assert_int_equal(dnsmap_take(&m, 0x1234, &e), -ENOENT);
	assert_int_equal(m.n, 0);
}

static void test_dnsmap_full_and_stale(void **state)
{
	static struct dnsmap m;
	struct dnsmap_client c = { 0 };
	struct dnsmap_entry e;
	uint16_t ids[DNSMAP_SLOTS], id, first;

	dnsmap_init(&m);
	for (unsigned i = 0; i < DNSMAP_SLOTS; i++)
		assert_int_equal(dnsmap_add(&m, (uint16_t)i, &c, q_example, 12, 10, &ids[i]), 0);
	assert_int_equal(dnsmap_add(&m, 1, &c, q_example, 12, 10, &id), -ENOSPC);
	for (unsigned i = 0; i < DNSMAP_SLOTS; i++)
		for (unsigned j = 0; j < i; j += 97)
			assert_int_not_equal(ids[i], ids[j]);
	assert_int_equal(dnsmap_take(&m, ids[5], &e), 0);
	assert_int_equal(e.orig_id, 5);
	assert_int_equal(dnsmap_add(&m, 77, &c, q_example, 12, 10, &id), 0);
	assert_int_not_equal(id, ids[5]); /* same slot, a new generation */
	assert_int_equal(dnsmap_take(&m, ids[5], &e), -ENOENT);
	assert_int_equal(dnsmap_take(&m, id, &e), 0);
	assert_int_equal(e.orig_id, 77);

	/* a slot used and freed 64 times comes back to its first ID: only then can a stale answer
	 * be taken for a new query (the 5 s expiry keeps that from happening in practice) */
	dnsmap_init(&m);
	assert_int_equal(dnsmap_add(&m, 1, &c, q_example, 12, 10, &first), 0);
	assert_int_equal(dnsmap_take(&m, first, &e), 0);
	unsigned same = 0;
	for (unsigned i = 0; i < 64 * DNSMAP_SLOTS; i++) {
		assert_int_equal(dnsmap_add(&m, 1, &c, q_example, 12, 10, &id), 0);
		same += id == first;
		assert_int_equal(dnsmap_take(&m, id, &e), 0);
	}
	assert_int_equal(same, 1);
}

static unsigned flushed;
static void count_flush(const struct dnsmap_entry *e, void *userdata)
{
	flushed++;
	assert_ptr_equal(userdata, &flushed);
	assert_true(e->orig_id < 3);
}

static void test_dnsmap_expire_flush(void **state)
{
	static struct dnsmap m;
	struct dnsmap_client c = { 0 };
	struct dnsmap_entry e;
	uint16_t id;

	dnsmap_init(&m);
	assert_int_equal(dnsmap_add(&m, 0, &c, q_example, 12, 300, &id), 0);
	assert_int_equal(dnsmap_add(&m, 1, &c, q_example, 12, 100, &id), 0);
	assert_int_equal(dnsmap_add(&m, 2, &c, q_example, 12, 200, &id), 0);
	assert_int_equal(dnsmap_next_deadline(&m), 100);
	assert_int_equal(dnsmap_expire(&m, 99, &e), 0);
	assert_int_equal(dnsmap_expire(&m, 100, &e), 1);
	assert_int_equal(e.orig_id, 1);
	assert_int_equal(dnsmap_expire(&m, 100, &e), 0);
	assert_int_equal(dnsmap_next_deadline(&m), 200);
	flushed = 0;
	dnsmap_flush(&m, count_flush, &flushed);
	assert_int_equal(flushed, 2);
	assert_int_equal(m.n, 0);
	assert_int_equal(dnsmap_next_deadline(&m), UINT64_MAX);
	dnsmap_flush(&m, NULL, NULL);
}

static void test_dnsmap_servfail(void **state)
{
	uint8_t out[512], q[sizeof(q_example)];
	ssize_t k;

	k = dnsmap_servfail(q_example, sizeof(q_example), out, sizeof(out));
	assert_int_equal(k, 12 + 17);
	static const uint8_t hdr[] = { 0xab, 0xcd, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0 };
	assert_memory_equal(out, hdr, 12);
	assert_memory_equal(out + 12, q_example + 12, 17);
	assert_int_equal(dnsmap_servfail(q_example, sizeof(q_example), out, 28), -ENOBUFS);

	/* opcode kept, AA and TC dropped */
	memcpy(q, q_example, sizeof(q));
	q[2] = 0x2f; /* opcode 5 (update), AA, TC, RD */
	k = dnsmap_servfail(q, sizeof(q), out, sizeof(out));
	assert_int_equal(out[2], 0x80 | 0x29);

	/* a question that does not parse: the header alone, QDCOUNT 0 */
	memcpy(q, q_example, sizeof(q));
	q[12] = 0xc0; /* a compression pointer */
	k = dnsmap_servfail(q, sizeof(q), out, sizeof(out));
	assert_int_equal(k, 12);
	assert_int_equal(out[5], 0);
	assert_int_equal(dnsmap_servfail(q_example, 12 + 15, out, sizeof(out)), 12); /* cut */
	memcpy(q, q_example, sizeof(q));
	q[12] = 70; /* label longer than 63 */
	assert_int_equal(dnsmap_servfail(q, sizeof(q), out, sizeof(out)), 12);
	/* no question at all */
	memcpy(q, q_example, 12);
	q[5] = 0;
	assert_int_equal(dnsmap_servfail(q, 12, out, sizeof(out)), 12);

	/* not queries */
	assert_int_equal(dnsmap_servfail(q_example, 11, out, sizeof(out)), -EBADMSG);
	memcpy(q, q_example, sizeof(q));
	q[2] |= 0x80; /* a response */
	assert_int_equal(dnsmap_servfail(q, sizeof(q), out, sizeof(out)), -EBADMSG);
	assert_false(dnsmap_is_query(q, sizeof(q)));
	assert_true(dnsmap_is_query(q_example, sizeof(q_example)));

	/* a name of 255 bytes is the most a question can carry */
	uint8_t longq[12 + 300];
	size_t off = 12;
	memcpy(longq, q_example, 12);
	for (int i = 0; i < 4; i++) {
		longq[off++] = 63;
		memset(longq + off, 'a', 63);
		off += 63;
	}
	longq[off++] = 0;
	memcpy(longq + off, "\0\1\0\1", 4);
	off += 4;
	assert_int_equal(dnsmap_servfail(longq, off, out, sizeof(out)), 12); /* 257 > 255 */
	longq[12 + 3 * 64] = 61; /* 3 x 64 + 62 + 1 = 255 */
	longq[12 + 3 * 64 + 62] = 0;
	memcpy(longq + 12 + 3 * 64 + 63, "\0\1\0\1", 4);
	k = dnsmap_servfail(longq, 12 + 3 * 64 + 67, out, sizeof(out));
	assert_int_equal(k, 12 + 255 + 4);
	assert_true((size_t)k - 12 <= DNSMAP_QUERY_KEEP - 12);
}

static void test_dnsmap_ids(void **state)
{
	uint8_t m[2];
	dnsmap_set_id(m, 0xbeef);
	assert_int_equal(m[0], 0xbe);
	assert_int_equal(m[1], 0xef);
	assert_int_equal(dnsmap_get_id(m), 0xbeef);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_procnet_v4),
		cmocka_unit_test(test_procnet_v6),
		cmocka_unit_test(test_procnet_socket_link),
		cmocka_unit_test(test_procnet_comm),
		cmocka_unit_test(test_dnsmap_remap),
		cmocka_unit_test(test_dnsmap_full_and_stale),
		cmocka_unit_test(test_dnsmap_expire_flush),
		cmocka_unit_test(test_dnsmap_servfail),
		cmocka_unit_test(test_dnsmap_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
