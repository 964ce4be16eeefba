/* dns.h - Capsem's DNS answers, computed without any I/O (DESIGN.md §6, docs/PROTOCOL.md).
 *
 * The guest's DNS proxy forwards every query to the host over a stream with RFC 1035 TCP
 * framing (2-byte big-endian length, then the message). The host never forwards a query
 * anywhere; it answers from policy and the fake-IP map:
 *
 *   allowed name, class IN:  A (and ANY) -> one A record, an address from 198.18.0.0/15 that the
 *                            fake-IP map assigns to the name, TTL DNS_TTL;
 *                            AAAA, HTTPS, SVCB and every other type -> NOERROR, no answers
 *                            (NODATA), so clients fall back to the A record;
 *                            AXFR, IXFR -> REFUSED
 *   allowed name, other class or the root name -> REFUSED
 *   blocked name             -> NXDOMAIN
 *   malformed, header readable -> FORMERR (a header-only answer); unreadable -> dropped
 *   opcode other than QUERY  -> NOTIMP;  QDCOUNT != 1 -> FORMERR;  EDNS version > 0 -> BADVERS
 *
 * Answers echo the question byte for byte (so the client's 0x20 case randomisation survives),
 * copy the ID and RD, set QR and RA, and carry a minimal OPT record when the query had one
 * (payload size DNS_EDNS_SIZE, DO copied). Negative answers carry no SOA, so resolvers do not
 * cache them (policy may change on reload). Names accepted: labels of 1..63 letters, digits,
 * '-' and '_', total at most 253 characters in presentation form; no compression pointers in
 * the question; anything else is FORMERR.
 *
 * Pure functions on (pointer, length); reentrant; the caller owns every buffer.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fakeip.h"

#define DNS_HEADER_SIZE 12
#define DNS_MAX_MSG 65535
#define DNS_MAX_NAME 253 /* presentation form, no trailing dot */
#define DNS_TTL 60
#define DNS_EDNS_SIZE 1232 /* the UDP payload size we advertise (DNS flag day 2020) */
#define DNS_ANSWER_MAX 512 /* an answer never exceeds this: give out at least this much room */

enum {
	DNS_RCODE_NOERROR = 0,
	DNS_RCODE_FORMERR = 1,
	DNS_RCODE_SERVFAIL = 2,
	DNS_RCODE_NXDOMAIN = 3,
	DNS_RCODE_NOTIMP = 4,
	DNS_RCODE_REFUSED = 5,
	DNS_RCODE_BADVERS = 16, /* extended (EDNS) rcode */
};

enum {
	DNS_TYPE_A = 1,
	DNS_TYPE_CNAME = 5,
	DNS_TYPE_AAAA = 28,
	DNS_TYPE_OPT = 41,
	DNS_TYPE_SVCB = 64,
	DNS_TYPE_HTTPS = 65,
	DNS_TYPE_IXFR = 251,
	DNS_TYPE_AXFR = 252,
	DNS_TYPE_ANY = 255,
};

#define DNS_CLASS_IN 1

/* A parsed query. */
struct dns_query {
	uint16_t id;
	uint16_t qtype;
	uint16_t qclass;
	bool rd;		     /* recursion desired (echoed) */
	bool cd;		     /* checking disabled (echoed) */
	bool edns;		     /* the query carried an OPT record */
	bool dnssec_ok;		     /* its DO bit */
	uint8_t edns_version;	     /* its version (we speak 0) */
	uint16_t edns_size;	     /* its UDP payload size */
	size_t question_end;	     /* offset just past the question in the query */
	char name[DNS_MAX_NAME + 1]; /* lower-case, no trailing dot, presentation form; "" = root */
};

/* Parse a query message p[0, n). Returns 0; -EBADMSG when malformed but the header is readable
 * (answer FORMERR with dns_build_error); -EOPNOTSUPP for an opcode other than QUERY (answer
 * NOTIMP); -EPROTO when the message cannot be answered at all (shorter than a header, or a
 * response rather than a query): drop it. *ret is filled only on success. */
int dns_parse_query(const uint8_t *p, size_t n, struct dns_query *ret);

/* What an answer said, for the event log. */
struct dns_answer_info {
	int rcode;	  /* DNS_RCODE_* (BADVERS included) */
	uint32_t addr;	  /* host byte order, 0 when no A record was given */
	uint16_t ancount; /* answer records */
};

/* Build the answer to the query q[0, qn) that dns_parse_query() parsed into *parsed, given the
 * policy verdict for its name; for an allowed A/ANY query the address comes from map
 * (fakeip_assign; a failure there answers SERVFAIL). Writes at most cap bytes to out (cap of
 * DNS_ANSWER_MAX is always enough). Returns the answer's length or -ENOBUFS (cap too small),
 * -EINVAL (bad arguments). ret_info may be NULL. */
ssize_t dns_build_answer(const uint8_t *q, size_t qn, const struct dns_query *parsed, bool allowed,
			 struct fakeip *map, uint8_t *out, size_t cap,
			 struct dns_answer_info *ret_info);

/* A header-only answer with rcode (0..15) to the query q[0, qn) whose header is readable: ID,
 * opcode and RD copied, QR and RA set, every count zero. Returns DNS_HEADER_SIZE, -EPROTO when
 * qn < DNS_HEADER_SIZE, -ENOBUFS, or -EINVAL. */
ssize_t dns_build_error(const uint8_t *q, size_t qn, int rcode, uint8_t *out, size_t cap);

/* Policy callback for dns_respond(): true when q->name may be resolved. */
typedef bool (*dns_decide_fn)(void *userdata, const struct dns_query *q);

/* The whole server step for one query: parse, decide (only for a well-formed query), build.
 * Returns the answer's length, 0 when the query must be dropped without an answer, or -ENOBUFS
 * / -EINVAL. ret_info (may be NULL) is always filled; ret_query (may be NULL) is filled when
 * the query parsed (*ret_parsed tells, may be NULL). */
ssize_t dns_respond(const uint8_t *q, size_t qn, dns_decide_fn decide, void *userdata,
		    struct fakeip *map, uint8_t *out, size_t cap, struct dns_answer_info *ret_info,
		    struct dns_query *ret_query, bool *ret_parsed);

/* RFC 1035 TCP framing: look for one whole message at the front of a stream buffer p[0, n).
 * Returns the number of bytes the frame takes (2 + message length) and sets *ret_msg, *ret_len;
 * 0 when more bytes are needed; -EBADMSG for a zero-length frame (close the stream). */
ssize_t dns_tcp_frame(const uint8_t *p, size_t n, const uint8_t **ret_msg, size_t *ret_len);
/* Write the 2-byte length prefix for a message of len bytes (<= DNS_MAX_MSG) to out[0..1]. */
void dns_tcp_prefix(size_t len, uint8_t out[2]);
