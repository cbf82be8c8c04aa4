/* What a hook is sent (Aperture's HookCallData) and the POST itself. */
#include "guard/hookcall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authorize/grants.h"
#include "core/jsoncheck.h"
#include "core/text.h"
#include "identity/identity.h"
#include "listen/http.h"

/* Text of a message's content: a string, or the "text" of each part. */
static void add_text(const cJSON *content, kl_arena *a, const char **acc)
{
    if (cJSON_IsString(content)) {
        *acc = *acc ? kl_arena_concat(a, *acc, "\n", content->valuestring, NULL) : content->valuestring;
        return;
    }
    const cJSON *parts = cJSON_IsArray(content) ? content : NULL, *part;
    cJSON_ArrayForEach(part, parts) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        add_text(cJSON_IsString(t) ? t : cJSON_IsString(part) ? part : NULL, a, acc);
    }
}

/* The last user message of the conversation, whatever the dialect calls it:
 * OpenAI chat and Anthropic "messages", the Responses API "input" (a string
 * or items), Gemini "contents" (parts; a missing role is the user). */
static const char *user_message(const cJSON *body, kl_arena *a)
{
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
    if (cJSON_IsString(input))
        return input->valuestring;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(body, "messages");
    bool gemini = false;
    if (!cJSON_IsArray(list))
        list = cJSON_IsArray(input) ? input : NULL;
    if (!list) {
        list = cJSON_GetObjectItemCaseSensitive(body, "contents");
        gemini = true;
    }
    const char *text = NULL;
    for (const cJSON *m = cJSON_IsArray(list) ? cJSON_GetArrayItem(list, cJSON_GetArraySize(list) - 1) : NULL; m;
         m = m->prev) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        bool user = cJSON_IsString(role) ? strcmp(role->valuestring, "user") == 0 : gemini;
        if (user) {
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, gemini ? "parts" : "content");
            add_text(content, a, &text);
            return text;
        }
        if (m == list->child)
            break; /* cJSON's first item's prev is the last one */
    }
    return text;
}

int kl_hook_user_message(kl_exchange *ex, const char **out)
{
    *out = NULL;
    cJSON *tree = NULL;
    bool bad = kl_json_has_nul_escape(ex->body, ex->body_len) ||
               !(tree = cJSON_ParseWithLength(ex->body, ex->body_len)) || kl_json_has_duplicate_keys(tree);
    if (!bad) {
        const char *m = user_message(tree, &ex->arena);
        *out = m ? kl_arena_strdup(&ex->arena, m) : NULL;
    }
    cJSON_Delete(tree);
    return bad ? -1 : 0;
}

static void add_opt_string(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
}

/* A WhoIs identity's tailnet: its node's MagicDNS name past the host label
 * ("alice-mbp.tail8c2a1.ts.net" -> "tail8c2a1.ts.net"). NULL for others. */
static const char *tailnet_name(const struct kl_identity *id)
{
    if (!id || !id->node || !id->source || strcmp(id->source, "tailscale") != 0)
        return NULL;
    const char *dot = strchr(id->node, '.');
    return dot && dot[1] ? dot + 1 : NULL;
}

/* Add every capability of app but Aperture's own to out, each name's
 * values appended to what other grants gave it. */
static void add_custom_caps(cJSON *out, const cJSON *app)
{
    const cJSON *cap;
    cJSON_ArrayForEach(cap, app) {
        if (!cap->string || strcmp(cap->string, KL_APERTURE_CAP) == 0)
            continue;
        cJSON *have = cJSON_GetObjectItemCaseSensitive(out, cap->string);
        if (!have)
            have = cJSON_AddArrayToObject(out, cap->string);
        const cJSON *v;
        if (cJSON_IsArray(cap)) {
            cJSON_ArrayForEach(v, cap)
                cJSON_AddItemToArray(have, cJSON_Duplicate(v, true));
        } else {
            cJSON_AddItemToArray(have, cJSON_Duplicate(cap, true));
        }
    }
}

/* metadata.grants: the third-party capabilities ("example.com/cap/x") of
 * every configured grant whose src names the caller (whatever else it
 * grants), and of the tailnet policy's (WhoIs CapMap, serve headers), keyed
 * by capability. */
