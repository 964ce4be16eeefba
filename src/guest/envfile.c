/* envfile.c - the /etc/environment parser (envfile.h).
 *
 * Trust boundary: the file is the image's (the host's) or the guest root's own; either way it
 * is only turned into environment entries for processes that root starts anyway. Bounded by
 * the caller's read cap and ENVFILE_MAX_ENTRIES. Pure; any thread.
 */
#include "envfile.h"

#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "strv.h"

static int key_char(char c, int first)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (!first && c >= '0' && c <= '9');
}

/* Add "key=value" to *env (n entries), replacing an entry with the same key. */
static int put(char ***env, size_t *n, const char *key, size_t klen, const char *val, size_t vlen)
{
	char *kv = malloc(klen + vlen + 2);
	if (!kv)
		return -ENOMEM;
	memcpy(kv, key, klen);
	kv[klen] = '=';
	memcpy(kv + klen + 1, val, vlen);
	kv[klen + 1 + vlen] = 0;
	for (size_t i = 0; i < *n; i++)
		if (strncmp((*env)[i], kv, klen + 1) == 0) {
			free((*env)[i]);
			(*env)[i] = kv;
			return 0;
		}
	if (*n >= ENVFILE_MAX_ENTRIES) {
		free(kv);
		return -E2BIG;
	}
	int r = strv_push(env, kv);
	free(kv);
	if (r < 0)
		return r;
	(*n)++;
	return 0;
}

int envfile_parse(const char *text, size_t len, char ***ret)
{
	_cleanup_strv_free_ char **env = calloc(1, sizeof(char *));
	size_t n = 0;
	if (!env)
		return -ENOMEM;
	for (size_t pos = 0; pos < len;) {
		const char *line = text + pos, *end = memchr(line, '\n', len - pos);
		size_t l = end ? (size_t)(end - line) : len - pos;
		pos += l + 1;
		while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
			l--;
		while (l > 0 && (*line == ' ' || *line == '\t'))
			line++, l--;
		if (l == 0 || *line == '#')
			continue;
		if (l > 7 && strncmp(line, "export ", 7) == 0) {
			line += 7;
			l -= 7;
			while (l > 0 && *line == ' ')
				line++, l--;
		}
		size_t k = 0;
		while (k < l && key_char(line[k], k == 0))
			k++;
		if (k == 0 || k == l || line[k] != '=')
			continue;
		const char *v = line + k + 1;
		size_t vl = l - k - 1;
		if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
			v++;
			vl -= 2;
		}
		if (memchr(v, 0, vl))
			continue;
		int r = put(&env, &n, line, k, v, vl);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(env);
	return 0;
}
