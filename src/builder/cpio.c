/* cpio.c - deterministic newc cpio writer (see cpio.h for the format choices).
 *
 * Trust boundary: the inputs are the builder's own (file bodies read from the host, applet names
 * printed by a busybox binary), but every path is still normalised and checked so that no entry
 * can escape the archive root ("..", empty components) and every size fits the format. Runs in
 * the caller's thread.
 */
#include "cpio.h"

#include <stdint.h>
#include <sys/stat.h>

enum entry_kind { ENTRY_DIR, ENTRY_FILE, ENTRY_SYMLINK, ENTRY_CHR };

struct entry {
	char *path; /* normalised: no leading '/', no empty/./.. components */
	enum entry_kind kind;
	unsigned mode; /* permission bits */
	int implicit;  /* directory added as someone's parent, mode not chosen yet */
	uint8_t *data; /* file body or symlink target (owned) */
	size_t len;
	unsigned major, minor;
};

struct cpio {
	struct entry *e;
	size_t n, alloc;
};

struct cpio *cpio_new(void)
{
	return calloc(1, sizeof(struct cpio));
}

void cpio_free(struct cpio *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->e[i].path);
		free(c->e[i].data);
	}
	free(c->e);
	free(c);
}

/* Normalise path into a malloc'ed string without the leading '/'. 0, -EINVAL or -ENOMEM. */
static int normalise(const char *path, char **ret)
{
	size_t n;
	if (!path)
		return -EINVAL;
	while (*path == '/')
		path++;
	n = strlen(path);
	if (n == 0 || n >= CPIO_PATH_MAX)
		return -EINVAL;
	const char *p = path;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 0 || (len == 1 && p[0] == '.') ||
		    (len == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
				return -EINVAL;
		if (!slash)
			break;
		p = slash + 1;
	}
	char *s = strdup(path);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static struct entry *find(const struct cpio *c, const char *norm)
{
	for (size_t i = 0; i < c->n; i++)
		if (streq(c->e[i].path, norm))
			return &c->e[i];
	return NULL;
}

/* Append an entry taking ownership of path and data (freed on failure too). */
static int push(struct cpio *c, char *path, enum entry_kind kind, unsigned mode, int implicit,
		uint8_t *data, size_t len)
{
	if (c->n >= CPIO_MAX_ENTRIES) {
		free(path);
		free(data);
		return -E2BIG;
	}
	if (c->n == c->alloc) {
		size_t na = c->alloc ? c->alloc * 2 : 64;
		struct entry *ne = realloc(c->e, na * sizeof(*ne));
		if (!ne) {
			free(path);
			free(data);
			return -ENOMEM;
		}
		c->e = ne;
		c->alloc = na;
	}
	c->e[c->n++] = (struct entry){ .path = path,
				       .kind = kind,
				       .mode = mode,
				       .implicit = implicit,
				       .data = data,
				       .len = len };
	return 0;
}

/* Make sure every parent of norm exists as a directory. */
static int add_parents(struct cpio *c, const char *norm)
{
	char buf[CPIO_PATH_MAX];
	size_t n = strlen(norm);
	memcpy(buf, norm, n + 1);
	for (size_t i = 1; i < n; i++) {
		if (buf[i] != '/')
			continue;
		buf[i] = 0;
		struct entry *e = find(c, buf);
		if (e && e->kind != ENTRY_DIR)
			return -ENOTDIR;
		if (!e) {
			char *p = strdup(buf);
			if (!p)
				return -ENOMEM;
			int r = push(c, p, ENTRY_DIR, 0755, 1, NULL, 0);
			if (r < 0)
				return r;
		}
		buf[i] = '/';
	}
	return 0;
}

/* Common front half of every adder: normalise, check duplicates, add parents. */
static int prepare(struct cpio *c, const char *path, unsigned mode, char **ret_norm)
{
	_cleanup_free_ char *norm = NULL;
	if (mode & ~07777u)
		return -EINVAL;
	int r = normalise(path, &norm);
	if (r < 0)
		return r;
	if (find(c, norm))
		return -EEXIST;
	r = add_parents(c, norm);
	if (r < 0)
		return r;
	*ret_norm = TAKE_PTR(norm);
	return 0;
}

int cpio_add_dir(struct cpio *c, const char *path, unsigned mode)
{
	_cleanup_free_ char *norm = NULL;
	if (mode & ~07777u)
		return -EINVAL;
	int r = normalise(path, &norm);
	if (r < 0)
		return r;
	struct entry *e = find(c, norm);
	if (e) {
		if (e->kind != ENTRY_DIR)
			return -EEXIST;
		e->mode = mode;
		e->implicit = 0;
		return 0;
	}
	r = add_parents(c, norm);
	if (r < 0)
		return r;
	return push(c, TAKE_PTR(norm), ENTRY_DIR, mode, 0, NULL, 0);
}

int cpio_add_file(struct cpio *c, const char *path, unsigned mode, const void *data, size_t len)
{
	char *norm = NULL;
	uint8_t *copy = NULL;
	if (len > UINT32_MAX)
		return -E2BIG;
	if (len > 0) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, data, len);
	}
	int r = prepare(c, path, mode, &norm);
	if (r < 0) {
		free(copy);
		return r;
	}
	return push(c, norm, ENTRY_FILE, mode, 0, copy, len);
}

