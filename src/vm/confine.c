/* confine.c - namespaces for the processes capsem-vm starts (confine.h).
 *
 * Runs in a forked child between fork and exec: async-signal-safe calls only (open, write,
 * close, unshare), no allocation, no stdio.
 *
 * Trust boundary: none crossed; it only narrows what the child (QEMU, virtiofsd) can reach.
 */
#include "confine.h"

#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* Write s to path (the child's own /proc files). 0 or -1. */
static int write_str(const char *path, const char *s, size_t n)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t k = write(fd, s, n);
	close(fd);
	return k == (ssize_t)n ? 0 : -1;
}

/* "0 <id> 1\n" into buf, without stdio. */
static size_t id_map(char *buf, unsigned id)
{
	char digits[16];
	size_t n = 0, k = 0;
	do {
		digits[k++] = (char)('0' + id % 10);
		id /= 10;
	} while (id && k < sizeof(digits));
	buf[n++] = '0';
	buf[n++] = ' ';
	while (k > 0)
		buf[n++] = digits[--k];
	buf[n++] = ' ';
	buf[n++] = '1';
	buf[n++] = '\n'; /* a line for the kernel: not a C string */
	return n;
}

int confine_userns(uid_t uid, gid_t gid)
{
	char map[40];
	if (unshare(CLONE_NEWUSER) < 0 || write_str("/proc/self/setgroups", "deny", 4) < 0 ||
	    write_str("/proc/self/uid_map", map, id_map(map, uid)) < 0 ||
	    write_str("/proc/self/gid_map", map, id_map(map, gid)) < 0)
		return -1;
	return 0;
}

int confine_netns(uid_t uid, gid_t gid)
{
	/* a user may make a network namespace only from inside a user namespace of its own */
	if (uid != 0 && confine_userns(uid, gid) < 0)
		return -1;
	return unshare(CLONE_NEWNET) < 0 ? -1 : 0;
}
