/* keydmain.c - the key broker's process (keyd.h): `capsem-vm --keyd HOME CORP_POLICY`, fd 3 its
 * control socket. capsem-vm starts it (vmkeyd.c) before it reads a guest byte; the test front end
 * tests/helpers/proxy-front does the same.
 *
 * Confinement, its own (it is started before capsem-vm confines itself, so it is not in
 * capsem-vm's Landlock domain: a process there cannot ptrace it or read its memory, which
 * Landlock forbids towards a process outside the tracer's domain, root included):
 *   - not dumpable (no core file; same-user processes without CAP_SYS_PTRACE cannot attach);
 *   - no new privileges;
 *   - Landlock: the system read-only (libraries, the trust store, the resolver's files), and of
 *     $CAPSEM_HOME only the credentials and the user policy, the corp policy and the policy's
 *     extra CA file; no signals or abstract sockets out of its domain;
 *   - seccomp: vm_seccomp_install_keyd (no exec, no process control).
 * TCP connections out stay allowed: making them is its job.
 *
 * Trust boundary: what capsem-vm sends (keyd.c checks it). Main thread, before any other.
 */
#include "keydmain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cfprobe.h"
#include "keyd.h"
#include "landlock.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "vmseccomp.h"

#define CTL_FD 3

static int allow_opt(struct ll_ruleset *rs, const char *p, unsigned access)
{
	int r = p ? ll_allow(rs, p, access) : 0;
	return r == -ENOENT ? 0 : r;
}

static int confine(const char *home, const char *corp)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return negative_errno();
	struct ll_ruleset rs;
	int r = ll_ruleset_new(&rs, LL_SCOPE_SIGNAL | LL_SCOPE_ABSTRACT);
	if (r < 0)
		return r;
	if (rs.fd < 0)
		log_warn("confinement: Landlock not enforced for the key broker (%s)",
			 ll_describe());
	char p[4096];
	_cleanup_free_ char *cred = NULL, *user = NULL;
	if (asprintf(&cred, "%s/credentials", home) < 0 ||
	    asprintf(&user, "%s/%s", home, POLICY_USER_FILE) < 0)
		r = -ENOMEM;
	if (r >= 0)
		r = ll_allow_system(&rs, 0);
	if (r >= 0)
		r = allow_opt(&rs, cred, LL_READ);
	if (r >= 0)
		r = allow_opt(&rs, user, LL_READ);
	if (r >= 0)
		r = allow_opt(&rs, corp, LL_READ);
	/* the extra upstream CA the policy names now (one a later reload names is not covered) */
	struct policy *pol = NULL;
	if (r >= 0 && policy_load(corp, user, &pol, p, sizeof(p)) == 0) {
		r = allow_opt(&rs, policy_upstream_ca_file(pol), LL_READ);
		policy_free(pol);
	}
	if (r >= 0)
		r = ll_restrict_self(rs.fd);
	ll_ruleset_done(&rs);
	if (r < 0)
		return r;
	/* the tests' probes fork, which our filter has no room for: they run before it */
	cfprobe_run("keyd");
	const char *mode = getenv("CAPSEM_SECCOMP");
	r = vm_seccomp_install_keyd(mode && streq(mode, "log") ? SCF_LOG : SCF_ENFORCE);
	if (r < 0)
		log_warn_errno(r,
			       "confinement: seccomp allow-list not enforced for the key broker");
	return 0;
}

int keyd_process_main(int argc, char **argv)
{
	if (argc != 4 || !streq(argv[1], "--keyd"))
		return log_error("usage: capsem-vm --keyd CAPSEM_HOME CORP_POLICY"), 2;
	log_setup("capsem-keyd", LOG_LVL_INFO);
	log_setup_from_env();
	(void)prctl(PR_SET_NAME, "capsem-keyd", 0, 0, 0); /* ps, top, the kernel's audit lines */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	const char *conf = getenv("CAPSEM_CONFINE");
	if (conf && streq(conf, "0")) {
		log_debug("key broker: confinement off (CAPSEM_CONFINE=0)");
	} else {
		int r = confine(argv[2], argv[3]);
		if (r < 0)
			return log_error_errno(r, "key broker: cannot confine itself"), 1;
	}
	return keyd_serve(CTL_FD, argv[2], argv[3]);
}
