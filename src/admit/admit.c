#include "admit/admit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "account/account.h"
#include "account/prices.h"
#include "account/usage.h"
#include "admit/buckets.h"
#include "admit/chains.h"
#include "admit/lease.h"
#include "admit/quotas.h"
#include "admit/referenced.h"
#include "authorize/grants.h"
#include "core/glob.h"
#include "core/log.h"
#include "core/text.h"
#include "identity/identity.h"
#include "record/record.h"

#define KL_MAX_BUCKETS 16

enum charge { CHARGE_DOLLARS, CHARGE_REQUESTS, CHARGE_TOKENS, CHARGE_TOOL_CALLS, CHARGE_SLOT };

struct kl_admission {
    size_t n;
    struct kl_bucket *b[KL_MAX_BUCKETS];
    struct kl_bucket_spec spec[KL_MAX_BUCKETS];
    int64_t amount[KL_MAX_BUCKETS];     /* to reserve */
    int64_t reserved[KL_MAX_BUCKETS];   /* reserved so far (grows mid-stream) */
    int64_t cost;                       /* the dollar estimate */
    int64_t referenced;                 /* tokens of the inputs the request points at (referenced_tokens) */
    int64_t chained;                    /* of those, the stored context keyless knows the size of: exact, so
                                           reserved as the prompt is */
    bool sized;                         /* it reserves prompt and output (a dollar or token bucket) */
    enum charge charge[KL_MAX_BUCKETS];
    bool log_only[KL_MAX_BUCKETS];      /* on_exceed: log — charged, never refused */
    bool settled;
};

int kl_admit_server_init(kl_server *srv)
{
    srv->buckets = kl_buckets_new();
    srv->chains = kl_chains_new();
    return 0;
}

void kl_admit_server_free(kl_server *srv)
{
    kl_buckets_free(srv->buckets);
    srv->buckets = NULL;
    kl_chains_free(srv->chains);
    srv->chains = NULL;
}

bool kl_quota_pooled(const kl_config *cfg)
{
    return cfg->store->driver == KL_STORE_POSTGRES;
}

/* kl_admit_fit_name: a bucket's name as every table keeps it: one longer than
 * KL_BUCKET_NAME_MAX (a long login in a <user> template) keeps its start
 * and ends in a hash of the whole, so it stays its own bucket; cut short,
 * two such names would be one, and the saved or leased balance would be
 * another bucket's. */
const char *kl_admit_fit_name(kl_exchange *ex, const char *name)
{
    size_t n = strlen(name);
    if (n <= KL_BUCKET_NAME_MAX)
        return name;
    uint64_t h = kl_fnv64(KL_FNV64_START, name, n);
    int keep = KL_BUCKET_NAME_MAX - 17;
    while (keep > 0 && ((unsigned char)name[keep] & 0xc0) == 0x80)
        keep--; /* not inside a UTF-8 character: PostgreSQL refuses half of one */
    return kl_arena_printf(&ex->arena, "%.*s~%016llx", keep, name, (unsigned long long)h);
}

static const char *limit_name(kl_exchange *ex, const char *kind, const char *key)
{
    return kl_admit_fit_name(ex, kl_arena_concat(&ex->arena, kind, ":", key, NULL));
}

const char *kl_quota_bucket_name(kl_exchange *ex, const char *tmpl)
{
    const struct kl_identity *id = ex->ident;
    const char *user = id->login;
    const char *node = id->node ? id->node : id->login;
    size_t cap = strlen(tmpl) + 1, o = 0;
    for (const char *p = tmpl; *p; p++)
        cap += strlen(user) + strlen(node);
    char *out = kl_arena_alloc(&ex->arena, cap);
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "<user>", 6) == 0) {
            o += (size_t)sprintf(out + o, "%s", user);
            p += 6;
        } else if (strncmp(p, "<node>", 6) == 0) {
            o += (size_t)sprintf(out + o, "%s", node);
            p += 6;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return kl_admit_fit_name(ex, out);
}

/* Does rate every period refill more slowly than rate0 every period0?
 * No refill at all (a period or an amount of 0) is the slowest. */
static bool refills_slower(int64_t rate, int64_t period, int64_t rate0, int64_t period0)
{
    if (rate0 <= 0 || period0 <= 0)
        return false;
    if (rate <= 0 || period <= 0)
        return true;
    return (__int128)rate * period0 < (__int128)rate0 * period;
}

static bool add(struct kl_admission *a, const char *name, int64_t capacity, int64_t rate, int64_t period,
                bool persistent, enum charge charge, bool log_only, bool pooled)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->spec[i].name, name) != 0)
            continue;
        /* a bucket is charged once, however many grants or quotas name it
         * (one limit set twice, "x:<user>" and "x:<node>" for a caller
         * without a node): it holds at the stricter capacity and the
         * slower refill, amount and period together (the smaller amount
         * with the other's period had refilled more slowly than either) */
        if (capacity < a->spec[i].capacity)
            a->spec[i].capacity = capacity;
        if (refills_slower(rate, period, a->spec[i].rate_amount, a->spec[i].rate_period_ms)) {
            a->spec[i].rate_amount = rate;
            a->spec[i].rate_period_ms = period;
        }
        return true;
    }
    if (a->n == KL_MAX_BUCKETS)
        return false;
    a->spec[a->n] = (struct kl_bucket_spec){name, capacity, rate, period, persistent, pooled, charge == CHARGE_SLOT};
    a->charge[a->n] = charge;
    a->log_only[a->n] = log_only;
    a->n++;
    return true;
}

int64_t kl_admit_bytes_per_token(const kl_exchange *ex)
{
    return ex->cfg->quotas ? ex->cfg->quotas->bytes_per_token : 3;
}

static int64_t prompt_estimate(const kl_exchange *ex)
{
    int64_t bpt = kl_admit_bytes_per_token(ex);
    return ((int64_t)ex->body_len + bpt - 1) / bpt;
}

/* The stored context a Responses request chains onto whose size keyless
 * remembers (admit/chains.h): a previous_response_id, exactly; a
 * conversation, when its last known size is more than the knob's share.
 * *known: how many of the references were priced so. */
static int64_t chained_tokens(kl_exchange *ex, int64_t each, int64_t *known)
{
    *known = 0;
    if (ex->ep->id != KL_EP_RESPONSES || !ex->provider)
        return 0;
    struct kl_chains *t = ex->worker->server->chains;
    int64_t total = 0, n;
    size_t len;
    const char *id = kl_referenced_id(&ex->arena, ex->body, ex->body_map.previous_response_id, &len);
    if (id && (n = kl_chains_get(t, ex->provider->id, id, len)) >= 0) {
        total += n;
        ++*known;
    }
    id = kl_referenced_id(&ex->arena, ex->body, ex->body_map.conversation, &len);
    if (id && (n = kl_chains_get(t, ex->provider->id, id, len)) > each) {
        total += n;
        ++*known;
    }
    return total;
}

