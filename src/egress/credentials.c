/* credentials.c - the provider key store and the placeholder swap in request heads.
 *
 * Trust boundary: keys are the user's secrets and must never reach the guest, a log or another
 * site. They come from the host environment or a 0600 file; the guest gets placeholders only.
 * cred_rewrite_head() sees request heads written by the guest (hostile): it substitutes only
 * whole, exact placeholder values in the three authentication headers and the "key" query
 * parameter, only for the provider whose own domain the request goes to (exact name match: no
 * suffixes, so api.anthropic.com.evil.com or evilapi.anthropic.com get nothing), and copies every
 * other byte unchanged. Keys are checked to be printable ASCII without spaces, so a key can never
 * break the head it is written into.
 *
 * Memory: keys live inline in the store (no reallocation ever copies them) and are wiped with
 * explicit_bzero when the store is cleared or freed; the file's text and its parsed tree are
 * wiped before they are released; rewritten heads are written into space reserved in one step.
 *
 * Threads: loading is self-contained; a loaded store is read-only and may be shared.
 */
#include "credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base64.h"
#include "fdutil.h"
#include "macro.h"
#include "strv.h"
#include "toml.h"

extern char **environ;

static const char *const anthropic_env[] = { "ANTHROPIC_API_KEY", NULL };
static const char *const anthropic_domains[] = { "api.anthropic.com", NULL };
static const char *const openai_env[] = { "OPENAI_API_KEY", NULL };
static const char *const openai_domains[] = { "api.openai.com", NULL };
static const char *const gemini_env[] = { "GEMINI_API_KEY", "GOOGLE_API_KEY", NULL };
static const char *const gemini_domains[] = { "generativelanguage.googleapis.com", NULL };
/* git over HTTPS (github.com) and the REST/GraphQL API (api.github.com: gh) */
static const char *const github_env[] = { "GH_TOKEN", "GITHUB_TOKEN", NULL };
static const char *const github_domains[] = { "github.com", "api.github.com", NULL };

/* Placeholders: printable, unreserved URL characters only (they appear in query strings), none
 * a substring of another, shaped like each provider's keys for tools that glance at the prefix. */
static const struct cred_provider_info providers[CRED_N_PROVIDERS] = {
	[CRED_ANTHROPIC] = { "anthropic", anthropic_env, "ANTHROPIC_API_KEY",
			     "sk-ant-capsem-placeholder", anthropic_domains },
	[CRED_OPENAI] = { "openai", openai_env, "OPENAI_API_KEY", "sk-capsem-placeholder",
			  openai_domains },
	[CRED_GEMINI] = { "gemini", gemini_env, "GEMINI_API_KEY", "AIza-capsem-placeholder",
			  gemini_domains },
	[CRED_GITHUB] = { "github", github_env, "GH_TOKEN", "ghp_capsem_placeholder",
			  github_domains },
};

struct cred_key {
	bool set;
	const char *source; /* static: an env variable's name or "credentials file" */
	size_t len;
	char key[CRED_MAX_KEY + 1];
};

struct cred_store {
	struct cred_key k[CRED_N_PROVIDERS];
};

const struct cred_provider_info *cred_provider(enum cred_provider p)
{
	return (unsigned)p < CRED_N_PROVIDERS ? &providers[p] : NULL;
}

void cred_clear(struct cred_store *s)
{
	if (s)
		explicit_wipe(s->k, sizeof(s->k));
}

void cred_free(struct cred_store *s)
{
	if (!s)
		return;
	cred_clear(s);
	free(s);
}

bool cred_has_key(const struct cred_store *s, enum cred_provider p)
{
	return s && (unsigned)p < CRED_N_PROVIDERS && s->k[p].set;
}

const char *cred_key_source(const struct cred_store *s, enum cred_provider p)
{
	return cred_has_key(s, p) ? s->k[p].source : NULL;
}

/* Trim blanks around v[0, n) and store it as p's key. 0, 1 when empty (nothing stored), or
 * -EBADMSG for a key with inner spaces or control characters, or too long. */
