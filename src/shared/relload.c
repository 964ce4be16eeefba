/* relload.c - fetch and verify a release channel's manifest (relload.h).
 *
 * Trust boundary: the manifest and its signature are network input; the signature is checked
 * with the package's public key before anything is parsed (release.c parses strictly after).
 * Any thread, after fetch_init() on the main thread.
 */
#include "relload.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fetch.h"
#include "fdutil.h"
#include "macro.h"
#include "toml.h"

#define SETTINGS_MAX (64u * 1024u)

const char *release_key_path(void)
{
	const char *k = getenv("CAPSEM_UPDATE_KEY");
	return k && *k ? k : CAPSEM_DATADIR "/update.pub";
}

const char *release_channel_url(void)
{
	const char *e = getenv("CAPSEM_UPDATE_URL");
	return e && *e ? e : *CAPSEM_UPDATE_URL ? CAPSEM_UPDATE_URL : NULL;
}

int release_load(const char *url, const char *pubkey, struct release **ret, char *err,
		 size_t errlen)
{
	_cleanup_free_ char *text = NULL, *sig = NULL, *sigurl = NULL;
	size_t n = 0, sn = 0;
	int r = fetch_small(url, RELEASE_MAX_BYTES, &text, &n, err, errlen);
	if (r < 0)
		return r;
	if (asprintf(&sigurl, "%s.sig", url) < 0)
		return -ENOMEM;
	r = fetch_small(sigurl, 4096, &sig, &sn, err, errlen);
	if (r < 0) {
		size_t l = strlen(err);
		snprintf(err + l, errlen - l,
			 " (the manifest's signature: an unsigned manifest is never used)");
		return -EBADMSG;
	}
	/* the signature over the exact bytes, before a byte of them is parsed */
	r = release_verify(text, n, sig, sn, pubkey, err, errlen);
	if (r < 0)
		return r;
	return release_parse(text, n, ret, err, errlen);
}

/* ---- the periodic check's files in $CAPSEM_HOME ---- */

static char *home_path(const char *home, const char *name)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", home, name) < 0 ? NULL : p;
}

int updcheck_settings(const char *home, struct updcheck_settings *ret, char *err, size_t errlen)
{
	*ret = (struct updcheck_settings){ .period_s = 0 };
	_cleanup_free_ char *p = home_path(home, UPDCHECK_SETTINGS), *text = NULL;
	size_t n = 0;
	if (!p)
		return -ENOMEM;
	int r = read_file_small(p, SETTINGS_MAX, &text, &n);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return snprintf(err, errlen, "%s: %s", p, strerror(-r)), r;
	_cleanup_toml_free_ struct toml_value *root = NULL;
	struct toml_error te;
	if (toml_parse(text, n, &root, &te) < 0)
		return snprintf(err, errlen, "%s:%u: %s", p, te.line, te.msg), -EBADMSG;
	const struct toml_value *check = toml_get_path(root, "update.check");
	const struct toml_value *chan = toml_get_path(root, "update.channel");
	const char *c = NULL, *cv = NULL;
	size_t cl = 0;
	if (check && toml_get_string(check, &c, &cl) < 0)
		c = NULL;
	if (check && !c)
		return snprintf(err, errlen, "%s: update.check must be a string", p), -EBADMSG;
	if (!c || streq(c, "off"))
		ret->period_s = 0;
	else if (streq(c, "daily"))
		ret->period_s = 24 * 3600;
	else if (streq(c, "weekly"))
		ret->period_s = 7 * 24 * 3600;
	else
		return snprintf(err, errlen, "%s: update.check is \"%s\": off, daily or weekly", p,
				c),
		       -EBADMSG;
	if (chan && toml_get_string(chan, &cv, &cl) == 0)
		snprintf(ret->channel, sizeof(ret->channel), "%s", cv);
	return 0;
}

int updcheck_settings_write(const char *home, const char *check, const char *channel)
{
	_cleanup_free_ char *p = home_path(home, UPDCHECK_SETTINGS), *text = NULL;
	json_t *cs = channel ? json_string(channel) : NULL; /* a TOML basic string = JSON's */
	_cleanup_free_ char *cq = cs ? json_dumps(cs, JSON_ENCODE_ANY) : NULL;
	json_decref(cs);
	if (!p || (channel && !cq))
		return -ENOMEM;
	if (asprintf(&text,
		     "# capsemd's settings (written by `capsem update --auto`)\n"
		     "[update]\ncheck = \"%s\"\n%s%s%s",
		     check, cq ? "channel = " : "", cq ? cq : "", cq ? "\n" : "") < 0)
		return -ENOMEM;
	return write_file_atomic(p, text, strlen(text), 0644);
}

json_t *updcheck_last(const char *home)
{
	_cleanup_free_ char *p = home_path(home, UPDCHECK_STATE), *text = NULL;
	if (!p || read_file_small(p, 16384, &text, NULL) < 0)
		return NULL;
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}
