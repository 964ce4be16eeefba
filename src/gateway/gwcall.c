/* gwcall.c - the MCP gateway's tool calls: tools/list, tools/call, cancellation, worker jobs.
 *
 * tools/list merges the ready servers' tools with the built-in ones, hiding what the tool
 * policy blocks (policy_decide_tool). tools/call checks the arguments, decides the tool
 * (blocked: -32001 naming the rule), caps the calls in flight per session (-32003), then
 * forwards the call to its stdio server (with the gateway's own id), posts it to its HTTP server
 * on a worker thread, or runs a built-in tool on one; every call has a timeout (-32002, and the
 * server gets notifications/cancelled). Worker results come back in after_job on the loop.
 *
 * Trust boundary: names and arguments are the guest's (hostile: sizes capped, parsed by the
 * jsonrpc reader); results come from servers and are passed back with the same caps. Threads:
 * the loop thread, except the job functions (copies only: json_deep_copy'd arguments).
 */
#include "gateway-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builtin.h"
#include "log.h"
#include "macro.h"
#include "policy.h"

static void after_job(uv_work_t *w, int status);

int gw_queue_job(struct gw_call *c, uv_work_cb fn)
{
	c->work.data = c;
	int r = uv_queue_work(c->g->cfg.loop, &c->work, fn, after_job);
	if (r == 0) {
		c->in_work = true;
		c->g->refs++;
	}
	return r;
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
			gw_server_schedule_restart(srv);
		}
		gw_call_finish(c);
	} else if (c->kind == CK_CANCEL || c->answered || status == UV_ECANCELED) {
		gw_call_finish(c);
	} else if (c->srv) { /* an HTTP tool call */
		json_t *m = c->w_http.msg;
		if (c->w_rc == -ESTALE) {
			c->srv->state = SRV_DOWN;
			snprintf(c->srv->why, sizeof(c->srv->why), "session expired");
			gw_server_schedule_restart(c->srv);
		}
		if (c->w_rc < 0 || !m) {
			char msg[400];
			snprintf(msg, sizeof(msg), "MCP server '%s' failed: %s", c->server,
				 c->w_http.err);
			gw_call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
		} else if (json_object_get(m, "result")) {
			gw_call_answer(c, json_incref(json_object_get(m, "result")), 0, NULL, NULL);
		} else {
			json_t *e = json_object_get(m, "error");
			json_t *code = json_object_get(e, "code");
			const char *msg = json_string_value(json_object_get(e, "message"));
			gw_call_answer(c, NULL,
				       json_is_integer(code) ? (int)json_integer_value(code)
							     : JSONRPC_INTERNAL_ERROR,
				       msg ? msg : "error",
				       json_deep_copy(json_object_get(e, "data")));
		}
	} else { /* a built-in tool */
		json_t *r = TAKE_PTR(c->w_result);
		if (r)
			gw_call_answer(c, r, 0, NULL, NULL);
		else
			gw_call_answer(c, NULL, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
	}
	gw_unref(g);
}

/* ---- sessions: requests ---- */

void gw_send_cancel(struct gw_call *c, const char *reason)
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
			(void)gw_write_json((uv_stream_t *)&srv->in, &srv->queued, n);
	} else if (srv->state == SRV_READY) {
		struct gw_call *k = gw_call_new(c->g, NULL, CK_CANCEL);
		if (k) {
			k->srv = srv;
			k->w_session = srv->session_id ? strdup(srv->session_id) : NULL;
			if (jsonrpc_dump(n, &k->w_body, &k->w_len) < 0 ||
			    gw_queue_job(k, gw_job_http_post) < 0)
				gw_call_finish(k);
		}
	}
	json_decref(n);
}

