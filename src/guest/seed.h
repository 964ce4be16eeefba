/* seed.h - copy the image's seed of /root into a new VM's /root (seed.c). */
#pragma once

/* Where capsem-builder puts the config's /root files inside the Debian image. */
#define SEED_ROOT_DIR "/usr/local/share/capsem/root"

/* Copy the tree at src (directories and regular files only, at most 8 levels, files of at most
 * 1 MiB, at most 256 entries) into dst, keeping modes; existing files are left alone and
 * symlinks are skipped. A missing src is not an error. 0 or -errno of the first failure. */
int seed_copy_tree(const char *src, const char *dst);
