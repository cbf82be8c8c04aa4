#include "admin/admin.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "authorize/authorize.h"
#include "core/urlquery.h"
#include "listen/conn.h"
#include "route/route.h"

/* Models the caller may use, each once (the first provider that lists it
 * names its owner), in configuration order. */
struct model_ref {
    const char *id;
    const struct kl_provider *p;
};

/* The providers a list or lookup in this dialect may name: those whose
 * models the dialect's endpoints can call (a Claude model is no answer to
 * an OpenAI SDK's list when /v1/chat/completions would refuse it). */
static unsigned dialect_compat(const kl_exchange *ex)
{
    if (ex->ep->id == KL_EP_GEMINI_MODELS || ex->ep->id == KL_EP_GEMINI_MODEL_GET)
        return KL_COMPAT_GEMINI_GENERATE;
    if (ex->ep->dialect == KL_DIALECT_ANTHROPIC)
        return KL_COMPAT_ANTHROPIC_MESSAGES;
    return KL_COMPAT_OPENAI_CHAT | KL_COMPAT_OPENAI_RESPONSES;
}

static bool allowed(void *arg, const struct kl_provider *p, const char *model)
{
    return kl_authorize_model(arg, p, model);
}

static size_t collect(kl_exchange *ex, struct model_ref **out)
{
    unsigned compat = dialect_compat(ex);
    const kl_config *cfg = ex->cfg;
    size_t total = 0, n = 0;
    for (size_t i = 0; i < cfg->nproviders; i++)
        total += cfg->providers[i].nmodels;
    struct model_ref *v = kl_arena_alloc(&ex->arena, (total + 1) * sizeof(*v));
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct kl_provider *p = &cfg->providers[i];
        if (p->disabled || !(p->compat & compat))
            continue;
        for (size_t k = 0; k < p->nmodels; k++) {
            const char *m = p->models[k];
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = strcmp(v[j].id, m) == 0;
            if (dup || !kl_authorize_model(ex, p, m))
                continue;
            /* owned_by names the provider a request would go to, as a
             * lookup of the one model does, not the first in the file */
            const char *bare;
            size_t bl;
            const struct kl_provider *to = kl_route_resolve_filtered(cfg, m, compat, allowed, ex, &bare, &bl);
            v[n++] = (struct model_ref){m, to && bl == strlen(m) && memcmp(bare, m, bl) == 0 ? to : p};
        }
    }
    *out = v;
    return n;
}

static cJSON *openai_model(const struct model_ref *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", 0);
    cJSON_AddStringToObject(o, "owned_by", r->p->id);
    return o;
}

static cJSON *anthropic_model(const struct model_ref *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "model");
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "display_name", r->id);
    cJSON_AddStringToObject(o, "created_at", "1970-01-01T00:00:00Z");
    return o;
}

static cJSON *gemini_model(kl_exchange *ex, const struct model_ref *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", kl_arena_printf(&ex->arena, "models/%s", r->id));
    cJSON_AddStringToObject(o, "displayName", r->id);
    cJSON *methods = cJSON_AddArrayToObject(o, "supportedGenerationMethods");
    if (r->p->compat & KL_COMPAT_GEMINI_GENERATE) {
        cJSON_AddItemToArray(methods, cJSON_CreateString("generateContent"));
        cJSON_AddItemToArray(methods, cJSON_CreateString("streamGenerateContent"));
        cJSON_AddItemToArray(methods, cJSON_CreateString("countTokens"));
    }
    return o;
}

static enum kl_step send_json(kl_exchange *ex, cJSON *root)
{
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s)
        abort();
    kl_respond(ex, 200, "application/json", NULL, s, strlen(s));
    cJSON_free(s);
    return KL_DONE;
}

/* The page of v[0..n) after or before the model named at (all of them when
 * at is NULL), lim long at most, as [*from, *to); *found is false when at
 * names no listed model. */
static void page_slice(const struct model_ref *v, size_t n, size_t lim, const char *at, bool before, size_t *from,
                       size_t *to, bool *more, bool *found)
{
    size_t k = 0;
    while (at && k < n && strcmp(v[k].id, at) != 0)
        k++;
    *found = !at || k < n;
    if (!*found) {
        *from = *to = 0;
        *more = false;
    } else if (at && before) {
        *to = k;
        *from = k > lim ? k - lim : 0;
        *more = *from > 0;
    } else {
        *from = at ? k + 1 : 0;
        *to = n - *from > lim ? *from + lim : n;
        *more = *to < n;
    }
}

/* A page size given as digits only, from 1 to max. */
static bool page_size(const char *s, size_t max, size_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 9 || strspn(s, "0123456789") != len)
        return false;
    long v = atol(s);
    if (v < 1 || (size_t)v > max)
        return false;
    *out = (size_t)v;
    return true;
}

/* Anthropic's list is paged by limit (1 to 1000), after_id and before_id,
 * and the SDKs follow last_id while has_more: the page of v[0..n) they ask
 * for, as [*from, *to), or a message. Without a limit every model comes at
 * once; an id that is not listed gives an empty page. */
static const char *anthropic_page(kl_exchange *ex, const struct model_ref *v, size_t n, size_t *from, size_t *to,
                                  bool *more)
{
    const char *qs = ex->req.query;
    const char *limit = kl_query_param(&ex->arena, qs, "limit");
    const char *after = kl_query_param(&ex->arena, qs, "after_id");
    const char *before = kl_query_param(&ex->arena, qs, "before_id");
    size_t lim = n;
    if (limit && !page_size(limit, 1000, &lim))
        return "limit must be a whole number from 1 to 1000";
    after = after && *after ? after : NULL;
    before = before && *before ? before : NULL;
    if (after && before)
        return "give after_id or before_id, not both";
    bool found;
    page_slice(v, n, lim, after ? after : before, before != NULL, from, to, more, &found);
    return NULL;
}

