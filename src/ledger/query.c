/* query.c - reading session ledgers: events as JSON, the sessions directory, summaries.
 *
 * Every call opens its own SQLite connection (query_only) (WAL lets it read while capsem-vm
 * writes; a busy timeout covers the short moments a checkpoint needs), runs prepared statements
 * with bound values (table and column names come from cols.c, never from the caller) and closes
 * it. Rows become JSON through the column tables, so flags read as booleans and argv as an
 * array.
 *
 * Trust: the files are the user's own, but a ledger may be truncated, edited or from a newer
 * version: the schema version is checked, text that is not UTF-8 is cleaned before it becomes
 * JSON, and directory listings are capped. Thread: any (no shared state).
 */
#include "query.h"

#include <dirent.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "cols.h"
#include "macro.h"

#define READ_BUSY_MS 2000

/* ---- session ids and paths ---- */

int ledger_session_id_parse(const char *s, char ret_vm_id[65], unsigned *ret_boot)
{
	const char *dash = strrchr(s, '-');
	if (!dash || dash == s || dash - s > 64)
		return -EINVAL;
	for (const char *p = s; p < dash; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      (p > s && (*p == '_' || *p == '.' || *p == '-'))))
			return -EINVAL;
	const char *b = dash + 1;
	size_t bl = strlen(b);
	if (bl == 0 || bl > 6 || b[0] == '0' || strspn(b, "0123456789") != bl)
		return -EINVAL;
	unsigned boot = 0;
	for (; *b; b++)
		boot = boot * 10 + (unsigned)(*b - '0');
	if (ret_vm_id) {
		memcpy(ret_vm_id, s, (size_t)(dash - s));
		ret_vm_id[dash - s] = 0;
	}
	if (ret_boot)
		*ret_boot = boot;
	return 0;
}

int ledger_session_id_valid(const char *s)
{
	return ledger_session_id_parse(s, NULL, NULL) == 0;
}

int ledger_session_path(const char *dir, const char *vm_id, unsigned boot, char **ret)
{
	char id[LEDGER_SESSION_ID_MAX];
	if ((size_t)snprintf(id, sizeof(id), "%s-%u", vm_id, boot) >= sizeof(id) ||
	    !ledger_session_id_valid(id))
		return -EINVAL;
	return asprintf(ret, "%s/%s.db", dir, id) < 0 ? -ENOMEM : 0;
}

/* ---- opening ---- */

static int sql_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

static void sqlite3_closep(sqlite3 **db)
{
	if (*db)
		sqlite3_close(*db);
}

static void sqlite3_finalizep(sqlite3_stmt **st)
{
	if (*st)
		sqlite3_finalize(*st);
}

#define _cleanup_db_ _cleanup_(sqlite3_closep)
#define _cleanup_stmt_ _cleanup_(sqlite3_finalizep)

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(db, sql, -1, ret, NULL);
	return rc == SQLITE_OK ? 0 : sql_err(rc);
}

