/* threadreq.h - how capsem-vm's loop thread drives one of its worker threads (the channel mux,
 * vmchan.c; the workspace's 9p server, vmws.c): an eventfd that tells it to end, a command
 * number with an eventfd that wakes it, and an eventfd for its answer. The caller blocks for the
 * answer, bounded by a timeout (only around a save, while the guest is stopped or quiet).
 * Commands are ints > 0; answers are u64 > 0 chosen by the worker.
 */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

struct threadreq {
	int stop_fd, cmd_fd, done_fd; /* the worker polls stop_fd and cmd_fd for POLLIN */
	_Atomic int cmd;
};

/* Three non-blocking eventfds. 0 or -errno (then nothing is open). */
int treq_init(struct threadreq *q);
/* Close them; safe on a zeroed or failed one whose fds are -1. */
void treq_done(struct threadreq *q);
/* Worker side: the command the caller asked for (0: none), and its answer. */
int treq_take(struct threadreq *q);
void treq_answer(struct threadreq *q, uint64_t v);
/* Caller side: ask for cmd and wait up to timeout_ms for the answer (a stale one is dropped
 * first). 0 with *ret_answer, -ETIMEDOUT, or -errno. */
int treq_call(struct threadreq *q, int cmd, int timeout_ms, uint64_t *ret_answer);
/* Caller side: tell the worker to end (it sees stop_fd readable). */
void treq_stop(struct threadreq *q);
