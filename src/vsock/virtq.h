/* virtq.h - device side of a split virtqueue living in hostile guest memory.
 *
 * The rings are located once (vq_map) through guestmem; vq_pop() reads the next available chain
 * into a bounded iovec list and vq_push() returns it to the guest. Indirect descriptors and
 * EVENT_IDX are never negotiated, so an INDIRECT flag is an error. Anything the guest does that
 * no correct driver does (a loop, a chain longer than the ring, an out-of-range index, an avail
 * index that moves by more than the ring size, a buffer outside RAM) marks the queue broken: it
 * is not processed again until it is reconfigured. Not thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "guestmem.h"

#define VQ_MAX_SIZE 32768u
/* Segments one chain may map to (descriptors, plus splits at region boundaries). */
#define VQ_MAX_IOV 128u

#define VRING_DESC_F_NEXT 1u
#define VRING_DESC_F_WRITE 2u
#define VRING_DESC_F_INDIRECT 4u
#define VRING_AVAIL_F_NO_INTERRUPT 1u

struct vq {
	/* configuration (from vhost-user) */
	uint16_t num;  /* ring size, a power of two; 0 = not set */
	bool addr_set; /* desc/avail/used user addresses are valid */
	uint64_t desc_uva, avail_uva, used_uva;
	/* state */
	uint16_t last_avail; /* next avail ring slot we will read */
	uint16_t used_idx;   /* our copy of used->idx (the guest cannot move it under us) */
	bool need_used_idx;  /* read used->idx at the next successful vq_map */
	bool broken;
	bool pushed; /* used entries were added since the last vq_take_signal */
	/* where the rings are in our address space (NULL until mapped) */
	void *desc;
	void *avail;
	void *used;
};

/* One popped chain: readable segments first (iov[0..n_out)), then writable (iov[n_out..+n_in)). */
struct vq_chain {
	uint16_t head;
	size_t n_out, n_in;
	size_t out_len, in_len; /* total bytes of each kind */
	struct iovec iov[VQ_MAX_IOV];
};

/* Reset to "nothing configured". */
void vq_init(struct vq *vq);
/* Locate the rings (whose user addresses and size were set) in gm. 0, or -EFAULT/-EINVAL when a
 * ring is not fully inside one region or misaligned (the queue is unmapped then, not broken). */
int vq_map(struct vq *vq, const struct guestmem *gm);
/* Forget the ring pointers (before the memory table goes away). */
void vq_unmap(struct vq *vq);
static inline bool vq_ready(const struct vq *vq)
{
	return vq->desc && !vq->broken;
}

/* Pop the next available chain. 1 and *ch filled, 0 when the ring is empty (or not ready),
 * -EIO when the guest broke the queue (vq->broken is set, why is logged at debug). Segments
 * of length 0 are skipped. The chain stays valid until the memory table changes. */
int vq_pop(struct vq *vq, const struct guestmem *gm, struct vq_chain *ch);
/* Give back the last popped chain unused (it will be popped again). */
void vq_unpop(struct vq *vq);
/* Return chain head to the guest with len bytes written. */
void vq_push(struct vq *vq, uint16_t head, uint32_t len);
/* Whether the guest should be interrupted now: something was pushed since the last call and the
 * driver did not set VRING_AVAIL_F_NO_INTERRUPT. Clears the pushed state. */
bool vq_take_signal(struct vq *vq);
