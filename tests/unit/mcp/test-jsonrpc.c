/* test-jsonrpc.c - JSON-RPC 2.0 / MCP message library (src/mcp/jsonrpc.c): classification,
 * validation, error replies with and without ids, caps, builders and the newline reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "jsonrpc.h"
#include "macro.h"

static int parse(const char *s, struct jsonrpc_msg *m)
{
	return jsonrpc_parse(s, strlen(s), m);
}

/* Parse s, expect an invalid message with code; returns the error reply as compact text. */
static char *expect_invalid(const char *s, int code)
{
	struct jsonrpc_msg m;
	assert_int_equal(parse(s, &m), -EBADMSG);
	assert_int_equal(m.kind, JSONRPC_INVALID);
	assert_int_equal(m.error_code, code);
	assert_non_null(m.error_message);
	json_t *e = jsonrpc_error_for(&m);
	char *text = e ? json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(e);
	jsonrpc_msg_done(&m);
	return text;
}

static void test_request(void **state)
{
	struct jsonrpc_msg m;
	assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\","
			       "\"params\":{\"cursor\":\"x\"}}",
			       &m),
			 0);
	assert_int_equal(m.kind, JSONRPC_REQUEST);
	assert_string_equal(m.method, "tools/list");
	assert_int_equal(json_integer_value(m.id), 7);
	assert_true(json_is_object(m.params));
	jsonrpc_msg_done(&m);

	assert_int_equal(parse("{\"method\":\"ping\",\"id\":\"a\\u00e9\",\"jsonrpc\":\"2.0\"}", &m),
			 0);
	assert_int_equal(m.kind, JSONRPC_REQUEST);
	assert_string_equal(json_string_value(m.id), "a\xc3\xa9");
	assert_null(m.params);
	jsonrpc_msg_done(&m);

	/* params as an array (JSON-RPC allows it) and unknown members are tolerated */
	assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":-1,\"method\":\"x\",\"params\":[1],"
			       "\"extra\":true}",
			       &m),
			 0);
	assert_int_equal(m.kind, JSONRPC_REQUEST);
	assert_true(json_is_array(m.params));
	jsonrpc_msg_done(&m);
	jsonrpc_msg_done(NULL);
}

static void test_notification_and_responses(void **state)
{
	struct jsonrpc_msg m;
	assert_int_equal(
		parse("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", &m), 0);
	assert_int_equal(m.kind, JSONRPC_NOTIFICATION);
	assert_null(m.id);
	assert_null(jsonrpc_error_for(&m));
	jsonrpc_msg_done(&m);

	assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"ok\":1}}", &m), 0);
	assert_int_equal(m.kind, JSONRPC_RESPONSE);
	assert_true(json_is_object(m.result));
	jsonrpc_msg_done(&m);

	assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":null}", &m), 0);
	assert_int_equal(m.kind, JSONRPC_RESPONSE);
	assert_true(json_is_null(m.result));
	jsonrpc_msg_done(&m);

	assert_int_equal(parse("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
			       "\"message\":\"bad\",\"data\":[1]}}",
			       &m),
			 0);
	assert_int_equal(m.kind, JSONRPC_ERROR);
	assert_null(m.id);
	assert_int_equal(m.error_code, -32700);
	assert_string_equal(m.error_message, "bad");
	jsonrpc_msg_done(&m);
}

