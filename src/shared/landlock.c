/* landlock.c - Landlock rulesets through the raw syscalls (landlock.h).
 *
 * Debian's <linux/landlock.h> stops at ABI 2, so the newer rights, the network and scope fields
 * of the ruleset attribute are defined here with the kernel's values; a bigger attribute whose
 * extra fields are zero is accepted by older kernels. Rights the running ABI does not know are
 * masked off before the ruleset is created (the kernel refuses unknown bits).
 *
 * Trust boundary: none crossed; it only narrows what the calling process (or the child about to
 * exec) can reach. Any thread may build a ruleset; ll_restrict_self is async-signal-safe.
 */
#include "landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

/* rights added after ABI 2 (the kernel's include/uapi/linux/landlock.h) */
#define LL_FS_TRUNCATE (1ULL << 14)  /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#define LL_NET_BIND_TCP (1ULL << 0)  /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL_ (1ULL << 1)
#define LL_RESTRICT_LOG_NEW_EXEC_ON (1U << 1) /* ABI 7 */

/* the ruleset attribute as of ABI 6 */
struct ll_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

#define LL_FS_ABI1                                                        \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |     \
	 LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |     \
	 LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE | \
	 LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |     \
	 LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |     \
	 LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |   \
	 LANDLOCK_ACCESS_FS_MAKE_SYM)
/* the rights a rule on a file (not a directory) may carry */
#define LL_FS_FILE                                                    \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
	 LANDLOCK_ACCESS_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)

static uint64_t fs_rights_for_abi(int abi)
{
	uint64_t r = LL_FS_ABI1;
	if (abi >= 2)
		r |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		r |= LL_FS_TRUNCATE;
	if (abi >= 5)
		r |= LL_FS_IOCTL_DEV;
	return r;
}

int ll_abi(void)
{
	static int cached;
	if (cached == 0) {
		long v = syscall(__NR_landlock_create_ruleset, NULL, 0,
				 LANDLOCK_CREATE_RULESET_VERSION);
		cached = v > 0 ? (int)v : -(errno ? errno : ENOSYS);
	}
	return cached;
}

const char *ll_describe(void)
{
	static char s[96];
	int abi = ll_abi();
	if (abi > 0)
		snprintf(s, sizeof(s), "ABI %d", abi);
	else
		snprintf(s, sizeof(s), "unavailable (%s)",
			 abi == -EOPNOTSUPP ? "disabled at boot: add landlock to lsm="
					    : "kernel without Landlock");
	return s;
}

int ll_ruleset_new(struct ll_ruleset *rs, unsigned handles)
{
	int abi = ll_abi();
	*rs = (struct ll_ruleset){ .fd = -1, .abi = abi };
	if (abi <= 0)
		return 0;
	struct ll_attr a = { .handled_access_fs = fs_rights_for_abi(abi) };
	if (abi >= 4 && (handles & LL_NO_TCP))
		a.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
	if (abi >= 6 && (handles & LL_SCOPE_SIGNAL))
		a.scoped |= LL_SCOPE_SIGNAL_;
	if (abi >= 6 && (handles & LL_SCOPE_ABSTRACT))
		a.scoped |= LL_SCOPE_ABSTRACT_UNIX;
	/* an ABI < 4 kernel knows only the first field: pass only what it knows */
	size_t size = abi >= 6 ? sizeof(a) : abi >= 4 ? 2 * sizeof(uint64_t) : sizeof(uint64_t);
	long fd = syscall(__NR_landlock_create_ruleset, &a, size, 0);
	if (fd < 0)
		return negative_errno();
	rs->fd = (int)fd;
	rs->fs_handled = a.handled_access_fs;
	return 0;
}

static uint64_t rights_of(unsigned access)
{
	uint64_t r = 0;
	if (access & LL_READ)
		r |= LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
	if (access & LL_EXEC)
		r |= LANDLOCK_ACCESS_FS_EXECUTE;
	if (access & LL_WRITE)
		r |= LANDLOCK_ACCESS_FS_WRITE_FILE | LL_FS_TRUNCATE |
		     LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
		     LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
		     LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
		     LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER;
	if (access & LL_DEV)
		r |= LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE | LL_FS_IOCTL_DEV;
	if (access & LL_RMDIR)
		r |= LANDLOCK_ACCESS_FS_REMOVE_DIR;
	if (access & LL_MKSOCK)
		r |= LANDLOCK_ACCESS_FS_MAKE_SOCK;
	if (access & LL_WRFILE)
		r |= LANDLOCK_ACCESS_FS_WRITE_FILE;
	if (access & LL_MKCHAR)
		r |= LANDLOCK_ACCESS_FS_MAKE_CHAR;
	return r;
}

