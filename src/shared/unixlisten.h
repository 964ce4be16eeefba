/* unixlisten.h - listen on a Unix socket and accept in a loop on a libuv loop (host only).
 *
 * One listener is a listening socket (unix_listen(), or one inherited: socket activation)
 * watched with uv_poll; each time it is readable, up to max_per_wake connections are accepted
 * (accept4: non-blocking, CLOEXEC) and handed to the callback, which owns the fd from then on.
 * The struct is embedded in its owner; nothing is allocated. Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <uv.h>

struct unix_listener;

/* A new connection: fd is non-blocking and CLOEXEC, owned by the callee. */
typedef void (*unix_listener_accept_cb)(struct unix_listener *l, int fd);
/* The listener's handle is closed: its memory may go. */
typedef void (*unix_listener_close_cb)(struct unix_listener *l);

struct unix_listener {
	uv_poll_t h;
	int fd;
	unsigned max_per_wake; /* connections accepted per readiness notice; 0: until EAGAIN */
	unix_listener_accept_cb on_accept;
	unix_listener_close_cb on_close;
	void *userdata; /* the owner's */
	bool open;
};

/* Listen on path (a stale socket file is removed first; mode 0600) with backlog and start
 * accepting on loop. l is initialised here; set l->userdata before or after. 0 or -errno
 * (nothing to close then). */
int unix_listener_open(struct unix_listener *l, uv_loop_t *loop, const char *path, int backlog,
		       unsigned max_per_wake, unix_listener_accept_cb on_accept);
/* The same for a socket that already listens (inherited; made non-blocking and CLOEXEC here).
 * The listener owns fd from here on, even on failure. 0, -ENOTSOCK when fd does not listen, or
 * -errno. */
int unix_listener_adopt(struct unix_listener *l, uv_loop_t *loop, int fd, unsigned max_per_wake,
			unix_listener_accept_cb on_accept);
/* Stop accepting and close the socket now (the socket file stays: the owner unlinks it);
 * on_close (may be NULL) runs once the handle is closed. Safe on a listener that is not open. */
void unix_listener_close(struct unix_listener *l, unix_listener_close_cb on_close);
