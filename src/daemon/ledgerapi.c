/* ledgerapi.c - the session ledger in capsemd: its read routes.
 *
 * Reads: GET /vms/{ref}/events, /sessions, /sessions/{id}[/events]. The daemon never writes a
 * ledger (each VM's capsem-vm does); it reads the files with query.h on libuv's worker pool (a
 * SQLite query may touch the disk) and answers from the loop. A VM's events come from its
 * current boot's database unless ?session= names another of its sessions; a {ref} the daemon
 * does not know is looked up in the sessions directory (a session id, or a deleted VM's id or
 * name), so the record of a VM outlives it.
 *
 * Exec rows are not written here: capsem-vm records every exec session from the bytes it relays
 * to the guest (src/vm/exectrack.c), so an exec is on record even when the daemon dies under it.
 *
 * Trust boundary: API clients (query strings are validated: kinds, numbers, session ids).
 * Thread: the loop, except the query jobs, which touch only their own job.
 */
#include "ledgerapi.h"

#include <stdio.h>

#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "query.h"

/* ---- query strings ---- */

/* kind, limit, since. 0, or -EINVAL after answering 400. */
static int parse_query(struct httpd_conn *c, const char *query, struct ledger_query *q)
{
	_cleanup_free_ char *kind = NULL, *limit = NULL, *since = NULL;
	uint64_t x;
	*q = (struct ledger_query){ .since = -1 };
	int r = http_query_get(query, "kind", &kind);
	if (r == -EBADMSG || (r == 0 && ledger_kinds_parse(kind, &q->kinds) < 0)) {
		httpd_reply_error(c, 400, "bad_request",
				  "kind: expected exec, net, dns, model (model_call), tool "
				  "(tool_call), policy or dropped, separated by commas");
		return -EINVAL;
	}
	r = http_query_get(query, "limit", &limit);
	if (r == -EBADMSG ||
	    (r == 0 && (parse_u64(limit, &x) < 0 || x < 1 || x > LEDGER_QUERY_MAX))) {
		httpd_reply_error(c, 400, "bad_request", "limit: expected 1..%u", LEDGER_QUERY_MAX);
		return -EINVAL;
	}
	if (r == 0)
		q->limit = (unsigned)x;
	r = http_query_get(query, "since", &since);
	if (r == -EBADMSG || (r == 0 && (parse_u64(since, &x) < 0 || x > INT64_MAX))) {
		httpd_reply_error(c, 400, "bad_request", "since: expected an event id");
		return -EINVAL;
	}
	if (r == 0)
		q->since = (int64_t)x;
	return 0;
}

/* ---- query jobs (worker pool) ---- */

enum job_kind { JOB_EVENTS, JOB_INFO, JOB_LIST };

struct job {
	uv_work_t w;
	struct httpd_conn *c;
	enum job_kind kind;
	char *path;	 /* the database, or NULL: find ref in dir */
	char *dir, *ref; /* sessions directory; a reference to find there */
	char *vm_filter; /* JOB_LIST */
	struct ledger_query q;
	json_t *result;
	int r;
};

static void job_work(uv_work_t *w)
{
	struct job *j = w->data;
	if (j->kind == JOB_LIST) {
		j->r = ledger_sessions_list(j->dir, j->vm_filter, 1, &j->result);
		return;
	}
	if (!j->path) {
		j->r = ledger_session_find(j->dir, j->ref, &j->path);
		if (j->r < 0)
			return;
	}
	if (j->kind == JOB_EVENTS)
		j->r = ledger_query(j->path, &j->q, &j->result);
	else
		j->r = ledger_session_info(j->path, 1, &j->result);
}

static void job_free(struct job *j)
{
	free(j->path);
	free(j->dir);
	free(j->ref);
	free(j->vm_filter);
	json_decref(j->result);
	free(j);
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct httpd_conn *c = j->c;
	const char *what = j->ref ? j->ref : "";
	if (status < 0)
		j->r = status;
	if (j->r == 0) {
		httpd_reply_json(c, 200, j->result);
		j->result = NULL;
	} else if (j->r == -ENOENT && !j->path) {
		httpd_reply_error(c, 404, "not_found", "no VM or session '%s'", what);
	} else if (j->r == -ENOENT) {
		httpd_reply_error(c, 404, "not_found",
				  "no session ledger for '%s' yet (%s does not exist: capsem-vm "
				  "records one when it supports --ledger)",
				  what, j->path);
	} else if (j->r == -EADDRNOTAVAIL) {
		httpd_reply_error(c, 400, "bad_request",
				  "'%s' is ambiguous: more than one VM id "
				  "starts with it",
				  what);
	} else if (j->r == -EBADMSG || j->r == -EPROTONOSUPPORT) {
		httpd_reply_error(c, 500, "internal", "%s: %s", j->path ? j->path : what,
				  j->r == -EBADMSG ? "not a session ledger"
						   : "written by a newer capsem (schema)");
	} else {
		httpd_reply_error(c, 500, "internal", "cannot read the session ledger: %s",
				  strerror(-j->r));
	}
	job_free(j);
}

