/* procnet.c - parse /proc/net/tcp{,6} rows and "socket:[N]" links for capsem-net-proxy.
 *
 * A row of /proc/net/tcp looks like
 *   "  12: 0800C0C0:A1B2 04030201:01BB 01 00000000:00000000 00:00000000 00000000     0  0 4711 ..."
 * (sl, local address:port, remote address:port, state, queues, timer, retransmits, uid, timeout,
 * inode). Addresses are 8 (IPv4) or 32 (IPv6) hex digits, one %08X per 32-bit word as the kernel
 * holds it; ports are %04X in host order. Trust boundary: the text comes from this guest's
 * kernel, but it is parsed by length with every field checked anyway. Pure; any thread.
 */
#include "procnet.h"

#include <sys/socket.h>

#include "macro.h"

struct span {
	const char *p;
	size_t n;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* n hex digits (n <= 8) into *ret. 0 or -EINVAL. */
static int hex32(const char *p, size_t n, uint32_t *ret)
{
	uint32_t v = 0;
	if (n == 0 || n > 8)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int d = hexval(p[i]);
		if (d < 0)
			return -EINVAL;
		v = v << 4 | (uint32_t)d;
	}
	*ret = v;
	return 0;
}

/* Split one line into up to max blank-separated fields. Returns the count. */
static size_t split_fields(const char *p, size_t n, struct span *f, size_t max)
{
	size_t k = 0, i = 0;
	while (i < n && k < max) {
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i >= n)
			break;
		size_t start = i;
		while (i < n && p[i] != ' ' && p[i] != '\t')
			i++;
		f[k].p = p + start;
		f[k].n = i - start;
		k++;
	}
	return k;
}

/* "HEX:PORT" with alen address bytes -> addr, port. 0 or -EINVAL. */
static int parse_endpoint(const struct span *s, size_t alen, uint8_t *addr, uint16_t *port)
{
	size_t hexlen = alen * 2;
	uint32_t v;
	if (s->n != hexlen + 5 || s->p[hexlen] != ':')
		return -EINVAL;
	for (size_t w = 0; w < alen / 4; w++) {
		if (hex32(s->p + w * 8, 8, &v) < 0)
			return -EINVAL;
		memcpy(addr + w * 4, &v, 4); /* the word as the kernel held it */
	}
	if (hex32(s->p + hexlen + 1, 4, &v) < 0)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

static int parse_dec(const struct span *s, uint64_t *ret)
{
	uint64_t v = 0;
	if (s->n == 0 || s->n > 19)
		return -EINVAL;
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i] < '0' || s->p[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s->p[i] - '0');
	}
	*ret = v;
	return 0;
}

int procnet_find_inode(const char *text, size_t n, int family, const uint8_t *addr, uint16_t port,
		       uint64_t *ret_inode)
{
	size_t alen;
	if (family == AF_INET)
		alen = 4;
	else if (family == AF_INET6)
		alen = 16;
	else
		return -EINVAL;

	size_t pos = 0;
	while (pos < n) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - line) : n - pos;
		struct span f[10];
		uint8_t a[16];
		uint16_t p;
		uint64_t inode;

		pos += len + (nl ? 1 : 0);
		/* sl local rem st queues timer retr uid timeout inode */
		if (split_fields(line, len, f, ELEMENTSOF(f)) < 10)
			continue;
		if (f[0].n < 2 || f[0].p[f[0].n - 1] != ':')
			continue; /* the header line */
		if (parse_endpoint(&f[1], alen, a, &p) < 0 || parse_dec(&f[9], &inode) < 0)
			continue;
		if (p != port || memcmp(a, addr, alen) != 0 || inode == 0)
			continue;
		*ret_inode = inode;
		return 0;
	}
	return -ENOENT;
}

int procnet_socket_inode(const char *link, size_t n, uint64_t *ret)
{
	static const char pre[] = "socket:[";
	size_t k = sizeof(pre) - 1;
	struct span s;
	uint64_t v;
	if (n < k + 2 || memcmp(link, pre, k) != 0 || link[n - 1] != ']')
		return -EINVAL;
	s.p = link + k;
	s.n = n - k - 1;
	if (parse_dec(&s, &v) < 0)
		return -EINVAL;
	*ret = v;
	return 0;
}

void procnet_comm_sanitize(const char *in, size_t n, char *out, size_t cap)
{
	size_t k = 0;
	if (cap == 0)
		return;
	if (n > 0 && in[n - 1] == '\n')
		n--;
	for (size_t i = 0; i < n && k + 1 < cap; i++) {
		unsigned char c = (unsigned char)in[i];
		out[k++] = c >= 0x20 && c <= 0x7e ? (char)c : '?';
	}
	out[k] = 0;
}
