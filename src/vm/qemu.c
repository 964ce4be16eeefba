/* qemu.c - QEMU command line and process spawning for capsem-vm. Main thread. The command line
 * is built from validated numbers and paths only: nothing here comes from the guest. */
#include "qemu.h"
#include "confine.h"
#include "fdutil.h"
#include "landlock.h"
#include "virtiofs.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "macro.h"
#include "strv.h"

/* The kernel command line. reboot=t + QEMU's -no-reboot turn a guest reboot into QEMU's exit:
 * that is how the guest powers off. microvm appends the virtio_mmio.device= entries itself.
 * Hardening: no merging of slab caches (an overflow stays within its own cache), a shuffled page
 * allocator (CONFIG_SHUFFLE_PAGE_ALLOCATOR), memory zeroed on allocation (also the config's
 * default: stated so that a kernel built without it still gets it). */
#define QEMU_CMDLINE                                                                  \
	"console=ttyS0 reboot=t panic=-1 quiet loglevel=1 tsc=reliable slab_nomerge " \
	"page_alloc.shuffle=1 init_on_alloc=1"
/* x86's COMMAND_LINE_SIZE, NUL included; microvm appends its virtio_mmio.device= entries */
#define QEMU_CMDLINE_MAX 2048
#define QEMU_CMDLINE_MMIO_RESERVE 512

int qemu_guest_path_valid(const char *p)
{
	static const char *const reserved[] = { "/proc", "/sys", "/dev" };
	size_t n = strlen(p);
	if (n < 2 || n >= QEMU_GUEST_PATH_MAX || p[0] != '/' || p[n - 1] == '/')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '/' || c == '_' || c == '.' || c == '-'))
			return 0;
	}
	/* every component: not empty, not "." and not ".." */
	for (const char *c = p + 1; c;) {
		const char *e = strchr(c, '/');
		size_t len = e ? (size_t)(e - c) : strlen(c);
		if (len == 0 || (len == 1 && c[0] == '.') ||
		    (len == 2 && c[0] == '.' && c[1] == '.'))
			return 0;
		c = e ? e + 1 : NULL;
	}
	for (size_t i = 0; i < ELEMENTSOF(reserved); i++) {
		size_t k = strlen(reserved[i]);
		if (strncmp(p, reserved[i], k) == 0 && (p[k] == 0 || p[k] == '/'))
			return 0;
	}
	return 1;
}

/* A copy of s with every ',' doubled: QEMU's option parser reads ",," as a literal comma. */
static char *escape_commas(const char *s)
{
	size_t n = strlen(s), extra = 0;
	for (size_t i = 0; i < n; i++)
		extra += s[i] == ',';
	char *out = malloc(n + extra + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		*o++ = s[i];
		if (s[i] == ',')
			*o++ = ',';
	}
	*o = 0;
	return out;
}

/* The kernel command line: ours, the shares, then the caller's extra (which may end with
 * "-- args for init", so the shares must come before it). */
static int build_cmdline(const struct qemu_config *c, char **ret)
{
	char *s = NULL, *t;
	if (asprintf(&s, "%s", QEMU_CMDLINE) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_mounts; i++) {
		int k = asprintf(&t, "%s capsem.mount=capsem9p%zu:%s:%s", s, i, c->mounts[i].guest,
				 c->mounts[i].readonly ? "ro" : "rw");
		free(s);
		if (k < 0)
			return -ENOMEM;
		s = t;
	}
	if (c->vhost_fs_sock || c->workspace_9p || c->ws_sock) {
		int k = asprintf(&t, "%s capsem.workspace=%s", s,
				 c->vhost_fs_sock ? VIRTIOFS_TAG
				 : c->ws_sock	  ? VIRTIOFS_TAG_SERIAL
						  : VIRTIOFS_TAG_9P);
		free(s);
		if (k < 0)
			return -ENOMEM;
		s = t;
	}
	if (c->cmdline_extra && *c->cmdline_extra) {
		int k = asprintf(&t, "%s %s", s, c->cmdline_extra);
		free(s);
		if (k < 0)
			return -ENOMEM;
		s = t;
	}
	if (strlen(s) >= QEMU_CMDLINE_MAX - QEMU_CMDLINE_MMIO_RESERVE) {
		free(s);
		return -E2BIG;
	}
	*ret = s;
	return 0;
}

