/* builtin.c - the gateway's built-in tools (builtin.h).
 *
 * Web tools: one libcurl easy handle per call, GET (or HEAD for headers), http and https only,
 * no redirects followed (a redirect is reported with its Location so that the model asks again
 * and the new URL is decided by the policy again), body capped at BUILTIN_MAX_BODY, 30 s
 * timeout, no connection to a loopback or link-local address unless the URL names it as an IP
 * literal (httpmcp_guard). The URL sent has its path normalised as the caller decided it
 * (builtin_url_parse). HTML is turned into text (html.c); other text types are returned as
 * they are; binary types are refused. Pages are cut at UTF-8 boundaries (offset/max_length in
 * bytes).
 *
 * File tools: every path goes through gw_path_check() (relative, no "..") and then
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) from the workspace
 * directory, like every host-side access to the workspace (src/workspace/wstree.h): no symlink is
 * followed at all, so neither ".." nor a link the guest planted (it writes the shared directory,
 * and may swap a directory for a link between two calls) can take a lookup outside it.
 *
 * Trust boundary: tool arguments come from the guest's agent; fetched pages from the web. Runs
 * on the gateway's worker threads; no shared state (libcurl is initialised once by the caller).
 */
#include "builtin.h"

#include "config.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <regex.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "gwcheck.h"
#include "gwsnap.h"
#include "html.h"
#include "jsonrpc.h"
#include "httpmcp.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"

json_t *builtin_text_result(const char *text, size_t len, bool is_error)
{
	/* pages are hostile bytes: invalid UTF-8 (and NUL) become U+FFFD, so the reply always
	 * serialises */
	json_t *t = mcp_text_string(text, len);
	if (!t)
		return NULL;
	return json_pack("{s:[{s:s,s:o}],s:b}", "content", "type", "text", "text", t, "isError",
			 is_error);
}

json_t *builtin_errorf(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return builtin_text_result(msg, strlen(msg), true);
}

/* ---- definitions ---- */

json_t *builtin_tools(bool with_files)
{
	json_t *a = json_array();
	json_t *fetch = json_pack(
		"{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}}, "
		"s:[s]}}",
		"name", "fetch", "description",
		"Fetch a web page (http/https, allowed by the sandbox's network policy) and return "
		"it as text (HTML is converted to readable text). Long pages are returned in "
		"parts: "
		"use offset to continue.",
		"inputSchema", "type", "object", "properties", "url", "type", "string",
		"description", "the URL", "offset", "type", "integer", "description",
		"byte offset into the text to start at (default 0)", "max_length", "type",
		"integer", "description", "bytes of text to return (default 20000)", "raw", "type",
		"boolean", "description", "return HTML as it is, not converted", "required", "url");
	json_t *grep = json_pack(
		"{s:s, s:s, s:{s:s, s:{s:{s:s}, s:{s:s, s:s}, s:{s:s}, s:{s:s}}, s:[s,s]}}", "name",
		"grep", "description",
		"Fetch a web page like fetch and return the lines of its text that match a "
		"pattern (POSIX extended regular expression), with line numbers.",
		"inputSchema", "type", "object", "properties", "url", "type", "string", "pattern",
		"type", "string", "description", "extended regular expression", "ignore_case",
		"type", "boolean", "max_matches", "type", "integer", "required", "url", "pattern");
	json_t *headers = json_pack(
		"{s:s, s:s, s:{s:s, s:{s:{s:s}}, s:[s]}}", "name", "headers", "description",
		"Return the HTTP status and response headers of a URL (a HEAD request).",
		"inputSchema", "type", "object", "properties", "url", "type", "string", "required",
		"url");
	json_array_append_new(a, fetch);
	json_array_append_new(a, grep);
	json_array_append_new(a, headers);
	if (with_files) {
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:{s:s, s:{s:{s:s}}}}", "name", "list_files",
				     "description",
				     "List a directory of the workspace (path relative to it; "
				     "default the workspace itself). Directories end with '/'.",
				     "inputSchema", "type", "object", "properties", "path", "type",
				     "string"));
		json_array_append_new(
			a,
			json_pack("{s:s, s:s, s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}}, s:[s]}}",
				  "name", "read_file", "description",
				  "Read a text file of the workspace (path relative to it), from "
				  "a byte offset, at most max_length bytes (default 20000).",
				  "inputSchema", "type", "object", "properties", "path", "type",
				  "string", "offset", "type", "integer", "max_length", "type",
				  "integer", "required", "path"));
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}}, s:[s,s]}}",
				     "name", "write_file", "description",
				     "Write (or with append, add to) a file of the workspace (path "
				     "relative to it). Parent directories must exist.",
				     "inputSchema", "type", "object", "properties", "path", "type",
				     "string", "content", "type", "string", "append", "type",
				     "boolean", "required", "path", "content"));
	}
	if (!a || json_array_size(a) != (with_files ? 6u : 3u)) {
		json_decref(a);
		return NULL;
	}
	return a;
}

