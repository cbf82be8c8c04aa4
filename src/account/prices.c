#include "account/prices.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__extension__ typedef unsigned __int128 u128;

#define NANO 1000000000LL
#define MAX_FILE (16 << 20)
#define MAX_ADJUSTMENT (1000 * NANO)

struct kl_prices {
    kl_arena arena;             /* every string, entry and tier */
    const char *version;
    struct kl_price *v;
    size_t n;
    /* for lookups (one per request): the exact keys sorted, the prefix
     * keys in table order */
    const struct kl_price **exact, **prefix;
    size_t nexact, nprefix;
};

__attribute__((format(printf, 3, 4)))
static void say(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || !why_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

int kl_decimal_nano(const char *s, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    int64_t whole = 0, frac = 0;
    int fdigits = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > max / 10)
            return -1;
        whole = whole * 10 + (*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (fdigits < 9) {
                frac = frac * 10 + (*p - '0');
                fdigits++;
            } else if (*p != '0') {
                return -1;      /* finer than a nano-unit */
            }
        }
    }
    if (*p)
        return -1;
    for (; fdigits < 9; fdigits++)
        frac *= 10;
    if (whole > max / NANO)
        return -1;
    int64_t v = whole * NANO + frac;
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* A JSON number or decimal string as an exact count of 1e-9 units. cJSON
 * keeps only the double, so the number is printed to 9 decimals (glibc
 * prints the exact binary value correctly rounded) and accepted only when
 * that decimal reads back as the same double: then it is the decimal the
 * file wrote, for any value with at most 9 decimals and 15 significant
 * digits. */
static int nano_value(const cJSON *v, int64_t max, int64_t *out)
{
    if (cJSON_IsString(v))
        return kl_decimal_nano(v->valuestring, max, out);
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > (double)max / NANO)
        return -1;
    char buf[64];
    snprintf(buf, sizeof(buf), "%.9f", d);
    if (strtod(buf, NULL) != d)
        return -1;
    return kl_decimal_nano(buf, max, out);
}

#define NRATES 5
static const char *const rate_keys[NRATES] = {"input", "output", "cache_read", "cache_write", "cache_write_1h"};

static int64_t *rate_field(struct kl_price_rates *r, int i)
{
    switch (i) {
    case 0:
        return &r->input;
    case 1:
        return &r->output;
    case 2:
        return &r->cache_read;
    case 3:
        return &r->cache_write;
    default:
        return &r->cache_write_1h;
    }
}

/* The rate members of an entry or tier object; 0, or -1 naming the key. */
static int read_rates(const cJSON *o, struct kl_price_rates *r, const char **bad)
{
    for (int i = 0; i < NRATES; i++)
        *rate_field(r, i) = KL_PRICE_NONE;
    for (int i = 0; i < NRATES; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, rate_keys[i]);
        if (v && nano_value(v, KL_PRICE_MAX, rate_field(r, i)) < 0) {
            *bad = rate_keys[i];
            return -1;
        }
    }
    return 0;
}

static bool is_rate_key(const char *k)
{
    for (int i = 0; i < NRATES; i++)
        if (!strcmp(k, rate_keys[i]))
            return true;
    return false;
}

static int cmp_tier(const void *a, const void *b)
{
    const struct kl_price_tier *x = a, *y = b;
    return (x->above_input_tokens > y->above_input_tokens) - (x->above_input_tokens < y->above_input_tokens);
}

