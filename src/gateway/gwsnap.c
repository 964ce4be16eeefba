/* gwsnap.c - the workspace snapshot tools of the gateway's built-in server (gwsnap.h): the agent
 * lists, takes, compares, reverts and deletes snapshots of its own workspace, through the same
 * store (src/workspace/snapstore.c, under the VM directory) that `capsem snapshot` and the API
 * use. Each call opens the store, runs one operation under the store's lock and closes it, so
 * the daemon and the gateway can both use the store.
 *
 * Output: the operation's JSON object, or (format "text", the default) lines a model reads
 * easily: the object's plain members as "key: value", then the items of its list, one line each.
 * The list (snapshots, changes, versions) is paged with offset/limit; the answer says how many
 * there are and where the next page starts.
 *
 * Trust boundary: arguments come from the guest's agent (names and paths are checked by the
 * store; paths resolve only through wstree's openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
 * Runs on the gateway's worker threads; no shared state.
 */
#include "gwsnap.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "builtin.h"
#include "jsonutil.h"
#include "macro.h"
#include "snapstore.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define PATHS_MAX 256

/* ---- definitions ---- */

static json_t *tool(const char *name, const char *desc, json_t *props, json_t *required)
{
	json_t *fmt = json_pack("{s:s, s:[s,s], s:s}", "type", "string", "enum", "text", "json",
				"description", "text (default) or json");
	if (!props || !fmt) {
		json_decref(props);
		json_decref(fmt);
		json_decref(required);
		return NULL;
	}
	json_object_set_new(props, "format", fmt);
	json_t *schema = json_pack("{s:s, s:o}", "type", "object", "properties", props);
	if (schema && required)
		json_object_set_new(schema, "required", required);
	else
		json_decref(required);
	return schema ? json_pack("{s:s, s:s, s:o}", "name", name, "description", desc,
				  "inputSchema", schema)
		      : NULL;
}

static json_t *paging(json_t *props)
{
	if (props) {
		json_object_set_new(props, "offset",
				    json_pack("{s:s, s:s}", "type", "integer", "description",
					      "first item to return (default 0)"));
		json_object_set_new(props, "limit",
				    json_pack("{s:s, s:s}", "type", "integer", "description",
					      "items to return (default 100, at most 1000)"));
	}
	return props;
}

json_t *gwsnap_tools(void)
{
	json_t *a = json_array();
	if (!a)
		return NULL;
	json_t *t[] = {
		tool("snapshots_list",
		     "List the snapshots of the workspace (/root/workspace): automatic ones (taken "
		     "every few minutes while it changes) and named ones, newest first.",
		     paging(json_object()), NULL),
		tool("snapshots_create",
		     "Take a snapshot of the workspace now, with a name (letters, digits, '.', "
		     "'_', '-'; at most 64) to find it again.",
		     json_pack("{s:{s:s}}", "name", "type", "string"), json_pack("[s]", "name")),
		tool("snapshots_changes",
		     "What changed in the workspace since a snapshot (default: the newest): files "
		     "added, modified and deleted.",
		     paging(json_pack("{s:{s:s}}", "snapshot", "type", "string")), NULL),
		tool("snapshots_revert",
		     "Put paths of the workspace (files or directories, relative to it) back as "
		     "they were in a snapshot (default: the newest); a path the snapshot does not "
		     "have is deleted.",
		     json_pack("{s:{s:s, s:{s:s}}, s:{s:s}}", "paths", "type", "array", "items",
			       "type", "string", "from", "type", "string"),
		     json_pack("[s]", "paths")),
		tool("snapshots_history",
		     "The versions of one path of the workspace across the snapshots.",
		     paging(json_pack("{s:{s:s}}", "path", "type", "string")),
		     json_pack("[s]", "path")),
		tool("snapshots_delete", "Delete a snapshot by name.",
		     json_pack("{s:{s:s}}", "name", "type", "string"), json_pack("[s]", "name")),
		tool("snapshots_compact",
		     "Free the space of file contents that no snapshot uses any more.",
		     json_object(), NULL),
	};
	for (size_t i = 0; i < ELEMENTSOF(t); i++)
		if (!t[i] || json_array_append_new(a, t[i]) < 0) {
			for (size_t j = i + 1; j < ELEMENTSOF(t); j++)
				json_decref(t[j]);
			json_decref(a);
			return NULL;
		}
	return a;
}

