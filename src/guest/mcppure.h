/* mcppure.h - the pure parts of capsem-mcp-relay: which JSON-RPC messages carry which id, the
 * table of requests in flight, the error line that answers them, the preamble line.
 *
 * The relay links only basic and proto (no JSON library), and all it needs to know about a line
 * is the JSON text of its top-level "id" and whether it has a top-level "method": a request has
 * both, a notification only a method, a response only an id. mcppure_scan() checks the line's
 * JSON syntax on the way (bounded nesting, no allocation) and finds those two members.
 * Libc only; the caller's thread; used by tests/unit/guest and tests/fuzz/fuzz-mcprelay.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MCPPURE_ID_MAX 128u	  /* bytes of an id's JSON text the relay tracks */
#define MCPPURE_DEPTH_MAX 64u	  /* nesting of arrays and objects in a line */
#define MCPPURE_PENDING_MAX 1024u /* requests in flight per relay */
#define MCPPURE_COMM_MAX 16u	  /* a process name (TASK_COMM_LEN, incl. NUL) */

enum mcppure_kind {
	MCPPURE_INVALID,      /* not a JSON object, or not valid JSON */
	MCPPURE_REQUEST,      /* "method" and a trackable "id" (number or string) */
	MCPPURE_NOTIFICATION, /* "method", no "id" */
	MCPPURE_RESPONSE,     /* "id", no "method" */
	MCPPURE_OTHER,	      /* an object that is none of those (id null/array/object/too long) */
};

/* An id has two forms: its JSON text as the peer wrote it (for the error line that answers it)
 * and a key for matching a response to its request whatever escapes each side used: 'n' and
 * the number's text, or 's' and the string's decoded bytes (so "\u00e9" and "é", "\/" and "/"
 * are the same id, as they are to the gateway's JSON library). */
struct mcppure_id {
	char text[MCPPURE_ID_MAX + 1]; /* NUL-terminated */
	size_t text_len;
	char key[MCPPURE_ID_MAX + 1]; /* may hold NUL bytes: use key_len */
	size_t key_len;
};

struct mcppure_msg {
	enum mcppure_kind kind;
	struct mcppure_id id; /* REQUEST, RESPONSE; empty (lengths 0) otherwise */
};

/* Scan one line (without its newline). Always fills *ret; returns its kind. */
enum mcppure_kind mcppure_scan(const char *p, size_t n, struct mcppure_msg *ret);

/* Requests in flight, by id key. */
struct mcppure_pending {
	struct mcppure_id *ids;
	size_t n;
};
/* 0, -ENOBUFS when MCPPURE_PENDING_MAX are in flight, -ENOMEM. A duplicate id is added again. */
int mcppure_pending_add(struct mcppure_pending *t, const struct mcppure_id *id);
/* Remove one entry with this id's key: true when there was one. */
bool mcppure_pending_remove(struct mcppure_pending *t, const struct mcppure_id *id);
void mcppure_pending_done(struct mcppure_pending *t);

/* The JSON-RPC error line (with its newline) answering request id (JSON text; NULL = null):
 * {"jsonrpc":"2.0","id":ID,"error":{"code":CODE,"message":"MSG"}}. msg must not need escaping.
 * Returns the length, or -ENOBUFS when cap is too small. */
ssize_t mcppure_error_line(const char *id, size_t id_len, int code, const char *msg, char *out,
			   size_t cap);

/* The relay's first line on the connection (docs/PROTOCOL.md §"MCP relay"):
 * "CAPSEM-MCP-RELAY/1 pid=<ppid> comm=<name>\n", the name reduced to [A-Za-z0-9._+-] (others
 * become '_', at most 15 bytes, "-" when empty). Returns the length or -ENOBUFS. */
ssize_t mcppure_preamble(uint32_t pid, const char *comm, char *out, size_t cap);

/* The first text content of a tools/call response line (its "result" "content" array's first
 * "text" string, JSON escapes decoded: \uXXXX and surrogate pairs to UTF-8; a \u0000 becomes
 * '?'), into out (NUL-terminated, cut at cap - 1 bytes), and whether "isError" is true. The
 * gateway writes these lines compactly (jansson); members are found by their quoted names in
 * order, after a check of the line's JSON syntax. The text's length, -EBADMSG when the line is
 * not a result with a text content. */
ssize_t mcppure_result_text(const char *line, size_t n, char *out, size_t cap, bool *ret_error);