/* The prompt the body's size cannot show: limits.referenced_input_tokens
 * for each input the request points at (a stored conversation, a file or
 * URL, a tool the provider runs: admit/referenced.h), saturating, but the
 * stored context keyless knows the size of in *chained instead. */
static int64_t referenced_tokens(kl_exchange *ex, int64_t *chained)
{
    int64_t each = ex->cfg->quotas ? ex->cfg->quotas->referenced_input_tokens : KL_REFERENCED_INPUT_TOKENS_DEFAULT;
    int64_t known;
    /* a size known is reserved with the share off too: it is no guess */
    *chained = chained_tokens(ex, each > 0 ? each : 0, &known);
    if (each <= 0)
        return 0;
    int64_t n = kl_referenced_inputs(ex->ep, ex->body, ex->body_len, &ex->body_map) - known;
    return n <= 0 ? 0 : n > INT64_MAX / each ? INT64_MAX / 2 : n * each;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* What bucket i reserves when full differs from base only by the inputs a
 * request points at: full, but the referenced share no more than the
 * bucket can ever hold, so that a reference alone never makes a request
 * impossible (in a bucket that small it waits for a full bucket). */
static int64_t with_referenced(const struct kl_admission *a, size_t i, int64_t base, int64_t full)
{
    int64_t cap = a->spec[i].capacity;
    if (full <= base || full <= cap)
        return full;
    return base > cap ? base : cap;
}

/* The output cap of one answer: the caller's, or the one keyless sends. */
static int64_t output_per_answer(const kl_exchange *ex)
{
    switch (ex->ep->id) {
    case KL_EP_EMBEDDINGS:
    case KL_EP_COUNT_TOKENS:
    case KL_EP_GEMINI_COUNT:
    case KL_EP_BEDROCK_COUNT:
        return 0;
    default:
        break;
    }
    if (ex->max_output_tokens > 0)
        return ex->max_output_tokens;
    const struct kl_quotas *q = ex->cfg->quotas;
    int64_t cap = q ? q->default_max_output_tokens : 8192;
    /* Reasoning counts against the cap: the default is the answer's, beyond
     * the thinking budget the caller set for Gemini (Gemini CLI's 8192 would
     * otherwise leave an 8192 cap nothing for the answer), or the reasoning
     * allowance when an OpenAI request asks for reasoning (Codex's does; its
     * hard tasks reason past 8192 and ended "incomplete") or a Gemini one
     * thinks without a budget (Gemini CLI's "HIGH" level for Gemini 3) */
    int64_t more = ex->thinking_budget > 0 ? ex->thinking_budget : 0;
    if (ex->reasons)
        more = ex->reasoning_room >= 0 ? ex->reasoning_room : q ? q->default_reasoning_tokens : 24576;
    return more > INT64_MAX - cap ? INT64_MAX : cap + more;
}

int64_t kl_admit_output_bound(const kl_exchange *ex, int64_t per_answer)
{
    if (ex->choices <= 1 || per_answer <= 0)
        return per_answer;
    return per_answer > INT64_MAX / ex->choices ? INT64_MAX : per_answer * ex->choices;
}

/* The most output the request can be billed: every answer it asks for at
 * its cap (n = 8 is eight answers, each up to max_tokens). */
static int64_t output_estimate(const kl_exchange *ex)
{
    return kl_admit_output_bound(ex, output_per_answer(ex));
}

/* What bucket i can give the request now: its level less what requests in
 * flight hold, plus what this one holds already (a failover's reprice);
 * its capacity when it has not been used yet or is leased from a pool (the
 * lease held here says little of the pool). */
static int64_t available(const kl_exchange *ex, const struct kl_admission *a, size_t i)
{
    struct kl_bucket_state st;
    if (a->spec[i].pooled ||
        !kl_buckets_state(ex->worker->server->buckets, a->spec[i].name, kl_wall_ms(), &st))
        return a->spec[i].capacity;
    int64_t avail = st.level - st.reserved + a->reserved[i];
    return avail < a->spec[i].capacity ? avail : a->spec[i].capacity;
}

/* Does the request, prompt and output cap, fit what every bucket that
 * refuses can give now (avail)? Priced at p, and sized as it will be
 * reserved: with the share for the inputs it points at (with_referenced).
 * A model without a price: refused for that elsewhere. */
static bool fits_now(const kl_exchange *ex, const struct kl_admission *a, const struct kl_provider *p,
                     int64_t prompt, const int64_t *avail)
{
    int64_t out = output_estimate(ex), cost = -1, cost_full = -1;
    int64_t tokens = sat_add(prompt, out), tokens_full = sat_add(tokens, a->referenced);
    for (size_t i = 0; i < a->n; i++) {
        if (a->log_only[i])
            continue;
        if (a->charge[i] == CHARGE_TOKENS && with_referenced(a, i, tokens, tokens_full) > avail[i])
            return false;
        if (a->charge[i] != CHARGE_DOLLARS)
            continue;
        if (cost < 0 && (kl_cost_estimate_max(ex->cfg->prices, p->cost_basis, p->cost_map, ex->model, prompt, out,
                                              &cost) < 0 ||
                         kl_cost_estimate_max(ex->cfg->prices, p->cost_basis, p->cost_map, ex->model,
                                              sat_add(prompt, a->referenced), out, &cost_full) < 0))
            return true;
        if (with_referenced(a, i, cost, cost_full) > avail[i])
            return false;
    }
    return true;
}

/* The room a reasoning request's output cap makes for reasoning
 * is only room: it shrinks to what the buckets can give now (the largest
 * that fits, by halves), down to none, rather than make a request wait or
 * be refused where it would pass with the plain default cap (a token rate
 * limit of 30,000 a minute, a small spend bucket: each refused every Codex
 * request; sized to a full bucket, one request made the next wait for it
 * to fill again). Priced at p, the provider it is about to go to. */
static void fit_reasoning_room(kl_exchange *ex, const struct kl_admission *a, const struct kl_provider *p,
                               int64_t prompt)
{
    if (!ex->reasons || ex->max_output_tokens > 0)
        return;
    int64_t avail[KL_MAX_BUCKETS];
    for (size_t i = 0; i < a->n; i++)
        avail[i] = a->log_only[i] ? 0 : available(ex, a, i);
    int64_t lo = 0, hi = ex->cfg->quotas ? ex->cfg->quotas->default_reasoning_tokens : 24576;
    ex->reasoning_room = hi;
    if (fits_now(ex, a, p, prompt, avail))
        return;
    ex->reasoning_room = 0;
    if (!fits_now(ex, a, p, prompt, avail))
        return; /* not even without it: it waits, or is refused, as any request would */
    while (hi - lo > 256) {
        int64_t mid = lo + (hi - lo) / 2;
        ex->reasoning_room = mid;
        if (fits_now(ex, a, p, prompt, avail))
            lo = mid;
        else
            hi = mid;
    }
    ex->reasoning_room = lo;
}

/* Does the body declare tools? A key spelt with escapes is missed, which
 * only means the first call is charged when it comes instead of reserved. */
static bool offers_tools(const kl_exchange *ex)
{
    return ex->body && (memmem(ex->body, ex->body_len, "\"tools\"", 7) ||
                        memmem(ex->body, ex->body_len, "\"functions\"", 11));
}

static bool charges_tool_calls(const struct kl_admission *a)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->charge[i] == CHARGE_TOOL_CALLS)
            return true;
    return false;
}

