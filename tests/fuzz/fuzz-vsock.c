/* fuzz-vsock.c - the vhost-user-vsock back end on arbitrary input, as a hostile guest or QEMU.
 *
 * The first byte picks the mode:
 *   0  vhost-user messages, handled one by one by a vhost_user_dev (with memfd-backed regions
 *      when a message asks for fds), the vsock queues processed after each one;
 *   1  a script run by a hostile guest and host against fake guest RAM with an rx and a tx ring:
 *      patch guest memory, process the queues, write/close host sockets, accept hybrid
 *      connections, poll the host fds;
 *   2  the same bytes as a raw vhost-user stream through the socket framing code.
 * Nothing may crash, hang, leak or touch memory outside the fake guest RAM.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guestmem.h"
#include "vhost_user.h"
#include "virtq.h"
#include "vsock_dev.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CID 3
#define MEMSZ 65536u
#define GPA 0x10000u
#define QNUM 16u
#define MAXP 16

struct in {
	const uint8_t *p;
	size_t n;
};

static unsigned take8(struct in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static size_t take(struct in *in, const uint8_t **ret, size_t want)
{
	size_t k = want < in->n ? want : in->n;
	*ret = in->p;
	in->p += k;
	in->n -= k;
	return k;
}

/* ---- a fake host for vsock_dev ---- */

struct host {
	struct vsock_dev *d;
	int peers[MAXP];
	size_t npeers;
	struct {
		struct vsock_conn *c;
		int fd;
		unsigned ev;
	} w[MAXP * 2];
	size_t nw;
};

static int h_connect(void *userdata, uint32_t port)
{
	struct host *h = userdata;
	int sv[2];
	if ((port & 1) || h->npeers >= MAXP) /* odd ports have no listener */
		return -ECONNREFUSED;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	h->peers[h->npeers++] = sv[1];
	return sv[0];
}

static size_t h_find(struct host *h, const struct vsock_conn *c)
{
	for (size_t i = 0; i < h->nw; i++)
		if (h->w[i].c == c)
			return i;
	return SIZE_MAX;
}

static void h_watch(void *userdata, struct vsock_conn *c, int fd, unsigned events)
{
	struct host *h = userdata;
	size_t i = h_find(h, c);
	if (i == SIZE_MAX) {
		if (h->nw >= sizeof(h->w) / sizeof(h->w[0]))
			__builtin_trap(); /* more connections than fds we handed out */
		i = h->nw++;
		h->w[i].c = c;
	}
	h->w[i].fd = fd;
	h->w[i].ev = events;
}

static void h_release(void *userdata, struct vsock_conn *c, int fd)
{
	struct host *h = userdata;
	size_t i = h_find(h, c);
	if (i != SIZE_MAX)
		h->w[i] = h->w[--h->nw];
	close(fd);
}

static const struct vsock_dev_ops host_ops = {
	.connect = h_connect,
	.watch = h_watch,
	.release = h_release,
};

static void host_io(struct host *h)
{
	struct vsock_conn *snap[MAXP * 2];
	size_t n = h->nw;
	for (size_t i = 0; i < n; i++)
		snap[i] = h->w[i].c;
	for (size_t s = 0; s < n; s++) {
		size_t i = h_find(h, snap[s]);
		if (i == SIZE_MAX || !h->w[i].ev)
			continue; /* freed by an earlier call */
		unsigned want = h->w[i].ev;
		struct pollfd p = { .fd = h->w[i].fd };
		p.events = (short)(((want & VSOCK_EV_READ) ? POLLIN : 0) |
				   ((want & VSOCK_EV_WRITE) ? POLLOUT : 0) |
				   ((want & VSOCK_EV_HUP) ? POLLRDHUP : 0));
		if (poll(&p, 1, 0) <= 0)
			continue;
		unsigned ev = 0;
		if (p.revents & (POLLIN | POLLHUP))
			ev |= VSOCK_EV_READ;
		if (p.revents & POLLOUT)
			ev |= VSOCK_EV_WRITE;
		if (p.revents & (POLLRDHUP | POLLHUP))
			ev |= VSOCK_EV_HUP;
		if (p.revents & POLLERR)
			ev |= VSOCK_EV_ERR;
		ev &= want | VSOCK_EV_ERR;
		if (ev)
			vsock_dev_conn_io(h->d, snap[s], ev);
	}
}

