/* chanmux.h - many host<->guest byte streams over one ordered byte stream (a virtio-serial port),
 * with per-stream flow control: the channel layer that lets a VM without vhost-user vsock (which
 * QEMU 7.2 cannot migrate) keep Capsem's ports (docs/PROTOCOL.md "Channel mux").
 *
 * Frame: u8 type | u8 flags (0) | u16 reserved (0) | u32 stream id | u32 payload length, all
 * big-endian, then the payload (at most CHANMUX_MAX_DATA bytes). Each side opens streams with
 * ids of its own half (the host's have bit 31 clear, the guest's set), so the two never collide.
 *
 *   HELLO   (id 0)  u32 version, then (the guest's, 8 bytes) a u32 nonce: the first frame each
 *                   side sends; the host answers a nonce with a HELLO carrying it
 *   OPEN    opener  u32 port, then a tag (0-32 bytes of [A-Za-z0-9._-]): connect to port
 *   ACCEPT  peer    the stream is open; each side may send CHANMUX_WINDOW bytes to start with
 *   REFUSE  peer    u32 errno (ECONNREFUSED: nobody listens there); the id is free again
 *   DATA    either  bytes; never more than the credit the receiver granted
 *   CREDIT  either  u32 n: the receiver consumed n more bytes, the sender may send n more
 *   SHUTW   either  the sender sends no more DATA (half close); the other direction goes on
 *   CLOSE   either  the stream is gone (flags 1: reset, data may have been lost); the id is free
 *                   once both sides sent CLOSE or one answered the other's
 *   PAUSE   host    (id 0) this mux session ends: every stream will be reset. The host sends
 *                   nothing after it; the guest answers PAUSED and from then on sends nothing
 *   PAUSED  guest   (id 0) the answer: no byte of the guest follows it. The byte stream now has
 *                   a clean frame boundary both ways (a VM is saved here, docs/PROTOCOL.md §10)
 *
 * After PAUSED the guest waits for a HELLO (from the same host after a failed save, or a new one
 * after a restore): it forgets every stream and answers HELLO, and a new session begins.
 *
 * The guest's end may start over (capsem-chan restarted) in the middle of a session: it sends a
 * HELLO with a fresh random nonce and skips what it reads until the host's HELLO carrying that
 * nonce (chanmux_sync: the bytes before it are the old session's, maybe from the middle of a
 * frame); the host, at that HELLO, forgets every stream (EV_RESET) and answers it. Since each
 * guest frame is one port write, the old process left the host at a frame boundary. Any other
 * HELLO breaks the mux.
 *
 * A peer that breaks the rules on a stream (DATA over its credit, DATA after SHUTW, a frame for
 * an id it may not use) gets that stream reset, not the whole mux; a malformed frame ends the
 * mux (the host then waits for the guest's end to start over, as above). Pure state machine on (ptr, len): no I/O, no
 * allocation per frame, libc only; shared by capsem-vm and the guest. Hostile input both ways.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../basic/buf.h"

#define CHANMUX_VERSION 1
#define CHANMUX_HDR 12u
#define CHANMUX_MAX_DATA (64u * 1024u)
/* The guest's DATA payloads: a frame fits one write to a virtio-serial port, which the kernel
 * takes whole or not at all (at most 32 KiB), so a capsem-chan that dies leaves no half frame */
#define CHANMUX_PORT_WRITE (32u * 1024u)
#define CHANMUX_GUEST_MAX_DATA (CHANMUX_PORT_WRITE - CHANMUX_HDR)
#define CHANMUX_HELLO_MAX (CHANMUX_HDR + 8u)
#define CHANMUX_WINDOW (256u * 1024u) /* bytes a side may have in flight on one stream */
#define CHANMUX_MAX_STREAMS 4096u     /* open streams per mux */
#define CHANMUX_TAG_MAX 32u
#define CHANMUX_GUEST_BIT 0x80000000u /* ids the guest opened */

enum chanmux_type {
	CHANMUX_HELLO = 1,
	CHANMUX_OPEN = 2,
	CHANMUX_ACCEPT = 3,
	CHANMUX_REFUSE = 4,
	CHANMUX_DATA = 5,
	CHANMUX_CREDIT = 6,
	CHANMUX_SHUTW = 7,
	CHANMUX_CLOSE = 8,
	CHANMUX_PAUSE = 9,
	CHANMUX_PAUSED = 10,
};
#define CHANMUX_CLOSE_RESET 1u /* CLOSE flags */

struct chanmux_frame {
	uint8_t type, flags;
	uint32_t id;
	const uint8_t *data; /* DATA: the bytes (pointing into the parsed buffer) */
	uint32_t len;
	uint32_t value;		       /* HELLO version, OPEN port, REFUSE errno, CREDIT n */
	uint32_t nonce;		       /* HELLO: the guest's (0: none) */
	char tag[CHANMUX_TAG_MAX + 1]; /* OPEN */
};

/* The frame at the front of (p, n): 0 when it is not whole yet, its size (> 0) with *ret filled,
 * or -EBADMSG (unknown type, nonzero reserved bits, a payload over CHANMUX_MAX_DATA or of the
 * wrong size for its type, a bad tag). */
ssize_t chanmux_frame_parse(const uint8_t *p, size_t n, struct chanmux_frame *ret);
/* Append a frame (f->data/len for DATA; value, tag as the type needs). 0 or a buf error. */
int chanmux_frame_append(struct buf *out, const struct chanmux_frame *f);

