/* test-dns.c - Capsem's DNS answers (src/egress/dns.c) and the fake-IP map (fakeip.c): allowed
 * A records from 198.18.0.0/15, NODATA for AAAA/HTTPS/SVCB, NXDOMAIN for blocked names, FORMERR,
 * NOTIMP, dropped garbage, EDNS (echo, BADVERS, DO), name and label limits, case echo, TCP
 * framing; the map's stability, back-mapping, case folding, address choice and eviction. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns.h"
#include "fakeip.h"

/* ---- building queries ---- */

struct q {
	uint8_t b[1024];
	size_t n;
};

static void q_u16(struct q *q, unsigned v)
{
	q->b[q->n++] = (uint8_t)(v >> 8);
	q->b[q->n++] = (uint8_t)v;
}

static void q_header(struct q *q, uint16_t id, unsigned flags, unsigned qd, unsigned an,
		     unsigned ns, unsigned ar)
{
	q->n = 0;
	q_u16(q, id);
	q_u16(q, flags);
	q_u16(q, qd);
	q_u16(q, an);
	q_u16(q, ns);
	q_u16(q, ar);
}

/* "www.Example.com" -> labels (no validation: tests build bad names too) */
static void q_name(struct q *q, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		q->b[q->n++] = (uint8_t)l;
		memcpy(q->b + q->n, name, l);
		q->n += l;
		name += l + (dot ? 1 : 0);
	}
	q->b[q->n++] = 0;
}

static void q_opt(struct q *q, unsigned size, unsigned version, bool dnssec_ok)
{
	q->b[q->n++] = 0;
	q_u16(q, DNS_TYPE_OPT);
	q_u16(q, size);
	q_u16(q, version); /* extended rcode 0, version */
	q_u16(q, dnssec_ok ? 0x8000 : 0);
	q_u16(q, 0);
}

/* A standard query: id 0x1234, RD set. */
static void mkquery(struct q *q, const char *name, unsigned type, bool edns)
{
	q_header(q, 0x1234, 0x0100, 1, 0, 0, edns ? 1 : 0);
	q_name(q, name);
	q_u16(q, type);
	q_u16(q, DNS_CLASS_IN);
	if (edns)
		q_opt(q, 4096, 0, false);
}

static unsigned g16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* ---- the decide callback: names under blocked.test are blocked ---- */

static bool decide(void *userdata, const struct dns_query *q)
{
	int *calls = userdata;
	if (calls)
		(*calls)++;
	size_t n = strlen(q->name);
	return !(n >= 12 && streq(q->name + n - 12, "blocked.test"));
}

static ssize_t respond(struct fakeip *m, const struct q *q, uint8_t *out,
		       struct dns_answer_info *info)
{
	return dns_respond(q->b, q->n, decide, NULL, m, out, DNS_ANSWER_MAX, info, NULL, NULL);
}

static void test_allowed_a(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	mkquery(&q, "api.anthropic.com", DNS_TYPE_A, false);
	ssize_t k = respond(m, &q, out, &info);
	assert_int_equal(k, q.n + 16);
	assert_int_equal(g16(out), 0x1234);
	/* QR, RD echoed, RA, NOERROR */
	assert_int_equal(g16(out + 2), 0x8180);
	assert_int_equal(g16(out + 4), 1);
	assert_int_equal(g16(out + 6), 1);
	assert_int_equal(g16(out + 8), 0);
	assert_int_equal(g16(out + 10), 0);
	assert_memory_equal(out + 12, q.b + 12, q.n - 12); /* the question as sent */
	const uint8_t *a = out + q.n;
	assert_int_equal(g16(a), 0xc00c);
	assert_int_equal(g16(a + 2), DNS_TYPE_A);
	assert_int_equal(g16(a + 4), DNS_CLASS_IN);
	assert_int_equal(g16(a + 6), 0);
	assert_int_equal(g16(a + 8), DNS_TTL);
	assert_int_equal(g16(a + 10), 4);
	uint32_t addr =
		(uint32_t)a[12] << 24 | (uint32_t)a[13] << 16 | (uint32_t)a[14] << 8 | a[15];
	assert_int_equal(info.rcode, DNS_RCODE_NOERROR);
	assert_int_equal(info.addr, addr);
	assert_int_equal(info.ancount, 1);
	assert_true(fakeip_in_range(addr));
	assert_string_equal(fakeip_lookup(m, addr), "api.anthropic.com");

	/* asked again: the same address */
	struct dns_answer_info info2;
	assert_int_equal(respond(m, &q, out, &info2), k);
	assert_int_equal(info2.addr, addr);

	/* ANY gets the A record too */
	mkquery(&q, "api.anthropic.com", DNS_TYPE_ANY, false);
	assert_int_equal(respond(m, &q, out, &info2), q.n + 16);
	assert_int_equal(info2.addr, addr);
}