int qemu_build_argv(const struct qemu_config *c, char ***ret_argv)
{
	_cleanup_strv_free_ char **v = NULL;
	int r = 0;

	if (!c->kernel || !c->initrd || !c->serial_sock || !c->qmp_sock || !c->vhost_vsock_sock ||
	    c->cpus < VM_CPUS_MIN || c->cpus > VM_CPUS_MAX || c->mem_mib < VM_MEMORY_MIN_MIB ||
	    c->mem_mib > VM_MEMORY_MAX_MIB ||
	    (c->accel != VM_ACCEL_KVM && c->accel != VM_ACCEL_TCG) ||
	    c->tcg_tb_mib > QEMU_TCG_TB_MIB_MAX)
		return -EINVAL;
	/* QEMU option values use ',' as a separator: refuse paths that would inject options */
	const char *paths[] = { c->kernel,
				c->initrd,
				c->serial_sock,
				c->qmp_sock,
				c->vhost_vsock_sock,
				c->name ? c->name : "",
				c->chan_sock ? c->chan_sock : "",
				c->ws_sock ? c->ws_sock : "",
				c->ram_file ? c->ram_file : "" };
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		if (strchr(paths[i], ','))
			return -EINVAL;
	if (c->n_mounts > QEMU_MAX_MOUNTS || (c->n_mounts > 0 && !c->mounts))
		return -EINVAL;
	for (size_t i = 0; i < c->n_mounts; i++) {
		if (!c->mounts[i].host || c->mounts[i].host[0] != '/' || !c->mounts[i].guest ||
		    !qemu_guest_path_valid(c->mounts[i].guest))
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (streq(c->mounts[i].guest, c->mounts[j].guest))
				return -EINVAL;
	}
	if ((c->disk && !*c->disk) || (c->rootfs && !*c->rootfs))
		return -EINVAL;
	_cleanup_free_ char *cmdline = NULL;
	r = build_cmdline(c, &cmdline);
	if (r < 0)
		return r;

	r |= strv_push(&v, c->binary ? c->binary : "qemu-system-x86_64");
	if (c->name) {
		r |= strv_push(&v, "-name");
		r |= strv_pushf(&v, "capsem:%s", c->name);
	}
	r |= strv_push(&v, "-M");
	r |= strv_push(&v, "microvm,acpi=off,x-option-roms=off,memory-backend=mem");
	r |= strv_push(&v, "-accel");
	if (c->accel == VM_ACCEL_TCG && c->tcg_tb_mib)
		r |= strv_pushf(&v, "tcg,tb-size=%u", c->tcg_tb_mib);
	else
		r |= strv_push(&v, c->accel == VM_ACCEL_KVM ? "kvm" : "tcg");
	/* under TCG, "max": every feature QEMU emulates (AVX2 among them), which native binaries
	 * built for x86-64-v3 need (Claude Code's Bun build dies with SIGILL on the default qemu64) */
	r |= strv_push(&v, "-cpu");
	r |= strv_push(&v, c->accel == VM_ACCEL_KVM ? "host" : "max");
	r |= strv_push(&v, "-smp");
	r |= strv_pushf(&v, "%u", c->cpus);
	r |= strv_push(&v, "-m");
	r |= strv_pushf(&v, "%" PRIu64 "M", c->mem_mib);
	r |= strv_push(&v, "-object");
	if (c->ram_file)
		r |= strv_pushf(&v,
				"memory-backend-file,id=mem,size=%" PRIu64 "M,mem-path=%s,share=%s",
				c->mem_mib, c->ram_file, c->ram_private ? "off" : "on");
	else
		r |= strv_pushf(&v, "memory-backend-memfd,id=mem,size=%" PRIu64 "M,share=on",
				c->mem_mib);
	r |= strv_push(&v, "-global");
	r |= strv_push(&v, "virtio-mmio.force-legacy=false");
	/* QEMU's own seccomp filter: no obsolete syscalls, no set*uid/gid, no fork/exec, no
	 * scheduler or affinity changes */
	r |= strv_push(&v, "-sandbox");
	r |= strv_push(&v, QEMU_SANDBOX);
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
	if (c->chan_sock) {
		r |= strv_pushf(&v, "socket,id=chan0,path=%s", c->chan_sock);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, c->ws_sock ? "virtio-serial-device,max_ports=3"
					      : "virtio-serial-device,max_ports=2");
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "virtserialport,chardev=chan0,name=capsem.chan");
	} else {
		r |= strv_pushf(&v, "socket,id=vsk0,path=%s", c->vhost_vsock_sock);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "vhost-user-vsock-device,chardev=vsk0");
	}
	if (c->ws_sock) { /* the workspace's 9p (vmws.c), after the channel's port */
		if (!c->chan_sock) {
			r |= strv_push(&v, "-device");
			r |= strv_push(&v, "virtio-serial-device,max_ports=2");
		}
		r |= strv_push(&v, "-chardev");
		r |= strv_pushf(&v, "socket,id=ws0,path=%s", c->ws_sock);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "virtserialport,chardev=ws0,name=capsem.ws");
	}
	r |= strv_push(&v, "-object");
	r |= strv_push(&v, "rng-random,id=rng0,filename=/dev/urandom");
	r |= strv_push(&v, "-device");
	r |= strv_push(&v, "virtio-rng-device,rng=rng0");
	if (c->disk) {
		/* writeback: the guest's flushes reach the file; discard=unmap keeps it sparse */
		_cleanup_free_ char *disk = escape_commas(c->disk);
		if (!disk)
			return -ENOMEM;
		r |= strv_push(&v, "-drive");
		r |= strv_pushf(&v,
				"id=disk0,file=%s,format=raw,if=none,cache=writeback,discard=unmap",
				disk);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "virtio-blk-device,drive=disk0,serial=" VM_BLK_SERIAL_DISK);
	}
	if (c->rootfs) {
		/* read-only at the block layer: the guest cannot write the shared image */
		_cleanup_free_ char *rootfs = escape_commas(c->rootfs);
		if (!rootfs)
			return -ENOMEM;
		r |= strv_push(&v, "-drive");
		r |= strv_pushf(&v, "id=rootfs0,file=%s,format=raw,if=none,readonly=on", rootfs);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "virtio-blk-device,drive=rootfs0,serial=" VM_BLK_SERIAL_ROOTFS);
	}
	for (size_t i = 0; i < c->n_mounts; i++) {
		/* security_model=none: files are created as the user running QEMU; multidevs=remap
		 * keeps inode numbers unique when the share spans several host file systems */
		_cleanup_free_ char *host = escape_commas(c->mounts[i].host);
		if (!host)
			return -ENOMEM;
		r |= strv_push(&v, "-fsdev");
		r |= strv_pushf(&v, "local,id=fs%zu,path=%s,security_model=none,multidevs=remap%s",
				i, host, c->mounts[i].readonly ? ",readonly=on" : "");
		r |= strv_push(&v, "-device");
		r |= strv_pushf(&v, "virtio-9p-device,fsdev=fs%zu,mount_tag=capsem9p%zu", i, i);
	}
	if (c->vhost_fs_sock) {
		/* the workspace: virtiofsd (virtiofs.c) over vhost-user; the guest RAM is a shared
		 * memfd already (vhost-user needs that) */
		r |= strv_push(&v, "-chardev");
		r |= strv_pushf(&v, "socket,id=vfs0,path=%s", c->vhost_fs_sock);
		r |= strv_push(&v, "-device");
		r |= strv_push(&v, "vhost-user-fs-device,chardev=vfs0,tag=" VIRTIOFS_TAG
				   ",queue-size=1024");
	}
	if (c->incoming) {
		r |= strv_push(&v, "-incoming");
		r |= strv_push(&v, "defer");
	}
	r |= strv_push(&v, "-kernel");
	r |= strv_push(&v, c->kernel);
	r |= strv_push(&v, "-initrd");
	r |= strv_push(&v, c->initrd);
	r |= strv_push(&v, "-append");
	r |= strv_push(&v, cmdline);
	if (r < 0)
		return -ENOMEM;
	*ret_argv = TAKE_PTR(v);
	return 0;
}

