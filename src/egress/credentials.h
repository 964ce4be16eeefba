/* credentials.h - AI provider keys and a GitHub token: kept on the host, swapped in on the way
 * upstream.
 *
 * Real keys come from the host environment (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or
 * GOOGLE_API_KEY, GH_TOKEN or GITHUB_TOKEN) or from $CAPSEM_HOME/credentials (TOML, mode 0600;
 * the environment wins). The
 * guest only ever sees a fixed placeholder per provider (cred_guest_env); the egress proxy
 * replaces the placeholder with the real key in the authentication headers and the "key" query
 * parameter of requests to that provider's own API domains (cred_rewrite_head), and nowhere
 * else. Keys are wiped from memory when the store is cleared or freed. docs/POLICY.md has the
 * details.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "macro.h"

enum cred_provider { CRED_ANTHROPIC, CRED_OPENAI, CRED_GEMINI, CRED_GITHUB, CRED_N_PROVIDERS };

#define CRED_FILE "credentials"	    /* inside $CAPSEM_HOME */
#define CRED_MAX_KEY 4096	    /* bytes of one key */
#define CRED_MAX_FILE (64u * 1024u) /* bytes of the credentials file */

struct cred_provider_info {
	const char *name;	    /* "anthropic": also the [section] of the credentials file */
	const char *const *env;	    /* host variables, first set one wins (NULL-terminated) */
	const char *guest_env;	    /* the variable set in the guest */
	const char *placeholder;    /* the value the guest sees */
	const char *const *domains; /* the only hosts the real key is sent to (NULL-terminated) */
};

/* The static provider table. p < CRED_N_PROVIDERS. */
const struct cred_provider_info *cred_provider(enum cred_provider p);

struct cred_store;

/* Load keys from the credentials file at path (NULL: none; a missing file is fine) and from envp
 * (a NULL-terminated "NAME=value" array; NULL means environ). Returns 0 and *ret (free with
 * cred_free), or -errno with one line in err that never contains a key: -EPERM when the file is
 * accessible by group or others or owned by someone else, -EBADMSG for invalid TOML, unknown
 * sections or keys, or a key with spaces or control characters, or the -errno of reading it. */
int cred_load(const char *path, char *const *envp, struct cred_store **ret, char *err,
	      size_t errlen);
/* Wipe every key and free the store. Accepts NULL. */
void cred_free(struct cred_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct cred_store *, cred_free)
#define _cleanup_cred_free_ _cleanup_(cred_freep)
/* Wipe and forget every key; the store stays usable (and empty). */
void cred_clear(struct cred_store *s);

/* Store the keys of from for the providers in mask (bit 1 << provider) in the credentials file
 * at path, keeping the file's other keys (the environment's are never copied in unless they are
 * from's): the whole file is rewritten atomically with mode 0600 and the text wiped. 0, or
 * -errno with one line in err that never contains a key (the file's own load errors as
 * cred_load's). */
int cred_file_store(const char *path, const struct cred_store *from, unsigned mask, char *err,
		    size_t errlen);
/* Whether a real key is configured for p, and where it came from: the environment variable's
 * name, "credentials file", or NULL. */
bool cred_has_key(const struct cred_store *s, enum cred_provider p);
const char *cred_key_source(const struct cred_store *s, enum cred_provider p);

/* Which providers have a real key in s: bit 1 << provider. */
unsigned cred_key_mask(const struct cred_store *s);
/* The provider one of whose own API domains host is (a bare DNS name, any case, maybe with a
 * trailing dot; exact names only), or -1. */
int cred_provider_for_host(const char *host);

/* Wipe the providers' key variables (ANTHROPIC_API_KEY, ...) from this process's environment:
 * the value's bytes are overwritten where they lie (so /proc/PID/environ shows zeros) and the
 * variable is unset. For a process that hands its keys to the key broker (keyd.h) and must not
 * keep them, nor pass them to what it runs. Main thread, before other threads read the
 * environment. */
void cred_env_scrub(void);

/* The guest environment: "GUEST_ENV=placeholder" for each provider in mask (bit 1 << provider:
 * those with a real key on the host, cred_key_mask; all providers with CRED_ENV_ALL). A
 * malloc'ed NULL-terminated vector in *ret_env (strv_free), which may be empty ({ NULL }). 0 or
 * -ENOMEM. */
#define CRED_ENV_ALL 1u
int cred_guest_env(unsigned mask, unsigned flags, char ***ret_env);

/* Rewrite an HTTP/1.1 request head (request line and header lines, normally ending in CRLFCRLF)
 * bound for host (a bare DNS name, any case, maybe with a trailing dot): when host is one of a
 * provider's domains and that provider has a key, the provider's placeholder is replaced by the
 * key where it is the whole value of an x-api-key, x-goog-api-key or api-key header, the token of
 * an "Authorization: Bearer" or "Authorization: token" header, the user or the password of an
 * "Authorization: Basic" header (decoded, swapped, re-encoded: what git sends), or the value of
 * a "key" query parameter in the request target (percent-encoded there as needed). Everything else is copied byte for byte. The result
 * is appended to out (reserved in one step, so a growing buffer never leaves a copy of the key in
 * freed memory; release out with buf_done(out, 1)); *ret_count (optional) is the number of
 * replacements. 0, or -ENOBUFS/-ENOMEM with out unchanged. */
int cred_rewrite_head(const struct cred_store *s, const char *host, const char *head, size_t len,
		      struct buf *out, int *ret_count);
