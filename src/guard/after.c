/* Stage 10: the hooks told what happened once a forwarded request ended
 * (Aperture's entire_request and tool_call_entire_request). Each is sent the
 * metadata and what its grants' `send` lists, once per request however many
 * of its events apply; its answer is not read (a failure is logged; these
 * hooks always fail open). A stopping gateway waits for the calls in flight
 * until the shutdown grace period ends. */
#include "guard/after.h"

#include <stdlib.h>
#include <string.h>

#include "account/account.h"
#include "account/usage.h"
#include "admit/admit.h"
#include "core/log.h"
#include "guard/hookcall.h"
#include "guard/hooks.h"
#include "listen/server.h"

/* The most calls told after the answer one worker keeps in flight. Each
 * holds a connection (a descriptor of the half the providers' connections
 * use) and its payload (the request body, the answer and its events: tens
 * of MB at most) until the hook answers or its timeout ends (none with
 * "0"), while the requests that made them are long done: a hook that is
 * slow under load would otherwise take memory and descriptors without
 * bound. Per worker, as everything a call holds is its worker's. */
#define KL_HOOKS_TOLD_MAX 256

/* One call in flight; outlives the exchange. */
struct told {
    kl_worker *w;
    size_t charged;             /* its payload's bytes, in w->body_bytes */
    char id[40];
    char hook[];
};

static void on_told(void *arg, int status, const char *body, size_t len, const char *error)
{
    struct told *t = arg;
    if (!status)
        kl_warn("%s: hook %s was not told of the request: %s", t->id, t->hook, error ? error : "no answer");
    else if (status / 100 != 2)
        kl_warn("%s: hook %s answered HTTP %d to being told of the request", t->id, t->hook, status);
    kl_worker *w = t->w;
    kl_body_memory_return(w, t->charged);
    w->hooks_told_bytes -= t->charged;
    free(t);
    kl_owner_add(&w->hooks_told, (uint64_t)-1);
    kl_server_maybe_stopped(w);
}

/* Room for one more call of len bytes on w: fewer than KL_HOOKS_TOLD_MAX
 * in flight, their payloads within half the worker's share of
 * listen.max_body_memory (the other half stays for requests, which a slow
 * hook must not starve), and the worker's bodies within the share. */
static bool room_for(kl_worker *w, size_t len)
{
    size_t share = kl_body_memory(w);
    return w->hooks_told < KL_HOOKS_TOLD_MAX && w->hooks_told_bytes + len <= share / 2 &&
           w->body_bytes + len <= share;
}

/* A call skipped for want of room: counted (keyless_hook_calls_skipped_total)
 * and logged at most every 10 s, with how many since the last line. len:
 * its payload's bytes (0 when not built); one over half the share alone
 * is never sent, however few calls are in flight, and is said so (the
 * calls in flight are not what an operator must change then); so is one
 * the calls had room for but the worker's share had not, taken by the
 * requests' bodies and held answers. */
static void skipped(kl_worker *w, const char *id, const char *hook, size_t len)
{
    kl_owner_add(&w->hooks_skipped, 1);
    uint64_t held;
    if (!kl_log_every_due(&w->hooks_skipped_warn, 10000, kl_now_ns() / 1000000, &held))
        return;
    unsigned long long since = (unsigned long long)held + 1; /* this one too */
    size_t half = kl_body_memory(w) / 2;
    if (len > half)
        kl_warn("%s: hook %s was not told of the request: its payload of %zu bytes is more than half worker %d's "
                "share of listen.max_body_memory (%zu bytes); %llu calls skipped since the last such line",
                id, hook, len, w->index, half, since);
    else if (len && w->hooks_told < KL_HOOKS_TOLD_MAX && w->hooks_told_bytes + len <= half)
        kl_warn("%s: hook %s was not told of the request: worker %d's share of listen.max_body_memory (%zu bytes) "
                "holds %zu bytes of bodies, answers and hook payloads, no room for its payload of %zu bytes; "
                "%llu calls skipped since the last such line", id, hook, w->index, kl_body_memory(w),
                (size_t)w->body_bytes, len, since);
    else
        kl_warn("%s: hook %s was not told of the request: worker %d has %llu such calls in flight, holding %zu "
                "bytes (at most %d, and half its share of listen.max_body_memory); %llu calls skipped since the "
                "last such line", id, hook, w->index, (unsigned long long)w->hooks_told, w->hooks_told_bytes,
                KL_HOOKS_TOLD_MAX, since);
}

/* metadata.estimated_cost: Aperture's CostEstimate, from the usage the
 * answer reported (NULL when it reported none). */
static cJSON *estimated_cost(kl_exchange *ex, const struct kl_usage *u)
{
    if (!u || !u->known)
        return NULL;
    cJSON *c = cJSON_CreateObject();
    if (ex->cost_known)
        cJSON_AddNumberToObject(c, "dollars", (double)ex->cost_nd / 1e9);
    const char *model = u->model_served ? u->model_served : ex->model;
    if (ex->provider && model)
        cJSON_AddItemToObject(c, "cost_basis", cJSON_CreateString(kl_arena_concat(
            &ex->arena, ex->provider->cost_basis ? ex->provider->cost_basis : ex->provider->id, "/",
            model, NULL)));
    cJSON *usage = cJSON_AddObjectToObject(c, "usage");
    /* only the counts there are, as Aperture's omitempty */
    const struct { const char *k; int64_t v; } counts[] = {
        {"input_tokens", u->input}, {"output_tokens", u->output}, {"cached_tokens", u->cache_read},
        {"cache_creation_input_tokens", u->cache_write}, {"reasoning_tokens", u->reasoning},
    };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        if (counts[i].v > 0)
            cJSON_AddNumberToObject(usage, counts[i].k, (double)counts[i].v);
    return c;
}