bool builtin_needs_url(const char *tool)
{
	return streq(tool, "fetch") || streq(tool, "grep") || streq(tool, "headers");
}

/* The URL of u with its path (path, as u gives it) replaced by npath, into out. libcurl's own
 * CURLUPART_PATH setter would lower-case the hex of every escape, so the path is replaced in
 * the text of the URL (it starts at the first '/' after "://": neither the host nor a user name
 * can hold a '/'), and the result is parsed again to check that libcurl reads npath from it. */
static int url_with_path(CURLU *u, const char *path, const char *npath, char *out, size_t cap)
{
	char *full = NULL;
	int r = -EINVAL;
	if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK)
		return -EINVAL;
	const char *auth = strstr(full, "://");
	const char *p = auth ? strchr(auth + 3, '/') : NULL;
	size_t pl = strlen(path);
	if (!p || strncmp(p, path, pl) != 0 || (p[pl] && p[pl] != '?' && p[pl] != '#'))
		goto out;
	int k = snprintf(out, cap, "%.*s%s%s", (int)(p - full), full, npath, p + pl);
	if (k < 0 || (size_t)k >= cap)
		goto out;
	if (streq(npath, path)) {
		r = 0;
		goto out;
	}
	CURLU *v = curl_url();
	char *vpath = NULL;
	if (!v) {
		r = -ENOMEM;
		goto out;
	}
	if (curl_url_set(v, CURLUPART_URL, out, 0) == CURLUE_OK &&
	    curl_url_get(v, CURLUPART_PATH, &vpath, 0) == CURLUE_OK && streq(vpath, npath))
		r = 0;
	curl_free(vpath);
	curl_url_cleanup(v);
out:
	curl_free(full);
	return r;
}

int builtin_url_parse(const char *url, struct builtin_url *ret)
{
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL;
	char npath[sizeof(ret->path)], pq[sizeof(ret->path)], full[sizeof(ret->url)];
	int r = -EINVAL;
	if (!url || strlen(url) > BUILTIN_URL_MAX)
		return -EINVAL;
	CURLU *u = curl_url();
	if (!u)
		return -ENOMEM;
	/* the same parse libcurl makes of CURLOPT_URL (dot segments removed) */
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
		goto out;
	(void)curl_url_get(u, CURLUPART_QUERY, &query, 0);
	if (!streq(scheme, "http") && !streq(scheme, "https"))
		goto out;
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* the policy wants it bare */
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	uint32_t pn = 0;
	if (parse_u32(port, &pn) < 0 || pn == 0 || pn > 65535 || strlen(host) >= sizeof(ret->host))
		goto out;
	/* the path as the egress proxy forwards it: decided, recorded and sent in this one form */
	if (policy_path_normalize(path, npath, sizeof(npath)) < 0)
		goto out;
	r = url_with_path(u, path, npath, full, sizeof(full));
	if (r < 0)
		goto out;
	r = -EINVAL;
	int k = snprintf(pq, sizeof(pq), "%s%s%s", npath[0] ? npath : "/", query ? "?" : "",
			 query ? query : "");
	if (k < 0 || (size_t)k >= sizeof(pq))
		goto out;
	memcpy(ret->path, pq, (size_t)k + 1);
	memcpy(ret->host, host, strlen(host) + 1);
	ret->port = (uint16_t)pn;
	memcpy(ret->url, full, strlen(full) + 1);
	r = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_url_cleanup(u);
	return r;
}

/* ---- web ---- */

