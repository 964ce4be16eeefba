/* dconfine.h - capsemd's host confinement and its mkfs.ext4's (dconfine.c). */
#pragma once

struct ll_ruleset;

/* Confine capsemd: no_new_privs, and (unless it would break the VMs' virtiofsd, see dconfine.c)
 * a Landlock ruleset: the system, home (read-write), the images (read), the capsem-vm binary,
 * the user's non-dot entries of $HOME, /tmp and what capsem-vm and QEMU need beneath it
 * (/dev/kvm, cgroups). Call on the main thread before any other thread exists. A missing layer
 * is one warning line. 0 or -errno (a layer that exists could not be applied). */
int dconfine_self(const char *home, const char *images, const char *vm_bin);

/* mkfs.ext4's ruleset: the system read-only, executing only mkfs (and the loader), writing only
 * target. 0 with rs (rs->fd -1 without Landlock or with CAPSEM_CONFINE=0), or -errno. */
int dconfine_mkfs_ruleset(const char *mkfs, const char *target, struct ll_ruleset *rs);
