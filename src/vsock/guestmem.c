/* guestmem.c - guest memory regions and the range-checked translation of guest addresses.
 *
 * Trust boundary: every address translated here comes from the guest (descriptor addresses and
 * lengths) or from QEMU (region table, ring addresses). A translation succeeds only when the whole
 * range [addr, addr+len) is backed by mapped regions, computed without overflow. Runs on the
 * capsem-vm event loop thread (or a test); no locking.
 */
#include "guestmem.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void guestmem_init(struct guestmem *gm)
{
	memset(gm, 0, sizeof(*gm));
}

void guestmem_clear(struct guestmem *gm)
{
	for (unsigned i = 0; i < gm->n; i++)
		if (gm->r[i].map)
			munmap(gm->r[i].map, gm->r[i].map_len);
	guestmem_init(gm);
}

static int region_check(uint64_t gpa, uint64_t uva, uint64_t size)
{
	if (size == 0)
		return -EINVAL;
	if (gpa + size - 1 < gpa || uva + size - 1 < uva)
		return -EINVAL;
	if (size > SIZE_MAX)
		return -EINVAL;
	return 0;
}

int guestmem_add(struct guestmem *gm, uint64_t gpa, uint64_t uva, uint64_t size, void *host)
{
	int r = region_check(gpa, uva, size);
	if (r < 0)
		return r;
	if ((uintptr_t)host + (size - 1) < (uintptr_t)host)
		return -EINVAL;
	if (gm->n >= GUESTMEM_MAX_REGIONS)
		return -E2BIG;
	gm->r[gm->n++] = (struct guestmem_region){
		.gpa = gpa,
		.uva = uva,
		.size = size,
		.host = host,
	};
	return 0;
}

int guestmem_add_fd(struct guestmem *gm, uint64_t gpa, uint64_t uva, uint64_t size, int fd,
		    uint64_t mmap_offset)
{
	struct stat st;
	int r = region_check(gpa, uva, size);
	if (r < 0)
		return r;
	if (gm->n >= GUESTMEM_MAX_REGIONS)
		return -E2BIG;
	uint64_t total = mmap_offset + size;
	if (total < size || total > SIZE_MAX)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	/* a memfd or file must really hold the bytes; other kinds (hugetlbfs...) are not checked */
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < total)
		return -EINVAL;
	void *map = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			 fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	gm->r[gm->n++] = (struct guestmem_region){
		.gpa = gpa,
		.uva = uva,
		.size = size,
		.host = (uint8_t *)map + mmap_offset,
		.map = map,
		.map_len = (size_t)total,
	};
	return 0;
}

/* The region holding byte addr (by gpa when by_uva == 0), or NULL. */
static const struct guestmem_region *region_find(const struct guestmem *gm, uint64_t addr,
						 int by_uva)
{
	for (unsigned i = 0; i < gm->n; i++) {
		const struct guestmem_region *g = &gm->r[i];
		uint64_t start = by_uva ? g->uva : g->gpa;
		if (addr >= start && addr - start < g->size)
			return g;
	}
	return NULL;
}

static int translate(const struct guestmem *gm, uint64_t addr, uint64_t len, int by_uva, void **ret)
{
	const struct guestmem_region *g = region_find(gm, addr, by_uva);
	if (!g)
		return -EFAULT;
	uint64_t off = addr - (by_uva ? g->uva : g->gpa);
	/* off < size, so size - off cannot underflow */
	if (len > g->size - off)
		return -EFAULT;
	*ret = g->host + off;
	return 0;
}

int guestmem_gpa(const struct guestmem *gm, uint64_t gpa, uint64_t len, void **ret)
{
	return translate(gm, gpa, len, 0, ret);
}

int guestmem_uva(const struct guestmem *gm, uint64_t uva, uint64_t len, void **ret)
{
	return translate(gm, uva, len, 1, ret);
}

int guestmem_gpa_iov(const struct guestmem *gm, uint64_t gpa, uint64_t len, struct iovec *iov,
		     size_t max, size_t *n)
{
	size_t k = *n;
	if (len == 0)
		return 0;
	if (gpa + len - 1 < gpa)
		return -EFAULT;
	while (len > 0) {
		const struct guestmem_region *g = region_find(gm, gpa, 0);
		if (!g)
			return -EFAULT;
		if (k >= max)
			return -ENOBUFS;
		uint64_t off = gpa - g->gpa;
		uint64_t chunk = g->size - off;
		if (chunk > len)
			chunk = len;
		iov[k].iov_base = g->host + off;
		iov[k].iov_len = (size_t)chunk;
		k++;
		gpa += chunk; /* cannot wrap: checked above */
		len -= chunk;
	}
	*n = k;
	return 0;
}
