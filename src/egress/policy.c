/* policy.c - load the layered egress policy and decide requests against it.
 *
 * Trust boundary: the policy files are the host user's (user.toml) and the administrator's
 * (corp.toml) own text, but they are parsed as hostile input anyway (strict TOML, every size and
 * count capped, every error one line with file:line, never a crash): a typo must not open the
 * network. The requests given to policy_decide() come from the guest (names it asked DNS for,
 * SNI, Host headers, request targets), so hosts and paths are validated and normalised before
 * they are compared, and a path whose meaning could differ upstream (dot segments, encoded
 * slashes or dots, backslashes, ...) never satisfies an ALLOW path condition and always satisfies
 * a BLOCK one. Paths are normalised (RFC 3986 6.2.2: encoded unreserved characters decoded, hex
 * digits upper-cased) by the one function the proxy also uses to rewrite the target it forwards,
 * so what is decided is what the upstream gets; rule paths are normalised the same way when they
 * are loaded. BLOCK path conditions ignore ASCII case (some upstreams fold it), ALLOW ones do
 * not. A "*.suffix" host pattern stands for at most wildcard_max_labels labels: every name
 * under an allowed wildcard is resolved by the host's resolver when the guest connects to it,
 * which makes deep guest-chosen names a channel out (docs/POLICY.md).
 *
 * Loading parses each layer into rules and settings, merges them (corp, user, defaults; corp
 * settings locked) and sorts the rules once into evaluation order. Deciding is then a linear walk
 * over the sorted rules with no allocation. Line numbers for messages come from the TOML tree's
 * positions (toml_offset), so a message names the line of the very value it is about.
 *
 * Threads: loading is self-contained; a loaded policy is read-only and may be shared.
 */
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "parse.h"
#include "strv.h"
#include "toml.h"

/* The shipped defaults, generated from default-policy.toml by embed-text.py. */
extern const char policy_default_toml[];
extern const size_t policy_default_toml_len;

#define HOST_BUF 256 /* a normalised host: DNS name (<= 253) or IP literal */
#define MAX_REQ_PATH 8192
#define MAX_DESCRIPTION 256
#define MAX_METHOD 32
#define MAX_CA_PATH 4096
#define MAX_CONNECT 300
#define MAX_PRIORITY 1000000
#define MAX_WARNINGS 64

enum host_kind { HOST_EXACT, HOST_SUFFIX, HOST_ANY };

struct host_pat {
	enum host_kind kind;
	const char *s; /* EXACT: the name; SUFFIX: ".suffix" (points into the rule's hosts[i]) */
	size_t len;
};

struct rule {
	struct policy_rule_info info;
	char *name;
	char *description;
	char **hosts;
	struct host_pat *hpats;
	uint16_t *ports;
	char **methods;
	char **paths;
	bool *path_glob;
	size_t *path_len;
	size_t order; /* position in its file */
};

struct tool_rule {
	struct policy_tool_rule_info info;
	char *name;
	char *description;
	char *server;
	char *tool;
	size_t order;
};

struct override {
	struct policy_override_info info;
	char *host;
	char *connect;
};

struct stamp {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
};

struct policy {
	struct rule *rules;
	size_t n_rules;
	enum policy_action def;
	enum policy_layer def_layer;
	struct tool_rule *trules;
	size_t n_trules;
	enum policy_action tdef;
	enum policy_layer tdef_layer;
	char *ca_file;
	struct override *ovr;
	size_t n_ovr;
	enum policy_layer ca_layer;
	enum policy_layer ovr_layer;
	unsigned wild; /* wildcard_max_labels; 0 = no limit */
	enum policy_layer wild_layer;
	char **warnings;
	char *src[3];  /* source names per layer */
	char *path[2]; /* corp and user paths (policy_load only) */
	struct stamp stamp[2];
};

/* One layer while it is being loaded. */
struct layer {
	struct policy *p;
	enum policy_layer id;
	const char *name;
	const char *text;
	size_t len;
	struct toml_value
		*root; /* the parsed text, kept until loading ends: positions for messages */
	char *err;
	size_t errlen;
	struct rule *rules;
	size_t n_rules;
	bool has_default;
	enum policy_action def;
	struct tool_rule *trules;
	size_t n_trules;
	bool has_tdef;
	enum policy_action tdef;
	bool has_wild;
	unsigned wild;
	bool has_ca;
	char *ca;
	bool has_ovr;
	struct override *ovr;
	size_t n_ovr;
};

static const char *const empty_strv[] = { NULL };

const char *policy_action_name(enum policy_action a)
{
	return a == POLICY_ALLOW ? "allow" : "block";
}

const char *policy_layer_name(enum policy_layer l)
{
	switch (l) {
	case POLICY_LAYER_CORP:
		return "corp";
	case POLICY_LAYER_USER:
		return "user";
	default:
		return "default";
	}
}

const char *policy_default_text(size_t *ret_len)
{
	if (ret_len)
		*ret_len = policy_default_toml_len;
	return policy_default_toml;
}

/* ---- hosts ---- */

static bool is_ipv4(const char *s)
{
	struct in_addr a;
	return inet_pton(AF_INET, s, &a) == 1;
}

/* A DNS name in lower case: labels of 1..63 [a-z0-9_-], at most POLICY_MAX_HOST in all. */
static bool dns_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > POLICY_MAX_HOST)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* Normalise a host (DNS name or IP literal) into out: lower case, one trailing dot dropped, IPv6
 * without brackets in canonical form. 0, or -EINVAL when it is neither. */
static int host_normalize(const char *in, size_t n, char out[static HOST_BUF])
{
	if (n > 0 && in[0] == '[') {
		if (n < 3 || in[n - 1] != ']')
			return -EINVAL;
		in++;
		n -= 2;
		if (!memchr(in, ':', n))
			return -EINVAL;
	}
	if (n == 0 || n >= HOST_BUF - 1)
		return -EINVAL;
	if (memchr(in, ':', n)) {
		char tmp[HOST_BUF];
		struct in6_addr a6;
		memcpy(tmp, in, n);
		tmp[n] = 0;
		if (strlen(tmp) != n || inet_pton(AF_INET6, tmp, &a6) != 1)
			return -EINVAL;
		return inet_ntop(AF_INET6, &a6, out, HOST_BUF) ? 0 : -EINVAL;
	}
	if (in[n - 1] == '.')
		n--;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[n] = 0;
	return dns_name_ok(out, n) ? 0 : -EINVAL;
}

/* ---- paths ---- */

static char ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
	return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static bool char_eq(char a, char b, bool nocase)
{
	return a == b || (nocase && ascii_lower(a) == ascii_lower(b));
}

/* One element of a glob at *pp against c; advances *pp past the element on a match. With
 * nocase, ASCII letters match either case (in classes too). */
static bool glob_one(const char **pp, char c, bool nocase)
{
	const char *p = *pp;
	if (*p == '?') {
		*pp = p + 1;
		return true;
	}
	if (*p == '\\' && p[1]) {
		*pp = p + 2;
		return char_eq(p[1], c, nocase);
	}
	if (*p == '[') {
		const char *q = p + 1;
		bool neg = false, hit = false;
		if (*q == '!' || *q == '^') {
			neg = true;
			q++;
		}
		const char *start = q;
		while (*q && (*q != ']' || q == start)) {
			char lo = *q, hi = *q;
			if (q[1] == '-' && q[2] && q[2] != ']') {
				hi = q[2];
				q += 3;
			} else {
				q++;
			}
			if ((c >= lo && c <= hi) ||
			    (nocase && ((ascii_lower(c) >= lo && ascii_lower(c) <= hi) ||
					(ascii_upper(c) >= lo && ascii_upper(c) <= hi))))
				hit = true;
		}
		if (*q == ']') {
			*pp = q + 1;
			return hit != neg;
		}
		/* no closing bracket: a literal '[' */
	}
	*pp = p + 1;
	return char_eq(*p, c, nocase);
}

/* Whole-string glob match: '*' any run of characters (including '/'), '?' one character,
 * "[a-z]" / "[!x]" classes, '\' escapes. Iterative with one backtrack point: O(len(p)*len(s)).
 * nocase: ASCII letters match either case. */
