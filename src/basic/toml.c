/* toml.c - TOML 1.0 parser: hostile text in, an immutable tree out.
 *
 * Trust boundary: the text is hostile (policy files, image configs, user config). Any thread may
 * call in; there is no global state (the C locale for strtod is created per parse).
 *
 * Shape: the whole input is first checked to be UTF-8 (TOML documents must be), then one
 * recursive-descent pass builds the tree. Recursion happens only for values nested in arrays and
 * inline tables, and every container's depth is checked against the limit before descending, so
 * the C stack is bounded by max_depth (itself clamped). toml_free recurses over the same bounded
 * depth. Table lookups use a keyed SipHash index so that crafted keys cannot make a table
 * quadratic.
 *
 * Redefinition rules (TOML 1.0) are enforced with per-table origin flags:
 *   IMPLICIT  created as an intermediate of a [header]: may later be defined once by [header]
 *   HEADER    defined by [header] or an element of [[header]]: never defined again, and
 *             dotted keys from another section may not enter it
 *   DOTTED    created by a dotted key: dotted keys may extend it, [header] may define sub-tables
 *             under it but not the table itself
 *   INLINE    an inline table or anything inside a value: frozen, nothing may extend it
 * and an array created by [[header]] is AOT (appendable); arrays written as values are not.
 */
#include "toml.h"
#include "utf8.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "macro.h"
#include "siphash.h"

enum {
	TF_IMPLICIT = 1 << 0,
	TF_HEADER = 1 << 1,
	TF_DOTTED = 1 << 2,
	TF_INLINE = 1 << 3,
	TF_AOT = 1 << 4,
};

struct toml_kv {
	char *key;
	size_t key_len;
	uint64_t hash;
	struct toml_value *value;
};

struct toml_value {
	enum toml_type type;
	uint8_t flags;
	uint16_t depth;
	uint32_t offset; /* byte offset of the value (or table header) in the text, capped */
	union {
		struct {
			char *ptr; /* NUL-terminated; also used for date/time text */
			size_t len;
		} s;
		int64_t i;
		double f;
		bool b;
		struct {
			struct toml_kv *kv;
			size_t n, alloc;
			uint32_t *slots; /* open addressing, entry index + 1, 0 = empty */
			size_t nslots;	 /* 0 or a power of two */
			uint64_t seed[2];
		} t;
		struct {
			struct toml_value **v;
			size_t n, alloc;
		} a;
	} u;
};

struct key_part {
	char *s;
	size_t len;
	size_t pos; /* offset in the text, for errors */
};

struct key {
	struct key_part *part;
	size_t n, alloc;
};

struct parser {
	const char *s;
	size_t len;
	size_t pos;
	struct toml_limits lim;
	size_t values;
	uint64_t seed[2];
	locale_t c_locale;
	struct buf scratch;
	bool failed;
	size_t err_pos;
	char err_msg[96];
};

/* ---- SipHash-1-3 (keyed, so key collisions cannot be precomputed) ---- */

/* ---- errors ---- */

static int fail(struct parser *p, size_t pos, const char *msg)
{
	if (!p->failed) {
		p->failed = true;
		p->err_pos = MIN(pos, p->len);
		snprintf(p->err_msg, sizeof(p->err_msg), "%s", msg);
	}
	return -EBADMSG;
}

static int oom(struct parser *p)
{
	fail(p, p->pos, "out of memory");
	return -ENOMEM;
}

/* ---- tree ---- */

static void value_free(struct toml_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.t.n; i++) {
			free(v->u.t.kv[i].key);
			value_free(v->u.t.kv[i].value);
		}
		free(v->u.t.kv);
		free(v->u.t.slots);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.a.n; i++)
			value_free(v->u.a.v[i]);
		free(v->u.a.v);
		break;
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		free(v->u.s.ptr);
		break;
	default:
		break;
	}
	free(v);
}

void toml_free(struct toml_value *root)
{
	value_free(root);
}

static void value_freep(struct toml_value **v)
{
	value_free(*v);
}
#define _cleanup_value_ _cleanup_(value_freep)

static int value_new(struct parser *p, enum toml_type type, unsigned depth, struct toml_value **ret)
{
	struct toml_value *v;

	if (depth > p->lim.max_depth)
		return fail(p, p->pos, "nesting too deep");
	if (p->values >= p->lim.max_values)
		return fail(p, p->pos, "too many values");
	v = calloc(1, sizeof(*v));
	if (!v)
		return oom(p);
	p->values++;
	v->type = type;
	v->depth = (uint16_t)depth;
	v->offset = p->pos > UINT32_MAX ? UINT32_MAX : (uint32_t)p->pos;
	if (type == TOML_TABLE) {
		v->u.t.seed[0] = p->seed[0];
		v->u.t.seed[1] = p->seed[1];
	}
	*ret = v;
	return 0;
}

static struct toml_value *table_find(const struct toml_value *t, const char *k, size_t klen,
				     uint64_t h)
{
	if (t->u.t.nslots) {
		size_t mask = t->u.t.nslots - 1;
		for (size_t i = h & mask;; i = (i + 1) & mask) {
			uint32_t s = t->u.t.slots[i];
			if (!s)
				return NULL;
			const struct toml_kv *kv = &t->u.t.kv[s - 1];
			if (kv->hash == h && kv->key_len == klen && memcmp(kv->key, k, klen) == 0)
				return kv->value;
		}
	}
	for (size_t i = 0; i < t->u.t.n; i++) {
		const struct toml_kv *kv = &t->u.t.kv[i];
		if (kv->hash == h && kv->key_len == klen && memcmp(kv->key, k, klen) == 0)
			return kv->value;
	}
	return NULL;
}