static void on_call_timeout(uv_timer_t *t)
{
	struct gw_call *c = t->data;
	char msg[200];
	uint64_t ms = gw_now_ms() - c->t0_ms;
	snprintf(msg, sizeof(msg), "tool call timed out after %" PRIu64 " ms", ms);
	gw_send_cancel(c, "timeout");
	gw_call_answer(c, NULL, GW_CODE_TIMEOUT, msg, NULL);
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

void gw_do_tools_list(struct gw_session *s, json_t *id)
{
	struct gateway *g = s->g;
	uint64_t t0 = gw_now_ms();
	json_t *all = json_array();
	if (g->conf->builtin)
		add_tools(g, all, GW_BUILTIN_SERVER, g->builtin_tools);
	for (size_t i = 0; i < g->n_servers; i++)
		if (g->servers[i].state == SRV_READY)
			add_tools(g, all, g->servers[i].conf->name, g->servers[i].tools);
	json_t *result = json_pack("{s:o}", "tools", all);
	_cleanup_free_ char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
	gw_record_call(g, "*", NULL, 0, text ? (int64_t)strlen(text) : -1, t0, true, NULL, NULL);
	if (!result)
		return gw_send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
	gw_session_send(s, jsonrpc_result(id, result));
}

void gw_do_tools_call(struct gw_session *s, json_t *id, json_t *params)
{
	struct gateway *g = s->g;
	const char *name = json_string_value(json_object_get(params, "name"));
	json_t *args = json_object_get(params, "arguments");
	char server[GW_SERVER_NAME_MAX + 1], tool[GW_TOOL_NAME_MAX + 1], msg[400];
	uint64_t t0 = gw_now_ms();

	if (!json_is_object(params) || !name || (args && !json_is_object(args)))
		return gw_send_error(s, id, JSONRPC_INVALID_PARAMS,
				     "tools/call needs params {name: string, arguments?: object}",
				     NULL);
	_cleanup_free_ char *atext = args ? json_dumps(args, JSON_COMPACT) : NULL;
	size_t abytes = atext ? strlen(atext) : 0;
	if (gw_name_split(name, server, tool) < 0) {
		snprintf(msg, sizeof(msg), "unknown tool '%.200s' (tools are named server__tool)",
			 name);
		return gw_send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
	}
	/* the tool policy, before anything else learns of the call */
	struct policy_tool_decision d;
	policy_decide_tool(gw_policy(g), server, tool, &d);
	char subject[GW_SERVER_NAME_MAX + GW_TOOL_NAME_MAX + 4];
	(void)gw_name_join(server, tool, subject, sizeof(subject));
	gw_record_policy(g, "tool", subject, d.action == POLICY_ALLOW, d.rule, d.layer);
	if (d.action != POLICY_ALLOW) {
		g->stats.blocked++;
		snprintf(msg, sizeof(msg), "tool '%s' is blocked by policy rule '%s' (%s)", subject,
			 d.rule, policy_layer_name(d.layer));
		gw_record_call(g, server, tool, abytes, -1, t0, false, d.rule, msg);
		return gw_send_error(s, id, GW_CODE_BLOCKED, msg,
				     json_pack("{s:s, s:s, s:s, s:s}", "rule", d.rule, "layer",
					       policy_layer_name(d.layer), "server", server, "tool",
					       tool));
	}
	struct gw_server *srv = NULL;
	if (streq(server, GW_BUILTIN_SERVER)) {
		if (!g->conf->builtin || !find_tool(g->builtin_tools, tool)) {
			snprintf(msg, sizeof(msg), "unknown tool '%.200s'", name);
			gw_record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return gw_send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
		}
	} else {
		srv = find_server(g, server);
		if (!srv || (srv->state == SRV_READY && !find_tool(srv->tools, tool))) {
			snprintf(msg, sizeof(msg), "unknown tool '%.200s'", name);
			gw_record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return gw_send_error(s, id, JSONRPC_INVALID_PARAMS, msg, NULL);
		}
		if (srv->state != SRV_READY ||
		    (srv->http && !gw_http_allowed(srv, srv->why, sizeof(srv->why)))) {
			snprintf(msg, sizeof(msg), "MCP server '%s' is unavailable%s%s", server,
				 srv->why[0] ? ": " : "", srv->why);
			gw_record_call(g, server, tool, abytes, -1, t0, true, d.rule, msg);
			return gw_send_error(s, id, GW_CODE_UNAVAILABLE, msg, NULL);
		}
	}
	struct gw_call *c = gw_call_new(g, s, CK_TOOL);
	if (!c)
		return gw_send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory", NULL);
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
				return gw_call_answer(
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
			gw_record_policy(g, "http", sub, nd.action == POLICY_ALLOW, nd.rule,
					 nd.layer);
			if (nd.action != POLICY_ALLOW) {
				g->stats.blocked++;
				snprintf(msg, sizeof(msg),
					 "%s is blocked by the network policy (rule '%s', %s)", url,
					 nd.rule, policy_layer_name(nd.layer));
				snprintf(c->rule, sizeof(c->rule), "%s", nd.rule);
				gw_send_error(s, id, GW_CODE_BLOCKED, msg,
					      json_pack("{s:s, s:s, s:s}", "rule", nd.rule, "layer",
							policy_layer_name(nd.layer), "url", url));
				gw_record_call(g, server, tool, abytes, -1, t0, false, nd.rule,
					       msg);
				return gw_call_finish(c);
			}
		}
		c->w_args = args ? json_deep_copy(args) : json_object();
		if (!c->w_args || gw_queue_job(c, job_builtin) < 0)
			return gw_call_answer(c, NULL, JSONRPC_INTERNAL_ERROR,
					      "cannot queue the call", NULL);
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
		r = gw_write_json((uv_stream_t *)&srv->in, &srv->queued, req);
	} else {
		c->w_id = json_integer(c->down_id);
		c->w_session = srv->session_id ? strdup(srv->session_id) : NULL;
		r = jsonrpc_dump(req, &c->w_body, &c->w_len);
		if (r == 0)
			r = gw_queue_job(c, gw_job_http_post);
	}
	json_decref(req);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot send the call to MCP server '%s': %s", server,
			 strerror(-r));
		gw_call_answer(c, NULL, GW_CODE_UNAVAILABLE, msg, NULL);
	}
}

void gw_do_cancelled(struct gw_session *s, json_t *params)
{
	json_t *rid = json_object_get(params, "requestId");
	if (!jsonrpc_id_valid(rid))
		return;
	struct list_link *pos;
	list_for_each (pos, &s->g->calls) {
		struct gw_call *c = list_entry(pos, struct gw_call, link);
		if (c->s == s && c->kind == CK_TOOL && !c->answered &&
		    jsonrpc_id_equal(c->agent_id, rid)) {
			gw_send_cancel(c, "cancelled by the client");
			gw_record_call(s->g, c->server, c->tool, c->args_bytes, -1, c->t0_ms, true,
				       c->rule, "cancelled");
			gw_call_finish(c);
			return;
		}
	}
}
