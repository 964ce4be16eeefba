/* capsem-mcp.c - Capsem as an MCP server over stdio, for AI agents running on the host
 * (docs/MCP.md): newline-delimited JSON-RPC 2.0 on stdin/stdout, protocol 2025-06-18, the tools
 * of mcptools.c, each a few requests to capsemd (started on demand).
 *
 * Trust boundary: stdin is the MCP client's (an AI agent: its messages may be malformed, huge,
 * or hostile). Every line is capped (4 MiB; a longer one is skipped to its newline and answered
 * with -32600), parsed strictly by jsonrpc.c, and tool arguments are checked against the tool's
 * inputSchema before anything runs. stdout carries only JSON-RPC messages; logs go to stderr.
 *
 * Threads: the main thread owns stdin, stdout and every call record; it runs one poll(2) loop on
 * stdin, a signalfd (SIGINT/SIGTERM/SIGHUP) and a pipe on which workers report completion. Each
 * tools/call runs on a worker thread of its own (the API client blocks: creating a VM takes
 * seconds) with an eventfd that the main thread writes to cancel it. So the main thread always
 * reads stdin: ping is answered during a long exec, and notifications/cancelled stops the call at
 * once; the worker then cleans up (kills the command, deletes a VM it created) and its result is
 * dropped, never sent. At EOF on stdin or on a signal every call is cancelled and the process
 * exits once their clean-up is done (at most SHUTDOWN_WAIT_MS).
 */
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>

#include "config.h"
#include "fdutil.h"
#include "jsonrpc.h"
#include "log.h"
#include "macro.h"
#include "mcptools.h"
#include "mcputil.h"

#define MCP_PROTOCOL_VERSION "2025-06-18"
#define MAX_CALLS 16	       /* tools/call in flight at once */
#define SHUTDOWN_WAIT_MS 30000 /* for cancelled calls to clean up before we exit */
#define READ_CHUNK (64u * 1024u)
/* our replies may be larger than what we accept: an exec result carries up to 1 MiB of stdout
 * and of stderr, twice (text and structuredContent), escaped */
#define MAX_REPLY (64u << 20)

static const char instructions[] =
	"Capsem runs commands in throw-away Linux microVMs (sandboxes) on this host. For a "
	"one-off command use capsem_run. To keep state, capsem_create a VM (with a name to keep "
	"its /root across stop/start), then capsem_exec, capsem_read_file and capsem_write_file "
	"in it, and capsem_delete it when done. Network access from a VM goes through Capsem's "
	"egress policy; capsem_events shows what the VM did.";

struct call {
	struct call *next;
	json_t *id;   /* the request's id (a copy) */
	json_t *args; /* owned by the worker while it runs */
	const struct mcp_tool *tool;
	struct mcp_ctx ctx; /* ctx.cancel_fd: eventfd written by the main thread */
	pthread_t thread;
	int done_fd;	/* write end of the completion pipe */
	int cancelled;	/* main thread only */
	json_t *result; /* written by the worker before it reports */
};

struct server {
	struct jsonrpc_reader rd;
	struct call *calls;
	size_t n_calls;
	int done_pipe[2];
	int sigfd;
	int stdin_eof;
	int stopping; /* EOF or a signal: cancel everything and exit */
	int out_broken;
	int64_t stop_deadline;
};

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- output ---- */

/* Write one message (stolen; NULL: nothing). A failed write means the client is gone. */
static void send_msg(struct server *s, json_t *msg)
{
	_cleanup_free_ char *text = NULL;
	size_t n;
	if (!msg)
		return;
	int r = jsonrpc_dump_max(msg, MAX_REPLY, &text, &n);
	json_decref(msg);
	if (r < 0) {
		log_warn_errno(r, "cannot serialise a reply");
		return;
	}
	if (s->out_broken)
		return;
	r = fd_write_all(STDOUT_FILENO, text, n);
	if (r < 0) {
		log_debug_errno(r, "stdout");
		s->out_broken = 1;
	}
}

