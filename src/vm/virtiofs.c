/* virtiofs.c - spawning the workspace's virtiofsd (virtiofs.h).
 *
 * virtiofsd runs with `-o sandbox=namespace` (its own mount, PID and network namespaces,
 * pivot_root into the shared directory, so it cannot name a host path outside it) and its
 * built-in seccomp filter; `-o cache=auto` (metadata cached for 1 s: a host-side change is
 * visible in the guest within that; a guest write reaches the host file at once, no writeback
 * cache); no xattrs, no POSIX locks passed to the host. capsem-vm creates the listening socket
 * and hands it over as fd 3 (`--fd=3`), so QEMU never races virtiofsd's start.
 *
 * Trust boundary: virtiofsd parses the guest's FUSE requests: it is guest-facing and confined
 * as said; capsem-vm only starts, watches and kills it. The child side runs between fork and
 * exec: async-signal-safe calls only.
 */
#include "virtiofs.h"

#include "confine.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "strv.h"

int virtiofs_find(char **ret)
{
	const char *env = getenv("CAPSEM_VIRTIOFSD");
	if (env && *env)
		return find_program(env, ret);
	if (access(VIRTIOFS_DEFAULT_BIN, X_OK) == 0) {
		*ret = strdup(VIRTIOFS_DEFAULT_BIN);
		return *ret ? 0 : -ENOMEM;
	}
	return find_program("virtiofsd", ret);
}

char **virtiofs_argv(const char *binary, const char *source)
{
	char **v = NULL;
	int r = strv_push(&v, binary);
	r |= strv_push(&v, "--fd=3");
	r |= strv_push(&v, "-o");
	r |= strv_pushf(&v, "source=%s", source);
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "cache=auto");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "sandbox=namespace");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "no_posix_lock");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "log_level=warn");
	if (r < 0) {
		strv_free(v);
		return NULL;
	}
	return v;
}

int virtiofs_spawn(char *const *argv, int listen_fd, int log_fd, pid_t *ret_pid, int *ret_pidfd)
{
	pid_t parent = getpid();
	uid_t uid = getuid();
	gid_t gid = getgid();
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
		    dup2(log_fd, STDERR_FILENO) < 0)
			_exit(127);
		/* fd 3, inherited; dup2 onto itself would keep its CLOEXEC */
		if (listen_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(listen_fd, 3) < 0)
			_exit(127);
		setsid();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (uid != 0 && confine_userns(uid, gid) < 0)
			_exit(126);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(argv[0], argv);
		_exit(127);
	}
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		int r = negative_errno();
		kill(pid, SIGKILL);
		return r;
	}
	*ret_pid = pid;
	*ret_pidfd = pidfd;
	return 0;
}
