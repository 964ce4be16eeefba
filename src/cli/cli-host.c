/* cli-host.c - the CLI's library for the host itself: the checks `capsem doctor` and `capsem
 * setup` share (QEMU, accelerator, image, helper binaries, free space, groups), running a
 * helper program, the capsemd systemd user service (install, remove), stopping everything
 * under a home (uninstall --purge) and building an image with capsem-builder.
 *
 * Trust boundary: the host's own state (files under /proc, /dev/kvm, the image directories, the
 * user's systemd configuration, pid files checked against /proc/<pid>/comm before a signal)
 * and the output of helper programs, read into bounded buffers.
 * Helpers run with fork/exec (posix_spawn for the builder), never through a shell. Main thread
 * of the CLI.
 */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clilib.h"
#include "userns.h"
#include "config.h"
#include "fdutil.h"
#include "home.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "parse.h"
#include "strv.h"
#include "vmproc.h"

extern char **environ;

int cli_run_capture(char *const *argv, char *out, size_t cap, int show_err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	pid_t pid = fork();
	if (pid < 0) {
		safe_close(p[0]);
		safe_close(p[1]);
		return negative_errno();
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0)
			dup2(nul, STDIN_FILENO);
		dup2(p[1], STDOUT_FILENO);
		if (!show_err && nul >= 0)
			dup2(nul, STDERR_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	safe_close(p[1]);
	size_t n = 0;
	char tmp[4096];
	for (;;) {
		ssize_t k = fd_read_some(p[0], tmp, sizeof(tmp));
		if (k <= 0)
			break;
		size_t take = MIN((size_t)k, cap > n + 1 ? cap - n - 1 : 0);
		if (out && take) {
			memcpy(out + n, tmp, take);
			n += take;
		}
	}
	if (out && cap)
		out[n] = 0;
	safe_close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- checks ---- */

void cli_check_qemu(struct cli_check *c)
{
	char out[512] = "";
	char *argv[] = { "qemu-system-x86_64", "--version", NULL };
	int r = cli_run_capture(argv, out, sizeof(out), 0);
	char *nl = strchr(out, '\n');
	if (nl)
		*nl = 0;
	if (r == 0 && *out) {
		snprintf(c->detail, sizeof(c->detail), "%s", out);
	} else {
		c->status = CLI_CHECK_FAIL;
		snprintf(c->detail, sizeof(c->detail), "%s",
			 r == 127 ? "qemu-system-x86_64 not found in PATH (install qemu-system-x86)"
				  : "qemu-system-x86_64 --version failed");
	}
}

void cli_check_accel(struct cli_check *c)
{
	_cleanup_free_ char *cpuinfo = NULL;
	int flags = 0;
	if (read_file_small("/proc/cpuinfo", 16u << 20, &cpuinfo, NULL) == 0)
		flags = strstr(cpuinfo, " vmx") || strstr(cpuinfo, " svm");
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int kvm_err = fd < 0 ? errno : 0;
	safe_close(fd);
	if (fd >= 0 && flags) {
		snprintf(c->detail, sizeof(c->detail), "KVM (/dev/kvm usable, CPU virtualization)");
		return;
	}
	c->status = CLI_CHECK_WARN;
	if (fd < 0)
		snprintf(c->detail, sizeof(c->detail),
			 "TCG emulation, 10-50x slower: /dev/kvm cannot be opened (%s)",
			 strerror(kvm_err));
	else
		snprintf(c->detail, sizeof(c->detail),
			 "TCG emulation, 10-50x slower: the CPU has no vmx/svm flag");
}

void cli_check_image(struct cli_check *c, const char *name)
{
	_cleanup_free_ char *dir = cli_image_dir(name), *err = NULL;
	_cleanup_free_ char *m = NULL;
	if (!dir || asprintf(&m, "%s/manifest.json", dir) < 0 || access(m, F_OK) < 0) {
		c->status = CLI_CHECK_FAIL;
		snprintf(c->detail, sizeof(c->detail),
			 "image '%s' not found in %s or %s (run 'capsem setup', or 'make image' in "
			 "a source tree)",
			 name, strempty(dir), capsem_system_images_dir());
		return;
	}
	int r = manifest_verify(dir, &err);
	if (r < 0) {
		c->status = CLI_CHECK_FAIL;
		snprintf(c->detail, sizeof(c->detail), "%s: %s", dir, err ? err : strerror(-r));
		return;
	}
	snprintf(c->detail, sizeof(c->detail), "%s (manifest verified)", dir);
}

void cli_check_binary(struct cli_check *c, const char *name, const char *env, const char *sub)
{
	_cleanup_free_ char *p = find_helper_binary(name, env, sub);
	if (p) {
		snprintf(c->detail, sizeof(c->detail), "%s", p);
	} else {
		c->status = CLI_CHECK_FAIL;
		snprintf(c->detail, sizeof(c->detail), "%s not found (set %s)", name, env);
	}
}

int64_t cli_free_mib(const char *path)
{
	_cleanup_free_ char *p = strdup(path);
	struct statvfs sv;
	if (!p)
		return -ENOMEM;
	/* the nearest existing ancestor */
	while (statvfs(p, &sv) < 0) {
		char *sl = strrchr(p, '/');
		if (!sl || sl == p) {
			if (statvfs("/", &sv) < 0)
				return negative_errno();
			break;
		}
		*sl = 0;
	}
	return (int64_t)((uint64_t)sv.f_bavail * sv.f_frsize >> 20);
}

void cli_check_disk(struct cli_check *c, uint64_t want_mib)
{
	_cleanup_free_ char *home = cli_capsem_home();
	int64_t mib = home ? cli_free_mib(home) : -ENOENT;
	if (mib < 0) {
		c->status = CLI_CHECK_FAIL;
		snprintf(c->detail, sizeof(c->detail), "cannot tell the free space (%s)",
			 strerror((int)-mib));
		return;
	}
	c->status = (uint64_t)mib < 512	       ? CLI_CHECK_FAIL
		    : (uint64_t)mib < want_mib ? CLI_CHECK_WARN
					       : CLI_CHECK_OK;
	snprintf(c->detail, sizeof(c->detail), "%" PRId64 " MiB free in %s%s", mib, home,
		 c->status ? " (VM disks and images need room: see 'capsem setup --help')" : "");
}

/* 1 when the caller is in group name (by name, primary or supplementary) */
static int in_group(const char *name)
{
	struct group *g = getgrnam(name);
	gid_t gs[256];
	if (!g)
		return -ENOENT;
	if (getegid() == g->gr_gid)
		return 1;
	int n = getgroups((int)ELEMENTSOF(gs), gs);
	for (int i = 0; i < n; i++)
		if (gs[i] == g->gr_gid)
			return 1;
	return 0;
}

void cli_check_userns(struct cli_check *c)
{
	if (geteuid() == 0) {
		snprintf(c->detail, sizeof(c->detail), "root: images build as root");
		return;
	}
	char why[400];
	if (userns_check(why, sizeof(why)) == 0) {
		snprintf(c->detail, sizeof(c->detail),
			 "images build as root of a user namespace (subordinate ids of "
			 "/etc/subuid and /etc/subgid)");
		return;
	}
	c->status = CLI_CHECK_WARN;
	snprintf(c->detail, sizeof(c->detail),
		 "the 'debian' image cannot be built as this user: %s", why);
}

void cli_check_groups(struct cli_check *c)
{
	struct stat st;
	if (geteuid() == 0) {
		snprintf(c->detail, sizeof(c->detail), "root: no group needed");
		return;
	}
	if (stat("/dev/kvm", &st) < 0) {
		snprintf(c->detail, sizeof(c->detail), "no /dev/kvm: no group needed for TCG");
		return;
	}
	if (access("/dev/kvm", R_OK | W_OK) == 0) {
		snprintf(c->detail, sizeof(c->detail), "/dev/kvm is usable by this user");
		return;
	}
	struct group *g = getgrgid(st.st_gid);
	const char *gname = g ? g->gr_name : "kvm";
	c->status = CLI_CHECK_WARN;
	if (st.st_gid == 0)
		snprintf(c->detail, sizeof(c->detail),
			 "/dev/kvm belongs to group root (mode %04o): Debian's udev rule gives it "
			 "to group 'kvm'; never join 'root' for it",
			 (unsigned)(st.st_mode & 07777));
	else if (in_group(gname) == 1)
		snprintf(c->detail, sizeof(c->detail),
			 "in group '%s' but /dev/kvm is not usable yet: log in again", gname);
	else
		snprintf(c->detail, sizeof(c->detail),
			 "not in group '%s' (/dev/kvm): sudo adduser %s %s, then log in again",
			 gname, strempty(getenv("USER")), gname);
}

/* ---- the systemd user service ---- */

static int systemctl(const char *a, const char *b, const char *c)
{
	char *argv[] = { "systemctl", "--user", (char *)a, (char *)b, (char *)c, NULL };
	return cli_run_capture(argv, NULL, 0, 0);
}

int cli_systemd_user_available(void)
{
	char *argv[] = { "systemctl", "--user", "is-system-running", NULL };
	char out[64] = "";
	int r = cli_run_capture(argv, out, sizeof(out), 0);
	/* 0 running; 1 degraded/starting/...: a manager answered. Without one: "offline" (1) or
	 * a bus error (1) with nothing useful: tell them apart by the answer's text */
	return r >= 0 && r != 127 && *out && !strstr(out, "offline");
}

char *cli_user_unit_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *h = getenv("HOME");
	char *p = NULL;
	if (xdg && *xdg)
		return asprintf(&p, "%s/systemd/user/capsemd.service", xdg) < 0 ? NULL : p;
	if (!h || !*h)
		return NULL;
	return asprintf(&p, "%s/.config/systemd/user/capsemd.service", h) < 0 ? NULL : p;
}

/* 1 when the package's unit serves this user: it is installed and CAPSEM_HOME is the default */
static int packaged_unit_fits(const char *home)
{
	const char *h = getenv("HOME");
	_cleanup_free_ char *def = NULL;
	if (access(CAPSEM_USER_UNIT_DIR "/capsemd.service", F_OK) < 0 || !h || !*h)
		return 0;
	return asprintf(&def, "%s/.capsem", h) >= 0 && streq(def, home);
}

/* Write the per-user unit for a source tree or a non-default CAPSEM_HOME. */
static int write_user_unit(const char *unit, const char *home)
{
	_cleanup_free_ char *bin = find_helper_binary("capsemd", "CAPSEM_DAEMON_BIN", "daemon");
	_cleanup_free_ char *abs = NULL, *text = NULL, *dir = NULL, *images = NULL;
	if (!bin)
		return log_error("cannot find the capsemd binary (set CAPSEM_DAEMON_BIN)"), -ENOENT;
	abs = realpath(bin, NULL);
	if (!abs)
		return log_error_errno(negative_errno(), "%s", bin);
	if (strpbrk(abs, " \t\n\"'\\%$") || strpbrk(home, " \t\n\"'\\%$"))
		return log_error("paths with spaces or quotes are not supported in the unit (%s, "
				 "%s)",
				 abs, home),
		       -EINVAL;
	const char *img = getenv("CAPSEM_IMAGES_DIR");
	if (img && *img && !strpbrk(img, " \t\n\"'\\%$") &&
	    asprintf(&images, "Environment=CAPSEM_IMAGES_DIR=%s\n", img) < 0)
		return log_oom();
	if (asprintf(&text,
		     "# Written by 'capsem install'; remove it with 'capsem uninstall'.\n"
		     "[Unit]\n"
		     "Description=Capsem daemon: owns the sandbox microVMs\n"
		     "\n"
		     "[Service]\n"
		     "# forking: capsemd's first process exits once the API socket listens, so\n"
		     "# 'systemctl start' returns when the daemon is ready\n"
		     "Type=forking\n"
		     "PIDFile=%s/run/capsemd.pid\n"
		     "Environment=CAPSEM_HOME=%s\n"
		     "%s"
		     "ExecStart=%s\n"
		     "Restart=on-failure\n"
		     "# running VMs (capsem-vm) outlive the daemon and are re-adopted\n"
		     "KillMode=process\n"
		     "\n"
		     "[Install]\n"
		     "WantedBy=default.target\n",
		     home, home, strempty(images), abs) < 0)
		return log_oom();
	if (!(dir = strdup(unit)))
		return log_oom();
	*strrchr(dir, '/') = 0;
	int r = mkdir_p(dir, 0755);
	if (r >= 0)
		r = write_file_atomic(unit, text, strlen(text), 0644);
	if (r < 0)
		return log_error_errno(r, "cannot write %s", unit);
	printf("wrote %s\n", unit);
	return 0;
}

int cli_service_install(void)
{
	_cleanup_free_ char *home = cli_capsem_home(), *unit = cli_user_unit_path();
	if (!home || !unit)
		return log_error("cannot resolve the paths for the unit ($HOME is not set?)"),
		       -ENOENT;
	if (packaged_unit_fits(home)) {
		printf("using the package's unit %s/capsemd.service\n", CAPSEM_USER_UNIT_DIR);
	} else {
		int r = write_user_unit(unit, home);
		if (r < 0)
			return r;
	}
	if (!cli_systemd_user_available() || systemctl("daemon-reload", NULL, NULL) != 0) {
		log_warn(
			"no systemd user manager here (systemctl --user does not answer): the "
			"service is not enabled; capsem starts capsemd on demand instead. In a "
			"login session with systemd, run 'systemctl --user enable --now capsemd'.");
		return 0;
	}
	if (systemctl("enable", "--now", "capsemd") != 0) {
		log_warn("'systemctl --user enable --now capsemd' failed: the service is not "
			 "running; see 'systemctl --user status capsemd'");
		return 0;
	}
	printf("capsemd enabled and started (systemctl --user status capsemd)\n");
	return 1;
}

int cli_service_remove(void)
{
	_cleanup_free_ char *unit = cli_user_unit_path(), *home = cli_capsem_home();
	int have = cli_systemd_user_available();
	if (!unit || !home)
		return log_error("cannot find the unit's path ($HOME is not set)"), -ENOENT;
	int mine = access(unit, F_OK) == 0, pkg = packaged_unit_fits(home);
	if (!mine && !pkg) {
		printf("capsemd is not installed as a service (%s does not exist)\n", unit);
		return 0;
	}
	if (have)
		(void)systemctl("disable", "--now", "capsemd");
	if (mine) {
		if (unlink(unit) < 0)
			return log_error_errno(negative_errno(), "cannot remove %s", unit);
		printf("removed %s\n", unit);
	} else if (have) {
		printf("disabled the package's capsemd user service\n");
	}
	if (have)
		(void)systemctl("daemon-reload", NULL, NULL);
	else if (mine)
		log_warn("systemctl --user is not available here: nothing was stopped or disabled");
	return 1;
}

/* ---- building an image ---- */

char *cli_guest_bin(void)
{
	const char *e = getenv("CAPSEM_GUEST_BIN");
	char self[PATH_MAX];
	char *p = NULL;
	if (e && *e)
		return strdup(e);
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		/* <source>/build/src/cli/capsem -> <source>/build-guest/src/guest/capsem-guest */
		for (int up = 0; up < 4; up++) {
			char *sl = strrchr(self, '/');
			if (!sl)
				break;
			*sl = 0;
		}
		if (asprintf(&p, "%s/build-guest/src/guest/capsem-guest", self) >= 0 &&
		    access(p, X_OK) == 0)
			return p;
		free(p);
		p = NULL;
	}
	/* the package's copy */
	if (asprintf(&p, "%s/capsem-guest", CAPSEM_LIBEXECDIR) >= 0 && access(p, X_OK) == 0)
		return p;
	free(p);
	return NULL;
}