static int set_key(struct cred_store *s, enum cred_provider p, const char *v, size_t n,
		   const char *source)
{
	while (n && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
		v++, n--;
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
		n--;
	if (n == 0)
		return 1;
	if (n > CRED_MAX_KEY)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
			return -EBADMSG;
	struct cred_key *k = &s->k[p];
	explicit_bzero(k, sizeof(*k)); /* k is never NULL: not explicit_wipe() */
	memcpy(k->key, v, n);
	k->key[n] = 0;
	k->len = n;
	k->set = true;
	k->source = source;
	return 0;
}

/* Overwrite every string of a parsed tree (the tree is freed right after). */
static void wipe_tree(const struct toml_value *v, unsigned depth)
{
	const char *str;
	size_t n;
	if (!v || depth > TOML_DEPTH_HARD_MAX)
		return;
	switch (toml_type(v)) {
	case TOML_TABLE:
		for (size_t i = 0; i < toml_table_size(v); i++)
			wipe_tree(toml_table_value(v, i), depth + 1);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < toml_array_size(v); i++)
			wipe_tree(toml_array_at(v, i), depth + 1);
		break;
	case TOML_STRING:
		if (toml_get_string(v, &str, &n) == 0)
			explicit_wipe((char *)str,
				      n); /* the tree's own buffer, about to be freed */
		break;
	default:
		break;
	}
}

static int parse_file(struct cred_store *s, const char *path, const char *text, size_t len,
		      char *err, size_t errlen)
{
	const struct toml_limits lim = { .max_input = CRED_MAX_FILE, .max_depth = 4 };
	struct toml_value *root = NULL;
	struct toml_error te = { 0 };
	int k = toml_parse_limits(text, len, &lim, &root, &te);
	if (k == -EBADMSG)
		snprintf(err, errlen, "%s:%u: %s (column %u)", path, te.line, te.msg, te.column);
	if (k < 0)
		return k;
	for (size_t i = 0; i < toml_table_size(root) && k == 0; i++) {
		const char *sect = toml_table_key(root, i, NULL);
		const struct toml_value *t = toml_table_value(root, i);
		int p = -1;
		for (int j = 0; j < CRED_N_PROVIDERS; j++)
			if (streq(sect, providers[j].name))
				p = j;
		if (p < 0 || toml_type(t) != TOML_TABLE) {
			char shown[65];
			size_t m = 0;
			for (; sect[m] && m < 64; m++)
				shown[m] = ((unsigned char)sect[m] < 0x20 || sect[m] == 0x7f)
						   ? '?'
						   : sect[m];
			shown[m] = 0;
			snprintf(err, errlen, "%s: [%s]: %s", path, shown,
				 p < 0 ? "unknown provider (anthropic, openai, gemini, github)"
				       : "expected a table with api_key");
			k = -EBADMSG;
			break;
		}
		for (size_t j = 0; j < toml_table_size(t); j++) {
			const char *key = toml_table_key(t, j, NULL);
			const char *v;
			size_t n;
			if (!streq(key, "api_key")) {
				snprintf(err, errlen, "%s: [%s]: unknown key (only api_key)", path,
					 sect);
				k = -EBADMSG;
				break;
			}
			if (toml_get_string(toml_table_value(t, j), &v, &n) < 0) {
				snprintf(err, errlen, "%s: [%s] api_key: expected a string", path,
					 sect);
				k = -EBADMSG;
				break;
			}
			int r = set_key(s, (enum cred_provider)p, v, n, "credentials file");
			if (r < 0) {
				snprintf(err, errlen,
					 "%s: [%s] api_key: longer than %d bytes, or contains "
					 "spaces "
					 "or control characters",
					 path, sect, CRED_MAX_KEY);
				k = r;
			}
		}
	}
	wipe_tree(root, 0);
	toml_free(root);
	return k;
}

static int load_file(struct cred_store *s, const char *path, char *err, size_t errlen)
{
	struct stat st;
	_cleanup_close_ int fd = open_regular_file(path, &st, err, errlen);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	if (st.st_mode & 0077) {
		snprintf(err, errlen,
			 "%s: refusing a credentials file that group or others can access (mode "
			 "%04o): run 'chmod 600 %s'",
			 path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(err, errlen, "%s: refusing a credentials file owned by uid %u", path,
			 (unsigned)st.st_uid);
		return -EPERM;
	}
	if ((uint64_t)st.st_size > CRED_MAX_FILE) {
		snprintf(err, errlen, "%s: larger than %u bytes", path, CRED_MAX_FILE);
		return -EBADMSG;
	}
	char *text = malloc(CRED_MAX_FILE + 1);
	if (!text)
		return -ENOMEM;
	size_t n = 0;
	int k = 0;
	for (;;) {
		ssize_t r = fd_read_some(fd, text + n, CRED_MAX_FILE + 1 - n);
		if (r < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror((int)-r));
			k = (int)r;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > CRED_MAX_FILE) {
			snprintf(err, errlen, "%s: larger than %u bytes", path, CRED_MAX_FILE);
			k = -EBADMSG;
			break;
		}
	}
	if (k == 0)
		k = parse_file(s, path, text, n, err, errlen);
	explicit_wipe(text, CRED_MAX_FILE + 1);
	free(text);
	return k;
}