static void test_nodata(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	static const unsigned types[] = { DNS_TYPE_AAAA, DNS_TYPE_HTTPS, DNS_TYPE_SVCB,
					  15 /* MX */,	 16 /* TXT */,	 DNS_TYPE_CNAME };
	for (size_t i = 0; i < ELEMENTSOF(types); i++) {
		struct q q;
		uint8_t out[DNS_ANSWER_MAX];
		struct dns_answer_info info;
		mkquery(&q, "api.openai.com", types[i], false);
		assert_int_equal(respond(m, &q, out, &info), q.n);
		assert_int_equal(g16(out + 2) & 0xf, DNS_RCODE_NOERROR);
		assert_int_equal(g16(out + 6), 0);
		assert_int_equal(info.addr, 0);
		assert_int_equal(info.ancount, 0);
	}
	/* NODATA does not spend an address */
	assert_int_equal(fakeip_count(m), 0);
}

static void test_blocked_refused(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	int calls = 0;
	mkquery(&q, "evil.blocked.test", DNS_TYPE_A, false);
	assert_int_equal(
		dns_respond(q.b, q.n, decide, &calls, m, out, sizeof(out), &info, NULL, NULL), q.n);
	assert_int_equal(calls, 1);
	assert_int_equal(g16(out + 2), 0x8180 | DNS_RCODE_NXDOMAIN);
	assert_int_equal(g16(out + 4), 1);
	assert_int_equal(g16(out + 6), 0);
	assert_int_equal(info.rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(fakeip_count(m), 0);
	/* blocked wins for every type */
	mkquery(&q, "evil.blocked.test", DNS_TYPE_AAAA, false);
	assert_int_equal(respond(m, &q, out, &info), q.n);
	assert_int_equal(info.rcode, DNS_RCODE_NXDOMAIN);

	/* zone transfers, other classes and the root name are refused */
	mkquery(&q, "example.com", DNS_TYPE_AXFR, false);
	respond(m, &q, out, &info);
	assert_int_equal(info.rcode, DNS_RCODE_REFUSED);
	q_header(&q, 1, 0x0100, 1, 0, 0, 0);
	q_name(&q, "version.bind");
	q_u16(&q, 16);
	q_u16(&q, 3); /* CH */
	respond(m, &q, out, &info);
	assert_int_equal(info.rcode, DNS_RCODE_REFUSED);
	q_header(&q, 1, 0x0100, 1, 0, 0, 0);
	q_name(&q, "");
	q_u16(&q, 2); /* NS */
	q_u16(&q, DNS_CLASS_IN);
	assert_int_equal(respond(m, &q, out, &info), q.n);
	assert_int_equal(info.rcode, DNS_RCODE_REFUSED);
	assert_int_equal(fakeip_count(m), 0);
}

static void test_formerr_notimp_drop(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	int calls = 0;
	struct dns_query pq;

	/* shorter than a header: dropped */
	assert_int_equal(
		dns_respond(q.b, 11, decide, &calls, m, out, sizeof(out), &info, NULL, NULL), 0);
	assert_int_equal(dns_parse_query(q.b, 11, &pq), -EPROTO);

	/* a response (QR set): dropped */
	mkquery(&q, "example.com", DNS_TYPE_A, false);
	q.b[2] |= 0x80;
	assert_int_equal(respond(m, &q, out, &info), 0);

	/* QDCOUNT 0 and 2: FORMERR, header only, id and RD kept */
	q_header(&q, 0xbeef, 0x0100, 0, 0, 0, 0);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	assert_int_equal(
		dns_respond(q.b, q.n, decide, &calls, m, out, sizeof(out), &info, NULL, NULL),
		DNS_HEADER_SIZE);
	assert_int_equal(g16(out), 0xbeef);
	assert_int_equal(g16(out + 2), 0x8180 | DNS_RCODE_FORMERR);
	assert_int_equal(g16(out + 4), 0);
	assert_int_equal(info.rcode, DNS_RCODE_FORMERR);
	mkquery(&q, "example.com", DNS_TYPE_A, false);
	q.b[5] = 2;
	q_name(&q, "example.org");
	q_u16(&q, 1);
	q_u16(&q, 1);
	assert_int_equal(respond(m, &q, out, &info), DNS_HEADER_SIZE);
	assert_int_equal(info.rcode, DNS_RCODE_FORMERR);

	/* truncated question, trailing bytes, qtype OPT, bad characters: FORMERR */
	mkquery(&q, "example.com", DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n - 1, &pq), -EBADMSG);
	q.b[q.n++] = 0;
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	mkquery(&q, "example.com", DNS_TYPE_OPT, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	mkquery(&q, "exa mple.com", DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	mkquery(&q, "a.b", DNS_TYPE_A, false);
	q.b[13] = 0xff; /* a byte outside hostname characters */
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);

	/* a compression pointer in the question (even a self-loop): FORMERR */
	q_header(&q, 7, 0x0100, 1, 0, 0, 0);
	q.b[q.n++] = 0xc0;
	q.b[q.n++] = 12;
	q_u16(&q, 1);
	q_u16(&q, 1);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	/* an extended label type (0x40) */
	q_header(&q, 7, 0x0100, 1, 0, 0, 0);
	q.b[q.n++] = 0x41;
	q.b[q.n++] = 'a';
	q.b[q.n++] = 0;
	q_u16(&q, 1);
	q_u16(&q, 1);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);

	/* opcode STATUS (2), NOTIFY (4), UPDATE (5): NOTIMP with the opcode echoed */
	for (unsigned op = 1; op < 16; op++) {
		mkquery(&q, "example.com", DNS_TYPE_A, false);
		q.b[2] = (uint8_t)(q.b[2] | op << 3);
		assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EOPNOTSUPP);
		assert_int_equal(respond(m, &q, out, &info), DNS_HEADER_SIZE);
		assert_int_equal(info.rcode, DNS_RCODE_NOTIMP);
		assert_int_equal((g16(out + 2) >> 11) & 0xf, op);
		assert_int_equal(g16(out + 2) & 0xf, DNS_RCODE_NOTIMP);
	}
	assert_int_equal(calls, 0); /* policy never asked about a malformed query */

	/* dns_build_error's own checks */
	assert_int_equal(dns_build_error(q.b, 5, DNS_RCODE_FORMERR, out, sizeof(out)), -EPROTO);
	assert_int_equal(dns_build_error(q.b, q.n, 16, out, sizeof(out)), -EINVAL);
	assert_int_equal(dns_build_error(q.b, q.n, 2, out, 11), -ENOBUFS);
	assert_int_equal(dns_build_error(q.b, q.n, DNS_RCODE_SERVFAIL, out, 12), 12);
	assert_int_equal(g16(out + 2) & 0xf, DNS_RCODE_SERVFAIL);
}

