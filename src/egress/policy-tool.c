/* policy-tool.c - the egress policy's MCP tool rules: [[tool_rule]] and policy.tool_default.
 *
 * Trust boundary: the rules are the host user's and administrator's policy text (parsed as
 * hostile input, like the rest of the policy: every glob capped in length and stars); the
 * server and tool names given to policy_decide_tool() come from the gateway's configuration and
 * from MCP servers' tool lists, which are untrusted, and are only glob-matched, never parsed.
 *
 * Tool rules are sorted like request rules (layer, priority, file order) and the first match
 * wins; without one, tool_default (allow unless a layer says otherwise; corp locks it).
 *
 * Threads: loading is self-contained; a loaded policy is read-only and may be shared.
 */
#include "policy-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "toml.h"

/* ---- tool rules ---- */

void policy_tool_rule_done(struct tool_rule *r)
{
	free(r->name);
	free(r->description);
	free(r->server);
	free(r->tool);
}

/* A server or tool glob: printable ASCII without spaces, at most POLICY_MAX_TOOL_GLOB bytes and
 * POLICY_MAX_GLOB_STARS stars (which bounds the matcher's work). */
static bool tool_glob_ok(const char *s, size_t n)
{
	unsigned stars = 0;
	if (n == 0 || n > POLICY_MAX_TOOL_GLOB)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] <= ' ' || s[i] > '~')
			return false;
		stars += s[i] == '*';
	}
	return stars <= POLICY_MAX_GLOB_STARS;
}

static int parse_tool_rule(struct layer *l, size_t idx, const struct toml_value *t,
			   struct tool_rule *r)
{
	const char *s;
	size_t n;
	char label[POLICY_MAX_NAME + 24];
	snprintf(label, sizeof(label), "tool_rule #%zu", idx + 1);
	if (toml_type(t) != TOML_TABLE)
		return policy_kfail(l, "tool_rule", idx, NULL, "%s: expected a table", label);
	const struct toml_value *nv = toml_table_get(t, "name");
	if (!nv)
		return policy_kfail(l, "tool_rule", idx, NULL, "%s: missing 'name'", label);
	if (toml_get_string(nv, &s, &n) < 0 || policy_has_ctl(s, n) || !policy_rule_name_ok(s))
		return policy_kfail(l, "tool_rule", idx, "name",
				    "%s: name: not a rule name (1-%d of A-Z a-z 0-9 . _ -; not "
				    "\"default\")",
				    label, POLICY_MAX_NAME);
	snprintf(label, sizeof(label), "tool_rule '%s'", s);
	r->name = strdup(s);
	if (!r->name)
		return -ENOMEM;
	bool has_action = false;
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *key = toml_table_key(t, i, NULL);
		const struct toml_value *v = toml_table_value(t, i);
		char b[72];
		if (streq(key, "name"))
			continue;
		if (streq(key, "action")) {
			if (!policy_str_is(v, "allow") && !policy_str_is(v, "block"))
				return policy_kfail(l, "tool_rule", idx, key,
						    "%s: action: must be \"allow\" or \"block\"",
						    label);
			r->info.action = policy_str_is(v, "allow") ? POLICY_ALLOW : POLICY_BLOCK;
			has_action = true;
		} else if (streq(key, "server") || streq(key, "tool")) {
			if (toml_get_string(v, &s, &n) < 0 || policy_has_ctl(s, n) ||
			    !tool_glob_ok(s, n))
				return policy_kfail(
					l, "tool_rule", idx, key,
					"%s: %s: expected a glob of 1-%d printable characters "
					"without spaces, at most %d '*'",
					label, key, POLICY_MAX_TOOL_GLOB, POLICY_MAX_GLOB_STARS);
			char **dst = streq(key, "server") ? &r->server : &r->tool;
			free(*dst);
			*dst = strdup(s);
			if (!*dst)
				return -ENOMEM;
		} else if (streq(key, "priority")) {
			int64_t pr;
			if (toml_get_int(v, &pr) < 0 || pr < -MAX_PRIORITY || pr > MAX_PRIORITY)
				return policy_kfail(l, "tool_rule", idx, key,
						    "%s: priority: expected an integer in -%d..%d",
						    label, MAX_PRIORITY, MAX_PRIORITY);
			r->info.priority = pr;
		} else if (streq(key, "description")) {
			char what[POLICY_MAX_NAME + 40];
			snprintf(what, sizeof(what), "%s: description", label);
			int k = policy_get_text(l, v, MAX_DESCRIPTION, &s, what, "tool_rule", idx,
						key);
			if (k < 0)
				return k;
			r->description = strdup(s);
			if (!r->description)
				return -ENOMEM;
		} else {
			return policy_kfail(
				l, "tool_rule", idx, key,
				"%s: %s: unknown key (a tool rule has name, action, server, "
				"tool, priority, description)",
				label, policy_shown(key, b));
		}
	}
	if (!has_action)
		return policy_kfail(l, "tool_rule", idx, NULL,
				    "%s: missing 'action' (\"allow\" or \"block\")", label);
	if (!r->server && !(r->server = strdup("*")))
		return -ENOMEM;
	if (!r->tool && !(r->tool = strdup("*")))
		return -ENOMEM;
	return 0;
}