static void test_invalid(void **state)
{
	char *t;

	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":", JSONRPC_PARSE_ERROR);
	assert_true(strncmp(t, "{\"error\":{\"code\":-32700,\"message\":\"parse error: ", 48) == 0);
	assert_non_null(strstr(t, "},\"id\":null,\"jsonrpc\":\"2.0\"}"));
	free(t);
	free(expect_invalid("", JSONRPC_PARSE_ERROR));
	free(expect_invalid("{\"a\":1} x", JSONRPC_PARSE_ERROR));
	free(expect_invalid("{\"a\":\"\xff\"}", JSONRPC_PARSE_ERROR));	  /* not UTF-8 */
	free(expect_invalid("{\"a\":\"\\u0000\"}", JSONRPC_PARSE_ERROR)); /* NUL */
	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"method\":\"b\"}",
			   JSONRPC_PARSE_ERROR); /* duplicate keys */
	free(t);

	/* batches are refused (MCP 2025-06-18) */
	t = expect_invalid("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
			   JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":null"));
	assert_non_null(strstr(t, "batch"));
	free(t);
	free(expect_invalid("[]", JSONRPC_INVALID_REQUEST));
	free(expect_invalid("42", JSONRPC_INVALID_REQUEST));
	free(expect_invalid("\"x\"", JSONRPC_INVALID_REQUEST));
	free(expect_invalid("null", JSONRPC_INVALID_REQUEST));

	/* the id is kept when it could be read */
	t = expect_invalid("{\"jsonrpc\":\"1.0\",\"id\":5,\"method\":\"ping\"}",
			   JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":5"));
	free(t);
	t = expect_invalid("{\"id\":\"k\",\"method\":\"ping\"}", JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":\"k\""));
	free(t);
	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":12}", JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":9"));
	free(t);
	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"m\",\"params\":3}",
			   JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":9"));
	free(t);
	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"m\",\"result\":3}",
			   JSONRPC_INVALID_REQUEST);
	free(t);
	/* ids of the wrong type: null in a request, a real, an object, a boolean */
	const char *bad_ids[] = { "null", "1.5", "{}", "true", "[1]", "1e2" };
	for (size_t i = 0; i < ELEMENTSOF(bad_ids); i++) {
		char s[128];
		snprintf(s, sizeof(s), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"m\"}",
			 bad_ids[i]);
		t = expect_invalid(s, JSONRPC_INVALID_REQUEST);
		assert_non_null(strstr(t, "\"id\":null"));
		free(t);
	}
	/* an integer too big for jansson is a parse error */
	free(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":99999999999999999999999,\"method\":\"m\"}",
			    JSONRPC_PARSE_ERROR));
	/* neither method nor result/error: answered */
	t = expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":4}", JSONRPC_INVALID_REQUEST);
	assert_non_null(strstr(t, "\"id\":4"));
	free(t);

	/* broken responses are invalid but never answered */
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{}}",
				   JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"result\":1}", JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":1}",
				   JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"x\","
				   "\"message\":\"m\"}}",
				   JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}",
				   JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"x\"}",
				   JSONRPC_INVALID_REQUEST));
	assert_null(expect_invalid("{\"id\":1,\"result\":1}", JSONRPC_INVALID_REQUEST));
}

