/* vmspec.c - validation of what API callers ask for: VM shapes (POST /vms) and commands
 * (POST /vms/{ref}/exec), before anything is created or sent to a guest.
 *
 * Trust boundary: the JSON comes from an API client; every field is type-checked, ranged and
 * charset-checked here, and unknown fields are refused (a typo must not silently become a
 * default). Pure functions (one stat() for mount sources); any thread.
 */
#include "vmspec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"
#include "parse.h"
#include "proto.h"
#include "strv.h"

#define MEM_MIN_MIB ((uint64_t)VM_MEMORY_MIN_MIB)
#define MEM_MAX_MIB ((uint64_t)VM_MEMORY_MAX_MIB)
#define DISK_MIN_MIB ((uint64_t)VM_DISK_MIN_MIB)
#define DISK_MAX_MIB ((uint64_t)VM_DISK_MAX_MIB)
#define PATH_MAX_LEN 4095u

static int fail(char **ret_error, const char *fmt, ...) _printf_(2, 3);
static int fail(char **ret_error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(ret_error, fmt, ap) < 0)
		*ret_error = NULL;
	va_end(ap);
	return -EINVAL;
}

int vmspec_name_valid(const char *n)
{
	size_t l = strlen(n);
	if (l == 0 || l > VMSPEC_NAME_MAX)
		return 0;
	if (!((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9')))
		return 0;
	for (size_t i = 1; i < l; i++) {
		char c = n[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

int vmspec_env_valid(const char *s, size_t len)
{
	if (len == 0 || len > PROTO_MAX_STR || strlen(s) != len)
		return 0;
	const char *eq = strchr(s, '=');
	if (!eq || eq == s)
		return 0;
	for (const char *c = s; c < eq; c++) {
		int ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || *c == '_' ||
			 (c > s && *c >= '0' && *c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

int vmspec_guest_path_valid(const char *s, size_t len)
{
	if (len < 2 || len > PATH_MAX_LEN || strlen(s) != len || s[0] != '/')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("_./+@-", c)))
			return 0;
	}
	/* no "." / ".." components, no empty components except a trailing slash */
	const char *p = s;
	while (*p) {
		while (*p == '/')
			p++;
		const char *e = strchr(p, '/');
		size_t cl = e ? (size_t)(e - p) : strlen(p);
		if ((cl == 1 && p[0] == '.') || (cl == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		p += cl;
	}
	return 1;
}

/* A host path for a mount or the workspace: absolute, printable, no ',' or ':' (they separate
 * fields on the capsem-vm and QEMU command lines), an existing directory. */
static int host_dir_check(const char *field, const char *s, size_t len, char **ret_error)
{
	struct stat st;
	if (len < 1 || len > PATH_MAX_LEN || strlen(s) != len || s[0] != '/')
		return fail(ret_error, "%s: host path must be absolute", field);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == ',' || c == ':')
			return fail(ret_error,
				    "%s: host path may not contain ',', ':' or control "
				    "characters",
				    field);
	}
	if (stat(s, &st) < 0 || !S_ISDIR(st.st_mode))
		return fail(ret_error, "%s: host path %s is not an existing directory", field, s);
	return 0;
}

static int parse_mib(const json_t *v, const char *field, uint64_t lo, uint64_t hi, uint64_t *ret,
		     char **ret_error)
{
	uint64_t mib;
	if (json_is_integer(v)) {
		json_int_t x = json_integer_value(v);
		if (x < 0)
			return fail(ret_error, "%s: must not be negative", field);
		mib = (uint64_t)x;
	} else if (json_is_string(v)) {
		uint64_t bytes;
		const char *s = json_string_value(v);
		if (strlen(s) != json_string_length(v) || parse_size(s, &bytes) < 0)
			return fail(ret_error, "%s: expected a size like \"512M\" or \"2G\"",
				    field);
		if (bytes % (1024 * 1024))
			return fail(ret_error, "%s: must be a whole number of MiB", field);
		mib = bytes >> 20;
	} else {
		return fail(ret_error, "%s: expected a size string or a number of MiB", field);
	}
	if (mib < lo || mib > hi)
		return fail(ret_error, "%s: must be between %llu MiB and %llu MiB", field,
			    (unsigned long long)lo, (unsigned long long)hi);
	*ret = mib;
	return 0;
}

void vmspec_done(struct vm_spec *s)
{
	free(s->name);
	free(s->image);
	strv_free(s->env);
	for (size_t i = 0; i < s->n_mounts; i++) {
		free(s->mounts[i].host);
		free(s->mounts[i].guest);
	}
	free(s->mounts);
	free(s->workspace);
	*s = (struct vm_spec){ 0 };
}

int vmspec_copy(const struct vm_spec *s, struct vm_spec *ret)
{
	struct vm_spec c = { .cpus = s->cpus,
			     .memory_mib = s->memory_mib,
			     .disk_mib = s->disk_mib,
			     .suspendable = s->suspendable,
			     .no_ws_audit = s->no_ws_audit };
	int bad = 0;
	if (s->name && !(c.name = strdup(s->name)))
		bad = 1;
	if (s->image && !(c.image = strdup(s->image)))
		bad = 1;
	if (s->workspace && !(c.workspace = strdup(s->workspace)))
		bad = 1;
	for (size_t i = 0; s->env && s->env[i]; i++)
		bad |= strv_push(&c.env, s->env[i]) < 0;
	if (s->n_mounts) {
		c.mounts = calloc(s->n_mounts, sizeof(*c.mounts));
		bad |= !c.mounts;
		for (size_t i = 0; c.mounts && i < s->n_mounts; i++) {
			c.mounts[i].host = strdup(s->mounts[i].host);
			c.mounts[i].guest = strdup(s->mounts[i].guest);
			c.mounts[i].ro = s->mounts[i].ro;
			c.n_mounts++;
			bad |= !c.mounts[i].host || !c.mounts[i].guest;
		}
	}
	if (bad) {
		vmspec_done(&c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

static int parse_env(const json_t *v, char ***ret, char **ret_error)
{
	size_t i;
	json_t *e;
	_cleanup_strv_free_ char **env = NULL;
	if (!json_is_array(v))
		return fail(ret_error, "env: expected an array of \"KEY=VALUE\" strings");
	if (json_array_size(v) > VMSPEC_MAX_ENV)
		return fail(ret_error, "env: at most %u entries", VMSPEC_MAX_ENV);
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e) ||
		    !vmspec_env_valid(json_string_value(e), json_string_length(e)))
			return fail(ret_error, "env[%zu]: expected \"KEY=VALUE\"", i);
		if (strv_push(&env, json_string_value(e)) < 0)
			return -ENOMEM;
	}
	*ret = TAKE_PTR(env);
	return 0;
}

static int parse_mounts(const json_t *v, struct vm_spec *s, char **ret_error)
{
	size_t i;
	json_t *m;
	if (!json_is_array(v))
		return fail(ret_error, "mounts: expected an array of {\"host\", \"guest\"}");
	if (json_array_size(v) > VMSPEC_MAX_MOUNTS)
		return fail(ret_error, "mounts: at most %u", VMSPEC_MAX_MOUNTS);
	if (json_array_size(v) == 0)
		return 0;
	s->mounts = calloc(json_array_size(v), sizeof(*s->mounts));
	if (!s->mounts)
		return -ENOMEM;
	json_array_foreach(v, i, m)
	{
		const char *k;
		json_t *f;
		if (!json_is_object(m))
			return fail(ret_error, "mounts[%zu]: expected an object", i);
		json_object_foreach((json_t *)m, k, f)
		{
			if (!streq(k, "host") && !streq(k, "guest") && !streq(k, "ro"))
				return fail(ret_error, "mounts[%zu]: unknown field \"%s\"", i, k);
		}
		json_t *h = json_object_get(m, "host"), *g = json_object_get(m, "guest"),
		       *ro = json_object_get(m, "ro");
		if (!json_is_string(h) || !json_is_string(g))
			return fail(ret_error, "mounts[%zu]: \"host\" and \"guest\" are required",
				    i);
		int r = host_dir_check("mounts", json_string_value(h), json_string_length(h),
				       ret_error);
		if (r < 0)
			return r;
		if (!vmspec_guest_path_valid(json_string_value(g), json_string_length(g)))
			return fail(
				ret_error,
				"mounts[%zu]: guest path must be absolute, of [A-Za-z0-9_./+@-], "
				"without . or .. components",
				i);
		if (ro && !json_is_boolean(ro))
			return fail(ret_error, "mounts[%zu]: \"ro\" must be true or false", i);
		if (streq(json_string_value(g), "/root/workspace"))
			return fail(ret_error,
				    "mounts[%zu]: /root/workspace is the workspace (give it as "
				    "\"workspace\")",
				    i);
		for (size_t j = 0; j < s->n_mounts; j++)
			if (streq(s->mounts[j].guest, json_string_value(g)))
				return fail(ret_error, "mounts[%zu]: guest path used twice", i);
		struct vm_mount *vm = &s->mounts[s->n_mounts];
		vm->host = strdup(json_string_value(h));
		vm->guest = strdup(json_string_value(g));
		vm->ro = json_is_true(ro);
		s->n_mounts++;
		if (!vm->host || !vm->guest)
			return -ENOMEM;
	}
	return 0;
}

int vmspec_from_json(const json_t *body, struct vm_spec *ret, char **ret_error)
{
	struct vm_spec s = { .cpus = VMSPEC_DEFAULT_CPUS,
			     .memory_mib = VMSPEC_DEFAULT_MEMORY_MIB,
			     .disk_mib = VMSPEC_DEFAULT_DISK_MIB };
	const char *k;
	json_t *v;
	int r = 0;

	*ret_error = NULL;
	if (!json_is_object(body))
		return fail(ret_error, "expected a JSON object");
	json_object_foreach((json_t *)body, k, v)
	{
		if (streq(k, "name")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v) ||
			    strlen(json_string_value(v)) != json_string_length(v) ||
			    !vmspec_name_valid(json_string_value(v))) {
				r = fail(ret_error, "name: expected [a-z0-9][a-z0-9_.-]{0,62}");
				break;
			}
			if (!(s.name = strdup(json_string_value(v)))) {
				r = -ENOMEM;
				break;
			}
		} else if (streq(k, "cpus")) {
			json_int_t c = json_is_integer(v) ? json_integer_value(v) : 0;
			if (c < VM_CPUS_MIN || c > VM_CPUS_MAX) {
				r = fail(ret_error,
					 "cpus: expected an integer from " VM_CPUS_RANGE_TEXT);
				break;
			}
			s.cpus = (unsigned)c;
		} else if (streq(k, "memory")) {
			r = parse_mib(v, "memory", MEM_MIN_MIB, MEM_MAX_MIB, &s.memory_mib,
				      ret_error);
		} else if (streq(k, "disk")) {
			r = parse_mib(v, "disk", DISK_MIN_MIB, DISK_MAX_MIB, &s.disk_mib,
				      ret_error);
		} else if (streq(k, "env")) {
			r = parse_env(v, &s.env, ret_error);
		} else if (streq(k, "mounts")) {
			r = parse_mounts(v, &s, ret_error);
		} else if (streq(k, "workspace")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v)) {
				r = fail(ret_error, "workspace: expected a host directory's path");
				break;
			}
			r = host_dir_check("workspace", json_string_value(v), json_string_length(v),
					   ret_error);
			if (r == 0 && !(s.workspace = strdup(json_string_value(v))))
				r = -ENOMEM;
		} else if (streq(k, "suspendable")) {
			if (!json_is_boolean(v)) {
				r = fail(ret_error, "suspendable: expected true or false");
				break;
			}
			s.suspendable = json_is_true(v) ? 1 : -1;
		} else if (streq(k, "workspace_audit")) {
			if (!json_is_boolean(v)) {
				r = fail(ret_error, "workspace_audit: expected true or false");
				break;
			}
			s.no_ws_audit = json_is_false(v);
		} else if (streq(k, "image")) {
			if (!json_is_string(v) ||
			    strlen(json_string_value(v)) != json_string_length(v) ||
			    !vmspec_name_valid(json_string_value(v))) {
				r = fail(ret_error, "image: not an image name");
				break;
			}
			if (!(s.image = strdup(json_string_value(v)))) {
				r = -ENOMEM;
				break;
			}
		} else {
			r = fail(ret_error, "unknown field \"%s\"", k);
		}
		if (r < 0)
			break;
	}
	if (r == 0 && !s.image && !(s.image = strdup("minimal")))
		r = -ENOMEM;
	/* every VM has the devices QEMU can save (so its first boot can be restored from a saved
	 * one) unless told otherwise or given --mounts (QEMU's 9p); an ephemeral one can be
	 * suspended once persisted */
	if (r == 0 && s.suspendable == 0)
		s.suspendable = s.n_mounts ? -1 : 1;
	if (r == 0 && s.suspendable > 0 && s.n_mounts)
		r = fail(ret_error,
			 "suspendable: a VM with \"mounts\" cannot be suspended (they "
			 "are QEMU's 9p shares, which QEMU 7.2 cannot save while mounted)");
	s.suspendable = s.suspendable > 0;
	if (r < 0) {
		vmspec_done(&s);
		return r;
	}
	*ret = s;
	return 0;
}

json_t *vmspec_env_json(const struct vm_spec *s)
{
	json_t *a = json_array();
	for (size_t i = 0; a && s->env && s->env[i]; i++)
		json_array_append_new(a, json_string(s->env[i]));
	return a;
}

json_t *vmspec_mounts_json(const struct vm_spec *s)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < s->n_mounts; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:b}", "host", s->mounts[i].host,
						   "guest", s->mounts[i].guest, "ro",
						   s->mounts[i].ro));
	return a;
}

