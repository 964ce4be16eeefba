/* capsem - the command-line interface.
 *
 * Subcommand dispatch, help and version. Each subcommand lives in its own cmd-*.c file. Runs as
 * the invoking user on the host; its input (arguments, environment) is the user's own, but is
 * validated strictly so mistakes get one clear line instead of a surprise in the VM.
 */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "cli.h"
#include "log.h"
#include "macro.h"

char *cli_capsem_home(void)
{
	const char *h = getenv("CAPSEM_HOME");
	char *p = NULL;
	if (h && *h)
		return strdup(h);
	h = getenv("HOME");
	if (!h || !*h)
		h = "/root";
	return asprintf(&p, "%s/.capsem", h) < 0 ? NULL : p;
}

char *cli_image_dir(const char *name)
{
	const char *d = getenv("CAPSEM_IMAGES_DIR");
	char *p = NULL;
	if (d && *d)
		return asprintf(&p, "%s/%s", d, name) < 0 ? NULL : p;
	_cleanup_free_ char *home = cli_capsem_home();
	if (!home)
		return NULL;
	return asprintf(&p, "%s/images/%s", home, name) < 0 ? NULL : p;
}

static void help(void)
{
	printf("Usage: capsem COMMAND [OPTIONS]\n"
	       "\n"
	       "Run AI agents and any command inside throw-away Linux microVMs, with the host in\n"
	       "control of everything that leaves them.\n"
	       "\n"
	       "Commands:\n"
	       "  run [OPTIONS] -- CMD [ARGS...]   run a command in a new ephemeral VM\n"
	       "  version                          print the version\n"
	       "  help [COMMAND]                   show help\n"
	       "\n"
	       "Run 'capsem COMMAND --help' for a command's options.\n"
	       "Environment: CAPSEM_HOME (default ~/.capsem), CAPSEM_DEBUG=1 for debug logs.\n");
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
		if (argc > 2 && streq(argv[2], "run")) {
			char *a[] = { "run", "--help", NULL };
			return cmd_run(2, a);
		}
		help();
		return 0;
	}
	if (streq(cmd, "version") || streq(cmd, "--version")) {
		printf("capsem %s (protocol 1)\n", CAPSEM_VERSION);
		return 0;
	}
	if (streq(cmd, "run"))
		return cmd_run(argc - 1, argv + 1);
	log_error("unknown command '%s' (see 'capsem --help')", cmd);
	return CLI_EXIT_USAGE;
}
