/* ws9p.c - a transport-free 9P2000.L server for the workspace share (ws9p.h).
 *
 * Requests are decoded from a byte stream (size[4] type[1] tag[2] body, little-endian), served
 * one after another, and each reply (Rlerror with a Linux errno on failure) is appended to an
 * output buffer the caller drains. A fid is a path relative to the root plus, once opened, an fd.
 *
 * Trust boundary: every byte comes from the guest. Lengths, counts and strings are checked
 * against the message before use (a field past the end is Rlerror(EPROTO)); names are single
 * components (no '/', no NUL, not "." or ".."); paths stay within WST_PATH_MAX. Every host
 * access resolves through wstree.h (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS) or through an fd obtained that way; a last component is never
 * followed: opens start O_PATH | O_NOFOLLOW, the type is checked on that fd (only regular files
 * and directories are opened for I/O: a FIFO would block the server) and the same inode is then
 * reopened through /proc/self/fd, which is also how chmod and truncate reach a file by path. Modes
 * lose S_ISUID and S_ISGID; device nodes are refused. Allocations are bounded by msize, the fid
 * cap and WS9P_OUT_MAX.
 *
 * Unknown fids answer EBADF, fids whose file vanished across a restore ESTALE.
 *
 * Thread: the caller's; one server is used by one thread; no global state.
 */
#include "ws9p.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base64.h"
#include "buf.h"
#include "fdutil.h"
#include "jsonutil.h"
#include "macro.h"
#include "utf8.h"
#include "wstree.h"

#define WS9P_MSIZE_MIN 4096u /* what the Linux client accepts at least */
#define HDR 7u		     /* size[4] type[1] tag[2] */
#define IOHDRSZ 24u	     /* the room the client keeps for a Twrite/Rread header */
#define WALK_MAX 16u
#define OUT_CAP (WS9P_OUT_MAX + 2u * WS9P_MSIZE_MAX)
#define STATE_VERSION 1
#define V9FS_MAGIC 0x01021997u

enum {
	P9_RLERROR = 7,
	P9_TSTATFS = 8,
	P9_TLOPEN = 12,
	P9_TLCREATE = 14,
	P9_TSYMLINK = 16,
	P9_TMKNOD = 18,
	P9_TRENAME = 20,
	P9_TREADLINK = 22,
	P9_TGETATTR = 24,
	P9_TSETATTR = 26,
	P9_TXATTRWALK = 30,
	P9_TXATTRCREATE = 32,
	P9_TREADDIR = 40,
	P9_TFSYNC = 50,
	P9_TLOCK = 52,
	P9_TGETLOCK = 54,
	P9_TLINK = 70,
	P9_TMKDIR = 72,
	P9_TRENAMEAT = 74,
	P9_TUNLINKAT = 76,
	P9_TVERSION = 100,
	P9_TAUTH = 102,
	P9_TATTACH = 104,
	P9_TFLUSH = 108,
	P9_TWALK = 110,
	P9_TREAD = 116,
	P9_TWRITE = 118,
	P9_TCLUNK = 120,
	P9_TREMOVE = 122,
};

/* 9P2000.L open flags (the values of Linux on x86-64, spelled out so the host's do not matter) */
#define L_ACCMODE 03u
#define L_NOACCESS 03u
#define L_WRONLY 01u
#define L_RDWR 02u
#define L_CREATE 0100u
#define L_EXCL 0200u
#define L_TRUNC 01000u
#define L_APPEND 02000u
#define L_DSYNC 010000u
#define L_DIRECTORY 0200000u
#define L_SYNC 04000000u
#define LOPEN_KEEP (L_ACCMODE | L_APPEND | L_TRUNC | L_DIRECTORY | L_SYNC | L_DSYNC)
#define LCREATE_KEEP (L_ACCMODE | L_APPEND | L_DIRECTORY | L_SYNC | L_DSYNC | L_EXCL | L_CREATE)

/* Tsetattr's valid bits */
#define SA_MODE 0x1u
#define SA_SIZE 0x8u
#define SA_ATIME 0x10u
#define SA_MTIME 0x20u
#define SA_ATIME_SET 0x80u
#define SA_MTIME_SET 0x100u

#define GETATTR_BASIC 0x7ffull
#define QT_DIR 0x80u
#define QT_SYMLINK 0x02u
#define UNLINK_REMOVEDIR 0x200u
#define LOCK_SUCCESS 0u
#define LOCK_TYPE_UNLCK 2u

struct fid {
	uint32_t num;
	bool stale;    /* its file could not be found again after a restore */
	bool isdir;    /* opened on a directory */
	bool reopen;   /* ws9p_restore() only: saved open */
	int fd;	       /* -1 until Tlopen/Tlcreate */
	uint32_t open; /* the 9P open flags it was opened with */
	char *path;    /* relative to the root, "" = the root */
};

struct ws9p {
	int rootfd;
	dev_t rootdev;
	uid_t uid;
	gid_t gid;
	uint32_t msize;
	bool dead;	     /* the stream broke (-EPROTO): nothing more is taken */
	struct fid **fids;   /* sorted by num */
	size_t nfids, cfids; /* used, allocated */
	struct buf in;	     /* the beginning of a request not yet complete */
	struct buf out;	     /* replies not yet handed out */
};

/* ---- wire ---- */

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A request's fields, read in order; a read past the end sets bad and yields zeros. */
struct rd {
	const uint8_t *p;
	size_t n, off;
	bool bad;
};

struct str {
	const char *p;
	uint16_t n;
};

static const uint8_t *rd_take(struct rd *r, size_t k)
{
	if (r->bad || k > r->n - r->off) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *q = r->p + r->off;
	r->off += k;
	return q;
}

static uint8_t rd_u8(struct rd *r)
{
	const uint8_t *q = rd_take(r, 1);
	return q ? q[0] : 0;
}

static uint16_t rd_u16(struct rd *r)
{
	const uint8_t *q = rd_take(r, 2);
	return q ? le16(q) : 0;
}

static uint32_t rd_u32(struct rd *r)
{
	const uint8_t *q = rd_take(r, 4);
	return q ? le32(q) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
	const uint8_t *q = rd_take(r, 8);
	return q ? (uint64_t)le32(q) | (uint64_t)le32(q + 4) << 32 : 0;
}

static struct str rd_str(struct rd *r)
{
	uint16_t n = rd_u16(r);
	const uint8_t *q = rd_take(r, n);
	return q ? (struct str){ (const char *)q, n } : (struct str){ "", 0 };
}

/* A reply being written into the output buffer (cap = msize: a reply never exceeds it). */
struct wr {
	uint8_t *p;
	size_t cap, n;
	bool over;
};

