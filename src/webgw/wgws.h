/* wgws.h - a WebSocket (RFC 6455) server connection of capsem-gateway on its libuv loop: the
 * handshake (answered through httpd_detach), client frames read with the fuzzed frame reader
 * (src/egress/ws.c: masks required, control frames), text messages assembled (at most
 * WGWS_TEXT_MAX bytes), binary pieces handed on as they arrive, pings answered, frames sent
 * with a bounded write queue.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "httpd.h"

#define WGWS_TEXT_MAX 4096u
#define WGWS_QUEUE_MAX (8u << 20)  /* bytes queued toward the browser before it is dropped */
#define WGWS_QUEUE_HIGH (1u << 20) /* producers should pause above this (wgws_queued) */

struct wgws;

struct wgws_ops {
	void (*on_binary)(void *ud, const uint8_t *p, size_t n);
	void (*on_text)(void *ud, const char *p, size_t n);
	/* the browser went away, closed, or broke the protocol: the wgws is gone after this */
	void (*on_close)(void *ud);
	/* the write queue fell below WGWS_QUEUE_HIGH / 2 (optional) */
	void (*on_drain)(void *ud);
};

/* Is req a WebSocket upgrade we can accept (GET, Upgrade: websocket, version 13, a key)? */
int wgws_check(const struct http_msg *req);
/* Answer 101 and take the connection. 0 with *ret (the ops are called from now on), or -errno
 * (the connection was answered with an error). */
int wgws_accept(struct httpd_conn *c, const struct http_msg *req, const struct wgws_ops *ops,
		void *ud, struct wgws **ret);
/* Queue a frame (WS_OP_TEXT or WS_OP_BINARY). 0, or -ENOBUFS past WGWS_QUEUE_MAX (the
 * connection is then closed: on_close follows). */
int wgws_send(struct wgws *w, int opcode, const void *p, size_t n);
size_t wgws_queued(const struct wgws *w);
/* Send a close frame with code and reason, then close. on_close is not called. */
void wgws_close(struct wgws *w, uint16_t code, const char *reason);
