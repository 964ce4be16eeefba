/* test-vm.c - capsem-vm's pure parts: accelerator choice, QEMU command line (disk, 9p shares)
 * and the kernel command line contract with the guest's parser (src/guest/bootargs.c), serial
 * log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "accel.h"
#include "bootargs.h"
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
	assert_true(has(v, "max")); /* every emulated CPU feature: AVX2 for native CLIs */
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

static const char *after(char **v, const char *opt, int nth)
{
	for (size_t i = 0; v[i] && v[i + 1]; i++)
		if (streq(v[i], opt) && nth-- == 0)
			return v[i + 1];
	return NULL;
}

static void test_qemu_storage(void **state)
{
	struct qemu_mount m[] = {
		{ .host = "/srv/data", .guest = "/data", .readonly = 1 },
		{ .host = "/home/a,b", .guest = "/root/work.d", .readonly = 0 },
	};
	struct qemu_config c = { .kernel = "/k",
				 .initrd = "/i",
				 .cpus = 1,
				 .mem_mib = 512,
				 .accel = VM_ACCEL_TCG,
				 .serial_sock = "s",
				 .qmp_sock = "q",
				 .vhost_vsock_sock = "v",
				 .cmdline_extra = "-- bare",
				 .disk = "/vms/x,y/disk.img",
				 .rootfs = "/img/deb,ian/rootfs.sqfs",
				 .mounts = m,
				 .n_mounts = 2 };
	char **v = NULL;
	assert_int_equal(qemu_build_argv(&c, &v), 0);
	/* ',' in a path is doubled, which QEMU reads as a literal comma */
	assert_string_equal(after(v, "-drive", 0), "id=disk0,file=/vms/x,,y/disk.img,format=raw,"
						   "if=none,cache=writeback,discard=unmap");
	/* the guest tells the block devices apart by serial, not by order */
	assert_true(has(v, "virtio-blk-device,drive=disk0,serial=capsem-disk"));
	assert_string_equal(after(v, "-drive", 1), "id=rootfs0,file=/img/deb,,ian/rootfs.sqfs,"
						   "format=raw,if=none,readonly=on");
	assert_true(has(v, "virtio-blk-device,drive=rootfs0,serial=capsem-rootfs"));
	assert_string_equal(after(v, "-fsdev", 0),
			    "local,id=fs0,path=/srv/data,security_model=none,"
			    "multidevs=remap,readonly=on");
	assert_string_equal(after(v, "-fsdev", 1),
			    "local,id=fs1,path=/home/a,,b,security_model=none,"
			    "multidevs=remap");
	assert_true(has(v, "virtio-9p-device,fsdev=fs0,mount_tag=capsem9p0"));
	assert_true(has(v, "virtio-9p-device,fsdev=fs1,mount_tag=capsem9p1"));
	const char *cmdline = after(v, "-append", 0);
	assert_non_null(strstr(cmdline, " capsem.mount=capsem9p0:/data:ro capsem.mount=capsem9p1:"
					"/root/work.d:rw -- bare"));

	/* the guest reads back exactly what the host meant */
	struct bootargs b;
	bootargs_parse(cmdline, &b);
	assert_int_equal(b.n_invalid, 0);
	assert_int_equal(b.n_mounts, 2);
	assert_string_equal(b.mounts[0].tag, "capsem9p0");
	assert_string_equal(b.mounts[0].path, "/data");
	assert_true(b.mounts[0].readonly);
	assert_string_equal(b.mounts[1].tag, "capsem9p1");
	assert_string_equal(b.mounts[1].path, "/root/work.d");
	assert_false(b.mounts[1].readonly);
	strv_free(v);
	v = NULL;

	/* nothing attached: no drive, no share, the plain command line */
	c.disk = NULL;
	c.rootfs = NULL;
	c.n_mounts = 0;
	c.cmdline_extra = NULL;
	assert_int_equal(qemu_build_argv(&c, &v), 0);
	assert_false(has(v, "-drive"));
	assert_false(has(v, "-fsdev"));
	assert_null(strstr(after(v, "-append", 0), "capsem."));
	strv_free(v);
	v = NULL;

	/* bad guest paths, repeated paths, relative host paths, too many */
	c.n_mounts = 2;
	const char *bad[] = { "/",    "rel",   "/a/../b", "/a/./b", "/a//b",
			      "/a/",  "/proc", "/sys/x",  "/dev",   "/a b",
			      "/a:b", "/a,b",  "/x\n",	  "/ü",	    "" };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		m[1].guest = bad[i];
		assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
		assert_false(qemu_guest_path_valid(bad[i]));
	}
	assert_true(qemu_guest_path_valid("/procfoo"));
	assert_true(qemu_guest_path_valid("/a/..b/c.d_e-F9"));
	m[1].guest = "/data";
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	m[1].guest = "/other";
	m[1].host = "relative";
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	m[1].host = "/h";
	c.n_mounts = QEMU_MAX_MOUNTS + 1;
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	c.n_mounts = 2;
	c.disk = "";
	assert_int_equal(qemu_build_argv(&c, &v), -EINVAL);
	c.disk = NULL;
	/* the kernel command line has a hard size limit */
	char big[2048];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	c.cmdline_extra = big;
	assert_int_equal(qemu_build_argv(&c, &v), -E2BIG);
	assert_null(v);
}

