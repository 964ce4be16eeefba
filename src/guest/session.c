/* session.c - one exec session, in its own process forked by capsem-agent for each connection.
 *
 * Trust boundary: every byte on the socket comes from the host and is handled only through the
 * bounded frame reader and the proto decoders; all host-supplied numbers are checked (signal
 * 1..64, known frame types, exec flags and counts in proto_exec_decode). The command itself runs
 * as root in the guest: that is the product, not a breach.
 *
 * Data flow, all fds non-blocking, one poll(2) loop, no blocking call once the command runs:
 *
 *   host --STDIN frames--> rd (<= 1 frame) --> in (<= 1 MiB) --> child's stdin (pipe or pty)
 *   host <--frames-------- out (<= 512 KiB) <-- child's stdout/stderr (read only when out has
 *                                               room for one more maximal data frame)
 *
 * Backpressure is per direction: when `in` cannot take the STDIN frame at the head of rd we stop
 * reading the socket (the frame stays queued), and when `out` is full we stop reading the child.
 * Neither direction ever waits for the other, so `cat` fed and drained at full speed cannot
 * deadlock. The command's exit is seen through a signalfd for SIGCHLD (this process has exactly
 * one child). After it is reaped, what is already in its stdout/stderr is drained without waiting
 * (until EAGAIN or EOF: background grandchildren holding the pipe do not delay the EXIT), then
 * PROTO_EXIT is sent and the socket is shut down.
 *
 * The command runs in its own cgroup, workload/exec-<id> (cgroup.h; id from the agent), made here
 * before the fork and entered by the child before it execs; this process stays on the system side,
 * so it can fork and serve the connection however saturated the workload is. What ends with the
 * exec (docs/PROTOCOL.md, "Exec sessions"): a timeout, the host closing the connection or a
 * protocol violation kill the whole cgroup (cgroup.kill: setsid'ed daemons and fork bombs too);
 * so does the end of a command that had a timeout (a bounded job leaves nothing behind). The EXIT
 * then waits (at most SESSION_CG_WAIT_MS) until the group is empty, so whatever the host does
 * next finds it gone, and the group is removed. An exec without a timeout that ends normally
 * leaves what it started in the background running, like `docker exec`: its group stays until
 * they exit and the agent removes it then. When the OOM killer killed one of the exec's processes
 * the EXIT carries PROTO_EXIT_OOM and a line on the command's stderr says so. Without cgroups
 * (cgroup_check failed in the agent) only the process group is killed, as before.
 */
#include "session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>

#include "cgroup.h"
#include "fdutil.h"
#include "frameio.h"
#include "log.h"
#include "macro.h"
#include "proto.h"
#include "spawn.h"

#define SESSION_OUT_CAP (512u * 1024u)
#define SESSION_IN_CAP PROTO_MAX_PAYLOAD /* any STDIN frame fits an empty buffer */
#define SESSION_LINGER_MS 2000
#define SESSION_SIG_MAX 64
/* for a killed cgroup to empty (thousands of tasks under TCG take seconds); below the 30 s the
 * host waits past a timeout for the EXIT (src/cli/relay.c, src/mcp/mcptools.c) */
#define SESSION_CG_WAIT_MS 20000
#define SESSION_EXIT_ROOM 1024u /* room in `out` for the EXIT frame and the OOM notice */

struct session {
	int sock;
	struct frame_reader rd;
	struct buf out; /* frames queued for the host */
	struct buf in;	/* bytes queued for the child's stdin */
	struct proto_exec *exec;
	char *const *boot_env;
	struct spawned child;
	int sig_fd;
	int tty;
	int stdin_eof; /* host sent an empty STDIN (pipes): close the child's stdin once drained */
	int blocked;   /* the frame at the head of rd waits for room in `in` */
	int sock_eof;  /* host closed its side */
	int exited;    /* child reaped; status and ru are valid */
	int timed_out; /* we SIGKILLed the group at the deadline */
	int exit_queued;       /* PROTO_EXIT is in out */
	struct cgroup_exec cg; /* the command's cgroup; cg.id 0 = none */
	int cg_killed;	       /* cgroup.kill written */
	int cg_busy;	       /* killed, not seen empty yet */
	uint64_t cg_wait_end;  /* CLOCK_MONOTONIC usec: stop waiting for it to empty */
	int status;
	struct rusage ru;
	uint64_t t_start, t_end, deadline; /* CLOCK_MONOTONIC, microseconds; deadline 0 = none */
};

