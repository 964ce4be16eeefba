/* fakeip.c - the per-VM name <-> fake address map (see fakeip.h for the guarantees).
 *
 * Layout: an array of entries (grown by doubling up to the cap, never moved once used: entries
 * are referred to by index), two chained hash tables over it (by name, by address), and an LRU
 * list of the entries in the order they were last assigned. Names are hashed with SipHash-2-4
 * under a per-map random key: the guest chooses the names, so it must not be able to make
 * every name land in one chain. Addresses are chosen by us and hash to their offset in the
 * range.
 *
 * Address choice: a cursor walks the range round-robin (198.18.0.1, .2, ..., 198.19.255.254,
 * then wraps), skipping the .0 and .255 addresses and any address in use. The cap is at most
 * half the usable addresses, so a free one is always found, and an address freed by an eviction
 * is handed out again only after the cursor has gone once around the whole range. Each in-use
 * address is skipped at most once per lap, so the walk is O(1) amortised.
 *
 * Trust: names come from guest DNS queries (already validated by dns.c, validated again here);
 * addresses from guest connection preambles. Thread: capsem-vm's loop thread only.
 */
#include "fakeip.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "siphash.h"

#define NONE UINT32_MAX
#define RANGE_SIZE (~FAKEIP_MASK + 1u) /* 131072 */
#define MIN_BUCKETS 64u

struct entry {
	char *name;	    /* NULL: slot unused */
	uint32_t off;	    /* address - FAKEIP_NET */
	uint64_t hash;	    /* of name */
	uint32_t name_next; /* chain in by_name */
	uint32_t off_next;  /* chain in by_off */
	uint32_t newer, older;
};

struct fakeip {
	struct entry *e;
	uint32_t n_alloc, n_used, cap;
	uint32_t *by_name, *by_off; /* bucket heads */
	uint32_t n_buckets;	    /* power of two, same for both tables */
	uint32_t newest, oldest;    /* LRU ends */
	uint32_t cursor;	    /* next offset to try */
	uint64_t key[2];	    /* SipHash key */
};

static bool off_usable(uint32_t off)
{
	uint32_t last = off & 0xff;
	return last != 0 && last != 0xff;
}

struct fakeip *fakeip_new_with_cap(size_t max_names)
{
	struct fakeip *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->cap = (uint32_t)MIN(MAX(max_names, (size_t)1), (size_t)FAKEIP_MAX_NAMES);
	m->newest = m->oldest = NONE;
	m->cursor = 1;
	uint64_t key[2];
	if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
		/* no entropy yet (early boot): a weaker but still per-map key */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)m;
		key[1] = (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
	}
	m->key[0] = key[0];
	m->key[1] = key[1];
	return m;
}

struct fakeip *fakeip_new(void)
{
	return fakeip_new_with_cap(FAKEIP_MAX_NAMES);
}

void fakeip_free(struct fakeip *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->n_alloc; i++)
		free(m->e[i].name);
	free(m->e);
	free(m->by_name);
	free(m->by_off);
	free(m);
}

bool fakeip_in_range(uint32_t addr)
{
	return (addr & FAKEIP_MASK) == FAKEIP_NET;
}

size_t fakeip_count(const struct fakeip *m)
{
	return m ? m->n_used : 0;
}

/* Lower-case and validate name into out (FAKEIP_NAME_MAX + 1 bytes). Length or -EINVAL. */
static int normalize(const char *name, char *out)
{
	size_t n = strnlen(name, FAKEIP_NAME_MAX + 2);
	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > FAKEIP_NAME_MAX)
		return -EINVAL;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if (ch == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
			   ch == '_') {
			if (++label > 63)
				return -EINVAL;
		} else {
			return -EINVAL;
		}
		out[i] = ch;
	}
	if (label == 0)
		return -EINVAL; /* "a.b.." */
	out[n] = 0;
	return (int)n;
}

static uint32_t name_find(const struct fakeip *m, const char *name, uint64_t h)
{
	if (!m->n_buckets)
		return NONE;
	for (uint32_t i = m->by_name[h & (m->n_buckets - 1)]; i != NONE; i = m->e[i].name_next)
		if (m->e[i].hash == h && streq(m->e[i].name, name))
			return i;
	return NONE;
}

static uint32_t off_find(const struct fakeip *m, uint32_t off)
{
	if (!m->n_buckets)
		return NONE;
	for (uint32_t i = m->by_off[off & (m->n_buckets - 1)]; i != NONE; i = m->e[i].off_next)
		if (m->e[i].off == off)
			return i;
	return NONE;
}

static void link_tables(struct fakeip *m, uint32_t i)
{
	uint32_t bn = (uint32_t)(m->e[i].hash & (m->n_buckets - 1)),
		 bo = m->e[i].off & (m->n_buckets - 1);
	m->e[i].name_next = m->by_name[bn];
	m->by_name[bn] = i;
	m->e[i].off_next = m->by_off[bo];
	m->by_off[bo] = i;
}

