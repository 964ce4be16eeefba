/* ws.c - the WebSocket frame reader (ws.h).
 *
 * Frames: FIN, RSV1-3, opcode; MASK and a 7-bit length, or 126 + 16 bits, or 127 + 63 bits;
 * the masking key; the payload. A control frame (close, ping, pong) has FIN set and at most 125
 * bytes and may come between the frames of a fragmented message; a data frame other than a
 * continuation may not start while a message is open, and a continuation may not come without
 * one. RSV2/RSV3, RSV1 on a continuation or a control frame and unknown opcodes are protocol
 * errors; RSV1 on a message's first frame means permessage-deflate (the message is flagged
 * compressed; this reader does not inflate).
 *
 * Trust boundary: see ws.h. Pure.
 */
#include "ws.h"

#include <errno.h>
#include <string.h>

#include "macro.h"

#define WS_CHUNK 4096u /* unmasked in pieces of at most this much */

void ws_reader_init(struct ws_reader *w, ws_data_fn fn, void *userdata)
{
	memset(w, 0, sizeof(*w));
	w->msg_op = -1;
	w->on_data = fn;
	w->userdata = userdata;
}

static int fail(struct ws_reader *w)
{
	w->failed = true;
	return -EPROTO;
}

/* The header bytes still needed (after hdr_len of them), or 0 when it is complete. */
static size_t hdr_need(const struct ws_reader *w)
{
	if (w->hdr_len < 2)
		return 2 - w->hdr_len;
	size_t n = 2;
	uint8_t l7 = w->hdr[1] & 0x7f;
	n += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
	n += (w->hdr[1] & 0x80) ? 4 : 0;
	return n > w->hdr_len ? n - w->hdr_len : 0;
}

/* The frame's header is complete: check it and start its payload. */
static int frame_start(struct ws_reader *w)
{
	uint8_t b0 = w->hdr[0], b1 = w->hdr[1], l7 = b1 & 0x7f;
	int op = b0 & 0x0f;
	size_t i = 2;
	w->fin = (b0 & 0x80) != 0;
	w->masked = (b1 & 0x80) != 0;
	if (b0 & 0x30)
		return fail(w); /* RSV2/RSV3: no extension we allow uses them */
	if (w->require_mask && (!w->masked || (b0 & 0x40)))
		return fail(w);
	if (l7 == 126) {
		w->left = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
		i = 4;
	} else if (l7 == 127) {
		w->left = 0;
		for (int k = 0; k < 8; k++)
			w->left = w->left << 8 | w->hdr[2 + k];
		if (w->left >> 63)
			return fail(w);
		i = 10;
	} else {
		w->left = l7;
	}
	if (w->masked)
		memcpy(w->mask, w->hdr + i, 4);
	w->mask_pos = 0;
	w->ctl_len = 0;
	w->control = op >= 8;
	if (w->control) {
		if (op > WS_OP_PONG || !w->fin || w->left > 125 || (b0 & 0x40))
			return fail(w);
		if (op == WS_OP_CLOSE)
			w->closed = true;
	} else if (op == WS_OP_CONT) {
		if (w->msg_op < 0 || (b0 & 0x40))
			return fail(w);
	} else if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
		if (w->msg_op >= 0)
			return fail(w);
		w->msg_op = op;
		w->msg_start = true;
		w->msg_compressed = (b0 & 0x40) != 0;
	} else {
		return fail(w);
	}
	w->in_frame = true;
	return 0;
}

/* Hand on k payload bytes of a data frame (the last ones of the frame when last). */
static void deliver(struct ws_reader *w, const uint8_t *p, size_t k, bool last)
{
	uint8_t tmp[WS_CHUNK];
	bool end = last && w->fin;
	do {
		size_t m = MIN(k, (size_t)WS_CHUNK);
		for (size_t i = 0; i < m; i++)
			tmp[i] = w->masked ? p[i] ^ w->mask[(w->mask_pos + i) & 3] : p[i];
		w->mask_pos = (unsigned)((w->mask_pos + m) & 3);
		p += m;
		k -= m;
		bool e = end && k == 0;
		if (w->on_data && (m > 0 || w->msg_start || e))
			w->on_data(w->userdata, w->msg_op, tmp, m, w->msg_start, e,
				   w->msg_compressed);
		w->msg_start = false;
	} while (k > 0);
	if (end) {
		w->messages++;
		w->msg_op = -1;
	}
}

int ws_reader_feed(struct ws_reader *w, const void *data, size_t n)
{
	const uint8_t *p = data;
	if (w->failed)
		return -EPROTO;
	while (n > 0 || (w->in_frame && w->left == 0)) {
		if (!w->in_frame) {
			size_t k = MIN(hdr_need(w), n);
			memcpy(w->hdr + w->hdr_len, p, k);
			w->hdr_len += k;
			p += k;
			n -= k;
			if (hdr_need(w) > 0)
				continue; /* more header: more bytes, or we are out of them */
			int r = frame_start(w);
			if (r < 0)
				return r;
			continue;
		}
		size_t k = (size_t)MIN((uint64_t)n, w->left);
		w->left -= k;
		if (!w->control) {
			deliver(w, p, k, w->left == 0);
		} else if (w->on_control) {
			for (size_t i = 0; i < k && w->ctl_len < sizeof(w->ctl); i++, w->ctl_len++)
				w->ctl[w->ctl_len] =
					w->masked ? p[i] ^ w->mask[w->ctl_len & 3] : p[i];
		}
		p += k;
		n -= k;
		if (w->left == 0 && w->control && w->on_control)
			w->on_control(w->userdata, w->hdr[0] & 0x0f, w->ctl, w->ctl_len);
		if (w->left == 0) {
			w->in_frame = false;
			w->hdr_len = 0;
		}
	}
	return 0;
}