struct page {
	char *body;
	size_t len;
	bool truncated;
	char *hdrs;
	size_t hlen;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct page *pg = ud;
	size_t n = sz * nm, take = MIN(n, BUILTIN_MAX_BODY - pg->len);
	if (take) {
		char *nb = realloc(pg->body, pg->len + take + 1);
		if (!nb)
			return 0;
		pg->body = nb;
		memcpy(pg->body + pg->len, p, take);
		pg->len += take;
		pg->body[pg->len] = 0;
	}
	if (take < n) {
		pg->truncated = true;
		return 0; /* stop the transfer */
	}
	return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct page *pg = ud;
	size_t n = sz * nm;
	if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
		pg->hlen = 0; /* a new response (after 100 Continue) */
	if (pg->hlen + n <= 65536) {
		char *nb = realloc(pg->hdrs, pg->hlen + n + 1);
		if (!nb)
			return 0;
		pg->hdrs = nb;
		memcpy(pg->hdrs + pg->hlen, p, n);
		pg->hlen += n;
		pg->hdrs[pg->hlen] = 0;
	}
	return n;
}

/* GET (or HEAD) url, with its path normalised as the caller decided it (builtin_url_parse). 0
 * with status/content type, or a message in err. */
static int http_get(const struct builtin_env *env, const char *url, bool head, struct page *pg,
		    long *ret_status, char *ctype, size_t ctcap, char **ret_location, char *err,
		    size_t errlen)
{
	_cleanup_free_ struct builtin_url *u = malloc(sizeof(*u));
	char cerr[CURL_ERROR_SIZE] = "";
	struct httpmcp_guard guard;
	if (!u)
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	int r = builtin_url_parse(url, u);
	if (r < 0)
		return snprintf(err, errlen, "not a valid http:// or https:// URL"), r;
	CURL *h = curl_easy_init();
	if (!h)
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	curl_easy_setopt(h, CURLOPT_URL, u->url);
	httpmcp_guard(h, u->url, &guard); /* an allowed name must not lead to this host */
	httpmcp_stop_on(h, env->stop);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, BUILTIN_HTTP_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "capsem-gateway/" CAPSEM_VERSION);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, pg);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, pg);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)64 << 20);
	if (head)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && pg->truncated)) {
		snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
		curl_easy_cleanup(h);
		return -EIO;
	}
	char *ct = NULL, *loc = NULL;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ret_status);
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(ctype, ctcap, "%s", ct ? ct : "");
	curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
	if (ret_location)
		*ret_location = loc ? strdup(loc) : NULL;
	curl_easy_cleanup(h);
	return 0;
}

static bool ctype_is(const char *ct, const char *prefix)
{
	return strncasecmp(ct, prefix, strlen(prefix)) == 0;
}

static bool ctype_text(const char *ct)
{
	return !ct[0] || ctype_is(ct, "text/") || ctype_is(ct, "application/json") ||
	       ctype_is(ct, "application/xml") || ctype_is(ct, "application/xhtml") ||
	       ctype_is(ct, "application/javascript") || ctype_is(ct, "application/ld+json") ||
	       ctype_is(ct, "application/rss") || ctype_is(ct, "application/atom") ||
	       strstr(ct, "+json") || strstr(ct, "+xml");
}

/* Fetch url as text (converted unless raw). NULL text and a result in *ret_err on failure. */
static int fetch_text(const struct builtin_env *env, const char *url, bool raw, char **ret,
		      size_t *ret_len, long *ret_status, json_t **ret_err)
{
	struct page pg = { 0 };
	long status = 0;
	char ct[128], err[300];
	_cleanup_free_ char *loc = NULL;
	if (http_get(env, url, false, &pg, &status, ct, sizeof(ct), &loc, err, sizeof(err)) < 0) {
		*ret_err = builtin_errorf("fetching %s failed: %s", url, err);
		goto fail;
	}
	if (status >= 300 && status < 400 && loc) {
		*ret_err = builtin_errorf("%s redirects (HTTP %ld) to %s: fetch that URL instead",
					  url, status, loc);
		goto fail;
	}
	if (!raw && !ctype_text(ct)) {
		*ret_err = builtin_errorf("%s is not text (Content-Type: %s, HTTP %ld)", url, ct,
					  status);
		goto fail;
	}
	*ret_status = status;
	if (!raw && (ctype_is(ct, "text/html") || ctype_is(ct, "application/xhtml"))) {
		int r = html_to_text(pg.body ? pg.body : "", pg.len, ret, ret_len);
		free(pg.body);
		free(pg.hdrs);
		if (r < 0)
			*ret_err = builtin_errorf("out of memory");
		return r;
	}
	*ret = pg.body ? pg.body : strdup("");
	*ret_len = pg.len;
	free(pg.hdrs);
	return *ret ? 0 : -ENOMEM;
fail:
	free(pg.body);
	free(pg.hdrs);
	return -EIO;
}

