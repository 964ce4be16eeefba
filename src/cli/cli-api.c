/* cli-api.c - the CLI's side of capsemd's API: open a connection (starting the daemon on
 * demand), one JSON request per connection, the daemon's {"error"} shown as one line. A daemon
 * found dead (its socket refuses, or the connection broke) that seccomp killed is named so,
 * from the kernel's audit record where it can be read.
 *
 * Trust boundary: the daemon's answers, parsed by src/shared/apiclient.c with every length
 * capped. Main thread of the CLI.
 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "clilib.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "scfilter.h"

/* The daemon of run/capsemd.pid is gone without cleaning up (a clean end removes the file):
 * when seccomp killed it, say so (the audit record, waited for at most wait_ms). */
static void report_dead_daemon(unsigned wait_ms)
{
	_cleanup_free_ char *home = cli_capsem_home(), *pidfile = NULL, *text = NULL;
	uint32_t pid;
	if (!home || asprintf(&pidfile, "%s/run/capsemd.pid", home) < 0 ||
	    read_file_small(pidfile, 64, &text, NULL) < 0)
		return;
	text[strcspn(text, "\n")] = 0;
	if (parse_u32(text, &pid) < 0 || pid == 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
		return;
	const char *name = scf_syscall_name(scf_sigsys_find((int)pid, "capsemd", wait_ms));
	if (name)
		log_error("capsemd (pid %u) was killed by seccomp (SIGSYS): syscall %s; see "
			  "%s/run/capsemd.log",
			  pid, name, home);
}

int cli_api_open(struct api_conn *c)
{
	int r = api_connect(c);
	if (r == -ECONNREFUSED || r == -ENOENT) {
		/* no daemon: was the last one killed? (before a new one takes its pid file) */
		report_dead_daemon(0);
		r = api_connect_or_start(c);
	}
	if (r == -ENOEXEC)
		return log_error("cannot find the capsemd binary (set CAPSEM_DAEMON_BIN)"), r;
	if (r == -ETIMEDOUT) {
		_cleanup_free_ char *home = cli_capsem_home();
		return log_error("capsemd did not start within %d s; see %s/run/capsemd.log",
				 API_START_TIMEOUT_MS / 1000, strempty(home)),
		       r;
	}
	if (r == -ECHILD) {
		/* it said why on our stderr (killed by seccomp, or its first error) */
		_cleanup_free_ char *home = cli_capsem_home();
		return log_error("capsemd could not start; see %s/run/capsemd.log", strempty(home)),
		       r;
	}
	if (r < 0)
		return log_error_errno(r, "cannot reach capsemd");
	return 0;
}

int cli_api_req(const struct api_req *rq, struct api_response *ret)
{
	struct api_conn c;
	struct api_response res;
	int r = cli_api_open(&c);
	if (r < 0)
		return r;
	r = api_request(&c, rq, &res);
	api_conn_close(&c);
	if (r == -EFBIG)
		return log_error("capsemd's answer is over the size limit"), r;
	if (r < 0) {
		log_error_errno(r, "talking to capsemd");
		report_dead_daemon(500); /* the connection broke: did capsemd die? */
		return r;
	}
	if (res.head.status / 100 != 2) {
		log_error("%s", api_response_error(&res));
		api_response_done(&res);
		return -EREMOTE;
	}
	*ret = res;
	return 0;
}

int cli_api(const char *method, const char *path, json_t *body, struct api_response *ret)
{
	_cleanup_free_ char *text = NULL;
	struct api_req rq = { .method = method, .path = path, .body_fd = -1, .out_fd = -1 };
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return log_oom();
		rq.content_type = "application/json";
		rq.body = text;
		rq.body_len = strlen(text);
	}
	return cli_api_req(&rq, ret);
}

void cli_print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
}
