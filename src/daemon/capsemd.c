/* capsemd - the Capsem daemon: owns every VM and serves docs/API.md on
 * $CAPSEM_HOME/run/capsemd.sock.
 *
 * Start-up: take run/capsemd.lock (flock: one daemon per home; a second one exits with a clear
 * message), detach unless --foreground (double fork + setsid, logs to run/capsemd.log; the
 * first process exits 0 only once the socket is listening, so a caller can connect right after,
 * and says when seccomp killed the daemon before that), write run/capsemd.pid (a pid file left
 * by a daemon that did not end cleanly is reported first: killed by seccomp?), confine itself
 * (dconfine.c: no_new_privs, Landlock, its seccomp allow-list), replace a stale socket, recover
 * the registry (re-adopting supervisors that outlived a previous daemon), then serve. SIGTERM/SIGINT end the daemon but not the VMs:
 * each capsem-vm runs in its own session and is re-adopted by the next daemon.
 *
 * Trust boundary: the API socket (0600 in a 0700 directory, and every peer's uid checked) and
 * everything under $CAPSEM_HOME. One thread runs the libuv loop; blocking work (image checks,
 * mkfs) runs on libuv's worker pool.
 */
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <uv.h>

#include "fetch.h"
#include "updcheck.h"
#include "config.h"
#include "api.h"
#include "cfprobe.h"
#include "dconfine.h"
#include "fdutil.h"
#include "apiclient.h"
#include "home.h"
#include "httpd.h"
#include "ledgerapi.h"
#include "log.h"
#include "snapapi.h"
#include "uiapi.h"
#include "macro.h"
#include "parse.h"
#include "scfilter.h"
#include "unixsock.h"
#include "vmctl.h"
#include "vmproc.h"

struct opts {
	int gateway_port; /* -1: only on request (POST /gateway) */
	char *home;
	int foreground;
	enum log_level level;
};

static uv_loop_t loop;
static struct httpd *server;
static char *sock_path, *pid_path;

static void help(void)
{
	printf("Usage: capsemd [OPTIONS]\n"
	       "\n"
	       "The Capsem daemon: owns the VMs and serves the API (docs/API.md) over\n"
	       "$CAPSEM_HOME/run/capsemd.sock. Normally started on demand by capsem.\n"
	       "\n"
	       "  --home DIR           state directory (default $CAPSEM_HOME, else ~/.capsem)\n"
	       "  --foreground         stay attached, log to stderr (systemd, debugging)\n"
	       "  --gateway-port N     start the web gateway (capsem-gateway) now on port N\n"
	       "                       (0: any); else on the first POST /gateway (capsem ui)\n"
	       "  --log-level LEVEL    error, warn, info (default) or debug\n"
	       "  -h, --help           this text\n"
	       "\n"
	       "Without --foreground the daemon detaches, logs to <home>/run/capsemd.log, and\n"
	       "the starting process exits 0 once the API socket accepts connections, 3 when\n"
	       "another daemon already serves this home, 1 when start-up failed.\n"
	       "Environment: CAPSEM_IMAGES_DIR (default <home>/images; the package's images in\n"
	       "$CAPSEM_SYSTEM_IMAGES_DIR, default " CAPSEM_DATADIR "/images, come after it),\n"
	       "CAPSEM_VM_BIN.\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { ARG_HOME = 256, ARG_FG, ARG_LEVEL, ARG_GW };
	static const struct option opts[] = { { "home", required_argument, NULL, ARG_HOME },
					      { "foreground", no_argument, NULL, ARG_FG },
					      { "log-level", required_argument, NULL, ARG_LEVEL },
					      { "gateway-port", required_argument, NULL, ARG_GW },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case ARG_HOME:
			free(o->home);
			o->home = strdup(optarg);
			if (!o->home)
				return log_oom();
			break;
		case ARG_FG:
			o->foreground = 1;
			break;
		case ARG_GW: {
			uint32_t p;
			if (parse_u32(optarg, &p) < 0 || p > 65535)
				return log_error("--gateway-port: expected 0..65535"), -EINVAL;
			o->gateway_port = (int)p;
			break;
		}
		case ARG_LEVEL:
			if (streq(optarg, "error"))
				o->level = LOG_LVL_ERROR;
			else if (streq(optarg, "warn"))
				o->level = LOG_LVL_WARN;
			else if (streq(optarg, "info"))
				o->level = LOG_LVL_INFO;
			else if (streq(optarg, "debug"))
				o->level = LOG_LVL_DEBUG;
			else
				return log_error("--log-level: expected error, warn, info or "
						 "debug"),
				       -EINVAL;
			break;
		case 'h':
			help();
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		return log_error("unexpected argument '%s' (see --help)", argv[optind]), -EINVAL;
	return 0;
}

/* Take the lock or explain who has it. Returns the lock fd or -errno. */
static int take_lock(const char *run_dir)
{
	_cleanup_free_ char *lp = NULL;
	if (asprintf(&lp, "%s/capsemd.lock", run_dir) < 0)
		return log_oom();
	int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return log_error_errno(negative_errno(), "cannot open %s", lp);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = negative_errno();
		safe_close(fd);
		if (r == -EWOULDBLOCK) {
			_cleanup_free_ char *pid = NULL;
			read_file_small(pid_path, 64, &pid, NULL);
			if (pid)
				pid[strcspn(pid, "\n")] = 0;
			log_error("another capsemd already serves %s (pid %s); not starting a "
				  "second one",
				  run_dir, pid && *pid ? pid : "unknown");
			return -EBUSY;
		}
		return log_error_errno(r, "cannot lock %s", lp);
	}
	return fd;
}

/* The daemon died before it was ready (the first process's view): reap it (it was reparented
 * to us, the subreaper) and, when seccomp killed it, say so on stderr and in its log with the
 * syscall's name where the kernel's log can be read. */
static void report_startup_death(pid_t middle, const char *log_path)
{
	int st = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &st, 0)) != -1 || errno == EINTR) {
		if (pid <= 0 || pid == middle)
			continue;
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
			continue;
		char how[256], line[400];
		scf_describe_sigsys((int)pid, how, sizeof(how));
		int n = snprintf(line, sizeof(line), "capsemd: the daemon (pid %d) was %s\n",
				 (int)pid, how);
		fputs(line, stderr);
		_cleanup_close_ int lf =
			open(log_path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
		if (lf >= 0 && n > 0)
			(void)fd_write_all(lf, line, MIN((size_t)n, sizeof(line) - 1));
	}
}

