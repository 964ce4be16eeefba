/* hostcg.h - a host cgroup for one process tree (QEMU of one VM): memory and pids limits.
 *
 * cgroup v1 (a memory and a pids hierarchy, as on this host) or v2 (one unified hierarchy with
 * the memory and pids controllers enabled for us). The cgroup is made beneath the caller's own
 * cgroup of each controller, so the VM stays accounted wherever the caller is (a systemd slice,
 * a container's cgroup). Creating one needs write access there: root, or a delegated subtree.
 * The child joins it between fork and exec through fds opened here (hostcg_join). When the
 * process in it goes over the memory limit the kernel's OOM killer kills it, not the host.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

enum { HOSTCG_MEM, HOSTCG_PIDS, HOSTCG_N };

struct hostcg {
	char *dir[HOSTCG_N];	/* the created cgroup's directory per controller, or NULL */
	int procs_fd[HOSTCG_N]; /* its cgroup.procs, O_WRONLY|O_CLOEXEC, or -1 */
};

#define HOSTCG_INIT                    \
	{                              \
		.procs_fd = { -1, -1 } \
	}

/* Create cgroup `name` (one path component) under our own cgroup of each controller, with
 * memory limited to mem_bytes (memory + swap on v1 when swap is accounted: no swapping past it)
 * and pids.max = pids_max. Each controller is independent: 0 when both were made; else -errno
 * of the first failure with why (a one-line reason: which controller, which directory, the
 * error) filled and *cg holding whatever was made (usable; hostcg_remove cleans it). */
int hostcg_create(struct hostcg *cg, const char *name, uint64_t mem_bytes, unsigned pids_max,
		  char *why, size_t why_len);

/* The directory of our own cgroup for controller k (HOSTCG_MEM, HOSTCG_PIDS), where
 * hostcg_create makes its cgroups. 0 or -ENOENT. */
int hostcg_own_dir(int k, char *buf, size_t len);

/* Move the calling process into every created cgroup (writes "0" to the cgroup.procs fds).
 * Async-signal-safe. 0 or -1 (errno). */
int hostcg_join(const struct hostcg *cg);

/* The memory cgroup's directory (for reports and tests), or NULL. */
const char *hostcg_mem_dir(const struct hostcg *cg);

/* Whether the memory cgroup's OOM killer has killed a process in it (v1: memory.oom_control
 * oom_kill, v2: memory.events oom_kill). 1, 0, or -errno. */
int hostcg_oom_killed(const struct hostcg *cg);

/* Close the fds and remove the cgroups (they must be empty: the process exited); frees the
 * paths. NULL-safe, idempotent. */
void hostcg_remove(struct hostcg *cg);
