/* mcptools.c - capsem-mcp's tools: the table built from tools.json and one function per tool,
 * each a few blocking requests to capsemd (docs/API.md) through src/shared/apiclient.c.
 *
 * Trust boundary: arguments come from the MCP client and were checked against the tool's schema
 * by the caller; paths and refs are still percent-encoded here and every other check is the
 * daemon's. Answers from the daemon are capped by the API client; command output and files come
 * from the guest and are capped (MCP_EXEC_OUTPUT_MAX per stream, 1 MiB per file) and turned into
 * valid UTF-8 (or base64) before they become JSON.
 *
 * Threads: mcp_tools_init/done and the table run on the main thread; each tool function runs on
 * its call's worker thread with its own connections, and watches ctx->cancel_fd while it waits:
 * an exec is killed (SIGNAL SIGKILL, then the connection is closed, which makes the guest kill
 * the process group too), a VM created for a cancelled call is deleted.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include "apiclient.h"
#include "fdutil.h"
#include "home.h"
#include "jsonutil.h"
#include "macro.h"
#include "mcptools.h"
#include "base64.h"
#include "mcputil.h"
#include "strv.h"
#include "utf8.h"
#include "proto.h"

extern const char mcp_tools_json[];
extern const size_t mcp_tools_json_len;

/* ---- plumbing ---- */

static void ctx_err(struct mcp_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void ctx_err(struct mcp_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
	va_end(ap);
}

int mcp_ctx_cancelled(const struct mcp_ctx *ctx)
{
	if (ctx->cancel_fd < 0)
		return 0;
	struct pollfd pf = { .fd = ctx->cancel_fd, .events = POLLIN };
	return poll(&pf, 1, 0) > 0;
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Connect to capsemd, starting it when needed. 0 or <0 with ctx->err set. */
static int ctx_open(struct mcp_ctx *ctx, struct api_conn *c)
{
	int r = api_connect_or_start(c);
	if (r == -ENOEXEC)
		ctx_err(ctx, "cannot find the capsemd binary (set CAPSEM_DAEMON_BIN)");
	else if (r == -ETIMEDOUT) {
		_cleanup_free_ char *home = NULL;
		(void)capsem_home(&home);
		ctx_err(ctx, "capsemd did not start within %d s; see %s/run/capsemd.log",
			API_START_TIMEOUT_MS / 1000, strempty(home));
	} else if (r < 0)
		ctx_err(ctx, "cannot reach capsemd: %s", strerror(-r));
	return r;
}

/* Explain a failed request. Returns r (-ECANCELED for -EINTR). */
static int req_err(struct mcp_ctx *ctx, int r)
{
	if (r == -EINTR) {
		ctx_err(ctx, "cancelled");
		return -ECANCELED;
	}
	if (r == -EPIPE || r == -ECONNRESET)
		ctx_err(ctx, "capsemd closed the connection before answering (did it exit?)");
	else if (r == -EFBIG)
		ctx_err(ctx, "capsemd's answer is over the %u KiB limit", API_MAX_BODY / 1024);
	else if (r == -EBADMSG)
		ctx_err(ctx, "capsemd sent a malformed answer");
	else
		ctx_err(ctx, "talking to capsemd: %s", strerror(-r));
	return r;
}

/* One request on a fresh connection; cancellable while waiting for the answer. 0 with a 2xx
 * answer in *res (release with api_response_done), -ECANCELED, -EREMOTE (the daemon's error
 * message in ctx->err) or another -errno (ctx->err says what). */
static int ctx_request(struct mcp_ctx *ctx, const struct api_req *rq, struct api_response *res)
{
	struct api_conn c;
	int r = ctx_open(ctx, &c);
	if (r < 0)
		return r;
	c.intr_fd = ctx->cancel_fd;
	r = api_request(&c, rq, res);
	api_conn_close(&c);
	if (r < 0)
		return req_err(ctx, r);
	if (res->head.status / 100 != 2) {
		ctx_err(ctx, "%s", api_response_error(res));
		api_response_done(res);
		return -EREMOTE;
	}
	return 0;
}

/* A JSON request (body borrowed, may be NULL). Same returns as ctx_request. */
static int ctx_json(struct mcp_ctx *ctx, const char *method, const char *path, json_t *body,
		    struct api_response *res)
{
	_cleanup_free_ char *text = NULL;
	struct api_req rq = { .method = method, .path = path, .body_fd = -1, .out_fd = -1 };
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			ctx_err(ctx, "out of memory");
			return -ENOMEM;
		}
		rq.content_type = "application/json";
		rq.body = text;
		rq.body_len = strlen(text);
	}
	return ctx_request(ctx, &rq, res);
}

