/* vmsuspend.c - save a running VM to a file and bring it back (docs/ARCHITECTURE.md "Suspend").
 *
 * Save ({"cmd":"suspend"}): the channel mux is paused first (PAUSE/PAUSED, docs/PROTOCOL.md §10),
 * so the byte stream has a clean frame boundary both ways; then QMP stop, getfd (the state file,
 * passed over the QMP socket with SCM_RIGHTS: QEMU may not open files or spawn, and 7.2 has no
 * file: target), migrate to fd:, query-migrate until it completes. With --ram-file the guest RAM
 * is that file (shared), left out of the stream (x-ignore-shared) and written back with
 * fdatasync; the stream is then only the device state (~130 KiB). The state goes to
 * <vmdir>/suspend.state.tmp, is fsynced and renamed to SUSPEND_STATE with SUSPEND_INFO beside
 * it; then QEMU quits and capsem-vm ends with the stopped reason "suspended". When anything
 * fails the guest runs on (cont) and the mux starts a new session: its streams are reset.
 *
 * Restore (--incoming FILE): QEMU starts with -incoming defer and the same devices; once it is
 * on QMP the file is passed the same way to migrate-incoming; the guest was stopped for the save,
 * so it comes back paused, and cont runs it. The file is then removed (the guest's disk moves on: that state is stale). The
 * guest's capsem-chan is paused; our HELLO starts a new mux session, the agent reconnects its
 * control connection and says HELLO, and the ready event carries "resumed": true. The agent sets
 * the wall clock from the BOOT_CONFIG that follows.
 *
 * The QMP exchanges here are synchronous: the loop thread blocks while the guest is stopped or
 * not yet running (every other host service of this VM waits on the guest anyway). QMP replies
 * are matched by id; events and the greeting are skipped. Trust: QEMU's replies are bounded and
 * parsed as JSON; the state file is ours (0600 in the VM directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "clockutil.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"

#define QMP_LINE_MAX (64u * 1024u)
#define QMP_CALL_MS 10000
#define SAVE_MAX_MS (10 * 60 * 1000) /* a save of several GiB under TCG */
#define PAUSE_MS 5000
#define STATE_TMP "suspend.state.tmp"

