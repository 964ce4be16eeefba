/* ibuild.h - the "initramfs" step: the minimal initramfs (layout in initramfs.h), cached under
 * <cache>/initramfs/<key16>/{initrd.img,build.json}. */
#pragma once

#include <stdint.h>

#include "initramfs.h"
#include "sha256.h"

#define IBUILD_DEFAULT_BUSYBOX "/bin/busybox"
#define IBUILD_DEFAULT_NFT "/usr/sbin/nft"

struct ibuild_opts {
	const char *guest_bin; /* static capsem-guest */
	const char *busybox;   /* static busybox */
	const char *nft;   /* nft (dynamic, Debian's); NULL = IBUILD_DEFAULT_NFT, "none" = skip */
	const char *cache; /* cache root (resolved) */
	enum initramfs_compress compress;
};

struct ibuild_result {
	char key[SHA256_HEX_LEN + 1];
	char *dir;  /* <cache>/initramfs/<key16> */
	char *path; /* <dir>/initrd.img */
	uint64_t size;
	double seconds;
	int cached;
};

/* Find or build the initramfs. Errors are printed; 0 with *ret filled, or -errno. */
int ibuild_run(const struct ibuild_opts *o, struct ibuild_result *ret);
void ibuild_result_done(struct ibuild_result *r);

/* "capsem-builder initramfs [OPTIONS]". Returns the process exit status. */
int cmd_initramfs(int argc, char **argv);
