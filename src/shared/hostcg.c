/* hostcg.c - a per-VM host cgroup with memory and pids limits (hostcg.h).
 *
 * Where: /proc/self/cgroup names our cgroup per v1 controller ("4:memory:/a/b") or the unified
 * one ("0::/a/b"); the hierarchies are expected at /sys/fs/cgroup/<controller> (v1) or
 * /sys/fs/cgroup (v2, when its cgroup.controllers lists the controller). The new cgroup is
 * <ours>/<name>; a leftover of the same name (a capsem-vm killed before it could clean up) is
 * removed first when empty.
 *
 * Trust boundary: none; it reads the kernel's files and writes limits we computed. Called from
 * capsem-vm's main thread; hostcg_join in a child between fork and exec.
 */
#include "hostcg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "parse.h"

#define CG_ROOT "/sys/fs/cgroup"

static const char *const controller[HOSTCG_N] = { "memory", "pids" };

/* Our cgroup path in controller c's hierarchy, and that hierarchy's mount ("" for v2 unified).
 * 0 or -ENOENT. */
static int own_cgroup(const char *c, char *ret_mnt, size_t mnt_len, char *ret_path, size_t path_len)
{
	_cleanup_free_ char *s = NULL;
	int r = read_file_small("/proc/self/cgroup", 1u << 16, &s, NULL);
	if (r < 0)
		return r;
	char v1[64], v2[64];
	snprintf(v1, sizeof(v1), CG_ROOT "/%s/tasks", c);
	snprintf(v2, sizeof(v2), CG_ROOT "/cgroup.controllers");
	int is_v1 = access(v1, F_OK) == 0;
	if (!is_v1) {
		_cleanup_free_ char *ctl = NULL;
		if (read_file_small(v2, 4096, &ctl, NULL) < 0 || !strstr(ctl, c))
			return -ENOENT;
	}
	for (char *line = s, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
		if (!b)
			continue;
		*b = 0;
		const char *ctls = a + 1, *path = b + 1;
		int match = 0;
		if (is_v1) {
			/* "memory" or a comma list holding it */
			for (const char *p = ctls; *p;) {
				size_t n = strcspn(p, ",");
				if (n == strlen(c) && strncmp(p, c, n) == 0)
					match = 1;
				p += n + (p[n] == ',');
			}
		} else {
			match = line[0] == '0' && *ctls == 0;
		}
		if (!match)
			continue;
		if (is_v1)
			snprintf(ret_mnt, mnt_len, CG_ROOT "/%s", c);
		else
			snprintf(ret_mnt, mnt_len, CG_ROOT);
		snprintf(ret_path, path_len, "%s", streq(path, "/") ? "" : path);
		return 0;
	}
	return -ENOENT;
}

static int write_at(const char *dir, const char *file, const char *val)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	return fd_write_all(fd, val, strlen(val));
}

static int make_one(struct hostcg *cg, int k, const char *name, uint64_t mem_bytes,
		    unsigned pids_max, char *why, size_t why_len)
{
	char mnt[256], own[2048], dir[4096], val[32];
	int r = own_cgroup(controller[k], mnt, sizeof(mnt), own, sizeof(own));
	if (r < 0) {
		snprintf(why, why_len, "no %s cgroup controller mounted", controller[k]);
		return r;
	}
	int v2 = streq(mnt, CG_ROOT);
	snprintf(dir, sizeof(dir), "%s%s/%s", mnt, own, name);
	(void)rmdir(dir); /* a leftover, when empty */
	if (mkdir(dir, 0755) < 0) {
		r = negative_errno();
		if (snprintf(why, why_len, "cannot create %s: %s", dir, strerror(-r)) < 0)
			why[0] = 0;
		return r;
	}
	cg->dir[k] = strdup(dir);
	if (!cg->dir[k]) {
		(void)rmdir(dir);
		return -ENOMEM;
	}
	if (k == HOSTCG_MEM) {
		snprintf(val, sizeof(val), "%" PRIu64, mem_bytes);
		r = write_at(dir, v2 ? "memory.max" : "memory.limit_in_bytes", val);
		/* no swapping around the limit: v1 with swap accounting, v2 */
		if (r >= 0 && !v2 &&
		    access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0)
			r = write_at(dir, "memory.memsw.limit_in_bytes", val);
		if (r >= 0 && v2)
			(void)write_at(dir, "memory.swap.max", "0");
	} else {
		snprintf(val, sizeof(val), "%u", pids_max);
		r = write_at(dir, "pids.max", val);
	}
	char procs[4200];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
	if (r >= 0) {
		cg->procs_fd[k] = open(procs, O_WRONLY | O_CLOEXEC);
		if (cg->procs_fd[k] < 0)
			r = negative_errno();
	}
	if (r < 0) {
		if (snprintf(why, why_len, "cannot set up %s: %s", dir, strerror(-r)) < 0)
			why[0] = 0;
		(void)rmdir(dir);
		free(cg->dir[k]);
		cg->dir[k] = NULL;
	}
	return r;
}

int hostcg_create(struct hostcg *cg, const char *name, uint64_t mem_bytes, unsigned pids_max,
		  char *why, size_t why_len)
{
	int first = 0;
	if (!*name || strchr(name, '/') || streq(name, ".") || streq(name, ".."))
		return -EINVAL;
	for (int k = 0; k < HOSTCG_N; k++) {
		char w[512] = "";
		int r = make_one(cg, k, name, mem_bytes, pids_max, w, sizeof(w));
		if (r < 0 && first == 0) {
			first = r;
			snprintf(why, why_len, "%s", w);
		}
	}
	return first;
}

int hostcg_own_dir(int k, char *buf, size_t len)
{
	char mnt[256], own[2048];
	if (k < 0 || k >= HOSTCG_N)
		return -EINVAL;
	int r = own_cgroup(controller[k], mnt, sizeof(mnt), own, sizeof(own));
	if (r < 0)
		return r;
	if (snprintf(buf, len, "%s%s", mnt, own) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int hostcg_join(const struct hostcg *cg)
{
	for (int k = 0; k < HOSTCG_N; k++)
		if (cg->procs_fd[k] >= 0 && write(cg->procs_fd[k], "0", 1) != 1)
			return -1;
	return 0;
}

const char *hostcg_mem_dir(const struct hostcg *cg)
{
	return cg->dir[HOSTCG_MEM];
}

int hostcg_oom_killed(const struct hostcg *cg)
{
	const char *d = cg->dir[HOSTCG_MEM];
	if (!d)
		return -ENOENT;
	char p[4200];
	int v2 = strncmp(d, CG_ROOT "/memory/", strlen(CG_ROOT "/memory/")) != 0;
	snprintf(p, sizeof(p), "%s/%s", d, v2 ? "memory.events" : "memory.oom_control");
	_cleanup_free_ char *s = NULL;
	int r = read_file_small(p, 4096, &s, NULL);
	if (r < 0)
		return r;
	const char *k = strstr(s, "oom_kill "), *end;
	uint32_t n = 0;
	return k && parse_u32_prefix(k + strlen("oom_kill "), &n, &end) == 0 && n > 0;
}

void hostcg_remove(struct hostcg *cg)
{
	if (!cg)
		return;
	for (int k = 0; k < HOSTCG_N; k++) {
		cg->procs_fd[k] = safe_close(cg->procs_fd[k]);
		if (cg->dir[k])
			(void)rmdir(cg->dir[k]);
		free(cg->dir[k]);
		cg->dir[k] = NULL;
	}
}
