/* cmd-policy.c - capsem policy check | show | defaults: the egress policy, explained locally.
 *
 * Loads the same three layers the egress proxy uses (/etc/capsem/corp.toml,
 * $CAPSEM_HOME/user.toml, the shipped defaults; --corp/--user point at other files, e.g. a
 * draft) with src/egress/policy.c and answers without a daemon: `check` decides one URL,
 * connection (host:port) or DNS name (host) and shows which rules looked at it; `show` prints the
 * merged rules in evaluation order, the settings and the warnings; `defaults` prints the shipped
 * TOML. `check` decides through the same policy_decide() as the proxy, which normalises the path
 * the way the proxy forwards it (policy_path_normalize), so both give the same answer; the
 * normalised path is shown when it differs. Trust boundary: the user's own arguments and files,
 * validated strictly. Main thread.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "clilib.h"
#include "commands.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"

#define POLICY_EXIT_BLOCKED 1

static const char usage_text[] =
	"Usage: capsem policy check URL [--method M] [--json] [--corp FILE] [--user FILE]\n"
	"       capsem policy tool SERVER__TOOL [--json] [--corp FILE] [--user FILE]\n"
	"       capsem policy show [--json] [--corp FILE] [--user FILE]\n"
	"       capsem policy defaults\n"
	"\n"
	"Explain the egress policy: which names, ports, methods and paths a VM may reach.\n"
	"The policy is the corp file (" POLICY_CORP_PATH "), then the user file\n"
	"($CAPSEM_HOME/" POLICY_USER_FILE "), then the shipped defaults (docs/POLICY.md).\n"
	"\n"
	"check URL decides one of:\n"
	"  https://host[:port]/path?query   an HTTP request (method GET unless --method)\n"
	"  http://host[:port]/path\n"
	"  host:port, [v6]:port             a connection, before any HTTP is seen\n"
	"  host                             a DNS lookup\n"
	"and shows the rules that looked at it. Exit status: 0 allowed, 1 blocked, 2 bad input\n"
	"or an invalid policy file.\n"
	"tool decides an MCP tool call as the VM's gateway does ([[tool_rule]]; a tool is\n"
	"named SERVER__TOOL, e.g. capsem__fetch; docs/MCP.md).\n"
	"show prints the merged rules in evaluation order, the settings and any warnings.\n"
	"defaults prints the shipped default policy (a starting point for a user file).\n"
	"\n"
	"Options:\n"
	"  -X, --method M   the request's method (check, with an http(s) URL)\n"
	"      --json       machine-readable output\n"
	"      --corp FILE  use FILE as the corp file (a missing file is an empty layer)\n"
	"      --user FILE  use FILE as the user file\n";

struct target {
	char host[300];
	uint16_t port;
	const char *method;
	char *path; /* malloc'ed, or NULL */
	const char *level;
};

/* "[v6]:port", "host:port" or "host" (port_required: the port must be there). */
static int parse_hostport(const char *s, size_t n, struct target *t, uint16_t default_port)
{
	const char *host = s, *port = NULL;
	size_t hn = n;
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return -EINVAL;
		hn = (size_t)(close - s) + 1;
		if (hn < n) {
			if (s[hn] != ':')
				return -EINVAL;
			port = s + hn + 1;
		}
	} else {
		const char *colon = memchr(s, ':', n);
		if (colon) {
			if (memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
				return -EINVAL; /* a bare IPv6 address needs brackets */
			hn = (size_t)(colon - s);
			port = colon + 1;
		}
	}
	if (hn == 0 || hn >= sizeof(t->host))
		return -EINVAL;
	memcpy(t->host, host, hn);
	t->host[hn] = 0;
	t->port = default_port;
	if (port) {
		char pb[8];
		size_t pn = n - (size_t)(port - s);
		uint32_t v;
		if (pn == 0 || pn >= sizeof(pb))
			return -EINVAL;
		memcpy(pb, port, pn);
		pb[pn] = 0;
		if (parse_u32(pb, &v) < 0 || v < 1 || v > 65535)
			return -EINVAL;
		t->port = (uint16_t)v;
	}
	return 0;
}