int ll_allow(struct ll_ruleset *rs, const char *path, unsigned access)
{
	if (rs->fd < 0)
		return 0;
	_cleanup_close_ int fd = open(path, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	struct stat st;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	uint64_t r = rights_of(access) & rs->fs_handled;
	if (!S_ISDIR(st.st_mode))
		r &= LL_FS_FILE;
	if (!r)
		return 0;
	struct landlock_path_beneath_attr pb = { .allowed_access = r, .parent_fd = fd };
	if (syscall(__NR_landlock_add_rule, rs->fd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
		return negative_errno();
	return 0;
}

int ll_restrict_self(int fd)
{
	if (fd < 0)
		return 0;
	/* from ABI 7: log the denials of the program the caller is about to exec too (the audit
	 * log then names what a confined QEMU or MCP server was refused) */
	unsigned flags = ll_abi() >= 7 ? LL_RESTRICT_LOG_NEW_EXEC_ON : 0;
	return syscall(__NR_landlock_restrict_self, fd, flags) < 0 ? -errno : 0;
}

void ll_ruleset_done(struct ll_ruleset *rs)
{
	if (rs && rs->fd >= 0)
		rs->fd = safe_close(rs->fd);
}

/* read by libc, the loader, TLS libraries, Python and Node on this kind of host */
static const char *const etc_read[] = {
	"/etc/ld.so.cache",
	"/etc/ld.so.conf",
	"/etc/ld.so.conf.d",
	"/etc/ld.so.preload",
	"/etc/localtime",
	"/etc/timezone",
	"/etc/nsswitch.conf",
	"/etc/passwd",
	"/etc/group",
	"/etc/hosts",
	"/etc/host.conf",
	"/etc/resolv.conf",
	"/etc/gai.conf",
	"/etc/services",
	"/etc/protocols",
	"/etc/ssl",
	"/etc/ca-certificates",
	"/etc/ca-certificates.conf",
	"/etc/pki",
	"/etc/crypto-policies",
	"/etc/gnutls",
	"/etc/alternatives",
	"/etc/mime.types",
	"/etc/os-release",
	"/etc/debian_version",
	"/etc/locale.alias",
	"/etc/environment",
	"/etc/python3",
	"/etc/python3.11",
	"/etc/nodejs",
	"/etc/npmrc",
	"/etc/gitconfig",
	"/etc/magic",
	"/etc/capsem",
	"/etc/mke2fs.conf",
};
static const char *const sys_dirs[] = { "/usr",	   "/lib", "/lib32", "/lib64",
					"/libx32", "/bin", "/sbin",  "/opt" };
static const char *const dev_rw[] = { "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
				      "/dev/urandom" };

int ll_allow_system(struct ll_ruleset *rs, unsigned flags)
{
	int r;
	for (size_t i = 0; i < ELEMENTSOF(sys_dirs); i++) {
		r = ll_allow(rs, sys_dirs[i], (flags & LL_SYS_EXEC) ? LL_RX : LL_READ);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	if (!(flags & LL_SYS_EXEC)) {
		/* the dynamic loader is opened for execution with the program */
		char real[4096];
		if (realpath("/lib64/ld-linux-x86-64.so.2", real)) {
			r = ll_allow(rs, real, LL_RX);
			if (r < 0 && r != -ENOENT)
				return r;
		}
	}
	for (size_t i = 0; i < ELEMENTSOF(etc_read); i++) {
		r = ll_allow(rs, etc_read[i], LL_READ);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	for (size_t i = 0; i < ELEMENTSOF(dev_rw); i++) {
		r = ll_allow(rs, dev_rw[i], LL_DEV);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	if (flags & LL_SYS_PROC) {
		r = ll_allow(rs, "/proc", LL_READ);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return 0;
}
