/* test-proto.c - the wire format: round trips, caps, and hostile payloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "macro.h"
#include "proto.h"

/* Parse the single frame in b, check its type, return payload. */
static const uint8_t *one_frame(struct buf *b, uint16_t want, uint32_t *len)
{
	uint16_t type;
	const uint8_t *pl;
	ssize_t k = proto_frame_parse(buf_head(b), buf_len(b), &type, &pl, len);
	assert_int_equal(k, (ssize_t)buf_len(b));
	assert_int_equal(type, want);
	return pl;
}

static void test_frame_partial(void **state)
{
	struct buf b;
	uint16_t t;
	const uint8_t *pl;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_frame_append(&b, PROTO_STDOUT, "hello", 5), 0);
	for (size_t i = 0; i < buf_len(&b); i++)
		assert_int_equal(proto_frame_parse(buf_head(&b), i, &t, &pl, &len), 0);
	assert_int_equal(proto_frame_parse(buf_head(&b), buf_len(&b), &t, &pl, &len), 11);
	assert_int_equal(len, 5);
	assert_memory_equal(pl, "hello", 5);
	buf_done(&b, 0);
}

static void test_frame_too_big(void **state)
{
	uint8_t h[6] = { 0x00, 0x10, 0x00, 0x01, 0, 21 }; /* 1 MiB + 1 */
	uint16_t t;
	const uint8_t *pl;
	uint32_t len;
	assert_int_equal(proto_frame_parse(h, sizeof(h), &t, &pl, &len), -EMSGSIZE);
	uint8_t ok[6] = { 0x00, 0x10, 0x00, 0x00, 0, 21 }; /* exactly the cap: wait for more */
	assert_int_equal(proto_frame_parse(ok, sizeof(ok), &t, &pl, &len), 0);
	struct buf b;
	buf_init(&b, 4 << 20);
	static uint8_t big[PROTO_MAX_PAYLOAD + 1];
	assert_int_equal(proto_frame_append(&b, PROTO_STDOUT, big, sizeof(big)), -EMSGSIZE);
	buf_done(&b, 0);
}

static void test_exec_roundtrip(void **state)
{
	char *argv[] = { "sh", "-c", "echo hi", NULL };
	char *envp[] = { "A=1", "B=x=y", NULL };
	struct proto_exec e = { .flags = PROTO_EXEC_TTY,
				.timeout_ms = 2000,
				.rows = 24,
				.cols = 80,
				.cwd = "/tmp",
				.argc = 3,
				.argv = argv,
				.envc = 2,
				.envp = envp };
	struct proto_exec *d = NULL;
	struct buf b;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exec_encode(&e, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_EXEC, &len);
	assert_int_equal(proto_exec_decode(pl, len, &d), 0);
	assert_int_equal(d->flags, PROTO_EXEC_TTY);
	assert_int_equal(d->timeout_ms, 2000);
	assert_int_equal(d->rows, 24);
	assert_int_equal(d->cols, 80);
	assert_string_equal(d->cwd, "/tmp");
	assert_int_equal(d->argc, 3);
	assert_string_equal(d->argv[2], "echo hi");
	assert_null(d->argv[3]);
	assert_int_equal(d->envc, 2);
	assert_string_equal(d->envp[1], "B=x=y");
	assert_null(d->envp[2]);
	/* every truncation fails cleanly */
	for (uint32_t i = 0; i < len; i++) {
		struct proto_exec *x = (struct proto_exec *)0x1;
		assert_int_equal(proto_exec_decode(pl, i, &x), -EBADMSG);
		assert_ptr_equal(x, (struct proto_exec *)0x1);
	}
	proto_exec_free(d);
	buf_done(&b, 0);
}

static void test_exec_rejects(void **state)
{
	char *argv[] = { "x", NULL };
	char *bad_env[] = { "NOEQUALS", NULL };
	struct proto_exec e = { .argc = 0, .argv = argv };
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL); /* argc 0 */
	e.argc = 1;
	e.flags = 1u << 7;
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL); /* unknown flag */
	e.flags = 0;
	e.envc = 1;
	e.envp = bad_env;
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL);
	assert_int_equal(buf_len(&b), 0);

	/* hand-made payloads: huge argc, embedded NUL, unknown flags */
	struct proto_exec *d = NULL;
	uint8_t huge_argc[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(proto_exec_decode(huge_argc, sizeof(huge_argc), &d), -EBADMSG);
	uint8_t nul[] = { 0, 0, 0, 0, 0, 0, 0, 0,   0, 0,   0, 0, 0, 0,
			  0, 0, 1, 0, 0, 0, 3, 'a', 0, 'b', 0, 0, 0, 0 };
	assert_int_equal(proto_exec_decode(nul, sizeof(nul), &d), -EBADMSG);
	uint8_t okay[] = { 0, 0, 0, 0, 0, 0, 0, 0,   0,	  0,   0, 0, 0, 0,
			   0, 0, 1, 0, 0, 0, 3, 'a', 'c', 'b', 0, 0, 0, 0 };
	assert_int_equal(proto_exec_decode(okay, sizeof(okay), &d), 0);
	assert_string_equal(d->argv[0], "acb");
	proto_exec_free(d);
	okay[3] = 0x80;
	assert_int_equal(proto_exec_decode(okay, sizeof(okay), &d), -EBADMSG);
	buf_done(&b, 0);
}

