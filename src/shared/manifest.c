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
#include "home.h"
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
	manifest_asset_done(&m->disk);
	manifest_asset_done(&m->workspace);
	free(m->base);
	free(m->base_dir);
	free(m->parent_vm);
	free(m->description);
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

int manifest_image_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > MANIFEST_IMAGE_NAME_MAX ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
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
	json_t *hash = json_object_get(o, "hash");
	if (hash && !(json_is_string(hash) && streq(json_string_value(hash), "sparse-64k")))
		return set_error(ret_error, -EBADMSG, "%s: %s.hash must be \"sparse-64k\"", mpath,
				 key);
	a->sparse = hash != NULL;
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
	json_t *base = json_object_get(root, "base");
	if (base) {
		_cleanup_free_ char *bsha = NULL;
		r = json_is_object(base) ? get_text(base, "name", &m->base) : -EBADMSG;
		if (r == 0 && !manifest_image_name_valid(m->base))
			r = -EBADMSG;
		if (r == 0)
			r = get_text(base, "manifest_sha256", &bsha);
		if (r == 0 && (!bsha || !sha256_hex_valid(bsha)))
			r = -EBADMSG;
		if (r == -EBADMSG)
			r = set_error(ret_error, r,
				      "%s: \"base\" must be {\"name\": an image name, "
				      "\"manifest_sha256\": 64 lowercase hex digits}",
				      mpath);
		if (r < 0 || !bsha) {
			r = r < 0 ? r : -EBADMSG;
			goto out;
		}
		memcpy(m->base_sha256, bsha, SHA256_HEX_LEN + 1);
		if (json_object_get(root, "kernel") || json_object_get(root, "initrd") ||
		    json_object_get(root, "rootfs")) {
			r = set_error(ret_error, -EBADMSG,
				      "%s: a fork image has no kernel, initrd or rootfs of its own",
				      mpath);
			goto out;
		}
		r = parse_asset(root, "disk", image_dir, 0, &m->disk, ret_error, mpath);
		if (r == 0 && json_object_get(root, "workspace"))
			r = parse_asset(root, "workspace", image_dir, 0, &m->workspace, ret_error,
					mpath);
		for (size_t i = 0; r == 0 && i < 2; i++) {
			const char *k = i ? "description" : "parent_vm";
			if (json_object_get(root, k)) {
				r = get_text(root, k, i ? &m->description : &m->parent_vm);
				if (r == -EBADMSG)
					r = set_error(ret_error, r, "%s: \"%s\" must be a string",
						      mpath, k);
			}
		}
		if (r < 0)
			goto out;
		m->dir = strdup(image_dir);
		r = m->dir ? 0 : -ENOMEM;
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

static int read_manifest(const char *image_dir, struct manifest **ret, char **ret_error)
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

/* A fork's base: <parent of image_dir>/<base>, loaded, never a fork itself; its kernel, initrd
 * and rootfs become the fork's. */
static int load_base(struct manifest *m, char **ret_error)
{
	_cleanup_manifest_ struct manifest *b = NULL;
	const char *slash = strrchr(m->dir, '/');
	int r = slash ? asprintf(&m->base_dir, "%.*s/%s", (int)(slash - m->dir), m->dir, m->base)
		      : asprintf(&m->base_dir, "%s", m->base);
	if (r < 0) {
		m->base_dir = NULL;
		return -ENOMEM;
	}
	r = read_manifest(m->base_dir, &b, NULL);
	if (r == -ENOENT) { /* not beside the fork: the package's images (capsem_image_find) */
		const char *sys = capsem_system_images_dir();
		free(m->base_dir);
		if (asprintf(&m->base_dir, "%s/%s", sys, m->base) < 0) {
			m->base_dir = NULL;
			return -ENOMEM;
		}
		r = read_manifest(m->base_dir, &b, NULL);
	}
	if (r < 0 && r != -ENOENT)
		r = read_manifest(m->base_dir, &b, ret_error); /* again, for the message */
	if (r == -ENOENT)
		return set_error(ret_error, r,
				 "%s: the base image '%s' of this fork is not installed (%s)",
				 m->dir, m->base, m->base_dir);
	if (r < 0)
		return r;
	if (b->base)
		return set_error(ret_error, -EBADMSG,
				 "%s: its base '%s' is itself a fork (a fork names its first base)",
				 m->dir, m->base);
	m->kernel = b->kernel;
	m->initrd = b->initrd;
	m->rootfs = b->rootfs;
	memset(&b->kernel, 0, sizeof(b->kernel));
	memset(&b->initrd, 0, sizeof(b->initrd));
	memset(&b->rootfs, 0, sizeof(b->rootfs));
	return 0;
}

static int load_full(const char *image_dir, struct manifest **ret, char **ret_error)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	int r = read_manifest(image_dir, &m, ret_error);
	if (r == 0 && m->base)
		r = load_base(m, ret_error);
	if (r == 0)
		*ret = TAKE_PTR(m);
	return r;
}