/* Detach: the caller's process waits on a pipe for the daemon's "ready" byte. Returns the write
 * end of that pipe in the daemon (the grandchild); the original process never returns. It is
 * the daemon's subreaper until then, so that a daemon dead before it was ready is its child
 * and how it died can be told (report_startup_death). */
static int daemonize(const char *log_path)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return log_error_errno(negative_errno(), "pipe");
	(void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	pid_t pid = fork();
	if (pid < 0)
		return log_error_errno(negative_errno(), "fork");
	if (pid > 0) {
		char c = 0;
		safe_close(p[1]);
		ssize_t k = fd_read_some(p[0], &c, 1);
		if (k == 1 && c == 'R')
			_exit(0);
		report_startup_death(pid, log_path);
		fprintf(stderr, "capsemd: start-up failed; see %s\n", log_path);
		_exit(1);
	}
	safe_close(p[0]);
	setsid();
	pid = fork();
	if (pid < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int lf = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (nul >= 0)
		dup2(nul, 0);
	if (lf >= 0) {
		dup2(lf, 1);
		dup2(lf, 2);
	}
	safe_close(nul);
	safe_close(lf);
	if (chdir("/") < 0)
		_exit(1);
	return p[1];
}

/* The pid file of a daemon that did not end cleanly (a clean end removes it): when seccomp
 * killed it, the log says so, with the syscall's name where the kernel's log can be read. */
static void report_previous_death(void)
{
	_cleanup_free_ char *text = NULL;
	uint32_t pid;
	if (read_file_small(pid_path, 64, &text, NULL) < 0)
		return;
	text[strcspn(text, "\n")] = 0;
	if (parse_u32(text, &pid) < 0 || pid == 0 || pid == (uint32_t)getpid() ||
	    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
		return;
	long nr = scf_sigsys_find((int)pid, "capsemd", 0);
	const char *name = scf_syscall_name(nr);
	if (name)
		log_warn("the previous capsemd (pid %u) was killed by seccomp (SIGSYS): syscall %s",
			 pid, name);
	else
		log_warn("the previous capsemd (pid %u) did not exit cleanly%s", pid,
			 nr == -ENOENT ? ""
				       : " (the kernel's log, which would say whether seccomp "
					 "killed it, cannot be read)");
}

static void on_signal(uv_signal_t *s, int signum)
{
	log_info("%s: shutting down (VMs keep running)", strsignal(signum));
	httpd_free(server);
	server = NULL;
	unlink(sock_path);
	unlink(pid_path);
	uv_stop(s->loop);
}

int main(int argc, char **argv)
{
	struct opts o = { .level = LOG_LVL_INFO, .gateway_port = -1 };
	_cleanup_free_ char *run_dir = NULL, *images = NULL, *vm_bin = NULL, *log_path = NULL;
	_cleanup_close_ int lock_fd = -1;
	int ready_fd = -1, r;

	log_setup("capsemd", LOG_LVL_INFO);
	r = parse_args(argc, argv, &o);
	if (r != 0)
		return r > 0 ? 0 : 2;
	log_setup("capsemd", o.level);
	log_setup_from_env();
	if (!o.home && capsem_home(&o.home) < 0)
		return log_error("cannot find the home directory: set CAPSEM_HOME or --home"), 1;
	r = mkdir_p(o.home, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create %s", o.home), 1;
	char *abs = realpath(o.home, NULL);
	if (!abs)
		return log_error_errno(negative_errno(), "%s", o.home), 1;
	free(o.home);
	o.home = abs;
	if (asprintf(&run_dir, "%s/run", o.home) < 0 ||
	    asprintf(&sock_path, "%s/capsemd.sock", run_dir) < 0 ||
	    asprintf(&pid_path, "%s/capsemd.pid", run_dir) < 0 ||
	    asprintf(&log_path, "%s/capsemd.log", run_dir) < 0)
		return log_oom(), 1;
	r = mkdir_p(run_dir, 0700);
	if (r < 0 || chmod(run_dir, 0700) < 0)
		return log_error_errno(r < 0 ? r : negative_errno(), "cannot create %s", run_dir),
		       1;
	if (setenv("CAPSEM_HOME", o.home, 1) < 0 || capsem_images_dir(&images) < 0)
		images = NULL;
	vm_bin = find_helper_binary("capsem-vm", "CAPSEM_VM_BIN", "vm");
	if (!images)
		return log_oom(), 1;
	if (!vm_bin)
		return log_error("cannot find the capsem-vm binary (set CAPSEM_VM_BIN)"), 1;

	lock_fd = take_lock(run_dir);
	if (lock_fd < 0)
		return lock_fd == -EBUSY ? CAPSEMD_EXIT_RUNNING : 1;
	if (!o.foreground) {
		ready_fd = daemonize(log_path);
		if (ready_fd < 0)
			return 1;
	}

	report_previous_death();
	_cleanup_free_ char *pid_text = NULL;
	if (asprintf(&pid_text, "%d\n", (int)getpid()) < 0 ||
	    write_file_atomic(pid_path, pid_text, strlen(pid_text), 0644) < 0)
		log_warn("cannot write %s", pid_path);

	/* before any thread exists: Landlock applies to the calling thread and its descendants */
	if (dconfine_self(o.home, images, vm_bin) < 0)
		return 1;
	cfprobe_run("capsemd");

	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigaction(SIGPIPE, &sa, NULL);
	uv_loop_init(&loop);
	/* libcurl's global state, before any thread: the periodic update check's downloads */
	struct updcheck *upd = NULL;
	if (fetch_init() < 0 || updcheck_start(&loop, o.home, &upd) < 0)
		log_warn("the periodic update check cannot run (libcurl or memory)");

	struct vmctl *vms = NULL;
	struct vmctl_config cfg = { .home = o.home, .images_dir = images, .vm_bin = vm_bin };
	r = vmctl_new(&loop, &cfg, &vms);
	if (r < 0)
		return log_error_errno(r, "cannot set up the VM registry in %s", o.home), 1;
	r = vmctl_recover(vms);
	if (r < 0)
		log_warn_errno(r, "registry recovery failed");

	int lfd = unix_listen(sock_path, 128);
	if (lfd < 0)
		return log_error_errno(lfd, "cannot listen on %s", sock_path), 1;
	struct api api = { .loop = &loop, .vms = vms };
	ledgerapi_init(&api);
	if (snapapi_init(&api) < 0)
		return 1;
	uiapi_init(&api, o.gateway_port);
	r = httpd_new(&loop, lfd, api_handle, api_body_cap, &api, &server);
	if (r < 0)
		return log_error_errno(r, "cannot serve %s", sock_path), 1;

	uv_signal_t sigs[3];
	int signums[] = { SIGTERM, SIGINT, SIGHUP };
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
		uv_signal_init(&loop, &sigs[i]);
		uv_signal_start(&sigs[i], on_signal, signums[i]);
		uv_unref((uv_handle_t *)&sigs[i]);
	}
	log_info("capsemd %s serving %s (%zu VMs, images in %s)", CAPSEM_VERSION, sock_path,
		 vmctl_count(vms), images);
	if (ready_fd >= 0) {
		(void)fd_write_all(ready_fd, "R", 1);
		safe_close(ready_fd);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	/* the VMs keep running; the process exit releases everything else */
	free(o.home);
	free(sock_path);
	free(pid_path);
	return 0;
}
