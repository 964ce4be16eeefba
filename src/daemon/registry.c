/* registry.c - the VM registry on disk: one vm.json per VM directory, written atomically
 * (temp + fsync + rename), read back at daemon start for recovery; and {ref} resolution.
 *
 * Trust boundary: vm.json files live in the user's own ~/.capsem, but they are read back after
 * crashes and may be truncated or edited: they are validated like API input (the id must match
 * the directory, the spec passes vmspec's checks except the mount-exists test). Runs on the
 * daemon's loop thread (small files; blocking writes are short).
 */
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "fdutil.h"
#include "jsonutil.h"
#include "macro.h"
#include "strv.h"

#define VMJSON_MAX (256u * 1024u)

static const char *const state_names[] = {
	[VM_CREATING] = "creating", [VM_RUNNING] = "running", [VM_STOPPING] = "stopping",
	[VM_STOPPED] = "stopped",   [VM_CRASHED] = "crashed", [VM_SUSPENDED] = "suspended",
};

const char *registry_state_name(enum vm_state s)
{
	return (size_t)s < ELEMENTSOF(state_names) ? state_names[s] : "unknown";
}

int registry_state_from_name(const char *s, enum vm_state *ret)
{
	for (size_t i = 0; i < ELEMENTSOF(state_names); i++)
		if (streq(s, state_names[i])) {
			*ret = (enum vm_state)i;
			return 0;
		}
	return -EBADMSG;
}

