/* test-manifest.c - image manifests: write, load, verify, and every way an image can be bad.
 * Uses real files in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "macro.h"
#include "manifest.h"

static char dir[] = "/tmp/capsem-test-manifest-XXXXXX";

static void put(const char *name, const char *text)
{
	_cleanup_free_ char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	assert_int_equal(write_file_atomic(p, text, strlen(text), 0644), 0);
}

static int setup(void **state)
{
	struct manifest m = { .name = "minimal", .arch = "x86_64", .created = NULL };
	assert_non_null(mkdtemp(dir));
	put("vmlinuz", "kernel bytes");
	put("initrd.img", "initrd bytes, a few more of them");
	assert_int_equal(manifest_asset_from_file(&m.kernel, dir, "vmlinuz", "6.1.192-capsem"), 0);
	assert_int_equal(manifest_asset_from_file(&m.initrd, dir, "initrd.img", NULL), 0);
	assert_int_equal(manifest_write(dir, &m), 0);
	manifest_asset_done(&m.kernel);
	manifest_asset_done(&m.initrd);
	return 0;
}

static int teardown(void **state)
{
	rm_rf(dir);
	return 0;
}

static void test_roundtrip(void **state)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	_cleanup_free_ char *kpath = NULL;
	char *err = NULL;

	assert_int_equal(manifest_verify(dir, &err), 0);
	assert_null(err);
	assert_int_equal(manifest_verify(dir, NULL), 0);
	assert_int_equal(manifest_load(dir, &m), 0);
	assert_string_equal(m->name, "minimal");
	assert_string_equal(m->arch, "x86_64");
	assert_string_equal(m->kernel.file, "vmlinuz");
	assert_string_equal(m->kernel.version, "6.1.192-capsem");
	assert_null(m->initrd.version);
	assert_int_equal(m->kernel.size, 12);
	assert_int_equal(m->initrd.size, strlen("initrd bytes, a few more of them"));
	assert_true(asprintf(&kpath, "%s/vmlinuz", dir) > 0);
	assert_string_equal(m->kernel.path, kpath);
	assert_true(sha256_hex_valid(m->initrd.sha256));
	assert_null(m->rootfs.file); /* a manifest without a rootfs is still valid */
	assert_null(m->rootfs.path);
	assert_int_equal(strlen(m->created), 20);
	assert_int_equal(m->created[19], 'Z');
}

/* Run verify, expect failure r and an error message containing needle. */
static void expect_bad(int r, const char *needle)
{
	char *err = NULL;
	assert_int_equal(manifest_verify(dir, &err), r);
	assert_non_null(err);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
	free(err);
}

static void test_tampered(void **state)
{
	put("initrd.img", "initrd bytes, a few more of THEM"); /* same size */
	expect_bad(-EBADMSG, "initrd.img: sha256 mismatch");
	put("initrd.img", "initrd bytes");
	expect_bad(-EMSGSIZE, "initrd.img: size 12 bytes, manifest says 32");
	put("initrd.img", "initrd bytes, a few more of them");
	assert_int_equal(manifest_verify(dir, NULL), 0);

	_cleanup_free_ char *k = NULL, *k2 = NULL;
	assert_true(asprintf(&k, "%s/vmlinuz", dir) > 0);
	assert_true(asprintf(&k2, "%s/vmlinuz.real", dir) > 0);
	assert_int_equal(rename(k, k2), 0);
	expect_bad(-ENOENT, "vmlinuz");
	assert_int_equal(symlink("vmlinuz.real", k), 0); /* same bytes, but through a symlink */
	expect_bad(-ELOOP, "vmlinuz: is a symlink");
	assert_int_equal(unlink(k), 0);
	assert_int_equal(mkdir(k, 0755), 0);
	expect_bad(-EBADF, "vmlinuz: not a regular file");
	assert_int_equal(rmdir(k), 0);
	assert_int_equal(rename(k2, k), 0);
	assert_int_equal(manifest_verify(dir, NULL), 0);
}

