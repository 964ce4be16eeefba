/* vmcontrol.c - capsem-vm's side toward whoever runs it: its parent's socketpair (--ipc-fd)
 * and the --control socket that the daemon (any number of clients) connects to.
 *
 * Parent protocol: newline-delimited JSON on --ipc-fd (or stdout without it). Events out:
 * {"event":"ready",...}, {"event":"error","message":...}, {"event":"stopped","reason":...}.
 * Commands in: {"cmd":"stop"}, {"cmd":"ledger","event":{...}}; EOF on the fd also means stop.
 *
 * Control socket (--control PATH, the daemon's view; docs/API.md): a Unix socket (0600) any
 * number of clients (up to CONTROL_MAX_CLIENTS at once) connect to. Each first gets the current
 * state as one line ({"event":"booting"}, the ready event, or the error event while stopping
 * after a failure), then every later event; each may send command lines (CONTROL_LINE_MAX bytes
 * at most per line; a client that sends more, or bytes that are not JSON, is dropped). A
 * client's EOF never stops the VM: the daemon may restart and reconnect. Events are written
 * without blocking: a client whose socket buffer is full is not reading and is dropped.
 *
 * Ledger notices: after each commit of the session ledger (--ledger) the control clients get
 * {"event":"ledger","last_id":N}, the highest committed event id: at once after a quiet spell,
 * then at most one every LEDGER_EVENT_MS (the daemon wakes its long-polls on it). The parent
 * does not get them; a new client does not get the last one replayed.
 *
 * Trust boundary: the parent and the control clients are the host user's own processes (the
 * socket is 0600, the daemon checks peer credentials on its side); their lines are still parsed
 * strictly and capped. Thread: the libuv loop.
 */
#include "capsem-vm.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdutil.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "unixlisten.h"

/* ---- events to the parent and the control clients ---- */

/* Write a whole line to a control client without blocking: events are few and small, so a
 * client whose socket buffer is full is not reading and is dropped. */
static void control_send(struct vm *vm, struct watch **wp, const char *line, size_t n)
{
	while (n > 0) {
		ssize_t k = send((*wp)->fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			log_debug("control client not reading or gone: dropping it");
			watch_close(wp);
			return;
		}
		line += k;
		n -= (size_t)k;
	}
}

void vm_emit(struct vm *vm, json_t *ev)
{
	const char *name = json_string_value(json_object_get(ev, "event"));
	int is_error = name && streq(name, "error");
	int keep = is_error || (name && streq(name, "ready")); /* name dies with ev */
	char *s = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	if (!s)
		return;
	/* a copy with the newline, NUL-terminated so that it can be replayed to new clients */
	size_t n = strlen(s);
	char *line = malloc(n + 2);
	if (!line) {
		free(s);
		return;
	}
	memcpy(line, s, n);
	line[n] = '\n';
	line[n + 1] = 0;
	free(s);
	int fd = vm->o.ipc_fd >= 0 ? vm->o.ipc_fd : STDOUT_FILENO;
	(void)fd_write_all(fd, line, n + 1);
	for (size_t i = 0; i < ELEMENTSOF(vm->w_control); i++)
		if (vm->w_control[i])
			control_send(vm, &vm->w_control[i], line, n + 1);
	/* the first error wins over ready: a new client must learn the VM failed */
	if (keep && !vm->state_is_error) {
		vm->state_is_error = is_error;
		free(vm->state_line);
		vm->state_line = line;
	} else {
		free(line);
	}
}

/* ---- ledger commit notices (control clients only) ---- */

static void ledger_event_send(struct vm *vm, int64_t last_id)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "{\"event\":\"ledger\",\"last_id\":%lld}\n",
			 (long long)last_id);
	vm->ledger_sent = last_id;
	for (size_t i = 0; i < ELEMENTSOF(vm->w_control); i++)
		if (vm->w_control[i])
			control_send(vm, &vm->w_control[i], line, (size_t)n);
}

static void on_ledger_timer(uv_timer_t *t);

/* Send what the writer committed since the last event, unless one went out less than
 * LEDGER_EVENT_MS ago (then the timer sends it). */
