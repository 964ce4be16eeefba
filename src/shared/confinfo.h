/* confinfo.h - which host confinement layers this host and user have (confinfo.c): what
 * `capsem doctor` lists and what capsem-vm checks before relying on a layer. Any thread. */
#pragma once

#include <stddef.h>

struct confinfo_layer {
	const char *name; /* "landlock", "seccomp", "cgroups", "userns", "audit-log", then the
			     processes: "capsemd", "mkfs", "tar", "gateway", "virtiofsd" */
	int on;
	char detail[512]; /* starts with what is enforced, or why not */
};

#define CONFINFO_LAYERS 10

/* Probe every layer into out[CONFINFO_LAYERS] (cgroups: a cgroup is made and removed; userns:
 * a child unshares). Returns CONFINFO_LAYERS. */
size_t confinfo_probe(struct confinfo_layer *out);

/* Whether the confinement layers of docs/ARCHITECTURE.md "Host confinement" are on: 1 unless
 * $CAPSEM_CONFINE is "0" (benchmarks only). */
int confinfo_enabled(void);

/* How the workspace's virtiofsd (root, a --no-suspendable VM) sandboxes itself: 1 when Landlock
 * is on (the kernel has it and confinfo_enabled()): capsemd's Landlock domain, which it
 * inherits, forbids mount and pivot_root, so it chroots into the workspace inside capsem-vm's
 * ruleset for it and an empty network namespace; 0: its own namespace sandbox (mount, PID and
 * network namespaces, pivot_root). capsemd's seccomp filter and capsem-vm follow the same
 * answer. */
int confinfo_virtiofsd_chroot(void);

/* Whether this process may make the empty network namespace QEMU runs in: root directly, a
 * normal user inside a user namespace of its own (a forked child tries). 1 or 0. */
int confinfo_userns_ok(void);
