/* imgconfig.c - load and check an image configuration directory (see imgconfig.h).
 *
 * Two passes: every *.toml file of the directory is read (capped) and parsed; then each known
 * top-level table is checked against the schema below, wherever it was found. A problem appends a
 * diagnostic (code, file, line, message) and the check goes on, so one run reports everything;
 * lines come from toml_offset() of the offending value (or of the table that lacks a key).
 *
 * Trust boundary: the files are parsed as hostile text (toml.h's caps plus ours on every list,
 * string and table); names, package specs and paths are checked against strict character sets
 * before anything can reach an argv or a path in the image tree. Caller's thread.
 */
#include "imgconfig.h"

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "parse.h"
#include "rootfstree.h"
#include "strv.h"
#include "toml.h"
#include "vmlimits.h"

struct src {
	char *name; /* base name */
	char *text;
	size_t len;
	struct toml_value *root;
};

struct ctx {
	struct imgcfg_diags *d;
	const struct src *src; /* the file being checked */
	int errors;
	int oom;
};

/* ---- diagnostics ---- */

void imgcfg_diags_done(struct imgcfg_diags *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++) {
		free(d->v[i].file);
		free(d->v[i].msg);
	}
	free(d->v);
	memset(d, 0, sizeof(*d));
}

_printf_(4, 5) static void diag(struct ctx *x, const char *code, const struct toml_value *at,
				const char *fmt, ...)
{
	struct imgcfg_diags *d = x->d;
	va_list ap;
	char *msg = NULL;

	x->errors++;
	if (d->n == d->alloc) {
		size_t na = d->alloc ? d->alloc * 2 : 16;
		struct imgcfg_diag *nv = realloc(d->v, na * sizeof(*nv));
		if (!nv) {
			x->oom = 1;
			return;
		}
		d->v = nv;
		d->alloc = na;
	}
	va_start(ap, fmt);
	int r = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (r < 0) {
		x->oom = 1;
		return;
	}
	struct imgcfg_diag *g = &d->v[d->n];
	memset(g, 0, sizeof(*g));
	snprintf(g->code, sizeof(g->code), "%s", code);
	g->msg = msg;
	if (x->src) {
		g->file = strdup(x->src->name);
		if (!g->file) {
			free(msg);
			x->oom = 1;
			return;
		}
		g->line = toml_line_at(x->src->text, x->src->len, toml_offset(at));
	}
	d->n++;
}

/* ---- character-set checks ---- */

static int all_in(const char *s, const char *set)
{
	return strspn(s, set) == strlen(s);
}

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGIT "0123456789"

int imgcfg_deb_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 2 && n <= ROOTFS_PACKAGE_MAX_LEN && strchr(LOWER DIGIT, s[0]) &&
	       all_in(s, LOWER DIGIT "+.-");
}

/* One component of an npm name (the scope or the name proper). */
static int npm_part_valid(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[0] == '_')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!strchr(LOWER DIGIT "-._~", s[i]) || !s[i])
			return 0;
	return 1;
}

int imgcfg_npm_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 214)
		return 0;
	if (s[0] != '@')
		return npm_part_valid(s, n);
	const char *sl = strchr(s, '/');
	if (!sl)
		return 0;
	return npm_part_valid(s + 1, (size_t)(sl - s - 1)) &&
	       npm_part_valid(sl + 1, strlen(sl + 1));
}

int imgcfg_npm_selector_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 1 && n <= 64 && s[0] != '-' && all_in(s, LOWER UPPER DIGIT ".^~*<>=_-");
}

int imgcfg_domain_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0, labels = 0;
	if (n == 0 || n > 253)
		return 0;
	if (strncmp(s, "*.", 2) == 0)
		s += 2;
	if (strchr(s, '*'))
		return 0;
	for (const char *p = s;;) {
		size_t l = strcspn(p, ".");
		if (l == 0 || l > 63 || p[0] == '-' || p[l - 1] == '-')
			return 0;
		for (size_t i = 0; i < l; i++)
			if (!strchr(LOWER DIGIT "-", p[i]))
				return 0;
		labels++;
		if (!p[l])
			break;
		p += l + 1;
	}
	return labels >= 2;
}

int imgcfg_env_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 1 && n <= 128 && !strchr(DIGIT, s[0]) && all_in(s, UPPER LOWER DIGIT "_");
}

static int env_value_valid(const char *s, size_t len)
{
	return len <= 4096 && strlen(s) == len && !strchr(s, '\n') && !strchr(s, '\r');
}

/* Seeded files go under /root, /etc or /usr/local, by a plain path. */
int imgcfg_seed_path_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 2 || n > 255 || s[0] != '/' || s[n - 1] == '/' ||
	    !all_in(s, LOWER UPPER DIGIT "._/-") || strstr(s, "//"))
		return 0;
	if (strncmp(s, "/root/", 6) != 0 && strncmp(s, "/etc/", 5) != 0 &&
	    strncmp(s, "/usr/local/", 11) != 0)
		return 0;
	for (const char *p = s; *p;) {
		p++;
		size_t l = strcspn(p, "/");
		if ((l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		p += l;
	}
	return 1;
}

/* Image names are directory names (same rule as capsem-builder image --name). */
static int image_name_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= 64 && s[0] != '.' && all_in(s, LOWER UPPER DIGIT "._-");
}

