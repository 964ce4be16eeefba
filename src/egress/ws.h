/* ws.h - a WebSocket (RFC 6455) frame reader for one direction of a relayed connection: it hands
 * on the payload of data messages, unmasked, as it arrives, so that the proxy can read model
 * calls made over a WebSocket (the OpenAI Responses API's socket transport, which Codex uses).
 * The proxy relays the bytes unchanged whatever this reader makes of them.
 *
 * Trust boundary: the bytes come from the guest (client frames) or an upstream server; every
 * length is checked and the first protocol error stops the reader for good (it then ignores the
 * rest). Pure: no I/O, no allocation. One reader per direction; not thread-safe. The web
 * gateway (src/webgw) reads its browsers' frames with it too (require_mask, on_control).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	WS_OP_CONT = 0,
	WS_OP_TEXT = 1,
	WS_OP_BINARY = 2,
	WS_OP_CLOSE = 8,
	WS_OP_PING = 9,
	WS_OP_PONG = 10,
};

/* A piece of a data message (text or binary), in order: start on its first piece, end on its
 * last (a message may be one piece with both, and pieces may be empty). compressed: the message
 * uses permessage-deflate (RSV1 on its first frame); its bytes are handed on as they are. */
typedef void (*ws_data_fn)(void *userdata, int opcode, const uint8_t *p, size_t n, bool start,
			   bool end, bool compressed);

/* A complete control frame (close, ping, pong), unmasked: at most 125 bytes. */
typedef void (*ws_control_fn)(void *userdata, int opcode, const uint8_t *p, size_t n);

struct ws_reader {
	uint8_t hdr[14];
	size_t hdr_len;
	uint64_t left; /* payload bytes still to come in this frame */
	uint8_t mask[4];
	unsigned mask_pos;
	bool masked, fin, control, in_frame, msg_start;
	int msg_op; /* the data message being read, or -1 */
	bool msg_compressed;
	bool failed;
	bool closed; /* a close frame was seen */
	uint64_t messages;
	ws_data_fn on_data;
	void *userdata;
	/* set after ws_reader_init, both optional: */
	ws_control_fn on_control; /* control frames are handed on (else only skipped) */
	bool require_mask;	  /* a server reading a client: an unmasked frame or RSV1 (no
				   * extension was negotiated) is a protocol error (RFC 6455 5.1) */
	uint8_t ctl[125];
	size_t ctl_len;
};

void ws_reader_init(struct ws_reader *w, ws_data_fn fn, void *userdata);
/* Read n more bytes. 0, or -EPROTO once the stream broke the protocol (reported once; later
 * calls return -EPROTO and read nothing). */
int ws_reader_feed(struct ws_reader *w, const void *p, size_t n);
