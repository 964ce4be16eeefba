/* ledger.c - the session ledger's writer: validation, a bounded queue, one writer thread.
 *
 * Producers (the proxy, DNS, the control socket's ledger command; any thread) turn an event into
 * a `struct lev`: one allocation holding typed column values and copies of the strings, checked
 * against the column tables of cols.c (types, ranges, allowed values, caps). The event joins a
 * FIFO under a mutex; when the FIFO holds LEDGER_QUEUE_MAX events (or LEDGER_QUEUE_BYTES) the
 * event is counted as dropped instead, so no producer ever waits for the disk.
 *
 * The writer thread (signals blocked) owns the SQLite connection. It sleeps until an event
 * arrives, then waits up to batch_ms for more (or until batch_max are queued, a flush is asked
 * for, or the ledger closes), takes up to batch_max events and inserts them with prepared
 * statements in one transaction, followed by a `dropped` row when events were lost since the
 * last batch. Ids are assigned here, in order, from one sequence shared by every event table.
 * If a transaction fails the batch is retried one event per transaction, so one bad row does
 * not lose the others; the ones that still fail are counted as lost (reason write_error).
 *
 * Only one writer per file: ledger_open() takes flock(LOCK_EX) on the database file for the
 * ledger's lifetime (-EBUSY otherwise). That descriptor is closed only after SQLite's, because
 * closing any descriptor of a file drops the process's POSIX locks on it, which SQLite uses.
 *
 * Trust: events come from our own supervisor, but their strings are guest-controlled (host
 * names, paths, argv); they are bounded and cleaned to UTF-8 before they are stored, and SQL
 * only ever sees them as bound parameters.
 */
#include "ledger.h"

#include <assert.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "buf.h"
#include "cols.h"
#include "config.h"
#include "fdutil.h"
#include "macro.h"
#include "utf8.h"

extern const char ledger_schema_sql[];

#define KIND_SESSION LEDGER_KIND_MAX /* internal: an update of the session row */
#define BUSY_TIMEOUT_MS 5000

/* ---- kinds ---- */

const char *ledger_kind_name(enum ledger_kind k)
{
	const struct kind_desc *kd = cols_kind(k);
	return kd ? kd->name : "unknown";
}

int ledger_kind_from_name(const char *s)
{
	if (streq(s, "model"))
		return LEDGER_MODEL_CALL;
	if (streq(s, "tool"))
		return LEDGER_TOOL_CALL;
	for (int k = 0; k < LEDGER_KIND_MAX; k++)
		if (streq(s, cols_kind(k)->name))
			return k;
	return -EINVAL;
}

int ledger_kinds_parse(const char *list, unsigned *ret_mask)
{
	unsigned m = 0;
	char one[32];
	if (!*list || streq(list, "all")) {
		*ret_mask = LEDGER_KINDS_ALL;
		return 0;
	}
	for (const char *p = list;;) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n == 0 || n >= sizeof(one))
			return -EINVAL;
		memcpy(one, p, n);
		one[n] = 0;
		int k = ledger_kind_from_name(one);
		if (k < 0)
			return -EINVAL;
		m |= 1u << k;
		if (!e)
			break;
		p = e + 1;
	}
	*ret_mask = m;
	return 0;
}

int64_t ledger_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- text ---- */

/* A copy of s with at most cap bytes, cut at a character boundary, invalid bytes as '?'. NULL
 * on ENOMEM. */
static char *text_clean(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap + 4);
	char *out = malloc(MIN(n, cap) + 1);
	size_t o = 0;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(s + i, n - i);
		if (o + (k ? k : 1) > cap)
			break;
		if (k == 0) {
			out[o++] = '?';
			i++;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
	}
	out[o] = 0;
	return out;
}

/* v (NULL-terminated) as a compact JSON array of strings of at most cap bytes. The strings are
 * cleaned; what does not fit is left out (the first one that does not is shortened) and
 * *truncated is set. NULL on ENOMEM. */
