/* test-cgpure.c - the guest's cgroup layout, its pure parts (cgpure.c): the workload's limits
 * for small and large guests, and the "key value" files of cgroupfs and /proc. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cgpure.h"

#define MIB (1ull << 20)

static void test_limits_512m(void **state)
{
	struct cgpure_limits l;
	/* a 512 MiB guest: MemTotal ~ 490 MiB, 460 MiB available, threads-max 3900 */
	cgpure_limits(490 * MIB, 460 * MIB, 3900, &l);
	assert_int_equal(l.mem_reserve + l.mem_max, 460 * MIB);
	assert_true(l.mem_reserve >= CGPURE_MEM_RESERVE_MIN);
	assert_int_equal(l.mem_reserve, 460 * MIB - l.mem_max);
	assert_int_equal(l.mem_max % 4096, 0);
	assert_int_equal(l.swap_max, l.mem_max);
	assert_int_equal(l.pids_reserve + l.pids_max, 3900);
	assert_true(l.pids_reserve >= CGPURE_PIDS_RESERVE_MIN);
	assert_true(l.pids_max > 3000);
}

static void test_limits_bounds(void **state)
{
	struct cgpure_limits l;
	/* a large guest: the reserves stop growing, the task limit is capped */
	cgpure_limits(16384 * MIB, 16000 * MIB, 4194304, &l);
	assert_int_equal(l.mem_reserve, CGPURE_MEM_RESERVE_MAX);
	assert_int_equal(l.mem_max, 16000 * MIB - CGPURE_MEM_RESERVE_MAX);
	assert_int_equal(l.pids_max, CGPURE_PIDS_MAX);
	assert_int_equal(l.pids_reserve, 4194304 - CGPURE_PIDS_MAX);
	/* a tiny guest: the workload keeps at least half of everything */
	cgpure_limits(64 * MIB, 40 * MIB, 300, &l);
	assert_int_equal(l.mem_max, 20 * MIB);
	assert_int_equal(l.mem_reserve, 20 * MIB);
	assert_int_equal(l.pids_max, 150);
	assert_int_equal(l.pids_reserve, 150);
	/* nothing available: no underflow */
	cgpure_limits(0, 0, 0, &l);
	assert_int_equal(l.mem_max, 0);
	assert_int_equal(l.pids_max, 0);
}

static void test_exec_pids(void **state)
{
	/* a bomb in one exec leaves an eighth of the workload's tasks to the others */
	assert_int_equal(cgpure_exec_pids_max(3584), 3584 - 448);
	assert_int_equal(cgpure_exec_pids_max(1000), 1000 - 125);
	/* at least 32, unless that leaves the exec less than the spare */
	assert_int_equal(cgpure_exec_pids_max(100), 68);
	assert_int_equal(cgpure_exec_pids_max(64), 32);
	assert_int_equal(cgpure_exec_pids_max(63), 63);
	assert_int_equal(cgpure_exec_pids_max(0), 0);
}

static void test_field(void **state)
{
	const char *events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
	const char *meminfo = "MemTotal:         501234 kB\nMemFree:  1 kB\nMemAvailable:    "
			      "400000 kB\nHugePages_Total:       0\n";
	uint64_t v = 77;
	assert_int_equal(cgpure_field(events, "oom_kill", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(cgpure_field(events, "oom", &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(cgpure_field(events, "max", &v), 0);
	assert_int_equal(v, 12);
	assert_int_equal(cgpure_field("populated 1\nfrozen 0\n", "populated", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(cgpure_field("populated 0", "populated", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(cgpure_field(meminfo, "MemTotal", &v), 0);
	assert_int_equal(v, 501234ull * 1024);
	assert_int_equal(cgpure_field(meminfo, "MemAvailable", &v), 0);
	assert_int_equal(v, 400000ull * 1024);
	assert_int_equal(cgpure_field(meminfo, "HugePages_Total", &v), 0);
	assert_int_equal(v, 0);
	/* absent, partial names, bad numbers: *ret untouched */
	v = 5;
	assert_int_equal(cgpure_field(events, "oom_kil", &v), -ENOENT);
	assert_int_equal(cgpure_field(events, "", &v), -ENOENT);
	assert_int_equal(cgpure_field("", "populated", &v), -ENOENT);
	assert_int_equal(cgpure_field("populated x\n", "populated", &v), -EINVAL);
	assert_int_equal(cgpure_field("populated -1\n", "populated", &v), -EINVAL);
	assert_int_equal(cgpure_field("max max\n", "max", &v), -EINVAL);
	assert_int_equal(cgpure_field("MemTotal: 5 MB\n", "MemTotal", &v), -EINVAL);
	assert_int_equal(cgpure_field("MemTotal: 99999999999999999999 kB\n", "MemTotal", &v),
			 -EINVAL);
	assert_int_equal(v, 5);
}

static void test_self_path(void **state)
{
	char buf[64];
	assert_int_equal(cgpure_self_path("0::/workload/exec-12\n", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/workload/exec-12");
	assert_int_equal(cgpure_self_path("0::/\n", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/");
	/* a hybrid system: v1 lines first */
	assert_int_equal(
		cgpure_self_path("2:pids:/x\n1:name=systemd:/y\n0::/capsem", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/capsem");
	assert_int_equal(cgpure_self_path("1:pids:/x\n", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(cgpure_self_path("", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(cgpure_self_path("0::/0123456789", buf, 11), -ENAMETOOLONG);
	assert_int_equal(cgpure_self_path("0::/012345678", buf, 11), 0);
	assert_string_equal(buf, "/012345678");
}

static void test_has_word(void **state)
{
	assert_true(cgpure_has_word("cpuset cpu io memory hugetlb pids rdma misc\n", "pids"));
	assert_true(cgpure_has_word("memory pids", "memory"));
	assert_false(cgpure_has_word("memoryx pids", "memory"));
	assert_false(cgpure_has_word("cpu io", "pids"));
	assert_false(cgpure_has_word("", "pids"));
	assert_false(cgpure_has_word("pids", ""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limits_512m), cmocka_unit_test(test_limits_bounds),
		cmocka_unit_test(test_exec_pids),   cmocka_unit_test(test_field),
		cmocka_unit_test(test_self_path),   cmocka_unit_test(test_has_word),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