static void host_done(struct host *h)
{
	vsock_dev_free(h->d);
	if (h->nw != 0)
		__builtin_trap(); /* every fd was released */
	for (size_t i = 0; i < h->npeers; i++)
		if (h->peers[i] >= 0)
			close(h->peers[i]);
}

/* ---- mode 1: scripted guest and host over fake RAM ---- */

static void ring_at(struct vq *vq, uint8_t *mem, size_t off)
{
	vq_init(vq);
	vq->num = QNUM;
	vq->desc_uva = (uintptr_t)(mem + off);
	vq->avail_uva = (uintptr_t)(mem + off + 0x100);
	vq->used_uva = (uintptr_t)(mem + off + 0x200);
	vq->addr_set = true;
	vq->need_used_idx = true;
}

static void fuzz_script(struct in *in)
{
	static uint8_t *mem;
	struct guestmem gm;
	struct vq rx, tx;
	struct host h = { 0 };

	if (!mem)
		mem = aligned_alloc(4096, MEMSZ);
	memset(mem, 0, MEMSZ);
	/* two regions, adjacent in guest-physical space, so buffers may cross between them */
	guestmem_init(&gm);
	guestmem_add(&gm, GPA, (uintptr_t)mem, MEMSZ / 2, mem);
	guestmem_add(&gm, GPA + MEMSZ / 2, (uintptr_t)mem + MEMSZ / 2, MEMSZ / 2, mem + MEMSZ / 2);
	ring_at(&rx, mem, 0);
	ring_at(&tx, mem, 0x400);
	vq_map(&rx, &gm);
	vq_map(&tx, &gm);
	if (vsock_dev_new(CID, &host_ops, &h, &h.d) < 0)
		return;

	for (unsigned steps = 0; in->n > 0 && steps < 512; steps++) {
		unsigned op = take8(in);
		const uint8_t *p;
		size_t k;
		switch (op % 8) {
		case 0:
			(void)vsock_dev_process_tx(h.d, &tx, &gm, 64);
			break;
		case 1:
			(void)vsock_dev_process_rx(h.d, &rx, &gm);
			(void)vq_take_signal(&rx);
			break;
		case 2: { /* a host process writes */
			static uint8_t junk[4096];
			unsigned i = take8(in);
			size_t n = take8(in) * 16u;
			k = take(in, &p, 16);
			for (size_t j = 0; j < n && k; j++)
				junk[j] = p[j % k];
			if (h.npeers && h.peers[i % h.npeers] >= 0)
				(void)!send(h.peers[i % h.npeers], junk, n, MSG_NOSIGNAL);
			break;
		}
		case 3: { /* a host process half-closes, closes, or reads */
			unsigned i = take8(in);
			if (!h.npeers || h.peers[i % h.npeers] < 0)
				break;
			int *fd = &h.peers[i % h.npeers];
			uint8_t sink[8192];
			if ((i >> 4) % 3 == 0) {
				shutdown(*fd, SHUT_WR);
			} else if ((i >> 4) % 3 == 1) {
				close(*fd);
				*fd = -1;
			} else {
				(void)!read(*fd, sink, sizeof(sink));
			}
			break;
		}
		case 4: { /* a host process connects to the hybrid socket */
			int sv[2];
			k = take(in, &p, take8(in) % 48);
			if (h.npeers >= MAXP ||
			    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) <
				    0)
				break;
			if (k)
				(void)!send(sv[1], p, k, MSG_NOSIGNAL);
			h.peers[h.npeers++] = sv[1];
			(void)vsock_dev_host_accept(h.d, sv[0]);
			break;
		}
		case 5:
			host_io(&h);
			break;
		case 6: { /* the guest writes its memory (rings, descriptors, packets) */
			unsigned off = take8(in) << 8;
			off |= take8(in);
			off %= MEMSZ;
			size_t n = take8(in);
			k = take(in, &p, n);
			if (k > MEMSZ - off)
				k = MEMSZ - off;
			memcpy(mem + off, p, k);
			break;
		}
		case 7:
			if (take8(in) == 0xff)
				vsock_dev_reset(h.d);
			else
				host_io(&h);
			break;
		}
	}
	for (int i = 0; i < 4; i++) {
		(void)vsock_dev_process_tx(h.d, &tx, &gm, 64);
		host_io(&h);
		(void)vsock_dev_process_rx(h.d, &rx, &gm);
	}
	host_done(&h);
}

