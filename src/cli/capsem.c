/* capsem - the command-line interface.
 *
 * Subcommand dispatch, help and version. Each subcommand lives in its own cmd-*.c file. Runs as
 * the invoking user on the host; its input (arguments, environment) is the user's own, but is
 * validated strictly so mistakes get one clear line instead of a surprise in the VM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"
#include "home.h"
#include "log.h"
#include "macro.h"

char *cli_capsem_home(void)
{
	char *p = NULL;
	int r = capsem_home(&p);
	if (r == -ENOENT)
		log_error("cannot tell where Capsem's state lives: set CAPSEM_HOME (or HOME)");
	else if (r < 0)
		log_oom();
	return r < 0 ? NULL : p;
}

char *cli_image_dir(const char *name)
{
	_cleanup_free_ char *d = NULL;
	char *p = NULL;
	if (capsem_images_dir(&d) < 0)
		return NULL;
	return asprintf(&p, "%s/%s", d, name) < 0 ? NULL : p;
}

const char *cli_default_image(void)
{
	const char *e = getenv("CAPSEM_IMAGE");
	_cleanup_free_ char *dir = NULL, *m = NULL;
	if (e && *e)
		return e;
	dir = cli_image_dir("debian");
	if (dir && asprintf(&m, "%s/manifest.json", dir) >= 0 && access(m, F_OK) == 0)
		return "debian";
	return "minimal";
}

struct command {
	const char *name;
	const char *alias;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
	const char *summary;
};

static const struct command commands[] = {
	{ "run", NULL, cmd_run, "run [OPTIONS] -- CMD [ARGS...]",
	  "run a command in a new ephemeral VM" },
	{ "create", NULL, cmd_create, "create [-n NAME] [OPTIONS]", "create and boot a VM" },
	{ "list", "ls", cmd_list, "list [-a] [--json]", "list VMs" },
	{ "info", NULL, cmd_info, "info VM [--json]", "show one VM" },
	{ "exec", NULL, cmd_exec, "exec VM [OPTIONS] -- CMD...", "run a command in a VM" },
	{ "shell", NULL, cmd_shell, "shell [VM]", "interactive login shell (new VM without VM)" },
	{ "stop", NULL, cmd_stop, "stop VM", "stop a VM" },
	{ "start", NULL, cmd_start, "start VM", "boot a stopped VM" },
	{ "restart", NULL, cmd_restart, "restart VM", "stop and boot a VM" },
	{ "delete", "rm", cmd_delete, "delete VM...", "delete VMs and their disks" },
	{ "purge", NULL, cmd_purge, "purge [-f]", "delete ephemeral and stopped VMs" },
	{ "persist", NULL, cmd_persist, "persist VM NAME", "name a VM and keep its disk" },
	{ "logs", NULL, cmd_logs, "logs VM [--source S] [--tail N]", "print a VM's logs" },
	{ "events", NULL, cmd_events, "events VM [--kind K] [--json] [-f]",
	  "what a VM did: execs, network, DNS, AI calls, policy" },
	{ "cp", NULL, cmd_cp, "cp SRC DST", "copy a file between host and VM (VM:/path)" },
	{ "doctor", NULL, cmd_doctor, "doctor [VM] [--json]", "check the host, or a VM inside" },
	{ "image", NULL, cmd_image, "image list|build|rm", "manage guest images" },
	{ "install", NULL, cmd_install, "install", "run capsemd as a systemd user service" },
	{ "uninstall", NULL, cmd_uninstall, "uninstall", "remove that service" },
	{ "version", NULL, cmd_version, "version [--json]", "versions of capsem and capsemd" },
	{ "policy", NULL, cmd_policy, "policy check URL | show | defaults",
	  "explain the egress policy (no daemon needed)" },
};

void cli_warn_if_emulated(const json_t *vm)
{
	const char *accel = json_string_value(json_object_get(vm, "accel"));
	if (accel && streq(accel, "tcg"))
		log_warn("no usable KVM on this host: the VM runs under TCG emulation, 10-50x "
			 "slower "
			 "(see 'capsem doctor')");
}

static void help(void)
{
	printf("Usage: capsem COMMAND [OPTIONS]\n"
	       "\n"
	       "Run AI agents and any command inside Linux microVMs, with the host in control of\n"
	       "everything that leaves them. VMs are owned by the capsemd daemon, which capsem\n"
	       "starts on demand.\n"
	       "\n"
	       "Commands:\n");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		printf("  %-34s %s\n", commands[i].synopsis, commands[i].summary);
	printf("  %-34s %s\n", "help [COMMAND]", "show help");
	printf("\n"
	       "VM is a name, an id or a unique id prefix. Listing and info commands take --json.\n"
	       "Run 'capsem COMMAND --help' for a command's options.\n"
	       "Environment: CAPSEM_HOME (default ~/.capsem), CAPSEM_DEBUG=1 for debug logs,\n"
	       "CAPSEM_NO_DAEMON=1 to run 'capsem run' without the daemon.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (streq(name, commands[i].name) ||
		    (commands[i].alias && streq(name, commands[i].alias)))
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	log_setup("capsem", LOG_LVL_INFO);
	log_setup_from_env();
	if (argc < 2) {
		help();
		return CLI_EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (streq(cmd, "-h") || streq(cmd, "--help")) {
		help();
		return 0;
	}
	if (streq(cmd, "help")) {
		const struct command *c = argc > 2 ? find_command(argv[2]) : NULL;
		if (c) {
			char *a[] = { (char *)c->name, "--help", NULL };
			return c->fn(2, a);
		}
		help();
		return 0;
	}
	if (streq(cmd, "--version")) {
		char *a[] = { "version", NULL };
		return cmd_version(1, a);
	}
	const struct command *c = find_command(cmd);
	if (c)
		return c->fn(argc - 1, argv + 1);
	log_error("unknown command '%s' (see 'capsem --help')", cmd);
	return CLI_EXIT_USAGE;
}
