/* vmworkspace.c - capsem-vm's side of the workspace: virtiofsd started on the --workspace folder
 * (virtiofs.c builds its command line and spawns it), watched through its pidfd and stopped with
 * the VM; as a normal user the folder becomes a 9p share instead.
 *
 * The file audit (src/workspace/wsaudit.c) watches the same folder from the host and writes its
 * changes to the session ledger as fs rows.
 *
 * Trust boundary: virtiofsd parses the guest's FUSE requests and is confined (virtiofs.c: its
 * chroot inside a Landlock ruleset of its own, or its namespace sandbox); here it is only
 * started, watched and killed. Its log is read (capped) for the error message. The audit
 * reads the guest's file names through wstree's safe lookups. Loop thread.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "confinfo.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "scfilter.h"
#include "strv.h"
#include "unixsock.h"
#include "ledger.h"
#include "virtiofs.h"
#include "wsaudit.h"

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
	scf_describe_exit(vm->vfs_pid, st, vm->vfs_why, sizeof(vm->vfs_why));
	vm->vfs_pid = 0;
	watch_close(&vm->w_vfs);
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
	/* under Landlock (capsemd's domain forbids pivot_root) it chroots, see virtiofs.c */
	int chroot_sandbox = confinfo_virtiofsd_chroot();
	argv = virtiofs_argv(bin, vm->o.workspace, chroot_sandbox);
	if (!argv)
		return log_oom();
	_cleanup_close_ int lfd = -1, log_fd = -1;
	r = vm_helper_files(vm, VIRTIOFS_SOCKET, VIRTIOFS_LOG, &lfd, &log_fd);
	if (r < 0)
		return r;
	/* virtiofsd blocks in accept: the socket must not be non-blocking for it */
	int fl = fcntl(lfd, F_GETFL);
	if (fl < 0 || fcntl(lfd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return log_error_errno(negative_errno(), "cannot prepare the virtiofsd socket");
	int pidfd;
	r = virtiofs_spawn(argv, vm->o.workspace, chroot_sandbox, lfd, log_fd, &vm->vfs_pid,
			   &pidfd);
	if (r < 0)
		return log_error_errno(r, "cannot start %s", bin);
	vm->w_vfs = watch_new(vm, pidfd, UV_READABLE, 0, on_virtiofsd_exit);
	if (!vm->w_vfs)
		return log_oom();
	log_debug("virtiofsd %d serves %s (%s sandbox)", (int)vm->vfs_pid, vm->o.workspace,
		  chroot_sandbox ? "chroot + Landlock" : "namespace");
	return 0;
}

int vm_helper_files(struct vm *vm, const char *sock, const char *log, int *ret_lfd, int *ret_log)
{
	_cleanup_close_ int lfd = unix_listen(sock, 1);
	if (lfd < 0)
		return log_error_errno(lfd, "cannot listen on %s/%s", vm->o.vmdir, sock);
	int log_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "cannot create %s/%s", vm->o.vmdir, log);
	*ret_lfd = TAKE_FD(lfd);
	*ret_log = log_fd;
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

/* Can virtiofsd hold an fd for every inode the guest caches? It keeps an O_PATH fd per inode
 * the guest holds (C virtiofsd has no file handles), so it needs far more than the usual 1024;
 * it raises its own limit, which takes a high hard limit or CAP_SYS_RESOURCE. We try to raise
 * ours (it inherits it); a host that allows neither (a container without CAP_SYS_RESOURCE)
 * gets the 9p share instead of a virtio-fs that fails with EMFILE on a large repository. */
static int nofile_ok(rlim_t *ret_hard)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1; /* nothing known: let virtiofsd try */
	*ret_hard = rl.rlim_max;
	if (rl.rlim_max >= VIRTIOFS_MIN_NOFILE)
		return 1;
	struct rlimit want = { VIRTIOFS_MIN_NOFILE, VIRTIOFS_MIN_NOFILE };
	return setrlimit(RLIMIT_NOFILE, &want) == 0;
}

/* The workspace's transport: on the serial channel (a VM that can be saved) capsem-vm's own 9p
 * server over a port (vmws.c); for the others CAPSEM_WORKSPACE_TRANSPORT=auto|serial|virtiofs|9p,
 * default auto. Debian's C virtiofsd must run as root: as a normal user it would need a user namespace, where
 * it cannot drop its supplementary groups (setgroups is denied to an unprivileged user
 * namespace), so it exits; and it needs a high open-file limit (nofile_ok). Otherwise the
 * workspace is a 9p share on the same path, served by QEMU as the user (files belong to the
 * user as with virtio-fs; slower). */
