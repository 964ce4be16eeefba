/* release.h - a release channel's manifest (what `capsem update` reads): parse, verify its
 * detached Ed25519 signature, compare versions, resolve asset URLs. Pure apart from reading the
 * public key file; fetch.h downloads what it names.
 *
 * The manifest (docs/PROTOCOL.md "Release channel") is JSON, at most RELEASE_MAX_BYTES:
 *   {"format": 1, "channel": "stable", "version": "0.2.0", "released": "...",
 *    "package": {"url": U, "size": N, "sha256": H},
 *    "images": {"debian": {"assets": [{"file": "vmlinux", "url": U, "size": N, "sha256": H},
 *                                     ...]}}}
 * and its signature is the 64 raw bytes of Ed25519 over the manifest's exact bytes, at the
 * manifest's URL + ".sig". URLs may be relative to the manifest's. Every image carries its own
 * manifest.json among its assets (the image manifest of src/shared/manifest.h), so an image
 * installed from a channel verifies exactly like one built here.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "sha256.h"

#define RELEASE_MAX_BYTES (1u << 20)
#define RELEASE_MAX_IMAGES 16
#define RELEASE_MAX_ASSETS 8
#define RELEASE_MAX_ASSET_SIZE (64ULL << 30)
#define RELEASE_SIG_LEN 64

struct release_file {
	char *file; /* plain name inside the image directory (images only) */
	char *url;  /* as written: absolute, or relative to the manifest */
	uint64_t size;
	char sha256[SHA256_HEX_LEN + 1];
};

struct release_image {
	char *name;
	size_t n_assets;
	struct release_file assets[RELEASE_MAX_ASSETS];
};

struct release {
	char *channel;
	char *version;
	char *released;
	int has_package;
	struct release_file package;
	size_t n_images;
	struct release_image images[RELEASE_MAX_IMAGES];
};

/* Parse a manifest (hostile bytes until the signature is checked, and parsed strictly after:
 * unknown keys refused, names and file names checked, sizes capped, hashes 64 lowercase hex,
 * one manifest.json among each image's assets). 0 with *ret (release_free()), -EBADMSG with one
 * line in err, -ENOMEM. */
int release_parse(const char *text, size_t len, struct release **ret, char *err, size_t errlen);
void release_free(struct release *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct release *, release_free)
#define _cleanup_release_ _cleanup_(release_freep)

/* Check sig (siglen bytes) over msg with the Ed25519 public key in the PEM file pubkey_path.
 * 0 when it verifies; -EBADMSG (wrong signature or length), -ENOKEY (no usable key in the
 * file), -errno reading it; err says which. */
int release_verify(const void *msg, size_t len, const void *sig, size_t siglen,
		   const char *pubkey_path, char *err, size_t errlen);

/* Compare versions as dpkg does without epochs ("0.10.2" > "0.9", "1.0~rc1" < "1.0"). <0, 0,
 * >0. */
int release_version_cmp(const char *a, const char *b);
/* 1 when v is a version this code compares: 1..64 of [0-9A-Za-z.+~-], starting with a digit. */
int release_version_valid(const char *v);

/* url resolved against the manifest's URL base: absolute (scheme://) as is, else base's
 * directory + url. malloc'ed or NULL. */
char *release_resolve_url(const char *base, const char *url);
