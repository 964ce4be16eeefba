/* release.c - the release channel's manifest: strict parsing, the Ed25519 signature check
 * (OpenSSL EVP_PKEY_ED25519), version order and URL resolution (see release.h).
 *
 * Trust boundary: the manifest and its signature come from the network (or any file:// path)
 * and are hostile until release_verify() accepts the signature with the key shipped in the
 * package; `capsem update` checks the signature over the exact bytes first and parses second,
 * and still parses strictly (every string checked, sizes capped) because a signed manifest
 * from a compromised release process must not become a path traversal. Any thread; no I/O
 * except reading the public key file.
 */
#include "release.h"

#include <ctype.h>
#include <stdarg.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>

#include "fdutil.h"
#include "macro.h"

#define FIELD_MAX 4096

static int fail(char *err, size_t errlen, const char *fmt, ...) _printf_(3, 4);
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static void file_done(struct release_file *f)
{
	free(f->file);
	free(f->url);
}

void release_free(struct release *r)
{
	if (!r)
		return;
	free(r->channel);
	free(r->version);
	free(r->released);
	file_done(&r->package);
	for (size_t i = 0; i < r->n_images; i++) {
		free(r->images[i].name);
		for (size_t k = 0; k < r->images[i].n_assets; k++)
			file_done(&r->images[i].assets[k]);
	}
	free(r);
}

/* printable ASCII without spaces, quotes or backslashes, 1..FIELD_MAX */
static int text_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FIELD_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '"' ||
		    s[i] == '\\')
			return 0;
	return 1;
}

/* image and file names: [A-Za-z0-9._-], 1..64, not starting with '.' */
static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

int release_version_valid(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 64 || !isdigit((unsigned char)v[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)v[i]) && !strchr(".+~-", v[i]))
			return 0;
	return 1;
}

/* dpkg's order of a non-digit: '~' before the end, the end before letters, letters before
 * everything else */
static int order(char c)
{
	if (isdigit((unsigned char)c))
		return 0;
	if (isalpha((unsigned char)c))
		return c;
	if (c == '~')
		return -1;
	return c ? c + 256 : 0;
}

int release_version_cmp(const char *a, const char *b)
{
	/* dpkg's verrevcmp: alternating runs of non-digits (by order()) and numbers */
	while (*a || *b) {
		int first_diff = 0;
		while ((*a && !isdigit((unsigned char)*a)) || (*b && !isdigit((unsigned char)*b))) {
			int ac = order(*a), bc = order(*b);
			if (ac != bc)
				return ac < bc ? -1 : 1;
			a++;
			b++;
		}
		while (*a == '0')
			a++;
		while (*b == '0')
			b++;
		while (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
			if (!first_diff)
				first_diff = *a - *b;
			a++;
			b++;
		}
		if (isdigit((unsigned char)*a))
			return 1;
		if (isdigit((unsigned char)*b))
			return -1;
		if (first_diff)
			return first_diff < 0 ? -1 : 1;
	}
	return 0;
}

char *release_resolve_url(const char *base, const char *url)
{
	char *p = NULL;
	if (strstr(url, "://"))
		return strdup(url);
	const char *sl = strrchr(base, '/');
	if (!sl)
		return NULL;
	if (asprintf(&p, "%.*s/%s", (int)(sl - base), base, url) < 0)
		return NULL;
	return p;
}

static const char *str_of(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* 1 when every key of o is in allowed (NULL-terminated) */
static int keys_ok(json_t *o, const char *const *allowed, const char **bad)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		int ok = 0;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = streq(*a, k);
		if (!ok) {
			*bad = k;
			return 0;
		}
	}
	return 1;
}

static int parse_file(json_t *o, int image, struct release_file *f, const char *where, char *err,
		      size_t errlen)
{
	static const char *const pkg_keys[] = { "url", "size", "sha256", NULL };
	static const char *const img_keys[] = { "file", "url", "size", "sha256", NULL };
	const char *bad = NULL, *url = str_of(o, "url"), *sha = str_of(o, "sha256");
	const char *file = str_of(o, "file");
	json_t *size = json_object_get(o, "size");
	if (!json_is_object(o))
		return fail(err, errlen, "%s: not an object", where);
	if (!keys_ok(o, image ? img_keys : pkg_keys, &bad))
		return fail(err, errlen, "%s: unknown key '%.64s'", where, bad);
	if (!url || !text_ok(url))
		return fail(err, errlen, "%s: a missing or invalid url", where);
	if (!sha || !sha256_hex_valid(sha))
		return fail(err, errlen, "%s: sha256 is not 64 lowercase hex digits", where);
	if (!json_is_integer(size) || json_integer_value(size) < 0 ||
	    (uint64_t)json_integer_value(size) > RELEASE_MAX_ASSET_SIZE)
		return fail(err, errlen, "%s: size is not an integer from 0 to %llu", where,
			    (unsigned long long)RELEASE_MAX_ASSET_SIZE);
	if (image && (!file || !name_ok(file)))
		return fail(err, errlen, "%s: a missing or invalid file name", where);
	f->url = strdup(url);
	f->file = image ? strdup(file) : NULL;
	if (!f->url || (image && !f->file))
		return -ENOMEM;
	f->size = (uint64_t)json_integer_value(size);
	snprintf(f->sha256, sizeof(f->sha256), "%s", sha);
	return 0;
}

