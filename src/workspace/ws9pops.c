/* ws9pops.c - what each 9P2000.L request does below the workspace's root (ws9p-internal.h).
 *
 * One function a request (two for a few pairs that differ by a field: Tclunk/Tremove,
 * Tmknod/Tmkdir, Trename/Trenameat, Tlock/Tgetlock): its fields read in order with ws9pwire.h,
 * checked once read (a field past the end is EPROTO, then the fid: EBADF, ESTALE), the host
 * reached, the reply's body written. ws9p.c frames the reply, or an Rlerror for the -errno
 * returned.
 *
 * Trust boundary: the fields are the guest's. Names are single components (no '/', no NUL, not
 * "." or ".."); paths stay within WST_PATH_MAX; counts are capped by msize. Every host access
 * resolves through wstree.h (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS) or through an fd obtained that way; a last component is never
 * followed: opens start O_PATH | O_NOFOLLOW, the type is checked on that fd (only regular files
 * and directories are opened for I/O: a FIFO would block the server) and the same inode is then
 * reopened through /proc/self/fd, which is also how chmod and truncate reach a file by path.
 * Modes lose S_ISUID and S_ISGID; device nodes are refused.
 *
 * Thread: the server's (the caller's).
 */
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

#include "fdutil.h"
#include "macro.h"
#include "ws9p-internal.h"
#include "wstree.h"

#define WALK_MAX 16u
#define LCREATE_KEEP                                                                        \
	(P9_L_ACCMODE | P9_L_APPEND | P9_L_DIRECTORY | P9_L_SYNC | P9_L_DSYNC | P9_L_EXCL | \
	 P9_L_CREATE)

/* ---- names and paths ---- */

/* A name from the guest, NUL-terminated into ret: 0, -EINVAL or -ENAMETOOLONG. */
static int name_get(struct p9str s, char ret[NAME_MAX + 1])
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

/* A name from the guest in dir: the name into nm (name_get()) and its path (path_join()). */
static int name_path(const char *dir, struct p9str name, char nm[NAME_MAX + 1], char **ret)
{
	int e = name_get(name, nm);
	return e < 0 ? e : path_join(dir, nm, ret);
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

static struct p9qid qid_of(const struct ws9p *s, const struct stat *st)
{
	struct p9qid q = { .type = S_ISDIR(st->st_mode)	  ? P9_QT_DIR
				   : S_ISLNK(st->st_mode) ? P9_QT_SYMLINK
							  : 0,
			   .path = st->st_ino };
	if (st->st_dev != s->rootdev) /* another file system mounted below the root */
		q.path ^= (uint64_t)st->st_dev * 0x9e3779b97f4a7c15ull;
	return q;
}

/* ---- host access ---- */

/* The host's open flags for 9P flags l. 0 or -EINVAL. */
static int host_flags(uint32_t l, int *ret)
{
	int f;
	switch (l & P9_L_ACCMODE) {
	case P9_L_WRONLY:
		f = O_WRONLY;
		break;
	case P9_L_RDWR:
		f = O_RDWR;
		break;
	case P9_L_NOACCESS:
		return -EINVAL;
	default:
		f = O_RDONLY;
		break;
	}
	if (l & P9_L_CREATE)
		f |= O_CREAT;
	if (l & P9_L_EXCL)
		f |= O_EXCL;
	if (l & P9_L_TRUNC)
		f |= O_TRUNC;
	if (l & P9_L_APPEND)
		f |= O_APPEND;
	if (l & P9_L_DSYNC)
		f |= O_DSYNC;
	if (l & P9_L_DIRECTORY)
		f |= O_DIRECTORY;
	if (l & P9_L_SYNC)
		f |= O_SYNC;
	*ret = f;
	return 0;
}

/* path below dirfd, not followed: an O_PATH fd on it with its stat in *st, or -errno. */
static int path_fd(int dirfd, const char *path, struct stat *st)
{
	_cleanup_close_ int fd = wst_open(dirfd, path, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, st) < 0)
		return -errno;
	return TAKE_FD(fd);
}

