/* Prices and cost: the shipped table reads exactly, lookups pick the
 * longest key, tiers apply to the whole request, unknown models stay
 * unknown, cost_basis and model_cost_map reprice, and the arithmetic is
 * exact to the nanodollar without overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "account/prices.h"

#define USD(x) ((int64_t)((x) * 1000000000.0 + 0.5))   /* test literals only */

static kl_prices *shipped;

static int load_shipped(void **state)
{
    (void)state;
    char why[256] = "";
    shipped = kl_prices_load("data/prices.json", why, sizeof(why));
    if (!shipped)
        fprintf(stderr, "data/prices.json: %s (run from the repository root)\n", why);
    return shipped ? 0 : -1;
}

static int free_shipped(void **state)
{
    (void)state;
    kl_prices_free(shipped);
    return 0;
}

static kl_prices *parse(const char *json)
{
    char why[256] = "";
    kl_prices *t = kl_prices_parse(json, strlen(json), why, sizeof(why));
    if (!t)
        fprintf(stderr, "parse: %s\n", why);
    return t;
}

static int64_t cost_of(const kl_prices *t, const char *model, int64_t in, int64_t cr, int64_t cw,
                       int64_t out)
{
    struct kl_usage u = {.input = in, .cache_read = cr, .cache_write = cw, .output = out, .known = true};
    int64_t nd = -12345;
    if (kl_cost(t, NULL, NULL, model, &u, &nd) < 0)
        return -1;
    return nd;
}

/* ---- reading ---- */

