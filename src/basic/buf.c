/* buf.c - bounded byte buffer. Caller's thread; no locking. */
#include "buf.h"
#include "macro.h"

void buf_init(struct buf *b, size_t cap)
{
	*b = (struct buf){ .cap = cap };
}

void buf_done(struct buf *b, int wipe)
{
	if (wipe)
		explicit_wipe(b->data, b->alloc);
	free(b->data);
	buf_init(b, b->cap);
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
	if (n > b->cap - b->len)
		return NULL;
	if (b->off + b->len + n <= b->alloc)
		return b->data + b->off + b->len;
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
		if (b->len + n <= b->alloc)
			return b->data + b->len;
	}
	size_t want = MAX(b->alloc * 2, (size_t)256);
	while (want < b->len + n)
		want *= 2;
	want = MIN(want, b->cap);
	uint8_t *p = realloc(b->data, want);
	if (!p)
		return NULL;
	b->data = p;
	b->alloc = want;
	return b->data + b->len;
}

void buf_commit(struct buf *b, size_t used)
{
	b->len += used;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n > b->cap - b->len)
		return -ENOBUFS;
	if (n == 0)
		return 0;
	uint8_t *dst = buf_reserve(b, n);
	if (!dst)
		return -ENOMEM;
	memcpy(dst, p, n);
	buf_commit(b, n);
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = 0;
		b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}
