/* wsaudit.h - the workspace's file audit: which files of a shared folder changed, as a stream of
 * coalesced changes (created, modified, deleted, renamed, and summaries for noise directories),
 * seen host-side with inotify and checked by a reconciliation pass.
 *
 * The auditor keeps an index of the tree as the changes it has reported describe it. inotify
 * events only mark paths as touched (a bounded set); a path is resolved against the index once it
 * has been quiet for quiet_ms (or touched for max_delay_ms), so an editor's write-rename-chmod
 * burst is one row and a file created and removed within the window is none. A renamed file or
 * directory that was reported before is one "renamed" row. A queue overflow (the kernel's or
 * ours) never loses a change: it triggers a reconciliation, a walk that compares the tree with
 * the index and reports every difference (source "scan"), as the pass at the end does.
 * Changes below a noise directory (.git/objects, node_modules, __pycache__, caches, virtualenvs)
 * are counted into one "summary" row per directory and flush instead of one row each.
 *
 * Every open and stat goes through wstree (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
 * Single-threaded: one owner calls everything (capsem-vm's loop thread).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define WSAUDIT_QUIET_MS 200	    /* a path is resolved after this long without an event... */
#define WSAUDIT_MAX_DELAY_MS 2000   /* ...or this long after its first */
#define WSAUDIT_MAX_PENDING 65536u  /* touched paths waiting; more = a reconciliation */
#define WSAUDIT_MAX_INDEX 1000000u  /* paths the index holds; beyond, they are not tracked */
#define WSAUDIT_MAX_NOISE_ROOTS 256 /* distinct noise directories summarised per flush */

/* One change, valid during the callback only. */
struct wsaudit_change {
	int64_t ts;	      /* ms since the epoch: the last event of the path, or the scan */
	const char *action;   /* "created", "modified", "deleted", "renamed", "summary" */
	const char *path;     /* relative to the workspace root */
	const char *old_path; /* renamed: the previous path; else NULL */
	const char *type;     /* "file", "dir", "symlink", "other"; NULL for a summary */
	int64_t size;	      /* file/symlink size now; summary: bytes of its files now; -1 */
	int64_t count;	      /* summary: how many changes it stands for; else -1 */
	const char *detail;   /* summary: "created N, modified N, deleted N, renamed N" */
	const char *source;   /* "watch" or "scan" */
};

typedef void (*wsaudit_cb)(const struct wsaudit_change *c, void *userdata);

struct wsaudit_stats {
	uint64_t events;    /* inotify events read */
	uint64_t changes;   /* changes reported (a summary counts once) */
	uint64_t overflows; /* queue overflows (each followed by a reconciliation) */
	uint64_t scans;	    /* reconciliation passes */
	uint64_t unwatched; /* directories without a watch (the kernel's limit) */
	uint64_t untracked; /* paths left out of the index (WSAUDIT_MAX_INDEX) */
	uint64_t watches;   /* directories watched now */
	uint64_t indexed;   /* paths in the index now */
};

struct wsaudit;

/* Watch the tree below root (a directory; its fd is dup'ed) and index it (no changes reported
 * for what is there). 0 with *ret, or -errno (-ENOSPC when not even the root can be watched). */
int wsaudit_new(int rootfd, wsaudit_cb cb, void *userdata, struct wsaudit **ret);
void wsaudit_free(struct wsaudit *a);

/* The inotify descriptor (non-blocking): readable = call wsaudit_read(). */
int wsaudit_fd(const struct wsaudit *a);

/* Read what inotify has (a bounded amount per call). 0 or -errno. */
int wsaudit_read(struct wsaudit *a, int64_t now_ms);

/* Resolve the touched paths that are due (all of them when all is set) and report their changes,
 * running a reconciliation first when an overflow asked for one. The ms until the next path is
 * due, or -1 when none is waiting. */
int64_t wsaudit_flush(struct wsaudit *a, int64_t now_ms, int all);

/* Flush everything, then walk the whole tree and report every difference from the index (source
 * "scan"); directories without a watch get one. The pass at stop. 0 or -errno. */
int wsaudit_reconcile(struct wsaudit *a, int64_t now_ms);

void wsaudit_get_stats(const struct wsaudit *a, struct wsaudit_stats *ret);

/* The length of the noise directory that contains path ("a/node_modules" for
 * "a/node_modules/x/y.js"), or 0 when path is not below one. Pure. */
size_t wsaudit_noise_root(const char *path);
