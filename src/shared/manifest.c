/* manifest.c - read, write and verify an image directory's manifest.json (format in manifest.h).
 *
 * Trust boundary: the image directory and its manifest are files a user or another process could
 * have changed. The manifest is read with a hard size cap, parsed strictly (duplicate keys
 * rejected, every field type-checked, file names confined to the directory), and every file is
 * opened without following symlinks, checked to be regular, then sized and hashed through the
 * same fd. Runs in the caller's thread; no globals.
 */
#include "manifest.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "fdutil.h"
#include "log.h"
#include "parse.h"

#define NAME_MAX_LEN 255
#define FIELD_MAX_LEN 256

void manifest_asset_done(struct manifest_asset *a)
{
	if (!a)
		return;
	free(a->file);
	free(a->path);
	free(a->version);
	memset(a, 0, sizeof(*a));
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	free(m->dir);
	free(m->name);
	free(m->arch);
	free(m->created);
	manifest_asset_done(&m->kernel);
	manifest_asset_done(&m->initrd);
	manifest_asset_done(&m->rootfs);
	free(m);
}

void manifest_now(char ret[32])
{
	/* reproducible builds (the package): the time of the commit, not of the build */
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	uint64_t epoch;
	time_t t = sde && parse_u64(sde, &epoch) == 0 && epoch < (1ULL << 40) ? (time_t)epoch
									      : time(NULL);
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(ret, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(ret, 32, "1970-01-01T00:00:00Z");
}

/* A plain file name: [A-Za-z0-9._+-], 1..255 bytes, not starting with '.'. */
static int file_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > NAME_MAX_LEN || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '+'))
			return 0;
	}
	return 1;
}

/* Printable text without control characters, 1..FIELD_MAX_LEN bytes. */
static int text_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FIELD_MAX_LEN)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static int set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int set_error(char **ret_error, int r, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	if (!ret_error)
		return r;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	free(*ret_error);
	*ret_error = s;
	return r;
}

static int get_text(json_t *obj, const char *key, char **ret)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
	    !text_valid(json_string_value(v)))
		return -EBADMSG;
	char *s = strdup(json_string_value(v));
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static int parse_asset(json_t *root, const char *key, const char *dir, int want_version,
		       struct manifest_asset *a, char **ret_error, const char *mpath)
{
	json_t *o = json_object_get(root, key);
	json_t *sz;
	_cleanup_free_ char *sha = NULL;
	int r;

	if (!json_is_object(o))
		return set_error(ret_error, -EBADMSG, "%s: \"%s\" is missing or not an object",
				 mpath, key);
	r = get_text(o, "file", &a->file);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !file_name_valid(a->file))
		return set_error(ret_error, -EBADMSG,
				 "%s: %s.file must be a plain file name inside the image directory",
				 mpath, key);
	r = get_text(o, "sha256", &sha);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !sha256_hex_valid(sha))
		return set_error(ret_error, -EBADMSG,
				 "%s: %s.sha256 must be 64 lowercase hex digits", mpath, key);
	memcpy(a->sha256, sha, SHA256_HEX_LEN + 1);
	sz = json_object_get(o, "size");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return set_error(ret_error, -EBADMSG, "%s: %s.size must be a non-negative integer",
				 mpath, key);
	a->size = (uint64_t)json_integer_value(sz);
	if (want_version) {
		r = get_text(o, "version", &a->version);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return set_error(ret_error, -EBADMSG, "%s: %s.version must be a string",
					 mpath, key);
	}
	if (asprintf(&a->path, "%s/%s", dir, a->file) < 0) {
		a->path = NULL;
		return -ENOMEM;
	}
	return 0;
}

