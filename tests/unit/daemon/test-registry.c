/* test-registry.c - capsemd's pure parts: {ref} resolution, VM spec validation, exec requests,
 * and vm.json round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "macro.h"
#include "proto.h"
#include "registry.h"
#include "vmspec.h"

static void test_resolve(void **state)
{
	const char *ids[] = { "3f9c2a7b10de", "3f9d00000000", "abcdef012345" };
	const char *names[] = { "web", NULL, "3f9c" };
	char *c = NULL;
	assert_int_equal(registry_resolve(ids, names, 3, "web", &c), 0);
	assert_int_equal(registry_resolve(ids, names, 3, "abcdef012345", &c), 2);
	assert_int_equal(registry_resolve(ids, names, 3, "abc", &c), 2);
	/* a name wins over an id prefix */
	assert_int_equal(registry_resolve(ids, names, 3, "3f9c", &c), 2);
	assert_int_equal(registry_resolve(ids, names, 3, "3f9d", &c), 1);
	assert_int_equal(registry_resolve(ids, names, 3, "3f9", &c), -EADDRNOTAVAIL);
	assert_string_equal(c, "3f9c2a7b10de, 3f9d00000000");
	free(c);
	assert_int_equal(registry_resolve(ids, names, 3, "ab", NULL), -ENOENT);
	assert_int_equal(registry_resolve(ids, names, 3, "zzz", NULL), -ENOENT);
	assert_int_equal(registry_resolve(ids, names, 3, "3f9c2a7b10de0", NULL), -ENOENT);
	assert_int_equal(registry_resolve(ids, names, 0, "web", NULL), -ENOENT);
}

static void test_names(void **state)
{
	assert_true(vmspec_name_valid("web"));
	assert_true(vmspec_name_valid("0a_b.c-d"));
	assert_false(vmspec_name_valid(""));
	assert_false(vmspec_name_valid("Web"));
	assert_false(vmspec_name_valid("-web"));
	assert_false(vmspec_name_valid("a/b"));
	char l[65];
	memset(l, 'a', 64);
	l[64] = 0;
	assert_false(vmspec_name_valid(l));
	l[63] = 0;
	assert_true(vmspec_name_valid(l));
	assert_true(registry_id_valid("0123456789ab"));
	assert_false(registry_id_valid("0123456789aB"));
	assert_false(registry_id_valid("0123456789a"));
	char id[REGISTRY_ID_LEN + 1];
	assert_int_equal(registry_new_id(id), 0);
	assert_true(registry_id_valid(id));
}

static int spec_of(const char *text, struct vm_spec *s, char **err)
{
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	int r = vmspec_from_json(j, s, err);
	json_decref(j);
	return r;
}

