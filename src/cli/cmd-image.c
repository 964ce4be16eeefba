/* cmd-image.c - capsem image list | build | rm, and capsem doctor VM.
 *
 * list and rm are requests to capsemd (GET /images, DELETE /images/{name}: the daemon refuses to
 * delete an image that a running VM uses). build runs capsem-builder (found beside capsem, or
 * $CAPSEM_BUILDER_BIN) with the static guest binary ($CAPSEM_GUEST_BIN, else the source tree's
 * build-guest/), its progress lines going straight to our stderr. doctor VM runs capsem-doctor
 * inside the VM through the exec path and passes its table (or JSON) and exit status through.
 *
 * Trust boundary: arguments are the user's (validated before they reach a path or an argv);
 * answers are the daemon's JSON, read defensively. Main thread of the CLI.
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clilib.h"
#include "commands.h"
#include "cliutil.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "strv.h"
#include "vmproc.h"

#define DOCTOR_TIMEOUT_MS (10u * 60u * 1000u)

static const char *js(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "-";
}

/* [A-Za-z0-9._-], 1..64, not starting with '.' (capsem-builder's image names). */
static int image_name_ok(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= 64 && s[0] != '.' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static void image_help(void)
{
	printf("Usage: capsem image list [--json]\n"
	       "       capsem image build [--config DIR] [--name NAME] [--json]\n"
	       "       capsem image rm NAME... [--json]\n"
	       "\n"
	       "Guest images live in $CAPSEM_IMAGES_DIR (default $CAPSEM_HOME/images). VMs that\n"
	       "name no image get 'debian' once it is installed, else 'minimal'.\n"
	       "  list   the installed images, their size and the running VMs using them\n"
	       "  build  build an image config (default guest/config: Debian with python3, node,\n"
	       "         git and the Claude Code, Gemini and Codex CLIs) with capsem-builder and\n"
	       "         install it; the root file system is built with mmdebstrap as root, or\n"
	       "         as a normal user with subordinate ids (/etc/subuid) and newuidmap\n"
	       "  rm     delete images (refused while a running VM uses one, or while fork\n"
	       "         images are based on it; removing a fork never touches its base)\n"
	       "\n"
	       "Fork images ('capsem fork VM IMAGE') show their base in the BASE column.\n");
}

static int image_list(int argc, char **argv)
{
	int json = argc > 1 && streq(argv[1], "--json");
	if (argc > 1 + json)
		return log_error("image list: unexpected argument '%s'", argv[1 + json]),
		       CLI_EXIT_USAGE;
	struct api_response res;
	if (cli_api("GET", "/images", NULL, &res) < 0)
		return 1;
	if (!json_is_array(res.json)) {
		api_response_done(&res);
		return log_error("capsemd answered GET /images with something other than a list"),
		       1;
	}
	if (json) {
		cli_print_json(res.json);
	} else {
		size_t i;
		json_t *im;
		printf("%-16s  %-7s  %9s  %-16s  %-20s  %-10s  %s\n", "NAME", "DEFAULT", "SIZE",
		       "KERNEL", "CREATED", "BASE", "IN USE");
		json_array_foreach(res.json, i, im)
		{
			char size[32] = "-";
			json_t *size_v = json_object_get(im, "size");
			if (json_is_integer(size_v))
				cli_format_mib((uint64_t)json_integer_value(size_v) >> 20, size,
					       sizeof(size));
			printf("%-16s  %-7s  %9s  %-16s  %-20s  %-10s  %zu VM%s%s%s\n",
			       js(im, "name"),
			       json_is_true(json_object_get(im, "default")) ? "yes" : "", size,
			       js(im, "kernel"), js(im, "created"), js(im, "base"),
			       json_array_size(json_object_get(im, "in_use")),
			       json_array_size(json_object_get(im, "in_use")) == 1 ? "" : "s",
			       json_object_get(im, "error") ? "  error: " : "",
			       json_object_get(im, "error") ? js(im, "error") : "");
		}
	}
	api_response_done(&res);
	return 0;
}

static int image_rm(int argc, char **argv)
{
	int json = 0, failed = 0;
	json_t *done = json_array();
	if (argc < 2)
		return log_error("image rm: no image named (see 'capsem image --help')"),
		       CLI_EXIT_USAGE;
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--json")) {
			json = 1;
			continue;
		}
		if (!image_name_ok(argv[i])) {
			log_error("image rm: '%s' is not an image name", argv[i]);
			failed = 1;
			continue;
		}
		_cleanup_free_ char *path = NULL;
		struct api_response res;
		if (asprintf(&path, "/images/%s", argv[i]) < 0)
			return log_oom(), 1;
		if (cli_api("DELETE", path, NULL, &res) < 0) {
			failed = 1;
			continue;
		}
		json_array_append_new(done, json_string(argv[i]));
		if (!json)
			printf("%s\n", argv[i]);
		api_response_done(&res);
	}
	if (json)
		cli_print_json(json_pack("{s:o}", "deleted", done));
	else
		json_decref(done);
	return failed;
}