static const char *env_get(char *const *envp, const char *name)
{
	size_t nl = strlen(name);
	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], name, nl) == 0 && envp[i][nl] == '=')
			return envp[i] + nl + 1;
	return NULL;
}

int cred_load(const char *path, char *const *envp, struct cred_store **ret, char *err,
	      size_t errlen)
{
	char dummy[1];
	if (!ret)
		return -EINVAL;
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	struct cred_store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int k = path ? load_file(s, path, err, errlen) : 0;
	if (!envp)
		envp = environ;
	for (int p = 0; p < CRED_N_PROVIDERS && k == 0; p++) {
		for (const char *const *e = providers[p].env; *e; e++) {
			const char *v = env_get(envp, *e);
			if (!v)
				continue;
			int r = set_key(s, (enum cred_provider)p, v, strlen(v), *e);
			if (r == 0)
				break;
			if (r < 0) {
				snprintf(err, errlen,
					 "%s: longer than %d bytes, or contains spaces or control "
					 "characters",
					 *e, CRED_MAX_KEY);
				k = r;
			}
		}
	}
	if (k < 0) {
		cred_free(s);
		return k;
	}
	*ret = s;
	return 0;
}

int cred_file_store(const char *path, const struct cred_store *from, unsigned mask, char *err,
		    size_t errlen)
{
	char dummy[1];
	char *const noenv[] = { NULL };
	_cleanup_cred_free_ struct cred_store *s = NULL;
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	/* what the file holds now (never the environment's keys), then the new ones */
	int r = cred_load(path, noenv, &s, err, errlen);
	if (r < 0)
		return r;
	for (int p = 0; p < CRED_N_PROVIDERS; p++) {
		if (!(mask & (1u << p)) || !cred_has_key(from, (enum cred_provider)p))
			continue;
		s->k[p] = from->k[p];
		s->k[p].source = "credentials file";
	}
	/* one buffer, reserved once, wiped before it is released */
	size_t cap = CRED_N_PROVIDERS * (2 * CRED_MAX_KEY + 64) + 128, n = 0;
	char *text = malloc(cap);
	if (!text)
		return -ENOMEM;
	n = (size_t)snprintf(text, cap, "# Capsem provider keys (docs/POLICY.md); mode 0600\n");
	for (int p = 0; p < CRED_N_PROVIDERS; p++) {
		if (!s->k[p].set)
			continue;
		n += (size_t)snprintf(text + n, cap - n, "[%s]\napi_key = \"", providers[p].name);
		/* a TOML basic string: keys are printable ASCII, only '"' and '\\' need escapes */
		for (size_t i = 0; i < s->k[p].len; i++) {
			char c = s->k[p].key[i];
			if (c == '"' || c == '\\')
				text[n++] = '\\';
			text[n++] = c;
		}
		n += (size_t)snprintf(text + n, cap - n, "\"\n");
	}
	r = write_file_atomic(path, text, n, 0600);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	explicit_wipe(text, cap);
	free(text);
	return r;
}

unsigned cred_key_mask(const struct cred_store *s)
{
	unsigned mask = 0;
	for (int p = 0; p < CRED_N_PROVIDERS; p++)
		if (cred_has_key(s, (enum cred_provider)p))
			mask |= 1u << p;
	return mask;
}

void cred_env_scrub(void)
{
	for (int p = 0; p < CRED_N_PROVIDERS; p++)
		for (const char *const *e = providers[p].env; *e; e++) {
			char *v = getenv(*e);
			if (!v)
				continue;
			explicit_bzero(v, strlen(v));
			(void)unsetenv(*e);
		}
}

int cred_guest_env(unsigned mask, unsigned flags, char ***ret_env)
{
	_cleanup_strv_free_ char **env = calloc(1, sizeof(char *));
	if (!env)
		return -ENOMEM;
	for (int p = 0; p < CRED_N_PROVIDERS; p++) {
		if (!(flags & CRED_ENV_ALL) && !(mask & (1u << p)))
			continue;
		int k = strv_pushf(&env, "%s=%s", providers[p].guest_env, providers[p].placeholder);
		if (k < 0)
			return k;
	}
	*ret_env = TAKE_PTR(env);
	return 0;
}

