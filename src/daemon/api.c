/* api.c - capsemd's routes (docs/API.md): VMs (create, list, info, stop, start, restart,
 * persist, delete, purge, logs, files, exec upgrade), images (list, delete), version and
 * health; the snapshot routes are snapapi.c's.
 *
 * Trust boundary: API clients. Paths, query strings and JSON bodies are validated here (with
 * vmspec.c for VM shapes and commands) before anything reaches vmctl or a guest; the JSON
 * nesting is checked before jansson parses a body. Answers that need a VM to boot or stop are
 * sent from vmctl's waiter callbacks. Thread: the loop.
 */
#include "api.h"
#include "policyapi.h"
#include "uiapi.h"
#include "fork.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "fdutil.h"
#include "gexec.h"
#include "home.h"
#include "images.h"
#include "ledgerapi.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "proto.h"
#include "snapapi.h"

#define FILES_MAX (256ull << 20)
#define LOG_MAX (8u << 20)
#define REF_MAX 64

/* ---- helpers ---- */

static void reply_vm(struct httpd_conn *c, int status, const struct vm *vm)
{
	httpd_reply_json(c, status, vm_to_json(vm));
}

static void reply_deleted(struct httpd_conn *c, const char *id)
{
	httpd_reply_json(c, 200, json_pack("{s:s}", "deleted", id));
}

json_t *api_body_json(struct httpd_conn *c, const struct buf *body)
{
	json_error_t err;
	if (buf_len(body) == 0)
		return json_object();
	if (http_json_depth_check(buf_head(body), buf_len(body), HTTP_MAX_JSON_DEPTH) < 0) {
		httpd_reply_error(c, 400, "bad_request", "JSON nested deeper than %u",
				  HTTP_MAX_JSON_DEPTH);
		return NULL;
	}
	json_t *j = json_loadb((const char *)buf_head(body), buf_len(body), JSON_REJECT_DUPLICATES,
			       &err);
	if (!j)
		httpd_reply_error(c, 400, "bad_request", "malformed JSON: %s (line %d)", err.text,
				  err.line);
	return j;
}

/* Look up {ref}; answers 404/400 itself and returns NULL when it is not one VM. */
static struct vm *find_vm(struct api *a, struct httpd_conn *c, const char *ref)
{
	struct vm *vm = NULL;
	_cleanup_free_ char *cands = NULL;
	int r = vmctl_resolve(a->vms, ref, &vm, &cands);
	if (r == -EADDRNOTAVAIL)
		httpd_reply_error(c, 400, "bad_request", "'%s' is ambiguous: %s", ref,
				  strempty(cands));
	else if (r < 0)
		httpd_reply_error(c, 404, "not_found", "no VM '%s'", ref);
	return r < 0 ? NULL : vm;
}

static int ref_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > REF_MAX)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '.' || *p == '-'))
			return 0;
	return 1;
}

static void reply_boot_failure(struct httpd_conn *c, const struct vm *vm)
{
	const struct vm_record *r = vm_record(vm);
	const char *tail = vm_serial_tail(vm);
	httpd_reply_error(
		c, 503, "vm_failed", "%s%s%s", r->error ? r->error : "the VM did not start",
		tail && *tail ? "\n--- last serial console lines ---\n" : "", tail ? tail : "");
}

/* ---- waiter callbacks ---- */

static void on_ready_created(struct vm *vm, int ok, void *ud)
{
	if (ok)
		reply_vm(ud, 201, vm);
	else
		reply_boot_failure(ud, vm);
}

static void on_ready(struct vm *vm, int ok, void *ud)
{
	if (ok)
		reply_vm(ud, 200, vm);
	else
		reply_boot_failure(ud, vm);
}

static void on_stopped(struct vm *vm, int ok, void *ud)
{
	const struct vm_record *r = vm_record(vm);
	if (!r->persistent)
		reply_deleted(ud, r->id);
	else
		reply_vm(ud, 200, vm);
}

static void on_stopped_deleted(struct vm *vm, int ok, void *ud)
{
	reply_deleted(ud, vm_record(vm)->id);
}

static void on_stopped_restart(struct vm *vm, int ok, void *ud)
{
	int r = vm_start(vm, on_ready, ud);
	if (r < 0)
		httpd_reply_error(ud, 409, "conflict", "cannot start the VM again: %s",
				  strerror(-r));
}

