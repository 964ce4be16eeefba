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

/* capsem-vm's syscalls, with those of what it runs (QEMU, the MCP servers: Python, Node), most
 * frequent first. Measured: a VM with a workspace, a Python MCP server, execs, DNS, the proxy
 * (perf record -e raw_syscalls:sys_enter over capsem-vm and its children) used 97 of these, and
 * the e2e suite run with the filter enforcing and logging had no ENOSYS answer; the rest are
 * the neighbours libc, Python and Node reach for on other paths (the *at and v variants,
 * timers, xattrs). Left out on purpose: io_uring (its operations bypass seccomp) and Linux AIO
 * (QEMU uses threads), mknod (device nodes), memory-protection keys, NUMA binding, real-time
 * scheduling. Anything not listed: ENOSYS, which libc and libuv treat as "older kernel". */
static const int allow[] = {
	SYS_read,
	SYS_write,
	SYS_epoll_wait,
	SYS_epoll_pwait,
	SYS_futex,
	SYS_recvmsg,
	SYS_sendmsg,
	SYS_readv,
	SYS_writev,
	SYS_pread64,
	SYS_pwrite64,
	SYS_preadv,
	SYS_pwritev,
	SYS_preadv2,
	SYS_pwritev2,
	SYS_recvfrom,
	SYS_sendto,
	SYS_recvmmsg,
	SYS_sendmmsg,
	SYS_poll,
	SYS_ppoll,
	SYS_select,
	SYS_pselect6,
	SYS_epoll_ctl,
	SYS_epoll_create,
	SYS_epoll_create1,
	SYS_epoll_pwait2,
	SYS_clock_gettime,
	SYS_clock_getres,
	SYS_clock_nanosleep,
	SYS_nanosleep,
	SYS_gettimeofday,
	SYS_time, /* files */
	SYS_close,
	SYS_close_range,
	SYS_dup,
	SYS_dup2,
	SYS_dup3,
	SYS_fcntl,
	SYS_ioctl,
	SYS_lseek,
	SYS_fstat,
	SYS_newfstatat,
	SYS_statx,
	SYS_stat,
	SYS_lstat,
	SYS_fstatfs,
	SYS_statfs,
	SYS_openat,
	SYS_open,
	SYS_openat2,
	SYS_creat,
	SYS_access,
	SYS_faccessat,
	SYS_faccessat2,
	SYS_readlink,
	SYS_readlinkat,
	SYS_getdents64,
	SYS_getdents,
	SYS_getcwd,
	SYS_chdir,
	SYS_fchdir,
	SYS_mkdir,
	SYS_mkdirat,
	SYS_rmdir,
	SYS_unlink,
	SYS_unlinkat,
	SYS_rename,
	SYS_renameat,
	SYS_renameat2,
	SYS_link,
	SYS_linkat,
	SYS_symlink,
	SYS_symlinkat,
	SYS_fchmod,
	SYS_fchmodat,
	SYS_chmod,
	SYS_fchown,
	SYS_fchownat,
	SYS_lchown,
	SYS_chown,
	SYS_ftruncate,
	SYS_truncate,
	SYS_fsync,
	SYS_fdatasync,
	SYS_syncfs,
	SYS_fallocate,
	SYS_sync_file_range,
	SYS_utimensat,
	SYS_futimesat,
	SYS_utimes,
	SYS_utime,
	SYS_flock,
	SYS_copy_file_range,
	SYS_sendfile,
	SYS_splice,
	SYS_tee,
	SYS_umask,
	SYS_fadvise64,
	SYS_readahead,
	SYS_getxattr,
	SYS_lgetxattr,
	SYS_fgetxattr,
	SYS_listxattr,
	SYS_llistxattr,
	SYS_flistxattr,
	SYS_setxattr,
	SYS_lsetxattr,
	SYS_fsetxattr,
	SYS_removexattr,
	SYS_lremovexattr,
	SYS_fremovexattr,
	SYS_inotify_init1,
	SYS_inotify_add_watch,
	SYS_inotify_rm_watch, /* memory */
	SYS_mmap,
	SYS_munmap,
	SYS_mprotect,
	SYS_mremap,
	SYS_madvise,
	SYS_brk,
	SYS_msync,
	SYS_mlock,
	SYS_mlock2,
	SYS_munlock,
	SYS_mincore,
	SYS_memfd_create,
	SYS_membarrier,
	SYS_get_mempolicy,
	SYS_set_mempolicy, /* sockets, pipes, events */
	SYS_socket,
	SYS_socketpair,
	SYS_bind,
	SYS_listen,
	SYS_accept,
	SYS_accept4,
	SYS_connect,
	SYS_getsockname,
	SYS_getpeername,
	SYS_setsockopt,
	SYS_getsockopt,
	SYS_shutdown,
	SYS_pipe,
	SYS_pipe2,
	SYS_eventfd,
	SYS_eventfd2,
	SYS_signalfd,
	SYS_signalfd4,
	SYS_timerfd_create,
	SYS_timerfd_settime,
	SYS_timerfd_gettime,
	/* signals, processes, threads */
	SYS_rt_sigaction,
	SYS_rt_sigprocmask,
	SYS_rt_sigreturn,
	SYS_rt_sigtimedwait,
	SYS_rt_sigsuspend,
	SYS_rt_sigqueueinfo,
	SYS_rt_tgsigqueueinfo,
	SYS_rt_sigpending,
	SYS_sigaltstack,
	SYS_kill,
	SYS_tgkill,
	SYS_tkill,
	SYS_pidfd_open,
	SYS_pidfd_send_signal,
	SYS_clone,
	SYS_clone3,
	SYS_fork,
	SYS_vfork,
	SYS_execve,
	SYS_execveat,
	SYS_wait4,
	SYS_waitid,
	SYS_exit,
	SYS_exit_group,
	SYS_set_tid_address,
	SYS_set_robust_list,
	SYS_get_robust_list,
	SYS_rseq,
	SYS_arch_prctl,
	SYS_prctl,
	SYS_prlimit64,
	SYS_getrlimit,
	SYS_setrlimit,
	SYS_getrusage,
	SYS_sched_yield,
	SYS_sched_getaffinity,
	SYS_sched_setaffinity,
	SYS_sched_getparam,
	SYS_sched_getscheduler,
	SYS_sched_get_priority_max,
	SYS_sched_get_priority_min,
	SYS_getpriority,
	SYS_setpriority,
	SYS_alarm,
	SYS_setitimer,
	SYS_getitimer,
	SYS_pause,
	SYS_restart_syscall,
	SYS_getpid,
	SYS_getppid,
	SYS_gettid,
	SYS_getuid,
	SYS_geteuid,
	SYS_getgid,
	SYS_getegid,
	SYS_getgroups,
	SYS_getresuid,
	SYS_getresgid,
	SYS_setsid,
	SYS_getsid,
	SYS_getpgid,
	SYS_getpgrp,
	SYS_setpgid,
	SYS_capget,
	SYS_uname,
	SYS_sysinfo,
	SYS_getrandom,
	SYS_getcpu,
	SYS_times,
	SYS_ioprio_get,
	SYS_ioprio_set,
	/* QEMU's confinement, applied in its child and by QEMU itself; the MCP launcher's */
	SYS_unshare,
	SYS_seccomp,
	SYS_landlock_create_ruleset,
	SYS_landlock_add_rule,
	SYS_landlock_restrict_self,
};

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
	return install(allow, ELEMENTSOF(allow), mode, 1);
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
