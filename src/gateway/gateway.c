/* gateway.c - the per-VM MCP gateway: sessions, servers, dispatch, limits, ledger (gateway.h).
 *
 * Sessions: each connection on the listening socket (guest vsock port 5003) may start with the
 * relay's preamble line ("CAPSEM-MCP-RELAY/1 pid=N comm=NAME", docs/PROTOCOL.md), then carries
 * newline-delimited JSON-RPC (src/mcp/jsonrpc.h: at most 4 MiB a message, strict JSON). The
 * gateway answers initialize, ping, tools/list and tools/call; notifications/cancelled from the
 * agent is forwarded to the server running the call; everything else gets -32601. At most
 * [limits] max_pending requests in flight per session (-32003 past that); every tools/call has
 * a timeout (-32002, and the server gets notifications/cancelled).
 *
 * Servers: stdio servers are spawned with their configured argv and a minimal environment,
 * initialised (initialize, notifications/initialized, tools/list with pagination), re-listed on
 * notifications/tools/list_changed, and restarted with back-off (0.5 s doubling to 30 s) when
 * they exit; the calls they had in flight get -32603. HTTP servers are driven from worker
 * threads (httpmcp.c), and their URL is decided by the egress policy (POST host:port/path)
 * before every request: a denied URL makes the server unavailable. Built-in tools (builtin.c)
 * run on worker threads; their URLs are decided (GET/HEAD) before the job is queued. Either
 * way the path is normalised first (builtin_url_parse: as the egress proxy forwards a path)
 * and libcurl is given the URL with that path, so a server reads the path that was decided.
 *
 * Tool policy: policy_decide_tool(server, tool) on every tools/list (blocked tools are hidden)
 * and every tools/call (blocked: -32001 naming the rule). The policy is reloaded when its files
 * change. Ledger: a tool_call row per tools/call and per tools/list (server "*"), a policy row
 * (boundary "tool") per call decision.
 *
 * Trust boundary: everything on a session is the guest's (hostile: capped, parsed by the fuzzed
 * jsonrpc parser, never trusted for sizes); configured servers are the host user's but their
 * output is parsed with the same caps. Threads: capsem-vm's loop thread owns all state; worker
 * jobs get copies (json_deep_copy) and hand results back through uv_queue_work's after-callback.
 */
#include "gateway.h"

#include <assert.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

#include "builtin.h"
#include "config.h"
#include "gwcheck.h"
#include "gwconf.h"
#include "httpmcp.h"
#include "jsonrpc.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"
#include "strv.h"
#include "unixsock.h"

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
	struct gw_call *prev, *next;
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
	struct gw_session *prev, *next;
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
	int lfd;
	uv_poll_t listen;
	bool listening;
	struct gw_server *servers;
	size_t n_servers;
	struct gw_session *sessions;
	unsigned n_sessions;
	struct gw_call *calls;
	struct builtin_env benv;
	json_t *builtin_tools;
	bool stopping;
	atomic_int stop; /* = stopping, for the worker threads' transfers */
	unsigned refs;	 /* open handles + queued jobs + 1 until gateway_stop */
	uint64_t next_session;
	struct gateway_stats stats;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void gw_free(struct gateway *g)
{
	for (size_t i = 0; i < g->n_servers; i++) {
		json_decref(g->servers[i].tools);
		json_decref(g->servers[i].tools_new);
		free(g->servers[i].session_id);
		jsonrpc_reader_done(&g->servers[i].rd);
	}
	free(g->servers);
	gwconf_free(g->conf);
	policy_free(g->policy);
	json_decref(g->builtin_tools);
	safe_close(g->benv.workspace_fd);
	free(g->socket_path);
	free(g->conf_dir);
	free(g->home);
	free(g->corp);
	free(g->user);
	free(g);
}

static void gw_unref(struct gateway *g)
{
	assert(g->refs > 0);
	if (--g->refs == 0)
		gw_free(g);
}

static void on_handle_closed(uv_handle_t *h)
{
	gw_unref(h->data);
}

/* ---- policy ---- */

static const struct policy *gw_policy(struct gateway *g)
{
	if (g->cfg.policy)
		return g->cfg.policy(g->cfg.policy_userdata);
	if (g->policy && policy_files_changed(g->policy)) {
		struct policy *np = NULL;
		char err[512] = "";
		int r = policy_load(g->corp, g->user, &np, err, sizeof(err));
		if (r < 0) {
			log_debug("gateway: keeping the old policy: %s", err);
		} else {
			policy_free(g->policy);
			g->policy = np;
		}
	}
	return g->policy;
}

/* ---- ledger ---- */

static void record_call(struct gateway *g, const char *server, const char *tool, size_t args,
			int64_t result, uint64_t t0, bool allowed, const char *rule,
			const char *error)
{
	if (!g->cfg.ledger)
		return;
	struct ledger_tool_call ev = LEDGER_TOOL_CALL_INIT;
	ev.ts = (int64_t)t0;
	ev.duration_ms = (int64_t)(now_ms() - t0);
	ev.server = server;
	ev.tool = tool;
	ev.args_bytes = (int64_t)args;
	ev.result_bytes = result;
	ev.decision = allowed ? "allow" : "block";
	ev.rule = rule && rule[0] ? rule : NULL;
	ev.error = error;
	(void)ledger_tool_call(g->cfg.ledger, &ev);
}

static void record_policy(struct gateway *g, const char *boundary, const char *subject,
			  bool allowed, const char *rule, enum policy_layer layer)
{
	if (!g->cfg.ledger)
		return;
	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.ts = (int64_t)now_ms();
	p.boundary = boundary;
	p.subject = subject;
	p.action = allowed ? "allow" : "block";
	p.rule = rule;
	p.layer = policy_layer_name(layer);
	(void)ledger_policy(g->cfg.ledger, &p);
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
	struct gw_wreq *w = container_of(req, struct gw_wreq, req);
	if (w->queued)
		*w->queued -= w->len;
	free(w);
}

/* Queue msg (serialised with its newline) on stream. -ENOBUFS past GW_MAX_QUEUED. */
static int write_json(uv_stream_t *stream, size_t *queued, const json_t *msg)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = jsonrpc_dump(msg, &text, &len);
	if (r < 0)
		return r;
	if (*queued + len > GW_MAX_QUEUED)
		return -ENOBUFS;
	struct gw_wreq *w = malloc(sizeof(*w) + len);
	if (!w)
		return -ENOMEM;
	memcpy(w->data, text, len);
	w->len = len;
	w->queued = queued;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
	r = uv_write(&w->req, stream, &b, 1, on_written);
	if (r < 0) {
		free(w);
		return r;
	}
	*queued += len;
	return 0;
}

static void session_close(struct gw_session *s);

/* Send msg (stolen) to the session's agent. */
static void session_send(struct gw_session *s, json_t *msg)
{
	if (!msg)
		return;
	if (s && !s->closing && write_json((uv_stream_t *)&s->pipe, &s->queued, msg) < 0) {
		log_debug("gateway: session %" PRIu64 ": cannot queue a reply; closing", s->id);
		s->abort = true;
		session_close(s);
	}
	json_decref(msg);
}