static int parse_root(json_t *root, struct release *r, char *err, size_t errlen)
{
	static const char *const top_keys[] = { "format",  "channel", "version", "released",
						"package", "images",  NULL };
	const char *bad = NULL, *k;
	json_t *v, *images = json_object_get(root, "images"),
		   *pkg = json_object_get(root, "package");
	int rr;
	if (!json_is_object(root))
		return fail(err, errlen, "the manifest is not a JSON object");
	if (!keys_ok(root, top_keys, &bad))
		return fail(err, errlen, "unknown key '%.64s'", bad);
	if (json_integer_value(json_object_get(root, "format")) != 1)
		return fail(err, errlen, "format is not 1");
	const char *ver = str_of(root, "version"), *ch = str_of(root, "channel");
	const char *rel = str_of(root, "released");
	if (!ver || !release_version_valid(ver))
		return fail(err, errlen, "a missing or invalid version");
	if ((ch && !name_ok(ch)) || (rel && !text_ok(rel)))
		return fail(err, errlen, "an invalid channel or released");
	if (!(r->version = strdup(ver)) || (ch && !(r->channel = strdup(ch))) ||
	    (rel && !(r->released = strdup(rel))))
		return -ENOMEM;
	if (pkg) {
		rr = parse_file(pkg, 0, &r->package, "package", err, errlen);
		if (rr < 0)
			return rr;
		r->has_package = 1;
	}
	if (images && !json_is_object(images))
		return fail(err, errlen, "images is not an object");
	json_object_foreach(images, k, v)
	{
		char where[128];
		json_t *assets = json_object_get(v, "assets");
		int has_manifest = 0;
		if (r->n_images >= RELEASE_MAX_IMAGES)
			return fail(err, errlen, "more than %d images", RELEASE_MAX_IMAGES);
		if (!name_ok(k))
			return fail(err, errlen, "invalid image name '%.64s'", k);
		if (!json_is_object(v) || json_object_size(v) != 1 || !json_is_array(assets) ||
		    json_array_size(assets) == 0 || json_array_size(assets) > RELEASE_MAX_ASSETS)
			return fail(err, errlen, "image %s: expected {\"assets\": [1..%d files]}",
				    k, RELEASE_MAX_ASSETS);
		struct release_image *im = &r->images[r->n_images++];
		if (!(im->name = strdup(k)))
			return -ENOMEM;
		for (size_t i = 0; i < json_array_size(assets); i++) {
			snprintf(where, sizeof(where), "image %s asset %zu", k, i);
			rr = parse_file(json_array_get(assets, i), 1, &im->assets[i], where, err,
					errlen);
			im->n_assets = i + 1;
			if (rr < 0)
				return rr;
			const char *fi = im->assets[i].file;
			if (!fi)
				return -ENOMEM;
			for (size_t j = 0; j < i; j++)
				if (im->assets[j].file && streq(im->assets[j].file, fi))
					return fail(err, errlen, "image %s: %s twice", k, fi);
			has_manifest |= streq(fi, "manifest.json");
		}
		if (!has_manifest)
			return fail(err, errlen, "image %s: no manifest.json among its assets", k);
	}
	return 0;
}

int release_parse(const char *text, size_t len, struct release **ret, char *err, size_t errlen)
{
	json_error_t jerr;
	_cleanup_release_ struct release *r = NULL;
	if (len > RELEASE_MAX_BYTES)
		return fail(err, errlen, "larger than %u bytes", RELEASE_MAX_BYTES);
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fail(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
	r = calloc(1, sizeof(*r));
	int k = r ? parse_root(root, r, err, errlen) : -ENOMEM;
	json_decref(root);
	if (k < 0)
		return k;
	*ret = TAKE_PTR(r);
	return 0;
}

int release_verify(const void *msg, size_t len, const void *sig, size_t siglen,
		   const char *pubkey_path, char *err, size_t errlen)
{
	_cleanup_free_ char *pem = NULL;
	size_t pemlen = 0;
	int r = read_file_small(pubkey_path, 16384, &pem, &pemlen);
	if (r < 0) {
		if (err && errlen)
			snprintf(err, errlen, "cannot read the update key %s: %s", pubkey_path,
				 strerror(-r));
		return r;
	}
	BIO *bio = BIO_new_mem_buf(pem, (int)pemlen);
	EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (!key || EVP_PKEY_id(key) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(key);
		if (err && errlen)
			snprintf(err, errlen, "%s: not an Ed25519 public key (PEM)", pubkey_path);
		return -ENOKEY;
	}
	int ok = 0;
	if (siglen == RELEASE_SIG_LEN) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
		     EVP_DigestVerify(ctx, sig, siglen, msg, len) == 1;
		EVP_MD_CTX_free(ctx);
	}
	EVP_PKEY_free(key);
	if (!ok && siglen != RELEASE_SIG_LEN)
		return fail(err, errlen, "the signature is %zu bytes, not the %d of Ed25519",
			    siglen, RELEASE_SIG_LEN);
	if (!ok)
		return fail(err, errlen, "the signature does not verify with the key %s",
			    pubkey_path);
	return 0;
}