static bool glob_match(const char *p, const char *s, size_t slen, bool nocase)
{
	const char *star_p = NULL;
	size_t i = 0, star_i = 0;
	for (;;) {
		if (*p == '*') {
			while (*p == '*')
				p++;
			if (!*p)
				return true;
			star_p = p;
			star_i = i;
			continue;
		}
		if (i == slen)
			return *p == 0;
		const char *q = p;
		if (*p && glob_one(&q, s[i], nocase)) {
			p = q;
			i++;
			continue;
		}
		if (!star_p)
			return false;
		p = star_p;
		i = ++star_i;
	}
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = ascii_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* An unreserved character (RFC 3986 2.3) that normalisation decodes: all but '.', whose
 * encoded form stays encoded and makes a path ambiguous (it could form a dot segment). */
static bool decodable(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '~';
}

/* The length path_norm() gives s[0..n), without writing it; *ret_malformed as there. */
static size_t path_norm_len(const char *s, size_t n, bool *ret_malformed)
{
	size_t o = n;
	*ret_malformed = false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%')
			continue;
		if (i + 2 >= n || hex_digit(s[i + 1]) < 0 || hex_digit(s[i + 2]) < 0) {
			*ret_malformed = true;
			return n;
		}
		if (decodable(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2])))
			o -= 2;
		i += 2;
	}
	return o;
}

/* Normalise the path s[0..n) into out (room for path_norm_len() bytes): "%XX" of a decodable
 * character is decoded, any other "%XX" gets upper-case hex digits. A '%' without two hex
 * digits after it leaves the whole path as it is and sets *ret_malformed (decoding around it
 * could make a new "%XX" that the upstream decodes: "%%3631" would become "%631"). Returns the
 * length (<= n). Decoded characters are never '%', so the result holds the input's "%XX"
 * triplets minus the decoded ones: normalising it again changes nothing. */
static size_t path_norm(const char *s, size_t n, char *out, bool *ret_malformed)
{
	(void)path_norm_len(s, n, ret_malformed);
	if (*ret_malformed) {
		memmove(out, s, n);
		return n;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		int c = hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]);
		if (decodable(c)) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = ascii_upper(s[i + 1]);
			out[o++] = ascii_upper(s[i + 2]);
		}
		i += 2;
	}
	return o;
}

/* s starts with '%' and two more bytes: an encoded '.', '/', '\', NUL, or '%' (double
 * encoding)? */
static bool encoded_ambiguous(const char *s)
{
	char a = s[1], b = ascii_lower(s[2]);
	return (a == '2' && (b == 'e' || b == 'f' || b == '5')) || (a == '5' && b == 'c') ||
	       (a == '0' && b == '0');
}

/* The path part of a request target, normalised (path_norm) into buf: absolute-form is
 * reduced to its path, the query and fragment are cut. *ret_ambiguous when the path could mean
 * something else upstream (its length is the normalised one, so a target and its normalised
 * form are always decided alike). *ret points into buf, into target or to a constant. */
static void path_prepare(const char *target, char buf[static MAX_REQ_PATH], const char **ret,
			 size_t *ret_len, bool *ret_ambiguous)
{
	const char *s = target;
	if (strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0) {
		s = strstr(s, "://") + 3;
		s += strcspn(s, "/?#");
		if (*s != '/') {
			*ret = "/";
			*ret_len = 1;
			*ret_ambiguous = false;
			return;
		}
	}
	size_t n = strcspn(s, "?#");
	bool amb = n == 0 || s[0] != '/';
	if (!amb) {
		bool malformed;
		amb = path_norm_len(s, n, &malformed) > MAX_REQ_PATH || malformed;
	}
	if (!amb) {
		n = path_norm(s, n, buf, &amb);
		s = buf;
	}
	for (size_t i = 0; i < n && !amb; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || c == '\\') {
			amb = true;
		} else if (c == '%' && i + 2 < n) {
			amb = encoded_ambiguous(s + i);
		} else if (c == '/' && i + 1 < n) {
			/* "//", "/./", "/../", and a trailing "/." or "/.." */
			const char *seg = s + i + 1;
			size_t rest = n - i - 1;
			if (seg[0] == '/')
				amb = true;
			else if (seg[0] == '.' && (rest == 1 || seg[1] == '/'))
				amb = true;
			else if (rest >= 2 && seg[0] == '.' && seg[1] == '.' &&
				 (rest == 2 || seg[2] == '/'))
				amb = true;
		}
	}
	*ret = s;
	*ret_len = n;
	*ret_ambiguous = amb;
}

ssize_t policy_path_normalize(const char *target, char *out, size_t cap)
{
	size_t len = strlen(target);
	if (cap <= len)
		return -ENOBUFS;
	size_t n = target[0] == '/' ? strcspn(target, "?#") : 0;
	bool malformed;
	size_t o = path_norm(target, n, out, &malformed);
	memmove(out + o, target + n, len - n + 1);
	return (ssize_t)(o + len - n);
}

/* ---- positions for messages: the TOML tree's own (toml_offset) ---- */

/* The table sect ("" = root; dotted names go down), element idx of an array of tables [[sect]]
 * (idx ignored for a plain [sect]); NULL when there is none. */
static const struct toml_value *table_of(const struct layer *l, const char *sect, size_t idx)
{
	const struct toml_value *t = sect[0] ? toml_get_path(l->root, sect) : l->root;
	if (t && toml_type(t) == TOML_ARRAY)
		t = toml_array_at(t, idx);
	return t && toml_type(t) == TOML_TABLE ? t : NULL;
}

static unsigned line_of(const struct layer *l, const struct toml_value *v)
{
	return v ? toml_line_at(l->text, l->len, toml_offset(v)) : 0;
}

/* The line to name in a message about sect[idx].key (and, when elem is set, the element of its
 * array that equals elem). Falls back to the table, then to the first section of sect, then 0
 * (unknown). */
static unsigned where(const struct layer *l, const char *sect, size_t idx, const char *key,
		      const char *elem)
{
	const struct toml_value *t = table_of(l, sect, idx),
				*v = t && key ? toml_table_get(t, key) : NULL;
	if (v && elem && toml_type(v) == TOML_ARRAY) {
		for (size_t i = 0; i < toml_array_size(v); i++) {
			const struct toml_value *e = toml_array_at(v, i);
			const char *s;
			size_t n;
			if (toml_get_string(e, &s, &n) == 0 && n == strlen(elem) &&
			    memcmp(s, elem, n) == 0)
				return line_of(l, e);
		}
	}
	if (v)
		return line_of(l, v);
	if (t && t != l->root)
		return line_of(l, t);
	if (!t && sect[0]) {
		/* [[sect]] element idx does not exist (past a cap): its array */
		const struct toml_value *a = toml_get_path(l->root, sect);
		if (a)
			return line_of(l,
				       toml_type(a) == TOML_ARRAY && toml_array_size(a) > 0
					       ? toml_array_at(a, MIN(idx, toml_array_size(a) - 1))
					       : a);
	}
	return 0;
}

/* ---- messages ---- */

/* s for a message: at most 64 bytes, anything unprintable as '?'. */
static const char *shown(const char *s, char buf[static 72])
{
	size_t n = 0;
	for (; s[n] && n < 64; n++)
		buf[n] = ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) ? '?' : s[n];
	if (s[n]) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = 0;
	return buf;
}

static bool has_ctl(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

static int lfail(struct layer *l, unsigned line, const char *fmt, ...) _printf_(3, 4);
static int lfail(struct layer *l, unsigned line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->err && l->errlen) {
		if (line)
			snprintf(l->err, l->errlen, "%s:%u: %s", l->name, line, msg);
		else
			snprintf(l->err, l->errlen, "%s: %s", l->name, msg);
	}
	return -EBADMSG;
}

/* lfail() at the line of sect[idx].key, located only now that there is a message. */
static int kfail(struct layer *l, const char *sect, size_t idx, const char *key, const char *fmt,
		 ...) _printf_(5, 6);
static int kfail(struct layer *l, const char *sect, size_t idx, const char *key, const char *fmt,
		 ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return lfail(l, where(l, sect, idx, key, NULL), "%s", msg);
}

static int warn(struct policy *p, const char *fmt, ...) _printf_(2, 3);
static int warn(struct policy *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	if (strv_length(p->warnings) >= MAX_WARNINGS)
		return 0;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return strv_push(&p->warnings, msg);
}