static char *strv_json(char *const *v, size_t cap, int *truncated)
{
	json_t *arr = json_array();
	size_t used = 2, n = 0;
	if (!arr)
		return NULL;
	for (; v[n]; n++) {
		size_t sep = json_array_size(arr) ? 1 : 0;
		if (n >= LEDGER_ARGC_MAX) {
			*truncated = 1;
			break;
		}
		_cleanup_free_ char *c = text_clean(v[n], cap);
		json_t *js = c ? json_string(c) : NULL;
		char *enc = js ? json_dumps(js, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
		if (!enc) {
			json_decref(js);
			json_decref(arr);
			return NULL;
		}
		size_t need = strlen(enc) + sep;
		free(enc);
		if (used + need > cap || strlen(c) != strlen(v[n])) {
			/* shorten this one to what surely fits (an escape is at most 6 bytes) */
			json_decref(js);
			*truncated = 1;
			size_t room = cap > used + sep + 2 ? (cap - used - sep - 2) / 6 : 0;
			if (used + need > cap) {
				if (room > 0) {
					_cleanup_free_ char *part = text_clean(v[n], room);
					if (!part ||
					    json_array_append_new(arr, json_string(part)) < 0) {
						json_decref(arr);
						return NULL;
					}
				}
				break;
			}
			js = json_string(c);
		}
		if (json_array_append_new(arr, js) < 0) {
			json_decref(arr);
			return NULL;
		}
		used += need;
	}
	char *s = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return s;
}

/* ---- events ---- */

struct lval {
	int64_t i;
	double d;
	const char *s;
	int set;
};

struct lev {
	struct lev *next;
	int kind; /* enum ledger_kind or KIND_SESSION */
	size_t size;
	struct lval v[LEDGER_MAX_COLS];
	char data[];
};

static const struct col c_session[] = {
	{ "vm_id", COL_TEXT, 0, 64, NULL },
	{ "vm_name", COL_TEXT, 0, 64, NULL },
	{ "image", COL_TEXT, 0, 64, NULL },
	{ "boot", COL_INT, 0, 1000000, NULL },
};
static const struct kind_desc session_desc = { "session", c_session, ELEMENTSOF(c_session) };

struct builder {
	int kind;
	const struct kind_desc *kd;
	struct lval v[LEDGER_MAX_COLS];
	char *owned[LEDGER_MAX_COLS];
	int err;
};

static void b_init(struct builder *b, int kind)
{
	*b = (struct builder){ .kind = kind };
	b->kd = kind == KIND_SESSION ? &session_desc : cols_kind(kind);
}

static void b_done(struct builder *b)
{
	for (size_t i = 0; i < LEDGER_MAX_COLS; i++)
		free(b->owned[i]);
	*b = (struct builder){ 0 };
}

static int b_col(struct builder *b, const char *name, enum col_type t)
{
	int i = cols_find(b->kd, name);
	assert(i >= 0 && b->kd->cols[i].type == t);
	return i;
}

static void b_int(struct builder *b, const char *name, int64_t x)
{
	int i = b_col(b, name, COL_INT);
	if (x < 0)
		return;
	if (x > b->kd->cols[i].max) {
		b->err = -EINVAL;
		return;
	}
	b->v[i] = (struct lval){ .i = x, .set = 1 };
}

static void b_bool(struct builder *b, const char *name, int x)
{
	int i = b_col(b, name, COL_BOOL);
	b->v[i] = (struct lval){ .i = !!x, .set = 1 };
}

static void b_real(struct builder *b, const char *name, double x)
{
	int i = b_col(b, name, COL_REAL);
	if (isfinite(x) && x >= 0)
		b->v[i] = (struct lval){ .d = x, .set = 1 };
}

static void b_take(struct builder *b, int i, char *s)
{
	free(b->owned[i]);
	b->owned[i] = s;
	b->v[i] = (struct lval){ .s = s, .set = 1 };
}

/* Text truncated to cap (0: the column's cap). */
static void b_text_cap(struct builder *b, const char *name, const char *s, size_t cap)
{
	int i = b_col(b, name, COL_TEXT);
	const struct col *c = &b->kd->cols[i];
	if (!s)
		return;
	char *t = text_clean(s, cap ? MIN(cap, (size_t)c->max) : (size_t)c->max);
	if (!t) {
		b->err = -ENOMEM;
		return;
	}
	if (!cols_value_allowed(c, t)) {
		free(t);
		b->err = -EINVAL;
		return;
	}
	b_take(b, i, t);
}

static void b_text(struct builder *b, const char *name, const char *s)
{
	b_text_cap(b, name, s, 0);
}

static void b_strv(struct builder *b, const char *name, char *const *v, size_t cap, int *truncated)
{
	int i = b_col(b, name, COL_JSON);
	if (!v)
		return;
	char *t = strv_json(v,
			    cap ? MIN(cap, (size_t)b->kd->cols[i].max) : (size_t)b->kd->cols[i].max,
			    truncated);
	if (!t) {
		b->err = -ENOMEM;
		return;
	}
	b_take(b, i, t);
}

/* Check the required columns, fill defaults, pack everything into one allocation. */
static int b_finish(struct builder *b, struct lev **ret)
{
	size_t extra = 0;
	if (b->err)
		return b->err;
	if (b->kind != KIND_SESSION && !b->v[0].set)
		b->v[0] = (struct lval){ .i = ledger_now_ms(), .set = 1 };
	for (size_t i = 0; i < b->kd->n_cols; i++) {
		const struct col *c = &b->kd->cols[i];
		if (!b->v[i].set && (c->flags & COL_REQUIRED))
			return -EINVAL;
		if (!b->v[i].set && c->type == COL_BOOL)
			b->v[i] = (struct lval){ .i = 0, .set = 1 };
		if (b->v[i].set && b->v[i].s)
			extra += strlen(b->v[i].s) + 1;
	}
	struct lev *e = malloc(sizeof(*e) + extra);
	if (!e)
		return -ENOMEM;
	*e = (struct lev){ .kind = b->kind, .size = sizeof(*e) + extra };
	char *p = e->data;
	for (size_t i = 0; i < b->kd->n_cols; i++) {
		e->v[i] = b->v[i];
		if (b->v[i].set && b->v[i].s) {
			size_t n = strlen(b->v[i].s) + 1;
			memcpy(p, b->v[i].s, n);
			e->v[i].s = p;
			p += n;
		}
	}
	*ret = e;
	return 0;
}

/* ---- events from C ---- */

static void exec_fill(struct builder *b, const struct ledger_exec *ev)
{
	int trunc = !!ev->argv_truncated;
	b_init(b, LEDGER_EXEC);
	b_int(b, "ts", ev->ts);
	b_int(b, "ts_end", ev->ts_end);
	b_text(b, "exec_id", ev->exec_id);
	b_text(b, "via", ev->via);
	b_strv(b, "argv", ev->argv, 0, &trunc);
	b_bool(b, "shell", ev->shell);
	b_text(b, "cwd", ev->cwd);
	b_bool(b, "tty", ev->tty);
	b_int(b, "pid", ev->pid);
	b_int(b, "exit_code", ev->exit_code);
	b_int(b, "signal", ev->signal);
	b_bool(b, "timed_out", ev->timed_out);
	b_int(b, "duration_ms", ev->duration_ms);
	b_int(b, "cpu_user_ms", ev->cpu_user_ms);
	b_int(b, "cpu_sys_ms", ev->cpu_sys_ms);
	b_int(b, "maxrss_kb", ev->maxrss_kb);
	b_int(b, "stdin_bytes", ev->stdin_bytes);
	b_int(b, "stdout_bytes", ev->stdout_bytes);
	b_int(b, "stderr_bytes", ev->stderr_bytes);
	b_text(b, "error", ev->error);
	b_bool(b, "argv_truncated", trunc);
}

static int submit(struct ledger *l, struct builder *b);

int ledger_exec(struct ledger *l, const struct ledger_exec *ev)
{
	struct builder b;
	exec_fill(&b, ev);
	return submit(l, &b);
}

int ledger_net(struct ledger *l, const struct ledger_net *ev)
{
	struct builder b;
	b_init(&b, LEDGER_NET);
	b_int(&b, "ts", ev->ts);
	b_int(&b, "duration_ms", ev->duration_ms);
	b_text(&b, "request_id", ev->request_id);
	b_int(&b, "pid", ev->pid);
	b_text(&b, "comm", ev->comm);
	b_text(&b, "dst_ip", ev->dst_ip);
	b_int(&b, "dst_port", ev->dst_port);
	b_text(&b, "host", ev->host);
	b_text(&b, "scheme", ev->scheme);
	b_text(&b, "method", ev->method);
	b_text(&b, "path", ev->path);
	b_int(&b, "status", ev->status);
	b_int(&b, "bytes_up", ev->bytes_up);
	b_int(&b, "bytes_down", ev->bytes_down);
	b_text(&b, "decision", ev->decision);
	b_text(&b, "rule", ev->rule);
	b_text(&b, "error", ev->error);
	return submit(l, &b);
}

int ledger_dns(struct ledger *l, const struct ledger_dns *ev)
{
	struct builder b;
	b_init(&b, LEDGER_DNS);
	b_int(&b, "ts", ev->ts);
	b_text(&b, "qname", ev->qname);
	b_text(&b, "qtype", ev->qtype);
	b_int(&b, "rcode", ev->rcode);
	b_text(&b, "answer", ev->answer);
	b_text(&b, "decision", ev->decision);
	b_text(&b, "rule", ev->rule);
	return submit(l, &b);
}

int ledger_model_call(struct ledger *l, const struct ledger_model_call *ev)
{
	struct builder b;
	int trunc = 0;
	b_init(&b, LEDGER_MODEL_CALL);
	b_int(&b, "ts", ev->ts);
	b_int(&b, "duration_ms", ev->duration_ms);
	b_int(&b, "ttfb_ms", ev->ttfb_ms);
	b_text(&b, "request_id", ev->request_id);
	b_text(&b, "provider", ev->provider);
	b_text(&b, "model", ev->model);
	b_int(&b, "input_tokens", ev->input_tokens);
	b_int(&b, "output_tokens", ev->output_tokens);
	b_int(&b, "cache_read_tokens", ev->cache_read_tokens);
	b_int(&b, "cache_write_tokens", ev->cache_write_tokens);
	b_int(&b, "tool_calls", ev->tool_calls);
	b_strv(&b, "tool_names", ev->tool_names, 0, &trunc);
	b_text(&b, "stop_reason", ev->stop_reason);
	b_bool(&b, "streamed", ev->streamed);
	b_real(&b, "cost_usd", ev->cost_usd);
	return submit(l, &b);
}

int ledger_tool_call(struct ledger *l, const struct ledger_tool_call *ev)
{
	struct builder b;
	b_init(&b, LEDGER_TOOL_CALL);
	b_int(&b, "ts", ev->ts);
	b_int(&b, "duration_ms", ev->duration_ms);
	b_text(&b, "server", ev->server);
	b_text(&b, "tool", ev->tool);
	b_int(&b, "args_bytes", ev->args_bytes);
	b_int(&b, "result_bytes", ev->result_bytes);
	b_text(&b, "decision", ev->decision);
	b_text(&b, "rule", ev->rule);
	b_text(&b, "error", ev->error);
	return submit(l, &b);
}

int ledger_policy(struct ledger *l, const struct ledger_policy *ev)
{
	struct builder b;
	b_init(&b, LEDGER_POLICY);
	b_int(&b, "ts", ev->ts);
	b_text(&b, "boundary", ev->boundary);
	b_text(&b, "subject", ev->subject);
	b_text(&b, "action", ev->action);
	b_text(&b, "rule", ev->rule);
	b_text(&b, "layer", ev->layer);
	b_text(&b, "request_id", ev->request_id);
	return submit(l, &b);
}

int ledger_session_update(struct ledger *l, const struct ledger_session *s)
{
	struct builder b;
	b_init(&b, KIND_SESSION);
	b_text(&b, "vm_id", s->vm_id);
	b_text(&b, "vm_name", s->vm_name);
	b_text(&b, "image", s->image);
	b_int(&b, "boot", s->boot);
	return submit(l, &b);
}

/* ---- events from JSON ---- */

static int b_from_json(struct builder *b, const json_t *ev)
{
	const char *k;
	json_t *v;
	if (!json_is_object(ev))
		return -EINVAL;
	json_t *jk = json_object_get(ev, "kind");
	const char *kind = json_string_value(jk);
	if (!kind || strlen(kind) != json_string_length(jk))
		return -EINVAL;
	if (streq(kind, "session")) {
		b_init(b, KIND_SESSION);
	} else {
		int kk = ledger_kind_from_name(kind);
		if (kk < 0 || kk == LEDGER_DROPPED || !streq(kind, cols_kind(kk)->name))
			return -EINVAL;
		b_init(b, kk);
	}
	json_object_foreach((json_t *)ev, k, v)
	{
		if (streq(k, "kind"))
			continue;
		int i = cols_find(b->kd, k);
		if (i < 0)
			return -EINVAL;
		const struct col *c = &b->kd->cols[i];
		if (json_is_null(v))
			continue;
		switch (c->type) {
		case COL_INT: {
			json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
			if (x < 0 || x > c->max)
				return -EINVAL;
			b->v[i] = (struct lval){ .i = x, .set = 1 };
			break;
		}
		case COL_BOOL:
			if (!json_is_boolean(v))
				return -EINVAL;
			b->v[i] = (struct lval){ .i = json_is_true(v), .set = 1 };
			break;
		case COL_REAL: {
			double d = json_is_number(v) ? json_number_value(v) : -1;
			if (!isfinite(d) || d < 0)
				return -EINVAL;
			b->v[i] = (struct lval){ .d = d, .set = 1 };
			break;
		}
		case COL_TEXT: {
			if (!json_is_string(v) ||
			    strlen(json_string_value(v)) != json_string_length(v))
				return -EINVAL;
			if (json_string_length(v) > (size_t)c->max)
				return -EMSGSIZE;
			if (!cols_value_allowed(c, json_string_value(v)))
				return -EINVAL;
			char *s = strdup(json_string_value(v));
			if (!s)
				return -ENOMEM;
			b_take(b, i, s);
			break;
		}
		case COL_JSON: {
			size_t j;
			json_t *e;
			if (!json_is_array(v))
				return -EINVAL;
			if (json_array_size(v) > LEDGER_ARGC_MAX)
				return -EMSGSIZE;
			json_array_foreach(v, j, e)
			{
				if (!json_is_string(e) ||
				    strlen(json_string_value(e)) != json_string_length(e))
					return -EINVAL;
			}
			char *s = json_dumps(v, JSON_COMPACT);
			if (!s)
				return -ENOMEM;
			if (strlen(s) > (size_t)c->max) {
				free(s);
				return -EMSGSIZE;
			}
			b_take(b, i, s);
			break;
		}
		}
	}
	return 0;
}

int ledger_check_json(const json_t *ev)
{
	struct builder b;
	struct lev *e = NULL;
	b_init(&b, LEDGER_EXEC);
	int r = b_from_json(&b, ev);
	if (r == 0)
		r = b_finish(&b, &e);
	b_done(&b);
	free(e);
	return r;
}

int ledger_record_json(struct ledger *l, const json_t *ev)
{
	struct builder b;
	b_init(&b, LEDGER_EXEC);
	int r = b_from_json(&b, ev);
	if (r < 0) {
		b_done(&b);
		return r;
	}
	return submit(l, &b);
}

/* ---- control-socket lines ---- */

static int line_of(json_t *event, size_t max, char **ret, size_t *ret_len)
{
	json_t *cmd = json_pack("{s:s, s:O}", "cmd", "ledger", "event", event);
	char *s = cmd ? json_dumps(cmd, JSON_COMPACT) : NULL;
	json_decref(cmd);
	if (!s)
		return -ENOMEM;
	size_t n = strlen(s);
	if (n + 1 > max) {
		free(s);
		return -EMSGSIZE;
	}
	char *t = realloc(s, n + 2);
	if (!t) {
		free(s);
		return -ENOMEM;
	}
	t[n] = '\n';
	t[n + 1] = 0;
	*ret = t;
	*ret_len = n + 1;
	return 0;
}

int ledger_event_line(const json_t *ev, size_t max, char **ret, size_t *ret_len)
{
	return line_of((json_t *)ev, max, ret, ret_len);
}

/* ---- the ledger ---- */

struct ledger {
	sqlite3 *db;
	int lock_fd;
	pthread_t thread;
	int thread_started;

	pthread_mutex_t mu;
	pthread_cond_t cv;	/* the writer waits for work */
	pthread_cond_t done_cv; /* flushers wait for the writer */
	struct lev *head, **tail;
	size_t qn, qbytes;
	unsigned queue_max, batch_max, batch_ms;
	uint64_t enq_seq, done_seq;
	uint64_t drop_full; /* dropped while the queue was full, not yet recorded */
	int flushing;
	int closing;
	struct ledger_stats st;

	/* the writer thread's own */
	sqlite3_stmt *ins[LEDGER_KIND_MAX];
	sqlite3_stmt *upd_session, *end_session;
	int64_t session_row;
	int64_t next_id;
	uint64_t lost_full, lost_err; /* to record in a dropped row */
};

static int sql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int exec_sql(sqlite3 *db, const char *sql)
{
	return sql_errno(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

static int submit(struct ledger *l, struct builder *b)
{
	struct lev *e = NULL;
	int r = b_finish(b, &e);
	b_done(b);
	if (r < 0)
		return r;
	pthread_mutex_lock(&l->mu);
	if (l->closing) {
		pthread_mutex_unlock(&l->mu);
		free(e);
		return -ESHUTDOWN;
	}
	if (l->qn >= l->queue_max || l->qbytes + e->size > LEDGER_QUEUE_BYTES) {
		l->drop_full++;
		l->st.dropped++;
		pthread_mutex_unlock(&l->mu);
		free(e);
		return -ENOBUFS;
	}
	*l->tail = e;
	l->tail = &e->next;
	l->qn++;
	l->qbytes += e->size;
	l->enq_seq++;
	l->st.queued++;
	if (l->qn == 1 || l->qn >= MIN(l->batch_max, l->queue_max))
		pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

/* ---- the writer thread ---- */

static int insert_event(struct ledger *l, const struct lev *e)
{
	sqlite3_stmt *st;
	const struct kind_desc *kd;
	int base;
	if (e->kind == KIND_SESSION) {
		st = l->upd_session;
		kd = &session_desc;
		base = 1;
	} else {
		st = l->ins[e->kind];
		kd = cols_kind(e->kind);
		base = 2;
		sqlite3_bind_int64(st, 1, l->next_id);
	}
	for (size_t i = 0; i < kd->n_cols; i++) {
		const struct lval *v = &e->v[i];
		int p = base + (int)i;
		if (!v->set)
			sqlite3_bind_null(st, p);
		else if (kd->cols[i].type == COL_TEXT || kd->cols[i].type == COL_JSON)
			sqlite3_bind_text(st, p, v->s, -1, SQLITE_STATIC);
		else if (kd->cols[i].type == COL_REAL)
			sqlite3_bind_double(st, p, v->d);
		else
			sqlite3_bind_int64(st, p, v->i);
	}
	if (e->kind == KIND_SESSION)
		sqlite3_bind_int64(st, base + (int)kd->n_cols, l->session_row);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return sql_errno(rc) ? sql_errno(rc) : -EIO;
	if (e->kind != KIND_SESSION)
		l->next_id++;
	return 0;
}

static int insert_dropped(struct ledger *l, uint64_t count, const char *reason)
{
	sqlite3_stmt *st = l->ins[LEDGER_DROPPED];
	sqlite3_bind_int64(st, 1, l->next_id);
	sqlite3_bind_int64(st, 2, ledger_now_ms());
	sqlite3_bind_int64(st, 3, (int64_t)MIN(count, (uint64_t)INT64_MAX));
	sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return sql_errno(rc) ? sql_errno(rc) : -EIO;
	l->next_id++;
	return 0;
}

/* The dropped rows owed, inside the current transaction. */
static int insert_losses(struct ledger *l)
{
	int r = 0;
	if (l->lost_full)
		r = insert_dropped(l, l->lost_full, "queue_full");
	if (r == 0 && l->lost_err)
		r = insert_dropped(l, l->lost_err, "write_error");
	return r;
}

static int is_event(const struct lev *e)
{
	return e->kind != KIND_SESSION;
}

/* Write one batch; returns the number of events written, adds the failures to *ret_failed. */
static size_t write_batch(struct ledger *l, struct lev *list, uint64_t *ret_failed)
{
	int64_t id0 = l->next_id;
	size_t n = 0;
	int r = exec_sql(l->db, "BEGIN");
	for (struct lev *e = list; r == 0 && e; e = e->next) {
		r = insert_event(l, e);
		n += r == 0 && is_event(e);
	}
	if (r == 0)
		r = insert_losses(l);
	if (r == 0)
		r = exec_sql(l->db, "COMMIT");
	if (r == 0) {
		l->lost_full = l->lost_err = 0;
		return n;
	}
	exec_sql(l->db, "ROLLBACK");
	l->next_id = id0;
	/* one event per transaction: a bad row must not take the others with it */
	n = 0;
	for (struct lev *e = list; e; e = e->next) {
		int64_t id = l->next_id;
		r = exec_sql(l->db, "BEGIN");
		if (r == 0)
			r = insert_event(l, e);
		if (r == 0)
			r = exec_sql(l->db, "COMMIT");
		if (r == 0) {
			n += is_event(e);
			continue;
		}
		exec_sql(l->db, "ROLLBACK");
		l->next_id = id;
		if (is_event(e)) {
			l->lost_err++;
			(*ret_failed)++;
		}
	}
	int64_t id = l->next_id;
	if (exec_sql(l->db, "BEGIN") == 0 && insert_losses(l) == 0 &&
	    exec_sql(l->db, "COMMIT") == 0) {
		l->lost_full = l->lost_err = 0;
	} else {
		exec_sql(l->db, "ROLLBACK");
		l->next_id = id;
	}
	return n;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *writer_main(void *arg)
{
	struct ledger *l = arg;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->head && !l->drop_full && !l->closing && !l->flushing)
			pthread_cond_wait(&l->cv, &l->mu);
		if (!l->head && !l->drop_full && (l->closing || l->flushing)) {
			if (l->closing)
				break;
			/* a flush with nothing queued: already done */
			pthread_cond_broadcast(&l->done_cv);
			pthread_cond_wait(&l->cv, &l->mu);
			continue;
		}
		/* wait for a full batch, but not longer than batch_ms nor with a full queue */
		unsigned full = MIN(l->batch_max, l->queue_max);
		if (l->qn < full && !l->closing && !l->flushing) {
			struct timespec dl;
			deadline_after(&dl, l->batch_ms);
			while (l->qn < full && !l->closing && !l->flushing)
				if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) == ETIMEDOUT)
					break;
		}
		/* take a batch */
		struct lev *list = l->head, **last = &l->head;
		size_t n = 0;
		while (*last && n < l->batch_max) {
			l->qbytes -= (*last)->size;
			last = &(*last)->next;
			n++;
		}
		l->head = *last;
		*last = NULL;
		if (!l->head)
			l->tail = &l->head;
		l->qn -= n;
		l->lost_full += l->drop_full;
		l->drop_full = 0;
		pthread_mutex_unlock(&l->mu);

		uint64_t failed = 0;
		size_t written = write_batch(l, list, &failed);
		while (list) {
			struct lev *e = list;
			list = e->next;
			free(e);
		}

		pthread_mutex_lock(&l->mu);
		l->done_seq += n;
		l->st.written += written;
		l->st.write_errors += failed;
		l->st.dropped += failed;
		l->st.batches++;
		pthread_cond_broadcast(&l->done_cv);
	}
	pthread_mutex_unlock(&l->mu);

	/* the end of the session */
	sqlite3_bind_int64(l->end_session, 1, ledger_now_ms());
	sqlite3_bind_int64(l->end_session, 2, l->session_row);
	sqlite3_step(l->end_session);
	sqlite3_reset(l->end_session);
	return NULL;
}

/* ---- open / close ---- */

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);
	return rc == SQLITE_OK ? 0 : (sql_errno(rc) ? sql_errno(rc) : -EIO);
}

