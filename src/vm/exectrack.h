/* exectrack.h - follow one exec session's frames as they pass through the vsock back end.
 *
 * capsem-vm sees every byte of every host-initiated connection to the guest's exec port (5001)
 * through the back end's audit tap. This module follows the exec protocol on those bytes
 * (docs/PROTOCOL.md, "Exec sessions") without holding or changing any of them, and reports the
 * two moments the session ledger records: the EXEC frame passing to the guest (before the guest
 * can fork the command) and the end (EXIT, ERROR, or the connection ending without either).
 *
 * Pure code on (ptr, len), no I/O; one thread (capsem-vm's loop).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* What has been seen of one session so far. */
struct exectrack_info {
	const struct proto_exec *exec; /* the EXEC frame, decoded; NULL before it passed */
	int64_t ts_start, ts_end;      /* ms since the epoch: EXEC passed; EXIT/ERROR or the end */
	bool started;		       /* a STARTED frame came: pid */
	uint32_t pid;
	bool got_exit; /* an EXIT frame came: exit */
	struct proto_exit exit;
	const char *error;				  /* at the end without EXIT: why */
	uint64_t stdin_bytes, stdout_bytes, stderr_bytes; /* STDIN/STDOUT/STDERR payload bytes */
};

struct exectrack_ops {
	/* The EXEC frame is complete and about to reach the guest. */
	void (*on_start)(void *userdata, const struct exectrack_info *t);
	/* The session is over for the ledger: called once, and only after on_start. */
	void (*on_end)(void *userdata, const struct exectrack_info *t);
};

struct exectrack;

/* A tracker for one connection. 0 or -ENOMEM; ops is copied. */
int exectrack_new(const struct exectrack_ops *ops, void *userdata, struct exectrack **ret);
/* Bytes of the stream in order: to_guest for what the host side sent, else what the guest sent.
 * A framing it cannot follow (a frame over PROTO_MAX_PAYLOAD, a first frame that is not EXEC, an
 * EXEC that does not decode) ends the tracking: on_end (when on_start was called) says so. */
void exectrack_feed(struct exectrack *t, bool to_guest, const uint8_t *p, size_t n);
/* The connection is gone (why: NULL for an orderly close). Reports the end when it was not
 * reported yet, then frees t. Accepts NULL. */
void exectrack_close(struct exectrack *t, const char *why);
