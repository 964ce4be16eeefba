/* rootfsconfig.h - writing an image config into an unpacked root tree (rootfsconfig.c). */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "imgconfig.h"

/* PATH in the image (Debian's root PATH): the chroot steps' and the venv's tail */
#define ROOTFS_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Write data at root/rel (rel: a path checked by imgcfg_seed_path_valid, without the leading
 * '/'), creating directories (0755) on the way; no component may be a symlink. 0 or -errno. */
int rootfs_tree_write(const char *root, const char *rel, const void *data, size_t len,
		      unsigned mode);
int rootfs_tree_write_str(const char *root, const char *rel, const char *s, unsigned mode);
/* /etc/environment, /etc/profile.d/capsem.sh (the venv's VIRTUAL_ENV and PATH first), the
 * banner, bash.bashrc sourcing profile.d for non-login shells. */
int rootfs_write_environment(const struct imgcfg *cfg, const char *root);
/* /etc/gitconfig: git's credential helper for github.com answers with $GH_TOKEN. */
int rootfs_write_gitconfig(const char *root);
/* /etc/capsem/image.toml: what capsem-doctor expects (tools, system tools, venv, providers with
 * their CLI version from clis, key variable, domains and seeded files). */
int rootfs_write_doctor_toml(const struct imgcfg *cfg, const char *root, json_t *clis);
/* /usr/local/sbin/{halt,poweroff,reboot} -> /proc/1/exe (capsem-guest asks PID 1). */
int rootfs_make_power_links(const char *root);
