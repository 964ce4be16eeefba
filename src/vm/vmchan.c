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
 * ledger); the loop stops it through an eventfd and joins it. Trust boundary: the guest's mux
 * frames (chanio/chanmux check them) and the CONNECT lines of local processes (bounded).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "chanio.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "unixsock.h"
#include "vmledger.h"

#define CHAN_SOCKET "chan.sock"
#define HYBRID_SOCKET "vsock"
#define LINE_MAX_ 128
#define PENDING_MAX 64

struct pending { /* a host process that has not finished its CONNECT line yet */
	int fd;
	size_t n;
	char line[LINE_MAX_];
};

struct vmchan {
	pthread_t thread;
	int stop_fd, qemu_l, hybrid_l;
	struct chanio *io;
	struct pending pend[PENDING_MAX];
	size_t n_pend;
	struct chanio_ops ops;
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

static void *chan_thread(void *arg)
{
	struct vmchan *ch = arg;
	static struct pollfd p[3 + PENDING_MAX + CHANIO_MAX_FDS];
	for (;;) {
		size_t n = 0;
		p[n++] = (struct pollfd){ .fd = ch->stop_fd, .events = POLLIN };
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
		if (p[1].revents & POLLIN) { /* QEMU's chardev connects once */
			int fd = accept4(ch->qemu_l, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0 && chanio_new(CHANMUX_SIDE_HOST, fd, &ch->ops, &ch->io) < 0)
				safe_close(fd);
		}
		if (p[2].revents & POLLIN) {
			int fd = accept4(ch->hybrid_l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd >= 0)
				ch->pend[ch->n_pend++] = (struct pending){ .fd = fd };
		}
		/* pending lines: walk backwards, entries move when one is dropped */
		for (size_t i = first; i-- > 3;)
			if (p[i].revents && i - 3 < ch->n_pend && ch->pend[i - 3].fd == p[i].fd)
				pend_read(ch, i - 3);
		for (size_t i = first; ch->io && i < n; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			if (chanio_ready(ch->io, p[i].fd, p[i].revents) < 0) {
				/* QEMU went away (the VM is stopping) or the guest broke the mux */
				log_debug("the host channel ended");
				chanio_free(ch->io);
				ch->io = NULL;
				break;
			}
		}
	}
	return NULL;
}

int vm_chan_start(struct vm *vm)
{
	struct vmchan *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return log_oom();
	ch->stop_fd = ch->qemu_l = ch->hybrid_l = -1;
	ch->ops.open_local = open_local;
	if (vm->ledger) {
		ch->ops.userdata = vm->ledger;
		ch->ops.tap_open = vm_exec_tap_open;
		ch->ops.tap_data = vm_exec_tap_data;
		ch->ops.tap_close = vm_exec_tap_close;
	}
	ch->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ch->qemu_l = unix_listen(CHAN_SOCKET, 1);
	ch->hybrid_l = unix_listen(HYBRID_SOCKET, 64);
	int r = ch->stop_fd < 0 ? negative_errno() : ch->qemu_l < 0 ? ch->qemu_l : ch->hybrid_l;
	if (r >= 0)
		r = -pthread_create(&ch->thread, NULL, chan_thread, ch);
	if (r < 0) {
		safe_close(ch->stop_fd);
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
	uint64_t one = 1;
	(void)!write(ch->stop_fd, &one, sizeof(one));
	pthread_join(ch->thread, NULL);
	chanio_free(ch->io);
	while (ch->n_pend)
		pend_drop(ch, 0);
	safe_close(ch->stop_fd);
	safe_close(ch->qemu_l);
	safe_close(ch->hybrid_l);
	(void)unlink(CHAN_SOCKET);
	(void)unlink(HYBRID_SOCKET);
	free(ch);
	vm->chan = NULL;
}
