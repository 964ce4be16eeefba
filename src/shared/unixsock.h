/* unixsock.h - Unix stream sockets: listeners with safe modes, clients, and the hybrid-vsock
 * client handshake (host -> guest port P through <vmdir>/vsock). */
#pragma once

#include <stdint.h>

/* Listen on path (a stale socket file is removed first), mode 0600, non-blocking, CLOEXEC.
 * Returns the fd or -errno (-ENAMETOOLONG when the path does not fit sun_path). */
int unix_listen(const char *path, int backlog);
/* Connect (blocking unless nonblock). Returns the fd or -errno. */
int unix_connect(const char *path, int nonblock);
/* Hybrid vsock: connect to uds_path, send "CONNECT <port>\n" (or "CONNECT <port> <tag>\n": the
 * tag names the caller in capsem-vm's exec audit, e.g. "cli"; NULL for none), wait up to
 * timeout_ms for "OK <n>\n". Returns a blocking fd ready for the byte stream, -ECONNREFUSED when
 * the guest refused (nobody listens on port), -ETIMEDOUT, or -errno. */
int hvsock_connect(const char *uds_path, uint32_t port, const char *tag, int timeout_ms);