int manifest_parse(const char *text, size_t len, const char *image_dir, const char *mpath,
		   struct manifest **ret, char **ret_error)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	json_error_t jerr;
	json_t *root, *fmt;
	int r;

	if (len > MANIFEST_MAX_BYTES)
		return set_error(ret_error, -EFBIG, "%s: larger than %d bytes", mpath,
				 MANIFEST_MAX_BYTES);
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return set_error(ret_error, -EBADMSG, "%s: not valid JSON (line %d: %s)", mpath,
				 jerr.line, jerr.text);
	m = calloc(1, sizeof(*m));
	if (!m) {
		json_decref(root);
		return -ENOMEM;
	}
	if (!json_is_object(root)) {
		r = set_error(ret_error, -EBADMSG, "%s: not a JSON object", mpath);
		goto out;
	}
	fmt = json_object_get(root, "format");
	if (!json_is_integer(fmt) || json_integer_value(fmt) != MANIFEST_FORMAT) {
		r = set_error(ret_error, -EBADMSG, "%s: \"format\" must be %d", mpath,
			      MANIFEST_FORMAT);
		goto out;
	}
	const char *keys[] = { "name", "arch", "created" };
	char **dst[] = { &m->name, &m->arch, &m->created };
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		r = get_text(root, keys[i], dst[i]);
		if (r == -EBADMSG)
			r = set_error(ret_error, r, "%s: \"%s\" must be a non-empty string", mpath,
				      keys[i]);
		if (r < 0)
			goto out;
	}
	r = parse_asset(root, "kernel", image_dir, 1, &m->kernel, ret_error, mpath);
	if (r < 0)
		goto out;
	r = parse_asset(root, "initrd", image_dir, 0, &m->initrd, ret_error, mpath);
	if (r < 0)
		goto out;
	if (json_object_get(root, "rootfs")) {
		r = parse_asset(root, "rootfs", image_dir, 0, &m->rootfs, ret_error, mpath);
		if (r < 0)
			goto out;
	}
	m->dir = strdup(image_dir);
	if (!m->dir)
		r = -ENOMEM;
out:
	json_decref(root);
	if (r == -ENOMEM)
		set_error(ret_error, r, "out of memory");
	if (r < 0)
		return r;
	*ret = TAKE_PTR(m);
	return 0;
}

static int load_full(const char *image_dir, struct manifest **ret, char **ret_error)
{
	_cleanup_free_ char *mpath = NULL, *text = NULL;
	size_t len = 0;
	int r;

	if (!image_dir || !*image_dir)
		return set_error(ret_error, -EINVAL, "no image directory given");
	if (asprintf(&mpath, "%s/%s", image_dir, MANIFEST_FILENAME) < 0) {
		mpath = NULL;
		return -ENOMEM;
	}
	r = read_file_small(mpath, MANIFEST_MAX_BYTES, &text, &len);
	if (r == -EFBIG)
		return set_error(ret_error, r, "%s: larger than %d bytes", mpath,
				 MANIFEST_MAX_BYTES);
	if (r < 0)
		return set_error(ret_error, r, "%s: %s", mpath, strerror(-r));
	return manifest_parse(text, len, image_dir, mpath, ret, ret_error);
}

int manifest_load(const char *image_dir, struct manifest **ret)
{
	return load_full(image_dir, ret, NULL);
}

