#include "route/failover.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admit/admit.h"
#include "authorize/authorize.h"
#include "core/log.h"
#include "core/text.h"
#include "record/metrics.h"
#include "route/health.h"
#include "route/route.h"

/* A failure failover acts on. A transport failure counts only when the
 * provider cannot have served the request: never reached, or the request
 * not wholly sent. After that, a reset or a timeout may come from a
 * provider that is generating (and billing) the answer, as a slow one does. */
static bool counts(const kl_exchange *ex, int status, enum kl_error_class ec)
{
    const struct kl_failover_cfg *f = &ex->cfg->failover;
    if (status)
        return status >= 400 && status <= 599 && f->on_status[status - 400];
    if (ex->upstream_status)
        return false;
    return ec == KL_EC_UPSTREAM_UNREACHABLE ||
           ((ec == KL_EC_UPSTREAM_RESET || ec == KL_EC_UPSTREAM_TIMEOUT) && ex->upstream_unsent);
}

bool kl_failover_wanted(const kl_exchange *ex, int status, enum kl_error_class ec)
{
    if (ex->cfg->failover.max_attempts < 2 || ex->head_sent || ex->cut_off || !ex->conn)
        return false;
    return counts(ex, status, ec);
}

void kl_failover_observe(kl_exchange *ex, int status, enum kl_error_class ec)
{
    const struct kl_failover_cfg *f = &ex->cfg->failover;
    /* a passthrough provider answers with the caller's own key: its 429 is
     * that caller's, and it is never passed over anyway */
    if (f->max_attempts < 2 || !f->cooldown_ms || !ex->provider || ex->provider->auth_mode == KL_AUTHMODE_PASSTHROUGH)
        return;
    bool failed = counts(ex, status, ec);
    if (!status && !failed)
        return; /* a transport failure that is not the provider's fault, as far as anyone can tell */
    kl_health_report(ex->worker->server, ex->provider->id, !failed, f->cooldown_after, f->cooldown_ms,
                     kl_now_ns() / 1000000);
    if (ex->probe == ex->provider)
        ex->probe = NULL; /* probed: its outcome decides the cool-down */
}

void kl_failover_end(kl_exchange *ex)
{
    if (ex->probe)
        kl_health_probe_unused(ex->worker->server, ex->probe->id, ex->probe_until);
    ex->probe = NULL;
}

enum kl_step kl_failover_health_run(kl_exchange *ex)
{
    const struct kl_failover_cfg *f = &ex->cfg->failover;
    uint32_t fails = 0;
    int64_t probe_until = 0;
    while (f->max_attempts > 1 && f->cooldown_ms && ex->provider &&
           kl_health_down(ex->worker->server, ex->provider->id, f->cooldown_ms, kl_now_ns() / 1000000, &fails,
                          &probe_until)) {
        char why[256];
        snprintf(why, sizeof(why), "provider %s is cooling down after %u failures in a row", ex->provider->id,
                 (unsigned)fails);
        const struct kl_provider *next = kl_failover_next(ex, 0, KL_EC_PROVIDER_DOWN, why);
        if (!next)
            break; /* no other: this one is tried after all */
        kl_failover_switch(ex, next);
    }
    if (probe_until) {
        /* this request is the one to try it again (kl_failover_end) */
        kl_failover_end(ex);
        ex->probe = ex->provider;
        ex->probe_until = probe_until;
    }
    return KL_NEXT;
}

/* Providers that failed (those passed over while cooling down were not
 * tried, and do not use up max_attempts). */
static int failed_attempts(const kl_exchange *ex)
{
    int n = 0;
    for (int i = 0; i < ex->nattempts; i++)
        n += ex->attempts[i].error_class != KL_EC_PROVIDER_DOWN;
    return n;
}

static bool tried(const kl_exchange *ex, const struct kl_provider *p)
{
    for (int i = 0; i < ex->nattempts; i++)
        if (strcmp(ex->attempts[i].provider, p->id) == 0)
            return true;
    return false;
}

/* A capability that only grants a role, models or /metrics decides
 * nothing after authorize (which checks the next provider itself). */
static bool decides_nothing_later(const struct kl_cap *c)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, c->raw)
        if (strcmp(m->string, "role") != 0 && strcmp(m->string, "models") != 0 && strcmp(m->string, "metrics") != 0)
            return false;
    return true;
}

/* Every capability of the caller that later stages read applies to a and b
 * alike: the same hooks, tool policy, quotas and rate limits hold for both. */
static bool same_policy(const kl_exchange *ex, const struct kl_provider *a, const struct kl_provider *b)
{
    char qa[512], qb[512];
    if (!kl_join2(qa, sizeof(qa), a->id, '/', ex->model) || !kl_join2(qb, sizeof(qb), b->id, '/', ex->model))
        return false;
    const struct kl_grant_set *s = ex->grant_set;
    for (size_t i = 0; s && i < s->ncaps; i++) {
        const struct kl_cap *c = s->caps[i].cap;
        if (!decides_nothing_later(c) && kl_cap_applies(c, qa) != kl_cap_applies(c, qb))
            return false;
    }
    return true;
}

static bool qualifies(const kl_exchange *ex, const struct kl_provider *cur, const struct kl_provider *p)
{
    return p != cur && !p->disabled && p->baseurl && (p->compat & ex->ep->compat) &&
           p->auth_mode != KL_AUTHMODE_PASSTHROUGH && !(p->key_problem && p->auth_mode == KL_AUTHMODE_OVERRIDE) &&
           kl_route_serves(p, ex->model) && !tried(ex, p) && kl_authorize_model(ex, p, ex->model) &&
           same_policy(ex, cur, p);
}

