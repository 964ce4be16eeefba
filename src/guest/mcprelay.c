/* mcprelay.c - capsem-mcp-relay: an MCP stdio server that is a pipe to the host's MCP gateway.
 *
 * An AI agent in the guest starts this as an MCP server (stdio transport: newline-delimited
 * JSON-RPC on stdin/stdout). It opens ONE vsock connection to the host (CID 2, port
 * PROTO_PORT_MCP), sends a preamble line naming its parent process (the agent), then forwards
 * lines both ways unchanged (docs/PROTOCOL.md, "MCP relay"). It remembers the ids of the
 * requests in flight (mcppure.c) so that when the connection closes, fails or cannot be opened,
 * every request still pending is answered with a JSON-RPC error (-32603 "capsem MCP gateway
 * unavailable") instead of leaving the agent waiting; then it exits. A line longer than
 * MR_LINE_MAX is not forwarded: it gets an error with id null. At most MCPPURE_PENDING_MAX
 * requests may be in flight; past that a request is answered locally with -32000.
 *
 * Trust boundary: none new (the agent and the host are the two peers; the host enforces
 * everything). Single thread, poll(2) over stdin and the socket; writes are blocking.
 */
#include "mcprelay.h"

#include <getopt.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "fdutil.h"
#include "hostconn.h"
#include "log.h"
#include "macro.h"
#include "mcppure.h"
#include "parse.h"
#include "proto.h"

#define MR_LINE_MAX (4u * 1024u * 1024u) /* the gateway's cap on one message */
#define MR_READ 65536u
#define MR_UNAVAILABLE_CODE (-32603)
#define MR_UNAVAILABLE "capsem MCP gateway unavailable"
#define MR_DRAIN_MS 300		/* after the connection is lost: wait this long for more lines */
#define MR_NOCONN_DRAIN_MS 2000 /* when it could not be opened at all */

struct mr_lines {
	char *buf;
	size_t len;
	bool discarding; /* inside a line over MR_LINE_MAX */
};

struct mr {
	int sock;
	struct mcppure_pending pending;
	struct mr_lines in, out; /* in: from the agent (stdin); out: from the host */
	bool stdout_dead;
};

static void mr_stdout(struct mr *m, const char *p, size_t n)
{
	if (m->stdout_dead)
		return;
	if (fd_write_all(STDOUT_FILENO, p, n) < 0)
		m->stdout_dead = true;
}

static void mr_answer(struct mr *m, const char *id, size_t id_len, int code, const char *msg)
{
	char line[MCPPURE_ID_MAX + 256];
	ssize_t k = mcppure_error_line(id, id_len, code, msg, line, sizeof(line));
	if (k > 0)
		mr_stdout(m, line, (size_t)k);
}

/* Feed bytes to a line splitter; cb gets each complete line (without '\n'; a trailing '\r'
 * kept) or, for a line over the cap, (NULL, 0) once. */
static int mr_feed(struct mr *m, struct mr_lines *l, const char *p, size_t n,
		   int (*cb)(struct mr *, const char *, size_t))
{
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (l->discarding) {
			if (nl)
				l->discarding = false;
		} else if (l->len + take > MR_LINE_MAX) {
			l->len = 0;
			l->discarding = !nl;
			int r = cb(m, NULL, 0);
			if (r < 0)
				return r;
		} else {
			if (take) {
				char *nb = realloc(l->buf, l->len + take + 1);
				if (!nb)
					return -ENOMEM;
				l->buf = nb;
				memcpy(l->buf + l->len, p, take);
				l->len += take;
			}
			if (nl) {
				size_t len = l->len;
				l->len = 0;
				if (len > 0) {
					int r = cb(m, l->buf, len);
					if (r < 0)
						return r;
				}
			}
		}
		if (!nl)
			break;
		n -= take + 1;
		p = nl + 1;
	}
	return 0;
}

/* A line from the agent while connected: track it, forward it. -EPIPE when the host is gone. */
static int mr_from_agent(struct mr *m, const char *p, size_t n)
{
	struct mcppure_msg msg;
	if (!p) {
		mr_answer(m, NULL, 0, -32600, "message too large");
		return 0;
	}
	if (mcppure_scan(p, n, &msg) == MCPPURE_REQUEST) {
		int r = mcppure_pending_add(&m->pending, &msg.id);
		if (r < 0) {
			mr_answer(m, msg.id.text, msg.id.text_len, -32000,
				  "too many requests in flight");
			return 0;
		}
	}
	if (fd_write_all(m->sock, p, n) < 0 || fd_write_all(m->sock, "\n", 1) < 0)
		return -EPIPE;
	return 0;
}

/* A line from the agent once the host is gone: requests get the error at once. */
static int mr_from_agent_offline(struct mr *m, const char *p, size_t n)
{
	struct mcppure_msg msg;
	if (!p)
		mr_answer(m, NULL, 0, -32600, "message too large");
	else if (mcppure_scan(p, n, &msg) == MCPPURE_REQUEST)
		mr_answer(m, msg.id.text, msg.id.text_len, MR_UNAVAILABLE_CODE, MR_UNAVAILABLE);
	return 0;
}

static int mr_from_host(struct mr *m, const char *p, size_t n)
{
	struct mcppure_msg msg;
	if (!p)
		return -EMSGSIZE; /* the gateway never sends this much: drop the connection */
	if (mcppure_scan(p, n, &msg) == MCPPURE_RESPONSE)
		(void)mcppure_pending_remove(&m->pending, &msg.id);
	mr_stdout(m, p, n);
	mr_stdout(m, "\n", 1);
	return 0;
}

