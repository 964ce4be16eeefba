/* relay.h - relay one exec session (docs/PROTOCOL.md §4) between the local terminal/stdio and a
 * connected stream: the guest agent's vsock port (capsem run --direct) or a capsemd exec upgrade
 * (docs/API.md). Also the local terminal's raw mode for tty sessions. */
#pragma once

#include <stdint.h>

#include "buf.h"
#include "proto.h"

struct relay {
	int sock;  /* non-blocking stream carrying the frames */
	int sigfd; /* signalfd: SIGINT/SIGTERM/SIGHUP (+SIGWINCH for tty sessions) */
	int ipc;   /* optional: readable means the VM died (-1 = none) */
	int in_fd; /* -1 when stdin is not forwarded or is done */
	int tty;   /* tty session: SIGWINCH -> WINSIZE frames */
	struct buf out;
	struct buf in;
	int stdout_broken;
	int interrupts;
	int got_exit;
	struct proto_exit exit;
	char *error;
};

/* Initialise with the stream (made non-blocking) and the signalfd. */
void relay_init(struct relay *r, int sock, int sigfd);
/* Free buffers and the error; closes nothing. */
void relay_done(struct relay *r);
/* Queue one frame to send. 0 or a buf error. */
int relay_send_frame(struct relay *r, uint16_t type, const void *p, size_t n);
/* Run until EXIT (or ERROR). 0 with r->exit set, -EINTR after a second interrupt, -EPIPE when
 * the stream or the VM was lost, -EBADMSG for a protocol violation, -ETIMEDOUT when the guest
 * did not end the command after its timeout (backstop: timeout_ms + 30 s), or -errno. Every
 * failure is logged. */
int relay_run(struct relay *r, uint64_t timeout_ms);
/* capsem's exit status after relay_run() returned run (0 or -EINTR): the command's own (128+N
 * for a signal), 124 after its timeout (said on stderr, with timeout_ms), 130 when interrupted. */
int relay_exit_status(const struct relay *r, int run, uint64_t timeout_ms);

/* The window size of the terminal on fd. 0 or -errno (not a terminal). */
int tty_get_size(int fd, uint16_t *ret_rows, uint16_t *ret_cols);
/* Put the terminal on fd in raw mode (cfmakeraw); the previous mode is restored by
 * tty_restore(), and at exit. 0 or -errno. */
int tty_raw(int fd);
void tty_restore(void);