static int read_tiers(kl_prices *t, struct kl_price *e, const cJSON *arr, char *why, size_t wl)
{
    if (!cJSON_IsArray(arr)) {
        say(why, wl, "models.%s: \"tiers\" must be an array", e->key);
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    struct kl_price_tier *tiers = kl_arena_alloc(&t->arena, (n ? n : 1) * sizeof(*tiers));
    size_t i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        if (!cJSON_IsObject(o)) {
            say(why, wl, "models.%s: each tier must be an object", e->key);
            return -1;
        }
        for (const cJSON *m = o->child; m; m = m->next)
            if (strcmp(m->string, "above_input_tokens") && !is_rate_key(m->string)) {
                say(why, wl, "models.%s: unknown tier field \"%s\"", e->key, m->string);
                return -1;
            }
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(o, "above_input_tokens");
        if (!cJSON_IsNumber(th) || !(th->valuedouble >= 0) || th->valuedouble > 1e15 ||
            th->valuedouble != (double)(int64_t)th->valuedouble) {
            say(why, wl, "models.%s: a tier needs a whole \"above_input_tokens\" >= 0", e->key);
            return -1;
        }
        tiers[i].above_input_tokens = (int64_t)th->valuedouble;
        const char *bad = NULL;
        if (read_rates(o, &tiers[i].r, &bad) < 0) {
            say(why, wl, "models.%s: tier price \"%s\" must be a decimal USD amount, 0 to 1000000, at most 9 decimals",
                e->key, bad);
            return -1;
        }
    }
    qsort(tiers, n, sizeof(*tiers), cmp_tier);
    for (i = 1; i < n; i++)
        if (tiers[i].above_input_tokens == tiers[i - 1].above_input_tokens) {
            say(why, wl, "models.%s: two tiers with the same threshold", e->key);
            return -1;
        }
    e->tiers = tiers;
    e->ntiers = n;
    return 0;
}

static int read_entry(kl_prices *t, struct kl_price *e, const cJSON *o, char *why, size_t wl)
{
    const char *key = o->string;
    size_t klen = strlen(key);
    const char *star = strchr(key, '*');
    if (klen == 0 || (star && star != key + klen - 1)) {
        say(why, wl, "models: bad key \"%s\" (a model id, or a prefix ending in one '*')", key);
        return -1;
    }
    e->key = kl_arena_strdup(&t->arena, key);
    e->prefix = star != NULL;
    e->match_len = klen - (star != NULL);
    if (!cJSON_IsObject(o)) {
        say(why, wl, "models.%s: must be an object", key);
        return -1;
    }
    for (const cJSON *m = o->child; m; m = m->next)
        if (strcmp(m->string, "provider") && strcmp(m->string, "tiers") && strcmp(m->string, "reasoning") &&
            !is_rate_key(m->string)) {
            say(why, wl, "models.%s: unknown field \"%s\"", key, m->string);
            return -1;
        }
    const cJSON *prov = cJSON_GetObjectItemCaseSensitive(o, "provider");
    if (prov && !(cJSON_IsString(prov) && prov->valuestring[0])) {
        say(why, wl, "models.%s: \"provider\" must be a non-empty string", key);
        return -1;
    }
    e->provider = prov ? kl_arena_strdup(&t->arena, prov->valuestring) : NULL;
    const cJSON *reasoning = cJSON_GetObjectItemCaseSensitive(o, "reasoning");
    if (reasoning && !cJSON_IsBool(reasoning)) {
        say(why, wl, "models.%s: \"reasoning\" must be true or false", key);
        return -1;
    }
    e->no_reasoning = cJSON_IsFalse(reasoning);
    const char *bad = NULL;
    if (read_rates(o, &e->r, &bad) < 0) {
        say(why, wl, "models.%s: \"%s\" must be a decimal USD amount, 0 to 1000000, at most 9 decimals",
            key, bad);
        return -1;
    }
    if (e->r.input == KL_PRICE_NONE) {
        say(why, wl, "models.%s: missing \"input\"", key);
        return -1;
    }
    const cJSON *tiers = cJSON_GetObjectItemCaseSensitive(o, "tiers");
    return tiers ? read_tiers(t, e, tiers, why, wl) : 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp((*(const struct kl_price *const *)a)->key, (*(const struct kl_price *const *)b)->key);
}

static void index_keys(kl_prices *t)
{
    t->exact = kl_arena_alloc(&t->arena, (t->n ? t->n : 1) * sizeof(*t->exact));
    t->prefix = kl_arena_alloc(&t->arena, (t->n ? t->n : 1) * sizeof(*t->prefix));
    for (size_t i = 0; i < t->n; i++) {
        if (t->v[i].prefix)
            t->prefix[t->nprefix++] = &t->v[i];
        else
            t->exact[t->nexact++] = &t->v[i];
    }
    qsort(t->exact, t->nexact, sizeof(*t->exact), cmp_key);
}

static int cmp_model_key(const void *model, const void *e)
{
    return strcmp(model, (*(const struct kl_price *const *)e)->key);
}

