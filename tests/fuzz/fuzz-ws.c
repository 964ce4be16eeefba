/* fuzz-ws.c - WebSocket frames (src/egress/ws.c) and model calls read from them (aiws.c) on
 * arbitrary bytes (the guest's frames and the upstream's are hostile). The first two bytes say
 * where the guest's bytes end; the rest is guest bytes then upstream bytes, fed alternately in
 * pieces of a size the third byte picks. The frame reader must never hand on more bytes than it
 * was fed, nor a message piece outside a message; every model-call event must respect its bounds
 * (aicheck.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aicheck.h"
#include "aiws.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_call(void *ud, const struct ai_event *ev, const struct ai_ws_times *t)
{
	(void)ud;
	(void)t;
	check_event(ev);
}

struct count {
	size_t fed, got;
	bool open;
};

static void on_data(void *ud, int op, const uint8_t *p, size_t n, bool start, bool end,
		    bool compressed)
{
	struct count *c = ud;
	(void)p;
	(void)compressed;
	if (op != WS_OP_TEXT && op != WS_OP_BINARY)
		__builtin_trap();
	if (start == c->open)
		__builtin_trap(); /* a start inside a message, or a piece outside one */
	c->open = !end;
	c->got += n;
	if (c->got > c->fed)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t split = ((size_t)data[0] << 8 | data[1]) % (size - 2), piece = data[2] % 64 + 1;
	const uint8_t *g = data + 3, *u = data + 3 + split;
	size_t gn = split > size - 3 ? size - 3 : split, un = size - 3 - gn;
	struct ai_ws *a = ai_ws_new(AI_OPENAI, "/v1/responses", NULL, on_call, NULL);
	struct count c = { 0 };
	struct ws_reader w;
	ws_reader_init(&w, on_data, &c);
	for (size_t i = 0, j = 0; i < gn || j < un;) {
		size_t k = gn - i < piece ? gn - i : piece;
		ai_ws_from_guest(a, g + i, k);
		c.fed += k;
		(void)ws_reader_feed(&w, g + i, k);
		i += k;
		k = un - j < piece ? un - j : piece;
		ai_ws_from_upstream(a, u + j, k);
		j += k;
	}
	ai_ws_free(a);
	return 0;
}
