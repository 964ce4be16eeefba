/* snapstore.c - workspace snapshots (snapstore.h): a content-addressed object store, one JSON
 * manifest per snapshot, a stat cache, revert by atomic renames.
 *
 * Trust boundary: the workspace is the guest's (root in the guest writes it while we read). Every
 * name inside it is resolved by wstree.h (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS, from the workspace root or a directory opened that way), so a planted
 * symlink or a swapped directory never takes a read or a write outside it; symlinks are recorded
 * as text. A file is copied only when it held still while read: fstat before and after (size,
 * mtime, ctime, inode) and a ctime older than the coarse clock at the start of the read (a change
 * within the same clock tick would not move the timestamps); else retried, then recorded as
 * unstable, never as a mix of two versions. The store is the host's (capsemd's or capsem-vm's
 * directory, never inside the workspace: checked by device and inode at open) and is trusted but
 * still parsed defensively (a damaged file is -EBADMSG, never a crash).
 *
 * Threads: any; one operation at a time per handle (a mutex), and one writer at a time per store
 * across handles and processes (flock on <store>/lock: exclusive to change the store or the
 * workspace, shared to read).
 */
#include "snapstore.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fdutil.h"
#include "jsonutil.h"
#include "macro.h"
#include "sha256.h"
#include "wstree.h"

#define IOBUF_SIZE (256u * 1024u)
#define HASH_ATTEMPTS 5
#define RACY_WINDOW_NS \
	1000000000LL		   /* a ctime this far past the clock is a clock step, not a race */
#define JSON_FILE_MAX (1ull << 30) /* a manifest of SNAPSTORE_ENTRIES_MAX entries fits */
#define OBJ_TMP "obj.tmp"
#define INDEX_FILE "index.json"
#define CACHE_FILE "statcache.json"
#define STORE_VERSION 1

enum ent_type { ENT_FILE, ENT_DIR, ENT_SYMLINK };

static const char *const type_names[] = { "file", "dir", "symlink" };

/* One entry of a manifest. */
struct ent {
	char *path;
	char *target; /* symlinks */
	uint64_t size;
	int64_t mtime_ns;
	uint32_t mode, uid, gid;
	uint8_t type;
	uint8_t unstable; /* content unknown: it changed (or could not be read) while copied */
	char sha[SHA256_HEX_LEN + 1];
};

struct manifest {
	struct ent *e;
	size_t n, cap;
};

struct snapstore {
	pthread_mutex_t mu;
	int storefd, objfd, snapsfd, tmpfd, lockfd;
	int rootfd; /* the workspace, O_PATH */
	unsigned auto_keep;
	uint8_t *iobuf;
};

/* ---- small helpers ---- */

static int64_t clock_ns(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t st_mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

static int64_t st_ctime_ns(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
}

static void iso_time(int64_t ns, char ret[32])
{
	time_t t = (time_t)(ns / 1000000000LL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(ret, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Byte order with '/' sorting before every other byte: the order wst_walk() visits a tree in
 * (parents first, names in byte order within a directory), so a subtree is contiguous. */
static int path_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned ca = (unsigned char)*a, cb = (unsigned char)*b;
		if (ca == cb) {
			if (!ca)
				return 0;
			continue;
		}
		unsigned va = ca == 0 ? 0 : ca == '/' ? 1 : ca + 1;
		unsigned vb = cb == 0 ? 0 : cb == '/' ? 1 : cb + 1;
		return va < vb ? -1 : 1;
	}
}

static int ent_cmp(const void *a, const void *b)
{
	return path_cmp(((const struct ent *)a)->path, ((const struct ent *)b)->path);
}

/* 1 when p is inside dir (dir "" = the root: everything). */
static int path_under(const char *p, const char *dir)
{
	size_t n = strlen(dir);
	return n == 0 || (strncmp(p, dir, n) == 0 && p[n] == '/');
}

static void manifest_done(struct manifest *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->e[i].path);
		free(m->e[i].target);
	}
	free(m->e);
	*m = (struct manifest){ 0 };
}

static struct ent *manifest_add(struct manifest *m)
{
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 256;
		struct ent *ne = realloc(m->e, nc * sizeof(*ne));
		if (!ne)
			return NULL;
		m->e = ne;
		m->cap = nc;
	}
	struct ent *e = &m->e[m->n++];
	*e = (struct ent){ 0 };
	return e;
}

/* The first index whose path is >= path. */
static size_t manifest_lower(const struct manifest *m, const char *path)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (path_cmp(m->e[mid].path, path) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static const struct ent *manifest_find(const struct manifest *m, const char *path)
{
	size_t i = manifest_lower(m, path);
	return i < m->n && streq(m->e[i].path, path) ? &m->e[i] : NULL;
}

/* ---- store files ---- */

static int json_read_at(int dirfd, const char *name, json_t **ret)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	/* sized from fstat (read_fd_small() would allocate the cap up front); a file that grew
	 * meanwhile is not ours to read: the store's files are replaced by rename, never grown */
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > JSON_FILE_MAX)
		return -EBADMSG;
	size_t len = (size_t)st.st_size;
	_cleanup_free_ char *text = malloc(len + 1);
	if (!text)
		return -ENOMEM;
	int r = fd_read_exact(fd, text, len);
	if (r < 0)
		return r == -EPIPE ? -EBADMSG : r;
	text[len] = 0;
	json_error_t err;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	if (!j)
		return -EBADMSG;
	*ret = j;
	return 0;
}

/* Write name in dirfd atomically (temporary name, rename); with sync, fsync'ed file and
 * directory. */
static int json_write_at(int dirfd, const char *name, const json_t *j, int sync)
{
	_cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
	char tmp[SNAPSTORE_NAME_MAX + 32];
	if (!text)
		return -ENOMEM;
	if ((size_t)snprintf(tmp, sizeof(tmp), ".%s.tmp", name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	_cleanup_close_ int fd =
		openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	int r = fd_write_all(fd, text, strlen(text));
	if (r == 0 && sync && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	if (sync && fsync(dirfd) < 0)
		return -errno;
	return 0;
}

static int obj_path(const char *sha, char ret[SHA256_HEX_LEN + 4])
{
	if (!sha256_hex_valid(sha))
		return -EBADMSG;
	snprintf(ret, SHA256_HEX_LEN + 4, "%.2s/%s", sha, sha);
	return 0;
}

static int obj_exists(struct snapstore *s, const char *sha)
{
	char p[SHA256_HEX_LEN + 4];
	struct stat st;
	return obj_path(sha, p) == 0 && fstatat(s->objfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISREG(st.st_mode);
}

/* The index: {"version", "next_seq", "snapshots": [SUMMARY...] oldest first}. A missing one is
 * an empty store. */
static int index_load(struct snapstore *s, json_t **ret)
{
	json_t *j = NULL;
	int r = json_read_at(s->storefd, INDEX_FILE, &j);
	if (r == -ENOENT) {
		j = json_pack("{s:i, s:i, s:[]}", "version", STORE_VERSION, "next_seq", 1,
			      "snapshots");
		if (!j)
			return -ENOMEM;
	} else if (r < 0) {
		return r;
	}
	json_t *snaps = json_object_get(j, "snapshots");
	size_t i;
	json_t *v;
	if (!json_is_array(snaps) || !json_is_integer(json_object_get(j, "next_seq")))
		goto bad;
	json_array_foreach(snaps, i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		if (!name || strlen(name) > SNAPSTORE_NAME_MAX ||
		    !json_is_integer(json_object_get(v, "seq")) || strchr(name, '/') ||
		    name[0] == '.')
			goto bad;
	}
	*ret = j;
	return 0;
bad:
	json_decref(j);
	return -EBADMSG;
}

static json_t *index_find(json_t *idx, const char *name, size_t *ret_i)
{
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(idx, "snapshots"), i,
			   v) if (streq(json_string_value(json_object_get(v, "name")), name))
	{
		if (ret_i)
			*ret_i = i;
		return v;
	}
	return NULL;
}

/* The snapshot with the highest seq, or NULL. */
static json_t *index_newest(json_t *idx)
{
	json_t *best = NULL, *v;
	size_t i;
	json_array_foreach(json_object_get(idx, "snapshots"), i,
			   v) if (!best || json_integer_value(json_object_get(v, "seq")) >
						   json_integer_value(json_object_get(best, "seq")))
		best = v;
	return best;
}

/* The snapshot called name, or the newest for NULL. -ENOENT. */
static int index_pick(json_t *idx, const char *name, json_t **ret)
{
	json_t *v = name ? index_find(idx, name, NULL) : index_newest(idx);
	if (!v)
		return -ENOENT;
	*ret = v;
	return 0;
}

static int u32_field(json_t *o, const char *k, uint32_t *ret)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)UINT32_MAX)
		return -EBADMSG;
	*ret = (uint32_t)json_integer_value(v);
	return 0;
}

