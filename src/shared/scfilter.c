/* scfilter.c - a seccomp-BPF allow-list (scfilter.h).
 *
 * The program: load the architecture, kill unless x86-64; load the syscall number, kill the
 * x32 range (bit 30); then per listed syscall a JEQ and its return (the allow list in the
 * caller's order, so the hottest syscalls should come first: it is a linear scan; then the kill
 * list, disjoint from it), and the default action. Kills are in the kernel's audit log; ENOSYS
 * answers are not (SECCOMP_FILTER_FLAG_LOG would log them, and QEMU's io_uring probe at every
 * start then uses up the kernel's rate limit that the kill records share): SCF_LOG is the
 * measuring mode. No jump spans more than one instruction, so the lists
 * may be as long as BPF_MAXINSNS allows (-E2BIG beyond).
 *
 * Trust boundary: none crossed; it narrows what this process (and its children) may ask of the
 * kernel. Called on the main thread; TSYNC applies it to every thread.
 */
#include "scfilter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "parse.h"

extern const char *const scf_names[];
extern const size_t scf_names_len;

#define X32_BIT 0x40000000u
#define SIGSYS_WAIT_MS 500u /* for the audit record of a kill (scf_describe_sigsys) */

static int install(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		   enum scf_mode mode, unsigned flags)
{
	size_t n = n_allow + n_kill;
	/* 6 head + two per listed syscall + the default */
	size_t len = 6 + 2 * n + 1;
	if (len > BPF_MAXINSNS)
		return -E2BIG;
	_cleanup_free_ struct sock_filter *p = calloc(len, sizeof(*p));
	if (!p)
		return -ENOMEM;
	size_t i = 0;
	p[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, arch));
	p[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	p[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	p[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, nr));
	p[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_BIT, 0, 1);
	p[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	for (size_t k = 0; k < n; k++) {
		/* the allow list first (disjoint from the kill list): hot syscalls match early */
		int nr = k < n_allow ? allow[k] : kill[k - n_allow];
		/* equal: the next instruction (the return); else skip it */
		p[i++] =
			(struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1);
		p[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
						      k < n_allow ? SECCOMP_RET_ALLOW
								  : SECCOMP_RET_KILL_PROCESS);
	}
	p[i++] = (struct sock_filter)BPF_STMT(
		BPF_RET | BPF_K, mode == SCF_LOG ? SECCOMP_RET_LOG : SECCOMP_RET_ERRNO | ENOSYS);
	struct sock_fprog prog = { .len = (unsigned short)len, .filter = p };
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (r < 0)
		return negative_errno();
	if (r > 0)
		return -ESRCH; /* the thread id that could not be synchronised */
	return 0;
}

int scf_install(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		enum scf_mode mode)
{
	return install(allow, n_allow, kill, n_kill, mode, SECCOMP_FILTER_FLAG_TSYNC);
}

int scf_install_thread(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		       enum scf_mode mode)
{
	return install(allow, n_allow, kill, n_kill, mode, 0);
}

const char *scf_syscall_name(long nr)
{
	if (nr < 0 || (size_t)nr >= scf_names_len)
		return NULL;
	return scf_names[nr];
}

long scf_syscall_nr(const char *name)
{
	for (size_t i = 0; i < scf_names_len; i++)
		if (scf_names[i] && streq(scf_names[i], name))
			return (long)i;
	return -1;
}

void scf_describe_sigsys(int pid, char *buf, size_t len)
{
	long nr = -1;
	char want[32];
	snprintf(want, sizeof(want), " pid=%d ", pid);
	_cleanup_close_ int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	/* one record per read; of those already there the last of that pid wins (a pid may have
	 * been used before), else the next: the kernel's audit thread prints the record a moment
	 * after the kill, so it is waited for on the fd, at most SIGSYS_WAIT_MS */
	uint64_t waited = 0;
	while (fd >= 0) {
		char rec[8192];
		ssize_t k = read(fd, rec, sizeof(rec) - 1);
		if (k < 0 && errno == EPIPE)
			continue; /* overwritten while we read: go on */
		if (k < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLIN };
			if (nr >= 0 || waited >= SIGSYS_WAIT_MS || poll(&pf, 1, 50) < 0)
				break;
			waited += 50;
			continue;
		}
		if (k <= 0)
			break;
		rec[k] = 0;
		const char *sc = strstr(rec, " syscall="), *end;
		uint32_t v;
		if (strstr(rec, "type=1326") && strstr(rec, want) && strstr(rec, " sig=31") && sc &&
		    parse_u32_prefix(sc + strlen(" syscall="), &v, &end) == 0)
			nr = (long)v;
	}
	const char *name = scf_syscall_name(nr);
	if (name)
		snprintf(buf, len, "killed by seccomp (SIGSYS): syscall %s", name);
	else
		snprintf(buf, len, "killed by seccomp (SIGSYS)");
}

void scf_describe_exit(int pid, int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
		char how[200];
		scf_describe_sigsys(pid, how, sizeof(how));
		snprintf(buf, len, "was %s", how);
	} else if (WIFSIGNALED(status)) {
		snprintf(buf, len, "was killed by signal %d", WTERMSIG(status));
	} else {
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	}
}