static uint8_t *wr_take(struct wr *w, size_t k)
{
	if (w->over || k > w->cap - w->n) {
		w->over = true;
		return NULL;
	}
	uint8_t *q = w->p + w->n;
	w->n += k;
	return q;
}

static void wr_u8(struct wr *w, uint8_t v)
{
	uint8_t *q = wr_take(w, 1);
	if (q)
		q[0] = v;
}

static void wr_u16(struct wr *w, uint16_t v)
{
	uint8_t *q = wr_take(w, 2);
	if (q)
		put16(q, v);
}

static void wr_u32(struct wr *w, uint32_t v)
{
	uint8_t *q = wr_take(w, 4);
	if (q)
		put32(q, v);
}

static void wr_u64(struct wr *w, uint64_t v)
{
	uint8_t *q = wr_take(w, 8);
	if (q) {
		put32(q, (uint32_t)v);
		put32(q + 4, (uint32_t)(v >> 32));
	}
}

static void wr_str(struct wr *w, const char *s, size_t n)
{
	if (n > UINT16_MAX) {
		w->over = true;
		return;
	}
	wr_u16(w, (uint16_t)n);
	uint8_t *q = wr_take(w, n);
	if (q && n)
		memcpy(q, s, n);
}

struct qid {
	uint8_t type;
	uint64_t path;
};

static struct qid qid_of(const struct ws9p *s, const struct stat *st)
{
	struct qid q = { .type = S_ISDIR(st->st_mode)	? QT_DIR
				 : S_ISLNK(st->st_mode) ? QT_SYMLINK
							: 0,
			 .path = st->st_ino };
	if (st->st_dev != s->rootdev) /* another file system mounted below the root */
		q.path ^= (uint64_t)st->st_dev * 0x9e3779b97f4a7c15ull;
	return q;
}

static void wr_qid(struct wr *w, struct qid q)
{
	wr_u8(w, q.type);
	wr_u32(w, 0); /* version */
	wr_u64(w, q.path);
}

/* ---- names and paths ---- */

/* A name from the guest, NUL-terminated into ret: 0, -EINVAL or -ENAMETOOLONG. */
static int name_get(struct str s, char ret[NAME_MAX + 1])
{
	if (s.n == 0 || memchr(s.p, '/', s.n) || memchr(s.p, 0, s.n))
		return -EINVAL;
	if (s.n > NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(ret, s.p, s.n);
	ret[s.n] = 0;
	if (streq(ret, ".") || streq(ret, ".."))
		return -EINVAL;
	return 0;
}

/* dir + "/" + name (malloc'ed), or name alone below the root. 0, -ENAMETOOLONG, -ENOMEM. */
static int path_join(const char *dir, const char *name, char **ret)
{
	size_t a = strlen(dir), b = strlen(name);
	size_t n = a ? a + 1 + b : b;
	if (n > WST_PATH_MAX)
		return -ENAMETOOLONG;
	char *p = malloc(n + 1);
	if (!p)
		return -ENOMEM;
	snprintf(p, n + 1, "%s%s%s", dir, a ? "/" : "", name);
	*ret = p;
	return 0;
}

/* The parent of path (malloc'ed); the root is its own parent. */
static char *path_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	return strndup(path, slash ? (size_t)(slash - path) : 0);
}

/* The rest of p after prefix dir when p is dir or below it, else NULL. */
static const char *path_below(const char *p, const char *dir)
{
	size_t n = strlen(dir);
	if (strncmp(p, dir, n) != 0 || (p[n] != 0 && p[n] != '/'))
		return NULL;
	return p + n;
}

static void proc_fd(int fd, char ret[32])
{
	snprintf(ret, 32, "/proc/self/fd/%d", fd);
}

/* Permission bits the guest may set: never set-user-ID or set-group-ID. */
static mode_t mode_safe(uint32_t mode)
{
	return (mode_t)(mode & 07777u & ~(uint32_t)(S_ISUID | S_ISGID));
}

/* ---- fids ---- */

static size_t fid_lower(const struct ws9p *s, uint32_t num)
{
	size_t lo = 0, hi = s->nfids;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->fids[mid]->num < num)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct fid *fid_find(const struct ws9p *s, uint32_t num)
{
	size_t i = fid_lower(s, num);
	return i < s->nfids && s->fids[i]->num == num ? s->fids[i] : NULL;
}

/* The fid num usable for a request: 0, -EBADF (unknown) or -ESTALE. */
static int fid_get(const struct ws9p *s, uint32_t num, struct fid **ret)
{
	struct fid *f = fid_find(s, num);
	if (!f)
		return -EBADF;
	if (f->stale)
		return -ESTALE;
	*ret = f;
	return 0;
}

static void fid_close(struct fid *f)
{
	f->fd = safe_close(f->fd);
	f->open = 0;
	f->isdir = false;
}

/* A new fid num on path (taken on success). 0, -EEXIST, -ENFILE or -ENOMEM. */
static int fid_add(struct ws9p *s, uint32_t num, char *path, struct fid **ret)
{
	size_t i = fid_lower(s, num);
	if (i < s->nfids && s->fids[i]->num == num)
		return -EEXIST;
	if (s->nfids >= WS9P_FIDS_MAX)
		return -ENFILE;
	if (s->nfids == s->cfids) {
		size_t nc = s->cfids ? s->cfids * 2 : 16;
		struct fid **nf = realloc(s->fids, nc * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		s->fids = nf;
		s->cfids = nc;
	}
	struct fid *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct fid){ .num = num, .fd = -1, .path = path };
	memmove(s->fids + i + 1, s->fids + i, (s->nfids - i) * sizeof(*s->fids));
	s->fids[i] = f;
	s->nfids++;
	if (ret)
		*ret = f;
	return 0;
}

static void fid_del(struct ws9p *s, struct fid *f)
{
	size_t i = fid_lower(s, f->num);
	if (i >= s->nfids || s->fids[i] != f)
		return;
	memmove(s->fids + i, s->fids + i + 1, (s->nfids - i - 1) * sizeof(*s->fids));
	s->nfids--;
	fid_close(f);
	free(f->path);
	free(f);
}

static void fids_clear(struct ws9p *s)
{
	for (size_t i = 0; i < s->nfids; i++) {
		fid_close(s->fids[i]);
		free(s->fids[i]->path);
		free(s->fids[i]);
	}
	s->nfids = 0;
}