static json_t *ctx_fail(struct mcp_ctx *ctx)
{
	return mcp_result_error("%s", ctx->err[0] ? ctx->err : "failed");
}

static json_t *oom(void)
{
	return mcp_result_error("out of memory");
}

/* The answer's JSON object as the tool's result. */
static json_t *object_result(struct mcp_ctx *ctx, struct api_response *res)
{
	json_t *o = json_is_object(res->json) ? json_incref(res->json) : NULL;
	api_response_done(res);
	if (!o)
		return mcp_result_error("capsemd sent an unexpected answer (not a JSON object)");
	json_t *r = mcp_result_json(o);
	return r ? r : oom();
}

static const char *arg_str(json_t *args, const char *key)
{
	return json_string_value(json_object_get(args, key));
}

/* {"K": "V", ...} -> ["K=V", ...] (NULL when absent: an empty array). */
static json_t *env_array(json_t *env)
{
	json_t *a = json_array();
	const char *k;
	json_t *v;
	if (!a)
		return NULL;
	json_object_foreach(env, k, v)
	{
		_cleanup_free_ char *kv = NULL;
		if (asprintf(&kv, "%s=%s", k, strempty(json_string_value(v))) < 0 ||
		    json_array_append_new(a, json_string(kv)) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* Copy args[key] into body[key] when present. */
static int copy_arg(json_t *body, json_t *args, const char *key)
{
	json_t *v = json_object_get(args, key);
	return v ? json_object_set(body, key, v) : 0;
}

/* ---- VMs: create, list, info, stop, start, delete ---- */

static json_t *create_body(json_t *args, int with_name)
{
	json_t *b = json_object();
	if (!b)
		return NULL;
	if ((with_name && copy_arg(b, args, "name") < 0) || copy_arg(b, args, "image") < 0 ||
	    copy_arg(b, args, "cpus") < 0 || copy_arg(b, args, "memory") < 0 ||
	    (with_name && copy_arg(b, args, "disk") < 0) ||
	    (with_name && copy_arg(b, args, "mounts") < 0) ||
	    (with_name && copy_arg(b, args, "suspendable") < 0)) {
		json_decref(b);
		return NULL;
	}
	json_t *env = json_object_get(args, "env");
	if (with_name && env && json_object_set_new(b, "env", env_array(env)) < 0) {
		json_decref(b);
		return NULL;
	}
	return b;
}

static void delete_quietly(const char *id)
{
	_cleanup_free_ char *path = api_vm_path(id, "");
	struct mcp_ctx quiet = { .cancel_fd = -1 };
	struct api_response res;
	if (path && ctx_json(&quiet, "DELETE", path, NULL, &res) == 0)
		api_response_done(&res);
}

/* POST /vms. 0 with the VM object in *ret_vm; -ECANCELED (a VM that got created anyway is
 * deleted); or <0 with ctx->err. */
static int create_vm(struct mcp_ctx *ctx, json_t *body, json_t **ret_vm)
{
	_cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
	struct api_req rq = { .method = "POST",
			      .path = "/vms",
			      .content_type = "application/json",
			      .body = text,
			      .body_len = text ? strlen(text) : 0,
			      .body_fd = -1,
			      .out_fd = -1 };
	struct api_response res;
	struct api_conn c;
	int r, cancelled = 0;

	if (!text) {
		ctx_err(ctx, "out of memory");
		return -ENOMEM;
	}
	r = ctx_open(ctx, &c);
	if (r < 0)
		return r;
	r = api_send_request(&c, &rq);
	if (r < 0) {
		api_conn_close(&c);
		return req_err(ctx, r);
	}
	c.intr_fd = ctx->cancel_fd;
	r = api_read_response(&c, &rq, &res);
	if (r == -EINTR) {
		/* the VM is being made: wait for it, then delete it */
		cancelled = 1;
		c.intr_fd = -1;
		r = api_read_response(&c, &rq, &res);
	}
	api_conn_close(&c);
	if (r < 0)
		return cancelled ? -ECANCELED : req_err(ctx, r);
	if (res.head.status / 100 != 2) {
		ctx_err(ctx, "%s", api_response_error(&res));
		api_response_done(&res);
		return cancelled ? -ECANCELED : -EREMOTE;
	}
	const char *id = json_string_value(json_object_get(res.json, "id"));
	if (cancelled) {
		if (id)
			delete_quietly(id);
		api_response_done(&res);
		ctx_err(ctx, "cancelled");
		return -ECANCELED;
	}
	if (!id) {
		api_response_done(&res);
		ctx_err(ctx, "capsemd did not return the new VM's id");
		return -EBADMSG;
	}
	*ret_vm = json_incref(res.json);
	api_response_done(&res);
	return 0;
}

static json_t *tool_create(struct mcp_ctx *ctx, json_t *args)
{
	json_t *body = create_body(args, 1), *vm = NULL;
	if (!body)
		return oom();
	int r = create_vm(ctx, body, &vm);
	json_decref(body);
	if (r < 0)
		return ctx_fail(ctx);
	json_t *res = mcp_result_json(vm);
	return res ? res : oom();
}

static json_t *tool_list(struct mcp_ctx *ctx, json_t *args)
{
	struct api_response res;
	if (ctx_json(ctx, "GET", "/vms", NULL, &res) < 0)
		return ctx_fail(ctx);
	if (!json_is_array(res.json)) {
		api_response_done(&res);
		return mcp_result_error("capsemd sent an unexpected answer (not a JSON array)");
	}
	json_t *o = json_pack("{s:O}", "vms", res.json);
	api_response_done(&res);
	json_t *r = o ? mcp_result_json(o) : NULL;
	return r ? r : oom();
}

/* method path-suffix on the VM named by args.vm; the answer (a JSON object) is the result. */
static json_t *vm_simple(struct mcp_ctx *ctx, json_t *args, const char *method, const char *sfx)
{
	_cleanup_free_ char *path = api_vm_path(arg_str(args, "vm"), sfx);
	struct api_response res;
	if (!path)
		return oom();
	if (ctx_json(ctx, method, path, NULL, &res) < 0)
		return ctx_fail(ctx);
	return object_result(ctx, &res);
}

static json_t *tool_info(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "GET", "");
}

static json_t *tool_stop(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "POST", "/stop");
}

static json_t *tool_start(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "POST", "/start");
}

