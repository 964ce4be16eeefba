/* virtq.c - split virtqueue, device side, over hostile guest memory.
 *
 * Trust boundary: the descriptor table and the avail ring are written by the guest while we read
 * them. Each shared field is loaded exactly once (atomic loads into locals), every index is
 * checked against the ring size, a chain walk stops after num descriptors, and every buffer is
 * translated through guestmem (no pointer into guest memory is formed any other way). The used
 * ring is ours to write; its index is kept in vq->used_idx, never read back from the guest after
 * setup. Runs on the capsem-vm event loop thread (or a test/fuzzer); no locking.
 */
#include "virtq.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#include "log.h"

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
};

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

void vq_init(struct vq *vq)
{
	memset(vq, 0, sizeof(*vq));
}

void vq_unmap(struct vq *vq)
{
	vq->desc = vq->avail = vq->used = NULL;
}

static int map_one(const struct guestmem *gm, uint64_t uva, uint64_t len, uintptr_t align,
		   void **ret)
{
	void *p;
	int r = guestmem_uva(gm, uva, len, &p);
	if (r < 0)
		return r;
	if ((uintptr_t)p % align != 0)
		return -EINVAL;
	*ret = p;
	return 0;
}

int vq_map(struct vq *vq, const struct guestmem *gm)
{
	void *d, *a, *u;
	int r;

	vq_unmap(vq);
	if (vq->num == 0 || !vq->addr_set)
		return -EINVAL;
	uint64_t num = vq->num;
	r = map_one(gm, vq->desc_uva, 16 * num, 16, &d);
	if (r < 0)
		return r;
	/* flags, idx, ring[num], used_event (present even though EVENT_IDX is off) */
	r = map_one(gm, vq->avail_uva, 6 + 2 * num, 2, &a);
	if (r < 0)
		return r;
	r = map_one(gm, vq->used_uva, 6 + 8 * num, 4, &u);
	if (r < 0)
		return r;
	vq->desc = d;
	vq->avail = a;
	vq->used = u;
	if (vq->need_used_idx) {
		vq->used_idx = le16toh(LOAD(&((struct vring_used *)u)->idx));
		vq->need_used_idx = false;
	}
	return 0;
}

static int vq_break(struct vq *vq, const char *why)
{
	log_debug("virtq: queue broken by the guest: %s", why);
	vq->broken = true;
	return -EIO;
}

int vq_pop(struct vq *vq, const struct guestmem *gm, struct vq_chain *ch)
{
	if (!vq_ready(vq))
		return 0;
	struct vring_avail *avail = vq->avail;
	const struct vring_desc *desc = vq->desc;
	const uint16_t num = vq->num;

	/* acquire: the ring entry and descriptors are read after the index that published them */
	uint16_t avail_idx = le16toh(__atomic_load_n(&avail->idx, __ATOMIC_ACQUIRE));
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending == 0)
		return 0;
	if (pending > num)
		return vq_break(vq, "avail index moved by more than the ring size");

	uint16_t head = le16toh(LOAD(&avail->ring[vq->last_avail & (num - 1)]));
	if (head >= num)
		return vq_break(vq, "head index out of range");

	size_t n = 0, n_out = 0;
	size_t out_len = 0, in_len = 0;
	uint16_t i = head;
	for (unsigned count = 0;; count++) {
		if (count >= num)
			return vq_break(vq, "descriptor chain loops or is longer than the ring");
		const struct vring_desc *d = &desc[i];
		uint64_t addr = le64toh(LOAD(&d->addr));
		uint32_t len = le32toh(LOAD(&d->len));
		uint16_t flags = le16toh(LOAD(&d->flags));
		uint16_t next = le16toh(LOAD(&d->next));

		if (flags & VRING_DESC_F_INDIRECT)
			return vq_break(vq, "indirect descriptor (not negotiated)");
		if (!(flags & VRING_DESC_F_WRITE) && n > n_out)
			return vq_break(vq, "readable descriptor after a writable one");
		int r = guestmem_gpa_iov(gm, addr, len, ch->iov, VQ_MAX_IOV, &n);
		if (r == -ENOBUFS)
			return vq_break(vq, "chain maps to too many segments");
		if (r < 0)
			return vq_break(vq, "descriptor outside guest memory");
		if (flags & VRING_DESC_F_WRITE) {
			in_len += len;
		} else {
			out_len += len;
			n_out = n;
		}
		if (!(flags & VRING_DESC_F_NEXT))
			break;
		if (next >= num)
			return vq_break(vq, "next index out of range");
		i = next;
	}
	ch->head = head;
	ch->n_out = n_out;
	ch->n_in = n - n_out;
	ch->out_len = out_len;
	ch->in_len = in_len;
	vq->last_avail++;
	return 1;
}

void vq_unpop(struct vq *vq)
{
	vq->last_avail--;
}

void vq_push(struct vq *vq, uint16_t head, uint32_t len)
{
	struct vring_used *used = vq->used;
	if (!used || vq->num == 0)
		return;
	struct vring_used_elem *e = &used->ring[vq->used_idx & (vq->num - 1)];
	STORE(&e->id, htole32(head));
	STORE(&e->len, htole32(len));
	vq->used_idx++;
	/* release: the element is visible before the index that publishes it */
	__atomic_store_n(&used->idx, htole16(vq->used_idx), __ATOMIC_RELEASE);
	vq->pushed = true;
}

bool vq_take_signal(struct vq *vq)
{
	if (!vq->pushed || !vq->avail)
		return false;
	vq->pushed = false;
	/* the used index store must be visible before we look at the driver's flags */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint16_t flags = le16toh(LOAD(&((struct vring_avail *)vq->avail)->flags));
	return !(flags & VRING_AVAIL_F_NO_INTERRUPT);
}