enum chanmux_side { CHANMUX_SIDE_HOST, CHANMUX_SIDE_GUEST };

/* What an input frame means for the caller. */
enum chanmux_event {
	CHANMUX_EV_NONE,     /* nothing to do (HELLO, a frame for a stream already reset) */
	CHANMUX_EV_OPEN,     /* the peer opens a stream to ev.port: accept or refuse it */
	CHANMUX_EV_ACCEPTED, /* our open succeeded */
	CHANMUX_EV_REFUSED,  /* our open failed with ev.value (errno); the stream is gone */
	CHANMUX_EV_DATA,     /* ev.data/ev.len arrived: hand them on, then chanmux_consumed() */
	CHANMUX_EV_WRITABLE, /* credit arrived: chanmux_room() grew */
	CHANMUX_EV_EOF,	     /* the peer sends no more data on the stream */
	CHANMUX_EV_CLOSED,   /* the peer closed (ev.flags: reset) or we were reset: stream gone */
	CHANMUX_EV_PAUSE,    /* (guest) the host pauses: answer chanmux_paused() */
	CHANMUX_EV_PAUSED,   /* (host) the guest sends nothing more */
	CHANMUX_EV_RESET,    /* a new session began: every stream is gone, HELLO sent (the guest
				after its pause; the host when the guest's end started over) */
};

struct chanmux_ev {
	enum chanmux_event type;
	uint32_t id, port, value, len;
	uint8_t flags;
	const uint8_t *data;
	const char *tag;
};

struct chanmux;

/* A mux for one side; *ret gets it, with HELLO appended to out. 0 or -ENOMEM. */
int chanmux_new(enum chanmux_side side, struct buf *out, struct chanmux **ret);
/* (guest) The same with nonce (not 0) in its HELLO: the session starts at the host's HELLO
 * carrying it, found with chanmux_sync. -EINVAL for the host. */
int chanmux_new_nonce(enum chanmux_side side, uint32_t nonce, struct buf *out,
		      struct chanmux **ret);
/* Where the HELLO carrying nonce (or, nonce 0: a guest's HELLO with any nonce) begins in (p, n):
 * 1 with *ret_skip its offset; 0 when it is not there, with *ret_skip the bytes that can be
 * dropped (all but a tail that may begin it). */
int chanmux_sync(const uint8_t *p, size_t n, uint32_t nonce, size_t *ret_skip);
/* The bytes of a HELLO with nonce (0: none) into p[CHANMUX_HELLO_MAX]: their number. */
size_t chanmux_hello_bytes(uint32_t nonce, uint8_t *p);
void chanmux_free(struct chanmux *m);

/* Take one parsed frame from the peer; replies it needs (a CLOSE for a misused stream) go to
 * out. 0 with *ret filled, or -EPROTO when the peer broke the mux itself (no HELLO first, a
 * version we do not speak): end the connection. */
int chanmux_input(struct chanmux *m, const struct chanmux_frame *f, struct buf *out,
		  struct chanmux_ev *ret);

/* Open a stream to the peer's port: *ret_id, OPEN appended. -ENOSPC at CHANMUX_MAX_STREAMS,
 * -EINVAL for a bad tag. */
int chanmux_open(struct chanmux *m, uint32_t port, const char *tag, struct buf *out,
		 uint32_t *ret_id);
/* Answer an EV_OPEN: accept (ACCEPT) or refuse with errno err (REFUSE; the id is forgotten). */
int chanmux_accept(struct chanmux *m, uint32_t id, struct buf *out);
int chanmux_refuse(struct chanmux *m, uint32_t id, uint32_t err, struct buf *out);

/* Bytes that may be sent on id now (0 for an unknown, unopened or shut stream, or once
 * paused). */
size_t chanmux_room(const struct chanmux *m, uint32_t id);
/* Send up to n bytes as DATA frames, at most chanmux_room(). The bytes taken (>= 0), or -ENOENT
 * (no such open stream), -EPIPE (we shut it). */
ssize_t chanmux_send(struct chanmux *m, uint32_t id, const void *p, size_t n, struct buf *out);
/* The local reader consumed n bytes that arrived on id: credit goes back to the peer (batched:
 * a CREDIT frame once half a window has been consumed). */
int chanmux_consumed(struct chanmux *m, uint32_t id, size_t n, struct buf *out);
/* We send no more data on id (SHUTW). */
int chanmux_shutdown(struct chanmux *m, uint32_t id, struct buf *out);
/* We are done with id (CLOSE, reset when set): it is forgotten here. */
int chanmux_close(struct chanmux *m, uint32_t id, int reset, struct buf *out);

/* (host) End the session: PAUSE appended; from now on nothing is sent (every call that would
 * emit a frame emits nothing: the streams are doomed). 0, -EINVAL on the guest's side. */
int chanmux_pause(struct chanmux *m, struct buf *out);
/* (guest) Answer EV_PAUSE: PAUSED appended, then nothing more until the next HELLO. */
int chanmux_paused(struct chanmux *m, struct buf *out);
/* 1 once this side sent PAUSE or PAUSED (and no HELLO began a new session since). */
int chanmux_is_paused(const struct chanmux *m);

/* Open streams now. */
size_t chanmux_count(const struct chanmux *m);
