/* parse.c - strict number parsing. Pure functions. */
#include "parse.h"
#include "macro.h"

int parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;
	if (!s || !*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

int parse_u32(const char *s, uint32_t *ret)
{
	uint64_t v;
	int r = parse_u64(s, &v);
	if (r < 0)
		return r;
	if (v > UINT32_MAX)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

int parse_u32_prefix(const char *s, uint32_t *ret, const char **ret_end)
{
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
	}
	*ret = (uint32_t)v;
	*ret_end = p;
	return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
	char num[32];
	size_t n;
	unsigned shift = 0;
	uint64_t v;
	int r;

	if (!s || !*s)
		return -EINVAL;
	n = strlen(s);
	if (n >= sizeof(num))
		return -ERANGE;
	memcpy(num, s, n + 1);
	switch (num[n - 1]) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	default:
		break;
	}
	if (shift)
		num[--n] = 0;
	r = parse_u64(num, &v);
	if (r < 0)
		return r;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret = v << shift;
	return 0;
}

int parse_size_mib(const char *s, uint64_t min_mib, uint64_t max_mib, uint64_t *ret_mib)
{
	uint64_t v;
	int r = parse_size(s, &v);
	if (r < 0)
		return r;
	if (v % (1u << 20))
		return -EINVAL;
	v >>= 20;
	if (v < min_mib || v > max_mib)
		return -ERANGE;
	*ret_mib = v;
	return 0;
}

int parse_seconds_ms(const char *s, uint64_t *ret_ms)
{
	char ip[24];
	const char *dot;
	uint64_t whole, frac = 0;
	size_t n;
	int r;

	if (!s || !*s)
		return -EINVAL;
	dot = strchr(s, '.');
	n = dot ? (size_t)(dot - s) : strlen(s);
	if (n == 0 || n >= sizeof(ip))
		return n == 0 ? -EINVAL : -ERANGE;
	memcpy(ip, s, n);
	ip[n] = 0;
	r = parse_u64(ip, &whole);
	if (r < 0)
		return r;
	if (dot) {
		const char *f = dot + 1;
		size_t fl = strlen(f);
		if (fl == 0 || fl > 3)
			return -EINVAL;
		for (size_t i = 0; i < 3; i++) {
			char c = i < fl ? f[i] : '0';
			if (c < '0' || c > '9')
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(c - '0');
		}
	}
	if (whole > UINT64_MAX / 1000 - 1)
		return -ERANGE;
	*ret_ms = whole * 1000 + frac;
	return 0;
}