static json_t *tool_suspend(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "POST", "/suspend");
}

static json_t *tool_resume(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "POST", "/resume");
}

static json_t *tool_delete(struct mcp_ctx *ctx, json_t *args)
{
	return vm_simple(ctx, args, "DELETE", "");
}

/* ---- logs, events ---- */

static json_t *tool_logs(struct mcp_ctx *ctx, json_t *args)
{
	const char *source = arg_str(args, "source");
	json_t *tail = json_object_get(args, "tail");
	_cleanup_free_ char *sfx = NULL, *path = NULL;
	struct api_response res;

	if (asprintf(&sfx, "/logs?source=%s&tail=%lld", source ? source : "serial",
		     tail ? (long long)json_integer_value(tail) : (long long)MCP_LOG_DEFAULT_TAIL) <
		    0 ||
	    !(path = api_vm_path(arg_str(args, "vm"), sfx)))
		return oom();
	if (ctx_json(ctx, "GET", path, NULL, &res) < 0)
		return ctx_fail(ctx);
	json_t *r = buf_len(&res.body) ? mcp_result_text(buf_head(&res.body), buf_len(&res.body))
				       : mcp_result_text("(the log is empty)", 18);
	api_response_done(&res);
	return r ? r : oom();
}

static json_t *tool_events(struct mcp_ctx *ctx, json_t *args)
{
	json_t *kinds = json_object_get(args, "kind"), *limit = json_object_get(args, "limit");
	json_t *since = json_object_get(args, "since"), *k;
	const char *session = arg_str(args, "session");
	char q[512] = "/events";
	size_t n = strlen(q), i;
	struct api_response res;

	json_array_foreach(kinds, i, k)
	{
		n += (size_t)snprintf(q + n, sizeof(q) - n, "%s%s",
				      i ? "," : "?kind=", json_string_value(k));
	}
	if (limit)
		n += (size_t)snprintf(q + n, sizeof(q) - n, "%slimit=%lld", n > 7 ? "&" : "?",
				      (long long)json_integer_value(limit));
	if (since)
		n += (size_t)snprintf(q + n, sizeof(q) - n, "%ssince=%lld", n > 7 ? "&" : "?",
				      (long long)json_integer_value(since));
	if (session) /* the schema's pattern keeps it to hex digits and '-' */
		n += (size_t)snprintf(q + n, sizeof(q) - n, "%ssession=%s", n > 7 ? "&" : "?",
				      session);
	if (n >= sizeof(q))
		return mcp_result_error("event query too long");
	_cleanup_free_ char *path = api_vm_path(arg_str(args, "vm"), q);
	if (!path)
		return oom();
	if (ctx_json(ctx, "GET", path, NULL, &res) < 0)
		return ctx_fail(ctx);
	if (!json_is_array(res.json)) {
		api_response_done(&res);
		return mcp_result_error("capsemd sent an unexpected answer (not a JSON array)");
	}
	json_t *o = json_pack("{s:O}", "events", res.json);
	api_response_done(&res);
	json_t *r = o ? mcp_result_json(o) : NULL;
	return r ? r : oom();
}

