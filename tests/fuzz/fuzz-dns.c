/* fuzz-dns.c - Capsem's DNS answers (src/egress/dns.c) and the fake-IP map on arbitrary bytes
 * (the guest writes every query): the input is a TCP stream of framed queries, each answered
 * with a policy verdict taken from the query itself, against one map that persists across
 * inputs (small cap: eviction happens). Answers must fit DNS_ANSWER_MAX, keep the query's ID,
 * carry a parsed name that is valid presentation form, and give addresses the map maps back to
 * that name; the map must stay within its cap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "fakeip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool decide(void *userdata, const struct dns_query *q)
{
	return (q->id & 1) == 0;
}

static void check_name(const char *name)
{
	size_t n = strlen(name), label = 0;
	if (n > DNS_MAX_NAME)
		__builtin_trap();
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c == '.') {
			if (label == 0)
				__builtin_trap();
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_') {
			if (++label > 63)
				__builtin_trap();
		} else {
			__builtin_trap();
		}
	}
	if (n && label == 0)
		__builtin_trap();
}

static void one(struct fakeip *m, const uint8_t *q, size_t n)
{
	uint8_t out[DNS_ANSWER_MAX];
	struct dns_answer_info info;
	struct dns_query pq;
	bool parsed;
	ssize_t k = dns_respond(q, n, decide, NULL, m, out, sizeof(out), &info, &pq, &parsed);
	if (k < 0)
		__builtin_trap(); /* DNS_ANSWER_MAX is always enough */
	if (k == 0)
		return;
	if (k < DNS_HEADER_SIZE || n < 2 || memcmp(out, q, 2) != 0 || !(out[2] & 0x80))
		__builtin_trap();
	if (!parsed)
		return;
	check_name(pq.name);
	if (pq.question_end > n)
		__builtin_trap();
	if (info.addr) {
		const char *back = fakeip_lookup(m, info.addr);
		if (!fakeip_in_range(info.addr) || !back || strcmp(back, pq.name) != 0 ||
		    (info.addr & 0xff) == 0 || (info.addr & 0xff) == 0xff)
			__builtin_trap();
	}
	/* the parse is deterministic and the answer independent of the output buffer size */
	struct dns_query again;
	if (dns_parse_query(q, n, &again) != 0 || again.id != pq.id || again.qtype != pq.qtype ||
	    again.qclass != pq.qclass || again.question_end != pq.question_end ||
	    again.edns != pq.edns || strcmp(again.name, pq.name) != 0)
		__builtin_trap();
	uint8_t small[DNS_ANSWER_MAX];
	if (dns_build_answer(q, n, &pq, decide(NULL, &pq), m, small, (size_t)k, NULL) != k ||
	    memcmp(small, out, (size_t)k) != 0)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fakeip *m;
	if (!m)
		m = fakeip_new_with_cap(64);

	/* the whole input as one message */
	one(m, data, size);
	/* and as a TCP stream of framed messages */
	const uint8_t *msg;
	size_t len;
	ssize_t used;
	while ((used = dns_tcp_frame(data, size, &msg, &len)) > 0) {
		if ((size_t)used > size || len + 2 != (size_t)used)
			__builtin_trap();
		one(m, msg, len);
		data += used;
		size -= (size_t)used;
	}
	if (fakeip_count(m) > 64)
		__builtin_trap();
	return 0;
}
