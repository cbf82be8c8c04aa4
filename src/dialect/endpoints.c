#include "dialect/dialect.h"

#include <string.h>

#include "core/config.h"
#include "core/urlquery.h"

static const struct kl_endpoint_info endpoints[] = {
    {KL_EP_ROOT, KL_DIALECT_OPENAI, "root", NULL, 0, false, false},
    {KL_EP_CHAT, KL_DIALECT_OPENAI, "openai.chat", "POST", KL_COMPAT_OPENAI_CHAT, true, false},
    {KL_EP_RESPONSES, KL_DIALECT_OPENAI, "openai.responses", "POST", KL_COMPAT_OPENAI_RESPONSES, true, false},
    /* Embeddings go to OpenAI-shaped providers; Aperture has no separate flag. */
    {KL_EP_EMBEDDINGS, KL_DIALECT_OPENAI, "openai.embeddings", "POST", KL_COMPAT_OPENAI_CHAT, true, false},
    {KL_EP_MESSAGES, KL_DIALECT_ANTHROPIC, "anthropic.messages", "POST", KL_COMPAT_ANTHROPIC_MESSAGES, true, false},
    {KL_EP_COUNT_TOKENS, KL_DIALECT_ANTHROPIC, "anthropic.count_tokens", "POST", KL_COMPAT_ANTHROPIC_MESSAGES, true,
     false},
    {KL_EP_GEMINI_GENERATE, KL_DIALECT_GEMINI, "gemini.generate", "POST", KL_COMPAT_GEMINI_GENERATE, true, true},
    {KL_EP_GEMINI_STREAM, KL_DIALECT_GEMINI, "gemini.stream", "POST", KL_COMPAT_GEMINI_GENERATE, true, true},
    {KL_EP_GEMINI_COUNT, KL_DIALECT_GEMINI, "gemini.count_tokens", "POST", KL_COMPAT_GEMINI_GENERATE, true, true},
    {KL_EP_BEDROCK_INVOKE, KL_DIALECT_BEDROCK, "bedrock.invoke", "POST", KL_COMPAT_BEDROCK_INVOKE, true, true},
    {KL_EP_BEDROCK_INVOKE_STREAM, KL_DIALECT_BEDROCK, "bedrock.invoke_stream", "POST", KL_COMPAT_BEDROCK_INVOKE, true,
     true},
    {KL_EP_BEDROCK_CONVERSE, KL_DIALECT_BEDROCK, "bedrock.converse", "POST", KL_COMPAT_BEDROCK_CONVERSE, true, true},
    {KL_EP_BEDROCK_CONVERSE_STREAM, KL_DIALECT_BEDROCK, "bedrock.converse_stream", "POST", KL_COMPAT_BEDROCK_CONVERSE,
     true, true},
    /* counting is served by either flag: Bedrock's CountTokens reads both shapes */
    {KL_EP_BEDROCK_COUNT, KL_DIALECT_BEDROCK, "bedrock.count_tokens", "POST",
     KL_COMPAT_BEDROCK_INVOKE | KL_COMPAT_BEDROCK_CONVERSE, true, true},
    {KL_EP_MODELS, KL_DIALECT_OPENAI, "models", NULL, 0, false, false},
    {KL_EP_MODEL_GET, KL_DIALECT_OPENAI, "model", NULL, 0, false, false},
    {KL_EP_GEMINI_MODELS, KL_DIALECT_GEMINI, "gemini.models", NULL, 0, false, false},
    {KL_EP_GEMINI_MODEL_GET, KL_DIALECT_GEMINI, "gemini.model", NULL, 0, false, false},
    {KL_EP_ADMIN, KL_DIALECT_OPENAI, "admin", "*", 0, false, false},
    {KL_EP_UNKNOWN, KL_DIALECT_OPENAI, "unknown", "*", 0, false, false},
};

/* Vertex AI's twins of Anthropic's and Gemini's endpoints: the same APIs,
 * served by the Vertex compatibility flags; Anthropic's Messages API names
 * the model in the path there. */
static const struct kl_endpoint_info vertex_messages = {
    KL_EP_MESSAGES, KL_DIALECT_ANTHROPIC, "vertex.anthropic.messages", "POST", KL_COMPAT_GOOGLE_RAW_PREDICT, true, true};
static const struct kl_endpoint_info vertex_count_tokens = {
    KL_EP_COUNT_TOKENS, KL_DIALECT_ANTHROPIC, "vertex.anthropic.count_tokens", "POST", KL_COMPAT_GOOGLE_RAW_PREDICT, true,
    false};
