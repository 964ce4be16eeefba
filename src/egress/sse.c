/* sse.c - incremental Server-Sent Events parser (rules in sse.h).
 *
 * A complete line inside one chunk is interpreted in place; only a line split across chunks is
 * copied into the line buffer until its end arrives. A CR at the end of a chunk remembers that
 * an LF at the start of the next one belongs to it. Every buffer is a capped struct buf, and the
 * line being read plus the event's data may not together exceed max_event: past that the event
 * is marked oversize, its data dropped and the rest of the overlong line skipped.
 *
 * Trust boundary: parses response bodies from upstream servers (hostile), on the side of the
 * proxy's relay. Thread: the caller's (capsem-vm's loop thread); the callback runs inside
 * sse_feed()/sse_flush() and must not free the parser.
 */
#include "sse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

struct sse_parser {
	sse_event_fn cb;
	void *userdata;
	size_t max;
	struct buf line; /* a line split across chunks */
	bool line_over;	 /* the current line did not fit: skip to its end */
	bool last_cr;	 /* the previous byte ended a line with CR */
	uint8_t bom;	 /* BOM bytes matched so far; 3 = past the stream's start */
	struct buf data; /* "data" values, each followed by LF */
	bool has_data;
	bool oversize;
	char type[SSE_MAX_TYPE + 1];
	char id[SSE_MAX_ID + 1];
	int64_t retry;
	uint64_t n_events, n_oversize;
};

static const uint8_t BOM[3] = { 0xef, 0xbb, 0xbf };

struct sse_parser *sse_new(size_t max_event, sse_event_fn cb, void *userdata)
{
	struct sse_parser *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cb = cb;
	s->userdata = userdata;
	s->max = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
	buf_init(&s->line, s->max);
	buf_init(&s->data, s->max + 1); /* + the NUL written at dispatch */
	s->retry = -1;
	return s;
}

void sse_free(struct sse_parser *s)
{
	if (!s)
		return;
	buf_done(&s->line, 0);
	buf_done(&s->data, 0);
	free(s);
}

int64_t sse_retry_ms(const struct sse_parser *s)
{
	return s->retry;
}

uint64_t sse_events(const struct sse_parser *s)
{
	return s->n_events;
}

uint64_t sse_oversize(const struct sse_parser *s)
{
	return s->n_oversize;
}

static void reset_event(struct sse_parser *s)
{
	buf_consume(&s->data, buf_len(&s->data));
	s->has_data = false;
	s->oversize = false;
	s->type[0] = 0;
}

static void mark_oversize(struct sse_parser *s)
{
	s->oversize = true;
	buf_consume(&s->data, buf_len(&s->data));
}

static void dispatch(struct sse_parser *s)
{
	if (!s->has_data && !s->oversize) {
		reset_event(s);
		return;
	}
	struct sse_event ev = {
		.type = s->type[0] ? s->type : "message",
		.id = s->id,
		.oversize = s->oversize,
		.data = "",
	};
	if (!s->oversize) {
		size_t n = buf_len(&s->data);
		if (n > 0)
			n--; /* the LF after the last line */
		/* the data buffer's cap leaves room for this byte */
		if (buf_append(&s->data, "", 1) == 0) {
			uint8_t *d = (uint8_t *)buf_head(&s->data);
			d[n] = 0;
			ev.data = (const char *)d;
			ev.data_len = n;
		} else {
			ev.oversize = true;
		}
	}
	s->n_events++;
	if (ev.oversize)
		s->n_oversize++;
	if (s->cb)
		s->cb(s->userdata, &ev);
	reset_event(s);
}

static bool is_field(const uint8_t *f, size_t n, const char *name)
{
	return n == strlen(name) && memcmp(f, name, n) == 0;
}

