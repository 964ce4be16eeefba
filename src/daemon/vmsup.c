/* vmsup.c - capsemd's side of one capsem-vm supervisor: boot, spawn, watch, stop, re-adopt.
 *
 * Boot: a worker thread verifies the image and, for named VMs, creates and formats the disk
 * (mkfs.ext4) -> capsem-vm is spawned in its own session (stdio to <vmdir>/vm.log, no inherited
 * fds; the control socket is bound here first and passed as --control-fd) -> its control socket
 * (<vmdir>/supervisor.sock, JSON lines) reports booting / ready / error / stopped. A pidfd tells
 * when the supervisor process is gone; together with the control socket's EOF that ends the
 * run: "stopped" when a stop was asked for and reported, otherwise "crashed" with the reason.
 * The supervisor outlives the daemon: at start-up, vmctl_recover() reconnects to every live one
 * (checked through /proc/<pid>/cmdline and its control socket) and marks the others crashed.
 *
 * Session ledger (docs/LEDGER.md): every start of a VM is a new boot (rec.boot, kept in
 * vm.json) and capsem-vm gets --ledger <home>/sessions/<id>-<boot>.db: it is the database's
 * only writer. The daemon adds what only it knows as {"cmd":"ledger","event":...} lines on the
 * control connection: the VM's name and image at ready (vm_ledger_write). capsem-vm records
 * exec sessions itself and reports each commit as a {"event":"ledger","last_id":N} line, which
 * wakes the long-polls on that session (vmctl_on_ledger). When a VM's supervisor is found dead, the exec rows of its session that
 * never saw their end are marked so (ledger_mark_unfinished). At start-up (vmctl_recover) the
 * newest LEDGER_KEEP_SESSIONS session files are kept.
 *
 * Trust: capsem-vm is our own program, but its event lines are still parsed with a cap and
 * type-checked. Thread: the loop; the boot preparation runs on libuv's worker pool and touches
 * only its own job.
 */
#include "vmctl-internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "dconfine.h"
#include "fdutil.h"
#include "home.h"
#include "landlock.h"
#include "ledger.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "parse.h"
#include "query.h"
#include "scfilter.h"
#include "strv.h"
#include "unixsock.h"

extern char **environ;

static void mark_unfinished_execs(struct vm *vm, const char *why);

/* ---- the end of a supervisor run ---- */

/* Both the process and its control connection are gone: settle the VM's state. */
/* <vmdir>/VM_SUSPEND_STATE exists */
static int state_saved(const struct vm *vm)
{
	_cleanup_free_ char *p = vmctl_path_join(vm->rec.vmdir, VM_SUSPEND_STATE);
	return p && access(p, F_OK) == 0;
}

static void drop_ram_file(struct vm *vm)
{
	const char *files[] = { VM_RAM_FILE, SNAPSTART_RAM, SNAPSTART_STATE, NULL };
	vmctl_unlink_in(vm, files);
}

static void vm_settle(struct vm *vm)
{
	if (!vm->proc_gone || !vm->ctl_closed || vm->job)
		return;
	if (vm->rec.state != VM_CREATING && vm->rec.state != VM_RUNNING &&
	    vm->rec.state != VM_STOPPING)
		return;
	uv_timer_stop(vm->timer);
	vm->rec.pid = 0;
	int resume_failed = vm->resuming && vm->fail && state_saved(vm);
	vm->resuming = vm->suspending = 0;
	if (vm->suspended && !vm->fail && !vm->stop_requested) {
		vm->rec.state = VM_SUSPENDED; /* its state is in <vmdir>/VM_SUSPEND_STATE */
		if (vm->snapstarted) /* its RAM went into the stream: the link is not needed */
			vmctl_unlink_in(vm, (const char *const[]){ SNAPSTART_RAM, NULL });
		vmctl_set_str(&vm->rec.error, NULL);
		log_info("VM %s suspended", vm->rec.id);
	} else if (resume_failed) { /* still suspended: the saved state is intact */
		vm->rec.state = VM_SUSPENDED;
		vmctl_set_str(&vm->rec.error, vm->fail);
		log_warn("VM %s: the resume failed: %s", vm->rec.id, vm->fail);
	} else if ((vm->stop_requested || vm->guest_stopped) && !vm->fail) {
		vm->rec.state = VM_STOPPED;
		vmctl_set_str(&vm->rec.error, NULL);
		drop_ram_file(vm); /* the guest RAM of a stopped VM is nothing to keep */
	} else {
		char *why = NULL;
		if (vm->fail)
			why = strdup(vm->fail);
		else if (vm->exit_status >= 128)
			(void)!asprintf(&why, "capsem-vm was killed by signal %d",
					vm->exit_status - 128);
		else if (vm->exit_status >= 0)
			(void)!asprintf(&why,
					"capsem-vm exited with status %d without reporting "
					"a stop",
					vm->exit_status);
		else
			why = strdup("capsem-vm went away without reporting a stop");
		vm->rec.state = VM_CRASHED;
		free(vm->rec.error);
		vm->rec.error = why;
		log_warn("VM %s crashed: %s", vm->rec.id, strempty(why));
		mark_unfinished_execs(vm, strempty(why));
	}
	vmctl_remove_sockets(vm->rec.vmdir);
	int del = (!vm->rec.persistent || vm->delete_on_stop || vm->never_ready) &&
		  vm->rec.state != VM_SUSPENDED;
	vm->suspended = 0;
	if (del) {
		/* gone from disk before anyone is told */
		int r = rm_rf(vm->rec.vmdir);
		if (r < 0)
			log_warn_errno(r, "cannot remove %s", vm->rec.vmdir);
		log_info("VM %s deleted", vm->rec.id);
	} else {
		vmctl_vm_save(vm);
	}
	vmctl_notify(vm, VM_WAIT_READY, 0);
	vmctl_notify(vm, VM_WAIT_SUSPENDED, vm->rec.state == VM_SUSPENDED && !resume_failed);
	vmctl_notify(vm, VM_WAIT_STOPPED, 1);
	if (del)
		vmctl_vm_free(vm);
}

