/* cgroup.c - build and use the guest's cgroup v2 tree (cgroup.h): capsem-init lays it out, exec
 * session processes make one group per exec under the workload, kill it and remove it.
 *
 * Everything goes through cgroupfs files, each written with one write(2) (the kernel parses one
 * write as one command). The tree is made before PID 1 forks anything, so every later process
 * starts in the system group and only a session's child moves into the workload, by writing its
 * own pid into its exec group's cgroup.procs between fork and exec: the session process itself
 * never enters the workload, so it can always fork, whatever the workload's pids.max (moving a
 * task into a group is allowed past pids.max; only forks inside it are refused).
 *
 * Trust boundary: none new; the files are the kernel's. Runs in capsem-init (PID 1), the agent and
 * its session processes, all single-threaded.
 */
#include "cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "macro.h"
#include "parse.h"

#define CGROUP_CONTROLLERS "+pids +memory"
#define CGROUP_CONTROLLERS_CPU "+pids +memory +cpu"
#define CGROUP_FILE_MAX 4096u
#define CGROUP_MEM_MIN (16ull << 20) /* below these the workload could hardly run */
#define CGROUP_PIDS_MIN 64u

/* One write of s to dirfd/file (cgroupfs takes one command per write). 0 or -errno. */
static int cg_write(int dirfd, const char *file, const char *s)
{
	_cleanup_close_ int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	size_t n = strlen(s);
	if (fd < 0)
		return negative_errno();
	ssize_t k = write(fd, s, n);
	if (k < 0)
		return negative_errno();
	return (size_t)k == n ? 0 : -EIO;
}

static int cg_write_u64(int dirfd, const char *file, uint64_t v)
{
	char num[24];
	snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	return cg_write(dirfd, file, num);
}

