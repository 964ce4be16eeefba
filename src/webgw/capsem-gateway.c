/* capsem-gateway - the web gateway: the browser UI's only door to capsemd (docs/API.md
 * "capsem-gateway", docs/ARCHITECTURE.md).
 *
 * Listens on 127.0.0.1 only (--port, 0 = any; the bound port in run/gateway.port) with the
 * shared HTTP server (src/shared/httpd.c on TCP). At each start a new random token goes to
 * run/gateway.token (0600). Every request: Host must be a loopback name with our port (DNS
 * rebinding) and an Origin, when present, must be our own origin, else 403. GET /health and
 * GET / plus the UI's static files (loaded into memory at start) need no token; GET /token
 * answers only a peer whose socket belongs to our uid (looked up in /proc/net/tcp: the kernel's
 * word, not the client's), else 403. Everything else needs "Authorization: Bearer <token>"
 * (WebSockets: ?token=); 20 failures within 60 s make further failures 429. /api/<route> is
 * proxied to capsemd when <route> is on the allow-list (wgcheck.c; else 404), bodies capped,
 * with a timeout, 502 when capsemd does not answer. /events and /terminal/{ref} are WebSockets
 * (wgevents.c, wgterm.c).
 *
 * Trust boundary: every local process can connect to the port, and any web page the user opens
 * can make the browser send requests to it: the token, the Origin/Host checks and the /token
 * owner check are the boundary. Thread: one libuv loop; no blocking call after start-up.
 * Lifetime: with --parent-fd (capsemd starts it), EOF on that fd ends the gateway; the port is
 * written there once listening. Confinement: once everything is open, no new privileges,
 * Landlock and a seccomp allow-list (wgconfine.c).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <uv.h>

#include "config.h"
#include "fdutil.h"
#include "home.h"
#include "httpd.h"
#include "jsonutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "wgcheck.h"
#include "wgconfine.h"
#include "wgevents.h"
#include "wgterm.h"
#include "wgup.h"

#define DEFAULT_PORT 19222
#define UI_MAX_FILES 512
#define UI_MAX_BYTES (32u << 20)
#define JSON_RESPONSE_MAX (32u << 20)
#define FILE_RESPONSE_MAX (256ull << 20)
#define TIMEOUT_MS 120000u
#define LONG_TIMEOUT_MS 600000u /* VM create/start under TCG, long-polls */
#define IDLE_MS 60000u

struct uifile {
	char *path; /* "/index.html" */
	char *data;
	size_t len;
	const char *ctype;
};

static uv_loop_t loop;
static unsigned port;
static char token[WG_TOKEN_LEN + 1];
static char *capsemd_sock, *run_dir;
static struct wg_ratelimit ratelimit;
static struct uifile ui[UI_MAX_FILES];
static size_t n_ui, ui_bytes;
static struct wgterm_ctx term_ctx;
static struct wgevents *events;

/* sent with every response: nothing is cached, framed, sniffed or leaked by Referer */
static const char security_headers[] =
	"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
	"X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
	"Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Resource-Policy: same-origin\r\n"
	"Content-Security-Policy: default-src 'self'; connect-src 'self'; img-src 'self' data:; "
	"style-src 'self' 'unsafe-inline'; font-src 'self' data:; object-src 'none'; "
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/* ---- the UI's files ---- */

static const char *ctype_of(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{ ".html", "text/html; charset=utf-8" },
		{ ".js", "text/javascript; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" },
		{ ".svg", "image/svg+xml" },
		{ ".json", "application/json" },
		{ ".png", "image/png" },
		{ ".ico", "image/x-icon" },
		{ ".woff2", "font/woff2" },
		{ ".txt", "text/plain; charset=utf-8" },
	};
	const char *dot = strrchr(name, '.');
	for (size_t i = 0; dot && i < ELEMENTSOF(types); i++)
		if (strcmp(dot, types[i].ext) == 0)
			return types[i].type;
	return "application/octet-stream";
}