static void send_error(struct server *s, json_t *id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void send_error(struct server *s, json_t *id, int code, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	send_msg(s, jsonrpc_error(id, code, msg, NULL));
}

static void send_result(struct server *s, json_t *id, json_t *result)
{
	if (!result) {
		send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	json_t *m = jsonrpc_result(id, result);
	if (!m)
		send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory");
	else
		send_msg(s, m);
}

/* ---- calls ---- */

static void *worker(void *p)
{
	struct call *c = p;
	c->result = c->tool->run(&c->ctx, c->args);
	json_decref(c->args);
	c->args = NULL;
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): the pointer itself goes through the pipe */
	while (write(c->done_fd, &c, sizeof(c)) < 0 && errno == EINTR)
		;
	return NULL;
}

static void call_free(struct call *c)
{
	if (!c)
		return;
	json_decref(c->id);
	json_decref(c->args);
	json_decref(c->result);
	safe_close(c->ctx.cancel_fd);
	free(c);
}

static void call_cancel(struct call *c)
{
	uint64_t one = 1;
	if (c->cancelled)
		return;
	c->cancelled = 1;
	if (write(c->ctx.cancel_fd, &one, sizeof(one)) < 0)
		log_debug_errno(negative_errno(), "eventfd");
}

static void start_call(struct server *s, json_t *id, const struct mcp_tool *tool, json_t *args)
{
	if (s->n_calls >= MAX_CALLS) {
		send_result(s, id,
			    mcp_result_error("too many tool calls in flight (%d): wait for one to "
					     "finish",
					     MAX_CALLS));
		return;
	}
	struct call *c = calloc(1, sizeof(*c));
	if (!c) {
		send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	c->ctx.cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->id = json_deep_copy(id);
	c->args = args ? json_deep_copy(args) : json_object();
	c->tool = tool;
	c->done_fd = s->done_pipe[1];
	if (c->ctx.cancel_fd < 0 || !c->id || !c->args) {
		call_free(c);
		send_error(s, id, JSONRPC_INTERNAL_ERROR, "out of resources");
		return;
	}
	int r = pthread_create(&c->thread, NULL, worker, c);
	if (r != 0) {
		call_free(c);
		send_error(s, id, JSONRPC_INTERNAL_ERROR, "cannot start a thread: %s", strerror(r));
		return;
	}
	c->next = s->calls;
	s->calls = c;
	s->n_calls++;
	log_debug("tools/call %s started", tool->name);
}

/* Workers that finished: join them, send the results of calls nobody cancelled. */
static void reap_calls(struct server *s)
{
	struct call *c;
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): the pointer itself comes through the pipe */
	while (read(s->done_pipe[0], &c, sizeof(c)) == (ssize_t)sizeof(c)) {
		pthread_join(c->thread, NULL);
		for (struct call **pp = &s->calls; *pp; pp = &(*pp)->next) {
			if (*pp == c) {
				*pp = c->next;
				s->n_calls--;
				break;
			}
		}
		log_debug("tools/call %s %s", c->tool->name, c->cancelled ? "cancelled" : "done");
		if (!c->cancelled)
			send_result(s, c->id, TAKE_PTR(c->result));
		call_free(c);
	}
}

static void stop_all(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	s->stop_deadline = now_ms() + SHUTDOWN_WAIT_MS;
	for (struct call *c = s->calls; c; c = c->next)
		call_cancel(c);
}

/* ---- requests ---- */

static void on_initialize(struct server *s, struct jsonrpc_msg *m)
{
	json_t *pv = json_object_get(m->params, "protocolVersion");
	if (!json_is_object(m->params) || !json_is_string(pv)) {
		send_error(s, m->id, JSONRPC_INVALID_PARAMS,
			   "initialize: params.protocolVersion must be a string");
		return;
	}
	/* we speak one version: a client asking for another gets ours and decides */
	log_debug("initialize: client protocol %s", json_string_value(pv));
	send_result(s, m->id,
		    json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion",
			      MCP_PROTOCOL_VERSION, "capabilities", "tools", "listChanged", 0,
			      "serverInfo", "name", "capsem", "title", "Capsem", "version",
			      CAPSEM_VERSION, "instructions", instructions));
}

