/* ai.c - model-call events from Anthropic, OpenAI and Gemini traffic (overview in ai.h).
 *
 * One ai_call per HTTP exchange. Three small streaming front ends turn the bytes into JSON
 * values without ever holding a whole streamed body:
 *   - the request body goes through a byte-level JSON scanner that keeps only the top-level
 *     "model" string (the OpenAI SDKs send it after the messages, so it may come last);
 *   - a text/event-stream response goes through the SSE parser (sse.c), each event's data is
 *     parsed by jansson on its own (events of no interest, e.g. text deltas, are skipped by their
 *     event name without parsing);
 *   - a Gemini JSON-array stream ("[{...}\r\n,{...}]") is split into its elements by a depth
 *     tracking splitter, each element parsed on its own;
 *   - any other JSON response is accumulated (up to AI_MAX_JSON) and parsed at the end;
 *   - the messages of a WebSocket (aiws.c) come whole, one event each.
 * Each parsed value goes to the provider's interpreter, which updates the event being built:
 * model, ids, raw usage counters ("last value reported wins", as providers send running totals),
 * tool calls, stop reason, errors. ai_call_finish() normalises the counters (ai.h) and prices
 * the call.
 *
 * Trust boundary: request bodies come from the guest, responses from upstream servers relayed to
 * the guest; both are hostile. Every buffer is capped, the scanners are O(1) per byte with fixed
 * state, jansson's own depth limit bounds recursion, and every string copied into the event is
 * truncated and made printable. The parser runs on the side: nothing here can stall or alter
 * the relayed bytes. Thread: the proxy's loop thread (one call, one thread).
 */
#include "ai.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "pricing.h"
#include "sse.h"

/* Top-level "model" of a JSON object streamed byte by byte. */
struct reqscan {
	size_t depth;
	bool in_str, esc, done, bad;
	unsigned uhex; /* hex digits of a \u escape still to skip */
	enum { RS_KEY, RS_COLON, RS_VALUE, RS_AFTER } st;
	bool in_key, in_model; /* reading the key string / the "model" value string */
	char key[8];
	size_t klen;
	bool kover;
	char val[AI_MAX_MODEL];
	size_t vlen;
	bool vover;
	char model[AI_MAX_MODEL];
};

/* Elements of a streamed top-level JSON array. */
struct jarray {
	enum { JA_START, JA_BETWEEN, JA_ELEM, JA_DONE, JA_BAD } st;
	size_t depth;
	bool in_str, esc;
	bool over; /* the current element is over AI_MAX_EVENT: skipped */
	struct buf elem;
};

enum body_mode { BODY_UNSET, BODY_SSE, BODY_JSON, BODY_ARRAY, BODY_MESSAGES, BODY_IGNORE };

/* Raw counters as the provider named them (normalised in finish). */
struct raw_usage {
	bool have;
	uint64_t in, out, cache_read, cache_write, reasoning, extra_in;
};

#define MAX_SEEN_TOOLS 256

struct ai_call {
	enum ai_provider prov;
	enum ai_api api;
	bool finished;
	char path_model[AI_MAX_MODEL];
	struct reqscan rq;

	bool started;
	bool ct_sse, ct_json, ct_none;
	enum body_mode mode;
	struct sse_parser *sse;
	struct buf json;
	bool json_over;
	struct jarray ja;

	struct ai_event ev;
	struct raw_usage u;
	bool model_from_response;
	/* OpenAI Chat streams: (choice, index) of tool calls already counted */
	uint32_t seen[MAX_SEEN_TOOLS];
	size_t n_seen;
};

/* ---- small helpers ---- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void copy_text(char *dst, size_t cap, const char *src)
{
	size_t i = 0;
	if (!cap)
		return;
	for (; src && src[i] && i + 1 < cap; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
	dst[i] = 0;
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Set *dst from an integer member >= 0; true when it was there. */
static bool take_u64(json_t *o, const char *key, uint64_t *dst)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*dst = (uint64_t)json_integer_value(v);
	return true;
}

static void set_model(struct ai_call *c, const char *m)
{
	if (m && *m && !c->model_from_response) {
		if (strncmp(m, "models/", 7) == 0)
			m += 7;
		copy_text(c->ev.model, sizeof(c->ev.model), m);
		c->model_from_response = true;
	}
}

