/* frameio.c - bounded frame reader and buffer flushing over non-blocking fds.
 *
 * Trust boundary: the bytes read here come from the host (an exec or control connection) and
 * are hostile until proto_frame_parse and the proto decoders accept them; the reader's buffer is
 * capped at one maximal frame. Runs in the agent main process (control) and in each exec session
 * process.
 */
#include "frameio.h"

#include "fdutil.h"
#include "macro.h"
#include "proto.h"

#define FRAME_READ_CHUNK (128u * 1024u)

void frame_reader_init(struct frame_reader *fr)
{
	buf_init(&fr->in, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
}

void frame_reader_done(struct frame_reader *fr)
{
	buf_done(&fr->in, 0);
}

ssize_t frame_reader_fill(struct frame_reader *fr, int fd)
{
	size_t want = MIN(buf_room(&fr->in), (size_t)FRAME_READ_CHUNK);
	if (want == 0)
		return -ENOBUFS;
	uint8_t *p = buf_reserve(&fr->in, want);
	if (!p)
		return -ENOMEM;
	ssize_t k = fd_read_some(fd, p, want);
	if (k > 0)
		buf_commit(&fr->in, (size_t)k);
	return k;
}

int frame_reader_peek(struct frame_reader *fr, struct frame *ret)
{
	struct frame f;
	ssize_t k =
		proto_frame_parse(buf_head(&fr->in), buf_len(&fr->in), &f.type, &f.payload, &f.len);
	if (k <= 0)
		return (int)k;
	f.size = (size_t)k;
	*ret = f;
	return 1;
}

void frame_reader_consume(struct frame_reader *fr, const struct frame *f)
{
	buf_consume(&fr->in, f->size);
}

int buf_flush_fd(struct buf *b, int fd)
{
	while (buf_len(b) > 0) {
		ssize_t k = write(fd, buf_head(b), buf_len(b));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return -EAGAIN;
			return negative_errno();
		}
		buf_consume(b, (size_t)k);
	}
	return 0;
}
