/* fuzz-chanmux.c - the channel mux (src/proto/chanmux.c) fed arbitrary bytes as the peer's
 * stream: frames are parsed one after another and given to a host mux (and the same bytes to a
 * guest mux); every DATA is consumed, streams the peer opens are accepted or refused by a bit of
 * the input, and the invariants are checked: never more open streams than the cap, never a
 * negative or oversized room, parse(append(f)) == f for every frame accepted. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "chanmux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(enum chanmux_side side, const uint8_t *data, size_t size)
{
	struct buf out = BUF_INIT(64u << 20);
	struct chanmux *m = NULL;
	if (chanmux_new(side, &out, &m) < 0)
		return;
	size_t off = 0;
	while (off < size) {
		struct chanmux_frame f, g;
		ssize_t k = chanmux_frame_parse(data + off, size - off, &f);
		if (k <= 0)
			break;
		struct buf re = BUF_INIT(CHANMUX_HDR + CHANMUX_MAX_DATA + 64);
		if (chanmux_frame_append(&re, &f) == 0) {
			if (chanmux_frame_parse(buf_head(&re), buf_len(&re), &g) !=
				    (ssize_t)buf_len(&re) ||
			    g.type != f.type || g.id != f.id || g.len != f.len)
				__builtin_trap();
		}
		buf_done(&re, 0);
		struct chanmux_ev ev;
		if (chanmux_input(m, &f, &out, &ev) < 0)
			break;
		if (ev.type == CHANMUX_EV_OPEN) {
			if (f.value & 1)
				(void)chanmux_accept(m, ev.id, &out);
			else
				(void)chanmux_refuse(m, ev.id, ECONNREFUSED, &out);
		} else if (ev.type == CHANMUX_EV_DATA) {
			(void)chanmux_consumed(m, ev.id, ev.len, &out);
			(void)chanmux_send(m, ev.id, ev.data, ev.len, &out);
		}
		if (chanmux_count(m) > CHANMUX_MAX_STREAMS ||
		    chanmux_room(m, ev.id) > CHANMUX_WINDOW)
			__builtin_trap();
		if (buf_len(&out) > (32u << 20))
			buf_consume(&out, buf_len(&out));
		off += (size_t)k;
	}
	chanmux_free(m);
	buf_done(&out, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(CHANMUX_SIDE_HOST, data, size);
	run(CHANMUX_SIDE_GUEST, data, size);
	return 0;
}