/* A service tier billed above the rates keyless prices by: any but the
 * standard ones and those billed less (fail closed: OpenAI's "priority",
 * Codex's fast mode, and its "ultrafast" are dearer, and so is a tier
 * named later). Google's reader takes enum names in either case and with
 * their SERVICE_TIER_ prefix; Converse's is {"type": ...}. */
static bool dearer_name(const char *name)
{
    static const char *const priced[] = {"auto", "default", "standard", "standard_only", "flex", "scale",
                                          "reserved", "unspecified"};
    if (strncasecmp(name, "SERVICE_TIER_", 13) == 0)
        name += 13;
    for (size_t i = 0; i < sizeof(priced) / sizeof(priced[0]); i++)
        if (strcasecmp(name, priced[i]) == 0)
            return false;
    return true;
}

/* Anything but "standard": Anthropic's speed ("fast": two to six times the
 * rates), Bedrock's latency ("optimized": above the standard rates). */
static bool not_standard(const char *name)
{
    return strcmp(name, "standard") != 0;
}

/* Is a tier's value t dearer? A name as dearer judges it; anything else
 * but null (fail closed) too: Google's JSON reads an enum by its number
 * ("serviceTier": 3) as well as by its name. */
static bool dearer_value(const cJSON *t, bool (*dearer)(const char *))
{
    return cJSON_IsString(t) ? dearer(t->valuestring) : !cJSON_IsNull(t);
}

/* Does the body member at s name processing billed above the rates, as
 * dearer(name) judges its name: the member's string, or for an object its
 * member `member` (Converse's {"type": ...}, {"latency": ...}; NULL: none)?
 * Every `member` of the object counts: written twice, cJSON reads the
 * first, and AWS's reader the last. */
static bool dearer_at(const char *body, struct kl_body_span s, const char *member, bool (*dearer)(const char *))
{
    if (!s.end)
        return false;
    cJSON *v = cJSON_ParseWithLength(body + s.start, s.end - s.start);
    bool above = false;
    if (cJSON_IsObject(v) && member) {
        const cJSON *m;
        cJSON_ArrayForEach(m, v)
            above |= strcmp(m->string, member) == 0 && dearer_value(m, dearer);
    } else {
        above = dearer_value(v, dearer);
    }
    cJSON_Delete(v);
    return above;
}

/* The tier asked in a header, which keyless forwards as the caller sent it:
 * Bedrock's InvokeModel takes it in X-Amzn-Bedrock-Service-Tier (not in
 * the body, which is the model's own), Vertex's Priority PayGo in
 * X-Vertex-AI-LLM-Shared-Request-Type ("priority", 1.8 times the rates).
 * Bedrock's latency-optimized inference, billed above the standard rates,
 * in X-Amzn-Bedrock-PerformanceConfig-Latency: anything but "standard". */
static bool dearer_header(const kl_exchange *ex)
{
    for (size_t i = 0; i < ex->req.nheaders; i++) {
        const char *name = ex->req.headers[i].name, *value = ex->req.headers[i].value;
        if ((strcasecmp(name, "X-Amzn-Bedrock-Service-Tier") == 0 ||
             strcasecmp(name, "X-Vertex-AI-LLM-Shared-Request-Type") == 0) &&
            dearer_name(value))
            return true;
        if (strcasecmp(name, "X-Amzn-Bedrock-PerformanceConfig-Latency") == 0 && strcasecmp(value, "standard") != 0)
            return true;
    }
    return false;
}

/* Does the request ask for processing billed above the rates keyless prices
 * by (service_tier "priority": OpenAI's about twice the standard rates,
 * more for "ultrafast", Gemini's 1.8 times, Bedrock Converse's a premium;
 * Anthropic's speed "fast", two to six times; Bedrock's latency-optimized
 * inference)?
 * Reserved and charged at the standard price, that one field would let a
 * request spend several times what its buckets allow. */
static bool dearer_tier(const kl_exchange *ex)
{
    if (dearer_header(ex))
        return true;
    if (!ex->body)
        return false;
    switch (ex->ep->id) {
    case KL_EP_MESSAGES:
    case KL_EP_BEDROCK_INVOKE:
    case KL_EP_BEDROCK_INVOKE_STREAM:
        return dearer_at(ex->body, ex->body_map.speed, NULL, not_standard);
    case KL_EP_CHAT:
    case KL_EP_RESPONSES:
        return dearer_at(ex->body, ex->body_map.service_tier, "type", dearer_name);
    case KL_EP_GEMINI_GENERATE:
    case KL_EP_GEMINI_STREAM:
        return dearer_at(ex->body, ex->body_map.service_tier, "type", dearer_name) ||
               dearer_at(ex->body, ex->body_map.service_tier_camel, "type", dearer_name);
    case KL_EP_BEDROCK_CONVERSE:
    case KL_EP_BEDROCK_CONVERSE_STREAM:
        return dearer_at(ex->body, ex->body_map.service_tier_camel, "type", dearer_name) ||
               dearer_at(ex->body, ex->body_map.performance_config, "latency", not_standard);
    default:
        return false;
    }
}

static bool given(const kl_exchange *ex, struct kl_body_span s)
{
    return s.end && !(s.end - s.start == 4 && memcmp(ex->body + s.start, "null", 4) == 0);
}

/* A chat body whose output cap keyless cannot bound: a cap it cannot read
 * (which keyless's own would replace) beside another one a server may read
 * instead (Ollama reads only max_tokens), or as llama.cpp's n_predict,
 * which its server reads first. Several readable caps are reserved for the
 * largest (dialect/request.c). NULL, or the reason to refuse. */
