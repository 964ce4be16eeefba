/* apiclient.c - blocking HTTP/1.1 client for capsemd's API over its Unix socket, and the start of
 * the daemon on demand.
 *
 * Trust boundary: the daemon runs as the same user (its socket is 0600 in a 0700 directory), but
 * its responses are still parsed as untrusted bytes: the head, header count, Content-Length and
 * chunk sizes are capped, and malformed responses fail with -EBADMSG instead of being guessed at.
 * Used by the CLI's main thread; one connection, one request at a time, no threads.
 */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "apiclient.h"
#include "config.h"
#include "fdutil.h"
#include "home.h"
#include "http.h"
#include "macro.h"
#include "unixsock.h"
#include "vmproc.h"

/* ---- response head and chunked bodies: the shared, fuzzed parser of http.c ---- */

static void copy_trim_lower(char *dst, size_t dn, const char *v, int stop_at_semi)
{
	size_t k = 0;
	for (; *v && k + 1 < dn; v++) {
		if (stop_at_semi && *v == ';')
			break;
		dst[k++] = (char)tolower((unsigned char)*v);
	}
	while (k > 0 && (dst[k - 1] == ' ' || dst[k - 1] == '\t'))
		k--;
	dst[k] = 0;
}

int api_parse_head(const char *p, size_t n, struct api_head *ret)
{
	struct http_msg m = { 0 };
	if (n > API_MAX_HEAD)
		n = API_MAX_HEAD; /* a head must end within the cap */
	ssize_t k = http_parse_response_head((const uint8_t *)p, n, &m);
	if (k == 0 && n >= API_MAX_HEAD)
		return -E2BIG;
	if (k <= 0)
		return k == -E2BIG ? -E2BIG : k < 0 ? -EBADMSG : 0;
	struct api_head h = { .status = m.status, .chunked = m.chunked, .close = !m.keep_alive };
	int r = (int)k;
	if (m.status < 100 || m.n_headers > API_MAX_HEADERS || m.content_length > INT64_MAX)
		r = m.n_headers > API_MAX_HEADERS ? -E2BIG : -EBADMSG;
	h.content_length = m.has_length ? (int64_t)m.content_length : -1;
	const char *v = http_header_get(&m, "Content-Type");
	if (v)
		copy_trim_lower(h.content_type, sizeof(h.content_type), v, 1);
	if ((v = http_header_get(&m, "Upgrade")))
		copy_trim_lower(h.upgrade, sizeof(h.upgrade), v, 0);
	http_msg_done(&m);
	if (r > 0)
		*ret = h;
	return r;
}

struct sinkto {
	struct buf *out;
	int fd;
};

static int sink(struct buf *out, int out_fd, const uint8_t *p, size_t n)
{
	if (out_fd >= 0)
		return fd_write_all(out_fd, p, n);
	return buf_append(out, p, n);
}

static int chunk_data(void *userdata, const uint8_t *p, size_t n)
{
	struct sinkto *t = userdata;
	return sink(t->out, t->fd, p, n);
}

ssize_t api_chunked_feed(struct api_chunked *c, const uint8_t *p, size_t n, struct buf *out,
			 int out_fd)
{
	struct sinkto t = { out, out_fd };
	size_t used = 0;
	if (c->done)
		return 0;
	int r = http_chunked_scan(&c->h, p, n, UINT64_MAX, chunk_data, &t, &used);
	if (r < 0)
		return r == -ENOBUFS || r == -EFBIG || r == -EIO || r == -EPIPE ? r : -EBADMSG;
	c->done = r == 1;
	return (ssize_t)used;
}

/* ---- small helpers ---- */

char *api_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *o = malloc(n * 3 + 1), *q = o;
	if (!o)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' || *p == '/') {
			*q++ = (char)*p;
		} else {
			*q++ = '%';
			*q++ = hex[*p >> 4];
			*q++ = hex[*p & 15];
		}
	}
	*q = 0;
	return o;
}

const char *api_response_error(const struct api_response *r)
{
	static __thread char fallback[64];
	const char *e = json_string_value(json_object_get(r->json, "error"));
	if (e && *e)
		return e;
	snprintf(fallback, sizeof(fallback), "the daemon answered HTTP %d", r->head.status);
	return fallback;
}

