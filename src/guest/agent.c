/* agent.c - capsem-agent main process: exec listener, control channel, session reaping.
 *
 * Started by capsem-init (PID 1) as root. It listens on vsock port PROTO_PORT_EXEC first, then
 * connects to the host's control port (PROTO_HOST_CID:PROTO_PORT_CONTROL, a few quick retries)
 * and sends PROTO_HELLO with the boot stages capsem-init passed on its command line plus its own.
 * On the control connection it applies PROTO_BOOT_CONFIG (wall clock, hostname and /etc/hosts,
 * the Capsem CA certificate, the environment for execs) and forwards PROTO_SHUTDOWN to PID 1
 * (SIGUSR2, busybox's poweroff convention). Each accepted exec connection is served by a forked
 * session process (session.c), so concurrent execs share nothing; this process only reaps them.
 * In a guest, while the control connection is up and BOOT_CONFIG has not arrived yet (at most
 * AGENT_CONFIG_WAIT_MS), exec connections wait in the listen backlog, so that no command starts
 * without the boot environment.
 *
 * The CA certificate (when the host sends one) is written to AGENT_CA_LOCAL and AGENT_CA_FILE and
 * added to the system bundle AGENT_CA_BUNDLE (created when the root has none, e.g. the minimal
 * image; rewritten atomically; not added twice, so a persistent overlay does not grow it every
 * boot). Execs then get SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE = the bundle (these
 * replace a program's trust store, so they must name the system roots too: not every connection
 * is intercepted) and NODE_EXTRA_CA_CERTS = the CA alone (Node adds it to its built-in roots).
 * Every exec's environment: the variables of /etc/environment (read once, when BOOT_CONFIG
 * arrives; envfile.h), then these, then the host's entries, then the exec's own (each may
 * override the ones before).
 *
 * Exec commands run in the guest's workload cgroup, each in its own group workload/exec-<id>
 * (cgroup.h; ids count up from 1 for this boot), which its session process makes and removes; the
 * agent and the session processes stay on the system side, so they can fork and serve
 * connections while the workload is at its task or memory limit. When an exec without a timeout
 * leaves processes running (its group cannot be removed when its session ends), the agent watches
 * the group's cgroup.events (inotify) and removes the group once it is empty. When the cgroup
 * tree is not there (capsem-init could not build it) the agent says so once and runs execs
 * without cgroups.
 *
 * Trust boundary: the host is trusted for nothing beyond the protocol. Control frames go through
 * the bounded frame reader and the proto decoders; exec connections are handed to session
 * processes unread. Single-threaded, one poll(2) loop; no blocking call after startup.
 *
 * Test mode: --listen-unix PATH serves exec sessions on a Unix socket and --control-unix PATH
 * connects the control channel to one (or --no-control skips it), so the same session code runs
 * on a development host. BOOT_CONFIG and SHUTDOWN only touch the system when the control channel
 * is the real vsock one, or with --guest (capsem-init's agent when the host channel is
 * capsem-chan's Unix sockets); otherwise they are logged (and SHUTDOWN makes the agent exit).
 */
#include "agent.h"

#include <fcntl.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <linux/random.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#include "bootargs.h"
#include "cgroup.h"
#include "clockutil.h"
#include "config.h"
#include "envfile.h"
#include "fdutil.h"
#include "frameio.h"
#include "log.h"
#include "macro.h"
#include "netsetup.h"
#include "proto.h"
#include "session.h"
#include "spawn.h"
#include "stages.h"
#include "strv.h"

#define AGENT_MAX_SESSIONS 1024u
#define AGENT_MAX_LINGER 4096u	/* exec cgroups kept by processes left running, watched */
#define AGENT_CTRL_ATTEMPTS 60u /* about 14 s in all */
#define AGENT_CTRL_OUT_CAP (64u * 1024u)
#define AGENT_CONFIG_WAIT_MS 3000u
#define AGENT_CA_LOCAL "/usr/local/share/ca-certificates/capsem-ca.crt"
#define AGENT_CA_FILE "/etc/capsem/ca.pem"
#define AGENT_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define AGENT_BUNDLE_MAX (16u << 20)

