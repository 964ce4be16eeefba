/* toml-test-runner.c - prove src/basic/toml.c against the official toml-test suite.
 *
 * Usage: toml-test-runner DIR, where DIR holds valid/ and invalid/ (Debian ships it in
 * golang-github-burntsushi-toml-dev under .../BurntSushi/toml/internal/toml-test/tests).
 * Every valid/X.toml must parse and its tree, encoded in toml-test's tagged JSON, must equal
 * valid/X.json semantically (floats by value, nan by name, date-times by normalised text);
 * every invalid/X.toml must be rejected. A missing DIR is a failure, never a skip.
 * Host-only test program (jansson); single-threaded.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "macro.h"
#include "strv.h"
#include "toml.h"

#define PACKAGE "golang-github-burntsushi-toml-dev"

/* Cases the 1.0 parser is right to get "wrong": the suite in this package also carries a few
 * TOML 1.1 cases (toml-test's own version table excludes them for 1.0). */
static const struct {
	const char *name;
	const char *reason;
} known[] = {
	{ "valid/string/escape-esc", "\\e escape is TOML 1.1, not 1.0" },
};

static char **found;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	size_t n = strlen(path);
	if (type == FTW_F && n > 5 && streq(path + n - 5, ".toml"))
		return strv_push(&found, path) < 0 ? 1 : 0;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static json_t *encode(const struct toml_value *v)
{
	char tmp[64];
	const char *s = NULL;
	size_t n = 0;
	json_t *o;

	switch (toml_type(v)) {
	case TOML_TABLE:
		o = json_object();
		for (size_t i = 0; i < toml_table_size(v); i++) {
			size_t kl;
			const char *k = toml_table_key(v, i, &kl);
			json_object_setn_new(o, k, kl, encode(toml_table_value(v, i)));
		}
		return o;
	case TOML_ARRAY:
		o = json_array();
		for (size_t i = 0; i < toml_array_size(v); i++)
			json_array_append_new(o, encode(toml_array_at(v, i)));
		return o;
	case TOML_STRING:
		toml_get_string(v, &s, &n);
		return json_pack("{s:s,s:s%}", "type", "string", "value", s, n);
	case TOML_INTEGER: {
		int64_t i = 0;
		toml_get_int(v, &i);
		snprintf(tmp, sizeof(tmp), "%" PRId64, i);
		break;
	}
	case TOML_FLOAT: {
		double d = 0;
		toml_get_float(v, &d);
		if (isnan(d))
			snprintf(tmp, sizeof(tmp), "nan");
		else if (isinf(d))
			snprintf(tmp, sizeof(tmp), "%sinf", d < 0 ? "-" : "");
		else
			snprintf(tmp, sizeof(tmp), "%.17g", d);
		break;
	}
	case TOML_BOOLEAN: {
		bool b = false;
		toml_get_bool(v, &b);
		snprintf(tmp, sizeof(tmp), "%s", b ? "true" : "false");
		break;
	}
	default:
		toml_get_datetime(v, &s, NULL);
		return json_pack("{s:s,s:s}", "type", toml_type_name(toml_type(v)), "value", s);
	}
	return json_pack("{s:s,s:s}", "type", toml_type_name(toml_type(v)), "value", tmp);
}

static bool is_tagged(json_t *o)
{
	return json_is_object(o) && json_object_size(o) == 2 &&
	       json_is_string(json_object_get(o, "type")) && json_object_get(o, "value");
}

/* Date-times as toml-test compares them: upper-case T/Z, space separator as T, "+00:00" as Z,
 * fractional seconds without trailing zeros. */
static void norm_datetime(const char *in, char *out, size_t outsz)
{
	size_t n = 0, frac = 0;
	for (const char *c = in; *c && n + 1 < outsz; c++) {
		char x = *c;
		if (x == ' ' || x == 't')
			x = 'T';
		if (x == 'z')
			x = 'Z';
		if (x == '.')
			frac = n;
		else if (frac && !(x >= '0' && x <= '9')) {
			while (n > frac + 1 && out[n - 1] == '0')
				n--;
			if (n == frac + 1)
				n = frac;
			frac = 0;
		}
		out[n++] = x;
	}
	if (frac) {
		while (n > frac + 1 && out[n - 1] == '0')
			n--;
		if (n == frac + 1)
			n = frac;
	}
	out[n] = '\0';
	if (n >= 6 && (streq(out + n - 6, "+00:00") || streq(out + n - 6, "-00:00"))) {
		out[n - 6] = 'Z';
		out[n - 5] = '\0';
	}
}

