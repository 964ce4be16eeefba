/* confine.c - spawning the processes capsem-vm starts inside their confinement (confine.h).
 *
 * confine_spawn forks; the child runs only async-signal-safe calls (open, dup2, write, close,
 * unshare, prctl, the Landlock syscall, exec) between fork and exec: no allocation, no stdio.
 * The cgroup's fds and the Landlock ruleset were made by the caller before the fork.
 *
 * Trust boundary: none crossed; it only narrows what the child (QEMU, virtiofsd) can reach.
 */
#include "confine.h"
#include "hostcg.h"
#include "landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Write s to path (the child's own /proc files). 0 or -1. */
static int write_str(const char *path, const char *s, size_t n)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t k = write(fd, s, n);
	close(fd);
	return k == (ssize_t)n ? 0 : -1;
}

/* "0 <id> 1\n" into buf, without stdio. */
static size_t id_map(char *buf, unsigned id)
{
	char digits[16];
	size_t n = 0, k = 0;
	do {
		digits[k++] = (char)('0' + id % 10);
		id /= 10;
	} while (id && k < sizeof(digits));
	buf[n++] = '0';
	buf[n++] = ' ';
	while (k > 0)
		buf[n++] = digits[--k];
	buf[n++] = ' ';
	buf[n++] = '1';
	buf[n++] = '\n'; /* a line for the kernel: not a C string */
	return n;
}

static int confine_userns(uid_t uid, gid_t gid)
{
	char map[40];
	if (unshare(CLONE_NEWUSER) < 0 || write_str("/proc/self/setgroups", "deny", 4) < 0 ||
	    write_str("/proc/self/uid_map", map, id_map(map, uid)) < 0 ||
	    write_str("/proc/self/gid_map", map, id_map(map, gid)) < 0)
		return -1;
	return 0;
}

int confine_netns(uid_t uid, gid_t gid)
{
	/* a user may make a network namespace only from inside a user namespace of its own */
	if (uid != 0 && confine_userns(uid, gid) < 0)
		return -1;
	return unshare(CLONE_NEWNET) < 0 ? -1 : 0;
}

int confine_spawn(char *const *argv, int log_fd, int pass_fd, const struct confine_opts *o,
		  pid_t *ret_pid, int *ret_pidfd)
{
	unsigned flags = o ? o->flags : 0;
	pid_t parent = getpid();
	uid_t uid = getuid();
	gid_t gid = getgid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		sigset_t none;
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
		    dup2(log_fd, STDERR_FILENO) < 0)
			_exit(127);
		/* fd 3; dup2 onto itself would keep its CLOEXEC */
		if (pass_fd >= 0 && (pass_fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(pass_fd, 3)) < 0)
			_exit(127);
		setsid();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (o && o->cg && hostcg_join(o->cg) < 0)
			_exit(126);
		if ((flags & CONFINE_NO_NEW_PRIVS) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			_exit(126);
		if ((flags & CONFINE_NETNS) && confine_netns(uid, gid) < 0)
			_exit(126);
		if (o && o->landlock_fd >= 0 && ll_restrict_self(o->landlock_fd) < 0)
			_exit(126);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv[0], argv);
		_exit(127);
	}
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		int r = -errno;
		kill(pid, SIGKILL);
		return r;
	}
	*ret_pid = pid;
	*ret_pidfd = pidfd;
	return 0;
}
