/* vmlimits.h - the bounds of a VM's size, one definition for every component that checks them
 * (capsem run, capsem create/shell, capsemd's API, capsem-vm, capsem-init): numbers, the option
 * parsers and usage text the commands share, and the block device serial numbers both ends
 * agree on. */
#pragma once

#include <errno.h>
#include <stdint.h>

#include "parse.h"

#define VM_CPUS_MIN 1u
#define VM_CPUS_MAX 64u
#define VM_CPUS_RANGE_TEXT "1..64"

#define VM_MEMORY_MIN_MIB 128u
#define VM_MEMORY_MAX_MIB (64u * 1024u)
#define VM_MEMORY_RANGE_TEXT "128M to 64G"

#define VM_DISK_MIN_MIB 64u
#define VM_DISK_MAX_MIB (1024u * 1024u)
#define VM_DISK_RANGE_TEXT "64M to 1T"

#define VM_MOUNTS_MAX 8u /* host folders shared into one VM (virtio-9p devices) */

/* virtio-blk serial numbers (docs/PROTOCOL.md §6): how capsem-init tells the block devices apart
 * through /sys/block/vd<x>/serial; the order of the vd<x> names is not a contract. */
#define VM_BLK_SERIAL_DISK "capsem-disk"     /* persistent ext4 disk, read-write: /root */
#define VM_BLK_SERIAL_ROOTFS "capsem-rootfs" /* root file system image (squashfs), read-only */

/* A suspended VM's files in its directory (capsem-vm writes them, capsemd reads them): QEMU's
 * saved state, and what it was saved with (JSON: time, size, the image's manifest hash) */
#define VM_SUSPEND_STATE "suspend.state"
#define VM_SUSPEND_INFO "suspend.json"
#define VM_WS_STATE "ws9p.state" /* the workspace's 9p server (fids, held replies), beside it */
#define VM_RAM_FILE "ram"	 /* a suspendable VM's guest RAM (capsem-vm --ram-file) */

/* What a bad --cpus / --memory value is told, the same from every command. */
#define VM_CPUS_USAGE "--cpus: expected " VM_CPUS_RANGE_TEXT
#define VM_MEMORY_USAGE \
	"--memory: expected a size from " VM_MEMORY_RANGE_TEXT " in whole MiB (e.g. 512M, 2G)"

/* A --cpus value within the bounds. 0, or -EINVAL/-ERANGE with *ret untouched. */
static inline int vm_parse_cpus(const char *s, unsigned *ret)
{
	uint32_t u;
	int r = parse_u32(s, &u);
	if (r < 0)
		return r;
	if (u < VM_CPUS_MIN || u > VM_CPUS_MAX)
		return -ERANGE;
	*ret = u;
	return 0;
}

/* A --memory value ("512M", "2G") within the bounds, in MiB. 0 or -EINVAL/-ERANGE. */
static inline int vm_parse_memory_mib(const char *s, uint64_t *ret_mib)
{
	return parse_size_mib(s, VM_MEMORY_MIN_MIB, VM_MEMORY_MAX_MIB, ret_mib);
}