static void ledger_event_maybe(struct vm *vm)
{
	int64_t last = atomic_load(&vm->ledger_committed);
	if (last <= vm->ledger_sent || uv_is_active((uv_handle_t *)&vm->ledger_timer))
		return;
	ledger_event_send(vm, last);
	uv_timer_start(&vm->ledger_timer, on_ledger_timer, LEDGER_EVENT_MS, 0);
}

static void on_ledger_timer(uv_timer_t *t)
{
	ledger_event_maybe(t->data);
}

static void on_ledger_async(uv_async_t *a)
{
	ledger_event_maybe(a->data);
}

/* The ledger's writer thread, after a commit. */
static void on_ledger_commit(void *userdata, int64_t last_id)
{
	struct vm *vm = userdata;
	atomic_store(&vm->ledger_committed, last_id);
	uv_async_send(&vm->ledger_async);
}

int vm_ledger_events_start(struct vm *vm)
{
	int r = uv_async_init(vm->loop, &vm->ledger_async, on_ledger_async);
	if (r < 0)
		return r;
	uv_timer_init(vm->loop, &vm->ledger_timer);
	vm->ledger_async.data = vm->ledger_timer.data = vm;
	vm->ledger_notify = 1;
	ledger_on_commit(vm->ledger, on_ledger_commit, vm);
	return 0;
}

void vm_ledger_events_stop(struct vm *vm)
{
	if (!vm->ledger_notify)
		return;
	vm->ledger_notify = 0;
	int64_t last = atomic_load(&vm->ledger_committed);
	if (last > vm->ledger_sent)
		ledger_event_send(vm, last);
	uv_timer_stop(&vm->ledger_timer);
	uv_close((uv_handle_t *)&vm->ledger_timer, NULL);
	uv_close((uv_handle_t *)&vm->ledger_async, NULL);
}

/* ---- commands (parent fd and control socket) ---- */

/* One command line from the parent or a control client: {"cmd":"stop"}, {"cmd":"suspend"} or
 * {"cmd":"ledger","event":{...}} (an event for the session ledger, docs/LEDGER.md). Returns 1
 * for stop (the caller stops the VM: it may have to forget its client first), 0 otherwise. */
static int vm_command(struct vm *vm, const json_t *cmd, const char *from)
{
	const char *c = json_string_value(json_object_get(cmd, "cmd"));
	if (c && streq(c, "stop"))
		return 1;
	if (c && streq(c, "suspend")) {
		vm_suspend(vm);
		return 0;
	}
	if (c && streq(c, "ledger")) {
		int k = vm->ledger ? ledger_record_json(vm->ledger, json_object_get(cmd, "event"))
				   : 0;
		if (k < 0)
			log_warn("the ledger refused an event from the %s: %s", from, strerror(-k));
		return 0;
	}
	log_warn("ignoring unknown command from the %s", from);
	return 0;
}

void vm_on_ipc(struct watch *w, int events)
{
	struct vm *vm = w->vm;
	int r;
	while ((r = watch_fill(w)) > 0) {
		const uint8_t *nl;
		while ((nl = memchr(buf_head(&w->in), '\n', buf_len(&w->in)))) {
			size_t n = (size_t)(nl - buf_head(&w->in));
			json_error_t err;
			json_t *cmd = json_loadb((const char *)buf_head(&w->in), n, 0, &err);
			int stop = json_is_object(cmd) && vm_command(vm, cmd, "parent");
			if (!json_is_object(cmd))
				log_warn("ignoring a parent command that is not a JSON object");
			json_decref(cmd);
			buf_consume(&w->in, n + 1);
			if (stop)
				vm_stop(vm, "requested");
		}
	}
	if (r == -EAGAIN)
		return;
	if (r == -ENOBUFS)
		log_warn("parent command too long");
	watch_close(&vm->w_ipc);
	vm_stop(vm, "parent closed");
}

/* ---- control socket clients (--control) ---- */

static struct watch **control_slot(struct vm *vm, struct watch *w)
{
	for (size_t i = 0; i < ELEMENTSOF(vm->w_control); i++)
		if (vm->w_control[i] == w)
			return &vm->w_control[i];
	return NULL;
}

