/* init.c - capsem-init, PID 1 of the guest (the initramfs's /init).
 *
 * Boot: mount proc, sysfs, devtmpfs, devpts (a private instance, /dev/ptmx -> pts/ptmx), tmpfs on
 * /dev/shm, /tmp and /run; create /root. Block devices are told apart by their virtio serial number
 * (/sys/block/vd<x>/serial, vmlimits.h), never by their order. If the host attached a disk (serial
 * "capsem-disk", ext4) mount it on /mnt/capsem-disk (stage "disk", or "disk_failed" and the boot
 * goes on without it). If it attached a root file system image (serial "capsem-rootfs", erofs or
 * squashfs): mount it read-only on /mnt/capsem-rootfs (stage "rootfs"), put an overlay on it whose
 * upper and work directories live on the disk (/mnt/capsem-disk/overlay/) or, without a disk, on a
 * tmpfs, mount the overlay on /mnt/capsem-root (stage "overlay"), move /dev, /proc, /sys, /run,
 * /tmp and the disk and image mounts into it and chroot there (the switch_root dance: the initramfs
 * cannot be pivot_root'ed away; its few MiB stay in memory). When any of that fails the boot goes
 * on in the initramfs (stage "rootfs_failed"). Then bind the disk's root/ onto /root (a new one
 * first gets the image's /root seed, seed.c) and swap to the disk's swap file (made on its first
 * boot, init_swap); mount the host's 9p shares named on the kernel
 * command line (bootargs.h; stage "mounts", or "mounts_failed" if any failed); set PATH and HOME;
 * start capsem-agent (this same binary, re-executed through /proc/self/exe as "capsem-agent", which
 * still reaches the initramfs's /init after the chroot) with the boot stages timed so far on its
 * command line: --boot-stages name=usec,... (CLOCK_BOOTTIME, see stages.h).
 *
 * The network (netsetup.h), in two halves around the disk and root image steps: first, while
 * still in the initramfs, bring up lo (stage "net_lo"), create capsem0 over rtnetlink, start the
 * initramfs's nft on the egress ruleset (in the background: it runs while the disks mount) and
 * make the proxies' listening sockets (127.0.0.1 TCP NETSETUP_NET_PORT, UDP and TCP 53); then,
 * in the final root, wait for nft (at most INIT_NFT_WAIT_MS; stage "net", or "net_failed" when
 * the link, the rules or a socket failed: the boot goes on, with egress failing closed since
 * there is no NIC), write /etc/resolv.conf and /etc/hosts, and start capsem-net-proxy and
 * capsem-dns-proxy (this binary again), each handed its listening sockets as fds 3 and 4, so
 * connections queue in the kernel until a proxy accepts them. A proxy that exits is restarted
 * (at once after a long run, else after 100 ms doubling to 5 s). Besides nft and these, the only
 * fork is the agent; nothing else waits.
 *
 * Resources (cgroup.h): right after the first mounts, before it forks anything, init makes itself
 * unkillable by the OOM killer (oom_score_adj -1000, inherited by everything it starts; exec
 * commands reset it to 0) and turns off the OOM killer's task list (vm.oom_dump_tasks), mounts cgroup2 on /sys/fs/cgroup (it moves into the root image with
 * /sys), moves itself into the system group "capsem" (so the agent, its session processes, nft
 * and the proxies start there) and limits the "workload" group where exec commands run: memory,
 * swap and tasks, each leaving a reserve for the system side (cgpure.h). When the kernel cannot
 * do that, one console line says so and the boot goes on without limits (the agent notices).
 *
 * Then PID 1 duty: reap every zombie, forever, in batches with a look at the signals between
 * them (a fork bomb's orphans arrive as fast as init reaps them). If the agent dies, say so on /dev/console (the
 * serial port the host logs) and power off so the host notices. SIGTERM, SIGUSR1, SIGUSR2,
 * SIGINT (ctrl-alt-del) and SIGPWR all power off: SIGTERM to every process, up to
 * INIT_GRACE_MS for them to exit, the workload's cgroup.kill (atomic, so a fork bomb cannot
 * outrun it), SIGKILL to the rest, swapoff, unmount the shares and the disk (remount it read-only
 * if it is still busy) so that ext4 is clean, sync, reboot(RB_AUTOBOOT). QEMU runs with
 * -no-reboot and the kernel with reboot=t, so a reboot ends QEMU. halt, poweroff and reboot
 * (busybox's, or capsem-guest's own in the Debian image, main.c) send SIGUSR1, SIGUSR2 and
 * SIGTERM: each stops the VM (a microVM has no firmware to reboot through; `capsem start` or
 * `capsem restart` boots it again).
 *
 * Trust boundary: the kernel command line comes from the host and is parsed strictly
 * (bootargs.c); the disk's and the root image's file systems are the host's too (the kernel's
 * ext4 and squashfs drivers read them); serial numbers are compared, never used as paths.
 * Runs as PID 1, single-threaded; signals are blocked and read from a signalfd.
 */
#include "init.h"
#include "hostconn.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/swap.h>
#include <sys/sysinfo.h>
#include <dirent.h>
#include <limits.h>
#include <sys/wait.h>
#include <time.h>

#include "bootargs.h"
#include "cgroup.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "seed.h"
#include "netsetup.h"
#include "proto.h"
#include "stages.h"
#include "wsrelay.h"
#include "vmlimits.h"

