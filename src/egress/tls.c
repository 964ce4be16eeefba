/* tls.c - the per-installation CA, leaf minting and the proxy's two TLS contexts.
 *
 * Trust boundary: the CA key is the most sensitive file Capsem owns: whoever holds it can
 * impersonate any site to every guest of this installation (and only to them: the CA is trusted
 * only inside guests). It is generated here, stays 0600 in $CAPSEM_HOME/ca/ca.pem, is refused if
 * group or others can read it, and never leaves the host: guests get only the certificate.
 * Names passed to tls_leaf_get() come from the proxy's DNS map (names the guest asked for):
 * they are checked to be DNS names before they go into a certificate.
 *
 * Creation race: two capsem-vm processes may start at once on a fresh installation. Each writes
 * a complete ca.pem under a private temporary name and link()s it into place; link fails with
 * EEXIST for the loser, which loads the winner's file. ca.crt is derived from ca.pem (rename).
 *
 * Leaves: one P-256 key per process signs nothing and serves every leaf (as mitmproxy does):
 * minting is then one ECDSA signature, about 0.1 ms. Leaves are valid 30 days and re-minted
 * after 7. Threads: the proxy's loop thread only (the cache is not locked).
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"

#define CA_FILE_MAX (64u * 1024u)
#define CA_DAYS (10 * 365)
#define LEAF_DAYS 30
#define LEAF_REMINT_S (7 * 24 * 3600)

struct leaf {
	char *name;
	X509 *cert;
	uint64_t used; /* LRU clock */
	time_t minted;
};

struct tls_ca {
	EVP_PKEY *key;
	X509 *cert;
	char *pem;
	char fingerprint[65];
	EVP_PKEY *leaf_key;
	struct leaf leaves[TLS_LEAF_CACHE];
	uint64_t clock;
};

const char *tls_error_string(void)
{
	static _Thread_local char msg[256];
	unsigned long e = ERR_peek_last_error();
	if (!e)
		return "no TLS error";
	ERR_error_string_n(e, msg, sizeof(msg));
	ERR_clear_error();
	return msg;
}

static int rand_serial(X509 *x)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[0] &= 0x7f; /* positive */
	b[0] |= 0x40; /* and a full 16 bytes */
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	if (!bn)
		return -ENOMEM;
	ASN1_INTEGER *ai = X509_get_serialNumber(x);
	int ok = BN_to_ASN1_INTEGER(bn, ai) != NULL;
	BN_free(bn);
	return ok ? 0 : -EIO;
}

static int add_ext(X509 *issuer, X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EIO;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -EIO;
}

static EVP_PKEY *p256_new(void)
{
	return EVP_EC_gen("P-256");
}

