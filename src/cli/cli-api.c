/* cli-api.c - the CLI's side of capsemd's API: open a connection (starting the daemon on
 * demand), one JSON request per connection, the daemon's {"error"} shown as one line.
 *
 * Trust boundary: the daemon's answers, parsed by src/shared/apiclient.c with every length
 * capped. Main thread of the CLI.
 */
#include <stdio.h>

#include "clilib.h"
#include "log.h"
#include "macro.h"

int cli_api_open(struct api_conn *c)
{
	int r = api_connect_or_start(c);
	if (r == -ENOEXEC)
		return log_error("cannot find the capsemd binary (set CAPSEM_DAEMON_BIN)"), r;
	if (r == -ETIMEDOUT) {
		_cleanup_free_ char *home = cli_capsem_home();
		return log_error("capsemd did not start within %d s; see %s/run/capsemd.log",
				 API_START_TIMEOUT_MS / 1000, strempty(home)),
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
	if (r < 0)
		return log_error_errno(r, "talking to capsemd");
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