int ws9pops_open(const struct ws9p *s, const char *path, uint32_t l, struct stat *st)
{
	int hf;
	int r = host_flags(l & ~(P9_L_CREATE | P9_L_EXCL), &hf);
	if (r < 0)
		return r;
	_cleanup_close_ int pfd = path_fd(s->rootfd, path, st);
	if (pfd < 0)
		return pfd;
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

/* The parent of path, a directory (malloc'ed; the root is its own parent). 0 or -errno. */
static int path_up(const struct ws9p *s, const char *path, char **ret)
{
	struct stat st;
	int e = wst_lstat(s->rootfd, path, &st);
	if (e < 0)
		return e;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	const char *slash = strrchr(path, '/');
	char *p = strndup(path, slash ? (size_t)(slash - path) : 0);
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* The directory a dfid names, O_PATH. */
static int dir_open(const struct ws9p *s, const struct fid *d)
{
	return wst_open(s->rootfd, d->path, O_PATH | O_DIRECTORY, 0);
}

/* The stat of what f names: its open fd, else its path (not followed). */
static int fid_stat(const struct ws9p *s, const struct fid *f, struct stat *st)
{
	if (f->fd >= 0)
		return fstat(f->fd, st) < 0 ? -errno : 0;
	return wst_lstat(s->rootfd, f->path, st);
}

/* ---- what the requests share ---- */

/* The fid num of a request read whole: 0, -EPROTO (a field past its end), -EBADF or -ESTALE. */
static int fid_req(const struct ws9p *s, const struct p9rd *r, uint32_t num, struct fid **ret)
{
	return r->bad ? -EPROTO : ws9p_fid_get(s, num, ret);
}

/* The fid num of a request read whole, open (else -EBADF). */
static int open_req(const struct ws9p *s, const struct p9rd *r, uint32_t num, struct fid **ret)
{
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	if (f->fd < 0)
		return -EBADF;
	*ret = f;
	return 0;
}

/* A request whose one field is fid[4] (Treadlink, Tstatfs): op on that fid. */
static int fid_only(struct ws9p *s, struct p9rd *r, struct p9wr *w,
		    int (*op)(struct ws9p *s, const struct fid *f, struct p9wr *w))
{
	uint32_t num = p9rd_u32(r);
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	return e < 0 ? e : op(s, f, w);
}

/* A request read whole that makes or removes name in the directory fid num: the name into nm
 * (with the new path's length checked) and the directory's O_PATH fd, or -errno. */
static int dir_req(const struct ws9p *s, const struct p9rd *r, uint32_t num, struct p9str name,
		   char nm[NAME_MAX + 1])
{
	struct fid *d;
	_cleanup_free_ char *path = NULL;
	int e = fid_req(s, r, num, &d);
	if (e == 0)
		e = name_path(d->path, name, nm, &path);
	return e < 0 ? e : dir_open(s, d);
}

/* After a create of name in dirfd: its permission bits set exactly (the server's umask does not
 * apply; a symlink has none) and its qid answered. */
static int created(const struct ws9p *s, struct p9wr *w, int dirfd, const char *name, mode_t mode)
{
	struct stat st;
	_cleanup_close_ int fd = path_fd(dirfd, name, &st);
	if (fd < 0)
		return fd;
	if (!S_ISLNK(st.st_mode) && (st.st_mode & 07777) != mode) {
		char p[32];
		proc_fd(fd, p);
		if (chmod(p, mode) == 0)
			st.st_mode = (st.st_mode & S_IFMT) | mode;
	}
	p9wr_qid(w, qid_of(s, &st));
	return 0;
}

/* f opened on fd with 9P flags l (its stat st): Rlopen's and Rlcreate's qid and iounit. */
static void opened(const struct ws9p *s, struct p9wr *w, struct fid *f, int fd, uint32_t l,
		   const struct stat *st)
{
	f->fd = fd;
	f->open = l;
	f->isdir = S_ISDIR(st->st_mode);
	p9wr_qid(w, qid_of(s, st));
	p9wr_u32(w, 0); /* iounit: msize - P9_IOHDRSZ */
}

/* Tread, Twrite and Treaddir: fid[4] offset[8] count[4] (and Twrite's data[count]). */
struct io {
	struct fid *f; /* open, on a directory for Treaddir, else on a file */
	uint64_t off;  /* at most INT64_MAX */
	uint32_t count;
	const uint8_t *data; /* Twrite's, in the request */
};

static int io_req(const struct ws9p *s, struct p9rd *r, uint8_t type, struct io *ret)
{
	uint32_t num = p9rd_u32(r);
	uint64_t off = p9rd_u64(r);
	uint32_t count = p9rd_u32(r);
	const uint8_t *data = type == P9_TWRITE ? p9rd_take(r, count) : NULL;
	struct fid *f;
	int e = open_req(s, r, num, &f);
	if (e < 0)
		return e;
	bool dir = type == P9_TREADDIR;
	if (f->isdir != dir)
		return dir ? -ENOTDIR : -EISDIR;
	if (off > INT64_MAX)
		return -EINVAL;
	*ret = (struct io){ .f = f, .off = off, .count = count, .data = data };
	return 0;
}

/* ---- the requests ---- */

static int t_version(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t msize = p9rd_u32(r);
	struct p9str v = p9rd_str(r);
	if (r->bad)
		return -EPROTO;
	ws9p_fids_clear(s); /* a new session */
	bool ok = v.n == 8 && memcmp(v.p, "9P2000.L", 8) == 0;
	if (ok && msize < WS9P_MSIZE_MIN)
		return -EINVAL;
	msize = MIN(msize, WS9P_MSIZE_MAX);
	if (ok)
		s->msize = msize;
	p9wr_u32(w, msize);
	if (ok)
		p9wr_str(w, "9P2000.L", 8);
	else
		p9wr_str(w, "unknown", 7);
	return 0;
}

static int t_attach(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	(void)p9rd_u32(r); /* afid: no authentication */
	(void)p9rd_str(r); /* uname */
	(void)p9rd_str(r); /* aname: one tree */
	if (r->bad)
		return -EPROTO;
	struct stat st;
	if (fstat(s->rootfd, &st) < 0)
		return -errno;
	char *root = strdup("");
	if (!root)
		return -ENOMEM;
	int e = ws9p_fid_add(s, num, root, NULL);
	if (e < 0) {
		free(root);
		return e;
	}
	p9wr_qid(w, qid_of(s, &st));
	return 0;
}

static int t_walk(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r), newnum = p9rd_u32(r);
	uint16_t nw = p9rd_u16(r);
	struct p9str names[WALK_MAX];
	if (!r->bad && nw > WALK_MAX)
		return -EINVAL;
	for (uint16_t i = 0; i < nw && !r->bad; i++)
		names[i] = p9rd_str(r);
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	if (newnum != num && ws9p_fid_find(s, newnum))
		return -EEXIST;
	if (newnum == num && nw > 0 && f->fd >= 0)
		return -EBUSY; /* an open fid keeps naming its file */
	_cleanup_free_ char *path = strdup(f->path);
	if (!path)
		return -ENOMEM;
	size_t at = w->n;
	p9wr_u16(w, 0);
	uint16_t i;
	for (i = 0; i < nw; i++) {
		char nm[NAME_MAX + 1];
		char *next = NULL;
		struct stat st;
		if (names[i].n == 2 && memcmp(names[i].p, "..", 2) == 0)
			e = path_up(s, path, &next); /* never above the root */
		else
			e = name_path(path, names[i], nm, &next);
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
		p9wr_qid(w, qid_of(s, &st));
	}
	if (i == nw) {
		if (newnum == num) {
			free(f->path);
			f->path = TAKE_PTR(path);
		} else {
			e = ws9p_fid_add(s, newnum, path, NULL);
			if (e < 0)
				return e;
			path = NULL;
		}
	}
	p9_put16(w->p + at, i);
	return 0;
}

static int t_lopen(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r), flags = p9rd_u32(r) & WS9P_LOPEN_KEEP;
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	if (f->fd >= 0)
		return -EINVAL;
	struct stat st;
	int fd = ws9pops_open(s, f->path, flags, &st);
	if (fd < 0)
		return fd;
	opened(s, w, f, fd, flags, &st);
	return 0;
}

