/* test-release.c - the release channel's manifest (src/shared/release.c): strict parsing (what a
 * signed manifest still may not say), dpkg's version order, URL resolution, and the Ed25519
 * signature check with a key made here. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "release.h"

#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const char good[] =
	"{\"format\":1,\"channel\":\"stable\",\"version\":\"0.2.0\","
	"\"package\":{\"url\":\"capsem_0.2.0_amd64.deb\",\"size\":5,\"sha256\":\"" H64 "\"},"
	"\"images\":{\"debian\":{\"assets\":["
	"{\"file\":\"vmlinux\",\"url\":\"https://x.example/v\",\"size\":1,\"sha256\":\"" H64 "\"},"
	"{\"file\":\"manifest.json\",\"url\":\"m.json\",\"size\":2,\"sha256\":\"" H64 "\"}]}}}";

static int parse(const char *t)
{
	struct release *r = NULL;
	char err[256];
	int k = release_parse(t, strlen(t), &r, err, sizeof(err));
	release_free(r);
	return k;
}

static void test_parse(void **state)
{
	_cleanup_release_ struct release *r = NULL;
	char err[256];
	assert_int_equal(release_parse(good, strlen(good), &r, err, sizeof(err)), 0);
	assert_string_equal(r->version, "0.2.0");
	assert_string_equal(r->channel, "stable");
	assert_true(r->has_package);
	assert_int_equal(r->package.size, 5);
	assert_int_equal(r->n_images, 1);
	assert_string_equal(r->images[0].name, "debian");
	assert_int_equal(r->images[0].n_assets, 2);
	assert_string_equal(r->images[0].assets[1].file, "manifest.json");
	/* what even a signed manifest may not say */
	static const char *const bad[] = {
		"[]",
		"{\"format\":2,\"version\":\"1\"}",
		"{\"format\":1}",
		"{\"format\":1,\"version\":\"x1\"}",
		"{\"format\":1,\"version\":\"1\",\"extra\":1}",
		"{\"format\":1,\"version\":\"1\",\"images\":{\"../x\":{\"assets\":[]}}}",
		"{\"format\":1,\"version\":\"1\",\"images\":{\"d\":{\"assets\":[{\"file\":\"../m\","
		"\"url\":\"u\",\"size\":1,\"sha256\":\"" H64 "\"}]}}}",
		/* no manifest.json among the assets */
		"{\"format\":1,\"version\":\"1\",\"images\":{\"d\":{\"assets\":[{\"file\":\"v\","
		"\"url\":\"u\",\"size\":1,\"sha256\":\"" H64 "\"}]}}}",
		/* upper-case hash, negative size, a url with a space, a file twice */
		"{\"format\":1,\"version\":\"1\",\"package\":{\"url\":\"u\",\"size\":1,\"sha256\":"
		"\"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"}}",
		"{\"format\":1,\"version\":\"1\",\"package\":{\"url\":\"u\",\"size\":-1,"
		"\"sha256\":\"" H64 "\"}}",
		"{\"format\":1,\"version\":\"1\",\"package\":{\"url\":\"a b\",\"size\":1,"
		"\"sha256\":\"" H64 "\"}}",
		"{\"format\":1,\"version\":\"1\",\"images\":{\"d\":{\"assets\":["
		"{\"file\":\"manifest.json\",\"url\":\"u\",\"size\":1,\"sha256\":\"" H64 "\"},"
		"{\"file\":\"manifest.json\",\"url\":\"u\",\"size\":1,\"sha256\":\"" H64 "\"}]}}}",
		"{\"format\":1,\"version\":\"1\",\"version\":\"2\"}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_int_equal(parse(bad[i]), -EBADMSG);
}

static void test_versions(void **state)
{
	assert_true(release_version_cmp("0.10.0", "0.9.9") > 0);
	assert_true(release_version_cmp("0.1.0", "0.1.0") == 0);
	assert_true(release_version_cmp("0.1", "0.1.0") < 0);
	assert_true(release_version_cmp("1.0~rc1", "1.0") < 0);
	assert_true(release_version_cmp("0.1.0+t1", "0.1.0") > 0);
	assert_true(release_version_cmp("0.01", "0.1") == 0);
	assert_true(release_version_cmp("2", "10") < 0);
	assert_true(release_version_valid("0.1.0+t1"));
	assert_false(release_version_valid("v1"));
	assert_false(release_version_valid("1 2"));
	assert_false(release_version_valid(""));
}

static void test_urls(void **state)
{
	_cleanup_free_ char *a = release_resolve_url("https://h/c/channel.json", "img/v");
	_cleanup_free_ char *b = release_resolve_url("file:///srv/c.json", "https://o/x");
	_cleanup_free_ char *c = release_resolve_url("file:///srv/c.json", "x.deb");
	assert_string_equal(a, "https://h/c/img/v");
	assert_string_equal(b, "https://o/x");
	assert_string_equal(c, "file:///srv/x.deb");
}

/* a key pair in dir; the public key's path */
static char *make_key(const char *dir, EVP_PKEY **ret)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	EVP_PKEY *k = NULL;
	char *path = NULL;
	assert_non_null(kc);
	assert_int_equal(EVP_PKEY_keygen_init(kc), 1);
	assert_int_equal(EVP_PKEY_keygen(kc, &k), 1);
	EVP_PKEY_CTX_free(kc);
	assert_true(asprintf(&path, "%s/pub%p.pem", dir, (void *)k) > 0);
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	assert_int_equal(PEM_write_PUBKEY(f, k), 1);
	fclose(f);
	*ret = k;
	return path;
}

static void test_signature(void **state)
{
	char dir[] = "/tmp/capsem-release-XXXXXX", err[256];
	unsigned char sig[64];
	size_t n = sizeof(sig);
	EVP_PKEY *k = NULL, *other = NULL;
	assert_non_null(mkdtemp(dir));
	_cleanup_free_ char *pub = make_key(dir, &k), *opub = make_key(dir, &other);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit(c, NULL, NULL, NULL, k), 1);
	assert_int_equal(EVP_DigestSign(c, sig, &n, (const unsigned char *)good, strlen(good)), 1);
	EVP_MD_CTX_free(c);
	assert_int_equal(n, 64);
	assert_int_equal(release_verify(good, strlen(good), sig, n, pub, err, sizeof(err)), 0);
	/* another key, one changed byte of the message or of the signature, a short signature */
	assert_int_equal(release_verify(good, strlen(good), sig, n, opub, err, sizeof(err)),
			 -EBADMSG);
	assert_non_null(strstr(err, "does not verify"));
	assert_int_equal(release_verify(good, strlen(good) - 1, sig, n, pub, err, sizeof(err)),
			 -EBADMSG);
	sig[10] ^= 1;
	assert_int_equal(release_verify(good, strlen(good), sig, n, pub, err, sizeof(err)),
			 -EBADMSG);
	assert_int_equal(release_verify(good, strlen(good), sig, 63, pub, err, sizeof(err)),
			 -EBADMSG);
	assert_int_equal(
		release_verify(good, strlen(good), sig, n, "/nonexistent", err, sizeof(err)),
		-ENOENT);
	/* a file that is not an Ed25519 public key */
	assert_int_equal(
		release_verify(good, strlen(good), sig, n, "/etc/hostname", err, sizeof(err)),
		-ENOKEY);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
	unlink(pub);
	unlink(opub);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_signature),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
