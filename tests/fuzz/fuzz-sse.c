/* fuzz-sse.c - the Server-Sent Events parser (src/egress/sse.c) on arbitrary bytes (upstream
 * servers are hostile): the input is parsed in one chunk, byte by byte and in chunks whose sizes
 * come from the input, with a small event cap (oversize events) and the default one; every split
 * must give exactly the same events, and every event must respect the cap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct log {
	struct buf b;
	size_t max;
};

static void on_event(void *userdata, const struct sse_event *ev)
{
	struct log *l = userdata;
	if (ev->data_len > l->max || strlen(ev->type) > SSE_MAX_TYPE ||
	    strlen(ev->id) > SSE_MAX_ID || ev->data[ev->data_len] != 0 ||
	    (ev->oversize && ev->data_len != 0))
		__builtin_trap();
	uint8_t sep[2] = { 0xff, ev->oversize };
	/* a log past its cap is simply cut: all runs cut it at the same place */
	(void)buf_append(&l->b, ev->type, strlen(ev->type) + 1);
	(void)buf_append(&l->b, ev->id, strlen(ev->id) + 1);
	(void)buf_append(&l->b, ev->data, ev->data_len);
	(void)buf_append(&l->b, sep, sizeof(sep));
}

/* mode: 0 one chunk, 1 byte by byte, 2 sizes from the input */
static void run(const uint8_t *data, size_t size, size_t max, int mode, bool flush, struct log *l)
{
	buf_init(&l->b, 1 << 20);
	l->max = max;
	struct sse_parser *s = sse_new(max, on_event, l);
	if (!s)
		return;
	size_t i = 0, k = 0;
	while (i < size) {
		size_t step = mode == 0	  ? size
			      : mode == 1 ? 1
					  : (size_t)(data[k++ % size] % 17) + 1;
		step = step < size - i ? step : size - i;
		sse_feed(s, data + i, step);
		i += step;
	}
	if (flush)
		sse_flush(s);
	else
		sse_end(s);
	sse_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[] = { 48, SSE_DEFAULT_MAX_EVENT };
	for (size_t m = 0; m < 2; m++) {
		for (int flush = 0; flush < 2; flush++) {
			struct log ref, other;
			run(data, size, maxes[m], 0, flush, &ref);
			for (int mode = 1; mode < 3; mode++) {
				run(data, size, maxes[m], mode, flush, &other);
				if (buf_len(&ref.b) != buf_len(&other.b) ||
				    (buf_len(&ref.b) &&
				     memcmp(buf_head(&ref.b), buf_head(&other.b), buf_len(&ref.b))))
					__builtin_trap();
				buf_done(&other.b, 0);
			}
			buf_done(&ref.b, 0);
		}
	}
	return 0;
}
