/* policyapi.h - GET /policy and POST /policy/check (docs/API.md "For the web UI"). */
#pragma once

#include "api.h"

void policyapi_show(struct api *a, struct httpd_conn *c);
void policyapi_check(struct api *a, struct httpd_conn *c, const struct buf *body);
