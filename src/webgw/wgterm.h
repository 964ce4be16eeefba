/* wgterm.h - capsem-gateway's terminals: /terminal/{ref} WebSockets relayed to a login shell in
 * the VM through capsemd's exec upgrade (docs/API.md "Exec and terminals", docs/PROTOCOL.md §4).
 *
 * Wire protocol with the browser: binary frames are PTY bytes both ways; a text frame
 * {"cols":N,"rows":M} is a resize; the gateway's text frames are {"type":"exit","status":N} and
 * {"type":"error","message":S} before it closes. On connect the last 64 KiB of output are
 * replayed. The shell outlives its browser: a reconnect to the same VM within 10 minutes
 * reattaches the same shell process (a second browser takes the terminal over).
 */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "httpd.h"

#define WGTERM_LINGER_MS (10u * 60u * 1000u)

struct wgterm_ctx {
	uv_loop_t *loop;
	const char *capsemd_sock;
};

/* Serve an upgrade request for the terminal of VM ref (checked by the caller) with the initial
 * size rows x cols (0: 24x80). The connection is answered either way. */
void wgterm_attach(struct wgterm_ctx *ctx, struct httpd_conn *c, const struct http_msg *req,
		   const char *ref, uint16_t rows, uint16_t cols);
/* How many shells are kept (attached or lingering). */
unsigned wgterm_count(void);
