/* registry.h - capsemd's record of each VM: <home>/vms/<id>/vm.json, written atomically, and
 * resolution of the {ref} in API routes (a name, a full id or a unique id prefix). */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "vmspec.h"

#define REGISTRY_ID_LEN 12
#define REGISTRY_FILE "vm.json"

enum vm_state { VM_CREATING, VM_RUNNING, VM_STOPPING, VM_STOPPED, VM_CRASHED, VM_SUSPENDED };

struct vm_record {
	char id[REGISTRY_ID_LEN + 1];
	struct vm_spec spec; /* spec.name NULL: ephemeral */
	int persistent;
	enum vm_state state;
	char created[32];
	char started[32]; /* "" until first ready */
	double boot_ms;
	char accel[8]; /* "kvm" or "tcg" once booted, "" before */
	/* what serves the workspace, as capsem-vm chose at the last boot: "virtiofs", "9p" or
	 * "serial"; "" before */
	char ws_transport[12];
	int pid;       /* capsem-vm's pid, 0 when none */
	unsigned boot; /* boots so far (capsem-vm starts); session "<id>-<boot>" (docs/LEDGER.md) */
	char *vmdir;
	char *error; /* why it crashed or failed; NULL otherwise */
};

const char *registry_state_name(enum vm_state s);
int registry_state_from_name(const char *s, enum vm_state *ret);
int registry_id_valid(const char *id);
/* "virtiofs", "9p" or "serial" (a workspace transport capsem-vm reports). */
int registry_ws_transport_valid(const char *s);
/* A fresh random id (12 lowercase hex digits). 0 or -errno. */
int registry_new_id(char ret[REGISTRY_ID_LEN + 1]);
/* Current UTC time as "YYYY-MM-DDTHH:MM:SSZ". */
void registry_now(char ret[32]);

/* The VM object of docs/API.md (a new reference). */
json_t *registry_record_to_json(const struct vm_record *r);
/* Parse a vm.json (a file on disk: validated like any input). 0, -EBADMSG, -ENOMEM. */
int registry_record_from_json(const json_t *j, struct vm_record *ret);
void registry_record_done(struct vm_record *r);

/* Write <r->vmdir>/vm.json atomically. 0 or -errno. */
int registry_save(const struct vm_record *r);
/* Load <vms_dir>/<id>/vm.json. 0, -ENOENT, -EBADMSG or -errno. */
int registry_load(const char *vms_dir, const char *id, struct vm_record *ret);

/* Resolve ref against n VMs given by their ids and names (names[i] may be NULL). A name match
 * wins, then an exact id, then a unique id prefix of at least 3 hex digits. Returns the index,
 * -ENOENT when nothing matches, or -EADDRNOTAVAIL (ambiguous) with *ret_candidates (owned,
 * may be NULL) listing the matching ids separated by ", ". Pure. */
int registry_resolve(const char *const *ids, const char *const *names, size_t n, const char *ref,
		     char **ret_candidates);