static int ent_from_json(json_t *o, struct ent *e)
{
	const char *path = json_string_value(json_object_get(o, "path"));
	const char *type = json_string_value(json_object_get(o, "type"));
	json_t *size = json_object_get(o, "size"), *mt = json_object_get(o, "mtime_ns");
	if (!path || wst_path_check(path, 0) < 0 || !type)
		return -EBADMSG;
	if (streq(type, "file"))
		e->type = ENT_FILE;
	else if (streq(type, "dir"))
		e->type = ENT_DIR;
	else if (streq(type, "symlink"))
		e->type = ENT_SYMLINK;
	else
		return -EBADMSG;
	if (u32_field(o, "mode", &e->mode) < 0 || u32_field(o, "uid", &e->uid) < 0 ||
	    u32_field(o, "gid", &e->gid) < 0 || !json_is_integer(mt) ||
	    (size && (!json_is_integer(size) || json_integer_value(size) < 0)))
		return -EBADMSG;
	e->size = size ? (uint64_t)json_integer_value(size) : 0;
	e->mtime_ns = json_integer_value(mt);
	e->unstable = json_is_true(json_object_get(o, "unstable"));
	if (e->type == ENT_FILE && !e->unstable) {
		const char *sha = json_string_value(json_object_get(o, "sha256"));
		if (!sha || !sha256_hex_valid(sha))
			return -EBADMSG;
		memcpy(e->sha, sha, sizeof(e->sha));
	}
	if (e->type == ENT_SYMLINK) {
		json_t *t = json_object_get(o, "target");
		if (!json_is_string(t) || json_string_length(t) > WST_PATH_MAX ||
		    strlen(json_string_value(t)) != json_string_length(t) ||
		    !(e->target = strdup(json_string_value(t))))
			return json_is_string(t) ? -ENOMEM : -EBADMSG;
	}
	if (!(e->path = strdup(path)))
		return -ENOMEM;
	return 0;
}

/* Load snapshot name's manifest, sorted by path_cmp. */
static int manifest_load(struct snapstore *s, const char *name, struct manifest *ret)
{
	char fn[SNAPSTORE_NAME_MAX + 8];
	_cleanup_json_ json_t *j = NULL;
	struct manifest m = { 0 };
	snprintf(fn, sizeof(fn), "%s.json", name);
	int r = json_read_at(s->snapsfd, fn, &j);
	if (r < 0)
		return r == -ENOENT ? -EBADMSG
				    : r; /* listed in the index: its manifest must exist */
	json_t *arr = json_object_get(j, "entries");
	if (!json_is_array(arr) || json_array_size(arr) > SNAPSTORE_ENTRIES_MAX)
		return -EBADMSG;
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
	{
		struct ent *e = manifest_add(&m);
		if (!e) {
			r = -ENOMEM;
			break;
		}
		r = ent_from_json(v, e);
		if (r < 0) {
			free(e->path);
			free(e->target);
			m.n--;
			break;
		}
	}
	if (r < 0) {
		manifest_done(&m);
		return r;
	}
	if (m.n)
		qsort(m.e, m.n, sizeof(*m.e), ent_cmp);
	*ret = m;
	return 0;
}

static json_t *ent_to_json(const struct ent *e)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "path", e->path, "type",
			      type_names[e->type], "mode", (json_int_t)e->mode, "uid",
			      (json_int_t)e->uid, "gid", (json_int_t)e->gid, "mtime_ns",
			      (json_int_t)e->mtime_ns);
	if (!o)
		return NULL;
	int r = 0;
	if (e->type != ENT_DIR)
		r |= json_object_set_new(o, "size", json_integer((json_int_t)e->size));
	if (e->type == ENT_FILE && e->unstable)
		r |= json_object_set_new(o, "unstable", json_true());
	else if (e->type == ENT_FILE)
		r |= json_object_set_new(o, "sha256", json_string(e->sha));
	if (e->type == ENT_SYMLINK)
		r |= json_object_set_new(o, "target", json_string(e->target));
	if (r) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The tree hash: paths, types, modes and contents (not times), in walk order. */
static int tree_hash(const struct manifest *m, char ret[SHA256_HEX_LEN + 1])
{
	struct sha256 h = { 0 };
	int r = sha256_init(&h);
	for (size_t i = 0; r == 0 && i < m->n; i++) {
		const struct ent *e = &m->e[i];
		char mode[16];
		snprintf(mode, sizeof(mode), "%o", e->mode & 07777);
		r = sha256_field_str(&h, e->path);
		if (r == 0)
			r = sha256_field_str(&h, type_names[e->type]);
		if (r == 0)
			r = sha256_field_str(&h, mode);
		if (r == 0)
			r = sha256_field_str(&h, e->type == ENT_FILE	  ? e->sha
						 : e->type == ENT_SYMLINK ? e->target
									  : "");
	}
	if (r == 0)
		r = sha256_final_hex(&h, ret);
	sha256_done(&h);
	return r;
}

/* ---- the stat cache: {"path": [dev, ino, size, mtime_ns, ctime_ns, "sha256"]} ---- */

static json_t *cache_load(struct snapstore *s)
{
	json_t *j = NULL;
	/* a missing or damaged cache is an empty one: it only saves work */
	if (json_read_at(s->storefd, CACHE_FILE, &j) < 0 || !json_is_object(j)) {
		json_decref(j);
		return json_object();
	}
	return j;
}

/* The cached sha256 of a file with this stat, or NULL. */
static const char *cache_get(json_t *cache, const char *path, const struct stat *st)
{
	json_t *a = json_object_get(cache, path);
	if (!json_is_array(a) || json_array_size(a) != 6)
		return NULL;
	const char *sha = json_string_value(json_array_get(a, 5));
	if ((uint64_t)json_integer_value(json_array_get(a, 0)) != (uint64_t)st->st_dev ||
	    (uint64_t)json_integer_value(json_array_get(a, 1)) != (uint64_t)st->st_ino ||
	    json_integer_value(json_array_get(a, 2)) != (json_int_t)st->st_size ||
	    json_integer_value(json_array_get(a, 3)) != st_mtime_ns(st) ||
	    json_integer_value(json_array_get(a, 4)) != st_ctime_ns(st) || !sha ||
	    !sha256_hex_valid(sha))
		return NULL;
	return sha;
}

static int cache_put(json_t *cache, const char *path, const struct stat *st, const char *sha)
{
	json_t *a = json_pack("[I, I, I, I, I, s]", (json_int_t)st->st_dev, (json_int_t)st->st_ino,
			      (json_int_t)st->st_size, (json_int_t)st_mtime_ns(st),
			      (json_int_t)st_ctime_ns(st), sha);
	return a && json_object_set_new(cache, path, a) == 0 ? 0 : -ENOMEM;
}

/* ---- reading a file that may change under us ---- */

struct hashres {
	char sha[SHA256_HEX_LEN + 1];
	struct stat st; /* as it was while read */
	int new_obj;	/* stored a new object */
	uint64_t read;	/* bytes read, retries included */
};

