/* gateway.c - the per-VM MCP gateway: sessions and dispatch, calls, ledger rows (gateway.h).
 *
 * Sessions: each connection on the listening socket (guest vsock port 5003) may start with the
 * relay's preamble line ("CAPSEM-MCP-RELAY/1 pid=N comm=NAME", docs/PROTOCOL.md), then carries
 * newline-delimited JSON-RPC (src/mcp/jsonrpc.h: at most 4 MiB a message, strict JSON). The
 * gateway answers initialize, ping, tools/list and tools/call; notifications/cancelled from the
 * agent is forwarded to the server running the call; everything else gets -32601. At most
 * [limits] max_pending requests in flight per session (-32003 past that); every tools/call has
 * a timeout (-32002, and the server gets notifications/cancelled).
 *
 * Servers (gwserver.c): stdio servers are spawned, initialised and restarted with back-off;
 * HTTP servers are driven from worker threads (httpmcp.c), their URL decided by the egress
 * policy before every request. Tool calls (gwcall.c): built-in tools (builtin.c) run on worker
 * threads, their URLs decided (GET/HEAD) before the job is queued; either way the path is
 * normalised first (builtin_url_parse: as the egress proxy forwards a path) and libcurl is given
 * the URL with that path, so a server reads the path that was decided.
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
#include "gateway-internal.h"

#include <assert.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>

#include "config.h"
#include "gwcheck.h"
#include "gwsnap.h"
#include "ledger.h"
#include "log.h"
#include "parse.h"
#include "policy.h"
#include "strv.h"
#include "unixlisten.h"

uint64_t gw_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t gw_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void gw_free(struct gateway *g)
{
	for (size_t i = 0; g->servers && i < g->n_servers; i++) {
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
	free(g->benv.workspace_path);
	free(g->benv.snap_store);
	free(g->socket_path);
	free(g->conf_dir);
	free(g->home);
	free(g->corp);
	free(g->user);
	free(g);
}

void gw_unref(struct gateway *g)
{
	assert(g->refs > 0);
	if (--g->refs == 0)
		gw_free(g);
}

static void on_listener_closed(struct unix_listener *l)
{
	gw_unref(l->userdata);
}

/* ---- policy ---- */

const struct policy *gw_policy(struct gateway *g)
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

void gw_record_call(struct gateway *g, const char *server, const char *tool, size_t args,
		    int64_t result, uint64_t t0, bool allowed, const char *rule, const char *error)
{
	if (!g->cfg.ledger)
		return;
	struct ledger_tool_call ev = LEDGER_TOOL_CALL_INIT;
	ev.ts = (int64_t)t0;
	ev.duration_ms = (int64_t)(gw_now_ms() - t0);
	ev.server = server;
	ev.tool = tool;
	ev.args_bytes = (int64_t)args;
	ev.result_bytes = result;
	ev.decision = allowed ? "allow" : "block";
	ev.rule = rule && rule[0] ? rule : NULL;
	ev.error = error;
	(void)ledger_tool_call(g->cfg.ledger, &ev);
}