/* ---- fork, persist, purge ---- */

/* method path-suffix on the VM named by args.vm with a JSON body; the answer is the result. */
static json_t *vm_with_body(struct mcp_ctx *ctx, json_t *args, const char *sfx, json_t *body)
{
	_cleanup_free_ char *path = api_vm_path(arg_str(args, "vm"), sfx);
	struct api_response res;
	if (!path || !body) {
		json_decref(body);
		return oom();
	}
	int r = ctx_json(ctx, "POST", path, body, &res);
	json_decref(body);
	if (r < 0)
		return ctx_fail(ctx);
	return object_result(ctx, &res);
}

static json_t *tool_fork(struct mcp_ctx *ctx, json_t *args)
{
	json_t *body = json_pack("{s:s}", "image", arg_str(args, "image"));
	const char *desc = arg_str(args, "description");
	if (body && desc)
		json_object_set_new(body, "description", json_string(desc));
	return vm_with_body(ctx, args, "/fork", body);
}

static json_t *tool_persist(struct mcp_ctx *ctx, json_t *args)
{
	return vm_with_body(ctx, args, "/persist",
			    json_pack("{s:s}", "name", arg_str(args, "name")));
}

static json_t *tool_purge(struct mcp_ctx *ctx, json_t *args)
{
	struct api_response res;
	(void)args;
	if (ctx_json(ctx, "POST", "/purge", NULL, &res) < 0)
		return ctx_fail(ctx);
	return object_result(ctx, &res);
}

/* ---- workspace snapshots ---- */

static json_t *tool_snapshots(struct mcp_ctx *ctx, json_t *args)
{
	const char *action = arg_str(args, "action"), *name = arg_str(args, "name");
	const char *snap = arg_str(args, "snapshot"), *path = arg_str(args, "path");
	_cleanup_free_ char *sfx = NULL, *vpath = NULL, *esc = NULL;
	_cleanup_json_ json_t *body = NULL;
	const char *method = "GET";
	struct api_response res;
	int r = 0;

	if (streq(action, "list")) {
		r = asprintf(&sfx, "/snapshots");
	} else if (streq(action, "create")) {
		if (!name)
			return mcp_result_error("create: 'name' is required");
		method = "POST";
		body = json_pack("{s:s}", "name", name);
		r = body ? asprintf(&sfx, "/snapshots") : -1;
	} else if (streq(action, "changes")) {
		esc = snap ? api_escape(snap) : NULL;
		if (snap && !esc)
			return oom();
		r = asprintf(&sfx, "/snapshots/changes%s%s", esc ? "?snap=" : "", esc ? esc : "");
	} else if (streq(action, "revert")) {
		json_t *paths = json_object_get(args, "paths");
		if (!paths)
			return mcp_result_error("revert: 'paths' is required");
		method = "POST";
		body = json_pack("{s:O}", "paths", paths);
		if (body && snap)
			json_object_set_new(body, "from", json_string(snap));
		r = body ? asprintf(&sfx, "/snapshots/revert") : -1;
	} else if (streq(action, "history")) {
		if (!path)
			return mcp_result_error("history: 'path' is required");
		if (!(esc = api_escape(path)))
			return oom();
		r = asprintf(&sfx, "/snapshots/history?path=%s", esc);
	} else if (streq(action, "delete")) {
		if (!name)
			return mcp_result_error("delete: 'name' is required");
		method = "DELETE";
		if (!(esc = api_escape(name)))
			return oom();
		r = asprintf(&sfx, "/snapshots/%s", esc);
	} else { /* compact: the schema allows nothing else */
		method = "POST";
		r = asprintf(&sfx, "/snapshots/compact");
	}
	if (r < 0 || !(vpath = api_vm_path(arg_str(args, "vm"), sfx)))
		return oom();
	if (ctx_json(ctx, method, vpath, body, &res) < 0)
		return ctx_fail(ctx);
	if (streq(action, "delete") && !json_is_object(res.json)) {
		api_response_done(&res);
		json_t *o = json_pack("{s:s, s:b}", "name", name, "deleted", 1);
		json_t *out = o ? mcp_result_json(o) : NULL;
		return out ? out : oom();
	}
	return object_result(ctx, &res);
}

/* ---- files ---- */

