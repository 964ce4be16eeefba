/* uiapi.c - what the web UI needs from capsemd (uiapi.h), and the gateway's supervision.
 *
 * GET /status: every VM (as GET /vms) with its current session's model tokens, cost and
 * request counts, plus counts by state and totals; the ledgers are read on libuv's worker pool.
 * With rev=N&wait=S the request is held until the registry's revision (vmctl_rev: bumped on
 * every record change) differs from N, or S seconds pass: the gateway's /events follows it
 * without polling (each session's stats are kept while its ledger files do not change:
 * cached_stats). GET /vms/{ref}/stats and /activity read the VM's current session (or
 * ?session=) with ledger_stats() / ledger_page() on the worker pool.
 *
 * The gateway: POST /gateway (capsem ui) or --gateway-port starts capsem-gateway as our child
 * with one end of a socketpair as its fd 3: it writes its port there once listening (the
 * request is answered then), and exits when it reads EOF (we died). When it exits on its own it
 * is started again after 1, 2, 4 ... 30 s.
 *
 * Trust boundary: API clients (the daemon's own user; query values validated). Thread: the
 * loop, except the ledger reads.
 */
#include "relload.h"
#include "uiapi.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "config.h"
#include "jsonutil.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "query.h"
#include "scfilter.h"
#include "vmproc.h"
#include "wstree.h"

#define STATUS_WAIT_MAX_S 60
#define GW_BACKOFF_MAX_MS 30000

/* ---- /status long-polls ---- */

struct status_wait {
	struct list_link link;
	struct api *a;
	struct httpd_conn *c;
	uv_timer_t *timer;
};

static struct list_link status_waits;

/* per VM: its JSON (filled on the loop) and session path; stats filled by the worker */
struct status_job {
	uv_work_t w;
	struct api *a;
	struct httpd_conn *c;
	json_t *vms;
	char **paths;
	json_t **stats;
	size_t n;
	uint64_t rev;
};

/* The stats of a session ledger, kept while its files do not change: a stopped VM's ledger
 * never changes, and a running one's only when it records something (its WAL moves), so the
 * dashboard's /status does not scan every session's tables at each request. Shared by the
 * worker threads (a mutex). */
#define STATS_CACHE_MAX 256

struct stats_entry {
	char *path;
	struct stat db, wal;
	json_t *stats;
	uint64_t used; /* the cache's clock at the last hit: the least recent one is replaced */
};

static struct stats_entry stats_cache[STATS_CACHE_MAX];
static uint64_t stats_clock;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void ledger_files(const char *path, struct stat *db, struct stat *wal)
{
	char w[4096];
	*db = (struct stat){ 0 };
	*wal = (struct stat){ 0 };
	(void)stat(path, db);
	if ((size_t)snprintf(w, sizeof(w), "%s-wal", path) < sizeof(w))
		(void)stat(w, wal);
}

static json_t *cached_stats(const char *path)
{
	struct stat db, wal;
	json_t *s = NULL;
	ledger_files(path, &db, &wal);
	pthread_mutex_lock(&stats_lock);
	struct stats_entry *e = NULL, *victim = &stats_cache[0];
	for (size_t i = 0; i < STATS_CACHE_MAX; i++) {
		struct stats_entry *x = &stats_cache[i];
		if (x->path && streq(x->path, path)) {
			e = x;
			break;
		}
		if (!x->path || (victim->path && x->used < victim->used))
			victim = x;
	}
	if (e && same_file(&e->db, &db) && same_file(&e->wal, &wal)) {
		e->used = ++stats_clock;
		s = json_incref(e->stats);
	}
	pthread_mutex_unlock(&stats_lock);
	if (s)
		return s;
	if (ledger_stats(path, 3600, &s) < 0)
		return NULL;
	pthread_mutex_lock(&stats_lock);
	if (!e) { /* (another worker may have added it meanwhile: then it is updated twice) */
		e = victim;
		free(e->path);
		json_decref(e->stats);
		*e = (struct stats_entry){ .path = strdup(path) };
	}
	if (e->path && streq(e->path, path)) {
		json_decref(e->stats);
		e->stats = json_incref(s);
		e->db = db;
		e->wal = wal;
		e->used = ++stats_clock;
	}
	pthread_mutex_unlock(&stats_lock);
	return s;
}

