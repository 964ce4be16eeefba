/* dseccomp.c - the seccomp allow-lists of capsemd and of the tools it runs (dseccomp.h;
 * docs/ARCHITECTURE.md, "Host confinement").
 *
 * A filter is inherited by every child and kept across exec, and it cannot be removed: capsemd's
 * applies to capsem-vm, QEMU, the MCP servers, the workspace's 9p server and virtiofsd, mkfs,
 * tar and capsem-gateway, each of which may install a narrower one beneath it (the kernel runs
 * them all: the strictest answer wins). So capsemd's list is the union of what that whole tree
 * makes, a superset of every filter below it (scripts/check-seccomp-lists.py checks it in make
 * check): capsem-vm's list (src/shared/vmsyscalls.c, the same array: QEMU, Python and Node MCP
 * servers) plus what virtiofsd as root and GNU tar as root need. It is broad for a daemon, by necessity, and what
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
 * tar's is mkfs's and what unpacking writes (directories, links, owners, modes, times, xattrs,
 * overlay whiteouts); no sockets, no processes either.
 *
 * Trust boundary: none crossed; it narrows what capsemd and its children may ask of the kernel.
 * capsemd's: main thread before any other exists (TSYNC anyway); mkfs's: built on a worker
 * thread, loaded in the child between fork and exec.
 */
#include "dseccomp.h"

#include <string.h>
#include <sys/syscall.h>

#include "macro.h"
#include "vmsyscalls.h"

/* capsemd's list is capsem-vm's (src/shared/vmsyscalls.c: it and QEMU and the MCP servers make
 * most; measured, most frequent first) and these, which only capsemd's other children make */
static const int capsemd_extra[] = {
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

/* GNU tar 1.34, beyond mke2fs's list: what unpacking writes (directories, links, owners,
 * modes, times, overlay xattrs, whiteouts) */
static const int tar_extra[] = {
	SYS_mkdirat,  SYS_mkdir,     SYS_unlinkat, SYS_unlink,	  SYS_rmdir,	 SYS_symlinkat,
	SYS_symlink,  SYS_linkat,    SYS_link,	   SYS_renameat,  SYS_renameat2, SYS_rename,
	SYS_mknodat,  SYS_mknod,     SYS_fchownat, SYS_fchown,	  SYS_lchown,	 SYS_chown,
	SYS_fchmodat, SYS_fchmod,    SYS_chmod,	   SYS_utimensat, SYS_umask,	 SYS_lsetxattr,
	SYS_setxattr, SYS_fsetxattr, SYS_creat,
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

#define CAPSEMD_MAX 320 /* capsem-vm's list, capsemd's extras and the mounts */

/* capsemd's allow-list into out: capsem-vm's, its extras, the mounts when with_mounts. The
 * count. */
static size_t capsemd_list(int with_mounts, int *out)
{
	size_t n = 0;
	for (size_t i = 0; i < vm_syscalls_n && n < CAPSEMD_MAX; i++)
		out[n++] = vm_syscalls[i];
	for (size_t i = 0; i < ELEMENTSOF(capsemd_extra) && n < CAPSEMD_MAX; i++)
		out[n++] = capsemd_extra[i];
	for (size_t i = 0; with_mounts && i < ELEMENTSOF(mounts_allow) && n < CAPSEMD_MAX; i++)
		out[n++] = mounts_allow[i];
	return n;
}

int dseccomp_install(enum scf_mode mode, int with_mounts)
{
	int allow[CAPSEMD_MAX], kill[64];
	size_t n_allow = capsemd_list(with_mounts, allow);
	if (n_allow == CAPSEMD_MAX)
		return -E2BIG;
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

int dseccomp_tar_build(enum scf_mode mode, struct scf_prog *ret)
{
	int allow[ELEMENTSOF(mkfs_allow) + ELEMENTSOF(tar_extra)], kill[64];
	memcpy(allow, mkfs_allow, sizeof(mkfs_allow));
	memcpy(allow + ELEMENTSOF(mkfs_allow), tar_extra, sizeof(tar_extra));
	size_t n_kill = kill_list(allow, ELEMENTSOF(allow), NULL, 0, kill, ELEMENTSOF(kill));
	return scf_build(allow, ELEMENTSOF(allow), kill, n_kill, mode, ret);
}

int dseccomp_allows(int nr, int with_mounts)
{
	return in(vm_syscalls, vm_syscalls_n, nr) ||
	       in(capsemd_extra, ELEMENTSOF(capsemd_extra), nr) ||
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

int dseccomp_tar_allows(int nr)
{
	return dseccomp_mkfs_allows(nr) || in(tar_extra, ELEMENTSOF(tar_extra), nr);
}