/* Provider and MCP server names, CLI names. */
static int short_name_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= 32 && strchr(LOWER DIGIT, s[0]) && all_in(s, LOWER DIGIT "._-");
}

/* ---- typed getters that report ---- */

/* The keys of tbl must be in allowed (NULL-terminated); others get code. */
static void check_keys(struct ctx *x, const struct toml_value *tbl, const char *where,
		       const char *const *allowed, const char *code)
{
	for (size_t i = 0; i < toml_table_size(tbl); i++) {
		const char *k = toml_table_key(tbl, i, NULL);
		int ok = 0;
		for (size_t j = 0; allowed[j]; j++)
			if (streq(k, allowed[j]))
				ok = 1;
		if (!ok)
			diag(x, code, toml_table_value(tbl, i), "unknown key '%s' in %s", k, where);
	}
}

/* A string under key: 1 found (*ret points into the tree), 0 absent (reported when required),
 * -1 malformed (reported). */
static int get_str(struct ctx *x, const struct toml_value *tbl, const char *where, const char *key,
		   int required, const char **ret, size_t *ret_len)
{
	const struct toml_value *v = toml_table_get(tbl, key);
	size_t len = 0;
	if (!v) {
		if (required)
			diag(x, IMGCFG_E_MISSING, tbl, "%s: missing required key '%s'", where, key);
		return 0;
	}
	if (toml_get_string(v, ret, &len) < 0) {
		diag(x, IMGCFG_E_TYPE, v, "%s.%s: expected a string, got %s", where, key,
		     toml_type_name(toml_type(v)));
		return -1;
	}
	if (len == 0 || strlen(*ret) != len) {
		diag(x, IMGCFG_E_EMPTY, v, "%s.%s: must not be empty (or contain NUL)", where, key);
		return -1;
	}
	if (ret_len)
		*ret_len = len;
	return 1;
}

static int get_bool(struct ctx *x, const struct toml_value *tbl, const char *where, const char *key,
		    bool *ret)
{
	const struct toml_value *v = toml_table_get(tbl, key);
	if (!v)
		return 0;
	if (toml_get_bool(v, ret) < 0) {
		diag(x, IMGCFG_E_TYPE, v, "%s.%s: expected true or false, got %s", where, key,
		     toml_type_name(toml_type(v)));
		return -1;
	}
	return 1;
}

static int dup_into(struct ctx *x, char **dst, const char *s)
{
	if (!s)
		return 0;
	*dst = strdup(s);
	if (!*dst)
		x->oom = 1;
	return *dst ? 0 : -ENOMEM;
}

typedef int (*item_check_fn)(const char *s);

/* An array of strings under key into a strv; each item checked by ok (NULL: any non-empty),
 * failures get bad_code. The array may be absent (0) unless required. */
static int get_str_array(struct ctx *x, const struct toml_value *tbl, const char *where,
			 const char *key, int required, size_t max, item_check_fn ok,
			 const char *bad_code, const char *what, char ***ret)
{
	const struct toml_value *a = toml_table_get(tbl, key);
	if (!a) {
		if (required)
			diag(x, IMGCFG_E_MISSING, tbl, "%s: missing required key '%s'", where, key);
		return 0;
	}
	if (toml_type(a) != TOML_ARRAY) {
		diag(x, IMGCFG_E_TYPE, a, "%s.%s: expected an array of strings, got %s", where, key,
		     toml_type_name(toml_type(a)));
		return -1;
	}
	size_t n = toml_array_size(a);
	if (n > max) {
		diag(x, IMGCFG_E_TOO_MANY, a, "%s.%s: %zu entries, at most %zu", where, key, n,
		     max);
		return -1;
	}
	if (n == 0 && required) {
		diag(x, IMGCFG_E_EMPTY, a, "%s.%s: must not be empty", where, key);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *e = toml_array_at(a, i);
		const char *s;
		size_t len;
		if (toml_get_string(e, &s, &len) < 0) {
			diag(x, IMGCFG_E_TYPE, e, "%s.%s[%zu]: expected a string, got %s", where,
			     key, i, toml_type_name(toml_type(e)));
			continue;
		}
		if (len == 0 || strlen(s) != len || (ok && !ok(s))) {
			diag(x, bad_code, e, "%s.%s: '%.80s' is not %s", where, key, s, what);
			continue;
		}
		if (strv_push(ret, s) < 0)
			return x->oom = 1, -ENOMEM;
	}
	return 1;
}

/* A table of string values (environment variables) into "K=V" entries. */
static int get_env(struct ctx *x, const struct toml_value *tbl, const char *where, char ***ret)
{
	const struct toml_value *t = toml_table_get(tbl, "env");
	if (!t)
		return 0;
	if (toml_type(t) != TOML_TABLE) {
		diag(x, IMGCFG_E_TYPE, t, "%s.env: expected a table of strings, got %s", where,
		     toml_type_name(toml_type(t)));
		return -1;
	}
	if (toml_table_size(t) > IMGCFG_MAX_ENV) {
		diag(x, IMGCFG_E_TOO_MANY, t, "%s.env: more than %d variables", where,
		     IMGCFG_MAX_ENV);
		return -1;
	}
	for (size_t i = 0; i < toml_table_size(t); i++) {
		size_t klen, vlen;
		const char *k = toml_table_key(t, i, &klen), *s;
		const struct toml_value *v = toml_table_value(t, i);
		if (toml_get_string(v, &s, &vlen) < 0) {
			diag(x, IMGCFG_E_TYPE, v, "%s.env.%s: expected a string, got %s", where, k,
			     toml_type_name(toml_type(v)));
			continue;
		}
		if (strlen(k) != klen || !imgcfg_env_name_valid(k)) {
			diag(x, IMGCFG_E_ENV, v, "%s.env: '%.80s' is not a variable name", where,
			     k);
			continue;
		}
		if (!env_value_valid(s, vlen)) {
			diag(x, IMGCFG_E_ENV, v,
			     "%s.env.%s: the value must be one line of at most 4096 bytes", where,
			     k);
			continue;
		}
		if (strv_pushf(ret, "%s=%s", k, s) < 0)
			return x->oom = 1, -ENOMEM;
	}
	return 1;
}

