/* ibuild.c - the "initramfs" step: read the guest binary and busybox, ask busybox for its applet
 * list, collect Debian's nft with the shared libraries and ELF interpreter it needs (the
 * interpreter named in its PT_INTERP, asked `--list` like ldd does), lay the archive out
 * (initramfs.c), write it with our own cpio writer (cpio.c), optionally gzip it, and publish it
 * under <cache>/initramfs/<key16>/ by renaming a staging directory.
 * key = SHA-256(recipe, compression, guest binary bytes, busybox bytes, each extra file's path,
 * mode and bytes) (cachekey.h).
 *
 * Trust boundary: local files the user pointed at. The guest binary and busybox must be static
 * x86-64 ELF; nft is dynamic and brings its libraries, each stored at the absolute path the
 * host's loader resolved. The applet list and the loader's list are validated before use. Main
 * thread of capsem-builder.
 */
#include "ibuild.h"

#include <getopt.h>
#include <jansson.h>
#include <sys/stat.h>

#include "buf.h"
#include "cachekey.h"
#include "cpio.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "run.h"
#include "strv.h"
#include "util.h"

#define BINARY_MAX (256u << 20)
#define ARCHIVE_MAX (1024u << 20)
#define APPLET_LIST_MAX (64u << 10)

void ibuild_result_done(struct ibuild_result *r)
{
	if (!r)
		return;
	free(r->dir);
	free(r->path);
	memset(r, 0, sizeof(*r));
}

static int read_static_binary(const char *what, const char *path, char **ret, size_t *ret_len)
{
	const char *why = NULL;
	int r = util_read_file(path, BINARY_MAX, ret, ret_len);
	if (r < 0)
		return log_error_errno(r, "initramfs: %s %s", what, path);
	if (initramfs_check_static_elf(*ret, *ret_len, &why) < 0) {
		free(*ret);
		*ret = NULL;
		log_error("initramfs: %s %s: %s", what, path, why);
		return -ENOEXEC;
	}
	return 0;
}

/* The applet list of the busybox at path: `--list-full`, or `--list` for builds without it. */
static int busybox_applets(const char *path, char ***ret)
{
	_cleanup_free_ char *exe = NULL, *out = NULL;
	size_t bad_line = 0;
	int r;

	/* a bare name would be looked up in PATH: run the very file we read */
	if (asprintf(&exe, "%s%s", strchr(path, '/') ? "" : "./", path) < 0)
		return log_oom();
	char *full_argv[] = { exe, "--list-full", NULL };
	int full = 1;
	r = run_capture(full_argv, APPLET_LIST_MAX, &out);
	if (r != 0) {
		full = 0;
		free(out);
		out = NULL;
		char *list[] = { exe, "--list", NULL };
		r = run_capture(list, APPLET_LIST_MAX, &out);
	}
	if (r < 0)
		return log_error_errno(r, "initramfs: cannot run %s --list-full", path);
	if (r > 0)
		return log_error_errno(-EIO, "initramfs: %s --list-full failed (exit %d)", path, r);
	r = initramfs_parse_applets(out, full, ret, &bad_line);
	if (r == -EBADMSG)
		return log_error_errno(r, "initramfs: %s --list-full: line %zu is not a safe path",
				       path, bad_line);
	if (r < 0)
		return log_error_errno(r, "initramfs: %s --list-full", path);
	return 0;
}

#define LIB_MAX (64u << 20)
#define LDLIST_MAX (64u << 10)

struct extra_files {
	struct initramfs_file f[INITRAMFS_MAX_LIBS + 1];
	char *data[INITRAMFS_MAX_LIBS + 1];
	char **paths;
	size_t n;
};

static int strv_contains_path(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (streq(v[i], s))
			return 1;
	return 0;
}

static void extra_files_done(struct extra_files *x)
{
	for (size_t i = 0; i < x->n; i++)
		free(x->data[i]);
	strv_free(x->paths);
	memset(x, 0, sizeof(*x));
}

static int extra_add(struct extra_files *x, const char *path, const char *src, unsigned mode)
{
	size_t len = 0;
	char *data = NULL;
	int r;

	if (x->n >= ELEMENTSOF(x->f))
		return log_error_errno(-E2BIG, "initramfs: too many files for nft");
	r = util_read_file(src, LIB_MAX, &data, &len);
	if (r < 0)
		return log_error_errno(r, "initramfs: %s", src);
	x->data[x->n] = data;
	x->f[x->n] =
		(struct initramfs_file){ .path = path, .mode = mode, .data = data, .len = len };
	x->n++;
	return 0;
}