static json_t *tool_read_file(struct mcp_ctx *ctx, json_t *args)
{
	const char *gpath = arg_str(args, "path");
	_cleanup_free_ char *q = api_escape(gpath), *sfx = NULL, *path = NULL, *b64 = NULL;
	struct api_response res;

	if (!q || asprintf(&sfx, "/files?path=%s", q) < 0 ||
	    !(path = api_vm_path(arg_str(args, "vm"), sfx)))
		return oom();
	struct api_req rq = { .method = "GET", .path = path, .body_fd = -1, .out_fd = -1 };
	int r = ctx_request(ctx, &rq, &res);
	if (r == -EFBIG)
		return mcp_result_error("%s is larger than %u KiB, the limit of capsem_read_file "
					"(read parts of it with capsem_exec, e.g. head -c)",
					gpath, API_MAX_BODY / 1024);
	if (r < 0)
		return ctx_fail(ctx);
	const uint8_t *p = buf_head(&res.body);
	size_t n = buf_len(&res.body);
	int text = utf8_valid(p, n);
	json_t *content = text ? mcp_text_string(p, n) : NULL;
	if (!text && (b64 = base64_encode(p, n)))
		content = json_string(b64);
	api_response_done(&res);
	if (!content)
		return oom();
	json_t *o = json_pack("{s:s, s:I, s:s, s:o}", "path", gpath, "size", (json_int_t)n,
			      "encoding", text ? "utf-8" : "base64", "content", content);
	json_t *rr = o ? mcp_result_json(o) : NULL;
	return rr ? rr : oom();
}

static json_t *tool_write_file(struct mcp_ctx *ctx, json_t *args)
{
	const char *gpath = arg_str(args, "path"), *enc = arg_str(args, "encoding");
	const char *mode = arg_str(args, "mode");
	json_t *content = json_object_get(args, "content");
	_cleanup_free_ char *q = api_escape(gpath), *sfx = NULL, *path = NULL;
	_cleanup_free_ uint8_t *bytes = NULL;
	const void *body = json_string_value(content);
	size_t len = json_string_length(content);
	struct api_response res;

	if (enc && streq(enc, "base64")) {
		if (base64_decode(json_string_value(content), len, &bytes, &len) < 0)
			return mcp_result_error("content is not valid base64");
		body = bytes;
	}
	if (!mode)
		mode = "0644";
	if (!q || asprintf(&sfx, "/files?path=%s&mode=%s", q, mode) < 0 ||
	    !(path = api_vm_path(arg_str(args, "vm"), sfx)))
		return oom();
	struct api_req rq = { .method = "PUT",
			      .path = path,
			      .content_type = "application/octet-stream",
			      .body = body,
			      .body_len = len,
			      .body_fd = -1,
			      .out_fd = -1 };
	if (ctx_request(ctx, &rq, &res) < 0)
		return ctx_fail(ctx);
	api_response_done(&res);
	json_t *o =
		json_pack("{s:s, s:I, s:s}", "path", gpath, "bytes", (json_int_t)len, "mode", mode);
	json_t *r = o ? mcp_result_json(o) : NULL;
	return r ? r : oom();
}

/* ---- exec ---- */

struct exec_run {
	struct buf out, err;	       /* kept output, each capped at MCP_EXEC_OUTPUT_MAX */
	uint64_t out_total, err_total; /* bytes the command wrote */
	struct proto_exit exit;
	int got_exit;
	uint64_t timeout_ms;
};

static void keep(struct buf *b, uint64_t *total, const uint8_t *p, size_t n)
{
	*total += n;
	(void)buf_append(b, p, MIN(n, buf_room(b)));
}

/* Handle the complete frames in 'in'. 1 once EXIT arrived, 0 for more, <0 with ctx->err. */
static int exec_frames(struct mcp_ctx *ctx, struct buf *in, struct exec_run *er)
{
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	ssize_t k;
	while ((k = proto_frame_parse(buf_head(in), buf_len(in), &type, &pl, &len)) > 0) {
		switch (type) {
		case PROTO_STARTED:
			break;
		case PROTO_STDOUT:
			keep(&er->out, &er->out_total, pl, len);
			break;
		case PROTO_STDERR:
			keep(&er->err, &er->err_total, pl, len);
			break;
		case PROTO_EXIT:
			if (proto_exit_decode(pl, len, &er->exit) < 0)
				goto bad;
			er->got_exit = 1;
			buf_consume(in, (size_t)k);
			return 1;
		case PROTO_ERROR: {
			struct proto_error e;
			if (proto_error_decode(pl, len, &e) < 0)
				goto bad;
			ctx_err(ctx, "the guest agent could not run the command: %s", e.message);
			return -EPROTO;
		}
		default:
			goto bad;
		}
		buf_consume(in, (size_t)k);
	}
	if (k == 0)
		return 0;
bad:
	ctx_err(ctx, "protocol error in the exec stream from the guest");
	return -EBADMSG;
}