#define INIT_GRACE_MS 1000
#define INIT_KILL_WAIT_MS 1000
#define INIT_DISK_ROOT INIT_DISK_DIR "/root"
#define INIT_DISK_OVERLAY INIT_DISK_DIR "/overlay"
#define INIT_ROOTFS_DIR "/mnt/capsem-rootfs"
#define INIT_OVERLAY_TMP "/mnt/capsem-overlay" /* tmpfs for upper/work without a disk */
#define INIT_NEWROOT "/mnt/capsem-root"
#define INIT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define INIT_9P_OPTS "trans=virtio,version=9p2000.L,msize=262144"
/* the workspace over the port "capsem.ws" (capsem-vm's 9p server, src/workspace/ws9p.c) */
#define INIT_9P_FD_OPTS "trans=fd,rfdno=%d,wfdno=%d,version=9p2000.L,msize=262144"
#define INIT_NFT_WAIT_MS 10000
#define INIT_RESTART_MIN_MS 100u
#define INIT_RESTART_MAX_MS 5000u
#define INIT_STABLE_MS 10000u /* a proxy that ran this long restarts at once */
#define INIT_REAP_BATCH 64u   /* zombies reaped before init looks at its signals again */

extern char **environ;

/* A supervised egress proxy: this binary under another name, handed listening sockets. */
struct init_daemon {
	const char *name; /* argv[0] */
	const char *args[5];
	int fds[2]; /* become fds 3 and 4 in the child; -1 = none */
	pid_t pid;
	uint64_t restart_at; /* CLOCK_MONOTONIC ms; 0 = not waiting to restart */
	uint64_t started_ms;
	unsigned fails; /* quick exits in a row */
};

enum { INIT_CHAN, INIT_NET_PROXY, INIT_DNS_PROXY, INIT_N_DAEMONS };

struct init {
	struct stages stages;
	int sig_fd;
	pid_t agent;
	pid_t nft;	/* nft loading the egress ruleset, until reaped */
	int net_failed; /* some part of the network setup failed */
	struct init_daemon daemons[INIT_N_DAEMONS];
	int shutting_down; /* agent exits are expected from now on */
	int agent_died;	   /* the agent exited on its own: power off */
	int disk_mounted;  /* INIT_DISK_DIR is mounted */
	int root_bound;	   /* /root is INIT_DISK_ROOT */
	int swap_on;	   /* INIT_SWAPFILE is in use */
	int ws_mounted;	   /* the workspace is mounted on BOOTARGS_WORKSPACE */
	int in_rootfs;	   /* we chrooted into the overlay over the root image */
	int cgroups;	   /* the cgroup tree is set up (cgroup.h) */
	int reap_more;	   /* the last reap stopped at INIT_REAP_BATCH */
	struct bootargs args;
	int share_mounted[BOOTARGS_MAX_MOUNTS];
};

static const int init_signals[] = { SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPWR, SIGHUP };

struct init_mount {
	const char *source, *target, *type;
	unsigned long flags;
	const char *data;
	const char *stage; /* mark this stage after the mount, if not NULL */
};

static const struct init_mount init_mounts[] = {
	{ "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "mount_proc" },
	{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "mount_sys" },
	{ "devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", "mount_dev" },
	{ "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
	  "newinstance,ptmxmode=0666,mode=0620,gid=5", NULL },
	{ "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "mount_devpts" },
	{ "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", NULL },
	{ "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", "mount_tmpfs" },
};

static const char *const init_dev_links[][2] = {
	{ "/dev/ptmx", "pts/ptmx" },	      { "/dev/fd", "/proc/self/fd" },
	{ "/dev/stdin", "/proc/self/fd/0" },  { "/dev/stdout", "/proc/self/fd/1" },
	{ "/dev/stderr", "/proc/self/fd/2" },
};

/* One line on the console, whatever our own stdio is. */
static void init_console(const char *fmt, ...) _printf_(1, 2);
static void init_console(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n = snprintf(line, sizeof(line), "capsem-init: ");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		fd = dup(STDERR_FILENO);
	if (fd >= 0) {
		(void)!write(fd, line, (size_t)n);
		safe_close(fd);
	}
}

/* "text (why)" on the console, without init_console's prefix. */
static void init_console_raw(const char *text, const char *why)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "%s (%s)\n", text, why);
	_cleanup_close_ int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0 && n > 0)
		(void)!write(fd, line, MIN((size_t)n, sizeof(line) - 1));
}

static int init_mount_one(const struct init_mount *m)
{
	if (mkdir(m->target, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	if (mount(m->source, m->target, m->type, m->flags, m->data) < 0 && errno != EBUSY)
		return negative_errno();
	return 0;
}

/* The kernel opens /dev/console as our stdio only if the initramfs has that node; otherwise
 * fds 0-2 are closed. Fix that once devtmpfs is mounted. */
static void init_stdio(void)
{
	int fd = -1;
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) >= 0)
			continue;
		/* open() takes the lowest free fd, possibly i itself */
		if (fd < 0)
			fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			return;
		if (fd != i)
			(void)dup2(fd, i);
	}
	if (fd > 2)
		safe_close(fd);
}

static void init_filesystems(struct init *in)
{
	for (size_t i = 0; i < ELEMENTSOF(init_mounts); i++) {
		const struct init_mount *m = &init_mounts[i];
		int r = init_mount_one(m);
		if (r < 0)
			log_error_errno(r, "mount %s on %s", m->type, m->target);
		if (streq(m->target, "/dev")) {
			init_stdio();
			for (size_t j = 0; j < ELEMENTSOF(init_dev_links); j++) {
				/* devtmpfs has a /dev/ptmx node for the initial devpts instance */
				(void)unlink(init_dev_links[j][0]);
				if (symlink(init_dev_links[j][1], init_dev_links[j][0]) < 0)
					log_warn_errno(negative_errno(), "symlink %s",
						       init_dev_links[j][0]);
			}
		}
		if (m->stage)
			(void)stages_mark(&in->stages, m->stage);
	}
	if (mkdir("/root", 0700) < 0 && errno != EEXIST)
		log_warn_errno(negative_errno(), "mkdir /root");
}

