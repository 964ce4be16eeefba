/* test-apiclient.c - capsemd API client: response heads, chunked bodies, escaping, and whole
 * responses read from a socketpair (Content-Length, chunked, to EOF, 101 with leftover bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "apiclient.h"
#include "fdutil.h"
#include "macro.h"

static int head(const char *s, struct api_head *h)
{
	return api_parse_head(s, strlen(s), h);
}

static void test_head(void **state)
{
	struct api_head h;
	const char *ok = "HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\n"
			 "Content-Length: 12\r\nX-Other:  v \r\n\r\nbody";
	assert_int_equal(head(ok, &h), (int)strlen(ok) - 4);
	assert_int_equal(h.status, 201);
	assert_int_equal(h.content_length, 12);
	assert_false(h.chunked);
	assert_string_equal(h.content_type, "application/json");

	const char *up = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: Capsem-Exec/1\r\n"
			 "Connection: Upgrade\r\n\r\n";
	assert_int_equal(head(up, &h), (int)strlen(up));
	assert_int_equal(h.status, 101);
	assert_string_equal(h.upgrade, "capsem-exec/1");
	assert_int_equal(head("HTTP/1.0 204\r\nConnection: close\r\n\r\n", &h) > 0, 1);
	assert_true(h.close);
	assert_int_equal(h.content_length, -1);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &h) > 0, 1);
	assert_true(h.chunked);

	/* incomplete, malformed */
	h.status = 7;
	assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", &h), 0);
	assert_int_equal(head("", &h), 0);
	assert_int_equal(head("HTTP/2 200 OK\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 2x0 OK\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 099 Huh\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", &h), -EBADMSG);
	/* http.c's rules (the proxy's and capsemd's): differing lengths are refused; an equal
	 * duplicate in a response is one length (RFC 9112 §6.3) */
	assert_int_equal(
		head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &h),
		-EBADMSG);
	assert_int_equal(
		head("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", &h),
		-EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
			      "chunked\r\n\r\n",
			      &h),
			 -EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(head("HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(h.status, 7); /* untouched on failure */
	/* a bare LF ends a header line (RFC 9112 §2.2), as everywhere http.c parses */
	assert_true(head("HTTP/1.1 200 OK\r\nA: b\nC: d\r\n\r\n", &h) > 0);

	/* caps */
	char *big = malloc(API_MAX_HEAD + 16);
	memset(big, 'a', API_MAX_HEAD + 16);
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	assert_int_equal(api_parse_head(big, API_MAX_HEAD + 16, &h), -E2BIG);
	free(big);
	char many[8192] = "HTTP/1.1 200 OK\r\n";
	size_t n = strlen(many);
	for (unsigned i = 0; i <= API_MAX_HEADERS; i++) {
		memcpy(many + n, "A: b\r\n", 6);
		n += 6;
	}
	memcpy(many + n, "\r\n", 3);
	assert_int_equal(head(many, &h), -E2BIG);
}

static void test_chunked(void **state)
{
	const char *in = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n"
			 "Trailer: x\r\n\r\nNEXT";
	struct api_chunked c = {};
	struct buf out;
	buf_init(&out, 1024);
	ssize_t k = api_chunked_feed(&c, (const uint8_t *)in, strlen(in), &out, -1);
	assert_int_equal(k, (ssize_t)strlen(in) - 4);
	assert_true(c.done);
	assert_int_equal(buf_len(&out), 23);
	assert_memory_equal(buf_head(&out), "Wikipedia in\r\n\r\nchunks.", 23);
	buf_done(&out, 0);

	/* one byte at a time */
	struct api_chunked c2 = {};
	buf_init(&out, 1024);
	size_t used = 0;
	for (size_t i = 0; i < strlen(in) && !c2.done; i++) {
		k = api_chunked_feed(&c2, (const uint8_t *)in + i, 1, &out, -1);
		assert_true(k == 1);
		used++;
	}
	assert_true(c2.done);
	assert_int_equal(used, strlen(in) - 4);
	assert_int_equal(buf_len(&out), 23);
	buf_done(&out, 0);

	/* errors and caps */
	/* (a bare LF ends a line, RFC 9112 §2.2: http.c's rule for every peer) */
	const char *bad[] = { "x\r\n", "4\r\nWikiX\r\n",       "4\r\nWiki\r\r\n",
			      "\r\n",  "1000000000000000\r\n", "0\r\nbad\x01trailer\r\n\r\n" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct api_chunked cb = {};
		buf_init(&out, 1024);
		k = api_chunked_feed(&cb, (const uint8_t *)bad[i], strlen(bad[i]), &out, -1);
		assert_int_equal(k, i == 4 ? -EFBIG : -EBADMSG); /* a size past any cap */
		buf_done(&out, 0);
	}
	struct api_chunked cc = {};
	buf_init(&out, 3);
	k = api_chunked_feed(&cc, (const uint8_t *)"4\r\nWiki\r\n", 9, &out, -1);
	assert_int_equal(k, -ENOBUFS);
	buf_done(&out, 0);
}

static void test_escape_error(void **state)
{
	char *e = api_escape("/root/a b&c=d?é");
	assert_string_equal(e, "/root/a%20b%26c%3Dd%3F%C3%A9");
	free(e);

	struct api_response r = { .head.status = 404 };
	r.json = json_pack("{s:s, s:s}", "error", "no VM named 'x'", "code", "not_found");
	assert_string_equal(api_response_error(&r), "no VM named 'x'");
	assert_string_equal(api_response_code(&r), "not_found");
	api_response_done(&r);
	r = (struct api_response){ .head.status = 500 };
	assert_string_equal(api_response_error(&r), "the daemon answered HTTP 500");
	assert_string_equal(api_response_code(&r), "");
}

/* Feed raw response bytes through a socketpair and read them as a response. */
static int read_from(const char *raw, size_t n, struct api_conn *c, struct api_response *res,
		     int shut)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fd_write_all(sv[1], raw, n), 0);
	if (shut)
		shutdown(sv[1], SHUT_WR);
	*c = (struct api_conn){ .fd = sv[0], .intr_fd = -1 };
	buf_init(&c->rbuf, API_MAX_HEAD + API_MAX_BODY);
	struct api_req rq = { .method = "GET", .path = "/", .body_fd = -1, .out_fd = -1 };
	int r = api_read_response(c, &rq, res);
	close(sv[1]);
	return r;
}

