/* utf8.c - RFC 3629 UTF-8 validation (see utf8.h). */
#include "utf8.h"

#include <stdint.h>

size_t utf8_seq(const void *ptr, size_t n)
{
	const uint8_t *p = ptr;
	if (n == 0)
		return 0;
	uint8_t c = p[0];
	if (c < 0x80)
		return c ? 1 : 0;
	size_t len;
	uint32_t min, cp;
	if ((c & 0xe0) == 0xc0)
		len = 2, min = 0x80, cp = c & 0x1f;
	else if ((c & 0xf0) == 0xe0)
		len = 3, min = 0x800, cp = c & 0x0f;
	else if ((c & 0xf8) == 0xf0)
		len = 4, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

bool utf8_valid(const void *ptr, size_t n)
{
	const uint8_t *p = ptr;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

size_t utf8_count(const void *ptr, size_t n)
{
	const uint8_t *p = ptr;
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += (p[i] & 0xc0) != 0x80;
	return c;
}
