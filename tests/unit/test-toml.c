/* test-toml.c - the TOML parser's API: lookups, iteration order, typed accessors, errors with
 * line:column, redefinition rules and the hard caps (size, depth, key length, value count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"
#include "toml.h"

static struct toml_value *parse_ok(const char *text)
{
	struct toml_value *root = NULL;
	struct toml_error err = {};
	int r = toml_parse(text, strlen(text), &root, &err);
	if (r < 0)
		fprintf(stderr, "unexpected error %d at %u:%u: %s\n", r, err.line, err.column,
			err.msg);
	assert_int_equal(r, 0);
	assert_non_null(root);
	return root;
}

static int parse_err(const char *text, struct toml_error *err)
{
	struct toml_value *root = (struct toml_value *)(uintptr_t)1;
	int r = toml_parse(text, strlen(text), &root, err);
	assert_true(r < 0);
	assert_true(root == (struct toml_value *)(uintptr_t)1); /* untouched */
	return r;
}

static void test_lookup(void **state)
{
	_cleanup_toml_free_ struct toml_value *root = parse_ok("title = \"egress\"\n"
							       "[policy]\n"
							       "default = 'deny'\n"
							       "max = 0x10\n"
							       "ratio = 0.5\n"
							       "on = true\n"
							       "when = 1979-05-27T07:32:00-08:00\n"
							       "[[policy.rule]]\n"
							       "host = \"a.example\"\n"
							       "[[policy.rule]]\n"
							       "host = \"b.example\"\n"
							       "ports = [80, 443]\n");
	const char *s;
	size_t n;
	int64_t i;
	double d;
	bool b;
	enum toml_type kind;
	const struct toml_value *rules, *v;

	assert_int_equal(toml_type(root), TOML_TABLE);
	assert_int_equal(toml_get_string(toml_table_get(root, "title"), &s, &n), 0);
	assert_string_equal(s, "egress");
	assert_int_equal(n, 6);
	assert_int_equal(toml_get_string(toml_get_path(root, "policy.default"), &s, NULL), 0);
	assert_string_equal(s, "deny");
	assert_int_equal(toml_get_int(toml_get_path(root, "policy.max"), &i), 0);
	assert_int_equal(i, 16);
	assert_int_equal(toml_get_float(toml_get_path(root, "policy.ratio"), &d), 0);
	assert_true(d == 0.5);
	assert_int_equal(toml_get_bool(toml_get_path(root, "policy.on"), &b), 0);
	assert_true(b);
	assert_int_equal(toml_get_datetime(toml_get_path(root, "policy.when"), &s, &kind), 0);
	assert_string_equal(s, "1979-05-27T07:32:00-08:00");
	assert_int_equal(kind, TOML_DATETIME);

	/* wrong type, missing key: errors, out-parameters untouched */
	i = 7;
	assert_int_equal(toml_get_int(toml_get_path(root, "policy.default"), &i), -EMEDIUMTYPE);
	assert_int_equal(toml_get_int(toml_get_path(root, "policy.nope"), &i), -ENOENT);
	assert_int_equal(i, 7);
	assert_null(toml_get_path(root, "title.x"));
	assert_null(toml_get_path(root, "policy..max"));
	assert_null(toml_table_get(NULL, "x"));

	/* document order */
	v = toml_table_get(root, "policy");
	assert_int_equal(toml_table_size(v), 6);
	assert_string_equal(toml_table_key(v, 0, NULL), "default");
	assert_string_equal(toml_table_key(v, 4, &n), "when");
	assert_int_equal(n, 4);
	assert_string_equal(toml_table_key(v, 5, NULL), "rule");
	assert_null(toml_table_key(v, 6, NULL));
	assert_null(toml_table_value(v, 6));

	rules = toml_get_path(root, "policy.rule");
	assert_int_equal(toml_type(rules), TOML_ARRAY);
	assert_int_equal(toml_array_size(rules), 2);
	assert_null(toml_array_at(rules, 2));
	assert_int_equal(toml_get_string(toml_table_get(toml_array_at(rules, 1), "host"), &s, NULL),
			 0);
	assert_string_equal(s, "b.example");
	v = toml_table_get(toml_array_at(rules, 1), "ports");
	assert_int_equal(toml_array_size(v), 2);
	assert_int_equal(toml_get_int(toml_array_at(v, 1), &i), 0);
	assert_int_equal(i, 443);
}

