/* test-sse.c - the Server-Sent Events parser (src/egress/sse.c): the WHATWG examples, line
 * endings (CRLF split across chunks, lone CR), multi-line data, comments, ids and retry, the
 * BOM, events without data, the oversize cap, end of stream (spec discard vs flush), and that
 * every way of splitting a stream into chunks gives the same events. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "sse.h"

/* Events rendered as text: "type|id|data|O\n" per event (O when oversize). */
struct log {
	char s[65536];
	size_t n;
};

static void on_event(void *userdata, const struct sse_event *ev)
{
	struct log *l = userdata;
	int k = snprintf(l->s + l->n, sizeof(l->s) - l->n, "%s|%s|%.*s|%s\n", ev->type, ev->id,
			 (int)ev->data_len, ev->data, ev->oversize ? "O" : "");
	assert_true(k > 0 && (size_t)k < sizeof(l->s) - l->n);
	assert_int_equal(strlen(ev->data), ev->data_len);
	l->n += (size_t)k;
}

/* Parse text in chunks of `step` bytes (0 = one chunk), then flush or end. */
static void run(const char *text, size_t len, size_t step, size_t max, bool flush, struct log *l)
{
	_cleanup_sse_free_ struct sse_parser *s = sse_new(max, on_event, l);
	assert_non_null(s);
	l->n = 0;
	l->s[0] = 0;
	if (step == 0)
		step = len ? len : 1;
	for (size_t i = 0; i < len; i += step)
		assert_int_equal(sse_feed(s, text + i, MIN(step, len - i)), 0);
	if (flush)
		sse_flush(s);
	else
		sse_end(s);
}

/* Every split size gives the same events as one chunk; returns that log. */
static void check(const char *text, size_t max, bool flush, const char *want)
{
	struct log one, other;
	size_t len = strlen(text);
	run(text, len, 0, max, flush, &one);
	assert_string_equal(one.s, want);
	for (size_t step = 1; step <= len + 1 && step < 64; step++) {
		run(text, len, step, max, flush, &other);
		assert_string_equal(other.s, want);
	}
}

static void test_basic(void **state)
{
	/* WHATWG examples */
	check("data: YHOO\ndata: +2\ndata: 10\n\n", 0, false, "message||YHOO\n+2\n10|\n");
	check(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
	      "data:  third event\n\n",
	      0, false,
	      "message|1|first event|\n"
	      "message||second event|\n"
	      "message|| third event|\n");
	check("data\n\ndata\ndata\n\ndata:", 0, false, "message|||\nmessage||\n|\n");
	check("data:test\n\ndata: test\n\n", 0, false, "message||test|\nmessage||test|\n");
	/* event type; an empty event field means "message" */
	check("event: message_start\ndata: {\"a\":1}\n\nevent:\ndata: x\n\n", 0, false,
	      "message_start||{\"a\":1}|\nmessage||x|\n");
	/* a field without a colon, unknown fields, a colon in the value */
	check("foo: bar\ndata: a:b: c\nbaz\n\n", 0, false, "message||a:b: c|\n");
	/* an event with a type but no data is not dispatched, and its type does not leak */
	check("event: ping\n\ndata: x\n\n", 0, false, "message||x|\n");
}

static void test_line_endings(void **state)
{
	const char *want = "e||a\nb|\ne||c|\n";
	check("event: e\r\ndata: a\r\ndata: b\r\n\r\nevent: e\r\ndata: c\r\n\r\n", 0, false, want);
	check("event: e\rdata: a\rdata: b\r\revent: e\rdata: c\r\r", 0, false, want);
	check("event: e\ndata: a\r\ndata: b\r\revent: e\ndata: c\n\r\n", 0, false, want);
	/* CR LF split across two feeds: one line end, not two */
	struct log l;
	_cleanup_sse_free_ struct sse_parser *s = sse_new(0, on_event, &l);
	l.n = 0;
	l.s[0] = 0;
	sse_feed(s, "data: x\r", 8);
	assert_int_equal(l.n, 0);
	sse_feed(s, "\ndata: y\r", 9);
	assert_int_equal(l.n, 0);
	sse_feed(s, "\n\r", 2);
	assert_string_equal(l.s, "message||x\ny|\n");
	sse_feed(s, "\n", 1); /* the LF of that CR LF: not another blank line */
	assert_int_equal(sse_events(s), 1);
}