/* After a rename of from to to: every fid at or below from follows it. */
static void fids_moved(struct ws9p *s, const char *from, const char *to)
{
	size_t tl = strlen(to);
	for (size_t i = 0; i < s->nfids; i++) {
		struct fid *f = s->fids[i];
		const char *rest = path_below(f->path, from);
		if (!rest)
			continue;
		size_t rl = strlen(rest);
		char *p = tl + rl <= WST_PATH_MAX ? malloc(tl + rl + 1) : NULL;
		if (!p) { /* too deep to name any more (or no memory): lost */
			fid_close(f);
			f->stale = true;
			continue;
		}
		snprintf(p, tl + rl + 1, "%s%s", to, rest);
		free(f->path);
		f->path = p;
	}
}

/* ---- host access ---- */

/* The host's open flags for 9P flags l. 0 or -EINVAL. */
static int host_flags(uint32_t l, int *ret)
{
	int f;
	switch (l & L_ACCMODE) {
	case L_WRONLY:
		f = O_WRONLY;
		break;
	case L_RDWR:
		f = O_RDWR;
		break;
	case L_NOACCESS:
		return -EINVAL;
	default:
		f = O_RDONLY;
		break;
	}
	if (l & L_CREATE)
		f |= O_CREAT;
	if (l & L_EXCL)
		f |= O_EXCL;
	if (l & L_TRUNC)
		f |= O_TRUNC;
	if (l & L_APPEND)
		f |= O_APPEND;
	if (l & L_DSYNC)
		f |= O_DSYNC;
	if (l & L_DIRECTORY)
		f |= O_DIRECTORY;
	if (l & L_SYNC)
		f |= O_SYNC;
	*ret = f;
	return 0;
}

/* Open path (no O_CREAT) for I/O with 9P flags l: the fd, with *st; -ELOOP for a symlink,
 * -ENXIO for anything but a regular file or a directory, or -errno. */
static int open_path(const struct ws9p *s, const char *path, uint32_t l, struct stat *st)
{
	int hf;
	int r = host_flags(l & ~(L_CREATE | L_EXCL), &hf);
	if (r < 0)
		return r;
	_cleanup_close_ int pfd = wst_open(s->rootfd, path, O_PATH | O_NOFOLLOW, 0);
	if (pfd < 0)
		return pfd;
	if (fstat(pfd, st) < 0)
		return -errno;
	if (S_ISLNK(st->st_mode))
		return -ELOOP;
	if (S_ISDIR(st->st_mode)) {
		if ((hf & O_ACCMODE) != O_RDONLY)
			return -EISDIR;
		hf = O_RDONLY | O_DIRECTORY;
	} else if (!S_ISREG(st->st_mode)) {
		return -ENXIO;
	} else if (hf & O_DIRECTORY) {
		return -ENOTDIR;
	}
	/* the inode pfd holds, checked above: no lookup happens here */
	char p[32];
	proc_fd(pfd, p);
	int fd = open(p, hf | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The directory a dfid names, O_PATH. */
static int dir_open(const struct ws9p *s, const struct fid *d)
{
	return wst_open(s->rootfd, d->path, O_PATH | O_DIRECTORY, 0);
}

/* After a create in dirfd: the new entry's stat, and its permission bits set exactly (the
 * server's umask does not apply; a symlink has none). */
static int created(int dirfd, const char *name, mode_t mode, struct stat *st)
{
	_cleanup_close_ int fd = wst_open(dirfd, name, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, st) < 0)
		return -errno;
	if (!S_ISLNK(st->st_mode) && (st->st_mode & 07777) != mode) {
		char p[32];
		proc_fd(fd, p);
		if (chmod(p, mode) == 0)
			st->st_mode = (st->st_mode & S_IFMT) | mode;
	}
	return 0;
}

/* The stat of what f names: its open fd, else its path (not followed). */
static int fid_stat(const struct ws9p *s, const struct fid *f, struct stat *st)
{
	if (f->fd >= 0)
		return fstat(f->fd, st) < 0 ? -errno : 0;
	return wst_lstat(s->rootfd, f->path, st);
}

/* ---- requests ---- */

static int t_version(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t msize = rd_u32(r);
	struct str v = rd_str(r);
	if (r->bad)
		return -EPROTO;
	fids_clear(s); /* a new session */
	bool ok = v.n == 8 && memcmp(v.p, "9P2000.L", 8) == 0;
	if (ok && msize < WS9P_MSIZE_MIN)
		return -EINVAL;
	msize = MIN(msize, WS9P_MSIZE_MAX);
	if (ok)
		s->msize = msize;
	wr_u32(w, msize);
	if (ok)
		wr_str(w, "9P2000.L", 8);
	else
		wr_str(w, "unknown", 7);
	return 0;
}

static int t_attach(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	(void)rd_u32(r); /* afid: no authentication */
	(void)rd_str(r); /* uname */
	(void)rd_str(r); /* aname: one tree */
	if (r->bad)
		return -EPROTO;
	struct stat st;
	if (fstat(s->rootfd, &st) < 0)
		return -errno;
	char *root = strdup("");
	if (!root)
		return -ENOMEM;
	int e = fid_add(s, num, root, NULL);
	if (e < 0) {
		free(root);
		return e;
	}
	wr_qid(w, qid_of(s, &st));
	return 0;
}

static int t_walk(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r), newnum = rd_u32(r);
	uint16_t nw = rd_u16(r);
	struct str names[WALK_MAX];
	if (!r->bad && nw > WALK_MAX)
		return -EINVAL;
	for (uint16_t i = 0; i < nw && !r->bad; i++)
		names[i] = rd_str(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	if (newnum != num && fid_find(s, newnum))
		return -EEXIST;
	if (newnum == num && nw > 0 && f->fd >= 0)
		return -EBUSY; /* an open fid keeps naming its file */
	_cleanup_free_ char *path = strdup(f->path);
	if (!path)
		return -ENOMEM;
	size_t at = w->n;
	wr_u16(w, 0);
	uint16_t i;
	for (i = 0; i < nw; i++) {
		char nm[NAME_MAX + 1];
		char *next = NULL;
		struct stat st;
		if (names[i].n == 2 && memcmp(names[i].p, "..", 2) == 0) {
			/* up, never above the root */
			e = wst_lstat(s->rootfd, path, &st);
			if (e == 0 && !S_ISDIR(st.st_mode))
				e = -ENOTDIR;
			if (e == 0 && !(next = path_parent(path)))
				e = -ENOMEM;
		} else {
			e = name_get(names[i], nm);
			if (e == 0)
				e = path_join(path, nm, &next);
		}
		if (e == 0)
			e = wst_lstat(s->rootfd, next, &st);
		if (e < 0) {
			free(next);
			if (i == 0)
				return e;
			break;
		}
		free(path);
		path = next;
		wr_qid(w, qid_of(s, &st));
	}
	if (i == nw) {
		if (newnum == num) {
			free(f->path);
			f->path = TAKE_PTR(path);
		} else {
			e = fid_add(s, newnum, path, NULL);
			if (e < 0)
				return e;
			path = NULL;
		}
	}
	put16(w->p + at, i);
	return 0;
}

static int t_lopen(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r), flags = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	if (f->fd >= 0)
		return -EINVAL;
	flags &= LOPEN_KEEP;
	struct stat st;
	int fd = open_path(s, f->path, flags, &st);
	if (fd < 0)
		return fd;
	f->fd = fd;
	f->open = flags;
	f->isdir = S_ISDIR(st.st_mode);
	wr_qid(w, qid_of(s, &st));
	wr_u32(w, 0); /* iounit: msize - IOHDRSZ */
	return 0;
}

