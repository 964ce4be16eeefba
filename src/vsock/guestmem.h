/* guestmem.h - the guest memory map of a vhost-user device and its one range-checked accessor.
 *
 * QEMU describes guest RAM as up to GUESTMEM_MAX_REGIONS regions, each known by its guest-physical
 * address (used by virtqueue descriptors), by QEMU's own user address (used by SET_VRING_ADDR) and
 * by where we mapped it. Every access to guest memory goes through guestmem_gpa()/guestmem_uva()
 * (one contiguous range inside one region) or guestmem_gpa_iov() (a range that may continue
 * into an adjacent region). They check for address overflow and region bounds and never return a
 * pointer to a byte outside a mapping. Not thread-safe; the owner's thread only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define GUESTMEM_MAX_REGIONS 8

struct guestmem_region {
	uint64_t gpa;  /* guest-physical start */
	uint64_t uva;  /* QEMU's user address of the start */
	uint64_t size; /* bytes, > 0 */
	uint8_t *host; /* our pointer to the start */
	void *map;     /* mmap'ed area to munmap on clear (NULL: not ours to unmap) */
	size_t map_len;
};

struct guestmem {
	struct guestmem_region r[GUESTMEM_MAX_REGIONS];
	unsigned n;
};

/* An empty map. */
void guestmem_init(struct guestmem *gm);
/* Unmap every region that guestmem_add_fd() mapped and forget all regions. */
void guestmem_clear(struct guestmem *gm);

/* Add a region whose bytes already live at host (unit tests, fuzzing; not unmapped on clear).
 * 0, -EINVAL (size 0, gpa/uva/host range wraps), -E2BIG (table full). */
int guestmem_add(struct guestmem *gm, uint64_t gpa, uint64_t uva, uint64_t size, void *host);
/* Map size bytes of fd starting at mmap_offset (shared, read-write) and add the region. The fd is
 * not consumed (the mapping keeps the memory alive; the caller closes it). Checks the range
 * against the file size so a short file cannot SIGBUS us later. 0 or -errno. */
int guestmem_add_fd(struct guestmem *gm, uint64_t gpa, uint64_t uva, uint64_t size, int fd,
		    uint64_t mmap_offset);

/* Translate [gpa, gpa+len) that lies inside one region. len may be 0 (gpa must still be inside a
 * region). Returns 0 and the host pointer, or -EFAULT (outside, straddling or wrapping). */
int guestmem_gpa(const struct guestmem *gm, uint64_t gpa, uint64_t len, void **ret);
/* Same for QEMU user addresses (the vring addresses of SET_VRING_ADDR). */
int guestmem_uva(const struct guestmem *gm, uint64_t uva, uint64_t len, void **ret);
/* Translate [gpa, gpa+len) into at most max iovecs, following the range across regions that are
 * adjacent in guest-physical space. Appends to iov[*n..]; on success *n is the new count.
 * 0, -EFAULT (a byte is not backed or the range wraps) or -ENOBUFS (more than max segments);
 * *n is unchanged on error. len 0 adds nothing. */
int guestmem_gpa_iov(const struct guestmem *gm, uint64_t gpa, uint64_t len, struct iovec *iov,
		     size_t max, size_t *n);