static void slots_put(uint32_t *slots, size_t nslots, uint64_t h, uint32_t idx1)
{
	size_t mask = nslots - 1;
	size_t i = h & mask;

	while (slots[i])
		i = (i + 1) & mask;
	slots[i] = idx1;
}

/* Insert key (taken) -> v (taken) into t; the caller checked the key is absent. On failure both
 * are freed. */
static int table_insert(struct parser *p, struct toml_value *t, char *key, size_t klen, uint64_t h,
			struct toml_value *v)
{
	if (t->u.t.n == t->u.t.alloc) {
		size_t na = t->u.t.alloc ? t->u.t.alloc * 2 : 4;
		struct toml_kv *nk = reallocarray(t->u.t.kv, na, sizeof(*nk));
		if (!nk)
			goto nomem;
		t->u.t.kv = nk;
		t->u.t.alloc = na;
	}
	if (t->u.t.n + 1 > 8 && (t->u.t.n + 1) * 2 > t->u.t.nslots) {
		size_t ns = t->u.t.nslots ? t->u.t.nslots * 2 : 32;
		uint32_t *sl = calloc(ns, sizeof(*sl));
		if (!sl)
			goto nomem;
		for (size_t i = 0; i < t->u.t.n; i++)
			slots_put(sl, ns, t->u.t.kv[i].hash, (uint32_t)(i + 1));
		free(t->u.t.slots);
		t->u.t.slots = sl;
		t->u.t.nslots = ns;
	}
	t->u.t.kv[t->u.t.n] =
		(struct toml_kv){ .key = key, .key_len = klen, .hash = h, .value = v };
	t->u.t.n++;
	if (t->u.t.nslots)
		slots_put(t->u.t.slots, t->u.t.nslots, h, (uint32_t)t->u.t.n);
	return 0;
nomem:
	free(key);
	value_free(v);
	return oom(p);
}

static int array_push(struct parser *p, struct toml_value *a, struct toml_value *v)
{
	if (a->u.a.n == a->u.a.alloc) {
		size_t na = a->u.a.alloc ? a->u.a.alloc * 2 : 4;
		struct toml_value **nv = reallocarray(a->u.a.v, na, sizeof(*nv));
		if (!nv) {
			value_free(v);
			return oom(p);
		}
		a->u.a.v = nv;
		a->u.a.alloc = na;
	}
	a->u.a.v[a->u.a.n++] = v;
	return 0;
}

/* ---- lexing helpers ---- */

static inline int peek_at(const struct parser *p, size_t off)
{
	return p->pos + off < p->len ? (unsigned char)p->s[p->pos + off] : -1;
}

static inline int peek(const struct parser *p)
{
	return peek_at(p, 0);
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
		p->pos++;
}

/* 1 if a newline was consumed, 0 if none is here, -EBADMSG for a bare CR. */
static int eat_newline(struct parser *p)
{
	int c = peek(p);

	if (c == '\n') {
		p->pos++;
		return 1;
	}
	if (c == '\r') {
		if (peek_at(p, 1) == '\n') {
			p->pos += 2;
			return 1;
		}
		return fail(p, p->pos, "bare carriage return");
	}
	return 0;
}

/* Skip a comment if one starts here (up to, not including, the newline). */
static int skip_comment(struct parser *p)
{
	if (peek(p) != '#')
		return 0;
	p->pos++;
	while (p->pos < p->len) {
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == '\n' || c == '\r')
			break;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return fail(p, p->pos, "control character in comment");
		p->pos++;
	}
	return 0;
}

/* Whitespace, newlines and comments (inside arrays). */
static int skip_ws_nl_comments(struct parser *p)
{
	for (;;) {
		int r;
		skip_ws(p);
		r = skip_comment(p);
		if (r < 0)
			return r;
		r = eat_newline(p);
		if (r < 0)
			return r;
		if (r == 0)
			return 0;
	}
}

static bool is_bare_key_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int hex_val(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Whole-input UTF-8 check (utf8.c: RFC 3629, and no NUL). */
static int check_utf8(struct parser *p, size_t from)
{
	for (size_t i = from; i < p->len;) {
		size_t k = utf8_seq(p->s + i, p->len - i);
		if (!k)
			return fail(p, i, p->s[i] ? "invalid UTF-8" : "NUL byte");
		i += k;
	}
	return 0;
}

/* ---- strings ---- */

static int scratch_add(struct parser *p, const void *d, size_t n)
{
	int r = buf_append(&p->scratch, d, n);
	if (r == -ENOBUFS)
		return fail(p, p->pos, "string too long");
	if (r < 0)
		return oom(p);
	return 0;
}

/* Copy the scratch buffer out as a NUL-terminated string and empty it. */
static int scratch_take(struct parser *p, char **ret, size_t *ret_len)
{
	size_t n = buf_len(&p->scratch);
	char *s = malloc(n + 1);

	if (!s)
		return oom(p);
	if (n)
		memcpy(s, buf_head(&p->scratch), n);
	s[n] = '\0';
	buf_consume(&p->scratch, n);
	*ret = s;
	*ret_len = n;
	return 0;
}

static int add_utf8(struct parser *p, uint32_t cp)
{
	unsigned char o[4];
	size_t n;

	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | (cp >> 6));
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | (cp >> 12));
		o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		o[0] = (unsigned char)(0xf0 | (cp >> 18));
		o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return scratch_add(p, o, n);
}