static const char *another_cap(const kl_exchange *ex)
{
    if (ex->ep->id != KL_EP_CHAT || !ex->body || ex->max_output_tokens >= 0)
        return NULL;
    const struct kl_body_map *m = &ex->body_map;
    if (given(ex, m->n_predict))
        return "\"n_predict\" (llama.cpp's output cap, which its server reads before max_tokens) that is not a "
               "whole number";
    if (given(ex, m->max_tokens) && given(ex, m->max_completion_tokens))
        return "both \"max_tokens\" and \"max_completion_tokens\", one of them not a whole number (servers differ "
               "on which one they read)";
    return NULL;
}

static bool free_endpoint(const kl_exchange *ex)
{
    return ex->ep->id == KL_EP_COUNT_TOKENS || ex->ep->id == KL_EP_GEMINI_COUNT || ex->ep->id == KL_EP_BEDROCK_COUNT;
}

/* The error for a limit the request cannot pass: one it never can (retry
 * < 0) is a 400 to Gemini and Bedrock callers, as a 429 tells Gemini CLI
 * and the AWS SDKs to send the request again, for minutes; the OpenAI and
 * Anthropic SDKs read x-should-retry, which kl_fail writes for it. */
static enum kl_err_kind limit_kind(kl_exchange *ex, enum kl_err_kind kind, int64_t retry)
{
    ex->fail_retry = retry > 0 ? retry : retry < 0 ? -1 : 0;
    bool final = retry < 0 && (ex->dialect == KL_DIALECT_GEMINI || ex->dialect == KL_DIALECT_BEDROCK);
    return final ? KL_ERR_LIMIT_FINAL : kind;
}

static enum kl_step refuse(kl_exchange *ex, struct kl_admission *a, size_t i, int64_t retry)
{
    ex->admission = NULL;
    const char *never = a->amount[i] > a->spec[i].capacity
                            ? ": the request costs more than the bucket can ever hold"
                            : ": the bucket has less left than the request costs and does not refill";
    if (a->charge[i] == CHARGE_DOLLARS)
        return kl_fail(ex, limit_kind(ex, KL_ERR_QUOTA, retry), KL_EC_QUOTA,
                       "quota %s cannot cover this request (reserving $%lld.%09lld)%s", a->spec[i].name,
                       (long long)(a->cost / 1000000000), (long long)(a->cost % 1000000000), retry < 0 ? never : "");
    return kl_fail(ex, limit_kind(ex, KL_ERR_RATE_LIMIT, retry), KL_EC_RATE_LIMITED, "rate limit %s exceeded%s",
                   a->spec[i].name, retry < 0 ? ": the request is larger than the limit" : "");
}

static void leased(kl_exchange *ex, bool ok, int64_t retry);

/* For kl_buckets_sweep_saved: the k-th quota a saved balance's name could
 * have been made from, as it is configured now. */
static bool saved_spec(void *arg, const char *name, size_t k, struct kl_bucket_spec *out)
{
    kl_exchange *ex = arg;
    const struct kl_quotas *qs = ex->cfg->quotas;
    for (size_t i = 0; qs && i < qs->n; i++) {
        if (!kl_quota_fits(&qs->v[i], name) || k-- > 0)
            continue;
        kl_admit_quota_spec(ex, &qs->v[i], name, out);
        return true;
    }
    return false;
}

/* Reserve every bucket at once. A pooled bucket (several gateways) that is
 * short first leases from PostgreSQL — asynchronously, once. */
static enum kl_step reserve(kl_exchange *ex, struct kl_admission *a, bool may_lease)
{
    struct kl_buckets *t = ex->worker->server->buckets;
    int64_t now = kl_wall_ms();
    /* this request's share of forgetting the balances saved before a
     * restart that are full by now (kl_buckets_reserve forgets live ones) */
    kl_buckets_sweep_saved(t, now, saved_spec, ex);
    if (may_lease) {
        /* A pooled bucket holds here only what this gateway leased: a
         * log-only one can tell whether it is exceeded only after asking
         * the pool (else it warned on every request and its spend never
         * reached the pool). Lease for it, and for any short strict bucket
         * with it, before reserving anything. */
        struct kl_lease_need needs[KL_MAX_BUCKETS];
        size_t nn = 0;
        bool log_short = false;
        for (size_t i = 0; i < a->n; i++) {
            if (!a->spec[i].pooled)
                continue;
            int64_t short_by = kl_buckets_shortfall(t, &a->spec[i], a->amount[i], now);
            if (short_by <= 0)
                continue;
            needs[nn++] = (struct kl_lease_need){&a->spec[i], short_by};
            log_short |= a->log_only[i];
        }
        if (log_short) {
            kl_lease_start(ex, needs, nn, leased);
            return KL_WAIT;
        }
    }
    struct kl_bucket_spec strict[KL_MAX_BUCKETS];
    int64_t amounts[KL_MAX_BUCKETS];
    size_t map[KL_MAX_BUCKETS], ns = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->log_only[i])
            continue;
        strict[ns] = a->spec[i];
        amounts[ns] = a->amount[i];
        map[ns++] = i;
    }
    struct kl_bucket *got[KL_MAX_BUCKETS];
    size_t failed = 0;
    int64_t retry = 0;
    if (kl_buckets_reserve(t, strict, amounts, ns, now, got, &failed, &retry) < 0) {
        if (may_lease) {
            struct kl_lease_need needs[KL_MAX_BUCKETS];
            size_t nn = 0;
            for (size_t k = 0; k < ns; k++) {
                if (!strict[k].pooled)
                    continue;
                int64_t short_by = kl_buckets_shortfall(t, &a->spec[map[k]], amounts[k], now);
                if (short_by > 0)
                    needs[nn++] = (struct kl_lease_need){&a->spec[map[k]], short_by};
            }
            if (nn > 0 && !strict[failed].pooled) {
                nn = 0; /* a local limit refuses anyway: no lease needed */
            }
            if (nn > 0) {
                kl_lease_start(ex, needs, nn, leased);
                return KL_WAIT;
            }
        }
        return refuse(ex, a, map[failed], retry);
    }
    for (size_t k = 0; k < ns; k++) {
        a->b[map[k]] = got[k];
        a->reserved[map[k]] = amounts[k];
    }
    /* log-only: reserve when possible, else charge at the end regardless */
    for (size_t i = 0; i < a->n; i++) {
        if (!a->log_only[i])
            continue;
        struct kl_bucket *b;
        size_t fi;
        int64_t r;
        if (kl_buckets_reserve(t, &a->spec[i], &a->amount[i], 1, now, &b, &fi, &r) == 0) {
            a->reserved[i] = a->amount[i];
        } else {
            kl_warn("%s: quota %s exceeded (on_exceed: log); request allowed", ex->id, a->spec[i].name);
            b = kl_buckets_hold(t, &a->spec[i], now); /* settled at the end, as a reserved one */
            a->reserved[i] = 0;
        }
        a->b[i] = b;
    }
    return KL_NEXT;
}

