/* test-ledger.c - the session ledger against real SQLite files in a temporary directory: every
 * event kind written and read back, batching, queue overflow and the dropped rows, a reader
 * while the writer writes (WAL), validation of JSON events, file modes, close and flush, one
 * writer per file, the sessions directory, summaries, and the web UI's keyset pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cols.h"
#include "fdutil.h"
#include "ledger.h"
#include "macro.h"
#include "query.h"

static char tmpdir[256];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-ledger-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	return rm_rf(tmpdir) < 0 ? -1 : 0;
}

/* <tmpdir>/sessions/<name>.db, in a static buffer */
static const char *db_path(const char *name)
{
	static char p[512];
	snprintf(p, sizeof(p), "%s/sessions/%s.db", tmpdir, name);
	return p;
}

static char sessions_dir[300];
static const char *sdir(void)
{
	snprintf(sessions_dir, sizeof(sessions_dir), "%s/sessions", tmpdir);
	return sessions_dir;
}

static json_t *query_all(const char *path, unsigned kinds, int64_t since, unsigned limit)
{
	struct ledger_query q = { .kinds = kinds, .since = since, .limit = limit };
	json_t *j = NULL;
	assert_int_equal(ledger_query(path, &q, &j), 0);
	assert_true(json_is_array(j));
	return j;
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static json_int_t jint(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

/* ---- names ---- */

static void test_kinds(void **state)
{
	unsigned m;
	assert_string_equal(ledger_kind_name(LEDGER_MODEL_CALL), "model_call");
	assert_int_equal(ledger_kind_from_name("exec"), LEDGER_EXEC);
	assert_int_equal(ledger_kind_from_name("model"), LEDGER_MODEL_CALL);
	assert_int_equal(ledger_kind_from_name("tool"), LEDGER_TOOL_CALL);
	assert_int_equal(ledger_kind_from_name("session"), -EINVAL);
	assert_int_equal(ledger_kinds_parse("net,dns", &m), 0);
	assert_int_equal(m, (1u << LEDGER_NET) | (1u << LEDGER_DNS));
	assert_int_equal(ledger_kinds_parse("", &m), 0);
	assert_int_equal(m, LEDGER_KINDS_ALL);
	assert_int_equal(ledger_kinds_parse("all", &m), 0);
	assert_int_equal(ledger_kinds_parse("net,", &m), -EINVAL);
	assert_int_equal(ledger_kinds_parse("net,bogus", &m), -EINVAL);
	assert_int_equal(ledger_kinds_parse(",net", &m), -EINVAL);
}

/* ---- every kind, written and read back ---- */

static void write_one_of_each(struct ledger *l)
{
	char *argv[] = { "sh", "-c", "exit 3", NULL };
	struct ledger_exec ex = LEDGER_EXEC_INIT;
	ex.ts = 1000;
	ex.ts_end = 1250;
	ex.exec_id = "e1";
	ex.via = "cli";
	ex.argv = argv;
	ex.cwd = "/root";
	ex.pid = 42;
	ex.exit_code = 3;
	ex.duration_ms = 250;
	ex.stdout_bytes = 0;
	assert_int_equal(ledger_exec(l, &ex), 0);

	struct ledger_net n = LEDGER_NET_INIT;
	n.ts = 2000;
	n.host = "api.example.com";
	n.dst_ip = "198.18.0.7";
	n.dst_port = 443;
	n.scheme = "https";
	n.method = "POST";
	n.path = "/v1/messages?beta=true";
	n.status = 200;
	n.bytes_up = 1234;
	n.bytes_down = 56789;
	n.decision = "allow";
	n.rule = "providers";
	n.request_id = "r1";
	n.pid = 7;
	n.comm = "node";
	assert_int_equal(ledger_net(l, &n), 0);

	struct ledger_dns d = LEDGER_DNS_INIT;
	d.qname = "evil.example";
	d.qtype = "A";
	d.rcode = 3;
	d.decision = "block";
	d.rule = "default";
	assert_int_equal(ledger_dns(l, &d), 0);

	char *tools[] = { "Read", "Bash", NULL };
	struct ledger_model_call m = LEDGER_MODEL_CALL_INIT;
	m.provider = "anthropic";
	m.model = "claude-x";
	m.input_tokens = 100;
	m.output_tokens = 20;
	m.cache_read_tokens = 0;
	m.tool_calls = 2;
	m.tool_names = tools;
	m.stop_reason = "tool_use";
	m.streamed = 1;
	m.cost_usd = 0.0125;
	m.request_id = "r1";
	assert_int_equal(ledger_model_call(l, &m), 0);

	struct ledger_tool_call t = LEDGER_TOOL_CALL_INIT;
	t.server = "local";
	t.tool = "fetch_http";
	t.args_bytes = 12;
	t.result_bytes = 340;
	t.duration_ms = 50;
	t.decision = "allow";
	assert_int_equal(ledger_tool_call(l, &t), 0);

	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.boundary = "dns";
	p.subject = "evil.example";
	p.action = "block";
	p.rule = "default";
	p.layer = "defaults";
	assert_int_equal(ledger_policy(l, &p), 0);
}

static void test_every_kind(void **state)
{
	const char *path = db_path("0123456789ab-2");
	struct ledger *l = NULL;
	assert_int_equal(ledger_open(path, &l), 0);
	struct ledger_session s = { .vm_name = "web", .image = "minimal", .boot = -1 };
	assert_int_equal(ledger_session_update(l, &s), 0);
	write_one_of_each(l);
	ledger_close(l);

	json_t *ev = query_all(path, 0, -1, 0);
	assert_int_equal(json_array_size(ev), 6);
	static const char *const kinds[] = { "exec",	   "net",	"dns",
					     "model_call", "tool_call", "policy" };
	for (size_t i = 0; i < 6; i++) {
		json_t *e = json_array_get(ev, i);
		assert_string_equal(jstr(e, "kind"), kinds[i]);
		assert_int_equal(jint(e, "id"), (json_int_t)i + 1);
	}
	json_t *e = json_array_get(ev, 0);
	assert_int_equal(jint(e, "ts"), 1000);
	assert_int_equal(jint(e, "exit_code"), 3);
	assert_true(json_is_null(json_object_get(e, "signal")));
	assert_true(json_is_false(json_object_get(e, "timed_out")));
	assert_true(json_is_false(json_object_get(e, "tty")));
	assert_true(json_is_null(json_object_get(e, "stdin_bytes")));
	assert_int_equal(jint(e, "stdout_bytes"), 0);
	assert_string_equal(jstr(e, "via"), "cli");
	json_t *argv = json_object_get(e, "argv");
	assert_int_equal(json_array_size(argv), 3);
	assert_string_equal(json_string_value(json_array_get(argv, 2)), "exit 3");

	e = json_array_get(ev, 1);
	assert_string_equal(jstr(e, "path"), "/v1/messages?beta=true");
	assert_int_equal(jint(e, "bytes_down"), 56789);
	assert_int_equal(jint(e, "dst_port"), 443);
	assert_true(jint(e, "ts") == 2000);

	e = json_array_get(ev, 2);
	assert_string_equal(jstr(e, "decision"), "block");
	assert_true(jint(e, "ts") > 1600000000000LL); /* ts -1: now */

	e = json_array_get(ev, 3);
	assert_true(json_is_true(json_object_get(e, "streamed")));
	assert_true(json_number_value(json_object_get(e, "cost_usd")) > 0.0124);
	assert_string_equal(json_string_value(json_array_get(json_object_get(e, "tool_names"), 1)),
			    "Bash");
	assert_true(json_is_null(json_object_get(e, "cache_write_tokens")));
	assert_int_equal(jint(e, "cache_read_tokens"), 0);
	json_decref(ev);

	/* filtered by kind, since, limit */
	ev = query_all(path, (1u << LEDGER_NET) | (1u << LEDGER_POLICY), -1, 0);
	assert_int_equal(json_array_size(ev), 2);
	assert_string_equal(jstr(json_array_get(ev, 1), "kind"), "policy");
	json_decref(ev);
	ev = query_all(path, 0, 4, 0);
	assert_int_equal(json_array_size(ev), 2);
	assert_int_equal(jint(json_array_get(ev, 0), "id"), 5);
	json_decref(ev);
	ev = query_all(path, 0, -1, 2); /* the last two */
	assert_int_equal(json_array_size(ev), 2);
	assert_int_equal(jint(json_array_get(ev, 0), "id"), 5);
	json_decref(ev);
	ev = query_all(path, 0, 0, 2); /* the first two */
	assert_int_equal(jint(json_array_get(ev, 1), "id"), 2);
	json_decref(ev);

	/* the session row */
	json_t *info = NULL;
	assert_int_equal(ledger_session_info(path, 1, &info), 0);
	assert_string_equal(jstr(info, "session"), "0123456789ab-2");
	assert_string_equal(jstr(info, "vm_id"), "0123456789ab");
	assert_string_equal(jstr(info, "vm_name"), "web");
	assert_string_equal(jstr(info, "image"), "minimal");
	assert_int_equal(jint(info, "boot"), 2);
	assert_true(jint(info, "ended") >= jint(info, "started"));
	assert_int_equal(jint(info, "pid"), getpid());
	assert_int_equal(jint(json_object_get(info, "events"), "exec"), 1);
	assert_int_equal(jint(json_object_get(info, "events"), "dropped"), 0);
	assert_int_equal(jint(info, "last_id"), 6);
	assert_true(jint(info, "size") > 0);
	json_decref(info);

	/* reopened, the ids go on; a second session row. The same exec_id completes the row
	 * written before (and moves it to the new id) rather than adding one. */
	assert_int_equal(ledger_open(path, &l), 0);
	write_one_of_each(l);
	ledger_close(l);
	ev = query_all(path, 1u << LEDGER_EXEC, -1, 0);
	assert_int_equal(json_array_size(ev), 1);
	assert_int_equal(jint(json_array_get(ev, 0), "id"), 7);
	json_decref(ev);
}

/* the column tables and schema.sql agree */
static void test_schema_matches(void **state)
{
	const char *path = db_path("schema-1");
	struct ledger *l = NULL;
	sqlite3 *db = NULL;
	assert_int_equal(ledger_open(path, &l), 0);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	for (int k = 0; k < LEDGER_KIND_MAX; k++) {
		const struct kind_desc *kd = cols_kind(k);
		char sql[128];
		sqlite3_stmt *st;
		snprintf(sql, sizeof(sql), "SELECT name FROM pragma_table_info('%s') ORDER BY cid",
			 kd->name);
		assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st, 0), "id");
		for (size_t i = 0; i < kd->n_cols; i++) {
			assert_int_equal(sqlite3_step(st), SQLITE_ROW);
			assert_string_equal((const char *)sqlite3_column_text(st, 0),
					    kd->cols[i].name);
		}
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	ledger_close(l);
}

/* ---- files ---- */

static void test_file_modes(void **state)
{
	const char *path = db_path("modes-1");
	char wal[600];
	struct stat st;
	struct ledger *l = NULL;
	mode_t old = umask(0);
	int r = ledger_open(path, &l);
	umask(old);
	assert_int_equal(r, 0);
	struct ledger_dns d = LEDGER_DNS_INIT;
	d.qname = "a.example";
	d.decision = "allow";
	assert_int_equal(ledger_dns(l, &d), 0);
	ledger_flush(l);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(sdir(), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);

	/* one writer per file (checked from another process: see ledger.c on POSIX locks) */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ledger *l2 = NULL;
		_exit(ledger_open(path, &l2) == -EBUSY ? 0 : 1);
	}
	int ws = 0;
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	ledger_close(l);

	/* the WAL is gone after the last close; the journal mode stays WAL */
	assert_true(stat(wal, &st) < 0);
	sqlite3 *db;
	sqlite3_stmt *q;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	sqlite3_close(db);
	/* reading a closed session leaves no -wal or -shm behind */
	json_decref(query_all(path, 0, -1, 0));
	assert_true(stat(wal, &st) < 0);
	snprintf(wal, sizeof(wal), "%s-shm", path);
	assert_true(stat(wal, &st) < 0);
}