int registry_id_valid(const char *id)
{
	if (strlen(id) != REGISTRY_ID_LEN)
		return 0;
	for (const char *c = id; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return 0;
	return 1;
}

int registry_new_id(char ret[REGISTRY_ID_LEN + 1])
{
	uint8_t b[REGISTRY_ID_LEN / 2];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -EIO;
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(ret + 2 * i, 3, "%02x", b[i]);
	return 0;
}

int registry_ws_transport_valid(const char *s)
{
	return streq(s, "virtiofs") || streq(s, "9p") || streq(s, "serial");
}

void registry_now(char ret[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(ret, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *registry_record_to_json(const struct vm_record *r)
{
	const struct vm_spec *s = &r->spec;
	char session[REGISTRY_ID_LEN + 16];
	snprintf(session, sizeof(session), "%s-%u", r->id, r->boot);
	json_t *j = json_pack("{s:s, s:s?, s:b, s:s, s:i, s:I, s:o, s:s, s:o, s:o, s:s, s:s?, s:o, "
			      "s:s?, s:o, s:s, s:s?}",
			      "id", r->id, "name", s->name, "persistent", r->persistent, "state",
			      registry_state_name(r->state), "cpus", (int)s->cpus, "memory_mib",
			      (json_int_t)s->memory_mib, "disk_mib",
			      r->persistent ? json_integer((json_int_t)s->disk_mib) : json_null(),
			      "image", s->image, "env", vmspec_env_json(s), "mounts",
			      vmspec_mounts_json(s), "created", r->created, "started",
			      r->started[0] ? r->started : NULL, "boot_ms",
			      r->started[0] ? json_real(r->boot_ms) : json_null(), "accel",
			      r->accel[0] ? r->accel : NULL, "pid",
			      r->pid > 0 ? json_integer(r->pid) : json_null(), "vmdir", r->vmdir,
			      "error", r->error);
	/* the workspace: the user's folder (shared), or the VM's own directory */
	_cleanup_free_ char *own = NULL;
	if (!s->workspace && asprintf(&own, "%s/" VMSPEC_WORKSPACE_DIR, r->vmdir) < 0)
		own = NULL;
	/* the ledger session of the current (or last) boot */
	if (j &&
	    (json_object_set_new(j, "workspace", json_string(s->workspace ? s->workspace : own)) <
		     0 ||
	     json_object_set_new(j, "workspace_shared", json_boolean(s->workspace != NULL)) < 0 ||
	     json_object_set_new(j, "workspace_transport",
				 r->ws_transport[0] ? json_string(r->ws_transport) : json_null()) <
		     0 ||
	     json_object_set_new(j, "workspace_audit", json_boolean(!s->no_ws_audit)) < 0 ||
	     json_object_set_new(j, "suspendable", json_boolean(s->suspendable)) < 0 ||
	     json_object_set_new(j, "can_suspend", json_boolean(s->suspendable && r->persistent)) <
		     0 ||
	     json_object_set_new(j, "suspend_blocker",
				 s->suspendable && r->persistent ? json_null()
				 : !r->persistent ? json_string(VMSPEC_SUSPEND_EPHEMERAL)
						  : json_string(VMSPEC_SUSPEND_SHARED)) < 0 ||
	     json_object_set_new(j, "boot", json_integer(r->boot)) < 0 ||
	     json_object_set_new(j, "session", r->boot ? json_string(session) : json_null()) < 0)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

void registry_record_done(struct vm_record *r)
{
	vmspec_done(&r->spec);
	free(r->vmdir);
	free(r->error);
	*r = (struct vm_record){ 0 };
}

static int copy_ts(const json_t *v, char ret[32])
{
	if (json_is_null(v) || !v) {
		ret[0] = 0;
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) >= 32)
		return -EBADMSG;
	snprintf(ret, 32, "%s", json_string_value(v));
	return 0;
}

int registry_record_from_json(const json_t *j, struct vm_record *ret)
{
	struct vm_record r = { 0 };
	json_t *v;
	int bad = 0;

	const char *id = json_string_value(json_object_get(j, "id"));
	const char *state = json_string_value(json_object_get(j, "state"));
	const char *vmdir = json_string_value(json_object_get(j, "vmdir"));
	const char *image = json_string_value(json_object_get(j, "image"));
	if (!id || !registry_id_valid(id) || !state || !vmdir || vmdir[0] != '/' || !image ||
	    !vmspec_name_valid(image))
		return -EBADMSG;
	memcpy(r.id, id, REGISTRY_ID_LEN + 1);
	bad |= registry_state_from_name(state, &r.state) < 0;
	r.persistent = json_is_true(json_object_get(j, "persistent"));
	r.spec.suspendable = json_is_true(json_object_get(j, "suspendable"));
	r.spec.no_ws_audit = json_is_false(json_object_get(j, "workspace_audit")); /* absent: on */
	v = json_object_get(j, "name");
	if (json_is_string(v)) {
		bad |= !vmspec_name_valid(json_string_value(v));
		r.spec.name = strdup(json_string_value(v));
		bad |= !r.spec.name;
	} else {
		bad |= !json_is_null(v) && v != NULL;
	}
	json_int_t cpus = json_integer_value(json_object_get(j, "cpus"));
	json_int_t mem = json_integer_value(json_object_get(j, "memory_mib"));
	json_int_t disk = json_integer_value(json_object_get(j, "disk_mib"));
	bad |= cpus < 1 || cpus > 64 || mem < 64 || mem > (1 << 20) || disk < 0 || disk > (1 << 20);
	r.spec.cpus = (unsigned)cpus;
	r.spec.memory_mib = (uint64_t)mem;
	r.spec.disk_mib = disk > 0 ? (uint64_t)disk : VMSPEC_DEFAULT_DISK_MIB;
	r.spec.image = strdup(image);
	r.vmdir = strdup(vmdir);
	bad |= !r.spec.image || !r.vmdir;
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(j, "env"), i, e)
	{
		if (!json_is_string(e) ||
		    !vmspec_env_valid(json_string_value(e), json_string_length(e))) {
			bad = 1;
			break;
		}
		bad |= strv_push(&r.spec.env, json_string_value(e)) < 0;
	}
	json_t *mounts = json_object_get(j, "mounts");
	if (json_array_size(mounts) > 0 && json_array_size(mounts) <= VMSPEC_MAX_MOUNTS) {
		r.spec.mounts = calloc(json_array_size(mounts), sizeof(*r.spec.mounts));
		bad |= !r.spec.mounts;
		json_array_foreach(mounts, i, e)
		{
			if (!r.spec.mounts)
				break;
			const char *h = json_string_value(json_object_get(e, "host"));
			const char *g = json_string_value(json_object_get(e, "guest"));
			if (!h || !g || h[0] != '/' || strpbrk(h, ",:") ||
			    !vmspec_guest_path_valid(g, strlen(g))) {
				bad = 1;
				break;
			}
			struct vm_mount *m = &r.spec.mounts[r.spec.n_mounts++];
			m->host = strdup(h);
			m->guest = strdup(g);
			m->ro = json_is_true(json_object_get(e, "ro"));
			bad |= !m->host || !m->guest;
		}
	} else if (json_array_size(mounts) > VMSPEC_MAX_MOUNTS) {
		bad = 1;
	}
	const char *ws = json_string_value(json_object_get(j, "workspace"));
	if (json_is_true(json_object_get(j, "workspace_shared"))) {
		if (!ws || ws[0] != '/' || strpbrk(ws, ",:") || !(r.spec.workspace = strdup(ws)))
			bad = 1;
	}
	bad |= copy_ts(json_object_get(j, "created"), r.created) < 0;
	bad |= copy_ts(json_object_get(j, "started"), r.started) < 0;
	r.boot_ms = json_number_value(json_object_get(j, "boot_ms"));
	const char *accel = json_string_value(json_object_get(j, "accel"));
	if (accel && (streq(accel, "kvm") || streq(accel, "tcg")))
		snprintf(r.accel, sizeof(r.accel), "%s", accel);
	const char *wt = json_string_value(json_object_get(j, "workspace_transport"));
	if (wt && registry_ws_transport_valid(wt))
		snprintf(r.ws_transport, sizeof(r.ws_transport), "%s", wt);
	v = json_object_get(j, "boot"); /* absent in records written before the ledger */
	if (v &&
	    (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 999999))
		bad = 1;
	r.boot = (unsigned)json_integer_value(v);
	json_int_t pid = json_integer_value(json_object_get(j, "pid"));
	r.pid = pid > 1 && pid < (1 << 30) ? (int)pid : 0;
	const char *err = json_string_value(json_object_get(j, "error"));
	if (err && !(r.error = strdup(err)))
		bad = 1;
	if (bad) {
		registry_record_done(&r);
		return -EBADMSG;
	}
	*ret = r;
	return 0;
}

int registry_save(const struct vm_record *r)
{
	_cleanup_free_ char *path = NULL, *s = NULL;
	_cleanup_json_ json_t *j = registry_record_to_json(r);
	if (!j)
		return -ENOMEM;
	s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!s)
		return -ENOMEM;
	if (asprintf(&path, "%s/%s", r->vmdir, REGISTRY_FILE) < 0)
		return -ENOMEM;
	return write_file_atomic(path, s, strlen(s), 0600);
}

int registry_load(const char *vms_dir, const char *id, struct vm_record *ret)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	size_t len;
	if (!registry_id_valid(id))
		return -EBADMSG;
	if (asprintf(&path, "%s/%s/%s", vms_dir, id, REGISTRY_FILE) < 0)
		return -ENOMEM;
	int k = read_file_small(path, VMJSON_MAX, &text, &len);
	if (k < 0)
		return k;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!j)
		return -EBADMSG;
	struct vm_record r;
	k = registry_record_from_json(j, &r);
	json_decref(j);
	if (k < 0)
		return k;
	if (!streq(r.id, id)) {
		registry_record_done(&r);
		return -EBADMSG;
	}
	*ret = r;
	return 0;
}

int registry_resolve(const char *const *ids, const char *const *names, size_t n, const char *ref,
		     char **ret_candidates)
{
	size_t rl = strlen(ref);
	for (size_t i = 0; i < n; i++)
		if (names[i] && streq(names[i], ref))
			return (int)i;
	for (size_t i = 0; i < n; i++)
		if (streq(ids[i], ref))
			return (int)i;
	if (rl < 3 || rl > REGISTRY_ID_LEN)
		return -ENOENT;
	for (const char *c = ref; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return -ENOENT;
	int found = -1;
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(ids[i], ref, rl) == 0) {
			found = (int)i;
			count++;
		}
	if (count == 0)
		return -ENOENT;
	if (count == 1)
		return found;
	if (ret_candidates) {
		size_t cap = count * (REGISTRY_ID_LEN + 2) + 1, o = 0;
		char *s = malloc(cap);
		if (s) {
			for (size_t i = 0; i < n; i++)
				if (strncmp(ids[i], ref, rl) == 0)
					o += (size_t)snprintf(s + o, cap - o, "%s%s", o ? ", " : "",
							      ids[i]);
		}
		*ret_candidates = s;
	}
	return -EADDRNOTAVAIL;
}
