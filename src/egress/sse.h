/* sse.h - an incremental Server-Sent Events parser (WHATWG HTML, "Parsing an event stream").
 *
 * Bytes are fed in chunks split anywhere (inside a field, between the CR and LF of a CRLF);
 * the events produced are the same as for the whole stream in one piece. Lines end in CRLF, LF
 * or CR; a leading UTF-8 BOM is skipped; "event", "data" (several lines joined with "\n"),
 * "id" (ignored when it contains NUL) and "retry" (digits only) are understood, other fields and
 * ":" comments are ignored; a blank line dispatches the event if it has data (the spec's rule:
 * an event with only an "event:" line is not dispatched). Bytes are passed through as bytes
 * (no UTF-8 decoding).
 *
 * Bounded: one event (its data, plus the line being read) may take at most max_event bytes; a
 * bigger event is not kept: it is dispatched at its blank line with oversize set and no data,
 * and counted. Memory per parser is at most about 2 * max_event.
 *
 * End of stream: the spec discards an event that has no blank line after it (sse_end); sse_flush
 * instead dispatches it as if the blank line had arrived (a server that closed mid-stream).
 *
 * Pure: no I/O; the callback runs synchronously inside sse_feed/sse_flush. Not thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define SSE_DEFAULT_MAX_EVENT ((size_t)1 << 20)
#define SSE_MAX_TYPE 256 /* longer event types mark the event oversize */
#define SSE_MAX_ID 256	 /* longer ids mark the event oversize (and are not kept) */

/* One event; every pointer is borrowed for the duration of the callback. */
struct sse_event {
	const char *type; /* "message" when the event had no "event" field; NUL-terminated */
	const char *data; /* NUL-terminated (may also contain NULs: use data_len) */
	size_t data_len;
	const char *id; /* the stream's last event id so far ("" none); NUL-terminated */
	bool oversize;	/* the event was larger than max_event: data is "" */
};

typedef void (*sse_event_fn)(void *userdata, const struct sse_event *ev);

struct sse_parser;

/* A parser calling cb(userdata, ev) for each event. max_event 0 = SSE_DEFAULT_MAX_EVENT.
 * NULL on allocation failure. */
struct sse_parser *sse_new(size_t max_event, sse_event_fn cb, void *userdata);
void sse_free(struct sse_parser *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct sse_parser *, sse_free)
#define _cleanup_sse_free_ _cleanup_(sse_freep)

/* Feed n bytes. 0, or -EINVAL. (An allocation failure marks the current event oversize.) */
int sse_feed(struct sse_parser *s, const void *p, size_t n);
/* End of stream per the spec: a pending, undispatched event is discarded. */
void sse_end(struct sse_parser *s);
/* End of stream, leniently: a pending line is processed and a pending event dispatched. */
void sse_flush(struct sse_parser *s);

/* The last "retry" value in milliseconds, or -1 when none was given. */
int64_t sse_retry_ms(const struct sse_parser *s);
/* Events dispatched and events that were oversize (dispatched without data). */
uint64_t sse_events(const struct sse_parser *s);
uint64_t sse_oversize(const struct sse_parser *s);
