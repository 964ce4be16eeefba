/* test-ai.c - model-call events (src/egress/ai.c) and prices (pricing.c): golden transcripts of
 * every provider and endpoint (tests/data/ai/: JSON bodies, SSE streams, Gemini's JSON-array
 * stream, Code Assist envelopes, error bodies), each fed whole, byte by byte and in odd-sized
 * pieces with the same result; endpoint recognition; the request-body model scanner; caps and
 * truncation; the price table's matching rules, tiers and load errors. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai.h"
#include "fdutil.h"
#include "pricing.h"

#ifndef AI_TESTDATA
#error "AI_TESTDATA must name tests/data/ai"
#endif

static struct pricing *prices;

static char *load(const char *name, size_t *ret_len)
{
	char path[1024];
	char *data = NULL;
	snprintf(path, sizeof(path), "%s/%s", AI_TESTDATA, name);
	assert_int_equal(read_file_small(path, 1 << 20, &data, ret_len), 0);
	return data;
}

struct golden {
	const char *host, *path;
	const char *request; /* file or NULL */
	int status;
	const char *ctype;
	const char *response; /* file */
	/* expected */
	enum ai_provider prov;
	const char *model, *request_model, *id;
	bool has_usage;
	uint64_t in, out, cached, cwrite, reasoning;
	unsigned tool_calls;
	const char *tools; /* names joined with ',' */
	const char *stop, *error;
	bool streamed, complete, cost_known;
	double cost;
};