static void test_edns(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	struct dns_query pq;

	mkquery(&q, "pypi.org", DNS_TYPE_A, true);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	assert_true(pq.edns);
	assert_int_equal(pq.edns_size, 4096);
	assert_int_equal(pq.edns_version, 0);
	size_t qlen = q.n - 11; /* without the OPT */
	assert_int_equal(respond(m, &q, out, &info), qlen + 16 + 11);
	assert_int_equal(g16(out + 10), 1);
	const uint8_t *o = out + qlen + 16;
	assert_int_equal(o[0], 0);
	assert_int_equal(g16(o + 1), DNS_TYPE_OPT);
	assert_int_equal(g16(o + 3), DNS_EDNS_SIZE);
	assert_int_equal(g16(o + 5), 0);
	assert_int_equal(g16(o + 7), 0);
	assert_int_equal(g16(o + 9), 0);

	/* DO echoed, options (a cookie) accepted and ignored */
	q_header(&q, 9, 0x0100, 1, 0, 0, 1);
	q_name(&q, "pypi.org");
	q_u16(&q, DNS_TYPE_AAAA);
	q_u16(&q, 1);
	q.b[q.n++] = 0;
	q_u16(&q, DNS_TYPE_OPT);
	q_u16(&q, 1232);
	q_u16(&q, 0);
	q_u16(&q, 0x8000);
	q_u16(&q, 12);
	q_u16(&q, 10); /* COOKIE */
	q_u16(&q, 8);
	memcpy(q.b + q.n, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	q.n += 8;
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	assert_true(pq.dnssec_ok);
	ssize_t k = respond(m, &q, out, &info);
	assert_true(k > 0);
	assert_int_equal(g16(out + (size_t)k - 4), 0x8000);
	/* an option running past the record: FORMERR */
	q.b[q.n - 9] = 9;
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);

	/* EDNS version 1: BADVERS (extended rcode 1, header rcode 0), no answer */
	q_header(&q, 9, 0x0100, 1, 0, 0, 1);
	q_name(&q, "pypi.org");
	q_u16(&q, DNS_TYPE_A);
	q_u16(&q, 1);
	q_opt(&q, 1232, 1, false);
	k = respond(m, &q, out, &info);
	assert_int_equal(k, q.n);
	assert_int_equal(info.rcode, DNS_RCODE_BADVERS);
	assert_int_equal(g16(out + 2) & 0xf, 0);
	assert_int_equal(out[k - 6], 1);

	/* two OPT records, or an OPT with a name: FORMERR */
	mkquery(&q, "pypi.org", DNS_TYPE_A, true);
	q.b[11] = 2;
	q_opt(&q, 512, 0, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	q_header(&q, 9, 0x0100, 1, 0, 0, 1);
	q_name(&q, "pypi.org");
	q_u16(&q, DNS_TYPE_A);
	q_u16(&q, 1);
	q.b[q.n++] = 0xc0; /* name: a pointer, not root */
	q.b[q.n++] = 12;
	q_u16(&q, DNS_TYPE_OPT);
	q_u16(&q, 512);
	q_u16(&q, 0);
	q_u16(&q, 0);
	q_u16(&q, 0);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);

	/* other additional records (compressed names) are skipped */
	q_header(&q, 9, 0x0100, 1, 0, 0, 1);
	q_name(&q, "pypi.org");
	q_u16(&q, DNS_TYPE_A);
	q_u16(&q, 1);
	q.b[q.n++] = 0xc0;
	q.b[q.n++] = 12;
	q_u16(&q, 16);
	q_u16(&q, 1);
	q_u16(&q, 0);
	q_u16(&q, 60);
	q_u16(&q, 2);
	q_u16(&q, 0x0161);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	assert_false(pq.edns);
}