/* Write all of text on QMP's socket, with fd passed alongside when >= 0. */
static int qmp_write(int sock, const char *text, int fd)
{
	size_t n = strlen(text), done = 0;
	while (done < n) {
		ssize_t k = fd_send_with_fd(sock, text + done, n - done, done == 0 ? fd : -1);
		if (k == -EINTR)
			continue;
		if (k == -EAGAIN) {
			struct pollfd p = { .fd = sock, .events = POLLOUT };
			if (poll(&p, 1, QMP_CALL_MS) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		if (k <= 0)
			return k < 0 ? (int)k : -EPIPE;
		done += (size_t)k;
	}
	return 0;
}

/* Run one QMP command (args stolen, may be NULL) and wait for its reply: 0 with *ret (the
 * "return" value, may be NULL when not wanted), -EIO with err set to QEMU's description. */
static int qmp_call(struct vm *vm, const char *cmd, json_t *args, int fd, json_t **ret, char *err,
		    size_t errlen)
{
	int sock = vm->w_qmp ? vm->w_qmp->fd : -1;
	static char line[QMP_LINE_MAX];
	size_t n = 0;
	if (sock < 0) {
		json_decref(args);
		snprintf(err, errlen, "QEMU's monitor is not connected");
		return -ENOTCONN;
	}
	json_int_t id = ++vm->qmp_id;
	json_t *j = json_pack("{s:s, s:I}", "execute", cmd, "id", id);
	if (j && args)
		json_object_set_new(j, "arguments", args);
	else
		json_decref(args);
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	_cleanup_free_ char *textnl = NULL;
	if (!text || asprintf(&textnl, "%s\n", text) < 0)
		return -ENOMEM;
	int r = qmp_write(sock, textnl, fd);
	if (r < 0) {
		snprintf(err, errlen, "QEMU's monitor: %s", strerror(-r));
		return r;
	}
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + QMP_CALL_MS;
	for (;;) {
		ssize_t len = fd_read_line(sock, line, sizeof(line), &n, until);
		if (len == -ETIMEDOUT) {
			snprintf(err, errlen, "QEMU's monitor did not answer '%s'", cmd);
			return -ETIMEDOUT;
		}
		if (len < 0) {
			snprintf(err, errlen, "QEMU's monitor closed (QEMU exited?)");
			return -EPIPE;
		}
		json_t *reply = json_loadb(line, (size_t)len, 0, NULL);
		fd_line_consume(line, &n, (size_t)len);
		json_t *rid = json_object_get(reply, "id");
		if (!json_is_integer(rid) || json_integer_value(rid) != id) {
			json_decref(reply); /* the greeting, an event, an old reply */
			continue;
		}
		json_t *e = json_object_get(reply, "error");
		if (e) {
			snprintf(err, errlen, "%s",
				 json_string_value(json_object_get(e, "desc"))
					 ? json_string_value(json_object_get(e, "desc"))
					 : "QEMU refused the command");
			json_decref(reply);
			return -EIO;
		}
		if (ret)
			*ret = json_incref(json_object_get(reply, "return"));
		json_decref(reply);
		return 0;
	}
}

static int qmp_negotiate(struct vm *vm, char *err, size_t errlen)
{
	if (vm->qmp_negotiated)
		return 0;
	int r = qmp_call(vm, "qmp_capabilities", NULL, -1, NULL, err, errlen);
	if (r == 0)
		vm->qmp_negotiated = 1;
	return r;
}

/* Why this VM cannot be saved, or NULL. */
static const char *cannot_save(const struct vm *vm)
{
	if (!vm->o.chan_serial)
		return "its host channel is the vhost-user vsock device, which QEMU 7.2 cannot "
		       "save "
		       "(the serial channel can: --channel serial)";
	if (vm->o.workspace && !vm->o.workspace_serial)
		return "its workspace is shared over virtio-fs or QEMU's 9p, and QEMU 7.2 cannot "
		       "save a VM with such a share mounted (CAPSEM_WORKSPACE_TRANSPORT=serial "
		       "can)";
	if (vm->o.n_mounts)
		return "it has --mount shares (9p), and QEMU 7.2 cannot save a VM with a mounted "
		       "share";
	if (vm->state != VM_READY)
		return "it is not running (booting or stopping)";
	return NULL;
}

static void suspend_failed(struct vm *vm, const char *msg)
{
	log_warn("suspend failed: %s", msg);
	vm_emit(vm, json_pack("{s:s, s:s}", "event", "suspend_failed", "message", msg));
}

/* The guest RAM is in the stream unless it is a shared file (--ram-file without
 * --ram-private): then the stream leaves it out (x-ignore-shared) and a restore maps the same
 * file. A restore sets the capability as the save did (suspend.json "ram_in_stream"). */
static int ram_in_stream(const struct vm *vm)
{
	return !vm->o.ram_file || vm->o.ram_private;
}

static int ignore_shared(struct vm *vm, int in_stream, char *err, size_t errlen)
{
	/* set either way: a QEMU that was restored with it on keeps it on for its own save, and
	 * the stream records it (a restore must set it the same) */
	return qmp_call(vm, "migrate-set-capabilities",
			json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
				  "x-ignore-shared", "state", !in_stream),
			-1, NULL, err, errlen);
}

/* Save the stopped guest into fd: migrate, then wait for the end. */
static int save_to(struct vm *vm, int fd, char *err, size_t errlen)
{
	int r = qmp_call(vm, "stop", NULL, -1, NULL, err, errlen);
	/* the workspace's 9p server: what QEMU still hands over is served, its state written */
	if (r == 0)
		r = vm_ws_quiesce(vm, err, errlen);
	/* a stopped guest has no downtime to protect: no bandwidth cap (QEMU's default is
	 * 32 MiB/s) */
	if (r == 0)
		r = qmp_call(vm, "migrate-set-parameters",
			     json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), -1, NULL,
			     err, errlen);
	if (r == 0)
		r = ignore_shared(vm, ram_in_stream(vm), err, errlen);
	if (r == 0)
		r = qmp_call(vm, "getfd", json_pack("{s:s}", "fdname", "capsem-save"), fd, NULL,
			     err, errlen);
	if (r == 0)
		r = qmp_call(vm, "migrate", json_pack("{s:s}", "uri", "fd:capsem-save"), -1, NULL,
			     err, errlen);
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + SAVE_MAX_MS;
	while (r == 0) {
		json_t *st = NULL;
		r = qmp_call(vm, "query-migrate", NULL, -1, &st, err, errlen);
		const char *s = r == 0 ? json_string_value(json_object_get(st, "status")) : NULL;
		if (s && streq(s, "completed")) {
			json_decref(st);
			return vm_ws_check(vm, err, errlen); /* nothing arrived since the quiesce */
		}
		if (s && (streq(s, "failed") || streq(s, "cancelled"))) {
			const char *d = json_string_value(json_object_get(st, "error-desc"));
			snprintf(err, errlen, "QEMU could not save the VM: %s", d ? d : s);
			r = -EIO;
		}
		json_decref(st);
		if (r == 0 && clock_ms(CLOCK_MONOTONIC) > until) {
			snprintf(err, errlen, "the save did not end within %d s",
				 SAVE_MAX_MS / 1000);
			(void)qmp_call(vm, "migrate_cancel", NULL, -1, NULL, err + strlen(err), 0);
			r = -ETIMEDOUT;
		}
		if (r == 0)
			(void)poll(NULL, 0, 10);
	}
	return r;
}

