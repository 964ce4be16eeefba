/* image.c - "image": build (or find) the kernel and the initramfs (and, with --rootfs, the Debian
 * root file system image), then install them as
 * <images>/<name>/{vmlinux,initrd.img[,rootfs.erofs|sqfs,build.json],manifest.json};
 * "verify": check an image directory.
 *
 * Installation is atomic for readers: the three files are written into a staging directory next
 * to the image (a hard link for the rootfs when the cache is on the same file system, else a
 * copy), the manifest is verified there, and the staging directory is swapped with the old
 * image in one renameat2(RENAME_EXCHANGE) (a plain rename the first time); the old tree is then
 * deleted (a VM that already opened its files keeps them). An image that already holds exactly
 * these files is left alone.
 *
 * Trust boundary: the images directory is user-writable state; what is installed is re-verified
 * from disk after the swap. Main thread of capsem-builder.
 */
#include "image.h"

#include <getopt.h>
#include <jansson.h>

#include "config.h"
#include "fdutil.h"
#include "ibuild.h"
#include "kbuild.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "rootfs.h"
#include "util.h"

#ifndef CAPSEM_SOURCE_ROOT
#define CAPSEM_SOURCE_ROOT "."
#endif

#define KERNEL_FILE "vmlinux"
#define INITRD_FILE "initrd.img"

/* Image names become directory names: [A-Za-z0-9._-], 1..64, not starting with '.'. */
static int image_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* 1 when dir already is a valid image of exactly these files (rootfs NULL: none). */
static int image_up_to_date(const char *dir, const char *name, const char *kernel,
			    const char *initrd, const char *rootfs, const char *rootfs_file)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	char k[SHA256_HEX_LEN + 1], i[SHA256_HEX_LEN + 1], rf[SHA256_HEX_LEN + 1];
	if (manifest_verify(dir, NULL) < 0 || manifest_load(dir, &m) < 0)
		return 0;
	if (sha256_hex_file(kernel, k, NULL) < 0 || sha256_hex_file(initrd, i, NULL) < 0)
		return 0;
	if (!!rootfs != !!m->rootfs.file)
		return 0;
	if (rootfs) {
		_cleanup_free_ char *info = NULL;
		if (asprintf(&info, "%s/" ROOTFS_BUILD_INFO, dir) < 0 || !util_is_file(info))
			return 0;
	}
	if (rootfs && (sha256_hex_file(rootfs, rf, NULL) < 0 || !streq(m->rootfs.sha256, rf) ||
		       !streq(m->rootfs.file, rootfs_file)))
		return 0;
	return streq(m->name, name) && streq(m->arch, KBUILD_ARCH) && streq(m->kernel.sha256, k) &&
	       streq(m->initrd.sha256, i) && streq(m->kernel.file, KERNEL_FILE) &&
	       streq(m->initrd.file, INITRD_FILE);
}

/* The rootfs into the staging directory: a hard link when possible (the cached file is never
 * written again: results are published by rename), else a copy. */
static int place_rootfs(const char *src, const char *dst)
{
	if (link(src, dst) == 0)
		return 0;
	return util_copy_atomic(src, dst, 0644);
}

