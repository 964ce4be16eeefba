/* dconfine.c - capsemd's confinement and the tools it runs, mkfs.ext4 and tar (dconfine.h;
 * docs/ARCHITECTURE.md, "Host confinement").
 *
 * capsemd starts every capsem-vm, which starts QEMU and the MCP servers: a Landlock domain is
 * inherited, so capsemd's must hold everything they need (VM directories and sessions in
 * $CAPSEM_HOME, the images, workspaces and --mount directories the user names, which is why the
 * user's visible entries of $HOME and /tmp are in it) and nothing else: no dot-files of $HOME
 * (~/.ssh, ~/.gnupg, ~/.aws, ~/.config ...) except $CAPSEM_HOME and the package caches ~/.npm
 * and ~/.cache the MCP servers use. Entries made in $HOME after capsemd started are not in it
 * (restart capsemd to share them). The same holds for its seccomp allow-list (dseccomp.c): it
 * is the union of what capsemd and everything beneath it makes.
 *
 * As root too: the workspace's virtiofsd (a --no-suspendable VM's) cannot build its namespace
 * sandbox inside a Landlock domain (Landlock forbids mount and pivot_root), so under Landlock
 * capsem-vm starts it with chroot(2) into the workspace (which Landlock allows) inside a
 * ruleset of its own that holds only the workspace and an empty network namespace
 * (src/vm/virtiofs.c). Where the kernel has no Landlock, virtiofsd keeps its namespace sandbox
 * and capsemd's filter lets mount, umount2 and pivot_root through for it.
 *
 * mkfs.ext4 and tar run in a child confined between fork and exec: no_new_privs, a ruleset that
 * writes only the new disk or the directory unpacked into (or the archive made), reads only its
 * source, and a seccomp allow-list of the tool's, built before the fork (dconfine_run). tar
 * walks and unpacks what a guest wrote (a workspace, an overlay): the ruleset, not tar's care,
 * is what keeps a planted symlink from taking it outside.
 *
 * Trust boundary: none crossed; it narrows what capsemd and its children can reach. Main thread
 * before the loop (dconfine_self), a worker thread (dconfine_run).
 */
#include "dconfine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "confinfo.h"
#include "dseccomp.h"
#include "fdutil.h"
#include "home.h"
#include "hostcg.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"
#include "scfilter.h"
#include "vmproc.h"

extern char **environ;

#define TOOL_ERR_MAX 4096 /* of a tool's stderr, kept for the log */

static int confine_enabled(void)
{
	return confinfo_enabled();
}

static enum scf_mode seccomp_mode(void)
{
	const char *m = getenv("CAPSEM_SECCOMP");
	return m && streq(m, "log") ? SCF_LOG : SCF_ENFORCE;
}

static int allow_opt(struct ll_ruleset *rs, const char *p, unsigned access)
{
	int r = ll_allow(rs, p, access);
	return r == -ENOENT ? 0 : r;
}

/* $HOME's entries that are not dot-files, and the package caches */
static int allow_home(struct ll_ruleset *rs)
{
	_cleanup_free_ char *home = NULL;
	if (user_home(&home) < 0)
		return 0;
	DIR *d = opendir(home);
	if (!d)
		return 0;
	int r = 0;
	struct dirent *e;
	while (r >= 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[4096];
		if (snprintf(p, sizeof(p), "%s/%s", home, e->d_name) >= (int)sizeof(p))
			continue;
		r = allow_opt(rs, p, LL_RW);
	}
	closedir(d);
	static const char *const caches[] = { ".npm", ".cache" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(caches); i++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", home, caches[i]);
		r = allow_opt(rs, p, LL_RW);
	}
	return r;
}