static void test_bootargs(void **state)
{
	struct bootargs b;
	bootargs_parse("", &b);
	assert_int_equal(b.n_mounts, 0);
	assert_int_equal(b.n_invalid, 0);
	bootargs_parse("console=ttyS0 capsem.mount=capsem9p3:/a/b:rw\n", &b);
	assert_int_equal(b.n_mounts, 1);
	assert_string_equal(b.mounts[0].tag, "capsem9p3");
	assert_string_equal(b.mounts[0].path, "/a/b");
	/* after "--" the words are init's */
	bootargs_parse("quiet -- capsem.mount=capsem9p0:/a:ro", &b);
	assert_int_equal(b.n_mounts, 0);
	assert_int_equal(b.n_invalid, 0);
	/* not ours: ignored, not invalid */
	bootargs_parse("capsem.other=1 xcapsem.mount=capsem9p0:/a:ro", &b);
	assert_int_equal(b.n_mounts + b.n_invalid, 0);
	const char *bad[] = {
		"capsem.mount=",
		"capsem.mount=capsem9p0:/a:rx",
		"capsem.mount=capsem9p0:/a",
		"capsem.mount=capsem9p0::ro",
		"capsem.mount=capsem9p0:ro",
		"capsem.mount=:/a:ro",
		"capsem.mount=capsem9p:/a:ro",
		"capsem.mount=fs0:/a:ro",
		"capsem.mount=capsem9p0x:/a:ro",
		"capsem.mount=capsem9p0:a:ro",
		"capsem.mount=capsem9p0:/a/../etc:ro",
		"capsem.mount=capsem9p0:/a:b:ro",
		"capsem.mount=capsem9p0:/proc/x:ro",
		"capsem.mount=capsem9p0:/:ro",
		"capsem.mount=capsem9p99999999999999999999999999:/a:ro",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		bootargs_parse(bad[i], &b);
		assert_int_equal(b.n_mounts, 0);
		assert_int_equal(b.n_invalid, 1);
	}
	/* repeats and more than the maximum are invalid; the first ones stay */
	bootargs_parse("capsem.mount=capsem9p0:/a:ro capsem.mount=capsem9p1:/a:ro "
		       "capsem.mount=capsem9p0:/b:ro",
		       &b);
	assert_int_equal(b.n_mounts, 1);
	assert_int_equal(b.n_invalid, 2);
	char line[2048] = "";
	for (int i = 0; i < BOOTARGS_MAX_MOUNTS + 2; i++) {
		size_t n = strlen(line);
		snprintf(line + n, sizeof(line) - n, "capsem.mount=capsem9p%d:/m%d:rw ", i, i);
	}
	bootargs_parse(line, &b);
	assert_int_equal(b.n_mounts, BOOTARGS_MAX_MOUNTS);
	assert_int_equal(b.n_invalid, 2);
	/* a long path is refused, not truncated */
	char path[300] = "capsem.mount=capsem9p0:/";
	memset(path + strlen(path), 'p', 200);
	memcpy(path + strlen(path), ":ro", 4);
	bootargs_parse(path, &b);
	assert_int_equal(b.n_mounts, 0);
	assert_int_equal(b.n_invalid, 1);
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
		cmocka_unit_test(test_cpuinfo),	     cmocka_unit_test(test_qemu_argv),
		cmocka_unit_test(test_qemu_storage), cmocka_unit_test(test_bootargs),
		cmocka_unit_test(test_serial_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