/* nft at /usr/sbin/nft, then every library the loader lists (the interpreter included) at its
 * own absolute path. */
static int collect_nft(const char *nft, struct extra_files *x)
{
	_cleanup_free_ char *bin = NULL, *list = NULL, *exe = NULL;
	char interp[256];
	size_t len = 0;
	int r;

	r = util_read_file(nft, LIB_MAX, &bin, &len);
	if (r < 0)
		return log_error_errno(
			r, "initramfs: --nft %s (install nftables or pass --nft none)", nft);
	r = initramfs_elf_interp(bin, len, interp, sizeof(interp));
	if (r == -ENOENT)
		interp[0] = 0; /* a static nft: nothing more to bring */
	else if (r < 0)
		return log_error_errno(r, "initramfs: --nft %s: not an x86-64 ELF executable", nft);
	r = extra_add(x, "/usr/sbin/nft", nft, 0755);
	if (r < 0 || !interp[0])
		return r;
	if (asprintf(&exe, "%s%s", strchr(nft, '/') ? "" : "./", nft) < 0)
		return log_oom();
	char *argv[] = { interp, "--list", exe, NULL };
	r = run_capture(argv, LDLIST_MAX, &list);
	if (r < 0)
		return log_error_errno(r, "initramfs: cannot run %s --list %s", interp, nft);
	if (r > 0)
		return log_error_errno(-EIO, "initramfs: %s --list %s failed (exit %d)", interp,
				       nft, r);
	r = initramfs_parse_ldlist(list, &x->paths);
	if (r == -ENOENT)
		return log_error_errno(r, "initramfs: a library of %s is missing on this host",
				       nft);
	if (r < 0)
		return log_error_errno(r, "initramfs: unexpected output of %s --list %s", interp,
				       nft);
	if (!strv_contains_path(x->paths, interp) && strv_push(&x->paths, interp) < 0)
		return log_oom();
	for (size_t i = 0; x->paths[i]; i++) {
		r = extra_add(x, x->paths[i], x->paths[i],
			      streq(x->paths[i], interp) ? 0755 : 0644);
		if (r < 0)
			return r;
	}
	return 0;
}

static int find_cached(const char *dir, struct ibuild_result *ret)
{
	json_t *info = NULL;
	const char *why = NULL;
	int r = util_cache_check(dir, "initrd.img", &info, &why);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		log_warn("initramfs: cached %s is damaged (%s): rebuilding it", dir, why);
		rm_rf(dir);
		return 0;
	}
	ret->size = (uint64_t)json_integer_value(
		json_object_get(json_object_get(info, "output"), "size"));
	json_decref(info);
	ret->dir = strdup(dir);
	if (!ret->dir || asprintf(&ret->path, "%s/initrd.img", dir) < 0)
		return log_oom();
	return 1;
}