void gw_record_policy(struct gateway *g, const char *boundary, const char *subject, bool allowed,
		      const char *rule, enum policy_layer layer)
{
	if (!g->cfg.ledger)
		return;
	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.ts = (int64_t)gw_now_ms();
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
int gw_write_json(uv_stream_t *stream, size_t *queued, const json_t *msg)
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
void gw_session_send(struct gw_session *s, json_t *msg)
{
	if (!msg)
		return;
	if (s && !s->closing && gw_write_json((uv_stream_t *)&s->pipe, &s->queued, msg) < 0) {
		log_debug("gateway: session %" PRIu64 ": cannot queue a reply; closing", s->id);
		s->abort = true;
		session_close(s);
	}
	json_decref(msg);
}

void gw_send_error(struct gw_session *s, json_t *id, int code, const char *msg, json_t *data)
{
	gw_session_send(s, jsonrpc_error(id, code, msg, data));
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

struct gw_call *gw_call_new(struct gateway *g, struct gw_session *s, enum call_kind kind)
{
	struct gw_call *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->g = g;
	c->s = s;
	c->kind = kind;
	c->t0_ms = gw_now_ms();
	uv_timer_init(g->cfg.loop, &c->timer);
	c->timer.data = c;
	g->refs++;
	list_add_head(&g->calls, &c->link);
	if (s && kind == CK_TOOL)
		s->pending++;
	return c;
}

/* The call is over (answered, abandoned, or internal and done): unlink and free once no worker
 * job holds it. */
void gw_call_finish(struct gw_call *c)
{
	if (c->freed)
		return;
	c->answered = true;
	struct gw_session *s = c->s;
	c->s = NULL;
	if (s && c->kind == CK_TOOL && s->pending > 0) {
		s->pending--;
		if (s->pending == 0 && s->read_eof)
			session_close(s); /* the agent half-closed and has all its answers */
	}
	uv_timer_stop(&c->timer);
	if (c->in_work)
		return; /* the job's after-callback finishes it */
	c->freed = true;
	list_del(&c->link);
	uv_close((uv_handle_t *)&c->timer, call_free_now);
}

struct gw_call *gw_call_find_down(struct gateway *g, struct gw_server *srv, int64_t id)
{
	struct list_link *pos;
	list_for_each (pos, &g->calls) {
		struct gw_call *c = list_entry(pos, struct gw_call, link);
		if (!c->answered && c->srv == srv && c->down_id == id && c->kind != CK_CANCEL)
			return c;
	}
	return NULL;
}

/* Answer a tool call with a result (stolen) or an error, record it, finish it. */
void gw_call_answer(struct gw_call *c, json_t *result, int code, const char *msg, json_t *data)
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
		gw_session_send(c->s, jsonrpc_result(c->agent_id, result));
	} else {
		snprintf(err, sizeof(err), "%d %s", code, msg);
		g->stats.errors++;
		gw_send_error(c->s, c->agent_id, code, msg, data);
	}
	gw_record_call(g, c->server, c->tool, c->args_bytes, rbytes, c->t0_ms, true, c->rule,
		       err[0] ? err : NULL);
	gw_call_finish(c);
}

static void do_initialize(struct gw_session *s, json_t *id, json_t *params)
{
	const char *want = json_string_value(json_object_get(params, "protocolVersion"));
	static const char *const known[] = { "2025-06-18", "2025-03-26", "2024-11-05" };
	const char *v = GW_PROTOCOL_VERSION;
	for (size_t i = 0; want && i < ELEMENTSOF(known); i++)
		if (streq(want, known[i]))
			v = known[i];
	gw_session_send(s, jsonrpc_result(id, json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s}, s:s}",
							"protocolVersion", v, "capabilities",
							"tools", "listChanged", 0, "serverInfo",
							"name", "capsem-gateway", "version",
							CAPSEM_VERSION, "instructions",
							"Tools of the Capsem sandbox's host: "
							"capsem__fetch/grep/headers read web pages "
							"allowed by the sandbox's network policy; "
							"other tools are named server__tool.")));
}

static void session_dispatch(struct gw_session *s, struct jsonrpc_msg *m)
{
	if (m->kind == JSONRPC_NOTIFICATION) {
		if (streq(m->method, "notifications/cancelled"))
			gw_do_cancelled(s, m->params);
		return;
	}
	if (m->kind != JSONRPC_REQUEST)
		return; /* responses: we never ask the agent anything */
	if (streq(m->method, "tools/call") && s->pending >= s->g->conf->max_pending) {
		char msg[100];
		snprintf(msg, sizeof(msg), "too many requests in flight (at most %u)",
			 s->g->conf->max_pending);
		return gw_send_error(s, m->id, GW_CODE_BUSY, msg, NULL);
	}
	if (streq(m->method, "initialize"))
		do_initialize(s, m->id, m->params);
	else if (streq(m->method, "ping"))
		gw_session_send(s, jsonrpc_result(m->id, NULL));
	else if (streq(m->method, "tools/list"))
		gw_do_tools_list(s, m->id);
	else if (streq(m->method, "tools/call"))
		gw_do_tools_call(s, m->id, m->params);
	else
		gw_send_error(s, m->id, JSONRPC_METHOD_NOT_FOUND, NULL, NULL);
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
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &s->g->calls)
	{
		struct gw_call *c = list_entry(pos, struct gw_call, link);
		if (c->s != s || c->answered)
			continue;
		gw_send_cancel(c, "the client went away");
		gw_record_call(s->g, c->server, c->tool, c->args_bytes, -1, c->t0_ms, true, c->rule,
			       "session closed");
		gw_call_finish(c);
	}
	list_del(&s->link);
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
			gw_send_error(s, NULL, JSONRPC_INVALID_REQUEST, "message too large", NULL);
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
			gw_session_send(s, jsonrpc_error_for(&m));
		else
			session_dispatch(s, &m);
		jsonrpc_msg_done(&m);
	}
	free(buf->base);
}

