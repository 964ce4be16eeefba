/* qemu.c - QEMU command line and process spawning for capsem-vm. Main thread. The command line
 * is built from validated numbers and paths only: nothing here comes from the guest. */
#include "qemu.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "macro.h"
#include "strv.h"

/* The kernel command line. reboot=t + QEMU's -no-reboot turn a guest reboot into QEMU's exit:
 * that is how the guest powers off. microvm appends the virtio_mmio.device= entries itself. */
#define QEMU_CMDLINE "console=ttyS0 reboot=t panic=-1 quiet loglevel=1 tsc=reliable"

int qemu_build_argv(const struct qemu_config *c, char ***ret_argv)
{
	_cleanup_strv_free_ char **v = NULL;
	int r = 0;

	if (!c->kernel || !c->initrd || !c->serial_sock || !c->qmp_sock || !c->vhost_vsock_sock ||
	    c->cpus < 1 || c->cpus > 64 || c->mem_mib < 64 || c->mem_mib > 1024 * 1024 ||
	    (c->accel != VM_ACCEL_KVM && c->accel != VM_ACCEL_TCG))
		return -EINVAL;
	/* QEMU option values use ',' as a separator: refuse paths that would inject options */
	const char *paths[] = { c->kernel,   c->initrd,		  c->serial_sock,
				c->qmp_sock, c->vhost_vsock_sock, c->name ? c->name : "" };
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		if (strchr(paths[i], ','))
			return -EINVAL;

	r |= strv_push(&v, c->binary ? c->binary : "qemu-system-x86_64");
	if (c->name) {
		r |= strv_push(&v, "-name");
		r |= strv_pushf(&v, "capsem:%s", c->name);
	}
	r |= strv_push(&v, "-M");
	r |= strv_push(&v, "microvm,acpi=off,x-option-roms=off,memory-backend=mem");
	r |= strv_push(&v, "-accel");
	r |= strv_push(&v, c->accel == VM_ACCEL_KVM ? "kvm" : "tcg");
	if (c->accel == VM_ACCEL_KVM) {
		r |= strv_push(&v, "-cpu");
		r |= strv_push(&v, "host");
	}
	r |= strv_push(&v, "-smp");
	r |= strv_pushf(&v, "%u", c->cpus);
	r |= strv_push(&v, "-m");
	r |= strv_pushf(&v, "%" PRIu64 "M", c->mem_mib);
	r |= strv_push(&v, "-object");
	r |= strv_pushf(&v, "memory-backend-memfd,id=mem,size=%" PRIu64 "M,share=on", c->mem_mib);
	r |= strv_push(&v, "-global");
	r |= strv_push(&v, "virtio-mmio.force-legacy=false");
	r |= strv_push(&v, "-nodefaults");
	r |= strv_push(&v, "-no-user-config");
	r |= strv_push(&v, "-no-reboot");
	r |= strv_push(&v, "-display");
	r |= strv_push(&v, "none");
	r |= strv_push(&v, "-chardev");
	r |= strv_pushf(&v, "socket,id=ser0,path=%s", c->serial_sock);
	r |= strv_push(&v, "-serial");
	r |= strv_push(&v, "chardev:ser0");
	r |= strv_push(&v, "-chardev");
	r |= strv_pushf(&v, "socket,id=qmp0,path=%s", c->qmp_sock);
	r |= strv_push(&v, "-mon");
	r |= strv_push(&v, "chardev=qmp0,mode=control");
	r |= strv_push(&v, "-chardev");
	r |= strv_pushf(&v, "socket,id=vsk0,path=%s", c->vhost_vsock_sock);
	r |= strv_push(&v, "-device");
	r |= strv_push(&v, "vhost-user-vsock-device,chardev=vsk0");
	r |= strv_push(&v, "-object");
	r |= strv_push(&v, "rng-random,id=rng0,filename=/dev/urandom");
	r |= strv_push(&v, "-device");
	r |= strv_push(&v, "virtio-rng-device,rng=rng0");
	r |= strv_push(&v, "-kernel");
	r |= strv_push(&v, c->kernel);
	r |= strv_push(&v, "-initrd");
	r |= strv_push(&v, c->initrd);
	r |= strv_push(&v, "-append");
	if (c->cmdline_extra && *c->cmdline_extra)
		r |= strv_pushf(&v, "%s %s", QEMU_CMDLINE, c->cmdline_extra);
	else
		r |= strv_push(&v, QEMU_CMDLINE);
	if (r < 0)
		return -ENOMEM;
	*ret_argv = TAKE_PTR(v);
	return 0;
}

int qemu_spawn(char *const *argv, int log_fd, pid_t *ret_pid, int *ret_pidfd)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		/* child: only async-signal-safe calls from here on */
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
		    dup2(log_fd, STDERR_FILENO) < 0)
			_exit(127);
		setsid();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		execvp(argv[0], argv);
		_exit(127);
	}
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		int r = negative_errno();
		kill(pid, SIGKILL);
		return r;
	}
	*ret_pid = pid;
	*ret_pidfd = pidfd;
	return 0;
}