/* ---- the tables ---- */

static void check_image(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "name", "description", "version", NULL };
	const char *s;
	check_keys(x, t, "[image]", keys, IMGCFG_E_UNKNOWN_KEY);
	if (get_str(x, t, "image", "name", 1, &s, NULL) > 0) {
		if (!image_name_valid(s))
			diag(x, IMGCFG_E_NAME, toml_table_get(t, "name"),
			     "image.name: '%.80s': use 1-64 of [A-Za-z0-9._-], not starting with "
			     "'.'",
			     s);
		else
			dup_into(x, &c->name, s);
	}
	if (get_str(x, t, "image", "description", 0, &s, NULL) > 0)
		dup_into(x, &c->description, s);
	if (get_str(x, t, "image", "version", 0, &s, NULL) > 0)
		dup_into(x, &c->version, s);
}

static void check_build(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "arch", "suite", "compression", "node", "npm", NULL };
	const char *s;
	check_keys(x, t, "[build]", keys, IMGCFG_E_UNKNOWN_KEY);
	if (get_str(x, t, "build", "arch", 1, &s, NULL) > 0) {
		if (!streq(s, "x86_64"))
			diag(x, IMGCFG_E_UNSUPPORTED, toml_table_get(t, "arch"),
			     "build.arch: '%.40s' is not supported (x86_64 only)", s);
		else
			dup_into(x, &c->arch, s);
	}
	if (get_str(x, t, "build", "suite", 1, &s, NULL) > 0) {
		if (!rootfs_suite_valid(s))
			diag(x, IMGCFG_E_UNSUPPORTED, toml_table_get(t, "suite"),
			     "build.suite: '%.40s' is not a Debian suite name", s);
		else
			dup_into(x, &c->suite, s);
	}
	if (get_str(x, t, "build", "compression", 1, &s, NULL) > 0) {
		if (!streq(s, "squashfs-zstd") && !streq(s, "erofs-lz4hc") &&
		    !streq(s, "erofs-lz4"))
			diag(x, IMGCFG_E_UNSUPPORTED, toml_table_get(t, "compression"),
			     "build.compression: '%.40s': expected squashfs-zstd, erofs-lz4hc or "
			     "erofs-lz4",
			     s);
		else
			dup_into(x, &c->compression, s);
	}
	if (get_str(x, t, "build", "node", 0, &s, NULL) > 0) {
		if (!rootfs_node_version_valid(s))
			diag(x, IMGCFG_E_VERSION, toml_table_get(t, "node"),
			     "build.node: '%.40s': expected N, N.N or N.N.N with N >= %d", s,
			     ROOTFS_NODE_MIN_MAJOR);
		else
			dup_into(x, &c->node, s);
	}
	if (get_str(x, t, "build", "npm", 0, &s, NULL) > 0) {
		if (!rootfs_suite_valid(s))
			diag(x, IMGCFG_E_VERSION, toml_table_get(t, "npm"),
			     "build.npm: '%.40s' is not an npm version selector", s);
		else
			dup_into(x, &c->npm_version, s);
	}
}

