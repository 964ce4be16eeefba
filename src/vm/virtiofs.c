/* virtiofs.c - spawning the workspace's virtiofsd (virtiofs.h).
 *
 * Its sandbox is one of two (confinfo_virtiofsd_chroot()):
 *   - under Landlock (the default): capsemd, and so capsem-vm, run in a Landlock domain, where
 *     mount and pivot_root are refused; virtiofsd gets `-o sandbox=chroot` (chroot(2) into the
 *     shared directory, which Landlock allows; virtiofsd then drops CAP_SYS_CHROOT and its
 *     seccomp filter refuses chroot) and, from capsem-vm between fork and exec, an empty
 *     network namespace and a Landlock ruleset of its own: the shared directory read-write
 *     (no device nodes), the system and /proc read-only (its /proc/self/fd), execute only
 *     itself; no TCP, no signals or abstract sockets out of its domain. Landlock is what
 *     replaces the mount namespace: a path outside the workspace cannot be opened even through
 *     a chroot escape, and Landlock's ptrace rule keeps it out of other processes' memory;
 *   - without Landlock: `-o sandbox=namespace` (its own mount, PID and network namespaces,
 *     pivot_root into the shared directory, so it cannot name a host path outside it; its
 *     mounts are slaves of ours).
 * Either way a host mount made below a shared (rshared) folder later still reaches the guest
 * (the containerd shim's pod directory), announced to the guest as a submount.
 * Either way its built-in seccomp filter, dropped capabilities and no_new_privs; `-o cache=auto`
 * (metadata cached for 1 s: a host-side change is visible in the guest within that; a guest
 * write reaches the host file at once, no writeback cache); no xattrs, no POSIX locks passed
 * to the host. capsem-vm creates the listening socket and hands it over as fd 3 (`--fd=3`), so
 * QEMU never races virtiofsd's start.
 *
 * Trust boundary: virtiofsd parses the guest's FUSE requests: it is guest-facing and confined
 * as said; capsem-vm only starts (confine_spawn), watches and kills it.
 */
#include "virtiofs.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "confine.h"
#include "fdutil.h"
#include "landlock.h"
#include "macro.h"
#include "strv.h"

int virtiofs_find(char **ret)
{
	const char *env = getenv("CAPSEM_VIRTIOFSD");
	if (env && *env)
		return find_program(env, ret);
	if (access(VIRTIOFS_DEFAULT_BIN, X_OK) == 0) {
		*ret = strdup(VIRTIOFS_DEFAULT_BIN);
		return *ret ? 0 : -ENOMEM;
	}
	return find_program("virtiofsd", ret);
}

char **virtiofs_argv(const char *binary, const char *source, int chroot_sandbox)
{
	char **v = NULL;
	int r = strv_push(&v, binary);
	r |= strv_push(&v, "--fd=3");
	r |= strv_push(&v, "-o");
	r |= strv_pushf(&v, "source=%s", source);
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "cache=auto");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, chroot_sandbox ? "sandbox=chroot" : "sandbox=namespace");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "no_posix_lock");
	/* a host mount below the shared folder (a containerd pod's container roots and volumes,
	 * bound in while the VM runs) is a submount in the guest: its own st_dev, as on the host
	 * (no inode numbers of two file systems mixed under one device), and one the guest can
	 * unmount, which makes it forget the inodes virtiofsd holds an fd for */
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "announce_submounts");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "log_level=warn");
	if (r < 0) {
		strv_free(v);
		return NULL;
	}
	return v;
}

/* virtiofsd's own ruleset in chroot mode: the shared directory, the system read-only, itself */
static int chroot_ruleset(const char *binary, const char *source, struct ll_ruleset *rs)
{
	int r = ll_ruleset_new(rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0 || rs->fd < 0)
		return r;
	r = ll_allow_system(rs, LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, binary, LL_RX);
	if (r >= 0)
		r = ll_allow(rs, source, LL_RW);
	if (r < 0)
		ll_ruleset_done(rs);
	return r;
}

int virtiofs_spawn(char *const *argv, const char *source, int chroot_sandbox, int listen_fd,
		   int log_fd, pid_t *ret_pid, int *ret_pidfd)
{
	/* root only (vmworkspace.c): virtiofsd drops its capabilities and installs its seccomp
	 * filter itself; it keeps root's uid, but gains nothing across its exec */
	struct confine_opts o = { .flags = CONFINE_NO_NEW_PRIVS, .landlock_fd = -1 };
	struct ll_ruleset rs = { .fd = -1 };
	if (chroot_sandbox) {
		int r = chroot_ruleset(argv[0], source, &rs);
		if (r < 0)
			return r;
		o.flags |= CONFINE_NETNS;
		o.landlock_fd = rs.fd;
	}
	int r = confine_spawn(argv, log_fd, listen_fd, &o, ret_pid, ret_pidfd);
	ll_ruleset_done(&rs);
	return r;
}
