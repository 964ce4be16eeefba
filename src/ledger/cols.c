/* cols.c - the ledger's event kinds and their columns, as constant tables.
 *
 * The caps here are the ones docs/LEDGER.md lists: the C API truncates text to them (at a UTF-8
 * boundary), ledger_record_json() refuses anything longer. Pure data and lookups; no I/O, any
 * thread.
 */
#include "cols.h"

#include <string.h>

#include "macro.h"

#define I64 INT64_MAX
#define PID_MAX_ ((int64_t)1 << 31)

static const char *const v_via[] = { "cli", "api", "mcp", "file", NULL };
static const char *const v_decision[] = { "allow", "block", NULL };
static const char *const v_scheme[] = { "https", "http", "tls", "tcp", NULL };
static const char *const v_boundary[] = { "dns", "conn", "http", "tool", NULL };
static const char *const v_reason[] = { "queue_full", "write_error", NULL };
static const char *const v_fs_action[] = { "created", "modified", "deleted",
					   "renamed", "summary",  NULL };
static const char *const v_fs_type[] = { "file", "dir", "symlink", "other", NULL };
static const char *const v_fs_source[] = { "watch", "scan", NULL };

/* the inside of a struct col: { NUM("x") } */
#define TS "ts", COL_INT, COL_REQUIRED, I64, NULL
#define NUM(n) n, COL_INT, 0, I64, NULL
#define TEXT(n, cap) n, COL_TEXT, 0, cap, NULL
#define BOOL(n) n, COL_BOOL, 0, 1, NULL

static const struct col c_exec[] = {
	{ TS },
	{ NUM("ts_end") },
	{ TEXT("exec_id", 64) },
	{ "via", COL_TEXT, 0, 8, v_via },
	{ "argv", COL_JSON, 0, LEDGER_ARGV_MAX, NULL },
	{ BOOL("argv_truncated") },
	{ BOOL("shell") },
	{ TEXT("cwd", 4096) },
	{ BOOL("tty") },
	{ "pid", COL_INT, 0, PID_MAX_, NULL },
	{ "exit_code", COL_INT, 0, 255, NULL },
	{ "signal", COL_INT, 0, 255, NULL },
	{ BOOL("timed_out") },
	{ BOOL("oom_killed") },
	{ NUM("duration_ms") },
	{ NUM("cpu_user_ms") },
	{ NUM("cpu_sys_ms") },
	{ NUM("maxrss_kb") },
	{ NUM("stdin_bytes") },
	{ NUM("stdout_bytes") },
	{ NUM("stderr_bytes") },
	{ TEXT("error", 1024) },
};

static const struct col c_net[] = {
	{ TS },
	{ NUM("duration_ms") },
	{ TEXT("request_id", 64) },
	{ "pid", COL_INT, 0, PID_MAX_, NULL },
	{ TEXT("comm", 64) },
	{ TEXT("dst_ip", 64) },
	{ "dst_port", COL_INT, 0, 65535, NULL },
	{ TEXT("host", 256) },
	{ "scheme", COL_TEXT, 0, 8, v_scheme },
	{ TEXT("method", 32) },
	{ TEXT("path", 2048) },
	{ "status", COL_INT, 0, 999, NULL },
	{ NUM("bytes_up") },
	{ NUM("bytes_down") },
	{ "decision", COL_TEXT, COL_REQUIRED, 8, v_decision },
	{ TEXT("rule", 256) },
	{ TEXT("error", 1024) },
};

static const struct col c_dns[] = {
	{ TS },
	{ "qname", COL_TEXT, COL_REQUIRED, 256, NULL },
	{ TEXT("qtype", 16) },
	{ "rcode", COL_INT, 0, 65535, NULL },
	{ TEXT("answer", 256) },
	{ "decision", COL_TEXT, 0, 8, v_decision }, /* NULL: no policy decision (bad query) */
	{ TEXT("rule", 256) },
};

