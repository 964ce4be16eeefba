/* test-cachekey.c - SHA-256 helpers (known vectors) and the builder's cache keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdlib.h>

#include "cachekey.h"
#include "fdutil.h"
#include "macro.h"
#include "sha256.h"

static void test_vectors(void **state)
{
	char hex[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_hex_buf("abc", 3, hex), 0);
	assert_string_equal(hex,
			    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(sha256_hex_buf("", 0, hex), 0);
	assert_string_equal(hex,
			    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_true(sha256_hex_valid(hex));
	assert_false(sha256_hex_valid("abc"));
	hex[3] = 'G';
	assert_false(sha256_hex_valid(hex));
	hex[3] = 'A'; /* uppercase is not the canonical form */
	assert_false(sha256_hex_valid(hex));

	/* incremental == one shot */
	struct sha256 h = { 0 };
	char a[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_init(&h), 0);
	assert_int_equal(sha256_update(&h, "a", 1), 0);
	assert_int_equal(sha256_update(&h, "bc", 2), 0);
	assert_int_equal(sha256_final_hex(&h, a), 0);
	sha256_done(&h);
	sha256_done(&h); /* twice is fine */
	assert_string_equal(a, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_fields(void **state)
{
	char x[SHA256_HEX_LEN + 1], y[SHA256_HEX_LEN + 1];
	struct sha256 h = { 0 };
	assert_int_equal(sha256_init(&h), 0);
	assert_int_equal(sha256_field_str(&h, "ab"), 0);
	assert_int_equal(sha256_field_str(&h, "c"), 0);
	assert_int_equal(sha256_final_hex(&h, x), 0);
	sha256_done(&h);
	assert_int_equal(sha256_init(&h), 0);
	assert_int_equal(sha256_field_str(&h, "a"), 0);
	assert_int_equal(sha256_field_str(&h, "bc"), 0);
	assert_int_equal(sha256_final_hex(&h, y), 0);
	sha256_done(&h);
	assert_string_not_equal(x, y);
}

static void test_file(void **state)
{
	char path[] = "/tmp/capsem-test-sha-XXXXXX";
	char hex[SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	/* more than one read chunk */
	_cleanup_free_ char *big = malloc(200000);
	memset(big, 'x', 200000);
	assert_int_equal(fd_write_all(fd, big, 200000), 0);
	close(fd);
	assert_int_equal(sha256_hex_file(path, hex, &size), 0);
	assert_int_equal(size, 200000);
	char want[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_hex_buf(big, 200000, want), 0);
	assert_string_equal(hex, want);
	unlink(path);
	assert_int_equal(sha256_hex_file(path, hex, &size), -ENOENT);
}

static void test_kernel_key(void **state)
{
	char k0[SHA256_HEX_LEN + 1], k[SHA256_HEX_LEN + 1];
	const char *frag = "CONFIG_SMP=y\n";
	assert_int_equal(cachekey_kernel("6.1.192-2", frag, strlen(frag), "x86_64", k0), 0);
	assert_true(sha256_hex_valid(k0));
	assert_int_equal(cachekey_kernel("6.1.192-2", frag, strlen(frag), "x86_64", k), 0);
	assert_string_equal(k0, k); /* deterministic */
	assert_int_equal(cachekey_kernel("6.1.193-1", frag, strlen(frag), "x86_64", k), 0);
	assert_string_not_equal(k0, k);
	assert_int_equal(cachekey_kernel("6.1.192-2", "CONFIG_SMP=n\n", 13, "x86_64", k), 0);
	assert_string_not_equal(k0, k);
	assert_int_equal(cachekey_kernel("6.1.192-2", frag, strlen(frag), "aarch64", k), 0);
	assert_string_not_equal(k0, k);
	/* a byte moved from one field to the next is a different key */
	assert_int_equal(cachekey_kernel("6.1.192-", "2CONFIG_SMP=y\n", 14, "x86_64", k), 0);
	assert_string_not_equal(k0, k);
}

static void test_initramfs_key(void **state)
{
	char k0[SHA256_HEX_LEN + 1], k[SHA256_HEX_LEN + 1];
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, NULL, 0, k0), 0);
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, NULL, 0, k), 0);
	assert_string_equal(k0, k);
	assert_int_equal(cachekey_initramfs("gzip", "guest", 5, "bb", 2, NULL, 0, k), 0);
	assert_string_not_equal(k0, k);
	assert_int_equal(cachekey_initramfs("none", "guesT", 5, "bb", 2, NULL, 0, k), 0);
	assert_string_not_equal(k0, k);
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bB", 2, NULL, 0, k), 0);
	assert_string_not_equal(k0, k);
	assert_int_equal(cachekey_initramfs("none", "guestb", 6, "b", 1, NULL, 0, k), 0);
	assert_string_not_equal(k0, k);
	/* extra files: path, mode and bytes all count */
	struct initramfs_file x = { "/usr/sbin/nft", 0755, "elf", 3 }, y = x;
	char k1[SHA256_HEX_LEN + 1];
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, &x, 1, k1), 0);
	assert_string_not_equal(k0, k1);
	y.path = "/usr/bin/nft";
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, &y, 1, k), 0);
	assert_string_not_equal(k1, k);
	y = x;
	y.mode = 0700;
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, &y, 1, k), 0);
	assert_string_not_equal(k1, k);
	y = x;
	y.data = "elF";
	assert_int_equal(cachekey_initramfs("none", "guest", 5, "bb", 2, &y, 1, k), 0);
	assert_string_not_equal(k1, k);
	/* kernel and initramfs keys never collide on the same inputs: different recipes */
	assert_int_equal(cachekey_kernel("none", "guest", 5, "bb", k), 0);
	assert_string_not_equal(k0, k);
}

