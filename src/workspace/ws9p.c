/* ws9p.c - a transport-free 9P2000.L server for the workspace share (ws9p.h): the stream and
 * the fid table.
 *
 * Requests are decoded from a byte stream (size[4] type[1] tag[2] body, little-endian), served
 * one after another (ws9pops.c), and each reply (Rlerror with a Linux errno on failure) is
 * appended to an output buffer the caller drains. A fid is a path relative to the root plus, once
 * opened, an fd; the table is sorted by fid number and capped at WS9P_FIDS_MAX. The state is
 * saved and restored by ws9pstate.c.
 *
 * Trust boundary: every byte comes from the guest. A size field below the header or over msize
 * ends the session; a request is served from its own size[4] bytes only, its fields read with
 * ws9pwire.h's bounds-checked reader, its reply written within msize. Allocations are bounded by
 * msize, the fid cap and WS9P_OUT_MAX.
 *
 * Thread: the caller's; one server is used by one thread; no global state.
 */
#include "ws9p.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fdutil.h"
#include "macro.h"
#include "ws9p-internal.h"
#include "wstree.h"

/* ---- the fid table ---- */

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

struct fid *ws9p_fid_find(const struct ws9p *s, uint32_t num)
{
	size_t i = fid_lower(s, num);
	return i < s->nfids && s->fids[i]->num == num ? s->fids[i] : NULL;
}

void ws9p_fid_close(struct fid *f)
{
	f->fd = safe_close(f->fd);
	f->open = 0;
	f->isdir = false;
}

int ws9p_fid_add(struct ws9p *s, uint32_t num, char *path, struct fid **ret)
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

void ws9p_fid_free(struct fid *f)
{
	if (!f)
		return;
	ws9p_fid_close(f);
	free(f->path);
	free(f);
}

void ws9p_fid_del(struct ws9p *s, struct fid *f)
{
	size_t i = fid_lower(s, f->num);
	if (i >= s->nfids || s->fids[i] != f)
		return;
	memmove(s->fids + i, s->fids + i + 1, (s->nfids - i - 1) * sizeof(*s->fids));
	s->nfids--;
	ws9p_fid_free(f);
}

void ws9p_fids_clear(struct ws9p *s)
{
	for (size_t i = 0; i < s->nfids; i++)
		ws9p_fid_free(s->fids[i]);
	s->nfids = 0;
}

/* The rest of p after prefix dir when p is dir or below it, else NULL. */
static const char *path_below(const char *p, const char *dir)
{
	size_t n = strlen(dir);
	if (strncmp(p, dir, n) != 0 || (p[n] != 0 && p[n] != '/'))
		return NULL;
	return p + n;
}

void ws9p_fids_moved(struct ws9p *s, const char *from, const char *to)
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
			ws9p_fid_close(f);
			f->stale = true;
			continue;
		}
		snprintf(p, tl + rl + 1, "%s%s", to, rest);
		free(f->path);
		f->path = p;
	}
}

/* ---- the stream ---- */

/* Serve the complete request m[0, n) (n >= P9_HDR) and append its reply. 0 or -ENOMEM. */
static int serve(struct ws9p *s, const uint8_t *m, size_t n)
{
	size_t cap = s->msize;
	uint8_t *o = buf_reserve(&s->out, cap);
	if (!o)
		return -ENOMEM;
	uint8_t type = m[4];
	uint16_t tag = p9_le16(m + 5);
	struct p9rd r = { .p = m, .n = n, .off = P9_HDR };
	struct p9wr w = { .p = o, .cap = cap, .n = P9_HDR };
	int e = ws9pops_serve(s, type, &r, &w);
	if (e == 0 && w.over)
		e = -ERANGE;
	uint8_t rtype = (uint8_t)(type + 1);
	if (e < 0) {
		w = (struct p9wr){ .p = o, .cap = cap, .n = P9_HDR };
		p9wr_u32(&w, (uint32_t)-e);
		rtype = P9_RLERROR;
	}
	p9_put32(o, (uint32_t)w.n);
	o[4] = rtype;
	p9_put16(o + 5, tag);
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
	buf_init(&s->out, WS9P_OUT_CAP);
	*ret = s;
	return 0;
}

void ws9p_free(struct ws9p *s)
{
	if (!s)
		return;
	ws9p_fids_clear(s);
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
			uint32_t size = p9_le32(p + used);
			if (size < P9_HDR || size > s->msize)
				goto broken;
			if (n - used >= size) {
				e = serve(s, p + used, size);
				if (e < 0)
					return e;
				used += size;
				continue;
			}
		}
		size_t want = have < 4 ? 4 - have : p9_le32(buf_head(&s->in)) - have;
		size_t k = MIN(want, n - used);
		e = buf_append(&s->in, p + used, k);
		if (e < 0)
			return e == -ENOBUFS ? -EPROTO : e;
		used += k;
		have += k;
		if (have < 4)
			continue;
		uint32_t size = p9_le32(buf_head(&s->in));
		if (size < P9_HDR || size > s->msize)
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