static void set_id(struct ai_call *c, const char *id)
{
	if (id && *id && !c->ev.response_id[0])
		copy_text(c->ev.response_id, sizeof(c->ev.response_id), id);
}

static void set_stop(struct ai_call *c, const char *s)
{
	if (s && *s)
		copy_text(c->ev.stop_reason, sizeof(c->ev.stop_reason), s);
}

static void set_error(struct ai_call *c, const char *s)
{
	if (s && *s && !c->ev.error[0])
		copy_text(c->ev.error, sizeof(c->ev.error), s);
}

static void add_tool(struct ai_call *c, const char *name)
{
	if (c->ev.tool_calls < UINT32_MAX)
		c->ev.tool_calls++;
	if (c->ev.n_tool_names < AI_MAX_TOOL_NAMES) {
		copy_text(c->ev.tool_names[c->ev.n_tool_names], AI_MAX_TOOL_NAME + 1,
			  name && *name ? name : "?");
		c->ev.n_tool_names++;
	}
}

static void reset_tools(struct ai_call *c)
{
	c->ev.tool_calls = 0;
	c->ev.n_tool_names = 0;
}

/* ---- request body: the top-level "model" ---- */

static void rq_end_string(struct reqscan *r)
{
	if (r->in_key) {
		r->key[r->klen] = 0;
		r->in_key = false;
		r->st = RS_COLON;
	} else if (r->in_model) {
		r->val[r->vlen] = 0;
		if (!r->vover)
			memcpy(r->model, r->val, r->vlen + 1);
		r->in_model = false;
		r->st = RS_AFTER;
	}
}

static void rq_char(struct reqscan *r, char ch)
{
	if (r->in_key) {
		if (r->klen + 1 < sizeof(r->key))
			r->key[r->klen++] = ch;
		else
			r->kover = true;
	} else if (r->in_model) {
		if (r->vlen + 1 < sizeof(r->val))
			r->val[r->vlen++] = ch;
		else
			r->vover = true;
	}
}

static void rq_feed(struct reqscan *r, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !r->done && !r->bad; i++) {
		char ch = (char)p[i];
		if (r->in_str) {
			if (r->uhex) {
				r->uhex--;
			} else if (r->esc) {
				r->esc = false;
				if (ch == 'u') {
					r->uhex = 4;
					r->vover = r->vover || r->in_model; /* not a plain name */
					r->kover = r->kover || r->in_key;
				} else {
					rq_char(r, ch == '"' || ch == '\\' || ch == '/' ? ch : '?');
				}
			} else if (ch == '\\') {
				r->esc = true;
			} else if (ch == '"') {
				r->in_str = false;
				rq_end_string(r);
			} else {
				rq_char(r, ch);
			}
			continue;
		}
		switch (ch) {
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break;
		case '"':
			r->in_str = true;
			if (r->depth == 1 && r->st == RS_KEY) {
				r->in_key = true;
				r->klen = 0;
				r->kover = false;
			} else if (r->depth == 1 && r->st == RS_VALUE) {
				if (!r->kover && streq(r->key, "model")) {
					r->in_model = true;
					r->vlen = 0;
					r->vover = false;
				} else {
					r->st = RS_AFTER;
				}
			}
			break;
		case '{':
		case '[':
			if (r->depth == 0 && ch == '[') {
				r->bad = true;
				break;
			}
			if (r->depth == 1)
				r->st = RS_AFTER;
			if (r->depth == 0)
				r->st = RS_KEY;
			r->depth++;
			break;
		case '}':
		case ']':
			if (r->depth == 0) {
				r->bad = true;
				break;
			}
			r->depth--;
			if (r->depth == 0)
				r->done = true;
			break;
		case ':':
			if (r->depth == 1)
				r->st = RS_VALUE;
			break;
		case ',':
			if (r->depth == 1)
				r->st = RS_KEY;
			break;
		default:
			if (r->depth == 0)
				r->bad = true;
			else if (r->depth == 1 && r->st == RS_VALUE)
				r->st = RS_AFTER; /* a number or literal */
			break;
		}
	}
}

/* ---- interpreters ---- */

static void anthropic_usage(struct ai_call *c, json_t *u)
{
	if (!json_is_object(u))
		return;
	bool any = take_u64(u, "input_tokens", &c->u.in);
	any |= take_u64(u, "output_tokens", &c->u.out);
	any |= take_u64(u, "cache_read_input_tokens", &c->u.cache_read);
	any |= take_u64(u, "cache_creation_input_tokens", &c->u.cache_write);
	c->u.have |= any;
}

