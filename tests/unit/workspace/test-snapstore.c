/* test-snapstore.c - workspace snapshots (src/workspace/snapstore.c) on real directories:
 * create -> modify -> changes -> revert is byte-identical and deletes what did not exist; objects
 * are deduplicated; an unchanged tree re-hashes nothing (the stat cache); symlinked parents
 * planted in the workspace never make a snapshot or a revert touch a file outside it; names;
 * compact; a file rewritten in a loop while snapshotted is stored as one whole version or
 * reported unstable, never as a mix; a store inside the workspace is refused. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdutil.h"
#include "jsonutil.h"
#include "sha256.h"
#include "snapstore.h"

static char base[64], ws[96], store[96];

static void path_of(char *p, size_t n, const char *rel)
{
	snprintf(p, n, "%s/%s", base, rel);
}

static void put(const char *rel, const char *content)
{
	char p[512];
	path_of(p, sizeof(p), rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fd_write_all(fd, content, strlen(content)), 0);
	close(fd);
}

static void mkd(const char *rel)
{
	char p[512];
	path_of(p, sizeof(p), rel);
	assert_int_equal(mkdir(p, 0755), 0);
}

/* The file's content (malloc'ed), or NULL when it does not exist. */
static char *get(const char *rel)
{
	char p[512];
	char *s = NULL;
	size_t n;
	path_of(p, sizeof(p), rel);
	if (read_file_small(p, 64u << 20, &s, &n) < 0)
		return NULL;
	return s;
}

static int exists(const char *rel)
{
	char p[512];
	struct stat st;
	path_of(p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "/tmp/snapstore-XXXXXX");
	assert_non_null(mkdtemp(base));
	snprintf(ws, sizeof(ws), "%s/ws", base);
	snprintf(store, sizeof(store), "%s/store", base);
	mkd("ws");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(rm_rf(base), 0);
	return 0;
}

static struct snapstore *open_store(void)
{
	struct snapstore *s = NULL;
	assert_int_equal(snapstore_open(store, ws, NULL, &s), 0);
	return s;
}

static json_int_t jint(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

/* Whether array arr (of {"path"} objects or of strings) names path. */
static int has_path(json_t *arr, const char *path)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
	{
		const char *p = json_is_string(v) ? json_string_value(v)
						  : json_string_value(json_object_get(v, "path"));
		if (p && strcmp(p, path) == 0)
			return 1;
	}
	return 0;
}