static int parse_target(const char *arg, const char *method, struct target *t)
{
	const char *sep = strstr(arg, "://");
	*t = (struct target){ 0 };
	if (!sep) {
		if (method || strpbrk(arg, "/?#@ "))
			return -EINVAL;
		int k = parse_hostport(arg, strlen(arg), t, 0);
		if (k < 0)
			return k;
		t->level = t->port ? "connection" : "dns";
		return 0;
	}
	size_t sl = (size_t)(sep - arg);
	uint16_t def;
	if (sl == 5 && strncasecmp(arg, "https", 5) == 0)
		def = 443;
	else if (sl == 4 && strncasecmp(arg, "http", 4) == 0)
		def = 80;
	else
		return -EINVAL;
	const char *auth = sep + 3;
	size_t an = strcspn(auth, "/?#");
	if (memchr(auth, '@', an) || memchr(auth, ' ', an))
		return -EINVAL;
	int k = parse_hostport(auth, an, t, def);
	if (k < 0)
		return k;
	const char *rest = auth + an;
	if (*rest == '#')
		rest = "";
	if (asprintf(&t->path, "%s%s", *rest == '/' ? "" : "/", rest) < 0)
		return -ENOMEM;
	char *frag = strchr(t->path, '#');
	if (frag)
		*frag = 0;
	for (const char *c = t->path; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f)
			return -EINVAL;
	t->method = method ? method : "GET";
	t->level = "request";
	return 0;
}

static const char *match_name(enum policy_match m)
{
	static const char *const names[] = { "no-host", "too-deep", "no-port", "no-method",
					     "no-path", "skipped",  "decides" };
	return m <= POLICY_MATCH_DECIDES ? names[m] : "?";
}

static const char *match_text(enum policy_match m)
{
	switch (m) {
	case POLICY_MATCH_TOO_DEEP:
		return "host has more labels under the \"*.\" than wildcard_max_labels allows";
	case POLICY_MATCH_NO_PORT:
		return "port does not match";
	case POLICY_MATCH_NO_METHOD:
		return "method does not match";
	case POLICY_MATCH_NO_PATH:
		return "path does not match";
	case POLICY_MATCH_SKIPPED:
		return "skipped: a block rule whose method/path/port cannot be checked yet";
	case POLICY_MATCH_DECIDES:
		return "decides";
	default:
		return "host does not match";
	}
}

static const char *layer_label(enum policy_layer l)
{
	return l == POLICY_LAYER_DEFAULT ? "defaults" : policy_layer_name(l);
}

/* Collect the rules whose hosts matched (the others are noise) into a JSON array. */
static void trace_cb(const struct policy_rule_info *r, enum policy_match m, void *ud)
{
	if (m == POLICY_MATCH_NO_HOST)
		return;
	json_array_append_new(ud, json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "rule", r->name,
					    "layer", policy_layer_name(r->layer), "action",
					    policy_action_name(r->action), "priority",
					    (json_int_t)r->priority, "result", match_name(m), "why",
					    match_text(m)));
}

static json_t *warnings_json(const struct policy *p)
{
	json_t *a = json_array();
	for (const char *const *w = policy_warnings(p); *w; w++)
		json_array_append_new(a, json_string(*w));
	return a;
}

static void warnings_log(const struct policy *p)
{
	for (const char *const *w = policy_warnings(p); *w; w++)
		log_warn("%s", *w);
}

static void rule_source(const struct policy_rule_info *r, char *out, size_t n)
{
	if (r->line)
		snprintf(out, n, "%s:%u", r->source, r->line);
	else
		snprintf(out, n, "%s", r->source);
}

