/* rootfstree.h - the pure parts of the "rootfs" step: the package list and the setuid/setgid
 * sweep of a root file system tree. Unit-tested (tests/unit/builder/test-rootfstree.c). */
#pragma once

#include <stddef.h>

#define ROOTFS_MAX_PACKAGES 256
#define ROOTFS_PACKAGE_MAX_LEN 64

/* Split a package list ("python3 git,curl": spaces, tabs and commas separate) into a sorted,
 * de-duplicated, NULL-terminated strv (strv_free()). Each name must be a Debian package name:
 * [a-z0-9][a-z0-9+.-]+, at most ROOTFS_PACKAGE_MAX_LEN bytes; at most ROOTFS_MAX_PACKAGES names,
 * at least one. 0, -EINVAL (*ret_bad, may be NULL, points at the offending text inside s, or s
 * itself for an empty or too long list), or -ENOMEM. */
int rootfs_parse_packages(const char *s, char ***ret, const char **ret_bad);

/* A Node.js version selector for npm: "22", "22.11" or "22.11.0" with a major of at least
 * ROOTFS_NODE_MIN_MAJOR. 1 when valid. */
#define ROOTFS_NODE_MIN_MAJOR 22
int rootfs_node_version_valid(const char *s);

/* A Debian suite or an npm version selector: 1..32 of [a-z0-9.-], starting with [a-z0-9] (so it
 * cannot pass for an option). 1 when valid. */
int rootfs_suite_valid(const char *s);

/* Clear every setuid and setgid bit under root (not following symlinks, not crossing into other
 * file systems). *ret_cleared (may be NULL) gets how many files changed. 0 or -errno. */
int rootfs_strip_setid(const char *root, size_t *ret_cleared);

/* Count the files under root that still have a setuid or setgid bit; the first one's path is
 * copied to first (n bytes, may be 0). 0 or -errno. */
int rootfs_count_setid(const char *root, size_t *ret_count, char *first, size_t n);
