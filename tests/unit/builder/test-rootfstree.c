/* test-rootfstree.c - the rootfs step's pure parts: package lists, version selectors, the
 * setuid/setgid sweep (on a real temporary tree) and the rootfs cache key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cachekey.h"
#include "fdutil.h"
#include "macro.h"
#include "rootfstree.h"
#include "strv.h"

static void test_packages(void **state)
{
	char **v = NULL;
	const char *bad = NULL;
	assert_int_equal(
		rootfs_parse_packages(" python3 git,curl\tgit ca-certificates,,", &v, &bad), 0);
	assert_int_equal(strv_length(v), 4);
	assert_string_equal(v[0], "ca-certificates");
	assert_string_equal(v[1], "curl");
	assert_string_equal(v[2], "git");
	assert_string_equal(v[3], "python3");
	assert_null(v[4]);
	strv_free(v);
	v = NULL;
	assert_int_equal(rootfs_parse_packages("libstdc++6 g++-12 python3.11", &v, NULL), 0);
	strv_free(v);
	v = NULL;

	const char *bads[] = { "",  " , ",	 "Python3", "git;rm", "-oAPT::x",
			       "a", "git $(id)", "pkg/..",  "+x" };
	for (size_t i = 0; i < ELEMENTSOF(bads); i++) {
		assert_int_equal(rootfs_parse_packages(bads[i], &v, &bad), -EINVAL);
		assert_null(v);
	}
	assert_int_equal(rootfs_parse_packages("git Bad", &v, &bad), -EINVAL);
	assert_string_equal(bad, "Bad");
	assert_int_equal(rootfs_parse_packages(NULL, &v, &bad), -EINVAL);

	/* too many names */
	char big[ROOTFS_MAX_PACKAGES * 8 + 64] = "";
	size_t n = 0;
	for (int i = 0; i <= ROOTFS_MAX_PACKAGES; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "p%d ", i);
	assert_int_equal(rootfs_parse_packages(big, &v, &bad), -EINVAL);
}

static void test_versions(void **state)
{
	assert_true(rootfs_node_version_valid("22"));
	assert_true(rootfs_node_version_valid("22.11"));
	assert_true(rootfs_node_version_valid("24.1.0"));
	assert_false(rootfs_node_version_valid("20"));
	assert_false(rootfs_node_version_valid("22.1.2.3"));
	assert_false(rootfs_node_version_valid("v22"));
	assert_false(rootfs_node_version_valid("022"));
	assert_false(rootfs_node_version_valid("22."));
	assert_false(rootfs_node_version_valid("^22"));
	assert_false(rootfs_node_version_valid(""));
	assert_true(rootfs_suite_valid("bookworm"));
	assert_true(rootfs_suite_valid("10.8"));
	assert_false(rootfs_suite_valid("-bookworm"));
	assert_false(rootfs_suite_valid("book worm"));
	assert_false(rootfs_suite_valid("Bookworm"));
	assert_false(rootfs_suite_valid(""));
}

static void touch(const char *dir, const char *name, mode_t mode)
{
	_cleanup_free_ char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chmod(p, mode), 0);
}

static void test_setid(void **state)
{
	char dir[] = "/tmp/capsem-test-rootfs-XXXXXX";
	char first[256];
	size_t n = 99;
	struct stat st;
	_cleanup_free_ char *sub = NULL, *link = NULL, *p = NULL;

	assert_non_null(mkdtemp(dir));
	assert_true(asprintf(&sub, "%s/usr/bin", dir) > 0);
	assert_int_equal(mkdir_p(sub, 0755), 0);
	touch(sub, "su", 04755);
	touch(sub, "wall", 02755);
	touch(sub, "plain", 0755);
	touch(dir, "sticky", 01777);
	assert_true(asprintf(&p, "%s/usr/mail", dir) > 0);
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(chmod(p, 02775), 0); /* a setgid directory */
	assert_true(asprintf(&link, "%s/usr/bin/dangling", dir) > 0);
	assert_int_equal(symlink("/nonexistent", link), 0);

	assert_int_equal(rootfs_count_setid(dir, &n, first, sizeof(first)), 0);
	assert_int_equal(n, 3);
	assert_non_null(strstr(first, dir));
	assert_int_equal(rootfs_strip_setid(dir, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(rootfs_count_setid(dir, &n, first, sizeof(first)), 0);
	assert_int_equal(n, 0);
	assert_string_equal(first, "");
	/* only the setuid/setgid bits go: permissions and the sticky bit stay */
	free(p);
	p = NULL;
	assert_true(asprintf(&p, "%s/usr/bin/su", dir) > 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	free(p);
	p = NULL;
	assert_true(asprintf(&p, "%s/sticky", dir) > 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 01777);
	assert_int_equal(rootfs_count_setid("/nonexistent-capsem", &n, NULL, 0), -ENOENT);
	rm_rf(dir);
}

static void test_key(void **state)
{
	char a[SHA256_HEX_LEN + 1], b[SHA256_HEX_LEN + 1];
	char *p1[] = { "curl", "git", NULL };
	char *p2[] = { "curlgit", NULL };
	char *p3[] = { "curl", "git", "python3", NULL };
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p1, "22", "10", a), 0);
	assert_true(sha256_hex_valid(a));
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p1, "22", "10", b), 0);
	assert_string_equal(a, b); /* stable */
	/* every input moves the key */
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p2, "22", "10", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p3, "22", "10", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(cachekey_rootfs("trixie", "x86_64", p1, "22", "10", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(cachekey_rootfs("bookworm", "aarch64", p1, "22", "10", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p1, "24", "10", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p1, "22", "11", b), 0);
	assert_string_not_equal(a, b);
	/* the count is hashed: moving a name from the list into the next field changes the key */
	char *p4[] = { "curl", NULL };
	assert_int_equal(cachekey_rootfs("bookworm", "x86_64", p4, "git", "10", b), 0);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_packages),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_setid),
		cmocka_unit_test(test_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