/* Snap an offset down to the start of a UTF-8 sequence. */
static size_t utf8_floor(const char *s, size_t len, size_t off)
{
	if (off >= len)
		return len;
	while (off > 0 && ((unsigned char)s[off] & 0xC0) == 0x80)
		off--;
	return off;
}

static bool get_uint(const json_t *args, const char *key, uint64_t def, uint64_t max, uint64_t *ret)
{
	const json_t *v = json_object_get(args, key);
	*ret = def;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*ret = MIN((uint64_t)json_integer_value(v), max);
	return true;
}

static const char *get_string(const json_t *args, const char *key)
{
	const json_t *v = json_object_get(args, key);
	return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)
		       ? json_string_value(v)
		       : NULL;
}

/* text[offset, offset+max) with a header, as a result. */
static json_t *paged(const char *head, const char *text, size_t len, uint64_t offset, uint64_t max)
{
	size_t a = utf8_floor(text, len, (size_t)MIN(offset, (uint64_t)len));
	size_t b = utf8_floor(text, len, (size_t)MIN((uint64_t)a + max, (uint64_t)len));
	if (b == a && a < len)
		b = MIN(len, a + 4); /* max_length smaller than one character */
	char h[700];
	int k;
	if (a == 0 && b == len)
		k = snprintf(h, sizeof(h), "%sLength: %zu\n\n", head, len);
	else if (b < len)
		k = snprintf(
			h, sizeof(h),
			"%sLength: %zu\nShowing: %zu..%zu\nMore: use offset=%zu to continue\n\n",
			head, len, a, b, b);
	else
		k = snprintf(h, sizeof(h), "%sLength: %zu\nShowing: %zu..%zu\n\n", head, len, a, b);
	if (k < 0 || (size_t)k >= sizeof(h))
		return builtin_errorf("header too long");
	size_t hl = (size_t)k;
	_cleanup_free_ char *all = malloc(hl + (b - a) + 1);
	if (!all)
		return NULL;
	memcpy(all, h, hl);
	memcpy(all + hl, text + a, b - a);
	return builtin_text_result(all, hl + (b - a), false);
}

static json_t *do_fetch(const struct builtin_env *env, const json_t *args)
{
	const char *url = get_string(args, "url");
	uint64_t off, max;
	const json_t *raw = json_object_get(args, "raw");
	if (!url)
		return builtin_errorf("fetch: 'url' (a string) is required");
	if (!get_uint(args, "offset", 0, UINT32_MAX, &off) ||
	    !get_uint(args, "max_length", BUILTIN_DEFAULT_LENGTH, BUILTIN_MAX_LENGTH, &max))
		return builtin_errorf("fetch: offset and max_length must be non-negative integers");
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	long status = 0;
	json_t *err = NULL;
	if (fetch_text(env, url, json_is_true(raw), &text, &len, &status, &err) < 0)
		return err;
	char head[600];
	snprintf(head, sizeof(head), "URL: %.400s\nStatus: %ld\n", url, status);
	return paged(head, text, len, off, max);
}

