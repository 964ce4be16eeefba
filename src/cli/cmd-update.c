/* cmd-update.c - "capsem update": compare what is installed with a release channel and, with
 * --yes, install what is newer; --rollback goes back.
 *
 * Order, so that a failure changes nothing: the channel's manifest is fetched with its detached
 * signature and verified with the package's key (cli_release_load), then every file to install
 * is downloaded and verified (size, SHA-256; images also against their own manifest.json) into
 * staging, and only then is anything replaced: each image by one directory exchange (the old one
 * kept as .<name>.previous), the package by apt-get (root) or by printing the exact command.
 * Downgrades are refused unless --rollback. The library beneath is cli-release.c (channel,
 * staging, swaps), src/shared/release.c (manifest, signature, versions) and fetch.c (downloads).
 *
 * Trust boundary: the channel and everything it names is network input, trusted only after the
 * checks above. Main thread of the CLI.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clilib.h"
#include "commands.h"
#include "config.h"
#include "fdutil.h"
#include "home.h"
#include "log.h"
#include "macro.h"
#include "release.h"
#include "relload.h"

struct update_opts {
	const char *channel;
	const char *auto_check; /* --auto: write the daemon's setting, nothing else */
	int yes;
	int rollback;
	int json;
	int no_package;
	int no_images;
};

static void update_help(void)
{
	printf("Usage: capsem update [--channel URL] [--yes] [--rollback] [--json]\n"
	       "       capsem update --auto off|daily|weekly [--channel URL]\n"
	       "\n"
	       "Check the release channel for a newer Capsem and newer images, and with --yes\n"
	       "install them. The channel is a JSON manifest (version; each image's files with\n"
	       "URL, size and SHA-256; the package's URL, size and SHA-256) with a detached\n"
	       "Ed25519 signature at URL.sig, checked with the key the package ships\n"
	       "(%s). A manifest that is unsigned, wrongly signed or\n"
	       "invalid changes nothing. Downloads resume and retry; every file is verified\n"
	       "before anything is replaced; a failed check changes nothing and says why.\n"
	       "\n"
	       "Images: an image installed from the channel is replaced when the channel's\n"
	       "version is newer (in one step; the old one is kept for --rollback); an image\n"
	       "the channel has and you do not is installed; an image built here is kept.\n"
	       "The package: as root it is installed with apt-get; otherwise the command to\n"
	       "run is printed (the verified file is kept for it).\n"
	       "\n"
	       "Options:\n"
	       "      --channel URL  the manifest (file://, http:// or https://; default\n"
	       "                     $CAPSEM_UPDATE_URL, else %s)\n"
	       "  -y, --yes          download and install (without it: only say what is newer)\n"
	       "      --rollback     put back the images the last update replaced; with --yes\n"
	       "                     also install the channel's package when it is older\n"
	       "      --no-package   leave the package alone\n"
	       "      --no-images    leave the images alone\n"
	       "      --json         {\"installed\", \"channel_version\", \"newer\", \"package\":\n"
	       "                     {\"action\", ...}, \"images\": [{\"name\", \"installed\",\n"
	       "                     \"available\", \"action\"}], \"changed\", \"error\"}\n"
	       "      --auto WHEN    let capsemd check the channel WHEN (off, the default;\n"
	       "                     daily; weekly) and say what it found in `capsem version`,\n"
	       "                     the API's /settings and the dashboard; it never installs\n"
	       "                     anything (written to $CAPSEM_HOME/settings.toml, [update])\n"
	       "  -h, --help         this text\n"
	       "\n"
	       "Exit status: 0 when it did what was asked (also when nothing is newer), 1 when a\n"
	       "check or a download failed (nothing was changed), 2 for bad options.\n",
	       release_key_path(), *CAPSEM_UPDATE_URL ? CAPSEM_UPDATE_URL : "none: use --channel");
}

