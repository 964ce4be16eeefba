/* dnsmap.h - capsem-dns-proxy's pure parts: the DNS ID remap table and DNS message helpers.
 *
 * Every query the proxy forwards to the host gets a new ID from this table, so that queries of
 * different clients that happen to use the same ID can be in flight together on the one host
 * connection; the answer's ID finds the client and the client's own ID again. The new ID is the
 * slot number (low 10 bits) plus a per-slot generation (high 6 bits): a late answer for a slot
 * that has been reused since is recognised and dropped.
 */
#pragma once

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define DNSMAP_SLOT_BITS 10u
#define DNSMAP_SLOTS (1u << DNSMAP_SLOT_BITS) /* queries in flight at most */
#define DNS_HDR_SIZE 12u
#define DNS_MSG_MAX 65535u /* the TCP framing's 16-bit length */

/* Who asked: a UDP datagram (answer with sendto on socket `sock` to addr) or a TCP connection
 * (connection slot conn, valid while its generation is still gen). */
struct dnsmap_client {
	int tcp;
	unsigned sock;
	uint32_t conn, gen;
	struct sockaddr_in6 addr; /* large enough for sockaddr_in too */
	socklen_t addrlen;
};

/* bytes of the query kept for a SERVFAIL answer: the header and a question of any legal name */
#define DNSMAP_QUERY_KEEP (DNS_HDR_SIZE + 256u + 4u)

struct dnsmap_entry {
	int used;
	uint16_t id;	  /* the ID sent to the host */
	uint16_t orig_id; /* the client's ID */
	uint64_t deadline_ms;
	struct dnsmap_client client;
	uint16_t query_len; /* the client's query as it came (its own ID), cut to QUERY_KEEP */
	uint8_t query[DNSMAP_QUERY_KEEP];
};

struct dnsmap {
	struct dnsmap_entry e[DNSMAP_SLOTS];
	uint8_t gen[DNSMAP_SLOTS];
	unsigned next; /* where the search for a free slot starts */
	unsigned n;    /* used entries */
};

void dnsmap_init(struct dnsmap *m);
/* Take a slot for the query (q, n) of client c (the query's first DNSMAP_QUERY_KEEP bytes are
 * kept). 0 with *ret_id (the ID to send), or -ENOSPC (DNSMAP_SLOTS in flight). */
int dnsmap_add(struct dnsmap *m, uint16_t orig_id, const struct dnsmap_client *c, const uint8_t *q,
	       size_t n, uint64_t deadline_ms, uint16_t *ret_id);
/* Release the entry of an answer's ID into *ret. 0, or -ENOENT (unknown, expired or reused). */
int dnsmap_take(struct dnsmap *m, uint16_t id, struct dnsmap_entry *ret);
/* Release one entry whose deadline is <= now into *ret: 1, or 0 when there is none. */
int dnsmap_expire(struct dnsmap *m, uint64_t now_ms, struct dnsmap_entry *ret);
/* The earliest deadline of a used entry, UINT64_MAX when the table is empty. */
uint64_t dnsmap_next_deadline(const struct dnsmap *m);
/* Release every entry, calling fn(entry, userdata) for each (e.g. to SERVFAIL them). */
void dnsmap_flush(struct dnsmap *m, void (*fn)(const struct dnsmap_entry *e, void *userdata),
		  void *userdata);

/* A DNS message's ID (bytes 0-1, big-endian); n >= 2. */
uint16_t dnsmap_get_id(const uint8_t *msg);
void dnsmap_set_id(uint8_t *msg, uint16_t id);
/* 1 when (q, n) can be forwarded as a query: at least a header, QR clear. */
int dnsmap_is_query(const uint8_t *q, size_t n);
/* A SERVFAIL answer to the query (q, n) into out: ID, opcode and RD copied, QR and RA set,
 * RCODE 2, and the first question copied when it can be parsed (else QDCOUNT 0). Resolvers
 * (glibc, musl) match answers by ID and question. Returns the answer's length, -EBADMSG (not a
 * query) or -ENOBUFS (cap too small). */
ssize_t dnsmap_servfail(const uint8_t *q, size_t n, uint8_t *out, size_t cap);