static void leased(kl_exchange *ex, bool ok, int64_t retry)
{
    struct kl_admission *a = ex->admission;
    enum kl_step step;
    if (!ok && retry == KL_LEASE_UNAVAILABLE) {
        ex->admission = NULL;
        ex->fail_headers = "Retry-After: 1\r\n";
        step = kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                       "the shared quota pool cannot be reached; retry shortly");
    } else if (!ok) {
        /* refuse for the first strict pooled bucket still short; a pool
         * that could not cover a log-only bucket only means a warning */
        int64_t now = kl_wall_ms();
        size_t i = 0;
        while (i < a->n && (!a->spec[i].pooled || a->log_only[i] ||
                            kl_buckets_shortfall(ex->worker->server->buckets, &a->spec[i], a->amount[i], now) <= 0))
            i++;
        step = i < a->n ? refuse(ex, a, i, retry) : reserve(ex, a, false);
    } else {
        step = reserve(ex, a, false);
    }
    kl_pipeline_continue(ex, step);
}

/* FNV-1a over n strings, each with its NUL, and their count. */
static uint64_t fold(uint64_t h, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = kl_fnv64(h, v[i], strlen(v[i]) + 1);
    return kl_fnv64(h, &n, sizeof(n));
}

/* What tells one caller's rate limits apart, in their bucket names: the
 * models a capability limits ("100 a minute" and "2 a minute on Claude's
 * models" are two limits, both held) and, per grant, whose grant it
 * is: a configured grant by its src list, a tailnet policy capability by its
 * whole text (nothing else tells two policy grants apart). Not the limit's
 * numbers, where that can be helped: a reload that changes them changes the
 * live bucket, not a new one. */
static const char *limit_tag(kl_exchange *ex, const struct kl_cap_ref *r, const struct kl_rate_limit *rl)
{
    bool any = r->cap->models != NULL;
    uint64_t h = kl_fnv64(fold(KL_FNV64_START, r->cap->models, any ? r->cap->nmodels : 0), &any, 1);
    if (rl->per == KL_PER_GRANT && r->grant >= 0 && ex->cfg->grants && (size_t)r->grant < ex->cfg->grants->n) {
        const struct kl_grant *g = &ex->cfg->grants->v[r->grant];
        h = fold(h, g->src, g->nsrc);
    } else if (rl->per == KL_PER_GRANT) {
        char *text = cJSON_PrintUnformatted(r->cap->raw);
        if (!text)
            abort();
        const char *one[] = {text};
        h = fold(h, one, 1);
        cJSON_free(text);
    }
    return kl_arena_printf(&ex->arena, "%08x", (unsigned)(h ^ (h >> 32)));
}

/* The buckets of one capability's rate_limit, added to a. */
static bool add_rate_limit(kl_exchange *ex, struct kl_admission *a, const struct kl_cap_ref *ref,
                           const struct kl_rate_limit *rl)
{
    const char *who = rl->per == KL_PER_NODE ? (ex->ident->node ? ex->ident->node : ex->ident->login)
                    : rl->per == KL_PER_GRANT ? "grant" : ex->ident->login;
    const char *key = kl_arena_printf(&ex->arena, "%s#%s", who, limit_tag(ex, ref, rl));
    bool ok = true;
    if (rl->rpm)
        ok &= add(a, limit_name(ex, "rpm", key), rl->rpm, rl->rpm, 60000, false, CHARGE_REQUESTS, false, false);
    if (rl->tpm && !free_endpoint(ex))
        ok &= add(a, limit_name(ex, "tpm", key), rl->tpm, rl->tpm, 60000, false, CHARGE_TOKENS, false, false);
    if (rl->tcpm && !free_endpoint(ex))
        ok &= add(a, limit_name(ex, "tcpm", key), rl->tcpm, rl->tcpm, 60000, false, CHARGE_TOOL_CALLS, false,
                  false);
    if (rl->concurrent)
        ok &= add(a, limit_name(ex, "concurrent", key), rl->concurrent, 0, 0, false, CHARGE_SLOT, false, false);
    return ok;
}

enum kl_step kl_admit_rate_check(kl_exchange *ex)
{
    const struct kl_grant_set *s = ex->grant_set;
    char qualified[512];
    if (!s || !ex->provider || !kl_join2(qualified, sizeof(qualified), ex->provider->id, '/', ex->model))
        return KL_NEXT; /* the admit stage decides */
    struct kl_admission *a = kl_arena_alloc(&ex->arena, sizeof(*a));
    for (size_t i = 0; i < s->ncaps; i++) {
        struct kl_rate_limit rl;
        const char *why;
        if (kl_cap_applies(s->caps[i].cap, qualified) && kl_rate_limit_read(s->caps[i].cap->raw, &rl, &why) > 0 &&
            !add_rate_limit(ex, a, &s->caps[i], &rl))
            return KL_NEXT; /* refused there too, as a bad rate_limit is */
    }
    /* what no hook can change: one request, one slot; at least one token
     * (a hook may shorten the body); a tool call only if tools are offered,
     * which a hook or the tool policy may take out (so none here) */
    for (size_t i = 0; i < a->n; i++)
        a->amount[i] = a->charge[i] == CHARGE_TOOL_CALLS ? 0 : 1;
    size_t failed = 0;
    int64_t retry = 0;
    if (!a->n || kl_buckets_check(ex->worker->server->buckets, a->spec, a->amount, a->n, kl_wall_ms(), &failed,
                                  &retry) == 0)
        return KL_NEXT;
    return refuse(ex, a, failed, retry);
}

