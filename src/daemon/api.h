/* api.h - the routes of docs/API.md on top of httpd (transport) and vmctl (the VMs). */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "http.h"
#include "httpd.h"
#include "list.h"
#include "vmctl.h"

struct snapapi;

struct api {
	uv_loop_t *loop;
	struct vmctl *vms;
	/* long-polls of the events routes waiting for a commit (ledgerapi.c) */
	struct list_link ledger_waits;
	uint64_t ledger_seq;  /* commit notices seen so far, from every VM */
	struct snapapi *snap; /* automatic workspace snapshots (snapapi.c) */
};

/* Parse a request's JSON body (empty = {}; nesting capped at HTTP_MAX_JSON_DEPTH, duplicate
 * keys refused). A new reference, or NULL after answering 400 on c. */
json_t *api_body_json(struct httpd_conn *c, const struct buf *body);

/* httpd callbacks; userdata is a struct api. */
void api_handle(struct httpd_conn *c, const struct http_msg *req, struct buf *body, void *userdata);
uint64_t api_body_cap(const struct http_msg *req, void *userdata);
