#include "route/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "account/prices.h"
#include "core/jsonscan.h"
#include "core/text.h"
#include "core/urlquery.h"
#include "identity/identity.h"
#include "listen/http.h"
#include "route/failover.h"
#include "upstream/awscreds.h"
#include "upstream/gcp.h"
#include "upstream/sigv4.h"

static bool lists_model(const struct kl_provider *p, const char *m, size_t n)
{
    for (size_t i = 0; i < p->nmodels; i++)
        if (strlen(p->models[i]) == n && memcmp(p->models[i], m, n) == 0)
            return true;
    return false;
}

bool kl_route_serves(const struct kl_provider *p, const char *model)
{
    return lists_model(p, model, strlen(model));
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

/* One change to the request body: bytes [start,end) of the caller's body
 * become text (start == end: an insertion). */
struct body_edit {
    size_t start, end;
    const char *text;
};

/* The body sent upstream: the caller's bytes with the edits applied in one
 * copy, so a megabyte prompt is never re-serialized. Edits are sorted by
 * start here and never overlap (each touches one member's value). */
static void apply_edits(kl_exchange *ex, struct body_edit *e, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && e[j].start < e[j - 1].start; j--) {
            struct body_edit t = e[j];
            e[j] = e[j - 1];
            e[j - 1] = t;
        }
    size_t out_len = ex->body_len;
    for (size_t i = 0; i < n; i++)
        out_len += strlen(e[i].text) - (e[i].end - e[i].start);
    char *out = kl_arena_alloc_raw(&ex->arena, out_len + 1);
    kl_exchange_charge(ex, &ex->up_body_charged, out_len + 1, 0); /* a copy of a body let in */
    size_t o = 0, at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(e[i].text);
        memcpy(out + o, ex->body + at, e[i].start - at);
        o += e[i].start - at;
        memcpy(out + o, e[i].text, tl);
        o += tl;
        at = e[i].end;
    }
    memcpy(out + o, ex->body + at, ex->body_len - at);
    o += ex->body_len - at;
    out[o] = '\0';
    ex->up_body = out;
    ex->up_body_len = o;
}

/* The member's object value (from the caller's body) with `key` set to
 * `value`; a member that is not an object is replaced by a new one. */
static const char *object_with(kl_exchange *ex, struct kl_body_span at, const char *key,
                               const char *other_name, cJSON *value)
{
    cJSON *o = at.end ? cJSON_ParseWithLength(ex->body + at.start, at.end - at.start) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        o = cJSON_CreateObject();
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    if (other_name) /* the same field by its other name (Google's proto name): one value left */
        cJSON_DeleteItemFromObjectCaseSensitive(o, other_name);
    cJSON_AddItemToObject(o, key, value);
    return kl_json_print_arena(&ex->arena, o, "", "");
}

/* Whether the provider's host is OpenAI's own or Microsoft's (Azure OpenAI,
 * AI Foundry, GitHub Models), whose reasoning models refuse max_tokens. */
static bool openai_host(const char *baseurl)
{
    const char *h = strstr(baseurl, "://");
    h = h ? h + 3 : baseurl;
    size_t n = strcspn(h, ":/?#");
    static const char *const suffixes[] = {"openai.com", "azure.com", "github.ai"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strncasecmp(h + n - k, suffixes[i], k) == 0 && (n == k || h[n - k - 1] == '.'))
            return true;
    }
    return false;
}

/* The name of the chat output cap keyless adds: OpenAI's
 * max_completion_tokens for OpenAI's models and hosts (its reasoning
 * models refuse max_tokens), else max_tokens, the one every
 * OpenAI-compatible server reads (Ollama reads no other). */
static const char *chat_cap_name(const kl_exchange *ex, const char *bare)
{
    if (openai_host(ex->provider->baseurl) || kl_prices_find(ex->cfg->prices, "openai", bare))
        return "max_completion_tokens";
    return "max_tokens";
}

/* The member that caps output for this endpoint, when keyless must set one
 * (a spend quota reserved for at most that many tokens): one the caller
 * wrote without a number is replaced. */