static bool anthropic_tool_block(json_t *b)
{
	const char *t = jstr(b, "type");
	return t &&
	       (streq(t, "tool_use") || streq(t, "server_tool_use") || streq(t, "mcp_tool_use"));
}

/* A whole message: the non-streamed body, or message_start's message. */
static void anthropic_message(struct ai_call *c, json_t *m, bool whole)
{
	set_model(c, jstr(m, "model"));
	set_id(c, jstr(m, "id"));
	anthropic_usage(c, json_object_get(m, "usage"));
	if (!whole)
		return;
	json_t *content = json_object_get(m, "content"), *b;
	size_t i;
	json_array_foreach(content, i, b)
	{
		if (anthropic_tool_block(b))
			add_tool(c, jstr(b, "name"));
	}
	set_stop(c, jstr(m, "stop_reason"));
	c->ev.complete = true;
}

static void anthropic_value(struct ai_call *c, json_t *v, bool whole)
{
	const char *type = jstr(v, "type");
	if (!type)
		return;
	if (streq(type, "message")) {
		anthropic_message(c, v, whole);
	} else if (streq(type, "message_start")) {
		anthropic_message(c, json_object_get(v, "message"), false);
	} else if (streq(type, "content_block_start")) {
		json_t *b = json_object_get(v, "content_block");
		if (anthropic_tool_block(b))
			add_tool(c, jstr(b, "name"));
	} else if (streq(type, "message_delta")) {
		set_stop(c, jstr(json_object_get(v, "delta"), "stop_reason"));
		anthropic_usage(c, json_object_get(v, "usage"));
	} else if (streq(type, "message_stop")) {
		c->ev.complete = true;
	} else if (streq(type, "error")) {
		set_error(c, jstr(json_object_get(v, "error"), "type"));
	}
}

static void openai_usage(struct ai_call *c, json_t *u)
{
	if (!json_is_object(u))
		return;
	/* Chat Completions: prompt/completion; Responses: input/output */
	bool any = take_u64(u, "prompt_tokens", &c->u.in);
	any |= take_u64(u, "input_tokens", &c->u.in);
	any |= take_u64(u, "completion_tokens", &c->u.out);
	any |= take_u64(u, "output_tokens", &c->u.out);
	take_u64(json_object_get(u, "prompt_tokens_details"), "cached_tokens", &c->u.cache_read);
	take_u64(json_object_get(u, "input_tokens_details"), "cached_tokens", &c->u.cache_read);
	take_u64(json_object_get(u, "completion_tokens_details"), "reasoning_tokens",
		 &c->u.reasoning);
	take_u64(json_object_get(u, "output_tokens_details"), "reasoning_tokens", &c->u.reasoning);
	c->u.have |= any;
}

static void openai_error(struct ai_call *c, json_t *e)
{
	if (!json_is_object(e))
		return;
	const char *s = jstr(e, "code");
	set_error(c, s ? s : jstr(e, "type"));
	if (!c->ev.error[0])
		set_error(c, "error");
}

/* Count a Chat Completions tool call once per (choice, index) in a stream. */
static bool chat_tool_new(struct ai_call *c, json_t *choice_index, json_t *tc)
{
	json_t *idx = json_object_get(tc, "index");
	if (!json_is_integer(idx))
		return jstr(tc, "id") != NULL;
	uint32_t key = (uint32_t)(json_integer_value(choice_index) & 0xffff) << 16 |
		       (uint32_t)(json_integer_value(idx) & 0xffff);
	for (size_t i = 0; i < c->n_seen; i++)
		if (c->seen[i] == key)
			return false;
	if (c->n_seen < MAX_SEEN_TOOLS)
		c->seen[c->n_seen++] = key;
	return true;
}

