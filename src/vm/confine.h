/* confine.h - namespaces for the processes capsem-vm starts, called in the child between fork
 * and exec (async-signal-safe). */
#pragma once

#include <sys/types.h>

/* A new, empty network namespace (only a loopback that is down). As a normal user (uid != 0)
 * it needs a user namespace first: one where the caller is root, mapped to uid and gid outside
 * (one id each; setgroups denied, as an unprivileged user namespace requires). 0 or -1
 * (errno). */
int confine_netns(uid_t uid, gid_t gid);

enum {
	CONFINE_NO_NEW_PRIVS = 1u << 0, /* PR_SET_NO_NEW_PRIVS */
	CONFINE_NETNS = 1u << 1,	/* an empty network namespace (confine_netns) */
};

/* fork + exec argv (PATH searched) as a helper of one VM: stdin /dev/null, stdout and stderr to
 * log_fd, pass_fd (or -1) as fd 3, its own session, PR_SET_PDEATHSIG(SIGKILL) so it never
 * outlives capsem-vm, a clean signal mask, and the confinement flags. 0 with the pid and a pidfd
 * (O_CLOEXEC; readable when the child exits), or -errno. */
int confine_spawn(char *const *argv, int log_fd, int pass_fd, unsigned flags, pid_t *ret_pid,
		  int *ret_pidfd);