enum kl_step kl_admit_run(kl_exchange *ex)
{
    const struct kl_grant_set *s = ex->grant_set;
    if (!s || !ex->provider)
        return KL_NEXT;
    char qualified[512];
    if (!kl_join2(qualified, sizeof(qualified), ex->provider->id, '/', ex->model))
        /* authorize refuses a name this long first; never skip quotas */
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "model name too long");
    struct kl_admission *a = kl_arena_alloc(&ex->arena, sizeof(*a));
    bool dollars = false;
    for (size_t i = 0; i < s->ncaps; i++) {
        const struct kl_cap *cap = s->caps[i].cap;
        if (!kl_cap_applies(cap, qualified))
            continue;
        const cJSON *qs = cJSON_GetObjectItemCaseSensitive(cap->raw, "quotas");
        if (qs && !cJSON_IsArray(qs)) /* fail closed: unread, it would meter nothing */
            return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                           "access denied: a grant's \"quotas\" is not an array of {\"bucket\": name}");
        const cJSON *ref;
        cJSON_ArrayForEach(ref, qs) {
            const cJSON *bn = cJSON_GetObjectItemCaseSensitive(ref, "bucket");
            const struct kl_quota *q = cJSON_IsString(bn) ? kl_quota_find(ex->cfg->quotas, bn->valuestring) : NULL;
            if (!q) /* fail closed: a grant names a bucket nobody defined */
                return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                               "access denied: a grant refers to quota bucket %s, which is not defined",
                               cJSON_IsString(bn) ? bn->valuestring : "(none)");
            if (free_endpoint(ex))
                continue;
            if (!add(a, kl_quota_bucket_name(ex, q->name), q->capacity_nd, q->rate_nd, q->rate_period_ms, true,
                     CHARGE_DOLLARS, q->on_exceed == KL_EXCEED_LOG, kl_quota_pooled(ex->cfg)))
                return kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "too many quota buckets apply");
            dollars = true;
        }
        struct kl_rate_limit rl;
        const char *why;
        int r = kl_rate_limit_read(cap->raw, &rl, &why);
        if (r < 0)
            return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: bad rate_limit grant: %s", why);
        if (r > 0 && !add_rate_limit(ex, a, &s->caps[i], &rl))
            /* fail closed, as for spend quotas: a limit left out would limit nothing */
            return kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "too many quota buckets apply");
    }
    if (a->n == 0)
        return KL_NEXT;

    if ((dollars || charges_tool_calls(a)) && !kl_dialect_reads_body(ex->ep, ex->model))
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                       "a %s applies to this request, and keyless reads InvokeModel bodies and answers only for "
                       "Claude: call %s through Converse (/model/{id}/converse)",
                       dollars ? "spend limit" : "tool-call limit", ex->model);
    bool sized = dollars;
    for (size_t i = 0; i < a->n; i++)
        sized |= a->charge[i] == CHARGE_TOKENS;
    a->sized = sized;
    a->referenced = sized ? referenced_tokens(ex, &a->chained) : 0;
    int64_t prompt = sat_add(prompt_estimate(ex), a->chained);
    if (sized)
        fit_reasoning_room(ex, a, ex->provider, prompt);
    int64_t per_answer = output_per_answer(ex);
    int64_t out = kl_admit_output_bound(ex, per_answer), cost = 0, cost_full = 0;
    if (dollars && (kl_cost_estimate_max(ex->cfg->prices, ex->provider->cost_basis, ex->provider->cost_map,
                                         ex->model, prompt, out, &cost) < 0 ||
                    kl_cost_estimate_max(ex->cfg->prices, ex->provider->cost_basis, ex->provider->cost_map,
                                         ex->model, sat_add(prompt, a->referenced), out, &cost_full) < 0))
        /* no balance will ever cover it: refused as a request above a
         * bucket's capacity is, not with a bare 429 the SDKs and agents
         * send again (Gemini CLI for minutes) */
        return kl_fail(ex, limit_kind(ex, KL_ERR_QUOTA, -1), KL_EC_QUOTA,
                       "spend limit cannot be enforced: model %s has no price, so its cost cannot be reserved",
                       ex->model);
    if (dollars && dearer_tier(ex))
        return kl_fail(ex, limit_kind(ex, KL_ERR_QUOTA, -1), KL_EC_QUOTA,
                       "spend limit cannot be enforced: the request asks for processing (a priority service_tier, a "
                       "fast speed, latency-optimized inference) billed above the prices keyless reserves by; send it without that");
    const char *cap = sized ? another_cap(ex) : NULL;
    if (cap)
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                       "a spend or token limit applies, and the request's output cap is ambiguous: it has %s; send "
                       "whole numbers, or max_completion_tokens alone", cap);
    /* The reservation bounds the answer only if the provider is held to the
     * output it was priced for (or counted in tokens for): ask for it
     * explicitly when the caller did not, in a body keyless can write (not
     * another family's InvokeModel body, whose schema has no max_tokens). */
    if (sized && ex->max_output_tokens <= 0 && per_answer > 0 && kl_dialect_reads_body(ex->ep, ex->model))
        ex->inject_max_output_tokens = per_answer;

    for (size_t i = 0; i < a->n; i++) {
        switch (a->charge[i]) {
        case CHARGE_DOLLARS: a->amount[i] = with_referenced(a, i, cost, cost_full); break;
        case CHARGE_TOKENS:
            a->amount[i] = with_referenced(a, i, sat_add(prompt, out), sat_add(sat_add(prompt, out), a->referenced));
            break;
        /* a request that offers tools needs one call left; one that offers
         * none reserves nothing, and any call it makes is charged as met */
        case CHARGE_TOOL_CALLS: a->amount[i] = offers_tools(ex) ? 1 : 0; break;
        default: a->amount[i] = 1; break;
        }
    }
    a->cost = cost_full;
    ex->admission = a;
    return reserve(ex, a, true);
}

bool kl_admit_reprice(kl_exchange *ex, const struct kl_provider *p)
{
    struct kl_admission *a = ex->admission;
    bool dollars = false;
    for (size_t i = 0; a && i < a->n; i++)
        dollars |= a->charge[i] == CHARGE_DOLLARS;
    if (!dollars)
        return true;
    int64_t base, full, cost[KL_MAX_BUCKETS];
    int64_t prompt = sat_add(prompt_estimate(ex), a->chained);
    /* a dearer provider: the reasoning room fitted again, never larger
     * (the token buckets reserved for the one it had) */
    int64_t room = ex->reasoning_room;
    fit_reasoning_room(ex, a, p, prompt);
    if (room >= 0 && ex->reasoning_room > room)
        ex->reasoning_room = room;
    if (kl_cost_estimate_max(ex->cfg->prices, p->cost_basis, p->cost_map, ex->model, prompt, output_estimate(ex),
                             &base) < 0 ||
        kl_cost_estimate_max(ex->cfg->prices, p->cost_basis, p->cost_map, ex->model, sat_add(prompt, a->referenced),
                             output_estimate(ex), &full) < 0) {
        ex->reasoning_room = room;
        return false;
    }
    for (size_t i = 0; i < a->n; i++)
        cost[i] = with_referenced(a, i, base, full);
    struct kl_buckets *t = ex->worker->server->buckets;
    int64_t now = kl_wall_ms();
    /* the increases first, all or none */
    size_t grown[KL_MAX_BUCKETS], ng = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->charge[i] != CHARGE_DOLLARS || a->log_only[i] || cost[i] <= a->reserved[i])
            continue;
        if (!kl_buckets_extend(t, a->b[i], cost[i] - a->reserved[i], now)) {
            for (size_t k = 0; k < ng; k++)
                kl_buckets_give_back(t, a->b[grown[k]], cost[grown[k]] - a->reserved[grown[k]], now);
            ex->reasoning_room = room;
            return false;
        }
        grown[ng++] = i;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (a->charge[i] != CHARGE_DOLLARS)
            continue;
        a->amount[i] = cost[i]; /* what this provider's answer would reserve (upper_bound) */
        if (cost[i] < a->reserved[i])
            kl_buckets_give_back(t, a->b[i], a->reserved[i] - cost[i], now); /* the difference */
        else if (cost[i] > a->reserved[i] && a->log_only[i] &&
                 !kl_buckets_extend(t, a->b[i], cost[i] - a->reserved[i], now))
            continue; /* log-only: charged at the end whatever it holds */
        a->reserved[i] = cost[i];
    }
    a->cost = full;
    if (ex->inject_max_output_tokens > 0) /* the body is written again for p (failover.c) */
        ex->inject_max_output_tokens = output_per_answer(ex);
    return true;
}

