/* kbuild.c - the "kernel" step: build the guest kernel (a stripped ELF vmlinux, booted through its PVH entry), cached by content hash.
 *
 * Cache layout under the cache root (default ~/.cache/capsem):
 *   src/linux-source-6.1/            the extracted source tree (extracted once, into a temp
 *                                    directory then renamed; .capsem-source names its version)
 *   build/kernel-x86_64/             the one kbuild output directory (O=), reused incrementally;
 *                                    .capsem-source as above (a new source version wipes it)
 *   build/kernel-x86_64.lock         flock(2) held while a build runs
 *   build/kernel-x86_64.fragment     the exact fragment bytes that were hashed and merged
 *   kernel/<key16>/{vmlinux,config,build.json}   results, published by renaming a staging dir
 *   logs/kernel-<key16>.log          make's output for that key
 * key = SHA-256(recipe, source package version, fragment bytes, arch) (cachekey.h).
 *
 * Steps: make tinyconfig, merge_config.sh -m, make olddefconfig, check every fragment option
 * against the final .config (kconfig.h), make -jN vmlinux, strip. Everything runs by argv through
 * posix_spawn; make's output goes to the log, with a progress line every 15 s.
 *
 * Trust boundary: local inputs chosen by the user (fragment, tarball, cache dir). Main thread of
 * capsem-builder.
 */
#include "kbuild.h"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "cachekey.h"
#include "config.h"
#include "fdutil.h"
#include "kconfig.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "run.h"
#include "strv.h"
#include "util.h"

#define FRAGMENT_MAX (1 << 20)
#define PROGRESS_S 15

/* Variables that would change what or how kbuild builds, or hand it a caller's make jobserver:
 * the kernel is built the same whatever environment capsem-builder runs in (e.g. `make image`). */
static const char *const kbuild_env_drop[] = {
	"MAKEFLAGS",
	"MFLAGS",
	"GNUMAKEFLAGS",
	"MAKELEVEL",
	"MAKEOVERRIDES",
	"ARCH",
	"SRCARCH",
	"SUBARCH",
	"CROSS_COMPILE",
	"LLVM",
	"CC",
	"LD",
	"KBUILD_OUTPUT",
	"KCONFIG_CONFIG",
	"KCONFIG_ALLCONFIG",
	"LOCALVERSION",
	"KCFLAGS",
	"KCPPFLAGS",
	"KAFLAGS",
	"KBUILD_BUILD_VERSION",
	"KBUILD_BUILD_USER",
	"KBUILD_BUILD_HOST",
	"KBUILD_BUILD_TIMESTAMP",
	"INSTALL_PATH",
	"LC_ALL",
	NULL,
};
#define TAIL_LINES 20

#ifndef CAPSEM_SOURCE_ROOT
#define CAPSEM_SOURCE_ROOT "."
#endif
#define DEFAULT_FRAGMENT CAPSEM_SOURCE_ROOT "/guest/kernel/x86_64.config"

void kbuild_result_done(struct kbuild_result *r)
{
	if (!r)
		return;
	free(r->dir);
	free(r->path);
	free(r->release);
	memset(r, 0, sizeof(*r));
}

/* Printable, short, one line: safe to hash, print and store. */
static int version_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* The source's version: dpkg's for Debian's tarball, else the tarball's size and mtime. */
static int source_version(const char *tarball, char **ret)
{
	struct stat st;
	char *v = NULL;

	if (stat(tarball, &st) < 0)
		return log_error_errno(negative_errno(), "kernel: source tarball %s", tarball);
	if (streq(tarball, UTIL_DEFAULT_TARBALL)) {
		char *argv[] = { "dpkg-query", "-W", "-f=${Version}", "linux-source-6.1", NULL };
		_cleanup_free_ char *out = NULL;
		int r = run_capture(argv, 256, &out);
		if (r == 0 && version_valid(out)) {
			*ret = TAKE_PTR(out);
			return 0;
		}
		log_debug("dpkg-query gave no version for linux-source-6.1 (%d)", r);
	}
	if (asprintf(&v, "tarball:size=%lld,mtime=%lld.%09ld", (long long)st.st_size,
		     (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec) < 0)
		return log_oom();
	*ret = v;
	return 0;
}

/* "<dir>/.capsem-source" holds the source version a tree was made from. Returns 1 when it
 * matches, 0 when the stamp is missing, -ESTALE when it names another version. */
static int stamp_check(const char *dir, const char *version)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	if (asprintf(&path, "%s/.capsem-source", dir) < 0)
		return -ENOMEM;
	if (read_file_small(path, 256, &text, NULL) < 0)
		return 0;
	text[strcspn(text, "\n")] = 0;
	return streq(text, version) ? 1 : -ESTALE;
}

