/* pricing.c - the model price table: parsed from TOML (the shipped copy is compiled in from
 * pricing.toml) and the cost of one call's tokens (rules in pricing.h).
 *
 * Trust: the shipped table is ours; a table given by an operator is checked strictly (known
 * keys only, finite non-negative prices, bounded names and counts) so that a typo is an error,
 * not a silent zero. Model names to look up come from provider responses relayed through a
 * guest connection (hostile): they are only compared, never stored. Thread: any; a loaded
 * table is read-only.
 */
#include "pricing.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

/* generated from pricing.toml by embed-text.py */
extern const char egress_pricing_toml[];
extern const size_t egress_pricing_toml_len;

#define MAX_PRICE 1e6

struct pricing {
	struct pricing_model *m;
	size_t n;
};

void pricing_free(struct pricing *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free((char *)p->m[i].provider);
		free((char *)p->m[i].name);
		free((char *)p->m[i].source);
		free((char *)p->m[i].as_of);
	}
	free(p->m);
	free(p);
}

const struct pricing_model *pricing_model_at(const struct pricing *p, size_t i)
{
	return p && i < p->n ? &p->m[i] : NULL;
}

size_t pricing_count(const struct pricing *p)
{
	return p ? p->n : 0;
}

_printf_(3, 4) static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static bool provider_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		      s[i] == '_'))
			return false;
	return true;
}

static bool model_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > PRICING_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

/* A price: integer or float, finite, 0..MAX_PRICE. 0, -ENOENT (absent) or -EBADMSG. */
static int get_price(const struct toml_value *t, const char *key, double *ret)
{
	const struct toml_value *v = toml_table_get(t, key);
	int64_t i;
	double d;
	if (!v)
		return -ENOENT;
	if (toml_get_int(v, &i) == 0)
		d = (double)i;
	else if (toml_get_float(v, &d) < 0)
		return -EBADMSG;
	if (!isfinite(d) || d < 0 || d > MAX_PRICE)
		return -EBADMSG;
	*ret = d;
	return 0;
}

static const char *const KEYS[] = {
	"input",       "output",       "cached_input",	     "cache_write",	  "above",
	"input_above", "output_above", "cached_input_above", "cache_write_above", "source",
	"as_of",
};

/* source: where the prices were read (printable, at most 200 bytes); as_of: when, YYYY-MM or
 * YYYY-MM-DD. Both optional for the parser; the shipped table has both for every entry (a unit
 * test checks it). */
static int get_provenance(const struct toml_value *t, struct pricing_model *m, const char *who,
			  char *err, size_t errlen)
{
	const struct toml_value *v;
	const char *s;
	size_t n;
	if ((v = toml_table_get(t, "source"))) {
		if (toml_get_string(v, &s, &n) < 0 || n == 0 || n > 200 || strlen(s) != n)
			return fail(err, errlen, "%s: source: expected a short string", who);
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
				return fail(err, errlen, "%s: source: control characters", who);
		if (!(m->source = strdup(s)))
			return -ENOMEM;
	}
	if ((v = toml_table_get(t, "as_of"))) {
		bool ok = toml_get_string(v, &s, &n) == 0 && (n == 7 || n == 10);
		for (size_t i = 0; ok && i < n; i++)
			ok = (i == 4 || i == 7) ? s[i] == '-' : (s[i] >= '0' && s[i] <= '9');
		if (!ok)
			return fail(err, errlen, "%s: as_of: expected YYYY-MM or YYYY-MM-DD", who);
		if (!(m->as_of = strdup(s)))
			return -ENOMEM;
	}
	return 0;
}

static int parse_model(const struct toml_value *t, struct pricing_model *m, const char *who,
		       char *err, size_t errlen)
{
	if (toml_type(t) != TOML_TABLE)
		return fail(err, errlen, "%s: not a table", who);
	for (size_t i = 0; i < toml_table_size(t); i++) {
		const char *k = toml_table_key(t, i, NULL);
		bool known = false;
		for (size_t j = 0; j < ELEMENTSOF(KEYS); j++)
			known = known || streq(k, KEYS[j]);
		if (!known)
			return fail(err, errlen, "%s: unknown key '%.40s'", who, k);
	}
	if (get_price(t, "input", &m->input) < 0 || get_price(t, "output", &m->output) < 0)
		return fail(err, errlen, "%s: input and output prices are required numbers", who);
	int r = get_price(t, "cached_input", &m->cached_input);
	if (r == -ENOENT)
		m->cached_input = m->input;
	else if (r < 0)
		return fail(err, errlen, "%s: bad cached_input", who);
	r = get_price(t, "cache_write", &m->cache_write);
	if (r == -ENOENT)
		m->cache_write = m->input;
	else if (r < 0)
		return fail(err, errlen, "%s: bad cache_write", who);

	const struct toml_value *a = toml_table_get(t, "above");
	int64_t above = 0;
	if (a && (toml_get_int(a, &above) < 0 || above <= 0))
		return fail(err, errlen, "%s: 'above' must be a positive integer", who);
	bool any_above = toml_table_get(t, "input_above") || toml_table_get(t, "output_above") ||
			 toml_table_get(t, "cached_input_above") ||
			 toml_table_get(t, "cache_write_above");
	if (!a) {
		if (any_above)
			return fail(err, errlen, "%s: *_above prices need 'above'", who);
		return 0;
	}
	m->above = (uint64_t)above;
	if (get_price(t, "input_above", &m->input_above) < 0 ||
	    get_price(t, "output_above", &m->output_above) < 0)
		return fail(err, errlen, "%s: 'above' needs input_above and output_above", who);
	r = get_price(t, "cached_input_above", &m->cached_input_above);
	if (r == -ENOENT)
		m->cached_input_above = m->input_above;
	else if (r < 0)
		return fail(err, errlen, "%s: bad cached_input_above", who);
	r = get_price(t, "cache_write_above", &m->cache_write_above);
	if (r == -ENOENT)
		m->cache_write_above = m->input_above;
	else if (r < 0)
		return fail(err, errlen, "%s: bad cache_write_above", who);
	return 0;
}

