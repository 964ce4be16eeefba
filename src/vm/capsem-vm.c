/* capsem-vm - the supervisor of one VM: one process, one trust and failure domain per VM.
 *
 * It creates the VM directory's sockets, starts our vhost-user vsock backend (src/vsock), spawns
 * QEMU (qemu.c) with a pidfd watched by the event loop, keeps the serial console in a capped log,
 * accepts the guest agent's control connection (guest -> host vsock port 5000, which the backend
 * delivers to <vmdir>/vsock_5000), waits for its HELLO, and reports to its parent. Execs do not
 * pass through here: clients connect to the guest through <vmdir>/vsock (hybrid vsock).
 *
 * Toward whoever runs it (vmcontrol.c): JSON events to its parent on --ipc-fd (or stdout)
 * and, with --control PATH, to any number of clients of a Unix socket that outlives them (the
 * daemon's view); commands ({"cmd":"stop"}) come back the same ways; EOF on the parent's fd
 * also means stop (the stopped event's reason is "guest-poweroff" when the guest ended itself
 * cleanly: QEMU exited 0 right after capsem-init's PROTO_CONSOLE_POWEROFF line). SIGINT/SIGTERM/
 * SIGHUP stop too. With --control capsem-vm runs in its own
 * session and ignores SIGHUP; nothing depends on the process that started it. When the VM stops
 * the stopped event goes to every client, the clients are closed, the socket removed.
 * <vmdir>/supervisor.pid holds our pid (written atomically at start, removed at exit).
 *
 * Trust: everything read from the guest (control frames, serial bytes, vsock traffic in the
 * backend) is hostile. One thread: the libuv loop; no sleeping.
 */
#include "keydmain.h"
#include "capsem-vm.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <uv.h>

#include "clockutil.h"
#include "config.h"
#include "confinfo.h"
#include "accel.h"
#include "apiclient.h"
#include "buf.h"
#include "egress.h"
#include "fdutil.h"
#include "gateway.h"
#include "home.h"
#include "landlock.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "proto.h"
#include "qemu.h"
#include "serial.h"
#include "strv.h"
#include "unixlisten.h"
#include "vmconfine.h"
#include "vmledger.h"
#include "virtiofs.h"
#include "vmlimits.h"
#include "vsock.h"

void vm_stop(struct vm *vm, const char *why);

void vm_fail(struct vm *vm, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (!vm->error && msg) {
		vm->error = msg;
		vm->exit_code = 1;
		_cleanup_free_ char *tail = serial_log_tail(&vm->serial, 15);
		vm_emit(vm,
			json_pack("{s:s, s:s, s:s, s:s}", "event", "error", "message", msg,
				  "serial_log", vm->p_serial_log, "serial_tail", tail ? tail : ""));
	} else {
		free(msg);
	}
	vm_stop(vm, "error");
}

/* ---- serial console ---- */

static void on_serial(struct watch *w, int events)
{
	uint8_t tmp[16384];
	for (;;) {
		ssize_t k = read(w->fd, tmp, sizeof(tmp));
		if (k > 0) {
			serial_log_write(&w->vm->serial, tmp, (size_t)k);
			continue;
		}
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		watch_close(&w->vm->w_serial);
		return;
	}
}

/* A connection on a listener that serves exactly one peer (QEMU's serial and QMP chardevs, the
 * guest agent): a second one while *slot is taken is closed at once. */
static void accept_single(struct vm *vm, int fd, struct watch **slot, size_t in_cap,
			  void (*cb)(struct watch *, int))
{
	if (*slot) {
		safe_close(fd);
		return;
	}
	*slot = watch_new(vm, fd, UV_READABLE, in_cap, cb);
}

static void on_serial_listen(struct unix_listener *l, int fd)
{
	struct vm *vm = l->userdata;
	accept_single(vm, fd, &vm->w_serial, 0, on_serial);
}

/* ---- QMP: connected by QEMU; used to ask QEMU to quit when the guest will not power off ---- */

static void on_qmp(struct watch *w, int events)
{
	uint8_t tmp[4096];
	for (;;) {
		ssize_t k = read(w->fd, tmp, sizeof(tmp));
		if (k > 0)
			continue; /* greeting, replies and events are not needed yet */
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		watch_close(&w->vm->w_qmp);
		return;
	}
}

static void on_qmp_listen(struct unix_listener *l, int fd)
{
	struct vm *vm = l->userdata;
	int first = !vm->w_qmp;
	accept_single(vm, fd, &vm->w_qmp, 0, on_qmp);
	if (first && vm->w_qmp && vm->o.incoming && vm->state == VM_BOOTING)
		(void)vm_incoming(vm); /* a restore: the state goes in before anything runs */
}

static int qmp_quit(struct vm *vm)
{
	static const char cmd[] = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n";
	if (!vm->w_qmp)
		return -ENOTCONN;
	return fd_write_all(vm->w_qmp->fd, cmd, sizeof(cmd) - 1);
}

/* ---- the agent's control connection ---- */

/* Write one small control frame on the non-blocking control socket. Frames are tiny and the
 * socket buffer large, so EAGAIN is waited out with a bounded poll rather than queued. */
