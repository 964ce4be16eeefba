/* httpmcp.c - the streamable-HTTP MCP client's POST (httpmcp.h).
 *
 * libcurl easy handle per POST, http and https only, no redirects, response body capped at
 * HTTPMCP_MAX_BODY, the caller's timeout. The policy decision on the URL is the caller's (the
 * gateway decides POST host:port/path before every request).
 *
 * Trust boundary: the MCP server's responses (a configured server, but remote: parsed with
 * caps). Worker threads; no shared state.
 */
#include "httpmcp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jsonrpc.h"
#include "macro.h"

struct acc {
	char *body;
	size_t len;
	bool over;
	char *session;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct acc *a = ud;
	size_t n = sz * nm;
	if (a->len + n > HTTPMCP_MAX_BODY) {
		a->over = true;
		return 0;
	}
	char *nb = realloc(a->body, a->len + n + 1);
	if (!nb)
		return 0;
	a->body = nb;
	memcpy(a->body + a->len, p, n);
	a->len += n;
	a->body[a->len] = 0;
	return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct acc *a = ud;
	size_t n = sz * nm;
	static const char key[] = "mcp-session-id:";
	if (n > sizeof(key) - 1 && n < 1024 && strncasecmp(p, key, sizeof(key) - 1) == 0) {
		size_t s = sizeof(key) - 1, e = n;
		while (s < e && (p[s] == ' ' || p[s] == '\t'))
			s++;
		while (e > s && isspace((unsigned char)p[e - 1]))
			e--;
		for (size_t i = s; i < e; i++)
			if (p[i] < 0x21 || p[i] > 0x7e)
				return n; /* the spec: visible ASCII only */
		free(a->session);
		a->session = strndup(p + s, e - s);
	}
	return n;
}

int httpmcp_addr_is_local(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
		return (a >> 24) == 127 || (a >> 16) == 0xa9fe || a == 0;
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		static const uint8_t zero[16];
		if (memcmp(b, mapped, 12) == 0) {
			struct sockaddr_in v4 = { .sin_family = AF_INET };
			memcpy(&v4.sin_addr, b + 12, 4);
			return httpmcp_addr_is_local((const struct sockaddr *)&v4);
		}
		if (memcmp(b, zero, 15) == 0 && (b[15] == 1 || b[15] == 0))
			return 1;			      /* ::1, :: */
		return b[0] == 0xfe && (b[1] & 0xc0) == 0x80; /* fe80::/10 */
	}
	return 1; /* nothing else is expected: refuse */
}

static curl_socket_t open_guarded(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	const struct httpmcp_guard *g = clientp;
	if (!g->host_is_literal && httpmcp_addr_is_local(&addr->addr))
		return CURL_SOCKET_BAD;
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

void httpmcp_guard(void *curl_handle, const char *url, struct httpmcp_guard *g)
{
	char *host = NULL;
	unsigned char buf[16];
	CURLU *u = curl_url();
	g->host_is_literal = 0;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		size_t n = strlen(host);
		if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
			host[n - 1] = 0;
			g->host_is_literal = inet_pton(AF_INET6, host + 1, buf) == 1;
		} else {
			g->host_is_literal = inet_pton(AF_INET, host, buf) == 1;
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	curl_easy_setopt(curl_handle, CURLOPT_OPENSOCKETFUNCTION, open_guarded);
	curl_easy_setopt(curl_handle, CURLOPT_OPENSOCKETDATA, g);
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	const atomic_int *stop = clientp;
	return atomic_load(stop) ? 1 : 0;
}

void httpmcp_stop_on(void *curl_handle, const atomic_int *stop)
{
	if (!stop)
		return;
	curl_easy_setopt(curl_handle, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl_handle, CURLOPT_XFERINFODATA, (void *)stop);
	curl_easy_setopt(curl_handle, CURLOPT_NOPROGRESS, 0L);
}

static json_t *match(json_t *v, const json_t *want)
{
	if (json_is_object(v) && !json_object_get(v, "method") &&
	    jsonrpc_id_equal(json_object_get(v, "id"), want))
		return json_incref(v);
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
		{
			json_t *m = match(e, want);
			if (m)
				return m;
		}
	}
	return NULL;
}

static json_t *parse_one(const char *p, size_t n, const json_t *want)
{
	if (jsonrpc_depth_check(p, n, JSONRPC_MAX_DEPTH) < 0)
		return NULL;
	json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
	json_t *m = v ? match(v, want) : NULL;
	json_decref(v);
	return m;
}

