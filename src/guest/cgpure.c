/* cgpure.c - the workload's limits and the parsing of cgroup and /proc "key value" files.
 *
 * Pure functions on numbers and NUL-terminated text the kernel wrote (trusted, but still read
 * strictly: a line that does not parse is "not there"). Libc only; any thread; used by cgroup.c
 * (init and the agent) and tests/unit/guest.
 */
#include "cgpure.h"

#include "macro.h"
#include "parse.h"

void cgpure_limits(uint64_t mem_total, uint64_t mem_avail, uint64_t task_limit,
		   struct cgpure_limits *ret)
{
	struct cgpure_limits l = { 0 };

	l.mem_reserve = mem_total / CGPURE_MEM_RESERVE_DIV;
	l.mem_reserve = MAX(l.mem_reserve, CGPURE_MEM_RESERVE_MIN);
	l.mem_reserve = MIN(l.mem_reserve, CGPURE_MEM_RESERVE_MAX);
	if (mem_avail / 2 >= l.mem_reserve)
		l.mem_max = mem_avail - l.mem_reserve;
	else
		l.mem_max = mem_avail - mem_avail / 2;
	l.mem_max &= ~(uint64_t)4095; /* whole pages */
	l.mem_reserve = mem_avail - l.mem_max;
	l.swap_max = l.mem_max;

	l.pids_reserve =
		MAX(task_limit / CGPURE_PIDS_RESERVE_DIV, (uint64_t)CGPURE_PIDS_RESERVE_MIN);
	if (task_limit / 2 >= l.pids_reserve)
		l.pids_max = task_limit - l.pids_reserve;
	else
		l.pids_max = task_limit - task_limit / 2;
	l.pids_max = MIN(l.pids_max, (uint64_t)CGPURE_PIDS_MAX);
	l.pids_reserve = task_limit - l.pids_max;
	*ret = l;
}

uint64_t cgpure_exec_pids_max(uint64_t workload_max)
{
	uint64_t spare = MAX(workload_max / CGPURE_EXEC_PIDS_SPARE_DIV,
			     (uint64_t)CGPURE_EXEC_PIDS_SPARE_MIN);
	return workload_max >= 2 * spare ? workload_max - spare : workload_max;
}

/* Does the line at p start with the word key (followed by ':' or a blank)? Then where its
 * value starts. */
static const char *field_value(const char *p, const char *key)
{
	size_t k = strlen(key);
	if (k == 0 || strncmp(p, key, k) != 0)
		return NULL;
	p += k;
	if (*p == ':')
		p++;
	if (*p != ' ' && *p != '\t')
		return NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

int cgpure_field(const char *text, const char *key, uint64_t *ret)
{
	for (const char *line = text; line && *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		const char *v = field_value(line, key);
		if (v && v < line + len) {
			char num[32], *unit;
			uint64_t x;
			size_t n = (size_t)(line + len - v);
			if (n >= sizeof(num))
				return -EINVAL;
			memcpy(num, v, n);
			num[n] = 0;
			unit = strchr(num, ' ');
			if (unit) {
				*unit++ = 0;
				if (!streq(unit, "kB"))
					return -EINVAL;
			}
			if (parse_u64(num, &x) < 0)
				return -EINVAL;
			if (unit) {
				if (x > UINT64_MAX / 1024)
					return -EINVAL;
				x *= 1024;
			}
			*ret = x;
			return 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	return -ENOENT;
}

int cgpure_self_path(const char *text, char *buf, size_t n)
{
	for (const char *line = text; line && *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		if (len >= 4 && strncmp(line, "0::/", 4) == 0) {
			if (len - 3 >= n)
				return -ENAMETOOLONG;
			memcpy(buf, line + 3, len - 3);
			buf[len - 3] = 0;
			return 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	return -ENOENT;
}

int cgpure_has_word(const char *list, const char *word)
{
	size_t k = strlen(word);
	for (const char *p = list; k && *p;) {
		p += strspn(p, " \t\n");
		size_t l = strcspn(p, " \t\n");
		if (l == k && strncmp(p, word, k) == 0)
			return 1;
		p += l;
	}
	return 0;
}
