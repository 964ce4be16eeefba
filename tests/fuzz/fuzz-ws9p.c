/* fuzz-ws9p.c - the workspace's 9P2000.L server (src/workspace/ws9p*.c) fed arbitrary bytes as
 * the guest's stream, after a valid Tversion + Tattach (fid 0 is the root), on a small real tree
 * rebuilt before every input: a file, a directory, and symlinks to a canary file and a directory
 * outside the root.
 *
 * Input: byte 0 steers the run (bits 0-3: the chunk size the stream is fed in, 0 = all at once;
 * bit 7: save the state halfway through, restore it into a new server and go on), the rest is
 * the stream. Invariants checked: every reply is framed (7 <= size <= msize), the fid count stays
 * within WS9P_FIDS_MAX, a save always restores, and nothing outside the root ever changes. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "ws9p.h"
#include "ws9pwire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MSIZE 8192u
#define CANARY "canary: never written"

static char base[64];

static void cleanup(void)
{
	if (base[0])
		(void)rm_rf(base);
}

static void path_of(char *p, size_t n, const char *rel)
{
	snprintf(p, n, "%s/%s", base, rel);
}

static void mk(const char *rel, const char *content)
{
	char p[256];
	path_of(p, sizeof(p), rel);
	if (!content) {
		if (mkdir(p, 0755) < 0)
			abort();
		return;
	}
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || fd_write_all(fd, content, strlen(content)) < 0)
		abort();
	close(fd);
}

static void ln(const char *target, const char *rel)
{
	char p[256], t[256];
	path_of(p, sizeof(p), rel);
	path_of(t, sizeof(t), target);
	if (symlink(t, p) < 0)
		abort();
}

/* The root rebuilt, its fd (O_PATH). */
static int fresh_root(void)
{
	char p[256];
	if (!base[0]) {
		snprintf(base, sizeof(base), "/tmp/fuzz-ws9p-XXXXXX");
		if (!mkdtemp(base))
			abort();
		atexit(cleanup);
		mk("outside", NULL);
		mk("outside/canary", CANARY);
	}
	path_of(p, sizeof(p), "root");
	(void)rm_rf(p);
	mk("root", NULL);
	mk("root/f", "hello, 9p");
	mk("root/d", NULL);
	mk("root/d/g", "in d");
	ln("outside/canary", "root/lf");
	ln("outside", "root/d/ld");
	int fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		abort();
	return fd;
}

/* Nothing outside the root changed: the canary's bytes and mode, and no new entry. */
static void check_outside(void)
{
	char p[256];
	struct stat st;
	_cleanup_free_ char *text = NULL;
	size_t n;
	path_of(p, sizeof(p), "outside/canary");
	if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0644 ||
	    st.st_nlink != 1 || read_file_small(p, 4096, &text, &n) < 0 || !streq(text, CANARY))
		__builtin_trap();
	path_of(p, sizeof(p), "outside");
	if (lstat(p, &st) < 0 || st.st_nlink != 2 || (st.st_mode & 07777) != 0755)
		__builtin_trap();
	_cleanup_closedir_ DIR *d = opendir(p);
	struct dirent *de;
	int k = 0;
	while (d && (de = readdir(d)))
		k++;
	if (k != 3) /* ".", "..", canary */
		__builtin_trap();
}

/* Hand out every reply, checking its framing. */
static void drain(struct ws9p *s)
{
	size_t n;
	const uint8_t *o = ws9p_output(s, &n);
	for (size_t i = 0; i < n;) {
		if (n - i < P9_HDR)
			__builtin_trap();
		uint32_t sz = p9_le32(o + i);
		if (sz < P9_HDR || sz > WS9P_MSIZE_MAX || sz > n - i)
			__builtin_trap();
		i += sz;
	}
	ws9p_consume(s, n);
	if (ws9p_fid_count(s) > WS9P_FIDS_MAX)
		__builtin_trap();
}

/* Feed p[0, n) in chunks of chunk bytes (0: all at once). 0, or -1 once the stream broke. */
static int feed(struct ws9p *s, const uint8_t *p, size_t n, size_t chunk)
{
	size_t off = 0;
	while (off < n) {
		size_t k = chunk ? MIN(chunk, n - off) : n - off;
		ssize_t r = ws9p_input(s, p + off, k);
		if (r < 0)
			return -1;
		off += (size_t)r;
		drain(s);
	}
	return 0;
}

static struct ws9p *restored(struct ws9p *s, int rootfd)
{
	int fd = memfd_create("ws9p-state", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (ws9p_save(s, fd) < 0)
		__builtin_trap();
	ws9p_free(s);
	struct ws9p *t = NULL;
	if (lseek(fd, 0, SEEK_SET) != 0 || ws9p_new(rootfd, &t) < 0)
		abort();
	if (ws9p_restore(t, fd) < 0)
		__builtin_trap();
	close(fd);
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t preamble[] = {
		/* Tversion tag 0xffff msize 8192 "9P2000.L" */
		21, 0, 0, 0, 100, 0xff, 0xff, 0x00, 0x20, 0, 0, 8, 0, '9', 'P', '2', '0', '0', '0',
		'.', 'L',
		/* Tattach tag 1 fid 0 afid ~0 uname "" aname "" n_uname 0 */
		23, 0, 0, 0, 104, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0
	};
	if (size < 1)
		return 0;
	int rootfd = fresh_root();
	struct ws9p *s = NULL;
	if (ws9p_new(rootfd, &s) < 0)
		abort();
	if (feed(s, preamble, sizeof(preamble), 0) < 0 || ws9p_fid_count(s) != 1)
		__builtin_trap();
	size_t chunk = data[0] & 0x0f;
	const uint8_t *p = data + 1;
	size_t n = size - 1, half = (data[0] & 0x80) ? n / 2 : n;
	if (feed(s, p, half, chunk) == 0 && half < n) {
		s = restored(s, rootfd);
		(void)feed(s, p + half, n - half, chunk);
	}
	ws9p_free(s);
	close(rootfd);
	check_outside();
	return 0;
}
