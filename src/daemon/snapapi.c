/* snapapi.c - capsemd's workspace snapshot routes (docs/API.md "Snapshots") and the automatic
 * snapshots of running VMs: list, create, changes, revert, history, delete and compact on
 * <vmdir>/snapshots (src/workspace/snapstore.c), for running and stopped VMs alike.
 *
 * Trust boundary: API clients (names, paths and bodies validated here; the library checks them
 * again) and, through the library, the workspace the guest writes. The loop never blocks: each
 * request copies what it needs from the VM record (store and workspace paths) into a job that
 * opens the store and runs on libuv's worker pool; the answer is sent from the after-work
 * callback on the loop. Two jobs on one store exclude each other with the store's flock, as
 * they do with any other process using it (the VM's MCP gateway). Thread: the loop, except
 * job_work() on a worker.
 */
#include "snapapi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "snapstore.h"
#include "strv.h"
#include "wstree.h"

#define GUEST_WS "/root/workspace"
#define REVERT_PATHS_MAX 1024

enum snapop { OP_LIST, OP_CREATE, OP_CHANGES, OP_REVERT, OP_HISTORY, OP_DELETE, OP_COMPACT };

struct snapapi {
	uv_timer_t timer;
	uint64_t interval_ms;
	char **busy; /* ids of VMs with an automatic snapshot in flight */
};

struct snapjob {
	uv_work_t w;
	struct api *a;
	struct httpd_conn *c; /* NULL: an automatic snapshot */
	enum snapop op;
	char id[REGISTRY_ID_LEN + 1];
	char *store, *workspace, *name, *path;
	char **paths;
	int opened; /* the store was opened (r is the operation's) */
	int r;
	json_t *result;
};

static void job_free(struct snapjob *j)
{
	if (!j)
		return;
	free(j->store);
	free(j->workspace);
	free(j->name);
	free(j->path);
	strv_free(j->paths);
	json_decref(j->result);
	free(j);
}

static inline void job_freep(struct snapjob **j)
{
	job_free(*j);
}

/* A job for vm: its store (<vmdir>/snapshots) and workspace (the user's folder or <vmdir>/
 * workspace). NULL on ENOMEM. */
static struct snapjob *job_new(struct api *a, struct httpd_conn *c, const struct vm *vm,
			       enum snapop op)
{
	const struct vm_record *rec = vm_record(vm);
	struct snapjob *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->a = a;
	j->c = c;
	j->op = op;
	memcpy(j->id, rec->id, sizeof(j->id));
	if (asprintf(&j->store, "%s/" SNAPAPI_STORE_DIR, rec->vmdir) < 0) {
		j->store = NULL;
		goto fail;
	}
	if (rec->spec.workspace)
		j->workspace = strdup(rec->spec.workspace);
	else if (asprintf(&j->workspace, "%s/" VMSPEC_WORKSPACE_DIR, rec->vmdir) < 0)
		j->workspace = NULL;
	if (!j->workspace)
		goto fail;
	return j;
fail:
	job_free(j);
	return NULL;
}

static void job_work(uv_work_t *w)
{
	struct snapjob *j = w->data;
	_cleanup_(snapstore_freep) struct snapstore *s = NULL;
	int r = snapstore_open(j->store, j->workspace, NULL, &s);
	if (r < 0) {
		j->r = r;
		return;
	}
	j->opened = 1;
	switch (j->op) {
	case OP_LIST:
		r = snapstore_list(s, &j->result);
		break;
	case OP_CREATE:
		r = snapstore_create(s, j->name, &j->result);
		break;
	case OP_CHANGES:
		r = snapstore_changes(s, j->name, &j->result);
		break;
	case OP_REVERT:
		r = snapstore_revert(s, j->name, j->paths, &j->result);
		break;
	case OP_HISTORY:
		r = snapstore_history(s, j->path, &j->result);
		break;
	case OP_DELETE:
		r = snapstore_delete(s, j->name);
		if (r == 0 && !(j->result = json_pack("{s:s}", "deleted", j->name)))
			r = -ENOMEM;
		break;
	case OP_COMPACT:
		r = snapstore_compact(s, &j->result);
		break;
	}
	j->r = r;
}

static void busy_drop(struct snapapi *sa, const char *id)
{
	size_t n = strv_length(sa->busy);
	for (size_t i = 0; i < n; i++)
		if (streq(sa->busy[i], id)) {
			free(sa->busy[i]);
			sa->busy[i] = sa->busy[n - 1];
			sa->busy[n - 1] = NULL;
			return;
		}
}