int policy_parse_tool_rules(struct layer *l, const struct toml_value *v)
{
	if (toml_type(v) != TOML_ARRAY)
		return policy_kfail(l, "", 0, "tool_rule",
				    "tool_rule: expected an array of tables ([[tool_rule]])");
	size_t n = toml_array_size(v);
	if (n > POLICY_MAX_RULES)
		return policy_kfail(l, "tool_rule", POLICY_MAX_RULES, NULL,
				    "more than %d tool rules", POLICY_MAX_RULES);
	if (n == 0)
		return 0;
	_cleanup_free_ unsigned *lines = calloc(n, sizeof(*lines));
	l->trules = calloc(n, sizeof(*l->trules));
	if (!lines || !l->trules)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		lines[i] = policy_where(l, "tool_rule", i, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		struct tool_rule *r = &l->trules[i];
		l->n_trules = i + 1;
		int k = parse_tool_rule(l, i, toml_array_at(v, i), r);
		if (k < 0)
			return k;
		for (size_t j = 0; j < i; j++)
			if (streq(l->trules[j].name, r->name))
				return policy_kfail(
					l, "tool_rule", i, "name",
					"tool_rule '%s': duplicate rule name (first at line %u)",
					r->name, lines[j]);
		r->info.name = r->name;
		r->info.description = r->description;
		r->info.layer = l->id;
		r->info.source = l->p->src[l->id];
		r->info.line = lines[i];
		r->info.server = r->server;
		r->info.tool = r->tool;
		r->order = i;
	}
	return 0;
}

static int tool_rule_cmp(const void *a, const void *b)
{
	const struct tool_rule *x = a, *y = b;
	if (x->info.layer != y->info.layer)
		return x->info.layer < y->info.layer ? -1 : 1;
	if (x->info.priority != y->info.priority)
		return x->info.priority > y->info.priority ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

int policy_merge_tools(struct policy *p, struct layer *ls)
{
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		n += ls[i].n_trules;
	if (n) {
		p->trules = calloc(n, sizeof(*p->trules));
		if (!p->trules)
			return -ENOMEM;
	}
	for (int i = 0; i < 3; i++) {
		if (ls[i].n_trules)
			memcpy(p->trules + p->n_trules, ls[i].trules,
			       ls[i].n_trules * sizeof(*p->trules));
		p->n_trules += ls[i].n_trules;
		free(ls[i].trules);
		ls[i].trules = NULL;
		ls[i].n_trules = 0;
	}
	if (p->n_trules)
		qsort(p->trules, p->n_trules, sizeof(*p->trules), tool_rule_cmp);
	p->tdef = POLICY_ALLOW;
	p->tdef_layer = POLICY_LAYER_DEFAULT;
	for (int i = 2; i >= 0; i--)
		if (ls[i].has_tdef) {
			p->tdef = ls[i].tdef;
			p->tdef_layer = (enum policy_layer)i;
		}
	if (ls[POLICY_LAYER_CORP].has_tdef && ls[POLICY_LAYER_USER].has_tdef)
		return policy_warn(
			p,
			"%s:%u: policy.tool_default is locked by %s; the user value is "
			"ignored",
			ls[POLICY_LAYER_USER].name,
			policy_where(&ls[POLICY_LAYER_USER], "policy", 0, "tool_default", NULL),
			ls[POLICY_LAYER_CORP].name);
	return 0;
}

void policy_decide_tool(const struct policy *p, const char *server, const char *tool,
			struct policy_tool_decision *ret)
{
	server = server ? server : "";
	tool = tool ? tool : "";
	for (size_t i = 0; i < p->n_trules; i++) {
		const struct tool_rule *r = &p->trules[i];
		if (policy_glob_match(r->server, server, strlen(server), false) &&
		    policy_glob_match(r->tool, tool, strlen(tool), false)) {
			*ret = (struct policy_tool_decision){ .action = r->info.action,
							      .rule = r->name,
							      .layer = r->info.layer };
			return;
		}
	}
	*ret = (struct policy_tool_decision){ .action = p->tdef,
					      .rule = "default",
					      .layer = p->tdef_layer };
}

size_t policy_n_tool_rules(const struct policy *p)
{
	return p->n_trules;
}

const struct policy_tool_rule_info *policy_tool_rule(const struct policy *p, size_t i)
{
	return i < p->n_trules ? &p->trules[i].info : NULL;
}

enum policy_action policy_tool_default(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->tdef_layer;
	return p->tdef;
}
