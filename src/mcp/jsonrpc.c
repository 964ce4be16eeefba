/* jsonrpc.c - JSON-RPC 2.0 / MCP messages: newline framing, strict parsing and classification,
 * reply builders.
 *
 * Trust boundary: every byte comes from a peer we do not trust (an MCP client on the host, a
 * guest's agent through the gateway, an upstream MCP server). Sizes and nesting are checked
 * before jansson sees the bytes (jansson's own recursion limit is 2048), duplicate keys are
 * refused (two parsers must never disagree on which "method" or "id" a message carries), and a
 * line too long to buffer is dropped byte by byte instead of growing a buffer. Pure: callable
 * from any thread, no state outside the structures passed in.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonrpc.h"
#include "macro.h"
#include "utf8.h"

/* ---- parsing ---- */

int jsonrpc_depth_check(const void *p, size_t n, unsigned max_depth)
{
	const unsigned char *s = p;
	unsigned depth = 0;
	int in_str = 0, esc = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (in_str) {
			if (esc)
				esc = 0;
			else if (c == '\\')
				esc = 1;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		switch (c) {
		case '"':
			in_str = 1;
			break;
		case '[':
		case '{':
			if (++depth > max_depth)
				return -E2BIG;
			break;
		case ']':
		case '}':
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return 0;
}

int jsonrpc_id_valid(const json_t *id)
{
	return json_is_string(id) || json_is_integer(id);
}

int jsonrpc_id_equal(const json_t *a, const json_t *b)
{
	if (!jsonrpc_id_valid(a) || !jsonrpc_id_valid(b))
		return 0;
	if (json_is_integer(a))
		return json_is_integer(b) && json_integer_value(a) == json_integer_value(b);
	if (!json_is_string(b) || json_string_length(a) != json_string_length(b))
		return 0;
	return memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
}

/* Mark m invalid with a constant message. Returns -EBADMSG. */
static int invalid(struct jsonrpc_msg *m, int code, const char *why)
{
	m->kind = JSONRPC_INVALID;
	m->error_code = code;
	snprintf(m->errbuf, sizeof(m->errbuf), "%s", why);
	m->error_message = m->errbuf;
	m->method = NULL;
	m->params = m->result = m->error = NULL;
	return -EBADMSG;
}

static int validate_request(struct jsonrpc_msg *m, json_t *method)
{
	json_t *root = m->root, *id = json_object_get(root, "id");
	json_t *params = json_object_get(root, "params");

	if (!json_is_string(method))
		return invalid(m, JSONRPC_INVALID_REQUEST, "\"method\" must be a string");
	if (id && !jsonrpc_id_valid(id))
		return invalid(m, JSONRPC_INVALID_REQUEST, "\"id\" must be a string or an integer");
	if (json_object_get(root, "result") || json_object_get(root, "error"))
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "a request cannot carry \"result\" or \"error\"");
	if (params && !json_is_object(params) && !json_is_array(params))
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "\"params\" must be an object or an array");
	m->kind = id ? JSONRPC_REQUEST : JSONRPC_NOTIFICATION;
	m->method = json_string_value(method);
	m->params = params;
	return 0;
}

static int validate_response(struct jsonrpc_msg *m)
{
	json_t *root = m->root, *id = json_object_get(root, "id");
	json_t *result = json_object_get(root, "result"), *error = json_object_get(root, "error");

	if (!result && !error)
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "message has neither \"method\" nor \"result\"/\"error\"");
	m->reply_due = 0; /* it is a response, broken or not: never answered */
	if (result && error)
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "a response cannot carry both \"result\" and \"error\"");
	if (!id)
		return invalid(m, JSONRPC_INVALID_REQUEST, "a response needs an \"id\"");
	if (result) {
		if (!jsonrpc_id_valid(id))
			return invalid(m, JSONRPC_INVALID_REQUEST,
				       "\"id\" must be a string or an integer");
		m->kind = JSONRPC_RESPONSE;
		m->result = result;
		return 0;
	}
	if (!jsonrpc_id_valid(id) && !json_is_null(id))
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "\"id\" must be a string, an integer or null");
	json_t *code = json_object_get(error, "code"), *msg = json_object_get(error, "message");
	if (!json_is_object(error) || !json_is_integer(code) || !json_is_string(msg))
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "\"error\" must be {\"code\": integer, \"message\": string}");
	json_int_t c = json_integer_value(code);
	m->kind = JSONRPC_ERROR;
	m->error = error;
	m->error_code = c < INT32_MIN || c > INT32_MAX ? JSONRPC_INTERNAL_ERROR : (int)c;
	m->error_message = json_string_value(msg);
	return 0;
}

int jsonrpc_parse_limits(const void *p, size_t n, size_t max_size, unsigned max_depth,
			 struct jsonrpc_msg *ret)
{
	struct jsonrpc_msg *m = ret;
	json_error_t je;

