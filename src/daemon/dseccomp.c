/* dseccomp.c - the seccomp allow-lists of capsemd and of the mkfs.ext4 it runs (dseccomp.h;
 * docs/ARCHITECTURE.md, "Host confinement").
 *
 * A filter is inherited by every child and kept across exec, and it cannot be removed: capsemd's
 * applies to capsem-vm, QEMU, the MCP servers, the workspace's 9p server and virtiofsd, mkfs,
 * tar and capsem-gateway, each of which may install a narrower one beneath it (the kernel runs
 * them all: the strictest answer wins). So capsemd's list is the union of what that whole tree
 * makes, a superset of every filter below it (scripts/check-seccomp-lists.py checks it in make
 * check): capsem-vm's list (src/vm/vmseccomp.c: QEMU, Python and Node MCP servers) plus what
 * virtiofsd as root and GNU tar as root need. It is broad for a daemon, by necessity, and what
 * it buys is what it leaves out: the escape kit (scf_kill_escape: ptrace, bpf, kexec, modules,
 * keys, the mount API, setns... kill the process), io_uring (its operations bypass seccomp),
 * Linux AIO, ancient and obscure interfaces (uselib, sysfs, personality, modify_ldt, vm86,
 * remap_file_pages, the NUMA page movers, pkeys, fanotify, name_to_handle_at...) and every
 * syscall newer than this list (ENOSYS), for every process beneath the daemon, including those
 * started before their own confinement is in place (virtiofsd, the children between fork and
 * exec). Exceptions: mount, umount2 and pivot_root, killed unless root runs without Landlock,
 * where virtiofsd builds its namespace sandbox with them (dconfine.c); chroot, allowed for
 * virtiofsd's chroot sandbox; userfaultfd, refused without a kill (virtiofsd probes it).
 *
 * mkfs.ext4's list is small: what the loader, libc and mke2fs make (measured with strace over
 * mkfs.ext4 and mkfs.ext4 -d of a tree with xattrs and device nodes); no sockets, no processes.
 *
 * Trust boundary: none crossed; it narrows what capsemd and its children may ask of the kernel.
 * capsemd's: main thread before any other exists (TSYNC anyway); mkfs's: built on a worker
 * thread, loaded in the child between fork and exec.
 */
#include "dseccomp.h"

#include <string.h>
#include <sys/syscall.h>

#include "macro.h"

/* most frequent first: capsem-vm's order, which is measured (its hot paths are QEMU's and the
 * proxy's), then what only capsemd's other children make */
static const int capsemd_allow[] = {
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
	SYS_time,
	/* files */
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
	SYS_inotify_rm_watch,
	/* memory */
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
	SYS_set_mempolicy,
	/* sockets, pipes, events */
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
	/* QEMU's confinement (its child, QEMU's -sandbox), the MCP launcher's, mkfs's, the gateway's */
	SYS_unshare,
	SYS_seccomp,
	SYS_landlock_create_ruleset,
	SYS_landlock_add_rule,
	SYS_landlock_restrict_self,
	/* beyond capsem-vm's list: the workspace's virtiofsd as root (chroot into the workspace,
	 * capabilities dropped, the guest's credentials taken per request, device-less nodes),
	 * GNU tar as root unpacking a fork's overlay (owners, whiteouts) */
	SYS_chroot,
	SYS_capset,
	SYS_setresuid,
	SYS_setresgid,
	SYS_setgroups,
	SYS_mknodat,
	SYS_mknod,
	/* in virtiofsd's own list (GLib's thread pool copies a thread's scheduling policy) */
	SYS_sched_getattr,
	SYS_sched_setattr,
};

/* of scf_kill_escape, refused (the default, ENOSYS) rather than killed: virtiofsd probes
 * userfaultfd at every connection (libvhost-user's post-copy check; its own filter answers
 * ENOSYS, and a kill above it would win) */
static const int capsemd_not_killed[] = { SYS_userfaultfd };

/* killed by scf_kill_escape, let through only for virtiofsd's namespace sandbox (root without
 * Landlock) */
static const int mounts_allow[] = { SYS_mount, SYS_umount2, SYS_pivot_root };

