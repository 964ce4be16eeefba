/* jsonrpc.h - JSON-RPC 2.0 messages as MCP uses them (newline-delimited JSON over stdio or a
 * socket), with jansson: framing, parsing, classification, validation, and building replies.
 *
 * Pure: no I/O, no logging, no globals; every function is safe on hostile bytes. Used by
 * capsem-mcp (src/mcp) and by the per-VM MCP gateway (src/gateway). Caps: a message is at most
 * JSONRPC_MAX_MESSAGE bytes (without its newline) and nests at most JSONRPC_MAX_DEPTH arrays or
 * objects. Batches (a top-level array) are refused with -32600: MCP 2025-06-18 removed them.
 *
 * Typical server loop:
 *
 *	struct jsonrpc_reader rd;
 *	jsonrpc_reader_init(&rd, JSONRPC_MAX_MESSAGE);
 *	// for each chunk of bytes (p, n) read from the peer:
 *	while (n > 0) {
 *		size_t k = jsonrpc_reader_feed(&rd, p, n);
 *		p += k, n -= k;
 *		const char *line; size_t len;
 *		int st = jsonrpc_reader_line(&rd, &line, &len);
 *		if (st == JSONRPC_LINE_TOO_LARGE)
 *			send(jsonrpc_error(NULL, JSONRPC_INVALID_REQUEST, "message too large", NULL));
 *		else if (st == JSONRPC_LINE_OK) {
 *			struct jsonrpc_msg m;
 *			if (jsonrpc_parse(line, len, &m) < 0)
 *				send(jsonrpc_error_for(&m));   // NULL for an invalid response: no answer
 *			else
 *				dispatch(&m);
 *			jsonrpc_msg_done(&m);
 *		}
 *	}
 *
 * Stable interface: shared by two programs; add to it, do not change what is here.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "buf.h"

#define JSONRPC_MAX_MESSAGE (4u << 20) /* bytes of one message, newline excluded */
#define JSONRPC_MAX_DEPTH 64u	       /* nested arrays/objects, the top level counts as 1 */
#define JSONRPC_VERSION "2.0"

/* Error codes of JSON-RPC 2.0 (section 5.1). */
enum jsonrpc_code {
	JSONRPC_PARSE_ERROR = -32700,	   /* not JSON (or not UTF-8, or duplicate keys) */
	JSONRPC_INVALID_REQUEST = -32600,  /* JSON, but not a valid message; also batches, size */
	JSONRPC_METHOD_NOT_FOUND = -32601, /* unknown method */
	JSONRPC_INVALID_PARAMS = -32602,   /* params of the wrong shape */
	JSONRPC_INTERNAL_ERROR = -32603,   /* our fault */
};

enum jsonrpc_kind {
	JSONRPC_INVALID = 0,  /* failed to parse or validate: see code/message */
	JSONRPC_REQUEST,      /* method + id: must be answered */
	JSONRPC_NOTIFICATION, /* method, no id: never answered */
	JSONRPC_RESPONSE,     /* id + result */
	JSONRPC_ERROR,	      /* id (may be null) + error {code, message, data?} */
};

/* One parsed message. All json_t pointers except root are borrowed from root; the strings are
 * valid while root is. Release with jsonrpc_msg_done(). */
struct jsonrpc_msg {
	enum jsonrpc_kind kind;
	json_t *root;	    /* the whole message (owned); NULL when it was not JSON */
	json_t *id;	    /* string or integer; NULL for notifications, for an error response
			     * with "id": null, and for invalid messages whose id was unreadable */
	const char *method; /* requests and notifications */
	json_t *params;	    /* requests and notifications: object or array, NULL when absent */
	json_t *result;	    /* JSONRPC_RESPONSE: any JSON value */
	json_t *error;	    /* JSONRPC_ERROR: the error object */
	int error_code;	    /* JSONRPC_ERROR: error.code; JSONRPC_INVALID: the code to answer */
	const char *error_message; /* JSONRPC_ERROR: error.message; JSONRPC_INVALID: why */
	int reply_due;		   /* JSONRPC_INVALID: an error reply is owed (everything but
				    * what looked like a response: result or error, no method) */
	char errbuf[160];	   /* storage for error_message of invalid messages */
};

/* Parse and validate one message (p, n): a single line without its newline. Checks: size
 * (JSONRPC_MAX_MESSAGE), nesting (JSONRPC_MAX_DEPTH), strict JSON (UTF-8, no NUL characters, no
 * duplicate object keys, nothing after the value), a top-level object (an array is a batch:
 * refused), "jsonrpc": "2.0", id a string or an integer (null only in error responses), method
 * a string, params an object or array, exactly one of result/error in a response, error
 * {code: integer, message: string}. Unknown extra members are tolerated.
 * Returns 0 with kind REQUEST/NOTIFICATION/RESPONSE/ERROR, or -EBADMSG with kind INVALID,
 * error_code (-32700 or -32600) and error_message set, and id kept when it could be read.
 * In both cases *ret must be released with jsonrpc_msg_done(). */
int jsonrpc_parse(const void *p, size_t n, struct jsonrpc_msg *ret);
/* The same with explicit caps (0 = the default). */
int jsonrpc_parse_limits(const void *p, size_t n, size_t max_size, unsigned max_depth,
			 struct jsonrpc_msg *ret);
