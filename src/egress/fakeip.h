/* fakeip.h - the per-VM name <-> fake address map behind Capsem's DNS (DESIGN.md §6).
 *
 * The DNS server answers an A query for an allowed name with an address from 198.18.0.0/15
 * (RFC 2544 benchmarking space, never routed) that this map assigns to the name; the proxy maps
 * the destination address of each guest connection back to the name, so policy is by name.
 *
 * Guarantees: the same name gets the same address for as long as it stays in the map (names are
 * case-insensitive and stored lower-case); an address maps to at most one name. Addresses whose
 * last octet is 0 or 255 are never given out (some tools treat them as network or broadcast
 * addresses), which leaves 130048 usable addresses, twice the name cap.
 *
 * Capacity: at most FAKEIP_MAX_NAMES names (fewer if asked). When the map is full, assigning a
 * new name evicts the least recently assigned one (a name's recency is refreshed every time it
 * is assigned again, i.e. every time the guest resolves it). An evicted name's address goes to
 * the back of a free queue and is reused only after every never-used address and every address
 * freed before it, so a stale guest cache entry (DNS TTL 60 s) practically never points at a
 * newly assigned name. Both names involved in such a reuse were allowed by policy when they were
 * assigned, and the proxy decides every connection again by name, so reuse cannot widen policy.
 *
 * Lookups both ways are O(1) on average (chained hash tables). Not thread-safe: one map per VM,
 * used on capsem-vm's loop thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define FAKEIP_NET 0xc6120000u	/* 198.18.0.0 (host order) */
#define FAKEIP_MASK 0xfffe0000u /* /15 */
#define FAKEIP_MAX_NAMES 65536u
#define FAKEIP_NAME_MAX 253 /* presentation form, no trailing dot */

struct fakeip;

/* A map holding up to FAKEIP_MAX_NAMES names; NULL on allocation failure. */
struct fakeip *fakeip_new(void);
/* The same with a smaller cap (clamped to 1..FAKEIP_MAX_NAMES): for tests. */
struct fakeip *fakeip_new_with_cap(size_t max_names);
/* Free the map and every name. Accepts NULL. */
void fakeip_free(struct fakeip *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct fakeip *, fakeip_free)
#define _cleanup_fakeip_free_ _cleanup_(fakeip_freep)

/* The address (host byte order) for name, assigning one if the name is new (possibly evicting
 * the least recently assigned name, see above). name is a DNS name in any case, with or without
 * one trailing dot, made of labels of 1..63 letters, digits, '-' and '_', at most 253 bytes.
 * Returns 0, -EINVAL for an invalid name (*ret_addr untouched) or -ENOMEM. */
int fakeip_assign(struct fakeip *m, const char *name, uint32_t *ret_addr);
/* The name (lower-case, no trailing dot) that addr (host byte order) was assigned to, or NULL.
 * The string is owned by the map and valid until the name is evicted, i.e. until the next
 * fakeip_assign(): copy it to keep it. */
const char *fakeip_lookup(const struct fakeip *m, uint32_t addr);
/* Whether addr (host byte order) is inside 198.18.0.0/15. */
bool fakeip_in_range(uint32_t addr);
/* Number of names in the map. */
size_t fakeip_count(const struct fakeip *m);
