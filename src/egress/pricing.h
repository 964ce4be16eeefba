/* pricing.h - model prices (USD per million tokens) and the cost of one model call.
 *
 * The table is TOML (format in src/egress/pricing.toml, the shipped copy compiled into the
 * binary): one table per provider ("anthropic", "openai", "gemini"), each key a model name with
 * its prices. A model name matches the entry with exactly that name, else the longest entry name
 * that is a prefix of it followed by '-', '@' or ':'; a leading "models/" is ignored. An unknown
 * model has an unknown cost (-ENOENT), never 0.
 *
 * A loaded table is immutable and may be shared between threads.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define PRICING_MAX_MODELS 4096
#define PRICING_MAX_NAME 128

/* Token counts of one call. input counts every prompt token, cached_input (read from a cache)
 * and cache_write (written to one) included; output counts every generated token (reasoning
 * included). */
struct pricing_usage {
	uint64_t input;
	uint64_t output;
	uint64_t cached_input;
	uint64_t cache_write;
};

struct pricing_model {
	const char *provider;
	const char *name;
	double input, output, cached_input, cache_write; /* USD per million tokens */
	uint64_t
		above; /* 0, or a prompt size (input tokens) above which the *_above prices apply */
	double input_above, output_above, cached_input_above, cache_write_above;
	const char *source; /* where the prices were read, or NULL */
	const char *as_of;  /* when: YYYY-MM[-DD], or NULL */
};

struct pricing;

/* Parse a price table from text[0, len). 0, -EBADMSG (with a one-line reason in err, which may
 * be NULL) or -ENOMEM. *ret owned by the caller. */
int pricing_parse(const char *text, size_t len, struct pricing **ret, char *err, size_t errlen);
/* The table compiled into the binary. 0 or -ENOMEM (-EBADMSG would be a build bug). */
int pricing_load_default(struct pricing **ret);
void pricing_free(struct pricing *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct pricing *, pricing_free)
#define _cleanup_pricing_free_ _cleanup_(pricing_freep)

/* Number of models in the table. */
size_t pricing_count(const struct pricing *p);
/* The i-th model of the table (0 <= i < pricing_count()), or NULL; for listing and checks. */
const struct pricing_model *pricing_model_at(const struct pricing *p, size_t i);
/* The entry for provider's model (rules above), or NULL. Owned by p. */
const struct pricing_model *pricing_find(const struct pricing *p, const char *provider,
					 const char *model);
/* The cost in USD of usage on provider's model: uncached input (input - cached_input -
 * cache_write) at the input price, cached_input at the cached price, cache_write at the cache
 * write price, output at the output price, all at the *_above prices when the entry has a
 * threshold and input exceeds it. 0, or -ENOENT for an unknown model, -EINVAL. */
int pricing_cost(const struct pricing *p, const char *provider, const char *model,
		 const struct pricing_usage *u, double *ret_usd);
