/* relay.c - the exec session relay shared by `capsem run`, `exec` and `shell`.
 *
 * stdin -> STDIN frames, STDOUT/STDERR frames -> our fds, signals -> SIGNAL frames, SIGWINCH ->
 * WINSIZE frames, EXIT -> our exit status. The frames come from the guest (directly, or relayed
 * by capsemd): hostile, capped, and a protocol violation ends the session. One thread, one
 * poll(2) loop; the stream is non-blocking with a bounded send buffer, so a saturated stdin never
 * blocks the relay of stdout (no deadlock with commands like cat). The raw-mode helpers keep
 * the terminal's previous mode and restore it on every exit path (signals reach us through the
 * signalfd, so they end in the loop, and an atexit handler covers the rest).
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>

#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "relay.h"

#define SEND_CAP (1u << 20)
#define RECV_CAP (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD)

void relay_init(struct relay *r, int sock, int sigfd)
{
	*r = (struct relay){ .sock = sock, .sigfd = sigfd, .ipc = -1, .in_fd = -1 };
	fd_set_nonblock(sock, 1);
	buf_init(&r->out, SEND_CAP);
	buf_init(&r->in, RECV_CAP);
}

void relay_done(struct relay *r)
{
	buf_done(&r->out, 0);
	buf_done(&r->in, 0);
	free(r->error);
	r->error = NULL;
}

int relay_send_frame(struct relay *r, uint16_t type, const void *p, size_t n)
{
	return proto_frame_append(&r->out, type, p, n);
}

static void write_out(struct relay *r, int fd, const uint8_t *p, size_t n)
{
	if (fd == STDOUT_FILENO && r->stdout_broken)
		return;
	if (fd_write_all(fd, p, n) < 0 && fd == STDOUT_FILENO)
		r->stdout_broken = 1; /* keep draining so the guest is never stuck */
}

/* Handle the complete frames in r->in. 0, or -EBADMSG for a protocol violation. */
static int relay_frames(struct relay *r)
{
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	ssize_t k;
	while ((k = proto_frame_parse(buf_head(&r->in), buf_len(&r->in), &type, &pl, &len)) > 0) {
		switch (type) {
		case PROTO_STARTED:
			break;
		case PROTO_STDOUT:
			write_out(r, STDOUT_FILENO, pl, len);
			break;
		case PROTO_STDERR:
			write_out(r, STDERR_FILENO, pl, len);
			break;
		case PROTO_EXIT:
			if (proto_exit_decode(pl, len, &r->exit) < 0)
				return -EBADMSG;
			r->got_exit = 1;
			break;
		case PROTO_ERROR: {
			struct proto_error e;
			if (proto_error_decode(pl, len, &e) < 0)
				return -EBADMSG;
			free(r->error);
			if (asprintf(&r->error, "the guest agent refused the command: %s",
				     e.message) < 0)
				r->error = NULL;
			break;
		}
		default:
			return -EBADMSG;
		}
		buf_consume(&r->in, (size_t)k);
	}
	return k < 0 ? -EBADMSG : 0;
}

static void send_winsize(struct relay *r)
{
	uint16_t rows, cols;
	if (tty_get_size(STDIN_FILENO, &rows, &cols) < 0 &&
	    tty_get_size(STDOUT_FILENO, &rows, &cols) < 0)
		return;
	proto_winsize_encode(rows, cols, &r->out);
}