static void on_tools_call(struct server *s, struct jsonrpc_msg *m)
{
	json_t *name = json_object_get(m->params, "name");
	json_t *args = json_object_get(m->params, "arguments");
	char err[512];

	if (!json_is_object(m->params) || !json_is_string(name)) {
		send_error(s, m->id, JSONRPC_INVALID_PARAMS,
			   "tools/call: params.name must be a string");
		return;
	}
	const struct mcp_tool *tool = mcp_tool_find(json_string_value(name));
	if (!tool) {
		send_error(s, m->id, JSONRPC_INVALID_PARAMS, "Unknown tool: %.200s",
			   json_string_value(name));
		return;
	}
	if (args && !json_is_object(args)) {
		send_error(s, m->id, JSONRPC_INVALID_PARAMS,
			   "tools/call: params.arguments must be an object");
		return;
	}
	json_t *empty = args ? NULL : json_object();
	int r = mcp_schema_check(tool->schema, args ? args : empty, "arguments", err, sizeof(err));
	json_decref(empty);
	if (r < 0) {
		send_error(s, m->id, JSONRPC_INVALID_PARAMS, "Invalid arguments for %s: %s",
			   tool->name, r == -ENOMEM ? "out of memory" : err);
		return;
	}
	if (s->stopping) {
		send_result(s, m->id, mcp_result_error("capsem-mcp is shutting down"));
		return;
	}
	start_call(s, m->id, tool, args);
}

static void on_request(struct server *s, struct jsonrpc_msg *m)
{
	log_debug("request %s", m->method);
	if (streq(m->method, "initialize"))
		on_initialize(s, m);
	else if (streq(m->method, "ping"))
		send_result(s, m->id, json_object());
	else if (streq(m->method, "tools/list")) {
		json_t *tools = mcp_tools_list();
		send_result(s, m->id, tools ? json_pack("{s:o}", "tools", tools) : NULL);
	} else if (streq(m->method, "tools/call"))
		on_tools_call(s, m);
	else
		send_error(s, m->id, JSONRPC_METHOD_NOT_FOUND, "Method not found: %.200s",
			   m->method);
}

static void on_notification(struct server *s, struct jsonrpc_msg *m)
{
	log_debug("notification %s", m->method);
	if (!streq(m->method, "notifications/cancelled"))
		return; /* notifications/initialized and anything else: nothing to do */
	json_t *rid = json_object_get(m->params, "requestId");
	for (struct call *c = s->calls; c; c = c->next) {
		if (!c->cancelled && jsonrpc_id_equal(c->id, rid)) {
			log_debug("cancelling tools/call %s", c->tool->name);
			call_cancel(c);
			return;
		}
	}
}

static void on_line(struct server *s, const char *line, size_t len)
{
	struct jsonrpc_msg m;
	if (jsonrpc_parse(line, len, &m) < 0) {
		log_debug("invalid message: %s", m.error_message);
		send_msg(s, jsonrpc_error_for(&m));
	} else if (m.kind == JSONRPC_REQUEST) {
		on_request(s, &m);
	} else if (m.kind == JSONRPC_NOTIFICATION) {
		on_notification(s, &m);
	} /* responses: we never send requests, so there is nothing to match */
	jsonrpc_msg_done(&m);
}

/* Take the reader's pending event, if any, and act on it. */
static void take_line(struct server *s)
{
	const char *line = NULL;
	size_t len = 0;
	int st = jsonrpc_reader_line(&s->rd, &line, &len);
	if (st == JSONRPC_LINE_OK)
		on_line(s, line, len);
	else if (st == JSONRPC_LINE_TOO_LARGE)
		send_error(s, NULL, JSONRPC_INVALID_REQUEST, "message too large (over %u bytes)",
			   (unsigned)s->rd.max);
}