int cli_image_build(const char *config, const char *name, int json)
{
	_cleanup_free_ char *builder =
		find_helper_binary("capsem-builder", "CAPSEM_BUILDER_BIN", "builder");
	_cleanup_free_ char *guest = cli_guest_bin(), *images = NULL, *base = NULL;
	_cleanup_strv_free_ char **a = NULL;
	if (!builder)
		return log_error("cannot find capsem-builder (set CAPSEM_BUILDER_BIN)"), -ENOENT;
	if (capsem_images_dir(&images) < 0)
		return log_oom();
	/* no kernel source (an installed package): the kernel and initramfs of the package's
	 * minimal image, which were built from the same sources */
	if (access("/usr/src/linux-source-6.1.tar.xz", F_OK) < 0 &&
	    asprintf(&base, "%s/minimal", capsem_system_images_dir()) >= 0 &&
	    access(base, F_OK) < 0) {
		free(base);
		base = NULL;
	}
	if (!guest && !base)
		return log_error("cannot find the static guest binary (run 'make guest' or set "
				 "CAPSEM_GUEST_BIN)"),
		       -ENOENT;
	int r = strv_push(&a, builder);
	r |= strv_push(&a, "image");
	r |= strv_push(&a, "--rootfs");
	if (config) {
		r |= strv_push(&a, "--config");
		r |= strv_push(&a, config);
	}
	if (name) {
		r |= strv_push(&a, "--name");
		r |= strv_push(&a, name);
	}
	if (base) {
		r |= strv_push(&a, "--base-image");
		r |= strv_push(&a, base);
	} else {
		r |= strv_push(&a, "--guest-bin");
		r |= strv_push(&a, guest);
	}
	r |= strv_push(&a, "--images-dir");
	r |= strv_push(&a, images);
	if (json)
		r |= strv_push(&a, "--json");
	if (r < 0)
		return log_oom();
	log_info("building with %s (progress below; a first build takes several minutes)", builder);
	pid_t pid;
	r = posix_spawn(&pid, builder, NULL, NULL, a, environ);
	if (r != 0)
		return log_error("cannot run %s: %s", builder, strerror(r)), -r;
	int ws;
	while (waitpid(pid, &ws, 0) < 0)
		if (errno != EINTR)
			return log_error_errno(negative_errno(), "waitpid");
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
		return 0;
	log_error("capsem-builder failed (%s %d)", WIFEXITED(ws) ? "exit status" : "signal",
		  WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
	return -EIO;
}

/* ---- stopping everything under a home (uninstall --purge) ---- */

/* The pid in path when /proc/<pid>/comm is comm, else 0. */
static pid_t pid_of(const char *path, const char *comm)
{
	_cleanup_free_ char *text = NULL, *cpath = NULL, *c = NULL;
	uint64_t v;
	if (read_file_small(path, 64, &text, NULL) < 0)
		return 0;
	text[strcspn(text, "\n")] = 0;
	if (parse_u64(text, &v) < 0 || v < 2 || v > INT_MAX)
		return 0;
	if (asprintf(&cpath, "/proc/%" PRIu64 "/comm", v) < 0 ||
	    read_file_small(cpath, 64, &c, NULL) < 0)
		return 0;
	c[strcspn(c, "\n")] = 0;
	return streq(c, comm) ? (pid_t)v : 0;
}

/* SIGTERM pid and wait up to ms for it to exit (on its pidfd: no polling). 1 when it exited. */
static int terminate(pid_t pid, int ms)
{
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0 || syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0) < 0)
		return 0;
	struct pollfd pf = { .fd = pidfd, .events = POLLIN };
	return poll(&pf, 1, ms) == 1;
}