static void send_error(struct gw_session *s, json_t *id, int code, const char *msg, json_t *data)
{
	session_send(s, jsonrpc_error(id, code, msg, data));
}

/* ---- calls ---- */

static void call_free_now(uv_handle_t *h)
{
	struct gw_call *c = h->data;
	struct gateway *g = c->g;
	json_decref(c->agent_id);
	json_decref(c->w_args);
	json_decref(c->w_result);
	json_decref(c->w_id);
	free(c->w_body);
	free(c->w_session);
	httpmcp_result_done(&c->w_http);
	free(c);
	gw_unref(g);
}

static struct gw_call *call_new(struct gateway *g, struct gw_session *s, enum call_kind kind)
{
	struct gw_call *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->g = g;
	c->s = s;
	c->kind = kind;
	c->t0_ms = now_ms();
	uv_timer_init(g->cfg.loop, &c->timer);
	c->timer.data = c;
	g->refs++;
	c->next = g->calls;
	if (g->calls)
		g->calls->prev = c;
	g->calls = c;
	if (s && kind == CK_TOOL)
		s->pending++;
	return c;
}

/* The call is over (answered, abandoned, or internal and done): unlink and free once no worker
 * job holds it. */
static void call_finish(struct gw_call *c)
{
	if (c->freed)
		return;
	c->answered = true;
	struct gw_session *s = c->s;
	c->s = NULL;
	if (s && c->kind == CK_TOOL && s->pending > 0 && --s->pending == 0 && s->read_eof)
		session_close(s); /* the agent half-closed and has all its answers */
	uv_timer_stop(&c->timer);
	if (c->in_work)
		return; /* the job's after-callback finishes it */
	c->freed = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->g->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	uv_close((uv_handle_t *)&c->timer, call_free_now);
}

static struct gw_call *call_find_down(struct gateway *g, struct gw_server *srv, int64_t id)
{
	for (struct gw_call *c = g->calls; c; c = c->next)
		if (!c->answered && c->srv == srv && c->down_id == id && c->kind != CK_CANCEL)
			return c;
	return NULL;
}

/* Answer a tool call with a result (stolen) or an error, record it, finish it. */
static void call_answer(struct gw_call *c, json_t *result, int code, const char *msg, json_t *data)
{
	struct gateway *g = c->g;
	if (c->answered) {
		json_decref(result);
		json_decref(data);
		return;
	}
	int64_t rbytes = -1;
	char err[300] = "";
	if (result) {
		_cleanup_free_ char *t = json_dumps(result, JSON_COMPACT);
		rbytes = t ? (int64_t)strlen(t) : -1;
		if (rbytes < 0 || (uint64_t)rbytes > JSONRPC_MAX_MESSAGE - 4096) {
			/* the agent's side takes 4 MiB a message: say so instead of dropping it */
			json_decref(result);
			result = NULL;
			code = GW_CODE_UNAVAILABLE;
			msg = rbytes < 0 ? "out of memory"
					 : "the tool's result is larger than 4 MiB";
			data = NULL;
		}
	}
	if (result) {
		if (json_is_true(json_object_get(result, "isError")))
			snprintf(err, sizeof(err), "isError");
		session_send(c->s, jsonrpc_result(c->agent_id, result));
	} else {
		snprintf(err, sizeof(err), "%d %s", code, msg);
		g->stats.errors++;
		send_error(c->s, c->agent_id, code, msg, data);
	}
	record_call(g, c->server, c->tool, c->args_bytes, rbytes, c->t0_ms, true, c->rule,
		    err[0] ? err : NULL);
	call_finish(c);
}

/* ---- servers: stdio ---- */

static void server_schedule_restart(struct gw_server *srv);
static int server_send_internal(struct gw_server *srv, enum call_kind kind, const char *method,
				json_t *params);

static void server_fail_calls(struct gw_server *srv, const char *why)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "MCP server '%s' %s", srv->conf->name, why);
	for (struct gw_call *c = srv->g->calls, *n; c; c = n) {
		n = c->next;
		if (c->srv != srv || c->answered)
			continue;
		if (c->kind == CK_TOOL)
			call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
		else if (!c->in_work)
			call_finish(c);
	}
}

static void server_kill(struct gw_server *srv, int sig)
{
	if (srv->running)
		(void)uv_process_kill(&srv->proc, sig);
}

static void on_server_handle_closed(uv_handle_t *h)
{
	struct gw_server *srv = h->data;
	srv->open_handles--;
	gw_unref(srv->g);
}

static void on_server_timer_closed(uv_handle_t *h)
{
	struct gw_server *srv = h->data;
	gw_unref(srv->g);
}

static void server_close_pipes(struct gw_server *srv)
{
	if (!uv_is_closing((uv_handle_t *)&srv->in))
		uv_close((uv_handle_t *)&srv->in, on_server_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&srv->out))
		uv_close((uv_handle_t *)&srv->out, on_server_handle_closed);
}

static void on_server_exit(uv_process_t *p, int64_t status, int sig)
{
	struct gw_server *srv = p->data;
	srv->running = false;
	snprintf(srv->why, sizeof(srv->why), sig ? "killed by signal %d" : "exited with status %d",
		 sig ? sig : (int)status);
	log_debug("gateway: MCP server %s %s", srv->conf->name, srv->why);
	srv->state = SRV_DOWN;
	server_close_pipes(srv);
	uv_close((uv_handle_t *)&srv->proc, on_server_handle_closed);
	server_fail_calls(srv, srv->g->stopping ? "stopped" : "exited");
	json_decref(srv->tools);
	srv->tools = NULL;
	if (!srv->g->stopping) {
		server_schedule_restart(srv);
	} else {
		uv_timer_stop(&srv->timer);
		if (!uv_is_closing((uv_handle_t *)&srv->timer))
			uv_close((uv_handle_t *)&srv->timer, on_server_timer_closed);
	}
}