static void test_names(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	struct dns_query pq;
	char name[300], label[70];

	/* case: lower-cased for policy, echoed as sent (0x20 randomisation) */
	mkquery(&q, "ApI.AnThRoPiC.CoM", DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	assert_string_equal(pq.name, "api.anthropic.com");
	assert_int_equal(pq.id, 0x1234);
	assert_true(pq.rd);
	assert_int_equal(pq.qtype, DNS_TYPE_A);
	assert_int_equal(respond(m, &q, out, &info), q.n + 16);
	assert_memory_equal(out + 13, "ApI", 3);
	uint32_t a1 = info.addr, a2;
	assert_int_equal(fakeip_assign(m, "API.anthropic.com.", &a2), 0);
	assert_int_equal(a1, a2);

	/* underscores are fine (_dmarc, SRV names) */
	mkquery(&q, "_https._tcp.example.com", 33, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);

	/* a 63-byte label is fine, 64 is not */
	memset(label, 'a', 63);
	label[63] = 0;
	snprintf(name, sizeof(name), "%s.com", label);
	mkquery(&q, name, DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	label[63] = 'a';
	label[64] = 0;
	snprintf(name, sizeof(name), "%s.com", label);
	mkquery(&q, name, DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);

	/* 253 characters is the longest name; 254 is FORMERR */
	label[63] = 0;
	snprintf(name, sizeof(name), "%s.%s.%s.%.61s", label, label, label, label);
	assert_int_equal(strlen(name), 253);
	mkquery(&q, name, DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), 0);
	assert_string_equal(pq.name, name);
	ssize_t k = respond(m, &q, out, &info);
	assert_true(k > 0 && k <= DNS_ANSWER_MAX);
	assert_int_equal(info.ancount, 1);
	assert_string_equal(fakeip_lookup(m, info.addr), name);
	snprintf(name, sizeof(name), "%s.%s.%s.%.62s", label, label, label, label);
	mkquery(&q, name, DNS_TYPE_A, false);
	assert_int_equal(dns_parse_query(q.b, q.n, &pq), -EBADMSG);
	assert_int_equal(respond(m, &q, out, &info), DNS_HEADER_SIZE);
	assert_int_equal(info.rcode, DNS_RCODE_FORMERR);

	/* an answer never exceeds DNS_ANSWER_MAX; a small buffer is -ENOBUFS */
	mkquery(&q, "a.b", DNS_TYPE_A, false);
	assert_int_equal(dns_respond(q.b, q.n, decide, NULL, m, out, q.n + 15, &info, NULL, NULL),
			 -ENOBUFS);
}

static void test_no_map(void **state)
{
	/* no map: an allowed A query is SERVFAIL */
	struct q q;
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	struct dns_query pq;
	bool parsed = false;
	mkquery(&q, "example.com", DNS_TYPE_A, false);
	assert_int_equal(
		dns_respond(q.b, q.n, decide, NULL, NULL, out, sizeof(out), &info, &pq, &parsed),
		q.n);
	assert_true(parsed);
	assert_string_equal(pq.name, "example.com");
	assert_int_equal(info.rcode, DNS_RCODE_SERVFAIL);
	assert_int_equal(info.addr, 0);
}

static void test_tcp_frame(void **state)
{
	const uint8_t *msg;
	size_t len;
	uint8_t s[] = { 0x00, 0x03, 'a', 'b', 'c', 0x00, 0x01, 'x', 0x00 };
	assert_int_equal(dns_tcp_frame(s, 1, &msg, &len), 0);
	assert_int_equal(dns_tcp_frame(s, 4, &msg, &len), 0);
	assert_int_equal(dns_tcp_frame(s, sizeof(s), &msg, &len), 5);
	assert_ptr_equal(msg, s + 2);
	assert_int_equal(len, 3);
	assert_int_equal(dns_tcp_frame(s + 5, 4, &msg, &len), 3);
	assert_int_equal(len, 1);
	uint8_t z[] = { 0, 0, 1 };
	assert_int_equal(dns_tcp_frame(z, 3, &msg, &len), -EBADMSG);
	uint8_t p[2];
	dns_tcp_prefix(300, p);
	assert_int_equal(g16(p), 300);
}

/* ---- fake-IP map ---- */

static void test_fakeip_basic(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	uint32_t a, b, c;
	assert_int_equal(fakeip_assign(m, "github.com", &a), 0);
	assert_int_equal(a, 0xc6120001u); /* 198.18.0.1 */
	assert_int_equal(fakeip_assign(m, "GitHub.COM.", &b), 0);
	assert_int_equal(a, b);
	assert_int_equal(fakeip_assign(m, "api.github.com", &c), 0);
	assert_int_not_equal(a, c);
	assert_string_equal(fakeip_lookup(m, a), "github.com");
	assert_string_equal(fakeip_lookup(m, c), "api.github.com");
	assert_null(fakeip_lookup(m, c + 1));
	assert_null(fakeip_lookup(m, 0x7f000001u));
	assert_int_equal(fakeip_count(m), 2);

	assert_true(fakeip_in_range(0xc6120000u));
	assert_true(fakeip_in_range(0xc613ffffu));
	assert_false(fakeip_in_range(0xc6140000u));
	assert_false(fakeip_in_range(0xc611ffffu));

	/* invalid names */
	static const char *const bad[] = { "",	  ".",	   "a..b",  ".a", "a b",
					   "a/b", "ä.com", "a.b..", "x\n" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_int_equal(fakeip_assign(m, bad[i], &a), -EINVAL);
	char big[300];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(fakeip_assign(m, big, &a), -EINVAL);
	assert_int_equal(fakeip_count(m), 2);
}

static void test_fakeip_many(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	char name[64];
	uint32_t addr, prev = 0;
	/* 5000 names: distinct, in range, never .0 or .255, stable, all mapped back */
	for (unsigned i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host%u.example.com", i);
		assert_int_equal(fakeip_assign(m, name, &addr), 0);
		assert_true(fakeip_in_range(addr));
		assert_int_not_equal(addr & 0xff, 0);
		assert_int_not_equal(addr & 0xff, 0xff);
		assert_true(addr > prev);
		prev = addr;
	}
	assert_int_equal(fakeip_count(m), 5000);
	for (unsigned i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "HOST%u.example.com", i);
		assert_int_equal(fakeip_assign(m, name, &addr), 0);
		snprintf(name, sizeof(name), "host%u.example.com", i);
		assert_string_equal(fakeip_lookup(m, addr), name);
	}
	assert_int_equal(fakeip_count(m), 5000);
}

static void test_fakeip_eviction(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new_with_cap(3);
	uint32_t a, b, c, d, x;
	assert_int_equal(fakeip_assign(m, "a.test", &a), 0);
	assert_int_equal(fakeip_assign(m, "b.test", &b), 0);
	assert_int_equal(fakeip_assign(m, "c.test", &c), 0);
	/* a is refreshed: b is now the least recently assigned */
	assert_int_equal(fakeip_assign(m, "a.test", &x), 0);
	assert_int_equal(x, a);
	assert_int_equal(fakeip_assign(m, "d.test", &d), 0);
	assert_int_equal(fakeip_count(m), 3);
	assert_null(fakeip_lookup(m, b));
	assert_string_equal(fakeip_lookup(m, a), "a.test");
	assert_string_equal(fakeip_lookup(m, c), "c.test");
	assert_string_equal(fakeip_lookup(m, d), "d.test");
	/* b's address is not handed out again soon: b comes back with a fresh one */
	assert_int_equal(fakeip_assign(m, "b.test", &x), 0);
	assert_int_not_equal(x, b);
	assert_true(x > d);
	assert_null(fakeip_lookup(m, c)); /* c was the oldest */

	/* churn through the whole range: the cursor wraps, skips in-use addresses, and the map
	 * stays consistent */
	char name[64];
	uint32_t seen_low = 0;
	for (unsigned i = 0; i < 140000; i++) {
		snprintf(name, sizeof(name), "n%u.test", i);
		assert_int_equal(fakeip_assign(m, name, &x), 0);
		assert_true(fakeip_in_range(x));
		assert_string_equal(fakeip_lookup(m, x), name);
		if (x < 0xc6120100u)
			seen_low++;
	}
	assert_true(seen_low > 0); /* wrapped around */
	assert_int_equal(fakeip_count(m), 3);
}

static void test_fakeip_full_default_cap(void **state)
{
	_cleanup_fakeip_free_ struct fakeip *m = fakeip_new();
	char name[64];
	uint32_t first, x;
	assert_int_equal(fakeip_assign(m, "first.test", &first), 0);
	for (unsigned i = 1; i < FAKEIP_MAX_NAMES; i++) {
		snprintf(name, sizeof(name), "n%u.test", i);
		assert_int_equal(fakeip_assign(m, name, &x), 0);
	}
	assert_int_equal(fakeip_count(m), FAKEIP_MAX_NAMES);
	assert_string_equal(fakeip_lookup(m, first), "first.test");
	assert_int_equal(fakeip_assign(m, "one-more.test", &x), 0);
	assert_int_equal(fakeip_count(m), FAKEIP_MAX_NAMES);
	assert_null(fakeip_lookup(m, first));
	assert_string_equal(fakeip_lookup(m, x), "one-more.test");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_a),
		cmocka_unit_test(test_nodata),
		cmocka_unit_test(test_blocked_refused),
		cmocka_unit_test(test_formerr_notimp_drop),
		cmocka_unit_test(test_edns),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_no_map),
		cmocka_unit_test(test_tcp_frame),
		cmocka_unit_test(test_fakeip_basic),
		cmocka_unit_test(test_fakeip_many),
		cmocka_unit_test(test_fakeip_eviction),
		cmocka_unit_test(test_fakeip_full_default_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