kl_prices *kl_prices_parse(const char *text, size_t len, char *why, size_t why_len)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        say(why, why_len, "not a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    kl_prices *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    kl_arena_init(&t->arena);
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(root, "currency");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (cur && !(cJSON_IsString(cur) && !strcmp(cur->valuestring, "USD"))) {
        say(why, why_len, "\"currency\" must be \"USD\"");
        goto fail;
    }
    if (!cJSON_IsObject(models)) {
        say(why, why_len, "\"models\" must be an object");
        goto fail;
    }
    t->version = kl_arena_strdup(&t->arena, cJSON_IsString(ver) ? ver->valuestring : "");
    size_t n = (size_t)cJSON_GetArraySize(models);
    t->v = kl_arena_alloc(&t->arena, (n ? n : 1) * sizeof(*t->v));
    for (const cJSON *m = models->child; m; m = m->next) {
        for (size_t i = 0; i < t->n; i++)
            if (!strcmp(t->v[i].key, m->string)) {
                say(why, why_len, "models: \"%s\" appears twice", m->string);
                goto fail;
            }
        if (read_entry(t, &t->v[t->n], m, why, why_len) < 0)
            goto fail;
        t->n++;
    }
    cJSON_Delete(root);
    index_keys(t);
    return t;
fail:
    cJSON_Delete(root);
    kl_prices_free(t);
    return NULL;
}

kl_prices *kl_prices_load(const char *path, char *why, size_t why_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        say(why, why_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    while (n <= MAX_FILE) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64 * 1024;
            buf = realloc(buf, cap);
            if (!buf)
                abort();
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err || n > MAX_FILE) {
        say(why, why_len, "%s: %s", path, err ? "read error" : "larger than 16 MiB");
        free(buf);
        return NULL;
    }
    char inner[200];
    kl_prices *t = kl_prices_parse(buf, n, inner, sizeof(inner));
    free(buf);
    if (!t)
        say(why, why_len, "%s: %s", path, inner);
    return t;
}

void kl_prices_free(kl_prices *t)
{
    if (!t)
        return;
    kl_arena_free(&t->arena);
    free(t);
}

const char *kl_prices_version(const kl_prices *t)
{
    return t->version;
}

size_t kl_prices_count(const kl_prices *t)
{
    return t->n;
}

const struct kl_price *kl_prices_at(const kl_prices *t, size_t i)
{
    return i < t->n ? &t->v[i] : NULL;
}

static bool provider_ok(const struct kl_price *e, const char *provider)
{
    return !provider || (e->provider && !strcmp(e->provider, provider));
}

/* Keys are unique, so at most one exact key matches, and it is the longest
 * match there is; otherwise the longest prefix key, the first in table
 * order of equal ones. */
static const struct kl_price *find1(const kl_prices *t, const char *provider, const char *model)
{
    const struct kl_price *const *x = bsearch(model, t->exact, t->nexact, sizeof(*t->exact), cmp_model_key);
    if (x && provider_ok(*x, provider))
        return *x;
    const struct kl_price *best = NULL;
    for (size_t i = 0; i < t->nprefix; i++) {
        const struct kl_price *e = t->prefix[i];
        if ((best && e->match_len <= best->match_len) || (e->match_len && e->key[0] != model[0]) ||
            strncmp(model, e->key, e->match_len) || !provider_ok(e, provider))
            continue;
        best = e;
    }
    return best;
}

/* Bedrock's id for one of Anthropic's models, "us.anthropic.claude-haiku-
 * 4-5-20251001-v1:0" (a region prefix, or none; or an inference profile's
 * ARN ending in such an id), as Anthropic names it: "claude-haiku-4-5-
 * 20251001". NULL for any other id. */
static const char *bedrock_claude_id(const char *model, char *buf, size_t cap)
{
    const char *s = strrchr(model, '/');
    s = s ? s + 1 : model;
    const char *a = strstr(s, "anthropic.");
    if (!a || (a != s && a[-1] != '.'))
        return NULL;
    a += strlen("anthropic.");
    size_t n = strlen(a);
    const char *v = strrchr(a, '-');
    if (v && v[1] == 'v' && v[2] >= '0' && v[2] <= '9' && strspn(v + 2, "0123456789:") == strlen(v + 2))
        n = (size_t)(v - a); /* the "-v1:0" version suffix */
    if (n == 0 || n >= cap)
        return NULL;
    memcpy(buf, a, n);
    buf[n] = '\0';
    return buf;
}