/* ---- the supervisor's pid ---- */

static void pidwatch_closed(uv_handle_t *h)
{
	struct pidwatch *pw = h->data;
	safe_close(pw->fd);
	free(pw);
}

/* capsem-vm was killed by its seccomp filter: say so in its log (capsem logs VM --source vm)
 * and as the VM's error, with the syscall's name when the kernel's audit record is readable */
static void report_sigsys(struct vm *vm, pid_t pid)
{
	char how[256], line[512];
	scf_describe_sigsys((int)pid, how, sizeof(how));
	log_warn("VM %s: capsem-vm (pid %d) %s", vm->rec.id, (int)pid, how);
	_cleanup_free_ char *logp = vmctl_path_join(vm->rec.vmdir, "vm.log");
	_cleanup_close_ int fd =
		logp ? open(logp, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW) : -1;
	int n = snprintf(line, sizeof(line), "capsemd: capsem-vm %s\n", how);
	if (fd >= 0 && n > 0)
		(void)fd_write_all(fd, line, MIN((size_t)n, sizeof(line) - 1));
	if (!vm->fail && asprintf(&vm->fail, "capsem-vm %s", how) < 0)
		vm->fail = NULL;
}

static void on_pid(uv_poll_t *h, int status, int events)
{
	struct pidwatch *pw = h->data;
	int st = 0, code = -1;
	if (pw->child) {
		pid_t r = waitpid(pw->pid, &st, WNOHANG);
		if (r == 0)
			return;
		if (r == pw->pid)
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	uv_poll_stop(h);
	uv_close((uv_handle_t *)h, pidwatch_closed);
	struct vm *vm = pw->vm;
	if (!vm)
		return;
	if (code == 128 + SIGSYS)
		report_sigsys(vm, pw->pid);
	vm->pw = NULL;
	vm->proc_gone = 1;
	vm->exit_status = code;
	log_debug("VM %s: capsem-vm (pid %d) exited (%d)", vm->rec.id, (int)pw->pid, code);
	if (!vm->cc) {
		/* never connected: nothing more will come */
		uv_timer_stop(vm->timer);
		vm->ctl_closed = 1;
	}
	vm_settle(vm);
}

static int pidwatch_start(struct vm *vm, pid_t pid, int child)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return negative_errno();
	struct pidwatch *pw = calloc(1, sizeof(*pw));
	if (!pw) {
		safe_close(fd);
		return -ENOMEM;
	}
	*pw = (struct pidwatch){ .fd = fd, .pid = pid, .child = child, .vm = vm };
	uv_poll_init(vm->ctl->loop, &pw->h, fd);
	pw->h.data = pw;
	uv_poll_start(&pw->h, UV_READABLE, on_pid);
	vm->pw = pw;
	vm->proc_gone = 0;
	return 0;
}

static int supervisor_alive(pid_t pid, const char *vmdir);

/* Signal the VM's supervisor through a pidfd, never a bare pid that may have been reused: the
 * watched one, else a pidfd opened now and checked (after opening, so the pid cannot change
 * hands in between) to still be capsem-vm of this VM's directory. */