static void test_roundtrip(void **state)
{
	(void)state;
	mkd("ws/src");
	mkd("ws/src/deep");
	put("ws/a.txt", "alpha\n");
	put("ws/src/main.c", "int main(void) { return 0; }\n");
	put("ws/src/deep/x.bin", "xxxxxxxxxxxxxxxx");
	put("ws/gone.txt", "delete me");
	char p[512], l[512];
	path_of(l, sizeof(l), "ws/link");
	assert_int_equal(symlink("src/main.c", l), 0);
	path_of(p, sizeof(p), "ws/src/main.c");
	assert_int_equal(chmod(p, 0755), 0);

	struct snapstore *s = open_store();
	_cleanup_json_ json_t *c1 = NULL, *ch = NULL, *rv = NULL, *ch2 = NULL, *list = NULL;
	assert_int_equal(snapstore_create(s, "first", &c1), 0);
	assert_true(json_is_true(json_object_get(c1, "created")));
	json_t *sum = json_object_get(c1, "snapshot");
	assert_int_equal(jint(sum, "files"), 4);
	assert_int_equal(jint(sum, "dirs"), 2);
	assert_int_equal(jint(sum, "symlinks"), 1);
	assert_int_equal(jint(c1, "new_objects"), 4);

	/* modify, delete, add, change a mode, retarget the symlink */
	put("ws/a.txt", "ALPHA, changed\n");
	path_of(p, sizeof(p), "ws/gone.txt");
	assert_int_equal(unlink(p), 0);
	put("ws/new.txt", "new");
	mkd("ws/newdir");
	put("ws/newdir/n.txt", "n");
	assert_int_equal(unlink(l), 0);
	assert_int_equal(symlink("/etc/passwd", l), 0);
	path_of(p, sizeof(p), "ws/src/deep/x.bin");
	assert_int_equal(chmod(p, 0600), 0);

	assert_int_equal(snapstore_changes(s, NULL, &ch), 0);
	assert_string_equal(json_string_value(json_object_get(ch, "snapshot")), "first");
	json_t *added = json_object_get(ch, "added"), *modified = json_object_get(ch, "modified"),
	       *deleted = json_object_get(ch, "deleted");
	assert_int_equal(json_array_size(added), 3);
	assert_true(has_path(added, "new.txt"));
	assert_true(has_path(added, "newdir"));
	assert_true(has_path(added, "newdir/n.txt"));
	assert_int_equal(json_array_size(modified), 3);
	assert_true(has_path(modified, "a.txt"));
	assert_true(has_path(modified, "link"));
	assert_true(has_path(modified, "src/deep/x.bin"));
	assert_int_equal(json_array_size(deleted), 1);
	assert_true(has_path(deleted, "gone.txt"));

	/* revert everything */
	char *paths[] = { ".", NULL };
	assert_int_equal(snapstore_revert(s, "first", paths, &rv), 0);
	assert_int_equal(json_array_size(json_object_get(rv, "errors")), 0);
	assert_true(has_path(json_object_get(rv, "deleted"), "new.txt"));
	assert_true(has_path(json_object_get(rv, "deleted"), "newdir"));
	_cleanup_free_ char *a = get("ws/a.txt"), *g = get("ws/gone.txt");
	assert_string_equal(a, "alpha\n");
	assert_string_equal(g, "delete me");
	assert_false(exists("ws/new.txt"));
	assert_false(exists("ws/newdir"));
	char t[64] = { 0 };
	assert_true(readlink(l, t, sizeof(t) - 1) > 0);
	assert_string_equal(t, "src/main.c");
	struct stat st;
	path_of(p, sizeof(p), "ws/src/deep/x.bin");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	path_of(p, sizeof(p), "ws/src/main.c");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	/* nothing left to change, and no temporary file left behind */
	assert_int_equal(snapstore_changes(s, NULL, &ch2), 0);
	assert_int_equal(jint(json_object_get(ch2, "counts"), "added"), 0);
	assert_int_equal(jint(json_object_get(ch2, "counts"), "modified"), 0);
	assert_int_equal(jint(json_object_get(ch2, "counts"), "deleted"), 0);

	/* one path only; a path absent in the snapshot is deleted */
	put("ws/a.txt", "again");
	put("ws/extra.txt", "extra");
	put("ws/src/main.c", "changed");
	json_decref(rv);
	char *two[] = { "a.txt", "extra.txt", NULL };
	assert_int_equal(snapstore_revert(s, NULL, two, &rv), 0);
	free(a);
	a = get("ws/a.txt");
	assert_string_equal(a, "alpha\n");
	assert_false(exists("ws/extra.txt"));
	_cleanup_free_ char *mc = get("ws/src/main.c");
	assert_string_equal(mc, "changed"); /* not asked for */

	assert_int_equal(snapstore_list(s, &list), 0);
	assert_int_equal(json_array_size(json_object_get(list, "snapshots")), 1);
	snapstore_free(s);
}

