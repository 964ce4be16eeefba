/* test-side.c - the egress proxy's stream sides (src/egress/side.c) over real socketpairs on a
 * real libuv loop: plain bytes both ways with EOF and shutdown, the input cap (reading stops at
 * IN_CAP and resumes when the owner consumes), and TLS through the memory-BIO filter (a real
 * handshake against a test CA, corked writes, close_notify as EOF). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "macro.h"
#include "side.h"
#include "tls.h"

struct peer {
	struct side s;
	size_t got;	 /* bytes consumed */
	size_t max_in;	 /* the most ever buffered */
	bool lazy;	 /* consume from a timer, not in the data callback */
	bool eof;	 /* saw EOF */
	bool handshaken; /* TLS handshake finished */
	bool closed;	 /* ops->closed ran */
	char *error;	 /* ops->error's reason */
	size_t expect;	 /* bytes the peer should get */
	struct peer *other;
};

/* byte i of the test stream */
static uint8_t pat(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 9));
}

static void take_input(struct peer *p)
{
	struct side *s = &p->s;
	size_t n = buf_len(&s->in);
	if (n > p->max_in)
		p->max_in = n;
	const uint8_t *b = buf_head(&s->in);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(b[i], pat(p->got + i));
	p->got += n;
	side_consume(s, n);
}

static void on_eof(struct peer *p)
{
	p->eof = true;
	assert_int_equal(p->got, p->expect);
	/* our side is done too: FIN (TLS: close_notify first), then close; a side that already
	 * shut its write side down closes now */
	if (p->s.shut)
		side_close(&p->s);
	else
		side_shutdown(&p->s, true);
}

static void cb_data(struct side *s)
{
	struct peer *p = s->owner;
	if (!p->lazy)
		take_input(p);
	if (s->eof && !p->eof && (!p->lazy || buf_len(&s->in) == 0))
		on_eof(p);
}

static void cb_drain(struct side *s)
{
}

static void cb_handshake(struct side *s)
{
	struct peer *p = s->owner;
	p->handshaken = true;
}

static void cb_error(struct side *s, const char *why)
{
	struct peer *p = s->owner;
	if (!p->error)
		p->error = strdup(why);
	side_close(s);
}

static void cb_closed(struct side *s)
{
	struct peer *p = s->owner;
	p->closed = true;
}

static const struct side_ops ops = {
	.data = cb_data,
	.drain = cb_drain,
	.handshake = cb_handshake,
	.error = cb_error,
	.closed = cb_closed,
};