static int prepare_all(struct ledger *l)
{
	char sql[4096];
	for (int k = 0; k < LEDGER_KIND_MAX; k++) {
		const struct kind_desc *kd = cols_kind(k);
		size_t o = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO %s (id", kd->name);
		for (size_t i = 0; i < kd->n_cols && o < sizeof(sql); i++)
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, ", %s", kd->cols[i].name);
		if (o < sizeof(sql))
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, ") VALUES (?");
		for (size_t i = 0; i < kd->n_cols && o < sizeof(sql); i++)
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, ", ?");
		if (o < sizeof(sql))
			o += (size_t)snprintf(sql + o, sizeof(sql) - o, ")");
		/* an exec event for an exec_id already written completes that row: what it sets
		 * replaces, what it leaves unknown stays, flags only go up, and the row moves to
		 * the new id */
		if (k == LEDGER_EXEC && o < sizeof(sql))
			o += (size_t)snprintf(
				sql + o, sizeof(sql) - o,
				" ON CONFLICT (exec_id) DO UPDATE SET id = excluded.id");
		for (size_t i = 0; k == LEDGER_EXEC && i < kd->n_cols && o < sizeof(sql); i++) {
			const char *n = kd->cols[i].name;
			o += (size_t)snprintf(sql + o, sizeof(sql) - o,
					      kd->cols[i].type == COL_BOOL
						      ? ", %s = max(excluded.%s, %s)"
						      : ", %s = coalesce(excluded.%s, %s)",
					      n, n, n);
		}
		if (o >= sizeof(sql))
			return -ENAMETOOLONG;
		int r = prepare(l->db, sql, &l->ins[k]);
		if (r < 0)
			return r;
	}
	int r = prepare(l->db,
			"UPDATE session SET vm_id = coalesce(?1, vm_id), vm_name = coalesce(?2, "
			"vm_name), image = coalesce(?3, image), boot = coalesce(?4, boot) WHERE id "
			"= ?5",
			&l->upd_session);
	if (r == 0)
		r = prepare(l->db, "UPDATE session SET ended = ?1 WHERE id = ?2", &l->end_session);
	return r;
}

