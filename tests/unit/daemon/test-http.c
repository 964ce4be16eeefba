/* test-http.c - the shared HTTP/1.1 parser (src/shared/http.c; capsemd's API and the egress
 * proxy): framing, caps, smuggling defences, duplicate and missing headers, chunked bodies, query
 * strings and the JSON depth check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <strings.h>
#include <cmocka.h>

#include "http.h"
#include "macro.h"

static ssize_t parse(const char *s, struct http_msg *r)
{
	*r = (struct http_msg){ 0 };
	return http_parse_head((const uint8_t *)s, strlen(s), r);
}

static void test_simple_get(void **state)
{
	struct http_msg r;
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
	http_msg_done(&r);
}

static void test_incomplete(void **state)
{
	struct http_msg r = { 0 };
	const char *s = "POST /vms HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
	for (size_t i = 0; i < strlen(s); i++)
		assert_int_equal(http_parse_head((const uint8_t *)s, i, &r), 0);
	assert_int_equal(http_parse_head((const uint8_t *)s, strlen(s), &r), (ssize_t)strlen(s));
	assert_true(r.has_length);
	assert_int_equal(r.content_length, 2);
	http_msg_done(&r);
}

static void test_bare_lf_and_http10(void **state)
{
	struct http_msg r;
	assert_true(parse("GET / HTTP/1.0\nConnection: keep-alive\n\n", &r) > 0);
	assert_int_equal(r.minor, 0);
	assert_true(r.keep_alive);
	http_msg_done(&r);
	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	http_msg_done(&r);
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	http_msg_done(&r);
}

static void test_upgrade(void **state)
{
	struct http_msg r;
	assert_true(
		parse("POST /vms/a/exec HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
		      "Upgrade: capsem-exec/1\r\nContent-Length: 0\r\n\r\n",
		      &r) > 0);
	assert_string_equal(r.upgrade, "capsem-exec/1");
	http_msg_done(&r);
	/* Upgrade without Connection: upgrade is no upgrade */
	assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nUpgrade: capsem-exec/1\r\n\r\n", &r) > 0);
	assert_null(r.upgrade);
	http_msg_done(&r);
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
		struct http_msg r;
		ssize_t k = parse(bad[i], &r);
		if (k != -EBADMSG)
			fprintf(stderr, "case %zu: %zd\n", i, k);
		assert_int_equal(k, -EBADMSG);
		/* the same with a Host header: malformed for its own reason */
		char with_host[512];
		const char *nl = strchr(bad[i], '\n');
		if (!nl)
			continue;
		snprintf(with_host, sizeof(with_host), "%.*sHost: h\r\n%s", (int)(nl + 1 - bad[i]),
			 bad[i], nl + 1);
		k = parse(with_host, &r);
		if (k != -EBADMSG)
			fprintf(stderr, "case %zu with Host: %zd\n", i, k);
		assert_int_equal(k, -EBADMSG);
	}
	struct http_msg r;
	assert_int_equal(parse("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &r), -ENOTSUP);
	assert_int_equal(http_error_status(-ENOTSUP), 501);
	/* a NUL byte anywhere in the head */
	const uint8_t nul[] = "GET / HTTP/1.1\r\nA: \0b\r\n\r\n";
	assert_int_equal(http_parse_head(nul, sizeof(nul) - 1, &r), -EBADMSG);
	/* a duplicate Content-Length is refused in a request even when equal (a response may
	 * repeat an equal one) */
	assert_int_equal(
		parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n",
		      &r),
		-EBADMSG);
	const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
	assert_true(http_parse_response_head((const uint8_t *)resp, strlen(resp), &r) > 0);
	assert_int_equal(r.content_length, 3);
	http_msg_done(&r);
}

/* Issue 17 item 2: a header that a first-wins reader and a last-wins reader would see
 * differently is refused (the proxy checked the first Host, the upstream got both). */