/* one data frame's worth of child output; the session process is single-threaded */
static uint8_t session_chunk[PROTO_MAX_DATA];

static uint64_t mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t tv_usec(const struct timeval *tv)
{
	return (uint64_t)tv->tv_sec * 1000000u + (uint64_t)tv->tv_usec;
}

static void session_init(struct session *s, int fd)
{
	*s = (struct session){
		.sock = fd,
		.sig_fd = -1,
		.child = { .pid = 0, .in_fd = -1, .out_fd = -1, .err_fd = -1 },
		.cg = CGROUP_EXEC_NONE,
	};
	frame_reader_init(&s->rd);
	buf_init(&s->out, SESSION_OUT_CAP);
	buf_init(&s->in, SESSION_IN_CAP);
}

static void session_done(struct session *s)
{
	s->sock = safe_close(s->sock);
	s->sig_fd = safe_close(s->sig_fd);
	s->child.in_fd = safe_close(s->child.in_fd);
	s->child.out_fd = safe_close(s->child.out_fd);
	s->child.err_fd = safe_close(s->child.err_fd);
	cgroup_exec_close(&s->cg);
	frame_reader_done(&s->rd);
	buf_done(&s->out, 0);
	buf_done(&s->in, 0);
	proto_exec_free(s->exec);
	s->exec = NULL;
}

static int queue_error(struct session *s, int err, const char *fmt, ...) _printf_(3, 4);
static int queue_error(struct session *s, int err, const char *fmt, ...)
{
	struct proto_error e = { .code = err };
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof(e.message), fmt, ap);
	va_end(ap);
	log_debug("exec rejected: %s", e.message);
	return proto_error_encode(&e, &s->out);
}

int session_reject(int fd, int err, const char *msg)
{
	struct proto_error e = { .code = err };
	struct buf b;
	int r;

	snprintf(e.message, sizeof(e.message), "%s", msg);
	buf_init(&b, PROTO_HDR_SIZE + 8 + PROTO_MSG_MAX);
	r = proto_error_encode(&e, &b);
	if (r == 0 && send(fd, buf_head(&b), buf_len(&b), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		r = negative_errno();
	buf_done(&b, 0);
	return r;
}

/* After the last frame: flush out (waiting up to the linger time), shut down our side, and
 * wait (bounded) for the host to close so nothing queued is lost to an early close. 0 or -errno
 * when the queued frames could not be delivered. */
static int session_finish(struct session *s)
{
	uint64_t end = mono_usec() + SESSION_LINGER_MS * 1000u;
	int r;

	while ((r = buf_flush_fd(&s->out, s->sock)) == -EAGAIN) {
		struct pollfd p = { .fd = s->sock, .events = POLLOUT };
		uint64_t now = mono_usec();
		if (now >= end)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)((end - now + 999) / 1000)) < 0 && errno != EINTR)
			return negative_errno();
	}
	if (r < 0)
		return r;
	if (shutdown(s->sock, SHUT_WR) < 0)
		return 0;
	for (;;) {
		struct pollfd p = { .fd = s->sock, .events = POLLIN };
		uint64_t now = mono_usec();
		if (now >= end)
			return 0;
		if (poll(&p, 1, (int)((end - now + 999) / 1000)) < 0 && errno != EINTR)
			return 0;
		ssize_t k = fd_read_some(s->sock, session_chunk, sizeof(session_chunk));
		if (k == 0 || (k < 0 && k != -EAGAIN))
			return 0;
	}
}

/* Wait (blocking) for the first frame, which must be a valid PROTO_EXEC. 0, or -errno after
 * queueing an ERROR frame (-EBADMSG/-EPROTO), or -ECONNRESET when the host left first. */
