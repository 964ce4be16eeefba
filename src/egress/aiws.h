/* aiws.h - model calls over a WebSocket: the OpenAI Responses API's socket transport (what
 * Codex uses first), read from the relayed frames in both directions (ws.c) and turned into the
 * same model-call events as its HTTP form (ai.c).
 *
 * On that socket the client sends one text message per request ({"type":"response.create",
 * "model":...,...}) and the server answers with the same events its HTTP stream carries
 * (response.created ... response.completed / .failed / .incomplete, or error). Each client text
 * message starts a call (its bytes stream into the request scanner, never held whole); each
 * server text message (at most AI_MAX_EVENT, held while it arrives) is one event of the open
 * call; a terminal event, the next request or the end of the connection finishes it and hands
 * the event to the callback. Compressed messages (permessage-deflate) cannot be read: the proxy
 * keeps the extension off these connections, and a call seen anyway is marked truncated.
 *
 * Trust boundary: guest and upstream bytes (ws.h, ai.h); bounded as they are. Thread: the
 * proxy's loop thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "ai.h"

struct pricing;
struct ai_ws;

/* When a call's request began and its first server message came (CLOCK_MONOTONIC ns; first_ns
 * is 0 when none came). */
struct ai_ws_times {
	uint64_t start_ns, first_ns;
};

typedef void (*ai_ws_fn)(void *userdata, const struct ai_event *ev, const struct ai_ws_times *t);

/* A reader for the WebSocket upgraded from a request to (p, path), or NULL when that is not a
 * model API spoken over a WebSocket (or on ENOMEM). pricing may be NULL. */
struct ai_ws *ai_ws_new(enum ai_provider p, const char *path, const struct pricing *pricing,
			ai_ws_fn fn, void *userdata);
/* Bytes relayed from the guest (client frames) / from the upstream (server frames). */
void ai_ws_from_guest(struct ai_ws *a, const void *p, size_t n);
void ai_ws_from_upstream(struct ai_ws *a, const void *p, size_t n);
/* The connection ended: the call still open (if any) is handed on, incomplete. Then free. */
void ai_ws_free(struct ai_ws *a);
