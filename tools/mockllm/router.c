/* Request entry point: log the request, read its directives, and route it by
 * path suffix (so base URLs with a path prefix such as /anthropic work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "mockllm.h"

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);

    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Last occurrence of needle in s[0..n). */
static const char *find_last(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    const char *p = s, *last = NULL, *m;

    while ((m = memmem(p, n - (size_t)(p - s), needle, k)) != NULL) {
        last = m;
        p = m + 1;
    }
    return last;
}

/* Starts the reply to a call: it takes the call's directives, claims the
 * model, and carries the dialect's request id header (Gemini sends none).
 * NULL, after a bare 500, when memory ran out. */
ml_reply *ml_begin(ml_call *c, enum ml_dialect dl, const char *model)
{
    ml_reply *r = ml_reply_new(c->w, c->req, &c->d);
    char rid[64];

    if (!r) {
        evhttp_send_error(c->req, 500, NULL);
        return NULL;
    }
    ml_reply_set_model(r, model);
    switch (dl) {
    case ML_ANTHROPIC:
        ml_anthropic_request_id(c->w, rid, sizeof(rid));
        ml_reply_header(r, "request-id", rid);
        break;
    case ML_OPENAI:
        ml_openai_request_id(c->w, rid, sizeof(rid));
        ml_reply_header(r, "x-request-id", rid);
        break;
    case ML_BEDROCK:
        ml_bedrock_request_id(c->w, rid, sizeof(rid));
        ml_reply_header(r, "X-Amzn-RequestId", rid);
        break;
    case ML_GEMINI:
        break;
    }
    return r;
}

void ml_send_error(ml_call *c, enum ml_dialect dl, int status, const char *message)
{
    const char *rid;
    ml_reply *r;

    c->d.size = -1;     /* an error body has no reply text to grow */
    r = ml_begin(c, dl, NULL);
    if (!r)
        return;
    /* Anthropic repeats its request id in the error body */
    rid = evhttp_find_header(evhttp_request_get_output_headers(c->req), "request-id");
    if (dl == ML_BEDROCK) {
        char type[128];
        snprintf(type, sizeof(type), "%s:http://internal.amazon.com/coral/com.amazon.bedrock/",
                 ml_bedrock_error_type(status));
        ml_reply_header(r, "x-amzn-ErrorType", type);
    }
    ml_reply_json(r, status, ml_error_body(dl, status, message, rid ? rid : ""));
    ml_reply_start(r);
}

/* Parses the request body as a JSON object, or answers 400 in the dialect's
 * own error shape and returns NULL. */
cJSON *ml_parse_body(ml_call *c, enum ml_dialect dl)
{
    cJSON *j = cJSON_ParseWithLength(c->body, c->body_len);
    const char *msg;

    if (j && cJSON_IsObject(j))
        return j;
    cJSON_Delete(j);
    msg = dl == ML_OPENAI
              ? "We could not parse the JSON body of your request. The API expects a JSON "
                "payload, but what was sent was not valid JSON."
          : dl == ML_ANTHROPIC ? "There was an issue with the request body: it is not valid JSON."
          : dl == ML_BEDROCK   ? "Malformed input request, please reformat your input and try again."
                               : "Invalid JSON payload received.";
    ml_send_error(c, dl, 400, msg);
    return NULL;
}

/* An agent CLI sends the whole conversation back after running a tool, with
 * the body directive still in it; answering with the same tool call again
 * would loop forever. So body-sourced `tools` stop once the newest message is
 * a tool result. Header-sourced `tools` always apply. */
void ml_drop_tools_after_result(ml_directives *d, int last_is_result)
{
    if (!d->tools_from_header && last_is_result)
        d->ntools = 0;
}

static void not_found(ml_call *c, const char *method, const char *path)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "Invalid URL (%s %.400s)", method, path);
    c->d.status = 0;
    ml_send_error(c, ML_OPENAI, 404, msg);
}

