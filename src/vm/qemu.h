/* qemu.h - the QEMU microvm engine: command line, process, and the QMP client.
 *
 * This is the only place that knows QEMU's command line. The device model (DESIGN.md §3):
 * microvm without ACPI, memfd-shared RAM (vhost-user backends map it), modern virtio-mmio, no
 * NIC, no option ROMs; the serial console, QMP and the vhost-user vsock device are Unix sockets
 * that capsem-vm listens on before QEMU starts, so QEMU connects as a client and there is no
 * start-up race.
 *
 * Storage: an optional raw disk image (--disk, the guest's persistent /root) as a read-write
 * virtio-blk device with serial "capsem-disk", an optional root file system image (--rootfs,
 * squashfs) as a read-only one with serial "capsem-rootfs" (vmlimits.h), and up to QEMU_MAX_MOUNTS host directories as virtio-9p devices tagged capsem9p<N>.
 * The guest learns where to mount each share from the kernel command line, one
 * "capsem.mount=capsem9p<N>:<guest path>:ro|rw" per share (docs/PROTOCOL.md, Kernel command
 * line); the guest has no way to name a host path.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "accel.h"
#include "vmlimits.h"

#define QEMU_MAX_MOUNTS VM_MOUNTS_MAX
#define QEMU_GUEST_PATH_MAX 128

/* A host directory shared with the guest over 9p. */
struct qemu_mount {
	const char *host;  /* absolute path of an existing directory */
	const char *guest; /* absolute guest path, see qemu_guest_path_valid */
	int readonly;
};

/* The translation cache capsem-vm gives QEMU under TCG unless told otherwise (--tcg-tb-mib):
 * measured in docs/ARCHITECTURE.md ("QEMU's memory under TCG"). */
#define QEMU_TCG_TB_MIB_DEFAULT 256u
#define QEMU_TCG_TB_MIB_MAX 4096u

struct qemu_config {
	const char *binary; /* default "qemu-system-x86_64" */
	const char *name;   /* -name: the VM directory, so ps shows which VM a QEMU serves */
	const char *kernel;
	const char *initrd;
	const char *cmdline_extra; /* appended to the kernel command line, may be NULL */
	unsigned cpus;
	uint64_t mem_mib;
	enum vm_accel accel; /* KVM or TCG, already resolved */
	/* TCG's translation cache in MiB (0: QEMU's default, 1 GiB on 64-bit hosts, which a busy
	 * guest fills: QEMU's RSS then grows far beyond the guest's RAM). Ignored under KVM. */
	unsigned tcg_tb_mib;
	const char *serial_sock;
	const char *qmp_sock;
	const char *vhost_vsock_sock;
	/* instead of the vsock device: a virtio-serial port "capsem.chan" whose chardev connects
	 * to this socket (the channel mux, docs/PROTOCOL.md §10); NULL = vsock */
	const char *chan_sock;
	const char *disk;   /* raw disk image attached read-write, serial capsem-disk, or NULL */
	const char *rootfs; /* root file system image attached read-only, serial capsem-rootfs */
	const struct qemu_mount *mounts;
	size_t n_mounts; /* at most QEMU_MAX_MOUNTS */
	/* the workspace's virtiofsd socket (vhost-user-fs, tag VIRTIOFS_TAG: the guest mounts it
	 * on /root/workspace, "capsem.workspace=" on the kernel command line), or NULL */
	const char *vhost_fs_sock;
	int workspace_9p; /* the workspace is one of mounts[] instead ("capsem.workspace=9p") */
	/* or a virtio-serial port "capsem.ws" whose chardev connects to this socket, served by
	 * capsem-vm's own 9p server ("capsem.workspace=serial"; migratable) */
	const char *ws_sock;
	int incoming; /* -incoming defer: the guest's state comes over QMP (a restore) */
	/* guest RAM in this file (memory-backend-file) instead of an anonymous memfd: shared
	 * (MAP_SHARED: the file is the RAM, a save leaves it out of the stream: x-ignore-shared), or
	 * private (MAP_PRIVATE: copy-on-write over a saved RAM image, which stays untouched) */
	const char *ram_file;
	int ram_private;
};

/* Whether p may be a guest mount point: absolute, 2..QEMU_GUEST_PATH_MAX-1 characters of
 * [A-Za-z0-9/_.-], no empty, "." or ".." component, no trailing '/', and not "/" nor under
 * /proc, /sys or /dev. These characters need no quoting on the kernel command line. */
int qemu_guest_path_valid(const char *p);

/* Build QEMU's argv (owned strv). ',' in the disk and share paths is escaped (doubled); other
 * paths must not contain one. 0, -EINVAL for a bad config (including an invalid or repeated
 * guest mount path), -E2BIG when the kernel command line would not fit, or -ENOMEM. */
int qemu_build_argv(const struct qemu_config *c, char ***ret_argv);

#define QEMU_SANDBOX "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

struct ll_ruleset;
struct hostcg;

/* QEMU's Landlock ruleset (landlock.h) for config c run in vmdir: read the system (execute only
 * QEMU's binary and the dynamic loader), read the kernel, initrd and root file system, read and
 * write vmdir and the disk, each --mount with its own mode, /dev/kvm under KVM, read /proc and
 * the host's CPU and memory facts in /sys; no TCP (ABI 4), no signals or abstract sockets out of
 * its domain (ABI 6). 0 with the ruleset (rs->fd -1 without Landlock: rs->abi says why) or
 * -errno (-ENOENT: a named file is missing). */
int qemu_landlock(const struct qemu_config *c, const char *vmdir, struct ll_ruleset *rs);

/* fork+exec QEMU with stdin from /dev/null, stdout and stderr to log_fd, in its own session, and
 * with PR_SET_PDEATHSIG(SIGKILL) so it can never outlive capsem-vm: in cgroup cg (or NULL), no
 * new privileges, with netns a network namespace of its own (empty: QEMU needs no network;
 * confine.h), the Landlock ruleset landlock_fd (or -1). Returns 0 with the pid and a pidfd
 * (O_CLOEXEC; readable when QEMU exits), or -errno. */
int qemu_spawn(char *const *argv, int log_fd, int landlock_fd, const struct hostcg *cg, int netns,
	       pid_t *ret_pid, int *ret_pidfd);
