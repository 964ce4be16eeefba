/* test-ws.c - the WebSocket frame reader (ws.c) and model calls read from a Responses API
 * WebSocket (aiws.c): frame lengths and masking, fragmentation around control frames, the same
 * result fed in one piece or byte by byte, protocol errors, compressed messages; a session with
 * two responses, an error event and a connection cut mid-response. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aiws.h"
#include "ws.h"

/* ---- frames ---- */

struct frames {
	uint8_t out[1 << 18];
	size_t n;
};

/* One frame: b0 (FIN|RSV|opcode), payload, masked or not. */
static void frame(struct frames *f, uint8_t b0, const void *p, size_t n, int masked)
{
	static const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
	uint8_t *o = f->out + f->n;
	size_t i = 0;
	o[i++] = b0;
	uint8_t m = masked ? 0x80 : 0;
	if (n < 126) {
		o[i++] = m | (uint8_t)n;
	} else if (n < 65536) {
		o[i++] = m | 126;
		o[i++] = (uint8_t)(n >> 8);
		o[i++] = (uint8_t)n;
	} else {
		o[i++] = m | 127;
		for (int k = 7; k >= 0; k--)
			o[i++] = (uint8_t)((uint64_t)n >> (8 * k));
	}
	if (masked) {
		memcpy(o + i, key, 4);
		i += 4;
	}
	for (size_t k = 0; k < n; k++)
		o[i + k] = ((const uint8_t *)p)[k] ^ (masked ? key[k & 3] : 0);
	f->n += i + n;
	assert_true(f->n < sizeof(f->out));
}

struct got {
	char msgs[8][1 << 17];
	size_t len[8];
	int op[8];
	bool compressed[8];
	size_t n;
	bool open;
};

static void on_data(void *ud, int op, const uint8_t *p, size_t n, bool start, bool end,
		    bool compressed)
{
	struct got *g = ud;
	if (start) {
		assert_false(g->open);
		assert_true(g->n < 8);
		g->open = true;
		g->op[g->n] = op;
		g->compressed[g->n] = compressed;
		g->len[g->n] = 0;
	}
	assert_true(g->open);
	memcpy(g->msgs[g->n] + g->len[g->n], p, n);
	g->len[g->n] += n;
	if (end) {
		g->open = false;
		g->n++;
	}
}

static struct got *feed(const struct frames *f, size_t piece, int *ret)
{
	struct got *g = calloc(1, sizeof(*g));
	struct ws_reader w;
	ws_reader_init(&w, on_data, g);
	int r = 0;
	for (size_t i = 0; i < f->n && r == 0; i += piece)
		r = ws_reader_feed(&w, f->out + i, i + piece > f->n ? f->n - i : piece);
	*ret = r;
	return g;
}

static void test_frames(void **state)
{
	(void)state;
	static struct frames f;
	static char big[70000];
	memset(big, 'b', sizeof(big));
	f.n = 0;
	frame(&f, 0x81, "hello", 5, 1);	      /* masked text, one frame */
	frame(&f, 0x01, "frag", 4, 0);	      /* text, not final */
	frame(&f, 0x89, "pi", 2, 1);	      /* a ping in between */
	frame(&f, 0x00, "-men", 4, 0);	      /* continuation */
	frame(&f, 0x80, "ted", 3, 0);	      /* final continuation */
	frame(&f, 0x82, big, 300, 1);	      /* 16-bit length, binary */
	frame(&f, 0x81, big, sizeof(big), 0); /* 64-bit length */
	frame(&f, 0x81, "", 0, 1);	      /* empty message */
	frame(&f, 0xc1, "\x01\x02", 2, 0);    /* RSV1: compressed */
	frame(&f, 0x88, "\x03\xe8", 2, 1);    /* close */
	for (size_t piece = 1; piece <= f.n; piece = piece < 8 ? piece + 1 : piece * 7) {
		int r;
		struct got *g = feed(&f, piece, &r);
		assert_int_equal(r, 0);
		assert_int_equal(g->n, 6);
		assert_int_equal(g->len[0], 5);
		assert_memory_equal(g->msgs[0], "hello", 5);
		assert_int_equal(g->len[1], 11);
		assert_memory_equal(g->msgs[1], "frag-mented", 11);
		assert_int_equal(g->op[2], WS_OP_BINARY);
		assert_int_equal(g->len[2], 300);
		assert_int_equal(g->len[3], sizeof(big));
		assert_memory_equal(g->msgs[3], big, sizeof(big));
		assert_int_equal(g->len[4], 0);
		assert_true(g->compressed[5] && !g->compressed[4]);
		free(g);
	}
}

