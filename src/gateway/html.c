/* html.c - HTML to text (html.h).
 *
 * Trust boundary: the page comes from any web server the policy allows; the scanner looks at
 * each byte a bounded number of times (skipping a <script> searches forward once), writes at
 * most 2n + 64 bytes and keeps no stack. Pure; any thread (the gateway's worker threads).
 */
#include "html.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

struct out {
	char *s;
	size_t len, cap;
	bool space; /* a space is owed before the next word */
};

static void put(struct out *o, const char *p, size_t n)
{
	n = MIN(n, o->cap - o->len);
	memcpy(o->s + o->len, p, n);
	o->len += n;
}

static void newline(struct out *o, unsigned want)
{
	/* end with exactly `want` newlines (1 = new line, 2 = blank line), none at the start */
	unsigned have = 0;
	while (have < o->len && have < 2 && o->s[o->len - 1 - have] == '\n')
		have++;
	o->space = false;
	if (o->len == 0)
		return;
	while (o->len > 0 && o->s[o->len - 1] == ' ')
		o->len--;
	for (; have < want; have++)
		put(o, "\n", 1);
}

static void text_char(struct out *o, char c)
{
	if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
		o->space = true;
		return;
	}
	if (o->space && o->len > 0 && o->s[o->len - 1] != '\n')
		put(o, " ", 1);
	o->space = false;
	put(o, &c, 1);
}

