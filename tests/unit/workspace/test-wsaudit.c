/* test-wsaudit.c - the workspace's file audit (src/workspace/wsaudit.c) on a real directory with
 * real inotify: one row per change after coalescing, renames, atomic saves, directory trees,
 * noise summaries, a kernel queue overflow that loses nothing, the reconciliation pass, and a
 * planted symlink that is reported, never followed. */
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
#include "macro.h"
#include "wsaudit.h"

#define MAXROWS 20000

struct row {
	char action[16], path[256], old[256], type[16], source[8];
	int64_t size, count;
};

static struct row rows[MAXROWS];
static size_t n_rows;
static char dir[64];
static int rootfd = -1;
static struct wsaudit *au;
static int64_t clock_ms = 1000000;

static void on_change(const struct wsaudit_change *c, void *ud)
{
	(void)ud;
	assert_true(n_rows < MAXROWS);
	struct row *r = &rows[n_rows++];
	snprintf(r->action, sizeof(r->action), "%s", c->action);
	snprintf(r->path, sizeof(r->path), "%s", c->path);
	snprintf(r->old, sizeof(r->old), "%s", c->old_path ? c->old_path : "");
	snprintf(r->type, sizeof(r->type), "%s", c->type ? c->type : "");
	snprintf(r->source, sizeof(r->source), "%s", c->source);
	r->size = c->size;
	r->count = c->count;
}

static char *at(const char *rel)
{
	static char p[4][512];
	static int i;
	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, rel);
	return p[i];
}

static void put(const char *rel, const char *content)
{
	int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fd_write_all(fd, content, strlen(content)), 0);
	close(fd);
}

/* Read what inotify has and resolve everything as if the quiet period had passed. */
static void settle(void)
{
	n_rows = 0;
	clock_ms += 10;
	assert_int_equal(wsaudit_read(au, clock_ms), 0);
	clock_ms += WSAUDIT_MAX_DELAY_MS + 1;
	(void)wsaudit_flush(au, clock_ms, 0);
}