enum ctrl_state {
	CTRL_OFF,	 /* not wanted, given up, or closed by the host */
	CTRL_RETRY,	 /* waiting until retry_at */
	CTRL_CONNECTING, /* non-blocking connect in progress */
	CTRL_UP,
};

/* A session process and its exec cgroup's id (0 = none). */
struct agent_session {
	pid_t pid;
	uint64_t exec_id;
};

/* An exec cgroup that outlived its session: removed when its cgroup.events says it is empty. */
struct agent_linger {
	int wd;
	uint64_t exec_id;
};

struct agent {
	int listen_fd;
	int sig_fd;
	unsigned n_sessions;
	struct agent_session sessions[AGENT_MAX_SESSIONS];
	int cgroups;	   /* execs run in workload/exec-<id> */
	uint64_t exec_seq; /* the last exec id handed out */
	int ino_fd;	   /* inotify on the lingering groups' cgroup.events, or -1 */
	struct agent_linger *linger;
	size_t n_linger;
	struct stages stages;
	const char *listen_unix;  /* NULL = vsock */
	const char *control_unix; /* NULL = vsock */
	int apply_system;	  /* control is the real vsock channel of a guest */
	int quit;
	char **boot_env;	    /* environment entries for every exec (BOOT_CONFIG) */
	int config_done;	    /* BOOT_CONFIG applied */
	uint64_t config_wait_until; /* CLOCK_MONOTONIC ms: hold execs until then at most */

	enum ctrl_state ctrl;
	int ctrl_fd;
	unsigned ctrl_attempts;
	int ctrl_was_up;	/* reconnecting after a lost connection: never give up */
	uint64_t ctrl_retry_at; /* CLOCK_MONOTONIC ms */
	struct frame_reader ctrl_rd;
	struct buf ctrl_out;
};

/* Unix socket address for path; -ENAMETOOLONG if it does not fit. */
static int unix_addr(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	memcpy(sa->sun_path, path, n + 1);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

static int agent_listen(struct agent *a)
{
	_cleanup_close_ int fd = -1;
	union {
		struct sockaddr sa;
		struct sockaddr_un un;
		struct sockaddr_vm vm;
	} addr;
	socklen_t len;
	int r;

	if (a->listen_unix) {
		struct stat st;
		r = unix_addr(a->listen_unix, &addr.un, &len);
		if (r < 0)
			return r;
		/* its directory: capsem-chan, started beside us, may not have made it yet */
		char dir[sizeof(addr.un.sun_path)];
		snprintf(dir, sizeof(dir), "%s", a->listen_unix);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			(void)mkdir_p(dir, 0755);
		}
		/* a stale socket from an earlier run; never remove anything else */
		if (lstat(a->listen_unix, &st) == 0 && S_ISSOCK(st.st_mode))
			(void)unlink(a->listen_unix);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	} else {
		addr.vm = (struct sockaddr_vm){
			.svm_family = AF_VSOCK,
			.svm_cid = VMADDR_CID_ANY,
			.svm_port = PROTO_PORT_EXEC,
		};
		len = sizeof(addr.vm);
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	}
	if (fd < 0)
		return negative_errno();
	if (bind(fd, &addr.sa, len) < 0 || listen(fd, 128) < 0)
		return negative_errno();
	a->listen_fd = TAKE_FD(fd);
	return 0;
}

/* ---- control channel ---- */

static void ctrl_close(struct agent *a)
{
	a->ctrl_fd = safe_close(a->ctrl_fd);
	frame_reader_done(&a->ctrl_rd);
	buf_done(&a->ctrl_out, 0);
	a->ctrl = CTRL_OFF;
}

