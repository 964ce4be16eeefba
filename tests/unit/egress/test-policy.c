/* test-policy.c - the egress policy (src/egress/policy.c): host, port, method and path matching,
 * priorities and layers, corp locking, the connection and DNS levels, every load error with its
 * line, the caps, the shipped defaults, loading from files and noticing that they changed; the
 * MCP tool rules ([[tool_rule]], tool_default); path normalisation (encoded unreserved
 * characters, hex case, case-insensitive BLOCK paths) and wildcard_max_labels (issue 17). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "fdutil.h"
#include "policy.h"

/* Load corp/user/defaults texts (NULL = empty layer; the shipped defaults are NOT used). */
static struct policy *load3(const char *corp, const char *user, const char *defs)
{
	const struct policy_source c = { "corp.toml", corp, corp ? strlen(corp) : 0 };
	const struct policy_source u = { "user.toml", user, user ? strlen(user) : 0 };
	const struct policy_source d = { "defaults.toml", defs, defs ? strlen(defs) : 0 };
	char err[512] = "";
	struct policy *p = NULL;
	int r = policy_load_sources(&c, &u, &d, &p, err, sizeof(err));
	if (r < 0)
		fail_msg("load failed (%d): %s", r, err);
	return p;
}

static struct policy *load_user(const char *user)
{
	return load3(NULL, user, NULL);
}

/* A user file that must fail; returns the message. */
static const char *load_fail(const char *user, int want)
{
	static char err[512];
	const struct policy_source u = { "user.toml", user, strlen(user) };
	const struct policy_source d = { "defaults.toml", NULL, 0 };
	struct policy *p = NULL;
	err[0] = 0;
	int r = policy_load_sources(NULL, &u, &d, &p, err, sizeof(err));
	if (r != want)
		fail_msg("expected %d, got %d (%s) for:\n%s", want, r, err, user);
	assert_null(p);
	return err;
}

static void expect_err(const char *user, const char *msg)
{
	const char *err = load_fail(user, -EBADMSG);
	if (!strstr(err, msg))
		fail_msg("error '%s' lacks '%s'", err, msg);
}

static struct policy_decision ask(const struct policy *p, const char *host, uint16_t port,
				  const char *method, const char *path)
{
	struct policy_request rq = { host, port, method, path };
	struct policy_decision d;
	policy_decide(p, &rq, &d);
	return d;
}

#define EXPECT(p, host, port, method, path, act, rulename)                                        \
	do {                                                                                      \
		struct policy_decision d_ = ask(p, host, port, method, path);                     \
		if (d_.action != (act) || strcmp(d_.rule, rulename) != 0)                         \
			fail_msg("%s:%u %s %s: got %s by '%s', want %s by '%s'", host, port,      \
				 method ? method : "-", path ? path : "-",                        \
				 policy_action_name(d_.action), d_.rule, policy_action_name(act), \
				 rulename);                                                       \
	} while (0)

