/* test-exectrack.c - capsem-vm's exec-session follower (src/vm/exectrack.c): the start is
 * reported when the EXEC frame has passed toward the guest, the end once, with what the frames
 * said; split and hostile input only ever stops the tracking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "buf.h"
#include "exectrack.h"
#include "macro.h"
#include "proto.h"

struct seen {
	int starts, ends;
	char argv0[32];
	char error[256];
	struct exectrack_info end;
};

static void on_start(void *userdata, const struct exectrack_info *t)
{
	struct seen *s = userdata;
	s->starts++;
	assert_non_null(t->exec);
	snprintf(s->argv0, sizeof(s->argv0), "%s", t->exec->argv[0]);
	assert_true(t->ts_start > 0);
}

static void on_end(void *userdata, const struct exectrack_info *t)
{
	struct seen *s = userdata;
	s->ends++;
	s->end = *t;
	s->end.exec = NULL;
	snprintf(s->error, sizeof(s->error), "%s", t->error ? t->error : "");
	s->end.error = NULL;
	assert_int_equal(s->starts, 1);
	assert_true(t->ts_end >= t->ts_start);
}

static const struct exectrack_ops ops = { .on_start = on_start, .on_end = on_end };

static void frame(struct buf *b, uint16_t type, const void *p, uint32_t n)
{
	assert_int_equal(proto_frame_append(b, type, p, n), 0);
}

static void exec_frame(struct buf *b, const char *cmd)
{
	char *argv[] = { (char *)cmd, "-c", "x", NULL };
	struct proto_exec ex = { .argc = 3, .argv = argv };
	assert_int_equal(proto_exec_encode(&ex, b), 0);
}

/* feed b in pieces of `step` bytes */
static void feed(struct exectrack *t, bool to_guest, const struct buf *b, size_t step)
{
	for (size_t o = 0; o < buf_len(b); o += step)
		exectrack_feed(t, to_guest, buf_head(b) + o, MIN(step, buf_len(b) - o));
}

static void test_whole_session(void **state)
{
	for (size_t step = 1; step <= 64; step *= 4) {
		struct seen s = { 0 };
		struct exectrack *t;
		struct buf h, g;
		buf_init(&h, 1 << 20);
		buf_init(&g, 1 << 20);
		assert_int_equal(exectrack_new(&ops, &s, &t), 0);
		exec_frame(&h, "sh");
		frame(&h, PROTO_STDIN, "abc", 3);
		frame(&h, PROTO_STDIN, NULL, 0);
		feed(t, true, &h, step);
		assert_int_equal(s.starts, 1);
		assert_string_equal(s.argv0, "sh");
		uint8_t pid[4] = { 0, 0, 0, 42 };
		frame(&g, PROTO_STARTED, pid, 4);
		frame(&g, PROTO_STDOUT, "hello\n", 6);
		frame(&g, PROTO_STDERR, "e", 1);
		struct buf ex;
		buf_init(&ex, 256);
		struct proto_exit x = { .kind = PROTO_EXIT_CODE, .code = 3, .wall_us = 5000 };
		assert_int_equal(proto_exit_encode(&x, &ex), 0);
		assert_int_equal(buf_append(&g, buf_head(&ex), buf_len(&ex)), 0);
		buf_done(&ex, 0);
		feed(t, false, &g, step);
		assert_int_equal(s.ends, 1);
		assert_true(s.end.got_exit && s.end.started);
		assert_int_equal(s.end.pid, 42);
		assert_int_equal(s.end.exit.code, 3);
		assert_int_equal(s.end.stdin_bytes, 3);
		assert_int_equal(s.end.stdout_bytes, 6);
		assert_int_equal(s.end.stderr_bytes, 1);
		exectrack_close(t, "the guest reset the connection"); /* reported already */
		assert_int_equal(s.ends, 1);
		buf_done(&h, 0);
		buf_done(&g, 0);
	}
}

/* no EXIT: the end says why; nothing at all when there was never an EXEC */
static void test_no_exit(void **state)
{
	struct seen s = { 0 };
	struct exectrack *t;
	struct buf h;
	buf_init(&h, 1 << 20);
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	exec_frame(&h, "sleep");
	exectrack_feed(t, true, buf_head(&h), buf_len(&h) - 1);
	assert_int_equal(s.starts, 0); /* not whole yet */
	exectrack_feed(t, true, buf_head(&h) + buf_len(&h) - 1, 1);
	assert_int_equal(s.starts, 1);
	exectrack_close(t, "the vsock device was reset");
	assert_int_equal(s.ends, 1);
	assert_false(s.end.got_exit);
	assert_string_equal(s.error, "the vsock device was reset");

	/* an orderly close without EXIT has a reason too */
	memset(&s, 0, sizeof(s));
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	exectrack_feed(t, true, buf_head(&h), buf_len(&h));
	exectrack_close(t, NULL);
	assert_int_equal(s.ends, 1);
	assert_non_null(strstr(s.error, "closed before"));

	/* a refusal */
	memset(&s, 0, sizeof(s));
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	exectrack_feed(t, true, buf_head(&h), buf_len(&h));
	struct buf g;
	buf_init(&g, 4096);
	struct proto_error e = { .code = 2 };
	snprintf(e.message, sizeof(e.message), "no such file");
	assert_int_equal(proto_error_encode(&e, &g), 0);
	exectrack_feed(t, false, buf_head(&g), buf_len(&g));
	assert_int_equal(s.ends, 1);
	assert_non_null(strstr(s.error, "no such file"));
	exectrack_close(t, NULL);
	buf_done(&g, 0);

	/* never an EXEC: never reported */
	memset(&s, 0, sizeof(s));
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	exectrack_close(t, "host closed before CONNECT");
	assert_int_equal(s.starts + s.ends, 0);
	buf_done(&h, 0);
}

/* hostile framings stop the tracking, reported as the end's error once started */
static void test_hostile(void **state)
{
	struct seen s = { 0 };
	struct exectrack *t;
	struct buf h;
	buf_init(&h, 1 << 20);
	/* first frame not EXEC */
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	frame(&h, PROTO_STDIN, "x", 1);
	exectrack_feed(t, true, buf_head(&h), buf_len(&h));
	exectrack_close(t, NULL);
	assert_int_equal(s.starts + s.ends, 0);
	buf_done(&h, 0);

	/* a frame over the cap from the guest after the start */
	buf_init(&h, 1 << 20);
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	exec_frame(&h, "sh");
	exectrack_feed(t, true, buf_head(&h), buf_len(&h));
	const uint8_t huge[6] = { 0x7f, 0xff, 0xff, 0xff, 0, PROTO_STDOUT };
	exectrack_feed(t, false, huge, sizeof(huge));
	assert_int_equal(s.ends, 1);
	assert_non_null(strstr(s.error, "could not be followed"));
	exectrack_feed(t, false, huge, sizeof(huge)); /* ignored from now on */
	exectrack_close(t, NULL);
	assert_int_equal(s.ends, 1);

	/* a malformed EXEC payload */
	memset(&s, 0, sizeof(s));
	assert_int_equal(exectrack_new(&ops, &s, &t), 0);
	struct buf bad;
	buf_init(&bad, 64);
	frame(&bad, PROTO_EXEC, "\1\2\3", 3);
	exectrack_feed(t, true, buf_head(&bad), buf_len(&bad));
	exectrack_close(t, NULL);
	assert_int_equal(s.starts + s.ends, 0);
	buf_done(&bad, 0);
	buf_done(&h, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_session),
		cmocka_unit_test(test_no_exit),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
