/* bootargs.c - parse capsem-init's parameters out of the kernel command line.
 *
 * The command line comes from capsem-vm (src/vm/qemu.c builds it), but a developer's --append
 * also lands there, so every entry is checked: bounded lengths, a fixed tag form, guest paths
 * limited to characters that need no quoting and no "." or ".." components. Pure code (no I/O);
 * runs in capsem-init (PID 1) and in the host unit tests.
 */
#include "bootargs.h"

#include <string.h>

#include "macro.h"

#define MOUNT_KEY "capsem.mount="
#define WORKSPACE_KEY "capsem.workspace="
#define TAG_PREFIX "capsem9p"

static int tag_ok(const char *s, size_t n)
{
	size_t k = strlen(TAG_PREFIX);
	if (n <= k || n >= BOOTARGS_TAG_MAX || strncmp(s, TAG_PREFIX, k) != 0)
		return 0;
	for (size_t i = k; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static int path_ok(const char *s, size_t n)
{
	static const char *const reserved[] = { "/proc", "/sys", "/dev" };
	if (n < 2 || n >= BOOTARGS_PATH_MAX || s[0] != '/' || s[n - 1] == '/')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '/' || c == '_' || c == '.' || c == '-'))
			return 0;
	}
	/* components: not empty, not ".", not ".." */
	size_t start = 1;
	for (size_t i = 1; i <= n; i++) {
		if (i < n && s[i] != '/')
			continue;
		size_t len = i - start;
		const char *c = s + start;
		if (len == 0 || (len == 1 && c[0] == '.') ||
		    (len == 2 && c[0] == '.' && c[1] == '.'))
			return 0;
		start = i + 1;
	}
	for (size_t i = 0; i < ELEMENTSOF(reserved); i++) {
		size_t k = strlen(reserved[i]);
		if (n >= k && strncmp(s, reserved[i], k) == 0 && (n == k || s[k] == '/'))
			return 0;
	}
	return 1;
}

/* One "capsem.mount=" value of n bytes: tag:path:ro|rw. 0 or -EINVAL. */
static int parse_mount(const char *v, size_t n, struct bootargs_mount *m)
{
	const char *c1 = memchr(v, ':', n);
	if (!c1 || n < 3 || v[n - 3] != ':')
		return -EINVAL;
	size_t tag_len = (size_t)(c1 - v);
	const char *path = c1 + 1;
	const char *mode = v + n - 2;
	if (path > v + n - 3)
		return -EINVAL;
	size_t path_len = (size_t)(v + n - 3 - path);
	if (!tag_ok(v, tag_len) || !path_ok(path, path_len))
		return -EINVAL;
	if (memcmp(mode, "ro", 2) != 0 && memcmp(mode, "rw", 2) != 0)
		return -EINVAL;
	memcpy(m->tag, v, tag_len);
	m->tag[tag_len] = 0;
	memcpy(m->path, path, path_len);
	m->path[path_len] = 0;
	m->readonly = mode[1] == 'o';
	return 0;
}

/* A virtio-fs tag: 1..BOOTARGS_TAG_MAX-1 of [a-z0-9]. */
static int ws_tag_ok(const char *s, size_t n)
{
	if (n == 0 || n >= BOOTARGS_TAG_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			return 0;
	return 1;
}

static int has_mount(const struct bootargs *b, const struct bootargs_mount *m)
{
	for (size_t i = 0; i < b->n_mounts; i++)
		if (streq(b->mounts[i].path, m->path) || streq(b->mounts[i].tag, m->tag))
			return 1;
	return 0;
}

void bootargs_parse(const char *cmdline, struct bootargs *ret)
{
	const char *p = cmdline;
	*ret = (struct bootargs){ 0 };
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			return;
		size_t n = strcspn(p, " \t\n");
		if (n == 2 && p[0] == '-' && p[1] == '-')
			return;
		size_t k = strlen(MOUNT_KEY), w = strlen(WORKSPACE_KEY);
		if (n > w && strncmp(p, WORKSPACE_KEY, w) == 0) {
			if (ret->workspace[0] || !ws_tag_ok(p + w, n - w))
				ret->n_invalid++;
			else
				memcpy(ret->workspace, p + w, n - w); /* zeroed above: terminated */
		} else if (n >= k && strncmp(p, MOUNT_KEY, k) == 0) {
			struct bootargs_mount m;
			if (parse_mount(p + k, n - k, &m) < 0 ||
			    ret->n_mounts >= BOOTARGS_MAX_MOUNTS || has_mount(ret, &m))
				ret->n_invalid++;
			else
				ret->mounts[ret->n_mounts++] = m;
		}
		p += n;
	}
}
