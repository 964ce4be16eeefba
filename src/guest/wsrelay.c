/* wsrelay.c - see wsrelay.h. One process, poll(2), a 64 KiB buffer each way.
 *
 * Trust boundary: both ends are ours (the guest kernel's 9p client and the host's server,
 * which checks every byte); the relay only copies. The port reads 0 while its host end is not
 * connected (between two capsem-vm processes, never while the guest runs normally): the relay
 * then waits a moment instead of spinning.
 */
#include "wsrelay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"

#define RELAY_BUF (64u * 1024u)

struct half {
	int from, to;
	uint8_t buf[RELAY_BUF];
	size_t off, n;
};

/* Move what can be moved from h->from to h->to; -1 when the relay must end. */
static int pump(struct half *h, short rev_from, short rev_to, int is_port_read)
{
	if (h->n == 0 && (rev_from & (POLLIN | POLLHUP | POLLERR))) {
		ssize_t k = read(h->from, h->buf, sizeof(h->buf));
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (k == 0) {
			if (!is_port_read)
				return -1; /* the kernel dropped the mount */
			struct timespec ts = { 0,
					       50 * 1000 * 1000 }; /* the host is not connected */
			(void)nanosleep(&ts, NULL);
		}
		if (k > 0) {
			h->off = 0;
			h->n = (size_t)k;
			rev_to |= POLLOUT; /* try at once */
		}
	}
	if (h->n && (rev_to & POLLOUT)) {
		ssize_t k = write(h->to, h->buf + h->off, h->n);
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (k > 0) {
			h->off += (size_t)k;
			h->n -= (size_t)k;
		}
	}
	return 0;
}

static _noreturn_ void relay(int port, int sock)
{
	static struct half up, down; /* up: kernel -> host; down: host -> kernel */
	up = (struct half){ .from = sock, .to = port };
	down = (struct half){ .from = port, .to = sock };
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = sock,
			  .events = (short)((up.n ? 0 : POLLIN) | (down.n ? POLLOUT : 0)) },
			{ .fd = port,
			  .events = (short)((down.n ? 0 : POLLIN) | (up.n ? POLLOUT : 0)) },
		};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (pump(&up, p[0].revents, p[1].revents, 0) < 0 ||
		    pump(&down, p[1].revents, p[0].revents, 1) < 0)
			_exit(0);
	}
}

pid_t wsrelay_spawn(int port_fd, int sock_fd)
{
	pid_t pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		safe_close(port_fd);
		safe_close(sock_fd);
		return r;
	}
	if (pid == 0) {
		(void)setsid();
		(void)prctl(PR_SET_NAME, "capsem-wsrelay", 0, 0, 0);
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		for (int sig = 1; sig < 32; sig++) /* init's handlers are not ours */
			if (sig != SIGKILL && sig != SIGSTOP)
				(void)sigaction(sig, &dfl, NULL);
		sigset_t all;
		sigemptyset(&all);
		(void)sigprocmask(SIG_SETMASK, &all, NULL);
		(void)fcntl(port_fd, F_SETFL, O_NONBLOCK | O_RDWR);
		(void)fcntl(sock_fd, F_SETFL, O_NONBLOCK | O_RDWR);
		relay(port_fd, sock_fd);
	}
	safe_close(port_fd);
	safe_close(sock_fd);
	return pid;
}