static int parse_update_args(int argc, char **argv, struct update_opts *o)
{
	enum { ARG_CHANNEL = 0x100, ARG_ROLLBACK, ARG_JSON, ARG_NOPKG, ARG_NOIMG, ARG_AUTO };
	static const struct option opts[] = { { "channel", required_argument, NULL, ARG_CHANNEL },
					      { "auto", required_argument, NULL, ARG_AUTO },
					      { "yes", no_argument, NULL, 'y' },
					      { "rollback", no_argument, NULL, ARG_ROLLBACK },
					      { "no-package", no_argument, NULL, ARG_NOPKG },
					      { "no-images", no_argument, NULL, ARG_NOIMG },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "yh", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_CHANNEL:
			o->channel = optarg;
			break;
		case ARG_AUTO:
			if (!streq(optarg, "off") && !streq(optarg, "daily") &&
			    !streq(optarg, "weekly"))
				return log_error("update: --auto is off, daily or weekly, not '%s'",
						 optarg),
				       CLI_EXIT_USAGE;
			o->auto_check = optarg;
			break;
		case 'y':
			o->yes = 1;
			break;
		case ARG_ROLLBACK:
			o->rollback = 1;
			break;
		case ARG_NOPKG:
			o->no_package = 1;
			break;
		case ARG_NOIMG:
			o->no_images = 1;
			break;
		case ARG_JSON:
			o->json = 1;
			break;
		case 'h':
			update_help();
			return 1;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return log_error("update: unexpected argument '%s'", argv[optind]), CLI_EXIT_USAGE;
	if (o->auto_check && (o->yes || o->rollback))
		return log_error("update: --auto only sets the daemon's check: no --yes or "
				 "--rollback with it"),
		       CLI_EXIT_USAGE;
	if (o->auto_check)
		return 0;
	if (!o->channel)
		o->channel = release_channel_url();
	if (!o->channel && !o->rollback)
		return log_error("update: no release channel configured: pass --channel URL or set "
				 "CAPSEM_UPDATE_URL"),
		       CLI_EXIT_USAGE;
	return 0;
}

/* The report: what was found and done; printed as text or JSON at the end. */
struct report {
	json_t *o;
	json_t *images;
	int changed;
	int failed;
};

static void report_error(struct report *rp, const char *msg)
{
	rp->failed = 1;
	json_object_set_new(rp->o, "error", json_string(msg));
	log_error("%s", msg);
}

/* ---- rollback ---- */

static int do_rollback(const struct update_opts *o, const char *images, struct report *rp)
{
	_cleanup_closedir_ DIR *d = opendir(images);
	struct dirent *e;
	int n = 0;
	while (d && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] != '.' || l < 11 || !streq(e->d_name + l - 9, ".previous"))
			continue;
		_cleanup_free_ char *name = strndup(e->d_name + 1, l - 10);
		if (!name)
			return log_oom();
		if (!o->yes) {
			json_array_append_new(rp->images,
					      json_pack("{s:s, s:s}", "name", name, "action",
							"rollback available"));
			continue;
		}
		int r = cli_image_rollback(images, name);
		json_array_append_new(rp->images,
				      json_pack("{s:s, s:s}", "name", name, "action",
						r == 0 ? "rolled back" : "rollback failed"));
		if (r < 0) {
			char msg[256];
			snprintf(msg, sizeof(msg), "image %s: rollback failed: %s", name,
				 strerror(-r));
			report_error(rp, msg);
			return r;
		}
		rp->changed = 1;
		n++;
	}
	return n;
}

/* ---- the package ---- */

static int install_package(const struct update_opts *o, const struct release *rel, const char *home,
			   int downgrade, struct report *rp)
{
	_cleanup_free_ char *url = release_resolve_url(o->channel, rel->package.url);
	_cleanup_free_ char *dir = NULL, *path = NULL, *cmd = NULL;
	char err[512];
	if (!url || asprintf(&dir, "%s/downloads", home) < 0 ||
	    asprintf(&path, "%s/capsem_%s_amd64.deb", dir, rel->version) < 0)
		return log_oom();
	int r = mkdir_p(dir, 0700);
	if (r == 0)
		r = cli_fetch_file(url, path, rel->package.size, rel->package.sha256, err,
				   sizeof(err));
	else
		snprintf(err, sizeof(err), "%s: %s", dir, strerror(-r));
	if (r < 0) {
		char msg[700];
		snprintf(msg, sizeof(msg), "the package: %s; nothing was installed", err);
		json_object_set_new(rp->o, "package", json_pack("{s:s}", "action", "failed"));
		report_error(rp, msg);
		return r;
	}
	if (asprintf(&cmd, "apt-get install -y%s %s", downgrade ? " --allow-downgrades" : "",
		     path) < 0)
		return log_oom();
	if (geteuid() != 0) {
		json_object_set_new(rp->o, "package",
				    json_pack("{s:s, s:s, s:s}", "action", "downloaded", "file",
					      path, "command", cmd));
		if (!o->json)
			printf("the package capsem %s is downloaded and verified: install it with\n"
			       "  sudo %s\n",
			       rel->version, cmd);
		return 0;
	}
	char *argv[] = { "apt-get", "install", "-y", downgrade ? "--allow-downgrades" : "-q",
			 path,	    NULL };
	log_info("installing the package: %s", cmd);
	r = cli_run_capture(argv, NULL, 0, 1);
	if (r == 127) {
		char *dpkg[] = { "dpkg", "-i", path, NULL };
		r = cli_run_capture(dpkg, NULL, 0, 1);
	}
	if (r != 0) {
		json_object_set_new(rp->o, "package", json_pack("{s:s}", "action", "failed"));
		report_error(rp, "installing the package failed (apt-get's messages are above)");
		return -EIO;
	}
	json_object_set_new(rp->o, "package", json_pack("{s:s}", "action", "installed"));
	rp->changed = 1;
	unlink(path);
	return 0;
}