static const struct kl_endpoint_info vertex_gemini[] = {
    {KL_EP_GEMINI_GENERATE, KL_DIALECT_GEMINI, "vertex.gemini.generate", "POST", KL_COMPAT_GOOGLE_GENERATE, true, true},
    {KL_EP_GEMINI_STREAM, KL_DIALECT_GEMINI, "vertex.gemini.stream", "POST", KL_COMPAT_GOOGLE_GENERATE, true, true},
    {KL_EP_GEMINI_COUNT, KL_DIALECT_GEMINI, "vertex.gemini.count_tokens", "POST", KL_COMPAT_GOOGLE_GENERATE, true,
     true},
};

static const struct kl_endpoint_info *const named_twins[] = {
    &vertex_messages, &vertex_count_tokens, &vertex_gemini[0], &vertex_gemini[1], &vertex_gemini[2],
};
_Static_assert(KL_EP_UNKNOWN + 1 + sizeof(named_twins) / sizeof(named_twins[0]) == KL_ENDPOINT_SLOTS,
               "a slot for each named twin");

/* Anthropic-shaped twins of the model-list endpoints, chosen when the caller
 * sends anthropic-version (as the Anthropic SDK and Claude Code do). */
static const struct kl_endpoint_info anthropic_models = {
    KL_EP_MODELS, KL_DIALECT_ANTHROPIC, "models", NULL, 0, false, false};
static const struct kl_endpoint_info anthropic_model_get = {
    KL_EP_MODEL_GET, KL_DIALECT_ANTHROPIC, "model", NULL, 0, false, false};

_Static_assert(sizeof(endpoints) / sizeof(endpoints[0]) == KL_EP_UNKNOWN + 1, "one entry per endpoint, in order");

static const struct kl_endpoint_info *ep(enum kl_endpoint id)
{
    return &endpoints[id];
}

size_t kl_endpoint_slot(const struct kl_endpoint_info *e)
{
    for (size_t i = 0; i < sizeof(named_twins) / sizeof(named_twins[0]); i++)
        if (e == named_twins[i])
            return KL_EP_UNKNOWN + 1 + i;
    return e->id; /* the table's, and the model lists' Anthropic twins, which share their names */
}

const struct kl_endpoint_info *kl_endpoint_by_slot(size_t slot)
{
    return slot <= KL_EP_UNKNOWN ? ep((enum kl_endpoint)slot) : named_twins[slot - KL_EP_UNKNOWN - 1];
}

bool kl_dialect_reads_body(const struct kl_endpoint_info *e, const char *model)
{
    if (e->id != KL_EP_BEDROCK_INVOKE && e->id != KL_EP_BEDROCK_INVOKE_STREAM)
        return true;
    /* "anthropic.claude-…", with a region prefix ("us.") or as the end of
     * an inference profile's ARN */
    const char *s = model ? strrchr(model, '/') : NULL;
    s = s ? s + 1 : model;
    const char *a = s ? strstr(s, "anthropic.") : NULL;
    return a && (a == s || a[-1] == '.');
}

enum kl_dialect kl_dialect_guess(const char *path, bool anthropic_version)
{
    /* Gemini's beta and alpha API versions, and its file upload path */
    if (strncmp(path, "/v1beta/", 8) == 0 || strcmp(path, "/v1beta") == 0 || strncmp(path, "/v1alpha/", 9) == 0 ||
        strcmp(path, "/v1alpha") == 0 || strncmp(path, "/upload/v1beta/", 15) == 0)
        return KL_DIALECT_GEMINI;
    if (strncmp(path, "/model/", 7) == 0)
        return KL_DIALECT_BEDROCK;
    if (strstr(path, "/publishers/google/"))
        return KL_DIALECT_GEMINI;
    /* Claude on Vertex AI: its SDK sends no anthropic-version header */
    if (anthropic_version || strstr(path, "/publishers/anthropic/"))
        return KL_DIALECT_ANTHROPIC;
    return KL_DIALECT_OPENAI;
}

static bool method_is(const char *method, const struct kl_endpoint_info *e)
{
    if (!e->method)
        return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(e->method, "*") == 0)
        return true;
    return strcmp(method, e->method) == 0;
}

/* A model in a path: bare ("gemini-2.5-flash") or qualified with its
 * provider ("gemini/gemini-2.5-flash", "self/meta-llama/Llama-3"), with no
 * empty segment, and no longer than one in a body may be (256: it goes
 * into records, where a caller would make its rows as large as its head). */
static bool path_model_ok(const char *s, size_t n)
{
    if (n == 0 || n > 256 || s[0] == '/' || s[n - 1] == '/')
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '/' && s[i - 1] == '/')
            return false;
    return true;
}

