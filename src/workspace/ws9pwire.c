/* ws9pwire.c - reading the fields of one 9P2000.L message and writing one reply (ws9pwire.h).
 *
 * Trust boundary: a reader's bytes are the guest's. Every read is checked against the end of the
 * message before it is made (one comparison, in p9rd_take(), that cannot wrap: off never passes
 * n); a length read from the message is only ever passed to p9rd_take(). A writer stops at its
 * capacity the same way (p9wr_take()).
 *
 * Thread: the caller's; no state beyond the struct it is given.
 */
#include "ws9pwire.h"

#include <string.h>

const uint8_t *p9rd_take(struct p9rd *r, size_t k)
{
	if (r->bad || k > r->n - r->off) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *q = r->p + r->off;
	r->off += k;
	return q;
}

uint8_t p9rd_u8(struct p9rd *r)
{
	const uint8_t *q = p9rd_take(r, 1);
	return q ? q[0] : 0;
}

uint16_t p9rd_u16(struct p9rd *r)
{
	const uint8_t *q = p9rd_take(r, 2);
	return q ? p9_le16(q) : 0;
}

uint32_t p9rd_u32(struct p9rd *r)
{
	const uint8_t *q = p9rd_take(r, 4);
	return q ? p9_le32(q) : 0;
}

uint64_t p9rd_u64(struct p9rd *r)
{
	const uint8_t *q = p9rd_take(r, 8);
	return q ? p9_le64(q) : 0;
}

struct p9str p9rd_str(struct p9rd *r)
{
	uint16_t n = p9rd_u16(r);
	const uint8_t *q = p9rd_take(r, n);
	return q ? (struct p9str){ (const char *)q, n } : (struct p9str){ "", 0 };
}

uint8_t *p9wr_take(struct p9wr *w, size_t k)
{
	if (w->over || k > w->cap - w->n) {
		w->over = true;
		return NULL;
	}
	uint8_t *q = w->p + w->n;
	w->n += k;
	return q;
}

void p9wr_u8(struct p9wr *w, uint8_t v)
{
	uint8_t *q = p9wr_take(w, 1);
	if (q)
		q[0] = v;
}

void p9wr_u16(struct p9wr *w, uint16_t v)
{
	uint8_t *q = p9wr_take(w, 2);
	if (q)
		p9_put16(q, v);
}

void p9wr_u32(struct p9wr *w, uint32_t v)
{
	uint8_t *q = p9wr_take(w, 4);
	if (q)
		p9_put32(q, v);
}

void p9wr_u64(struct p9wr *w, uint64_t v)
{
	uint8_t *q = p9wr_take(w, 8);
	if (q) {
		p9_put32(q, (uint32_t)v);
		p9_put32(q + 4, (uint32_t)(v >> 32));
	}
}

void p9wr_str(struct p9wr *w, const char *s, size_t n)
{
	if (n > UINT16_MAX) {
		w->over = true;
		return;
	}
	p9wr_u16(w, (uint16_t)n);
	uint8_t *q = p9wr_take(w, n);
	if (q && n)
		memcpy(q, s, n);
}

void p9wr_qid(struct p9wr *w, struct p9qid q)
{
	p9wr_u8(w, q.type);
	p9wr_u32(w, 0); /* version */
	p9wr_u64(w, q.path);
}
