/* cmd-exec.c - "capsem exec" and "capsem shell": parse their arguments and run the command, or a
 * login shell, through the CLI's exec core (cli-exec.c: capsemd's exec upgrade, docs/API.md,
 * relayed by relay.c). Main thread.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>

#include "clilib.h"
#include "commands.h"
#include "cliutil.h"
#include "vmlimits.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "relay.h"
#include "strv.h"

/* ---- capsem exec ---- */

static void exec_help(void)
{
	printf("Usage: capsem exec [OPTIONS] VM [--] COMMAND [ARGS...]\n"
	       "       capsem exec [OPTIONS] VM -c 'SHELL COMMAND'\n"
	       "\n"
	       "Run a command in a running VM (a name, an id or a unique id prefix) and pass its\n"
	       "output and exit status through.\n"
	       "\n"
	       "Options:\n"
	       "  -c, --shell          run the single argument with /bin/sh -c\n"
	       "  -e, --env KEY=VALUE  set an environment variable (repeatable; KEY alone copies\n"
	       "                       the host's value)\n"
	       "  -w, --workdir DIR    working directory in the guest (default /root)\n"
	       "  -i, --interactive    forward stdin even when it is a terminal\n"
	       "  -t, --tty            run the command on a terminal (raw mode locally)\n"
	       "      --timeout SECS   kill the command and all it started after SECS seconds "
	       "(exit "
	       "124)\n"
	       "  -h, --help           this text\n");
}

int cmd_exec(int argc, char **argv)
{
	static const struct option opts[] = { { "shell", no_argument, NULL, 'c' },
					      { "env", required_argument, NULL, 'e' },
					      { "workdir", required_argument, NULL, 'w' },
					      { "interactive", no_argument, NULL, 'i' },
					      { "tty", no_argument, NULL, 't' },
					      { "timeout", required_argument, NULL, 'T' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	_cleanup_strv_free_ char **env = NULL;
	struct cli_exec e = {};
	const char *ref = NULL;
	uint64_t v;
	int c;

	optind = 1;
	for (;;) {
		c = getopt_long(argc, argv, "+ce:w:ith", opts, NULL);
		if (c < 0) {
			/* the VM comes first; options may follow it, up to the command */
			if (!ref && optind < argc && !streq(argv[optind - 1], "--")) {
				ref = argv[optind++];
				continue;
			}
			break;
		}
		switch (c) {
		case 'c':
			e.shell = 1;
			break;
		case 'e':
			if (cli_parse_env(optarg, &env) < 0)
				return log_error("--env: expected KEY=VALUE or a KEY set on the "
						 "host, "
						 "got '%s'",
						 optarg),
				       CLI_EXIT_USAGE;
			break;
		case 'w':
			if (optarg[0] != '/')
				return log_error("--workdir: expected an absolute guest path"),
				       CLI_EXIT_USAGE;
			e.cwd = optarg;
			break;
		case 'i':
			e.interactive = 1;
			break;
		case 't':
			e.tty = 1;
			break;
		case 'T':
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
				return log_error("--timeout: expected seconds > 0, got '%s'",
						 optarg),
				       CLI_EXIT_USAGE;
			e.timeout_ms = v;
			break;
		case 'h':
			exec_help();
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (!ref)
		return log_error("exec: no VM given (see 'capsem exec --help')"), CLI_EXIT_USAGE;
	if (optind >= argc)
		return log_error("exec: no command given"), CLI_EXIT_USAGE;
	if (e.shell && argc - optind != 1)
		return log_error("exec -c: expects exactly one shell command string"),
		       CLI_EXIT_USAGE;
	e.argv = argv + optind;
	e.env = env;
	int sigfd = cli_exec_signals(e.tty);
	if (sigfd < 0)
		return log_error_errno(sigfd, "signalfd"), CLI_EXIT_FAILURE;
	int st = cli_exec_run(ref, &e, sigfd);
	safe_close(sigfd);
	return st;
}

/* ---- capsem shell ---- */

static void shell_help(void)
{
	printf("Usage: capsem shell [VM]\n"
	       "\n"
	       "Open an interactive login shell in VM (bash when the image has it, else sh).\n"
	       "Without VM, a new ephemeral VM is created for the shell and deleted when it "
	       "exits.\n"
	       "The terminal is in raw mode: Ctrl-C, Ctrl-D and Ctrl-Z go to the guest. capsem\n"
	       "exits with the shell's exit status.\n"
	       "\n"
	       "Options:\n"
	       "      --cpus N       virtual CPUs of a new VM\n"
	       "      --memory SIZE  RAM of a new VM (e.g. 1G)\n"
	       "  -h, --help         this text\n");
}

int cmd_shell(int argc, char **argv)
{
	static const struct option opts[] = { { "cpus", required_argument, NULL, 'C' },
					      { "memory", required_argument, NULL, 'M' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	static char *login[] = { "exec $(command -v bash || echo sh) -l", NULL };
	_cleanup_free_ char *id = NULL, *del = NULL;
	json_t *create = json_object();
	uint64_t mib;
	uint32_t u;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case 'C':
			if (vm_parse_cpus(optarg, &u) < 0)
				return log_error(VM_CPUS_USAGE ", got '%s'", optarg),
				       json_decref(create), CLI_EXIT_USAGE;
			json_object_set_new(create, "cpus", json_integer(u));
			break;
		case 'M':
			if (vm_parse_memory_mib(optarg, &mib) < 0)
				return log_error(VM_MEMORY_USAGE ", got '%s'", optarg),
				       json_decref(create), CLI_EXIT_USAGE;
			json_object_set_new(create, "memory", json_integer((json_int_t)mib));
			break;
		case 'h':
			shell_help();
			json_decref(create);
			return 0;
		default:
			json_decref(create);
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		json_decref(create);
		return log_error("shell: expects at most one VM"), CLI_EXIT_USAGE;
	}
	const char *ref = optind < argc ? argv[optind] : NULL;
	int sigfd = cli_exec_signals(1);
	if (sigfd < 0) {
		json_decref(create);
		return log_error_errno(sigfd, "signalfd"), CLI_EXIT_FAILURE;
	}
	if (!ref) {
		struct api_response res;
		int r = cli_api("POST", "/vms", create, &res);
		if (r < 0) {
			json_decref(create);
			safe_close(sigfd);
			return CLI_EXIT_FAILURE;
		}
		cli_warn_if_emulated(res.json);
		const char *s = json_string_value(json_object_get(res.json, "id"));
		id = s ? strdup(s) : NULL;
		api_response_done(&res);
		if (!id) {
			json_decref(create);
			safe_close(sigfd);
			return log_error("capsemd did not return the new VM's id"),
			       CLI_EXIT_FAILURE;
		}
		ref = id;
	}
	json_decref(create);

	struct cli_exec e = { .argv = login, .shell = 1, .tty = 1, .interactive = 1 };
	int st = cli_exec_run(ref, &e, sigfd);

	if (id) {
		struct api_response res;
		del = api_vm_path(id, "");
		if (del && cli_api("DELETE", del, NULL, &res) == 0)
			api_response_done(&res);
	}
	safe_close(sigfd);
	return st;
}