static int t_lcreate(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	struct p9str name = p9rd_str(r);
	uint32_t flags = p9rd_u32(r) & LCREATE_KEEP, mode = p9rd_u32(r);
	(void)p9rd_u32(r); /* gid */
	struct fid *d;
	char nm[NAME_MAX + 1];
	_cleanup_free_ char *path = NULL;
	int hf, e = fid_req(s, r, num, &d);
	if (e == 0 && d->fd >= 0)
		e = -EINVAL;
	if (e == 0)
		e = name_path(d->path, name, nm, &path);
	if (e == 0)
		e = host_flags(flags | P9_L_CREATE | P9_L_EXCL, &hf);
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
	if (fd == -EEXIST &&
	    !(flags & P9_L_EXCL)) { /* O_CREAT without O_EXCL: open what is there */
		made = false;
		fd = ws9pops_open(s, path, flags & ~P9_L_CREATE, &st);
	}
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR; /* open(2) refuses O_CREAT on a directory too */
	if (made && (st.st_mode & 07777) != m && fchmod(fd, m) == 0)
		st.st_mode = (st.st_mode & S_IFMT) | m; /* the server's umask does not apply */
	ws9p_fid_close(d);
	free(d->path);
	d->path = TAKE_PTR(path);
	opened(s, w, d, TAKE_FD(fd), flags & ~(P9_L_CREATE | P9_L_EXCL), &st);
	return 0;
}