static const struct golden goldens[] = {
	{ "api.anthropic.com",
	  "/v1/messages?beta=true",
	  "anthropic-request.json",
	  200,
	  "text/event-stream; charset=utf-8",
	  "anthropic-messages-stream.sse",
	  AI_ANTHROPIC,
	  "claude-sonnet-4-5-20250929",
	  "claude-sonnet-4-5",
	  "msg_01XFDUDYJgAACzvnptvVoYEL",
	  true,
	  472 + 1024 + 20480,
	  89,
	  20480,
	  1024,
	  0,
	  1,
	  "get_weather",
	  "tool_use",
	  "",
	  true,
	  true,
	  true,
	  (472 * 3.0 + 20480 * 0.30 + 1024 * 3.75 + 89 * 15.0) / 1e6 },
	{ "API.Anthropic.com.",
	  "/v1/messages",
	  NULL,
	  200,
	  "application/json",
	  "anthropic-messages.json",
	  AI_ANTHROPIC,
	  "claude-haiku-4-5-20251001",
	  "",
	  "msg_01Aq9w938a90dw8q2kcyKXvG",
	  true,
	  2095,
	  503,
	  0,
	  0,
	  0,
	  2,
	  "search_docs,read_file",
	  "tool_use",
	  "",
	  false,
	  true,
	  true,
	  (2095 * 1.0 + 503 * 5.0) / 1e6 },
	{ "api.anthropic.com",
	  "/v1/messages",
	  "anthropic-request.json",
	  529,
	  "application/json",
	  "anthropic-error.json",
	  AI_ANTHROPIC,
	  "claude-sonnet-4-5",
	  "claude-sonnet-4-5",
	  "",
	  false,
	  0,
	  0,
	  0,
	  0,
	  0,
	  0,
	  "",
	  "",
	  "overloaded_error",
	  false,
	  false,
	  false,
	  0 },
	{ "api.openai.com",
	  "/v1/chat/completions",
	  "openai-chat-request.json",
	  200,
	  "text/event-stream",
	  "openai-chat-stream.sse",
	  AI_OPENAI,
	  "gpt-4o-2024-08-06",
	  "gpt-4o",
	  "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
	  true,
	  1234,
	  56,
	  1024,
	  0,
	  0,
	  2,
	  "get_weather,get_local_time",
	  "tool_calls",
	  "",
	  true,
	  true,
	  true,
	  (210 * 2.50 + 1024 * 1.25 + 56 * 10.0) / 1e6 },
	{ "api.openai.com",
	  "/v1/chat/completions",
	  NULL,
	  200,
	  "application/json",
	  "openai-chat.json",
	  AI_OPENAI,
	  "gpt-4o-mini-2024-07-18",
	  "",
	  "chatcmpl-abc123XyZ7890",
	  true,
	  82,
	  17,
	  0,
	  0,
	  0,
	  1,
	  "get_current_weather",
	  "tool_calls",
	  "",
	  false,
	  true,
	  true,
	  (82 * 0.15 + 17 * 0.60) / 1e6 },
	{ "api.openai.com",
	  "/v1/chat/completions",
	  "openai-chat-request.json",
	  429,
	  "application/json",
	  "openai-error.json",
	  AI_OPENAI,
	  "gpt-4o",
	  "gpt-4o",
	  "",
	  false,
	  0,
	  0,
	  0,
	  0,
	  0,
	  0,
	  "",
	  "",
	  "rate_limit_exceeded",
	  false,
	  false,
	  false,
	  0 },
	{ "api.openai.com",
	  "/v1/responses",
	  NULL,
	  200,
	  "text/event-stream",
	  "openai-responses-stream.sse",
	  AI_OPENAI,
	  "gpt-5-2025-08-07",
	  "",
	  "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",
	  true,
	  3200,
	  270,
	  2048,
	  0,
	  192,
	  1,
	  "get_weather",
	  "completed",
	  "",
	  true,
	  true,
	  true,
	  (1152 * 1.25 + 2048 * 0.125 + 270 * 10.0) / 1e6 },
	{ "api.openai.com",
	  "/v1/responses",
	  NULL,
	  200,
	  "application/json",
	  "openai-responses.json",
	  AI_OPENAI,
	  "o4-mini-2025-04-16",
	  "",
	  "resp_6820f382ee1c8191bc096bee70894d040ac5ba57aafcbac7",
	  true,
	  5000,
	  800,
	  0,
	  0,
	  512,
	  1,
	  "web_search",
	  "completed",
	  "",
	  false,
	  true,
	  true,
	  (5000 * 1.10 + 800 * 4.40) / 1e6 },
	{ "generativelanguage.googleapis.com",
	  "/v1beta/models/gemini-2.5-flash:generateContent",
	  NULL,
	  200,
	  "application/json; charset=UTF-8",
	  "gemini-generate.json",
	  AI_GEMINI,
	  "gemini-2.5-flash",
	  "gemini-2.5-flash",
	  "mAitaLmkHPPlz7IPvtfUqQ4",
	  true,
	  1200,
	  240,
	  1000,
	  0,
	  200,
	  1,
	  "schedule_meeting",
	  "STOP",
	  "",
	  false,
	  true,
	  true,
	  (200 * 0.30 + 1000 * 0.03 + 240 * 2.50) / 1e6 },
	{ "generativelanguage.googleapis.com",
	  "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
	  NULL,
	  200,
	  "text/event-stream",
	  "gemini-stream.sse",
	  AI_GEMINI,
	  "gemini-2.5-pro",
	  "gemini-2.5-pro",
	  "OyKtaIDdCfSWz7IPzrHN4Qc",
	  true,
	  250000,
	  530,
	  0,
	  0,
	  500,
	  0,
	  "",
	  "STOP",
	  "",
	  true,
	  true,
	  true,
	  (250000 * 2.50 + 530 * 15.0) / 1e6 /* the >200k tier */ },
	{ "generativelanguage.googleapis.com",
	  "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
	  NULL,
	  200,
	  "application/json",
	  "gemini-stream-array.json",
	  AI_GEMINI,
	  "gemini-2.0-flash",
	  "gemini-2.0-flash",
	  "3xmtaNXhJ8e_z7IP4pLv8Qs",
	  true,
	  500,
	  25,
	  0,
	  0,
	  0,
	  2,
	  "get_weather,get_local_time",
	  "STOP",
	  "",
	  true,
	  true,
	  true,
	  (500 * 0.10 + 25 * 0.40) / 1e6 },
	{ "cloudcode-pa.googleapis.com",
	  "/v1internal:streamGenerateContent?alt=sse",
	  "gemini-codeassist-request.json",
	  200,
	  "text/event-stream",
	  "gemini-codeassist-stream.sse",
	  AI_GEMINI,
	  "gemini-2.5-pro",
	  "gemini-2.5-pro",
	  "n7W1aKyDMqCsz7IPkOfNoQ4",
	  true,
	  9000,
	  171,
	  8192,
	  0,
	  140,
	  1,
	  "read_file",
	  "STOP",
	  "",
	  true,
	  true,
	  true,
	  (808 * 1.25 + 8192 * 0.125 + 171 * 10.0) / 1e6 },
	{ "generativelanguage.googleapis.com",
	  "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
	  NULL,
	  429,
	  "application/json",
	  "gemini-error.json",
	  AI_GEMINI,
	  "gemini-2.5-flash",
	  "gemini-2.5-flash",
	  "",
	  false,
	  0,
	  0,
	  0,
	  0,
	  0,
	  0,
	  "",
	  "",
	  "RESOURCE_EXHAUSTED",
	  true,
	  true,
	  false,
	  0 },
};