static void ctrl_retry_later(struct agent *a)
{
	a->ctrl_fd = safe_close(a->ctrl_fd);
	if (++a->ctrl_attempts >= AGENT_CTRL_ATTEMPTS && !a->ctrl_was_up) {
		log_warn("giving up on the control connection after %u attempts", a->ctrl_attempts);
		a->ctrl = CTRL_OFF;
		return;
	}
	/* 5, 10, 20, ... ms, then every 250 ms */
	unsigned shift = MIN(a->ctrl_attempts - 1, 6u);
	a->ctrl_retry_at = clock_ms(CLOCK_MONOTONIC) + MIN(5u << shift, 250u);
	a->ctrl = CTRL_RETRY;
}

/* The host went away. In a guest that is a save (the channel mux paused, docs/PROTOCOL.md §10)
 * or the VM's end: connect again, for as long as it takes, and say HELLO to whoever restores
 * the VM (it sends the wall clock again). Outside a guest the connection just ends. */
static void ctrl_lost(struct agent *a)
{
	ctrl_close(a);
	if (!a->apply_system)
		return;
	a->config_done = 0; /* the next host sends its own: execs wait for it */
	a->ctrl_was_up = 1;
	a->ctrl_attempts = 0;
	ctrl_retry_later(a);
}

static int ctrl_send_hello(struct agent *a)
{
	struct proto_hello h = { .version = PROTO_VERSION };
	struct utsname u;

	(void)stages_mark(&a->stages, "agent_ready");
	snprintf(h.agent_version, sizeof(h.agent_version), "%s", CAPSEM_VERSION);
	if (uname(&u) == 0) {
		size_t n = strnlen(u.release, sizeof(h.kernel_release) - 1);
		memcpy(h.kernel_release, u.release, n);
		h.kernel_release[n] = 0;
	}
	h.n_stages = a->stages.n;
	memcpy(h.stages, a->stages.s, sizeof(h.stages[0]) * a->stages.n);
	return proto_hello_encode(&h, &a->ctrl_out);
}

static void ctrl_connected(struct agent *a)
{
	int r;
	a->ctrl = CTRL_UP;
	a->config_wait_until = clock_ms(CLOCK_MONOTONIC) + AGENT_CONFIG_WAIT_MS;
	frame_reader_init(&a->ctrl_rd);
	buf_init(&a->ctrl_out, AGENT_CTRL_OUT_CAP);
	r = ctrl_send_hello(a);
	if (r < 0) {
		log_error_errno(r, "cannot encode HELLO");
		ctrl_close(a);
		return;
	}
	log_debug("control connection up after %u retries", a->ctrl_attempts);
}

static void ctrl_connect(struct agent *a)
{
	union {
		struct sockaddr sa;
		struct sockaddr_un un;
		struct sockaddr_vm vm;
	} addr;
	socklen_t len;
	int r;

	if (a->control_unix) {
		r = unix_addr(a->control_unix, &addr.un, &len);
		if (r < 0) {
			log_error_errno(r, "bad control socket path");
			a->ctrl = CTRL_OFF;
			return;
		}
		a->ctrl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	} else {
		addr.vm = (struct sockaddr_vm){
			.svm_family = AF_VSOCK,
			.svm_cid = PROTO_HOST_CID,
			.svm_port = PROTO_PORT_CONTROL,
		};
		len = sizeof(addr.vm);
		a->ctrl_fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	}
	if (a->ctrl_fd < 0) {
		log_debug_errno(negative_errno(), "control socket");
		ctrl_retry_later(a);
		return;
	}
	if (connect(a->ctrl_fd, &addr.sa, len) == 0) {
		ctrl_connected(a);
		return;
	}
	if (errno == EINPROGRESS) {
		a->ctrl = CTRL_CONNECTING;
		return;
	}
	log_debug_errno(negative_errno(), "control connect");
	ctrl_retry_later(a);
}

static void ctrl_connect_done(struct agent *a)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(a->ctrl_fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == 0) {
		ctrl_connected(a);
		return;
	}
	log_debug_errno(-err, "control connect");
	ctrl_retry_later(a);
}

static int hostname_ok(const char *h)
{
	if (!*h || *h == '-' || *h == '.')
		return 0;
	for (; *h; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		      (*h >= '0' && *h <= '9') || *h == '-' || *h == '.'))
			return 0;
	return 1;
}