/* v is a string equal to want (no NUL tricks). */
static bool str_is(const struct toml_value *v, const char *want)
{
	const char *s;
	size_t n;
	return toml_get_string(v, &s, &n) == 0 && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Copy of a TOML string value that must be free of NULs and control characters. */
static int get_text(struct layer *l, const struct toml_value *v, size_t max, const char **ret,
		    const char *what, const char *sect, size_t idx, const char *key)
{
	const char *s;
	size_t n;
	if (toml_get_string(v, &s, &n) < 0)
		return lfail(l, where(l, sect, idx, key, NULL), "%s: expected a string, got %s",
			     what, toml_type_name(toml_type(v)));
	if (n > max)
		return lfail(l, where(l, sect, idx, key, NULL), "%s: longer than %zu bytes", what,
			     max);
	if (has_ctl(s, n))
		return lfail(l, where(l, sect, idx, key, NULL), "%s: contains a control character",
			     what);
	*ret = s;
	return 0;
}

/* ---- rules ---- */

static void rule_done(struct rule *r)
{
	free(r->name);
	free(r->description);
	strv_free(r->hosts);
	free(r->hpats);
	free(r->ports);
	strv_free(r->methods);
	strv_free(r->paths);
	free(r->path_glob);
	free(r->path_len);
}

static bool rule_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > POLICY_MAX_NAME || streq(s, "default") || streq(s, "invalid-host"))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

/* Context for the messages about one rule. */
struct rctx {
	struct layer *l;
	size_t idx;
	char label[POLICY_MAX_NAME + 16]; /* "rule 'name'" or "rule #3" */
};

static int rfail(struct rctx *c, const char *key, const char *elem, const char *fmt, ...)
	_printf_(4, 5);
static int rfail(struct rctx *c, const char *key, const char *elem, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	unsigned line = where(c->l, "rule", c->idx, key, elem);
	if (key)
		return lfail(c->l, line, "%s: %s: %s", c->label, key, msg);
	return lfail(c->l, line, "%s: %s", c->label, msg);
}

/* A list value: an array of 1..POLICY_MAX_PATTERNS elements. */
static int get_list(struct rctx *c, const struct toml_value *v, const char *key, size_t *ret_n)
{
	if (toml_type(v) != TOML_ARRAY)
		return rfail(c, key, NULL, "expected an array, got %s",
			     toml_type_name(toml_type(v)));
	size_t n = toml_array_size(v);
	if (n == 0)
		return rfail(c, key, NULL, "empty list (leave the key out to match any)");
	if (n > POLICY_MAX_PATTERNS)
		return rfail(c, key, NULL, "more than %d entries", POLICY_MAX_PATTERNS);
	*ret_n = n;
	return 0;
}

static int get_list_string(struct rctx *c, const struct toml_value *v, const char *key, size_t max,
			   const char **ret)
{
	const char *s;
	size_t n;
	if (toml_get_string(v, &s, &n) < 0)
		return rfail(c, key, NULL, "expected strings, got %s",
			     toml_type_name(toml_type(v)));
	if (has_ctl(s, n))
		return rfail(c, key, NULL, "an entry contains a control character");
	if (n > max)
		return rfail(c, key, NULL, "an entry is longer than %zu bytes", max);
	*ret = s;
	return 0;
}

static int parse_hosts(struct rctx *c, struct rule *r, const struct toml_value *v)
{
	size_t n;
	int k = get_list(c, v, "hosts", &n);
	if (k < 0)
		return k;
	r->hpats = calloc(n, sizeof(*r->hpats));
	if (!r->hpats)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s;
		char norm[HOST_BUF + 2];
		k = get_list_string(c, toml_array_at(v, i), "hosts", POLICY_MAX_HOST + 3, &s);
		if (k < 0)
			return k;
		if (streq(s, "*")) {
			memcpy(norm, "*", 2);
		} else if (s[0] == '*' && s[1] == '.') {
			norm[0] = '*';
			norm[1] = '.';
			if (host_normalize(s + 2, strlen(s + 2), norm + 2) < 0 ||
			    strchr(norm, ':') || is_ipv4(norm + 2))
				return rfail(c, "hosts", s,
					     "'%s' is not a host pattern: after \"*.\" comes a DNS "
					     "name",
					     s);
		} else if (host_normalize(s, strlen(s), norm) < 0) {
			return rfail(c, "hosts", s,
				     "'%s' is not a host pattern (a DNS name, an IP address, "
				     "\"*.suffix\" or \"*\"; '*' only as the whole first label)",
				     s);
		}
		k = strv_push(&r->hosts, norm);
		if (k < 0)
			return k;
	}
	for (size_t i = 0; i < n; i++) {
		const char *h = r->hosts[i];
		r->hpats[i].kind = h[0] == '*' ? (h[1] ? HOST_SUFFIX : HOST_ANY) : HOST_EXACT;
		r->hpats[i].s = r->hpats[i].kind == HOST_SUFFIX ? h + 1 : h;
		r->hpats[i].len = strlen(r->hpats[i].s);
	}
	r->info.n_hosts = n;
	return 0;
}

static int parse_ports(struct rctx *c, struct rule *r, const struct toml_value *v)
{
	size_t n;
	int k = get_list(c, v, "ports", &n);
	if (k < 0)
		return k;
	r->ports = calloc(n, sizeof(*r->ports));
	if (!r->ports)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int64_t port;
		const struct toml_value *e = toml_array_at(v, i);
		if (toml_get_int(e, &port) < 0)
			return rfail(c, "ports", NULL, "expected integers, got %s",
				     toml_type_name(toml_type(e)));
		if (port < 1 || port > 65535)
			return rfail(c, "ports", NULL, "%" PRId64 " is not a port (1-65535)", port);
		r->ports[i] = (uint16_t)port;
	}
	r->info.n_ports = n;
	return 0;
}