static void test_protocol_errors(void **state)
{
	(void)state;
	static struct frames f;
	static const struct {
		uint8_t b0;
		size_t n;
		const char *why;
	} bad[] = {
		{ 0xa1, 1, "RSV2" },
		{ 0x80, 1, "a continuation without a message" },
		{ 0x09, 1, "a control frame not final" },
		{ 0x83, 1, "opcode 3" },
		{ 0x8b, 1, "opcode 11" },
		{ 0x89, 126, "a control frame over 125 bytes" },
		{ 0xc9, 1, "RSV1 on a control frame" },
	};
	char pay[200] = { 0 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;
		f.n = 0;
		frame(&f, bad[i].b0, pay, bad[i].n, 0);
		frame(&f, 0x81, "after", 5, 0);
		struct got *g = feed(&f, f.n, &r);
		assert_int_equal(r, -EPROTO);
		assert_int_equal(g->n, 0); /* nothing after the error is read */
		free(g);
	}
	/* a new data message while one is open; RSV1 on a continuation */
	int r;
	f.n = 0;
	frame(&f, 0x01, "a", 1, 0);
	frame(&f, 0x81, "b", 1, 0);
	free(feed(&f, 1, &r));
	assert_int_equal(r, -EPROTO);
	f.n = 0;
	frame(&f, 0x01, "a", 1, 0);
	frame(&f, 0xc0, "b", 1, 0);
	free(feed(&f, 1, &r));
	assert_int_equal(r, -EPROTO);
	/* a 64-bit length with the top bit set */
	struct ws_reader w;
	ws_reader_init(&w, NULL, NULL);
	const uint8_t huge[] = { 0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0 };
	assert_int_equal(ws_reader_feed(&w, huge, sizeof(huge)), -EPROTO);
	assert_int_equal(ws_reader_feed(&w, "x", 1), -EPROTO);
}

/* ---- model calls over the socket ---- */

struct calls {
	struct ai_event ev[4];
	size_t n;
};

static void on_call(void *ud, const struct ai_event *ev, const struct ai_ws_times *t)
{
	struct calls *c = ud;
	assert_true(t->start_ns > 0 && (t->first_ns == 0 || t->first_ns >= t->start_ns));
	assert_true(c->n < 4);
	c->ev[c->n++] = *ev;
}

static const char create[] = "{\"type\":\"response.create\",\"model\":\"gpt-5\",\"input\":\"hi\"}";
static const char created[] =
	"{\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-5-2025\","
	"\"status\":\"in_progress\",\"error\":null}}";
static const char delta[] = "{\"type\":\"response.output_text.delta\",\"delta\":\"Hel\"}";
static const char completed[] =
	"{\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-5-2025\","
	"\"status\":\"completed\",\"error\":null,\"output\":[{\"type\":\"message\",\"content\":[{"
	"\"type\":\"output_text\",\"text\":\"Hello\"}]}],\"usage\":{\"input_tokens\":11,"
	"\"output_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":4}}}}";
static const char err[] = "{\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow "
			  "down\"}";

