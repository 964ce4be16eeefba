/* vhost_user.c - vhost-user back-end protocol: message validation, device state, framing.
 *
 * Trust boundary: the peer is QEMU, which we start, but a guest that escaped into QEMU would
 * speak here, so every message is checked before use: framing is capped at
 * VHOST_USER_MAX_PAYLOAD, payload sizes and fd counts must match the request, indices are checked
 * against the two queues, memory regions are checked for overflow and against the size of their
 * file, and ring addresses are only used after translation through guestmem. Unknown requests are
 * answered with an error when a reply is asked for, never trusted. Every fd received is kept or
 * closed. Runs on the capsem-vm event loop thread (or a test/fuzzer).
 */
#include "vhost_user.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

/* ---- decoding ---- */

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

int vhost_user_decode(const uint8_t *p, size_t len, size_t nfds, struct vhost_user_msg *ret)
{
	struct vhost_user_msg m;
	size_t want_fds = 0;

	if (len < VHOST_USER_HDR_SIZE)
		return -EBADMSG;
	memset(&m, 0, sizeof(m));
	m.request = rd32(p);
	m.flags = rd32(p + 4);
	m.size = rd32(p + 8);
	if ((m.flags & 3u) != VHOST_USER_VERSION || (m.flags & VHOST_USER_FLAG_REPLY))
		return -EBADMSG;
	if (m.size > VHOST_USER_MAX_PAYLOAD || len - VHOST_USER_HDR_SIZE != m.size)
		return -EBADMSG;
	const uint8_t *pl = p + VHOST_USER_HDR_SIZE;
	size_t n = m.size;

	switch (m.request) {
	case VHOST_USER_GET_FEATURES:
	case VHOST_USER_GET_PROTOCOL_FEATURES:
	case VHOST_USER_GET_QUEUE_NUM:
	case VHOST_USER_SET_OWNER:
	case VHOST_USER_RESET_OWNER:
	case VHOST_USER_RESET_DEVICE:
		break;
	case VHOST_USER_SET_FEATURES:
	case VHOST_USER_SET_PROTOCOL_FEATURES:
		if (n < 8)
			return -EBADMSG;
		m.u.u64 = rd64(pl);
		break;
	case VHOST_USER_SET_VRING_KICK:
	case VHOST_USER_SET_VRING_CALL:
	case VHOST_USER_SET_VRING_ERR:
		if (n < 8)
			return -EBADMSG;
		m.u.u64 = rd64(pl);
		want_fds = (m.u.u64 & VHOST_USER_VRING_NOFD) ? 0 : 1;
		break;
	case VHOST_USER_SET_VRING_NUM:
	case VHOST_USER_SET_VRING_BASE:
	case VHOST_USER_GET_VRING_BASE:
	case VHOST_USER_SET_VRING_ENABLE:
		if (n < 8)
			return -EBADMSG;
		m.u.state.index = rd32(pl);
		m.u.state.num = rd32(pl + 4);
		break;
	case VHOST_USER_SET_VRING_ADDR:
		if (n < 40)
			return -EBADMSG;
		m.u.addr.index = rd32(pl);
		m.u.addr.flags = rd32(pl + 4);
		m.u.addr.desc = rd64(pl + 8);
		m.u.addr.used = rd64(pl + 16);
		m.u.addr.avail = rd64(pl + 24);
		m.u.addr.log = rd64(pl + 32);
		break;
	case VHOST_USER_SET_MEM_TABLE:
		if (n < 8)
			return -EBADMSG;
		m.u.mem.nregions = rd32(pl);
		if (m.u.mem.nregions == 0 || m.u.mem.nregions > GUESTMEM_MAX_REGIONS)
			return -EBADMSG;
		if (n < 8 + 32 * (size_t)m.u.mem.nregions)
			return -EBADMSG;
		for (uint32_t i = 0; i < m.u.mem.nregions; i++) {
			const uint8_t *r = pl + 8 + 32 * (size_t)i;
			m.u.mem.r[i] = (struct vhost_user_region){
				.gpa = rd64(r),
				.size = rd64(r + 8),
				.uva = rd64(r + 16),
				.mmap_offset = rd64(r + 24),
			};
		}
		want_fds = m.u.mem.nregions;
		break;
	case VHOST_USER_GET_CONFIG:
	case VHOST_USER_SET_CONFIG:
		if (n < 12)
			return -EBADMSG;
		m.u.config.offset = rd32(pl);
		m.u.config.size = rd32(pl + 4);
		m.u.config.flags = rd32(pl + 8);
		if (m.u.config.size > VHOST_USER_MAX_CONFIG || n - 12 < m.u.config.size)
			return -EBADMSG;
		break;
	default:
		*ret = m;
		return -EOPNOTSUPP;
	}
	if (nfds != want_fds)
		return -EBADMSG;
	*ret = m;
	return 0;
}