static void test_bad_manifests(void **state)
{
	_cleanup_free_ char *good = NULL, *mpath = NULL;
	assert_true(asprintf(&mpath, "%s/manifest.json", dir) > 0);
	assert_int_equal(read_file_small(mpath, 1 << 16, &good, NULL), 0);

	static const struct {
		const char *json, *needle;
	} cases[] = {
		{ "not json", "not valid JSON" },
		{ "[]", "not a JSON object" },
		{ "{\"format\": 2}", "\"format\" must be 1" },
		{ "{\"format\": 1, \"format\": 1}", "not valid JSON" }, /* duplicate key */
		{ "{\"format\": 1, \"name\": \"m\", \"arch\": \"x86_64\", \"created\": \"t\"}",
		  "\"kernel\" is missing" },
		{ "{\"format\": 1, \"name\": \"m\", \"arch\": \"x86_64\", \"created\": \"t\", "
		  "\"kernel\": {\"file\": \"../../etc/passwd\", \"sha256\": \"00\", \"size\": 1}}",
		  "kernel.file must be a plain file name" },
		{ "{\"format\": 1, \"name\": \"m\", \"arch\": \"x86_64\", \"created\": \"t\", "
		  "\"kernel\": {\"file\": \"vmlinuz\", \"sha256\": \"00\", \"size\": 1}}",
		  "kernel.sha256 must be 64" },
		{ "{\"format\": 1, \"name\": \"m\", \"arch\": \"x86_64\", \"created\": \"t\", "
		  "\"kernel\": {\"file\": \"vmlinuz\", \"sha256\": "
		  "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
		  "\"size\": -1}}",
		  "kernel.size must be a non-negative" },
		{ "{\"format\": 1, \"name\": \"m\", \"arch\": \"x86_64\", \"created\": \"t\", "
		  "\"kernel\": {\"file\": \"vmlinuz\", \"sha256\": "
		  "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", "
		  "\"size\": 0}}",
		  "kernel.version must be a string" },
		{ "{\"format\": 1, \"name\": \"\", \"arch\": \"x86_64\", \"created\": \"t\"}",
		  "\"name\" must be a non-empty string" },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		put("manifest.json", cases[i].json);
		expect_bad(-EBADMSG, cases[i].needle);
		struct manifest *m = (struct manifest *)0x1;
		assert_int_equal(manifest_load(dir, &m), -EBADMSG);
		assert_ptr_equal(m, (struct manifest *)0x1); /* untouched on failure */
	}
	/* over the size cap */
	_cleanup_free_ char *huge = malloc(MANIFEST_MAX_BYTES + 2);
	memset(huge, ' ', MANIFEST_MAX_BYTES + 1);
	huge[MANIFEST_MAX_BYTES + 1] = 0;
	put("manifest.json", huge);
	expect_bad(-EFBIG, "larger than");
	assert_int_equal(unlink(mpath), 0);
	expect_bad(-ENOENT, "manifest.json");
	put("manifest.json", good);
	assert_int_equal(manifest_verify(dir, NULL), 0);
}

/* The optional rootfs asset: absent in old manifests (test_roundtrip), written, loaded and
 * verified when present, and a tampered rootfs is caught. */
static void test_rootfs(void **state)
{
	_cleanup_free_ char *rdir = NULL;
	char *err = NULL;
	struct manifest m = { .name = "debian", .arch = "x86_64" };
	struct manifest *l = NULL;

	assert_true(asprintf(&rdir, "%s/rootfs-image", dir) > 0);
	assert_int_equal(mkdir(rdir, 0755), 0);
	const char *files[][2] = { { "vmlinux", "k" },
				   { "initrd.img", "i" },
				   { "rootfs.sqfs", "squashfs bytes" } };
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_free_ char *p = NULL;
		assert_true(asprintf(&p, "%s/%s", rdir, files[i][0]) > 0);
		assert_int_equal(write_file_atomic(p, files[i][1], strlen(files[i][1]), 0644), 0);
	}
	assert_int_equal(manifest_asset_from_file(&m.kernel, rdir, "vmlinux", "6.1"), 0);
	assert_int_equal(manifest_asset_from_file(&m.initrd, rdir, "initrd.img", NULL), 0);
	assert_int_equal(manifest_asset_from_file(&m.rootfs, rdir, "rootfs.sqfs", NULL), 0);
	assert_int_equal(manifest_write(rdir, &m), 0);
	manifest_asset_done(&m.kernel);
	manifest_asset_done(&m.initrd);
	manifest_asset_done(&m.rootfs);

	assert_int_equal(manifest_verify(rdir, &err), 0);
	assert_int_equal(manifest_load(rdir, &l), 0);
	assert_string_equal(l->rootfs.file, "rootfs.sqfs");
	assert_int_equal(l->rootfs.size, strlen("squashfs bytes"));
	assert_non_null(strstr(l->rootfs.path, "/rootfs-image/rootfs.sqfs"));
	assert_null(l->rootfs.version);
	manifest_free(l);

	/* same size, other bytes */
	_cleanup_free_ char *rp = NULL;
	assert_true(asprintf(&rp, "%s/rootfs.sqfs", rdir) > 0);
	assert_int_equal(write_file_atomic(rp, "SQUASHFS BYTES", 14, 0644), 0);
	assert_int_equal(manifest_verify(rdir, &err), -EBADMSG);
	assert_non_null(err);
	assert_non_null(strstr(err, "rootfs.sqfs: sha256 mismatch"));
	free(err);
	err = NULL;
	assert_int_equal(unlink(rp), 0);
	assert_int_equal(manifest_verify(rdir, &err), -ENOENT);
	free(err);

	/* a rootfs that is not an object is a bad manifest, not "no rootfs" */
	static const char bad[] =
		"{\"format\":1,\"name\":\"d\",\"arch\":\"x86_64\",\"created\":\"now\","
		"\"kernel\":{\"file\":\"vmlinux\",\"sha256\":"
		"\"0000000000000000000000000000000000000000000000000000000000000000\",\"size\":1,"
		"\"version\":\"6.1\"},"
		"\"initrd\":{\"file\":\"initrd.img\",\"sha256\":"
		"\"0000000000000000000000000000000000000000000000000000000000000000\",\"size\":1},"
		"\"rootfs\":\"rootfs.sqfs\"}";
	l = NULL;
	err = NULL;
	assert_int_equal(manifest_parse(bad, strlen(bad), rdir, "m.json", &l, &err), -EBADMSG);
	assert_null(l);
	assert_non_null(strstr(err, "\"rootfs\" is missing or not an object"));
	free(err);
	rm_rf(rdir);
}