static void reply(struct snapjob *j)
{
	struct httpd_conn *c = j->c;
	const char *what = j->name ? j->name : "";
	int r = j->r;
	if (r == 0) {
		httpd_reply_json(c, j->op == OP_CREATE ? 201 : 200, TAKE_PTR(j->result));
		return;
	}
	if (!j->opened) {
		if (r == -ENOENT)
			httpd_reply_error(c, 404, "not_found",
					  "the VM's workspace %s does not exist (yet)",
					  j->workspace);
		else if (r == -EINVAL)
			httpd_reply_error(c, 500, "internal",
					  "the snapshot store %s and the workspace %s overlap",
					  j->store, j->workspace);
		else
			httpd_reply_error(c, 500, "internal",
					  "cannot open the snapshot store %s: %s", j->store,
					  strerror(-r));
		return;
	}
	switch (r) {
	case -ENOENT:
		if (*what)
			httpd_reply_error(c, 404, "not_found", "no snapshot '%s'", what);
		else
			httpd_reply_error(c, 404, "not_found", "the VM has no snapshots yet");
		break;
	case -EEXIST:
		httpd_reply_error(c, 409, "name_taken", "a snapshot named '%s' already exists",
				  what);
		break;
	case -EINVAL:
		httpd_reply_error(c, 400, "bad_request", "invalid snapshot name or path");
		break;
	case -E2BIG:
		httpd_reply_error(c, 413, "too_large",
				  "the workspace has more than %u entries: not snapshotted",
				  SNAPSTORE_ENTRIES_MAX);
		break;
	case -EBADMSG:
		httpd_reply_error(c, 500, "store_damaged", "the snapshot store %s is damaged",
				  j->store);
		break;
	default:
		httpd_reply_error(c, 500, "internal", "snapshot operation failed: %s",
				  strerror(-r));
	}
}

static void job_done(uv_work_t *w, int status)
{
	_cleanup_(job_freep) struct snapjob *j = w->data;
	if (status < 0 && j->r == 0)
		j->r = -ECANCELED;
	if (j->c) {
		reply(j);
		return;
	}
	/* an automatic snapshot: nobody waits for it */
	busy_drop(j->a->snap, j->id);
	if (j->r < 0)
		log_warn_errno(j->r, "VM %s: automatic snapshot failed", j->id);
	else if (json_is_true(json_object_get(j->result, "created")))
		log_debug("VM %s: automatic snapshot %s", j->id,
			  json_string_value(
				  json_object_get(json_object_get(j->result, "snapshot"), "name")));
}

static void job_start(struct snapjob *j)
{
	j->w.data = j;
	int r = uv_queue_work(j->a->loop, &j->w, job_work, job_done);
	if (r < 0) {
		if (j->c)
			httpd_reply_error(j->c, 500, "internal", "%s", uv_strerror(r));
		else
			busy_drop(j->a->snap, j->id);
		job_free(j);
	}
}

/* ---- automatic snapshots ---- */

static void on_tick(uv_timer_t *t)
{
	struct api *a = t->data;
	struct snapapi *sa = a->snap;
	for (struct vm *vm = vmctl_first(a->vms); vm; vm = vmctl_next(vm)) {
		const struct vm_record *rec = vm_record(vm);
		if (rec->state != VM_RUNNING || rec->spec.no_ws_audit)
			continue; /* not running, or a workspace that is not the agent's work */
		int busy = 0;
		for (char **p = sa->busy; p && *p; p++)
			busy |= streq(*p, rec->id);
		if (busy)
			continue; /* the last one is still running: no pile-up */
		struct snapjob *j = job_new(a, NULL, vm, OP_CREATE);
		if (!j || strv_push(&sa->busy, rec->id) < 0) {
			job_free(j);
			log_oom();
			return;
		}
		job_start(j);
	}
}

