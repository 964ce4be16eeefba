/* ws9pd.c - the workspace's 9p server as a process of its own: `capsem-vm --ws9p-serve DIR`,
 * started by capsem-vm (vmws.c) for a VM whose workspace goes over the virtio-serial port
 * "capsem.ws". It parses the guest's 9p bytes, so it holds nothing else: not the provider keys,
 * the CA or the ledger that capsem-vm holds, and no way to reach them (docs/ARCHITECTURE.md
 * "Host confinement").
 *
 * Confinement, on top of capsem-vm's own (inherited across the exec): no new privileges; a
 * Landlock ruleset of its own that allows the workspace (read-write), the system read-only and
 * /proc (for /proc/self/fd), nothing else (no exec, no TCP, no signals or abstract sockets out
 * of its domain); a seccomp allow-list of the calls a file server makes (no socket, connect,
 * bind or exec). It opens nothing but files below DIR: the connection to QEMU and the saved
 * state arrive as fds.
 *
 * fd 3 is a SOCK_SEQPACKET control socket to capsem-vm. Each message is a word, some with an fd
 * (SCM_RIGHTS); each gets an answer, "ok" or "error: <why>":
 *   listen + fd    the socket QEMU's chardev connects to (<vmdir>/ws.sock): accept once
 *   restore + fd   load the state saved by a suspend (before QEMU connects)
 *   quiesce + fd   the guest is stopped: take what QEMU still hands over, stop reading and
 *                  writing, wait until QEMU took every reply byte written, write the state to fd
 *   check          nothing arrived since the quiesce
 *   thaw           the save failed: go on
 * The control socket's end (capsem-vm gone) ends the server; it also dies with capsem-vm
 * (PR_SET_PDEATHSIG).
 *
 * Trust boundary: every byte of the connection is the guest's (ws9p.c checks them; a protocol
 * error drops the connection: the guest's mount fails, the host is untouched). The control
 * socket is capsem-vm's. Single thread, poll(2).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "cfprobe.h"
#include "clockutil.h"
#include "fdutil.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"
#include "vmseccomp.h"
#include "ws9p.h"

#define WS_READ_CHUNK (64u * 1024u)
#define WS_QUIET_MS 30	 /* a quiesce: no byte from QEMU for this long */
#define WS_DRAIN_MS 3000 /* a quiesce: QEMU takes every reply byte written within this */
#define CTL_FD 3

struct srv {
	int ctl, lfd, conn;
	int frozen; /* quiesced: no read, no write until a thaw */
	struct ws9p *s;
	uint8_t carry[WS_READ_CHUNK]; /* bytes read that the server did not take yet */
	size_t n_carry;
	char err[200];
};

static int feed(struct srv *v, const uint8_t *p, size_t n)
{
	ssize_t k = ws9p_input(v->s, p, n);
	if (k < 0) {
		log_warn("the guest broke the workspace's 9p protocol: its mount is cut off");
		return -EPIPE;
	}
	if ((size_t)k < n) {
		memmove(v->carry, p + k, n - (size_t)k);
		v->n_carry = n - (size_t)k;
	}
	return 0;
}

/* The carried bytes first, then what the socket has; -EPIPE when the connection ends. */
static int conn_read(struct srv *v)
{
	if (v->n_carry) {
		uint8_t tmp[WS_READ_CHUNK];
		size_t n = v->n_carry;
		memcpy(tmp, v->carry, n);
		v->n_carry = 0;
		int r = feed(v, tmp, n);
		if (r < 0 || v->n_carry)
			return r;
	}
	uint8_t buf[WS_READ_CHUNK];
	ssize_t k = read(v->conn, buf, sizeof(buf));
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -EPIPE;
	if (k == 0)
		return -EPIPE; /* QEMU closed the chardev: the VM is going */
	return feed(v, buf, (size_t)k);
}

static int conn_write(struct srv *v)
{
	size_t n;
	const uint8_t *p = ws9p_output(v->s, &n);
	if (!p)
		return 0;
	ssize_t k = write(v->conn, p, n);
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -EPIPE;
	ws9p_consume(v->s, (size_t)k);
	return 0;
}

static void conn_drop(struct srv *v)
{
	v->conn = safe_close(v->conn);
	v->n_carry = 0;
}

/* Bytes QEMU has not read yet from our side of the socket (0 once it took them all). */
static int outq(int fd)
{
	int n = 0;
	return ioctl(fd, SIOCOUTQ, &n) < 0 ? 1 : n;
}

static int quiesce(struct srv *v, int state_fd)
{
	v->frozen = 1;
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + WS_DRAIN_MS;
	while (v->conn >= 0) { /* (never connected: nothing in flight) */
		struct pollfd p = { .fd = v->conn, .events = POLLIN };
		int k = poll(&p, 1, WS_QUIET_MS);
		if (k > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			if (conn_read(v) < 0)
				return snprintf(v->err, sizeof(v->err), "the connection ended"),
				       -EPIPE;
			if (v->n_carry)
				return snprintf(v->err, sizeof(v->err), "too many replies held"),
				       -ENOBUFS;
		} else if (k == 0 && outq(v->conn) == 0) {
			break;
		}
		if (clock_ms(CLOCK_MONOTONIC) > until)
			return snprintf(v->err, sizeof(v->err),
					"QEMU did not take the replies within %d s (the guest has "
					"no buffer free)",
					WS_DRAIN_MS / 1000),
			       -ETIMEDOUT;
	}
	int r = ws9p_save(v->s, state_fd);
	if (r < 0)
		snprintf(v->err, sizeof(v->err), "cannot write the state: %s", strerror(-r));
	return r;
}