static void feed(void (*fn)(struct ai_call *, const void *, size_t), struct ai_call *c,
		 const char *p, size_t n, size_t step)
{
	if (step == 0)
		step = n ? n : 1;
	for (size_t i = 0; i < n; i += step)
		fn(c, p + i, MIN(step, n - i));
}

static void run_golden(const struct golden *g, size_t step, struct ai_event *ev)
{
	enum ai_provider p = ai_provider_for(g->host, g->path);
	assert_int_equal(p, g->prov);
	_cleanup_ai_call_free_ struct ai_call *c = ai_call_new(p, "POST", g->path);
	assert_non_null(c);
	size_t n;
	if (g->request) {
		_cleanup_free_ char *req = load(g->request, &n);
		feed(ai_call_request_body, c, req, n, step);
	}
	ai_call_response_start(c, g->status, g->ctype);
	_cleanup_free_ char *resp = load(g->response, &n);
	feed(ai_call_response_body, c, resp, n, step);
	assert_int_equal(ai_call_finish(c, prices, ev), 0);
}

static void check_golden(const struct golden *g, const struct ai_event *ev)
{
	char tools[1024] = "";
	size_t tl = 0;
	assert_int_equal(ev->provider, g->prov);
	assert_string_equal(ev->provider_name, ai_provider_name(g->prov));
	assert_string_equal(ev->model, g->model);
	assert_string_equal(ev->request_model, g->request_model);
	assert_string_equal(ev->response_id, g->id);
	assert_int_equal(ev->status, g->status);
	assert_int_equal(ev->has_usage, g->has_usage);
	assert_int_equal(ev->input_tokens, g->in);
	assert_int_equal(ev->output_tokens, g->out);
	assert_int_equal(ev->cached_input_tokens, g->cached);
	assert_int_equal(ev->cache_write_tokens, g->cwrite);
	assert_int_equal(ev->reasoning_tokens, g->reasoning);
	assert_int_equal(ev->tool_calls, g->tool_calls);
	for (unsigned i = 0; i < ev->n_tool_names; i++)
		tl += (size_t)snprintf(tools + tl, sizeof(tools) - tl, "%s%s", i ? "," : "",
				       ev->tool_names[i]);
	assert_string_equal(tools, g->tools);
	assert_string_equal(ev->stop_reason, g->stop);
	assert_string_equal(ev->error, g->error);
	assert_int_equal(ev->streamed, g->streamed);
	assert_int_equal(ev->complete, g->complete);
	assert_false(ev->truncated);
	assert_int_equal(ev->cost_known, g->cost_known);
	if (g->cost_known)
		assert_true(fabs(ev->cost_usd - g->cost) < 1e-12);
	else
		assert_true(ev->cost_usd == 0);
}

static void test_goldens(void **state)
{
	static const size_t steps[] = { 0, 1, 2, 3, 7, 64, 1000 };
	for (size_t i = 0; i < ELEMENTSOF(goldens); i++) {
		print_message("  %s %s\n", goldens[i].host, goldens[i].response);
		for (size_t s = 0; s < ELEMENTSOF(steps); s++) {
			struct ai_event ev;
			run_golden(&goldens[i], steps[s], &ev);
			check_golden(&goldens[i], &ev);
		}
	}
}

