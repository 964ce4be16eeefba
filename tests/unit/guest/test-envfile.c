/* test-envfile.c - /etc/environment as the agent reads it (envfile.c): comments, export, quotes,
 * later lines win, bad keys skipped, the entry cap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envfile.h"
#include "strv.h"

static char **parse(const char *text)
{
	char **env = NULL;
	assert_int_equal(envfile_parse(text, strlen(text), &env), 0);
	assert_non_null(env);
	return env;
}

static void test_lines(void **state)
{
	(void)state;
	char **e = parse("# comment\n\nLANG=C.UTF-8\n  export PATH=/root/.venv/bin:/usr/bin \n"
			 "Q=\"two words\"\nS='single'\nEMPTY=\nMIXED=\"x'\nX=1\r\nX=2\n");
	assert_string_equal(e[0], "LANG=C.UTF-8");
	assert_string_equal(e[1], "PATH=/root/.venv/bin:/usr/bin");
	assert_string_equal(e[2], "Q=two words");
	assert_string_equal(e[3], "S=single");
	assert_string_equal(e[4], "EMPTY=");
	assert_string_equal(e[5], "MIXED=\"x'");
	assert_string_equal(e[6], "X=2"); /* the later line replaces the earlier one */
	assert_null(e[7]);
	strv_free(e);
}

static void test_bad_lines_skipped(void **state)
{
	(void)state;
	char **e = parse("1BAD=x\nno equals\n=x\nA-B=x\nexport\nOK_1=fine\nK V=x");
	assert_string_equal(e[0], "OK_1=fine");
	assert_null(e[1]);
	strv_free(e);
	/* not NUL-terminated input, and a NUL inside a value */
	char buf[] = { 'A', '=', 'x', '\n', 'B', '=', 0, 'y', '\n', 'C', '=', 'z' };
	char **f = NULL;
	assert_int_equal(envfile_parse(buf, sizeof(buf), &f), 0);
	assert_string_equal(f[0], "A=x");
	assert_string_equal(f[1], "C=z");
	assert_null(f[2]);
	strv_free(f);
}

static void test_cap(void **state)
{
	(void)state;
	size_t n = ENVFILE_MAX_ENTRIES + 1, len = 0;
	char *text = malloc(n * 16);
	char **e = NULL;
	assert_non_null(text);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, 16, "V%zu=1\n", i);
	assert_int_equal(envfile_parse(text, len, &e), -E2BIG);
	assert_null(e);
	/* repeating one key never counts twice */
	len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, 16, "V=%zu\n", i);
	assert_int_equal(envfile_parse(text, len, &e), 0);
	assert_null(e[1]);
	strv_free(e);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_bad_lines_skipped),
		cmocka_unit_test(test_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