static int parse_escape(struct parser *p)
{
	size_t at = p->pos - 1; /* the backslash */
	int e = peek(p), nhex;
	uint32_t cp = 0;
	char c;

	switch (e) {
	case 'b':
		c = '\b';
		break;
	case 't':
		c = '\t';
		break;
	case 'n':
		c = '\n';
		break;
	case 'f':
		c = '\f';
		break;
	case 'r':
		c = '\r';
		break;
	case '"':
		c = '"';
		break;
	case '\\':
		c = '\\';
		break;
	case 'u':
	case 'U':
		nhex = e == 'u' ? 4 : 8;
		for (int i = 1; i <= nhex; i++) {
			int h = hex_val(peek_at(p, (size_t)i));
			if (h < 0)
				return fail(p, at, "invalid unicode escape");
			cp = (cp << 4) | (uint32_t)h;
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return fail(p, at, "unicode escape is not a scalar value");
		p->pos += (size_t)nhex + 1;
		return add_utf8(p, cp);
	default:
		return fail(p, at, "invalid escape sequence");
	}
	p->pos++;
	return scratch_add(p, &c, 1);
}

/* A basic ("...", """...""") or literal ('...', '''...''') string starting at p->pos. */
static int parse_string(struct parser *p, bool literal, bool multi, char **ret, size_t *ret_len)
{
	const unsigned char q = literal ? '\'' : '"';
	size_t start = p->pos;
	int r;

	buf_consume(&p->scratch, buf_len(&p->scratch));
	p->pos += multi ? 3 : 1;
	if (multi) {
		r = eat_newline(p);
		if (r < 0)
			return r;
	}
	for (;;) {
		size_t run = p->pos;
		unsigned char c;

		/* copy runs of ordinary characters at once */
		while (p->pos < p->len) {
			c = (unsigned char)p->s[p->pos];
			if (c == q || c == '\\' || c == '\n' || c == '\r' ||
			    (c < 0x20 && c != '\t') || c == 0x7f)
				break;
			p->pos++;
		}
		if (p->pos > run) {
			r = scratch_add(p, p->s + run, p->pos - run);
			if (r < 0)
				return r;
		}
		if (p->pos >= p->len)
			return fail(p, start, "unterminated string");
		c = (unsigned char)p->s[p->pos];

		if (c == q) {
			size_t nq = 0;
			if (!multi) {
				p->pos++;
				break;
			}
			while (peek_at(p, nq) == q)
				nq++;
			if (nq >= 3) {
				if (nq > 5)
					return fail(p, p->pos,
						    "too many quotes in multi-line string");
				r = scratch_add(p, literal ? "''" : "\"\"", nq - 3);
				if (r < 0)
					return r;
				p->pos += nq;
				break;
			}
			r = scratch_add(p, literal ? "''" : "\"\"", nq);
			if (r < 0)
				return r;
			p->pos += nq;
			continue;
		}
		if (c == '\\' && !literal) {
			int e = peek_at(p, 1);
			p->pos++;
			if (multi && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
				/* line-ending backslash: trim up to the next non-blank */
				skip_ws(p);
				r = eat_newline(p);
				if (r < 0)
					return r;
				if (r == 0)
					return fail(p, p->pos - 1, "invalid escape sequence");
				for (;;) {
					skip_ws(p);
					r = eat_newline(p);
					if (r < 0)
						return r;
					if (r == 0)
						break;
				}
				continue;
			}
			r = parse_escape(p);
			if (r < 0)
				return r;
			continue;
		}
		if (c == '\\') { /* literal string */
			r = scratch_add(p, "\\", 1);
			if (r < 0)
				return r;
			p->pos++;
			continue;
		}
		if (c == '\n' || c == '\r') {
			if (!multi)
				return fail(p, p->pos, "newline in single-line string");
			r = eat_newline(p);
			if (r < 0)
				return r;
			r = scratch_add(p, "\n", 1);
			if (r < 0)
				return r;
			continue;
		}
		return fail(p, p->pos, "control character in string");
	}
	return scratch_take(p, ret, ret_len);
}

/* ---- keys ---- */

static void key_done(struct key *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->part[i].s);
	free(k->part);
	*k = (struct key){};
}

static int parse_simple_key(struct parser *p, struct key_part *kp)
{
	int c = peek(p);
	int r;

	kp->pos = p->pos;
	if (c == '"' || c == '\'') {
		if (peek_at(p, 1) == c && peek_at(p, 2) == c)
			return fail(p, p->pos, "multi-line string used as a key");
		r = parse_string(p, c == '\'', false, &kp->s, &kp->len);
		if (r < 0)
			return r;
	} else if (is_bare_key_char(c)) {
		size_t b = p->pos;
		while (is_bare_key_char(peek(p)))
			p->pos++;
		kp->len = p->pos - b;
		kp->s = strndup(p->s + b, kp->len);
		if (!kp->s)
			return oom(p);
	} else
		return fail(p, p->pos, "invalid key");
	if (kp->len > p->lim.max_key_len)
		return fail(p, kp->pos, "key too long");
	return 0;
}

