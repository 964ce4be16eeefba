/* fork.h - POST /vms/{ref}/fork: make a fork image of a VM (fork.c, docs/API.md "Fork"). */
#pragma once

#include "api.h"
#include "buf.h"

/* Answer c: 201 with {image, dir, base, parent_vm, description, disk_size, disk_used,
 * workspace, elapsed_ms} once the image is installed, or an error (400 bad name or body, 409
 * name taken / ephemeral or busy VM, 503 guest unreachable, 500). */
void fork_route(struct api *a, struct httpd_conn *c, struct vm *vm, const struct buf *body);