void vm_suspend(struct vm *vm)
{
	char err[512] = "";
	const char *why = cannot_save(vm);
	if (why) {
		snprintf(err, sizeof(err), "this VM cannot be suspended: %s", why);
		suspend_failed(vm, err);
		return;
	}
	uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
	(void)unlink(STATE_TMP);
	_cleanup_close_ int fd =
		open(STATE_TMP, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, sizeof(err), "cannot create %s/%s: %s", vm->vmdir_abs, STATE_TMP,
			 strerror(errno));
		suspend_failed(vm, err);
		return;
	}
	int r = vm_chan_pause(vm, PAUSE_MS);
	if (r < 0) {
		snprintf(err, sizeof(err),
			 r == -ETIMEDOUT ? "the guest did not quiesce its channel within 5 s"
					 : "the host channel is not up");
		(void)vm_chan_restart(vm);
		(void)unlink(STATE_TMP);
		suspend_failed(vm, err);
		return;
	}
	uint64_t t_paused = clock_ms(CLOCK_MONOTONIC);
	r = qmp_negotiate(vm, err, sizeof(err));
	if (r == 0)
		r = save_to(vm, fd, err, sizeof(err));
	if (r == 0 && vm->o.ram_file && !vm->o.ram_private) {
		/* the RAM is the file (left out of the stream): on disk before the state says so */
		_cleanup_close_ int rf = open(vm->o.ram_file, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (rf < 0 || fdatasync(rf) < 0) {
			r = negative_errno();
			snprintf(err, sizeof(err), "cannot write the guest RAM file back: %s",
				 strerror(-r));
		}
	}
	struct stat st = { 0 };
	if (r == 0 &&
	    (fsync(fd) < 0 || fstat(fd, &st) < 0 || rename(STATE_TMP, SUSPEND_STATE) < 0)) {
		r = negative_errno();
		snprintf(err, sizeof(err), "cannot keep the saved state: %s", strerror(-r));
	}
	if (r < 0) {
		char e2[128];
		(void)unlink(STATE_TMP);
		vm_ws_thaw(vm); /* before the guest runs: its replies go out again */
		(void)qmp_call(vm, "cont", NULL, -1, NULL, e2, sizeof(e2));
		(void)vm_chan_restart(vm);
		suspend_failed(vm, err);
		return;
	}
	uint64_t t_saved = clock_ms(CLOCK_MONOTONIC);
	time_t now = time(NULL);
	struct tm tm;
	char when[32];
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_t *info = json_pack("{s:s, s:I, s:I, s:i, s:f, s:f}", "saved_at", when, "bytes",
				 (json_int_t)st.st_size, "memory_mib", (json_int_t)vm->o.mem_mib,
				 "cpus", (int)vm->o.cpus, "pause_ms", (double)(t_paused - t0),
				 "save_ms", (double)(t_saved - t_paused));
	if (info && vm->o.image_sha256)
		json_object_set_new(info, "image_sha256", json_string(vm->o.image_sha256));
	if (info)
		json_object_set_new(info, "ram_in_stream", json_boolean(ram_in_stream(vm)));
	_cleanup_free_ char *text = info ? json_dumps(info, JSON_COMPACT) : NULL;
	if (!text || write_file_atomic(SUSPEND_INFO, text, strlen(text), 0600) < 0)
		log_warn("cannot write %s/%s", vm->vmdir_abs, SUSPEND_INFO);
	if (info)
		json_object_set_new(info, "event", json_string("suspended"));
	if (info)
		json_object_set_new(info, "state", json_string(SUSPEND_STATE));
	vm_emit(vm, info);
	log_info("suspended: %lld bytes of state in %.2f s", (long long)st.st_size,
		 (double)(t_saved - t0) / 1000.0);
	vm_quit(vm, "suspended");
}