static int query_int(sqlite3 *db, const char *sql, int64_t *ret)
{
	sqlite3_stmt *st;
	int r = prepare(db, sql, &st);
	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else
		r = sql_errno(rc) ? sql_errno(rc) : -EIO;
	sqlite3_finalize(st);
	return r;
}

static int apply_schema(sqlite3 *db)
{
	int64_t v = 0;
	int r = query_int(db, "PRAGMA user_version", &v);
	if (r < 0)
		return r;
	if (v > LEDGER_SCHEMA_VERSION)
		return -EPROTONOSUPPORT;
	if (v == LEDGER_SCHEMA_VERSION)
		return 0;
	if (v == 1) { /* version 2: the index that completes an exec row, model_call.ttfb_ms */
		r = exec_sql(db, "BEGIN IMMEDIATE; CREATE UNIQUE INDEX IF NOT EXISTS "
				 "exec_by_exec_id ON exec (exec_id); ALTER TABLE model_call ADD "
				 "COLUMN ttfb_ms INTEGER; PRAGMA user_version = 2; COMMIT");
		if (r < 0)
			exec_sql(db, "ROLLBACK");
		return r;
	}
	if (v != 0)
		return -EBADMSG;
	/* a fresh file (or one that is not ours: then the CREATE fails) */
	r = exec_sql(db, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	r = exec_sql(db, ledger_schema_sql);
	if (r == 0) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", LEDGER_SCHEMA_VERSION);
		r = exec_sql(db, sql);
	}
	if (r == 0)
		r = exec_sql(db, "COMMIT");
	if (r < 0) {
		exec_sql(db, "ROLLBACK");
		return r == -EINVAL || r == -EIO ? -EBADMSG : r;
	}
	return 0;
}

