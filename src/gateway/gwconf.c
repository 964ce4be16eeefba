/* gwconf.c - parse the MCP gateway's configuration file (gwconf.h).
 *
 * Trust boundary: the file is the host user's (trusted, but checked strictly so that a typo is
 * an error, not a silently ignored server). Pure; the caller's thread.
 */
#include "gwconf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdutil.h"
#include "gwcheck.h"
#include "macro.h"
#include "strv.h"
#include "toml.h"

struct pctx {
	const char *text;
	size_t len;
	char *err;
	size_t errlen;
};

/* fail() is -EBADMSG through a macro: the static analyzer does not follow variadic calls and would
 * otherwise take their result for a possible success. */
#define fail(...)                      \
	({                             \
		fail_msg(__VA_ARGS__); \
		-EBADMSG;              \
	})
static void fail_msg(struct pctx *c, const struct toml_value *at, const char *fmt, ...)
	_printf_(3, 4);
static void fail_msg(struct pctx *c, const struct toml_value *at, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->err && c->errlen) {
		unsigned line = at ? toml_line_at(c->text, c->len, toml_offset(at)) : 0;
		if (line)
			snprintf(c->err, c->errlen, "line %u: %s", line, msg);
		else
			snprintf(c->err, c->errlen, "%s", msg);
	}
}