static void test_endpoints(void **state)
{
	static const struct {
		const char *host, *path;
		enum ai_provider want;
	} cases[] = {
		{ "api.anthropic.com", "/v1/messages", AI_ANTHROPIC },
		{ "api.anthropic.com:443", "/v1/messages?beta=true", AI_ANTHROPIC },
		{ "api.anthropic.com", "/v1/messages/count_tokens", AI_NONE },
		{ "api.anthropic.com", "/v1/messages/batches", AI_NONE },
		{ "api.anthropic.com", "/v1/models", AI_NONE },
		{ "api.anthropic.com", "/v1/chat/completions", AI_NONE },
		{ "anthropic.com", "/v1/messages", AI_NONE },
		{ "api.anthropic.com.evil.test", "/v1/messages", AI_NONE },
		{ "xapi.anthropic.com", "/v1/messages", AI_NONE },
		{ "api.openai.com", "/v1/chat/completions", AI_OPENAI },
		{ "api.openai.com", "/v1/responses", AI_OPENAI },
		{ "api.openai.com", "/v1/responses/resp_123", AI_NONE },
		{ "api.openai.com", "/v1/embeddings", AI_NONE },
		{ "api.openai.com", "/v1/messages", AI_NONE },
		{ "generativelanguage.googleapis.com",
		  "/v1beta/models/gemini-2.5-pro:generateContent", AI_GEMINI },
		{ "generativelanguage.googleapis.com",
		  "/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=x", AI_GEMINI },
		{ "generativelanguage.googleapis.com",
		  "/v1alpha/tunedModels/my-model:generateContent", AI_GEMINI },
		{ "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro:countTokens",
		  AI_NONE },
		{ "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro", AI_NONE },
		{ "generativelanguage.googleapis.com", "/v1beta/models/:generateContent", AI_NONE },
		{ "generativelanguage.googleapis.com", "/v1beta/models/a/b:generateContent",
		  AI_NONE },
		{ "generativelanguage.googleapis.com", "/v2/models/m:generateContent", AI_NONE },
		{ "generativelanguage.googleapis.com", "/v1beta/files/m:generateContent", AI_NONE },
		{ "daily-cloudcode-pa.googleapis.com", "/v1internal:generateContent", AI_GEMINI },
		{ "cloudcode-pa.googleapis.com", "/v1internal:loadCodeAssist", AI_NONE },
		{ "example.com", "/v1/messages", AI_NONE },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		if (ai_provider_for(cases[i].host, cases[i].path) != cases[i].want)
			print_message("  %s %s\n", cases[i].host, cases[i].path);
		assert_int_equal(ai_provider_for(cases[i].host, cases[i].path), cases[i].want);
	}
	assert_int_equal(ai_provider_for(NULL, "/v1/messages"), AI_NONE);
	assert_null(ai_call_new(AI_ANTHROPIC, "GET", "/v1/messages"));
	assert_null(ai_call_new(AI_ANTHROPIC, "post", "/v1/messages"));
	assert_null(ai_call_new(AI_OPENAI, "POST", "/v1/messages"));
	assert_null(ai_call_new(AI_NONE, "POST", "/v1/messages"));
	struct ai_call *c =
		ai_call_new(AI_GEMINI, "POST", "/v1beta/models/gemini-2.5-flash:generateContent");
	assert_non_null(c);
	struct ai_event ev;
	assert_int_equal(ai_call_finish(c, prices, &ev), 0);
	assert_int_equal(ai_call_finish(c, prices, &ev), -EINVAL);
	assert_string_equal(ev.api_name, "generateContent");
	assert_string_equal(ev.model, "gemini-2.5-flash");
	assert_int_equal(ev.status, 0); /* no response */
	assert_false(ev.cost_known);
	ai_call_free(c);
	ai_call_free(NULL);
}