static int session_read_exec(struct session *s)
{
	struct frame f;
	int r;

	for (;;) {
		r = frame_reader_peek(&s->rd, &f);
		if (r < 0) {
			queue_error(s, EMSGSIZE, "frame longer than %u bytes", PROTO_MAX_PAYLOAD);
			return -EMSGSIZE;
		}
		if (r > 0)
			break;
		ssize_t k = frame_reader_fill(&s->rd, s->sock);
		if (k == 0)
			return -ECONNRESET;
		if (k == -EAGAIN) {
			struct pollfd p = { .fd = s->sock, .events = POLLIN };
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return negative_errno();
		} else if (k < 0) {
			return (int)k;
		}
	}
	if (f.type != PROTO_EXEC) {
		queue_error(s, EPROTO, "expected EXEC, got frame type %u", f.type);
		return -EPROTO;
	}
	r = proto_exec_decode(f.payload, f.len, &s->exec);
	if (r < 0) {
		queue_error(s, r == -ENOMEM ? ENOMEM : EBADMSG, "malformed EXEC frame");
		return r;
	}
	frame_reader_consume(&s->rd, &f);
	return 0;
}

/* Signal the command's process group. Right after fork the child may not have called setsid()
 * yet, so the group does not exist (ESRCH): it then has no children either, so signalling the
 * child itself is the same thing. */
static void session_kill(struct session *s, int sig)
{
	if (s->child.pid <= 0 || s->exited)
		return;
	if (kill(-s->child.pid, sig) < 0 && errno == ESRCH)
		(void)kill(s->child.pid, sig);
}

/* Kill everything the exec started: its cgroup (atomically, forks in flight included) and, for
 * a command not reaped yet, its process group (the only means without a cgroup). */
static void session_kill_all(struct session *s)
{
	session_kill(s, SIGKILL);
	if (s->cg.dir_fd < 0 || s->cg_killed)
		return;
	int r = cgroup_exec_kill(&s->cg);
	if (r < 0) {
		log_warn_errno(r, "cannot kill the cgroup of exec %llu",
			       (unsigned long long)s->cg.id);
		return;
	}
	s->cg_killed = 1;
	s->cg_busy = 1;
	s->cg_wait_end = mono_usec() + SESSION_CG_WAIT_MS * 1000u;
}

/* Is the killed cgroup empty yet? Clears cg_busy when it is, cannot be read, or the wait is
 * over. */
static void session_cg_check(struct session *s)
{
	if (!s->cg_busy)
		return;
	int r = cgroup_exec_populated(&s->cg);
	if (r <= 0) {
		s->cg_busy = 0;
		return;
	}
	if (mono_usec() >= s->cg_wait_end) {
		log_warn("exec %llu: its cgroup is not empty %u ms after cgroup.kill",
			 (unsigned long long)s->cg.id, SESSION_CG_WAIT_MS);
		s->cg_busy = 0;
	}
}

/* Blocking: wait until the killed cgroup is empty (bounded by cg_wait_end). */
static void session_cg_wait(struct session *s)
{
	for (session_cg_check(s); s->cg_busy; session_cg_check(s)) {
		struct pollfd p = { .fd = s->cg.events_fd, .events = POLLPRI };
		uint64_t now = mono_usec();
		int ms = now < s->cg_wait_end ? (int)((s->cg_wait_end - now + 999) / 1000) : 0;
		if (poll(&p, 1, ms) < 0 && errno != EINTR)
			break;
	}
}

/* The exec is over: remove its cgroup unless something it left running is still in it (an
 * exec without a timeout; the agent removes the group once it is empty). */
static void session_cg_remove(struct session *s)
{
	uint64_t id = s->cg.id;
	if (!id)
		return;
	cgroup_exec_close(&s->cg);
	s->cg.id = 0;
	int r = cgroup_exec_remove(id);
	if (r == -EBUSY)
		log_debug("exec %llu: processes left in its cgroup keep it",
			  (unsigned long long)id);
	else if (r < 0 && r != -ENOENT)
		log_debug_errno(r, "cannot remove the cgroup of exec %llu", (unsigned long long)id);
}

static void stdin_close(struct session *s)
{
	s->child.in_fd = safe_close(s->child.in_fd);
	buf_consume(&s->in, buf_len(&s->in));
}

/* Reap the child if it has exited. Drains the signalfd first. */
static void session_reap(struct session *s)
{
	struct signalfd_siginfo si;
	while (read(s->sig_fd, &si, sizeof(si)) == sizeof(si))
		;
	for (;;) {
		pid_t p = wait4(s->child.pid, &s->status, WNOHANG, &s->ru);
		if (p < 0 && errno == EINTR)
			continue;
		if (p == s->child.pid) {
			s->exited = 1;
			s->t_end = mono_usec();
			stdin_close(s); /* nothing will read it any more */
		}
		return;
	}
}