/* key ( ws '.' ws key )* ; trailing whitespace is left for the caller. */
static int parse_key(struct parser *p, struct key *k)
{
	for (;;) {
		int r;
		if (k->n == k->alloc) {
			size_t na = k->alloc ? k->alloc * 2 : 4;
			struct key_part *np = reallocarray(k->part, na, sizeof(*np));
			if (!np)
				return oom(p);
			k->part = np;
			k->alloc = na;
		}
		if (k->n >= p->lim.max_depth)
			return fail(p, p->pos, "too many key components");
		k->part[k->n] = (struct key_part){};
		r = parse_simple_key(p, &k->part[k->n]);
		if (k->part[k->n].s)
			k->n++;
		if (r < 0)
			return r;
		skip_ws(p);
		if (peek(p) != '.')
			return 0;
		p->pos++;
		skip_ws(p);
	}
}

static uint64_t key_hash(const struct parser *p, const struct key_part *kp)
{
	return siphash13(p->seed, kp->s, kp->len);
}

/* ---- numbers and dates ---- */

static bool is_base_digit(int c, int base)
{
	switch (base) {
	case 2:
		return c == '0' || c == '1';
	case 8:
		return c >= '0' && c <= '7';
	case 16:
		return hex_val(c) >= 0;
	default:
		return is_digit(c);
	}
}

/* Digits of base with single underscores between digits, from s[*i]; advances *i. */
static bool scan_digits(const char *s, size_t n, size_t *i, int base)
{
	size_t j = *i;

	if (j >= n || !is_base_digit((unsigned char)s[j], base))
		return false;
	j++;
	for (;;) {
		if (j < n && is_base_digit((unsigned char)s[j], base)) {
			j++;
			continue;
		}
		if (j < n && s[j] == '_') {
			if (j + 1 < n && is_base_digit((unsigned char)s[j + 1], base)) {
				j += 2;
				continue;
			}
			return false;
		}
		break;
	}
	*i = j;
	return true;
}

static bool digits_at(const struct parser *p, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_digit(peek_at(p, off + i)))
			return false;
	return true;
}

