/* kbuild.h - the "kernel" step: build the guest kernel (stripped ELF vmlinux) from Debian's linux-source-6.1 and a
 * config fragment, cached under <cache>/kernel/<key16>/ (see kbuild.c for the layout). */
#pragma once

#include "sha256.h"

#define KBUILD_ARCH "x86_64"
#define KBUILD_FILE "vmlinux" /* stripped ELF with a PVH entry note */

struct kbuild_opts {
	const char *fragment; /* config fragment path */
	const char *cache;    /* cache root (resolved) */
	const char *source;   /* kernel source tarball */
	unsigned jobs;	      /* make -j */
};

struct kbuild_result {
	char key[SHA256_HEX_LEN + 1];
	char *dir;     /* <cache>/kernel/<key16> */
	char *path;    /* <dir>/vmlinux */
	char *release; /* kernel release, e.g. "6.1.192-capsem" */
	double seconds;
	int cached; /* 1 when nothing had to be built */
};

/* Find or build the kernel. Progress and errors are printed (one clear line for an error);
 * returns 0 with *ret filled (release with kbuild_result_done()) or -errno. */
int kbuild_run(const struct kbuild_opts *o, struct kbuild_result *ret);
void kbuild_result_done(struct kbuild_result *r);

/* "capsem-builder kernel [OPTIONS]": argv[0] is "kernel". Returns the process exit status. */
int cmd_kernel(int argc, char **argv);
