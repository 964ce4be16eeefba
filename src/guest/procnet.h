/* procnet.h - the pure parts of capsem-net-proxy's process attribution: which socket of
 * /proc/net/tcp{,6} has a given local address and port, the inode behind a "socket:[N]" fd link,
 * and a comm made safe for the preamble. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Find, in the text of /proc/net/tcp (family AF_INET, addr 4 bytes) or /proc/net/tcp6 (AF_INET6,
 * addr 16 bytes), the row whose local address and port are addr (network order) and port (host
 * order), and return its socket inode. Rows with inode 0 (time-wait) and malformed rows are
 * skipped; text need not be NUL-terminated. 0 with *ret_inode set, -ENOENT (no such row) or
 * -EINVAL (bad family). The kernel prints each 32-bit word of the address in this machine's byte
 * order; so does the parser, so both agree on any host. */
int procnet_find_inode(const char *text, size_t n, int family, const uint8_t *addr, uint16_t port,
		       uint64_t *ret_inode);

/* "socket:[12345]" (n bytes, as readlink returns it) -> 12345. 0 or -EINVAL. */
int procnet_socket_inode(const char *link, size_t n, uint64_t *ret);

/* A comm as read from /proc/PID/comm (n bytes, maybe ending in '\n') into out (cap bytes,
 * NUL-terminated): the newline dropped, bytes outside 0x20..0x7e replaced by '?', cut to cap-1. */
void procnet_comm_sanitize(const char *in, size_t n, char *out, size_t cap);