/* ---- replies ---- */

static int reply(struct vhost_user_dev *d, const struct vhost_user_msg *m, const void *payload,
		 uint32_t size)
{
	uint8_t hdr[VHOST_USER_HDR_SIZE];
	uint32_t flags = VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY;
	memcpy(hdr, &m->request, 4);
	memcpy(hdr + 4, &flags, 4);
	memcpy(hdr + 8, &size, 4);
	if (buf_room(&d->out) < sizeof(hdr) + size)
		return -ENOBUFS;
	int r = buf_append(&d->out, hdr, sizeof(hdr));
	if (r == 0)
		r = buf_append(&d->out, payload, size);
	return r;
}

static int reply_u64(struct vhost_user_dev *d, const struct vhost_user_msg *m, uint64_t v)
{
	return reply(d, m, &v, sizeof(v));
}

/* ---- device state ---- */

static void close_fd(int *fd)
{
	*fd = safe_close(*fd);
}

static void vring_reset(struct vhost_user_dev *d, unsigned q)
{
	struct vhost_user_vring *vr = &d->vr[q];
	if (vr->kick_fd >= 0 && d->ops.kick_fd)
		d->ops.kick_fd(d->userdata, q, -1);
	close_fd(&vr->kick_fd);
	close_fd(&vr->call_fd);
	close_fd(&vr->err_fd);
	vq_init(&vr->vq);
	vr->started = false;
	vr->enabled = false;
}

void vhost_user_dev_init(struct vhost_user_dev *d, uint64_t guest_cid,
			 const struct vhost_user_ops *ops, void *userdata)
{
	memset(d, 0, sizeof(*d));
	d->guest_cid = guest_cid;
	if (ops)
		d->ops = *ops;
	d->userdata = userdata;
	guestmem_init(&d->mem);
	for (unsigned q = 0; q < VHOST_USER_NQUEUES; q++) {
		d->vr[q].kick_fd = d->vr[q].call_fd = d->vr[q].err_fd = -1;
		vq_init(&d->vr[q].vq);
	}
	buf_init(&d->out, 65536);
}

void vhost_user_dev_reset(struct vhost_user_dev *d)
{
	for (unsigned q = 0; q < VHOST_USER_NQUEUES; q++)
		vring_reset(d, q);
	guestmem_clear(&d->mem);
	for (size_t i = 0; i < d->in_nfds; i++)
		safe_close(d->in_fds[i]);
	d->in_nfds = 0;
	d->in_fds_lost = false;
	d->in_len = 0;
	d->features = 0;
	d->protocol_features = 0;
	d->owned = false;
	buf_done(&d->out, 0);
}

bool vhost_user_vring_active(const struct vhost_user_dev *d, unsigned q)
{
	if (q >= VHOST_USER_NQUEUES)
		return false;
	const struct vhost_user_vring *vr = &d->vr[q];
	bool enabled = vr->enabled || !(d->features & VHOST_USER_F_PROTOCOL_FEATURES);
	return vr->started && enabled && vq_ready(&vr->vq);
}

static void eventfd_kick(int fd)
{
	uint64_t one = 1;
	if (fd >= 0)
		(void)!write(fd, &one, sizeof(one));
}

void vhost_user_vring_signal(struct vhost_user_dev *d, unsigned q)
{
	if (q < VHOST_USER_NQUEUES && vq_take_signal(&d->vr[q].vq))
		eventfd_kick(d->vr[q].call_fd);
}

