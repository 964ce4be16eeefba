/* test-dseccomp.c - the seccomp allow-lists of capsemd and of its tools, mkfs.ext4 and tar
 * (src/daemon/dseccomp.c), on the running kernel, each in a forked child: the tools' lists are
 * subsets of capsemd's (they run under both); under each tool's filter /bin/true still runs
 * (execve, the loader, libc), a socket is refused (ENOSYS) and ptrace kills; under capsemd's a program still runs, mount kills unless
 * virtiofsd's namespace sandbox needs it, chroot gets through to the kernel, io_uring and
 * userfaultfd (which virtiofsd probes) are refused without a kill. (That capsemd's list holds capsem-vm's and the gateway's is
 * scripts/check-seccomp-lists.py, a meson test beside this one.) */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dseccomp.h"

/* run fn in a child; its wait status. The child ends with the raw exit_group: _exit() is
 * noreturn, and ASan's hook before a noreturn call makes syscalls that a tool's filter refuses */
static int in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		syscall(SYS_exit_group, fn(arg));
		for (;;)
			;
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void test_mkfs_within_capsemd(void **state)
{
	int n = 0;
	for (int nr = 0; nr < 1024; nr++) {
		if (!dseccomp_mkfs_allows(nr))
			continue;
		n++;
		if (!dseccomp_allows(nr, 0))
			fail_msg("mkfs may make syscall %d, capsemd's filter above it may not", nr);
	}
	assert_true(n > 30);
	assert_true(dseccomp_mkfs_allows(SYS_execve));
	assert_false(dseccomp_mkfs_allows(SYS_socket));
	assert_false(dseccomp_mkfs_allows(SYS_clone));
	/* tar's: mkfs's and what unpacking writes, beneath capsemd's too */
	for (int nr = 0; nr < 1024; nr++)
		if (dseccomp_tar_allows(nr) && !dseccomp_allows(nr, 0))
			fail_msg("tar may make syscall %d, capsemd's filter above it may not", nr);
	assert_true(dseccomp_tar_allows(SYS_execve));
	assert_true(dseccomp_tar_allows(SYS_mkdirat));
	assert_true(dseccomp_tar_allows(SYS_mknodat));
	assert_true(dseccomp_tar_allows(SYS_lsetxattr));
	assert_false(dseccomp_tar_allows(SYS_socket));
	assert_false(dseccomp_tar_allows(SYS_clone));
	/* the mounts only for virtiofsd's namespace sandbox */
	assert_false(dseccomp_allows(SYS_mount, 0));
	assert_true(dseccomp_allows(SYS_mount, 1));
	assert_true(dseccomp_allows(SYS_pivot_root, 1));
	assert_true(dseccomp_allows(SYS_chroot, 0));
	assert_false(dseccomp_allows(SYS_ptrace, 1));
	assert_false(dseccomp_allows(SYS_io_uring_setup, 1));
	/* killed: the escape kit; refused only: what virtiofsd probes */
	assert_true(dseccomp_kills(SYS_ptrace, 0));
	assert_true(dseccomp_kills(SYS_mount, 0));
	assert_false(dseccomp_kills(SYS_mount, 1));
	assert_false(dseccomp_kills(SYS_chroot, 0));
	assert_false(dseccomp_kills(SYS_userfaultfd, 0));
	assert_false(dseccomp_allows(SYS_userfaultfd, 0));
}

static struct scf_prog tool_prog = SCF_PROG_INIT;

enum { RUN_TRUE, TRY_SOCKET, TRY_PTRACE };

static int tool_child(void *arg)
{
	int what = (int)(intptr_t)arg;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || scf_load(&tool_prog, 0) < 0)
		return 10;
	if (what == TRY_SOCKET)
		return syscall(SYS_socket, 1, 1, 0) == -1 && errno == ENOSYS ? 0 : 11;
	if (what == TRY_PTRACE) {
		syscall(SYS_ptrace, 0, 0, 0, 0);
		return 12;
	}
	char *argv[] = { "/bin/true", NULL };
	char *envp[] = { NULL };
	syscall(SYS_execve, argv[0], argv, envp);
	return 13;
}

static void check_tool_filter(int (*build)(enum scf_mode, struct scf_prog *))
{
	assert_int_equal(build(SCF_ENFORCE, &tool_prog), 0);
	int st = in_child(tool_child, (void *)(intptr_t)RUN_TRUE);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_child(tool_child, (void *)(intptr_t)TRY_SOCKET);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_child(tool_child, (void *)(intptr_t)TRY_PTRACE);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	scf_prog_free(&tool_prog);
}

static void test_mkfs_filter(void **state)
{
	check_tool_filter(dseccomp_mkfs_build);
}

static void test_tar_filter(void **state)
{
	check_tool_filter(dseccomp_tar_build);
}

enum { D_RUN_TRUE, D_MOUNT, D_MOUNT_ALLOWED, D_CHROOT, D_IO_URING, D_USERFAULTFD };

static int capsemd_child(void *arg)
{
	int what = (int)(intptr_t)arg;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    dseccomp_install(SCF_ENFORCE, what == D_MOUNT_ALLOWED) < 0)
		return 10;
	switch (what) {
	case D_MOUNT:
		syscall(SYS_mount, 0, 0, 0, 0, 0);
		return 11;
	case D_MOUNT_ALLOWED:
		/* through to the kernel, which refuses the NULL arguments */
		return syscall(SYS_mount, 0, 0, 0, 0, 0) == -1 && errno != ENOSYS ? 0 : 12;
	case D_CHROOT:
		return syscall(SYS_chroot, 0) == -1 && errno != ENOSYS ? 0 : 13;
	case D_IO_URING:
		return syscall(SYS_io_uring_setup, 1, 0) == -1 && errno == ENOSYS ? 0 : 14;
	case D_USERFAULTFD:
		return syscall(SYS_userfaultfd, 0) == -1 && errno == ENOSYS ? 0 : 16;
	default:
		break;
	}
	char *argv[] = { "/bin/true", NULL };
	char *envp[] = { NULL };
	syscall(SYS_execve, argv[0], argv, envp);
	return 15;
}

static void test_capsemd_filter(void **state)
{
	static const struct {
		int what, sig, code;
	} cases[] = {
		{ D_RUN_TRUE, 0, 0 }, { D_MOUNT, SIGSYS, 0 }, { D_MOUNT_ALLOWED, 0, 0 },
		{ D_CHROOT, 0, 0 },   { D_IO_URING, 0, 0 },   { D_USERFAULTFD, 0, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st = in_child(capsemd_child, (void *)(intptr_t)cases[i].what);
		if (cases[i].sig) {
			assert_true(WIFSIGNALED(st));
			assert_int_equal(WTERMSIG(st), cases[i].sig);
		} else {
			assert_true(WIFEXITED(st));
			assert_int_equal(WEXITSTATUS(st), cases[i].code);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mkfs_within_capsemd),
		cmocka_unit_test(test_mkfs_filter),
		cmocka_unit_test(test_tar_filter),
		cmocka_unit_test(test_capsemd_filter),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
