/* test-wgcheck.c - capsem-gateway's pure checks: Origin, Host, token, rate limit, allow-list,
 * /proc/net/tcp lines, the WebSocket accept key, the output ring, resize messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "wgcheck.h"

static void test_origin(void **state)
{
	assert_true(wg_origin_ok(NULL, 8080));
	assert_true(wg_origin_ok("http://127.0.0.1:8080", 8080));
	assert_true(wg_origin_ok("http://localhost:8080", 8080));
	assert_true(wg_origin_ok("http://[::1]:8080", 8080));
	assert_false(wg_origin_ok("http://127.0.0.1:8081", 8080));
	assert_false(wg_origin_ok("http://127.0.0.1", 8080));
	assert_false(wg_origin_ok("https://127.0.0.1:8080", 8080));
	assert_false(wg_origin_ok("http://127.0.0.1:8080/", 8080));
	assert_false(wg_origin_ok("http://evil.com:8080", 8080));
	assert_false(wg_origin_ok("http://localhost.evil.com:8080", 8080));
	assert_false(wg_origin_ok("http://a@localhost:8080", 8080));
	assert_false(wg_origin_ok("null", 8080));
	assert_false(wg_origin_ok("http://127.0.0.1:08080", 8080));
	assert_false(wg_origin_ok("http://127.0.0.1:8080x", 8080));
}

static void test_host(void **state)
{
	assert_true(wg_host_ok("127.0.0.1:80", 80));
	assert_true(wg_host_ok("localhost", 80));
	assert_true(wg_host_ok("LOCALHOST:80", 80));
	assert_false(wg_host_ok(NULL, 80));
	assert_false(wg_host_ok("evil.com", 80));
	assert_false(wg_host_ok("127.0.0.1.evil.com", 80));
	assert_false(wg_host_ok("127.0.0.1:81", 80));
	assert_false(wg_host_ok("", 80));
}

static void test_token(void **state)
{
	char want[WG_TOKEN_LEN + 1];
	memset(want, 'a', WG_TOKEN_LEN);
	want[WG_TOKEN_LEN] = 0;
	char auth[100];
	snprintf(auth, sizeof(auth), "Bearer %s", want);
	assert_true(wg_token_ok(auth, NULL, want));
	auth[10] = 'b';
	assert_false(wg_token_ok(auth, NULL, want));
	assert_false(wg_token_ok("Bearer aaa", NULL, want));
	assert_false(wg_token_ok("Basic x", NULL, want));
	char q[120];
	snprintf(q, sizeof(q), "rows=3&token=%s", want);
	assert_true(wg_token_ok(NULL, q, want));
	snprintf(q, sizeof(q), "token=%sa", want);
	assert_false(wg_token_ok(NULL, q, want));
	assert_false(wg_token_ok(NULL, "", want));
	assert_false(wg_token_ok(NULL, NULL, want));
}

static void test_ratelimit(void **state)
{
	struct wg_ratelimit r = { 0 };
	for (int i = 0; i < WG_AUTH_FAIL_MAX - 1; i++) {
		wg_ratelimit_fail(&r, 1000 + (uint64_t)i);
		assert_false(wg_ratelimit_limited(&r, 1000 + (uint64_t)i));
	}
	wg_ratelimit_fail(&r, 2000);
	assert_true(wg_ratelimit_limited(&r, 2000));
	assert_false(wg_ratelimit_limited(&r, 1000 + WG_AUTH_WINDOW_MS + 1));
}

static void test_routes(void **state)
{
	assert_int_equal(wg_route_allowed("GET", "/vms"), WG_ROUTE_JSON);
	assert_int_equal(wg_route_allowed("POST", "/vms"), WG_ROUTE_LONG);
	assert_int_equal(wg_route_allowed("PUT", "/vms/web/files"), WG_ROUTE_UPLOAD);
	assert_int_equal(wg_route_allowed("POST", "/vms/web/stop"), WG_ROUTE_LONG);
	assert_int_equal(wg_route_allowed("DELETE", "/vms/web"), WG_ROUTE_JSON);
	assert_int_equal(wg_route_allowed("POST", "/vms/web/exec"), WG_ROUTE_NONE);
	assert_int_equal(wg_route_allowed("POST", "/gateway"), WG_ROUTE_NONE);
	assert_int_equal(wg_route_allowed("GET", "/vms/../gateway"), WG_ROUTE_NONE);
	assert_int_equal(wg_route_allowed("GET", "/vms/Web"), WG_ROUTE_NONE);
	assert_int_equal(wg_route_allowed("GET", "/sessions/x/y"), WG_ROUTE_NONE);
	assert_int_equal(wg_route_allowed("DELETE", "/images/a/b"), WG_ROUTE_NONE);
}

static void test_proc_tcp(void **state)
{
	const char *t =
		"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid "
		" "
		"timeout inode\n"
		"   0: 0100007F:4B36 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
		"       0 1 1 0000000000000000 100 0 0 10 0\n"
		"   1: 0100007F:D2F0 0100007F:4B36 01 00000000:00000000 00:00000000 00000000  1001 "
		"       0 2 1 0000000000000000 20 4 30 10 -1\n";
	uid_t uid = 0;
	assert_int_equal(
		wg_proc_tcp_uid(t, strlen(t), 0x0100007F, 0xD2F0, 0x0100007F, 0x4B36, &uid), 0);
	assert_int_equal(uid, 1001);
	assert_int_equal(
		wg_proc_tcp_uid(t, strlen(t), 0x0100007F, 0xD2F1, 0x0100007F, 0x4B36, &uid),
		-ENOENT);
}

static void test_ws_accept(void **state)
{
	char out[29];
	/* RFC 6455 section 1.3's example */
	assert_int_equal(wg_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(wg_ws_accept("short", out), -EINVAL);
	assert_int_equal(wg_ws_accept(NULL, out), -EINVAL);
	uint8_t h[10];
	assert_int_equal(wg_ws_frame_head(2, 5, h), 2);
	assert_int_equal(h[0], 0x82);
	assert_int_equal(wg_ws_frame_head(1, 300, h), 4);
	assert_int_equal(h[1], 126);
	assert_int_equal(wg_ws_frame_head(2, 70000, h), 10);
}