/* The block device whose virtio serial number is serial: "/dev/vd<x>" into ret. 0, or -ENOENT
 * when there is none. */
static int init_find_blk(const char *serial, char *ret, size_t n)
{
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	int r = -ENOENT;
	if (!d)
		return -ENOENT;
	while (r < 0 && (de = readdir(d))) {
		char path[64 + sizeof(de->d_name)];
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		/* vd[a-z]+ only: the name becomes a /dev path */
		if (strncmp(de->d_name, "vd", 2) != 0 || strlen(de->d_name) > 8 ||
		    strspn(de->d_name + 2, "abcdefghijklmnopqrstuvwxyz") != strlen(de->d_name + 2))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/serial", de->d_name);
		if (read_file_small(path, 64, &text, &len) < 0)
			continue;
		while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
			text[--len] = 0;
		if (streq(text, serial)) {
			snprintf(ret, n, "/dev/%s", de->d_name);
			r = 0;
		}
	}
	closedir(d);
	return r;
}

/* The host's disk: ext4, found by its serial, mounted on INIT_DISK_DIR. No fsck in the
 * initramfs: ext4's journal replay is what recovers from an unclean stop. */
static void init_disk(struct init *in)
{
	char dev[32];
	if (init_find_blk(VM_BLK_SERIAL_DISK, dev, sizeof(dev)) < 0)
		return;
	if (mkdir_p(INIT_DISK_DIR, 0755) < 0 ||
	    mount(dev, INIT_DISK_DIR, "ext4", MS_NOATIME, "") < 0) {
		init_console("cannot mount the disk %s: %s; /root is not persistent this boot", dev,
			     strerror(errno));
		(void)stages_mark(&in->stages, "disk_failed");
		return;
	}
	in->disk_mounted = 1;
}

/* Swap on the VM's disk: INIT_SWAPFILE, made on the disk's first boot (fallocate'd, so it costs
 * the host's disk image nothing until pages are swapped out; ext4 swaps to unwritten extents)
 * with the size of the guest's RAM, at most INIT_SWAP_MAX_MIB and an eighth of the disk's free
 * space; then swapon. A failure costs the swap, not the boot. */
static void init_swap(struct init *in)
{
	struct sysinfo si;
	struct statvfs sv;
	if (!in->disk_mounted)
		return;
	_cleanup_close_ int fd = open(INIT_SWAPFILE, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && sysinfo(&si) == 0 && statvfs(INIT_DISK_DIR, &sv) == 0) {
		uint64_t ram = (uint64_t)si.totalram * si.mem_unit;
		uint64_t room = (uint64_t)sv.f_bavail * sv.f_frsize / 8;
		uint64_t size = MIN(MIN(ram, (uint64_t)INIT_SWAP_MAX_MIB << 20), room) & ~4095ull;
		unsigned char page[4096] = { 0 };
		uint32_t hdr[3] = { 1, (uint32_t)(size / 4096 - 1), 0 }; /* version, last page */
		if (size < 16u << 20)
			return;
		fd = open(INIT_SWAPFILE ".tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		memcpy(page + 1024, hdr, sizeof(hdr));
		memcpy(page + sizeof(page) - 10, "SWAPSPACE2", 10);
		if (fd < 0 || fallocate(fd, 0, 0, (off_t)size) < 0 ||
		    fd_write_all(fd, page, sizeof(page)) < 0 || fsync(fd) < 0 ||
		    rename(INIT_SWAPFILE ".tmp", INIT_SWAPFILE) < 0) {
			init_console("cannot make %s: %s; no swap", INIT_SWAPFILE, strerror(errno));
			(void)unlink(INIT_SWAPFILE ".tmp");
			return;
		}
	}
	if (fd < 0)
		return;
	if (swapon(INIT_SWAPFILE, 0) < 0)
		init_console("cannot swap to %s: %s", INIT_SWAPFILE, strerror(errno));
	else
		in->swap_on = 1;
}

/* The disk's root/ directory becomes /root (in the new root when there is one). */
static void init_disk_root(struct init *in)
{
	if (!in->disk_mounted)
		return;
	int mkdir_err = mkdir(INIT_DISK_ROOT, 0700) < 0 ? errno : 0;
	/* a new disk's /root gets the image's seed (the AI CLIs' settings; seed.h) */
	if (!mkdir_err && in->in_rootfs && seed_copy_tree(SEED_ROOT_DIR, INIT_DISK_ROOT) < 0)
		init_console("cannot copy %s into the new /root", SEED_ROOT_DIR);
	if ((mkdir_err && mkdir_err != EEXIST) ||
	    mount(INIT_DISK_ROOT, "/root", NULL, MS_BIND, NULL) < 0) {
		init_console("cannot use %s as /root: %s; /root is not persistent this boot",
			     INIT_DISK_ROOT, strerror(errno));
		(void)stages_mark(&in->stages, "disk_failed");
		return;
	}
	in->root_bound = 1;
	(void)stages_mark(&in->stages, "disk");
}

/* Mounts carried from the initramfs into the new root, in this order (submounts of /dev move
 * with it). */
static const char *const init_moved[] = {
	"/dev", "/proc", "/sys", "/run", "/tmp", INIT_ROOTFS_DIR, INIT_DISK_DIR, INIT_OVERLAY_TMP
};

static int init_is_mountpoint(const char *path)
{
	struct stat a, b;
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) < 0 || stat(parent, &b) < 0)
		return 0;
	return a.st_dev != b.st_dev;
}