static void decimals_are_exact(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(kl_decimal_nano("2.5", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, 2500000000);
    assert_int_equal(kl_decimal_nano("0.075", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, 75000000);
    assert_int_equal(kl_decimal_nano("0.000000001", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(kl_decimal_nano("10", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, 10000000000);
    assert_int_equal(kl_decimal_nano("1.50000000000", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, 1500000000);
    assert_int_equal(kl_decimal_nano("1000000", KL_PRICE_MAX, &v), 0);
    assert_int_equal(v, KL_PRICE_MAX);
    const char *bad[] = {"", "-1", ".5", "5.", "1e3", "0.0000000001", "abc", "1.2.3", " 1", "1000000.000000001",
                         "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kl_decimal_nano(bad[i], KL_PRICE_MAX, &v), -1);
}

static void shipped_table_reads_exactly(void **state)
{
    (void)state;
    assert_int_equal(kl_prices_count(shipped), 91);
    assert_string_equal(kl_prices_version(shipped), "2026-11-01");
    const struct kl_price *p = kl_prices_find(shipped, NULL, "gpt-4o-mini");
    assert_non_null(p);
    assert_string_equal(p->provider, "openai");
    assert_int_equal(p->r.input, 150000000);
    assert_int_equal(p->r.output, 600000000);
    assert_int_equal(p->r.cache_read, 75000000);
    assert_int_equal(p->r.cache_write, KL_PRICE_NONE);
    p = kl_prices_find(shipped, NULL, "gpt-6-luna");
    assert_int_equal(p->r.cache_write, 125000000);
    assert_int_equal(p->ntiers, 1);
    assert_int_equal(p->tiers[0].above_input_tokens, 272000);
    assert_int_equal(p->tiers[0].r.cache_write, 250000000);
    p = kl_prices_find(shipped, NULL, "gpt-5.3-codex");
    assert_int_equal(p->r.cache_read, 175000000);
    p = kl_prices_find(shipped, NULL, "text-embedding-3-small");
    assert_int_equal(p->r.input, 20000000);
    assert_int_equal(p->r.output, KL_PRICE_NONE);
    /* every entry has a provider and an input price */
    for (size_t i = 0; i < kl_prices_count(shipped); i++) {
        const struct kl_price *e = kl_prices_at(shipped, i);
        assert_non_null(e->provider);
        assert_true(e->r.input >= 0);
    }
    assert_null(kl_prices_at(shipped, kl_prices_count(shipped)));
}

static void bad_tables_are_refused(void **state)
{
    (void)state;
    const struct {
        const char *json, *why;
    } cases[] = {
        {"[]", "not a JSON object"},
        {"{\"version\":\"x\"}", "\"models\" must be an object"},
        {"{\"currency\":\"EUR\",\"models\":{}}", "currency"},
        {"{\"models\":{\"a\":{\"provider\":\"x\",\"output\":1}}}", "models.a: missing \"input\""},
        {"{\"models\":{\"a*b\":{\"input\":1}}}", "bad key"},
        {"{\"models\":{\"**\":{\"input\":1}}}", "bad key"},
        {"{\"models\":{\"\":{\"input\":1}}}", "bad key"},
        {"{\"models\":{\"a\":{\"input\":1,\"cache_reads\":2}}}", "unknown field \"cache_reads\""},
        {"{\"models\":{\"a\":{\"input\":-1}}}", "\"input\" must be"},
        {"{\"models\":{\"a\":{\"input\":0.0000000001}}}", "\"input\" must be"},
        {"{\"models\":{\"a\":{\"input\":\"1\",\"output\":2000000.5}}}", "\"output\" must be"},
        {"{\"models\":{\"a\":{\"input\":1,\"provider\":3}}}", "provider"},
        {"{\"models\":{\"a\":{\"input\":1},\"a\":{\"input\":2}}}", "appears twice"},
        {"{\"models\":{\"a\":{\"input\":1,\"tiers\":{}}}}", "tiers"},
        {"{\"models\":{\"a\":{\"input\":1,\"tiers\":[{\"input\":2}]}}}", "above_input_tokens"},
        {"{\"models\":{\"a\":{\"input\":1,\"tiers\":[{\"above_input_tokens\":1.5}]}}}", "above_input_tokens"},
        {"{\"models\":{\"a\":{\"input\":1,\"tiers\":[{\"above_input_tokens\":5,\"in\":2}]}}}", "unknown tier field"},
        {"{\"models\":{\"a\":{\"input\":1,\"tiers\":[{\"above_input_tokens\":5},{\"above_input_tokens\":5}]}}}",
         "same threshold"},
        {"{\"models\":{\"a\":[]}}", "must be an object"},
        {"{\"models\":{\"a\":{\"input\":1,\"reasoning\":\"no\"}}}", "\"reasoning\" must be true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[256] = "";
        kl_prices *t = kl_prices_parse(cases[i].json, strlen(cases[i].json), why, sizeof(why));
        if (t || !strstr(why, cases[i].why))
            fail_msg("case %zu: %s -> \"%s\"", i, cases[i].json, why);
    }
    char why[256] = "";
    assert_null(kl_prices_load("/nonexistent/prices.json", why, sizeof(why)));
    assert_non_null(strstr(why, "/nonexistent/prices.json"));
    assert_null(kl_prices_parse("{", 1, NULL, 0));
    /* "reasoning": false marks a model that reasons only when asked */
    const char *r = "{\"models\":{\"a\":{\"input\":1,\"reasoning\":false},\"b\":{\"input\":1,\"reasoning\":true},"
                    "\"c\":{\"input\":1}}}";
    kl_prices *t = kl_prices_parse(r, strlen(r), why, sizeof(why));
    assert_non_null(t);
    assert_true(kl_prices_find(t, NULL, "a")->no_reasoning);
    assert_false(kl_prices_find(t, NULL, "b")->no_reasoning);
    assert_false(kl_prices_find(t, NULL, "c")->no_reasoning);
    kl_prices_free(t);
}

/* ---- lookup ---- */

static void lookup_longest_key_wins(void **state)
{
    (void)state;
    /* dated snapshots reach the -20* keys */
    assert_string_equal(kl_prices_find(shipped, NULL, "gpt-4o-2024-08-06")->key, "gpt-4o-20*");
    assert_string_equal(kl_prices_find(shipped, NULL, "gpt-4o-mini-2024-07-18")->key, "gpt-4o-mini-20*");
    assert_string_equal(kl_prices_find(shipped, NULL, "claude-sonnet-4-5-20250929")->key, "claude-sonnet-4-5*");
    assert_string_equal(kl_prices_find(shipped, NULL, "claude-sonnet-4-5")->key, "claude-sonnet-4-5*");
    /* Aperture's other cost bases: Vertex by model id; routers' ids name their vendor */
    assert_string_equal(kl_prices_find(shipped, "vertex", "claude-sonnet-4-5")->key, "claude-sonnet-4-5*");
    assert_string_equal(kl_prices_find(shipped, "vertex", "gemini-2.5-pro")->key,
                        kl_prices_find(shipped, "google", "gemini-2.5-pro")->key);
    assert_string_equal(kl_prices_find(shipped, "openrouter", "anthropic/claude-sonnet-4-5")->key, "claude-sonnet-4-5*");
    assert_string_equal(kl_prices_find(shipped, "vercel", "openai/gpt-4o-2024-08-06")->key, "gpt-4o-20*");
    assert_null(kl_prices_find(shipped, "openrouter", "openai/claude-sonnet-4-5"));
    /* as OpenRouter and Vercel spell Claude's versions, with a dot */
    assert_string_equal(kl_prices_find(shipped, "openrouter", "anthropic/claude-sonnet-4.5")->key, "claude-sonnet-4-5*");
    assert_string_equal(kl_prices_find(shipped, "vercel", "anthropic/claude-fable-5.1")->key, "claude-fable-5-1*");
    assert_null(kl_prices_find(shipped, "openrouter", "anthropic/claude.sonnet-4-5"));
    /* a dot in another vendor's id stays */
    assert_string_equal(kl_prices_find(shipped, "openrouter", "google/gemini-2.5-pro")->key,
                        kl_prices_find(shipped, "google", "gemini-2.5-pro")->key);
    assert_string_equal(kl_prices_find(shipped, NULL, "claude-fable-5-1-20261001")->key, "claude-fable-5-1*");
    assert_string_equal(kl_prices_find(shipped, NULL, "claude-fable-5")->key, "claude-fable-5");
    /* Gemini's own spelling */
    assert_string_equal(kl_prices_find(shipped, NULL, "models/gemini-2.5-flash")->key, "gemini-2.5-flash");
    /* exact-only keys do not match neighbours */
    assert_null(kl_prices_find(shipped, NULL, "claude-opus-5-7"));
    assert_null(kl_prices_find(shipped, NULL, "gpt-4o-audio-preview"));
    assert_null(kl_prices_find(shipped, NULL, "gemini-2.5-flash-image"));
    assert_null(kl_prices_find(shipped, NULL, NULL));

    kl_prices *t = parse("{\"models\":{\"gpt-*\":{\"input\":1},\"gpt-4o*\":{\"input\":2},"
                         "\"gpt-4o\":{\"input\":3},\"*\":{\"input\":9}}}");
    assert_non_null(t);
    assert_string_equal(kl_prices_find(t, NULL, "gpt-4o-mini")->key, "gpt-4o*");
    assert_string_equal(kl_prices_find(t, NULL, "gpt-4o")->key, "gpt-4o");     /* exact beats prefix */
    assert_string_equal(kl_prices_find(t, NULL, "gpt-3")->key, "gpt-*");
    assert_string_equal(kl_prices_find(t, NULL, "llama")->key, "*");
    kl_prices_free(t);
}


/* The lookup rule as the header states it, by brute force over the table. */
static const struct kl_price *lookup_by_rule(const kl_prices *t, const char *provider, const char *model)
{
    const struct kl_price *best = NULL;
    for (size_t i = 0; i < kl_prices_count(t); i++) {
        const struct kl_price *e = kl_prices_at(t, i);
        if (provider && (!e->provider || strcmp(e->provider, provider)))
            continue;
        bool match = e->prefix ? !strncmp(model, e->key, e->match_len) : !strcmp(model, e->key);
        if (match && (!best || e->match_len > best->match_len ||
                      (e->match_len == best->match_len && best->prefix && !e->prefix)))
            best = e;
    }
    return best;
}

/* The indexed lookup agrees with the rule for every key of the shipped
 * table, its neighbours (longer, shorter, Gemini's spelling) and every
 * provider filter. */
static void lookup_matches_rule_everywhere(void **state)
{
    (void)state;
    const char *providers[] = {NULL, "openai", "anthropic", "google", "nope"};
    size_t checked = 0;
    for (size_t i = 0; i < kl_prices_count(shipped); i++) {
        const struct kl_price *e = kl_prices_at(shipped, i);
        char base[128], models[5][160];
        snprintf(base, sizeof(base), "%.*s", (int)e->match_len, e->key);
        snprintf(models[0], sizeof(models[0]), "%s", base);
        snprintf(models[1], sizeof(models[1]), "%s-2026-01-01", base);
        snprintf(models[2], sizeof(models[2]), "%.*s", e->match_len ? (int)e->match_len - 1 : 0, base);
        snprintf(models[3], sizeof(models[3]), "models/%s", base);
        snprintf(models[4], sizeof(models[4]), "x%s", base);
        for (size_t m = 0; m < 5; m++)
            for (size_t p = 0; p < sizeof(providers) / sizeof(providers[0]); p++) {
                const char *name = models[m];
                const struct kl_price *want = lookup_by_rule(shipped, providers[p], name);
                if (!want && !strncmp(name, "models/", 7))
                    want = lookup_by_rule(shipped, providers[p], name + 7);
                if (kl_prices_find(shipped, providers[p], name) != want)
                    fail_msg("%s (provider %s): %s, the rule says %s", name, providers[p] ? providers[p] : "any",
                             kl_prices_find(shipped, providers[p], name) ? kl_prices_find(shipped, providers[p], name)->key : "none",
                             want ? want->key : "none");
                checked++;
            }
    }
    assert_true(checked >= 5 * 5 * 80);
}

/* ---- cost ---- */

static void cost_exact_nanodollars(void **state)
{
    (void)state;
    /* the mockllm numbers: 1200 in (200 cached), 300 out */
    assert_int_equal(cost_of(shipped, "gpt-4o", 1000, 200, 0, 300), 5750000);      /* $0.00575 */
    assert_int_equal(cost_of(shipped, "gpt-4o-mini", 1000, 200, 0, 300), 345000);
    /* Anthropic: 3/15, read 0.30, write 3.75 */
    assert_int_equal(cost_of(shipped, "claude-sonnet-4-5-20250929", 1200, 200, 50, 300), 8347500);
    /* Gemini 2.5 Flash: 0.30/2.50, read 0.03 */
    assert_int_equal(cost_of(shipped, "gemini-2.5-flash", 1000, 200, 0, 340), 1156000);
    assert_int_equal(cost_of(shipped, "text-embedding-3-small", 1200, 0, 0, 0), 24000);
    /* an embedding model has no output price: output costs nothing */
    assert_int_equal(cost_of(shipped, "text-embedding-3-small", 1200, 0, 0, 50), 24000);
    assert_int_equal(cost_of(shipped, "gpt-4o", 0, 0, 0, 0), 0);
    /* Anthropic 1-hour cache writes: 2x input ($6.00 on Sonnet 4.5), 5-minute ones 1.25x */
    struct kl_usage hour = {.cache_write = 1500000, .cache_write_1h = 1000000, .known = true};
    int64_t nd = 0;
    assert_int_equal(kl_cost(shipped, NULL, NULL, "claude-sonnet-4-5", &hour, &nd), 0);
    assert_int_equal(nd, USD(6.00 + 0.5 * 3.75));
    /* a model without a 1-hour price bills those tokens at its cache_write rate */
    assert_int_equal(kl_cost(shipped, NULL, NULL, "gpt-5.6-sol", &hour, &nd), 0);
    assert_int_equal(nd, cost_of(shipped, "gpt-5.6-sol", 0, 0, 1500000, 0));
    /* GPT-5.6 Sol has a cache-write price */
    assert_int_equal(cost_of(shipped, "gpt-5.6-sol", 1000, 1000, 1000, 1000), USD(0.004 + 0.0004 + 0.005 + 0.02));
}

static void cost_rounds_up_once(void **state)
{
    (void)state;
    kl_prices *t = parse("{\"models\":{\"tiny\":{\"input\":0.0000015,\"output\":\"0.0000025\"}}}");
    assert_non_null(t);
    assert_int_equal(cost_of(t, "tiny", 1, 0, 0, 0), 1);           /* 0.0015 nd -> 1 */
    assert_int_equal(cost_of(t, "tiny", 1000, 0, 0, 0), 2);        /* 1.5 -> 2 */
    assert_int_equal(cost_of(t, "tiny", 2000, 0, 0, 0), 3);        /* exactly 3 */
    /* rounded once over the sum, not per kind of token: 1.5 + 2.5 = 4 */
    assert_int_equal(cost_of(t, "tiny", 1000, 0, 0, 1000), 4);
    kl_prices_free(t);
}

static void unknown_model_is_unknown(void **state)
{
    (void)state;
    struct kl_usage u = {.input = 10, .output = 10, .known = true};
    int64_t nd = 777;
    assert_int_equal(kl_cost(shipped, NULL, NULL, "no-such-model", &u, &nd), -1);
    assert_int_equal(nd, 777);                  /* untouched: never a silent 0 */
    assert_int_equal(kl_cost(shipped, NULL, NULL, NULL, &u, &nd), -1);
    assert_int_equal(kl_cost(NULL, NULL, NULL, "gpt-4o", &u, &nd), -1);
    assert_int_equal(kl_cost_estimate_max(shipped, NULL, NULL, "no-such-model", 10, 10, &nd), -1);
}

/* A tier prices the whole request once the prompt (input + cache read +
 * cache write) is above the threshold; at the threshold it does not. */
static void tiers_apply_to_whole_request(void **state)
{
    (void)state;
    /* gpt-5.4: 2.50 / 15 / 0.25; above 272000: 5 / 22.5 / 0.50 */
    assert_int_equal(cost_of(shipped, "gpt-5.4", 272000, 0, 0, 0), 680000000);
    assert_int_equal(cost_of(shipped, "gpt-5.4", 200000, 80000, 0, 1000), 1062500000);
    assert_int_equal(cost_of(shipped, "gpt-5.4", 272001, 0, 0, 0), 1360005000);
    /* gemini-2.5-pro above 200000: 2.50 / 15 / 0.25 */
    assert_int_equal(cost_of(shipped, "gemini-2.5-pro", 150000, 60000, 0, 2000), 420000000);
    assert_int_equal(cost_of(shipped, "gemini-2.5-pro", 150000, 50000, 0, 2000), 213750000);
    /* its threshold is on promptTokenCount: tool-use prompt tokens are billed
     * as input but do not count toward it (195000 + 10000 stays at base) */
    struct kl_usage g = {.input = 205000, .tool_prompt = 10000, .output = 100, .known = true};
    int64_t gnd = 0;
    assert_int_equal(kl_cost(shipped, NULL, NULL, "gemini-2.5-pro", &g, &gnd), 0);
    assert_int_equal(gnd, 257250000);
    /* Claude Haiku 5.5: cache writes count toward the threshold (100000) */
    assert_int_equal(cost_of(shipped, "claude-haiku-5-5", 50000, 40000, 10000, 0),
                     USD(0.005 + 0.0004 + 0.00125));
    assert_int_equal(cost_of(shipped, "claude-haiku-5-5", 50000, 40000, 10001, 0), 33250625);
    /* several tiers: the highest exceeded applies; missing fields keep the base */
    kl_prices *t = parse("{\"models\":{\"m\":{\"input\":1,\"output\":2,\"cache_read\":0.5,\"tiers\":["
                         "{\"above_input_tokens\":2000,\"input\":3},"
                         "{\"above_input_tokens\":1000,\"input\":2,\"output\":4}]}}}");
    assert_non_null(t);
    struct kl_price_rates r;
    kl_price_rates_for(kl_prices_find(t, NULL, "m"), 1500, &r);
    assert_int_equal(r.input, USD(2));
    assert_int_equal(r.output, USD(4));
    assert_int_equal(r.cache_read, USD(0.5));
    assert_int_equal(r.cache_write, USD(2));    /* unpublished: the tier's input rate */
    kl_price_rates_for(kl_prices_find(t, NULL, "m"), 2500, &r);
    assert_int_equal(r.input, USD(3));
    assert_int_equal(r.output, USD(2));         /* the 2000 tier does not list output */
    kl_prices_free(t);
}

/* Rates the provider does not publish fall back to the input rate. */
static void missing_cache_prices_fall_back_to_input(void **state)
{
    (void)state;
    /* gpt-5.4-pro: 30 / 180, no cache prices; tier 60 / 270 */
    assert_int_equal(cost_of(shipped, "gpt-5.4-pro", 0, 1000, 0, 0), 30000000);
    assert_int_equal(cost_of(shipped, "gpt-5.4-pro", 0, 0, 1000, 0), 30000000);
    assert_int_equal(cost_of(shipped, "gpt-5.4-pro", 0, 300000, 0, 0), 18000000000);
    /* gpt-5.5: no cache_write anywhere: base 5, tier 10 */
    assert_int_equal(cost_of(shipped, "gpt-5.5", 0, 0, 1000, 0), 5000000);
    assert_int_equal(cost_of(shipped, "gpt-5.5", 0, 0, 300000, 0), 3000000000);
}

static void no_overflow(void **state)
{
    (void)state;
    /* 1e9 tokens of each kind on the dearest shipped model */
    assert_int_equal(cost_of(shipped, "gpt-5.5-pro", 1000000000, 1000000000, 1000000000, 1000000000),
                     USD(30000 * 3 + 180000));
    struct kl_usage u = {.input = INT64_MAX, .cache_read = INT64_MAX, .cache_write = INT64_MAX,
                         .output = INT64_MAX};
    int64_t nd;
    assert_int_equal(kl_cost(shipped, NULL, NULL, "gpt-5.5-pro", &u, &nd), 0);
    assert_int_equal(nd, INT64_MAX);
    u = (struct kl_usage){.input = -5, .output = -1};
    assert_int_equal(kl_cost(shipped, NULL, NULL, "gpt-4o", &u, &nd), 0);
    assert_int_equal(nd, 0);
}

/* ---- cost_basis and model_cost_map ---- */

static void cost_basis_restricts_provider(void **state)
{
    (void)state;
    struct kl_usage u = {.input = 1000, .output = 1000};
    int64_t nd;
    assert_int_equal(kl_cost(shipped, "openai", NULL, "gpt-4o", &u, &nd), 0);
    assert_int_equal(nd, 12500000);
    assert_int_equal(kl_cost(shipped, "anthropic", NULL, "gpt-4o", &u, &nd), -1);
    assert_int_equal(kl_cost(shipped, "", NULL, "gpt-4o", &u, &nd), 0);        /* "" = no basis */
    /* the basis decides between two entries that both match */
    kl_prices *t = parse("{\"models\":{\"x-1\":{\"provider\":\"b\",\"input\":2},"
                         "\"x*\":{\"provider\":\"a\",\"input\":1}}}");
    assert_non_null(t);
    assert_int_equal(kl_cost(t, NULL, NULL, "x-1", &u, &nd), 0);
    assert_int_equal(nd, 2000000);
    assert_int_equal(kl_cost(t, "a", NULL, "x-1", &u, &nd), 0);
    assert_int_equal(nd, 1000000);
    kl_prices_free(t);
}

static struct kl_cost_map map_of(kl_arena *a, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    struct kl_cost_map m;
    const char *why = NULL;
    if (kl_cost_map_parse(j, a, &m, &why) < 0)
        fail_msg("%s: %s", json, why);
    cJSON_Delete(j);
    return m;
}

static void model_cost_map_reprices(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_cost_map m = map_of(&a, "[{\"match\":\"my-*-fast\",\"as\":\"gpt-4o-mini\"},"
                                      "{\"match\":\"my-*\",\"as\":\"gpt-4o\",\"adjustment\":0.8},"
                                      "{\"match\":\"gpt-4o\",\"adjustment\":\"0.333333333\"},"
                                      "{\"match\":\"claude-?-x\",\"as\":\"nope\"}]");
    assert_int_equal(m.n, 4);
    struct kl_usage u = {.input = 1000, .cache_read = 200, .output = 300};
    int64_t nd;
    assert_int_equal(kl_cost(shipped, NULL, &m, "my-model", &u, &nd), 0);
    assert_int_equal(nd, 4600000);              /* 5,750,000 x 0.8 */
    assert_int_equal(kl_cost(shipped, NULL, &m, "my-big-fast", &u, &nd), 0);     /* first match wins */
    assert_int_equal(nd, 345000);
    /* no "as": the model itself; 5,750,000 x 0.333333333 = 1,916,666.66475 -> up */
    assert_int_equal(kl_cost(shipped, NULL, &m, "gpt-4o", &u, &nd), 0);
    assert_int_equal(nd, 1916667);
    /* a rule that names an unpriced model leaves the cost unknown */
    assert_int_equal(kl_cost(shipped, NULL, &m, "claude-3-x", &u, &nd), -1);
    /* no rule matches: priced as itself */
    assert_int_equal(kl_cost(shipped, NULL, &m, "gpt-4o-mini", &u, &nd), 0);
    assert_int_equal(nd, 345000);
    /* the basis applies to the "as" model */
    assert_int_equal(kl_cost(shipped, "google", &m, "my-model", &u, &nd), -1);
    /* adjustment 0 makes a model free, exactly */
    m = map_of(&a, "[{\"match\":\"*\",\"adjustment\":0}]");
    assert_int_equal(kl_cost(shipped, NULL, &m, "gpt-4o", &u, &nd), 0);
    assert_int_equal(nd, 0);
    /* an empty or absent map changes nothing */
    m = map_of(&a, "[]");
    assert_int_equal(kl_cost(shipped, NULL, &m, "gpt-4o", &u, &nd), 0);
    assert_int_equal(nd, 5750000);
    assert_int_equal(kl_cost_map_parse(NULL, &a, &m, NULL), 0);
    assert_int_equal(m.n, 0);
    kl_arena_free(&a);
}

static void model_cost_map_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "{}", "[1]", "[{}]", "[{\"match\":\"\"}]", "[{\"match\":3}]", "[{\"match\":\"a\",\"as\":7}]",
        "[{\"match\":\"a\",\"adjustment\":-1}]", "[{\"match\":\"a\",\"adjustment\":1001}]",
        "[{\"match\":\"a\",\"adjustment\":\"x\"}]", "[{\"match\":\"a\",\"adjustment\":true}]",
        "[{\"match\":\"a\",\"adjusment\":1}]",
    };
    kl_arena a;
    kl_arena_init(&a);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j = cJSON_Parse(bad[i]);
        struct kl_cost_map m;
        const char *why = NULL;
        if (kl_cost_map_parse(j, &a, &m, &why) != -1 || !why || strncmp(why, "model_cost_map", 14))
            fail_msg("accepted %s", bad[i]);
        cJSON_Delete(j);
    }
    kl_arena_free(&a);
}

static void glob_matching(void **state)
{
    (void)state;
    assert_true(kl_cost_glob("*", ""));
    assert_true(kl_cost_glob("*", "anything/at all"));
    assert_true(kl_cost_glob("gpt-4o", "gpt-4o"));
    assert_false(kl_cost_glob("gpt-4o", "gpt-4o-mini"));
    assert_true(kl_cost_glob("gpt-*-mini", "gpt-4o-mini"));
    assert_true(kl_cost_glob("gpt-*-mini", "gpt--mini"));
    assert_false(kl_cost_glob("gpt-*-mini", "gpt-4o-mini-x"));
    assert_true(kl_cost_glob("claude-?-*", "claude-3-opus"));
    assert_false(kl_cost_glob("claude-?-*", "claude-35-opus"));
    assert_true(kl_cost_glob("a*b*c", "aXbYbZc"));
    assert_true(kl_cost_glob("openai/*", "openai/gpt-4o"));
    assert_false(kl_cost_glob("?", ""));
    /* pathological patterns stay fast */
    char s[4001];
    memset(s, 'a', 4000);
    s[4000] = '\0';
    assert_false(kl_cost_glob("*a*a*a*a*a*a*a*a*b", s));
}

/* ---- quota estimate ---- */

static void estimate_max(void **state)
{
    (void)state;
    int64_t nd;
    /* gpt-5.6: 4 / 20, write 5.00: the prompt at the dearer write rate */
    assert_int_equal(kl_cost_estimate_max(shipped, NULL, NULL, "gpt-5.6", 1000, 500, &nd), 0);
    assert_int_equal(nd, 15000000);
    /* above 272000 the tier (8 / 30, write 10) */
    assert_int_equal(kl_cost_estimate_max(shipped, NULL, NULL, "gpt-5.6", 300000, 500, &nd), 0);
    assert_int_equal(nd, 3015000000);
    /* gpt-4o has no write price: input 2.50 */
    assert_int_equal(kl_cost_estimate_max(shipped, NULL, NULL, "gpt-4o", 1000, 1000, &nd), 0);
    assert_int_equal(nd, 12500000);
    assert_int_equal(kl_cost_estimate_max(shipped, NULL, NULL, "gpt-4o", -1, -1, &nd), 0);
    assert_int_equal(nd, 0);
    kl_arena a;
    kl_arena_init(&a);
    struct kl_cost_map m = map_of(&a, "[{\"match\":\"gpt-4o\",\"adjustment\":2}]");
    assert_int_equal(kl_cost_estimate_max(shipped, "openai", &m, "gpt-4o", 1000, 1000, &nd), 0);
    assert_int_equal(nd, 25000000);
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decimals_are_exact),
        cmocka_unit_test(shipped_table_reads_exactly),
        cmocka_unit_test(bad_tables_are_refused),
        cmocka_unit_test(lookup_longest_key_wins),
        cmocka_unit_test(lookup_matches_rule_everywhere),
        cmocka_unit_test(cost_exact_nanodollars),
        cmocka_unit_test(cost_rounds_up_once),
        cmocka_unit_test(unknown_model_is_unknown),
        cmocka_unit_test(tiers_apply_to_whole_request),
        cmocka_unit_test(missing_cache_prices_fall_back_to_input),
        cmocka_unit_test(no_overflow),
        cmocka_unit_test(cost_basis_restricts_provider),
        cmocka_unit_test(model_cost_map_reprices),
        cmocka_unit_test(model_cost_map_errors),
        cmocka_unit_test(glob_matching),
        cmocka_unit_test(estimate_max),
    };
    return cmocka_run_group_tests(tests, load_shipped, free_shipped);
}