const char *api_response_code(const struct api_response *r)
{
	return strempty(json_string_value(json_object_get(r->json, "code")));
}

void api_response_done(struct api_response *r)
{
	if (!r)
		return;
	buf_done(&r->body, 0);
	json_decref(r->json);
	r->json = NULL;
}

char *api_socket_path(void)
{
	_cleanup_free_ char *home = NULL;
	(void)capsem_home(&home);
	char *p = NULL;
	if (!home)
		return NULL;
	return asprintf(&p, "%s/run/capsemd.sock", home) < 0 ? NULL : p;
}

/* ---- connection ---- */

int api_connect(struct api_conn *c)
{
	_cleanup_free_ char *path = api_socket_path();
	if (!path)
		return -ENOMEM;
	int fd = unix_connect(path, 0);
	if (fd < 0)
		return fd;
	c->fd = fd;
	c->intr_fd = -1;
	buf_init(&c->rbuf, API_MAX_HEAD + API_MAX_BODY);
	return 0;
}

void api_conn_close(struct api_conn *c)
{
	if (!c)
		return;
	c->fd = safe_close(c->fd);
	buf_done(&c->rbuf, 0);
}

/* fork + exec argv with stdio on /dev/null; wait for it. Its exit status, or -errno. */
static int run_quiet(char *const *argv)
{
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0) {
			dup2(nul, STDIN_FILENO);
			dup2(nul, STDOUT_FILENO);
			dup2(nul, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Is a systemd user unit installed for this CAPSEM_HOME? (capsem install writes the line
 * "Environment=CAPSEM_HOME=<home>" into it.) The package's unit (CAPSEM_USER_UNIT_DIR) serves
 * ~/.capsem only, and counts once the user enabled it (the default.target.wants link). */
static int systemd_unit_matches(const char *home)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *h = getenv("HOME");
	_cleanup_free_ char *unit = NULL, *text = NULL, *want = NULL, *wants = NULL, *def = NULL;
	int r = -1;
	if (xdg && *xdg)
		r = asprintf(&unit, "%s/systemd/user/capsemd.service", xdg);
	else if (h && *h)
		r = asprintf(&unit, "%s/.config/systemd/user/capsemd.service", h);
	if (r < 0)
		unit = NULL;
	if (unit && access(unit, F_OK) < 0 && h && *h && asprintf(&def, "%s/.capsem", h) >= 0 &&
	    streq(def, home) &&
	    asprintf(&wants, "%.*s/default.target.wants/capsemd.service",
		     (int)(strrchr(unit, '/') - unit), unit) >= 0 &&
	    access(CAPSEM_USER_UNIT_DIR "/capsemd.service", F_OK) == 0)
		return access(wants, F_OK) == 0;
	if (!unit || read_file_small(unit, 65536, &text, NULL) < 0)
		return 0;
	if (asprintf(&want, "\nEnvironment=CAPSEM_HOME=%s\n", home) < 0)
		return 0;
	return strstr(text, want) != NULL;
}

/* Double fork: the grandchild runs `capsemd --foreground` in its own session with stdout/stderr
 * appended to run/capsemd.log, so it outlives us and never gets our terminal's signals. */
/* Start capsemd the way it starts itself: without --foreground it detaches (double fork,
 * setsid, logs to run/capsemd.log) and its first process exits 0 only once the API socket is
 * listening, or 1 (its reason on our stderr), or CAPSEMD_EXIT_RUNNING when another capsemd holds
 * the home. So waiting for that process is waiting for readiness: nothing polls. 0 when the
 * daemon is ready, -EALREADY when another one is starting or running, -ETIMEDOUT, -ECHILD. */
static int spawn_daemon(const char *bin)
{
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		struct sigaction sa = { .sa_handler = SIG_DFL };
		sigaction(SIGPIPE, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul < 0 || dup2(nul, STDIN_FILENO) < 0 || dup2(nul, STDOUT_FILENO) < 0)
			_exit(1);
		if (chdir("/") < 0)
			_exit(1);
		char *argv[] = { (char *)bin, NULL };
		execv(bin, argv);
		_exit(127);
	}
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0) {
		struct pollfd pf = { .fd = pidfd, .events = POLLIN };
		int n;
		while ((n = poll(&pf, 1, API_START_TIMEOUT_MS)) < 0 && errno == EINTR)
			;
		if (n == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -ETIMEDOUT;
		}
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	if (WIFEXITED(st) && WEXITSTATUS(st) == CAPSEMD_EXIT_RUNNING)
		return -EALREADY;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int api_connect_or_start(struct api_conn *c)
{
	int r = api_connect(c);
	if (r == 0 || (r != -ECONNREFUSED && r != -ENOENT))
		return r;

	_cleanup_free_ char *home = NULL, *rundir = NULL;
	(void)capsem_home(&home);
	if (!home || asprintf(&rundir, "%s/run", home) < 0)
		return -ENOMEM;
	r = mkdir_p(rundir, 0700);
	if (r < 0)
		return r;
	fprintf(stderr, "capsem: starting capsemd\n");

	if (systemd_unit_matches(home)) {
		/* the unit is Type=forking: start returns once the daemon listens */
		char *argv[] = { "systemctl", "--user", "start", "capsemd", NULL };
		if (run_quiet(argv) == 0 && api_connect(c) == 0)
			return 0;
	}
	{
		_cleanup_free_ char *bin =
			find_helper_binary("capsemd", "CAPSEM_DAEMON_BIN", "daemon");
		if (!bin)
			return -ENOEXEC;
		r = spawn_daemon(bin);
		if (r == 0)
			return api_connect(c);
		if (r != -EALREADY)
			return r;
	}
	/* another client started one at the same moment (ours found the home locked): it is
	 * coming up, and its readiness is that other client's to wait for; we can only try
	 * connecting for its start-up time */
	int64_t deadline = now_ms() + API_START_TIMEOUT_MS;
	for (;;) {
		r = api_connect(c);
		if (r == 0 || (r != -ECONNREFUSED && r != -ENOENT) || now_ms() >= deadline)
			return r == 0 || (r != -ECONNREFUSED && r != -ENOENT) ? r : -ETIMEDOUT;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* ---- requests ---- */

int api_send_request(struct api_conn *c, const struct api_req *rq)
{
	_cleanup_free_ char *head = NULL;
	int has_body = rq->content_type != NULL;
	int n = asprintf(&head,
			 "%s %s HTTP/1.1\r\nHost: capsemd\r\nUser-Agent: capsem\r\n"
			 "Accept: application/json\r\n%s%s%s%s%s%s",
			 rq->method, rq->path,
			 rq->upgrade ? "Connection: Upgrade\r\nUpgrade: " : "",
			 rq->upgrade ? rq->upgrade : "", rq->upgrade ? "\r\n" : "",
			 has_body ? "Content-Type: " : "", has_body ? rq->content_type : "",
			 has_body ? "\r\n" : "");
	if (n < 0)
		return -ENOMEM;
	_cleanup_free_ char *full = NULL;
	n = asprintf(&full, "%sContent-Length: %zu\r\n\r\n", head,
		     has_body ? rq->body_len : (size_t)0);
	if (n < 0)
		return -ENOMEM;
	int r = fd_write_all(c->fd, full, (size_t)n);
	if (r < 0)
		return r;
	if (!has_body || !rq->body_len)
		return 0;
	if (rq->body_fd < 0)
		return fd_write_all(c->fd, rq->body, rq->body_len);
	uint8_t tmp[65536];
	size_t left = rq->body_len;
	while (left) {
		ssize_t k = fd_read_some(rq->body_fd, tmp, MIN(left, sizeof(tmp)));
		if (k < 0)
			return (int)k;
		if (k == 0)
			return -EPIPE; /* the file shrank under us */
		r = fd_write_all(c->fd, tmp, (size_t)k);
		if (r < 0)
			return r;
		left -= (size_t)k;
	}
	return 0;
}

/* Read more bytes into rbuf. 1, 0 on EOF, -EINTR (intr_fd readable, only when watch) or -errno. */
static int fill(struct api_conn *c, int watch)
{
	for (;;) {
		struct pollfd pf[2] = { { .fd = c->fd, .events = POLLIN },
					{ .fd = watch ? c->intr_fd : -1, .events = POLLIN } };
		int n = poll(pf, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (pf[0].revents) {
			uint8_t *dst = buf_reserve(&c->rbuf, 65536);
			if (!dst)
				return -EFBIG;
			ssize_t k = read(c->fd, dst, 65536);
			if (k < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (k < 0)
				return negative_errno();
			buf_commit(&c->rbuf, (size_t)k);
			return k > 0;
		}
		if (pf[1].revents)
			return -EINTR;
	}
}

static int body_sink(struct api_response *ret, int out_fd, uint64_t *total, uint64_t max,
		     const uint8_t *p, size_t n)
{
	*total += n;
	if (*total > max)
		return -EFBIG;
	return sink(&ret->body, out_fd, p, n);
}

int api_read_response(struct api_conn *c, const struct api_req *rq, struct api_response *ret)
{
	struct api_response res = {};
	int hl, r;

	/* the head; 1xx interim responses other than 101 are skipped */
	for (;;) {
		hl = api_parse_head((const char *)buf_head(&c->rbuf), buf_len(&c->rbuf), &res.head);
		if (hl < 0)
			return hl;
		if (hl > 0) {
			buf_consume(&c->rbuf, (size_t)hl);
			if (res.head.status >= 100 && res.head.status < 200 &&
			    res.head.status != 101)
				continue;
			break;
		}
		r = fill(c, c->intr_fd >= 0);
		if (r < 0)
			return r;
		if (r == 0)
			return -EPIPE;
	}
	if (res.head.status == 101) {
		*ret = res;
		return 0;
	}

	int ok = res.head.status / 100 == 2;
	int out_fd = ok && rq && rq->out_fd >= 0 ? rq->out_fd : -1;
	uint64_t max = out_fd >= 0 ? (rq->out_max ? rq->out_max : API_MAX_FILE_BODY) : API_MAX_BODY;
	uint64_t total = 0;
	buf_init(&res.body, API_MAX_BODY);

	int no_body = res.head.status == 204 || res.head.status == 304 ||
		      (rq && rq->method && streq(rq->method, "HEAD"));
	if (no_body) {
		/* nothing */
	} else if (res.head.chunked) {
		struct api_chunked ch = {};
		uint64_t wire = 0; /* chunked bytes consumed: bounds a streamed body */
		for (;;) {
			if (buf_len(&c->rbuf)) {
				ssize_t k = api_chunked_feed(&ch, buf_head(&c->rbuf),
							     buf_len(&c->rbuf), &res.body, out_fd);
				if (k < 0) {
					r = k == -ENOBUFS ? -EFBIG : (int)k;
					goto fail;
				}
				buf_consume(&c->rbuf, (size_t)k);
				wire += (uint64_t)k;
				if (wire > max + max / 8 + 65536) {
					r = -EFBIG;
					goto fail;
				}
				if (ch.done)
					break;
			}
			r = fill(c, 0);
			if (r <= 0) {
				r = r < 0 ? r : -EPIPE;
				goto fail;
			}
		}
	} else if (res.head.content_length >= 0) {
		uint64_t left = (uint64_t)res.head.content_length;
		if (left > max) {
			r = -EFBIG;
			goto fail;
		}
		while (left) {
			if (!buf_len(&c->rbuf)) {
				r = fill(c, 0);
				if (r <= 0) {
					r = r < 0 ? r : -EPIPE;
					goto fail;
				}
			}
			size_t k = (size_t)MIN(left, (uint64_t)buf_len(&c->rbuf));
			r = body_sink(&res, out_fd, &total, max, buf_head(&c->rbuf), k);
			if (r < 0)
				goto fail;
			buf_consume(&c->rbuf, k);
			left -= k;
		}
	} else {
		/* no length: the body runs to EOF */
		for (;;) {
			if (buf_len(&c->rbuf)) {
				r = body_sink(&res, out_fd, &total, max, buf_head(&c->rbuf),
					      buf_len(&c->rbuf));
				if (r < 0)
					goto fail;
				buf_consume(&c->rbuf, buf_len(&c->rbuf));
			}
			r = fill(c, 0);
			if (r < 0)
				goto fail;
			if (r == 0)
				break;
		}
		res.head.close = 1;
	}

	if (buf_len(&res.body) && streq(res.head.content_type, "application/json")) {
		json_error_t je;
		res.json = json_loadb((const char *)buf_head(&res.body), buf_len(&res.body),
				      JSON_REJECT_DUPLICATES, &je);
		if (!res.json) {
			r = -EBADMSG;
			goto fail;
		}
	}
	*ret = res;
	return 0;
fail:
	api_response_done(&res);
	return r;
}

int api_request(struct api_conn *c, const struct api_req *rq, struct api_response *ret)
{
	int r = api_send_request(c, rq);
	if (r < 0)
		return r;
	return api_read_response(c, rq, ret);
}

int api_json(struct api_conn *c, const char *method, const char *path, json_t *body,
	     struct api_response *ret)
{
	_cleanup_free_ char *text = NULL;
	struct api_req rq = { .method = method, .path = path, .body_fd = -1, .out_fd = -1 };
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return -ENOMEM;
		rq.content_type = "application/json";
		rq.body = text;
		rq.body_len = strlen(text);
	}
	return api_request(c, &rq, ret);
}

char *api_vm_path(const char *ref, const char *suffix)
{
	static const char hex[] = "0123456789ABCDEF";
	_cleanup_free_ char *e = malloc(strlen(ref) * 3 + 1);
	char *p = NULL, *q = e;
	if (!e)
		return NULL;
	/* every byte but [A-Za-z0-9._~-] is escaped, '/' included: a ref is one path segment */
	for (const unsigned char *s = (const unsigned char *)ref; *s; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '~' || *s == '-') {
			*q++ = (char)*s;
		} else {
			*q++ = '%';
			*q++ = hex[*s >> 4];
			*q++ = hex[*s & 15];
		}
	}
	*q = 0;
	return asprintf(&p, "/vms/%s%s", e, suffix) < 0 ? NULL : p;
}

/* ---- exec ---- */

static json_t *exec_body(const struct api_exec *e)
{
	json_t *argv = json_array(), *env = json_array();
	for (char *const *a = e->argv; argv && a && *a; a++)
		if (json_array_append_new(argv, json_string(*a)) < 0)
			goto oom;
	for (char *const *a = e->env; env && a && *a; a++)
		if (json_array_append_new(env, json_string(*a)) < 0)
			goto oom;
	if (!argv || !env)
		goto oom;
	json_t *b = json_pack("{s:o, s:b, s:o, s:b, s:I}", "argv", argv, "shell", e->shell, "env",
			      env, "tty", e->tty, "timeout_ms", (json_int_t)e->timeout_ms);
	if (b && e->cwd && json_object_set_new(b, "cwd", json_string(e->cwd)) < 0) {
		json_decref(b);
		return NULL;
	}
	if (b && e->tty &&
	    (json_object_set_new(b, "rows", json_integer(e->rows ? e->rows : 24)) < 0 ||
	     json_object_set_new(b, "cols", json_integer(e->cols ? e->cols : 80)) < 0)) {
		json_decref(b);
		return NULL;
	}
	return b;
oom:
	json_decref(argv);
	json_decref(env);
	return NULL;
}

int api_exec_start(struct api_conn *c, const char *ref, const struct api_exec *e,
		   struct api_response *ret)
{
	_cleanup_free_ char *suffix = NULL, *path = NULL, *text = NULL;
	if (asprintf(&suffix, "/exec?via=%s", e->via ? e->via : "api") < 0)
		return -ENOMEM;
	json_t *body = exec_body(e);
	if (body)
		text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	path = api_vm_path(ref, suffix);
	if (!text || !path)
		return -ENOMEM;
	struct api_req rq = { .method = "POST",
			      .path = path,
			      .content_type = "application/json",
			      .body = text,
			      .body_len = strlen(text),
			      .body_fd = -1,
			      .out_fd = -1,
			      .upgrade = "capsem-exec/1" };
	struct api_response res;
	int r = api_request(c, &rq, &res);
	if (r < 0)
		return r;
	*ret = res;
	return res.head.status == 101 ? 0 : -EREMOTE;
}