/* dirfd/file into buf (NUL-terminated, at most n - 1 bytes). 0 or -errno. */
static int cg_read(int dirfd, const char *file, char *buf, size_t n)
{
	_cleanup_close_ int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	if (fd < 0)
		return negative_errno();
	while (len + 1 < n) {
		ssize_t k = read(fd, buf + len, n - 1 - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return negative_errno();
		if (k == 0)
			break;
		len += (size_t)k;
	}
	buf[len] = 0;
	return 0;
}

/* The number in dirfd/file (a limit, a /proc/sys value); -errno when it cannot be read, -EINVAL
 * when it is not a number (a limit of "max"). */
static int cg_read_u64(int dirfd, const char *file, uint64_t *ret)
{
	char buf[64];
	int r = cg_read(dirfd, file, buf, sizeof(buf));
	if (r < 0)
		return r;
	buf[strcspn(buf, "\n")] = 0;
	return parse_u64(buf, ret);
}

int cgroup_setup(struct cgpure_limits *ret)
{
	_cleanup_close_ int root = -1, wl = -1;
	_cleanup_free_ char *meminfo = NULL;
	char buf[256];
	uint64_t total = 0, avail = 0, threads = 32768, pid_max = 32768;
	struct cgpure_limits l;
	const char *ctl = CGROUP_CONTROLLERS;
	int cpu, r;

	if (mkdir(CGROUP_MOUNT, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	if (mount("cgroup2", CGROUP_MOUNT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return errno == ENODEV ? -EOPNOTSUPP : negative_errno();
	root = open(CGROUP_MOUNT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return negative_errno();
	r = cg_read(root, "cgroup.controllers", buf, sizeof(buf));
	if (r < 0)
		return r;
	if (!cgpure_has_word(buf, "pids") || !cgpure_has_word(buf, "memory"))
		return -EOPNOTSUPP;
	/* the cpu controller (CONFIG_FAIR_GROUP_SCHED), when the kernel has it, shares CPU time
	 * between the groups rather than between tasks: a thousand runnable tasks in the
	 * workload then weigh no more than one */
	cpu = cgpure_has_word(buf, "cpu");
	if (cpu)
		ctl = CGROUP_CONTROLLERS_CPU;
	if ((mkdirat(root, CGROUP_SYSTEM, 0755) < 0 && errno != EEXIST) ||
	    (mkdirat(root, CGROUP_WORKLOAD, 0755) < 0 && errno != EEXIST))
		return negative_errno();
	r = cg_write(root, "cgroup.subtree_control", ctl);
	if (r < 0)
		return r;
	if (cpu) {
		r = cg_write_u64(root, CGROUP_SYSTEM "/cpu.weight", CGROUP_SYSTEM_CPU_WEIGHT);
		if (r < 0)
			return r;
	}
	r = cg_write_u64(root, CGROUP_SYSTEM "/cgroup.procs", (uint64_t)getpid());
	if (r < 0)
		return r;

	/* the limits, from what the kernel has before any workload runs */
	r = read_file_small("/proc/meminfo", 64 * 1024, &meminfo, NULL);
	if (r < 0)
		return r;
	r = cgpure_field(meminfo, "MemTotal", &total);
	if (r < 0)
		return r;
	if (cgpure_field(meminfo, "MemAvailable", &avail) < 0 || avail > total)
		avail = total;
	(void)cg_read_u64(AT_FDCWD, "/proc/sys/kernel/threads-max", &threads);
	(void)cg_read_u64(AT_FDCWD, "/proc/sys/kernel/pid_max", &pid_max);
	cgpure_limits(total, avail, MIN(threads, pid_max), &l);
	if (l.mem_max < CGROUP_MEM_MIN || l.pids_max < CGROUP_PIDS_MIN)
		return -ERANGE; /* a guest this small is better off without limits */

	wl = openat(root, CGROUP_WORKLOAD, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wl < 0)
		return negative_errno();
	r = cg_write_u64(wl, "memory.max", l.mem_max);
	if (r < 0)
		return r;
	/* no swap accounting in this kernel: nothing to bound */
	r = cg_write_u64(wl, "memory.swap.max", l.swap_max);
	if (r < 0 && r != -ENOENT)
		return r;
	r = cg_write_u64(wl, "pids.max", l.pids_max);
	if (r < 0)
		return r;
	r = cg_write(wl, "cgroup.subtree_control", ctl);
	if (r < 0)
		return r;
	*ret = l;
	return 0;
}

int cgroup_check(void)
{
	_cleanup_free_ char *self = NULL;
	_cleanup_close_ int wl = -1;
	char path[256], buf[64];
	uint64_t v;
	int r;

	r = read_file_small("/proc/self/cgroup", 64 * 1024, &self, NULL);
	if (r < 0)
		return r;
	r = cgpure_self_path(self, path, sizeof(path));
	if (r < 0)
		return r;
	if (strncmp(path, "/" CGROUP_WORKLOAD, strlen("/" CGROUP_WORKLOAD)) == 0)
		return -EPERM; /* inside the workload: its limits would be ours */
	wl = open(CGROUP_WORKLOAD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wl < 0)
		return negative_errno();
	/* the limits are set (a half-built tree has "max") */
	if (cg_read_u64(wl, "pids.max", &v) < 0 || cg_read_u64(wl, "memory.max", &v) < 0)
		return -ENOENT;
	r = cg_read(wl, "cgroup.subtree_control", buf, sizeof(buf));
	if (r < 0)
		return r;
	if (!cgpure_has_word(buf, "pids") || !cgpure_has_word(buf, "memory"))
		return -ENOENT;
	return 0;
}

int cgroup_oom_score_adj(const char *value)
{
	return cg_write(AT_FDCWD, "/proc/self/oom_score_adj", value);
}

int cgroup_oom_setup(void)
{
	int r = cgroup_oom_score_adj(CGROUP_OOM_ADJ_SYSTEM);
	int k = cg_write(AT_FDCWD, "/proc/sys/vm/oom_dump_tasks", "0");
	return r < 0 ? r : k;
}

int cgroup_workload_kill(void)
{
	_cleanup_close_ int wl = open(CGROUP_WORKLOAD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wl < 0)
		return negative_errno();
	return cg_write(wl, "cgroup.kill", "1");
}

uint64_t cgroup_workload_mem_max(void)
{
	uint64_t v = 0;
	if (cg_read_u64(AT_FDCWD, CGROUP_WORKLOAD_DIR "/memory.max", &v) < 0)
		return 0;
	return v;
}

void cgroup_exec_path(uint64_t id, const char *file, char *buf, size_t n)
{
	snprintf(buf, n, CGROUP_WORKLOAD_DIR "/" CGROUP_EXEC_PREFIX "%llu%s%s",
		 (unsigned long long)id, file && *file ? "/" : "", strempty(file));
}

int cgroup_exec_create(uint64_t id, int oom_group, struct cgroup_exec *ret)
{
	struct cgroup_exec c = CGROUP_EXEC_NONE;
	char name[32];
	uint64_t wl_pids;
	int r;

	if (id == 0)
		return -EINVAL;
	snprintf(name, sizeof(name), CGROUP_EXEC_PREFIX "%llu", (unsigned long long)id);
	_cleanup_close_ int wl = open(CGROUP_WORKLOAD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (wl < 0)
		return negative_errno();
	if (mkdirat(wl, name, 0755) < 0)
		return negative_errno();
	c.id = id;
	c.dir_fd = openat(wl, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.dir_fd < 0)
		goto fail_errno;
	if (oom_group) {
		r = cg_write(c.dir_fd, "memory.oom.group", "1");
		if (r < 0)
			goto fail;
	}
	/* a share of the workload's tasks stays out of this exec's reach */
	if (cg_read_u64(wl, "pids.max", &wl_pids) == 0) {
		r = cg_write_u64(c.dir_fd, "pids.max", cgpure_exec_pids_max(wl_pids));
		if (r < 0)
			goto fail;
	}
	c.procs_fd = openat(c.dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (c.procs_fd < 0)
		goto fail_errno;
	c.events_fd = openat(c.dir_fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
	if (c.events_fd < 0)
		goto fail_errno;
	*ret = c;
	return 0;

fail_errno:
	r = negative_errno();
fail:
	cgroup_exec_close(&c);
	(void)unlinkat(wl, name, AT_REMOVEDIR);
	return r;
}

int cgroup_exec_enter(int procs_fd)
{
	char num[24];
	size_t n = sizeof(num);
	unsigned long long v = (unsigned long long)getpid();

	/* no snprintf: a child between fork and exec */
	do {
		num[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n > 0);
	ssize_t k = write(procs_fd, num + n, sizeof(num) - n);
	if (k < 0)
		return negative_errno();
	return (size_t)k == sizeof(num) - n ? 0 : -EIO;
}

int cgroup_exec_kill(const struct cgroup_exec *c)
{
	int r;
	if (c->dir_fd < 0)
		return -EBADF;
	r = cg_write(c->dir_fd, "cgroup.kill", "1");
	if (r != -ENOENT)
		return r;
	/* a kernel before 5.14 has no cgroup.kill: one pass over cgroup.procs (forks racing it
	 * survive; the caller waits for the group to empty and says so when it does not) */
	char buf[CGROUP_FILE_MAX];
	r = cg_read(c->dir_fd, "cgroup.procs", buf, sizeof(buf));
	if (r < 0)
		return r;
	for (char *p = buf, *nl; *p; p = nl ? nl + 1 : p + strlen(p)) {
		uint64_t pid;
		nl = strchr(p, '\n');
		if (nl)
			*nl = 0;
		if (parse_u64(p, &pid) == 0 && pid > 1 && pid < INT32_MAX)
			(void)kill((pid_t)pid, SIGKILL);
	}
	return 0;
}

int cgroup_exec_populated(const struct cgroup_exec *c)
{
	char buf[256];
	uint64_t v;
	if (c->events_fd < 0)
		return -EBADF;
	ssize_t k = pread(c->events_fd, buf, sizeof(buf) - 1, 0);
	if (k < 0)
		return negative_errno();
	buf[k] = 0;
	if (cgpure_field(buf, "populated", &v) < 0)
		return -EBADMSG;
	return v != 0;
}

uint64_t cgroup_exec_oom_kills(const struct cgroup_exec *c)
{
	char buf[512];
	uint64_t v = 0;
	if (c->dir_fd < 0 || cg_read(c->dir_fd, "memory.events", buf, sizeof(buf)) < 0)
		return 0;
	if (cgpure_field(buf, "oom_kill", &v) < 0)
		return 0;
	return v;
}

void cgroup_exec_close(struct cgroup_exec *c)
{
	c->dir_fd = safe_close(c->dir_fd);
	c->procs_fd = safe_close(c->procs_fd);
	c->events_fd = safe_close(c->events_fd);
}

int cgroup_exec_remove(uint64_t id)
{
	char path[128];
	cgroup_exec_path(id, NULL, path, sizeof(path));
	if (rmdir(path) < 0)
		return negative_errno();
	return 0;
}
