/* virtiofs.c - spawning the workspace's virtiofsd (virtiofs.h).
 *
 * virtiofsd runs with `-o sandbox=namespace` (its own mount, PID and network namespaces,
 * pivot_root into the shared directory, so it cannot name a host path outside it; it makes its
 * namespace's mounts slaves of ours, so a host mount made below a shared (rshared) folder later
 * still reaches the guest: the containerd shim's pod directory) and its built-in seccomp filter; `-o cache=auto` (metadata cached for 1 s: a host-side change is
 * visible in the guest within that; a guest write reaches the host file at once, no writeback
 * cache); no xattrs, no POSIX locks passed to the host; host mounts below the folder announced
 * to the guest as submounts. capsem-vm creates the listening socket
 * and hands it over as fd 3 (`--fd=3`), so QEMU never races virtiofsd's start.
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

char **virtiofs_argv(const char *binary, const char *source)
{
	char **v = NULL;
	int r = strv_push(&v, binary);
	r |= strv_push(&v, "--fd=3");
	r |= strv_push(&v, "-o");
	r |= strv_pushf(&v, "source=%s", source);
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "cache=auto");
	r |= strv_push(&v, "-o");
	r |= strv_push(&v, "sandbox=namespace");
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

int virtiofs_spawn(char *const *argv, int listen_fd, int log_fd, pid_t *ret_pid, int *ret_pidfd)
{
	/* root only (vmworkspace.c): virtiofsd builds its own namespaces and seccomp filter; it
	 * keeps root's capabilities, but gains nothing across its exec */
	struct confine_opts o = { .flags = CONFINE_NO_NEW_PRIVS, .landlock_fd = -1 };
	return confine_spawn(argv, log_fd, listen_fd, &o, ret_pid, ret_pidfd);
}