static int same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       st_mtime_ns(a) == st_mtime_ns(b) && st_ctime_ns(a) == st_ctime_ns(b);
}

/* Wait one tick of the coarse clock file times come from (a file changed within the current tick
 * cannot be told apart from one changing while we read it). */
static void wait_tick(void)
{
	struct timespec res = { 0, 4000000 };
	clock_getres(CLOCK_REALTIME_COARSE, &res);
	if (res.tv_sec > 0 || res.tv_nsec > 20000000)
		res = (struct timespec){ 0, 20000000 };
	if (res.tv_nsec < 1000000)
		res.tv_nsec = 1000000;
	nanosleep(&res, NULL);
}

/* Move the finished temporary object (s->tmpfd/OBJ_TMP) to objects/ab/<sha> unless that exists. */
static int obj_commit(struct snapstore *s, const char *sha, int *ret_new)
{
	char p[SHA256_HEX_LEN + 4];
	int r = obj_path(sha, p);
	if (r < 0)
		return r;
	if (obj_exists(s, sha)) {
		unlinkat(s->tmpfd, OBJ_TMP, 0);
		*ret_new = 0;
		return 0;
	}
	p[2] = 0;
	if (mkdirat(s->objfd, p, 0700) < 0 && errno != EEXIST)
		return -errno;
	p[2] = '/';
	if (renameat(s->tmpfd, OBJ_TMP, s->objfd, p) < 0)
		return -errno;
	*ret_new = 1;
	return 0;
}

/* Hash the regular file name in dirfd (a directory below the workspace root); with store, copy it
 * into the object store as well. 0 with *ret; -ENOENT when it vanished; -EAGAIN when it kept
 * changing (HASH_ATTEMPTS reads); -EINVAL when it is no longer a regular file, -ELOOP when it was
 * replaced by a symlink; other -errno. */
static int hash_file(struct snapstore *s, int dirfd, const char *name, int store,
		     struct hashres *ret)
{
	uint64_t read_total = 0;
	int r = -EAGAIN;
	for (int attempt = 0; attempt < HASH_ATTEMPTS; attempt++) {
		if (attempt)
			wait_tick();
		int64_t t0 = clock_ns(CLOCK_REALTIME_COARSE);
		/* O_NONBLOCK: a FIFO swapped in meanwhile must not block the open */
		_cleanup_close_ int fd = wst_open(dirfd, name, O_RDONLY | O_NONBLOCK, 0);
		if (fd < 0)
			return fd;
		struct stat st1, st2 = { 0 };
		if (fstat(fd, &st1) < 0)
			return -errno;
		if (!S_ISREG(st1.st_mode))
			return -EINVAL;
		_cleanup_close_ int tfd = -1;
		if (store) {
			unlinkat(s->tmpfd, OBJ_TMP, 0); /* a crash's leftover */
			tfd = openat(s->tmpfd, OBJ_TMP,
				     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0400);
			if (tfd < 0)
				return -errno;
		}
		struct sha256 h = { 0 };
		r = sha256_init(&h);
		uint64_t total = 0;
		while (r == 0) {
			ssize_t k = read(fd, s->iobuf, IOBUF_SIZE);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r = -errno;
				break;
			}
			if (k == 0)
				break;
			total += (uint64_t)k;
			r = sha256_update(&h, s->iobuf, (size_t)k);
			if (r == 0 && store)
				r = fd_write_all(tfd, s->iobuf, (size_t)k);
			if (total > (uint64_t)st1.st_size)
				break; /* growing: not stable */
		}
		read_total += total;
		if (r == 0 && fstat(fd, &st2) < 0)
			r = -errno;
		int64_t ct = r == 0 ? st_ctime_ns(&st2) : 0;
		int stable = r == 0 && same_stat(&st1, &st2) && total == (uint64_t)st1.st_size &&
			     (ct < t0 || ct - t0 >= RACY_WINDOW_NS);
		if (stable)
			r = sha256_final_hex(&h, ret->sha);
		sha256_done(&h);
		if (r < 0 || !stable) {
			if (store)
				unlinkat(s->tmpfd, OBJ_TMP, 0);
			if (r < 0 && r != -EAGAIN)
				return r;
			r = -EAGAIN;
			continue;
		}
		ret->new_obj = 0;
		if (store) {
			r = obj_commit(s, ret->sha, &ret->new_obj);
			if (r < 0) {
				unlinkat(s->tmpfd, OBJ_TMP, 0);
				return r;
			}
		}
		ret->st = st1;
		ret->read = read_total;
		return 0;
	}
	ret->read = read_total;
	return r;
}

/* Errors of reading a file of the workspace (recorded per file), as opposed to the store's. */
static int source_error(int r)
{
	return r == -EAGAIN || r == -EACCES || r == -EPERM || r == -ELOOP || r == -EINVAL ||
	       r == -ENXIO || r == -EIO || r == -ETXTBSY || r == -ENOTDIR || r == -EXDEV;
}

/* ---- open, lock ---- */

int snapstore_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > SNAPSTORE_NAME_MAX)
		return 0;
	if (strncmp(name, SNAPSTORE_AUTO_PREFIX, strlen(SNAPSTORE_AUTO_PREFIX)) == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		int alnum =
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return 0;
	}
	return 1;
}

/* 1 when the directory fd, or any directory above it up to "/", is (dev, ino); 0 if not; -errno. */
static int dir_is_under(int fd, dev_t dev, ino_t ino)
{
	_cleanup_close_ int cur = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return -errno;
	for (int depth = 0; depth < 4096; depth++) {
		struct stat st, pst;
		if (fstat(cur, &st) < 0)
			return -errno;
		if (st.st_dev == dev && st.st_ino == ino)
			return 1;
		int up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (up < 0)
			return -errno;
		if (fstat(up, &pst) < 0) {
			close(up);
			return -errno;
		}
		close(cur);
		cur = up;
		if (pst.st_dev == st.st_dev && pst.st_ino == st.st_ino)
			return 0; /* "/" */
	}
	return -ELOOP;
}