/* The request scanner: the top-level model wherever it is, never a nested or quoted one. */
static void test_request_model(void **state)
{
	static const struct {
		const char *body, *want;
	} cases[] = {
		{ "{\"model\":\"gpt-4o\"}", "gpt-4o" },
		{ " { \"messages\" : [ {\"model\":\"no\"} ], \"x\": {\"model\": \"no\"},"
		  " \"s\": \"\\\"model\\\": \\\"no\\\"\", \"model\" : \"o3\" } ",
		  "o3" },
		{ "{\"n\": 12, \"stream\": true, \"model\": \"a\\/b\"}", "a/b" },
		{ "{\"model\": \"gpt\\u0034o\"}", "" }, /* escapes other than \" \\ \/ */
		{ "{\"model\": 5, \"x\": \"model\"}", "" },
		{ "[{\"model\": \"x\"}]", "" },
		{ "{\"modelx\": \"x\", \"mode\": \"y\"}", "" },
		{ "{\"model\": \"unterminated", "" },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		for (size_t step = 0; step < 4; step++) {
			_cleanup_ai_call_free_ struct ai_call *c =
				ai_call_new(AI_OPENAI, "POST", "/v1/chat/completions");
			feed(ai_call_request_body, c, cases[i].body, strlen(cases[i].body), step);
			struct ai_event ev;
			assert_int_equal(ai_call_finish(c, NULL, &ev), 0);
			assert_string_equal(ev.request_model, cases[i].want);
		}
	}
	/* a model name longer than the event's field is not kept */
	char big[400];
	snprintf(big, sizeof(big), "{\"model\": \"%0300d\"}", 0);
	_cleanup_ai_call_free_ struct ai_call *c =
		ai_call_new(AI_OPENAI, "POST", "/v1/chat/completions");
	ai_call_request_body(c, big, strlen(big));
	struct ai_event ev;
	ai_call_finish(c, NULL, &ev);
	assert_string_equal(ev.request_model, "");
}

static struct ai_call *one(enum ai_provider p, const char *path, const char *ctype,
			   const char *body, struct ai_event *ev)
{
	struct ai_call *c = ai_call_new(p, "POST", path);
	assert_non_null(c);
	ai_call_response_start(c, 200, ctype);
	if (body)
		ai_call_response_body(c, body, strlen(body));
	assert_int_equal(ai_call_finish(c, prices, ev), 0);
	return c;
}

