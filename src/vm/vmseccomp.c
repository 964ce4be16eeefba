/* vmseccomp.c - capsem-vm's seccomp allow-list (vmseccomp.h; docs/ARCHITECTURE.md, "QEMU is
 * confined"). A filter is inherited by every child and kept across exec, so the list holds the
 * syscalls of what capsem-vm runs after installing it too: QEMU (whose own -sandbox narrows it
 * further) and the MCP servers (Python, Node) through their launcher.
 *
 * Trust boundary: none crossed; it narrows what capsem-vm and its children may ask of the
 * kernel. Main thread (the filter reaches every thread through TSYNC).
 */
#include "vmseccomp.h"

#include <sys/syscall.h>

#include "macro.h"
#include "vmsyscalls.h"

/* the list itself: src/shared/vmsyscalls.c (capsemd's filter holds it too) */

/* The kill list is the one every host filter of Capsem's shares (scf_kill_escape: ptrace,
 * process_vm_*, bpf, perf_event_open, userfaultfd, kexec, modules, keys, reboot, swap, clock
 * setting, port I/O, open_by_handle_at, mount and the new mount API, pivot_root, chroot, setns):
 * those calls kill the process (SIGSYS); the rest of a list's complement answers ENOSYS. The
 * whole process (TSYNC), or the calling thread only. */
static int install(const int *list, size_t n, enum scf_mode mode, int whole_process)
{
	size_t n_kill = 0;
	const int *kill = scf_kill_escape(&n_kill);
	return whole_process ? scf_install(list, n, kill, n_kill, mode)
			     : scf_install_thread(list, n, kill, n_kill, mode);
}

int vm_seccomp_install(enum scf_mode mode)
{
	return install(vm_syscalls, vm_syscalls_n, mode, 1);
}

/* Groups the helpers' and threads' lists below share (each list: one syscall or group a
 * line). */
#define SC_MEMORY SYS_brk, SYS_mmap, SYS_munmap, SYS_mremap, SYS_madvise, SYS_mprotect
#define SC_SLEEP SYS_clock_gettime, SYS_clock_nanosleep, SYS_nanosleep
#define SC_IDS SYS_getpid, SYS_gettid
#define SC_END SYS_getrandom, SYS_restart_syscall, SYS_exit, SYS_exit_group

/* The workspace's 9p server (ws9pd.c): files below its root, its sockets (QEMU's connection is
 * accepted on the listening socket it was given), memory. No socket, connect, bind or exec: it
 * reaches nothing but the fds it was given. */
/* clang-format off */
static const int ws9p_allow[] = {
	SYS_read,
	SYS_write,
	SYS_pread64,
	SYS_pwrite64,
	SYS_poll,
	SYS_ppoll,
	SYS_recvmsg,
	SYS_sendmsg,
	SYS_close,
	SYS_fstat,
	SYS_newfstatat,
	SYS_statx,
	SYS_openat,
	SYS_openat2,
	SYS_getdents64,
	SYS_lseek,
	SYS_mkdirat,
	SYS_unlinkat,
	SYS_renameat,
	SYS_renameat2,
	SYS_symlinkat,
	SYS_linkat,
	SYS_readlinkat,
	SYS_readlink,
	SYS_fchmodat,
	SYS_chmod,
	SYS_fchmod,
	SYS_utimensat,
	SYS_ftruncate,
	SYS_fstatfs,
	SYS_statfs,
	SYS_fsync,
	SYS_fdatasync,
	SYS_mknodat,
	SYS_ioctl,
	SYS_fcntl,
	SYS_dup,
	SC_MEMORY,
	SYS_rt_sigreturn,
	SYS_rt_sigprocmask,
	SYS_rt_sigaction,
	SYS_futex,
	SC_SLEEP,
	SYS_getuid,
	SYS_geteuid,
	SYS_getgid,
	SYS_getegid,
	SC_IDS,
	SC_END,
	SYS_sched_yield,
	SYS_getrlimit,
	SYS_prlimit64,
	SYS_accept4,
};
/* clang-format on */