static void test_dedup_and_cache(void **state)
{
	(void)state;
	mkd("ws/d");
	char rel[64];
	for (int i = 0; i < 50; i++) {
		snprintf(rel, sizeof(rel), "ws/d/f%02d", i);
		put(rel, i % 2 ? "odd content" : "even content");
	}
	struct snapstore *s = open_store();
	_cleanup_json_ json_t *c1 = NULL, *c2 = NULL, *c3 = NULL, *c4 = NULL;
	assert_int_equal(snapstore_create(s, "one", &c1), 0);
	assert_int_equal(jint(c1, "hashed_files"), 50);
	assert_int_equal(jint(c1, "new_objects"), 2); /* two distinct contents */
	/* the same files again: nothing read, nothing stored */
	assert_int_equal(snapstore_create(s, "two", &c2), 0);
	assert_true(json_is_true(json_object_get(c2, "created")));
	assert_int_equal(jint(c2, "hashed_files"), 0);
	assert_int_equal(jint(c2, "cached_files"), 50);
	assert_int_equal(jint(c2, "new_objects"), 0);
	/* an automatic snapshot of an unchanged tree is skipped */
	assert_int_equal(snapstore_create(s, NULL, &c3), 0);
	assert_true(json_is_false(json_object_get(c3, "created")));
	assert_string_equal(json_string_value(json_object_get(c3, "reason")), "unchanged");
	assert_int_equal(jint(c3, "hashed_files"), 0);
	/* one file changed: one file read */
	put("ws/d/f07", "now different");
	assert_int_equal(snapstore_create(s, NULL, &c4), 0);
	assert_true(json_is_true(json_object_get(c4, "created")));
	assert_int_equal(jint(c4, "hashed_files"), 1);
	assert_int_equal(jint(c4, "new_objects"), 1);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(c4, "snapshot"), "name")),
		"auto-000003");
	snapstore_free(s);
}

static void test_symlinked_parent(void **state)
{
	(void)state;
	mkd("outside");
	put("outside/secret", "TOP SECRET");
	mkd("ws/sub");
	put("ws/sub/f", "inside");
	struct snapstore *s = open_store();
	_cleanup_json_ json_t *c1 = NULL, *c2 = NULL, *rv = NULL, *h = NULL;
	assert_int_equal(snapstore_create(s, "before", &c1), 0);

	/* the guest swaps sub for a symlink to a directory outside, and plants an escape link */
	char p[512], l[512];
	path_of(p, sizeof(p), "ws/sub/f");
	assert_int_equal(unlink(p), 0);
	path_of(p, sizeof(p), "ws/sub");
	assert_int_equal(rmdir(p), 0);
	path_of(p, sizeof(p), "outside");
	path_of(l, sizeof(l), "ws/sub");
	assert_int_equal(symlink(p, l), 0);
	path_of(l, sizeof(l), "ws/evil");
	assert_int_equal(symlink(p, l), 0);

	/* a snapshot records the links, never what they point at */
	assert_int_equal(snapstore_create(s, "after", &c2), 0);
	assert_int_equal(jint(json_object_get(c2, "snapshot"), "files"), 0);
	assert_int_equal(jint(c2, "new_objects"), 0);
	char sha[SHA256_HEX_LEN + 4];
	/* "TOP SECRET" was never stored: no object has its bytes */
	assert_int_equal(sha256_hex_buf("TOP SECRET", 10, sha), 0);
	char op[600];
	snprintf(op, sizeof(op), "%s/objects/%.2s/%s", store, sha, sha);
	assert_int_equal(access(op, F_OK), -1);

	/* reverting sub/f from "after" (absent there) must not delete outside/secret through the
	 * link; reverting evil/secret likewise */
	char *paths[] = { "sub/f", "evil/secret", NULL };
	assert_int_equal(snapstore_revert(s, "after", paths, &rv), 0);
	_cleanup_free_ char *sec = get("outside/secret");
	assert_string_equal(sec, "TOP SECRET");
	json_decref(rv);
	rv = NULL;
	/* reverting sub/f from "before" while sub is a link: refused, nothing written outside */
	char *one[] = { "sub/f", NULL };
	assert_int_equal(snapstore_revert(s, "before", one, &rv), 0);
	assert_int_equal(json_array_size(json_object_get(rv, "errors")), 1);
	assert_false(exists("outside/f"));
	json_decref(rv);
	rv = NULL;
	/* reverting sub itself replaces the link with the directory */
	char *dir[] = { "sub", NULL };
	assert_int_equal(snapstore_revert(s, "before", dir, &rv), 0);
	assert_int_equal(json_array_size(json_object_get(rv, "errors")), 0);
	struct stat st;
	path_of(p, sizeof(p), "ws/sub");
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	_cleanup_free_ char *f = get("ws/sub/f");
	assert_string_equal(f, "inside");
	free(sec);
	sec = get("outside/secret");
	assert_string_equal(sec, "TOP SECRET");
	assert_false(exists("outside/f"));
	DIR *d = opendir(p);
	assert_non_null(d);
	closedir(d);

	assert_int_equal(snapstore_history(s, "sub", &h), 0);
	json_t *v = json_object_get(h, "versions");
	assert_int_equal(json_array_size(v), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "type")),
			    "symlink");
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 1), "type")),
			    "dir");
	snapstore_free(s);
}

