/* test-ws9p.c - the workspace's 9P2000.L server (src/workspace/ws9p*.c) driven by a tiny client
 * on a real directory: every message the Linux client sends, symlinks and swapped directories
 * planted on the host never followed, malformed and split input, limits, and a state saved and
 * restored into a new server on a copy of the tree. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdutil.h"
#include "macro.h"
#include "ws9p.h"
#include "ws9pwire.h"

#define MSIZE 65536u

static char base[64];
static char root[128];

/* ---- the client: one message being built, one reply being read (ws9pwire.h) ---- */

static struct {
	uint8_t b[MSIZE + 64];
	struct p9wr w;
} M;

static void m_u8(uint8_t v)
{
	p9wr_u8(&M.w, v);
}

static void m_u16(uint16_t v)
{
	p9wr_u16(&M.w, v);
}

static void m_u32(uint32_t v)
{
	p9wr_u32(&M.w, v);
}

static void m_u64(uint64_t v)
{
	p9wr_u64(&M.w, v);
}

static void m_str(const char *s)
{
	p9wr_str(&M.w, s, strlen(s));
}

static void m_put(const void *p, size_t n)
{
	uint8_t *q = p9wr_take(&M.w, n);
	if (q)
		memcpy(q, p, n);
}

static void m_begin(uint8_t type)
{
	M.w = (struct p9wr){ .p = M.b, .cap = sizeof(M.b) };
	m_u32(0);
	m_u8(type);
	m_u16(1); /* tag */
}

static void m_end(void)
{
	assert_false(M.w.over);
	p9_put32(M.b, (uint32_t)M.w.n);
}

/* Begin a message of type with the fields fmt lists, one character a field: 1, 2 or 4 a number
 * of that many bytes (an int or unsigned argument), 8 one of eight (a uint64_t argument), s a
 * string. */
static void m_vmsg(uint8_t type, const char *fmt, va_list ap)
{
	m_begin(type);
	for (const char *c = fmt; *c; c++) {
		switch (*c) {
		case '1':
			m_u8((uint8_t)va_arg(ap, unsigned));
			break;
		case '2':
			m_u16((uint16_t)va_arg(ap, unsigned));
			break;
		case '4':
			m_u32(va_arg(ap, uint32_t));
			break;
		case '8':
			m_u64(va_arg(ap, uint64_t));
			break;
		case 's':
			m_str(va_arg(ap, const char *));
			break;
		default:
			fail_msg("m_msg: field '%c'", *c);
		}
	}
}

static void m_msg(uint8_t type, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	m_vmsg(type, fmt, ap);
	va_end(ap);
}

static struct {
	uint8_t b[MSIZE + 64];
	struct p9rd r;
	uint8_t type;
} R;

/* The next k bytes of the reply: reading past its end fails the test. */
static const uint8_t *r_take(size_t k)
{
	const uint8_t *q = p9rd_take(&R.r, k);
	assert_non_null(q);
	return q;
}

static uint8_t r_u8(void)
{
	return *r_take(1);
}

static uint16_t r_u16(void)
{
	return p9_le16(r_take(2));
}

static uint32_t r_u32(void)
{
	return p9_le32(r_take(4));
}

static uint64_t r_u64(void)
{
	return p9_le64(r_take(8));
}

/* A string of the reply, copied NUL-terminated into out (cap bytes). */
static void r_str(char *out, size_t cap)
{
	uint16_t n = r_u16();
	const uint8_t *q = r_take(n);
	assert_true(n < cap);
	memcpy(out, q, n);
	out[n] = 0;
}

static struct p9qid r_qid(void)
{
	struct p9qid q = { .type = r_u8() };
	(void)r_u32();
	q.path = r_u64();
	return q;
}

/* Take the next reply out of s into R. */
static void next_reply(struct ws9p *s)
{
	size_t n;
	const uint8_t *o = ws9p_output(s, &n);
	assert_non_null(o);
	assert_true(n >= P9_HDR);
	uint32_t size = p9_le32(o);
	assert_true(size >= P9_HDR && size <= n && size <= sizeof(R.b));
	memcpy(R.b, o, size);
	R.r = (struct p9rd){ .p = R.b, .n = size, .off = P9_HDR };
	R.type = o[4];
	assert_int_equal(p9_le16(o + 5), 1); /* the tag */
	ws9p_consume(s, size);
}

/* Send M, read its reply: the Linux errno negated for Rlerror, else 0 with R at the body. */
static int call(struct ws9p *s)
{
	m_end();
	assert_int_equal(ws9p_input(s, M.b, M.w.n), (ssize_t)M.w.n);
	next_reply(s);
	size_t left;
	ws9p_output(s, &left);
	assert_int_equal(left, 0);
	if (R.type == P9_RLERROR) {
		uint32_t e = r_u32();
		assert_true(e > 0);
		return -(int)e;
	}
	assert_int_equal(R.type, M.b[4] + 1);
	return 0;
}

/* m_msg() and call() in one. */
static int c_msg(struct ws9p *s, uint8_t type, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	m_vmsg(type, fmt, ap);
	va_end(ap);
	return call(s);
}

/* ---- one helper per message ---- */

static int c_version(struct ws9p *s, uint32_t msize, const char *v, uint32_t *ret_msize,
		     char ret_v[32])
{
	int e = c_msg(s, P9_TVERSION, "4s", msize, v);
	if (e == 0) {
		*ret_msize = r_u32();
		r_str(ret_v, 32);
	}
	return e;
}

static int c_attach(struct ws9p *s, uint32_t fid, struct p9qid *q)
{
	int e = c_msg(s, P9_TATTACH, "44ss4", fid, P9_NOFID, "root", "", 0);
	if (e == 0 && q)
		*q = r_qid();
	return e;
}

/* Twalk of the names (NULL-terminated): the number of qids or -errno; the last qid in *q. */
static int c_walkv(struct ws9p *s, uint32_t fid, uint32_t newfid, const char *const *names,
		   struct p9qid *q)
{
	uint16_t n = 0;
	while (names[n])
		n++;
	m_msg(P9_TWALK, "442", fid, newfid, n);
	for (uint16_t i = 0; i < n; i++)
		m_str(names[i]);
	int e = call(s);
	if (e < 0)
		return e;
	uint16_t k = r_u16();
	for (uint16_t i = 0; i < k; i++) {
		struct p9qid x = r_qid();
		if (q)
			*q = x;
	}
	return k;
}

#define c_walk(s, fid, newfid, q, ...) \
	c_walkv(s, fid, newfid, (const char *const[]){ __VA_ARGS__, NULL }, q)

