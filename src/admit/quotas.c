#include "admit/quotas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account/prices.h"
#include "admit/buckets.h"

int kl_parse_dollars(const cJSON *v, int64_t *nd)
{
    char buf[64];
    if (cJSON_IsNumber(v)) {
        snprintf(buf, sizeof(buf), "%.9f", v->valuedouble);
    } else if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (*s == '$')
            s++;
        snprintf(buf, sizeof(buf), "%s", s);
    } else {
        return -1;
    }
    return kl_decimal_nano(buf, INT64_MAX / 4, nd);
}

int kl_parse_rate(const char *s, int64_t *amount_nd, int64_t *period_ms)
{
    static const struct { const char *unit; int64_t ms; } units[] = {
        {"min", 60000}, {"minute", 60000}, {"hour", 3600000}, {"day", 86400000},
        {"week", 7 * 86400000LL}, {"month", 30 * 86400000LL},
    };
    const char *slash = strchr(s, '/');
    if (!slash)
        return -1;
    char amount[64];
    size_t n = (size_t)(slash - s);
    if (*s == '$')
        s++, n--;
    if (n == 0 || n >= sizeof(amount))
        return -1;
    memcpy(amount, s, n);
    amount[n] = '\0';
    if (kl_decimal_nano(amount, INT64_MAX / 4, amount_nd) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(slash + 1, units[i].unit) == 0) {
            *period_ms = units[i].ms;
            return 0;
        }
    }
    return -1;
}

static struct kl_quotas *quotas_of(kl_cfg_ctx *c)
{
    if (!c->cfg->quotas) {
        struct kl_quotas *q = kl_arena_alloc(&c->cfg->arena, sizeof(*q));
        q->default_max_output_tokens = 8192;
        q->default_reasoning_tokens = 24576;
        q->bytes_per_token = 3;
        q->referenced_input_tokens = KL_REFERENCED_INPUT_TOKENS_DEFAULT;
        c->cfg->quotas = q;
    }
    return c->cfg->quotas;
}

void kl_quotas_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_quotas *q = quotas_of(c);
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "quotas must be an object of buckets");
        return;
    }
    q->v = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(struct kl_quota));
    const cJSON *b;
    cJSON_ArrayForEach(b, v) {
        struct kl_quota *k = &q->v[q->n];
        k->name = kl_arena_strdup(&c->cfg->arena, b->string);
        const cJSON *cap = cJSON_GetObjectItemCaseSensitive(b, "capacity");
        const cJSON *rate = cJSON_GetObjectItemCaseSensitive(b, "rate");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(b, "on_exceed");
        if (!cJSON_IsObject(b) || kl_parse_dollars(cap, &k->capacity_nd) < 0 || k->capacity_nd < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, cap ? cap : b, "quota %s needs \"capacity\" in dollars, e.g. \"$10.00\"",
                          b->string);
            continue;
        }
        if (rate && (!cJSON_IsString(rate) || kl_parse_rate(rate->valuestring, &k->rate_nd, &k->rate_period_ms) < 0)) {
            kl_cfg_report(c, KL_SEV_ERROR, rate, "quota %s: rate must look like \"$5.00/day\" (min, hour, day, week, month)",
                          b->string);
            continue;
        }
        if (ex) {
            if (cJSON_IsString(ex) && strcmp(ex->valuestring, "reject") == 0)
                k->on_exceed = KL_EXCEED_REJECT;
            else if (cJSON_IsString(ex) && strcmp(ex->valuestring, "log") == 0)
                k->on_exceed = KL_EXCEED_LOG;
            else {
                kl_cfg_report(c, KL_SEV_ERROR, ex, "quota %s: on_exceed must be \"reject\" or \"log\"", b->string);
                continue;
            }
        }
        const cJSON *m;
        cJSON_ArrayForEach(m, b) {
            if (strcmp(m->string, "capacity") && strcmp(m->string, "rate") && strcmp(m->string, "on_exceed"))
                kl_cfg_report(c, KL_SEV_WARNING, m, "quota %s: unknown key \"%s\" (ignored)", b->string, m->string);
        }
        q->n++;
    }
}

/* The largest number a limit takes: far above any real one, far below
 * where int64 arithmetic on it could overflow. */
#define KL_LIMIT_MAX 1000000000000LL

void kl_limits_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_quotas *q = quotas_of(c);
    if (!v)
        return;
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "limits must be an object");
        return;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        /* 0 allowed: none reserved, none added */
        bool refs = strcmp(m->string, "referenced_input_tokens") == 0,
             reasoning = strcmp(m->string, "default_reasoning_tokens") == 0;
        bool known = refs || reasoning || strcmp(m->string, "default_max_output_tokens") == 0 ||
                     strcmp(m->string, "bytes_per_token") == 0;
        /* whole numbers in range before the cast (1e19 had wrapped negative) */
        bool ok = cJSON_IsNumber(m) && m->valuedouble >= (refs || reasoning ? 0 : 1) &&
                  m->valuedouble <= KL_LIMIT_MAX &&
                  m->valuedouble == (double)(int64_t)m->valuedouble;
        if (known && ok && strcmp(m->string, "default_max_output_tokens") == 0)
            q->default_max_output_tokens = (int64_t)m->valuedouble;
        else if (known && ok && refs)
            q->referenced_input_tokens = (int64_t)m->valuedouble;
        else if (known && ok && reasoning)
            q->default_reasoning_tokens = (int64_t)m->valuedouble;
        else if (known && ok)
            q->bytes_per_token = (int64_t)m->valuedouble;
        else if (known)
            kl_cfg_report(c, KL_SEV_ERROR, m, "limits.%s must be a whole number from %d to %lld", m->string,
                          refs || reasoning ? 0 : 1, (long long)KL_LIMIT_MAX);
        else
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in limits (ignored)", m->string);
    }
}