static void openai_chat_value(struct ai_call *c, json_t *v, bool whole)
{
	openai_error(c, json_object_get(v, "error"));
	set_model(c, jstr(v, "model"));
	set_id(c, jstr(v, "id"));
	json_t *choices = json_object_get(v, "choices"), *ch;
	size_t i;
	json_array_foreach(choices, i, ch)
	{
		json_t *msg = json_object_get(ch, whole ? "message" : "delta");
		json_t *tcs = json_object_get(msg, "tool_calls"), *tc;
		size_t j;
		json_array_foreach(tcs, j, tc)
		{
			if (whole || chat_tool_new(c, json_object_get(ch, "index"), tc))
				add_tool(c, jstr(json_object_get(tc, "function"), "name"));
		}
		json_t *fc = json_object_get(msg, "function_call"); /* the legacy form */
		if (json_is_object(fc) && (whole || jstr(fc, "name")))
			add_tool(c, jstr(fc, "name"));
		set_stop(c, jstr(ch, "finish_reason"));
	}
	openai_usage(c, json_object_get(v, "usage"));
	if (whole && json_is_array(choices))
		c->ev.complete = true;
}

/* A Responses output item that is a tool call: "function_call", "custom_tool_call", built-in
 * "web_search_call", "mcp_call", ... ("*_call", not "*_call_output"). */
static void responses_item(struct ai_call *c, json_t *item)
{
	const char *t = jstr(item, "type");
	size_t n = t ? strlen(t) : 0;
	if (n < 6 || strcmp(t + n - 5, "_call") != 0)
		return;
	const char *name = jstr(item, "name");
	if (name) {
		add_tool(c, name);
		return;
	}
	char tn[AI_MAX_TOOL_NAME + 1];
	size_t k = MIN(n - 5, sizeof(tn) - 1);
	memcpy(tn, t, k);
	tn[k] = 0;
	add_tool(c, tn);
}

/* A whole response object (non-streamed body, or response.completed's response). */
static void responses_object(struct ai_call *c, json_t *r)
{
	if (!json_is_object(r))
		return;
	set_model(c, jstr(r, "model"));
	set_id(c, jstr(r, "id"));
	json_t *out = json_object_get(r, "output"), *item;
	size_t i;
	if (json_is_array(out)) {
		reset_tools(c); /* the final list replaces what output_item.done events said */
		json_array_foreach(out, i, item)
		{
			responses_item(c, item);
		}
	}
	const char *status = jstr(r, "status");
	const char *why = jstr(json_object_get(r, "incomplete_details"), "reason");
	set_stop(c, why ? why : status);
	openai_usage(c, json_object_get(r, "usage"));
	openai_error(c, json_object_get(r, "error"));
	if (status && !streq(status, "in_progress") && !streq(status, "queued"))
		c->ev.complete = true;
}

static void openai_responses_value(struct ai_call *c, json_t *v, bool whole)
{
	const char *type = jstr(v, "type");
	const char *obj = jstr(v, "object");
	if (whole || (obj && streq(obj, "response"))) {
		openai_error(c, json_object_get(v, "error"));
		responses_object(c, v);
		return;
	}
	if (!type)
		return;
	if (streq(type, "response.created") || streq(type, "response.in_progress")) {
		json_t *r = json_object_get(v, "response");
		set_model(c, jstr(r, "model"));
		set_id(c, jstr(r, "id"));
	} else if (streq(type, "response.output_item.done")) {
		responses_item(c, json_object_get(v, "item"));
	} else if (streq(type, "response.completed") || streq(type, "response.incomplete") ||
		   streq(type, "response.failed")) {
		responses_object(c, json_object_get(v, "response"));
		c->ev.complete = true;
	} else if (streq(type, "error")) {
		const char *code = jstr(v, "code");
		set_error(c, code ? code : "error");
	}
}

