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
 * A program may also be built ahead (scf_build, any thread) and loaded later with one syscall
 * (scf_load): in a child between fork and exec, where only async-signal-safe calls may be made.
 * scf_kill_escape is the kill list shared by capsemd's, mkfs's and capsem-gateway's filters.
 *
 * Trust boundary: none crossed; it narrows what this process (and its children) may ask of the
 * kernel. scf_install on the main thread (TSYNC applies it to every thread); scf_load in a
 * forked child; scf_sigsys_find on any thread.
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

int scf_build(const int *allow, size_t n_allow, const int *kill, size_t n_kill, enum scf_mode mode,
	      struct scf_prog *ret)
{
	size_t n = n_allow + n_kill;
	/* 6 head + two per listed syscall + the default */
	size_t len = 6 + 2 * n + 1;
	if (len > BPF_MAXINSNS)
		return -E2BIG;
	struct sock_filter *p = calloc(len, sizeof(*p));
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
	*ret = (struct scf_prog){ .insns = p, .len = (unsigned short)len };
	return 0;
}

int scf_load(const struct scf_prog *p, int tsync)
{
	if (!p->insns || !p->len)
		return 0;
	struct sock_fprog prog = { .len = p->len, .filter = p->insns };
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			 tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0, &prog);
	if (r < 0)
		return -errno;
	if (r > 0)
		return -ESRCH; /* the thread id that could not be synchronised */
	return 0;
}

void scf_prog_free(struct scf_prog *p)
{
	if (!p)
		return;
	free(p->insns);
	*p = (struct scf_prog)SCF_PROG_INIT;
}

static int build_load(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		      enum scf_mode mode, int tsync)
{
	struct scf_prog p = SCF_PROG_INIT;
	int r = scf_build(allow, n_allow, kill, n_kill, mode, &p);
	if (r == 0)
		r = scf_load(&p, tsync);
	scf_prog_free(&p);
	return r;
}

int scf_install(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		enum scf_mode mode)
{
	return build_load(allow, n_allow, kill, n_kill, mode, 1);
}

int scf_install_thread(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		       enum scf_mode mode)
{
	return build_load(allow, n_allow, kill, n_kill, mode, 0);
}

/* never needed by Capsem's host processes, and the usual first steps of an escape or of a hold
 * on the host: every host filter of Capsem's kills them (capsem-vm's too, src/vm/vmseccomp.c) */
static const int kill_escape[] = {
	SYS_ptrace,
	SYS_process_vm_readv,
	SYS_process_vm_writev,
	SYS_kcmp,
	SYS_bpf,
	SYS_perf_event_open,
	SYS_userfaultfd,
	SYS_kexec_load,
	SYS_kexec_file_load,
	SYS_init_module,
	SYS_finit_module,
	SYS_delete_module,
	SYS_add_key,
	SYS_request_key,
	SYS_keyctl,
	SYS_reboot,
	SYS_swapon,
	SYS_swapoff,
	SYS_acct,
	SYS_quotactl,
	SYS_settimeofday,
	SYS_clock_settime,
	SYS_clock_adjtime,
	SYS_adjtimex,
	SYS_iopl,
	SYS_ioperm,
	SYS_open_by_handle_at,
	SYS_name_to_handle_at,
	SYS_mount,
	SYS_umount2,
	SYS_pivot_root,
	SYS_chroot,
	SYS_setns,
	SYS_fsopen,
	SYS_fsmount,
	SYS_fsconfig,
	SYS_fspick,
	SYS_move_mount,
	SYS_open_tree,
	SYS_mount_setattr,
	SYS_lookup_dcookie,
	SYS_vhangup,
	SYS_sethostname,
	SYS_setdomainname,
};

const int *scf_kill_escape(size_t *n_ret)
{
	*n_ret = ELEMENTSOF(kill_escape);
	return kill_escape;
}

int scf_available(void)
{
	uint32_t action = SECCOMP_RET_KILL_PROCESS;
	return syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
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

long scf_sigsys_find(int pid, const char *comm, unsigned wait_ms)
{
	long nr = -ENOENT;
	char want[32], want_comm[64] = "";
	snprintf(want, sizeof(want), " pid=%d ", pid);
	if (comm)
		snprintf(want_comm, sizeof(want_comm), " comm=\"%s\" ", comm);
	_cleanup_close_ int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	/* one record per read; of those already there the last of that pid wins (a pid may have
	 * been used before), else the next: the kernel's audit thread prints the record a moment
	 * after the kill, so it is waited for on the fd, at most wait_ms */
	unsigned waited = 0;
	for (;;) {
		char rec[8192];
		ssize_t k = read(fd, rec, sizeof(rec) - 1);
		if (k < 0 && errno == EPIPE)
			continue; /* overwritten while we read: go on */
		if (k < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLIN };
			if (nr >= 0 || waited >= wait_ms || poll(&pf, 1, 50) < 0)
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
		    (!comm || strstr(rec, want_comm)) &&
		    parse_u32_prefix(sc + strlen(" syscall="), &v, &end) == 0)
			nr = (long)v;
	}
	return nr;
}

void scf_describe_sigsys(int pid, char *buf, size_t len)
{
	const char *name = scf_syscall_name(scf_sigsys_find(pid, NULL, SIGSYS_WAIT_MS));
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
