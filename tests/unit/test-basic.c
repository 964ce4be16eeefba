/* test-basic.c - bounded buffers, strict parsing, file helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base64.h"
#include "buf.h"
#include "fdutil.h"
#include "home.h"
#include "macro.h"
#include "parse.h"
#include "utf8.h"

static void test_buf_cap(void **state)
{
	struct buf b;
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "0123456789", 10), 0);
	assert_int_equal(buf_append(&b, "x", 1), -ENOBUFS);
	assert_int_equal(buf_len(&b), 10);
	buf_consume(&b, 4);
	assert_memory_equal(buf_head(&b), "456789", 6);
	assert_int_equal(buf_append(&b, "abcd", 4), 0);
	assert_memory_equal(buf_head(&b), "456789abcd", 10);
	assert_null(buf_reserve(&b, 1));
	buf_consume(&b, 100);
	assert_int_equal(buf_len(&b), 0);
	buf_done(&b, 1);
}

static void test_parse(void **state)
{
	uint64_t v = 42;
	uint32_t u;
	assert_int_equal(parse_u64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_u64("18446744073709551616", &v), -ERANGE);
	assert_int_equal(parse_u64("", &v), -EINVAL);
	assert_int_equal(parse_u64("-1", &v), -EINVAL);
	assert_int_equal(parse_u64("12a", &v), -EINVAL);
	assert_int_equal(parse_u32("4294967296", &u), -ERANGE);
	assert_int_equal(parse_size("1G", &v), 0);
	assert_true(v == 1ull << 30);
	assert_int_equal(parse_size("512m", &v), 0);
	assert_true(v == 512ull << 20);
	assert_int_equal(parse_size("M", &v), -EINVAL);
	assert_int_equal(parse_size("99999999999999T", &v), -ERANGE);
	assert_int_equal(parse_seconds_ms("2", &v), 0);
	assert_true(v == 2000);
	assert_int_equal(parse_seconds_ms("0.25", &v), 0);
	assert_true(v == 250);
	assert_int_equal(parse_seconds_ms("1.2345", &v), -EINVAL);
	assert_int_equal(parse_seconds_ms(".5", &v), -EINVAL);
	assert_int_equal(parse_seconds_ms("5.", &v), -EINVAL);
}

static void test_files(void **state)
{
	char dir[] = "/tmp/capsem-test-XXXXXX";
	char p[256], sub[256];
	_cleanup_free_ char *s = NULL;
	size_t n;
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof(p), "%s/a/b/c", dir);
	assert_int_equal(mkdir_p(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/a/b/c/f", dir);
	assert_int_equal(write_file_atomic(p, "hello", 5, 0600), 0);
	assert_int_equal(read_file_small(p, 5, &s, &n), 0);
	assert_string_equal(s, "hello");
	free(TAKE_PTR(s));
	assert_int_equal(read_file_small(p, 4, &s, &n), -EFBIG);
	snprintf(sub, sizeof(sub), "%s/a", dir);
	assert_int_equal(symlink("/etc", p), -1); /* exists */
	snprintf(p, sizeof(p), "%s/a/link", dir);
	assert_int_equal(symlink("/etc", p), 0);
	assert_int_equal(rm_rf(dir), 0);
	assert_int_equal(access(dir, F_OK), -1);
	assert_int_equal(access("/etc/passwd", F_OK), 0); /* the symlink was not followed */
}