static int c_clone(struct ws9p *s, uint32_t fid, uint32_t newfid)
{
	return c_walkv(s, fid, newfid, (const char *const[]){ NULL }, NULL);
}

static int c_lopen(struct ws9p *s, uint32_t fid, uint32_t flags, struct p9qid *q)
{
	int e = c_msg(s, P9_TLOPEN, "44", fid, flags);
	if (e == 0) {
		struct p9qid x = r_qid();
		if (q)
			*q = x;
		(void)r_u32();
	}
	return e;
}

static int c_lcreate(struct ws9p *s, uint32_t fid, const char *name, uint32_t flags, uint32_t mode)
{
	return c_msg(s, P9_TLCREATE, "4s444", fid, name, flags, mode, 0);
}

static int c_write(struct ws9p *s, uint32_t fid, uint64_t off, const char *data)
{
	m_msg(P9_TWRITE, "484", fid, off, (uint32_t)strlen(data));
	m_put(data, strlen(data));
	int e = call(s);
	return e < 0 ? e : (int)r_u32();
}

/* A Tread or Treaddir: fid[4] offset[8] count[4]. */
static void m_io(uint8_t type, uint32_t fid, uint64_t off, uint32_t count)
{
	m_msg(type, "484", fid, off, count);
}

/* Send a Tread or Treaddir: its reply's count (R at the data) or -errno. */
static int c_io(struct ws9p *s, uint8_t type, uint32_t fid, uint64_t off, uint32_t count)
{
	m_io(type, fid, off, count);
	int e = call(s);
	return e < 0 ? e : (int)r_u32();
}

/* Tread into out (NUL-terminated, cap bytes): the count or -errno. */
static int c_read(struct ws9p *s, uint32_t fid, uint64_t off, uint32_t count, char *out, size_t cap)
{
	int k = c_io(s, P9_TREAD, fid, off, count);
	if (k < 0)
		return k;
	const uint8_t *data = r_take((size_t)k);
	if (out) {
		assert_true((size_t)k < cap);
		memcpy(out, data, (size_t)k);
		out[k] = 0;
	}
	return k;
}

struct attr {
	struct p9qid qid;
	uint32_t mode, uid, gid;
	uint64_t nlink, size, atime, atime_ns, mtime, mtime_ns;
};

static int c_getattr(struct ws9p *s, uint32_t fid, struct attr *a)
{
	int e = c_msg(s, P9_TGETATTR, "48", fid, (uint64_t)0x7ff);
	if (e < 0)
		return e;
	assert_int_equal(r_u64(), 0x7ff);
	a->qid = r_qid();
	a->mode = r_u32();
	a->uid = r_u32();
	a->gid = r_u32();
	a->nlink = r_u64();
	(void)r_u64(); /* rdev */
	a->size = r_u64();
	(void)r_u64(); /* blksize */
	(void)r_u64(); /* blocks */
	a->atime = r_u64();
	a->atime_ns = r_u64();
	a->mtime = r_u64();
	a->mtime_ns = r_u64();
	assert_int_equal(R.r.n - R.r.off, 6 * 8);
	return 0;
}

static int c_setattr(struct ws9p *s, uint32_t fid, uint32_t valid, uint32_t mode, uint64_t size,
		     uint64_t at, uint64_t mt)
{
	return c_msg(s, P9_TSETATTR, "4444488888", fid, valid, mode, 1000 /* uid */, 1000 /* gid */,
		     size, at, (uint64_t)5, mt, (uint64_t)7);
}

/* Treaddir: the names (space-separated, appended to out) and the last offset in *next; the
 * number of entries or -errno. */
static int c_readdir(struct ws9p *s, uint32_t fid, uint64_t off, uint32_t count, char *out,
		     size_t cap, uint64_t *next)
{
	int k = c_io(s, P9_TREADDIR, fid, off, count);
	if (k < 0)
		return k;
	assert_int_equal(R.r.off + (size_t)k, R.r.n);
	int n = 0;
	while (R.r.off < R.r.n) {
		(void)r_qid();
		*next = r_u64();
		(void)r_u8();
		char name[256];
		r_str(name, sizeof(name));
		size_t l = strlen(out);
		snprintf(out + l, cap - l, "%s%s", l ? " " : "", name);
		n++;
	}
	return n;
}

static int c_mkdir(struct ws9p *s, uint32_t dfid, const char *name, uint32_t mode)
{
	return c_msg(s, P9_TMKDIR, "4s44", dfid, name, mode, 0);
}

static int c_unlinkat(struct ws9p *s, uint32_t dfid, const char *name, uint32_t flags)
{
	return c_msg(s, P9_TUNLINKAT, "4s4", dfid, name, flags);
}

/* Tmknod (major 1, minor 3: the server ignores them) */
static int c_mknod(struct ws9p *s, uint32_t dfid, const char *name, uint32_t mode)
{
	return c_msg(s, P9_TMKNOD, "4s4444", dfid, name, mode, 1, 3, 0);
}

static int c_renameat(struct ws9p *s, uint32_t ofid, const char *on, uint32_t nfid, const char *nn)
{
	return c_msg(s, P9_TRENAMEAT, "4s4s", ofid, on, nfid, nn);
}

static int c_symlink(struct ws9p *s, uint32_t dfid, const char *name, const char *target)
{
	return c_msg(s, P9_TSYMLINK, "4ss4", dfid, name, target, 0);
}

static int c_link(struct ws9p *s, uint32_t dfid, uint32_t fid, const char *name)
{
	return c_msg(s, P9_TLINK, "44s", dfid, fid, name);
}

static int c_fid_op(struct ws9p *s, uint8_t type, uint32_t fid)
{
	return c_msg(s, type, "4", fid);
}

/* ---- fixtures ---- */

static void host_path(char *p, size_t n, const char *rel)
{
	snprintf(p, n, "%s/%s", base, rel);
}

static void put(const char *rel, const char *content)
{
	char p[512];
	host_path(p, sizeof(p), rel);
	assert_int_equal(write_file_atomic(p, content, strlen(content), 0644), 0);
}

static void mkd(const char *rel)
{
	char p[512];
	host_path(p, sizeof(p), rel);
	assert_int_equal(mkdir(p, 0755), 0);
}

static void lnk(const char *target, const char *rel)
{
	char p[512];
	host_path(p, sizeof(p), rel);
	assert_int_equal(symlink(target, p), 0);
}

static void hstat(const char *rel, struct stat *st)
{
	char p[512];
	host_path(p, sizeof(p), rel);
	assert_int_equal(lstat(p, st), 0);
}

