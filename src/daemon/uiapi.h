/* uiapi.h - capsemd routes for the web UI and its gateway (docs/API.md "For the web UI"):
 * GET /status (aggregated, long-poll on the registry's revision), GET /vms/{ref}/stats,
 * GET /vms/{ref}/activity (paged, filtered ledger rows), GET /settings, and POST /gateway
 * (start capsem-gateway under the daemon's supervision and answer its port).
 */
#pragma once

#include "api.h"

/* Set up (the registry's change listener; --gateway-port: start the gateway now). 0 or
 * -errno. gateway_port < 0: not at start. */
int uiapi_init(struct api *a, int gateway_port);
void uiapi_status(struct api *a, struct httpd_conn *c, const char *query);
void uiapi_vm_stats(struct api *a, struct httpd_conn *c, struct vm *vm, const char *query);
void uiapi_vm_activity(struct api *a, struct httpd_conn *c, struct vm *vm, const char *query);
/* GET /vms/{ref}/tree: the VM's workspace folder (host side, walked with wstree.c: never
 * through a symlink), at most 5000 entries. */
void uiapi_vm_tree(struct api *a, struct httpd_conn *c, struct vm *vm);
void uiapi_settings(struct api *a, struct httpd_conn *c);
void uiapi_gateway(struct api *a, struct httpd_conn *c);