static void test_id_retry_bom(void **state)
{
	struct log l;
	_cleanup_sse_free_ struct sse_parser *s = sse_new(0, on_event, &l);
	l.n = 0;
	/* the id persists across events; an id containing NUL is ignored */
	static const char t[] = "\xef\xbb\xbfid: 7\ndata: a\n\ndata: b\n\nid: 8\0x\nretry: 2500\n"
				"data: c\n\nretry: 12x\nretry:\nid\ndata: d\n\n";
	size_t n = sizeof(t) - 1;
	/* the BOM split across feeds */
	sse_feed(s, t, 1);
	sse_feed(s, t + 1, 2);
	sse_feed(s, t + 3, n - 3);
	assert_string_equal(l.s, "message|7|a|\nmessage|7|b|\nmessage|7|c|\nmessage||d|\n");
	assert_int_equal(sse_retry_ms(s), 2500);

	/* a BOM is stripped only at the very start; a partial BOM is content */
	check("data: a\n\n\xef\xbb\xbf"
	      "data: b\n\n",
	      0, false, "message||a|\n");
	check("\xef\xbb"
	      "data: a\n\n",
	      0, false, "");
	check("\xef\xbb\xbf\xef\xbb\xbf"
	      "data: a\n\n",
	      0, false, "");

	_cleanup_sse_free_ struct sse_parser *s2 = sse_new(0, NULL, NULL);
	assert_int_equal(sse_retry_ms(s2), -1);
	sse_feed(s2, "retry: 99999999999999999999999\n", 31);
	assert_int_equal(sse_retry_ms(s2), -1);
	assert_int_equal(sse_feed(s2, NULL, 1), -EINVAL);
}

static void test_comments_multiline(void **state)
{
	check(": keep-alive\n:\n: another\ndata: {\ndata:   \"x\": 1\ndata: }\n: between\n\n", 0,
	      false, "message||{\n  \"x\": 1\n}|\n");
	/* data lines with empty values are lines too */
	check("data:\ndata:\n\n", 0, false, "message||\n|\n");
}

static void test_end_of_stream(void **state)
{
	/* the spec drops an unterminated event; flush dispatches it */
	check("data: a\n\ndata: b", 0, false, "message||a|\n");
	check("data: a\n\ndata: b", 0, true, "message||a|\nmessage||b|\n");
	check("data: a\n\ndata: b\n", 0, true, "message||a|\nmessage||b|\n");
	check("data: a\n\n", 0, true, "message||a|\n");
	check("event: x\n", 0, true, "");
}

static void test_oversize(void **state)
{
	/* max 32 bytes per event: a big event is dropped and flagged, the next one is fine */
	char big[256];
	int k = snprintf(big, sizeof(big), "data: %s\ndata: ok\n\ndata: small\n\n",
			 "0123456789012345678901234567890123456789");
	assert_true(k > 0);
	check(big, 32, false, "message|||O\nmessage||small|\n");
	/* many lines that together pass the cap */
	check("data: 0123456789\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n"
	      "data: after\n\n",
	      32, false, "message|||O\nmessage||after|\n");
	/* an overlong event type or id marks the event */
	char t[600];
	memset(t, 'a', sizeof(t));
	memcpy(t, "event: ", 7);
	memcpy(t + 7 + SSE_MAX_TYPE + 1, "\ndata: x\n\n", 11);
	check(t, 0, false, "message|||O\n");
	/* the default cap: 1 MiB of data passes, 1 MiB + 1 line does not */
	size_t n = SSE_DEFAULT_MAX_EVENT + 64;
	char *huge = malloc(n + 1);
	assert_non_null(huge);
	memcpy(huge, "data: ", 6);
	memset(huge + 6, 'x', n - 6 - 2);
	memcpy(huge + n - 2, "\n\n", 3);
	struct log l;
	run(huge, n, 0, 0, false, &l);
	assert_string_equal(l.s, "message|||O\n");
	run(huge, n, 4096, 0, false, &l);
	assert_string_equal(l.s, "message|||O\n");
	/* just under the cap */
	size_t m = SSE_DEFAULT_MAX_EVENT - 16;
	memset(huge + 6, 'y', m - 6 - 2);
	memcpy(huge + m - 2, "\n\n", 3);
	_cleanup_sse_free_ struct sse_parser *s = sse_new(0, NULL, NULL);
	sse_feed(s, huge, m);
	assert_int_equal(sse_events(s), 1);
	assert_int_equal(sse_oversize(s), 0);
	free(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),	      cmocka_unit_test(test_line_endings),
		cmocka_unit_test(test_id_retry_bom),  cmocka_unit_test(test_comments_multiline),
		cmocka_unit_test(test_end_of_stream), cmocka_unit_test(test_oversize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
