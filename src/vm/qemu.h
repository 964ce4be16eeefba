/* qemu.h - the QEMU microvm engine: command line, process, and the QMP client.
 *
 * This is the only place that knows QEMU's command line. The device model (DESIGN.md §3):
 * microvm without ACPI, memfd-shared RAM (vhost-user backends map it), modern virtio-mmio, no
 * NIC, no option ROMs; the serial console, QMP and the vhost-user vsock device are Unix sockets
 * that capsem-vm listens on before QEMU starts, so QEMU connects as a client and there is no
 * start-up race.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "accel.h"

struct qemu_config {
	const char *binary; /* default "qemu-system-x86_64" */
	const char *name;   /* -name: the VM directory, so ps shows which VM a QEMU serves */
	const char *kernel;
	const char *initrd;
	const char *cmdline_extra; /* appended to the kernel command line, may be NULL */
	unsigned cpus;
	uint64_t mem_mib;
	enum vm_accel accel; /* KVM or TCG, already resolved */
	const char *serial_sock;
	const char *qmp_sock;
	const char *vhost_vsock_sock;
};

/* Build QEMU's argv (owned strv). 0, -EINVAL for a bad config, or -ENOMEM. */
int qemu_build_argv(const struct qemu_config *c, char ***ret_argv);

/* fork+exec QEMU with stdin from /dev/null, stdout and stderr to log_fd, in its own session, and
 * with PR_SET_PDEATHSIG(SIGKILL) so it can never outlive capsem-vm. Returns 0 with the pid and a
 * pidfd (O_CLOEXEC; readable when QEMU exits), or -errno. */
int qemu_spawn(char *const *argv, int log_fd, pid_t *ret_pid, int *ret_pidfd);
