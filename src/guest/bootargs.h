/* bootargs.h - what capsem-init reads from the kernel command line (docs/PROTOCOL.md, Kernel
 * command line): the host's 9p shares, "capsem.mount=<tag>:<guest path>:ro|rw" each, and the
 * workspace's virtio-fs tag, "capsem.workspace=<tag>" (mounted on BOOTARGS_WORKSPACE).
 */
#pragma once

#include <stddef.h>

#define BOOTARGS_MAX_MOUNTS 8
#define BOOTARGS_TAG_MAX 32
#define BOOTARGS_PATH_MAX 128

struct bootargs_mount {
	char tag[BOOTARGS_TAG_MAX];   /* the virtio-9p mount_tag, "capsem9p<N>" */
	char path[BOOTARGS_PATH_MAX]; /* absolute guest path, validated */
	int readonly;
};

#define BOOTARGS_WORKSPACE "/root/workspace"

struct bootargs {
	char workspace[BOOTARGS_TAG_MAX]; /* virtio-fs tag of the workspace, or "" */
	struct bootargs_mount mounts[BOOTARGS_MAX_MOUNTS];
	size_t n_mounts;
	size_t n_invalid; /* capsem.mount= entries that were malformed, repeated or too many, and
			   * malformed or repeated capsem.workspace= */
};

/* Parse a kernel command line (the contents of /proc/cmdline). Words after a lone "--" belong
 * to init's argv and are not looked at. Malformed entries are counted in n_invalid and skipped;
 * a repeated guest path is malformed. Always fills *ret. */
void bootargs_parse(const char *cmdline, struct bootargs *ret);
