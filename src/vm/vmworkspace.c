/* vmworkspace.c - capsem-vm's side of the workspace: virtiofsd started on the --workspace folder
 * (virtiofs.c builds its command line and spawns it), watched through its pidfd and stopped with
 * the VM; as a normal user the folder becomes a 9p share instead.
 *
 * Trust boundary: virtiofsd parses the guest's FUSE requests and confines itself; here it is
 * only started, watched and killed. Its log is read (capped) for the error message. Loop thread.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "strv.h"
#include "unixsock.h"
#include "virtiofs.h"

/* virtiofsd is gone while QEMU still runs: fatal, the guest's workspace I/O would hang. */
static void virtiofsd_failed(struct vm *vm)
{
	_cleanup_free_ char *tail = NULL;
	if (vm->state == VM_STOPPING || vm->state == VM_DONE || vm->qemu_exited)
		return;
	(void)read_file_small(VIRTIOFS_LOG, 2048, &tail, NULL);
	if (tail)
		tail[strcspn(tail, "\n")] = 0;
	vm_fail(vm, "virtiofsd (the workspace's file server) %s%s%s; its log: %s/" VIRTIOFS_LOG,
		vm->vfs_why, tail && *tail ? ": " : "", tail ? tail : "", vm->o.vmdir);
}

static void on_vfs_timer(uv_timer_t *t)
{
	virtiofsd_failed(t->data);
}

/* virtiofsd ended. Status 0 is its answer to QEMU closing the connection (the guest powered
 * off, or QEMU died): QEMU's exit decides then, unless QEMU is still there a moment later. Any
 * other end is a crash. */
static void on_virtiofsd_exit(struct watch *w, int events)
{
	struct vm *vm = w->vm;
	int st = 0;
	(void)events;
	if (waitpid(vm->vfs_pid, &st, WNOHANG) <= 0)
		return;
	vm->vfs_pid = 0;
	watch_close(&vm->w_vfs);
	snprintf(vm->vfs_why, sizeof(vm->vfs_why), "%s %d",
		 WIFEXITED(st) ? "exited with status" : "was killed by signal",
		 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		uv_timer_start(&vm->vfs_timer, on_vfs_timer, VFS_QEMU_GRACE_MS, 0);
	else
		virtiofsd_failed(vm);
}

/* Start virtiofsd on the --workspace directory, listening on VIRTIOFS_SOCKET (made here, handed
 * over as fd 3, so QEMU can connect at once). */
int vm_workspace_start(struct vm *vm)
{
	_cleanup_free_ char *bin = NULL;
	_cleanup_strv_free_ char **argv = NULL;
	int r = virtiofs_find(&bin);
	if (r < 0)
		return log_error("--workspace needs virtiofsd: not found at " VIRTIOFS_DEFAULT_BIN
				 " or in PATH (install qemu-system-common), or set "
				 "CAPSEM_VIRTIOFSD"),
		       r;
	argv = virtiofs_argv(bin, vm->o.workspace);
	if (!argv)
		return log_oom();
	_cleanup_close_ int lfd = unix_listen(VIRTIOFS_SOCKET, 1);
	if (lfd < 0)
		return log_error_errno(lfd, "cannot listen on %s/" VIRTIOFS_SOCKET, vm->o.vmdir);
	_cleanup_close_ int log_fd =
		open(VIRTIOFS_LOG, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "cannot create %s/" VIRTIOFS_LOG,
				       vm->o.vmdir);
	/* virtiofsd blocks in accept: the socket must not be non-blocking for it */
	int fl = fcntl(lfd, F_GETFL);
	if (fl < 0 || fcntl(lfd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return log_error_errno(negative_errno(), "cannot prepare the virtiofsd socket");
	int pidfd;
	r = virtiofs_spawn(argv, lfd, log_fd, &vm->vfs_pid, &pidfd);
	if (r < 0)
		return log_error_errno(r, "cannot start %s", bin);
	vm->w_vfs = watch_new(vm, pidfd, UV_READABLE, 0, on_virtiofsd_exit);
	if (!vm->w_vfs)
		return log_oom();
	log_debug("virtiofsd %d serves %s", (int)vm->vfs_pid, vm->o.workspace);
	return 0;
}

/* virtiofsd ends with the VM: it goes when QEMU closes the connection; make sure of it. */
void vm_workspace_stop(struct vm *vm)
{
	if (vm->vfs_pid > 0) {
		kill(vm->vfs_pid, SIGKILL);
		(void)waitpid(vm->vfs_pid, NULL, 0);
		vm->vfs_pid = 0;
	}
	watch_close(&vm->w_vfs);
	(void)unlink(VIRTIOFS_SOCKET);
}

/* The workspace's transport. Debian's C virtiofsd must run as root: as a normal user it would
 * need a user namespace, where it cannot drop its supplementary groups (setgroups is denied to
 * an unprivileged user namespace), so it exits. Then the workspace is a 9p share on the same
 * path, served by QEMU as the user (files belong to the user as with virtio-fs; slower). */
int vm_workspace_transport(struct vm_opts *o)
{
	if (!o->workspace || geteuid() == 0)
		return 0;
	if (o->n_mounts >= QEMU_MAX_MOUNTS)
		return log_error("--workspace: no room for it among %d --mounts", QEMU_MAX_MOUNTS),
		       -EINVAL;
	for (size_t i = 0; i < o->n_mounts; i++)
		if (streq(o->mounts[i].guest, VIRTIOFS_GUEST_PATH))
			return log_error("--workspace and --mount ...:" VIRTIOFS_GUEST_PATH
					 " both name the workspace"),
			       -EINVAL;
	char *host = strdup(o->workspace), *guest = strdup(VIRTIOFS_GUEST_PATH);
	if (!host || !guest) {
		free(host);
		free(guest);
		return log_oom();
	}
	o->mounts[o->n_mounts++] = (struct qemu_mount){ .host = host, .guest = guest };
	o->workspace_9p = 1;
	log_info("the workspace is shared over 9p (virtiofsd needs root)");
	return 0;
}