static int hexists(const char *rel)
{
	char p[512];
	struct stat st;
	host_path(p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static char *hread(const char *rel)
{
	char p[512], *d = NULL;
	size_t n;
	host_path(p, sizeof(p), rel);
	assert_int_equal(read_file_small(p, 1 << 20, &d, &n), 0);
	return d;
}

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "/tmp/ws9p-XXXXXX");
	assert_non_null(mkdtemp(base));
	snprintf(root, sizeof(root), "%s/root", base);
	mkd("root");
	mkd("outside");
	put("outside/secret", "secret");
	mkd("outside/dir");
	put("outside/dir/f", "outside f");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(rm_rf(base), 0);
	return 0;
}

/* A server on dir, versioned (msize MSIZE) and attached as fid 0. */
static struct ws9p *server_on(const char *dir)
{
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct ws9p *s = NULL;
	assert_int_equal(ws9p_new(fd, &s), 0);
	close(fd);
	uint32_t msize;
	char v[32];
	assert_int_equal(c_version(s, MSIZE, "9P2000.L", &msize, v), 0);
	assert_int_equal(msize, MSIZE);
	assert_string_equal(v, "9P2000.L");
	assert_int_equal(c_attach(s, 0, NULL), 0);
	return s;
}

static struct ws9p *server(void)
{
	return server_on(root);
}

/* ---- tests ---- */

static void test_version(void **state)
{
	(void)state;
	struct ws9p *s = server();
	uint32_t msize;
	char v[32];
	assert_int_equal(c_clone(s, 0, 1), 0);
	assert_int_equal(ws9p_fid_count(s), 2);
	/* a new version clunks every fid */
	assert_int_equal(c_version(s, 1u << 30, "9P2000.L", &msize, v), 0);
	assert_int_equal(msize, WS9P_MSIZE_MAX);
	assert_int_equal(ws9p_fid_count(s), 0);
	assert_int_equal(c_version(s, MSIZE, "9P2000.u", &msize, v), 0);
	assert_string_equal(v, "unknown");
	assert_int_equal(c_version(s, 512, "9P2000.L", &msize, v), -EINVAL);
	assert_int_equal(c_version(s, MSIZE, "9P2000.L", &msize, v), 0);
	struct p9qid q;
	assert_int_equal(c_attach(s, 0, &q), 0);
	assert_int_equal(q.type, 0x80);
	assert_int_equal(c_attach(s, 0, &q), -EEXIST);
	/* Tauth and xattrs are not supported; unknown types neither; Tflush is answered */
	assert_int_equal(c_msg(s, P9_TAUTH, "4ss4", 5, "u", "", 0), -EOPNOTSUPP);
	assert_int_equal(c_msg(s, P9_TXATTRWALK, "44s", 0, 9, "user.x"), -EOPNOTSUPP);
	assert_int_equal(c_msg(s, 200, ""), -EOPNOTSUPP);
	assert_int_equal(c_msg(s, P9_TFLUSH, "2", 7), 0);
	assert_int_equal(R.r.n, P9_HDR);
	ws9p_free(s);
	ws9p_free(NULL);
}