static void test_names_delete_compact(void **state)
{
	(void)state;
	assert_true(snapstore_name_valid("v1.0_final-2"));
	assert_true(snapstore_name_valid("A"));
	assert_false(snapstore_name_valid(""));
	assert_false(snapstore_name_valid("-x"));
	assert_false(snapstore_name_valid(".hidden"));
	assert_false(snapstore_name_valid("a/b"));
	assert_false(snapstore_name_valid("a b"));
	assert_false(snapstore_name_valid("auto-000001"));
	assert_false(snapstore_name_valid(
		"x1234567890123456789012345678901234567890123456789012345678901234"));
	put("ws/f", "one");
	struct snapstore *s = open_store();
	_cleanup_json_ json_t *c = NULL, *c2 = NULL, *k = NULL, *k2 = NULL, *ch = NULL, *h = NULL;
	assert_int_equal(snapstore_create(s, "../x", &c), -EINVAL);
	assert_int_equal(snapstore_create(s, "auto-000009", &c), -EINVAL);
	assert_int_equal(snapstore_changes(s, NULL, &ch), -ENOENT);
	assert_int_equal(snapstore_create(s, "keep", &c), 0);
	json_decref(c);
	assert_int_equal(snapstore_create(s, "keep", &c), -EEXIST);
	c = NULL;
	put("ws/f", "two, a different and longer content");
	assert_int_equal(snapstore_create(s, "drop", &c2), 0);
	assert_int_equal(snapstore_changes(s, "nope", &ch), -ENOENT);
	assert_int_equal(snapstore_delete(s, "nope"), -ENOENT);
	assert_int_equal(snapstore_history(s, "../etc", &h), -EINVAL);
	assert_int_equal(snapstore_delete(s, "drop"), 0);
	/* still referenced by the stat cache only: freed */
	assert_int_equal(snapstore_compact(s, &k), 0);
	assert_int_equal(jint(k, "removed_objects"), 1);
	assert_int_equal(jint(k, "freed_bytes"), 35);
	assert_int_equal(jint(k, "kept_objects"), 1);
	assert_int_equal(snapstore_compact(s, &k2), 0);
	assert_int_equal(jint(k2, "removed_objects"), 0);
	/* the next snapshot stores the dropped content again (the cache names a missing object) */
	json_decref(c2);
	assert_int_equal(snapstore_create(s, "again", &c2), 0);
	assert_int_equal(jint(c2, "new_objects"), 1);
	char *all[] = { ".", NULL };
	json_decref(c2);
	assert_int_equal(snapstore_revert(s, "keep", all, &c2), 0);
	_cleanup_free_ char *f = get("ws/f");
	assert_string_equal(f, "one");
	snapstore_free(s);
}

/* Names are bytes: a file and a symlink target that are not UTF-8 are snapshotted, listed and
 * restored like any other. */
