/* siphash.c - SipHash-c-d, from the paper's description (little-endian message words). */
#include "siphash.h"

static inline uint64_t rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

struct sipstate {
	uint64_t v0, v1, v2, v3;
};

static void sipround(struct sipstate *s, unsigned n)
{
	while (n--) {
		s->v0 += s->v1;
		s->v1 = rotl64(s->v1, 13);
		s->v1 ^= s->v0;
		s->v0 = rotl64(s->v0, 32);
		s->v2 += s->v3;
		s->v3 = rotl64(s->v3, 16);
		s->v3 ^= s->v2;
		s->v0 += s->v3;
		s->v3 = rotl64(s->v3, 21);
		s->v3 ^= s->v0;
		s->v2 += s->v1;
		s->v1 = rotl64(s->v1, 17);
		s->v1 ^= s->v2;
		s->v2 = rotl64(s->v2, 32);
	}
}

uint64_t siphash(const uint64_t k[2], const void *data, size_t len, unsigned c, unsigned d)
{
	const uint8_t *p = data;
	struct sipstate s = { 0x736f6d6570736575ULL ^ k[0], 0x646f72616e646f6dULL ^ k[1],
			      0x6c7967656e657261ULL ^ k[0], 0x7465646279746573ULL ^ k[1] };
	uint64_t m, b = (uint64_t)len << 56;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		m = 0;
		for (int j = 0; j < 8; j++)
			m |= (uint64_t)p[i + (size_t)j] << (8 * j);
		s.v3 ^= m;
		sipround(&s, c);
		s.v0 ^= m;
	}
	for (int j = 0; i + (size_t)j < len; j++)
		b |= (uint64_t)p[i + (size_t)j] << (8 * j);
	s.v3 ^= b;
	sipround(&s, c);
	s.v0 ^= b;
	s.v2 ^= 0xff;
	sipround(&s, d);
	return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}