static void test_spec(void **state)
{
	struct vm_spec s;
	char *err = NULL;
	assert_int_equal(spec_of("{}", &s, &err), 0);
	assert_null(s.name);
	assert_int_equal(s.cpus, 1);
	assert_int_equal(s.memory_mib, 512);
	assert_string_equal(s.image, "minimal");
	vmspec_done(&s);
	assert_int_equal(spec_of("{\"name\":\"web\",\"cpus\":4,\"memory\":\"1G\",\"disk\":\"2G\","
				 "\"env\":[\"A=1\",\"_B=\"],\"mounts\":[{\"host\":\"/tmp\","
				 "\"guest\":\"/mnt/src\",\"ro\":true}],\"image\":\"minimal\"}",
				 &s, &err),
			 0);
	assert_string_equal(s.name, "web");
	assert_int_equal(s.cpus, 4);
	assert_int_equal(s.memory_mib, 1024);
	assert_int_equal(s.disk_mib, 2048);
	assert_string_equal(s.env[1], "_B=");
	assert_int_equal(s.n_mounts, 1);
	assert_true(s.mounts[0].ro);
	struct vm_spec copy;
	assert_int_equal(vmspec_copy(&s, &copy), 0);
	assert_string_equal(copy.mounts[0].guest, "/mnt/src");
	vmspec_done(&copy);
	vmspec_done(&s);
	assert_int_equal(spec_of("{\"memory\": 256}", &s, &err), 0);
	assert_int_equal(s.memory_mib, 256);
	assert_false(s.no_ws_audit); /* the workspace is audited unless told otherwise */
	vmspec_done(&s);
	/* a containerd pod's VM: its roots as the workspace, over virtio-fs, not audited */
	assert_int_equal(spec_of("{\"workspace\":\"/tmp\",\"suspendable\":false,"
				 "\"workspace_audit\":false}",
				 &s, &err),
			 0);
	assert_true(s.no_ws_audit);
	assert_false(s.suspendable);
	assert_int_equal(vmspec_copy(&s, &copy), 0);
	assert_true(copy.no_ws_audit);
	vmspec_done(&copy);
	vmspec_done(&s);

	static const char *const bad[] = {
		"[]",
		"{\"cpus\":0}",
		"{\"cpus\":65}",
		"{\"cpus\":\"2\"}",
		"{\"memory\":\"127M\"}",
		"{\"memory\":\"65G\"}",
		"{\"memory\":\"1.5G\"}",
		"{\"memory\":-1}",
		"{\"disk\":\"63M\"}",
		"{\"disk\":\"2T\"}",
		"{\"name\":\"UP\"}",
		"{\"name\":5}",
		"{\"env\":[\"X\"]}",
		"{\"env\":[\"=x\"]}",
		"{\"env\":[\"A-B=1\"]}",
		"{\"env\":\"A=1\"}",
		"{\"mounts\":[{\"host\":\"tmp\",\"guest\":\"/m\"}]}",
		"{\"mounts\":[{\"host\":\"/nonexistent-xyz\",\"guest\":\"/m\"}]}",
		"{\"mounts\":[{\"host\":\"/tmp\",\"guest\":\"/m/../x\"}]}",
		"{\"mounts\":[{\"host\":\"/tmp\",\"guest\":\"/m x\"}]}",
		"{\"mounts\":[{\"host\":\"/tmp\",\"guest\":\"/\"}]}",
		"{\"mounts\":[{\"host\":\"/tmp\",\"guest\":\"/m\",\"rw\":1}]}",
		"{\"mounts\":[{\"host\":\"/tmp\",\"guest\":\"/m\"},{\"host\":\"/tmp\",\"guest\":"
		"\"/m\"}]}",
		"{\"image\":\"../x\"}",
		"{\"workspace_audit\":0}",
		"{\"other\":1}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		err = NULL;
		int r = spec_of(bad[i], &s, &err);
		if (r != -EINVAL)
			fprintf(stderr, "case %zu accepted\n", i);
		assert_int_equal(r, -EINVAL);
		assert_non_null(err);
		free(err);
	}
}

static void test_exec_frame(void **state)
{
	char *err = NULL;
	struct buf b;
	char *vm_env[] = { "A=vm", "B=vm", NULL };
	json_t *j = json_loads("{\"argv\":[\"echo\",\"hi\"],\"env\":[\"B=req\"],\"cwd\":\"/tmp\","
			       "\"shell\":true,\"tty\":false,\"rows\":24,\"cols\":80,"
			       "\"timeout_ms\":5}",
			       0, NULL);
	buf_init(&b, 1 << 20);
	assert_int_equal(vmspec_exec_frame(j, vm_env, &b, &err), 0);
	json_decref(j);
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	assert_true(proto_frame_parse(buf_head(&b), buf_len(&b), &type, &pl, &len) > 0);
	assert_int_equal(type, PROTO_EXEC);
	struct proto_exec *ex = NULL;
	assert_int_equal(proto_exec_decode(pl, len, &ex), 0);
	assert_int_equal(ex->flags, PROTO_EXEC_SHELL);
	assert_int_equal(ex->timeout_ms, 5);
	assert_string_equal(ex->cwd, "/tmp");
	assert_int_equal(ex->argc, 2);
	assert_int_equal(ex->envc, 2);
	assert_string_equal(ex->envp[0], "A=vm");
	assert_string_equal(ex->envp[1], "B=req");
	proto_exec_free(ex);
	buf_done(&b, 0);

	static const char *const bad[] = {
		"{}",
		"{\"argv\":[]}",
		"{\"argv\":\"ls\"}",
		"{\"argv\":[1]}",
		"{\"argv\":[\"a\\u0000b\"]}",
		"{\"argv\":[\"ls\"],\"cwd\":\"rel\"}",
		"{\"argv\":[\"ls\"],\"rows\":70000}",
		"{\"argv\":[\"ls\"],\"timeout_ms\":-1}",
		"{\"argv\":[\"ls\"],\"tty\":1}",
		"{\"argv\":[\"ls\"],\"env\":[\"bad\"]}",
		"{\"argv\":[\"ls\"],\"what\":1}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		j = json_loads(bad[i], JSON_ALLOW_NUL, NULL);
		assert_non_null(j);
		buf_init(&b, 1 << 20);
		err = NULL;
		int r = vmspec_exec_frame(j, NULL, &b, &err);
		if (r != -EINVAL)
			fprintf(stderr, "case %zu accepted\n", i);
		assert_int_equal(r, -EINVAL);
		free(err);
		buf_done(&b, 0);
		json_decref(j);
	}
}

