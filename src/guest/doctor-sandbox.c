/* doctor-sandbox.c - capsem-doctor's "sandbox" group: the guest's own walls, each checked by
 * behaviour where the kernel lets us (a write that must fail, a device node that must not open,
 * a syscall that must be refused), not only by the absence of a file.
 *
 *   rootfs-ro    the root image's mount point (the top-most mount there) is read-only and a
 *                write to it fails with EROFS
 *   rootfs-dev   the root image's block device itself is read-only (BLKROGET, and writing its
 *                first block back unchanged fails): remounting it cannot make the image writable
 *   setid        no setuid/setgid file on the root file system (not crossing mounts)
 *   modules      the kernel loads no modules: no module is loaded, and finit_module(2) fails
 *                (ENOSYS: no module support, or EPERM: loading disabled), so modprobe cannot
 *   devmem       no /dev/mem, /dev/kmem, /dev/port, and a node made with mknod(c 1 1) does not
 *                open (the kernel has no /dev/mem driver)
 *   kcore        no /proc/kcore (the kernel's memory as an ELF core)
 *   kallsyms     /proc/kallsyms is absent or shows no address
 *   debugfs      the kernel has no debugfs
 *   cmdline      the kernel runs with slab_nomerge, page_alloc.shuffle=1 and init_on_alloc=1
 *   workload     this command (an exec, like every command run through the agent) is in the
 *                workload cgroup, whose pids.max and memory.max are set, and PID 1 is not
 *                (cgroup.h: the system side keeps its reserve)
 *
 * Trust boundary: none new (doctor.c). Single-threaded.
 */
#include <fcntl.h>
#include <ftw.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cgroup.h"
#include "doctor-int.h"
#include "doctor.h"
#include "fdutil.h"
#include "parse.h"

/* The first four fields of a /proc/mounts line (device, mount point, type, options), split in
 * place. 0, or -EINVAL when the line has fewer. */
static int mount_fields(char *line, char *ret[4])
{
	for (int i = 0; i < 4; i++) {
		line += strspn(line, " ");
		if (!*line)
			return -EINVAL;
		ret[i] = line;
		line += strcspn(line, " ");
		if (*line)
			*line++ = 0;
	}
	return 0;
}

static int opts_ro(const char *opts)
{
	return strncmp(opts, "ro,", 3) == 0 || streq(opts, "ro") || strstr(opts, ",ro,") != NULL ||
	       (strlen(opts) > 3 && streq(opts + strlen(opts) - 3, ",ro"));
}

/* The top-most mount on dir (the last /proc/mounts line for it): its device, type and options
 * copied out. 1 when found, 0 when not, -errno. */
static int find_mount(const char *dir, char *dev, char *type, char *opts, size_t n)
{
	_cleanup_free_ char *mounts = NULL;
	int found = 0;
	if (read_file_small("/proc/mounts", 1u << 20, &mounts, NULL) < 0)
		return -EIO;
	for (char *line = mounts; line && *line;) {
		char *nl = strchr(line, '\n'), *f[4];
		if (nl)
			*nl = 0;
		if (mount_fields(line, f) == 0 && streq(f[1], dir)) {
			snprintf(dev, n, "%s", f[0]);
			snprintf(type, n, "%s", f[2]);
			snprintf(opts, n, "%s", f[3]);
			found = 1;
		}
		line = nl ? nl + 1 : NULL;
	}
	return found;
}