/* Load dir (recursively, at most UI_MAX_FILES / UI_MAX_BYTES) under the prefix. Start-up only. */
static int ui_load(const char *dir, const char *prefix, unsigned depth)
{
	if (depth > 8)
		return 0;
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = NULL, *rel = NULL;
		if (asprintf(&p, "%s/%s", dir, e->d_name) < 0 ||
		    asprintf(&rel, "%s/%s", prefix, e->d_name) < 0)
			return -ENOMEM;
		struct stat st;
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int r = ui_load(p, rel, depth + 1);
			if (r < 0)
				return r;
			continue;
		}
		if (!S_ISREG(st.st_mode) || n_ui >= UI_MAX_FILES)
			continue;
		char *data = NULL;
		size_t len = 0;
		int r = read_file_small(p, UI_MAX_BYTES - ui_bytes, &data, &len);
		if (r < 0)
			return r;
		ui[n_ui++] = (struct uifile){ .path = TAKE_PTR(rel),
					      .data = data,
					      .len = len,
					      .ctype = ctype_of(e->d_name) };
		ui_bytes += len;
	}
	return 0;
}

static const struct uifile *ui_find(const char *path)
{
	for (size_t i = 0; i < n_ui; i++)
		if (strcmp(ui[i].path, path) == 0)
			return &ui[i];
	return NULL;
}

/* ---- requests ---- */

static uint64_t now_ms(void)
{
	return uv_now(&loop);
}

/* Does the TCP peer of fd belong to our uid? The kernel's socket table says who owns the
 * client's end (both ends are on this machine: we listen on loopback only). */
static bool peer_is_us(int fd)
{
	struct sockaddr_in self = { 0 }, peer = { 0 };
	socklen_t sl = sizeof(self), pl = sizeof(peer);
	if (getsockname(fd, (struct sockaddr *)&self, &sl) < 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &pl) < 0 || peer.sin_family != AF_INET)
		return false;
	_cleanup_free_ char *text = NULL;
	size_t n = 0;
	/* /proc/net/tcp is small on this kind of machine; capped */
	if (read_file_small("/proc/net/tcp", 16u << 20, &text, &n) < 0)
		return false;
	uid_t uid;
	/* the client's socket: local = the peer's address, remote = ours */
	if (wg_proc_tcp_uid(text, n, peer.sin_addr.s_addr, ntohs(peer.sin_port),
			    self.sin_addr.s_addr, ntohs(self.sin_port), &uid) < 0)
		return false;
	return uid == geteuid();
}

struct proxied {
	struct httpd_conn *c;
};

static void on_proxied(void *ud, int err, int status, const char *ctype, struct buf *body,
		       uv_pipe_t *stream)
{
	struct httpd_conn *c = ud;
	if (err < 0) {
		if (err == -ETIMEDOUT)
			httpd_reply_error(c, 504, "timeout", "capsemd did not answer in time");
		else if (err == -EFBIG)
			httpd_reply_error(c, 502, "too_large", "capsemd's answer is too large");
		else
			httpd_reply_error(c, 502, "daemon_unavailable",
					  "capsemd is not reachable: %s", strerror(-err));
		return;
	}
	/* the body is handed over as is (a buf's bytes start at data + off) */
	size_t n = buf_len(body);
	char *copy = malloc(n ? n : 1);
	if (!copy) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	memcpy(copy, buf_head(body), n);
	httpd_reply(c, status, ctype, copy, n, free);
}

static void proxy(struct httpd_conn *c, const struct http_msg *req, struct buf *body,
		  const char *path, enum wg_route route)
{
	_cleanup_free_ char *target = NULL;
	if (asprintf(&target, "%s%s%s", path, *req->query ? "?" : "", req->query) < 0) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	const char *ct = http_header_get(req, "Content-Type");
	int is_file_get = strcmp(req->method, "GET") == 0 && strlen(path) > 6 &&
			  strcmp(path + strlen(path) - 6, "/files") == 0;
	struct wgup_req rq = {
		.method = req->method,
		.target = target,
		.content_type = buf_len(body) || strcmp(req->method, "GET") != 0
					? (ct ? ct : "application/json")
					: NULL,
		.body = buf_head(body),
		.body_len = buf_len(body),
		.timeout_ms = route == WG_ROUTE_JSON ? TIMEOUT_MS : LONG_TIMEOUT_MS,
		.max_response = is_file_get ? FILE_RESPONSE_MAX : JSON_RESPONSE_MAX,
	};
	int r = wgup_start(&loop, capsemd_sock, &rq, on_proxied, c, NULL);
	if (r < 0)
		httpd_reply_error(c, 502, "daemon_unavailable", "capsemd is not reachable");
}

