/* cli-exec.c - the CLI's exec core: start an exec through capsemd (api_exec_start) and relay
 * its session (relay.c) until the command's exit; used by capsem exec, shell, run and doctor.
 *
 * Trust boundary: the exec frames come from the guest through the daemon and are parsed with
 * proto.h's decoders under their caps (relay.c). Main thread.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "clilib.h"
#include "cliutil.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "relay.h"

int cli_exec_signals(int with_winch)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGQUIT };
	return signalfd_for(sigs, with_winch ? 5 : 3);
}

/* The session's connection was lost: when that was a suspend of the VM, say so (the suspend
 * ends the VM's sessions first, then saves it: wait a little for its state). */
static void say_if_suspended(const char *ref)
{
	_cleanup_free_ char *path = api_vm_path(ref, "");
	for (int i = 0; path && i < 50; i++) {
		struct api_response res;
		if (cli_api("GET", path, NULL, &res) < 0)
			return;
		const char *st = json_string_value(json_object_get(res.json, "state"));
		int suspended = st && streq(st, "suspended");
		int busy = json_is_true(json_object_get(res.json, "suspending"));
		api_response_done(&res);
		if (suspended) {
			log_error("the VM was suspended, which ends its sessions; its other "
				  "processes go on after 'capsem resume %s'",
				  ref);
			return;
		}
		if (!busy)
			return;
		(void)poll(NULL, 0, 200);
	}
}

int cli_exec_run(const char *ref, const struct cli_exec *e, int sigfd)
{
	struct api_conn c = { .fd = -1 };
	struct api_response res = {};
	struct relay rl;
	int r, status = CLI_EXIT_FAILURE;
	struct api_exec ex = { .argv = e->argv,
			       .shell = e->shell,
			       .env = e->env,
			       .cwd = e->cwd,
			       .tty = e->tty,
			       .timeout_ms = e->timeout_ms,
			       .via = "cli" };
	if (e->tty && tty_get_size(STDIN_FILENO, &ex.rows, &ex.cols) < 0)
		(void)tty_get_size(STDOUT_FILENO, &ex.rows, &ex.cols);
	if (cli_api_open(&c) < 0)
		return CLI_EXIT_FAILURE;
	r = api_exec_start(&c, ref, &ex, &res);
	if (r < 0 && r != -EREMOTE) {
		log_error_errno(r, "exec request to capsemd");
		api_conn_close(&c);
		return CLI_EXIT_FAILURE;
	}
	if (res.head.status != 101) {
		log_error("%s", api_response_error(&res));
		api_response_done(&res);
		api_conn_close(&c);
		return CLI_EXIT_FAILURE;
	}
	api_response_done(&res);

	relay_init(&rl, c.fd, sigfd);
	rl.tty = e->tty;
	/* bytes that came right after the 101 are the first frames */
	if (buf_len(&c.rbuf) && buf_append(&rl.in, buf_head(&c.rbuf), buf_len(&c.rbuf)) < 0) {
		log_error("the daemon sent an oversized frame");
		goto out;
	}
	int raw = 0;
	if (e->tty && isatty(STDIN_FILENO)) {
		r = tty_raw(STDIN_FILENO);
		if (r < 0) {
			log_error_errno(r, "cannot put the terminal in raw mode");
			goto out;
		}
		raw = 1;
	}
	if (e->interactive || e->tty || !isatty(STDIN_FILENO))
		rl.in_fd = STDIN_FILENO;
	else
		relay_send_frame(&rl, PROTO_STDIN, NULL, 0); /* a terminal needs -i */

	r = relay_run(&rl, e->timeout_ms);
	if (raw)
		tty_restore();
	if (r == -EINTR || r == 0)
		status = relay_exit_status(&rl, r, e->timeout_ms);
	else if (r == -EPIPE)
		say_if_suspended(ref);
out:
	relay_done(&rl);
	api_conn_close(&c);
	return status;
}
