/* utf8.h - the one UTF-8 validator (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF) for every decoder of untrusted text: TOML files, JSON-RPC messages, ledger text,
 * tool results.
 *
 * One rule for NUL: it is never text. utf8_seq() does not accept a NUL byte, so neither does
 * utf8_valid(); callers that must carry NUL bytes (binary data) do not use these functions.
 * Pure code; any thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The length (1..4) of the valid UTF-8 sequence at the start of p[0, n), or 0 when it is not
 * one: invalid, truncated by n, NUL, or n == 0. Never reads p[n] or beyond. */
size_t utf8_seq(const void *p, size_t n);
/* Whether p[0, n) is entirely valid UTF-8 without NUL (true for n == 0). */
bool utf8_valid(const void *p, size_t n);
/* The number of code points in p[0, n), which must be valid UTF-8. */
size_t utf8_count(const void *p, size_t n);