static void test_bad_files(void **state)
{
	struct ledger *l = NULL;
	json_t *j = NULL;
	struct ledger_query q = { .since = -1 };
	const char *path = db_path("garbage-1");
	assert_int_equal(ledger_query(db_path("missing-1"), &q, &j), -ENOENT);
	assert_int_equal(mkdir_p(sdir(), 0700), 0);
	assert_int_equal(
		write_file_atomic(path, "this is not a database, not at all....", 38, 0600), 0);
	assert_int_equal(ledger_open(path, &l), -EBADMSG);
	assert_int_equal(ledger_query(path, &q, &j), -EBADMSG);

	/* a newer schema is refused by both sides */
	path = db_path("newer-1");
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(db, "CREATE TABLE x(a); PRAGMA user_version = 99", NULL, NULL, NULL),
		SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(ledger_open(path, &l), -EPROTONOSUPPORT);
	assert_int_equal(ledger_query(path, &q, &j), -EPROTONOSUPPORT);
}

/* A version 2 ledger (before exec.oom_killed and the fs table) is read as it is, and upgraded in
 * place by the next writer; its rows keep their values and read oom_killed 0. */
static void test_upgrade_from_v2(void **state)
{
	const char *path = db_path("upgrade-1");
	struct ledger *l = NULL;
	struct ledger_exec ex = LEDGER_EXEC_INIT;
	sqlite3 *db;
	assert_int_equal(ledger_open(path, &l), 0);
	ex.ts = 1;
	ex.exec_id = "old";
	ex.exit_code = 3;
	assert_int_equal(ledger_exec(l, &ex), 0);
	ledger_close(l);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "ALTER TABLE exec DROP COLUMN oom_killed; DROP TABLE fs; "
				      "PRAGMA user_version = 2",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	json_t *old = query_all(path, 0, -1, 0); /* every kind: the missing table is no error */
	assert_int_equal(json_array_size(old), 1);
	json_decref(old);
	assert_int_equal(ledger_open(path, &l), 0);
	ex.exec_id = "new";
	ex.oom_killed = 1;
	assert_int_equal(ledger_exec(l, &ex), 0);
	struct ledger_fs fs = LEDGER_FS_INIT;
	fs.action = "created";
	fs.path = "a/b.txt";
	fs.type = "file";
	fs.size = 5;
	assert_int_equal(ledger_fs(l, &fs), 0);
	ledger_close(l);
	json_t *f = query_all(path, 1u << LEDGER_FS, -1, 0);
	assert_int_equal(json_array_size(f), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(f, 0), "path")),
			    "a/b.txt");
	assert_int_equal(jint(json_array_get(f, 0), "size"), 5);
	json_decref(f);
	json_t *ev = query_all(path, 1u << LEDGER_EXEC, -1, 0);
	assert_int_equal(json_array_size(ev), 2);
	assert_int_equal(jint(json_array_get(ev, 0), "exit_code"), 3);
	assert_true(json_is_false(json_object_get(json_array_get(ev, 0), "oom_killed")));
	assert_true(json_is_true(json_object_get(json_array_get(ev, 1), "oom_killed")));
	json_decref(ev);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), LEDGER_SCHEMA_VERSION);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- batching, overflow, flush, close ---- */

