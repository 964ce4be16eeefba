/* policy-load.c - load the layered egress policy: parse, check, merge, watch the files.
 *
 * Trust boundary: the policy files are the host user's (user.toml) and the administrator's
 * (corp.toml) own text, but they are parsed as hostile input anyway (strict TOML, every size and
 * count capped, every error one line with file:line, never a crash): a typo must not open the
 * network. Rule paths are normalised when they are loaded exactly as policy.c normalises request
 * paths.
 *
 * Loading parses each layer into rules and settings, merges them (corp, user, defaults; corp
 * settings locked) and sorts the rules once into evaluation order (policy.c then walks them).
 * Line numbers for messages come from the TOML tree's positions (toml_offset), so a message
 * names the line of the very value it is about. [[tool_rule]] tables are parsed and merged by
 * policy-tool.c with the helpers here.
 *
 * Threads: loading is self-contained; a loaded policy is read-only and may be shared.
 */
#include "policy-internal.h"

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

static const char *const empty_strv[] = { NULL };

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
unsigned policy_where(const struct layer *l, const char *sect, size_t idx, const char *key,
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
const char *policy_shown(const char *s, char buf[static 72])
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

bool policy_has_ctl(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

/* The failures below return -EBADMSG through a macro: the static analyzer does not follow variadic
 * calls and would otherwise take their result for a possible success. */
#define lfail(...)                      \
	({                              \
		lfail_msg(__VA_ARGS__); \
		-EBADMSG;               \
	})
static void lfail_msg(struct layer *l, unsigned line, const char *fmt, ...) _printf_(3, 4);
static void lfail_msg(struct layer *l, unsigned line, const char *fmt, ...)
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
}

/* lfail() at the line of sect[idx].key, located only now that there is a message. */
int policy_kfail(struct layer *l, const char *sect, size_t idx, const char *key, const char *fmt,
		 ...) _printf_(5, 6);
int policy_kfail(struct layer *l, const char *sect, size_t idx, const char *key, const char *fmt,
		 ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return lfail(l, policy_where(l, sect, idx, key, NULL), "%s", msg);
}

int policy_warn(struct policy *p, const char *fmt, ...) _printf_(2, 3);
int policy_warn(struct policy *p, const char *fmt, ...)
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
bool policy_str_is(const struct toml_value *v, const char *want)
{
	const char *s;
	size_t n;
	return toml_get_string(v, &s, &n) == 0 && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Copy of a TOML string value that must be free of NULs and control characters. */
int policy_get_text(struct layer *l, const struct toml_value *v, size_t max, const char **ret,
		    const char *what, const char *sect, size_t idx, const char *key)
{
	const char *s;
	size_t n;
	if (toml_get_string(v, &s, &n) < 0)
		return lfail(l, policy_where(l, sect, idx, key, NULL),
			     "%s: expected a string, got %s", what, toml_type_name(toml_type(v)));
	if (n > max)
		return lfail(l, policy_where(l, sect, idx, key, NULL), "%s: longer than %zu bytes",
			     what, max);
	if (policy_has_ctl(s, n))
		return lfail(l, policy_where(l, sect, idx, key, NULL),
			     "%s: contains a control character", what);
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

bool policy_rule_name_ok(const char *s)
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

#define rfail(...)                      \
	({                              \
		rfail_msg(__VA_ARGS__); \
		-EBADMSG;               \
	})
static void rfail_msg(struct rctx *c, const char *key, const char *elem, const char *fmt, ...)
	_printf_(4, 5);
static void rfail_msg(struct rctx *c, const char *key, const char *elem, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	unsigned line = policy_where(c->l, "rule", c->idx, key, elem);
	if (key)
		lfail_msg(c->l, line, "%s: %s: %s", c->label, key, msg);
	else
		lfail_msg(c->l, line, "%s: %s", c->label, msg);
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
	if (policy_has_ctl(s, n))
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
			if (policy_host_normalize(s + 2, strlen(s + 2), norm + 2) < 0 ||
			    strchr(norm, ':') || policy_is_ipv4(norm + 2))
				return rfail(c, "hosts", s,
					     "'%s' is not a host pattern: after \"*.\" comes a DNS "
					     "name",
					     s);
		} else if (policy_host_normalize(s, strlen(s), norm) < 0) {
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
		if (j + 2 >= len || policy_hex_digit(s[j + 1]) < 0 ||
		    policy_hex_digit(s[j + 2]) < 0)
			return rfail(c, "paths", s, "'%s': a '%%' not followed by two hex digits",
				     s);
		if (policy_encoded_ambiguous(s + j))
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
		len = policy_path_norm(s, len, norm, &malformed);
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
	if (policy_has_ctl(s, slen))
		return rfail(&c, "name", NULL, "contains a control character");
	if (!policy_rule_name_ok(s))
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
			if (!policy_str_is(v, "allow") && !policy_str_is(v, "block"))
				return rfail(&c, "action", NULL, "must be \"allow\" or \"block\"");
			r->info.action = policy_str_is(v, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			has_action = true;
		} else if (streq(key, "description")) {
			char what[POLICY_MAX_NAME + 32];
			snprintf(what, sizeof(what), "%s: description", c.label);
			k = policy_get_text(l, v, MAX_DESCRIPTION, &s, what, "rule", idx, key);
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
			return rfail(&c, policy_shown(key, b), NULL,
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
		return lfail(l, policy_where(l, "", 0, "rule", NULL),
			     "rule: expected an array of tables ([[rule]]), got %s",
			     toml_type_name(toml_type(v)));
	size_t n = toml_array_size(v);
	if (n > POLICY_MAX_RULES)
		return lfail(l, policy_where(l, "rule", POLICY_MAX_RULES, NULL, NULL),
			     "more than %d rules", POLICY_MAX_RULES);
	if (n == 0)
		return 0;
	_cleanup_free_ unsigned *lines = calloc(n, sizeof(*lines));
	l->rules = calloc(n, sizeof(*l->rules));
	if (!lines || !l->rules)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		lines[i] = policy_where(l, "rule", i, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		struct rule *r = &l->rules[i];
		l->n_rules = i + 1;
		int k = parse_rule(l, i, toml_array_at(v, i), r);
		if (k < 0)
			return k;
		for (size_t j = 0; j < i; j++)
			if (streq(l->rules[j].name, r->name))
				return lfail(l, policy_where(l, "rule", i, "name", NULL),
					     "rule '%s': duplicate rule name (first at line %u)",
					     r->name, lines[j]);
		rule_publish(r, l->id, l->p->src[l->id], lines[i], i);
	}
	return 0;
}

/* ---- settings ---- */

static int parse_policy_table(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_TABLE)
		return policy_kfail(l, "", 0, "policy", "policy: expected a table, got %s",
				    toml_type_name(toml_type(v)));
	for (size_t i = 0; i < toml_table_size(v); i++) {
		const char *key = toml_table_key(v, i, NULL);
		const struct toml_value *e = toml_table_value(v, i);
		char b[72];
		if (streq(key, "wildcard_max_labels")) {
			int64_t n;
			if (toml_get_int(e, &n) < 0 || n < 0 || n > POLICY_MAX_WILDCARD_LABELS)
				return policy_kfail(
					l, "policy", 0, key,
					"policy.wildcard_max_labels: expected an integer "
					"0-%d (0: no limit)",
					POLICY_MAX_WILDCARD_LABELS);
			l->has_wild = true;
			l->wild = (unsigned)n;
			continue;
		}
		if (!streq(key, "default") && !streq(key, "tool_default"))
			return policy_kfail(
				l, "policy", 0, key,
				"policy.%s: unknown key ([policy] has default, tool_default, "
				"wildcard_max_labels)",
				policy_shown(key, b));
		if (!policy_str_is(e, "allow") && !policy_str_is(e, "block"))
			return policy_kfail(l, "policy", 0, key,
					    "policy.%s: must be \"allow\" or \"block\"", key);
		if (streq(key, "tool_default")) {
			l->has_tdef = true;
			l->tdef = policy_str_is(e, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			continue;
		}
		l->has_default = true;
		l->def = policy_str_is(e, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
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
		return s[hn - 1] == ']' && policy_host_normalize(s, hn, h) == 0;
	return !memchr(s, ':', hn) && policy_host_normalize(s, hn, h) == 0;
}

static int parse_override(struct layer *l, size_t idx, const struct toml_value *t,
			  struct override *o)
{
	static const char sect[] = "upstream.override";
	if (toml_type(t) != TOML_TABLE)
		return policy_kfail(l, sect, idx, NULL, "upstream.override #%zu: expected a table",
				    idx + 1);
	int64_t port = 443;
	const char *host = NULL, *connect = NULL;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *key = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		int k;
		char b[72];
		if (streq(key, "host")) {
			k = policy_get_text(l, v, POLICY_MAX_HOST + 1, &host,
					    "upstream.override: host", sect, idx, key);
		} else if (streq(key, "connect")) {
			k = policy_get_text(l, v, MAX_CONNECT, &connect,
					    "upstream.override: connect", sect, idx, key);
			if (k == 0 && !connect_ok(connect))
				k = policy_kfail(
					l, sect, idx, key,
					"upstream.override: connect: '%s' is not \"host:port\" "
					"or \"[v6]:port\"",
					connect);
		} else if (streq(key, "port")) {
			k = 0;
			if (toml_get_int(v, &port) < 0 || port < 1 || port > 65535)
				k = policy_kfail(l, sect, idx, key,
						 "upstream.override: port: expected 1-65535");
		} else {
			k = policy_kfail(
				l, sect, idx, key,
				"upstream.override: %s: unknown key (an override has host, port, "
				"connect)",
				policy_shown(key, b));
		}
		if (k < 0)
			return k;
	}
	char norm[HOST_BUF];
	if (!host || !connect)
		return policy_kfail(l, sect, idx, NULL,
				    "upstream.override #%zu: needs host and connect", idx + 1);
	if (policy_host_normalize(host, strlen(host), norm) < 0)
		return policy_kfail(l, sect, idx, "host",
				    "upstream.override: host: '%s' is not a DNS name or IP address",
				    host);
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
		return policy_kfail(l, "upstream", 0, "override",
				    "upstream.override: expected an array of tables "
				    "([[upstream.override]])");
	size_t n = toml_array_size(e);
	if (n > POLICY_MAX_OVERRIDES)
		return policy_kfail(l, "upstream", 0, "override",
				    "upstream.override: more than %d entries",
				    POLICY_MAX_OVERRIDES);
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
				return policy_kfail(
					l, "upstream.override", j, "host",
					"upstream.override: %s port %u is overridden twice",
					l->ovr[j].host, l->ovr[j].info.port);
	}
	return 0;
}

static int parse_upstream(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_TABLE)
		return policy_kfail(l, "", 0, "upstream", "upstream: expected a table, got %s",
				    toml_type_name(toml_type(v)));
	for (size_t i = 0; i < toml_table_size(v); i++) {
		const char *key = toml_table_key(v, i, NULL);
		const struct toml_value *e = toml_table_value(v, i);
		char b[72];
		int k;
		if (streq(key, "ca_file")) {
			const char *s;
			k = policy_get_text(l, e, MAX_CA_PATH, &s, "upstream.ca_file", "upstream",
					    0, key);
			if (k < 0)
				return k;
			if (s[0] != '/')
				return policy_kfail(
					l, "upstream", 0, key,
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
			return policy_kfail(
				l, "upstream", 0, key,
				"upstream.%s: unknown key ([upstream] has ca_file, override)",
				policy_shown(key, b));
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
		policy_tool_rule_done(&l->trules[i]);
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
			k = policy_parse_tool_rules(l, v);
		else if (streq(key, "upstream"))
			k = parse_upstream(l, v);
		else {
			char b[72];
			k = lfail(l, policy_where(l, "", 0, key, NULL),
				  "%s: unknown key (a policy file has [policy], [[rule]], "
				  "[[tool_rule]], [upstream])",
				  policy_shown(key, b));
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
		k = policy_warn(
			p, "%s:%u: policy.default is locked by %s; the user value is ignored",
			user->name, policy_where(user, "policy", 0, "default", NULL), corp->name);
	if (k == 0 && corp->has_wild && user->has_wild)
		k = policy_warn(
			p,
			"%s:%u: policy.wildcard_max_labels is locked by %s; the user value is "
			"ignored",
			user->name, policy_where(user, "policy", 0, "wildcard_max_labels", NULL),
			corp->name);
	if (k == 0 && corp->has_ca && user->has_ca)
		k = policy_warn(
			p, "%s:%u: upstream.ca_file is locked by %s; the user value is ignored",
			user->name, policy_where(user, "upstream", 0, "ca_file", NULL), corp->name);
	if (k == 0 && corp->has_ovr && user->has_ovr)
		k = policy_warn(
			p,
			"%s:%u: upstream.override is locked by %s; the user's overrides are "
			"ignored",
			user->name, policy_where(user, "upstream", 0, "override", NULL),
			corp->name);
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
		k = policy_merge_tools(p, ls);
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
		policy_tool_rule_done(&p->trules[i]);
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
	    policy_warn(
		    p,
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