static bool same(json_t *want, json_t *have, char *why, size_t whysz)
{
	if (is_tagged(want)) {
		const char *wt = json_string_value(json_object_get(want, "type"));
		const char *wv = json_string_value(json_object_get(want, "value"));
		const char *ht, *hv;
		if (!is_tagged(have)) {
			snprintf(why, whysz, "expected a %s value", wt);
			return false;
		}
		ht = json_string_value(json_object_get(have, "type"));
		hv = json_string_value(json_object_get(have, "value"));
		if (!wv || !hv || !streq(wt, ht)) {
			snprintf(why, whysz, "type %s, want %s", ht, wt);
			return false;
		}
		if (streq(wt, "float")) {
			bool wn = strstr(wv, "nan") != NULL, hn = strstr(hv, "nan") != NULL;
			if (wn || hn) {
				if (wn != hn)
					goto mismatch;
				return true;
			}
			if (strtod(wv, NULL) != strtod(hv, NULL))
				goto mismatch;
			return true;
		}
		if (strstr(wt, "date") || strstr(wt, "time")) {
			char a[128], b[128];
			norm_datetime(wv, a, sizeof(a));
			norm_datetime(hv, b, sizeof(b));
			if (!streq(a, b))
				goto mismatch;
			return true;
		}
		if (json_string_length(json_object_get(want, "value")) !=
			    json_string_length(json_object_get(have, "value")) ||
		    memcmp(wv, hv, json_string_length(json_object_get(want, "value"))) != 0)
			goto mismatch;
		return true;
	mismatch:
		snprintf(why, whysz, "%s value \"%s\", want \"%s\"", wt, hv, wv);
		return false;
	}
	if (json_is_array(want)) {
		if (!json_is_array(have) || json_array_size(have) != json_array_size(want)) {
			snprintf(why, whysz, "array length differs");
			return false;
		}
		for (size_t i = 0; i < json_array_size(want); i++)
			if (!same(json_array_get(want, i), json_array_get(have, i), why, whysz))
				return false;
		return true;
	}
	if (json_is_object(want)) {
		const char *k;
		json_t *wv;
		if (!json_is_object(have) || is_tagged(have) ||
		    json_object_size(have) != json_object_size(want)) {
			snprintf(why, whysz, "table keys differ");
			return false;
		}
		json_object_foreach(want, k, wv)
		{
			json_t *hv = json_object_get(have, k);
			if (!hv) {
				snprintf(why, whysz, "missing key \"%s\"", k);
				return false;
			}
			if (!same(wv, hv, why, whysz))
				return false;
		}
		return true;
	}
	snprintf(why, whysz, "unexpected JSON in the expected file");
	return false;
}

static const char *known_reason(const char *rel)
{
	for (size_t i = 0; i < ELEMENTSOF(known); i++)
		if (streq(rel, known[i].name))
			return known[i].reason;
	return NULL;
}

int main(int argc, char **argv)
{
	const char *dir;
	struct stat st;
	unsigned valid_ok = 0, valid_n = 0, invalid_ok = 0, invalid_n = 0, nknown = 0;
	_cleanup_strv_free_ char **failures = NULL;
	size_t dlen;

	if (argc != 2) {
		fprintf(stderr, "usage: %s TOML-TEST-DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	dlen = strlen(dir);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr,
			"toml-test: %s not found: install the Debian package " PACKAGE
			" (apt-get install -y " PACKAGE "), it ships the toml-test suite\n",
			dir);
		return 1;
	}
	if (nftw(dir, collect, 16, FTW_PHYS) != 0 || strv_length(found) == 0) {
		fprintf(stderr, "toml-test: no .toml cases under %s\n", dir);
		return 1;
	}
	qsort(found, strv_length(found), sizeof(char *), cmp_str);

	for (char **f = found; *f; f++) {
		_cleanup_free_ char *text = NULL, *rel = NULL;
		_cleanup_toml_free_ struct toml_value *root = NULL;
		struct toml_error err = {};
		const char *r = *f + dlen;
		const char *reason;
		size_t len = 0;
		bool is_valid;
		int k;

		while (*r == '/')
			r++;
		rel = strndup(r, strlen(r) - 5);
		if (!rel)
			return 1;
		is_valid = strncmp(rel, "valid/", 6) == 0;
		if (!is_valid && strncmp(rel, "invalid/", 8) != 0)
			continue;
		reason = known_reason(rel);
		k = read_file_small(*f, 16 << 20, &text, &len);
		if (k < 0) {
			fprintf(stderr, "toml-test: cannot read %s: %s\n", *f, strerror(-k));
			return 1;
		}
		k = toml_parse(text, len, &root, &err);

		if (!is_valid) {
			invalid_n++;
			if (k == -EBADMSG)
				invalid_ok++;
			else if (reason)
				nknown++;
			else
				strv_pushf(&failures, "%s: accepted (want rejection)", rel);
			continue;
		}

		valid_n++;
		if (k < 0) {
			if (reason)
				nknown++;
			else
				strv_pushf(&failures, "%s: rejected at %u:%u: %s", rel, err.line,
					   err.column, err.msg);
			continue;
		}
		{
			_cleanup_free_ char *jpath = NULL;
			json_error_t jerr;
			json_t *want, *have;
			char why[512];
			if (asprintf(&jpath, "%.*s.json", (int)(strlen(*f) - 5), *f) < 0)
				return 1;
			want = json_load_file(jpath, JSON_ALLOW_NUL, &jerr);
			if (!want) {
				strv_pushf(&failures, "%s: cannot load %s: %s", rel, jpath,
					   jerr.text);
				continue;
			}
			have = encode(root);
			if (same(want, have, why, sizeof(why)))
				valid_ok++;
			else if (reason)
				nknown++;
			else
				strv_pushf(&failures, "%s: %s", rel, why);
			json_decref(want);
			json_decref(have);
		}
	}

	for (char **f = failures; f && *f; f++)
		printf("FAIL %s\n", *f);
	for (size_t i = 0; i < ELEMENTSOF(known); i++)
		printf("known: %s (%s)\n", known[i].name, known[i].reason);
	printf("toml-test: %u/%u valid passed, %u/%u invalid rejected, %u known (TOML 1.1), %zu "
	       "failures\n",
	       valid_ok, valid_n, invalid_ok, invalid_n, nknown, strv_length(failures));
	strv_free(found);
	return strv_length(failures) == 0 ? 0 : 1;
}
