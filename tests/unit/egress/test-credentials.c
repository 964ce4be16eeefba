/* test-credentials.c - the provider key store (src/egress/credentials.c): keys from the
 * environment and the 0600 credentials file (environment wins), refusal of a file others can
 * read, errors that never show a key, the guest's placeholder environment, the placeholder swap in
 * request heads only for the provider's own domains, and keys wiped from memory. */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base64.h"
#include "buf.h"
#include "credentials.h"
#include "fdutil.h"
#include "macro.h"
#include "strv.h"

#define ANT_KEY "sk-ant-api03-REALKEY-aaaa"
#define OAI_KEY "sk-proj-REALKEY-bbbb"
#define GEM_KEY "AIzaREAL+KEY/cccc"

static char *tmpdir(void)
{
	char t[] = "/tmp/capsem-cred-XXXXXX";
	assert_non_null(mkdtemp(t));
	return strdup(t);
}

static struct cred_store *load_env(char *const *envp)
{
	struct cred_store *s = NULL;
	char err[256];
	if (cred_load(NULL, envp, &s, err, sizeof(err)) < 0)
		fail_msg("cred_load: %s", err);
	return s;
}

static void test_providers(void **state)
{
	const struct cred_provider_info *a = cred_provider(CRED_ANTHROPIC);
	assert_string_equal(a->name, "anthropic");
	assert_string_equal(a->guest_env, "ANTHROPIC_API_KEY");
	assert_string_equal(a->placeholder, "sk-ant-capsem-placeholder");
	assert_string_equal(a->domains[0], "api.anthropic.com");
	assert_null(a->domains[1]);
	assert_string_equal(cred_provider(CRED_OPENAI)->placeholder, "sk-capsem-placeholder");
	const struct cred_provider_info *g = cred_provider(CRED_GEMINI);
	assert_string_equal(g->placeholder, "AIza-capsem-placeholder");
	assert_string_equal(g->env[0], "GEMINI_API_KEY");
	assert_string_equal(g->env[1], "GOOGLE_API_KEY");
	assert_null(cred_provider(CRED_N_PROVIDERS));
	/* no placeholder is a substring of another */
	for (int i = 0; i < CRED_N_PROVIDERS; i++)
		for (int j = 0; j < CRED_N_PROVIDERS; j++)
			if (i != j)
				assert_null(strstr(cred_provider(i)->placeholder,
						   cred_provider(j)->placeholder));
}