void vhost_user_vring_error(struct vhost_user_dev *d, unsigned q)
{
	if (q < VHOST_USER_NQUEUES)
		eventfd_kick(d->vr[q].err_fd);
}

static void vring_remap(struct vhost_user_dev *d, unsigned q)
{
	struct vq *vq = &d->vr[q].vq;
	if (vq->num == 0 || !vq->addr_set || d->mem.n == 0) {
		vq_unmap(vq);
		return;
	}
	int r = vq_map(vq, &d->mem);
	if (r < 0)
		log_debug_errno(r, "vhost-user: ring %u is not inside guest memory", q);
}

static int set_mem_table(struct vhost_user_dev *d, const struct vhost_user_msg *m, int *fds)
{
	struct guestmem nm;
	guestmem_init(&nm);
	for (uint32_t i = 0; i < m->u.mem.nregions; i++) {
		const struct vhost_user_region *r = &m->u.mem.r[i];
		int k = guestmem_add_fd(&nm, r->gpa, r->uva, r->size, fds[i], r->mmap_offset);
		if (k < 0) {
			guestmem_clear(&nm);
			return log_debug_errno(k, "vhost-user: cannot map memory region %u", i);
		}
	}
	/* the old regions go away: nothing may point into them any more */
	for (unsigned q = 0; q < VHOST_USER_NQUEUES; q++)
		vq_unmap(&d->vr[q].vq);
	guestmem_clear(&d->mem);
	d->mem = nm;
	for (unsigned q = 0; q < VHOST_USER_NQUEUES; q++)
		vring_remap(d, q);
	return 0; /* the fds are closed by the caller: the mappings keep the memory */
}

/* Replace a vring fd slot with the message's fd (or none). We write to call and err fds: a pipe
 * or socket whose reader is gone would raise SIGPIPE, so only other kinds (eventfds) are taken. */
static int set_vring_fd(int *slot, int *fds, const struct vhost_user_msg *m)
{
	struct stat st;
	close_fd(slot);
	if (m->u.u64 & VHOST_USER_VRING_NOFD)
		return 0;
	if (fstat(fds[0], &st) < 0)
		return -errno;
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
		return -EINVAL;
	*slot = TAKE_FD(fds[0]);
	return 0;
}

static int get_config(struct vhost_user_dev *d, const struct vhost_user_msg *m)
{
	uint8_t out[12 + 8];
	uint64_t cid = htole64(d->guest_cid);
	uint32_t off = m->u.config.offset, size = m->u.config.size;
	if (off > sizeof(cid) || size > sizeof(cid) - off || size == 0)
		return reply(d, m, NULL, 0); /* an empty payload tells QEMU it failed */
	memcpy(out, &off, 4);
	memcpy(out + 4, &size, 4);
	memcpy(out + 8, &m->u.config.flags, 4);
	memcpy(out + 12, (uint8_t *)&cid + off, size);
	return reply(d, m, out, 12 + size);
}

/* Act on a decoded message. Returns 0 or -errno (the status acknowledged with REPLY_ACK);
 * *replied is set when the request has its own reply, queued already. */
