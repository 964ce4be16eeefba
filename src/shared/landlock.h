/* landlock.h - Landlock rulesets for the host processes (raw syscalls; docs/ARCHITECTURE.md,
 * "Host confinement").
 *
 * A ruleset is built in the parent (it opens the paths, which allocates nothing but may fail),
 * then applied with ll_restrict_self: in the process itself, or in a child between fork and exec
 * (async-signal-safe: one syscall). Rights newer than the running kernel's ABI are masked off, so
 * the same ruleset degrades to what the kernel enforces; ll_abi() says which ABI that is.
 * A Landlock domain is inherited across fork and exec and can only be narrowed further.
 */
#pragma once

#include <stdint.h>

/* What a rule grants on a path (or a file): combinations of these. */
enum {
	LL_READ = 1u << 0,   /* read files, list directories */
	LL_EXEC = 1u << 1,   /* execute files */
	LL_WRITE = 1u << 2,  /* write/truncate files, create and remove entries, rename in */
	LL_DEV = 1u << 3,    /* read/write device nodes and their ioctls (/dev/kvm) */
	LL_RMDIR = 1u << 4,  /* only remove directories beneath (a cgroup parent) */
	LL_MKSOCK = 1u << 5, /* only create sockets beneath */
	LL_WRFILE = 1u << 6, /* only write existing files (/proc/<pid>/uid_map) */
	LL_MKCHAR = 1u << 7, /* only create character devices beneath (overlay whiteouts, 0/0) */
	LL_RX = LL_READ | LL_EXEC,
	LL_RW = LL_READ | LL_WRITE,
};

/* What a ruleset handles (denies unless a rule allows it), beyond every file-system right the
 * kernel knows. */
enum {
	LL_NO_TCP = 1u << 0,	     /* no TCP bind or connect at all (ABI 4) */
	LL_SCOPE_SIGNAL = 1u << 1,   /* no signals to processes outside the domain (ABI 6) */
	LL_SCOPE_ABSTRACT = 1u << 2, /* no abstract Unix sockets outside the domain (ABI 6) */
};

struct ll_ruleset {
	int fd; /* -1: Landlock unavailable (every call below is then a no-op returning 0) */
	int abi;
	uint64_t fs_handled;
};

/* The running kernel's Landlock ABI version (>= 1), or -errno: -ENOSYS (not built in),
 * -EOPNOTSUPP (built in but disabled at boot). Cached after the first call. */
int ll_abi(void);

/* A ruleset that handles every file-system right of the running ABI plus `handles` (LL_NO_TCP
 * ...), masked to that ABI. Without Landlock: 0 with rs->fd = -1 and rs->abi = -errno (the
 * caller warns). Else 0, or -errno (the ruleset fd is O_CLOEXEC). */
int ll_ruleset_new(struct ll_ruleset *rs, unsigned handles);

/* Allow `access` (LL_*) beneath path (a directory) or on it (a file: directory rights are
 * dropped). 0, -ENOENT when the path does not exist (callers ignore optional paths), or -errno.
 * With rs->fd == -1: 0. */
int ll_allow(struct ll_ruleset *rs, const char *path, unsigned access);

/* Enforce the ruleset on the calling thread (and all it later forks/execs). Needs
 * PR_SET_NO_NEW_PRIVS already set (or CAP_SYS_ADMIN). Async-signal-safe. 0 or -errno; with
 * fd == -1: 0. */
int ll_restrict_self(int fd);

/* Close the ruleset's fd (NULL-safe). */
void ll_ruleset_done(struct ll_ruleset *rs);

/* A one-line description of what the ABI enforces, for warnings and doctor: "ABI 7" or
 * "unavailable (...)". Static storage. */
const char *ll_describe(void);

/* The system a dynamically linked program needs, for every host confinement here: with
 * LL_SYS_EXEC, read and execute /usr, /lib*, /bin, /sbin, /opt (else only read them, and
 * execute nothing but the dynamic loader); a curated list of /etc files (the loader's cache,
 * name service, TLS trust, time zone; never /etc/shadow); read /proc when LL_SYS_PROC; and
 * /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom. Missing paths are skipped. 0 or
 * -errno. */
enum { LL_SYS_EXEC = 1u << 0, LL_SYS_PROC = 1u << 1 };
int ll_allow_system(struct ll_ruleset *rs, unsigned flags);
