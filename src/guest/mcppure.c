/* mcppure.c - JSON-RPC id scanning and the request table of capsem-mcp-relay (see mcppure.h).
 *
 * Trust boundary: the lines come from the agent (stdin) and from the host gateway; both are
 * scanned with a bounded, non-recursive JSON syntax checker: nesting at most MCPPURE_DEPTH_MAX,
 * no allocation, every index checked against n. Pure; the relay's single thread.
 */
#include "mcppure.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct scan {
	const char *p;
	size_t n, i;
};

static void skip_ws(struct scan *s)
{
	while (s->i < s->n && (s->p[s->i] == ' ' || s->p[s->i] == '\t' || s->p[s->i] == '\r' ||
			       s->p[s->i] == '\n'))
		s->i++;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string starting at s->i ('"'); leaves s->i after the closing quote. */
static bool scan_string(struct scan *s)
{
	if (s->i >= s->n || s->p[s->i] != '"')
		return false;
	s->i++;
	while (s->i < s->n) {
		unsigned char c = (unsigned char)s->p[s->i];
		if (c == '"') {
			s->i++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (s->i + 1 >= s->n)
				return false;
			char e = s->p[s->i + 1];
			if (e == 'u') {
				if (s->i + 5 >= s->n)
					return false;
				for (size_t k = 2; k < 6; k++)
					if (!is_hex(s->p[s->i + k]))
						return false;
				s->i += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", e) || e == 0)
				return false;
			s->i += 2;
			continue;
		}
		s->i++;
	}
	return false;
}

static bool scan_number(struct scan *s)
{
	size_t st = s->i;
	if (s->i < s->n && s->p[s->i] == '-')
		s->i++;
	if (s->i >= s->n)
		return false;
	if (s->p[s->i] == '0') {
		s->i++;
	} else if (s->p[s->i] >= '1' && s->p[s->i] <= '9') {
		while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9')
			s->i++;
	} else {
		return false;
	}
	if (s->i < s->n && s->p[s->i] == '.') {
		s->i++;
		size_t d = s->i;
		while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9')
			s->i++;
		if (s->i == d)
			return false;
	}
	if (s->i < s->n && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
		s->i++;
		if (s->i < s->n && (s->p[s->i] == '+' || s->p[s->i] == '-'))
			s->i++;
		size_t d = s->i;
		while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9')
			s->i++;
		if (s->i == d)
			return false;
	}
	return s->i > st;
}

static bool scan_word(struct scan *s, const char *w)
{
	size_t l = strlen(w);
	if (s->n - s->i < l || memcmp(s->p + s->i, w, l) != 0)
		return false;
	s->i += l;
	return true;
}

/* Any JSON value at s->i, iteratively: a stack of container kinds ('{' or '['). */
static bool scan_value(struct scan *s)
{
	char stack[MCPPURE_DEPTH_MAX];
	size_t depth = 0;
	for (;;) {
		skip_ws(s);
		if (s->i >= s->n)
			return false;
		char c = s->p[s->i];
		bool ok = true, opened = false;
		if (c == '{' || c == '[') {
			if (depth >= MCPPURE_DEPTH_MAX)
				return false;
			stack[depth++] = c;
			s->i++;
			skip_ws(s);
			if (s->i < s->n && s->p[s->i] == (c == '{' ? '}' : ']')) {
				s->i++;
				depth--;
			} else {
				opened = true;
			}
		} else if (c == '"') {
			ok = scan_string(s);
		} else if (c == 't') {
			ok = scan_word(s, "true");
		} else if (c == 'f') {
			ok = scan_word(s, "false");
		} else if (c == 'n') {
			ok = scan_word(s, "null");
		} else {
			ok = scan_number(s);
		}
		if (!ok)
			return false;
		if (opened && stack[depth - 1] == '{') {
			/* first member of an object: key then ':' */
			if (!scan_string(s))
				return false;
			skip_ws(s);
			if (s->i >= s->n || s->p[s->i] != ':')
				return false;
			s->i++;
			continue;
		}
		if (opened)
			continue; /* first element of an array */
		/* a value is complete: close containers or go to the next element */
		for (;;) {
			if (depth == 0)
				return true;
			skip_ws(s);
			if (s->i >= s->n)
				return false;
			char k = stack[depth - 1];
			if (s->p[s->i] == ',') {
				s->i++;
				if (k == '{') {
					skip_ws(s);
					if (!scan_string(s))
						return false;
					skip_ws(s);
					if (s->i >= s->n || s->p[s->i] != ':')
						return false;
					s->i++;
				}
				break;
			}
			if (s->p[s->i] == (k == '{' ? '}' : ']')) {
				s->i++;
				depth--;
				continue;
			}
			return false;
		}
	}
}

static unsigned hexval(char c)
{
	return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static size_t put_utf8(uint32_t cp, char *o)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

static uint32_t hex4(const char *t)
{
	uint32_t v = 0;
	for (size_t j = 0; j < 4; j++)
		v = v << 4 | hexval(t[j]);
	return v;
}

/* Decode the JSON string t[0..n) (quotes included, syntax already checked by scan_string) into
 * out, at most cap bytes (the rest is dropped): escapes decoded, a surrogate pair joined, a lone
 * surrogate U+FFFD, and \u0000 (when nul_ok is false) '?'. The bytes written. Never more than
 * n - 1: an escape decodes to fewer bytes than it takes. */
static size_t decode_string(const char *t, size_t n, char *out, size_t cap, bool nul_ok)
{
	size_t k = 0;
	for (size_t i = 1; i + 1 < n;) {
		char tmp[4];
		size_t w = 1;
		if (t[i] != '\\') {
			tmp[0] = t[i++];
		} else if (t[i + 1] != 'u') {
			static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
			const char *f = strchr(from, t[i + 1]);
			tmp[0] = f ? to[f - from] : t[i + 1];
			i += 2;
		} else {
			uint32_t cp = hex4(t + i + 2);
			i += 6;
			if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < n && t[i] == '\\' &&
			    t[i + 1] == 'u') {
				uint32_t lo = hex4(t + i + 2);
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				}
			}
			if (cp >= 0xD800 && cp <= 0xDFFF)
				cp = 0xFFFD;
			if (cp == 0 && !nul_ok)
				cp = '?';
			w = put_utf8(cp, tmp);
		}
		if (k + w <= cap) {
			memcpy(out + k, tmp, w);
			k += w;
		}
	}
	return k;
}

/* The matching key of an id's JSON text (already checked by scan_string or scan_number):
 * 's' + the string's decoded bytes, or 'n' + the number. A key is never longer than its text:
 * the quotes pay for the 's', and an escape decodes to fewer bytes than it takes (a lone
 * surrogate becomes U+FFFD: 3 bytes for 6). */
static void id_key(struct mcppure_id *id)
{
	const char *t = id->text;
	size_t n = id->text_len;
	if (t[0] != '"') {
		id->key[0] = 'n';
		memcpy(id->key + 1, t, n);
		id->key_len = n + 1;
		return;
	}
	id->key[0] = 's';
	id->key_len = 1 + decode_string(t, n, id->key + 1, sizeof(id->key) - 1, true);
}

static bool key_is(const char *p, size_t st, size_t end, const char *want)
{
	/* st, end bracket the key including quotes; escaped keys never match (fine: a
	 * JSON-RPC peer writes "id" and "method" plainly) */
	size_t l = strlen(want);
	return end - st == l + 2 && memcmp(p + st + 1, want, l) == 0;
}

static enum mcppure_kind scan_line(const char *p, size_t n, struct mcppure_msg *ret)
{
	struct scan s = { .p = p, .n = n };
	bool has_method = false, has_id = false, id_ok = false;
	*ret = (struct mcppure_msg){ .kind = MCPPURE_INVALID };

	skip_ws(&s);
	if (s.i >= s.n || p[s.i] != '{')
		return MCPPURE_INVALID;
	s.i++;
	skip_ws(&s);
	if (s.i < s.n && p[s.i] == '}') {
		s.i++;
	} else {
		for (;;) {
			skip_ws(&s);
			size_t ks = s.i;
			if (!scan_string(&s))
				return MCPPURE_INVALID;
			size_t ke = s.i;
			skip_ws(&s);
			if (s.i >= s.n || p[s.i] != ':')
				return MCPPURE_INVALID;
			s.i++;
			skip_ws(&s);
			size_t vs = s.i;
			if (!scan_value(&s))
				return MCPPURE_INVALID;
			size_t ve = s.i;
			if (key_is(p, ks, ke, "method")) {
				has_method = true;
			} else if (key_is(p, ks, ke, "id")) {
				has_id = !(ve - vs == 4 && memcmp(p + vs, "null", 4) == 0);
				id_ok = false;
				if (has_id &&
				    (p[vs] == '"' || p[vs] == '-' ||
				     (p[vs] >= '0' && p[vs] <= '9')) &&
				    ve - vs <= MCPPURE_ID_MAX) {
					memcpy(ret->id.text, p + vs, ve - vs);
					ret->id.text[ve - vs] = 0;
					ret->id.text_len = ve - vs;
					id_ok = true;
				}
			}
			skip_ws(&s);
			if (s.i < s.n && p[s.i] == ',') {
				s.i++;
				continue;
			}
			if (s.i < s.n && p[s.i] == '}') {
				s.i++;
				break;
			}
			return MCPPURE_INVALID;
		}
	}
	skip_ws(&s);
	if (s.i != s.n)
		return MCPPURE_INVALID;
	if (has_id && !id_ok)
		return MCPPURE_OTHER;
	if (has_method && has_id)
		return MCPPURE_REQUEST;
	if (has_method)
		return MCPPURE_NOTIFICATION;
	if (has_id)
		return MCPPURE_RESPONSE;
	return MCPPURE_OTHER;
}

enum mcppure_kind mcppure_scan(const char *p, size_t n, struct mcppure_msg *ret)
{
	enum mcppure_kind k = scan_line(p, n, ret);
	ret->kind = k;
	if (k == MCPPURE_REQUEST || k == MCPPURE_RESPONSE)
		id_key(&ret->id);
	else
		ret->id = (struct mcppure_id){ 0 };
	return k;
}

int mcppure_pending_add(struct mcppure_pending *t, const struct mcppure_id *id)
{
	if (t->n >= MCPPURE_PENDING_MAX)
		return -ENOBUFS;
	if (!t->ids) {
		t->ids = calloc(MCPPURE_PENDING_MAX, sizeof(*t->ids));
		if (!t->ids)
			return -ENOMEM;
	}
	t->ids[t->n++] = *id;
	return 0;
}

bool mcppure_pending_remove(struct mcppure_pending *t, const struct mcppure_id *id)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->ids[i].key_len == id->key_len &&
		    memcmp(t->ids[i].key, id->key, id->key_len) == 0) {
			memmove(&t->ids[i], &t->ids[i + 1], (t->n - i - 1) * sizeof(*t->ids));
			t->n--;
			return true;
		}
	}
	return false;
}

