/* dnsmap.c - DNS ID remapping and SERVFAIL answers for capsem-dns-proxy (see dnsmap.h).
 *
 * Trust boundary: queries come from any process in the guest and answers from the host; both are
 * parsed by length only (a header, and at most one question name of bounded labels, no
 * compression pointers followed). Pure; the single thread of capsem-dns-proxy.
 */
#include "dnsmap.h"

#include "macro.h"

void dnsmap_init(struct dnsmap *m)
{
	memset(m, 0, sizeof(*m));
}

int dnsmap_add(struct dnsmap *m, uint16_t orig_id, const struct dnsmap_client *c, const uint8_t *q,
	       size_t n, uint64_t deadline_ms, uint16_t *ret_id)
{
	if (m->n >= DNSMAP_SLOTS)
		return -ENOSPC;
	for (unsigned k = 0; k < DNSMAP_SLOTS; k++) {
		unsigned s = (m->next + k) % DNSMAP_SLOTS;
		struct dnsmap_entry *e = &m->e[s];
		if (e->used)
			continue;
		m->gen[s] = (uint8_t)((m->gen[s] + 1) & 0x3f);
		*e = (struct dnsmap_entry){
			.used = 1,
			.id = (uint16_t)(m->gen[s] << DNSMAP_SLOT_BITS | s),
			.orig_id = orig_id,
			.deadline_ms = deadline_ms,
			.client = *c,
			.query_len = (uint16_t)MIN(n, (size_t)DNSMAP_QUERY_KEEP),
		};
		memcpy(e->query, q, e->query_len);
		m->next = (s + 1) % DNSMAP_SLOTS;
		m->n++;
		*ret_id = e->id;
		return 0;
	}
	return -ENOSPC; /* not reached: n < DNSMAP_SLOTS means a slot is free */
}

int dnsmap_take(struct dnsmap *m, uint16_t id, struct dnsmap_entry *ret)
{
	struct dnsmap_entry *e = &m->e[id & (DNSMAP_SLOTS - 1)];
	if (!e->used || e->id != id)
		return -ENOENT;
	*ret = *e;
	e->used = 0;
	m->n--;
	return 0;
}

int dnsmap_expire(struct dnsmap *m, uint64_t now_ms, struct dnsmap_entry *ret)
{
	if (m->n == 0)
		return 0;
	for (unsigned s = 0; s < DNSMAP_SLOTS; s++) {
		struct dnsmap_entry *e = &m->e[s];
		if (e->used && e->deadline_ms <= now_ms) {
			*ret = *e;
			e->used = 0;
			m->n--;
			return 1;
		}
	}
	return 0;
}

uint64_t dnsmap_next_deadline(const struct dnsmap *m)
{
	uint64_t t = UINT64_MAX;
	if (m->n == 0)
		return t;
	for (unsigned s = 0; s < DNSMAP_SLOTS; s++)
		if (m->e[s].used && m->e[s].deadline_ms < t)
			t = m->e[s].deadline_ms;
	return t;
}

void dnsmap_flush(struct dnsmap *m, void (*fn)(const struct dnsmap_entry *e, void *userdata),
		  void *userdata)
{
	for (unsigned s = 0; s < DNSMAP_SLOTS && m->n > 0; s++) {
		struct dnsmap_entry *e = &m->e[s];
		if (!e->used)
			continue;
		e->used = 0;
		m->n--;
		if (fn)
			fn(e, userdata);
	}
}

uint16_t dnsmap_get_id(const uint8_t *msg)
{
	return (uint16_t)(msg[0] << 8 | msg[1]);
}

void dnsmap_set_id(uint8_t *msg, uint16_t id)
{
	msg[0] = (uint8_t)(id >> 8);
	msg[1] = (uint8_t)id;
}

int dnsmap_is_query(const uint8_t *q, size_t n)
{
	return n >= DNS_HDR_SIZE && n <= DNS_MSG_MAX && !(q[2] & 0x80);
}

/* The length of the question at q[off]: a name of labels (no compression pointer: a query's
 * first name has nothing to point back to), then QTYPE and QCLASS. 0 when it does not parse. */
static size_t question_len(const uint8_t *q, size_t n, size_t off)
{
	size_t i = off, name = 0;
	for (;;) {
		if (i >= n)
			return 0;
		uint8_t l = q[i];
		if (l == 0) {
			i++;
			break;
		}
		if (l > 63)
			return 0; /* a pointer or a reserved label type */
		name += (size_t)l + 1;
		if (name > 255)
			return 0;
		i += (size_t)l + 1;
	}
	if (n - i < 4)
		return 0;
	return i + 4 - off;
}

ssize_t dnsmap_servfail(const uint8_t *q, size_t n, uint8_t *out, size_t cap)
{
	if (!dnsmap_is_query(q, n))
		return -EBADMSG;
	size_t ql = 0;
	if (q[4] != 0 || q[5] != 0) /* QDCOUNT > 0 */
		ql = question_len(q, n, DNS_HDR_SIZE);
	if (cap < DNS_HDR_SIZE + ql)
		return -ENOBUFS;
	memset(out, 0, DNS_HDR_SIZE);
	out[0] = q[0];
	out[1] = q[1];
	out[2] = (uint8_t)(0x80 | (q[2] & 0x79)); /* QR, opcode and RD kept; AA, TC cleared */
	out[3] = 0x80 | 2;			  /* RA, RCODE SERVFAIL */
	if (ql) {
		out[5] = 1;
		memcpy(out + DNS_HDR_SIZE, q + DNS_HDR_SIZE, ql);
	}
	return (ssize_t)(DNS_HDR_SIZE + ql);
}