static int verify_asset(const struct manifest_asset *a, char **ret_error)
{
	char hex[SHA256_HEX_LEN + 1];
	struct stat st;
	uint64_t hashed = 0;
	int r;

	_cleanup_close_ int fd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	if (fd < 0) {
		r = negative_errno();
		if (r == -ELOOP)
			return set_error(ret_error, r, "%s: is a symlink (refused)", a->path);
		return set_error(ret_error, r, "%s: %s", a->path, strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = negative_errno();
		return set_error(ret_error, r, "%s: %s", a->path, strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return set_error(ret_error, -EBADF, "%s: not a regular file", a->path);
	if ((uint64_t)st.st_size != a->size)
		return set_error(ret_error, -EMSGSIZE,
				 "%s: size %llu bytes, manifest says %llu (truncated or replaced?)",
				 a->path, (unsigned long long)st.st_size,
				 (unsigned long long)a->size);
	r = sha256_hex_fd(fd, hex, &hashed);
	if (r < 0)
		return set_error(ret_error, r, "%s: cannot hash: %s", a->path, strerror(-r));
	if (hashed != a->size)
		return set_error(ret_error, -EMSGSIZE, "%s: changed size while being read",
				 a->path);
	if (!streq(hex, a->sha256))
		return set_error(ret_error, -EBADMSG,
				 "%s: sha256 mismatch (file %.16s..., manifest %.16s...): tampered "
				 "or corrupted",
				 a->path, hex, a->sha256);
	return 0;
}

int manifest_verify(const char *image_dir, char **ret_error)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	_cleanup_free_ char *err = NULL;
	int r = load_full(image_dir, &m, &err);
	if (r == 0)
		r = verify_asset(&m->kernel, &err);
	if (r == 0)
		r = verify_asset(&m->initrd, &err);
	if (r == 0 && m->rootfs.file)
		r = verify_asset(&m->rootfs, &err);
	if (r < 0) {
		if (ret_error) {
			if (!err && asprintf(&err, "%s: %s", image_dir, strerror(-r)) < 0)
				err = NULL;
			free(*ret_error);
			*ret_error = TAKE_PTR(err);
		}
		return r;
	}
	return 0;
}

int manifest_asset_from_file(struct manifest_asset *a, const char *dir, const char *name,
			     const char *version)
{
	struct manifest_asset n = { 0 };
	int r;

	if (!file_name_valid(name) || (version && !text_valid(version)))
		return -EINVAL;
	n.file = strdup(name);
	if (version)
		n.version = strdup(version);
	if (!n.file || (version && !n.version) || asprintf(&n.path, "%s/%s", dir, name) < 0) {
		n.path = NULL;
		manifest_asset_done(&n);
		return -ENOMEM;
	}
	r = sha256_hex_file(n.path, n.sha256, &n.size);
	if (r < 0) {
		manifest_asset_done(&n);
		return r;
	}
	*a = n;
	return 0;
}

static json_t *asset_json(const struct manifest_asset *a)
{
	json_t *o = json_pack("{s:s, s:s, s:I}", "file", a->file, "sha256", a->sha256, "size",
			      (json_int_t)a->size);
	if (o && a->version && json_object_set_new(o, "version", json_string(a->version)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int manifest_write(const char *image_dir, const struct manifest *m)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	char now[32];
	json_t *root, *k, *i, *rf = NULL;

	if (!m->name || !m->arch || !m->kernel.file || !m->initrd.file || !m->kernel.version ||
	    !text_valid(m->name) || !text_valid(m->arch) || !file_name_valid(m->kernel.file) ||
	    !file_name_valid(m->initrd.file) || !sha256_hex_valid(m->kernel.sha256) ||
	    !sha256_hex_valid(m->initrd.sha256))
		return -EINVAL;
	if (m->rootfs.file &&
	    (!file_name_valid(m->rootfs.file) || !sha256_hex_valid(m->rootfs.sha256)))
		return -EINVAL;
	if (!m->created)
		manifest_now(now);
	k = asset_json(&m->kernel);
	i = asset_json(&m->initrd);
	if (m->rootfs.file)
		rf = asset_json(&m->rootfs);
	if (!k || !i || (m->rootfs.file && !rf)) {
		json_decref(k);
		json_decref(i);
		json_decref(rf);
		return -ENOMEM;
	}
	root = json_pack("{s:i, s:s, s:s, s:o, s:o}", "format", MANIFEST_FORMAT, "name", m->name,
			 "arch", m->arch, "kernel", k, "initrd", i);
	if (!root) {
		json_decref(rf);
		return -ENOMEM;
	}
	if ((rf && json_object_set_new(root, "rootfs", rf) < 0) ||
	    json_object_set_new(root, "created", json_string(m->created ? m->created : now)) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	_cleanup_free_ char *nl = malloc(n + 2);
	if (!nl)
		return -ENOMEM;
	memcpy(nl, text, n);
	nl[n] = '\n';
	nl[n + 1] = 0;
	if (asprintf(&path, "%s/%s", image_dir, MANIFEST_FILENAME) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	return write_file_atomic(path, nl, n + 1, 0644);
}