static void test_record_roundtrip(void **state)
{
	struct vm_record r = {
		.persistent = 1, .state = VM_RUNNING, .boot_ms = 12.5, .pid = 42, .boot = 3
	};
	char *err = NULL;
	memcpy(r.id, "0123456789ab", 13);
	assert_int_equal(spec_of("{\"name\":\"web\",\"env\":[\"A=1\"],\"mounts\":[{\"host\":"
				 "\"/tmp\",\"guest\":\"/m\"}]}",
				 &r.spec, &err),
			 0);
	registry_now(r.created);
	registry_now(r.started);
	r.vmdir = strdup("/home/u/.capsem/vms/0123456789ab");
	json_t *j = registry_record_to_json(&r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
	assert_int_equal(json_integer_value(json_object_get(j, "pid")), 42);
	assert_true(json_is_null(json_object_get(j, "error")));
	assert_string_equal(json_string_value(json_object_get(j, "session")), "0123456789ab-3");
	struct vm_record back;
	assert_int_equal(registry_record_from_json(j, &back), 0);
	assert_int_equal(back.boot, 3);
	assert_string_equal(back.id, r.id);
	assert_string_equal(back.spec.name, "web");
	assert_int_equal(back.state, VM_RUNNING);
	assert_int_equal(back.pid, 42);
	assert_string_equal(back.spec.mounts[0].guest, "/m");
	assert_string_equal(back.spec.env[0], "A=1");
	assert_false(back.spec.no_ws_audit);
	assert_true(json_is_null(json_object_get(j, "workspace_transport")));
	registry_record_done(&back);
	/* the workspace's transport and audit setting survive a daemon restart */
	snprintf(r.ws_transport, sizeof(r.ws_transport), "virtiofs");
	r.spec.no_ws_audit = 1;
	json_decref(j);
	j = registry_record_to_json(&r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "workspace_transport")),
			    "virtiofs");
	assert_true(json_is_false(json_object_get(j, "workspace_audit")));
	assert_int_equal(registry_record_from_json(j, &back), 0);
	assert_string_equal(back.ws_transport, "virtiofs");
	assert_true(back.spec.no_ws_audit);
	registry_record_done(&back);
	json_object_set_new(j, "workspace_transport", json_string("smoke-signals"));
	assert_int_equal(registry_record_from_json(j, &back), 0);
	assert_string_equal(back.ws_transport, "");
	registry_record_done(&back);
	/* tampered records are refused */
	json_object_set_new(j, "id", json_string("../../etc"));
	assert_int_equal(registry_record_from_json(j, &back), -EBADMSG);
	json_object_set_new(j, "id", json_string("0123456789ab"));
	json_object_set_new(j, "state", json_string("dancing"));
	assert_int_equal(registry_record_from_json(j, &back), -EBADMSG);
	json_object_set_new(j, "state", json_string("stopped"));
	json_object_set_new(j, "cpus", json_integer(1000));
	assert_int_equal(registry_record_from_json(j, &back), -EBADMSG);
	json_object_set_new(j, "cpus", json_integer(1));
	json_object_set_new(j, "boot", json_integer(-1));
	assert_int_equal(registry_record_from_json(j, &back), -EBADMSG);
	json_object_del(j, "boot"); /* records from before the ledger */
	assert_int_equal(registry_record_from_json(j, &back), 0);
	assert_int_equal(back.boot, 0);
	registry_record_done(&back);
	json_decref(j);
	registry_record_done(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_spec),
		cmocka_unit_test(test_exec_frame),
		cmocka_unit_test(test_record_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