const struct kl_quota *kl_quota_find(const struct kl_quotas *q, const char *name)
{
    for (size_t i = 0; q && i < q->n; i++)
        if (strcmp(q->v[i].name, name) == 0)
            return &q->v[i];
    return NULL;
}

static bool placeholder(const char *t)
{
    return strncmp(t, "<user>", 6) == 0 || strncmp(t, "<node>", 6) == 0;
}

/* Do the n bytes of name fit template t, each <user> and <node> standing
 * for one or more bytes (start: begin a name that fits)? The way a glob's
 * '*' is matched, going back only to the last placeholder: linear in the
 * name for each place it is tried, whatever the template (the name comes
 * from the admin API). */
static bool fits_n(const char *t, const char *name, size_t n, bool start)
{
    const char *star = NULL, *resume = NULL, *end = name + n;
    while (name < end) {
        if (placeholder(t)) {
            star = t;
            t += 6;
            resume = ++name; /* at least one byte */
        } else if (*t && *t == *name) {
            t++;
            name++;
        } else if (star) {
            t = star + 6;
            name = ++resume; /* the placeholder takes one byte more */
        } else {
            return false;
        }
    }
    return start || !*t;
}

static bool fits(const char *t, const char *name)
{
    return fits_n(t, name, strlen(name), false);
}

/* A name shortened to fit the tables (kl_admit_fit_name: its start, '~',
 * and 16 hex digits of a hash of the whole) keeps how many bytes of the
 * whole; 0: not one (or so it seems: a login may end so, and is then taken
 * for one, which only adds the quotas its start fits). */
static size_t shortened(const char *name)
{
    size_t n = strlen(name);
    if (n <= 17 || n > KL_BUCKET_NAME_MAX || name[n - 17] != '~')
        return 0;
    for (size_t i = n - 16; i < n; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return n - 17;
}

/* A shortened name could have been made from any template whose names may
 * start as it does: "ci:<user>:total" for a long login is
 * "ci:<238 bytes of it>~<hash>", which fits "ci:<user>" as written (a
 * balance that never refills, taken for one that refills in a minute,
 * was forgotten as full, and its caller's spent budget with it). */
bool kl_quota_fits(const struct kl_quota *q, const char *bucket)
{
    size_t kept = shortened(bucket);
    return strcmp(q->name, bucket) == 0 || fits(q->name, bucket) || (kept && fits_n(q->name, bucket, kept, true));
}

const struct kl_quota *kl_quota_for_bucket(const struct kl_quotas *q, const char *bucket)
{
    /* a quota named exactly so ("team-eng") before a template it also fits
     * ("team-<user>") */
    const struct kl_quota *exact = kl_quota_find(q, bucket);
    if (exact)
        return exact;
    for (size_t i = 0; q && i < q->n; i++)
        if (fits(q->v[i].name, bucket))
            return &q->v[i];
    return NULL;
}

int kl_rate_limit_read(const cJSON *cap, struct kl_rate_limit *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    const cJSON *rl = cJSON_GetObjectItemCaseSensitive(cap, "rate_limit");
    if (!rl)
        return 0;
    if (!cJSON_IsObject(rl)) {
        *why = "rate_limit must be an object";
        return -1;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, rl) {
        int64_t *dst = strcmp(m->string, "requests_per_minute") == 0 ? &out->rpm
                     : strcmp(m->string, "tokens_per_minute") == 0   ? &out->tpm
                     : strcmp(m->string, "concurrent") == 0          ? &out->concurrent
                     : strcmp(m->string, "tool_calls_per_minute") == 0 ? &out->tcpm
                                                                     : NULL;
        if (dst) {
            if (!cJSON_IsNumber(m) || m->valuedouble < 1 || m->valuedouble > KL_LIMIT_MAX ||
                m->valuedouble != (double)(int64_t)m->valuedouble) {
                *why = "rate_limit values must be whole numbers from 1 to 1000000000000";
                return -1;
            }
            *dst = (int64_t)m->valuedouble;
        } else if (strcmp(m->string, "per") == 0 && cJSON_IsString(m)) {
            if (strcmp(m->valuestring, "user") == 0)
                out->per = KL_PER_USER;
            else if (strcmp(m->valuestring, "node") == 0)
                out->per = KL_PER_NODE;
            else if (strcmp(m->valuestring, "grant") == 0)
                out->per = KL_PER_GRANT;
            else {
                *why = "rate_limit.per must be \"user\", \"node\" or \"grant\"";
                return -1;
            }
        } else {
            *why = "rate_limit keys are requests_per_minute, tokens_per_minute, tool_calls_per_minute, concurrent, per";
            return -1;
        }
    }
    return 1;
}
