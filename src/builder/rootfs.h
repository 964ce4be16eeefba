/* rootfs.h - the "rootfs" step: the Debian root file system image of an image config
 * (imgconfig.h), built in three cached layers (base, npm, image; see rootfs.c) and packed as
 * squashfs or erofs. */
#pragma once

#include "imgconfig.h"
#include "sha256.h"

#define ROOTFS_FILE_SQUASHFS "rootfs.sqfs"
#define ROOTFS_FILE_EROFS "rootfs.erofs"
#define ROOTFS_BUILD_INFO "build.json"

struct rootfs_layer {
	char key[SHA256_HEX_LEN + 1];
	char *dir;  /* <cache>/<kind>/<key16> */
	int cached; /* 1 when the cache holds a valid result */
	double seconds;
};

/* What building cfg takes: the layers' keys and whether each is cached. Computing it builds
 * nothing. */
struct rootfs_plan {
	struct rootfs_layer base, npm, image;
	int has_npm;	   /* 0 when the config installs no npm package: no npm layer */
	char **npm_specs;  /* "name@selector", sorted */
	char *config_json; /* imgcfg_to_json() */
	const char *file;  /* ROOTFS_FILE_SQUASHFS or ROOTFS_FILE_EROFS */
};

int rootfs_plan(const struct imgcfg *cfg, const char *cache, struct rootfs_plan *ret);
void rootfs_plan_done(struct rootfs_plan *p);

struct rootfs_result {
	struct rootfs_plan plan;
	char *path; /* <plan.image.dir>/<plan.file> */
	char *info; /* <plan.image.dir>/build.json: versions, packages, layer times */
	char *node_release;
	double seconds;
	int cached; /* 1 when nothing had to be built */
};

/* Find or build the rootfs of cfg under the cache root. Progress goes to stderr, one line per
 * step; errors are one clear line (and the tail of the step's log). 0 with *ret filled
 * (rootfs_result_done()) or -errno. Building needs root (mmdebstrap, chroot). */
int rootfs_run(const struct imgcfg *cfg, const char *cache, struct rootfs_result *ret);
void rootfs_result_done(struct rootfs_result *r);

/* The default config directory: <source root>/guest/config. */
const char *rootfs_default_config(void);

/* Load a config directory, printing every diagnostic as "FILE:LINE: CODE: message" on stderr.
 * 0 with *ret, or -EINVAL (diagnostics printed) / -ENOMEM. */
int rootfs_load_config(const char *dir, struct imgcfg **ret);

/* "capsem-builder rootfs [OPTIONS]": argv[0] is "rootfs". Returns the process exit status. */
int cmd_rootfs(int argc, char **argv);