static void status_work(uv_work_t *w)
{
	struct status_job *j = w->data;
	for (size_t i = 0; i < j->n; i++)
		j->stats[i] = j->paths[i] ? cached_stats(j->paths[i]) : NULL;
}

static void status_done(uv_work_t *w, int st)
{
	struct status_job *j = w->data;
	json_int_t running = 0, stopped = 0, crashed = 0, suspended = 0, cpus = 0, mem = 0,
		   calls = 0, in = 0, out = 0, reqs = 0, blocked = 0;
	double cost = 0;
	for (size_t i = 0; i < j->n; i++) {
		json_t *vm = json_array_get(j->vms, i), *s = j->stats[i];
		const char *state = json_string_value(json_object_get(vm, "state"));
		if (state && !strcmp(state, "running")) {
			running++;
			cpus += json_integer_value(json_object_get(vm, "cpus"));
			mem += json_integer_value(json_object_get(vm, "memory_mib"));
		} else if (state && !strcmp(state, "crashed")) {
			crashed++;
		} else if (state && !strcmp(state, "suspended")) {
			suspended++;
		} else {
			stopped++;
		}
		json_t *m = json_object_get(s, "model"), *n = json_object_get(s, "net");
		json_t *u = json_pack(
			"{s:I, s:I, s:I, s:f, s:I, s:I}", "model_calls",
			json_integer_value(json_object_get(m, "calls")), "input_tokens",
			json_integer_value(json_object_get(m, "input_tokens")), "output_tokens",
			json_integer_value(json_object_get(m, "output_tokens")), "cost_usd",
			json_number_value(json_object_get(m, "cost_usd")), "requests",
			json_integer_value(json_object_get(n, "allow")) +
				json_integer_value(json_object_get(n, "block")),
			"blocked", json_integer_value(json_object_get(n, "block")));
		calls += json_integer_value(json_object_get(m, "calls"));
		in += json_integer_value(json_object_get(m, "input_tokens"));
		out += json_integer_value(json_object_get(m, "output_tokens"));
		cost += json_number_value(json_object_get(m, "cost_usd"));
		reqs += json_integer_value(json_object_get(n, "allow")) +
			json_integer_value(json_object_get(n, "block"));
		blocked += json_integer_value(json_object_get(n, "block"));
		json_object_set_new(vm, "usage", u ? u : json_null());
		json_decref(s);
		free(j->paths[i]);
	}
	json_t *o = json_pack("{s:I, s:s, s:O, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, "
			      "s:I, s:I, s:I, s:f}}",
			      "rev", (json_int_t)j->rev, "version", CAPSEM_VERSION, "vms", j->vms,
			      "counts", "total", (json_int_t)j->n, "running", running, "stopped",
			      stopped, "crashed", crashed, "suspended", suspended, "totals", "cpus",
			      cpus, "memory_mib", mem, "model_calls", calls, "input_tokens", in,
			      "output_tokens", out, "requests", reqs, "blocked", blocked,
			      "cost_usd", cost);
	if (o)
		httpd_reply_json(j->c, 200, o);
	else
		httpd_reply_error(j->c, 500, "internal", "out of memory");
	json_decref(j->vms);
	free(j->paths);
	free(j->stats);
	free(j);
}