/* The current provider's failure, kept after the attempts that count: it
 * counts once the request has gone to the next provider (a client that
 * leaves meanwhile leaves the failure the current provider's). */
static void note(kl_exchange *ex, int status, enum kl_error_class ec, const char *why)
{
    /* each provider at most once (it is never gone back to), the current one included */
    if (!ex->attempts)
        ex->attempts = kl_arena_alloc(&ex->arena, ex->cfg->nproviders * sizeof(*ex->attempts));
    ex->attempts[ex->nattempts] = (struct kl_attempt){
        .provider = ex->provider->id,
        .status = status,
        .error_class = ec,
        .error = why ? kl_arena_strdup(&ex->arena, why) : NULL,
        .at_ms = (kl_now_ns() - ex->t_start_ns) / 1000000,
    };
}

/* What rules out any failover of this request, whichever provider is next:
 * a qualified name ("openai/gpt-4o") chose its provider; a passthrough
 * provider's credential is the caller's, for it alone; pre_request hooks
 * were told the provider and may judge by it (what they allowed for this
 * one they were not asked about for another); the attempts are used up
 * (except by a provider passed over while it cools down). */
static bool ruled_out(const kl_exchange *ex, enum kl_error_class ec)
{
    const struct kl_provider *cur = ex->provider;
    return !cur || !ex->model || !ex->model_requested || strcmp(ex->model, ex->model_requested) != 0 ||
           cur->auth_mode == KL_AUTHMODE_PASSTHROUGH || ex->pre_hooks_asked ||
           (ec != KL_EC_PROVIDER_DOWN && failed_attempts(ex) + 1 >= ex->cfg->failover.max_attempts);
}

bool kl_failover_possible(const kl_exchange *ex)
{
    if (ruled_out(ex, KL_EC_UPSTREAM_ERROR))
        return false;
    for (size_t i = 0; i < ex->cfg->nproviders; i++)
        if (qualifies(ex, ex->provider, &ex->cfg->providers[i]))
            return true;
    return false;
}

const struct kl_provider *kl_failover_next(kl_exchange *ex, int status, enum kl_error_class ec,
                                           const char *why)
{
    const struct kl_provider *cur = ex->provider;
    if (ruled_out(ex, ec))
        return NULL;
    /* by preference, then file order, as the first choice was made */
    const kl_config *cfg = ex->cfg;
    const struct kl_provider *skipped[16];
    size_t nskipped = 0;
    for (;;) {
        const struct kl_provider *best = NULL;
        for (size_t i = 0; i < cfg->nproviders; i++) {
            const struct kl_provider *p = &cfg->providers[i];
            bool skip = false;
            for (size_t k = 0; k < nskipped && !skip; k++)
                skip = skipped[k] == p;
            if (!skip && (!best || p->preference > best->preference) && qualifies(ex, cur, p))
                best = p;
        }
        if (!best)
            return NULL;
        if (kl_admit_reprice(ex, best)) {
            note(ex, status, ec, why);
            return best;
        }
        kl_warn("%s: failover passes over provider %s: the quota cannot cover its price", ex->id, best->id);
        if (nskipped == sizeof(skipped) / sizeof(skipped[0]))
            return NULL;
        skipped[nskipped++] = best;
    }
}

void kl_failover_switch(kl_exchange *ex, const struct kl_provider *p)
{
    const struct kl_attempt *a = &ex->attempts[ex->nattempts++];
    kl_metrics_failover(ex->worker, ex->provider->id);
    /* every request passes over a provider that cools down: once said is enough (health.c) */
    kl_log(a->error_class == KL_EC_PROVIDER_DOWN ? KL_LOG_DEBUG : KL_LOG_WARN,
           "%s: provider %s failed (%s); sending the request to provider %s", ex->id, ex->provider->id,
           a->error ? a->error : "error", p->id);
    ex->provider = p;
    ex->failover_to = NULL;
    ex->failover_drained = 0;
    ex->failover_at_ns = 0;
    ex->upstream_unsent = false;
    ex->upstream_sent = false;
    ex->upstream_url = NULL;
    ex->up_headers = NULL;
    ex->n_up_headers = 0;
    ex->up_body = NULL;
    ex->up_body_len = 0;
    ex->added_include_usage = false;
    ex->upstream_status = 0;
    ex->error_class = KL_EC_NONE;
    ex->error_message = NULL;
    ex->response_headers = NULL;
    ex->key_carry = NULL; /* the failed answer's tail (kl_route_mask_key) is not the next one's */
    ex->key_carry_len = 0;
}

void kl_failover_abandon(kl_exchange *ex)
{
    if (!ex->failover_to)
        return;
    ex->upstream_status = ex->attempts[ex->nattempts].status;
    ex->failover_to = NULL;
}

const char *kl_failover_attempts_json(kl_exchange *ex)
{
    if (!ex->nattempts)
        return NULL;
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < ex->nattempts; i++) {
        const struct kl_attempt *a = &ex->attempts[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "provider", a->provider);
        if (a->status)
            cJSON_AddNumberToObject(o, "status", a->status);
        cJSON_AddStringToObject(o, "error_class", kl_error_class_name(a->error_class));
        if (a->error)
            cJSON_AddStringToObject(o, "error", a->error);
        cJSON_AddNumberToObject(o, "at_ms", (double)a->at_ms);
        cJSON_AddItemToArray(arr, o);
    }
    return kl_json_print_arena(&ex->arena, arr, "", "");
}