int snapapi_init(struct api *a)
{
	uint64_t s = SNAPAPI_INTERVAL_DEFAULT_S;
	const char *env = getenv("CAPSEM_SNAPSHOT_INTERVAL_S");
	if (env && *env && (parse_u64(env, &s) < 0 || s > 7 * 24 * 3600))
		return log_error("CAPSEM_SNAPSHOT_INTERVAL_S: expected seconds (0 = no automatic "
				 "snapshots), got '%s'",
				 env),
		       -EINVAL;
	struct snapapi *sa = calloc(1, sizeof(*sa));
	if (!sa)
		return log_oom();
	a->snap = sa;
	sa->interval_ms = s * 1000;
	if (s == 0)
		return 0;
	uv_timer_init(a->loop, &sa->timer);
	sa->timer.data = a;
	uv_timer_start(&sa->timer, on_tick, sa->interval_ms, sa->interval_ms);
	uv_unref((uv_handle_t *)&sa->timer); /* never what keeps the daemon alive */
	log_debug("automatic workspace snapshots every %" PRIu64 " s", s);
	return 0;
}

static void snapapi_free_cb(uv_handle_t *h)
{
	struct snapapi *sa = container_of((uv_timer_t *)h, struct snapapi, timer);
	strv_free(sa->busy);
	free(sa);
}

void snapapi_done(struct api *a)
{
	struct snapapi *sa = a->snap;
	if (!sa)
		return;
	a->snap = NULL;
	if (sa->interval_ms) {
		uv_timer_stop(&sa->timer);
		uv_close((uv_handle_t *)&sa->timer, snapapi_free_cb);
	} else {
		strv_free(sa->busy);
		free(sa);
	}
}

/* ---- routes ---- */

/* A JSON object body (empty = {}); NULL after answering 400. */
static json_t *body_object(struct httpd_conn *c, const struct buf *body)
{
	json_t *j = api_body_json(c, body);
	if (j && !json_is_object(j)) {
		json_decref(j);
		httpd_reply_error(c, 400, "bad_request", "expected a JSON object");
		return NULL;
	}
	return j;
}

/* A string member (NUL-free), or NULL when absent; -EINVAL when of another type. */
static int str_member(json_t *o, const char *k, const char **ret)
{
	json_t *v = json_object_get(o, k);
	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return -EINVAL;
	*ret = json_string_value(v);
	return 0;
}

/* The route words cannot name a snapshot: DELETE /vms/{ref}/snapshots/{name} must reach it. */
static int name_usable(const char *n)
{
	static const char *const reserved[] = { "changes", "revert", "history", "compact" };
	if (!snapstore_name_valid(n))
		return 0;
	for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
		if (streq(n, reserved[i]))
			return 0;
	return 1;
}

/* A snapshot reference: an existing name (named or automatic); only its syntax is checked. */
static int ref_ok(const char *n)
{
	size_t l = strlen(n);
	return l > 0 && l <= SNAPSTORE_NAME_MAX && n[0] != '.' && n[0] != '-' &&
	       strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == l;
}

/* A workspace path as the API takes it: relative to the workspace, or absolute under
 * /root/workspace (the guest's view); "." or "/root/workspace" = all of it. The relative form
 * (malloc'ed) or NULL when it is not one. */
static char *ws_path(const char *p)
{
	size_t gl = strlen(GUEST_WS);
	if (strncmp(p, GUEST_WS, gl) == 0 && (p[gl] == 0 || p[gl] == '/')) {
		p += gl;
		while (*p == '/')
			p++;
		if (!*p)
			p = ".";
	}
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		n--; /* "dir/" = "dir" */
	if (n == 0 || p[0] == '/' || n > 4095)
		return NULL;
	return strndup(p, n);
}

