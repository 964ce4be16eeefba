/* policyapi.c - the egress policy for the web UI: GET /policy (the merged rules in evaluation
 * order with their layers, corp rules marked locked, the default action, warnings) and POST
 * /policy/check ({"url", "method"?}: the decision the proxy would make, and its rule).
 *
 * The three layers are loaded as `capsem policy` and every VM's egress service load them
 * (/etc/capsem/corp.toml, $CAPSEM_HOME/user.toml, the shipped defaults: src/egress/policy.c) on
 * libuv's worker pool, fresh for each request (the files may change at any time).
 *
 * Trust boundary: API clients (the URL is parsed here, bounded); the policy files are the
 * host's. Thread: the loop, except the load-and-decide job.
 */
#include "policyapi.h"

#include <stdio.h>
#include <string.h>

#include "home.h"
#include "jsonutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"

struct pjob {
	uv_work_t w;
	struct httpd_conn *c;
	int check;
	char host[POLICY_MAX_HOST + 1];
	uint16_t port;
	char method[16];
	char path[POLICY_MAX_PATH + 1];
	json_t *res;
	int status;
};

static json_t *strv(const char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void pjob_work(uv_work_t *w)
{
	struct pjob *j = w->data;
	_cleanup_free_ char *home = NULL, *user = NULL;
	char err[512] = "";
	struct policy *p = NULL;
	if (capsem_home(&home) < 0 || asprintf(&user, "%s/%s", home, POLICY_USER_FILE) < 0) {
		j->status = 500;
		return;
	}
	int r = policy_load(POLICY_CORP_PATH, user, &p, err, sizeof(err));
	if (r < 0) {
		j->status = 500;
		j->res = json_pack("{s:s, s:s}", "error", err[0] ? err : strerror(-r), "code",
				   "bad_policy");
		return;
	}
	if (j->check) {
		struct policy_request rq = {
			.host = j->host, .port = j->port, .method = j->method, .path = j->path
		};
		struct policy_decision d;
		policy_decide(p, &rq, &d);
		char norm[POLICY_MAX_PATH + 1];
		ssize_t k = policy_path_normalize(j->path, norm, sizeof(norm));
		j->res = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s*}", "action",
				   policy_action_name(d.action), "rule", d.rule, "layer",
				   policy_layer_name(d.layer), "host", j->host, "port", j->port,
				   "method", j->method, "normalized_path",
				   k > 0 && strcmp(norm, j->path) != 0 ? norm : NULL);
	} else {
		json_t *rules = json_array();
		for (size_t i = 0; rules && i < policy_n_rules(p); i++) {
			const struct policy_rule_info *ri = policy_rule(p, i);
			char match[512];
			snprintf(match, sizeof(match), "%s%s%s%s%s",
				 ri->n_hosts ? ri->hosts[0] : "*", ri->n_hosts > 1 ? " …" : "",
				 ri->n_ports ? " (ports)" : "", ri->n_methods ? " " : "",
				 ri->n_methods ? ri->methods[0] : "");
			json_array_append_new(
				rules, json_pack("{s:s, s:s*, s:s, s:s, s:I, s:b, s:s, s:i, s:o, "
						 "s:o, s:o, s:s}",
						 "name", ri->name, "description", ri->description,
						 "action", policy_action_name(ri->action), "layer",
						 policy_layer_name(ri->layer), "priority",
						 (json_int_t)ri->priority, "locked",
						 ri->layer == POLICY_LAYER_CORP, "source",
						 ri->source, "line", (int)ri->line, "hosts",
						 strv(ri->hosts, ri->n_hosts), "methods",
						 strv(ri->methods, ri->n_methods), "paths",
						 strv(ri->paths, ri->n_paths), "match", match));
		}
		enum policy_layer dl;
		enum policy_action da = policy_default_action(p, &dl);
		json_t *warn = json_array();
		for (const char *const *wv = policy_warnings(p); warn && wv && *wv; wv++)
			json_array_append_new(warn, json_string(*wv));
		j->res = json_pack("{s:o, s:s, s:s, s:o, s:s, s:s}", "rules", rules,
				   "default_action", policy_action_name(da), "default_layer",
				   policy_layer_name(dl), "warnings", warn, "corp",
				   POLICY_CORP_PATH, "user", user);
	}
	j->status = j->res ? 200 : 500;
	policy_free(p);
}

static void pjob_done(uv_work_t *w, int st)
{
	struct pjob *j = w->data;
	if (j->res)
		httpd_reply_json(j->c, j->status, TAKE_PTR(j->res));
	else
		httpd_reply_error(j->c, 500, "internal", "cannot load the policy");
	free(j);
}

static void pjob_start(struct api *a, struct pjob *j)
{
	j->w.data = j;
	if (uv_queue_work(a->loop, &j->w, pjob_work, pjob_done) < 0) {
		httpd_reply_error(j->c, 500, "internal", "cannot queue the policy job");
		free(j);
	}
}

void policyapi_show(struct api *a, struct httpd_conn *c)
{
	struct pjob *j = calloc(1, sizeof(*j));
	if (!j) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	j->c = c;
	pjob_start(a, j);
}

/* "scheme://host[:port]/path" -> host, port, path (http and https only). 0 or -EINVAL. */
static int parse_url(const char *url, struct pjob *j)
{
	uint16_t port;
	const char *rest;
	if (!strncmp(url, "https://", 8)) {
		port = 443;
		rest = url + 8;
	} else if (!strncmp(url, "http://", 7)) {
		port = 80;
		rest = url + 7;
	} else {
		return -EINVAL;
	}
	size_t hl = strcspn(rest, ":/?#");
	if (hl == 0 || hl > POLICY_MAX_HOST)
		return -EINVAL;
	memcpy(j->host, rest, hl);
	j->host[hl] = 0;
	rest += hl;
	if (*rest == ':') {
		const char *end;
		uint32_t p;
		if (parse_u32_prefix(rest + 1, &p, &end) < 0 || p == 0 || p > 65535)
			return -EINVAL;
		port = (uint16_t)p;
		rest = end;
	}
	const char *path = *rest == '/' ? rest : "/";
	if (strlen(path) > POLICY_MAX_PATH)
		return -EINVAL;
	snprintf(j->path, sizeof(j->path), "%.*s", (int)strcspn(path, "#"), path);
	j->port = port;
	return 0;
}

void policyapi_check(struct api *a, struct httpd_conn *c, const struct buf *body)
{
	json_error_t je;
	_cleanup_json_ json_t *b = json_loadb((const char *)buf_head(body), buf_len(body),
					      JSON_REJECT_DUPLICATES, &je);
	const char *url = json_string_value(json_object_get(b, "url"));
	const char *method = json_string_value(json_object_get(b, "method"));
	struct pjob *j = calloc(1, sizeof(*j));
	if (!j) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	if (!url || parse_url(url, j) < 0 ||
	    (method && (strlen(method) == 0 || strlen(method) >= sizeof(j->method) ||
			strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method)))) {
		free(j);
		httpd_reply_error(c, 400, "bad_request",
				  "expected {\"url\": \"http(s)://host[:port]/path\", \"method\"?: "
				  "\"GET\"}");
		return;
	}
	snprintf(j->method, sizeof(j->method), "%s", method ? method : "GET");
	j->c = c;
	j->check = 1;
	pjob_start(a, j);
}