static void check_rootfs(struct doctor *d)
{
	char dev[256], type[256], opts[256];
	int r = find_mount(DOCTOR_ROOTFS_DIR, dev, type, opts, sizeof(dev));
	if (r < 0) {
		doctor_add(d, "rootfs-ro", DOCTOR_FAIL, "cannot read /proc/mounts");
		doctor_add(d, "rootfs-dev", DOCTOR_FAIL, "cannot read /proc/mounts");
		return;
	}
	if (r == 0) {
		doctor_add(d, "rootfs-ro", DOCTOR_SKIP,
			   "no root image (the minimal image runs from its initramfs)");
		doctor_add(d, "rootfs-dev", DOCTOR_SKIP, "no root image");
		return;
	}
	int ro = opts_ro(opts);
	int fd = open(DOCTOR_ROOTFS_DIR "/.capsem-doctor-probe",
		      O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int err = fd < 0 ? errno : 0;
	if (fd >= 0) {
		close(fd);
		(void)unlink(DOCTOR_ROOTFS_DIR "/.capsem-doctor-probe");
	}
	if (ro && err == EROFS)
		doctor_add(d, "rootfs-ro", DOCTOR_PASS,
			   "%s on " DOCTOR_ROOTFS_DIR " is %s, read-only (a write fails: EROFS)",
			   dev, type);
	else
		doctor_add(d, "rootfs-ro", DOCTOR_FAIL, "%s on " DOCTOR_ROOTFS_DIR " (%s): %s", dev,
			   type, ro ? "a write did not fail with EROFS" : "mounted read-write");

	/* the device under it: read-only in the block layer (the host attached it so). Opening
	 * it for writing succeeds even then; writing its first block back unchanged must fail. */
	int bro = 0;
	char block[4096];
	_cleanup_close_ int bfd = open(dev, O_RDWR | O_CLOEXEC);
	if (bfd < 0 && errno == EROFS) {
		doctor_add(d, "rootfs-dev", DOCTOR_PASS,
			   "%s is a read-only block device (opening it for writing fails: EROFS)",
			   dev);
		return;
	}
	if (bfd < 0 || ioctl(bfd, BLKROGET, &bro) < 0 ||
	    pread(bfd, block, sizeof(block), 0) != (ssize_t)sizeof(block)) {
		doctor_add(d, "rootfs-dev", DOCTOR_FAIL, "cannot query %s: %s", dev,
			   strerror(errno));
		return;
	}
	ssize_t w = pwrite(bfd, block, sizeof(block), 0);
	int werr = w < 0 ? errno : 0;
	if (bro && werr)
		doctor_add(d, "rootfs-dev", DOCTOR_PASS,
			   "%s is a read-only block device (a write to it fails: %s)", dev,
			   strerror(werr));
	else
		doctor_add(d, "rootfs-dev", DOCTOR_FAIL, "%s is writable%s", dev,
			   bro ? " (BLKROGET says read-only, yet a write went through)"
			       : " (BLKROGET: not read-only)");
}

static struct {
	size_t count;
	char first[200];
} setid;

static int setid_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	if (type == FTW_F && (st->st_mode & (S_ISUID | S_ISGID))) {
		if (setid.count++ == 0)
			snprintf(setid.first, sizeof(setid.first), "%s", path);
	}
	return 0;
}

static void check_setid(struct doctor *d)
{
	setid.count = 0;
	setid.first[0] = 0;
	if (nftw("/", setid_one, 32, FTW_PHYS | FTW_MOUNT) < 0) {
		doctor_add(d, "setid", DOCTOR_FAIL, "cannot walk /: %s", strerror(errno));
		return;
	}
	if (setid.count)
		doctor_add(d, "setid", DOCTOR_FAIL, "%zu setuid/setgid files, e.g. %s", setid.count,
			   setid.first);
	else
		doctor_add(d, "setid", DOCTOR_PASS,
			   "no setuid/setgid file on the root file system");
}

static void check_modules(struct doctor *d)
{
	_cleanup_free_ char *mods = NULL;
	size_t len = 0;
	if (access("/proc/modules", F_OK) == 0 &&
	    (read_file_small("/proc/modules", 1u << 20, &mods, &len) < 0 || len > 0)) {
		doctor_add(d, "modules", DOCTOR_FAIL, "kernel modules are loaded (/proc/modules)");
		return;
	}
	/* what modprobe would end in: an empty image from an invalid fd still tells ENOSYS (no
	 * module support) or EPERM (disabled) apart from a kernel that would try */
	long r = syscall(SYS_finit_module, -1, "", 0);
	int e = r < 0 ? errno : 0;
	if (e == ENOSYS)
		doctor_add(d, "modules", DOCTOR_PASS,
			   "the kernel has no module support: finit_module fails with ENOSYS");
	else if (e == EPERM)
		doctor_add(d, "modules", DOCTOR_PASS,
			   "no module loaded; finit_module fails with EPERM (loading disabled)");
	else
		doctor_add(d, "modules", DOCTOR_FAIL,
			   "the kernel accepts modules (finit_module: %s)",
			   e ? strerror(e) : "succeeded");
}

