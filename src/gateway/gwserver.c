/* gwserver.c - the MCP gateway's configured servers: stdio supervision and HTTP connect.
 *
 * stdio servers are spawned with their configured argv and a minimal environment, initialised
 * (initialize, notifications/initialized, tools/list with pagination: at most GW_MAX_PAGES pages
 * and GW_MAX_TOOLS tools), re-listed on notifications/tools/list_changed, and restarted with
 * back-off (0.5 s doubling to 30 s) when they exit; the calls they had in flight get -32603.
 * Responses are matched to calls by the gateway's own ids (gw_call_find_down), never by the
 * ids a server chooses. HTTP servers connect on a worker thread (httpmcp.c); their URL is
 * decided by the egress policy (POST host:port/path) first: a denied URL makes the server
 * unavailable.
 *
 * Trust boundary: the servers are the host user's configuration, but what they print is parsed
 * with the same caps as the guest's messages (the fuzzed jsonrpc reader). Thread: the loop
 * thread, except job_http_connect and gw_job_http_post on libuv's thread pool (they touch only
 * their call's w_* fields and the read-only configuration).
 */
#include "gateway-internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builtin.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "strv.h"

/* ---- servers: stdio ---- */

void gw_server_schedule_restart(struct gw_server *srv);
static int server_send_internal(struct gw_server *srv, enum call_kind kind, const char *method,
				json_t *params);

static void server_fail_calls(struct gw_server *srv, const char *why)
{
	char msg[300];
	snprintf(msg, sizeof(msg), "MCP server '%s' %s", srv->conf->name, why);
	struct list_link *pos, *tmp;
	list_for_each_safe(pos, tmp, &srv->g->calls)
	{
		struct gw_call *c = list_entry(pos, struct gw_call, link);
		if (c->srv != srv || c->answered)
			continue;
		if (c->kind == CK_TOOL)
			gw_call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
		else if (!c->in_work)
			gw_call_finish(c);
	}
}

void gw_server_kill(struct gw_server *srv, int sig)
{
	if (srv->running)
		(void)uv_process_kill(&srv->proc, sig);
}

void gw_on_server_handle_closed(uv_handle_t *h)
{
	struct gw_server *srv = h->data;
	srv->open_handles--;
	gw_unref(srv->g);
}

void gw_on_server_timer_closed(uv_handle_t *h)
{
	struct gw_server *srv = h->data;
	gw_unref(srv->g);
}