static void gemini_value(struct ai_call *c, json_t *v, bool whole)
{
	json_t *inner = json_object_get(v, "response"); /* Code Assist's envelope */
	if (json_is_object(inner) && !json_object_get(v, "candidates"))
		v = inner;
	json_t *e = json_object_get(v, "error");
	if (json_is_object(e)) {
		const char *s = jstr(e, "status");
		set_error(c, s ? s : "error");
	}
	set_model(c, jstr(v, "modelVersion"));
	set_id(c, jstr(v, "responseId"));
	json_t *cands = json_object_get(v, "candidates"), *cand;
	size_t i;
	json_array_foreach(cands, i, cand)
	{
		json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *part;
		size_t j;
		json_array_foreach(parts, j, part)
		{
			json_t *fc = json_object_get(part, "functionCall");
			if (json_is_object(fc))
				add_tool(c, jstr(fc, "name"));
		}
		const char *fr = jstr(cand, "finishReason");
		if (fr && *fr) {
			set_stop(c, fr);
			c->ev.complete = true;
		}
	}
	json_t *um = json_object_get(v, "usageMetadata");
	if (json_is_object(um)) {
		bool any = take_u64(um, "promptTokenCount", &c->u.in);
		any |= take_u64(um, "candidatesTokenCount", &c->u.out);
		any |= take_u64(um, "totalTokenCount", &(uint64_t){ 0 });
		take_u64(um, "cachedContentTokenCount", &c->u.cache_read);
		take_u64(um, "thoughtsTokenCount", &c->u.reasoning);
		take_u64(um, "toolUsePromptTokenCount", &c->u.extra_in);
		c->u.have |= any;
	}
	if (whole && json_is_array(cands))
		c->ev.complete = true;
}

/* One parsed JSON value from the response: an SSE event's data, an array element, or the whole
 * body (whole = true: a non-streamed response). */
static void interpret(struct ai_call *c, json_t *v, bool whole)
{
	if (!json_is_object(v))
		return;
	switch (c->api) {
	case AI_API_ANTHROPIC_MESSAGES:
		anthropic_value(c, v, whole);
		break;
	case AI_API_OPENAI_CHAT:
		openai_chat_value(c, v, whole);
		break;
	case AI_API_OPENAI_RESPONSES:
		openai_responses_value(c, v, whole);
		break;
	case AI_API_GEMINI_GENERATE:
	case AI_API_GEMINI_STREAM:
		gemini_value(c, v, whole);
		break;
	case AI_API_NONE:
		break;
	}
}

static void interpret_text(struct ai_call *c, const char *p, size_t n, bool whole)
{
	json_error_t err;
	json_t *v = json_loadb(p, n, 0, &err);
	if (!v) {
		c->ev.truncated = true;
		return;
	}
	interpret(c, v, whole);
	json_decref(v);
}

/* ---- response body front ends ---- */

/* SSE events whose data we never need, skipped without parsing. */
static bool sse_skippable(const struct ai_call *c, const char *type)
{
	size_t n = strlen(type);
	if (c->api == AI_API_ANTHROPIC_MESSAGES)
		return streq(type, "ping") || streq(type, "content_block_delta") ||
		       streq(type, "content_block_stop");
	if (c->api == AI_API_OPENAI_RESPONSES)
		return n > 6 && strcmp(type + n - 6, ".delta") == 0;
	return false;
}

static void on_sse(void *userdata, const struct sse_event *ev)
{
	struct ai_call *c = userdata;
	if (ev->oversize) {
		c->ev.truncated = true;
		return;
	}
	if (sse_skippable(c, ev->type))
		return;
	if (c->api == AI_API_OPENAI_CHAT && ev->data_len == 6 &&
	    memcmp(ev->data, "[DONE]", 6) == 0) {
		c->ev.complete = true;
		return;
	}
	interpret_text(c, ev->data, ev->data_len, false);
}

static void ja_element_done(struct ai_call *c)
{
	if (c->ja.over)
		c->ev.truncated = true;
	else
		interpret_text(c, (const char *)buf_head(&c->ja.elem), buf_len(&c->ja.elem), false);
	buf_consume(&c->ja.elem, buf_len(&c->ja.elem));
	c->ja.over = false;
}

static void ja_keep(struct ai_call *c, const uint8_t *p, size_t n)
{
	if (!c->ja.over && buf_append(&c->ja.elem, p, n) < 0) {
		c->ja.over = true;
		buf_consume(&c->ja.elem, buf_len(&c->ja.elem));
	}
}