/* Release what a parse produced; m is zeroed. Accepts NULL. */
void jsonrpc_msg_done(struct jsonrpc_msg *m);

/* 0 when (p, n) nests arrays/objects at most max_depth deep (strings skipped), -E2BIG when
 * deeper. Does not validate the JSON otherwise. */
int jsonrpc_depth_check(const void *p, size_t n, unsigned max_depth);

/* ---- building messages. Each returns a new reference or NULL (allocation failure). "Stolen"
 * arguments are owned by the result afterwards (and released even on failure); ids are
 * borrowed (json_incref'ed). A NULL id means "id": null. ---- */

/* {"jsonrpc":"2.0","id":id,"result":result}; result stolen (NULL means {}). */
json_t *jsonrpc_result(json_t *id, json_t *result);
/* {"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message,"data":data}}; data stolen,
 * omitted when NULL; message NULL becomes the standard text of the code. */
json_t *jsonrpc_error(json_t *id, int code, const char *message, json_t *data);
/* The error reply owed for an invalid message (kind JSONRPC_INVALID): its error_code and
 * message, its id or null. NULL when no reply is due (a valid message, or an invalid message
 * that looked like a response: one never answers responses). */
json_t *jsonrpc_error_for(const struct jsonrpc_msg *m);
/* {"jsonrpc":"2.0","id":id,"method":method,"params":params}; params stolen, omitted if NULL. */
json_t *jsonrpc_request(json_t *id, const char *method, json_t *params);
/* {"jsonrpc":"2.0","method":method,"params":params}; params stolen, omitted if NULL. */
json_t *jsonrpc_notification(const char *method, json_t *params);
/* The standard text of a code ("Parse error", ...), "Server error" for others. */
const char *jsonrpc_code_text(int code);

/* Serialise msg compactly followed by "\n" (the stdio framing; jansson escapes every control
 * character, so the text itself holds no newline). *ret is malloc'ed and NUL-terminated,
 * *ret_len excludes the NUL. 0, -ENOMEM, or -E2BIG when longer than JSONRPC_MAX_MESSAGE. */
int jsonrpc_dump(const json_t *msg, char **ret, size_t *ret_len);

/* jsonrpc_dump with another cap on the text (0 = no cap): for a sender whose own messages may be
 * larger than what it accepts (capsem-mcp's exec results). */
int jsonrpc_dump_max(const json_t *msg, size_t max, char **ret, size_t *ret_len);

/* Ids: 1 when a and b are the same id (same type and value: 1 and "1" differ), else 0. */
int jsonrpc_id_equal(const json_t *a, const json_t *b);
/* 1 when id is a valid request id (string or integer), else 0. */
int jsonrpc_id_valid(const json_t *id);

/* ---- newline framing ----
 *
 * A reader splits a byte stream into lines on "\n" (a "\r" before it is dropped; empty lines are
 * skipped). A line longer than max is never buffered whole: the reader drops its bytes up to the
 * next newline and then reports JSONRPC_LINE_TOO_LARGE once, so that the caller can answer
 * -32600 "message too large" and go on with the next message. Memory is bounded by max + 1. */
struct jsonrpc_reader {
	struct buf line; /* bytes of the current line */
	size_t max;	 /* longest accepted line, "\r\n" excluded */
	int skipping;	 /* dropping an oversized line until its newline */
	int ready;	 /* a JSONRPC_LINE_* waits for jsonrpc_reader_line() */
};

enum {
	JSONRPC_LINE_NONE = 0,	    /* no complete line yet: feed more */
	JSONRPC_LINE_OK = 1,	    /* a line is ready */
	JSONRPC_LINE_TOO_LARGE = 2, /* a line longer than max was dropped */
};

/* max 0 = JSONRPC_MAX_MESSAGE. Never fails (allocation is lazy). */
void jsonrpc_reader_init(struct jsonrpc_reader *r, size_t max);
void jsonrpc_reader_done(struct jsonrpc_reader *r);
/* Consume bytes from (p, n) up to and including the first newline that completes a line (or an
 * oversized line), so that at most one event is pending. Returns the number of bytes consumed
 * (<= n; call again with the rest after taking the event). Never fails: on allocation failure
 * the line is treated as too large. A pending event not yet taken is discarded. */
size_t jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *p, size_t n);
/* Take the pending event: JSONRPC_LINE_OK with *ret_line and *ret_len (not NUL-terminated; valid
 * until the next feed/finish/done), JSONRPC_LINE_TOO_LARGE, or JSONRPC_LINE_NONE. */
int jsonrpc_reader_line(struct jsonrpc_reader *r, const char **ret_line, size_t *ret_len);
/* At end of input: turn a final line without a newline into an event (then take it with
 * jsonrpc_reader_line). Returns what jsonrpc_reader_line will return. */
int jsonrpc_reader_finish(struct jsonrpc_reader *r);

/* A JSON string of the bytes (p, n): invalid UTF-8 sequences and NUL bytes become U+FFFD. New
 * reference or NULL. */
json_t *mcp_text_string(const void *p, size_t n);
