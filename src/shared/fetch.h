/* fetch.h - download one file with resume and retry, and verify it (libcurl; file://, http://,
 * https://). Used by capsem update for the assets and packages a signed release manifest names.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FETCH_ATTEMPTS 4 /* one try and three retries, each resuming */

/* Called as bytes arrive: done of total. */
typedef void (*fetch_progress_fn)(void *ud, uint64_t done, uint64_t total);

/* Download url to path, resuming from what path already holds (a previous attempt's bytes),
 * never taking more than size bytes, retrying a failed transfer (back-off 1, 2, 4 s). Then
 * check the file's size and SHA-256 (lowercase hex). 0 when path holds exactly the expected
 * bytes; -EBADMSG when size or hash differ (path is deleted: a later try starts over), -EIO
 * when the transfer kept failing (path keeps the bytes it got, for a resume), -errno; err gets
 * one line saying which. progress may be NULL. Blocking; any thread (curl_global_init must have
 * run: fetch_init()). */
int fetch_verified(const char *url, const char *path, uint64_t size, const char *sha256,
		   fetch_progress_fn progress, void *ud, char *err, size_t errlen);
/* curl_global_init, once per process, before threads. 0 or -EIO. */
int fetch_init(void);
/* A small file (a manifest, a signature) into memory: at most max bytes, no resume. 0 with *ret
 * (malloc'ed, NUL-terminated after *ret_len bytes), -EFBIG, -EIO; err says why. */
int fetch_small(const char *url, size_t max, char **ret, size_t *ret_len, char *err, size_t errlen);
