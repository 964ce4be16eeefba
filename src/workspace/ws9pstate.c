/* ws9pstate.c - the workspace's 9P2000.L server saved and restored (ws9p_save(), ws9p_restore()).
 *
 * The state is one JSON object: {"version": 1, "msize": N, "fids": [{"fid": N, "path": "p" or
 * "path_b64": "...", "stale": bool, "open": flags (only when open)}], "partial": base64 (the
 * beginning of a request not yet complete), "out": base64 (the replies not yet handed out)}.
 * Nothing else is needed: I/O is at each request's offset and Treaddir seeks to the offset it
 * is given. A restore opens every open fid again by its path (without O_TRUNC; O_CREAT and
 * O_EXCL are never kept) and turns a fid whose file is gone stale.
 *
 * Trust boundary: a state is checked whole before any of it is used: numbers in range, paths
 * relative and within WST_PATH_MAX (wst_path_check()), fids unique, open flags among those Tlopen
 * keeps, the byte strings within their caps, the partial request consistent with its size field
 * (else -EINVAL, nothing loaded). Its paths then resolve below the root like any request's.
 *
 * Thread: the server's (the caller's).
 */
#include "ws9p.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base64.h"
#include "buf.h"
#include "fdutil.h"
#include "jsonutil.h"
#include "macro.h"
#include "utf8.h"
#include "ws9p-internal.h"
#include "wstree.h"

#define STATE_VERSION 1

/* Bytes p[0, n) as the base64 string key of o. 0 or -ENOMEM. */
static int b64_set(json_t *o, const char *key, const void *p, size_t n)
{
	_cleanup_free_ char *b = base64_encode(n ? p : "", n);
	if (!b)
		return -ENOMEM;
	return json_object_set_new(o, key, json_string(b)) < 0 ? -ENOMEM : 0;
}

/* The bytes held in b as the base64 string key of o (b's head is not taken when it is empty). */
static int buf_set(json_t *o, const char *key, const struct buf *b)
{
	size_t n = buf_len(b);
	return b64_set(o, key, n ? buf_head(b) : NULL, n);
}

/* The bytes of base64 string key of o, at most max of them. 0, -EINVAL or -ENOMEM. */
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

/* A path in the state: "path" when valid UTF-8, else "path_b64" (the bytes, base64). */
static int path_set(json_t *o, const char *p)
{
	size_t n = strlen(p);
	if (utf8_valid(p, n))
		return json_object_set_new(o, "path", json_stringn(p, n)) < 0 ? -ENOMEM : 0;
	return b64_set(o, "path_b64", p, n);
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
		if (b64_get(o, "path_b64", WST_PATH_MAX, &b, &n) < 0)
			return -EINVAL;
		p = (char *)b;
		if (memchr(p, 0, n))
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
	    json_object_set(o, "fids", fids) < 0 || buf_set(o, "partial", &s->in) < 0 ||
	    buf_set(o, "out", &s->out) < 0)
		return -ENOMEM;
	_cleanup_free_ char *text = json_dumps(o, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	return fd_write_all(fd, text, strlen(text));
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
		    (open && (u32_get(open, &f->open) < 0 || (f->open & ~WS9P_LOPEN_KEEP))) ||
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
		for (size_t i = 0; i < k; i++)
			ws9p_fid_free(v[i]);
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
		int fd = ws9pops_open(s, f->path, f->open & ~P9_L_TRUNC, &st);
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
		e = b64_get(j, "out", WS9P_OUT_CAP - WS9P_MSIZE_MAX, &out, &no);
	if (e < 0)
		return e == -ENOMEM ? e : -EINVAL;
	/* an incomplete request: at most its size field, or less than the size it gives */
	if (np >= 4 &&
	    (p9_le32(partial) < P9_HDR || p9_le32(partial) > msize || np >= p9_le32(partial)))
		return -EINVAL;
	e = restore_fids(s, json_object_get(j, "fids"), msize);
	if (e < 0)
		return e;
	if (buf_append(&s->in, partial, np) < 0 || buf_append(&s->out, out, no) < 0) {
		ws9p_fids_clear(s);
		buf_consume(&s->in, buf_len(&s->in));
		s->msize = WS9P_MSIZE_MAX;
		return -ENOMEM;
	}
	return 0;
}