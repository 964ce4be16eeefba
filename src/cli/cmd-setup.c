/* cmd-setup.c - "capsem setup": the first-run path of an installed Capsem, safe to run again.
 *
 * Steps, each skipped when its result is already there (--force redoes them): check the host
 * (QEMU, KVM or TCG, the helper binaries, free space, the kvm group); find provider keys in the
 * environment and offer to store them in $CAPSEM_HOME/credentials (0600; a key is never
 * printed); install the 'debian' image (built with capsem-builder: as root, or as root of a user
 * namespace of its own for a normal user with subordinate ids, else the user is told what to
 * add or the exact sudo commands); install and start the systemd user service (without a
 * user manager capsem starts capsemd on demand, said so); boot one VM and run `uname -a` in it.
 * Then a summary of what was done and what is missing, and $CAPSEM_HOME/setup.json recording
 * it (the first `capsem run` looks for that file to tell a new user about setup).
 *
 * Trust boundary: the user's own environment and answers on the terminal; the daemon's JSON.
 * Questions are asked only when stdin is a terminal and --non-interactive is not given; the
 * answer that changes nothing is the default. Main thread of the CLI.
 */
#include <getopt.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "clilib.h"
#include "commands.h"
#include "config.h"
#include "credentials.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "userns.h"

#define SETUP_IMAGE_MIB 4096 /* room the debian image and its build cache want */
#define SMOKE_TIMEOUT_MS (5u * 60u * 1000u)

struct setup_opts {
	int interactive;
	int force;
	int json;
	int store_keys; /* --store-keys: store without asking */
	int no_keys;
	int no_image;
	int no_service;
	int no_smoke;
	const char *image;
};

/* One line of the summary: what a step did ("done", "skipped", "missing", "failed"). */
struct step {
	const char *name;
	const char *status;
	char detail[1024];
};

static void setup_help(void)
{
	printf("Usage: capsem setup [OPTIONS]\n"
	       "\n"
	       "First-run setup of Capsem for this user; running it again only does what is\n"
	       "missing. Steps:\n"
	       "  host     QEMU, KVM (else TCG emulation, with a note), capsem-vm and capsemd,\n"
	       "           free space, membership of the group that owns /dev/kvm\n"
	       "  keys     provider keys found in the environment (ANTHROPIC_API_KEY,\n"
	       "           OPENAI_API_KEY, GEMINI_API_KEY/GOOGLE_API_KEY, GH_TOKEN/GITHUB_TOKEN)\n"
	       "           are offered for $CAPSEM_HOME/credentials (mode 0600); keys are never\n"
	       "           printed. Keys in the environment work without storing them.\n"
	       "  image    the 'debian' image (python3, node, git, the AI CLIs), built by\n"
	       "           capsem-builder with mmdebstrap and npm: needs the network and takes\n"
	       "           10-30 minutes the first time (later runs reuse its cache). A normal\n"
	       "           user builds it as root of a user namespace of its own: newuidmap\n"
	       "           (package uidmap) and subordinate ids in /etc/subuid and /etc/subgid\n"
	       "           (useradd gives them); without them setup prints what to run. The\n"
	       "           package's 'minimal' image works without this step.\n"
	       "  service  capsemd as a systemd user service (capsem install); without a systemd\n"
	       "           user manager capsem starts capsemd on demand instead\n"
	       "  smoke    boots one VM and runs 'uname -a' in it\n"
	       "\n"
	       "Options:\n"
	       "  -n, --non-interactive  ask nothing: keys are stored only with --store-keys\n"
	       "  -f, --force            redo every step (rebuild the image, rewrite the service)\n"
	       "      --store-keys       store the environment's keys without asking\n"
	       "      --no-keys          skip the keys step\n"
	       "      --image NAME       the image to install: debian (default) or minimal (the\n"
	       "                         package's: nothing to build)\n"
	       "      --no-image         skip the image step\n"
	       "      --no-service       skip the service step\n"
	       "      --no-smoke         skip the test VM\n"
	       "      --json             print the summary as JSON: {\"ok\", \"steps\": "
	       "[{\"step\",\n"
	       "                         \"status\", \"detail\"}]}; progress stays on stderr\n"
	       "  -h, --help             this text\n"
	       "\n"
	       "Exit status: 0 when Capsem can run VMs (the smoke test passed, or was skipped\n"
	       "and the host checks passed), 1 otherwise, 2 for bad options.\n");
}

