/* base64.h - base64 (RFC 4648 §4, padded), on caller buffers or malloc'ed ones.
 *
 * Pure code, any thread. Decoding is strict: length a multiple of 4, only the alphabet, '=' only
 * as the last one or two characters. The _to variants never allocate, so text holding a secret
 * (an Authorization: Basic credential) can live in memory the caller wipes.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Characters of the encoding of n bytes (no NUL). */
static inline size_t base64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}
/* Encode p[0, n) into out (base64_encoded_len(n) characters; no NUL written). */
void base64_encode_to(const void *p, size_t n, char *out);
/* Decode s[0, n) into out (room for cap bytes). 0 with *ret_len, -EINVAL when s is not strict
 * base64, -ENOBUFS when it does not fit. out is left partly written on failure. */
int base64_decode_to(const char *s, size_t n, uint8_t *out, size_t cap, size_t *ret_len);
/* Malloc'ed NUL-terminated encoding, or NULL. */
char *base64_encode(const void *p, size_t n);
/* Malloc'ed decoding: 0 with *ret and *ret_len, -EINVAL or -ENOMEM. */
int base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len);