/* Move the mounts into INIT_NEWROOT and chroot there. On failure, the moved mounts are moved
 * back and we are still in the initramfs. */
static int init_switch_root(void)
{
	size_t moved = 0;
	char dst[PATH_MAX];
	int r = 0;

	for (; moved < ELEMENTSOF(init_moved); moved++) {
		const char *src = init_moved[moved];
		if (!init_is_mountpoint(src))
			continue;
		snprintf(dst, sizeof(dst), INIT_NEWROOT "%s", src);
		if ((mkdir_p(dst, 0755) < 0) || mount(src, dst, NULL, MS_MOVE, NULL) < 0) {
			r = negative_errno();
			init_console("cannot move %s into the root image: %s", src, strerror(-r));
			break;
		}
	}
	if (r == 0 && (chdir(INIT_NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 ||
		       chroot(".") < 0 || chdir("/") < 0)) {
		r = negative_errno();
		init_console("cannot switch into the root image: %s", strerror(-r));
	}
	if (r == 0)
		return 0;
	while (moved-- > 0) {
		snprintf(dst, sizeof(dst), INIT_NEWROOT "%s", init_moved[moved]);
		if (init_is_mountpoint(dst))
			(void)mount(dst, init_moved[moved], NULL, MS_MOVE, NULL);
	}
	(void)!chdir("/");
	return r;
}

/* The root file system image, if the host attached one: squashfs (read-only) under an overlay,
 * which becomes our root. See the file comment. */
static void init_rootfs(struct init *in)
{
	char dev[32], opts[256];
	const char *base;
	if (init_find_blk(VM_BLK_SERIAL_ROOTFS, dev, sizeof(dev)) < 0)
		return;
	if (mkdir_p(INIT_ROOTFS_DIR, 0755) < 0 ||
	    (mount(dev, INIT_ROOTFS_DIR, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, NULL) < 0 &&
	     mount(dev, INIT_ROOTFS_DIR, "squashfs", MS_RDONLY | MS_NODEV | MS_NOSUID, NULL) < 0)) {
		init_console("cannot mount the root image %s: %s; staying in the initramfs", dev,
			     strerror(errno));
		goto fail;
	}
	(void)stages_mark(&in->stages, "rootfs");
	/* changes to the image persist with the disk, else they live in RAM for this boot */
	base = INIT_DISK_OVERLAY;
	if (!in->disk_mounted) {
		base = INIT_OVERLAY_TMP;
		if (mkdir_p(base, 0755) < 0 ||
		    mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
			init_console("cannot mount a tmpfs for the overlay: %s", strerror(errno));
			goto fail_umount;
		}
	}
	snprintf(opts, sizeof(opts), "%s/upper", base);
	if (mkdir_p(opts, 0755) < 0)
		goto fail_mkdir;
	snprintf(opts, sizeof(opts), "%s/work", base);
	if (mkdir_p(opts, 0755) < 0)
		goto fail_mkdir;
	snprintf(opts, sizeof(opts),
		 "lowerdir=" INIT_ROOTFS_DIR ",upperdir=%s/upper,workdir=%s/work", base, base);
	if (mkdir_p(INIT_NEWROOT, 0755) < 0 ||
	    mount("overlay", INIT_NEWROOT, "overlay", MS_NOSUID, opts) < 0) {
		init_console("cannot mount the overlay (%s): %s", opts, strerror(errno));
		goto fail_umount;
	}
	(void)stages_mark(&in->stages, "overlay");
	if (init_switch_root() < 0) {
		(void)umount(INIT_NEWROOT);
		goto fail_umount;
	}
	in->in_rootfs = 1;
	return;
fail_mkdir:
	init_console("cannot create the overlay directories under %s: %s", base, strerror(errno));
fail_umount:
	if (!in->disk_mounted)
		(void)umount(INIT_OVERLAY_TMP);
	(void)umount(INIT_ROOTFS_DIR);
fail:
	(void)stages_mark(&in->stages, "rootfs_failed");
}

/* The virtio-serial port named name, opened read-write, or -1: "capsem.chan", the host channel
 * when it is a port (docs/PROTOCOL.md §10; handed to capsem-chan, restarted like the proxies;
 * -1 when the VM has vsock instead), or "capsem.ws", the workspace's 9p. */
static int init_port(const char *name)
{
	_cleanup_closedir_ DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char p[320];
		if (e->d_name[0] == '.' || strlen(e->d_name) > 64)
			continue;
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%.64s/name", e->d_name);
		_cleanup_free_ char *t = NULL;
		if (read_file_small(p, 64, &t, NULL) < 0)
			continue;
		t[strcspn(t, "\n")] = 0;
		if (!streq(t, name))
			continue;
		snprintf(p, sizeof(p), "/dev/%.64s", e->d_name);
		return open(p, O_RDWR | O_CLOEXEC | O_NOCTTY);
	}
	return -1;
}

/* The workspace: the host's virtiofsd, on BOOTARGS_WORKSPACE (inside /root, on the disk or not);
 * "capsem.workspace=9p" when the host shares it over 9p instead (a normal user's capsem-vm). */
