/* run.c - spawn build tools by argv (posix_spawn, no shell), wait on a pidfd with periodic
 * progress, capture bounded output.
 *
 * Trust boundary: the programs run are the host's own build tools and the busybox binary the user
 * pointed us at; their output is only logged, or captured with a hard size cap. Main thread of
 * capsem-builder; waits block it (the builder has nothing else to do meanwhile), but never by
 * sleeping: the wait is a poll() on the child's pidfd with the progress interval as timeout.
 */
#include "run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "strv.h"

extern char **environ;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int exit_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

static int wait_pid(pid_t pid, int *ret_status)
{
	int st;
	for (;;) {
		if (waitpid(pid, &st, 0) >= 0)
			break;
		if (errno != EINTR)
			return negative_errno();
	}
	*ret_status = exit_status(st);
	return 0;
}

/* Spawn argv with the given fds as stdin/stdout/stderr (-1 for stdin: /dev/null). */
static int spawn(char *const *argv, const char *cwd, char *const *envp, int in_fd, int out_fd,
		 int err_fd, pid_t *ret_pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, def;
	int r;

	if (!argv || !argv[0])
		return -EINVAL;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return -ENOMEM;
	if (posix_spawnattr_init(&attr) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return -ENOMEM;
	}
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = r ?: posix_spawnattr_setsigmask(&attr, &none);
	r = r ?: posix_spawnattr_setsigdefault(&attr, &def);
	if (in_fd >= 0)
		r = r ?: posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
	else
		r = r
			    ?: posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
								O_RDONLY, 0);
	r = r ?: posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
	r = r ?: posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
	if (cwd)
		r = r ?: posix_spawn_file_actions_addchdir_np(&fa, cwd);
	if (r == 0)
		r = posix_spawnp(ret_pid, argv[0], &fa, &attr, argv, envp ? envp : environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return r > 0 ? -r : r; /* the posix_spawn calls return 0 or a positive errno */
}

void run_last_line(int fd, char *buf, size_t n)
{
	char tail[1024];
	struct stat st;
	buf[0] = 0;
	if (n == 0 || fstat(fd, &st) < 0 || st.st_size <= 0)
		return;
	off_t off = st.st_size > (off_t)sizeof(tail) ? st.st_size - (off_t)sizeof(tail) : 0;
	ssize_t k = pread(fd, tail, (size_t)(st.st_size - off), off);
	if (k <= 0)
		return;
	size_t end = (size_t)k;
	while (end > 0 && (tail[end - 1] == '\n' || tail[end - 1] == '\r'))
		end--;
	size_t start = end;
	while (start > 0 && tail[start - 1] != '\n')
		start--;
	size_t len = MIN(end - start, n - 1);
	for (size_t i = 0; i < len; i++) {
		char c = tail[start + i];
		buf[i] = ((unsigned char)c < 0x20 || c == 0x7f) ? '?' : c;
	}
	buf[len] = 0;
	/* drop kbuild's leading indentation */
	size_t lead = strspn(buf, " \t?");
	memmove(buf, buf + lead, len - lead + 1);
}

int run_logged(char *const *argv, const char *cwd, char *const *envp, int log_fd, const char *what,
	       unsigned progress_s)
{
	pid_t pid;
	int status, r;
	double start = now_s();

	r = spawn(argv, cwd, envp, -1, log_fd, log_fd, &pid);
	if (r < 0)
		return r;
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0 && progress_s > 0) {
		struct pollfd pf = { .fd = pidfd, .events = POLLIN };
		for (;;) {
			int k = poll(&pf, 1, (int)progress_s * 1000);
			if (k < 0 && errno == EINTR)
				continue;
			if (k != 0)
				break; /* exited (or poll failed: fall back to a plain wait) */
			char last[120];
			run_last_line(log_fd, last, sizeof(last));
			log_info("%s: still building, %.0f s, last: %s", what, now_s() - start,
				 last);
		}
	}
	r = wait_pid(pid, &status);
	return r < 0 ? r : status;
}

int run_capture(char *const *argv, size_t max, char **ret_out)
{
	return run_capture_at(argv, NULL, -1, max, ret_out);
}

int run_capture_at(char *const *argv, const char *cwd, int err_fd, size_t max, char **ret_out)
{
	int p[2];
	pid_t pid;
	int status, r;

	_cleanup_close_ int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull < 0)
		return negative_errno();
	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	_cleanup_close_ int rd = p[0];
	_cleanup_close_ int wr = p[1];
	r = spawn(argv, cwd, NULL, -1, wr, err_fd >= 0 ? err_fd : devnull, &pid);
	if (r < 0)
		return r;
	wr = safe_close(wr); /* NOLINT(clang-analyzer-deadcode.DeadStores): its cleanup reads it */

	_cleanup_free_ char *out = malloc(max + 1);
	size_t n = 0;
	r = out ? 0 : -ENOMEM;
	while (r == 0) {
		if (n == max) {
			char c;
			ssize_t k = fd_read_some(rd, &c, 1);
			r = k < 0 ? (int)k : k > 0 ? -EFBIG : 0;
			break;
		}
		ssize_t k = fd_read_some(rd, out + n, max - n);
		if (k < 0)
			r = (int)k;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	if (r < 0)
		kill(pid, SIGKILL);
	int w = wait_pid(pid, &status);
	if (r < 0)
		return r;
	if (w < 0)
		return w;
	out[n] = 0;
	*ret_out = TAKE_PTR(out);
	return status;
}

void run_print_tail(const char *path, unsigned nlines)
{
	char tail[16384];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0)
		return;
	off_t off = st.st_size > (off_t)sizeof(tail) ? st.st_size - (off_t)sizeof(tail) : 0;
	ssize_t k = pread(fd, tail, (size_t)(st.st_size - off), off);
	if (k <= 0)
		return;
	size_t end = (size_t)k;
	while (end > 0 && tail[end - 1] == '\n')
		end--;
	size_t start = end;
	unsigned seen = 0;
	while (start > 0) {
		if (tail[start - 1] == '\n' && ++seen == nlines)
			break;
		start--;
	}
	fprintf(stderr, "  ");
	for (size_t i = start; i < end; i++) {
		fputc(tail[i], stderr);
		if (tail[i] == '\n')
			fprintf(stderr, "  ");
	}
	fputc('\n', stderr);
}

char **run_env_without(const char *const *drop)
{
	char **v = NULL;
	if (strv_push(&v, "LC_ALL=C") < 0) /* plain ASCII messages in the logs */
		return NULL;
	for (char **e = environ; e && *e; e++) {
		int keep = 1;
		for (const char *const *d = drop; keep && *d; d++) {
			size_t n = strlen(*d);
			if (strncmp(*e, *d, n) == 0 && (*e)[n] == '=')
				keep = 0;
		}
		if (keep && strv_push(&v, *e) < 0) {
			strv_free(v);
			return NULL;
		}
	}
	return v;
}
