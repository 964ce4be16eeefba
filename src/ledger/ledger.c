/* ledger.c - the session ledger's writer: a bounded queue and one writer thread.
 *
 * Producers turn an event into a validated `struct lev` (event.c) and hand it to
 * ledger_enqueue(): it joins a FIFO under a mutex; when the FIFO holds LEDGER_QUEUE_MAX events (or LEDGER_QUEUE_BYTES) the
 * event is counted as dropped instead, so no producer ever waits for the disk.
 *
 * The writer thread (signals blocked) owns the SQLite connection. It sleeps until an event
 * arrives, then waits up to batch_ms for more (or until batch_max are queued, a flush is asked
 * for, or the ledger closes), takes up to batch_max events and inserts them with prepared
 * statements in one transaction, followed by a `dropped` row when events were lost since the
 * last batch. Ids are assigned here, in order, from one sequence shared by every event table.
 * After each transaction that gave rows ids, the ledger_on_commit() callback learns the last
 * one (capsem-vm turns it into a "ledger" event for capsemd's long-polls).
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
#include "event.h"

#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "fdutil.h"
#include "macro.h"

extern const char ledger_schema_sql[];

#define BUSY_TIMEOUT_MS 5000

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
	void (*on_commit)(void *userdata, int64_t last_id); /* ledger_on_commit() */
	void *on_commit_data;

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

int ledger_enqueue(struct ledger *l, struct lev *e)
{
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
		kd = &ledger_session_desc;
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
		int64_t id0 = l->next_id;
		size_t written = write_batch(l, list, &failed);
		while (list) {
			struct lev *e = list;
			list = e->next;
			free(e);
		}
		/* rows got ids: tell whoever wants to know (without our lock), before a flush that
		 * waits for this batch returns */
		if (l->next_id != id0) {
			pthread_mutex_lock(&l->mu);
			void (*cb)(void *, int64_t) = l->on_commit;
			void *cb_data = l->on_commit_data;
			pthread_mutex_unlock(&l->mu);
			if (cb)
				cb(cb_data, l->next_id - 1);
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
	if (v >= 1 && v <= 3) {
		/* version 2: the index that completes an exec row, model_call.ttfb_ms; version 3:
		 * exec.oom_killed; version 4: the fs table */
		r = exec_sql(db, "BEGIN IMMEDIATE");
		if (r == 0 && v == 1)
			r = exec_sql(
				db, "CREATE UNIQUE INDEX IF NOT EXISTS exec_by_exec_id ON exec "
				    "(exec_id); ALTER TABLE model_call ADD COLUMN ttfb_ms INTEGER");
		if (r == 0 && v <= 2)
			r = exec_sql(db, "ALTER TABLE exec ADD COLUMN oom_killed INTEGER NOT NULL "
					 "DEFAULT 0 CHECK (oom_killed IN (0, 1))");
		if (r == 0)
			r = exec_sql(
				db,
				"CREATE TABLE fs (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
				"action "
				"TEXT NOT NULL CHECK (action IN ('created', 'modified', 'deleted', "
				"'renamed', 'summary')), path TEXT NOT NULL, old_path TEXT, type "
				"TEXT "
				"CHECK (type IS NULL OR type IN ('file', 'dir', 'symlink', "
				"'other')), "
				"size INTEGER, count INTEGER, detail TEXT, source TEXT CHECK "
				"(source IS "
				"NULL OR source IN ('watch', 'scan'))); PRAGMA user_version = 4; "
				"COMMIT");
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
			"0), coalesce((SELECT max(id) FROM fs), 0), coalesce((SELECT max(id) "
			"FROM dropped), 0))",
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

void ledger_on_commit(struct ledger *l, void (*cb)(void *userdata, int64_t last_id), void *userdata)
{
	pthread_mutex_lock(&l->mu);
	l->on_commit = cb;
	l->on_commit_data = userdata;
	pthread_mutex_unlock(&l->mu);
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
			"SELECT id FROM policy UNION ALL SELECT id FROM fs UNION ALL SELECT id "
			"FROM "
			"dropped)) + 1 WHERE id = "
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