static void test_edge_cases(void **state)
{
	struct ai_event ev;
	struct ai_call *c;

	/* a stream cut before message_stop: incomplete, usage so far */
	c = one(AI_ANTHROPIC, "/v1/messages", "text/event-stream",
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":"
		"\"claude-opus-4-5-20251101\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}"
		"\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\"",
		&ev);
	assert_false(ev.complete);
	assert_true(ev.streamed);
	assert_true(ev.has_usage);
	assert_int_equal(ev.input_tokens, 10);
	assert_true(ev.cost_known);
	assert_true(fabs(ev.cost_usd - (10 * 5.0 + 1 * 25.0) / 1e6) < 1e-12);
	ai_call_free(c);

	/* OpenAI chat without include_usage: no usage, so the cost is unknown (not 0) */
	c = one(AI_OPENAI, "/v1/chat/completions", "text/event-stream",
		"data: {\"id\":\"c1\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":"
		"{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n"
		"data: {\"id\":\"c1\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{},"
		"\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
		&ev);
	assert_true(ev.complete);
	assert_false(ev.has_usage);
	assert_false(ev.cost_known);
	assert_string_equal(ev.stop_reason, "stop");
	assert_string_equal(ev.model, "gpt-4.1");
	ai_call_free(c);

	/* an unknown model: usage but no price */
	c = one(AI_OPENAI, "/v1/chat/completions", "application/json",
		"{\"model\":\"ft:gpt-4o-mini:acme::abc\",\"choices\":[],\"usage\":"
		"{\"prompt_tokens\":5,\"completion_tokens\":6}}",
		&ev);
	assert_true(ev.has_usage);
	assert_false(ev.cost_known);
	ai_call_free(c);

	/* Responses cut by max_output_tokens */
	c = one(AI_OPENAI, "/v1/responses", "text/event-stream",
		"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":"
		"{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"incomplete\","
		"\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"model\":\"gpt-5-"
		"mini\","
		"\"output\":[],\"usage\":{\"input_tokens\":100,\"output_tokens\":50}}}\n\n",
		&ev);
	assert_string_equal(ev.stop_reason, "max_output_tokens");
	assert_true(ev.complete);
	assert_true(fabs(ev.cost_usd - (100 * 0.25 + 50 * 2.0) / 1e6) < 1e-12);
	ai_call_free(c);

	/* malformed event data and an oversize event: flagged truncated, the rest still counts */
	size_t big = AI_MAX_EVENT + 100;
	char *s = malloc(big + 400);
	assert_non_null(s);
	int k = snprintf(s, 400,
			 "data: {not json}\n\ndata: {\"modelVersion\":\"gemini-2.5-flash\","
			 "\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":3}}"
			 "\n\ndata: ");
	memset(s + k, 'x', big);
	memcpy(s + k + big, "\n\n", 3);
	c = one(AI_GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
		"text/event-stream", s, &ev);
	assert_true(ev.truncated);
	assert_int_equal(ev.input_tokens, 7);
	assert_int_equal(ev.output_tokens, 3);
	ai_call_free(c);

	/* a JSON body over AI_MAX_JSON: details lost, flagged */
	c = ai_call_new(AI_ANTHROPIC, "POST", "/v1/messages");
	ai_call_response_start(c, 200, "application/json");
	memset(s, ' ', big);
	s[0] = '{';
	for (size_t i = 0; i < AI_MAX_JSON / big + 1; i++)
		ai_call_response_body(c, s, big);
	ai_call_response_body(c, "}", 1);
	assert_int_equal(ai_call_finish(c, prices, &ev), 0);
	assert_true(ev.truncated);
	assert_false(ev.has_usage);
	ai_call_free(c);
	free(s);

	/* a Gemini array stream cut short: incomplete, elements so far counted */
	c = one(AI_GEMINI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
		"application/json",
		"[{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\"}}]}}]"
		","
		"\"usageMetadata\":{\"promptTokenCount\":3}}\r\n,\r\n{\"candidates\":[",
		&ev);
	assert_false(ev.complete);
	assert_true(ev.streamed);
	assert_int_equal(ev.tool_calls, 1);
	assert_int_equal(ev.input_tokens, 3);
	ai_call_free(c);

	/* no content type: sniffed from the first byte */
	c = one(AI_ANTHROPIC, "/v1/messages", NULL,
		"\n {\"type\":\"message\",\"model\":\"claude-3-5-haiku-latest\",\"content\":[],"
		"\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":1000000,"
		"\"output_tokens\":1000000}}",
		&ev);
	assert_false(ev.streamed);
	assert_string_equal(ev.stop_reason, "end_turn");
	assert_true(fabs(ev.cost_usd - 4.80) < 1e-9);
	ai_call_free(c);
	c = one(AI_OPENAI, "/v1/chat/completions", NULL, "data: [DONE]\n\n", &ev);
	assert_true(ev.streamed);
	assert_true(ev.complete);
	ai_call_free(c);
	/* an HTML error page: ignored */
	c = one(AI_OPENAI, "/v1/chat/completions", "text/html", "<html>bad gateway</html>", &ev);
	assert_false(ev.streamed);
	assert_false(ev.truncated);
	ai_call_free(c);

	/* many tool calls: all counted, the first AI_MAX_TOOL_NAMES named; names made printable */
	c = ai_call_new(AI_GEMINI, "POST", "/v1beta/models/gemini-2.5-flash:generateContent");
	ai_call_response_start(c, 200, "application/json");
	const char *head = "{\"candidates\":[{\"content\":{\"parts\":[";
	ai_call_response_body(c, head, strlen(head));
	for (int i = 0; i < 40; i++) {
		char part[96];
		int n = snprintf(part, sizeof(part), "%s{\"functionCall\":{\"name\":\"t%d\\n\"}}",
				 i ? "," : "", i);
		ai_call_response_body(c, part, (size_t)n);
	}
	ai_call_response_body(c, "]}}]}", 5);
	assert_int_equal(ai_call_finish(c, prices, &ev), 0);
	assert_int_equal(ev.tool_calls, 40);
	assert_int_equal(ev.n_tool_names, AI_MAX_TOOL_NAMES);
	assert_string_equal(ev.tool_names[0], "t0?");
	assert_string_equal(ev.tool_names[31], "t31?");
	ai_call_free(c);
}