static void test_hello_roundtrip(void **state)
{
	struct proto_hello h = { .version = PROTO_VERSION, .n_stages = 2 };
	struct proto_hello d;
	struct buf b;
	uint32_t len;
	snprintf(h.agent_version, sizeof(h.agent_version), "0.1.0");
	snprintf(h.kernel_release, sizeof(h.kernel_release), "6.1.0-capsem");
	snprintf(h.stages[0].name, sizeof(h.stages[0].name), "mounts");
	h.stages[0].usec = 812345;
	snprintf(h.stages[1].name, sizeof(h.stages[1].name), "agent_ready");
	h.stages[1].usec = 900000;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_hello_encode(&h, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_HELLO, &len);
	assert_int_equal(proto_hello_decode(pl, len, &d), 0);
	assert_int_equal(d.version, 1);
	assert_string_equal(d.kernel_release, "6.1.0-capsem");
	assert_int_equal(d.n_stages, 2);
	assert_string_equal(d.stages[1].name, "agent_ready");
	assert_int_equal(d.stages[0].usec, 812345);
	/* trailing garbage is rejected */
	uint8_t more[4096];
	memcpy(more, pl, len);
	more[len] = 0;
	assert_int_equal(proto_hello_decode(more, len + 1, &d), -EBADMSG);
	/* too many stages */
	h.n_stages = PROTO_MAX_STAGES + 1;
	assert_int_equal(proto_hello_encode(&h, &b), -EINVAL);
	buf_done(&b, 0);
}

static void test_exit_status(void **state)
{
	struct proto_exit e = { .kind = PROTO_EXIT_SIGNAL, .code = 9, .wall_us = 5 }, d;
	struct buf b;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exit_encode(&e, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_EXIT, &len);
	assert_int_equal(proto_exit_decode(pl, len, &d), 0);
	assert_int_equal(proto_exit_status(&d), 137);
	d.kind = PROTO_EXIT_CODE;
	d.code = 7;
	assert_int_equal(proto_exit_status(&d), 7);
	d.kind = PROTO_EXIT_TIMEOUT;
	assert_int_equal(proto_exit_status(&d), 124);
	/* a signal number out of range is hostile */
	uint8_t bad[33] = { 1, 0, 0, 0, 99 };
	assert_int_equal(proto_exit_decode(bad, sizeof(bad), &d), -EBADMSG);
	buf_done(&b, 0);
}

static void test_small_messages(void **state)
{
	struct buf b;
	uint32_t len, v;
	uint16_t r, c;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_u32_encode(PROTO_SIGNAL, 15, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_SIGNAL, &len);
	assert_int_equal(proto_u32_decode(pl, len, &v), 0);
	assert_int_equal(v, 15);
	assert_int_equal(proto_u32_decode(pl, len - 1, &v), -EBADMSG);
	buf_consume(&b, buf_len(&b));
	assert_int_equal(proto_winsize_encode(50, 132, &b), 0);
	pl = one_frame(&b, PROTO_WINSIZE, &len);
	assert_int_equal(proto_winsize_decode(pl, len, &r, &c), 0);
	assert_int_equal(r, 50);
	assert_int_equal(c, 132);
	buf_consume(&b, buf_len(&b));
	struct proto_error e = { .code = 2 }, de;
	snprintf(e.message, sizeof(e.message), "no such file");
	assert_int_equal(proto_error_encode(&e, &b), 0);
	pl = one_frame(&b, PROTO_ERROR, &len);
	assert_int_equal(proto_error_decode(pl, len, &de), 0);
	assert_string_equal(de.message, "no such file");
	buf_consume(&b, buf_len(&b));
	struct proto_boot_config bc = { .unix_time_ns = 123 }, dbc;
	snprintf(bc.hostname, sizeof(bc.hostname), "capsem");
	assert_int_equal(proto_boot_config_encode(&bc, &b), 0);
	pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
	assert_int_equal(proto_boot_config_decode(pl, len, &dbc), 0);
	assert_string_equal(dbc.hostname, "capsem");
	buf_done(&b, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_partial),	cmocka_unit_test(test_frame_too_big),
		cmocka_unit_test(test_exec_roundtrip),	cmocka_unit_test(test_exec_rejects),
		cmocka_unit_test(test_hello_roundtrip), cmocka_unit_test(test_exit_status),
		cmocka_unit_test(test_small_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
