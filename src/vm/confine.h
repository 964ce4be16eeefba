/* confine.h - spawning the processes capsem-vm starts (QEMU, virtiofsd) inside their
 * confinement: namespaces, no new privileges, a cgroup, a Landlock ruleset. Everything that can
 * fail or allocate is prepared by the caller; the child between fork and exec only makes
 * async-signal-safe calls. */
#pragma once

#include <sys/types.h>

struct hostcg;

/* A new, empty network namespace (only a loopback that is down). As a normal user (uid != 0)
 * it needs a user namespace first: one where the caller is root, mapped to uid and gid outside
 * (one id each; setgroups denied, as an unprivileged user namespace requires). 0 or -1
 * (errno). */
int confine_netns(uid_t uid, gid_t gid);

enum {
	CONFINE_NO_NEW_PRIVS = 1u << 0, /* PR_SET_NO_NEW_PRIVS */
	CONFINE_NETNS = 1u << 1,	/* an empty network namespace (confine_netns) */
};

struct confine_opts {
	unsigned flags;		 /* CONFINE_* */
	int landlock_fd;	 /* a Landlock ruleset (landlock.h) enforced last, or -1 */
	const struct hostcg *cg; /* a cgroup the child joins first, or NULL */
};

/* fork + exec argv (PATH searched) as a helper of one VM: stdin /dev/null, stdout and stderr to
 * log_fd, pass_fd (or -1) as fd 3, its own session, PR_SET_PDEATHSIG(SIGKILL) so it never
 * outlives capsem-vm, a clean signal mask; then, in this order, the cgroup, no new privileges,
 * the network namespace and the Landlock ruleset of o (NULL: none). A step that fails ends the
 * child with status 126 before exec. 0 with the pid and a pidfd (O_CLOEXEC; readable when the
 * child exits), or -errno. */
int confine_spawn(char *const *argv, int log_fd, int pass_fd, const struct confine_opts *o,
		  pid_t *ret_pid, int *ret_pidfd);