static void server_close_pipes(struct gw_server *srv)
{
	if (!uv_is_closing((uv_handle_t *)&srv->in))
		uv_close((uv_handle_t *)&srv->in, gw_on_server_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&srv->out))
		uv_close((uv_handle_t *)&srv->out, gw_on_server_handle_closed);
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
	uv_close((uv_handle_t *)&srv->proc, gw_on_server_handle_closed);
	server_fail_calls(srv, srv->g->stopping ? "stopped" : "exited");
	json_decref(srv->tools);
	srv->tools = NULL;
	if (!srv->g->stopping) {
		gw_server_schedule_restart(srv);
	} else {
		uv_timer_stop(&srv->timer);
		if (!uv_is_closing((uv_handle_t *)&srv->timer))
			uv_close((uv_handle_t *)&srv->timer, gw_on_server_timer_closed);
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
			(void)gw_write_json((uv_stream_t *)&srv->in, &srv->queued, reply);
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
	struct gw_call *c = gw_call_find_down(g, srv, json_integer_value(m->id));
	if (!c)
		return; /* answered already (timed out, cancelled) */
	if (c->kind == CK_TOOL) {
		if (m->kind == JSONRPC_RESPONSE)
			gw_call_answer(c, json_incref(m->result), 0, NULL, NULL);
		else
			gw_call_answer(c, NULL, m->error_code, m->error_message,
				       json_deep_copy(json_object_get(m->error, "data")));
		return;
	}
	unsigned page = c->page;
	enum call_kind kind = c->kind;
	gw_call_finish(c);
	if (m->kind == JSONRPC_ERROR) {
		log_debug("gateway: MCP server %s: %s failed: %s", srv->conf->name,
			  kind == CK_INIT ? "initialize" : "tools/list", m->error_message);
		snprintf(srv->why, sizeof(srv->why), "failed to start: %.150s", m->error_message);
		gw_server_kill(srv, SIGKILL);
		return;
	}
	if (kind == CK_INIT) {
		json_t *n = jsonrpc_notification("notifications/initialized", NULL);
		if (n)
			(void)gw_write_json((uv_stream_t *)&srv->in, &srv->queued, n);
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
			struct list_link *pos;
			list_for_each (pos, &g->calls) {
				struct gw_call *x = list_entry(pos, struct gw_call, link);
				if (x->srv == srv && x->kind == CK_LIST && !x->answered)
					x->page = page + 1;
			}
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
		gw_server_kill(srv, SIGKILL);
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
	struct gw_call *c = gw_call_new(srv->g, NULL, kind);
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
	int r = req ? gw_write_json((uv_stream_t *)&srv->in, &srv->queued, req) : -ENOMEM;
	json_decref(req);
	if (r < 0) {
		gw_call_finish(c);
		gw_server_kill(srv, SIGKILL);
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

void gw_server_start(struct gw_server *srv)
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
		return gw_server_schedule_restart(srv);
	/* the confining launcher first, when the caller gave one (capsem-vm --mcp-exec) */
	_cleanup_strv_free_ char **argv = NULL;
	int pr = 0;
	for (char *const *p = g->cfg.spawn_prefix; p && *p; p++)
		pr |= strv_push(&argv, *p);
	for (char *const *p = srv->conf->argv; *p; p++)
		pr |= strv_push(&argv, *p);
	if (pr < 0 || !argv)
		return gw_server_schedule_restart(srv);
	uv_pipe_init(g->cfg.loop, &srv->in, 0);
	uv_pipe_init(g->cfg.loop, &srv->out, 0);
	srv->in.data = srv->out.data = srv->proc.data = srv;
	srv->open_handles += 2;
	g->refs += 2;
	uv_stdio_container_t stdio[3] = {
		/* NOLINTNEXTLINE(clang-analyzer-optin.core.EnumCastOutOfRange): libuv's flags OR */
		{ .flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
		  .data.stream = (uv_stream_t *)&srv->in },
		/* NOLINTNEXTLINE(clang-analyzer-optin.core.EnumCastOutOfRange): libuv's flags OR */
		{ .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
		  .data.stream = (uv_stream_t *)&srv->out },
		{ .flags = UV_INHERIT_FD, .data.fd = 2 },
	};
	uv_process_options_t o = {
		.exit_cb = on_server_exit,
		.file = argv[0],
		.args = argv,
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
		uv_close((uv_handle_t *)&srv->proc, gw_on_server_handle_closed);
		server_close_pipes(srv);
		gw_server_schedule_restart(srv);
		return;
	}
	srv->open_handles++;
	g->refs++;
	srv->running = true;
	srv->state = SRV_STARTING;
	srv->started_ms = gw_mono_ms();
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
	gw_server_start(t->data);
}

void gw_server_schedule_restart(struct gw_server *srv)
{
	if (srv->g->stopping)
		return;
	if (srv->started_ms && gw_mono_ms() - srv->started_ms > GW_BACKOFF_MAX_MS)
		srv->backoff_ms = 0; /* it ran for a while: start again from the bottom */
	srv->backoff_ms = srv->backoff_ms ? MIN(srv->backoff_ms * 2, (uint64_t)GW_BACKOFF_MAX_MS)
					  : GW_BACKOFF_MIN_MS;
	uv_timer_start(&srv->timer, on_restart_timer, srv->backoff_ms, 0);
}

/* ---- servers: HTTP ---- */

/* The egress policy's decision on a POST to an HTTP server's URL. */
bool gw_http_allowed(struct gw_server *srv, char *why, size_t cap)
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
		gw_record_policy(srv->g, "http", subject, false, d.rule, d.layer);
		return false;
	}
	return true;
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
	if (!gw_http_allowed(srv, srv->why, sizeof(srv->why))) {
		log_warn("gateway: MCP server %s unavailable: %s", srv->conf->name, srv->why);
		srv->state = SRV_DOWN;
		gw_server_schedule_restart(srv); /* the policy may change */
		return;
	}
	struct gw_call *c = gw_call_new(srv->g, NULL, CK_HTTP_CONNECT);
	if (!c)
		return gw_server_schedule_restart(srv);
	c->srv = srv;
	srv->state = SRV_STARTING;
	srv->connecting = true;
	if (gw_queue_job(c, job_http_connect) < 0) {
		srv->connecting = false;
		gw_call_finish(c);
		gw_server_schedule_restart(srv);
	}
}

static void on_send_timeout(uv_timer_t *t)
{
	struct gw_call *c = t->data;
	struct gw_server *srv = c->srv;
	snprintf(srv->why, sizeof(srv->why), "did not answer %s in time",
		 c->kind == CK_INIT ? "initialize" : "tools/list");
	log_warn("gateway: MCP server %s %s", srv->conf->name, srv->why);
	gw_call_finish(c);
	gw_server_kill(srv, SIGKILL);
}

/* Worker: POST one message and wait for its response. */
void gw_job_http_post(uv_work_t *w)
{
	struct gw_call *c = w->data;
	const struct gwconf_server *sc = c->srv->conf;
	c->w_rc = httpmcp_post(c->srv->url.url, sc->headers, c->w_session, c->w_body, c->w_len,
			       c->w_id, (long)sc->timeout_ms + 1000, &c->g->stop, &c->w_http);
}