/* rr NULL: no root file system image. */
static int install(const char *images, const char *name, const struct kbuild_result *k,
		   const struct ibuild_result *ir, const struct rootfs_result *rr, char **ret_dir)
{
	_cleanup_free_ char *dir = NULL, *stage = NULL, *kdst = NULL, *idst = NULL, *err = NULL;
	_cleanup_free_ char *rdst = NULL, *bdst = NULL;
	const char *rootfs = rr ? rr->path : NULL;
	const char *rootfs_file = rr ? rr->plan.file : NULL;
	struct manifest m = { .name = (char *)name, .arch = (char *)KBUILD_ARCH };
	int r;

	if (asprintf(&dir, "%s/%s", images, name) < 0)
		return log_oom();
	if (image_up_to_date(dir, name, k->path, ir->path, rootfs, rootfs_file)) {
		log_info("image: %s is up to date", dir);
		*ret_dir = TAKE_PTR(dir);
		return 0;
	}
	r = mkdir_p(images, 0755);
	if (r == 0)
		r = util_mkdtemp(images, name, &stage);
	if (r < 0)
		return log_error_errno(r, "image: cannot create a directory in %s", images);
	if (asprintf(&kdst, "%s/%s", stage, KERNEL_FILE) < 0 ||
	    asprintf(&idst, "%s/%s", stage, INITRD_FILE) < 0 ||
	    asprintf(&rdst, "%s/%s", stage, rootfs_file ? rootfs_file : "none") < 0 ||
	    asprintf(&bdst, "%s/" ROOTFS_BUILD_INFO, stage) < 0) {
		rm_rf(stage);
		return log_oom();
	}
	r = util_copy_atomic(k->path, kdst, 0644);
	if (r == 0)
		r = util_copy_atomic(ir->path, idst, 0644);
	if (r == 0)
		r = manifest_asset_from_file(&m.kernel, stage, KERNEL_FILE, k->release);
	if (r == 0)
		r = manifest_asset_from_file(&m.initrd, stage, INITRD_FILE, NULL);
	if (r == 0 && rootfs) {
		r = place_rootfs(rootfs, rdst);
		if (r == 0)
			r = manifest_asset_from_file(&m.rootfs, stage, rootfs_file, NULL);
		/* what is inside (versions, packages): for capsem-builder inspect */
		if (r == 0)
			r = util_copy_atomic(rr->info, bdst, 0644);
	}
	if (r == 0)
		r = manifest_write(stage, &m);
	manifest_asset_done(&m.kernel);
	manifest_asset_done(&m.initrd);
	manifest_asset_done(&m.rootfs);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "image: cannot write the image files in %s", stage);
	}
	r = manifest_verify(stage, &err);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "image: the staged image does not verify: %s",
				       strempty(err));
	}
	r = util_replace_dir(stage, dir);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "image: cannot install %s", dir);
	}
	r = manifest_verify(dir, &err);
	if (r < 0)
		return log_error_errno(r, "image: installed image does not verify: %s",
				       strempty(err));
	log_info("image: installed %s", dir);
	*ret_dir = TAKE_PTR(dir);
	return 0;
}

/* --base-image DIR: the kernel and initramfs of an installed image, verified, as if built. */
static int base_image(const char *dir, struct kbuild_result *kr, struct ibuild_result *ir)
{
	_cleanup_manifest_ struct manifest *m = NULL;
	_cleanup_free_ char *err = NULL;
	int r = manifest_verify(dir, &err);
	if (r == 0)
		r = manifest_load(dir, &m);
	if (r < 0 || !m)
		return log_error_errno(r < 0 ? r : -EINVAL, "image: --base-image %s: %s", dir,
				       err ? err : "cannot load its manifest");
	if (!m->kernel.version)
		return log_error("image: --base-image %s: the kernel has no version", dir), -EINVAL;
	if (!(kr->path = strdup(m->kernel.path)) || !(kr->release = strdup(m->kernel.version)) ||
	    !(ir->path = strdup(m->initrd.path)))
		return log_oom();
	snprintf(kr->key, sizeof(kr->key), "%s", m->kernel.sha256);
	snprintf(ir->key, sizeof(ir->key), "%s", m->initrd.sha256);
	kr->cached = ir->cached = 1;
	log_info("image: kernel %s and initramfs from %s", kr->release, dir);
	return 0;
}

static void image_help(void)
{
	printf("Usage: capsem-builder image --guest-bin FILE [OPTIONS]\n"
	       "\n"
	       "Build (or find in the cache) the guest kernel and the minimal initramfs, then\n"
	       "install them as IMAGES/NAME/{vmlinux,initrd.img,manifest.json} atomically and "
	       "verify\n"
	       "the result. Prints the image directory.\n"
	       "\n"
	       "Options:\n"
	       "      --name NAME          image name (default minimal)\n"
	       "      --guest-bin FILE     static capsem-guest binary (required)\n"
	       "      --images-dir DIR     default $CAPSEM_IMAGES_DIR, else $CAPSEM_HOME/images,\n"
	       "                           else ~/.capsem/images\n"
	       "      --busybox FILE       static busybox (default %s)\n"
	       "      --compress none|gzip initramfs compression (default none)\n"
	       "      --fragment FILE      kernel config fragment (default\n"
	       "                           %s/guest/kernel/x86_64.config)\n"
	       "      --source FILE        kernel source tarball (default %s)\n"
	       "      --cache DIR          cache root (default $CAPSEM_CACHE or ~/.cache/capsem)\n"
	       "  -j, --jobs N             parallel make jobs (default: online CPUs)\n"
	       "      --rootfs             also build (or find) the Debian root file system of\n"
	       "                           the default image config (see capsem-builder rootfs)\n"
	       "      --config DIR         the same from image config DIR (implies --rootfs; the\n"
	       "                           name defaults to the config's image.name)\n"
	       "      --base-image DIR     take the kernel and the initramfs from the installed\n"
	       "                           image DIR (verified against its manifest) instead of\n"
	       "                           building them: an installed package has no kernel\n"
	       "                           source (--guest-bin is then not needed)\n"
	       "      --json               print "
	       "{\"dir\",\"name\",\"kernel\",\"initrd\",[\"rootfs\",]\"seconds\"}\n"
	       "  -h, --help               this help\n",
	       IBUILD_DEFAULT_BUSYBOX, CAPSEM_SOURCE_ROOT, UTIL_DEFAULT_TARBALL);
}

