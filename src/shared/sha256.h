/* sha256.h - SHA-256 digests (OpenSSL EVP) as lowercase hex, of memory, fds and files.
 *
 * Used for the builder's cache keys and for image manifests. All functions return 0 or -errno
 * (-EIO when OpenSSL fails) and leave out-parameters untouched on failure.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_LEN 64

/* An incremental hash. Initialise with sha256_init(); always release with sha256_done(). */
struct sha256 {
	void *ctx; /* EVP_MD_CTX */
};

int sha256_init(struct sha256 *h);
int sha256_update(struct sha256 *h, const void *p, size_t n);
/* Feed one length-prefixed field (8-byte big-endian length, then the bytes), so that a sequence
 * of fields has exactly one encoding: ("ab","c") and ("a","bc") hash differently. */
int sha256_field(struct sha256 *h, const void *p, size_t n);
int sha256_field_str(struct sha256 *h, const char *s);
/* Finish into ret (64 hex digits + NUL). The hash cannot be updated afterwards. */
int sha256_final_hex(struct sha256 *h, char ret[SHA256_HEX_LEN + 1]);
/* Release the context; accepts a zeroed or already released struct. */
void sha256_done(struct sha256 *h);

int sha256_hex_buf(const void *p, size_t n, char ret[SHA256_HEX_LEN + 1]);
/* Hash everything readable from fd (from its current offset to EOF); *ret_size gets the number of
 * bytes hashed when ret_size is not NULL. */
int sha256_hex_fd(int fd, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size);
int sha256_hex_file(const char *path, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size);
/* The digest of a large, mostly empty file (a VM disk) that costs what its data costs: the file
 * is read as 64 KiB chunks; each chunk that is not all zeros is hashed as a field with its
 * offset (8 bytes big-endian) before it, and the file's size ends the stream. Holes are skipped
 * with SEEK_DATA/SEEK_HOLE, and a chunk of written zeros hashes like a hole, so every copy of
 * the file hashes the same whatever its sparseness. From offset 0, whatever fd's offset;
 * *ret_size gets the file's size. */
#define SHA256_SPARSE_CHUNK (64u << 10)
int sha256_hex_fd_sparse(int fd, char ret[SHA256_HEX_LEN + 1], uint64_t *ret_size);
/* 1 when s is exactly 64 lowercase hex digits. */
int sha256_hex_valid(const char *s);
