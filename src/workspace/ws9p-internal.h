/* ws9p-internal.h - what the workspace's 9P2000.L server's files share (not part of ws9p.h).
 *
 * ws9p.c is the server (the stream cut into requests, each reply framed; the fid table),
 * ws9pops.c what each request does below the root, ws9pstate.c the state saved and restored,
 * ws9pwire.c (ws9pwire.h) the codec they all read and write messages with. One thread per server.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "buf.h"
#include "ws9p.h"
#include "ws9pwire.h"

#define WS9P_MSIZE_MIN 4096u /* what the Linux client accepts at least */
#define WS9P_OUT_CAP (WS9P_OUT_MAX + 2u * WS9P_MSIZE_MAX)
/* the open flags Tlopen keeps (so the only ones a saved open fid may carry) */
#define WS9P_LOPEN_KEEP \
	(P9_L_ACCMODE | P9_L_APPEND | P9_L_TRUNC | P9_L_DIRECTORY | P9_L_SYNC | P9_L_DSYNC)

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

/* ---- the fid table (ws9p.c) ---- */

struct fid *ws9p_fid_find(const struct ws9p *s, uint32_t num); /* NULL when unknown */
/* The fid num usable for a request: 0, -EBADF (unknown) or -ESTALE. */
static inline int ws9p_fid_get(const struct ws9p *s, uint32_t num, struct fid **ret)
{
	struct fid *f = ws9p_fid_find(s, num);
	if (!f)
		return -EBADF;
	if (f->stale)
		return -ESTALE;
	*ret = f;
	return 0;
}
/* A new fid num on path (taken on success). 0, -EEXIST, -ENFILE or -ENOMEM. */
int ws9p_fid_add(struct ws9p *s, uint32_t num, char *path, struct fid **ret);
void ws9p_fid_close(struct fid *f); /* its fd closed, the fid kept (unopened) */
void ws9p_fid_free(struct fid *f);  /* closed and freed, not in a table; NULL is fine */
void ws9p_fid_del(struct ws9p *s, struct fid *f); /* out of the table and freed */
void ws9p_fids_clear(struct ws9p *s);		  /* every fid gone */
/* After a rename of from to to: every fid at or below from follows it (or, when its new path
 * would be too long, turns stale). */
void ws9p_fids_moved(struct ws9p *s, const char *from, const char *to);

/* ---- the requests (ws9pops.c) ---- */

/* Serve one request of type type: its fields in r (after the header), its reply's body written
 * to w. 0, or -errno for Rlerror (-EPROTO when the request was cut short). */
int ws9pops_serve(struct ws9p *s, uint8_t type, struct p9rd *r, struct p9wr *w);
/* Open path (below the root, no O_CREAT) for I/O with 9P flags l: the fd, with *st; -ELOOP for
 * a symlink, -ENXIO for anything but a regular file or a directory, or -errno. */
int ws9pops_open(const struct ws9p *s, const char *path, uint32_t l, struct stat *st);