static void test_files(void **state)
{
	(void)state;
	struct ws9p *s = server();
	struct p9qid q;
	struct attr a;
	char buf[4096];
	/* create, write, read */
	assert_int_equal(c_clone(s, 0, 1), 0);
	assert_int_equal(c_lcreate(s, 1, "a.txt", P9_L_RDWR | P9_L_CREATE, 0640), 0);
	assert_int_equal(c_write(s, 1, 0, "hello world"), 11);
	assert_int_equal(c_read(s, 1, 6, 100, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "world");
	assert_int_equal(c_read(s, 1, 100, 100, buf, sizeof(buf)), 0);
	assert_int_equal(c_getattr(s, 1, &a), 0); /* the fid is the new file now */
	assert_int_equal(a.mode, S_IFREG | 0640);
	assert_int_equal(a.size, 11);
	assert_int_equal(a.uid, 0);
	assert_int_equal(a.gid, 0);
	assert_int_equal(c_fid_op(s, P9_TFSYNC, 1), 0);
	assert_int_equal(c_lcreate(s, 0, "a.txt", P9_L_RDWR | P9_L_CREATE | P9_L_EXCL, 0640),
			 -EEXIST);
	/* O_CREAT without O_EXCL opens what is there, but never a directory */
	assert_int_equal(c_clone(s, 0, 2), 0);
	assert_int_equal(c_lcreate(s, 2, "a.txt", P9_L_RDONLY | P9_L_CREATE, 0600), 0);
	assert_int_equal(c_read(s, 2, 0, 5, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "hello");
	assert_int_equal(c_fid_op(s, P9_TCLUNK, 2), 0);
	assert_int_equal(c_mkdir(s, 0, "dd", 0755), 0);
	assert_int_equal(c_clone(s, 0, 2), 0);
	assert_int_equal(c_lcreate(s, 2, "dd", P9_L_RDONLY | P9_L_CREATE, 0600), -EISDIR);
	assert_int_equal(c_lcreate(s, 2, "dd", P9_L_RDWR | P9_L_CREATE, 0600), -EISDIR);
	assert_int_equal(c_fid_op(s, P9_TCLUNK, 2), 0);
	assert_int_equal(c_unlinkat(s, 0, "dd", 0x200), 0);
	/* walk: qids, clones, errors */
	assert_int_equal(c_walk(s, 0, 2, &q, "a.txt"), 1);
	assert_int_equal(q.type, 0);
	assert_int_equal(q.path, a.qid.path);
	assert_int_equal(c_walk(s, 0, 2, &q, "a.txt"), -EEXIST);
	assert_int_equal(c_walk(s, 0, 3, &q, "nope"), -ENOENT);
	assert_int_equal(c_walk(s, 0, 3, &q, "a.txt", "x"), 1); /* the prefix; 3 not made */
	assert_int_equal(c_getattr(s, 3, &a), -EBADF);
	assert_int_equal(c_walk(s, 9, 3, &q, "a.txt"), -EBADF);
	assert_int_equal(c_walk(s, 0, 3, &q, "a/b"), -EINVAL);
	assert_int_equal(c_walk(s, 0, 3, &q, "."), -EINVAL);
	assert_int_equal(c_walk(s, 0, 3, &q, ""), -EINVAL);
	/* reading an unopened fid, a directory */
	assert_int_equal(c_read(s, 2, 0, 10, NULL, 0), -EBADF);
	assert_int_equal(c_lopen(s, 2, P9_L_RDONLY, &q), 0);
	assert_int_equal(c_read(s, 2, 0, 100, buf, sizeof(buf)), 11);
	assert_int_equal(c_write(s, 2, 0, "x"), -EBADF); /* opened read-only */
	assert_int_equal(c_lopen(s, 2, P9_L_RDONLY, &q), -EINVAL);
	assert_int_equal(c_fid_op(s, P9_TCLUNK, 2), 0);
	assert_int_equal(c_fid_op(s, P9_TCLUNK, 2), -EBADF);
	/* mkdir, a file in it, readdir */
	assert_int_equal(c_mkdir(s, 0, "d", 0750), 0);
	assert_int_equal(c_walk(s, 0, 3, &q, "d"), 1);
	assert_int_equal(q.type, 0x80);
	assert_int_equal(c_clone(s, 3, 4), 0);
	assert_int_equal(c_lcreate(s, 4, "f", P9_L_WRONLY | P9_L_CREATE, 0600), 0);
	assert_int_equal(c_write(s, 4, 0, "in d"), 4);
	assert_int_equal(c_read(s, 3, 0, 10, NULL, 0), -EBADF);
	assert_int_equal(c_lopen(s, 3, P9_L_RDWR, NULL), -EISDIR);
	assert_int_equal(c_lopen(s, 3, P9_L_RDONLY | P9_L_DIRECTORY, NULL), 0);
	assert_int_equal(c_read(s, 3, 0, 10, NULL, 0), -EISDIR);
	char names[1024] = "";
	uint64_t next = 0;
	assert_int_equal(c_readdir(s, 3, 0, 8192, names, sizeof(names), &next), 3);
	assert_non_null(strstr(names, "f"));
	assert_non_null(strstr(names, ".."));
	names[0] = 0;
	assert_int_equal(c_readdir(s, 3, next, 8192, names, sizeof(names), &next), 0);
	/* page by page with a small count: the same entries */
	assert_int_equal(c_clone(s, 0, 5), 0);
	assert_int_equal(c_lopen(s, 5, P9_L_RDONLY, NULL), 0);
	for (int i = 0; i < 20; i++) {
		char nm[16];
		snprintf(nm, sizeof(nm), "file%02d", i);
		assert_int_equal(c_mkdir(s, 0, nm, 0700), 0);
	}
	names[0] = 0;
	next = 0;
	int total = 0, k;
	while ((k = c_readdir(s, 5, next, 64, names, sizeof(names), &next)) > 0)
		total += k;
	assert_int_equal(k, 0);
	assert_int_equal(total, 2 + 2 + 20); /* . .. a.txt d file00..file19 */
	assert_non_null(strstr(names, "file19"));
	assert_int_equal(c_readdir(s, 5, 0, 10, names, sizeof(names), &next), -EINVAL);
	assert_int_equal(c_readdir(s, 1, 0, 100, names, sizeof(names), &next), -ENOTDIR);
	/* renameat of the directory: the fids below follow it */
	assert_int_equal(c_walk(s, 0, 6, NULL, "d", "f"), 2);
	assert_int_equal(c_renameat(s, 0, "d", 0, "e"), 0);
	assert_false(hexists("root/d"));
	assert_int_equal(c_getattr(s, 6, &a), 0);
	assert_int_equal(a.size, 4);
	assert_int_equal(c_lopen(s, 6, P9_L_RDONLY, NULL), 0);
	assert_int_equal(c_read(s, 6, 0, 100, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "in d");
	assert_int_equal(c_walk(s, 3, 7, NULL, "f"), 1); /* fid 3 is e now */
	/* Trename moves a fid's own file */
	assert_int_equal(c_walk(s, 0, 8, NULL, "e"), 1);
	assert_int_equal(c_msg(s, P9_TRENAME, "44s", 7, 0, "moved"), 0);
	assert_true(hexists("root/moved"));
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.size, 4);
	assert_int_equal(c_msg(s, P9_TRENAME, "44s", 0, 0, "x"), -EBUSY);
	/* symlink, readlink, link */
	assert_int_equal(c_symlink(s, 0, "sl", "../../etc/passwd"), 0);
	assert_int_equal(c_walk(s, 0, 9, &q, "sl"), 1);
	assert_int_equal(q.type, 0x02);
	assert_int_equal(c_fid_op(s, P9_TREADLINK, 9), 0);
	r_str(buf, sizeof(buf));
	assert_string_equal(buf, "../../etc/passwd");
	assert_int_equal(c_fid_op(s, P9_TREADLINK, 0), -EINVAL);
	assert_int_equal(c_link(s, 0, 7, "hard"), 0);
	assert_int_equal(c_link(s, 8, 7, "hard2"), 0);
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.nlink, 3);
	assert_int_equal(c_link(s, 0, 8, "dirlink"), -EPERM);
	/* setattr: set-id bits dropped, size, times (set and now) */
	assert_int_equal(c_setattr(s, 7, 0x1, 06755, 0, 0, 0), 0);
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.mode, S_IFREG | 0755);
	struct stat st;
	hstat("root/moved", &st);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(c_setattr(s, 7, 0x8, 0, 2, 0, 0), 0);
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.size, 2);
	assert_int_equal(c_setattr(s, 7, 0x10 | 0x20 | 0x80 | 0x100, 0, 0, 1000, 2000), 0);
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.atime, 1000);
	assert_int_equal(a.atime_ns, 5);
	assert_int_equal(a.mtime, 2000);
	assert_int_equal(a.mtime_ns, 7);
	assert_int_equal(c_setattr(s, 7, 0x20, 0, 0, 0, 0), 0); /* mtime now, atime kept */
	assert_int_equal(c_getattr(s, 7, &a), 0);
	assert_int_equal(a.atime, 1000);
	assert_true(a.mtime > 1600000000);
	assert_int_equal(c_setattr(s, 7, 0x2 | 0x4, 0, 0, 0, 0), 0); /* chown: a no-op */
	assert_int_equal(c_setattr(s, 1, 0x8, 0, 3, 0, 0), 0);	     /* through the open fid */
	assert_int_equal(c_getattr(s, 1, &a), 0);
	assert_int_equal(a.size, 3);
	assert_int_equal(c_setattr(s, 0, 0x8, 0, 3, 0, 0), -EISDIR);
	/* mkdir and lcreate with set-id bits: dropped */
	assert_int_equal(c_mkdir(s, 0, "sgid", 02775), 0);
	hstat("root/sgid", &st);
	assert_int_equal(st.st_mode & 07777, 0775);
	assert_int_equal(c_clone(s, 0, 10), 0);
	assert_int_equal(c_lcreate(s, 10, "suid", P9_L_WRONLY | P9_L_CREATE, 04777), 0);
	hstat("root/suid", &st);
	assert_int_equal(st.st_mode & 07777, 0777);
	/* mknod: regular, FIFO and socket; no devices */
	assert_int_equal(c_mknod(s, 0, "fifo", S_IFIFO | 0644), 0);
	hstat("root/fifo", &st);
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(c_mknod(s, 0, "sock", S_IFSOCK | 0644), 0);
	assert_int_equal(c_mknod(s, 0, "reg", S_IFREG | 06644), 0);
	hstat("root/reg", &st);
	assert_int_equal(st.st_mode, S_IFREG | 0644);
	assert_int_equal(c_mknod(s, 0, "chr", S_IFCHR | 0666), -EPERM);
	assert_int_equal(c_mknod(s, 0, "blk", S_IFBLK | 0666), -EPERM);
	assert_false(hexists("root/chr"));
	/* statfs, lock, getlock */
	assert_int_equal(c_fid_op(s, P9_TSTATFS, 0), 0);
	assert_int_equal(r_u32(), 0x01021997);
	assert_true(r_u32() > 0); /* bsize */
	assert_int_equal(
		c_msg(s, P9_TLOCK, "414884s", 1, 1, 0, (uint64_t)0, (uint64_t)10, 42, "client"), 0);
	assert_int_equal(r_u8(), 0);
	assert_int_equal(
		c_msg(s, P9_TGETLOCK, "41884s", 1, 1, (uint64_t)3, (uint64_t)10, 42, "client"), 0);
	assert_int_equal(r_u8(), 2);
	assert_int_equal(r_u64(), 3);
	assert_int_equal(r_u64(), 10);
	assert_int_equal(r_u32(), 42);
	r_str(buf, sizeof(buf));
	assert_string_equal(buf, "client");
	/* unlinkat leaves fids alone (their path stops resolving) */
	assert_int_equal(c_walk(s, 0, 11, NULL, "hard"), 1);
	assert_int_equal(c_unlinkat(s, 0, "hard", 0), 0);
	assert_int_equal(c_getattr(s, 11, &a), -ENOENT);
	assert_int_equal(c_unlinkat(s, 0, "e", 0), -EISDIR);
	assert_int_equal(c_unlinkat(s, 0, "sgid", 0x200), 0);
	assert_int_equal(c_unlinkat(s, 0, "..", 0), -EINVAL);
	/* an open fid keeps its file after it is unlinked */
	assert_int_equal(c_unlinkat(s, 0, "a.txt", 0), 0);
	assert_int_equal(c_read(s, 1, 0, 100, buf, sizeof(buf)), 3);
	assert_int_equal(c_getattr(s, 1, &a), 0);
	/* remove: clunks, even when it fails */
	size_t before = ws9p_fid_count(s);
	assert_int_equal(c_fid_op(s, P9_TREMOVE, 7), 0);
	assert_false(hexists("root/moved"));
	assert_int_equal(ws9p_fid_count(s), before - 1);
	assert_int_equal(c_fid_op(s, P9_TREMOVE, 8), -ENOTEMPTY); /* e still holds f */
	assert_int_equal(ws9p_fid_count(s), before - 2);
	assert_int_equal(c_fid_op(s, P9_TREMOVE, 8), -EBADF);
	assert_int_equal(c_clone(s, 0, 12), 0);
	assert_int_equal(c_fid_op(s, P9_TREMOVE, 12), -EBUSY);
	assert_true(hexists("root/e"));
	ws9p_free(s);
}

