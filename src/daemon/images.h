/* images.h - the installed guest images as capsemd sees them (images.c): list, delete, the
 * default. */
#pragma once

#include <jansson.h>

#include "vmctl.h"

#define IMAGES_FULL "debian"	 /* the default once it is installed */
#define IMAGES_MINIMAL "minimal" /* the default otherwise */

/* The image a VM gets when its spec names none: $CAPSEM_IMAGE when set (tests pin the image they
 * want), else IMAGES_FULL when <images_dir>/debian has a manifest, else IMAGES_MINIMAL. A static
 * or environment string. */
const char *images_default(const char *images_dir);

/* GET /images: the user's images and the system's ones they do not hide:
 * [{name, dir, default, system, arch, created, kernel, rootfs, size, in_use: [ids], and for
 * fork images base, parent_vm, description}], sorted by name; directories without a readable
 * manifest are listed with "error". NULL on ENOMEM. */
json_t *images_list(const char *images_dir, struct vmctl *vms);

/* DELETE /images/{name}: remove the image directory. 0, -EINVAL (not an image name), -ENOENT,
 * -EPERM (only the package's read-only image has that name),
 * -EBUSY (a running VM uses it: *ret_users gets their names or ids, malloc'ed), -ENOTEMPTY (fork
 * images are based on it: *ret_users gets their names), or -errno. */
int images_delete(const char *images_dir, const char *name, struct vmctl *vms, char **ret_users);