static int self_rules(struct ll_ruleset *rs, const char *home, const char *images,
		      const char *vm_bin)
{
	int r = ll_allow_system(rs, LL_SYS_EXEC | LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, home, LL_RW);
	/* the images: read, and written by forks (fork.c) and deletes (images.c); as root a
	 * fork's tar also makes the overlay's whiteouts (character devices 0/0) there */
	if (r >= 0)
		r = allow_opt(rs, images, LL_RW | (geteuid() == 0 ? LL_MKCHAR : 0));
	if (r >= 0)
		r = allow_opt(rs, capsem_system_images_dir(), LL_READ);
	if (r >= 0)
		r = ll_allow(rs, vm_bin, LL_RX);
	/* the web gateway it starts (capsem ui) and the built UI it serves, wherever they are
	 * (a source tree's build/: capsem-gateway looks beside itself, then ../../ui/dist) */
	_cleanup_free_ char *gw =
		find_helper_binary("capsem-gateway", "CAPSEM_GATEWAY_BIN", "webgw");
	if (r >= 0 && gw && gw[0] == '/') {
		r = allow_opt(rs, gw, LL_RX);
		char *sl = strrchr(gw, '/');
		static const char *const ui[] = { "ui", "../../ui/dist", "../share/capsem/ui" };
		for (size_t i = 0; r >= 0 && sl && i < ELEMENTSOF(ui); i++) {
			char p[4096];
			snprintf(p, sizeof(p), "%.*s/%s", (int)(sl - gw), gw, ui[i]);
			r = allow_opt(rs, p, LL_READ);
		}
	}
	const char *ui_dir = getenv("CAPSEM_UI_DIR");
	if (r >= 0 && ui_dir && ui_dir[0] == '/')
		r = allow_opt(rs, ui_dir, LL_READ);
	/* the binaries capsem-vm runs when the environment names them (else they are in /usr) */
	static const char *const bins[] = { "CAPSEM_QEMU", "CAPSEM_VIRTIOFSD", "CAPSEM_MKFS",
					    "CAPSEM_TAR" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(bins); i++) {
		const char *b = getenv(bins[i]);
		if (b && b[0] == '/')
			r = allow_opt(rs, b, LL_RX);
	}
	if (r >= 0)
		r = allow_home(rs);
	/* workspaces and shares in temporary directories */
	static const char *const tmp[] = { "/tmp", "/var/tmp" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(tmp); i++)
		r = allow_opt(rs, tmp[i], LL_RW);
	/* what capsem-vm and QEMU need beneath us: KVM, host facts, the kernel log (seccomp
	 * reports), QEMU's cgroups */
	if (r >= 0)
		r = allow_opt(rs, "/dev/kvm", LL_DEV);
	static const char *const ro[] = { "/sys/devices/system/cpu", "/sys/kernel/mm",
					  "/dev/kmsg" };
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(ro); i++)
		r = allow_opt(rs, ro[i], LL_READ);
	/* QEMU's child maps its user namespace (/proc/<pid>/uid_map; capsem-vm runs as us) */
	if (r >= 0)
		r = allow_opt(rs, "/proc", LL_READ | LL_WRFILE);
	for (int k = 0; r >= 0 && k < HOSTCG_N; k++) {
		char cg[4096];
		if (hostcg_own_dir(k, cg, sizeof(cg)) == 0 && access(cg, W_OK) == 0)
			r = allow_opt(rs, cg, LL_RW);
	}
	return r;
}

int dconfine_self(const char *home, const char *images, const char *vm_bin)
{
	if (!confine_enabled()) {
		log_warn("confinement: off (CAPSEM_CONFINE=0, for measurements only)");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_error_errno(negative_errno(), "cannot set no_new_privs");
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, 0);
	if (r < 0)
		return log_error_errno(r, "cannot create a Landlock ruleset");
	if (rs.fd < 0) {
		log_warn(
			"confinement: Landlock not enforced for capsemd (%s): it and everything it "
			"starts can open any file %s can",
			ll_describe(), geteuid() == 0 ? "root" : "the user");
	} else {
		r = self_rules(&rs, home, images, vm_bin);
		if (r >= 0)
			r = ll_restrict_self(rs.fd);
		ll_ruleset_done(&rs);
		if (r < 0)
			return log_error_errno(r, "cannot apply capsemd's Landlock ruleset");
	}
	/* after Landlock (its syscalls are in the list anyway); every thread, though none other
	 * exists yet. As root without Landlock, virtiofsd builds its namespace sandbox beneath
	 * us: mount, umount2 and pivot_root are let through instead of killing */
	if (!scf_available()) {
		log_warn("confinement: seccomp allow-list not enforced for capsemd, mkfs.ext4 and "
			 "capsem-gateway (the kernel offers no seccomp filters)");
		return 0;
	}
	r = dseccomp_install(seccomp_mode(), geteuid() == 0 && !confinfo_virtiofsd_chroot());
	if (r < 0)
		log_warn_errno(r, "confinement: seccomp allow-list not enforced for capsemd");
	return 0;
}

/* A tool's ruleset: the system read-only (and /proc: mke2fs reads /proc/mounts, is the target
 * mounted?), executing only the tool (and the loader), reading src when set, writing only
 * `write` (beneath it when a directory: tar unpacks overlay whiteouts, character devices 0/0) */
static int tool_ruleset(const char *bin, const char *write, const char *src, struct ll_ruleset *rs)
{
	*rs = (struct ll_ruleset){ .fd = -1 };
	if (!confine_enabled())
		return 0;
	int r = ll_ruleset_new(rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0 || rs->fd < 0)
		return r;
	r = ll_allow_system(rs, LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, bin, LL_RX);
	if (r >= 0)
		r = ll_allow(rs, write, LL_RW | LL_MKCHAR);
	if (r >= 0 && src)
		r = ll_allow(rs, src, LL_READ);
	if (r < 0)
		ll_ruleset_done(rs);
	return r;
}