/* Symlinks planted on the host, swapped directories, FIFOs: nothing outside the root is ever
 * reached. */
static void test_escapes(void **state)
{
	(void)state;
	char p[512];
	mkd("root/esc");
	host_path(p, sizeof(p), "outside/secret");
	lnk(p, "root/esc/lf");
	host_path(p, sizeof(p), "outside/dir");
	lnk(p, "root/esc/ld");
	lnk("../../outside", "root/esc/up");
	struct stat secret0;
	hstat("outside/secret", &secret0);
	struct ws9p *s = server();
	struct p9qid rootq, q;
	struct attr a;
	char buf[256];
	/* ".." never goes above the root */
	assert_int_equal(c_walk(s, 0, 1, &q, ".."), 1);
	assert_int_equal(c_getattr(s, 1, &a), 0);
	assert_int_equal(c_getattr(s, 0, &a), 0);
	rootq = a.qid;
	assert_int_equal(q.path, rootq.path);
	assert_int_equal(c_walk(s, 0, 2, &q, "esc", "..", "..", "..", "esc"), 5);
	assert_int_equal(c_walk(s, 2, 3, &q, ".."), 1);
	assert_int_equal(q.path, rootq.path);
	/* the symlinks themselves can be walked to, never through */
	assert_int_equal(c_walk(s, 2, 4, &q, "lf"), 1);
	assert_int_equal(q.type, 0x02);
	assert_int_equal(c_walk(s, 2, 5, &q, "ld"), 1);
	assert_int_equal(c_walk(s, 2, 6, &q, "ld", "f"), 1);
	assert_int_equal(c_walk(s, 5, 6, &q, "f"), -ELOOP);
	assert_int_equal(c_walk(s, 2, 6, &q, "up", "secret"), 1);
	assert_int_equal(c_walk(s, 0, 6, &q, "esc", "ld", "f"), 2); /* a partial walk */
	assert_int_equal(ws9p_fid_count(s), 6);			    /* 6 was not made */
	/* opening them */
	assert_int_equal(c_lopen(s, 4, P9_L_RDONLY, NULL), -ELOOP);
	assert_int_equal(c_lopen(s, 4, P9_L_WRONLY | P9_L_TRUNC, NULL), -ELOOP);
	assert_int_equal(c_lopen(s, 5, P9_L_RDONLY | P9_L_DIRECTORY, NULL), -ELOOP);
	/* creating in them or over them */
	assert_int_equal(c_clone(s, 5, 6), 0);
	assert_int_equal(c_lcreate(s, 6, "new", P9_L_WRONLY | P9_L_CREATE, 0644), -ELOOP);
	assert_int_equal(c_mkdir(s, 5, "new", 0755), -ELOOP);
	assert_int_equal(c_symlink(s, 5, "new", "x"), -ELOOP);
	assert_int_equal(c_mknod(s, 5, "new", S_IFREG | 0644), -ELOOP);
	assert_false(hexists("outside/dir/new"));
	assert_int_equal(c_clone(s, 2, 7), 0);
	assert_int_equal(c_lcreate(s, 7, "lf", P9_L_WRONLY | P9_L_CREATE | P9_L_TRUNC, 0644),
			 -ELOOP);
	assert_int_equal(c_lcreate(s, 7, "lf", P9_L_WRONLY | P9_L_CREATE | P9_L_EXCL, 0644),
			 -EEXIST);
	/* attributes of a symlink: its own, never its target's */
	assert_int_equal(c_getattr(s, 4, &a), 0);
	assert_true(S_ISLNK(a.mode));
	assert_int_equal(c_setattr(s, 4, 0x1, 0777, 0, 0, 0), -EOPNOTSUPP);
	assert_int_equal(c_setattr(s, 4, 0x8, 0, 0, 0, 0), -EINVAL);
	assert_int_equal(c_setattr(s, 4, 0x10 | 0x20 | 0x80 | 0x100, 0, 0, 1000, 1000), 0);
	struct stat st;
	hstat("root/esc/lf", &st);
	assert_int_equal(st.st_mtim.tv_sec, 1000);
	/* a hard link of a symlink is a symlink; the target gains no link */
	assert_int_equal(c_link(s, 2, 4, "lf2"), 0);
	hstat("root/esc/lf2", &st);
	assert_true(S_ISLNK(st.st_mode));
	/* linking into a symlinked directory */
	assert_int_equal(c_walk(s, 0, 8, NULL, "esc"), 1);
	assert_int_equal(c_link(s, 5, 8, "x"), -ELOOP);
	struct stat secret1;
	hstat("outside/secret", &secret1);
	assert_int_equal(secret1.st_nlink, secret0.st_nlink);
	assert_int_equal(secret1.st_mode, secret0.st_mode);
	assert_int_equal(secret1.st_size, secret0.st_size);
	assert_int_equal(secret1.st_mtim.tv_sec, secret0.st_mtim.tv_sec);
	_cleanup_free_ char *sec = hread("outside/secret");
	assert_string_equal(sec, "secret");
	/* a directory swapped for a symlink between walk and open */
	mkd("root/sw");
	put("root/sw/f", "inside");
	assert_int_equal(c_walk(s, 0, 9, NULL, "sw", "f"), 2);
	assert_int_equal(c_walk(s, 0, 10, NULL, "sw"), 1);
	char a1[512], a2[512];
	host_path(a1, sizeof(a1), "root/sw");
	host_path(a2, sizeof(a2), "root/sw.old");
	assert_int_equal(rename(a1, a2), 0);
	host_path(p, sizeof(p), "outside/dir");
	lnk(p, "root/sw");
	put("outside/dir/f", "outside");
	assert_int_equal(c_lopen(s, 9, P9_L_RDONLY, NULL), -ELOOP);
	assert_int_equal(c_getattr(s, 9, &a), -ELOOP);
	assert_int_equal(c_setattr(s, 9, 0x8, 0, 0, 0, 0), -ELOOP);
	assert_int_equal(c_lopen(s, 10, P9_L_RDONLY, NULL), -ELOOP);
	assert_int_equal(c_clone(s, 10, 11), 0);
	assert_int_equal(c_lcreate(s, 11, "f", P9_L_RDWR | P9_L_CREATE, 0644), -ELOOP);
	assert_int_equal(c_unlinkat(s, 10, "f", 0), -ELOOP);
	assert_int_equal(c_fid_op(s, P9_TREMOVE, 9), -ELOOP);
	_cleanup_free_ char *of = hread("outside/dir/f");
	assert_string_equal(of, "outside");
	/* a FIFO is never opened (it would block the server) */
	char f[512];
	host_path(f, sizeof(f), "root/fifo2");
	assert_int_equal(mkfifo(f, 0644), 0);
	assert_int_equal(c_walk(s, 0, 12, NULL, "fifo2"), 1);
	assert_int_equal(c_lopen(s, 12, P9_L_RDONLY, NULL), -ENXIO);
	assert_int_equal(c_lopen(s, 12, P9_L_WRONLY, NULL), -ENXIO);
	assert_int_equal(c_clone(s, 0, 13), 0);
	assert_int_equal(c_lcreate(s, 13, "fifo2", P9_L_WRONLY | P9_L_CREATE, 0644), -ENXIO);
	(void)buf;
	ws9p_free(s);
}