static unsigned num2(const struct parser *p, size_t off)
{
	return (unsigned)(peek_at(p, off) - '0') * 10 + (unsigned)(peek_at(p, off + 1) - '0');
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const unsigned char dm[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dm[m - 1];
}

/* HH:MM:SS(.frac)? at p->pos; advances past it. */
static int scan_time(struct parser *p)
{
	size_t at = p->pos;

	if (!digits_at(p, 0, 2) || peek_at(p, 2) != ':' || !digits_at(p, 3, 2) ||
	    peek_at(p, 5) != ':' || !digits_at(p, 6, 2))
		return fail(p, at, "invalid time");
	if (num2(p, 0) > 23 || num2(p, 3) > 59 || num2(p, 6) > 60)
		return fail(p, at, "time out of range");
	p->pos += 8;
	if (peek(p) == '.') {
		if (!is_digit(peek_at(p, 1)))
			return fail(p, at, "invalid fractional seconds");
		p->pos++;
		while (is_digit(peek(p)))
			p->pos++;
	}
	return 0;
}

static int parse_datetime(struct parser *p, struct toml_value **ret)
{
	size_t start = p->pos;
	enum toml_type kind;
	_cleanup_value_ struct toml_value *v = NULL;
	int r;

	if (peek_at(p, 2) == ':') { /* local time */
		r = scan_time(p);
		if (r < 0)
			return r;
		kind = TOML_TIME_LOCAL;
	} else {
		unsigned y, mo, d;
		if (!digits_at(p, 0, 4) || peek_at(p, 4) != '-' || !digits_at(p, 5, 2) ||
		    peek_at(p, 7) != '-' || !digits_at(p, 8, 2))
			return fail(p, start, "invalid date");
		y = num2(p, 0) * 100 + num2(p, 2);
		mo = num2(p, 5);
		d = num2(p, 8);
		if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
			return fail(p, start, "date out of range");
		p->pos += 10;
		kind = TOML_DATE_LOCAL;
		if (peek(p) == 'T' || peek(p) == 't' ||
		    (peek(p) == ' ' && digits_at(p, 1, 2) && peek_at(p, 3) == ':')) {
			p->pos++;
			r = scan_time(p);
			if (r < 0)
				return r;
			kind = TOML_DATETIME_LOCAL;
			if (peek(p) == 'Z' || peek(p) == 'z') {
				p->pos++;
				kind = TOML_DATETIME;
			} else if (peek(p) == '+' || peek(p) == '-') {
				if (!digits_at(p, 1, 2) || peek_at(p, 3) != ':' ||
				    !digits_at(p, 4, 2) || num2(p, 1) > 23 || num2(p, 4) > 59)
					return fail(p, p->pos, "invalid time offset");
				p->pos += 6;
				kind = TOML_DATETIME;
			}
		}
	}
	r = value_new(p, kind, 0, &v);
	if (r < 0)
		return r;
	v->u.s.len = p->pos - start;
	v->u.s.ptr = strndup(p->s + start, v->u.s.len);
	if (!v->u.s.ptr)
		return oom(p);
	for (size_t i = 0; i < v->u.s.len; i++) {
		char *c = &v->u.s.ptr[i];
		if (*c == ' ' || *c == 't')
			*c = 'T';
		else if (*c == 'z')
			*c = 'Z';
	}
	*ret = TAKE_PTR(v);
	return 0;
}

static int parse_float_text(struct parser *p, const char *tok, size_t n, size_t at, double *ret)
{
	_cleanup_free_ char *clean = malloc(n + 1);
	size_t m = 0;
	char *end;
	double d;

	if (!clean)
		return oom(p);
	for (size_t i = 0; i < n; i++)
		if (tok[i] != '_')
			clean[m++] = tok[i];
	clean[m] = '\0';
	if (!p->c_locale) {
		p->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
		if (!p->c_locale)
			return oom(p);
	}
	errno = 0;
	d = strtod_l(clean, &end, p->c_locale);
	if (end != clean + m)
		return fail(p, at, "invalid float");
	if (errno == ERANGE && isinf(d))
		return fail(p, at, "float out of range");
	*ret = d;
	return 0;
}

static int parse_number(struct parser *p, struct toml_value **ret)
{
	size_t start = p->pos, end = start, i;
	const char *tok = p->s + start;
	size_t n;
	bool neg = false, is_float = false;
	_cleanup_value_ struct toml_value *v = NULL;
	int r;

	while (end < p->len) {
		unsigned char c = (unsigned char)p->s[end];
		if (!(is_bare_key_char(c) || c == '.' || c == '+'))
			break;
		end++;
	}
	n = end - start;
	p->pos = end;

	/* inf and nan, with an optional sign */
	i = (n > 0 && (tok[0] == '+' || tok[0] == '-')) ? 1 : 0;
	if (n - i == 3 && (memcmp(tok + i, "inf", 3) == 0 || memcmp(tok + i, "nan", 3) == 0)) {
		r = value_new(p, TOML_FLOAT, 0, &v);
		if (r < 0)
			return r;
		v->u.f = tok[i] == 'i' ? INFINITY : NAN;
		if (tok[0] == '-')
			v->u.f = -v->u.f;
		*ret = TAKE_PTR(v);
		return 0;
	}

	/* hex, octal, binary: no sign, lower-case prefix */
	if (n > 2 && tok[0] == '0' && (tok[1] == 'x' || tok[1] == 'o' || tok[1] == 'b')) {
		int base = tok[1] == 'x' ? 16 : tok[1] == 'o' ? 8 : 2;
		uint64_t acc = 0;
		i = 2;
		if (!scan_digits(tok, n, &i, base) || i != n)
			return fail(p, start, "invalid integer");
		for (size_t j = 2; j < n; j++) {
			if (tok[j] == '_')
				continue;
			if (acc >
			    ((uint64_t)INT64_MAX - (uint64_t)hex_val(tok[j])) / (uint64_t)base)
				return fail(p, start, "integer out of range");
			acc = acc * (uint64_t)base + (uint64_t)hex_val(tok[j]);
		}
		r = value_new(p, TOML_INTEGER, 0, &v);
		if (r < 0)
			return r;
		v->u.i = (int64_t)acc;
		*ret = TAKE_PTR(v);
		return 0;
	}

	/* decimal integer part, shared by integers and floats */
	i = 0;
	if (n > 0 && (tok[0] == '+' || tok[0] == '-')) {
		neg = tok[0] == '-';
		i = 1;
	}
	{
		size_t ds = i;
		if (!scan_digits(tok, n, &i, 10))
			return fail(p, start, "invalid number");
		if (tok[ds] == '0' && i - ds > 1)
			return fail(p, start, "leading zeros are not allowed");
	}
	if (i < n && tok[i] == '.') {
		i++;
		if (!scan_digits(tok, n, &i, 10))
			return fail(p, start, "invalid float");
		is_float = true;
	}
	if (i < n && (tok[i] == 'e' || tok[i] == 'E')) {
		i++;
		if (i < n && (tok[i] == '+' || tok[i] == '-'))
			i++;
		if (!scan_digits(tok, n, &i, 10))
			return fail(p, start, "invalid float exponent");
		is_float = true;
	}
	if (i != n)
		return fail(p, start, "invalid number");

	if (is_float) {
		double d = 0;
		r = parse_float_text(p, tok, n, start, &d);
		if (r < 0)
			return r;
		r = value_new(p, TOML_FLOAT, 0, &v);
		if (r < 0)
			return r;
		v->u.f = d;
	} else {
		uint64_t acc = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
		for (size_t j = (tok[0] == '+' || tok[0] == '-') ? 1 : 0; j < n; j++) {
			unsigned dv;
			if (tok[j] == '_')
				continue;
			dv = (unsigned)(tok[j] - '0');
			if (acc > (lim - dv) / 10)
				return fail(p, start, "integer out of range");
			acc = acc * 10 + dv;
		}
		r = value_new(p, TOML_INTEGER, 0, &v);
		if (r < 0)
			return r;
		v->u.i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
	}
	*ret = TAKE_PTR(v);
	return 0;
}

/* ---- values ---- */

static int parse_value(struct parser *p, unsigned parent_depth, struct toml_value **ret);
static int parse_keyval(struct parser *p, struct toml_value *tbl, bool in_inline);

static int parse_array(struct parser *p, unsigned depth, struct toml_value **ret)
{
	_cleanup_value_ struct toml_value *a = NULL;
	size_t start = p->pos;
	int r;

	r = value_new(p, TOML_ARRAY, depth, &a);
	if (r < 0)
		return r;
	a->flags = TF_INLINE;
	p->pos++;
	for (;;) {
		struct toml_value *v = NULL;
		r = skip_ws_nl_comments(p);
		if (r < 0)
			return r;
		if (peek(p) == ']') {
			p->pos++;
			break;
		}
		if (peek(p) < 0)
			return fail(p, start, "unterminated array");
		r = parse_value(p, depth, &v);
		if (r < 0)
			return r;
		r = array_push(p, a, v);
		if (r < 0)
			return r;
		r = skip_ws_nl_comments(p);
		if (r < 0)
			return r;
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == ']') {
			p->pos++;
			break;
		}
		return fail(p, p->pos, "expected ',' or ']' in array");
	}
	*ret = TAKE_PTR(a);
	return 0;
}