/* Add pem to the bundle at path unless it is there already (atomic rewrite). */
static int ca_bundle_add(const char *path, const char *pem, size_t len)
{
	_cleanup_free_ char *old = NULL, *text = NULL;
	size_t n = 0;
	int r = read_file_small(path, AGENT_BUNDLE_MAX, &old, &n);
	if (r < 0 && r != -ENOENT)
		return r;
	if (old && memmem(old, n, pem, len))
		return 0;
	r = mkdir_p("/etc/ssl/certs", 0755);
	if (r < 0)
		return r;
	if (asprintf(&text, "%s%s%s%s", old ? old : "", n && old && old[n - 1] != '\n' ? "\n" : "",
		     pem, len && pem[len - 1] != '\n' ? "\n" : "") < 0)
		return -ENOMEM;
	return write_file_atomic(path, text, strlen(text), 0644);
}

/* The Capsem CA: files, bundle, and the variables that point programs at them. */
static void ctrl_install_ca(struct agent *a, const char *pem)
{
	size_t len = strlen(pem);
	const char *bundle = AGENT_CA_BUNDLE;
	int r;

	if (!strstr(pem, "-----BEGIN CERTIFICATE-----")) {
		log_warn("ignoring a CA certificate from the host that is not PEM");
		return;
	}
	if (!a->apply_system) {
		log_info("boot config: a %zu-byte CA certificate (not installed outside a guest)",
			 len);
		return;
	}
	r = mkdir_p("/usr/local/share/ca-certificates", 0755);
	if (r == 0)
		r = write_file_atomic(AGENT_CA_LOCAL, pem, len, 0644);
	if (r == 0)
		r = mkdir_p("/etc/capsem", 0755);
	if (r == 0)
		r = write_file_atomic(AGENT_CA_FILE, pem, len, 0644);
	if (r < 0) {
		log_warn_errno(r, "cannot install the CA certificate");
		return;
	}
	r = ca_bundle_add(AGENT_CA_BUNDLE, pem, len);
	if (r < 0) {
		log_warn_errno(r, "cannot add the CA certificate to %s", AGENT_CA_BUNDLE);
		bundle = AGENT_CA_FILE; /* the CA alone is still better than nothing */
	}
	if (strv_pushf(&a->boot_env, "SSL_CERT_FILE=%s", bundle) < 0 ||
	    strv_pushf(&a->boot_env, "REQUESTS_CA_BUNDLE=%s", bundle) < 0 ||
	    strv_pushf(&a->boot_env, "CURL_CA_BUNDLE=%s", bundle) < 0 ||
	    strv_push(&a->boot_env, "NODE_EXTRA_CA_CERTS=" AGENT_CA_FILE) < 0)
		log_oom();
}

/* /etc/environment's variables come first in every exec's environment (pam_env gives them to
 * logins; an exec is not a login), so the CA's, the host's and the exec's own come after. */
static void agent_load_environment(struct agent *a)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_strv_free_ char **env = NULL;
	size_t len = 0;
	int r = read_file_small(ENVFILE_PATH, ENVFILE_MAX, &text, &len);
	if (r == -ENOENT)
		return;
	if (r < 0 || (r = envfile_parse(text, len, &env)) < 0) {
		log_warn_errno(r, "cannot read " ENVFILE_PATH "; execs run without it");
		return;
	}
	for (size_t i = 0; env[i]; i++)
		if (strv_push(&a->boot_env, env[i]) < 0)
			log_oom();
}

/* The host's random bytes into the kernel's pool, credited, and the CRNG reseeded from it at
 * once: VMs restored from one saved state start with one RNG state, and must not give the
 * same bytes. */
static void ctrl_reseed(struct agent *a, const uint8_t *seed)
{
	struct {
		int entropy_count, buf_size;
		uint8_t buf[PROTO_BOOT_SEED_LEN];
	} e = { .entropy_count = PROTO_BOOT_SEED_LEN * 8, .buf_size = PROTO_BOOT_SEED_LEN };
	memcpy(e.buf, seed, sizeof(e.buf));
	if (!a->apply_system)
		return;
	_cleanup_close_ int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &e) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
		log_warn_errno(negative_errno(), "cannot reseed the kernel's RNG");
	explicit_wipe(&e, sizeof(e));
}