static void init_workspace(struct init *in)
{
	const char *tag = in->args.workspace;
	if (!tag[0])
		return;
	if (streq(tag, "9p")) { /* it is one of the 9p shares, mounted by init_shares */
		for (size_t i = 0; i < in->args.n_mounts; i++)
			if (in->share_mounted[i] &&
			    streq(in->args.mounts[i].path, BOOTARGS_WORKSPACE))
				(void)stages_mark(&in->stages, "workspace");
		return;
	}
	int r = mkdir_p(BOOTARGS_WORKSPACE, 0755);
	if (r == 0 && streq(tag, "serial")) {
		/* the host's own 9p server on the port "capsem.ws" (a VM that can be saved),
		 * through a relay: the 9p fd transport cannot use the port itself (wsrelay.h) */
		int port = init_port("capsem.ws"), sv[2] = { -1, -1 };
		if (port < 0)
			r = -ENODEV;
		else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			r = negative_errno();
		if (r < 0)
			safe_close(port);
		else if ((r = wsrelay_spawn(port, sv[1])) > 0)
			r = 0;
		if (r == 0) {
			char opts[128];
			snprintf(opts, sizeof(opts), INIT_9P_FD_OPTS, sv[0], sv[0]);
			r = mount("capsem.ws", BOOTARGS_WORKSPACE, "9p", MS_NOSUID | MS_NODEV,
				  opts);
			r = r < 0 ? negative_errno() : 0;
		}
		safe_close(sv[0]); /* the mount holds its own reference */
		if (r == 0)
			goto mounted;
	}
	if (r < 0 || mount(tag, BOOTARGS_WORKSPACE, "virtiofs", MS_NOSUID | MS_NODEV, NULL) < 0) {
		init_console("cannot mount the workspace (%s) on " BOOTARGS_WORKSPACE ": %s", tag,
			     strerror(r < 0 ? -r : errno));
		(void)stages_mark(&in->stages, "workspace_failed");
		return;
	}
mounted:
	in->ws_mounted = 1;
	(void)stages_mark(&in->stages, "workspace");
}

/* The host's 9p shares, as the kernel command line lists them. */
static void init_shares(struct init *in)
{
	_cleanup_free_ char *cmdline = NULL;
	int failed = 0;
	if (read_file_small("/proc/cmdline", 4096, &cmdline, NULL) < 0)
		return;
	bootargs_parse(cmdline, &in->args);
	if (in->args.n_invalid > 0) {
		init_console("ignoring %zu malformed capsem.mount= or capsem.workspace= entries",
			     in->args.n_invalid);
		failed = 1;
	}
	for (size_t i = 0; i < in->args.n_mounts; i++) {
		const struct bootargs_mount *m = &in->args.mounts[i];
		int r = mkdir_p(m->path, 0755);
		if (r < 0 ||
		    mount(m->tag, m->path, "9p",
			  MS_NOSUID | MS_NODEV | (m->readonly ? MS_RDONLY : 0), INIT_9P_OPTS) < 0) {
			init_console("cannot mount the host share %s on %s: %s", m->tag, m->path,
				     strerror(r < 0 ? -r : errno));
			failed = 1;
			continue;
		}
		in->share_mounted[i] = 1;
	}
	if (in->args.n_mounts > 0 || failed)
		(void)stages_mark(&in->stages, failed ? "mounts_failed" : "mounts");
	init_workspace(in);
}