/* What the request really used, per kind of bucket. */
/* What an answer of unknown size is charged: its reservation, the honest
 * upper bound; a log-only bucket in deficit reserved nothing, and is
 * charged what it would have reserved (else spend is counted least when a
 * quota is exceeded, the moment it is logged for). */
static int64_t upper_bound(const struct kl_admission *a, size_t i)
{
    return a->log_only[i] && a->amount[i] > a->reserved[i] ? a->amount[i] : a->reserved[i];
}

static int64_t actual(const kl_exchange *ex, const struct kl_admission *a, size_t i)
{
    const struct kl_usage *u = kl_account_usage(ex);
    /* Answered, or sent whole and left unanswered by the caller leaving,
     * the provider's time-out, a reset or shutdown: the provider works on
     * (a whole answer is generated and billed whether or not it is read;
     * a load balancer that cuts a long generation has let it be billed),
     * so neither a caller who hangs up before the head comes nor one whose
     * answer was cut off is let off the bill. A failure before the whole
     * request went out (unreachable, a reset while sending) is no bill. */
    bool forwarded = ex->upstream_status != 0 ||
                     (ex->upstream_sent && (ex->error_class == KL_EC_CLIENT_CLOSED ||
                                            ex->error_class == KL_EC_UPSTREAM_TIMEOUT ||
                                            ex->error_class == KL_EC_UPSTREAM_RESET ||
                                            ex->error_class == KL_EC_SHUTDOWN));
    bool failed_upstream = kl_account_unbilled(ex); /* nothing served, nothing billed */
    switch (a->charge[i]) {
    case CHARGE_REQUESTS:
        return 1;
    case CHARGE_SLOT:
        return 0;
    case CHARGE_TOKENS:
        if (u && u->known && !failed_upstream)
            return u->input + u->cache_read + u->cache_write + u->output;
        return forwarded && !failed_upstream ? upper_bound(a, i) : 0;
    case CHARGE_TOOL_CALLS:
        /* the calls that reached the caller: not one stopped by a limit or
         * the policy, nor those of a whole answer refused */
        return ex->tool_calls_relayed;
    case CHARGE_DOLLARS:
        if (ex->cost_known && !failed_upstream)
            return ex->cost_nd;
        /* Unknown cost of an answer that was given: keep the whole
         * reservation (the honest upper bound); nothing given, nothing owed. */
        return forwarded && !failed_upstream ? upper_bound(a, i) : 0;
    }
    return 0;
}

static bool answer_ok(kl_exchange *ex, bool tools_only)
{
    struct kl_admission *a = ex->admission;
    if (!a)
        return true;
    const struct kl_usage *u = kl_account_usage(ex);
    if (!u)
        return true;
    int64_t cost = -1;
    for (size_t i = 0; i < a->n; i++) {
        int64_t used;
        if (a->charge[i] == CHARGE_TOOL_CALLS) {
            used = u->tool_calls; /* counted as each call starts, before any usage */
        } else if (!u->known || tools_only) {
            continue;
        } else if (a->charge[i] == CHARGE_DOLLARS) {
            if (cost < 0 && kl_account_cost(ex, u, &cost) < 0)
                continue;
            used = cost;
        } else if (a->charge[i] == CHARGE_TOKENS) {
            used = u->input + u->cache_read + u->cache_write + u->output;
        } else {
            continue;
        }
        if (used <= a->reserved[i] || a->log_only[i])
            continue;
        int64_t delta = used - a->reserved[i];
        if (!kl_buckets_extend(ex->worker->server->buckets, a->b[i], delta, kl_wall_ms())) {
            bool dollars = a->charge[i] == CHARGE_DOLLARS;
            ex->error_message = kl_arena_printf(&ex->arena, "%s %s cannot cover this %s any more: stopped by the gateway",
                dollars ? "quota" : "rate limit", a->spec[i].name,
                a->charge[i] == CHARGE_TOOL_CALLS ? "tool call" : "answer");
            ex->cut_kind = dollars ? KL_ERR_QUOTA : KL_ERR_RATE_LIMIT;
            ex->cut_class = dollars ? KL_EC_QUOTA : KL_EC_RATE_LIMITED;
            /* a whole answer refused for its calls: when to try again */
            const struct kl_bucket_spec *sp = &a->spec[i];
            int64_t short_by = a->charge[i] == CHARGE_TOOL_CALLS
                                   ? kl_buckets_shortfall(ex->worker->server->buckets, sp, delta, kl_wall_ms()) : 0;
            if (short_by > 0 && sp->rate_amount > 0 && delta <= sp->capacity)
                ex->fail_retry = (short_by * sp->rate_period_ms + sp->rate_amount * 1000 - 1) / (sp->rate_amount * 1000);
            return false;
        }
        a->reserved[i] = used;
    }
    return true;
}

bool kl_admit_stream_ok(kl_exchange *ex)
{
    return answer_ok(ex, false);
}

bool kl_admit_tool_calls_ok(kl_exchange *ex)
{
    return answer_ok(ex, true);
}

bool kl_admit_counts_tool_calls(const kl_exchange *ex)
{
    return ex->admission && charges_tool_calls(ex->admission);
}

/* A Responses answer's size, for requests chained onto it later
 * (admit/chains.h): all of its input and output, once it is final. */
static void remember_chain(kl_exchange *ex)
{
    /* a refused head never got as far as an endpoint */
    const struct kl_usage *u = ex->ep && ex->ep->id == KL_EP_RESPONSES && ex->provider ? kl_account_usage(ex) : NULL;
    if (!u || !u->known || !u->final)
        return;
    int64_t tokens = u->input + u->cache_read + u->cache_write + u->output;
    struct kl_chains *t = ex->worker->server->chains;
    if (u->response_id)
        kl_chains_put(t, ex->provider->id, u->response_id, strlen(u->response_id), tokens);
    if (u->conversation_id)
        kl_chains_put(t, ex->provider->id, u->conversation_id, strlen(u->conversation_id), tokens);
}