/* Gemini: "{prefix}/models/{model}:{action}" with prefix v1beta or v1. */
static bool classify_gemini(kl_arena *a, const char *rest, struct kl_route_match *m)
{
    const char *colon = strrchr(rest, ':');
    if (!colon) {
        if (!path_model_ok(rest, strlen(rest)))
            return false;
        m->ep = ep(KL_EP_GEMINI_MODEL_GET);
        m->path_model = kl_arena_strdup(a, rest);
        return true;
    }
    if (!path_model_ok(rest, (size_t)(colon - rest)))
        return false;
    const char *action = colon + 1;
    if (strcmp(action, "generateContent") == 0)
        m->ep = ep(KL_EP_GEMINI_GENERATE);
    else if (strcmp(action, "streamGenerateContent") == 0)
        m->ep = ep(KL_EP_GEMINI_STREAM);
    else if (strcmp(action, "countTokens") == 0)
        m->ep = ep(KL_EP_GEMINI_COUNT);
    else
        return false;
    m->path_model = kl_arena_strndup(a, rest, (size_t)(colon - rest));
    return true;
}

/* Bedrock runtime: "/model/{modelId}/{action}", the id percent-encoded by
 * the AWS SDKs ("us.anthropic.claude-haiku-4-5-20251001-v1%3A0", an ARN's
 * '/' as %2F); a qualified name may also come with a literal '/'. */
static bool classify_bedrock(kl_arena *a, const char *rest, struct kl_route_match *m)
{
    static const struct { const char *action; enum kl_endpoint id; } actions[] = {
        {"invoke", KL_EP_BEDROCK_INVOKE},
        {"invoke-with-response-stream", KL_EP_BEDROCK_INVOKE_STREAM},
        {"converse", KL_EP_BEDROCK_CONVERSE},
        {"converse-stream", KL_EP_BEDROCK_CONVERSE_STREAM},
        {"count-tokens", KL_EP_BEDROCK_COUNT},
    };
    const char *slash = strrchr(rest, '/');
    if (!slash)
        return false;
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (strcmp(slash + 1, actions[i].action) != 0)
            continue;
        char *model = kl_path_segment_decode(a, rest, (size_t)(slash - rest));
        if (!model || !path_model_ok(model, strlen(model)))
            return false;
        m->ep = ep(actions[i].id);
        m->path_model = model;
        return true;
    }
    return false;
}

/* A project or location id: letters, digits, '-', '_' and '.', but not "."
 * or ".." (nothing that would change the path once a proxy resolves it). */
