/* chanio.h - the channel mux on file descriptors: one side (host or guest) of the mux's byte
 * stream (a virtio-serial port in the guest, QEMU's chardev socket on the host) and the local
 * sockets its streams are spliced to, with the mux's flow control turned into poll events.
 *
 * The caller owns the event loop: chanio_fds() says which descriptors it wants watched for what,
 * chanio_ready() is told when one is ready. Streams come from two places: local connections to
 * the peer's ports (chanio_connect(): a guest client of a host port, or a host process that sent
 * "CONNECT <port>" on the hybrid socket), and the peer's OPENs, for which ops->open_local gives a
 * local socket (the guest: the agent's exec socket; the host: <vmdir>/vsock_<port>).
 *
 * Trust boundary: the mux stream is the peer's (hostile both ways; chanmux.c checks it). Single
 * thread: whoever calls chanio_*. Used by capsem-vm (src/vm/vmchan.c) and capsem-chan (guest).
 */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chanmux.h"

#define CHANIO_MAX_FDS (CHANMUX_MAX_STREAMS + 1)

struct chanio_ops {
	void *userdata;
	/* The peer opens a stream to local port: a connected or connecting (non-blocking) socket,
	 * or -errno (ECONNREFUSED: nobody listens there). */
	int (*open_local)(void *userdata, uint32_t port, const char *tag);
	/* Optional audit of host-opened streams (capsem-vm's exec records), as the vsock back end
	 * calls them: open when the stream is asked for, data in order both ways, close at the end
	 * (why NULL for an orderly end). */
	void *(*tap_open)(void *userdata, uint32_t port, const char *tag);
	void (*tap_data)(void *tap, bool to_guest, const uint8_t *p, size_t n);
	void (*tap_close)(void *tap, const char *why);
};

struct chanio;

/* Take over mux_fd (made non-blocking) and send HELLO. 0 or -errno. */
int chanio_new(enum chanmux_side side, int mux_fd, const struct chanio_ops *ops,
	       struct chanio **ret);
/* Close every stream and the mux fd. NULL is fine. */
void chanio_free(struct chanio *c);

/* A local connection (fd taken over, made non-blocking) to the peer's port. With ok_line, the
 * local side gets "OK <id>\n" once the peer accepted (the hybrid-vsock convention); a refusal
 * closes fd. 0 or -errno (fd closed). */
int chanio_connect(struct chanio *c, int fd, uint32_t port, const char *tag, bool ok_line);

/* The descriptors to watch (at most n): fd and events (POLLIN/POLLOUT). Their number. */
size_t chanio_fds(struct chanio *c, struct pollfd *p, size_t n);
/* fd is ready with revents. 0, or -EPIPE when the mux itself ended (the peer went away) or
 * (guest) -EPROTO when the host broke the protocol: free the chanio then. A guest that breaks
 * the protocol is waited for to start over (chanio_syncing), not cut off. */
int chanio_ready(struct chanio *c, int fd, short revents);

/* (host) End the mux session before the VM is saved: PAUSE sent, every stream closed, no new one
 * accepted; chanio_paused() is true once the guest answered (its last byte is read). 0 or a buf
 * error. */
int chanio_pause(struct chanio *c);
bool chanio_paused(const struct chanio *c);
/* (host) A new session on the same mux fd (HELLO sent; every stream closed): after a failed
 * save, the guest is told to start over. 0 or -ENOMEM. */
int chanio_restart(struct chanio *c);

/* Streams open now. */
size_t chanio_count(const struct chanio *c);
/* Whether input is skipped up to a HELLO: the guest's end until the host answered its HELLO;
 * the host's after the guest broke the protocol, until the guest's end starts over (its
 * streams were all reset then, and no new one is opened meanwhile). */
bool chanio_syncing(const struct chanio *c);
