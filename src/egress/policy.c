/* policy.c - decide requests against a loaded egress policy.
 *
 * Trust boundary: the requests given to policy_decide() come from the guest (names it asked DNS
 * for, SNI, Host headers, request targets), so hosts and paths are validated and normalised
 * before they are compared, and a path whose meaning could differ upstream (dot segments,
 * encoded slashes or dots, backslashes, ...) never satisfies an ALLOW path condition and always
 * satisfies a BLOCK one. Paths are normalised (RFC 3986 6.2.2: encoded unreserved characters
 * decoded, hex digits upper-cased) by the one function the proxy also uses to rewrite the target
 * it forwards, so what is decided is what the upstream gets; policy-load.c normalises rule paths
 * the same way. BLOCK path conditions ignore ASCII case (some upstreams fold it), ALLOW ones do
 * not. A "*.suffix" host pattern stands for at most wildcard_max_labels labels: every name under
 * an allowed wildcard is resolved by the host's resolver when the guest connects to it, which
 * makes deep guest-chosen names a channel out (docs/POLICY.md).
 *
 * Deciding is a linear walk over the rules policy-load.c sorted, with no allocation. Loading is
 * policy-load.c, MCP tool rules policy-tool.c.
 *
 * Threads: a loaded policy is read-only and may be shared; these functions keep no state.
 */
#include "policy-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

static const char *const empty_strv[] = { NULL };

const char *policy_action_name(enum policy_action a)
{
	return a == POLICY_ALLOW ? "allow" : "block";
}

const char *policy_layer_name(enum policy_layer l)
{
	switch (l) {
	case POLICY_LAYER_CORP:
		return "corp";
	case POLICY_LAYER_USER:
		return "user";
	default:
		return "default";
	}
}

const char *policy_default_text(size_t *ret_len)
{
	if (ret_len)
		*ret_len = policy_default_toml_len;
	return policy_default_toml;
}

/* ---- hosts ---- */

bool policy_is_ipv4(const char *s)
{
	struct in_addr a;
	return inet_pton(AF_INET, s, &a) == 1;
}

/* A DNS name in lower case: labels of 1..63 [a-z0-9_-], at most POLICY_MAX_HOST in all. */
static bool dns_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > POLICY_MAX_HOST)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* Normalise a host (DNS name or IP literal) into out: lower case, one trailing dot dropped, IPv6
 * without brackets in canonical form. 0, or -EINVAL when it is neither. */
int policy_host_normalize(const char *in, size_t n, char out[static HOST_BUF])
{
	if (n > 0 && in[0] == '[') {
		if (n < 3 || in[n - 1] != ']')
			return -EINVAL;
		in++;
		n -= 2;
		if (!memchr(in, ':', n))
			return -EINVAL;
	}
	if (n == 0 || n >= HOST_BUF - 1)
		return -EINVAL;
	if (memchr(in, ':', n)) {
		char tmp[HOST_BUF];
		struct in6_addr a6;
		memcpy(tmp, in, n);
		tmp[n] = 0;
		if (strlen(tmp) != n || inet_pton(AF_INET6, tmp, &a6) != 1)
			return -EINVAL;
		return inet_ntop(AF_INET6, &a6, out, HOST_BUF) ? 0 : -EINVAL;
	}
	if (in[n - 1] == '.')
		n--;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[n] = 0;
	return dns_name_ok(out, n) ? 0 : -EINVAL;
}

/* ---- paths ---- */

static char ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
	return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static bool char_eq(char a, char b, bool nocase)
{
	return a == b || (nocase && ascii_lower(a) == ascii_lower(b));
}

/* One element of a glob at *pp against c; advances *pp past the element on a match. With
 * nocase, ASCII letters match either case (in classes too). */
static bool glob_one(const char **pp, char c, bool nocase)
{
	const char *p = *pp;
	if (*p == '?') {
		*pp = p + 1;
		return true;
	}
	if (*p == '\\' && p[1]) {
		*pp = p + 2;
		return char_eq(p[1], c, nocase);
	}
	if (*p == '[') {
		const char *q = p + 1;
		bool neg = false, hit = false;
		if (*q == '!' || *q == '^') {
			neg = true;
			q++;
		}
		const char *start = q;
		while (*q && (*q != ']' || q == start)) {
			char lo = *q, hi = *q;
			if (q[1] == '-' && q[2] && q[2] != ']') {
				hi = q[2];
				q += 3;
			} else {
				q++;
			}
			if ((c >= lo && c <= hi) ||
			    (nocase && ((ascii_lower(c) >= lo && ascii_lower(c) <= hi) ||
					(ascii_upper(c) >= lo && ascii_upper(c) <= hi))))
				hit = true;
		}
		if (*q == ']') {
			*pp = q + 1;
			return hit != neg;
		}
		/* no closing bracket: a literal '[' */
	}
	*pp = p + 1;
	return char_eq(*p, c, nocase);
}

