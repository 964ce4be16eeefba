/* wgcheck.c - capsem-gateway's pure checks (wgcheck.h): Origin, Host, bearer token, failed-auth
 * limiter, the route allow-list, /proc/net/tcp lines, the WebSocket accept key, the terminal
 * output ring and resize messages.
 *
 * Trust boundary: request heads and WebSocket messages from local clients (browsers, scripts,
 * other local users); /proc text from the kernel. Pure; run on the gateway's loop thread.
 */
#include "wgcheck.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "macro.h"
#include "parse.h"

static const char *const loopback_names[] = { "127.0.0.1", "localhost", "[::1]" };

/* "NAME" or "NAME:PORT" with NAME a loopback name and PORT ours (port_required: must be there) */
static bool hostport_ok(const char *s, size_t n, unsigned port, bool port_required)
{
	for (size_t i = 0; i < ELEMENTSOF(loopback_names); i++) {
		size_t k = strlen(loopback_names[i]);
		if (n < k || strncasecmp(s, loopback_names[i], k) != 0)
			continue;
		if (n == k)
			return !port_required;
		if (s[k] != ':' || n - k - 1 == 0 || n - k - 1 > 5)
			return false;
		char num[8] = { 0 };
		memcpy(num, s + k + 1, n - k - 1);
		uint32_t v;
		if (num[0] == '0' || parse_u32(num, &v) < 0)
			return false;
		return v == port;
	}
	return false;
}

bool wg_origin_ok(const char *origin, unsigned port)
{
	if (!origin)
		return true;
	if (strncmp(origin, "http://", 7) != 0)
		return false;
	const char *h = origin + 7;
	if (strpbrk(h, "/?#@ \t\\"))
		return false;
	return hostport_ok(h, strlen(h), port, true);
}

bool wg_host_ok(const char *host, unsigned port)
{
	if (!host || strpbrk(host, "/?#@ \t\\"))
		return false;
	return hostport_ok(host, strlen(host), port, false);
}

static bool ct_equal(const char *a, size_t an, const char *want)
{
	unsigned char d = an != WG_TOKEN_LEN;
	for (size_t i = 0; i < WG_TOKEN_LEN; i++)
		d |= (unsigned char)((i < an ? a[i] : 0) ^ want[i]);
	return d == 0;
}

bool wg_token_ok(const char *auth, const char *query, const char *want)
{
	if (auth) {
		if (strncasecmp(auth, "Bearer ", 7) != 0)
			return false;
		const char *t = auth + 7;
		return ct_equal(t, strnlen(t, WG_TOKEN_LEN + 1), want);
	}
	if (!query)
		return false;
	/* token=T as one of the &-separated parameters (T is alphanumeric: no decoding) */
	const char *q = query;
	while (*q) {
		const char *end = strchr(q, '&');
		size_t len = end ? (size_t)(end - q) : strlen(q);
		if (len > 6 && strncmp(q, "token=", 6) == 0)
			return ct_equal(q + 6, len - 6, want);
		if (!end)
			break;
		q = end + 1;
	}
	return false;
}

void wg_ratelimit_fail(struct wg_ratelimit *r, uint64_t now_ms)
{
	r->t[r->next] = now_ms ? now_ms : 1;
	r->next = (r->next + 1) % WG_AUTH_FAIL_MAX;
}

bool wg_ratelimit_limited(const struct wg_ratelimit *r, uint64_t now_ms)
{
	/* the oldest of the last WG_AUTH_FAIL_MAX failures is the next slot to be overwritten */
	uint64_t oldest = r->t[r->next];
	return oldest != 0 && now_ms - oldest < WG_AUTH_WINDOW_MS;
}

/* The path's segments after "/vms/{ref}": NULL when the path is not /vms/{ref}... */
static const char *vm_sub(const char *path)
{
	if (strncmp(path, "/vms/", 5) != 0)
		return NULL;
	const char *ref = path + 5, *slash = strchr(ref, '/');
	size_t n = slash ? (size_t)(slash - ref) : strlen(ref);
	if (n == 0 || n > 63)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_.-", ref[i]))
			return NULL;
	return slash ? slash : "";
}