enum route {
    R_NONE, R_CHAT, R_RESPONSES, R_EMBEDDINGS, R_MESSAGES, R_COUNT_TOKENS,
    R_G_GENERATE, R_G_STREAM, R_G_COUNT, R_MODELS, R_MODEL, R_G_MODELS, R_G_MODEL,
    R_B_INVOKE, R_B_INVOKE_STREAM, R_B_CONVERSE, R_B_CONVERSE_STREAM, R_B_COUNT,
    R_V_RAW, R_V_STREAM_RAW
};

static int is(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

/* The length of word if s[0..n) starts with it, else 0. */
static size_t starts_with(const char *s, size_t n, const char *word)
{
    size_t k = strlen(word);

    return n >= k && memcmp(s, word, k) == 0 ? k : 0;
}

static enum route gemini_method(const char *m, size_t n)
{
    return is(m, n, "generateContent")         ? R_G_GENERATE
           : is(m, n, "streamGenerateContent") ? R_G_STREAM
           : is(m, n, "countTokens")           ? R_G_COUNT
                                               : R_NONE;
}

/* Vertex AI's scope, the path's [s, e): {p}/locations/{l}, one segment each,
 * and before the /projects/ at s an API version. */
static int vertex_scope(const char *path, const char *s, const char *e)
{
    const char *p = s + strlen("/projects/"), *slash = memchr(p, '/', (size_t)(e - p));
    size_t k;

    if (!slash || slash == p || (k = starts_with(slash, (size_t)(e - slash), "/locations/")) == 0 ||
        slash + k == e || memchr(slash + k, '/', (size_t)(e - slash - k)))
        return 0;
    return ends_with(path, (size_t)(s - path), "/v1") ||
           ends_with(path, (size_t)(s - path), "/v1beta1");
}

/* Vertex AI: .../{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{pub}/
 * models/{model}:{method}, or Express mode's .../{v1|v1beta1}/publishers/
 * google/models/... (an API key, no project). Claude's methods answer in Anthropic's dialect
 * (count_tokens is the model "count-tokens", its model in the body), Gemini's
 * as under /v1beta/models/. The model is percent-decoded into path_model
 * (claude-sonnet-4-5%4020250929 is claude-sonnet-4-5@20250929). */
static enum route vertex_route(ml_call *c, const char *path, size_t n)
{
    const char *pub = find_last(path, n, "/publishers/"), *end = path + n, *proj, *model, *colon;
    size_t k;
    int anthropic;

    if (!pub)
        return R_NONE;
    proj = find_last(path, (size_t)(pub - path), "/projects/");
    if (proj ? !vertex_scope(path, proj, pub)
             : !ends_with(path, (size_t)(pub - path), "/v1") && !ends_with(path, (size_t)(pub - path), "/v1beta1"))
        return R_NONE;
    model = pub + strlen("/publishers/");
    if (proj && (k = starts_with(model, (size_t)(end - model), "anthropic/models/")) != 0)
        anthropic = 1;
    else if ((k = starts_with(model, (size_t)(end - model), "google/models/")) != 0)
        anthropic = 0;
    else
        return R_NONE;
    model += k;
    colon = memchr(model, ':', (size_t)(end - model));
    if (!colon || colon == model || memchr(model, '/', (size_t)(end - model)))
        return R_NONE;
    ml_percent_decode(model, (size_t)(colon - model), c->path_model, sizeof(c->path_model), 0);
    k = (size_t)(end - ++colon);
    if (!anthropic)
        return gemini_method(colon, k);
    if (is(colon, k, "rawPredict"))
        return strcmp(c->path_model, "count-tokens") == 0 ? R_COUNT_TOKENS : R_V_RAW;
    return is(colon, k, "streamRawPredict") ? R_V_STREAM_RAW : R_NONE;
}

/* Bedrock Runtime paths: .../model/{modelId}/{operation}. Clients
 * percent-encode the id (`...-v1%3A0`, ARNs with `%2F`), so it never holds a
 * raw `/`; it is decoded into path_model. */
static enum route bedrock_route(ml_call *c, const char *path, size_t n)
{
    static const struct { const char *op; enum route rt; } ops[] = {
        { "invoke", R_B_INVOKE },
        { "invoke-with-response-stream", R_B_INVOKE_STREAM },
        { "converse", R_B_CONVERSE },
        { "converse-stream", R_B_CONVERSE_STREAM },
        { "count-tokens", R_B_COUNT },
    };
    const size_t pre = strlen("/model/");
    const char *op = NULL, *id;
    enum route rt = R_NONE;
    size_t i, k;

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]) && rt == R_NONE; i++) {
        k = strlen(ops[i].op);
        if (n > k + 1 && path[n - k - 1] == '/' && ends_with(path, n, ops[i].op)) {
            op = path + n - k - 1;
            rt = ops[i].rt;
        }
    }
    if (rt == R_NONE)
        return R_NONE;
    for (id = op; id > path && id[-1] != '/'; id--)
        ;
    if (id == op || (size_t)(id - path) < pre || memcmp(id - pre, "/model/", pre) != 0)
        return R_NONE;
    ml_percent_decode(id, (size_t)(op - id), c->path_model, sizeof(c->path_model), 0);
    return rt;
}

