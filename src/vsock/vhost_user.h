/* vhost_user.h - the back-end side of the vhost-user protocol, for a two-queue vsock device.
 *
 * vhost_user_decode() validates one message (header, payload, number of fds) and is pure: it is
 * also a fuzz target. struct vhost_user_dev is the protocol state of one QEMU connection: the
 * negotiated features, the guest memory table and the two vrings (0 = rx, 1 = tx; QEMU keeps the
 * event queue). It reads and answers messages on a non-blocking socket but knows nothing of the
 * event loop: struct vhost_user_ops tells the owner which kick fds to watch and when the rings may
 * have become usable. Offered: VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES; protocol
 * features MQ, REPLY_ACK, CONFIG. Not thread-safe.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "guestmem.h"
#include "virtq.h"

#define VHOST_USER_HDR_SIZE 12u
#define VHOST_USER_MAX_PAYLOAD 4096u
#define VHOST_USER_MAX_FDS 8u
#define VHOST_USER_NQUEUES 2u
#define VHOST_USER_MAX_CONFIG 256u

#define VHOST_USER_VERSION 0x1u
#define VHOST_USER_FLAG_REPLY (1u << 2)
#define VHOST_USER_FLAG_NEED_REPLY (1u << 3)
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD (1u << 8)

#define VIRTIO_F_VERSION_1 (1ull << 32)
#define VHOST_USER_F_PROTOCOL_FEATURES (1ull << 30)
#define VHOST_USER_PROTOCOL_F_MQ (1ull << 0)
#define VHOST_USER_PROTOCOL_F_REPLY_ACK (1ull << 3)
#define VHOST_USER_PROTOCOL_F_CONFIG (1ull << 9)

#define VHOST_USER_FEATURES (VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES)
#define VHOST_USER_PROTOCOL_FEATURES \
	(VHOST_USER_PROTOCOL_F_MQ | VHOST_USER_PROTOCOL_F_REPLY_ACK | VHOST_USER_PROTOCOL_F_CONFIG)

enum vhost_user_request {
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_LOG_BASE = 6,
	VHOST_USER_SET_LOG_FD = 7,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_RESET_DEVICE = 34,
};

struct vhost_user_region {
	uint64_t gpa, size, uva, mmap_offset;
};

/* A decoded front-end message; which member is valid depends on request. */
struct vhost_user_msg {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
	union {
		uint64_t u64;
		struct {
			uint32_t index, num;
		} state;
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} addr;
		struct {
			uint32_t nregions;
			struct vhost_user_region r[GUESTMEM_MAX_REGIONS];
		} mem;
		struct {
			uint32_t offset, size, flags;
		} config;
	} u;
};

/* Decode the message in p[0..len) (header and payload, len == 12 + size) that arrived with nfds
 * file descriptors. 0; -EOPNOTSUPP for a well-framed request we do not know (request and flags
 * are still filled so the caller can answer it); -EBADMSG when the message is malformed: bad
 * version, reply flag set, payload too short for the request, wrong number of fds, too many
 * regions or config bytes. *ret is written only on 0 and -EOPNOTSUPP. */
int vhost_user_decode(const uint8_t *p, size_t len, size_t nfds, struct vhost_user_msg *ret);

struct vhost_user_ops {
	/* Watch fd for kicks of queue q (-1: stop watching). Called before an old fd is closed. */
	void (*kick_fd)(void *userdata, unsigned q, int fd);
	/* Queue state changed (a ring started, was enabled, remapped...): process active queues. */
	void (*queues_changed)(void *userdata);
	/* The front end reset the device: drop every vsock connection. */
	void (*reset)(void *userdata);
};

struct vhost_user_vring {
	struct vq vq;
	int kick_fd, call_fd, err_fd;
	bool started; /* a kick fd was given and the ring was not stopped since */
	bool enabled; /* SET_VRING_ENABLE */
};

struct vhost_user_dev {
	uint64_t guest_cid;
	uint64_t features;
	uint64_t protocol_features;
	bool owned;
	struct guestmem mem;
	struct vhost_user_vring vr[VHOST_USER_NQUEUES];
	struct vhost_user_ops ops;
	void *userdata;
	/* framing of the incoming stream */
	uint8_t in[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
	size_t in_len;
	int in_fds[VHOST_USER_MAX_FDS];
	size_t in_nfds;
	bool in_fds_lost;
	struct buf out; /* replies not yet written */
};

/* Initialise for a guest CID (answered to GET_CONFIG). ops is copied; its members may be NULL. */
void vhost_user_dev_init(struct vhost_user_dev *d, uint64_t guest_cid,
			 const struct vhost_user_ops *ops, void *userdata);
/* Forget the connection: close vring and pending fds (ops->kick_fd(-1) first), unmap guest
 * memory, reset features and framing. The device is ready for a new connection. */
void vhost_user_dev_reset(struct vhost_user_dev *d);

/* Handle one complete message (12-byte header + payload) with its fds, which are consumed
 * (kept or closed) in every case. Replies are appended to d->out. 0, or -errno when the message
 * is malformed and the connection should be dropped. */
int vhost_user_dev_message(struct vhost_user_dev *d, const uint8_t *p, size_t len, int *fds,
			   size_t nfds);
/* Read and handle every complete message available on the non-blocking socket fd. 0 when it
 * would block, -ECONNRESET when QEMU closed, -errno on malformed input or I/O errors. */
int vhost_user_dev_read(struct vhost_user_dev *d, int fd);
/* Write pending replies. 0 when all are written, -EAGAIN when some remain (wait for POLLOUT),
 * -errno on errors. */
int vhost_user_dev_flush(struct vhost_user_dev *d, int fd);

/* Whether queue q may be processed: memory and rings mapped, started, enabled, not broken. */
bool vhost_user_vring_active(const struct vhost_user_dev *d, unsigned q);
/* Interrupt the guest for queue q if something was pushed and the driver wants it. */
void vhost_user_vring_signal(struct vhost_user_dev *d, unsigned q);
/* Tell QEMU that the guest broke queue q (through the err fd, when one was given). */
void vhost_user_vring_error(struct vhost_user_dev *d, unsigned q);