static int parse_setup_args(int argc, char **argv, struct setup_opts *o)
{
	enum {
		ARG_STORE = 0x100,
		ARG_NOKEYS,
		ARG_IMAGE,
		ARG_NOIMAGE,
		ARG_NOSVC,
		ARG_NOSMOKE,
		ARG_JSON
	};
	static const struct option opts[] = {
		{ "non-interactive", no_argument, NULL, 'n' },
		{ "force", no_argument, NULL, 'f' },
		{ "store-keys", no_argument, NULL, ARG_STORE },
		{ "no-keys", no_argument, NULL, ARG_NOKEYS },
		{ "image", required_argument, NULL, ARG_IMAGE },
		{ "no-image", no_argument, NULL, ARG_NOIMAGE },
		{ "no-service", no_argument, NULL, ARG_NOSVC },
		{ "no-smoke", no_argument, NULL, ARG_NOSMOKE },
		{ "json", no_argument, NULL, ARG_JSON },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	int c;
	o->interactive = isatty(STDIN_FILENO);
	o->image = "debian";
	optind = 1;
	while ((c = getopt_long(argc, argv, "nfh", opts, NULL)) >= 0) {
		switch (c) {
		case 'n':
			o->interactive = 0;
			break;
		case 'f':
			o->force = 1;
			break;
		case ARG_STORE:
			o->store_keys = 1;
			break;
		case ARG_NOKEYS:
			o->no_keys = 1;
			break;
		case ARG_IMAGE:
			if (!streq(optarg, "debian") && !streq(optarg, "minimal"))
				return log_error("setup: --image is debian or minimal, not '%s'",
						 optarg),
				       CLI_EXIT_USAGE;
			o->image = optarg;
			break;
		case ARG_NOIMAGE:
			o->no_image = 1;
			break;
		case ARG_NOSVC:
			o->no_service = 1;
			break;
		case ARG_NOSMOKE:
			o->no_smoke = 1;
			break;
		case ARG_JSON:
			o->json = 1;
			break;
		case 'h':
			setup_help();
			return 1;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return log_error("setup: unexpected argument '%s'", argv[optind]), CLI_EXIT_USAGE;
	return 0;
}

/* A yes/no question on the terminal; def when not interactive or on an empty answer. */
static int ask(const struct setup_opts *o, int def, const char *question)
{
	char line[16];
	if (!o->interactive)
		return def;
	fprintf(stderr, "%s [%s] ", question, def ? "Y/n" : "y/N");
	if (!fgets(line, sizeof(line), stdin) || line[0] == '\n')
		return def;
	return line[0] == 'y' || line[0] == 'Y';
}

static void say(const struct setup_opts *o, const char *fmt, ...) _printf_(2, 3);
static void say(const struct setup_opts *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	/* progress: stdout for people, stderr when stdout is the JSON summary */
	vfprintf(o->json ? stderr : stdout, fmt, ap);
	va_end(ap);
	fflush(o->json ? stderr : stdout);
}

/* ---- host ---- */

static int step_host(const struct setup_opts *o, struct step *s)
{
	struct cli_check ch[] = {
		{ .name = "qemu", .required = 1 },
		{ .name = "accel" },
		{ .name = "capsem-vm", .required = 1 },
		{ .name = "capsemd", .required = 1 },
		{ .name = "disk", .required = 1 },
		{ .name = "groups" },
		{ .name = "userns" },
	};
	cli_check_qemu(&ch[0]);
	cli_check_accel(&ch[1]);
	cli_check_binary(&ch[2], "capsem-vm", "CAPSEM_VM_BIN", "vm");
	cli_check_binary(&ch[3], "capsemd", "CAPSEM_DAEMON_BIN", "daemon");
	cli_check_disk(&ch[4], SETUP_IMAGE_MIB);
	cli_check_groups(&ch[5]);
	cli_check_userns(&ch[6]);
	int failed = 0;
	say(o, "== host\n");
	for (size_t i = 0; i < ELEMENTSOF(ch); i++) {
		say(o, "  %-10s %-5s %s\n", ch[i].name,
		    ch[i].status == CLI_CHECK_OK     ? "ok"
		    : ch[i].status == CLI_CHECK_WARN ? "note"
						     : "FAIL",
		    ch[i].detail);
		if (ch[i].required && ch[i].status == CLI_CHECK_FAIL)
			failed = 1;
	}
	s->status = failed ? "failed" : "done";
	snprintf(s->detail, sizeof(s->detail), "%.400s; %s", ch[1].detail,
		 failed ? "a required check failed (see above)" : "required checks passed");
	return failed ? -ENXIO : 0;
}

/* ---- keys ---- */

static int step_keys(const struct setup_opts *o, const char *home, struct step *s)
{
	_cleanup_cred_free_ struct cred_store *env = NULL, *file = NULL;
	_cleanup_free_ char *path = NULL;
	char err[256];
	char *const noenv[] = { NULL };
	unsigned store = 0;
	int found = 0, kept = 0;

	say(o, "== keys\n");
	if (asprintf(&path, "%s/" CRED_FILE, home) < 0)
		return log_oom();
	if (cred_load(NULL, NULL, &env, err, sizeof(err)) < 0 ||
	    cred_load(path, noenv, &file, err, sizeof(err)) < 0) {
		s->status = "failed";
		snprintf(s->detail, sizeof(s->detail), "%s", err);
		say(o, "  %s\n", err);
		return -EBADMSG;
	}
	for (int p = 0; p < CRED_N_PROVIDERS; p++) {
		const char *name = cred_provider((enum cred_provider)p)->name;
		const char *src = cred_key_source(env, (enum cred_provider)p);
		if (!src)
			continue;
		found++;
		if (cred_has_key(file, (enum cred_provider)p) && !o->force) {
			say(o, "  %-9s from %s: already in %s\n", name, src, path);
			continue;
		}
		_cleanup_free_ char *q = NULL;
		if (asprintf(&q, "  store the %s key from $%s in %s?", name, src, path) < 0)
			return log_oom();
		/* without a terminal (or with -n) only --store-keys stores: a script never
		 * writes a secret to disk by default */
		if (o->store_keys || (o->interactive && ask(o, 1, q))) {
			store |= 1u << p;
			say(o, "  %-9s from %s: storing\n", name, src);
		} else {
			kept++;
			say(o,
			    "  %-9s from %s: not stored (used from the environment while it is "
			    "set%s)\n",
			    name, src, o->interactive ? "" : "; --store-keys stores it");
		}
	}
	if (store) {
		int r = mkdir_p(home, 0700);
		if (r == 0)
			r = cred_file_store(path, env, store, err, sizeof(err));
		if (r < 0) {
			s->status = "failed";
			snprintf(s->detail, sizeof(s->detail), "%s", err);
			say(o, "  %s\n", err);
			return r;
		}
	}
	s->status = store ? "done" : found ? "skipped" : "missing";
	if (found)
		snprintf(s->detail, sizeof(s->detail),
			 "%d key(s) in the environment: %d stored in %s, %d used from the "
			 "environment only",
			 found, __builtin_popcount(store), path, kept);
	else
		snprintf(s->detail, sizeof(s->detail),
			 "no provider key in the environment: agents need one; set "
			 "ANTHROPIC_API_KEY (or another) and run setup again, or write %s",
			 path);
	if (!found)
		say(o, "  no provider key found in the environment\n");
	return 0;
}

/* ---- image ---- */

static int image_installed(const char *name)
{
	_cleanup_free_ char *dir = cli_image_dir(name), *err = NULL;
	return dir && manifest_verify(dir, &err) == 0;
}

static int step_image(const struct setup_opts *o, struct step *s)
{
	say(o, "== image\n");
	if (image_installed(o->image) && !o->force) {
		_cleanup_free_ char *dir = cli_image_dir(o->image);
		s->status = "skipped";
		snprintf(s->detail, sizeof(s->detail), "'%s' already installed: %s", o->image,
			 strempty(dir));
		say(o, "  %s\n", s->detail);
		return 0;
	}
	if (streq(o->image, "minimal")) {
		s->status = "missing";
		snprintf(s->detail, sizeof(s->detail),
			 "no 'minimal' image: reinstall the package (sudo apt install --reinstall "
			 "capsem), or 'make image' in a source tree");
		say(o, "  %s\n", s->detail);
		return -ENOENT;
	}
	char why[400];
	const struct passwd *pw = getpwuid(getuid());
	if (geteuid() != 0 && userns_check(why, sizeof(why)) < 0) {
		_cleanup_free_ char *home = cli_capsem_home();
		s->status = "missing";
		snprintf(s->detail, sizeof(s->detail),
			 "building the 'debian' image as a normal user needs a user namespace of "
			 "its own: %.300s; or as root: sudo env CAPSEM_IMAGES_DIR=%.200s/images "
			 "capsem image build && sudo chown -R %.64s: %.200s/images   (the "
			 "'minimal' image works meanwhile)",
			 why, strempty(home), pw ? pw->pw_name : "$USER", strempty(home));
		say(o, "  %s\n", s->detail);
		return -EPERM;
	}
	say(o, "  building the 'debian' image: Debian bookworm with mmdebstrap, Node.js and the AI "
	       "CLIs with npm, packed as erofs (needs the network; 10-30 minutes the first time, "
	       "seconds when cached; progress below)\n");
	int r = cli_image_build(NULL, NULL, 0);
	if (r < 0) {
		s->status = "failed";
		snprintf(
			s->detail, sizeof(s->detail),
			"capsem-builder failed (its messages are above); the 'minimal' image works "
			"meanwhile; retry with 'capsem setup --force' or 'capsem image build'");
		return r;
	}
	_cleanup_free_ char *dir = cli_image_dir("debian");
	s->status = "done";
	snprintf(s->detail, sizeof(s->detail), "built and installed 'debian' in %s", strempty(dir));
	return 0;
}

/* ---- service ---- */

static int step_service(const struct setup_opts *o, struct step *s)
{
	say(o, "== service\n");
	if (!cli_systemd_user_available()) {
		s->status = "skipped";
		snprintf(s->detail, sizeof(s->detail),
			 "no systemd user manager here (PID 1 is not systemd, or no login "
			 "session): capsem starts capsemd on demand (log: ~/.capsem/run/"
			 "capsemd.log)");
		say(o, "  %s\n", s->detail);
		return 0;
	}
	int r = cli_service_install();
	s->status = r > 0 ? "done" : r == 0 ? "skipped" : "failed";
	snprintf(s->detail, sizeof(s->detail), "%s",
		 r > 0 ? "capsemd runs as a systemd user service (systemctl --user status capsemd)"
		 : r == 0 ? "unit installed, not running: capsem starts capsemd on demand"
			  : "could not install the service (see above)");
	return r < 0 ? r : 0;
}

/* ---- smoke test ---- */

static int step_smoke(const struct setup_opts *o, const char *image, struct step *s)
{
	struct api_response res = {};
	char *argv[] = { "uname", "-a", NULL };
	say(o, "== smoke test: a VM from the '%s' image runs 'uname -a'\n", image);
	json_t *body = json_pack("{s:s}", "image", image);
	if (!body)
		return log_oom();
	int r = cli_api("POST", "/vms", body, &res);
	json_decref(body);
	if (r < 0) {
		s->status = "failed";
		snprintf(s->detail, sizeof(s->detail),
			 "the VM did not start (see above; 'capsem "
			 "doctor' checks the host)");
		return r;
	}
	_cleanup_free_ char *id =
		strdup(strempty(json_string_value(json_object_get(res.json, "id"))));
	const char *accel = json_string_value(json_object_get(res.json, "accel"));
	double boot = json_number_value(json_object_get(res.json, "boot_ms"));
	snprintf(s->detail, sizeof(s->detail), "VM booted in %.0f ms (%s)", boot,
		 accel ? accel : "?");
	api_response_done(&res);
	if (!id)
		return log_oom();
	int sigfd = cli_exec_signals(0);
	if (sigfd < 0)
		return log_error_errno(sigfd, "signalfd");
	/* the command's output is part of the progress: off stdout when that is JSON */
	int saved = o->json ? dup(STDOUT_FILENO) : -1;
	if (saved >= 0)
		dup2(STDERR_FILENO, STDOUT_FILENO);
	struct cli_exec e = { .argv = argv, .timeout_ms = SMOKE_TIMEOUT_MS };
	int st = cli_exec_run(id, &e, sigfd);
	fflush(stdout);
	if (saved >= 0) {
		dup2(saved, STDOUT_FILENO);
		safe_close(saved);
	}
	safe_close(sigfd);
	_cleanup_free_ char *path = api_vm_path(id, "");
	struct api_response d = {};
	if (path && cli_api("DELETE", path, NULL, &d) == 0)
		api_response_done(&d);
	size_t n = strlen(s->detail);
	snprintf(s->detail + n, sizeof(s->detail) - n, "; uname -a %s", st == 0 ? "ran" : "FAILED");
	s->status = st == 0 ? "done" : "failed";
	return st == 0 ? 0 : -EIO;
}

/* ---- the record and the summary ---- */

static void write_record(const char *home, const struct step *steps, size_t n, int ok)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	char now[32];
	json_t *a = json_array();
	manifest_now(now);
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a,
				      json_pack("{s:s, s:s, s:s}", "step", steps[i].name, "status",
						steps[i].status, "detail", steps[i].detail));
	json_t *o = json_pack("{s:s, s:s, s:b, s:o}", "version", CAPSEM_VERSION, "when", now, "ok",
			      ok, "steps", a);
	if (!o || asprintf(&path, "%s/" CLI_SETUP_RECORD, home) < 0 ||
	    !(text = json_dumps(o, JSON_INDENT(2))) || mkdir_p(home, 0700) < 0 ||
	    write_file_atomic(path, text, strlen(text), 0644) < 0)
		log_warn("could not record the setup in %s", strempty(path));
	json_decref(o);
}

int cmd_setup(int argc, char **argv)
{
	struct setup_opts o = {};
	int r = parse_setup_args(argc, argv, &o);
	if (r)
		return r == 1 ? 0 : r;
	_cleanup_free_ char *home = cli_capsem_home();
	if (!home)
		return 1;
	struct step steps[5] = {
		{ "host", "skipped", "" },
		{ "keys", "skipped", "--no-keys" },
		{ "image", "skipped", "--no-image" },
		{ "service", "skipped", "--no-service" },
		{ "smoke", "skipped", "--no-smoke" },
	};
	const struct passwd *pw = getpwuid(getuid()); /* $USER may be unset (sudo, env -i) */
	say(&o, "Setting up Capsem %s for %s (CAPSEM_HOME=%s)\n", CAPSEM_VERSION,
	    pw ? pw->pw_name : strempty(getenv("USER")), home);
	int host_ok = step_host(&o, &steps[0]) == 0;
	if (!o.no_keys)
		(void)step_keys(&o, home, &steps[1]);
	if (!o.no_image)
		(void)step_image(&o, &steps[2]);
	if (!o.no_service)
		(void)step_service(&o, &steps[3]);
	int smoke_ok = -1;
	if (!o.no_smoke && host_ok) {
		/* the image VMs will get: the one just set up, else what is there */
		const char *img = image_installed(o.image) ? o.image : cli_default_image();
		smoke_ok = step_smoke(&o, img, &steps[4]) == 0;
	} else if (!o.no_smoke) {
		steps[4].status = "skipped";
		snprintf(steps[4].detail, sizeof(steps[4].detail), "the host checks failed");
	}
	int ok = host_ok && smoke_ok != 0;
	write_record(home, steps, ELEMENTSOF(steps), ok);
	if (o.json) {
		json_t *a = json_array();
		for (size_t i = 0; a && i < ELEMENTSOF(steps); i++)
			json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "step", steps[i].name,
							   "status", steps[i].status, "detail",
							   steps[i].detail));
		json_t *j = json_pack("{s:b, s:s, s:o}", "ok", ok, "home", home, "steps", a);
		cli_print_json(j);
		json_decref(j);
		return ok ? 0 : 1;
	}
	printf("\nSummary\n");
	for (size_t i = 0; i < ELEMENTSOF(steps); i++)
		printf("  %-8s %-8s %s\n", steps[i].name, steps[i].status, steps[i].detail);
	printf("%s\n", ok ? "Capsem is ready: capsem run -- uname -a"
			  : "Capsem cannot run VMs yet: see the failed steps above.");
	return ok ? 0 : 1;
}