static size_t utf8_encode(uint32_t cp, char b[4])
{
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = 0xFFFD;
	if (cp < 0x80) {
		b[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (char)(0xC0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (char)(0xE0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	b[0] = (char)(0xF0 | (cp >> 18));
	b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	b[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* An entity at p[0] == '&': its decoded text into b, the bytes it used (0: not an entity). */
static size_t entity(const char *p, size_t n, char b[4], size_t *ret_blen)
{
	static const struct {
		const char *name;
		const char *text;
	} named[] = { { "amp", "&" },	   { "lt", "<" },    { "gt", ">" },    { "quot", "\"" },
		      { "apos", "'" },	   { "nbsp", " " },  { "mdash", "-" }, { "ndash", "-" },
		      { "hellip", "..." }, { "copy", "(c)" } };
	size_t semi = 1;
	while (semi < n && semi < 12 && p[semi] != ';')
		semi++;
	if (semi >= n || p[semi] != ';')
		return 0;
	if (p[1] == '#') {
		uint32_t cp = 0;
		bool hex = semi > 2 && (p[2] == 'x' || p[2] == 'X');
		size_t i = hex ? 3 : 2;
		if (i >= semi)
			return 0;
		for (; i < semi; i++) {
			char c = p[i];
			uint32_t d;
			if (c >= '0' && c <= '9')
				d = (uint32_t)(c - '0');
			else if (hex && c >= 'a' && c <= 'f')
				d = (uint32_t)(c - 'a' + 10);
			else if (hex && c >= 'A' && c <= 'F')
				d = (uint32_t)(c - 'A' + 10);
			else
				return 0;
			cp = cp * (hex ? 16u : 10u) + d;
			if (cp > 0x10FFFF)
				cp = 0x110000;
		}
		*ret_blen = utf8_encode(cp, b);
		return semi + 1;
	}
	for (size_t k = 0; k < ELEMENTSOF(named); k++) {
		size_t l = strlen(named[k].name);
		if (l == semi - 1 && memcmp(p + 1, named[k].name, l) == 0) {
			*ret_blen = MIN(strlen(named[k].text), 4u);
			memcpy(b, named[k].text, *ret_blen);
			return semi + 1;
		}
	}
	return 0;
}

static bool name_is(const char *name, const char *const *set)
{
	for (size_t i = 0; set[i]; i++)
		if (streq(name, set[i]))
			return true;
	return false;
}

int html_to_text(const char *p, size_t n, char **ret, size_t *ret_len)
{
	static const char *const skip[] = { "script", "style",	"noscript", "svg",    "template",
					    "head",   "iframe", "object",   "canvas", NULL };
	static const char *const block[] = {
		"p",	 "div",	  "section",	"article", "header", "footer", "nav",
		"main",	 "aside", "table",	"tr",	   "ul",     "ol",     "dl",
		"dt",	 "dd",	  "blockquote", "pre",	   "form",   "figure", "figcaption",
		"title", "body",  "html",	NULL
	};
	struct out o = { .cap = 2 * n + 64 };
	o.s = malloc(o.cap + 2); /* + the final newline and NUL */
	if (!o.s)
		return -ENOMEM;
	size_t i = 0;
	while (i < n) {
		char c = p[i];
		if (c == '&') {
			char b[4];
			size_t bl = 0, used = entity(p + i, n - i, b, &bl);
			if (used) {
				for (size_t k = 0; k < bl; k++)
					text_char(&o, b[k]);
				i += used;
				continue;
			}
			text_char(&o, c);
			i++;
			continue;
		}
		if (c != '<') {
			text_char(&o, c);
			i++;
			continue;
		}
		/* a comment or declaration */
		if (i + 3 < n && memcmp(p + i, "<!--", 4) == 0) {
			const char *e = memmem(p + i + 4, n - i - 4, "-->", 3);
			i = e ? (size_t)(e - p) + 3 : n;
			continue;
		}
		size_t j = i + 1;
		bool closing = j < n && p[j] == '/';
		if (closing)
			j++;
		if (j >= n || !((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z') ||
				p[j] == '!' || p[j] == '?')) {
			text_char(&o, c); /* a lone '<' */
			i++;
			continue;
		}
		char name[16];
		size_t nl = 0;
		while (j < n && ((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z') ||
				 (p[j] >= '0' && p[j] <= '9') || p[j] == '!' || p[j] == '?')) {
			if (nl < sizeof(name) - 1)
				name[nl++] = (char)(p[j] | 0x20);
			j++;
		}
		name[nl] = 0;
		/* the end of the tag, quotes respected */
		char q = 0;
		while (j < n && (q || p[j] != '>')) {
			if (q && p[j] == q)
				q = 0;
			else if (!q && (p[j] == '"' || p[j] == '\''))
				q = p[j];
			j++;
		}
		i = j < n ? j + 1 : n;
		if (!closing && name_is(name, skip)) {
			/* drop everything up to </name */
			size_t k = i;
			for (; k + 1 + nl < n; k++)
				if (p[k] == '<' && p[k + 1] == '/' &&
				    strncasecmp(p + k + 2, name, nl) == 0)
					break;
			if (k + 1 + nl >= n) {
				i = n;
				continue;
			}
			const char *gt = memchr(p + k, '>', n - k);
			i = gt ? (size_t)(gt - p) + 1 : n;
			continue;
		}
		if (nl == 2 && name[0] == 'h' && name[1] >= '1' && name[1] <= '6') {
			newline(&o, 2);
			if (!closing) {
				for (int h = 0; h < name[1] - '0'; h++)
					put(&o, "#", 1);
				put(&o, " ", 1);
			}
		} else if (streq(name, "li")) {
			newline(&o, 1);
			if (!closing)
				put(&o, "- ", 2);
		} else if (streq(name, "br")) {
			newline(&o, 1);
		} else if (streq(name, "hr")) {
			newline(&o, 1);
			put(&o, "---", 3);
			newline(&o, 1);
		} else if (streq(name, "td") || streq(name, "th")) {
			if (closing)
				put(&o, " | ", 3);
		} else if (name_is(name, block)) {
			newline(&o, streq(name, "p") ? 2 : 1);
		}
	}
	while (o.len > 0 && (o.s[o.len - 1] == '\n' || o.s[o.len - 1] == ' '))
		o.len--;
	if (o.len > 0)
		o.s[o.len++] = '\n';
	o.s[o.len] = 0;
	*ret = o.s;
	*ret_len = o.len;
	return 0;
}
