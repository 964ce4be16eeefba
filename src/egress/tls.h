/* tls.h - the per-installation CA, the leaf certificates it mints, and the two TLS contexts of
 * the egress proxy (guest-facing server, upstream-facing client).
 *
 * The CA lives in $CAPSEM_HOME/ca/: ca.pem (private key + certificate, 0600, the only copy of
 * the key) and ca.crt (the certificate alone, 0644, what guests trust). It is created on first
 * use; two processes racing to create it agree on one (the loser loads the winner's). Leaves are
 * ECDSA P-256 certificates for one DNS name, signed by the CA, cached per process.
 */
#pragma once

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct tls_ca;

/* Load the CA from dir (created 0700 if missing), creating it when absent. 0 or -errno;
 * -EBADMSG when the files exist but do not hold a usable CA key and certificate. */
int tls_ca_load_or_create(const char *dir, struct tls_ca **ret);
void tls_ca_free(struct tls_ca *ca);
/* The CA certificate in PEM (NUL-terminated, owned by ca). */
const char *tls_ca_pem(const struct tls_ca *ca);
/* SHA-256 fingerprint of the CA certificate as 64 hex digits (owned by ca). */
const char *tls_ca_fingerprint(const struct tls_ca *ca);

/* The leaf for name (a DNS name, lower case), minted on first use and cached (up to
 * TLS_LEAF_CACHE names; the least recently used goes). The returned objects are borrowed: valid
 * until the next tls_leaf_get() on the same ca. 0 or -errno (-EINVAL: not a DNS name). */
#define TLS_LEAF_CACHE 512
int tls_leaf_get(struct tls_ca *ca, const char *name, X509 **ret_cert, EVP_PKEY **ret_key);

/* The guest-facing server context: TLS 1.2+, ALPN http/1.1 only. Certificates are set per
 * connection with tls_server_use_leaf(). NULL on failure. */
SSL_CTX *tls_server_ctx_new(void);
int tls_server_use_leaf(SSL *ssl, struct tls_ca *ca, const char *name);

/* The upstream-facing client context: TLS 1.2+, peer verification against the system trust
 * store plus extra_ca_file (a PEM file, may be NULL), ALPN http/1.1. NULL on failure. */
SSL_CTX *tls_client_ctx_new(const char *extra_ca_file);
/* Prepare an upstream SSL for name: SNI, host name verification. 0 or -errno. */
int tls_client_setup(SSL *ssl, const char *name);

/* The last OpenSSL error as text for logs and ledger rows (a static buffer per thread). */
const char *tls_error_string(void);
