/* fuzz-wsgw.c - capsem-gateway's reading of browser WebSocket frames: the frame reader
 * (src/egress/ws.c) as a server runs it (masks required, control frames handed on), text
 * messages gathered as wgws.c does and parsed as terminal resizes, binary pieces fed to the
 * terminal's output ring. Arbitrary bytes must never make the reader hand on more than it was
 * fed, a control payload over 125 bytes, or a piece outside a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wgcheck.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct st {
	size_t fed, got;
	bool open;
	char text[4096];
	size_t tlen;
	bool over;
	struct wg_ring ring;
};

static void on_data(void *ud, int op, const uint8_t *p, size_t n, bool start, bool end,
		    bool compressed)
{
	struct st *s = ud;
	if (start == s->open || compressed)
		__builtin_trap();
	s->open = !end;
	s->got += n;
	if (s->got > s->fed)
		__builtin_trap();
	if (op == WS_OP_BINARY) {
		wg_ring_put(&s->ring, p, n);
		return;
	}
	if (start) {
		s->tlen = 0;
		s->over = false;
	}
	if (s->tlen + n > sizeof(s->text))
		s->over = true;
	else
		memcpy(s->text + s->tlen, p, n), s->tlen += n;
	if (end && !s->over) {
		uint16_t r, c;
		if (wg_parse_resize(s->text, s->tlen, &r, &c) == 0 &&
		    (!r || !c || r > 1000 || c > 1000))
			__builtin_trap();
	}
}

static void on_control(void *ud, int op, const uint8_t *p, size_t n)
{
	if (n > 125 || op < 8 || op > 10)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static struct st s;
	memset(&s, 0, sizeof(s));
	struct ws_reader w;
	ws_reader_init(&w, on_data, &s);
	w.on_control = on_control;
	w.require_mask = true;
	size_t piece = data[0] % 64 + 1;
	for (size_t i = 1; i < size; i += piece) {
		size_t n = size - i < piece ? size - i : piece;
		s.fed += n;
		if (ws_reader_feed(&w, data + i, n) < 0)
			break;
	}
	return 0;
}