/* vm id and boot from ".../<vm-id>-<boot>.db"; unset when the name is not of that form. */
static void session_from_path(const char *path, struct builder *b)
{
	const char *base = strrchr(path, '/');
	char id[65];
	base = base ? base + 1 : path;
	size_t n = strlen(base);
	if (n < 4 || !streq(base + n - 3, ".db"))
		return;
	const char *dash = memrchr(base, '-', n - 3);
	if (!dash || dash == base || (size_t)(dash - base) >= sizeof(id))
		return;
	int64_t boot = 0;
	for (const char *p = dash + 1; p < base + n - 3; p++) {
		if (*p < '0' || *p > '9' || boot > 100000)
			return;
		boot = boot * 10 + (*p - '0');
	}
	if (boot < 1 || dash + 1 == base + n - 3)
		return;
	memcpy(id, base, (size_t)(dash - base));
	id[dash - base] = 0;
	b_text(b, "vm_id", id);
	b_int(b, "boot", boot);
}

static int insert_session(struct ledger *l, const char *path)
{
	struct builder b;
	sqlite3_stmt *st;
	b_init(&b, KIND_SESSION);
	session_from_path(path, &b);
	int r = prepare(l->db,
			"INSERT INTO session (vm_id, boot, started, version, pid) VALUES (?1, ?2, "
			"?3, ?4, ?5)",
			&st);
	if (r < 0) {
		b_done(&b);
		return r;
	}
	if (b.v[0].set)
		sqlite3_bind_text(st, 1, b.v[0].s, -1, SQLITE_STATIC);
	if (b.v[3].set)
		sqlite3_bind_int64(st, 2, b.v[3].i);
	sqlite3_bind_int64(st, 3, ledger_now_ms());
	sqlite3_bind_text(st, 4, CAPSEM_VERSION, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (int64_t)getpid());
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	b_done(&b);
	if (rc != SQLITE_DONE)
		return sql_errno(rc) ? sql_errno(rc) : -EIO;
	l->session_row = sqlite3_last_insert_rowid(l->db);
	return 0;
}