/* The STDIN frames: the text of args.stdin in chunks, then the empty frame that closes it. */
static int stdin_frames(json_t *args, struct buf *out)
{
	json_t *in = json_object_get(args, "stdin");
	const char *p = json_string_value(in);
	size_t n = json_string_length(in);
	for (size_t i = 0; i < n; i += PROTO_MAX_DATA) {
		int r = proto_frame_append(out, PROTO_STDIN, p + i, MIN(n - i, PROTO_MAX_DATA));
		if (r < 0)
			return r;
	}
	return proto_frame_append(out, PROTO_STDIN, NULL, 0);
}

/* Run args.command in the VM ref. 0 with er->got_exit, -ECANCELED, or <0 with ctx->err. */
static int exec_in(struct mcp_ctx *ctx, const char *ref, json_t *args, struct exec_run *er)
{
	_cleanup_strv_free_ char **env = NULL;
	const char *ek;
	json_t *ev;
	struct api_response res;
	struct api_conn c;
	struct buf out, in;
	int r;

	json_object_foreach(json_object_get(args, "env"), ek, ev)
	{
		if (strv_pushf(&env, "%s=%s", ek, strempty(json_string_value(ev))) < 0) {
			ctx_err(ctx, "out of memory");
			return -ENOMEM;
		}
	}
	char *argv[] = { (char *)arg_str(args, "command"), NULL };
	struct api_exec ex = { .argv = argv,
			       .shell = 1,
			       .env = env,
			       .cwd = arg_str(args, "cwd"),
			       .timeout_ms = er->timeout_ms,
			       .via = "mcp" };
	r = ctx_open(ctx, &c);
	if (r < 0)
		return r;
	c.intr_fd = ctx->cancel_fd;
	r = api_exec_start(&c, ref, &ex, &res);
	if (r < 0 && r != -EREMOTE) {
		api_conn_close(&c);
		return req_err(ctx, r);
	}
	if (res.head.status != 101) {
		ctx_err(ctx, "%s", api_response_error(&res));
		api_response_done(&res);
		api_conn_close(&c);
		return -EREMOTE;
	}
	api_response_done(&res);

	buf_init(&out, 6u << 20);
	buf_init(&in, PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	r = stdin_frames(args, &out);
	if (r >= 0 && buf_len(&c.rbuf))
		r = buf_append(&in, buf_head(&c.rbuf), buf_len(&c.rbuf));
	if (r < 0) {
		ctx_err(ctx, "stdin or the first frames are too large");
		goto done;
	}
	fd_set_nonblock(c.fd, 1);
	/* the guest enforces the timeout; this is only a backstop if it stops answering */
	int64_t deadline = now_ms() + (int64_t)er->timeout_ms + 30000;
	for (;;) {
		r = exec_frames(ctx, &in, er);
		if (r != 0)
			break;
		struct pollfd pf[2] = {
			{ .fd = c.fd, .events = POLLIN | (buf_len(&out) ? POLLOUT : 0) },
			{ .fd = ctx->cancel_fd, .events = POLLIN },
		};
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			ctx_err(ctx,
				"the guest did not report the command's end %llu s after its "
				"timeout",
				(unsigned long long)30);
			r = -ETIMEDOUT;
			break;
		}
		int n = poll(pf, 2, (int)MIN(left, (int64_t)INT32_MAX));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = negative_errno();
			ctx_err(ctx, "poll: %s", strerror(-r));
			break;
		}
		if (pf[1].revents) {
			/* kill the command's process group, then hang up (the guest kills on EOF
			 * too) */
			struct buf sig;
			buf_init(&sig, 64);
			if (proto_u32_encode(PROTO_SIGNAL, SIGKILL, &sig) == 0)
				(void)send(c.fd, buf_head(&sig), buf_len(&sig),
					   MSG_NOSIGNAL | MSG_DONTWAIT);
			buf_done(&sig, 0);
			ctx_err(ctx, "cancelled");
			r = -ECANCELED;
			break;
		}
		if ((pf[0].revents & POLLOUT) && buf_len(&out)) {
			ssize_t k = send(c.fd, buf_head(&out), buf_len(&out),
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k > 0)
				buf_consume(&out, (size_t)k);
			else if (k < 0 && errno != EAGAIN && errno != EINTR)
				buf_consume(&out, buf_len(&out)); /* the guest stopped reading */
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t *dst = buf_reserve(&in, 65536);
			if (!dst) {
				ctx_err(ctx, "oversized frame in the exec stream from the guest");
				r = -EBADMSG;
				break;
			}
			ssize_t k = read(c.fd, dst, 65536);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k <= 0) {
				r = exec_frames(ctx, &in, er);
				if (r == 0) {
					ctx_err(ctx,
						"the connection to the VM was lost before the "
						"command finished (the VM or capsemd stopped)");
					r = -EPIPE;
				}
				break;
			}
			buf_commit(&in, (size_t)k);
		}
	}