static void test_duplicate_headers(void **state)
{
	static const char *const names[] = {
		"Host",		  "HOST",    "Content-Length", "Transfer-Encoding",   "Connection",
		"Upgrade",	  "Expect",  "Authorization",  "Proxy-Authorization", "x-api-key",
		"X-Goog-Api-Key", "api-key",
	};
	static const char *const values[] = {
		"other.example", "other.example", "0",	     "chunked", "close", "websocket",
		"100-continue",	 "Bearer x",	  "Basic x", "k",	"k",	 "k",
	};
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		char req[512];
		struct http_msg r;
		/* once is fine (with Host first, a second Host is the duplicate) */
		snprintf(req, sizeof(req),
			 "POST /v1 HTTP/1.1\r\nHost: allowed.example\r\n%s: %s\r\n\r\n", names[i],
			 values[i]);
		ssize_t k = parse(req, &r);
		if (strcasecmp(names[i], "host") == 0) {
			assert_int_equal(k, -EBADMSG);
			assert_int_equal(http_error_status((int)k), 400);
			continue;
		}
		if (k <= 0)
			fail_msg("%s once: %zd", names[i], k);
		http_msg_done(&r);
		/* twice, same or different value, any case, anywhere: 400 */
		snprintf(req, sizeof(req),
			 "POST /v1 HTTP/1.1\r\n%s: %s\r\nHost: allowed.example\r\nX-Other: 1\r\n"
			 "%s: %s\r\n\r\n",
			 names[i], values[i], names[i], values[i]);
		k = parse(req, &r);
		if (k != -EBADMSG)
			fail_msg("%s twice: %zd", names[i], k);
	}
	/* the reported attack: Host twice, the second naming another site */
	struct http_msg r;
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: allowed.example\r\nHost: other.example\r\n"
			       "x-api-key: sk-ant-capsem-placeholder\r\n\r\n",
			       &r),
			 -EBADMSG);
	/* headers a proxy does not interpret may repeat */
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n"
			  "Cookie: a=1\r\nCookie: b=2\r\n\r\n",
			  &r) > 0);
	http_msg_done(&r);
	/* responses are not held to the request rule (the proxy does not act on those headers
	 * of a response, and servers repeat some) */
	const char *resp = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n"
			   "Content-Length: 0\r\n\r\n";
	assert_true(http_parse_response_head((const uint8_t *)resp, strlen(resp), &r) > 0);
	http_msg_done(&r);
	(void)state;
}

/* RFC 9112 3.2: an HTTP/1.1 request without Host is a 400; HTTP/1.0 may leave it out. */
static void test_host_required(void **state)
{
	struct http_msg r;
	assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &r), -EBADMSG);
	assert_int_equal(parse("GET /version HTTP/1.1\r\nUser-Agent: x\r\n\r\n", &r), -EBADMSG);
	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
	http_msg_done(&r);
	assert_true(parse("GET / HTTP/1.1\r\nhost: capsemd\r\n\r\n", &r) > 0);
	http_msg_done(&r);
	/* what capsem's API client sends (src/shared/apiclient.c) */
	assert_true(parse("GET /vms HTTP/1.1\r\nHost: capsemd\r\nUser-Agent: capsem\r\n"
			  "Connection: close\r\n\r\n",
			  &r) > 0);
	http_msg_done(&r);
	(void)state;
}

