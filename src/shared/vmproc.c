/* vmproc.c - capsem-vm as a child process. Caller's thread, blocking with poll(2). The events are
 * produced by our own supervisor, but are still parsed with a cap on the line length. */
#include "vmproc.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "fdutil.h"
#include "macro.h"
#include "strv.h"

#define VMPROC_LINE_MAX (64u * 1024u)

extern char **environ;

int vmproc_spawn(const char *vm_bin, char *const *args, struct vmproc **ret)
{
	int sp[2];
	_cleanup_strv_free_ char **argv = NULL;
	int r = strv_push(&argv, vm_bin);
	r |= strv_push(&argv, "--ipc-fd");
	r |= strv_push(&argv, "3");
	for (size_t i = 0; args && args[i]; i++)
		r |= strv_push(&argv, args[i]);
	if (r < 0)
		return -ENOMEM;
	struct vmproc *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		free(p);
		return negative_errno();
	}
	pid_t pid = fork();
	if (pid < 0) {
		r = negative_errno();
		safe_close(sp[0]);
		safe_close(sp[1]);
		free(p);
		return r;
	}
	if (pid == 0) {
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		setsid();
		if (dup2(sp[1], 3) < 0)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	safe_close(sp[1]);
	p->pid = pid;
	p->ipc_fd = sp[0];
	buf_init(&p->in, VMPROC_LINE_MAX);
	*ret = p;
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vmproc_read_event(struct vmproc *p, int timeout_ms, int extra_fd, json_t **ret_event)
{
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
	if (p->ipc_fd < 0)
		return 0;
	for (;;) {
		const uint8_t *nl = memchr(buf_head(&p->in), '\n', buf_len(&p->in));
		if (nl) {
			size_t n = (size_t)(nl - buf_head(&p->in));
			json_t *ev = json_loadb((const char *)buf_head(&p->in), n, 0, NULL);
			buf_consume(&p->in, n + 1);
			if (!ev)
				return -EBADMSG;
			*ret_event = ev;
			return 1;
		}
		struct pollfd pf[2] = { { .fd = p->ipc_fd, .events = POLLIN },
					{ .fd = extra_fd, .events = POLLIN } };
		int wait = deadline < 0 ? -1 : (int)MAX(deadline - mono_ms(), (int64_t)0);
		int k = poll(pf, extra_fd >= 0 ? 2 : 1, wait);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return negative_errno();
		if (k == 0)
			return -ETIMEDOUT;
		if (extra_fd >= 0 && pf[1].revents)
			return -EINTR;
		uint8_t *dst = buf_reserve(&p->in, 4096);
		if (!dst)
			return -ENOBUFS;
		ssize_t got = fd_read_some(p->ipc_fd, dst, 4096);
		if (got < 0)
			return (int)got;
		if (got == 0)
			return 0;
		buf_commit(&p->in, (size_t)got);
	}
}

int vmproc_stop(struct vmproc *p, int timeout_ms)
{
	static const char cmd[] = "{\"cmd\":\"stop\"}\n";
	int st = 0;
	if (p->pid <= 0)
		return 0;
	if (p->ipc_fd >= 0)
		(void)fd_write_all(p->ipc_fd, cmd, sizeof(cmd) - 1);
	int64_t deadline = mono_ms() + timeout_ms;
	/* wait for the supervisor to close its end (it does so as its last act) */
	while (p->ipc_fd >= 0) {
		json_t *ev = NULL;
		int64_t left = deadline - mono_ms();
		if (left <= 0)
			break;
		int r = vmproc_read_event(p, (int)left, -1, &ev);
		json_decref(ev);
		if (r <= 0 && r != -EBADMSG)
			break;
	}
	/* then for the process itself, through a pidfd: no polling with sleeps */
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (pidfd >= 0) {
		struct pollfd pf = { .fd = pidfd, .events = POLLIN };
		int64_t left = MAX(deadline - mono_ms(), (int64_t)0);
		while (poll(&pf, 1, (int)left) < 0 && errno == EINTR)
			;
	}
	if (waitpid(p->pid, &st, WNOHANG) != p->pid) {
		kill(p->pid, SIGKILL);
		while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	p->pid = 0;
	p->ipc_fd = safe_close(p->ipc_fd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void vmproc_free(struct vmproc *p)
{
	if (!p)
		return;
	if (p->pid > 0)
		vmproc_stop(p, 15000);
	safe_close(p->ipc_fd);
	buf_done(&p->in, 0);
	json_decref(p->ready);
	free(p);
}

char *find_helper_binary(const char *name, const char *env_override, const char *subdir)
{
	char self[PATH_MAX], *p = NULL;
	const char *e = env_override ? getenv(env_override) : NULL;
	if (e && *e)
		return strdup(e);
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			if (asprintf(&p, "%s/%s", self, name) >= 0 && access(p, X_OK) == 0)
				return p;
			free(p);
			p = NULL;
			if (subdir && asprintf(&p, "%s/../%s/%s", self, subdir, name) >= 0 &&
			    access(p, X_OK) == 0)
				return p;
			free(p);
			p = NULL;
		}
	}
	if (asprintf(&p, "%s/%s", CAPSEM_LIBEXECDIR, name) >= 0 && access(p, X_OK) == 0)
		return p;
	free(p);
	return NULL;
}