void vmsup_signal(struct vm *vm, int sig)
{
	if (vm->pw) {
		syscall(SYS_pidfd_send_signal, vm->pw->fd, sig, NULL, 0);
		return;
	}
	if (vm->rec.pid <= 1)
		return;
	_cleanup_close_ int fd = (int)syscall(SYS_pidfd_open, vm->rec.pid, 0);
	if (fd >= 0 && supervisor_alive(vm->rec.pid, vm->rec.vmdir))
		syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

/* Whether the watched supervisor has exited (its pidfd is readable), without a bare pid. */
static bool supervisor_exited(const struct pidwatch *pw)
{
	struct pollfd pf = { .fd = pw->fd, .events = POLLIN };
	return poll(&pf, 1, 0) > 0;
}

/* ---- the control connection ---- */

static void ledger_send_session(struct vm *vm);

static void handle_event(struct vm *vm, json_t *ev)
{
	const char *e = json_string_value(json_object_get(ev, "event"));
	if (!e)
		return;
	if (streq(e, "ready")) {
		json_int_t qp = json_integer_value(json_object_get(ev, "qemu_pid"));
		vm->qemu_pid = qp > 0 && qp < INT32_MAX ? (pid_t)qp : 0;
		if (vm->rec.state == VM_CREATING) {
			vm->rec.state = VM_RUNNING;
			vm->never_ready = 0;
			registry_now(vm->rec.started);
			vm->rec.boot_ms = json_number_value(json_object_get(ev, "boot_ms"));
			const char *accel = json_string_value(json_object_get(ev, "accel"));
			snprintf(vm->rec.accel, sizeof(vm->rec.accel), "%s",
				 accel && (streq(accel, "kvm") || streq(accel, "tcg")) ? accel
										       : "");
			const char *wt =
				json_string_value(json_object_get(ev, "workspace_transport"));
			snprintf(vm->rec.ws_transport, sizeof(vm->rec.ws_transport), "%s",
				 wt && registry_ws_transport_valid(wt) ? wt : "");
			vmctl_set_str(&vm->rec.error, NULL);
			vmctl_vm_save(vm);
			ledger_send_session(vm);
			log_info("VM %s ready in %.0f ms", vm->rec.id, vm->rec.boot_ms);
		}
		vmctl_notify(vm, VM_WAIT_READY, 1);
	} else if (streq(e, "error")) {
		const char *m = json_string_value(json_object_get(ev, "message"));
		const char *t = json_string_value(json_object_get(ev, "serial_tail"));
		if (!vm->fail)
			vmctl_set_str(&vm->fail, m ? m : "capsem-vm reported an error");
		if (t)
			vmctl_set_str(&vm->serial_tail, t);
	} else if (streq(e, "ledger")) {
		/* rows committed to the current boot's session ledger: wake long-polls on it */
		json_t *v = json_object_get(ev, "last_id");
		struct vmctl *c = vm->ctl;
		char session[REGISTRY_ID_LEN + 16];
		if (c->on_ledger && json_is_integer(v) && json_integer_value(v) > 0 &&
		    vm->rec.boot > 0) {
			snprintf(session, sizeof(session), "%s-%u", vm->rec.id, vm->rec.boot);
			c->on_ledger(c->on_ledger_data, session, (int64_t)json_integer_value(v));
		}
	} else if (streq(e, "suspended")) {
		vm->suspended = 1;
	} else if (streq(e, "suspend_failed")) {
		const char *m = json_string_value(json_object_get(ev, "message"));
		vm->suspending = 0;
		vmctl_set_str(&vm->suspend_error, m ? m : "the suspend failed");
		if (vm->rec.state == VM_STOPPING && !vm->stop_requested)
			vm->rec.state = VM_RUNNING;
		vmctl_vm_save(vm);
		vmctl_notify(vm, VM_WAIT_SUSPENDED, 0);
	} else if (streq(e, "stopped")) {
		vm->seen_stopped = 1;
		const char *reason = json_string_value(json_object_get(ev, "reason"));
		if (reason && streq(reason, "suspended") && vm->suspended)
			return; /* what vm_settle turns into "suspended" */
		/* the guest's own halt/poweroff/reboot is a stop; any other stop nobody asked for
		 * is a crash, with the supervisor's reason */
		if (reason && streq(reason, "guest-poweroff"))
			vm->guest_stopped = 1;
		else if (!vm->stop_requested && !vm->fail)
			vmctl_set_str(&vm->fail, reason && !streq(reason, "stopped") &&
								 !streq(reason, "requested")
							 ? reason
							 : "the VM stopped by itself");
	}
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct ctlconn *cc = h->data;
	uint8_t *p = buf_reserve(&cc->in, 4096);
	*b = uv_buf_init((char *)p, p ? 4096 : 0);
}

static void ctlconn_closed(uv_handle_t *h)
{
	struct ctlconn *cc = h->data;
	buf_done(&cc->in, 0);
	free(cc);
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct ctlconn *cc = s->data;
	struct vm *vm = cc->vm;
	if (nread > 0) {
		buf_commit(&cc->in, (size_t)nread);
		const uint8_t *nl;
		while (cc->vm && (nl = memchr(buf_head(&cc->in), '\n', buf_len(&cc->in)))) {
			size_t n = (size_t)(nl - buf_head(&cc->in));
			json_t *ev = json_loadb((const char *)buf_head(&cc->in), n, 0, NULL);
			buf_consume(&cc->in, n + 1);
			if (ev)
				handle_event(cc->vm, ev);
			json_decref(ev);
		}
		return;
	}
	if (nread == 0)
		return;
	uv_close((uv_handle_t *)s, ctlconn_closed);
	if (!vm)
		return;
	vm->cc = NULL;
	vm->ctl_closed = 1;
	if (vm->pw && !vm->pw->child && supervisor_exited(vm->pw))
		vm->proc_gone = 1;
	vm_settle(vm);
}

static int ctlconn_open(struct vm *vm, int fd)
{
	struct ctlconn *cc = calloc(1, sizeof(*cc));
	if (!cc) {
		safe_close(fd);
		return -ENOMEM;
	}
	uv_pipe_init(vm->ctl->loop, &cc->h, 0);
	cc->h.data = cc;
	cc->vm = vm;
	buf_init(&cc->in, CTL_LINE_MAX);
	int r = uv_pipe_open(&cc->h, fd);
	if (r < 0) {
		safe_close(fd);
		uv_close((uv_handle_t *)&cc->h, ctlconn_closed);
		return r;
	}
	uv_read_start((uv_stream_t *)&cc->h, ctl_alloc, on_ctl_read);
	vm->cc = cc;
	vm->ctl_closed = 0;
	return 0;
}

static void on_write_done(uv_write_t *w, int status)
{
	free(w);
}

static int send_cmd(struct vm *vm, char *cmd, size_t n)
{
	if (!vm->cc)
		return -ENOTCONN;
	uv_write_t *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	uv_buf_t b = uv_buf_init(cmd, (unsigned)n);
	int r = uv_write(w, (uv_stream_t *)&vm->cc->h, &b, 1, on_write_done);
	if (r < 0)
		free(w);
	return r;
}

int vmsup_send_suspend(struct vm *vm)
{
	static char cmd[] = "{\"cmd\":\"suspend\"}\n";
	return send_cmd(vm, cmd, sizeof(cmd) - 1);
}

int vmsup_send_stop(struct vm *vm)
{
	static char cmd[] = "{\"cmd\":\"stop\"}\n";
	return send_cmd(vm, cmd, sizeof(cmd) - 1);
}

struct owned_write {
	uv_write_t w;
	char *data;
};

static void on_owned_write_done(uv_write_t *w, int status)
{
	struct owned_write *ow = (struct owned_write *)w;
	free(ow->data);
	free(ow);
}

/* capsem-vm died: the exec rows of its session that never saw their end say so (it was their
 * only writer, so nobody else can). A small SQLite update on the loop, once per crash. */
static void mark_unfinished_execs(struct vm *vm, const char *why)
{
	_cleanup_free_ char *path = NULL, *reason = NULL;
	unsigned n = 0;
	if (vm_session_path(vm, &path) < 0 ||
	    asprintf(&reason, "the VM's supervisor ended before the command's end was seen (%s)",
		     why) < 0) {
		reason = NULL;
		return;
	}
	int r = ledger_mark_unfinished(path, reason, &n);
	if (r < 0 && r != -ENOENT)
		log_warn_errno(r, "VM %s: cannot mark unfinished execs in %s", vm->rec.id, path);
	else if (n > 0)
		log_info("VM %s: %u exec(s) without an end marked in the session ledger",
			 vm->rec.id, n);
}

static int vm_ledger_write(struct vm *vm, char *line, size_t n)
{
	if (!vm->cc || vm->rec.state == VM_STOPPED || vm->rec.state == VM_CRASHED) {
		free(line);
		return -ENOTCONN;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)&vm->cc->h) > LEDGER_WRITE_QUEUE_MAX) {
		free(line);
		return -ENOBUFS;
	}
	struct owned_write *ow = calloc(1, sizeof(*ow));
	if (!ow) {
		free(line);
		return -ENOMEM;
	}
	ow->data = line;
	uv_buf_t b = uv_buf_init(line, (unsigned)n);
	int r = uv_write(&ow->w, (uv_stream_t *)&vm->cc->h, &b, 1, on_owned_write_done);
	if (r < 0) {
		free(line);
		free(ow);
	}
	return r;
}