static const struct col c_model[] = {
	{ TS },
	{ NUM("duration_ms") },
	{ NUM("ttfb_ms") },
	{ TEXT("request_id", 64) },
	{ TEXT("provider", 64) },
	{ TEXT("model", 256) },
	{ NUM("input_tokens") },
	{ NUM("output_tokens") },
	{ NUM("cache_read_tokens") },
	{ NUM("cache_write_tokens") },
	{ NUM("tool_calls") },
	{ "tool_names", COL_JSON, 0, 4096, NULL },
	{ TEXT("stop_reason", 64) },
	{ BOOL("streamed") },
	{ "cost_usd", COL_REAL, 0, 0, NULL },
};

static const struct col c_tool[] = {
	{ TS },
	{ NUM("duration_ms") },
	{ TEXT("server", 128) },
	{ TEXT("tool", 256) },
	{ NUM("args_bytes") },
	{ NUM("result_bytes") },
	{ "decision", COL_TEXT, COL_REQUIRED, 8, v_decision },
	{ TEXT("rule", 256) },
	{ TEXT("error", 1024) },
};

static const struct col c_policy[] = {
	{ TS },
	{ "boundary", COL_TEXT, COL_REQUIRED, 8, v_boundary },
	{ TEXT("subject", 1024) },
	{ "action", COL_TEXT, COL_REQUIRED, 8, v_decision },
	{ TEXT("rule", 256) },
	{ TEXT("layer", 64) },
	{ TEXT("request_id", 64) },
};

static const struct col c_fs[] = {
	{ TS },
	{ "action", COL_TEXT, COL_REQUIRED, 16, v_fs_action },
	{ "path", COL_TEXT, COL_REQUIRED, 4096, NULL },
	{ TEXT("old_path", 4096) },
	{ "type", COL_TEXT, 0, 8, v_fs_type },
	{ NUM("size") },
	{ NUM("count") },
	{ TEXT("detail", 256) },
	{ "source", COL_TEXT, 0, 8, v_fs_source },
};

static const struct col c_dropped[] = {
	{ TS },
	{ "count", COL_INT, COL_REQUIRED, I64, NULL },
	{ "reason", COL_TEXT, COL_REQUIRED, 16, v_reason },
};

#define KIND(n, c)                  \
	{                           \
		n, c, ELEMENTSOF(c) \
	}

static const struct kind_desc kinds[LEDGER_KIND_MAX] = {
	[LEDGER_EXEC] = KIND("exec", c_exec),
	[LEDGER_NET] = KIND("net", c_net),
	[LEDGER_DNS] = KIND("dns", c_dns),
	[LEDGER_MODEL_CALL] = KIND("model_call", c_model),
	[LEDGER_TOOL_CALL] = KIND("tool_call", c_tool),
	[LEDGER_POLICY] = KIND("policy", c_policy),
	[LEDGER_FS] = KIND("fs", c_fs),
	[LEDGER_DROPPED] = KIND("dropped", c_dropped),
};

_Static_assert(ELEMENTSOF(c_exec) <= LEDGER_MAX_COLS, "too many columns");
_Static_assert(ELEMENTSOF(c_net) <= LEDGER_MAX_COLS, "too many columns");
_Static_assert(ELEMENTSOF(c_model) <= LEDGER_MAX_COLS, "too many columns");

const struct kind_desc *cols_kind(enum ledger_kind k)
{
	return (unsigned)k < LEDGER_KIND_MAX ? &kinds[k] : NULL;
}

int cols_find(const struct kind_desc *kd, const char *name)
{
	for (size_t i = 0; i < kd->n_cols; i++)
		if (streq(kd->cols[i].name, name))
			return (int)i;
	return -1;
}

int cols_value_allowed(const struct col *c, const char *s)
{
	if (!c->values)
		return 1;
	for (size_t i = 0; c->values[i]; i++)
		if (streq(c->values[i], s))
			return 1;
	return 0;
}