static void reply_json_str(struct httpd_conn *c, int status, const char *s)
{
	httpd_reply(c, status, "application/json", (void *)s, strlen(s), NULL);
}

static void handle(struct httpd_conn *c, const struct http_msg *req, struct buf *body, void *ud)
{
	const char *path = req->path;
	/* 1. the request must be for us, from a page of ours (or from no page at all) */
	if (!wg_host_ok(http_header_get(req, "Host"), port)) {
		httpd_reply_error(c, 403, "forbidden_host", "Host must be 127.0.0.1 or localhost");
		return;
	}
	if (!wg_origin_ok(http_header_get(req, "Origin"), port)) {
		httpd_reply_error(c, 403, "forbidden_origin", "cross-origin requests are refused");
		return;
	}
	/* 2. what needs no token */
	if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) {
		if (strcmp(path, "/health") == 0) {
			char s[128];
			snprintf(s, sizeof(s),
				 "{\"ok\":true,\"version\":\"%s\",\"terminals\":%u}\n",
				 CAPSEM_VERSION, wgterm_count());
			reply_json_str(c, 200, s);
			return;
		}
		if (strcmp(path, "/token") == 0) {
			if (!peer_is_us(httpd_conn_fd(c))) {
				httpd_reply_error(c, 403, "forbidden",
						  "the token is only for the gateway's own user");
				return;
			}
			char s[WG_TOKEN_LEN + 16];
			snprintf(s, sizeof(s), "{\"token\":\"%s\"}\n", token);
			reply_json_str(c, 200, s);
			return;
		}
		const struct uifile *f = ui_find(strcmp(path, "/") == 0 ? "/index.html" : path);
		if (f) {
			httpd_reply(c, 200, f->ctype, f->data, f->len, NULL);
			return;
		}
		if (strncmp(path, "/api/", 5) != 0 && strcmp(path, "/events") != 0 &&
		    strncmp(path, "/terminal/", 10) != 0) {
			httpd_reply_error(c, 404, "not_found", "no such file");
			return;
		}
	}
	/* 3. everything else: the token */
	bool ws = strcmp(path, "/events") == 0 || strncmp(path, "/terminal/", 10) == 0;
	if (!wg_token_ok(http_header_get(req, "Authorization"), ws ? req->query : NULL, token)) {
		bool limited = wg_ratelimit_limited(&ratelimit, now_ms());
		wg_ratelimit_fail(&ratelimit, now_ms());
		if (limited)
			httpd_reply_error(c, 429, "too_many_attempts",
					  "too many failed auth attempts");
		else
			httpd_reply_error(c, 401, "unauthorized", "a valid bearer token is needed");
		return;
	}
	if (strcmp(path, "/events") == 0) {
		wgevents_attach(events, c, req);
		return;
	}
	if (strncmp(path, "/terminal/", 10) == 0) {
		const char *ref = path + 10;
		if (!wg_ref_ok(ref)) {
			httpd_reply_error(c, 400, "bad_request", "not a VM name or id");
			return;
		}
		_cleanup_free_ char *rows = NULL, *cols = NULL;
		uint32_t rv = 0, cv = 0;
		if (http_query_get(req->query, "rows", &rows) == 0 &&
		    (parse_u32(rows, &rv) < 0 || rv > 1000))
			rv = 0;
		if (http_query_get(req->query, "cols", &cols) == 0 &&
		    (parse_u32(cols, &cv) < 0 || cv > 1000))
			cv = 0;
		wgterm_attach(&term_ctx, c, req, ref, (uint16_t)rv, (uint16_t)cv);
		return;
	}
	if (strncmp(path, "/api/", 5) == 0) {
		enum wg_route route = wg_route_allowed(req->method, path + 4);
		if (route != WG_ROUTE_NONE) {
			proxy(c, req, body, path + 4, route);
			return;
		}
	}
	httpd_reply_error(c, 404, "not_found", "no such route");
}

static uint64_t body_cap(const struct http_msg *req, void *ud)
{
	if (strncmp(req->path, "/api/", 5) == 0 &&
	    wg_route_allowed(req->method, req->path + 4) == WG_ROUTE_UPLOAD)
		return WG_UPLOAD_MAX;
	return WG_BODY_MAX;
}