/* A disk's digest costs what its data costs, and every copy of it hashes the same: holes,
 * written zeros and a sparse copy (copy_sparse) agree; a changed byte does not. */
static void test_sparse(void **state)
{
	char a[] = "/tmp/capsem-sparse-a-XXXXXX", b[] = "/tmp/capsem-sparse-b-XXXXXX";
	char ha[SHA256_HEX_LEN + 1], hb[SHA256_HEX_LEN + 1], hc[SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	int fa = mkstemp(a), fb = mkstemp(b);
	assert_true(fa >= 0 && fb >= 0);
	/* a: 64 MiB with data at 1 MiB and at the very end; b: the same, zeros written out */
	assert_int_equal(ftruncate(fa, 64 << 20), 0);
	assert_int_equal(pwrite(fa, "data", 4, 1 << 20), 4);
	assert_int_equal(pwrite(fa, "tail", 4, (64 << 20) - 4), 4);
	static char zeros[1 << 20];
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fb, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
	assert_int_equal(pwrite(fb, "data", 4, 1 << 20), 4);
	assert_int_equal(pwrite(fb, "tail", 4, (64 << 20) - 4), 4);
	assert_int_equal(sha256_hex_fd_sparse(fa, ha, &size), 0);
	assert_int_equal(size, 64 << 20);
	assert_int_equal(sha256_hex_fd_sparse(fb, hb, NULL), 0);
	assert_string_equal(ha, hb);
	/* a sparse copy: same digest, same bytes, holes kept */
	assert_int_equal(ftruncate(fb, 0), 0);
	assert_int_equal(copy_sparse(fa, fb), 0);
	assert_int_equal(sha256_hex_fd_sparse(fb, hc, NULL), 0);
	assert_string_equal(ha, hc);
	struct stat st;
	assert_int_equal(fstat(fb, &st), 0);
	assert_int_equal(st.st_size, 64 << 20);
	assert_true(st.st_blocks * 512 < (4 << 20)); /* not 64 MiB of blocks */
	char got[4];
	assert_int_equal(pread(fb, got, 4, (64 << 20) - 4), 4);
	assert_memory_equal(got, "tail", 4);
	/* one byte changed, or the size: another digest */
	assert_int_equal(pwrite(fb, "X", 1, 5 << 20), 1);
	assert_int_equal(sha256_hex_fd_sparse(fb, hc, NULL), 0);
	assert_string_not_equal(ha, hc);
	assert_int_equal(ftruncate(fa, (64 << 20) + 1), 0);
	assert_int_equal(sha256_hex_fd_sparse(fa, hc, NULL), 0);
	assert_string_not_equal(ha, hc);
	close(fa);
	close(fb);
	unlink(a);
	unlink(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),	      cmocka_unit_test(test_fields),
		cmocka_unit_test(test_file),	      cmocka_unit_test(test_kernel_key),
		cmocka_unit_test(test_initramfs_key), cmocka_unit_test(test_sparse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
