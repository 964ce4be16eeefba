/* query.h - the session ledger's read side (docs/LEDGER.md): events as JSON, the sessions
 * directory (listing, lookup, pruning), one-line summaries of events for people.
 *
 * Databases are opened query-only, one connection per call, so any process (capsemd, the CLI)
 * and any thread may read while the VM's supervisor writes (WAL). Nothing here writes a ledger.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"

#define LEDGER_QUERY_DEFAULT 100u
#define LEDGER_QUERY_MAX 10000u
#define LEDGER_KEEP_SESSIONS 200u   /* session files capsemd keeps at start-up */
#define LEDGER_SESSIONS_MAX 100000u /* directory entries looked at */
#define LEDGER_SESSION_ID_MAX 72u   /* "<vm-id>-<boot>" with its NUL */

struct ledger_query {
	unsigned kinds; /* a mask of 1u << enum ledger_kind; 0 = every kind */
	int64_t since; /* >= 0: the first `limit` events with an id > since; < 0: the last `limit` */
	unsigned limit; /* 0 = LEDGER_QUERY_DEFAULT; capped at LEDGER_QUERY_MAX */
};

/* Events of the database at path as a JSON array ordered by id (oldest first); each event is
 * {"id": N, "kind": K, <column>: value, ...} with every column of its table (null = unknown;
 * argv and tool_names as arrays, flags as booleans); an empty array for a database its writer
 * is creating right now. -ENOENT (no file), -EBADMSG (not a ledger), -EPROTONOSUPPORT (a newer
 * schema), -errno. */
int ledger_query(const char *path, const struct ledger_query *q, json_t **ret);

/* A session id is "<vm-id>-<boot>": vm-id of [a-z0-9][a-z0-9_.-]{0,63}, boot a decimal number
 * 1..999999 without leading zeros. Its file is <dir>/<session id>.db. */
int ledger_session_id_valid(const char *s);
/* Split a valid session id. 0 or -EINVAL. */
int ledger_session_id_parse(const char *s, char ret_vm_id[65], unsigned *ret_boot);
/* "<dir>/<vm_id>-<boot>.db", malloc'ed in *ret. 0, -EINVAL or -ENOMEM. */
int ledger_session_path(const char *dir, const char *vm_id, unsigned boot, char **ret);

/* The session row of one database with its file's sizes: {"session", "vm_id", "vm_name",
 * "boot", "started", "ended", "version", "image", "pid", "size"} and, with with_counts,
 * "events": {"exec": N, ...} and "last_id". Errors as ledger_query. */
int ledger_session_info(const char *path, int with_counts, json_t **ret);

/* The sessions in dir, newest first (by the later mtime of the database and its WAL):
 * [{"session", "vm_id", "boot", "path", "size", "mtime"}] plus, with with_info, the session
 * row's fields (files that cannot be read get "error"). vm_id != NULL keeps that VM's only.
 * A missing directory is an empty list. */
int ledger_sessions_list(const char *dir, const char *vm_id, int with_info, json_t **ret);

/* The database of the latest session (highest boot) of vm_id. 0 with *ret_path, -ENOENT. */
int ledger_session_latest(const char *dir, const char *vm_id, char **ret_path);

/* Find a session by reference: a session id, else a VM id (its latest boot), else a unique VM
 * id prefix of at least 3 characters, else a VM name recorded in the session rows (the newest
 * session of that name). 0 with *ret_path, -ENOENT, or -EADDRNOTAVAIL (ambiguous prefix). */
int ledger_session_find(const char *dir, const char *ref, char **ret_path);

/* Keep the newest `keep` sessions of dir and remove the others (database, -wal and -shm),
 * except the session ids in keep_ids (NULL-terminated, may be NULL). Returns how many were
 * removed, or -errno. */
int ledger_sessions_prune(const char *dir, unsigned keep, char *const *keep_ids);

/* One line describing an event (without id, time and kind), e.g. "exit 3  12 ms  sh -c 'exit
 * 3'" or "block GET https://example.com/x  403  rule deny-all". Always NUL-terminates. */
void ledger_event_summary(const json_t *ev, char *out, size_t n);

/* Where a page starts. Keyset paging: a page is the `limit` matching rows on one side of a row
 * id, found by a range of the primary key, so the oldest page costs what the newest does. */
enum ledger_page_from {
	LEDGER_PAGE_NEWEST, /* the newest rows (then `offset` rows skipped: the older way) */
	LEDGER_PAGE_BEFORE, /* the newest rows with id < cursor: the next, older page */
	LEDGER_PAGE_AFTER,  /* the oldest rows with id > cursor: the previous, newer page */
};

struct ledger_page_req {
	enum ledger_kind kind; /* exec, net, dns, model_call, tool_call, policy or fs */
	const char
		*filter; /* a case-insensitive substring of the kind's text columns; NULL/"": any */
	const char *decision; /* "allow"/"block" (policy: its action); NULL: any */
	enum ledger_page_from from;
	int64_t cursor;	 /* a row id: BEFORE 1..INT64_MAX, AFTER 0..INT64_MAX-1 */
	unsigned offset; /* rows skipped, LEDGER_PAGE_NEWEST only */
	unsigned limit;	 /* 0 = 50, at most 1000 */
};

/* A page of rows for the web UI's activity tabs, newest first whatever its direction:
 * {"total": N, "rows": [event, ...], "next_before": ID|null, "prev_after": ID|null}. total
 * counts every matching row; next_before is the cursor of the older page (its rows have
 * id < next_before), null when no older row matches; prev_after that of the newer page (id >
 * prev_after), null when no newer row matches (for an empty page the cursors lead back across
 * the given one). -EINVAL for a decision on a kind without one, a cursor out of range or an
 * offset with a cursor; -errno as ledger_query. *ret (the caller's) is set on success only. */
int ledger_page(const char *path, const struct ledger_page_req *rq, json_t **ret);
/* Aggregates of a session for the web UI: {"counts": {table: N}, "model": {calls,
 * input_tokens, output_tokens, cost_usd}, "net": {allow, block}, "by_model": [{provider, model,
 * calls, input_tokens, output_tokens, cost_usd, avg_ms}], "tokens_series": [{t, model, tokens,
 * cost_usd}], "net_series": [{t, allow, block}], "bucket_s"} (t: bucket start, Unix seconds;
 * bucket_s 0 = 60). -errno as ledger_query. */
int ledger_stats(const char *path, unsigned bucket_s, json_t **ret);
