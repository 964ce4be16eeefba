/* test-tls.c - the per-installation CA and its leaves (src/egress/tls.c): creation and reload,
 * file modes, refusal of a CA key others can read, leaves that verify against the CA for exactly
 * their name, the leaf cache, bad names, and two processes racing to create the CA. */
#include <errno.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdutil.h"
#include "tls.h"

static char *tmpdir(void)
{
	char t[] = "/tmp/capsem-tls-XXXXXX";
	assert_non_null(mkdtemp(t));
	return strdup(t);
}

static void test_create_reload(void **state)
{
	char *d = tmpdir(), ca_dir[512], p[600];
	snprintf(ca_dir, sizeof(ca_dir), "%s/ca", d);
	struct tls_ca *ca = NULL;
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), 0);
	char fp[65];
	memcpy(fp, tls_ca_fingerprint(ca), 65);
	assert_int_equal(strlen(fp), 64);
	assert_non_null(strstr(tls_ca_pem(ca), "BEGIN CERTIFICATE"));
	assert_null(strstr(tls_ca_pem(ca), "PRIVATE"));
	tls_ca_free(ca);

	struct stat st;
	snprintf(p, sizeof(p), "%s/ca.pem", ca_dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(p, sizeof(p), "%s/ca.crt", ca_dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(stat(ca_dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	/* a reload gives the same CA */
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), 0);
	assert_string_equal(tls_ca_fingerprint(ca), fp);
	tls_ca_free(ca);

	/* a key others can read is refused; garbage is refused */
	snprintf(p, sizeof(p), "%s/ca.pem", ca_dir);
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), -EPERM);
	assert_int_equal(write_file_atomic(p, "garbage", 7, 0600), 0);
	assert_int_equal(tls_ca_load_or_create(ca_dir, &ca), -EBADMSG);
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

static int verify(struct tls_ca *ca, X509 *leaf, const char *host)
{
	X509_STORE *store = X509_STORE_new();
	BIO *b = BIO_new_mem_buf(tls_ca_pem(ca), -1);
	X509 *root = PEM_read_bio_X509(b, NULL, NULL, NULL);
	X509_STORE_add_cert(store, root);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(ctx, store, leaf, NULL);
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set1_host(vp, host, 0);
	X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER);
	int ok = X509_verify_cert(ctx);
	X509_STORE_CTX_free(ctx);
	X509_free(root);
	BIO_free(b);
	X509_STORE_free(store);
	return ok;
}

static void test_leaves(void **state)
{
	char *d = tmpdir();
	struct tls_ca *ca = NULL;
	assert_int_equal(tls_ca_load_or_create(d, &ca), 0);
	X509 *a, *a2, *b;
	EVP_PKEY *k;
	assert_int_equal(tls_leaf_get(ca, "api.anthropic.com", &a, &k), 0);
	assert_int_equal(X509_check_private_key(a, k), 1);
	assert_int_equal(verify(ca, a, "api.anthropic.com"), 1);
	assert_int_not_equal(verify(ca, a, "api.openai.com"), 1);
	assert_int_not_equal(verify(ca, a, "x.api.anthropic.com"), 1);
	assert_int_equal(tls_leaf_get(ca, "api.anthropic.com", &a2, &k), 0);
	assert_ptr_equal(a, a2); /* cached */
	assert_int_equal(tls_leaf_get(ca, "pypi.org", &b, &k), 0);
	assert_ptr_not_equal(a, b);
	assert_int_equal(verify(ca, b, "pypi.org"), 1);

	const char *bad[] = { "",	    ".",	 "a..b", "-a b",       "a/b",
			      "ex\x01.com", "UPPER.com", "a.",	 "1.2.3.4:443" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(tls_leaf_get(ca, bad[i], &b, &k), -EINVAL);

	/* more names than the cache holds: every one still verifies */
	char name[64];
	for (int i = 0; i < TLS_LEAF_CACHE + 20; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		assert_int_equal(tls_leaf_get(ca, name, &b, &k), 0);
	}
	assert_int_equal(verify(ca, b, name), 1);
	tls_ca_free(ca);
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

static void test_race(void **state)
{
	char *d = tmpdir(), ca_dir[512];
	snprintf(ca_dir, sizeof(ca_dir), "%s/ca", d);
	int fds[4][2];
	pid_t pids[4];
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pipe(fds[i]), 0);
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct tls_ca *ca = NULL;
			if (tls_ca_load_or_create(ca_dir, &ca) < 0)
				_exit(1);
			(void)!write(fds[i][1], tls_ca_fingerprint(ca), 64);
			_exit(0);
		}
		close(fds[i][1]);
	}
	char fp[4][65] = { { 0 } };
	for (int i = 0; i < 4; i++) {
		int st;
		assert_int_equal(fd_read_exact(fds[i][0], fp[i], 64), 0);
		close(fds[i][0]);
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	for (int i = 1; i < 4; i++)
		assert_string_equal(fp[0], fp[i]);
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_reload),
		cmocka_unit_test(test_leaves),
		cmocka_unit_test(test_race),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