static int t_lcreate(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	struct str name = rd_str(r);
	uint32_t flags = rd_u32(r), mode = rd_u32(r);
	(void)rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	struct fid *d;
	char nm[NAME_MAX + 1];
	_cleanup_free_ char *path = NULL;
	int hf, e = fid_get(s, num, &d);
	if (e == 0 && d->fd >= 0)
		e = -EINVAL;
	if (e == 0)
		e = name_get(name, nm);
	if (e == 0)
		e = path_join(d->path, nm, &path);
	flags &= LCREATE_KEEP;
	if (e == 0)
		e = host_flags(flags | L_CREATE | L_EXCL, &hf);
	if (e == 0 && (hf & O_DIRECTORY))
		e = -EINVAL;
	if (e < 0)
		return e;
	_cleanup_close_ int dfd = dir_open(s, d);
	if (dfd < 0)
		return dfd;
	mode_t m = mode_safe(mode);
	struct stat st;
	bool made = true;
	_cleanup_close_ int fd = wst_open(dfd, nm, hf | O_NOFOLLOW, m);
	if (fd == -EEXIST && !(flags & L_EXCL)) { /* O_CREAT without O_EXCL: open what is there */
		made = false;
		fd = open_path(s, path, flags & ~L_CREATE, &st);
	}
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR; /* open(2) refuses O_CREAT on a directory too */
	if (made && (st.st_mode & 07777) != m && fchmod(fd, m) == 0)
		st.st_mode = (st.st_mode & S_IFMT) | m; /* the server's umask does not apply */
	fid_close(d);
	free(d->path);
	d->path = TAKE_PTR(path);
	d->fd = TAKE_FD(fd);
	d->open = flags & ~(L_CREATE | L_EXCL);
	d->isdir = false;
	wr_qid(w, qid_of(s, &st));
	wr_u32(w, 0);
	return 0;
}

/* The directory fid num and a new name in it: *ret_dfd (O_PATH), nm, and the new path's length
 * checked. */
static int dir_and_name(struct ws9p *s, uint32_t num, struct str name, int *ret_dfd,
			char nm[NAME_MAX + 1])
{
	struct fid *d;
	_cleanup_free_ char *path = NULL;
	int e = fid_get(s, num, &d);
	if (e == 0)
		e = name_get(name, nm);
	if (e == 0)
		e = path_join(d->path, nm, &path);
	if (e < 0)
		return e;
	int fd = dir_open(s, d);
	if (fd < 0)
		return fd;
	*ret_dfd = fd;
	return 0;
}

static int t_symlink(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	struct str name = rd_str(r), target = rd_str(r);
	(void)rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	if (target.n == 0 || memchr(target.p, 0, target.n))
		return -EINVAL;
	if (target.n > WST_PATH_MAX)
		return -ENAMETOOLONG;
	char nm[NAME_MAX + 1], t[WST_PATH_MAX + 1];
	_cleanup_close_ int dfd = -1;
	int e = dir_and_name(s, num, name, &dfd, nm);
	if (e < 0)
		return e;
	memcpy(t, target.p, target.n);
	t[target.n] = 0;
	if (symlinkat(t, dfd, nm) < 0)
		return -errno;
	struct stat st;
	e = created(dfd, nm, 0, &st);
	if (e < 0)
		return e;
	wr_qid(w, qid_of(s, &st));
	return 0;
}

static int t_mknod(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	struct str name = rd_str(r);
	uint32_t mode = rd_u32(r);
	(void)rd_u32(r); /* major */
	(void)rd_u32(r); /* minor */
	(void)rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	mode_t type = (mode_t)mode & S_IFMT;
	if (type == S_IFCHR || type == S_IFBLK)
		return -EPERM; /* no device nodes on the host */
	if (type == 0)
		type = S_IFREG;
	if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK)
		return -EINVAL;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = -1;
	int e = dir_and_name(s, num, name, &dfd, nm);
	if (e < 0)
		return e;
	mode_t m = mode_safe(mode);
	if (mknodat(dfd, nm, type | m, 0) < 0)
		return -errno;
	struct stat st;
	e = created(dfd, nm, m, &st);
	if (e < 0)
		return e;
	wr_qid(w, qid_of(s, &st));
	return 0;
}

static int t_mkdir(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	struct str name = rd_str(r);
	uint32_t mode = rd_u32(r);
	(void)rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = -1;
	int e = dir_and_name(s, num, name, &dfd, nm);
	if (e < 0)
		return e;
	mode_t m = mode_safe(mode);
	if (mkdirat(dfd, nm, m) < 0)
		return -errno;
	struct stat st;
	e = created(dfd, nm, m, &st);
	if (e < 0)
		return e;
	wr_qid(w, qid_of(s, &st));
	return 0;
}

/* Rename from to to (paths below the root) and move the fids along. */
static int do_rename(struct ws9p *s, const char *from, const char *to)
{
	const char *on, *nn;
	_cleanup_close_ int ofd = wst_open_parent(s->rootfd, from, &on);
	if (ofd < 0)
		return ofd;
	_cleanup_close_ int nfd = wst_open_parent(s->rootfd, to, &nn);
	if (nfd < 0)
		return nfd;
	if (renameat(ofd, on, nfd, nn) < 0)
		return -errno;
	if (!streq(from, to))
		fids_moved(s, from, to);
	return 0;
}

static int t_rename(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r), dnum = rd_u32(r);
	struct str name = rd_str(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f, *d;
	char nm[NAME_MAX + 1];
	_cleanup_free_ char *from = NULL, *to = NULL;
	int e = fid_get(s, num, &f);
	if (e == 0)
		e = fid_get(s, dnum, &d);
	if (e == 0 && !*f->path)
		e = -EBUSY; /* the root */
	if (e == 0)
		e = name_get(name, nm);
	if (e == 0)
		e = path_join(d->path, nm, &to);
	if (e == 0 && !(from = strdup(f->path)))
		e = -ENOMEM;
	return e < 0 ? e : do_rename(s, from, to);
}