/* ---- images ---- */

/* What to do with image im: "install" (absent), "update" (older channel version), "current",
 * or "kept (built here)". */
static const char *image_action(const char *images, const struct release *rel,
				const struct release_image *im, char **ret_installed)
{
	_cleanup_free_ char *dir = NULL, *m = NULL;
	if (asprintf(&dir, "%s/%s", images, im->name) < 0 ||
	    asprintf(&m, "%s/manifest.json", dir) < 0)
		return NULL;
	*ret_installed = cli_image_release_version(images, im->name);
	if (access(m, F_OK) < 0)
		return "install";
	if (!*ret_installed)
		return "kept (built here)";
	return release_version_cmp(rel->version, *ret_installed) > 0 ? "update" : "current";
}

static int update_images(const struct update_opts *o, const struct release *rel, const char *images,
			 struct report *rp)
{
	char *stages[RELEASE_MAX_IMAGES] = {};
	const char *actions[RELEASE_MAX_IMAGES] = {};
	int r = 0;
	for (size_t i = 0; i < rel->n_images; i++) {
		_cleanup_free_ char *inst = NULL;
		actions[i] = image_action(images, rel, &rel->images[i], &inst);
		if (!actions[i])
			return log_oom();
		json_array_append_new(rp->images,
				      json_pack("{s:s, s:s?, s:s, s:s}", "name",
						rel->images[i].name, "installed", inst, "available",
						rel->version, "action", actions[i]));
	}
	if (!o->yes)
		return 0;
	/* everything downloaded and verified first ... */
	for (size_t i = 0; i < rel->n_images && r == 0; i++) {
		char err[512];
		if (!streq(actions[i], "install") && !streq(actions[i], "update"))
			continue;
		r = mkdir_p(images, 0755);
		if (r == 0)
			r = cli_image_stage(images, o->channel, rel, &rel->images[i], &stages[i],
					    err, sizeof(err));
		if (r < 0) {
			char msg[700];
			snprintf(msg, sizeof(msg), "%s; nothing was changed", err);
			report_error(rp, msg);
		}
	}
	/* ... then each swapped in */
	for (size_t i = 0; i < rel->n_images; i++) {
		if (!stages[i])
			continue;
		if (r == 0) {
			int k = cli_image_commit(images, rel->images[i].name, stages[i]);
			json_t *row = json_array_get(rp->images, i);
			json_object_set_new(row, "action",
					    json_string(k == 0 ? streq(actions[i], "install")
									 ? "installed"
									 : "updated"
							       : "failed"));
			if (k < 0) {
				r = k;
				report_error(rp, "an image could not be swapped in");
			} else {
				rp->changed = 1;
			}
		}
		rm_rf(stages[i]); /* a no-op once committed */
		free(stages[i]);
	}
	return r;
}