static int t_symlink(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	struct p9str name = p9rd_str(r), target = p9rd_str(r);
	(void)p9rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	if (target.n == 0 || memchr(target.p, 0, target.n))
		return -EINVAL;
	if (target.n > WST_PATH_MAX)
		return -ENAMETOOLONG;
	char nm[NAME_MAX + 1], t[WST_PATH_MAX + 1];
	_cleanup_close_ int dfd = dir_req(s, r, num, name, nm);
	if (dfd < 0)
		return dfd;
	memcpy(t, target.p, target.n);
	t[target.n] = 0;
	if (symlinkat(t, dfd, nm) < 0)
		return -errno;
	return created(s, w, dfd, nm, 0);
}

/* Tmknod (a regular file, a FIFO or a socket: never a device) and Tmkdir, which has no major and
 * minor. */
static int t_mknod(struct ws9p *s, struct p9rd *r, struct p9wr *w, bool dir)
{
	uint32_t num = p9rd_u32(r);
	struct p9str name = p9rd_str(r);
	uint32_t mode = p9rd_u32(r);
	if (!dir) {
		(void)p9rd_u32(r); /* major */
		(void)p9rd_u32(r); /* minor */
	}
	(void)p9rd_u32(r); /* gid */
	if (r->bad)
		return -EPROTO;
	mode_t type = (mode_t)mode & S_IFMT;
	if (!dir && (type == S_IFCHR || type == S_IFBLK))
		return -EPERM; /* no device nodes on the host */
	if (type == 0)
		type = S_IFREG;
	if (!dir && type != S_IFREG && type != S_IFIFO && type != S_IFSOCK)
		return -EINVAL;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = dir_req(s, r, num, name, nm);
	if (dfd < 0)
		return dfd;
	mode_t m = mode_safe(mode);
	if ((dir ? mkdirat(dfd, nm, m) : mknodat(dfd, nm, type | m, 0)) < 0)
		return -errno;
	return created(s, w, dfd, nm, m);
}

/* Trename (fid[4] dfid[4] name[s]: the fid's own file, which it keeps naming) and Trenameat
 * (olddirfid[4] oldname[s] newdirfid[4] newname[s]); the fids below the old path follow it. */