done:
	buf_done(&out, 0);
	buf_done(&in, 0);
	api_conn_close(&c);
	return r < 0 ? r : 0;
}

static uint64_t timeout_arg(json_t *args)
{
	json_t *t = json_object_get(args, "timeout");
	if (!t)
		return MCP_EXEC_DEFAULT_TIMEOUT_MS;
	double s = json_number_value(t);
	uint64_t ms = (uint64_t)(s * 1000.0 + 0.5);
	return ms ? ms : 1;
}

/* Append "name:\n<text>\n" to the human-readable rendering. */
static int render(struct buf *t, const char *name, const struct buf *b, uint64_t total)
{
	char head[160];
	int n;
	if (total > buf_len(b))
		n = snprintf(head, sizeof(head), "%s (truncated: first %zu of %llu bytes):\n", name,
			     buf_len(b), (unsigned long long)total);
	else
		n = snprintf(head, sizeof(head), "%s:\n", name);
	if (buf_append(t, head, (size_t)n) < 0 || buf_append(t, buf_head(b), buf_len(b)) < 0)
		return -ENOMEM;
	if (buf_len(b) && buf_head(b)[buf_len(b) - 1] != '\n')
		return buf_append(t, "\n", 1);
	return 0;
}

/* The result of a finished exec: structuredContent {exit_code, stdout, stderr, timed_out, ...}
 * and a text rendering of the same (what a model reads). */
static json_t *exec_result(const struct exec_run *er, const char *vm)
{
	int status = proto_exit_status(&er->exit);
	int timed_out = er->exit.kind == PROTO_EXIT_TIMEOUT;
	json_t *o = json_pack("{s:i, s:o, s:o, s:b, s:I}", "exit_code", status, "stdout",
			      mcp_text_string(buf_head(&er->out), buf_len(&er->out)), "stderr",
			      mcp_text_string(buf_head(&er->err), buf_len(&er->err)), "timed_out",
			      timed_out, "duration_ms", (json_int_t)(er->exit.wall_us / 1000));
	if (!o)
		return NULL;
	if (er->exit.kind == PROTO_EXIT_SIGNAL)
		json_object_set_new(o, "signal", json_integer(er->exit.code));
	if (er->exit.flags & PROTO_EXIT_OOM)
		json_object_set_new(o, "oom_killed", json_true());
	if (er->out_total > buf_len(&er->out)) {
		json_object_set_new(o, "stdout_truncated", json_true());
		json_object_set_new(o, "stdout_bytes", json_integer((json_int_t)er->out_total));
	}
	if (er->err_total > buf_len(&er->err)) {
		json_object_set_new(o, "stderr_truncated", json_true());
		json_object_set_new(o, "stderr_bytes", json_integer((json_int_t)er->err_total));
	}
	if (vm)
		json_object_set_new(o, "vm", json_string(vm));

	struct buf t;
	char head[200];
	int n;
	buf_init(&t, 3 * MCP_EXEC_OUTPUT_MAX);
	if (timed_out)
		n = snprintf(head, sizeof(head),
			     "exit_code: %d (timed out after %.3g s; the process group was "
			     "killed)\n",
			     status, er->timeout_ms / 1000.0);
	else if (er->exit.kind == PROTO_EXIT_SIGNAL)
		n = snprintf(head, sizeof(head), "exit_code: %d (killed by signal %d%s)\n", status,
			     (int)er->exit.code,
			     er->exit.flags & PROTO_EXIT_OOM ? ", the VM's OOM killer" : "");
	else if (er->exit.flags & PROTO_EXIT_OOM)
		n = snprintf(head, sizeof(head),
			     "exit_code: %d (the VM's OOM killer killed one of its processes)\n",
			     status);
	else
		n = snprintf(head, sizeof(head), "exit_code: %d\n", status);
	json_t *text = NULL;
	if (buf_append(&t, head, (size_t)n) == 0 &&
	    render(&t, "stdout", &er->out, er->out_total) == 0 &&
	    render(&t, "stderr", &er->err, er->err_total) == 0)
		text = mcp_text_string(buf_head(&t), buf_len(&t));
	buf_done(&t, 0);
	json_t *r = text ? json_pack("{s:[{s:s,s:o}], s:o}", "content", "type", "text", "text",
				     text, "structuredContent", o)
			 : NULL;
	if (!text)
		json_decref(o);
	return r;
}