/* How the exchange ended, which Aperture's payload has no field for (its
 * HookCallData admits others): {"status", "upstream_status", "error_class",
 * "duration_ms"}. */
static cJSON *how_it_ended(const kl_exchange *ex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "status", ex->status);
    if (ex->upstream_status)
        cJSON_AddNumberToObject(o, "upstream_status", ex->upstream_status);
    if (ex->error_class)
        cJSON_AddStringToObject(o, "error_class", kl_error_class_name(ex->error_class));
    cJSON_AddNumberToObject(o, "duration_ms", (double)((ex->t_end_ns - ex->t_start_ns) / 1000000));
    return o;
}

static void add_ref(cJSON *o, const char *k, cJSON *v)
{
    if (v)
        cJSON_AddItemReferenceToObject(o, k, v);
}

void kl_hooks_after(kl_exchange *ex)
{
    if (!ex->n_after_hooks || !ex->forwarded)
        return;
    const struct kl_usage *u = kl_account_usage(ex);
    bool tools_called = u && u->tool_calls > 0;
    unsigned need = 0;
    size_t nfire = 0;
    bool fire[KL_MAX_HOOKS];
    for (size_t i = 0; i < ex->n_after_hooks; i++) {
        const struct kl_hook_ref *r = &ex->after_hooks[i];
        fire[i] = (r->events & KL_EVENT_ENTIRE_REQUEST) || ((r->events & KL_EVENT_TOOL_CALL) && tools_called);
        if (fire[i]) {
            need |= r->send;
            nfire++;
        }
    }
    if (!nfire)
        return;
    kl_account_session_id(ex);
    const char *message = NULL;
    if (need & KL_SEND_USER_MESSAGE)
        kl_hook_user_message(ex, &message); /* a body it could misread was refused by the guard stage */
    cJSON *events = NULL;
    cJSON *answer = need & KL_SEND_ANSWER ? kl_account_answer(ex, &events) : NULL;
    cJSON *tools = need & KL_SEND_TOOLS && answer ? kl_account_tool_calls(ex, answer) : NULL;
    cJSON *cost = need & KL_SEND_ESTIMATED_COST ? estimated_cost(ex, u) : NULL;
    cJSON *quotas = need & KL_SEND_QUOTAS ? kl_admit_quota_states(ex) : NULL;
    cJSON *outcome = how_it_ended(ex);
    for (size_t i = 0; i < ex->n_after_hooks; i++) {
        if (!fire[i])
            continue;
        const struct kl_hook_ref *r = &ex->after_hooks[i];
        const struct kl_hook *h = r->hook;
        if (h->key_problem) {
            kl_warn("%s: hook %s was not told of the request: %s", ex->id, h->name, h->key_problem);
            continue;
        }
        kl_worker *w = ex->worker;
        if (w->hooks_told >= KL_HOOKS_TOLD_MAX) { /* before building what would not be sent */
            skipped(w, ex->id, h->name, 0);
            continue;
        }
        cJSON *p = kl_hook_payload(ex, r->send, message);
        cJSON *md = cJSON_GetObjectItemCaseSensitive(p, "metadata");
        if (r->send & KL_SEND_ESTIMATED_COST)
            add_ref(md, "estimated_cost", cost);
        if (r->send & KL_SEND_QUOTAS)
            add_ref(md, "quotas", quotas);
        if (r->send & KL_SEND_RESPONSE_BODY)
            add_ref(p, "response_body", answer);
        if (r->send & KL_SEND_RAW_RESPONSES)
            add_ref(p, "raw_responses", events);
        if (r->send & KL_SEND_TOOLS)
            add_ref(p, "tool_calls", tools);
        add_ref(p, "keyless", outcome);
        size_t len;
        char *text = kl_hook_text(p, &len);
        cJSON_Delete(p);
        if (!room_for(w, len)) {
            cJSON_free(text);
            skipped(w, ex->id, h->name, len);
            continue;
        }
        size_t nlen = strlen(h->name);
        struct told *t = malloc(sizeof(*t) + nlen + 1);
        if (!t)
            abort();
        t->w = w;
        t->charged = len; /* the copy the call holds */
        memcpy(t->id, ex->id, sizeof(t->id));
        memcpy(t->hook, h->name, nlen + 1);
        kl_owner_add(&w->hooks_told, 1);
        kl_owner_add(&w->body_bytes, len);
        w->hooks_told_bytes += len;
        /* the answer is drained and ignored: only its status is looked at */
        struct kl_fetch *f = kl_hook_post(w, h, text, len, 0, on_told, t);
        cJSON_free(text);
        if (!f) {
            kl_owner_add(&w->hooks_told, (uint64_t)-1);
            kl_body_memory_return(w, len);
            w->hooks_told_bytes -= len;
            kl_warn("%s: hook %s was not told of the request: the call could not start", ex->id, h->name);
            free(t);
        }
    }
    cJSON_Delete(events);
    cJSON_Delete(answer);
    cJSON_Delete(tools);
    cJSON_Delete(cost);
    cJSON_Delete(quotas);
    cJSON_Delete(outcome);
}