static void test_non_utf8_names(void **state)
{
	(void)state;
	put("ws/bad\xff.txt", "latin-1 name");
	char l[512];
	path_of(l, sizeof(l), "ws/link\xfe");
	assert_int_equal(symlink("target\xfd", l), 0);
	struct snapstore *s = open_store();
	_cleanup_json_ json_t *c = NULL, *ch = NULL, *rv = NULL, *c2 = NULL;
	assert_int_equal(snapstore_create(s, "n", &c), 0);
	assert_int_equal(jint(json_object_get(c, "snapshot"), "files"), 1);
	put("ws/bad\xff.txt", "changed");
	assert_int_equal(unlink(l), 0);
	assert_int_equal(snapstore_changes(s, NULL, &ch), 0);
	assert_true(has_path(json_object_get(ch, "modified"), "bad\\xff.txt"));
	assert_true(has_path(json_object_get(ch, "deleted"), "link\\xfe"));
	char *all[] = { ".", NULL };
	assert_int_equal(snapstore_revert(s, NULL, all, &rv), 0);
	assert_int_equal(json_array_size(json_object_get(rv, "errors")), 0);
	_cleanup_free_ char *f = get("ws/bad\xff.txt");
	assert_string_equal(f, "latin-1 name");
	char t[64] = { 0 };
	assert_true(readlink(l, t, sizeof(t) - 1) > 0);
	assert_string_equal(t, "target\xfd");
	assert_int_equal(snapstore_create(s, NULL, &c2), 0);
	assert_true(json_is_false(json_object_get(c2, "created")));
	snapstore_free(s);
}

static void test_ring(void **state)
{
	(void)state;
	struct snapstore *s = NULL;
	struct snapstore_opts o = { .auto_keep = 3 };
	assert_int_equal(snapstore_open(store, ws, &o, &s), 0);
	char content[32];
	for (int i = 0; i < 5; i++) {
		snprintf(content, sizeof(content), "version %d", i);
		put("ws/f", content);
		_cleanup_json_ json_t *c = NULL;
		assert_int_equal(snapstore_create(s, NULL, &c), 0);
		assert_true(json_is_true(json_object_get(c, "created")));
		if (i >= 3)
			assert_int_equal(json_array_size(json_object_get(c, "pruned")), 1);
	}
	_cleanup_json_ json_t *l = NULL, *h = NULL;
	assert_int_equal(snapstore_list(s, &l), 0);
	json_t *arr = json_object_get(l, "snapshots");
	assert_int_equal(json_array_size(arr), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "name")),
			    "auto-000005");
	/* the pruned versions' objects are gone; three remain */
	_cleanup_json_ json_t *k = NULL;
	assert_int_equal(snapstore_compact(s, &k), 0);
	assert_int_equal(jint(k, "kept_objects"), 3);
	assert_int_equal(snapstore_history(s, "f", &h), 0);
	assert_int_equal(json_array_size(json_object_get(h, "versions")), 3);
	snapstore_free(s);
}

static void test_store_placement(void **state)
{
	(void)state;
	struct snapstore *s = NULL;
	char in[160], up[160];
	snprintf(in, sizeof(in), "%s/sub/.snapshots", ws);
	mkd("ws/sub");
	assert_int_equal(snapstore_open(in, ws, NULL, &s), -EINVAL);
	assert_false(exists("ws/sub/.snapshots"));
	/* through a symlink from outside into the workspace: still inside */
	char l[512];
	path_of(l, sizeof(l), "viaskip");
	assert_int_equal(symlink(ws, l), 0);
	snprintf(in, sizeof(in), "%s/viaskip/x", base);
	assert_int_equal(snapstore_open(in, ws, NULL, &s), -EINVAL);
	/* the workspace inside the store */
	snprintf(up, sizeof(up), "%s", base);
	assert_int_equal(snapstore_open(up, ws, NULL, &s), -EINVAL);
	assert_int_equal(snapstore_open(ws, ws, NULL, &s), -EINVAL);
	assert_null(s);
}

/* A writer rewrites one file in place, alternating two contents of one size. */
#define BIG (1u << 20)
struct writer {
	char path[512];
	atomic_int stop;
	atomic_uint writes;
	atomic_int calm; /* pause now and then (else write without a break) */
	char *a, *b;
};

static void *writer_main(void *ud)
{
	struct writer *w = ud;
	int fd = open(w->path, O_WRONLY);
	for (unsigned i = 0; !w->stop; i++) {
		if (pwrite(fd, i % 2 ? w->b : w->a, BIG, 0) != (ssize_t)BIG)
			break;
		w->writes = i + 1;
		if (w->calm && i % 64 == 63)
			usleep(20000); /* sometimes hold still long enough to be copied */
	}
	close(fd);
	return NULL;
}