static void test_responses_session(void **state)
{
	(void)state;
	static struct frames g, u;
	struct calls c = { 0 };
	assert_null(ai_ws_new(AI_OPENAI, "/v1/chat/completions", NULL, on_call, &c));
	assert_null(ai_ws_new(AI_ANTHROPIC, "/v1/responses", NULL, on_call, &c));
	struct ai_ws *a = ai_ws_new(AI_OPENAI, "/v1/responses?x=1", NULL, on_call, &c);
	assert_non_null(a);

	/* a request in two fragments, answered by three events, byte by byte */
	g.n = u.n = 0;
	frame(&g, 0x01, create, 20, 1);
	frame(&g, 0x80, create + 20, strlen(create) - 20, 1);
	frame(&u, 0x81, created, strlen(created), 0);
	frame(&u, 0x81, delta, strlen(delta), 0);
	frame(&u, 0x81, completed, strlen(completed), 0);
	for (size_t i = 0; i < g.n; i++)
		ai_ws_from_guest(a, g.out + i, 1);
	for (size_t i = 0; i < u.n; i++) {
		assert_int_equal(c.n, 0);
		ai_ws_from_upstream(a, u.out + i, 1);
	}
	assert_int_equal(c.n, 1); /* handed on at response.completed, not at the close */
	assert_string_equal(c.ev[0].provider_name, "openai");
	assert_string_equal(c.ev[0].api_name, "responses");
	assert_string_equal(c.ev[0].request_model, "gpt-5");
	assert_string_equal(c.ev[0].model, "gpt-5-2025");
	assert_string_equal(c.ev[0].response_id, "resp_1");
	assert_int_equal(c.ev[0].status, 101);
	assert_true(c.ev[0].streamed && c.ev[0].complete && c.ev[0].has_usage);
	assert_int_equal(c.ev[0].input_tokens, 11);
	assert_int_equal(c.ev[0].output_tokens, 7);
	assert_int_equal(c.ev[0].cached_input_tokens, 4);

	/* a second request gets an error event; a third is cut off by the close */
	g.n = u.n = 0;
	frame(&g, 0x81, create, strlen(create), 1);
	frame(&u, 0x81, err, strlen(err), 0);
	ai_ws_from_guest(a, g.out, g.n);
	ai_ws_from_upstream(a, u.out, u.n);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ev[1].error, "rate_limit_exceeded");
	g.n = u.n = 0;
	frame(&g, 0x81, create, strlen(create), 1);
	frame(&u, 0x81, created, strlen(created), 0);
	ai_ws_from_guest(a, g.out, g.n);
	ai_ws_from_upstream(a, u.out, u.n);
	assert_int_equal(c.n, 2);
	ai_ws_free(a);
	assert_int_equal(c.n, 3);
	assert_false(c.ev[2].complete);
	assert_string_equal(c.ev[2].response_id, "resp_1");
}

static void test_compressed_and_broken(void **state)
{
	(void)state;
	static struct frames g, u;
	struct calls c = { 0 };
	struct ai_ws *a = ai_ws_new(AI_OPENAI, "/v1/responses", NULL, on_call, &c);
	g.n = u.n = 0;
	frame(&g, 0xc1, "\x4a\x4c", 2, 1); /* a compressed request: a call, unreadable */
	frame(&u, 0xc1, "\x4a\x4c", 2, 0);
	ai_ws_from_guest(a, g.out, g.n);
	ai_ws_from_upstream(a, u.out, u.n);
	/* a server that breaks the protocol: its direction stops, the call ends at the close */
	ai_ws_from_upstream(a, "\xa1\x00", 2);
	u.n = 0;
	frame(&u, 0x81, completed, strlen(completed), 0);
	ai_ws_from_upstream(a, u.out, u.n);
	ai_ws_free(a);
	assert_int_equal(c.n, 1);
	assert_true(c.ev[0].truncated);
	assert_false(c.ev[0].complete);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frames),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_responses_session),
		cmocka_unit_test(test_compressed_and_broken),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
