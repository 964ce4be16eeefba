/* kconfig.c - verify that every option of a config fragment stuck in the final .config.
 *
 * Trust boundary: both texts are local files the builder itself produced or was pointed at;
 * they are still parsed by length (no line is assumed to be terminated or short). Runs in the
 * caller's thread; pure.
 */
#include "kconfig.h"

#include "macro.h"
#include "strv.h"

struct line {
	const char *p;
	size_t n;
};

/* Next line of text starting at *pos: without the newline, a trailing '\r' and surrounding
 * blanks. Returns 0 at the end of the text. */
static int next_line(const char *text, size_t *pos, struct line *l)
{
	const char *s = text + *pos;
	if (!*s)
		return 0;
	const char *nl = strchr(s, '\n');
	size_t n = nl ? (size_t)(nl - s) : strlen(s);
	*pos += n + (nl ? 1 : 0);
	while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	l->p = s;
	l->n = n;
	return 1;
}

static int is_symbol_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

/* Split "CONFIG_X=value" into name length and value; 0 when the line is not of that form. */
static int split_assignment(const struct line *l, size_t *ret_name_len)
{
	if (l->n < 8 || strncmp(l->p, "CONFIG_", 7) != 0)
		return 0;
	size_t i = 7;
	while (i < l->n && is_symbol_char(l->p[i]))
		i++;
	if (i == 7 || i >= l->n || l->p[i] != '=')
		return 0;
	*ret_name_len = i;
	return 1;
}

enum cfg_state { CFG_ABSENT, CFG_NOT_SET, CFG_VALUE };

/* Look name up in .config text: its state and, for CFG_VALUE, the value. */
static enum cfg_state config_lookup(const char *config, const char *name, size_t name_len,
				    struct line *ret_value)
{
	size_t pos = 0;
	struct line l;
	while (next_line(config, &pos, &l)) {
		if (l.n > name_len && strncmp(l.p, name, name_len) == 0 && l.p[name_len] == '=') {
			ret_value->p = l.p + name_len + 1;
			ret_value->n = l.n - name_len - 1;
			return CFG_VALUE;
		}
		/* "# CONFIG_X is not set" */
		if (l.n == 2 + name_len + 11 && strncmp(l.p, "# ", 2) == 0 &&
		    strncmp(l.p + 2, name, name_len) == 0 &&
		    strncmp(l.p + 2 + name_len, " is not set", 11) == 0)
			return CFG_NOT_SET;
	}
	return CFG_ABSENT;
}

/* 1 when the same option is assigned again later in the fragment (the later line wins). */
static int overridden_later(const char *fragment, size_t pos, const char *name, size_t name_len)
{
	struct line l;
	size_t n;
	while (next_line(fragment, &pos, &l))
		if (split_assignment(&l, &n) && n == name_len && strncmp(l.p, name, n) == 0)
			return 1;
	return 0;
}

int kconfig_check(const char *fragment, const char *config, char ***ret_bad)
{
	_cleanup_strv_free_ char **bad = NULL;
	size_t pos = 0, lineno = 0, name_len;
	struct line l, have;
	int count = 0, r = 0;

	while (next_line(fragment, &pos, &l)) {
		lineno++;
		if (l.n == 0 || l.p[0] == '#')
			continue;
		if (!split_assignment(&l, &name_len)) {
			count++;
			r |= strv_pushf(&bad, "line %zu: not a CONFIG_NAME=value line: %.*s",
					lineno, (int)MIN(l.n, 80), l.p);
			continue;
		}
		if (overridden_later(fragment, pos, l.p, name_len))
			continue;
		const char *want = l.p + name_len + 1;
		size_t want_len = l.n - name_len - 1;
		enum cfg_state st = config_lookup(config, l.p, name_len, &have);
		int ok;
		if (want_len == 1 && want[0] == 'n')
			ok = st != CFG_VALUE || (have.n == 1 && have.p[0] == 'n');
		else
			ok = st == CFG_VALUE && have.n == want_len &&
			     memcmp(have.p, want, want_len) == 0;
		if (ok)
			continue;
		count++;
		if (st == CFG_VALUE)
			r |= strv_pushf(&bad, "%.*s (final .config: %.*s)", (int)l.n, l.p,
					(int)MIN(have.n, 80), have.p);
		else
			r |= strv_pushf(&bad, "%.*s (final .config: %s)", (int)l.n, l.p,
					st == CFG_NOT_SET ? "is not set" : "absent");
	}
	if (r < 0)
		return -ENOMEM;
	if (ret_bad)
		*ret_bad = TAKE_PTR(bad);
	return count;
}
