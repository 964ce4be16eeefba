/* test-httpmcp.c - finding the response to our request in a streamable-HTTP MCP server's answer
 * (httpmcp_find_response): a JSON body, a JSON array, an SSE stream with other messages first,
 * CRLF line ends, multi-line data, and bodies with no match or broken JSON; the guard that keeps
 * allowed names away from this host's loopback and link-local addresses. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "httpmcp.h"

static json_t *find(const char *body, int sse, json_int_t id)
{
	json_t *want = json_integer(id);
	json_t *r = httpmcp_find_response(body, strlen(body), sse, want);
	json_decref(want);
	return r;
}

static void expect_result(json_t *m, const char *key, const char *value)
{
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(json_object_get(m, "result"), key)),
			    value);
	json_decref(m);
}

static void test_json(void **state)
{
	expect_result(find("{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"a\":\"b\"}}", 0, 7), "a",
		      "b");
	assert_null(find("{\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{}}", 0, 7));
	assert_null(find("{\"jsonrpc\":\"2.0\",\"id\":\"7\",\"result\":{}}", 0, 7)); /* "7" != 7 */
	expect_result(
		find("[{\"id\":1,\"method\":\"x\"},{\"id\":3,\"result\":{\"k\":\"v\"}}]", 0, 3),
		"k", "v");
	assert_null(find("[{\"id\":3,\"method\":\"x\"}]", 0, 3)); /* a request, not our answer */
	assert_null(find("{\"id\":3,\"result\":{}", 0, 3));
	assert_null(find("{\"id\":3,\"id\":3,\"result\":{}}", 0, 3)); /* duplicate keys */
	assert_null(find("", 0, 3));
	json_t *want = json_integer(1);
	assert_null(httpmcp_find_response(NULL, 0, 0, want));
	json_decref(want);
	(void)state;
}

static void test_sse(void **state)
{
	expect_result(find("event: message\ndata: {\"id\":2,\"result\":{\"t\":\"x\"}}\n\n", 1, 2),
		      "t", "x");
	/* a notification and a server request first, CRLF line ends, a comment, an id */
	expect_result(
		find(": hi\r\nid: 1\r\ndata: {\"method\":\"notifications/progress\"}\r\n\r\n"
		     "data: {\"id\":9,\"method\":\"ping\"}\r\n\r\n"
		     "event: message\r\ndata: {\"id\":9,\r\ndata: \"result\":{\"t\":\"y\"}}\r\n"
		     "\r\n",
		     1, 9),
		"t", "y");
	/* the last event without its blank line still counts */
	expect_result(find("data: {\"id\":4,\"result\":{\"t\":\"z\"}}", 1, 4), "t", "z");
	assert_null(find("data: {\"id\":4,\"result\":{}}\n\n", 1, 5));
	assert_null(find("data: not json\n\n", 1, 5));
	assert_null(find("\n\n\n", 1, 5));
	(void)state;
}

static int local4(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return httpmcp_addr_is_local((struct sockaddr *)&a);
}

static int local6(const char *ip)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return httpmcp_addr_is_local((struct sockaddr *)&a);
}

static void test_guard(void **state)
{
	assert_true(local4("127.0.0.1"));
	assert_true(local4("127.255.0.9"));
	assert_true(local4("169.254.169.254")); /* cloud metadata */
	assert_true(local4("0.0.0.0"));
	assert_false(local4("10.0.0.1")); /* private networks may hold legitimate MCP servers */
	assert_false(local4("93.184.216.34"));
	assert_false(local4("128.0.0.1"));
	assert_true(local6("::1"));
	assert_true(local6("::"));
	assert_true(local6("fe80::1"));
	assert_true(local6("::ffff:127.0.0.1"));
	assert_true(local6("::ffff:169.254.1.1"));
	assert_false(local6("::ffff:8.8.8.8"));
	assert_false(local6("2001:db8::1"));
	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_true(httpmcp_addr_is_local(&un));
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_sse),
		cmocka_unit_test(test_guard),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