static void status_answer(struct api *a, struct httpd_conn *c)
{
	struct status_job *j = calloc(1, sizeof(*j));
	size_t n = vmctl_count(a->vms);
	if (j) {
		j->vms = json_array();
		j->paths = calloc(n ? n : 1, sizeof(char *));
		j->stats = calloc(n ? n : 1, sizeof(json_t *));
	}
	if (!j || !j->vms || !j->paths || !j->stats) {
		if (j) {
			json_decref(j->vms);
			free(j->paths);
			free(j->stats);
			free(j);
		}
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	j->a = a;
	j->c = c;
	j->rev = vmctl_rev(a->vms);
	for (struct vm *vm = vmctl_first(a->vms); vm && j->n < n; vm = vmctl_next(vm)) {
		json_array_append_new(j->vms, vm_to_json(vm));
		if (vm_session_path(vm, &j->paths[j->n]) < 0)
			j->paths[j->n] = NULL;
		j->n++;
	}
	j->w.data = j;
	if (uv_queue_work(a->loop, &j->w, status_work, status_done) < 0) {
		for (size_t i = 0; i < j->n; i++)
			free(j->paths[i]);
		json_decref(j->vms);
		free(j->paths);
		free(j->stats);
		free(j);
		httpd_reply_error(c, 500, "internal", "cannot queue the status job");
	}
}

static void handle_free(uv_handle_t *h)
{
	free(h);
}

static void wait_end(struct status_wait *sw)
{
	list_del(&sw->link);
	uv_close((uv_handle_t *)sw->timer, handle_free);
	status_answer(sw->a, sw->c);
	free(sw);
}

static void on_wait_timeout(uv_timer_t *t)
{
	wait_end(t->data);
}

static void on_change(void *ud)
{
	while (!list_empty(&status_waits))
		wait_end(list_entry(status_waits.next, struct status_wait, link));
}

void uiapi_status(struct api *a, struct httpd_conn *c, const char *query)
{
	_cleanup_free_ char *rev = NULL, *wait = NULL;
	uint64_t rv = 0, ws = 0;
	int rr = http_query_get(query, "rev", &rev), wr = http_query_get(query, "wait", &wait);
	if (rr == -EBADMSG || wr == -EBADMSG || (rr == 0 && parse_u64(rev, &rv) < 0) ||
	    (wr == 0 && (parse_u64(wait, &ws) < 0 || ws > STATUS_WAIT_MAX_S))) {
		httpd_reply_error(c, 400, "bad_request", "rev: a number; wait: 0..%d seconds",
				  STATUS_WAIT_MAX_S);
		return;
	}
	if (rr != 0 || ws == 0 || rv != vmctl_rev(a->vms)) {
		status_answer(a, c);
		return;
	}
	struct status_wait *sw = calloc(1, sizeof(*sw));
	if (sw)
		sw->timer = calloc(1, sizeof(*sw->timer));
	if (!sw || !sw->timer || uv_timer_init(a->loop, sw->timer) < 0) {
		if (sw)
			free(sw->timer);
		free(sw);
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	sw->a = a;
	sw->c = c;
	sw->timer->data = sw;
	uv_timer_start(sw->timer, on_wait_timeout, ws * 1000, 0);
	list_add_tail(&status_waits, &sw->link);
}

/* ---- per-VM stats and activity ---- */

struct vm_job {
	uv_work_t w;
	struct httpd_conn *c;
	char *path;
	int stats; /* else a page */
	unsigned bucket_s;
	struct ledger_page_req page; /* its filter and decision are owned here */
	char *filter, *decision;
	json_t *res;
	int r;
};

static void vm_job_work(uv_work_t *w)
{
	struct vm_job *j = w->data;
	j->page.filter = j->filter;
	j->page.decision = j->decision;
	j->r = j->stats ? ledger_stats(j->path, j->bucket_s, &j->res)
			: ledger_page(j->path, &j->page, &j->res);
}

static void vm_job_done(uv_work_t *w, int st)
{
	struct vm_job *j = w->data;
	if (j->r == 0)
		httpd_reply_json(j->c, 200, TAKE_PTR(j->res));
	else if (j->r == -ENOENT)
		httpd_reply_error(j->c, 404, "not_found", "no session ledger yet");
	else if (j->r == -EINVAL)
		httpd_reply_error(j->c, 400, "bad_request", "that kind has no decision");
	else
		httpd_reply_error(j->c, 500, "internal", "cannot read the session ledger: %s",
				  strerror(-j->r));
	free(j->path);
	free(j->filter);
	free(j->decision);
	free(j);
}

static void vm_job_start(struct api *a, struct httpd_conn *c, struct vm *vm, struct vm_job *j)
{
	j->c = c;
	j->w.data = j;
	if (vm_session_path(vm, &j->path) < 0) {
		httpd_reply_error(c, 404, "not_found", "VM %s has not booted yet",
				  vm_record(vm)->id);
		free(j->filter);
		free(j->decision);
		free(j);
		return;
	}
	if (uv_queue_work(a->loop, &j->w, vm_job_work, vm_job_done) < 0) {
		httpd_reply_error(c, 500, "internal", "cannot queue the query");
		free(j->path);
		free(j->filter);
		free(j->decision);
		free(j);
	}
}

void uiapi_vm_stats(struct api *a, struct httpd_conn *c, struct vm *vm, const char *query)
{
	_cleanup_free_ char *bucket = NULL;
	uint64_t b = 60;
	int r = http_query_get(query, "bucket", &bucket);
	if (r == -EBADMSG || (r == 0 && (parse_u64(bucket, &b) < 0 || b < 1 || b > 86400))) {
		httpd_reply_error(c, 400, "bad_request", "bucket: 1..86400 seconds");
		return;
	}
	struct vm_job *j = calloc(1, sizeof(*j));
	if (!j) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	j->stats = 1;
	j->bucket_s = (unsigned)b;
	vm_job_start(a, c, vm, j);
}

void uiapi_vm_activity(struct api *a, struct httpd_conn *c, struct vm *vm, const char *query)
{
	_cleanup_free_ char *kind = NULL, *q = NULL, *dec = NULL, *off = NULL, *lim = NULL,
			    *bef = NULL, *aft = NULL;
	uint64_t o = 0, l = 50, cur = 0;
	int kr = http_query_get(query, "kind", &kind);
	int k = kr == 0 ? ledger_kind_from_name(kind) : -1;
	if (k < 0 || k == LEDGER_DROPPED) {
		httpd_reply_error(c, 400, "bad_request",
				  "kind: exec, net, dns, model_call, tool_call, policy or fs");
		return;
	}
	int br = http_query_get(query, "before", &bef), ar = http_query_get(query, "after", &aft);
	if (http_query_get(query, "q", &q) == -EBADMSG ||
	    http_query_get(query, "decision", &dec) == -EBADMSG || br == -EBADMSG ||
	    ar == -EBADMSG || (dec && strcmp(dec, "allow") != 0 && strcmp(dec, "block") != 0) ||
	    (http_query_get(query, "offset", &off) == 0 &&
	     (parse_u64(off, &o) < 0 || o > 100000000)) ||
	    (http_query_get(query, "limit", &lim) == 0 &&
	     (parse_u64(lim, &l) < 0 || l < 1 || l > 1000)) ||
	    (q && strlen(q) > 256) || (bef && aft) || ((bef || aft) && o) ||
	    (bef && (parse_u64(bef, &cur) < 0 || cur < 1 || cur > INT64_MAX)) ||
	    (aft && (parse_u64(aft, &cur) < 0 || cur >= INT64_MAX))) {
		httpd_reply_error(
			c, 400, "bad_request",
			"q: up to 256 bytes; decision: allow or block; before: a row id "
			"(older rows), or after: a row id (newer rows), or offset: a number; "
			"limit: 1..1000");
		return;
	}
	struct vm_job *j = calloc(1, sizeof(*j));
	if (!j) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	j->page.kind = (enum ledger_kind)k;
	j->page.from = bef ? LEDGER_PAGE_BEFORE : aft ? LEDGER_PAGE_AFTER : LEDGER_PAGE_NEWEST;
	j->page.cursor = (int64_t)cur;
	j->page.offset = (unsigned)o;
	j->page.limit = (unsigned)l;
	j->filter = TAKE_PTR(q);
	j->decision = TAKE_PTR(dec);
	vm_job_start(a, c, vm, j);
}

/* ---- the workspace tree ---- */

#define TREE_MAX_ENTRIES 5000

struct tree_job {
	uv_work_t w;
	struct httpd_conn *c;
	char *root;
	json_t *entries;
	int truncated;
	int r;
};

static int tree_cb(const struct wst_entry *e, void *ud)
{
	struct tree_job *j = ud;
	if (json_array_size(j->entries) >= TREE_MAX_ENTRIES) {
		j->truncated = 1;
		return -ENOSPC;
	}
	const char *type = S_ISDIR(e->st.st_mode)   ? "dir"
			   : S_ISREG(e->st.st_mode) ? "file"
			   : S_ISLNK(e->st.st_mode) ? "symlink"
						    : "other";
	json_array_append_new(j->entries, json_pack("{s:s, s:s, s:I, s:I}", "path", e->path, "type",
						    type, "size", (json_int_t)e->st.st_size,
						    "mtime", (json_int_t)e->st.st_mtim.tv_sec));
	/* skip the bulky directories agents leave around */
	if (S_ISDIR(e->st.st_mode) &&
	    (!strcmp(e->name, ".git") || !strcmp(e->name, "node_modules")))
		return WST_SKIP;
	return 0;
}

static void tree_work(uv_work_t *w)
{
	struct tree_job *j = w->data;
	int fd = open(j->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		j->r = -errno;
		return;
	}
	j->r = wst_walk(fd, "", tree_cb, j);
	if (j->r == -ENOSPC)
		j->r = 0;
	close(fd);
}

static void tree_done(uv_work_t *w, int st)
{
	struct tree_job *j = w->data;
	if (j->r < 0)
		httpd_reply_error(j->c, j->r == -ENOENT ? 404 : 500,
				  j->r == -ENOENT ? "not_found" : "internal",
				  "cannot read the workspace: %s", strerror(-j->r));
	else
		httpd_reply_json(j->c, 200,
				 json_pack("{s:s, s:o, s:b}", "guest_root", "/root/workspace",
					   "entries", TAKE_PTR(j->entries), "truncated",
					   j->truncated));
	json_decref(j->entries);
	free(j->root);
	free(j);
}

void uiapi_vm_tree(struct api *a, struct httpd_conn *c, struct vm *vm)
{
	_cleanup_json_ json_t *vj = vm_to_json(vm); /* the workspace as the API shows it */
	const char *root = json_string_value(json_object_get(vj, "workspace"));
	struct tree_job *j = calloc(1, sizeof(*j));
	if (!j || !root || !(j->root = strdup(root)) || !(j->entries = json_array())) {
		if (j) {
			free(j->root);
			free(j);
		}
		httpd_reply_error(c, root ? 500 : 404, root ? "internal" : "not_found",
				  root ? "out of memory" : "this VM has no workspace");
		return;
	}
	j->c = c;
	j->w.data = j;
	if (uv_queue_work(a->loop, &j->w, tree_work, tree_done) < 0) {
		json_decref(j->entries);
		free(j->root);
		free(j);
		httpd_reply_error(c, 500, "internal", "cannot queue the walk");
	}
}

/* ---- settings ---- */

void uiapi_settings(struct api *a, struct httpd_conn *c)
{
	/* which provider keys the VMs' egress would find in the daemon's environment; never a
	 * value (docs/POLICY.md "Credentials") */
	static const char *const keys[][2] = {
		{ "anthropic", "ANTHROPIC_API_KEY" },
		{ "openai", "OPENAI_API_KEY" },
		{ "google", "GEMINI_API_KEY" },
	};
	json_t *prov = json_array();
	for (size_t i = 0; prov && i < ELEMENTSOF(keys); i++) {
		const char *v = getenv(keys[i][1]);
		json_array_append_new(prov, json_pack("{s:s, s:s, s:b}", "provider", keys[i][0],
						      "env", keys[i][1], "configured", v && *v));
	}
	/* the periodic update check: its setting and what it last found */
	struct updcheck_settings us;
	char err[512] = "";
	const char *home = vmctl_home(a->vms);
	int ur = updcheck_settings(home, &us, err, sizeof(err));
	const char *url = ur == 0 && us.channel[0] ? us.channel : release_channel_url();
	json_t *upd = json_pack("{s:s, s:s?, s:s?, s:o}", "check",
				ur < 0			  ? "invalid"
				: us.period_s == 0	  ? "off"
				: us.period_s > 24 * 3600 ? "weekly"
							  : "daily",
				"channel", url, "error", ur < 0 ? err : NULL, "last",
				updcheck_last(home) ?: json_null());
	json_t *o = json_pack("{s:s, s:i, s:o, s:s, s:s, s:o}", "version", CAPSEM_VERSION, "api", 1,
			      "providers", prov, "images_dir", vmctl_images_dir(a->vms),
			      "sessions_dir", vmctl_sessions_dir(a->vms), "update", upd);
	httpd_reply_json(c, o ? 200 : 500, o);
}

/* ---- the gateway ---- */

struct gw_wait {
	struct list_link link;
	struct httpd_conn *c;
};

static struct {
	struct api *a;
	uv_process_t *proc;
	uv_pipe_t *ctl; /* our end of the socketpair */
	uv_timer_t restart;
	unsigned port; /* > 0 once it listens */
	int want_port; /* what to ask for */
	uint64_t backoff_ms;
	struct list_link waits;
	char line[16];
	size_t line_len;
	int started; /* the supervisor is on */
} gw;

static void gw_start(void);

static void gw_answer(int ok, const char *why)
{
	while (!list_empty(&gw.waits)) {
		struct gw_wait *w = list_entry(gw.waits.next, struct gw_wait, link);
		list_del(&w->link);
		if (ok)
			httpd_reply_json(w->c, 200, json_pack("{s:i}", "port", gw.port));
		else
			httpd_reply_error(w->c, 503, "gateway_failed", "capsem-gateway: %s", why);
		free(w);
	}
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	if (nread <= 0) {
		free(b->base);
		if (nread < 0)
			uv_read_stop(s);
		return;
	}
	for (ssize_t i = 0; i < nread && !gw.port; i++) {
		char ch = b->base[i];
		if (ch == '\n') {
			gw.line[gw.line_len] = 0;
			uint32_t p;
			if (parse_u32(gw.line, &p) == 0 && p > 0 && p < 65536) {
				gw.port = p;
				gw.backoff_ms = 1000;
				log_info("capsem-gateway listens on http://127.0.0.1:%u/", p);
				gw_answer(1, NULL);
			}
		} else if (gw.line_len + 1 < sizeof(gw.line)) {
			gw.line[gw.line_len++] = ch;
		}
	}
	free(b->base);
}

static void ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	b->base = malloc(64);
	b->len = b->base ? 64 : 0;
}

static void on_restart(uv_timer_t *t)
{
	gw_start();
}

static void on_gw_exit(uv_process_t *p, int64_t status, int sig)
{
	if (sig == SIGSYS) {
		/* its seccomp filter (or capsemd's) killed it: which syscall, where readable */
		char how[256];
		scf_describe_sigsys(p->pid, how, sizeof(how));
		log_warn("capsem-gateway (pid %d) %s", p->pid, how);
	} else {
		log_warn("capsem-gateway exited (status %lld, signal %d)", (long long)status, sig);
	}
	uv_close((uv_handle_t *)p, handle_free);
	gw.proc = NULL;
	if (gw.ctl) {
		uv_close((uv_handle_t *)gw.ctl, handle_free);
		gw.ctl = NULL;
	}
	gw.port = 0;
	gw_answer(0, status == 3 ? "another gateway serves this home" : "it exited at start");
	uv_timer_start(&gw.restart, on_restart, gw.backoff_ms, 0);
	gw.backoff_ms = MIN(gw.backoff_ms * 2, (uint64_t)GW_BACKOFF_MAX_MS);
}

static void gw_start(void)
{
	if (gw.proc)
		return;
	_cleanup_free_ char *bin =
		find_helper_binary("capsem-gateway", "CAPSEM_GATEWAY_BIN", "webgw");
	if (!bin) {
		gw_answer(0, "the capsem-gateway binary is not installed");
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		gw_answer(0, "socketpair failed");
		return;
	}
	char port[16];
	snprintf(port, sizeof(port), "%d", gw.want_port);
	char *argv[] = { bin, "--port", port, "--parent-fd", "3", NULL };
	uv_stdio_container_t stdio[4] = {
		{ .flags = UV_IGNORE },
		{ .flags = UV_INHERIT_FD, .data.fd = 1 },
		{ .flags = UV_INHERIT_FD, .data.fd = 2 },
		{ .flags = UV_INHERIT_FD, .data.fd = sv[1] },
	};
	uv_process_options_t o = {
		.file = bin, .args = argv, .exit_cb = on_gw_exit, .stdio = stdio, .stdio_count = 4
	};
	gw.proc = calloc(1, sizeof(*gw.proc));
	gw.ctl = calloc(1, sizeof(*gw.ctl));
	int r = gw.proc && gw.ctl ? uv_spawn(gw.a->loop, gw.proc, &o) : -ENOMEM;
	close(sv[1]);
	if (r < 0) {
		free(gw.proc);
		free(gw.ctl);
		gw.proc = NULL;
		gw.ctl = NULL;
		close(sv[0]);
		log_warn("cannot start %s: %s", bin, strerror(-r));
		gw_answer(0, "cannot start it");
		return;
	}
	gw.line_len = 0;
	uv_pipe_init(gw.a->loop, gw.ctl, 0);
	uv_pipe_open(gw.ctl, sv[0]);
	uv_read_start((uv_stream_t *)gw.ctl, ctl_alloc, on_ctl_read);
	log_info("started capsem-gateway (pid %d)", gw.proc->pid);
}

void uiapi_gateway(struct api *a, struct httpd_conn *c)
{
	if (gw.port) {
		httpd_reply_json(c, 200, json_pack("{s:i}", "port", gw.port));
		return;
	}
	struct gw_wait *w = calloc(1, sizeof(*w));
	if (!w) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	w->c = c;
	list_add_tail(&gw.waits, &w->link);
	gw.started = 1;
	uv_timer_stop(&gw.restart);
	gw_start();
}

int uiapi_init(struct api *a, int gateway_port)
{
	list_init(&status_waits);
	list_init(&gw.waits);
	vmctl_on_change(a->vms, on_change, a);
	gw.a = a;
	gw.backoff_ms = 1000;
	uv_timer_init(a->loop, &gw.restart);
	uv_unref((uv_handle_t *)&gw.restart);
	const char *e = getenv("CAPSEM_GATEWAY_PORT");
	uint32_t p = 19222;
	if (e && *e && (parse_u32(e, &p) < 0 || p > 65535))
		p = 19222;
	gw.want_port = gateway_port >= 0 ? gateway_port : (int)p;
	if (gateway_port >= 0) {
		gw.started = 1;
		gw_start();
	}
	return 0;
}