int cpio_add_symlink(struct cpio *c, const char *path, const char *target)
{
	char *norm = NULL;
	size_t len = target ? strlen(target) : 0;
	if (len == 0 || len >= CPIO_PATH_MAX)
		return -EINVAL;
	uint8_t *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result): a cpio symlink body is len bytes, no NUL */
	memcpy(copy, target, len);
	int r = prepare(c, path, 0777, &norm);
	if (r < 0) {
		free(copy);
		return r;
	}
	return push(c, norm, ENTRY_SYMLINK, 0777, 0, copy, len);
}

int cpio_add_chardev(struct cpio *c, const char *path, unsigned mode, unsigned major,
		     unsigned minor)
{
	char *norm = NULL;
	int r = prepare(c, path, mode, &norm);
	if (r < 0)
		return r;
	r = push(c, norm, ENTRY_CHR, mode, 0, NULL, 0);
	if (r == 0) {
		c->e[c->n - 1].major = major;
		c->e[c->n - 1].minor = minor;
	}
	return r;
}

int cpio_contains(const struct cpio *c, const char *path)
{
	_cleanup_free_ char *norm = NULL;
	if (normalise(path, &norm) < 0)
		return 0;
	return find(c, norm) != NULL;
}

size_t cpio_count(const struct cpio *c)
{
	return c->n;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->path, ((const struct entry *)b)->path);
}

static const uint8_t zeros[512];

/* Pad with zeros to a multiple of align, counted from the archive start at offset base. */
static int pad_to(struct buf *out, size_t base, size_t align)
{
	size_t n = (buf_len(out) - base) % align;
	return n ? buf_append(out, zeros, align - n) : 0;
}

/* One header + name (+ padding), then the body (+ padding). */
static int write_entry(struct buf *out, size_t base, uint32_t ino, uint32_t mode, uint32_t nlink,
		       uint32_t major, uint32_t minor, const char *name, const void *data,
		       size_t len)
{
	char hdr[6 + 13 * 8 + 1];
	size_t namesize = strlen(name) + 1;
	int n = snprintf(hdr, sizeof(hdr),
			 "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode,
			 0u /* uid */, 0u /* gid */, nlink, 0u /* mtime */, (uint32_t)len,
			 0u /* devmajor */, 0u /* devminor */, major, minor, (uint32_t)namesize,
			 0u /* check */);
	if (n != (int)sizeof(hdr) - 1)
		return -EINVAL;
	int r = buf_append(out, hdr, (size_t)n);
	if (r == 0)
		r = buf_append(out, name, namesize);
	if (r == 0)
		r = pad_to(out, base, 4);
	if (r == 0 && len > 0)
		r = buf_append(out, data, len);
	if (r == 0)
		r = pad_to(out, base, 4);
	return r;
}

int cpio_write(struct cpio *c, struct buf *out)
{
	size_t base = buf_len(out);
	int r = 0;
	if (c->n > 1)
		qsort(c->e, c->n, sizeof(*c->e), entry_cmp);
	for (size_t i = 0; i < c->n && r == 0; i++) {
		const struct entry *e = &c->e[i];
		uint32_t type = e->kind == ENTRY_DIR	   ? S_IFDIR
				: e->kind == ENTRY_FILE	   ? S_IFREG
				: e->kind == ENTRY_SYMLINK ? S_IFLNK
							   : S_IFCHR;
		r = write_entry(out, base, (uint32_t)(i + 1), type | e->mode,
				e->kind == ENTRY_DIR ? 2 : 1, e->major, e->minor, e->path, e->data,
				e->len);
	}
	if (r == 0)
		r = write_entry(out, base, 0, 0, 1, 0, 0, "TRAILER!!!", NULL, 0);
	if (r == 0)
		r = pad_to(out, base, 512);
	return r;
}