/* A new session (at most 16 are accepted per readiness notice: see gateway_start). */
static void on_accept(struct unix_listener *l, int fd)
{
	struct gateway *g = l->userdata;
	if (g->n_sessions >= GW_MAX_SESSIONS) {
		log_debug("gateway: more than %u sessions: refused", GW_MAX_SESSIONS);
		safe_close(fd);
		return;
	}
	struct gw_session *s = calloc(1, sizeof(*s));
	if (!s || uv_pipe_init(g->cfg.loop, &s->pipe, 0) < 0) {
		free(s);
		safe_close(fd);
		return;
	}
	s->g = g;
	s->id = ++g->next_session;
	s->pipe.data = s;
	g->refs++;
	jsonrpc_reader_init(&s->rd, JSONRPC_MAX_MESSAGE);
	list_add_head(&g->sessions, &s->link);
	g->n_sessions++;
	g->stats.sessions++;
	if (uv_pipe_open(&s->pipe, fd) < 0 ||
	    uv_read_start((uv_stream_t *)&s->pipe, on_session_alloc, on_session_read) < 0) {
		safe_close(fd);
		session_close(s);
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
	list_init(&g->calls);
	list_init(&g->sessions);
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
	if (ws && cfg->snapshot_store) {
		g->benv.workspace_path = realpath(ws, NULL);
		g->benv.snap_store = strdup(cfg->snapshot_store);
		if (!g->benv.workspace_path || !g->benv.snap_store) {
			r = -ENOMEM;
			goto fail;
		}
	}
	g->builtin_tools = builtin_tools(g->benv.workspace_fd >= 0);
	if (g->builtin_tools && g->benv.snap_store) {
		json_t *snap = gwsnap_tools();
		if (!snap || json_array_extend(g->builtin_tools, snap) < 0)
			json_decref(TAKE_PTR(g->builtin_tools));
		json_decref(snap);
	}
	g->servers = calloc(g->conf->n_servers ? g->conf->n_servers : 1, sizeof(*g->servers));
	if (!g->builtin_tools || !g->servers) {
		r = -ENOMEM;
		goto fail;
	}
	g->listen.userdata = g;
	r = unix_listener_open(&g->listen, cfg->loop, g->socket_path, 64, 16, on_accept);
	if (r < 0) {
		fail(err, errlen, r, "cannot listen on %s: %s", g->socket_path, strerror(-r));
		goto fail_quiet;
	}
	g->refs++;
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
		gw_server_start(srv);
	}
	*ret = g;
	return 0;
fail:
	fail(err, errlen, r, "%s", strerror(-r));
fail_quiet:
	gw_free(g);
	return r;
}

static void on_kill_timer(uv_timer_t *t)
{
	struct gw_server *srv = t->data;
	gw_server_kill(srv, SIGKILL);
	if (!uv_is_closing((uv_handle_t *)t))
		uv_close((uv_handle_t *)t, gw_on_server_timer_closed);
}

void gateway_stop(struct gateway *g)
{
	if (!g || g->stopping)
		return;
	g->stopping = true;
	atomic_store(&g->stop, 1); /* worker jobs: abandon their transfers */
	if (g->listen.open)
		unix_listener_close(&g->listen, on_listener_closed);
	(void)unlink(g->socket_path);
	while (!list_empty(&g->sessions))
		session_close(list_entry(g->sessions.next, struct gw_session, link));
	for (size_t i = 0; i < g->n_servers; i++) {
		struct gw_server *srv = &g->servers[i];
		uv_timer_stop(&srv->timer);
		if (srv->running) {
			uv_close((uv_handle_t *)&srv->in,
				 gw_on_server_handle_closed); /* EOF on stdin */
			gw_server_kill(srv, SIGTERM);
			uv_timer_start(&srv->timer, on_kill_timer, 1000, 0);
		} else {
			uv_close((uv_handle_t *)&srv->timer, gw_on_server_timer_closed);
		}
	}
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &g->calls)
	{
		/* a call in a worker job is freed by its after-callback */
		gw_call_finish(list_entry(pos, struct gw_call, link));
	}
	g->cfg.ledger = NULL; /* the caller closes it next: nothing is recorded after this */
	gw_unref(g);
}

void gateway_get_stats(const struct gateway *g, struct gateway_stats *ret)
{
	*ret = g->stats;
}