static bool clean(const char *s, size_t n)
{
	if (n > GWCONF_MAX_STR)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static int get_str(struct pctx *c, const struct toml_value *v, const char *what, char **ret)
{
	const char *s;
	size_t n;
	if (toml_get_string(v, &s, &n) < 0)
		return fail(c, v, "%s: expected a string", what);
	if (!clean(s, n) || n == 0)
		return fail(c, v, "%s: empty, too long or has control characters", what);
	free(*ret);
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

static int get_timeout(struct pctx *c, const struct toml_value *v, const char *what,
		       uint64_t *ret_ms)
{
	int64_t x;
	if (toml_get_int(v, &x) < 0 || x < 1 || x > 3600)
		return fail(c, v, "%s: expected an integer number of seconds, 1..3600", what);
	*ret_ms = (uint64_t)x * 1000u;
	return 0;
}

static bool header_reserved(const char *name, size_t n)
{
	static const char *const r[] = {
		"accept",	    "content-type",	    "content-length",
		"mcp-session-id",   "mcp-protocol-version", "host",
		"transfer-encoding"
	};
	for (size_t i = 0; i < ELEMENTSOF(r); i++)
		if (strlen(r[i]) == n && strncasecmp(r[i], name, n) == 0)
			return true;
	return false;
}

static bool header_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return false;
	return true;
}

/* A table of string values into "K<sep>V" entries. */
static int get_map(struct pctx *c, const struct toml_value *v, const char *what, const char *sep,
		   bool headers, char ***ret)
{
	if (toml_type(v) != TOML_TABLE)
		return fail(c, v, "%s: expected a table", what);
	if (toml_table_size(v) > GWCONF_MAX_ARGS)
		return fail(c, v, "%s: more than %u entries", what, GWCONF_MAX_ARGS);
	for (size_t i = 0; i < toml_table_size(v); i++) {
		size_t kl;
		const char *k = toml_table_key(v, i, &kl);
		const char *s;
		size_t n;
		if (toml_get_string(toml_table_value(v, i), &s, &n) < 0 || !clean(s, n))
			return fail(c, v, "%s.%s: expected a string without control characters",
				    what, k);
		if (kl == 0 || kl != strlen(k) || strchr(k, '=') || !clean(k, kl))
			return fail(c, v, "%s: a bad key", what);
		if (headers && (!header_name_ok(k) || header_reserved(k, kl)))
			return fail(c, v, "%s.%s: not a header name the gateway lets you set", what,
				    k);
		if (strv_pushf(ret, "%s%s%s", k, sep, s) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int parse_server(struct pctx *c, const char *name, const struct toml_value *t,
			uint64_t def_timeout, struct gwconf_server *srv, bool *ret_enabled)
{
	char what[GW_SERVER_NAME_MAX + 32];
	int r;
	*ret_enabled = true;
	if (!gw_server_name_ok(name) || streq(name, GW_BUILTIN_SERVER))
		return fail(c, t,
			    "servers.%.64s: a server name is 1-%u of A-Z a-z 0-9 _ - without "
			    "\"__\", not \"%s\"",
			    name, GW_SERVER_NAME_MAX, GW_BUILTIN_SERVER);
	if (toml_type(t) != TOML_TABLE)
		return fail(c, t, "servers.%s: expected a table", name);
	srv->name = strdup(name);
	if (!srv->name)
		return -ENOMEM;
	srv->timeout_ms = def_timeout;
	_cleanup_free_ char *command = NULL;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *k = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		snprintf(what, sizeof(what), "servers.%s.%s", name, k);
		if (streq(k, "command")) {
			r = get_str(c, v, what, &command);
		} else if (streq(k, "url")) {
			r = get_str(c, v, what, &srv->url);
			if (r == 0 && strncmp(srv->url, "http://", 7) != 0 &&
			    strncmp(srv->url, "https://", 8) != 0)
				r = fail(c, v, "%s: expected an http:// or https:// URL", what);
		} else if (streq(k, "cwd")) {
			r = get_str(c, v, what, &srv->cwd);
		} else if (streq(k, "args")) {
			r = 0; /* below, once command is known */
			if (toml_type(v) != TOML_ARRAY || toml_array_size(v) > GWCONF_MAX_ARGS)
				r = fail(c, v, "%s: expected an array of at most %u strings", what,
					 GWCONF_MAX_ARGS);
		} else if (streq(k, "env")) {
			r = get_map(c, v, what, "=", false, &srv->env);
		} else if (streq(k, "headers")) {
			r = get_map(c, v, what, ": ", true, &srv->headers);
		} else if (streq(k, "timeout")) {
			r = get_timeout(c, v, what, &srv->timeout_ms);
		} else if (streq(k, "enabled")) {
			r = toml_get_bool(v, ret_enabled) < 0
				    ? fail(c, v, "%s: expected true or false", what)
				    : 0;
		} else {
			r = fail(c, v,
				 "%s: unknown key (a server has command, args, env, cwd, url, "
				 "headers, timeout, enabled)",
				 what);
		}
		if (r < 0)
			return r;
	}
	if (!!command == !!srv->url)
		return fail(c, t, "servers.%s: give exactly one of 'command' and 'url'", name);
	if (srv->url && (srv->env || srv->cwd || toml_table_get(t, "args")))
		return fail(c, t, "servers.%s: args, env and cwd are for 'command' servers", name);
	if (command && srv->headers)
		return fail(c, t, "servers.%s: headers are for 'url' servers", name);
	if (command) {
		if (strv_push(&srv->argv, command) < 0)
			return -ENOMEM;
		const struct toml_value *a = toml_table_get(t, "args");
		for (size_t i = 0; i < toml_array_size(a); i++) {
			const struct toml_value *e = toml_array_at(a, i);
			const char *s;
			size_t n;
			if (toml_get_string(e, &s, &n) < 0 || !clean(s, n) || strlen(s) != n)
				return fail(c, e, "servers.%s.args: expected strings", name);
			if (strv_push(&srv->argv, s) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

static void server_done(struct gwconf_server *s)
{
	free(s->name);
	strv_free(s->argv);
	strv_free(s->env);
	free(s->cwd);
	free(s->url);
	strv_free(s->headers);
}

void gwconf_free(struct gwconf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_servers; i++)
		server_done(&c->servers[i]);
	free(c->servers);
	free(c->workspace);
	free(c);
}

struct gwconf *gwconf_new_default(void)
{
	struct gwconf *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->builtin = true;
	c->call_timeout_ms = GWCONF_DEFAULT_TIMEOUT_MS;
	c->max_pending = GWCONF_DEFAULT_MAX_PENDING;
	return c;
}

int gwconf_parse(const char *text, size_t len, struct gwconf **ret, char *err, size_t errlen)
{
	struct pctx c = { .text = text, .len = len, .err = err, .errlen = errlen };
	const struct toml_limits lim = { .max_input = GWCONF_MAX_FILE, .max_depth = 8 };
	struct toml_value *root = NULL;
	struct toml_error te = { 0 };
	struct gwconf *conf = NULL;
	int r;

	if (err && errlen)
		err[0] = 0;
	if (len > GWCONF_MAX_FILE)
		return fail(&c, NULL, "larger than %u bytes", GWCONF_MAX_FILE);
	r = toml_parse_limits(text, len, &lim, &root, &te);
	if (r == -EBADMSG) {
		if (err && errlen)
			snprintf(err, errlen, "line %u: %s (column %u)", te.line, te.msg,
				 te.column);
		return r;
	}
	if (r < 0)
		return r;
	conf = gwconf_new_default();
	if (!conf) {
		toml_free(root);
		return -ENOMEM;
	}
	/* limits first: servers take their default timeout from it */
	const struct toml_value *lt = toml_table_get(root, "limits");
	for (size_t i = 0; r == 0 && i < toml_table_size(lt); i++) {
		const char *k = toml_table_key(lt, i, NULL);
		const struct toml_value *v = toml_table_value(lt, i);
		int64_t x;
		if (streq(k, "call_timeout"))
			r = get_timeout(&c, v, "limits.call_timeout", &conf->call_timeout_ms);
		else if (streq(k, "max_pending"))
			r = toml_get_int(v, &x) < 0 || x < 1 || x > 1024
				    ? fail(&c, v, "limits.max_pending: expected 1..1024")
				    : (conf->max_pending = (unsigned)x, 0);
		else
			r = fail(&c, v, "limits.%s: unknown key (call_timeout, max_pending)", k);
	}
	if (r == 0 && lt && toml_type(lt) != TOML_TABLE)
		r = fail(&c, lt, "limits: expected a table");
	for (size_t i = 0; r == 0 && i < toml_table_size(root); i++) {
		const char *k = toml_table_key(root, i, NULL);
		const struct toml_value *v = toml_table_value(root, i);
		if (streq(k, "limits"))
			continue;
		if (streq(k, "servers")) {
			size_t n = toml_table_size(v);
			if (toml_type(v) != TOML_TABLE || n > GWCONF_MAX_SERVERS) {
				r = fail(&c, v, "servers: expected a table of at most %u servers",
					 GWCONF_MAX_SERVERS);
				break;
			}
			conf->servers = calloc(n ? n : 1, sizeof(*conf->servers));
			if (!conf->servers) {
				r = -ENOMEM;
				break;
			}
			for (size_t j = 0; r == 0 && j < n; j++) {
				bool enabled;
				struct gwconf_server *s = &conf->servers[conf->n_servers];
				r = parse_server(&c, toml_table_key(v, j, NULL),
						 toml_table_value(v, j), conf->call_timeout_ms, s,
						 &enabled);
				conf->n_servers++;
				if (r == 0 && !enabled) {
					server_done(s);
					memset(s, 0, sizeof(*s));
					conf->n_servers--;
				}
			}
		} else if (streq(k, "builtin")) {
			if (toml_type(v) != TOML_TABLE) {
				r = fail(&c, v, "builtin: expected a table");
				break;
			}
			for (size_t j = 0; r == 0 && j < toml_table_size(v); j++) {
				const char *bk = toml_table_key(v, j, NULL);
				const struct toml_value *bv = toml_table_value(v, j);
				if (streq(bk, "enabled"))
					r = toml_get_bool(bv, &conf->builtin) < 0
						    ? fail(&c, bv, "builtin.enabled: true or false")
						    : 0;
				else if (streq(bk, "workspace")) {
					r = get_str(&c, bv, "builtin.workspace", &conf->workspace);
					if (r == 0 && conf->workspace[0] != '/')
						r = fail(&c, bv,
							 "builtin.workspace: expected an absolute "
							 "path");
				} else
					r = fail(&c, bv,
						 "builtin.%s: unknown key (enabled, workspace)",
						 bk);
			}
		} else {
			r = fail(&c, v, "%s: unknown key (servers, builtin, limits)", k);
		}
	}
	toml_free(root);
	if (r < 0) {
		gwconf_free(conf);
		return r;
	}
	*ret = conf;
	return 0;
}

int gwconf_load(const char *path, struct gwconf **ret, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	char e[400] = "";
	int r = read_file_small(path, GWCONF_MAX_FILE, &text, &len);
	if (r < 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	r = gwconf_parse(text, len, ret, e, sizeof(e));
	if (r < 0 && err && errlen)
		snprintf(err, errlen, "%s: %s", path, e[0] ? e : strerror(-r));
	return r;
}