/* Push queued stdin bytes to the child. A dead reader (EPIPE, EIO) closes stdin for good. */
static void stdin_pump(struct session *s)
{
	while (s->child.in_fd >= 0 && buf_len(&s->in) > 0) {
		ssize_t k = write(s->child.in_fd, buf_head(&s->in), buf_len(&s->in));
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				stdin_close(s);
			return;
		}
		buf_consume(&s->in, (size_t)k);
	}
	if (s->child.in_fd >= 0 && s->stdin_eof && buf_len(&s->in) == 0)
		stdin_close(s);
}

/* Handle one frame from the host. 1 = consumed, 0 = cannot be taken yet (stdin full), or
 * -EPROTO for a malformed or misdirected frame. */
static int session_frame(struct session *s, const struct frame *f)
{
	uint32_t sig;
	uint16_t rows, cols;

	switch (f->type) {
	case PROTO_STDIN:
		if (s->child.in_fd < 0 || s->stdin_eof)
			return 1; /* stdin closed or child gone: discard */
		if (f->len == 0) {
			if (s->tty) {
				/* a pty has no half-close: send the terminal's EOF character */
				struct termios t;
				uint8_t c = 4; /* ^D */
				if (tcgetattr(s->child.in_fd, &t) == 0 && t.c_cc[VEOF])
					c = t.c_cc[VEOF];
				if (buf_room(&s->in) < 1)
					return 0;
				(void)buf_append(&s->in, &c, 1);
			} else {
				s->stdin_eof = 1;
			}
			stdin_pump(s);
			return 1;
		}
		if (buf_room(&s->in) < f->len)
			return 0;
		if (buf_append(&s->in, f->payload, f->len) < 0)
			return 0; /* ENOMEM: retry later */
		stdin_pump(s);
		return 1;
	case PROTO_SIGNAL:
		if (proto_u32_decode(f->payload, f->len, &sig) < 0)
			return -EPROTO;
		if (sig < 1 || sig > SESSION_SIG_MAX) {
			log_debug("ignoring signal %u from the host", sig);
			return 1;
		}
		session_kill(s, (int)sig);
		return 1;
	case PROTO_WINSIZE:
		if (proto_winsize_decode(f->payload, f->len, &rows, &cols) < 0)
			return -EPROTO;
		if (s->tty && s->child.in_fd >= 0) {
			struct winsize ws = { .ws_row = rows, .ws_col = cols };
			(void)ioctl(s->child.in_fd, TIOCSWINSZ, &ws);
		}
		return 1;
	case PROTO_HELLO:
	case PROTO_BOOT_CONFIG:
	case PROTO_SHUTDOWN:
	case PROTO_EXEC:
	case PROTO_STARTED:
	case PROTO_STDOUT:
	case PROTO_STDERR:
	case PROTO_EXIT:
	case PROTO_ERROR:
		log_debug("unexpected frame type %u in an exec session", f->type);
		return -EPROTO;
	default:
		return 1; /* unknown types are skipped (forward compatibility) */
	}
}

static int session_frames(struct session *s)
{
	struct frame f;
	s->blocked = 0;
	for (;;) {
		int r = frame_reader_peek(&s->rd, &f);
		if (r == 0)
			return 0;
		if (r < 0)
			return -EPROTO;
		r = session_frame(s, &f);
		if (r < 0)
			return r;
		if (r == 0) {
			s->blocked = 1;
			return 0;
		}
		frame_reader_consume(&s->rd, &f);
	}
}

/* One read of child output into one data frame. 1 = data, 0 = fd closed (EOF, EIO from a pty
 * whose slave is gone, or an error), -EAGAIN = nothing now. */
static int output_read(struct session *s, int *fd, uint16_t type)
{
	ssize_t k = fd_read_some(*fd, session_chunk, sizeof(session_chunk));
	if (k == -EAGAIN)
		return -EAGAIN;
	if (k <= 0) {
		*fd = safe_close(*fd);
		return 0;
	}
	/* the caller checked the room; a failure here could only be ENOMEM */
	if (proto_frame_append(&s->out, type, session_chunk, (size_t)k) < 0) {
		*fd = safe_close(*fd);
		return 0;
	}
	return 1;
}

static int out_has_room(const struct session *s)
{
	return buf_room(&s->out) >= PROTO_HDR_SIZE + PROTO_MAX_DATA;
}