static int parse_inline_table(struct parser *p, unsigned depth, struct toml_value **ret)
{
	_cleanup_value_ struct toml_value *t = NULL;
	int r;

	r = value_new(p, TOML_TABLE, depth, &t);
	if (r < 0)
		return r;
	t->flags = TF_INLINE;
	p->pos++;
	skip_ws(p);
	if (peek(p) == '}') {
		p->pos++;
		*ret = TAKE_PTR(t);
		return 0;
	}
	for (;;) {
		skip_ws(p);
		r = parse_keyval(p, t, true);
		if (r < 0)
			return r;
		skip_ws(p);
		if (peek(p) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p) == '}') {
			p->pos++;
			break;
		}
		return fail(p, p->pos, "expected ',' or '}' in inline table");
	}
	*ret = TAKE_PTR(t);
	return 0;
}

static int parse_keyword(struct parser *p, const char *kw, bool b, struct toml_value **ret)
{
	size_t n = strlen(kw);
	int r;

	if (p->len - p->pos < n || memcmp(p->s + p->pos, kw, n) != 0)
		return fail(p, p->pos, "invalid value");
	r = value_new(p, TOML_BOOLEAN, 0, ret);
	if (r < 0)
		return r;
	(*ret)->u.b = b;
	p->pos += n;
	return 0;
}

/* Any value at p->pos. Containers get depth parent_depth + 1 (checked before descending). */
static int parse_value(struct parser *p, unsigned parent_depth, struct toml_value **ret)
{
	int c = peek(p);
	int r;

	switch (c) {
	case '"':
	case '\'': {
		_cleanup_value_ struct toml_value *v = NULL;
		bool multi = peek_at(p, 1) == c && peek_at(p, 2) == c;
		char *s;
		size_t n;
		r = value_new(p, TOML_STRING, 0, &v);
		if (r < 0)
			return r;
		r = parse_string(p, c == '\'', multi, &s, &n);
		if (r < 0)
			return r;
		/* value_new() and parse_string() set v and s whenever they return 0; the analyzer
		 * loses track of that deep in the recursive descent (its inlining budget) */
		/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference,clang-analyzer-core.uninitialized.Assign) */
		v->u.s.ptr = s;
		v->u.s.len = n;
		*ret = TAKE_PTR(v);
		return 0;
	}
	case 't':
		return parse_keyword(p, "true", true, ret);
	case 'f':
		return parse_keyword(p, "false", false, ret);
	case '[':
		if (parent_depth + 1 > p->lim.max_depth)
			return fail(p, p->pos, "nesting too deep");
		return parse_array(p, parent_depth + 1, ret);
	case '{':
		if (parent_depth + 1 > p->lim.max_depth)
			return fail(p, p->pos, "nesting too deep");
		return parse_inline_table(p, parent_depth + 1, ret);
	case 'i':
	case 'n':
	case '+':
	case '-':
		return parse_number(p, ret);
	default:
		if (!is_digit(c))
			return fail(p, p->pos, c < 0 ? "missing value" : "invalid value");
		if ((digits_at(p, 0, 4) && peek_at(p, 4) == '-') ||
		    (digits_at(p, 0, 2) && peek_at(p, 2) == ':'))
			return parse_datetime(p, ret);
		return parse_number(p, ret);
	}
}

/* key = value, into tbl (the current section, or an inline table being built). */
static int parse_keyval(struct parser *p, struct toml_value *tbl, bool in_inline)
{
	_cleanup_(key_done) struct key k = {};
	struct toml_value *t = tbl, *v = NULL;
	struct key_part *last;
	uint64_t h;
	int r;

	r = parse_key(p, &k);
	if (r < 0)
		return r;
	if (peek(p) != '=')
		return fail(p, p->pos, "expected '=' after key");
	p->pos++;
	skip_ws(p);

	for (size_t i = 0; i + 1 < k.n; i++) {
		struct key_part *kp = &k.part[i];
		h = key_hash(p, kp);
		v = table_find(t, kp->s, kp->len, h);
		if (!v) {
			r = value_new(p, TOML_TABLE, t->depth + 1u, &v);
			if (r < 0)
				return r;
			v->flags = TF_DOTTED | (in_inline ? TF_INLINE : 0);
			r = table_insert(p, t, TAKE_PTR(kp->s), kp->len, h, v);
			if (r < 0)
				return r;
		} else if (v->type != TOML_TABLE || !(v->flags & TF_DOTTED))
			return fail(p, kp->pos, "dotted key extends a value or a closed table");
		t = v;
	}
	last = &k.part[k.n - 1];
	h = key_hash(p, last);
	if (table_find(t, last->s, last->len, h))
		return fail(p, last->pos, "key defined twice");
	r = parse_value(p, t->depth, &v);
	if (r < 0)
		return r;
	return table_insert(p, t, TAKE_PTR(last->s), last->len, h, v);
}