static void server_on_message(struct gw_server *srv, struct jsonrpc_msg *m)
{
	struct gateway *g = srv->g;
	if (m->kind == JSONRPC_REQUEST) {
		/* the server asks us something: we answer ping and nothing else */
		json_t *reply =
			streq(m->method, "ping")
				? jsonrpc_result(m->id, NULL)
				: jsonrpc_error(m->id, JSONRPC_METHOD_NOT_FOUND, NULL, NULL);
		if (reply && srv->running)
			(void)write_json((uv_stream_t *)&srv->in, &srv->queued, reply);
		json_decref(reply);
		return;
	}
	if (m->kind == JSONRPC_NOTIFICATION) {
		if (streq(m->method, "notifications/tools/list_changed") &&
		    srv->state == SRV_READY) {
			json_decref(srv->tools_new);
			srv->tools_new = json_array();
			(void)server_send_internal(srv, CK_LIST, "tools/list", NULL);
		}
		return;
	}
	if ((m->kind != JSONRPC_RESPONSE && m->kind != JSONRPC_ERROR) || !json_is_integer(m->id))
		return;
	struct gw_call *c = call_find_down(g, srv, json_integer_value(m->id));
	if (!c)
		return; /* answered already (timed out, cancelled) */
	if (c->kind == CK_TOOL) {
		if (m->kind == JSONRPC_RESPONSE)
			call_answer(c, json_incref(m->result), 0, NULL, NULL);
		else
			call_answer(c, NULL, m->error_code, m->error_message,
				    json_deep_copy(json_object_get(m->error, "data")));
		return;
	}
	unsigned page = c->page;
	enum call_kind kind = c->kind;
	call_finish(c);
	if (m->kind == JSONRPC_ERROR) {
		log_debug("gateway: MCP server %s: %s failed: %s", srv->conf->name,
			  kind == CK_INIT ? "initialize" : "tools/list", m->error_message);
		snprintf(srv->why, sizeof(srv->why), "failed to start: %.150s", m->error_message);
		server_kill(srv, SIGKILL);
		return;
	}
	if (kind == CK_INIT) {
		json_t *n = jsonrpc_notification("notifications/initialized", NULL);
		if (n)
			(void)write_json((uv_stream_t *)&srv->in, &srv->queued, n);
		json_decref(n);
		json_decref(srv->tools_new);
		srv->tools_new = json_array();
		(void)server_send_internal(srv, CK_LIST, "tools/list", NULL);
		return;
	}
	/* CK_LIST: collect this page's tools */
	json_t *tools = json_object_get(m->result, "tools"), *t;
	size_t i;
	json_array_foreach(tools, i, t)
	{
		const char *name = json_string_value(json_object_get(t, "name"));
		if (json_is_object(t) && name && gw_tool_name_ok(name) && srv->tools_new &&
		    json_array_size(srv->tools_new) < GW_MAX_TOOLS)
			json_array_append(srv->tools_new, t);
	}
	const char *cursor = json_string_value(json_object_get(m->result, "nextCursor"));
	if (cursor && page + 1 < GW_MAX_PAGES) {
		if (server_send_internal(srv, CK_LIST, "tools/list",
					 json_pack("{s:s}", "cursor", cursor)) == 0) {
			for (struct gw_call *x = g->calls; x; x = x->next)
				if (x->srv == srv && x->kind == CK_LIST && !x->answered)
					x->page = page + 1;
		}
		return;
	}
	json_decref(srv->tools);
	srv->tools = TAKE_PTR(srv->tools_new);
	if (!srv->tools)
		srv->tools = json_array();
	if (srv->state != SRV_READY)
		log_info("gateway: MCP server %s ready (%zu tools)", srv->conf->name,
			 json_array_size(srv->tools));
	srv->state = SRV_READY;
	srv->why[0] = 0;
}

static void on_server_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	buf->base = malloc(GW_READ_CHUNK);
	buf->len = buf->base ? GW_READ_CHUNK : 0;
}

static void on_server_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct gw_server *srv = st->data;
	if (n < 0) {
		free(buf->base);
		uv_read_stop(st);
		/* stdout closed: the server is gone or broken */
		snprintf(srv->why, sizeof(srv->why), "closed its stdout");
		server_kill(srv, SIGKILL);
		return;
	}
	const char *p = buf->base;
	size_t left = (size_t)n;
	while (left > 0) {
		size_t k = jsonrpc_reader_feed(&srv->rd, p, left);
		p += k;
		left -= k;
		const char *line;
		size_t len;
		int st2 = jsonrpc_reader_line(&srv->rd, &line, &len);
		if (st2 != JSONRPC_LINE_OK)
			continue;
		struct jsonrpc_msg m;
		if (jsonrpc_parse(line, len, &m) == 0)
			server_on_message(srv, &m);
		jsonrpc_msg_done(&m);
		if (!srv->running)
			break;
	}
	free(buf->base);
}

static void on_send_timeout(uv_timer_t *t);

/* Send a request of ours (initialize, tools/list) to a stdio server; params stolen. */
static int server_send_internal(struct gw_server *srv, enum call_kind kind, const char *method,
				json_t *params)
{
	struct gw_call *c = call_new(srv->g, NULL, kind);
	if (!c) {
		json_decref(params);
		return -ENOMEM;
	}
	c->srv = srv;
	c->down_id = ++srv->next_id;
	snprintf(c->server, sizeof(c->server), "%s", srv->conf->name);
	json_t *id = json_integer(c->down_id);
	json_t *req = jsonrpc_request(id, method, params);
	json_decref(id);
	int r = req ? write_json((uv_stream_t *)&srv->in, &srv->queued, req) : -ENOMEM;
	json_decref(req);
	if (r < 0) {
		call_finish(c);
		server_kill(srv, SIGKILL);
		return r;
	}
	uv_timer_start(&c->timer, on_send_timeout, GW_INTERNAL_TIMEOUT_MS, 0);
	return 0;
}

static char **server_env(const struct gwconf_server *sc)
{
	static const char *const keep[] = { "PATH", "HOME", "LANG", "TMPDIR", "USER" };
	char **env = NULL;
	for (size_t i = 0; i < ELEMENTSOF(keep); i++) {
		const char *v = getenv(keep[i]);
		if (v && strv_pushf(&env, "%s=%s", keep[i], v) < 0)
			goto oom;
	}
	for (size_t i = 0; sc->env && sc->env[i]; i++)
		if (strv_push(&env, sc->env[i]) < 0)
			goto oom;
	if (!env && strv_push(&env, "PATH=/usr/bin:/bin") < 0)
		goto oom;
	return env;
oom:
	strv_free(env);
	return NULL;
}

static void http_connect(struct gw_server *srv);
static void on_restart_timer(uv_timer_t *t);