static void check_devmem(struct doctor *d)
{
	static const char *const devs[] = { "/dev/mem", "/dev/kmem", "/dev/port" };
	static const char probe[] = "/dev/.capsem-doctor-mem";
	char found[128] = "";
	for (size_t i = 0; i < ELEMENTSOF(devs); i++)
		if (access(devs[i], F_OK) == 0) {
			size_t l = strlen(found);
			snprintf(found + l, sizeof(found) - l, "%s%s", l ? " " : "", devs[i]);
		}
	if (found[0]) {
		doctor_add(d, "devmem", DOCTOR_FAIL, "present: %s", found);
		return;
	}
	(void)unlink(probe);
	if (mknod(probe, S_IFCHR | 0600, makedev(1, 1)) < 0) {
		doctor_add(d, "devmem", DOCTOR_FAIL, "cannot make a probe node in /dev: %s",
			   strerror(errno));
		return;
	}
	int fd = open(probe, O_RDONLY | O_CLOEXEC);
	int e = fd < 0 ? errno : 0;
	safe_close(fd);
	(void)unlink(probe);
	if (e == ENXIO || e == ENODEV)
		doctor_add(d, "devmem", DOCTOR_PASS,
			   "no /dev/mem, /dev/kmem, /dev/port; a mknod'ed /dev/mem does not open "
			   "(%s)",
			   strerror(e));
	else
		doctor_add(d, "devmem", DOCTOR_FAIL, "a mknod'ed /dev/mem (c 1 1) %s",
			   e ? strerror(e) : "opens: the kernel has the driver");
}

static void check_kcore(struct doctor *d)
{
	if (access("/proc/kcore", F_OK) == 0)
		doctor_add(d, "kcore", DOCTOR_FAIL, "/proc/kcore exists");
	else
		doctor_add(d, "kcore", DOCTOR_PASS, "no /proc/kcore");
}

static void check_kallsyms(struct doctor *d)
{
	char buf[4096];
	_cleanup_close_ int fd = open("/proc/kallsyms", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		doctor_add(d, "kallsyms", DOCTOR_PASS, "no /proc/kallsyms");
		return;
	}
	ssize_t n = fd_read_some(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		doctor_add(d, "kallsyms", DOCTOR_PASS, "/proc/kallsyms reads nothing");
		return;
	}
	buf[n] = 0;
	/* every line starts with its address: all zeros when kptr_restrict hides them */
	for (char *l = buf; *l;) {
		for (char *p = l; *p && *p != ' ' && *p != '\n'; p++)
			if (*p != '0') {
				doctor_add(d, "kallsyms", DOCTOR_FAIL,
					   "/proc/kallsyms shows kernel addresses");
				return;
			}
		char *nl = strchr(l, '\n');
		if (!nl)
			break;
		l = nl + 1;
	}
	doctor_add(d, "kallsyms", DOCTOR_PASS, "/proc/kallsyms shows no address");
}

static void check_debugfs(struct doctor *d)
{
	_cleanup_free_ char *fs = NULL;
	if (read_file_small("/proc/filesystems", 64 * 1024, &fs, NULL) < 0) {
		doctor_add(d, "debugfs", DOCTOR_FAIL, "cannot read /proc/filesystems");
		return;
	}
	if (strstr(fs, "\tdebugfs\n") || strstr(fs, "\ttracefs\n"))
		doctor_add(d, "debugfs", DOCTOR_FAIL, "the kernel has %s",
			   strstr(fs, "\tdebugfs\n") ? "debugfs" : "tracefs");
	else
		doctor_add(d, "debugfs", DOCTOR_PASS, "the kernel has no debugfs or tracefs");
}