static void job_start(struct api *a, struct job *j)
{
	j->w.data = j;
	int r = uv_queue_work(a->loop, &j->w, job_work, job_done);
	if (r < 0) {
		httpd_reply_error(j->c, 500, "internal", "%s", uv_strerror(r));
		job_free(j);
	}
}

static struct job *job_new(struct api *a, struct httpd_conn *c, enum job_kind kind)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j) {
		j->c = c;
		j->kind = kind;
		j->dir = strdup(vmctl_sessions_dir(a->vms));
		if (!j->dir) {
			free(j);
			j = NULL;
		}
	}
	if (!j)
		httpd_reply_error(c, 500, "internal", "out of memory");
	return j;
}

/* ---- routes ---- */

void ledgerapi_vm_events(struct api *a, struct httpd_conn *c, struct vm *vm, const char *ref,
			 const char *query)
{
	struct ledger_query q;
	_cleanup_free_ char *session = NULL;
	if (parse_query(c, query, &q) < 0)
		return;
	int r = http_query_get(query, "session", &session);
	if (r == -EBADMSG || (r == 0 && !ledger_session_id_valid(session))) {
		httpd_reply_error(c, 400, "bad_request", "session: expected <vm-id>-<boot>");
		return;
	}
	struct job *j = job_new(a, c, JOB_EVENTS);
	if (!j)
		return;
	j->q = q;
	if (vm) {
		const struct vm_record *rec = vm_record(vm);
		char vm_id[65];
		unsigned boot;
		if (session) {
			(void)ledger_session_id_parse(session, vm_id, &boot);
			if (!streq(vm_id, rec->id)) {
				httpd_reply_error(
					c, 400, "bad_request",
					"session %s is not one of VM %s's (%s-1 .. %s-%u)", session,
					rec->id, rec->id, rec->id, rec->boot);
				job_free(j);
				return;
			}
			r = ledger_session_path(j->dir, vm_id, boot, &j->path);
		} else if (rec->boot == 0) {
			httpd_reply_error(c, 404, "not_found",
					  "VM %s has not booted yet: no session", rec->id);
			job_free(j);
			return;
		} else {
			r = vm_session_path(vm, &j->path);
		}
		j->ref = strdup(session ? session : rec->id);
		if (r < 0 || !j->ref) {
			httpd_reply_error(c, 500, "internal", "out of memory");
			job_free(j);
			return;
		}
	} else {
		/* not a VM the daemon knows: a session id, a deleted VM's id or name */
		j->ref = strdup(session ? session : ref);
		if (!j->ref) {
			httpd_reply_error(c, 500, "internal", "out of memory");
			job_free(j);
			return;
		}
	}
	job_start(a, j);
}

void ledgerapi_sessions(struct api *a, struct httpd_conn *c, const char *query)
{
	_cleanup_free_ char *vm = NULL;
	int r = http_query_get(query, "vm", &vm);
	if (r == -EBADMSG || (r == 0 && (strlen(vm) == 0 || strlen(vm) > 64 || strchr(vm, '/')))) {
		httpd_reply_error(c, 400, "bad_request", "vm: expected a VM id");
		return;
	}
	struct job *j = job_new(a, c, JOB_LIST);
	if (!j)
		return;
	j->vm_filter = TAKE_PTR(vm);
	job_start(a, j);
}

void ledgerapi_session(struct api *a, struct httpd_conn *c, const char *session, int events,
		       const char *query)
{
	struct ledger_query q = { .since = -1 };
	if (!ledger_session_id_valid(session)) {
		httpd_reply_error(c, 404, "not_found", "'%s' is not a session id (<vm-id>-<boot>)",
				  session);
		return;
	}
	if (events && parse_query(c, query, &q) < 0)
		return;
	struct job *j = job_new(a, c, events ? JOB_EVENTS : JOB_INFO);
	if (!j)
		return;
	j->q = q;
	if (asprintf(&j->path, "%s/%s.db", j->dir, session) < 0 || !(j->ref = strdup(session))) {
		j->path = NULL;
		httpd_reply_error(c, 500, "internal", "out of memory");
		job_free(j);
		return;
	}
	job_start(a, j);
}
