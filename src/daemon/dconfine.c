/* dconfine.c - capsemd's confinement and the mkfs.ext4 it runs (dconfine.h;
 * docs/ARCHITECTURE.md, "Host confinement").
 *
 * capsemd starts every capsem-vm, which starts QEMU and the MCP servers: a Landlock domain is
 * inherited, so capsemd's must hold everything they need (VM directories and sessions in
 * $CAPSEM_HOME, the images, workspaces and --mount directories the user names, which is why the
 * user's visible entries of $HOME and /tmp are in it) and nothing else: no dot-files of $HOME
 * (~/.ssh, ~/.gnupg, ~/.aws, ~/.config ...) except $CAPSEM_HOME and the package caches ~/.npm
 * and ~/.cache the MCP servers use. Entries made in $HOME after capsemd started are not in it
 * (restart capsemd to share them).
 *
 * One exception: as root the workspace is served by virtiofsd, whose own sandbox (a mount
 * namespace and pivot_root into the workspace) cannot be built by a process in a Landlock
 * domain (Landlock forbids mount and pivot_root). Root's capsemd therefore keeps no_new_privs
 * only and says so; capsem-vm confines itself after starting virtiofsd.
 *
 * Trust boundary: none crossed; it narrows what capsemd and its children can reach. Main thread
 * before the loop (dconfine_self), a worker thread (dconfine_mkfs_ruleset).
 */
#include "dconfine.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "home.h"
#include "hostcg.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"

static int confine_enabled(void)
{
	const char *e = getenv("CAPSEM_CONFINE");
	return !(e && streq(e, "0"));
}

static int allow_opt(struct ll_ruleset *rs, const char *p, unsigned access)
{
	int r = ll_allow(rs, p, access);
	return r == -ENOENT ? 0 : r;
}

/* $HOME's entries that are not dot-files, and the package caches */
static int allow_home(struct ll_ruleset *rs)
{
	_cleanup_free_ char *home = NULL;
	if (user_home(&home) < 0)
		return 0;
	DIR *d = opendir(home);
	if (!d)
		return 0;
	int r = 0;
	struct dirent *e;
	while (r >= 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[4096];
		if (snprintf(p, sizeof(p), "%s/%s", home, e->d_name) >= (int)sizeof(p))
			continue;
		r = allow_opt(rs, p, LL_RW);
	}
	closedir(d);
	static const char *const caches[] = { ".npm", ".cache" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(caches); i++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", home, caches[i]);
		r = allow_opt(rs, p, LL_RW);
	}
	return r;
}

static int self_rules(struct ll_ruleset *rs, const char *home, const char *images,
		      const char *vm_bin)
{
	int r = ll_allow_system(rs, LL_SYS_EXEC | LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, home, LL_RW);
	if (r >= 0)
		r = allow_opt(rs, images, LL_READ);
	if (r >= 0)
		r = ll_allow(rs, vm_bin, LL_RX);
	/* the binaries capsem-vm runs when the environment names them (else they are in /usr) */
	static const char *const bins[] = { "CAPSEM_QEMU", "CAPSEM_VIRTIOFSD" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(bins); i++) {
		const char *b = getenv(bins[i]);
		if (b && b[0] == '/')
			r = allow_opt(rs, b, LL_RX);
	}
	if (r >= 0)
		r = allow_home(rs);
	/* workspaces and shares in temporary directories */
	static const char *const tmp[] = { "/tmp", "/var/tmp" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(tmp); i++)
		r = allow_opt(rs, tmp[i], LL_RW);
	/* what capsem-vm and QEMU need beneath us: KVM, host facts, the kernel log (seccomp
	 * reports), QEMU's cgroups */
	if (r >= 0)
		r = allow_opt(rs, "/dev/kvm", LL_DEV);
	static const char *const ro[] = { "/sys/devices/system/cpu", "/sys/kernel/mm",
					  "/dev/kmsg" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(ro); i++)
		r = allow_opt(rs, ro[i], LL_READ);
	/* QEMU's child maps its user namespace (/proc/<pid>/uid_map; capsem-vm runs as us) */
	if (r >= 0)
		r = allow_opt(rs, "/proc", LL_READ | LL_WRFILE);
	for (int k = 0; r >= 0 && k < HOSTCG_N; k++) {
		char cg[4096];
		if (hostcg_own_dir(k, cg, sizeof(cg)) == 0 && access(cg, W_OK) == 0)
			r = allow_opt(rs, cg, LL_RW);
	}
	return r;
}

int dconfine_self(const char *home, const char *images, const char *vm_bin)
{
	if (!confine_enabled()) {
		log_warn("confinement: off (CAPSEM_CONFINE=0, for measurements only)");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_error_errno(negative_errno(), "cannot set no_new_privs");
	if (geteuid() == 0) {
		log_info("confinement: capsemd runs without Landlock as root: the workspace's "
			 "virtiofsd builds its sandbox with pivot_root, which Landlock forbids "
			 "(capsem-vm, QEMU and the MCP servers are confined)");
		return 0;
	}
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, 0);
	if (r < 0)
		return log_error_errno(r, "cannot create a Landlock ruleset");
	if (rs.fd < 0) {
		log_warn("confinement: Landlock not enforced for capsemd (%s)", ll_describe());
		return 0;
	}
	r = self_rules(&rs, home, images, vm_bin);
	if (r >= 0)
		r = ll_restrict_self(rs.fd);
	ll_ruleset_done(&rs);
	if (r < 0)
		return log_error_errno(r, "cannot apply capsemd's Landlock ruleset");
	return 0;
}

int dconfine_mkfs_ruleset(const char *mkfs, const char *target, struct ll_ruleset *rs)
{
	*rs = (struct ll_ruleset){ .fd = -1 };
	if (!confine_enabled())
		return 0;
	int r = ll_ruleset_new(rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0 || rs->fd < 0)
		return r;
	/* mke2fs reads /proc/mounts (is the target mounted?) and its configuration in /etc */
	r = ll_allow_system(rs, LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, mkfs, LL_RX);
	if (r >= 0)
		r = ll_allow(rs, target, LL_RW);
	if (r < 0)
		ll_ruleset_done(rs);
	return r;
}
