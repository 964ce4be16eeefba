/* spawn.h - start one exec command: process group, stdio pipes or a pty, environment, cwd. */
#pragma once

#include <sys/types.h>

#include "proto.h"

/* Environment every command starts from; PROTO_EXEC envp entries replace or extend it. */
#define SPAWN_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define SPAWN_DEFAULT_CWD "/root"
#define SPAWN_DEFAULT_TERM "xterm-256color"

/* The cwd of an exec that names none: SPAWN_DEFAULT_CWD unless the agent set another (the
 * workspace, when the VM has one). dir must live as long as the process. */
void spawn_set_default_cwd(const char *dir);

struct spawned {
	pid_t pid;  /* also the process group id and session id */
	int in_fd;  /* write end of the child's stdin: pipe, or the pty master (tty) */
	int out_fd; /* read end of the child's stdout: pipe, or a dup of the pty master (tty) */
	int err_fd; /* read end of the child's stderr pipe; -1 for tty execs */
};

/* Build the child's environment: defaults, then extra (the boot config's entries; may be NULL),
 * then m->envp, each entry replacing a same-named earlier one. *ret is a malloc'ed
 * NULL-terminated vector of pointers into static strings, extra and m (not copies): free only the
 * vector, and only while they live. 0 or -ENOMEM. */
int spawn_build_env(const struct proto_exec *m, char *const *extra, const char ***ret);

/* Fork and exec m (already validated by proto_exec_decode), its environment built by
 * spawn_build_env(m, extra_env). The child runs in a new session
 * (pid = pgid = sid) with default signal dispositions, an empty signal mask and oom_score_adj 0;
 * when cgroup_procs_fd >= 0 (an exec group's cgroup.procs, cgroup.h) it moves itself into that
 * group before anything else runs (failing that: "capsem: cannot enter the exec's cgroup" and
 * status 126). All returned fds
 * are O_CLOEXEC and O_NONBLOCK and owned by the caller; fds 0-2 must already be open (so no new
 * pipe lands there). Failures to exec in the child are
 * reported the way a shell does: "capsem: <cmd>: <error>" on its stderr and exit status 127
 * (not found) or 126 (any other exec or chdir error). Returns 0 or -errno (nothing started). */
int spawn_command(const struct proto_exec *m, char *const *extra_env, int cgroup_procs_fd,
		  struct spawned *ret);