int vm_incoming(struct vm *vm)
{
	char err[512] = "";
	uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
	_cleanup_close_ int fd = open(vm->o.incoming, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		vm_fail(vm, "cannot open the saved state %s: %s", vm->o.incoming, strerror(errno));
		return -EIO;
	}
	_cleanup_free_ char *text = NULL;
	json_t *info = NULL;
	if (read_file_small(SUSPEND_INFO, 64 * 1024, &text, NULL) == 0)
		info = json_loads(text, 0, NULL);
	const char *saved = json_string_value(json_object_get(info, "image_sha256"));
	/* how it was saved: without a record, the RAM was in the stream unless it was a file */
	json_t *in_stream = json_object_get(info, "ram_in_stream");
	int ram_streamed = json_is_boolean(in_stream) ? json_is_true(in_stream) : !vm->o.ram_file;
	int same = !vm->o.image_sha256 || (saved && streq(saved, vm->o.image_sha256));
	json_decref(info);
	if (!same) { /* the state belongs to the image it was saved with */
		vm_fail(vm, "cannot resume the VM: its image changed since it was suspended "
			    "(rebuilt or replaced), and the saved state belongs to the old one "
			    "(stop the VM to discard it)");
		return -ESTALE;
	}
	if (!ram_streamed && !vm->o.ram_file) {
		vm_fail(vm, "cannot resume the VM: its RAM was saved in a file (--ram-file) that "
			    "this start does not name");
		return -EINVAL;
	}
	int r = qmp_negotiate(vm, err, sizeof(err));
	if (r == 0)
		r = ignore_shared(vm, ram_streamed, err, sizeof(err));
	if (r == 0)
		r = qmp_call(vm, "getfd", json_pack("{s:s}", "fdname", "capsem-load"), fd, NULL,
			     err, sizeof(err));
	if (r == 0)
		r = qmp_call(vm, "migrate-incoming", json_pack("{s:s}", "uri", "fd:capsem-load"),
			     -1, NULL, err, sizeof(err));
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + SAVE_MAX_MS;
	while (r == 0) { /* QEMU runs the guest itself once the state is in */
		json_t *st = NULL;
		r = qmp_call(vm, "query-status", NULL, -1, &st, err, sizeof(err));
		const char *s = r == 0 ? json_string_value(json_object_get(st, "status")) : NULL;
		int running = s && streq(s, "running");
		if (s && streq(s, "paused")) {
			/* loaded: the guest was stopped for the save, so it comes back stopped */
			json_decref(st);
			r = qmp_call(vm, "cont", NULL, -1, NULL, err, sizeof(err));
			continue;
		}
		if (s && !running && !streq(s, "inmigrate") && !streq(s, "prelaunch")) {
			snprintf(err, sizeof(err),
				 "QEMU could not load the saved state (status %s)", s);
			r = -EIO;
		}
		json_decref(st);
		if (running)
			break;
		if (r == 0 && clock_ms(CLOCK_MONOTONIC) > until) {
			snprintf(err, sizeof(err), "the restore did not end within %d s",
				 SAVE_MAX_MS / 1000);
			r = -ETIMEDOUT;
		}
		if (r == 0)
			(void)poll(NULL, 0, 5);
	}
	if (r < 0) {
		vm_fail(vm, "cannot resume the VM from %s: %s", vm->o.incoming, err);
		return r;
	}
	vm->restore_ms = (double)(clock_ms(CLOCK_MONOTONIC) - t0);
	/* the guest runs: its disk moves on, so that state can never be loaded again */
	if (unlink(vm->o.incoming) < 0)
		log_warn("cannot remove the used state %s: %s", vm->o.incoming, strerror(errno));
	(void)unlink(SUSPEND_INFO);
	(void)unlink(WS_STATE); /* loaded by vm_ws_start() */
	return 0;
}