/* Gemini paths: .../v1beta/models/{model}:{method} or .../v1beta/models/{id}. */
static enum route gemini_route(ml_call *c, const char *path, size_t n, int post, int get,
                               const char **one)
{
    const char *m = find_last(path, n, "/v1beta/models/");
    const char *rest, *colon;
    size_t len;

    if (!m)
        return R_NONE;
    rest = m + strlen("/v1beta/models/");
    len = n - (size_t)(rest - path);
    colon = memchr(rest, ':', len);
    if (!colon) {
        if (get && len > 0 && !memchr(rest, '/', len)) {
            *one = rest;
            return R_G_MODEL;
        }
        return R_NONE;
    }
    if ((size_t)(colon - rest) >= sizeof(c->path_model) || colon == rest)
        return R_NONE;
    memcpy(c->path_model, rest, (size_t)(colon - rest));
    c->path_model[colon - rest] = '\0';
    colon++;
    len = n - (size_t)(colon - path);
    if (!post)
        return R_NONE;
    return gemini_method(colon, len);
}

static enum route route_of(ml_call *c, enum evhttp_cmd_type cmd, const char *path,
                           const char **one)
{
    size_t n = strlen(path);
    int post = cmd == EVHTTP_REQ_POST, get = cmd == EVHTTP_REQ_GET;
    const char *m;
    enum route rt;

    if (post && ends_with(path, n, "/v1/chat/completions"))
        return R_CHAT;
    if (post && ends_with(path, n, "/v1/responses"))
        return R_RESPONSES;
    if (post && ends_with(path, n, "/v1/embeddings"))
        return R_EMBEDDINGS;
    if (post && ends_with(path, n, "/v1/messages/count_tokens"))
        return R_COUNT_TOKENS;
    if (post && ends_with(path, n, "/v1/messages"))
        return R_MESSAGES;
    if (get && ends_with(path, n, "/v1/models"))
        return R_MODELS;
    if (get && ends_with(path, n, "/v1beta/models"))
        return R_G_MODELS;
    if (post && (rt = vertex_route(c, path, n)) != R_NONE)
        return rt;
    if (find_last(path, n, "/v1beta/models/"))
        return gemini_route(c, path, n, post, get, one);
    if (post && find_last(path, n, "/model/"))
        return bedrock_route(c, path, n);
    if (get && (m = find_last(path, n, "/v1/models/")) != NULL) {
        const char *id = m + strlen("/v1/models/");
        if (*id && !strchr(id, '/')) {
            *one = id;
            return R_MODEL;
        }
    }
    return R_NONE;
}

static enum ml_dialect dialect_of(enum route rt, struct evhttp_request *req)
{
    switch (rt) {
    case R_MESSAGES:
    case R_COUNT_TOKENS:
    case R_V_RAW:
    case R_V_STREAM_RAW:
        return ML_ANTHROPIC;
    case R_G_GENERATE:
    case R_G_STREAM:
    case R_G_COUNT:
    case R_G_MODELS:
    case R_G_MODEL:
        return ML_GEMINI;
    case R_B_INVOKE:
    case R_B_INVOKE_STREAM:
    case R_B_CONVERSE:
    case R_B_CONVERSE_STREAM:
    case R_B_COUNT:
        return ML_BEDROCK;
    case R_MODELS:
    case R_MODEL:
        return evhttp_find_header(evhttp_request_get_input_headers(req), "anthropic-version")
                   ? ML_ANTHROPIC
                   : ML_OPENAI;
    default:
        return ML_OPENAI;
    }
}

