/* clilib.h - the CLI's library: what every subcommand may use (the environment, talking to
 * capsemd, the exec core). Subcommands (cmd-*.c) parse their arguments and call these; they
 * never call each other. The command list is commands.h. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "apiclient.h"

/* Exit statuses of capsem itself (the command's own status is passed through otherwise). */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_FAILURE 125 /* capsem could not run the command (as docker run) */
#define CLI_EXIT_TIMEOUT 124 /* as timeout(1) */

/* ---- the environment (cli-env.c) ---- */

/* Capsem's home (capsem_home(): $CAPSEM_HOME, $HOME/.capsem, the passwd entry's). malloc'ed;
 * NULL after logging why. */
char *cli_capsem_home(void);
/* The directory of image NAME: $CAPSEM_IMAGES_DIR/NAME, else <home>/images/NAME. malloc'ed. */
char *cli_image_dir(const char *name);
/* The image of a VM that names none: $CAPSEM_IMAGE, else "debian" when it is installed, else
 * "minimal" (capsemd picks the same when a client sends no image). Static or environment
 * string. */
const char *cli_default_image(void);
/* One line on stderr when the VM object (the daemon's JSON) says it runs under TCG emulation:
 * the same warning capsem-vm prints on the direct path. */
void cli_warn_if_emulated(const json_t *vm);

/* ---- talking to capsemd (cli-api.c) ---- */

/* Open a connection to capsemd, starting it on demand. 0, or -errno after logging why. */
int cli_api_open(struct api_conn *c);
/* One JSON request on a fresh connection. 0 when the status is 2xx (ret filled, caller frees
 * it), -EREMOTE after printing the daemon's error as "capsem: <message>", or -errno (logged). */
int cli_api(const char *method, const char *path, json_t *body, struct api_response *ret);
/* The same for any request (raw bodies, bodies streamed to rq->out_fd). */
int cli_api_req(const struct api_req *rq, struct api_response *ret);
/* Print a JSON value to stdout, indented. */
void cli_print_json(json_t *v);

/* ---- an exec on a running VM through capsemd (cli-exec.c) ---- */
struct cli_exec {
	char **argv;
	int shell; /* argv[0] is a /bin/sh -c string */
	char **env;
	const char *cwd;
	int tty;
	int interactive; /* forward stdin even when it is a terminal */
	uint64_t timeout_ms;
};
/* Run it and relay the session; sigfd is a signalfd for SIGINT/SIGTERM/SIGHUP(/SIGWINCH).
 * Returns the command's exit status (124 with a message on timeout), 130 after a second
 * interrupt, or CLI_EXIT_FAILURE (logged). */
int cli_exec_run(const char *ref, const struct cli_exec *e, int sigfd);
/* A signalfd for the signals an exec session handles (with_winch adds SIGWINCH); the signals
 * are blocked. Returns the fd or -errno. */
int cli_exec_signals(int with_winch);

/* --workspace DIR: the real path of an existing directory without ',' or ':' (they separate
 * fields on capsem-vm's and QEMU's command lines). 0 with *ret (malloc'ed), or -errno after
 * saying why. */
int cli_workspace_path(const char *arg, char **ret);