bool gwsnap_is_tool(const char *tool)
{
	return strncmp(tool, "snapshots_", 10) == 0;
}

/* ---- output ---- */

/* Every list in o (snapshots; added, modified, deleted; versions) cut to [offset, offset+limit);
 * "total_<list>" says how long it was, "next_offset" where the next page starts when one was
 * cut. */
static int page(json_t *o, const json_t *args, char *err, size_t errlen)
{
	json_int_t off = 0, lim = PAGE_DEFAULT;
	json_t *v;
	if ((v = json_object_get(args, "offset")) &&
	    (!json_is_integer(v) || (off = json_integer_value(v)) < 0)) {
		snprintf(err, errlen, "'offset' must be an integer >= 0");
		return -EINVAL;
	}
	if ((v = json_object_get(args, "limit")) &&
	    (!json_is_integer(v) || (lim = json_integer_value(v)) < 1 || lim > PAGE_MAX)) {
		snprintf(err, errlen, "'limit' must be an integer from 1 to %d", PAGE_MAX);
		return -EINVAL;
	}
	_cleanup_json_ json_t *totals = json_object();
	const char *k;
	int more = 0;
	if (!totals)
		return -ENOMEM;
	json_object_foreach(o, k, v)
	{
		if (!json_is_array(v))
			continue;
		size_t n = json_array_size(v);
		json_t *part = json_array();
		if (!part)
			return -ENOMEM;
		for (size_t i = (size_t)off; i < n && i < (size_t)(off + lim); i++)
			json_array_append(part, json_array_get(v, i));
		char tk[80];
		snprintf(tk, sizeof(tk), "total_%s", k);
		json_object_set_new(totals, tk, json_integer((json_int_t)n));
		more |= (size_t)(off + lim) < n;
		json_object_set_new(o, k, part); /* replaces v: same key, the iteration goes on */
	}
	if (json_object_size(totals) == 0)
		return 0;
	json_object_update(o, totals);
	json_object_set_new(o, "offset", json_integer(off));
	if (more)
		json_object_set_new(o, "next_offset", json_integer(off + lim));
	return 0;
}