static X509 *cert_new(EVP_PKEY *key, const char *cn, long days_before, long days_after)
{
	X509 *x = X509_new();
	if (!x)
		return NULL;
	X509_NAME *n = X509_get_subject_name(x);
	if (!X509_set_version(x, 2) || rand_serial(x) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -days_before * 86400L) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), days_after * 86400L) ||
	    !X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Capsem", -1,
					-1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
					0) ||
	    !X509_set_pubkey(x, key)) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static X509 *ca_cert_new(EVP_PKEY *key)
{
	char host[64] = "host", cn[160];
	(void)gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	snprintf(cn, sizeof(cn), "Capsem CA (%s, %04d-%02d-%02d)", host, tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday);
	X509 *x = cert_new(key, cn, 1, CA_DAYS);
	if (!x)
		return NULL;
	if (!X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(x, x, NID_subject_key_identifier, "hash") < 0 ||
	    !X509_sign(x, key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Read a whole small file (< CA_FILE_MAX) into a memory BIO; the stack copy is wiped. */
static int read_bio(int fd, BIO **ret)
{
	char data[CA_FILE_MAX];
	size_t n = 0;
	for (;;) {
		ssize_t k = fd_read_some(fd, data + n, sizeof(data) - n);
		if (k < 0)
			return (int)k;
		if (k == 0)
			break;
		n += (size_t)k;
		if (n == sizeof(data))
			return -EFBIG;
	}
	BIO *b = BIO_new(BIO_s_mem());
	if (b && BIO_write(b, data, (int)n) != (int)n) {
		BIO_free(b);
		b = NULL;
	}
	explicit_bzero(data, n);
	if (!b)
		return -ENOMEM;
	*ret = b;
	return 0;
}

static int ca_load(struct tls_ca *ca, const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	if (st.st_mode & 077)
		return -EPERM; /* a CA key others can read is a compromised CA */
	BIO *b = NULL;
	int r = read_bio(fd, &b);
	if (r < 0)
		return r;
	ca->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	ca->cert = ca->key ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!ca->key || !ca->cert || X509_check_private_key(ca->cert, ca->key) != 1)
		return -EBADMSG;
	return 0;
}

/* Write key and certificate to a new file (O_EXCL, 0600), fsync'ed. */
static int write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
	_cleanup_close_ int fd =
		open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return -ENOMEM;
	int ok = PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) &&
		 PEM_write_bio_X509(b, cert);
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	int r = ok ? fd_write_all(fd, p, (size_t)n) : -EIO;
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (n > 0)
		explicit_bzero(p, (size_t)n);
	BIO_free(b);
	return r;
}

static int ca_create(struct tls_ca *ca, const char *dir, const char *path)
{
	ca->key = p256_new();
	ca->cert = ca->key ? ca_cert_new(ca->key) : NULL;
	if (!ca->cert)
		return -EIO;
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.ca.pem.%d", dir, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	(void)unlink(tmp);
	int r = write_pem(tmp, ca->key, ca->cert);
	if (r >= 0 && link(tmp, path) < 0)
		r = -errno;
	(void)unlink(tmp);
	if (r == -EEXIST) { /* another process won: use its CA */
		EVP_PKEY_free(ca->key);
		X509_free(ca->cert);
		ca->key = NULL;
		ca->cert = NULL;
		return ca_load(ca, path);
	}
	return r;
}

static int ca_finish(struct tls_ca *ca, const char *dir)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (!b || !PEM_write_bio_X509(b, ca->cert)) {
		BIO_free(b);
		return -ENOMEM;
	}
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	ca->pem = strndup(p, (size_t)n);
	BIO_free(b);
	if (!ca->pem)
		return -ENOMEM;

	unsigned char md[32];
	unsigned int mdn = 0;
	if (!X509_digest(ca->cert, EVP_sha256(), md, &mdn) || mdn != 32)
		return -EIO;
	for (unsigned i = 0; i < 32; i++)
		snprintf(ca->fingerprint + 2 * i, 3, "%02x", md[i]);

	/* ca.crt: the public half, rewritten atomically when it differs */
	char crt[4096];
	if ((size_t)snprintf(crt, sizeof(crt), "%s/ca.crt", dir) >= sizeof(crt))
		return -ENAMETOOLONG;
	_cleanup_free_ char *cur = NULL;
	size_t curn = 0;
	if (read_file_small(crt, CA_FILE_MAX, &cur, &curn) >= 0 && curn == strlen(ca->pem) &&
	    memcmp(cur, ca->pem, curn) == 0)
		return 0;
	return write_file_atomic(crt, ca->pem, strlen(ca->pem), 0644);
}

int tls_ca_load_or_create(const char *dir, struct tls_ca **ret)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/ca.pem", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	struct tls_ca *ca = calloc(1, sizeof(*ca));
	if (!ca)
		return -ENOMEM;
	int r = ca_load(ca, path);
	if (r == -ENOENT)
		r = ca_create(ca, dir, path);
	if (r >= 0)
		r = ca_finish(ca, dir);
	if (r >= 0 && !(ca->leaf_key = p256_new()))
		r = -EIO;
	if (r < 0) {
		tls_ca_free(ca);
		return r;
	}
	*ret = ca;
	return 0;
}