static const struct kl_body_span *output_cap_member(const kl_exchange *ex, const char *bare, const char **name)
{
    const struct kl_body_map *m = &ex->body_map;
    switch (ex->ep->id) {
    case KL_EP_CHAT:
        if (m->max_completion_tokens.end || m->max_tokens.end) {
            bool completion = m->max_completion_tokens.end;
            *name = completion ? "max_completion_tokens" : "max_tokens";
            return completion ? &m->max_completion_tokens : &m->max_tokens;
        }
        *name = chat_cap_name(ex, bare);
        return &m->max_completion_tokens; /* absent: the name is inserted */
    case KL_EP_RESPONSES: *name = "max_output_tokens"; return &m->max_output_tokens;
    case KL_EP_MESSAGES: *name = "max_tokens"; return &m->max_tokens;
    case KL_EP_BEDROCK_INVOKE: /* Claude's body; admit refuses to reserve for another family's */
    case KL_EP_BEDROCK_INVOKE_STREAM: *name = "max_tokens"; return &m->max_tokens;
    default: *name = NULL; return NULL;
    }
}

/* What the provider must see that the caller did not write: the bare model
 * id for a qualified name, stream_options.include_usage for an OpenAI
 * stream (so the record is exact; the extra chunk is stripped before it
 * reaches the caller), and the output cap a spend quota reserved for. */
static void rewrite_body(kl_exchange *ex, const char *bare)
{
    ex->up_body = ex->body ? ex->body : "";
    ex->up_body_len = ex->body_len;
    const struct kl_body_map *m = &ex->body_map;
    struct body_edit edits[4];
    size_t n = 0;
    char inserts[160] = "";

    if (!ex->ep->model_in_path && strcmp(bare, ex->model_requested) != 0)
        edits[n++] = (struct body_edit){m->model.start, m->model.end,
                                        kl_json_print_arena(&ex->arena, cJSON_CreateString(bare), "", "")};
    if (ex->ep->id == KL_EP_CHAT && ex->stream && !ex->include_usage) {
        ex->added_include_usage = true;
        if (m->stream_options.end)
            edits[n++] = (struct body_edit){m->stream_options.start, m->stream_options.end,
                                            object_with(ex, m->stream_options, "include_usage", NULL,
                                                        cJSON_CreateTrue())};
        else
            strcat(inserts, "\"stream_options\":{\"include_usage\":true}");
    }
    if (ex->inject_max_output_tokens > 0) {
        const char *name;
        const struct kl_body_span *cap = output_cap_member(ex, bare, &name);
        char num[32];
        snprintf(num, sizeof(num), "%lld", (long long)ex->inject_max_output_tokens);
        if (cap && cap->end) {
            edits[n++] = (struct body_edit){cap->start, cap->end, kl_arena_strdup(&ex->arena, num)};
        } else if (cap) {
            snprintf(inserts + strlen(inserts), sizeof(inserts) - strlen(inserts), "%s\"%s\":%s",
                     inserts[0] ? "," : "", name, num);
        } else if (ex->ep->dialect == KL_DIALECT_GEMINI || ex->ep->id == KL_EP_BEDROCK_CONVERSE ||
                   ex->ep->id == KL_EP_BEDROCK_CONVERSE_STREAM) {
            /* generationConfig.maxOutputTokens, Converse's inferenceConfig.maxTokens */
            bool gemini = ex->ep->dialect == KL_DIALECT_GEMINI;
            const struct kl_body_span *in = gemini ? &m->generation_config : &m->inference_config;
            const char *obj = object_with(ex, *in, gemini ? "maxOutputTokens" : "maxTokens",
                                          gemini ? "max_output_tokens" : NULL,
                                          cJSON_CreateNumber((double)ex->inject_max_output_tokens));
            if (in->end)
                edits[n++] = (struct body_edit){in->start, in->end, obj};
            else
                snprintf(inserts + strlen(inserts), sizeof(inserts) - strlen(inserts), "%s\"%s\":%s",
                         inserts[0] ? "," : "", gemini ? "generationConfig" : "inferenceConfig", obj);
        }
    }
    if (inserts[0]) {
        /* new members go first, with a comma when the object has others */
        size_t open = kl_json_object_open(ex->body, ex->body_len);
        size_t i = open;
        while (i < ex->body_len && strchr(" \t\r\n", ex->body[i]))
            i++;
        const char *text = i < ex->body_len && ex->body[i] != '}'
                               ? kl_arena_printf(&ex->arena, "%s,", inserts) : inserts;
        edits[n++] = (struct body_edit){open, open, kl_arena_strdup(&ex->arena, text)};
    }
    if (n)
        apply_edits(ex, edits, n);
}