static void dispatch(ml_call *c, enum route rt, const char *query, const char *one)
{
    char alt[16];

    switch (rt) {
    case R_CHAT: ml_openai_chat(c); break;
    case R_RESPONSES: ml_openai_responses(c); break;
    case R_EMBEDDINGS: ml_openai_embeddings(c); break;
    case R_MESSAGES: ml_anthropic_messages(c); break;
    case R_COUNT_TOKENS: ml_anthropic_count_tokens(c); break;
    case R_G_GENERATE: ml_gemini_generate(c, 0); break;
    case R_G_STREAM:
        c->alt_sse = ml_query_param(query, "alt", alt, sizeof(alt)) && strcmp(alt, "sse") == 0;
        ml_gemini_generate(c, 1);
        break;
    case R_G_COUNT: ml_gemini_count_tokens(c); break;
    case R_MODELS:
    case R_MODEL:
        if (dialect_of(rt, c->req) == ML_ANTHROPIC)
            ml_anthropic_models(c, one);
        else
            ml_openai_models(c, one);
        break;
    case R_G_MODELS:
    case R_G_MODEL: ml_gemini_models(c, one); break;
    case R_B_INVOKE: ml_bedrock_invoke(c, 0); break;
    case R_B_INVOKE_STREAM: ml_bedrock_invoke(c, 1); break;
    case R_B_CONVERSE: ml_bedrock_converse(c, 0); break;
    case R_B_CONVERSE_STREAM: ml_bedrock_converse(c, 1); break;
    case R_B_COUNT: ml_bedrock_count_tokens(c); break;
    case R_V_RAW: ml_anthropic_vertex(c, 0); break;
    case R_V_STREAM_RAW: ml_anthropic_vertex(c, 1); break;
    case R_NONE: break;
    }
}

/* Every x-mock header, in order; they override body directives. */
static void apply_headers(ml_directives *d, struct evkeyvalq *hdrs)
{
    struct evkeyval *kv;

    TAILQ_FOREACH(kv, hdrs, next)
        if (strcasecmp(kv->key, "x-mock") == 0)
            ml_directives_apply(d, kv->value, strlen(kv->value), 1);
}

void ml_on_request(struct evhttp_request *req, void *arg)
{
    ml_worker *w = arg;
    const char *uri = evhttp_request_get_uri(req);
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    const char *query = q ? q + 1 : "";
    const char *one = NULL;
    char stackpath[1024];
    char *path = plen < sizeof(stackpath) ? stackpath : malloc(plen + 1);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    enum route rt;
    ml_call c;

    if (!path) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    memcpy(path, uri, plen);
    path[plen] = '\0';

    if (strncmp(path, "/_mock/", 7) == 0) {
        ml_inspect_handle(w, req, path, query);
        goto out;
    }

    memset(&c, 0, sizeof(c));
    c.w = w;
    c.req = req;
    c.body_len = evbuffer_get_length(in);
    c.body = c.body_len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (!c.body) {
        c.body = "";
        c.body_len = 0;
    }
    atomic_fetch_add(&w->sh->requests, 1);
    if (w->sh->log)
        ml_log_record(w->sh->log, req, c.body, c.body_len);

    rt = route_of(&c, cmd, path, &one);
    ml_directives_init(&c.d);
    ml_directives_scan_body(&c.d, c.body, c.body_len);
    if (rt == R_B_COUNT)    /* its prompt travels base64-encoded */
        ml_bedrock_scan_count_body(&c.d, c.body, c.body_len);
    apply_headers(&c.d, evhttp_request_get_input_headers(req));

    if (rt == R_NONE)
        not_found(&c, ml_method_name(cmd), path);
    else if (c.d.status >= 400)
        ml_send_error(&c, dialect_of(rt, req), c.d.status, NULL);
    else
        dispatch(&c, rt, query, one);
    ml_directives_free(&c.d);
out:
    if (path != stackpath)
        free(path);
}