static int npm_spec_valid(const char *s)
{
	_cleanup_free_ char *name = strdup(s);
	if (!name)
		return 0;
	char *at = strrchr(name, '@');
	if (at && at != name) {
		*at = 0;
		if (!imgcfg_npm_selector_valid(at + 1))
			return 0;
	}
	return imgcfg_npm_name_valid(name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_packages(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "apt", "python", "npm", NULL };
	_cleanup_strv_free_ char **apt = NULL, **py = NULL;
	check_keys(x, t, "[packages]", keys, IMGCFG_E_UNKNOWN_KEY);
	get_str_array(x, t, "packages", "apt", 1, IMGCFG_MAX_PACKAGES, imgcfg_deb_name_valid,
		      IMGCFG_E_DEB_NAME, "a Debian package name", &apt);
	get_str_array(x, t, "packages", "python", 0, IMGCFG_MAX_PACKAGES, imgcfg_deb_name_valid,
		      IMGCFG_E_DEB_NAME, "a Debian package name", &py);
	get_str_array(x, t, "packages", "npm", 0, IMGCFG_MAX_PACKAGES, npm_spec_valid,
		      IMGCFG_E_NPM_SPEC, "an npm package (name or name@selector)", &c->npm);
	size_t na = strv_length(apt), np = strv_length(py);
	if (na + np > IMGCFG_MAX_PACKAGES) {
		diag(x, IMGCFG_E_TOO_MANY, t, "packages: %zu apt and python packages, at most %d",
		     na + np, IMGCFG_MAX_PACKAGES);
		return;
	}
	/* one sorted list; a name given twice is a mistake worth telling */
	for (size_t i = 0; i < na + np; i++) {
		const char *p = i < na ? apt[i] : py[i - na];
		int dup = 0;
		for (size_t j = 0; c->apt && c->apt[j]; j++)
			if (streq(c->apt[j], p))
				dup = 1;
		if (dup) {
			diag(x, IMGCFG_E_DUP_PACKAGE, toml_table_get(t, i < na ? "apt" : "python"),
			     "packages: '%s' is listed twice", p);
			continue;
		}
		if (strv_push(&c->apt, p) < 0) {
			x->oom = 1;
			return;
		}
	}
	if (c->apt)
		qsort(c->apt, strv_length(c->apt), sizeof(char *), cmp_str);
	if (c->npm)
		qsort(c->npm, strv_length(c->npm), sizeof(char *), cmp_str);
	c->python = TAKE_PTR(py);
}

static void check_files(struct ctx *x, const struct toml_value *pt, const char *where,
			struct imgcfg_provider *p)
{
	static const char *const keys[] = { "path", "content", "mode", NULL };
	const struct toml_value *a = toml_table_get(pt, "files");
	if (!a)
		return;
	if (toml_type(a) != TOML_ARRAY) {
		diag(x, IMGCFG_E_TYPE, a, "%s.files: expected an array of tables, got %s", where,
		     toml_type_name(toml_type(a)));
		return;
	}
	size_t n = toml_array_size(a);
	if (n > IMGCFG_MAX_SEED_FILES) {
		diag(x, IMGCFG_E_TOO_MANY, a, "%s.files: %zu files, at most %d", where, n,
		     IMGCFG_MAX_SEED_FILES);
		return;
	}
	p->files = calloc(n ? n : 1, sizeof(*p->files));
	if (!p->files) {
		x->oom = 1;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *f = toml_array_at(a, i);
		const char *path, *content;
		size_t clen = 0;
		int64_t mode = 0644;
		char w[96];
		snprintf(w, sizeof(w), "%s.files[%zu]", where, i);
		if (toml_type(f) != TOML_TABLE) {
			diag(x, IMGCFG_E_TYPE, f, "%s: expected a table, got %s", w,
			     toml_type_name(toml_type(f)));
			continue;
		}
		check_keys(x, f, w, keys, IMGCFG_E_UNKNOWN_KEY);
		int rp = get_str(x, f, w, "path", 1, &path, NULL);
		int rc = get_str(x, f, w, "content", 1, &content, &clen);
		const struct toml_value *m = toml_table_get(f, "mode");
		if (m && (toml_get_int(m, &mode) < 0 || mode < 0 || mode > 0777)) {
			diag(x, toml_type(m) == TOML_INTEGER ? IMGCFG_E_FILE : IMGCFG_E_TYPE, m,
			     "%s.mode: expected an integer permission such as 0o644", w);
			continue;
		}
		if (rp <= 0 || rc <= 0)
			continue;
		if (!imgcfg_seed_path_valid(path)) {
			diag(x, IMGCFG_E_FILE, toml_table_get(f, "path"),
			     "%s.path: '%.80s' must be a plain absolute path under /root, /etc or "
			     "/usr/local",
			     w, path);
			continue;
		}
		if (clen > IMGCFG_MAX_SEED_BYTES) {
			diag(x, IMGCFG_E_FILE, toml_table_get(f, "content"),
			     "%s.content: %zu bytes, at most %d", w, clen, IMGCFG_MAX_SEED_BYTES);
			continue;
		}
		struct imgcfg_file *o = &p->files[p->n_files];
		/* a leading newline (the usual ''' layout) is not part of the file */
		if (content[0] == '\n') {
			content++;
			clen--;
		}
		o->path = strdup(path);
		o->content = strndup(content, clen);
		if (!o->path || !o->content) {
			/* not counted: the checks below compare every counted path */
			free(o->path);
			free(o->content);
			*o = (struct imgcfg_file){ 0 };
			x->oom = 1;
			continue;
		}
		o->len = clen;
		o->mode = (unsigned)mode;
		p->n_files++;
	}
}

static void check_provider(struct ctx *x, const char *name, const struct toml_value *pt,
			   struct imgcfg_provider *p)
{
	static const char *const keys[] = { "description", "npm",     "version", "cli",
					    "api_key_env", "domains", "env",	 "files",
					    "enabled",	   NULL };
	char where[64];
	const char *s;
	snprintf(where, sizeof(where), "providers.%.32s", name);
	p->enabled = true;
	dup_into(x, &p->name, name);
	if (!short_name_valid(name))
		diag(x, IMGCFG_E_NAME, pt,
		     "providers: '%.80s' is not a provider name ([a-z0-9._-])", name);
	if (toml_type(pt) != TOML_TABLE) {
		diag(x, IMGCFG_E_TYPE, pt, "%s: expected a table, got %s", where,
		     toml_type_name(toml_type(pt)));
		return;
	}
	check_keys(x, pt, where, keys, IMGCFG_E_PROVIDER_KEY);
	if (get_str(x, pt, where, "description", 0, &s, NULL) > 0)
		dup_into(x, &p->description, s);
	if (get_str(x, pt, where, "npm", 1, &s, NULL) > 0) {
		if (!imgcfg_npm_name_valid(s))
			diag(x, IMGCFG_E_NPM_SPEC, toml_table_get(pt, "npm"),
			     "%s.npm: '%.80s' is not an npm package name", where, s);
		else
			dup_into(x, &p->npm, s);
	}
	if (get_str(x, pt, where, "version", 0, &s, NULL) > 0) {
		if (!imgcfg_npm_selector_valid(s))
			diag(x, IMGCFG_E_NPM_SPEC, toml_table_get(pt, "version"),
			     "%s.version: '%.80s' is not an npm version selector", where, s);
		else
			dup_into(x, &p->version, s);
	}
	if (!p->version)
		dup_into(x, &p->version, "latest");
	if (get_str(x, pt, where, "cli", 1, &s, NULL) > 0) {
		if (!short_name_valid(s))
			diag(x, IMGCFG_E_NAME, toml_table_get(pt, "cli"),
			     "%s.cli: '%.80s' is not a command name ([a-z0-9._-])", where, s);
		else
			dup_into(x, &p->cli, s);
	}
	if (get_str(x, pt, where, "api_key_env", 1, &s, NULL) > 0) {
		if (!imgcfg_env_name_valid(s))
			diag(x, IMGCFG_E_ENV, toml_table_get(pt, "api_key_env"),
			     "%s.api_key_env: '%.80s' is not a variable name", where, s);
		else
			dup_into(x, &p->api_key_env, s);
	}
	get_str_array(x, pt, where, "domains", 1, IMGCFG_MAX_DOMAINS, imgcfg_domain_valid,
		      IMGCFG_E_DOMAIN,
		      "a domain pattern (host.example.com or *.example.com, lowercase)",
		      &p->domains);
	get_env(x, pt, where, &p->env);
	get_bool(x, pt, where, "enabled", &p->enabled);
	check_files(x, pt, where, p);
}

static void check_providers(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	size_t n = toml_table_size(t);
	if (n > IMGCFG_MAX_PROVIDERS) {
		diag(x, IMGCFG_E_TOO_MANY, t, "providers: %zu providers, at most %d", n,
		     IMGCFG_MAX_PROVIDERS);
		return;
	}
	c->providers = calloc(n ? n : 1, sizeof(*c->providers));
	if (!c->providers) {
		x->oom = 1;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *pt = toml_table_value(t, i);
		struct imgcfg_provider *p = &c->providers[c->n_providers++];
		check_provider(x, toml_table_key(t, i, NULL), pt, p);
		/* CLI names and npm packages must be unique across providers */
		for (size_t j = 0; j + 1 < c->n_providers; j++) {
			const struct imgcfg_provider *q = &c->providers[j];
			if (p->cli && q->cli && streq(p->cli, q->cli))
				diag(x, IMGCFG_E_DUP_CLI, toml_table_get(pt, "cli"),
				     "providers.%s.cli: '%s' is also the CLI of providers.%s",
				     p->name, p->cli, q->name);
			if (p->npm && q->npm && streq(p->npm, q->npm))
				diag(x, IMGCFG_E_DUP_PACKAGE, toml_table_get(pt, "npm"),
				     "providers.%s.npm: '%s' is also installed for providers.%s",
				     p->name, p->npm, q->name);
		}
		/* seeded paths must be unique too */
		for (size_t a = 0; a < p->n_files; a++)
			for (size_t j = 0; j < c->n_providers; j++) {
				const struct imgcfg_provider *q = &c->providers[j];
				for (size_t b = 0; b < q->n_files; b++) {
					/* check_files() counts only files with a path */
					assert(p->files[a].path && q->files[b].path);
					if ((j != c->n_providers - 1 || b < a) &&
					    streq(p->files[a].path, q->files[b].path))
						diag(x, IMGCFG_E_FILE,
						     toml_array_at(toml_table_get(pt, "files"), a),
						     "providers.%s.files: '%s' is seeded twice",
						     p->name, p->files[a].path);
				}
			}
	}
}

static void check_vm(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "cpus", "memory", "disk", NULL };
	const struct toml_value *v;
	const char *s;
	int64_t i;
	uint64_t mib;
	check_keys(x, t, "[vm]", keys, IMGCFG_E_UNKNOWN_KEY);
	if ((v = toml_table_get(t, "cpus"))) {
		if (toml_get_int(v, &i) < 0)
			diag(x, IMGCFG_E_TYPE, v, "vm.cpus: expected an integer, got %s",
			     toml_type_name(toml_type(v)));
		else if (i < VM_CPUS_MIN || i > VM_CPUS_MAX)
			diag(x, IMGCFG_E_CPUS, v,
			     "vm.cpus: %lld is out of range (" VM_CPUS_RANGE_TEXT ")",
			     (long long)i);
		else
			c->cpus = (unsigned)i;
	}
	if (get_str(x, t, "vm", "memory", 0, &s, NULL) > 0) {
		if (parse_size_mib(s, VM_MEMORY_MIN_MIB, VM_MEMORY_MAX_MIB, &mib) < 0)
			diag(x, IMGCFG_E_MEMORY, toml_table_get(t, "memory"),
			     "vm.memory: '%.40s': expected a size from " VM_MEMORY_RANGE_TEXT
			     " in whole MiB (e.g. 2G)",
			     s);
		else
			c->memory_mib = mib;
	}
	if (get_str(x, t, "vm", "disk", 0, &s, NULL) > 0) {
		if (parse_size_mib(s, VM_DISK_MIN_MIB, VM_DISK_MAX_MIB, &mib) < 0)
			diag(x, IMGCFG_E_DISK, toml_table_get(t, "disk"),
			     "vm.disk: '%.40s': expected a size from " VM_DISK_RANGE_TEXT
			     " in whole MiB (e.g. 8G)",
			     s);
		else
			c->disk_mib = mib;
	}
}