static void exec_run_init(struct exec_run *er, json_t *args)
{
	*er = (struct exec_run){ .timeout_ms = timeout_arg(args) };
	buf_init(&er->out, MCP_EXEC_OUTPUT_MAX);
	buf_init(&er->err, MCP_EXEC_OUTPUT_MAX);
}

static void exec_run_done(struct exec_run *er)
{
	buf_done(&er->out, 0);
	buf_done(&er->err, 0);
}

static json_t *tool_exec(struct mcp_ctx *ctx, json_t *args)
{
	struct exec_run er;
	json_t *r;
	exec_run_init(&er, args);
	if (exec_in(ctx, arg_str(args, "vm"), args, &er) < 0)
		r = ctx_fail(ctx);
	else
		r = exec_result(&er, NULL);
	exec_run_done(&er);
	return r ? r : oom();
}

static json_t *tool_run(struct mcp_ctx *ctx, json_t *args)
{
	json_t *body = create_body(args, 0), *vm = NULL, *r = NULL;
	struct exec_run er;
	if (!body)
		return oom();
	int k = create_vm(ctx, body, &vm);
	json_decref(body);
	if (k < 0)
		return ctx_fail(ctx);
	_cleanup_free_ char *id = strdup(strempty(json_string_value(json_object_get(vm, "id"))));
	json_decref(vm);
	if (!id) {
		return oom(); /* leaks the VM only when out of memory */
	}
	exec_run_init(&er, args);
	k = exec_in(ctx, id, args, &er);
	delete_quietly(id); /* also when the exec failed or was cancelled */
	if (k < 0)
		r = ctx_fail(ctx);
	else
		r = exec_result(&er, id);
	exec_run_done(&er);
	return r ? r : oom();
}

/* ---- the table ---- */

static const struct {
	const char *name;
	mcp_tool_fn run;
} impls[] = {
	{ "capsem_create", tool_create },
	{ "capsem_list", tool_list },
	{ "capsem_info", tool_info },
	{ "capsem_exec", tool_exec },
	{ "capsem_run", tool_run },
	{ "capsem_read_file", tool_read_file },
	{ "capsem_write_file", tool_write_file },
	{ "capsem_stop", tool_stop },
	{ "capsem_start", tool_start },
	{ "capsem_suspend", tool_suspend },
	{ "capsem_resume", tool_resume },
	{ "capsem_delete", tool_delete },
	{ "capsem_fork", tool_fork },
	{ "capsem_persist", tool_persist },
	{ "capsem_purge", tool_purge },
	{ "capsem_logs", tool_logs },
	{ "capsem_events", tool_events },
	{ "capsem_snapshots", tool_snapshots },
};

static struct mcp_tool table[ELEMENTSOF(impls)];
static size_t n_table;
static json_t *tools_root;

void mcp_tools_done(void)
{
	json_decref(tools_root);
	tools_root = NULL;
	n_table = 0;
}

int mcp_tools_init(void)
{
	json_error_t je;
	json_t *e;
	size_t i;

	if (tools_root)
		return 0;
	tools_root = json_loadb(mcp_tools_json, mcp_tools_json_len, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_array(tools_root) || json_array_size(tools_root) != ELEMENTSOF(impls))
		goto bad;
	json_array_foreach(tools_root, i, e)
	{
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *schema = json_object_get(e, "inputSchema");
		if (!name || !json_is_object(schema) ||
		    !json_is_string(json_object_get(e, "description")))
			goto bad;
		size_t j;
		for (j = 0; j < ELEMENTSOF(impls); j++)
			if (streq(impls[j].name, name))
				break;
		if (j == ELEMENTSOF(impls) || mcp_tool_find(name))
			goto bad;
		table[n_table++] = (struct mcp_tool){
			.name = name, .def = e, .schema = schema, .run = impls[j].run
		};
	}
	return 0;
bad:
	mcp_tools_done();
	return -EINVAL;
}

const struct mcp_tool *mcp_tools(size_t *ret_n)
{
	*ret_n = n_table;
	return table;
}

const struct mcp_tool *mcp_tool_find(const char *name)
{
	for (size_t i = 0; i < n_table; i++)
		if (streq(table[i].name, name))
			return &table[i];
	return NULL;
}

json_t *mcp_tools_list(void)
{
	return tools_root ? json_deep_copy(tools_root) : NULL;
}