static int do_check(struct policy *p, const char *url, const char *method, int json)
{
	struct target t;
	int k = parse_target(url, method, &t);
	_cleanup_free_ char *path = t.path;
	if (k < 0) {
		if (method && !strstr(url, "://"))
			log_error("policy check: --method needs an http:// or https:// URL");
		else
			log_error(
				"policy check: '%s' is not a URL (https://host/path), host:port or "
				"host",
				url);
		return CLI_EXIT_USAGE;
	}
	/* what the proxy would forward (and what the policy matches) */
	_cleanup_free_ char *npath = NULL;
	if (t.path) {
		size_t n = strlen(t.path) + 1;
		npath = malloc(n);
		if (!npath || policy_path_normalize(t.path, npath, n) < 0)
			return log_oom(), CLI_EXIT_FAILURE;
	}
	struct policy_request rq = { t.host, t.port, t.method, npath };
	struct policy_decision d;
	json_t *trace = json_array();
	policy_decide_trace(p, &rq, &d, trace_cb, trace);
	if (streq(d.rule, "invalid-host")) {
		json_decref(trace);
		log_error("policy check: '%s' is not a host name or IP address", t.host);
		return CLI_EXIT_USAGE;
	}
	const struct policy_rule_info *ri = NULL;
	for (size_t i = 0; i < policy_n_rules(p); i++)
		if (policy_rule(p, i)->name == d.rule)
			ri = policy_rule(p, i);
	char src[600] = "";
	if (ri)
		rule_source(ri, src, sizeof(src));
	if (json) {
		json_t *o = json_pack(
			"{s:s, s:s, s:s, s:b, s:{s:s, s:s, s:i, s:s?, s:s?, s:s?}, s:o, s:o}",
			"action", policy_action_name(d.action), "rule", d.rule, "layer",
			policy_layer_name(d.layer), "provisional", d.provisional, "request",
			"level", t.level, "host", t.host, "port", (int)t.port, "method", t.method,
			"path", t.path, "normalized_path", npath, "trace", trace, "warnings",
			warnings_json(p));
		if (o && ri)
			json_object_set_new(o, "source", json_string(src));
		cli_print_json(o);
		json_decref(o);
		return d.action == POLICY_ALLOW ? 0 : POLICY_EXIT_BLOCKED;
	}
	if (streq(t.level, "request"))
		printf("request:    %s %s port %u path %s\n", t.method, t.host, t.port, t.path);
	else if (streq(t.level, "connection"))
		printf("connection: %s port %u (before any HTTP)\n", t.host, t.port);
	else
		printf("dns lookup: %s\n", t.host);
	if (npath && !streq(npath, t.path))
		printf("normalised: %s (what is decided and sent upstream)\n", npath);
	if (json_array_size(trace) == 0)
		printf("no rule names this host\n");
	else
		printf("rules for this host, in evaluation order:\n");
	size_t i;
	json_t *e;
	json_array_foreach(trace, i, e)
	{
		const char *layer = json_string_value(json_object_get(e, "layer"));
		printf("  %-8s %-5s %-24s %s\n", streq(layer, "default") ? "defaults" : layer,
		       json_string_value(json_object_get(e, "action")),
		       json_string_value(json_object_get(e, "rule")),
		       json_string_value(json_object_get(e, "why")));
	}
	json_decref(trace);
	const char *verdict = d.action == POLICY_ALLOW ? "ALLOWED" : "BLOCKED";
	if (ri)
		printf("%s by rule '%s' (%s layer, %s)\n", verdict, d.rule, layer_label(d.layer),
		       src);
	else
		printf("%s by the default action (set by the %s layer)\n", verdict,
		       layer_label(d.layer));
	if (d.provisional && streq(t.level, "dns"))
		printf("note: the name resolves; each connection and request is decided again\n");
	else if (d.provisional)
		printf("note: allowed for now; the rule's conditions are checked again on each "
		       "HTTP request,\n      and a connection that is not HTTP is refused\n");
	warnings_log(p);
	return d.action == POLICY_ALLOW ? 0 : POLICY_EXIT_BLOCKED;
}