static void check_environment(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "shell", "banner", "env", "venv", NULL };
	const char *s;
	size_t len;
	check_keys(x, t, "[environment]", keys, IMGCFG_E_UNKNOWN_KEY);
	if (get_str(x, t, "environment", "venv", 0, &s, NULL) > 0) {
		if (strncmp(s, "/root/", 6) != 0 || !imgcfg_seed_path_valid(s))
			diag(x, IMGCFG_E_UNSUPPORTED, toml_table_get(t, "venv"),
			     "environment.venv: '%.80s' must be a plain path under /root", s);
		else
			dup_into(x, &c->venv, s);
	}
	if (get_str(x, t, "environment", "shell", 0, &s, NULL) > 0) {
		if (s[0] != '/' || strlen(s) > 128 || !all_in(s, LOWER UPPER DIGIT "._/-"))
			diag(x, IMGCFG_E_UNSUPPORTED, toml_table_get(t, "shell"),
			     "environment.shell: '%.80s' is not an absolute path", s);
		else
			dup_into(x, &c->shell, s);
	}
	if (get_str(x, t, "environment", "banner", 0, &s, &len) > 0) {
		if (len > IMGCFG_MAX_BANNER)
			diag(x, IMGCFG_E_TOO_MANY, toml_table_get(t, "banner"),
			     "environment.banner: %zu bytes, at most %d", len, IMGCFG_MAX_BANNER);
		else
			dup_into(x, &c->banner, s[0] == '\n' ? s + 1 : s);
	}
	get_env(x, t, "environment", &c->env);
}