static void ctrl_boot_config(struct agent *a, const struct proto_boot_config *c)
{
	if (c->has_seed)
		ctrl_reseed(a, c->seed);
	if (c->unix_time_ns) {
		struct timespec ts = {
			.tv_sec = (time_t)(c->unix_time_ns / 1000000000u),
			.tv_nsec = (long)(c->unix_time_ns % 1000000000u),
		};
		if (!a->apply_system)
			log_info("boot config: clock %lld.%09ld (not applied outside a guest)",
				 (long long)ts.tv_sec, ts.tv_nsec);
		else if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			log_warn_errno(negative_errno(), "cannot set the clock");
	}
	if (c->hostname[0]) {
		if (!hostname_ok(c->hostname))
			log_warn("ignoring an invalid hostname from the host");
		else if (!a->apply_system)
			log_info("boot config: hostname %s (not applied outside a guest)",
				 c->hostname);
		else if (sethostname(c->hostname, strlen(c->hostname)) < 0)
			log_warn_errno(negative_errno(), "cannot set the hostname");
		else if (netsetup_write_hosts(c->hostname) < 0)
			log_warn("cannot write /etc/hosts or /etc/hostname");
	}
	/* every BOOT_CONFIG replaces the last one's environment: after a restore from a saved
	 * state the VM is another one (its CAPSEM_VM_ID, ...) */
	strv_free(a->boot_env);
	a->boot_env = NULL;
	a->config_done = 1;
	if (a->apply_system)
		agent_load_environment(a);
	if (c->ca_pem && c->ca_pem[0])
		ctrl_install_ca(a, c->ca_pem);
	for (uint32_t i = 0; i < c->envc; i++)
		if (strv_push(&a->boot_env, c->envp[i]) < 0)
			log_oom();
	if (!a->apply_system)
		log_info("boot config: %u environment entries for execs", c->envc);
}

static void ctrl_shutdown(struct agent *a)
{
	if (!a->apply_system) {
		log_info("shutdown requested: exiting (not in a guest)");
		a->quit = 1;
		return;
	}
	log_info("shutdown requested");
	sync();
	if (kill(1, SIGUSR2) < 0)
		log_error_errno(negative_errno(), "cannot ask PID 1 to power off");
}

/* 0, or -EPROTO when the host broke the protocol (the connection is then closed). */
static int ctrl_frames(struct agent *a)
{
	struct frame f;
	struct proto_boot_config c;
	int r;

	while ((r = frame_reader_peek(&a->ctrl_rd, &f)) > 0) {
		switch (f.type) {
		case PROTO_BOOT_CONFIG:
			if (proto_boot_config_decode(f.payload, f.len, &c) < 0)
				return -EPROTO;
			ctrl_boot_config(a, &c);
			proto_boot_config_done(&c);
			break;
		case PROTO_SHUTDOWN:
			if (f.len != 0)
				return -EPROTO;
			ctrl_shutdown(a);
			break;
		default:
			log_debug("ignoring control frame type %u", f.type);
			break;
		}
		frame_reader_consume(&a->ctrl_rd, &f);
	}
	return r < 0 ? -EPROTO : 0;
}

static void ctrl_event(struct agent *a, short revents)
{
	if (a->ctrl == CTRL_CONNECTING) {
		ctrl_connect_done(a);
		return;
	}
	if (revents & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t k = frame_reader_fill(&a->ctrl_rd, a->ctrl_fd);
		if (k == 0) {
			log_info("the host closed the control connection");
			ctrl_lost(a);
			return;
		}
		if (k < 0 && k != -EAGAIN) {
			log_warn_errno((int)k, "control connection");
			ctrl_lost(a);
			return;
		}
		if (ctrl_frames(a) < 0) {
			log_warn("protocol error on the control connection; closing it");
			ctrl_close(a);
			return;
		}
	}
	if (a->ctrl == CTRL_UP) {
		int r = buf_flush_fd(&a->ctrl_out, a->ctrl_fd);
		if (r < 0 && r != -EAGAIN) {
			log_warn_errno(r, "control connection");
			ctrl_lost(a);
		}
	}
}

