/* gateway-internal.h - what the MCP gateway's three files share (not part of gateway.h).
 *
 * gateway.c owns the gateway, its sessions (the guest's connections) and their dispatch, the
 * calls' bookkeeping and the ledger rows; gwserver.c supervises the configured MCP servers
 * (stdio: spawn, initialise, list, restart; HTTP: connect on a worker thread); gwcall.c runs
 * tools/list, tools/call and cancellation, and the worker jobs. Loop thread only, except the
 * worker job functions (gw_job_http_post and the jobs in gwcall.c), which touch only their
 * call's w_* fields and the read-only configuration.
 */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "builtin.h"
#include "config.h"
#include "gateway.h"
#include "list.h"
#include "gwcheck.h"
#include "gwconf.h"
#include "httpmcp.h"
#include "jsonrpc.h"
#include "macro.h"
#include "policy.h"
#include "unixlisten.h"

#define GW_PROTOCOL_VERSION "2025-06-18"
#define GW_CODE_BLOCKED (-32001)
#define GW_CODE_TIMEOUT (-32002)
#define GW_CODE_BUSY (-32003)
#define GW_CODE_UNAVAILABLE (-32603)
#define GW_MAX_QUEUED (64u << 20) /* bytes queued for writing to one peer */
#define GW_MAX_TOOLS 1024u	  /* tools of one server */
#define GW_MAX_PAGES 16u	  /* tools/list pages of one server */
#define GW_INTERNAL_TIMEOUT_MS 30000u
#define GW_BACKOFF_MIN_MS 500u
#define GW_BACKOFF_MAX_MS 30000u
#define GW_READ_CHUNK 65536u
#define GW_MAX_SESSIONS 64u /* connections at once; more are closed at once */

enum srv_state { SRV_DOWN, SRV_STARTING, SRV_READY };
enum call_kind { CK_TOOL, CK_INIT, CK_LIST, CK_HTTP_CONNECT, CK_CANCEL };

struct gw_session;
struct gw_server;

struct gw_call {
	struct list_link link; /* on gateway.calls, newest first */
	struct gateway *g;
	struct gw_session *s; /* NULL: internal, or the session is gone */
	json_t *agent_id;
	enum call_kind kind;
	struct gw_server *srv; /* NULL: a built-in tool */
	int64_t down_id;
	char server[GW_SERVER_NAME_MAX + 1];
	char tool[GW_TOOL_NAME_MAX + 1];
	size_t args_bytes;
	uint64_t t0_ms;
	uv_timer_t timer;
	bool answered; /* finished: no reply will be sent any more */
	bool in_work;
	bool freed;
	unsigned page;
	char rule[POLICY_MAX_NAME + 1];
	/* worker job */
	uv_work_t work;
	json_t *w_args;	  /* builtin: the arguments (a copy) */
	json_t *w_result; /* builtin: the CallToolResult; http connect: the tools */
	char *w_body;	  /* http: the message to POST */
	size_t w_len;
	json_t *w_id; /* http: the id to wait for (a copy) */
	char *w_session;
	struct httpmcp_result w_http;
	int w_rc;
	char w_err[256];
};

struct gw_wreq {
	uv_write_t req;
	size_t *queued;
	size_t len;
	char data[];
};

struct gw_session {
	struct list_link link; /* on gateway.sessions, newest first */
	struct gateway *g;
	uv_pipe_t pipe;
	struct jsonrpc_reader rd;
	unsigned pending;
	bool first_line_done, closing, read_eof, abort;
	uv_shutdown_t shutdown;
	uint32_t pid;
	char comm[32];
	size_t queued;
	uint64_t id;
};

struct gw_server {
	struct gateway *g;
	const struct gwconf_server *conf;
	enum srv_state state;
	bool http;
	uv_process_t proc;
	uv_pipe_t in, out;
	int open_handles;
	bool running;
	struct jsonrpc_reader rd;
	size_t queued;
	int64_t next_id;
	json_t *tools;	   /* the server's tools (original names), or NULL */
	json_t *tools_new; /* pages being collected */
	uv_timer_t timer;  /* restart back-off; the SIGKILL deadline when stopping */
	uint64_t backoff_ms, started_ms;
	char *session_id; /* http */
	bool connecting;  /* http: a connect job is queued */
	char why[200];	  /* why it is down */
	/* http: conf->url parsed once (url_ok), its path normalised: decided before every request
	 * and, as url.url, the URL the worker jobs send (read-only once the server exists) */
	struct builtin_url url;
	bool url_ok;
};

