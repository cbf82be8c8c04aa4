/* Model prices (data/prices.json) and the cost of a request.
 *
 * Prices are kept as integers: nanodollars per 1M tokens (USD x 1e9), read
 * exactly from the file's decimals, so 2.5 is 2500000000 and 0.075 is
 * 75000000. A table is immutable once loaded and may be shared by every
 * thread without locking.
 *
 * Lookup: keys are model ids; a key ending in '*' matches every id that
 * starts with the rest. Of the keys that match, the longest wins (an exact
 * key beats a prefix key of the same length). An id written "models/x"
 * (Gemini's spelling) is looked up as "x" when it has no entry itself.
 *
 * Rates: a tier replaces the base rates (the ones it lists) for the whole
 * request when the prompt, input + cache_read + cache_write, is above its
 * threshold; of several tiers the highest threshold exceeded applies. A
 * rate the entry does not publish falls back: cache_write_1h to cache_write,
 * cache_read and cache_write to
 * the (tier's) input rate, since those tokens are then billed as plain
 * input; output to 0 (embedding models publish input only).
 *
 * Cost = sum(tokens x rate) / 1e6, times the cost map's adjustment, rounded
 * up to the next nanodollar once, at the end. Computed in 128 bits: exact
 * for any int64 token counts. */
#ifndef KL_PRICES_H
#define KL_PRICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "account/usage.h"
#include "core/arena.h"

#define KL_PRICE_NONE (-1)                      /* a rate the entry does not publish */
#define KL_PRICE_MAX 1000000000000000LL         /* $1,000,000 per 1M tokens */

struct kl_price_rates {         /* nanodollars per 1M tokens, or KL_PRICE_NONE */
    int64_t input, output, cache_read, cache_write;
    int64_t cache_write_1h;     /* Anthropic's 1-hour cache writes (cache_write is the 5-minute one) */
};

struct kl_price_tier {
    int64_t above_input_tokens;
    struct kl_price_rates r;    /* KL_PRICE_NONE: keep the base rate */
};

struct kl_price {
    const char *key;            /* as written, '*' included */
    const char *provider;       /* "openai", "anthropic", "google", ... or NULL */
    size_t match_len;           /* length of key without a trailing '*' */
    bool prefix;
    bool no_reasoning;          /* "reasoning": false: the model reasons only when asked (a cut stream) */
    struct kl_price_rates r;
    const struct kl_price_tier *tiers;     /* ascending thresholds */
    size_t ntiers;
};

typedef struct kl_prices kl_prices;

/* Read a table. NULL on error, with a message in why (which may be NULL). */
kl_prices *kl_prices_load(const char *path, char *why, size_t why_len);
kl_prices *kl_prices_parse(const char *text, size_t len, char *why, size_t why_len);
void kl_prices_free(kl_prices *t);

const char *kl_prices_version(const kl_prices *t);     /* "" when absent */
size_t kl_prices_count(const kl_prices *t);
const struct kl_price *kl_prices_at(const kl_prices *t, size_t i);     /* in file order */

/* The entry that prices model, among those of `provider` (NULL: any). */
const struct kl_price *kl_prices_find(const kl_prices *t, const char *provider, const char *model);

/* The rates that apply to a request with this prompt size, tier and
 * fallbacks resolved: every field is >= 0. */
void kl_price_rates_for(const struct kl_price *p, int64_t prompt_tokens, struct kl_price_rates *out);

/* Aperture's per-provider model_cost_map: [{"match": glob, "as": "model-id",
 * "adjustment": 1.0}], first match wins. A model matching `match` is priced
 * as `as` (itself when absent) and the cost multiplied by `adjustment`
 * (a number or a decimal string, 0..1000, exact to 1e-9). Glob: '*' any
 * run of characters, '?' exactly one, everything else literal. */
struct kl_cost_rule {
    const char *match;
    const char *as;             /* NULL: the model itself */
    int64_t adjustment_ppb;     /* parts per billion: 1.0 = 1000000000 */
};

struct kl_cost_map {
    const struct kl_cost_rule *rules;
    size_t n;
};

/* Read a model_cost_map array into out (arena memory). 0, or -1 with *why. */
int kl_cost_map_parse(const cJSON *arr, kl_arena *a, struct kl_cost_map *out, const char **why);

bool kl_cost_glob(const char *pattern, const char *s);

/* The cost of a finished request in nanodollars. cost_basis (may be NULL)
 * restricts pricing to entries of that provider; map (may be NULL) may
 * reprice the model. Returns 0 when priced, -1 when there is no price for
 * the model: cost UNKNOWN, never a silent 0. Looks only at the counts, not
 * at u->known. */
int kl_cost(const kl_prices *t, const char *cost_basis, const struct kl_cost_map *map,
            const char *model, const struct kl_usage *u, int64_t *nanodollars);

/* The most a request can cost, for reserving quota before it is sent: the
 * prompt (an estimate) at the dearest prompt rate (input or cache write)
 * of the tier that prompt size falls in, plus max_output_tokens at the
 * output rate. Negative counts count as 0. 0, or -1 when unpriced. */
int kl_cost_estimate_max(const kl_prices *t, const char *cost_basis, const struct kl_cost_map *map,
                         const char *model, int64_t prompt_tokens, int64_t max_output_tokens,
                         int64_t *nanodollars);

/* Parse a decimal ("2.5", "0.075", "10") exactly into units of 1e-9.
 * 0, or -1 when malformed, negative, over 9 decimals or above max. */
int kl_decimal_nano(const char *s, int64_t max, int64_t *out);

#endif