static void mr_fail_pending(struct mr *m)
{
	for (size_t i = 0; i < m->pending.n; i++)
		mr_answer(m, m->pending.ids[i].text, m->pending.ids[i].text_len,
			  MR_UNAVAILABLE_CODE, MR_UNAVAILABLE);
	m->pending.n = 0;
}

/* The host is gone: answer what is pending, then what the agent sends within timeout_ms (a
 * request it wrote just before it saw our errors), until stdin ends or goes quiet. */
static void mr_drain(struct mr *m, int timeout_ms)
{
	char *b = malloc(MR_READ);
	mr_fail_pending(m);
	while (b && !m->stdout_dead) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		int k = poll(&p, 1, timeout_ms);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		ssize_t n = read(STDIN_FILENO, b, MR_READ);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (mr_feed(m, &m->in, b, (size_t)n, mr_from_agent_offline) < 0)
			break;
	}
	free(b);
}

static int mr_connect_vsock(uint32_t port)
{
	union hostconn_addr sa;
	socklen_t len;
	hostconn_addr(port, &sa, &len);
	_cleanup_close_ int fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, &sa.sa, len) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

static int mr_connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

static int mr_connect(uint32_t port, const char *unix_path)
{
	static const long delay_ms[] = { 0, 100, 400 };
	int fd = -ENOTCONN;
	for (size_t i = 0; i < ELEMENTSOF(delay_ms); i++) {
		if (delay_ms[i]) {
			struct timespec ts = { 0, delay_ms[i] * 1000000L };
			(void)nanosleep(&ts, NULL);
		}
		fd = unix_path ? mr_connect_unix(unix_path) : mr_connect_vsock(port);
		if (fd >= 0)
			return fd;
	}
	return fd;
}

/* The parent's (the agent's) name, for the preamble. */
static void mr_parent_comm(pid_t ppid, char *comm, size_t cap)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	comm[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)ppid);
	if (read_file_small(path, 64, &text, &len) < 0)
		return;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == 0))
		len--;
	snprintf(comm, cap, "%.*s", (int)len, text);
}

static int mr_run(struct mr *m)
{
	char *b = malloc(MR_READ);
	bool stdin_eof = false;
	int r = 0;
	if (!b)
		return -ENOMEM;
	while (!m->stdout_dead) {
		struct pollfd p[2] = { { .fd = stdin_eof ? -1 : STDIN_FILENO, .events = POLLIN },
				       { .fd = m->sock, .events = POLLIN } };
		if (stdin_eof && m->pending.n == 0)
			break; /* the agent is done and nothing is owed to it */
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = negative_errno();
			break;
		}
		if (p[1].revents) {
			ssize_t n = read(m->sock, b, MR_READ);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				r = n < 0 ? negative_errno() : -ECONNRESET;
				break;
			}
			r = mr_feed(m, &m->out, b, (size_t)n, mr_from_host);
			if (r < 0)
				break;
		}
		if (p[0].revents) {
			ssize_t n = read(STDIN_FILENO, b, MR_READ);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				stdin_eof = true;
				(void)shutdown(m->sock, SHUT_WR);
				continue;
			}
			r = mr_feed(m, &m->in, b, (size_t)n, mr_from_agent);
			if (r < 0)
				break;
		}
	}
	free(b);
	return r;
}

int mcprelay_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "unix", required_argument, NULL, 'u' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct sigaction ign = { .sa_handler = SIG_IGN };
	const char *unix_path = NULL;
	uint32_t port = PROTO_PORT_MCP, v;
	char comm[MCPPURE_COMM_MAX + 8], pre[96];
	struct mr m = { .sock = -1 };
	int c, r;

	log_setup("capsem-mcp-relay", LOG_LVL_WARN);
	log_setup_from_env();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'p':
			if (parse_u32(optarg, &v) < 0 || v == 0)
				return log_error("bad --port %s", optarg), 2;
			port = v;
			break;
		case 'u':
			unix_path = optarg;
			break;
		case 'd':
			log_setup("capsem-mcp-relay", LOG_LVL_DEBUG);
			break;
		case 'h':
			printf("usage: capsem-mcp-relay [--port P] [--unix PATH] [--debug]\n"
			       "  An MCP server on stdin/stdout relayed to the host's MCP gateway\n"
			       "  (vsock port %u; --unix: a Unix socket instead, for tests).\n",
			       PROTO_PORT_MCP);
			return 0;
		default:
			return 2;
		}
	}
	if (optind != argc)
		return log_error("unexpected argument %s", argv[optind]), 2;
	(void)sigaction(SIGPIPE, &ign, NULL);

	pid_t ppid = getppid();
	mr_parent_comm(ppid, comm, sizeof(comm));
	m.sock = mr_connect(port, unix_path);
	if (m.sock < 0) {
		log_warn_errno(m.sock, "cannot reach the MCP gateway");
		mr_drain(&m, MR_NOCONN_DRAIN_MS);
		return 1;
	}
	ssize_t pl = mcppure_preamble((uint32_t)ppid, comm, pre, sizeof(pre));
	if (pl < 0 || fd_write_all(m.sock, pre, (size_t)pl) < 0) {
		mr_drain(&m, MR_NOCONN_DRAIN_MS);
		safe_close(m.sock);
		return 1;
	}
	r = mr_run(&m);
	if (r < 0 && !m.stdout_dead) {
		log_debug_errno(r, "the connection to the MCP gateway ended");
		mr_drain(&m, MR_DRAIN_MS);
	}
	safe_close(m.sock);
	mcppure_pending_done(&m.pending);
	free(m.in.buf);
	free(m.out.buf);
	return r < 0 ? 1 : 0;
}