int vm_seccomp_install_ws9p(enum scf_mode mode)
{
	return install(ws9p_allow, ELEMENTSOF(ws9p_allow), mode, 1);
}

/* The key broker (capsem-vm --keyd, keydmain.c): the control socket, TCP connections out and
 * name resolution (glibc's: UDP to the resolver, a netlink socket for AI_ADDRCONFIG), reading
 * its files (credentials, policy, trust store), threads, memory. No exec, no file writes beyond
 * its inherited log, no process control. */
/* clang-format off */
static const int keyd_allow[] = {
	SYS_read,
	SYS_write,
	SYS_readv,
	SYS_writev,
	SYS_pread64,
	SYS_poll,
	SYS_ppoll,
	SYS_recvmsg,
	SYS_sendmsg,
	SYS_recvfrom,
	SYS_sendto,
	SYS_recvmmsg,
	SYS_sendmmsg,
	SYS_socket,
	SYS_connect,
	SYS_bind, /* the resolver's netlink socket */
	SYS_getsockname,
	SYS_getpeername,
	SYS_getsockopt,
	SYS_setsockopt,
	SYS_shutdown,
	SYS_close,
	SYS_fstat,
	SYS_newfstatat,
	SYS_statx,
	SYS_openat,
	SYS_lseek,
	SYS_getdents64,
	SYS_fcntl,
	SYS_ioctl, /* FIONREAD in the resolver */
	SC_MEMORY,
	SYS_clone,
	SYS_clone3,
	SYS_set_robust_list,
	SYS_rseq,
	SYS_futex,
	SYS_sched_yield,
	SYS_sched_getaffinity,
	SYS_rt_sigreturn,
	SYS_rt_sigprocmask,
	SYS_rt_sigaction,
	SYS_sigaltstack,
	SC_SLEEP,
	SYS_clock_getres,
	SYS_gettimeofday,
	SYS_getuid,
	SYS_geteuid,
	SYS_getgid,
	SYS_getegid,
	SC_IDS,
	SYS_uname,
	SYS_sysinfo, /* measured: the resolver's path */
	SC_END,
};
/* clang-format on */

int vm_seccomp_install_keyd(enum scf_mode mode)
{
	return install(keyd_allow, ELEMENTSOF(keyd_allow), mode, 1);
}

/* The channel mux's thread (vmchan.c, a suspendable VM's host<->guest streams over the
 * virtio-serial port): it parses the guest's mux frames, so it gets less than the rest of
 * capsem-vm: its sockets (QEMU's chardev, the local processes' connections, connecting to the
 * VM directory's vsock_PORT sockets), memory and the ledger's queue (futex). No open, exec,
 * clone, process or file-system calls (its Landlock domain allows no file either). */
/* clang-format off */
static const int chan_allow[] = {
	SYS_poll,
	SYS_ppoll,
	SYS_read,
	SYS_write,
	SYS_readv,
	SYS_writev,
	SYS_recvmsg,
	SYS_sendmsg,
	SYS_recvfrom,
	SYS_sendto,
	SYS_accept,
	SYS_accept4,
	SYS_socket,
	SYS_connect,
	SYS_shutdown,
	SYS_getsockopt,
	SYS_setsockopt,
	SYS_ioctl, /* SIOCOUTQ, FIONREAD */
	SYS_fcntl,
	SYS_close,
	SYS_futex,
	SC_MEMORY,
	SC_SLEEP,
	SC_IDS,
	SC_END,
	SYS_rt_sigprocmask,
	SYS_rt_sigreturn,
	SYS_sched_yield,
};
/* clang-format on */

int vm_seccomp_install_chan_thread(enum scf_mode mode)
{
	return install(chan_allow, ELEMENTSOF(chan_allow), mode, 0);
}