static void print_report(const struct update_opts *o, struct report *rp)
{
	if (o->json) {
		json_object_set_new(rp->o, "changed", json_boolean(rp->changed));
		cli_print_json(rp->o);
		return;
	}
	const char *cv = json_string_value(json_object_get(rp->o, "channel_version"));
	json_t *pkg = json_object_get(rp->o, "package");
	if (cv)
		printf("capsem %s installed; the channel has %s%s\n", CAPSEM_VERSION, cv,
		       json_is_true(json_object_get(rp->o, "newer")) ? " (newer)" : "");
	if (pkg)
		printf("  package  %s\n", json_string_value(json_object_get(pkg, "action")));
	size_t i;
	json_t *im;
	json_array_foreach(rp->images, i, im)
	{
		const char *inst = json_string_value(json_object_get(im, "installed"));
		printf("  image %-10s %s%s%s\n", json_string_value(json_object_get(im, "name")),
		       json_string_value(json_object_get(im, "action")), inst ? ", installed " : "",
		       inst ? inst : "");
	}
	int todo = pkg &&
		   strstr(strempty(json_string_value(json_object_get(pkg, "action"))), "available");
	json_array_foreach(rp->images, i, im)
	{
		const char *a = json_string_value(json_object_get(im, "action"));
		todo |= a && (streq(a, "install") || streq(a, "update"));
	}
	if (!o->yes && !rp->failed)
		printf("%s\n", todo ? "run 'capsem update --yes' to install what is newer"
				    : "nothing to install");
}

int cmd_update(int argc, char **argv)
{
	struct update_opts o = {};
	int r = parse_update_args(argc, argv, &o);
	if (r)
		return r == 1 ? 0 : r;
	_cleanup_free_ char *home = cli_capsem_home(), *images = NULL;
	if (!home || capsem_images_dir(&images) < 0)
		return 1;
	if (o.auto_check) {
		r = updcheck_settings_write(home, o.auto_check, o.channel);
		if (r < 0)
			return log_error_errno(r, "cannot write %s/" UPDCHECK_SETTINGS, home), 1;
		const char *url = o.channel ? o.channel : release_channel_url();
		if (streq(o.auto_check, "off")) {
			printf("capsemd will not check for updates\n");
			return 0;
		}
		if (!url)
			return log_error("capsemd will check %s once a release channel is "
					 "configured: "
					 "capsem update --auto %s --channel URL",
					 o.auto_check, o.auto_check),
			       1;
		printf("capsemd checks for updates %s (channel %s); `capsem version` says what it "
		       "found\n",
		       o.auto_check, url);
		return 0;
	}
	struct report rp = { .o = json_object(), .images = json_array() };
	if (!rp.o || !rp.images)
		return log_oom(), 1;
	json_object_set_new(rp.o, "installed", json_string(CAPSEM_VERSION));
	json_object_set(rp.o, "images", rp.images);

	if (o.rollback && !o.no_images)
		(void)do_rollback(&o, images, &rp);
	if (o.channel && !rp.failed) {
		_cleanup_release_ struct release *rel = NULL;
		char err[512];
		r = cli_release_load(o.channel, &rel, err, sizeof(err));
		if (r < 0) {
			char msg[700];
			snprintf(msg, sizeof(msg), "release channel %s: %s; nothing was changed",
				 o.channel, err);
			report_error(&rp, msg);
		} else {
			int cmp = release_version_cmp(rel->version, CAPSEM_VERSION);
			json_object_set_new(rp.o, "channel_version", json_string(rel->version));
			json_object_set_new(rp.o, "newer", json_boolean(cmp > 0));
			if (cmp < 0 && !o.rollback) {
				char msg[256];
				snprintf(msg, sizeof(msg),
					 "the channel offers %s, older than the installed %s: "
					 "refusing a downgrade (--rollback allows it)",
					 rel->version, CAPSEM_VERSION);
				json_object_set_new(rp.o, "refused", json_string(msg));
				if (!o.json)
					printf("%s\n", msg);
			} else {
				if (!o.no_images && !o.rollback)
					(void)update_images(&o, rel, images, &rp);
				if (!o.no_package && !rp.failed && rel->has_package &&
				    (cmp > 0 || (cmp < 0 && o.rollback))) {
					if (o.yes)
						(void)install_package(&o, rel, home, cmp < 0, &rp);
					else
						json_object_set_new(
							rp.o, "package",
							json_pack("{s:s, s:s}", "action",
								  cmp > 0 ? "newer available"
									  : "older available",
								  "version", rel->version));
				}
			}
		}
	}
	print_report(&o, &rp);
	json_decref(rp.images);
	json_decref(rp.o);
	return rp.failed ? 1 : 0;
}