static int image_build(int argc, char **argv)
{
	enum { ARG_CONFIG = 0x100, ARG_NAME, ARG_JSON };
	static const struct option opts[] = { { "config", required_argument, NULL, ARG_CONFIG },
					      { "name", required_argument, NULL, ARG_NAME },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *config = NULL, *name = NULL;
	int json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_CONFIG:
			config = optarg;
			break;
		case ARG_NAME:
			if (!image_name_ok(optarg))
				return log_error("image build: --name '%s' is not an image name",
						 optarg),
				       CLI_EXIT_USAGE;
			name = optarg;
			break;
		case ARG_JSON:
			json = 1;
			break;
		case 'h':
			image_help();
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return log_error("image build: unexpected argument '%s'", argv[optind]),
		       CLI_EXIT_USAGE;
	return cli_image_build(config, name, json) < 0 ? 1 : 0;
}

int cmd_image(int argc, char **argv)
{
	if (argc < 2 || streq(argv[1], "-h") || streq(argv[1], "--help") ||
	    streq(argv[1], "help")) {
		image_help();
		return argc < 2 ? CLI_EXIT_USAGE : 0;
	}
	const char *sub = argv[1];
	if (streq(sub, "list") || streq(sub, "ls"))
		return image_list(argc - 1, argv + 1);
	if (streq(sub, "rm") || streq(sub, "delete"))
		return image_rm(argc - 1, argv + 1);
	if (streq(sub, "build"))
		return image_build(argc - 1, argv + 1);
	log_error("image: unknown command '%s' (see 'capsem image --help')", sub);
	return CLI_EXIT_USAGE;
}

int cmd_doctor_vm(int argc, char **argv)
{
	const char *ref = NULL;
	_cleanup_strv_free_ char **cmd = NULL;
	int r = strv_push(&cmd, "capsem-doctor");
	for (int i = 1; r == 0 && i < argc; i++) {
		if (streq(argv[i], "--json") || streq(argv[i], "--list"))
			r = strv_push(&cmd, argv[i]);
		else if (streq(argv[i], "-k")) {
			if (i + 1 >= argc)
				return log_error("doctor: -k needs a group (see 'capsem doctor VM "
						 "--list')"),
				       CLI_EXIT_USAGE;
			r = strv_push(&cmd, "-k");
			if (r == 0)
				r = strv_push(&cmd, argv[++i]);
		} else if (argv[i][0] == '-')
			return log_error("doctor: unknown option '%s'", argv[i]), CLI_EXIT_USAGE;
		else if (ref)
			return log_error("doctor: one VM at a time"), CLI_EXIT_USAGE;
		else
			ref = argv[i];
	}
	if (r < 0)
		return log_oom(), CLI_EXIT_FAILURE;
	struct cli_exec e = { .argv = cmd, .timeout_ms = DOCTOR_TIMEOUT_MS };
	int sigfd = cli_exec_signals(0);
	if (sigfd < 0)
		return log_error_errno(sigfd, "signalfd"), CLI_EXIT_FAILURE;
	int st = cli_exec_run(ref, &e, sigfd);
	safe_close(sigfd);
	return st;
}

/* ---- fork ---- */

int cmd_fork(int argc, char **argv)
{
	static const struct option opts[] = { { "description", required_argument, NULL, 'd' },
					      { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *desc = NULL;
	int json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "d:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'd':
			desc = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("Usage: capsem fork VM IMAGE [--description TEXT] [--json]\n"
			       "\n"
			       "Make a new image from a named VM: its system changes (installed\n"
			       "packages, edited configuration), its /root (logins, clones,\n"
			       "virtualenvs) and its own workspace. A folder shared with "
			       "--workspace\n"
			       "is not copied: it stays where it is. A running VM is synced first "
			       "and\n"
			       "keeps running. New VMs boot from the image with\n"
			       "'capsem create --image IMAGE' or 'capsem run --image IMAGE', each "
			       "with\n"
			       "its own copy. The image depends on its base image only (a fork of "
			       "a\n"
			       "fork too): 'capsem image rm' keeps a base while forks use it.\n"
			       "\n"
			       "  -d, --description TEXT  a line saying what is in the image\n"
			       "      --json              the new image as JSON\n");
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return log_error("fork: expected VM and IMAGE (see 'capsem fork --help')"),
		       CLI_EXIT_USAGE;
	const char *image = argv[optind + 1];
	if (!image_name_ok(image))
		return log_error("fork: '%s' is not an image name", image), CLI_EXIT_USAGE;
	_cleanup_free_ char *path = api_vm_path(argv[optind], "/fork");
	json_t *body = json_pack("{s:s}", "image", image);
	if (body && desc)
		json_object_set_new(body, "description", json_string(desc));
	struct api_response res;
	int r = path && body ? cli_api("POST", path, body, &res) : -ENOMEM;
	json_decref(body);
	if (r < 0)
		return 1;
	if (json) {
		cli_print_json(res.json);
	} else {
		json_t *ms = json_object_get(res.json, "elapsed_ms");
		json_t *used = json_object_get(res.json, "disk_used");
		printf("%s (base %s, %.1f MiB of disk data) made in %.2f s\n",
		       js(res.json, "image"), js(res.json, "base"),
		       json_is_integer(used) ? (double)json_integer_value(used) / 1048576.0 : 0.0,
		       json_is_number(ms) ? json_number_value(ms) / 1000.0 : 0.0);
	}
	api_response_done(&res);
	return 0;
}
