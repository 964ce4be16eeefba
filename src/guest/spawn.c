/* spawn.c - fork and exec one command for an exec session.
 *
 * The command, its arguments, environment additions and cwd come from the host in a PROTO_EXEC
 * frame already bounded and validated by proto_exec_decode; here they are only passed to
 * execvp(3)/chdir(2), never interpreted (except by /bin/sh for PROTO_EXEC_SHELL, which is the
 * point). The command runs as the agent's user (root in the guest) in its own session and
 * process group, so signals reach everything it starts that stays in the group, and, when the
 * session made one, in its exec cgroup (cgroup.h), which the child enters before it execs: all
 * it starts stays there, whatever it does with sessions and process groups. The child also
 * drops the system side's OOM protection (oom_score_adj back to 0).
 * Runs in an exec session process (a child of the agent), which is single-threaded, so the
 * forked child may use ordinary libc calls before exec.
 */
#include "spawn.h"

#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "cgroup.h"
#include "fdutil.h"
#include "macro.h"

extern char **environ;

static const char *spawn_default_cwd = SPAWN_DEFAULT_CWD;

void spawn_set_default_cwd(const char *dir)
{
	spawn_default_cwd = dir;
}

#define SPAWN_PIPE_SIZE (256 * 1024)

static const char *const spawn_defaults[] = {
	/* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): "PATH=" SPAWN_DEFAULT_PATH is one string */
	"PATH=" SPAWN_DEFAULT_PATH,
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"SHELL=/bin/sh",
	"LANG=C.UTF-8",
};

static size_t env_key_len(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* Add kv to env (n entries), replacing an entry of the same name. */
static void env_set(const char **env, size_t *n, const char *kv)
{
	size_t k = env_key_len(kv), j;
	for (j = 0; j < *n; j++)
		if (env_key_len(env[j]) == k && memcmp(env[j], kv, k) == 0)
			break;
	env[j] = kv;
	if (j == *n)
		(*n)++;
}

int spawn_build_env(const struct proto_exec *m, char *const *extra, const char ***ret)
{
	size_t n = 0, n_extra = 0;
	while (extra && extra[n_extra])
		n_extra++;
	size_t max = ELEMENTSOF(spawn_defaults) + 1 + n_extra + m->envc + 1;
	const char **env = calloc(max, sizeof(char *));
	if (!env)
		return -ENOMEM;
	for (size_t i = 0; i < ELEMENTSOF(spawn_defaults); i++)
		env[n++] = spawn_defaults[i];
	if (m->flags & PROTO_EXEC_TTY)
		env[n++] = "TERM=" SPAWN_DEFAULT_TERM;
	for (size_t i = 0; i < n_extra; i++)
		if (strchr(extra[i], '=') && extra[i][0] != '=')
			env_set(env, &n, extra[i]);
	for (uint32_t i = 0; i < m->envc; i++)
		env_set(env, &n, m->envp[i]);
	env[n] = NULL;
	*ret = env;
	return 0;
}

/* The child: from fork to exec; never returns. The session process is single-threaded, so the
 * libc calls here (snprintf, strerror) are safe after fork. */
static _noreturn_ void spawn_child(const struct proto_exec *m, char *const *argv, const char **env,
				   int tty, int in_r, int out_w, int err_w, int cg_fd)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;
	char msg[512];
	const char *what;
	int e, n;

	/* ignored signals stay ignored across exec (the agent ignores SIGPIPE): reset them all */
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);

	if (setsid() < 0)
		_exit(126);
	if (tty) {
		/* in_r is the pty slave: it becomes the controlling terminal and all three stdio */
		if (ioctl(in_r, TIOCSCTTY, 0) < 0)
			_exit(126);
		out_w = err_w = in_r;
	}
	/* the caller guarantees these fds are >= 3, so dup2 never clobbers one still needed */
	if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
		_exit(126);
	/* out of the system side: into the workload, and the OOM killer's to pick */
	if (cg_fd >= 0 && (e = -cgroup_exec_enter(cg_fd)) > 0) {
		n = snprintf(msg, sizeof(msg), "capsem: cannot enter the exec's cgroup: %s\n",
			     strerror(e));
		if (n > 0)
			(void)!write(2, msg, MIN((size_t)n, sizeof(msg) - 1));
		_exit(126);
	}
	(void)cgroup_oom_score_adj(CGROUP_OOM_ADJ_WORKLOAD);

	if (m->cwd) {
		if (chdir(m->cwd) < 0) {
			e = errno;
			what = m->cwd;
			goto fail_cd;
		}
	} else if (chdir(spawn_default_cwd) < 0 && chdir(SPAWN_DEFAULT_CWD) < 0) {
		(void)!chdir("/");
	}

	environ = (char **)env;
	if (m->flags & PROTO_EXEC_SHELL) {
		execv("/bin/sh", argv);
		what = "/bin/sh";
	} else {
		execvp(argv[0], argv);
		what = argv[0];
	}
	e = errno;
	n = snprintf(msg, sizeof(msg), "capsem: %s: %s\n", what, strerror(e));
	if (n > 0)
		(void)!write(2, msg, MIN((size_t)n, sizeof(msg) - 1));
	_exit(e == ENOENT || e == ENOTDIR ? 127 : 126);

