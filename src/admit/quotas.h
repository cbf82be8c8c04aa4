/* Spend quotas (Aperture's `quotas` section) and rate limits (a keyless
 * capability in grants), as configuration. */
#ifndef KL_QUOTAS_H
#define KL_QUOTAS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

enum kl_on_exceed { KL_EXCEED_REJECT, KL_EXCEED_LOG };

struct kl_quota {
    const char *name;           /* template: "daily:<user>" */
    int64_t capacity_nd;        /* nanodollars */
    int64_t rate_nd;            /* refilled every rate_period_ms */
    int64_t rate_period_ms;     /* 0 = never refills */
    enum kl_on_exceed on_exceed;
};

struct kl_quotas {
    struct kl_quota *v;
    size_t n;
    int64_t default_max_output_tokens;  /* limits.default_max_output_tokens */
    int64_t default_reasoning_tokens;   /* limits.default_reasoning_tokens: added for OpenAI reasoning */
    int64_t bytes_per_token;            /* limits.bytes_per_token: prompt estimate */
    int64_t referenced_input_tokens;    /* limits.referenced_input_tokens: the prompt estimate of each input a
                                           request points at (admit/referenced.h); 0: none */
};

#define KL_REFERENCED_INPUT_TOKENS_DEFAULT 100000

void kl_quotas_read_config(kl_cfg_ctx *c, const cJSON *v);   /* "quotas" */
void kl_limits_read_config(kl_cfg_ctx *c, const cJSON *v);   /* "limits" */
const struct kl_quota *kl_quota_find(const struct kl_quotas *q, const char *name);
/* The quota a bucket's name was made from ("daily:alice@example.com" from
 * "daily:<user>"), or NULL: one named exactly so, else the first template
 * it fits (a guess when several do). */
const struct kl_quota *kl_quota_for_bucket(const struct kl_quotas *q, const char *bucket);
/* Whether bucket's name could have been made from q: named so, or fitting
 * its template (a name shortened to fit the tables: its start fitting the
 * start of one). */
bool kl_quota_fits(const struct kl_quota *q, const char *bucket);

/* "$10.00", "10", 10 -> nanodollars. */
int kl_parse_dollars(const cJSON *v, int64_t *nd);
/* "$5.00/day" (min, hour, day, week, month = 30 days). */
int kl_parse_rate(const char *s, int64_t *amount_nd, int64_t *period_ms);

/* A rate_limit capability: {"rate_limit": {"requests_per_minute": N,
 * "tokens_per_minute": N, "concurrent": N, "per": "user"|"node"|"grant"}}. */
struct kl_rate_limit {
    int64_t rpm, tpm, concurrent;       /* 0 = not limited */
    int64_t tcpm;                       /* tool calls per minute */
    enum { KL_PER_USER, KL_PER_NODE, KL_PER_GRANT } per;
};
int kl_rate_limit_read(const cJSON *cap, struct kl_rate_limit *out, const char **why);

#endif
