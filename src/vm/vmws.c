/* vmws.c - the workspace over a virtio-serial port (CAPSEM_WORKSPACE_TRANSPORT=serial): QEMU's
 * port "capsem.ws" connects its chardev to <vmdir>/ws.sock, the guest kernel mounts the port
 * with 9p's trans=fd, and this file serves it with our own 9P2000.L server
 * (src/workspace/ws9p.c). Unlike vhost-user-fs and QEMU's own 9p, nothing of the share lives in
 * QEMU, so a VM with a live workspace can be saved and restored (docs/ARCHITECTURE.md "The
 * workspace").
 *
 * Save: once QEMU has stopped the guest, vm_ws_quiesce() reads what QEMU still hands over
 * (nothing new can come: the vCPUs are stopped; what the guest queued but QEMU did not take yet
 * stays in the virtqueue, which QEMU saves), serves it, writes no more replies, waits until
 * QEMU took every reply byte already written (so none is lost in the socket when QEMU quits),
 * and writes the server's state (fids, the incomplete request, the replies not yet written) to
 * WS_STATE. vm_ws_check() after the save makes sure no byte arrived since. A restore loads
 * WS_STATE before QEMU connects; the replies held back go out first.
 *
 * The server runs on its own thread with a poll(2) loop, like the channel mux (vmchan.c); the
 * loop thread asks it for a quiesce, a thaw or a check through an eventfd and waits for the
 * answer. Trust boundary: every byte from the port is the guest's (ws9p.c checks them; a
 * protocol error drops the connection, the guest's mount then fails, the host is untouched).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "threadreq.h"
#include "clockutil.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "unixsock.h"
#include "ws9p.h"

#define WS_READ_CHUNK (64u * 1024u)
#define WS_QUIET_MS 30	 /* a quiesce: no byte from QEMU for this long */
#define WS_DRAIN_MS 3000 /* a quiesce: QEMU takes every reply byte written within this */

enum { WS_CMD_QUIESCE = 1, WS_CMD_THAW, WS_CMD_CHECK };

struct vmws {
	pthread_t thread;
	int lfd, conn;
	struct threadreq req; /* the loop's requests (stop, quiesce, thaw, check), answers */
	int frozen;	      /* quiesced: no read, no write until a thaw */
	struct ws9p *srv;
	uint8_t *carry; /* bytes read that the server did not take yet (output full) */
	size_t n_carry;
	char err[160]; /* why the last command failed (read by the loop thread after) */
};

/* Feed the carried bytes, then what the socket has; 0, or -EPIPE when the connection ends. */
static int ws_feed(struct vmws *w, const uint8_t *p, size_t n)
{
	ssize_t k = ws9p_input(w->srv, p, n);
	if (k < 0) {
		log_warn("the guest broke the workspace's 9p protocol: its mount is cut off");
		return -EPIPE;
	}
	if ((size_t)k < n) {
		memmove(w->carry, p + k, n - (size_t)k);
		w->n_carry = n - (size_t)k;
	}
	return 0;
}

static int ws_read(struct vmws *w)
{
	if (w->n_carry) {
		size_t n = w->n_carry;
		w->n_carry = 0;
		int r = ws_feed(w, w->carry, n);
		if (r < 0 || w->n_carry)
			return r;
	}
	uint8_t buf[WS_READ_CHUNK];
	ssize_t k = read(w->conn, buf, sizeof(buf));
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -EPIPE;
	if (k == 0)
		return -EPIPE; /* QEMU closed the chardev: the VM is going */
	return ws_feed(w, buf, (size_t)k);
}

static int ws_write(struct vmws *w)
{
	size_t n;
	const uint8_t *p = ws9p_output(w->srv, &n);
	if (!p)
		return 0;
	ssize_t k = write(w->conn, p, n);
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -EPIPE;
	ws9p_consume(w->srv, (size_t)k);
	return 0;
}

static void ws_drop(struct vmws *w)
{
	w->conn = safe_close(w->conn);
	w->n_carry = 0;
}