/* ---- routes ---- */

static void route_version(struct httpd_conn *c)
{
	httpd_reply_json(c, 200,
			 json_pack("{s:s, s:i, s:i}", "version", CAPSEM_VERSION, "protocol",
				   PROTO_VERSION, "api", 1));
}

static void route_health(struct api *a, struct httpd_conn *c)
{
	httpd_reply_json(c, 200,
			 json_pack("{s:b, s:I}", "ok", 1, "vms", (json_int_t)vmctl_count(a->vms)));
}

static void route_list(struct api *a, struct httpd_conn *c)
{
	json_t *arr = json_array();
	for (struct vm *vm = vmctl_first(a->vms); vm && arr; vm = vmctl_next(vm))
		json_array_append_new(arr, vm_to_json(vm));
	httpd_reply_json(c, 200, arr);
}

static void route_create(struct api *a, struct httpd_conn *c, const struct buf *body)
{
	_cleanup_free_ char *err = NULL;
	struct vm_spec spec;
	struct vm *vm;
	json_t *j = api_body_json(c, body);
	if (!j)
		return;
	/* no image named: the full image once it is installed, else the minimal one */
	if (json_is_object(j) && !json_object_get(j, "image"))
		json_object_set_new(j, "image",
				    json_string(images_default(vmctl_images_dir(a->vms))));
	int r = vmspec_from_json(j, &spec, &err);
	json_decref(j);
	if (r == -ENOMEM) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	if (r < 0) {
		httpd_reply_error(c, 400, "bad_request", "%s", strempty(err));
		return;
	}
	if (spec.name && vmctl_name_taken(a->vms, spec.name)) {
		httpd_reply_error(c, 409, "name_taken", "a VM named '%s' already exists",
				  spec.name);
		vmspec_done(&spec);
		return;
	}
	r = vmctl_create(a->vms, &spec, on_ready_created, c, &vm);
	vmspec_done(&spec);
	if (r == -EEXIST)
		httpd_reply_error(c, 409, "name_taken", "the name is taken");
	else if (r < 0)
		httpd_reply_error(c, 500, "internal", "cannot create the VM: %s", strerror(-r));
}

static void route_images(struct api *a, struct httpd_conn *c)
{
	json_t *arr = images_list(vmctl_images_dir(a->vms), a->vms);
	if (!arr)
		httpd_reply_error(c, 500, "internal", "out of memory");
	else
		httpd_reply_json(c, 200, arr);
}

static void route_image_delete(struct api *a, struct httpd_conn *c, const char *name)
{
	_cleanup_free_ char *users = NULL;
	int r = images_delete(vmctl_images_dir(a->vms), name, a->vms, &users);
	if (r == 0)
		httpd_reply_json(c, 200, json_pack("{s:s}", "deleted", name));
	else if (r == -ENOENT || r == -EINVAL)
		httpd_reply_error(c, 404, "not_found", "no image '%s'", name);
	else if (r == -EBUSY)
		httpd_reply_error(c, 409, "image_in_use", "image '%s' is used by running VMs: %s",
				  name, strempty(users));
	else if (r == -ENOTEMPTY)
		httpd_reply_error(c, 409, "image_in_use",
				  "image '%s' is the base of fork images: %s (remove them first)",
				  name, strempty(users));
	else if (r == -EPERM)
		httpd_reply_error(c, 403, "system_image",
				  "image '%s' is the package's (%s): it goes with the package",
				  name, capsem_system_images_dir());
	else
		httpd_reply_error(c, 500, "internal", "cannot delete image '%s': %s", name,
				  strerror(-r));
}

static void route_stop(struct httpd_conn *c, struct vm *vm)
{
	int r = vm_stop(vm, on_stopped, c);
	if (r == -ENOTCONN)
		httpd_reply_error(c, 409, "not_running", "the VM is %s",
				  registry_state_name(vm_record(vm)->state));
	else if (r < 0)
		httpd_reply_error(c, 500, "internal", "%s", strerror(-r));
}

