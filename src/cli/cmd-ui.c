/* cmd-ui.c - "capsem ui": the web dashboard's address. Asks capsemd (started on demand) to run
 * the web gateway (POST /gateway: capsemd starts capsem-gateway and supervises it), reads the
 * gateway's token from $CAPSEM_HOME/run/gateway.token (0600: only our user can) and prints
 * http://127.0.0.1:PORT/#token=TOKEN (the token in the fragment never reaches a server log or a
 * Referer); --open hands it to xdg-open.
 */
#include <getopt.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>

#include "clilib.h"
#include "commands.h"
#include "fdutil.h"
#include "home.h"
#include "macro.h"

extern char **environ;

int cmd_ui(int argc, char **argv)
{
	static const struct option opts[] = { { "open", no_argument, NULL, 'o' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c, open_it = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "oh", opts, NULL)) >= 0) {
		switch (c) {
		case 'o':
			open_it = 1;
			break;
		case 'h':
			printf("Usage: capsem ui [--open]\n"
			       "\n"
			       "Start the web dashboard (capsemd runs capsem-gateway on "
			       "127.0.0.1,\n"
			       "port $CAPSEM_GATEWAY_PORT, default 19222, or any free one) and "
			       "print its\n"
			       "address with the access token; --open opens it in the browser.\n");
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "capsem ui: unexpected argument '%s'\n", argv[optind]);
		return CLI_EXIT_USAGE;
	}
	struct api_response res;
	if (cli_api("POST", "/gateway", NULL, &res) < 0)
		return 1;
	json_int_t port = json_integer_value(json_object_get(res.json, "port"));
	api_response_done(&res);
	_cleanup_free_ char *home = NULL, *tpath = NULL, *token = NULL, *url = NULL;
	size_t n = 0;
	if (capsem_home(&home) < 0 || asprintf(&tpath, "%s/run/gateway.token", home) < 0)
		return fprintf(stderr, "capsem ui: out of memory\n"), 1;
	int r = read_file_small(tpath, 256, &token, &n);
	if (r < 0 || port <= 0) {
		fprintf(stderr, "capsem ui: cannot read %s: %s\n", tpath, strerror(-r));
		return 1;
	}
	token[strcspn(token, "\r\n")] = 0;
	if (asprintf(&url, "http://127.0.0.1:%lld/#token=%s", (long long)port, token) < 0)
		return 1;
	explicit_bzero(token, n);
	printf("%s\n", url);
	if (open_it) {
		pid_t pid;
		char *av[] = { "xdg-open", url, NULL };
		if (posix_spawnp(&pid, "xdg-open", NULL, NULL, av, environ) != 0) {
			fprintf(stderr, "capsem ui: cannot run xdg-open: open the address above\n");
			return 1;
		}
		int st;
		waitpid(pid, &st, 0);
	}
	return 0;
}