static int stamp_write(const char *dir, const char *version)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	if (asprintf(&path, "%s/.capsem-source", dir) < 0 || asprintf(&text, "%s\n", version) < 0)
		return -ENOMEM;
	return write_file_atomic(path, text, strlen(text), 0644);
}

/* "linux-source-6.1" from ".../linux-source-6.1.tar.xz". */
static int tree_name(const char *tarball, char **ret)
{
	const char *b = strrchr(tarball, '/');
	b = b ? b + 1 : tarball;
	const char *dot = strstr(b, ".tar");
	size_t n = dot ? (size_t)(dot - b) : strlen(b);
	if (n == 0 || b[0] == '.')
		return -EINVAL;
	*ret = strndup(b, n);
	return *ret ? 0 : -ENOMEM;
}

/* The one directory inside an extraction directory. */
static int single_subdir(const char *dir, char **ret)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	char *found = NULL;
	if (!d)
		return negative_errno();
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (found) {
			free(found);
			return -ENOTUNIQ;
		}
		if (asprintf(&found, "%s/%s", dir, de->d_name) < 0)
			return -ENOMEM;
	}
	if (!found || !util_is_dir(found)) {
		free(found);
		return -ENOENT;
	}
	*ret = found;
	return 0;
}

/* Make sure <cache>/src/<tree> holds the source of this version; *ret_dir gets its path. */
static int ensure_source(const struct kbuild_opts *o, const char *version, int log_fd,
			 const char *log_path, char **ret_dir)
{
	_cleanup_free_ char *root = NULL, *name = NULL, *dir = NULL, *makefile = NULL;
	_cleanup_free_ char *tmp = NULL, *top = NULL;
	int r;

	r = tree_name(o->source, &name);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot name the source tree of %s", o->source);
	if (asprintf(&root, "%s/src", o->cache) < 0 || asprintf(&dir, "%s/%s", root, name) < 0 ||
	    asprintf(&makefile, "%s/Makefile", dir) < 0)
		return log_oom();
	if (util_is_file(makefile)) {
		r = stamp_check(dir, version);
		if (r == 1) {
			*ret_dir = TAKE_PTR(dir);
			return 0;
		}
		if (r == 0) { /* extracted by hand or by an older builder: adopt it */
			r = stamp_write(dir, version);
			if (r < 0)
				return log_error_errno(r, "kernel: cannot write %s/.capsem-source",
						       dir);
			*ret_dir = TAKE_PTR(dir);
			return 0;
		}
		log_info("kernel: %s was extracted from another source version: re-extracting",
			 dir);
	}
	r = mkdir_p(root, 0755);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot create %s", root);
	r = util_mkdtemp(root, name, &tmp);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot create a directory in %s", root);
	log_info("kernel: extracting %s into %s (about 1 min)...", o->source, dir);
	char *argv[] = { "tar", "-xf", (char *)o->source, "-C", tmp, "--no-same-owner", NULL };
	r = run_logged(argv, NULL, NULL, log_fd, "kernel: extracting", PROGRESS_S);
	if (r != 0) {
		rm_rf(tmp);
		if (r < 0)
			return log_error_errno(r, "kernel: cannot run tar");
		log_error("kernel: extracting %s failed (tar exit %d); last lines of %s:",
			  o->source, r, log_path);
		run_print_tail(log_path, TAIL_LINES);
		return -EIO;
	}
	r = single_subdir(tmp, &top);
	if (r == 0)
		r = stamp_write(top, version);
	if (r == 0 && util_is_dir(dir)) {
		/* an old tree of another version: swap it out, then delete it */
		r = util_replace_dir(top, dir);
	} else if (r == 0 && rename(top, dir) < 0) {
		r = negative_errno();
	}
	rm_rf(tmp);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot install the source tree at %s", dir);
	*ret_dir = TAKE_PTR(dir);
	return 0;
}