int relay_run(struct relay *r, uint64_t timeout_ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* the guest enforces the timeout; this is only a backstop if the guest stops answering */
	int64_t backstop_ms = timeout_ms ? (int64_t)timeout_ms + 30000 : -1;

	/* frames that arrived together with an upgrade response */
	if (relay_frames(r) < 0)
		return log_error("protocol error from the guest agent"), -EBADMSG;

	while (!r->got_exit && !r->error) {
		struct pollfd pf[4] = {
			{ .fd = r->sock, .events = POLLIN | (buf_len(&r->out) ? POLLOUT : 0) },
			{ .fd = r->sigfd, .events = POLLIN },
			{ .fd = r->ipc, .events = POLLIN },
			{ .fd = buf_room(&r->out) >= PROTO_MAX_DATA + PROTO_HDR_SIZE ? r->in_fd
										     : -1,
			  .events = POLLIN },
		};
		int wait = -1;
		if (backstop_ms >= 0) {
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			int64_t el =
				(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
			if (el >= backstop_ms)
				return log_error("the guest did not report the command's end after "
						 "its timeout"),
				       -ETIMEDOUT;
			wait = (int)(backstop_ms - el);
		}
		int n = poll(pf, 4, wait);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_error_errno(negative_errno(), "poll");

		if (pf[1].revents) {
			struct signalfd_siginfo si;
			if (read(r->sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGWINCH) {
					if (r->tty)
						send_winsize(r);
				} else if (r->tty && si.ssi_signo != SIGINT) {
					/* the terminal went away or we were told to stop */
					return log_error("terminated: closing the session"), -EINTR;
				} else {
					if (++r->interrupts >= 2)
						return log_error("interrupted twice: stopping"),
						       -EINTR;
					proto_u32_encode(PROTO_SIGNAL, si.ssi_signo, &r->out);
				}
			}
		}
		if (pf[2].revents) {
			/* the supervisor only speaks now if the VM died */
			return log_error("the VM stopped while the command was running (QEMU "
					 "exited or crashed; see the VM's serial log)"),
			       -EPIPE;
		}
		if (pf[3].revents) {
			uint8_t tmp[PROTO_MAX_DATA];
			ssize_t k = fd_read_some(r->in_fd, tmp, sizeof(tmp));
			if (k <= 0) {
				relay_send_frame(r, PROTO_STDIN, NULL, 0);
				r->in_fd = -1;
			} else {
				relay_send_frame(r, PROTO_STDIN, tmp, (size_t)k);
			}
		}
		if (pf[0].revents & POLLOUT && buf_len(&r->out)) {
			ssize_t k = write(r->sock, buf_head(&r->out), buf_len(&r->out));
			if (k > 0)
				buf_consume(&r->out, (size_t)k);
			else if (k < 0 && errno != EAGAIN && errno != EINTR && errno != EPIPE)
				return log_error_errno(negative_errno(), "sending to the guest");
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t *dst = buf_reserve(&r->in, 65536);
			if (!dst)
				return log_error("the guest sent an oversized frame"), -EBADMSG;
			ssize_t k = read(r->sock, dst, 65536);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k <= 0) {
				if (relay_frames(r) < 0)
					return log_error("protocol error from the guest agent"),
					       -EBADMSG;
				if (!r->got_exit && !r->error)
					return log_error("the connection to the guest agent was "
							 "lost"),
					       -EPIPE;
				break;
			}
			buf_commit(&r->in, (size_t)k);
			if (relay_frames(r) < 0)
				return log_error("protocol error from the guest agent"), -EBADMSG;
		}
	}
	if (r->error)
		return log_error("%s", r->error), -EPROTO;
	return 0;
}

/* ---- the local terminal ---- */

static struct termios saved_tio;
static int saved_fd = -1;
static int atexit_done;

int tty_get_size(int fd, uint16_t *ret_rows, uint16_t *ret_cols)
{
	struct winsize ws;
	if (ioctl(fd, TIOCGWINSZ, &ws) < 0)
		return negative_errno();
	if (ws.ws_row == 0 || ws.ws_col == 0)
		return -ENOTTY;
	*ret_rows = ws.ws_row;
	*ret_cols = ws.ws_col;
	return 0;
}

void tty_restore(void)
{
	if (saved_fd < 0)
		return;
	tcsetattr(saved_fd, TCSADRAIN, &saved_tio);
	saved_fd = -1;
}

int tty_raw(int fd)
{
	struct termios t;
	if (tcgetattr(fd, &t) < 0)
		return negative_errno();
	saved_tio = t;
	if (!atexit_done) {
		atexit(tty_restore);
		atexit_done = 1;
	}
	cfmakeraw(&t);
	if (tcsetattr(fd, TCSADRAIN, &t) < 0)
		return negative_errno();
	saved_fd = fd;
	return 0;
}

int relay_exit_status(const struct relay *r, int run, uint64_t timeout_ms)
{
	if (run == -EINTR)
		return 130;
	if (r->exit.kind == PROTO_EXIT_TIMEOUT)
		log_error("command timed out after %.3g s; it and all it started were killed",
			  timeout_ms / 1000.0);
	return proto_exit_status(&r->exit);
}
