/* ledger.h - the session ledger's write side (docs/LEDGER.md): one SQLite database per VM
 * session, one writer thread, batched transactions, WAL.
 *
 * The VM's supervisor (capsem-vm) opens the ledger at start and records events from any thread:
 * the calls copy what they need, validate it, and queue it without touching the disk. A bounded
 * queue protects the caller: when it is full the event is counted as dropped and a `dropped` row
 * records how many were lost. The read side is query.h.
 *
 * Integer fields of the event structs use -1 for "not known" (stored as NULL); start from the
 * LEDGER_*_INIT initialisers so that every field you do not set is unknown. Strings may be NULL
 * (unknown); they are copied, truncated to the column's cap at a UTF-8 boundary, and invalid
 * UTF-8 bytes become '?'. A ts of -1 means "now".
 */
#pragma once

#include <jansson.h>
#include <stdint.h>

#define LEDGER_SCHEMA_VERSION 4
#define LEDGER_QUEUE_MAX 8192u	       /* events waiting for the writer */
#define LEDGER_QUEUE_BYTES (32u << 20) /* their size */
#define LEDGER_BATCH_MAX 256u	       /* events per transaction */
#define LEDGER_BATCH_MS 50u	       /* the longest an event waits for its batch */
#define LEDGER_ARGV_MAX 16384u	       /* bytes of an exec's argv as JSON text */
#define LEDGER_ARGC_MAX 4096u	       /* strings in argv / tool_names */
/* capsem-vm reads control-socket lines of at most 4096 bytes: a ledger command line built by
 * ledger_event_line() stays below this. */
#define LEDGER_LINE_MAX 4000u

enum ledger_kind {
	LEDGER_EXEC,
	LEDGER_NET,
	LEDGER_DNS,
	LEDGER_MODEL_CALL,
	LEDGER_TOOL_CALL,
	LEDGER_POLICY,
	LEDGER_FS,
	LEDGER_DROPPED, /* written by the ledger itself */
	LEDGER_KIND_MAX
};
#define LEDGER_KINDS_ALL ((1u << LEDGER_KIND_MAX) - 1u)

/* "exec", "net", "dns", "model_call", "tool_call", "policy", "fs", "dropped" (also the table
 * names). */
const char *ledger_kind_name(enum ledger_kind k);
/* A kind by name; "model" and "tool" are accepted for model_call and tool_call. The kind, or
 * -EINVAL. */
int ledger_kind_from_name(const char *s);
/* "net,dns" (commas, no spaces) -> a mask of (1u << kind). Empty or "all" = every kind.
 * 0 or -EINVAL. */
int ledger_kinds_parse(const char *list, unsigned *ret_mask);

struct ledger;

struct ledger_exec {
	int64_t ts;	/* start (EXEC sent), ms since the epoch */
	int64_t ts_end; /* EXIT (or ERROR / connection end) seen */
	const char *exec_id;
	const char *via;    /* "cli", "api", "mcp" or "file" */
	char *const *argv;  /* NULL-terminated; stored as a JSON array, capped at LEDGER_ARGV_MAX */
	int argv_truncated; /* the producer already shortened argv */
	int shell;	    /* argv[0] is a string run by /bin/sh -c */
	const char *cwd;    /* NULL: the agent's default (/root) */
	int tty;
	int64_t pid;	   /* the command's pid in the guest (STARTED) */
	int64_t exit_code; /* exited normally with this status */
	int64_t signal;	   /* killed by this signal number; also set with timed_out */
	int timed_out;	   /* killed by the agent at the exec's timeout */
	int oom_killed;	   /* the guest's OOM killer killed a process of this exec */
	int64_t duration_ms, cpu_user_ms, cpu_sys_ms, maxrss_kb;
	int64_t stdin_bytes, stdout_bytes, stderr_bytes;
	const char *error; /* why there is no exit status */
};
#define LEDGER_EXEC_INIT                                                                 \
	{                                                                                \
		.ts = -1, .ts_end = -1, .pid = -1, .exit_code = -1, .signal = -1,        \
		.duration_ms = -1, .cpu_user_ms = -1, .cpu_sys_ms = -1, .maxrss_kb = -1, \
		.stdin_bytes = -1, .stdout_bytes = -1, .stderr_bytes = -1                \
	}