static int print_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		return log_oom(), 1;
	printf("%s\n", s);
	free(s);
	return 0;
}

int cmd_image(int argc, char **argv)
{
	enum {
		ARG_NAME = 0x100,
		ARG_GUEST,
		ARG_IMAGES,
		ARG_BUSYBOX,
		ARG_COMPRESS,
		ARG_FRAGMENT,
		ARG_SOURCE,
		ARG_CACHE,
		ARG_JSON,
		ARG_ROOTFS,
		ARG_CONFIG,
		ARG_BASE
	};
	static const struct option opts[] = { { "name", required_argument, NULL, ARG_NAME },
					      { "guest-bin", required_argument, NULL, ARG_GUEST },
					      { "images-dir", required_argument, NULL, ARG_IMAGES },
					      { "busybox", required_argument, NULL, ARG_BUSYBOX },
					      { "compress", required_argument, NULL, ARG_COMPRESS },
					      { "fragment", required_argument, NULL, ARG_FRAGMENT },
					      { "source", required_argument, NULL, ARG_SOURCE },
					      { "cache", required_argument, NULL, ARG_CACHE },
					      { "jobs", required_argument, NULL, 'j' },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "rootfs", no_argument, NULL, ARG_ROOTFS },
					      { "with-rootfs", no_argument, NULL, ARG_ROOTFS },
					      { "config", required_argument, NULL, ARG_CONFIG },
					      { "base-image", required_argument, NULL, ARG_BASE },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *config = NULL, *base = NULL;
	int with_rootfs = 0;
	struct kbuild_opts ko = { .fragment = CAPSEM_SOURCE_ROOT "/guest/kernel/x86_64.config",
				  .source = UTIL_DEFAULT_TARBALL,
				  .jobs = util_default_jobs() };
	struct ibuild_opts io = { .busybox = IBUILD_DEFAULT_BUSYBOX };
	const char *name = NULL, *images_opt = NULL, *cache_opt = NULL;
	int json = 0, c, rc = 1;
	double start = util_now();

	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_NAME:
			name = optarg;
			break;
		case ARG_GUEST:
			io.guest_bin = optarg;
			break;
		case ARG_IMAGES:
			images_opt = optarg;
			break;
		case ARG_BUSYBOX:
			io.busybox = optarg;
			break;
		case ARG_COMPRESS:
			if (initramfs_compress_from_name(optarg, &io.compress) < 0) {
				log_error("--compress: expected none or gzip, got '%s'", optarg);
				return 2;
			}
			break;
		case ARG_FRAGMENT:
			ko.fragment = optarg;
			break;
		case ARG_SOURCE:
			ko.source = optarg;
			break;
		case ARG_CACHE:
			cache_opt = optarg;
			break;
		case 'j':
			if (util_parse_jobs(optarg, &ko.jobs) < 0) {
				log_error("--jobs: expected a number from 1 to 1024, got '%s'",
					  optarg);
				return 2;
			}
			break;
		case ARG_JSON:
			json = 1;
			break;
		case ARG_ROOTFS:
			with_rootfs = 1;
			break;
		case ARG_CONFIG:
			config = optarg;
			with_rootfs = 1;
			break;
		case ARG_BASE:
			base = optarg;
			break;
		case 'h':
			image_help();
			return 0;
		default:
			return 2;
		}
	}
	if (optind < argc) {
		log_error("image: unexpected argument '%s' (see --help)", argv[optind]);
		return 2;
	}
	_cleanup_(imgcfg_freep) struct imgcfg *cfg = NULL;
	if (with_rootfs) {
		if (rootfs_load_config(config ? config : rootfs_default_config(), &cfg) < 0)
			return 1;
		if (!name)
			name = cfg->name;
	}
	if (!name)
		name = "minimal";
	if (!image_name_valid(name)) {
		log_error("image: --name '%s': use 1-64 of [A-Za-z0-9._-], not starting with '.'",
			  name);
		return 2;
	}
	if (!io.guest_bin && !base) {
		log_error("image: --guest-bin FILE is required (the static capsem-guest binary)");
		return 2;
	}
	_cleanup_free_ char *cache = util_cache_root(cache_opt);
	_cleanup_free_ char *images = util_images_dir(images_opt);
	_cleanup_free_ char *dir = NULL;
	if (!cache || !images)
		return log_oom(), 1;
	ko.cache = io.cache = cache;

	struct kbuild_result kr = { 0 };
	struct ibuild_result ir = { 0 };
	struct rootfs_result rr = { 0 };
	/* the initramfs first: it takes a second and fails fast on a bad --guest-bin */
	if ((base ? base_image(base, &kr, &ir) < 0
		  : ibuild_run(&io, &ir) < 0 || kbuild_run(&ko, &kr) < 0) ||
	    (with_rootfs && rootfs_run(cfg, cache, &rr) < 0) ||
	    install(images, name, &kr, &ir, with_rootfs ? &rr : NULL, &dir) < 0)
		goto out;
	if (json) {
		json_t *j = json_pack("{s:s, s:s, s:{s:s, s:s, s:b}, s:{s:s, s:b}, s:f}", "dir",
				      dir, "name", name, "kernel", "release", kr.release, "key",
				      kr.key, "cached", kr.cached, "initrd", "key", ir.key,
				      "cached", ir.cached, "seconds", util_now() - start);
		if (j && with_rootfs &&
		    json_object_set_new(j, "rootfs",
					json_pack("{s:s, s:s, s:b, s:f}", "key", rr.plan.image.key,
						  "node", rr.node_release, "cached", rr.cached,
						  "seconds", rr.seconds)) < 0) {
			json_decref(j);
			j = NULL;
		}
		rc = print_json(j);
	} else {
		printf("%s\n", dir);
		rc = 0;
	}