/* mke2fs (e2fsprogs 1.47) with the loader and libc, -d included: files and memory only */
static const int mkfs_allow[] = {
	SYS_pwrite64,
	SYS_pread64,
	SYS_read,
	SYS_write,
	SYS_writev,
	SYS_lseek,
	SYS_openat,
	SYS_open,
	SYS_close,
	SYS_newfstatat,
	SYS_fstat,
	SYS_stat,
	SYS_lstat,
	SYS_statx,
	SYS_statfs,
	SYS_fstatfs,
	SYS_access,
	SYS_faccessat,
	SYS_faccessat2,
	SYS_readlink,
	SYS_readlinkat,
	SYS_getdents64,
	SYS_chdir,
	SYS_fchdir,
	SYS_getcwd,
	SYS_llistxattr,
	SYS_listxattr,
	SYS_flistxattr,
	SYS_lgetxattr,
	SYS_getxattr,
	SYS_fgetxattr,
	SYS_ioctl,
	SYS_fcntl,
	SYS_dup,
	SYS_dup2,
	SYS_fsync,
	SYS_fdatasync,
	SYS_fallocate,
	SYS_ftruncate,
	SYS_mmap,
	SYS_munmap,
	SYS_mprotect,
	SYS_mremap,
	SYS_madvise,
	SYS_brk,
	SYS_futex,
	SYS_getrandom,
	SYS_uname,
	SYS_sysinfo,
	SYS_prctl,
	SYS_prlimit64,
	SYS_getrlimit,
	SYS_getpid,
	SYS_getppid,
	SYS_gettid,
	SYS_getuid,
	SYS_geteuid,
	SYS_getgid,
	SYS_getegid,
	SYS_clock_gettime,
	SYS_gettimeofday,
	SYS_time,
	SYS_rt_sigaction,
	SYS_rt_sigprocmask,
	SYS_rt_sigreturn,
	SYS_restart_syscall,
	SYS_tgkill,
	SYS_execve,
	SYS_arch_prctl,
	SYS_set_tid_address,
	SYS_set_robust_list,
	SYS_rseq,
	SYS_exit,
	SYS_exit_group,
};

static int in(const int *list, size_t n, int nr)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == nr)
			return 1;
	return 0;
}

/* scf_kill_escape without what allow lets through (chroot, for capsemd's) and what spare names
 * (refused without a kill) */
static size_t kill_list(const int *allow, size_t n_allow, const int *spare, size_t n_spare,
			int *out, size_t cap)
{
	size_t n_esc, n = 0;
	const int *esc = scf_kill_escape(&n_esc);
	for (size_t i = 0; i < n_esc && n < cap; i++)
		if (!in(allow, n_allow, esc[i]) && !in(spare, n_spare, esc[i]))
			out[n++] = esc[i];
	return n;
}

int dseccomp_install(enum scf_mode mode, int with_mounts)
{
	int allow[ELEMENTSOF(capsemd_allow) + ELEMENTSOF(mounts_allow)], kill[64];
	size_t n_allow = ELEMENTSOF(capsemd_allow);
	memcpy(allow, capsemd_allow, sizeof(capsemd_allow));
	if (with_mounts) {
		memcpy(allow + n_allow, mounts_allow, sizeof(mounts_allow));
		n_allow += ELEMENTSOF(mounts_allow);
	}
	size_t n_kill = kill_list(allow, n_allow, capsemd_not_killed,
				  ELEMENTSOF(capsemd_not_killed), kill, ELEMENTSOF(kill));
	return scf_install(allow, n_allow, kill, n_kill, mode);
}

int dseccomp_mkfs_build(enum scf_mode mode, struct scf_prog *ret)
{
	int kill[64];
	size_t n_kill =
		kill_list(mkfs_allow, ELEMENTSOF(mkfs_allow), NULL, 0, kill, ELEMENTSOF(kill));
	return scf_build(mkfs_allow, ELEMENTSOF(mkfs_allow), kill, n_kill, mode, ret);
}

int dseccomp_allows(int nr, int with_mounts)
{
	return in(capsemd_allow, ELEMENTSOF(capsemd_allow), nr) ||
	       (with_mounts && in(mounts_allow, ELEMENTSOF(mounts_allow), nr));
}

int dseccomp_kills(int nr, int with_mounts)
{
	size_t n_esc;
	const int *esc = scf_kill_escape(&n_esc);
	return in(esc, n_esc, nr) && !dseccomp_allows(nr, with_mounts) &&
	       !in(capsemd_not_killed, ELEMENTSOF(capsemd_not_killed), nr);
}

int dseccomp_mkfs_allows(int nr)
{
	return in(mkfs_allow, ELEMENTSOF(mkfs_allow), nr);
}