/* Feed raw bytes as one message; return the errno of its Rlerror, or 0. */
static int raw(struct ws9p *s, const uint8_t *p, size_t n)
{
	assert_int_equal(ws9p_input(s, p, n), (ssize_t)n);
	next_reply(s);
	return R.type == P9_RLERROR ? -(int)r_u32() : 0;
}

static void test_malformed(void **state)
{
	(void)state;
	struct ws9p *s = server();
	put("root/m.txt", "malformed");
	/* truncated: Twalk promising two names, carrying one */
	m_msg(P9_TWALK, "442s", 0, 1, 2, "m.txt");
	m_end();
	assert_int_equal(raw(s, M.b, M.w.n), -EPROTO);
	/* a string longer than the message */
	m_msg(P9_TWALK, "4422", 0, 1, 1, 300);
	m_put("m.txt", 5);
	m_end();
	assert_int_equal(raw(s, M.b, M.w.n), -EPROTO);
	/* too many names */
	m_msg(P9_TWALK, "442", 0, 1, 17);
	for (int i = 0; i < 17; i++)
		m_str("a");
	m_end();
	assert_int_equal(raw(s, M.b, M.w.n), -EINVAL);
	/* every request type, cut short after its header: Rlerror, never a crash */
	for (int t = 0; t < 256; t++) {
		m_begin((uint8_t)t);
		m_end();
		assert_true(raw(s, M.b, M.w.n) < 0);
	}
	/* a Twrite claiming more bytes than it carries */
	assert_int_equal(c_walk(s, 0, 1, NULL, "m.txt"), 1);
	assert_int_equal(c_lopen(s, 1, P9_L_RDWR, NULL), 0);
	m_msg(P9_TWRITE, "484", 1, (uint64_t)0, 1000);
	m_put("abc", 3);
	m_end();
	assert_int_equal(raw(s, M.b, M.w.n), -EPROTO);
	/* huge counts are capped */
	assert_int_equal(c_read(s, 1, 0, 0xffffffffu, NULL, 0), 9);
	char names[1024] = "";
	uint64_t next;
	assert_int_equal(c_readdir(s, 0, 0, 100, names, sizeof(names), &next), -EBADF);
	assert_int_equal(c_clone(s, 0, 2), 0);
	assert_int_equal(c_lopen(s, 2, P9_L_RDONLY, NULL), 0);
	assert_int_equal(c_readdir(s, 2, 0, 0xffffffffu, names, sizeof(names), &next), 3);
	assert_int_equal(c_read(s, 1, UINT64_MAX, 10, NULL, 0), -EINVAL);
	/* a name with a NUL or too long */
	m_msg(P9_TMKDIR, "42", 0, 3);
	m_put("a\0b", 3);
	m_u32(0755);
	m_u32(0);
	assert_int_equal(call(s), -EINVAL);
	char longname[300];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(c_mkdir(s, 0, longname, 0755), -ENAMETOOLONG);
	/* a size below 7 or above msize ends the session */
	uint8_t small[7] = { 6, 0, 0, 0, 100, 1, 0 };
	assert_int_equal(ws9p_input(s, small, sizeof(small)), -EPROTO);
	assert_int_equal(ws9p_input(s, small, sizeof(small)), -EPROTO);
	ws9p_free(s);
	s = server();
	uint8_t big[4] = { 1, 0, 1, 0 }; /* 65537 > MSIZE */
	assert_int_equal(ws9p_input(s, big, 4), -EPROTO);
	ws9p_free(s);
	s = server();
	assert_int_equal(ws9p_input(s, big, 3), 3); /* not known yet */
	assert_int_equal(ws9p_input(s, big + 3, 1), -EPROTO);
	ws9p_free(s);
}