/* ---- start-up ---- */

static int make_token(void)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	uint8_t rnd[WG_TOKEN_LEN];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	for (size_t i = 0; i < WG_TOKEN_LEN; i++)
		token[i] = alphabet[rnd[i] % 62]; /* 248 = 4 * 62: the bias is < 2% per char */
	token[WG_TOKEN_LEN] = 0;
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

static int listen_loopback(unsigned want, unsigned *ret_port)
{
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)want),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0)
		return -errno;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -errno;
	*ret_port = ntohs(a.sin_port);
	return TAKE_FD(fd);
}

static void on_signal(uv_signal_t *s, int signum)
{
	uv_stop(&loop);
}

static uv_poll_t parent_poll;
static void on_parent(uv_poll_t *p, int status, int ev)
{
	char b[64];
	int fd;
	uv_fileno((uv_handle_t *)p, &fd);
	ssize_t k = read(fd, b, sizeof(b));
	if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
		log_info("capsemd went away: the gateway stops");
		uv_stop(&loop);
	}
}

static void help(void)
{
	printf("Usage: capsem-gateway [OPTIONS]\n"
	       "\n"
	       "The web gateway: serves the Capsem web UI and a guarded subset of capsemd's API\n"
	       "on 127.0.0.1 (docs/API.md \"capsem-gateway\"). capsemd starts it (capsem ui).\n"
	       "\n"
	       "  --home DIR        state directory (default $CAPSEM_HOME, else ~/.capsem)\n"
	       "  --port N          TCP port on 127.0.0.1 (default %d; 0: any free port)\n"
	       "  --ui-dir DIR      the built web UI (default: next to the binary)\n"
	       "  --parent-fd N     capsemd's end: the port is written there; EOF ends us\n"
	       "  --log-level L     error, warn, info (default) or debug\n"
	       "  -h, --help        this text\n",
	       DEFAULT_PORT);
}

