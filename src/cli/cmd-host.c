/* cmd-host.c - the host-side commands: version, doctor (host checks, no daemon needed), and
 * install / uninstall (capsemd as a systemd user service).
 *
 * Trust boundary: the host's own state (files under /proc, /dev/kvm, the image directory, the
 * user's systemd configuration); the one daemon answer (GET /version) is optional and parsed
 * defensively. Helpers run with fork/exec, never through a shell. Main thread of the CLI.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#include "clilib.h"
#include "commands.h"
#include "config.h"
#include "confinfo.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "vmproc.h"

static int json_flag_only(int argc, char **argv, int *json, const char *usage)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'j' && json) {
			*json = 1;
		} else if (c == 'h') {
			fputs(usage, stdout);
			return 1;
		} else {
			if (c == 'j')
				log_error("%s: --json is not an option here", argv[0]);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return log_error("%s: unexpected argument '%s'", argv[0], argv[optind]),
		       CLI_EXIT_USAGE;
	return 0;
}

/* Run argv (PATH search), capturing up to cap bytes of stdout (stderr to /dev/null unless
 * show_err). Its exit status (127 when it could not run), or -errno. */
static int run_capture(char *const *argv, char *out, size_t cap, int show_err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	pid_t pid = fork();
	if (pid < 0) {
		safe_close(p[0]);
		safe_close(p[1]);
		return negative_errno();
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0)
			dup2(nul, STDIN_FILENO);
		dup2(p[1], STDOUT_FILENO);
		if (!show_err && nul >= 0)
			dup2(nul, STDERR_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	safe_close(p[1]);
	size_t n = 0;
	char tmp[4096];
	for (;;) {
		ssize_t k = fd_read_some(p[0], tmp, sizeof(tmp));
		if (k <= 0)
			break;
		size_t take = MIN((size_t)k, cap > n + 1 ? cap - n - 1 : 0);
		if (out && take) {
			memcpy(out + n, tmp, take);
			n += take;
		}
	}
	if (out && cap)
		out[n] = 0;
	safe_close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- version ---- */

int cmd_version(int argc, char **argv)
{
	int json = 0;
	int r = json_flag_only(argc, argv, &json,
			       "Usage: capsem version [--json]\n\nThe versions of capsem and, when "
			       "it runs, capsemd.\n");
	if (r)
		return r == 1 ? 0 : r;
	struct api_conn c;
	struct api_response res = {};
	json_t *daemon = NULL;
	if (api_connect(&c) == 0) {
		if (api_json(&c, "GET", "/version", NULL, &res) == 0 && res.head.status == 200 &&
		    json_is_object(res.json))
			daemon = json_incref(res.json);
		api_response_done(&res);
		api_conn_close(&c);
	}
	if (json) {
		json_t *o = json_pack("{s:{s:s, s:i}, s:o?}", "client", "version", CAPSEM_VERSION,
				      "protocol", 1, "daemon", daemon);
		cli_print_json(o);
		json_decref(o);
		return 0;
	}
	printf("capsem %s (protocol 1)\n", CAPSEM_VERSION);
	if (daemon)
		printf("capsemd %s (protocol %" JSON_INTEGER_FORMAT ", api %" JSON_INTEGER_FORMAT
		       ")\n",
		       strempty(json_string_value(json_object_get(daemon, "version"))),
		       json_integer_value(json_object_get(daemon, "protocol")),
		       json_integer_value(json_object_get(daemon, "api")));
	else
		printf("capsemd: not running\n");
	json_decref(daemon);
	return 0;
}

/* ---- doctor ---- */

struct check {
	const char *name;
	int required;
	int status; /* 0 ok, 1 warning, 2 failed */
	char detail[512];
};

static void check_qemu(struct check *c)
{
	char out[512] = "";
	char *argv[] = { "qemu-system-x86_64", "--version", NULL };
	int r = run_capture(argv, out, sizeof(out), 0);
	char *nl = strchr(out, '\n');
	if (nl)
		*nl = 0;
	if (r == 0 && *out) {
		snprintf(c->detail, sizeof(c->detail), "%s", out);
	} else {
		c->status = 2;
		snprintf(c->detail, sizeof(c->detail), "%s",
			 r == 127 ? "qemu-system-x86_64 not found in PATH (install qemu-system-x86)"
				  : "qemu-system-x86_64 --version failed");
	}
}

static void check_accel(struct check *c)
{
	_cleanup_free_ char *cpuinfo = NULL;
	int flags = 0;
	if (read_file_small("/proc/cpuinfo", 16u << 20, &cpuinfo, NULL) == 0)
		flags = strstr(cpuinfo, " vmx") || strstr(cpuinfo, " svm");
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int kvm_err = fd < 0 ? errno : 0;
	safe_close(fd);
	if (fd >= 0 && flags) {
		snprintf(c->detail, sizeof(c->detail), "KVM (/dev/kvm usable, CPU virtualization)");
		return;
	}
	c->status = 1;
	if (fd < 0)
		snprintf(c->detail, sizeof(c->detail),
			 "TCG emulation, 10-50x slower: /dev/kvm cannot be opened (%s)",
			 strerror(kvm_err));
	else
		snprintf(c->detail, sizeof(c->detail),
			 "TCG emulation, 10-50x slower: the CPU has no vmx/svm flag");
}

static void check_image(struct check *c)
{
	_cleanup_free_ char *dir = cli_image_dir("minimal"), *err = NULL;
	if (!dir || access(dir, F_OK) < 0) {
		c->status = 2;
		snprintf(c->detail, sizeof(c->detail),
			 "image 'minimal' not found in %s (run 'make "
			 "image')",
			 strempty(dir));
		return;
	}
	int r = manifest_verify(dir, &err);
	if (r < 0) {
		c->status = 2;
		snprintf(c->detail, sizeof(c->detail), "%s: %s", dir, err ? err : strerror(-r));
		return;
	}
	snprintf(c->detail, sizeof(c->detail), "%s (manifest verified)", dir);
}

static void check_binary(struct check *c, const char *name, const char *env, const char *sub)
{
	_cleanup_free_ char *p = find_helper_binary(name, env, sub);
	if (p) {
		snprintf(c->detail, sizeof(c->detail), "%s", p);
	} else {
		c->status = 2;
		snprintf(c->detail, sizeof(c->detail), "%s not found (set %s)", name, env);
	}
}

static void check_disk(struct check *c)
{
	_cleanup_free_ char *home = cli_capsem_home();
	struct statvfs sv;
	if (!home) {
		c->status = 2;
		return;
	}
	/* the nearest existing ancestor of CAPSEM_HOME */
	while (statvfs(home, &sv) < 0) {
		char *sl = strrchr(home, '/');
		if (!sl || sl == home) {
			snprintf(home, 2, "/");
			if (statvfs(home, &sv) < 0) {
				c->status = 2;
				snprintf(c->detail, sizeof(c->detail), "statvfs failed");
				return;
			}
			break;
		}
		*sl = 0;
	}
	uint64_t mib = (uint64_t)sv.f_bavail * sv.f_frsize >> 20;
	c->status = mib < 512 ? 2 : mib < 2048 ? 1 : 0;
	snprintf(c->detail, sizeof(c->detail), "%" PRIu64 " MiB free in %s%s", mib, home,
		 c->status ? " (VM disks need room: 2 GiB or more recommended)" : "");
}

int cmd_doctor(int argc, char **argv)
{
	int json = 0;
	int r = json_flag_only(
		argc, argv, &json,
		"Usage: capsem doctor [--json]\n       capsem doctor VM [-k GROUP[,GROUP]] "
		"[--json] "
		"[--list]\n\nCheck the host: QEMU, acceleration, the image, capsem's binaries, "
		"free "
		"disk\nspace (exit status 1 when a required check fails; needs no daemon), and "
		"each host\n"
		"confinement layer (Landlock, seccomp, cgroups, user namespaces, the audit log) "
		"as\n"
		"on or off for this host and user.\n\nWith "
		"a VM, run capsem-doctor inside it, by groups: sandbox (read-only root,\nno "
		"setuid, "
		"modules, /dev/mem, kcore, kallsyms, debugfs; kernel hardening; limits),\nnetwork "
		"(interfaces, routes, DNS, redirect, TLS, HTTP denial, CA trust),\nenvironment "
		"(hostname, identity, /etc/environment, venv, swap, tools), runtimes,\nai (CLIs, "
		"settings, placeholder keys), mcp (the relay to the gateway), lifecycle.\n  -k "
		"GROUP "
		"  only these groups      --list   the groups\n");
	if (r)
		return r == 1 ? 0 : r;
	struct check ch[] = {
		{ .name = "qemu", .required = 1 },    { .name = "accel", .required = 0 },
		{ .name = "image", .required = 1 },   { .name = "capsem-vm", .required = 1 },
		{ .name = "capsemd", .required = 1 }, { .name = "disk", .required = 1 },
	};
	check_qemu(&ch[0]);
	check_accel(&ch[1]);
	check_image(&ch[2]);
	check_binary(&ch[3], "capsem-vm", "CAPSEM_VM_BIN", "vm");
	check_binary(&ch[4], "capsemd", "CAPSEM_DAEMON_BIN", "daemon");
	check_disk(&ch[5]);

	int failed = 0;
	for (size_t i = 0; i < ELEMENTSOF(ch); i++)
		if (ch[i].required && ch[i].status == 2)
			failed = 1;
	/* the host confinement layers for this host and user (docs/ARCHITECTURE.md): reported,
	 * never failing the check (each one degrades to a warning where it is missing) */
	struct confinfo_layer layers[CONFINFO_LAYERS];
	size_t n_layers = confinfo_probe(layers);
	if (json) {
		json_t *cl = json_array();
		for (size_t i = 0; i < n_layers; i++)
			json_array_append_new(cl, json_pack("{s:s, s:b, s:s}", "layer",
							    layers[i].name, "on", layers[i].on,
							    "detail", layers[i].detail));
		json_t *a = json_array();
		for (size_t i = 0; i < ELEMENTSOF(ch); i++)
			json_array_append_new(
				a, json_pack("{s:s, s:s, s:b, s:s}", "check", ch[i].name, "status",
					     ch[i].status == 0	 ? "ok"
					     : ch[i].status == 1 ? "warn"
								 : "fail",
					     "required", ch[i].required, "detail", ch[i].detail));
		json_t *o =
			json_pack("{s:b, s:o, s:o}", "ok", !failed, "checks", a, "confinement", cl);
		cli_print_json(o);
		json_decref(o);
	} else {
		printf("%-10s  %-6s  %s\n", "CHECK", "STATUS", "DETAIL");
		for (size_t i = 0; i < ELEMENTSOF(ch); i++)
			printf("%-10s  %-6s  %s\n", ch[i].name,
			       ch[i].status == 0   ? "ok"
			       : ch[i].status == 1 ? "warn"
						   : "FAIL",
			       ch[i].detail);
		printf("\n%-10s  %-6s  %s\n", "CONFINE", "STATE", "DETAIL");
		for (size_t i = 0; i < n_layers; i++)
			printf("%-10s  %-6s  %s\n", layers[i].name, layers[i].on ? "on" : "off",
			       layers[i].detail);
		printf("%s\n",
		       failed ? "Some required checks failed." : "All required checks passed.");
	}
	return failed;
}

/* ---- install / uninstall ---- */

static char *unit_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *h = getenv("HOME");
	char *p = NULL;
	if (xdg && *xdg)
		return asprintf(&p, "%s/systemd/user/capsemd.service", xdg) < 0 ? NULL : p;
	if (!h || !*h)
		return NULL;
	return asprintf(&p, "%s/.config/systemd/user/capsemd.service", h) < 0 ? NULL : p;
}

static int systemctl(const char *a, const char *b, const char *c)
{
	char *argv[] = { "systemctl", "--user", (char *)a, (char *)b, (char *)c, NULL };
	return run_capture(argv, NULL, 0, 0);
}

int cmd_install(int argc, char **argv)
{
	int r = json_flag_only(
		argc, argv, NULL,
		"Usage: capsem install\n\nRegister capsemd as a systemd user service "
		"(~/.config/systemd/user/capsemd.service)\nand start it. Without a "
		"systemd user session the unit is written but not enabled.\n");
	if (r)
		return r == 1 ? 0 : r;
	_cleanup_free_ char *bin = find_helper_binary("capsemd", "CAPSEM_DAEMON_BIN", "daemon");
	_cleanup_free_ char *abs = NULL, *home = cli_capsem_home(), *unit = unit_path();
	_cleanup_free_ char *text = NULL, *dir = NULL, *images = NULL;
	if (!bin)
		return log_error("cannot find the capsemd binary (set CAPSEM_DAEMON_BIN)"), 1;
	abs = realpath(bin, NULL);
	if (!abs || !home || !unit)
		return log_error("cannot resolve the paths for the unit"), 1;
	if (strpbrk(abs, " \t\n\"'\\%$") || strpbrk(home, " \t\n\"'\\%$"))
		return log_error("paths with spaces or quotes are not supported in the unit (%s, "
				 "%s)",
				 abs, home),
		       1;
	const char *img = getenv("CAPSEM_IMAGES_DIR");
	if (img && *img && !strpbrk(img, " \t\n\"'\\%$") &&
	    asprintf(&images, "Environment=CAPSEM_IMAGES_DIR=%s\n", img) < 0)
		return log_oom(), 1;
	if (asprintf(&text,
		     "# Written by 'capsem install'; remove it with 'capsem uninstall'.\n"
		     "[Unit]\n"
		     "Description=Capsem daemon: owns the sandbox microVMs\n"
		     "\n"
		     "[Service]\n"
		     "# forking: capsemd's first process exits once the API socket listens, so\n"
		     "# 'systemctl start' returns when the daemon is ready\n"
		     "Type=forking\n"
		     "PIDFile=%s/run/capsemd.pid\n"
		     "Environment=CAPSEM_HOME=%s\n"
		     "%s"
		     "ExecStart=%s\n"
		     "Restart=on-failure\n"
		     "# running VMs (capsem-vm) outlive the daemon and are re-adopted\n"
		     "KillMode=process\n"
		     "\n"
		     "[Install]\n"
		     "WantedBy=default.target\n",
		     home, home, strempty(images), abs) < 0)
		return log_oom(), 1;
	dir = strdup(unit);
	if (!dir)
		return log_oom(), 1;
	*strrchr(dir, '/') = 0;
	r = mkdir_p(dir, 0755);
	if (r >= 0)
		r = write_file_atomic(unit, text, strlen(text), 0644);
	if (r < 0)
		return log_error_errno(r, "cannot write %s", unit), 1;
	printf("wrote %s\n", unit);

	if (systemctl("daemon-reload", NULL, NULL) != 0) {
		log_warn(
			"systemctl --user is not available here (no user session bus?): the unit "
			"is installed but not enabled; run 'systemctl --user enable --now capsemd' "
			"in a login session. capsem starts capsemd on demand meanwhile.");
		return 0;
	}
	if (systemctl("enable", "--now", "capsemd") != 0) {
		log_warn(
			"'systemctl --user enable --now capsemd' failed: the unit is installed but "
			"not running; see 'systemctl --user status capsemd'");
		return 0;
	}
	printf("capsemd enabled and started (systemctl --user status capsemd)\n");
	return 0;
}

int cmd_uninstall(int argc, char **argv)
{
	int r = json_flag_only(
		argc, argv, NULL,
		"Usage: capsem uninstall\n\nStop and remove the capsemd systemd user "
		"service. VMs and images are kept.\n");
	if (r)
		return r == 1 ? 0 : r;
	_cleanup_free_ char *unit = unit_path();
	if (!unit)
		return log_error("cannot find the unit's path ($HOME is not set)"), 1;
	if (access(unit, F_OK) < 0) {
		printf("capsemd is not installed as a service (%s does not exist)\n", unit);
		return 0;
	}
	int have_systemd = systemctl("disable", "--now", "capsemd") == 0;
	if (unlink(unit) < 0)
		return log_error_errno(negative_errno(), "cannot remove %s", unit), 1;
	printf("removed %s\n", unit);
	if (have_systemd)
		systemctl("daemon-reload", NULL, NULL);
	else
		log_warn("systemctl --user is not available here: nothing was stopped or disabled");
	return 0;
}