static void test_caps(void **state)
{
	char deep[512], *p = deep;
	struct jsonrpc_msg m;

	/* 64 levels (the message object + 63 nested arrays) pass, 65 do not */
	p += snprintf(p, 64, "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":");
	for (int i = 0; i < 63; i++)
		*p++ = '[';
	for (int i = 0; i < 63; i++)
		*p++ = ']';
	*p++ = '}';
	*p = 0;
	assert_int_equal(parse(deep, &m), 0);
	jsonrpc_msg_done(&m);
	assert_int_equal(jsonrpc_depth_check(deep, strlen(deep), 64), 0);
	assert_int_equal(jsonrpc_depth_check(deep, strlen(deep), 63), -E2BIG);
	free(expect_invalid("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
			    "[[[[[[[[[[",
			    JSONRPC_INVALID_REQUEST));
	/* brackets inside strings do not count, escaped quotes do not end strings */
	const char *s =
		"{\"jsonrpc\":\"2.0\",\"method\":\"m\\\"[[[[\",\"params\":{\"a\":\"{{{{\"}}";
	assert_int_equal(jsonrpc_depth_check(s, strlen(s), 2), 0);
	assert_int_equal(jsonrpc_parse_limits(s, strlen(s), 0, 2, &m), 0);
	jsonrpc_msg_done(&m);
	assert_int_equal(jsonrpc_parse_limits(s, strlen(s), 0, 1, &m), -EBADMSG);
	jsonrpc_msg_done(&m);

	assert_int_equal(jsonrpc_parse_limits(s, strlen(s), 10, 0, &m), -EBADMSG);
	assert_int_equal(m.error_code, JSONRPC_INVALID_REQUEST);
	assert_string_equal(m.error_message, "message too large");
	jsonrpc_msg_done(&m);
}

static void test_build(void **state)
{
	json_t *id = json_integer(12);
	_cleanup_free_ char *t1 = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL, *t5 = NULL;
	size_t n;

	json_t *r = jsonrpc_result(id, json_pack("{s:i}", "a", 1));
	assert_int_equal(jsonrpc_dump(r, &t1, &n), 0);
	assert_int_equal(n, strlen(t1));
	assert_string_equal(t1, "{\"jsonrpc\":\"2.0\",\"id\":12,\"result\":{\"a\":1}}\n");
	json_decref(r);

	r = jsonrpc_result(NULL, NULL);
	assert_int_equal(jsonrpc_dump(r, &t2, &n), 0);
	assert_string_equal(t2, "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}\n");
	json_decref(r);

	r = jsonrpc_error(id, JSONRPC_METHOD_NOT_FOUND, NULL, json_string("x\ny"));
	assert_int_equal(jsonrpc_dump(r, &t3, &n), 0);
	assert_string_equal(t3, "{\"jsonrpc\":\"2.0\",\"id\":12,\"error\":{\"code\":-32601,"
				"\"message\":\"Method not found\",\"data\":\"x\\ny\"}}\n");
	assert_null(memchr(t3, '\n', n - 1)); /* one line */
	json_decref(r);

	r = jsonrpc_request(id, "tools/call", json_pack("{s:s}", "name", "x"));
	assert_int_equal(jsonrpc_dump(r, &t4, &n), 0);
	assert_string_equal(t4, "{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/call\","
				"\"params\":{\"name\":\"x\"}}\n");
	json_decref(r);

	r = jsonrpc_notification("notifications/cancelled", NULL);
	assert_int_equal(jsonrpc_dump(r, &t5, &n), 0);
	assert_string_equal(t5, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\"}\n");
	json_decref(r);

	/* round trip: what we build parses as what it is */
	struct jsonrpc_msg m;
	assert_int_equal(jsonrpc_parse(t3, strlen(t3), &m), 0); /* "\n" is JSON whitespace */
	assert_int_equal(m.kind, JSONRPC_ERROR);
	assert_int_equal(m.error_code, JSONRPC_METHOD_NOT_FOUND);
	jsonrpc_msg_done(&m);
	assert_int_equal(jsonrpc_parse(t4, strlen(t4) - 1, &m), 0);
	assert_int_equal(m.kind, JSONRPC_REQUEST);
	jsonrpc_msg_done(&m);

	assert_string_equal(jsonrpc_code_text(JSONRPC_INVALID_PARAMS), "Invalid params");
	assert_string_equal(jsonrpc_code_text(-32000), "Server error");
	assert_int_equal(json_integer_value(id), 12);
	assert_int_equal(id->refcount, 1); /* borrowed, never kept */
	json_decref(id);
}

static void test_ids(void **state)
{
	json_t *a = json_integer(1), *b = json_string("1"), *c = json_integer(1),
	       *d = json_string("1"), *e = json_real(1.0), *f = json_stringn("1\0x", 3);
	assert_true(jsonrpc_id_equal(a, c));
	assert_true(jsonrpc_id_equal(b, d));
	assert_false(jsonrpc_id_equal(a, b));
	assert_false(jsonrpc_id_equal(b, a));
	assert_false(jsonrpc_id_equal(a, e));
	assert_false(jsonrpc_id_equal(b, f));
	assert_false(jsonrpc_id_equal(NULL, NULL));
	assert_true(jsonrpc_id_valid(a));
	assert_false(jsonrpc_id_valid(e));
	assert_false(jsonrpc_id_valid(json_null()));
	json_decref(a), json_decref(b), json_decref(c), json_decref(d), json_decref(e),
		json_decref(f);
}

/* Feed all of s (in pieces of step bytes) and collect the events as "L:<line>" / "BIG". */
static void feed_all(struct jsonrpc_reader *rd, const char *s, size_t n, size_t step, char *out,
		     size_t outn)
{
	size_t used = 0, o = 0;
	out[0] = 0;
	while (used < n) {
		size_t piece = MIN(step, n - used);
		size_t k = jsonrpc_reader_feed(rd, s + used, piece);
		assert_true(k <= piece);
		used += k;
		const char *line;
		size_t len;
		int st = jsonrpc_reader_line(rd, &line, &len);
		if (st == JSONRPC_LINE_OK)
			o += (size_t)snprintf(out + o, outn - o, "L:%.*s|", (int)len, line);
		else if (st == JSONRPC_LINE_TOO_LARGE)
			o += (size_t)snprintf(out + o, outn - o, "BIG|");
		else
			assert_int_equal(k, piece); /* no event: everything was taken */
		assert_int_equal(jsonrpc_reader_line(rd, &line, &len), JSONRPC_LINE_NONE);
	}
	int st = jsonrpc_reader_finish(rd);
	const char *line;
	size_t len;
	assert_int_equal(jsonrpc_reader_line(rd, &line, &len), st);
	if (st == JSONRPC_LINE_OK)
		o += (size_t)snprintf(out + o, outn - o, "END:%.*s|", (int)len, line);
	else if (st == JSONRPC_LINE_TOO_LARGE)
		o += (size_t)snprintf(out + o, outn - o, "ENDBIG|");
}

static void test_reader(void **state)
{
	struct jsonrpc_reader rd;
	char out[512];
	const char *s = "one\ntwo\r\n\n\r\nthree-is-too-long\nfour\nfive";
	static const size_t steps[] = { 1, 2, 3, 5, 7, 1000 };

	for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
		jsonrpc_reader_init(&rd, 10);
		feed_all(&rd, s, strlen(s), steps[i], out, sizeof(out));
		assert_string_equal(out, "L:one|L:two|BIG|L:four|END:five|");
		jsonrpc_reader_done(&rd);
	}

	/* exactly max bytes pass, with or without "\r"; max + 1 do not */
	jsonrpc_reader_init(&rd, 4);
	feed_all(&rd, "abcd\nabcd\r\nabcde\nabcde\r\nx\r", 26, 3, out, sizeof(out));
	assert_string_equal(out, "L:abcd|L:abcd|BIG|BIG|END:x|");
	jsonrpc_reader_done(&rd);

	/* an oversized final line without a newline; a "\r" alone in the middle stays */
	jsonrpc_reader_init(&rd, 4);
	feed_all(&rd, "a\rb\nabcdefgh", 12, 100, out, sizeof(out));
	assert_string_equal(out, "L:a\rb|ENDBIG|");
	jsonrpc_reader_done(&rd);

	/* a huge line in one chunk is never buffered: memory stays at the cap */
	size_t big = 1u << 20;
	char *huge = malloc(big + 8);
	assert_non_null(huge);
	memset(huge, 'x', big);
	memcpy(huge + big, "\nok\n", 4);
	jsonrpc_reader_init(&rd, 100);
	feed_all(&rd, huge, big + 4, big + 4, out, sizeof(out));
	assert_string_equal(out, "BIG|L:ok|");
	assert_true(rd.line.alloc <= 101);
	jsonrpc_reader_done(&rd);
	free(huge);

	/* an event not taken is dropped by the next feed */
	jsonrpc_reader_init(&rd, 0);
	assert_int_equal(rd.max, JSONRPC_MAX_MESSAGE);
	assert_int_equal(jsonrpc_reader_feed(&rd, "a\nb\n", 4), 2);
	assert_int_equal(jsonrpc_reader_feed(&rd, "b\n", 2), 2);
	const char *line;
	size_t len;
	assert_int_equal(jsonrpc_reader_line(&rd, &line, &len), JSONRPC_LINE_OK);
	assert_int_equal(len, 1);
	assert_memory_equal(line, "b", 1);
	assert_int_equal(jsonrpc_reader_finish(&rd), JSONRPC_LINE_NONE);
	jsonrpc_reader_done(&rd);
	jsonrpc_reader_done(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request), cmocka_unit_test(test_notification_and_responses),
		cmocka_unit_test(test_invalid), cmocka_unit_test(test_caps),
		cmocka_unit_test(test_build),	cmocka_unit_test(test_ids),
		cmocka_unit_test(test_reader),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