static void test_hosts(void **state)
{
	struct policy *p = load_user("[policy]\n"
				     "default = \"block\"\n"
				     "[[rule]]\n"
				     "name = \"exact\"\n"
				     "action = \"allow\"\n"
				     "hosts = [\"API.Example.COM.\", \"10.1.2.3\", \"[::1]\"]\n"
				     "[[rule]]\n"
				     "name = \"suffix\"\n"
				     "action = \"allow\"\n"
				     "hosts = [\"*.anthropic.com\"]\n");
	EXPECT(p, "api.example.com", 443, NULL, NULL, POLICY_ALLOW, "exact");
	EXPECT(p, "API.EXAMPLE.COM", 443, NULL, NULL, POLICY_ALLOW, "exact");
	EXPECT(p, "api.example.com.", 443, NULL, NULL, POLICY_ALLOW, "exact");
	EXPECT(p, "x.api.example.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "example.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "api.example.co", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "10.1.2.3", 443, NULL, NULL, POLICY_ALLOW, "exact");
	EXPECT(p, "10.1.2.33", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "::1", 443, NULL, NULL, POLICY_ALLOW, "exact");
	EXPECT(p, "[0:0::1]", 443, NULL, NULL, POLICY_ALLOW, "exact");
	/* "*.suffix": subdomains (one label deep unless wildcard_max_labels says otherwise, see
	 * test_wildcard_depth), not the apex, not lookalikes */
	EXPECT(p, "api.anthropic.com", 443, NULL, NULL, POLICY_ALLOW, "suffix");
	EXPECT(p, "Api.Anthropic.Com.", 443, NULL, NULL, POLICY_ALLOW, "suffix");
	EXPECT(p, "a.b.Anthropic.Com.", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "anthropic.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "evilanthropic.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "api.anthropic.com.evil.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	/* not names: blocked whatever the rules say */
	EXPECT(p, "", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	EXPECT(p, NULL, 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	EXPECT(p, "api.example.com..", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	EXPECT(p, "api.example.com/x", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	EXPECT(p, "api.example.com:443", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	EXPECT(p, "a b", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	policy_free(p);

	p = load_user("[policy]\ndefault = \"block\"\n"
		      "[[rule]]\nname = \"all\"\naction = \"allow\"\nhosts = [\"*\"]\n");
	EXPECT(p, "anything.example", 1, NULL, NULL, POLICY_ALLOW, "all");
	EXPECT(p, "192.168.1.1", 22, NULL, NULL, POLICY_ALLOW, "all");
	EXPECT(p, "bad..name", 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	EXPECT(p, longname, 443, NULL, NULL, POLICY_BLOCK, "invalid-host");
	policy_free(p);

	/* a suffix pattern never matches an IP literal */
	p = load_user("[policy]\nwildcard_max_labels = 0\n"
		      "[[rule]]\nname = \"s\"\naction = \"allow\"\nhosts = [\"*.in-addr\"]\n"
		      "[[rule]]\nname = \"z\"\naction = \"allow\"\nhosts = [\"*.z\"]\n");
	EXPECT(p, "1.2.3.in-addr", 443, NULL, NULL, POLICY_ALLOW, "s");
	EXPECT(p, "a.z", 443, NULL, NULL, POLICY_ALLOW, "z");
	EXPECT(p, "127.0.0.1", 443, NULL, NULL, POLICY_BLOCK, "default");
	policy_free(p);
}

static void test_ports_methods_paths(void **state)
{
	struct policy *p =
		load_user("[[rule]]\nname = \"ports\"\naction = \"allow\"\nhosts = [\"p.test\"]\n"
			  "ports = [80, 8443]\n"
			  "[[rule]]\nname = \"methods\"\naction = \"allow\"\nhosts = [\"m.test\"]\n"
			  "methods = [\"get\", \"HEAD\"]\n"
			  "[[rule]]\nname = \"prefix\"\naction = \"allow\"\nhosts = [\"x.test\"]\n"
			  "paths = [\"/v1/\", \"/exact\"]\n"
			  "[[rule]]\nname = \"glob\"\naction = \"allow\"\nhosts = [\"g.test\"]\n"
			  "paths = [\"/v1/*/stream\", \"/f?le\", \"/c[a-c]t\", \"/n[!0-9]\"]\n");
	EXPECT(p, "p.test", 80, NULL, NULL, POLICY_ALLOW, "ports");
	EXPECT(p, "p.test", 8443, "GET", "/", POLICY_ALLOW, "ports");
	EXPECT(p, "p.test", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "p.test", 443, "GET", "/", POLICY_BLOCK, "default");

	EXPECT(p, "m.test", 443, "GET", "/", POLICY_ALLOW, "methods");
	EXPECT(p, "m.test", 443, "get", "/", POLICY_ALLOW, "methods");
	EXPECT(p, "m.test", 443, "HEAD", "/x", POLICY_ALLOW, "methods");
	EXPECT(p, "m.test", 443, "POST", "/", POLICY_BLOCK, "default");
	EXPECT(p, "m.test", 443, "", "/", POLICY_BLOCK, "default");

	/* prefixes are plain string prefixes, on the path without the query */
	EXPECT(p, "x.test", 443, "GET", "/v1/messages", POLICY_ALLOW, "prefix");
	EXPECT(p, "x.test", 443, "GET", "/v1/", POLICY_ALLOW, "prefix");
	EXPECT(p, "x.test", 443, "GET", "/v1", POLICY_BLOCK, "default");
	EXPECT(p, "x.test", 443, "GET", "/v2/messages", POLICY_BLOCK, "default");
	EXPECT(p, "x.test", 443, "GET", "/exactly", POLICY_ALLOW, "prefix");
	EXPECT(p, "x.test", 443, "GET", "/v2?next=/v1/", POLICY_BLOCK, "default");
	EXPECT(p, "x.test", 443, "GET", "/v1/a?x=1", POLICY_ALLOW, "prefix");
	EXPECT(p, "x.test", 443, "GET", "/v2#/v1/", POLICY_BLOCK, "default");
	EXPECT(p, "x.test", 443, "GET", "https://x.test/v1/a?q", POLICY_ALLOW, "prefix");
	EXPECT(p, "x.test", 443, "GET", "http://x.test", POLICY_BLOCK, "default");

	/* globs match the whole path; '*' crosses '/' */
	EXPECT(p, "g.test", 443, "GET", "/v1/abc/stream", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/v1/a/b/stream", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/v1/abc/stream?x", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/v1/abc/streams", POLICY_BLOCK, "default");
	EXPECT(p, "g.test", 443, "GET", "/v1//stream", POLICY_BLOCK, "default");
	EXPECT(p, "g.test", 443, "GET", "/file", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/fle", POLICY_BLOCK, "default");
	EXPECT(p, "g.test", 443, "GET", "/cbt", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/cdt", POLICY_BLOCK, "default");
	EXPECT(p, "g.test", 443, "GET", "/nx", POLICY_ALLOW, "glob");
	EXPECT(p, "g.test", 443, "GET", "/n5", POLICY_BLOCK, "default");
	policy_free(p);
}

/* A path that could mean something else upstream never satisfies an ALLOW path condition and
 * always satisfies a BLOCK one. */
static void test_ambiguous_paths(void **state)
{
	struct policy *p = load_user(
		"[policy]\ndefault = \"allow\"\n"
		"[[rule]]\nname = \"no-admin\"\naction = \"block\"\nhosts = [\"a.test\"]\n"
		"paths = [\"/admin\"]\n"
		"[[rule]]\nname = \"v1\"\naction = \"allow\"\nhosts = [\"b.test\"]\n"
		"paths = [\"/v1/\"]\n"
		"[[rule]]\nname = \"b-rest\"\naction = \"block\"\nhosts = [\"b.test\"]\n");
	static const char *const amb[] = {
		"/v1/../admin",	       "/v1/./x", "/v1/..",  "/v1/.", "//admin", "/%61dmin%2f",
		"/v1/%2e%2e/admin",    "/v1\\x",  "/v1/%2F", "v1/x",  "*",	 "/v1/a b",
		"/v1/%252e%252e/admin"
	};
	for (size_t i = 0; i < sizeof(amb) / sizeof(amb[0]); i++) {
		EXPECT(p, "a.test", 443, "GET", amb[i], POLICY_BLOCK, "no-admin");
		EXPECT(p, "b.test", 443, "GET", amb[i], POLICY_BLOCK, "b-rest");
	}
	EXPECT(p, "a.test", 443, "GET", "/public", POLICY_ALLOW, "default");
	EXPECT(p, "a.test", 443, "GET", "/admin/x", POLICY_BLOCK, "no-admin");
	EXPECT(p, "b.test", 443, "GET", "/v1/x.y/..z", POLICY_ALLOW, "v1");
	EXPECT(p, "b.test", 443, "GET", "/v1/%41", POLICY_ALLOW, "v1");
	policy_free(p);
}

static void test_priorities_layers(void **state)
{
	const char *corp = "[[rule]]\nname = \"corp-block\"\naction = \"block\"\n"
			   "hosts = [\"*.corp.test\"]\npriority = -100\n";
	const char *user =
		"[[rule]]\nname = \"u-low\"\naction = \"block\"\nhosts = [\"*\"]\n"
		"priority = -1\n"
		"[[rule]]\nname = \"u-high\"\naction = \"allow\"\n"
		"hosts = [\"x.corp.test\", \"y.test\"]\npriority = 100\n"
		"[[rule]]\nname = \"u-first\"\naction = \"allow\"\nhosts = [\"z.test\"]\n"
		"[[rule]]\nname = \"u-second\"\naction = \"block\"\nhosts = [\"z.test\"]\n";
	const char *defs = "[policy]\ndefault = \"allow\"\n"
			   "[[rule]]\nname = \"d\"\naction = \"allow\"\nhosts = [\"w.test\"]\n"
			   "priority = 1000000\n";
	struct policy *p = load3(corp, user, defs);
	/* corp rules come first whatever their priority */
	EXPECT(p, "x.corp.test", 443, NULL, NULL, POLICY_BLOCK, "corp-block");
	/* within a layer: priority, then file order */
	EXPECT(p, "y.test", 443, NULL, NULL, POLICY_ALLOW, "u-high");
	EXPECT(p, "z.test", 443, NULL, NULL, POLICY_ALLOW, "u-first");
	/* user rules before defaults whatever their priority */
	EXPECT(p, "w.test", 443, NULL, NULL, POLICY_BLOCK, "u-low");
	struct policy_decision d = ask(p, "y.test", 443, NULL, NULL);
	assert_int_equal(d.layer, POLICY_LAYER_USER);
	d = ask(p, "x.corp.test", 443, NULL, NULL);
	assert_int_equal(d.layer, POLICY_LAYER_CORP);

	/* the merged order */
	static const char *const order[] = { "corp-block", "u-high", "u-first",
					     "u-second",   "u-low",  "d" };
	assert_int_equal(policy_n_rules(p), 6);
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(policy_rule(p, i)->name, order[i]);
	assert_null(policy_rule(p, 6));
	const struct policy_rule_info *ri = policy_rule(p, 1);
	assert_int_equal(ri->priority, 100);
	assert_string_equal(ri->source, "user.toml");
	assert_int_equal(ri->line, 6);
	assert_string_equal(ri->hosts[0], "x.corp.test");
	assert_int_equal(ri->n_ports, 0);
	assert_null(ri->methods[0]);
	policy_free(p);

	/* the default action comes from the highest layer that sets it */
	p = load3(NULL, NULL, defs);
	EXPECT(p, "nothing.test", 443, NULL, NULL, POLICY_ALLOW, "default");
	policy_free(p);
	p = load3(NULL, "[policy]\ndefault = \"block\"\n", defs);
	EXPECT(p, "nothing.test", 443, NULL, NULL, POLICY_BLOCK, "default");
	enum policy_layer l;
	assert_int_equal(policy_default_action(p, &l), POLICY_BLOCK);
	assert_int_equal(l, POLICY_LAYER_USER);
	policy_free(p);
	p = load3(NULL, NULL, NULL);
	EXPECT(p, "nothing.test", 443, NULL, NULL, POLICY_BLOCK, "default");
	policy_free(p);
}

static void test_corp_locking(void **state)
{
	const char *corp = "[policy]\ndefault = \"allow\"\n"
			   "[upstream]\nca_file = \"/corp/ca.pem\"\n";
	const char *user =
		"# user\n[policy]\ndefault = \"block\"\n\n"
		"[upstream]\nca_file = \"/user/ca.pem\"\n"
		"[[upstream.override]]\nhost = \"api.test\"\nconnect = \"127.0.0.1:9\"\n";
	struct policy *p = load3(corp, user, "[policy]\ndefault = \"block\"\n");
	enum policy_layer l;
	assert_int_equal(policy_default_action(p, &l), POLICY_ALLOW);
	assert_int_equal(l, POLICY_LAYER_CORP);
	EXPECT(p, "nothing.test", 443, NULL, NULL, POLICY_ALLOW, "default");
	assert_string_equal(policy_upstream_ca_file(p), "/corp/ca.pem");
	assert_int_equal(policy_upstream_ca_layer(p), POLICY_LAYER_CORP);
	/* the corp file set no overrides: the user's apply */
	char c[64];
	assert_int_equal(policy_upstream_override(p, "API.test.", 443, c, sizeof(c)), 0);
	assert_string_equal(c, "127.0.0.1:9");
	assert_int_equal(policy_override(p, 0)->layer, POLICY_LAYER_USER);
	const char *const *w = policy_warnings(p);
	assert_non_null(w[0]);
	assert_non_null(strstr(w[0], "user.toml:3: policy.default is locked by corp.toml"));
	assert_non_null(w[1]);
	assert_non_null(strstr(w[1], "user.toml:6: upstream.ca_file is locked"));
	assert_null(w[2]);
	policy_free(p);

	/* corp overrides lock the user's */
	p = load3("[[upstream.override]]\nhost = \"a.test\"\nport = 8443\n"
		  "connect = \"[::1]:18443\"\n",
		  "[[upstream.override]]\nhost = \"b.test\"\nconnect = \"b:1\"\n", NULL);
	assert_int_equal(policy_upstream_override(p, "b.test", 443, c, sizeof(c)), -ENOENT);
	assert_int_equal(policy_upstream_override(p, "a.test", 443, c, sizeof(c)), -ENOENT);
	assert_int_equal(policy_upstream_override(p, "a.test", 8443, c, sizeof(c)), 0);
	assert_string_equal(c, "[::1]:18443");
	assert_int_equal(policy_upstream_override(p, "a.test", 8443, c, 5), -ENOBUFS);
	assert_int_equal(policy_n_overrides(p), 1);
	assert_null(policy_upstream_ca_file(p));
	assert_non_null(strstr(policy_warnings(p)[0], "upstream.override is locked"));
	policy_free(p);

	/* no corp settings, no warnings */
	p = load3(NULL, user, NULL);
	assert_null(policy_warnings(p)[0]);
	assert_string_equal(policy_upstream_ca_file(p), "/user/ca.pem");
	policy_free(p);
}

static void test_connection_level(void **state)
{
	struct policy *p = load_user(
		"[[rule]]\nname = \"block-admin\"\naction = \"block\"\nhosts = [\"a.test\"]\n"
		"paths = [\"/admin\"]\n"
		"[[rule]]\nname = \"allow-a\"\naction = \"allow\"\nhosts = [\"a.test\"]\n"
		"[[rule]]\nname = \"allow-v1\"\naction = \"allow\"\nhosts = [\"b.test\"]\n"
		"methods = [\"GET\"]\npaths = [\"/v1/\"]\n"
		"[[rule]]\nname = \"block-b\"\naction = \"block\"\nhosts = [\"b.test\"]\n"
		"[[rule]]\nname = \"block-c-post\"\naction = \"block\"\nhosts = [\"c.test\"]\n"
		"methods = [\"POST\"]\n"
		"[[rule]]\nname = \"block-c-443\"\naction = \"block\"\nhosts = [\"c.test\"]\n"
		"ports = [443]\n"
		"[[rule]]\nname = \"allow-c\"\naction = \"allow\"\nhosts = [\"c.test\"]\n"
		"ports = [443, 80]\n");
	/* a BLOCK rule with request conditions cannot decide a connection: skipped */
	EXPECT(p, "a.test", 443, NULL, NULL, POLICY_ALLOW, "allow-a");
	EXPECT(p, "a.test", 443, "GET", "/admin/x", POLICY_BLOCK, "block-admin");
	EXPECT(p, "a.test", 443, "GET", "/ok", POLICY_ALLOW, "allow-a");
	struct policy_decision d = ask(p, "a.test", 443, NULL, NULL);
	assert_false(d.provisional);
	/* an ALLOW rule with request conditions allows the connection, provisionally */
	d = ask(p, "b.test", 443, NULL, NULL);
	assert_int_equal(d.action, POLICY_ALLOW);
	assert_string_equal(d.rule, "allow-v1");
	assert_true(d.provisional);
	EXPECT(p, "b.test", 443, "GET", "/v1/x", POLICY_ALLOW, "allow-v1");
	EXPECT(p, "b.test", 443, "POST", "/v1/x", POLICY_BLOCK, "block-b");
	EXPECT(p, "b.test", 443, "GET", "/v2", POLICY_BLOCK, "block-b");
	d = ask(p, "b.test", 443, "GET", "/v1/x");
	assert_false(d.provisional);
	/* method known, path not yet: the method is checked */
	EXPECT(p, "b.test", 443, "POST", NULL, POLICY_BLOCK, "block-b");
	d = ask(p, "b.test", 443, "GET", NULL);
	assert_true(d.action == POLICY_ALLOW && d.provisional);
	/* ports are checked at the connection level */
	EXPECT(p, "c.test", 443, NULL, NULL, POLICY_BLOCK, "block-c-443");
	EXPECT(p, "c.test", 80, NULL, NULL, POLICY_ALLOW, "allow-c");
	EXPECT(p, "c.test", 80, "POST", "/", POLICY_BLOCK, "block-c-post");
	EXPECT(p, "c.test", 22, NULL, NULL, POLICY_BLOCK, "default");

	/* DNS level (port 0): port conditions are unknown too; a BLOCK rule on one port does
	 * not hide the name, an ALLOW rule on some port makes it resolvable */
	d = ask(p, "c.test", 0, NULL, NULL);
	assert_int_equal(d.action, POLICY_ALLOW);
	assert_string_equal(d.rule, "allow-c");
	assert_true(d.provisional);
	EXPECT(p, "b.test", 0, NULL, NULL, POLICY_ALLOW, "allow-v1");
	EXPECT(p, "a.test", 0, NULL, NULL, POLICY_ALLOW, "allow-a");
	EXPECT(p, "d.test", 0, NULL, NULL, POLICY_BLOCK, "default");
	policy_free(p);

	p = load_user("[[rule]]\nname = \"no-d\"\naction = \"block\"\nhosts = [\"d.test\"]\n"
		      "[[rule]]\nname = \"all\"\naction = \"allow\"\nhosts = [\"*\"]\n");
	EXPECT(p, "d.test", 0, NULL, NULL, POLICY_BLOCK, "no-d");
	EXPECT(p, "e.test", 0, NULL, NULL, POLICY_ALLOW, "all");
	policy_free(p);
}

struct trace_log {
	char text[1024];
};

static void trace_cb(const struct policy_rule_info *r, enum policy_match m, void *ud)
{
	struct trace_log *t = ud;
	static const char *const names[] = { "host", "deep", "port",   "method",
					     "path", "skip", "decides" };
	size_t n = strlen(t->text);
	snprintf(t->text + n, sizeof(t->text) - n, "%s:%s ", r->name, names[m]);
}

static void test_trace(void **state)
{
	struct policy *p = load_user(
		"[[rule]]\nname = \"r1\"\naction = \"allow\"\nhosts = [\"x.test\"]\n"
		"[[rule]]\nname = \"r2\"\naction = \"allow\"\nhosts = [\"t.test\"]\nports = [1]\n"
		"[[rule]]\nname = \"r3\"\naction = \"allow\"\nhosts = [\"t.test\"]\n"
		"methods = [\"PUT\"]\n"
		"[[rule]]\nname = \"r4\"\naction = \"allow\"\nhosts = [\"t.test\"]\n"
		"paths = [\"/a\"]\n"
		"[[rule]]\nname = \"r5\"\naction = \"block\"\nhosts = [\"t.test\"]\n"
		"paths = [\"/b\"]\n"
		"[[rule]]\nname = \"r6\"\naction = \"allow\"\nhosts = [\"t.test\"]\n"
		"[[rule]]\nname = \"r7\"\naction = \"allow\"\nhosts = [\"t.test\"]\n");
	struct trace_log t = { "" };
	struct policy_request rq = { "t.test", 443, "GET", "/c" };
	struct policy_decision d;
	policy_decide_trace(p, &rq, &d, trace_cb, &t);
	assert_string_equal(t.text, "r1:host r2:port r3:method r4:path r5:path r6:decides ");
	assert_string_equal(d.rule, "r6");
	t.text[0] = 0;
	rq = (struct policy_request){ "t.test", 443, NULL, NULL };
	policy_decide_trace(p, &rq, &d, trace_cb, &t);
	assert_string_equal(t.text, "r1:host r2:port r3:decides ");
	assert_true(d.provisional);
	t.text[0] = 0;
	rq = (struct policy_request){ "t.test", 443, "GET", "/b" };
	policy_decide_trace(p, &rq, &d, trace_cb, &t);
	assert_string_equal(d.rule, "r5");
	t.text[0] = 0;
	rq = (struct policy_request){ "t.test", 1, "GET", NULL };
	policy_decide_trace(p, &rq, &d, trace_cb, &t);
	assert_string_equal(t.text, "r1:host r2:decides ");
	policy_free(p);
}

static void test_load_errors(void **state)
{
	/* TOML syntax, with line and column */
	expect_err("[policy]\ndefault = \n", "user.toml:2: ");
	expect_err("a = 1\na = 2\n", "user.toml:2: ");
	/* unknown keys anywhere */
	expect_err("[policy]\ndefault = \"block\"\n\n[polcy]\nx = 1\n",
		   "user.toml:4: polcy: unknown key");
	expect_err("zzz = 1\n", "user.toml:1: zzz: unknown key");
	expect_err("[policy]\ndefault = \"block\"\nstrict = true\n",
		   "user.toml:3: policy.strict: unknown key");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\nport = [1]\n",
		   "user.toml:5: rule 'a': port: unknown key");
	expect_err("[upstream]\nca = \"/x\"\n", "user.toml:2: upstream.ca: unknown key");
	expect_err("[[upstream.override]]\nhost = \"a\"\nconnect = \"b:1\"\nvia = 1\n",
		   "user.toml:4: upstream.override: via: unknown key");
	/* wrong types and values */
	expect_err("policy = 1\n", "user.toml:1: policy: expected a table");
	expect_err("[policy]\ndefault = \"deny\"\n",
		   "user.toml:2: policy.default: must be \"allow\" or \"block\"");
	expect_err("[policy]\ndefault = true\n", "user.toml:2: policy.default: must be");
	expect_err("[rule]\nname = \"a\"\n", "user.toml:1: rule: expected an array of tables");
	expect_err("rule = [1]\n", "user.toml:1: rule #1: expected a table");
	expect_err("[[rule]]\naction = \"allow\"\nhosts = [\"x\"]\n",
		   "user.toml:1: rule #1: missing 'name'");
	expect_err("[[rule]]\nname = 5\n", "user.toml:2: rule #1: name: expected a string");
	expect_err("[[rule]]\nname = \"has space\"\n", "user.toml:2: rule #1: name: 'has space' "
						       "is not a rule name");
	expect_err("[[rule]]\nname = \"default\"\n", "is not a rule name");
	expect_err("[[rule]]\nname = \"a\\u0007\"\n", "name: contains a control character");
	expect_err("[[rule]]\nname = \"a\"\nhosts = [\"x\"]\n",
		   "user.toml:1: rule 'a': missing 'action'");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\n",
		   "user.toml:1: rule 'a': missing 'hosts'");
	expect_err("[[rule]]\nname = \"a\"\naction = \"deny\"\nhosts = [\"x\"]\n",
		   "user.toml:3: rule 'a': action: must be \"allow\" or \"block\"");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\\u0000\"\nhosts = [\"x\"]\n",
		   "action: must be");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = \"x\"\n",
		   "user.toml:4: rule 'a': hosts: expected an array, got string");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = []\n",
		   "user.toml:4: rule 'a': hosts: empty list");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [1]\n",
		   "hosts: expected strings, got integer");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\npriority = \"high\"\n",
		   "user.toml:4: rule 'a': priority: expected an integer");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\npriority = 10000000\n",
		   "priority: outside");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\ndescription = 1\n",
		   "user.toml:4: rule 'a': description: expected a string");
	/* bad host patterns, on the line of the element */
	static const char *const bad_hosts[] = { "a*.b",      "*foo.com", "foo.*", "*.",
						 "**.a",      "a..b",	  "-_-/",  "",
						 "*.1.2.3.4", "[::1",	  "a b",   "*.[::1]" };
	for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		char t[256], want[128];
		snprintf(t, sizeof(t),
			 "[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\n  \"ok.test\",\n"
			 "  \"%s\",\n]\n",
			 bad_hosts[i]);
		snprintf(want, sizeof(want), "user.toml:6: rule 'a': hosts: '%s' is not a host",
			 bad_hosts[i]);
		expect_err(t, want);
	}
	char longhost[300];
	memset(longhost, 'a', sizeof(longhost) - 1);
	longhost[sizeof(longhost) - 1] = 0;
	char t[600];
	snprintf(t, sizeof(t), "[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"%s\"]\n",
		 longhost);
	expect_err(t, "hosts: an entry is longer than");
	/* ports */
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\nports = [0]\n",
		   "user.toml:5: rule 'a': ports: 0 is not a port");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "ports = [65536]\n",
		   "ports: 65536 is not a port");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "ports = [\"443\"]\n",
		   "ports: expected integers, got string");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\nports = []\n",
		   "ports: empty list");
	/* methods and paths */
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "methods = [\"GET\", \"PO ST\"]\n",
		   "user.toml:5: rule 'a': methods: 'PO ST' is not an HTTP method");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "methods = [\"\"]\n",
		   "methods: an empty method");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "paths = [\"v1/\"]\n",
		   "user.toml:5: rule 'a': paths: 'v1/' does not start with '/'");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "paths = [\"/a b\"]\n",
		   "paths: '/a b': spaces");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "paths = [\"/*/*/*/*/*/*/*/*/*\"]\n",
		   "more than 8 '*'");
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n"
		   "paths = [\"/\\t\"]\n",
		   "paths: an entry contains a control character");
	/* duplicate names */
	expect_err("[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [\"x\"]\n\n"
		   "[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"y\"]\n",
		   "user.toml:7: rule 'a': duplicate rule name (first at line 1)");
	/* upstream */
	expect_err("[upstream]\nca_file = \"relative.pem\"\n",
		   "user.toml:2: upstream.ca_file: 'relative.pem' is not an absolute path");
	expect_err("[upstream]\nca_file = 3\n", "user.toml:2: upstream.ca_file: expected a "
						"string");
	expect_err("[upstream]\noverride = 1\n", "user.toml:2: upstream.override: expected an "
						 "array of tables");
	expect_err("[[upstream.override]]\nhost = \"a\"\n",
		   "user.toml:1: upstream.override #1: needs host and connect");
	expect_err("[[upstream.override]]\nhost = \"a\"\nconnect = \"nope\"\n",
		   "user.toml:3: upstream.override: connect: 'nope' is not");
	expect_err("[[upstream.override]]\nhost = \"a\"\nconnect = \"::1:80\"\n",
		   "connect: '::1:80' is not");
	expect_err("[[upstream.override]]\nhost = \"a\"\nconnect = \"b:0\"\n", "is not");
	expect_err("[[upstream.override]]\nhost = \"a\"\nport = 70000\nconnect = \"b:1\"\n",
		   "user.toml:3: upstream.override: port: expected 1-65535");
	expect_err("[[upstream.override]]\nhost = \"*.a\"\nconnect = \"b:1\"\n",
		   "user.toml:2: upstream.override: host: '*.a' is not");
	expect_err("[[upstream.override]]\nhost = \"a\"\nconnect = \"b:1\"\n"
		   "[[upstream.override]]\nhost = \"A.\"\nconnect = \"c:1\"\n",
		   "user.toml:5: upstream.override: a port 443 is overridden twice");
	/* inline tables get the line of the value itself (the tree keeps positions) */
	expect_err("rule = [ { name = \"a\", action = \"allow\", hosts = [\"x\"] },\n"
		   "  { name = \"b\", action = \"nope\", hosts = [\"x\"] } ]\n",
		   "user.toml:2: rule 'b': action: must be");
	/* the message without a line when nothing can be located */
	const char *err = load_fail("[[rule]]\nname = \"a\"\nhosts = [\"x\"]\naction = \"allow\"\n"
				    "[[rule]]\nname = \"a\"\nhosts = [\"x\"]\naction = \"allow\"\n",
				    -EBADMSG);
	assert_non_null(strstr(err, "user.toml:6: rule 'a': duplicate"));
	/* errors in the corp file name the corp file */
	const struct policy_source c = { "/etc/capsem/corp.toml", "[policy]\nx = 1\n", 15 };
	char e2[256];
	struct policy *p = NULL;
	assert_int_equal(policy_load_sources(&c, NULL, NULL, &p, e2, sizeof(e2)), -EBADMSG);
	assert_string_equal(e2, "/etc/capsem/corp.toml:2: policy.x: unknown key ([policy] has "
				"default, tool_default, wildcard_max_labels)");
	/* unprintable keys are not echoed */
	err = load_fail("\"a\\u001b[31m\" = 1\n", -EBADMSG);
	assert_null(strchr(err, 0x1b));
}