static void server_start(struct gw_server *srv)
{
	struct gateway *g = srv->g;
	if (g->stopping)
		return;
	if (srv->http) {
		http_connect(srv);
		return;
	}
	if (srv->open_handles > 0) {
		uv_timer_start(&srv->timer, on_restart_timer, 100, 0);
		return;
	}
	_cleanup_strv_free_ char **env = server_env(srv->conf);
	if (!env)
		return server_schedule_restart(srv);
	uv_pipe_init(g->cfg.loop, &srv->in, 0);
	uv_pipe_init(g->cfg.loop, &srv->out, 0);
	srv->in.data = srv->out.data = srv->proc.data = srv;
	srv->open_handles += 2;
	g->refs += 2;
	uv_stdio_container_t stdio[3] = {
		{ .flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
		  .data.stream = (uv_stream_t *)&srv->in },
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
		  .data.stream = (uv_stream_t *)&srv->out },
		{ .flags = UV_INHERIT_FD, .data.fd = 2 },
	};
	uv_process_options_t o = {
		.exit_cb = on_server_exit,
		.file = srv->conf->argv[0],
		.args = srv->conf->argv,
		.env = env,
		.cwd = srv->conf->cwd ? srv->conf->cwd : g->conf_dir,
		.stdio_count = 3,
		.stdio = stdio,
	};
	int r = uv_spawn(g->cfg.loop, &srv->proc, &o);
	if (r < 0) {
		snprintf(srv->why, sizeof(srv->why), "cannot start %s: %s", srv->conf->argv[0],
			 uv_strerror(r));
		log_warn("gateway: MCP server %s: %s", srv->conf->name, srv->why);
		/* uv_spawn failing still needs the process handle closed */
		srv->open_handles++;
		g->refs++;
		uv_close((uv_handle_t *)&srv->proc, on_server_handle_closed);
		server_close_pipes(srv);
		server_schedule_restart(srv);
		return;
	}
	srv->open_handles++;
	g->refs++;
	srv->running = true;
	srv->state = SRV_STARTING;
	srv->started_ms = mono_ms();
	srv->queued = 0;
	jsonrpc_reader_done(&srv->rd);
	jsonrpc_reader_init(&srv->rd, JSONRPC_MAX_MESSAGE);
	uv_read_start((uv_stream_t *)&srv->out, on_server_alloc, on_server_read);
	(void)server_send_internal(srv, CK_INIT, "initialize",
				   json_pack("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion",
					     GW_PROTOCOL_VERSION, "capabilities", "clientInfo",
					     "name", "capsem-gateway", "version", CAPSEM_VERSION));
}

static void on_restart_timer(uv_timer_t *t)
{
	server_start(t->data);
}

static void server_schedule_restart(struct gw_server *srv)
{
	if (srv->g->stopping)
		return;
	if (srv->started_ms && mono_ms() - srv->started_ms > GW_BACKOFF_MAX_MS)
		srv->backoff_ms = 0; /* it ran for a while: start again from the bottom */
	srv->backoff_ms = srv->backoff_ms ? MIN(srv->backoff_ms * 2, (uint64_t)GW_BACKOFF_MAX_MS)
					  : GW_BACKOFF_MIN_MS;
	uv_timer_start(&srv->timer, on_restart_timer, srv->backoff_ms, 0);
}

/* ---- servers: HTTP ---- */

/* The egress policy's decision on a POST to an HTTP server's URL. */
static bool http_allowed(struct gw_server *srv, char *why, size_t cap)
{
	const struct builtin_url *u = &srv->url;
	struct policy_decision d;
	if (!srv->url_ok) {
		snprintf(why, cap, "bad URL");
		return false;
	}
	struct policy_request req = {
		.host = u->host, .port = u->port, .method = "POST", .path = u->path
	};
	policy_decide(gw_policy(srv->g), &req, &d);
	if (d.action != POLICY_ALLOW) {
		snprintf(why, cap, "blocked by the network policy (rule '%s', %s)", d.rule,
			 policy_layer_name(d.layer));
		char subject[600];
		snprintf(subject, sizeof(subject), "POST %.255s:%u%.300s", u->host, u->port,
			 u->path);
		record_policy(srv->g, "http", subject, false, d.rule, d.layer);
		return false;
	}
	return true;
}

static void after_job(uv_work_t *w, int status);

static int queue_job(struct gw_call *c, uv_work_cb fn)
{
	c->work.data = c;
	int r = uv_queue_work(c->g->cfg.loop, &c->work, fn, after_job);
	if (r == 0) {
		c->in_work = true;
		c->g->refs++;
	}
	return r;
}

/* Worker: initialize, notifications/initialized, tools/list (pages). */
static void job_http_connect(uv_work_t *w)
{
	struct gw_call *c = w->data;
	const struct gwconf_server *sc = c->srv->conf;
	long tmo = (long)GW_INTERNAL_TIMEOUT_MS;
	struct httpmcp_result res;
	_cleanup_free_ char *sid = NULL, *cursor = NULL;
	json_t *id = json_integer(1);
	json_t *tools = json_array();
	char body[512];
	int n = snprintf(body, sizeof(body),
			 "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"
			 "\"protocolVersion\":\"%s\",\"capabilities\":{},\"clientInfo\":{\"name\":"
			 "\"capsem-gateway\",\"version\":\"%s\"}}}",
			 GW_PROTOCOL_VERSION, CAPSEM_VERSION);
	const atomic_int *stop = &c->g->stop;
	const char *url = c->srv->url.url;
	c->w_rc = httpmcp_post(url, sc->headers, NULL, body, (size_t)n, id, tmo, stop, &res);
	if (c->w_rc == 0 && json_object_get(res.msg, "error"))
		c->w_rc = -EIO, snprintf(res.err, sizeof(res.err), "initialize failed");
	if (c->w_rc < 0) {
		snprintf(c->w_err, sizeof(c->w_err), "%s", res.err);
		goto out;
	}
	sid = TAKE_PTR(res.session_id);
	httpmcp_result_done(&res);
	static const char initialized[] =
		"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
	(void)httpmcp_post(url, sc->headers, sid, initialized, strlen(initialized), NULL, tmo, stop,
			   &res);
	httpmcp_result_done(&res);
	for (unsigned page = 0; page < GW_MAX_PAGES; page++) {
		json_t *lid = json_integer(2 + page);
		json_t *params = cursor ? json_pack("{s:s}", "cursor", cursor) : NULL;
		json_t *req = jsonrpc_request(lid, "tools/list", params);
		_cleanup_free_ char *text = NULL;
		size_t tl = 0;
		int r = req ? jsonrpc_dump(req, &text, &tl) : -ENOMEM;
		json_decref(req);
		if (r == 0)
			r = httpmcp_post(url, sc->headers, sid, text, tl, lid, tmo, stop, &res);
		json_decref(lid);
		if (r < 0 || !json_is_object(json_object_get(res.msg, "result"))) {
			snprintf(c->w_err, sizeof(c->w_err), "tools/list failed: %.200s",
				 r < 0 ? res.err : "an error");
			c->w_rc = r < 0 ? r : -EIO;
			httpmcp_result_done(&res);
			goto out;
		}
		json_t *result = json_object_get(res.msg, "result"), *t;
		size_t i;
		json_array_foreach(json_object_get(result, "tools"), i, t)
		{
			const char *name = json_string_value(json_object_get(t, "name"));
			if (json_is_object(t) && name && gw_tool_name_ok(name) &&
			    json_array_size(tools) < GW_MAX_TOOLS)
				json_array_append_new(tools, json_deep_copy(t));
		}
		const char *nc = json_string_value(json_object_get(result, "nextCursor"));
		free(cursor);
		cursor = nc ? strdup(nc) : NULL;
		httpmcp_result_done(&res);
		if (!cursor)
			break;
	}
	c->w_result = TAKE_PTR(tools);
	c->w_session = TAKE_PTR(sid);
out:
	json_decref(id);
	json_decref(tools);
	if (c->w_rc < 0)
		httpmcp_result_done(&res);
}

