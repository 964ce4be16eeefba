/* vsock.h - our vhost-user-vsock back end for QEMU, with Firecracker-style hybrid Unix sockets.
 *
 * QEMU (-device vhost-user-vsock-device,chardev=...) connects to cfg->vhost_socket; the guest then
 * sees a virtio-vsock device with CID cfg->guest_cid. Host code only deals with Unix sockets:
 *
 *   host -> guest port P: connect to cfg->uds_path, write "CONNECT P\n" (or "CONNECT P TAG\n",
 *                         TAG naming the caller for the audit tap), read "OK <local>\n",
 *                         then the stream is the connection (closed at once if the guest
 *                         refuses: nobody listens on P);
 *   guest -> host port P: arrives as a connection to "<uds_path>_P" (the host listens there);
 *                         no listener -> the guest's connect fails with ECONNRESET.
 *
 * Everything runs on the given libuv loop (no threads). A QEMU disconnect drops every vsock
 * connection and the back end listens for QEMU again.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct vsock_backend;

struct vsock_backend_config {
	const char *vhost_socket; /* listen here; QEMU connects */
	const char *uds_path;	  /* hybrid vsock: host connects here; guest->host port P goes to
				     "<uds_path>_<P>" */
	uint64_t guest_cid;	  /* >= 3 */
	/* Called (on the loop thread) when the device is broken by the guest ("vsock: guest broke
	 * the tx queue"), or QEMU disconnected ("vsock: QEMU disconnected"), or a listener failed.
	 * Informational: the back end keeps running (listening for QEMU again). It is called from
	 * inside the back end's callbacks: do not free the back end from it directly (defer, e.g.
	 * with a timer). May be NULL. */
	void (*on_error)(void *userdata, const char *what);
	void *userdata;
	/* An optional audit tap on host-initiated connections (all three or none; see
	 * struct vsock_dev_ops in vsock_dev.h): tap_open gets tap_userdata, the guest port and the
	 * CONNECT line's tag; tap_data and tap_close get what tap_open returned. */
	void *(*tap_open)(void *tap_userdata, uint32_t port, const char *tag);
	void (*tap_data)(void *tap, bool to_guest, const uint8_t *p, size_t n);
	void (*tap_close)(void *tap, const char *why);
	void *tap_userdata;
};

/* Create both listening sockets (a stale socket file is replaced; mode 0600; CLOEXEC, non-
 * blocking) and start serving on loop. The strings in cfg are copied. Returns 0, -EINVAL (bad
 * CID, missing path), -ENAMETOOLONG, -EEXIST (a path exists and is not a socket) or -errno;
 * *ret is set only on success. On failure nothing is left to clean up (except after running
 * out of memory while creating libuv handles: those are closed, and freed when the loop runs). */
int vsock_backend_new(uv_loop_t *loop, const struct vsock_backend_config *cfg,
		      struct vsock_backend **ret);
/* Close every handle and unlink the sockets it created; memory is released from close callbacks,
   so the caller keeps running the loop until it drains. Accepts NULL. */
void vsock_backend_free(struct vsock_backend *b);
