/* confinfo.h - which host confinement layers this host and user have (confinfo.c): what
 * `capsem doctor` lists and what capsem-vm checks before relying on a layer. Any thread. */
#pragma once

#include <stddef.h>

struct confinfo_layer {
	const char *name; /* "landlock", "seccomp", "cgroups", "userns", "audit-log" */
	int on;
	char detail[512]; /* starts with what is enforced, or why not */
};

#define CONFINFO_LAYERS 5

/* Probe every layer into out[CONFINFO_LAYERS] (cgroups: a cgroup is made and removed; userns:
 * a child unshares). Returns CONFINFO_LAYERS. */
size_t confinfo_probe(struct confinfo_layer *out);

/* Whether this process may make the empty network namespace QEMU runs in: root directly, a
 * normal user inside a user namespace of its own (a forked child tries). 1 or 0. */
int confinfo_userns_ok(void);