/* The environment of every kbuild step: ours minus kbuild_env_drop, plus fixed build metadata
 * so that the same inputs give the same kernel (uname -v shows the source tarball's date). */
static int kbuild_env(const char *tarball, char ***ret)
{
	_cleanup_strv_free_ char **v = NULL;
	struct stat st;
	struct tm tm;
	char when[64];
	time_t t;

	if (stat(tarball, &st) < 0)
		return negative_errno();
	t = st.st_mtim.tv_sec;
	if (!gmtime_r(&t, &tm) ||
	    strftime(when, sizeof(when), "%a %b %e %H:%M:%S UTC %Y", &tm) == 0)
		return -EINVAL;
	v = run_env_without(kbuild_env_drop);
	if (!v)
		return -ENOMEM;
	int r = strv_push(&v, "KBUILD_BUILD_USER=capsem");
	r = r ?: strv_push(&v, "KBUILD_BUILD_HOST=capsem");
	r = r ?: strv_push(&v, "KBUILD_BUILD_VERSION=1");
	r = r ?: strv_pushf(&v, "KBUILD_BUILD_TIMESTAMP=%s", when);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(v);
	return 0;
}

/* Run one make/merge step; on failure print the log's tail. 0 or -EIO/-errno. */
static int step(char *const *argv, const char *cwd, char *const *envp, int log_fd,
		const char *log_path, const char *label)
{
	char hdr[256];
	int n = snprintf(hdr, sizeof(hdr), "\n### capsem-builder: %s\n", label);
	if (n > 0)
		(void)fd_write_all(log_fd, hdr, MIN((size_t)n, sizeof(hdr) - 1));
	int r = run_logged(argv, cwd, envp, log_fd, "kernel", PROGRESS_S);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot run %s", argv[0]);
	if (r > 0) {
		log_error("kernel: %s failed (exit %d); last %d lines of %s:", label, r, TAIL_LINES,
			  log_path);
		run_print_tail(log_path, TAIL_LINES);
		return -EIO;
	}
	return 0;
}

static int lock_build(const char *lock_path, int *ret_fd)
{
	int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return log_error_errno(negative_errno(), "kernel: cannot open %s", lock_path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK) {
			int r = negative_errno();
			safe_close(fd);
			return log_error_errno(r, "kernel: cannot lock %s", lock_path);
		}
		log_info("kernel: another kernel build holds %s: waiting for it", lock_path);
		while (flock(fd, LOCK_EX) < 0) {
			if (errno != EINTR) {
				int r = negative_errno();
				safe_close(fd);
				return log_error_errno(r, "kernel: cannot lock %s", lock_path);
			}
		}
	}
	*ret_fd = fd;
	return 0;
}

/* Look for a finished result; fills ret and returns 1 when there is one. */
static int find_cached(const char *dir, struct kbuild_result *ret)
{
	json_t *info = NULL;
	const char *why = NULL;
	int r = util_cache_check(dir, KBUILD_FILE, &info, &why);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		log_warn("kernel: cached %s is damaged (%s): rebuilding it", dir, why);
		rm_rf(dir);
		return 0;
	}
	json_t *rel = json_object_get(info, "release");
	ret->release = strdup(json_is_string(rel) ? json_string_value(rel) : "unknown");
	ret->dir = strdup(dir);
	json_decref(info);
	if (!ret->release || !ret->dir || asprintf(&ret->path, "%s/" KBUILD_FILE, dir) < 0)
		return log_oom();
	return 1;
}

static int read_release(const char *builddir, char **ret)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	if (asprintf(&path, "%s/include/config/kernel.release", builddir) < 0)
		return -ENOMEM;
	int r = read_file_small(path, 256, &text, NULL);
	if (r < 0)
		return r;
	text[strcspn(text, "\n")] = 0;
	if (!version_valid(text))
		return -EBADMSG;
	*ret = TAKE_PTR(text);
	return 0;
}