static void read_stdin(struct server *s)
{
	uint8_t buf[READ_CHUNK];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		if (n < 0)
			log_debug_errno(negative_errno(), "stdin");
		(void)jsonrpc_reader_finish(&s->rd);
		take_line(s);
		s->stdin_eof = 1;
		stop_all(s);
		return;
	}
	for (size_t used = 0; used < (size_t)n;) {
		used += jsonrpc_reader_feed(&s->rd, buf + used, (size_t)n - used);
		take_line(s);
	}
}

static int setup_signals(void)
{
	/* blocked before any thread starts, so that only the signalfd sees them */
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	return signalfd_for(sigs, ELEMENTSOF(sigs));
}

static int serve(struct server *s)
{
	for (;;) {
		if (s->stopping && !s->calls)
			return 0;
		if (s->out_broken)
			stop_all(s); /* the client is gone */
		int wait = -1;
		if (s->stopping) {
			int64_t left = s->stop_deadline - now_ms();
			if (left <= 0) {
				log_warn("%zu tool call(s) still cleaning up; exiting anyway",
					 s->n_calls);
				return 1;
			}
			wait = (int)left;
		}
		struct pollfd pf[3] = {
			{ .fd = s->stdin_eof ? -1 : STDIN_FILENO, .events = POLLIN },
			{ .fd = s->done_pipe[0], .events = POLLIN },
			{ .fd = s->sigfd, .events = POLLIN },
		};
		int n = poll(pf, 3, wait);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_error_errno(negative_errno(), "poll"), 1;
		if (pf[2].revents) {
			struct signalfd_siginfo si;
			if (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (s->stopping)
					return 1; /* a second signal: do not wait any more */
				log_debug("signal %u: stopping", si.ssi_signo);
				stop_all(s);
			}
		}
		if (pf[1].revents)
			reap_calls(s);
		if (pf[0].revents)
			read_stdin(s);
	}
}

static void help(void)
{
	printf("Usage: capsem-mcp [--help] [--version]\n"
	       "\n"
	       "Capsem as an MCP server (protocol " MCP_PROTOCOL_VERSION ") over stdio, for AI\n"
	       "agents on this host: tools to create VMs, run commands and move files in them.\n"
	       "Talks to capsemd ($CAPSEM_HOME/run/capsemd.sock), starting it when needed.\n"
	       "Logs go to stderr (CAPSEM_DEBUG=1 for debug lines). See docs/MCP.md.\n"
	       "\n"
	       "Example (Claude Code):  claude mcp add capsem -- capsem-mcp\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' },
					      { "version", no_argument, NULL, 'V' },
					      {} };
	struct server s = { .done_pipe = { -1, -1 }, .sigfd = -1 };
	int c, r;

	log_setup("capsem-mcp", LOG_LVL_WARN);
	log_setup_from_env();
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 0;
		case 'V':
			printf("capsem-mcp %s (MCP %s)\n", CAPSEM_VERSION, MCP_PROTOCOL_VERSION);
			return 0;
		default:
			return 2;
		}
	}
	if (optind < argc)
		return log_error("unexpected argument '%s' (see --help)", argv[optind]), 2;

	json_object_seed(0); /* before any thread: jansson seeds its hash tables once */
	r = mcp_tools_init();
	if (r < 0)
		return log_error_errno(r, "the compiled-in tool table is broken"), 1;
	s.sigfd = setup_signals();
	if (s.sigfd < 0)
		return log_error_errno(s.sigfd, "signalfd"), 1;
	if (pipe2(s.done_pipe, O_CLOEXEC) < 0)
		return log_error_errno(negative_errno(), "pipe"), 1;
	fd_set_nonblock(s.done_pipe[0], 1);
	jsonrpc_reader_init(&s.rd, JSONRPC_MAX_MESSAGE);

	r = serve(&s);
	if (s.calls) {
		/* workers still cleaning up past the deadline: leave without tearing down what
		 * they use */
		_exit(r);
	}
	jsonrpc_reader_done(&s.rd);
	mcp_tools_done();
	safe_close(s.done_pipe[0]);
	safe_close(s.done_pipe[1]);
	safe_close(s.sigfd);
	return r;
}