static void pair(uv_loop_t *loop, struct peer *a, struct peer *b)
{
	int fds[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	struct peer *ps[2] = { a, b };
	for (int i = 0; i < 2; i++) {
		assert_int_equal(uv_pipe_init(loop, &ps[i]->s.h.pipe, 0), 0);
		assert_int_equal(uv_pipe_open(&ps[i]->s.h.pipe, fds[i]), 0);
		side_init_common(&ps[i]->s, &ops, ps[i]);
		side_want_read(&ps[i]->s, true);
	}
	a->other = b;
	b->other = a;
}

static uint8_t *stream(size_t n)
{
	uint8_t *d = malloc(n);
	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = pat(i);
	return d;
}

static void lazy_tick(uv_timer_t *t)
{
	struct peer *p = t->data;
	if (p->closed || p->eof) {
		uv_timer_stop(t);
		return;
	}
	take_input(p);
	if (p->s.eof && !p->eof)
		on_eof(p);
}

static void run_plain(bool lazy)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct peer a = { 0 }, b = { .lazy = lazy };
	pair(&loop, &a, &b);
	const size_t n = 512 * 1024;
	b.expect = n;
	_cleanup_free_ uint8_t *d = stream(n);
	assert_int_equal(side_write(&a.s, d, n), 0);
	side_shutdown(&a.s, false); /* FIN after the queued bytes */
	assert_int_equal(side_write(&a.s, "x", 1), -EPIPE);
	uv_timer_t t;
	assert_int_equal(uv_timer_init(&loop, &t), 0);
	t.data = &b;
	if (lazy)
		uv_timer_start(&t, lazy_tick, 1, 1);
	(void)uv_run(&loop, UV_RUN_DEFAULT); /* until both sides closed (the timer stopped) */
	uv_close((uv_handle_t *)&t, NULL);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_null(b.error);
	assert_true(b.eof);
	assert_true(a.eof); /* b's FIN */
	assert_int_equal(b.got, n);
	assert_true(b.max_in <= IN_CAP);
	if (lazy) /* the buffer filled, reading stopped, and resumed when consumed */
		assert_int_equal(b.max_in, IN_CAP);
	assert_true(a.closed && b.closed);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_plain(void **state)
{
	run_plain(false);
}

static void test_plain_input_cap(void **state)
{
	run_plain(true);
}

static char *tmpdir(void)
{
	char t[] = "/tmp/capsem-side-XXXXXX";
	assert_non_null(mkdtemp(t));
	return strdup(t);
}

static void test_tls(void **state)
{
	_cleanup_free_ char *d = tmpdir();
	char ca_dir[512], crt[600];
	snprintf(ca_dir, sizeof(ca_dir), "%s/ca", d);
	snprintf(crt, sizeof(crt), "%s/ca.crt", ca_dir);
	struct tls_ca *ca = NULL;
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), 0);
	SSL_CTX *sctx = tls_server_ctx_new(), *cctx = tls_client_ctx_new(crt);
	assert_non_null(sctx);
	assert_non_null(cctx);

	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct peer srv = { 0 }, cli = { 0 };
	pair(&loop, &srv, &cli);
	assert_int_equal(side_start_tls(&srv.s, sctx, true), 0);
	assert_int_equal(tls_server_use_leaf(srv.s.ssl, ca, "side.test"), 0);
	assert_int_equal(side_start_tls(&cli.s, cctx, false), 0);
	assert_int_equal(tls_client_setup(cli.s.ssl, "side.test"), 0);
	side_pull(&cli.s, true); /* sends the ClientHello */

	const size_t n = 300 * 1024;
	_cleanup_free_ uint8_t *data = stream(n);
	cli.expect = n;
	srv.expect = 3;
	while (!(srv.handshaken && cli.handshaken) && !srv.error && !cli.error)
		assert_int_equal(uv_run(&loop, UV_RUN_ONCE), 1);
	assert_null(srv.error);
	assert_null(cli.error);
	/* corked: the records of three writes leave in one socket write at the uncork */
	side_cork();
	assert_int_equal(side_write(&cli.s, data, 1), 0);
	assert_int_equal(side_write(&cli.s, data + 1, 2), 0);
	assert_true(cli.s.corked);
	assert_int_equal(cli.s.wq, 0);
	side_uncork();
	assert_false(cli.s.corked);
	assert_int_equal(side_write(&srv.s, data, n), 0);
	side_shutdown(&srv.s, false); /* close_notify: the client's EOF */
	while (!(srv.closed && cli.closed))
		(void)uv_run(&loop, UV_RUN_ONCE);
	assert_null(srv.error);
	assert_null(cli.error);
	assert_int_equal(cli.got, n);
	assert_int_equal(srv.got, 3);
	assert_true(cli.eof && srv.eof);
	assert_null(srv.s.ssl); /* freed with the handle */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	tls_ca_free(ca);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "%s/ca.pem", ca_dir);
	unlink(cmd);
	unlink(crt);
	rmdir(ca_dir);
	rmdir(d);
}

/* A client that trusts another CA: the handshake fails and is reported, nothing is delivered. */
static void test_tls_untrusted(void **state)
{
	_cleanup_free_ char *d = tmpdir();
	char ca_dir[512], p[600];
	snprintf(ca_dir, sizeof(ca_dir), "%s/ca", d);
	struct tls_ca *ca = NULL;
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), 0);
	SSL_CTX *sctx = tls_server_ctx_new(), *cctx = tls_client_ctx_new(NULL);
	assert_non_null(sctx);
	assert_non_null(cctx);
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct peer srv = { 0 }, cli = { 0 };
	pair(&loop, &srv, &cli);
	assert_int_equal(side_start_tls(&srv.s, sctx, true), 0);
	assert_int_equal(tls_server_use_leaf(srv.s.ssl, ca, "side.test"), 0);
	assert_int_equal(side_start_tls(&cli.s, cctx, false), 0);
	assert_int_equal(tls_client_setup(cli.s.ssl, "side.test"), 0);
	side_pull(&cli.s, true);
	while (!cli.error)
		assert_int_equal(uv_run(&loop, UV_RUN_ONCE), 1);
	assert_false(cli.handshaken);
	if (!srv.closed)
		side_close(&srv.s);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_true(srv.closed && cli.closed);
	assert_int_equal(uv_loop_close(&loop), 0);
	free(srv.error);
	free(cli.error);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	tls_ca_free(ca);
	snprintf(p, sizeof(p), "%s/ca.pem", ca_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/ca.crt", ca_dir);
	unlink(p);
	rmdir(ca_dir);
	rmdir(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_plain_input_cap),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_tls_untrusted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