static void http_connect(struct gw_server *srv)
{
	if (srv->connecting || srv->g->stopping)
		return;
	if (!http_allowed(srv, srv->why, sizeof(srv->why))) {
		log_warn("gateway: MCP server %s unavailable: %s", srv->conf->name, srv->why);
		srv->state = SRV_DOWN;
		server_schedule_restart(srv); /* the policy may change */
		return;
	}
	struct gw_call *c = call_new(srv->g, NULL, CK_HTTP_CONNECT);
	if (!c)
		return server_schedule_restart(srv);
	c->srv = srv;
	srv->state = SRV_STARTING;
	srv->connecting = true;
	if (queue_job(c, job_http_connect) < 0) {
		srv->connecting = false;
		call_finish(c);
		server_schedule_restart(srv);
	}
}

/* Worker: POST one message and wait for its response. */
static void job_http_post(uv_work_t *w)
{
	struct gw_call *c = w->data;
	const struct gwconf_server *sc = c->srv->conf;
	c->w_rc = httpmcp_post(c->srv->url.url, sc->headers, c->w_session, c->w_body, c->w_len,
			       c->w_id, (long)sc->timeout_ms + 1000, &c->g->stop, &c->w_http);
}

/* ---- built-in tools ---- */

static void job_builtin(uv_work_t *w)
{
	struct gw_call *c = w->data;
	c->w_result = builtin_call(&c->g->benv, c->tool, c->w_args);
}