static void ledger_free(struct ledger *l)
{
	for (int k = 0; k < LEDGER_KIND_MAX; k++)
		sqlite3_finalize(l->ins[k]);
	sqlite3_finalize(l->upd_session);
	sqlite3_finalize(l->end_session);
	if (l->db)
		sqlite3_close(l->db);
	safe_close(l->lock_fd); /* after SQLite's descriptors: see the top of the file */
	while (l->head) {
		struct lev *e = l->head;
		l->head = e->next;
		free(e);
	}
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	pthread_cond_destroy(&l->done_cv);
	free(l);
}

static int open_file(const char *path, int *ret_fd)
{
	_cleanup_free_ char *dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		int r = mkdir_p(dir, 0700);
		if (r < 0)
			return r;
	}
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0)
		return negative_errno();
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int ledger_open_opts(const char *path, const struct ledger_opts *o, struct ledger **ret)
{
	struct ledger *l = calloc(1, sizeof(*l));
	pthread_condattr_t ca;
	int r;
	if (!l)
		return -ENOMEM;
	l->lock_fd = -1;
	l->tail = &l->head;
	l->queue_max = o && o->queue_max ? o->queue_max : LEDGER_QUEUE_MAX;
	l->batch_max = o && o->batch_max ? o->batch_max : LEDGER_BATCH_MAX;
	l->batch_ms = o && o->batch_ms ? o->batch_ms : LEDGER_BATCH_MS;
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&l->done_cv, NULL);

	r = open_file(path, &l->lock_fd);
	if (r < 0)
		goto fail;
	int rc = sqlite3_open_v2(path, &l->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
				 NULL);
	if (rc != SQLITE_OK) {
		r = sql_errno(rc) ? sql_errno(rc) : -EIO;
		goto fail;
	}
	sqlite3_busy_timeout(l->db, BUSY_TIMEOUT_MS);
	int64_t dummy;
	r = query_int(l->db, "PRAGMA user_version", &dummy); /* is it a database at all? */
	if (r == 0)
		r = apply_schema(l->db);
	if (r < 0)
		goto fail;
	{
		sqlite3_stmt *st;
		r = prepare(l->db, "PRAGMA journal_mode = WAL", &st);
		if (r < 0)
			goto fail;
		rc = sqlite3_step(st);
		const char *mode =
			rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
		int wal = mode && streq(mode, "wal");
		sqlite3_finalize(st);
		if (!wal) {
			r = -EIO;
			goto fail;
		}
	}
	r = exec_sql(l->db, "PRAGMA synchronous = NORMAL");
	if (r == 0)
		r = prepare_all(l);
	if (r == 0)
		r = query_int(
			l->db,
			"SELECT max(coalesce((SELECT max(id) FROM exec), 0), coalesce((SELECT "
			"max(id) FROM net), 0), coalesce((SELECT max(id) FROM dns), 0), "
			"coalesce((SELECT max(id) FROM model_call), 0), coalesce((SELECT "
			"max(id) FROM tool_call), 0), coalesce((SELECT max(id) FROM policy), "
			"0), coalesce((SELECT max(id) FROM dropped), 0))",
			&l->next_id);
	if (r < 0)
		goto fail;
	l->next_id++;
	r = insert_session(l, path);
	if (r < 0)
		goto fail;

	/* the writer never takes a signal meant for the process */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&l->thread, NULL, writer_main, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		goto fail;
	l->thread_started = 1;
	*ret = l;
	return 0;
