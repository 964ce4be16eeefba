/* wgconfine.c - capsem-gateway's confinement (wgconfine.h; docs/ARCHITECTURE.md, "Host
 * confinement").
 *
 * The gateway is the only process that any local program and any web page the user opens can
 * talk to. Once it listens, holds the UI in memory and has written its token, it needs nothing
 * but its sockets: accepted TCP connections, new Unix connections to capsemd, /proc/net/tcp (the
 * /token owner check) and, at exit, removing run/gateway.port and run/gateway.token. So:
 *   - no new privileges;
 *   - Landlock: the system read-only (nothing executable but the loader), /proc read-only, its
 *     run directory read-write; no TCP bind or connect (it accepts on the socket it bound before),
 *     no signals or abstract Unix sockets out of its domain;
 *   - a seccomp allow-list (gw_allow, measured with strace over the e2e module test_webgw.py and
 *     the UI's requests): the event loop, sockets, memory, the files above; execve and execveat
 *     kill (SIGSYS), as does scf_kill_escape; anything else: ENOSYS.
 * Started by capsemd it runs inside capsemd's domain and filter too, which hold all of this.
 *
 * Trust boundary: none crossed; it narrows what a bug in the gateway's HTTP, WebSocket or JSON
 * handling could reach. Main thread, before the loop runs.
 */
#include "wgconfine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "cfprobe.h"
#include "confinfo.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"
#include "scfilter.h"

/* most frequent first (a linear scan) */
static const int gw_allow[] = {
	SYS_read,
	SYS_write,
	SYS_writev,
	SYS_readv,
	SYS_epoll_wait,
	SYS_epoll_pwait,
	SYS_epoll_ctl,
	SYS_futex,
	SYS_accept4,
	SYS_accept,
	SYS_close,
	SYS_setsockopt,
	SYS_getsockopt,
	SYS_getsockname,
	SYS_getpeername,
	SYS_socket,
	SYS_connect,
	SYS_shutdown,
	SYS_recvmsg,
	SYS_sendmsg,
	SYS_recvfrom,
	SYS_sendto,
	SYS_clock_gettime,
	SYS_clock_getres,
	SYS_gettimeofday,
	SYS_nanosleep,
	SYS_clock_nanosleep,
	/* files: /proc/net/tcp, the run directory at exit */
	SYS_openat,
	SYS_fstat,
	SYS_newfstatat,
	SYS_statx,
	SYS_lseek,
	SYS_fcntl,
	SYS_ioctl,
	SYS_unlink,
	SYS_unlinkat,
	/* the loop's own fds */
	SYS_pipe2,
	SYS_eventfd2,
	SYS_epoll_create1,
	/* memory */
	SYS_mmap,
	SYS_munmap,
	SYS_mremap,
	SYS_madvise,
	SYS_mprotect,
	SYS_brk,
	/* signals, the process */
	SYS_rt_sigaction,
	SYS_rt_sigprocmask,
	SYS_rt_sigreturn,
	SYS_restart_syscall,
	SYS_getpid,
	SYS_gettid,
	SYS_tgkill,
	SYS_getuid,
	SYS_geteuid,
	SYS_getrandom,
	SYS_sched_yield,
	SYS_exit,
	SYS_exit_group,
	/* a copy of itself and its wait (it has no exec): the confinement test's probes */
	SYS_clone,
	SYS_wait4,
};

/* besides scf_kill_escape: it never runs a program */
static const int gw_kill_extra[] = { SYS_execve, SYS_execveat };

static int ruleset(const char *run_dir)
{
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, LL_NO_TCP | LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0)
		return log_error_errno(r, "cannot create a Landlock ruleset");
	if (rs.fd < 0) {
		log_warn("confinement: Landlock not enforced for capsem-gateway (%s)",
			 ll_describe());
		return 0;
	}
	r = ll_allow_system(&rs, LL_SYS_PROC);
	if (r >= 0)
		r = ll_allow(&rs, run_dir, LL_RW);
	if (r >= 0)
		r = ll_restrict_self(rs.fd);
	ll_ruleset_done(&rs);
	if (r < 0)
		return log_error_errno(r, "cannot apply capsem-gateway's Landlock ruleset");
	return 0;
}

static int filter(void)
{
	if (!scf_available()) {
		log_warn("confinement: seccomp allow-list not enforced for capsem-gateway (the "
			 "kernel offers no seccomp filters)");
		return 0;
	}
	size_t n_esc;
	const int *esc = scf_kill_escape(&n_esc);
	int kill[64];
	if (n_esc + ELEMENTSOF(gw_kill_extra) > ELEMENTSOF(kill))
		return -E2BIG;
	memcpy(kill, esc, n_esc * sizeof(*kill));
	memcpy(kill + n_esc, gw_kill_extra, sizeof(gw_kill_extra));
	const char *m = getenv("CAPSEM_SECCOMP");
	int r = scf_install(gw_allow, ELEMENTSOF(gw_allow), kill, n_esc + ELEMENTSOF(gw_kill_extra),
			    m && streq(m, "log") ? SCF_LOG : SCF_ENFORCE);
	if (r < 0)
		log_warn_errno(r,
			       "confinement: seccomp allow-list not enforced for capsem-gateway");
	return 0;
}

int wg_confine(const char *run_dir)
{
	if (!confinfo_enabled()) {
		log_warn("confinement: off (CAPSEM_CONFINE=0, for measurements only)");
		return 0;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_error_errno(negative_errno(), "cannot set no_new_privs");
	int r = ruleset(run_dir);
	if (r < 0)
		return r;
	r = filter();
	if (r < 0)
		return log_error_errno(r, "cannot build capsem-gateway's seccomp filter");
	cfprobe_run("capsem-gateway");
	return 0;
}
