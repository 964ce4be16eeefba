/* aiws.c - model calls over a WebSocket (aiws.h).
 *
 * Trust boundary: see aiws.h. The frame readers stop at the first protocol error in their
 * direction; the relay goes on regardless.
 */
#include "aiws.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "macro.h"
#include "ws.h"

struct ai_ws {
	enum ai_provider prov;
	char path[256];
	const struct pricing *pricing;
	ai_ws_fn fn;
	void *userdata;
	struct ws_reader guest, upstream;
	struct ai_call *cur;
	struct ai_ws_times t;
	struct buf msg; /* the server message being read */
	bool msg_over;	/* it is over AI_MAX_EVENT (or compressed): not kept */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void finish(struct ai_ws *a)
{
	struct ai_event ev;
	if (!a->cur)
		return;
	if (ai_call_finish(a->cur, a->pricing, &ev) == 0 && a->fn)
		a->fn(a->userdata, &ev, &a->t);
	ai_call_free(a->cur);
	a->cur = NULL;
}

static void on_guest(void *userdata, int op, const uint8_t *p, size_t n, bool start, bool end,
		     bool compressed)
{
	struct ai_ws *a = userdata;
	if (op != WS_OP_TEXT)
		return;
	if (start) {
		finish(a); /* a new request: the open call got no terminal event */
		a->cur = ai_call_new(a->prov, "POST", a->path);
		a->t = (struct ai_ws_times){ .start_ns = mono_ns() };
		if (a->cur && compressed)
			ai_call_response_message(a->cur, NULL, 0, true);
	}
	if (a->cur && !compressed)
		ai_call_request_body(a->cur, p, n);
	(void)end;
}

static void on_upstream(void *userdata, int op, const uint8_t *p, size_t n, bool start, bool end,
			bool compressed)
{
	struct ai_ws *a = userdata;
	if (op != WS_OP_TEXT)
		return;
	if (start) {
		buf_consume(&a->msg, buf_len(&a->msg));
		a->msg_over = compressed;
		if (a->cur && !a->t.first_ns)
			a->t.first_ns = mono_ns();
	}
	if (!a->msg_over && buf_append(&a->msg, p, n) < 0) {
		a->msg_over = true;
		buf_done(&a->msg, 0);
	}
	if (!end || !a->cur)
		return;
	ai_call_response_message(a->cur, buf_head(&a->msg), buf_len(&a->msg), a->msg_over);
	if (ai_call_ended(a->cur)) /* response.completed/.failed/.incomplete or error */
		finish(a);
	buf_consume(&a->msg, buf_len(&a->msg));
}

struct ai_ws *ai_ws_new(enum ai_provider p, const char *path, const struct pricing *pricing,
			ai_ws_fn fn, void *userdata)
{
	size_t l = strcspn(path, "?");
	if (p != AI_OPENAI || l >= sizeof(((struct ai_ws *)0)->path) || l < 10 ||
	    memcmp(path + l - 10, "/responses", 10) != 0)
		return NULL;
	struct ai_ws *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->prov = p;
	memcpy(a->path, path, l);
	a->pricing = pricing;
	a->fn = fn;
	a->userdata = userdata;
	ws_reader_init(&a->guest, on_guest, a);
	ws_reader_init(&a->upstream, on_upstream, a);
	buf_init(&a->msg, AI_MAX_EVENT);
	return a;
}

void ai_ws_from_guest(struct ai_ws *a, const void *p, size_t n)
{
	if (a)
		(void)ws_reader_feed(&a->guest, p, n);
}

void ai_ws_from_upstream(struct ai_ws *a, const void *p, size_t n)
{
	if (a)
		(void)ws_reader_feed(&a->upstream, p, n);
}

void ai_ws_free(struct ai_ws *a)
{
	if (!a)
		return;
	finish(a);
	buf_done(&a->msg, 0);
	free(a);
}
