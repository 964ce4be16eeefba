/* util.h - capsem-builder's file and path helpers: where things live, atomic copies and
 * directory publication, timing. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define UTIL_DEFAULT_TARBALL "/usr/src/linux-source-6.1.tar.xz"

/* The cache root: opt if given, else $CAPSEM_CACHE, else $HOME/.cache/capsem. malloc'ed or NULL
 * (out of memory). */
char *util_cache_root(const char *opt);
/* The images directory: opt, else $CAPSEM_IMAGES_DIR, else $CAPSEM_HOME/images, else
 * $HOME/.capsem/images (the same lookup as the capsem CLI). malloc'ed or NULL. */
char *util_images_dir(const char *opt);

/* Seconds on the monotonic clock. */
double util_now(void);

/* 1 when path exists (following symlinks) and is a regular file / a directory. */
int util_is_file(const char *path);
int util_is_dir(const char *path);

/* Copy src to dst atomically: a temp file next to dst, fsync, rename; dst gets mode. 0/-errno. */
int util_copy_atomic(const char *src, const char *dst, unsigned mode);

/* Publish a fully written staging directory as final with rename(2). When final already exists
 * (another builder won the race) the staging directory is removed and 0 is returned. */
int util_publish_dir(const char *stage, const char *final);

/* Replace final by stage atomically (renameat2 RENAME_EXCHANGE, then remove the old tree), or
 * a plain rename when final does not exist yet. 0 or -errno. */
int util_replace_dir(const char *stage, const char *final);

/* Read a whole regular file of at most max bytes (-EFBIG beyond; -EINVAL when not a regular
 * file) into malloc'ed memory, NUL-terminated as a convenience. 0 or -errno. */
int util_read_file(const char *path, size_t max, char **ret, size_t *ret_len);

/* Make a fresh directory "<parent>/.<prefix>.tmp-XXXXXX" (mode 0755); malloc'ed path. 0/-errno. */
int util_mkdtemp(const char *parent, const char *prefix, char **ret);

/* Cached artefacts: <dir>/<file> plus <dir>/build.json, an object whose "output" member is
 * {"file": <file>, "sha256": <hex>, "size": <bytes>}, and other members the step chose.
 *
 * util_cache_check() returns 0 with *ret_info (a jansson object; json_decref()) when <dir>/<file>
 * is present and matches the recorded size and SHA-256, -ENOENT when the entry is absent, or
 * -EBADMSG when it exists but is damaged (*ret_why gets a static reason). */
struct json_t;
int util_cache_check(const char *dir, const char *file, struct json_t **ret_info,
		     const char **ret_why);
/* Hash <dir>/<file>, set info["output"], write <dir>/build.json atomically. 0 or -errno. */
int util_cache_write_info(const char *dir, const char *file, struct json_t *info);

/* Online CPUs (at least 1): the default for make -j. */
unsigned util_default_jobs(void);
/* Parse a --jobs value: 1..1024. 0 or -EINVAL. */
int util_parse_jobs(const char *s, unsigned *ret);