/* One control message: the word in buf (NUL-terminated), an fd (or -1). 0 on EOF. */
static ssize_t ctl_recv(int ctl, char *buf, size_t cap, int *ret_fd)
{
	ssize_t k = fd_recv_with_fd(ctl, buf, cap - 1, ret_fd);
	buf[k > 0 ? k : 0] = 0;
	return k;
}

static void on_ctl(struct srv *v, int *running)
{
	char word[32];
	int fd = -1;
	ssize_t k = ctl_recv(v->ctl, word, sizeof(word), &fd);
	if (k <= 0) {
		if (k == 0 || (k != -EAGAIN && k != -EINTR))
			*running = 0; /* capsem-vm is gone */
		return;
	}
	_cleanup_close_ int arg = fd;
	int r = 0;
	v->err[0] = 0;
	if (streq(word, "listen") && arg >= 0 && v->lfd < 0) {
		v->lfd = TAKE_FD(arg);
	} else if (streq(word, "restore") && arg >= 0) {
		r = ws9p_restore(v->s, arg);
		if (r < 0)
			snprintf(v->err, sizeof(v->err), "cannot load the saved state: %s",
				 r == -EINVAL ? "it does not parse" : strerror(-r));
	} else if (streq(word, "quiesce") && arg >= 0) {
		r = quiesce(v, arg);
	} else if (streq(word, "check")) {
		int n = 0;
		if (v->conn >= 0 && (ioctl(v->conn, FIONREAD, &n) < 0 || n > 0)) {
			snprintf(v->err, sizeof(v->err), "%d bytes arrived during the save", n);
			r = -EBUSY;
		}
	} else if (streq(word, "thaw")) {
		v->frozen = 0;
	} else {
		snprintf(v->err, sizeof(v->err), "unknown command");
		r = -EINVAL;
	}
	char ans[sizeof(v->err) + 16];
	int n = r < 0 ? snprintf(ans, sizeof(ans), "error: %s", v->err[0] ? v->err : strerror(-r))
		      : snprintf(ans, sizeof(ans), "ok");
	(void)!write(v->ctl, ans,
		     (size_t)n); /* (capsem-vm's filter, which we inherit, has no sendto) */
}

/* Landlock: the workspace read-write, the system read-only, /proc; no exec from here on. */
static int confine(const char *dir)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return negative_errno();
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0)
		return r;
	if (rs.fd >= 0) {
		r = ll_allow_system(&rs, LL_SYS_PROC);
		if (r >= 0)
			r = ll_allow(&rs, dir, LL_RW);
		if (r >= 0)
			r = ll_restrict_self(rs.fd);
	}
	ll_ruleset_done(&rs);
	if (r < 0)
		return r;
	/* the tests' probes fork, which our own filter has no room for: they see the Landlock
	 * ruleset and capsem-vm's filter, then ours narrows it */
	cfprobe_run("ws9p");
	const char *mode = getenv("CAPSEM_SECCOMP");
	r = vm_seccomp_install_ws9p(mode && streq(mode, "log") ? SCF_LOG : SCF_ENFORCE);
	return r;
}

int vm_ws9p_serve(int argc, char **argv)
{
	/* capsem-vm --ws9p-serve DIR (fd 3: the control socket) */
	if (argc != 3 || !streq(argv[1], "--ws9p-serve"))
		return log_error("usage: capsem-vm --ws9p-serve DIR"), 2;
	struct srv *v = calloc(1, sizeof(*v));
	if (!v)
		return log_oom(), 1;
	v->ctl = CTL_FD;
	v->lfd = v->conn = -1;
	_cleanup_close_ int root = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
	int r = root < 0 ? negative_errno() : 0;
	const char *conf = getenv("CAPSEM_CONFINE");
	if (r == 0 && conf && streq(conf, "0"))
		log_debug("ws9p: confinement off (CAPSEM_CONFINE=0)");
	else if (r == 0)
		r = confine(argv[2]);
	if (r == 0)
		r = ws9p_new(root, &v->s);
	if (r < 0) {
		log_error_errno(r, "ws9p: cannot serve %s", argv[2]);
		free(v);
		return 1;
	}
	int running = 1;
	while (running) {
		size_t n_out = 0;
		(void)ws9p_output(v->s, &n_out);
		struct pollfd p[3] = {
			{ .fd = v->ctl, .events = POLLIN },
			{ .fd = v->frozen ? -1 : v->conn,
			  .events = (short)((v->n_carry ? 0 : POLLIN) | (n_out ? POLLOUT : 0)) },
			{ .fd = v->conn < 0 ? v->lfd : -1, .events = POLLIN },
		};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			on_ctl(v, &running);
			continue;
		}
		if (p[2].revents & POLLIN) { /* QEMU's chardev connects once */
			v->conn = accept4(v->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (v->conn >= 0)
				v->lfd = safe_close(v->lfd);
			continue;
		}
		if (v->conn < 0 || !p[1].revents)
			continue;
		r = 0;
		if (p[1].revents & POLLOUT)
			r = conn_write(v);
		if (r == 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			r = conn_read(v);
		if (r == 0 && v->n_carry) /* output was full: some of it may go now */
			r = conn_write(v);
		if (r < 0)
			conn_drop(v);
	}
	ws9p_free(v->s);
	safe_close(v->conn);
	safe_close(v->lfd);
	free(v);
	return 0;
}