static void test_caps(void **state)
{
	struct http_msg r = { 0 };
	/* request line over 8 KiB, without its end yet */
	size_t n = HTTP_MAX_REQUEST_LINE + 10;
	char *s = malloc(n + 64);
	memset(s, 'a', n);
	memcpy(s, "GET /", 5);
	assert_int_equal(http_parse_head((uint8_t *)s, n, &r), -E2BIG);
	assert_int_equal(http_error_status(-E2BIG), 431);
	free(s);

	/* HTTP_MAX_HEADERS headers fine, one more too many */
	char *h = malloc(16384);
	size_t o = (size_t)snprintf(h, 16384, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (unsigned i = 1; i < HTTP_MAX_HEADERS; i++)
		o += (size_t)snprintf(h + o, 16384 - o, "H%u: v\r\n", i);
	o += (size_t)snprintf(h + o, 16384 - o, "\r\n");
	assert_true(http_parse_head((uint8_t *)h, o, &r) > 0);
	http_msg_done(&r);
	o -= 2;
	o += (size_t)snprintf(h + o, 16384 - o, "Hx: v\r\n\r\n");
	assert_int_equal(http_parse_head((uint8_t *)h, o, &r), -E2BIG);
	free(h);

	/* headers over their byte cap in all: refused before the end arrives */
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

static int collect(void *userdata, const uint8_t *p, size_t n)
{
	return buf_append(userdata, p, n);
}

static void test_response(void **state)
{
	struct http_msg m = { 0 };
	const char *r1 = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			 "Transfer-Encoding: chunked\r\n\r\n";
	assert_int_equal(http_parse_response_head((const uint8_t *)r1, strlen(r1), &m),
			 (ssize_t)strlen(r1));
	assert_int_equal(m.status, 200);
	assert_string_equal(m.reason, "OK");
	assert_true(m.keep_alive);
	assert_null(m.path);
	assert_int_equal(http_body_framing(&m, "POST"), HTTP_BODY_CHUNKED);
	assert_int_equal(http_body_framing(&m, "HEAD"), HTTP_BODY_NONE);
	http_msg_done(&m);

	const char *r2 = "HTTP/1.0 404\r\n\r\n"; /* no reason, no length: until close */
	assert_true(http_parse_response_head((const uint8_t *)r2, strlen(r2), &m) > 0);
	assert_int_equal(m.status, 404);
	assert_string_equal(m.reason, "");
	assert_false(m.keep_alive);
	assert_int_equal(http_body_framing(&m, "GET"), HTTP_BODY_UNTIL_CLOSE);
	http_msg_done(&m);

	const char *r3 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
	assert_true(http_parse_response_head((const uint8_t *)r3, strlen(r3), &m) > 0);
	assert_int_equal(http_body_framing(&m, "GET"), HTTP_BODY_NONE);
	http_msg_done(&m);
	const char *r4 = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
			 "Upgrade: websocket\r\n\r\n";
	assert_true(http_parse_response_head((const uint8_t *)r4, strlen(r4), &m) > 0);
	assert_string_equal(m.upgrade, "websocket");
	assert_int_equal(http_body_framing(&m, "GET"), HTTP_BODY_NONE);
	http_msg_done(&m);

	const char *bad[] = { "HTTP/2 200 OK\r\n\r\n",
			      "HTTP/1.1 20 OK\r\n\r\n",
			      "HTTP/1.1 099 x\r\n\r\n",
			      "HTTP/1.1 2000 OK\r\n\r\n",
			      "GET / HTTP/1.1\r\n\r\n",
			      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
			      "chunked\r\n\r\n" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_true(http_parse_response_head((const uint8_t *)bad[i], strlen(bad[i]), &m) <
			    0);
	/* a request head is not a response, and the other way round */
	const char *req = "POST /v1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
	assert_true(http_parse_head((const uint8_t *)req, strlen(req), &m) > 0);
	assert_int_equal(http_body_framing(&m, NULL), HTTP_BODY_LENGTH);
	http_msg_done(&m);
}

static void test_chunked_scan(void **state)
{
	const char *body = "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
	size_t n = strlen(body);
	struct buf out;
	buf_init(&out, 1024);
	/* byte by byte: the same spans, and the scan stops right after the trailer */
	struct http_chunked st = { 0 };
	size_t total = 0;
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		size_t used = 0;
		r = http_chunked_scan(&st, (const uint8_t *)body + i, 1, 1024, collect, &out,
				      &used);
		total += used;
	}
	assert_int_equal(r, 1);
	assert_int_equal(total, n - 4);
	assert_int_equal(buf_len(&out), 9);
	assert_memory_equal(buf_head(&out), "Wikipedia", 9);
	/* the decoded cap */
	struct http_chunked st2 = { 0 };
	size_t used;
	assert_int_equal(http_chunked_scan(&st2, (const uint8_t *)body, n, 8, NULL, NULL, &used),
			 -EFBIG);
	buf_done(&out, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_bare_lf_and_http10),
		cmocka_unit_test(test_upgrade),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_duplicate_headers),
		cmocka_unit_test(test_host_required),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_chunked_scan),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_json_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