/* ---- rewriting request heads ---- */

/* Output that either only counts (dst NULL) or writes. */
struct emit {
	uint8_t *dst;
	size_t n;
};

static void emit(struct emit *e, const void *p, size_t n)
{
	if (e->dst && n)
		memcpy(e->dst + e->n, p, n);
	e->n += n;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static void emit_query_value(struct emit *e, const struct cred_key *k)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < k->len; i++) {
		unsigned char c = (unsigned char)k->key[i];
		if (unreserved(c)) {
			emit(e, &c, 1);
		} else {
			char pct[3] = { '%', hex[c >> 4], hex[c & 15] };
			emit(e, pct, 3);
		}
	}
}

static bool span_is(const char *p, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(p, want, n) == 0;
}

/* The longest "user:password" an Authorization: Basic value may decode to for a swap. */
#define BASIC_MAX (2 * CRED_MAX_KEY + 256)

/* "Basic <base64(user:password)>" (what git sends): when the user or the password is exactly
 * the placeholder, emit the value with the key in its place, re-encoded; else nothing and 0.
 * The decoded text (which then holds the key) lives on the stack and is wiped. */
static int rewrite_basic(const char *v, size_t n, const char *ph, const struct cred_key *k,
			 struct emit *e)
{
	uint8_t plain[BASIC_MAX];
	size_t pn, phl = strlen(ph);
	int r = 0;
	if (n > base64_encoded_len(BASIC_MAX - CRED_MAX_KEY) ||
	    base64_decode_to(v, n, plain, BASIC_MAX - CRED_MAX_KEY, &pn) < 0)
		return 0;
	uint8_t *colon = memchr(plain, ':', pn);
	if (colon) {
		size_t ul = (size_t)(colon - plain), pl = pn - ul - 1;
		bool user = ul == phl && memcmp(plain, ph, phl) == 0;
		bool pass = pl == phl && memcmp(colon + 1, ph, phl) == 0;
		if (user || pass) {
			/* rebuild in place: the key replaces whichever part was the placeholder */
			uint8_t out[BASIC_MAX];
			size_t on = 0;
			const uint8_t *a = user ? (const uint8_t *)k->key : plain;
			size_t al = user ? k->len : ul;
			const uint8_t *b = pass ? (const uint8_t *)k->key : colon + 1;
			size_t bl = pass ? k->len : pl;
			memcpy(out, a, al);
			on = al;
			out[on++] = ':';
			memcpy(out + on, b, bl);
			on += bl;
			if (e->dst)
				base64_encode_to(out, on, (char *)e->dst + e->n);
			e->n += base64_encoded_len(on);
			explicit_wipe(out, sizeof(out));
			r = 1;
		}
	}
	explicit_wipe(plain, sizeof(plain));
	return r;
}

/* The request line: "key=<placeholder>" parameters of the target's query. */
static int rewrite_request_line(const char *line, size_t ll, const char *ph,
				const struct cred_key *k, struct emit *e)
{
	const char *sp = memchr(line, ' ', ll);
	int count = 0;
	if (!sp) {
		emit(e, line, ll);
		return 0;
	}
	const char *target = sp + 1;
	const char *end = line + ll;
	const char *tend = memchr(target, ' ', (size_t)(end - target));
	if (!tend)
		tend = end;
	const char *q = memchr(target, '?', (size_t)(tend - target));
	const char *done = line;
	for (const char *a = q ? q + 1 : tend; a < tend;) {
		const char *amp = memchr(a, '&', (size_t)(tend - a));
		const char *pend = amp ? amp : tend;
		const char *eq = memchr(a, '=', (size_t)(pend - a));
		if (eq && span_is(a, (size_t)(eq - a), "key") &&
		    span_is(eq + 1, (size_t)(pend - eq - 1), ph)) {
			emit(e, done, (size_t)(eq + 1 - done));
			emit_query_value(e, k);
			done = pend;
			count++;
		}
		a = pend + 1;
	}
	emit(e, done, (size_t)(end - done));
	return count;
}

/* A header line: the whole value of x-api-key / x-goog-api-key / api-key, the token of
 * "authorization: Bearer <token>" or "authorization: token <token>" (GitHub's own scheme), or
 * the user or password of "authorization: Basic <base64>". */
