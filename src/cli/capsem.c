/* capsem - the command-line interface: the command table, dispatch and help.
 *
 * Each subcommand lives in its own cmd-*.c file and uses the CLI library (clilib.h) beneath
 * them all; subcommands never call each other (doctor is split here, by its arguments). Runs as
 * the invoking user on the host; its input (arguments, environment) is the user's own, but is
 * validated strictly so mistakes get one clear line instead of a surprise in the VM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "clilib.h"
#include "commands.h"
#include "home.h"
#include "log.h"
#include "macro.h"

/* "capsem doctor [--json]": the host; "capsem doctor VM ...": capsem-doctor inside VM */
static int doctor(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (argv[i][0] != '-')
			return cmd_doctor_vm(argc, argv);
	return cmd_doctor(argc, argv);
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
	{ "start", NULL, cmd_start, "start VM", "boot a stopped VM (or resume a suspended one)" },
	{ "suspend", NULL, cmd_suspend, "suspend VM", "save a running VM to disk, free its RAM" },
	{ "resume", NULL, cmd_resume, "resume VM", "bring a suspended VM back" },
	{ "restart", NULL, cmd_restart, "restart VM", "stop and boot a VM" },
	{ "delete", "rm", cmd_delete, "delete VM...", "delete VMs and their disks" },
	{ "purge", NULL, cmd_purge, "purge [-f]", "delete ephemeral and stopped VMs" },
	{ "persist", NULL, cmd_persist, "persist VM NAME", "name a VM and keep its disk" },
	{ "logs", NULL, cmd_logs, "logs VM [--source S] [--tail N]", "print a VM's logs" },
	{ "events", NULL, cmd_events, "events VM [--kind K] [--json] [-f]",
	  "what a VM did: execs, network, DNS, AI calls, policy" },
	{ "cp", NULL, cmd_cp, "cp SRC DST", "copy a file between host and VM (VM:/path)" },
	{ "snapshot", NULL, cmd_snapshot, "snapshot CMD VM [ARGS]",
	  "workspace snapshots: create list diff revert history rm compact" },
	{ "doctor", NULL, doctor, "doctor [VM [-k GROUP]] [--json]",
	  "check the host, or a VM inside" },
	{ "image", NULL, cmd_image, "image list|build|rm", "manage guest images" },
	{ "fork", NULL, cmd_fork, "fork VM IMAGE [-d TEXT]", "make an image from a VM's changes" },
	{ "setup", NULL, cmd_setup, "setup [-n] [--force]",
	  "first run: check the host, keys, image, service, test VM" },
	{ "update", NULL, cmd_update, "update [--yes] [--rollback] [--json]",
	  "check the release channel; install verified updates" },
	{ "install", NULL, cmd_install, "install", "run capsemd as a systemd user service" },
	{ "uninstall", NULL, cmd_uninstall, "uninstall [--purge]",
	  "remove the service (--purge: and ~/.capsem)" },
	{ "version", NULL, cmd_version, "version [--json]", "versions of capsem and capsemd" },
	{ "policy", NULL, cmd_policy, "policy check URL | show | defaults",
	  "explain the egress policy (no daemon needed)" },
	{ "ui", NULL, cmd_ui, "ui [--open]", "the web dashboard's address (starts its gateway)" },
};

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
		printf("  %-34s  %s\n", commands[i].synopsis, commands[i].summary);
	printf("  %-34s  %s\n", "help [COMMAND]", "show help");
	printf("\n"
	       "VM is a name, an id or a unique id prefix. Listing and info commands take --json.\n"
	       "Run 'capsem COMMAND --help' for a command's options.\n"
	       "First time here? 'capsem setup' checks the host and installs the images.\n"
	       "Environment: CAPSEM_HOME (default ~/.capsem), CAPSEM_DEBUG=1 for debug logs,\n"
	       "CAPSEM_NO_DAEMON=1 to run 'capsem run' without the daemon. Images: the user's\n"
	       "($CAPSEM_IMAGES_DIR, default $CAPSEM_HOME/images), then the package's\n"
	       "(" CAPSEM_DATADIR "/images, or $CAPSEM_SYSTEM_IMAGES_DIR).\n");
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
