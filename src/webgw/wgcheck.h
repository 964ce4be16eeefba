/* wgcheck.h - capsem-gateway's pure decisions: which Origin and Host a request may carry, the
 * bearer token (constant-time), the failed-auth rate limit, the allow-list of capsemd routes,
 * the peer socket's owner from /proc/net/tcp text, the WebSocket handshake key, the terminal's
 * output ring and its resize message.
 *
 * Trust boundary: every input is a browser's (or any local process's) bytes: bounded, never
 * trusted for sizes. Pure: no I/O, no allocation but where said; not thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WG_TOKEN_LEN 64	    /* [A-Za-z0-9] characters */
#define WG_AUTH_FAIL_MAX 20 /* failures in WG_AUTH_WINDOW_MS before 429 */
#define WG_AUTH_WINDOW_MS 60000u
#define WG_RING_SIZE (64u * 1024u) /* terminal output replayed on (re)connect */

/* Origin: NULL (no header: scripts) is acceptable; else exactly "http://H:PORT" with H one of
 * 127.0.0.1, localhost, [::1] and PORT the gateway's own (no path, userinfo, query). */
bool wg_origin_ok(const char *origin, unsigned port);
/* Host: one of the loopback names, with the gateway's port or none (DNS rebinding: a page of
 * evil.example resolved to 127.0.0.1 sends Host: evil.example). NULL is refused. */
bool wg_host_ok(const char *host, unsigned port);

/* The token from "Authorization: Bearer T" (auth may be NULL) or the query's token= (query may
 * be NULL or ""); compared in constant time with want (WG_TOKEN_LEN characters). */
bool wg_token_ok(const char *auth, const char *query, const char *want);

/* Failed-auth limiter: the times of the last WG_AUTH_FAIL_MAX failures. */
struct wg_ratelimit {
	uint64_t t[WG_AUTH_FAIL_MAX];
	unsigned next;
};
/* Record a failure at now_ms. */
void wg_ratelimit_fail(struct wg_ratelimit *r, uint64_t now_ms);
/* True while WG_AUTH_FAIL_MAX failures lie within the window before now_ms. */
bool wg_ratelimit_limited(const struct wg_ratelimit *r, uint64_t now_ms);

enum wg_route {
	WG_ROUTE_NONE = 0, /* not proxied: 404 */
	WG_ROUTE_JSON,	   /* a JSON route: request body <= WG_BODY_MAX */
	WG_ROUTE_UPLOAD,   /* PUT /vms/{ref}/files: body <= WG_UPLOAD_MAX */
	WG_ROUTE_LONG,	   /* may take long (create, start, fork, long-polls): a longer timeout */
};
#define WG_BODY_MAX (1u << 20)
#define WG_UPLOAD_MAX (64u << 20)
/* Is "METHOD /path" (capsemd's path: the part after /api) on the allow-list? */
enum wg_route wg_route_allowed(const char *method, const char *path);

/* /proc/net/tcp text: the uid owning the socket whose local address is (addr, port) and remote
 * address (raddr, rport); addresses as struct in_addr's s_addr (the kernel prints that integer
 * in hex), ports in host order. 0 with *ret_uid, -ENOENT when
 * no line matches, -EBADMSG for a malformed matching line. */
int wg_proc_tcp_uid(const char *text, size_t n, uint32_t addr, uint16_t port, uint32_t raddr,
		    uint16_t rport, uid_t *ret_uid);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (base64 of 16 bytes): 28 characters + NUL into
 * out. 0, or -EINVAL for a key that is not 24 base64 characters. */
int wg_ws_accept(const char *key, char out[29]);
/* A server frame's header (FIN, opcode, unmasked length) into out (at most 10 bytes); returns
 * its length. */
size_t wg_ws_frame_head(int opcode, uint64_t len, uint8_t out[10]);

/* A terminal's recent output: the last WG_RING_SIZE bytes. */
struct wg_ring {
	uint8_t b[WG_RING_SIZE];
	size_t start, len;
};
void wg_ring_put(struct wg_ring *r, const uint8_t *p, size_t n);
/* The bytes in order, as two spans (the second may be empty). */
void wg_ring_spans(const struct wg_ring *r, const uint8_t **p1, size_t *n1, const uint8_t **p2,
		   size_t *n2);

/* A resize text frame: {"cols":N,"rows":M} with 1 <= N, M <= 1000 (other keys ignored).
 * 0 with *ret_rows and *ret_cols, or -EINVAL. */
int wg_parse_resize(const char *p, size_t n, uint16_t *ret_rows, uint16_t *ret_cols);
/* A terminal/VM id in a path: [a-z0-9][a-z0-9_.-]{0,62} (a VM name or id). */
bool wg_ref_ok(const char *s);