/* ---- pricing ---- */

static void test_pricing_default(void **state)
{
	assert_true(pricing_count(prices) > 30);
	const struct pricing_model *m;
	m = pricing_find(prices, "anthropic", "claude-sonnet-4-5");
	assert_non_null(m);
	assert_string_equal(m->name, "claude-sonnet-4-5");
	m = pricing_find(prices, "anthropic", "claude-sonnet-4-5-20250929");
	assert_string_equal(m->name, "claude-sonnet-4-5");
	m = pricing_find(prices, "anthropic", "claude-sonnet-4-20250514");
	assert_string_equal(m->name, "claude-sonnet-4");
	m = pricing_find(prices, "anthropic", "claude-3-5-sonnet@20240620");
	assert_string_equal(m->name, "claude-3-5-sonnet");
	m = pricing_find(prices, "openai", "gpt-4o-mini-2024-07-18");
	assert_string_equal(m->name, "gpt-4o-mini"); /* longest prefix, not gpt-4o */
	m = pricing_find(prices, "openai", "gpt-4-turbo-2024-04-09");
	assert_string_equal(m->name, "gpt-4-turbo");
	m = pricing_find(prices, "openai", "gpt-5-codex");
	assert_string_equal(m->name, "gpt-5");
	m = pricing_find(prices, "gemini", "models/gemini-2.5-flash-lite");
	assert_string_equal(m->name, "gemini-2.5-flash-lite");
	m = pricing_find(prices, "gemini", "gemini-2.5-flash-preview-09-2025");
	assert_string_equal(m->name, "gemini-2.5-flash");
	/* no separator after the prefix, another provider, junk */
	assert_null(pricing_find(prices, "openai", "gpt-4oops"));
	assert_null(pricing_find(prices, "openai", "gpt-4.5-preview"));
	assert_null(pricing_find(prices, "openai", "claude-sonnet-4-5"));
	assert_null(pricing_find(prices, "openai", ""));
	assert_null(pricing_find(prices, "openai", "gpt"));
	assert_null(pricing_find(prices, "nobody", "gpt-4o"));
	assert_null(pricing_find(NULL, "openai", "gpt-4o"));

	double usd;
	struct pricing_usage u = { .input = 1000000, .output = 1000000 };
	assert_int_equal(pricing_cost(prices, "openai", "gpt-4o", &u, &usd), 0);
	assert_true(fabs(usd - 12.5) < 1e-9);
	assert_int_equal(pricing_cost(prices, "openai", "gpt-4oops", &u, &usd), -ENOENT);
	/* the tier: at the threshold the base price, above it the higher one */
	u = (struct pricing_usage){ .input = 200000, .output = 0 };
	assert_int_equal(pricing_cost(prices, "anthropic", "claude-sonnet-4-5", &u, &usd), 0);
	assert_true(fabs(usd - 0.6) < 1e-9);
	u.input = 200001;
	assert_int_equal(pricing_cost(prices, "anthropic", "claude-sonnet-4-5", &u, &usd), 0);
	assert_true(fabs(usd - 200001 * 6.0 / 1e6) < 1e-9);
	/* counts that do not add up are clamped, never negative */
	u = (struct pricing_usage){ .input = 10, .cached_input = 50, .cache_write = 50 };
	assert_int_equal(pricing_cost(prices, "anthropic", "claude-3-haiku", &u, &usd), 0);
	assert_true(fabs(usd - 10 * 0.03 / 1e6) < 1e-15);
	/* a missing cached price defaults to the input price */
	m = pricing_find(prices, "openai", "gpt-4-turbo");
	assert_true(m->cached_input == m->input && m->cache_write == m->input);

	/* every shipped entry names its source and date, is found by its own name and prices a
	 * call (cost known for every model in the table) */
	for (size_t i = 0; i < pricing_count(prices); i++) {
		m = pricing_model_at(prices, i);
		assert_non_null(m->source);
		assert_non_null(m->as_of);
		assert_true(strlen(m->source) > 5 && strchr(m->source, '.'));
		assert_ptr_equal(pricing_find(prices, m->provider, m->name), m);
		u = (struct pricing_usage){ .input = 1000, .output = 1000, .cached_input = 100 };
		assert_int_equal(pricing_cost(prices, m->provider, m->name, &u, &usd), 0);
		assert_true(usd > 0 && usd < 1.0);
	}
	assert_null(pricing_model_at(prices, pricing_count(prices)));
}