static int parse_methods(struct rctx *c, struct rule *r, const struct toml_value *v)
{
	size_t n;
	int k = get_list(c, v, "methods", &n);
	if (k < 0)
		return k;
	for (size_t i = 0; i < n; i++) {
		const char *s;
		char up[MAX_METHOD + 1];
		k = get_list_string(c, toml_array_at(v, i), "methods", MAX_METHOD, &s);
		if (k < 0)
			return k;
		size_t len = strlen(s);
		if (len == 0)
			return rfail(c, "methods", NULL, "an empty method");
		for (size_t j = 0; j < len; j++) {
			char ch = s[j];
			if (ch >= 'a' && ch <= 'z')
				ch = (char)(ch - 'a' + 'A');
			if (!((ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_'))
				return rfail(c, "methods", s, "'%s' is not an HTTP method", s);
			up[j] = ch;
		}
		up[len] = 0;
		k = strv_push(&r->methods, up);
		if (k < 0)
			return k;
	}
	r->info.n_methods = n;
	return 0;
}

/* The percent-encodings of a rule path must be ones a normalised request path can hold: "%XX"
 * with two hex digits, not an encoded '.', '/', '\', NUL or '%' (a request holding one of those
 * is ambiguous: it never satisfies an ALLOW path condition and always satisfies a BLOCK one, so
 * such a pattern would never mean what it says), and not inside a glob's [class] (where "%41"
 * is three characters while the request has one). */
static int path_rule_check(struct rctx *c, const char *s, size_t len, bool glob)
{
	bool in_class = false;
	for (size_t j = 0; j < len; j++) {
		if (glob && s[j] == '[')
			in_class = true;
		else if (glob && s[j] == ']')
			in_class = false;
		if (s[j] != '%')
			continue;
		if (j + 2 >= len || hex_digit(s[j + 1]) < 0 || hex_digit(s[j + 2]) < 0)
			return rfail(c, "paths", s, "'%s': a '%%' not followed by two hex digits",
				     s);
		if (encoded_ambiguous(s + j))
			return rfail(c, "paths", s,
				     "'%s': an encoded '.', '/', '\\', NUL or '%%' (%%2E %%2F %%5C "
				     "%%00 %%25) never matches: a request path holding one is "
				     "ambiguous (docs/POLICY.md)",
				     s);
		if (in_class)
			return rfail(c, "paths", s,
				     "'%s': a percent-encoding inside a [class] cannot match a "
				     "normalised path",
				     s);
	}
	return 0;
}

static int parse_paths(struct rctx *c, struct rule *r, const struct toml_value *v)
{
	size_t n;
	int k = get_list(c, v, "paths", &n);
	if (k < 0)
		return k;
	r->path_glob = calloc(n, sizeof(*r->path_glob));
	r->path_len = calloc(n, sizeof(*r->path_len));
	if (!r->path_glob || !r->path_len)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s;
		k = get_list_string(c, toml_array_at(v, i), "paths", POLICY_MAX_PATH, &s);
		if (k < 0)
			return k;
		if (s[0] != '/')
			return rfail(c, "paths", s, "'%s' does not start with '/'", s);
		size_t stars = 0, len = strlen(s);
		for (size_t j = 0; j < len; j++) {
			unsigned char ch = (unsigned char)s[j];
			if (ch <= 0x20 || ch == 0x7f || ch == '#')
				return rfail(c, "paths", s,
					     "'%s': spaces, control characters and '#' cannot "
					     "appear in a request path",
					     s);
			stars += ch == '*';
		}
		if (stars > POLICY_MAX_GLOB_STARS)
			return rfail(c, "paths", s, "'%s': more than %d '*'", s,
				     POLICY_MAX_GLOB_STARS);
		bool glob = strpbrk(s, "*?[") != NULL;
		k = path_rule_check(c, s, len, glob);
		if (k < 0)
			return k;
		/* matched against normalised request paths: normalised the same way */
		char norm[POLICY_MAX_PATH + 1];
		bool malformed;
		len = path_norm(s, len, norm, &malformed);
		norm[len] = 0;
		r->path_glob[i] = glob;
		r->path_len[i] = len;
		k = strv_push(&r->paths, norm);
		if (k < 0)
			return k;
	}
	r->info.n_paths = n;
	return 0;
}

static int parse_rule(struct layer *l, size_t idx, const struct toml_value *t, struct rule *r)
{
	struct rctx c = { .l = l, .idx = idx };
	snprintf(c.label, sizeof(c.label), "rule #%zu", idx + 1);
	if (toml_type(t) != TOML_TABLE)
		return rfail(&c, NULL, NULL, "expected a table, got %s",
			     toml_type_name(toml_type(t)));

	/* the name first, so that every later message can name the rule */
	const struct toml_value *nv = toml_table_get(t, "name");
	const char *s;
	if (!nv)
		return rfail(&c, NULL, NULL, "missing 'name'");
	size_t slen;
	if (toml_get_string(nv, &s, &slen) < 0)
		return rfail(&c, "name", NULL, "expected a string, got %s",
			     toml_type_name(toml_type(nv)));
	if (has_ctl(s, slen))
		return rfail(&c, "name", NULL, "contains a control character");
	if (!rule_name_ok(s))
		return rfail(&c, "name", NULL,
			     "'%.80s' is not a rule name (1-%d of A-Z a-z 0-9 . _ -; not "
			     "\"default\" or \"invalid-host\")",
			     s, POLICY_MAX_NAME);
	snprintf(c.label, sizeof(c.label), "rule '%s'", s);
	r->name = strdup(s);
	if (!r->name)
		return -ENOMEM;

	bool has_action = false;
	int k;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *key = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		if (streq(key, "name")) {
			continue;
		} else if (streq(key, "action")) {
			if (!str_is(v, "allow") && !str_is(v, "block"))
				return rfail(&c, "action", NULL, "must be \"allow\" or \"block\"");
			r->info.action = str_is(v, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			has_action = true;
		} else if (streq(key, "description")) {
			char what[POLICY_MAX_NAME + 32];
			snprintf(what, sizeof(what), "%s: description", c.label);
			k = get_text(l, v, MAX_DESCRIPTION, &s, what, "rule", idx, key);
			if (k < 0)
				return k;
			r->description = strdup(s);
			if (!r->description)
				return -ENOMEM;
		} else if (streq(key, "priority")) {
			int64_t pr;
			if (toml_get_int(v, &pr) < 0)
				return rfail(&c, "priority", NULL, "expected an integer, got %s",
					     toml_type_name(toml_type(v)));
			if (pr < -MAX_PRIORITY || pr > MAX_PRIORITY)
				return rfail(&c, "priority", NULL, "outside -%d..%d", MAX_PRIORITY,
					     MAX_PRIORITY);
			r->info.priority = pr;
		} else if (streq(key, "hosts")) {
			k = parse_hosts(&c, r, v);
			if (k < 0)
				return k;
		} else if (streq(key, "ports")) {
			k = parse_ports(&c, r, v);
			if (k < 0)
				return k;
		} else if (streq(key, "methods")) {
			k = parse_methods(&c, r, v);
			if (k < 0)
				return k;
		} else if (streq(key, "paths")) {
			k = parse_paths(&c, r, v);
			if (k < 0)
				return k;
		} else {
			char b[72];
			return rfail(&c, shown(key, b), NULL,
				     "unknown key (a rule has name, action, hosts, ports, methods, "
				     "paths, priority, description)");
		}
	}
	if (!has_action)
		return rfail(&c, NULL, NULL, "missing 'action' (\"allow\" or \"block\")");
	if (!r->hosts)
		return rfail(&c, NULL, NULL, "missing 'hosts'");
	return 0;
}

static void rule_publish(struct rule *r, enum policy_layer layer, const char *source, unsigned line,
			 size_t order)
{
	r->info.name = r->name;
	r->info.description = r->description;
	r->info.layer = layer;
	r->info.source = source;
	r->info.line = line;
	r->info.hosts = (const char *const *)r->hosts;
	r->info.ports = r->ports;
	r->info.methods = r->methods ? (const char *const *)r->methods : empty_strv;
	r->info.paths = r->paths ? (const char *const *)r->paths : empty_strv;
	r->order = order;
}

static int parse_rules(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_ARRAY)
		return lfail(l, where(l, "", 0, "rule", NULL),
			     "rule: expected an array of tables ([[rule]]), got %s",
			     toml_type_name(toml_type(v)));
	size_t n = toml_array_size(v);
	if (n > POLICY_MAX_RULES)
		return lfail(l, where(l, "rule", POLICY_MAX_RULES, NULL, NULL),
			     "more than %d rules", POLICY_MAX_RULES);
	if (n == 0)
		return 0;
	_cleanup_free_ unsigned *lines = calloc(n, sizeof(*lines));
	l->rules = calloc(n, sizeof(*l->rules));
	if (!lines || !l->rules)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		lines[i] = where(l, "rule", i, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		struct rule *r = &l->rules[i];
		l->n_rules = i + 1;
		int k = parse_rule(l, i, toml_array_at(v, i), r);
		if (k < 0)
			return k;
		for (size_t j = 0; j < i; j++)
			if (streq(l->rules[j].name, r->name))
				return lfail(l, where(l, "rule", i, "name", NULL),
					     "rule '%s': duplicate rule name (first at line %u)",
					     r->name, lines[j]);
		rule_publish(r, l->id, l->p->src[l->id], lines[i], i);
	}
	return 0;
}

/* ---- tool rules ---- */

static void tool_rule_done(struct tool_rule *r)
{
	free(r->name);
	free(r->description);
	free(r->server);
	free(r->tool);
}

/* A server or tool glob: printable ASCII without spaces, at most POLICY_MAX_TOOL_GLOB bytes and
 * POLICY_MAX_GLOB_STARS stars (which bounds the matcher's work). */
static bool tool_glob_ok(const char *s, size_t n)
{
	unsigned stars = 0;
	if (n == 0 || n > POLICY_MAX_TOOL_GLOB)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] <= ' ' || s[i] > '~')
			return false;
		stars += s[i] == '*';
	}
	return stars <= POLICY_MAX_GLOB_STARS;
}