/* ---- exec cgroups ---- */

/* The cgroup tree from capsem-init is there: use it (only in a guest). */
static void agent_cgroups_init(struct agent *a)
{
	if (!a->apply_system)
		return;
	int r = cgroup_check();
	if (r < 0) {
		log_warn_errno(r, "no workload cgroup: exec commands run without limits");
		return;
	}
	a->cgroups = 1;
	a->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->ino_fd < 0)
		log_debug_errno(negative_errno(), "inotify: exec cgroups left busy stay");
}

static void linger_drop(struct agent *a, size_t i)
{
	a->linger[i] = a->linger[--a->n_linger];
}

/* A session is over: remove its exec group, or watch it until what is left in it exits. */
static void agent_exec_done(struct agent *a, uint64_t id)
{
	char path[128];
	int r = cgroup_exec_remove(id);
	if (r != -EBUSY || a->ino_fd < 0)
		return;
	if (a->n_linger >= AGENT_MAX_LINGER) {
		log_debug("too many exec cgroups left busy: not watching exec-%llu",
			  (unsigned long long)id);
		return;
	}
	if (!a->linger) {
		a->linger = calloc(AGENT_MAX_LINGER, sizeof(*a->linger));
		if (!a->linger) {
			log_oom();
			return;
		}
	}
	cgroup_exec_path(id, "cgroup.events", path, sizeof(path));
	int wd = inotify_add_watch(a->ino_fd, path, IN_MODIFY);
	if (wd < 0) {
		log_debug_errno(negative_errno(), "inotify on %s", path);
		return;
	}
	/* it may have emptied before the watch was there */
	if (cgroup_exec_remove(id) != -EBUSY) {
		(void)inotify_rm_watch(a->ino_fd, wd);
		return;
	}
	a->linger[a->n_linger++] = (struct agent_linger){ .wd = wd, .exec_id = id };
}

/* cgroup.events of a lingering group changed: remove the groups that are empty now. */
static void agent_linger_event(struct agent *a)
{
	union {
		struct inotify_event ev;
		char bytes[4096];
	} u;
	for (;;) {
		ssize_t k = read(a->ino_fd, u.bytes, sizeof(u.bytes));
		if (k <= 0)
			return;
		for (size_t off = 0; off + sizeof(struct inotify_event) <= (size_t)k;) {
			const struct inotify_event *ev = (const void *)(u.bytes + off);
			off += sizeof(*ev) + ev->len;
			for (size_t i = 0; i < a->n_linger; i++) {
				if (a->linger[i].wd != ev->wd)
					continue;
				int r = (ev->mask & IN_IGNORED)
						? -ENOENT
						: cgroup_exec_remove(a->linger[i].exec_id);
				if (r == -EBUSY)
					break;
				if (!(ev->mask & IN_IGNORED))
					(void)inotify_rm_watch(a->ino_fd, ev->wd);
				linger_drop(a, i);
				break;
			}
		}
	}
}

/* ---- exec sessions ---- */

static void agent_accept(struct agent *a)
{
	for (;;) {
		_cleanup_close_ int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn_errno(negative_errno(), "accept");
			return;
		}
		if (a->n_sessions >= AGENT_MAX_SESSIONS) {
			(void)session_reject(fd, EAGAIN, "too many concurrent exec sessions");
			continue;
		}
		uint64_t id = a->cgroups ? ++a->exec_seq : 0;
		pid_t pid = fork();
		if (pid < 0) {
			int r = negative_errno();
			(void)session_reject(fd, -r, "cannot fork an exec session");
			continue;
		}
		if (pid == 0) {
			/* the session process: keep only the connection */
			safe_close(a->listen_fd);
			safe_close(a->sig_fd);
			safe_close(a->ctrl_fd);
			safe_close(a->ino_fd);
			_exit(session_run(TAKE_FD(fd), a->boot_env, id) < 0 ? 1 : 0);
		}
		a->sessions[a->n_sessions++] = (struct agent_session){ .pid = pid, .exec_id = id };
	}
}

