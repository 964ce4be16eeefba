/* jsonutil.h - jansson values under the cleanup convention of macro.h.
 *
 * A json_t declared _cleanup_json_ is released (json_decref, which accepts NULL) when it leaves
 * scope; TAKE_PTR() hands the reference on. jansson.h itself defines json_decrefp (the cleanup
 * behind its json_auto_t); this names it like our other cleanup macros. Header only.
 */
#pragma once

#include <jansson.h>

#include "macro.h"

#define _cleanup_json_ _cleanup_(json_decrefp)