static void unlink_tables(struct fakeip *m, uint32_t i)
{
	uint32_t *pp = &m->by_name[m->e[i].hash & (m->n_buckets - 1)];
	while (*pp != i)
		pp = &m->e[*pp].name_next;
	*pp = m->e[i].name_next;
	pp = &m->by_off[m->e[i].off & (m->n_buckets - 1)];
	while (*pp != i)
		pp = &m->e[*pp].off_next;
	*pp = m->e[i].off_next;
}

static void lru_unlink(struct fakeip *m, uint32_t i)
{
	struct entry *x = &m->e[i];
	if (x->newer != NONE)
		m->e[x->newer].older = x->older;
	else
		m->newest = x->older;
	if (x->older != NONE)
		m->e[x->older].newer = x->newer;
	else
		m->oldest = x->newer;
}

static void lru_push(struct fakeip *m, uint32_t i)
{
	m->e[i].newer = NONE;
	m->e[i].older = m->newest;
	if (m->newest != NONE)
		m->e[m->newest].newer = i;
	m->newest = i;
	if (m->oldest == NONE)
		m->oldest = i;
}

/* Make room for one more used entry: more slots and, at load > 1, twice the buckets. */
static int grow(struct fakeip *m)
{
	if (m->n_used == m->n_alloc) {
		uint32_t na = m->n_alloc ? MIN(m->n_alloc * 2, m->cap) : MIN(MIN_BUCKETS, m->cap);
		struct entry *e = realloc(m->e, (size_t)na * sizeof(*e));
		if (!e)
			return -ENOMEM;
		memset(e + m->n_alloc, 0, (size_t)(na - m->n_alloc) * sizeof(*e));
		m->e = e;
		m->n_alloc = na;
	}
	if (m->n_used + 1 > m->n_buckets) {
		uint32_t nb = m->n_buckets ? m->n_buckets * 2 : MIN_BUCKETS;
		uint32_t *bn = malloc((size_t)nb * sizeof(*bn)),
			 *bo = malloc((size_t)nb * sizeof(*bo));
		if (!bn || !bo) {
			free(bn);
			free(bo);
			return -ENOMEM;
		}
		memset(bn, 0xff, (size_t)nb * sizeof(*bn));
		memset(bo, 0xff, (size_t)nb * sizeof(*bo));
		free(m->by_name);
		free(m->by_off);
		m->by_name = bn;
		m->by_off = bo;
		m->n_buckets = nb;
		for (uint32_t i = 0; i < m->n_alloc; i++)
			if (m->e[i].name)
				link_tables(m, i);
	}
	return 0;
}

static uint32_t next_free_off(struct fakeip *m)
{
	for (;;) {
		uint32_t off = m->cursor;
		m->cursor = (m->cursor + 1) % RANGE_SIZE;
		if (off_usable(off) && off_find(m, off) == NONE)
			return off;
	}
}

int fakeip_assign(struct fakeip *m, const char *name, uint32_t *ret_addr)
{
	char norm[FAKEIP_NAME_MAX + 1];
	if (!m || !name || !ret_addr)
		return -EINVAL;
	int n = normalize(name, norm);
	if (n < 0)
		return n;
	uint64_t h = siphash24(m->key, norm, (size_t)n);
	uint32_t i = name_find(m, norm, h);
	if (i != NONE) {
		lru_unlink(m, i);
		lru_push(m, i);
		*ret_addr = FAKEIP_NET + m->e[i].off;
		return 0;
	}

	char *copy = strdup(norm);
	if (!copy)
		return -ENOMEM;
	if (m->n_used == m->cap) {
		/* full: the least recently assigned name gives up its slot (and its address) */
		i = m->oldest;
		lru_unlink(m, i);
		unlink_tables(m, i);
		free(m->e[i].name);
		m->e[i].name = NULL;
		m->n_used--;
	} else {
		int r = grow(m);
		if (r < 0) {
			free(copy);
			return r;
		}
		i = m->n_used; /* slots below n_used are all in use when never full before */
		while (m->e[i].name)
			i = (i + 1) % m->n_alloc;
	}
	m->e[i].name = copy;
	m->e[i].hash = h;
	m->e[i].off = next_free_off(m);
	link_tables(m, i);
	lru_push(m, i);
	m->n_used++;
	*ret_addr = FAKEIP_NET + m->e[i].off;
	return 0;
}

const char *fakeip_lookup(const struct fakeip *m, uint32_t addr)
{
	if (!m || !fakeip_in_range(addr))
		return NULL;
	uint32_t i = off_find(m, addr - FAKEIP_NET);
	return i == NONE ? NULL : m->e[i].name;
}
