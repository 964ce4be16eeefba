/* ws9pwire.h - the wire codec of the workspace's 9P2000.L server (ws9p.h): the numbers of the
 * protocol, a bounds-checked reader of one message's fields and a bounded writer of one reply.
 * Little-endian; a string is len[2] bytes, not NUL-terminated; a qid is type[1] version[4]
 * path[8]. Pure: no I/O, no allocation. Its prefix is p9: p9rd_* reads, p9wr_* writes.
 *
 * A reader never reads past its message: a field that does not fit sets bad and reads as zero
 * (a string as ""), so a request's fields are read in order and bad is checked once after the
 * last. A writer never writes past its capacity: a field that does not fit sets over and is
 * dropped. Used by the server (ws9p*.c) and by its tests' client.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define P9_HDR 7u      /* size[4] type[1] tag[2] */
#define P9_IOHDRSZ 24u /* the room the client keeps for a Twrite/Rread header */
#define P9_NOFID 0xffffffffu

/* Message types: a request's reply is its type + 1 (or Rlerror). */
enum {
	P9_RLERROR = 7,
	P9_TSTATFS = 8,
	P9_TLOPEN = 12,
	P9_TLCREATE = 14,
	P9_TSYMLINK = 16,
	P9_TMKNOD = 18,
	P9_TRENAME = 20,
	P9_TREADLINK = 22,
	P9_TGETATTR = 24,
	P9_TSETATTR = 26,
	P9_TXATTRWALK = 30,
	P9_TXATTRCREATE = 32,
	P9_TREADDIR = 40,
	P9_TFSYNC = 50,
	P9_TLOCK = 52,
	P9_TGETLOCK = 54,
	P9_TLINK = 70,
	P9_TMKDIR = 72,
	P9_TRENAMEAT = 74,
	P9_TUNLINKAT = 76,
	P9_TVERSION = 100,
	P9_TAUTH = 102,
	P9_TATTACH = 104,
	P9_TFLUSH = 108,
	P9_TWALK = 110,
	P9_TREAD = 116,
	P9_TWRITE = 118,
	P9_TCLUNK = 120,
	P9_TREMOVE = 122,
};

/* Tlopen and Tlcreate flags (the values of Linux on x86-64, spelled out so the host's do not
 * matter) */
#define P9_L_RDONLY 0u
#define P9_L_WRONLY 01u
#define P9_L_RDWR 02u
#define P9_L_NOACCESS 03u
#define P9_L_ACCMODE 03u
#define P9_L_CREATE 0100u
#define P9_L_EXCL 0200u
#define P9_L_TRUNC 01000u
#define P9_L_APPEND 02000u
#define P9_L_DSYNC 010000u
#define P9_L_DIRECTORY 0200000u
#define P9_L_SYNC 04000000u

/* Tsetattr's valid bits */
#define P9_SETATTR_MODE 0x1u
#define P9_SETATTR_SIZE 0x8u
#define P9_SETATTR_ATIME 0x10u
#define P9_SETATTR_MTIME 0x20u
#define P9_SETATTR_ATIME_SET 0x80u
#define P9_SETATTR_MTIME_SET 0x100u

#define P9_GETATTR_BASIC 0x7ffull /* Tgetattr's request_mask and Rgetattr's valid */
#define P9_QT_DIR 0x80u		  /* a qid's type */
#define P9_QT_SYMLINK 0x02u
#define P9_AT_REMOVEDIR 0x200u /* Tunlinkat's flags */
#define P9_LOCK_SUCCESS 0u     /* Rlock's status */
#define P9_LOCK_TYPE_UNLCK 2u  /* Rgetlock's type */
#define P9_V9FS_MAGIC 0x01021997u

static inline uint16_t p9_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t p9_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t p9_le64(const uint8_t *p)
{
	return (uint64_t)p9_le32(p) | (uint64_t)p9_le32(p + 4) << 32;
}

static inline void p9_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void p9_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A message's fields p[off, n), read in order. */
struct p9rd {
	const uint8_t *p;
	size_t n, off;
	bool bad; /* a read went past n */
};

/* A string of a message: p points into it (not NUL-terminated). */
struct p9str {
	const char *p;
	uint16_t n;
};

struct p9qid {
	uint8_t type;
	uint64_t path;
};

/* The next k bytes (pointing into the message), or NULL with bad set. */
const uint8_t *p9rd_take(struct p9rd *r, size_t k);
uint8_t p9rd_u8(struct p9rd *r);
uint16_t p9rd_u16(struct p9rd *r);
uint32_t p9rd_u32(struct p9rd *r);
uint64_t p9rd_u64(struct p9rd *r);
struct p9str p9rd_str(struct p9rd *r);

/* A reply being written at p[n, cap). */
struct p9wr {
	uint8_t *p;
	size_t cap, n;
	bool over; /* a write did not fit */
};

/* Room for the next k bytes (the caller fills them), or NULL with over set. */
uint8_t *p9wr_take(struct p9wr *w, size_t k);
void p9wr_u8(struct p9wr *w, uint8_t v);
void p9wr_u16(struct p9wr *w, uint16_t v);
void p9wr_u32(struct p9wr *w, uint32_t v);
void p9wr_u64(struct p9wr *w, uint64_t v);
void p9wr_str(struct p9wr *w, const char *s, size_t n); /* over when n > UINT16_MAX */
void p9wr_qid(struct p9wr *w, struct p9qid q);		/* version 0 */
