/* cgpure.h - the pure parts of the guest's cgroup layout: the workload's limits and the
 * "key value" lines of cgroup and /proc files.
 *
 * The guest's processes live in two cgroup v2 groups (cgroup.h): the system side (init, the agent,
 * its exec session processes, the egress proxies) and the workload (every exec's command, one
 * child group per exec). The workload's memory and task limits leave room for the system side,
 * computed here from what the kernel reports at boot. Libc only; the caller's thread; used by
 * tests/unit/guest.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Memory kept out of the workload's reach: a fraction of the guest's RAM within these bounds.
 * Measured under TCG (docs/PROTOCOL.md "Limits"): the agent, the proxies, a few exec sessions
 * and the kernel's own unaccounted allocations while a workload thrashes at its limit. */
#define CGPURE_MEM_RESERVE_MIN (48ull << 20)
#define CGPURE_MEM_RESERVE_MAX (256ull << 20)
#define CGPURE_MEM_RESERVE_DIV 8u /* 1/8 of MemTotal, within the bounds above */
/* Tasks (processes and threads) kept out of the workload's reach: kernel threads, the system
 * processes and up to this many exec sessions being set up at once. */
#define CGPURE_PIDS_RESERVE_MIN 256u
#define CGPURE_PIDS_RESERVE_DIV 8u
/* The workload's task limit never goes above this: past a few thousand runnable tasks a fork
 * bomb starves everything else of CPU time (there is no cpu controller), limit or not. */
#define CGPURE_PIDS_MAX 4096u

/* Tasks of the workload no single exec may take: a fork bomb in one exec leaves this many for
 * the others (a shell to look at it and kill it). Memory has no such share: an exec that needs
 * all of the workload's memory may have it (an OOM kill frees it at once, a bomb does not). */
#define CGPURE_EXEC_PIDS_SPARE_MIN 32u
#define CGPURE_EXEC_PIDS_SPARE_DIV 8u

struct cgpure_limits {
	uint64_t mem_max;      /* the workload's memory.max, bytes */
	uint64_t swap_max;     /* the workload's memory.swap.max, bytes */
	uint64_t mem_reserve;  /* bytes kept for the system side */
	uint64_t pids_max;     /* the workload's pids.max */
	uint64_t pids_reserve; /* tasks kept for the system side */
};

/* The workload's limits for a guest with mem_total and mem_avail bytes (MemTotal and
 * MemAvailable of /proc/meminfo when the limits are set, before any workload runs) and a kernel
 * that allows at most task_limit tasks (the smaller of kernel.threads-max and kernel.pid_max).
 * memory.max is what is available minus the reserve (at least half of what is available);
 * memory.swap.max equals memory.max, so swap can at most double the workload's footprint;
 * pids.max is task_limit minus the reserve (at least half of it), capped at CGPURE_PIDS_MAX. */
void cgpure_limits(uint64_t mem_total, uint64_t mem_avail, uint64_t task_limit,
		   struct cgpure_limits *ret);

/* An exec group's pids.max under a workload whose pids.max is workload_max: workload_max less
 * max(workload_max / 8, 32), or workload_max itself when that would leave the exec less than
 * the spare. */
uint64_t cgpure_exec_pids_max(uint64_t workload_max);

/* The number after key in text made of "key value" lines (cgroup.events, memory.events) or
 * "Key: value kB" lines (/proc/meminfo; the unit is applied: kB means 1024). key must match a
 * whole first word (with or without its ':'). 0, -ENOENT (no such line) or -EINVAL (not a
 * number); *ret is untouched on failure. */
int cgpure_field(const char *text, const char *key, uint64_t *ret);

/* The cgroup v2 path in text (the contents of /proc/PID/cgroup: a "0::/path" line) into buf of
 * size n. 0, -ENOENT (no v2 line: cgroup2 is not in use) or -ENAMETOOLONG. */
int cgpure_self_path(const char *text, char *buf, size_t n);

/* 1 when the space-separated word list (cgroup.controllers, cgroup.subtree_control) holds
 * word, else 0. */
int cgpure_has_word(const char *list, const char *word);
