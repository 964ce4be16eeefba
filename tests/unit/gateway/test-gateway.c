/* test-gateway.c - the MCP gateway's pure parts: "server__tool" names (gwcheck.c), workspace path
 * checks (gwcheck.c), the --mcp-config file (gwconf.c) and HTML to text (html.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gwcheck.h"
#include "gwconf.h"
#include "html.h"

static void test_names(void **state)
{
	char server[GW_SERVER_NAME_MAX + 1], tool[GW_TOOL_NAME_MAX + 1], full[256];

	assert_int_equal(gw_name_split("github__create_issue", server, tool), 0);
	assert_string_equal(server, "github");
	assert_string_equal(tool, "create_issue");
	/* split at the FIRST "__": the rest belongs to the tool */
	assert_int_equal(gw_name_split("github__my__tool", server, tool), 0);
	assert_string_equal(server, "github");
	assert_string_equal(tool, "my__tool");
	assert_int_equal(gw_name_split("capsem__fetch", server, tool), 0);
	assert_int_equal(gw_name_split("nounderscores", server, tool), -EINVAL);
	assert_int_equal(gw_name_split("__tool", server, tool), -EINVAL);
	assert_int_equal(gw_name_split("server__", server, tool), -EINVAL);
	assert_int_equal(gw_name_split("bad server__t", server, tool), -EINVAL);
	assert_int_equal(gw_name_split("s__bad tool", server, tool), -EINVAL);
	assert_int_equal(gw_name_split("s__t\"q", server, tool), -EINVAL);
	assert_int_equal(gw_name_split(NULL, server, tool), -EINVAL);
	char longname[300];
	memset(longname, 'a', 70);
	memcpy(longname + 70, "__t", 4);
	assert_int_equal(gw_name_split(longname, server, tool), -EINVAL);
	memset(longname, 'a', 200);
	memcpy(longname, "s__", 3);
	longname[200] = 0;
	assert_int_equal(gw_name_split(longname, server, tool), -EINVAL);

	assert_int_equal(gw_name_join("a", "b", full, sizeof(full)), 0);
	assert_string_equal(full, "a__b");
	assert_int_equal(gw_name_join("abc", "def", full, 8), -ENOBUFS);

	assert_true(gw_server_name_ok("my-server_1"));
	assert_false(gw_server_name_ok("a__b"));
	assert_false(gw_server_name_ok("_a"));
	assert_false(gw_server_name_ok("a_"));
	assert_false(gw_server_name_ok(""));
	assert_false(gw_server_name_ok("a.b"));
	assert_true(gw_tool_name_ok("get-thing.v2/x"));
	assert_false(gw_tool_name_ok("a\nb"));
	assert_false(gw_tool_name_ok(""));
	(void)state;
}

static int pc(const char *p)
{
	return gw_path_check(p, strlen(p));
}