/* How the child ended, into why: its exit status and the first line of its stderr, or the
 * signal (seccomp's kill named) */
static void describe_end(pid_t pid, int st, const char *err, char *why, size_t len)
{
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) {
		scf_describe_sigsys((int)pid, why, len);
		return;
	}
	if (WIFSIGNALED(st)) {
		snprintf(why, len, "killed by signal %d", WTERMSIG(st));
		return;
	}
	size_t n = strcspn(err, "\n");
	snprintf(why, len, "exit status %d%s%.*s", WEXITSTATUS(st), n ? ": " : "", (int)MIN(n, 300),
		 err);
}

int dconfine_check_shared(const char *path, char *why, size_t why_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0)
		return 0;
	int r = negative_errno();
	if (r == -EACCES && confine_enabled() && ll_abi() > 0)
		snprintf(why, why_len,
			 "%s is outside what capsemd may open (its Landlock ruleset: $CAPSEM_HOME, "
			 "the entries of $HOME that are not dot-files and existed when it started, "
			 "/tmp, /var/tmp): share a folder there, or restart capsemd after making "
			 "it in $HOME",
			 path);
	else
		snprintf(why, why_len, "capsemd cannot open %s: %s", path, strerror(-r));
	return r;
}

/* $env when it is an absolute path (tests: capsemd's ruleset lets it be executed), else name
 * in PATH, /usr/sbin or /sbin */
static int find_tool(const char *env, const char *name, char **ret)
{
	const char *e = getenv(env);
	if (e && e[0] == '/') {
		*ret = strdup(e);
		return *ret ? 0 : -ENOMEM;
	}
	return find_program(name, ret);
}

int dconfine_find_mkfs(char **ret)
{
	return find_tool("CAPSEM_MKFS", "mkfs.ext4", ret);
}

int dconfine_find_tar(char **ret)
{
	return find_tool("CAPSEM_TAR", "tar", ret);
}

static const char *tool_name(enum dconfine_tool tool)
{
	return tool == DCONFINE_TAR ? "tar" : "mkfs.ext4";
}

int dconfine_run(enum dconfine_tool tool, char *const *argv, const char *write, const char *src,
		 char *why, size_t why_len)
{
	why[0] = 0;
	struct ll_ruleset rs;
	int r = tool_ruleset(argv[0], write, src, &rs);
	if (r < 0)
		return r;
	struct scf_prog sc = SCF_PROG_INIT;
	if (confine_enabled() && scf_available()) {
		r = tool == DCONFINE_TAR ? dseccomp_tar_build(seccomp_mode(), &sc)
					 : dseccomp_mkfs_build(seccomp_mode(), &sc);
		if (r < 0) {
			ll_ruleset_done(&rs);
			return r;
		}
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = negative_errno();
		ll_ruleset_done(&rs);
		scf_prog_free(&sc);
		return r;
	}
	pid_t pid = fork();
	if (pid == 0) {
		/* async-signal-safe only: this is a worker thread of a threaded process. stdout
		 * discarded, stderr kept for the log; then no new privileges, the ruleset, the
		 * filter (it lets the execve through), exec */
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(p[1], 2) < 0 ||
		    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || ll_restrict_self(rs.fd) < 0 ||
		    scf_load(&sc, 0) < 0)
			_exit(126);
		execve(argv[0], argv, environ);
		_exit(127);
	}
	r = pid < 0 ? negative_errno() : 0;
	safe_close(p[1]);
	ll_ruleset_done(&rs);
	scf_prog_free(&sc);
	if (r < 0) {
		safe_close(p[0]);
		return r;
	}
	/* its stderr until EOF (it exited), the first TOOL_ERR_MAX bytes kept */
	char err[TOOL_ERR_MAX + 1];
	size_t n = 0;
	for (;;) {
		char tmp[1024];
		ssize_t k = read(p[0], tmp, sizeof(tmp));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		size_t take = MIN((size_t)k, TOOL_ERR_MAX - n);
		memcpy(err + n, tmp, take);
		n += take;
	}
	err[n] = 0;
	safe_close(p[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	describe_end(pid, st, err, why, why_len);
	/* its whole complaint in the log, one line each */
	log_warn("%s (pid %d) ended: %s", tool_name(tool), (int)pid, why);
	for (char *save = NULL, *ln = strtok_r(err, "\n", &save); ln;
	     ln = strtok_r(NULL, "\n", &save))
		log_warn("%s: %s", tool_name(tool), ln);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -EIO;
}