static void process_line(struct sse_parser *s, const uint8_t *l, size_t n)
{
	if (n == 0) {
		dispatch(s);
		return;
	}
	if (l[0] == ':')
		return; /* comment */
	const uint8_t *colon = memchr(l, ':', n);
	size_t fn = colon ? (size_t)(colon - l) : n;
	const uint8_t *v = colon ? colon + 1 : l + n;
	size_t vn = colon ? n - fn - 1 : 0;
	if (vn > 0 && v[0] == ' ') {
		v++;
		vn--;
	}

	if (is_field(l, fn, "data")) {
		s->has_data = true;
		if (s->oversize)
			return;
		if (buf_len(&s->data) + vn + 1 > s->max || buf_append(&s->data, v, vn) < 0 ||
		    buf_append(&s->data, "\n", 1) < 0)
			mark_oversize(s);
	} else if (is_field(l, fn, "event")) {
		if (vn > SSE_MAX_TYPE) {
			mark_oversize(s);
			return;
		}
		memcpy(s->type, v, vn);
		s->type[vn] = 0;
	} else if (is_field(l, fn, "id")) {
		if (memchr(v, 0, vn))
			return;
		if (vn > SSE_MAX_ID) {
			mark_oversize(s);
			return;
		}
		memcpy(s->id, v, vn);
		s->id[vn] = 0;
	} else if (is_field(l, fn, "retry")) {
		int64_t r = 0;
		if (vn == 0)
			return;
		for (size_t i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9' || r > (INT64_MAX - 9) / 10)
				return;
			r = r * 10 + (v[i] - '0');
		}
		s->retry = r;
	}
	/* any other field is ignored */
}

/* Append a piece of a line that continues in a later chunk (or ends in this one). */
static void line_append(struct sse_parser *s, const uint8_t *p, size_t n)
{
	if (s->line_over)
		return;
	if (buf_len(&s->line) + n + buf_len(&s->data) > s->max || buf_append(&s->line, p, n) < 0) {
		s->line_over = true;
		buf_consume(&s->line, buf_len(&s->line));
		mark_oversize(s);
	}
}

static void line_end(struct sse_parser *s, const uint8_t *p, size_t n)
{
	if (!s->line_over && buf_len(&s->line) == 0) {
		if (n + buf_len(&s->data) > s->max) {
			mark_oversize(s);
			return;
		}
		process_line(s, p, n);
		return;
	}
	if (n > 0)
		line_append(s, p, n);
	if (!s->line_over)
		process_line(s, buf_head(&s->line), buf_len(&s->line));
	buf_consume(&s->line, buf_len(&s->line));
	s->line_over = false;
}

static void feed(struct sse_parser *s, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (s->last_cr) {
			s->last_cr = false;
			if (p[0] == '\n') {
				p++;
				n--;
				continue;
			}
		}
		size_t i = 0;
		while (i < n && p[i] != '\n' && p[i] != '\r')
			i++;
		if (i == n) {
			line_append(s, p, n);
			return;
		}
		line_end(s, p, i);
		s->last_cr = p[i] == '\r';
		p += i + 1;
		n -= i + 1;
	}
}

int sse_feed(struct sse_parser *s, const void *data, size_t n)
{
	const uint8_t *p = data;
	if (!s || (!p && n))
		return -EINVAL;
	while (s->bom < 3 && n > 0) {
		if (p[0] == BOM[s->bom]) {
			s->bom++;
			p++;
			n--;
			continue;
		}
		/* not a BOM after all: the bytes matched so far are stream content */
		uint8_t m = s->bom;
		s->bom = 3;
		feed(s, BOM, m);
	}
	feed(s, p, n);
	return 0;
}

static void end_stream(struct sse_parser *s)
{
	if (s->bom > 0 && s->bom < 3)
		feed(s, BOM, s->bom);
	s->bom = 3;
}

void sse_end(struct sse_parser *s)
{
	if (!s)
		return;
	end_stream(s);
	buf_consume(&s->line, buf_len(&s->line));
	s->line_over = false;
	s->last_cr = false;
	reset_event(s);
}

void sse_flush(struct sse_parser *s)
{
	if (!s)
		return;
	end_stream(s);
	if (buf_len(&s->line) > 0 || s->line_over)
		line_end(s, NULL, 0);
	s->last_cr = false;
	dispatch(s);
}
