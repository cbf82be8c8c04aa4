/* The input a request points its provider at: counted so that a spend
 * quota's reservation covers it (admit.c), where the body's size alone
 * would not. Read from the body's bytes, as the request stage mapped them:
 * a member name is a JSON string followed by ':', which no string value
 * is, so a byte search for "name" then ':' finds names only. A body whose
 * names may be written with escapes is read decoded (core/decoded.h). */
#include "admit/referenced.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/decoded.h"
#include "core/jsonscan.h"

enum want {
    W_STRING,                   /* a non-empty string */
    W_HTTP,                     /* a string that is an http(s) URL */
    W_OBJECT,
    W_PRESENT,                  /* anything but null */
};

static bool value_is(const char *v, const char *end, enum want w)
{
    size_t n = (size_t)(end - v);
    switch (w) {
    case W_STRING:
        return n >= 2 && v[0] == '"' && v[1] != '"';
    case W_HTTP:
        return n > 8 && v[0] == '"' &&
               (strncasecmp(v + 1, "http://", 7) == 0 || (n > 9 && strncasecmp(v + 1, "https://", 8) == 0));
    case W_OBJECT:
        return v[0] == '{';
    case W_PRESENT:
        return !(n >= 4 && memcmp(v, "null", 4) == 0);
    }
    return false;
}

/* Members named key, anywhere in s[sp], whose value is as wanted. */
static int64_t members(const char *s, struct kl_body_span sp, const char *key, enum want w)
{
    if (!sp.end)
        return 0;
    char pat[40];
    size_t pl = (size_t)snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = s + sp.start, *end = s + sp.end;
    int64_t n = 0;
    for (; (p = memmem(p, (size_t)(end - p), pat, pl)); p += pl) {
        const char *v = kl_json_value_at(p + pl, end);
        if (v && value_is(v, end, w))
            n++;
    }
    return n;
}

/* "type" members in s[sp] whose string value begins with one of prefixes
 * (a prefix ending in '"' is a whole value). */
static int64_t types(const char *s, struct kl_body_span sp, const char *const *prefixes, size_t np)
{
    if (!sp.end)
        return 0;
    const char *p = s + sp.start, *end = s + sp.end;
    int64_t n = 0;
    for (; (p = memmem(p, (size_t)(end - p), "\"type\"", 6)); p += 6) {
        const char *v = kl_json_value_at(p + 6, end);
        if (!v || *v != '"')
            continue;
        for (size_t i = 0; i < np; i++) {
            size_t k = strlen(prefixes[i]);
            if ((size_t)(end - v - 1) >= k && memcmp(v + 1, prefixes[i], k) == 0) {
                n++;
                break;
            }
        }
    }
    return n;
}

/* A top-level member's value is as wanted. */
static int64_t top(const char *s, struct kl_body_span sp, enum want w)
{
    return sp.end && value_is(s + sp.start, s + sp.end, w) ? 1 : 0;
}

static int64_t count(const struct kl_endpoint_info *ep, const char *s, const struct kl_body_map *m)
{
    switch (ep->id) {
    case KL_EP_CHAT:
        /* an image_url's url, a file part's file_id; the search models' web search */
        return members(s, m->messages, "url", W_HTTP) + members(s, m->messages, "file_id", W_STRING) +
               top(s, m->web_search_options, W_PRESENT);
    case KL_EP_RESPONSES: {
        static const char *const refs[] = {"item_reference\""};
        static const char *const run[] = {"web_search", "web_fetch", "file_search", "code_interpreter", "mcp\""};
        return top(s, m->previous_response_id, W_STRING) + top(s, m->conversation, W_PRESENT) +
               top(s, m->prompt, W_OBJECT) + types(s, m->input, refs, 1) +
               members(s, m->input, "file_id", W_STRING) + members(s, m->input, "file_url", W_STRING) +
               members(s, m->input, "image_url", W_HTTP) + types(s, m->tools, run, 5);
    }
    case KL_EP_MESSAGES:
    case KL_EP_BEDROCK_INVOKE:
    case KL_EP_BEDROCK_INVOKE_STREAM: {
        /* a url or file source of an image or document; the server tools;
         * each MCP server (its tools' definitions, their results) */
        static const char *const src[] = {"url\"", "file\""};
        static const char *const run[] = {"web_search_", "web_fetch_", "code_execution_"};
        return types(s, m->messages, src, 2) + types(s, m->tools, run, 3) + members(s, m->mcp_servers, "url", W_STRING);
    }
    case KL_EP_GEMINI_GENERATE:
    case KL_EP_GEMINI_STREAM: {
        static const char *const run[] = {
            "googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval", "urlContext",
            "url_context", "codeExecution", "code_execution", "fileSearch", "file_search", "googleMaps",
            "google_maps", "retrieval", "enterpriseWebSearch", "enterprise_web_search",
        };
        int64_t n = members(s, m->contents, "fileData", W_OBJECT) + members(s, m->contents, "file_data", W_OBJECT) +
                    top(s, m->cached_content, W_STRING) + top(s, m->cached_content_snake, W_STRING);
        for (size_t i = 0; i < sizeof(run) / sizeof(run[0]); i++)
            n += members(s, m->tools, run[i], W_OBJECT);
        return n;
    }
    case KL_EP_BEDROCK_CONVERSE:
    case KL_EP_BEDROCK_CONVERSE_STREAM:
        return members(s, m->messages, "s3Location", W_OBJECT);
    default:
        return 0;
    }
}

const char *kl_referenced_id(kl_arena *a, const char *body, struct kl_body_span sp, size_t *len)
{
    if (!sp.end)
        return NULL;
    const char *v = body + sp.start, *end = body + sp.end;
    if (*v == '{') {
        const char *k = memmem(v, (size_t)(end - v), "\"id\"", 4);
        if (!k || !(v = kl_json_value_at(k + 4, end)))
            return NULL;
    }
    if (v >= end || *v != '"')
        return NULL;
    size_t close = kl_json_skip_value(v, (size_t)(end - v), 0);
    if (close == (size_t)-1 || close < 2)
        return NULL;
    if (!memchr(v + 1, '\\', close - 2)) {
        *len = close - 2;
        return v + 1;
    }
    /* written with escapes ("resp\u005f1" is resp_1 to the provider):
     * decoded, up to a NUL escape, which no id has */
    cJSON *s = cJSON_ParseWithLength(v, close);
    const char *id = cJSON_IsString(s) ? kl_arena_strdup(a, s->valuestring) : NULL;
    cJSON_Delete(s);
    if (id)
        *len = strlen(id);
    return id;
}

int64_t kl_referenced_inputs(const struct kl_endpoint_info *ep, const char *body, size_t len,
                             const struct kl_body_map *m)
{
    if (!body || !len)
        return 0;
    if (!kl_decode_word_escaped(body, len))
        return count(ep, body, m);
    /* a name or a value may be spelt with escapes ("file\u005fid"): read
     * the body as the provider will, mapped again */
    struct kl_decoded d;
    kl_decode(body, len, false, &d);
    struct kl_body_map dm;
    size_t at;
    const char *dup;
    int64_t n = kl_dialect_body_map(d.text, d.len, &dm, &at, &dup) == -1 ? 0 : count(ep, d.text, &dm);
    kl_decoded_free(&d);
    return n;
}
