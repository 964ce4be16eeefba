/* fuzz-policy.c - the egress policy loader on arbitrary text (policy files are parsed as hostile
 * input) and the decision walk on hostile request strings.
 *
 * Input: CORP '\0' USER '\0' REQUEST, each part optional (no NUL: everything is the user file).
 * On success the merged policy's invariants are re-checked: rules in evaluation order (layer,
 * then priority descending), every rule has hosts and a name, decisions name an existing rule or
 * "default" / "invalid-host"; then requests built from the REQUEST bytes and from each rule's own
 * patterns are decided at the three levels, and MCP tools from the REQUEST bytes and from each
 * [[tool_rule]]'s globs. The path normaliser the proxy forwards with (policy_path_normalize) never
 * lengthens, is idempotent, and deciding on its output gives the same answer as on its input.
 * On failure the message must be set and the status must be -EBADMSG or -ENOMEM. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void trace(const struct policy_rule_info *r, enum policy_match m, void *ud)
{
	if (!r->name || m > POLICY_MATCH_DECIDES)
		__builtin_trap();
	(*(size_t *)ud)++;
}

static void check_decision(const struct policy *p, const char *host, uint16_t port,
			   const char *method, const char *path)
{
	struct policy_request rq = { host, port, method, path };
	struct policy_decision d, d2;
	size_t seen = 0;
	policy_decide(p, &rq, &d);
	policy_decide_trace(p, &rq, &d2, trace, &seen);
	if (d.action != d2.action || d.rule != d2.rule || d.layer != d2.layer ||
	    d.provisional != d2.provisional || seen > policy_n_rules(p))
		__builtin_trap();
	if (!d.rule || (d.action != POLICY_ALLOW && d.action != POLICY_BLOCK))
		__builtin_trap();
	if (strcmp(d.rule, "default") == 0 || strcmp(d.rule, "invalid-host") == 0)
		return;
	for (size_t i = 0; i < policy_n_rules(p); i++)
		if (policy_rule(p, i)->name == d.rule)
			return;
	__builtin_trap();
}

/* an MCP tool decision names an existing [[tool_rule]] or "default", and is stable */
static void check_tool(const struct policy *p, const char *server, const char *tool)
{
	struct policy_tool_decision d, d2;
	policy_decide_tool(p, server, tool, &d);
	policy_decide_tool(p, server, tool, &d2);
	if (!d.rule || d.action != d2.action || d.rule != d2.rule || d.layer != d2.layer ||
	    (d.action != POLICY_ALLOW && d.action != POLICY_BLOCK))
		__builtin_trap();
	if (strcmp(d.rule, "default") == 0)
		return;
	for (size_t i = 0; i < policy_n_tool_rules(p); i++)
		if (strcmp(policy_tool_rule(p, i)->name, d.rule) == 0)
			return;
	__builtin_trap();
}

/* what the proxy forwards is what was decided */
static void check_normalize(const struct policy *p, const char *req)
{
	size_t rl = strlen(req);
	_cleanup_free_ char *a = malloc(rl + 1), *b = malloc(rl + 1);
	if (!a || !b)
		return;
	ssize_t n = policy_path_normalize(req, a, rl + 1);
	if (n < 0 || (size_t)n > rl || strlen(a) != (size_t)n)
		__builtin_trap();
	if (policy_path_normalize(a, b, rl + 1) != n || strcmp(a, b) != 0)
		__builtin_trap();
	if (rl > 0 && policy_path_normalize(req, b, rl) != -ENOBUFS)
		__builtin_trap();
	struct policy_request r1 = { "example.com", 443, "GET", req };
	struct policy_request r2 = { "example.com", 443, "GET", a };
	struct policy_decision d1, d2;
	policy_decide(p, &r1, &d1);
	policy_decide(p, &r2, &d2);
	if (d1.action != d2.action || d1.rule != d2.rule)
		__builtin_trap();
}

