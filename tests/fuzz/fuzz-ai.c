/* fuzz-ai.c - model-call parsing (src/egress/ai.c) and the price table (pricing.c) on arbitrary
 * bytes (guest requests and upstream responses are hostile). The first byte picks an endpoint
 * and a Content-Type, the second where the request body ends; the rest is request body then
 * response body. Each input is parsed in one piece, byte by byte and in odd-sized pieces: the
 * events must be identical, and every field must respect its bounds (printable, terminated
 * strings; tool names within the cap; a known cost only with usage, finite and >= 0). With the
 * first byte 0xff the rest is parsed as a price table instead. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ai.h"
#include "aicheck.h"
#include "pricing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
	enum ai_provider p;
	const char *path;
} endpoints[] = {
	{ AI_ANTHROPIC, "/v1/messages" },
	{ AI_OPENAI, "/v1/chat/completions" },
	{ AI_OPENAI, "/v1/responses" },
	{ AI_GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent" },
	{ AI_GEMINI, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse" },
	{ AI_GEMINI, "/v1internal:streamGenerateContent" },
};

static const char *const ctypes[] = { "text/event-stream", "application/json", NULL, "text/html" };

static bool same(const struct ai_event *a, const struct ai_event *b)
{
	if (a->provider != b->provider || a->api != b->api || a->status != b->status ||
	    a->streamed != b->streamed || a->complete != b->complete ||
	    a->truncated != b->truncated || a->has_usage != b->has_usage ||
	    a->input_tokens != b->input_tokens || a->output_tokens != b->output_tokens ||
	    a->cached_input_tokens != b->cached_input_tokens ||
	    a->cache_write_tokens != b->cache_write_tokens ||
	    a->reasoning_tokens != b->reasoning_tokens || a->tool_calls != b->tool_calls ||
	    a->n_tool_names != b->n_tool_names || a->cost_known != b->cost_known ||
	    a->cost_usd != b->cost_usd)
		return false;
	if (strcmp(a->model, b->model) || strcmp(a->request_model, b->request_model) ||
	    strcmp(a->response_id, b->response_id) || strcmp(a->stop_reason, b->stop_reason) ||
	    strcmp(a->error, b->error))
		return false;
	for (unsigned i = 0; i < a->n_tool_names; i++)
		if (strcmp(a->tool_names[i], b->tool_names[i]))
			return false;
	return true;
}

static void run(const struct pricing *pr, unsigned sel, const uint8_t *req, size_t reqn,
		const uint8_t *resp, size_t respn, int mode, struct ai_event *ev)
{
	unsigned e = sel % ELEMENTSOF(endpoints), ct = (sel / ELEMENTSOF(endpoints)) % 4;
	struct ai_call *c = ai_call_new(endpoints[e].p, "POST", endpoints[e].path);
	if (!c)
		__builtin_trap();
	for (int part = 0; part < 2; part++) {
		const uint8_t *p = part ? resp : req;
		size_t n = part ? respn : reqn, i = 0, k = 0;
		if (part)
			ai_call_response_start(c, 200, ctypes[ct]);
		while (i < n) {
			size_t step = mode == 0 ? n : mode == 1 ? 1 : (size_t)(p[k++ % n] % 13) + 1;
			step = step < n - i ? step : n - i;
			if (part)
				ai_call_response_body(c, p + i, step);
			else
				ai_call_request_body(c, p + i, step);
			i += step;
		}
	}
	if (ai_call_finish(c, pr, ev) != 0)
		__builtin_trap();
	ai_call_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pricing *pr;
	if (!pr && pricing_load_default(&pr) < 0)
		__builtin_trap();
	if (size < 2)
		return 0;
	if (data[0] == 0xff) {
		struct pricing *p = NULL;
		char err[128];
		if (pricing_parse((const char *)data + 1, size - 1, &p, err, sizeof(err)) == 0) {
			double usd;
			struct pricing_usage u = { 1000, 2000, 300, 400 };
			for (size_t i = 0; i < pricing_count(p); i++)
				(void)pricing_cost(p, "openai", "gpt-4o-2024", &u, &usd);
			pricing_free(p);
		}
		return 0;
	}
	size_t body = size - 2, reqn = body ? data[1] % (body + 1) : 0;
	const uint8_t *req = data + 2, *resp = data + 2 + reqn;
	size_t respn = body - reqn;
	struct ai_event a, b;
	run(pr, data[0], req, reqn, resp, respn, 0, &a);
	check_event(&a);
	for (int mode = 1; mode < 3; mode++) {
		run(pr, data[0], req, reqn, resp, respn, mode, &b);
		if (!same(&a, &b))
			__builtin_trap();
	}
	return 0;
}