static void test_write_rejects(void **state)
{
	struct manifest m = { .name = "x", .arch = "x86_64" };
	/* no assets filled in */
	assert_int_equal(manifest_write(dir, &m), -EINVAL);
	struct manifest_asset a = { 0 };
	assert_int_equal(manifest_asset_from_file(&a, dir, "../vmlinuz", NULL), -EINVAL);
	assert_int_equal(manifest_asset_from_file(&a, dir, ".hidden", NULL), -EINVAL);
	assert_int_equal(manifest_asset_from_file(&a, dir, "missing", NULL), -ENOENT);
	assert_null(a.file);
	manifest_free(NULL);
}

/* A fork image: no kernel of its own, its base's files, its own disk; a changed base, a missing
 * base, a tampered disk and a fork named as a base are all refused. */
static void test_fork(void **state)
{
	char top[] = "/tmp/capsem-test-fork-XXXXXX";
	_cleanup_free_ char *base = NULL, *fork = NULL, *fork2 = NULL, *p = NULL;
	struct manifest m = { .name = "base", .arch = "x86_64" };
	char *err = NULL;
	assert_non_null(mkdtemp(top));
	assert_true(asprintf(&base, "%s/base", top) > 0);
	assert_true(asprintf(&fork, "%s/fork", top) > 0);
	assert_true(asprintf(&fork2, "%s/fork2", top) > 0);
	assert_int_equal(mkdir(base, 0755), 0);
	assert_int_equal(mkdir(fork, 0755), 0);
	assert_int_equal(mkdir(fork2, 0755), 0);
#define PUT(d, n, t)                                                           \
	do {                                                                   \
		free(p);                                                       \
		assert_true(asprintf(&p, "%s/%s", d, n) > 0);                  \
		assert_int_equal(write_file_atomic(p, t, strlen(t), 0644), 0); \
	} while (0)
	PUT(base, "vmlinuz", "kernel");
	PUT(base, "initrd.img", "initrd");
	assert_int_equal(manifest_asset_from_file(&m.kernel, base, "vmlinuz", "6.1"), 0);
	assert_int_equal(manifest_asset_from_file(&m.initrd, base, "initrd.img", NULL), 0);
	assert_int_equal(manifest_write(base, &m), 0);
	manifest_asset_done(&m.kernel);
	manifest_asset_done(&m.initrd);

	struct manifest f = { .name = "fork",
			      .arch = "x86_64",
			      .base = "base",
			      .parent_vm = "dev",
			      .description = "with tools" };
	free(p);
	assert_true(asprintf(&p, "%s/manifest.json", base) > 0);
	assert_int_equal(sha256_hex_file(p, f.base_sha256, NULL), 0);
	PUT(fork, "disk.img", "disk bytes");
	PUT(fork, "workspace.tar", "tar bytes");
	assert_int_equal(manifest_asset_from_file(&f.disk, fork, "disk.img", NULL), 0);
	assert_int_equal(manifest_asset_from_file(&f.workspace, fork, "workspace.tar", NULL), 0);
	assert_int_equal(manifest_write(fork, &f), 0);

	_cleanup_manifest_ struct manifest *l = NULL;
	assert_int_equal(manifest_load(fork, &l), 0);
	assert_string_equal(l->base, "base");
	assert_string_equal(l->description, "with tools");
	assert_non_null(strstr(l->kernel.path, "/base/vmlinuz")); /* the base's kernel */
	assert_non_null(strstr(l->disk.path, "/fork/disk.img"));
	assert_int_equal(manifest_verify(fork, &err), 0);
	assert_null(err);
	free(p);
	assert_true(asprintf(&p, "%s/.verified", fork) > 0);
	assert_int_equal(access(p, F_OK), 0); /* the next boot hashes nothing unchanged */
	assert_int_equal(manifest_verify(fork, &err), 0);

	/* the disk tampered with (same size): hashed again, refused */
	PUT(fork, "disk.img", "DISK bytes");
	assert_int_equal(manifest_verify(fork, &err), -EBADMSG);
	assert_non_null(strstr(err, "disk.img"));
	free(err);
	err = NULL;
	PUT(fork, "disk.img", "disk bytes");
	assert_int_equal(manifest_verify(fork, &err), 0);

	/* a fork cannot be the base of another fork */
	struct manifest f2 = f;
	f2.name = "fork2";
	f2.base = "fork";
	f2.workspace = (struct manifest_asset){ 0 };
	assert_int_equal(manifest_asset_from_file(&f2.disk, fork2, "disk.img", NULL), -ENOENT);
	PUT(fork2, "disk.img", "x");
	assert_int_equal(manifest_asset_from_file(&f2.disk, fork2, "disk.img", NULL), 0);
	assert_int_equal(manifest_write(fork2, &f2), 0);
	assert_int_equal(manifest_verify(fork2, &err), -EBADMSG);
	assert_non_null(strstr(err, "itself a fork"));
	free(err);
	err = NULL;
	manifest_asset_done(&f2.disk);

	/* the base rebuilt: its manifest changed, the fork is refused */
	m.created = "2030-01-01T00:00:00Z";
	assert_int_equal(manifest_asset_from_file(&m.kernel, base, "vmlinuz", "6.1"), 0);
	assert_int_equal(manifest_asset_from_file(&m.initrd, base, "initrd.img", NULL), 0);
	assert_int_equal(manifest_write(base, &m), 0);
	manifest_asset_done(&m.kernel);
	manifest_asset_done(&m.initrd);
	assert_int_equal(manifest_verify(fork, &err), -EBADMSG);
	assert_non_null(strstr(err, "changed since the fork"));
	free(err);
	err = NULL;
	/* the base gone */
	assert_int_equal(rm_rf(base), 0);
	assert_int_equal(manifest_verify(fork, &err), -ENOENT);
	assert_non_null(strstr(err, "not installed"));
	free(err);
	manifest_asset_done(&f.disk);
	manifest_asset_done(&f.workspace);
	assert_int_equal(rm_rf(top), 0);
#undef PUT
}