static int parse_tool_rule(struct layer *l, size_t idx, const struct toml_value *t,
			   struct tool_rule *r)
{
	const char *s;
	size_t n;
	char label[POLICY_MAX_NAME + 24];
	snprintf(label, sizeof(label), "tool_rule #%zu", idx + 1);
	if (toml_type(t) != TOML_TABLE)
		return kfail(l, "tool_rule", idx, NULL, "%s: expected a table", label);
	const struct toml_value *nv = toml_table_get(t, "name");
	if (!nv)
		return kfail(l, "tool_rule", idx, NULL, "%s: missing 'name'", label);
	if (toml_get_string(nv, &s, &n) < 0 || has_ctl(s, n) || !rule_name_ok(s))
		return kfail(l, "tool_rule", idx, "name",
			     "%s: name: not a rule name (1-%d of A-Z a-z 0-9 . _ -; not "
			     "\"default\")",
			     label, POLICY_MAX_NAME);
	snprintf(label, sizeof(label), "tool_rule '%s'", s);
	r->name = strdup(s);
	if (!r->name)
		return -ENOMEM;
	bool has_action = false;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *key = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		char b[72];
		if (streq(key, "name"))
			continue;
		if (streq(key, "action")) {
			if (!str_is(v, "allow") && !str_is(v, "block"))
				return kfail(l, "tool_rule", idx, key,
					     "%s: action: must be \"allow\" or \"block\"", label);
			r->info.action = str_is(v, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			has_action = true;
		} else if (streq(key, "server") || streq(key, "tool")) {
			if (toml_get_string(v, &s, &n) < 0 || has_ctl(s, n) || !tool_glob_ok(s, n))
				return kfail(l, "tool_rule", idx, key,
					     "%s: %s: expected a glob of 1-%d printable characters "
					     "without spaces, at most %d '*'",
					     label, key, POLICY_MAX_TOOL_GLOB,
					     POLICY_MAX_GLOB_STARS);
			char **dst = streq(key, "server") ? &r->server : &r->tool;
			free(*dst);
			*dst = strdup(s);
			if (!*dst)
				return -ENOMEM;
		} else if (streq(key, "priority")) {
			int64_t pr;
			if (toml_get_int(v, &pr) < 0 || pr < -MAX_PRIORITY || pr > MAX_PRIORITY)
				return kfail(l, "tool_rule", idx, key,
					     "%s: priority: expected an integer in -%d..%d", label,
					     MAX_PRIORITY, MAX_PRIORITY);
			r->info.priority = pr;
		} else if (streq(key, "description")) {
			char what[POLICY_MAX_NAME + 40];
			snprintf(what, sizeof(what), "%s: description", label);
			int k = get_text(l, v, MAX_DESCRIPTION, &s, what, "tool_rule", idx, key);
			if (k < 0)
				return k;
			r->description = strdup(s);
			if (!r->description)
				return -ENOMEM;
		} else {
			return kfail(l, "tool_rule", idx, key,
				     "%s: %s: unknown key (a tool rule has name, action, server, "
				     "tool, priority, description)",
				     label, shown(key, b));
		}
	}
	if (!has_action)
		return kfail(l, "tool_rule", idx, NULL,
			     "%s: missing 'action' (\"allow\" or \"block\")", label);
	if (!r->server && !(r->server = strdup("*")))
		return -ENOMEM;
	if (!r->tool && !(r->tool = strdup("*")))
		return -ENOMEM;
	return 0;
}

static int parse_tool_rules(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_ARRAY)
		return kfail(l, "", 0, "tool_rule",
			     "tool_rule: expected an array of tables ([[tool_rule]])");
	size_t n = toml_array_size(v);
	if (n > POLICY_MAX_RULES)
		return kfail(l, "tool_rule", POLICY_MAX_RULES, NULL, "more than %d tool rules",
			     POLICY_MAX_RULES);
	if (n == 0)
		return 0;
	_cleanup_free_ unsigned *lines = calloc(n, sizeof(*lines));
	l->trules = calloc(n, sizeof(*l->trules));
	if (!lines || !l->trules)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		lines[i] = where(l, "tool_rule", i, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		struct tool_rule *r = &l->trules[i];
		l->n_trules = i + 1;
		int k = parse_tool_rule(l, i, toml_array_at(v, i), r);
		if (k < 0)
			return k;
		for (size_t j = 0; j < i; j++)
			if (streq(l->trules[j].name, r->name))
				return kfail(
					l, "tool_rule", i, "name",
					"tool_rule '%s': duplicate rule name (first at line %u)",
					r->name, lines[j]);
		r->info.name = r->name;
		r->info.description = r->description;
		r->info.layer = l->id;
		r->info.source = l->p->src[l->id];
		r->info.line = lines[i];
		r->info.server = r->server;
		r->info.tool = r->tool;
		r->order = i;
	}
	return 0;
}

/* ---- settings ---- */

static int parse_policy_table(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_TABLE)
		return kfail(l, "", 0, "policy", "policy: expected a table, got %s",
			     toml_type_name(toml_type(v)));
	for (size_t i = 0; i < toml_table_size(v); i++) {
		const char *key = toml_table_key(v, i, NULL);
		const struct toml_value *e = toml_table_value(v, i);
		char b[72];
		if (streq(key, "wildcard_max_labels")) {
			int64_t n;
			if (toml_get_int(e, &n) < 0 || n < 0 || n > POLICY_MAX_WILDCARD_LABELS)
				return kfail(l, "policy", 0, key,
					     "policy.wildcard_max_labels: expected an integer "
					     "0-%d (0: no limit)",
					     POLICY_MAX_WILDCARD_LABELS);
			l->has_wild = true;
			l->wild = (unsigned)n;
			continue;
		}
		if (!streq(key, "default") && !streq(key, "tool_default"))
			return kfail(l, "policy", 0, key,
				     "policy.%s: unknown key ([policy] has default, tool_default, "
				     "wildcard_max_labels)",
				     shown(key, b));
		if (!str_is(e, "allow") && !str_is(e, "block"))
			return kfail(l, "policy", 0, key,
				     "policy.%s: must be \"allow\" or \"block\"", key);
		if (streq(key, "tool_default")) {
			l->has_tdef = true;
			l->tdef = str_is(e, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			continue;
		}
		l->has_default = true;
		l->def = str_is(e, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
	}
	return 0;
}

/* "host:port" or "[v6]:port". */
static bool connect_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	char h[HOST_BUF];
	uint32_t port;
	if (!colon || colon == s || parse_u32(colon + 1, &port) < 0 || port < 1 || port > 65535)
		return false;
	size_t hn = (size_t)(colon - s);
	if (s[0] == '[')
		return s[hn - 1] == ']' && host_normalize(s, hn, h) == 0;
	return !memchr(s, ':', hn) && host_normalize(s, hn, h) == 0;
}

static int parse_override(struct layer *l, size_t idx, const struct toml_value *t,
			  struct override *o)
{
	static const char sect[] = "upstream.override";
	if (toml_type(t) != TOML_TABLE)
		return kfail(l, sect, idx, NULL, "upstream.override #%zu: expected a table",
			     idx + 1);
	int64_t port = 443;
	const char *host = NULL, *connect = NULL;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *key = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		int k;
		char b[72];
		if (streq(key, "host")) {
			k = get_text(l, v, POLICY_MAX_HOST + 1, &host, "upstream.override: host",
				     sect, idx, key);
		} else if (streq(key, "connect")) {
			k = get_text(l, v, MAX_CONNECT, &connect, "upstream.override: connect",
				     sect, idx, key);
			if (k == 0 && !connect_ok(connect))
				k = kfail(l, sect, idx, key,
					  "upstream.override: connect: '%s' is not \"host:port\" "
					  "or \"[v6]:port\"",
					  connect);
		} else if (streq(key, "port")) {
			k = 0;
			if (toml_get_int(v, &port) < 0 || port < 1 || port > 65535)
				k = kfail(l, sect, idx, key,
					  "upstream.override: port: expected 1-65535");
		} else {
			k = kfail(l, sect, idx, key,
				  "upstream.override: %s: unknown key (an override has host, port, "
				  "connect)",
				  shown(key, b));
		}
		if (k < 0)
			return k;
	}
	char norm[HOST_BUF];
	if (!host || !connect)
		return kfail(l, sect, idx, NULL, "upstream.override #%zu: needs host and connect",
			     idx + 1);
	if (host_normalize(host, strlen(host), norm) < 0)
		return kfail(l, sect, idx, "host",
			     "upstream.override: host: '%s' is not a DNS name or IP address", host);
	o->host = strdup(norm);
	o->connect = strdup(connect);
	if (!o->host || !o->connect)
		return -ENOMEM;
	o->info.host = o->host;
	o->info.port = (uint16_t)port;
	o->info.connect = o->connect;
	return 0;
}