/* Before power-off, with every other process gone: leave the disk's ext4 clean. */
static void init_unmount(struct init *in)
{
	for (size_t i = in->args.n_mounts; i-- > 0;)
		if (in->share_mounted[i] && umount2(in->args.mounts[i].path, MNT_DETACH) == 0)
			in->share_mounted[i] = 0;
	if (in->ws_mounted && umount2(BOOTARGS_WORKSPACE, MNT_DETACH) == 0)
		in->ws_mounted = 0;
	if (in->root_bound && umount("/root") == 0)
		in->root_bound = 0;
	if (!in->disk_mounted)
		return;
	if (in->swap_on && swapoff(INIT_SWAPFILE) < 0)
		init_console("cannot stop swapping to %s: %s", INIT_SWAPFILE, strerror(errno));
	/* the overlay (our root) keeps the disk busy when its upper directory is there: make it
	 * read-only first, which flushes the upper file system's writes */
	if (in->in_rootfs && mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
		log_debug("cannot remount the root read-only: %s", strerror(errno));
	if (umount(INIT_DISK_DIR) == 0) {
		in->disk_mounted = 0;
		return;
	}
	init_console("cannot unmount the disk (%s): remounting it read-only", strerror(errno));
	if (mount(NULL, INIT_DISK_DIR, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
		init_console("cannot remount the disk read-only: %s", strerror(errno));
}

static int init_loopback(void)
{
	struct ifreq ifr = { 0 };
	_cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	memcpy(ifr.ifr_name, "lo", sizeof("lo"));
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return negative_errno();
	/* the kernel gives lo 127.0.0.1/8 and ::1 when it comes up */
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		return negative_errno();
	return 0;
}

static uint64_t init_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- resources ---- */

/* Before any fork: init and all it starts are not the OOM killer's to pick, and the workload
 * gets its cgroup and limits (cgroup.h). */
static void init_resources(struct init *in)
{
	struct cgpure_limits l;
	int r;

	r = cgroup_oom_setup();
	if (r < 0)
		init_console("cannot set up the OOM killer: %s", strerror(-r));
	r = cgroup_setup(&l);
	if (r < 0) {
		init_console("no cgroup limits for the workload: %s", strerror(-r));
		return;
	}
	in->cgroups = 1;
	log_debug("workload limits: memory %llu MiB, swap %llu MiB, %llu tasks; kept for the "
		  "system: %llu MiB, %llu tasks",
		  (unsigned long long)(l.mem_max >> 20), (unsigned long long)(l.swap_max >> 20),
		  (unsigned long long)l.pids_max, (unsigned long long)(l.mem_reserve >> 20),
		  (unsigned long long)l.pids_reserve);
}

/* ---- the network ---- */

/* In the initramfs: lo, capsem0, nft started, the proxies' sockets. */
static void init_net_start(struct init *in)
{
	struct init_daemon *np = &in->daemons[INIT_NET_PROXY], *dp = &in->daemons[INIT_DNS_PROXY];
	int r;

	*np = (struct init_daemon){ .name = "capsem-net-proxy",
				    .args = { "--listen-fd", "3" },
				    .fds = { -1, -1 } };
	*dp = (struct init_daemon){ .name = "capsem-dns-proxy",
				    .args = { "--udp-fd", "3", "--tcp-fd", "4" },
				    .fds = { -1, -1 } };
	in->daemons[INIT_CHAN] = (struct init_daemon){ .name = "capsem-chan",
						       .fds = { init_port("capsem.chan"), -1 } };
	r = init_loopback();
	if (r < 0) {
		init_console("cannot bring up lo: %s", strerror(-r));
		in->net_failed = 1;
	}
	(void)stages_mark(&in->stages, "net_lo");
	r = netsetup_link();
	if (r < 0) {
		init_console("cannot set up %s: %s", NETSETUP_IFNAME, strerror(-r));
		in->net_failed = 1;
	}
	r = netsetup_rules_spawn(&in->nft);
	if (r < 0) {
		init_console("cannot run %s: %s", NETSETUP_NFT, strerror(-r));
		in->net_failed = 1;
		in->nft = 0;
	}
	r = netsetup_listen(SOCK_STREAM, NETSETUP_NET_PORT, &np->fds[0]);
	if (r == 0)
		r = netsetup_listen(SOCK_DGRAM, NETSETUP_DNS_PORT, &dp->fds[0]);
	if (r == 0)
		r = netsetup_listen(SOCK_STREAM, NETSETUP_DNS_PORT, &dp->fds[1]);
	if (r < 0) {
		init_console("cannot open the egress proxies' sockets: %s", strerror(-r));
		in->net_failed = 1;
	}
}

/* Wait for nft (SIGCHLD only; other signals stay queued on the signalfd). */
static void init_wait_nft(struct init *in)
{
	uint64_t deadline = init_mono_ms() + INIT_NFT_WAIT_MS;
	sigset_t chld;
	int status;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	while (in->nft > 0) {
		pid_t p = waitpid(in->nft, &status, WNOHANG);
		if (p == in->nft) {
			in->nft = 0;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				init_console("%s could not load the egress rules (status %d)",
					     NETSETUP_NFT,
					     WIFEXITED(status) ? WEXITSTATUS(status)
							       : 128 + WTERMSIG(status));
				in->net_failed = 1;
			}
			return;
		}
		uint64_t now = init_mono_ms();
		if (p < 0 || now >= deadline) {
			init_console("%s did not finish loading the egress rules", NETSETUP_NFT);
			in->net_failed = 1;
			return; /* reaped later like any child */
		}
		struct timespec ts = { .tv_sec = (time_t)((deadline - now) / 1000),
				       .tv_nsec = (long)((deadline - now) % 1000) * 1000000L };
		(void)sigtimedwait(&chld, NULL, &ts);
	}
}

static int init_spawn_daemon(struct init *in, struct init_daemon *d)
{
	char *argv[ELEMENTSOF(d->args) + 2];
	size_t n = 0;
	sigset_t none;

	argv[n++] = (char *)d->name;
	for (size_t i = 0; i < ELEMENTSOF(d->args) && d->args[i]; i++)
		argv[n++] = (char *)d->args[i];
	argv[n] = NULL;
	d->restart_at = 0;
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		int tmp[ELEMENTSOF(d->fds)];
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		(void)setsid();
		int null = open("/dev/null", O_RDONLY | O_NOCTTY);
		if (null > 0) {
			(void)dup2(null, 0);
			safe_close(null);
		}
		/* the sockets become 3, 4, ...: through copies above 10 so none is clobbered */
		for (size_t i = 0; i < ELEMENTSOF(d->fds); i++)
			tmp[i] = d->fds[i] >= 0 ? fcntl(d->fds[i], F_DUPFD_CLOEXEC, 10) : -1;
		for (size_t i = 0; i < ELEMENTSOF(d->fds); i++)
			if (tmp[i] >= 0 && dup2(tmp[i], 3 + (int)i) < 0)
				_exit(126);
		execve("/proc/self/exe", argv, environ);
		execve("/init", argv, environ);
		init_console("cannot execute %s: %s", d->name, strerror(errno));
		_exit(127);
	}
	d->pid = pid;
	d->started_ms = init_mono_ms();
	return 0;
}

/* In the final root: the rules loaded, /etc files, the proxies started. */
static void init_net_finish(struct init *in)
{
	int r;
	char host[PROTO_NAME_MAX] = "";

	init_wait_nft(in);
	r = netsetup_write_resolv();
	if (r < 0)
		init_console("cannot write /etc/resolv.conf: %s", strerror(-r));
	(void)gethostname(host, sizeof(host) - 1);
	r = netsetup_write_hosts(host);
	if (r < 0)
		init_console("cannot write /etc/hosts: %s", strerror(-r));
	for (size_t i = 0; i < INIT_N_DAEMONS; i++) {
		struct init_daemon *d = &in->daemons[i];
		if (d->fds[0] < 0)
			continue; /* no sockets: nothing to serve */
		r = init_spawn_daemon(in, d);
		if (r < 0) {
			init_console("cannot start %s: %s", d->name, strerror(-r));
			in->net_failed = 1;
		}
	}
	(void)stages_mark(&in->stages, in->net_failed ? "net_failed" : "net");
}

/* A proxy exited: restart it, at once after a long run, else after a growing delay. */
static void init_daemon_exited(struct init *in, struct init_daemon *d, int status)
{
	uint64_t now = init_mono_ms();
	d->pid = 0;
	if (in->shutting_down)
		return;
	if (now - d->started_ms >= INIT_STABLE_MS)
		d->fails = 0;
	unsigned delay = d->fails == 0 ? 0
				       : MIN(INIT_RESTART_MIN_MS << MIN(d->fails - 1, 6u),
					     INIT_RESTART_MAX_MS);
	d->fails++;
	if (WIFSIGNALED(status))
		init_console("%s killed by signal %d; restarting it in %u ms", d->name,
			     WTERMSIG(status), delay);
	else
		init_console("%s exited with status %d; restarting it in %u ms", d->name,
			     WEXITSTATUS(status), delay);
	d->restart_at = now + delay + 1; /* never 0: 0 means "not waiting" */
}

/* Restart the proxies that are due; returns the poll timeout until the next one (-1: none). */
static int init_daemon_restarts(struct init *in)
{
	uint64_t now = init_mono_ms(), next = UINT64_MAX;
	for (size_t i = 0; i < INIT_N_DAEMONS; i++) {
		struct init_daemon *d = &in->daemons[i];
		if (!d->restart_at || in->shutting_down)
			continue;
		if (d->restart_at <= now) {
			int r = init_spawn_daemon(in, d);
			if (r < 0) {
				init_console("cannot restart %s: %s", d->name, strerror(-r));
				d->restart_at = now + INIT_RESTART_MAX_MS;
			}
		}
		if (d->restart_at)
			next = MIN(next, d->restart_at);
	}
	return next == UINT64_MAX ? -1 : (int)MIN(next - MIN(next, now), 60000u);
}

static int init_spawn_agent(struct init *in)
{
	char list[4096];
	char *argv[] = { (char *)"capsem-agent",
			 (char *)"--boot-stages",
			 list,
			 NULL,
			 NULL,
			 NULL,
			 NULL,
			 NULL,
			 NULL };
	sigset_t none;

	if (in->daemons[INIT_CHAN].fds[0] >= 0) { /* the host channel is capsem-chan's */
		argv[3] = (char *)"--listen-unix";
		argv[4] = (char *)HOSTCONN_EXEC_LISTEN;
		argv[5] = (char *)"--control-unix";
		argv[6] = (char *)HOSTCONN_DIR "/5000";
		argv[7] = (char *)"--guest"; /* still the guest's own agent: apply BOOT_CONFIG */
	}
	(void)stages_mark(&in->stages, "agent_spawn");
	if (stages_format(&in->stages, list, sizeof(list)) < 0)
		list[0] = 0;
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		(void)setsid();
		int fd = open("/dev/null", O_RDONLY | O_NOCTTY);
		if (fd > 0) {
			(void)dup2(fd, 0);
			safe_close(fd);
		}
		execve("/proc/self/exe", argv, environ);
		execve("/init", argv, environ);
		init_console("cannot execute capsem-agent: %s", strerror(errno));
		_exit(127);
	}
	in->agent = pid;
	return 0;
}

