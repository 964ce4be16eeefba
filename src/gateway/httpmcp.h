/* httpmcp.h - one POST of the MCP streamable-HTTP transport (MCP 2025-06-18, "Transports"):
 * a JSON-RPC message in, the matching response out, whether the server answers with
 * application/json or with a text/event-stream. Blocking: the gateway's worker threads.
 */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define HTTPMCP_MAX_BODY (4u << 20) /* bytes of a response body */
#define HTTPMCP_PROTOCOL_VERSION "2025-06-18"

struct httpmcp_result {
	long status;	  /* HTTP status, 0 when there was no response */
	json_t *msg;	  /* the response whose id equals want_id, or NULL */
	char *session_id; /* the Mcp-Session-Id response header, or NULL */
	char err[256];	  /* why it failed (return value < 0) */
};

/* POST body (a JSON-RPC message, len bytes) to url with the extra headers ("Name: value",
 * NULL-terminated or NULL), the session id when not NULL, Accept: application/json,
 * text/event-stream. want_id NULL: a notification (202 expected, no message). 0 when the
 * server accepted it (and, with want_id, answered it), -EIO (network, status, no answer: see
 * err), -ESTALE (404 with a session id: the session expired), -ENOMEM. Release with
 * httpmcp_result_done() in every case. stop (may be NULL): the transfer is abandoned as soon as
 * it becomes non-zero (the gateway is stopping). */
int httpmcp_post(const char *url, char *const *headers, const char *session_id, const char *body,
		 size_t len, const json_t *want_id, long timeout_ms, const atomic_int *stop,
		 struct httpmcp_result *ret);
void httpmcp_result_done(struct httpmcp_result *r);

/* The host-side guard of every connection the gateway makes (HTTP servers, built-in fetch): the
 * policy decides on the URL's host name, so a name must not lead to this host or its link-local
 * neighbours (a DNS answer of 127.0.0.1 or 169.254.169.254 for an allowed name). When the URL's
 * host is a name, connections to loopback, link-local, unspecified and IPv4-mapped forms of them
 * are refused (the transfer fails with "couldn't connect"); an IP literal the policy allowed is
 * connected to as written. Sets CURLOPT_OPENSOCKETFUNCTION on h; *literal must outlive the
 * transfer. */
struct httpmcp_guard {
	int host_is_literal;
};
void httpmcp_guard(void *curl_handle, const char *url, struct httpmcp_guard *g);
/* Abandon the transfer on h as soon as *stop is non-zero (stop may be NULL: nothing set). */
void httpmcp_stop_on(void *curl_handle, const atomic_int *stop);
/* Is this address one the guard refuses for a host name? */
int httpmcp_addr_is_local(const struct sockaddr *sa);

/* Find the response with id want_id in a response body (JSON object or array, or an SSE
 * stream: each event's data lines joined). New reference or NULL. Pure. */
json_t *httpmcp_find_response(const char *body, size_t len, int is_sse, const json_t *want_id);