static int parse_overrides(struct layer *l, const struct toml_value *e)
{
	if (toml_type(e) != TOML_ARRAY)
		return kfail(l, "upstream", 0, "override",
			     "upstream.override: expected an array of tables "
			     "([[upstream.override]])");
	size_t n = toml_array_size(e);
	if (n > POLICY_MAX_OVERRIDES)
		return kfail(l, "upstream", 0, "override",
			     "upstream.override: more than %d entries", POLICY_MAX_OVERRIDES);
	l->has_ovr = true;
	if (n == 0)
		return 0;
	l->ovr = calloc(n, sizeof(*l->ovr));
	if (!l->ovr)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++) {
		l->n_ovr = j + 1;
		int k = parse_override(l, j, toml_array_at(e, j), &l->ovr[j]);
		if (k < 0)
			return k;
		for (size_t m = 0; m < j; m++)
			if (streq(l->ovr[m].host, l->ovr[j].host) &&
			    l->ovr[m].info.port == l->ovr[j].info.port)
				return kfail(l, "upstream.override", j, "host",
					     "upstream.override: %s port %u is overridden twice",
					     l->ovr[j].host, l->ovr[j].info.port);
	}
	return 0;
}

static int parse_upstream(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_TABLE)
		return kfail(l, "", 0, "upstream", "upstream: expected a table, got %s",
			     toml_type_name(toml_type(v)));
	for (size_t i = 0; i < toml_table_size(v); i++) {
		const char *key = toml_table_key(v, i, NULL);
		const struct toml_value *e = toml_table_value(v, i);
		char b[72];
		int k;
		if (streq(key, "ca_file")) {
			const char *s;
			k = get_text(l, e, MAX_CA_PATH, &s, "upstream.ca_file", "upstream", 0, key);
			if (k < 0)
				return k;
			if (s[0] != '/')
				return kfail(l, "upstream", 0, key,
					     "upstream.ca_file: '%s' is not an absolute path", s);
			l->ca = strdup(s);
			if (!l->ca)
				return -ENOMEM;
			l->has_ca = true;
		} else if (streq(key, "override")) {
			k = parse_overrides(l, e);
			if (k < 0)
				return k;
		} else {
			return kfail(l, "upstream", 0, key,
				     "upstream.%s: unknown key ([upstream] has ca_file, override)",
				     shown(key, b));
		}
	}
	return 0;
}

/* ---- one layer ---- */

static void layer_done(struct layer *l)
{
	toml_free(l->root);
	for (size_t i = 0; i < l->n_rules; i++)
		rule_done(&l->rules[i]);
	free(l->rules);
	for (size_t i = 0; i < l->n_trules; i++)
		tool_rule_done(&l->trules[i]);
	free(l->trules);
	free(l->ca);
	for (size_t i = 0; i < l->n_ovr; i++) {
		free(l->ovr[i].host);
		free(l->ovr[i].connect);
	}
	free(l->ovr);
}

static int layer_load(struct layer *l)
{
	if (!l->text)
		return 0;
	if (l->len > POLICY_MAX_FILE_SIZE)
		return lfail(l, 0, "larger than %zu bytes", POLICY_MAX_FILE_SIZE);
	const struct toml_limits lim = {
		.max_input = POLICY_MAX_FILE_SIZE,
		.max_depth = 8,
		.max_values = (size_t)1 << 17,
		.max_key_len = 128,
	};
	struct toml_error te = { 0 };
	int k = toml_parse_limits(l->text, l->len, &lim, &l->root, &te);
	if (k == -EBADMSG)
		return lfail(l, te.line, "%s (column %u)", te.msg, te.column);
	if (k < 0)
		return k;
	const struct toml_value *root = l->root;
	for (size_t i = 0; i < toml_table_size(root); i++) {
		const char *key = toml_table_key(root, i, NULL);
		const struct toml_value *v = toml_table_value(root, i);
		if (streq(key, "policy"))
			k = parse_policy_table(l, v);
		else if (streq(key, "rule"))
			k = parse_rules(l, v);
		else if (streq(key, "tool_rule"))
			k = parse_tool_rules(l, v);
		else if (streq(key, "upstream"))
			k = parse_upstream(l, v);
		else {
			char b[72];
			k = lfail(l, where(l, "", 0, key, NULL),
				  "%s: unknown key (a policy file has [policy], [[rule]], "
				  "[[tool_rule]], [upstream])",
				  shown(key, b));
		}
		if (k < 0)
			return k;
	}
	return 0;
}

/* ---- merging ---- */

