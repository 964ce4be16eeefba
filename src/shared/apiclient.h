/* apiclient.h - a small blocking HTTP/1.1 client for capsemd's API (docs/API.md) over its Unix
 * socket, and the on-demand start of the daemon.
 *
 * One connection (struct api_conn) carries requests one after another (keep-alive). Responses
 * are parsed strictly with every length capped: the head, the number of headers, Content-Length
 * and chunked bodies. An exec request is an upgrade: after "101 Switching Protocols" the caller
 * takes the raw fd (and any bytes already read past the head, in conn->rbuf) for the exec frames.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "http.h"

#define API_MAX_HEAD (64u * 1024u)
#define API_MAX_HEADERS 100u
#define API_MAX_BODY (16u << 20)	 /* a buffered (JSON, text) response body: 10,000 events */
#define API_MAX_FILE_BODY (256ull << 20) /* a streamed file body (GET /vms/{ref}/files) */
#define API_START_TIMEOUT_MS 10000
/* capsemd's exit status when another capsemd already serves the home */
#define CAPSEMD_EXIT_RUNNING 3

struct api_conn {
	int fd;
	struct buf rbuf; /* bytes read but not yet consumed */
	int intr_fd;	 /* >= 0: api_read_response() returns -EINTR when this becomes readable
			  * while waiting for a response head (e.g. a signalfd) */
};

/* A parsed response head (pure; see api_parse_head). */
struct api_head {
	int status;
	int chunked;		/* Transfer-Encoding: chunked */
	int64_t content_length; /* -1 when absent */
	int close;		/* Connection: close */
	char content_type[128]; /* lowercased media type without parameters; "" when absent */
	char upgrade[64];
};

struct api_req {
	const char *method;
	const char *path;	  /* already percent-encoded */
	const char *content_type; /* NULL with no body */
	const void *body;
	size_t body_len;
	int body_fd;	     /* >= 0: send body_len bytes read from this fd instead of body */
	const char *upgrade; /* e.g. "capsem-exec/1" */
	int out_fd;	     /* >= 0: write a 2xx response body to this fd instead of buffering */
	uint64_t out_max;    /* cap for out_fd bodies (0 = API_MAX_FILE_BODY) */
};

struct api_response {
	struct api_head head;
	struct buf body; /* buffered body (empty when streamed to out_fd or on 101) */
	json_t *json;	 /* the body parsed as JSON when it is JSON, else NULL */
};

/* Incremental decoder for a chunked body (http.c's, shared with capsemd and the proxy). */
struct api_chunked {
	struct http_chunked h;
	int done;
};

/* ---- pure parsing (unit-tested) ---- */

/* Parse a response head at the start of (p, n) with http.c's parser. Returns its length
 * including the blank line (> 0) when complete, 0 when more bytes are needed, -EBADMSG when
 * malformed, -E2BIG past API_MAX_HEAD or API_MAX_HEADERS. *ret is untouched unless > 0 is
 * returned. */
int api_parse_head(const char *p, size_t n, struct api_head *ret);

/* Feed chunked-body bytes; decoded data is appended to out (or written to out_fd when >= 0).
 * Returns the bytes consumed (fewer than n once the body ends: the rest belongs to the next
 * response), -EBADMSG for bad syntax, -ENOBUFS past the cap of out, or -errno from writing. */
ssize_t api_chunked_feed(struct api_chunked *c, const uint8_t *p, size_t n, struct buf *out,
			 int out_fd);

/* An exec request (POST /vms/{ref}/exec, docs/API.md "Exec"). */
struct api_exec {
	char *const *argv; /* NULL-terminated; with shell, argv[0] is the /bin/sh -c string */
	int shell;
	char *const *env; /* "KEY=VALUE", NULL-terminated, may be NULL */
	const char *cwd;  /* NULL: the agent's default */
	int tty;
	uint16_t rows, cols; /* the terminal's size with tty */
	uint64_t timeout_ms; /* 0: none */
	const char *via;     /* who asks, for the session ledger: "cli", "api" or "mcp" */
};
/* Start an exec on the open connection c: send the request and read capsemd's answer. 0 with
 * *ret the 101 response (the connection then carries the exec session: docs/PROTOCOL.md), or
 * -EREMOTE with *ret the error response (api_response_error), or -errno (nothing in *ret). */
int api_exec_start(struct api_conn *c, const char *ref, const struct api_exec *e,
		   struct api_response *ret);

/* Append s percent-encoded (RFC 3986 unreserved characters kept) to a malloc'ed string.
 * Returns a new string or NULL. */
char *api_escape(const char *s);
/* "/vms/<ref><suffix>" with ref percent-encoded as one path segment (every byte but
 * [A-Za-z0-9._~-], '/' included); malloc'ed, NULL on allocation failure. */
char *api_vm_path(const char *ref, const char *suffix);

/* The human message of an error response: its JSON "error" field, else "HTTP <status>". The
 * string belongs to r. */
const char *api_response_error(const struct api_response *r);
/* The machine code of an error response ("not_found", ...) or "". */
const char *api_response_code(const struct api_response *r);

/* ---- I/O ---- */

/* $CAPSEM_HOME/run/capsemd.sock (CAPSEM_HOME defaults to ~/.capsem). malloc'ed or NULL. */
char *api_socket_path(void);

/* Connect to the daemon without starting it. 0, -ECONNREFUSED / -ENOENT when nobody listens,
 * or -errno. The conn is initialised on success only. */
int api_connect(struct api_conn *c);
/* Connect; when nobody answers, start capsemd (the systemd user unit if one is installed for
 * this CAPSEM_HOME, else a detached `capsemd --foreground` logging to run/capsemd.log) and wait
 * up to API_START_TIMEOUT_MS for its socket. Prints "capsem: starting capsemd" on stderr once.
 * 0 or -errno (-ETIMEDOUT when it did not come up). */
int api_connect_or_start(struct api_conn *c);
void api_conn_close(struct api_conn *c);

/* Send one request (blocking). 0 or -errno. */
int api_send_request(struct api_conn *c, const struct api_req *rq);
/* Read one response. With status 101 only the head is read and conn->rbuf keeps any bytes past
 * it. 0 (any status) or -errno; -EINTR when conn->intr_fd became readable before the head
 * arrived (call again to resume), -EPIPE when the daemon closed the connection early, -EBADMSG
 * for a malformed response, -EFBIG past a body cap. ret is owned by the caller
 * (api_response_done) and valid only on 0. */
int api_read_response(struct api_conn *c, const struct api_req *rq, struct api_response *ret);
/* send + read. */
int api_request(struct api_conn *c, const struct api_req *rq, struct api_response *ret);
/* A JSON request: body (borrowed, may be NULL) is serialised compactly. */
int api_json(struct api_conn *c, const char *method, const char *path, json_t *body,
	     struct api_response *ret);
void api_response_done(struct api_response *r);
