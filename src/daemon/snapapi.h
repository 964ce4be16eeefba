/* snapapi.h - capsemd's workspace snapshot routes (docs/API.md "Snapshots") and the automatic
 * snapshots of running VMs, on top of src/workspace/snapstore.h. */
#pragma once

#include "api.h"

#define SNAPAPI_INTERVAL_DEFAULT_S 300
#define SNAPAPI_STORE_DIR "snapshots" /* <vmdir>/snapshots */

/* Start the automatic snapshots: every $CAPSEM_SNAPSHOT_INTERVAL_S seconds (default 300; 0 =
 * none) each running VM's workspace is snapshotted on a worker thread (skipped by the library
 * when nothing changed). Call once, before serving. 0, or -EINVAL for a malformed variable
 * (logged). */
int snapapi_init(struct api *a);
/* Stop the timer (jobs in flight finish on their own). */
void snapapi_done(struct api *a);

/* /vms/{ref}/snapshots[/{sub}]: sub NULL (GET list, POST create), "changes" (GET), "revert"
 * (POST), "history" (GET), "compact" (POST) or a snapshot's name (DELETE). Answers c exactly
 * once, from the loop thread, after the work ran on libuv's worker pool. */
void snapapi_handle(struct api *a, struct httpd_conn *c, struct vm *vm, const char *method,
		    const char *sub, const char *query, const struct buf *body);