/* Bytes QEMU has not read yet from our side of the socket (0 once it took them all). */
static int outq(int fd)
{
	int n = 0;
	return ioctl(fd, SIOCOUTQ, &n) < 0 ? 1 : n;
}

/* The guest is stopped: take what QEMU still hands over, then stop reading and writing. */
static int ws_quiesce(struct vmws *w)
{
	w->frozen = 1;
	if (w->conn < 0)
		return 0; /* the guest never mounted it: nothing in flight */
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + WS_DRAIN_MS;
	for (;;) {
		struct pollfd p = { .fd = w->conn, .events = POLLIN };
		int k = poll(&p, 1, WS_QUIET_MS);
		if (k > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			if (ws_read(w) < 0) {
				snprintf(w->err, sizeof(w->err), "the workspace connection ended");
				return -EPIPE;
			}
			if (w->n_carry) {
				snprintf(w->err, sizeof(w->err),
					 "the workspace server holds too many replies");
				return -ENOBUFS;
			}
		} else if (k == 0 && outq(w->conn) == 0) {
			return 0;
		}
		if (clock_ms(CLOCK_MONOTONIC) > until) {
			snprintf(w->err, sizeof(w->err),
				 "QEMU did not take the workspace's replies within %d s (the guest "
				 "has no buffer free)",
				 WS_DRAIN_MS / 1000);
			return -ETIMEDOUT;
		}
	}
}

/* After the save: nothing may have arrived since the quiesce (it would be lost). */
static int ws_check(struct vmws *w)
{
	int n = 0;
	if (w->conn >= 0 && (ioctl(w->conn, FIONREAD, &n) < 0 || n > 0)) {
		snprintf(w->err, sizeof(w->err),
			 "%d workspace bytes arrived from QEMU during the save", n);
		return -EBUSY;
	}
	return 0;
}

static void on_cmd(struct vmws *w)
{
	int cmd = treq_take(&w->req);
	int r = 0;
	w->err[0] = 0;
	if (cmd == WS_CMD_QUIESCE)
		r = ws_quiesce(w);
	else if (cmd == WS_CMD_THAW)
		w->frozen = 0;
	else if (cmd == WS_CMD_CHECK)
		r = ws_check(w);
	treq_answer(&w->req, r < 0 ? 2 : 1);
}