static void test_many_keys(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	_cleanup_toml_free_ struct toml_value *root = NULL;
	int64_t v;

	assert_non_null(f);
	for (int i = 0; i < 5000; i++)
		fprintf(f, "k%d = %d\n", i, i);
	fclose(f);
	assert_int_equal(toml_parse(text, len, &root, NULL), 0);
	free(text);
	assert_int_equal(toml_table_size(root), 5000);
	for (int i = 0; i < 5000; i += 7) {
		char k[16];
		snprintf(k, sizeof(k), "k%d", i);
		assert_int_equal(toml_get_int(toml_table_get(root, k), &v), 0);
		assert_int_equal(v, i);
		assert_string_equal(toml_table_key(root, (size_t)i, NULL), k);
	}
	assert_null(toml_table_get(root, "k5000"));
}

static void test_strings(void **state)
{
	_cleanup_toml_free_ struct toml_value *root =
		parse_ok("nul = \"a\\u0000b\"\n"
			 "u = \"\\U0001F600\\u00e9\"\n"
			 "ml = \"\"\"\r\nline1\r\nline2 \\\n   joined\"\"\"\n"
			 "lit = '''C:\\path\\'''\n"
			 "\"quoted key\" = 1\n"
			 "'' = 2\n");
	const char *s;
	size_t n;

	assert_int_equal(toml_get_string(toml_table_get(root, "nul"), &s, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(s, "a\0b", 3);
	assert_int_equal(toml_get_string(toml_table_get(root, "u"), &s, NULL), 0);
	assert_string_equal(s, "\xf0\x9f\x98\x80\xc3\xa9");
	assert_int_equal(toml_get_string(toml_table_get(root, "ml"), &s, NULL), 0);
	assert_string_equal(s, "line1\nline2 joined");
	assert_int_equal(toml_get_string(toml_table_get(root, "lit"), &s, NULL), 0);
	assert_string_equal(s, "C:\\path\\");
	assert_non_null(toml_table_get(root, "quoted key"));
	assert_non_null(toml_table_get(root, ""));
}

static void test_numbers(void **state)
{
	_cleanup_toml_free_ struct toml_value *root = parse_ok("max = 9223372036854775807\n"
							       "min = -9223372036854775808\n"
							       "hex = 0x7fff_ffff_ffff_ffff\n"
							       "bin = 0b1010\n"
							       "oct = 0o17\n"
							       "f = 6.626e-3_4\n"
							       "ni = -inf\n"
							       "nn = nan\n");
	int64_t i;
	double d;

	assert_int_equal(toml_get_int(toml_table_get(root, "max"), &i), 0);
	assert_true(i == INT64_MAX);
	assert_int_equal(toml_get_int(toml_table_get(root, "min"), &i), 0);
	assert_true(i == INT64_MIN);
	assert_int_equal(toml_get_int(toml_table_get(root, "hex"), &i), 0);
	assert_true(i == INT64_MAX);
	assert_int_equal(toml_get_int(toml_table_get(root, "bin"), &i), 0);
	assert_int_equal(i, 10);
	assert_int_equal(toml_get_int(toml_table_get(root, "oct"), &i), 0);
	assert_int_equal(i, 15);
	assert_int_equal(toml_get_float(toml_table_get(root, "f"), &d), 0);
	assert_true(d == 6.626e-34);
	assert_int_equal(toml_get_float(toml_table_get(root, "ni"), &d), 0);
	assert_true(isinf(d) && d < 0);
	assert_int_equal(toml_get_float(toml_table_get(root, "nn"), &d), 0);
	assert_true(isnan(d));
}

static void test_errors(void **state)
{
	struct toml_error err;

	assert_int_equal(parse_err("a = 1\nb = \n", &err), -EBADMSG);
	assert_int_equal(err.line, 2);
	assert_int_equal(err.column, 5);
	assert_true(strlen(err.msg) > 0);

	/* columns count characters, not bytes */
	assert_int_equal(parse_err("s = \"\xc3\xa9\xc3\xa9\" x\n", &err), -EBADMSG);
	assert_int_equal(err.line, 1);
	assert_int_equal(err.column, 10);

	assert_int_equal(parse_err("[a]\nx = 1\n[a]\n", &err), -EBADMSG);
	assert_int_equal(err.line, 3);
	assert_int_equal(err.column, 1);

	assert_int_equal(parse_err("x = 9223372036854775808\n", &err), -EBADMSG);
	assert_string_equal(err.msg, "integer out of range");
	assert_int_equal(parse_err("x = 0x8000000000000000\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = 1e400\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = \"\\uD800\"\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = \"\\U00110000\"\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = \"\xed\xa0\x80\"\n", &err), -EBADMSG); /* UTF-8 surrogate */
	assert_int_equal(parse_err("x = 2023-02-29\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = 1\ry = 2\n", &err), -EBADMSG);
	assert_int_equal(parse_err("x = \"\\e\"\n", &err), -EBADMSG); /* TOML 1.1 only */

	/* NULL arguments */
	assert_int_equal(toml_parse(NULL, 3, (struct toml_value **)&err, NULL), -EINVAL);
	assert_int_equal(toml_parse("", 0, NULL, NULL), -EINVAL);
}

/* TOML 1.0's redefinition rules, beyond the toml-test cases. */
static void test_redefinition(void **state)
{
	static const char *const bad[] = {
		"a = 1\na = 2\n",
		"a.b = 1\na.b.c = 2\n",
		"a = {x = 1}\na.y = 2\n",
		"a = {x = 1}\n[a.b]\n",
		"a = {x = {y = 1}}\n[a.x.z]\n",
		"a = [1]\n[[a]]\n",
		"[[a]]\n[a]\n",
		"[a]\n[[a]]\n",
		"[a]\nb.c = 1\n[a.b]\n",
		"[a.b.c]\n[a]\nb.c.d = 1\n",
		"[a.b]\n[a]\nb.x = 1\n",
		"x = {a.b = 1, a = 2}\n",
		"x = {a = {}, a.b = 1}\n",
		"x = {a = 1, a = 1}\n",
		"a = 1\n[a.b]\n",
		"[a]\n[a.b]\n[a]\n",
		"[a]\nb = 1\n[a.b]\n",
		"[t]\nx.y = 1\n[t.x]\n",
		"[[a.b]]\n[a]\nb.c = 1\n",
	};
	static const char *const good[] = {
		"[a.b.c]\n[a]\nx = 1\n",	 "[a]\nb.c = 1\n[a.b.d]\n",
		"a.b.c = 1\na.b.d = 2\n",	 "x = {a.b = 1, a.c = 2}\n",
		"[[a]]\n[a.b]\n[[a]]\n[a.b]\n",	 "[[a.b]]\n[a]\n",
		"a = [[1], [\"x\", {y = 1}]]\n",
	};
	struct toml_error err;

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct toml_value *root = NULL;
		int r = toml_parse(bad[i], strlen(bad[i]), &root, &err);
		if (r != -EBADMSG)
			fprintf(stderr, "accepted: %s", bad[i]);
		assert_int_equal(r, -EBADMSG);
	}
	for (size_t i = 0; i < ELEMENTSOF(good); i++)
		toml_free(parse_ok(good[i]));
}

static char *repeat(const char *pre, const char *unit, size_t n, const char *post)
{
	size_t lp = strlen(pre), lu = strlen(unit), lq = strlen(post);
	char *s = malloc(lp + lu * n + lq + 1), *w = s;

	assert_non_null(s);
	memcpy(w, pre, lp);
	w += lp;
	for (size_t i = 0; i < n; i++, w += lu)
		memcpy(w, unit, lu);
	memcpy(w, post, lq + 1);
	return s;
}

static void test_caps(void **state)
{
	struct toml_limits lim = { .max_input = 16 };
	struct toml_value *root = NULL;
	struct toml_error err;
	char *s;

	/* size */
	assert_int_equal(toml_parse_limits("a = 1234567890123", 17, &lim, &root, &err), -EBADMSG);
	assert_string_equal(err.msg, "input too large");
	assert_int_equal(toml_parse_limits("a = 123456789012", 16, &lim, &root, &err), 0);
	toml_free(TAKE_PTR(root));

	/* depth: arrays (64 levels allowed by default, 65 not) */
	s = repeat("a = ", "[", 64, "");
	{
		char *t = repeat(s, "]", 64, "\n");
		assert_int_equal(toml_parse(t, strlen(t), &root, &err), 0);
		toml_free(TAKE_PTR(root));
		free(t);
	}
	free(s);
	s = repeat("a = ", "[", 65, "");
	{
		char *t = repeat(s, "]", 65, "\n");
		assert_int_equal(toml_parse(t, strlen(t), &root, &err), -EBADMSG);
		assert_string_equal(err.msg, "nesting too deep");
		free(t);
	}
	free(s);
	/* depth: inline tables, a deep prefix without the closing (never recursed past the cap) */
	s = repeat("a = ", "{b = ", 100000, "");
	assert_int_equal(toml_parse(s, strlen(s), &root, &err), -EBADMSG);
	assert_string_equal(err.msg, "nesting too deep");
	free(s);
	/* depth: headers and dotted keys */
	s = repeat("[a", ".a", 70, "]\n");
	assert_int_equal(toml_parse(s, strlen(s), &root, &err), -EBADMSG);
	free(s);
	s = repeat("a", ".a", 70, " = 1\n");
	assert_int_equal(toml_parse(s, strlen(s), &root, &err), -EBADMSG);
	free(s);
	lim = (struct toml_limits){ .max_depth = 3 };
	assert_int_equal(toml_parse_limits("[a.b]\nc.d.e = 1\n", 16, &lim, &root, &err), -EBADMSG);
	assert_int_equal(toml_parse_limits("[a.b]\nc = {}\n", 13, &lim, &root, &err), 0);
	toml_free(TAKE_PTR(root));

	/* key length */
	lim = (struct toml_limits){ .max_key_len = 8 };
	assert_int_equal(toml_parse_limits("abcdefgh = 1", 12, &lim, &root, &err), 0);
	toml_free(TAKE_PTR(root));
	assert_int_equal(toml_parse_limits("\"abcdefghi\" = 1", 15, &lim, &root, &err), -EBADMSG);
	assert_string_equal(err.msg, "key too long");

	/* value count (the root table counts) */
	lim = (struct toml_limits){ .max_values = 4 };
	assert_int_equal(toml_parse_limits("a = [1, 2]", 10, &lim, &root, &err), 0);
	toml_free(TAKE_PTR(root));
	assert_int_equal(toml_parse_limits("a = [1, 2, 3]", 13, &lim, &root, &err), -EBADMSG);
	assert_string_equal(err.msg, "too many values");
}

static void test_bom_empty(void **state)
{
	toml_free(parse_ok(""));
	toml_free(parse_ok("\xef\xbb\xbf# just a comment\r\n"));
	_cleanup_toml_free_ struct toml_value *root = NULL;
	assert_int_equal(toml_parse("a=1", 3, &root, NULL), 0); /* no NUL terminator needed */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),	cmocka_unit_test(test_many_keys),
		cmocka_unit_test(test_strings), cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_errors),	cmocka_unit_test(test_redefinition),
		cmocka_unit_test(test_caps),	cmocka_unit_test(test_bom_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
