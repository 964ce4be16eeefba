/* cgroup.h - the guest's cgroup v2 tree: the system side apart from a limited workload.
 *
 *   /sys/fs/cgroup/                 cgroup2, controllers +pids +memory for the children
 *   /sys/fs/cgroup/capsem/          init, the agent, exec session processes, the egress proxies
 *   /sys/fs/cgroup/workload/        memory.max, memory.swap.max, pids.max (cgpure.h)
 *   /sys/fs/cgroup/workload/exec-N  one exec's command and everything it starts
 *
 * capsem-init builds the tree (cgroup_setup) before it starts anything; the agent checks it is
 * there (cgroup_check) and its session processes make, fill, kill and remove one exec group each
 * (cgroup_exec_*). Trust boundary: none new (cgroupfs is the kernel's); the workload runs as root
 * and could rewrite its own limits: the limits protect the system side from runaway programs, not
 * from a deliberate attacker, who already owns the guest. Libc only; single-threaded callers.
 */
#pragma once

#include <stdint.h>

#include "cgpure.h"

#define CGROUP_MOUNT "/sys/fs/cgroup"
#define CGROUP_SYSTEM "capsem"
#define CGROUP_WORKLOAD "workload"
#define CGROUP_WORKLOAD_DIR CGROUP_MOUNT "/" CGROUP_WORKLOAD
#define CGROUP_EXEC_PREFIX "exec-"
/* With the cpu controller: the system side's weight against the workload's default 100 (each
 * exec group under the workload has 100 too, so execs share the workload's time evenly). */
#define CGROUP_SYSTEM_CPU_WEIGHT 1000u

/* capsem-init, before it forks anything: mount cgroup2 on CGROUP_MOUNT (a submount of /sys, so
 * it moves into the root image with /sys), enable +pids +memory (and +cpu when the kernel has
 * it, with CGROUP_SYSTEM_CPU_WEIGHT for the system group), create the system and workload
 * groups, move the caller into the system group and set the workload's limits (and enable the
 * controllers below it). 0 with *ret filled, or -errno: -EOPNOTSUPP when the kernel lacks
 * cgroup2 or one of the controllers (the boot goes on without limits). */
int cgroup_setup(struct cgpure_limits *ret);

/* The agent at start: 0 when the workload group exists and the caller is outside it, else
 * -errno (execs then run without cgroups). */
int cgroup_check(void);

/* The OOM killer's view of the system side and of exec commands (/proc/self/oom_score_adj,
 * inherited across fork and exec). */
#define CGROUP_OOM_ADJ_SYSTEM "-1000" /* never picked */
#define CGROUP_OOM_ADJ_WORKLOAD "0"
/* Set the calling process's oom_score_adj. Async-signal-safe (a child between fork and exec).
 * 0 or -errno. */
int cgroup_oom_score_adj(const char *value);
/* capsem-init, before it forks: the OOM killer never picks init or what it starts
 * (CGROUP_OOM_ADJ_SYSTEM, inherited) and logs one line per kill without the list of every task
 * (vm.oom_dump_tasks 0: under a fork bomb that list is thousands of lines, formatted for each of
 * hundreds of kills while the workload waits). 0 or the first -errno (both are tried). */
int cgroup_oom_setup(void);

/* The workload's kill switch, for power-off: SIGKILL to every process in it at once, forks in
 * flight included (cgroup.kill). 0 or -errno. */
int cgroup_workload_kill(void);

/* One exec's group, workload/exec-<id>, held by its session process. */
struct cgroup_exec {
	uint64_t id;   /* 0 = none */
	int dir_fd;    /* the group's directory */
	int procs_fd;  /* its cgroup.procs, open for writing: the child writes itself there */
	int events_fd; /* its cgroup.events: POLLPRI when "populated" changes */
};

#define CGROUP_EXEC_NONE                                               \
	{                                                              \
		.id = 0, .dir_fd = -1, .procs_fd = -1, .events_fd = -1 \
	}

/* Create workload/exec-<id> (id > 0) and open it, with pids.max leaving the other execs a share
 * of the workload's tasks (cgpure_exec_pids_max). oom_group: the OOM killer takes the whole
 * group when it picks one of its processes (memory.oom.group). 0 with *ret filled, or -errno
 * (nothing is left behind). */
int cgroup_exec_create(uint64_t id, int oom_group, struct cgroup_exec *ret);
/* In a freshly forked child: move the calling process into the group whose cgroup.procs is
 * procs_fd. Async-signal-safe. 0 or -errno. */
int cgroup_exec_enter(int procs_fd);
/* SIGKILL every process in the group, forks in flight included. 0 or -errno. */
int cgroup_exec_kill(const struct cgroup_exec *c);
/* 1 while the group has a live process, 0 when empty, -errno when it cannot be read. */
int cgroup_exec_populated(const struct cgroup_exec *c);
/* Processes of the group the OOM killer has killed so far (memory.events oom_kill); 0 when
 * unknown. */
uint64_t cgroup_exec_oom_kills(const struct cgroup_exec *c);
/* Close the group's fds (idempotent); the directory stays. */
void cgroup_exec_close(struct cgroup_exec *c);
/* Remove workload/exec-<id>: 0, -ENOENT (gone already), -EBUSY (processes left in it). */
int cgroup_exec_remove(uint64_t id);
/* "/sys/fs/cgroup/workload/exec-<id>/<file>" into buf of size n. */
void cgroup_exec_path(uint64_t id, const char *file, char *buf, size_t n);
/* The workload's memory.max in bytes; 0 when unknown or "max". */
uint64_t cgroup_workload_mem_max(void);