static void test_read_response(void **state)
{
	struct api_conn c;
	struct api_response res;
	const char *r1 = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: "
			 "application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}HTTP/1.1";
	assert_int_equal(read_from(r1, strlen(r1), &c, &res, 0), 0);
	assert_int_equal(res.head.status, 200);
	assert_true(json_is_true(json_object_get(res.json, "ok")));
	assert_int_equal(buf_len(&c.rbuf), 8); /* the next response's start stays */
	api_response_done(&res);
	api_conn_close(&c);

	const char *r2 =
		"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
		"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\n10\r\nor\": \"gone\", \"x\"\r\n"
		"4\r\n: 1}\r\n0\r\n\r\n";
	assert_int_equal(read_from(r2, strlen(r2), &c, &res, 0), 0);
	assert_int_equal(res.head.status, 404);
	assert_string_equal(api_response_error(&res), "gone");
	api_response_done(&res);
	api_conn_close(&c);

	const char *r3 = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nlog line\n";
	assert_int_equal(read_from(r3, strlen(r3), &c, &res, 1), 0);
	assert_int_equal(buf_len(&res.body), 9);
	assert_null(res.json);
	api_response_done(&res);
	api_conn_close(&c);

	const char r4[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: capsem-exec/1\r\n\r\n"
			  "\0\0\0\4\0\24\0\0\0\1";
	assert_int_equal(read_from(r4, sizeof(r4) - 1, &c, &res, 0), 0);
	assert_int_equal(res.head.status, 101);
	assert_int_equal(buf_len(&c.rbuf), 10); /* the first frame, for the relay */
	api_response_done(&res);
	api_conn_close(&c);

	/* truncated body, bad JSON, oversized */
	const char *r5 = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
	assert_int_equal(read_from(r5, strlen(r5), &c, &res, 1), -EPIPE);
	api_conn_close(&c);
	const char *r6 = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
			 "3\r\n\r\n{x}";
	assert_int_equal(read_from(r6, strlen(r6), &c, &res, 1), -EBADMSG);
	api_conn_close(&c);
	const char *r7 = "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n";
	assert_int_equal(read_from(r7, strlen(r7), &c, &res, 1), -EFBIG);
	api_conn_close(&c);
	assert_int_equal(read_from("", 0, &c, &res, 1), -EPIPE);
	api_conn_close(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_escape_error),
		cmocka_unit_test(test_read_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
