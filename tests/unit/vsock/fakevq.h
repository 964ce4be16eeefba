/* fakevq.h - a fake guest for the vsock unit tests: guest RAM in a host buffer, split rings laid
 * out in it, and a driver side that posts buffers and packets and reads back used entries.
 * Header-only (static inline) so each test program takes what it needs.
 */
#pragma once

#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guestmem.h"
#include "virtq.h"
#include "vsock_dev.h"

struct fakemem {
	uint8_t *mem;
	size_t size;
	uint64_t gpa; /* guest-physical address of mem[0] */
	size_t brk;   /* bump allocator */
	struct guestmem gm;
};

/* Wrap mem (size bytes) as guest RAM at gpa; its user address is its host address, as in QEMU. */
static inline void fm_init(struct fakemem *m, void *mem, size_t size, uint64_t gpa)
{
	memset(m, 0, sizeof(*m));
	m->mem = mem;
	m->size = size;
	m->gpa = gpa;
	guestmem_init(&m->gm);
	(void)guestmem_add(&m->gm, gpa, (uintptr_t)mem, size, mem);
}

static inline uint64_t fm_alloc(struct fakemem *m, size_t len, size_t align)
{
	m->brk = (m->brk + align - 1) / align * align;
	if (m->brk + len > m->size)
		abort();
	uint64_t g = m->gpa + m->brk;
	m->brk += len;
	return g;
}

static inline void *fm_ptr(struct fakemem *m, uint64_t gpa)
{
	return m->mem + (gpa - m->gpa);
}

static inline uint64_t fm_uva(struct fakemem *m, uint64_t gpa)
{
	return (uintptr_t)fm_ptr(m, gpa);
}

struct fakeq {
	struct fakemem *m;
	uint16_t num;
	uint64_t desc, avail, used; /* gpa */
	uint16_t avail_idx;	    /* driver's next avail slot */
	uint16_t used_seen;	    /* used entries consumed by the driver */
	uint16_t next_desc;	    /* descriptor allocator (round robin) */
	uint64_t buf[1024];	    /* rx head -> buffer gpa (num <= 1024) */
	struct vq vq;		    /* device side, for tests that drive it directly */
};

static inline void fq_init(struct fakeq *q, struct fakemem *m, uint16_t num)
{
	memset(q, 0, sizeof(*q));
	q->m = m;
	q->num = num;
	q->desc = fm_alloc(m, 16u * num, 16);
	q->avail = fm_alloc(m, 6u + 2u * num, 2);
	q->used = fm_alloc(m, 6u + 8u * num, 4);
	memset(fm_ptr(m, q->desc), 0, 16u * num);
	memset(fm_ptr(m, q->avail), 0, 6u + 2u * num);
	memset(fm_ptr(m, q->used), 0, 6u + 8u * num);
	vq_init(&q->vq);
	q->vq.num = num;
	q->vq.desc_uva = fm_uva(m, q->desc);
	q->vq.avail_uva = fm_uva(m, q->avail);
	q->vq.used_uva = fm_uva(m, q->used);
	q->vq.addr_set = true;
	q->vq.need_used_idx = true;
	(void)vq_map(&q->vq, &m->gm);
}

static inline void fq_set_desc(struct fakeq *q, uint16_t i, uint64_t addr, uint32_t len,
			       uint16_t flags, uint16_t next)
{
	uint8_t *d = (uint8_t *)fm_ptr(q->m, q->desc) + 16u * i;
	uint64_t a = htole64(addr);
	uint32_t l = htole32(len);
	uint16_t f = htole16(flags), n = htole16(next);
	memcpy(d, &a, 8);
	memcpy(d + 8, &l, 4);
	memcpy(d + 12, &f, 2);
	memcpy(d + 14, &n, 2);
}

static inline void fq_set_avail_idx(struct fakeq *q, uint16_t idx)
{
	uint16_t v = htole16(idx);
	memcpy((uint8_t *)fm_ptr(q->m, q->avail) + 2, &v, 2);
}

static inline void fq_set_avail_flags(struct fakeq *q, uint16_t flags)
{
	uint16_t v = htole16(flags);
	memcpy(fm_ptr(q->m, q->avail), &v, 2);
}