/* Copy the build's results into a staging directory and publish it as dir. */
struct store_info {
	const char *key, *version, *frag_sha, *release;
	double seconds;
};

static int store(const struct kbuild_opts *o, const char *builddir, const char *dir,
		 const struct store_info *si)
{
	_cleanup_free_ char *parent = NULL, *stage = NULL, *src = NULL, *dst = NULL;
	_cleanup_free_ char *cfg = NULL, *cfg_dst = NULL;
	char now[32];
	int r;

	if (asprintf(&parent, "%s/kernel", o->cache) < 0 ||
	    asprintf(&src, "%s/vmlinux", builddir) < 0 ||
	    asprintf(&cfg, "%s/.config", builddir) < 0)
		return log_oom();
	r = mkdir_p(parent, 0755);
	if (r == 0)
		r = util_mkdtemp(parent, "kernel", &stage);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot create a directory in %s", parent);
	if (asprintf(&dst, "%s/" KBUILD_FILE, stage) < 0 ||
	    asprintf(&cfg_dst, "%s/config", stage) < 0)
		return log_oom();
	/* The ELF vmlinux, stripped: QEMU boots it through its PVH entry point, which skips the
	 * bzImage's self-decompression (about 1 s under TCG emulation). */
	char *strip[] = { "strip", "--strip-all", "-o", dst, src, NULL };
	_cleanup_free_ char *strip_out = NULL;
	r = run_capture(strip, 4096, &strip_out);
	if (r != 0) {
		rm_rf(stage);
		return log_error_errno(r < 0 ? r : -EIO, "kernel: cannot strip %s into %s", src,
				       dst);
	}
	r = util_copy_atomic(cfg, cfg_dst, 0644);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "kernel: cannot store the config");
	}
	manifest_now(now);
	json_t *info = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:s}", "key", si->key, "recipe",
		CACHEKEY_KERNEL_RECIPE, "arch", KBUILD_ARCH, "source", o->source, "source_version",
		si->version, "fragment", o->fragment, "fragment_sha256", si->frag_sha, "release",
		si->release, "jobs", (int)o->jobs, "seconds", si->seconds, "built", now);
	if (!info) {
		rm_rf(stage);
		return log_oom();
	}
	r = util_cache_write_info(stage, KBUILD_FILE, info);
	json_decref(info);
	if (r == 0)
		r = util_publish_dir(stage, dir);
	if (r < 0) {
		rm_rf(stage);
		return log_error_errno(r, "kernel: cannot store the result in %s", dir);
	}
	return 0;
}