static void route_create(struct api *a, struct httpd_conn *c, struct vm *vm, const struct buf *body)
{
	_cleanup_json_ json_t *j = body_object(c, body);
	const char *name;
	if (!j)
		return;
	if (str_member(j, "name", &name) < 0 || json_object_size(j) > 1 ||
	    (json_object_size(j) == 1 && !json_object_get(j, "name")) ||
	    (name && !name_usable(name))) {
		httpd_reply_error(c, 400, "bad_request",
				  "expected {\"name\": NAME} (or {} for an automatic snapshot), "
				  "NAME of [A-Za-z0-9][A-Za-z0-9._-]{0,63}, not starting with "
				  "'auto-' and not changes, revert, history or compact");
		return;
	}
	struct snapjob *sj = job_new(a, c, vm, OP_CREATE);
	if (!sj || (name && !(sj->name = strdup(name)))) {
		job_free(sj);
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	job_start(sj);
}

static void route_revert(struct api *a, struct httpd_conn *c, struct vm *vm, const struct buf *body)
{
	_cleanup_json_ json_t *j = body_object(c, body);
	_cleanup_(job_freep) struct snapjob *sj = NULL;
	const char *from = NULL, *k;
	json_t *v, *paths;
	size_t i;
	if (!j)
		return;
	json_object_foreach(j, k, v) if (!streq(k, "paths") && !streq(k, "from"))
	{
		httpd_reply_error(c, 400, "bad_request", "unknown field '%s'", k);
		return;
	}
	paths = json_object_get(j, "paths");
	if (str_member(j, "from", &from) < 0 || (from && !ref_ok(from))) {
		httpd_reply_error(c, 400, "bad_request", "from: expected a snapshot's name");
		return;
	}
	if (!json_is_array(paths) || json_array_size(paths) == 0 ||
	    json_array_size(paths) > REVERT_PATHS_MAX) {
		httpd_reply_error(c, 400, "bad_request",
				  "paths: expected 1 to %u workspace paths (relative, or under "
				  "/root/workspace; \".\" for all of it)",
				  REVERT_PATHS_MAX);
		return;
	}
	if (!(sj = job_new(a, c, vm, OP_REVERT)) || (from && !(sj->name = strdup(from)))) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	json_array_foreach(paths, i, v)
	{
		const char *p = json_string_value(v);
		_cleanup_free_ char *rel =
			p && strlen(p) == json_string_length(v) ? ws_path(p) : NULL;
		if (!rel || (!streq(rel, ".") && wst_path_check(rel, 0) < 0)) {
			httpd_reply_error(c, 400, "bad_request",
					  "paths[%zu]: not a path inside the workspace", i);
			return;
		}
		if (strv_push(&sj->paths, rel) < 0) {
			httpd_reply_error(c, 500, "internal", "out of memory");
			return;
		}
	}
	job_start(TAKE_PTR(sj));
}

#define FAIL(...)                                  \
	do {                                       \
		httpd_reply_error(c, __VA_ARGS__); \
		return;                            \
	} while (0)

void snapapi_handle(struct api *a, struct httpd_conn *c, struct vm *vm, const char *method,
		    const char *sub, const char *query, const struct buf *body)
{
	_cleanup_free_ char *q = NULL;
	struct snapjob *j = NULL;
	int r;
	if (!sub) {
		if (streq(method, "GET"))
			j = job_new(a, c, vm, OP_LIST);
		else if (streq(method, "POST")) {
			route_create(a, c, vm, body);
			return;
		} else
			FAIL(405, "method_not_allowed", "use GET or POST for snapshots");
	} else if (streq(sub, "changes") || streq(sub, "history")) {
		int changes = streq(sub, "changes");
		if (!streq(method, "GET"))
			FAIL(405, "method_not_allowed", "use GET for %s", sub);
		r = http_query_get(query, changes ? "snap" : "path", &q);
		if (r == -EBADMSG || (r == -ENOENT && !changes) ||
		    (r == 0 && changes && !ref_ok(q)))
			FAIL(400, "bad_request",
			     changes ? "snap: expected a snapshot's name"
				     : "path: expected ?path=PATH");
		if (r == -ENOMEM)
			FAIL(500, "internal", "out of memory");
		j = job_new(a, c, vm, changes ? OP_CHANGES : OP_HISTORY);
		if (j && !changes) {
			j->path = q ? ws_path(q) : NULL;
			if (!j->path || streq(j->path, ".") || wst_path_check(j->path, 0) < 0) {
				job_free(j);
				FAIL(400, "bad_request", "path: not a path inside the workspace");
			}
		} else if (j) {
			j->name = TAKE_PTR(q);
		}
	} else if (streq(sub, "revert")) {
		if (!streq(method, "POST"))
			FAIL(405, "method_not_allowed", "use POST for revert");
		route_revert(a, c, vm, body);
		return;
	} else if (streq(sub, "compact")) {
		if (!streq(method, "POST"))
			FAIL(405, "method_not_allowed", "use POST for compact");
		j = job_new(a, c, vm, OP_COMPACT);
	} else {
		if (!streq(method, "DELETE"))
			FAIL(405, "method_not_allowed", "use DELETE for a snapshot");
		if (!ref_ok(sub))
			FAIL(404, "not_found", "no snapshot '%s'", sub);
		j = job_new(a, c, vm, OP_DELETE);
		if (j && !(j->name = strdup(sub))) {
			job_free(j);
			j = NULL;
		}
	}
	if (!j)
		FAIL(500, "internal", "out of memory");
	job_start(j);
}
#undef FAIL