/* The session row's name and image: only the daemon knows them. */
static void ledger_send_session(struct vm *vm)
{
	char *line = NULL;
	size_t n;
	json_t *ev = json_pack("{s:s, s:s?, s:s}", "kind", "session", "vm_name", vm->rec.spec.name,
			       "image", vm->rec.spec.image);
	if (ev && ledger_event_line(ev, LEDGER_LINE_MAX, &line, &n) == 0)
		(void)vm_ledger_write(vm, line, n);
	json_decref(ev);
}

void vmsup_on_stop_timeout(uv_timer_t *t)
{
	struct vm *vm = t->data;
	log_warn("VM %s did not stop in time: killing its supervisor", vm->rec.id);
	vmctl_set_str(&vm->fail, "the VM did not stop in time and was killed");
	vmsup_signal(vm, SIGKILL);
}

/* ---- spawning capsem-vm ---- */

static int build_argv(struct vm *vm, const char *kernel, const char *initrd, const char *rootfs,
		      const char *image_sha256, char ***ret)
{
	struct vmctl *c = vm->ctl;
	const struct vm_spec *s = &vm->rec.spec;
	_cleanup_strv_free_ char **a = NULL;
	char host[64];
	int r = strv_push(&a, c->vm_bin);
	/* the control socket is ours (socket activation): capsem-vm gets it listening as fd 3 */
	r |= strv_push(&a, "--control");
	r |= strv_pushf(&a, "%s/%s", vm->rec.vmdir, CTL_SOCKET);
	r |= strv_push(&a, "--control-fd");
	r |= strv_push(&a, "3");
	r |= strv_push(&a, "--vmdir");
	r |= strv_push(&a, vm->rec.vmdir);
	r |= strv_push(&a, "--kernel");
	r |= strv_push(&a, kernel);
	r |= strv_push(&a, "--initrd");
	r |= strv_push(&a, initrd);
	if (rootfs) {
		r |= strv_push(&a, "--rootfs");
		r |= strv_push(&a, rootfs);
	}
	r |= strv_push(&a, "--cpus");
	r |= strv_pushf(&a, "%u", s->cpus);
	r |= strv_push(&a, "--memory");
	r |= strv_pushf(&a, "%lluM", (unsigned long long)s->memory_mib);
	/* the hostname is the VM's name ('_' is not a hostname character), else its id */
	snprintf(host, sizeof(host), "%s", s->name ? s->name : vm->rec.id);
	for (char *h = host; *h; h++)
		if (*h == '_')
			*h = '-';
	r |= strv_push(&a, "--hostname");
	r |= strv_push(&a, host);
	if (vm->rec.persistent || vm->has_disk) {
		r |= strv_push(&a, "--disk");
		r |= strv_pushf(&a, "%s/disk.img", vm->rec.vmdir);
	}
	for (size_t i = 0; i < s->n_mounts; i++) {
		r |= strv_push(&a, "--mount");
		r |= strv_pushf(&a, "%s:%s%s", s->mounts[i].host, s->mounts[i].guest,
				s->mounts[i].ro ? ":ro" : "");
	}
	/* the channel mux over virtio-serial instead of vsock (experimental: the transport a
	 * migratable VM will need; docs/PROTOCOL.md §10) */
	const char *chan = getenv("CAPSEM_CHANNEL");
	if (s->suspendable || (chan && streq(chan, "serial"))) {
		r |= strv_push(&a, "--channel");
		r |= strv_push(&a, "serial");
	}
	/* the workspace: the user's folder, or the VM's own (launch() makes it); on the serial
	 * channel capsem-vm serves it itself over a virtio-serial port, which QEMU can save */
	r |= strv_push(&a, "--workspace");
	if (s->workspace)
		r |= strv_push(&a, s->workspace);
	else
		r |= strv_pushf(&a, "%s/" VMSPEC_WORKSPACE_DIR, vm->rec.vmdir);
	if (s->no_ws_audit)
		r |= strv_push(&a, "--no-workspace-audit");
	if (vm->snapstarted) {
		/* restored from the saved state of its kind: its RAM a private mapping of the saved
		 * RAM (snapstart.c) */
		r |= strv_push(&a, "--ram-file");
		r |= strv_push(&a, SNAPSTART_RAM);
		r |= strv_push(&a, "--ram-private");
		r |= strv_push(&a, "--incoming");
		r |= strv_pushf(&a, "%s/" SNAPSTART_STATE, vm->rec.vmdir);
	} else if (s->suspendable) {
		/* the guest RAM in a file of the VM directory: a suspend saves only the device state
		 * and a resume maps the file (docs/ARCHITECTURE.md "Suspend and resume") */
		r |= strv_push(&a, "--ram-file");
		r |= strv_push(&a, VM_RAM_FILE);
	}
	if (vm->resuming) { /* the state vm_suspend saved, and the image it was saved with */
		r |= strv_push(&a, "--incoming");
		r |= strv_pushf(&a, "%s/" VM_SUSPEND_STATE, vm->rec.vmdir);
	}
	if (image_sha256 && *image_sha256) {
		r |= strv_push(&a, "--image-sha256");
		r |= strv_push(&a, image_sha256);
	}
	r |= strv_push(&a, "--ledger");
	r |= strv_pushf(&a, "%s/%s-%u.db", c->sessions_dir, vm->rec.id, vm->rec.boot);
	/* who the guest is, in every exec's environment */
	r |= strv_push(&a, "--guest-env");
	r |= strv_pushf(&a, "CAPSEM_VM_ID=%s", vm->rec.id);
	if (s->name) {
		r |= strv_push(&a, "--guest-env");
		r |= strv_pushf(&a, "CAPSEM_VM_NAME=%s", s->name);
	}
	if (r < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(a);
	return 0;
}

/* fork + exec capsem-vm in its own session: stdin /dev/null, stdout/stderr appended to
 * <vmdir>/vm.log, the listening control socket ctl_fd as fd 3, no other descriptor. */
int vmsup_spawn(char **argv, int out_fd, int fd3, pid_t *ret_pid)
{
	_cleanup_close_ int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0)
		return negative_errno();
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		/* async-signal-safe calls only */
		sigset_t none;
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		sigemptyset(&none);
		for (int s = 1; s < NSIG; s++)
			sigaction(s, &dfl, NULL);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		if (dup2(nullfd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(127);
		/* fd 3, inherited (dup2 clears CLOEXEC; fcntl when it is 3 already) */
		if (fd3 == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(fd3, 3) < 0)
			_exit(127);
		syscall(SYS_close_range, 4, ~0u, 0);
		execve(argv[0], argv, environ);
		_exit(127);
	}
	*ret_pid = pid;
	return 0;
}

/* capsem-vm with stdout/stderr appended to <vmdir>/vm.log and the listening control socket
 * ctl_fd as fd 3. */
static int spawn_supervisor(struct vm *vm, char **argv, int ctl_fd, pid_t *ret_pid)
{
	_cleanup_free_ char *logp = vmctl_path_join(vm->rec.vmdir, "vm.log");
	if (!logp)
		return -ENOMEM;
	_cleanup_close_ int logfd =
		open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (logfd < 0)
		return negative_errno();
	return vmsup_spawn(argv, logfd, ctl_fd, ret_pid);
}

static void boot_fail(struct vm *vm, const char *msg)
{
	vmctl_set_str(&vm->fail, msg);
	vm->proc_gone = vm->ctl_closed = 1;
	vm_settle(vm);
}

/* A new boot, a new ledger session: never an existing file (after a restore of vm.json the
 * counter could be behind). */
static void next_boot(struct vm *vm)
{
	for (unsigned b = vm->rec.boot + 1; b < 999999; b++) {
		_cleanup_free_ char *p = NULL;
		struct stat st;
		vm->rec.boot = b;
		if (ledger_session_path(vm->ctl->sessions_dir, vm->rec.id, b, &p) < 0 ||
		    lstat(p, &st) < 0)
			break;
	}
}

static void launch(struct vm *vm, const char *kernel, const char *initrd, const char *rootfs,
		   const char *image_sha256)
{
	struct vmctl *c = vm->ctl;
	_cleanup_strv_free_ char **argv = NULL;
	pid_t pid;
	int r;

	if (!vm->resuming) /* a resume continues the session of the boot it saved */
		next_boot(vm);
	if (!vm->resuming && !vm->snapstarted) /* a cold boot starts with fresh RAM */
		drop_ram_file(vm);
	if (!vm->rec.spec.workspace) {
		/* the VM's own workspace, kept across boots */
		_cleanup_free_ char *ws = vmctl_path_join(vm->rec.vmdir, VMSPEC_WORKSPACE_DIR);
		if (!ws || (mkdir(ws, 0700) < 0 && errno != EEXIST))
			log_warn_errno(ws ? negative_errno() : -ENOMEM, "cannot make %s/%s",
				       vm->rec.vmdir, VMSPEC_WORKSPACE_DIR);
	}
	if (build_argv(vm, kernel, initrd, rootfs, image_sha256, &argv) < 0) {
		boot_fail(vm, "out of memory");
		return;
	}
	vm->stop_requested = 0;
	vm->seen_stopped = 0;
	vm->exit_status = -1;
	vmctl_set_str(&vm->fail, NULL);
	vmctl_set_str(&vm->serial_tail, NULL);
	/* socket activation: the control socket listens before capsem-vm runs, so our connect
	 * succeeds at once (the kernel queues it) and no one polls for the socket to appear */
	_cleanup_free_ char *ctl_path = vmctl_path_join(vm->rec.vmdir, CTL_SOCKET);
	_cleanup_close_ int ctl_fd = ctl_path ? unix_listen(ctl_path, 16) : -ENOMEM;
	if (ctl_fd < 0) {
		log_error_errno(ctl_fd, "VM %s: cannot create its control socket", vm->rec.id);
		boot_fail(vm, "cannot create the supervisor's control socket");
		return;
	}
	r = spawn_supervisor(vm, argv, ctl_fd, &pid);
	if (r < 0) {
		log_error_errno(r, "cannot start %s", c->vm_bin);
		boot_fail(vm, "cannot start capsem-vm");
		return;
	}
	vm->rec.pid = pid;
	vmctl_vm_save(vm);
	log_info("VM %s: capsem-vm started (pid %d)", vm->rec.id, (int)pid);
	r = pidwatch_start(vm, pid, 1);
	if (r < 0) {
		kill(pid, SIGKILL); /* our unreaped child: its pid cannot be reused yet */
		waitpid(pid, NULL, 0);
		boot_fail(vm, "cannot watch the capsem-vm process");
		return;
	}
	int fd = unix_connect(ctl_path, 1);
	if (fd < 0 || ctlconn_open(vm, fd) < 0) { /* ctlconn_open closes fd on failure */
		vm->ctl_closed = 1;
		vmctl_set_str(&vm->fail, "cannot watch the supervisor's control socket");
		vmsup_signal(vm, SIGKILL);
	}
}

/* ---- boot preparation (worker thread) ---- */

/* The VM's disk from a fork image's template: a sparse copy, renamed into place when whole. */
static int copy_disk(struct prepjob *j)
{
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.new", j->disk) < 0)
		return -ENOMEM;
	_cleanup_close_ int in = open(j->disk_template, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return negative_errno();
	_cleanup_close_ int out =
		open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return negative_errno();
	int r = copy_sparse(in, out);
	if (r == 0 && rename(tmp, j->disk) < 0)
		r = negative_errno();
	if (r < 0)
		unlink(tmp);
	return r;
}

/* A fork image's workspace archive, unpacked once into the VM's own (new, empty) workspace by
 * a confined tar (dconfine.h: it reads the archive and writes only the workspace). The archive
 * was made by capsemd from a workspace the guest wrote: GNU tar refuses absolute names and "..",
 * and keeps no owner it is not told to. 0, or -errno with j->error saying why. */
static int seed_workspace(struct prepjob *j)
{
	_cleanup_free_ char *mark = NULL, *tar = NULL;
	if (!j->workspace)
		return -EINVAL;
	if (asprintf(&mark, "%s/.capsem-seeded", j->workspace) < 0)
		return -ENOMEM;
	if (access(mark, F_OK) == 0)
		return 0;
	if (mkdir(j->workspace, 0700) < 0 && errno != EEXIST)
		return negative_errno();
	int r = dconfine_find_tar(&tar);
	if (r < 0)
		return r;
	char *argv[] = { tar,
			 "--no-same-owner",
			 "--no-overwrite-dir",
			 "-C",
			 j->workspace,
			 "-xf",
			 j->ws_archive,
			 NULL };
	char why[512];
	r = dconfine_run(DCONFINE_TAR, argv, j->workspace, j->ws_archive, why, sizeof(why));
	if (r != 0) {
		if (*why && !j->error)
			(void)!asprintf(&j->error,
					"cannot unpack the image's workspace %s (tar): %s",
					j->ws_archive, why);
		return r > 0 ? -EIO : r;
	}
	return write_file_atomic(mark, "", 0, 0600);
}

int vmsup_make_disk(struct prepjob *j)
{
	struct stat st;
	if (stat(j->disk, &st) == 0)
		return 0;
	if (j->disk_template)
		return copy_disk(j);
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.new", j->disk) < 0)
		return -ENOMEM;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)(j->disk_mib << 20)) < 0) {
		int r = negative_errno();
		safe_close(fd);
		unlink(tmp);
		return r;
	}
	safe_close(fd);
	/* mkfs.ext4 from e2fsprogs (in /usr/sbin, which a normal user's PATH may lack), confined
	 * (no new privileges, Landlock: write only the new disk, its seccomp allow-list); the
	 * worker waits for it */
	_cleanup_free_ char *mkfs = NULL;
	int fr = dconfine_find_mkfs(&mkfs);
	if (fr < 0) {
		unlink(tmp);
		return fr;
	}
	char *argv[] = { mkfs, "-q", "-F", "-m", "0", "-L", "capsem-root", tmp, NULL };
	char why[512];
	int r = dconfine_run(DCONFINE_MKFS, argv, tmp, NULL, why, sizeof(why));
	if (r != 0) {
		unlink(tmp);
		if (*why && !j->error)
			(void)!asprintf(&j->error, "cannot create the VM's disk (mkfs.ext4): %s",
					why);
		return r > 0 ? -EIO : r;
	}
	if (rename(tmp, j->disk) < 0) {
		r = negative_errno();
		unlink(tmp);
		return r;
	}
	return 0;
}