static int handle(struct vhost_user_dev *d, const struct vhost_user_msg *m, int *fds, bool *replied)
{
	unsigned q = 0;
	struct vhost_user_vring *vr = NULL;
	int r;

	switch (m->request) {
	case VHOST_USER_SET_VRING_NUM:
	case VHOST_USER_SET_VRING_BASE:
	case VHOST_USER_GET_VRING_BASE:
	case VHOST_USER_SET_VRING_ENABLE:
		q = m->u.state.index;
		break;
	case VHOST_USER_SET_VRING_ADDR:
		q = m->u.addr.index;
		break;
	case VHOST_USER_SET_VRING_KICK:
	case VHOST_USER_SET_VRING_CALL:
	case VHOST_USER_SET_VRING_ERR:
		q = (unsigned)(m->u.u64 & VHOST_USER_VRING_IDX_MASK);
		break;
	default: /* not about one queue */
		break;
	}
	if (q >= VHOST_USER_NQUEUES) {
		if (m->request == VHOST_USER_GET_VRING_BASE) {
			*replied = true;
			uint32_t st[2] = { m->u.state.index, 0 };
			(void)reply(d, m, st, sizeof(st));
		}
		return -ERANGE;
	}
	vr = &d->vr[q];

	switch (m->request) {
	case VHOST_USER_GET_FEATURES:
		*replied = true;
		return reply_u64(d, m, VHOST_USER_FEATURES);
	case VHOST_USER_SET_FEATURES:
		if (m->u.u64 & ~VHOST_USER_FEATURES)
			return -EINVAL;
		d->features = m->u.u64;
		return 0;
	case VHOST_USER_GET_PROTOCOL_FEATURES:
		*replied = true;
		return reply_u64(d, m, VHOST_USER_PROTOCOL_FEATURES);
	case VHOST_USER_SET_PROTOCOL_FEATURES:
		if (m->u.u64 & ~VHOST_USER_PROTOCOL_FEATURES)
			return -EINVAL;
		d->protocol_features = m->u.u64;
		return 0;
	case VHOST_USER_GET_QUEUE_NUM:
		*replied = true;
		return reply_u64(d, m, VHOST_USER_NQUEUES);
	case VHOST_USER_SET_OWNER:
		d->owned = true;
		return 0;
	case VHOST_USER_RESET_OWNER:
	case VHOST_USER_RESET_DEVICE:
		/* stop every ring and drop the vsock state; the connection and memory stay */
		for (unsigned i = 0; i < VHOST_USER_NQUEUES; i++)
			vring_reset(d, i);
		if (d->ops.reset)
			d->ops.reset(d->userdata);
		return 0;
	case VHOST_USER_SET_MEM_TABLE:
		return set_mem_table(d, m, fds);
	case VHOST_USER_SET_VRING_NUM:
		if (m->u.state.num == 0 || m->u.state.num > VQ_MAX_SIZE ||
		    (m->u.state.num & (m->u.state.num - 1)))
			return -EINVAL;
		vr->vq.num = (uint16_t)m->u.state.num; /* <= 32768 fits */
		vr->vq.broken = false;
		vring_remap(d, q);
		return 0;
	case VHOST_USER_SET_VRING_ADDR:
		vr->vq.desc_uva = m->u.addr.desc;
		vr->vq.avail_uva = m->u.addr.avail;
		vr->vq.used_uva = m->u.addr.used;
		vr->vq.addr_set = true;
		vr->vq.need_used_idx = true;
		vr->vq.broken = false;
		vring_remap(d, q);
		return 0;
	case VHOST_USER_SET_VRING_BASE:
		if (m->u.state.num > UINT16_MAX)
			return -EINVAL;
		vr->vq.last_avail = (uint16_t)m->u.state.num;
		vr->vq.used_idx = (uint16_t)m->u.state.num;
		vr->vq.broken = false;
		return 0;
	case VHOST_USER_GET_VRING_BASE: {
		/* stop the ring: no access until it is started again */
		uint32_t st[2] = { q, vr->vq.last_avail };
		vr->started = false;
		if (vr->kick_fd >= 0 && d->ops.kick_fd)
			d->ops.kick_fd(d->userdata, q, -1);
		close_fd(&vr->kick_fd);
		close_fd(&vr->call_fd);
		*replied = true;
		return reply(d, m, st, sizeof(st));
	}
	case VHOST_USER_SET_VRING_KICK:
		if (vr->kick_fd >= 0 && d->ops.kick_fd)
			d->ops.kick_fd(d->userdata, q, -1);
		r = set_vring_fd(&vr->kick_fd, fds, m);
		if (r < 0 || vr->kick_fd < 0) {
			vr->started = false;
			return r < 0 ? r : -EOPNOTSUPP; /* polling mode is not supported */
		}
		if (d->ops.kick_fd)
			d->ops.kick_fd(d->userdata, q, vr->kick_fd);
		vr->started = true;
		return 0;
	case VHOST_USER_SET_VRING_CALL:
		return set_vring_fd(&vr->call_fd, fds, m);
	case VHOST_USER_SET_VRING_ERR:
		return set_vring_fd(&vr->err_fd, fds, m);
	case VHOST_USER_SET_VRING_ENABLE:
		if (m->u.state.num > 1)
			return -EINVAL;
		vr->enabled = m->u.state.num == 1;
		return 0;
	case VHOST_USER_GET_CONFIG:
		*replied = true;
		return get_config(d, m);
	case VHOST_USER_SET_CONFIG:
		return -EPERM; /* the guest CID is read-only */
	default:
		return -EOPNOTSUPP;
	}
}

