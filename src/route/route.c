#include "route/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/jsonscan.h"
#include "listen/http.h"

static bool lists_model(const struct kl_provider *p, const char *m, size_t n)
{
    for (size_t i = 0; i < p->nmodels; i++)
        if (strlen(p->models[i]) == n && memcmp(p->models[i], m, n) == 0)
            return true;
    return false;
}

struct filter {
    bool (*allowed)(void *, const struct kl_provider *, const char *);
    void *arg;
};

static const struct kl_provider *pick(const kl_config *cfg, const char *only, size_t only_len,
                                      const char *m, size_t n, unsigned compat,
                                      const struct filter *f)
{
    const struct kl_provider *best = NULL;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct kl_provider *p = &cfg->providers[i];
        if (p->disabled || !p->baseurl || (compat && !(p->compat & compat)) || !lists_model(p, m, n))
            continue;
        if (only && (strlen(p->id) != only_len || memcmp(p->id, only, only_len) != 0))
            continue;
        if (f->allowed && !f->allowed(f->arg, p, m))
            continue;
        if (!best || p->preference > best->preference)
            best = p;
    }
    return best;
}

const struct kl_provider *kl_route_resolve(const kl_config *cfg, const char *model,
                                           unsigned compat, const char **bare, size_t *bare_len)
{
    return kl_route_resolve_filtered(cfg, model, compat, NULL, NULL, bare, bare_len);
}

const struct kl_provider *kl_route_resolve_filtered(const kl_config *cfg, const char *model,
                                                    unsigned compat,
                                                    bool (*allowed)(void *, const struct kl_provider *,
                                                                    const char *),
                                                    void *arg, const char **bare, size_t *bare_len)
{
    const struct filter f = {allowed, arg};
    /* "provider/model" when the prefix names a provider that lists the rest;
     * otherwise the whole string is the model id (self-hosted ids such as
     * "meta-llama/Llama-3.1-8B" contain slashes too). */
    const char *slash = strchr(model, '/');
    if (slash) {
        const struct kl_provider *p = pick(cfg, model, (size_t)(slash - model), slash + 1,
                                           strlen(slash + 1), compat, &f);
        if (p) {
            *bare = slash + 1;
            *bare_len = strlen(slash + 1);
            return p;
        }
    }
    *bare = model;
    *bare_len = strlen(model);
    return pick(cfg, NULL, 0, model, *bare_len, compat, &f);
}

/* The provider speaks the model by its bare id: rewrite a qualified name in
 * the body, splicing the bytes so a megabyte prompt is not re-serialized. */
static int splice_member(kl_exchange *ex, const char *key, const char *value_json)
{
    const char *src = ex->up_body;
    size_t len = ex->up_body_len, vs, ve;
    if (kl_json_find_member(src, len, key, &vs, &ve) < 0)
        return -1;
    size_t vl = strlen(value_json);
    char *out = kl_arena_alloc(&ex->arena, len - (ve - vs) + vl + 1);
    memcpy(out, src, vs);
    memcpy(out + vs, value_json, vl);
    memcpy(out + vs + vl, src + ve, len - ve);
    ex->up_body = out;
    ex->up_body_len = len - (ve - vs) + vl;
    return 0;
}

static int insert_member(kl_exchange *ex, const char *member_json)
{
    size_t open = kl_json_object_open(ex->up_body, ex->up_body_len);
    if (open == (size_t)-1)
        return -1;
    size_t ml = strlen(member_json);
    char *out = kl_arena_alloc(&ex->arena, ex->up_body_len + ml + 2);
    memcpy(out, ex->up_body, open);
    memcpy(out + open, member_json, ml);
    /* an object with members needs a comma after ours */
    size_t i = open;
    while (i < ex->up_body_len && strchr(" \t\r\n", ex->up_body[i]))
        i++;
    size_t o = open + ml;
    if (i < ex->up_body_len && ex->up_body[i] != '}')
        out[o++] = ',';
    memcpy(out + o, ex->up_body + open, ex->up_body_len - open);
    ex->up_body = out;
    ex->up_body_len = o + ex->up_body_len - open;
    return 0;
}

