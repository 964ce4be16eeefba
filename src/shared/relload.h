/* relload.h - a release channel's manifest, fetched and verified (relload.c): what `capsem
 * update` and capsemd's periodic check read, and the check's setting and outcome files. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "release.h"

/* The public key the manifest must be signed with: $CAPSEM_UPDATE_KEY, else the package's
 * (CAPSEM_DATADIR/update.pub). */
const char *release_key_path(void);
/* The channel's URL: $CAPSEM_UPDATE_URL, else the build's (meson -Dupdate_url), else NULL. */
const char *release_channel_url(void);

/* Fetch url and url.sig (fetch_init() must have run), verify the signature over the exact
 * bytes with the key at pubkey before a byte is parsed, then parse strictly: 0 with *ret
 * (release_free), or -errno with one line in err (an unsigned or wrongly signed manifest is
 * never parsed). */
int release_load(const char *url, const char *pubkey, struct release **ret, char *err,
		 size_t errlen);

/* ---- capsemd's periodic check (src/daemon/updcheck.c): its files ---- */

#define UPDCHECK_SETTINGS "settings.toml" /* in $CAPSEM_HOME: [update] check, channel */
#define UPDCHECK_STATE "update.json"	  /* in $CAPSEM_HOME: the last check's outcome */

struct updcheck_settings {
	int64_t period_s;   /* 0: off */
	char channel[1024]; /* "" for the default */
};

/* The [update] settings of home's settings.toml (a missing file: off). 0, or -errno with one
 * line in err (-EBADMSG: a value that is not off/daily/weekly, or broken TOML). */
int updcheck_settings(const char *home, struct updcheck_settings *ret, char *err, size_t errlen);
/* Write home's settings.toml with check ("off", "daily" or "weekly") and channel (NULL: the
 * default), atomically. 0 or -errno. */
int updcheck_settings_write(const char *home, const char *check, const char *channel);
/* The last check's outcome (update.json), or NULL when none was made. */
json_t *updcheck_last(const char *home);
