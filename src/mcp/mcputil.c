/* mcputil.c - capsem-mcp's pure helpers: the JSON Schema subset validator for tool arguments,
 * UTF-8 text from untrusted bytes, tool-result builders (base64 is src/basic/base64.c).
 *
 * Trust boundary: tool arguments come from the MCP client (an AI agent: hostile by default),
 * command output and file contents from the guest. Everything here is bounded by its input; the
 * validator recurses only as deep as our own schemas (never as deep as the value). Called from
 * the main thread (validation) and from tool worker threads (results), on objects they own.
 */
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "mcputil.h"
#include "utf8.h"

/* ---- schema subset ---- */

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

static int type_is(const json_t *v, const char *t)
{
	if (streq(t, "object"))
		return json_is_object(v);
	if (streq(t, "array"))
		return json_is_array(v);
	if (streq(t, "string"))
		return json_is_string(v);
	if (streq(t, "integer"))
		return json_is_integer(v);
	if (streq(t, "number"))
		return json_is_number(v);
	if (streq(t, "boolean"))
		return json_is_boolean(v);
	if (streq(t, "null"))
		return json_is_null(v);
	return 0;
}

static int fail(char *err, size_t errn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errn, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errn, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int check_type(const json_t *schema, const json_t *v, const char *where, char *err,
		      size_t errn)
{
	const json_t *t = json_object_get(schema, "type");
	if (!t)
		return 0;
	if (json_is_string(t)) {
		if (type_is(v, json_string_value(t)))
			return 0;
		return fail(err, errn, "%s: expected %s%s, got %s", where,
			    strchr("aeiou", json_string_value(t)[0]) ? "an " : "a ",
			    json_string_value(t), type_name(v));
	}
	size_t i;
	const json_t *e;
	char names[128] = "";
	json_array_foreach(t, i, e)
	{
		if (type_is(v, strempty(json_string_value(e))))
			return 0;
		size_t l = strlen(names);
		snprintf(names + l, sizeof(names) - l, "%s%s", i ? " or " : "",
			 strempty(json_string_value(e)));
	}
	return fail(err, errn, "%s: expected %s, got %s", where, names, type_name(v));
}

static int check_enum(const json_t *schema, const json_t *v, const char *where, char *err,
		      size_t errn)
{
	const json_t *en = json_object_get(schema, "enum"), *e;
	size_t i;
	if (!en)
		return 0;
	json_array_foreach(en, i, e)
	{
		if (json_equal((json_t *)e, (json_t *)v))
			return 0;
	}
	char names[256] = "";
	json_array_foreach(en, i, e)
	{
		size_t l = strlen(names);
		if (json_is_string(e))
			snprintf(names + l, sizeof(names) - l, "%s'%s'", i ? ", " : "",
				 json_string_value(e));
		else
			snprintf(names + l, sizeof(names) - l, "%s%lld", i ? ", " : "",
				 (long long)json_integer_value(e));
	}
	return fail(err, errn, "%s: expected one of %s", where, names);
}

static int check_string(const json_t *schema, const json_t *v, const char *where, char *err,
			size_t errn)
{
	const char *s = json_string_value(v);
	size_t n = json_string_length(v), cps = utf8_count(s, n);
	const json_t *mn = json_object_get(schema, "minLength");
	const json_t *mx = json_object_get(schema, "maxLength");
	const json_t *pat = json_object_get(schema, "pattern");
	if (mn && cps < (size_t)json_integer_value(mn))
		return fail(err, errn, "%s: must be at least %lld characters long", where,
			    (long long)json_integer_value(mn));
	if (mx && cps > (size_t)json_integer_value(mx))
		return fail(err, errn, "%s: must be at most %lld characters long", where,
			    (long long)json_integer_value(mx));
	if (pat) {
		regex_t re;
		if (memchr(s, 0, n))
			return fail(err, errn, "%s: must not contain NUL characters", where);
		if (regcomp(&re, json_string_value(pat), REG_EXTENDED | REG_NOSUB) != 0)
			return fail(err, errn, "%s: bad pattern in the schema", where);
		int m = regexec(&re, s, 0, NULL, 0);
		regfree(&re);
		if (m != 0)
			return fail(err, errn, "%s: must match %s", where, json_string_value(pat));
	}
	return 0;
}

static int check_number(const json_t *schema, const json_t *v, const char *where, char *err,
			size_t errn)
{
	const json_t *mn = json_object_get(schema, "minimum");
	const json_t *mx = json_object_get(schema, "maximum");
	double x = json_number_value(v);
	if (mn && x < json_number_value(mn))
		return fail(err, errn, "%s: must be >= %g", where, json_number_value(mn));
	if (mx && x > json_number_value(mx))
		return fail(err, errn, "%s: must be <= %g", where, json_number_value(mx));
	return 0;
}

static int check(const json_t *schema, const json_t *v, const char *where, char *err, size_t errn);

static int check_object(const json_t *schema, const json_t *v, const char *where, char *err,
			size_t errn)
{
	const json_t *props = json_object_get(schema, "properties");
	const json_t *req = json_object_get(schema, "required");
	const json_t *addl = json_object_get(schema, "additionalProperties");
	const char *key;
	json_t *val;
	const json_t *e;
	size_t i;
	char sub[256];

	json_array_foreach(req, i, e)
	{
		if (json_is_string(e) && !json_object_get(v, json_string_value(e)))
			return fail(err, errn, "%s: missing required property '%s'", where,
				    json_string_value(e));
	}
	json_object_foreach((json_t *)v, key, val)
	{
		const json_t *ps = json_object_get(props, key);
		snprintf(sub, sizeof(sub), "%s.%.64s", where, key);
		if (ps) {
			int r = check(ps, val, sub, err, errn);
			if (r < 0)
				return r;
		} else if (json_is_false(addl)) {
			return fail(err, errn, "%s: unknown property '%.64s'", where, key);
		} else if (json_is_object(addl)) {
			int r = check(addl, val, sub, err, errn);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int check_array(const json_t *schema, const json_t *v, const char *where, char *err,
		       size_t errn)
{
	const json_t *items = json_object_get(schema, "items");
	const json_t *mn = json_object_get(schema, "minItems");
	const json_t *mx = json_object_get(schema, "maxItems");
	size_t n = json_array_size(v), i;
	const json_t *e;
	char sub[256];

	if (mn && n < (size_t)json_integer_value(mn))
		return fail(err, errn, "%s: needs at least %lld items", where,
			    (long long)json_integer_value(mn));
	if (mx && n > (size_t)json_integer_value(mx))
		return fail(err, errn, "%s: takes at most %lld items", where,
			    (long long)json_integer_value(mx));
	if (!json_is_object(items))
		return 0;
	json_array_foreach(v, i, e)
	{
		snprintf(sub, sizeof(sub), "%s[%zu]", where, i);
		int r = check(items, e, sub, err, errn);
		if (r < 0)
			return r;
	}
	return 0;
}

static int check(const json_t *schema, const json_t *v, const char *where, char *err, size_t errn)
{
	int r = check_type(schema, v, where, err, errn);
	if (r < 0)
		return r;
	r = check_enum(schema, v, where, err, errn);
	if (r < 0)
		return r;
	if (json_is_string(v))
		return check_string(schema, v, where, err, errn);
	if (json_is_number(v))
		return check_number(schema, v, where, err, errn);
	if (json_is_object(v))
		return check_object(schema, v, where, err, errn);
	if (json_is_array(v))
		return check_array(schema, v, where, err, errn);
	return 0;
}

int mcp_schema_check(const json_t *schema, const json_t *v, const char *where, char *err,
		     size_t errn)
{
	if (errn)
		err[0] = 0;
	return check(schema, v, where ? where : "value", err, errn);
}

/* ---- tool results ---- */

/* {"content":[{"type":"text","text":text}]} with text stolen. */
static json_t *text_result(json_t *text)
{
	if (!text)
		return NULL;
	return json_pack("{s:[{s:s,s:o}]}", "content", "type", "text", "text", text);
}

json_t *mcp_result_error(const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	json_t *r = text_result(mcp_text_string(msg, (size_t)n));
	if (r && json_object_set_new(r, "isError", json_true()) < 0) {
		json_decref(r);
		return NULL;
	}
	return r;
}

json_t *mcp_result_text(const void *p, size_t n)
{
	return text_result(mcp_text_string(p, n));
}

json_t *mcp_result_json(json_t *obj)
{
	if (!json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	char *text = json_dumps(obj, JSON_INDENT(2));
	json_t *r = text ? text_result(json_string(text)) : NULL;
	free(text);
	if (!r) {
		json_decref(obj);
		return NULL;
	}
	if (json_object_set_new(r, "structuredContent", obj) < 0) { /* obj released */
		json_decref(r);
		return NULL;
	}
	return r;
}