/* programs are found on PATH, then in the sbin directories a normal user's PATH lacks */
static void test_find_program(void **state)
{
	char dir[] = "/tmp/capsem-findprog-XXXXXX";
	char exe[64], plain[64];
	char *p = NULL;
	assert_non_null(mkdtemp(dir));
	snprintf(exe, sizeof(exe), "%s/tool", dir);
	snprintf(plain, sizeof(plain), "%s/notexec", dir);
	int fd = open(exe, O_CREAT | O_WRONLY | O_CLOEXEC, 0755);
	assert_true(fd >= 0);
	close(fd);
	fd = open(plain, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	char *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	char path[128];
	snprintf(path, sizeof(path), "/nonexistent::%s", dir);
	setenv("PATH", path, 1);
	assert_int_equal(find_program("tool", &p), 0);
	assert_string_equal(p, exe);
	free(p);
	assert_int_equal(find_program("notexec", &p), -ENOENT);
	assert_int_equal(find_program("no-such-program-here", &p), -ENOENT);
	assert_int_equal(find_program("", &p), -ENOENT);
	assert_int_equal(find_program("./x/y", &p), 0); /* a path is taken as is */
	assert_string_equal(p, "./x/y");
	free(p);
	/* not on PATH, but in /usr/sbin or /sbin (e2fsprogs is a dependency) */
	assert_int_equal(find_program("mkfs.ext4", &p), 0);
	assert_true(strncmp(p, "/usr/sbin/", 10) == 0 || strncmp(p, "/sbin/", 6) == 0);
	free(p);
	if (old)
		setenv("PATH", old, 1);
	else
		unsetenv("PATH");
	free(old);
	unlink(exe);
	unlink(plain);
	rmdir(dir);
}

/* one rule for Capsem's home: $CAPSEM_HOME, $HOME/.capsem, the passwd entry's, never a guess */
static void test_capsem_home(void **state)
{
	char *saved_ch = getenv("CAPSEM_HOME") ? strdup(getenv("CAPSEM_HOME")) : NULL;
	char *saved_h = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char *saved_i = getenv("CAPSEM_IMAGES_DIR") ? strdup(getenv("CAPSEM_IMAGES_DIR")) : NULL;
	char *p = NULL;
	setenv("CAPSEM_HOME", "/srv/capsem", 1);
	unsetenv("CAPSEM_IMAGES_DIR");
	assert_int_equal(capsem_home(&p), 0);
	assert_string_equal(p, "/srv/capsem");
	free(p);
	assert_int_equal(capsem_images_dir(&p), 0);
	assert_string_equal(p, "/srv/capsem/images");
	free(p);
	setenv("CAPSEM_IMAGES_DIR", "/img", 1);
	assert_int_equal(capsem_images_dir(&p), 0);
	assert_string_equal(p, "/img");
	free(p);
	unsetenv("CAPSEM_IMAGES_DIR");
	setenv("CAPSEM_HOME", "", 1); /* empty: not set */
	setenv("HOME", "/home/u", 1);
	assert_int_equal(capsem_home(&p), 0);
	assert_string_equal(p, "/home/u/.capsem");
	free(p);
	/* no HOME (or not absolute): the passwd entry, whatever it is, absolute */
	unsetenv("HOME");
	assert_int_equal(capsem_home(&p), 0);
	assert_true(p[0] == '/' && strstr(p, "/.capsem") != NULL);
	free(p);
	setenv("HOME", "relative", 1);
	assert_int_equal(user_home(&p), 0);
	assert_true(p[0] == '/');
	free(p);
	if (saved_ch)
		setenv("CAPSEM_HOME", saved_ch, 1);
	else
		unsetenv("CAPSEM_HOME");
	if (saved_h)
		setenv("HOME", saved_h, 1);
	else
		unsetenv("HOME");
	if (saved_i)
		setenv("CAPSEM_IMAGES_DIR", saved_i, 1);
	free(saved_ch);
	free(saved_h);
	free(saved_i);
}

static void test_utf8(void **state)
{
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("abc \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	assert_false(utf8_valid("a\0b", 3));		 /* NUL */
	assert_false(utf8_valid("\xc0\xaf", 2));	 /* overlong '/' */
	assert_false(utf8_valid("\xed\xa0\x80", 3));	 /* surrogate */
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(utf8_valid("\xe2\x82", 2));	 /* truncated */
	assert_false(utf8_valid("\xff", 1));

	assert_int_equal(utf8_seq("\xc3\xa9", 1), 0); /* cut by n */
	assert_int_equal(utf8_seq("\xc3\xa9", 2), 2);
	assert_int_equal(utf8_seq("", 0), 0);
	assert_int_equal(utf8_count("a\xc3\xa9\xe2\x82\xac", 6), 3);
}

static void test_base64(void **state)
{
	static const struct {
		const char *raw, *enc;
	} v[] = { { "", "" },
		  { "f", "Zg==" },
		  { "fo", "Zm8=" },
		  { "foo", "Zm9v" },
		  { "foob", "Zm9vYg==" },
		  { "fooba", "Zm9vYmE=" },
		  { "foobar", "Zm9vYmFy" } };
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		_cleanup_free_ char *e = base64_encode(v[i].raw, strlen(v[i].raw));
		assert_string_equal(e, v[i].enc);
		_cleanup_free_ uint8_t *d = NULL;
		size_t n;
		assert_int_equal(base64_decode(e, strlen(e), &d, &n), 0);
		assert_non_null(d);
		assert_int_equal(n, strlen(v[i].raw));
		assert_memory_equal(d, v[i].raw, n);
	}
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	_cleanup_free_ char *e = base64_encode(all, sizeof(all));
	_cleanup_free_ uint8_t *d = NULL;
	size_t n;
	assert_int_equal(base64_decode(e, strlen(e), &d, &n), 0);
	assert_int_equal(n, 256);
	assert_memory_equal(d, all, 256);

	const char *bad[] = { "Zg=", "Z===", "Zg==Zg==", "Zm9v\n", "Zm 9", "Zm9*", "=Zg=" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		uint8_t *x = NULL;
		assert_int_equal(base64_decode(bad[i], strlen(bad[i]), &x, &n), -EINVAL);
		assert_null(x);
	}
	/* into a caller's buffer: exact fit, and too small */
	uint8_t small[3];
	assert_int_equal(base64_decode_to("Zm9v", 4, small, 3, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(base64_decode_to("Zm9vYg==", 8, small, 3, &n), -ENOBUFS);
	char enc[9] = { 0 };
	base64_encode_to("foob", 4, enc);
	assert_string_equal(enc, "Zm9vYg==");
	assert_int_equal(base64_encoded_len(4), 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_cap),	    cmocka_unit_test(test_parse),
		cmocka_unit_test(test_files),	    cmocka_unit_test(test_find_program),
		cmocka_unit_test(test_capsem_home), cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