int pricing_parse(const char *text, size_t len, struct pricing **ret, char *err, size_t errlen)
{
	_cleanup_toml_free_ struct toml_value *root = NULL;
	struct toml_error te;
	if (!text || !ret)
		return -EINVAL;
	int r = toml_parse(text, len, &root, &te);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return fail(err, errlen, "line %u: %s", te.line, te.msg);

	size_t total = 0;
	for (size_t i = 0; i < toml_table_size(root); i++)
		total += toml_table_size(toml_table_value(root, i));
	if (total > PRICING_MAX_MODELS)
		return fail(err, errlen, "more than %d models", PRICING_MAX_MODELS);

	struct pricing *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->m = calloc(total ? total : 1, sizeof(*p->m));
	if (!p->m) {
		free(p);
		return -ENOMEM;
	}
	for (size_t i = 0; i < toml_table_size(root); i++) {
		size_t pn;
		const char *prov = toml_table_key(root, i, &pn);
		const struct toml_value *tbl = toml_table_value(root, i);
		if (!provider_name_ok(prov, pn) || toml_type(tbl) != TOML_TABLE) {
			pricing_free(p);
			return fail(err, errlen, "'%.40s': not a provider table", prov);
		}
		for (size_t j = 0; j < toml_table_size(tbl); j++) {
			size_t mn;
			const char *name = toml_table_key(tbl, j, &mn);
			char who[200];
			snprintf(who, sizeof(who), "%s.%.128s", prov, name);
			if (!model_name_ok(name, mn)) {
				pricing_free(p);
				return fail(err, errlen, "%s: bad model name", who);
			}
			struct pricing_model m = { 0 };
			r = parse_model(toml_table_value(tbl, j), &m, who, err, errlen);
			if (r == 0)
				r = get_provenance(toml_table_value(tbl, j), &m, who, err, errlen);
			if (r < 0) {
				free((char *)m.source);
				free((char *)m.as_of);
				pricing_free(p);
				return r;
			}
			m.provider = strdup(prov);
			m.name = strdup(name);
			p->m[p->n++] = m;
			if (!m.provider || !m.name) {
				pricing_free(p);
				return -ENOMEM;
			}
		}
	}
	*ret = p;
	return 0;
}

int pricing_load_default(struct pricing **ret)
{
	return pricing_parse(egress_pricing_toml, egress_pricing_toml_len, ret, NULL, 0);
}

const struct pricing_model *pricing_find(const struct pricing *p, const char *provider,
					 const char *model)
{
	if (!p || !provider || !model)
		return NULL;
	if (strncmp(model, "models/", 7) == 0)
		model += 7;
	size_t n = strnlen(model, PRICING_MAX_NAME + 1);
	if (n == 0 || n > PRICING_MAX_NAME)
		return NULL;
	const struct pricing_model *best = NULL;
	size_t best_len = 0;
	for (size_t i = 0; i < p->n; i++) {
		const struct pricing_model *m = &p->m[i];
		if (!streq(m->provider, provider))
			continue;
		size_t l = strlen(m->name);
		if (l > n || memcmp(m->name, model, l) != 0)
			continue;
		if (l == n)
			return m;
		char sep = model[l];
		if ((sep == '-' || sep == '@' || sep == ':') && l > best_len) {
			best = m;
			best_len = l;
		}
	}
	return best;
}

int pricing_cost(const struct pricing *p, const char *provider, const char *model,
		 const struct pricing_usage *u, double *ret_usd)
{
	if (!u || !ret_usd)
		return -EINVAL;
	const struct pricing_model *m = pricing_find(p, provider, model);
	if (!m)
		return -ENOENT;
	bool hi = m->above && u->input > m->above;
	double pin = hi ? m->input_above : m->input, pout = hi ? m->output_above : m->output;
	double pcr = hi ? m->cached_input_above : m->cached_input;
	double pcw = hi ? m->cache_write_above : m->cache_write;
	uint64_t cached = MIN(u->cached_input, u->input);
	uint64_t written = MIN(u->cache_write, u->input - cached);
	uint64_t plain = u->input - cached - written;
	*ret_usd = ((double)plain * pin + (double)cached * pcr + (double)written * pcw +
		    (double)u->output * pout) /
		   1e6;
	return 0;
}