int kbuild_run(const struct kbuild_opts *o, struct kbuild_result *ret)
{
	_cleanup_free_ char *fragment = NULL, *version = NULL, *dir = NULL, *builddir = NULL;
	_cleanup_free_ char *lock_path = NULL, *frag_copy = NULL, *log_dir = NULL;
	_cleanup_free_ char *log_path = NULL, *srcdir = NULL, *config = NULL, *cfg_path = NULL;
	_cleanup_free_ char *o_arg = NULL, *j_arg = NULL, *dot_config = NULL, *release = NULL;
	_cleanup_free_ char *merge_sh = NULL;
	_cleanup_strv_free_ char **bad = NULL, **envp = NULL;
	_cleanup_close_ int lock_fd = -1, log_fd = -1;
	struct kbuild_result res = { 0 };
	size_t frag_len = 0;
	double start = util_now();
	char key16[CACHEKEY_SHORT_LEN + 1], frag_sha[SHA256_HEX_LEN + 1];
	int r;

	r = read_file_small(o->fragment, FRAGMENT_MAX, &fragment, &frag_len);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot read the config fragment %s",
				       o->fragment);
	r = source_version(o->source, &version);
	if (r < 0)
		return r;
	r = cachekey_kernel(version, fragment, frag_len, KBUILD_ARCH, res.key);
	if (r == 0)
		r = sha256_hex_buf(fragment, frag_len, frag_sha);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot compute the cache key");
	memcpy(key16, res.key, CACHEKEY_SHORT_LEN);
	key16[CACHEKEY_SHORT_LEN] = 0;
	if (asprintf(&dir, "%s/kernel/%s", o->cache, key16) < 0)
		return log_oom();

	r = find_cached(dir, &res);
	if (r < 0)
		return r;
	if (r > 0)
		goto done;

	if (asprintf(&builddir, "%s/build/kernel-%s", o->cache, KBUILD_ARCH) < 0 ||
	    asprintf(&lock_path, "%s.lock", builddir) < 0 ||
	    asprintf(&frag_copy, "%s.fragment", builddir) < 0 ||
	    asprintf(&log_dir, "%s/logs", o->cache) < 0 ||
	    asprintf(&log_path, "%s/kernel-%s.log", log_dir, key16) < 0 ||
	    asprintf(&o_arg, "O=%s", builddir) < 0 || asprintf(&j_arg, "-j%u", o->jobs) < 0 ||
	    asprintf(&dot_config, "%s/.config", builddir) < 0)
		return log_oom();
	r = mkdir_p(builddir, 0755);
	if (r == 0)
		r = mkdir_p(log_dir, 0755);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot create directories under %s", o->cache);
	r = lock_build(lock_path, &lock_fd);
	if (r < 0)
		return r;
	/* someone else may have built it while we waited for the lock */
	r = find_cached(dir, &res);
	if (r < 0)
		return r;
	if (r > 0)
		goto done;

	log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "kernel: cannot create %s", log_path);
	log_info("kernel: key %s (source %s, fragment %s); log: %s", key16, version, o->fragment,
		 log_path);

	r = ensure_source(o, version, log_fd, log_path, &srcdir);
	if (r < 0)
		return r;
	r = stamp_check(builddir, version);
	if (r == -ESTALE) {
		log_info("kernel: %s was built from another source version: starting afresh",
			 builddir);
		r = rm_rf(builddir);
		if (r == 0)
			r = mkdir_p(builddir, 0755);
		if (r < 0)
			return log_error_errno(r, "kernel: cannot reset %s", builddir);
	}
	r = stamp_write(builddir, version);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot write a stamp in %s", builddir);
	/* merge exactly the bytes that were hashed */
	r = write_file_atomic(frag_copy, fragment, frag_len, 0644);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot write %s", frag_copy);

	r = kbuild_env(o->source, &envp);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot set up the build environment");
	log_info("kernel: configuring (tinyconfig + %s)", o->fragment);
	char *tiny[] = { "make", "-C", srcdir, o_arg, "tinyconfig", NULL };
	if (asprintf(&merge_sh, "%s/scripts/kconfig/merge_config.sh", srcdir) < 0)
		return log_oom();
	char *merge[] = { merge_sh, "-m", "-O", builddir, dot_config, frag_copy, NULL };
	char *olddef[] = { "make", "-C", srcdir, o_arg, "olddefconfig", NULL };
	r = step(tiny, NULL, envp, log_fd, log_path, "make tinyconfig");
	if (r == 0)
		r = step(merge, builddir, envp, log_fd, log_path, "merge_config.sh -m");
	if (r == 0)
		r = step(olddef, NULL, envp, log_fd, log_path, "make olddefconfig");
	if (r < 0)
		return r;

	r = read_file_small(dot_config, 4 << 20, &config, NULL);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot read %s", dot_config);
	r = kconfig_check(fragment, config, &bad);
	if (r < 0)
		return log_oom();
	if (r > 0) {
		log_error("kernel: %d option(s) of %s did not stick in the final .config (missing "
			  "dependencies?):",
			  r, o->fragment);
		for (size_t i = 0; bad && bad[i]; i++)
			fprintf(stderr, "  %s\n", bad[i]);
		return -EINVAL;
	}

	log_info("kernel: building (make -j%u vmlinux, about %u min on %u cores from scratch, "
		 "much less when incremental)...",
		 o->jobs, MAX(1u, 12u / MAX(o->jobs, 1u)), o->jobs);
	char *bz[] = { "make", "-C", srcdir, o_arg, j_arg, "vmlinux", NULL };
	r = step(bz, NULL, envp, log_fd, log_path, "make vmlinux");
	if (r < 0)
		return r;
	r = read_release(builddir, &release);
	if (r < 0)
		return log_error_errno(r, "kernel: cannot read the kernel release from %s",
				       builddir);
	struct store_info si = { .key = res.key,
				 .version = version,
				 .frag_sha = frag_sha,
				 .release = release,
				 .seconds = util_now() - start };
	r = store(o, builddir, dir, &si);
	if (r < 0)
		return r;
	/* read back what was published (it may be another builder's identical result) */
	r = find_cached(dir, &res);
	if (r <= 0)
		return r < 0 ? r : log_error_errno(-EIO, "kernel: %s vanished after storing", dir);
	res.cached = 0;
	res.seconds = util_now() - start;
	log_info("kernel: built %s (%s) in %.0f s", res.path, res.release, res.seconds);
	*ret = res;
	return 0;