static void test_caps(void **state)
{
	/* more than POLICY_MAX_RULES rules */
	struct buf b;
	buf_init(&b, 4u << 20);
	for (int i = 0; i <= POLICY_MAX_RULES; i++) {
		char r[128];
		int n = snprintf(r, sizeof(r),
				 "[[rule]]\nname = \"r%d\"\naction = \"allow\"\nhosts = [\"x\"]\n",
				 i);
		assert_int_equal(buf_append(&b, r, (size_t)n), 0);
	}
	assert_int_equal(buf_append(&b, "", 1), 0);
	expect_err((const char *)buf_head(&b), "user.toml:4097: more than 1024 rules");
	buf_done(&b, 0);

	/* exactly the cap loads */
	buf_init(&b, 4u << 20);
	for (int i = 0; i < POLICY_MAX_RULES; i++) {
		char r[128];
		int n = snprintf(r, sizeof(r),
				 "[[rule]]\nname = \"r%d\"\naction = \"allow\"\nhosts = [\"x\"]\n",
				 i);
		assert_int_equal(buf_append(&b, r, (size_t)n), 0);
	}
	assert_int_equal(buf_append(&b, "", 1), 0);
	struct policy *p = load_user((const char *)buf_head(&b));
	assert_int_equal(policy_n_rules(p), POLICY_MAX_RULES);
	policy_free(p);
	buf_done(&b, 0);

	/* more than POLICY_MAX_PATTERNS hosts */
	buf_init(&b, 1u << 20);
	const char *head = "[[rule]]\nname = \"a\"\naction = \"allow\"\nhosts = [";
	assert_int_equal(buf_append(&b, head, strlen(head)), 0);
	for (int i = 0; i <= POLICY_MAX_PATTERNS; i++)
		assert_int_equal(buf_append(&b, "\"x\",", 4), 0);
	assert_int_equal(buf_append(&b, "]\n", 3), 0);
	expect_err((const char *)buf_head(&b), "user.toml:4: rule 'a': hosts: more than 256");
	buf_done(&b, 0);

	/* file size */
	size_t big = POLICY_MAX_FILE_SIZE + 1;
	char *text = malloc(big + 1);
	memset(text, '\n', big);
	text[big] = 0;
	expect_err(text, "user.toml: larger than 1048576 bytes");
	free(text);

	/* nesting deeper than the schema is a TOML error, not a crash */
	expect_err("a = [[[[[[[[[[[[1]]]]]]]]]]]]\n", "user.toml:1:");
}