static int t_renameat(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t onum = rd_u32(r);
	struct str oname = rd_str(r);
	uint32_t nnum = rd_u32(r);
	struct str nname = rd_str(r);
	if (r->bad)
		return -EPROTO;
	struct fid *od, *nd;
	char on[NAME_MAX + 1], nn[NAME_MAX + 1];
	_cleanup_free_ char *from = NULL, *to = NULL;
	int e = fid_get(s, onum, &od);
	if (e == 0)
		e = fid_get(s, nnum, &nd);
	if (e == 0)
		e = name_get(oname, on);
	if (e == 0)
		e = name_get(nname, nn);
	if (e == 0)
		e = path_join(od->path, on, &from);
	if (e == 0)
		e = path_join(nd->path, nn, &to);
	return e < 0 ? e : do_rename(s, from, to);
}

static int t_readlink(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	if (!*f->path)
		return -EINVAL;
	const char *name;
	_cleanup_close_ int pfd = wst_open_parent(s->rootfd, f->path, &name);
	if (pfd < 0)
		return pfd;
	char t[WST_PATH_MAX + 1];
	ssize_t k = readlinkat(pfd, name, t, sizeof(t));
	if (k < 0)
		return -errno;
	if ((size_t)k >= sizeof(t) || HDR + 2 + (size_t)k > w->cap)
		return -ENAMETOOLONG;
	wr_str(w, t, (size_t)k);
	return 0;
}

static int t_getattr(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	(void)rd_u64(r); /* request_mask: the basic set is always returned */
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	struct stat st;
	int e = fid_get(s, num, &f);
	if (e == 0)
		e = fid_stat(s, f, &st);
	if (e < 0)
		return e;
	wr_u64(w, GETATTR_BASIC);
	wr_qid(w, qid_of(s, &st));
	wr_u32(w, st.st_mode);
	wr_u32(w, st.st_uid == s->uid ? 0 : st.st_uid);
	wr_u32(w, st.st_gid == s->gid ? 0 : st.st_gid);
	wr_u64(w, st.st_nlink);
	wr_u64(w, st.st_rdev);
	wr_u64(w, (uint64_t)st.st_size);
	wr_u64(w, (uint64_t)st.st_blksize);
	wr_u64(w, (uint64_t)st.st_blocks);
	wr_u64(w, (uint64_t)st.st_atim.tv_sec);
	wr_u64(w, (uint64_t)st.st_atim.tv_nsec);
	wr_u64(w, (uint64_t)st.st_mtim.tv_sec);
	wr_u64(w, (uint64_t)st.st_mtim.tv_nsec);
	wr_u64(w, (uint64_t)st.st_ctim.tv_sec);
	wr_u64(w, (uint64_t)st.st_ctim.tv_nsec);
	for (int i = 0; i < 4; i++)
		wr_u64(w, 0); /* btime, gen, data_version */
	return 0;
}

static struct timespec set_time(uint32_t valid, uint32_t bit, uint32_t setbit, uint64_t sec,
				uint64_t nsec)
{
	if (!(valid & bit))
		return (struct timespec){ .tv_nsec = UTIME_OMIT };
	if (!(valid & setbit))
		return (struct timespec){ .tv_nsec = UTIME_NOW };
	return (struct timespec){ .tv_sec = (time_t)sec, .tv_nsec = (long)MIN(nsec, 999999999ull) };
}

static int t_setattr(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r), valid = rd_u32(r), mode = rd_u32(r);
	(void)rd_u32(r); /* uid: files stay the server's */
	(void)rd_u32(r); /* gid */
	uint64_t size = rd_u64(r), as = rd_u64(r), an = rd_u64(r), ms = rd_u64(r), mn = rd_u64(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	/* the fid's own fd, else the file its path names (O_PATH, not followed) */
	_cleanup_close_ int own =
		f->fd < 0 ? wst_open(s->rootfd, f->path, O_PATH | O_NOFOLLOW, 0) : -1;
	int fd = f->fd >= 0 ? f->fd : own;
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	char p[32];
	proc_fd(fd, p);
	if (valid & SA_SIZE) {
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		if (size > INT64_MAX)
			return -EFBIG;
		if (f->fd >= 0 && (f->open & L_ACCMODE) != 0) { /* open for writing */
			if (ftruncate(f->fd, (off_t)size) < 0)
				return -errno;
		} else {
			/* the same inode, reopened for writing */
			_cleanup_close_ int wfd = open(p, O_WRONLY | O_CLOEXEC);
			if (wfd < 0 || ftruncate(wfd, (off_t)size) < 0)
				return -errno;
		}
	}
	if (valid & SA_MODE) {
		if (S_ISLNK(st.st_mode))
			return -EOPNOTSUPP;
		if (chmod(p, mode_safe(mode)) < 0)
			return -errno;
	}
	if (valid & (SA_ATIME | SA_MTIME)) {
		struct timespec ts[2] = { set_time(valid, SA_ATIME, SA_ATIME_SET, as, an),
					  set_time(valid, SA_MTIME, SA_MTIME_SET, ms, mn) };
		if (S_ISLNK(st.st_mode)) {
			/* the link itself, by its parent and name */
			const char *name;
			_cleanup_close_ int pfd = wst_open_parent(s->rootfd, f->path, &name);
			if (pfd < 0)
				return pfd;
			if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
				return -errno;
		} else if (utimensat(AT_FDCWD, p, ts, 0) < 0) {
			return -errno;
		}
	}
	return 0;
}

static int t_readdir(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	uint64_t off = rd_u64(r);
	uint32_t count = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	if (f->fd < 0)
		return -EBADF;
	if (!f->isdir)
		return -ENOTDIR;
	if (off > INT64_MAX)
		return -EINVAL;
	count = MIN(count, s->msize - 11u);
	_cleanup_free_ uint8_t *buf = malloc(MAX(count, 1u));
	if (!buf)
		return -ENOMEM;
	if (lseek(f->fd, (off_t)off, SEEK_SET) < 0)
		return -errno;
	ssize_t k = getdents64(f->fd, buf, count);
	if (k < 0)
		return -errno;
	size_t at = w->n;
	wr_u32(w, 0);
	size_t start = w->n, limit = start + count;
	/* struct dirent64: ino[8] off[8] reclen[2] type[1] name, NUL-terminated, padded */
	for (size_t i = 0; i + 19 < (size_t)k;) {
		uint64_t ino, doff;
		uint16_t reclen;
		memcpy(&ino, buf + i, 8);
		memcpy(&doff, buf + i + 8, 8);
		memcpy(&reclen, buf + i + 16, 2);
		uint8_t type = buf[i + 18];
		if (reclen < 20 || reclen > (size_t)k - i)
			break;
		const char *name = (const char *)buf + i + 19;
		size_t nl = strnlen(name, reclen - 19u);
		if (w->n + 24 + nl > limit)
			break;
		wr_qid(w, (struct qid){ .type = type == DT_DIR	 ? QT_DIR
						: type == DT_LNK ? QT_SYMLINK
								 : 0,
					.path = ino });
		wr_u64(w, doff);
		wr_u8(w, type);
		wr_str(w, name, nl);
		i += reclen;
	}
	if (k > 0 && w->n == start)
		return -EINVAL; /* not even one entry fits in count */
	put32(w->p + at, (uint32_t)(w->n - start));
	return 0;
}