int manifest_load(const char *image_dir, struct manifest **ret)
{
	return load_full(image_dir, ret, NULL);
}

/* ---- the verification cache: <dir>/.verified ---- */

#define VCACHE_FILE ".verified"
#define VCACHE_MAX (64 * 1024)

/* The key of a file's state: inode, size, mtime and ctime (nanoseconds). */
static void vcache_key(const struct stat *st, char out[128])
{
	snprintf(out, 128, "%llu:%llu:%lld.%09ld:%lld.%09ld", (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_size, (long long)st->st_mtim.tv_sec,
		 st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

/* Where the cache of DIR lives: DIR/.verified for the user's own images; for the package's
 * (under capsem_system_images_dir(), read-only and shared by every user, removed by the package
 * manager) <capsem home>/cache/verified/<name>.json, so that a boot never writes into /usr.
 * 0 with *ret, or -ENOENT (no place to keep it: verify without a cache), -ENOMEM. */
static int vcache_path(const char *dir, char **ret)
{
	const char *sys = capsem_system_images_dir(), *rest = startswith(dir, sys);
	_cleanup_free_ char *h = NULL;
	int r;
	if (!rest || rest[0] != '/' || !file_name_valid(rest + 1))
		return asprintf(ret, "%s/" VCACHE_FILE, dir) < 0 ? -ENOMEM : 0;
	r = capsem_home(&h);
	if (r < 0)
		return r;
	return asprintf(ret, "%s/cache/verified/%s.json", h, rest + 1) < 0 ? -ENOMEM : 0;
}

static json_t *vcache_load(const char *dir)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	size_t len = 0;
	if (vcache_path(dir, &path) < 0 || read_file_small(path, VCACHE_MAX, &text, &len) < 0)
		return NULL;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static void vcache_save(const char *dir, json_t *c)
{
	_cleanup_free_ char *path = NULL, *text = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text || vcache_path(dir, &path) < 0)
		return;
	char *slash = strrchr(path, '/');
	*slash = '\0';
	int r = mkdir_p(path, 0700);
	*slash = '/';
	if (r == 0)
		(void)write_file_atomic(path, text, strlen(text), 0644); /* best effort */
}

/* Verify one asset; *cache (per directory, may be NULL) says what was verified before and gets
 * what is verified now; *dirty is set when it changed. */
static int verify_asset(const struct manifest_asset *a, json_t *cache, int *dirty, char **ret_error)
{
	char hex[SHA256_HEX_LEN + 1], key[128];
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
	vcache_key(&st, key);
	json_t *e = cache ? json_object_get(cache, a->file) : NULL;
	if (json_is_string(json_object_get(e, key)) &&
	    streq(json_string_value(json_object_get(e, key)), a->sha256))
		return 0; /* this very file was hashed before: unchanged since */
	r = a->sparse ? sha256_hex_fd_sparse(fd, hex, &hashed) : sha256_hex_fd(fd, hex, &hashed);
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
	if (cache && json_object_set_new(cache, a->file, json_pack("{s:s}", key, hex)) == 0)
		*dirty = 1;
	return 0;
}

/* Verify the assets of one directory (dir), with its cache. */
static int verify_dir(const char *dir, const struct manifest_asset *const *as, size_t n,
		      char **ret_error)
{
	json_t *cache = vcache_load(dir);
	int dirty = 0, r = 0;
	if (!cache)
		cache = json_object();
	for (size_t i = 0; i < n && r == 0; i++)
		if (as[i]->file)
			r = verify_asset(as[i], cache, &dirty, ret_error);
	if (r == 0 && dirty)
		vcache_save(dir, cache);
	json_decref(cache);
	return r;
}

int manifest_verify(const char *image_dir, char **ret_error)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	_cleanup_free_ char *err = NULL;
	int r = load_full(image_dir, &m, &err);
	if (r == 0 && m->base) {
		/* the base the fork was made on, not a rebuilt one */
		_cleanup_free_ char *bm = NULL;
		char hex[SHA256_HEX_LEN + 1];
		if (asprintf(&bm, "%s/%s", m->base_dir, MANIFEST_FILENAME) < 0) {
			bm = NULL;
			r = -ENOMEM;
		}
		if (r == 0)
			r = sha256_hex_file(bm, hex, NULL);
		if (r == 0 && !streq(hex, m->base_sha256))
			r = set_error(&err, -EBADMSG,
				      "%s: its base image '%s' changed since the fork was made (it "
				      "was rebuilt or replaced): the fork's disk belongs to the "
				      "old one",
				      image_dir, m->base);
		const struct manifest_asset *own[] = { &m->disk, &m->workspace };
		if (r == 0)
			r = verify_dir(m->dir, own, ELEMENTSOF(own), &err);
	}
	if (r == 0) {
		const struct manifest_asset *sys[] = { &m->kernel, &m->initrd, &m->rootfs };
		r = verify_dir(m->base ? m->base_dir : m->dir, sys, ELEMENTSOF(sys), &err);
	}
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

int manifest_asset_from_sparse_file(struct manifest_asset *a, const char *dir, const char *name)
{
	struct manifest_asset n = { .sparse = 1 };
	if (!file_name_valid(name))
		return -EINVAL;
	n.file = strdup(name);
	if (!n.file || asprintf(&n.path, "%s/%s", dir, name) < 0) {
		n.path = NULL;
		manifest_asset_done(&n);
		return -ENOMEM;
	}
	_cleanup_close_ int fd = open(n.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int r = fd < 0 ? negative_errno() : sha256_hex_fd_sparse(fd, n.sha256, &n.size);
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
	if (o && a->sparse && json_object_set_new(o, "hash", json_string("sparse-64k")) < 0) {
		json_decref(o);
		return NULL;
	}
	if (o && a->version && json_object_set_new(o, "version", json_string(a->version)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The fork-specific members of a fork manifest. */
static json_t *fork_json(const struct manifest *m)
{
	json_t *root = json_pack("{s:i, s:s, s:s, s:{s:s, s:s}}", "format", MANIFEST_FORMAT, "name",
				 m->name, "arch", m->arch, "base", "name", m->base,
				 "manifest_sha256", m->base_sha256);
	json_t *d = asset_json(&m->disk);
	if (!root || !d || json_object_set_new(root, "disk", d) < 0) {
		json_decref(root);
		return NULL;
	}
	if (m->workspace.file &&
	    json_object_set_new(root, "workspace", asset_json(&m->workspace)) < 0)
		goto oom;
	if (m->parent_vm && json_object_set_new(root, "parent_vm", json_string(m->parent_vm)) < 0)
		goto oom;
	if (m->description &&
	    json_object_set_new(root, "description", json_string(m->description)) < 0)
		goto oom;
	return root;
oom:
	json_decref(root);
	return NULL;
}

int manifest_write(const char *image_dir, const struct manifest *m)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	char now[32];
	json_t *root = NULL, *k, *i, *rf = NULL;

	if (!m->name || !m->arch || !text_valid(m->name) || !text_valid(m->arch))
		return -EINVAL;
	if (m->base) {
		if (!manifest_image_name_valid(m->base) || !sha256_hex_valid(m->base_sha256) ||
		    !m->disk.file || !file_name_valid(m->disk.file) ||
		    !sha256_hex_valid(m->disk.sha256) ||
		    (m->workspace.file && (!file_name_valid(m->workspace.file) ||
					   !sha256_hex_valid(m->workspace.sha256))) ||
		    (m->parent_vm && !text_valid(m->parent_vm)) ||
		    (m->description && !text_valid(m->description)))
			return -EINVAL;
		root = fork_json(m);
		if (!root)
			return -ENOMEM;
		goto created;
	}
	if (!m->kernel.file || !m->initrd.file || !m->kernel.version ||
	    !file_name_valid(m->kernel.file) || !file_name_valid(m->initrd.file) ||
	    !sha256_hex_valid(m->kernel.sha256) || !sha256_hex_valid(m->initrd.sha256))
		return -EINVAL;
	if (m->rootfs.file &&
	    (!file_name_valid(m->rootfs.file) || !sha256_hex_valid(m->rootfs.sha256)))
		return -EINVAL;
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
	if (rf && json_object_set_new(root, "rootfs", rf) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
created:
	if (!m->created)
		manifest_now(now);
	if (json_object_set_new(root, "created", json_string(m->created ? m->created : now)) < 0) {
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