static int env_key_eq(const char *a, const char *b)
{
	size_t ka = strcspn(a, "="), kb = strcspn(b, "=");
	return ka == kb && memcmp(a, b, ka) == 0;
}

int vmspec_exec_frame(const json_t *body, char *const *vm_env, struct buf *out, char **ret_error)
{
	const char *k;
	json_t *v;
	_cleanup_strv_free_ char **argv = NULL, **env = NULL;
	_cleanup_free_ char *cwd = NULL;
	struct proto_exec ex = { 0 };
	int r;

	*ret_error = NULL;
	if (!json_is_object(body))
		return fail(ret_error, "expected a JSON object");
	json_object_foreach((json_t *)body, k, v)
	{
		if (streq(k, "argv")) {
			size_t i;
			json_t *a;
			if (!json_is_array(v) || json_array_size(v) == 0 ||
			    json_array_size(v) > PROTO_MAX_ARGS)
				return fail(ret_error,
					    "argv: expected a non-empty array of strings");
			json_array_foreach(v, i, a)
			{
				if (!json_is_string(a) ||
				    strlen(json_string_value(a)) != json_string_length(a) ||
				    json_string_length(a) > PROTO_MAX_STR)
					return fail(ret_error, "argv[%zu]: expected a string", i);
				if (strv_push(&argv, json_string_value(a)) < 0)
					return -ENOMEM;
			}
		} else if (streq(k, "shell") || streq(k, "tty")) {
			if (!json_is_boolean(v))
				return fail(ret_error, "%s: expected true or false", k);
			if (json_is_true(v))
				ex.flags |= streq(k, "tty") ? PROTO_EXEC_TTY : PROTO_EXEC_SHELL;
		} else if (streq(k, "env")) {
			_cleanup_strv_free_ char **e = NULL;
			r = parse_env(v, &e, ret_error);
			if (r < 0)
				return r;
			strv_free(env);
			env = TAKE_PTR(e);
		} else if (streq(k, "cwd")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v) || json_string_length(v) == 0 ||
			    strlen(json_string_value(v)) != json_string_length(v) ||
			    json_string_value(v)[0] != '/' || json_string_length(v) > PATH_MAX_LEN)
				return fail(ret_error, "cwd: expected an absolute path");
			free(cwd);
			if (!(cwd = strdup(json_string_value(v))))
				return -ENOMEM;
		} else if (streq(k, "rows") || streq(k, "cols")) {
			json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
			if (x < 0 || x > 65535)
				return fail(ret_error, "%s: expected 0..65535", k);
			if (streq(k, "rows"))
				ex.rows = (uint16_t)x;
			else
				ex.cols = (uint16_t)x;
		} else if (streq(k, "timeout_ms")) {
			json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
			if (x < 0 || x > UINT32_MAX)
				return fail(ret_error, "timeout_ms: expected 0..4294967295");
			ex.timeout_ms = (uint32_t)x;
		} else {
			return fail(ret_error, "unknown field \"%s\"", k);
		}
	}
	if (!argv)
		return fail(ret_error, "argv: required");
	/* the VM's environment first; the request's entries replace same-named ones */
	_cleanup_strv_free_ char **merged = NULL;
	for (size_t i = 0; vm_env && vm_env[i]; i++) {
		int over = 0;
		for (size_t j = 0; env && env[j]; j++)
			over |= env_key_eq(vm_env[i], env[j]);
		if (!over && strv_push(&merged, vm_env[i]) < 0)
			return -ENOMEM;
	}
	for (size_t j = 0; env && env[j]; j++)
		if (strv_push(&merged, env[j]) < 0)
			return -ENOMEM;
	ex.cwd = cwd;
	ex.argc = (uint32_t)strv_length(argv);
	ex.argv = argv;
	ex.envc = (uint32_t)strv_length(merged);
	ex.envp = merged;
	r = proto_exec_encode(&ex, out);
	if (r < 0)
		return fail(ret_error, "the command is too large for one exec (1 MiB in all)");
	return 0;
}
