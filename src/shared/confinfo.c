/* confinfo.c - probing the host's confinement layers (confinfo.h).
 *
 * Each probe asks the kernel rather than guessing from versions: the Landlock ABI syscall,
 * the seccomp actions the kernel offers, a cgroup made and removed where capsem-vm would make
 * QEMU's, a child that makes a user and a network namespace, /dev/kmsg opened for reading.
 * Then one row per confined host process outside a VM (capsemd, mkfs, capsem-gateway,
 * virtiofsd) from those answers and $CAPSEM_CONFINE.
 *
 * Trust boundary: none. Any thread (the userns probe forks: the child makes only
 * async-signal-safe calls).
 */
#include "confinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdutil.h"
#include "hostcg.h"
#include "landlock.h"
#include "macro.h"
#include "scfilter.h"

int confinfo_enabled(void)
{
	const char *e = getenv("CAPSEM_CONFINE");
	return !(e && streq(e, "0"));
}

int confinfo_virtiofsd_chroot(void)
{
	return confinfo_enabled() && ll_abi() > 0;
}

int confinfo_userns_ok(void)
{
	if (geteuid() == 0)
		return 1;
	pid_t pid = fork();
	if (pid < 0)
		return 0;
	if (pid == 0)
		_exit(unshare(CLONE_NEWUSER) == 0 && unshare(CLONE_NEWNET) == 0 ? 0 : 1);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

size_t confinfo_probe(struct confinfo_layer *out)
{
	struct confinfo_layer *l = out;
	int abi = ll_abi();
	*l = (struct confinfo_layer){ .name = "landlock", .on = abi > 0 };
	if (abi > 0)
		snprintf(l->detail, sizeof(l->detail),
			 "on: %s (files%s%s%s) for QEMU, capsem-vm, the MCP servers, the "
			 "workspace's servers, mkfs, tar, capsem-gateway, capsemd",
			 ll_describe(), abi >= 3 ? ", truncate" : "", abi >= 4 ? ", TCP" : "",
			 abi >= 6 ? ", signal and abstract-socket scopes" : "");
	else
		snprintf(l->detail, sizeof(l->detail),
			 "off: Landlock %s: processes can open any file the user can",
			 ll_describe());

	l++;
	int sc = scf_available();
	*l = (struct confinfo_layer){ .name = "seccomp", .on = sc };
	snprintf(l->detail, sizeof(l->detail), "%s",
		 sc ? "on: QEMU's -sandbox; allow-lists for capsemd (inherited by all it starts), "
		      "capsem-vm (and its children), the workspace's 9p server, the key broker, "
		      "mkfs, tar, capsem-gateway"
		    : "off: the kernel offers no seccomp filters");

	l++;
	char why[512] = "", name[64];
	struct hostcg cg = HOSTCG_INIT;
	snprintf(name, sizeof(name), "capsem-doctor-%d", (int)getpid());
	int r = hostcg_create(&cg, name, 64u << 20, 16, why, sizeof(why));
	*l = (struct confinfo_layer){ .name = "cgroups", .on = r == 0 };
	char own[2048] = "";
	(void)hostcg_own_dir(HOSTCG_MEM, own, sizeof(own));
	if (r == 0)
		snprintf(l->detail, sizeof(l->detail),
			 "on: QEMU's memory and pids limits (a cgroup per VM beneath %.400s)", own);
	else
		snprintf(l->detail, sizeof(l->detail), "off: QEMU runs without %s limits: %.400s",
			 cg.dir[HOSTCG_MEM]    ? "pids"
			 : cg.dir[HOSTCG_PIDS] ? "memory"
					       : "memory, pids",
			 why);
	hostcg_remove(&cg);

	l++;
	int ns = confinfo_userns_ok();
	*l = (struct confinfo_layer){ .name = "userns", .on = ns };
	snprintf(l->detail, sizeof(l->detail), "%s",
		 geteuid() == 0 ? "on: not needed as root (QEMU's empty network namespace)"
		 : ns		? "on: QEMU's empty network namespace inside a user namespace"
				: "off: no unprivileged user namespaces: QEMU keeps the host's "
				  "network namespace (Landlock still denies it TCP)");

	l++;
	int kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	*l = (struct confinfo_layer){ .name = "audit-log", .on = kfd >= 0 };
	snprintf(l->detail, sizeof(l->detail), "%s",
		 kfd >= 0 ? "on: a process killed by seccomp is reported with its syscall's name"
			  : "off: /dev/kmsg unreadable: seccomp kills are reported without the "
			    "syscall's name");
	safe_close(kfd);

	/* the processes: what each gets, or the one line naming what is not enforced */
	int en = confinfo_enabled(), ll = en && abi > 0, scf = en && sc;
	static const struct {
		const char *name, *who, *on;
	} procs[] = {
		{ "capsemd", "capsemd's",
		  "on: no_new_privs, Landlock (its home, the images, the non-dot entries of $HOME, "
		  "/tmp; as root too), a seccomp allow-list inherited by everything it starts" },
		{ "mkfs", "mkfs.ext4's",
		  "on: no_new_privs, Landlock (writes only the new disk, no TCP), a seccomp "
		  "allow-list (files and memory; no sockets, no processes)" },
		{ "tar", "tar's",
		  "on: no_new_privs, Landlock (reads only what it archives or unpacks, writes only "
		  "the archive or beneath its target, no TCP), a seccomp allow-list (files and "
		  "memory; no sockets, no processes)" },
		{ "gateway", "capsem-gateway's",
		  "on: no_new_privs, Landlock (its run directory, /proc; no TCP bind or "
		  "connect), a seccomp allow-list (sockets; execve kills)" },
	};
	for (size_t i = 0; i < ELEMENTSOF(procs); i++) {
		l++;
		*l = (struct confinfo_layer){ .name = procs[i].name, .on = ll && scf };
		if (!en)
			snprintf(
				l->detail, sizeof(l->detail),
				"off: CAPSEM_CONFINE=0: %s Landlock ruleset and seccomp allow-list "
				"not enforced",
				procs[i].who);
		else if (ll && scf)
			snprintf(l->detail, sizeof(l->detail), "%s", procs[i].on);
		else
			snprintf(l->detail, sizeof(l->detail), "off: %s %s not enforced",
				 procs[i].who,
				 !ll && !scf ? "Landlock ruleset and seccomp allow-list"
				 : !ll	     ? "Landlock ruleset"
					     : "seccomp allow-list");
	}

	l++;
	*l = (struct confinfo_layer){ .name = "virtiofsd", .on = 1 };
	if (geteuid() != 0)
		snprintf(l->detail, sizeof(l->detail), "%s",
			 "on: not used as a normal user (a workspace is served over 9p)");
	else if (confinfo_virtiofsd_chroot())
		snprintf(l->detail, sizeof(l->detail), "%s",
			 "on: chroot into the workspace inside its own Landlock ruleset (the "
			 "workspace only) and an empty network namespace; its seccomp filter");
	else
		snprintf(l->detail, sizeof(l->detail), "%s",
			 "on: its namespace sandbox (pivot_root into the workspace) and seccomp "
			 "filter; without Landlock capsemd's filter lets mount and pivot_root "
			 "through for it");
	return CONFINFO_LAYERS;
}
