/* vmproc.h - start a capsem-vm supervisor as a child process and talk to it over a socketpair.
 *
 * The child runs in its own session (terminal signals reach only its parent) and receives the
 * socketpair end as fd 3 (--ipc-fd 3). Lines of JSON come back: ready / error / stopped.
 * Blocking API for a single-VM client (the CLI); the daemon drives the same fd from its loop.
 */
#pragma once

#include <jansson.h>
#include <sys/types.h>

#include "buf.h"

struct vmproc {
	pid_t pid;
	int ipc_fd;
	struct buf in;
	json_t *ready; /* the ready event, once seen */
};

/* Spawn vm_bin with args (NULL-terminated, without argv[0] and --ipc-fd). 0 or -errno. */
int vmproc_spawn(const char *vm_bin, char *const *args, struct vmproc **ret);
/* Read one event line, waiting up to timeout_ms (-1 = forever) while also watching extra_fd
 * (e.g. a signalfd; -1 = none). Returns 1 with *ret_event (owned), 0 on EOF, -EINTR when
 * extra_fd became readable, -ETIMEDOUT, or -errno. */
int vmproc_read_event(struct vmproc *p, int timeout_ms, int extra_fd, json_t **ret_event);
/* Ask it to stop, wait up to timeout_ms for it to exit, SIGKILL after that, reap. Returns the
 * supervisor's exit status. Idempotent. */
int vmproc_stop(struct vmproc *p, int timeout_ms);
void vmproc_free(struct vmproc *p);

/* Find a sibling binary: $env_override, then <dir of /proc/self/exe>/name, then
 * <dir>/../<subdir>/name (the build tree), then CAPSEM_LIBEXECDIR/name. malloc'ed path or NULL. */
char *find_helper_binary(const char *name, const char *env_override, const char *subdir);