/* Reap children that have exited, at most INIT_REAP_BATCH: a fork bomb's orphans come to PID 1
 * as fast as it reaps them, and init must get back to its signals (a power-off) in between.
 * Returns 1 when the batch was full (more may be waiting), 0 when none is left to reap now,
 * -ECHILD once there are no children at all. */
static int init_reap(struct init *in)
{
	int status;
	for (unsigned n = 0; n < INIT_REAP_BATCH;) {
		pid_t p = waitpid(-1, &status, WNOHANG);
		if (p < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (p == 0)
			return 0;
		n++;
		if (p == in->nft) {
			in->nft = 0; /* timed out earlier and finished since */
			continue;
		}
		for (size_t i = 0; i < INIT_N_DAEMONS; i++)
			if (in->daemons[i].pid == p)
				init_daemon_exited(in, &in->daemons[i], status);
		if (p == in->agent) {
			in->agent = 0;
			if (!in->shutting_down) {
				if (WIFSIGNALED(status))
					init_console(
						"capsem-agent killed by signal %d; powering off",
						WTERMSIG(status));
				else
					init_console(
						"capsem-agent exited with status %d; powering off",
						WEXITSTATUS(status));
				in->agent_died = 1;
			}
		}
	}
	return 1;
}

/* Reap until no child is left or ms have passed. */
static void init_wait_children(struct init *in, int ms)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct signalfd_siginfo si;
	for (;;) {
		int more = init_reap(in);
		if (more == -ECHILD)
			return;
		/* the caller is powering off: every queued signal is moot now */
		while (in->sig_fd >= 0 && read(in->sig_fd, &si, sizeof(si)) == sizeof(si))
			;
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left =
			ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return;
		if (more > 0)
			continue; /* zombies are waiting */
		struct pollfd p = { .fd = in->sig_fd, .events = POLLIN };
		(void)poll(&p, 1, (int)left);
	}
}

