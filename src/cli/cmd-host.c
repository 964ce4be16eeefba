/* cmd-host.c - the host-side commands: version, doctor (host checks, no daemon needed), and
 * install / uninstall (capsemd as a systemd user service; uninstall --purge also deletes
 * CAPSEM_HOME). The checks and the service live in cli-host.c, shared with capsem setup.
 *
 * Trust boundary: the host's own state (files under /proc, /dev/kvm, the image directory, the
 * user's systemd configuration); the one daemon answer (GET /version) is optional and parsed
 * defensively. Helpers run with fork/exec, never through a shell. Main thread of the CLI.
 */
#include <fcntl.h>
#include <unistd.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "home.h"
#include "relload.h"
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
	/* the daemon's last periodic update check (capsem update --auto), when it made one */
	_cleanup_free_ char *home = NULL;
	json_t *upd = capsem_home(&home) == 0 ? updcheck_last(home) : NULL;
	if (json) {
		json_t *o =
			json_pack("{s:{s:s, s:i}, s:o?, s:o?}", "client", "version", CAPSEM_VERSION,
				  "protocol", 1, "daemon", daemon, "update", upd);
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
	if (json_is_true(json_object_get(upd, "newer")))
		printf("update: Capsem %s is available (checked %s): capsem update\n",
		       strempty(json_string_value(json_object_get(upd, "latest"))),
		       strempty(json_string_value(json_object_get(upd, "checked_at"))));
	json_decref(upd);
	json_decref(daemon);
	return 0;
}

/* ---- doctor ---- */

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
		"and\neach confined host process (capsemd, mkfs, capsem-gateway, virtiofsd) as on "
		"or off\nfor this host and user.\n\nWith "
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
	struct cli_check ch[] = {
		{ .name = "qemu", .required = 1 },    { .name = "accel", .required = 0 },
		{ .name = "image", .required = 1 },   { .name = "capsem-vm", .required = 1 },
		{ .name = "capsemd", .required = 1 }, { .name = "disk", .required = 1 },
	};
	cli_check_qemu(&ch[0]);
	cli_check_accel(&ch[1]);
	cli_check_image(&ch[2], "minimal");
	cli_check_binary(&ch[3], "capsem-vm", "CAPSEM_VM_BIN", "vm");
	cli_check_binary(&ch[4], "capsemd", "CAPSEM_DAEMON_BIN", "daemon");
	cli_check_disk(&ch[5], 2048);

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

int cmd_install(int argc, char **argv)
{
	int r = json_flag_only(
		argc, argv, NULL,
		"Usage: capsem install\n\nRun capsemd as a systemd user service and start it: the "
		"package's unit\n(/usr/lib/systemd/user/capsemd.service) when it is installed and "
		"CAPSEM_HOME is\nthe default, else a unit written to "
		"~/.config/systemd/user/capsemd.service.\nWithout a systemd user manager nothing "
		"is "
		"enabled: capsem starts capsemd on\ndemand instead (it always can).\n");
	if (r)
		return r == 1 ? 0 : r;
	return cli_service_install() < 0 ? 1 : 0;
}

int cmd_uninstall(int argc, char **argv)
{
	static const char usage[] =
		"Usage: capsem uninstall [--purge] [--yes]\n\n"
		"Remove this user's parts of Capsem: stop capsemd and remove its systemd user\n"
		"service. VMs, images and sessions in CAPSEM_HOME are kept unless --purge.\n"
		"The package itself (binaries, the minimal image, man pages) is removed by the\n"
		"system's package manager: sudo apt remove capsem (purge: also /etc/capsem).\n\n"
		"  --purge   also stop every VM and delete CAPSEM_HOME (~/.capsem): VMs and their\n"
		"            disks, images, session ledgers, the CA, user.toml, credentials\n"
		"  --yes     do not ask before --purge deletes (needed when stdin is not a "
		"terminal)\n"
		"  --json    {\"service_removed\", \"purged\", \"vms_stopped\", \"home\"}\n";
	static const struct option opts[] = { { "purge", no_argument, NULL, 'p' },
					      { "yes", no_argument, NULL, 'y' },
					      { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int purge = 0, yes = 0, json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hy", opts, NULL)) >= 0) {
		switch (c) {
		case 'p':
			purge = 1;
			break;
		case 'y':
			yes = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return log_error("uninstall: unexpected argument '%s'", argv[optind]),
		       CLI_EXIT_USAGE;
	_cleanup_free_ char *home = cli_capsem_home();
	if (!home)
		return 1;
	if (purge && !yes) {
		char line[16];
		if (!isatty(STDIN_FILENO))
			return log_error("uninstall --purge deletes %s: add --yes to confirm",
					 home),
			       CLI_EXIT_USAGE;
		fprintf(stderr, "Delete %s (VMs, disks, images, sessions, CA, keys)? [y/N] ", home);
		if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y'))
			return log_error("nothing deleted"), 1;
	}
	int svc = cli_service_remove();
	int stopped = 0, purged = 0;
	if (purge) {
		/* the daemon and its VMs first: they hold files in the home */
		stopped = cli_stop_everything(home);
		int r = access(home, F_OK) == 0 ? rm_rf(home) : 0;
		if (r < 0)
			return log_error_errno(r, "cannot delete %s", home), 1;
		purged = 1;
	}
	if (json) {
		json_t *o = json_pack("{s:b, s:b, s:i, s:s}", "service_removed", svc > 0, "purged",
				      purged, "vms_stopped", stopped, "home", home);
		cli_print_json(o);
		json_decref(o);
		return svc < 0;
	}
	if (purged)
		printf("deleted %s (%d VM%s stopped)\n", home, stopped, stopped == 1 ? "" : "s");
	else
		printf("kept your data in %s (VMs, images, sessions, user.toml, credentials);\n"
		       "'capsem uninstall --purge' deletes it\n",
		       home);
	printf("the package stays installed: remove it with 'sudo apt remove capsem' ('purge' "
	       "also removes /etc/capsem)\n");
	return svc < 0;
}
