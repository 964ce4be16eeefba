/* test-builtin.c - the URL the gateway decides on and sends (builtin_url_parse): the path
 * normalised as the egress proxy forwards it (encoded unreserved characters decoded, other
 * escapes with upper-case hex, the query untouched), the same path in the URL handed to libcurl,
 * refusals; and a built-in fetch against a local socket, which must read exactly that path in
 * the request line. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "builtin.h"
#include "macro.h"
#include "policy.h"

static void expect_url(const char *in, const char *host, uint16_t port, const char *path,
		       const char *url)
{
	struct builtin_url u;
	assert_int_equal(builtin_url_parse(in, &u), 0);
	assert_string_equal(u.host, host);
	assert_int_equal(u.port, port);
	assert_string_equal(u.path, path);
	assert_string_equal(u.url, url);
	/* parsing what is sent changes nothing: the server reads what was decided */
	struct builtin_url again;
	assert_int_equal(builtin_url_parse(u.url, &again), 0);
	assert_string_equal(again.path, u.path);
	assert_string_equal(again.url, u.url);
}

static void test_path_normalised(void **state)
{
	/* "%61" is "a" to a server (RFC 3986 6.2.2): decided and sent as /v1/admin */
	expect_url("https://api.example.com/v1/%61dmin", "api.example.com", 443, "/v1/admin",
		   "https://api.example.com/v1/admin");
	expect_url("http://127.0.0.1:8080/caf%c3%a9%7e/x", "127.0.0.1", 8080, "/caf%C3%A9~/x",
		   "http://127.0.0.1:8080/caf%C3%A9~/x");
	/* the query is the server's business: as it was written */
	expect_url("http://h.test/%7Euser?q=%61%2f&r=1", "h.test", 80, "/~user?q=%61%2f&r=1",
		   "http://h.test/~user?q=%61%2f&r=1");
	/* encoded '.', '/', '%' stay encoded (ambiguous for the policy), hex upper-cased */
	expect_url("http://h.test/a/%2e%2e/%2fb%25", "h.test", 80, "/a/%2E%2E/%2Fb%25",
		   "http://h.test/a/%2E%2E/%2Fb%25");
	/* nothing to change */
	expect_url("https://h.test/plain/path", "h.test", 443, "/plain/path",
		   "https://h.test/plain/path");
	expect_url("https://h.test", "h.test", 443, "/", "https://h.test/");
	expect_url("http://[::1]:9000/%41", "::1", 9000, "/A", "http://[::1]:9000/A");
	(void)state;
}

static void test_refused(void **state)
{
	struct builtin_url u;
	memset(&u, 0x5a, sizeof(u));
	assert_int_equal(builtin_url_parse("file:///etc/passwd", &u), -EINVAL);
	assert_int_equal(builtin_url_parse("ftp://h.test/x", &u), -EINVAL);
	assert_int_equal(builtin_url_parse("not a url", &u), -EINVAL);
	assert_int_equal(builtin_url_parse(NULL, &u), -EINVAL);
	char long_url[BUILTIN_URL_MAX + 64];
	int n = snprintf(long_url, sizeof(long_url), "http://h.test/");
	memset(long_url + n, 'a', sizeof(long_url) - (size_t)n - 1);
	long_url[sizeof(long_url) - 1] = 0;
	assert_int_equal(builtin_url_parse(long_url, &u), -EINVAL);
	/* out-parameter untouched on failure */
	for (size_t i = 0; i < sizeof(u); i++)
		assert_int_equal(((unsigned char *)&u)[i], 0x5a);
	(void)state;
}

/* A one-shot HTTP server on 127.0.0.1: reads a request head, keeps its first line, answers 200
 * with a short text body. */
struct one_shot {
	int lfd;
	char line[512];
};

static void *serve_one(void *arg)
{
	struct one_shot *o = arg;
	int fd = accept(o->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	char buf[8192];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t k = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (k <= 0)
			break;
		len += (size_t)k;
		buf[len] = 0;
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	buf[len] = 0;
	size_t l = strcspn(buf, "\r\n");
	snprintf(o->line, sizeof(o->line), "%.*s", (int)l, buf);
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				   "Content-Length: 3\r\nConnection: close\r\n\r\nok\n";
	(void)!write(fd, resp, sizeof(resp) - 1);
	close(fd);
	return NULL;
}

static void test_fetch_sends_the_normalised_path(void **state)
{
	struct one_shot o = { .lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	assert_true(o.lfd >= 0);
	assert_int_equal(bind(o.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(o.lfd, (struct sockaddr *)&a, &al), 0);
	assert_int_equal(listen(o.lfd, 1), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, serve_one, &o), 0);

	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/%%61dmin/caf%%c3%%a9?k=%%61",
		 ntohs(a.sin_port));
	atomic_int stop = 0;
	struct builtin_env env = { .workspace_fd = -1, .stop = &stop };
	json_t *args = json_pack("{s:s, s:b}", "url", url, "raw", 1);
	json_t *res = builtin_call(&env, "fetch", args);
	assert_int_equal(pthread_join(t, NULL), 0);
	close(o.lfd);
	assert_non_null(res);
	assert_false(json_is_true(json_object_get(res, "isError")));
	assert_string_equal(o.line, "GET /v1/admin/caf%C3%A9?k=%61 HTTP/1.1");
	json_decref(res);
	json_decref(args);
	(void)state;
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_normalised),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_fetch_sends_the_normalised_path),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