static int ibuild_run_files(const struct ibuild_opts *o, struct ibuild_result *ret,
			    const char *guest, size_t guest_len, const char *bb, size_t bb_len,
			    const struct extra_files *x, double start)
{
	_cleanup_free_ char *dir = NULL, *parent = NULL, *stage = NULL;
	_cleanup_free_ char *img = NULL;
	_cleanup_strv_free_ char **applets = NULL;
	_cleanup_cpio_ struct cpio *c = NULL;
	struct ibuild_result res = { 0 };
	struct buf archive, gz;
	char key16[CACHEKEY_SHORT_LEN + 1], now[32];
	char guest_sha[SHA256_HEX_LEN + 1], bb_sha[SHA256_HEX_LEN + 1];
	const char *cname = initramfs_compress_name(o->compress);
	int r;

	r = cachekey_initramfs(cname, guest, guest_len, bb, bb_len, x->f, x->n, res.key);
	if (r == 0)
		r = sha256_hex_buf(guest, guest_len, guest_sha);
	if (r == 0)
		r = sha256_hex_buf(bb, bb_len, bb_sha);
	if (r < 0)
		return log_error_errno(r, "initramfs: cannot compute the cache key");
	memcpy(key16, res.key, CACHEKEY_SHORT_LEN);
	key16[CACHEKEY_SHORT_LEN] = 0;
	if (asprintf(&parent, "%s/initramfs", o->cache) < 0 ||
	    asprintf(&dir, "%s/%s", parent, key16) < 0)
		return log_oom();
	r = find_cached(dir, &res);
	if (r < 0)
		return r;
	if (r > 0) {
		res.cached = 1;
		res.seconds = util_now() - start;
		log_info("initramfs: cached %s", res.path);
		*ret = res;
		return 0;
	}

	log_info("initramfs: building (key %s, guest %s, busybox %s, compression %s)", key16,
		 o->guest_bin, o->busybox, cname);
	r = busybox_applets(o->busybox, &applets);
	if (r < 0)
		return r;
	c = cpio_new();
	if (!c)
		return log_oom();
	struct initramfs_inputs in = { .guest = guest,
				       .guest_len = guest_len,
				       .busybox = bb,
				       .busybox_len = bb_len,
				       .applets = applets,
				       .extra = x->f,
				       .n_extra = x->n };
	r = initramfs_layout(c, &in);
	if (r < 0)
		return log_error_errno(r, "initramfs: cannot lay out the archive");
	buf_init(&archive, ARCHIVE_MAX);
	buf_init(&gz, ARCHIVE_MAX);
	r = cpio_write(c, &archive);
	if (r == 0 && o->compress == INITRAMFS_COMPRESS_GZIP)
		r = initramfs_gzip(buf_head(&archive), buf_len(&archive), &gz);
	struct buf *outb = o->compress == INITRAMFS_COMPRESS_GZIP ? &gz : &archive;
	if (r < 0) {
		buf_done(&archive, 0);
		buf_done(&gz, 0);
		return log_error_errno(r, "initramfs: cannot write the archive");
	}
	log_info("initramfs: %zu entries (%zu busybox applets), cpio %zu bytes%s", cpio_count(c),
		 strv_length(applets), buf_len(&archive),
		 o->compress == INITRAMFS_COMPRESS_GZIP ? ", gzip" : "");

	r = mkdir_p(parent, 0755);
	if (r == 0)
		r = util_mkdtemp(parent, "initramfs", &stage);
	if (r == 0 && asprintf(&img, "%s/initrd.img", stage) < 0)
		r = -ENOMEM;
	if (r == 0)
		r = write_file_atomic(img, buf_head(outb), buf_len(outb), 0644);
	size_t cpio_len = buf_len(&archive);
	buf_done(&archive, 0);
	buf_done(&gz, 0);
	if (r < 0) {
		if (stage)
			rm_rf(stage);
		return log_error_errno(r, "initramfs: cannot write the image under %s", parent);
	}
	manifest_now(now);
	json_t *info = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "key", res.key, "recipe",
		CACHEKEY_INITRAMFS_RECIPE, "compression", cname, "guest_bin", o->guest_bin,
		"guest_sha256", guest_sha, "busybox", o->busybox, "busybox_sha256", bb_sha,
		"applets", (json_int_t)strv_length(applets), "entries", (json_int_t)cpio_count(c),
		"cpio_size", (json_int_t)cpio_len, "built", now);
	r = info ? util_cache_write_info(stage, "initrd.img", info) : -ENOMEM;
	json_decref(info);
	if (r == 0)
		r = util_publish_dir(stage, dir);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "initramfs: cannot store the result in %s", dir);
	}
	r = find_cached(dir, &res);
	if (r <= 0)
		return r < 0 ? r
			     : log_error_errno(-EIO, "initramfs: %s vanished after storing", dir);
	res.cached = 0;
	res.seconds = util_now() - start;
	log_info("initramfs: built %s (%llu bytes) in %.2f s", res.path,
		 (unsigned long long)res.size, res.seconds);
	*ret = res;
	return 0;
}