/* After the child exited: take what is in its pipes now, without waiting for more. */
static void output_drain(struct session *s)
{
	int *fds[2] = { &s->child.out_fd, &s->child.err_fd };
	uint16_t types[2] = { PROTO_STDOUT, PROTO_STDERR };
	for (int i = 0; i < 2; i++) {
		while (*fds[i] >= 0 && out_has_room(s)) {
			if (output_read(s, fds[i], types[i]) == -EAGAIN)
				*fds[i] = safe_close(*fds[i]);
		}
	}
}

/* The OOM killer took processes of this exec: say so in the output (stderr, or the terminal) and
 * in the EXIT. A pipe exec's group has memory.oom.group (the kernel then counts the victim
 * twice), a tty exec's does not. */
static int queue_oom_notice(struct session *s, uint64_t kills, struct proto_exit *e)
{
	char line[256];
	unsigned long long max = cgroup_workload_mem_max() >> 20;
	int n;
	if (s->tty)
		n = snprintf(line, sizeof(line),
			     "capsem: out of memory: the kernel killed %llu process%s of this "
			     "session (the workload's memory limit is %llu MiB)\r\n",
			     (unsigned long long)kills, kills == 1 ? "" : "es", max);
	else
		n = snprintf(line, sizeof(line),
			     "capsem: out of memory: the kernel killed this command and all it "
			     "started (the workload's memory limit is %llu MiB)\n",
			     max);
	e->flags |= PROTO_EXIT_OOM;
	if (n <= 0)
		return 0;
	return proto_frame_append(&s->out, s->tty ? PROTO_STDOUT : PROTO_STDERR, line,
				  MIN((size_t)n, sizeof(line) - 1));
}

static int queue_exit(struct session *s)
{
	uint64_t kills = s->cg.dir_fd >= 0 ? cgroup_exec_oom_kills(&s->cg) : 0;
	int r;
	struct proto_exit e = {
		.wall_us = s->t_end - s->t_start,
		.utime_us = tv_usec(&s->ru.ru_utime),
		.stime_us = tv_usec(&s->ru.ru_stime),
		.maxrss_kb = s->ru.ru_maxrss > 0 ? (uint64_t)s->ru.ru_maxrss : 0,
	};
	if (s->timed_out) {
		e.kind = PROTO_EXIT_TIMEOUT;
		e.code = SIGKILL;
	} else if (WIFSIGNALED(s->status)) {
		e.kind = PROTO_EXIT_SIGNAL;
		e.code = WTERMSIG(s->status);
	} else {
		e.kind = PROTO_EXIT_CODE;
		e.code = WEXITSTATUS(s->status);
	}
	if (kills) {
		r = queue_oom_notice(s, kills, &e);
		if (r < 0)
			return r;
	}
	return proto_exit_encode(&e, &s->out);
}

enum { P_SOCK, P_SIG, P_IN, P_OUT, P_ERR, P_CG, P_N };

/* The command is running: relay until EXIT is flushed (0) or the host is gone / misbehaves
 * (-errno; the caller kills the group). */
