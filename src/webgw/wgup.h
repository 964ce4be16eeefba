/* wgup.h - capsem-gateway's client of capsemd (docs/API.md) on the gateway's libuv loop: one
 * request per connection to $CAPSEM_HOME/run/capsemd.sock, never blocking the loop.
 *
 * A request is sent whole (head + body); the response is read with http.c's parser (head, then
 * a Content-Length or chunked body, capped) and handed to the callback once. An upgrade request
 * (exec) hands over the connection after its 101 instead. Every request has a timeout.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

struct wgup;

/* The result of a request: err 0 and status/content type/body, or err -errno (-ECONNREFUSED /
 * -ENOENT: capsemd is not running; -ETIMEDOUT; -EBADMSG: a malformed response; -EFBIG: over
 * the body cap). body is the callback's to keep (buf_done it when taken) or leave. For an
 * upgrade answered 101: *stream is the connection (the callback owns it: close and free it),
 * body holds the bytes read past the head. */
typedef void (*wgup_cb)(void *userdata, int err, int status, const char *content_type,
			struct buf *body, uv_pipe_t *stream);

struct wgup_req {
	const char *method;
	const char *target;	  /* path[?query], already percent-encoded */
	const char *content_type; /* NULL: none */
	const void *body;	  /* copied */
	size_t body_len;
	const char *upgrade;   /* e.g. "capsem-exec/1", or NULL */
	uint64_t timeout_ms;   /* 0: none */
	uint64_t max_response; /* body cap */
};

/* Start a request to the daemon's socket at sock_path. 0 (cb will be called exactly once, never
 * from inside this call) or -errno (cb is not called). *ret (may be NULL) names the request
 * for wgup_cancel. */
int wgup_start(uv_loop_t *loop, const char *sock_path, const struct wgup_req *rq, wgup_cb cb,
	       void *userdata, struct wgup **ret);
/* Cancel a request in flight: its callback is not called. */
void wgup_cancel(struct wgup *u);