static void test_paths(void **state)
{
	assert_int_equal(pc("."), 0);
	assert_int_equal(pc("a.txt"), 0);
	assert_int_equal(pc("dir/sub/file"), 0);
	assert_int_equal(pc("./a//b/"), 0);
	assert_int_equal(pc("..a/b..c/...d"), 0); /* names that merely start with dots */
	assert_int_equal(pc(".."), -EPERM);
	assert_int_equal(pc("../x"), -EPERM);
	assert_int_equal(pc("a/../../x"), -EPERM);
	assert_int_equal(pc("a/.."), -EPERM);
	assert_int_equal(pc("/etc/passwd"), -EPERM);
	assert_int_equal(pc(""), -EINVAL);
	assert_int_equal(pc("a\nb"), -EINVAL);
	assert_int_equal(gw_path_check("a\0b", 3), -EINVAL); /* embedded NUL */
	char big[GW_PATH_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(pc(big), -EINVAL);
	(void)state;
}

static struct gwconf *conf_ok(const char *text)
{
	struct gwconf *c = NULL;
	char err[400] = "";
	int r = gwconf_parse(text, strlen(text), &c, err, sizeof(err));
	if (r < 0)
		fail_msg("parse failed (%d): %s\n%s", r, err, text);
	return c;
}

static void conf_err(const char *text, const char *want)
{
	struct gwconf *c = NULL;
	char err[400] = "";
	int r = gwconf_parse(text, strlen(text), &c, err, sizeof(err));
	if (r != -EBADMSG || !strstr(err, want))
		fail_msg("want -EBADMSG with '%s', got %d '%s' for:\n%s", want, r, err, text);
	assert_null(c);
}

static void test_config(void **state)
{
	struct gwconf *c = conf_ok("");
	assert_int_equal(c->n_servers, 0);
	assert_true(c->builtin);
	assert_null(c->workspace);
	assert_int_equal(c->call_timeout_ms, 60000);
	assert_int_equal(c->max_pending, 64);
	gwconf_free(c);

	c = conf_ok("[limits]\ncall_timeout = 5\nmax_pending = 3\n"
		    "[servers.files]\ncommand = \"npx\"\nargs = [\"-y\", \"srv\"]\n"
		    "env = { TOKEN = \"x\", B = \"2\" }\ncwd = \"/tmp\"\n"
		    "[servers.remote]\nurl = \"https://mcp.example.com/mcp\"\n"
		    "headers = { X-Api-Key = \"k\" }\ntimeout = 9\n"
		    "[servers.off]\ncommand = \"x\"\nenabled = false\n"
		    "[builtin]\nworkspace = \"/srv/ws\"\n");
	assert_int_equal(c->call_timeout_ms, 5000);
	assert_int_equal(c->max_pending, 3);
	assert_int_equal(c->n_servers, 2);
	assert_string_equal(c->servers[0].name, "files");
	assert_string_equal(c->servers[0].argv[0], "npx");
	assert_string_equal(c->servers[0].argv[1], "-y");
	assert_string_equal(c->servers[0].argv[2], "srv");
	assert_null(c->servers[0].argv[3]);
	assert_string_equal(c->servers[0].env[0], "TOKEN=x");
	assert_string_equal(c->servers[0].cwd, "/tmp");
	assert_int_equal(c->servers[0].timeout_ms, 5000); /* [limits] call_timeout */
	assert_null(c->servers[0].url);
	assert_string_equal(c->servers[1].url, "https://mcp.example.com/mcp");
	assert_string_equal(c->servers[1].headers[0], "X-Api-Key: k");
	assert_int_equal(c->servers[1].timeout_ms, 9000);
	assert_null(c->servers[1].argv);
	assert_string_equal(c->workspace, "/srv/ws");
	gwconf_free(c);

	conf_err("[servers.capsem]\ncommand = \"x\"\n", "not \"capsem\"");
	conf_err("[servers.a__b]\ncommand = \"x\"\n", "a server name");
	conf_err("[servers.a]\nargs = [\"x\"]\n", "exactly one of 'command' and 'url'");
	conf_err("[servers.a]\ncommand = \"x\"\nurl = \"http://h/\"\n", "exactly one");
	conf_err("[servers.a]\nurl = \"ftp://h/\"\n", "http:// or https://");
	conf_err("[servers.a]\nurl = \"http://h/\"\nheaders = { Accept = \"x\" }\n",
		 "not a header name");
	conf_err("[servers.a]\nurl = \"http://h/\"\nheaders = { Mcp-Session-Id = \"x\" }\n",
		 "not a header name");
	conf_err("[servers.a]\ncommand = \"x\"\nheaders = { X = \"y\" }\n", "headers are for");
	conf_err("[servers.a]\nurl = \"http://h/\"\nargs = [\"x\"]\n", "are for 'command'");
	conf_err("[servers.a]\ncommand = \"x\"\ntimeout = 0\n", "1..3600");
	conf_err("[servers.a]\ncommand = \"x\"\nbogus = 1\n",
		 "line 3: servers.a.bogus: unknown key");
	conf_err("[servers.a]\ncommand = \"x\\ny\"\n", "control characters");
	conf_err("[builtin]\nworkspace = \"rel\"\n", "absolute path");
	conf_err("[limits]\nmax_pending = 0\n", "1..1024");
	conf_err("[other]\n", "unknown key (servers, builtin, limits)");
	conf_err("[servers\n", "line 1");
	(void)state;
}

static char *h2t(const char *html)
{
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(html_to_text(html, strlen(html), &out, &len), 0);
	assert_int_equal(strlen(out), len);
	return out;
}

static void expect_text(const char *html, const char *want)
{
	char *t = h2t(html);
	if (strcmp(t, want) != 0)
		fail_msg("html_to_text(%s)\n got: [%s]\nwant: [%s]", html, t, want);
	free(t);
}

static void test_html(void **state)
{
	expect_text(
		"<html><head><title>T</title><style>p{}</style></head><body>"
		"<h1>Hello</h1><p>One  two\n three.</p><ul><li>a</li><li>b &amp; c</li></ul>"
		"<script>var x = '</p>';</script><p>x&lt;y &#65;&#x42; &nbsp;z</p></body></html>",
		"# Hello\n\nOne two three.\n\n- a\n- b & c\n\nx<y AB z\n");
	expect_text("plain text", "plain text\n");
	expect_text("a<br>b<hr>c", "a\nb\n---\nc\n");
	expect_text("<table><tr><td>1</td><td>2</td></tr></table>", "1 | 2 |\n");
	expect_text("<!-- hidden <p> -->shown", "shown\n");
	expect_text("<a href=\"x>y\">link</a> 1 < 2", "link 1 < 2\n");
	expect_text("", "");
	/* malformed input never fails: unterminated tags, comments, scripts, entities */
	expect_text("<p", "");
	expect_text("<!-- open", "");
	expect_text("<script>never closed", "");
	expect_text("&bogus; &#; &#xZZ; &#99999999;", "&bogus; &#; &#xZZ; \xef\xbf\xbd\n");
	char *t = h2t("<h9>x</h9><H2>Up</H2><SCRIPT>no</SCRIPT>ok");
	assert_string_equal(t, "x\n\n## Up\n\nok\n");
	free(t);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_html),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