static json_t *do_grep(const struct builtin_env *env, const json_t *args)
{
	const char *url = get_string(args, "url"), *pattern = get_string(args, "pattern");
	const json_t *ic = json_object_get(args, "ignore_case");
	uint64_t max;
	regex_t re;
	if (!url || !pattern)
		return builtin_errorf("grep: 'url' and 'pattern' (strings) are required");
	if (strlen(pattern) > 512)
		return builtin_errorf("grep: the pattern is longer than 512 bytes");
	for (const char *q = pattern; *q; q++)
		if (q[0] == '\\' && q[1] >= '1' && q[1] <= '9')
			return builtin_errorf("grep: back-references are not supported");
	if (!get_uint(args, "max_matches", 50, 1000, &max))
		return builtin_errorf("grep: max_matches must be a non-negative integer");
	int flags = REG_EXTENDED | REG_NOSUB | REG_NEWLINE | (json_is_false(ic) ? 0 : REG_ICASE);
	int rc = regcomp(&re, pattern, flags);
	if (rc != 0) {
		char m[200];
		regerror(rc, &re, m, sizeof(m));
		return builtin_errorf("grep: bad pattern: %s", m);
	}
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	long status = 0;
	json_t *err = NULL;
	if (fetch_text(env, url, false, &text, &len, &status, &err) < 0) {
		regfree(&re);
		return err;
	}
	size_t cap = 256 * 1024, ol = 0;
	_cleanup_free_ char *out = malloc(cap + 1);
	if (!out) {
		regfree(&re);
		return NULL;
	}
	uint64_t hits = 0, lineno = 0;
	bool more = false;
	for (char *p = text, *e; p && p < text + len; p = e ? e + 1 : NULL) {
		e = memchr(p, '\n', (size_t)(text + len - p));
		if (e)
			*e = 0;
		lineno++;
		if (regexec(&re, p, 0, NULL, 0) != 0)
			continue;
		if (hits >= max) {
			more = true;
			break;
		}
		hits++;
		int k = snprintf(out + ol, cap - ol, "%" PRIu64 ": %.500s\n", lineno, p);
		if (k < 0 || (size_t)k >= cap - ol) {
			more = true;
			break;
		}
		ol += (size_t)k;
	}
	regfree(&re);
	char head[700];
	int hk =
		snprintf(head, sizeof(head), "URL: %.400s\nStatus: %ld\nMatches: %" PRIu64 "%s\n\n",
			 url, status, hits, more ? " (more not shown)" : "");
	_cleanup_free_ char *all = malloc((size_t)hk + ol + 1);
	if (!all)
		return NULL;
	memcpy(all, head, (size_t)hk);
	memcpy(all + hk, out, ol);
	return builtin_text_result(all, (size_t)hk + ol, false);
}

static json_t *do_headers(const struct builtin_env *env, const json_t *args)
{
	const char *url = get_string(args, "url");
	struct page pg = { 0 };
	long status = 0;
	char ct[128], err[300];
	if (!url)
		return builtin_errorf("headers: 'url' (a string) is required");
	if (http_get(env, url, true, &pg, &status, ct, sizeof(ct), NULL, err, sizeof(err)) < 0) {
		free(pg.body);
		free(pg.hdrs);
		return builtin_errorf("headers of %s failed: %s", url, err);
	}
	char head[600];
	int hk = snprintf(head, sizeof(head), "URL: %.400s\nStatus: %ld\n\n", url, status);
	size_t hl = pg.hdrs ? pg.hlen : 0;
	_cleanup_free_ char *all = malloc((size_t)hk + hl + 1);
	json_t *res = NULL;
	if (all) {
		memcpy(all, head, (size_t)hk);
		if (hl)
			memcpy(all + hk, pg.hdrs, hl);
		res = builtin_text_result(all, (size_t)hk + hl, false);
	}
	free(pg.body);
	free(pg.hdrs);
	return res;
}

/* ---- workspace files ---- */

