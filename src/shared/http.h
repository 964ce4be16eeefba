/* http.h - a strict HTTP/1.1 message parser: capsemd's API (docs/API.md "Limits and errors")
 * and the egress proxy (requests from the guest, responses from upstream).
 *
 * Pure code on (ptr, len): no I/O, no allocation beyond the message's own copy of its head.
 * The caller accumulates bytes and calls http_parse_head() (or http_parse_response_head())
 * until it returns > 0; http_body_framing() says how the body is delimited; a chunked body goes
 * through http_chunked_feed() (decoded into a buf) or http_chunked_scan() (decoded spans handed
 * to a callback while the caller keeps the raw bytes, e.g. to forward them unchanged). Every
 * length and count is capped; errors are -errno values that http_error_status() maps to an HTTP
 * status.
 *
 *   -EBADMSG   malformed request (400), including a request with a second Host, Content-Length,
 *              Transfer-Encoding, Connection, Upgrade, Expect, Authorization,
 *              Proxy-Authorization, x-api-key, x-goog-api-key or api-key header, and an
 *              HTTP/1.1 request without Host
 *   -E2BIG     request line or headers over their caps (431)
 *   -EFBIG     body over its cap (413)
 *   -ENOTSUP   a Transfer-Encoding other than chunked (501)
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define HTTP_MAX_REQUEST_LINE (8u * 1024u)
#define HTTP_MAX_HEADER_BYTES (64u * 1024u)
#define HTTP_MAX_HEADERS 128u
#define HTTP_MAX_HEAD (HTTP_MAX_REQUEST_LINE + HTTP_MAX_HEADER_BYTES + 4u)
#define HTTP_MAX_BODY (1024u * 1024u)
#define HTTP_MAX_JSON_DEPTH 32u

struct http_header {
	const char *name; /* NUL-terminated, inside http_request.raw */
	const char *value;
};

/* A parsed request or response head. */
struct http_msg {
	char *raw;	    /* owned copy of the head with NULs written in */
	const char *method; /* requests: method, target, path, query */
	const char *target; /* as sent: path[?query] */
	char *path;	    /* owned: target up to '?' */
	const char *query;  /* after '?', or "" */
	int status;	    /* responses: 100..999 and the reason phrase (maybe "") */
	const char *reason;
	int minor; /* HTTP/1.<minor>: 0 or 1 */
	size_t n_headers;
	struct http_header headers[HTTP_MAX_HEADERS];
	int has_length;
	uint64_t content_length;
	int chunked;
	int keep_alive;
	int expect_continue;
	const char *upgrade; /* the Upgrade header when Connection names "upgrade", else NULL */
};

/* Parse the head at the front of (p, n). Returns 0 when it is not complete yet (and within its
 * caps), the number of bytes it took (> 0) with *req filled, or -errno. *req must be zeroed or
 * released with http_msg_done() before; it is untouched unless the return is > 0. */
ssize_t http_parse_head(const uint8_t *p, size_t n, struct http_msg *req);
/* The same for a response head (status line instead of a request line; no path/query). */
ssize_t http_parse_response_head(const uint8_t *p, size_t n, struct http_msg *resp);
void http_msg_done(struct http_msg *req);

enum http_body {
	HTTP_BODY_NONE,
	HTTP_BODY_LENGTH,      /* content_length bytes */
	HTTP_BODY_CHUNKED,     /* http_chunked_* until the last chunk and trailer */
	HTTP_BODY_UNTIL_CLOSE, /* responses only: everything until the server closes */
};
/* How the body of m is delimited. request_method NULL: m is a request; else m is the response
 * to a request with that method (HEAD, 1xx, 204 and 304 responses have no body). */
enum http_body http_body_framing(const struct http_msg *m, const char *request_method);
/* Case-insensitive header lookup: the first value or NULL. */
const char *http_header_get(const struct http_msg *req, const char *name);

/* Incremental chunked-body decoder. */
struct http_chunked {
	int state;
	uint64_t chunk_left;
	size_t line_len; /* bytes of the current size/extension/trailer line */
	size_t trailer_bytes;
	uint64_t total;
};
/* Decode from (p, n) into body (whose cap bounds the decoded size: past it -EFBIG). Returns 1
 * when the last chunk and the trailer were read, 0 when more input is needed, or -errno; in both
 * non-error cases *ret_used says how many input bytes were consumed. */
int http_chunked_feed(struct http_chunked *st, const uint8_t *p, size_t n, struct buf *body,
		      size_t *ret_used);
/* The same, handing each decoded span to data (when not NULL; a negative return stops the scan
 * and is returned) and capping the decoded total at max_total (-EFBIG past it). */
int http_chunked_scan(struct http_chunked *st, const uint8_t *p, size_t n, uint64_t max_total,
		      int (*data)(void *userdata, const uint8_t *p, size_t n), void *userdata,
		      size_t *ret_used);

/* The status for an error returned by the functions above. */
int http_error_status(int err);
const char *http_status_text(int status);

/* Find key in a query string (a=1&b=2) and percent-decode its value into a new string (NUL-free;
 * '+' means space). Returns 0 with *ret (owned), -ENOENT when absent, -EBADMSG when malformed. */
int http_query_get(const char *query, const char *key, char **ret);

/* 0 when the JSON text's nesting of arrays/objects stays within max_depth, -EBADMSG otherwise.
 * A shallow scan (strings and escapes are skipped) run before a JSON parser sees the text. */
int http_json_depth_check(const uint8_t *p, size_t n, unsigned max_depth);
