/* session.h - one exec session: PROTO_EXEC in, a command's streams and exit status out. */
#pragma once

#include <stdint.h>

/* Serve one exec connection to completion: read PROTO_EXEC, start the command (spawn.h) with
 * boot_env (the boot config's "KEY=VALUE" entries, NULL-terminated; may be NULL) under the
 * exec's own environment entries, in the cgroup workload/exec-<exec_id> (cgroup.h; made and,
 * when the exec leaves nothing running, removed here; exec_id 0 = no cgroup), relay
 * STDIN/SIGNAL/WINSIZE from the host and STDOUT/STDERR to it, then send PROTO_EXIT (or
 * PROTO_ERROR when the command could not be started). Takes ownership of fd (a connected stream
 * socket) and closes it. Meant to run in its own process: it blocks SIGCHLD, creates a signalfd
 * and waits for exactly one child. File descriptors 0-2 must be open. Returns 0 when an EXIT or
 * ERROR frame was delivered, -errno otherwise (host gone, protocol violation: the command's
 * cgroup, or without one its process group, has then been killed with SIGKILL and the command
 * reaped). */
int session_run(int fd, char *const *boot_env, uint64_t exec_id);

/* Best effort, non-blocking: send PROTO_ERROR(err, msg) on a fresh connection. Does not close
 * fd. 0 or -errno. */
int session_reject(int fd, int err, const char *msg);