static void prep_work(uv_work_t *w)
{
	struct prepjob *j = w->data;
	struct manifest *m = NULL;
	char *err = NULL;
	int r;

	/* the user's folders: inside what capsemd (and so capsem-vm) may open? */
	for (size_t i = 0; j->shared && j->shared[i]; i++) {
		char why[768];
		r = dconfine_check_shared(j->shared[i], why, sizeof(why));
		if (r < 0) {
			j->error = strdup(why);
			j->r = r;
			return;
		}
	}

	if (access(j->imgdir, F_OK) < 0) {
		const char *slash = strrchr(j->imgdir, '/');
		(void)!asprintf(&j->error,
				"image '%s' not found in %s (build it with 'make image' or "
				"'capsem-builder image')",
				slash ? slash + 1 : j->imgdir, j->imgdir);
		j->r = -ENOENT;
		return;
	}
	r = manifest_verify(j->imgdir, &err);
	if (r < 0) {
		(void)!asprintf(&j->error, "the image failed verification: %s",
				err ? err : strerror(-r));
		free(err);
		j->r = r;
		return;
	}
	r = manifest_load(j->imgdir, &m);
	if (r < 0) {
		(void)!asprintf(&j->error, "cannot read the image manifest: %s", strerror(-r));
		j->r = r;
		return;
	}
	/* which image exactly: a saved state may only go back onto the one it was saved with */
	_cleanup_free_ char *mpath = vmctl_path_join(j->imgdir, MANIFEST_FILENAME);
	if (!mpath || sha256_hex_file(mpath, j->image_sha256, NULL) < 0)
		j->image_sha256[0] = 0;
	j->kernel = strdup(m->kernel.path);
	j->initrd = strdup(m->initrd.path);
	j->rootfs = m->rootfs.file ? strdup(m->rootfs.path) : NULL;
	int oom = m->rootfs.file && !j->rootfs;
	if (m->disk.file) { /* a fork image: its disk is where its changes are */
		j->disk_template = strdup(m->disk.path);
		j->want_disk = 1;
		oom |= !j->disk_template;
	}
	if (m->workspace.file && j->workspace) {
		j->ws_archive = strdup(m->workspace.path);
		oom |= !j->ws_archive;
	}
	manifest_free(m);
	if (!j->kernel || !j->initrd || oom) {
		j->r = -ENOMEM;
		return;
	}
	if (j->snapstart && (!j->want_disk || access(j->disk, F_OK) < 0) && !j->disk_template) {
		/* the first boot of a suspendable VM (a named one has no disk yet, an ephemeral one
		 * boots once): restored from the saved state of its kind (which brings its disk),
		 * else booted cold */
		char *serr = NULL;
		r = snapstart_prepare(j, &serr);
		if (r == 0)
			j->snapstarted = 1;
		else
			log_warn("snapshot start not possible, booting cold: %s",
				 serr ? serr : strerror(-r));
		free(serr);
	}
	if (j->want_disk && !j->snapstarted) {
		r = vmsup_make_disk(j);
		if (r < 0) {
			/* else vmsup_make_disk said how mkfs failed */
			if (!j->error && j->disk_template)
				(void)!asprintf(&j->error, "cannot copy the image's disk %s: %s",
						j->disk_template, strerror(-r));
			else if (!j->error)
				(void)!asprintf(&j->error,
						"cannot create the VM's disk (mkfs.ext4): %s",
						r == -ENOENT ? "mkfs.ext4 not found in PATH, "
							       "/usr/sbin or /sbin (install "
							       "e2fsprogs)"
							     : strerror(-r));
			j->r = r;
			return;
		}
	}
	if (j->ws_archive) {
		r = seed_workspace(j);
		if (r < 0) {
			if (!j->error)
				(void)!asprintf(&j->error,
						"cannot unpack the image's workspace %s: %s",
						j->ws_archive, strerror(-r));
			j->r = r;
			return;
		}
	}
	j->r = 0;
}