void mcppure_pending_done(struct mcppure_pending *t)
{
	free(t->ids);
	*t = (struct mcppure_pending){ 0 };
}

ssize_t mcppure_error_line(const char *id, size_t id_len, int code, const char *msg, char *out,
			   size_t cap)
{
	if (!id) {
		id = "null";
		id_len = 4;
	}
	int r = snprintf(
		out, cap,
		"{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":%d,\"message\":\"%s\"}}\n",
		(int)id_len, id, code, msg);
	if (r < 0 || (size_t)r >= cap)
		return -ENOBUFS;
	return r;
}

ssize_t mcppure_preamble(uint32_t pid, const char *comm, char *out, size_t cap)
{
	char name[MCPPURE_COMM_MAX];
	size_t k = 0;
	for (size_t i = 0; comm && comm[i] && k < MCPPURE_COMM_MAX - 1; i++) {
		char c = comm[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' || c == '-';
		name[k++] = ok ? c : '_';
	}
	if (k == 0)
		name[k++] = '-';
	name[k] = 0;
	int r = snprintf(out, cap, "CAPSEM-MCP-RELAY/1 pid=%u comm=%s\n", pid, name);
	if (r < 0 || (size_t)r >= cap)
		return -ENOBUFS;
	return r;
}

static const char *find_in(const char *p, const char *end, const char *needle)
{
	size_t k = strlen(needle);
	for (; p && end - p >= (ptrdiff_t)k; p++)
		if (memcmp(p, needle, k) == 0)
			return p + k;
	return NULL;
}

ssize_t mcppure_result_text(const char *line, size_t n, char *out, size_t cap, bool *ret_error)
{
	struct mcppure_msg m;
	const char *end = line + n;
	if (cap == 0 || mcppure_scan(line, n, &m) != MCPPURE_RESPONSE)
		return -EBADMSG;
	const char *p = find_in(line, end, "\"result\":");
	p = find_in(p, end, "\"content\":[");
	p = find_in(p, end, "\"text\":\"");
	if (!p)
		return -EBADMSG;
	/* the string's extent (the line's syntax is checked: it is closed) */
	const char *q = p;
	while (q < end && *q != '"')
		q += *q == '\\' ? 2 : 1;
	if (q >= end)
		return -EBADMSG;
	size_t len = decode_string(p - 1, (size_t)(q - p) + 2, out, cap - 1, false);
	out[len] = 0;
	*ret_error = find_in(line, end, "\"isError\":true") != NULL;
	return (ssize_t)len;
}