struct ledger_net {
	int64_t ts, duration_ms;
	const char *request_id; /* the proxy's id for the request: joins model_call/policy rows */
	int64_t pid;		/* the guest process that opened the connection */
	const char *comm;
	const char *dst_ip;
	int64_t dst_port;
	const char *host;   /* the name (SNI, Host or the fake-IP mapping) */
	const char *scheme; /* "https", "http", "tls" (TLS not parsed as HTTP) or "tcp" */
	const char *method;
	const char *path; /* with the query, capped at 2048 bytes */
	int64_t status;
	int64_t bytes_up, bytes_down;
	const char *decision; /* "allow" or "block" (required) */
	const char *rule;
	const char *error;
};
#define LEDGER_NET_INIT                                                               \
	{                                                                             \
		.ts = -1, .duration_ms = -1, .pid = -1, .dst_port = -1, .status = -1, \
		.bytes_up = -1, .bytes_down = -1                                      \
	}

struct ledger_dns {
	int64_t ts;
	const char *qname; /* required */
	const char *qtype; /* "A", "AAAA", ... or "TYPE<n>" */
	int64_t rcode;
	const char *answer;   /* the address given to the guest (a fake IP) */
	const char *decision; /* "allow", "block", NULL when no rule was consulted */
	const char *rule;
};
#define LEDGER_DNS_INIT               \
	{                             \
		.ts = -1, .rcode = -1 \
	}

struct ledger_model_call {
	int64_t ts;	     /* the request reached the proxy */
	int64_t duration_ms; /* to the response's last byte */
	int64_t ttfb_ms;     /* to the response's first byte */
	const char *request_id;
	const char *provider, *model;
	int64_t input_tokens, output_tokens, cache_read_tokens, cache_write_tokens;
	int64_t tool_calls;
	char *const *tool_names; /* NULL-terminated, or NULL */
	const char *stop_reason;
	int streamed;
	double cost_usd; /* < 0: unknown */
};
#define LEDGER_MODEL_CALL_INIT                                                          \
	{                                                                               \
		.ts = -1, .duration_ms = -1, .ttfb_ms = -1, .input_tokens = -1,         \
		.output_tokens = -1, .cache_read_tokens = -1, .cache_write_tokens = -1, \
		.tool_calls = -1, .cost_usd = -1                                        \
	}

struct ledger_tool_call {
	int64_t ts, duration_ms;
	const char *server, *tool;
	int64_t args_bytes, result_bytes;
	const char *decision;
	const char *rule;
	const char *error;
};
#define LEDGER_TOOL_CALL_INIT                                                     \
	{                                                                         \
		.ts = -1, .duration_ms = -1, .args_bytes = -1, .result_bytes = -1 \
	}

struct ledger_policy {
	int64_t ts;
	const char *boundary; /* "dns", "conn", "http" or "tool" */
	const char *subject;  /* what was decided on, e.g. "api.openai.com:443" */
	const char *action;   /* "allow" or "block" */
	const char *rule;
	const char *layer; /* the policy layer the rule came from */
	const char *request_id;
};
#define LEDGER_POLICY_INIT \
	{                  \
		.ts = -1   \
	}

/* A change to a file of the workspace, seen by the host's file audit (src/workspace/wsaudit.c). */
struct ledger_fs {
	int64_t ts;
	const char
		*action;  /* "created", "modified", "deleted", "renamed" or "summary" (required) */
	const char *path; /* relative to the workspace (required) */
	const char *old_path; /* renamed: where it was */
	const char *type;     /* "file", "dir", "symlink" or "other" */
	int64_t size;	      /* bytes now (created, modified); summary: bytes now in its changes */
	int64_t count;	      /* summary: the changes below path that this row stands for */
	const char *detail;   /* summary: "created N, modified N, deleted N, renamed N" */
	const char *source;   /* "watch" (inotify) or "scan" (found by a reconciliation pass) */
};
#define LEDGER_FS_INIT                            \
	{                                         \
		.ts = -1, .size = -1, .count = -1 \
	}

/* The session row's descriptive fields (NULL: leave as is). */
struct ledger_session {
	const char *vm_id;
	const char *vm_name;
	const char *image;
	int64_t boot; /* -1: leave as is */
};