fail_cd:
	n = snprintf(msg, sizeof(msg), "capsem: cd: %s: %s\n", what, strerror(e));
	if (n > 0)
		(void)!write(2, msg, MIN((size_t)n, sizeof(msg) - 1));
	_exit(126);
}

/* argv for execv: the host's argv, or sh -c STRING sh ARGS... for PROTO_EXEC_SHELL (so the
 * extra arguments are $1, $2, ...). A vector of pointers into m. */
static int spawn_build_argv(const struct proto_exec *m, char ***ret)
{
	size_t n = 0;
	char **v = calloc((size_t)m->argc + 4, sizeof(char *));
	if (!v)
		return -ENOMEM;
	if (m->flags & PROTO_EXEC_SHELL) {
		v[n++] = (char *)"sh";
		v[n++] = (char *)"-c";
		v[n++] = m->argv[0];
		v[n++] = (char *)"sh";
		for (uint32_t i = 1; i < m->argc; i++)
			v[n++] = m->argv[i];
	} else {
		for (uint32_t i = 0; i < m->argc; i++)
			v[n++] = m->argv[i];
	}
	v[n] = NULL;
	*ret = v;
	return 0;
}

static void close_pair(int p[2])
{
	p[0] = safe_close(p[0]);
	p[1] = safe_close(p[1]);
}

/* A pty pair: the master (non-blocking) and its slave, both O_CLOEXEC, with the window size. */
static int spawn_openpty(const struct proto_exec *m, int *ret_master, int *ret_slave)
{
	struct winsize ws = {
		.ws_row = m->rows ? m->rows : 24,
		.ws_col = m->cols ? m->cols : 80,
	};
	_cleanup_close_ int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return negative_errno();
	if (unlockpt(master) < 0)
		return negative_errno();
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return negative_errno();
	int r = ioctl(master, TIOCSWINSZ, &ws) < 0 ? negative_errno() : fd_set_nonblock(master, 1);
	if (r < 0) {
		safe_close(slave);
		return r;
	}
	*ret_master = TAKE_FD(master);
	*ret_slave = slave;
	return 0;
}

int spawn_command(const struct proto_exec *m, char *const *extra_env, int cgroup_procs_fd,
		  struct spawned *ret)
{
	_cleanup_free_ const char **env = NULL;
	_cleanup_free_ char **argv = NULL;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	int tty = !!(m->flags & PROTO_EXEC_TTY);
	int r;

	r = spawn_build_env(m, extra_env, &env);
	if (r < 0)
		return r;
	r = spawn_build_argv(m, &argv);
	if (r < 0)
		return r;

	if (tty) {
		/* in = { slave, master }, out = { dup of master, -1 } */
		r = spawn_openpty(m, &in[1], &in[0]);
		if (r < 0)
			return r;
		out[0] = fcntl(in[1], F_DUPFD_CLOEXEC, 3);
		if (out[0] < 0) {
			r = negative_errno();
			goto fail;
		}
	} else {
		if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
		    pipe2(err, O_CLOEXEC) < 0) {
			r = negative_errno();
			goto fail;
		}
		/* bigger pipes: fewer wakeups for bulk streams; the default size is fine too */
		(void)fcntl(in[1], F_SETPIPE_SZ, SPAWN_PIPE_SIZE);
		(void)fcntl(out[0], F_SETPIPE_SZ, SPAWN_PIPE_SIZE);
		if ((r = fd_set_nonblock(in[1], 1)) < 0 || (r = fd_set_nonblock(out[0], 1)) < 0 ||
		    (r = fd_set_nonblock(err[0], 1)) < 0)
			goto fail;
	}

	pid_t pid = fork();
	if (pid < 0) {
		r = negative_errno();
		goto fail;
	}
	if (pid == 0)
		spawn_child(m, argv, env, tty, in[0], out[1], err[1], cgroup_procs_fd);

	in[0] = safe_close(in[0]);
	out[1] = safe_close(out[1]);
	err[1] = safe_close(err[1]);
	*ret = (struct spawned){ .pid = pid, .in_fd = in[1], .out_fd = out[0], .err_fd = err[0] };
	return 0;

fail:
	close_pair(in);
	close_pair(out);
	close_pair(err);
	return r;
}