static void after_job(uv_work_t *w, int status)
{
	struct gw_call *c = w->data;
	struct gateway *g = c->g;
	c->in_work = false;
	if (c->kind == CK_HTTP_CONNECT) {
		struct gw_server *srv = c->srv;
		srv->connecting = false;
		if (c->w_rc == 0 && !g->stopping) {
			json_decref(srv->tools);
			srv->tools = TAKE_PTR(c->w_result);
			free(srv->session_id);
			srv->session_id = TAKE_PTR(c->w_session);
			srv->state = SRV_READY;
			srv->backoff_ms = 0;
			srv->why[0] = 0;
			log_info("gateway: MCP server %s ready (%zu tools)", srv->conf->name,
				 json_array_size(srv->tools));
		} else if (!g->stopping) {
			snprintf(srv->why, sizeof(srv->why), "%.190s", c->w_err);
			log_warn("gateway: MCP server %s unavailable: %s", srv->conf->name,
				 srv->why);
			srv->state = SRV_DOWN;
			server_schedule_restart(srv);
		}
		call_finish(c);
	} else if (c->kind == CK_CANCEL) {
		call_finish(c);
	} else if (c->answered || status == UV_ECANCELED) {
		call_finish(c);
	} else if (c->srv) { /* an HTTP tool call */
		json_t *m = c->w_http.msg;
		if (c->w_rc == -ESTALE) {
			c->srv->state = SRV_DOWN;
			snprintf(c->srv->why, sizeof(c->srv->why), "session expired");
			server_schedule_restart(c->srv);
		}
		if (c->w_rc < 0 || !m) {
			char msg[400];
			snprintf(msg, sizeof(msg), "MCP server '%s' failed: %s", c->server,
				 c->w_http.err);
			call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
		} else if (json_object_get(m, "result")) {
			call_answer(c, json_incref(json_object_get(m, "result")), 0, NULL, NULL);
		} else {
			json_t *e = json_object_get(m, "error");
			json_t *code = json_object_get(e, "code");
			const char *msg = json_string_value(json_object_get(e, "message"));
			call_answer(c, NULL,
				    json_is_integer(code) ? (int)json_integer_value(code)
							  : JSONRPC_INTERNAL_ERROR,
				    msg ? msg : "error",
				    json_deep_copy(json_object_get(e, "data")));
		}
	} else { /* a built-in tool */
		json_t *r = TAKE_PTR(c->w_result);
		if (r)
			call_answer(c, r, 0, NULL, NULL);
		else
			call_answer(c, NULL, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
	}
	gw_unref(g);
}

/* ---- sessions: requests ---- */

static void send_cancel(struct gw_call *c, const char *reason)
{
	struct gw_server *srv = c->srv;
	if (!srv)
		return; /* built-in jobs run to completion; their result is dropped */
	json_t *n = jsonrpc_notification(
		"notifications/cancelled",
		json_pack("{s:I, s:s}", "requestId", (json_int_t)c->down_id, "reason", reason));
	if (!n)
		return;
	if (!srv->http) {
		if (srv->running)
			(void)write_json((uv_stream_t *)&srv->in, &srv->queued, n);
	} else if (srv->state == SRV_READY) {
		struct gw_call *k = call_new(c->g, NULL, CK_CANCEL);
		if (k) {
			k->srv = srv;
			k->w_session = srv->session_id ? strdup(srv->session_id) : NULL;
			if (jsonrpc_dump(n, &k->w_body, &k->w_len) < 0 ||
			    queue_job(k, job_http_post) < 0)
				call_finish(k);
		}
	}
	json_decref(n);
}

static void on_call_timeout(uv_timer_t *t)
{
	struct gw_call *c = t->data;
	char msg[200];
	uint64_t ms = now_ms() - c->t0_ms;
	snprintf(msg, sizeof(msg), "tool call timed out after %" PRIu64 " ms", ms);
	send_cancel(c, "timeout");
	call_answer(c, NULL, GW_CODE_TIMEOUT, msg, NULL);
}

static void on_send_timeout(uv_timer_t *t)
{
	struct gw_call *c = t->data;
	struct gw_server *srv = c->srv;
	snprintf(srv->why, sizeof(srv->why), "did not answer %s in time",
		 c->kind == CK_INIT ? "initialize" : "tools/list");
	log_warn("gateway: MCP server %s %s", srv->conf->name, srv->why);
	call_finish(c);
	server_kill(srv, SIGKILL);
}

static struct gw_server *find_server(struct gateway *g, const char *name)
{
	for (size_t i = 0; i < g->n_servers; i++)
		if (streq(g->servers[i].conf->name, name))
			return &g->servers[i];
	return NULL;
}

static const json_t *find_tool(const json_t *tools, const char *name)
{
	size_t i;
	const json_t *t;
	json_array_foreach(tools, i, t)
	{
		if (streq(json_string_value(json_object_get(t, "name")), name))
			return t;
	}
	return NULL;
}

static void add_tools(struct gateway *g, json_t *out, const char *server, const json_t *tools)
{
	const struct policy *p = gw_policy(g);
	size_t i;
	const json_t *t;
	json_array_foreach(tools, i, t)
	{
		const char *name = json_string_value(json_object_get(t, "name"));
		char full[GW_SERVER_NAME_MAX + GW_TOOL_NAME_MAX + 4];
		struct policy_tool_decision d;
		if (!name || gw_name_join(server, name, full, sizeof(full)) < 0)
			continue;
		policy_decide_tool(p, server, name, &d);
		if (d.action != POLICY_ALLOW)
			continue;
		json_t *copy = json_copy((json_t *)t);
		if (copy && json_object_set_new(copy, "name", json_string(full)) == 0)
			json_array_append_new(out, copy);
		else
			json_decref(copy);
	}
}

static void do_tools_list(struct gw_session *s, json_t *id)
{
	struct gateway *g = s->g;
	uint64_t t0 = now_ms();
	json_t *all = json_array();
	if (g->conf->builtin)
		add_tools(g, all, GW_BUILTIN_SERVER, g->builtin_tools);
	for (size_t i = 0; i < g->n_servers; i++)
		if (g->servers[i].state == SRV_READY)
			add_tools(g, all, g->servers[i].conf->name, g->servers[i].tools);
	json_t *result = json_pack("{s:o}", "tools", all);
	_cleanup_free_ char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
	record_call(g, "*", NULL, 0, text ? (int64_t)strlen(text) : -1, t0, true, NULL, NULL);
	if (!result)
		return send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
	session_send(s, jsonrpc_result(id, result));
}

static void do_tools_call(struct gw_session *s, json_t *id, json_t *params)
{
	struct gateway *g = s->g;
	const char *name = json_string_value(json_object_get(params, "name"));
	json_t *args = json_object_get(params, "arguments");
	char server[GW_SERVER_NAME_MAX + 1], tool[GW_TOOL_NAME_MAX + 1], msg[400];
	uint64_t t0 = now_ms();

	if (!json_is_object(params) || !name || (args && !json_is_object(args)))
		return send_error(s, id, JSONRPC_INVALID_PARAMS,
				  "tools/call needs params {name: string, arguments?: object}",
				  NULL);
	_cleanup_free_ char *atext = args ? json_dumps(args, JSON_COMPACT) : NULL;
	size_t abytes = atext ? strlen(atext) : 0;
	if (gw_name_split(name, server, tool) < 0) {
		snprintf(msg, sizeof(msg), "unknown tool '%.200s' (tools are named server__tool)",
			 name);
		return send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
	}
	/* the tool policy, before anything else learns of the call */
	struct policy_tool_decision d;
	policy_decide_tool(gw_policy(g), server, tool, &d);
	char subject[GW_SERVER_NAME_MAX + GW_TOOL_NAME_MAX + 4];
	(void)gw_name_join(server, tool, subject, sizeof(subject));
	record_policy(g, "tool", subject, d.action == POLICY_ALLOW, d.rule, d.layer);
	if (d.action != POLICY_ALLOW) {
		g->stats.blocked++;
		snprintf(msg, sizeof(msg), "tool '%s' is blocked by policy rule '%s' (%s)", subject,
			 d.rule, policy_layer_name(d.layer));
		record_call(g, server, tool, abytes, -1, t0, false, d.rule, msg);
		return send_error(s, id, GW_CODE_BLOCKED, msg,
				  json_pack("{s:s, s:s, s:s, s:s}", "rule", d.rule, "layer",
					    policy_layer_name(d.layer), "server", server, "tool",
					    tool));
	}
	struct gw_server *srv = NULL;
	if (streq(server, GW_BUILTIN_SERVER)) {
		if (!g->conf->builtin || !find_tool(g->builtin_tools, tool)) {
			snprintf(msg, sizeof(msg), "unknown tool '%.200s'", name);
			record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
		}
	} else {
		srv = find_server(g, server);
		if (!srv || (srv->state == SRV_READY && !find_tool(srv->tools, tool))) {
			snprintf(msg, sizeof(msg), "unknown tool '%.200s'", name);
			record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
		}
		if (srv->state != SRV_READY ||
		    (srv->http && !http_allowed(srv, srv->why, sizeof(srv->why)))) {
			snprintf(msg, sizeof(msg), "MCP server '%s' is unavailable%s%s", server,
				 srv->why[0] ? ": " : "", srv->why);
			record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return send_error(s, id, GW_CODE_UNAVAILABLE, msg, NULL);
		}
	}
	struct gw_call *c = call_new(g, s, CK_TOOL);
	if (!c)
		return send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
	g->stats.calls++;
	c->agent_id = json_incref(id);
	c->srv = srv;
	c->args_bytes = abytes;
	c->t0_ms = t0;
	snprintf(c->server, sizeof(c->server), "%s", server);
	snprintf(c->tool, sizeof(c->tool), "%s", tool);
	snprintf(c->rule, sizeof(c->rule), "%s", d.rule);
	uint64_t timeout = srv ? srv->conf->timeout_ms : g->conf->call_timeout_ms;
	uv_timer_start(&c->timer, on_call_timeout, timeout, 0);

	if (!srv) {
		if (builtin_needs_url(tool)) {
			const char *url = json_string_value(json_object_get(args, "url"));
			struct builtin_url u;
			if (!url || builtin_url_parse(url, &u) < 0)
				return call_answer(
					c,
					builtin_text_result(
						"a valid http:// or https:// 'url' is required",
						strlen("a valid http:// or https:// 'url' "
						       "is required"),
						true),
					0, NULL, NULL);
			const char *method = streq(tool, "headers") ? "HEAD" : "GET";
			struct policy_request req = {
				.host = u.host, .port = u.port, .method = method, .path = u.path
			};
			struct policy_decision nd;
			policy_decide(gw_policy(g), &req, &nd);
			char sub[700];
			snprintf(sub, sizeof(sub), "%s %.255s:%u%.400s", method, u.host, u.port,
				 u.path);
			record_policy(g, "http", sub, nd.action == POLICY_ALLOW, nd.rule, nd.layer);
			if (nd.action != POLICY_ALLOW) {
				g->stats.blocked++;
				snprintf(msg, sizeof(msg),
					 "%s is blocked by the network policy (rule '%s', %s)", url,
					 nd.rule, policy_layer_name(nd.layer));
				snprintf(c->rule, sizeof(c->rule), "%s", nd.rule);
				send_error(s, id, GW_CODE_BLOCKED, msg,
					   json_pack("{s:s, s:s, s:s}", "rule", nd.rule, "layer",
						     policy_layer_name(nd.layer), "url", url));
				record_call(g, server, tool, abytes, -1, t0, false, nd.rule, msg);
				return call_finish(c);
			}
		}
		c->w_args = args ? json_deep_copy(args) : json_object();
		if (!c->w_args || queue_job(c, job_builtin) < 0)
			return call_answer(c, NULL, JSONRPC_INTERNAL_ERROR, "cannot queue the call",
					   NULL);
		return;
	}
	c->down_id = ++srv->next_id;
	json_t *dparams = json_pack("{s:s, s:o}", "name", tool, "arguments",
				    args ? json_incref(args) : json_object());
	json_t *did = json_integer(c->down_id);
	json_t *req = dparams ? jsonrpc_request(did, "tools/call", dparams) : NULL;
	json_decref(did);
	int r;
	if (!req) {
		r = -ENOMEM;
	} else if (!srv->http) {
		r = write_json((uv_stream_t *)&srv->in, &srv->queued, req);
	} else {
		c->w_id = json_integer(c->down_id);
		c->w_session = srv->session_id ? strdup(srv->session_id) : NULL;
		r = jsonrpc_dump(req, &c->w_body, &c->w_len);
		if (r == 0)
			r = queue_job(c, job_http_post);
	}
	json_decref(req);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot send the call to MCP server '%s': %s", server,
			 strerror(-r));
		call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
	}
}