static void *ws_thread(void *arg)
{
	struct vmws *w = arg;
	for (;;) {
		size_t n_out = 0;
		(void)ws9p_output(w->srv, &n_out);
		struct pollfd p[4] = {
			{ .fd = w->req.stop_fd, .events = POLLIN },
			{ .fd = w->req.cmd_fd, .events = POLLIN },
			{ .fd = w->conn < 0 ? w->lfd : -1, .events = POLLIN },
			{ .fd = w->frozen ? -1 : w->conn,
			  .events = (short)((w->n_carry ? 0 : POLLIN) | (n_out ? POLLOUT : 0)) },
		};
		if (poll(p, ELEMENTSOF(p), -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		if (p[1].revents & POLLIN) {
			on_cmd(w);
			continue;
		}
		if (p[2].revents & POLLIN) { /* QEMU's chardev connects once */
			int fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd >= 0)
				w->conn = fd;
			continue;
		}
		if (w->conn < 0 || !p[3].revents)
			continue;
		int r = 0;
		if (p[3].revents & POLLOUT)
			r = ws_write(w);
		if (r == 0 && (p[3].revents & (POLLIN | POLLHUP | POLLERR)))
			r = ws_read(w);
		if (r == 0 && w->n_carry) /* output was full: some of it may go now */
			r = ws_write(w);
		if (r < 0)
			ws_drop(w);
	}
	return NULL;
}

static void ws_free(struct vmws *w)
{
	if (!w)
		return;
	treq_done(&w->req);
	safe_close(w->lfd);
	safe_close(w->conn);
	ws9p_free(w->srv);
	free(w->carry);
	free(w);
}

/* A restore: the server's state as it was saved (its fids, the replies it held back). */
static int ws_load(struct vmws *w, const char *vmdir)
{
	_cleanup_close_ int fd = open(WS_STATE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return log_error_errno(negative_errno(),
				       "cannot resume the workspace: %s/" WS_STATE, vmdir);
	int r = ws9p_restore(w->srv, fd);
	if (r < 0)
		return log_error_errno(r, "cannot resume the workspace from %s/" WS_STATE, vmdir);
	log_debug("workspace: %zu fids restored", ws9p_fid_count(w->srv));
	return 0;
}

int vm_ws_start(struct vm *vm)
{
	struct vmws *w = calloc(1, sizeof(*w));
	if (!w)
		return log_oom();
	w->req = (struct threadreq){ .stop_fd = -1, .cmd_fd = -1, .done_fd = -1 };
	w->lfd = w->conn = -1;
	_cleanup_close_ int root = open(vm->o.workspace, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int r = root < 0 ? negative_errno() : ws9p_new(root, &w->srv);
	if (r < 0) {
		ws_free(w);
		return log_error_errno(r, "cannot serve the workspace %s", vm->o.workspace);
	}
	w->carry = malloc(WS_READ_CHUNK);
	r = !w->carry ? -ENOMEM : treq_init(&w->req);
	if (r >= 0)
		r = w->lfd = unix_listen(WS_SOCKET, 1);
	if (r >= 0 && vm->o.incoming)
		r = ws_load(w, vm->o.vmdir);
	if (r >= 0)
		r = -pthread_create(&w->thread, NULL, ws_thread, w);
	if (r < 0) {
		ws_free(w);
		return log_error_errno(r, "cannot serve the workspace in %s", vm->o.vmdir);
	}
	vm->ws = w;
	return 0;
}

void vm_ws_stop(struct vm *vm)
{
	struct vmws *w = vm->ws;
	if (!w)
		return;
	treq_stop(&w->req);
	pthread_join(w->thread, NULL);
	ws_free(w);
	(void)unlink(WS_SOCKET);
	vm->ws = NULL;
}

/* Ask the thread for cmd and wait up to timeout_ms (the loop thread blocks: only around a save,
 * while the guest is stopped). On failure err gets the thread's reason. */
static int ws_request(struct vm *vm, int cmd, int timeout_ms, char *err, size_t errlen)
{
	struct vmws *w = vm->ws;
	uint64_t v = 0;
	if (!w)
		return 0;
	if (treq_call(&w->req, cmd, timeout_ms, &v) < 0) {
		snprintf(err, errlen, "the workspace server did not answer");
		return -ETIMEDOUT;
	}
	if (v == 1)
		return 0;
	snprintf(err, errlen, "%s", w->err); /* the thread wrote it before answering */
	return -EIO;
}

int vm_ws_quiesce(struct vm *vm, char *err, size_t errlen)
{
	int r = ws_request(vm, WS_CMD_QUIESCE, WS_DRAIN_MS + 2000, err, errlen);
	if (r < 0 || !vm->ws)
		return r;
	/* frozen: the thread touches the server no more, so its state can be written from here */
	_cleanup_close_ int fd =
		open(WS_STATE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	r = fd < 0 ? negative_errno() : ws9p_save(vm->ws->srv, fd);
	if (r == 0 && fsync(fd) < 0)
		r = negative_errno();
	if (r == 0 && rename(WS_STATE ".tmp", WS_STATE) < 0)
		r = negative_errno();
	if (r < 0) {
		(void)unlink(WS_STATE ".tmp");
		snprintf(err, errlen, "cannot write the workspace server's state: %s",
			 strerror(-r));
	}
	return r;
}

int vm_ws_check(struct vm *vm, char *err, size_t errlen)
{
	return ws_request(vm, WS_CMD_CHECK, 1000, err, errlen);
}

void vm_ws_thaw(struct vm *vm)
{
	char err[8];
	(void)unlink(WS_STATE);
	(void)ws_request(vm, WS_CMD_THAW, 1000, err, sizeof(err));
}
