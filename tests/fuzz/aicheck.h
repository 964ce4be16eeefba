/* aicheck.h - the bounds every model-call event must respect, for the fuzz targets that make
 * them (fuzz-ai.c, fuzz-ws.c): printable, terminated strings; tool names within the cap; a known
 * cost only with usage, finite and >= 0; cache and reasoning counts within their totals. */
#pragma once

#include <math.h>
#include <string.h>

#include "ai.h"

static inline void check_str(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	if (n == cap)
		__builtin_trap();
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			__builtin_trap();
}

static inline void check_event(const struct ai_event *ev)
{
	check_str(ev->model, sizeof(ev->model));
	check_str(ev->request_model, sizeof(ev->request_model));
	check_str(ev->response_id, sizeof(ev->response_id));
	check_str(ev->stop_reason, sizeof(ev->stop_reason));
	check_str(ev->error, sizeof(ev->error));
	if (ev->n_tool_names > AI_MAX_TOOL_NAMES || ev->n_tool_names > ev->tool_calls)
		__builtin_trap();
	for (unsigned i = 0; i < ev->n_tool_names; i++)
		check_str(ev->tool_names[i], sizeof(ev->tool_names[i]));
	if (ev->cost_known && (!ev->has_usage || !isfinite(ev->cost_usd) || ev->cost_usd < 0))
		__builtin_trap();
	if (!ev->cost_known && ev->cost_usd != 0)
		__builtin_trap();
	if (ev->cached_input_tokens > ev->input_tokens ||
	    ev->cache_write_tokens > ev->input_tokens || ev->reasoning_tokens > ev->output_tokens)
		__builtin_trap();
}
