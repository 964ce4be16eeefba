/* sha256.c - SHA-256 digests as hex through OpenSSL's EVP interface.
 *
 * Trust boundary: none of its own; it hashes whatever bytes it is given, which for manifests are
 * image files that may have been tampered with (the hash is how tampering is found). Runs in the
 * caller's thread; no shared state.
 */
#include "sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"

int sha256_init(struct sha256 *h)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return -EIO;
	}
	h->ctx = ctx;
	return 0;
}

int sha256_update(struct sha256 *h, const void *p, size_t n)
{
	if (!h->ctx)
		return -EINVAL;
	if (n == 0)
		return 0;
	return EVP_DigestUpdate(h->ctx, p, n) == 1 ? 0 : -EIO;
}

/* v as 8 bytes, big-endian: how lengths and offsets enter a digest */
static int update_be64(struct sha256 *h, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	return sha256_update(h, b, sizeof(b));
}

int sha256_field(struct sha256 *h, const void *p, size_t n)
{
	int r = update_be64(h, n);
	return r < 0 ? r : sha256_update(h, p, n);
}

/* The end of a whole-stream digest: finish h (when r is still 0), release it, and on success
 * copy the hex into ret and size into *ret_size (may be NULL). r or 0. */
static int finish(struct sha256 *h, int r, char ret[SHA256_HEX_LEN + 1], uint64_t size,
		  uint64_t *ret_size)
{
	char hex[SHA256_HEX_LEN + 1];
	if (r == 0)
		r = sha256_final_hex(h, hex);
	sha256_done(h);
	if (r < 0)
		return r;
	memcpy(ret, hex, sizeof(hex));
	if (ret_size)
		*ret_size = size;
	return 0;
}

int sha256_field_str(struct sha256 *h, const char *s)
{
	return sha256_field(h, s, strlen(s));
}

static void hex_encode(const uint8_t *d, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 0xf];
	}
	out[2 * n] = 0;
}

int sha256_final_hex(struct sha256 *h, char ret[SHA256_HEX_LEN + 1])
{
	uint8_t d[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (!h->ctx)
		return -EINVAL;
	if (EVP_DigestFinal_ex(h->ctx, d, &n) != 1 || n != SHA256_HEX_LEN / 2)
		return -EIO;
	hex_encode(d, n, ret);
	return 0;
}

void sha256_done(struct sha256 *h)
{
	if (h && h->ctx) {
		EVP_MD_CTX_free(h->ctx);
		h->ctx = NULL;
	}
}

int sha256_hex_buf(const void *p, size_t n, char ret[SHA256_HEX_LEN + 1])
{
	struct sha256 h = { 0 };
	int r = sha256_init(&h);
	if (r == 0)
		r = sha256_update(&h, p, n);
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}

int sha256_hex_fd(int fd, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	struct sha256 h = { 0 };
	uint64_t total = 0;
	_cleanup_free_ uint8_t *chunk = malloc(1 << 16);
	if (!chunk)
		return -ENOMEM;
	int r = sha256_init(&h);
	while (r == 0) {
		ssize_t k = fd_read_some(fd, chunk, 1 << 16);
		if (k < 0) {
			r = (int)k;
			break;
		}
		if (k == 0)
			break;
		total += (uint64_t)k;
		r = sha256_update(&h, chunk, (size_t)k);
	}
	return finish(&h, r, ret, total, ret_size);
}

int sha256_hex_file(const char *path, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	return sha256_hex_fd(fd, ret, ret_size);
}

int sha256_hex_valid(const char *s)
{
	size_t i;
	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return i == SHA256_HEX_LEN;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

int sha256_hex_fd_sparse(int fd, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	struct sha256 h = { 0 };
	struct stat st;
	_cleanup_free_ uint8_t *chunk = malloc(SHA256_SPARSE_CHUNK);
	if (!chunk)
		return -ENOMEM;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	uint64_t size = (uint64_t)st.st_size;
	int r = sha256_init(&h);
	for (uint64_t off = 0; r == 0 && off < size;) {
		off_t d = lseek(fd, (off_t)off, SEEK_DATA);
		if (d < 0) {
			if (errno != ENXIO)
				r = negative_errno();
			break; /* ENXIO: only a hole is left */
		}
		/* the chunk holding the data's start; a hole inside a chunk reads as zeros */
		uint64_t c = (uint64_t)d / SHA256_SPARSE_CHUNK * SHA256_SPARSE_CHUNK;
		off_t e = lseek(fd, d, SEEK_HOLE);
		uint64_t end = e < 0 ? size : (uint64_t)e;
		for (; r == 0 && c < end; c += SHA256_SPARSE_CHUNK) {
			size_t want = (size_t)MIN((uint64_t)SHA256_SPARSE_CHUNK, size - c);
			size_t got = 0;
			while (got < want) {
				ssize_t k = pread(fd, chunk + got, want - got, (off_t)(c + got));
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0) {
					r = k < 0 ? negative_errno() : -EIO;
					break;
				}
				got += (size_t)k;
			}
			if (r < 0 || all_zero(chunk, want))
				continue;
			r = update_be64(&h, c);
			if (r == 0)
				r = sha256_field(&h, chunk, want);
		}
		off = MAX(end, c);
	}
	if (r == 0)
		r = update_be64(&h, size);
	return finish(&h, r, ret, size, ret_size);
}
