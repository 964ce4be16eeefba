/* ledgerapi.c - the session ledger in capsemd: its read routes.
 *
 * Reads: GET /vms/{ref}/events, /sessions, /sessions/{id}[/events]. The daemon never writes a
 * ledger (each VM's capsem-vm does); it reads the files with query.h on libuv's worker pool (a
 * SQLite query may touch the disk) and answers from the loop. A VM's events come from its
 * current boot's database unless ?session= names another of its sessions; a {ref} the daemon
 * does not know is looked up in the sessions directory (a session id, or a deleted VM's id or
 * name), so the record of a VM outlives it.
 *
 * Long-poll: with wait=S (1..LEDGER_WAIT_MAX_S) an events query whose answer is empty is not
 * answered at once: the request waits on a's list until a commit notice for its session arrives
 * (capsem-vm's "ledger" control event, through vmctl_on_ledger) with an id above its since (then
 * the query runs again) or S seconds pass (then the empty answer goes). A notice that arrives
 * while a query runs makes that query run again instead of waiting: no commit is missed. No
 * timer ever polls the file; a session without a live writer just waits out S.
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

#define LEDGER_WAIT_MAX_S 60

/* ---- query strings ---- */

/* kind, limit, since, wait (*ret_wait_s: 0 = answer at once). 0, or -EINVAL after answering
 * 400. */
static int parse_query(struct httpd_conn *c, const char *query, struct ledger_query *q,
		       unsigned *ret_wait_s)
{
	_cleanup_free_ char *kind = NULL, *limit = NULL, *since = NULL, *wait = NULL;
	uint64_t x;
	*q = (struct ledger_query){ .since = -1 };
	*ret_wait_s = 0;
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
	r = http_query_get(query, "wait", &wait);
	if (r == -EBADMSG || (r == 0 && (parse_u64(wait, &x) < 0 || x > LEDGER_WAIT_MAX_S))) {
		httpd_reply_error(c, 400, "bad_request", "wait: expected 0..%u seconds",
				  LEDGER_WAIT_MAX_S);
		return -EINVAL;
	}
	if (r == 0)
		*ret_wait_s = (unsigned)x;
	return 0;
}

/* ---- query jobs (worker pool) ---- */

enum job_kind { JOB_EVENTS, JOB_INFO, JOB_LIST };

struct job {
	uv_work_t w;
	struct api *a;
	struct httpd_conn *c;
	enum job_kind kind;
	char *path;	 /* the database, or NULL: find ref in dir */
	char *dir, *ref; /* sessions directory; a reference to find there */
	char *vm_filter; /* JOB_LIST */
	struct ledger_query q;
	json_t *result;
	int r;
	/* long-poll (JOB_EVENTS with wait=S) */
	uint64_t deadline;     /* uv_now() ms; 0: answer at once */
	uint64_t seq;	       /* a->ledger_seq when the query started */
	struct list_link link; /* on a->ledger_waits while parked */
	int parked;
	uv_timer_t timer;
	int timer_init;
};

static void job_start(struct api *a, struct job *j);

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

static void job_closed(uv_handle_t *h)
{
	free(h->data);
}

static void job_free(struct job *j)
{
	if (j->parked)
		list_del(&j->link);
	free(j->path);
	free(j->dir);
	free(j->ref);
	free(j->vm_filter);
	json_decref(j->result);
	if (j->timer_init)
		uv_close((uv_handle_t *)&j->timer, job_closed);
	else
		free(j);
}

/* ---- long-polls ---- */

static void unpark(struct job *j)
{
	if (j->parked) {
		list_del(&j->link);
		j->parked = 0;
		uv_timer_stop(&j->timer);
	}
}

/* The wait is over: answer with the empty list the query gave. */
static void on_wait_timeout(uv_timer_t *t)
{
	struct job *j = t->data;
	unpark(j);
	httpd_reply_json(j->c, 200, j->result);
	j->result = NULL;
	job_free(j);
}

/* Run the query again (a commit it may not have seen). */
static void requery(struct job *j)
{
	json_decref(j->result);
	j->result = NULL;
	j->seq = j->a->ledger_seq;
	job_start(j->a, j);
}

/* The query found nothing: wait for a commit on its session, unless one came while it ran or
 * the time is up. 1 when the job is taken care of (parked or running again), 0 to answer. */
static int park(struct job *j)
{
	struct api *a = j->a;
	uint64_t now = uv_now(a->loop);
	if (!j->deadline || now >= j->deadline || !json_is_array(j->result) ||
	    json_array_size(j->result) > 0 || !j->path)
		return 0;
	if (a->ledger_seq != j->seq) {
		requery(j);
		return 1;
	}
	if (!j->timer_init) {
		uv_timer_init(a->loop, &j->timer);
		j->timer.data = j;
		j->timer_init = 1;
	}
	uv_timer_start(&j->timer, on_wait_timeout, j->deadline - now, 0);
	list_add_tail(&a->ledger_waits, &j->link);
	j->parked = 1;
	return 1;
}

/* A VM's capsem-vm committed rows up to last_id in session: wake the long-polls on it. */
static void on_ledger(void *userdata, const char *session, int64_t last_id)
{
	struct api *a = userdata;
	struct list_link *p, *tmp;
	size_t n = strlen(session);
	a->ledger_seq++;
	list_for_each_safe(p, tmp, &a->ledger_waits)
	{
		struct job *j = list_entry(p, struct job, link);
		const char *slash = strrchr(j->path, '/');
		const char *base = slash ? slash + 1 : j->path;
		if (strncmp(base, session, n) != 0 || !streq(base + n, ".db"))
			continue;
		if (j->q.since >= 0 && last_id <= j->q.since)
			continue;
		unpark(j);
		requery(j);
	}
}

void ledgerapi_init(struct api *a)
{
	list_init(&a->ledger_waits);
	a->ledger_seq = 0;
	vmctl_on_ledger(a->vms, on_ledger, a);
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct httpd_conn *c = j->c;
	const char *what = j->ref ? j->ref : "";
	if (status < 0)
		j->r = status;
	if (j->r == 0 && park(j))
		return;
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
		j->a = a;
		j->seq = a->ledger_seq;
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
	unsigned wait_s;
	if (parse_query(c, query, &q, &wait_s) < 0)
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
	if (wait_s)
		j->deadline = uv_now(a->loop) + wait_s * 1000ull;
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
	unsigned wait_s = 0;
	if (!ledger_session_id_valid(session)) {
		httpd_reply_error(c, 404, "not_found", "'%s' is not a session id (<vm-id>-<boot>)",
				  session);
		return;
	}
	if (events && parse_query(c, query, &q, &wait_s) < 0)
		return;
	struct job *j = job_new(a, c, events ? JOB_EVENTS : JOB_INFO);
	if (!j)
		return;
	j->q = q;
	if (wait_s)
		j->deadline = uv_now(a->loop) + wait_s * 1000ull;
	if (asprintf(&j->path, "%s/%s.db", j->dir, session) < 0 || !(j->ref = strdup(session))) {
		j->path = NULL;
		httpd_reply_error(c, 500, "internal", "out of memory");
		job_free(j);
		return;
	}
	job_start(a, j);
}