/* [a.b.c] or [[a.b.c]]; on success *cur is the table that following key/values go into. */
static int parse_header(struct parser *p, struct toml_value *root, struct toml_value **cur)
{
	_cleanup_(key_done) struct key k = {};
	struct toml_value *t = root, *v;
	struct key_part *last;
	size_t start = p->pos;
	bool aot = false;
	uint64_t h;
	int r;

	p->pos++;
	if (peek(p) == '[') {
		aot = true;
		p->pos++;
	}
	skip_ws(p);
	r = parse_key(p, &k);
	if (r < 0)
		return r;
	if (peek(p) != ']' || (aot && peek_at(p, 1) != ']'))
		return fail(p, p->pos, aot ? "expected ']]'" : "expected ']'");
	p->pos += aot ? 2 : 1;

	for (size_t i = 0; i + 1 < k.n; i++) {
		struct key_part *kp = &k.part[i];
		h = key_hash(p, kp);
		v = table_find(t, kp->s, kp->len, h);
		if (!v) {
			r = value_new(p, TOML_TABLE, t->depth + 1u, &v);
			if (r < 0)
				return r;
			v->flags = TF_IMPLICIT;
			r = table_insert(p, t, TAKE_PTR(kp->s), kp->len, h, v);
			if (r < 0)
				return r;
		} else if (v->type == TOML_TABLE) {
			if (v->flags & TF_INLINE)
				return fail(p, kp->pos, "cannot extend an inline table");
		} else if (v->type == TOML_ARRAY && (v->flags & TF_AOT)) {
			v = v->u.a.v[v->u.a.n - 1];
		} else
			return fail(p, kp->pos, "key already holds a value");
		t = v;
	}
	last = &k.part[k.n - 1];
	h = key_hash(p, last);
	v = table_find(t, last->s, last->len, h);
	if (!aot) {
		if (!v) {
			r = value_new(p, TOML_TABLE, t->depth + 1u, &v);
			if (r < 0)
				return r;
			v->flags = TF_HEADER;
			r = table_insert(p, t, TAKE_PTR(last->s), last->len, h, v);
			if (r < 0)
				return r;
		} else if (v->type == TOML_TABLE && v->flags == TF_IMPLICIT)
			v->flags = TF_HEADER;
		else
			return fail(p, start, "table defined twice");
		*cur = v;
		return 0;
	}

	struct toml_value *tbl = NULL;
	if (!v) {
		r = value_new(p, TOML_ARRAY, t->depth + 1u, &v);
		if (r < 0)
			return r;
		v->flags = TF_AOT;
		r = table_insert(p, t, TAKE_PTR(last->s), last->len, h, v);
		if (r < 0)
			return r;
	} else if (v->type != TOML_ARRAY || !(v->flags & TF_AOT))
		return fail(p, start, "cannot append to a value that is not an array of tables");
	r = value_new(p, TOML_TABLE, v->depth + 1u, &tbl);
	if (r < 0)
		return r;
	tbl->flags = TF_HEADER;
	r = array_push(p, v, tbl);
	if (r < 0)
		return r;
	*cur = tbl;
	return 0;
}

static int parse_document(struct parser *p, struct toml_value *root)
{
	struct toml_value *cur = root;
	int r;

	if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
		p->pos = 3;
	r = check_utf8(p, p->pos);
	if (r < 0)
		return r;
	for (;;) {
		int c;
		skip_ws(p);
		c = peek(p);
		if (c < 0)
			return 0;
		if (c == '[')
			r = parse_header(p, root, &cur);
		else if (c != '#' && c != '\n' && c != '\r')
			r = parse_keyval(p, cur, false);
		else
			r = 0;
		if (r < 0)
			return r;
		skip_ws(p);
		r = skip_comment(p);
		if (r < 0)
			return r;
		if (peek(p) < 0)
			return 0;
		r = eat_newline(p);
		if (r < 0)
			return r;
		if (r == 0)
			return fail(p, p->pos, "expected a newline after the expression");
	}
}

size_t toml_offset(const struct toml_value *v)
{
	return v ? v->offset : 0;
}

unsigned toml_line_at(const char *text, size_t len, size_t offset)
{
	unsigned line = 1;
	for (size_t i = 0; i < offset && i < len; i++)
		line += text[i] == '\n';
	return line;
}

static void locate(const struct parser *p, struct toml_error *e)
{
	unsigned line = 1, col = 1;

	for (size_t i = 0; i < p->err_pos && i < p->len; i++) {
		unsigned char c = (unsigned char)p->s[i];
		if (c == '\n') {
			line++;
			col = 1;
		} else if ((c & 0xc0) != 0x80)
			col++;
	}
	e->line = line;
	e->column = col;
	snprintf(e->msg, sizeof(e->msg), "%s", p->err_msg);
}

int toml_parse_limits(const char *text, size_t len, const struct toml_limits *limits,
		      struct toml_value **ret_root, struct toml_error *ret_err)
{
	struct parser p = { .s = text, .len = len };
	struct toml_value *root = NULL;
	int r;