static void check_mcp(struct ctx *x, const struct toml_value *t, struct imgcfg *c)
{
	static const char *const keys[] = { "servers", NULL };
	static const char *const skeys[] = { "description", "command", "args",
					     "env",	    "enabled", NULL };
	check_keys(x, t, "[mcp]", keys, IMGCFG_E_UNKNOWN_KEY);
	const struct toml_value *sv = toml_table_get(t, "servers");
	if (!sv)
		return;
	if (toml_type(sv) != TOML_TABLE) {
		diag(x, IMGCFG_E_TYPE, sv, "mcp.servers: expected a table, got %s",
		     toml_type_name(toml_type(sv)));
		return;
	}
	size_t n = toml_table_size(sv);
	if (n > IMGCFG_MAX_MCP) {
		diag(x, IMGCFG_E_TOO_MANY, sv, "mcp.servers: %zu servers, at most %d", n,
		     IMGCFG_MAX_MCP);
		return;
	}
	c->mcp = calloc(n ? n : 1, sizeof(*c->mcp));
	if (!c->mcp) {
		x->oom = 1;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = toml_table_key(sv, i, NULL), *s;
		const struct toml_value *st = toml_table_value(sv, i);
		struct imgcfg_mcp *m = &c->mcp[c->n_mcp++];
		char where[64];
		snprintf(where, sizeof(where), "mcp.servers.%.32s", name);
		m->enabled = true;
		dup_into(x, &m->name, name);
		if (!short_name_valid(name))
			diag(x, IMGCFG_E_NAME, st,
			     "mcp.servers: '%.80s' is not a server name ([a-z0-9._-])", name);
		if (toml_type(st) != TOML_TABLE) {
			diag(x, IMGCFG_E_TYPE, st, "%s: expected a table, got %s", where,
			     toml_type_name(toml_type(st)));
			continue;
		}
		check_keys(x, st, where, skeys, IMGCFG_E_UNKNOWN_KEY);
		if (get_str(x, st, where, "description", 0, &s, NULL) > 0)
			dup_into(x, &m->description, s);
		if (get_str(x, st, where, "command", 1, &s, NULL) > 0)
			dup_into(x, &m->command, s);
		get_str_array(x, st, where, "args", 0, IMGCFG_MAX_ARGS, NULL, IMGCFG_E_EMPTY,
			      "an argument", &m->args);
		get_env(x, st, where, &m->env);
		get_bool(x, st, where, "enabled", &m->enabled);
	}
}

/* ---- loading ---- */

static const struct {
	const char *name;
	int required;
	void (*check)(struct ctx *x, const struct toml_value *t, struct imgcfg *c);
} tables[] = {
	{ "image", 1, check_image },
	{ "build", 1, check_build },
	{ "packages", 1, check_packages },
	{ "providers", 0, check_providers },
	{ "vm", 0, check_vm },
	{ "environment", 0, check_environment },
	{ "mcp", 0, check_mcp },
};

static void srcs_free(struct src *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(s[i].name);
		free(s[i].text);
		toml_free(s[i].root);
	}
	free(s);
}

static int is_toml_name(const char *n)
{
	size_t l = strlen(n);
	return l > 5 && n[0] != '.' && streq(n + l - 5, ".toml");
}

