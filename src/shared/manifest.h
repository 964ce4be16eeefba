/* manifest.h - the image manifest: what an image directory holds and the SHA-256 of each file.
 *
 * An image is a directory (e.g. ~/.capsem/images/minimal/) with a kernel, an initramfs and
 * manifest.json, written by capsem-builder and checked by capsem-vm before every boot:
 *
 *   {
 *     "format": 1,
 *     "name": "minimal",
 *     "arch": "x86_64",
 *     "kernel": {"file": "vmlinuz", "sha256": "<64 hex>", "size": 2257920,
 *                "version": "6.1.192-capsem"},
 *     "initrd": {"file": "initrd.img", "sha256": "<64 hex>", "size": 4183552},
 *     "rootfs": {"file": "rootfs.sqfs", "sha256": "<64 hex>", "size": 160563200},
 *     "created": "2026-11-22T05:40:11Z"
 *   }
 *
 * "rootfs" is optional: an image with one boots into that squashfs root file system (capsem-vm
 * --rootfs); manifests without it (the minimal image) stay valid.
 * "file" is a plain name inside the image directory (no '/', not starting with '.'); "size" is in
 * bytes; "sha256" is lowercase hex; "created" is UTC ISO 8601. Unknown keys are ignored, so a
 * later writer may add fields; a different "format" is refused. manifest.json is at most 64 KiB.
 *
 * The directory is not trusted: anything in it may have been replaced or truncated since it was
 * written, and manifest_verify() is how that is found. A verify-then-open sequence leaves a window
 * in which a file could be swapped again by someone with write access to the image directory;
 * that user can already change the images anyway.
 *
 * Library: links basic, jansson and libcrypto; never logs above debug; thread-safe (no globals).
 */
#pragma once

#include <stdint.h>

#include "macro.h"
#include "sha256.h"

#define MANIFEST_FILENAME "manifest.json"
#define MANIFEST_FORMAT 1
#define MANIFEST_MAX_BYTES (64 * 1024)

struct manifest_asset {
	char *file; /* plain name inside the image directory, e.g. "vmlinuz" */
	char *path; /* "<image_dir>/<file>" */
	char sha256[SHA256_HEX_LEN + 1];
	uint64_t size;
	char *version; /* kernel release for the kernel ("6.1.192-capsem"); NULL for the initrd */
};

struct manifest {
	char *dir; /* the image directory as given to manifest_load() */
	char *name;
	char *arch;
	char *created;
	struct manifest_asset kernel;
	struct manifest_asset initrd;
	struct manifest_asset rootfs; /* optional: rootfs.file is NULL when the image has none */
};

/* Parse and validate <image_dir>/manifest.json (its syntax and fields, not the files it names).
 * On success *ret is a new manifest owned by the caller (manifest_free()); kernel.path and
 * initrd.path (and rootfs.path when rootfs.file is set) are ready to hand to QEMU. Returns 0, -ENOENT when there is no manifest, -EFBIG
 * when it is over the size cap, -EBADMSG when it is malformed, or another -errno. */
int manifest_load(const char *image_dir, struct manifest **ret);
/* The parser behind manifest_load, on text already read (a file that may have been tampered
 * with: hostile). mpath names it in messages. Same returns as manifest_load; *ret_error (may be
 * NULL) gets a message on failure. */
int manifest_parse(const char *text, size_t len, const char *image_dir, const char *mpath,
		   struct manifest **ret, char **ret_error);

/* Load the manifest and check every file it names: a regular file (symlinks are refused), the
 * recorded size, then the SHA-256 of its contents. Returns 0 when all match. Otherwise -errno
 * (-EBADMSG for a bad manifest or a hash mismatch, -EMSGSIZE for a size mismatch, -ENOENT for a
 * missing file, ...) and, when ret_error is not NULL, *ret_error gets a malloc'ed one-line message
 * naming the bad file ("/path/initrd.img: size 1024 bytes, manifest says 4183552 (truncated?)"),
 * owned by the caller. *ret_error is untouched on success. */
int manifest_verify(const char *image_dir, char **ret_error);

/* Fill an asset from a file on disk: file = name, path = dir/name, size and sha256 from its
 * contents; version is copied when not NULL. The asset must be zeroed or released before. */
int manifest_asset_from_file(struct manifest_asset *a, const char *dir, const char *name,
			     const char *version);

/* Write m as <image_dir>/manifest.json atomically (temp file + rename, mode 0644). m->created
 * NULL means "now". m->dir is ignored. 0 or -errno. */
int manifest_write(const char *image_dir, const struct manifest *m);

/* Current UTC time as "YYYY-MM-DDTHH:MM:SSZ"; $SOURCE_DATE_EPOCH instead when set (a
 * reproducible build records the commit's time). */
void manifest_now(char ret[32]);

void manifest_asset_done(struct manifest_asset *a);
/* Free a manifest; accepts NULL. */
void manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free)
#define _cleanup_manifest_ _cleanup_(manifest_freep)