static void check_policy(const struct policy *p, const char *req)
{
	size_t n = policy_n_rules(p);
	for (size_t i = 0; i < n; i++) {
		const struct policy_rule_info *r = policy_rule(p, i);
		if (!r || !r->name || r->n_hosts == 0 || !r->hosts[0])
			__builtin_trap();
		if (i > 0) {
			const struct policy_rule_info *q = policy_rule(p, i - 1);
			if (q->layer > r->layer ||
			    (q->layer == r->layer && q->priority < r->priority))
				__builtin_trap();
		}
	}
	if (policy_rule(p, n))
		__builtin_trap();
	for (const char *const *w = policy_warnings(p); *w; w++)
		if (!**w)
			__builtin_trap();

	/* the request part, as host, as path, at every level */
	check_decision(p, req, 0, NULL, NULL);
	check_decision(p, req, 443, NULL, NULL);
	check_decision(p, "example.com", 443, "GET", req);
	check_decision(p, req, 80, req, req);
	check_normalize(p, req);

	/* each rule's own patterns (at most 64 rules) */
	for (size_t i = 0; i < n && i < 64; i++) {
		const struct policy_rule_info *r = policy_rule(p, i);
		const char *h = r->hosts[0];
		if (h[0] == '*' && h[1] == '.')
			h += 2;
		uint16_t port = r->n_ports ? r->ports[0] : 443;
		const char *m = r->n_methods ? r->methods[0] : "GET";
		const char *path = r->n_paths ? r->paths[0] : "/";
		check_decision(p, h, 0, NULL, NULL);
		check_decision(p, h, port, NULL, NULL);
		check_decision(p, h, port, m, path);
		check_decision(p, h, port, m, req);
		char c[300];
		int k = policy_upstream_override(p, h, port, c, sizeof(c));
		if (k != 0 && k != -ENOENT)
			__builtin_trap();
	}
	/* tools: the request part as server and tool, and each tool rule's own globs */
	check_tool(p, req, req);
	check_tool(p, "capsem", req);
	for (size_t i = 0; i < policy_n_tool_rules(p) && i < 64; i++) {
		const struct policy_tool_rule_info *t = policy_tool_rule(p, i);
		if (!t || !t->name || !t->server || !t->tool)
			__builtin_trap();
		check_tool(p, t->server, t->tool);
		check_tool(p, t->server, req);
	}
	if (policy_tool_rule(p, policy_n_tool_rules(p)))
		__builtin_trap();
	for (size_t i = 0; i < policy_n_overrides(p); i++) {
		const struct policy_override_info *o = policy_override(p, i);
		char c[300];
		if (policy_upstream_override(p, o->host, o->port, c, sizeof(c)) != 0 ||
		    strcmp(c, o->connect) != 0)
			__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *corp = NULL, *user = text, *req = "";
	size_t corp_len = 0, user_len = size;
	const char *nul = memchr(text, 0, size);
	_cleanup_free_ char *reqbuf = NULL;
	if (nul) {
		corp = text;
		corp_len = (size_t)(nul - text);
		user = nul + 1;
		user_len = size - corp_len - 1;
		const char *nul2 = memchr(user, 0, user_len);
		if (nul2) {
			size_t rl = user_len - (size_t)(nul2 - user) - 1;
			user_len = (size_t)(nul2 - user);
			reqbuf = strndup(nul2 + 1, rl);
			if (!reqbuf)
				return 0;
			req = reqbuf;
		}
	}

	struct policy *p = NULL;
	char err[256];
	err[0] = 0;
	int r = policy_load_strings(corp, corp_len, user, user_len, &p, err, sizeof(err));
	if (r == 0) {
		if (!p)
			__builtin_trap();
		check_policy(p, req);
		policy_free(p);
	} else if ((r != -EBADMSG && r != -ENOMEM) || p || !err[0]) {
		__builtin_trap();
	}
	return 0;
}