/* Create or open the database at path (0600; parent directories made 0700), apply the schema,
 * switch to WAL, add a session row (vm id and boot come from a file name "<vm-id>-<boot>.db"),
 * start the writer thread. -EBUSY when another writer has it open, -EPROTONOSUPPORT for a newer
 * schema, -EBADMSG for a file that is not a ledger, -errno. */
int ledger_open(const char *path, struct ledger **ret);
/* Flush everything queued, record the session's end, join the thread, close. NULL is fine. */
void ledger_close(struct ledger *l);
/* Call cb(userdata, last_id) after each transaction that gave rows ids (last_id: the highest
 * committed id; a session-row update alone does not count); NULL stops it. cb runs on the
 * writer thread, without the ledger's lock, and must be quick and thread-safe (e.g.
 * uv_async_send); it must not call the ledger. A flush returns only after the notice of the
 * batch it waited for. Thread-safe (a notice under way when cb is changed may still run). */
void ledger_on_commit(struct ledger *l, void (*cb)(void *userdata, int64_t last_id),
		      void *userdata);
/* Wait until every event queued before the call is committed (or counted lost). */
void ledger_flush(struct ledger *l);
/* Recovery, for a session whose writer died (capsem-vm killed): every exec row whose end was
 * never seen (no ts_end, no error) gets reason as its error and moves to a new id. Opens the
 * existing file at path as its writer (-EBUSY while a writer has it, -ENOENT when there is none)
 * and adds no session row. 0 with *ret_count (may be NULL) rows marked, or -errno. */
int ledger_mark_unfinished(const char *path, const char *reason, unsigned *ret_count);

/* Queue one event. 0, -EINVAL (a required field is missing, a value outside its range, a text
 * not among the allowed values), -ENOBUFS (queue full: counted as dropped), -ENOMEM,
 * -ESHUTDOWN (closing). Thread-safe; never waits for the disk. */
int ledger_exec(struct ledger *l, const struct ledger_exec *ev);
int ledger_net(struct ledger *l, const struct ledger_net *ev);
int ledger_dns(struct ledger *l, const struct ledger_dns *ev);
int ledger_model_call(struct ledger *l, const struct ledger_model_call *ev);
int ledger_tool_call(struct ledger *l, const struct ledger_tool_call *ev);
int ledger_policy(struct ledger *l, const struct ledger_policy *ev);
int ledger_fs(struct ledger *l, const struct ledger_fs *ev);
int ledger_session_update(struct ledger *l, const struct ledger_session *s);

/* Queue an event given as JSON: {"kind": K, <column>: value, ...} as docs/LEDGER.md lists
 * (K one of exec, net, dns, model_call, tool_call, policy, fs, or "session" for the session row's
 * vm_name/image). Strict: unknown keys, wrong types, values out of range and text over its cap
 * are refused (-EINVAL, -EMSGSIZE for sizes); null means unknown. The value is only read. */
int ledger_record_json(struct ledger *l, const json_t *ev);
/* The same validation without a ledger (tests, fuzzing). 0 or -errno as above. */
int ledger_check_json(const json_t *ev);

/* The control-socket command that carries an event object (kind included) to the VM's
 * supervisor: {"cmd":"ledger","event":{...}} and a newline, at most max bytes. 0 with *ret
 * (malloc'ed, NUL-terminated) and *ret_len, -EMSGSIZE when it does not fit, or -ENOMEM. */
int ledger_event_line(const json_t *ev, size_t max, char **ret, size_t *ret_len);

struct ledger_stats {
	uint64_t queued;       /* accepted into the queue */
	uint64_t written;      /* committed rows (events) */
	uint64_t dropped;      /* lost: queue full or write error */
	uint64_t write_errors; /* events whose insert failed */
	uint64_t batches;      /* transactions */
};
void ledger_get_stats(struct ledger *l, struct ledger_stats *ret);

/* Tuning for tests: queue and batch limits (0 = the default). */
struct ledger_opts {
	unsigned queue_max;
	unsigned batch_max;
	unsigned batch_ms;
};
int ledger_open_opts(const char *path, const struct ledger_opts *o, struct ledger **ret);

/* The current time in ms since the epoch. */
int64_t ledger_now_ms(void);