/* The package's images (read-only, shared) never get a cache file: it lives in the caller's
 * Capsem home, and tampering is still found. */
static void test_system_image_cache(void **state)
{
	char top[] = "/tmp/capsem-test-syscache-XXXXXX";
	_cleanup_free_ char *sys = NULL, *home = NULL, *img = NULL, *p = NULL;
	char *err = NULL;
	assert_non_null(mkdtemp(top));
	assert_true(asprintf(&sys, "%s/sys", top) > 0);
	assert_true(asprintf(&home, "%s/home", top) > 0);
	assert_true(asprintf(&img, "%s/sys/minimal", top) > 0);
	assert_int_equal(mkdir_p(img, 0755), 0);
	const char *files[] = { "vmlinuz", "initrd.img", "manifest.json" };
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_free_ char *from = NULL, *to = NULL;
		assert_true(asprintf(&from, "%s/%s", dir, files[i]) > 0);
		assert_true(asprintf(&to, "%s/%s", img, files[i]) > 0);
		_cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
		_cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		assert_true(in >= 0 && out >= 0);
		assert_int_equal(copy_sparse(in, out), 0);
	}
	assert_true(asprintf(&p, "%s/.verified", img) > 0);
	unlink(p);
	setenv("CAPSEM_SYSTEM_IMAGES_DIR", sys, 1);
	setenv("CAPSEM_HOME", home, 1);
	assert_int_equal(manifest_verify(img, &err), 0);
	assert_int_equal(access(p, F_OK), -1); /* nothing written into the system's directory */
	free(p);
	assert_true(asprintf(&p, "%s/cache/verified/minimal.json", home) > 0);
	assert_int_equal(access(p, F_OK), 0);
	free(p);
	assert_true(asprintf(&p, "%s/vmlinuz", img) > 0);
	assert_int_equal(write_file_atomic(p, "KERNEL bytes", 12, 0644), 0);
	assert_int_equal(manifest_verify(img, &err), -EBADMSG);
	assert_non_null(strstr(err, "vmlinuz"));
	free(err);
	unsetenv("CAPSEM_SYSTEM_IMAGES_DIR");
	unsetenv("CAPSEM_HOME");
	assert_int_equal(rm_rf(top), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),	   cmocka_unit_test(test_tampered),
		cmocka_unit_test(test_bad_manifests),	   cmocka_unit_test(test_rootfs),
		cmocka_unit_test(test_write_rejects),	   cmocka_unit_test(test_fork),
		cmocka_unit_test(test_system_image_cache),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