static void test_shipped_defaults(void **state)
{
	struct policy *p = NULL;
	char err[256] = "";
	assert_int_equal(policy_load_strings(NULL, 0, NULL, 0, &p, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	EXPECT(p, "api.anthropic.com", 443, NULL, NULL, POLICY_ALLOW, "anthropic");
	EXPECT(p, "api.anthropic.com", 443, "POST", "/v1/messages", POLICY_ALLOW, "anthropic");
	EXPECT(p, "api.anthropic.com", 80, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "api.openai.com", 443, "POST", "/v1/chat/completions", POLICY_ALLOW, "openai");
	EXPECT(p, "generativelanguage.googleapis.com", 443, "POST",
	       "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", POLICY_ALLOW,
	       "gemini");
	EXPECT(p, "storage.googleapis.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "example.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "example.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "api.anthropic.com", 0, NULL, NULL, POLICY_ALLOW, "anthropic");
	/* registries: read-only */
	EXPECT(p, "registry.npmjs.org", 443, "GET", "/left-pad", POLICY_ALLOW, "npm");
	EXPECT(p, "registry.npmjs.org", 443, "PUT", "/left-pad", POLICY_BLOCK, "default");
	EXPECT(p, "registry.npmjs.org", 443, "POST", "/-/npm/v1/security/advisories/bulk",
	       POLICY_ALLOW, "npm-audit");
	EXPECT(p, "pypi.org", 443, "GET", "/simple/requests/", POLICY_ALLOW, "pypi");
	EXPECT(p, "files.pythonhosted.org", 443, "GET", "/packages/x.whl", POLICY_ALLOW, "pypi");
	EXPECT(p, "deb.debian.org", 80, "GET", "/debian/dists/bookworm/InRelease", POLICY_ALLOW,
	       "debian");
	EXPECT(p, "security.debian.org", 443, "GET", "/", POLICY_ALLOW, "debian");
	EXPECT(p, "github.com", 443, "GET", "/owner/repo.git/info/refs?service=git-upload-pack",
	       POLICY_ALLOW, "github-read");
	EXPECT(p, "github.com", 443, "POST", "/owner/repo.git/git-upload-pack", POLICY_ALLOW,
	       "github-git-fetch");
	EXPECT(p, "github.com", 443, "POST", "/owner/repo.git/git-receive-pack", POLICY_BLOCK,
	       "default");
	EXPECT(p, "objects.githubusercontent.com", 443, "GET", "/x", POLICY_ALLOW, "github-read");
	EXPECT(p, "githubusercontent.com", 443, "GET", "/x", POLICY_BLOCK, "default");
	struct policy_decision d = ask(p, "github.com", 443, NULL, NULL);
	assert_true(d.action == POLICY_ALLOW && d.provisional);
	assert_int_equal(d.layer, POLICY_LAYER_DEFAULT);
	assert_null(policy_warnings(p)[0]);
	assert_string_equal(policy_rule(p, 0)->source, "<defaults>");
	policy_free(p);

	size_t n = 0;
	const char *text = policy_default_text(&n);
	assert_int_equal(strlen(text), n);
	assert_non_null(strstr(text, "default = \"block\""));

	/* a user rule can open or close what the defaults decide */
	const char *user = "[[rule]]\nname = \"no-github\"\naction = \"block\"\n"
			   "hosts = [\"github.com\"]\n"
			   "[[rule]]\nname = \"example\"\naction = \"allow\"\n"
			   "hosts = [\"example.com\"]\nports = [443]\n";
	assert_int_equal(policy_load_strings(NULL, 0, user, strlen(user), &p, err, sizeof(err)), 0);
	EXPECT(p, "github.com", 443, "GET", "/", POLICY_BLOCK, "no-github");
	EXPECT(p, "example.com", 443, NULL, NULL, POLICY_ALLOW, "example");
	d = ask(p, "example.com", 443, NULL, NULL);
	assert_int_equal(d.layer, POLICY_LAYER_USER);
	EXPECT(p, "api.anthropic.com", 443, NULL, NULL, POLICY_ALLOW, "anthropic");
	policy_free(p);
}

static char *tmpdir(void)
{
	char t[] = "/tmp/capsem-policy-XXXXXX";
	assert_non_null(mkdtemp(t));
	return strdup(t);
}

static void test_files(void **state)
{
	char *d = tmpdir(), corp[512], user[512], err[512];
	snprintf(corp, sizeof(corp), "%s/corp.toml", d);
	snprintf(user, sizeof(user), "%s/user.toml", d);
	struct policy *p = NULL;

	/* missing files: empty layers */
	assert_int_equal(policy_load(corp, user, &p, err, sizeof(err)), 0);
	EXPECT(p, "api.anthropic.com", 443, NULL, NULL, POLICY_ALLOW, "anthropic");
	assert_false(policy_files_changed(p));

	/* a file appearing is a change */
	const char *u1 = "[[rule]]\nname = \"ex\"\naction = \"allow\"\nhosts = [\"example.com\"]\n";
	assert_int_equal(write_file_atomic(user, u1, strlen(u1), 0644), 0);
	assert_true(policy_files_changed(p));
	policy_free(p);
	assert_int_equal(policy_load(corp, user, &p, err, sizeof(err)), 0);
	assert_false(policy_files_changed(p));
	EXPECT(p, "example.com", 443, NULL, NULL, POLICY_ALLOW, "ex");
	assert_string_equal(policy_rule(p, 0)->source, user);

	/* replaced (new inode), rewritten in place (size/mtime), removed */
	assert_int_equal(write_file_atomic(user, u1, strlen(u1), 0644), 0);
	assert_true(policy_files_changed(p));
	policy_free(p);
	assert_int_equal(policy_load(corp, user, &p, err, sizeof(err)), 0);
	FILE *f = fopen(user, "a");
	assert_non_null(f);
	fputs("# more\n", f);
	fclose(f);
	assert_true(policy_files_changed(p));
	policy_free(p);
	assert_int_equal(policy_load(corp, user, &p, err, sizeof(err)), 0);
	assert_int_equal(unlink(user), 0);
	assert_true(policy_files_changed(p));
	policy_free(p);

	/* corp file: errors name the path and line; world-writable warns */
	const char *c1 = "[policy]\ndefault = \"allow\"\n[[rule]]\nname = 1\n";
	assert_int_equal(write_file_atomic(corp, c1, strlen(c1), 0644), 0);
	assert_int_equal(policy_load(corp, user, &p, err, sizeof(err)), -EBADMSG);
	char want[600];
	snprintf(want, sizeof(want), "%s:4: rule #1: name: expected a string, got integer", corp);
	assert_string_equal(err, want);
	const char *c2 = "[policy]\ndefault = \"allow\"\n";
	assert_int_equal(write_file_atomic(corp, c2, strlen(c2), 0666), 0);
	assert_int_equal(chmod(corp, 0666), 0);
	assert_int_equal(policy_load(corp, NULL, &p, err, sizeof(err)), 0);
	assert_non_null(strstr(policy_warnings(p)[0], "writable by group or others"));
	EXPECT(p, "example.org", 443, NULL, NULL, POLICY_ALLOW, "default");
	policy_free(p);

	/* a directory, or a file too large: errors */
	assert_int_equal(policy_load(d, NULL, &p, err, sizeof(err)), -EISDIR);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(truncate(corp, (off_t)POLICY_MAX_FILE_SIZE + 1), 0);
	assert_int_equal(policy_load(corp, NULL, &p, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "larger than"));
	/* NULL err is fine */
	assert_int_equal(policy_load(corp, NULL, &p, NULL, 0), -EBADMSG);

	/* strings never change */
	assert_int_equal(policy_load_strings(NULL, 0, NULL, 0, &p, NULL, 0), 0);
	assert_false(policy_files_changed(p));
	policy_free(p);
	policy_free(NULL);
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

/* ---- [[tool_rule]]: MCP tool decisions (the per-VM gateway) ---- */

static void expect_tool(const struct policy *p, const char *server, const char *tool,
			enum policy_action act, const char *rule)
{
	struct policy_tool_decision d;
	policy_decide_tool(p, server, tool, &d);
	if (d.action != act || strcmp(d.rule, rule) != 0)
		fail_msg("%s__%s: got %s by '%s', want %s by '%s'", server, tool,
			 policy_action_name(d.action), d.rule, policy_action_name(act), rule);
}

static void test_tool_rules(void **state)
{
	/* default allow; globs on server and tool; priority then file order; corp before user */
	struct policy *p = load3("[[tool_rule]]\nname = \"corp-no-shell\"\naction = \"block\"\n"
				 "tool = \"*shell*\"\n",
				 "[[tool_rule]]\nname = \"allow-shell\"\naction = \"allow\"\n"
				 "tool = \"run_shell\"\npriority = 100\n"
				 "[[tool_rule]]\nname = \"no-gh-write\"\naction = \"block\"\n"
				 "server = \"github\"\ntool = \"create_*\"\n"
				 "[[tool_rule]]\nname = \"gh-issue\"\naction = \"allow\"\n"
				 "server = \"github\"\ntool = \"create_issue\"\npriority = 5\n"
				 "[[tool_rule]]\nname = \"late\"\naction = \"block\"\n"
				 "server = \"git?ub\"\n",
				 NULL);
	expect_tool(p, "local", "run_shell", POLICY_BLOCK, "corp-no-shell");
	expect_tool(p, "github", "create_issue", POLICY_ALLOW, "gh-issue");
	expect_tool(p, "github", "create_pr", POLICY_BLOCK, "no-gh-write");
	expect_tool(p, "github", "list_prs", POLICY_BLOCK, "late");
	expect_tool(p, "capsem", "fetch", POLICY_ALLOW, "default");
	assert_int_equal(policy_n_tool_rules(p), 5);
	const struct policy_tool_rule_info *r = policy_tool_rule(p, 0);
	assert_string_equal(r->name, "corp-no-shell");
	assert_string_equal(r->server, "*");
	assert_int_equal(r->layer, POLICY_LAYER_CORP);
	assert_int_equal(r->line, 1);
	assert_string_equal(policy_tool_rule(p, 1)->name, "allow-shell");
	assert_null(policy_tool_rule(p, 5));
	/* egress rules are not affected */
	assert_int_equal(policy_n_rules(p), 0);
	policy_free(p);

	/* tool_default: block; locked by the corp file */
	p = load3("[policy]\ntool_default = \"block\"\n", "[policy]\ntool_default = \"allow\"\n",
		  NULL);
	expect_tool(p, "x", "y", POLICY_BLOCK, "default");
	enum policy_layer l;
	assert_int_equal(policy_tool_default(p, &l), POLICY_BLOCK);
	assert_int_equal(l, POLICY_LAYER_CORP);
	assert_non_null(policy_warnings(p)[0]);
	assert_non_null(strstr(policy_warnings(p)[0], "tool_default is locked"));
	policy_free(p);

	/* errors name the line */
	expect_err("[[tool_rule]]\naction = \"block\"\n", "missing 'name'");
	expect_err("[[tool_rule]]\nname = \"a\"\n", "missing 'action'");
	expect_err("[[tool_rule]]\nname = \"a\"\naction = \"ask\"\n", "must be");
	expect_err("[[tool_rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n",
		   "user.toml:4: tool_rule 'a': hosts: unknown key");
	expect_err("[[tool_rule]]\nname = \"a\"\naction = \"block\"\ntool = \"a b\"\n",
		   "tool: expected a glob");
	expect_err("[[tool_rule]]\nname = \"a\"\naction = \"block\"\ntool = \"*********x\"\n",
		   "at most 8 '*'");
	expect_err("[[tool_rule]]\nname = \"a\"\naction = \"block\"\n"
		   "[[tool_rule]]\nname = \"a\"\naction = \"allow\"\n",
		   "duplicate rule name (first at line 1)");
	expect_err("[[tool_rule]]\nname = \"default\"\naction = \"block\"\n", "not a rule name");
	expect_err("[policy]\ntool_default = \"maybe\"\n", "policy.tool_default: must be");
	(void)state;
}

/* policy_path_normalize(): what the proxy forwards, and what policy_decide() matches. */
static void expect_norm(const char *in, const char *want)
{
	char out[256], again[256];
	ssize_t n = policy_path_normalize(in, out, sizeof(out));
	if (n < 0 || strcmp(out, want) != 0 || (size_t)n != strlen(want))
		fail_msg("normalize '%s': got '%s' (%zd), want '%s'", in, n < 0 ? "" : out, n,
			 want);
	/* normalising twice changes nothing */
	assert_int_equal(policy_path_normalize(out, again, sizeof(again)), n);
	assert_string_equal(again, out);
}

static void test_path_normalize(void **state)
{
	/* RFC 3986 6.2.2: encoded unreserved characters decoded, other hex digits upper-cased */
	expect_norm("/v1/%61dmin", "/v1/admin");
	expect_norm("/%41%5a%30%39%2d%5F%7e", "/AZ09-_~");
	expect_norm("/caf%c3%a9/%20x", "/caf%C3%A9/%20x");
	expect_norm("/a%2fb%2Fc", "/a%2Fb%2Fc"); /* encoded '/', '.', '%': stay encoded */
	expect_norm("/%2e%2e/x", "/%2E%2E/x");
	expect_norm("/%2561", "/%2561");
	expect_norm("/%5c%00", "/%5C%00");
	/* the query and fragment are the upstream's business: unchanged */
	expect_norm("/%61?key=%61%2f#%61", "/a?key=%61%2f#%61");
	expect_norm("/x#%61", "/x#%61");
	/* a '%' without two hex digits: the whole path unchanged (decoding around it could
	 * make a new escape: "%%3631" would become "%631", which an upstream reads as "c1") */
	expect_norm("/%%3631", "/%%3631");
	expect_norm("/%61%zz", "/%61%zz");
	expect_norm("/%6", "/%6");
	expect_norm("/%", "/%");
	expect_norm("/%6?%61", "/%6?%61");
	/* not origin-form: unchanged */
	expect_norm("*", "*");
	expect_norm("", "");
	expect_norm("%61/", "%61/");
	expect_norm("/plain/path.txt", "/plain/path.txt");
	/* the output never grows; too small a buffer is refused */
	char small[8] = "xxxxxxx";
	assert_int_equal(policy_path_normalize("/%61bcdef", small, 9), -ENOBUFS);
	assert_string_equal(small, "xxxxxxx");
	char ten[10];
	assert_int_equal(policy_path_normalize("/%61bcdef", ten, sizeof(ten)), 7);
	assert_string_equal(ten, "/abcdef");
	(void)state;
}

/* Issue 17 item 1: an allow on /v1/ and a block on /v1/admin; "/v1/%61dmin" was allowed. */
static void test_encoded_block_bypass(void **state)
{
	struct policy *p = load_user(
		"[[rule]]\nname = \"no-admin\"\naction = \"block\"\nhosts = [\"a.test\"]\n"
		"paths = [\"/v1/admin\", \"/v1/*/secret\", \"/[b-c]at\"]\npriority = 1\n"
		"[[rule]]\nname = \"v1\"\naction = \"allow\"\nhosts = [\"a.test\"]\n"
		"paths = [\"/v1/\", \"/Pub/*\"]\n");
	EXPECT(p, "a.test", 443, "GET", "/v1/admin", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/%61dmin", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/%61%64%6D%69%6e/users", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "https://a.test/v1/%61dmin?x", POLICY_BLOCK, "no-admin");
	/* BLOCK path conditions ignore ASCII case (prefixes, globs and classes) */
	EXPECT(p, "a.test", 443, "GET", "/v1/ADMIN", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/Admin/x", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/%41DMIN", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/x/SECRET", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/x/s%45cret", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/CAT", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/dat", POLICY_BLOCK, "default");
	/* ALLOW path conditions do not: paths are case-sensitive (RFC 3986) */
	EXPECT(p, "a.test", 443, "GET", "/v1/other", POLICY_ALLOW, "v1");
	EXPECT(p, "a.test", 443, "GET", "/v1/%6Fther", POLICY_ALLOW, "v1");
	EXPECT(p, "a.test", 443, "GET", "/V1/other", POLICY_BLOCK, "default");
	EXPECT(p, "a.test", 443, "GET", "/Pub/x", POLICY_ALLOW, "v1");
	EXPECT(p, "a.test", 443, "GET", "/%50ub/x", POLICY_ALLOW, "v1");
	EXPECT(p, "a.test", 443, "GET", "/pub/x", POLICY_BLOCK, "default");
	/* a malformed escape makes the path ambiguous: never allowed by a path condition */
	EXPECT(p, "a.test", 443, "GET", "/v1/%%3631", POLICY_BLOCK, "no-admin");
	EXPECT(p, "a.test", 443, "GET", "/v1/%zz", POLICY_BLOCK, "no-admin");
	policy_free(p);

	/* rule paths are normalised when loaded */
	p = load_user("[policy]\ndefault = \"allow\"\n"
		      "[[rule]]\nname = \"b\"\naction = \"block\"\nhosts = [\"a.test\"]\n"
		      "paths = [\"/v1/%61dmin\", \"/caf%c3%a9\", \"/g/*/%7e\"]\n"
		      "[[rule]]\nname = \"ok\"\naction = \"allow\"\nhosts = [\"b.test\"]\n"
		      "paths = [\"/%c3%a9/\"]\n"
		      "[[rule]]\nname = \"b-rest\"\naction = \"block\"\nhosts = [\"b.test\"]\n");
	const struct policy_rule_info *ri = policy_rule(p, 0);
	assert_string_equal(ri->paths[0], "/v1/admin");
	assert_string_equal(ri->paths[1], "/caf%C3%A9");
	assert_string_equal(ri->paths[2], "/g/*/~");
	EXPECT(p, "a.test", 443, "GET", "/v1/admin", POLICY_BLOCK, "b");
	EXPECT(p, "a.test", 443, "GET", "/caf%c3%a9", POLICY_BLOCK, "b");
	EXPECT(p, "a.test", 443, "GET", "/g/x/%7E", POLICY_BLOCK, "b");
	EXPECT(p, "b.test", 443, "GET", "/%C3%A9/x", POLICY_ALLOW, "ok");
	EXPECT(p, "b.test", 443, "GET", "/%c3%a9/x", POLICY_ALLOW, "ok");
	policy_free(p);

	/* encodings a normalised request can never hold are load errors */
	expect_err("[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n"
		   "paths = [\"/a%2fb\"]\n",
		   "user.toml:5: rule 'a': paths: '/a%2fb': an encoded '.', '/'");
	expect_err("[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n"
		   "paths = [\"/ok\",\n \"/%2E%2E\"]\n",
		   "user.toml:6: rule 'a': paths: '/%2E%2E': an encoded");
	expect_err("[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n"
		   "paths = [\"/a%zz\"]\n",
		   "'/a%zz': a '%' not followed by two hex digits");
	expect_err("[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n"
		   "paths = [\"/a%6\"]\n",
		   "not followed by two hex digits");
	expect_err("[[rule]]\nname = \"a\"\naction = \"block\"\nhosts = [\"x\"]\n"
		   "paths = [\"/[%41]\"]\n",
		   "inside a [class]");
	(void)state;
}

/* Issue 17 item 6: a "*." stands for at most wildcard_max_labels labels (default 1). */
static void test_wildcard_depth(void **state)
{
	const char *rules = "[[rule]]\nname = \"wild\"\naction = \"allow\"\n"
			    "hosts = [\"*.anthropic.com\"]\nports = [443]\n"
			    "[[rule]]\nname = \"any\"\naction = \"block\"\nhosts = [\"*\"]\n"
			    "ports = [22]\n";
	struct policy *p = load_user(rules);
	enum policy_layer l;
	assert_int_equal(policy_wildcard_max_labels(p, &l), 1);
	assert_int_equal(l, POLICY_LAYER_DEFAULT);
	/* at every level: DNS (port 0), connection, request */
	EXPECT(p, "api.anthropic.com", 0, NULL, NULL, POLICY_ALLOW, "wild");
	EXPECT(p, "api.anthropic.com", 443, NULL, NULL, POLICY_ALLOW, "wild");
	EXPECT(p, "api.anthropic.com", 443, "GET", "/", POLICY_ALLOW, "wild");
	EXPECT(p, "c2VjcmV0.x.anthropic.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "a.b.anthropic.com", 443, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "a.b.anthropic.com.", 443, "GET", "/", POLICY_BLOCK, "default");
	/* "*" alone is not limited */
	EXPECT(p, "a.b.c.example", 22, NULL, NULL, POLICY_BLOCK, "any");
	/* the trace says why */
	struct trace_log t = { "" };
	struct policy_request rq = { "a.b.anthropic.com", 0, NULL, NULL };
	struct policy_decision d;
	policy_decide_trace(p, &rq, &d, trace_cb, &t);
	assert_string_equal(t.text, "wild:deep any:skip ");
	policy_free(p);

	char text[1024];
	snprintf(text, sizeof(text), "[policy]\nwildcard_max_labels = 2\n%s", rules);
	p = load_user(text);
	assert_int_equal(policy_wildcard_max_labels(p, &l), 2);
	assert_int_equal(l, POLICY_LAYER_USER);
	EXPECT(p, "a.b.anthropic.com", 0, NULL, NULL, POLICY_ALLOW, "wild");
	EXPECT(p, "a.b.c.anthropic.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	policy_free(p);
	snprintf(text, sizeof(text), "[policy]\nwildcard_max_labels = 0\n%s", rules);
	p = load_user(text);
	assert_int_equal(policy_wildcard_max_labels(p, NULL), 0);
	EXPECT(p, "a.b.c.d.e.f.anthropic.com", 0, NULL, NULL, POLICY_ALLOW, "wild");
	policy_free(p);

	/* set in the corp file, locked */
	p = load3("[policy]\nwildcard_max_labels = 1\n",
		  "# mine\n[policy]\nwildcard_max_labels = 0\n", rules);
	assert_int_equal(policy_wildcard_max_labels(p, &l), 1);
	assert_int_equal(l, POLICY_LAYER_CORP);
	EXPECT(p, "a.b.anthropic.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	assert_non_null(strstr(policy_warnings(p)[0],
			       "user.toml:3: policy.wildcard_max_labels is locked by corp.toml"));
	policy_free(p);
	/* the defaults layer sets it like any other */
	p = load3(NULL, NULL, "[policy]\nwildcard_max_labels = 3\n");
	assert_int_equal(policy_wildcard_max_labels(p, &l), 3);
	assert_int_equal(l, POLICY_LAYER_DEFAULT);
	policy_free(p);

	expect_err("[policy]\nwildcard_max_labels = -1\n",
		   "user.toml:2: policy.wildcard_max_labels: expected an integer 0-127");
	expect_err("[policy]\nwildcard_max_labels = 128\n", "expected an integer 0-127");
	expect_err("[policy]\nwildcard_max_labels = \"1\"\n", "expected an integer 0-127");

	/* the shipped defaults: 1, and exact names only (no guest-chosen name under a wildcard
	 * reaches the host's resolver) */
	char err[256] = "";
	assert_int_equal(policy_load_strings(NULL, 0, NULL, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(policy_wildcard_max_labels(p, &l), 1);
	assert_int_equal(l, POLICY_LAYER_DEFAULT);
	for (size_t i = 0; i < policy_n_rules(p); i++) {
		const struct policy_rule_info *r = policy_rule(p, i);
		for (size_t j = 0; j < r->n_hosts; j++)
			if (strchr(r->hosts[j], '*'))
				fail_msg("shipped rule '%s' has a wildcard host '%s'", r->name,
					 r->hosts[j]);
	}
	EXPECT(p, "c2VjcmV0.anthropic.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "c2VjcmV0.githubusercontent.com", 0, NULL, NULL, POLICY_BLOCK, "default");
	EXPECT(p, "statsig.anthropic.com", 0, NULL, NULL, POLICY_ALLOW, "anthropic");
	EXPECT(p, "raw.githubusercontent.com", 443, "GET", "/o/r/main/x", POLICY_ALLOW,
	       "github-read");
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_ports_methods_paths),
		cmocka_unit_test(test_ambiguous_paths),
		cmocka_unit_test(test_priorities_layers),
		cmocka_unit_test(test_corp_locking),
		cmocka_unit_test(test_connection_level),
		cmocka_unit_test(test_trace),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_shipped_defaults),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_tool_rules),
		cmocka_unit_test(test_path_normalize),
		cmocka_unit_test(test_encoded_block_bypass),
		cmocka_unit_test(test_wildcard_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