static void prep_done(uv_work_t *w, int status)
{
	struct prepjob *j = w->data;
	struct vm *vm = j->vm;
	if (vm) {
		vm->job = NULL;
		if (vm->stop_requested) {
			vm->proc_gone = vm->ctl_closed = 1;
			vm_settle(vm);
		} else if (j->r < 0 || status < 0) {
			boot_fail(vm, j->error ? j->error : "cannot prepare the VM");
		} else {
			vm->has_disk = j->want_disk;
			vm->snapstarted = j->snapstarted;
			launch(vm, j->kernel, j->initrd, j->rootfs, j->image_sha256);
		}
	}
	free(j->disk_template);
	free(j->vmdir);
	free(j->home);
	free(j->vm_bin);
	free(j->ws_archive);
	free(j->workspace);
	strv_free(j->shared);
	free(j->imgdir);
	free(j->disk);
	free(j->kernel);
	free(j->initrd);
	free(j->rootfs);
	free(j->error);
	free(j);
}

int vmsup_boot(struct vm *vm)
{
	struct vmctl *c = vm->ctl;
	struct prepjob *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->vm = vm;
	/* the user's image of that name, else the package's (capsem_image_find) */
	if (capsem_image_find(c->images_dir, vm->rec.spec.image, &j->imgdir) < 0)
		j->imgdir = NULL;
	j->disk = vmctl_path_join(vm->rec.vmdir, "disk.img");
	j->disk_mib = vm->rec.spec.disk_mib;
	j->want_disk = vm->rec.persistent;
	const char *ss = getenv("CAPSEM_SNAPSHOT_START");
	if (vm->rec.spec.suspendable && !vm->resuming && !(ss && streq(ss, "0"))) {
		j->snapstart = 1;
		j->cpus = vm->rec.spec.cpus;
		j->memory_mib = vm->rec.spec.memory_mib;
		j->vmdir = strdup(vm->rec.vmdir);
		j->home = strdup(c->home);
		j->vm_bin = strdup(c->vm_bin);
		if (!j->vmdir || !j->home || !j->vm_bin)
			j->snapstart = 0; /* (freed in prep_done) */
	}
	if (!vm->rec.spec.workspace)
		j->workspace = vmctl_path_join(vm->rec.vmdir, VMSPEC_WORKSPACE_DIR);
	int r = !j->imgdir || !j->disk || (!vm->rec.spec.workspace && !j->workspace) ? -ENOMEM : 0;
	if (r == 0 && vm->rec.spec.workspace)
		r = strv_push(&j->shared, vm->rec.spec.workspace);
	for (size_t i = 0; r == 0 && i < vm->rec.spec.n_mounts; i++)
		r = strv_push(&j->shared, vm->rec.spec.mounts[i].host);
	j->w.data = j;
	if (r == 0)
		r = uv_queue_work(c->loop, &j->w, prep_work, prep_done);
	if (r < 0) {
		strv_free(j->shared);
		free(j->workspace);
		free(j->imgdir);
		free(j->disk);
		free(j->vmdir);
		free(j->home);
		free(j->vm_bin);
		free(j);
		return r;
	}
	vm->job = j;
	vm->rec.state = VM_CREATING;
	vm->stop_requested = 0;
	vm->proc_gone = 0;
	vm->ctl_closed = 0;
	vmctl_set_str(&vm->rec.error, NULL);
	vmctl_vm_save(vm);
	return 0;
}