const struct kl_price *kl_prices_find(const kl_prices *t, const char *provider, const char *model)
{
    if (!t || !model)
        return NULL;
    if (provider && !*provider)
        provider = NULL;
    /* Aperture's other bases: Vertex serves Google's and Anthropic's models
     * under their own ids (by model id, then); OpenRouter's and Vercel's ids
     * name their vendor ("anthropic/claude-sonnet-4-5"), whose entries price
     * the rest */
    char vendor[32], hyphened[256];
    if (provider && (!strcmp(provider, "openrouter") || !strcmp(provider, "vercel"))) {
        const char *slash = strchr(model, '/');
        size_t vl = slash ? (size_t)(slash - model) : 0;
        provider = NULL;
        if (slash && vl < sizeof(vendor)) {
            memcpy(vendor, model, vl);
            vendor[vl] = '\0';
            model = slash + 1;
            if (!strcmp(vendor, "openai") || !strcmp(vendor, "anthropic") || !strcmp(vendor, "google"))
                provider = vendor;
            /* they spell Claude's versions with a dot ("claude-sonnet-4.5"),
             * Anthropic with a hyphen */
            size_t ml = strlen(model);
            if (!strcmp(vendor, "anthropic") && ml < sizeof(hyphened)) {
                for (size_t i = 0; i <= ml; i++)
                    hyphened[i] = model[i] == '.' && i > 0 && isdigit((unsigned char)model[i - 1]) &&
                                  isdigit((unsigned char)model[i + 1]) ? '-' : model[i];
                model = hyphened;
            }
        }
    } else if (provider && !strcmp(provider, "vertex")) {
        provider = NULL;
    }
    /* Claude on Bedrock is billed at Anthropic's list prices (global and
     * cross-region profiles; a regional endpoint's premium is a
     * model_cost_map adjustment) */
    bool bedrock = provider && strncmp(provider, "bedrock", 7) == 0;
    if (bedrock)
        provider = "anthropic";
    const struct kl_price *e = find1(t, provider, model);
    if (!e && !strncmp(model, "models/", 7))
        e = find1(t, provider, model + 7);
    char claude[256];
    if (!e && (!provider || !strcmp(provider, "anthropic")) && bedrock_claude_id(model, claude, sizeof(claude)))
        e = find1(t, "anthropic", claude);
    return e;
}

void kl_price_rates_for(const struct kl_price *p, int64_t prompt_tokens, struct kl_price_rates *out)
{
    *out = p->r;
    const struct kl_price_tier *tier = NULL;
    for (size_t i = 0; i < p->ntiers; i++)
        if (prompt_tokens > p->tiers[i].above_input_tokens)
            tier = &p->tiers[i];
    if (tier)
        for (int i = 0; i < NRATES; i++) {
            int64_t v = *rate_field((struct kl_price_rates *)&tier->r, i);
            if (v != KL_PRICE_NONE)
                *rate_field(out, i) = v;
        }
    if (out->input == KL_PRICE_NONE)
        out->input = 0;
    if (out->output == KL_PRICE_NONE)
        out->output = 0;
    if (out->cache_read == KL_PRICE_NONE)
        out->cache_read = out->input;
    if (out->cache_write == KL_PRICE_NONE)
        out->cache_write = out->input;
    if (out->cache_write_1h == KL_PRICE_NONE)
        out->cache_write_1h = out->cache_write;
}

bool kl_cost_glob(const char *p, const char *s)
{
    /* Iterative: on a mismatch, retry from the last '*' one character
     * further, so no pattern takes more than O(|p| * |s|). */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p && (*p == '?' || *p == *s)) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

