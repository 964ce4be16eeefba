/* vmctl.h - the VMs capsemd owns: their registry records and their capsem-vm supervisors
 * (spawn, control socket, death detection, stop, re-adoption after a daemon restart).
 *
 * All calls run on the daemon's loop. Operations that take time (boot, stop) report through
 * waiters: a callback run once when the VM reaches the awaited state. A waiter's callback may
 * see the VM for the last time (an ephemeral VM is freed right after its "stopped" waiters ran).
 */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "registry.h"

struct vmctl;
struct vm;

struct vmctl_config {
	const char *home;	/* $CAPSEM_HOME */
	const char *images_dir; /* $CAPSEM_IMAGES_DIR or <home>/images */
	const char *vm_bin;	/* capsem-vm */
};

enum vm_wait {
	VM_WAIT_READY,	   /* running (ok = 1), or the boot failed / the VM went away (ok = 0) */
	VM_WAIT_STOPPED,   /* no longer running: stopped, crashed or deleted (ok = 1) */
	VM_WAIT_SUSPENDED, /* saved (ok = 1), or the suspend failed (ok = 0: vm_suspend_error) */
};

/* ok: see enum vm_wait. The VM's record tells the rest (state, error). */
typedef void (*vm_waiter_cb)(struct vm *vm, int ok, void *userdata);

int vmctl_new(uv_loop_t *loop, const struct vmctl_config *cfg, struct vmctl **ret);
/* Load every registry entry, re-adopt live supervisors, mark dead ones crashed (named) or delete
 * them (ephemeral), remove stale sockets. */
int vmctl_recover(struct vmctl *c);
void vmctl_free(struct vmctl *c);

/* Iteration: newest first. */
struct vm *vmctl_first(struct vmctl *c);
struct vm *vmctl_next(struct vm *vm);
size_t vmctl_count(struct vmctl *c);
const struct vm_record *vm_record(const struct vm *vm);
/* <vmdir>/vsock */
const char *vm_vsock_path(const struct vm *vm);
/* The serial tail captured with a boot failure, or NULL. */
const char *vm_serial_tail(const struct vm *vm);
/* Whether a start/stop is already under way. */
int vm_busy(const struct vm *vm);
/* The VM boots with <vmdir>/disk.img: it is named, or was made from a fork image. */
int vm_has_disk(const struct vm *vm);

/* The images directory (vmctl_config.images_dir). */
const char *vmctl_images_dir(struct vmctl *c);

/* Resolve a {ref}. 0 with *ret, -ENOENT, or -EADDRNOTAVAIL with *ret_candidates (owned). */
int vmctl_resolve(struct vmctl *c, const char *ref, struct vm **ret, char **ret_candidates);
/* Is the name used by a VM? */
int vmctl_name_taken(struct vmctl *c, const char *name);

/* Create a VM from spec (copied) and boot it; cb(VM_WAIT_READY) when it is up or failed. 0 with
 * *ret, or -errno (-EEXIST: name taken). */
int vmctl_create(struct vmctl *c, const struct vm_spec *spec, vm_waiter_cb cb, void *userdata,
		 struct vm **ret);
/* Boot a stopped/crashed VM, or resume a suspended one. -EALREADY when it is running or
 * busy. */
int vm_start(struct vm *vm, vm_waiter_cb cb, void *userdata);
/* Stop a running VM (cb with VM_WAIT_STOPPED). Ephemeral VMs are deleted when they stop. A
 * suspended VM's saved state is discarded (it is stopped at once). -ENOTCONN when it is not
 * running. */
int vm_stop(struct vm *vm, vm_waiter_cb cb, void *userdata);
/* Save a running VM to its directory and free its CPU and RAM (cb with VM_WAIT_SUSPENDED); the
 * VM is then "suspended" until vm_start (a resume: same session) or vm_stop (the state is
 * discarded). -ENOTCONN when not running, -EPERM when it cannot be saved (the record's
 * "suspend_blocker" says why), -EALREADY while a suspend is under way. */
int vm_suspend(struct vm *vm, vm_waiter_cb cb, void *userdata);
/* Why the last suspend failed, or NULL. */
const char *vm_suspend_error(const struct vm *vm);
/* Wait for a VM to reach a state without acting. */
int vm_wait(struct vm *vm, enum vm_wait what, vm_waiter_cb cb, void *userdata);
/* Delete a stopped/crashed VM: directory and registry entry; vm is freed. -EBUSY if running. */
int vm_delete(struct vm *vm);
/* Make the next settle (stop or crash) delete the VM, as for an ephemeral one. */
void vm_delete_when_stopped(struct vm *vm);
/* Name an ephemeral VM: it becomes persistent (its disk is created at its next boot). */
int vm_persist(struct vm *vm, const char *name);

/* ---- session ledger (docs/LEDGER.md) ---- */

/* <home>/sessions */
const char *vmctl_sessions_dir(struct vmctl *c);
/* $CAPSEM_HOME. */
const char *vmctl_home(struct vmctl *c);
/* A VM's capsem-vm committed rows to its session ledger: session "<id>-<boot>", last_id the
 * highest committed event id (from its "ledger" control events, at most ~10 a second). */
typedef void (*vmctl_ledger_cb)(void *userdata, const char *session, int64_t last_id);
/* Call cb on every such notice (NULL: stop). */
void vmctl_on_ledger(struct vmctl *c, vmctl_ledger_cb cb, void *userdata);
/* The VM as the API shows it: its record (registry_record_to_json) and, while its supervisor
 * runs, "host_memory": {"rss_mib", "qemu_rss_mib", "supervisor_rss_mib"} read from /proc (the
 * host memory the VM costs now: QEMU's guest RAM, device and TCG state, and capsem-vm's proxy,
 * gateway and ledger), else null. NULL on ENOMEM. */
json_t *vm_to_json(const struct vm *vm);

/* The registry's revision: bumped whenever a VM is added, changed (state, name, ...) or
 * removed. cb (one listener; NULL to stop) is called on the loop after each bump. */
uint64_t vmctl_rev(struct vmctl *c);
void vmctl_on_change(struct vmctl *c, void (*cb)(void *userdata), void *userdata);
/* The database of the VM's current (or last) boot, malloc'ed. 0, -ENOENT (never booted). */
int vm_session_path(const struct vm *vm, char **ret);
