/* snapstore.h - snapshots of a workspace the guest can write, kept by the host: content-addressed
 * objects (each file's bytes stored once across all snapshots), one manifest per snapshot, a
 * persisted stat cache so a snapshot costs time in proportion to what changed.
 *
 * Store layout (docs/ARCHITECTURE.md "Workspace snapshots"):
 *   <store>/lock                 flock: LOCK_EX around every change, LOCK_SH around reads
 *   <store>/index.json           the snapshots, oldest first, with their summaries
 *   <store>/snaps/<name>.json    a snapshot's manifest: every entry's path, type, mode, owner,
 *                                size, mtime and sha256 (files) or target (symlinks)
 *   <store>/objects/ab/<sha256>  file contents (written to tmp/, then renamed)
 *   <store>/statcache.json       path -> dev, ino, size, mtime_ns, ctime_ns -> sha256
 *   <store>/tmp/                 temporary files
 *
 * Everything inside the workspace is reached through wstree.h (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): symlinks are recorded as text, never followed.
 * A handle may be used from any thread (one operation at a time, a mutex); two handles, in one
 * or two processes, on one store exclude each other with the flock.
 *
 * Every function returns 0 or -errno and leaves its out-parameters untouched on failure. Result
 * objects are new jansson references owned by the caller. Errors: -EINVAL (a bad name or path),
 * -ENOENT (no such snapshot; no snapshot at all for NULL = newest), -EEXIST (duplicate name),
 * -E2BIG (more than SNAPSTORE_ENTRIES_MAX entries), -EBADMSG (a damaged store file).
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define SNAPSTORE_AUTO_KEEP_DEFAULT 12
#define SNAPSTORE_ENTRIES_MAX 1000000u /* entries (files, directories, symlinks) per snapshot */
#define SNAPSTORE_NAME_MAX 64
#define SNAPSTORE_LIST_MAX 5000 /* entries per array in a changes/revert result ("truncated") */
#define SNAPSTORE_AUTO_PREFIX "auto-"

struct snapstore;

struct snapstore_opts {
	/* automatic snapshots kept (the ring); 0 = SNAPSTORE_AUTO_KEEP_DEFAULT */
	unsigned auto_keep;
};

/* 1 when name may be given to a named snapshot: [A-Za-z0-9][A-Za-z0-9._-]{0,63}, not starting
 * with "auto-" (the automatic snapshots' names). */
int snapstore_name_valid(const char *name);

/* Open (creating it, 0700, when missing; its parent must exist) the store store_dir for the
 * workspace directory workspace_dir (which must exist). -EINVAL when the store is inside the workspace or the
 * workspace inside the store (compared by device and inode up to "/", never by string). o may be
 * NULL (defaults). 0 with *ret (free with snapstore_free). */
int snapstore_open(const char *store_dir, const char *workspace_dir, const struct snapstore_opts *o,
		   struct snapstore **ret);
/* Close the handle (accepts NULL). */
void snapstore_free(struct snapstore *s);
static inline void snapstore_freep(struct snapstore **s)
{
	snapstore_free(*s);
}

/* Take a snapshot. name NULL: an automatic one, "auto-<seq>", in the ring of auto_keep (older
 * automatic ones are deleted and their unreferenced objects compacted); skipped when the
 * workspace has not changed since the newest snapshot: {"created": false, "reason":
 * "unchanged", "newest": NAME, ...}. Else {"created": true, "snapshot": SUMMARY,
 * "hashed_files", "hashed_bytes", "cached_files", "new_objects", "new_object_bytes",
 * "unstable": [PATH...], "skipped_special", "skipped_long_paths", "pruned": [NAME...],
 * "freed_bytes", "elapsed_ms"}. SUMMARY = {"name", "auto", "seq", "time", "time_ns", "files",
 * "dirs", "symlinks", "bytes", "unstable", "tree"}. -EEXIST for a name taken, -EINVAL for a bad
 * one. */
int snapstore_create(struct snapstore *s, const char *name, json_t **ret);
/* {"snapshots": [SUMMARY...] newest first, "auto_keep": N}. */
int snapstore_list(struct snapstore *s, json_t **ret);
/* What changed between snapshot snap (NULL = the newest) and the workspace now:
 * {"snapshot": NAME, "added": [CHANGE...], "modified": [CHANGE...], "deleted": [CHANGE...],
 * "counts": {"added", "modified", "deleted"}, "truncated": bool, "hashed_files": N}; CHANGE =
 * {"path", "type": "file"|"dir"|"symlink", "size"} (+ "old_size" for modified). */
int snapstore_changes(struct snapstore *s, const char *snap, json_t **ret);
/* Restore each of paths (NULL-terminated; relative to the workspace, "" or "." = all of it; a
 * file or a directory tree) as it is in snapshot snap (NULL = the newest): byte-identical
 * content, mode (set-id bits dropped), mtime, and, when running as root, the recorded owner.
 * A path absent in the snapshot is deleted. Each file is written to a temporary file in its own
 * directory, fsync'ed and renamed over the old one: never half-written. A path whose parent is
 * no longer a directory (e.g. a symlink) is not touched and reported in "errors".
 * {"snapshot", "written": [PATH...], "deleted": [PATH...], "unchanged": N, "errors": [{"path",
 * "error"}], "truncated": bool}. */
int snapstore_revert(struct snapstore *s, const char *snap, char *const *paths, json_t **ret);
/* The versions of one path across all snapshots, newest first: {"path", "versions":
 * [{"snapshot", "auto", "time", "present": bool, "type", "size", "sha256" (files), "target"
 * (symlinks), "mode", "changed": bool (differs from the next older snapshot)}]}. */
int snapstore_history(struct snapstore *s, const char *path, json_t **ret);
/* Delete a snapshot (its manifest; objects stay until snapstore_compact). -ENOENT. */
int snapstore_delete(struct snapstore *s, const char *name);
/* Delete objects no manifest references and stale temporary files: {"removed_objects",
 * "kept_objects", "freed_bytes"}. */
int snapstore_compact(struct snapstore *s, json_t **ret);
