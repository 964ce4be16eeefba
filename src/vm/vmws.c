/* vmws.c - the workspace over a virtio-serial port (a VM on the serial channel: one QEMU can
 * save): QEMU's port "capsem.ws" connects its chardev to <vmdir>/ws.sock, the guest kernel mounts
 * the port with 9p's trans=fd (through init's relay), and our own 9P2000.L server
 * (src/workspace/ws9p.c) serves it. Unlike vhost-user-fs and QEMU's own 9p, nothing of the share
 * lives in QEMU, so a VM with a live workspace can be saved and restored (docs/ARCHITECTURE.md
 * "Suspend and resume").
 *
 * The server is a process of its own, `capsem-vm --ws9p-serve DIR` (ws9pd.c): it parses the
 * guest's bytes, so it gets nothing of what capsem-vm holds (provider keys, the CA, the ledger)
 * and is confined to the workspace. Here it is started (confine_spawn: no new privileges, dies
 * with us), given the listening socket and, on a resume, the saved state; watched through its
 * pidfd (a server that dies under a running VM fails the VM at once, naming it and its log,
 * instead of leaving the guest's I/O hanging); and driven over a SOCK_SEQPACKET control socket
 * around a save: quiesce (after QMP stop: it serves what QEMU still hands over, writes no more,
 * waits until QEMU took every reply byte, and writes its state into the file we pass), check
 * (after the migration: nothing arrived since), thaw (the save failed).
 *
 * Trust boundary: the server's answers are bounded words; its death is judged from its exit
 * status. Loop thread (the calls around a save block it, as the rest of the save does).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "confine.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "scfilter.h"
#include "unixsock.h"

#define WS_LOG "ws9p.log"
#define WS_CALL_MS 2000
#define WS_QUIESCE_MS 6000 /* the server's own drain bound (3 s) and the state's write */

struct vmws {
	int ctl; /* our end of the control socket */
	pid_t pid;
	struct watch *w_pid;
};

/* Send word (with fd when >= 0) and wait up to timeout_ms for "ok" or "error: ...". */
static int ws_call(struct vmws *w, const char *word, int fd, int timeout_ms, char *err,
		   size_t errlen)
{
	char ans[256];
	if (fd_send_with_fd(w->ctl, word, strlen(word), fd) < 0) {
		snprintf(err, errlen, "the workspace server is gone");
		return -EPIPE;
	}
	struct pollfd p = { .fd = w->ctl, .events = POLLIN };
	int k = poll(&p, 1, timeout_ms);
	ssize_t n = k > 0 ? read(w->ctl, ans, sizeof(ans) - 1) : -1;
	if (n <= 0) {
		snprintf(err, errlen, "the workspace server did not answer %s", word);
		return -ETIMEDOUT;
	}
	ans[n] = 0;
	if (streq(ans, "ok"))
		return 0;
	snprintf(err, errlen, "the workspace server: %s", ans);
	return -EIO;
}

/* The server ended: fatal while the VM runs (the guest's workspace I/O would hang). */
static void on_ws_exit(struct watch *wt, int events)
{
	struct vm *vm = wt->vm;
	struct vmws *w = vm->ws;
	int st = 0;
	(void)events;
	if (!w || waitpid(w->pid, &st, WNOHANG) <= 0)
		return;
	pid_t pid = w->pid;
	w->pid = 0;
	watch_close(&w->w_pid);
	if (vm->state == VM_STOPPING || vm->state == VM_DONE || vm->qemu_exited)
		return;
	char how[256];
	scf_describe_exit(pid, st, how, sizeof(how));
	vm_fail(vm, "the workspace's 9p server (capsem-vm --ws9p-serve) %s; its log: %s/" WS_LOG,
		how, vm->o.vmdir);
}

static void ws_free(struct vmws *w)
{
	if (!w)
		return;
	safe_close(w->ctl);
	if (w->pid > 0) {
		kill(w->pid, SIGKILL);
		(void)waitpid(w->pid, NULL, 0);
	}
	watch_close(&w->w_pid);
	free(w);
}