static int t_rename(struct ws9p *s, struct p9rd *r, bool at)
{
	uint32_t onum = p9rd_u32(r);
	struct p9str oname = at ? p9rd_str(r) : (struct p9str){ "", 0 };
	uint32_t nnum = p9rd_u32(r);
	struct p9str nname = p9rd_str(r);
	struct fid *o, *nd;
	char on[NAME_MAX + 1], nn[NAME_MAX + 1];
	_cleanup_free_ char *from = NULL, *to = NULL;
	int e = fid_req(s, r, onum, &o);
	if (e == 0)
		e = ws9p_fid_get(s, nnum, &nd);
	if (e == 0 && !at && !*o->path)
		e = -EBUSY; /* the root */
	if (e == 0 && at)
		e = name_get(oname, on);
	if (e == 0)
		e = name_get(nname, nn);
	if (e == 0 && at)
		e = path_join(o->path, on, &from);
	if (e == 0)
		e = path_join(nd->path, nn, &to);
	if (e == 0 && !at && !(from = strdup(o->path)))
		e = -ENOMEM;
	if (e < 0)
		return e;
	const char *fname, *tname;
	_cleanup_close_ int ofd = wst_open_parent(s->rootfd, from, &fname);
	if (ofd < 0)
		return ofd;
	_cleanup_close_ int nfd = wst_open_parent(s->rootfd, to, &tname);
	if (nfd < 0)
		return nfd;
	if (renameat(ofd, fname, nfd, tname) < 0)
		return -errno;
	if (!streq(from, to))
		ws9p_fids_moved(s, from, to);
	return 0;
}

static int t_readlink(struct ws9p *s, const struct fid *f, struct p9wr *w)
{
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
	if ((size_t)k >= sizeof(t) || P9_HDR + 2 + (size_t)k > w->cap)
		return -ENAMETOOLONG;
	p9wr_str(w, t, (size_t)k);
	return 0;
}