/* clean: asked for (a signal from halt/poweroff/reboot or the host's SHUTDOWN), not a failure */
static _noreturn_ void init_poweroff(struct init *in, const char *why, int clean)
{
	in->shutting_down = 1;
	log_info("powering off (%s)", why);
	(void)kill(-1, SIGTERM);
	init_wait_children(in, INIT_GRACE_MS);
	if (in->cgroups)
		(void)cgroup_workload_kill();
	(void)kill(-1, SIGKILL);
	init_wait_children(in, INIT_KILL_WAIT_MS);
	init_unmount(in);
	sync();
	if (clean)
		init_console_raw(PROTO_CONSOLE_POWEROFF, why);
	(void)reboot(RB_AUTOBOOT);
	(void)reboot(RB_POWER_OFF);
	init_console("reboot failed: %s", strerror(errno));
	for (;;)
		pause();
}

int init_main(int argc, char **argv)
{
	struct init in = { .sig_fd = -1 };
	uint64_t t0 = stages_now_usec();
	sigset_t set;
	int r;

	log_setup("capsem-init", LOG_LVL_INFO);
	if (getpid() != 1) {
		log_error("must run as PID 1");
		return 1;
	}
	(void)stages_add(&in.stages, "init_start", t0);

	/* "bare" (kernel command line "... -- bare"): the benchmark baseline. PID 1 only writes one
	 * line to the console and reboots, which ends QEMU: the cost of booting this kernel and
	 * initramfs with nothing of Capsem in the way. */
	if (argc >= 2 && streq(argv[1], "bare")) {
		static const char line[] = "capsem-bare-init\n";
		int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
		if (fd >= 0) {
			(void)!write(fd, line, sizeof(line) - 1);
			close(fd);
		}
		(void)reboot(RB_AUTOBOOT);
		return 0;
	}

	/* everything init handles arrives through the signalfd; blocked until then */
	sigemptyset(&set);
	for (size_t i = 0; i < ELEMENTSOF(init_signals); i++)
		sigaddset(&set, init_signals[i]);
	(void)sigprocmask(SIG_BLOCK, &set, NULL);
	(void)reboot(RB_DISABLE_CAD); /* ctrl-alt-del becomes SIGINT */
	umask(022);

	init_filesystems(&in); /* also fixes fds 0-2 before anything else takes them */
	init_resources(&in);   /* before the first fork */
	in.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (in.sig_fd < 0)
		init_console("signalfd: %s", strerror(errno));
	init_net_start(&in); /* nft and capsem0 live in the initramfs: before the chroot */
	init_disk(&in);
	init_rootfs(&in);
	init_disk_root(&in);
	init_swap(&in);
	init_shares(&in);
	init_net_finish(&in);

	setenv("PATH", INIT_PATH, 1);
	setenv("HOME", "/root", 1);

	r = init_spawn_agent(&in);
	if (r < 0) {
		init_console("cannot start capsem-agent: %s", strerror(-r));
		init_poweroff(&in, "no agent", 0);
	}
	if (in.sig_fd < 0)
		init_poweroff(&in, "no signalfd", 0);

	for (;;) {
		struct pollfd p = { .fd = in.sig_fd, .events = POLLIN };
		struct signalfd_siginfo si;
		ssize_t k = read(in.sig_fd, &si, sizeof(si));
		if (k != (ssize_t)sizeof(si)) {
			if (k < 0 && errno != EAGAIN && errno != EINTR)
				init_poweroff(&in, "signalfd read failed", 0);
			if (in.reap_more) {
				/* no signal waiting: the next batch of zombies */
				in.reap_more = init_reap(&in) > 0;
				if (in.agent_died)
					init_poweroff(&in, "agent died", 0);
				(void)init_daemon_restarts(&in);
				continue;
			}
			(void)poll(&p, 1, init_daemon_restarts(&in));
			(void)init_daemon_restarts(&in);
			continue;
		}
		switch (si.ssi_signo) {
		case SIGCHLD:
			in.reap_more = init_reap(&in) > 0;
			if (in.agent_died)
				init_poweroff(&in, "agent died", 0);
			break;
		case SIGHUP:
			break;
		default:
			init_poweroff(&in, strsignal((int)si.ssi_signo), 1);
		}
	}
}

int init_power_main(const char *name, int argc, char **argv)
{
	int sig = streq(name, "halt") ? SIGUSR1 : streq(name, "reboot") ? SIGTERM : SIGUSR2;
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--help")) {
			printf("Usage: %s [-f] [-p]\n\nStop this Capsem VM through PID 1's clean "
			       "shutdown (every process is\nsignalled, the disk is unmounted "
			       "clean). A "
			       "microVM cannot reboot in place: reboot\nstops it too, and 'capsem "
			       "start "
			       "VM' or 'capsem restart VM' on the host boots\nit again.\n",
			       name);
			return 0;
		}
		/* -f (force), -p (power off), -n (no sync), -d (delay 0), -w: one clean path */
		if (argv[i][0] != '-') {
			fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", name,
				argv[i]);
			return 2;
		}
	}
	if (streq(name, "reboot"))
		fprintf(stderr, "reboot: a Capsem VM stops instead (boot it again from the host: "
				"capsem start VM)\n");
	sync();
	if (kill(1, sig) < 0) {
		fprintf(stderr, "%s: cannot signal PID 1: %s\n", name, strerror(errno));
		return 1;
	}
	return 0;
}