/* A session of requests whose replies do not depend on time. */
static size_t session(uint8_t *out, size_t cap)
{
	size_t n = 0;
#define ADD()                                  \
	do {                                   \
		m_end();                       \
		assert_true(n + M.w.n <= cap); \
		memcpy(out + n, M.b, M.w.n);   \
		n += M.w.n;                    \
	} while (0)
	m_msg(P9_TVERSION, "4s", MSIZE, "9P2000.L");
	ADD();
	m_msg(P9_TATTACH, "44ss4", 0, P9_NOFID, "u", "", 0);
	ADD();
	m_msg(P9_TWALK, "442ss", 0, 1, 2, "sd", "s.txt");
	ADD();
	m_msg(P9_TLOPEN, "44", 1, P9_L_RDWR);
	ADD();
	m_msg(P9_TWRITE, "484", 1, (uint64_t)0, 4);
	m_put("same", 4);
	ADD();
	m_io(P9_TREAD, 1, 0, 100);
	ADD();
	m_msg(P9_TWALK, "442", 0, 2, 1); /* truncated */
	ADD();
	m_msg(P9_TWALK, "442s", 0, 2, 1, "sd");
	ADD();
	m_msg(P9_TLOPEN, "44", 2, P9_L_RDONLY);
	ADD();
	m_io(P9_TREADDIR, 2, 0, 4000);
	ADD();
	m_msg(P9_TCLUNK, "4", 1);
	ADD();
	m_msg(P9_TCLUNK, "4", 1);
	ADD();
#undef ADD
	return n;
}

static void test_split(void **state)
{
	(void)state;
	mkd("root/sd");
	put("root/sd/s.txt", "s");
	static uint8_t in[8192], all[16384], one[16384];
	size_t n = session(in, sizeof(in));
	int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct ws9p *s;
	size_t na, no, k;
	assert_int_equal(ws9p_new(fd, &s), 0);
	assert_int_equal(ws9p_input(s, in, n), (ssize_t)n);
	const uint8_t *o = ws9p_output(s, &na);
	assert_true(na > 0 && na <= sizeof(all));
	memcpy(all, o, na);
	ws9p_free(s);
	/* one byte at a time, draining the output as it comes */
	assert_int_equal(ws9p_new(fd, &s), 0);
	no = 0;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ws9p_input(s, in + i, 1), 1);
		o = ws9p_output(s, &k);
		assert_true(no + k <= sizeof(one));
		if (k)
			memcpy(one + no, o, k);
		no += k;
		ws9p_consume(s, k);
	}
	assert_int_equal(no, na);
	assert_memory_equal(all, one, na);
	ws9p_free(s);
	close(fd);
}

static void test_limits(void **state)
{
	(void)state;
	struct ws9p *s = server();
	/* fids: up to WS9P_FIDS_MAX */
	for (uint32_t i = 1; i < WS9P_FIDS_MAX; i++) {
		m_msg(P9_TWALK, "442", 0, i, 0);
		m_end();
		assert_int_equal(ws9p_input(s, M.b, M.w.n), (ssize_t)M.w.n);
		size_t n;
		ws9p_output(s, &n);
		ws9p_consume(s, n);
	}
	assert_int_equal(ws9p_fid_count(s), WS9P_FIDS_MAX);
	assert_int_equal(c_clone(s, 0, WS9P_FIDS_MAX), -ENFILE);
	assert_int_equal(c_attach(s, WS9P_FIDS_MAX, NULL), -ENFILE);
	assert_int_equal(c_clone(s, 0, 7), -EEXIST);
	assert_int_equal(c_clone(s, 7, 7), 0); /* newfid == fid */
	ws9p_free(s);
	/* the output: past WS9P_OUT_MAX the server stops taking bytes until drained */
	s = server();
	m_msg(P9_TGETATTR, "48", 0, (uint64_t)0x7ff);
	m_end();
	size_t one = M.w.n, count = WS9P_OUT_MAX / 100;
	uint8_t *in = malloc(one * count);
	assert_non_null(in);
	for (size_t i = 0; i < count; i++)
		memcpy(in + i * one, M.b, one);
	ssize_t took = ws9p_input(s, in, one * count);
	assert_true(took > 0 && (size_t)took < one * count);
	assert_int_equal((size_t)took % one, 0);
	size_t n;
	ws9p_output(s, &n);
	assert_true(n > WS9P_OUT_MAX);
	assert_int_equal(ws9p_input(s, in + took, one), 0);
	ws9p_consume(s, n);
	assert_int_equal(ws9p_input(s, in + took, one), (ssize_t)one);
	free(in);
	ws9p_free(s);
}