static void test_concurrent_writer(void **state)
{
	(void)state;
	struct writer w = { 0 };
	w.a = malloc(BIG);
	w.b = malloc(BIG);
	assert_non_null(w.a);
	assert_non_null(w.b);
	memset(w.a, 'A', BIG);
	memset(w.b, 'B', BIG);
	path_of(w.path, sizeof(w.path), "ws/hot");
	int fd = open(w.path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fd_write_all(fd, w.a, BIG), 0);
	close(fd);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	struct snapstore *s = open_store();
	int stored = 0, unstable = 0, seen_a = 0, seen_b = 0;
	while (w.writes < 2)
		usleep(1000);
	for (int i = 0; i < 12; i++) {
		char name[16];
		snprintf(name, sizeof(name), "s%d", i);
		w.calm = i >= 6;
		_cleanup_json_ json_t *c = NULL, *h = NULL;
		assert_int_equal(snapstore_create(s, name, &c), 0);
		if (json_array_size(json_object_get(c, "unstable"))) {
			assert_string_equal(json_string_value(json_array_get(
						    json_object_get(c, "unstable"), 0)),
					    "hot");
			unstable++;
			continue;
		}
		assert_int_equal(snapstore_history(s, "hot", &h), 0);
		json_t *v = json_array_get(json_object_get(h, "versions"), 0);
		const char *sha = json_string_value(json_object_get(v, "sha256"));
		assert_non_null(sha);
		char op[600];
		snprintf(op, sizeof(op), "%s/objects/%.2s/%s", store, sha, sha);
		char *obj = NULL;
		size_t n = 0;
		assert_int_equal(read_file_small(op, 2 * BIG, &obj, &n), 0);
		assert_int_equal(n, BIG);
		int all_a = 1, all_b = 1;
		for (size_t k = 0; k < n; k++) {
			all_a &= obj[k] == 'A';
			all_b &= obj[k] == 'B';
		}
		free(obj);
		assert_true(all_a || all_b); /* one version, never a mix */
		seen_a |= all_a;
		seen_b |= all_b;
		stored++;
	}
	w.stop = 1;
	pthread_join(t, NULL);
	print_message("concurrent writer: %u writes; %d snapshots stored it whole (A %d, B %d), %d "
		      "reported it unstable\n",
		      w.writes, stored, seen_a, seen_b, unstable);
	assert_true(w.writes > 12);
	assert_int_equal(stored + unstable, 12);
	/* a revert onto the file while it is not written: whole content */
	_cleanup_json_ json_t *rv = NULL;
	char *one[] = { "hot", NULL };
	if (stored) {
		assert_int_equal(snapstore_revert(s, NULL, one, &rv), 0);
		char *cur = get("ws/hot");
		assert_non_null(cur);
		assert_true(cur[0] == 'A' || cur[0] == 'B');
		free(cur);
	}
	snapstore_free(s);
	free(w.a);
	free(w.b);
}

/* Two handles (as two processes would) on one store, from two threads. */
struct racer {
	int id;
	int ok;
};

static void *racer_main(void *ud)
{
	struct racer *r = ud;
	struct snapstore *s = NULL;
	if (snapstore_open(store, ws, NULL, &s) < 0)
		return NULL;
	r->ok = 1;
	for (int i = 0; i < 10; i++) {
		char name[32];
		snprintf(name, sizeof(name), "r%d-%d", r->id, i);
		json_t *c = NULL;
		if (snapstore_create(s, name, &c) < 0)
			r->ok = 0;
		json_decref(c);
	}
	snapstore_free(s);
	return NULL;
}

static void test_two_handles(void **state)
{
	(void)state;
	put("ws/f", "x");
	struct racer r[2] = { { .id = 0 }, { .id = 1 } };
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, racer_main, &r[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_true(r[0].ok && r[1].ok);
	struct snapstore *s = open_store();
	_cleanup_json_ json_t *l = NULL;
	assert_int_equal(snapstore_list(s, &l), 0);
	assert_int_equal(json_array_size(json_object_get(l, "snapshots")), 20);
	snapstore_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedup_and_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlinked_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_delete_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_utf8_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_placement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