static void route_start(struct httpd_conn *c, struct vm *vm)
{
	const struct vm_record *rec = vm_record(vm);
	if (rec->state == VM_STOPPING) {
		httpd_reply_error(c, 409, "conflict", "the VM is stopping");
		return;
	}
	if (rec->state == VM_RUNNING || rec->state == VM_CREATING) {
		httpd_reply_error(c, 409, "already_running", "the VM is already %s",
				  registry_state_name(rec->state));
		return;
	}
	int r = vm_start(vm, on_ready, c);
	if (r < 0)
		httpd_reply_error(c, 409, "conflict", "cannot start the VM: %s", strerror(-r));
}

static void on_suspended(struct vm *vm, int ok, void *ud)
{
	if (ok)
		reply_vm(ud, 200, vm);
	else
		httpd_reply_error(ud, 409, "suspend_failed", "%s",
				  vm_suspend_error(vm)	 ? vm_suspend_error(vm)
				  : vm_record(vm)->error ? vm_record(vm)->error
							 : "the suspend failed");
}

static void route_suspend(struct httpd_conn *c, struct vm *vm)
{
	const struct vm_record *rec = vm_record(vm);
	int r = vm_suspend(vm, on_suspended, c);
	if (r == -ENOTCONN)
		httpd_reply_error(c, 409, "not_running", "the VM is %s",
				  registry_state_name(rec->state));
	else if (r == -EPERM)
		httpd_reply_error(c, 409, "cannot_suspend", "this VM cannot be suspended: %s",
				  !rec->persistent ? VMSPEC_SUSPEND_EPHEMERAL
						   : VMSPEC_SUSPEND_SHARED);
	else if (r == -EALREADY)
		httpd_reply_error(c, 409, "conflict",
				  "the VM is already being suspended or stopped");
	else if (r < 0)
		httpd_reply_error(c, 500, "internal", "%s", strerror(-r));
}

static void route_resume(struct httpd_conn *c, struct vm *vm)
{
	const struct vm_record *rec = vm_record(vm);
	if (rec->state != VM_SUSPENDED) {
		httpd_reply_error(c, 409, "not_suspended", "the VM is %s",
				  registry_state_name(rec->state));
		return;
	}
	route_start(c, vm);
}

static void route_restart(struct httpd_conn *c, struct vm *vm)
{
	const struct vm_record *rec = vm_record(vm);
	if (!rec->persistent) {
		httpd_reply_error(c, 409, "conflict",
				  "an ephemeral VM is deleted when it stops: persist it first");
		return;
	}
	if (rec->state == VM_STOPPED || rec->state == VM_CRASHED) {
		route_start(c, vm);
		return;
	}
	int r = vm_stop(vm, on_stopped_restart, c);
	if (r < 0)
		httpd_reply_error(c, 409, "conflict", "cannot restart the VM: %s", strerror(-r));
}

static void route_persist(struct api *a, struct httpd_conn *c, struct vm *vm,
			  const struct buf *body)
{
	json_t *j = api_body_json(c, body);
	if (!j)
		return;
	json_t *n = json_object_get(j, "name");
	const char *name = json_string_value(n);
	if (!json_is_object(j) || json_object_size(j) != 1 || !name ||
	    strlen(name) != json_string_length(n) || !vmspec_name_valid(name)) {
		httpd_reply_error(
			c, 400, "bad_request",
			"expected {\"name\": NAME} with NAME of [a-z0-9][a-z0-9_.-]{0,62}");
	} else if (vm_record(vm)->persistent) {
		httpd_reply_error(c, 409, "conflict", "the VM is already persistent (named '%s')",
				  strempty(vm_record(vm)->spec.name));
	} else if (vmctl_name_taken(a->vms, name)) {
		httpd_reply_error(c, 409, "name_taken", "a VM named '%s' already exists", name);
	} else {
		int r = vm_persist(vm, name);
		if (r < 0)
			httpd_reply_error(c, 500, "internal", "%s", strerror(-r));
		else
			reply_vm(c, 200, vm);
	}
	json_decref(j);
}

static void route_delete(struct httpd_conn *c, struct vm *vm)
{
	char id[REGISTRY_ID_LEN + 1];
	memcpy(id, vm_record(vm)->id, sizeof(id));
	enum vm_state st = vm_record(vm)->state;
	if (st == VM_STOPPED || st == VM_CRASHED || st == VM_SUSPENDED) {
		int r = vm_delete(vm);
		if (r < 0)
			httpd_reply_error(c, 500, "internal", "cannot delete the VM: %s",
					  strerror(-r));
		else
			reply_deleted(c, id);
		return;
	}
	vm_delete_when_stopped(vm);
	int r = vm_stop(vm, on_stopped_deleted, c);
	if (r < 0)
		httpd_reply_error(c, 500, "internal", "cannot stop the VM: %s", strerror(-r));
}