int kl_cost_map_parse(const cJSON *arr, kl_arena *a, struct kl_cost_map *out, const char **why)
{
    const char *ignored;
    if (!why)
        why = &ignored;
    out->rules = NULL;
    out->n = 0;
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr)) {
        *why = "model_cost_map must be an array";
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    struct kl_cost_rule *rules = kl_arena_alloc(a, (n ? n : 1) * sizeof(*rules));
    size_t i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        if (!cJSON_IsObject(o)) {
            *why = "model_cost_map: each entry must be an object";
            return -1;
        }
        for (const cJSON *m = o->child; m; m = m->next)
            if (strcmp(m->string, "match") && strcmp(m->string, "as") && strcmp(m->string, "adjustment")) {
                *why = kl_arena_printf(a, "model_cost_map: unknown key \"%s\"", m->string);
                return -1;
            }
        const cJSON *match = cJSON_GetObjectItemCaseSensitive(o, "match");
        const cJSON *as = cJSON_GetObjectItemCaseSensitive(o, "as");
        const cJSON *adj = cJSON_GetObjectItemCaseSensitive(o, "adjustment");
        if (!cJSON_IsString(match) || !match->valuestring[0]) {
            *why = "model_cost_map: \"match\" must be a non-empty string";
            return -1;
        }
        if (as && !cJSON_IsNull(as) && !(cJSON_IsString(as) && as->valuestring[0])) {
            *why = "model_cost_map: \"as\" must be a model id";
            return -1;
        }
        rules[i].match = kl_arena_strdup(a, match->valuestring);
        rules[i].as = cJSON_IsString(as) ? kl_arena_strdup(a, as->valuestring) : NULL;
        rules[i].adjustment_ppb = NANO;
        if (adj && !cJSON_IsNull(adj) && nano_value(adj, MAX_ADJUSTMENT, &rules[i].adjustment_ppb) < 0) {
            *why = "model_cost_map: \"adjustment\" must be a number from 0 to 1000 with at most 9 decimals";
            return -1;
        }
    }
    out->rules = rules;
    out->n = n;
    return 0;
}

/* The entry that prices `model` and the adjustment to apply. */
static const struct kl_price *resolve(const kl_prices *t, const char *basis, const struct kl_cost_map *map,
                                      const char *model, int64_t *adj)
{
    *adj = NANO;
    if (!t || !model)
        return NULL;
    const char *name = model;
    for (size_t i = 0; map && i < map->n; i++)
        if (kl_cost_glob(map->rules[i].match, model)) {
            if (map->rules[i].as)
                name = map->rules[i].as;
            *adj = map->rules[i].adjustment_ppb;
            break;
        }
    return kl_prices_find(t, basis, name);
}

static u128 mul(int64_t tokens, int64_t rate)
{
    return tokens > 0 && rate > 0 ? (u128)(uint64_t)tokens * (uint64_t)rate : 0;
}

/* q is in units of 1e-6 nanodollars (tokens x nanodollars per 1M tokens);
 * apply the adjustment (parts per billion) and round up once. Split so that
 * no product exceeds 128 bits: q < 2^115 (four int64 counts times rates
 * below 2^50) and adj <= 2^40. */
static int64_t settle(u128 q, int64_t adj_ppb)
{
    const u128 d = (u128)1000000 * NANO;
    u128 adj = (u128)(uint64_t)adj_ppb;
    u128 hi = q / d, lo = q % d;
    u128 frac = lo * adj;
    u128 r = hi * adj + frac / d + (frac % d != 0);
    return r > (u128)INT64_MAX ? INT64_MAX : (int64_t)r;
}

int kl_cost(const kl_prices *t, const char *cost_basis, const struct kl_cost_map *map,
            const char *model, const struct kl_usage *u, int64_t *nanodollars)
{
    int64_t adj;
    const struct kl_price *p = resolve(t, cost_basis, map, model, &adj);
    if (!p || !u)
        return -1;
    struct kl_price_rates r;
    kl_price_rates_for(p, kl_usage_prompt_tokens(u), &r);
    u128 q = mul(u->input, r.input) + mul(u->cache_read, r.cache_read) +
             mul(u->cache_write - u->cache_write_1h, r.cache_write) + mul(u->cache_write_1h, r.cache_write_1h) +
             mul(u->output, r.output);
    *nanodollars = settle(q, adj);
    return 0;
}

int kl_cost_estimate_max(const kl_prices *t, const char *cost_basis, const struct kl_cost_map *map,
                         const char *model, int64_t prompt_tokens, int64_t max_output_tokens,
                         int64_t *nanodollars)
{
    int64_t adj;
    const struct kl_price *p = resolve(t, cost_basis, map, model, &adj);
    if (!p)
        return -1;
    struct kl_price_rates r;
    kl_price_rates_for(p, prompt_tokens, &r);
    int64_t prate = r.input;
    if (r.cache_write > prate)
        prate = r.cache_write;
    if (r.cache_write_1h > prate)
        prate = r.cache_write_1h;
    if (r.cache_read > prate)
        prate = r.cache_read;
    *nanodollars = settle(mul(prompt_tokens, prate) + mul(max_output_tokens, r.output), adj);
    return 0;
}