static int session_loop(struct session *s)
{
	for (;;) {
		struct pollfd p[P_N];
		int r, timeout = -1;

		r = session_frames(s);
		if (r < 0)
			return r;
		stdin_pump(s);
		/* a command with a timeout takes everything it started with it */
		if (s->exited && s->deadline && !s->cg_killed)
			session_kill_all(s);
		session_cg_check(s);
		if (s->exited)
			output_drain(s);
		if (s->exited && s->child.out_fd < 0 && s->child.err_fd < 0 && !s->cg_busy &&
		    !s->exit_queued && buf_room(&s->out) >= SESSION_EXIT_ROOM) {
			r = queue_exit(s);
			if (r < 0)
				return r;
			s->exit_queued = 1;
		}
		r = buf_flush_fd(&s->out, s->sock);
		if (r < 0 && r != -EAGAIN)
			return r;
		if (s->exit_queued)
			return 0; /* session_finish flushes the rest */
		if (s->sock_eof)
			return -ECONNRESET;

		uint64_t now = mono_usec();
		if (!s->exited && !s->timed_out && s->deadline) {
			if (now >= s->deadline) {
				session_kill_all(s);
				s->timed_out = 1;
			} else {
				timeout = (int)MIN((s->deadline - now + 999) / 1000,
						   (uint64_t)INT32_MAX);
			}
		}

		if (s->cg_busy) {
			uint64_t left = now < s->cg_wait_end ? s->cg_wait_end - now : 0;
			int ms = (int)MIN((left + 999) / 1000, (uint64_t)INT32_MAX);
			if (timeout < 0 || ms < timeout)
				timeout = ms;
		}

		int room = out_has_room(s) && !s->exited;
		p[P_SOCK] = (struct pollfd){ .fd = s->sock,
					     .events = (short)((s->blocked ? 0 : POLLIN) |
							       (buf_len(&s->out) ? POLLOUT : 0)) };
		p[P_SIG] = (struct pollfd){ .fd = s->exited ? -1 : s->sig_fd, .events = POLLIN };
		p[P_IN] = (struct pollfd){ .fd = buf_len(&s->in) ? s->child.in_fd : -1,
					   .events = POLLOUT };
		p[P_OUT] = (struct pollfd){ .fd = room ? s->child.out_fd : -1, .events = POLLIN };
		p[P_ERR] = (struct pollfd){ .fd = room ? s->child.err_fd : -1, .events = POLLIN };
		p[P_CG] = (struct pollfd){ .fd = s->cg_busy ? s->cg.events_fd : -1,
					   .events = POLLPRI };

		if (poll(p, P_N, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (p[P_SOCK].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (s->blocked)
				return -ECONNRESET; /* hung up while we were not reading */
			ssize_t k = frame_reader_fill(&s->rd, s->sock);
			if (k == 0)
				s->sock_eof = 1;
			else if (k < 0 && k != -EAGAIN)
				return (int)k;
		}
		if (p[P_SIG].revents)
			session_reap(s);
		if (p[P_OUT].revents)
			(void)output_read(s, &s->child.out_fd, PROTO_STDOUT);
		if (p[P_ERR].revents)
			(void)output_read(s, &s->child.err_fd, PROTO_STDERR);
	}
}

static int session_start(struct session *s, uint64_t exec_id)
{
	sigset_t chld;
	int r;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
		return negative_errno();
	s->sig_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->sig_fd < 0)
		return negative_errno();

	s->tty = !!(s->exec->flags & PROTO_EXEC_TTY);
	if (exec_id) {
		/* a batch command is one unit for the OOM killer; an interactive shell survives
		 * the death of the program that ate the memory */
		r = cgroup_exec_create(exec_id, !s->tty, &s->cg);
		if (r < 0) {
			queue_error(s, -r, "cannot create the exec's cgroup: %s", strerror(-r));
			return r;
		}
	}
	s->t_start = mono_usec();
	if (s->exec->timeout_ms)
		s->deadline = s->t_start + (uint64_t)s->exec->timeout_ms * 1000u;
	r = spawn_command(s->exec, s->boot_env, s->cg.procs_fd, &s->child);
	if (r < 0)
		return r;
	return proto_u32_encode(PROTO_STARTED, (uint32_t)s->child.pid, &s->out);
}

int session_run(int fd, char *const *boot_env, uint64_t exec_id)
{
	struct session s;
	int r;

	session_init(&s, fd);
	s.boot_env = boot_env;
	r = fd_set_nonblock(fd, 1);
	if (r < 0)
		goto out;
	r = session_read_exec(&s);
	if (r < 0) {
		if (buf_len(&s.out) > 0 && session_finish(&s) == 0)
			r = 0; /* the host got its ERROR */
		goto out;
	}
	r = session_start(&s, exec_id);
	if (r < 0) {
		if (s.child.pid <= 0) {
			if (buf_len(&s.out) == 0)
				queue_error(&s, -r, "cannot start %s: %s", s.exec->argv[0],
					    strerror(-r));
			if (session_finish(&s) == 0)
				r = 0;
			goto out;
		}
	} else {
		r = session_loop(&s);
	}
	if (r < 0) {
		log_debug_errno(r, "exec session aborted");
		session_kill_all(&s);
		while (s.child.pid > 0 && !s.exited) {
			if (waitpid(s.child.pid, NULL, 0) == s.child.pid || errno != EINTR)
				s.exited = 1;
		}
		session_cg_wait(&s);
		goto out;
	}
	session_cg_remove(&s);
	r = session_finish(&s);
out:
	session_cg_remove(&s);
	session_done(&s);
	return r;
}