/* POST /purge: every ephemeral VM and every stopped/crashed one; answered when all are gone. */
struct purge {
	struct httpd_conn *c;
	json_t *ids;
	int pending;
};

static void purge_done(struct purge *p)
{
	if (p->pending > 0)
		return;
	httpd_reply_json(p->c, 200, json_pack("{s:o}", "deleted", p->ids));
	free(p);
}

static void on_purge_stopped(struct vm *vm, int ok, void *ud)
{
	struct purge *p = ud;
	json_array_append_new(p->ids, json_string(vm_record(vm)->id));
	p->pending--;
	purge_done(p);
}

static void route_purge(struct api *a, struct httpd_conn *c)
{
	struct purge *p = calloc(1, sizeof(*p));
	if (!p || !(p->ids = json_array())) {
		free(p);
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	p->c = c;
	p->pending = 1; /* held until the loop below is done */
	struct vm *next;
	for (struct vm *vm = vmctl_first(a->vms); vm; vm = next) {
		next = vmctl_next(vm);
		const struct vm_record *r = vm_record(vm);
		if (r->state == VM_STOPPED || r->state == VM_CRASHED) {
			char id[REGISTRY_ID_LEN + 1];
			memcpy(id, r->id, sizeof(id));
			if (vm_delete(vm) == 0)
				json_array_append_new(p->ids, json_string(id));
		} else if (!r->persistent) {
			vm_delete_when_stopped(vm);
			if (vm_stop(vm, on_purge_stopped, p) == 0)
				p->pending++;
		}
	}
	p->pending--;
	purge_done(p);
}

/* Keep, in place, the lines written by the guest's capsem-init and capsem-agent. Returns the new
 * length. */
static size_t keep_agent_lines(char *text, size_t len)
{
	size_t out = 0, i = 0;
	while (i < len) {
		char *nl = memchr(text + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - text) + 1 : len;
		size_t n = end - i;
		if (memmem(text + i, n, "capsem-init", 11) ||
		    memmem(text + i, n, "capsem-agent", 12)) {
			memmove(text + out, text + i, n);
			out += n;
		}
		i = end;
	}
	return out;
}

static void route_logs(struct httpd_conn *c, struct vm *vm, const char *query)
{
	_cleanup_free_ char *source = NULL, *tail = NULL, *path = NULL, *text = NULL;
	uint64_t n = 0;
	size_t len = 0;
	int r = http_query_get(query, "source", &source);
	if (r == -ENOENT && !(source = strdup("serial"))) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	if (r == -EBADMSG || (!streq(source, "serial") && !streq(source, "vm") &&
			      !streq(source, "qemu") && !streq(source, "agent"))) {
		httpd_reply_error(c, 400, "bad_request",
				  "source: expected serial, agent, vm or qemu");
		return;
	}
	/* the guest's init and agent log to the console: "agent" is their lines of the serial log */
	int agent_only = streq(source, "agent");
	r = http_query_get(query, "tail", &tail);
	if (r == -EBADMSG || (r == 0 && (parse_u64(tail, &n) < 0 || n > 1000000))) {
		httpd_reply_error(c, 400, "bad_request", "tail: expected a number of lines");
		return;
	}
	if (asprintf(&path, "%s/%s.log", vm_record(vm)->vmdir, agent_only ? "serial" : source) <
	    0) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	/* the serial log is capped at 4 MiB by capsem-vm; read at most the last LOG_MAX bytes */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		off_t off = st.st_size > (off_t)LOG_MAX ? st.st_size - (off_t)LOG_MAX : 0;
		size_t want = (size_t)(st.st_size - off);
		text = malloc(want + 1);
		if (text) {
			ssize_t k = pread(fd, text, want, off);
			len = k > 0 ? (size_t)k : 0;
		}
	}
	if (text && agent_only)
		len = keep_agent_lines(text, len);
	const char *start = text ? text : "";
	if (text && n > 0) {
		size_t lines = 0, i = len;
		if (i > 0 && text[i - 1] == '\n')
			i--;
		while (i > 0) {
			if (text[i - 1] == '\n' && ++lines == n)
				break;
			i--;
		}
		start = text + i;
		len -= i;
	}
	httpd_reply(c, 200, "text/plain; charset=utf-8", (void *)start, text ? len : 0, NULL);
}

