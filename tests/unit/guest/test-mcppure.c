/* test-mcppure.c - capsem-mcp-relay's pure parts (mcppure.c): which lines are requests,
 * notifications and responses and what their ids are, the ids' matching keys, the request
 * table, the error line and the preamble. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mcppure.h"

static enum mcppure_kind scan(const char *s, struct mcppure_msg *m)
{
	return mcppure_scan(s, strlen(s), m);
}

static void expect(const char *line, enum mcppure_kind kind, const char *id)
{
	struct mcppure_msg m;
	enum mcppure_kind k = scan(line, &m);
	if (k != kind || strcmp(m.id.text, id) != 0 || m.id.text_len != strlen(id))
		fail_msg("%s: got kind %d id [%s], want %d [%s]", line, k, m.id.text, kind, id);
	if (!id[0] && m.id.key_len != 0)
		fail_msg("%s: a key without an id", line);
}

/* The id of a one-line request with this id text. */
static struct mcppure_id id_of(const char *text)
{
	char line[400];
	struct mcppure_msg m;
	snprintf(line, sizeof(line), "{\"id\":%s,\"method\":\"m\"}", text);
	if (scan(line, &m) != MCPPURE_REQUEST)
		fail_msg("%s: not a request", line);
	return m.id;
}

static bool same_key(const char *a, const char *b)
{
	struct mcppure_id x = id_of(a), y = id_of(b);
	return x.key_len == y.key_len && memcmp(x.key, y.key, x.key_len) == 0;
}