static void test_ring(void **state)
{
	static struct wg_ring r;
	static uint8_t big[WG_RING_SIZE + 100];
	const uint8_t *p1, *p2;
	size_t n1, n2;
	wg_ring_put(&r, (const uint8_t *)"abc", 3);
	wg_ring_spans(&r, &p1, &n1, &p2, &n2);
	assert_int_equal(n1 + n2, 3);
	assert_memory_equal(p1, "abc", 3);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	wg_ring_put(&r, big, 1000);
	wg_ring_put(&r, big, sizeof(big));
	wg_ring_spans(&r, &p1, &n1, &p2, &n2);
	assert_int_equal(n1 + n2, WG_RING_SIZE);
	assert_int_equal(p2[n2 ? n2 - 1 : 0] == big[sizeof(big) - 1] ||
				 p1[n1 - 1] == big[sizeof(big) - 1],
			 1);
	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 100; i++)
		wg_ring_put(&r, big, 1000);
	wg_ring_spans(&r, &p1, &n1, &p2, &n2);
	assert_int_equal(n1 + n2, WG_RING_SIZE);
}

static void test_resize(void **state)
{
	uint16_t r, c;
	assert_int_equal(wg_parse_resize("{\"cols\":80,\"rows\":24}", 21, &r, &c), 0);
	assert_int_equal(r, 24);
	assert_int_equal(c, 80);
	assert_int_equal(wg_parse_resize("{\"cols\":0,\"rows\":24}", 20, &r, &c), -EINVAL);
	assert_int_equal(wg_parse_resize("{\"cols\":80}", 11, &r, &c), -EINVAL);
	assert_int_equal(wg_parse_resize("[1]", 3, &r, &c), -EINVAL);
	assert_true(wg_ref_ok("web-1"));
	assert_false(wg_ref_ok("-web"));
	assert_false(wg_ref_ok("a/b"));
	assert_false(wg_ref_ok(""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_origin),	  cmocka_unit_test(test_host),
		cmocka_unit_test(test_token),	  cmocka_unit_test(test_ratelimit),
		cmocka_unit_test(test_routes),	  cmocka_unit_test(test_proc_tcp),
		cmocka_unit_test(test_ws_accept), cmocka_unit_test(test_ring),
		cmocka_unit_test(test_resize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
