/* dns.c - parse guest DNS queries and build Capsem's answers (rules in dns.h).
 *
 * Trust boundary: every byte comes from the guest (through its DNS proxy), so every read is
 * bounds-checked against the message length, names are walked label by label with the total
 * length capped, record counts are bounded by the bytes they need (an RR takes at least 11), and
 * compression pointers are refused in the question and never followed elsewhere (a pointer
 * only ends a name we skip). Nothing here allocates except through fakeip_assign().
 *
 * Thread: whichever calls it (capsem-vm's loop thread in practice); no global state.
 */
#include "dns.h"

#include <errno.h>
#include <string.h>

#define FLAG_QR 0x8000u
#define FLAG_RD 0x0100u
#define FLAG_RA 0x0080u
#define FLAG_CD 0x0010u
#define OPCODE(f) (((f) >> 11) & 0xfu)
#define EDNS_DO 0x8000u

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
}

static bool label_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* The question name at p[*off]: uncompressed labels only, hostname characters, lower-cased into
 * name. 0 or -EBADMSG. */
static int read_qname(const uint8_t *p, size_t n, size_t *off, char name[DNS_MAX_NAME + 1])
{
	size_t o = *off, len = 0;
	for (;;) {
		if (o >= n)
			return -EBADMSG;
		uint8_t l = p[o++];
		if (l == 0)
			break;
		if (l > 63) /* compression pointer or extended label type */
			return -EBADMSG;
		if (l > n - o)
			return -EBADMSG;
		/* presentation form: a dot before every label but the first */
		if (len + (len ? 1u : 0u) + l > DNS_MAX_NAME)
			return -EBADMSG;
		if (len)
			name[len++] = '.';
		for (unsigned i = 0; i < l; i++) {
			uint8_t c = p[o + i];
			if (!label_char(c))
				return -EBADMSG;
			name[len++] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
		}
		o += l;
	}
	name[len] = 0;
	*off = o;
	return 0;
}

/* Skip a name anywhere else: labels up to a terminating zero or a compression pointer (which
 * ends the name; it is not followed). 0 or -EBADMSG. */
static int skip_name(const uint8_t *p, size_t n, size_t *off, bool *ret_root)
{
	size_t o = *off;
	bool root = true;
	for (;;) {
		if (o >= n)
			return -EBADMSG;
		uint8_t l = p[o];
		if (l == 0) {
			o++;
			break;
		}
		root = false;
		if ((l & 0xc0) == 0xc0) {
			if (n - o < 2)
				return -EBADMSG;
			o += 2;
			break;
		}
		if (l > 63 || l >= n - o)
			return -EBADMSG;
		o += 1u + l;
	}
	*off = o;
	if (ret_root)
		*ret_root = root;
	return 0;
}

int dns_parse_query(const uint8_t *p, size_t n, struct dns_query *ret)
{
	struct dns_query q;
	if (!p || !ret || n < DNS_HEADER_SIZE)
		return -EPROTO;
	unsigned flags = get16(p + 2);
	if (flags & FLAG_QR)
		return -EPROTO; /* a response: answering it could start a loop */
	if (OPCODE(flags) != 0)
		return -EOPNOTSUPP;
	if (n > DNS_MAX_MSG || get16(p + 4) != 1)
		return -EBADMSG;
	memset(&q, 0, sizeof(q));
	q.id = get16(p);
	q.rd = flags & FLAG_RD;
	q.cd = flags & FLAG_CD;

	size_t off = DNS_HEADER_SIZE;
	if (read_qname(p, n, &off, q.name) < 0 || n - off < 4)
		return -EBADMSG;
	q.qtype = get16(p + off);
	q.qclass = get16(p + off + 2);
	off += 4;
	q.question_end = off;
	if (q.qtype == DNS_TYPE_OPT || q.qtype == 0)
		return -EBADMSG;

	/* the other sections: answers and authority are skipped (a query has none, but they are
	 * harmless), the additional section is searched for one OPT record */
	unsigned rrs = (unsigned)get16(p + 6) + get16(p + 8), ar = get16(p + 10);
	for (unsigned i = 0; i < rrs + ar; i++) {
		bool root;
		if (skip_name(p, n, &off, &root) < 0 || n - off < 10)
			return -EBADMSG;
		uint16_t type = get16(p + off), class = get16(p + off + 2);
		uint32_t ttl = get32(p + off + 4);
		size_t rdlen = get16(p + off + 8);
		off += 10;
		if (rdlen > n - off)
			return -EBADMSG;
		if (type == DNS_TYPE_OPT) {
			if (i < rrs || q.edns || !root)
				return -EBADMSG; /* RFC 6891 6.1.1: one OPT, root name, additional */
			/* options: code, length, data; framing checked, contents ignored */
			for (size_t o = 0; o < rdlen;) {
				if (rdlen - o < 4 || get16(p + off + o + 2) > rdlen - o - 4)
					return -EBADMSG;
				o += 4u + get16(p + off + o + 2);
			}
			q.edns = true;
			q.edns_size = class < 512 ? 512 : class;
			q.edns_version = (uint8_t)(ttl >> 16);
			q.dnssec_ok = ttl & EDNS_DO;
		}
		off += rdlen;
	}
	if (off != n)
		return -EBADMSG; /* trailing bytes */
	*ret = q;
	return 0;
}

static void put_header(uint8_t *out, uint16_t id, unsigned rd_cd, int rcode, unsigned an,
		       unsigned ar, unsigned qd)
{
	put16(out, id);
	put16(out + 2, FLAG_QR | FLAG_RA | rd_cd | ((unsigned)rcode & 0xf));
	put16(out + 4, qd);
	put16(out + 6, an);
	put16(out + 8, 0);
	put16(out + 10, ar);
}