	if ((!text && len) || !ret_root)
		return -EINVAL;
	if (!text)
		p.s = "";
	if (limits)
		p.lim = *limits;
	if (!p.lim.max_input)
		p.lim.max_input = TOML_DEFAULT_MAX_INPUT;
	if (!p.lim.max_depth)
		p.lim.max_depth = TOML_DEFAULT_MAX_DEPTH;
	p.lim.max_depth = MIN(p.lim.max_depth, TOML_DEPTH_HARD_MAX);
	if (!p.lim.max_key_len)
		p.lim.max_key_len = TOML_DEFAULT_MAX_KEY_LEN;
	if (!p.lim.max_values)
		p.lim.max_values = TOML_DEFAULT_MAX_VALUES;
	p.lim.max_values = MIN(p.lim.max_values, (size_t)UINT32_MAX - 1); /* table slot indexes */
	if (getrandom(p.seed, sizeof(p.seed), GRND_NONBLOCK) != (ssize_t)sizeof(p.seed)) {
		/* no entropy yet: still differ per process and per call */
		p.seed[0] = (uint64_t)(uintptr_t)&p ^ 0x9e3779b97f4a7c15ULL;
		p.seed[1] = (uint64_t)(uintptr_t)text ^ (uint64_t)getpid();
	}
	buf_init(&p.scratch, len + 1);

	if (len > p.lim.max_input) {
		r = fail(&p, 0, "input too large");
		goto out;
	}
	r = value_new(&p, TOML_TABLE, 0, &root);
	if (r < 0)
		goto out;
	r = parse_document(&p, root);
out:
	if (r < 0) {
		if (ret_err)
			locate(&p, ret_err);
		value_free(root);
	} else
		*ret_root = root;
	buf_done(&p.scratch, 0);
	if (p.c_locale)
		freelocale(p.c_locale);
	return r < 0 ? r : 0;
}

int toml_parse(const char *text, size_t len, struct toml_value **ret_root,
	       struct toml_error *ret_err)
{
	return toml_parse_limits(text, len, NULL, ret_root, ret_err);
}

/* ---- read-only API ---- */

enum toml_type toml_type(const struct toml_value *v)
{
	return v->type;
}

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE:
		return "table";
	case TOML_ARRAY:
		return "array";
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOLEAN:
		return "bool";
	case TOML_DATETIME:
		return "datetime";
	case TOML_DATETIME_LOCAL:
		return "datetime-local";
	case TOML_DATE_LOCAL:
		return "date-local";
	case TOML_TIME_LOCAL:
		return "time-local";
	}
	return "unknown";
}

const struct toml_value *toml_table_getn(const struct toml_value *tbl, const char *key,
					 size_t key_len)
{
	if (!tbl || tbl->type != TOML_TABLE || !key)
		return NULL;
	return table_find(tbl, key, key_len, siphash13(tbl->u.t.seed, key, key_len));
}

const struct toml_value *toml_table_get(const struct toml_value *tbl, const char *key)
{
	return key ? toml_table_getn(tbl, key, strlen(key)) : NULL;
}

const struct toml_value *toml_get_path(const struct toml_value *root, const char *path)
{
	const struct toml_value *v = root;
	const char *s = path;

	if (!path)
		return NULL;
	for (;;) {
		const char *dot = strchr(s, '.');
		size_t n = dot ? (size_t)(dot - s) : strlen(s);
		v = toml_table_getn(v, s, n);
		if (!v || !dot)
			return v;
		s = dot + 1;
	}
}

size_t toml_table_size(const struct toml_value *tbl)
{
	return tbl && tbl->type == TOML_TABLE ? tbl->u.t.n : 0;
}

const char *toml_table_key(const struct toml_value *tbl, size_t i, size_t *ret_key_len)
{
	if (i >= toml_table_size(tbl))
		return NULL;
	if (ret_key_len)
		*ret_key_len = tbl->u.t.kv[i].key_len;
	return tbl->u.t.kv[i].key;
}

const struct toml_value *toml_table_value(const struct toml_value *tbl, size_t i)
{
	return i < toml_table_size(tbl) ? tbl->u.t.kv[i].value : NULL;
}

size_t toml_array_size(const struct toml_value *arr)
{
	return arr && arr->type == TOML_ARRAY ? arr->u.a.n : 0;
}

const struct toml_value *toml_array_at(const struct toml_value *arr, size_t i)
{
	return i < toml_array_size(arr) ? arr->u.a.v[i] : NULL;
}

static int check_type(const struct toml_value *v, enum toml_type t)
{
	if (!v)
		return -ENOENT;
	return v->type == t ? 0 : -EMEDIUMTYPE;
}

int toml_get_string(const struct toml_value *v, const char **ret, size_t *ret_len)
{
	int r = check_type(v, TOML_STRING);
	if (r < 0)
		return r;
	if (ret)
		*ret = v->u.s.ptr;
	if (ret_len)
		*ret_len = v->u.s.len;
	return 0;
}

int toml_get_int(const struct toml_value *v, int64_t *ret)
{
	int r = check_type(v, TOML_INTEGER);
	if (r < 0)
		return r;
	*ret = v->u.i;
	return 0;
}

int toml_get_float(const struct toml_value *v, double *ret)
{
	int r = check_type(v, TOML_FLOAT);
	if (r < 0)
		return r;
	*ret = v->u.f;
	return 0;
}

int toml_get_bool(const struct toml_value *v, bool *ret)
{
	int r = check_type(v, TOML_BOOLEAN);
	if (r < 0)
		return r;
	*ret = v->u.b;
	return 0;
}

int toml_get_datetime(const struct toml_value *v, const char **ret_text, enum toml_type *ret_kind)
{
	if (!v)
		return -ENOENT;
	if (v->type < TOML_DATETIME || v->type > TOML_TIME_LOCAL)
		return -EMEDIUMTYPE;
	if (ret_text)
		*ret_text = v->u.s.ptr;
	if (ret_kind)
		*ret_kind = v->type;
	return 0;
}