out:
	kbuild_result_done(&kr);
	ibuild_result_done(&ir);
	rootfs_result_done(&rr);
	return rc;
}

static void verify_help(void)
{
	printf("Usage: capsem-builder verify [--json] DIR\n"
	       "\n"
	       "Check every file named by DIR/manifest.json against its recorded size and "
	       "SHA-256.\n"
	       "Exits 0 when the image is intact; otherwise prints which file is bad and exits "
	       "1.\n");
}

int cmd_verify(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option opts[] = { { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	_cleanup_manifest_ struct manifest *m = NULL;
	_cleanup_free_ char *err = NULL;
	int json = 0, c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			json = 1;
			break;
		case 'h':
			verify_help();
			return 0;
		default:
			return 2;
		}
	}
	if (argc - optind != 1) {
		log_error("verify: expected one image directory (see --help)");
		return 2;
	}
	const char *dir = argv[optind];
	r = manifest_verify(dir, &err);
	if (r == 0)
		r = manifest_load(dir, &m);
	if (r != 0) { /* both return 0 or -errno */
		log_error("verify: %s", err ? err : strerror(-r));
		if (json)
			print_json(json_pack("{s:s, s:b, s:s}", "dir", dir, "ok", 0, "error",
					     err ? err : strerror(-r)));
		return 1;
	}
	if (json)
		return print_json(json_pack("{s:s, s:b, s:s, s:s}", "dir", dir, "ok", 1, "name",
					    m->name, "kernel_version", m->kernel.version));
	printf("%s: ok (%s: %s, %llu bytes; %s: %llu bytes", dir, m->kernel.file, m->kernel.version,
	       (unsigned long long)m->kernel.size, m->initrd.file,
	       (unsigned long long)m->initrd.size);
	if (m->rootfs.file)
		printf("; %s: %llu bytes", m->rootfs.file, (unsigned long long)m->rootfs.size);
	printf(")\n");
	return 0;
}
