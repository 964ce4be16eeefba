/* ai.h - model-call events from AI provider traffic, parsed on the side of the proxy.
 *
 * The proxy forwards every request and response byte unchanged and at once, and feeds a copy of
 * the (de-chunked) bodies here. One ai_call follows one HTTP request/response and produces one
 * event: provider, model, token counts, tool calls, stop reason, streamed or not, and the cost
 * from the price table (pricing.h).
 *
 * Endpoints (POST only; the query string is ignored: the body's format comes from the response's
 * Content-Type and, when that says JSON or nothing, from its first byte):
 *   anthropic  api.anthropic.com                    /v1/messages            (JSON, SSE)
 *   openai     api.openai.com                       /v1/chat/completions    (JSON, SSE + [DONE])
 *                                                   /v1/responses           (JSON, SSE)
 *   gemini     generativelanguage.googleapis.com    /v1beta|v1|v1alpha/{models,tunedModels}/M:
 *                                                     generateContent       (JSON)
 *                                                     streamGenerateContent (JSON array stream,
 *                                                                            or SSE with alt=sse)
 *              cloudcode-pa.googleapis.com (and daily-) /v1internal:generateContent,
 *                                                     :streamGenerateContent (Code Assist: the
 *                                                     same chunks inside {"response": ...})
 *
 * Nothing is buffered whole except a non-streamed JSON response (up to AI_MAX_JSON; past it the
 * details are lost and the event flagged truncated). SSE events are parsed one at a time (each
 * at most AI_MAX_EVENT), a Gemini JSON-array stream one element at a time, and the request body
 * is scanned on the fly for its top-level "model" and "stream" without keeping it.
 *
 * Token counts are normalised across providers:
 *   input_tokens         every prompt token, cached ones included (Anthropic reports
 *                        input_tokens + cache_read_input_tokens + cache_creation_input_tokens;
 *                        OpenAI prompt_tokens / input_tokens; Gemini promptTokenCount +
 *                        toolUsePromptTokenCount)
 *   cached_input_tokens  prompt tokens read from a cache (cache_read_input_tokens,
 *                        cached_tokens, cachedContentTokenCount)
 *   cache_write_tokens   prompt tokens written to a cache (cache_creation_input_tokens)
 *   output_tokens        every generated token, reasoning included (Gemini: candidatesTokenCount
 *                        + thoughtsTokenCount)
 *   reasoning_tokens     the reasoning part of output_tokens, when reported
 *
 * Pure: no I/O, no globals. One ai_call is used by one thread (the proxy's loop thread).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

struct pricing;

#define AI_MAX_JSON ((size_t)8 << 20)  /* a non-streamed JSON response */
#define AI_MAX_EVENT ((size_t)4 << 20) /* one SSE event or one JSON-array stream element */
#define AI_MAX_MODEL 128
#define AI_MAX_TOOL_NAMES 32 /* tool names kept; tool_calls counts them all */
#define AI_MAX_TOOL_NAME 64
#define AI_MAX_STOP 64
#define AI_MAX_ERROR 128
#define AI_MAX_ID 128

enum ai_provider { AI_NONE, AI_ANTHROPIC, AI_OPENAI, AI_GEMINI };

enum ai_api {
	AI_API_NONE,
	AI_API_ANTHROPIC_MESSAGES,
	AI_API_OPENAI_CHAT,
	AI_API_OPENAI_RESPONSES,
	AI_API_GEMINI_GENERATE,
	AI_API_GEMINI_STREAM,
};

/* One model call. Strings are NUL-terminated, printable ASCII (other bytes become '?'),
 * truncated to their arrays, "" when unknown. */
struct ai_event {
	enum ai_provider provider;
	enum ai_api api;
	const char *provider_name; /* "anthropic", "openai", "gemini" (static) */
	const char *api_name;	   /* "messages", "chat.completions", "responses",
				      "generateContent", "streamGenerateContent" (static) */
	char model[AI_MAX_MODEL];  /* the response's model, else the request's, else the path's */
	char request_model[AI_MAX_MODEL]; /* as requested (body or path) */
	char response_id[AI_MAX_ID];	  /* message / completion / response id */
	int status;			  /* HTTP status, 0 when no response arrived */
	bool streamed;			  /* SSE or a JSON-array stream */
	bool complete;	/* the response's end was seen (message_stop, [DONE], ...) */
	bool truncated; /* details were lost: body or event over its cap, malformed JSON */
	bool has_usage; /* the provider reported token counts */
	uint64_t input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
		reasoning_tokens;
	unsigned tool_calls; /* tool calls the model made in this response */
	unsigned n_tool_names;
	char tool_names[AI_MAX_TOOL_NAMES][AI_MAX_TOOL_NAME + 1]; /* in order of appearance */
	char stop_reason[AI_MAX_STOP]; /* the provider's own word: end_turn, tool_calls, STOP... */
	char error[AI_MAX_ERROR];      /* an error the provider reported (type or code), or "" */
	bool cost_known; /* false: no price table, unknown model, or no usage reported */
	double cost_usd;
};

/* The provider whose model-call endpoint host + path is (path with or without the query;
 * host in any case, an optional trailing dot or :port ignored), or AI_NONE. */
enum ai_provider ai_provider_for(const char *host, const char *path);
const char *ai_provider_name(enum ai_provider p);

struct ai_call;

/* Start following one request. path may carry the query string. NULL when this is not a model
 * call (method other than POST, unknown endpoint for p) or on allocation failure. */
struct ai_call *ai_call_new(enum ai_provider p, const char *method, const char *path);
/* Request body bytes, in order, in pieces of any size. */
void ai_call_request_body(struct ai_call *c, const void *p, size_t n);
/* The response head: status and Content-Type (NULL when absent). */
void ai_call_response_start(struct ai_call *c, int status, const char *content_type);
/* Response body bytes (decoded: no chunked framing, no content encoding), in order. */
void ai_call_response_body(struct ai_call *c, const void *p, size_t n);
/* One whole event of a response carried as messages (a WebSocket's text messages, aiws.c),
 * instead of a body: the call's status is 101 unless ai_call_response_start said otherwise.
 * truncated: the message was over the cap and is not given. */
void ai_call_response_message(struct ai_call *c, const void *p, size_t n, bool truncated);
/* true once the response reported its end (complete, or an error): nothing more will come. */
bool ai_call_ended(const struct ai_call *c);
/* End of the call (whole response seen, or the connection ended early): fill *ret. pricing may
 * be NULL (cost unknown). May be called once. 0, or -EINVAL. */
int ai_call_finish(struct ai_call *c, const struct pricing *pricing, struct ai_event *ret);
void ai_call_free(struct ai_call *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ai_call *, ai_call_free)
#define _cleanup_ai_call_free_ _cleanup_(ai_call_freep)
