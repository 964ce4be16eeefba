/* frameio.h - reading proto frames from, and writing buffered bytes to, non-blocking fds.
 *
 * A frame_reader owns one bounded buffer capped at PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD, i.e. at
 * most one maximal frame: a full buffer always holds a whole frame (or an over-long length that
 * frame_reader_peek rejects), so a peer can never make it grow further.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct frame_reader {
	struct buf in;
};

struct frame {
	uint16_t type;
	const uint8_t *payload; /* points into the reader; valid until the next fill */
	uint32_t len;
	size_t size; /* header + payload, for frame_reader_consume */
};

void frame_reader_init(struct frame_reader *fr);
void frame_reader_done(struct frame_reader *fr);
/* One read(2) into the free space. Bytes read (> 0), 0 at EOF, -EAGAIN, -ENOBUFS when the
 * buffer is full (consume first), or -errno. Invalidates payload pointers of earlier peeks. */
ssize_t frame_reader_fill(struct frame_reader *fr, int fd);
/* The first whole frame: 1 and *ret set, 0 when none is complete yet, -EMSGSIZE when the peer
 * announced a payload over PROTO_MAX_PAYLOAD (the stream cannot be resynchronised). */
int frame_reader_peek(struct frame_reader *fr, struct frame *ret);
void frame_reader_consume(struct frame_reader *fr, const struct frame *f);
static inline int frame_reader_full(const struct frame_reader *fr)
{
	return buf_room(&fr->in) == 0;
}

/* Write as much of b as the fd takes now and consume it. 0 when b is empty afterwards, -EAGAIN
 * when bytes remain, or -errno (-EPIPE etc.) on a write error. */
int buf_flush_fd(struct buf *b, int fd);