static const struct row *find(const char *action, const char *path)
{
	for (size_t i = 0; i < n_rows; i++)
		if (streq(rows[i].action, action) && streq(rows[i].path, path))
			return &rows[i];
	return NULL;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/wsaudit-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(mkdir(at("pre"), 0755), 0);
	put("pre/old.txt", "old");
	rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(rootfd >= 0);
	assert_int_equal(wsaudit_new(rootfd, on_change, NULL, &au), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wsaudit_free(au);
	close(rootfd);
	assert_int_equal(rm_rf(dir), 0);
	return 0;
}

static void test_create_modify_rename_delete(void **state)
{
	(void)state;
	settle();
	assert_int_equal(n_rows, 0); /* what was there at the start is no change */
	put("a.txt", "hello");
	settle();
	assert_int_equal(n_rows, 1);
	assert_non_null(find("created", "a.txt"));
	assert_int_equal(find("created", "a.txt")->size, 5);
	assert_string_equal(rows[0].type, "file");
	assert_string_equal(rows[0].source, "watch");

	/* many writes to one file within the window: one row */
	for (int i = 0; i < 20; i++)
		put("a.txt", i % 2 ? "hello world" : "hello again!");
	settle();
	assert_int_equal(n_rows, 1);
	assert_int_equal(find("modified", "a.txt")->size, 11);

	assert_int_equal(rename(at("a.txt"), at("b.txt")), 0);
	settle();
	assert_int_equal(n_rows, 1);
	assert_string_equal(rows[0].action, "renamed");
	assert_string_equal(rows[0].path, "b.txt");
	assert_string_equal(rows[0].old, "a.txt");

	/* an editor's atomic save: a temp file renamed over the target is one modification */
	put(".b.txt.swp", "new content");
	assert_int_equal(rename(at(".b.txt.swp"), at("b.txt")), 0);
	settle();
	assert_int_equal(n_rows, 1);
	assert_non_null(find("modified", "b.txt"));
	assert_int_equal(find("modified", "b.txt")->size, 11);

	/* created and removed within the window: nothing */
	put("tmp.txt", "x");
	assert_int_equal(unlink(at("tmp.txt")), 0);
	settle();
	assert_int_equal(n_rows, 0);

	assert_int_equal(chmod(at("b.txt"), 0755), 0);
	settle();
	assert_non_null(find("modified", "b.txt"));

	assert_int_equal(unlink(at("b.txt")), 0);
	assert_int_equal(unlink(at("pre/old.txt")), 0);
	settle();
	assert_int_equal(n_rows, 2);
	assert_non_null(find("deleted", "b.txt"));
	assert_non_null(find("deleted", "pre/old.txt"));
}

static void test_directories(void **state)
{
	(void)state;
	assert_int_equal(mkdir(at("d"), 0755), 0);
	assert_int_equal(mkdir(at("d/e"), 0755), 0);
	put("d/e/x.c", "int x;");
	settle();
	assert_int_equal(n_rows, 3);
	assert_string_equal(find("created", "d")->type, "dir");
	assert_non_null(find("created", "d/e"));
	assert_int_equal(find("created", "d/e/x.c")->size, 6);

	/* a directory renamed: one row, and its files keep being watched under the new name */
	assert_int_equal(rename(at("d"), at("r")), 0);
	settle();
	assert_int_equal(n_rows, 1);
	assert_string_equal(rows[0].action, "renamed");
	assert_string_equal(rows[0].path, "r");
	assert_string_equal(rows[0].type, "dir");
	put("r/e/x.c", "int xy;");
	settle();
	assert_int_equal(n_rows, 1);
	assert_non_null(find("modified", "r/e/x.c"));

	/* moved out of the workspace: deleted, with everything below */
	char out[128];
	snprintf(out, sizeof(out), "%s-out", dir);
	assert_int_equal(rename(at("r"), out), 0);
	settle();
	assert_int_equal(n_rows, 3);
	assert_non_null(find("deleted", "r"));
	assert_non_null(find("deleted", "r/e"));
	assert_non_null(find("deleted", "r/e/x.c"));
	/* moved back in: created, contents included */
	assert_int_equal(rename(out, at("back")), 0);
	settle();
	assert_int_equal(n_rows, 3);
	assert_non_null(find("created", "back"));
	assert_non_null(find("created", "back/e/x.c"));
	assert_int_equal(rm_rf(at("back")), 0);
	settle();
	assert_int_equal(n_rows, 3);
	assert_non_null(find("deleted", "back/e/x.c"));
}

static void test_noise_summary(void **state)
{
	(void)state;
	assert_int_equal(mkdir(at("node_modules"), 0755), 0);
	assert_int_equal(mkdir(at("node_modules/pkg"), 0755), 0);
	for (int i = 0; i < 50; i++) {
		char n[64];
		snprintf(n, sizeof(n), "node_modules/pkg/f%d.js", i);
		put(n, "0123456789");
	}
	settle();
	/* the noise directory itself is a row; what is below it, one summary */
	assert_int_equal(n_rows, 2);
	assert_non_null(find("created", "node_modules"));
	const struct row *s = find("summary", "node_modules");
	assert_non_null(s);
	assert_int_equal(s->count, 51); /* pkg and its 50 files */
	assert_int_equal(s->size, 500);
	assert_int_equal(wsaudit_noise_root("a/.git/objects/ab/cd"), strlen("a/.git/objects"));
	assert_int_equal(wsaudit_noise_root(".git/objects"), 0);
	assert_int_equal(wsaudit_noise_root(".git/HEAD"), 0);
	assert_int_equal(wsaudit_noise_root("src/__pycache__/m.pyc"), strlen("src/__pycache__"));
	assert_int_equal(rm_rf(at("node_modules")), 0);
	settle();
}

/* The guest plants symlinks: they are recorded as symlinks; nothing behind them is read. */
static void test_symlinks(void **state)
{
	(void)state;
	assert_int_equal(symlink("/etc", at("evil")), 0);
	settle();
	assert_int_equal(n_rows, 1);
	assert_string_equal(find("created", "evil")->type, "symlink");
	assert_int_equal(mkdir(at("s"), 0755), 0);
	settle();
	assert_int_equal(rmdir(at("s")), 0);
	assert_int_equal(symlink("/etc", at("s")), 0);
	settle();
	assert_int_equal(n_rows, 1);
	assert_string_equal(find("modified", "s")->type, "symlink");
	struct wsaudit_stats st;
	wsaudit_get_stats(au, &st);
	unlink(at("evil"));
	unlink(at("s"));
	settle();
}

/* 10,000 files written before the auditor reads anything: the kernel's queue overflows (16384
 * events by default), and the reconciliation finds every file. */
static void test_overflow_loses_nothing(void **state)
{
	(void)state;
	struct wsaudit_stats before, after;
	wsaudit_get_stats(au, &before);
	assert_int_equal(mkdir(at("many"), 0755), 0);
	settle();
	for (int i = 0; i < 10000; i++) {
		char n[64];
		snprintf(n, sizeof(n), "many/f%05d", i);
		put(n, "data");
	}
	settle();
	size_t created = 0;
	for (size_t i = 0; i < n_rows; i++)
		created +=
			streq(rows[i].action, "created") && strncmp(rows[i].path, "many/", 5) == 0;
	assert_int_equal(created, 10000);
	assert_int_equal(n_rows, 10000);
	wsaudit_get_stats(au, &after);
	assert_true(after.overflows > before.overflows);
	assert_int_equal(rm_rf(at("many")), 0);
	settle();
	assert_int_equal(n_rows, 10001);
}

/* Changes nobody read (the VM stopped): the pass at the end finds them. */
static void test_reconcile(void **state)
{
	(void)state;
	put("late.txt", "late");
	assert_int_equal(mkdir(at("pre/sub"), 0755), 0);
	n_rows = 0;
	assert_int_equal(wsaudit_reconcile(au, clock_ms), 0);
	assert_non_null(find("created", "late.txt"));
	assert_non_null(find("created", "pre/sub"));
	n_rows = 0;
	assert_int_equal(wsaudit_reconcile(au, clock_ms), 0);
	assert_int_equal(n_rows, 0); /* the index now agrees with the tree */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_modify_rename_delete),
		cmocka_unit_test(test_directories),
		cmocka_unit_test(test_noise_summary),
		cmocka_unit_test(test_symlinks),
		cmocka_unit_test(test_overflow_loses_nothing),
		cmocka_unit_test(test_reconcile),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