static char *find_ui_dir(void)
{
	const char *e = getenv("CAPSEM_UI_DIR");
	if (e && *e)
		return strdup(e);
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			/* build/src/webgw/capsem-gateway -> build/ui/dist; installed: ../share */
			static const char *const rel[] = { "ui", "../../ui/dist",
							   "../share/capsem/ui" };
			for (size_t i = 0; i < ELEMENTSOF(rel); i++) {
				char *p = NULL;
				if (asprintf(&p, "%s/%s/index.html", self, rel[i]) < 0)
					return NULL;
				if (access(p, R_OK) == 0) {
					p[strlen(p) - strlen("/index.html")] = 0;
					return p;
				}
				free(p);
			}
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	enum { O_HOME = 1000, O_PORT, O_UI, O_PARENT, O_LOG };
	static const struct option opts[] = { { "home", required_argument, NULL, O_HOME },
					      { "port", required_argument, NULL, O_PORT },
					      { "ui-dir", required_argument, NULL, O_UI },
					      { "parent-fd", required_argument, NULL, O_PARENT },
					      { "log-level", required_argument, NULL, O_LOG },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	_cleanup_free_ char *home = NULL, *ui_dir = NULL;
	uint32_t want_port = DEFAULT_PORT, parent_fd = 0;
	int have_parent = 0, c;
	enum log_level level = LOG_LVL_INFO;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_HOME:
			free(home);
			home = strdup(optarg);
			break;
		case O_PORT:
			if (parse_u32(optarg, &want_port) < 0 || want_port > 65535)
				return log_error("--port: expected 0..65535"), 2;
			break;
		case O_UI:
			free(ui_dir);
			ui_dir = strdup(optarg);
			break;
		case O_PARENT:
			if (parse_u32(optarg, &parent_fd) < 0 || parent_fd < 3)
				return log_error("--parent-fd: expected a file descriptor >= 3"), 2;
			have_parent = 1;
			break;
		case O_LOG:
			if (strcmp(optarg, "error") == 0)
				level = LOG_LVL_ERROR;
			else if (strcmp(optarg, "warn") == 0)
				level = LOG_LVL_WARN;
			else if (strcmp(optarg, "info") == 0)
				level = LOG_LVL_INFO;
			else if (strcmp(optarg, "debug") == 0)
				level = LOG_LVL_DEBUG;
			else
				return log_error(
					       "--log-level: expected error, warn, info or debug"),
				       2;
			break;
		case 'h':
			help();
			return 0;
		default:
			return 2;
		}
	}
	log_setup("capsem-gateway", level);
	log_setup_from_env();
	if (!home && capsem_home(&home) < 0)
		return log_error("cannot find the home directory: set CAPSEM_HOME or --home"), 1;
	if (asprintf(&run_dir, "%s/run", home) < 0 ||
	    asprintf(&capsemd_sock, "%s/capsemd.sock", run_dir) < 0)
		return log_oom(), 1;
	int r = mkdir_p(run_dir, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", run_dir), 1;
	_cleanup_free_ char *lock_path = NULL, *port_path = NULL, *token_path = NULL;
	if (asprintf(&lock_path, "%s/gateway.lock", run_dir) < 0 ||
	    asprintf(&port_path, "%s/gateway.port", run_dir) < 0 ||
	    asprintf(&token_path, "%s/gateway.token", run_dir) < 0)
		return log_oom(), 1;
	_cleanup_close_ int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0)
		return log_error("another capsem-gateway serves %s", home), 3;

	if (!ui_dir)
		ui_dir = find_ui_dir();
	if (ui_dir) {
		r = ui_load(ui_dir, "", 0);
		if (r < 0)
			log_warn_errno(r, "cannot load the web UI from %s", ui_dir);
	} else {
		log_warn("no web UI found (set --ui-dir): serving the API only");
	}

	int lfd = listen_loopback(want_port, &port);
	if (lfd == -EADDRINUSE && want_port != 0) {
		log_warn("port %u is taken: listening on any free port", want_port);
		lfd = listen_loopback(0, &port);
	}
	if (lfd < 0)
		return log_error_errno(lfd, "cannot listen on 127.0.0.1:%u", want_port), 1;
	if (make_token() < 0)
		return log_error("cannot get random bytes for the token"), 1;
	char ptext[16];
	snprintf(ptext, sizeof(ptext), "%u\n", port);
	/* the token first: a client that sees the port finds its token */
	if (write_file_atomic(token_path, token, WG_TOKEN_LEN, 0600) < 0 ||
	    write_file_atomic(port_path, ptext, strlen(ptext), 0600) < 0)
		return log_error("cannot write %s and %s", token_path, port_path), 1;

	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigaction(SIGPIPE, &sa, NULL);
	uv_loop_init(&loop);
	term_ctx = (struct wgterm_ctx){ .loop = &loop, .capsemd_sock = capsemd_sock };
	r = wgevents_new(&loop, capsemd_sock, &events);
	if (r < 0)
		return log_error_errno(r, "cannot set up /events"), 1;
	struct httpd *server = NULL;
	struct httpd_opts ho = { .tcp = 1,
				 .idle_ms = IDLE_MS,
				 .max_conns = 256,
				 .server_name = "capsem-gateway",
				 .extra_headers = security_headers };
	r = httpd_new_opts(&loop, lfd, &ho, handle, body_cap, NULL, &server);
	if (r < 0)
		return log_error_errno(r, "cannot serve"), 1;
	uv_signal_t sigs[3];
	int signums[] = { SIGTERM, SIGINT, SIGHUP };
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
		uv_signal_init(&loop, &sigs[i]);
		uv_signal_start(&sigs[i], on_signal, signums[i]);
		uv_unref((uv_handle_t *)&sigs[i]);
	}
	/* everything is open: from here on only sockets (wgconfine.c); confined before capsemd
	 * hears that it is ready */
	if (wg_confine(run_dir) < 0)
		return 1;
	if (have_parent) {
		(void)fd_write_all((int)parent_fd, ptext, strlen(ptext));
		fd_set_nonblock((int)parent_fd, 1);
		uv_poll_init(&loop, &parent_poll, (int)parent_fd);
		uv_poll_start(&parent_poll, UV_READABLE | UV_DISCONNECT, on_parent);
	}
	log_info("capsem-gateway %s on http://127.0.0.1:%u/ (%zu UI files, capsemd at %s)",
		 CAPSEM_VERSION, port, n_ui, capsemd_sock);
	uv_run(&loop, UV_RUN_DEFAULT);
	unlink(port_path);
	unlink(token_path);
	explicit_bzero(token, sizeof(token));
	return 0;
}
