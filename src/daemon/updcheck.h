/* updcheck.h - capsemd's periodic update check (updcheck.c), off by default. */
#pragma once

#include <uv.h>

#include "relload.h"

struct updcheck;
/* Look at the setting a minute after the start (CAPSEM_UPDATE_CHECK_FIRST_MS for tests), then
 * hourly, and check when due. fetch_init() must have run on the main thread. */
int updcheck_start(uv_loop_t *loop, const char *home, struct updcheck **ret);