/* The *.toml names of dir, sorted, into *ret (strv). */
static int list_dir(const char *dir, char ***ret)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	if (!d)
		return negative_errno();
	while ((e = readdir(d))) {
		if (!is_toml_name(e->d_name))
			continue;
		if (strv_length(v) >= IMGCFG_MAX_FILES_IN_DIR) {
			closedir(d);
			strv_free(v);
			return -E2BIG;
		}
		if (strv_push(&v, e->d_name) < 0) {
			closedir(d);
			strv_free(v);
			return -ENOMEM;
		}
	}
	closedir(d);
	if (v)
		qsort(v, strv_length(v), sizeof(char *), cmp_str);
	*ret = v;
	return 0;
}

void imgcfg_free(struct imgcfg *c)
{
	if (!c)
		return;
	free(c->dir);
	free(c->name);
	free(c->description);
	free(c->version);
	free(c->arch);
	free(c->suite);
	free(c->compression);
	free(c->node);
	free(c->npm_version);
	strv_free(c->apt);
	strv_free(c->python);
	strv_free(c->npm);
	for (size_t i = 0; i < c->n_providers; i++) {
		struct imgcfg_provider *p = &c->providers[i];
		free(p->name);
		free(p->description);
		free(p->npm);
		free(p->version);
		free(p->cli);
		free(p->api_key_env);
		strv_free(p->domains);
		strv_free(p->env);
		for (size_t j = 0; j < p->n_files; j++) {
			free(p->files[j].path);
			free(p->files[j].content);
		}
		free(p->files);
	}
	free(c->providers);
	free(c->shell);
	free(c->banner);
	free(c->venv);
	strv_free(c->env);
	for (size_t i = 0; i < c->n_mcp; i++) {
		free(c->mcp[i].name);
		free(c->mcp[i].description);
		free(c->mcp[i].command);
		strv_free(c->mcp[i].args);
		strv_free(c->mcp[i].env);
	}
	free(c->mcp);
	free(c);
}

