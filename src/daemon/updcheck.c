/* updcheck.c - capsemd's periodic update check (updcheck.h; docs/ARCHITECTURE.md "Packaging").
 *
 * Off by default. `capsem update --auto daily|weekly|off` writes the setting into
 * $CAPSEM_HOME/settings.toml:
 *   [update]
 *   check = "daily"            # "off", "daily" or "weekly"
 *   channel = "https://..."    # optional: else $CAPSEM_UPDATE_URL, else the build's
 * The file is read again at every tick (hourly), so a change needs no restart. When a check is
 * due (never made, or older than the period), the channel's manifest is fetched and its
 * signature verified on libuv's thread pool (release_load: the same code as `capsem update`),
 * and the outcome is written to $CAPSEM_HOME/update.json:
 *   {"checked_at", "installed", "channel", "latest", "newer", "error"}
 * which GET /settings reports and `capsem version` mentions. Nothing is downloaded or installed:
 * that stays `capsem update --yes`, run by the user.
 *
 * Trust boundary: the manifest is network input, verified with the package's key before it is
 * parsed (relload.c); the settings file is the user's. Loop thread, one job on the pool.
 */
#include "updcheck.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "relload.h"

#define TICK_MS (3600u * 1000u) /* the setting and the last check are looked at hourly */
#define FIRST_MS (60u * 1000u)	/* the first look, a minute after the start */

struct updcheck {
	uv_loop_t *loop;
	char *home;
	uv_timer_t timer;
	uv_work_t work;
	bool busy;
	/* the job's input and output */
	char *url;
	char latest[64];
	char err[512];
	int r;
};

static char *path_in(const char *home, const char *name)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", home, name) < 0 ? NULL : p;
}

/* Seconds since the epoch of the last check, 0 for none. */
static int64_t last_checked(const char *home)
{
	json_t *j = updcheck_last(home);
	int64_t t = j ? json_integer_value(json_object_get(j, "checked_at_s")) : 0;
	json_decref(j);
	return t;
}

static void check_work(uv_work_t *w)
{
	struct updcheck *u = w->data;
	struct release *rel = NULL;
	u->err[0] = 0;
	u->latest[0] = 0;
	u->r = release_load(u->url, release_key_path(), &rel, u->err, sizeof(u->err));
	if (u->r == 0)
		snprintf(u->latest, sizeof(u->latest), "%s", rel->version);
	release_free(rel);
}

static void check_done(uv_work_t *w, int status)
{
	struct updcheck *u = w->data;
	u->busy = false;
	bool newer = u->r == 0 && release_version_cmp(u->latest, CAPSEM_VERSION) > 0;
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	json_t *j =
		json_pack("{s:s, s:I, s:s, s:s, s:o, s:b, s:o}", "checked_at", when, "checked_at_s",
			  (json_int_t)now, "installed", CAPSEM_VERSION, "channel", u->url, "latest",
			  u->r == 0 ? json_string(u->latest) : json_null(), "newer", newer, "error",
			  u->r == 0 ? json_null() : json_string(u->err));
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	_cleanup_free_ char *p = path_in(u->home, UPDCHECK_STATE);
	json_decref(j);
	if (!text || !p || write_file_atomic(p, text, strlen(text), 0644) < 0)
		log_warn("update check: cannot write %s", p ? p : UPDCHECK_STATE);
	if (status < 0 || u->r < 0)
		log_warn("update check: %s", u->err);
	else if (newer)
		log_info("update check: Capsem %s is available (installed %s): capsem update",
			 u->latest, CAPSEM_VERSION);
	else
		log_info("update check: %s is the newest (channel %s)", CAPSEM_VERSION, u->latest);
	free(u->url);
	u->url = NULL;
}

static void on_tick(uv_timer_t *t)
{
	struct updcheck *u = t->data;
	struct updcheck_settings s;
	char err[512];
	if (u->busy)
		return;
	if (updcheck_settings(u->home, &s, err, sizeof(err)) < 0) {
		log_warn("update check: %s", err);
		return;
	}
	if (s.period_s == 0)
		return;
	int64_t last = last_checked(u->home), now = (int64_t)time(NULL);
	if (last > 0 && now - last < s.period_s && now >= last)
		return;
	const char *url = s.channel[0] ? s.channel : release_channel_url();
	if (!url) {
		log_warn("update check: on, but no release channel is configured (capsem update "
			 "--auto %s --channel URL)",
			 s.period_s > 24 * 3600 ? "weekly" : "daily");
		return;
	}
	u->url = strdup(url);
	u->work.data = u;
	if (u->url && uv_queue_work(u->loop, &u->work, check_work, check_done) == 0)
		u->busy = true;
	else {
		free(u->url);
		u->url = NULL;
	}
}

int updcheck_start(uv_loop_t *loop, const char *home, struct updcheck **ret)
{
	struct updcheck *u = calloc(1, sizeof(*u));
	if (!u || !(u->home = strdup(home))) {
		free(u);
		return -ENOMEM;
	}
	u->loop = loop;
	uv_timer_init(loop, &u->timer);
	u->timer.data = u;
	uv_unref((uv_handle_t *)&u->timer); /* never what keeps the daemon alive */
	uint32_t first = FIRST_MS;
	const char *e = getenv("CAPSEM_UPDATE_CHECK_FIRST_MS"); /* tests */
	if (e && parse_u32(e, &first) < 0)
		first = FIRST_MS;
	uv_timer_start(&u->timer, on_tick, first, TICK_MS);
	*ret = u;
	return 0;
}
