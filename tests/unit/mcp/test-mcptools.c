/* test-mcptools.c - capsem-mcp's pure parts: the schema subset validator, UTF-8 text from
 * untrusted bytes, result builders, the compiled-in tool table (tools.json bound to its
 * implementations; every schema well-formed and strict) and VM path escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "mcptools.h"
#include "mcputil.h"
#include "apiclient.h"

static void test_text_string(void **state)
{
	json_t *s = mcp_text_string("ok\xff\xe2\x82!\0z", 8);
	assert_non_null(s);
	/* one U+FFFD per bad byte */
	assert_int_equal(json_string_length(s), 2 + 3 + 3 + 3 + 1 + 3 + 1);
	assert_memory_equal(json_string_value(s),
			    "ok\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!\xef\xbf\xbdz", 16);
	json_decref(s);
	s = mcp_text_string(NULL, 0); /* an empty buf has no data pointer */
	assert_string_equal(json_string_value(s), "");
	json_decref(s);
	s = mcp_text_string("plain", 5);
	assert_string_equal(json_string_value(s), "plain");
	json_decref(s);
}

static int schema_ok(const char *schema, const char *value, char *err, size_t errn)
{
	json_t *s = json_loads(schema, 0, NULL), *v = json_loads(value, JSON_DECODE_ANY, NULL);
	assert_non_null(s);
	assert_non_null(v);
	int r = mcp_schema_check(s, v, "arguments", err, errn);
	json_decref(s);
	json_decref(v);
	return r;
}

static void test_schema(void **state)
{
	const char *sch =
		"{\"type\":\"object\",\"properties\":{"
		"\"vm\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":4},"
		"\"n\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":64},"
		"\"t\":{\"type\":\"number\",\"minimum\":0.1},"
		"\"m\":{\"type\":[\"string\",\"integer\"]},"
		"\"e\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}},"
		"\"k\":{\"type\":\"array\",\"maxItems\":2,\"items\":{\"enum\":[\"a\",\"b\"]}},"
		"\"p\":{\"type\":\"string\",\"pattern\":\"^/\"},"
		"\"b\":{\"type\":\"boolean\"}},"
		"\"required\":[\"vm\"],\"additionalProperties\":false}";
	char err[256];

	assert_int_equal(schema_ok(sch, "{\"vm\":\"a\"}", err, sizeof(err)), 0);
	assert_int_equal(schema_ok(sch,
				   "{\"vm\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\",\"n\":64,\"t\":1,"
				   "\"m\":5,\"e\":{\"A\":\"b\"},\"k\":[\"a\",\"b\"],\"p\":\"/x\","
				   "\"b\":false}",
				   err, sizeof(err)),
			 0);
	assert_int_equal(schema_ok(sch, "{\"vm\":\"a\",\"m\":\"1G\",\"t\":0.5}", err, sizeof(err)),
			 0);

	static const struct {
		const char *value, *msg;
	} bad[] = {
		{ "{}", "arguments: missing required property 'vm'" },
		{ "[]", "arguments: expected an object, got an array" },
		{ "{\"vm\":1}", "arguments.vm: expected a string, got an integer" },
		{ "{\"vm\":\"\"}", "arguments.vm: must be at least 1 characters long" },
		{ "{\"vm\":\"abcde\"}", "arguments.vm: must be at most 4 characters long" },
		{ "{\"vm\":\"a\",\"x\":1}", "arguments: unknown property 'x'" },
		{ "{\"vm\":\"a\",\"n\":0}", "arguments.n: must be >= 1" },
		{ "{\"vm\":\"a\",\"n\":65}", "arguments.n: must be <= 64" },
		{ "{\"vm\":\"a\",\"n\":1.5}", "arguments.n: expected an integer, got a number" },
		{ "{\"vm\":\"a\",\"t\":\"1\"}", "arguments.t: expected a number, got a string" },
		{ "{\"vm\":\"a\",\"t\":0}", "arguments.t: must be >= 0.1" },
		{ "{\"vm\":\"a\",\"m\":true}",
		  "arguments.m: expected string or integer, got a boolean" },
		{ "{\"vm\":\"a\",\"e\":{\"A\":1}}",
		  "arguments.e.A: expected a string, got an integer" },
		{ "{\"vm\":\"a\",\"k\":[\"c\"]}", "arguments.k[0]: expected one of 'a', 'b'" },
		{ "{\"vm\":\"a\",\"k\":[\"a\",\"a\",\"a\"]}",
		  "arguments.k: takes at most 2 items" },
		{ "{\"vm\":\"a\",\"p\":\"rel\"}", "arguments.p: must match ^/" },
		{ "{\"vm\":\"a\",\"b\":null}", "arguments.b: expected a boolean, got null" },
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(schema_ok(sch, bad[i].value, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, bad[i].msg);
	}
}