static void test_keys(void **state)
{
	/* the gateway's JSON library re-encodes string ids: the keys must not care */
	assert_true(same_key("\"\\u00e9t\\u00E9\"", "\"\xc3\xa9t\xc3\xa9\""));
	assert_true(same_key("\"a\\/b\"", "\"a/b\""));
	assert_true(same_key("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""));
	assert_true(same_key("\"\\t\\n\\\"\"", "\"\\u0009\\u000a\\u0022\""));
	assert_true(same_key("\"\\ud800x\"", "\"\xef\xbf\xbdx\"")); /* lone surrogate */
	assert_false(same_key("1", "\"1\"")); /* a number and a string differ */
	assert_false(same_key("\"a\"", "\"b\""));
	assert_false(same_key("\"\\u0000\"", "\"\"")); /* NUL kept in the key */
	struct mcppure_id x = id_of("\"\\u0000\"");
	assert_int_equal(x.key_len, 2);
	x = id_of("-12");
	assert_int_equal(x.key_len, 4);
	assert_memory_equal(x.key, "n-12", 4);
	/* a maximal string id of escapes still fits */
	char big[MCPPURE_ID_MAX + 1];
	size_t n = 0;
	big[n++] = '"';
	while (n + 7 <= MCPPURE_ID_MAX)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "\\u00e9");
	big[n++] = '"';
	big[n] = 0;
	x = id_of(big);
	assert_true(x.key_len <= MCPPURE_ID_MAX);
	(void)state;
}

static void test_scan(void **state)
{
	expect("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}",
	       MCPPURE_REQUEST, "1");
	expect("{\"jsonrpc\":\"2.0\",\"id\":\"a b\",\"method\":\"tools/call\"}", MCPPURE_REQUEST,
	       "\"a b\"");
	expect(" { \"method\" : \"x\" , \"id\" : -12.5e+3 } ", MCPPURE_REQUEST, "-12.5e+3");
	expect("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
	       MCPPURE_NOTIFICATION, "");
	expect("{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"id\":99,\"method\":\"no\"}}",
	       MCPPURE_RESPONSE, "7"); /* nested "id"/"method" do not count */
	expect("{\"id\":\"q\\\"x\",\"error\":{}}", MCPPURE_RESPONSE, "\"q\\\"x\"");
	expect("{\"id\":null,\"method\":\"m\"}", MCPPURE_NOTIFICATION, "");
	expect("{\"id\":null,\"error\":{\"code\":1}}", MCPPURE_OTHER, "");
	expect("{\"id\":[1],\"method\":\"m\"}", MCPPURE_OTHER, "");
	expect("{\"id\":true,\"method\":\"m\"}", MCPPURE_OTHER, "");
	expect("{}", MCPPURE_OTHER, "");
	expect("{\"id\":1,\"id\":2,\"method\":\"m\"}", MCPPURE_REQUEST, "2"); /* last wins */
	/* not JSON objects, or not JSON */
	expect("", MCPPURE_INVALID, "");
	expect("[{\"id\":1,\"method\":\"m\"}]", MCPPURE_INVALID, "");
	expect("{\"id\":1,\"method\":\"m\"} x", MCPPURE_INVALID, "");
	expect("{\"id\":01,\"method\":\"m\"}", MCPPURE_INVALID, "");
	expect("{\"id\":1,}", MCPPURE_INVALID, "");
	expect("{\"id\":\"a\nb\",\"method\":\"m\"}", MCPPURE_INVALID, "");
	expect("{\"id\":\"\\x\",\"method\":\"m\"}", MCPPURE_INVALID, "");
	expect("{\"id\":\"\\u12g4\",\"method\":\"m\"}", MCPPURE_INVALID, "");
	expect("{\"a\":tru,\"id\":1}", MCPPURE_INVALID, "");
	expect("{\"a\":{\"b\":[1,2}],\"id\":1}", MCPPURE_INVALID, "");
	expect("{\"id\":1", MCPPURE_INVALID, "");
	/* an id longer than MCPPURE_ID_MAX is not tracked */
	char big[400];
	snprintf(big, sizeof(big), "{\"id\":\"%0200d\",\"method\":\"m\"}", 0);
	expect(big, MCPPURE_OTHER, "");
	/* nesting: MCPPURE_DEPTH_MAX levels below the top are fine, one more is not */
	char deep[400];
	size_t n = 0;
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"id\":1,\"a\":");
	for (unsigned i = 0; i < MCPPURE_DEPTH_MAX; i++)
		deep[n++] = '[';
	for (unsigned i = 0; i < MCPPURE_DEPTH_MAX; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = 0;
	expect(deep, MCPPURE_RESPONSE, "1");
	n = 0;
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"id\":1,\"a\":");
	for (unsigned i = 0; i <= MCPPURE_DEPTH_MAX; i++)
		deep[n++] = '[';
	for (unsigned i = 0; i <= MCPPURE_DEPTH_MAX; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	deep[n] = 0;
	expect(deep, MCPPURE_INVALID, "");
	/* not NUL-terminated: only n bytes are looked at */
	struct mcppure_msg m;
	assert_int_equal(mcppure_scan("{\"id\":12}", 8, &m), MCPPURE_INVALID);
	(void)state;
}

static void test_pending(void **state)
{
	struct mcppure_pending t = { 0 };
	struct mcppure_id one = id_of("1"), a = id_of("\"a\""), b = id_of("\"b\"");
	assert_int_equal(mcppure_pending_add(&t, &one), 0);
	assert_int_equal(mcppure_pending_add(&t, &a), 0);
	assert_int_equal(mcppure_pending_add(&t, &one), 0); /* duplicates are kept */
	assert_int_equal(t.n, 3);
	assert_true(mcppure_pending_remove(&t, &one));
	assert_true(mcppure_pending_remove(&t, &one));
	assert_false(mcppure_pending_remove(&t, &one));
	assert_false(mcppure_pending_remove(&t, &b));
	assert_string_equal(t.ids[0].text, "\"a\"");
	struct mcppure_id a2 = id_of("\"\\u0061\""); /* the same id, written otherwise */
	assert_true(mcppure_pending_remove(&t, &a2));
	assert_int_equal(t.n, 0);
	for (unsigned i = 0; i < MCPPURE_PENDING_MAX; i++)
		assert_int_equal(mcppure_pending_add(&t, &one), 0);
	assert_int_equal(mcppure_pending_add(&t, &one), -ENOBUFS);
	mcppure_pending_done(&t);
	assert_null(t.ids);
	(void)state;
}

static void test_lines(void **state)
{
	char out[300];
	ssize_t n = mcppure_error_line("\"x\"", 3, -32603, "capsem MCP gateway unavailable", out,
				       sizeof(out));
	assert_string_equal(out, "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":{\"code\":-32603,"
				 "\"message\":\"capsem MCP gateway unavailable\"}}\n");
	assert_int_equal(n, strlen(out));
	n = mcppure_error_line(NULL, 0, -32600, "message too large", out, sizeof(out));
	assert_non_null(strstr(out, "\"id\":null"));
	assert_int_equal(mcppure_error_line("1", 1, 1, "m", out, 10), -ENOBUFS);

	n = mcppure_preamble(77, "claude", out, sizeof(out));
	assert_string_equal(out, "CAPSEM-MCP-RELAY/1 pid=77 comm=claude\n");
	mcppure_preamble(1, "a b\n/c;d-e.f+g_h-very-long-name", out, sizeof(out));
	assert_string_equal(out, "CAPSEM-MCP-RELAY/1 pid=1 comm=a_b__c_d-e.f+g_\n");
	mcppure_preamble(1, "", out, sizeof(out));
	assert_string_equal(out, "CAPSEM-MCP-RELAY/1 pid=1 comm=-\n");
	mcppure_preamble(1, NULL, out, sizeof(out));
	assert_string_equal(out, "CAPSEM-MCP-RELAY/1 pid=1 comm=-\n");
	assert_int_equal(mcppure_preamble(1, "x", out, 8), -ENOBUFS);
	(void)n;
	(void)state;
}

/* capsem-snapshots prints the first text content of the tools/call answer */
static void test_result_text(void **state)
{
	(void)state;
	char out[64];
	bool err = true;
	const char *ok = "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"type\":"
			 "\"text\",\"text\":\"a\\\"b\\n\\u00e9\\ud83d\\ude00\\u0000\"}],"
			 "\"isError\":false}}";
	assert_int_equal(mcppure_result_text(ok, strlen(ok), out, sizeof(out), &err), 11);
	assert_string_equal(out, "a\"b\n\xc3\xa9\xf0\x9f\x98\x80?");
	assert_false(err);
	const char *bad = "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"type\":"
			  "\"text\",\"text\":\"no\"}],\"isError\":true}}";
	assert_int_equal(mcppure_result_text(bad, strlen(bad), out, sizeof(out), &err), 2);
	assert_true(err);
	/* cut at the buffer's size, still terminated */
	assert_int_equal(mcppure_result_text(ok, strlen(ok), out, 3, &err), 2);
	assert_string_equal(out, "a\"");
	const char *rpcerr = "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32603,"
			     "\"message\":\"x\"}}";
	assert_int_equal(mcppure_result_text(rpcerr, strlen(rpcerr), out, sizeof(out), &err),
			 -EBADMSG);
	const char *cut = "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"text\":\"ab";
	assert_int_equal(mcppure_result_text(cut, strlen(cut), out, sizeof(out), &err), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scan),	    cmocka_unit_test(test_keys),
		cmocka_unit_test(test_pending),	    cmocka_unit_test(test_lines),
		cmocka_unit_test(test_result_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
