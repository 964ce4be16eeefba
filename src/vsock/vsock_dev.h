/* vsock_dev.h - the virtio-vsock device: packets, connections, credit, hybrid Unix sockets.
 *
 * The device consumes guest packets (from the tx queue), produces packets for the guest (into rx
 * buffers), and moves stream bytes to and from host Unix sockets using the Firecracker hybrid
 * convention (see vsock.h). It knows nothing of libuv or vhost-user: the caller tells it which
 * fds are ready (vsock_dev_conn_io) and it asks the caller, through struct vsock_dev_ops, to
 * watch or release fds and to connect to host ports. Stream semantics and limits:
 *
 *   - type STREAM only; anything else is answered with RST;
 *   - credit: we advertise VSOCK_BUF_ALLOC per connection and never buffer more than that toward
 *     a host socket (a guest that overruns its credit gets RST); toward the guest we read a host
 *     socket only while the guest has credit, at most VSOCK_TO_GUEST_MAX bytes queued per
 *     connection, so no connection can hold up another;
 *   - half-close: host EOF -> SHUTDOWN(SEND); guest SHUTDOWN(SEND) -> shutdown(SHUT_WR) once our
 *     buffer is flushed; both directions done -> RST and the connection is freed.
 *
 * Not thread-safe; one event loop thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "guestmem.h"
#include "virtq.h"

#define VSOCK_HOST_CID 2u
#define VSOCK_HDR_SIZE 44u
/* Largest payload accepted from or sent to the guest in one packet. */
#define VSOCK_MAX_PKT 65536u
/* Receive buffer we advertise per connection (bytes the guest may have in flight to us). */
#define VSOCK_BUF_ALLOC (256u * 1024)
/* Bytes read from a host socket and not yet delivered to the guest, per connection. */
#define VSOCK_TO_GUEST_MAX 65536u
#define VSOCK_MAX_CONNS 1024u
/* Control packets (RST) waiting for rx buffers that belong to no live connection. */
#define VSOCK_CTRL_QUEUE 256u
/* First local port handed to host-initiated connections. */
#define VSOCK_LOCAL_PORT_BASE (1u << 30)
/* Longest "CONNECT <port>[ <tag>]\n" line, newline included. */
#define VSOCK_CONNECT_LINE_MAX 48u
/* A tag: 1 to VSOCK_TAG_MAX characters of [a-z0-9_-], named by the host process for the tap. */
#define VSOCK_TAG_MAX 16u

enum {
	VSOCK_TYPE_STREAM = 1,
	VSOCK_TYPE_SEQPACKET = 2,
};

enum {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

#define VSOCK_SHUTDOWN_RCV 1u
#define VSOCK_SHUTDOWN_SEND 2u

/* struct virtio_vsock_hdr, decoded (the wire form is 44 bytes, little-endian, packed). */
struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
};

void vsock_hdr_decode(const uint8_t p[VSOCK_HDR_SIZE], struct vsock_hdr *h);
void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t p[VSOCK_HDR_SIZE]);

/* Interest in fd readiness. */
enum {
	VSOCK_EV_READ = 1,
	VSOCK_EV_WRITE = 2,
	VSOCK_EV_HUP = 4, /* peer hung up (EPOLLRDHUP); also reported on errors */
	VSOCK_EV_ERR = 8, /* reported only: the fd failed */
};

struct vsock_dev;
struct vsock_conn;

struct vsock_dev_ops {
	/* Connect to the host listener of port (guest -> host). Returns a connected, non-blocking,
	 * CLOEXEC stream fd, which the device then owns, or -errno (the guest gets RST). */
	int (*connect)(void *userdata, uint32_t port);
	/* Set the readiness the device wants for the fd of c (VSOCK_EV_* mask, 0 = none). Called
	 * first right after a connection is created; call vsock_dev_conn_io() when ready. */
	void (*watch)(void *userdata, struct vsock_conn *c, int fd, unsigned events);
	/* The device is done with fd: stop watching and close it. c is freed right after. */
	void (*release)(void *userdata, struct vsock_conn *c, int fd);

	/* An audit tap on host-initiated connections (all three NULL: none). It sees the stream
	 * bytes but can neither change nor hold them back.
	 * tap_open: a host process asked for guest port `port` ("CONNECT <port>[ <tag>]", tag ""
	 *   when absent). Returns the tap's state for this connection, or NULL not to follow it.
	 * tap_data: the stream, in order: to_guest for bytes taken from the host process for the
	 *   guest (before the guest can see them), !to_guest for bytes the guest sent that were
	 *   accepted for the host process.
	 * tap_close: the connection is gone (why: NULL for an orderly end, else the reason). The
	 *   last call for that tap. */
	void *(*tap_open)(void *userdata, uint32_t port, const char *tag);
	void (*tap_data)(void *tap, bool to_guest, const uint8_t *p, size_t n);
	void (*tap_close)(void *tap, const char *why);
};

/* Create a device for guest_cid. ops is copied. 0, -EINVAL or -ENOMEM. */
int vsock_dev_new(uint64_t guest_cid, const struct vsock_dev_ops *ops, void *userdata,
		  struct vsock_dev **ret);
/* Release every connection (ops->release for each fd) and free. Accepts NULL. */
void vsock_dev_free(struct vsock_dev *d);
/* Drop every connection and queued packet without telling the guest (device reset, QEMU
 * gone). */
void vsock_dev_reset(struct vsock_dev *d);

/* A host process connected to the hybrid socket; the device owns fd (non-blocking) from now on,
 * even on error. 0 or -EMFILE (too many connections; fd closed). */
int vsock_dev_host_accept(struct vsock_dev *d, int fd);
/* The fd of c is ready (VSOCK_EV_*). c may be freed by this call. */
void vsock_dev_conn_io(struct vsock_dev *d, struct vsock_conn *c, unsigned events);
/* Per-connection slot for the caller (its poll handle). */
void vsock_conn_set_data(struct vsock_conn *c, void *data);
void *vsock_conn_get_data(const struct vsock_conn *c);

/* One packet from the guest: iov holds the readable bytes of one tx chain (header, maybe split,
 * then payload). Malformed packets are dropped or answered with RST; never fails. */
void vsock_dev_tx_pkt(struct vsock_dev *d, const struct iovec *iov, size_t niov);
/* Whether vsock_dev_rx_pkt() has something to produce. */
bool vsock_dev_rx_pending(const struct vsock_dev *d);
/* Write the next packet for the guest into the writable buffer iov. 1 and *ret_len (bytes
 * written), 0 when nothing is pending, -EMSGSIZE when the buffer cannot hold a header (it should
 * be returned to the guest empty). */
int vsock_dev_rx_pkt(struct vsock_dev *d, const struct iovec *iov, size_t niov, size_t *ret_len);

/* Drain the tx queue: pop at most budget chains, feed each to vsock_dev_tx_pkt and return it.
 * Returns the number of chains processed, or -EIO when the guest broke the queue. */
int vsock_dev_process_tx(struct vsock_dev *d, struct vq *vq, const struct guestmem *gm,
			 unsigned budget);
/* Fill rx buffers with pending packets until either runs out. Returns packets delivered or
 * -EIO when the guest broke the queue. */
int vsock_dev_process_rx(struct vsock_dev *d, struct vq *vq, const struct guestmem *gm);

/* Introspection for tests and status. */
unsigned vsock_dev_conn_count(const struct vsock_dev *d);