static void ja_feed(struct ai_call *c, const uint8_t *p, size_t n)
{
	struct jarray *j = &c->ja;
	size_t start = 0; /* of the element bytes in p not yet kept */
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = p[i];
		switch (j->st) {
		case JA_START:
			if (ch == '[')
				j->st = JA_BETWEEN;
			else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n')
				j->st = JA_BAD;
			break;
		case JA_BETWEEN:
			if (ch == ']') {
				j->st = JA_DONE;
			} else if (ch == '{') {
				j->st = JA_ELEM;
				j->depth = 1;
				j->in_str = j->esc = false;
				start = i;
			} else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n' &&
				   ch != ',') {
				j->st = JA_BAD;
			}
			break;
		case JA_ELEM:
			if (j->in_str) {
				if (j->esc)
					j->esc = false;
				else if (ch == '\\')
					j->esc = true;
				else if (ch == '"')
					j->in_str = false;
			} else if (ch == '"') {
				j->in_str = true;
			} else if (ch == '{' || ch == '[') {
				j->depth++;
			} else if (ch == '}' || ch == ']') {
				if (--j->depth == 0) {
					ja_keep(c, p + start, i + 1 - start);
					ja_element_done(c);
					j->st = JA_BETWEEN;
				}
			}
			break;
		case JA_DONE:
		case JA_BAD:
			i = n;
			break;
		}
	}
	if (j->st == JA_ELEM)
		ja_keep(c, p + start, n - start);
	if (j->st == JA_BAD)
		c->ev.truncated = true;
}

