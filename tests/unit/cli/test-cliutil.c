/* test-cliutil.c - the CLI's pure helpers: -e/--mount/size/name parsing, cp paths, table
 * formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "cliutil.h"
#include "parse.h"
#include "macro.h"
#include "strv.h"

static void test_env(void **state)
{
	_cleanup_strv_free_ char **env = NULL;
	assert_int_equal(cli_parse_env("A=1", &env), 0);
	assert_int_equal(cli_parse_env("B=", &env), 0);
	assert_int_equal(cli_parse_env("=x", &env), -EINVAL);
	assert_int_equal(cli_parse_env("", &env), -EINVAL);
	setenv("CLI_TEST_VAR", "from host", 1);
	assert_int_equal(cli_parse_env("CLI_TEST_VAR", &env), 0);
	unsetenv("CLI_TEST_UNSET");
	assert_int_equal(cli_parse_env("CLI_TEST_UNSET", &env), -EINVAL);
	assert_int_equal(strv_length(env), 3);
	assert_string_equal(env[0], "A=1");
	assert_string_equal(env[1], "B=");
	assert_string_equal(env[2], "CLI_TEST_VAR=from host");
}

static void test_mount(void **state)
{
	json_t *m = NULL;
	assert_int_equal(cli_parse_mount("/src:/mnt/src:ro", NULL, &m), 0);
	assert_string_equal(json_string_value(json_object_get(m, "host")), "/src");
	assert_string_equal(json_string_value(json_object_get(m, "guest")), "/mnt/src");
	assert_true(json_is_true(json_object_get(m, "ro")));
	json_decref(m);
	assert_int_equal(cli_parse_mount("data:/data", "/home/u", &m), 0);
	assert_string_equal(json_string_value(json_object_get(m, "host")), "/home/u/data");
	assert_true(json_is_false(json_object_get(m, "ro")));
	json_decref(m);
	m = NULL;
	assert_int_equal(cli_parse_mount("data:/data", NULL, &m), -EINVAL);
	assert_int_equal(cli_parse_mount("/src", "/", &m), -EINVAL);
	assert_int_equal(cli_parse_mount("/src:rel", "/", &m), -EINVAL);
	assert_int_equal(cli_parse_mount(":/x", "/", &m), -EINVAL);
	assert_null(m);
}

static void test_mib(void **state)
{
	uint64_t v = 7;
	assert_int_equal(parse_size_mib("512M", 64, 1 << 20, &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(parse_size_mib("2G", 64, 1 << 20, &v), 0);
	assert_int_equal(v, 2048);
	assert_int_equal(parse_size_mib("12Q", 64, 1 << 20, &v), -EINVAL);
	assert_int_equal(parse_size_mib("1500K", 64, 1 << 20, &v), -EINVAL);
	assert_int_equal(parse_size_mib("32M", 64, 1 << 20, &v), -ERANGE);
	assert_int_equal(parse_size_mib("", 64, 1 << 20, &v), -EINVAL);
	assert_int_equal(v, 2048);
}

static void test_name(void **state)
{
	assert_true(cli_valid_name("web"));
	assert_true(cli_valid_name("a"));
	assert_true(cli_valid_name("0a_b.c-d"));
	assert_false(cli_valid_name(""));
	assert_false(cli_valid_name("-web"));
	assert_false(cli_valid_name("Web"));
	assert_false(cli_valid_name("a/b"));
	assert_false(cli_valid_name("a b"));
	char long_name[65];
	memset(long_name, 'a', 64);
	long_name[64] = 0;
	assert_false(cli_valid_name(long_name));
	long_name[63] = 0;
	assert_true(cli_valid_name(long_name));
}

static void test_cp_path(void **state)
{
	_cleanup_free_ char *ref = NULL, *path = NULL;
	assert_int_equal(cli_parse_cp_path("web:/root/f", &ref, &path), 1);
	assert_string_equal(ref, "web");
	assert_string_equal(path, "/root/f");
	char *r2 = NULL, *p2 = NULL;
	assert_int_equal(cli_parse_cp_path("./local", &r2, &p2), 0);
	assert_int_equal(cli_parse_cp_path("/abs/a:b", &r2, &p2), 0);
	assert_int_equal(cli_parse_cp_path("Foo:/x", &r2, &p2), 0); /* not a VM name */
	assert_int_equal(cli_parse_cp_path(":/x", &r2, &p2), 0);
	assert_int_equal(cli_parse_cp_path("web:root/f", &r2, &p2), -EINVAL);
	assert_null(r2);
	assert_null(p2);
}

static void test_cp_target(void **state)
{
	char *t;
	t = cli_cp_target("/root/", "./dir/notes.txt");
	assert_string_equal(t, "/root/notes.txt");
	free(t);
	t = cli_cp_target("/root/n.txt", "./dir/notes.txt");
	assert_string_equal(t, "/root/n.txt");
	free(t);
	t = cli_cp_target("out/", "/root/f/");
	assert_string_equal(t, "out/f");
	free(t);
	assert_null(cli_cp_target("/root/", "/"));
	assert_null(cli_cp_target("/root/", ".."));
}

static void test_format(void **state)
{
	char s[32];
	cli_format_mib(512, s, sizeof(s));
	assert_string_equal(s, "512M");
	cli_format_mib(1024, s, sizeof(s));
	assert_string_equal(s, "1G");
	cli_format_mib(1536, s, sizeof(s));
	assert_string_equal(s, "1.5G");
	cli_format_mib(1000, s, sizeof(s));
	assert_string_equal(s, "1000M");
	cli_format_mib(0, s, sizeof(s));
	assert_string_equal(s, "-");
	cli_format_age(42, s, sizeof(s));
	assert_string_equal(s, "42s");
	cli_format_age(150, s, sizeof(s));
	assert_string_equal(s, "2m");
	cli_format_age(7200, s, sizeof(s));
	assert_string_equal(s, "2h");
	cli_format_age(200000, s, sizeof(s));
	assert_string_equal(s, "2d");
	cli_format_age(-5, s, sizeof(s));
	assert_string_equal(s, "0s");
}

static void test_time(void **state)
{
	time_t t = 1;
	assert_int_equal(cli_parse_time("1970-01-01T00:01:00Z", &t), 0);
	assert_int_equal(t, 60);
	assert_int_equal(cli_parse_time("2026-11-22T06:00:00.123Z", &t), 0);
	assert_int_equal(t, 1795327200);
	assert_int_equal(cli_parse_time("2026-11-22 06:00:00Z", &t), -EINVAL);
	assert_int_equal(cli_parse_time("2026-13-22T06:00:00Z", &t), -EINVAL);
	assert_int_equal(cli_parse_time("2026-11-22T06:00:00", &t), -EINVAL);
	assert_int_equal(cli_parse_time("2026-11-22T06:00:00.Z", &t), -EINVAL);
	assert_int_equal(cli_parse_time("", &t), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env),	cmocka_unit_test(test_mount),
		cmocka_unit_test(test_mib),	cmocka_unit_test(test_name),
		cmocka_unit_test(test_cp_path), cmocka_unit_test(test_cp_target),
		cmocka_unit_test(test_format),	cmocka_unit_test(test_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