static void test_batching(void **state)
{
	const char *path = db_path("batch-1");
	struct ledger *l = NULL;
	struct ledger_stats st;
	assert_int_equal(ledger_open(path, &l), 0);
	for (int i = 0; i < 5000; i++) {
		struct ledger_net n = LEDGER_NET_INIT;
		n.decision = "allow";
		n.bytes_up = i;
		assert_int_equal(ledger_net(l, &n), 0);
	}
	ledger_close(l);
	json_t *ev = query_all(path, 0, 0, LEDGER_QUERY_MAX);
	assert_int_equal(json_array_size(ev), 5000);
	for (size_t i = 0; i < 5000; i++) {
		json_t *e = json_array_get(ev, i);
		assert_int_equal(jint(e, "id"), (json_int_t)i + 1);
		assert_int_equal(jint(e, "bytes_up"), (json_int_t)i);
	}
	json_decref(ev);

	/* the stats: all written, in batches of many */
	assert_int_equal(ledger_open(path, &l), 0);
	for (int i = 0; i < 2000; i++) {
		struct ledger_dns d = LEDGER_DNS_INIT;
		d.qname = "x.example";
		d.decision = "allow";
		assert_int_equal(ledger_dns(l, &d), 0);
	}
	ledger_flush(l);
	ledger_get_stats(l, &st);
	assert_int_equal(st.queued, 2000);
	assert_int_equal(st.written, 2000);
	assert_int_equal(st.dropped, 0);
	assert_true(st.batches >= 2000 / LEDGER_BATCH_MAX);
	assert_true(st.batches <= 200);
	ledger_close(l);
}

