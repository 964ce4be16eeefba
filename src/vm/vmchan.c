/* vmchan.c - capsem-vm's end of the channel mux (--channel serial; docs/PROTOCOL.md §10): the
 * host<->guest ports carried over QEMU's virtio-serial port "capsem.chan" instead of the
 * vhost-user vsock device, which QEMU 7.2 cannot migrate.
 *
 * Seen from above nothing changes: host processes still connect to <vmdir>/vsock and send
 * "CONNECT <port>[ <tag>]\n", get "OK <id>\n" and a byte stream; streams the guest opens still
 * reach <vmdir>/vsock_<port> (the agent's control port, the egress service, the MCP gateway).
 * Exec streams feed the same audit tap as with vsock (vmledger.c).
 *
 * The mux runs on its own thread with a poll(2) loop (src/chan/chanio.c does the splicing):
 * chanio closes sockets while it works, which libuv's watchers must never see. It shares
 * nothing with the loop thread but the tap callbacks (per-stream state and the thread-safe
 * ledger); the loop stops it (threadreq.h) and joins it. Trust boundary: the guest's mux
 * frames (chanio/chanmux check them) and the CONNECT lines of local processes (bounded). So the
 * thread confines itself further before it reads a byte (both layers bind this thread only):
 * a Landlock domain that allows no file at all and no TCP, and its own seccomp list
 * (vm_seccomp_install_chan_thread: sockets, memory, futex; no open, exec or clone).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "cfprobe.h"
#include "landlock.h"
#include "vmconfine.h"
#include "vmseccomp.h"
#include "threadreq.h"
#include "chanio.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "unixsock.h"
#include "vmledger.h"

#define CHAN_SOCKET "chan.sock"
#define HYBRID_SOCKET "vsock"
#define CHAN_THREAD_NAME "capsem-vm-chan" /* its comm (/proc/PID/task/TID/comm) */
#define LINE_MAX_ 128
#define PENDING_MAX 64

struct pending { /* a host process that has not finished its CONNECT line yet */
	int fd;
	size_t n;
	char line[LINE_MAX_];
};

enum { CHAN_CMD_PAUSE = 1, CHAN_CMD_RESTART };

struct vmchan {
	pthread_t thread;
	int qemu_l, hybrid_l;
	struct threadreq req; /* the loop's requests (stop, pause, restart) and their answers */
	int waiting_paused;   /* PAUSE sent: answer done_fd when the guest's PAUSED arrives */
	struct chanio *io;
	struct pending pend[PENDING_MAX];
	size_t n_pend;
	struct chanio_ops ops;
	bool syncing; /* the guest broke the protocol: its end is awaited (said once in the log) */
};

/* The guest opens a stream to host port: <vmdir>/vsock_<port> (our cwd is the VM directory). */
static int open_local(void *userdata, uint32_t port, const char *tag)
{
	(void)userdata;
	(void)tag;
	char path[32];
	snprintf(path, sizeof(path), HYBRID_SOCKET "_%u", port);
	int fd = unix_connect(path, 1);
	return fd == -ENOENT ? -ECONNREFUSED : fd;
}

static void pend_drop(struct vmchan *ch, size_t i)
{
	safe_close(ch->pend[i].fd);
	ch->pend[i] = ch->pend[--ch->n_pend];
}