static int do_tool(struct policy *p, const char *name, int json)
{
	const char *sep = strstr(name, "__");
	if (!sep || sep == name || !sep[2] || (size_t)(sep - name) > 64) {
		log_error("policy tool: '%s' is not SERVER__TOOL (e.g. capsem__fetch)", name);
		return CLI_EXIT_USAGE;
	}
	_cleanup_free_ char *server = strndup(name, (size_t)(sep - name));
	if (!server)
		return log_oom(), CLI_EXIT_FAILURE;
	struct policy_tool_decision d;
	policy_decide_tool(p, server, sep + 2, &d);
	const struct policy_tool_rule_info *ri = NULL;
	for (size_t i = 0; i < policy_n_tool_rules(p); i++)
		if (streq(policy_tool_rule(p, i)->name, d.rule))
			ri = policy_tool_rule(p, i);
	char src[600] = "";
	if (ri && ri->line)
		snprintf(src, sizeof(src), "%s:%u", ri->source, ri->line);
	else if (ri)
		snprintf(src, sizeof(src), "%s", ri->source);
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "action",
				      policy_action_name(d.action), "rule", d.rule, "layer",
				      policy_layer_name(d.layer), "server", server, "tool", sep + 2,
				      "warnings", warnings_json(p));
		if (o && ri)
			json_object_set_new(o, "source", json_string(src));
		cli_print_json(o);
		json_decref(o);
	} else if (ri) {
		printf("%s by tool rule '%s' (%s layer, %s)\n",
		       d.action == POLICY_ALLOW ? "ALLOWED" : "BLOCKED", d.rule,
		       layer_label(d.layer), src);
	} else {
		printf("%s by the tool default (set by the %s layer)\n",
		       d.action == POLICY_ALLOW ? "ALLOWED" : "BLOCKED", layer_label(d.layer));
	}
	if (!json)
		warnings_log(p);
	return d.action == POLICY_ALLOW ? 0 : POLICY_EXIT_BLOCKED;
}

static json_t *tool_rules_json(struct policy *p)
{
	json_t *a = json_array();
	for (size_t i = 0; i < policy_n_tool_rules(p); i++) {
		const struct policy_tool_rule_info *r = policy_tool_rule(p, i);
		json_array_append_new(a, json_pack("{s:s, s:s?, s:s, s:s, s:I, s:s, s:i, s:s, s:s}",
						   "name", r->name, "description", r->description,
						   "action", policy_action_name(r->action), "layer",
						   policy_layer_name(r->layer), "priority",
						   (json_int_t)r->priority, "source", r->source,
						   "line", (int)r->line, "server", r->server,
						   "tool", r->tool));
	}
	return a;
}