/* A Vertex AI path as the provider gets it: in the credentials' own project
 * when they have one (a service account's, the metadata server's: the
 * gateway's credentials decide whose project is used and billed, not the
 * caller), with the bare model for a qualified name; the caller's location
 * and model text otherwise, as sent. NULL for a path that is not Vertex's. */
static const char *vertex_path(kl_exchange *ex, const char *bare, const char *project)
{
    struct kl_vertex_path v;
    if (kl_dialect_vertex_path(ex->req.path, &v) < 0)
        return NULL;
    const char *where = "";
    if (v.project)
        where = kl_arena_printf(&ex->arena, "projects/%.*s/locations/%.*s/",
                                project ? (int)strlen(project) : (int)v.project_len, project ? project : v.project,
                                (int)v.location_len, v.location);
    bool rename = ex->ep->model_in_path && ex->model_requested && strcmp(bare, ex->model_requested) != 0;
    return kl_arena_printf(&ex->arena, "/%s/%spublishers/%.*s/models/%.*s:%s", v.version, where, (int)v.publisher_len,
                           v.publisher, rename ? (int)strlen(bare) : (int)v.model_len, rename ? bare : v.model, v.method);
}

/* A caller identified by a workload token sent it in one of the
 * credential headers or Gemini's ?key=, and it is for keyless (its audience), never for the
 * provider; so is one a source before oidc identified (ex->workload_token). */
static bool identified_by_token(const kl_exchange *ex)
{
    return ex->workload_token || (ex->ident && ex->ident->source && strcmp(ex->ident->source, "oidc") == 0);
}

static bool keyless_credential(const kl_exchange *ex);

static const char *build_url(kl_exchange *ex, const char *bare, const char *project)
{
    const struct kl_provider *p = ex->provider;
    const char *path = ex->req.path;
    const char *vertex = ex->ep->compat & (KL_COMPAT_GOOGLE_RAW_PREDICT | KL_COMPAT_GOOGLE_GENERATE)
                             ? vertex_path(ex, bare, project) : NULL;
    if (vertex) {
        path = vertex;
    } else if (ex->ep->dialect == KL_DIALECT_BEDROCK) {
        /* /model/{id}/{action}, the id written as the AWS SDKs write it */
        path = kl_arena_concat(&ex->arena, "/model/", kl_path_segment_encode(&ex->arena, bare), strrchr(path, '/'),
                               NULL);
    } else if (ex->ep->model_in_path && ex->model_requested && strcmp(bare, ex->model_requested) != 0) {
        /* /v1beta/models/openai/x:generateContent -> /v1beta/models/x:... */
        const char *colon = strrchr(path, ':');
        const char *models = strstr(path, "/models/");
        path = kl_arena_printf(&ex->arena, "%.*s/models/%s%s", (int)(models - path), path, bare,
                               colon ? colon : "");
    }
    /* a passthrough provider gets the caller's own credentials, and whom
     * they bill; never a field mask, nor, when keyless's own credential
     * goes instead, the caller's choice of who pays or the workload token
     * that identified it */
    const char *query = kl_route_strip_key_param(&ex->arena, ex->req.query,
                                                 p->auth_mode != KL_AUTHMODE_PASSTHROUGH || keyless_credential(ex));
    return kl_arena_concat(&ex->arena, p->baseurl, path, query ? "?" : "", query ? query : "", NULL);
}

static bool is_credential(const char *name)
{
    return strcasecmp(name, "authorization") == 0 || strcasecmp(name, "x-api-key") == 0 ||
           strcasecmp(name, "x-goog-api-key") == 0 || strcasecmp(name, "api-key") == 0;
}