enum wg_route wg_route_allowed(const char *method, const char *path)
{
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	bool del = strcmp(method, "DELETE") == 0, put = strcmp(method, "PUT") == 0;
	if (get &&
	    (!strcmp(path, "/version") || !strcmp(path, "/health") || !strcmp(path, "/vms") ||
	     !strcmp(path, "/images") || !strcmp(path, "/sessions") || !strcmp(path, "/policy") ||
	     !strcmp(path, "/settings")))
		return WG_ROUTE_JSON;
	if (get && !strcmp(path, "/status"))
		return WG_ROUTE_LONG;
	if (post && !strcmp(path, "/vms"))
		return WG_ROUTE_LONG;
	if (post && (!strcmp(path, "/purge") || !strcmp(path, "/policy/check")))
		return WG_ROUTE_JSON;
	if (del && !strncmp(path, "/images/", 8) && path[8] && !strchr(path + 8, '/'))
		return WG_ROUTE_JSON;
	if (get && !strncmp(path, "/sessions/", 10) && path[10]) {
		const char *s = strchr(path + 10, '/');
		if (!s || !strcmp(s, "/events"))
			return WG_ROUTE_LONG;
		return WG_ROUTE_NONE;
	}
	const char *sub = vm_sub(path);
	if (!sub)
		return WG_ROUTE_NONE;
	if (!*sub)
		return get || del ? WG_ROUTE_JSON : WG_ROUTE_NONE;
	if (post && (!strcmp(sub, "/stop") || !strcmp(sub, "/start") || !strcmp(sub, "/restart") ||
		     !strcmp(sub, "/persist") || !strcmp(sub, "/fork") ||
		     !strcmp(sub, "/suspend") || !strcmp(sub, "/resume")))
		return WG_ROUTE_LONG;
	if (get && (!strcmp(sub, "/logs") || !strcmp(sub, "/stats") || !strcmp(sub, "/tree")))
		return WG_ROUTE_JSON;
	if (get && (!strcmp(sub, "/events") || !strcmp(sub, "/activity")))
		return WG_ROUTE_LONG;
	if (get && !strcmp(sub, "/files"))
		return WG_ROUTE_LONG;
	if (put && !strcmp(sub, "/files"))
		return WG_ROUTE_UPLOAD;
	return WG_ROUTE_NONE; /* exec above all: terminals go through /terminal/{id} */
}

/* n hex digits at s (exactly) into *ret. 0 or -EBADMSG. */
static int hexn(const char *s, size_t n, uint32_t *ret)
{
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
					       : -1;
		if (d < 0)
			return -EBADMSG;
		v = v << 4 | (uint32_t)d;
	}
	*ret = v;
	return 0;
}

/* "HHHHHHHH:PPPP" (an IPv4 socket address as the kernel prints it: the s_addr integer in hex,
 * the port in host order) of exactly that length. */
static int parse_addr(const char *s, size_t n, uint32_t *ret_addr, uint16_t *ret_port)
{
	uint32_t a, p;
	if (n != 13 || s[8] != ':' || hexn(s, 8, &a) < 0 || hexn(s + 9, 4, &p) < 0)
		return -EBADMSG;
	*ret_addr = a;
	*ret_port = (uint16_t)p;
	return 0;
}