/* files: GET runs `cat PATH`, PUT runs `cat > PATH && chmod MODE PATH` in the guest */
static void on_file_got(struct gexec_result *res, void *ud)
{
	struct httpd_conn *c = ud;
	if (!res->ok) {
		httpd_reply_error(c, 503, "vm_failed", "%s", strempty(res->error));
		return;
	}
	if (res->exit.kind != PROTO_EXIT_CODE || res->exit.code != 0) {
		buf_append(&res->err, "", 1);
		httpd_reply_error(c, 404, "not_found", "%s",
				  buf_len(&res->err) > 1 ? (const char *)buf_head(&res->err)
							 : "cannot read the file");
		return;
	}
	/* hand the collected bytes to the response without a copy */
	struct buf out = res->out;
	buf_init(&res->out, 0);
	httpd_reply(c, 200, "application/octet-stream", out.data + out.off, out.len,
		    NULL); /* copies: out.data must be freed from its start */
	buf_done(&out, 0);
}

static void on_file_put(struct gexec_result *res, void *ud)
{
	struct httpd_conn *c = ud;
	if (!res->ok) {
		httpd_reply_error(c, 503, "vm_failed", "%s", strempty(res->error));
		return;
	}
	if (res->exit.kind != PROTO_EXIT_CODE || res->exit.code != 0) {
		buf_append(&res->err, "", 1);
		httpd_reply_error(c, 400, "bad_request", "%s",
				  buf_len(&res->err) > 1 ? (const char *)buf_head(&res->err)
							 : "cannot write the file");
		return;
	}
	httpd_reply(c, 204, "application/octet-stream", NULL, 0, NULL);
}

