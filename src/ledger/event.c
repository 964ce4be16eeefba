/* event.c - the session ledger's events: validation and building, from C structs and JSON.
 *
 * Producers (the proxy, DNS, the exec tap, the control socket's ledger command; any thread) turn
 * an event into a `struct lev` here: one allocation holding typed column values and copies of
 * the strings, checked against the column tables of cols.c (types, ranges, allowed values,
 * caps); strings are cut at their cap on a UTF-8 boundary and invalid bytes become '?'. The
 * event is then handed to the writer's queue (ledger.c, ledger_enqueue). Also the kinds'
 * names and the control-socket line format.
 *
 * Trust: event strings are guest-controlled (host names, paths, argv): bounded and cleaned here;
 * SQL only ever sees them as bound parameters (ledger.c). Any thread; no shared state.
 */
#include "event.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cols.h"
#include "macro.h"
#include "utf8.h"

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

const struct kind_desc ledger_session_desc = { "session", ledger_c_session,
					       ELEMENTSOF(ledger_c_session) };
const struct col ledger_c_session[4] = {
	{ "vm_id", COL_TEXT, 0, 64, NULL },
	{ "vm_name", COL_TEXT, 0, 64, NULL },
	{ "image", COL_TEXT, 0, 64, NULL },
	{ "boot", COL_INT, 0, 1000000, NULL },
};

void b_init(struct builder *b, int kind)
{
	*b = (struct builder){ .kind = kind };
	b->kd = kind == KIND_SESSION ? &ledger_session_desc : cols_kind(kind);
}

void b_done(struct builder *b)
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

void b_int(struct builder *b, const char *name, int64_t x)
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

void b_text(struct builder *b, const char *name, const char *s)
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
int b_finish(struct builder *b, struct lev **ret)
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
	b_bool(b, "oom_killed", ev->oom_killed);
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

static int submit(struct ledger *l, struct builder *b)
{
	struct lev *e = NULL;
	int r = b_finish(b, &e);
	b_done(b);
	return r < 0 ? r : ledger_enqueue(l, e);
}

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

int ledger_fs(struct ledger *l, const struct ledger_fs *ev)
{
	struct builder b;
	b_init(&b, LEDGER_FS);
	b_int(&b, "ts", ev->ts);
	b_text(&b, "action", ev->action);
	b_text(&b, "path", ev->path);
	b_text(&b, "old_path", ev->old_path);
	b_text(&b, "type", ev->type);
	b_int(&b, "size", ev->size);
	b_int(&b, "count", ev->count);
	b_text(&b, "detail", ev->detail);
	b_text(&b, "source", ev->source);
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