/* More of a CONNECT line: a whole one becomes a stream. */
static void pend_read(struct vmchan *ch, size_t i)
{
	struct pending *p = &ch->pend[i];
	ssize_t k = read(p->fd, p->line + p->n, sizeof(p->line) - 1 - p->n);
	if (k < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (k <= 0) {
		pend_drop(ch, i);
		return;
	}
	p->n += (size_t)k;
	p->line[p->n] = 0;
	char *nl = strchr(p->line, '\n');
	if (!nl) {
		if (p->n == sizeof(p->line) - 1)
			pend_drop(ch, i); /* no line in 127 bytes: not a client of ours */
		return;
	}
	*nl = 0;
	/* "CONNECT <port>[ <tag>]"; bytes after the line would be the stream's: none may come
	 * before OK */
	char *sp = strncmp(p->line, "CONNECT ", 8) == 0 ? strchr(p->line + 8, ' ') : NULL;
	if (sp)
		*sp = 0;
	uint32_t port;
	if (strncmp(p->line, "CONNECT ", 8) != 0 || parse_u32(p->line + 8, &port) < 0 || !ch->io ||
	    nl + 1 != p->line + p->n) {
		pend_drop(ch, i);
		return;
	}
	int fd = p->fd;
	char tag[CHANMUX_TAG_MAX + 1];
	snprintf(tag, sizeof(tag), "%s", sp ? sp + 1 : "");
	ch->pend[i] = ch->pend[--ch->n_pend];
	(void)chanio_connect(ch->io, fd, port, tag, true); /* closes fd on failure */
}

static void answer(struct vmchan *ch, uint64_t v)
{
	treq_answer(&ch->req, v);
}

/* A request of the loop thread (vm_chan_pause / vm_chan_restart). */
static void on_cmd(struct vmchan *ch)
{
	int cmd = treq_take(&ch->req);
	if (!ch->io) {
		answer(ch, 2); /* no channel: the guest never connected, or it broke the mux */
		return;
	}
	if (cmd == CHAN_CMD_PAUSE) {
		while (ch->n_pend) /* half-told CONNECTs: refused, like every new stream now */
			pend_drop(ch, 0);
		if (chanio_pause(ch->io) < 0) {
			answer(ch, 2);
			return;
		}
		ch->waiting_paused = 1;
	} else if (cmd == CHAN_CMD_RESTART) {
		ch->waiting_paused = 0;
		answer(ch, chanio_restart(ch->io) < 0 ? 2 : 1);
	}
}

/* This thread's own layers (on top of capsem-vm's). A layer that cannot be applied is one
 * warning: the process's confinement still holds. */
static void chan_thread_confine(void)
{
	if (!vm_confine_enabled())
		return;
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r >= 0)
		r = ll_restrict_self(rs.fd);
	ll_ruleset_done(&rs);
	if (r < 0)
		log_warn_errno(r, "confinement: the channel thread's Landlock domain not enforced");
	/* the tests' probes fork, which the thread's own filter has no room for */
	cfprobe_run(CHAN_THREAD_NAME);
	const char *mode = getenv("CAPSEM_SECCOMP");
	r = vm_seccomp_install_chan_thread(mode && streq(mode, "log") ? SCF_LOG : SCF_ENFORCE);
	if (r < 0)
		log_warn_errno(r, "confinement: the channel thread's seccomp list not enforced");
}

static void *chan_thread(void *arg)
{
	struct vmchan *ch = arg;
	static struct pollfd p[4 + PENDING_MAX + CHANIO_MAX_FDS];
	(void)prctl(PR_SET_NAME, CHAN_THREAD_NAME, 0, 0, 0);
	chan_thread_confine();
	for (;;) {
		size_t n = 0;
		p[n++] = (struct pollfd){ .fd = ch->req.stop_fd, .events = POLLIN };
		p[n++] = (struct pollfd){ .fd = ch->req.cmd_fd, .events = POLLIN };
		p[n++] = (struct pollfd){ .fd = ch->io ? -1 : ch->qemu_l, .events = POLLIN };
		p[n++] = (struct pollfd){ .fd = ch->n_pend < PENDING_MAX ? ch->hybrid_l : -1,
					  .events = POLLIN };
		for (size_t i = 0; i < ch->n_pend; i++)
			p[n++] = (struct pollfd){ .fd = ch->pend[i].fd, .events = POLLIN };
		size_t first = n;
		if (ch->io)
			n += chanio_fds(ch->io, p + n, ELEMENTSOF(p) - n);
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents & POLLIN)
			on_cmd(ch);
		if (p[2].revents & POLLIN) { /* QEMU's chardev connects once */
			int fd = accept4(ch->qemu_l, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0 && chanio_new(CHANMUX_SIDE_HOST, fd, &ch->ops, &ch->io) < 0)
				safe_close(fd);
		}
		if (p[3].revents & POLLIN) {
			int fd = accept4(ch->hybrid_l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd >= 0)
				ch->pend[ch->n_pend++] = (struct pending){ .fd = fd };
		}
		/* pending lines: walk backwards, entries move when one is dropped */
		for (size_t i = first; i-- > 4;)
			if (p[i].revents && i - 4 < ch->n_pend && ch->pend[i - 4].fd == p[i].fd)
				pend_read(ch, i - 4);
		for (size_t i = first; ch->io && i < n; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			if (chanio_ready(ch->io, p[i].fd, p[i].revents) < 0) {
				/* QEMU went away (the VM is stopping) or the guest broke the mux */
				log_debug("the host channel ended");
				chanio_free(ch->io);
				ch->io = NULL;
				if (ch->waiting_paused)
					answer(ch, 2);
				ch->waiting_paused = 0;
				break;
			}
		}
		if (ch->io && chanio_syncing(ch->io) != ch->syncing) {
			ch->syncing = chanio_syncing(ch->io);
			if (ch->syncing)
				log_warn("the guest broke the channel's protocol: its streams are "
					 "reset; waiting for its end to start over");
			else
				log_info("the guest's end of the channel started over");
		}
		if (ch->waiting_paused && ch->io && chanio_paused(ch->io)) {
			ch->waiting_paused = 0;
			answer(ch, 1);
		}
	}
	return NULL;
}

