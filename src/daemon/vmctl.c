/* vmctl.c - capsemd's VMs: their records, the list, waiters, and the operations the API calls.
 *
 * Life of a VM here: create (record + directory) -> boot (vmsup.c: a worker thread verifies the
 * image and, for named VMs, creates and formats the disk; capsem-vm is spawned in its own
 * session; its control socket reports booting / ready / error / stopped; a pidfd and the
 * socket's EOF end the run) -> stop or delete. This file keeps the records, the list of VMs,
 * the waiters and the operations the API calls; vmsup.c the supervisor behind a running VM and
 * the re-adoption of live supervisors after a daemon restart (vmctl_recover).
 *
 * Trust: vm.json files are validated (registry.c); refs and specs come from API callers
 * (checked by vmspec.c before they get here). Thread: the loop.
 */
#include "vmctl-internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "fdutil.h"
#include "ledger.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "parse.h"
#include "query.h"
#include "strv.h"
#include "unixsock.h"

/* ---- small helpers ---- */

char *vmctl_path_join(const char *a, const char *b)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

void vmctl_set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

void vmctl_handle_free_cb(uv_handle_t *h)
{
	free(h);
}

void vmctl_changed(struct vmctl *c)
{
	c->rev++;
	if (c->on_change)
		c->on_change(c->on_change_data);
}

uint64_t vmctl_rev(struct vmctl *c)
{
	return c->rev;
}

void vmctl_on_change(struct vmctl *c, void (*cb)(void *userdata), void *userdata)
{
	c->on_change = cb;
	c->on_change_data = userdata;
}

void vmctl_vm_save(struct vm *vm)
{
	int r = registry_save(&vm->rec);
	if (r < 0)
		log_warn_errno(r, "cannot write the registry entry of VM %s", vm->rec.id);
	vmctl_changed(vm->ctl);
}

void vmctl_remove_sockets(const char *vmdir)
{
	static const char *const names[] = { CTL_SOCKET,	 "vsock",	"vsock_5000",
					     "vhost-vsock.sock", "serial.sock", "qmp.sock" };
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		_cleanup_free_ char *p = vmctl_path_join(vmdir, names[i]);
		if (p)
			unlink(p);
	}
}

/* ---- list ---- */

static void vm_link(struct vmctl *c, struct vm *vm)
{
	vm->ctl = c;
	list_add_head(&c->vms, &vm->link);
	c->n_vms++;
	vmctl_changed(c);
}

void vmctl_vm_free(struct vm *vm)
{
	struct vmctl *c = vm->ctl;
	list_del(&vm->link);
	c->n_vms--;
	vmctl_changed(c);
	if (vm->pw)
		vm->pw->vm = NULL; /* it still reaps the process */
	if (vm->cc) {
		vm->cc->vm = NULL;
		uv_close((uv_handle_t *)&vm->cc->h, vmctl_handle_free_cb);
	}
	if (vm->timer)
		uv_close((uv_handle_t *)vm->timer, vmctl_handle_free_cb);
	if (vm->job)
		vm->job->vm = NULL;
	while (vm->waiters) {
		struct waiter *w = vm->waiters;
		vm->waiters = w->next;
		free(w);
	}
	registry_record_done(&vm->rec);
	free(vm->vsock);
	free(vm->fail);
	free(vm->serial_tail);
	free(vm->suspend_error);
	free(vm);
}

struct vm *vmctl_vm_alloc(struct vmctl *c, struct vm_record *rec)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return NULL;
	vm->timer = calloc(1, sizeof(*vm->timer));
	vm->vsock = vmctl_path_join(rec->vmdir, "vsock");
	if (!vm->timer || !vm->vsock) {
		free(vm->timer);
		free(vm->vsock);
		free(vm);
		return NULL;
	}
	uv_timer_init(c->loop, vm->timer);
	vm->timer->data = vm;
	vm->rec = *rec;
	*rec = (struct vm_record){ 0 };
	vm->exit_status = -1;
	vm->proc_gone = vm->ctl_closed = 1;
	vm_link(c, vm);
	return vm;
}

/* ---- waiters ---- */

static int add_waiter(struct vm *vm, enum vm_wait what, vm_waiter_cb cb, void *userdata)
{
	if (!cb)
		return 0;
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct waiter){ .what = what, .cb = cb, .userdata = userdata };
	struct waiter **p = &vm->waiters;
	while (*p)
		p = &(*p)->next;
	*p = w;
	return 0;
}