static int memfd_of(const char *text)
{
	int fd = memfd_create("state", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fd_write_all(fd, text, strlen(text)), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static void test_save_restore(void **state)
{
	(void)state;
	mkd("root/sr");
	put("root/sr/file", "restore me");
	put("root/sr/gone", "soon gone");
	mkd("root/sr/sub");
	put("root/sr/\xff\xfe", "not utf-8");
	struct ws9p *s = server();
	assert_int_equal(c_walk(s, 0, 1, NULL, "sr", "file"), 2);
	assert_int_equal(c_lopen(s, 1, P9_L_RDONLY, NULL), 0);
	assert_int_equal(c_walk(s, 0, 2, NULL, "sr", "sub"), 2);
	assert_int_equal(c_walk(s, 0, 3, NULL, "sr", "gone"), 2);
	assert_int_equal(c_walk(s, 0, 4, NULL, "sr", "\xff\xfe"), 2);
	assert_int_equal(c_lopen(s, 4, P9_L_RDWR | P9_L_APPEND, NULL), 0);
	assert_int_equal(c_walk(s, 0, 5, NULL, "sr", "gone"), 2);
	assert_int_equal(c_lopen(s, 5, P9_L_RDONLY, NULL), 0);
	assert_int_equal(c_walk(s, 0, 6, NULL, "sr"), 1);
	assert_int_equal(c_lopen(s, 6, P9_L_RDONLY, NULL), 0);
	/* a reply not handed out yet */
	m_io(P9_TREAD, 1, 8, 100);
	m_end();
	assert_int_equal(ws9p_input(s, M.b, M.w.n), (ssize_t)M.w.n);
	size_t pending;
	const uint8_t *o = ws9p_output(s, &pending);
	uint8_t saved_out[64];
	assert_true(pending < sizeof(saved_out));
	memcpy(saved_out, o, pending);
	/* a request half sent */
	m_io(P9_TREAD, 1, 0, 100);
	m_end();
	uint8_t req[64];
	size_t reqn = M.w.n;
	memcpy(req, M.b, reqn);
	assert_int_equal(ws9p_input(s, req, 9), 9);
	int sfd = memfd_create("state", MFD_CLOEXEC);
	assert_true(sfd >= 0);
	assert_int_equal(ws9p_save(s, sfd), 0);
	ws9p_free(s);
	_cleanup_free_ char *text = NULL;
	size_t tn;
	assert_int_equal(lseek(sfd, 0, SEEK_SET), 0);
	assert_int_equal(read_fd_small(sfd, 1 << 20, &text, &tn), 0);
	assert_non_null(strstr(text, "\"path_b64\""));
	assert_non_null(strstr(text, "\"sr/file\""));
	/* a copy of the tree, where one file is gone */
	char copy[256], src[256];
	snprintf(copy, sizeof(copy), "%s/copy", base);
	snprintf(src, sizeof(src), "%s/root", base);
	char *const cp[] = { "/bin/cp", "-a", src, copy, NULL };
	assert_int_equal(run_program_quiet(cp), 0);
	char p[512];
	snprintf(p, sizeof(p), "%s/sr/gone", copy);
	assert_int_equal(unlink(p), 0);
	int cfd = open(copy, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(cfd >= 0);
	assert_int_equal(ws9p_new(cfd, &s), 0);
	assert_int_equal(lseek(sfd, 0, SEEK_SET), 0);
	assert_int_equal(ws9p_restore(s, sfd), 0);
	assert_int_equal(ws9p_fid_count(s), 7);
	/* the pending reply first, then the rest of the half-sent request */
	size_t n;
	o = ws9p_output(s, &n);
	assert_int_equal(n, pending);
	assert_memory_equal(o, saved_out, pending);
	next_reply(s);
	assert_int_equal(r_u32(), 2);
	assert_memory_equal(r_take(2), "me", 2);
	assert_int_equal(ws9p_input(s, req + 9, reqn - 9), (ssize_t)(reqn - 9));
	next_reply(s);
	assert_int_equal(R.type, P9_TREAD + 1);
	assert_int_equal(r_u32(), 10);
	assert_memory_equal(r_take(10), "restore me", 10);
	/* the others */
	char buf[256];
	struct attr a;
	assert_int_equal(c_walk(s, 2, 8, NULL, ".."), 1);
	assert_int_equal(c_getattr(s, 3, &a), -ESTALE);
	assert_int_equal(c_read(s, 5, 0, 10, buf, sizeof(buf)), -ESTALE);
	assert_int_equal(c_walk(s, 3, 9, NULL, ".."), -ESTALE);
	assert_int_equal(c_fid_op(s, P9_TCLUNK, 3), 0);
	assert_int_equal(c_write(s, 4, 0, "!"), 1);
	assert_int_equal(c_read(s, 4, 0, 100, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "not utf-8!");
	char names[1024] = "";
	uint64_t next;
	assert_int_equal(c_readdir(s, 6, 0, 4000, names, sizeof(names), &next), 5);
	assert_null(strstr(names, "gone"));
	/* a used server takes no state */
	assert_int_equal(lseek(sfd, 0, SEEK_SET), 0);
	assert_int_equal(ws9p_restore(s, sfd), -EBUSY);
	ws9p_free(s);
	close(sfd);
	/* garbage */
	static const char *const bad[] = {
		"",
		"{",
		"[]",
		"{\"version\":2,\"msize\":65536,\"fids\":[],\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":100,\"fids\":[],\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":{},\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[],\"partial\":\"!!\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[],\"partial\":\"\"}",
		/* a partial request whose size is below 7 */
		"{\"version\":1,\"msize\":65536,\"fids\":[],\"partial\":\"BgAAAA==\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":1,\"path\":\"../x\"}],"
		"\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":1,\"path\":\"a\"},"
		"{\"fid\":1,\"path\":\"b\"}],\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":-1,\"path\":\"a\"}],"
		"\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":1,\"path\":\"a\",\"open\":64}],"
		"\"partial\":\"\",\"out\":\"\"}",
		"{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":1}],\"partial\":\"\",\"out\":"
		"\"\"}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(ws9p_new(cfd, &s), 0);
		int fd = memfd_of(bad[i]);
		assert_int_equal(ws9p_restore(s, fd), -EINVAL);
		close(fd);
		assert_int_equal(ws9p_fid_count(s), 0);
		assert_null(ws9p_output(s, &n));
		ws9p_free(s);
	}
	/* the smallest good state */
	assert_int_equal(ws9p_new(cfd, &s), 0);
	int fd = memfd_of("{\"version\":1,\"msize\":65536,\"fids\":[{\"fid\":0,\"path\":\"\"}],"
			  "\"partial\":\"\",\"out\":\"\"}");
	assert_int_equal(ws9p_restore(s, fd), 0);
	close(fd);
	assert_int_equal(c_walk(s, 0, 1, NULL, "sr", "file"), 2);
	ws9p_free(s);
	close(cfd);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_version), T(test_files),	 T(test_escapes),      T(test_malformed),
		T(test_split),	 T(test_limits), T(test_save_restore),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