static int rule_cmp(const void *a, const void *b)
{
	const struct rule *x = a, *y = b;
	if (x->info.layer != y->info.layer)
		return x->info.layer < y->info.layer ? -1 : 1;
	if (x->info.priority != y->info.priority)
		return x->info.priority > y->info.priority ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int tool_rule_cmp(const void *a, const void *b)
{
	const struct tool_rule *x = a, *y = b;
	if (x->info.layer != y->info.layer)
		return x->info.layer < y->info.layer ? -1 : 1;
	if (x->info.priority != y->info.priority)
		return x->info.priority > y->info.priority ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int merge_tools(struct policy *p, struct layer *ls)
{
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		n += ls[i].n_trules;
	if (n) {
		p->trules = calloc(n, sizeof(*p->trules));
		if (!p->trules)
			return -ENOMEM;
	}
	for (int i = 0; i < 3; i++) {
		if (ls[i].n_trules)
			memcpy(p->trules + p->n_trules, ls[i].trules,
			       ls[i].n_trules * sizeof(*p->trules));
		p->n_trules += ls[i].n_trules;
		free(ls[i].trules);
		ls[i].trules = NULL;
		ls[i].n_trules = 0;
	}
	if (p->n_trules)
		qsort(p->trules, p->n_trules, sizeof(*p->trules), tool_rule_cmp);
	p->tdef = POLICY_ALLOW;
	p->tdef_layer = POLICY_LAYER_DEFAULT;
	for (int i = 2; i >= 0; i--)
		if (ls[i].has_tdef) {
			p->tdef = ls[i].tdef;
			p->tdef_layer = (enum policy_layer)i;
		}
	if (ls[POLICY_LAYER_CORP].has_tdef && ls[POLICY_LAYER_USER].has_tdef)
		return warn(p,
			    "%s:%u: policy.tool_default is locked by %s; the user value is "
			    "ignored",
			    ls[POLICY_LAYER_USER].name,
			    where(&ls[POLICY_LAYER_USER], "policy", 0, "tool_default", NULL),
			    ls[POLICY_LAYER_CORP].name);
	return 0;
}

static int merge(struct policy *p, struct layer *ls)
{
	struct layer *corp = &ls[POLICY_LAYER_CORP], *user = &ls[POLICY_LAYER_USER];
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		n += ls[i].n_rules;
	if (n) {
		p->rules = calloc(n, sizeof(*p->rules));
		if (!p->rules)
			return -ENOMEM;
	}
	for (int i = 0; i < 3; i++) {
		if (ls[i].n_rules)
			memcpy(p->rules + p->n_rules, ls[i].rules,
			       ls[i].n_rules * sizeof(*p->rules));
		p->n_rules += ls[i].n_rules;
		free(ls[i].rules);
		ls[i].rules = NULL;
		ls[i].n_rules = 0;
	}
	if (p->n_rules)
		qsort(p->rules, p->n_rules, sizeof(*p->rules), rule_cmp);

	/* settings: the first layer that sets one wins; a user value under a corp value warns */
	p->def = POLICY_BLOCK;
	p->def_layer = POLICY_LAYER_DEFAULT;
	for (int i = 2; i >= 0; i--)
		if (ls[i].has_default) {
			p->def = ls[i].def;
			p->def_layer = (enum policy_layer)i;
		}
	p->wild = 1;
	p->wild_layer = POLICY_LAYER_DEFAULT;
	for (int i = 2; i >= 0; i--)
		if (ls[i].has_wild) {
			p->wild = ls[i].wild;
			p->wild_layer = (enum policy_layer)i;
		}
	int k = 0;
	if (corp->has_default && user->has_default)
		k = warn(p, "%s:%u: policy.default is locked by %s; the user value is ignored",
			 user->name, where(user, "policy", 0, "default", NULL), corp->name);
	if (k == 0 && corp->has_wild && user->has_wild)
		k = warn(p,
			 "%s:%u: policy.wildcard_max_labels is locked by %s; the user value is "
			 "ignored",
			 user->name, where(user, "policy", 0, "wildcard_max_labels", NULL),
			 corp->name);
	if (k == 0 && corp->has_ca && user->has_ca)
		k = warn(p, "%s:%u: upstream.ca_file is locked by %s; the user value is ignored",
			 user->name, where(user, "upstream", 0, "ca_file", NULL), corp->name);
	if (k == 0 && corp->has_ovr && user->has_ovr)
		k = warn(p,
			 "%s:%u: upstream.override is locked by %s; the user's overrides are "
			 "ignored",
			 user->name, where(user, "upstream", 0, "override", NULL), corp->name);
	if (k < 0)
		return k;
	p->ca_layer = p->ovr_layer = POLICY_LAYER_DEFAULT;
	for (int i = 2; i >= 0; i--) {
		if (ls[i].has_ca) {
			free(p->ca_file);
			p->ca_file = TAKE_PTR(ls[i].ca);
			p->ca_layer = (enum policy_layer)i;
		}
	}
	for (int i = 2; i >= 0; i--) {
		if (!ls[i].has_ovr)
			continue;
		for (size_t j = 0; j < p->n_ovr; j++) {
			free(p->ovr[j].host);
			free(p->ovr[j].connect);
		}
		free(p->ovr);
		p->ovr = TAKE_PTR(ls[i].ovr);
		p->n_ovr = ls[i].n_ovr;
		ls[i].n_ovr = 0;
		p->ovr_layer = (enum policy_layer)i;
		for (size_t j = 0; j < p->n_ovr; j++)
			p->ovr[j].info.layer = p->ovr_layer;
	}
	return 0;
}

int policy_load_sources(const struct policy_source *corp, const struct policy_source *user,
			const struct policy_source *defaults, struct policy **ret, char *err,
			size_t errlen)
{
	if (!ret)
		return -EINVAL;
	if (err && errlen)
		err[0] = 0;
	const struct policy_source shipped = { "<defaults>", policy_default_toml,
					       policy_default_toml_len };
	const struct policy_source *src[3] = { corp, user, defaults ? defaults : &shipped };
	static const char *const fallback[3] = { "<corp>", "<user>", "<defaults>" };
	_cleanup_policy_free_ struct policy *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	struct layer ls[3] = {};
	int k = 0;
	for (int i = 0; i < 3; i++) {
		const char *name = src[i] && src[i]->name ? src[i]->name : fallback[i];
		p->src[i] = strdup(name);
		if (!p->src[i])
			return -ENOMEM;
		ls[i] = (struct layer){ .p = p,
					.id = (enum policy_layer)i,
					.name = p->src[i],
					.text = src[i] ? src[i]->text : NULL,
					.len = src[i] ? src[i]->len : 0,
					.err = err,
					.errlen = errlen };
	}
	for (int i = 0; i < 3 && k == 0; i++)
		k = layer_load(&ls[i]);
	if (k == 0)
		k = merge(p, ls);
	if (k == 0)
		k = merge_tools(p, ls);
	for (int i = 0; i < 3; i++)
		layer_done(&ls[i]);
	if (k < 0) {
		if (k == -ENOMEM && err && errlen)
			snprintf(err, errlen, "out of memory");
		return k;
	}
	*ret = TAKE_PTR(p);
	return 0;
}

int policy_load_strings(const char *corp, size_t corp_len, const char *user, size_t user_len,
			struct policy **ret, char *err, size_t errlen)
{
	const struct policy_source c = { "<corp>", corp, corp_len };
	const struct policy_source u = { "<user>", user, user_len };
	return policy_load_sources(&c, &u, NULL, ret, err, errlen);
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_rules; i++)
		rule_done(&p->rules[i]);
	free(p->rules);
	for (size_t i = 0; i < p->n_trules; i++)
		tool_rule_done(&p->trules[i]);
	free(p->trules);
	free(p->ca_file);
	for (size_t i = 0; i < p->n_ovr; i++) {
		free(p->ovr[i].host);
		free(p->ovr[i].connect);
	}
	free(p->ovr);
	strv_free(p->warnings);
	for (int i = 0; i < 3; i++)
		free(p->src[i]);
	for (int i = 0; i < 2; i++)
		free(p->path[i]);
	free(p);
}

/* ---- files ---- */

static void stamp_from(struct stamp *s, const struct stat *st)
{
	*s = (struct stamp){ .present = true,
			     .dev = st->st_dev,
			     .ino = st->st_ino,
			     .size = st->st_size,
			     .mtime = st->st_mtim,
			     .ctime = st->st_ctim };
}

/* Read a policy file. A missing file gives *ret_text = NULL (empty layer). */
static int read_policy_file(const char *path, char **ret_text, size_t *ret_len,
			    struct stamp *ret_stamp, mode_t *ret_mode, char *err, size_t errlen)
{
	struct stat st;
	*ret_text = NULL;
	*ret_len = 0;
	*ret_stamp = (struct stamp){ 0 };
	_cleanup_close_ int fd = open_regular_file(path, &st, err, errlen);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > POLICY_MAX_FILE_SIZE) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, POLICY_MAX_FILE_SIZE);
		return -EBADMSG;
	}
	stamp_from(ret_stamp, &st);
	*ret_mode = st.st_mode;
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;
	int k = read_fd_small(fd, POLICY_MAX_FILE_SIZE, &buf, &n);
	if (k == -EFBIG) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, POLICY_MAX_FILE_SIZE);
		return -EBADMSG;
	}
	if (k < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-k));
		return k;
	}
	*ret_text = TAKE_PTR(buf);
	*ret_len = n;
	return 0;
}

int policy_load(const char *corp_path, const char *user_path, struct policy **ret, char *err,
		size_t errlen)
{
	const char *paths[2] = { corp_path, user_path };
	char *texts[2] = { NULL, NULL };
	size_t lens[2] = { 0, 0 };
	struct stamp stamps[2] = {};
	mode_t modes[2] = { 0, 0 };
	struct policy_source src[2];
	bool corp_read = false;
	char dummy[1];
	int k = 0;
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	for (int i = 0; i < 2 && k == 0; i++) {
		if (paths[i])
			k = read_policy_file(paths[i], &texts[i], &lens[i], &stamps[i], &modes[i],
					     err, errlen);
		src[i] = (struct policy_source){ paths[i], texts[i], lens[i] };
	}
	struct policy *p = NULL;
	if (k == 0)
		k = policy_load_sources(&src[0], &src[1], NULL, &p, err, errlen);
	corp_read = texts[0] != NULL;
	for (int i = 0; i < 2; i++)
		free(texts[i]);
	if (k < 0)
		return k;
	for (int i = 0; i < 2; i++) {
		p->stamp[i] = stamps[i];
		if (paths[i] && !(p->path[i] = strdup(paths[i]))) {
			policy_free(p);
			return -ENOMEM;
		}
	}
	if (corp_read && (modes[0] & 0022) &&
	    warn(p,
		 "%s: writable by group or others: anyone who can write it controls the corp "
		 "policy",
		 corp_path) < 0) {
		policy_free(p);
		return -ENOMEM;
	}
	*ret = p;
	return 0;
}

bool policy_files_changed(const struct policy *p)
{
	for (int i = 0; i < 2; i++) {
		struct stat st;
		struct stamp now = { 0 };
		if (!p->path[i])
			continue;
		if (stat(p->path[i], &st) == 0)
			stamp_from(&now, &st);
		else if (errno != ENOENT)
			return true;
		const struct stamp *was = &p->stamp[i];
		if (now.present != was->present)
			return true;
		if (!now.present)
			continue;
		if (now.dev != was->dev || now.ino != was->ino || now.size != was->size ||
		    now.mtime.tv_sec != was->mtime.tv_sec ||
		    now.mtime.tv_nsec != was->mtime.tv_nsec ||
		    now.ctime.tv_sec != was->ctime.tv_sec ||
		    now.ctime.tv_nsec != was->ctime.tv_nsec)
			return true;
	}
	return false;
}