/* The nearest existing directory at or above path (O_PATH). */
static int open_existing_ancestor(const char *path)
{
	_cleanup_free_ char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (;;) {
		int fd = open(*p ? p : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			return fd >= 0 ? fd : -errno;
		char *slash = strrchr(p, '/');
		if (!slash)
			*p = 0;
		else if (slash == p)
			p[1] = 0;
		else
			*slash = 0;
	}
}

static int subdir(int storefd, const char *name)
{
	if (mkdirat(storefd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(storefd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

void snapstore_free(struct snapstore *s)
{
	if (!s)
		return;
	safe_close(s->storefd);
	safe_close(s->objfd);
	safe_close(s->snapsfd);
	safe_close(s->tmpfd);
	safe_close(s->lockfd);
	safe_close(s->rootfd);
	free(s->iobuf);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int snapstore_open(const char *store_dir, const char *workspace_dir, const struct snapstore_opts *o,
		   struct snapstore **ret)
{
	_cleanup_(snapstore_freep) struct snapstore *s = calloc(1, sizeof(*s));
	struct stat ws, ss;
	int r;
	if (!s)
		return -ENOMEM;
	s->storefd = s->objfd = s->snapsfd = s->tmpfd = s->lockfd = s->rootfd = -1;
	pthread_mutex_init(&s->mu, NULL);
	s->auto_keep = o && o->auto_keep ? o->auto_keep : SNAPSTORE_AUTO_KEEP_DEFAULT;
	if (!(s->iobuf = malloc(IOBUF_SIZE)))
		return -ENOMEM;
	s->rootfd = open(workspace_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->rootfd < 0)
		return -errno;
	if (fstat(s->rootfd, &ws) < 0)
		return -errno;
	/* the store must not be inside the workspace: check before creating anything */
	{
		_cleanup_close_ int anc = open_existing_ancestor(store_dir);
		if (anc < 0)
			return anc;
		r = dir_is_under(anc, ws.st_dev, ws.st_ino);
		if (r != 0)
			return r < 0 ? r : -EINVAL;
	}
	/* only the store itself is made: a parent that went away (a VM deleted meanwhile) is an
	 * error, not something to re-create */
	if (mkdir(store_dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	s->storefd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->storefd < 0)
		return -errno;
	if (fstat(s->storefd, &ss) < 0)
		return -errno;
	r = dir_is_under(s->storefd, ws.st_dev, ws.st_ino);
	if (r == 0)
		r = dir_is_under(s->rootfd, ss.st_dev, ss.st_ino);
	if (r != 0)
		return r < 0 ? r : -EINVAL;
	if ((s->objfd = subdir(s->storefd, "objects")) < 0)
		return s->objfd;
	if ((s->snapsfd = subdir(s->storefd, "snaps")) < 0)
		return s->snapsfd;
	if ((s->tmpfd = subdir(s->storefd, "tmp")) < 0)
		return s->tmpfd;
	s->lockfd = openat(s->storefd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lockfd < 0)
		return -errno;
	*ret = TAKE_PTR(s);
	return 0;
}

/* Take the handle's mutex and the store's flock (exclusive to change, shared to read). */
static int begin(struct snapstore *s, int excl)
{
	pthread_mutex_lock(&s->mu);
	while (flock(s->lockfd, excl ? LOCK_EX : LOCK_SH) < 0) {
		if (errno != EINTR) {
			int r = -errno;
			pthread_mutex_unlock(&s->mu);
			return r;
		}
	}
	return 0;
}

static void end(struct snapstore *s)
{
	flock(s->lockfd, LOCK_UN);
	pthread_mutex_unlock(&s->mu);
}

/* A string array capped at SNAPSTORE_LIST_MAX; *trunc set when something was left out. */
static int list_push(json_t *arr, json_t *v, int *trunc)
{
	if (!v)
		return -ENOMEM;
	if (json_array_size(arr) >= SNAPSTORE_LIST_MAX) {
		json_decref(v);
		*trunc = 1;
		return 0;
	}
	return json_array_append_new(arr, v) < 0 ? -ENOMEM : 0;
}

/* ---- create ---- */

struct createwalk {
	struct snapstore *s;
	struct manifest m;
	json_t *old_cache, *new_cache, *unstable, *unreadable;
	uint64_t hashed_files, hashed_bytes, cached_files, new_objects, new_object_bytes, special;
	uint64_t files, dirs, symlinks, bytes;
	int trunc;
};

static int create_cb(const struct wst_entry *we, void *ud)
{
	struct createwalk *w = ud;
	const struct stat *st = &we->st;
	int r;
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode)) {
		w->special++;
		return 0;
	}
	if (w->m.n >= SNAPSTORE_ENTRIES_MAX)
		return -E2BIG;
	struct ent *e = manifest_add(&w->m);
	if (!e || !(e->path = strdup(we->path)))
		return -ENOMEM;
	e->mode = st->st_mode & 07777;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->mtime_ns = st_mtime_ns(st);
	if (S_ISDIR(st->st_mode)) {
		e->type = ENT_DIR;
		w->dirs++;
		return 0;
	}
	if (S_ISLNK(st->st_mode)) {
		char t[WST_PATH_MAX + 2];
		ssize_t k = readlinkat(we->dirfd, we->name, t, sizeof(t));
		if (k < 0 && errno == ENOENT) {
			free(e->path);
			w->m.n--;
			return 0;
		}
		if (k < 0)
			return -errno;
		if ((size_t)k >= sizeof(t) - 1)
			return -ENAMETOOLONG;
		t[k] = 0;
		e->type = ENT_SYMLINK;
		e->size = (uint64_t)k;
		e->mode = 0777;
		if (!(e->target = strdup(t)))
			return -ENOMEM;
		w->symlinks++;
		return 0;
	}
	e->type = ENT_FILE;
	e->size = (uint64_t)st->st_size;
	const char *sha = cache_get(w->old_cache, we->path, st);
	if (sha && obj_exists(w->s, sha)) {
		memcpy(e->sha, sha, sizeof(e->sha));
		w->cached_files++;
		w->files++;
		w->bytes += e->size;
		return cache_put(w->new_cache, we->path, st, sha);
	}
	struct hashres h = { 0 };
	r = hash_file(w->s, we->dirfd, we->name, 1, &h);
	w->hashed_bytes += h.read;
	if (r == -ENOENT) { /* gone meanwhile */
		free(e->path);
		w->m.n--;
		return 0;
	}
	w->hashed_files++;
	w->files++;
	if (r < 0 && !source_error(r))
		return r; /* the store's side failed (no space, ...): no snapshot */
	if (r < 0) {
		e->unstable = 1;
		return list_push(r == -EAGAIN ? w->unstable : w->unreadable, json_string(we->path),
				 &w->trunc);
	}
	memcpy(e->sha, h.sha, sizeof(e->sha));
	e->size = (uint64_t)h.st.st_size;
	e->mode = h.st.st_mode & 07777;
	e->uid = h.st.st_uid;
	e->gid = h.st.st_gid;
	e->mtime_ns = st_mtime_ns(&h.st);
	w->bytes += e->size;
	if (h.new_obj) {
		w->new_objects++;
		w->new_object_bytes += e->size;
	}
	return cache_put(w->new_cache, we->path, &h.st, h.sha);
}

static void createwalk_done(struct createwalk *w)
{
	manifest_done(&w->m);
	json_decref(w->old_cache);
	json_decref(w->new_cache);
	json_decref(w->unstable);
	json_decref(w->unreadable);
}

/* Remove snapshot at index position i: from the index (not saved here) and its manifest. */
static void drop_snapshot(struct snapstore *s, json_t *idx, size_t i)
{
	json_t *arr = json_object_get(idx, "snapshots");
	char fn[SNAPSTORE_NAME_MAX + 8];
	snprintf(fn, sizeof(fn), "%s.json",
		 json_string_value(json_object_get(json_array_get(arr, i), "name")));
	unlinkat(s->snapsfd, fn, 0);
	json_array_remove(arr, i);
}

static int compact_locked(struct snapstore *s, json_t **ret);

int snapstore_create(struct snapstore *s, const char *name, json_t **ret)
{
	if (name && !snapstore_name_valid(name))
		return -EINVAL;
	int r = begin(s, 1);
	if (r < 0)
		return r;
	int64_t start = clock_ns(CLOCK_MONOTONIC);
	_cleanup_json_ json_t *idx = NULL, *man = NULL, *res = NULL, *pruned = NULL;
	struct createwalk w = { .s = s };
	char tree[SHA256_HEX_LEN + 1], aname[32], iso[32];
	uint64_t freed = 0;
	r = index_load(s, &idx);
	if (r < 0)
		goto out;
	if (name && index_find(idx, name, NULL)) {
		r = -EEXIST;
		goto out;
	}
	w.old_cache = cache_load(s);
	w.new_cache = json_object();
	w.unstable = json_array();
	w.unreadable = json_array();
	pruned = json_array();
	if (!w.old_cache || !w.new_cache || !w.unstable || !w.unreadable || !pruned) {
		r = -ENOMEM;
		goto out;
	}
	r = wst_walk(s->rootfd, "", create_cb, &w);
	if (r < 0)
		goto out;
	/* the cache is saved whether or not a snapshot is made: it only records what was read */
	json_write_at(s->storefd, CACHE_FILE, w.new_cache, 0);
	r = tree_hash(&w.m, tree);
	if (r < 0)
		goto out;
	json_t *newest = index_newest(idx);
	int any_unstable = json_array_size(w.unstable) || json_array_size(w.unreadable);
	res = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:O}", "hashed_files",
			(json_int_t)w.hashed_files, "hashed_bytes", (json_int_t)w.hashed_bytes,
			"cached_files", (json_int_t)w.cached_files, "new_objects",
			(json_int_t)w.new_objects, "new_object_bytes",
			(json_int_t)w.new_object_bytes, "skipped_special", (json_int_t)w.special,
			"unstable", w.unstable, "unreadable", w.unreadable);
	if (!res) {
		r = -ENOMEM;
		goto out;
	}
	if (!name && newest && !any_unstable &&
	    streq(strempty(json_string_value(json_object_get(newest, "tree"))), tree)) {
		json_object_set_new(res, "created", json_false());
		json_object_set_new(res, "reason", json_string("unchanged"));
		json_object_set(res, "newest", json_object_get(newest, "name"));
		goto done;
	}
	json_int_t seq = json_integer_value(json_object_get(idx, "next_seq"));
	if (seq < 1)
		seq = 1;
	if (!name) {
		snprintf(aname, sizeof(aname), SNAPSTORE_AUTO_PREFIX "%06lld", (long long)seq);
		if (index_find(idx, aname, NULL)) {
			r = -EBADMSG;
			goto out;
		}
	}
	const char *sname = name ? name : aname;
	int64_t now = clock_ns(CLOCK_REALTIME);
	iso_time(now, iso);
	json_t *summary = json_pack(
		"{s:s, s:b, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "name", sname, "auto",
		!name, "seq", seq, "time", iso, "time_ns", (json_int_t)now, "files",
		(json_int_t)w.files, "dirs", (json_int_t)w.dirs, "symlinks", (json_int_t)w.symlinks,
		"bytes", (json_int_t)w.bytes, "unstable",
		(json_int_t)json_array_size(w.unstable) + (json_int_t)json_array_size(w.unreadable),
		"tree", tree);
	json_t *entries = json_array();
	if (!summary || !entries || !(man = json_deep_copy(summary)) ||
	    json_object_set_new(man, "version", json_integer(STORE_VERSION)) < 0 ||
	    json_object_set_new(man, "entries", entries) < 0) {
		json_decref(summary);
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < w.m.n; i++)
		if (json_array_append_new(entries, ent_to_json(&w.m.e[i])) < 0) {
			json_decref(summary);
			r = -ENOMEM;
			goto out;
		}
	/* objects reach the disk before the manifest naming them */
	if (w.new_objects && syncfs(s->storefd) < 0) {
		json_decref(summary);
		r = -errno;
		goto out;
	}
	char fn[SNAPSTORE_NAME_MAX + 8];
	snprintf(fn, sizeof(fn), "%s.json", sname);
	r = json_write_at(s->snapsfd, fn, man, 1);
	if (r < 0) {
		json_decref(summary);
		goto out;
	}
	json_array_append_new(json_object_get(idx, "snapshots"), summary);
	json_object_set_new(idx, "next_seq", json_integer(seq + 1));
	/* the ring: the oldest automatic snapshots past auto_keep go */
	if (!name) {
		json_t *arr = json_object_get(idx, "snapshots");
		size_t autos = 0, i;
		json_t *v;
		json_array_foreach(arr, i, v) autos += json_is_true(json_object_get(v, "auto"));
		while (autos > s->auto_keep) {
			size_t oldest = SIZE_MAX;
			json_array_foreach(
				arr, i,
				v) if (json_is_true(json_object_get(v, "auto")) &&
				       (oldest == SIZE_MAX ||
					json_integer_value(json_object_get(v, "seq")) <
						json_integer_value(json_object_get(
							json_array_get(arr, oldest), "seq"))))
				oldest = i;
			json_array_append(pruned,
					  json_object_get(json_array_get(arr, oldest), "name"));
			drop_snapshot(s, idx, oldest);
			autos--;
		}
	}
	r = json_write_at(s->storefd, INDEX_FILE, idx, 1);
	if (r < 0) {
		unlinkat(s->snapsfd, fn, 0);
		goto out;
	}
	if (json_array_size(pruned)) {
		_cleanup_json_ json_t *c = NULL;
		if (compact_locked(s, &c) == 0)
			freed = (uint64_t)json_integer_value(json_object_get(c, "freed_bytes"));
	}
	json_object_set_new(res, "created", json_true());
	json_object_set(res, "snapshot", summary);
done:
	json_object_set(res, "pruned", pruned);
	json_object_set_new(res, "freed_bytes", json_integer((json_int_t)freed));
	json_object_set_new(res, "elapsed_ms",
			    json_real((double)(clock_ns(CLOCK_MONOTONIC) - start) / 1e6));
	*ret = TAKE_PTR(res);
	r = 0;
out:
	createwalk_done(&w);
	end(s);
	return r;
}

/* ---- list, delete ---- */

int snapstore_list(struct snapstore *s, json_t **ret)
{
	int r = begin(s, 0);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *idx = NULL;
	r = index_load(s, &idx);
	end(s);
	if (r < 0)
		return r;
	json_t *arr = json_array(), *snaps = json_object_get(idx, "snapshots");
	/* newest first: the index is in creation order */
	for (size_t i = json_array_size(snaps); arr && i > 0; i--)
		json_array_append(arr, json_array_get(snaps, i - 1));
	json_t *res =
		json_pack("{s:o, s:I}", "snapshots", arr, "auto_keep", (json_int_t)s->auto_keep);
	if (!res)
		return -ENOMEM;
	*ret = res;
	return 0;
}

int snapstore_delete(struct snapstore *s, const char *name)
{
	if (!name || strlen(name) > SNAPSTORE_NAME_MAX || strchr(name, '/') || name[0] == '.')
		return -ENOENT;
	int r = begin(s, 1);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *idx = NULL;
	size_t i;
	r = index_load(s, &idx);
	if (r == 0 && !index_find(idx, name, &i))
		r = -ENOENT;
	if (r == 0) {
		json_array_remove(json_object_get(idx, "snapshots"), i);
		r = json_write_at(s->storefd, INDEX_FILE, idx, 1);
	}
	if (r == 0) {
		char fn[SNAPSTORE_NAME_MAX + 8];
		snprintf(fn, sizeof(fn), "%s.json", name);
		unlinkat(s->snapsfd, fn, 0);
	}
	end(s);
	return r;
}

/* ---- compact ---- */

static int compact_locked(struct snapstore *s, json_t **ret)
{
	_cleanup_json_ json_t *refs = json_object();
	_cleanup_closedir_ DIR *d = NULL;
	uint64_t removed = 0, kept = 0, freed = 0;
	int r = 0;
	if (!refs)
		return -ENOMEM;
	/* every manifest on disk counts, listed in the index or not */
	int fd = openat(s->snapsfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		r = -errno;
		safe_close(fd);
		return r;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (de->d_name[0] == '.' || n < 6 || !streq(de->d_name + n - 5, ".json"))
			continue;
		char name[SNAPSTORE_NAME_MAX + 1];
		if (n - 5 > SNAPSTORE_NAME_MAX)
			continue;
		memcpy(name, de->d_name, n - 5);
		name[n - 5] = 0;
		struct manifest m;
		r = manifest_load(s, name, &m);
		if (r < 0)
			return r; /* never delete objects on a partial view of the references */
		for (size_t i = 0; i < m.n; i++)
			if (m.e[i].type == ENT_FILE && !m.e[i].unstable &&
			    json_object_set_new(refs, m.e[i].sha, json_true()) < 0)
				r = -ENOMEM;
		manifest_done(&m);
		if (r < 0)
			return r;
	}
	/* objects/ab/<sha> */
	for (int hi = 0; hi < 256; hi++) {
		char sub[3];
		snprintf(sub, sizeof(sub), "%02x", hi);
		int sfd = openat(s->objfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (sfd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		_cleanup_closedir_ DIR *sd = fdopendir(sfd);
		if (!sd) {
			close(sfd);
			return -errno;
		}
		while ((de = readdir(sd))) {
			if (de->d_name[0] == '.')
				continue;
			if (json_object_get(refs, de->d_name)) {
				kept++;
				continue;
			}
			struct stat st;
			if (fstatat(sfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    unlinkat(sfd, de->d_name, 0) == 0) {
				removed++;
				freed += (uint64_t)st.st_size;
			}
		}
	}
	/* temporary files: every writer holds the exclusive lock we hold */
	unlinkat(s->tmpfd, OBJ_TMP, 0);
	json_t *res = json_pack("{s:I, s:I, s:I}", "removed_objects", (json_int_t)removed,
				"kept_objects", (json_int_t)kept, "freed_bytes", (json_int_t)freed);
	if (!res)
		return -ENOMEM;
	*ret = res;
	return 0;
}

int snapstore_compact(struct snapstore *s, json_t **ret)
{
	int r = begin(s, 1);
	if (r < 0)
		return r;
	r = compact_locked(s, ret);
	end(s);
	return r;
}

/* ---- changes ---- */

struct changewalk {
	struct snapstore *s;
	const struct manifest *m;
	uint8_t *seen;
	json_t *cache, *added, *modified;
	uint64_t n_added, n_modified, hashed;
	int trunc;
};

static json_t *change_json(const char *path, int type, uint64_t size)
{
	return json_pack("{s:s, s:s, s:I}", "path", path, "type", type_names[type], "size",
			 (json_int_t)size);
}

/* Is the current regular file (dirfd/name, stat st) the snapshot's entry e? 1, 0, or -errno. */
static int file_same(struct snapstore *s, json_t *cache, const struct ent *e, int dirfd,
		     const char *name, const char *path, const struct stat *st, uint64_t *hashed)
{
	if (e->type != ENT_FILE || e->unstable || (uint64_t)st->st_size != e->size ||
	    (st->st_mode & 07777) != e->mode)
		return 0;
	const char *sha = cache ? cache_get(cache, path, st) : NULL;
	if (sha)
		return streq(sha, e->sha);
	struct hashres h = { 0 };
	int r = hash_file(s, dirfd, name, 0, &h);
	(*hashed)++;
	if (r == -EAGAIN || r == -EINVAL || r == -ELOOP || r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	return streq(h.sha, e->sha);
}

static int change_cb(const struct wst_entry *we, void *ud)
{
	struct changewalk *w = ud;
	const struct stat *st = &we->st;
	int type = S_ISREG(st->st_mode)	  ? ENT_FILE
		   : S_ISDIR(st->st_mode) ? ENT_DIR
		   : S_ISLNK(st->st_mode) ? ENT_SYMLINK
					  : -1;
	if (type < 0)
		return 0;
	uint64_t size = type == ENT_DIR ? 0 : (uint64_t)st->st_size;
	size_t i = manifest_lower(w->m, we->path);
	const struct ent *e = i < w->m->n && streq(w->m->e[i].path, we->path) ? &w->m->e[i] : NULL;
	if (!e) {
		w->n_added++;
		return list_push(w->added, change_json(we->path, type, size), &w->trunc);
	}
	w->seen[i] = 1;
	int same;
	if (e->type != type) {
		same = 0;
	} else if (type == ENT_DIR) {
		same = (st->st_mode & 07777) == e->mode;
	} else if (type == ENT_SYMLINK) {
		char t[WST_PATH_MAX + 2];
		ssize_t k = readlinkat(we->dirfd, we->name, t, sizeof(t));
		same = k >= 0 && (size_t)k < sizeof(t) - 1 && (t[k] = 0, streq(t, e->target));
	} else {
		same = file_same(w->s, w->cache, e, we->dirfd, we->name, we->path, st, &w->hashed);
		if (same < 0)
			return same;
	}
	if (same)
		return 0;
	w->n_modified++;
	json_t *c = change_json(we->path, type, size);
	if (c && e->type != ENT_DIR)
		json_object_set_new(c, "old_size", json_integer((json_int_t)e->size));
	if (c && e->type != type)
		json_object_set_new(c, "old_type", json_string(type_names[e->type]));
	return list_push(w->modified, c, &w->trunc);
}

int snapstore_changes(struct snapstore *s, const char *snap, json_t **ret)
{
	int r = begin(s, 0);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *idx = NULL, *res = NULL, *deleted = NULL;
	struct manifest m = { 0 };
	struct changewalk w = { .s = s, .m = &m };
	json_t *pick = NULL;
	uint64_t n_deleted = 0;
	r = index_load(s, &idx);
	if (r == 0)
		r = index_pick(idx, snap, &pick);
	if (r == 0)
		r = manifest_load(s, json_string_value(json_object_get(pick, "name")), &m);
	if (r < 0)
		goto out;
	w.seen = calloc(m.n ? m.n : 1, 1);
	w.cache = cache_load(s);
	w.added = json_array();
	w.modified = json_array();
	deleted = json_array();
	if (!w.seen || !w.cache || !w.added || !w.modified || !deleted) {
		r = -ENOMEM;
		goto out;
	}
	r = wst_walk(s->rootfd, "", change_cb, &w);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < m.n && r == 0; i++)
		if (!w.seen[i]) {
			n_deleted++;
			r = list_push(deleted, change_json(m.e[i].path, m.e[i].type, m.e[i].size),
				      &w.trunc);
		}
	if (r < 0)
		goto out;
	res = json_pack("{s:O, s:O, s:O, s:O, s:{s:I, s:I, s:I}, s:b, s:I}", "snapshot",
			json_object_get(pick, "name"), "added", w.added, "modified", w.modified,
			"deleted", deleted, "counts", "added", (json_int_t)w.n_added, "modified",
			(json_int_t)w.n_modified, "deleted", (json_int_t)n_deleted, "truncated",
			w.trunc, "hashed_files", (json_int_t)w.hashed);
	if (!res)
		r = -ENOMEM;
	else
		*ret = TAKE_PTR(res);
out:
	end(s);
	manifest_done(&m);
	free(w.seen);
	json_decref(w.cache);
	json_decref(w.added);
	json_decref(w.modified);
	return r;
}

/* ---- history ---- */

int snapstore_history(struct snapstore *s, const char *path, json_t **ret)
{
	if (wst_path_check(path, 0) < 0)
		return -EINVAL;
	int r = begin(s, 0);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *idx = NULL, *versions = json_array();
	r = index_load(s, &idx);
	if (r == 0 && !versions)
		r = -ENOMEM;
	json_t *snaps = json_object_get(idx, "snapshots");
	/* oldest first, to tell each version from the one before; reversed at the end */
	json_t *prev = NULL;
	for (size_t i = 0; r == 0 && i < json_array_size(snaps); i++) {
		json_t *sum = json_array_get(snaps, i);
		struct manifest m;
		r = manifest_load(s, json_string_value(json_object_get(sum, "name")), &m);
		if (r < 0)
			break;
		const struct ent *e = manifest_find(&m, path);
		json_t *v =
			json_pack("{s:O, s:O, s:O, s:b}", "snapshot", json_object_get(sum, "name"),
				  "auto", json_object_get(sum, "auto"), "time",
				  json_object_get(sum, "time"), "present", e != NULL);
		if (v && e) {
			json_object_set_new(v, "type", json_string(type_names[e->type]));
			json_object_set_new(v, "mode", json_integer(e->mode));
			if (e->type != ENT_DIR)
				json_object_set_new(v, "size", json_integer((json_int_t)e->size));
			if (e->type == ENT_FILE && !e->unstable)
				json_object_set_new(v, "sha256", json_string(e->sha));
			if (e->type == ENT_FILE && e->unstable)
				json_object_set_new(v, "unstable", json_true());
			if (e->type == ENT_SYMLINK)
				json_object_set_new(v, "target", json_string(e->target));
		}
		manifest_done(&m);
		if (!v) {
			r = -ENOMEM;
			break;
		}
		int changed = !prev;
		if (prev) {
			static const char *const keys[] = { "present", "type",	 "mode",    "size",
							    "sha256",  "target", "unstable" };
			for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
				json_t *a = json_object_get(prev, keys[k]),
				       *b = json_object_get(v, keys[k]);
				if ((a == NULL) != (b == NULL) || (a && !json_equal(a, b)))
					changed = 1;
			}
		}
		json_object_set_new(v, "changed", json_boolean(changed));
		json_array_append_new(versions, v);
		prev = v;
	}
	end(s);
	if (r < 0)
		return r;
	json_t *out = json_array();
	for (size_t i = json_array_size(versions); out && i > 0; i--)
		json_array_append(out, json_array_get(versions, i - 1));
	json_t *res = json_pack("{s:s, s:o}", "path", path, "versions", out);
	if (!res)
		return -ENOMEM;
	*ret = res;
	return 0;
}

/* ---- revert ---- */

struct revert {
	struct snapstore *s;
	const struct manifest *m;
	json_t *cache, *written, *deleted, *errors;
	uint64_t unchanged;
	int root; /* running as root: restore owners */
	int trunc;
};

static int rv_error(struct revert *rv, const char *path, int err, const char *what)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-err));
	return list_push(rv->errors, json_pack("{s:s, s:s}", "path", path, "error", msg),
			 &rv->trunc);
}

/* Delete path (a file, a symlink, or a directory tree) below the root; nothing is followed. */
struct rmwalk {
	char **paths;
	uint8_t *isdir;
	size_t n, cap;
};

static int rm_cb(const struct wst_entry *we, void *ud)
{
	struct rmwalk *w = ud;
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 64;
		char **np = realloc(w->paths, nc * sizeof(*np));
		if (!np)
			return -ENOMEM;
		w->paths = np;
		uint8_t *nd = realloc(w->isdir, nc);
		if (!nd)
			return -ENOMEM;
		w->isdir = nd;
		w->cap = nc;
	}
	if (!(w->paths[w->n] = strdup(we->path)))
		return -ENOMEM;
	w->isdir[w->n++] = S_ISDIR(we->st.st_mode);
	return w->n > SNAPSTORE_ENTRIES_MAX ? -E2BIG : 0;
}

static int unlink_rel(int rootfd, const char *path, int dir)
{
	const char *name;
	_cleanup_close_ int pfd = wst_open_parent(rootfd, path, &name);
	if (pfd < 0)
		return pfd;
	if (unlinkat(pfd, name, dir ? AT_REMOVEDIR : 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int rm_tree(int rootfd, const char *path)
{
	struct stat st;
	int r = wst_lstat(rootfd, path, &st);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (!S_ISDIR(st.st_mode))
		return unlink_rel(rootfd, path, 0);
	struct rmwalk w = { 0 };
	r = wst_walk(rootfd, path, rm_cb, &w);
	/* children before their parents: the walk's order reversed */
	for (size_t i = w.n; i > 0; i--) {
		if (r == 0)
			r = unlink_rel(rootfd, w.paths[i - 1], w.isdir[i - 1]);
		free(w.paths[i - 1]);
	}
	free(w.paths);
	free(w.isdir);
	if (r == 0)
		r = unlink_rel(rootfd, path, 1);
	return r;
}

/* A name for a temporary file beside the one being restored. */
static void tmp_name(char ret[48])
{
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint64_t)clock_ns(CLOCK_MONOTONIC) ^ (uint64_t)getpid();
	snprintf(ret, 48, ".capsem-revert-%016" PRIx64, rnd);
}

/* Copy object sha into the new file fd, checking the bytes against the hash. */
static int copy_object(struct snapstore *s, const char *sha, int fd)
{
	char p[SHA256_HEX_LEN + 4], got[SHA256_HEX_LEN + 1];
	int r = obj_path(sha, p);
	if (r < 0)
		return r;
	_cleanup_close_ int in = openat(s->objfd, p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return errno == ENOENT ? -EBADMSG : -errno;
	struct sha256 h = { 0 };
	r = sha256_init(&h);
	while (r == 0) {
		ssize_t k = read(in, s->iobuf, IOBUF_SIZE);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = -errno;
		if (k <= 0)
			break;
		r = sha256_update(&h, s->iobuf, (size_t)k);
		if (r == 0)
			r = fd_write_all(fd, s->iobuf, (size_t)k);
	}
	if (r == 0)
		r = sha256_final_hex(&h, got);
	sha256_done(&h);
	if (r == 0 && !streq(got, sha))
		r = -EBADMSG; /* the store was damaged */
	return r;
}

/* Put one file or symlink of the snapshot in place: a temporary file (or symlink) in the same
 * directory, renamed over whatever is there (a directory there is deleted first). */
static int restore_leaf(struct revert *rv, const struct ent *e)
{
	struct snapstore *s = rv->s;
	struct stat cur;
	int have = wst_lstat(s->rootfd, e->path, &cur);
	if (have < 0 && have != -ENOENT)
		return have;
	have = have == 0;
	const char *name;
	_cleanup_close_ int pfd = wst_open_parent(s->rootfd, e->path, &name);
	if (pfd < 0)
		return pfd;
	if (e->type == ENT_FILE && e->unstable)
		return -ENODATA;
	/* unchanged? */
	if (have && e->type == ENT_SYMLINK && S_ISLNK(cur.st_mode)) {
		char t[WST_PATH_MAX + 2];
		ssize_t k = readlinkat(pfd, name, t, sizeof(t));
		if (k >= 0 && (size_t)k < sizeof(t) - 1 && (t[k] = 0, streq(t, e->target)))
			return 1;
	}
	if (have && e->type == ENT_FILE && S_ISREG(cur.st_mode)) {
		uint64_t hashed = 0;
		int same = file_same(s, rv->cache, e, pfd, name, e->path, &cur, &hashed);
		if (same < 0)
			return same;
		if (same)
			return 1;
	}
	char tmp[48];
	int r = 0;
	for (int i = 0; i < 8; i++) {
		tmp_name(tmp);
		if (e->type == ENT_SYMLINK) {
			r = symlinkat(e->target, pfd, tmp) < 0 ? -errno : 0;
		} else {
			_cleanup_close_ int fd =
				wst_open(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
			if (fd < 0) {
				r = fd;
			} else {
				r = copy_object(s, e->sha, fd);
				if (r == 0 && rv->root && fchown(fd, e->uid, e->gid) < 0)
					r = -errno;
				/* set-id bits are never restored */
				if (r == 0 && fchmod(fd, e->mode & 01777) < 0)
					r = -errno;
				struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
							  { .tv_sec = e->mtime_ns / 1000000000LL,
							    .tv_nsec =
								    e->mtime_ns % 1000000000LL } };
				if (r == 0 && e->mtime_ns >= 0 && futimens(fd, ts) < 0)
					r = -errno;
				if (r == 0 && fsync(fd) < 0)
					r = -errno;
				if (r < 0)
					unlinkat(pfd, tmp, 0);
			}
		}
		if (r != -EEXIST)
			break;
	}
	if (r < 0)
		return r;
	if (e->type == ENT_SYMLINK && rv->root &&
	    fchownat(pfd, tmp, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		unlinkat(pfd, tmp, 0);
		return r;
	}
	if (have && S_ISDIR(cur.st_mode)) {
		r = rm_tree(s->rootfd, e->path);
		if (r < 0) {
			unlinkat(pfd, tmp, 0);
			return r;
		}
	}
	if (renameat(pfd, tmp, pfd, name) < 0) {
		r = -errno;
		unlinkat(pfd, tmp, 0);
		return r;
	}
	return 0;
}

/* Make sure directory entry e exists as a directory (mode applied later). */
static int restore_dir(struct revert *rv, const struct ent *e)
{
	struct snapstore *s = rv->s;
	struct stat cur;
	int r = wst_lstat(s->rootfd, e->path, &cur);
	if (r == 0 && S_ISDIR(cur.st_mode))
		return 1;
	if (r < 0 && r != -ENOENT)
		return r;
	if (r == 0) {
		r = unlink_rel(s->rootfd, e->path, 0);
		if (r < 0)
			return r;
	}
	const char *name;
	_cleanup_close_ int pfd = wst_open_parent(s->rootfd, e->path, &name);
	if (pfd < 0)
		return pfd;
	if (mkdirat(pfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Mode, owner and mtime of a restored directory (after its contents). */
static void dir_attrs(struct revert *rv, const struct ent *e)
{
	_cleanup_close_ int fd = wst_open(rv->s->rootfd, e->path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return;
	if (rv->root)
		(void)!fchown(fd, e->uid, e->gid);
	(void)!fchmod(fd, e->mode & 01777);
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
				  { .tv_sec = e->mtime_ns / 1000000000LL,
				    .tv_nsec = e->mtime_ns % 1000000000LL } };
	if (e->mtime_ns >= 0)
		(void)!futimens(fd, ts);
}

/* Every directory above path must be one (a missing one is made, with the snapshot's mode when it
 * has it); a symlink or a file in the way is an error (-ENOTDIR). */
static int ensure_parents(struct revert *rv, const char *path)
{
	char p[WST_PATH_MAX + 1];
	size_t n = strlen(path);
	memcpy(p, path, n + 1);
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '/')
			continue;
		p[i] = 0;
		struct stat st;
		int r = wst_lstat(rv->s->rootfd, p, &st);
		if (r == -ENOENT) {
			const char *name;
			_cleanup_close_ int pfd = wst_open_parent(rv->s->rootfd, p, &name);
			if (pfd < 0)
				return pfd;
			const struct ent *e = manifest_find(rv->m, p);
			mode_t mode = e && e->type == ENT_DIR ? (e->mode & 0777) | 0700 : 0755;
			if (mkdirat(pfd, name, mode) < 0 && errno != EEXIST)
				return -errno;
		} else if (r < 0) {
			return r;
		} else if (!S_ISDIR(st.st_mode)) {
			return -ENOTDIR;
		}
		p[i] = '/';
	}
	return 0;
}

struct extrawalk {
	const struct manifest *m;
	char **paths;
	size_t n, cap;
};

/* Entries of the workspace the snapshot does not have (the topmost of each such subtree). */
static int extra_cb(const struct wst_entry *we, void *ud)
{
	struct extrawalk *w = ud;
	const struct ent *e = manifest_find(w->m, we->path);
	if (e && (e->type == ENT_DIR) == !!S_ISDIR(we->st.st_mode))
		return 0;
	if (e)
		return S_ISDIR(we->st.st_mode) ? WST_SKIP : 0; /* replaced by restore_leaf */
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 32;
		char **np = realloc(w->paths, nc * sizeof(*np));
		if (!np)
			return -ENOMEM;
		w->paths = np;
		w->cap = nc;
	}
	if (!(w->paths[w->n++] = strdup(we->path)))
		return -ENOMEM;
	return w->n > SNAPSTORE_ENTRIES_MAX ? -E2BIG : WST_SKIP;
}

static int revert_one(struct revert *rv, const char *path)
{
	struct snapstore *s = rv->s;
	const struct manifest *m = rv->m;
	const struct ent *top = *path ? manifest_find(m, path) : NULL;
	int r;
	if (*path && !top) { /* not in the snapshot: delete */
		struct stat st;
		r = wst_lstat(s->rootfd, path, &st);
		if (r == -ENOENT)
			return 0;
		if (r == -ELOOP || r == -ENOTDIR) /* a parent is not a directory: nothing below */
			return rv_error(rv, path, r, "a parent is not a directory");
		if (r == 0)
			r = rm_tree(s->rootfd, path);
		if (r < 0)
			return rv_error(rv, path, r, "cannot delete");
		return list_push(rv->deleted, json_string(path), &rv->trunc);
	}
	if (*path) {
		r = ensure_parents(rv, path);
		if (r < 0)
			return rv_error(rv, path, r, "a parent is not a directory");
	}
	/* the snapshot's entries at and below path, parents first */
	size_t lo = *path ? (size_t)(top - m->e) : 0, hi = lo + (*path ? 1 : 0);
	while (hi < m->n && path_under(m->e[hi].path, path))
		hi++;
	for (size_t i = lo; i < hi; i++) {
		const struct ent *e = &m->e[i];
		r = e->type == ENT_DIR ? restore_dir(rv, e) : restore_leaf(rv, e);
		if (r == 1) {
			rv->unchanged++;
		} else if (r == -ENODATA) {
			r = rv_error(rv, e->path, -ENODATA,
				     "not in the snapshot: it was changing when taken");
		} else if (r < 0) {
			r = rv_error(rv, e->path, r, "cannot restore");
			/* a directory that failed: its entries would fail too */
			if (e->type == ENT_DIR)
				while (i + 1 < hi && path_under(m->e[i + 1].path, e->path))
					i++;
		} else if (e->type != ENT_DIR) {
			r = list_push(rv->written, json_string(e->path), &rv->trunc);
		}
		if (r < 0)
			return r;
	}
	/* what the workspace has below path that the snapshot does not */
	if (!top || top->type == ENT_DIR) {
		struct extrawalk w = { .m = m };
		r = wst_walk(s->rootfd, path, extra_cb, &w);
		for (size_t i = 0; i < w.n; i++) {
			if (r >= 0) {
				int k = rm_tree(s->rootfd, w.paths[i]);
				r = k < 0 ? rv_error(rv, w.paths[i], k, "cannot delete")
					  : list_push(rv->deleted, json_string(w.paths[i]),
						      &rv->trunc);
			}
			free(w.paths[i]);
		}
		free(w.paths);
		if (r == -ELOOP || r == -ENOTDIR)
			r = rv_error(rv, path, r, "cannot walk");
		if (r < 0)
			return r;
	}
	/* directory modes and times last, deepest first */
	for (size_t i = hi; i > lo; i--)
		if (m->e[i - 1].type == ENT_DIR)
			dir_attrs(rv, &m->e[i - 1]);
	return 0;
}

int snapstore_revert(struct snapstore *s, const char *snap, char *const *paths, json_t **ret)
{
	if (!paths || !paths[0])
		return -EINVAL;
	for (char *const *p = paths; *p; p++)
		if (!streq(*p, ".") && wst_path_check(*p, 1) < 0)
			return -EINVAL;
	int r = begin(s, 1);
	if (r < 0)
		return r;
	_cleanup_json_ json_t *idx = NULL, *res = NULL;
	struct manifest m = { 0 };
	struct revert rv = { .s = s, .m = &m, .root = geteuid() == 0 };
	json_t *pick = NULL;
	r = index_load(s, &idx);
	if (r == 0)
		r = index_pick(idx, snap, &pick);
	if (r == 0)
		r = manifest_load(s, json_string_value(json_object_get(pick, "name")), &m);
	if (r < 0)
		goto out;
	rv.cache = cache_load(s);
	rv.written = json_array();
	rv.deleted = json_array();
	rv.errors = json_array();
	if (!rv.cache || !rv.written || !rv.deleted || !rv.errors) {
		r = -ENOMEM;
		goto out;
	}
	for (char *const *p = paths; *p && r == 0; p++)
		r = revert_one(&rv, streq(*p, ".") ? "" : *p);
	if (r < 0)
		goto out;
	res = json_pack("{s:O, s:O, s:O, s:I, s:O, s:b}", "snapshot", json_object_get(pick, "name"),
			"written", rv.written, "deleted", rv.deleted, "unchanged",
			(json_int_t)rv.unchanged, "errors", rv.errors, "truncated", rv.trunc);
	if (!res)
		r = -ENOMEM;
	else
		*ret = TAKE_PTR(res);
out:
	end(s);
	manifest_done(&m);
	json_decref(rv.cache);
	json_decref(rv.written);
	json_decref(rv.deleted);
	json_decref(rv.errors);
	return r;
}
