/* vmconfine.c - capsem-vm's host confinement (docs/ARCHITECTURE.md, "Host confinement"):
 *
 *   - QEMU's cgroup (memory = guest RAM + TCG translation cache + a measured margin; pids), made
 *     before capsem-vm confines itself, joined by QEMU between fork and exec, removed when QEMU
 *     has exited;
 *   - capsem-vm itself, once its VM directory, sockets and virtiofsd exist and before any thread
 *     does: no new privileges, a Landlock ruleset (the system, its VM directory, workspace,
 *     mounts and disk, the image files read-only, the parts of $CAPSEM_HOME it uses, the
 *     binaries it runs, what its MCP servers need) and a seccomp allow-list on every thread.
 *     Its children inherit all three and narrow them (QEMU: qemu_landlock; MCP servers:
 *     vm_mcp_exec);
 *   - the MCP stdio servers' launcher (capsem-vm --mcp-exec): no new privileges and a ruleset
 *     with nothing of $CAPSEM_HOME;
 *   - why QEMU died: its cgroup's OOM killer, or seccomp (SIGSYS, with the syscall's name from
 *     the kernel's audit record when readable).
 *
 * A layer the host lacks (Landlock, cgroup write access) is skipped with one warning line
 * naming it. CAPSEM_CONFINE=0 turns off the layers added here, for benchmarks only.
 *
 * Trust boundary: none crossed; everything here narrows what the VM's processes can reach. Main
 * thread, before the loop runs (and in the launcher, a process of its own).
 */
#include "vmconfine.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "capsem-vm.h"
#include "cfprobe.h"
#include "fdutil.h"
#include "gwconf.h"
#include "home.h"
#include "hostcg.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "scfilter.h"
#include "strv.h"
#include "vmseccomp.h"

/* QEMU's cgroup limit beyond the guest's RAM and the translation cache (measured: see
 * docs/ARCHITECTURE.md), and its threads (vCPUs, I/O workers, RCU, 9p) */
#define QEMU_CG_MARGIN_MIB 256u
#define QEMU_CG_PIDS 256u

int vm_confine_enabled(void)
{
	const char *e = getenv("CAPSEM_CONFINE");
	return !(e && streq(e, "0"));
}

uint64_t vm_cgroup_mem_mib(const struct vm_opts *o)
{
	uint64_t tb = 0;
	if (o->accel == VM_ACCEL_TCG)
		tb = o->tcg_tb_mib ? o->tcg_tb_mib : 1024; /* 0: QEMU's default, 1 GiB */
	return o->mem_mib + tb + QEMU_CG_MARGIN_MIB;
}

void vm_cgroup_setup(struct vm *vm)
{
	if (!vm_confine_enabled())
		return;
	char name[64], why[600] = "";
	snprintf(name, sizeof(name), "capsem-vm-%d", (int)getpid());
	uint64_t mib = vm_cgroup_mem_mib(&vm->o);
	int r = hostcg_create(&vm->cg, name, mib << 20, QEMU_CG_PIDS, why, sizeof(why));
	if (r < 0)
		log_warn("confinement: QEMU's cgroup limits (%s) not enforced: %s",
			 vm->cg.dir[HOSTCG_MEM]	   ? "pids"
			 : vm->cg.dir[HOSTCG_PIDS] ? "memory"
						   : "memory, pids",
			 why);
	else
		log_debug("QEMU's cgroup: %s, %" PRIu64 " MiB, %u tasks", hostcg_mem_dir(&vm->cg),
			  mib, QEMU_CG_PIDS);
}

/* ---- the MCP servers' file access: shared by their launcher and capsem-vm's own ruleset ---- */

static int under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* An absolute argument of an MCP server (or its command), outside $CAPSEM_HOME: a directory
 * is read-write (a file server's root), a file makes its directory readable and executable (a
 * script beside its modules; for a command in some prefix's bin/, the whole prefix: an
 * interpreter's library), a path that does not exist yet makes its directory read-write (a file
 * the server writes). Never "/" nor an ancestor of $CAPSEM_HOME: then only the file itself. */
