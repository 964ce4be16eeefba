/* parse.h - strict number parsing for command lines, config and wire text.
 *
 * Every parser rejects empty strings, trailing garbage, signs where none is allowed, and
 * overflow; it returns 0 or -EINVAL / -ERANGE and leaves the out-parameter untouched on error.
 */
#pragma once

#include <stdint.h>

int parse_u64(const char *s, uint64_t *ret);
int parse_u32(const char *s, uint32_t *ret);
/* The decimal digits at the start of s (at least one; what follows is the caller's): 0 with *ret
 * and *ret_end (the first byte after them), -EINVAL when s does not start with a digit, -ERANGE
 * past UINT32_MAX. The strtoul replacement (strtol* and sscanf are banned: STYLE.md). */
int parse_u32_prefix(const char *s, uint32_t *ret, const char **ret_end);
/* "512", "512M", "2G", "64K" (binary units; bare numbers are bytes). */
int parse_size(const char *s, uint64_t *ret);
/* A size (as parse_size) that must be a whole number of MiB within [min_mib, max_mib], in MiB.
 * -EINVAL for a malformed or fractional size, -ERANGE outside the bounds. */
int parse_size_mib(const char *s, uint64_t min_mib, uint64_t max_mib, uint64_t *ret_mib);
/* "2", "0.5", "1.25": seconds with up to 3 decimals, into milliseconds. */
int parse_seconds_ms(const char *s, uint64_t *ret_ms);