int qemu_landlock(const struct qemu_config *c, const char *vmdir, struct ll_ruleset *rs)
{
	int r = ll_ruleset_new(rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0 || rs->fd < 0)
		return r;
	/* the system read-only; executable: only QEMU's binary and the loader */
	_cleanup_free_ char *bin = NULL;
	r = find_program(c->binary ? c->binary : "qemu-system-x86_64", &bin);
	if (r >= 0)
		r = ll_allow_system(rs, 0);
	if (r >= 0)
		r = ll_allow(rs, bin, LL_RX);
	if (r >= 0)
		r = ll_allow(rs, vmdir, LL_RW);
	if (r >= 0)
		r = ll_allow(rs, c->kernel, LL_READ);
	if (r >= 0)
		r = ll_allow(rs, c->initrd, LL_READ);
	if (r >= 0 && c->rootfs)
		r = ll_allow(rs, c->rootfs, LL_READ);
	if (r >= 0 && c->disk)
		r = ll_allow(rs, c->disk, LL_RW);
	if (r >= 0 && c->ram_file && c->ram_file[0] == '/') /* (a relative one is in vmdir) */
		r = ll_allow(rs, c->ram_file, LL_RW);
	for (size_t i = 0; r >= 0 && i < c->n_mounts; i++)
		r = ll_allow(rs, c->mounts[i].host, c->mounts[i].readonly ? LL_READ : LL_RW);
	if (r >= 0 && c->accel == VM_ACCEL_KVM)
		r = ll_allow(rs, "/dev/kvm", LL_DEV);
	/* QEMU reads its own /proc entries and the host's CPU and memory facts in /sys */
	for (const char *const *p = (const char *const[]){ "/proc", "/sys/devices/system/cpu",
							   "/sys/kernel/mm", NULL };
	     r >= 0 && *p; p++) {
		r = ll_allow(rs, *p, LL_READ);
		if (r == -ENOENT)
			r = 0;
	}
	if (r < 0)
		ll_ruleset_done(rs);
	return r;
}

int qemu_spawn(char *const *argv, int log_fd, int landlock_fd, const struct hostcg *cg, int netns,
	       pid_t *ret_pid, int *ret_pidfd)
{
	/* no privilege gained across exec, and no network at all: QEMU needs none (its sockets are
	 * Unix sockets on paths, which work across network namespaces) */
	struct confine_opts o = { .flags = CONFINE_NO_NEW_PRIVS | (netns ? CONFINE_NETNS : 0),
				  .landlock_fd = landlock_fd,
				  .cg = cg };
	return confine_spawn(argv, log_fd, -1, &o, ret_pid, ret_pidfd);
}
