/* vmkeyd.c - capsem-vm's key broker (keyd.h): started first, before any guest byte is read and
 * before QEMU, virtiofsd or any other helper exists, as `capsem-vm --keyd HOME CORP_POLICY`
 * (keydmain.c; confine_spawn: no new privileges, its own session, dies with us, its log
 * <vmdir>/keyd.log, removed at the end when empty). It inherits our environment, the provider keys included; then we wipe them
 * from ours (cred_env_scrub), so neither this process nor QEMU nor anything we start holds
 * them, and our Landlock ruleset (vmconfine.c) no longer covers the credentials file.
 *
 * A broker that dies while the VM runs is logged (how, with its log); the VM goes on, and each
 * request that needs a key gets a 502 that names the broker (upstream.c).
 *
 * Trust boundary: none crossed here (the broker's answers are read by keyd.c). Main thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "confine.h"
#include "credentials.h"
#include "fdutil.h"
#include "home.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "scfilter.h"

#define KEYD_LOG "keyd.log"

static void on_keyd_exit(struct watch *wt, int events)
{
	struct vm *vm = wt->vm;
	int st = 0;
	(void)events;
	if (vm->keyd_pid <= 0 || waitpid(vm->keyd_pid, &st, WNOHANG) <= 0)
		return;
	char how[256];
	scf_describe_exit(vm->keyd_pid, st, how, sizeof(how));
	vm->keyd_pid = 0;
	watch_close(&vm->w_keyd);
	if (vm->state == VM_STOPPING || vm->state == VM_DONE)
		return;
	log_error("the key broker (capsem-vm --keyd) %s: requests that need a provider key fail "
		  "from now on (502); its log: %s/" KEYD_LOG,
		  how, vm->o.vmdir);
}

int vm_keyd_start(struct vm *vm)
{
	vm->keyd_ctl = -1;
	if (vm->o.no_egress) {
		cred_env_scrub();
		return 0;
	}
	_cleanup_free_ char *self = realpath("/proc/self/exe", NULL), *home = NULL;
	if (!self)
		return log_error_errno(negative_errno(), "cannot find capsem-vm's own binary");
	int r = capsem_home(&home);
	if (r < 0)
		return log_error_errno(r, "cannot find $CAPSEM_HOME");
	_cleanup_close_ int log_fd =
		open(KEYD_LOG, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (log_fd < 0)
		return log_error_errno(negative_errno(), "cannot create %s/" KEYD_LOG, vm->o.vmdir);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return log_error_errno(negative_errno(), "cannot make the key broker's socket");
	char *argv[] = { self, (char *)"--keyd", home, (char *)POLICY_CORP_PATH, NULL };
	struct confine_opts co = { .flags = CONFINE_NO_NEW_PRIVS, .landlock_fd = -1 };
	int pidfd = -1;
	r = confine_spawn(argv, log_fd, sv[1], &co, &vm->keyd_pid, &pidfd);
	safe_close(sv[1]);
	/* the broker has its copy of the environment (or none was made): ours goes */
	cred_env_scrub();
	if (r < 0) {
		safe_close(sv[0]);
		return log_error_errno(r, "cannot start the key broker");
	}
	vm->keyd_ctl = sv[0];
	vm->w_keyd = watch_new(vm, pidfd, UV_READABLE, 0, on_keyd_exit);
	if (!vm->w_keyd)
		return log_oom();
	log_debug("key broker %d", (int)vm->keyd_pid);
	return 0;
}

void vm_keyd_stop(struct vm *vm)
{
	vm->keyd_ctl = safe_close(vm->keyd_ctl); /* its end of the control socket: it exits */
	if (vm->keyd_pid > 0) {
		kill(vm->keyd_pid, SIGKILL);
		(void)waitpid(vm->keyd_pid, NULL, 0);
		vm->keyd_pid = 0;
	}
	watch_close(&vm->w_keyd);
	/* its log stays in the VM directory only when it says something */
	struct stat st;
	if (lstat(KEYD_LOG, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
		(void)unlink(KEYD_LOG);
}