int cli_stop_everything(const char *home)
{
	struct api_conn c;
	struct api_response res = {};
	int stopped = 0;
	/* 1. the daemon's VMs, through the daemon when it runs (never started for this) */
	if (api_connect(&c) == 0) {
		if (api_json(&c, "GET", "/vms", NULL, &res) == 0 && res.head.status == 200) {
			size_t i;
			json_t *vm;
			json_array_foreach(res.json, i, vm)
			{
				const char *id = json_string_value(json_object_get(vm, "id"));
				_cleanup_free_ char *path = NULL;
				struct api_response d = {};
				if (!id || asprintf(&path, "/vms/%s", id) < 0)
					continue;
				if (cli_api("DELETE", path, NULL, &d) == 0) {
					stopped++;
					api_response_done(&d);
				}
			}
		}
		api_response_done(&res);
		api_conn_close(&c);
	}
	/* 2. the daemon */
	_cleanup_free_ char *pidfile = NULL, *vms = NULL;
	pid_t pid;
	if (asprintf(&pidfile, "%s/run/capsemd.pid", home) >= 0 &&
	    (pid = pid_of(pidfile, "capsemd")) > 0 && !terminate(pid, 10000))
		log_warn("capsemd (pid %d) did not stop within 10 s", (int)pid);
	/* 3. supervisors left behind by a daemon that was not running (they outlive it) */
	_cleanup_closedir_ DIR *d = NULL;
	if (asprintf(&vms, "%s/vms", home) >= 0 && (d = opendir(vms))) {
		struct dirent *e;
		while ((e = readdir(d))) {
			_cleanup_free_ char *sp = NULL;
			if (e->d_name[0] == '.' ||
			    asprintf(&sp, "%s/%s/supervisor.pid", vms, e->d_name) < 0)
				continue;
			pid = pid_of(sp, "capsem-vm");
			if (pid > 0 && terminate(pid, 15000))
				stopped++;
		}
	}
	return stopped;
}
