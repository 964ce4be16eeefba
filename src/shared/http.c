/* http.c - HTTP/1.1 message parsing: request and status lines, headers, body framing, chunked
 * bodies, query strings and a JSON nesting check. Used by capsemd's API (requests from local
 * clients) and by the egress proxy (requests from the guest, responses from upstream servers).
 *
 * Trust boundary: every byte is hostile: an API client (a local process of the same uid: a buggy
 * or malicious tool must not crash the daemon that owns every VM), a guest, or a remote server.
 * Strict by design: lines end in CRLF (a bare LF is accepted), no obs-fold, no whitespace before
 * the colon, Content-Length digits only and never together with Transfer-Encoding (request
 * smuggling), only "chunked" as a transfer coding. In a request, every header that a reader could
 * take first-wins or last-wins (Host, the framing and connection headers, the credential headers
 * the egress proxy swaps keys into) must appear at most once, and HTTP/1.1 requires Host (RFC 9112
 * 3.2): otherwise 400, so the proxy's checks and the upstream read the same value. Pure code, any
 * thread; libc + basic only.
 */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

enum {
	CH_SIZE,
	CH_EXT,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER,
	CH_TRAILER_LF,
	CH_DONE
};

#define CHUNK_LINE_MAX 1024u
#define TRAILER_MAX (8u * 1024u)

static int is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Find the end of the head: the offset just past the empty line, 0 if not there yet. */
static size_t head_end(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\n')
			continue;
		/* an empty line: "\n\n" or "\n\r\n" */
		if (i + 1 < n && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Split the next line off *s (NUL-terminating it, dropping CR). NULL at the end. */
static char *next_line(char **s, char *end)
{
	char *l = *s;
	if (l >= end)
		return NULL;
	char *nl = memchr(l, '\n', (size_t)(end - l));
	if (!nl)
		return NULL;
	*nl = 0;
	if (nl > l && nl[-1] == '\r')
		nl[-1] = 0;
	*s = nl + 1;
	return l;
}

static int token_list_has(const char *v, const char *tok)
{
	size_t tl = strlen(tok);
	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		const char *s = v;
		while (*v && *v != ',')
			v++;
		const char *e = v;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0)
			return 1;
	}
	return 0;
}