/* ---- deciding ---- */

enum tri { NO, YES, UNKNOWN };

/* YES when a pattern matches; UNKNOWN when only "*.suffix" patterns match, with more than
 * max_labels labels (0: no limit) under the suffix; else NO. */
static enum tri host_match(const struct rule *r, const char *h, size_t hl, bool is_ip,
			   unsigned max_labels)
{
	enum tri res = NO;
	for (size_t i = 0; i < r->info.n_hosts; i++) {
		const struct host_pat *hp = &r->hpats[i];
		switch (hp->kind) {
		case HOST_ANY:
			return YES;
		case HOST_EXACT:
			if (hl == hp->len && memcmp(h, hp->s, hl) == 0)
				return YES;
			break;
		case HOST_SUFFIX:
			if (is_ip || hl <= hp->len || memcmp(h + hl - hp->len, hp->s, hp->len) != 0)
				break;
			/* the labels the '*' stands for: h[0 .. hl - len), ".suffix" cut off */
			size_t labels = 1;
			for (size_t j = 0; j < hl - hp->len; j++)
				labels += h[j] == '.';
			if (max_labels == 0 || labels <= max_labels)
				return YES;
			res = UNKNOWN;
			break;
		}
	}
	return res;
}

static enum tri port_match(const struct rule *r, uint16_t port)
{
	if (r->info.n_ports == 0)
		return YES;
	if (port == 0)
		return UNKNOWN;
	for (size_t i = 0; i < r->info.n_ports; i++)
		if (r->ports[i] == port)
			return YES;
	return NO;
}

static enum tri method_match(const struct rule *r, const char *method)
{
	if (r->info.n_methods == 0)
		return YES;
	if (!method)
		return UNKNOWN;
	for (size_t i = 0; i < r->info.n_methods; i++)
		if (strcasecmp(r->methods[i], method) == 0)
			return YES;
	return NO;
}

static enum tri path_match(const struct rule *r, const char *path, size_t plen, bool ambiguous)
{
	if (r->info.n_paths == 0)
		return YES;
	if (!path)
		return UNKNOWN;
	if (ambiguous)
		return r->info.action == POLICY_BLOCK ? YES : NO;
	/* a BLOCK condition ignores ASCII case: an upstream that folds case must not see
	 * /ADMIN pass a block on /admin; an ALLOW condition does not (RFC 3986: paths are
	 * case-sensitive), so folding can only ever refuse more */
	bool nocase = r->info.action == POLICY_BLOCK;
	for (size_t i = 0; i < r->info.n_paths; i++) {
		size_t n = r->path_len[i];
		if (r->path_glob[i]) {
			if (glob_match(r->paths[i], path, plen, nocase))
				return YES;
		} else if (plen >= n && (nocase ? strncasecmp(path, r->paths[i], n) == 0
						: memcmp(path, r->paths[i], n) == 0)) {
			return YES;
		}
	}
	return NO;
}

void policy_decide_trace(const struct policy *p, const struct policy_request *req,
			 struct policy_decision *ret, policy_trace_fn fn, void *userdata)
{
	char h[HOST_BUF];
	char pbuf[MAX_REQ_PATH];
	const char *path = NULL;
	size_t plen = 0;
	bool ambiguous = false;

	*ret = (struct policy_decision){ .action = POLICY_BLOCK,
					 .rule = "invalid-host",
					 .layer = POLICY_LAYER_DEFAULT };
	if (!req->host || host_normalize(req->host, strnlen(req->host, HOST_BUF), h) < 0)
		return;
	size_t hl = strlen(h);
	bool is_ip = strchr(h, ':') || is_ipv4(h);
	if (req->path)
		path_prepare(req->path, pbuf, &path, &plen, &ambiguous);

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		enum policy_match m;
		enum tri ht, pt, mt = NO, ph = NO;
		if ((ht = host_match(r, h, hl, is_ip, p->wild)) == NO)
			m = POLICY_MATCH_NO_HOST;
		else if (ht == UNKNOWN)
			m = POLICY_MATCH_TOO_DEEP;
		else if ((pt = port_match(r, req->port)) == NO)
			m = POLICY_MATCH_NO_PORT;
		else if ((mt = method_match(r, req->method)) == NO)
			m = POLICY_MATCH_NO_METHOD;
		else if ((ph = path_match(r, path, plen, ambiguous)) == NO)
			m = POLICY_MATCH_NO_PATH;
		else if ((pt == UNKNOWN || mt == UNKNOWN || ph == UNKNOWN) &&
			 r->info.action == POLICY_BLOCK)
			m = POLICY_MATCH_SKIPPED;
		else
			m = POLICY_MATCH_DECIDES;
		if (fn)
			fn(&r->info, m, userdata);
		if (m != POLICY_MATCH_DECIDES)
			continue;
		*ret = (struct policy_decision){
			.action = r->info.action,
			.rule = r->name,
			.layer = r->info.layer,
			.provisional = pt == UNKNOWN || mt == UNKNOWN || ph == UNKNOWN,
		};
		return;
	}
	*ret = (struct policy_decision){ .action = p->def,
					 .rule = "default",
					 .layer = p->def_layer };
}

void policy_decide(const struct policy *p, const struct policy_request *req,
		   struct policy_decision *ret)
{
	policy_decide_trace(p, req, ret, NULL, NULL);
}

/* ---- accessors ---- */

size_t policy_n_rules(const struct policy *p)
{
	return p->n_rules;
}

const struct policy_rule_info *policy_rule(const struct policy *p, size_t i)
{
	return i < p->n_rules ? &p->rules[i].info : NULL;
}

enum policy_action policy_default_action(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->def_layer;
	return p->def;
}

unsigned policy_wildcard_max_labels(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->wild_layer;
	return p->wild;
}

const char *const *policy_warnings(const struct policy *p)
{
	return p->warnings ? (const char *const *)p->warnings : empty_strv;
}

const char *policy_upstream_ca_file(const struct policy *p)
{
	return p->ca_file;
}

enum policy_layer policy_upstream_ca_layer(const struct policy *p)
{
	return p->ca_layer;
}

size_t policy_n_overrides(const struct policy *p)
{
	return p->n_ovr;
}

const struct policy_override_info *policy_override(const struct policy *p, size_t i)
{
	return i < p->n_ovr ? &p->ovr[i].info : NULL;
}

int policy_upstream_override(const struct policy *p, const char *host, uint16_t port,
			     char *ret_connect, size_t cap)
{
	char h[HOST_BUF];
	if (!host || host_normalize(host, strnlen(host, HOST_BUF), h) < 0)
		return -ENOENT;
	for (size_t i = 0; i < p->n_ovr; i++) {
		const struct override *o = &p->ovr[i];
		if (o->info.port != port || !streq(o->host, h))
			continue;
		size_t n = strlen(o->connect);
		if (!ret_connect || n >= cap)
			return -ENOBUFS;
		memcpy(ret_connect, o->connect, n + 1);
		return 0;
	}
	return -ENOENT;
}

void policy_decide_tool(const struct policy *p, const char *server, const char *tool,
			struct policy_tool_decision *ret)
{
	server = server ? server : "";
	tool = tool ? tool : "";
	for (size_t i = 0; i < p->n_trules; i++) {
		const struct tool_rule *r = &p->trules[i];
		if (glob_match(r->server, server, strlen(server), false) &&
		    glob_match(r->tool, tool, strlen(tool), false)) {
			*ret = (struct policy_tool_decision){ .action = r->info.action,
							      .rule = r->name,
							      .layer = r->info.layer };
			return;
		}
	}
	*ret = (struct policy_tool_decision){ .action = p->tdef,
					      .rule = "default",
					      .layer = p->tdef_layer };
}

size_t policy_n_tool_rules(const struct policy *p)
{
	return p->n_trules;
}

const struct policy_tool_rule_info *policy_tool_rule(const struct policy *p, size_t i)
{
	return i < p->n_trules ? &p->trules[i].info : NULL;
}

enum policy_action policy_tool_default(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->tdef_layer;
	return p->tdef;
}