/* Fallback when a byte splice is not possible (escaped keys, a
 * stream_options object without include_usage): re-serialize. */
static void reserialize(kl_exchange *ex)
{
    char *s = cJSON_PrintUnformatted(ex->json);
    if (!s)
        abort();
    ex->up_body = kl_arena_strdup(&ex->arena, s);
    ex->up_body_len = strlen(s);
    cJSON_free(s);
}

/* The member that caps output for this endpoint, when keyless must set one
 * (a spend quota reserved for at most that many tokens). */
static const char *output_cap_member(const kl_exchange *ex)
{
    switch (ex->ep->id) {
    case KL_EP_CHAT: return "max_completion_tokens";
    case KL_EP_RESPONSES: return "max_output_tokens";
    case KL_EP_MESSAGES: return "max_tokens";
    default: return NULL;
    }
}

static void rewrite_body(kl_exchange *ex, const char *bare)
{
    ex->up_body = ex->body ? ex->body : "";
    ex->up_body_len = ex->body_len;
    bool qualified = ex->ep->dialect != KL_DIALECT_GEMINI && strcmp(bare, ex->model_requested) != 0;
    bool want_usage = ex->ep->id == KL_EP_CHAT && ex->stream &&
                      !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                          cJSON_GetObjectItemCaseSensitive(ex->json, "stream_options"), "include_usage"));
    bool cap_output = ex->inject_max_output_tokens > 0;
    if (!qualified && !want_usage && !cap_output)
        return;
    bool splice_ok = true;
    if (qualified) {
        cJSON *s = cJSON_CreateString(bare);
        char *q = cJSON_PrintUnformatted(s);
        cJSON_Delete(s);
        splice_ok = splice_member(ex, "model", q) == 0;
        cJSON_free(q);
    }
    if (want_usage) {
        /* OpenAI streams report usage only when asked; ask, so the record is
         * exact, and strip the extra chunk before it reaches the caller. */
        ex->added_include_usage = true;
        if (cJSON_GetObjectItemCaseSensitive(ex->json, "stream_options"))
            splice_ok = false;
        else if (splice_ok)
            splice_ok = insert_member(ex, "\"stream_options\":{\"include_usage\":true}") == 0;
    }
    const char *cap_member = cap_output ? output_cap_member(ex) : NULL;
    if (cap_output && cap_member && splice_ok) {
        char m[96];
        snprintf(m, sizeof(m), "\"%s\":%lld", cap_member, (long long)ex->inject_max_output_tokens);
        splice_ok = insert_member(ex, m) == 0;
    } else if (cap_output) {
        splice_ok = false;
    }
    if (!splice_ok) {
        if (qualified)
            cJSON_SetValuestring(cJSON_GetObjectItemCaseSensitive(ex->json, "model"), bare);
        if (want_usage) {
            cJSON *so = cJSON_GetObjectItemCaseSensitive(ex->json, "stream_options");
            if (!cJSON_IsObject(so)) {
                cJSON_DeleteItemFromObjectCaseSensitive(ex->json, "stream_options");
                so = cJSON_AddObjectToObject(ex->json, "stream_options");
            }
            cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
            cJSON_AddTrueToObject(so, "include_usage");
        }
        if (cap_output && cap_member) {
            cJSON_DeleteItemFromObjectCaseSensitive(ex->json, cap_member);
            cJSON_AddNumberToObject(ex->json, cap_member, (double)ex->inject_max_output_tokens);
        } else if (cap_output && ex->ep->dialect == KL_DIALECT_GEMINI) {
            cJSON *gc = cJSON_GetObjectItemCaseSensitive(ex->json, "generationConfig");
            if (!cJSON_IsObject(gc)) {
                cJSON_DeleteItemFromObjectCaseSensitive(ex->json, "generationConfig");
                gc = cJSON_AddObjectToObject(ex->json, "generationConfig");
            }
            cJSON_DeleteItemFromObjectCaseSensitive(gc, "maxOutputTokens");
            cJSON_AddNumberToObject(gc, "maxOutputTokens", (double)ex->inject_max_output_tokens);
        }
        reserialize(ex);
    }
}