static int parse_request_line(char *l, struct http_msg *r)
{
	char *sp1 = strchr(l, ' ');
	if (!sp1 || sp1 == l)
		return -EBADMSG;
	*sp1 = 0;
	for (char *c = l; *c; c++)
		if (!is_tchar((unsigned char)*c))
			return -EBADMSG;
	char *t = sp1 + 1;
	char *sp2 = strchr(t, ' ');
	if (!sp2 || sp2 == t || t[0] != '/')
		return -EBADMSG;
	*sp2 = 0;
	for (char *c = t; *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
			return -EBADMSG;
	const char *v = sp2 + 1;
	if (streq(v, "HTTP/1.1"))
		r->minor = 1;
	else if (streq(v, "HTTP/1.0"))
		r->minor = 0;
	else
		return -EBADMSG;
	r->method = l;
	r->target = t;
	return 0;
}

static int parse_status_line(char *l, struct http_msg *r)
{
	if (strncmp(l, "HTTP/1.1 ", 9) == 0)
		r->minor = 1;
	else if (strncmp(l, "HTTP/1.0 ", 9) == 0)
		r->minor = 0;
	else
		return -EBADMSG;
	const char *c = l + 9;
	if (!isdigit((unsigned char)c[0]) || !isdigit((unsigned char)c[1]) ||
	    !isdigit((unsigned char)c[2]) || (c[3] && c[3] != ' ') || c[0] == '0')
		return -EBADMSG;
	r->status = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
	r->reason = c[3] ? c + 4 : "";
	for (const char *q = r->reason; *q; q++)
		if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
			return -EBADMSG;
	return 0;
}

static int parse_header(char *l, struct http_msg *r)
{
	char *colon = strchr(l, ':');
	if (!colon || colon == l)
		return -EBADMSG;
	*colon = 0;
	for (char *c = l; *c; c++)
		if (!is_tchar((unsigned char)*c))
			return -EBADMSG; /* includes whitespace before the colon */
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	size_t vl = strlen(v);
	while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
		v[--vl] = 0;
	for (size_t i = 0; i < vl; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -EBADMSG;
	}
	if (r->n_headers >= HTTP_MAX_HEADERS)
		return -E2BIG;
	r->headers[r->n_headers++] = (struct http_header){ .name = l, .value = v };
	return 0;
}

const char *http_header_get(const struct http_msg *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

static int parse_content_length(const char *v, uint64_t *ret)
{
	uint64_t x = 0;
	if (!*v)
		return -EBADMSG;
	for (; *v; v++) {
		if (*v < '0' || *v > '9')
			return -EBADMSG;
		if (x > (UINT64_MAX - 9) / 10)
			return -EFBIG;
		x = x * 10 + (uint64_t)(*v - '0');
	}
	*ret = x;
	return 0;
}

/* Request headers that must not appear twice: anything that decides where a request goes (Host),
 * how it is framed or whether the connection changes (Content-Length, Transfer-Encoding,
 * Connection, Upgrade, Expect), and the credentials (the egress proxy swaps keys into
 * Authorization, x-api-key, x-goog-api-key and api-key, and a server may read either copy). A
 * second copy makes a first-wins reader (http_header_get) and a last-wins one disagree. */
static const char *const request_singletons[] = {
	"Host",	     "Content-Length", "Transfer-Encoding", "Connection",
	"Upgrade",   "Expect",	       "Authorization",	    "Proxy-Authorization",
	"x-api-key", "x-goog-api-key", "api-key",
};

static int check_singletons(const struct http_msg *r)
{
	for (size_t k = 0; k < ELEMENTSOF(request_singletons); k++) {
		int seen = 0;
		for (size_t i = 0; i < r->n_headers; i++)
			if (strcasecmp(r->headers[i].name, request_singletons[k]) == 0 && seen++)
				return -EBADMSG;
	}
	return 0;
}

/* Message-level semantics of the headers: body framing, connection options. */
static int interpret_headers(struct http_msg *r, int response)
{
	int have_te = 0;
	if (!response) {
		int k = check_singletons(r);
		if (k < 0)
			return k;
	}
	for (size_t i = 0; i < r->n_headers; i++) {
		const char *n = r->headers[i].name, *v = r->headers[i].value;
		if (strcasecmp(n, "Content-Length") == 0) {
			uint64_t x;
			int k = parse_content_length(v, &x);
			if (k < 0)
				return k;
			if (r->has_length && x != r->content_length)
				return -EBADMSG;
			r->has_length = 1;
			r->content_length = x;
		} else if (strcasecmp(n, "Transfer-Encoding") == 0) {
			if (have_te || strcasecmp(v, "chunked") != 0)
				return strcasecmp(v, "chunked") == 0 ? -EBADMSG : -ENOTSUP;
			have_te = 1;
		}
	}
	if (have_te && r->has_length)
		return -EBADMSG;
	r->chunked = have_te;
	if (have_te && r->minor == 0)
		return -EBADMSG;

	const char *conn = http_header_get(r, "Connection");
	r->keep_alive = r->minor == 1;
	if (conn && token_list_has(conn, "close"))
		r->keep_alive = 0;
	else if (conn && token_list_has(conn, "keep-alive"))
		r->keep_alive = 1;
	const char *up = http_header_get(r, "Upgrade");
	r->upgrade = conn && up && *up && token_list_has(conn, "upgrade") ? up : NULL;
	const char *ex = http_header_get(r, "Expect");
	if (ex) {
		if (strcasecmp(ex, "100-continue") != 0)
			return -EBADMSG;
		r->expect_continue = r->minor == 1;
	}
	if (!response && r->minor == 1 && !http_header_get(r, "Host"))
		return -EBADMSG; /* RFC 9112 3.2 */
	return 0;
}

static ssize_t parse_head(const uint8_t *p, size_t n, int response, struct http_msg *req)
{
	if (n == 0)
		return 0; /* (p may be NULL: an empty buffer) */
	size_t end = head_end(p, MIN(n, (size_t)HTTP_MAX_HEAD));
	/* the request line alone has its own cap */
	const uint8_t *nl = memchr(p, '\n', MIN(n, (size_t)HTTP_MAX_REQUEST_LINE + 1));
	if (!nl && n > HTTP_MAX_REQUEST_LINE)
		return -E2BIG;
	if (n > 0 && memchr(p, 0, end ? end : n))
		return -EBADMSG;
	if (!end)
		return n >= HTTP_MAX_HEAD ||
				       (nl && n - (size_t)(nl - p + 1) > HTTP_MAX_HEADER_BYTES + 2)
			       ? -E2BIG
			       : 0;
	if ((size_t)(nl - p) + 1 > HTTP_MAX_REQUEST_LINE ||
	    end - (size_t)(nl - p + 1) > HTTP_MAX_HEADER_BYTES + 2)
		return -E2BIG;

	struct http_msg r = { 0 };
	r.raw = malloc(end + 1);
	if (!r.raw)
		return -ENOMEM;
	memcpy(r.raw, p, end);
	r.raw[end] = 0;
	char *s = r.raw, *e = r.raw + end;
	int k;
	char *line = next_line(&s, e);
	if (!line ||
	    (k = response ? parse_status_line(line, &r) : parse_request_line(line, &r)) < 0) {
		free(r.raw);
		return line ? k : -EBADMSG;
	}
	while ((line = next_line(&s, e)) && *line) {
		if (*line == ' ' || *line == '\t')
			k = -EBADMSG; /* obs-fold */
		else
			k = parse_header(line, &r);
		if (k < 0) {
			free(r.raw);
			return k;
		}
	}
	k = interpret_headers(&r, response);
	if (k >= 0 && !response) {
		const char *q = strchr(r.target, '?');
		r.path = q ? strndup(r.target, (size_t)(q - r.target)) : strdup(r.target);
		r.query = q ? q + 1 : "";
		if (!r.path)
			k = -ENOMEM;
	}
	if (k < 0) {
		free(r.raw);
		return k;
	}
	*req = r;
	return (ssize_t)end;
}

ssize_t http_parse_head(const uint8_t *p, size_t n, struct http_msg *req)
{
	return parse_head(p, n, 0, req);
}

ssize_t http_parse_response_head(const uint8_t *p, size_t n, struct http_msg *resp)
{
	return parse_head(p, n, 1, resp);
}

enum http_body http_body_framing(const struct http_msg *m, const char *request_method)
{
	if (request_method) { /* a response to that request */
		if ((m->status >= 100 && m->status < 200) || m->status == 204 || m->status == 304 ||
		    streq(request_method, "HEAD"))
			return HTTP_BODY_NONE;
		if (m->chunked)
			return HTTP_BODY_CHUNKED;
		if (m->has_length)
			return m->content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
		return HTTP_BODY_UNTIL_CLOSE;
	}
	if (m->chunked)
		return HTTP_BODY_CHUNKED;
	return m->has_length && m->content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
}

void http_msg_done(struct http_msg *req)
{
	free(req->raw);
	free(req->path);
	*req = (struct http_msg){ 0 };
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (unsigned char)tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int http_chunked_scan(struct http_chunked *st, const uint8_t *p, size_t n, uint64_t max_total,
		      int (*data)(void *userdata, const uint8_t *p, size_t n), void *userdata,
		      size_t *ret_used)
{
	size_t i = 0;
	int r = 0;
	while (i < n && st->state != CH_DONE) {
		unsigned char c = p[i];
		switch (st->state) {
		case CH_SIZE: {
			int h = hexval(c);
			if (h >= 0) {
				if (st->line_len >= 15) /* 15 hex digits: far past any cap */
					return -EFBIG;
				st->chunk_left = st->chunk_left * 16 + (uint64_t)h;
				st->line_len++;
				i++;
				break;
			}
			if (st->line_len == 0)
				return -EBADMSG;
			if (c == ';' || c == ' ' || c == '\t') {
				st->state = CH_EXT;
			} else if (c == '\r') {
				st->state = CH_SIZE_LF;
				i++;
			} else if (c == '\n') {
				st->state = CH_SIZE_LF;
			} else {
				return -EBADMSG;
			}
			break;
		}
		case CH_EXT:
			if (c == '\r' || c == '\n') {
				st->state = CH_SIZE_LF;
				if (c == '\r')
					i++;
				break;
			}
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return -EBADMSG;
			if (++st->line_len > CHUNK_LINE_MAX)
				return -EBADMSG;
			i++;
			break;
		case CH_SIZE_LF:
			if (c != '\n')
				return -EBADMSG;
			i++;
			st->line_len = 0;
			if (st->chunk_left == 0) {
				st->state = CH_TRAILER;
			} else {
				if (st->chunk_left > max_total - st->total)
					return -EFBIG;
				st->state = CH_DATA;
			}
			break;
		case CH_DATA: {
			size_t take = (size_t)MIN((uint64_t)(n - i), st->chunk_left);
			r = data ? data(userdata, p + i, take) : 0;
			if (r < 0)
				return r;
			st->total += take;
			st->chunk_left -= take;
			i += take;
			if (st->chunk_left == 0)
				st->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (c == '\r') {
				st->state = CH_DATA_LF;
				i++;
			} else if (c == '\n') {
				st->state = CH_DATA_LF;
			} else {
				return -EBADMSG;
			}
			break;
		case CH_DATA_LF:
			if (c != '\n')
				return -EBADMSG;
			i++;
			st->state = CH_SIZE;
			st->line_len = 0;
			break;
		case CH_TRAILER:
			/* trailer lines are read and ignored; an empty line ends the body */
			if (c == '\r' || c == '\n') {
				if (c == '\r')
					i++;
				st->state = CH_TRAILER_LF;
				break;
			}
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return -EBADMSG;
			st->line_len++;
			if (++st->trailer_bytes > TRAILER_MAX)
				return -E2BIG;
			i++;
			break;
		case CH_TRAILER_LF:
			if (c != '\n')
				return -EBADMSG;
			i++;
			if (st->line_len == 0)
				st->state = CH_DONE;
			else
				st->state = CH_TRAILER;
			st->line_len = 0;
			break;
		default:
			return -EBADMSG;
		}
	}
	*ret_used = i;
	return st->state == CH_DONE;
}

static int append_body(void *userdata, const uint8_t *p, size_t n)
{
	int r = buf_append(userdata, p, n);
	return r == -ENOBUFS ? -EFBIG : r;
}

int http_chunked_feed(struct http_chunked *st, const uint8_t *p, size_t n, struct buf *body,
		      size_t *ret_used)
{
	/* the body's cap bounds the decoded size */
	uint64_t max = (uint64_t)buf_len(body) + buf_room(body);
	return http_chunked_scan(st, p, n, max, append_body, body, ret_used);
}

int http_error_status(int err)
{
	switch (err) {
	case -E2BIG:
		return 431;
	case -EFBIG:
		return 413;
	case -ENOTSUP:
		return 501;
	case -ENOMEM:
		return 500;
	default:
		return 400;
	}
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 429:
		return "Too Many Requests";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "Unknown";
	}
}

int http_query_get(const char *query, const char *key, char **ret)
{
	size_t kl = strlen(key);
	const char *s = query;
	while (s && *s) {
		const char *amp = strchr(s, '&');
		const char *end = amp ? amp : s + strlen(s);
		const char *eq = memchr(s, '=', (size_t)(end - s));
		const char *kend = eq ? eq : end;
		if ((size_t)(kend - s) == kl && memcmp(s, key, kl) == 0) {
			const char *v = eq ? eq + 1 : end;
			char *out = malloc((size_t)(end - v) + 1);
			size_t o = 0;
			if (!out)
				return -ENOMEM;
			for (const char *c = v; c < end; c++) {
				if (*c == '%') {
					if (end - c < 3 || hexval((unsigned char)c[1]) < 0 ||
					    hexval((unsigned char)c[2]) < 0) {
						free(out);
						return -EBADMSG;
					}
					int b = hexval((unsigned char)c[1]) * 16 +
						hexval((unsigned char)c[2]);
					if (b == 0) {
						free(out);
						return -EBADMSG;
					}
					out[o++] = (char)b;
					c += 2;
				} else if (*c == '+') {
					out[o++] = ' ';
				} else {
					out[o++] = *c;
				}
			}
			out[o] = 0;
			*ret = out;
			return 0;
		}
		s = amp ? amp + 1 : NULL;
	}
	return -ENOENT;
}

int http_json_depth_check(const uint8_t *p, size_t n, unsigned max_depth)
{
	unsigned depth = 0;
	int in_str = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max_depth)
				return -EBADMSG;
		} else if (c == ']' || c == '}') {
			if (depth > 0)
				depth--;
		}
	}
	return 0;
}