int vm_chan_start(struct vm *vm)
{
	struct vmchan *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return log_oom();
	ch->qemu_l = ch->hybrid_l = -1;
	ch->ops.open_local = open_local;
	if (vm->ledger) {
		ch->ops.userdata = vm->ledger;
		ch->ops.tap_open = vm_exec_tap_open;
		ch->ops.tap_data = vm_exec_tap_data;
		ch->ops.tap_close = vm_exec_tap_close;
	}
	int r = treq_init(&ch->req);
	if (r < 0) {
		free(ch);
		return log_error_errno(r, "cannot set up the host channel in %s", vm->o.vmdir);
	}
	ch->qemu_l = unix_listen(CHAN_SOCKET, 1);
	ch->hybrid_l = unix_listen(HYBRID_SOCKET, 64);
	r = ch->qemu_l < 0 ? ch->qemu_l : ch->hybrid_l;
	if (r >= 0)
		r = -pthread_create(&ch->thread, NULL, chan_thread, ch);
	if (r < 0) {
		treq_done(&ch->req);
		safe_close(ch->qemu_l);
		safe_close(ch->hybrid_l);
		free(ch);
		return log_error_errno(r, "cannot set up the host channel in %s", vm->o.vmdir);
	}
	vm->chan = ch;
	return 0;
}

void vm_chan_stop(struct vm *vm)
{
	struct vmchan *ch = vm->chan;
	if (!ch)
		return;
	treq_stop(&ch->req);
	pthread_join(ch->thread, NULL);
	chanio_free(ch->io);
	while (ch->n_pend)
		pend_drop(ch, 0);
	treq_done(&ch->req);
	safe_close(ch->qemu_l);
	safe_close(ch->hybrid_l);
	(void)unlink(CHAN_SOCKET);
	(void)unlink(HYBRID_SOCKET);
	free(ch);
	vm->chan = NULL;
}

/* Ask the thread for cmd and wait up to timeout_ms for its answer (the loop thread blocks: only
 * around a save, while the guest is quiet). */
static int chan_request(struct vm *vm, int cmd, int timeout_ms)
{
	uint64_t v = 0;
	if (!vm->chan)
		return -ENOTCONN;
	int r = treq_call(&vm->chan->req, cmd, timeout_ms, &v);
	if (r == -ETIMEDOUT)
		return r;
	return r < 0 ? -EIO : v == 1 ? 0 : -ENOTCONN;
}

int vm_chan_pause(struct vm *vm, int timeout_ms)
{
	return chan_request(vm, CHAN_CMD_PAUSE, timeout_ms);
}

int vm_chan_restart(struct vm *vm)
{
	return chan_request(vm, CHAN_CMD_RESTART, 1000);
}
