/* test-hostconfine.c - the host confinement mechanisms (src/shared/landlock.c, scfilter.c,
 * hostcg.c) on the running kernel, each in a forked child so the test runner stays free:
 * a Landlock ruleset allows its directory and refuses a sibling (and exec, and with ABI 4 a TCP
 * connect); the seccomp allow-list lets listed syscalls through, answers ENOSYS for others and
 * kills (SIGSYS) on the kill list, whose report names the syscall when the kernel log is
 * readable; a filter built ahead and loaded in a child (one syscall) acts the same; the shared
 * kill list holds the escape kit; syscall names both ways; the cgroup module refuses a bad name
 * and cleans up after itself. Layers the kernel lacks are skipped, as the code skips them. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <linux/filter.h>

#include "hostcg.h"
#include "landlock.h"
#include "scfilter.h"

/* run fn in a child; its wait status */
static int in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn(arg));
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

struct dirs {
	char base[64], allowed[96], denied[96], file[128], secret[128];
};

static int landlock_child(void *arg)
{
	struct dirs *d = arg;
	struct ll_ruleset rs;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || ll_ruleset_new(&rs, LL_NO_TCP) < 0 ||
	    rs.fd < 0 || ll_allow_system(&rs, 0) < 0 || ll_allow(&rs, d->allowed, LL_RW) < 0)
		return 10;
	if (ll_allow(&rs, "/no/such/path", LL_READ) != -ENOENT)
		return 11;
	if (ll_restrict_self(rs.fd) < 0)
		return 12;
	ll_ruleset_done(&rs);
	int fd = open(d->file, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return 13; /* allowed: read-write */
	close(fd);
	if (open(d->secret, O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES)
		return 14; /* a sibling directory: refused */
	if (open("/usr/bin/env", O_RDONLY | O_CLOEXEC) < 0)
		return 15; /* the system: readable */
	char *argv[] = { "/bin/true", NULL };
	execv(argv[0], argv);
	if (errno != EACCES)
		return 16; /* no execution beyond the loader */
	return 0;
}

static void test_landlock(void **state)
{
	if (ll_abi() <= 0)
		skip();
	struct dirs d;
	snprintf(d.base, sizeof(d.base), "/tmp/capsem-ll-XXXXXX");
	assert_non_null(mkdtemp(d.base));
	snprintf(d.allowed, sizeof(d.allowed), "%s/a", d.base);
	snprintf(d.denied, sizeof(d.denied), "%s/b", d.base);
	snprintf(d.file, sizeof(d.file), "%s/f", d.allowed);
	snprintf(d.secret, sizeof(d.secret), "%s/s", d.denied);
	assert_int_equal(mkdir(d.allowed, 0700), 0);
	assert_int_equal(mkdir(d.denied, 0700), 0);
	close(open(d.file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	close(open(d.secret, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	int st = in_child(landlock_child, &d);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	unlink(d.file);
	unlink(d.secret);
	rmdir(d.allowed);
	rmdir(d.denied);
	rmdir(d.base);
}

/* every syscall but getppid (left to the default: ENOSYS) and ptrace (killed): the sanitizers'
 * runtimes make their own syscalls in the child */
static int allow[470];
static size_t n_allow;

static void allow_init(void)
{
	n_allow = 0;
	for (int nr = 0; nr < 470; nr++)
		if (nr != SYS_getppid && nr != SYS_ptrace)
			allow[n_allow++] = nr;
}

static const int kill_list[] = { SYS_ptrace };

#define BPF_MAXINSNS_TEST (BPF_MAXINSNS / 2)
#define ELEMENTSOF_TEST(a) (sizeof(a) / sizeof((a)[0]))

static int seccomp_errno_child(void *arg)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return 10;
	if (scf_install(allow, n_allow, kill_list, 1, SCF_ENFORCE) < 0)
		return 11;
	if (syscall(SYS_getpid) <= 0)
		return 12; /* listed */
	if (syscall(SYS_getppid) != -1 || errno != ENOSYS)
		return 13; /* not listed: ENOSYS */
	return 0;
}

static int seccomp_kill_child(void *arg)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    scf_install(allow, n_allow, kill_list, 1, SCF_ENFORCE) < 0)
		return 10;
	syscall(SYS_ptrace, 0, 0, 0, 0);
	return 11; /* not reached */
}

static void test_seccomp(void **state)
{
	allow_init();
	int st = in_child(seccomp_errno_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(seccomp_kill_child(NULL));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	char how[128];
	scf_describe_sigsys((int)pid, how, sizeof(how));
	assert_non_null(strstr(how, "killed by seccomp (SIGSYS)"));
	int kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmsg >= 0) {
		close(kmsg);
		assert_string_equal(how, "killed by seccomp (SIGSYS): syscall ptrace");
		/* found by pid, and by pid and the process's name; not by another name */
		assert_int_equal(scf_sigsys_find((int)pid, NULL, 0), SYS_ptrace);
		char comm[64] = "";
		int cf = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
		ssize_t k = cf >= 0 ? read(cf, comm, sizeof(comm) - 1) : -1;
		if (cf >= 0)
			close(cf);
		if (k > 0) {
			comm[strcspn(comm, "\n")] = 0;
			assert_int_equal(scf_sigsys_find((int)pid, comm, 0), SYS_ptrace);
		}
		assert_int_equal(scf_sigsys_find((int)pid, "no-such-comm", 0), -ENOENT);
	} else {
		assert_true(scf_sigsys_find((int)pid, NULL, 0) < 0);
	}
}

/* built in the parent, loaded in the child with one syscall (as between fork and exec) */
static struct scf_prog built = SCF_PROG_INIT;

static int seccomp_built_child(void *arg)
{
	int die = arg != NULL;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || scf_load(&built, 0) < 0)
		return 10;
	if (syscall(SYS_getpid) <= 0)
		return 11;
	if (syscall(SYS_getppid) != -1 || errno != ENOSYS)
		return 12;
	if (die)
		syscall(SYS_ptrace, 0, 0, 0, 0);
	return 0;
}

static void test_seccomp_built(void **state)
{
	allow_init();
	assert_true(scf_available());
	/* an empty program loads nothing */
	struct scf_prog none = SCF_PROG_INIT;
	assert_int_equal(scf_load(&none, 0), 0);
	scf_prog_free(&none);
	scf_prog_free(NULL);
	/* too long for one program: refused, *ret untouched */
	static int many[BPF_MAXINSNS_TEST];
	assert_int_equal(scf_build(many, ELEMENTSOF_TEST(many), kill_list, 1, SCF_ENFORCE, &none),
			 -E2BIG);
	assert_null(none.insns);
	assert_int_equal(scf_build(allow, n_allow, kill_list, 1, SCF_ENFORCE, &built), 0);
	assert_non_null(built.insns);
	int st = in_child(seccomp_built_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_child(seccomp_built_child, (void *)1);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	scf_prog_free(&built);
	assert_null(built.insns);
}

/* the kill list shared by capsemd, mkfs and the gateway: the escape kit, nothing everyday */
static void test_kill_escape(void **state)
{
	size_t n = 0;
	const int *k = scf_kill_escape(&n);
	assert_true(n >= 40);
	int has_ptrace = 0, has_mount = 0, has_setns = 0;
	for (size_t i = 0; i < n; i++) {
		has_ptrace |= k[i] == SYS_ptrace;
		has_mount |= k[i] == SYS_mount;
		has_setns |= k[i] == SYS_setns;
		assert_true(k[i] != SYS_read && k[i] != SYS_execve && k[i] != SYS_clone &&
			    k[i] != SYS_unshare && k[i] != SYS_seccomp);
	}
	assert_true(has_ptrace && has_mount && has_setns);
}

static void test_syscall_names(void **state)
{
	assert_string_equal(scf_syscall_name(SYS_openat), "openat");
	assert_string_equal(scf_syscall_name(SYS_ptrace), "ptrace");
	assert_int_equal(scf_syscall_nr("ptrace"), SYS_ptrace);
	assert_int_equal(scf_syscall_nr("no_such_syscall"), -1);
	assert_null(scf_syscall_name(-1));
	assert_null(scf_syscall_name(100000));
	/* newer than the installed headers: from the generator's own table */
	assert_string_equal(scf_syscall_name(462), "mseal");
}

static void test_cgroup_names(void **state)
{
	struct hostcg cg = HOSTCG_INIT;
	char why[256];
	assert_int_equal(hostcg_create(&cg, "a/b", 1 << 20, 8, why, sizeof(why)), -EINVAL);
	assert_int_equal(hostcg_create(&cg, "..", 1 << 20, 8, why, sizeof(why)), -EINVAL);
	assert_null(hostcg_mem_dir(&cg));
	hostcg_remove(&cg);
	hostcg_remove(NULL);
	/* where a cgroup can be made (root here; a normal user only with delegation): made with
	 * its limits, then removed */
	char name[64];
	snprintf(name, sizeof(name), "capsem-unit-%d", (int)getpid());
	if (hostcg_create(&cg, name, 64u << 20, 16, why, sizeof(why)) == 0) {
		const char *d = hostcg_mem_dir(&cg);
		assert_non_null(d);
		assert_int_equal(access(d, F_OK), 0);
		assert_int_equal(hostcg_oom_killed(&cg), 0);
		char *copy = strdup(d);
		hostcg_remove(&cg);
		assert_int_equal(access(copy, F_OK), -1);
		free(copy);
	} else {
		hostcg_remove(&cg);
		assert_true(why[0] != 0); /* a reason for the warning line */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_landlock),      cmocka_unit_test(test_seccomp),
		cmocka_unit_test(test_seccomp_built), cmocka_unit_test(test_kill_escape),
		cmocka_unit_test(test_syscall_names), cmocka_unit_test(test_cgroup_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
