/* test-userns.c - the /etc/subuid and /etc/subgid parser of userns.c: a user's first range
 * large enough, by name or numeric id; too small a range, none, malformed lines and a range
 * starting at 0 (which would map the host's root) are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "userns.h"

static void test_parse(void **state)
{
	static const char text[] = "alice:100000:65536\n"
				   "bob:165536:1000\n"
				   "bob:300000:65536\n"
				   "1003:400000:70000\n"
				   "garbage line\n"
				   "eve:x:65536\n"
				   "zero:0:65536\n"
				   "last:500000:65536"; /* no final newline */
	uint32_t start = 0;
	assert_int_equal(userns_parse_subid(text, "alice", 1001, 65535, &start), 0);
	assert_int_equal(start, 100000);
	/* bob's first range is too small: the second one */
	assert_int_equal(userns_parse_subid(text, "bob", 1002, 65535, &start), 0);
	assert_int_equal(start, 300000);
	/* by numeric id */
	assert_int_equal(userns_parse_subid(text, "carol", 1003, 65535, &start), 0);
	assert_int_equal(start, 400000);
	assert_int_equal(userns_parse_subid(text, "last", 1010, 65535, &start), 0);
	assert_int_equal(start, 500000);
	/* too small, none, malformed, the host's root */
	assert_int_equal(userns_parse_subid(text, "bob", 1002, 70000, &start), -ERANGE);
	assert_int_equal(userns_parse_subid(text, "dave", 1004, 65535, &start), -ENOENT);
	assert_int_equal(userns_parse_subid(text, "eve", 1005, 65535, &start), -ENOENT);
	assert_int_equal(userns_parse_subid(text, "zero", 1006, 65535, &start), -ERANGE);
	assert_int_equal(userns_parse_subid("", "alice", 1001, 1, &start), -ENOENT);
	/* a name is matched whole, not as a prefix */
	assert_int_equal(userns_parse_subid(text, "ali", 1007, 1, &start), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