/* Make head available. */
static inline void fq_publish(struct fakeq *q, uint16_t head)
{
	uint16_t v = htole16(head);
	memcpy((uint8_t *)fm_ptr(q->m, q->avail) + 4 + 2u * (q->avail_idx % q->num), &v, 2);
	q->avail_idx++;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	fq_set_avail_idx(q, q->avail_idx);
}

static inline uint16_t fq_used_idx(struct fakeq *q)
{
	uint16_t v;
	memcpy(&v, (uint8_t *)fm_ptr(q->m, q->used) + 2, 2);
	return le16toh(v);
}

/* Take the next used element: 1 (and id/len) or 0. */
static inline int fq_take_used(struct fakeq *q, uint16_t *id, uint32_t *len)
{
	if (fq_used_idx(q) == q->used_seen)
		return 0;
	const uint8_t *e = (uint8_t *)fm_ptr(q->m, q->used) + 4 + 8u * (q->used_seen % q->num);
	uint32_t i, l;
	memcpy(&i, e, 4);
	memcpy(&l, e + 4, 4);
	*id = (uint16_t)le32toh(i);
	*len = le32toh(l);
	q->used_seen++;
	return 1;
}

static inline uint16_t fq_next_desc(struct fakeq *q)
{
	uint16_t d = q->next_desc;
	q->next_desc = (uint16_t)((q->next_desc + 1) % q->num);
	return d;
}

/* Post one writable buffer of len bytes (rx). Returns the head. */
static inline uint16_t fq_post_rx(struct fakeq *q, uint32_t len)
{
	uint16_t d = fq_next_desc(q);
	uint64_t g = fm_alloc(q->m, len, 8);
	fq_set_desc(q, d, g, len, VRING_DESC_F_WRITE, 0);
	q->buf[d] = g;
	fq_publish(q, d);
	return d;
}

/* Post a guest packet on a tx queue: header (split after split bytes into two descriptors when
 * 0 < split < 44) then payload in its own descriptor. Returns the head. */
static inline uint16_t fq_send_pkt(struct fakeq *q, const struct vsock_hdr *h, const void *payload,
				   size_t len, size_t split)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	vsock_hdr_encode(h, raw);
	uint16_t ids[3];
	size_t n = 0;
	uint64_t g;
	if (split > 0 && split < VSOCK_HDR_SIZE) {
		g = fm_alloc(q->m, split, 8);
		memcpy(fm_ptr(q->m, g), raw, split);
		ids[n] = fq_next_desc(q);
		fq_set_desc(q, ids[n++], g, (uint32_t)split, 0, 0);
		g = fm_alloc(q->m, VSOCK_HDR_SIZE - split, 8);
		memcpy(fm_ptr(q->m, g), raw + split, VSOCK_HDR_SIZE - split);
		ids[n] = fq_next_desc(q);
		fq_set_desc(q, ids[n++], g, (uint32_t)(VSOCK_HDR_SIZE - split), 0, 0);
	} else {
		g = fm_alloc(q->m, VSOCK_HDR_SIZE, 8);
		memcpy(fm_ptr(q->m, g), raw, VSOCK_HDR_SIZE);
		ids[n] = fq_next_desc(q);
		fq_set_desc(q, ids[n++], g, VSOCK_HDR_SIZE, 0, 0);
	}
	if (len > 0) {
		g = fm_alloc(q->m, len, 8);
		memcpy(fm_ptr(q->m, g), payload, len);
		ids[n] = fq_next_desc(q);
		fq_set_desc(q, ids[n++], g, (uint32_t)len, 0, 0);
	}
	/* chain them */
	for (size_t i = 0; i + 1 < n; i++) {
		uint8_t *d = (uint8_t *)fm_ptr(q->m, q->desc) + 16u * ids[i];
		uint16_t f = htole16(VRING_DESC_F_NEXT), nx = htole16(ids[i + 1]);
		memcpy(d + 12, &f, 2);
		memcpy(d + 14, &nx, 2);
	}
	fq_publish(q, ids[0]);
	return ids[0];
}

/* Reset the bump allocator to just after the rings (tests that run long reuse buffer space:
 * only when nothing is in flight). */
static inline void fm_reset_to(struct fakemem *m, size_t brk)
{
	m->brk = brk;
}