static int rewrite_header(const char *line, size_t ll, const char *ph, const struct cred_key *k,
			  struct emit *e)
{
	const char *colon = memchr(line, ':', ll);
	if (!colon) {
		emit(e, line, ll);
		return 0;
	}
	size_t nl = (size_t)(colon - line);
	const char *v = colon + 1, *end = line + ll;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	bool auth = nl == 13 && strncasecmp(line, "authorization", 13) == 0;
	bool plain = (nl == 9 && strncasecmp(line, "x-api-key", 9) == 0) ||
		     (nl == 14 && strncasecmp(line, "x-goog-api-key", 14) == 0) ||
		     (nl == 7 && strncasecmp(line, "api-key", 7) == 0);
	if (auth) {
		size_t sl = 0;
		bool basic = false;
		if ((size_t)(end - v) > 7 && strncasecmp(v, "bearer", 6) == 0 &&
		    (v[6] == ' ' || v[6] == '\t'))
			sl = 6;
		else if ((size_t)(end - v) > 6 && strncasecmp(v, "token", 5) == 0 &&
			 (v[5] == ' ' || v[5] == '\t'))
			sl = 5;
		else if ((size_t)(end - v) > 6 && strncasecmp(v, "basic", 5) == 0 &&
			 (v[5] == ' ' || v[5] == '\t'))
			sl = 5, basic = true;
		if (sl) {
			v += sl;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
		} else {
			v = end + 1; /* no match */
		}
		if (basic && v < end) {
			size_t before = e->n;
			emit(e, line, (size_t)(v - line));
			if (rewrite_basic(v, (size_t)(end - v), ph, k, e)) {
				emit(e, end, (size_t)(line + ll - end));
				return 1;
			}
			e->n = before; /* not ours: the line as it was */
			emit(e, line, ll);
			return 0;
		}
	}
	if ((auth || plain) && v <= end && span_is(v, (size_t)(end - v), ph)) {
		emit(e, line, (size_t)(v - line));
		emit(e, k->key, k->len);
		emit(e, end, (size_t)(line + ll - end));
		return 1;
	}
	emit(e, line, ll);
	return 0;
}

static int rewrite(const char *head, size_t len, const char *ph, const struct cred_key *k,
		   struct emit *e)
{
	int count = 0;
	size_t pos = 0;
	bool first = true;
	while (pos < len) {
		const char *nlp = memchr(head + pos, '\n', len - pos);
		size_t end = nlp ? (size_t)(nlp - head) + 1 : len;
		size_t cl = end;
		if (cl > pos && head[cl - 1] == '\n')
			cl--;
		if (cl > pos && head[cl - 1] == '\r')
			cl--;
		const char *line = head + pos;
		size_t ll = cl - pos;
		if (first)
			count += rewrite_request_line(line, ll, ph, k, e);
		else if (ll > 0 && line[0] != ' ' && line[0] != '\t')
			count += rewrite_header(line, ll, ph, k, e);
		else
			emit(e, line, ll);
		emit(e, head + cl, end - cl);
		first = false;
		pos = end;
	}
	return count;
}

int cred_provider_for_host(const char *host)
{
	size_t n = host ? strnlen(host, 256) : 0;
	if (n && host[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return -1;
	for (int p = 0; p < CRED_N_PROVIDERS; p++)
		for (const char *const *d = providers[p].domains; *d; d++)
			if (strlen(*d) == n && strncasecmp(*d, host, n) == 0)
				return p;
	return -1;
}

int cred_rewrite_head(const struct cred_store *s, const char *host, const char *head, size_t len,
		      struct buf *out, int *ret_count)
{
	int p = cred_provider_for_host(host);
	const struct cred_key *k = p >= 0 && s && s->k[p].set ? &s->k[p] : NULL;
	struct emit e = { NULL, 0 };
	int count = 0;
	if (len == 0) {
		if (ret_count)
			*ret_count = 0;
		return 0;
	}
	if (k)
		count = rewrite(head, len, providers[p].placeholder, k, &e);
	else
		e.n = len;
	if (e.n > buf_room(out))
		return -ENOBUFS;
	uint8_t *dst = buf_reserve(out, e.n);
	if (!dst)
		return -ENOMEM;
	if (k) {
		e = (struct emit){ dst, 0 };
		rewrite(head, len, providers[p].placeholder, k, &e);
	} else {
		memcpy(dst, head, len);
	}
	buf_commit(out, e.n);
	if (ret_count)
		*ret_count = count;
	return 0;
}