static void bprintf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
static void bprintf(struct buf *b, const char *fmt, ...)
{
	char tmp[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		(void)buf_append(b, tmp, MIN((size_t)n, sizeof(tmp) - 1)); /* full: cut */
}

static void text_value(struct buf *b, const json_t *v)
{
	if (json_is_string(v))
		bprintf(b, "%s", json_string_value(v));
	else if (json_is_integer(v))
		bprintf(b, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		bprintf(b, "%g", json_real_value(v));
	else if (json_is_boolean(v))
		bprintf(b, "%s", json_is_true(v) ? "yes" : "no");
	else if (json_is_null(v))
		bprintf(b, "-");
	else {
		_cleanup_free_ char *s = json_dumps(v, JSON_COMPACT);
		bprintf(b, "%s", s ? s : "?");
	}
}

/* The plain members as "key: value" lines, then each list: "key:" and one line per item. */
static json_t *render(json_t *o, const json_t *args)
{
	const char *fmt = json_string_value(json_object_get(args, "format"));
	if (fmt && streq(fmt, "json")) {
		_cleanup_free_ char *s = json_dumps(o, JSON_COMPACT);
		return s ? builtin_text_result(s, strlen(s), false) : NULL;
	}
	_cleanup_buf_ struct buf b = BUF_INIT(BUILTIN_MAX_LENGTH);
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		if (json_is_array(v))
			continue;
		bprintf(&b, "%s: ", k);
		text_value(&b, v);
		bprintf(&b, "\n");
	}
	json_object_foreach(o, k, v)
	{
		size_t i;
		json_t *it;
		if (!json_is_array(v))
			continue;
		bprintf(&b, "%s:%s\n", k, json_array_size(v) ? "" : " none");
		json_array_foreach(v, i, it)
		{
			bprintf(&b, "-");
			if (json_is_object(it)) {
				const char *ik;
				json_t *iv;
				json_object_foreach(it, ik, iv)
				{
					bprintf(&b, " %s=", ik);
					text_value(&b, iv);
				}
			} else {
				bprintf(&b, " ");
				text_value(&b, it);
			}
			bprintf(&b, "\n");
		}
	}
	return builtin_text_result((const char *)buf_head(&b), buf_len(&b), false);
}

/* ---- calls ---- */

static const char *opt_str(const json_t *args, const char *k, int *bad)
{
	json_t *v = json_object_get(args, k);
	if (v && !json_is_string(v))
		*bad = 1;
	return json_string_value(v);
}

json_t *gwsnap_call(const char *store, const char *workspace, const char *tool, const json_t *args)
{
	struct snapstore *s = NULL;
	json_t *res = NULL;
	int bad = 0, r;
	const char *fmt = opt_str(args, "format", &bad);
	if (bad || (fmt && !streq(fmt, "text") && !streq(fmt, "json")))
		return builtin_errorf("%s: 'format' must be \"text\" or \"json\"", tool);
	r = snapstore_open(store, workspace, NULL, &s);
	if (r < 0)
		return builtin_errorf("%s: the snapshot store cannot be opened: %s", tool,
				      strerror(-r));
	if (streq(tool, "snapshots_list")) {
		r = snapstore_list(s, &res);
	} else if (streq(tool, "snapshots_create")) {
		const char *name = opt_str(args, "name", &bad);
		r = bad || !name ? -EINVAL : snapstore_create(s, name, &res);
	} else if (streq(tool, "snapshots_changes")) {
		const char *snap = opt_str(args, "snapshot", &bad);
		r = bad ? -EINVAL : snapstore_changes(s, snap, &res);
	} else if (streq(tool, "snapshots_revert")) {
		const json_t *a = json_object_get(args, "paths");
		const char *from = opt_str(args, "from", &bad);
		char *paths[PATHS_MAX + 1] = { 0 };
		size_t i, n = json_array_size(a);
		json_t *p;
		if (!json_is_array(a) || n == 0 || n > PATHS_MAX)
			bad = 1;
		json_array_foreach(a, i, p)
		{
			if (bad || !json_is_string(p)) {
				bad = 1;
				break;
			}
			paths[i] = (char *)json_string_value(p);
		}
		r = bad ? -EINVAL : snapstore_revert(s, from, paths, &res);
	} else if (streq(tool, "snapshots_history")) {
		const char *path = opt_str(args, "path", &bad);
		r = bad || !path ? -EINVAL : snapstore_history(s, path, &res);
	} else if (streq(tool, "snapshots_delete")) {
		const char *name = opt_str(args, "name", &bad);
		r = bad || !name ? -EINVAL : snapstore_delete(s, name);
		if (r == 0)
			res = json_pack("{s:s, s:b}", "name", name, "deleted", 1);
	} else if (streq(tool, "snapshots_compact")) {
		r = snapstore_compact(s, &res);
	} else {
		r = -ENOSYS;
	}
	snapstore_free(s);
	if (r < 0 || !res) {
		json_decref(res);
		return r == -ENOSYS ? builtin_errorf("unknown tool '%.128s'", tool)
		       : r == -EINVAL
			       ? builtin_errorf("%s: invalid arguments (a name is letters, digits, "
						"'.', '_', '-'; paths are relative to the "
						"workspace, without '..')",
						tool)
		       : r == -ENOENT ? builtin_errorf("%s: no such snapshot or path", tool)
		       : r == -EEXIST ? builtin_errorf("%s: a snapshot of that name exists", tool)
		       : r == -ELOOP
			       ? builtin_errorf("%s: a symbolic link on the way (not followed)",
						tool)
			       : builtin_errorf("%s: %s", tool, strerror(r < 0 ? -r : ENOMEM));
	}
	char err[128];
	r = page(res, args, err, sizeof(err));
	json_t *out = r == -EINVAL ? builtin_errorf("%s: %s", tool, err)
		      : r < 0	   ? NULL
				   : render(res, args);
	json_decref(res);
	return out;
}