static void test_env_and_file(void **state)
{
	char *d = tmpdir(), path[512], err[512];
	snprintf(path, sizeof(path), "%s/credentials", d);
	const char *text = "[anthropic]\napi_key = \"" ANT_KEY "\"\n"
			   "[openai]\napi_key = \"sk-from-file\"\n"
			   "[gemini]\napi_key = \"\"\n";
	assert_int_equal(write_file_atomic(path, text, strlen(text), 0600), 0);

	char *env[] = { "PATH=/bin", "OPENAI_API_KEY=  " OAI_KEY "\n", "GOOGLE_API_KEY=" GEM_KEY,
			"ANTHROPIC_API_KEY_X=nope", NULL };
	struct cred_store *s = NULL;
	assert_int_equal(cred_load(path, env, &s, err, sizeof(err)), 0);
	assert_true(cred_has_key(s, CRED_ANTHROPIC));
	assert_string_equal(cred_key_source(s, CRED_ANTHROPIC), "credentials file");
	/* the environment wins over the file, blanks trimmed */
	assert_string_equal(cred_key_source(s, CRED_OPENAI), "OPENAI_API_KEY");
	/* GOOGLE_API_KEY when GEMINI_API_KEY is not set; an empty file key is no key */
	assert_string_equal(cred_key_source(s, CRED_GEMINI), "GOOGLE_API_KEY");
	cred_free(s);

	/* GEMINI_API_KEY before GOOGLE_API_KEY; an empty variable is skipped */
	char *env2[] = { "GOOGLE_API_KEY=g", "GEMINI_API_KEY=gem", "ANTHROPIC_API_KEY=", NULL };
	assert_int_equal(cred_load(NULL, env2, &s, err, sizeof(err)), 0);
	assert_string_equal(cred_key_source(s, CRED_GEMINI), "GEMINI_API_KEY");
	assert_false(cred_has_key(s, CRED_ANTHROPIC));
	assert_false(cred_has_key(s, CRED_OPENAI));
	assert_null(cred_key_source(s, CRED_OPENAI));
	cred_free(s);

	/* a missing file is fine */
	char missing[600];
	snprintf(missing, sizeof(missing), "%s/nope", d);
	char *none[] = { NULL };
	assert_int_equal(cred_load(missing, none, &s, err, sizeof(err)), 0);
	for (int p = 0; p < CRED_N_PROVIDERS; p++)
		assert_false(cred_has_key(s, p));
	cred_free(s);

	/* the process environment when envp is NULL */
	setenv("ANTHROPIC_API_KEY", "from-environ", 1);
	assert_int_equal(cred_load(NULL, NULL, &s, err, sizeof(err)), 0);
	assert_true(cred_has_key(s, CRED_ANTHROPIC));
	cred_free(s);
	unsetenv("ANTHROPIC_API_KEY");
	cred_free(NULL);
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

static void expect_file_err(const char *dir, const char *text, unsigned mode, int want,
			    const char *msg)
{
	char path[512], err[512] = "";
	snprintf(path, sizeof(path), "%s/credentials", dir);
	assert_int_equal(write_file_atomic(path, text, strlen(text), 0600), 0);
	assert_int_equal(chmod(path, mode), 0);
	char *none[] = { NULL };
	struct cred_store *s = NULL;
	int r = cred_load(path, none, &s, err, sizeof(err));
	if (r != want || !strstr(err, msg))
		fail_msg("got %d '%s', want %d '%s'", r, err, want, msg);
	assert_null(s);
	/* no message ever shows a key */
	assert_null(strstr(err, "SECRET"));
}

static void test_file_errors(void **state)
{
	char *d = tmpdir();
	const char *ok = "[anthropic]\napi_key = \"SECRET\"\n";
	expect_file_err(d, ok, 0644, -EPERM, "group or others can access (mode 0644)");
	expect_file_err(d, ok, 0640, -EPERM, "run 'chmod 600 ");
	expect_file_err(d, ok, 0604, -EPERM, "mode 0604");
	expect_file_err(d, ok, 0620, -EPERM, "mode 0620");
	expect_file_err(d, "[anthropic\napi_key = \"SECRET\"\n", 0600, -EBADMSG, "credentials:1:");
	expect_file_err(d, "[claude]\napi_key = \"SECRET\"\n", 0600, -EBADMSG,
			"[claude]: unknown provider (anthropic, openai, gemini, github)");
	expect_file_err(d, "anthropic = \"SECRET\"\n", 0600, -EBADMSG,
			"[anthropic]: expected a table");
	expect_file_err(d, "[openai]\nkey = \"SECRET\"\n", 0600, -EBADMSG,
			"[openai]: unknown key (only api_key)");
	expect_file_err(d, "[openai]\napi_key = 5\n", 0600, -EBADMSG,
			"[openai] api_key: expected a string");
	expect_file_err(d, "[openai]\napi_key = \"SECRET SECRET\"\n", 0600, -EBADMSG,
			"[openai] api_key: longer than 4096 bytes, or contains spaces");
	expect_file_err(d, "[gemini]\napi_key = \"SECRET\\r\\nX-Evil: 1\"\n", 0600, -EBADMSG,
			"contains spaces or control characters");
	expect_file_err(d, "[\"\\u001b[2J\"]\napi_key = \"SECRET\"\n", 0600, -EBADMSG,
			"[?[2J]: unknown provider");

	/* a bad key in the environment: named, not shown */
	char *env[] = { "ANTHROPIC_API_KEY=SECRET\r\nX: y", NULL };
	char err[256];
	struct cred_store *s = NULL;
	assert_int_equal(cred_load(NULL, env, &s, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "ANTHROPIC_API_KEY: "));
	assert_null(strstr(err, "SECRET"));
	/* a directory */
	assert_int_equal(cred_load(d, env, &s, err, sizeof(err)), -EISDIR);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(rm_rf(d), 0);
	free(d);
}

static void test_guest_env(void **state)
{
	char *env[] = { "ANTHROPIC_API_KEY=" ANT_KEY, NULL };
	struct cred_store *s = load_env(env);
	char **ge = NULL;
	assert_int_equal(cred_guest_env(cred_key_mask(s), 0, &ge), 0);
	assert_int_equal(strv_length(ge), 1);
	assert_string_equal(ge[0], "ANTHROPIC_API_KEY=sk-ant-capsem-placeholder");
	strv_free(ge);
	assert_int_equal(cred_guest_env(cred_key_mask(s), CRED_ENV_ALL, &ge), 0);
	assert_int_equal(strv_length(ge), 4);
	assert_string_equal(ge[1], "OPENAI_API_KEY=sk-capsem-placeholder");
	assert_string_equal(ge[2], "GEMINI_API_KEY=AIza-capsem-placeholder");
	assert_string_equal(ge[3], "GH_TOKEN=ghp_capsem_placeholder");
	for (size_t i = 0; ge[i]; i++)
		assert_null(strstr(ge[i], "REALKEY"));
	strv_free(ge);
	cred_free(s);

	char *none[] = { NULL };
	s = load_env(none);
	assert_int_equal(cred_guest_env(cred_key_mask(s), 0, &ge), 0);
	assert_non_null(ge);
	assert_null(ge[0]);
	strv_free(ge);
	cred_free(s);
}

/* Rewrite head for host; returns the result (static) and the count. */
static const char *rw(const struct cred_store *s, const char *host, const char *head, int *count)
{
	static char res[4096];
	struct buf b;
	buf_init(&b, sizeof(res) - 1);
	*count = -1;
	assert_int_equal(cred_rewrite_head(s, host, head, strlen(head), &b, count), 0);
	memcpy(res, buf_head(&b), buf_len(&b));
	res[buf_len(&b)] = 0;
	buf_done(&b, 1);
	return res;
}

#define SAME(s, host, head)                                        \
	do {                                                       \
		int c_;                                            \
		assert_string_equal(rw(s, host, head, &c_), head); \
		assert_int_equal(c_, 0);                           \
	} while (0)

static void test_rewrite(void **state)
{
	char *env[] = { "ANTHROPIC_API_KEY=" ANT_KEY, "GEMINI_API_KEY=" GEM_KEY, NULL };
	struct cred_store *s = load_env(env);
	int n;

	/* Anthropic: x-api-key on api.anthropic.com, any case, trailing dot */
	const char *h = "POST /v1/messages HTTP/1.1\r\n"
			"Host: api.anthropic.com\r\n"
			"x-api-key: sk-ant-capsem-placeholder\r\n"
			"X-Other: sk-ant-capsem-placeholder\r\n"
			"Content-Length: 2\r\n\r\n";
	const char *want = "POST /v1/messages HTTP/1.1\r\n"
			   "Host: api.anthropic.com\r\n"
			   "x-api-key: " ANT_KEY "\r\n"
			   "X-Other: sk-ant-capsem-placeholder\r\n"
			   "Content-Length: 2\r\n\r\n";
	assert_string_equal(rw(s, "api.anthropic.com", h, &n), want);
	assert_int_equal(n, 1);
	assert_string_equal(rw(s, "API.Anthropic.COM.", h, &n), want);
	assert_string_equal(rw(s, "api.anthropic.com",
			       "GET / HTTP/1.1\r\nX-API-KEY:\t "
			       "sk-ant-capsem-placeholder \r\n\r\n",
			       &n),
			    "GET / HTTP/1.1\r\nX-API-KEY:\t " ANT_KEY " \r\n\r\n");
	assert_string_equal(rw(s, "api.anthropic.com",
			       "GET / HTTP/1.1\r\nAuthorization: Bearer "
			       "sk-ant-capsem-placeholder\r\n\r\n",
			       &n),
			    "GET / HTTP/1.1\r\nAuthorization: Bearer " ANT_KEY "\r\n\r\n");

	/* nowhere else: lookalikes, sibling names, other providers, ports, garbage */
	static const char *const elsewhere[] = {
		"api.anthropic.com.evil.com",
		"evilapi.anthropic.com",
		"anthropic.com",
		"statsig.anthropic.com",
		"api.openai.com",
		"api.anthropic.co",
		"api.anthropic.com:443",
		"",
		"api.anthropic.com..",
	};
	for (size_t i = 0; i < sizeof(elsewhere) / sizeof(elsewhere[0]); i++)
		SAME(s, elsewhere[i], h);
	SAME(s, NULL, h);

	/* only the whole value, only in the authentication headers */
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nx-api-key: sk-ant-capsem-placeholderX\r\n\r\n");
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nx-api-key: Xsk-ant-capsem-placeholder\r\n\r\n");
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nx-api-key: sk-ant-capsem-placeholder, x\r\n\r\n");
	SAME(s, "api.anthropic.com", "GET / HTTP/1.1\r\nCookie: sk-ant-capsem-placeholder\r\n\r\n");
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nAuthorization: Basic sk-ant-capsem-placeholder\r\n\r\n");
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nAuthorization: sk-ant-capsem-placeholder\r\n\r\n");
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nx-api-key : sk-ant-capsem-placeholder\r\n\r\n");
	/* a continuation line is not a header */
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nX-A: b\r\n x-api-key: sk-ant-capsem-placeholder\r\n\r\n");
	/* the request line's target is only searched for ?key= */
	SAME(s, "api.anthropic.com", "GET /sk-ant-capsem-placeholder HTTP/1.1\r\n\r\n");
	/* another provider's placeholder is not this provider's */
	SAME(s, "api.anthropic.com", "GET / HTTP/1.1\r\nx-api-key: sk-capsem-placeholder\r\n\r\n");

	/* OpenAI has no key here: its placeholder stays */
	SAME(s, "api.openai.com",
	     "POST /v1/responses HTTP/1.1\r\nAuthorization: Bearer sk-capsem-placeholder\r\n\r\n");

	/* Gemini: x-goog-api-key, and ?key= percent-encoded */
	assert_string_equal(rw(s, "generativelanguage.googleapis.com",
			       "POST /v1beta/models/m:generateContent HTTP/1.1\r\n"
			       "x-goog-api-key: AIza-capsem-placeholder\r\n\r\n",
			       &n),
			    "POST /v1beta/models/m:generateContent HTTP/1.1\r\n"
			    "x-goog-api-key: " GEM_KEY "\r\n\r\n");
	assert_string_equal(rw(s, "generativelanguage.googleapis.com",
			       "GET /v1beta/models?alt=json&key=AIza-capsem-placeholder&x=key= "
			       "HTTP/1.1\r\nHost: g\r\n\r\n",
			       &n),
			    "GET /v1beta/models?alt=json&key=AIzaREAL%2BKEY%2Fcccc&x=key= "
			    "HTTP/1.1\r\nHost: g\r\n\r\n");
	assert_int_equal(n, 1);
	assert_string_equal(rw(s, "generativelanguage.googleapis.com",
			       "GET /m?key=AIza-capsem-placeholder HTTP/1.1\n"
			       "x-goog-api-key: AIza-capsem-placeholder\n\n",
			       &n),
			    "GET /m?key=AIzaREAL%2BKEY%2Fcccc HTTP/1.1\n"
			    "x-goog-api-key: " GEM_KEY "\n\n");
	assert_int_equal(n, 2);
	SAME(s, "generativelanguage.googleapis.com",
	     "GET /m?apikey=AIza-capsem-placeholder&key=AIza-capsem-placeholderX HTTP/1.1\r\n\r\n");
	SAME(s, "generativelanguage.googleapis.com",
	     "GET /m?q=1#key=AIza-capsem-placeholder HTTP/1.1\r\n\r\n");
	SAME(s, "evil.googleapis.com", "GET /m?key=AIza-capsem-placeholder HTTP/1.1\r\n\r\n");

	/* odd heads are copied byte for byte */
	SAME(s, "api.anthropic.com", "garbage");
	SAME(s, "api.anthropic.com", "GET\r\nno colon here\r\n\r\n");
	SAME(s, "api.anthropic.com", "\r\n\r\n");
	int c = -1;
	struct buf b;
	buf_init(&b, 16);
	assert_int_equal(cred_rewrite_head(s, "api.anthropic.com", "", 0, &b, &c), 0);
	assert_int_equal(c, 0);
	assert_int_equal(buf_len(&b), 0);

	/* too small an output buffer: an error, nothing written */
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	assert_int_equal(cred_rewrite_head(s, "api.anthropic.com", h, strlen(h), &b, &c), -ENOBUFS);
	assert_int_equal(buf_len(&b), 3);
	/* appended after what is there */
	buf_done(&b, 1);
	buf_init(&b, 4096);
	assert_int_equal(buf_append(&b, "abc", 3), 0);
	assert_int_equal(cred_rewrite_head(s, "api.anthropic.com", h, strlen(h), &b, NULL), 0);
	assert_int_equal(buf_len(&b), 3 + strlen(want));
	assert_memory_equal(buf_head(&b) + 3, want, strlen(want));
	buf_done(&b, 1);

	/* no store: nothing is replaced */
	SAME(NULL, "api.anthropic.com", h);
	cred_free(s);
}

/* GitHub: git's Basic credentials (user or password the placeholder), gh's "token" scheme and
 * Bearer, on github.com and api.github.com only */
static void test_rewrite_github(void **state)
{
	char *env[] = { "GITHUB_TOKEN=ghp_REALTOKEN0123456789", NULL };
	struct cred_store *s = load_env(env);
	int n;
	assert_string_equal(cred_key_source(s, CRED_GITHUB), "GITHUB_TOKEN");
	/* base64("x-access-token:ghp_capsem_placeholder") */
	char *ph = base64_encode("x-access-token:ghp_capsem_placeholder", 37);
	char *real = base64_encode("x-access-token:ghp_REALTOKEN0123456789", 38);
	char head[512], want[512];
	snprintf(head, sizeof(head),
		 "POST /o/r.git/git-upload-pack HTTP/1.1\r\nHost: github.com\r\n"
		 "Authorization: Basic %s\r\n\r\n",
		 ph);
	snprintf(want, sizeof(want),
		 "POST /o/r.git/git-upload-pack HTTP/1.1\r\nHost: github.com\r\n"
		 "Authorization: Basic %s\r\n\r\n",
		 real);
	assert_string_equal(rw(s, "github.com", head, &n), want);
	assert_int_equal(n, 1);
	SAME(s, "gist.github.com", head);
	SAME(s, "github.com.evil.com", head);
	SAME(s, "api.anthropic.com", head);
	free(ph);
	free(real);
	/* the token as the user name (some helpers send it so) */
	ph = base64_encode("ghp_capsem_placeholder:x-oauth-basic", 36);
	real = base64_encode("ghp_REALTOKEN0123456789:x-oauth-basic", 37);
	snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nauthorization: basic %s\r\n\r\n", ph);
	snprintf(want, sizeof(want), "GET / HTTP/1.1\r\nauthorization: basic %s\r\n\r\n", real);
	assert_string_equal(rw(s, "api.github.com", head, &n), want);
	free(ph);
	free(real);
	/* not the whole part, not base64, no colon, another provider's placeholder: unchanged */
	static const char *const not_ours[] = { "x:ghp_capsem_placeholderX",
						"ghp_capsem_placeholder", "x:sk-capsem-placeholder",
						"x:" };
	for (size_t i = 0; i < ELEMENTSOF(not_ours); i++) {
		char *b = base64_encode(not_ours[i], strlen(not_ours[i]));
		snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nAuthorization: Basic %s\r\n\r\n",
			 b);
		SAME(s, "github.com", head);
		free(b);
	}
	SAME(s, "github.com", "GET / HTTP/1.1\r\nAuthorization: Basic !!!!\r\n\r\n");
	SAME(s, "github.com", "GET / HTTP/1.1\r\nAuthorization: Basic \r\n\r\n");
	/* gh: "token" and "Bearer" */
	assert_string_equal(
		rw(s, "api.github.com",
		   "GET /user HTTP/1.1\r\nAuthorization: token ghp_capsem_placeholder\r\n\r\n", &n),
		"GET /user HTTP/1.1\r\nAuthorization: token ghp_REALTOKEN0123456789\r\n\r\n");
	assert_string_equal(
		rw(s, "api.github.com",
		   "GET /user HTTP/1.1\r\nAuthorization: Bearer ghp_capsem_placeholder\r\n\r\n",
		   &n),
		"GET /user HTTP/1.1\r\nAuthorization: Bearer ghp_REALTOKEN0123456789\r\n\r\n");
	cred_free(s);
}