/* 1 when the database has this table (a ledger written by an older schema may lack one). */
static int has_table(sqlite3 *db, const char *name)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	if (prep(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", &st) < 0)
		return 0;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	return sqlite3_step(st) == SQLITE_ROW;
}

static int open_ro(const char *path, sqlite3 **ret)
{
	struct stat st;
	sqlite3 *db = NULL;
	if (lstat(path, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	/* read-write but query_only: the last connection to close removes the -wal and -shm
	 * files, which a read-only one would leave behind; read-only when that is all we may */
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
				 NULL);
	if (rc != SQLITE_OK) {
		sqlite3_close(db);
		db = NULL;
		rc = sqlite3_open_v2(
			path, &db,
			SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
	}
	if (rc != SQLITE_OK) {
		sqlite3_close(db);
		return sql_err(rc);
	}
	sqlite3_busy_timeout(db, READ_BUSY_MS);
	sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	_cleanup_stmt_ sqlite3_stmt *v = NULL;
	int r = prep(db, "PRAGMA user_version", &v);
	if (r == 0) {
		rc = sqlite3_step(v);
		int64_t ver = rc == SQLITE_ROW ? sqlite3_column_int64(v, 0) : -1;
		if (rc != SQLITE_ROW)
			r = sql_err(rc);
		else if (ver > LEDGER_SCHEMA_VERSION)
			r = -EPROTONOSUPPORT;
		else if (ver < 1)
			r = -EBADMSG; /* a database, but not a ledger... */
	}
	if (r == -EBADMSG) {
		/* ...or one whose writer is creating it right now: no tables yet */
		_cleanup_stmt_ sqlite3_stmt *t = NULL;
		if (prep(db, "SELECT count(*) FROM sqlite_master", &t) == 0 &&
		    sqlite3_step(t) == SQLITE_ROW && sqlite3_column_int64(t, 0) == 0)
			r = -ENODATA;
	}
	if (r < 0) {
		sqlite3_finalize(v);
		v = NULL;
		sqlite3_close(db);
		return r;
	}
	*ret = db;
	return 0;
}

/* ---- rows as JSON ---- */

/* Text as a JSON string; when it is not valid UTF-8 (an edited file), bytes >= 0x80 become
 * '?'. */
static json_t *json_text(const unsigned char *s, size_t n)
{
	json_t *j = json_stringn((const char *)s, n);
	if (j)
		return j;
	char *t = malloc(n + 1);
	if (!t)
		return NULL;
	for (size_t i = 0; i < n; i++)
		t[i] = s[i] < 0x80 ? (char)s[i] : '?';
	t[n] = 0;
	j = json_stringn(t, n);
	free(t);
	return j;
}

static json_t *column_json(sqlite3_stmt *st, int i, const struct col *c)
{
	int t = sqlite3_column_type(st, i);
	if (t == SQLITE_NULL)
		return json_null();
	if (c && c->type == COL_BOOL)
		return json_boolean(sqlite3_column_int64(st, i) != 0);
	if (c && c->type == COL_JSON && t == SQLITE_TEXT) {
		const char *s = (const char *)sqlite3_column_text(st, i);
		json_t *j = s ? json_loadb(s, (size_t)sqlite3_column_bytes(st, i), 0, NULL) : NULL;
		if (j)
			return j;
	}
	switch (t) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT:
		return json_real(sqlite3_column_double(st, i));
	default: {
		const unsigned char *s = sqlite3_column_text(st, i);
		return s ? json_text(s, (size_t)sqlite3_column_bytes(st, i)) : json_null();
	}
	}
}

/* The current row of a SELECT * on kind's table. */
static json_t *row_json(sqlite3_stmt *st, enum ledger_kind k)
{
	const struct kind_desc *kd = cols_kind(k);
	json_t *o = json_object();
	int n = sqlite3_column_count(st);
	for (int i = 0; o && i < n; i++) {
		const char *name = sqlite3_column_name(st, i);
		if (!name)
			continue;
		int ci = cols_find(kd, name);
		json_t *v = column_json(st, i, ci >= 0 ? &kd->cols[ci] : NULL);
		if (!v || json_object_set_new(o, name, v) < 0) {
			json_decref(o);
			return NULL;
		}
		if (i == 0 && json_object_set_new(o, "kind", json_string(kd->name)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static int cmp_id(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));
	return x < y ? -1 : x > y;
}

int ledger_query(const char *path, const struct ledger_query *q, json_t **ret)
{
	_cleanup_db_ sqlite3 *db = NULL;
	unsigned kinds = q->kinds ? q->kinds & LEDGER_KINDS_ALL : LEDGER_KINDS_ALL;
	unsigned limit = q->limit ? MIN(q->limit, LEDGER_QUERY_MAX) : LEDGER_QUERY_DEFAULT;
	int tail = q->since < 0;
	int r = open_ro(path, &db);
	if (r == -ENODATA) {
		*ret = json_array(); /* a ledger being created: no events yet */
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return r;
	json_t *all = json_array();
	if (!all)
		return -ENOMEM;
	/* a read transaction: every table is seen at the same moment */
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (int k = 0; k < LEDGER_KIND_MAX && r == 0; k++) {
		char sql[160];
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		if (!(kinds & (1u << k)) || !has_table(db, cols_kind(k)->name))
			continue;
		snprintf(sql, sizeof(sql), "SELECT * FROM %s WHERE id > ?1 ORDER BY id %s LIMIT ?2",
			 cols_kind(k)->name, tail ? "DESC" : "ASC");
		r = prep(db, sql, &st);
		if (r < 0)
			break;
		sqlite3_bind_int64(st, 1, tail ? 0 : q->since);
		sqlite3_bind_int64(st, 2, limit);
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			json_t *o = row_json(st, k);
			if (!o || json_array_append_new(all, o) < 0) {
				r = -ENOMEM;
				break;
			}
		}
		if (r == 0 && rc != SQLITE_DONE)
			r = sql_err(rc);
	}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (r < 0) {
		json_decref(all);
		return r;
	}
	/* merge: sort by id, keep the first (or, for a tail, the last) `limit` */
	size_t n = json_array_size(all);
	json_t **v = calloc(n + 1, sizeof(*v));
	json_t *out = json_array();
	if (!v || !out) {
		free(v);
		json_decref(out);
		json_decref(all);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(all, i);
	qsort(v, n, sizeof(*v), cmp_id);
	size_t from = tail && n > limit ? n - limit : 0;
	size_t to = MIN(n, from + limit);
	for (size_t i = from; i < to; i++)
		if (json_array_append(out, v[i]) < 0)
			r = -ENOMEM;
	free(v);
	json_decref(all);
	if (r < 0) {
		json_decref(out);
		return r;
	}
	*ret = out;
	return 0;
}

/* ---- sessions ---- */

static int64_t file_mtime_ms(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
}

/* Size of the database plus its WAL; mtime the later of the two (an empty WAL does not count:
 * opening a database creates one). */
static void session_stat(const char *path, const struct stat *st, int64_t *size, int64_t *mtime)
{
	_cleanup_free_ char *wal = NULL;
	struct stat ws;
	*size = st->st_size;
	*mtime = file_mtime_ms(st);
	if (asprintf(&wal, "%s-wal", path) >= 0 && lstat(wal, &ws) == 0 && S_ISREG(ws.st_mode) &&
	    ws.st_size > 0) {
		*size += ws.st_size;
		*mtime = MAX(*mtime, file_mtime_ms(&ws));
	}
}

int ledger_session_info(const char *path, int with_counts, json_t **ret)
{
	_cleanup_db_ sqlite3 *db = NULL;
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	struct stat fs;
	int64_t size, mtime;
	int r = open_ro(path, &db);
	if (r == -ENODATA)
		return -ENOENT;
	if (r < 0)
		return r;
	if (lstat(path, &fs) < 0)
		return negative_errno();
	session_stat(path, &fs, &size, &mtime);
	r = prep(db,
		 "SELECT vm_id, vm_name, boot, started, ended, version, image, pid FROM session "
		 "ORDER BY id DESC LIMIT 1",
		 &st);
	if (r < 0)
		return r;
	json_t *o = json_object();
	if (!o)
		return -ENOMEM;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t bl = strlen(base);
	json_object_set_new(o, "session",
			    bl > 3 && streq(base + bl - 3, ".db") ? json_stringn(base, bl - 3)
								  : json_null());
	static const char *const names[] = { "vm_id", "vm_name", "boot",  "started",
					     "ended", "version", "image", "pid" };
	int rc = sqlite3_step(st);
	for (int i = 0; i < (int)ELEMENTSOF(names); i++)
		json_object_set_new(o, names[i],
				    rc == SQLITE_ROW ? column_json(st, i, NULL) : json_null());
	json_object_set_new(o, "size", json_integer(size));
	json_object_set_new(o, "mtime", json_integer(mtime));
	if (with_counts) {
		json_t *ev = json_object();
		int64_t last = 0;
		for (int k = 0; ev && k < LEDGER_KIND_MAX; k++) {
			char sql[96];
			_cleanup_stmt_ sqlite3_stmt *c = NULL;
			if (!has_table(db, cols_kind(k)->name))
				continue;
			snprintf(sql, sizeof(sql), "SELECT count(*), coalesce(max(id), 0) FROM %s",
				 cols_kind(k)->name);
			if (prep(db, sql, &c) < 0 || sqlite3_step(c) != SQLITE_ROW)
				continue;
			json_object_set_new(ev, cols_kind(k)->name,
					    json_integer(sqlite3_column_int64(c, 0)));
			last = MAX(last, sqlite3_column_int64(c, 1));
		}
		json_object_set_new(o, "events", ev ? ev : json_null());
		json_object_set_new(o, "last_id", json_integer(last));
	}
	*ret = o;
	return 0;
}

struct sentry {
	char id[LEDGER_SESSION_ID_MAX];
	char vm_id[65];
	unsigned boot;
	int64_t size, mtime;
};

static int cmp_newest(const void *a, const void *b)
{
	const struct sentry *x = a, *y = b;
	if (x->mtime != y->mtime)
		return x->mtime > y->mtime ? -1 : 1;
	if (x->boot != y->boot)
		return x->boot > y->boot ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* The valid session files of dir (vm_id: that VM's only), newest first. */
static int scan(const char *dir, const char *vm_id, struct sentry **ret, size_t *ret_n)
{
	DIR *d = opendir(dir);
	struct sentry *v = NULL;
	size_t n = 0, cap = 0, seen = 0;
	struct dirent *de;
	if (!d) {
		if (errno != ENOENT)
			return negative_errno();
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	while ((de = readdir(d)) && seen++ < LEDGER_SESSIONS_MAX) {
		size_t l = strlen(de->d_name);
		struct sentry e = { 0 };
		struct stat st;
		if (l < 4 || l - 3 >= sizeof(e.id) || !streq(de->d_name + l - 3, ".db"))
			continue;
		memcpy(e.id, de->d_name, l - 3);
		e.id[l - 3] = 0;
		if (ledger_session_id_parse(e.id, e.vm_id, &e.boot) < 0)
			continue;
		if (vm_id && !streq(vm_id, e.vm_id))
			continue;
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/%s", dir, de->d_name) < 0)
			break;
		if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		session_stat(p, &st, &e.size, &e.mtime);
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			struct sentry *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				closedir(d);
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[n++] = e;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_newest);
	*ret = v;
	*ret_n = n;
	return 0;
}

int ledger_sessions_list(const char *dir, const char *vm_id, int with_info, json_t **ret)
{
	_cleanup_free_ struct sentry *v = NULL;
	size_t n;
	int r = scan(dir, vm_id, &v, &n);
	if (r < 0)
		return r;
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/%s.db", dir, v[i].id) < 0) {
			json_decref(arr);
			return -ENOMEM;
		}
		json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:I, s:I}", "session", v[i].id, "vm_id",
				      v[i].vm_id, "boot", (int)v[i].boot, "path", p, "size",
				      (json_int_t)v[i].size, "mtime", (json_int_t)v[i].mtime);
		if (o && with_info) {
			json_t *info = NULL;
			r = ledger_session_info(p, 0, &info);
			if (r == 0) {
				static const char *const keep[] = { "vm_name", "started", "ended",
								    "version", "image" };
				for (size_t k = 0; k < ELEMENTSOF(keep); k++)
					json_object_set(o, keep[k], json_object_get(info, keep[k]));
				json_decref(info);
			} else {
				json_object_set_new(o, "error", json_string(strerror(-r)));
			}
		}
		if (!o || json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			return -ENOMEM;
		}
	}
	if (!arr)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

int ledger_session_latest(const char *dir, const char *vm_id, char **ret_path)
{
	_cleanup_free_ struct sentry *v = NULL;
	size_t n, best = 0;
	int r = scan(dir, vm_id, &v, &n);
	if (r < 0)
		return r;
	if (n == 0)
		return -ENOENT;
	for (size_t i = 1; i < n; i++)
		if (v[i].boot > v[best].boot)
			best = i;
	return asprintf(ret_path, "%s/%s.db", dir, v[best].id) < 0 ? -ENOMEM : 0;
}

int ledger_session_find(const char *dir, const char *ref, char **ret_path)
{
	_cleanup_free_ struct sentry *v = NULL;
	size_t n, rl = strlen(ref);
	struct stat st;
	int r;
	if (rl == 0 || rl >= LEDGER_SESSION_ID_MAX || strchr(ref, '/'))
		return -ENOENT;
	if (ledger_session_id_valid(ref)) {
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/%s.db", dir, ref) < 0)
			return -ENOMEM;
		if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) {
			*ret_path = TAKE_PTR(p);
			return 0;
		}
	}
	r = scan(dir, NULL, &v, &n);
	if (r < 0)
		return r;
	/* a VM id: its latest boot */
	ssize_t best = -1;
	for (size_t i = 0; i < n; i++)
		if (streq(v[i].vm_id, ref) && (best < 0 || v[i].boot > v[best].boot))
			best = (ssize_t)i;
	/* a unique VM id prefix */
	if (best < 0 && rl >= 3) {
		const char *match = NULL;
		for (size_t i = 0; i < n; i++) {
			if (strncmp(v[i].vm_id, ref, rl) != 0)
				continue;
			if (match && !streq(match, v[i].vm_id))
				return -EADDRNOTAVAIL;
			match = v[i].vm_id;
			if (best < 0 || v[i].boot > v[best].boot)
				best = (ssize_t)i;
		}
	}
	/* a VM name, newest session first */
	for (size_t i = 0; best < 0 && i < n; i++) {
		_cleanup_free_ char *p = NULL;
		json_t *info = NULL;
		if (asprintf(&p, "%s/%s.db", dir, v[i].id) < 0)
			return -ENOMEM;
		if (ledger_session_info(p, 0, &info) < 0)
			continue;
		const char *name = json_string_value(json_object_get(info, "vm_name"));
		if (name && streq(name, ref))
			best = (ssize_t)i;
		json_decref(info);
	}
	if (best < 0)
		return -ENOENT;
	return asprintf(ret_path, "%s/%s.db", dir, v[best].id) < 0 ? -ENOMEM : 0;
}

int ledger_sessions_prune(const char *dir, unsigned keep, char *const *keep_ids)
{
	_cleanup_free_ struct sentry *v = NULL;
	size_t n;
	int removed = 0;
	int r = scan(dir, NULL, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = keep; i < n; i++) {
		int kept = 0;
		for (size_t k = 0; keep_ids && keep_ids[k]; k++)
			kept |= streq(keep_ids[k], v[i].id);
		if (kept)
			continue;
		static const char *const sfx[] = { "-wal", "-shm", "" };
		for (size_t s = 0; s < ELEMENTSOF(sfx); s++) {
			_cleanup_free_ char *p = NULL;
			if (asprintf(&p, "%s/%s.db%s", dir, v[i].id, sfx[s]) < 0)
				return -ENOMEM;
			if (unlink(p) < 0 && errno != ENOENT && s == ELEMENTSOF(sfx) - 1)
				return negative_errno();
		}
		removed++;
	}
	return removed;
}

/* ---- summaries ---- */

struct sb {
	char *p;
	size_t n, o;
};

static void _printf_(2, 3) sb_printf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	if (b->o + 1 >= b->n)
		return;
	va_start(ap, fmt);
	int k = vsnprintf(b->p + b->o, b->n - b->o, fmt, ap);
	va_end(ap);
	if (k > 0)
		b->o = MIN(b->o + (size_t)k, b->n - 1);
}

static const char *js(const json_t *ev, const char *k)
{
	return json_string_value(json_object_get(ev, k));
}

static int ji(const json_t *ev, const char *k, json_int_t *ret)
{
	json_t *v = json_object_get(ev, k);
	if (!json_is_integer(v))
		return 0;
	*ret = json_integer_value(v);
	return 1;
}

static void sb_bytes(struct sb *b, const char *label, json_int_t x)
{
	if (x < 10 * 1024)
		sb_printf(b, "  %s %lld B", label, (long long)x);
	else if (x < 10 * 1024 * 1024)
		sb_printf(b, "  %s %lld KiB", label, (long long)(x / 1024));
	else
		sb_printf(b, "  %s %lld MiB", label, (long long)(x >> 20));
}

static void sb_ms(struct sb *b, const json_t *ev)
{
	json_int_t ms;
	if (!ji(ev, "duration_ms", &ms))
		return;
	if (ms < 10000)
		sb_printf(b, "  %lld ms", (long long)ms);
	else
		sb_printf(b, "  %.1f s", (double)ms / 1000.0);
}

/* A shell word: as is when it has only safe characters, else in single quotes. */
static void sb_word(struct sb *b, const char *w)
{
	if (*w &&
	    strspn(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
		    strlen(w)) {
		sb_printf(b, "%s", w);
		return;
	}
	sb_printf(b, "'");
	for (const char *p = w; *p; p++) {
		if (*p == '\'')
			sb_printf(b, "'\\''");
		else if ((unsigned char)*p < 0x20)
			sb_printf(b, "\\x%02x", (unsigned char)*p);
		else
			sb_printf(b, "%c", *p);
	}
	sb_printf(b, "'");
}

static void sum_exec(struct sb *b, const json_t *ev)
{
	json_int_t x;
	size_t i;
	json_t *a;
	if (ji(ev, "exit_code", &x))
		sb_printf(b, "exit %lld", (long long)x);
	else if (json_is_true(json_object_get(ev, "timed_out")))
		sb_printf(b, "timeout");
	else if (ji(ev, "signal", &x))
		sb_printf(b, "signal %lld", (long long)x);
	else if (!ji(ev, "ts_end", &x) && !js(ev, "error"))
		sb_printf(b, "running");
	else
		sb_printf(b, "no exit");
	if (json_is_true(json_object_get(ev, "oom_killed")))
		sb_printf(b, " (OOM kill)");
	sb_ms(b, ev);
	sb_printf(b, "  ");
	json_t *argv = json_object_get(ev, "argv");
	if (json_is_true(json_object_get(ev, "shell")) && json_array_size(argv) > 0)
		sb_printf(b, "sh -c ");
	json_array_foreach(argv, i, a)
	{
		if (i)
			sb_printf(b, " ");
		sb_word(b, json_string_value(a) ? json_string_value(a) : "");
	}
	if (json_is_true(json_object_get(ev, "argv_truncated")))
		sb_printf(b, " ...");
	if (js(ev, "via"))
		sb_printf(b, "  (%s%s)", js(ev, "via"),
			  json_is_true(json_object_get(ev, "tty")) ? ", tty" : "");
	if (js(ev, "error"))
		sb_printf(b, "  error: %s", js(ev, "error"));
}

static void sum_net(struct sb *b, const json_t *ev)
{
	json_int_t x;
	const char *scheme = js(ev, "scheme"), *host = js(ev, "host"), *ip = js(ev, "dst_ip");
	sb_printf(b, "%s", strempty(js(ev, "decision")));
	if (js(ev, "method"))
		sb_printf(b, " %s", js(ev, "method"));
	sb_printf(b, " ");
	if (scheme && !streq(scheme, "tcp") && host && js(ev, "path"))
		sb_printf(b, "%s://%s%s", scheme, host, js(ev, "path"));
	else {
		sb_printf(b, "%s%s%s", scheme ? scheme : "", scheme ? " " : "",
			  host ? host
			  : ip ? ip
			       : "?");
		if (ji(ev, "dst_port", &x))
			sb_printf(b, ":%lld", (long long)x);
	}
	if (ji(ev, "status", &x))
		sb_printf(b, "  %lld", (long long)x);
	if (ji(ev, "bytes_up", &x))
		sb_bytes(b, "up", x);
	if (ji(ev, "bytes_down", &x))
		sb_bytes(b, "down", x);
	sb_ms(b, ev);
	if (js(ev, "comm"))
		sb_printf(b, "  %s", js(ev, "comm"));
	if (ji(ev, "pid", &x))
		sb_printf(b, "[%lld]", (long long)x);
	if (js(ev, "rule"))
		sb_printf(b, "  rule %s", js(ev, "rule"));
	if (js(ev, "error"))
		sb_printf(b, "  error: %s", js(ev, "error"));
}

static void sum_dns(struct sb *b, const json_t *ev)
{
	json_int_t x;
	sb_printf(b, "%s %s %s", strempty(js(ev, "decision")),
		  js(ev, "qtype") ? js(ev, "qtype") : "?", strempty(js(ev, "qname")));
	if (js(ev, "answer"))
		sb_printf(b, " -> %s", js(ev, "answer"));
	if (ji(ev, "rcode", &x) && x != 0)
		sb_printf(b, "  rcode %lld%s", (long long)x, x == 3 ? " (NXDOMAIN)" : "");
	if (js(ev, "rule"))
		sb_printf(b, "  rule %s", js(ev, "rule"));
}

static void sum_model(struct sb *b, const json_t *ev)
{
	json_int_t x;
	size_t i;
	json_t *a;
	sb_printf(b, "%s %s", js(ev, "provider") ? js(ev, "provider") : "?",
		  js(ev, "model") ? js(ev, "model") : "?");
	if (ji(ev, "input_tokens", &x))
		sb_printf(b, "  in %lld", (long long)x);
	if (ji(ev, "output_tokens", &x))
		sb_printf(b, "  out %lld", (long long)x);
	if (ji(ev, "cache_read_tokens", &x) && x)
		sb_printf(b, "  cache-read %lld", (long long)x);
	if (ji(ev, "cache_write_tokens", &x) && x)
		sb_printf(b, "  cache-write %lld", (long long)x);
	if (ji(ev, "tool_calls", &x) && x) {
		sb_printf(b, "  tools %lld", (long long)x);
		json_array_foreach(json_object_get(ev, "tool_names"), i, a)
			sb_printf(b, "%s%s", i ? "," : " ", strempty(json_string_value(a)));
	}
	if (js(ev, "stop_reason"))
		sb_printf(b, "  stop %s", js(ev, "stop_reason"));
	json_t *cost = json_object_get(ev, "cost_usd");
	if (json_is_number(cost))
		sb_printf(b, "  $%.4f", json_number_value(cost));
	sb_ms(b, ev);
	if (json_is_true(json_object_get(ev, "streamed")))
		sb_printf(b, "  streamed");
}

static void sum_tool(struct sb *b, const json_t *ev)
{
	json_int_t x;
	if (!js(ev, "tool") && streq(strempty(js(ev, "server")), "*")) /* a tools/list */
		sb_printf(b, "%s tools/list", strempty(js(ev, "decision")));
	else
		sb_printf(b, "%s %s%s%s", strempty(js(ev, "decision")), strempty(js(ev, "server")),
			  js(ev, "server") ? "." : "", js(ev, "tool") ? js(ev, "tool") : "?");
	if (ji(ev, "args_bytes", &x))
		sb_bytes(b, "args", x);
	if (ji(ev, "result_bytes", &x))
		sb_bytes(b, "result", x);
	sb_ms(b, ev);
	if (js(ev, "rule"))
		sb_printf(b, "  rule %s", js(ev, "rule"));
	if (js(ev, "error"))
		sb_printf(b, "  error: %s", js(ev, "error"));
}

static void sum_policy(struct sb *b, const json_t *ev)
{
	sb_printf(b, "%s %s %s", strempty(js(ev, "action")), strempty(js(ev, "boundary")),
		  js(ev, "subject") ? js(ev, "subject") : "?");
	if (js(ev, "rule"))
		sb_printf(b, "  rule %s", js(ev, "rule"));
	if (js(ev, "layer"))
		sb_printf(b, "  layer %s", js(ev, "layer"));
}

static void sum_fs(struct sb *b, const json_t *ev)
{
	json_int_t x;
	const char *action = strempty(js(ev, "action"));
	if (streq(action, "renamed"))
		sb_printf(b, "renamed %s -> %s", js(ev, "old_path") ? js(ev, "old_path") : "?",
			  strempty(js(ev, "path")));
	else
		sb_printf(b, "%s %s%s", action, strempty(js(ev, "path")),
			  streq(strempty(js(ev, "type")), "dir") ? "/" : "");
	if (streq(action, "summary")) {
		if (ji(ev, "count", &x))
			sb_printf(b, "  %lld changes", (long long)x);
		if (js(ev, "detail"))
			sb_printf(b, " (%s)", js(ev, "detail"));
	}
	if (ji(ev, "size", &x) && !streq(strempty(js(ev, "type")), "dir"))
		sb_bytes(b, "size", x);
	if (streq(strempty(js(ev, "source")), "scan"))
		sb_printf(b, "  (found at reconciliation)");
}

void ledger_event_summary(const json_t *ev, char *out, size_t n)
{
	struct sb b = { .p = out, .n = n };
	const char *kind = js(ev, "kind");
	json_int_t x;
	if (!n)
		return;
	out[0] = 0;
	int k = kind ? ledger_kind_from_name(kind) : -EINVAL;
	switch (k) {
	case LEDGER_EXEC:
		sum_exec(&b, ev);
		break;
	case LEDGER_NET:
		sum_net(&b, ev);
		break;
	case LEDGER_DNS:
		sum_dns(&b, ev);
		break;
	case LEDGER_MODEL_CALL:
		sum_model(&b, ev);
		break;
	case LEDGER_TOOL_CALL:
		sum_tool(&b, ev);
		break;
	case LEDGER_POLICY:
		sum_policy(&b, ev);
		break;
	case LEDGER_FS:
		sum_fs(&b, ev);
		break;
	case LEDGER_DROPPED:
		sb_printf(&b, "%lld events lost (%s)", ji(ev, "count", &x) ? (long long)x : 0LL,
			  strempty(js(ev, "reason")));
		break;
	default:
		sb_printf(&b, "?");
	}
	/* one line: control characters (from guest-supplied text) become spaces */
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

/* ---- pages and aggregates (the web UI: GET /vms/{ref}/activity, /stats) ---- */

static void jsonp_free(json_t **j)
{
	json_decref(*j);
}
#define _cleanup_json_ _cleanup_(jsonp_free)

struct page_sql {
	const char *table;
	const char *text; /* the columns a filter looks in, concatenated */
	enum ledger_kind kind;
	int has_decision;
};

static const struct page_sql page_sqls[] = {
	{ .kind = LEDGER_EXEC,
	  .table = "exec",
	  .text = "coalesce(argv,'') || ' ' || coalesce(cwd,'')" },
	{ .kind = LEDGER_NET,
	  .table = "net",
	  .text = "coalesce(method,'') || ' ' || coalesce(host,'') || coalesce(path,'') || ' ' || "
		  "coalesce(rule,'') || ' ' || coalesce(comm,'')",
	  .has_decision = 1 },
	{ .kind = LEDGER_DNS,
	  .table = "dns",
	  .text = "qname || ' ' || coalesce(rule,'')",
	  .has_decision = 1 },
	{ .kind = LEDGER_MODEL_CALL,
	  .table = "model_call",
	  .text = "coalesce(provider,'') || ' ' || coalesce(model,'')" },
	{ .kind = LEDGER_TOOL_CALL,
	  .table = "tool_call",
	  .text = "coalesce(server,'') || ' ' || coalesce(tool,'') || ' ' || coalesce(rule,'')",
	  .has_decision = 1 },
	{ .kind = LEDGER_POLICY,
	  .table = "policy",
	  .text = "coalesce(subject,'') || ' ' || coalesce(rule,'')" },
	{ .kind = LEDGER_FS, .table = "fs", .text = "path || ' ' || coalesce(old_path,'')" },
};

/* Rewind one of ledger_page()'s row statements (its filter bindings stay) and bind the page:
 * ?3 limit, ?4 offset, ?5 the cursor. 0 or -errno. */
static int page_bind(sqlite3_stmt *st, int64_t cursor, unsigned limit, unsigned offset)
{
	int rc;
	sqlite3_reset(st);
	if ((rc = sqlite3_bind_int64(st, 3, limit)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(st, 4, offset)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(st, 5, cursor)) != SQLITE_OK)
		return sql_err(rc);
	return 0;
}

/* 1 when st (bound to a filter) has a row on its side of cursor, 0 when not, -errno. */
static int page_probe(sqlite3_stmt *st, int64_t cursor)
{
	int r = page_bind(st, cursor, 1, 0);
	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sql_err(rc);
}

static json_t *json_id_or_null(int has, int64_t id)
{
	return has ? json_integer((json_int_t)id) : json_null();
}

int ledger_page(const char *path, const struct ledger_page_req *rq, json_t **ret)
{
	const struct page_sql *ps = NULL;
	enum ledger_kind k = rq->kind;
	for (size_t i = 0; i < ELEMENTSOF(page_sqls); i++)
		if (page_sqls[i].kind == k)
			ps = &page_sqls[i];
	if (!ps || (rq->decision && !ps->has_decision && k != LEDGER_POLICY))
		return -EINVAL;
	if ((rq->from == LEDGER_PAGE_BEFORE && rq->cursor < 1) ||
	    (rq->from == LEDGER_PAGE_AFTER && (rq->cursor < 0 || rq->cursor == INT64_MAX)) ||
	    (rq->from != LEDGER_PAGE_NEWEST && rq->offset))
		return -EINVAL;
	unsigned limit = rq->limit ? MIN(rq->limit, 1000u) : 50u;
	_cleanup_db_ sqlite3 *db = NULL;
	int r = open_ro(path, &db);
	if (r == -ENODATA || (r == 0 && !has_table(db, ps->table))) {
		*ret = json_pack("{s:i, s:[], s:n, s:n}", "total", 0, "rows", "next_before",
				 "prev_after");
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return r;
	/* only fixed text goes into the SQL: the filter, decision and cursor are bound parameters.
	 * The cursor is a range of the primary key (id is the rowid): EXPLAIN QUERY PLAN says
	 * "SEARCH <table> USING INTEGER PRIMARY KEY (rowid<?)", so a page reads about `limit`
	 * rows (more when a filter skips some), wherever it is. */
	const char *dcol = k == LEDGER_POLICY ? "action" : "decision";
	/* every row: a count without a WHERE, which SQLite answers faster (no row is decoded) */
	int any = !(rq->filter && *rq->filter) && !rq->decision;
	_cleanup_free_ char *where = NULL, *count_sql = NULL, *older_sql = NULL, *newer_sql = NULL;
	if (asprintf(&where,
		     "(?1 IS NULL OR instr(lower(%s), lower(?1)) > 0) AND (?2 IS NULL OR %s = ?2)",
		     ps->text, rq->decision ? dcol : "?2") < 0 ||
	    asprintf(&count_sql, "SELECT count(*) FROM %s%s%s", ps->table, any ? "" : " WHERE ",
		     any ? "" : where) < 0 ||
	    asprintf(&older_sql,
		     "SELECT * FROM %s WHERE id < ?5 AND %s ORDER BY id DESC LIMIT ?3 OFFSET ?4",
		     ps->table, where) < 0 ||
	    asprintf(&newer_sql,
		     "SELECT * FROM %s WHERE id > ?5 AND %s ORDER BY id ASC LIMIT ?3 OFFSET ?4",
		     ps->table, where) < 0)
		return -ENOMEM;
	_cleanup_stmt_ sqlite3_stmt *cs = NULL, *older = NULL, *newer = NULL;
	if ((r = prep(db, count_sql, &cs)) < 0 || (r = prep(db, older_sql, &older)) < 0 ||
	    (r = prep(db, newer_sql, &newer)) < 0)
		return r;
	sqlite3_stmt *sts[3] = { older, newer, any ? NULL : cs };
	for (int i = 0; i < 3 && sts[i]; i++) {
		if (rq->filter && *rq->filter)
			sqlite3_bind_text(sts[i], 1, rq->filter, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(sts[i], 1);
		if (rq->decision)
			sqlite3_bind_text(sts[i], 2, rq->decision, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(sts[i], 2);
	}
	int rc = sqlite3_step(cs);
	if (rc != SQLITE_ROW)
		return sql_err(rc);
	int64_t total = sqlite3_column_int64(cs, 0);

	/* one row more than the page tells whether there is a page beyond it */
	int up = rq->from == LEDGER_PAGE_AFTER;
	sqlite3_stmt *st = up ? newer : older;
	int64_t cursor = rq->from == LEDGER_PAGE_NEWEST ? INT64_MAX : rq->cursor;
	if ((r = page_bind(st, cursor, limit + 1, rq->offset)) < 0)
		return r;
	_cleanup_json_ json_t *rows = json_array();
	if (!rows)
		return -ENOMEM;
	unsigned n = 0;
	int64_t first = 0, last = 0; /* the newest and the oldest id of the page */
	int beyond = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			beyond = 1;
			break;
		}
		int64_t id = sqlite3_column_int64(st, 0);
		json_t *o = row_json(st, k);
		/* the newer page is read oldest first: each row goes in front */
		if (!o ||
		    (up ? json_array_insert_new(rows, 0, o) : json_array_append_new(rows, o)) < 0)
			return -ENOMEM;
		if (n == 0)
			first = last = id;
		first = MAX(first, id);
		last = MIN(last, id);
		n++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sql_err(rc);
	/* the other side: is there a matching row past the page's edge (or past the cursor, for an
	 * empty page)? */
	int has_older = 0, has_newer = 0;
	int64_t older_edge = n ? last : cursor + 1, newer_edge = n ? first : cursor - 1;
	if (up) {
		has_newer = beyond;
		has_older = page_probe(older, older_edge);
	} else {
		has_older = beyond;
		if (rq->from == LEDGER_PAGE_BEFORE || (rq->offset && n))
			has_newer = page_probe(newer, newer_edge);
	}
	if (has_older < 0)
		return has_older;
	if (has_newer < 0)
		return has_newer;
	*ret = json_pack("{s:I, s:O, s:o, s:o}", "total", (json_int_t)total, "rows", rows,
			 "next_before", json_id_or_null(has_older, older_edge), "prev_after",
			 json_id_or_null(has_newer, newer_edge));
	return *ret ? 0 : -ENOMEM;
}

/* Run sql (fixed text) and append each row as an object of its columns to arr. */
static int rows_into(sqlite3 *db, const char *sql, json_t *arr)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(db, sql, &st), rc;
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o = json_object();
		for (int i = 0; o && i < sqlite3_column_count(st); i++)
			json_object_set_new(o, sqlite3_column_name(st, i),
					    column_json(st, i, NULL));
		if (!o || json_array_append_new(arr, o) < 0)
			return -ENOMEM;
	}
	return rc == SQLITE_DONE ? 0 : sql_err(rc);
}

int ledger_stats(const char *path, unsigned bucket_s, json_t **ret)
{
	_cleanup_json_ json_t *o =
		json_pack("{s:{}, s:[], s:[], s:[], s:I}", "counts", "by_model", "tokens_series",
			  "net_series", "bucket_s", (json_int_t)(bucket_s ? bucket_s : 60));
	if (!o)
		return -ENOMEM;
	bucket_s = bucket_s ? MIN(MAX(bucket_s, 1u), 86400u) : 60u;
	_cleanup_db_ sqlite3 *db = NULL;
	int r = open_ro(path, &db);
	if (r == -ENODATA) {
		*ret = TAKE_PTR(o);
		return 0;
	}
	if (r < 0)
		return r;
	json_t *counts = json_object_get(o, "counts");
	for (size_t i = 0; i < ELEMENTSOF(page_sqls); i++) {
		if (!has_table(db, page_sqls[i].table))
			continue;
		_cleanup_free_ char *sql = NULL;
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		if (asprintf(&sql, "SELECT count(*) FROM %s", page_sqls[i].table) < 0)
			return -ENOMEM;
		if (prep(db, sql, &st) == 0 && sqlite3_step(st) == SQLITE_ROW)
			json_object_set_new(counts, page_sqls[i].table,
					    json_integer(sqlite3_column_int64(st, 0)));
	}
	/* ts is in milliseconds since the epoch (docs/LEDGER.md); series buckets in seconds */
	char sql[512];
	if (has_table(db, "model_call")) {
		rows_into(db,
			  "SELECT provider, model, count(*) AS calls, "
			  "coalesce(sum(input_tokens),0) AS input_tokens, "
			  "coalesce(sum(output_tokens),0) AS output_tokens, "
			  "sum(cost_usd) AS cost_usd, avg(duration_ms) AS avg_ms "
			  "FROM model_call GROUP BY provider, model ORDER BY calls DESC LIMIT 100",
			  json_object_get(o, "by_model"));
		snprintf(
			sql, sizeof(sql),
			"SELECT (ts / 1000 / %u) * %u AS t, model, "
			"coalesce(sum(input_tokens),0) + coalesce(sum(output_tokens),0) AS tokens, "
			"coalesce(sum(cost_usd),0) AS cost_usd FROM model_call "
			"GROUP BY t, model ORDER BY t LIMIT 5000",
			bucket_s, bucket_s);
		rows_into(db, sql, json_object_get(o, "tokens_series"));
	}
	if (has_table(db, "net")) {
		snprintf(sql, sizeof(sql),
			 "SELECT (ts / 1000 / %u) * %u AS t, "
			 "sum(decision = 'allow') AS allow, sum(decision = 'block') AS block "
			 "FROM net GROUP BY t ORDER BY t LIMIT 5000",
			 bucket_s, bucket_s);
		rows_into(db, sql, json_object_get(o, "net_series"));
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		if (prep(db, "SELECT sum(decision = 'allow'), sum(decision = 'block') FROM net",
			 &st) == 0 &&
		    sqlite3_step(st) == SQLITE_ROW)
			json_object_set_new(o, "net",
					    json_pack("{s:I, s:I}", "allow",
						      (json_int_t)sqlite3_column_int64(st, 0),
						      "block",
						      (json_int_t)sqlite3_column_int64(st, 1)));
	}
	if (has_table(db, "model_call")) {
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		if (prep(db,
			 "SELECT count(*), coalesce(sum(input_tokens),0), "
			 "coalesce(sum(output_tokens),0), coalesce(sum(cost_usd),0) FROM "
			 "model_call",
			 &st) == 0 &&
		    sqlite3_step(st) == SQLITE_ROW)
			json_object_set_new(
				o, "model",
				json_pack("{s:I, s:I, s:I, s:f}", "calls",
					  (json_int_t)sqlite3_column_int64(st, 0), "input_tokens",
					  (json_int_t)sqlite3_column_int64(st, 1), "output_tokens",
					  (json_int_t)sqlite3_column_int64(st, 2), "cost_usd",
					  sqlite3_column_double(st, 3)));
	}
	*ret = TAKE_PTR(o);
	return 0;
}