/* Gemini's list is paged by pageSize and the nextPageToken of the page
 * before, which the SDKs' pagers follow; keyless's token is the last model
 * of that page. Google caps pageSize at 1000; without one every model comes
 * at once, so a caller that does not page misses none. */
static const char *gemini_page(kl_exchange *ex, const struct model_ref *v, size_t n, size_t *from, size_t *to,
                               bool *more)
{
    const char *qs = ex->req.query;
    const char *size = kl_query_param(&ex->arena, qs, "pageSize");
    const char *token = kl_query_param(&ex->arena, qs, "pageToken");
    size_t lim = n;
    if (size && *size) {
        if (!page_size(size, SIZE_MAX, &lim))
            return "pageSize must be a whole number, 1 or more";
        lim = lim > 1000 ? 1000 : lim;
    }
    bool found;
    page_slice(v, n, lim, token && *token ? token : NULL, false, from, to, more, &found);
    return found ? NULL : "pageToken is not one this list gave";
}

static enum kl_step list_models(kl_exchange *ex)
{
    struct model_ref *v;
    size_t n = collect(ex, &v);
    size_t from = 0, to = n;
    bool more = false;
    const char *bad = NULL;
    if (ex->ep->id == KL_EP_GEMINI_MODELS)
        bad = gemini_page(ex, v, n, &from, &to, &more);
    else if (ex->ep->dialect == KL_DIALECT_ANTHROPIC)
        bad = anthropic_page(ex, v, n, &from, &to, &more);
    if (bad)
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "%s", bad);
    cJSON *root = cJSON_CreateObject();
    if (ex->ep->id == KL_EP_GEMINI_MODELS) {
        cJSON *arr = cJSON_AddArrayToObject(root, "models");
        for (size_t i = from; i < to; i++)
            cJSON_AddItemToArray(arr, gemini_model(ex, &v[i]));
        if (more)
            cJSON_AddStringToObject(root, "nextPageToken", v[to - 1].id);
    } else if (ex->ep->dialect == KL_DIALECT_ANTHROPIC) {
        cJSON *arr = cJSON_AddArrayToObject(root, "data");
        for (size_t i = from; i < to; i++)
            cJSON_AddItemToArray(arr, anthropic_model(&v[i]));
        cJSON_AddBoolToObject(root, "has_more", more);
        if (to > from) {
            cJSON_AddStringToObject(root, "first_id", v[from].id);
            cJSON_AddStringToObject(root, "last_id", v[to - 1].id);
        } else {
            cJSON_AddNullToObject(root, "first_id");
            cJSON_AddNullToObject(root, "last_id");
        }
    } else {
        cJSON_AddStringToObject(root, "object", "list");
        cJSON *arr = cJSON_AddArrayToObject(root, "data");
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, openai_model(&v[i]));
    }
    return send_json(ex, root);
}


/* The provider a request for the model would go to: among those the
 * caller's grants allow, as authorize picks it (not the first provider of
 * the model, which the caller may not use when another one it may serves
 * the same name). */
static enum kl_step get_model(kl_exchange *ex)
{
    const char *bare;
    size_t bl;
    const struct kl_provider *p = kl_route_resolve_filtered(ex->cfg, ex->model_requested, dialect_compat(ex), allowed,
                                                            ex, &bare, &bl);
    if (!p)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                       "model '%s' does not exist or you do not have access to it", ex->model_requested);
    struct model_ref r = {bare, p};
    if (ex->ep->id == KL_EP_GEMINI_MODEL_GET)
        return send_json(ex, gemini_model(ex, &r));
    if (ex->ep->dialect == KL_DIALECT_ANTHROPIC)
        return send_json(ex, anthropic_model(&r));
    return send_json(ex, openai_model(&r));
}

enum kl_step kl_admin_root(kl_exchange *ex)
{
    static const char body[] = "keyless\n";
    kl_respond(ex, 200, "text/plain; charset=utf-8", NULL, body, sizeof(body) - 1);
    return KL_DONE;
}

enum kl_step kl_admin_run(kl_exchange *ex)
{
    switch (ex->ep->id) {
    case KL_EP_MODELS:
    case KL_EP_GEMINI_MODELS:
        return list_models(ex);
    case KL_EP_MODEL_GET:
    case KL_EP_GEMINI_MODEL_GET:
        return get_model(ex);
    case KL_EP_ADMIN:
        if (strcmp(ex->req.path, "/api/whoami") == 0) {
            if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
                return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on /api/whoami");
            return kl_admin_whoami(ex);
        }
        if (strcmp(ex->req.path, "/api/quotas") == 0 || strcmp(ex->req.path, "/api/quotas/refill") == 0)
            return kl_admin_quotas(ex);
        if (strcmp(ex->req.path, "/api/export") == 0)
            return kl_admin_export(ex);
        if (strcmp(ex->req.path, "/metrics") == 0)
            return kl_admin_metrics(ex);
        if (strcmp(ex->req.path, "/api/usage") == 0 || strncmp(ex->req.path, "/api/requests", 13) == 0)
            return kl_admin_records(ex);
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such endpoint: %s", ex->req.path);
    default:
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such endpoint: %s", ex->req.path);
    }
}