static void on_control(struct watch *w, int events)
{
	struct vm *vm = w->vm;
	struct watch **wp = control_slot(vm, w);
	int r;
	if (!wp)
		return;
	while ((r = watch_fill(w)) > 0) {
		const uint8_t *nl;
		while ((nl = memchr(buf_head(&w->in), '\n', buf_len(&w->in)))) {
			size_t n = (size_t)(nl - buf_head(&w->in));
			json_error_t err;
			json_t *cmd = json_loadb((const char *)buf_head(&w->in), n, 0, &err);
			if (!json_is_object(cmd)) {
				json_decref(cmd);
				log_warn("control client sent a line that is not a JSON object: "
					 "dropping it");
				watch_close(wp);
				return;
			}
			int stop = vm_command(vm, cmd, "control client");
			json_decref(cmd);
			buf_consume(&w->in, n + 1);
			if (stop) {
				vm_stop(vm, "requested");
				if (!*wp) /* the VM finished at once and closed every client */
					return;
			}
		}
	}
	if (r == -EAGAIN)
		return;
	if (r == -ENOBUFS)
		log_warn("control client sent a line over %u bytes: dropping it", CONTROL_LINE_MAX);
	/* EOF or error: forget the client; the VM keeps running */
	watch_close(wp);
}

static void on_control_listen(struct unix_listener *l, int fd)
{
	struct vm *vm = l->userdata;
	static const char booting[] = "{\"event\":\"booting\"}\n";
	struct watch **wp = control_slot(vm, NULL);
	if (!wp || vm->state == VM_DONE) {
		log_warn("too many control clients: refusing one");
		safe_close(fd);
		return;
	}
	*wp = watch_new(vm, fd, UV_READABLE, CONTROL_LINE_MAX, on_control);
	if (!*wp)
		return;
	if (vm->state_line)
		control_send(vm, wp, vm->state_line, strlen(vm->state_line));
	else
		control_send(vm, wp, booting, sizeof(booting) - 1);
}

/* Listen on --control: a relative name is relative to the VM directory (our cwd); an absolute
 * one inside the VM directory is shortened to its base name so that sun_path fits. */
int vm_control_open(struct vm *vm)
{
	const char *p = vm->o.control;
	const char *slash = strrchr(p, '/');
	if (p[0] == '/' && slash[1]) {
		_cleanup_free_ char *dir = strndup(p, (size_t)(slash - p));
		_cleanup_free_ char *real = dir ? realpath(*dir ? dir : "/", NULL) : NULL;
		if (real && streq(real, vm->vmdir_abs))
			p = slash + 1;
	}
	vm->control_path = strdup(p);
	if (!vm->control_path)
		return log_oom();
	int r;
	vm->control_l.userdata = vm;
	if (vm->o.control_fd >= 0) {
		/* socket activation: our parent bound and listens on it (fd --control-fd) */
		int fd = vm->o.control_fd;
		vm->o.control_fd = -1;
		r = unix_listener_adopt(&vm->control_l, vm->loop, fd, 1, on_control_listen);
	} else {
		r = unix_listener_open(&vm->control_l, vm->loop, vm->control_path, 16, 1,
				       on_control_listen);
	}
	if (r < 0) {
		free(vm->control_path);
		vm->control_path = NULL;
		return log_error_errno(r, "cannot listen on --control %s", vm->o.control);
	}
	return 0;
}

void vm_control_close(struct vm *vm)
{
	for (size_t i = 0; i < ELEMENTSOF(vm->w_control); i++)
		watch_close(&vm->w_control[i]);
	unix_listener_close(&vm->control_l, NULL);
	if (vm->control_path) {
		unlink(vm->control_path);
		free(vm->control_path);
		vm->control_path = NULL;
	}
}

int vm_pid_file_write(struct vm *vm)
{
	char s[32];
	int n = snprintf(s, sizeof(s), "%d\n", (int)getpid());
	int r = write_file_atomic(PID_FILE, s, (size_t)n, 0644);
	if (r < 0)
		return log_error_errno(r, "cannot write %s/%s", vm->o.vmdir, PID_FILE);
	vm->pid_file = 1;
	return 0;
}