int ibuild_run(const struct ibuild_opts *o, struct ibuild_result *ret)
{
	_cleanup_free_ char *guest = NULL, *bb = NULL;
	struct ibuild_result res = { 0 };
	struct extra_files x = { 0 };
	const char *nft = o->nft ? o->nft : IBUILD_DEFAULT_NFT;
	size_t guest_len = 0, bb_len = 0;
	double start = util_now();
	int r;

	r = read_static_binary("--guest-bin", o->guest_bin, &guest, &guest_len);
	if (r < 0)
		return r;
	r = read_static_binary("--busybox", o->busybox, &bb, &bb_len);
	if (r < 0)
		return r;
	if (!streq(nft, "none")) {
		r = collect_nft(nft, &x);
		if (r < 0) {
			extra_files_done(&x);
			return r;
		}
	}
	r = ibuild_run_files(o, &res, guest, guest_len, bb, bb_len, &x, start);
	extra_files_done(&x);
	if (r == 0)
		*ret = res;
	return r;
}

static void initramfs_help(void)
{
	printf("Usage: capsem-builder initramfs --guest-bin FILE [OPTIONS]\n"
	       "\n"
	       "Build the minimal initramfs: /init (the static capsem-guest binary),\n"
	       "/usr/bin/capsem-agent -> /init, busybox-static with a link per applet, "
	       "/dev/console,\n"
	       "/dev/null, /etc/{passwd,group,hostname}, nft with its shared libraries (for the\n"
	       "guest's egress rules). A deterministic newc cpio (uid/gid 0,\n"
	       "mtime 0, sorted), cached by a hash of its inputs. Prints the initrd.img path.\n"
	       "\n"
	       "Options:\n"
	       "      --guest-bin FILE     static capsem-guest binary (required)\n"
	       "      --busybox FILE       static busybox (default %s)\n"
	       "      --nft FILE|none      nft binary (default %s)\n"
	       "      --compress none|gzip (default none: fastest to unpack under TCG)\n"
	       "      --cache DIR          cache root (default $CAPSEM_CACHE or ~/.cache/capsem)\n"
	       "      --json               print "
	       "{\"path\",\"key\",\"size\",\"seconds\",\"cached\"}\n"
	       "  -h, --help               this help\n",
	       IBUILD_DEFAULT_BUSYBOX, IBUILD_DEFAULT_NFT);
}

int cmd_initramfs(int argc, char **argv)
{
	enum { ARG_GUEST = 0x100, ARG_BUSYBOX, ARG_NFT, ARG_COMPRESS, ARG_CACHE, ARG_JSON };
	static const struct option opts[] = { { "guest-bin", required_argument, NULL, ARG_GUEST },
					      { "busybox", required_argument, NULL, ARG_BUSYBOX },
					      { "nft", required_argument, NULL, ARG_NFT },
					      { "compress", required_argument, NULL, ARG_COMPRESS },
					      { "cache", required_argument, NULL, ARG_CACHE },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	struct ibuild_opts o = { .busybox = IBUILD_DEFAULT_BUSYBOX };
	const char *cache_opt = NULL;
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_GUEST:
			o.guest_bin = optarg;
			break;
		case ARG_BUSYBOX:
			o.busybox = optarg;
			break;
		case ARG_NFT:
			o.nft = optarg;
			break;
		case ARG_COMPRESS:
			if (initramfs_compress_from_name(optarg, &o.compress) < 0) {
				log_error("--compress: expected none or gzip, got '%s'", optarg);
				return 2;
			}
			break;
		case ARG_CACHE:
			cache_opt = optarg;
			break;
		case ARG_JSON:
			json = 1;
			break;
		case 'h':
			initramfs_help();
			return 0;
		default:
			return 2;
		}
	}
	if (optind < argc) {
		log_error("initramfs: unexpected argument '%s' (see --help)", argv[optind]);
		return 2;
	}
	if (!o.guest_bin) {
		log_error(
			"initramfs: --guest-bin FILE is required (the static capsem-guest binary)");
		return 2;
	}
	_cleanup_free_ char *cache = util_cache_root(cache_opt);
	if (!cache)
		return log_oom(), 1;
	o.cache = cache;
	struct ibuild_result res = { 0 };
	if (ibuild_run(&o, &res) < 0)
		return 1;
	if (json) {
		json_t *j = json_pack("{s:s, s:s, s:I, s:f, s:b}", "path", res.path, "key", res.key,
				      "size", (json_int_t)res.size, "seconds", res.seconds,
				      "cached", res.cached);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!s) {
			ibuild_result_done(&res);
			return log_oom(), 1;
		}
		printf("%s\n", s);
		free(s);
	} else {
		printf("%s\n", res.path);
	}
	ibuild_result_done(&res);
	return 0;
}