done:
	res.cached = 1;
	res.seconds = util_now() - start;
	log_info("kernel: cached %s (%s)", res.path, res.release);
	*ret = res;
	return 0;
}

static void kernel_help(void)
{
	printf("Usage: capsem-builder kernel [OPTIONS]\n"
	       "\n"
	       "Build the guest kernel (stripped ELF vmlinux, PVH boot) from Debian's "
	       "linux-source-6.1: make tinyconfig,\n"
	       "merge the config fragment, make olddefconfig, check that every option of the\n"
	       "fragment stuck, make vmlinux, strip it. Cached by a hash of source version + "
	       "fragment + "
	       "arch;\n"
	       "a cached kernel is returned at once. Prints the kernel's path.\n"
	       "\n"
	       "Options:\n"
	       "      --fragment FILE  config fragment (default %s)\n"
	       "      --source FILE    kernel source tarball (default %s)\n"
	       "      --cache DIR      cache root (default $CAPSEM_CACHE or ~/.cache/capsem)\n"
	       "  -j, --jobs N         parallel make jobs (default: online CPUs)\n"
	       "      --json           print "
	       "{\"path\",\"key\",\"release\",\"seconds\",\"cached\"}\n"
	       "  -h, --help           this help\n",
	       DEFAULT_FRAGMENT, UTIL_DEFAULT_TARBALL);
}

int cmd_kernel(int argc, char **argv)
{
	enum { ARG_FRAGMENT = 0x100, ARG_SOURCE, ARG_CACHE, ARG_JSON };
	static const struct option opts[] = { { "fragment", required_argument, NULL, ARG_FRAGMENT },
					      { "source", required_argument, NULL, ARG_SOURCE },
					      { "cache", required_argument, NULL, ARG_CACHE },
					      { "jobs", required_argument, NULL, 'j' },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *cache_opt = NULL;
	struct kbuild_opts o = { .fragment = DEFAULT_FRAGMENT, .source = UTIL_DEFAULT_TARBALL };
	int json = 0, c;

	o.jobs = util_default_jobs();
	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_FRAGMENT:
			o.fragment = optarg;
			break;
		case ARG_SOURCE:
			o.source = optarg;
			break;
		case ARG_CACHE:
			cache_opt = optarg;
			break;
		case 'j':
			if (util_parse_jobs(optarg, &o.jobs) < 0) {
				log_error("--jobs: expected a number from 1 to 1024, got '%s'",
					  optarg);
				return 2;
			}
			break;
		case ARG_JSON:
			json = 1;
			break;
		case 'h':
			kernel_help();
			return 0;
		default:
			return 2;
		}
	}
	if (optind < argc) {
		log_error("kernel: unexpected argument '%s' (see --help)", argv[optind]);
		return 2;
	}
	_cleanup_free_ char *cache = util_cache_root(cache_opt);
	if (!cache)
		return log_oom(), 1;
	o.cache = cache;
	struct kbuild_result res = { 0 };
	if (kbuild_run(&o, &res) < 0)
		return 1;
	if (json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:f, s:b}", "path", res.path, "key", res.key,
				      "release", res.release, "seconds", res.seconds, "cached",
				      res.cached);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!s) {
			kbuild_result_done(&res);
			return log_oom(), 1;
		}
		printf("%s\n", s);
		free(s);
	} else {
		printf("%s\n", res.path);
	}
	kbuild_result_done(&res);
	return 0;
}