int vm_ws_start(struct vm *vm)
{
	char err[256];
	_cleanup_free_ char *self = realpath("/proc/self/exe", NULL);
	if (!self)
		return log_error_errno(negative_errno(), "cannot find capsem-vm's own binary");
	_cleanup_close_ int lfd = -1, log_fd = -1;
	int r = vm_helper_files(vm, WS_SOCKET, WS_LOG, &lfd, &log_fd);
	if (r < 0)
		return r;
	int sv[2] = { -1, -1 }, pidfd = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return log_error_errno(negative_errno(),
				       "cannot make the workspace server's socket");
	struct vmws *w = calloc(1, sizeof(*w));
	if (!w) {
		safe_close(sv[0]);
		safe_close(sv[1]);
		return log_oom();
	}
	w->ctl = sv[0];
	char *argv[] = { self, (char *)"--ws9p-serve", vm->o.workspace, NULL };
	struct confine_opts co = { .flags = CONFINE_NO_NEW_PRIVS, .landlock_fd = -1 };
	r = confine_spawn(argv, log_fd, sv[1], &co, &w->pid, &pidfd);
	safe_close(sv[1]);
	if (r < 0) {
		ws_free(w);
		return log_error_errno(r, "cannot start the workspace server");
	}
	w->w_pid = watch_new(vm, pidfd, UV_READABLE, 0, on_ws_exit);
	if (!w->w_pid) {
		ws_free(w);
		return log_oom();
	}
	r = ws_call(w, "listen", lfd, WS_CALL_MS, err, sizeof(err));
	if (r == 0 && vm->o.incoming) { /* a resume: the server's fids and held replies */
		_cleanup_close_ int sfd = open(WS_STATE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (sfd < 0 && errno == ENOENT) {
			snprintf(err, sizeof(err),
				 "%s/" WS_STATE " is missing (saved by a Capsem without the "
				 "workspace port?); stop the VM to discard its saved state",
				 vm->o.vmdir);
			r = -ENOENT;
		} else if (sfd < 0) {
			snprintf(err, sizeof(err), "%s/" WS_STATE ": %s", vm->o.vmdir,
				 strerror(errno));
			r = -EIO;
		}
		if (r == 0)
			r = ws_call(w, "restore", sfd, WS_CALL_MS, err, sizeof(err));
	}
	if (r < 0) {
		ws_free(w);
		return log_error("cannot %s the workspace: %s", vm->o.incoming ? "resume" : "serve",
				 err),
		       r;
	}
	vm->ws = w;
	log_debug("workspace server %d serves %s", (int)w->pid, vm->o.workspace);
	return 0;
}

void vm_ws_stop(struct vm *vm)
{
	ws_free(vm->ws); /* its state, when it matters, was written by a quiesce */
	vm->ws = NULL;
	(void)unlink(WS_SOCKET);
}

int vm_ws_quiesce(struct vm *vm, char *err, size_t errlen)
{
	if (!vm->ws)
		return 0;
	_cleanup_close_ int fd =
		open(WS_STATE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	int r = fd < 0 ? negative_errno() : 0;
	if (r < 0)
		snprintf(err, errlen, "cannot create %s/" WS_STATE ".tmp: %s", vm->o.vmdir,
			 strerror(-r));
	else
		r = ws_call(vm->ws, "quiesce", fd, WS_QUIESCE_MS, err, errlen);
	if (r == 0 && fsync(fd) < 0)
		r = negative_errno();
	if (r == 0 && rename(WS_STATE ".tmp", WS_STATE) < 0)
		r = negative_errno();
	if (r < 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot keep the workspace server's state: %s",
				 strerror(-r));
		(void)unlink(WS_STATE ".tmp");
	}
	return r;
}

int vm_ws_check(struct vm *vm, char *err, size_t errlen)
{
	return vm->ws ? ws_call(vm->ws, "check", -1, WS_CALL_MS, err, errlen) : 0;
}

void vm_ws_thaw(struct vm *vm)
{
	char err[8];
	(void)unlink(WS_STATE);
	if (vm->ws)
		(void)ws_call(vm->ws, "thaw", -1, WS_CALL_MS, err, sizeof(err));
}