int imgcfg_load(const char *dir, struct imgcfg **ret, struct imgcfg_diags *diags)
{
	_cleanup_strv_free_ char **names = NULL;
	_cleanup_(imgcfg_freep) struct imgcfg *c = NULL;
	struct ctx x = { .d = diags };
	struct src *srcs = NULL;
	size_t n = 0;
	int r;

	r = list_dir(dir, &names);
	if (r == -ENOMEM)
		return -ENOMEM;
	if (r < 0 || !names) {
		diag(&x, IMGCFG_E_NO_CONFIG, NULL, "%s: %s", dir,
		     r == -E2BIG ? "more than 32 *.toml files"
		     : r < 0	 ? strerror(-r)
				 : "no *.toml files (not an image config directory)");
		return x.oom ? -ENOMEM : -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	srcs = calloc(strv_length(names), sizeof(*srcs));
	if (!c || !srcs || !(c->dir = strdup(dir))) {
		free(srcs);
		return -ENOMEM;
	}
	for (size_t i = 0; names[i]; i++) {
		struct src *s = &srcs[n++];
		_cleanup_free_ char *path = NULL;
		struct toml_error err = { 0 };
		s->name = strdup(names[i]);
		if (!s->name || asprintf(&path, "%s/%s", dir, names[i]) < 0) {
			x.oom = 1;
			break;
		}
		x.src = s;
		r = read_file_small(path, IMGCFG_MAX_FILE_BYTES, &s->text, &s->len);
		if (r < 0) {
			diag(&x, r == -EFBIG ? IMGCFG_E_TOO_MANY : IMGCFG_E_NO_CONFIG, NULL,
			     "cannot read it: %s",
			     r == -EFBIG ? "larger than 256 KiB" : strerror(-r));
			continue;
		}
		r = toml_parse(s->text, s->len, &s->root, &err);
		if (r == -ENOMEM) {
			x.oom = 1;
			break;
		}
		if (r < 0) {
			diag(&x, IMGCFG_E_SYNTAX, NULL, "TOML syntax: %s (column %u)", err.msg,
			     err.column);
			if (x.d->n > 0)
				x.d->v[x.d->n - 1].line = err.line;
		}
	}
	/* each top-level table in one file; unknown top-level keys reported */
	for (size_t t = 0; !x.oom && t < ELEMENTSOF(tables); t++) {
		const struct src *found = NULL;
		const struct toml_value *fv = NULL;
		for (size_t i = 0; i < n; i++) {
			const struct toml_value *v = toml_table_get(srcs[i].root, tables[t].name);
			if (!v)
				continue;
			x.src = &srcs[i];
			if (found) {
				diag(&x, IMGCFG_E_DUP_TABLE, v, "[%s] is also defined in %s",
				     tables[t].name, found->name);
				continue;
			}
			found = &srcs[i];
			fv = v;
		}
		if (!found) {
			x.src = NULL;
			if (tables[t].required && x.errors == 0)
				diag(&x, IMGCFG_E_MISSING, NULL, "%s: no [%s] table in any *.toml",
				     dir, tables[t].name);
			continue;
		}
		x.src = found;
		if (toml_type(fv) != TOML_TABLE) {
			diag(&x, IMGCFG_E_TYPE, fv, "%s: expected a table, got %s", tables[t].name,
			     toml_type_name(toml_type(fv)));
			continue;
		}
		tables[t].check(&x, fv, c);
	}
	for (size_t i = 0; !x.oom && i < n; i++) {
		x.src = &srcs[i];
		for (size_t k = 0; k < toml_table_size(srcs[i].root); k++) {
			const char *key = toml_table_key(srcs[i].root, k, NULL);
			int known = 0;
			for (size_t t = 0; t < ELEMENTSOF(tables); t++)
				if (streq(key, tables[t].name))
					known = 1;
			if (!known)
				diag(&x, IMGCFG_E_UNKNOWN_KEY, toml_table_value(srcs[i].root, k),
				     "unknown top-level key '%s' (expected one of image, build, "
				     "packages, providers, vm, environment, mcp)",
				     key);
		}
	}
	srcs_free(srcs, n);
	if (x.oom)
		return -ENOMEM;
	if (x.errors > 0)
		return -EINVAL;
	if (!c->node && !(c->node = strdup(IMGCFG_DEFAULT_NODE)))
		return -ENOMEM;
	if (!c->npm_version && !(c->npm_version = strdup(IMGCFG_DEFAULT_NPM)))
		return -ENOMEM;
	if (!c->shell && !(c->shell = strdup(IMGCFG_DEFAULT_SHELL)))
		return -ENOMEM;
	if (!c->cpus)
		c->cpus = IMGCFG_DEFAULT_CPUS;
	if (!c->memory_mib)
		c->memory_mib = IMGCFG_DEFAULT_MEMORY_MIB;
	if (!c->disk_mib)
		c->disk_mib = IMGCFG_DEFAULT_DISK_MIB;
	*ret = TAKE_PTR(c);
	return 0;
}

char **imgcfg_npm_specs(const struct imgcfg *c)
{
	char **v = NULL;
	for (size_t i = 0; i < c->n_providers; i++) {
		const struct imgcfg_provider *p = &c->providers[i];
		if (p->enabled && strv_pushf(&v, "%s@%s", p->npm, p->version) < 0)
			goto oom;
	}
	for (size_t i = 0; c->npm && c->npm[i]; i++) {
		const char *s = c->npm[i];
		const char *at = strrchr(s, '@');
		if (at && at != s ? strv_push(&v, s) < 0 : strv_pushf(&v, "%s@latest", s) < 0)
			goto oom;
	}
	if (v)
		qsort(v, strv_length(v), sizeof(char *), cmp_str);
	else if (!(v = calloc(1, sizeof(char *))))
		goto oom;
	return v;
oom:
	strv_free(v);
	return NULL;
}

static json_t *strv_json(char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; a && v && v[i]; i++)
		if (json_array_append_new(a, json_string(v[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* "K=V" entries as an object. */
static json_t *env_json(char *const *v)
{
	json_t *o = json_object();
	for (size_t i = 0; o && v && v[i]; i++) {
		_cleanup_free_ char *k = strdup(v[i]);
		char *eq = k ? strchr(k, '=') : NULL;
		if (!eq || json_object_set_new(o, (*eq = 0, k), json_string(eq + 1)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

char *imgcfg_to_json(const struct imgcfg *c)
{
	json_t *providers = json_array(), *mcp = json_array();
	for (size_t i = 0; providers && i < c->n_providers; i++) {
		const struct imgcfg_provider *p = &c->providers[i];
		json_t *files = json_array();
		for (size_t j = 0; files && j < p->n_files; j++)
			json_array_append_new(files, json_pack("{s:s, s:s#, s:i}", "path",
							       p->files[j].path, "content",
							       p->files[j].content, p->files[j].len,
							       "mode", p->files[j].mode));
		json_array_append_new(
			providers,
			json_pack("{s:s, s:s?, s:s, s:s, s:s, s:s, s:o?, s:o?, s:o?, s:b}", "name",
				  p->name, "description", p->description, "npm", p->npm, "version",
				  p->version, "cli", p->cli, "api_key_env", p->api_key_env,
				  "domains", strv_json(p->domains), "env", env_json(p->env),
				  "files", files, "enabled", p->enabled));
	}
	for (size_t i = 0; mcp && i < c->n_mcp; i++) {
		const struct imgcfg_mcp *m = &c->mcp[i];
		json_array_append_new(mcp,
				      json_pack("{s:s, s:s?, s:s, s:o?, s:o?, s:b}", "name",
						m->name, "description", m->description, "command",
						m->command, "args", strv_json(m->args), "env",
						env_json(m->env), "enabled", m->enabled));
	}
	json_t *j = json_pack(
		"{s:{s:s, s:s?, s:s?}, s:{s:s, s:s, s:s, s:s, s:s}, s:{s:o?, s:o?, s:o?},"
		" s:o?, s:{s:i, s:I, s:I}, s:{s:s, s:s?, s:o?, s:s?}, s:{s:o?}}",
		"image", "name", c->name, "description", c->description, "version", c->version,
		"build", "arch", c->arch, "suite", c->suite, "compression", c->compression, "node",
		c->node, "npm", c->npm_version, "packages", "apt", strv_json(c->apt), "python",
		strv_json(c->python), "npm", strv_json(c->npm), "providers", providers, "vm",
		"cpus", c->cpus, "memory_mib", (json_int_t)c->memory_mib, "disk_mib",
		(json_int_t)c->disk_mib, "environment", "shell", c->shell, "banner", c->banner,
		"env", env_json(c->env), "venv", c->venv, "mcp", "servers", mcp);
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return s;
}