static int t_fsync(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	uint32_t datasync = r->n - r->off >= 4 ? rd_u32(r) : 0;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	if (f->fd < 0)
		return -EBADF;
	if ((datasync ? fdatasync(f->fd) : fsync(f->fd)) < 0)
		return -errno;
	return 0;
}

/* Tlock and Tgetlock: locks are the guest's own business (one client); always granted, and
 * never held by anyone else. */
static int t_lock(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	(void)rd_u8(r);	 /* type */
	(void)rd_u32(r); /* flags */
	(void)rd_u64(r); /* start */
	(void)rd_u64(r); /* length */
	(void)rd_u32(r); /* proc_id */
	(void)rd_str(r); /* client_id */
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	wr_u8(w, LOCK_SUCCESS);
	return 0;
}

static int t_getlock(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	(void)rd_u8(r); /* type */
	uint64_t start = rd_u64(r), length = rd_u64(r);
	uint32_t proc = rd_u32(r);
	struct str client = rd_str(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	wr_u8(w, LOCK_TYPE_UNLCK);
	wr_u64(w, start);
	wr_u64(w, length);
	wr_u32(w, proc);
	wr_str(w, client.p, client.n);
	return 0;
}

static int t_link(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t dnum = rd_u32(r), num = rd_u32(r);
	struct str name = rd_str(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = -1;
	int e = fid_get(s, num, &f);
	if (e == 0)
		e = dir_and_name(s, dnum, name, &dfd, nm);
	if (e < 0)
		return e;
	if (!*f->path)
		return -EPERM; /* the root is a directory */
	/* the source by its parent and name, flags 0: a symlink is linked, not followed */
	const char *sname;
	_cleanup_close_ int sfd = wst_open_parent(s->rootfd, f->path, &sname);
	if (sfd < 0)
		return sfd;
	if (linkat(sfd, sname, dfd, nm, 0) < 0)
		return -errno;
	return 0;
}

static int t_unlinkat(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	struct str name = rd_str(r);
	uint32_t flags = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = -1;
	int e = dir_and_name(s, num, name, &dfd, nm);
	if (e < 0)
		return e;
	if (unlinkat(dfd, nm, (flags & UNLINK_REMOVEDIR) ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	return 0;
}

static int t_statfs(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = fid_get(s, num, &f);
	if (e < 0)
		return e;
	struct statfs st;
	if (fstatfs(s->rootfd, &st) < 0)
		return -errno;
	uint64_t fsid;
	memcpy(&fsid, &st.f_fsid, sizeof(fsid));
	wr_u32(w, V9FS_MAGIC);
	wr_u32(w, (uint32_t)st.f_bsize);
	wr_u64(w, st.f_blocks);
	wr_u64(w, st.f_bfree);
	wr_u64(w, st.f_bavail);
	wr_u64(w, st.f_files);
	wr_u64(w, st.f_ffree);
	wr_u64(w, fsid);
	wr_u32(w, (uint32_t)st.f_namelen);
	return 0;
}

/* The fid num opened on a file for I/O. */
static int io_fid(struct ws9p *s, uint32_t num, struct fid **ret)
{
	int e = fid_get(s, num, ret);
	if (e < 0)
		return e;
	if ((*ret)->fd < 0)
		return -EBADF;
	if ((*ret)->isdir)
		return -EISDIR;
	return 0;
}

static int t_read(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	uint64_t off = rd_u64(r);
	uint32_t count = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = io_fid(s, num, &f);
	if (e < 0)
		return e;
	if (off > INT64_MAX)
		return -EINVAL;
	count = MIN(count, s->msize - IOHDRSZ);
	size_t at = w->n;
	uint8_t *data = wr_take(w, 4 + (size_t)count);
	if (!data)
		return -ENOBUFS;
	ssize_t k = pread(f->fd, data + 4, count, (off_t)off);
	if (k < 0)
		return -errno;
	put32(data, (uint32_t)k);
	w->n = at + 4 + (size_t)k;
	return 0;
}

static int t_write(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	uint64_t off = rd_u64(r);
	uint32_t count = rd_u32(r);
	const uint8_t *data = rd_take(r, count);
	if (r->bad)
		return -EPROTO;
	struct fid *f;
	int e = io_fid(s, num, &f);
	if (e < 0)
		return e;
	if (off > INT64_MAX)
		return -EINVAL;
	ssize_t k = pwrite(f->fd, data, count, (off_t)off);
	if (k < 0)
		return -errno;
	wr_u32(w, (uint32_t)k);
	return 0;
}

static int t_clunk(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f = fid_find(s, num);
	if (!f)
		return -EBADF;
	fid_del(s, f);
	return 0;
}

static int t_remove(struct ws9p *s, struct rd *r, struct wr *w)
{
	uint32_t num = rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f = fid_find(s, num);
	if (!f)
		return -EBADF;
	int e = f->stale ? -ESTALE : !*f->path ? -EBUSY : 0;
	if (e == 0) {
		const char *name;
		struct stat st;
		_cleanup_close_ int pfd = wst_open_parent(s->rootfd, f->path, &name);
		if (pfd < 0)
			e = pfd;
		else if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			 unlinkat(pfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0)
			e = -errno;
	}
	fid_del(s, f); /* clunked even when the removal failed */
	return e;
}

static int dispatch(struct ws9p *s, uint8_t type, struct rd *r, struct wr *w)
{
	switch (type) {
	case P9_TVERSION:
		return t_version(s, r, w);
	case P9_TATTACH:
		return t_attach(s, r, w);
	case P9_TFLUSH:
		(void)rd_u16(r); /* oldtag: answered already, requests are served in order */
		return r->bad ? -EPROTO : 0;
	case P9_TWALK:
		return t_walk(s, r, w);
	case P9_TLOPEN:
		return t_lopen(s, r, w);
	case P9_TLCREATE:
		return t_lcreate(s, r, w);
	case P9_TSYMLINK:
		return t_symlink(s, r, w);
	case P9_TMKNOD:
		return t_mknod(s, r, w);
	case P9_TRENAME:
		return t_rename(s, r, w);
	case P9_TREADLINK:
		return t_readlink(s, r, w);
	case P9_TGETATTR:
		return t_getattr(s, r, w);
	case P9_TSETATTR:
		return t_setattr(s, r, w);
	case P9_TREADDIR:
		return t_readdir(s, r, w);
	case P9_TFSYNC:
		return t_fsync(s, r, w);
	case P9_TLOCK:
		return t_lock(s, r, w);
	case P9_TGETLOCK:
		return t_getlock(s, r, w);
	case P9_TLINK:
		return t_link(s, r, w);
	case P9_TMKDIR:
		return t_mkdir(s, r, w);
	case P9_TRENAMEAT:
		return t_renameat(s, r, w);
	case P9_TUNLINKAT:
		return t_unlinkat(s, r, w);
	case P9_TSTATFS:
		return t_statfs(s, r, w);
	case P9_TREAD:
		return t_read(s, r, w);
	case P9_TWRITE:
		return t_write(s, r, w);
	case P9_TCLUNK:
		return t_clunk(s, r, w);
	case P9_TREMOVE:
		return t_remove(s, r, w);
	default: /* Tauth, Txattrwalk, Txattrcreate, and anything else */
		return -EOPNOTSUPP;
	}
}

/* Serve the complete request m[0, n) (n >= HDR) and append its reply. 0 or -ENOMEM. */
static int serve(struct ws9p *s, const uint8_t *m, size_t n)
{
	size_t cap = s->msize;
	uint8_t *o = buf_reserve(&s->out, cap);
	if (!o)
		return -ENOMEM;
	uint8_t type = m[4];
	uint16_t tag = le16(m + 5);
	struct rd r = { .p = m, .n = n, .off = HDR };
	struct wr w = { .p = o, .cap = cap, .n = HDR };
	int e = dispatch(s, type, &r, &w);
	if (e == 0 && w.over)
		e = -ERANGE;
	uint8_t rtype = (uint8_t)(type + 1);
	if (e < 0) {
		w = (struct wr){ .p = o, .cap = cap, .n = HDR };
		wr_u32(&w, (uint32_t)-e);
		rtype = P9_RLERROR;
	}
	put32(o, (uint32_t)w.n);
	o[4] = rtype;
	put16(o + 5, tag);
	buf_commit(&s->out, w.n);
	return 0;
}

/* ---- the server ---- */

int ws9p_new(int rootfd, struct ws9p **ret)
{
	struct stat st;
	_cleanup_close_ int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	struct ws9p *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->rootfd = TAKE_FD(fd);
	s->rootdev = st.st_dev;
	s->uid = geteuid();
	s->gid = getegid();
	s->msize = WS9P_MSIZE_MAX;
	buf_init(&s->in, WS9P_MSIZE_MAX);
	buf_init(&s->out, OUT_CAP);
	*ret = s;
	return 0;
}

void ws9p_free(struct ws9p *s)
{
	if (!s)
		return;
	fids_clear(s);
	free(s->fids);
	buf_done(&s->in, 0);
	buf_done(&s->out, 0);
	safe_close(s->rootfd);
	free(s);
}

ssize_t ws9p_input(struct ws9p *s, const uint8_t *p, size_t n)
{
	size_t used = 0;
	int e;
	if (s->dead)
		return -EPROTO;
	while (used < n && buf_len(&s->out) <= WS9P_OUT_MAX) {
		size_t have = buf_len(&s->in);
		if (have == 0 && n - used >= 4) { /* a request whole in p: served in place */
			uint32_t size = le32(p + used);
			if (size < HDR || size > s->msize)
				goto broken;
			if (n - used >= size) {
				e = serve(s, p + used, size);
				if (e < 0)
					return e;
				used += size;
				continue;
			}
		}
		size_t want = have < 4 ? 4 - have : le32(buf_head(&s->in)) - have;
		size_t k = MIN(want, n - used);
		e = buf_append(&s->in, p + used, k);
		if (e < 0)
			return e == -ENOBUFS ? -EPROTO : e;
		used += k;
		have += k;
		if (have < 4)
			continue;
		uint32_t size = le32(buf_head(&s->in));
		if (size < HDR || size > s->msize)
			goto broken;
		if (have == size) {
			e = serve(s, buf_head(&s->in), size);
			buf_consume(&s->in, size);
			if (e < 0)
				return e;
		}
	}
	return (ssize_t)used;
broken:
	s->dead = true;
	return -EPROTO;
}

const uint8_t *ws9p_output(const struct ws9p *s, size_t *ret_n)
{
	*ret_n = buf_len(&s->out);
	return *ret_n ? buf_head(&s->out) : NULL;
}

void ws9p_consume(struct ws9p *s, size_t n)
{
	buf_consume(&s->out, MIN(n, buf_len(&s->out)));
}

size_t ws9p_fid_count(const struct ws9p *s)
{
	return s->nfids;
}

/* ---- suspend ---- */

/* A path in the state: "path" when valid UTF-8, else "path_b64" (the bytes, base64). */
static int path_set(json_t *o, const char *p)
{
	size_t n = strlen(p);
	if (utf8_valid(p, n))
		return json_object_set_new(o, "path", json_stringn(p, n)) < 0 ? -ENOMEM : 0;
	_cleanup_free_ char *b = base64_encode(p, n);
	if (!b)
		return -ENOMEM;
	return json_object_set_new(o, "path_b64", json_string(b)) < 0 ? -ENOMEM : 0;
}

/* The path path_set() stored (malloc'ed), or -EINVAL when it is not a valid relative path. */
static int path_get(json_t *o, char **ret)
{
	json_t *v = json_object_get(o, "path");
	_cleanup_free_ char *p = NULL;
	if (json_is_string(v)) {
		if (json_string_length(v) > WST_PATH_MAX ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return -EINVAL;
		if (!(p = strdup(json_string_value(v))))
			return -ENOMEM;
	} else {
		uint8_t *b = NULL;
		size_t n = 0;
		v = json_object_get(o, "path_b64");
		if (!json_is_string(v) ||
		    base64_decode(json_string_value(v), json_string_length(v), &b, &n) < 0)
			return -EINVAL;
		p = (char *)b;
		if (n > WST_PATH_MAX || memchr(p, 0, n))
			return -EINVAL;
		char *q = realloc(p, n + 1);
		if (!q)
			return -ENOMEM;
		p = q;
		p[n] = 0;
	}
	if (wst_path_check(p, 1) < 0)
		return -EINVAL;
	*ret = TAKE_PTR(p);
	return 0;
}

static int bytes_b64(json_t *o, const char *key, const struct buf *b64)
{
	size_t n = buf_len(b64);
	_cleanup_free_ char *b = base64_encode(n ? buf_head(b64) : (const uint8_t *)"", n);
	if (!b)
		return -ENOMEM;
	return json_object_set_new(o, key, json_string(b)) < 0 ? -ENOMEM : 0;
}

int ws9p_save(const struct ws9p *s, int fd)
{
	_cleanup_json_ json_t *o = json_object(), *fids = json_array();
	if (!o || !fids)
		return -ENOMEM;
	for (size_t i = 0; i < s->nfids; i++) {
		const struct fid *f = s->fids[i];
		json_t *e = json_pack("{s:I, s:b}", "fid", (json_int_t)f->num, "stale", f->stale);
		if (!e || json_array_append_new(fids, e) < 0)
			return -ENOMEM;
		if (path_set(e, f->path) < 0)
			return -ENOMEM;
		if (f->fd >= 0 && json_object_set_new(e, "open", json_integer(f->open)) < 0)
			return -ENOMEM;
	}
	if (json_object_set_new(o, "version", json_integer(STATE_VERSION)) < 0 ||
	    json_object_set_new(o, "msize", json_integer(s->msize)) < 0 ||
	    json_object_set(o, "fids", fids) < 0 || bytes_b64(o, "partial", &s->in) < 0 ||
	    bytes_b64(o, "out", &s->out) < 0)
		return -ENOMEM;
	_cleanup_free_ char *text = json_dumps(o, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	return fd_write_all(fd, text, strlen(text));
}

/* The bytes of base64 string key of o, at most max of them. 0 or -EINVAL. */
static int b64_get(json_t *o, const char *key, size_t max, uint8_t **ret, size_t *ret_n)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v) || json_string_length(v) > base64_encoded_len(max))
		return -EINVAL;
	int e = base64_decode(json_string_value(v), json_string_length(v), ret, ret_n);
	if (e < 0)
		return e;
	if (*ret_n > max) {
		free(*ret);
		*ret = NULL;
		return -EINVAL;
	}
	return 0;
}

static int u32_get(json_t *v, uint32_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)json_integer_value(v);
	return 0;
}

static int fid_cmp(const void *a, const void *b)
{
	uint32_t x = (*(struct fid *const *)a)->num, y = (*(struct fid *const *)b)->num;
	return x < y ? -1 : x > y;
}

/* The fids of a state (sorted, unique), opened again where they were open. */
static int restore_fids(struct ws9p *s, json_t *arr, uint32_t msize)
{
	size_t n = json_array_size(arr);
	if (!json_is_array(arr) || n > WS9P_FIDS_MAX)
		return -EINVAL;
	struct fid **v = calloc(MAX(n, 1u), sizeof(*v));
	if (!v)
		return -ENOMEM;
	int e = 0;
	size_t k;
	for (k = 0; k < n && e == 0; k++) {
		json_t *o = json_array_get(arr, k), *open = json_object_get(o, "open"),
		       *stale = json_object_get(o, "stale");
		struct fid *f = calloc(1, sizeof(*f));
		if (!f) {
			e = -ENOMEM;
			break;
		}
		*f = (struct fid){ .fd = -1 };
		v[k] = f;
		if (!json_is_object(o) || u32_get(json_object_get(o, "fid"), &f->num) < 0 ||
		    (open && (u32_get(open, &f->open) < 0 || (f->open & ~LOPEN_KEEP))) ||
		    (stale && !json_is_boolean(stale)))
			e = -EINVAL;
		if (e == 0)
			e = path_get(o, &f->path);
		if (e == 0) {
			f->stale = json_is_true(stale);
			f->reopen = open != NULL;
		}
	}
	if (e == 0 && n)
		qsort(v, n, sizeof(*v), fid_cmp);
	for (size_t i = 1; e == 0 && i < n; i++)
		if (v[i]->num == v[i - 1]->num)
			e = -EINVAL;
	if (e < 0) {
		for (size_t i = 0; i < k; i++) {
			if (v[i])
				free(v[i]->path);
			free(v[i]);
		}
		free(v);
		return e;
	}
	/* committed: from here on, a file that cannot be found again makes its fid stale */
	free(s->fids);
	s->fids = v;
	s->nfids = s->cfids = n;
	s->msize = msize;
	for (size_t i = 0; i < n; i++) {
		struct fid *f = v[i];
		struct stat st;
		if (f->stale)
			continue;
		if (!f->reopen) {
			f->stale = wst_lstat(s->rootfd, f->path, &st) < 0;
			continue;
		}
		int fd = open_path(s, f->path, f->open & ~L_TRUNC, &st);
		if (fd < 0) {
			f->stale = true;
			continue;
		}
		f->fd = fd;
		f->isdir = S_ISDIR(st.st_mode);
	}
	return 0;
}

int ws9p_restore(struct ws9p *s, int fd)
{
	if (s->nfids || buf_len(&s->in) || buf_len(&s->out) || s->dead)
		return -EBUSY;
	json_error_t err;
	_cleanup_json_ json_t *j = json_loadfd(fd, JSON_REJECT_DUPLICATES, &err);
	if (!j)
		return -EINVAL;
	uint32_t version, msize;
	if (!json_is_object(j) || u32_get(json_object_get(j, "version"), &version) < 0 ||
	    version != STATE_VERSION || u32_get(json_object_get(j, "msize"), &msize) < 0 ||
	    msize < WS9P_MSIZE_MIN || msize > WS9P_MSIZE_MAX)
		return -EINVAL;
	_cleanup_free_ uint8_t *partial = NULL, *out = NULL;
	size_t np = 0, no = 0;
	int e = b64_get(j, "partial", msize - 1, &partial, &np);
	if (e == 0)
		e = b64_get(j, "out", OUT_CAP - WS9P_MSIZE_MAX, &out, &no);
	if (e < 0)
		return e == -ENOMEM ? e : -EINVAL;
	/* an incomplete request: at most its size field, or less than the size it gives */
	if (np >= 4 && (le32(partial) < HDR || le32(partial) > msize || np >= le32(partial)))
		return -EINVAL;
	e = restore_fids(s, json_object_get(j, "fids"), msize);
	if (e < 0)
		return e;
	if (buf_append(&s->in, partial, np) < 0 || buf_append(&s->out, out, no) < 0) {
		fids_clear(s);
		buf_consume(&s->in, buf_len(&s->in));
		s->msize = WS9P_MSIZE_MAX;
		return -ENOMEM;
	}
	return 0;
}