static void do_cancelled(struct gw_session *s, json_t *params)
{
	json_t *rid = json_object_get(params, "requestId");
	if (!jsonrpc_id_valid(rid))
		return;
	for (struct gw_call *c = s->g->calls; c; c = c->next) {
		if (c->s == s && c->kind == CK_TOOL && !c->answered &&
		    jsonrpc_id_equal(c->agent_id, rid)) {
			send_cancel(c, "cancelled by the client");
			record_call(s->g, c->server, c->tool, c->args_bytes, -1, c->t0_ms, true,
				    c->rule, "cancelled");
			call_finish(c);
			return;
		}
	}
}

static void do_initialize(struct gw_session *s, json_t *id, json_t *params)
{
	const char *want = json_string_value(json_object_get(params, "protocolVersion"));
	static const char *const known[] = { "2025-06-18", "2025-03-26", "2024-11-05" };
	const char *v = GW_PROTOCOL_VERSION;
	for (size_t i = 0; want && i < ELEMENTSOF(known); i++)
		if (streq(want, known[i]))
			v = known[i];
	session_send(s, jsonrpc_result(id, json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}",
						     "protocolVersion", v, "capabilities", "tools",
						     "listChanged", 0, "serverInfo", "name",
						     "capsem-gateway", "version", CAPSEM_VERSION,
						     "instructions",
						     "Tools of the Capsem sandbox's host: "
						     "capsem__fetch/grep/headers read web pages "
						     "allowed by the sandbox's network policy; "
						     "other tools are named server__tool.")));
}

static void session_dispatch(struct gw_session *s, struct jsonrpc_msg *m)
{
	if (m->kind == JSONRPC_NOTIFICATION) {
		if (streq(m->method, "notifications/cancelled"))
			do_cancelled(s, m->params);
		return;
	}
	if (m->kind != JSONRPC_REQUEST)
		return; /* responses: we never ask the agent anything */
	if (streq(m->method, "tools/call") && s->pending >= s->g->conf->max_pending) {
		char msg[100];
		snprintf(msg, sizeof(msg), "too many requests in flight (at most %u)",
			 s->g->conf->max_pending);
		return send_error(s, m->id, GW_CODE_BUSY, msg, NULL);
	}
	if (streq(m->method, "initialize"))
		do_initialize(s, m->id, m->params);
	else if (streq(m->method, "ping"))
		session_send(s, jsonrpc_result(m->id, NULL));
	else if (streq(m->method, "tools/list"))
		do_tools_list(s, m->id);
	else if (streq(m->method, "tools/call"))
		do_tools_call(s, m->id, m->params);
	else
		send_error(s, m->id, JSONRPC_METHOD_NOT_FOUND, NULL, NULL);
}

/* "CAPSEM-MCP-RELAY/1 pid=N comm=NAME": the relay's preamble (attribution only). */
static bool session_preamble(struct gw_session *s, const char *line, size_t len)
{
	static const char tag[] = "CAPSEM-MCP-RELAY/1 ";
	if (len < sizeof(tag) - 1 || memcmp(line, tag, sizeof(tag) - 1) != 0)
		return false;
	char buf[128];
	snprintf(buf, sizeof(buf), "%.*s", (int)MIN(len, sizeof(buf) - 1), line);
	uint32_t pid = 0;
	const char *p = buf + sizeof(tag) - 1;
	if (strncmp(p, "pid=", 4) == 0 && parse_u32_prefix(p + 4, &pid, &p) == 0) {
		s->pid = pid;
		if (strncmp(p, " comm=", 6) == 0) {
			p += 6;
			size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0"
					     "123456789._+-");
			snprintf(s->comm, sizeof(s->comm), "%.*s", (int)MIN(n, (size_t)31), p);
		}
	}
	log_debug("gateway: session %" PRIu64 " from pid %u (%s)", s->id, s->pid, s->comm);
	return true;
}

static void on_session_closed(uv_handle_t *h)
{
	struct gw_session *s = h->data;
	struct gateway *g = s->g;
	jsonrpc_reader_done(&s->rd);
	free(s);
	g->n_sessions--;
	gw_unref(g);
}

static void on_session_shutdown(uv_shutdown_t *req, int status)
{
	struct gw_session *s = req->data;
	uv_close((uv_handle_t *)&s->pipe, on_session_closed);
}

/* Cancel the session's calls, flush what is queued for it, close it. */
static void session_close(struct gw_session *s)
{
	if (s->closing)
		return;
	s->closing = true;
	for (struct gw_call *c = s->g->calls, *n; c; c = n) {
		n = c->next;
		if (c->s != s || c->answered)
			continue;
		send_cancel(c, "the client went away");
		record_call(s->g, c->server, c->tool, c->args_bytes, -1, c->t0_ms, true, c->rule,
			    "session closed");
		call_finish(c);
	}
	if (s->prev)
		s->prev->next = s->next;
	else
		s->g->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	uv_read_stop((uv_stream_t *)&s->pipe);
	s->shutdown.data = s;
	if (s->abort || uv_shutdown(&s->shutdown, (uv_stream_t *)&s->pipe, on_session_shutdown) < 0)
		uv_close((uv_handle_t *)&s->pipe, on_session_closed);
}

static void on_session_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	buf->base = malloc(GW_READ_CHUNK);
	buf->len = buf->base ? GW_READ_CHUNK : 0;
}

static void on_session_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct gw_session *s = st->data;
	if (n < 0) {
		free(buf->base);
		/* end of the agent's input: answer what is in flight first (a relay whose
		 * stdin ended waits for those answers), then close */
		s->read_eof = true;
		uv_read_stop(st);
		if (n != UV_EOF || s->pending == 0)
			session_close(s);
		return;
	}
	const char *p = buf->base;
	size_t left = (size_t)n;
	while (left > 0 && !s->closing) {
		size_t k = jsonrpc_reader_feed(&s->rd, p, left);
		p += k;
		left -= k;
		const char *line;
		size_t len;
		int ev = jsonrpc_reader_line(&s->rd, &line, &len);
		if (ev == JSONRPC_LINE_TOO_LARGE) {
			s->first_line_done = true;
			send_error(s, NULL, JSONRPC_INVALID_REQUEST, "message too large", NULL);
			continue;
		}
		if (ev != JSONRPC_LINE_OK)
			continue;
		if (!s->first_line_done) {
			s->first_line_done = true;
			if (session_preamble(s, line, len))
				continue;
		}
		struct jsonrpc_msg m;
		if (jsonrpc_parse(line, len, &m) < 0)
			session_send(s, jsonrpc_error_for(&m));
		else
			session_dispatch(s, &m);
		jsonrpc_msg_done(&m);
	}
	free(buf->base);
}