int vm_workspace_transport(struct vm_opts *o)
{
	const char *want = getenv("CAPSEM_WORKSPACE_TRANSPORT");
	rlim_t hard = 0;
	if (!o->workspace)
		return 0;
	if (want && *want && !streq(want, "auto") && !streq(want, "virtiofs") &&
	    !streq(want, "9p") && !streq(want, "serial"))
		return log_error("CAPSEM_WORKSPACE_TRANSPORT: auto, serial, virtiofs or 9p, not "
				 "'%s'",
				 want),
		       -EINVAL;
	/* a VM on the serial channel is one that can be saved: its workspace must be too, so
	 * the variable chooses only for the others */
	if (o->chan_serial || (want && streq(want, "serial"))) {
		o->workspace_serial = 1;
		return 0;
	}
	int forced_vfs = want && streq(want, "virtiofs");
	if (forced_vfs && geteuid() != 0)
		log_warn("CAPSEM_WORKSPACE_TRANSPORT=virtiofs: virtiofsd needs root; using 9p");
	if (geteuid() == 0 && (forced_vfs || (!(want && streq(want, "9p")) && nofile_ok(&hard))))
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
	if (want && streq(want, "9p"))
		log_info("the workspace is shared over 9p (CAPSEM_WORKSPACE_TRANSPORT=9p)");
	else if (geteuid() != 0)
		log_info("the workspace is shared over 9p (virtiofsd needs root)");
	else
		log_warn("the workspace is shared over 9p: this host lets a process open only %llu "
			 "files and cannot raise it (no CAP_SYS_RESOURCE); virtiofsd holds one per "
			 "file the guest caches and would fail on large trees",
			 (unsigned long long)hard);
	return 0;
}

const char *vm_workspace_transport_name(const struct vm_opts *o)
{
	if (!o->workspace)
		return NULL;
	return o->workspace_serial ? "serial" : o->workspace_9p ? "9p" : "virtiofs";
}

/* ---- the file audit ---- */

static void on_audit_change(const struct wsaudit_change *c, void *userdata)
{
	struct vm *vm = userdata;
	struct ledger_fs ev = LEDGER_FS_INIT;
	ev.ts = c->ts;
	ev.action = c->action;
	ev.path = c->path;
	ev.old_path = c->old_path;
	ev.type = c->type;
	ev.size = c->size;
	ev.count = c->count;
	ev.detail = c->detail;
	ev.source = c->source;
	(void)ledger_fs(vm->ledger, &ev); /* a full queue is counted by the ledger itself */
}

static void on_audit_timer(uv_timer_t *t);

static void audit_flush(struct vm *vm)
{
	int64_t next = wsaudit_flush(vm->audit, ledger_now_ms(), 0);
	if (next >= 0)
		uv_timer_start(&vm->audit_timer, on_audit_timer, (uint64_t)next + 1, 0);
	else
		uv_timer_stop(&vm->audit_timer);
}

static void on_audit_timer(uv_timer_t *t)
{
	audit_flush(t->data);
}

static void on_audit_readable(uv_poll_t *p, int status, int events)
{
	struct vm *vm = p->data;
	(void)events;
	if (status < 0)
		return;
	(void)wsaudit_read(vm->audit, ledger_now_ms());
	audit_flush(vm);
}

int vm_audit_start(struct vm *vm)
{
	if (!vm->ledger || !vm->o.workspace)
		return 0;
	if (vm->o.no_ws_audit) { /* not the agent's work (a pod's container roots): no rows */
		log_debug("file audit of %s off (--no-workspace-audit)", vm->o.workspace);
		return 0;
	}
	_cleanup_close_ int fd = open(vm->o.workspace, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(negative_errno(), "--workspace %s", vm->o.workspace);
	int r = wsaudit_new(fd, on_audit_change, vm, &vm->audit);
	if (r < 0) {
		/* the VM runs without it: say what is not recorded */
		log_warn_errno(r, "the workspace's file audit is off (cannot watch %s)",
			       vm->o.workspace);
		return 0;
	}
	struct wsaudit_stats st;
	wsaudit_get_stats(vm->audit, &st);
	if (st.unwatched)
		log_warn("file audit: %llu directories of the workspace are beyond the kernel's "
			 "inotify watch limit (fs.inotify.max_user_watches): their changes are "
			 "found "
			 "at stop",
			 (unsigned long long)st.unwatched);
	uv_timer_init(vm->loop, &vm->audit_timer);
	vm->audit_timer.data = vm;
	uv_poll_init(vm->loop, &vm->audit_poll, wsaudit_fd(vm->audit));
	vm->audit_poll.data = vm;
	uv_poll_start(&vm->audit_poll, UV_READABLE, on_audit_readable);
	log_debug("file audit on %s: %llu paths, %llu directories watched", vm->o.workspace,
		  (unsigned long long)st.indexed, (unsigned long long)st.watches);
	return 0;
}

/* The guest can write no more: what inotify still holds, then a walk for anything missed. */
void vm_audit_stop(struct vm *vm)
{
	if (!vm->audit)
		return;
	uv_poll_stop(&vm->audit_poll);
	uv_close((uv_handle_t *)&vm->audit_poll, NULL);
	uv_close((uv_handle_t *)&vm->audit_timer, NULL);
	int64_t now = ledger_now_ms();
	(void)wsaudit_read(vm->audit, now);
	int r = wsaudit_reconcile(vm->audit, now);
	if (r < 0)
		log_warn_errno(r, "file audit: the last pass over %s failed", vm->o.workspace);
	wsaudit_free(vm->audit);
	vm->audit = NULL;
}