void tls_ca_free(struct tls_ca *ca)
{
	if (!ca)
		return;
	for (size_t i = 0; i < TLS_LEAF_CACHE; i++) {
		free(ca->leaves[i].name);
		X509_free(ca->leaves[i].cert);
	}
	EVP_PKEY_free(ca->leaf_key);
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca->pem);
	free(ca);
}

const char *tls_ca_pem(const struct tls_ca *ca)
{
	return ca->pem;
}

const char *tls_ca_fingerprint(const struct tls_ca *ca)
{
	return ca->fingerprint;
}

static int dns_name_ok(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

static X509 *leaf_new(struct tls_ca *ca, const char *name)
{
	X509 *x = cert_new(ca->leaf_key, name, 1, LEAF_DAYS);
	if (!x)
		return NULL;
	char san[300];
	snprintf(san, sizeof(san), "DNS:%s", name);
	if (!X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    add_ext(ca->cert, x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(ca->cert, x, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(ca->cert, x, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(ca->cert, x, NID_subject_alt_name, san) < 0 ||
	    add_ext(ca->cert, x, NID_authority_key_identifier, "keyid:always") < 0 ||
	    !X509_sign(x, ca->key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int tls_leaf_get(struct tls_ca *ca, const char *name, X509 **ret_cert, EVP_PKEY **ret_key)
{
	if (!dns_name_ok(name))
		return -EINVAL;
	time_t now = time(NULL);
	struct leaf *slot = NULL; /* the entry to (re)fill: stale hit, else empty, else LRU */
	for (size_t i = 0; i < TLS_LEAF_CACHE; i++) {
		struct leaf *l = &ca->leaves[i];
		if (l->name && streq(l->name, name)) {
			if (now - l->minted < LEAF_REMINT_S) {
				l->used = ++ca->clock;
				*ret_cert = l->cert;
				*ret_key = ca->leaf_key;
				return 0;
			}
			slot = l;
			break;
		}
		if (!l->name) {
			if (!slot || slot->name)
				slot = l;
		} else if (!slot || (slot->name && l->used < slot->used)) {
			slot = l;
		}
	}
	X509 *x = leaf_new(ca, name);
	char *dup = strdup(name);
	if (!x || !dup) {
		X509_free(x);
		free(dup);
		return -ENOMEM;
	}
	free(slot->name);
	X509_free(slot->cert);
	*slot = (struct leaf){ .name = dup, .cert = x, .used = ++ca->clock, .minted = now };
	*ret_cert = x;
	*ret_key = ca->leaf_key;
	return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h11[] = "http/1.1";
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == 8 && memcmp(in + i + 1, h11, 8) == 0) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_NOACK; /* no ALPN: the client will speak HTTP/1.1 or bytes */
}

SSL_CTX *tls_server_ctx_new(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return NULL;
	static const unsigned char sid[] = "capsem-proxy";
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return ctx;
}

int tls_server_use_leaf(SSL *ssl, struct tls_ca *ca, const char *name)
{
	X509 *cert;
	EVP_PKEY *key;
	int r = tls_leaf_get(ca, name, &cert, &key);
	if (r < 0)
		return r;
	if (SSL_use_certificate(ssl, cert) != 1 || SSL_use_PrivateKey(ssl, key) != 1)
		return -EIO;
	return 0;
}

SSL_CTX *tls_client_ctx_new(const char *extra_ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return NULL;
	static const unsigned char alpn[] = "\x08http/1.1";
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_default_verify_paths(ctx) != 1 ||
	    (extra_ca_file && SSL_CTX_load_verify_locations(ctx, extra_ca_file, NULL) != 1) ||
	    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

int tls_client_setup(SSL *ssl, const char *name)
{
	if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1)
		return -EIO;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return 0;
}