void kl_admit_settle(kl_exchange *ex)
{
    remember_chain(ex);
    struct kl_admission *a = ex->admission;
    if (!a || a->settled)
        return;
    a->settled = true;
    int64_t now = kl_wall_ms();
    for (size_t i = 0; i < a->n; i++)
        if (a->b[i])
            kl_buckets_settle(ex->worker->server->buckets, a->b[i], a->reserved[i], actual(ex, a, i), now);
}

struct bucket_names {
    const char *v[KL_MAX_BUCKETS];
    size_t n;
};

static bool named(const struct bucket_names *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return true;
    return false;
}

void kl_admit_quota_spec(kl_exchange *ex, const struct kl_quota *q, const char *name, struct kl_bucket_spec *out)
{
    *out = (struct kl_bucket_spec){name, q->capacity_nd, q->rate_nd, q->rate_period_ms, true,
                                   kl_quota_pooled(ex->cfg), false};
}

void kl_admit_quota_bucket(kl_exchange *ex, const struct kl_quota *q, const char *name)
{
    struct kl_bucket_spec spec;
    kl_admit_quota_spec(ex, q, name, &spec);
    kl_buckets_touch(ex->worker->server->buckets, &spec, kl_wall_ms());
}

void kl_admit_each_dollar_bucket(kl_exchange *ex, const char *qualified,
                                 void (*fn)(void *arg, const char *name), void *arg)
{
    const struct kl_grant_set *s = ex->grant_set;
    for (size_t i = 0; s && i < s->ncaps; i++) {
        if (qualified && !kl_cap_applies(s->caps[i].cap, qualified))
            continue;
        const cJSON *ref;
        cJSON_ArrayForEach(ref, cJSON_GetObjectItemCaseSensitive(s->caps[i].cap->raw, "quotas")) {
            const cJSON *bn = cJSON_GetObjectItemCaseSensitive(ref, "bucket");
            const struct kl_quota *q = cJSON_IsString(bn) ? kl_quota_find(ex->cfg->quotas, bn->valuestring) : NULL;
            if (!q)
                continue;
            const char *name = kl_quota_bucket_name(ex, q->name);
            kl_admit_quota_bucket(ex, q, name);
            fn(arg, name);
        }
    }
}

static void add_name(void *arg, const char *name)
{
    struct bucket_names *ns = arg;
    if (ns->n < KL_MAX_BUCKETS && !named(ns, name))
        ns->v[ns->n++] = name;
}

/* The dollar buckets of the caller's grants that apply to this model,
 * before anything is reserved. */
static void dollar_buckets(kl_exchange *ex, struct bucket_names *ns)
{
    char qualified[512];
    if (ex->provider && kl_join2(qualified, sizeof(qualified), ex->provider->id, '/', ex->model))
        kl_admit_each_dollar_bucket(ex, qualified, add_name, ns);
}

/* "$5.00/day", as a quota's rate is written (cents when whole cents, else
 * as many decimals as it takes). */
static char *rate_text(kl_arena *ar, int64_t nd, int64_t period_ms)
{
    static const struct { int64_t ms; const char *unit; } units[] = {
        {60000, "min"}, {3600000, "hour"}, {86400000, "day"}, {604800000, "week"}, {2592000000, "month"},
    };
    const char *unit = NULL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && !unit; i++)
        if (units[i].ms == period_ms)
            unit = units[i].unit;
    char amount[48];
    if (nd % 10000000 == 0) {
        snprintf(amount, sizeof(amount), "%lld.%02lld", (long long)(nd / 1000000000),
                 (long long)(nd % 1000000000 / 10000000));
    } else {
        snprintf(amount, sizeof(amount), "%lld.%09lld", (long long)(nd / 1000000000), (long long)(nd % 1000000000));
        size_t n = strlen(amount);
        while (amount[n - 1] == '0')
            amount[--n] = '\0';
    }
    return unit ? kl_arena_printf(ar, "$%s/%s", amount, unit)
                : kl_arena_printf(ar, "$%s/%lldms", amount, (long long)period_ms);
}

cJSON *kl_admit_quota_states(kl_exchange *ex)
{
    cJSON *out = cJSON_CreateObject();
    struct bucket_names ns = {.n = 0};
    const struct kl_admission *a = ex->admission;
    if (a) {
        for (size_t i = 0; i < a->n; i++)
            if (a->charge[i] == CHARGE_DOLLARS)
                ns.v[ns.n++] = a->spec[i].name;
    } else if (!ex->forwarded && !free_endpoint(ex)) {
        dollar_buckets(ex, &ns); /* before admit: the buckets it will charge */
    }
    int64_t now = kl_wall_ms();
    for (size_t i = 0; i < ns.n; i++) {
        struct kl_bucket_state st;
        if (!kl_buckets_state(ex->worker->server->buckets, ns.v[i], now, &st))
            continue;
        cJSON *q = cJSON_AddObjectToObject(out, ns.v[i]);
        cJSON_AddNumberToObject(q, "current", (double)st.level);
        cJSON_AddNumberToObject(q, "capacity", (double)st.capacity);
        if (st.rate_period_ms > 0)
            cJSON_AddStringToObject(q, "rate", rate_text(&ex->arena, st.rate_amount, st.rate_period_ms));
    }
    return out;
}

int64_t kl_admit_prompt_reserved(kl_exchange *ex)
{
    int64_t known, chained = ex->admission && ex->admission->sized ? ex->admission->chained
                                                                    : chained_tokens(ex, 0, &known);
    return sat_add(prompt_estimate(ex), chained);
}

cJSON *kl_admit_cost_estimate(kl_exchange *ex)
{
    int64_t chained = 0, refs = ex->admission ? ex->admission->referenced : referenced_tokens(ex, &chained);
    if (ex->admission)
        chained = ex->admission->chained;
    int64_t prompt = sat_add(sat_add(prompt_estimate(ex), chained), refs);
    int64_t out = output_estimate(ex), cost = 0;
    if (!ex->provider || !ex->model || kl_cost_estimate_max(ex->cfg->prices, ex->provider->cost_basis,
                                                            ex->provider->cost_map, ex->model, prompt, out, &cost) < 0)
        return NULL;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "dollars", (double)cost / 1e9);
    cJSON_AddStringToObject(c, "cost_basis", kl_arena_concat(&ex->arena, ex->provider->cost_basis ?
                                                             ex->provider->cost_basis : ex->provider->id,
                                                             "/", ex->model, NULL));
    cJSON *u = cJSON_AddObjectToObject(c, "usage");
    cJSON_AddNumberToObject(u, "input_tokens", (double)prompt);
    if (out > 0)
        cJSON_AddNumberToObject(u, "output_tokens", (double)out);
    return c;
}