/* Whole-string glob match: '*' any run of characters (including '/'), '?' one character,
 * "[a-z]" / "[!x]" classes, '\' escapes. Iterative with one backtrack point: O(len(p)*len(s)).
 * nocase: ASCII letters match either case. */
bool policy_glob_match(const char *p, const char *s, size_t slen, bool nocase)
{
	const char *star_p = NULL;
	size_t i = 0, star_i = 0;
	for (;;) {
		if (*p == '*') {
			while (*p == '*')
				p++;
			if (!*p)
				return true;
			star_p = p;
			star_i = i;
			continue;
		}
		if (i == slen)
			return *p == 0;
		const char *q = p;
		if (*p && glob_one(&q, s[i], nocase)) {
			p = q;
			i++;
			continue;
		}
		if (!star_p)
			return false;
		p = star_p;
		i = ++star_i;
	}
}

int policy_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = ascii_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* An unreserved character (RFC 3986 2.3) that normalisation decodes: all but '.', whose
 * encoded form stays encoded and makes a path ambiguous (it could form a dot segment). */
static bool decodable(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '~';
}

/* The length policy_path_norm() gives s[0..n), without writing it; *ret_malformed as there. */
static size_t path_norm_len(const char *s, size_t n, bool *ret_malformed)
{
	size_t o = n;
	*ret_malformed = false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%')
			continue;
		if (i + 2 >= n || policy_hex_digit(s[i + 1]) < 0 ||
		    policy_hex_digit(s[i + 2]) < 0) {
			*ret_malformed = true;
			return n;
		}
		if (decodable(policy_hex_digit(s[i + 1]) * 16 + policy_hex_digit(s[i + 2])))
			o -= 2;
		i += 2;
	}
	return o;
}

/* Normalise the path s[0..n) into out (room for path_norm_len() bytes): "%XX" of a decodable
 * character is decoded, any other "%XX" gets upper-case hex digits. A '%' without two hex
 * digits after it leaves the whole path as it is and sets *ret_malformed (decoding around it
 * could make a new "%XX" that the upstream decodes: "%%3631" would become "%631"). Returns the
 * length (<= n). Decoded characters are never '%', so the result holds the input's "%XX"
 * triplets minus the decoded ones: normalising it again changes nothing. */
size_t policy_path_norm(const char *s, size_t n, char *out, bool *ret_malformed)
{
	(void)path_norm_len(s, n, ret_malformed);
	if (*ret_malformed) {
		memmove(out, s, n);
		return n;
	}
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		int c = policy_hex_digit(s[i + 1]) * 16 + policy_hex_digit(s[i + 2]);
		if (decodable(c)) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = ascii_upper(s[i + 1]);
			out[o++] = ascii_upper(s[i + 2]);
		}
		i += 2;
	}
	return o;
}

/* s starts with '%' and two more bytes: an encoded '.', '/', '\', NUL, or '%' (double
 * encoding)? */
bool policy_encoded_ambiguous(const char *s)
{
	char a = s[1], b = ascii_lower(s[2]);
	return (a == '2' && (b == 'e' || b == 'f' || b == '5')) || (a == '5' && b == 'c') ||
	       (a == '0' && b == '0');
}

/* The path part of a request target, normalised (path_norm) into buf: absolute-form is
 * reduced to its path, the query and fragment are cut. *ret_ambiguous when the path could mean
 * something else upstream (its length is the normalised one, so a target and its normalised
 * form are always decided alike). *ret points into buf, into target or to a constant. */
