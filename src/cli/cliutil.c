/* cliutil.c - pure helpers of the capsem command: -e/--mount/size/name/cp-path parsing and the
 * formatting of sizes and ages for tables.
 *
 * Trust boundary: the user's own arguments (validated strictly so mistakes get one clear line)
 * and timestamps from the daemon's JSON (parsed strictly). Main thread of the CLI; no I/O.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>

#include "cliutil.h"
#include "macro.h"
#include "parse.h"
#include "strv.h"

int cli_parse_env(const char *arg, char ***env)
{
	const char *eq = strchr(arg, '=');
	if (!*arg || eq == arg)
		return -EINVAL;
	if (eq)
		return strv_push(env, arg);
	const char *hv = getenv(arg);
	if (!hv)
		return -EINVAL;
	return strv_pushf(env, "%s=%s", arg, hv);
}

int cli_parse_mount(const char *arg, const char *cwd, json_t **ret)
{
	_cleanup_free_ char *copy = strdup(arg), *host = NULL;
	if (!copy)
		return -ENOMEM;
	int ro = 0;
	size_t n = strlen(copy);
	if (n > 3 && streq(copy + n - 3, ":ro")) {
		ro = 1;
		copy[n - 3] = 0;
	} else if (n > 3 && streq(copy + n - 3, ":rw")) {
		copy[n - 3] = 0;
	}
	char *colon = strrchr(copy, ':');
	if (!colon || colon == copy || colon[1] != '/')
		return -EINVAL;
	*colon = 0;
	const char *guest = colon + 1;
	if (copy[0] == '/') {
		host = strdup(copy);
	} else {
		if (!cwd)
			return -EINVAL;
		if (asprintf(&host, "%s/%s", cwd, copy) < 0)
			host = NULL;
	}
	if (!host)
		return -ENOMEM;
	json_t *o = json_pack("{s:s, s:s, s:b}", "host", host, "guest", guest, "ro", ro);
	if (!o)
		return -ENOMEM;
	*ret = o;
	return 0;
}

int cli_valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 63)
		return 0;
	if (!islower((unsigned char)s[0]) && !isdigit((unsigned char)s[0]))
		return 0;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!islower(c) && !isdigit(c) && c != '_' && c != '.' && c != '-')
			return 0;
	}
	return 1;
}

int cli_parse_cp_path(const char *arg, char **ret_ref, char **ret_path)
{
	const char *colon = strchr(arg, ':');
	if (!colon || colon == arg)
		return 0;
	_cleanup_free_ char *ref = strndup(arg, (size_t)(colon - arg));
	if (!ref)
		return -ENOMEM;
	if (!cli_valid_name(ref))
		return 0; /* a local path that happens to contain ':' */
	if (colon[1] != '/')
		return -EINVAL;
	char *path = strdup(colon + 1);
	if (!path)
		return -ENOMEM;
	*ret_ref = TAKE_PTR(ref);
	*ret_path = path;
	return 1;
}

char *cli_cp_target(const char *dst, const char *src)
{
	size_t n = strlen(dst);
	char *p = NULL;
	if (n == 0 || dst[n - 1] != '/')
		return strdup(dst);
	/* the base name of src, ignoring trailing slashes */
	size_t e = strlen(src);
	while (e > 0 && src[e - 1] == '/')
		e--;
	size_t b = e;
	while (b > 0 && src[b - 1] != '/')
		b--;
	if (b == e || (e - b == 1 && src[b] == '.') ||
	    (e - b == 2 && src[b] == '.' && src[b + 1] == '.'))
		return NULL;
	if (asprintf(&p, "%s%.*s", dst, (int)(e - b), src + b) < 0)
		return NULL;
	return p;
}

void cli_format_mib(uint64_t mib, char *out, size_t n)
{
	if (mib == 0)
		snprintf(out, n, "-");
	else if (mib % 1024 == 0)
		snprintf(out, n, "%" PRIu64 "G", mib / 1024);
	else if (mib > 1024 && (mib * 10) % 1024 == 0)
		snprintf(out, n, "%" PRIu64 ".%" PRIu64 "G", mib / 1024, (mib % 1024) * 10 / 1024);
	else
		snprintf(out, n, "%" PRIu64 "M", mib);
}

static int digits(const char *s, int n, int *ret)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return 0;
}

int cli_parse_time(const char *s, time_t *ret)
{
	struct tm tm = {};
	int y, mo, d, h, mi, se;
	if (strlen(s) < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
	    s[7] != '-' || digits(s + 8, 2, &d) || s[10] != 'T' || digits(s + 11, 2, &h) ||
	    s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &se))
		return -EINVAL;
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (!streq(p, "Z") && !streq(p, "+00:00"))
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	*ret = timegm(&tm);
	return 0;
}

void cli_format_age(int64_t secs, char *out, size_t n)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(out, n, "%" PRId64 "s", secs);
	else if (secs < 2 * 3600)
		snprintf(out, n, "%" PRId64 "m", secs / 60);
	else if (secs < 2 * 86400)
		snprintf(out, n, "%" PRId64 "h", secs / 3600);
	else
		snprintf(out, n, "%" PRId64 "d", secs / 86400);
}
