/* test-wstree.c - safe opens and walks below a workspace root (src/workspace/wstree.c): path
 * syntax, symlinks and ".." planted in the tree never lead outside it, walk order. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdutil.h"
#include "wstree.h"

static char base[64];
static int rootfd = -1;

static void mk(const char *rel, const char *content)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", base, rel);
	if (!content) {
		assert_int_equal(mkdir(p, 0700), 0);
		return;
	}
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fd_write_all(fd, content, strlen(content)), 0);
	close(fd);
}

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "/tmp/wstree-XXXXXX");
	assert_non_null(mkdtemp(base));
	char p[512];
	snprintf(p, sizeof(p), "%s/root", base);
	assert_int_equal(mkdir(p, 0700), 0);
	mk("outside", NULL);
	mk("outside/secret", "s");
	mk("root/b", NULL);
	mk("root/b/z.txt", "zz");
	mk("root/a.txt", "a");
	mk("root/c", NULL);
	snprintf(p, sizeof(p), "%s/outside", base);
	char l[512];
	snprintf(l, sizeof(l), "%s/root/c/escape", base);
	assert_int_equal(symlink(p, l), 0); /* a directory symlink out of the root */
	snprintf(l, sizeof(l), "%s/root/up", base);
	assert_int_equal(symlink("..", l), 0);
	snprintf(p, sizeof(p), "%s/root", base);
	rootfd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(rootfd >= 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	close(rootfd);
	assert_int_equal(rm_rf(base), 0);
	return 0;
}

static void test_path_check(void **state)
{
	(void)state;
	assert_int_equal(wst_path_check("a/b.txt", 0), 0);
	assert_int_equal(wst_path_check(".hidden/..x", 0), 0);
	assert_int_equal(wst_path_check("", 1), 0);
	assert_int_equal(wst_path_check("", 0), -EINVAL);
	assert_int_equal(wst_path_check("/etc/passwd", 0), -EINVAL);
	assert_int_equal(wst_path_check("a/../b", 0), -EINVAL);
	assert_int_equal(wst_path_check("..", 0), -EINVAL);
	assert_int_equal(wst_path_check("./a", 0), -EINVAL);
	assert_int_equal(wst_path_check("a//b", 0), -EINVAL);
	assert_int_equal(wst_path_check("a/", 0), -EINVAL);
	char big[WST_PATH_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(wst_path_check(big, 0), -ENAMETOOLONG);
}

static void test_open(void **state)
{
	(void)state;
	int fd = wst_open(rootfd, "b/z.txt", O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	/* through a planted symlink, to a directory outside or to the parent: refused */
	assert_int_equal(wst_open(rootfd, "c/escape/secret", O_RDONLY, 0), -ELOOP);
	assert_int_equal(wst_open(rootfd, "c/escape", O_RDONLY, 0), -ELOOP);
	assert_int_equal(wst_open(rootfd, "up/outside/secret", O_RDONLY, 0), -ELOOP);
	assert_int_equal(wst_open(rootfd, "../outside/secret", O_RDONLY, 0), -EINVAL);
	/* creating through a symlinked parent: refused, nothing written outside */
	assert_int_equal(wst_open(rootfd, "c/escape/new", O_WRONLY | O_CREAT, 0600), -ELOOP);
	char p[512];
	snprintf(p, sizeof(p), "%s/outside/new", base);
	assert_int_equal(access(p, F_OK), -1);
	const char *name = NULL;
	assert_int_equal(wst_open_parent(rootfd, "c/escape/x", &name), -ELOOP);
	fd = wst_open_parent(rootfd, "b/z.txt", &name);
	assert_true(fd >= 0);
	assert_string_equal(name, "z.txt");
	close(fd);
	struct stat st;
	assert_int_equal(wst_lstat(rootfd, "c/escape", &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(wst_lstat(rootfd, "b/z.txt", &st), 0);
	assert_int_equal(st.st_size, 2);
	assert_int_equal(wst_lstat(rootfd, "nope", &st), -ENOENT);
}

struct seen {
	char list[1024];
	int skip_b;
};

static int collect(const struct wst_entry *e, void *ud)
{
	struct seen *s = ud;
	size_t l = strlen(s->list);
	snprintf(s->list + l, sizeof(s->list) - l, "%s%s:%d:%c", l ? " " : "", e->path, e->depth,
		 S_ISDIR(e->st.st_mode)	  ? 'd'
		 : S_ISLNK(e->st.st_mode) ? 'l'
					  : 'f');
	return s->skip_b && strcmp(e->path, "b") == 0 ? WST_SKIP : 0;
}

static void test_walk(void **state)
{
	(void)state;
	struct seen s = { 0 };
	assert_int_equal(wst_walk(rootfd, "", collect, &s), 0);
	/* sorted, parents first, symlinks reported and never entered */
	assert_string_equal(s.list, "a.txt:1:f b:1:d b/z.txt:2:f c:1:d c/escape:2:l up:1:l");
	memset(&s, 0, sizeof(s));
	s.skip_b = 1;
	assert_int_equal(wst_walk(rootfd, "", collect, &s), 0);
	assert_string_equal(s.list, "a.txt:1:f b:1:d c:1:d c/escape:2:l up:1:l");
	memset(&s, 0, sizeof(s));
	assert_int_equal(wst_walk(rootfd, "b", collect, &s), 0);
	assert_string_equal(s.list, "b/z.txt:2:f");
	assert_int_equal(wst_walk(rootfd, "c/escape", collect, &s), -ELOOP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_check),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_walk),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