static void path_prepare(const char *target, char buf[static MAX_REQ_PATH], const char **ret,
			 size_t *ret_len, bool *ret_ambiguous)
{
	const char *s = target;
	if (strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0) {
		s = strstr(s, "://") + 3;
		s += strcspn(s, "/?#");
		if (*s != '/') {
			*ret = "/";
			*ret_len = 1;
			*ret_ambiguous = false;
			return;
		}
	}
	size_t n = strcspn(s, "?#");
	bool amb = n == 0 || s[0] != '/';
	if (!amb) {
		bool malformed;
		amb = path_norm_len(s, n, &malformed) > MAX_REQ_PATH || malformed;
	}
	if (!amb) {
		n = policy_path_norm(s, n, buf, &amb);
		s = buf;
	}
	for (size_t i = 0; i < n && !amb; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || c == '\\') {
			amb = true;
		} else if (c == '%' && i + 2 < n) {
			amb = policy_encoded_ambiguous(s + i);
		} else if (c == '/' && i + 1 < n) {
			/* "//", "/./", "/../", and a trailing "/." or "/.." */
			const char *seg = s + i + 1;
			size_t rest = n - i - 1;
			if (seg[0] == '/' || (seg[0] == '.' && (rest == 1 || seg[1] == '/')) ||
			    (rest >= 2 && seg[0] == '.' && seg[1] == '.' &&
			     (rest == 2 || seg[2] == '/')))
				amb = true;
		}
	}
	*ret = s;
	*ret_len = n;
	*ret_ambiguous = amb;
}

ssize_t policy_path_normalize(const char *target, char *out, size_t cap)
{
	size_t len = strlen(target);
	if (cap <= len)
		return -ENOBUFS;
	size_t n = target[0] == '/' ? strcspn(target, "?#") : 0;
	bool malformed;
	size_t o = policy_path_norm(target, n, out, &malformed);
	memmove(out + o, target + n, len - n + 1);
	return (ssize_t)(o + len - n);
}

/* ---- deciding ---- */

enum tri { NO, YES, UNKNOWN };

/* YES when a pattern matches; UNKNOWN when only "*.suffix" patterns match, with more than
 * max_labels labels (0: no limit) under the suffix; else NO. */
static enum tri host_match(const struct rule *r, const char *h, size_t hl, bool is_ip,
			   unsigned max_labels)
{
	enum tri res = NO;
	for (size_t i = 0; i < r->info.n_hosts; i++) {
		const struct host_pat *hp = &r->hpats[i];
		switch (hp->kind) {
		case HOST_ANY:
			return YES;
		case HOST_EXACT:
			if (hl == hp->len && memcmp(h, hp->s, hl) == 0)
				return YES;
			break;
		case HOST_SUFFIX:
			if (is_ip || hl <= hp->len || memcmp(h + hl - hp->len, hp->s, hp->len) != 0)
				break;
			/* the labels the '*' stands for: h[0 .. hl - len), ".suffix" cut off */
			size_t labels = 1;
			for (size_t j = 0; j < hl - hp->len; j++)
				labels += h[j] == '.';
			if (max_labels == 0 || labels <= max_labels)
				return YES;
			res = UNKNOWN;
			break;
		}
	}
	return res;
}

static enum tri port_match(const struct rule *r, uint16_t port)
{
	if (r->info.n_ports == 0)
		return YES;
	if (port == 0)
		return UNKNOWN;
	for (size_t i = 0; i < r->info.n_ports; i++)
		if (r->ports[i] == port)
			return YES;
	return NO;
}

static enum tri method_match(const struct rule *r, const char *method)
{
	if (r->info.n_methods == 0)
		return YES;
	if (!method)
		return UNKNOWN;
	for (size_t i = 0; i < r->info.n_methods; i++)
		if (strcasecmp(r->methods[i], method) == 0)
			return YES;
	return NO;
}

static enum tri path_match(const struct rule *r, const char *path, size_t plen, bool ambiguous)
{
	if (r->info.n_paths == 0)
		return YES;
	if (!path)
		return UNKNOWN;
	if (ambiguous)
		return r->info.action == POLICY_BLOCK ? YES : NO;
	/* a BLOCK condition ignores ASCII case: an upstream that folds case must not see
	 * /ADMIN pass a block on /admin; an ALLOW condition does not (RFC 3986: paths are
	 * case-sensitive), so folding can only ever refuse more */
	bool nocase = r->info.action == POLICY_BLOCK;
	for (size_t i = 0; i < r->info.n_paths; i++) {
		size_t n = r->path_len[i];
		if (r->path_glob[i]) {
			if (policy_glob_match(r->paths[i], path, plen, nocase))
				return YES;
		} else if (plen >= n && (nocase ? strncasecmp(path, r->paths[i], n) == 0
						: memcmp(path, r->paths[i], n) == 0)) {
			return YES;
		}
	}
	return NO;
}