static void test_results(void **state)
{
	json_t *r = mcp_result_error("no VM named '%s'", "x");
	assert_true(json_is_true(json_object_get(r, "isError")));
	json_t *c = json_array_get(json_object_get(r, "content"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "type")), "text");
	assert_string_equal(json_string_value(json_object_get(c, "text")), "no VM named 'x'");
	json_decref(r);

	r = mcp_result_text("a\xff", 2);
	assert_null(json_object_get(r, "isError"));
	c = json_array_get(json_object_get(r, "content"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "text")), "a\xef\xbf\xbd");
	json_decref(r);

	r = mcp_result_json(json_pack("{s:i}", "a", 1));
	assert_int_equal(
		json_integer_value(json_object_get(json_object_get(r, "structuredContent"), "a")),
		1);
	c = json_array_get(json_object_get(r, "content"), 0);
	json_t *back = json_loads(json_string_value(json_object_get(c, "text")), 0, NULL);
	assert_true(json_equal(back, json_object_get(r, "structuredContent")));
	json_decref(back);
	json_decref(r);
	assert_null(mcp_result_json(json_array())); /* structuredContent must be an object */
}

static void test_tool_table(void **state)
{
	size_t n;
	assert_int_equal(mcp_tools_init(), 0);
	const struct mcp_tool *t = mcp_tools(&n);
	assert_int_equal(n, 18);
	static const char *names[] = { "capsem_create",	    "capsem_list",    "capsem_info",
				       "capsem_exec",	    "capsem_run",     "capsem_read_file",
				       "capsem_write_file", "capsem_stop",    "capsem_start",
				       "capsem_delete",	    "capsem_logs",    "capsem_events",
				       "capsem_snapshots",  "capsem_fork",    "capsem_persist",
				       "capsem_purge",	    "capsem_suspend", "capsem_resume" };
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		assert_non_null(mcp_tool_find(names[i]));
	assert_null(mcp_tool_find("capsem_nope"));
	assert_null(mcp_tool_find(""));

	for (size_t i = 0; i < n; i++) {
		json_t *s = t[i].schema, *props = json_object_get(s, "properties"), *e;
		size_t j;
		assert_non_null(t[i].run);
		assert_string_equal(json_string_value(json_object_get(s, "type")), "object");
		assert_true(json_is_false(json_object_get(s, "additionalProperties")));
		assert_true(json_is_object(props));
		assert_true(strlen(json_string_value(json_object_get(t[i].def, "description"))) >
			    20);
		json_array_foreach(json_object_get(s, "required"), j, e)
		{
			assert_non_null(json_object_get(props, json_string_value(e)));
		}
		const char *k;
		json_t *p;
		json_object_foreach(props, k, p)
		{
			assert_non_null(json_object_get(p, "type"));
			assert_true(json_is_string(json_object_get(p, "description")));
		}
	}

	/* typical arguments pass, typical mistakes do not */
	char err[256];
	const struct mcp_tool *x = mcp_tool_find("capsem_exec");
	json_t *a = json_pack("{s:s, s:s, s:f, s:{s:s}}", "vm", "web", "command", "echo hi",
			      "timeout", 2.5, "env", "A", "b");
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), 0);
	json_object_set_new(a, "cwd", json_string("relative"));
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), -EINVAL);
	json_decref(a);
	x = mcp_tool_find("capsem_create");
	a = json_pack("{s:s, s:s, s:i, s:[{s:s, s:s, s:b}]}", "name", "web-1", "memory", "1G",
		      "cpus", 2, "mounts", "host", "/tmp", "guest", "/mnt/x", "ro", 1);
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), 0);
	json_object_set_new(a, "name", json_string("Web"));
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), -EINVAL);
	json_decref(a);
	x = mcp_tool_find("capsem_write_file");
	a = json_pack("{s:s, s:s, s:s, s:s}", "vm", "w", "path", "/x", "content", "", "mode",
		      "0755");
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), 0);
	json_object_set_new(a, "mode", json_string("0999"));
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), -EINVAL);
	json_decref(a);
	x = mcp_tool_find("capsem_list");
	a = json_object();
	assert_int_equal(mcp_schema_check(x->schema, a, "arguments", err, sizeof(err)), 0);
	json_decref(a);

	json_t *list = mcp_tools_list();
	assert_int_equal(json_array_size(list), n);
	json_decref(list);
	mcp_tools_done();
	assert_null(mcp_tools_list());
}

static void test_vm_path(void **state)
{
	_cleanup_free_ char *a = api_vm_path("web-1.x_y~", "/exec?via=mcp");
	_cleanup_free_ char *b = api_vm_path("../a b/%?", "");
	assert_string_equal(a, "/vms/web-1.x_y~/exec?via=mcp");
	assert_string_equal(b, "/vms/..%2Fa%20b%2F%25%3F");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_string), cmocka_unit_test(test_schema),
		cmocka_unit_test(test_results),	    cmocka_unit_test(test_tool_table),
		cmocka_unit_test(test_vm_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