static int t_getattr(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	(void)p9rd_u64(r); /* request_mask: the basic set is always returned */
	struct fid *f;
	struct stat st;
	int e = fid_req(s, r, num, &f);
	if (e == 0)
		e = fid_stat(s, f, &st);
	if (e < 0)
		return e;
	p9wr_u64(w, P9_GETATTR_BASIC);
	p9wr_qid(w, qid_of(s, &st));
	p9wr_u32(w, st.st_mode);
	p9wr_u32(w, st.st_uid == s->uid ? 0 : st.st_uid);
	p9wr_u32(w, st.st_gid == s->gid ? 0 : st.st_gid);
	const uint64_t v[] = {
		st.st_nlink,
		st.st_rdev,
		(uint64_t)st.st_size,
		(uint64_t)st.st_blksize,
		(uint64_t)st.st_blocks,
		(uint64_t)st.st_atim.tv_sec,
		(uint64_t)st.st_atim.tv_nsec,
		(uint64_t)st.st_mtim.tv_sec,
		(uint64_t)st.st_mtim.tv_nsec,
		(uint64_t)st.st_ctim.tv_sec,
		(uint64_t)st.st_ctim.tv_nsec,
		0,
		0,
		0,
		0 /* btime (2), gen, data_version */
	};
	for (size_t i = 0; i < ELEMENTSOF(v); i++)
		p9wr_u64(w, v[i]);
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

static int t_setattr(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r), valid = p9rd_u32(r), mode = p9rd_u32(r);
	(void)p9rd_u32(r); /* uid: files stay the server's */
	(void)p9rd_u32(r); /* gid */
	uint64_t size = p9rd_u64(r), as = p9rd_u64(r), an = p9rd_u64(r), ms = p9rd_u64(r),
		 mn = p9rd_u64(r);
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	/* the fid's own fd, else the file its path names (O_PATH, not followed) */
	struct stat st;
	_cleanup_close_ int own = f->fd < 0 ? path_fd(s->rootfd, f->path, &st) : -1;
	int fd = f->fd < 0 ? own : f->fd;
	if (fd < 0)
		return fd;
	if (fd != own && fstat(fd, &st) < 0)
		return -errno;
	char p[32];
	proc_fd(fd, p);
	if (valid & P9_SETATTR_SIZE) {
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		if (!S_ISREG(st.st_mode))
			return -EINVAL;
		if (size > INT64_MAX)
			return -EFBIG;
		if (f->fd >= 0 && (f->open & P9_L_ACCMODE) != 0) { /* open for writing */
			if (ftruncate(f->fd, (off_t)size) < 0)
				return -errno;
		} else {
			/* the same inode, reopened for writing */
			_cleanup_close_ int wfd = open(p, O_WRONLY | O_CLOEXEC);
			if (wfd < 0 || ftruncate(wfd, (off_t)size) < 0)
				return -errno;
		}
	}
	if (valid & P9_SETATTR_MODE) {
		if (S_ISLNK(st.st_mode))
			return -EOPNOTSUPP;
		if (chmod(p, mode_safe(mode)) < 0)
			return -errno;
	}
	if (valid & (P9_SETATTR_ATIME | P9_SETATTR_MTIME)) {
		struct timespec ts[2] = {
			set_time(valid, P9_SETATTR_ATIME, P9_SETATTR_ATIME_SET, as, an),
			set_time(valid, P9_SETATTR_MTIME, P9_SETATTR_MTIME_SET, ms, mn)
		};
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

static int t_readdir(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	struct io io;
	int e = io_req(s, r, P9_TREADDIR, &io);
	if (e < 0)
		return e;
	uint32_t count = MIN(io.count, s->msize - 11u);
	_cleanup_free_ uint8_t *buf = malloc(MAX(count, 1u));
	if (!buf)
		return -ENOMEM;
	if (lseek(io.f->fd, (off_t)io.off, SEEK_SET) < 0)
		return -errno;
	ssize_t k = getdents64(io.f->fd, buf, count);
	if (k < 0)
		return -errno;
	size_t at = w->n;
	p9wr_u32(w, 0);
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
		p9wr_qid(w, (struct p9qid){ .type = type == DT_DIR   ? P9_QT_DIR
						    : type == DT_LNK ? P9_QT_SYMLINK
								     : 0,
					    .path = ino });
		p9wr_u64(w, doff);
		p9wr_u8(w, type);
		p9wr_str(w, name, nl);
		i += reclen;
	}
	if (k > 0 && w->n == start)
		return -EINVAL; /* not even one entry fits in count */
	p9_put32(w->p + at, (uint32_t)(w->n - start));
	return 0;
}

static int t_read(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	struct io io;
	int e = io_req(s, r, P9_TREAD, &io);
	if (e < 0)
		return e;
	uint32_t count = MIN(io.count, s->msize - P9_IOHDRSZ);
	size_t at = w->n;
	uint8_t *data = p9wr_take(w, 4 + (size_t)count);
	if (!data)
		return -ENOBUFS;
	ssize_t k = pread(io.f->fd, data + 4, count, (off_t)io.off);
	if (k < 0)
		return -errno;
	p9_put32(data, (uint32_t)k);
	w->n = at + 4 + (size_t)k;
	return 0;
}

static int t_write(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	struct io io;
	int e = io_req(s, r, P9_TWRITE, &io);
	if (e < 0)
		return e;
	ssize_t k = pwrite(io.f->fd, io.data, io.count, (off_t)io.off);
	if (k < 0)
		return -errno;
	p9wr_u32(w, (uint32_t)k);
	return 0;
}

static int t_fsync(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	uint32_t datasync = r->n - r->off >= 4 ? p9rd_u32(r) : 0; /* older clients send none */
	struct fid *f;
	int e = open_req(s, r, num, &f);
	if (e < 0)
		return e;
	if ((datasync ? fdatasync(f->fd) : fsync(f->fd)) < 0)
		return -errno;
	return 0;
}

/* Tlock and Tgetlock (which has no flags): locks are the guest's own business (one client);
 * always granted, and never held by anyone else. */
static int t_lock(struct ws9p *s, struct p9rd *r, struct p9wr *w, bool get)
{
	uint32_t num = p9rd_u32(r);
	(void)p9rd_u8(r); /* type */
	if (!get)
		(void)p9rd_u32(r); /* flags */
	uint64_t start = p9rd_u64(r), length = p9rd_u64(r);
	uint32_t proc = p9rd_u32(r);
	struct p9str client = p9rd_str(r);
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	if (!get) {
		p9wr_u8(w, P9_LOCK_SUCCESS);
		return 0;
	}
	p9wr_u8(w, P9_LOCK_TYPE_UNLCK);
	p9wr_u64(w, start);
	p9wr_u64(w, length);
	p9wr_u32(w, proc);
	p9wr_str(w, client.p, client.n);
	return 0;
}

static int t_link(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t dnum = p9rd_u32(r), num = p9rd_u32(r);
	struct p9str name = p9rd_str(r);
	struct fid *f;
	int e = fid_req(s, r, num, &f);
	if (e < 0)
		return e;
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = dir_req(s, r, dnum, name, nm);
	if (dfd < 0)
		return dfd;
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

static int t_unlinkat(struct ws9p *s, struct p9rd *r, struct p9wr *w)
{
	uint32_t num = p9rd_u32(r);
	struct p9str name = p9rd_str(r);
	uint32_t flags = p9rd_u32(r);
	char nm[NAME_MAX + 1];
	_cleanup_close_ int dfd = dir_req(s, r, num, name, nm);
	if (dfd < 0)
		return dfd;
	if (unlinkat(dfd, nm, (flags & P9_AT_REMOVEDIR) ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	return 0;
}

static int t_statfs(struct ws9p *s, const struct fid *f, struct p9wr *w)
{
	struct statfs st;
	if (fstatfs(s->rootfd, &st) < 0)
		return -errno;
	uint64_t fsid;
	memcpy(&fsid, &st.f_fsid, sizeof(fsid));
	p9wr_u32(w, P9_V9FS_MAGIC);
	p9wr_u32(w, (uint32_t)st.f_bsize);
	const uint64_t v[] = { st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, fsid };
	for (size_t i = 0; i < ELEMENTSOF(v); i++)
		p9wr_u64(w, v[i]);
	p9wr_u32(w, (uint32_t)st.f_namelen);
	return 0;
}

/* Remove what path names (not followed; a directory as one). 0 or -errno. */
static int remove_path(const struct ws9p *s, const char *path)
{
	const char *name;
	struct stat st;
	_cleanup_close_ int pfd = wst_open_parent(s->rootfd, path, &name);
	if (pfd < 0)
		return pfd;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    unlinkat(pfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	return 0;
}

/* Tclunk and Tremove, which first removes the fid's file (never the root): the fid is gone
 * either way, a stale one too. */
static int t_clunk(struct ws9p *s, struct p9rd *r, bool remove)
{
	uint32_t num = p9rd_u32(r);
	if (r->bad)
		return -EPROTO;
	struct fid *f = ws9p_fid_find(s, num);
	if (!f)
		return -EBADF;
	int e = 0;
	if (remove)
		e = f->stale ? -ESTALE : !*f->path ? -EBUSY : remove_path(s, f->path);
	ws9p_fid_del(s, f); /* clunked even when the removal failed */
	return e;
}

int ws9pops_serve(struct ws9p *s, uint8_t type, struct p9rd *r, struct p9wr *w)
{
	switch (type) {
	case P9_TVERSION:
		return t_version(s, r, w);
	case P9_TATTACH:
		return t_attach(s, r, w);
	case P9_TFLUSH:
		(void)p9rd_u16(r); /* oldtag: answered already, requests are served in order */
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
		return t_mknod(s, r, w, false);
	case P9_TRENAME:
		return t_rename(s, r, false);
	case P9_TREADLINK:
		return fid_only(s, r, w, t_readlink);
	case P9_TGETATTR:
		return t_getattr(s, r, w);
	case P9_TSETATTR:
		return t_setattr(s, r, w);
	case P9_TREADDIR:
		return t_readdir(s, r, w);
	case P9_TFSYNC:
		return t_fsync(s, r, w);
	case P9_TLOCK:
		return t_lock(s, r, w, false);
	case P9_TGETLOCK:
		return t_lock(s, r, w, true);
	case P9_TLINK:
		return t_link(s, r, w);
	case P9_TMKDIR:
		return t_mknod(s, r, w, true);
	case P9_TRENAMEAT:
		return t_rename(s, r, true);
	case P9_TUNLINKAT:
		return t_unlinkat(s, r, w);
	case P9_TSTATFS:
		return fid_only(s, r, w, t_statfs);
	case P9_TREAD:
		return t_read(s, r, w);
	case P9_TWRITE:
		return t_write(s, r, w);
	case P9_TCLUNK:
		return t_clunk(s, r, false);
	case P9_TREMOVE:
		return t_clunk(s, r, true);
	default: /* Tauth, Txattrwalk, Txattrcreate, and anything else */
		return -EOPNOTSUPP;
	}
}