static void test_wipe(void **state)
{
	char *env[] = { "ANTHROPIC_API_KEY=" ANT_KEY, "OPENAI_API_KEY=" OAI_KEY, NULL };
	struct cred_store *s = load_env(env);
	size_t size = malloc_usable_size(s);
	assert_true(size > 0);
	assert_non_null(memmem(s, size, ANT_KEY, strlen(ANT_KEY)));
	assert_non_null(memmem(s, size, OAI_KEY, strlen(OAI_KEY)));
	cred_clear(s);
	/* the store's memory no longer holds any key (cred_free clears before freeing) */
	assert_null(memmem(s, size, ANT_KEY, strlen(ANT_KEY)));
	assert_null(memmem(s, size, OAI_KEY, strlen(OAI_KEY)));
	for (int p = 0; p < CRED_N_PROVIDERS; p++)
		assert_false(cred_has_key(s, p));
	/* and nothing is substituted any more */
	SAME(s, "api.anthropic.com",
	     "GET / HTTP/1.1\r\nx-api-key: sk-ant-capsem-placeholder\r\n\r\n");
	cred_free(s);
}

/* cred_file_store: the chosen keys into the file (0600, escaped), the file's others kept, the
 * environment's other keys never copied in */
static void test_file_store(void **state)
{
	_cleanup_free_ char *dir = tmpdir(), *path = NULL, *text = NULL;
	char err[256];
	assert_true(asprintf(&path, "%s/credentials", dir) > 0);
	const char *old = "[openai]\napi_key = \"" OAI_KEY "\"\n";
	assert_int_equal(write_file_atomic(path, old, strlen(old), 0600), 0);
	char *env[] = { "ANTHROPIC_API_KEY=sk-ant-with\"quote\\slash", "GEMINI_API_KEY=" GEM_KEY,
			NULL };
	_cleanup_cred_free_ struct cred_store *from = load_env(env), *back = NULL;
	assert_int_equal(cred_file_store(path, from, 1u << CRED_ANTHROPIC, err, sizeof(err)), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(read_file_small(path, 65536, &text, NULL), 0);
	assert_null(strstr(text, GEM_KEY)); /* not chosen */
	assert_non_null(strstr(text, OAI_KEY));
	char *noenv[] = { NULL };
	assert_int_equal(cred_load(path, noenv, &back, err, sizeof(err)), 0);
	assert_true(cred_has_key(back, CRED_ANTHROPIC));
	assert_true(cred_has_key(back, CRED_OPENAI));
	assert_false(cred_has_key(back, CRED_GEMINI));
	assert_string_equal(cred_key_source(back, CRED_ANTHROPIC), "credentials file");
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_providers),   cmocka_unit_test(test_env_and_file),
		cmocka_unit_test(test_file_errors), cmocka_unit_test(test_guest_env),
		cmocka_unit_test(test_rewrite),	    cmocka_unit_test(test_rewrite_github),
		cmocka_unit_test(test_wipe),	    cmocka_unit_test(test_file_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
