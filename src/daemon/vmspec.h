/* vmspec.h - what an API caller asks for, validated: the body of POST /vms (a VM's shape) and
 * of POST /vms/{ref}/exec (one command). Pure functions on jansson values; no I/O except the
 * stat() that checks a mount's host directory exists. */
#pragma once

#include "vmlimits.h"

#include <jansson.h>
#include <stdint.h>

#include "buf.h"

#define VMSPEC_NAME_MAX 63
#define VMSPEC_MAX_ENV 256
#define VMSPEC_MAX_MOUNTS VM_MOUNTS_MAX
#define VMSPEC_DEFAULT_CPUS 1
#define VMSPEC_DEFAULT_MEMORY_MIB 512
#define VMSPEC_DEFAULT_DISK_MIB 4096

struct vm_mount {
	char *host;
	char *guest;
	int ro;
};

struct vm_spec {
	char *name; /* NULL: ephemeral */
	unsigned cpus;
	uint64_t memory_mib;
	uint64_t disk_mib;
	char *image;
	char **env; /* NULL-terminated "KEY=VALUE" */
	size_t n_mounts;
	struct vm_mount *mounts;
	char *workspace; /* the user's folder shared as the workspace, or NULL: the VM's own
			  * <vmdir>/workspace (VMSPEC_WORKSPACE_DIR) */
	/* "suspendable" (the default for a named VM without mounts): the serial channel, the
	 * workspace over capsem-vm's own 9p server on a virtio-serial port, no --mount (QEMU's
	 * 9p): QEMU 7.2 can save it (docs/ARCHITECTURE.md "Suspend and resume") */
	int suspendable;
	/* "workspace_audit": false: the workspace is not the agent's work (a containerd pod's
	 * container roots): no file audit rows in the ledger, no automatic snapshots */
	int no_ws_audit;
};

/* Why a VM cannot be suspended (the API's "suspend_blocker"). */
#define VMSPEC_SUSPEND_SHARED                                                                    \
	"it was created with --no-suspendable or with --mount shares: its shares are virtio-fs " \
	"or QEMU's 9p, and QEMU 7.2 cannot save a VM with such a share mounted"
#define VMSPEC_SUSPEND_EPHEMERAL "an ephemeral VM is deleted when it stops: persist it first"

#define VMSPEC_WORKSPACE_DIR "workspace"

/* [a-z0-9][a-z0-9_.-]{0,62} */
int vmspec_name_valid(const char *name);
/* KEY=VALUE with KEY = [A-Za-z_][A-Za-z0-9_]*, no NUL, ≤ 128 KiB. */
int vmspec_env_valid(const char *s, size_t len);
/* An absolute guest path of [A-Za-z0-9_./+@-], no "." or ".." component, ≤ 4095 bytes. */
int vmspec_guest_path_valid(const char *s, size_t len);

/* Parse the body of POST /vms. 0 with *ret filled (release with vmspec_done), or -EINVAL with
 * *ret_error (owned) saying which field is wrong and why. *ret untouched on failure. */
int vmspec_from_json(const json_t *body, struct vm_spec *ret, char **ret_error);
void vmspec_done(struct vm_spec *s);
/* Deep copy (0 or -ENOMEM). */
int vmspec_copy(const struct vm_spec *s, struct vm_spec *ret);
/* The "env" and "mounts" fields as JSON (new references). */
json_t *vmspec_env_json(const struct vm_spec *s);
json_t *vmspec_mounts_json(const struct vm_spec *s);

/* Build the EXEC frame for the body of POST /vms/{ref}/exec; vm_env (may be NULL) comes first,
 * the request's env overrides it. 0 or -EINVAL with *ret_error. */
int vmspec_exec_frame(const json_t *body, char *const *vm_env, struct buf *out, char **ret_error);