/* ---- recovery ---- */

/* Is pid a capsem-vm serving vmdir? (/proc/<pid>/cmdline names both.) */
static int supervisor_alive(pid_t pid, const char *vmdir)
{
	char p[64];
	_cleanup_free_ char *cmd = NULL;
	size_t n;
	if (pid <= 1)
		return 0;
	snprintf(p, sizeof(p), "/proc/%d/cmdline", (int)pid);
	if (read_file_small(p, 64 * 1024, &cmd, &n) < 0)
		return 0;
	int bin = 0, dir = 0;
	for (size_t i = 0; i < n; i += strlen(cmd + i) + 1) {
		const char *a = cmd + i;
		const char *base = strrchr(a, '/');
		base = base ? base + 1 : a;
		bin |= i == 0 && streq(base, "capsem-vm");
		dir |= streq(a, vmdir);
	}
	return bin && dir;
}

static void recover_one(struct vmctl *c, const char *id)
{
	struct vm_record rec;
	int r = registry_load(c->vms_dir, id, &rec);
	if (r < 0) {
		if (r != -ENOENT)
			log_warn_errno(r, "ignoring %s/%s: unreadable %s", c->vms_dir, id,
				       REGISTRY_FILE);
		return;
	}
	_cleanup_free_ char *expect = vmctl_path_join(c->vms_dir, id);
	if (!expect || !streq(expect, rec.vmdir)) {
		/* the home moved: follow it */
		free(rec.vmdir);
		rec.vmdir = TAKE_PTR(expect);
		if (!rec.vmdir) {
			registry_record_done(&rec);
			return;
		}
	}
	int live = rec.state == VM_CREATING || rec.state == VM_RUNNING || rec.state == VM_STOPPING;
	struct vm *vm = vmctl_vm_alloc(c, &rec);
	if (!vm) {
		registry_record_done(&rec);
		return;
	}
	if (live && supervisor_alive(vm->rec.pid, vm->rec.vmdir)) {
		_cleanup_free_ char *sock = vmctl_path_join(vm->rec.vmdir, CTL_SOCKET);
		int fd = sock ? unix_connect(sock, 0) : -ENOMEM;
		if (fd >= 0) {
			fd_set_nonblock(fd, 1);
			if (ctlconn_open(vm, fd) == 0 && pidwatch_start(vm, vm->rec.pid, 0) == 0) {
				log_info("VM %s: re-adopted its running supervisor (pid %d)",
					 vm->rec.id, vm->rec.pid);
				if (vm->rec.state == VM_STOPPING) {
					vm->stop_requested = 1;
					vmsup_send_stop(vm);
					uv_timer_start(vm->timer, vmsup_on_stop_timeout,
						       STOP_KILL_MS, 0);
				}
				return;
			}
			if (vm->cc) {
				vm->cc->vm = NULL;
				uv_close((uv_handle_t *)&vm->cc->h, vmctl_handle_free_cb);
				vm->cc = NULL;
			}
		}
		/* alive but not answering: it cannot be managed, so it is stopped for good */
		log_warn("VM %s: supervisor pid %d does not answer on its control socket: killing "
			 "it",
			 vm->rec.id, vm->rec.pid);
		vmsup_signal(vm, SIGKILL);
	}
	if (live && state_saved(vm)) {
		/* a suspend (or a resume that never loaded) ended while capsemd was down */
		vm->rec.state = VM_SUSPENDED;
		vm->rec.pid = 0;
		vmctl_set_str(&vm->rec.error, NULL);
		log_info("VM %s: suspended while capsemd was down", vm->rec.id);
		live = 0;
		vmctl_vm_save(vm);
	} else if (vm->rec.state == VM_SUSPENDED && !state_saved(vm)) {
		vm->rec.state = VM_STOPPED;
		vmctl_set_str(&vm->rec.error, "its saved state is gone: stopped");
		log_warn("VM %s: suspended, but its saved state is gone: stopped", vm->rec.id);
		vmctl_vm_save(vm);
	}
	if (live) {
		vm->rec.state = VM_CRASHED;
		vm->rec.pid = 0;
		vmctl_set_str(&vm->rec.error, "supervisor gone while capsemd was down");
		log_warn("VM %s: supervisor gone while capsemd was down", vm->rec.id);
		mark_unfinished_execs(vm, "supervisor gone while capsemd was down");
	}
	vmctl_remove_sockets(vm->rec.vmdir);
	if (!vm->rec.persistent) {
		rm_rf(vm->rec.vmdir);
		vmctl_vm_free(vm);
		return;
	}
	if (live)
		vmctl_vm_save(vm);
}

