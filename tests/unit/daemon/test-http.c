/* test-http.c - capsemd's HTTP request parser: framing, caps, smuggling defences, chunked
 * bodies, query strings and the JSON depth check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "http.h"
#include "macro.h"

static ssize_t parse(const char *s, struct http_request *r)
{
	*r = (struct http_request){ 0 };
	return http_parse_head((const uint8_t *)s, strlen(s), r);
}

static void test_simple_get(void **state)
{
	struct http_request r;
	const char *s = "GET /vms/web?x=1 HTTP/1.1\r\nHost: capsemd\r\nX-Y:  spaced  \r\n\r\nBODY";
	assert_int_equal(parse(s, &r), (ssize_t)(strlen(s) - 4));
	assert_string_equal(r.method, "GET");
	assert_string_equal(r.path, "/vms/web");
	assert_string_equal(r.query, "x=1");
	assert_int_equal(r.minor, 1);
	assert_true(r.keep_alive);
	assert_false(r.has_length);
	assert_string_equal(http_header_get(&r, "host"), "capsemd");
	assert_string_equal(http_header_get(&r, "x-y"), "spaced");
	assert_null(http_header_get(&r, "missing"));
	assert_null(r.upgrade);
	http_request_done(&r);
}

static void test_incomplete(void **state)
{
	struct http_request r = { 0 };
	const char *s = "POST /vms HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
	for (size_t i = 0; i < strlen(s); i++)
		assert_int_equal(http_parse_head((const uint8_t *)s, i, &r), 0);
	assert_int_equal(http_parse_head((const uint8_t *)s, strlen(s), &r), (ssize_t)strlen(s));
	assert_true(r.has_length);
	assert_int_equal(r.content_length, 2);
	http_request_done(&r);
}

static void test_bare_lf_and_http10(void **state)
{
	struct http_request r;
	assert_true(parse("GET / HTTP/1.0\nConnection: keep-alive\n\n", &r) > 0);
	assert_int_equal(r.minor, 0);
	assert_true(r.keep_alive);
	http_request_done(&r);
	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	http_request_done(&r);
	assert_true(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	http_request_done(&r);
}

static void test_upgrade(void **state)
{
	struct http_request r;
	assert_true(parse("POST /vms/a/exec HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
			  "Upgrade: capsem-exec/1\r\nContent-Length: 0\r\n\r\n",
			  &r) > 0);
	assert_string_equal(r.upgrade, "capsem-exec/1");
	http_request_done(&r);
	/* Upgrade without Connection: upgrade is no upgrade */
	assert_true(parse("POST / HTTP/1.1\r\nUpgrade: capsem-exec/1\r\n\r\n", &r) > 0);
	assert_null(r.upgrade);
	http_request_done(&r);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"GET\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.1 extra\r\n\r\n",
		"GET noslash HTTP/1.1\r\n\r\n",
		" GET / HTTP/1.1\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
		"GET / HTTP/1.1\r\nSpace Before: x\r\n\r\n",
		"GET / HTTP/1.1\r\nName : x\r\n\r\n",
		"GET / HTTP/1.1\r\n: empty\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
		"chunked\r\n\r\n",
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n",
		"GET /a b HTTP/1.1\r\n\r\n",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct http_request r;
		ssize_t k = parse(bad[i], &r);
		if (k != -EBADMSG)
			fprintf(stderr, "case %zu: %zd\n", i, k);
		assert_int_equal(k, -EBADMSG);
	}
	struct http_request r;
	assert_int_equal(parse("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &r), -ENOTSUP);
	assert_int_equal(http_error_status(-ENOTSUP), 501);
	/* a NUL byte anywhere in the head */
	const uint8_t nul[] = "GET / HTTP/1.1\r\nA: \0b\r\n\r\n";
	assert_int_equal(http_parse_head(nul, sizeof(nul) - 1, &r), -EBADMSG);
	/* duplicate equal Content-Length is accepted */
	assert_true(parse("GET / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n", &r) >
		    0);
	http_request_done(&r);
}

static void test_caps(void **state)
{
	struct http_request r = { 0 };
	/* request line over 8 KiB, without its end yet */
	size_t n = HTTP_MAX_REQUEST_LINE + 10;
	char *s = malloc(n + 64);
	memset(s, 'a', n);
	memcpy(s, "GET /", 5);
	assert_int_equal(http_parse_head((uint8_t *)s, n, &r), -E2BIG);
	assert_int_equal(http_error_status(-E2BIG), 431);
	free(s);

	/* 64 headers fine, 65 too many */
	char *h = malloc(8192);
	size_t o = (size_t)snprintf(h, 8192, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 64; i++)
		o += (size_t)snprintf(h + o, 8192 - o, "H%d: v\r\n", i);
	o += (size_t)snprintf(h + o, 8192 - o, "\r\n");
	assert_true(http_parse_head((uint8_t *)h, o, &r) > 0);
	http_request_done(&r);
	o -= 2;
	o += (size_t)snprintf(h + o, 8192 - o, "Hx: v\r\n\r\n");
	assert_int_equal(http_parse_head((uint8_t *)h, o, &r), -E2BIG);
	free(h);

	/* headers over 32 KiB in all: refused before the end arrives */
	size_t big = HTTP_MAX_HEADER_BYTES + 100;
	char *b = malloc(big + 64);
	o = (size_t)snprintf(b, 64, "GET / HTTP/1.1\r\nX: ");
	memset(b + o, 'v', big - o);
	assert_int_equal(http_parse_head((uint8_t *)b, big, &r), -E2BIG);
	free(b);

	/* an absurd Content-Length */
	assert_int_equal(
		parse("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", &r),
		-EFBIG);
}

static int feed_all(const char *in, struct buf *body, size_t step)
{
	struct http_chunked st = { 0 };
	size_t n = strlen(in), off = 0;
	int r = 0;
	while (off < n) {
		size_t used = 0;
		size_t len = MIN(step, n - off);
		r = http_chunked_feed(&st, (const uint8_t *)in + off, len, body, &used);
		if (r < 0)
			return r;
		off += used;
		if (r == 1)
			return off == n ? 1 : 2;
		assert_int_equal(used, len);
	}
	return r;
}

static void test_chunked(void **state)
{
	static const char body[] = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
				   "0\r\nTrailer: x\r\n\r\n";
	for (size_t step = 1; step <= sizeof(body); step++) {
		struct buf b;
		buf_init(&b, 1024);
		assert_int_equal(feed_all(body, &b, step), 1);
		assert_int_equal(buf_len(&b), 23);
		assert_memory_equal(buf_head(&b), "Wikipedia in\r\n\r\nchunks.", 23);
		buf_done(&b, 0);
	}
	struct buf b;
	buf_init(&b, 8);
	assert_int_equal(feed_all("9\r\n123456789\r\n0\r\n\r\n", &b, 100), -EFBIG);
	buf_done(&b, 0);
	buf_init(&b, 1024);
	assert_int_equal(feed_all("x\r\n", &b, 100), -EBADMSG);
	buf_done(&b, 0);
	buf_init(&b, 1024);
	assert_int_equal(feed_all("2\r\nabc\r\n", &b, 100), -EBADMSG);
	buf_done(&b, 0);
	buf_init(&b, 1024);
	assert_int_equal(feed_all("ffffffffffffffffff\r\n", &b, 100), -EFBIG);
	buf_done(&b, 0);
	buf_init(&b, 1024);
	/* bare LFs are accepted */
	assert_int_equal(feed_all("1\na\n0\n\n", &b, 100), 1);
	buf_done(&b, 0);
}

static void test_query(void **state)
{
	char *v = NULL;
	assert_int_equal(http_query_get("path=/a%20b&mode=0644", "path", &v), 0);
	assert_string_equal(v, "/a b");
	free(v);
	assert_int_equal(http_query_get("path=/a%20b&mode=0644", "mode", &v), 0);
	assert_string_equal(v, "0644");
	free(v);
	assert_int_equal(http_query_get("a=1+2", "a", &v), 0);
	assert_string_equal(v, "1 2");
	free(v);
	assert_int_equal(http_query_get("flag&x=1", "flag", &v), 0);
	assert_string_equal(v, "");
	free(v);
	assert_int_equal(http_query_get("pathx=1", "path", &v), -ENOENT);
	assert_int_equal(http_query_get("", "path", &v), -ENOENT);
	assert_int_equal(http_query_get("path=%00", "path", &v), -EBADMSG);
	assert_int_equal(http_query_get("path=%zz", "path", &v), -EBADMSG);
	assert_int_equal(http_query_get("path=%2", "path", &v), -EBADMSG);
}

static void test_json_depth(void **state)
{
	char deep[100];
	memset(deep, '[', 33);
	memset(deep + 33, ']', 33);
	assert_int_equal(http_json_depth_check((uint8_t *)deep, 66, 32), -EBADMSG);
	assert_int_equal(http_json_depth_check((uint8_t *)deep + 1, 64, 32), 0);
	const char *s = "{\"a\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}";
	assert_int_equal(http_json_depth_check((const uint8_t *)s, strlen(s), 2), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_bare_lf_and_http10),
		cmocka_unit_test(test_upgrade),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_json_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
