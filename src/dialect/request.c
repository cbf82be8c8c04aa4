#include "dialect/dialect.h"

#include <stdio.h>
#include <string.h>

/* A top-level key given twice is refused: cJSON reads the first, but many
 * providers read the last, so a duplicate "model" could smuggle a request
 * past the grants check. */
static int count_members(const cJSON *obj, const char *key)
{
    int n = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && strcmp(c->string, key) == 0)
            n++;
    return n;
}

static int64_t int_member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15)
        return (int64_t)v->valuedouble;
    return -1;
}

int kl_dialect_request_facts(const struct kl_endpoint_info *ep, const char *body, size_t len,
                             kl_arena *a, cJSON **json, struct kl_request_facts *f,
                             const char **why)
{
    memset(f, 0, sizeof(*f));
    f->max_output_tokens = -1;
    *json = NULL;
    if (len == 0) {
        *why = "request body is empty; a JSON object is required";
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t off = end ? (size_t)(end - body) : 0;
        *why = kl_arena_printf(a, "malformed JSON in request body at byte %zu", off);
        return -1;
    }
    /* Only white space may follow the value. */
    for (const char *p = end; p < body + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            *why = kl_arena_printf(a, "malformed JSON in request body at byte %zu: trailing data",
                                   (size_t)(p - body));
            return -1;
        }
    }
    *json = root;
    if (!cJSON_IsObject(root)) {
        *why = "request body must be a JSON object";
        return -1;
    }
    static const char *unique[] = {"model", "stream", "stream_options"};
    for (size_t i = 0; i < sizeof(unique) / sizeof(unique[0]); i++) {
        if (count_members(root, unique[i]) > 1) {
            *why = kl_arena_printf(a, "duplicate \"%s\" key in request body", unique[i]);
            return -1;
        }
    }

    if (ep->dialect != KL_DIALECT_GEMINI) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
        if (!m) {
            *why = "missing required field \"model\"";
            return -1;
        }
        if (!cJSON_IsString(m) || m->valuestring[0] == '\0') {
            *why = "\"model\" must be a non-empty string";
            return -1;
        }
        for (const unsigned char *c = (const unsigned char *)m->valuestring; *c; c++) {
            if (*c < 0x20 || *c == 0x7f) {
                *why = "\"model\" contains a control character";
                return -1;
            }
        }
        if (strlen(m->valuestring) > 256) {
            *why = "\"model\" is longer than 256 characters";
            return -1;
        }
        f->model = kl_arena_strdup(a, m->valuestring);
    }

    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    switch (ep->id) {
    case KL_EP_CHAT: {
        f->stream = cJSON_IsTrue(stream);
        f->max_output_tokens = int_member(root, "max_completion_tokens");
        if (f->max_output_tokens < 0)
            f->max_output_tokens = int_member(root, "max_tokens");
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
        f->has_include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
        break;
    }
    case KL_EP_RESPONSES:
        f->stream = cJSON_IsTrue(stream);
        f->max_output_tokens = int_member(root, "max_output_tokens");
        break;
    case KL_EP_MESSAGES:
        f->stream = cJSON_IsTrue(stream);
        f->max_output_tokens = int_member(root, "max_tokens");
        break;
    case KL_EP_GEMINI_STREAM:
        f->stream = true;
        /* fall through */
    case KL_EP_GEMINI_GENERATE: {
        const cJSON *gc = cJSON_GetObjectItemCaseSensitive(root, "generationConfig");
        if (cJSON_IsObject(gc))
            f->max_output_tokens = int_member(gc, "maxOutputTokens");
        break;
    }
    default:
        break;
    }
    return 0;
}