static cJSON *custom_grants(const kl_exchange *ex)
{
    cJSON *out = cJSON_CreateObject();
    const struct kl_grants *g = ex->cfg->grants;
    for (size_t i = 0; ex->ident && g && i < g->n; i++) {
        bool match = false;
        for (size_t k = 0; k < g->v[i].nsrc && !match; k++)
            match = kl_selector_matches(ex->ident, g->v[i].src[k]);
        if (match)
            add_custom_caps(out, g->v[i].app);
    }
    if (ex->ident)
        add_custom_caps(out, ex->ident->caps);
    return out;
}

cJSON *kl_hook_payload(kl_exchange *ex, unsigned send, const char *message)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(root, "metadata");
    add_opt_string(md, "login_name", ex->ident ? ex->ident->login : NULL);
    /* the caller's free text, cut as the record cuts it */
    add_opt_string(md, "user_agent", kl_text_prefix(&ex->arena, kl_http_header(&ex->req, "user-agent"),
                                                    KL_CALLER_TEXT_MAX));
    add_opt_string(md, "url", kl_text_prefix(&ex->arena, ex->req.path, KL_CALLER_TEXT_MAX));
    add_opt_string(md, "model", ex->model_requested);
    add_opt_string(md, "provider", ex->provider ? ex->provider->id : NULL);
    add_opt_string(md, "tailnet_name", tailnet_name(ex->ident));
    add_opt_string(md, "stable_node_id", ex->ident ? ex->ident->stable_node_id : NULL);
    cJSON_AddStringToObject(md, "request_id", ex->id);
    add_opt_string(md, "session_id", ex->session_id);
    if (send & KL_SEND_GRANTS)
        cJSON_AddItemToObject(md, "grants", custom_grants(ex));
    if (send & KL_SEND_USER_MESSAGE)
        add_opt_string(root, "user_message", message);
    /* the caller's own bytes (valid JSON, checked by the endpoint stage),
     * not a parsed copy: that could differ in what a hook must see */
    if (send & KL_SEND_REQUEST_BODY)
        cJSON_AddItemToObject(root, "request_body", cJSON_CreateRaw(ex->body ? ex->body : "{}"));
    return root;
}

char *kl_hook_text(const cJSON *payload, size_t *len)
{
    char *text = cJSON_PrintUnformatted(payload);
    if (!text)
        abort();
    /* cJSON copies a string's bytes as they are: a User-Agent, a body or an
     * answer that is not UTF-8 would make the whole payload text no JSON
     * reader must take. Its other bytes are ASCII, so a byte replaced inside
     * a string leaves the document what it was. */
    size_t raw = strlen(text), n = kl_utf8_clean_len_n(text, raw);
    if (n != raw) {
        char *clean = cJSON_malloc(n + 1);
        if (!clean)
            abort();
        kl_utf8_clean(clean, text);
        cJSON_free(text);
        text = clean;
    }
    *len = n;
    return text;
}

struct kl_fetch *kl_hook_call(kl_worker *w, const struct kl_hook *h, const cJSON *payload, size_t max_reply,
                              kl_fetch_done done, void *arg)
{
    size_t len;
    char *body = kl_hook_text(payload, &len);
    struct kl_fetch *f = kl_hook_post(w, h, body, len, max_reply, done, arg);
    cJSON_free(body);
    return f;
}

struct kl_fetch *kl_hook_post(kl_worker *w, const struct kl_hook *h, const char *body, size_t len, size_t max_reply,
                              kl_fetch_done done, void *arg)
{
    /* the header as long as the key is (a fixed buffer cut a long one, and
     * the hook then refused every call), wiped once libcurl has its copy */
    char *auth = NULL;
    size_t auth_size = 0;
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    if (h->apikey) {
        const char *prefix = kl_auth_header_prefix(h->auth);
        auth_size = strlen(prefix) + strlen(h->apikey) + 1;
        if (!(auth = malloc(auth_size)))
            abort();
        snprintf(auth, auth_size, "%s%s", prefix, h->apikey);
        headers[1] = auth;
    }
    struct kl_fetch_opts o = {
        .url = h->url, .timeout_ms = h->timeout_ms, .post = body, .post_len = len, .headers = headers,
        .max_body = max_reply, .discard_body = max_reply == 0,
    };
    struct kl_fetch *f = kl_fetch_start(w, &o, done, arg);
    if (auth) {
        explicit_bzero(auth, auth_size);
        free(auth);
    }
    return f;
}