static int ws_open(const struct builtin_env *env, const char *path, int flags, mode_t mode)
{
	int r = gw_path_check(path, strlen(path));
	if (r < 0)
		return r;
	struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY),
				.mode = (flags & O_CREAT) ? mode : 0,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
					   RESOLVE_NO_MAGICLINKS };
	long fd = syscall(SYS_openat2, env->workspace_fd, path, &how, sizeof(how));
	return fd < 0 ? negative_errno() : (int)fd;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static json_t *do_list(const struct builtin_env *env, const json_t *args)
{
	const char *path = json_object_get(args, "path") ? get_string(args, "path") : ".";
	if (!path)
		return builtin_errorf("list_files: 'path' must be a string");
	int fd = ws_open(env, path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return builtin_errorf("list_files %s: %s", path,
				      fd == -EXDEV ? "outside the workspace" : strerror(-fd));
	DIR *d = fdopendir(fd);
	if (!d) {
		safe_close(fd);
		return builtin_errorf("list_files %s: %s", path, strerror(errno));
	}
	char **names = calloc(BUILTIN_MAX_LIST, sizeof(*names));
	size_t n = 0;
	bool more = false;
	struct dirent *de;
	while (names && (de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (n >= BUILTIN_MAX_LIST) {
			more = true;
			break;
		}
		struct stat st;
		bool dir = fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			   S_ISDIR(st.st_mode);
		char *s = NULL;
		if (asprintf(&s, "%s%s", de->d_name, dir ? "/" : "") < 0)
			break;
		names[n++] = s;
	}
	closedir(d);
	if (!names)
		return NULL;
	qsort(names, n, sizeof(*names), name_cmp);
	size_t total = 64;
	for (size_t i = 0; i < n; i++)
		total += strlen(names[i]) + 1;
	char *out = malloc(total), *w = out;
	if (out) {
		for (size_t i = 0; i < n; i++) {
			size_t l = strlen(names[i]);
			memcpy(w, names[i], l);
			w[l] = '\n';
			w += l + 1;
		}
		if (more)
			w += snprintf(w, 64, "(more than %u entries)\n", BUILTIN_MAX_LIST);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	json_t *res = out ? builtin_text_result(out, (size_t)(w - out), false) : NULL;
	free(out);
	return res;
}

static json_t *do_read(const struct builtin_env *env, const json_t *args)
{
	const char *path = get_string(args, "path");
	uint64_t off, max;
	if (!path)
		return builtin_errorf("read_file: 'path' (a string) is required");
	if (!get_uint(args, "offset", 0, INT64_MAX, &off) ||
	    !get_uint(args, "max_length", BUILTIN_DEFAULT_LENGTH, BUILTIN_MAX_LENGTH, &max))
		return builtin_errorf(
			"read_file: offset and max_length must be non-negative integers");
	_cleanup_close_ int fd = ws_open(env, path, O_RDONLY, 0);
	if (fd < 0)
		return builtin_errorf("read_file %s: %s", path,
				      fd == -EXDEV   ? "outside the workspace"
				      : fd == -ELOOP ? "a symbolic link on the way (not followed)"
						     : strerror(-fd));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return builtin_errorf("read_file %s: not a regular file", path);
	_cleanup_free_ char *b = malloc(max + 1);
	if (!b)
		return NULL;
	ssize_t k = pread(fd, b, max, (off_t)off);
	if (k < 0)
		return builtin_errorf("read_file %s: %s", path, strerror(errno));
	return builtin_text_result(b, (size_t)k, false);
}

static json_t *do_write(const struct builtin_env *env, const json_t *args)
{
	const char *path = get_string(args, "path");
	const json_t *c = json_object_get(args, "content");
	if (!path || !json_is_string(c))
		return builtin_errorf("write_file: 'path' and 'content' (strings) are required");
	size_t len = json_string_length(c);
	if (len > BUILTIN_MAX_WRITE)
		return builtin_errorf("write_file: content larger than %u bytes",
				      BUILTIN_MAX_WRITE);
	int flags = O_WRONLY | O_CREAT | O_NOFOLLOW |
		    (json_is_true(json_object_get(args, "append")) ? O_APPEND : O_TRUNC);
	_cleanup_close_ int fd = ws_open(env, path, flags, 0644);
	if (fd < 0)
		return builtin_errorf("write_file %s: %s", path,
				      fd == -EXDEV   ? "outside the workspace"
				      : fd == -ELOOP ? "a symbolic link on the way (not followed)"
						     : strerror(-fd));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return builtin_errorf("write_file %s: not a regular file", path);
	const char *p = json_string_value(c);
	size_t done = 0;
	while (done < len) {
		ssize_t k = write(fd, p + done, len - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return builtin_errorf("write_file %s: %s", path, strerror(errno));
		done += (size_t)k;
	}
	char msg[300];
	int k = snprintf(msg, sizeof(msg), "wrote %zu bytes to %.200s", len, path);
	return builtin_text_result(msg, (size_t)k, false);
}

json_t *builtin_call(const struct builtin_env *env, const char *tool, const json_t *args)
{
	if (streq(tool, "fetch"))
		return do_fetch(env, args);
	if (streq(tool, "grep"))
		return do_grep(env, args);
	if (streq(tool, "headers"))
		return do_headers(env, args);
	if (env->snap_store && env->workspace_path && gwsnap_is_tool(tool))
		return gwsnap_call(env->snap_store, env->workspace_path, tool, args);
	if (env->workspace_fd >= 0) {
		if (streq(tool, "list_files"))
			return do_list(env, args);
		if (streq(tool, "read_file"))
			return do_read(env, args);
		if (streq(tool, "write_file"))
			return do_write(env, args);
	}
	return builtin_errorf("unknown tool '%.128s'", tool);
}
