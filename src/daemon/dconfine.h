/* dconfine.h - capsemd's host confinement and that of the tools it runs (dconfine.c). */
#pragma once

#include <stddef.h>

/* Confine capsemd, as a normal user and as root: no_new_privs, a Landlock ruleset (the system,
 * home (read-write), the images (read-write), the capsem-vm and capsem-gateway binaries, the
 * user's non-dot entries of $HOME, /tmp and what capsem-vm and QEMU need beneath it: /dev/kvm,
 * cgroups), then capsemd's seccomp allow-list (dseccomp.h), which everything it starts
 * inherits. Call on the main thread before any other thread exists. A missing layer is one
 * warning line. 0 or -errno (a layer that exists could not be applied). */
int dconfine_self(const char *home, const char *images, const char *vm_bin);

/* Can capsemd open path, a folder the user shares with a VM (its workspace, a --mount)? What it
 * cannot open, capsem-vm, QEMU and the workspace's servers beneath it cannot either. 0, or
 * -errno with why saying so: under Landlock, which folders capsemd's ruleset holds. Blocking
 * (an open): a worker thread. */
int dconfine_check_shared(const char *path, char *why, size_t why_len);

/* The mkfs.ext4 and tar to run: $CAPSEM_MKFS / $CAPSEM_TAR when an absolute path (tests:
 * capsemd's ruleset lets it be executed), else the program in PATH, /usr/sbin or /sbin. 0 with
 * *ret (malloc'ed), -ENOENT or -ENOMEM. */
int dconfine_find_mkfs(char **ret);
int dconfine_find_tar(char **ret);

enum dconfine_tool {
	DCONFINE_MKFS, /* mkfs.ext4 [-d]: files and memory */
	DCONFINE_TAR,  /* tar -c / -x: files, links, owners, modes, xattrs, device nodes */
};

/* Run a tool (argv[0], an absolute path) confined: stdin and stdout on /dev/null, no new
 * privileges, a Landlock ruleset (the system read-only, executing only argv[0] and the loader,
 * writing only write (a file, or beneath a directory), reading src when not NULL) and the
 * tool's seccomp allow-list, all applied between fork and exec. Blocks until it exits: a worker
 * thread. 0 when it exited 0; its exit status (> 0) or -EIO (killed) with why (NUL-terminated)
 * saying how: "exit status 1: <its first line of stderr>", "killed by seccomp (SIGSYS): syscall
 * NAME", "killed by signal N", and its stderr in the log; or -errno when it could not be
 * started (why empty). */
int dconfine_run(enum dconfine_tool tool, char *const *argv, const char *write, const char *src,
		 char *why, size_t why_len);