ssize_t dns_build_answer(const uint8_t *q, size_t qn, const struct dns_query *parsed, bool allowed,
			 struct fakeip *map, uint8_t *out, size_t cap,
			 struct dns_answer_info *ret_info)
{
	if (!q || !parsed || !out || parsed->question_end > qn ||
	    parsed->question_end < DNS_HEADER_SIZE + 5 || qn > DNS_MAX_MSG)
		return -EINVAL;

	int rcode = DNS_RCODE_NOERROR;
	uint32_t addr = 0;
	if (parsed->edns && parsed->edns_version > 0)
		rcode = DNS_RCODE_BADVERS;
	else if (!allowed)
		rcode = DNS_RCODE_NXDOMAIN;
	else if (!parsed->name[0] || parsed->qclass != DNS_CLASS_IN ||
		 parsed->qtype == DNS_TYPE_AXFR || parsed->qtype == DNS_TYPE_IXFR)
		rcode = DNS_RCODE_REFUSED;
	else if (parsed->qtype == DNS_TYPE_A || parsed->qtype == DNS_TYPE_ANY) {
		if (!map || fakeip_assign(map, parsed->name, &addr) < 0) {
			rcode = DNS_RCODE_SERVFAIL;
			addr = 0;
		}
	}
	/* AAAA, HTTPS, SVCB and the rest: NOERROR without answers (NODATA) */

	size_t qlen = parsed->question_end - DNS_HEADER_SIZE;
	unsigned an = addr ? 1 : 0, ar = parsed->edns ? 1 : 0;
	size_t len = DNS_HEADER_SIZE + qlen + an * 16u + ar * 11u;
	if (len > cap)
		return -ENOBUFS;

	unsigned bits = (parsed->rd ? FLAG_RD : 0) | (parsed->cd ? FLAG_CD : 0);
	put_header(out, parsed->id, bits, rcode, an, ar, 1);
	uint8_t *w = out + DNS_HEADER_SIZE;
	memcpy(w, q + DNS_HEADER_SIZE, qlen); /* the question as sent, case included */
	w += qlen;
	if (an) {
		put16(w, 0xc000 | DNS_HEADER_SIZE); /* the question's name */
		put16(w + 2, DNS_TYPE_A);
		put16(w + 4, DNS_CLASS_IN);
		put32(w + 6, DNS_TTL);
		put16(w + 10, 4);
		put32(w + 12, addr);
		w += 16;
	}
	if (ar) {
		w[0] = 0; /* root */
		put16(w + 1, DNS_TYPE_OPT);
		put16(w + 3, DNS_EDNS_SIZE);
		/* extended rcode (upper 8 of 12 bits), version 0, DO echoed */
		put32(w + 5, (uint32_t)(rcode >> 4) << 24 | (parsed->dnssec_ok ? EDNS_DO : 0));
		put16(w + 9, 0);
		w += 11;
	}
	if (ret_info) {
		ret_info->rcode = rcode;
		ret_info->addr = addr;
		ret_info->ancount = (uint16_t)an;
	}
	return (ssize_t)(w - out);
}

ssize_t dns_build_error(const uint8_t *q, size_t qn, int rcode, uint8_t *out, size_t cap)
{
	if (!q || !out || rcode < 0 || rcode > 15)
		return -EINVAL;
	if (qn < DNS_HEADER_SIZE)
		return -EPROTO;
	if (cap < DNS_HEADER_SIZE)
		return -ENOBUFS;
	unsigned flags = get16(q + 2);
	put_header(out, get16(q), flags & (FLAG_RD | (0xfu << 11)), rcode, 0, 0, 0);
	return DNS_HEADER_SIZE;
}

ssize_t dns_respond(const uint8_t *q, size_t qn, dns_decide_fn decide, void *userdata,
		    struct fakeip *map, uint8_t *out, size_t cap, struct dns_answer_info *ret_info,
		    struct dns_query *ret_query, bool *ret_parsed)
{
	struct dns_answer_info info = { 0 };
	struct dns_query pq;
	ssize_t k;
	if (ret_parsed)
		*ret_parsed = false;
	if (ret_info)
		*ret_info = info;
	if (!q || !decide || !out)
		return -EINVAL;
	int r = dns_parse_query(q, qn, &pq);
	if (r == -EPROTO)
		return 0;
	if (r < 0) {
		info.rcode = r == -EOPNOTSUPP ? DNS_RCODE_NOTIMP : DNS_RCODE_FORMERR;
		k = dns_build_error(q, qn, info.rcode, out, cap);
	} else {
		if (ret_query)
			*ret_query = pq;
		if (ret_parsed)
			*ret_parsed = true;
		k = dns_build_answer(q, qn, &pq, decide(userdata, &pq), map, out, cap, &info);
	}
	if (ret_info && k > 0)
		*ret_info = info;
	return k;
}

ssize_t dns_tcp_frame(const uint8_t *p, size_t n, const uint8_t **ret_msg, size_t *ret_len)
{
	if (n < 2)
		return 0;
	size_t len = get16(p);
	if (len == 0)
		return -EBADMSG;
	if (n - 2 < len)
		return 0;
	*ret_msg = p + 2;
	*ret_len = len;
	return (ssize_t)(len + 2);
}

void dns_tcp_prefix(size_t len, uint8_t out[2])
{
	put16(out, (unsigned)MIN(len, (size_t)DNS_MAX_MSG));
}