	memset(m, 0, sizeof(*m));
	m->reply_due = 1;
	if (!max_size)
		max_size = JSONRPC_MAX_MESSAGE;
	if (!max_depth)
		max_depth = JSONRPC_MAX_DEPTH;

	if (n > max_size)
		return invalid(m, JSONRPC_INVALID_REQUEST, "message too large");
	if (jsonrpc_depth_check(p, n, max_depth) < 0)
		return invalid(m, JSONRPC_INVALID_REQUEST, "message nested too deeply");
	m->root = json_loadb(p, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	if (!m->root) {
		invalid(m, JSONRPC_PARSE_ERROR, "");
		snprintf(m->errbuf, sizeof(m->errbuf), "parse error: %.100s (column %d)", je.text,
			 je.column);
		return -EBADMSG;
	}
	if (json_is_array(m->root))
		return invalid(m, JSONRPC_INVALID_REQUEST,
			       "batch requests are not supported (MCP 2025-06-18)");
	if (!json_is_object(m->root))
		return invalid(m, JSONRPC_INVALID_REQUEST, "message is not a JSON object");

	json_t *id = json_object_get(m->root, "id");
	if (jsonrpc_id_valid(id))
		m->id = id;
	json_t *method = json_object_get(m->root, "method");
	json_t *version = json_object_get(m->root, "jsonrpc");
	if (!json_is_string(version) || !streq(json_string_value(version), JSONRPC_VERSION)) {
		if (!method &&
		    (json_object_get(m->root, "result") || json_object_get(m->root, "error")))
			m->reply_due = 0;
		return invalid(m, JSONRPC_INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
	}
	if (method)
		return validate_request(m, method);
	return validate_response(m);
}

int jsonrpc_parse(const void *p, size_t n, struct jsonrpc_msg *ret)
{
	return jsonrpc_parse_limits(p, n, 0, 0, ret);
}

void jsonrpc_msg_done(struct jsonrpc_msg *m)
{
	if (!m)
		return;
	json_decref(m->root);
	memset(m, 0, sizeof(*m));
}

/* ---- building ---- */

const char *jsonrpc_code_text(int code)
{
	switch (code) {
	case JSONRPC_PARSE_ERROR:
		return "Parse error";
	case JSONRPC_INVALID_REQUEST:
		return "Invalid Request";
	case JSONRPC_METHOD_NOT_FOUND:
		return "Method not found";
	case JSONRPC_INVALID_PARAMS:
		return "Invalid params";
	case JSONRPC_INTERNAL_ERROR:
		return "Internal error";
	default:
		return "Server error";
	}
}

/* {"jsonrpc":"2.0"} plus "id" (NULL: null) when with_id. */
static json_t *envelope(json_t *id, int with_id)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	if (json_object_set_new(o, "jsonrpc", json_string(JSONRPC_VERSION)) < 0 ||
	    (with_id && json_object_set_new(o, "id", id ? json_incref(id) : json_null()) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *jsonrpc_result(json_t *id, json_t *result)
{
	if (!result)
		result = json_object();
	json_t *o = envelope(id, 1);
	if (!o || !result || json_object_set_new(o, "result", result) < 0) {
		if (o)
			json_decref(o);
		else
			json_decref(result);
		return NULL;
	}
	return o;
}

json_t *jsonrpc_error(json_t *id, int code, const char *message, json_t *data)
{
	json_t *o = envelope(id, 1), *e = json_object();
	if (!o || !e || json_object_set_new(e, "code", json_integer(code)) < 0 ||
	    json_object_set_new(e, "message",
				json_string(message ? message : jsonrpc_code_text(code))) < 0 ||
	    (data && json_object_set_new(e, "data", TAKE_PTR(data)) < 0) ||
	    json_object_set_new(o, "error", TAKE_PTR(e)) < 0) {
		json_decref(data);
		json_decref(e);
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *jsonrpc_error_for(const struct jsonrpc_msg *m)
{
	if (!m || m->kind != JSONRPC_INVALID || !m->reply_due)
		return NULL;
	return jsonrpc_error(m->id, m->error_code, m->error_message, NULL);
}

static json_t *method_msg(json_t *id, int with_id, const char *method, json_t *params)
{
	json_t *o = envelope(id, with_id);
	if (!o || json_object_set_new(o, "method", json_string(method)) < 0 ||
	    (params && json_object_set_new(o, "params", TAKE_PTR(params)) < 0)) {
		json_decref(params);
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *jsonrpc_request(json_t *id, const char *method, json_t *params)
{
	return method_msg(id, 1, method, params);
}

json_t *jsonrpc_notification(const char *method, json_t *params)
{
	return method_msg(NULL, 0, method, params);
}

int jsonrpc_dump(const json_t *msg, char **ret, size_t *ret_len)
{
	return jsonrpc_dump_max(msg, JSONRPC_MAX_MESSAGE, ret, ret_len);
}

int jsonrpc_dump_max(const json_t *msg, size_t max, char **ret, size_t *ret_len)
{
	char *text = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	if (max && n > max) {
		free(text);
		return -E2BIG;
	}
	char *t = realloc(text, n + 2);
	if (!t) {
		free(text);
		return -ENOMEM;
	}
	t[n] = '\n';
	t[n + 1] = 0;
	*ret = t;
	*ret_len = n + 1;
	return 0;
}

/* ---- newline framing ---- */

void jsonrpc_reader_init(struct jsonrpc_reader *r, size_t max)
{
	r->max = max ? max : JSONRPC_MAX_MESSAGE;
	/* room for the line and the "\r" that may end it */
	buf_init(&r->line, r->max + 1);
	r->skipping = 0;
	r->ready = JSONRPC_LINE_NONE;
}

void jsonrpc_reader_done(struct jsonrpc_reader *r)
{
	if (!r)
		return;
	buf_done(&r->line, 0);
	r->skipping = 0;
	r->ready = JSONRPC_LINE_NONE;
}

/* The current line (in r->line) has ended: decide what it is. */
static void line_end(struct jsonrpc_reader *r)
{
	size_t n = buf_len(&r->line);
	if (r->skipping) {
		r->skipping = 0;
		buf_consume(&r->line, n);
		r->ready = JSONRPC_LINE_TOO_LARGE;
		return;
	}
	if (n > 0 && buf_head(&r->line)[n - 1] == '\r')
		n--;
	if (n > r->max) {
		buf_consume(&r->line, buf_len(&r->line));
		r->ready = JSONRPC_LINE_TOO_LARGE;
	} else if (n == 0) {
		buf_consume(&r->line, buf_len(&r->line)); /* empty line: skipped */
	} else {
		r->ready = JSONRPC_LINE_OK;
	}
}

/* Append bytes of the current line, or start skipping it when it will not fit. */
static void line_add(struct jsonrpc_reader *r, const uint8_t *p, size_t n)
{
	if (r->skipping || !n)
		return;
	if (buf_append(&r->line, p, n) < 0) {
		buf_consume(&r->line, buf_len(&r->line));
		r->skipping = 1;
	}
}

/* A private state: the line was handed out and its bytes stay until the next call. */
#define LINE_TAKEN (-1)

static void drop_ready(struct jsonrpc_reader *r)
{
	if (r->ready == JSONRPC_LINE_OK || r->ready == LINE_TAKEN)
		buf_consume(&r->line, buf_len(&r->line));
	r->ready = JSONRPC_LINE_NONE;
}

size_t jsonrpc_reader_feed(struct jsonrpc_reader *r, const void *p, size_t n)
{
	const uint8_t *s = p;
	size_t used = 0;

	drop_ready(r);
	while (used < n) {
		const uint8_t *nl = memchr(s + used, '\n', n - used);
		size_t k = nl ? (size_t)(nl - (s + used)) : n - used;
		line_add(r, s + used, k);
		used += k;
		if (!nl)
			break;
		used++; /* the newline */
		line_end(r);
		if (r->ready != JSONRPC_LINE_NONE)
			break;
	}
	return used;
}

int jsonrpc_reader_line(struct jsonrpc_reader *r, const char **ret_line, size_t *ret_len)
{
	int st = r->ready;
	if (st == JSONRPC_LINE_OK) {
		size_t n = buf_len(&r->line);
		if (n > 0 && buf_head(&r->line)[n - 1] == '\r')
			n--;
		*ret_line = (const char *)buf_head(&r->line);
		*ret_len = n;
		r->ready = LINE_TAKEN;
		return JSONRPC_LINE_OK;
	}
	if (st == JSONRPC_LINE_TOO_LARGE) {
		r->ready = JSONRPC_LINE_NONE;
		return JSONRPC_LINE_TOO_LARGE;
	}
	return JSONRPC_LINE_NONE;
}

int jsonrpc_reader_finish(struct jsonrpc_reader *r)
{
	drop_ready(r);
	if (r->skipping || buf_len(&r->line))
		line_end(r);
	return r->ready;
}

/* ---- UTF-8 ---- */

json_t *mcp_text_string(const void *p, size_t n)
{
	const uint8_t *s = p;
	if (!n)
		return json_string(""); /* p may be NULL (an empty buf) */
	if (utf8_valid(p, n))
		return json_stringn(p, n);
	/* worst case: every byte becomes the 3-byte U+FFFD */
	if (n > SIZE_MAX / 3)
		return NULL;
	_cleanup_free_ char *o = malloc(n * 3 + 1);
	size_t k = 0;
	if (!o)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq(s + i, n - i);
		if (l) {
			memcpy(o + k, s + i, l);
			k += l;
			i += l;
		} else {
			/* NOLINTNEXTLINE(bugprone-not-null-terminated-result): U+FFFD's 3 bytes mid-string */
			memcpy(o + k, "\xef\xbf\xbd", 3);
			k += 3;
			i++;
		}
	}
	return json_stringn(o, k);
}