/* Run (and drop) every waiter for `what`. */
void vmctl_notify(struct vm *vm, enum vm_wait what, int ok)
{
	struct waiter *todo = NULL, **tail = &todo, **p = &vm->waiters;
	while (*p) {
		struct waiter *w = *p;
		if (w->what == what) {
			*p = w->next;
			w->next = NULL;
			*tail = w;
			tail = &w->next;
		} else {
			p = &w->next;
		}
	}
	while (todo) {
		struct waiter *w = todo;
		todo = w->next;
		w->cb(vm, ok, w->userdata);
		free(w);
	}
}

/* ---- public ---- */

int vmctl_new(uv_loop_t *loop, const struct vmctl_config *cfg, struct vmctl **ret)
{
	struct vmctl *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	list_init(&c->vms);
	c->home = strdup(cfg->home);
	c->vms_dir = vmctl_path_join(cfg->home, "vms");
	c->images_dir = strdup(cfg->images_dir);
	c->vm_bin = strdup(cfg->vm_bin);
	c->sessions_dir = vmctl_path_join(cfg->home, "sessions");
	if (!c->home || !c->vms_dir || !c->images_dir || !c->vm_bin || !c->sessions_dir) {
		vmctl_free(c);
		return -ENOMEM;
	}
	int r = mkdir_p(c->vms_dir, 0700);
	if (r == 0)
		r = mkdir_p(c->sessions_dir, 0700);
	if (r < 0) {
		vmctl_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

void vmctl_free(struct vmctl *c)
{
	if (!c)
		return;
	while (!list_empty(&c->vms))
		vmctl_vm_free(list_entry(c->vms.next, struct vm, link));
	free(c->home);
	free(c->vms_dir);
	free(c->images_dir);
	free(c->vm_bin);
	free(c->sessions_dir);
	free(c);
}

const char *vmctl_sessions_dir(struct vmctl *c)
{
	return c->sessions_dir;
}

const char *vmctl_home(struct vmctl *c)
{
	return c->home;
}

void vmctl_on_ledger(struct vmctl *c, vmctl_ledger_cb cb, void *userdata)
{
	c->on_ledger = cb;
	c->on_ledger_data = userdata;
}

/* The resident memory of pid in KiB, from /proc/PID/status; when parent > 0, only if pid is
 * still parent's child (a pid that was reused reports nothing). 0 or -errno. */
static int proc_rss_kib(pid_t pid, pid_t parent, uint64_t *ret)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	size_t n;
	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	int r = read_file_small(path, 16384, &text, &n);
	if (r < 0)
		return r;
	uint64_t v = 0;
	int have = 0;
	for (char *line = text, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (strncmp(line, "PPid:", 5) == 0 && parent > 0) {
			uint64_t pp;
			if (parse_u64(line + 5 + strspn(line + 5, " \t"), &pp) < 0 ||
			    pp != (uint64_t)parent)
				return -ESRCH;
		} else if (strncmp(line, "VmRSS:", 6) == 0) {
			char *num = line + 6 + strspn(line + 6, " \t");
			char *sp = strchr(num, ' ');
			if (sp)
				*sp = 0;
			have = parse_u64(num, &v) == 0;
		}
	}
	if (!have)
		return -ENODATA; /* a zombie or a kernel thread */
	*ret = v;
	return 0;
}

json_t *vm_to_json(const struct vm *vm)
{
	json_t *j = registry_record_to_json(&vm->rec);
	uint64_t q = 0, s = 0;
	json_t *mem = json_null();
	if (j && vm->rec.pid > 0 && vm->rec.state != VM_STOPPED && vm->rec.state != VM_CRASHED &&
	    proc_rss_kib(vm->rec.pid, 0, &s) == 0) {
		int have_q = proc_rss_kib(vm->qemu_pid, vm->rec.pid, &q) == 0;
		mem = json_pack("{s:I, s:o, s:I}", "supervisor_rss_mib", (json_int_t)(s / 1024),
				"qemu_rss_mib",
				have_q ? json_integer((json_int_t)(q / 1024)) : json_null(),
				"rss_mib", (json_int_t)((s + q) / 1024));
	}
	if (j && (!mem || json_object_set_new(j, "host_memory", mem) < 0 ||
		  json_object_set_new(j, "suspending", json_boolean(vm->suspending)) < 0)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

int vm_session_path(const struct vm *vm, char **ret)
{
	if (vm->rec.boot == 0)
		return -ENOENT;
	return ledger_session_path(vm->ctl->sessions_dir, vm->rec.id, vm->rec.boot, ret);
}

struct vm *vmctl_first(struct vmctl *c)
{
	return list_empty(&c->vms) ? NULL : list_entry(c->vms.next, struct vm, link);
}

struct vm *vmctl_next(struct vm *vm)
{
	return vm->link.next == &vm->ctl->vms ? NULL : list_entry(vm->link.next, struct vm, link);
}

const char *vmctl_images_dir(struct vmctl *c)
{
	return c->images_dir;
}

size_t vmctl_count(struct vmctl *c)
{
	return c->n_vms;
}

const struct vm_record *vm_record(const struct vm *vm)
{
	return &vm->rec;
}

const char *vm_vsock_path(const struct vm *vm)
{
	return vm->vsock;
}

const char *vm_serial_tail(const struct vm *vm)
{
	return vm->serial_tail;
}

int vm_has_disk(const struct vm *vm)
{
	_cleanup_free_ char *disk = NULL;
	if (vm->rec.persistent || vm->has_disk)
		return 1;
	/* (an ephemeral VM from a fork image, re-adopted after a daemon restart) */
	disk = vmctl_path_join(vm->rec.vmdir, "disk.img");
	return disk && access(disk, F_OK) == 0;
}

int vm_busy(const struct vm *vm)
{
	return vm->job || vm->rec.state == VM_CREATING || vm->rec.state == VM_STOPPING;
}

int vmctl_resolve(struct vmctl *c, const char *ref, struct vm **ret, char **ret_candidates)
{
	_cleanup_free_ const char **ids = calloc(c->n_vms + 1, sizeof(char *));
	_cleanup_free_ const char **names = calloc(c->n_vms + 1, sizeof(char *));
	_cleanup_free_ struct vm **vms = calloc(c->n_vms + 1, sizeof(struct vm *));
	if (!ids || !names || !vms)
		return -ENOMEM;
	size_t n = 0;
	for (struct vm *vm = vmctl_first(c); vm; vm = vmctl_next(vm), n++) {
		ids[n] = vm->rec.id;
		names[n] = vm->rec.spec.name;
		vms[n] = vm;
	}
	int k = registry_resolve(ids, names, n, ref, ret_candidates);
	if (k < 0)
		return k;
	*ret = vms[k];
	return 0;
}

int vmctl_name_taken(struct vmctl *c, const char *name)
{
	for (struct vm *vm = vmctl_first(c); vm; vm = vmctl_next(vm))
		if (vm->rec.spec.name && streq(vm->rec.spec.name, name))
			return 1;
	return 0;
}

int vmctl_create(struct vmctl *c, const struct vm_spec *spec, vm_waiter_cb cb, void *userdata,
		 struct vm **ret)
{
	struct vm_record rec = { 0 };
	int r;
	if (spec->name && vmctl_name_taken(c, spec->name))
		return -EEXIST;
	for (int tries = 0;; tries++) {
		struct vm *other;
		r = registry_new_id(rec.id);
		if (r < 0)
			return r;
		if (vmctl_resolve(c, rec.id, &other, NULL) == -ENOENT)
			break;
		if (tries > 16)
			return -EEXIST;
	}
	r = vmspec_copy(spec, &rec.spec);
	if (r < 0)
		return r;
	rec.persistent = spec->name != NULL;
	rec.state = VM_CREATING;
	registry_now(rec.created);
	rec.vmdir = vmctl_path_join(c->vms_dir, rec.id);
	if (!rec.vmdir) {
		registry_record_done(&rec);
		return -ENOMEM;
	}
	if (mkdir(rec.vmdir, 0700) < 0) {
		r = negative_errno();
		registry_record_done(&rec);
		return r;
	}
	struct vm *vm = vmctl_vm_alloc(c, &rec);
	if (!vm) {
		rm_rf(rec.vmdir);
		registry_record_done(&rec);
		return -ENOMEM;
	}
	vm->never_ready = 1;
	r = add_waiter(vm, VM_WAIT_READY, cb, userdata);
	if (r == 0)
		r = vmsup_boot(vm);
	if (r < 0) {
		rm_rf(vm->rec.vmdir);
		vmctl_vm_free(vm);
		return r;
	}
	log_info("VM %s created%s%s", vm->rec.id, vm->rec.spec.name ? " as " : "",
		 strempty(vm->rec.spec.name));
	*ret = vm;
	return 0;
}

int vm_start(struct vm *vm, vm_waiter_cb cb, void *userdata)
{
	if (vm->rec.state != VM_STOPPED && vm->rec.state != VM_CRASHED &&
	    vm->rec.state != VM_SUSPENDED)
		return -EALREADY;
	if (vm->job || vm->pw || vm->cc)
		return -EBUSY;
	int r = add_waiter(vm, VM_WAIT_READY, cb, userdata);
	if (r < 0)
		return r;
	vm->resuming = vm->rec.state == VM_SUSPENDED;
	r = vmsup_boot(vm);
	if (r < 0)
		vmctl_notify(vm, VM_WAIT_READY, 0);
	return 0;
}

int vm_wait(struct vm *vm, enum vm_wait what, vm_waiter_cb cb, void *userdata)
{
	return add_waiter(vm, what, cb, userdata);
}

void vmctl_unlink_in(const struct vm *vm, const char *const *names)
{
	for (; *names; names++) {
		_cleanup_free_ char *p = vmctl_path_join(vm->rec.vmdir, *names);
		if (p && unlink(p) < 0 && errno != ENOENT)
			log_warn_errno(negative_errno(), "cannot remove %s", p);
	}
}

/* A suspended VM's saved state, thrown away: it is stopped. */
static void discard_state(struct vm *vm)
{
	const char *files[] = { VM_SUSPEND_STATE, VM_SUSPEND_INFO, VM_WS_STATE, VM_RAM_FILE, NULL };
	vmctl_unlink_in(vm, files);
	vm->rec.state = VM_STOPPED;
	vmctl_set_str(&vm->rec.error, NULL);
	vmctl_vm_save(vm);
	log_info("VM %s: its saved state was discarded: stopped", vm->rec.id);
}

int vm_suspend(struct vm *vm, vm_waiter_cb cb, void *userdata)
{
	if (vm->rec.state != VM_RUNNING)
		return -ENOTCONN;
	if (!vm->rec.spec.suspendable || !vm->rec.persistent)
		return -EPERM;
	if (vm->suspending || vm->stop_requested)
		return -EALREADY;
	int r = add_waiter(vm, VM_WAIT_SUSPENDED, cb, userdata);
	if (r < 0)
		return r;
	vmctl_set_str(&vm->suspend_error, NULL);
	r = vmsup_send_suspend(vm);
	if (r < 0) {
		vmctl_set_str(&vm->suspend_error, "the supervisor is not reachable");
		vmctl_notify(vm, VM_WAIT_SUSPENDED, 0);
		return 0;
	}
	vm->suspending = 1;
	return 0;
}

const char *vm_suspend_error(const struct vm *vm)
{
	return vm->suspend_error;
}

int vm_stop(struct vm *vm, vm_waiter_cb cb, void *userdata)
{
	if (vm->rec.state == VM_SUSPENDED && !vm->job && !vm->pw && !vm->cc) {
		discard_state(vm);
		cb(vm, 1, userdata);
		return 0;
	}
	if (vm->rec.state != VM_CREATING && vm->rec.state != VM_RUNNING &&
	    vm->rec.state != VM_STOPPING)
		return -ENOTCONN;
	int r = add_waiter(vm, VM_WAIT_STOPPED, cb, userdata);
	if (r < 0)
		return r;
	if (vm->stop_requested)
		return 0;
	vm->stop_requested = 1;
	vm->rec.state = VM_STOPPING;
	if (vm->rec.persistent)
		vmctl_vm_save(vm);
	if (vm->job)
		return 0; /* prep_done sees stop_requested */
	if (vmsup_send_stop(vm) < 0)
		vmsup_signal(vm, SIGTERM);
	uv_timer_stop(vm->timer);
	uv_timer_start(vm->timer, vmsup_on_stop_timeout, STOP_KILL_MS, 0);
	return 0;
}

void vm_delete_when_stopped(struct vm *vm)
{
	vm->delete_on_stop = 1;
}

int vm_delete(struct vm *vm)
{
	if (vm->rec.state != VM_STOPPED && vm->rec.state != VM_CRASHED &&
	    vm->rec.state != VM_SUSPENDED)
		return -EBUSY;
	if (vm->job || vm->pw || vm->cc)
		return -EBUSY;
	int r = rm_rf(vm->rec.vmdir);
	if (r < 0)
		return r;
	log_info("VM %s deleted", vm->rec.id);
	vmctl_notify(vm, VM_WAIT_STOPPED, 1);
	vmctl_vm_free(vm);
	return 0;
}

int vm_persist(struct vm *vm, const char *name)
{
	char *n = strdup(name);
	if (!n)
		return -ENOMEM;
	free(vm->rec.spec.name);
	vm->rec.spec.name = n;
	vm->rec.persistent = 1;
	vmctl_vm_save(vm);
	return 0;
}