static void on_listen(uv_poll_t *h, int status, int events)
{
	struct gateway *g = h->data;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(g->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		if (g->n_sessions >= GW_MAX_SESSIONS) {
			log_debug("gateway: more than %u sessions: refused", GW_MAX_SESSIONS);
			safe_close(fd);
			continue;
		}
		struct gw_session *s = calloc(1, sizeof(*s));
		if (!s || uv_pipe_init(g->cfg.loop, &s->pipe, 0) < 0) {
			free(s);
			safe_close(fd);
			continue;
		}
		s->g = g;
		s->id = ++g->next_session;
		s->pipe.data = s;
		g->refs++;
		jsonrpc_reader_init(&s->rd, JSONRPC_MAX_MESSAGE);
		s->next = g->sessions;
		if (g->sessions)
			g->sessions->prev = s;
		g->sessions = s;
		g->n_sessions++;
		g->stats.sessions++;
		if (uv_pipe_open(&s->pipe, fd) < 0 ||
		    uv_read_start((uv_stream_t *)&s->pipe, on_session_alloc, on_session_read) < 0) {
			safe_close(fd);
			session_close(s);
		}
	}
}

/* ---- start, stop ---- */

static int fail(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

int gateway_start(const struct gateway_config *cfg, struct gateway **ret, char *err, size_t errlen)
{
	static bool curl_ready;
	char e[600] = "";
	int r;
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return fail(err, errlen, -EIO, "cannot initialise libcurl");
		curl_ready = true;
	}
	struct gateway *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->cfg = *cfg;
	g->refs = 1;
	g->lfd = -1;
	g->benv.workspace_fd = -1;
	g->benv.stop = &g->stop;
	g->socket_path = strdup(cfg->socket_path);
	g->corp = strdup(cfg->corp_policy ? cfg->corp_policy : POLICY_CORP_PATH);
	if (cfg->capsem_home && asprintf(&g->user, "%s/%s", cfg->capsem_home, POLICY_USER_FILE) < 0)
		g->user = NULL;
	if (!g->socket_path || !g->corp || (cfg->capsem_home && !g->user)) {
		r = -ENOMEM;
		goto fail;
	}
	if (cfg->config_path) {
		r = gwconf_load(cfg->config_path, &g->conf, e, sizeof(e));
		g->conf_dir = realpath(cfg->config_path, NULL);
		char *slash = g->conf_dir ? strrchr(g->conf_dir, '/') : NULL;
		if (slash)
			slash[slash == g->conf_dir] = 0; /* "/x.toml" -> "/" */
	} else {
		g->conf = gwconf_new_default();
		r = g->conf ? 0 : -ENOMEM;
	}
	if (r < 0) {
		fail(err, errlen, r, "MCP config: %s", e[0] ? e : strerror(-r));
		goto fail_quiet;
	}
	r = cfg->policy ? 0 : policy_load(g->corp, g->user, &g->policy, e, sizeof(e));
	if (r < 0) {
		fail(err, errlen, r, "policy: %s", e);
		goto fail_quiet;
	}
	const char *ws = cfg->workspace ? cfg->workspace : g->conf->workspace;
	if (ws) {
		g->benv.workspace_fd = open(ws, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (g->benv.workspace_fd < 0) {
			r = negative_errno();
			fail(err, errlen, r, "MCP workspace %s: %s", ws, strerror(-r));
			goto fail_quiet;
		}
	}
	g->builtin_tools = builtin_tools(g->benv.workspace_fd >= 0);
	g->servers = calloc(g->conf->n_servers ? g->conf->n_servers : 1, sizeof(*g->servers));
	if (!g->builtin_tools || !g->servers) {
		r = -ENOMEM;
		goto fail;
	}
	g->lfd = unix_listen(g->socket_path, 64);
	if (g->lfd < 0) {
		r = g->lfd;
		fail(err, errlen, r, "cannot listen on %s: %s", g->socket_path, strerror(-r));
		goto fail_quiet;
	}
	uv_poll_init(cfg->loop, &g->listen, g->lfd);
	g->listen.data = g;
	g->refs++;
	g->listening = true;
	uv_poll_start(&g->listen, UV_READABLE, on_listen);
	for (size_t i = 0; i < g->conf->n_servers; i++) {
		struct gw_server *srv = &g->servers[i];
		srv->g = g;
		srv->conf = &g->conf->servers[i];
		srv->http = srv->conf->url != NULL;
		srv->url_ok = srv->http && builtin_url_parse(srv->conf->url, &srv->url) == 0;
		uv_timer_init(cfg->loop, &srv->timer);
		srv->timer.data = srv;
		g->refs++;
		g->n_servers++;
		server_start(srv);
	}
	*ret = g;
	return 0;
fail:
	fail(err, errlen, r, "%s", strerror(-r));
fail_quiet:
	safe_close(g->lfd);
	g->lfd = -1;
	gw_free(g);
	return r;
}

static void on_kill_timer(uv_timer_t *t)
{
	struct gw_server *srv = t->data;
	server_kill(srv, SIGKILL);
	if (!uv_is_closing((uv_handle_t *)t))
		uv_close((uv_handle_t *)t, on_server_timer_closed);
}

void gateway_stop(struct gateway *g)
{
	if (!g || g->stopping)
		return;
	g->stopping = true;
	atomic_store(&g->stop, 1); /* worker jobs: abandon their transfers */
	if (g->listening) {
		uv_poll_stop(&g->listen);
		uv_close((uv_handle_t *)&g->listen, on_handle_closed);
		g->listening = false;
	}
	safe_close(g->lfd);
	g->lfd = -1;
	(void)unlink(g->socket_path);
	while (g->sessions)
		session_close(g->sessions);
	for (size_t i = 0; i < g->n_servers; i++) {
		struct gw_server *srv = &g->servers[i];
		uv_timer_stop(&srv->timer);
		if (srv->running) {
			uv_close((uv_handle_t *)&srv->in,
				 on_server_handle_closed); /* EOF on stdin */
			server_kill(srv, SIGTERM);
			uv_timer_start(&srv->timer, on_kill_timer, 1000, 0);
		} else {
			uv_close((uv_handle_t *)&srv->timer, on_server_timer_closed);
		}
	}
	for (struct gw_call *c = g->calls, *n; c; c = n) {
		n = c->next;
		call_finish(c); /* a call in a worker job is freed by its after-callback */
	}
	g->cfg.ledger = NULL; /* the caller closes it next: nothing is recorded after this */
	gw_unref(g);
}

void gateway_get_stats(const struct gateway *g, struct gateway_stats *ret)
{
	*ret = g->stats;
}