static int allow_arg(struct ll_ruleset *rs, const char *p, int is_command, const char *capsem_home)
{
	char real[4096], dir[4096];
	if (p[0] != '/')
		return 0;
	struct stat st;
	unsigned access = LL_RX;
	if (realpath(p, real) && stat(real, &st) == 0) {
		snprintf(dir, sizeof(dir), "%s", real);
		if (S_ISDIR(st.st_mode)) {
			access = LL_RW | LL_EXEC;
		} else {
			char *sl = strrchr(dir, '/');
			if (sl && sl != dir)
				*sl = 0;
			sl = strrchr(dir, '/');
			if (is_command && sl && sl != dir && streq(sl, "/bin"))
				*sl = 0;
		}
	} else {
		/* not there yet: its directory, when that exists */
		snprintf(real, sizeof(real), "%s", p);
		char *sl = strrchr(real, '/');
		if (!sl || sl == real)
			return 0;
		*sl = 0;
		if (!realpath(real, dir) || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			return 0;
		snprintf(real, sizeof(real), "%s", dir);
		access = LL_RW;
	}
	if (under(real, capsem_home) || under(dir, capsem_home))
		return 0;
	if (streq(dir, "/") || under(capsem_home, dir))
		return streq(real, dir) ? 0 : ll_allow(rs, real, LL_RX); /* the file alone */
	return ll_allow(rs, dir, access);
}

/* What one MCP stdio server gets: the system (read, execute), /proc, its working directory
 * (read-write, unless inside $CAPSEM_HOME), what its absolute arguments name (allow_arg), the
 * package managers' caches in $HOME (~/.npm, ~/.cache: npx, uvx, pip) and its private
 * temporary directory <vmdir>/mcp-tmp (read-write). Nothing else of $HOME, nothing of
 * $CAPSEM_HOME. */
static int mcp_rules(struct ll_ruleset *rs, char *const *argv, const char *cwd,
		     const char *capsem_home, const char *tmpdir)
{
	int r = ll_allow_system(rs, LL_SYS_EXEC | LL_SYS_PROC);
	if (r >= 0 && cwd && !under(cwd, capsem_home) && !under(capsem_home, cwd))
		r = ll_allow(rs, cwd, LL_RW);
	for (size_t i = 0; r >= 0 && argv && argv[i]; i++)
		r = allow_arg(rs, argv[i], i == 0, capsem_home);
	_cleanup_free_ char *home = NULL;
	if (r >= 0 && user_home(&home) >= 0) {
		static const char *const caches[] = { ".npm", ".cache" };
		for (size_t i = 0; r >= 0 && i < ELEMENTSOF(caches); i++) {
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", home, caches[i]);
			if (!under(p, capsem_home))
				r = ll_allow(rs, p, LL_RW);
			if (r == -ENOENT)
				r = 0;
		}
	}
	if (r >= 0 && tmpdir)
		r = ll_allow(rs, tmpdir, LL_RW);
	return r == -ENOENT ? 0 : r;
}

int vm_mcp_exec(int argc, char **argv)
{
	/* capsem-vm --mcp-exec CAPSEM_HOME TMPDIR -- COMMAND ARGS... */
	if (argc < 6 || !streq(argv[1], "--mcp-exec") || !streq(argv[4], "--"))
		return log_error("usage: capsem-vm --mcp-exec HOME TMPDIR -- COMMAND ARGS..."), 2;
	const char *capsem_home = argv[2], *tmpdir = argv[3];
	char **cmd = argv + 5;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_error_errno(negative_errno(), "mcp: no_new_privs"), 126;
	(void)mkdir(tmpdir, 0700);
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	char cwd[4096];
	if (r >= 0 && rs.fd >= 0)
		r = mcp_rules(&rs, cmd, getcwd(cwd, sizeof(cwd)) ? cwd : NULL, capsem_home, tmpdir);
	if (r >= 0)
		r = ll_restrict_self(rs.fd);
	ll_ruleset_done(&rs);
	if (r < 0)
		return log_error_errno(r, "mcp: cannot apply the Landlock ruleset"), 126;
	setenv("TMPDIR", tmpdir, 1);
	execvp(cmd[0], cmd);
	return log_error_errno(negative_errno(), "mcp: cannot run %s", cmd[0]), 127;
}

char **vm_mcp_prefix(struct vm *vm)
{
	if (!vm_confine_enabled())
		return NULL;
	_cleanup_free_ char *home = NULL, *self = realpath("/proc/self/exe", NULL);
	_cleanup_strv_free_ char **v = NULL;
	if (capsem_home(&home) < 0 || !self)
		return NULL;
	int r = strv_push(&v, self);
	r |= strv_push(&v, "--mcp-exec");
	r |= strv_push(&v, home);
	r |= strv_pushf(&v, "%s/mcp-tmp", vm->vmdir_abs);
	r |= strv_push(&v, "--");
	return r < 0 ? NULL : TAKE_PTR(v);
}

/* ---- capsem-vm itself ---- */

static int allow_opt(struct ll_ruleset *rs, const char *p, unsigned access)
{
	if (!p)
		return 0;
	int r = ll_allow(rs, p, access);
	return r == -ENOENT ? 0 : r;
}

static int dirname_of(const char *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s", p);
	char *sl = strrchr(buf, '/');
	if (!sl)
		return -EINVAL;
	sl[sl == buf] = 0;
	return 0;
}

static int self_rules(struct vm *vm, struct ll_ruleset *rs)
{
	const struct vm_opts *o = &vm->o;
	_cleanup_free_ char *home = NULL, *self = realpath("/proc/self/exe", NULL);
	int r = capsem_home(&home);
	if (r < 0)
		return r;
	r = ll_allow_system(rs, LL_SYS_EXEC | LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(rs, vm->vmdir_abs, LL_RW);
	/* --rm: the VM directory itself goes at the end (only empty directories beside it could) */
	char parent[4096];
	if (r >= 0 && o->remove_vmdir && dirname_of(vm->vmdir_abs, parent, sizeof(parent)) == 0)
		r = ll_allow(rs, parent, LL_RMDIR);
	if (r >= 0)
		r = allow_opt(rs, self, LL_RX);
	if (r >= 0)
		r = ll_allow(rs, o->kernel, LL_READ);
	if (r >= 0)
		r = ll_allow(rs, o->initrd, LL_READ);
	if (r >= 0)
		r = allow_opt(rs, o->rootfs, LL_READ);
	if (r >= 0)
		r = allow_opt(rs, o->disk, LL_RW);
	if (r >= 0)
		r = allow_opt(rs, o->workspace, LL_RW);
	for (size_t i = 0; r >= 0 && i < o->n_mounts; i++)
		r = ll_allow(rs, o->mounts[i].host, o->mounts[i].readonly ? LL_READ : LL_RW);
	if (r >= 0 && o->qemu && o->qemu[0] == '/')
		r = allow_opt(rs, o->qemu, LL_RX);
	/* QEMU's extra needs (it runs inside this domain): /dev/kvm, host facts; the kernel's log
	 * for the name of a syscall seccomp refused (scf_describe_sigsys) */
	if (r >= 0 && o->accel == VM_ACCEL_KVM)
		r = allow_opt(rs, "/dev/kvm", LL_DEV);
	if (r >= 0)
		r = allow_opt(rs, "/sys/devices/system/cpu", LL_READ);
	if (r >= 0)
		r = allow_opt(rs, "/sys/kernel/mm", LL_READ);
	if (r >= 0)
		r = allow_opt(rs, "/dev/kmsg", LL_READ);
	/* as a normal user QEMU's child maps its user namespace (/proc/<pid>/uid_map): a
	 * process's own /proc files are the only ones there a normal user may write */
	if (r >= 0 && geteuid() != 0)
		r = allow_opt(rs, "/proc", LL_READ | LL_WRFILE);
	/* QEMU's cgroup is removed through its parent directory */
	for (int k = 0; r >= 0 && k < HOSTCG_N; k++) {
		if (vm->cg.dir[k] && dirname_of(vm->cg.dir[k], parent, sizeof(parent)) == 0)
			r = allow_opt(rs, parent, LL_RMDIR);
		/* its counters: was QEMU killed by the OOM killer? */
		if (r >= 0 && vm->cg.dir[k])
			r = allow_opt(rs, vm->cg.dir[k], LL_READ);
	}
	/* $CAPSEM_HOME: only the CA (made here when missing), the user policy, the MCP
	 * configuration and the ledger's directory (sessions/); not the credentials: the keys are
	 * the key broker's (vmkeyd.c), which runs outside this domain */
	char p[4096];
	if (r >= 0 && !o->no_egress) {
		snprintf(p, sizeof(p), "%s/ca", home);
		(void)mkdir_p(p, 0700);
		r = allow_opt(rs, p, LL_RW);
		static const char *const files[] = { "user.toml", "mcp.toml" };
		for (size_t i = 0; r >= 0 && i < ELEMENTSOF(files); i++) {
			snprintf(p, sizeof(p), "%s/%s", home, files[i]);
			r = allow_opt(rs, p, LL_READ);
		}
		if (r >= 0)
			r = allow_opt(rs, o->mcp, LL_READ);
		/* the policy's extra upstream CA ([upstream] ca_file), read when the first upstream
		 * TLS connection is made: anywhere the policy says (a file named by a later reload
		 * is not covered) */
		struct policy *pol = NULL;
		char err[256];
		snprintf(p, sizeof(p), "%s/user.toml", home);
		if (r >= 0 && policy_load(POLICY_CORP_PATH, p, &pol, err, sizeof(err)) == 0) {
			r = allow_opt(rs, policy_upstream_ca_file(pol), LL_READ);
			policy_free(pol);
		}
	}
	/* the ledger's directory (made now when missing: a rule needs a directory to bind to) */
	if (r >= 0 && o->ledger && dirname_of(o->ledger, p, sizeof(p)) == 0) {
		(void)mkdir_p(p, 0700);
		r = allow_opt(rs, p, LL_RW);
	}
	/* the MCP servers run inside this domain: what their own rulesets grant */
	if (r >= 0 && !o->no_egress) {
		snprintf(p, sizeof(p), "%s/mcp.toml", home);
		const char *conf = o->mcp ? o->mcp : access(p, F_OK) == 0 ? p : NULL;
		struct gwconf *gc = NULL;
		char err[256], tmp[4096], confdir[4096];
		snprintf(tmp, sizeof(tmp), "%s/mcp-tmp", vm->vmdir_abs);
		if (conf && gwconf_load(conf, &gc, err, sizeof(err)) == 0) {
			_cleanup_free_ char *rc = realpath(conf, NULL);
			if (!rc || dirname_of(rc, confdir, sizeof(confdir)) < 0)
				confdir[0] = 0;
			for (size_t i = 0; r >= 0 && i < gc->n_servers; i++)
				if (gc->servers[i].argv)
					r = mcp_rules(rs, gc->servers[i].argv,
						      gc->servers[i].cwd ? gc->servers[i].cwd
						      : *confdir	 ? confdir
									 : NULL,
						      home, tmp);
			gwconf_free(gc);
		}
	}
	return r;
}

int vm_confine_self(struct vm *vm)
{
	if (!vm_confine_enabled()) {
		log_warn(
			"confinement: off (CAPSEM_CONFINE=0, for measurements only): capsem-vm, "
			"QEMU and the MCP servers run without Landlock, seccomp and cgroup limits");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_error_errno(negative_errno(), "cannot set no_new_privs");
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, 0);
	if (r < 0)
		return log_error_errno(r, "cannot create a Landlock ruleset");
	if (rs.fd < 0) {
		log_warn("confinement: Landlock not enforced (%s): capsem-vm, QEMU and the MCP "
			 "servers can open any file the user can",
			 ll_describe());
	} else {
		r = self_rules(vm, &rs);
		if (r >= 0)
			r = ll_restrict_self(rs.fd);
		ll_ruleset_done(&rs);
		if (r < 0)
			return log_error_errno(r, "cannot apply capsem-vm's Landlock ruleset");
	}
	const char *mode = getenv("CAPSEM_SECCOMP");
	r = vm_seccomp_install(mode && streq(mode, "log") ? SCF_LOG : SCF_ENFORCE);
	if (r < 0)
		log_warn_errno(r, "confinement: seccomp allow-list not enforced for capsem-vm");
	cfprobe_run("capsem-vm");
	return 0;
}

void vm_describe_death(struct vm *vm, int status, char *buf, size_t len)
{
	if (WIFEXITED(status)) {
		snprintf(buf, len, "status %d", WEXITSTATUS(status));
		return;
	}
	int sig = WTERMSIG(status);
	if (sig == SIGSYS) {
		scf_describe_sigsys((int)vm->qemu_pid, buf, len);
		return;
	}
	if (sig == SIGKILL && hostcg_oom_killed(&vm->cg) > 0) {
		snprintf(buf, len,
			 "killed by its cgroup's OOM killer: over its memory limit of %" PRIu64
			 " MiB (guest RAM + translation cache + margin)",
			 vm_cgroup_mem_mib(&vm->o));
		return;
	}
	snprintf(buf, len, "signal %d", sig);
}