static bool is_ws(uint8_t ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* ---- endpoints ---- */

static bool host_is(const char *host, const char *want)
{
	size_t n = strlen(host), w = strlen(want);
	const char *colon = memchr(host, ':', n);
	if (colon)
		n = (size_t)(colon - host);
	if (n > 0 && host[n - 1] == '.')
		n--;
	return n == w && strncasecmp(host, want, w) == 0;
}

/* path without its query: length */
static size_t path_len(const char *path)
{
	const char *q = strchr(path, '?');
	return q ? (size_t)(q - path) : strlen(path);
}

static bool path_is(const char *path, const char *want)
{
	size_t n = path_len(path);
	return n == strlen(want) && memcmp(path, want, n) == 0;
}

/* Gemini "/v1beta/models/M:action" (also v1, v1alpha, tunedModels) or Code Assist
 * "/v1internal:action". The model (if any) goes to model[AI_MAX_MODEL]. */
static enum ai_api gemini_api(const char *path, char *model)
{
	size_t n = path_len(path);
	const char *p = path, *end = path + n;
	static const char *const vers[] = { "/v1beta/", "/v1/", "/v1alpha/" };
	static const char *const colls[] = { "models/", "tunedModels/" };
	const char *action = NULL;
	model[0] = 0;
	if (n > 12 && strncmp(p, "/v1internal:", 12) == 0) {
		action = p + 12;
	} else {
		size_t k;
		for (k = 0; k < ELEMENTSOF(vers); k++)
			if (strncmp(p, vers[k], strlen(vers[k])) == 0)
				break;
		if (k == ELEMENTSOF(vers))
			return AI_API_NONE;
		p += strlen(vers[k]);
		for (k = 0; k < ELEMENTSOF(colls); k++)
			if (strncmp(p, colls[k], strlen(colls[k])) == 0)
				break;
		if (k == ELEMENTSOF(colls))
			return AI_API_NONE;
		p += strlen(colls[k]);
		const char *colon = memchr(p, ':', (size_t)(end - p));
		if (!colon || colon == p || memchr(p, '/', (size_t)(colon - p)))
			return AI_API_NONE;
		size_t m = MIN((size_t)(colon - p), (size_t)AI_MAX_MODEL - 1);
		memcpy(model, p, m);
		model[m] = 0;
		action = colon + 1;
	}
	size_t an = (size_t)(end - action);
	if (an == strlen("generateContent") && memcmp(action, "generateContent", an) == 0)
		return AI_API_GEMINI_GENERATE;
	if (an == strlen("streamGenerateContent") &&
	    memcmp(action, "streamGenerateContent", an) == 0)
		return AI_API_GEMINI_STREAM;
	model[0] = 0;
	return AI_API_NONE;
}

static enum ai_api api_for(enum ai_provider p, const char *path, char *model)
{
	model[0] = 0;
	if (!path)
		return AI_API_NONE;
	switch (p) {
	case AI_ANTHROPIC:
		return path_is(path, "/v1/messages") ? AI_API_ANTHROPIC_MESSAGES : AI_API_NONE;
	case AI_OPENAI:
		if (path_is(path, "/v1/chat/completions"))
			return AI_API_OPENAI_CHAT;
		return path_is(path, "/v1/responses") ? AI_API_OPENAI_RESPONSES : AI_API_NONE;
	case AI_GEMINI:
		return gemini_api(path, model);
	case AI_NONE:
		break;
	}
	return AI_API_NONE;
}

enum ai_provider ai_provider_for(const char *host, const char *path)
{
	char model[AI_MAX_MODEL];
	enum ai_provider p = AI_NONE;
	if (!host || !path)
		return AI_NONE;
	if (host_is(host, "api.anthropic.com"))
		p = AI_ANTHROPIC;
	else if (host_is(host, "api.openai.com"))
		p = AI_OPENAI;
	else if (host_is(host, "generativelanguage.googleapis.com") ||
		 host_is(host, "cloudcode-pa.googleapis.com") ||
		 host_is(host, "daily-cloudcode-pa.googleapis.com"))
		p = AI_GEMINI;
	return api_for(p, path, model) != AI_API_NONE ? p : AI_NONE;
}

const char *ai_provider_name(enum ai_provider p)
{
	switch (p) {
	case AI_ANTHROPIC:
		return "anthropic";
	case AI_OPENAI:
		return "openai";
	case AI_GEMINI:
		return "gemini";
	case AI_NONE:
		break;
	}
	return "";
}

static const char *api_name(enum ai_api a)
{
	switch (a) {
	case AI_API_ANTHROPIC_MESSAGES:
		return "messages";
	case AI_API_OPENAI_CHAT:
		return "chat.completions";
	case AI_API_OPENAI_RESPONSES:
		return "responses";
	case AI_API_GEMINI_GENERATE:
		return "generateContent";
	case AI_API_GEMINI_STREAM:
		return "streamGenerateContent";
	case AI_API_NONE:
		break;
	}
	return "";
}

/* ---- the call ---- */

struct ai_call *ai_call_new(enum ai_provider p, const char *method, const char *path)
{
	char model[AI_MAX_MODEL];
	if (!method || !path || !streq(method, "POST"))
		return NULL;
	enum ai_api api = api_for(p, path, model);
	if (api == AI_API_NONE)
		return NULL;
	struct ai_call *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->prov = p;
	c->api = api;
	memcpy(c->path_model, model, sizeof(model));
	buf_init(&c->json, AI_MAX_JSON);
	buf_init(&c->ja.elem, AI_MAX_EVENT);
	c->ev.provider = p;
	c->ev.api = api;
	c->ev.provider_name = ai_provider_name(p);
	c->ev.api_name = api_name(api);
	return c;
}

void ai_call_free(struct ai_call *c)
{
	if (!c)
		return;
	sse_free(c->sse);
	buf_done(&c->json, 0);
	buf_done(&c->ja.elem, 0);
	free(c);
}

void ai_call_request_body(struct ai_call *c, const void *p, size_t n)
{
	if (!c || !p || c->finished)
		return;
	rq_feed(&c->rq, p, n);
}

void ai_call_response_start(struct ai_call *c, int status, const char *content_type)
{
	if (!c || c->started || c->finished)
		return;
	c->started = true;
	c->ev.status = status;
	c->ct_none = !content_type || !*content_type;
	c->ct_sse = content_type && strcasestr(content_type, "text/event-stream");
	c->ct_json = content_type && strcasestr(content_type, "json");
	if (c->ct_sse) {
		c->mode = BODY_SSE;
		c->sse = sse_new(AI_MAX_EVENT, on_sse, c);
		if (!c->sse) {
			c->mode = BODY_IGNORE;
			c->ev.truncated = true;
		}
	}
}

/* Pick the body mode from the first non-blank byte when the content type did not. */
static void choose_mode(struct ai_call *c, uint8_t first)
{
	if (first == '{' && (c->ct_json || c->ct_none))
		c->mode = BODY_JSON;
	else if (first == '[' && (c->ct_json || c->ct_none))
		c->mode = BODY_ARRAY;
	else if (c->ct_none && (first == 'd' || first == 'e' || first == ':' || first == 'i'))
		c->mode = BODY_SSE;
	else
		c->mode = BODY_IGNORE;
	if (c->mode == BODY_SSE) {
		c->sse = sse_new(AI_MAX_EVENT, on_sse, c);
		if (!c->sse) {
			c->mode = BODY_IGNORE;
			c->ev.truncated = true;
		}
	}
}

void ai_call_response_body(struct ai_call *c, const void *data, size_t n)
{
	const uint8_t *p = data;
	if (!c || !p || c->finished)
		return;
	if (!c->started)
		ai_call_response_start(c, 0, NULL);
	if (c->mode == BODY_UNSET) {
		while (n > 0 && is_ws(*p)) {
			p++;
			n--;
		}
		if (n == 0)
			return;
		choose_mode(c, *p);
	}
	switch (c->mode) {
	case BODY_SSE:
		sse_feed(c->sse, p, n);
		break;
	case BODY_JSON:
		if (!c->json_over && buf_append(&c->json, p, n) < 0) {
			c->json_over = true;
			buf_done(&c->json, 0);
		}
		break;
	case BODY_ARRAY:
		ja_feed(c, p, n);
		break;
	case BODY_MESSAGES: /* a call fed messages takes no body */
	case BODY_UNSET:
	case BODY_IGNORE:
		break;
	}
}

void ai_call_response_message(struct ai_call *c, const void *p, size_t n, bool truncated)
{
	if (!c || c->finished)
		return;
	if (!c->started)
		ai_call_response_start(c, 101, NULL);
	if (c->mode == BODY_UNSET)
		c->mode = BODY_MESSAGES;
	if (c->mode != BODY_MESSAGES)
		return;
	if (truncated)
		c->ev.truncated = true;
	else
		interpret_text(c, p, n, false);
}

bool ai_call_ended(const struct ai_call *c)
{
	return c && (c->ev.complete || c->ev.error[0]);
}

int ai_call_finish(struct ai_call *c, const struct pricing *pricing, struct ai_event *ret)
{
	if (!c || !ret || c->finished)
		return -EINVAL;
	c->finished = true;
	switch (c->mode) {
	case BODY_SSE:
		sse_flush(c->sse);
		break;
	case BODY_JSON:
		if (c->json_over)
			c->ev.truncated = true;
		else
			interpret_text(c, (const char *)buf_head(&c->json), buf_len(&c->json),
				       true);
		break;
	case BODY_ARRAY:
		if (c->ja.st == JA_DONE)
			c->ev.complete = true;
		else
			c->ev.complete = false; /* the stream was cut short */
		break;
	case BODY_MESSAGES:
	case BODY_UNSET:
	case BODY_IGNORE:
		break;
	}
	struct ai_event *ev = &c->ev;
	ev->streamed = c->mode == BODY_SSE || c->mode == BODY_ARRAY || c->mode == BODY_MESSAGES;

	copy_text(ev->request_model, sizeof(ev->request_model),
		  c->rq.model[0] ? c->rq.model : c->path_model);
	if (!ev->model[0])
		memcpy(ev->model, ev->request_model, sizeof(ev->model));

	struct raw_usage *u = &c->u;
	ev->has_usage = u->have;
	if (u->have) {
		switch (c->prov) {
		case AI_ANTHROPIC: /* input_tokens excludes both cache counts */
			ev->input_tokens = sat_add(sat_add(u->in, u->cache_read), u->cache_write);
			ev->output_tokens = u->out;
			break;
		case AI_GEMINI: /* candidates exclude thoughts; tool-use prompt is input */
			ev->input_tokens = sat_add(u->in, u->extra_in);
			ev->output_tokens = sat_add(u->out, u->reasoning);
			break;
		case AI_OPENAI: /* prompt counts include cached tokens, completion reasoning */
		case AI_NONE:
			ev->input_tokens = u->in;
			ev->output_tokens = u->out;
			break;
		}
		ev->cached_input_tokens = MIN(u->cache_read, ev->input_tokens);
		ev->cache_write_tokens = MIN(u->cache_write, ev->input_tokens);
		ev->reasoning_tokens = MIN(u->reasoning, ev->output_tokens);
	}

	ev->cost_known = false;
	ev->cost_usd = 0;
	if (pricing && ev->has_usage && ev->model[0]) {
		struct pricing_usage pu = {
			.input = ev->input_tokens,
			.output = ev->output_tokens,
			.cached_input = ev->cached_input_tokens,
			.cache_write = ev->cache_write_tokens,
		};
		double usd;
		if (pricing_cost(pricing, ev->provider_name, ev->model, &pu, &usd) == 0 ||
		    pricing_cost(pricing, ev->provider_name, ev->request_model, &pu, &usd) == 0) {
			ev->cost_known = true;
			ev->cost_usd = usd;
		}
	}
	*ret = *ev;
	return 0;
}