int vhost_user_dev_message(struct vhost_user_dev *d, const uint8_t *p, size_t len, int *fds,
			   size_t nfds)
{
	struct vhost_user_msg m = { 0 };
	bool replied = false;
	int r = vhost_user_decode(p, len, nfds, &m);

	if (r == -EOPNOTSUPP) {
		/* (every request that has a reply of its own is known, so an ack is the answer) */
		log_debug("vhost-user: unsupported request %u", m.request);
	} else if (r < 0) {
		log_debug("vhost-user: malformed message");
	} else {
		log_debug("vhost-user: request %u", m.request);
		r = handle(d, &m, fds, &replied);
		if (r < 0)
			log_debug_errno(r, "vhost-user: request %u failed", m.request);
	}
	for (size_t i = 0; i < nfds; i++)
		fds[i] = safe_close(fds[i]);
	if (r == -EBADMSG)
		return r;
	if (!replied && (m.flags & VHOST_USER_FLAG_NEED_REPLY)) {
		int k = reply_u64(d, &m, r < 0 ? 1 : 0);
		if (k < 0)
			return k;
	}
	if (d->ops.queues_changed)
		d->ops.queues_changed(d->userdata);
	return 0;
}

/* ---- framing ---- */

static void take_fds(struct vhost_user_dev *d, struct msghdr *mh)
{
	if (mh->msg_flags & MSG_CTRUNC)
		d->in_fds_lost = true;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (d->in_nfds < VHOST_USER_MAX_FDS) {
				d->in_fds[d->in_nfds++] = fd;
			} else {
				safe_close(fd);
				d->in_fds_lost = true;
			}
		}
	}
}

int vhost_user_dev_read(struct vhost_user_dev *d, int fd)
{
	for (;;) {
		size_t want;
		if (d->in_len < VHOST_USER_HDR_SIZE) {
			want = VHOST_USER_HDR_SIZE - d->in_len;
		} else {
			uint32_t size = rd32(d->in + 8);
			if (size > VHOST_USER_MAX_PAYLOAD)
				return log_debug_errno(-EBADMSG, "vhost-user: message too large");
			want = VHOST_USER_HDR_SIZE + size - d->in_len;
		}
		if (want == 0) {
			int fds[VHOST_USER_MAX_FDS];
			size_t nfds = d->in_nfds;
			bool lost = d->in_fds_lost;
			size_t len = d->in_len;
			memcpy(fds, d->in_fds, nfds * sizeof(int));
			d->in_nfds = 0;
			d->in_fds_lost = false;
			d->in_len = 0;
			if (lost) {
				for (size_t i = 0; i < nfds; i++)
					safe_close(fds[i]);
				return log_debug_errno(-EBADMSG, "vhost-user: too many fds");
			}
			int r = vhost_user_dev_message(d, d->in, len, fds, nfds);
			if (r < 0)
				return r;
			continue;
		}

		union {
			struct cmsghdr align;
			uint8_t buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
		} ctl;
		struct iovec iov = { .iov_base = d->in + d->in_len, .iov_len = want };
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.buf,
			.msg_controllen = sizeof(ctl.buf),
		};
		ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return negative_errno();
		}
		take_fds(d, &mh);
		if (n == 0)
			return -ECONNRESET;
		d->in_len += (size_t)n;
	}
}

int vhost_user_dev_flush(struct vhost_user_dev *d, int fd)
{
	while (buf_len(&d->out) > 0) {
		ssize_t n =
			send(fd, buf_head(&d->out), buf_len(&d->out), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return -EAGAIN;
			return negative_errno();
		}
		buf_consume(&d->out, (size_t)n);
	}
	return 0;
}