static void test_overflow(void **state)
{
	const char *path = db_path("overflow-1");
	struct ledger *l = NULL;
	struct ledger_opts o = { .queue_max = 16 };
	struct ledger_stats st;
	uint64_t refused = 0;
	assert_int_equal(ledger_open_opts(path, &o, &l), 0);
	for (int i = 0; i < 9000; i++) {
		struct ledger_tool_call t = LEDGER_TOOL_CALL_INIT;
		t.decision = "allow";
		int r = ledger_tool_call(l, &t);
		assert_true(r == 0 || r == -ENOBUFS);
		refused += r == -ENOBUFS;
	}
	ledger_flush(l);
	ledger_get_stats(l, &st);
	ledger_close(l);
	assert_true(refused > 0);
	assert_int_equal(st.dropped, refused);
	assert_int_equal(st.written + st.dropped, 9000);

	json_t *ev = query_all(path, 1u << LEDGER_DROPPED, 0, LEDGER_QUERY_MAX);
	json_int_t sum = 0;
	size_t i;
	json_t *e;
	assert_true(json_array_size(ev) >= 1);
	json_array_foreach(ev, i, e)
	{
		assert_string_equal(jstr(e, "reason"), "queue_full");
		sum += jint(e, "count");
	}
	assert_int_equal(sum, (json_int_t)refused);
	json_decref(ev);
	ev = query_all(path, 1u << LEDGER_TOOL_CALL, 0, LEDGER_QUERY_MAX);
	assert_int_equal(json_array_size(ev), st.written);
	json_decref(ev);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_close_and_flush(void **state)
{
	const char *path = db_path("close-1");
	struct ledger *l = NULL;
	struct ledger_opts o = { .batch_ms = 60000 }; /* the batch window never ends by itself */
	assert_int_equal(ledger_open_opts(path, &o, &l), 0);
	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.boundary = "http";
	p.action = "allow";
	assert_int_equal(ledger_policy(l, &p), 0);
	int64_t t0 = mono_ms();
	ledger_flush(l); /* a flush does not wait for the window */
	assert_true(mono_ms() - t0 < 5000);
	json_t *ev = query_all(path, 0, -1, 0);
	assert_int_equal(json_array_size(ev), 1);
	json_decref(ev);
	ledger_flush(l); /* nothing queued */
	for (int i = 0; i < 100; i++)
		assert_int_equal(ledger_policy(l, &p), 0);
	t0 = mono_ms();
	ledger_close(l); /* neither does close, and it writes everything */
	assert_true(mono_ms() - t0 < 5000);
	ev = query_all(path, 0, 0, 1000);
	assert_int_equal(json_array_size(ev), 101);
	json_decref(ev);
	ledger_close(NULL);
}

/* ---- commit notices (ledger_on_commit) ---- */

struct commits {
	pthread_mutex_t mu;
	int64_t last;
	unsigned calls;
	int monotonic;
};

static void on_commit(void *userdata, int64_t last_id)
{
	struct commits *c = userdata;
	pthread_mutex_lock(&c->mu);
	if (last_id <= c->last)
		c->monotonic = 0;
	c->last = last_id;
	c->calls++;
	pthread_mutex_unlock(&c->mu);
}

static void test_on_commit(void **state)
{
	const char *path = db_path("commit-1");
	struct ledger *l = NULL;
	struct commits c = { .mu = PTHREAD_MUTEX_INITIALIZER, .monotonic = 1 };
	assert_int_equal(ledger_open(path, &l), 0);
	ledger_on_commit(l, on_commit, &c);
	/* a session-row update alone gives no row an id: no notice */
	struct ledger_session s = { .vm_name = "web", .boot = -1 };
	assert_int_equal(ledger_session_update(l, &s), 0);
	ledger_flush(l);
	assert_int_equal(c.calls, 0);
	for (int i = 0; i < 600; i++) {
		struct ledger_dns d = LEDGER_DNS_INIT;
		d.qname = "x.example";
		assert_int_equal(ledger_dns(l, &d), 0);
	}
	ledger_flush(l); /* the notice of the last batch comes before the flush returns */
	pthread_mutex_lock(&c.mu);
	assert_int_equal(c.last, 600);
	assert_true(c.calls >= 1 && c.calls <= 600);
	assert_true(c.monotonic);
	pthread_mutex_unlock(&c.mu);
	/* the notice names the last committed id, the one a reader finds */
	json_t *ev = query_all(path, 0, 599, 0);
	assert_int_equal(json_array_size(ev), 1);
	assert_int_equal(jint(json_array_get(ev, 0), "id"), 600);
	json_decref(ev);
	ledger_on_commit(l, NULL, NULL);
	struct ledger_dns d = LEDGER_DNS_INIT;
	d.qname = "y.example";
	assert_int_equal(ledger_dns(l, &d), 0);
	ledger_close(l);
	assert_int_equal(c.last, 600);
}

/* ---- a reader while the writer writes ---- */

struct producer {
	struct ledger *l;
	int n;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	for (int i = 0; i < p->n; i++) {
		struct ledger_net n = LEDGER_NET_INIT;
		n.decision = i % 2 ? "allow" : "block";
		n.host = "h.example";
		ledger_net(p->l, &n);
		if (i % 50 == 0) {
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static void test_concurrent_reader(void **state)
{
	const char *path = db_path("concurrent-1");
	struct ledger *l = NULL;
	pthread_t th[2];
	struct producer p = { .n = 3000 };
	assert_int_equal(ledger_open(path, &l), 0);
	p.l = l;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, produce, &p), 0);
	json_int_t last = 0;
	int reads = 0;
	for (;;) {
		json_t *info = NULL;
		assert_int_equal(ledger_session_info(path, 1, &info), 0);
		json_int_t now = jint(info, "last_id");
		json_decref(info);
		assert_true(now >= last);
		last = now;
		json_t *ev = query_all(path, 1u << LEDGER_NET, -1, 10);
		assert_true(json_array_size(ev) <= 10);
		json_decref(ev);
		reads++;
		if (now >= 6000)
			break;
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
		if (reads > 4000)
			fail_msg("the writer did not keep up");
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ledger_close(l);
	json_t *ev = query_all(path, 0, 0, LEDGER_QUERY_MAX);
	assert_int_equal(json_array_size(ev), 6000);
	json_decref(ev);
}

/* ---- JSON events ---- */

static int check(const char *text)
{
	json_error_t err;
	json_t *j = json_loads(text, JSON_ALLOW_NUL, &err);
	if (!j)
		fail_msg("bad test JSON %s: %s", text, err.text);
	int r = ledger_check_json(j);
	json_decref(j);
	return r;
}

static void test_record_json(void **state)
{
	/* good */
	assert_int_equal(check("{\"kind\":\"exec\",\"argv\":[\"sh\",\"-c\",\"exit 3\"],"
			       "\"exit_code\":3,\"tty\":false,\"via\":\"api\",\"cwd\":null}"),
			 0);
	assert_int_equal(check("{\"kind\":\"net\",\"decision\":\"allow\"}"), 0);
	assert_int_equal(check("{\"kind\":\"model_call\",\"cost_usd\":0.5,\"tool_names\":[]}"), 0);
	assert_int_equal(check("{\"kind\":\"session\",\"vm_name\":\"web\"}"), 0);
	/* kinds */
	assert_int_equal(check("{\"kind\":\"bogus\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"dropped\",\"count\":3,\"reason\":\"queue_full\"}"),
			 -EINVAL);
	assert_int_equal(check("{\"kind\":\"model\"}"), -EINVAL); /* aliases are for queries */
	assert_int_equal(check("{\"argv\":[]}"), -EINVAL);
	assert_int_equal(check("{\"kind\":3}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"session\\u0000\"}"), -EINVAL); /* found by fuzzing */
	assert_int_equal(check("[\"exec\"]"), -EINVAL);
	/* types */
	assert_int_equal(check("{\"kind\":\"exec\",\"exit_code\":\"3\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"tty\":1}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"argv\":\"sh\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"argv\":[\"sh\",3]}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"exit_code\":3.0}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"model_call\",\"cost_usd\":\"1\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"model_call\",\"cost_usd\":-1}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"cwd\":\"/a\\u0000b\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"argv\":[\"a\\u0000b\"]}"), -EINVAL);
	/* ranges and values */
	assert_int_equal(check("{\"kind\":\"exec\",\"exit_code\":256}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"exit_code\":-1}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"net\",\"decision\":\"allow\",\"dst_port\":65536}"),
			 -EINVAL);
	assert_int_equal(check("{\"kind\":\"net\",\"decision\":\"maybe\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"via\":\"ssh\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"policy\",\"boundary\":\"file\",\"action\":\"block\"}"),
			 -EINVAL);
	/* required */
	assert_int_equal(check("{\"kind\":\"net\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"dns\",\"decision\":\"allow\"}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"dns\",\"qname\":\"x\"}"), 0);
	assert_int_equal(check("{\"kind\":\"net\",\"decision\":null}"), -EINVAL);
	/* unknown keys, the implicit id */
	assert_int_equal(check("{\"kind\":\"exec\",\"exitcode\":3}"), -EINVAL);
	assert_int_equal(check("{\"kind\":\"exec\",\"id\":3}"), -EINVAL);
	/* sizes */
	char big[LEDGER_ARGV_MAX + 200];
	snprintf(big, sizeof(big), "{\"kind\":\"exec\",\"exec_id\":\"%065d\"}", 0);
	assert_int_equal(check(big), -EMSGSIZE);
	snprintf(big, sizeof(big), "{\"kind\":\"exec\",\"exec_id\":\"%064d\"}", 0);
	assert_int_equal(check(big), 0);
	int o = snprintf(big, sizeof(big), "{\"kind\":\"exec\",\"argv\":[\"");
	memset(big + o, 'x', LEDGER_ARGV_MAX);
	snprintf(big + o + LEDGER_ARGV_MAX, sizeof(big) - o - LEDGER_ARGV_MAX, "\"]}");
	assert_int_equal(check(big), -EMSGSIZE);
	json_t *many = json_pack("{s:s, s:[]}", "kind", "exec", "argv");
	for (unsigned i = 0; i <= LEDGER_ARGC_MAX; i++)
		json_array_append_new(json_object_get(many, "argv"), json_string(""));
	assert_int_equal(ledger_check_json(many), -EMSGSIZE);
	json_decref(many);

	/* and recorded */
	const char *path = db_path("json-1");
	struct ledger *l = NULL;
	assert_int_equal(ledger_open(path, &l), 0);
	json_t *j = json_loads("{\"kind\":\"exec\",\"argv\":[\"sh\",\"-c\",\"exit 3\"],"
			       "\"exit_code\":3,\"tty\":true,\"via\":\"api\",\"ts\":5,"
			       "\"argv_truncated\":true}",
			       0, NULL);
	assert_int_equal(ledger_record_json(l, j), 0);
	json_object_set_new(j, "via", json_string("nope"));
	assert_int_equal(ledger_record_json(l, j), -EINVAL);
	json_decref(j);
	j = json_loads("{\"kind\":\"session\",\"vm_name\":\"x\",\"image\":\"debian\"}", 0, NULL);
	assert_int_equal(ledger_record_json(l, j), 0);
	json_decref(j);
	ledger_close(l);
	json_t *ev = query_all(path, 0, -1, 0);
	assert_int_equal(json_array_size(ev), 1);
	json_t *e = json_array_get(ev, 0);
	assert_int_equal(jint(e, "exit_code"), 3);
	assert_int_equal(jint(e, "ts"), 5);
	assert_true(json_is_true(json_object_get(e, "tty")));
	assert_true(json_is_true(json_object_get(e, "argv_truncated")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(e, "argv"), 2)),
			    "exit 3");
	json_decref(ev);
	json_t *info = NULL;
	assert_int_equal(ledger_session_info(path, 0, &info), 0);
	assert_string_equal(jstr(info, "vm_name"), "x");
	assert_string_equal(jstr(info, "image"), "debian");
	assert_string_equal(jstr(info, "vm_id"), "json"); /* from the file name */
	assert_int_equal(jint(info, "boot"), 1);
	json_decref(info);
}

/* ---- the C API: caps, cleaning, validation ---- */

static void test_c_api_caps(void **state)
{
	const char *path = db_path("caps-1");
	struct ledger *l = NULL;
	char host[600], bad[8] = { 'a', (char)0xff, 'b', (char)0xc3, (char)0xa9, 0 };
	assert_int_equal(ledger_open(path, &l), 0);
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	struct ledger_net n = LEDGER_NET_INIT;
	n.decision = "allow";
	n.host = host;
	n.path = bad;
	assert_int_equal(ledger_net(l, &n), 0);
	n.decision = "perhaps";
	assert_int_equal(ledger_net(l, &n), -EINVAL);
	n.decision = NULL;
	assert_int_equal(ledger_net(l, &n), -EINVAL);
	n.decision = "block";
	n.dst_port = 70000;
	assert_int_equal(ledger_net(l, &n), -EINVAL);

	/* a multi-byte character is never cut: 255 x 'a' then "é" (2 bytes) in 256 */
	char name[300];
	memset(name, 'a', 255);
	memcpy(name + 255, "\xc3\xa9", 3);
	struct ledger_dns d = LEDGER_DNS_INIT;
	d.qname = name;
	d.decision = "allow";
	assert_int_equal(ledger_dns(l, &d), 0);

	/* argv over its cap: shortened and flagged */
	static char arg[1000];
	char *argv[101];
	memset(arg, 'z', sizeof(arg) - 1);
	for (int i = 0; i < 100; i++)
		argv[i] = arg;
	argv[100] = NULL;
	struct ledger_exec ex = LEDGER_EXEC_INIT;
	ex.argv = argv;
	assert_int_equal(ledger_exec(l, &ex), 0);
	ex.exit_code = 300;
	assert_int_equal(ledger_exec(l, &ex), -EINVAL);
	ledger_close(l);

	json_t *ev = query_all(path, 0, -1, 0);
	assert_int_equal(json_array_size(ev), 3);
	json_t *e = json_array_get(ev, 0);
	assert_int_equal(strlen(jstr(e, "host")), 256);
	assert_string_equal(jstr(e, "path"), "a?b\xc3\xa9");
	e = json_array_get(ev, 1);
	assert_int_equal(strlen(jstr(e, "qname")), 255);
	e = json_array_get(ev, 2);
	assert_true(json_is_true(json_object_get(e, "argv_truncated")));
	char *dump = json_dumps(json_object_get(e, "argv"), JSON_COMPACT);
	assert_true(strlen(dump) <= LEDGER_ARGV_MAX);
	assert_true(json_array_size(json_object_get(e, "argv")) >= 16);
	free(dump);
	json_decref(ev);
}

/* an exec row is written at the start and completed at the end (same exec_id, new id); rows
 * whose end never came are marked by recovery */
static void test_exec_completion(void **state)
{
	const char *path = db_path("0123456789ab-1");
	struct ledger *l = NULL;
	char *argv[] = { "sleep", "30", NULL };
	assert_int_equal(ledger_open(path, &l), 0);
	struct ledger_exec st = LEDGER_EXEC_INIT;
	st.ts = 5000;
	st.exec_id = "aa";
	st.via = "api";
	st.argv = argv;
	st.shell = 1;
	st.cwd = "/tmp";
	assert_int_equal(ledger_exec(l, &st), 0);
	st.exec_id = "bb";
	assert_int_equal(ledger_exec(l, &st), 0);
	st.exec_id = "cc";
	assert_int_equal(ledger_exec(l, &st), 0);
	ledger_flush(l);
	json_t *ev = query_all(path, 1u << LEDGER_EXEC, -1, 0);
	assert_int_equal(json_array_size(ev), 3);
	json_t *e = json_array_get(ev, 0);
	assert_int_equal(jint(e, "id"), 1);
	assert_true(json_is_null(json_object_get(e, "ts_end")));
	assert_true(json_is_null(json_object_get(e, "exit_code")));
	assert_true(json_is_null(json_object_get(e, "error")));
	json_decref(ev);

	/* the end of "aa": only what the end knows */
	struct ledger_exec end = LEDGER_EXEC_INIT;
	end.ts = 5000;
	end.ts_end = 5300;
	end.exec_id = "aa";
	end.pid = 7;
	end.exit_code = 0;
	end.stdout_bytes = 12;
	end.oom_killed = 1;
	assert_int_equal(ledger_exec(l, &end), 0);
	ledger_close(l);
	ev = query_all(path, 1u << LEDGER_EXEC, -1, 0);
	assert_int_equal(json_array_size(ev), 3);
	e = json_array_get(ev, 2); /* moved to the end */
	assert_string_equal(jstr(e, "exec_id"), "aa");
	assert_int_equal(jint(e, "id"), 4);
	assert_int_equal(jint(e, "ts"), 5000);
	assert_int_equal(jint(e, "ts_end"), 5300);
	assert_int_equal(jint(e, "exit_code"), 0);
	assert_int_equal(jint(e, "pid"), 7);
	assert_int_equal(jint(e, "stdout_bytes"), 12);
	assert_true(json_is_true(json_object_get(e, "oom_killed")));
	assert_string_equal(jstr(e, "via"), "api"); /* kept from the start */
	assert_string_equal(jstr(e, "cwd"), "/tmp");
	assert_true(json_is_true(json_object_get(e, "shell")));
	assert_int_equal(json_array_size(json_object_get(e, "argv")), 2);
	json_decref(ev);

	/* the writer died: recovery marks "bb" and "cc", and only them */
	unsigned n = 99;
	assert_int_equal(ledger_mark_unfinished(path, "capsem-vm was killed", &n), 0);
	assert_int_equal(n, 2);
	ev = query_all(path, 1u << LEDGER_EXEC, -1, 0);
	assert_int_equal(json_array_size(ev), 3);
	assert_string_equal(jstr(json_array_get(ev, 0), "exec_id"), "aa");
	for (size_t i = 1; i < 3; i++) {
		e = json_array_get(ev, i);
		assert_string_equal(jstr(e, "error"), "capsem-vm was killed");
		assert_true(json_is_null(json_object_get(e, "exit_code")));
		assert_true(jint(e, "id") > 4);
	}
	json_decref(ev);
	assert_int_equal(ledger_mark_unfinished(path, "again", &n), 0);
	assert_int_equal(n, 0);
	/* while a writer has it, recovery keeps off; a missing file is not created */
	assert_int_equal(ledger_open(path, &l), 0);
	assert_int_equal(ledger_mark_unfinished(path, "x", NULL), -EBUSY);
	ledger_close(l);
	assert_int_equal(ledger_mark_unfinished(db_path("0123456789ab-9"), "x", NULL), -ENOENT);
}

/* ---- the sessions directory ---- */

static void make_session(const char *id, const char *name)
{
	struct ledger *l = NULL;
	assert_int_equal(ledger_open(db_path(id), &l), 0);
	struct ledger_session s = { .vm_name = name, .boot = -1 };
	assert_int_equal(ledger_session_update(l, &s), 0);
	ledger_close(l);
	struct timespec ts = { 0, 20000000 }; /* distinct mtimes */
	nanosleep(&ts, NULL);
}

static void test_sessions(void **state)
{
	char vm[65];
	unsigned boot;
	char *p = NULL;
	json_t *list = NULL;
	assert_true(ledger_session_id_valid("0123456789ab-1"));
	assert_true(ledger_session_id_valid("web-box.1-12"));
	assert_false(ledger_session_id_valid("0123456789ab-0"));
	assert_false(ledger_session_id_valid("0123456789ab-01"));
	assert_false(ledger_session_id_valid("0123456789ab"));
	assert_false(ledger_session_id_valid("-1"));
	assert_false(ledger_session_id_valid("Web-1"));
	assert_false(ledger_session_id_valid("../x-1"));
	assert_false(ledger_session_id_valid("a-1234567"));
	assert_int_equal(ledger_session_id_parse("ab-cd-12", vm, &boot), 0);
	assert_string_equal(vm, "ab-cd");
	assert_int_equal(boot, 12);
	assert_int_equal(ledger_session_path("/d", "0123456789ab", 3, &p), 0);
	assert_string_equal(p, "/d/0123456789ab-3.db");
	free(p);
	assert_int_equal(ledger_session_path("/d", "../x", 3, &p), -EINVAL);

	assert_int_equal(ledger_sessions_list(sdir(), NULL, 1, &list), 0); /* no directory yet */
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);

	make_session("aaaaaaaaaaa1-1", "web");
	make_session("aaaaaaaaaaa1-2", "web");
	make_session("bbbbbbbbbbb2-1", "db");
	make_session("aaaaaaaaaaa3-1", NULL);

	assert_int_equal(ledger_sessions_list(sdir(), NULL, 1, &list), 0);
	assert_int_equal(json_array_size(list), 4);
	assert_string_equal(jstr(json_array_get(list, 0), "session"), "aaaaaaaaaaa3-1");
	assert_string_equal(jstr(json_array_get(list, 1), "vm_name"), "db");
	assert_int_equal(jint(json_array_get(list, 2), "boot"), 2);
	json_decref(list);
	assert_int_equal(ledger_sessions_list(sdir(), "aaaaaaaaaaa1", 0, &list), 0);
	assert_int_equal(json_array_size(list), 2);
	json_decref(list);

	assert_int_equal(ledger_session_latest(sdir(), "aaaaaaaaaaa1", &p), 0);
	assert_string_equal(p, db_path("aaaaaaaaaaa1-2"));
	free(p);
	assert_int_equal(ledger_session_latest(sdir(), "cccccccccccc", &p), -ENOENT);

	assert_int_equal(ledger_session_find(sdir(), "aaaaaaaaaaa1-1", &p), 0); /* a session id */
	assert_string_equal(p, db_path("aaaaaaaaaaa1-1"));
	free(p);
	assert_int_equal(ledger_session_find(sdir(), "aaaaaaaaaaa1", &p), 0); /* a VM id */
	assert_string_equal(p, db_path("aaaaaaaaaaa1-2"));
	free(p);
	assert_int_equal(ledger_session_find(sdir(), "bbb", &p), 0); /* a prefix */
	assert_string_equal(p, db_path("bbbbbbbbbbb2-1"));
	free(p);
	assert_int_equal(ledger_session_find(sdir(), "aaa", &p), -EADDRNOTAVAIL);
	assert_int_equal(ledger_session_find(sdir(), "web", &p), 0); /* a name: the newest */
	assert_string_equal(p, db_path("aaaaaaaaaaa1-2"));
	free(p);
	assert_int_equal(ledger_session_find(sdir(), "nothing", &p), -ENOENT);
	assert_int_equal(ledger_session_find(sdir(), "../sessions/aaaaaaaaaaa1-1", &p), -ENOENT);

	/* prune: keep the newest 2 and a named one */
	char *keep[] = { "aaaaaaaaaaa1-1", NULL };
	assert_int_equal(ledger_sessions_prune(sdir(), 2, keep), 1);
	assert_int_equal(ledger_sessions_list(sdir(), NULL, 0, &list), 0);
	assert_int_equal(json_array_size(list), 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_not_equal(jstr(json_array_get(list, i), "session"), "aaaaaaaaaaa1-2");
	json_decref(list);
	assert_int_equal(ledger_sessions_prune(sdir(), 200, NULL), 0);
}

/* ---- summaries ---- */

static void summary(const char *text, char *out, size_t n)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	ledger_event_summary(j, out, n);
	json_decref(j);
}

static void test_summary(void **state)
{
	char s[256];
	summary("{\"kind\":\"exec\",\"exit_code\":3,\"duration_ms\":12,\"argv\":[\"sh\",\"-c\","
		"\"exit 3\"],\"via\":\"cli\"}",
		s, sizeof(s));
	assert_string_equal(s, "exit 3  12 ms  sh -c 'exit 3'  (cli)");
	summary("{\"kind\":\"exec\",\"timed_out\":true,\"signal\":9,\"argv\":[\"it's\"]}", s,
		sizeof(s));
	assert_string_equal(s, "timeout  'it'\\''s'");
	summary("{\"kind\":\"net\",\"decision\":\"block\",\"method\":\"GET\",\"scheme\":\"https\","
		"\"host\":\"x.example\",\"path\":\"/a\",\"status\":403,\"rule\":\"deny\"}",
		s, sizeof(s));
	assert_string_equal(s, "block GET https://x.example/a  403  rule deny");
	summary("{\"kind\":\"net\",\"decision\":\"allow\",\"scheme\":\"tcp\",\"host\":\"db\","
		"\"dst_port\":5432,\"bytes_up\":20480}",
		s, sizeof(s));
	assert_string_equal(s, "allow tcp db:5432  up 20 KiB");
	summary("{\"kind\":\"dns\",\"decision\":\"block\",\"qtype\":\"A\",\"qname\":\"e.x\","
		"\"rcode\":3}",
		s, sizeof(s));
	assert_string_equal(s, "block A e.x  rcode 3 (NXDOMAIN)");
	summary("{\"kind\":\"dropped\",\"count\":7,\"reason\":\"queue_full\"}", s, sizeof(s));
	assert_string_equal(s, "7 events lost (queue_full)");
	summary("{\"kind\":\"tool_call\",\"decision\":\"allow\",\"server\":\"local\",\"tool\":"
		"\"fetch\\nx\"}",
		s, sizeof(s));
	assert_string_equal(s, "allow local.fetch x");
	summary("{\"kind\":\"model_call\",\"provider\":\"openai\",\"model\":\"gpt\","
		"\"input_tokens\":5,\"tool_calls\":2,\"tool_names\":[\"a\",\"b\"],\"cost_usd\":0."
		"5}",
		s, sizeof(s));
	assert_string_equal(s, "openai gpt  in 5  tools 2 a,b  $0.5000");
	/* bounded */
	summary("{\"kind\":\"policy\",\"action\":\"block\",\"boundary\":\"http\",\"subject\":"
		"\"https://very.long.example/path\"}",
		s, 12);
	assert_int_equal(strlen(s), 11);
}

/* ---- pages for the web UI (keyset paging) ---- */

static json_t *page(const char *path, const char *decision, enum ledger_page_from from,
		    int64_t cursor, unsigned offset, unsigned limit)
{
	struct ledger_page_req rq = { .kind = LEDGER_NET,
				      .decision = decision,
				      .from = from,
				      .cursor = cursor,
				      .offset = offset,
				      .limit = limit };
	json_t *j = NULL;
	assert_int_equal(ledger_page(path, &rq, &j), 0);
	assert_true(json_is_array(json_object_get(j, "rows")));
	return j;
}

/* the ids of a page's rows (newest first, checked) appended to ids; returns how many */
static size_t page_ids(const json_t *pg, json_int_t *ids, size_t n)
{
	json_t *rows = json_object_get(pg, "rows"), *r;
	size_t i;
	json_array_foreach(rows, i, r)
	{
		ids[n + i] = jint(r, "id");
		if (i)
			assert_true(ids[n + i] < ids[n + i - 1]);
	}
	return json_array_size(rows);
}

/* a cursor of a page: its value, or -1 for null */
static json_int_t cur(const json_t *pg, const char *k)
{
	json_t *v = json_object_get(pg, k);
	assert_true(json_is_null(v) || json_is_integer(v));
	return json_is_null(v) ? -1 : json_integer_value(v);
}

static void test_page(void **state)
{
	const char *path = db_path("page-1");
	struct ledger *l = NULL;
	json_int_t net[25], blocked[12], got[32];
	size_t nb = 0;
	assert_int_equal(ledger_open(path, &l), 0);
	for (int i = 0; i < 25; i++) {
		/* a DNS row between two requests: the ids of net have gaps (one id space) */
		struct ledger_dns d = LEDGER_DNS_INIT;
		d.qname = "x.example";
		assert_int_equal(ledger_dns(l, &d), 0);
		struct ledger_net n = LEDGER_NET_INIT;
		n.decision = i % 2 ? "block" : "allow";
		assert_int_equal(ledger_net(l, &n), 0);
		net[24 - i] = 2 * i + 2; /* newest first */
		if (i % 2)
			blocked[11 - nb++] = 2 * i + 2;
	}
	ledger_close(l);
	assert_int_equal(nb, 12);

	/* the newest page, then older ones by next_before until there is none */
	json_t *pg = page(path, NULL, LEDGER_PAGE_NEWEST, 0, 0, 10);
	assert_int_equal(jint(pg, "total"), 25);
	assert_int_equal(cur(pg, "prev_after"), -1);
	size_t n = page_ids(pg, got, 0), pages = 1;
	while (cur(pg, "next_before") >= 0) {
		json_int_t b = cur(pg, "next_before");
		assert_int_equal(b, got[n - 1]);
		json_decref(pg);
		pg = page(path, NULL, LEDGER_PAGE_BEFORE, b, 0, 10);
		size_t k = page_ids(pg, got, n);
		assert_int_equal(cur(pg, "prev_after"), got[n]); /* its newest row */
		n += k;
		pages++;
	}
	assert_int_equal(pages, 3);
	assert_int_equal(n, 25);
	assert_memory_equal(got, net, sizeof(net));
	/* the oldest page (5 rows) leads back: prev_after gives the page above it */
	json_int_t pa = cur(pg, "prev_after");
	assert_int_equal(pa, got[20]);
	json_decref(pg);
	pg = page(path, NULL, LEDGER_PAGE_AFTER, pa, 0, 10);
	assert_int_equal(page_ids(pg, got, 0), 10);
	assert_memory_equal(got, &net[10], 10 * sizeof(json_int_t));
	assert_int_equal(cur(pg, "next_before"), net[19]);
	assert_int_equal(cur(pg, "prev_after"), net[10]);
	pa = cur(pg, "prev_after");
	json_decref(pg);
	pg = page(path, NULL, LEDGER_PAGE_AFTER, pa, 0, 10);
	assert_int_equal(page_ids(pg, got, 0), 10);
	assert_memory_equal(got, net, 10 * sizeof(json_int_t));
	assert_int_equal(cur(pg, "prev_after"), -1); /* the newest again */
	assert_int_equal(cur(pg, "next_before"), net[9]);
	json_decref(pg);

	/* after=0: the oldest rows */
	pg = page(path, NULL, LEDGER_PAGE_AFTER, 0, 0, 10);
	assert_int_equal(page_ids(pg, got, 0), 10);
	assert_memory_equal(got, &net[15], 10 * sizeof(json_int_t));
	assert_int_equal(cur(pg, "next_before"), -1);
	json_decref(pg);

	/* the older way: an offset gives the same rows, and the cursors */
	pg = page(path, NULL, LEDGER_PAGE_NEWEST, 0, 10, 10);
	assert_int_equal(page_ids(pg, got, 0), 10);
	assert_memory_equal(got, &net[10], 10 * sizeof(json_int_t));
	assert_int_equal(cur(pg, "prev_after"), net[10]);
	assert_int_equal(cur(pg, "next_before"), net[19]);
	json_decref(pg);

	/* a filter: the blocked ones only, both ways */
	pg = page(path, "block", LEDGER_PAGE_NEWEST, 0, 0, 5);
	assert_int_equal(jint(pg, "total"), 12);
	n = page_ids(pg, got, 0);
	while (cur(pg, "next_before") >= 0) {
		json_int_t b = cur(pg, "next_before");
		json_decref(pg);
		pg = page(path, "block", LEDGER_PAGE_BEFORE, b, 0, 5);
		n += page_ids(pg, got, n);
	}
	assert_int_equal(n, 12);
	assert_memory_equal(got, blocked, sizeof(json_int_t) * 12);
	json_decref(pg);

	/* past either end: an empty page whose cursor leads back */
	pg = page(path, NULL, LEDGER_PAGE_BEFORE, 1, 0, 10);
	assert_int_equal(json_array_size(json_object_get(pg, "rows")), 0);
	assert_int_equal(cur(pg, "next_before"), -1);
	assert_int_equal(cur(pg, "prev_after"), 0);
	json_decref(pg);
	pg = page(path, NULL, LEDGER_PAGE_AFTER, 1000, 0, 10);
	assert_int_equal(json_array_size(json_object_get(pg, "rows")), 0);
	assert_int_equal(cur(pg, "prev_after"), -1);
	assert_int_equal(cur(pg, "next_before"), 1001);
	json_decref(pg);

	/* bad requests */
	json_t *j = NULL;
	struct ledger_page_req rq = { .kind = LEDGER_NET, .from = LEDGER_PAGE_BEFORE, .cursor = 0 };
	assert_int_equal(ledger_page(path, &rq, &j), -EINVAL);
	rq.cursor = 5;
	rq.offset = 3;
	assert_int_equal(ledger_page(path, &rq, &j), -EINVAL);
	rq = (struct ledger_page_req){ .kind = LEDGER_NET,
				       .from = LEDGER_PAGE_AFTER,
				       .cursor = INT64_MAX };
	assert_int_equal(ledger_page(path, &rq, &j), -EINVAL);
	rq = (struct ledger_page_req){ .kind = LEDGER_EXEC, .decision = "allow" };
	assert_int_equal(ledger_page(path, &rq, &j), -EINVAL);
	assert_null(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds),
		cmocka_unit_test_setup_teardown(test_every_kind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_schema_matches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_and_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_on_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_c_api_caps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_completion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_page, setup, teardown),
		cmocka_unit_test(test_summary),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