static void agent_reap(struct agent *a)
{
	struct signalfd_siginfo si;
	while (read(a->sig_fd, &si, sizeof(si)) == sizeof(si))
		;
	for (;;) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p <= 0) {
			if (p < 0 && errno == EINTR)
				continue;
			return;
		}
		for (unsigned i = 0; i < a->n_sessions; i++) {
			if (a->sessions[i].pid != p)
				continue;
			uint64_t id = a->sessions[i].exec_id;
			a->sessions[i] = a->sessions[--a->n_sessions];
			if (id)
				agent_exec_done(a, id);
			break;
		}
	}
}

/* ---- main ---- */

enum { A_LISTEN, A_SIG, A_CTRL, A_CG, A_N };

/* Execs may start: BOOT_CONFIG applied, or no control connection to bring one, or waited long
 * enough. Otherwise *timeout is lowered to the end of the wait. */
static int agent_exec_ready(const struct agent *a, int *timeout)
{
	/* (test mode, a Unix control socket, does not wait: its tests drive the order) */
	if (a->config_done || a->ctrl != CTRL_UP || !a->apply_system)
		return 1;
	uint64_t now = clock_ms(CLOCK_MONOTONIC);
	if (now >= a->config_wait_until)
		return 1;
	int left = (int)(a->config_wait_until - now);
	if (*timeout < 0 || left < *timeout)
		*timeout = left;
	return 0;
}

static int agent_loop(struct agent *a)
{
	while (!a->quit) {
		struct pollfd p[A_N];
		int timeout = -1;
		short cev = 0;

		if (a->ctrl == CTRL_RETRY) {
			uint64_t now = clock_ms(CLOCK_MONOTONIC);
			if (now >= a->ctrl_retry_at) {
				ctrl_connect(a);
				continue;
			}
			timeout = (int)(a->ctrl_retry_at - now);
		}
		if (a->ctrl == CTRL_CONNECTING)
			cev = POLLOUT;
		else if (a->ctrl == CTRL_UP)
			cev = (short)(POLLIN | (buf_len(&a->ctrl_out) ? POLLOUT : 0));

		int exec_ready = agent_exec_ready(a, &timeout);
		p[A_LISTEN] =
			(struct pollfd){ .fd = exec_ready ? a->listen_fd : -1, .events = POLLIN };
		p[A_SIG] = (struct pollfd){ .fd = a->sig_fd, .events = POLLIN };
		p[A_CTRL] = (struct pollfd){ .fd = cev ? a->ctrl_fd : -1, .events = cev };
		p[A_CG] = (struct pollfd){ .fd = a->n_linger ? a->ino_fd : -1, .events = POLLIN };
		if (poll(p, A_N, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return log_error_errno(negative_errno(), "poll");
		}
		if (p[A_SIG].revents)
			agent_reap(a);
		if (p[A_CG].revents)
			agent_linger_event(a);
		/* control first: a BOOT_CONFIG that arrived with an exec applies to it */
		if (p[A_CTRL].revents)
			ctrl_event(a, p[A_CTRL].revents);
		if (p[A_LISTEN].revents & POLLIN)
			agent_accept(a);
		else if (p[A_LISTEN].revents & (POLLERR | POLLHUP | POLLNVAL))
			return log_error_errno(-EIO, "the exec listener failed");
	}
	return 0;
}

/* Make sure fds 0-2 are open so no socket or pipe ever lands there (spawn relies on it). */
static void agent_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int n = open("/dev/null", O_RDWR | O_NOCTTY);
		if (n >= 0 && n != fd)
			safe_close(n);
	}
}