static bool vertex_segment(const char *s, size_t n)
{
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

/* One segment after prefix at *p, up to the next '/': its span, *p after
 * the '/'. */
static bool vertex_take(const char **p, const char *prefix, const char **seg, size_t *n)
{
    size_t pl = strlen(prefix);
    if (strncmp(*p, prefix, pl) != 0)
        return false;
    const char *s = *p + pl, *slash = strchr(s, '/');
    if (!slash || !vertex_segment(s, (size_t)(slash - s)))
        return false;
    *seg = s;
    *n = (size_t)(slash - s);
    *p = slash + 1;
    return true;
}

int kl_dialect_vertex_path(const char *path, struct kl_vertex_path *v)
{
    memset(v, 0, sizeof(*v));
    const char *p = path;
    if (strncmp(p, "/v1/", 4) == 0) {
        v->version = "v1";
        p += 4;
    } else if (strncmp(p, "/v1beta1/", 9) == 0) {
        v->version = "v1beta1";
        p += 9;
    } else {
        return -1;
    }
    /* Vertex AI Express has no project or location */
    if (strncmp(p, "projects/", 9) == 0 && (!vertex_take(&p, "projects/", &v->project, &v->project_len) ||
                                            !vertex_take(&p, "locations/", &v->location, &v->location_len)))
        return -1;
    if (strncmp(p, "publishers/", 11) != 0)
        return -1;
    p += 11;
    const char *slash = strchr(p, '/');
    if (!slash || strncmp(slash, "/models/", 8) != 0)
        return -1;
    v->publisher = p;
    v->publisher_len = (size_t)(slash - p);
    v->model = slash + 8;
    const char *colon = strrchr(v->model, ':');
    if (!colon)
        return -1;
    v->model_len = (size_t)(colon - v->model);
    v->method = colon + 1;
    return 0;
}

/* Vertex AI: "/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/
 * {model}:{method}" (or /v1beta1; Express mode without the project and
 * location). Anthropic's models are the Messages API behind rawPredict and
 * streamRawPredict (the body says whether it streams), counted by
 * count-tokens:rawPredict (the model in its body); Google's models are
 * Gemini's API. The model id may be percent-encoded
 * ("claude-sonnet-4-5%4020250929"). */
static bool classify_vertex(kl_arena *a, const char *path, struct kl_route_match *m)
{
    struct kl_vertex_path v;
    if (kl_dialect_vertex_path(path, &v) < 0)
        return false;
    bool google = v.publisher_len == 6 && memcmp(v.publisher, "google", 6) == 0;
    bool anthropic = v.publisher_len == 9 && memcmp(v.publisher, "anthropic", 9) == 0;
    if (google) {
        if (!classify_gemini(a, v.model, m) || m->ep->id == KL_EP_GEMINI_MODEL_GET)
            return false;
        m->ep = &vertex_gemini[m->ep->id - KL_EP_GEMINI_GENERATE];
        return true;
    }
    if (!anthropic || (strcmp(v.method, "rawPredict") != 0 && strcmp(v.method, "streamRawPredict") != 0))
        return false;
    if (v.model_len == 12 && memcmp(v.model, "count-tokens", 12) == 0) {
        m->ep = &vertex_count_tokens;
        return true;
    }
    char *model = kl_path_segment_decode(a, v.model, v.model_len);
    if (!model || !path_model_ok(model, strlen(model)))
        return false;
    m->ep = &vertex_messages;
    m->path_model = model;
    return true;
}

void kl_dialect_classify(kl_arena *a, const char *method, const char *path, enum kl_client client,
                         struct kl_route_match *m)
{
    static const struct { const char *path; enum kl_endpoint id; } exact[] = {
        {"/", KL_EP_ROOT},
        {"/v1/chat/completions", KL_EP_CHAT},
        {"/v1/responses", KL_EP_RESPONSES},
        {"/v1/embeddings", KL_EP_EMBEDDINGS},
        {"/v1/messages", KL_EP_MESSAGES},
        {"/v1/messages/count_tokens", KL_EP_COUNT_TOKENS},
        {"/v1/models", KL_EP_MODELS},
        {"/v1beta/models", KL_EP_GEMINI_MODELS},
        {"/v1alpha/models", KL_EP_GEMINI_MODELS},
        {"/metrics", KL_EP_ADMIN},
    };
    m->ep = NULL;
    m->path_model = NULL;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(path, exact[i].path) == 0) {
            m->ep = ep(exact[i].id);
            break;
        }
    }
    if (!m->ep) {
        if (strncmp(path, "/v1beta/models/", 15) == 0) {
            classify_gemini(a, path + 15, m);
        } else if (strncmp(path, "/v1alpha/models/", 16) == 0) {
            classify_gemini(a, path + 16, m);
        } else if (strncmp(path, "/v1/models/", 11) == 0) {
            /* Gemini's v1 API shares the prefix with OpenAI's model lookup,
             * whose ids may hold ':' (Ollama's llama3.1:8b, a fine-tune's
             * ft:gpt-4o-mini:acme::id) or name their provider
             * (openai/gpt-4o), as written or percent-encoded */
            if (!((strchr(path + 11, ':') || client == KL_CLIENT_GOOGLE) && classify_gemini(a, path + 11, m))) {
                char *model = kl_path_segment_decode(a, path + 11, strlen(path + 11));
                if (model && path_model_ok(model, strlen(model))) {
                    m->ep = ep(KL_EP_MODEL_GET);
                    m->path_model = model;
                }
            }
        } else if (strncmp(path, "/v1/projects/", 13) == 0 || strncmp(path, "/v1beta1/projects/", 18) == 0 ||
                   strncmp(path, "/v1/publishers/", 15) == 0 || strncmp(path, "/v1beta1/publishers/", 20) == 0) {
            classify_vertex(a, path, m);
        } else if (strncmp(path, "/model/", 7) == 0) {
            classify_bedrock(a, path + 7, m);
        } else if (strncmp(path, "/api/", 5) == 0) {
            m->ep = ep(KL_EP_ADMIN);
        }
    }
    if (!m->ep)
        m->ep = ep(KL_EP_UNKNOWN);
    if (client == KL_CLIENT_GOOGLE && m->ep->id == KL_EP_MODELS)
        m->ep = ep(KL_EP_GEMINI_MODELS); /* Gemini's v1 list */
    else if (client == KL_CLIENT_ANTHROPIC && m->ep->id == KL_EP_MODELS)
        m->ep = &anthropic_models;
    else if (client == KL_CLIENT_ANTHROPIC && m->ep->id == KL_EP_MODEL_GET)
        m->ep = &anthropic_model_get;
    m->method_ok = method_is(method, m->ep);
}