/* The rest of an AWS SigV4 signature beside its Authorization header: a
 * passthrough provider gets it whole, or not at all. */
static bool is_aws_signature(const char *name)
{
    return strcasecmp(name, "x-amz-date") == 0 || strcasecmp(name, "x-amz-content-sha256") == 0 ||
           strcasecmp(name, "x-amz-security-token") == 0;
}

/* Does the provider get keyless's own credential: always with override,
 * with passthrough only when the caller sent none of its own. */
static bool keyless_credential(const kl_exchange *ex)
{
    const struct kl_provider *p = ex->provider;
    if (p->auth_mode != KL_AUTHMODE_PASSTHROUGH)
        return p->auth_mode == KL_AUTHMODE_OVERRIDE;
    if (identified_by_token(ex))
        return true;
    for (size_t i = 0; i < ex->req.nheaders; i++)
        if (is_credential(ex->req.headers[i].name))
            return false;
    /* Gemini's ?key= (LiteLLM's), Google's ?access_token=: forwarded as the
     * caller's own, keyless's key beside it would be used or billed too */
    return !kl_route_query_credential(ex->req.query);
}

/* What an answer must not hand back (kl_route_mask_key): the provider's
 * key, and the credentials keyless got for this request — a Google access
 * token (an hour of the service account's whole reach), an AWS session
 * token and key id. A provider or a debugging proxy that echoes the
 * request's headers would otherwise give them to the caller. */
static const char *const *sent_keys(kl_exchange *ex, const char *token, const struct kl_sigv4_cred *aws)
{
    const char *const *own = ex->provider->key_spellings;
    const char *const *got[3] = {
        token ? kl_route_key_spellings(&ex->arena, token) : NULL,
        aws && aws->session_token ? kl_route_key_spellings(&ex->arena, aws->session_token) : NULL,
        aws && aws->access_key_id ? kl_route_key_spellings(&ex->arena, aws->access_key_id) : NULL};
    size_t n = 0;
    for (size_t i = 0; own && own[i]; i++)
        n++;
    for (size_t g = 0; g < 3; g++)
        for (size_t i = 0; got[g] && got[g][i]; i++)
            n++;
    if (!n)
        return NULL;
    const char **all = kl_arena_alloc(&ex->arena, (n + 1) * sizeof(*all));
    n = 0;
    for (size_t i = 0; own && own[i]; i++)
        all[n++] = own[i];
    for (size_t g = 0; g < 3; g++)
        for (size_t i = 0; got[g] && got[g][i]; i++)
            all[n++] = got[g][i];
    all[n] = NULL;
    return all;
}

static void build_headers(kl_exchange *ex, const char *token, const struct kl_sigv4_cred *aws)
{
    const struct kl_provider *p = ex->provider;
    const kl_http_request *r = &ex->req;
    const char **h = kl_arena_alloc(&ex->arena, (r->nheaders + p->nadd_headers + 4) * sizeof(char *));
    size_t n = 0;
    bool by_token = identified_by_token(ex);
    kl_http_names hop;
    kl_http_connection_names(r, &ex->arena, &hop);
    bool inject = keyless_credential(ex);
    /* who pays goes with the key: the caller's choice only beside its own */
    bool callers_key = p->auth_mode == KL_AUTHMODE_PASSTHROUGH && !inject;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *name = r->headers[i].name;
        /* a caller identified by a workload token sent it in one of these
         * headers, and it is for keyless (its audience): forwarded, the
         * provider could replay it here */
        if (by_token && is_credential(name))
            continue;
        /* the rest of a signature goes only with the caller's own
         * credential: beside keyless's key it would hand the caller's AWS
         * session token to a provider that bills keyless */
        if ((p->auth_mode == KL_AUTHMODE_PASSTHROUGH && is_credential(name)) ||
            (callers_key && (is_aws_signature(name) || kl_route_billing_header(name)))) {
            h[n++] = kl_arena_concat(&ex->arena, name, ": ", r->headers[i].value, NULL);
            continue;
        }
        if (kl_route_drop_request_header(name) || kl_route_billing_header(name) ||
            kl_http_names_has(&hop, name))
            continue;
        h[n++] = kl_arena_concat(&ex->arena, name, ": ", r->headers[i].value, NULL);
    }
    ex->sent_keys = inject && (aws || token) ? sent_keys(ex, token, aws) : p->key_spellings;
    if (inject && aws) /* signed last: the URL and the body are final */
        n += kl_sigv4_headers(&ex->arena, aws, r->method, ex->upstream_url, ex->up_body, ex->up_body_len, time(NULL),
                              h + n);
    else if (inject && token)
        h[n++] = kl_arena_concat(&ex->arena, "Authorization: Bearer ", token, NULL);
    else if (inject && p->apikey)
        h[n++] = kl_arena_concat(&ex->arena, kl_auth_header_prefix(p->auth_style), p->apikey, NULL);
    for (size_t i = 0; i < p->nadd_headers; i++)
        h[n++] = p->add_headers[i];
    ex->up_headers = h;
    ex->n_up_headers = n;
}