static void test_pricing_parse(void **state)
{
	struct pricing *p = NULL;
	char err[256];
	const char *ok = "[x]\n\"m-1\" = { input = 1, output = 2.5 }\n"
			 "\"m\" = { input = 1, output = 2, cached_input = 0.5, above = 10, "
			 "input_above = 3, output_above = 4 }\n[y]\n";
	assert_int_equal(pricing_parse(ok, strlen(ok), &p, err, sizeof(err)), 0);
	assert_int_equal(pricing_count(p), 2);
	const struct pricing_model *m = pricing_find(p, "x", "m-2");
	assert_string_equal(m->name, "m");
	assert_true(m->above == 10 && m->cached_input_above == 3 && m->cache_write_above == 3);
	assert_string_equal(pricing_find(p, "x", "m-1-2")->name, "m-1");
	assert_null(m->source);
	pricing_free(p);
	const char *prov = "[x]\nm = { input = 1, output = 2, source = \"example.com/prices\", "
			   "as_of = \"2025-11-03\" }\n";
	assert_int_equal(pricing_parse(prov, strlen(prov), &p, err, sizeof(err)), 0);
	assert_string_equal(pricing_find(p, "x", "m")->source, "example.com/prices");
	assert_string_equal(pricing_find(p, "x", "m")->as_of, "2025-11-03");
	pricing_free(p);

	static const char *const bad[] = {
		"x = 1\n",
		"[x]\nm = 1\n",
		"[x]\nm = { input = 1 }\n",
		"[x]\nm = { input = 1, output = -2 }\n",
		"[x]\nm = { input = 1, output = nan }\n",
		"[x]\nm = { input = 1, output = 1e9 }\n",
		"[x]\nm = { input = 1, output = \"2\" }\n",
		"[x]\nm = { input = 1, output = 2, typo = 3 }\n",
		"[x]\nm = { input = 1, output = 2, as_of = \"Nov 2025\" }\n",
		"[x]\nm = { input = 1, output = 2, as_of = \"2025-1\" }\n",
		"[x]\nm = { input = 1, output = 2, source = \"\" }\n",
		"[x]\nm = { input = 1, output = 2, source = 3 }\n",
		"[x]\nm = { input = 1, output = 2, above = 0, input_above = 1, output_above = 1 "
		"}\n",
		"[x]\nm = { input = 1, output = 2, above = 5 }\n",
		"[x]\nm = { input = 1, output = 2, input_above = 5 }\n",
		"[x]\n\"a b\" = { input = 1, output = 2 }\n",
		"[\"X\"]\nm = { input = 1, output = 2 }\n",
		"[x\n",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		err[0] = 0;
		p = NULL;
		assert_int_equal(pricing_parse(bad[i], strlen(bad[i]), &p, err, sizeof(err)),
				 -EBADMSG);
		assert_null(p);
		assert_true(err[0] != 0);
	}
	pricing_free(NULL);
}

static int setup(void **state)
{
	return pricing_load_default(&prices);
}

static int teardown(void **state)
{
	pricing_free(prices);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_goldens),		cmocka_unit_test(test_endpoints),
		cmocka_unit_test(test_request_model),	cmocka_unit_test(test_edge_cases),
		cmocka_unit_test(test_pricing_default), cmocka_unit_test(test_pricing_parse),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