json_t *httpmcp_find_response(const char *body, size_t len, int is_sse, const json_t *want_id)
{
	if (!body || !want_id)
		return NULL;
	if (!is_sse)
		return parse_one(body, len, want_id);
	/* SSE: lines; "data:" lines accumulate; a blank line ends an event */
	char *data = malloc(len + 1);
	size_t dl = 0;
	json_t *found = NULL;
	if (!data)
		return NULL;
	size_t i = 0;
	while (i <= len && !found) {
		size_t e = i;
		while (e < len && body[e] != '\n' && body[e] != '\r')
			e++;
		size_t ll = e - i;
		const char *line = body + i;
		if (ll == 0) {
			if (dl)
				found = parse_one(data, dl, want_id);
			dl = 0;
		} else if (ll >= 5 && memcmp(line, "data:", 5) == 0) {
			size_t s = 5 + (ll > 5 && line[5] == ' ');
			if (dl)
				data[dl++] = '\n';
			memcpy(data + dl, line + s, ll - s);
			dl += ll - s;
		}
		if (e >= len) {
			if (dl && !found)
				found = parse_one(data, dl, want_id);
			break;
		}
		i = e + 1 + (body[e] == '\r' && e + 1 < len && body[e + 1] == '\n');
	}
	free(data);
	return found;
}

int httpmcp_post(const char *url, char *const *headers, const char *session_id, const char *body,
		 size_t len, const json_t *want_id, long timeout_ms, const atomic_int *stop,
		 struct httpmcp_result *ret)
{
	struct acc a = { 0 };
	struct curl_slist *hl = NULL;
	char cerr[CURL_ERROR_SIZE] = "", sid[1100];
	int r = 0;
	*ret = (struct httpmcp_result){ 0 };
	CURL *h = curl_easy_init();
	if (!h)
		return -ENOMEM;
	hl = curl_slist_append(hl, "Content-Type: application/json");
	hl = curl_slist_append(hl, "Accept: application/json, text/event-stream");
	hl = curl_slist_append(hl, "MCP-Protocol-Version: " HTTPMCP_PROTOCOL_VERSION);
	hl = curl_slist_append(hl, "Expect:");
	if (session_id) {
		snprintf(sid, sizeof(sid), "Mcp-Session-Id: %.1000s", session_id);
		hl = curl_slist_append(hl, sid);
	}
	for (size_t i = 0; headers && headers[i]; i++)
		hl = curl_slist_append(hl, headers[i]);
	if (!hl) {
		curl_easy_cleanup(h);
		return -ENOMEM;
	}
	struct httpmcp_guard guard;
	curl_easy_setopt(h, CURLOPT_URL, url);
	httpmcp_guard(h, url, &guard);
	httpmcp_stop_on(h, stop);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, MIN(timeout_ms, 10000L));
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	CURLcode rc = curl_easy_perform(h);
	char *ct = NULL;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
	bool sse = ct && strncasecmp(ct, "text/event-stream", 17) == 0;
	if (rc != CURLE_OK) {
		snprintf(ret->err, sizeof(ret->err), "%s",
			 a.over	   ? "response too large"
			 : cerr[0] ? cerr
				   : curl_easy_strerror(rc));
		r = -EIO;
	} else if (ret->status == 404 && session_id) {
		snprintf(ret->err, sizeof(ret->err), "session expired (HTTP 404)");
		r = -ESTALE;
	} else if (ret->status < 200 || ret->status >= 300) {
		/* a JSON-RPC error in a non-2xx body is still an answer */
		ret->msg = httpmcp_find_response(a.body, a.len, sse, want_id);
		if (!ret->msg) {
			snprintf(ret->err, sizeof(ret->err), "HTTP %ld", ret->status);
			r = -EIO;
		}
	} else if (want_id) {
		ret->msg = httpmcp_find_response(a.body, a.len, sse, want_id);
		if (!ret->msg) {
			snprintf(ret->err, sizeof(ret->err),
				 "no response to the request (HTTP %ld)", ret->status);
			r = -EIO;
		}
	}
	ret->session_id = TAKE_PTR(a.session);
	free(a.body);
	curl_slist_free_all(hl);
	curl_easy_cleanup(h);
	return r;
}

void httpmcp_result_done(struct httpmcp_result *r)
{
	json_decref(r->msg);
	free(r->session_id);
	*r = (struct httpmcp_result){ 0 };
}