static int ctl_send(struct vm *vm, const struct buf *b)
{
	const uint8_t *p = buf_head(b);
	size_t n = buf_len(b);
	if (!vm->w_ctl)
		return -ENOTCONN;
	while (n > 0) {
		ssize_t k = write(vm->w_ctl->fd, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = vm->w_ctl->fd, .events = POLLOUT };
			if (poll(&pf, 1, 1000) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		return negative_errno();
	}
	return 0;
}

static void send_boot_config(struct vm *vm)
{
	struct proto_boot_config bc = { 0 };
	struct timespec ts;
	struct buf b;
	clock_gettime(CLOCK_REALTIME, &ts);
	bc.unix_time_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	snprintf(bc.hostname, sizeof(bc.hostname), "%s", vm->o.hostname);
	/* the guest reseeds its RNG with this (a VM restored from a shared saved state) */
	bc.has_seed = getrandom(bc.seed, sizeof(bc.seed), 0) == (ssize_t)sizeof(bc.seed);
	_cleanup_strv_free_ char **env = NULL;
	int r = 0;
	if (vm->egress) {
		bc.ca_pem = (char *)egress_ca_pem(vm->egress);
		for (char *const *e = egress_guest_env(vm->egress); e && *e; e++)
			r |= strv_push(&env, *e);
	}
	for (char **e = vm->o.guest_env; e && *e; e++) /* --guest-env: CAPSEM_VM_ID, ... */
		r |= strv_push(&env, *e);
	bc.envp = env;
	bc.envc = (uint32_t)strv_length(env);
	buf_init(&b, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	if (r < 0 || proto_boot_config_encode(&bc, &b) < 0)
		log_warn("cannot encode the boot configuration: the guest boots without its CA and "
			 "environment");
	else
		(void)ctl_send(vm, &b);
	buf_done(&b, 0);
}

static void on_hello(struct vm *vm, const struct proto_hello *h)
{
	uint64_t boot_ns = clock_ns(CLOCK_MONOTONIC) - vm->t_start_ns;
	if (h->version != PROTO_VERSION) {
		vm_fail(vm, "the guest agent speaks protocol version %u, this host speaks %u",
			h->version, PROTO_VERSION);
		return;
	}
	uv_timer_stop(&vm->boot_timer);
	vm->state = VM_READY;
	send_boot_config(vm);
	json_t *stages = json_array();
	for (uint32_t i = 0; i < h->n_stages; i++) {
		json_array_append_new(stages, json_pack("{s:s, s:I}", "name", h->stages[i].name,
							"usec", (json_int_t)h->stages[i].usec));
		/* the guest boots on without what it could not mount; say so where a human looks */
		if (streq(h->stages[i].name, "disk_failed"))
			log_warn("the guest could not mount --disk, /root is not persistent: %s",
				 vm->p_serial_log);
		if (streq(h->stages[i].name, "rootfs_failed"))
			log_warn(
				"the guest could not boot into --rootfs, it runs the initramfs: %s",
				vm->p_serial_log);
		if (streq(h->stages[i].name, "mounts_failed"))
			log_warn("the guest could not mount every --mount: %s", vm->p_serial_log);
	}
	json_t *ev =
		json_pack("{s:s, s:s, s:s, s:f, s:s, s:s, s:s, s:o, s:i, s:b}", "event", "ready",
			  "vmdir", vm->o.vmdir, "vsock", vm->p_vsock, "boot_ms",
			  (double)boot_ns / 1e6, "accel", accel_name(vm->o.accel), "kernel_release",
			  h->kernel_release, "agent_version", h->agent_version, "stages", stages,
			  "qemu_pid", (int)vm->qemu_pid, "resumed", vm->o.incoming != NULL);
	if (ev && vm->o.incoming)
		json_object_set_new(ev, "restore_ms", json_real(vm->restore_ms));
	/* what serves the workspace (capsemd's "workspace_transport") */
	if (ev && vm_workspace_transport_name(&vm->o))
		json_object_set_new(ev, "workspace_transport",
				    json_string(vm_workspace_transport_name(&vm->o)));
	/* QEMU's memory cgroup, when it has one (tests lower its limit) */
	if (ev && hostcg_mem_dir(&vm->cg))
		json_object_set_new(ev, "qemu_cgroup", json_string(hostcg_mem_dir(&vm->cg)));
	vm_emit(vm, ev);
}

static void on_ctl(struct watch *w, int events)
{
	struct vm *vm = w->vm;
	int r;
	while ((r = watch_fill(w)) > 0) {
		uint16_t type;
		const uint8_t *pl;
		uint32_t len;
		ssize_t k;
		while ((k = proto_frame_parse(buf_head(&w->in), buf_len(&w->in), &type, &pl,
					      &len)) > 0) {
			if (type == PROTO_HELLO && vm->state == VM_BOOTING) {
				struct proto_hello h;
				if (proto_hello_decode(pl, len, &h) < 0) {
					vm_fail(vm, "the guest agent sent a malformed hello");
					return;
				}
				on_hello(vm, &h);
			} else {
				log_debug("control: ignoring frame type %u", type);
			}
			buf_consume(&w->in, (size_t)k);
		}
		if (k < 0) {
			vm_fail(vm, "the guest agent sent an oversized control frame");
			return;
		}
	}
	if (r == -EAGAIN)
		return;
	/* EOF or error: the agent went away */
	watch_close(&vm->w_ctl);
	if (vm->state == VM_BOOTING)
		vm_fail(vm, "the guest agent closed its control connection before saying hello");
}

static void on_ctl_listen(struct unix_listener *l, int fd)
{
	struct vm *vm = l->userdata;
	accept_single(vm, fd, &vm->w_ctl, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD,
		      on_ctl); /* one agent */
}

/* ---- lifecycle ---- */

static void on_vsock_timer(uv_timer_t *t)
{
	struct vm *vm = t->data;
	if (vm->state != VM_STOPPING && vm->state != VM_DONE)
		vm_fail(vm, "vsock device: %s", vm->vsock_error);
}

/* The backend reports QEMU's disconnect as an error, and QEMU disconnects when it exits: wait a
 * moment so that a QEMU exit is reported as what it is. */
static void vsock_error(void *userdata, const char *what)
{
	struct vm *vm = userdata;
	if (vm->state == VM_STOPPING || vm->state == VM_DONE || vm->vsock_error)
		return;
	vm->vsock_error = strdup(what);
	if (!vm->vsock_error) {
		vm_fail(vm, "vsock device failed");
		return;
	}
	uv_timer_start(&vm->vsock_timer, on_vsock_timer, 1000, 0);
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void vm_finish(struct vm *vm)
{
	if (vm->state == VM_DONE)
		return;
	vm->state = VM_DONE;
	unix_listener_close(&vm->serial_l, NULL);
	watch_close(&vm->w_serial);
	unix_listener_close(&vm->qmp_l, NULL);
	watch_close(&vm->w_qmp);
	unix_listener_close(&vm->ctl_l, NULL);
	watch_close(&vm->w_ctl);
	watch_close(&vm->w_qemu);
	vm_workspace_stop(vm);
	vm_ws_stop(vm);	   /* the guest's last writes are in: before the audit's last pass */
	vm_audit_stop(vm); /* its last rows: before the ledger closes */
	close_handle((uv_handle_t *)&vm->boot_timer);
	close_handle((uv_handle_t *)&vm->stop_timer);
	close_handle((uv_handle_t *)&vm->vsock_timer);
	close_handle((uv_handle_t *)&vm->vfs_timer);
	for (size_t i = 0; i < ELEMENTSOF(vm->sig); i++)
		close_handle((uv_handle_t *)&vm->sig[i]);
	vsock_backend_free(vm->vsock);
	vm->vsock = NULL;
	vm_chan_stop(vm);      /* its exec taps write the ledger: before it closes */
	gateway_stop(vm->mcp); /* records its last calls: before the ledger closes */
	vm->mcp = NULL;
	egress_stop(vm->egress);
	vm->egress = NULL;
	vm_keyd_stop(vm);
	/* flushes: the session's last rows are on disk before "stopped" */
	ledger_close(vm->ledger);
	vm->ledger = NULL;
	vm_ledger_events_stop(vm);
	serial_log_close(&vm->serial);
	if (vm->p_ctl) {
		unlink(vm->p_ctl);
		unlink(vm->p_serial);
		unlink(vm->p_qmp);
	}
	if (vm->o.remove_vmdir && !(vm->stop_reason && streq(vm->stop_reason, "suspended")))
		rm_rf(vm->o.vmdir);
	vm_emit(vm, json_pack("{s:s, s:s, s:i}", "event", "stopped", "reason",
			      vm->error		? vm->error
			      : vm->stop_reason ? vm->stop_reason
						: "stopped",
			      "qemu_status", vm->qemu_status));
	watch_close(&vm->w_ipc);
	vm_control_close(vm);
	if (vm->pid_file && !vm->o.remove_vmdir)
		unlink(PID_FILE);
	vm->pid_file = 0;
}

/* 1 when capsem-init's last words on the console were its clean power-off line. */
static int guest_powered_off(const struct vm *vm)
{
	_cleanup_free_ char *tail = serial_log_tail(&vm->serial, 3);
	return tail && strstr(tail, PROTO_CONSOLE_POWEROFF) != NULL;
}

static void on_qemu_exit(struct watch *w, int events)
{
	struct vm *vm = w->vm;
	int st = 0;
	if (waitpid(vm->qemu_pid, &st, WNOHANG) <= 0)
		return;
	vm->qemu_exited = 1;
	vm->qemu_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	watch_close(&vm->w_qemu);
	/* drain the last serial bytes before judging */
	if (vm->w_serial)
		on_serial(vm->w_serial, UV_READABLE);
	if (vm->state != VM_STOPPING && vm->qemu_status == 0 && guest_powered_off(vm)) {
		/* halt/poweroff/reboot in the guest: a stop, not a crash */
		vm->stop_reason = "guest-poweroff";
	} else if (vm->state != VM_STOPPING) {
		_cleanup_free_ char *qlog = NULL;
		read_file_small(vm->p_qemu_log, 4096, &qlog, NULL);
		if (qlog) {
			size_t n = strlen(qlog);
			while (n > 0 && qlog[n - 1] == '\n')
				qlog[--n] = 0;
		}
		char how[256];
		vm_describe_death(vm, st, how, sizeof(how));
		/* also in our log (capsem logs VM --source vm): the event may have no reader */
		if (WIFSIGNALED(st))
			log_error("QEMU %s", how);
		vm_fail(vm, "QEMU exited unexpectedly (%s)%s%s; serial log: %s", how,
			qlog && *qlog ? ": " : "", qlog ? qlog : "", vm->p_serial_log);
	} else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) {
		char how[256];
		vm_describe_death(vm, st, how, sizeof(how));
		log_error("QEMU %s", how);
	}
	hostcg_remove(&vm->cg);
	vm_finish(vm);
}

static void on_stop_timer(uv_timer_t *t)
{
	struct vm *vm = t->data;
	if (vm->qemu_exited)
		return;
	if (vm->stop_phase == 1 && qmp_quit(vm) == 0) {
		vm->stop_phase = 2;
		uv_timer_start(&vm->stop_timer, on_stop_timer, QUIT_GRACE_MS, 0);
		return;
	}
	log_debug("QEMU did not stop in time: killing it");
	kill(vm->qemu_pid, SIGKILL);
}

void vm_stop(struct vm *vm, const char *why)
{
	if (vm->state == VM_STOPPING || vm->state == VM_DONE)
		return;
	log_debug("stopping: %s", why);
	vm->state = VM_STOPPING;
	uv_timer_stop(&vm->boot_timer);
	if (vm->qemu_pid <= 0 || vm->qemu_exited) {
		vm_finish(vm);
		return;
	}
	vm->stop_phase = 1;
	uint64_t grace = STOP_GRACE_MS;
	if (vm->w_ctl && !vm->error) {
		struct buf b;
		buf_init(&b, 64);
		proto_frame_append(&b, PROTO_SHUTDOWN, NULL, 0);
		if (ctl_send(vm, &b) < 0)
			grace = 0;
		buf_done(&b, 0);
	} else {
		grace = 0; /* no agent to ask: go straight to QMP */
	}
	uv_timer_start(&vm->stop_timer, on_stop_timer, grace, 0);
}

void vm_quit(struct vm *vm, const char *why)
{
	if (vm->state == VM_DONE)
		return;
	vm->state = VM_STOPPING;
	vm->stop_reason = why;
	uv_timer_stop(&vm->boot_timer);
	if (vm->qemu_pid <= 0 || vm->qemu_exited) {
		vm_finish(vm);
		return;
	}
	vm->stop_phase = 2;
	if (qmp_quit(vm) < 0)
		kill(vm->qemu_pid, SIGKILL);
	uv_timer_start(&vm->stop_timer, on_stop_timer, QUIT_GRACE_MS, 0);
}

static void on_boot_timeout(uv_timer_t *t)
{
	struct vm *vm = t->data;
	vm_fail(vm, "the guest did not say hello within %.1f s (last serial lines below; log: %s)",
		(double)vm->o.boot_timeout_ms / 1000.0, vm->p_serial_log);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct vm *vm = s->data;
	/* caught rather than ignored, so that QEMU does not inherit SIG_IGN */
	if (signum == SIGHUP && vm->o.control) {
		log_debug("ignoring SIGHUP (--control)");
		return;
	}
	vm_stop(vm, strsignal(signum));
}

static char *path_in(const char *dir, const char *name)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static int check_readable(const char *what, const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return log_error_errno(negative_errno(), "%s %s", what, path);
	if (!S_ISREG(st.st_mode) || st.st_size == 0)
		return log_error("%s %s: not a regular non-empty file", what, path), -EINVAL;
	if (access(path, R_OK) < 0)
		return log_error_errno(negative_errno(), "%s %s", what, path);
	return 0;
}

static int vm_start(struct vm *vm)
{
	int r;
	_cleanup_strv_free_ char **argv = NULL;

	r = mkdir_p(vm->o.vmdir, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", vm->o.vmdir);
	/* Work inside the VM directory and hand QEMU and the vsock backend relative socket names:
	 * a long $HOME must not overflow sun_path (108 bytes). Reported paths stay absolute. */
	vm->o.vmdir = vm->vmdir_abs = realpath(vm->o.vmdir, NULL);
	if (!vm->o.vmdir || chdir(vm->o.vmdir) < 0)
		return log_error_errno(negative_errno(), "cannot enter the VM directory");
	vm->p_vhost = path_in(vm->o.vmdir, "vhost-vsock.sock");
	vm->p_vsock = path_in(vm->o.vmdir, "vsock");
	vm->p_ctl = path_in(vm->o.vmdir, "vsock_5000");
	vm->p_serial = path_in(vm->o.vmdir, "serial.sock");
	vm->p_qmp = path_in(vm->o.vmdir, "qmp.sock");
	vm->p_serial_log = path_in(vm->o.vmdir, "serial.log");
	vm->p_qemu_log = path_in(vm->o.vmdir, "qemu.log");
	if (!vm->p_vhost || !vm->p_vsock || !vm->p_ctl || !vm->p_serial || !vm->p_qmp ||
	    !vm->p_serial_log || !vm->p_qemu_log)
		return log_oom();

	/* first the pid file, then the control socket: a client that connects finds both */
	r = vm_pid_file_write(vm);
	if (r < 0)
		return r;
	if (vm->o.control) {
		r = vm_control_open(vm);
		if (r < 0)
			return r;
	}

	r = serial_log_open(&vm->serial, vm->p_serial_log, SERIAL_LOG_CAP);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", vm->p_serial_log);

	struct {
		const char *path;
		struct unix_listener *l;
		unix_listener_accept_cb cb;
	} listeners[] = {
		{ "serial.sock", &vm->serial_l, on_serial_listen },
		{ "qmp.sock", &vm->qmp_l, on_qmp_listen },
		{ "vsock_5000", &vm->ctl_l, on_ctl_listen },
	};
	for (size_t i = 0; i < ELEMENTSOF(listeners); i++) {
		/* one connection per readiness notice: each serves a single peer */
		listeners[i].l->userdata = vm;
		r = unix_listener_open(listeners[i].l, vm->loop, listeners[i].path, 8, 1,
				       listeners[i].cb);
		if (r < 0)
			return log_error_errno(r, "cannot listen on %s", listeners[i].path);
	}

	/* the key broker first: before any helper that would inherit the keys in our environment,
	 * and outside the Landlock domain we enter below */
	r = vm_keyd_start(vm);
	if (r < 0)
		return r;
	/* virtiofsd builds its own sandbox (mount namespace, pivot_root), which a Landlocked
	 * process may not: it starts before capsem-vm confines itself */
	if (vm->o.workspace && !vm->o.workspace_9p && !vm->o.workspace_serial) {
		r = vm_workspace_start(vm);
		if (r < 0)
			return r;
	}
	/* QEMU's cgroup, then capsem-vm's own confinement, before any thread exists (the ledger's
	 * writer, libuv's pool, libcurl's): all of them, and every child, inherit it */
	if (vm->o.ram_file) { /* QEMU sizes it; it must exist for QEMU's Landlock rule,
				 * and be made before our own confinement */
		_cleanup_close_ int rf = open(
			vm->o.ram_file,
			O_RDWR | O_CLOEXEC | O_NOFOLLOW | (vm->o.ram_private ? 0 : O_CREAT), 0600);
		if (rf < 0)
			return log_error_errno(negative_errno(), "--ram-file %s", vm->o.ram_file);
	}
	vm_cgroup_setup(vm);
	r = vm_confine_self(vm);
	if (r < 0)
		return r;
	vm->mcp_prefix = vm_mcp_prefix(vm);

	if (vm->o.ledger) {
		r = ledger_open(vm->o.ledger, &vm->ledger);
		if (r < 0)
			return log_error_errno(r, "cannot open the session ledger %s",
					       vm->o.ledger);
		r = vm_ledger_events_start(vm);
		if (r < 0)
			return log_error_errno(r, "cannot watch the session ledger's commits");
		r = vm_audit_start(vm);
		if (r < 0)
			return r;
	}
	if (!vm->o.no_egress) {
		char err[512] = "";
		_cleanup_free_ char *home = NULL;
		(void)capsem_home(&home);
		struct egress_config ec = {
			.loop = vm->loop,
			.capsem_home = home,
			.proxy_socket = "vsock_5002",
			.dns_socket = "vsock_5007",
			.keyd_ctl = vm->keyd_ctl,
			.hooks = vm_ledger_hooks(),
			.userdata = vm->ledger,
		};
		if (!home)
			return log_oom();
		r = egress_start(&ec, &vm->egress, err, sizeof(err));
		if (r < 0)
			return log_error("cannot set up the VM's network: %s", err), r;
		/* without --mcp-config: the installation's $CAPSEM_HOME/mcp.toml, when there is one
		 * (like the user policy, it is the user's to write; capsemd passes nothing) */
		_cleanup_free_ char *home_mcp = path_in(home, "mcp.toml");
		if (!home_mcp)
			return log_oom();
		const char *mcp_config = vm->o.mcp		       ? vm->o.mcp
					 : access(home_mcp, F_OK) == 0 ? home_mcp
								       : NULL;
		/* the workspace's snapshots: <vmdir>/snapshots, as capsemd keeps them */
		_cleanup_free_ char *snap_store =
			vm->o.workspace ? path_in(vm->vmdir_abs, "snapshots") : NULL;
		if (vm->o.workspace && !snap_store)
			return log_oom();
		struct gateway_config gc = { .loop = vm->loop,
					     .socket_path = "vsock_5003",
					     .config_path = mcp_config,
					     .workspace = vm->o.workspace,
					     .snapshot_store = snap_store,
					     .capsem_home = home,
					     .ledger = vm->ledger,
					     .policy = egress_current_policy,
					     .policy_userdata = vm->egress,
					     .spawn_prefix = vm->mcp_prefix };
		r = gateway_start(&gc, &vm->mcp, err, sizeof(err));
		if (r < 0)
			return log_error("cannot start the MCP gateway: %s", err), r;
	}

	struct vsock_backend_config vc = {
		.vhost_socket = "vhost-vsock.sock",
		.uds_path = "vsock",
		.guest_cid = vm->o.cid,
		.on_error = vsock_error,
		.userdata = vm,
	};
	if (vm->ledger) {
		/* exec sessions are recorded from the bytes this back end relays (vmledger.c) */
		vc.tap_open = vm_exec_tap_open;
		vc.tap_data = vm_exec_tap_data;
		vc.tap_close = vm_exec_tap_close;
		vc.tap_userdata = vm->ledger;
	}
	if (vm->o.chan_serial)
		r = vm_chan_start(vm);
	else if ((r = vsock_backend_new(vm->loop, &vc, &vm->vsock)) < 0)
		return log_error_errno(r, "cannot start the vsock backend in %s", vm->o.vmdir);
	if (r < 0)
		return r;
	if (vm->o.workspace_serial && (r = vm_ws_start(vm)) < 0) /* a confined child */
		return r;

	struct qemu_config qc = {
		.binary = vm->o.qemu,
		.name = vm->o.vmdir,
		.kernel = vm->o.kernel,
		.initrd = vm->o.initrd,
		.cmdline_extra = vm->o.append,
		.cpus = vm->o.cpus,
		.mem_mib = vm->o.mem_mib,
		.tcg_tb_mib = vm->o.tcg_tb_mib,
		.accel = vm->o.accel,
		.serial_sock = "serial.sock",
		.qmp_sock = "qmp.sock",
		.vhost_vsock_sock = "vhost-vsock.sock",
		.chan_sock = vm->o.chan_serial ? "chan.sock" : NULL,
		.disk = vm->o.disk,
		.rootfs = vm->o.rootfs,
		.mounts = vm->o.mounts,
		.n_mounts = vm->o.n_mounts,
		.vhost_fs_sock = vm->o.workspace && !vm->o.workspace_9p && !vm->o.workspace_serial
					 ? VIRTIOFS_SOCKET
					 : NULL,
		.workspace_9p = vm->o.workspace_9p,
		.ws_sock = vm->o.workspace_serial ? WS_SOCKET : NULL,
		.incoming = vm->o.incoming != NULL,
		.ram_file = vm->o.ram_file,
		.ram_private = vm->o.ram_private,
	};
	r = qemu_build_argv(&qc, &argv);
	if (r == -E2BIG)
		return log_error("the kernel command line is too long (--append, --mount)"), r;
	if (r < 0)
		return log_error_errno(
			r, "cannot build the QEMU command line (paths must not contain ',')");
	if (log_get_max() >= LOG_LVL_DEBUG) {
		for (size_t i = 0; argv[i]; i++)
			log_debug("qemu argv[%zu] = %s", i, argv[i]);
	}
	_cleanup_close_ int log_fd =
		open(vm->p_qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "cannot create %s", vm->p_qemu_log);
	struct ll_ruleset rs = { .fd = -1 };
	if (vm_confine_enabled()) {
		r = qemu_landlock(&qc, vm->vmdir_abs, &rs);
		if (r < 0)
			return log_error_errno(r, "cannot build QEMU's Landlock ruleset");
	}
	vm->t_start_ns = clock_ns(CLOCK_MONOTONIC);
	int pidfd;
	/* the empty network namespace needs a user namespace as a normal user */
	int netns = confinfo_userns_ok();
	if (!netns)
		log_warn(
			"confinement: QEMU's empty network namespace not enforced: no unprivileged "
			"user namespaces (Landlock still denies it TCP where ABI >= 4)");
	r = qemu_spawn(argv, log_fd, rs.fd, &vm->cg, netns, &vm->qemu_pid, &pidfd);
	ll_ruleset_done(&rs);
	if (r < 0)
		return log_error_errno(r, "cannot start %s", argv[0]);
	vm->w_qemu = watch_new(vm, pidfd, UV_READABLE, 0, on_qemu_exit);
	if (!vm->w_qemu)
		return log_oom();
	uv_timer_start(&vm->boot_timer, on_boot_timeout, vm->o.boot_timeout_ms, 0);
	return 0;
}

static void help(void)
{
	printf("Usage: capsem-vm --vmdir DIR --kernel FILE --initrd FILE [OPTIONS]\n"
	       "\n"
	       "Run one Capsem microVM under QEMU and supervise it until it is told to stop.\n"
	       "Normally started by capsem or capsemd; usable by hand for debugging.\n"
	       "\n"
	       "  --vmdir DIR          the VM's directory (created 0700): sockets, logs\n"
	       "  --kernel FILE        guest kernel (bzImage)\n"
	       "  --initrd FILE        initramfs\n"
	       "  --cpus N             virtual CPUs (default 1)\n"
	       "  --memory SIZE        guest RAM, e.g. 512M, 2G (default 512M)\n"
	       "  --accel auto|kvm|tcg accelerator (default auto: KVM only with vmx/svm)\n"
	       "  --tcg-tb-mib N       TCG translation cache in MiB (default %u; 0 = QEMU's 1 "
	       "GiB):\n"
	       "                       bounds QEMU's memory beyond the guest's RAM under TCG\n"
	       "  --cid N              guest vsock CID (default 3)\n"
	       "  --boot-timeout SECS  give up when the agent has not said hello (default 60)\n"
	       "  --hostname NAME      guest hostname (default capsem)\n"
	       "  --append ARGS        extra kernel command line\n"
	       "  --qemu PATH          QEMU binary (default $CAPSEM_QEMU, else "
	       "qemu-system-x86_64)\n"
	       "  --ipc-fd N           JSON events/commands on fd N instead of stdout\n"
	       "  --disk FILE          raw disk image (ext4 inside) for the guest's /root,\n"
	       "                       attached read-write\n"
	       "  --rootfs FILE        root file system image (squashfs), attached read-only;\n"
	       "                       the guest boots into it with an overlay on top\n"
	       "  --mount HOST:GUEST[:ro]  share host directory HOST at GUEST over 9p\n"
	       "  --channel vsock|serial  the host<->guest ports over the vhost-user vsock device\n"
	       "                       (default) or multiplexed over a virtio-serial port, which\n"
	       "                       QEMU can save: {\"cmd\":\"suspend\"} (docs/PROTOCOL.md "
	       "§10)\n"
	       "  --incoming FILE      resume the VM saved in FILE (by suspend, with the same\n"
	       "                       options) instead of booting it; FILE is removed once "
	       "loaded\n"
	       "  --workspace DIR      share DIR at /root/workspace: with --channel serial over\n"
	       "                       a virtio-serial port served by capsem-vm's own 9p server\n"
	       "                       (a VM that can be saved); else over virtio-fs\n"
	       "                       (virtiofsd, $CAPSEM_VIRTIOFSD or " VIRTIOFS_DEFAULT_BIN ")\n"
	       "                       or, as a normal user, QEMU's 9p (virtiofsd needs root);\n"
	       "                       CAPSEM_WORKSPACE_TRANSPORT=serial|virtiofs|9p chooses\n"
	       "  --no-workspace-audit no file audit of the workspace in the ledger (a folder\n"
	       "                       that is not the agent's work, e.g. containers' roots)\n"
	       "  --ledger FILE        record the session (execs, network, DNS, model calls) in\n"
	       "                       this SQLite file (docs/LEDGER.md)\n"
	       "  --no-egress          no network for the guest at all (no proxy, no DNS, no MCP)\n"
	       "  --mcp-config FILE    the MCP gateway's servers and built-in tools (docs/MCP.md;\n"
	       "                       default: $CAPSEM_HOME/mcp.toml when it exists)\n"
	       "  --control PATH       also serve events/commands on a Unix socket (relative to\n"
	       "                       the VM directory or absolute); ignore SIGHUP\n"
	       "  --guest-env KEY=VAL  add to every exec's environment in the guest (repeatable)\n"
	       "  --control-fd N       the --control socket is already bound and listening on\n"
	       "                       descriptor N (socket activation: capsemd connects at once)\n"
	       "  --rm                 remove the VM directory on exit\n"
	       "  -h, --help           this text\n"
	       "\n"
	       "Events (one JSON object per line): ready, error, stopped, suspended,\n"
	       "suspend_failed. Stop with SIGTERM,\n"
	       "SIGINT, {\"cmd\":\"stop\"} on the IPC fd or a --control connection, or by closing\n"
	       "the IPC fd (closing a --control connection does not stop the VM).\n",
	       QEMU_TCG_TB_MIB_DEFAULT);
}

/* --disk FILE: an existing regular file or block device we may read and write. */
static int parse_disk(const char *arg, char **ret)
{
	struct stat st;
	_cleanup_free_ char *real = realpath(arg, NULL);
	if (!real)
		return log_error_errno(negative_errno(), "--disk %s", arg);
	if (stat(real, &st) < 0)
		return log_error_errno(negative_errno(), "--disk %s", arg);
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return log_error("--disk %s: not a regular file or block device", arg), -EINVAL;
	if (S_ISREG(st.st_mode) && st.st_size < (1 << 20))
		return log_error("--disk %s: too small to hold a file system", arg), -EINVAL;
	if (access(real, R_OK | W_OK) < 0)
		return log_error_errno(negative_errno(), "--disk %s", arg);
	*ret = TAKE_PTR(real);
	return 0;
}

/* --mount HOST:GUEST[:ro|:rw]. GUEST cannot hold ':', so HOST may. */
static int parse_mount(const char *arg, struct vm_opts *o)
{
	struct stat st;
	size_t n = strlen(arg);
	int ro = 0;
	if (n > 3 && (streq(arg + n - 3, ":ro") || streq(arg + n - 3, ":rw"))) {
		ro = arg[n - 2] == 'r' && arg[n - 1] == 'o';
		n -= 3;
	}
	_cleanup_free_ char *spec = strndup(arg, n);
	if (!spec)
		return log_oom();
	char *colon = strrchr(spec, ':');
	if (!colon || colon == spec)
		return log_error("--mount '%s': expected HOST:GUEST[:ro]", arg), -EINVAL;
	*colon = 0;
	const char *guest = colon + 1;
	if (!qemu_guest_path_valid(guest))
		return log_error("--mount '%s': the guest path must be absolute, at most %d "
				 "characters of A-Z a-z 0-9 / _ . -, without '.' or '..' "
				 "components, and not /, /proc, /sys or /dev",
				 arg, QEMU_GUEST_PATH_MAX - 1),
		       -EINVAL;
	if (streq(guest, VIRTIOFS_GUEST_PATH))
		return log_error("--mount '%s': " VIRTIOFS_GUEST_PATH " is the workspace (use "
				 "--workspace)",
				 arg),
		       -EINVAL;
	for (size_t i = 0; i < o->n_mounts; i++)
		if (streq(o->mounts[i].guest, guest))
			return log_error("--mount '%s': %s is already a mount point", arg, guest),
			       -EINVAL;
	_cleanup_free_ char *real = realpath(spec, NULL);
	if (!real || stat(real, &st) < 0)
		return log_error_errno(negative_errno(), "--mount '%s': %s", arg, spec);
	if (!S_ISDIR(st.st_mode))
		return log_error("--mount '%s': %s is not a directory", arg, spec), -EINVAL;
	char *g = strdup(guest);
	if (!g)
		return log_oom();
	o->mounts[o->n_mounts++] =
		(struct qemu_mount){ .host = TAKE_PTR(real), .guest = g, .readonly = ro };
	return 0;
}

/* --rootfs FILE: an existing regular file we may read (QEMU opens it read-only). */
static int parse_rootfs(const char *arg, char **ret)
{
	struct stat st;
	_cleanup_free_ char *real = realpath(arg, NULL);
	if (!real || stat(real, &st) < 0)
		return log_error_errno(negative_errno(), "--rootfs %s", arg);
	if (!S_ISREG(st.st_mode) || st.st_size < 4096)
		return log_error("--rootfs %s: not a regular file holding a file system", arg),
		       -EINVAL;
	if (access(real, R_OK) < 0)
		return log_error_errno(negative_errno(), "--rootfs %s", arg);
	*ret = TAKE_PTR(real);
	return 0;
}

static void opts_free(struct vm_opts *o)
{
	free(o->workspace);
	free(o->incoming);
	free(o->ram_file);
	free(o->disk);
	free(o->rootfs);
	free(o->ledger);
	free(o->mcp);
	strv_free(o->guest_env);
	for (size_t i = 0; i < o->n_mounts; i++) {
		free((char *)o->mounts[i].host);
		free((char *)o->mounts[i].guest);
	}
}

static int parse_args(int argc, char **argv, struct vm_opts *o)
{
	enum {
		ARG_VMDIR = 256,
		ARG_KERNEL,
		ARG_INITRD,
		ARG_CPUS,
		ARG_MEM,
		ARG_ACCEL,
		ARG_CID,
		ARG_BOOT,
		ARG_HOST,
		ARG_APPEND,
		ARG_QEMU,
		ARG_IPC,
		ARG_RM,
		ARG_CONTROL,
		ARG_DISK,
		ARG_ROOTFS,
		ARG_MOUNT,
		ARG_LEDGER,
		ARG_NO_EGRESS,
		ARG_MCP_CONFIG,
		ARG_GUEST_ENV,
		ARG_TB,
		ARG_CONTROL_FD,
		ARG_WORKSPACE,
		ARG_CHANNEL,
		ARG_INCOMING,
		ARG_IMAGE_SHA,
		ARG_RAM_FILE,
		ARG_RAM_PRIVATE,
		ARG_NO_WS_AUDIT
	};
	static const struct option opts[] = {
		{ "vmdir", required_argument, NULL, ARG_VMDIR },
		{ "kernel", required_argument, NULL, ARG_KERNEL },
		{ "initrd", required_argument, NULL, ARG_INITRD },
		{ "cpus", required_argument, NULL, ARG_CPUS },
		{ "memory", required_argument, NULL, ARG_MEM },
		{ "accel", required_argument, NULL, ARG_ACCEL },
		{ "tcg-tb-mib", required_argument, NULL, ARG_TB },
		{ "control-fd", required_argument, NULL, ARG_CONTROL_FD },
		{ "cid", required_argument, NULL, ARG_CID },
		{ "boot-timeout", required_argument, NULL, ARG_BOOT },
		{ "hostname", required_argument, NULL, ARG_HOST },
		{ "append", required_argument, NULL, ARG_APPEND },
		{ "qemu", required_argument, NULL, ARG_QEMU },
		{ "ipc-fd", required_argument, NULL, ARG_IPC },
		{ "rm", no_argument, NULL, ARG_RM },
		{ "control", required_argument, NULL, ARG_CONTROL },
		{ "disk", required_argument, NULL, ARG_DISK },
		{ "rootfs", required_argument, NULL, ARG_ROOTFS },
		{ "mount", required_argument, NULL, ARG_MOUNT },
		{ "workspace", required_argument, NULL, ARG_WORKSPACE },
		{ "no-workspace-audit", no_argument, NULL, ARG_NO_WS_AUDIT },
		{ "channel", required_argument, NULL, ARG_CHANNEL },
		{ "incoming", required_argument, NULL, ARG_INCOMING },
		{ "image-sha256", required_argument, NULL, ARG_IMAGE_SHA },
		{ "ram-file", required_argument, NULL, ARG_RAM_FILE },
		{ "ram-private", no_argument, NULL, ARG_RAM_PRIVATE },
		{ "ledger", required_argument, NULL, ARG_LEDGER },
		{ "no-egress", no_argument, NULL, ARG_NO_EGRESS },
		{ "mcp-config", required_argument, NULL, ARG_MCP_CONFIG },
		{ "guest-env", required_argument, NULL, ARG_GUEST_ENV },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	uint64_t v;
	uint32_t u;
	int c;
	*o = (struct vm_opts){ .cpus = 1,
			       .mem_mib = 512,
			       .tcg_tb_mib = QEMU_TCG_TB_MIB_DEFAULT,
			       .control_fd = -1,
			       .cid = 3,
			       .boot_timeout_ms = 60000,
			       .ipc_fd = -1,
			       .hostname = "capsem",
			       .accel = VM_ACCEL_AUTO };
	/* the environment's QEMU (tests put a stand-in there through capsemd); --qemu wins */
	const char *env_qemu = getenv("CAPSEM_QEMU");
	if (env_qemu && *env_qemu)
		o->qemu = env_qemu;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_VMDIR:
			o->vmdir = optarg;
			break;
		case ARG_KERNEL:
			o->kernel = optarg;
			break;
		case ARG_INITRD:
			o->initrd = optarg;
			break;
		case ARG_CONTROL_FD:
			if (parse_u32(optarg, &u) < 0 || u < 3 || u > INT32_MAX)
				return log_error("--control-fd: expected a descriptor number >= 3"),
				       -EINVAL;
			o->control_fd = (int)u;
			/* never inherited further (QEMU, helpers) */
			if (fd_set_cloexec(o->control_fd, 1) < 0)
				return log_error("--control-fd %u: not an open descriptor", u),
				       -EBADF;
			break;
		case ARG_TB:
			if (parse_u32(optarg, &u) < 0 || u > QEMU_TCG_TB_MIB_MAX)
				return log_error("--tcg-tb-mib: expected 0..%u (MiB), got '%s'",
						 QEMU_TCG_TB_MIB_MAX, optarg),
				       -EINVAL;
			o->tcg_tb_mib = u;
			break;
		case ARG_CPUS:
			if (vm_parse_cpus(optarg, &u) < 0)
				return log_error(VM_CPUS_USAGE ", got '%s'", optarg), -EINVAL;
			o->cpus = u;
			break;
		case ARG_MEM:
			if (vm_parse_memory_mib(optarg, &v) < 0)
				return log_error(VM_MEMORY_USAGE ", got '%s'", optarg), -EINVAL;
			o->mem_mib = v;
			break;
		case ARG_ACCEL:
			if (accel_parse(optarg, &o->accel) < 0)
				return log_error("--accel: expected auto, kvm or tcg"), -EINVAL;
			break;
		case ARG_CID:
			if (parse_u64(optarg, &v) < 0 || v < 3 || v > UINT32_MAX - 1)
				return log_error("--cid: expected 3..4294967294"), -EINVAL;
			o->cid = v;
			break;
		case ARG_BOOT:
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0)
				return log_error("--boot-timeout: expected seconds > 0"), -EINVAL;
			o->boot_timeout_ms = v;
			break;
		case ARG_HOST:
			o->hostname = optarg;
			break;
		case ARG_APPEND:
			o->append = optarg;
			break;
		case ARG_QEMU:
			o->qemu = optarg;
			break;
		case ARG_IPC:
			if (parse_u32(optarg, &u) < 0 || u < 3 || u > 65535 ||
			    fcntl((int)u, F_GETFD) < 0)
				return log_error("--ipc-fd: not an open descriptor: '%s'", optarg),
				       -EINVAL;
			o->ipc_fd = (int)u;
			break;
		case ARG_RM:
			o->remove_vmdir = 1;
			break;
		case ARG_CONTROL:
			if (!*optarg || optarg[strlen(optarg) - 1] == '/')
				return log_error("--control: expected a socket path, got '%s'",
						 optarg),
				       -EINVAL;
			o->control = optarg;
			break;
		case ARG_DISK:
			if (o->disk)
				return log_error("--disk: given twice"), -EINVAL;
			if (parse_disk(optarg, &o->disk) < 0)
				return -EINVAL;
			break;
		case ARG_ROOTFS:
			if (o->rootfs)
				return log_error("--rootfs: given twice"), -EINVAL;
			if (parse_rootfs(optarg, &o->rootfs) < 0)
				return -EINVAL;
			break;
		case ARG_RAM_FILE:
			/* absolute, or a file name in the VM directory (our cwd later) */
			if (optarg[0] != '/' &&
			    (strchr(optarg, '/') || !*optarg || optarg[0] == '.'))
				return log_error(
					       "--ram-file: an absolute path or a file name in the "
					       "VM directory, not '%s'",
					       optarg),
				       -EINVAL;
			free(o->ram_file);
			o->ram_file = strdup(optarg);
			if (!o->ram_file)
				return log_oom();
			break;
		case ARG_RAM_PRIVATE:
			o->ram_private = 1;
			break;
		case ARG_IMAGE_SHA:
			if (strlen(optarg) != 64 || strspn(optarg, "0123456789abcdef") != 64)
				return log_error("--image-sha256: 64 lowercase hex digits"),
				       -EINVAL;
			o->image_sha256 = optarg;
			break;
		case ARG_INCOMING:
			free(o->incoming);
			o->incoming = realpath(optarg, NULL);
			if (!o->incoming)
				return log_error_errno(negative_errno(), "--incoming %s", optarg),
				       -EINVAL;
			break;
		case ARG_CHANNEL:
			if (!streq(optarg, "vsock") && !streq(optarg, "serial"))
				return log_error("--channel: vsock or serial, not '%s'", optarg),
				       -EINVAL;
			o->chan_serial = streq(optarg, "serial");
			break;
		case ARG_WORKSPACE: {
			struct stat st;
			if (o->workspace)
				return log_error("--workspace: given twice"), -EINVAL;
			o->workspace = realpath(optarg, NULL);
			if (!o->workspace)
				return log_error_errno(negative_errno(), "--workspace %s", optarg),
				       -EINVAL;
			if (stat(o->workspace, &st) < 0 || !S_ISDIR(st.st_mode))
				return log_error("--workspace %s: not a directory", optarg),
				       -EINVAL;
			break;
		}
		case ARG_MOUNT:
			if (o->n_mounts >= QEMU_MAX_MOUNTS)
				return log_error("--mount: at most %d", QEMU_MAX_MOUNTS), -EINVAL;
			if (parse_mount(optarg, o) < 0)
				return -EINVAL;
			break;
		case ARG_LEDGER:
			free(o->ledger);
			if (optarg[0] == '/') {
				o->ledger = strdup(optarg);
			} else { /* we chdir into the VM directory later */
				/* NOLINTNEXTLINE(clang-analyzer-unix.StdCLibraryFunctions): glibc's getcwd(NULL, 0) allocates */
				_cleanup_free_ char *cwd = getcwd(NULL, 0);
				if (!cwd || asprintf(&o->ledger, "%s/%s", cwd, optarg) < 0)
					o->ledger = NULL;
			}
			if (!o->ledger)
				return log_oom();
			break;
		case ARG_NO_EGRESS:
			o->no_egress = 1;
			break;
		case ARG_NO_WS_AUDIT:
			o->no_ws_audit = 1;
			break;
		case ARG_GUEST_ENV: {
			const char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || strv_length(o->guest_env) >= 16 ||
			    strlen(optarg) >= PROTO_BOOT_ENV_MAX || strpbrk(optarg, "\n"))
				return log_error(
					       "--guest-env: expected KEY=VALUE (at most 16, each "
					       "shorter than %u bytes), got '%s'",
					       PROTO_BOOT_ENV_MAX, optarg),
				       -EINVAL;
			if (strv_push(&o->guest_env, optarg) < 0)
				return log_oom();
			break;
		}
		case ARG_MCP_CONFIG: /* absolute: we chdir into the VM directory later */
			free(o->mcp);
			o->mcp = realpath(optarg, NULL);
			if (!o->mcp)
				return log_error_errno(negative_errno(), "--mcp-config %s", optarg),
				       -EINVAL;
			break;
		case 'h':
			help();
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		return log_error("unexpected argument '%s' (see --help)", argv[optind]), -EINVAL;
	if (o->control_fd >= 0 && !o->control)
		return log_error("--control-fd needs --control (the socket's path)"), -EINVAL;
	if (!o->vmdir || !o->kernel || !o->initrd)
		return log_error("--vmdir, --kernel and --initrd are required (see --help)"),
		       -EINVAL;
	if (strlen(o->hostname) >= PROTO_NAME_MAX)
		return log_error("--hostname: too long"), -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	struct vm vm = { 0 };
	uv_loop_t loop;
	const char *why = NULL;
	int r;

	log_setup("capsem-vm", LOG_LVL_INFO);
	log_setup_from_env();
	if (argc > 1 && streq(argv[1], "--mcp-exec"))
		return vm_mcp_exec(argc, argv);
	if (argc > 1 && streq(argv[1], "--ws9p-serve"))
		return vm_ws9p_serve(argc, argv);
	if (argc > 1 && streq(argv[1], "--keyd"))
		return keyd_process_main(argc, argv);
	vm.cg = (struct hostcg)HOSTCG_INIT;
	r = parse_args(argc, argv, &vm.o);
	if (r == 0 && vm_workspace_transport(&vm.o) < 0)
		r = -EINVAL;
	if (r != 0) {
		opts_free(&vm.o);
		return r > 0 ? 0 : 2;
	}
	if (check_readable("kernel", vm.o.kernel) < 0 ||
	    check_readable("initrd", vm.o.initrd) < 0) {
		opts_free(&vm.o);
		return 1;
	}
	r = accel_resolve(vm.o.accel, &vm.o.accel, &why);
	if (r < 0) {
		opts_free(&vm.o);
		return log_error("KVM was requested but %s", why), 1;
	}
	if (why)
		log_warn("KVM unavailable (%s): using TCG emulation, 10-50x slower", why);

	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigaction(SIGPIPE, &sa, NULL);
	uv_loop_init(&loop);
	vm.loop = &loop;
	vm.qemu_pid = -1;
	vm.keyd_ctl = -1;
	uv_timer_init(&loop, &vm.boot_timer);
	uv_timer_init(&loop, &vm.stop_timer);
	uv_timer_init(&loop, &vm.vsock_timer);
	uv_timer_init(&loop, &vm.vfs_timer);
	vm.boot_timer.data = vm.stop_timer.data = vm.vsock_timer.data = vm.vfs_timer.data = &vm;
	int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
		uv_signal_init(&loop, &vm.sig[i]);
		vm.sig[i].data = &vm;
		uv_signal_start(&vm.sig[i], on_signal, sigs[i]);
	}
	if (vm.o.ipc_fd >= 0) {
		fd_set_nonblock(vm.o.ipc_fd, 1);
		fd_set_cloexec(vm.o.ipc_fd, 1);
		vm.w_ipc = watch_new(&vm, dup(vm.o.ipc_fd), UV_READABLE, 4096, vm_on_ipc);
	}
	r = vm_start(&vm);
	if (r < 0) {
		if (!vm.error)
			vm.error = strdup("start-up failed");
		vm.exit_code = 1;
		if (vm.qemu_pid > 0 && !vm.qemu_exited) {
			kill(vm.qemu_pid, SIGKILL);
			waitpid(vm.qemu_pid, NULL, 0);
			vm.qemu_exited = 1;
		}
		vm_stop(&vm, "start-up failed");
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	hostcg_remove(&vm.cg);
	strv_free(vm.mcp_prefix);
	free(vm.error);
	free(vm.vmdir_abs);
	free(vm.vsock_error);
	free(vm.p_vhost);
	free(vm.p_vsock);
	free(vm.p_ctl);
	free(vm.p_serial);
	free(vm.p_qmp);
	free(vm.p_serial_log);
	free(vm.p_qemu_log);
	free(vm.state_line);
	opts_free(&vm.o);
	return vm.exit_code;
}