struct gateway {
	struct gateway_config cfg;
	char *socket_path, *home, *corp, *user;
	char *conf_dir; /* the config file's directory: stdio servers' default cwd */
	struct gwconf *conf;
	struct policy *policy;
	struct unix_listener listen; /* the sessions' socket */
	struct gw_server *servers;
	size_t n_servers;
	struct list_link sessions;
	unsigned n_sessions;
	struct list_link calls;
	struct builtin_env benv;
	json_t *builtin_tools;
	bool stopping;
	atomic_int stop; /* = stopping, for the worker threads' transfers */
	unsigned refs;	 /* open handles + queued jobs + 1 until gateway_stop */
	uint64_t next_session;
	struct gateway_stats stats;
};

/* ---- gateway.c ---- */

/* CLOCK_REALTIME / CLOCK_MONOTONIC in ms. */
uint64_t gw_now_ms(void);
uint64_t gw_mono_ms(void);
/* Drops a reference (a handle, a queued job, the gateway's own); frees at 0. */
void gw_unref(struct gateway *g);
/* The tool policy in force (reloaded when its files changed). */
const struct policy *gw_policy(struct gateway *g);
/* Ledger rows (when there is a ledger): a tool call (server "*" for tools/list; t0 its start in
 * ms since the epoch, result the result's bytes or -1) and a policy decision. */
void gw_record_call(struct gateway *g, const char *server, const char *tool, size_t args,
		    int64_t result, uint64_t t0, bool allowed, const char *rule, const char *error);
void gw_record_policy(struct gateway *g, const char *boundary, const char *subject, bool allowed,
		      const char *rule, enum policy_layer layer);
/* Queue msg (serialised with its newline) on stream; *queued counts the bytes waiting.
 * 0, -ENOBUFS past GW_MAX_QUEUED, or -errno. */
int gw_write_json(uv_stream_t *stream, size_t *queued, const json_t *msg);
/* Send msg (stolen) to the session's agent; a session that cannot queue it is closed. */
void gw_session_send(struct gw_session *s, json_t *msg);
/* A JSON-RPC error for id (borrowed) with data (stolen, may be NULL). */
void gw_send_error(struct gw_session *s, json_t *id, int code, const char *msg, json_t *data);
/* A call of kind for session s (NULL: internal); counted in g->refs. NULL on ENOMEM. */
struct gw_call *gw_call_new(struct gateway *g, struct gw_session *s, enum call_kind kind);
/* The call is over (answered, abandoned, or internal and done): unlink and free once no worker
 * job holds it. */
void gw_call_finish(struct gw_call *c);
/* The unanswered call sent to srv with the gateway's own id (down_id) id, or NULL. */
struct gw_call *gw_call_find_down(struct gateway *g, struct gw_server *srv, int64_t id);
/* Answer c's session (result stolen; else code, msg and data stolen), record it, finish c. */
void gw_call_answer(struct gw_call *c, json_t *result, int code, const char *msg, json_t *data);

/* ---- gwserver.c ---- */

/* Spawn (stdio) or connect (HTTP) srv, then initialise it; a spawn failure schedules a restart
 * (back-off). Nothing happens while the gateway stops or srv is already up. */
void gw_server_start(struct gw_server *srv);
/* Signal a running stdio server's process (nothing when it is not running). */
void gw_server_kill(struct gw_server *srv, int sig);
/* Start srv again after its back-off (0.5 s doubling to 30 s). */
void gw_server_schedule_restart(struct gw_server *srv);
/* The egress policy allows a POST to srv's URL; else why says which rule denied it. */
bool gw_http_allowed(struct gw_server *srv, char *why, size_t cap);
/* uv_close callbacks: a server's pipe or process handle (counted in open_handles), its timer;
 * each drops a gateway reference. */
void gw_on_server_handle_closed(uv_handle_t *h);
void gw_on_server_timer_closed(uv_handle_t *h);
/* Worker: POST one message to an HTTP server and wait for its response. */
void gw_job_http_post(uv_work_t *w);

/* ---- gwcall.c ---- */

/* Run fn(c) on libuv's thread pool; its result is handled back on the loop. 0 or -errno. */
int gw_queue_job(struct gw_call *c, uv_work_cb fn);
/* Tell c's server (if any) that c is cancelled (notifications/cancelled). */
void gw_send_cancel(struct gw_call *c, const char *reason);
/* The session's requests: tools/list, tools/call, notifications/cancelled. */
void gw_do_tools_list(struct gw_session *s, json_t *id);
void gw_do_tools_call(struct gw_session *s, json_t *id, json_t *params);
void gw_do_cancelled(struct gw_session *s, json_t *params);
