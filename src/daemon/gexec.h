/* gexec.h - capsemd's exec sessions with a guest agent (docs/PROTOCOL.md §4) over the VM's
 * hybrid-vsock socket, without blocking the loop: a collected exec (for GET/PUT files) and the
 * byte splice behind an upgraded POST /vms/{ref}/exec. */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "httpd.h"
#include "proto.h"

struct gexec_result {
	int ok; /* an EXIT frame arrived */
	struct proto_exit exit;
	struct buf out; /* STDOUT bytes */
	struct buf err; /* STDERR bytes (the first 64 KiB) */
	char *error;	/* why it failed when !ok */
};

/* Called once; res is owned by gexec and valid during the call only (the callee may move
 * res->out away with buf_init after copying the struct). */
typedef void (*gexec_cb)(struct gexec_result *res, void *userdata);

/* Run one command: exec_frame (an EXEC frame, taken over), then stdin (taken over: a buf whose
 * bytes are streamed in STDIN frames with backpressure, then an empty STDIN frame). stdout is
 * collected up to out_cap (more is an error). 0 or -errno (then cb is not called). */
int gexec_run(uv_loop_t *loop, const char *vsock, struct buf *exec_frame, struct buf *stdin_data,
	      size_t out_cap, gexec_cb cb, void *userdata);

/* Connect to the guest's exec port (tagged with via, "cli", "api" or "mcp", for capsem-vm's exec
 * record), and once it accepted: send exec_frame (taken over), answer the request on c with 101
 * and splice bytes both ways until either side closes. If the guest cannot be reached, c gets
 * a 503 instead. */
void gexec_splice(uv_loop_t *loop, const char *vsock, const char *via, struct buf *exec_frame,
		  struct httpd_conn *c);
