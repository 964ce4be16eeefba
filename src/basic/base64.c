/* base64.c - RFC 4648 base64 (see base64.h). Pure; any thread. */
#include "base64.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode_to(const void *p, size_t n, char *q)
{
	const uint8_t *s = p;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*q++ = b64[v >> 18];
		*q++ = b64[(v >> 12) & 63];
		*q++ = b64[(v >> 6) & 63];
		*q++ = b64[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		*q++ = b64[v >> 18];
		*q++ = b64[(v >> 12) & 63];
		*q++ = '=';
		*q++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		*q++ = b64[v >> 18];
		*q++ = b64[(v >> 12) & 63];
		*q++ = b64[(v >> 6) & 63];
		*q++ = '=';
	}
}

char *base64_encode(const void *p, size_t n)
{
	if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	char *o = malloc(base64_encoded_len(n) + 1);
	if (!o)
		return NULL;
	base64_encode_to(p, n, o);
	o[base64_encoded_len(n)] = 0;
	return o;
}

static int b64_val(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

int base64_decode_to(const char *s, size_t n, uint8_t *o, size_t cap, size_t *ret_len)
{
	size_t k = 0;
	if (n % 4)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int j = 0; j < 4; j++) {
			if (s[i + j] == '=' && i + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
			} else if (pad || (v[j] = b64_val(s[i + j])) < 0) {
				return -EINVAL;
			}
		}
		size_t out = 3u - (size_t)pad;
		if (cap - k < out)
			return -ENOBUFS;
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		o[k++] = (uint8_t)(x >> 16);
		if (pad < 2)
			o[k++] = (uint8_t)(x >> 8);
		if (pad < 1)
			o[k++] = (uint8_t)x;
	}
	*ret_len = k;
	return 0;
}

int base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len)
{
	if (n % 4)
		return -EINVAL;
	_cleanup_free_ uint8_t *o = malloc(n / 4 * 3 + 1);
	if (!o)
		return -ENOMEM;
	int r = base64_decode_to(s, n, o, n / 4 * 3 + 1, ret_len);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(o);
	return 0;
}