static void agent_usage(void)
{
	fprintf(stderr,
		"usage: capsem-agent [--boot-stages LIST] [--listen-unix PATH]\n"
		"                    [--control-unix PATH [--guest] | --no-control] [--debug]\n"
		"  (no options: serve exec on vsock port %u, control to CID %u port %u)\n",
		PROTO_PORT_EXEC, PROTO_HOST_CID, PROTO_PORT_CONTROL);
}

/* An exec without a cwd starts in the workspace when the VM has one (the kernel command line
 * names it and capsem-init mounted it), else in /root. */
static void agent_default_cwd(void)
{
	_cleanup_free_ char *cmdline = NULL;
	struct bootargs b;
	struct stat st;
	if (read_file_small("/proc/cmdline", 4096, &cmdline, NULL) < 0)
		return;
	bootargs_parse(cmdline, &b);
	if (b.workspace[0] && stat(BOOTARGS_WORKSPACE, &st) == 0 && S_ISDIR(st.st_mode))
		spawn_set_default_cwd(BOOTARGS_WORKSPACE);
}

int agent_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "boot-stages", required_argument, NULL, 's' },
		{ "listen-unix", required_argument, NULL, 'l' },
		{ "control-unix", required_argument, NULL, 'c' },
		{ "no-control", no_argument, NULL, 'n' },
		{ "guest", no_argument, NULL, 'g' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct agent a = {
		.listen_fd = -1, .sig_fd = -1, .ctrl_fd = -1, .ino_fd = -1, .ctrl = CTRL_RETRY
	};
	uint64_t t_start = stages_now_usec();
	const char *stage_list = NULL;
	struct sigaction ign = { .sa_handler = SIG_IGN };
	sigset_t chld;
	int c, r, no_control = 0, guest = 0;

	/* capsem-init execs /proc/self/exe, which would make our comm "exe" */
	(void)prctl(PR_SET_NAME, "capsem-agent", 0, 0, 0);
	log_setup("capsem-agent", LOG_LVL_INFO);
	log_setup_from_env();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 's':
			stage_list = optarg;
			break;
		case 'l':
			a.listen_unix = optarg;
			break;
		case 'c':
			a.control_unix = optarg;
			break;
		case 'g':
			guest = 1;
			break;
		case 'n':
			no_control = 1;
			break;
		case 'd':
			log_setup("capsem-agent", LOG_LVL_DEBUG);
			break;
		case 'h':
			agent_usage();
			return 0;
		default:
			agent_usage();
			return 2;
		}
	}
	if (optind != argc || (no_control && a.control_unix)) {
		agent_usage();
		return 2;
	}
	if (stage_list && stages_parse(stage_list, &a.stages) < 0)
		log_warn("ignoring malformed --boot-stages");
	(void)stages_add(&a.stages, "agent_start", t_start);
	a.apply_system = !a.control_unix || guest;
	if (a.apply_system)
		agent_default_cwd();
	if (no_control)
		a.ctrl = CTRL_OFF;

	agent_stdio();
	if (sigaction(SIGPIPE, &ign, NULL) < 0)
		return log_error_errno(negative_errno(), "sigaction"), 1;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
		return log_error_errno(negative_errno(), "sigprocmask"), 1;
	a.sig_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a.sig_fd < 0)
		return log_error_errno(negative_errno(), "signalfd"), 1;

	agent_cgroups_init(&a);
	r = agent_listen(&a);
	if (r < 0) {
		log_error_errno(r, "cannot listen for exec sessions on %s",
				a.listen_unix ? a.listen_unix : "vsock port 5001");
		return 1;
	}
	if (a.ctrl == CTRL_RETRY)
		ctrl_connect(&a);

	r = agent_loop(&a);
	if (a.ctrl != CTRL_OFF)
		ctrl_close(&a);
	safe_close(a.listen_fd);
	safe_close(a.sig_fd);
	safe_close(a.ino_fd);
	free(a.linger);
	strv_free(a.boot_env);
	if (a.listen_unix)
		(void)unlink(a.listen_unix);
	return r < 0 ? 1 : 0;
}