static int cmp_created(const void *a, const void *b)
{
	const struct vm *x = *(struct vm *const *)a, *y = *(struct vm *const *)b;
	return strcmp(x->rec.created, y->rec.created);
}

/* Keep the newest session files, and always the current session of every running VM. */
static void prune_sessions(struct vmctl *c)
{
	_cleanup_strv_free_ char **keep = NULL;
	for (struct vm *vm = vmctl_first(c); vm; vm = vmctl_next(vm))
		if (vm->rec.boot && (vm->rec.state == VM_CREATING || vm->rec.state == VM_RUNNING ||
				     vm->rec.state == VM_STOPPING))
			(void)strv_pushf(&keep, "%s-%u", vm->rec.id, vm->rec.boot);
	int r = ledger_sessions_prune(c->sessions_dir, LEDGER_KEEP_SESSIONS, keep);
	if (r < 0)
		log_warn_errno(r, "cannot prune %s", c->sessions_dir);
	else if (r > 0)
		log_info("removed the %d oldest session ledgers (keeping %u)", r,
			 LEDGER_KEEP_SESSIONS);
}

int vmctl_recover(struct vmctl *c)
{
	_cleanup_closedir_ DIR *d = opendir(c->vms_dir);
	if (!d)
		return negative_errno();
	struct dirent *de;
	while ((de = readdir(d)))
		if (registry_id_valid(de->d_name))
			recover_one(c, de->d_name);
	/* keep the list newest first */
	if (c->n_vms > 1) {
		struct vm **v = calloc(c->n_vms, sizeof(*v));
		if (v) {
			size_t n = 0;
			for (struct vm *vm = vmctl_first(c); vm; vm = vmctl_next(vm))
				v[n++] = vm;
			qsort(v, n, sizeof(*v), cmp_created);
			for (size_t i = 0; i < n; i++) {
				list_del(&v[i]->link);
				list_add_head(&c->vms, &v[i]->link);
			}
			free(v);
		}
	}
	prune_sessions(c);
	return 0;
}