static void route_files(struct api *a, struct httpd_conn *c, struct vm *vm, const char *method,
			const char *query, struct buf *body)
{
	_cleanup_free_ char *path = NULL, *mode = NULL;
	_cleanup_buf_ struct buf frame = BUF_INIT(PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	_cleanup_buf_ struct buf in = BUF_INIT(0);
	int r = http_query_get(query, "path", &path);
	if (r < 0 || path[0] != '/' || strlen(path) > 4095) {
		httpd_reply_error(c, 400, "bad_request", "path: expected an absolute guest path");
		return;
	}
	if (vm_record(vm)->state != VM_RUNNING) {
		httpd_reply_error(c, 409, "not_running", "the VM is %s",
				  registry_state_name(vm_record(vm)->state));
		return;
	}
	int put = streq(method, "PUT");
	if (put) {
		r = http_query_get(query, "mode", &mode);
		if (r == -ENOENT && !(mode = strdup("0644")))
			r = -ENOMEM;
		else if (r == 0) {
			size_t l = strlen(mode);
			if (l < 3 || l > 4 || strspn(mode, "01234567") != l)
				r = -EINVAL;
		}
		if (r < 0 && r != -ENOENT) {
			httpd_reply_error(c, 400, "bad_request", "mode: expected octal like 0644");
			return;
		}
	}
	char *argv_get[] = { "cat", path, NULL };
	char *argv_put[] = { "cat > \"$1\" && chmod \"$2\" \"$1\"", path, mode, NULL };
	struct proto_exec ex = { .flags = put ? PROTO_EXEC_SHELL : 0,
				 .argc = put ? 3 : 2,
				 .argv = put ? argv_put : argv_get };
	if (proto_exec_encode(&ex, &frame) < 0) {
		httpd_reply_error(c, 400, "bad_request", "path too long");
		return;
	}
	if (put) {
		in = *body;
		buf_init(body, 0);
	}
	r = gexec_run(a->loop, vm_vsock_path(vm), &frame, &in, put ? 0 : FILES_MAX,
		      put ? on_file_put : on_file_got, c);
	if (r < 0)
		httpd_reply_error(c, 503, "vm_failed", "cannot connect to the guest: %s",
				  strerror(-r));
}

static void route_exec(struct api *a, struct httpd_conn *c, struct vm *vm,
		       const struct http_msg *req, const struct buf *body)
{
	_cleanup_free_ char *err = NULL, *via = NULL;
	/* gexec_splice() takes the frame's bytes (and leaves it empty) */
	_cleanup_buf_ struct buf frame = BUF_INIT(PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	if (!req->upgrade || strcasecmp(req->upgrade, "capsem-exec/1") != 0) {
		httpd_reply_error(
			c, 400, "bad_request",
			"exec needs \"Connection: Upgrade\" and \"Upgrade: capsem-exec/1\"");
		return;
	}
	/* who asked, for the session ledger: ?via=cli|api|mcp (default api) */
	int r = http_query_get(req->query, "via", &via);
	if (r == -EBADMSG ||
	    (r == 0 && !streq(via, "cli") && !streq(via, "api") && !streq(via, "mcp"))) {
		httpd_reply_error(c, 400, "bad_request", "via: expected cli, api or mcp");
		return;
	}
	json_t *j = api_body_json(c, body);
	if (!j)
		return;
	r = vmspec_exec_frame(j, vm_record(vm)->spec.env, &frame, &err);
	json_decref(j);
	if (r < 0) {
		httpd_reply_error(c, 400, "bad_request", "%s", err ? err : "out of memory");
		return;
	}
	if (vm_record(vm)->state != VM_RUNNING) {
		httpd_reply_error(c, 409, "not_running", "the VM is %s",
				  registry_state_name(vm_record(vm)->state));
		return;
	}
	gexec_splice(a->loop, vm_vsock_path(vm), via ? via : "api", &frame, c);
}

/* ---- dispatch ---- */

/* Split "/vms/web/stop" into at most 4 segments. Returns the count, -1 when malformed. */
static int split_path(char *p, char **seg, int max)
{
	int n = 0;
	if (*p != '/')
		return -1;
	p++;
	if (!*p)
		return 0;
	while (n < max) {
		seg[n++] = p;
		char *s = strchr(p, '/');
		if (!s)
			return n;
		*s = 0;
		p = s + 1;
		if (!*p)
			return n; /* a trailing slash */
	}
	return -1;
}

uint64_t api_body_cap(const struct http_msg *req, void *userdata)
{
	if (streq(req->method, "PUT") && strncmp(req->path, "/vms/", 5) == 0 &&
	    strlen(req->path) > 11 && streq(req->path + strlen(req->path) - 6, "/files"))
		return FILES_MAX;
	return HTTP_MAX_BODY;
}

void api_handle(struct httpd_conn *c, const struct http_msg *req, struct buf *body, void *userdata)
{
	struct api *a = userdata;
	const char *m = req->method;
	char *seg[4];
	_cleanup_free_ char *path = strdup(req->path);
	if (!path) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	int n = split_path(path, seg, 4);
	log_debug("%s %s", m, req->target);

#define METHOD(want)                                                                           \
	do {                                                                                   \
		if (!streq(m, want)) {                                                         \
			httpd_reply_error(c, 405, "method_not_allowed", "use %s for %s", want, \
					  req->path);                                          \
			return;                                                                \
		}                                                                              \
	} while (0)

	if (n == 1 && streq(seg[0], "version")) {
		METHOD("GET");
		route_version(c);
	} else if (n == 1 && streq(seg[0], "health")) {
		METHOD("GET");
		route_health(a, c);
	} else if (n == 1 && streq(seg[0], "status")) {
		METHOD("GET");
		uiapi_status(a, c, req->query);
	} else if (n == 1 && streq(seg[0], "policy")) {
		METHOD("GET");
		policyapi_show(a, c);
	} else if (n == 2 && streq(seg[0], "policy") && streq(seg[1], "check")) {
		METHOD("POST");
		policyapi_check(a, c, body);
	} else if (n == 1 && streq(seg[0], "settings")) {
		METHOD("GET");
		uiapi_settings(a, c);
	} else if (n == 1 && streq(seg[0], "gateway")) {
		METHOD("POST");
		uiapi_gateway(a, c);
	} else if (n == 1 && streq(seg[0], "purge")) {
		METHOD("POST");
		route_purge(a, c);
	} else if (n == 1 && streq(seg[0], "sessions")) {
		METHOD("GET");
		ledgerapi_sessions(a, c, req->query);
	} else if ((n == 2 || (n == 3 && streq(seg[2], "events"))) && streq(seg[0], "sessions") &&
		   ref_valid(seg[1])) {
		METHOD("GET");
		ledgerapi_session(a, c, seg[1], n == 3, req->query);
	} else if (n == 1 && streq(seg[0], "images")) {
		METHOD("GET");
		route_images(a, c);
	} else if (n == 2 && streq(seg[0], "images") && ref_valid(seg[1])) {
		METHOD("DELETE");
		route_image_delete(a, c, seg[1]);
	} else if (n == 1 && streq(seg[0], "vms")) {
		if (streq(m, "GET"))
			route_list(a, c);
		else if (streq(m, "POST"))
			route_create(a, c, body);
		else
			httpd_reply_error(c, 405, "method_not_allowed", "use GET or POST for /vms");
	} else if ((n == 3 || n == 4) && streq(seg[0], "vms") && ref_valid(seg[1]) &&
		   streq(seg[2], "snapshots")) {
		struct vm *vm = find_vm(a, c, seg[1]);
		if (vm)
			snapapi_handle(a, c, vm, m, n == 4 ? seg[3] : NULL, req->query, body);
	} else if ((n == 2 || n == 3) && streq(seg[0], "vms") && ref_valid(seg[1])) {
		const char *act = n == 3 ? seg[2] : NULL;
		static const char *const acts[] = { "stop",    "start", "restart",  "persist",
						    "logs",    "files", "exec",	    "events",
						    "fork",    "stats", "activity", "tree",
						    "suspend", "resume" };
		int known = !act;
		for (size_t i = 0; act && i < ELEMENTSOF(acts); i++)
			known |= streq(act, acts[i]);
		if (!known) {
			httpd_reply_error(c, 404, "not_found", "no route %s", req->path);
			return;
		}
		/* the method is checked before the VM is looked up */
		if (!act) {
			if (!streq(m, "GET") && !streq(m, "DELETE")) {
				httpd_reply_error(c, 405, "method_not_allowed",
						  "use GET or DELETE for %s", req->path);
				return;
			}
		} else if (streq(act, "logs") || streq(act, "events") || streq(act, "stats") ||
			   streq(act, "activity") || streq(act, "tree")) {
			METHOD("GET");
		} else if (streq(act, "files")) {
			if (!streq(m, "GET") && !streq(m, "PUT")) {
				httpd_reply_error(c, 405, "method_not_allowed",
						  "use GET or PUT for %s", req->path);
				return;
			}
		} else {
			METHOD("POST");
		}
		if (act && streq(act, "events")) {
			/* a VM the daemon no longer knows is looked up among the sessions */
			struct vm *vm = NULL;
			_cleanup_free_ char *cands = NULL;
			int r = vmctl_resolve(a->vms, seg[1], &vm, &cands);
			if (r == -EADDRNOTAVAIL)
				httpd_reply_error(c, 400, "bad_request", "'%s' is ambiguous: %s",
						  seg[1], strempty(cands));
			else
				ledgerapi_vm_events(a, c, r == 0 ? vm : NULL, seg[1], req->query);
			return;
		}
		struct vm *vm = find_vm(a, c, seg[1]);
		if (!vm)
			return;
		if (!act && streq(m, "GET"))
			reply_vm(c, 200, vm);
		else if (!act)
			route_delete(c, vm);
		else if (streq(act, "stop"))
			route_stop(c, vm);
		else if (streq(act, "start"))
			route_start(c, vm);
		else if (streq(act, "restart"))
			route_restart(c, vm);
		else if (streq(act, "suspend"))
			route_suspend(c, vm);
		else if (streq(act, "resume"))
			route_resume(c, vm);
		else if (streq(act, "persist"))
			route_persist(a, c, vm, body);
		else if (streq(act, "logs"))
			route_logs(c, vm, req->query);
		else if (streq(act, "files"))
			route_files(a, c, vm, m, req->query, body);
		else if (streq(act, "fork"))
			fork_route(a, c, vm, body);
		else if (streq(act, "stats"))
			uiapi_vm_stats(a, c, vm, req->query);
		else if (streq(act, "activity"))
			uiapi_vm_activity(a, c, vm, req->query);
		else if (streq(act, "tree"))
			uiapi_vm_tree(a, c, vm);
		else
			route_exec(a, c, vm, req, body);
	} else {
		httpd_reply_error(c, 404, "not_found", "no route %s", req->path);
	}
#undef METHOD
}
