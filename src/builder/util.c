/* util.c - capsem-builder's path lookups, atomic file copies and directory swaps.
 *
 * Trust boundary: paths come from the user's command line and environment; nothing here parses
 * untrusted data. Main thread of capsem-builder.
 */
#include "util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "fdutil.h"
#include "home.h"
#include "macro.h"
#include "parse.h"
#include "sha256.h"

char *util_cache_root(const char *opt)
{
	const char *e = getenv("CAPSEM_CACHE");
	_cleanup_free_ char *home = NULL;
	char *p = NULL;
	if (opt && *opt)
		return strdup(opt);
	if (e && *e)
		return strdup(e);
	if (user_home(&home) < 0)
		return NULL;
	return asprintf(&p, "%s/.cache/capsem", home) < 0 ? NULL : p;
}

char *util_images_dir(const char *opt)
{
	char *p = NULL;
	if (opt && *opt)
		return strdup(opt);
	return capsem_images_dir(&p) < 0 ? NULL : p;
}

double util_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int util_is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int util_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int copy_fd(int in, int out)
{
	for (;;) {
		ssize_t k = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (k == 0)
			return 0;
		if (k > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
			return negative_errno();
		break; /* fall back to read/write from the current offsets */
	}
	char chunk[65536];
	for (;;) {
		ssize_t k = fd_read_some(in, chunk, sizeof(chunk));
		if (k < 0)
			return (int)k;
		if (k == 0)
			return 0;
		int r = fd_write_all(out, chunk, (size_t)k);
		if (r < 0)
			return r;
	}
}

int util_copy_atomic(const char *src, const char *dst, unsigned mode)
{
	char tmp[PATH_MAX];
	int r;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", dst, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (in < 0)
		return negative_errno();
	_cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (out < 0)
		return negative_errno();
	r = copy_fd(in, out);
	if (r == 0 && fchmod(out, mode) < 0)
		r = negative_errno();
	if (r == 0 && fsync(out) < 0)
		r = negative_errno();
	if (r == 0 && rename(tmp, dst) < 0)
		r = negative_errno();
	if (r < 0)
		unlink(tmp);
	return r;
}

int util_publish_dir(const char *stage, const char *final)
{
	if (rename(stage, final) == 0)
		return 0;
	if (errno == EEXIST || errno == ENOTEMPTY) {
		rm_rf(stage);
		return 0;
	}
	int r = negative_errno();
	rm_rf(stage);
	return r;
}

int util_replace_dir(const char *stage, const char *final)
{
	if (renameat2(AT_FDCWD, stage, AT_FDCWD, final, RENAME_EXCHANGE) == 0)
		return rm_rf(stage); /* stage now holds the old tree */
	if (errno != ENOENT)
		return negative_errno();
	return rename(stage, final) < 0 ? negative_errno() : 0;
}

int util_read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	size_t size = (size_t)st.st_size;
	_cleanup_free_ char *p = malloc(size + 1);
	if (!p)
		return -ENOMEM;
	int r = fd_read_exact(fd, p, size);
	if (r < 0)
		return r == -EPIPE ? -EIO : r; /* shrank while being read */
	char extra;
	if (fd_read_some(fd, &extra, 1) != 0)
		return -EIO; /* grew while being read */
	p[size] = 0;
	*ret = TAKE_PTR(p);
	if (ret_len)
		*ret_len = size;
	return 0;
}

int util_mkdtemp(const char *parent, const char *prefix, char **ret)
{
	char *p = NULL;
	if (asprintf(&p, "%s/.%s.tmp-XXXXXX", parent, prefix) < 0)
		return -ENOMEM;
	if (!mkdtemp(p)) {
		int r = negative_errno();
		free(p);
		return r;
	}
	if (chmod(p, 0755) < 0) {
		int r = negative_errno();
		rmdir(p);
		free(p);
		return r;
	}
	*ret = p;
	return 0;
}

int util_cache_check(const char *dir, const char *file, struct json_t **ret_info,
		     const char **ret_why)
{
	_cleanup_free_ char *path = NULL, *info_path = NULL, *text = NULL;
	char hex[SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	size_t len = 0;
	json_t *info, *out;
	int r;

	if (asprintf(&path, "%s/%s", dir, file) < 0 ||
	    asprintf(&info_path, "%s/build.json", dir) < 0)
		return -ENOMEM;
	if (!util_is_dir(dir))
		return -ENOENT;
	r = read_file_small(info_path, 1 << 20, &text, &len);
	if (r < 0) {
		*ret_why = "build.json is missing or unreadable";
		return -EBADMSG;
	}
	info = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	out = json_object_get(info, "output");
	if (!json_is_object(info) || !json_is_object(out) ||
	    !json_is_string(json_object_get(out, "sha256")) ||
	    !json_is_integer(json_object_get(out, "size"))) {
		json_decref(info);
		*ret_why = "build.json is malformed";
		return -EBADMSG;
	}
	r = sha256_hex_file(path, hex, &size);
	if (r < 0 || size != (uint64_t)json_integer_value(json_object_get(out, "size")) ||
	    !streq(hex, json_string_value(json_object_get(out, "sha256")))) {
		json_decref(info);
		*ret_why = r < 0 ? "the artefact is missing"
				 : "the artefact does not match build.json";
		return -EBADMSG;
	}
	*ret_info = info;
	return 0;
}

int util_cache_write_info(const char *dir, const char *file, struct json_t *info)
{
	_cleanup_free_ char *path = NULL, *info_path = NULL, *text = NULL;
	char hex[SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	int r;

	if (asprintf(&path, "%s/%s", dir, file) < 0 ||
	    asprintf(&info_path, "%s/build.json", dir) < 0)
		return -ENOMEM;
	r = sha256_hex_file(path, hex, &size);
	if (r < 0)
		return r;
	if (json_object_set_new(info, "output",
				json_pack("{s:s, s:s, s:I}", "file", file, "sha256", hex, "size",
					  (json_int_t)size)) < 0)
		return -ENOMEM;
	text = json_dumps(info, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	_cleanup_free_ char *nl = NULL;
	if (asprintf(&nl, "%s\n", text) < 0)
		return -ENOMEM;
	return write_file_atomic(info_path, nl, n + 1, 0644);
}

unsigned util_default_jobs(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 && n <= 1024 ? (unsigned)n : 1;
}

int util_parse_jobs(const char *s, unsigned *ret)
{
	uint32_t v;
	if (parse_u32(s, &v) < 0 || v == 0 || v > 1024)
		return -EINVAL;
	*ret = v;
	return 0;
}
