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
 *
 * A fork image (`capsem fork VM IMAGE`) has no kernel, initrd or rootfs of its own: it names its
 * base, a sibling directory, and the SHA-256 of the base's manifest.json when the fork was made,
 * and carries the VM's disk as a template (and, when the VM owned its workspace, an archive of
 * it):
 *
 *   {"format": 1, "name": "py-env", "arch": "x86_64", "created": "...",
 *    "base": {"name": "debian", "manifest_sha256": "<64 hex>"},
 *    "disk": {"file": "disk.img", "sha256": "...", "size": 4294967296},
 *    "workspace": {"file": "workspace.tar", "sha256": "...", "size": 10240},
 *    "parent_vm": "dev (3f2a...)", "description": "python 3.12 and the repo cloned"}
 *
 * Loading a fork loads its base too: kernel, initrd and rootfs are the base's (their paths in the
 * base's directory), so a caller that boots images needs nothing else. A base is never a fork
 * (flat genealogy: a fork of a fork names the first fork's base). Verifying a fork verifies its
 * own files, that the base's manifest.json still hashes to what the fork recorded (a rebuilt
 * base is refused: the fork's disk was made on the old one), and the base's files.
 *
 * Verification hashes every file; to keep boots fast, manifest_verify() remembers each file it
 * verified in <image_dir>/.verified (inode, size, mtime and ctime with the hash) and hashes a
 * file again only when one of those changed. The package's images (read-only, in /usr) keep
 * theirs in the caller's <capsem home>/cache/verified/<name>.json instead: a boot never writes
 * into the system's directories. ctime cannot be set by a process, so a file
 * changed after its verification is hashed again; whoever can write the image directory could
 * edit the manifest itself, so the cache adds no trust.
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
	int sparse;    /* "hash": "sparse-64k": sha256 is sha256_hex_fd_sparse()'s (VM disks) */
};

struct manifest {
	char *dir; /* the image directory as given to manifest_load() */
	char *name;
	char *arch;
	char *created;
	struct manifest_asset kernel;
	struct manifest_asset initrd;
	struct manifest_asset rootfs; /* optional: rootfs.file is NULL when the image has none */
	/* fork images: kernel, initrd and rootfs above are the base's */
	char *base;			      /* the base image's name; NULL for a base image */
	char base_sha256[SHA256_HEX_LEN + 1]; /* of the base's manifest.json when forked */
	char *base_dir;			      /* the base's directory (sibling of dir) */
	struct manifest_asset disk;	      /* the VM disk template (required in a fork) */
	struct manifest_asset workspace;      /* an archive of the VM's own workspace, optional */
	char *parent_vm, *description;	      /* optional */
};

#define MANIFEST_IMAGE_NAME_MAX 64
/* 1 when s may name an image: [a-z0-9][a-z0-9_.-]{0,63} (a directory under the images dir). */
int manifest_image_name_valid(const char *s);

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
/* The same for a large sparse file (a disk): its digest is sha256_hex_fd_sparse()'s. */
int manifest_asset_from_sparse_file(struct manifest_asset *a, const char *dir, const char *name);

/* Write m as <image_dir>/manifest.json atomically (temp file + rename, mode 0644). m->created
 * NULL means "now". m->dir is ignored. With m->base set it is a fork manifest: base, disk and
 * the optional workspace, parent_vm and description are written, kernel/initrd/rootfs are not.
 * 0 or -errno. */
int manifest_write(const char *image_dir, const struct manifest *m);

/* Current UTC time as "YYYY-MM-DDTHH:MM:SSZ"; $SOURCE_DATE_EPOCH instead when set (a
 * reproducible build records the commit's time). */
void manifest_now(char ret[32]);

void manifest_asset_done(struct manifest_asset *a);
/* Free a manifest; accepts NULL. */
void manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free)
#define _cleanup_manifest_ _cleanup_(manifest_freep)