void policy_decide_trace(const struct policy *p, const struct policy_request *req,
			 struct policy_decision *ret, policy_trace_fn fn, void *userdata)
{
	char h[HOST_BUF];
	char pbuf[MAX_REQ_PATH];
	const char *path = NULL;
	size_t plen = 0;
	bool ambiguous = false;

	*ret = (struct policy_decision){ .action = POLICY_BLOCK,
					 .rule = "invalid-host",
					 .layer = POLICY_LAYER_DEFAULT };
	if (!req->host || policy_host_normalize(req->host, strnlen(req->host, HOST_BUF), h) < 0)
		return;
	size_t hl = strlen(h);
	bool is_ip = strchr(h, ':') || policy_is_ipv4(h);
	if (req->path)
		path_prepare(req->path, pbuf, &path, &plen, &ambiguous);

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		enum policy_match m;
		enum tri ht, pt, mt = NO, ph = NO;
		if ((ht = host_match(r, h, hl, is_ip, p->wild)) == NO)
			m = POLICY_MATCH_NO_HOST;
		else if (ht == UNKNOWN)
			m = POLICY_MATCH_TOO_DEEP;
		else if ((pt = port_match(r, req->port)) == NO)
			m = POLICY_MATCH_NO_PORT;
		else if ((mt = method_match(r, req->method)) == NO)
			m = POLICY_MATCH_NO_METHOD;
		else if ((ph = path_match(r, path, plen, ambiguous)) == NO)
			m = POLICY_MATCH_NO_PATH;
		else if ((pt == UNKNOWN || mt == UNKNOWN || ph == UNKNOWN) &&
			 r->info.action == POLICY_BLOCK)
			m = POLICY_MATCH_SKIPPED;
		else
			m = POLICY_MATCH_DECIDES;
		if (fn)
			fn(&r->info, m, userdata);
		if (m != POLICY_MATCH_DECIDES)
			continue;
		*ret = (struct policy_decision){
			.action = r->info.action,
			.rule = r->name,
			.layer = r->info.layer,
			.provisional = pt == UNKNOWN || mt == UNKNOWN || ph == UNKNOWN,
		};
		return;
	}
	*ret = (struct policy_decision){ .action = p->def,
					 .rule = "default",
					 .layer = p->def_layer };
}

void policy_decide(const struct policy *p, const struct policy_request *req,
		   struct policy_decision *ret)
{
	policy_decide_trace(p, req, ret, NULL, NULL);
}

/* ---- accessors ---- */

size_t policy_n_rules(const struct policy *p)
{
	return p->n_rules;
}

const struct policy_rule_info *policy_rule(const struct policy *p, size_t i)
{
	return i < p->n_rules ? &p->rules[i].info : NULL;
}

enum policy_action policy_default_action(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->def_layer;
	return p->def;
}

unsigned policy_wildcard_max_labels(const struct policy *p, enum policy_layer *ret_layer)
{
	if (ret_layer)
		*ret_layer = p->wild_layer;
	return p->wild;
}

const char *const *policy_warnings(const struct policy *p)
{
	return p->warnings ? (const char *const *)p->warnings : empty_strv;
}

const char *policy_upstream_ca_file(const struct policy *p)
{
	return p->ca_file;
}

enum policy_layer policy_upstream_ca_layer(const struct policy *p)
{
	return p->ca_layer;
}

size_t policy_n_overrides(const struct policy *p)
{
	return p->n_ovr;
}

const struct policy_override_info *policy_override(const struct policy *p, size_t i)
{
	return i < p->n_ovr ? &p->ovr[i].info : NULL;
}

int policy_upstream_override(const struct policy *p, const char *host, uint16_t port,
			     char *ret_connect, size_t cap)
{
	char h[HOST_BUF];
	if (!host || policy_host_normalize(host, strnlen(host, HOST_BUF), h) < 0)
		return -ENOENT;
	for (size_t i = 0; i < p->n_ovr; i++) {
		const struct override *o = &p->ovr[i];
		if (o->info.port != port || !streq(o->host, h))
			continue;
		size_t n = strlen(o->connect);
		if (!ret_connect || n >= cap)
			return -ENOBUFS;
		memcpy(ret_connect, o->connect, n + 1);
		return 0;
	}
	return -ENOENT;
}
