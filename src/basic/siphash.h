/* siphash.h - SipHash (Aumasson, Bernstein): keyed 64-bit hashes for tables that hostile input
 * fills (TOML keys, guest-chosen DNS names), so nobody can aim collisions at one bucket.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* SipHash-c-d with key k: c compression rounds per 8-byte block, d finalisation rounds.
 * SipHash-2-4 is the standard strength; SipHash-1-3 is the faster variant hash tables use. */
uint64_t siphash(const uint64_t k[2], const void *data, size_t len, unsigned c, unsigned d);

static inline uint64_t siphash24(const uint64_t k[2], const void *data, size_t len)
{
	return siphash(k, data, len, 2, 4);
}

static inline uint64_t siphash13(const uint64_t k[2], const void *data, size_t len)
{
	return siphash(k, data, len, 1, 3);
}
