/* test-vm.c - capsem-vm's pure parts: accelerator choice, QEMU command line, serial log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "accel.h"
#include "fdutil.h"
#include "macro.h"
#include "qemu.h"
#include "serial.h"
#include "strv.h"

static void test_cpuinfo(void **state)
{
	assert_true(accel_cpuinfo_has_virt("processor: 0\nflags\t\t: fpu vme vmx sse\n"));
	assert_true(accel_cpuinfo_has_virt("flags : svm\n"));
	assert_false(accel_cpuinfo_has_virt("flags : fpu vmxnot xsvm\n"));
	assert_false(accel_cpuinfo_has_virt("model name : vmx cpu\nflags : fpu\n"));
	assert_false(accel_cpuinfo_has_virt(""));
	enum vm_accel a;
	assert_int_equal(accel_parse("kvm", &a), 0);
	assert_int_equal(a, VM_ACCEL_KVM);
	assert_int_equal(accel_parse("KVM", &a), -EINVAL);
	const char *why = NULL;
	assert_int_equal(accel_resolve(VM_ACCEL_TCG, &a, &why), 0);
	assert_int_equal(a, VM_ACCEL_TCG);
}

static int has(char **v, const char *s)
{
	for (size_t i = 0; v[i]; i++)
		if (streq(v[i], s))
			return 1;
	return 0;
}

static void test_qemu_argv(void **state)
{
	struct qemu_config c = { .kernel = "/k",
				 .initrd = "/i",
				 .cpus = 2,
				 .mem_mib = 512,
				 .accel = VM_ACCEL_TCG,
				 .serial_sock = "/d/serial.sock",
				 .qmp_sock = "/d/qmp.sock",
				 .vhost_vsock_sock = "/d/v.sock" };
	char **v = NULL;
	assert_int_equal(qemu_build_argv(&c, &v), 0);
	assert_string_equal(v[0], "qemu-system-x86_64");
	assert_true(has(v, "tcg"));
	assert_false(has(v, "host"));
	assert_true(has(v, "memory-backend-memfd,id=mem,size=512M,share=on"));
	assert_true(has(v, "virtio-mmio.force-legacy=false"));
	assert_true(has(v, "-nodefaults"));
	assert_true(has(v, "-no-reboot"));
	assert_true(has(v, "socket,id=vsk0,path=/d/v.sock"));
	assert_false(has(v, "-netdev")); /* never a NIC */
	strv_free(v);
	v = NULL;
	c.accel = VM_ACCEL_KVM;
	assert_int_equal(qemu_build_argv(&c, &v), 0);
	assert_true(has(v, "host"));
	strv_free(v);
	v = NULL;
	/* a ',' in a path would inject QEMU options */
	c.kernel = "/k,readonly=off";
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	c.kernel = "/k";
	c.cpus = 0;
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	c.cpus = 1;
	c.accel = VM_ACCEL_AUTO; /* must be resolved first */
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	assert_null(v);
}

static void test_serial_log(void **state)
{
	char dir[] = "/tmp/capsem-serial-XXXXXX", path[256];
	struct serial_log s;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/serial.log", dir);
	assert_int_equal(serial_log_open(&s, path, 100), 0);
	for (int i = 0; i < 50; i++) {
		char line[32];
		int n = snprintf(line, sizeof(line), "line %d\x1b[0m\n", i);
		serial_log_write(&s, line, (size_t)n);
	}
	serial_log_close(&s);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size > 100 && st.st_size < 200); /* cap + the truncation marker */
	char *tail = serial_log_tail(&s, 2);
	assert_non_null(tail);
	assert_string_equal(tail, "line 48[0m\nline 49[0m"); /* ESC filtered out */
	free(tail);
	rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuinfo),
		cmocka_unit_test(test_qemu_argv),
		cmocka_unit_test(test_serial_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