/* ---- mode 0: vhost-user messages ---- */

static struct host *vu_host;

static void vu_changed(void *userdata)
{
	struct vhost_user_dev *d = userdata;
	if (vhost_user_vring_active(d, 1))
		(void)vsock_dev_process_tx(vu_host->d, &d->vr[1].vq, &d->mem, 64);
	if (vhost_user_vring_active(d, 0))
		(void)vsock_dev_process_rx(vu_host->d, &d->vr[0].vq, &d->mem);
	vhost_user_vring_signal(d, 0);
	vhost_user_vring_signal(d, 1);
}

static void vu_reset(void *userdata)
{
	vsock_dev_reset(vu_host->d);
}

static const struct vhost_user_ops vu_ops = {
	.queues_changed = vu_changed,
	.reset = vu_reset,
};

static void fuzz_messages(struct in *in)
{
	struct host h = { 0 };
	struct vhost_user_dev *d = malloc(sizeof(*d));
	if (!d || vsock_dev_new(CID, &host_ops, &h, &h.d) < 0) {
		free(d);
		return;
	}
	vu_host = &h;
	vhost_user_dev_init(d, CID, &vu_ops, d);
	for (unsigned msgs = 0; in->n >= VHOST_USER_HDR_SIZE && msgs < 64; msgs++) {
		uint8_t msg[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
		const uint8_t *p;
		uint32_t sz;
		take(in, &p, VHOST_USER_HDR_SIZE);
		memcpy(msg, p, VHOST_USER_HDR_SIZE);
		memcpy(&sz, msg + 8, 4);
		size_t k = take(in, &p, sz > VHOST_USER_MAX_PAYLOAD ? VHOST_USER_MAX_PAYLOAD : sz);
		memcpy(msg + VHOST_USER_HDR_SIZE, p, k);
		/* fds: memfds of 64 KiB whose first bytes come from the input (rings, packets) */
		int fds[3];
		size_t nfds = take8(in) % 4;
		for (size_t i = 0; i < nfds; i++) {
			fds[i] = memfd_create("fuzz", MFD_CLOEXEC);
			if (fds[i] < 0 || ftruncate(fds[i], MEMSZ) < 0) {
				nfds = i + (fds[i] >= 0);
				break;
			}
			size_t fill = take(in, &p, take8(in) * 8u);
			if (fill)
				(void)!pwrite(fds[i], p, fill, 0);
		}
		if (vhost_user_dev_message(d, msg, VHOST_USER_HDR_SIZE + k, fds, nfds) < 0)
			break; /* the connection would be dropped */
		buf_consume(&d->out, buf_len(&d->out));
		host_io(&h);
	}
	vhost_user_dev_reset(d);
	buf_done(&d->out, 0);
	host_done(&h);
	free(d);
}

/* ---- mode 2: the socket framing ---- */

static void fuzz_framing(struct in *in)
{
	struct host h = { 0 };
	struct vhost_user_dev *d = malloc(sizeof(*d));
	int sv[2];
	if (!d || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
		free(d);
		return;
	}
	if (vsock_dev_new(CID, &host_ops, &h, &h.d) < 0) {
		close(sv[0]);
		close(sv[1]);
		free(d);
		return;
	}
	vu_host = &h;
	vhost_user_dev_init(d, CID, &vu_ops, d);
	int r = 0;
	while (in->n > 0 && r == 0) {
		const uint8_t *p;
		size_t k = take(in, &p, 1 + take8(in) * 4u);
		if (send(sv[1], p, k, MSG_NOSIGNAL) < 0)
			break;
		r = vhost_user_dev_read(d, sv[0]);
		buf_consume(&d->out, buf_len(&d->out));
	}
	if (r == 0) {
		close(sv[1]);
		sv[1] = -1;
		r = vhost_user_dev_read(d, sv[0]);
		if (r == 0)
			__builtin_trap(); /* EOF must be noticed */
	}
	vhost_user_dev_reset(d);
	buf_done(&d->out, 0);
	host_done(&h);
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	switch (take8(&in) % 3) {
	case 0:
		fuzz_messages(&in);
		break;
	case 1:
		fuzz_script(&in);
		break;
	case 2:
		fuzz_framing(&in);
		break;
	}
	return 0;
}