/* The provider cannot be sent the request for want of credentials (its
 * key not set, no Google token, no AWS credentials yet): a failure of that
 * provider like a 503 from it, so it cools down and the next provider
 * serving the request takes it (route/failover.h), else the caller gets the
 * 503 with the reason. A key the configuration could not read (lasting)
 * stays missing until it is reloaded: the 503 says not to retry, in the
 * header the OpenAI and Anthropic SDKs read (Claude Code retries an
 * overloaded_error, Anthropic's type for it, whatever the header says). */
static enum kl_step no_credentials(kl_exchange *ex, const char *why, bool lasting)
{
    if (kl_failover_wanted(ex, 503, KL_EC_UNAVAILABLE)) {
        kl_failover_observe(ex, 503, KL_EC_UNAVAILABLE);
        const struct kl_provider *next = kl_failover_next(ex, 503, KL_EC_UNAVAILABLE, why);
        if (next) {
            kl_failover_switch(ex, next);
            enum kl_step st = kl_failover_health_run(ex);
            return st == KL_NEXT ? kl_route_run(ex) : st;
        }
    }
    if (lasting)
        ex->fail_retry = -1;
    return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "%s", why);
}

/* The provider was chosen by authorize among those the caller may use. */
enum kl_step kl_route_run(kl_exchange *ex)
{
    const struct kl_provider *p = ex->provider;
    const char *bare = ex->model;
    if (p->key_problem && p->auth_mode == KL_AUTHMODE_OVERRIDE)
        return no_credentials(ex, p->key_problem, true);
    const char *token = NULL, *problem = NULL, *project = p->gcp_cred ? p->gcp_cred->project_id : NULL;
    if (p->gcp_cred && p->auth_mode != KL_AUTHMODE_NONE &&
        !(token = kl_gcp_token(ex->worker->server->gcp, p->gcp_cred, &ex->arena, &problem, &project)) &&
        p->auth_mode == KL_AUTHMODE_OVERRIDE)
        return no_credentials(ex, kl_arena_printf(&ex->arena, "provider %s: %s", p->id, problem), false);
    /* a provider's aws without keys: the environment's current ones */
    const struct kl_sigv4_cred *aws = p->aws;
    if (aws && !aws->access_key_id) {
        struct kl_sigv4_cred *now = kl_arena_alloc(&ex->arena, sizeof(*now));
        *now = *aws;
        kl_aws_keeper *k = atomic_load_explicit(&ex->worker->server->aws, memory_order_acquire);
        if (!k || !kl_aws_current(k, &ex->arena, now, &problem))
            return no_credentials(ex, kl_arena_printf(&ex->arena, "provider %s: %s", p->id,
                                                       problem ? problem : "no AWS credentials yet"), false);
        aws = now;
    }
    rewrite_body(ex, bare);
    /* a Vertex path goes to the credentials' project only when their token
     * goes with it: a caller's own token (passthrough) keeps its project */
    ex->upstream_url = build_url(ex, bare, keyless_credential(ex) ? project : NULL);
    build_headers(ex, token, aws);
    return KL_NEXT;
}