/* 1 when the space-separated word w is in s. */
static int has_word(const char *s, const char *w)
{
	size_t l = strlen(w);
	for (const char *p = s; (p = strstr(p, w)); p += l)
		if ((p == s || p[-1] == ' ') && (p[l] == 0 || p[l] == ' ' || p[l] == '\n'))
			return 1;
	return 0;
}

static void check_cmdline(struct doctor *d)
{
	static const char *const want[] = { "slab_nomerge", "page_alloc.shuffle=1",
					    "init_on_alloc=1" };
	_cleanup_free_ char *cmd = NULL;
	char missing[128] = "";
	if (read_file_small("/proc/cmdline", 64 * 1024, &cmd, NULL) < 0) {
		doctor_add(d, "cmdline", DOCTOR_FAIL, "cannot read /proc/cmdline");
		return;
	}
	for (size_t i = 0; i < ELEMENTSOF(want); i++)
		if (!has_word(cmd, want[i])) {
			size_t l = strlen(missing);
			snprintf(missing + l, sizeof(missing) - l, "%s%s", l ? " " : "", want[i]);
		}
	if (missing[0])
		doctor_add(d, "cmdline", DOCTOR_FAIL, "the kernel runs without %s", missing);
	else
		doctor_add(
			d, "cmdline", DOCTOR_PASS,
			"the kernel runs with slab_nomerge page_alloc.shuffle=1 init_on_alloc=1");
}

/* The workload cgroup file's value as a number; -errno when it is missing or "max". */
static int workload_limit(const char *file, uint64_t *ret)
{
	char path[128];
	_cleanup_free_ char *text = NULL;
	snprintf(path, sizeof(path), CGROUP_WORKLOAD_DIR "/%s", file);
	int r = read_file_small(path, 64, &text, NULL);
	if (r < 0)
		return r;
	text[strcspn(text, "\n")] = 0;
	return parse_u64(text, ret);
}

static void check_workload(struct doctor *d)
{
	_cleanup_free_ char *self = NULL, *init = NULL;
	char path[256], init_path[256], swap[48] = "no swap accounting";
	uint64_t pids, mem, sw;

	if (read_file_small("/proc/self/cgroup", 64 * 1024, &self, NULL) < 0 ||
	    cgpure_self_path(self, path, sizeof(path)) < 0) {
		doctor_add(d, "workload", DOCTOR_FAIL,
			   "no cgroup v2: exec commands run without limits");
		return;
	}
	if (strncmp(path, "/" CGROUP_WORKLOAD "/", strlen("/" CGROUP_WORKLOAD "/")) != 0) {
		doctor_add(d, "workload", DOCTOR_FAIL, "this command runs in cgroup %s, not in /%s",
			   path, CGROUP_WORKLOAD);
		return;
	}
	if (workload_limit("pids.max", &pids) < 0 || workload_limit("memory.max", &mem) < 0) {
		doctor_add(d, "workload", DOCTOR_FAIL,
			   "the workload cgroup has no pids.max or memory.max");
		return;
	}
	if (read_file_small("/proc/1/cgroup", 64 * 1024, &init, NULL) < 0 ||
	    cgpure_self_path(init, init_path, sizeof(init_path)) < 0 ||
	    !streq(init_path, "/" CGROUP_SYSTEM)) {
		doctor_add(d, "workload", DOCTOR_FAIL, "PID 1 is not in /%s", CGROUP_SYSTEM);
		return;
	}
	if (workload_limit("memory.swap.max", &sw) == 0)
		snprintf(swap, sizeof(swap), "swap %llu MiB", (unsigned long long)(sw >> 20));
	doctor_add(d, "workload", DOCTOR_PASS,
		   "in %s: at most %llu tasks, %llu MiB (%s); init in /%s", path,
		   (unsigned long long)pids, (unsigned long long)(mem >> 20), swap, CGROUP_SYSTEM);
}

void doctor_sandbox(struct doctor *d)
{
	check_rootfs(d);
	check_setid(d);
	check_modules(d);
	check_devmem(d);
	check_kcore(d);
	check_kallsyms(d);
	check_debugfs(d);
	check_cmdline(d);
	check_workload(d);
}
