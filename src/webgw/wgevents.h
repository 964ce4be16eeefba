/* wgevents.h - capsem-gateway's /events WebSocket: pushes {"type":"status","payload":STATUS}
 * whenever capsemd's aggregated status changes (GET /status long-poll, docs/API.md) and
 * {"type":"ledger","vm":ID,"events":[...]} for new ledger rows of running VMs (GET
 * /vms/{id}/events long-polls). capsemd is followed only while a browser listens.
 */
#pragma once

#include <uv.h>

#include "httpd.h"

struct wgevents;

/* 0 or -errno. */
int wgevents_new(uv_loop_t *loop, const char *capsemd_sock, struct wgevents **ret);
/* Serve an upgrade request (token already checked). The connection is answered either way. */
void wgevents_attach(struct wgevents *e, struct httpd_conn *c, const struct http_msg *req);