fail:
	ledger_free(l);
	return r;
}

int ledger_open(const char *path, struct ledger **ret)
{
	return ledger_open_opts(path, NULL, ret);
}

void ledger_flush(struct ledger *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	uint64_t target = l->enq_seq;
	l->flushing++;
	pthread_cond_signal(&l->cv);
	while (l->done_seq < target || l->drop_full)
		pthread_cond_wait(&l->done_cv, &l->mu);
	l->flushing--;
	pthread_mutex_unlock(&l->mu);
}

void ledger_close(struct ledger *l)
{
	if (!l)
		return;
	if (l->thread_started) {
		pthread_mutex_lock(&l->mu);
		l->closing = 1;
		pthread_cond_signal(&l->cv);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	ledger_free(l);
}

void ledger_get_stats(struct ledger *l, struct ledger_stats *ret)
{
	pthread_mutex_lock(&l->mu);
	*ret = l->st;
	pthread_mutex_unlock(&l->mu);
}

/* ---- recovery ---- */

int ledger_mark_unfinished(const char *path, const char *reason, unsigned *ret_count)
{
	_cleanup_close_ int fd = -1;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	unsigned n = 0;
	struct stat stb;
	if (stat(path, &stb) < 0)
		return negative_errno(); /* never create one here */
	int r = open_file(path, &fd);
	if (r < 0)
		return r;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
		r = apply_schema(db);
	} else {
		r = sql_errno(rc) ? sql_errno(rc) : -EIO;
	}
	/* one row at a time, each moved to the next free id (like any completion) */
	if (r == 0)
		r = prepare(
			db,
			"UPDATE exec SET error = ?1, id = (SELECT max(id) FROM (SELECT id FROM "
			"exec UNION ALL SELECT id FROM net UNION ALL SELECT id FROM dns UNION ALL "
			"SELECT id FROM model_call UNION ALL SELECT id FROM tool_call UNION ALL "
			"SELECT id FROM policy UNION ALL SELECT id FROM dropped)) + 1 WHERE id = "
			"(SELECT min(id) FROM exec WHERE ts_end IS NULL AND error IS NULL)",
			&st);
	while (r == 0) {
		sqlite3_bind_text(st, 1, reason, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			r = sql_errno(rc) ? sql_errno(rc) : -EIO;
		else if (sqlite3_changes(db) == 0)
			break;
		else
			n++;
	}
	sqlite3_finalize(st);
	if (db)
		sqlite3_close(db);
	if (r == 0 && ret_count)
		*ret_count = n;
	return r;
}