int wg_proc_tcp_uid(const char *text, size_t n, uint32_t addr, uint16_t port, uint32_t raddr,
		    uint16_t rport, uid_t *ret_uid)
{
	const char *p = text, *end = text + n;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		/* fields: "sl:" local remote st tx:rx tr:when retrnsmt uid ... */
		const char *f[8];
		size_t fl[8], nf = 0;
		for (const char *q = p; q < le && nf < 8;) {
			while (q < le && (*q == ' ' || *q == '\t'))
				q++;
			if (q >= le)
				break;
			f[nf] = q;
			while (q < le && *q != ' ' && *q != '\t')
				q++;
			fl[nf] = (size_t)(q - f[nf]);
			nf++;
		}
		uint32_t a1, a2;
		uint16_t p1, p2;
		if (nf == 8 && parse_addr(f[1], fl[1], &a1, &p1) == 0 &&
		    parse_addr(f[2], fl[2], &a2, &p2) == 0 && a1 == addr && p1 == port &&
		    a2 == raddr && p2 == rport) {
			char num[16];
			uint32_t uid;
			if (fl[7] >= sizeof(num))
				return -EBADMSG;
			memcpy(num, f[7], fl[7]);
			num[fl[7]] = 0;
			if (parse_u32(num, &uid) < 0)
				return -EBADMSG;
			*ret_uid = (uid_t)uid;
			return 0;
		}
		p = le + 1;
	}
	return -ENOENT;
}

int wg_ws_accept(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	uint8_t raw[18];
	size_t rawn = 0;
	if (!key || strlen(key) != 24 || base64_decode_to(key, 24, raw, sizeof(raw), &rawn) < 0 ||
	    rawn != 16)
		return -EINVAL;
	char cat[24 + sizeof(guid)];
	memcpy(cat, key, 24);
	memcpy(cat + 24, guid, sizeof(guid));
	uint8_t md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)cat, 24 + sizeof(guid) - 1, md);
	base64_encode_to(md, sizeof(md), out);
	out[28] = 0;
	return 0;
}

size_t wg_ws_frame_head(int opcode, uint64_t len, uint8_t out[10])
{
	out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
	if (len < 126) {
		out[1] = (uint8_t)len;
		return 2;
	}
	if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		return 4;
	}
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
	return 10;
}

void wg_ring_put(struct wg_ring *r, const uint8_t *p, size_t n)
{
	if (n >= WG_RING_SIZE) {
		memcpy(r->b, p + n - WG_RING_SIZE, WG_RING_SIZE);
		r->start = 0;
		r->len = WG_RING_SIZE;
		return;
	}
	for (size_t done = 0; done < n;) {
		size_t at = (r->start + r->len) % WG_RING_SIZE;
		size_t k = MIN(n - done, WG_RING_SIZE - at);
		memcpy(r->b + at, p + done, k);
		done += k;
		r->len += k;
		if (r->len > WG_RING_SIZE) {
			r->start = (r->start + r->len - WG_RING_SIZE) % WG_RING_SIZE;
			r->len = WG_RING_SIZE;
		}
	}
}

void wg_ring_spans(const struct wg_ring *r, const uint8_t **p1, size_t *n1, const uint8_t **p2,
		   size_t *n2)
{
	size_t first = MIN(r->len, WG_RING_SIZE - r->start);
	*p1 = r->b + r->start;
	*n1 = first;
	*p2 = r->b;
	*n2 = r->len - first;
}

int wg_parse_resize(const char *p, size_t n, uint16_t *ret_rows, uint16_t *ret_cols)
{
	if (n > 4096)
		return -EINVAL;
	json_error_t err;
	json_t *j = json_loadb(p, n, JSON_REJECT_DUPLICATES, &err);
	json_int_t rows = 0, cols = 0;
	int ok = json_is_object(j) && json_is_integer(json_object_get(j, "rows")) &&
		 json_is_integer(json_object_get(j, "cols"));
	if (ok) {
		rows = json_integer_value(json_object_get(j, "rows"));
		cols = json_integer_value(json_object_get(j, "cols"));
	}
	json_decref(j);
	if (!ok || rows < 1 || rows > 1000 || cols < 1 || cols > 1000)
		return -EINVAL;
	*ret_rows = (uint16_t)rows;
	*ret_cols = (uint16_t)cols;
	return 0;
}

bool wg_ref_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || !strchr("abcdefghijklmnopqrstuvwxyz0123456789", s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_.-", s[i]))
			return false;
	return true;
}
