/* test-kconfig.c - checking a config fragment against a final .config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "kconfig.h"
#include "macro.h"
#include "strv.h"

static const char *config = "#\n"
			    "# Automatically generated file; DO NOT EDIT.\n"
			    "#\n"
			    "CONFIG_64BIT=y\n"
			    "CONFIG_NR_CPUS=64\n"
			    "CONFIG_LOCALVERSION=\"-capsem\"\n"
			    "# CONFIG_MODULES is not set\n"
			    "# CONFIG_SLUB is not set\n"
			    "CONFIG_SLOB=y\n"
			    "CONFIG_VIRTIO_BLK=m\n"
			    "CONFIG_AUDIT=n\n"
			    "CONFIG_SMP=y"; /* no final newline */

static void test_all_good(void **state)
{
	char **bad = (char **)0x1;
	const char *frag = "# comment\n"
			   "\n"
			   "  CONFIG_64BIT=y  \r\n"
			   "CONFIG_NR_CPUS=64\n"
			   "CONFIG_LOCALVERSION=\"-capsem\"\n"
			   "CONFIG_MODULES=n\n"	   /* "is not set" */
			   "CONFIG_IPV6=n\n"	   /* absent */
			   "CONFIG_AUDIT=n\n"	   /* "=n": kconfig reads it as n */
			   "# opt: CONFIG_FOO=y\n" /* comments are not enforced */
			   "CONFIG_SMP=y";
	assert_int_equal(kconfig_check(frag, config, &bad), 0);
	assert_null(bad);
}

static void test_bad(void **state)
{
	_cleanup_strv_free_ char **bad = NULL;
	const char *frag = "CONFIG_SLUB=y\n"		  /* not set */
			   "CONFIG_HARDENED_USERCOPY=y\n" /* absent */
			   "CONFIG_NR_CPUS=6\n"		  /* prefix of the real value */
			   "CONFIG_64BI=y\n"		  /* prefix of a real name */
			   "CONFIG_SLOB=n\n"		  /* set although =n was asked */
			   "CONFIG_VIRTIO_BLK=y\n"	  /* module instead of built-in */
			   "CONFIG_LOCALVERSION=\"\"\n"
			   "garbage line\n"
			   "CONFIG_=y\n";
	assert_int_equal(kconfig_check(frag, config, &bad), 9);
	assert_int_equal(strv_length(bad), 9);
	assert_string_equal(bad[0], "CONFIG_SLUB=y (final .config: is not set)");
	assert_string_equal(bad[1], "CONFIG_HARDENED_USERCOPY=y (final .config: absent)");
	assert_string_equal(bad[2], "CONFIG_NR_CPUS=6 (final .config: 64)");
	assert_string_equal(bad[3], "CONFIG_64BI=y (final .config: absent)");
	assert_string_equal(bad[4], "CONFIG_SLOB=n (final .config: y)");
	assert_string_equal(bad[5], "CONFIG_VIRTIO_BLK=y (final .config: m)");
	assert_string_equal(bad[6], "CONFIG_LOCALVERSION=\"\" (final .config: \"-capsem\")");
	assert_string_equal(bad[7], "line 8: not a CONFIG_NAME=value line: garbage line");
	assert_non_null(strstr(bad[8], "line 9"));
}

static void test_last_wins(void **state)
{
	_cleanup_strv_free_ char **bad = NULL;
	/* the first SLUB line is overridden by the second, which holds */
	assert_int_equal(kconfig_check("CONFIG_SLUB=y\nCONFIG_SLUB=n\n", config, &bad), 0);
	assert_int_equal(kconfig_check("CONFIG_SLUB=n\nCONFIG_SLUB=y\n", config, &bad), 1);
	assert_string_equal(bad[0], "CONFIG_SLUB=y (final .config: is not set)");
}

static void test_empty(void **state)
{
	char **bad = NULL;
	assert_int_equal(kconfig_check("", config, &bad), 0);
	assert_int_equal(kconfig_check("CONFIG_X=y\n", "", &bad), 1);
	strv_free(bad);
	assert_int_equal(kconfig_check("CONFIG_X=y\n", "", NULL), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_last_wins),
		cmocka_unit_test(test_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
