/* buf.h - the one bounded byte buffer.
 *
 * A buf grows on demand up to a hard cap fixed at creation: bytes from a guest, a socket or a
 * file go through it, and appending past the cap fails with -ENOBUFS instead of growing. Data is
 * consumed from the front (buf_consume) and the gap is reclaimed lazily. Not thread-safe.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

struct buf {
	uint8_t *data; /* allocation; live bytes are data[off, off+len) */
	size_t off;
	size_t len;
	size_t alloc;
	size_t cap; /* hard limit on len */
};

/* Initialise an empty buffer with a hard cap. Never fails (allocation is lazy). */
void buf_init(struct buf *b, size_t cap);
/* Free storage (wiping it first when wipe != 0); the buffer is empty and reusable after. */
void buf_done(struct buf *b, int wipe);

/* An empty buffer with a hard cap, as buf_init() leaves it: for declarations with a cleanup. */
#define BUF_INIT(c) ((struct buf){ .cap = (c) })

static inline void buf_donep(struct buf *b)
{
	buf_done(b, 0);
}
static inline void buf_wipep(struct buf *b)
{
	buf_done(b, 1);
}
/* A local buffer freed when it leaves scope (_cleanup_buf_wipe_: wiped first, for secrets):
 * _cleanup_buf_ struct buf b = BUF_INIT(cap); */
#define _cleanup_buf_ _cleanup_(buf_donep)
#define _cleanup_buf_wipe_ _cleanup_(buf_wipep)

static inline const uint8_t *buf_head(const struct buf *b)
{
	return b->data + b->off;
}
static inline size_t buf_len(const struct buf *b)
{
	return b->len;
}
static inline size_t buf_room(const struct buf *b)
{
	return b->cap - b->len;
}

/* Append n bytes. 0, -ENOBUFS past the cap (nothing appended), or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Reserve n writable bytes at the tail; returns a pointer or NULL (cap/ENOMEM). Commit with
 * buf_commit(b, used) where used <= n. */
uint8_t *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t used);
/* Drop n bytes (n <= len) from the front. */
void buf_consume(struct buf *b, size_t n);