static const char *build_url(kl_exchange *ex, const char *bare)
{
    const struct kl_provider *p = ex->provider;
    const char *path = ex->req.path;
    if (ex->ep->dialect == KL_DIALECT_GEMINI && ex->model_requested &&
        strcmp(bare, ex->model_requested) != 0) {
        /* /v1beta/models/openai/x:generateContent -> /v1beta/models/x:... */
        const char *colon = strrchr(path, ':');
        const char *models = strstr(path, "/models/");
        path = kl_arena_printf(&ex->arena, "%.*s/models/%s%s", (int)(models - path), path, bare,
                               colon ? colon : "");
    }
    const char *query = ex->req.query;
    if (p->auth_mode != KL_AUTHMODE_PASSTHROUGH)
        query = kl_route_strip_key_param(&ex->arena, query);
    return kl_arena_printf(&ex->arena, "%s%s%s%s", p->baseurl, path, query ? "?" : "",
                           query ? query : "");
}

static bool is_credential(const char *name)
{
    return strcasecmp(name, "authorization") == 0 || strcasecmp(name, "x-api-key") == 0 ||
           strcasecmp(name, "x-goog-api-key") == 0 || strcasecmp(name, "api-key") == 0;
}

static void build_headers(kl_exchange *ex)
{
    const struct kl_provider *p = ex->provider;
    const kl_http_request *r = &ex->req;
    const char **h = kl_arena_alloc(&ex->arena, (r->nheaders + p->nadd_headers + 2) * sizeof(char *));
    size_t n = 0;
    const char *conn = kl_http_header(r, "connection");
    bool caller_credential = false;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *name = r->headers[i].name;
        if (p->auth_mode == KL_AUTHMODE_PASSTHROUGH && is_credential(name)) {
            caller_credential = true;
            h[n++] = kl_arena_printf(&ex->arena, "%s: %s", name, r->headers[i].value);
            continue;
        }
        if (kl_route_drop_request_header(name) || (conn && kl_http_list_has(conn, name)))
            continue;
        h[n++] = kl_arena_printf(&ex->arena, "%s: %s", name, r->headers[i].value);
    }
    bool inject = p->apikey && (p->auth_mode == KL_AUTHMODE_OVERRIDE ||
                                (p->auth_mode == KL_AUTHMODE_PASSTHROUGH && !caller_credential));
    if (inject) {
        switch (p->auth_style) {
        case KL_AUTH_BEARER:
            h[n++] = kl_arena_printf(&ex->arena, "Authorization: Bearer %s", p->apikey);
            break;
        case KL_AUTH_X_API_KEY:
            h[n++] = kl_arena_printf(&ex->arena, "x-api-key: %s", p->apikey);
            break;
        case KL_AUTH_X_GOOG_API_KEY:
            h[n++] = kl_arena_printf(&ex->arena, "x-goog-api-key: %s", p->apikey);
            break;
        }
    }
    for (size_t i = 0; i < p->nadd_headers; i++)
        h[n++] = p->add_headers[i];
    ex->up_headers = h;
    ex->n_up_headers = n;
}

/* The provider was chosen by authorize among those the caller may use. */
enum kl_step kl_route_run(kl_exchange *ex)
{
    const struct kl_provider *p = ex->provider;
    const char *bare = ex->model;
    if (p->key_problem && p->auth_mode == KL_AUTHMODE_OVERRIDE)
        return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "%s", p->key_problem);
    rewrite_body(ex, bare);
    ex->upstream_url = build_url(ex, bare);
    build_headers(ex);
    return KL_NEXT;
}