static json_t *strings_json(const char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void print_list(const char *label, const char *const *v, size_t n)
{
	printf("       %-8s", label);
	for (size_t i = 0; i < n; i++)
		printf(" %s", v[i]);
	printf("\n");
}

static const char *file_state(const char *path)
{
	struct stat st;
	if (!path)
		return "none";
	return stat(path, &st) == 0 ? "present" : "absent";
}

static int do_show(struct policy *p, const char *corp, const char *user, int json)
{
	enum policy_layer dl, tdl, wl;
	enum policy_action da = policy_default_action(p, &dl);
	unsigned wild = policy_wildcard_max_labels(p, &wl);
	enum policy_action tda = policy_tool_default(p, &tdl);
	const char *ca = policy_upstream_ca_file(p);
	size_t n = policy_n_rules(p);
	if (json) {
		json_t *rules = json_array(), *ovr = json_array();
		for (size_t i = 0; i < n; i++) {
			const struct policy_rule_info *r = policy_rule(p, i);
			json_t *ports = json_array();
			for (size_t j = 0; j < r->n_ports; j++)
				json_array_append_new(ports, json_integer(r->ports[j]));
			json_array_append_new(
				rules,
				json_pack(
					"{s:s, s:s?, s:s, s:s, s:I, s:s, s:i, s:o, s:o, s:o, s:o}",
					"name", r->name, "description", r->description, "action",
					policy_action_name(r->action), "layer",
					policy_layer_name(r->layer), "priority",
					(json_int_t)r->priority, "source", r->source, "line",
					(int)r->line, "hosts", strings_json(r->hosts, r->n_hosts),
					"ports", ports, "methods",
					strings_json(r->methods, r->n_methods), "paths",
					strings_json(r->paths, r->n_paths)));
		}
		for (size_t i = 0; i < policy_n_overrides(p); i++) {
			const struct policy_override_info *o = policy_override(p, i);
			json_array_append_new(ovr,
					      json_pack("{s:s, s:i, s:s, s:s}", "host", o->host,
							"port", (int)o->port, "connect", o->connect,
							"layer", policy_layer_name(o->layer)));
		}
		json_t *o = json_pack(
			"{s:{s:s?, s:s, s:s?, s:s}, s:{s:s, s:s}, s:{s:s?, s:s?, s:o}, s:o, s:o}",
			"files", "corp", corp, "corp_state", file_state(corp), "user", user,
			"user_state", file_state(user), "default", "action", policy_action_name(da),
			"layer", policy_layer_name(dl), "upstream", "ca_file", ca, "ca_file_layer",
			ca ? policy_layer_name(policy_upstream_ca_layer(p)) : NULL, "overrides",
			ovr, "rules", rules, "warnings", warnings_json(p));
		if (o) {
			json_object_set_new(o, "wildcard_max_labels",
					    json_pack("{s:i, s:s}", "value", (int)wild, "layer",
						      policy_layer_name(wl)));
			json_object_set_new(o, "tool_default",
					    json_pack("{s:s, s:s}", "action",
						      policy_action_name(tda), "layer",
						      policy_layer_name(tdl)));
			json_object_set_new(o, "tool_rules", tool_rules_json(p));
		}
		cli_print_json(o);
		json_decref(o);
		return 0;
	}
	printf("files:\n  corp      %s (%s)\n  user      %s (%s)\n  defaults  built in\n",
	       corp ? corp : "-", file_state(corp), user ? user : "-", file_state(user));
	printf("default action: %s (set by the %s layer)\n", policy_action_name(da),
	       layer_label(dl));
	if (wild)
		printf("wildcard_max_labels: %u (a \"*.\" stands for at most %u label%s; "
		       "set by the %s layer)\n",
		       wild, wild, wild == 1 ? "" : "s", layer_label(wl));
	else
		printf("wildcard_max_labels: 0 (a \"*.\" stands for any number of labels; set by "
		       "the %s layer)\n",
		       layer_label(wl));
	if (ca)
		printf("upstream ca_file: %s (%s layer)\n", ca,
		       layer_label(policy_upstream_ca_layer(p)));
	for (size_t i = 0; i < policy_n_overrides(p); i++) {
		const struct policy_override_info *o = policy_override(p, i);
		printf("upstream override: %s port %u -> %s (%s layer)\n", o->host, o->port,
		       o->connect, layer_label(o->layer));
	}
	printf("rules, in evaluation order (the first that matches decides):\n");
	for (size_t i = 0; i < n; i++) {
		const struct policy_rule_info *r = policy_rule(p, i);
		char src[600];
		rule_source(r, src, sizeof(src));
		printf("  %3zu. %-5s %-24s %s layer, priority %lld, %s\n", i + 1,
		       policy_action_name(r->action), r->name, layer_label(r->layer),
		       (long long)r->priority, src);
		if (r->description)
			printf("       %s\n", r->description);
		print_list("hosts", r->hosts, r->n_hosts);
		if (r->n_ports) {
			printf("       %-8s", "ports");
			for (size_t j = 0; j < r->n_ports; j++)
				printf(" %u", r->ports[j]);
			printf("\n");
		}
		if (r->n_methods)
			print_list("methods", r->methods, r->n_methods);
		if (r->n_paths)
			print_list("paths", r->paths, r->n_paths);
	}
	if (n == 0)
		printf("  (none)\n");
	printf("MCP tool default: %s (set by the %s layer)\n", policy_action_name(tda),
	       layer_label(tdl));
	printf("MCP tool rules, in evaluation order:\n");
	for (size_t i = 0; i < policy_n_tool_rules(p); i++) {
		const struct policy_tool_rule_info *r = policy_tool_rule(p, i);
		printf("  %3zu. %-5s %-24s %s layer, priority %lld, %s:%u\n", i + 1,
		       policy_action_name(r->action), r->name, layer_label(r->layer),
		       (long long)r->priority, r->source, r->line);
		printf("       server %s  tool %s\n", r->server, r->tool);
	}
	if (policy_n_tool_rules(p) == 0)
		printf("  (none)\n");
	const char *const *w = policy_warnings(p);
	if (*w)
		printf("warnings:\n");
	for (; *w; w++)
		printf("  %s\n", *w);
	return 0;
}

int cmd_policy(int argc, char **argv)
{
	static const struct option opts[] = { { "method", required_argument, NULL, 'X' },
					      { "json", no_argument, NULL, 'j' },
					      { "corp", required_argument, NULL, 'c' },
					      { "user", required_argument, NULL, 'u' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *method = NULL, *corp = POLICY_CORP_PATH;
	_cleanup_free_ char *user_buf = NULL;
	const char *user = NULL;
	int json = 0, c;
	if (argc < 2) {
		fputs(usage_text, stderr);
		return CLI_EXIT_USAGE;
	}
	const char *sub = argv[1];
	if (streq(sub, "-h") || streq(sub, "--help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	/* the subcommand's options (getopt permutes: options may follow the URL) */
	argc--;
	argv++;
	optind = 0;
	while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) >= 0) {
		switch (c) {
		case 'X':
			method = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'c':
			corp = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	int nargs = argc - optind;
	if (streq(sub, "defaults")) {
		if (nargs || method || json)
			return log_error("policy defaults: takes no arguments"), CLI_EXIT_USAGE;
		size_t n;
		const char *text = policy_default_text(&n);
		fwrite(text, 1, n, stdout);
		return 0;
	}
	if (!streq(sub, "check") && !streq(sub, "show") && !streq(sub, "tool")) {
		log_error("policy: unknown subcommand '%s' (check, tool, show, defaults)", sub);
		return CLI_EXIT_USAGE;
	}
	if (streq(sub, "check") && nargs != 1)
		return log_error("policy check: expected one URL (see 'capsem policy --help')"),
		       CLI_EXIT_USAGE;
	if (streq(sub, "tool") && (nargs != 1 || method))
		return log_error("policy tool: expected one SERVER__TOOL and no --method"),
		       CLI_EXIT_USAGE;
	if (streq(sub, "show") && (nargs != 0 || method))
		return log_error("policy show: takes no URL and no --method"), CLI_EXIT_USAGE;
	if (method) {
		size_t ml = strlen(method);
		if (ml == 0 || ml > 32 ||
		    strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
				   "qrstuvwxyz-_") != ml)
			return log_error("policy check: '%s' is not an HTTP method", method),
			       CLI_EXIT_USAGE;
	}
	if (!user) {
		_cleanup_free_ char *home = cli_capsem_home();
		if (!home || asprintf(&user_buf, "%s/%s", home, POLICY_USER_FILE) < 0)
			return log_oom(), CLI_EXIT_FAILURE;
		user = user_buf;
	}
	char err[1024];
	_cleanup_policy_free_ struct policy *p = NULL;
	int k = policy_load(corp, user, &p, err, sizeof(err));
	if (k < 0) {
		log_error("policy: %s", err[0] ? err : strerror(-k));
		return CLI_EXIT_USAGE;
	}
	if (streq(sub, "check"))
		return do_check(p, argv[optind], method, json);
	if (streq(sub, "tool"))
		return do_tool(p, argv[optind], json);
	return do_show(p, corp, user, json);
}
